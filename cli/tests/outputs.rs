//! Output paths (`read --out`, `backup DIR/NAME OUT`, `export --out`, `replay --out-dir`) against every
//! kind of target: regular and missing files, directories, block and character devices, symlinks
//! (to files, to devices, dangling), and files that are inputs or files of the volume, reached
//! through any path. A refused output exits non-zero and changes nothing on disk.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! need_root {
    ($what:expr) => {
        if !is_root() {
            eprintln!("skipped ({}): needs root", $what);
            return;
        }
    };
}

/// Runs a command that must be refused: a non-zero exit code (not a crash), one error line.
fn refused(cwd: &Path, args: &[&str]) -> String {
    let o = run(cwd, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let code = o.status.code();
    assert!(
        matches!(code, Some(c) if c != 0 && c != 101),
        "cowsnap {args:?} should be refused (exit {code:?}): {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.starts_with("cowsnap: error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    err
}

/// What is on disk under `dirs` (recursively): each entry's kind, and content, link target or
/// device number; with `extra` files outside them (devices) by content.
fn state(dirs: &[&Path]) -> BTreeMap<PathBuf, String> {
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        let t = m.file_type();
        let v = if t.is_symlink() {
            format!("link -> {}", fs::read_link(p).unwrap().display())
        } else if t.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), out);
            }
            "dir".into()
        } else if t.is_file() {
            format!(
                "file {} {:x}",
                m.len(),
                hash(&fs::read(p).unwrap_or_default())
            )
        } else {
            format!("node {:?} {}", t, m.rdev())
        };
        out.insert(p.to_path_buf(), v);
    }
    let mut out = BTreeMap::new();
    for d in dirs {
        walk(d, &mut out);
    }
    out
}

