//! Managed volumes through the `cowsnap` binary: the seed's scenario and every command's error paths.

mod common;

use common::*;
use std::fs;

const MIB: usize = 1 << 20;

#[test]
fn scenario_create_snapshot_write_lvs_backup_merge_remove() {
    let s = Scratch::new("scenario");
    let d = s.path();
    ok(d, &["create", "vol", "--size", "16M"]);
    ok(
        d,
        &[
            "write", "vol", "--offset", "0", "--fill", "0x41", "--len", "1M",
        ],
    );
    ok(d, &["snapshot", "vol", "--name", "snap1", "--size", "4M"]);
    ok(
        d,
        &[
            "snapshot", "vol", "--name", "snap2", "--size", "4M", "--store", "PO",
        ],
    );
    let rows = lvs(d, "vol");
    assert_eq!(rows.len(), 3);
    assert_eq!(row(&rows, "vol")["lv_attr"], "owi-a-s---");
    assert_eq!(row(&rows, "snap1")["lv_attr"], "swi-a-s---");
    assert_eq!(row(&rows, "snap1")["origin"], "vol");
    assert_eq!(row(&rows, "snap1")["lv_size_bytes"], 4 * MIB);
    assert_eq!(data_percent(&rows, "snap1"), 0.0);
    assert_eq!(row(&rows, "snap1")["dm_status"], "16/8192 16");

    // Data% rises as the origin is overwritten.
    ok(
        d,
        &[
            "write", "vol", "--offset", "0", "--fill", "0x42", "--len", "256K",
        ],
    );
    let p1 = data_percent(&lvs(d, "vol"), "snap1");
    ok(
        d,
        &[
            "write", "vol", "--offset", "256K", "--fill", "0x42", "--len", "256K",
        ],
    );
    let rows = lvs(d, "vol");
    let p2 = data_percent(&rows, "snap1");
    assert!(0.0 < p1 && p1 < p2, "{p1} {p2}");
    // 128 chunks copied + header + area 0: (2 + 128) * 8 sectors of 8192.
    assert_eq!(row(&rows, "snap1")["dm_status"], "1040/8192 16");
    assert_eq!(row(&rows, "snap1")["exceptions"], 128);

    // The text table has the lvs columns.
    let table = ok_str(d, &["lvs", "vol"]);
    let head: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(head, ["LV", "Attr", "LSize", "Origin", "Data%"]);
    let snap1: Vec<&str> = table
        .lines()
        .find(|l| l.trim_start().starts_with("snap1 "))
        .expect("snap1 row")
        .split_whitespace()
        .collect();
    assert_eq!(snap1[..4], ["snap1", "swi-a-s---", "4.00m", "vol"]);
    assert!(snap1[4].parse::<f64>().unwrap() > 0.0);

    // Snapshot keeps the old data; origin has the new.
    let old = ok(d, &["read", "vol/snap1", "--offset", "0", "--len", "512K"]);
    assert_eq!(old, vec![0x41; 512 * 1024]);
    let new = ok(d, &["read", "vol", "--offset", "0", "--len", "512K"]);
    assert_eq!(new, vec![0x42; 512 * 1024]);

    // Snapshot writes; backup is the whole snapshot image.
    ok(
        d,
        &[
            "write",
            "vol/snap1",
            "--offset",
            "2M",
            "--fill",
            "7",
            "--len",
            "4096",
        ],
    );
    ok(d, &["backup", "vol/snap1", "snap1.img"]);
    let img = fs::read(s.join("snap1.img")).unwrap();
    let mut want = vec![0u8; 16 * MIB];
    want[..MIB].fill(0x41);
    want[2 * MIB..2 * MIB + 4096].fill(7);
    assert!(img == want, "backup differs");

    // Merge snap1: origin becomes the snapshot; snap2 keeps its own view.
    let snap2_before = ok(d, &["read", "vol/snap2", "--offset", "0", "--len", "3M"]);
    ok(d, &["merge", "vol/snap1"]);
    let origin = ok(d, &["read", "vol", "--offset", "0", "--len", "16M"]);
    assert!(origin == want, "merged origin differs");
    assert!(!s.join("vol/snap1.cow").exists());
    let rows = lvs(d, "vol");
    assert_eq!(rows.len(), 2);
    let snap2_after = ok(d, &["read", "vol/snap2", "--offset", "0", "--len", "3M"]);
    assert!(
        snap2_before == snap2_after,
        "other snapshot changed by the merge"
    );

    ok(d, &["remove", "vol/snap2"]);
    let rows = lvs(d, "vol");
    assert_eq!(rows.len(), 1);
    assert_eq!(row(&rows, "vol")["lv_attr"], "-wi-a-----");
    assert!(!s.join("vol/snap2.cow").exists());
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(s.join("vol/cowsnap.json")).unwrap()).unwrap();
    assert_eq!(m["snapshots"].as_array().unwrap().len(), 0);
}

