//! `--direct` (O_DIRECT) through the binary: the same volume as without it, misaligned requests
//! and sizes refused with the rule (exit 3, files unchanged), a file system without direct I/O
//! refused with the reason. Files under `/var/tmp` (or `COWSNAP_DIRECT_DIR`): `/tmp` may be a tmpfs.

mod common;

use common::*;
use std::fs;
use std::path::PathBuf;

fn disk() -> PathBuf {
    std::env::var_os("COWSNAP_DIRECT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

#[test]
fn a_direct_volume_is_the_volume_a_buffered_one_is() {
    let s = Scratch::under(&disk(), "direct");
    let d = s.path();
    for (vol, direct) in [("b", false), ("d", true)] {
        let run = |args: &[&str]| {
            let mut a: Vec<&str> = args.to_vec();
            if direct {
                a.push("--direct");
            }
            ok(d, &a)
        };
        run(&["create", vol, "--size", "4M"]);
        run(&[
            "write", vol, "--offset", "0", "--fill", "0x41", "--len", "4M",
        ]);
        run(&["snapshot", vol, "--name", "s", "--size", "1M"]);
        run(&[
            "write", vol, "--offset", "8192", "--fill", "0x42", "--len", "64K",
        ]);
        let snap = run(&["read", &format!("{vol}/s"), "--offset", "0", "--len", "4M"]);
        assert!(snap.iter().all(|&b| b == 0x41), "{vol}: snapshot changed");
        run(&["merge", &format!("{vol}/s")]);
    }
    assert!(fs::read(s.join("b/origin.img")).unwrap() == fs::read(s.join("d/origin.img")).unwrap());
}

#[test]
fn misaligned_requests_and_sizes_are_refused_with_the_rule() {
    let s = Scratch::under(&disk(), "direct-refused");
    let d = s.path();
    let e = fails(d, &["create", "v", "--size", "4097K", "--direct"]);
    assert!(e.contains("multiples of 4096"), "{e}");
    assert!(!s.join("v/origin.img").exists());
    ok(d, &["create", "v", "--size", "4M", "--direct"]);
    ok(
        d,
        &["snapshot", "v", "--name", "s", "--size", "1M", "--direct"],
    );
    let before = (
        fs::read(s.join("v/origin.img")).unwrap(),
        fs::read(s.join("v/s.cow")).unwrap(),
    );
    for args in [
        &[
            "write", "v", "--offset", "512", "--fill", "1", "--len", "4K", "--direct",
        ][..],
        &[
            "write", "v", "--offset", "0", "--fill", "1", "--len", "100", "--direct",
        ],
        &["read", "v/s", "--offset", "1", "--len", "4K", "--direct"],
    ] {
        let e = fails(d, args);
        assert!(e.contains("multiples of 4096"), "{args:?}: {e}");
    }
    let e = fails(
        d,
        &[
            "snapshot", "v", "--name", "t", "--size", "1025K", "--direct",
        ],
    );
    assert!(e.contains("multiples of 4096"), "{e}");
    assert!(!s.join("v/t.cow").exists());
    let after = (
        fs::read(s.join("v/origin.img")).unwrap(),
        fs::read(s.join("v/s.cow")).unwrap(),
    );
    assert!(before == after, "a refused request changed the volume");
    // Without --direct the same byte write is fine.
    ok(
        d,
        &[
            "write", "v", "--offset", "512", "--fill", "1", "--len", "100",
        ],
    );
}

#[test]
fn a_file_system_without_direct_io_is_refused() {
    if !std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
    {
        println!("skipped: needs root to mount a ramfs");
        return;
    }
    let s = Scratch::under(&disk(), "direct-ramfs");
    let fsdir = s.join("ramfs");
    fs::create_dir(&fsdir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(&fsdir)
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        println!("skipped: cannot mount a ramfs here");
        return;
    }
    ok(&fsdir, &["create", "v", "--size", "1M"]);
    let o = run(
        &fsdir,
        &[
            "write", "v", "--offset", "0", "--fill", "1", "--len", "4K", "--direct",
        ],
    );
    let snap = run(
        &fsdir,
        &["snapshot", "v", "--name", "s", "--size", "1M", "--direct"],
    );
    let left = fsdir.join("v/s.cow").exists();
    let _ = std::process::Command::new("umount").arg(&fsdir).status();
    let e = failed(&o, &["write"]);
    assert!(e.contains("does not support direct I/O"), "{e}");
    let e = failed(&snap, &["snapshot"]);
    assert!(e.contains("does not support direct I/O"), "{e}");
    assert!(!left, "a refused snapshot left its COW");
}