fn hash(b: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A 16 MiB volume `v`: 'A' in the first 8 MiB, zeros after; snapshot `s1`; then 'B' over the first
/// 4 MiB. The snapshot image is AAAA (8 MiB) then zeros.
fn volume(s: &Scratch) {
    let d = s.path();
    ok(d, &["-q", "create", "v", "--size", "16M"]);
    ok(
        d,
        &[
            "-q", "write", "v", "--offset", "0", "--fill", "0x41", "--len", "8M",
        ],
    );
    ok(d, &["-q", "snapshot", "v", "--name", "s1", "--size", "8M"]);
    ok(
        d,
        &[
            "-q", "write", "v", "--offset", "0", "--fill", "0x42", "--len", "4M",
        ],
    );
}

fn snapshot_image() -> Vec<u8> {
    let mut v = vec![0x41u8; 8 * MIB as usize];
    v.resize(16 * MIB as usize, 0);
    v
}

/// Every way this test suite writes an output, for a target path: (args, len of the data).
fn writers(out: &str) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        v(&["backup", "v/s1", out]),
        v(&[
            "read", "v/s1", "--offset", "0", "--len", "16M", "--out", out,
        ]),
        v(&[
            "export",
            "--origin",
            "v/origin.img",
            "--cow",
            "v/s1.cow",
            "--out",
            out,
        ]),
    ]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Regular and missing files: written through a temporary file and renamed (no temporary file left,
/// a hard link to the old file keeps the old bytes), sparse where the image is zero.
#[test]
fn regular_and_missing_files_are_replaced_sparse() {
    let s = Scratch::new("out-regular");
    let d = s.path();
    volume(&s);
    let want = snapshot_image();
    for w in writers("out.img") {
        let _ = fs::remove_file(s.join("out.img"));
        ok(d, &args(&w));
        assert!(fs::read(s.join("out.img")).unwrap() == want, "{w:?}");
        let m = fs::metadata(s.join("out.img")).unwrap();
        assert!(
            m.blocks() * 512 < 9 * MIB,
            "{w:?}: not sparse: {} blocks",
            m.blocks()
        );
        // Existing file, with a second name: replaced, not written through the other name.
        fs::write(s.join("out.img"), b"old").unwrap();
        fs::hard_link(s.join("out.img"), s.join("other-name")).unwrap();
        ok(d, &args(&w));
        assert!(fs::read(s.join("out.img")).unwrap() == want, "{w:?}");
        assert_eq!(fs::read(s.join("other-name")).unwrap(), b"old");
        fs::remove_file(s.join("other-name")).unwrap();
        assert!(!s.join("out.img.cowsnap-tmp").exists());
    }
    // A missing file in a missing directory: an error, nothing created.
    let before = state(&[d]);
    for w in writers("nodir/out.img") {
        refused(d, &args(&w));
    }
    assert_eq!(state(&[d]), before);
}

/// A directory is refused, unchanged.
#[test]
fn directory_is_refused() {
    let s = Scratch::new("out-dir");
    let d = s.path();
    volume(&s);
    fs::create_dir(s.join("adir")).unwrap();
    fs::write(s.join("adir/keep"), b"keep").unwrap();
    let before = state(&[d]);
    for w in writers("adir") {
        let e = refused(d, &args(&w));
        assert!(e.contains("directory"), "{e}");
    }
    assert_eq!(state(&[d]), before);
}

/// A symlink to a file is followed: the file gets the image, the link stays a link. A dangling
/// symlink is refused and left as it is.
#[test]
fn symlinks_are_followed_and_dangling_ones_refused() {
    let s = Scratch::new("out-link");
    let d = s.path();
    volume(&s);
    fs::create_dir(s.join("real")).unwrap();
    for w in writers("link.img") {
        fs::write(s.join("real/target.img"), b"old").unwrap();
        let _ = fs::remove_file(s.join("link.img"));
        std::os::unix::fs::symlink("real/target.img", s.join("link.img")).unwrap();
        ok(d, &args(&w));
        let m = fs::symlink_metadata(s.join("link.img")).unwrap();
        assert!(m.file_type().is_symlink(), "{w:?} replaced the link");
        assert_eq!(
            fs::read_link(s.join("link.img")).unwrap(),
            Path::new("real/target.img")
        );
        assert!(fs::read(s.join("real/target.img")).unwrap() == snapshot_image());
        assert!(!s.join("real/target.img.cowsnap-tmp").exists());
    }
    std::os::unix::fs::symlink("real/missing.img", s.join("dangling")).unwrap();
    let before = state(&[d]);
    for w in writers("dangling") {
        let e = refused(d, &args(&w));
        assert!(e.contains("dangling"), "{e}");
    }
    assert_eq!(state(&[d]), before);
}

/// Character devices are written through, never replaced: a null device takes the image, a full one
/// (ENOSPC) fails the command. Then the system's /dev/null, which must stay a device.
#[test]
fn character_devices_are_written_through() {
    need_root!("mknod");
    let s = Scratch::new("out-chr");
    let d = s.path();
    volume(&s);
    let mknod = |name: &str, minor: &str| {
        let st = Command::new("mknod")
            .args([path_str(&s.join(name)), "c", "1", minor])
            .status()
            .unwrap();
        assert!(st.success());
    };
    mknod("null", "3");
    mknod("full", "7");
    std::os::unix::fs::symlink("null", s.join("null-link")).unwrap();
    for w in writers("null")
        .into_iter()
        .chain(writers("null-link"))
        .chain(writers("/dev/null"))
    {
        ok(d, &args(&w));
        for p in [s.join("null"), PathBuf::from("/dev/null")] {
            let m = fs::metadata(&p).unwrap();
            assert!(m.file_type().is_char_device(), "{w:?} replaced {p:?}");
            assert_eq!(m.rdev(), libc::makedev(1, 3));
        }
        assert!(fs::symlink_metadata(s.join("null-link"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
    for w in writers("full") {
        let e = refused(d, &args(&w));
        assert!(e.contains("No space left"), "{w:?}: {e}");
        assert!(fs::metadata(s.join("full"))
            .unwrap()
            .file_type()
            .is_char_device());
    }
    assert!(!s.join("null.cowsnap-tmp").exists() && !s.join("full.cowsnap-tmp").exists());
}

/// A loop device over a scratch file, detached on drop.
struct Loop {
    dev: String,
    backing: PathBuf,
}

impl Loop {
    fn new(backing: &Path) -> Loop {
        let o = Command::new("losetup")
            .args(["-f", "--show", path_str(backing)])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Loop {
            dev: String::from_utf8(o.stdout).unwrap().trim().to_string(),
            backing: backing.to_path_buf(),
        }
    }
    /// The device's bytes, read from its backing file (cowsnap fsyncs the device, so they are
    /// there; the device's own page cache would be stale after the test rewrites the file).
    fn read(&self, len: usize) -> Vec<u8> {
        let mut v = fs::read(&self.backing).unwrap();
        v.truncate(len);
        v
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A block device is written in place like `dd of=`: the image in its first bytes (zeros written,
/// not skipped), the rest untouched, the node still a node. Too small, in use, or backed by a file
/// of the volume: refused, unchanged.
#[test]
fn block_devices_are_written_in_place() {
    need_root!("loop devices");
    let s = Scratch::new("out-blk");
    let d = s.path();
    volume(&s);
    let want = snapshot_image();
    let disk = s.join("disk");
    fs::write(&disk, vec![0x5Au8; 24 * MIB as usize]).unwrap();
    let lo = Loop::new(&disk);
    std::os::unix::fs::symlink(&lo.dev, s.join("dev-link")).unwrap();
    for w in writers(&lo.dev).into_iter().chain(writers("dev-link")) {
        fs::write(&disk, vec![0x5Au8; 24 * MIB as usize]).unwrap();
        ok(d, &args(&w));
        let got = lo.read(24 * MIB as usize);
        assert!(got[..16 * MIB as usize] == want[..], "{w:?}: image");
        assert!(
            got[16 * MIB as usize..].iter().all(|&b| b == 0x5A),
            "{w:?}: past the image"
        );
        let m = fs::metadata(&lo.dev).unwrap();
        assert!(m.file_type().is_block_device(), "{w:?} replaced the node");
        assert!(fs::symlink_metadata(s.join("dev-link"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
    // backup writes no sidecar beside a device unless asked; a device can hold the sidecar.
    assert!(!Path::new(&format!("{}.sums", lo.dev)).exists());
    ok(d, &["-q", "backup", "v/s1", "x.img", "--sums", &lo.dev]);
    ok(d, &["-q", "verify", "v/s1", "--sums", &lo.dev]);
    ok(d, &["-q", "verify", "--image", "x.img", "--sums", &lo.dev]);
    ok(d, &["-q", "backup", "v/s1", &lo.dev, "--sums", "dev.sums"]);
    ok(
        d,
        &["-q", "verify", "--image", &lo.dev, "--sums", "dev.sums"],
    );

    // Too small.
    let small = s.join("small");
    fs::write(&small, vec![0x5Au8; 8 * MIB as usize]).unwrap();
    let lo_small = Loop::new(&small);
    // Backed by the volume's origin or COW: the same bytes as an input.
    let lo_origin = Loop::new(&s.join("v/origin.img"));
    let lo_cow = Loop::new(&s.join("v/s1.cow"));
    let before = state(&[d]);
    let before_small = lo_small.read(8 * MIB as usize);
    for dev in [&lo_small.dev, &lo_origin.dev, &lo_cow.dev] {
        for w in writers(dev) {
            refused(d, &args(&w));
        }
    }
    assert_eq!(state(&[d]), before);
    assert!(lo_small.read(8 * MIB as usize) == before_small);

    // In use (held open exclusively, as a mount does): EBUSY, refused.
    use std::os::unix::fs::OpenOptionsExt;
    let held = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&lo.dev)
        .unwrap();
    fs::write(&disk, vec![0x5Au8; 24 * MIB as usize]).unwrap();
    for w in writers(&lo.dev) {
        let e = refused(d, &args(&w));
        assert!(e.contains("in use"), "{e}");
    }
    drop(held);
    assert!(lo.read(24 * MIB as usize).iter().all(|&b| b == 0x5A));
}

/// Outputs that are inputs or files of the volume, through every kind of path, are refused before
/// anything is written: the volume, the inputs and the scratch folder are unchanged.
#[test]
fn outputs_that_are_inputs_or_volume_files_are_refused() {
    let s = Scratch::new("out-self");
    let d = s.path();
    volume(&s);
    ok(d, &["-q", "snapshot", "v", "--name", "s2", "--size", "8M"]);
    fs::create_dir(s.join("sub")).unwrap();
    for f in [
        "origin.img",
        "s1.cow",
        "s2.cow",
        "cowsnap.json",
        ".cowsnap.lock",
    ] {
        let name = f.trim_start_matches('.');
        std::os::unix::fs::symlink(format!("../v/{f}"), s.join(&format!("sub/link-{name}")))
            .unwrap();
        fs::hard_link(s.join("v").join(f), s.join(&format!("sub/hard-{name}"))).unwrap();
    }
    let before = state(&[d]);
    let mut n = 0;
    for f in [
        "origin.img",
        "s1.cow",
        "s2.cow",
        "cowsnap.json",
        ".cowsnap.lock",
    ] {
        let name = f.trim_start_matches('.');
        let paths = [
            format!("v/{f}"),
            s.join("v").join(f).display().to_string(),
            format!("sub/../v/{f}"),
            format!("v/../v/./{f}"),
            format!("sub/link-{name}"),
            format!("sub/hard-{name}"),
        ];
        for p in &paths {
            for w in writers(p) {
                // export's inputs are files of a volume: the whole volume is guarded.
                let e = refused(d, &args(&w));
                assert!(e.contains("refusing"), "{w:?}: {e}");
                n += 1;
            }
            // The checksum sidecar too.
            let e = refused(d, &["backup", "v/s1", "fresh.img", "--sums", p]);
            assert!(e.contains("refusing"), "{p}: {e}");
        }
    }
    assert_eq!(n, 90);
    // Another volume's files are no outputs either.
    ok(d, &["-q", "create", "w", "--size", "16M"]);
    ok(d, &["-q", "snapshot", "w", "--name", "t", "--size", "1M"]);
    let before_w = state(&[d]);
    for p in [
        "w/origin.img",
        "w/t.cow",
        "w/cowsnap.json",
        "sub/../w/t.cow",
    ] {
        for w in writers(p) {
            refused(d, &args(&w));
        }
    }
    assert_eq!(state(&[d]), before_w);
    fs::remove_dir_all(s.join("w")).unwrap();
    // The sidecar may not be the output itself; a volume file that does not exist now (the
    // manifest's temporary) may not be created by an output either.
    refused(d, &["backup", "v/s1", "x.img", "--sums", "x.img"]);
    for p in ["v/cowsnap.json.tmp", "sub/../v/cowsnap.json.tmp"] {
        let e = refused(d, &["backup", "v/s1", p]);
        assert!(e.contains("refusing"), "{e}");
    }
    assert_eq!(state(&[d]), before);
}

/// A leftover temporary file, even a symlink to the origin, is never opened: refused, unchanged.
#[test]
fn leftover_temporary_file_is_never_opened() {
    let s = Scratch::new("out-tmp");
    let d = s.path();
    volume(&s);
    std::os::unix::fs::symlink("v/origin.img", s.join("out.img.cowsnap-tmp")).unwrap();
    let before = state(&[d]);
    for w in writers("out.img") {
        let e = refused(d, &args(&w));
        assert!(e.contains("cowsnap-tmp"), "{e}");
    }
    assert_eq!(state(&[d]), before);
}

/// export and raw merge refuse one file as both origin and COW (same path, hard link, symlink, `..`),
/// and export refuses to write over either input.
#[test]
fn raw_inputs_named_twice_are_refused() {
    let v = vectors();
    let s = Scratch::new("out-raw");
    let d = s.path();
    let k = v.join("kernel/basic-4k");
    fs::write(s.join("o.img"), gunzip(&k.join("origin.img.gz"))).unwrap();
    fs::write(s.join("c.cow"), gunzip(&k.join("s0.cow.gz"))).unwrap();
    fs::hard_link(s.join("o.img"), s.join("o-hard")).unwrap();
    fs::hard_link(s.join("c.cow"), s.join("c-hard")).unwrap();
    std::os::unix::fs::symlink("o.img", s.join("o-link")).unwrap();
    fs::create_dir(s.join("sub")).unwrap();
    let before = state(&[d]);
    for (o, c) in [
        ("o.img", "o.img"),
        ("o.img", "o-hard"),
        ("o.img", "o-link"),
        ("o.img", "sub/../o.img"),
        ("c.cow", "c-hard"),
    ] {
        let e = refused(d, &["merge", "--origin", o, "--cow", c]);
        assert!(e.contains("same file"), "{e}");
        refused(d, &["export", "--origin", o, "--cow", c, "--out", "x.img"]);
    }
    for out in [
        "o.img",
        "o-hard",
        "o-link",
        "sub/../o.img",
        "c.cow",
        "c-hard",
    ] {
        let e = refused(
            d,
            &[
                "export", "--origin", "o.img", "--cow", "c.cow", "--out", out,
            ],
        );
        assert!(e.contains("input"), "{out}: {e}");
    }
    assert_eq!(state(&[d]), before);
}

/// A bind mount of the volume directory names the same inodes under another path: still refused.
#[test]
fn bind_mounted_volume_files_are_refused() {
    need_root!("bind mount");
    let s = Scratch::new("out-bind");
    let d = s.path();
    volume(&s);
    fs::create_dir(s.join("bind")).unwrap();
    let st = Command::new("mount")
        .args(["--bind", path_str(&s.join("v")), path_str(&s.join("bind"))])
        .status()
        .unwrap();
    assert!(st.success());
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Umount(s.join("bind"));
    let before = state(&[&s.join("v")]);
    for f in ["origin.img", "s1.cow", "cowsnap.json"] {
        for w in writers(&format!("bind/{f}")) {
            refused(d, &args(&w));
        }
    }
    assert_eq!(state(&[&s.join("v")]), before);
}

// ---- replay --out-dir: the script is an input like any other ----

fn script(origin_size: u64, snaps: &[(&str, u64)], ops: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "origin_size": origin_size,
        "origin_init": "zero",
        "snapshots": snaps.iter().map(|(n, c)| serde_json::json!({
            "name": n, "cow_size": c, "chunk_sectors": 8, "store": "P"
        })).collect::<Vec<_>>(),
        "ops": ops,
    })
}

/// Names that would leave --out-dir (or clash with its files) are refused before anything is created.
#[test]
fn replay_refuses_hostile_names() {
    let s = Scratch::new("replay-names");
    let d = s.path();
    fs::create_dir(s.join("deep")).unwrap();
    let outside = s.join("escaped");
    let names = [
        "../escaped".to_string(),
        "../../escaped".to_string(),
        outside.display().to_string(),
        "a/b".to_string(),
        ".hidden".to_string(),
        "..".to_string(),
        "".to_string(),
        "origin".to_string(),
        "x".repeat(300),
        "nul\u{0}byte".to_string(),
    ];
    for n in &names {
        let sc = script(
            MIB,
            &[(n, MIB)],
            serde_json::json!([{"op": "snapshot", "name": n}]),
        );
        fs::write(s.join("s.json"), sc.to_string()).unwrap();
        let before = state(&[d]);
        let e = refused(d, &["replay", "s.json", "--out-dir", "deep/out"]);
        assert!(e.contains("refusing the script"), "{n:?}: {e}");
        assert_eq!(state(&[d]), before, "{n:?}");
        assert!(!s.join("deep/out").exists() && !outside.exists());
    }
    // A script the engine refuses half way (an unknown snapshot after the origin exists): nothing
    // left, neither in an existing --out-dir nor a new one.
    let sc = script(
        MIB,
        &[],
        serde_json::json!([{"op": "snapshot", "name": "ghost"}]),
    );
    fs::write(s.join("s.json"), sc.to_string()).unwrap();
    fs::create_dir(s.join("existing")).unwrap();
    let before = state(&[d]);
    for out in ["existing", "new/deeper"] {
        let e = refused(d, &["replay", "s.json", "--out-dir", out]);
        assert!(e.contains("ghost"), "{e}");
    }
    assert_eq!(state(&[d]), before);
    // Twice the same name.
    let sc = script(
        MIB,
        &[("a", MIB), ("a", MIB)],
        serde_json::json!([{"op": "snapshot", "name": "a"}]),
    );
    fs::write(s.join("s.json"), sc.to_string()).unwrap();
    let e = refused(d, &["replay", "s.json", "--out-dir", "out"]);
    assert!(e.contains("twice"), "{e}");
    assert!(!s.join("out").exists());
}

/// Huge sizes and lengths: refused above the documented limit, recorded as the engine's refusal for a
/// write past the end, never a panic or an abort.
#[test]
fn replay_refuses_huge_sizes_without_crashing() {
    let s = Scratch::new("replay-huge");
    let d = s.path();
    let tib = 1u64 << 40;
    for (sc, why) in [
        (script(tib, &[], serde_json::json!([])), "origin_size"),
        (script(u64::MAX, &[], serde_json::json!([])), "origin_size"),
        (script(0, &[], serde_json::json!([])), "origin_size"),
        (
            script(
                MIB,
                &[("s", tib)],
                serde_json::json!([{"op": "snapshot", "name": "s"}]),
            ),
            "cow_size",
        ),
    ] {
        fs::write(s.join("s.json"), sc.to_string()).unwrap();
        let e = refused(d, &["replay", "s.json", "--out-dir", "out"]);
        assert!(e.contains(why), "{e}");
        assert!(!s.join("out").exists());
    }
    // Writes past the end (length 2^64-1, offsets near 2^64): the engine's answer, WRITE-ERR.
    let sc = script(
        MIB,
        &[("s", MIB)],
        serde_json::json!([
            {"op": "snapshot", "name": "s"},
            {"op": "write", "target": "origin", "offset": 0, "len": u64::MAX, "fill": 1},
            {"op": "write", "target": "s", "offset": u64::MAX, "len": 2, "fill": 1},
            {"op": "write", "target": "origin", "offset": 4096, "len": 4096, "fill": 7},
        ]),
    );
    fs::write(s.join("s.json"), sc.to_string()).unwrap();
    ok(d, &["-q", "replay", "s.json", "--out-dir", "out"]);
    let st: serde_json::Value =
        serde_json::from_slice(&fs::read(s.join("out/status.json")).unwrap()).unwrap();
    assert_eq!(
        st["errors"],
        serde_json::json!(["WRITE-ERR origin 0", format!("WRITE-ERR s {}", u64::MAX)])
    );
    let o = fs::read(s.join("out/origin.img")).unwrap();
    assert!(o[4096..8192].iter().all(|&b| b == 7) && o[..4096].iter().all(|&b| b == 0));
    // A script file too large to be one, and a deeply nested one: errors, not crashes.
    let big = fs::File::create(s.join("big.json")).unwrap();
    big.set_len(100 * MIB).unwrap();
    refused(d, &["replay", "big.json", "--out-dir", "out2"]);
    fs::write(s.join("deep.json"), "[".repeat(100_000)).unwrap();
    refused(d, &["replay", "deep.json", "--out-dir", "out2"]);
    assert!(!s.join("out2").exists());
}

/// A 16 GiB origin is replayed to sparse files, fast, with the right bytes where it was written.
#[test]
fn replay_writes_a_16_gib_origin_sparse() {
    let s = Scratch::new("replay-16g");
    let d = s.path();
    let g16 = 16u64 << 30;
    let at = 8u64 << 30;
    let sc = script(
        g16,
        &[("s", 8 * MIB)],
        serde_json::json!([
            {"op": "snapshot", "name": "s"},
            {"op": "write", "target": "origin", "offset": at, "len": 65536, "fill": 7},
            {"op": "write", "target": "s", "offset": g16 - 4096, "len": 4096, "fill": 9},
        ]),
    );
    fs::write(s.join("s.json"), sc.to_string()).unwrap();
    let t = std::time::Instant::now();
    ok(d, &["-q", "replay", "s.json", "--out-dir", "out"]);
    assert!(t.elapsed().as_secs() < 60, "{:?}", t.elapsed());
    for f in ["origin.img", "s.img", "s.cow"] {
        let m = fs::metadata(s.join("out").join(f)).unwrap();
        assert!(
            m.blocks() * 512 < 4 * MIB,
            "{f}: {} bytes allocated",
            m.blocks() * 512
        );
    }
    assert_eq!(fs::metadata(s.join("out/origin.img")).unwrap().len(), g16);
    assert_eq!(fs::metadata(s.join("out/s.img")).unwrap().len(), g16);
    use std::os::unix::fs::FileExt;
    let read = |f: &str, off: u64| {
        let mut b = [0u8; 4];
        fs::File::open(s.join("out").join(f))
            .unwrap()
            .read_exact_at(&mut b, off)
            .unwrap();
        b
    };
    assert_eq!(read("origin.img", at), [7; 4]);
    assert_eq!(read("s.img", at), [0; 4], "the snapshot kept the zeros");
    assert_eq!(read("s.img", g16 - 4), [9; 4], "the snapshot's own write");
    assert_eq!(read("origin.img", g16 - 4), [0; 4]);
}

/// --out-dir entries that are devices, dangling links or the script itself: refused, unchanged.
#[test]
fn replay_outputs_follow_the_output_rules() {
    let s = Scratch::new("replay-targets");
    let d = s.path();
    let sc = script(
        MIB,
        &[("s", MIB)],
        serde_json::json!([{"op": "snapshot", "name": "s"}]),
    );
    fs::create_dir(s.join("out")).unwrap();
    fs::write(s.join("s.json"), sc.to_string()).unwrap();
    type Make<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "script",
            Box::new(|| {
                std::os::unix::fs::symlink("../s.json", s.join("out/status.json")).unwrap()
            }),
        ),
        (
            "script hard link",
            Box::new(|| fs::hard_link(s.join("s.json"), s.join("out/s.cow")).unwrap()),
        ),
        (
            "dangling",
            Box::new(|| std::os::unix::fs::symlink("nowhere", s.join("out/s.img")).unwrap()),
        ),
        (
            "device",
            Box::new(|| std::os::unix::fs::symlink("/dev/null", s.join("out/origin.img")).unwrap()),
        ),
        (
            "two outputs, one file",
            Box::new(|| {
                fs::write(s.join("out/origin.img"), b"old").unwrap();
                std::os::unix::fs::symlink("origin.img", s.join("out/s.img")).unwrap()
            }),
        ),
        (
            "directory",
            Box::new(|| fs::create_dir(s.join("out/s.cow")).unwrap()),
        ),
    ];
    for (what, make) in cases {
        fs::remove_dir_all(s.join("out")).unwrap();
        fs::create_dir(s.join("out")).unwrap();
        make();
        let before = state(&[d]);
        refused(d, &["replay", "s.json", "--out-dir", "out"]);
        assert_eq!(state(&[d]), before, "{what}");
    }
}

/// On a mounted volume the commands run in the mount process: its FUSE files (the origin, the
/// snapshots) are files of the volume too, and outputs elsewhere still work (with their sidecar).
#[test]
fn mounted_volume_files_are_refused_as_outputs() {
    need_root!("FUSE mount");
    if !Path::new("/dev/fuse").exists() {
        eprintln!("skipped (FUSE mount): no /dev/fuse");
        return;
    }
    let s = Scratch::new("out-mount");
    let d = s.path();
    volume(&s);
    fs::create_dir(s.join("m")).unwrap();
    ok(d, &["-q", "mount", "--daemon", "v", "m"]);
    struct Umount<'a>(&'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = run(self.0, &["-q", "umount", "m"]);
        }
    }
    let _u = Umount(d);
    let before = state(&[&s.join("v")]);
    for p in ["m/origin", "m/s1"] {
        for w in writers(p).into_iter().take(2) {
            let e = refused(d, &args(&w));
            assert!(e.contains("refusing"), "{w:?}: {e}");
        }
    }
    // Inputs on the mount too, before the mount process takes the volume's lock: it would
    // serve their reads to itself (this hung for ever; `timeout` makes a hang a failure).
    let store = format!("file://{}/store", path_str(&s.join("m")));
    let inputs: [&[&str]; 4] = [
        &["write", "v", "--offset", "0", "--from", "m/s1"],
        &["write", "v/s1", "--offset", "0", "--from", "m/origin"],
        &["verify", "v/s1", "--sums", "m/origin"],
        &["backup", "v/s1", "--to", &store],
    ];
    for args in inputs {
        let o = Command::new("timeout")
            .arg("60")
            .arg(bin().get_program())
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains("own mount"), "{args:?}: {err}");
    }
    // Refused outputs inside the volume directory, through the mount process.
    refused(d, &["backup", "v/s1", "v/origin.img"]);
    assert_eq!(state(&[&s.join("v")]), before);
    ok(d, &["-q", "backup", "v/s1", "out.img"]);
    assert!(fs::read(s.join("out.img")).unwrap() == snapshot_image());
    ok(d, &["-q", "verify", "v/s1", "--sums", "out.img.sums"]);
}

/// ENOSPC at each output write site (a 4 MiB tmpfs): the command fails, and leaves nothing there.
#[test]
fn outputs_on_a_full_disk_fail_cleanly() {
    need_root!("tmpfs mount");
    let s = Scratch::new("out-enospc");
    let d = s.path();
    volume(&s);
    fs::create_dir(s.join("small")).unwrap();
    let st = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=4m",
            "tmpfs",
            path_str(&s.join("small")),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Umount(s.join("small"));
    let before = state(&[d]);
    for w in writers("small/out.img") {
        let e = refused(d, &args(&w));
        assert!(e.contains("No space left"), "{w:?}: {e}");
        assert_eq!(state(&[d]), before, "{w:?}");
    }
    // The image is written, its sidecar is not (a full device): the image is not put in place
    // either (both are renamed in place only once both are written).
    let st = Command::new("mknod")
        .args([path_str(&s.join("full")), "c", "1", "7"])
        .status()
        .unwrap();
    assert!(st.success());
    let before = state(&[d]);
    let e = refused(d, &["backup", "v/s1", "out.img", "--sums", "full"]);
    assert!(e.contains("No space left"), "{e}");
    assert_eq!(state(&[d]), before);
    // A replay whose origin (sector-index: all data) does not fit.
    let sc = serde_json::json!({
        "origin_size": 8 * MIB, "origin_init": "sector-index", "snapshots": [], "ops": []
    });
    fs::write(s.join("s.json"), sc.to_string()).unwrap();
    let before = state(&[d]);
    let e = refused(d, &["replay", "s.json", "--out-dir", "small/r"]);
    assert!(e.contains("No space left"), "{e}");
    assert_eq!(state(&[d]), before);
}