#[test]
fn write_from_file_and_read_to_file() {
    let s = Scratch::new("rw");
    let d = s.path();
    ok(d, &["create", "v", "--size", "1M", "--chunk-size", "8K"]);
    ok(d, &["snapshot", "v", "--name", "a", "--size", "256K"]);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(s.join("in.bin"), &data).unwrap();
    ok(d, &["write", "v/a", "--offset", "1000", "--from", "in.bin"]);
    ok(
        d,
        &[
            "read", "v/a", "--offset", "1000", "--len", "10000", "--out", "out.bin",
        ],
    );
    assert_eq!(fs::read(s.join("out.bin")).unwrap(), data);
    // --len takes a prefix of the file.
    ok(
        d,
        &[
            "write", "v", "--offset", "0", "--from", "in.bin", "--len", "100",
        ],
    );
    assert_eq!(
        ok(d, &["read", "v", "--offset", "0", "--len", "100"]),
        data[..100]
    );
    // The origin write did not touch the snapshot.
    assert_eq!(
        ok(d, &["read", "v/a", "--offset", "0", "--len", "100"]),
        vec![0; 100]
    );
    // Chunk size recorded in the COW header.
    let j: serde_json::Value =
        serde_json::from_str(&ok_str(d, &["inspect", "v/a.cow", "--json"])).unwrap();
    assert_eq!(j["chunk_size"], 8192);
    // A file shorter than --len is an error.
    fails(
        d,
        &[
            "write", "v", "--offset", "0", "--from", "in.bin", "--len", "20000",
        ],
    );
}

#[test]
fn extend_and_autoextend() {
    let s = Scratch::new("extend");
    let d = s.path();
    ok(d, &["create", "v", "--size", "4M"]);
    ok(d, &["snapshot", "v", "--name", "a", "--size", "64K"]);
    ok(d, &["extend", "v/a", "--size", "+64K"]);
    assert_eq!(fs::metadata(s.join("v/a.cow")).unwrap().len(), 128 * 1024);
    ok(d, &["extend", "v/a", "--size", "256K"]);
    assert_eq!(row(&lvs(d, "v"), "a")["lv_size_bytes"], 256 * 1024);
    let e = fails(d, &["extend", "v/a", "--size", "64K"]);
    assert!(e.contains("shrink"), "{e}");

    // Autoextend: 1 MiB of origin writes into a 64 KiB COW stays valid, and the COW grew.
    ok(
        d,
        &[
            "snapshot",
            "v",
            "--name",
            "b",
            "--size",
            "64K",
            "--autoextend",
            "70:20",
        ],
    );
    // Snapshot `a` (256 KiB, no autoextend) cannot hold 1 MiB of changes: the write is done, and
    // says that `a` was lost (exit code 3).
    let e = fails_with(
        d,
        &["write", "v", "--offset", "0", "--fill", "1", "--len", "1M"],
        3,
    );
    assert!(e.contains("snapshot a was invalidated"), "{e}");
    let rows = lvs(d, "v");
    let b = row(&rows, "b");
    assert_eq!(b["lv_attr"], "swi-a-s---");
    assert_eq!(b["autoextend"], "70:20");
    let len = fs::metadata(s.join("v/b.cow")).unwrap().len();
    assert!(len > 1024 * 1024, "COW did not grow: {len}");
    assert!(data_percent(&rows, "b") <= 70.0 + 1e-9);
    assert_eq!(
        ok(d, &["read", "v/b", "--offset", "0", "--len", "4"]),
        [0; 4]
    );
    let e = fails(
        d,
        &[
            "snapshot",
            "v",
            "--name",
            "c",
            "--size",
            "64K",
            "--autoextend",
            "0:20",
        ],
    );
    assert!(e.contains("autoextend"), "{e}");
    fails(
        d,
        &[
            "snapshot",
            "v",
            "--name",
            "c",
            "--size",
            "64K",
            "--autoextend",
            "70",
        ],
    );
}

#[test]
fn overflow_invalidates_snapshot() {
    let s = Scratch::new("overflow");
    let d = s.path();
    ok(d, &["create", "v", "--size", "1M"]);
    // Header + area + 2 data chunks.
    ok(d, &["snapshot", "v", "--name", "a", "--size", "16K"]);
    let e = fails_with(
        d,
        &["write", "v", "--offset", "0", "--fill", "9", "--len", "64K"],
        3,
    );
    assert!(e.starts_with("cowsnap: warning: wrote 65536 bytes"), "{e}");
    assert!(e.contains("snapshot a was invalidated"), "{e}");
    let rows = lvs(d, "v");
    assert_eq!(row(&rows, "a")["lv_attr"], "swi-I-s---");
    assert_eq!(row(&rows, "a")["data_percent"], "");
    assert_eq!(row(&rows, "a")["dm_status"], "Invalid");
    let e = fails(d, &["read", "v/a", "--offset", "0", "--len", "1"]);
    assert!(e.contains("invalid"), "{e}");
    let e = fails(d, &["merge", "v/a"]);
    assert!(e.contains("invalid"), "{e}");
    // The refused merge left nothing behind: the volume still works and the snapshot can go.
    assert_eq!(ok(d, &["read", "v", "--offset", "0", "--len", "2"]), [9, 9]);
    ok(d, &["remove", "v/a"]);
}

#[test]
fn po_snapshot_write_overflow_is_reported() {
    let s = Scratch::new("po");
    let d = s.path();
    ok(d, &["create", "v", "--size", "1M"]);
    ok(
        d,
        &[
            "snapshot", "v", "--name", "a", "--size", "16K", "--store", "PO",
        ],
    );
    let e = fails(
        d,
        &[
            "write", "v/a", "--offset", "0", "--fill", "3", "--len", "64K",
        ],
    );
    assert!(e.contains("overflow"), "{e}");
}

#[test]
fn interrupted_merge_resumes_on_next_open() {
    let s = Scratch::new("resume");
    let d = s.path();
    ok(d, &["create", "v", "--size", "2M"]);
    ok(
        d,
        &["write", "v", "--offset", "0", "--fill", "1", "--len", "2M"],
    );
    ok(d, &["snapshot", "v", "--name", "a", "--size", "1M"]);
    ok(d, &["snapshot", "v", "--name", "b", "--size", "1M"]);
    ok(
        d,
        &[
            "write", "v", "--offset", "4K", "--fill", "2", "--len", "100K",
        ],
    );
    ok(
        d,
        &[
            "write", "v/a", "--offset", "1M", "--fill", "3", "--len", "8K",
        ],
    );
    let a = ok(d, &["read", "v/a", "--offset", "0", "--len", "2M"]);
    let b = ok(d, &["read", "v/b", "--offset", "0", "--len", "2M"]);
    // What `cowsnap merge` records before touching the origin; as if it was killed right after.
    let mp = s.join("v/cowsnap.json");
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&mp).unwrap()).unwrap();
    m["merging"] = "a".into();
    fs::write(&mp, serde_json::to_vec(&m).unwrap()).unwrap();
    // Any command opening the volume (here a reader) finishes the merge first.
    let o = run(d, &["lvs", "v", "--json"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming"));
    let rows = lvs(d, "v");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(ok(d, &["read", "v", "--offset", "0", "--len", "2M"]), a);
    assert_eq!(ok(d, &["read", "v/b", "--offset", "0", "--len", "2M"]), b);
    assert!(!s.join("v/a.cow").exists());
}

#[test]
fn a_merge_that_cannot_finish_does_not_lock_readers_out() {
    let s = Scratch::new("stuck-merge");
    let d = s.path();
    ok(d, &["create", "v", "--size", "1M"]);
    ok(d, &["snapshot", "v", "--name", "a", "--size", "512K"]);
    // A recorded merge that cannot be finished: the snapshot's COW was invalidated meanwhile.
    let cow = s.join("v/a.cow");
    let mut bytes = fs::read(&cow).unwrap();
    bytes[4..8].copy_from_slice(&0u32.to_le_bytes()); // header valid = 0
    fs::write(&cow, bytes).unwrap();
    let mp = s.join("v/cowsnap.json");
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&mp).unwrap()).unwrap();
    m["merging"] = "a".into();
    fs::write(&mp, serde_json::to_vec(&m).unwrap()).unwrap();
    let o = run(d, &["lvs", "v"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("could not be finished"));
    assert!(String::from_utf8_lossy(&o.stdout).contains("a "));
    // Commands that change the volume still refuse, with the reason.
    let o = run(
        d,
        &["write", "v", "--offset", "0", "--fill", "1", "--len", "1"],
    );
    assert!(!o.status.success());
}

#[test]
fn lock_serialises_writers() {
    use std::os::unix::io::AsRawFd;
    let s = Scratch::new("lock");
    let d = s.path();
    ok(d, &["create", "v", "--size", "1M"]);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(s.join("v/.cowsnap.lock"))
        .unwrap();
    // SAFETY: flock on an fd we own.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    let mut child = bin()
        .current_dir(d)
        .args(["write", "v", "--offset", "0", "--fill", "5", "--len", "10"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert!(
        child.try_wait().unwrap().is_none(),
        "writer ran while locked"
    );
    drop(f); // releases the lock
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("waiting"));
    assert_eq!(
        ok(d, &["read", "v", "--offset", "0", "--len", "10"]),
        [5; 10]
    );
}

#[test]
fn error_paths() {
    let s = Scratch::new("errors");
    let d = s.path();
    // Missing manifest.
    let e = fails(d, &["lvs", "nowhere"]);
    assert!(e.contains("no such volume directory: nowhere"), "{e}");
    fs::create_dir(s.join("plain")).unwrap();
    let e = fails(d, &["read", "plain", "--offset", "0", "--len", "1"]);
    assert!(e.contains("missing manifest"), "{e}");
    assert!(
        !s.join("plain/.cowsnap.lock").exists(),
        "lock file left in a non-volume"
    );
    fails(d, &["snapshot", "plain", "--name", "x", "--size", "1M"]);

    ok(d, &["create", "v", "--size", "1M"]);
    // Create refuses existing volumes and non-empty directories.
    fails(d, &["create", "v", "--size", "1M"]);
    fs::write(s.join("plain/f"), b"x").unwrap();
    fails(d, &["create", "plain", "--size", "1M"]);
    // Bad sizes and chunk sizes.
    let e = fails(d, &["create", "w", "--size", "1M", "--chunk-size", "3K"]);
    assert!(e.contains("chunk size"), "{e}");
    fails(d, &["create", "w", "--size", "1M", "--chunk-size", "1M"]);
    let o = run(d, &["create", "w", "--size", "12Q"]);
    assert_eq!(o.status.code(), Some(2), "usage error");
    // Unknown snapshot.
    let e = fails(d, &["read", "v/nosuch", "--offset", "0", "--len", "1"]);
    assert!(e.contains("no snapshot named \"nosuch\""), "{e}");
    fails(d, &["remove", "v/nosuch"]);
    fails(d, &["merge", "v/nosuch"]);
    fails(d, &["extend", "v/nosuch", "--size", "+1M"]);
    fails(d, &["backup", "v/nosuch", "out.img"]);
    // A volume where a snapshot is needed.
    let e = fails(d, &["remove", "v"]);
    assert!(e.contains("DIR/NAME"), "{e}");
    // Read and write past the end.
    let e = fails(d, &["read", "v", "--offset", "1M", "--len", "1"]);
    assert!(e.contains("out of range"), "{e}");
    fails(d, &["read", "v", "--offset", "1048575", "--len", "2"]);
    fails(
        d,
        &[
            "write", "v", "--offset", "1048575", "--fill", "1", "--len", "2",
        ],
    );
    assert_eq!(
        ok(d, &["read", "v", "--offset", "1048575", "--len", "1"]),
        [0]
    );
    // Snapshots: transient refused, names checked, duplicates, too small.
    let e = fails(
        d,
        &[
            "snapshot", "v", "--name", "t", "--size", "1M", "--store", "N",
        ],
    );
    assert!(e.contains("transient"), "{e}");
    fails(
        d,
        &[
            "snapshot", "v", "--name", "t", "--size", "1M", "--store", "X",
        ],
    );
    fails(d, &["snapshot", "v", "--name", "../x", "--size", "1M"]);
    fails(d, &["snapshot", "v", "--name", "origin", "--size", "1M"]);
    let e = fails(d, &["snapshot", "v", "--name", "t", "--size", "4K"]);
    assert!(e.contains("too small"), "{e}");
    assert!(!s.join("v/t.cow").exists());
    ok(d, &["snapshot", "v", "--name", "t", "--size", "64K"]);
    let e = fails(d, &["snapshot", "v", "--name", "t", "--size", "64K"]);
    assert!(e.contains("already exists"), "{e}");
    // Missing --len with --fill is a usage error.
    let o = run(d, &["write", "v", "--offset", "0", "--fill", "1"]);
    assert_eq!(o.status.code(), Some(2));

    // Corrupt COW in a managed volume: refused with the reason, nothing changed.
    let cow = s.join("v/t.cow");
    let mut bytes = fs::read(&cow).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&cow, &bytes).unwrap();
    let e = fails(
        d,
        &["write", "v", "--offset", "0", "--fill", "1", "--len", "1"],
    );
    assert!(e.contains("snapshot t") && e.contains("magic"), "{e}");
    // The broken snapshot does not lock out the origin's readers; it is itself unreadable.
    assert_eq!(ok(d, &["read", "v", "--offset", "0", "--len", "1"]), [0]);
    let e = fails_with(d, &["read", "v/t", "--offset", "0", "--len", "1"], 4);
    assert!(e.contains("snapshot t is broken"), "{e}");
    assert_eq!(
        fs::read(s.join("v/origin.img")).unwrap()[0],
        0,
        "origin changed"
    );
    let e = fails(d, &["inspect", "v/t.cow"]);
    assert!(e.contains("bad magic"), "{e}");
    // Corrupt manifest.
    fs::write(s.join("v/cowsnap.json"), b"{not json").unwrap();
    let e = fails(d, &["lvs", "v"]);
    assert!(
        e.contains("corrupt manifest") && e.contains("[CORRUPT_METADATA]"),
        "{e}"
    );
}

#[test]
fn quiet_and_pipes_have_no_progress_output() {
    let s = Scratch::new("quiet");
    let d = s.path();
    ok(d, &["create", "v", "--size", "4M"]);
    ok(d, &["snapshot", "v", "--name", "a", "--size", "1M"]);
    ok(
        d,
        &[
            "write", "v", "--offset", "0", "--fill", "1", "--len", "128K",
        ],
    );
    // stderr is a pipe here: no bar, and --quiet silences stdout messages too.
    let o = run(d, &["backup", "v/a", "b.img"]);
    assert!(o.status.success());
    assert!(
        o.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.stdout.is_empty());
    let o = run(d, &["-q", "merge", "v/a"]);
    assert!(o.status.success());
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
    assert_eq!(fs::metadata(s.join("b.img")).unwrap().len(), 4 << 20);
}
