//! Issue 13 for managed volumes: hostile-but-fair uses of the volume's files, a full host disk, a
//! read-only mount, readers that never stop, broken snapshots and crash debris. Every refused
//! command must exit with its code (3 refused, 4 I/O or corruption) and leave the volume's files
//! exactly as they were. Tests that need root (tmpfs, bind mounts, mknod, FUSE) print SKIPPED
//! otherwise.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const REFUSED: i32 = 3;
const IO: i32 = 4;

fn is_root(what: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED {what}: needs root");
    }
    root
}

/// What is on disk in a directory: name -> (kind, size, hash of the contents or link target).
/// The lock files are left out (a refused command may create them; they hold no data).
fn state(dir: &Path) -> BTreeMap<String, (String, u64, u64)> {
    let mut m = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name == ".cowsnap.lock" || name == ".cowsnap.wlock" {
            continue;
        }
        let p = e.path();
        let md = fs::symlink_metadata(&p).unwrap();
        let t = md.file_type();
        let mut h = DefaultHasher::new();
        let kind = if t.is_symlink() {
            fs::read_link(&p).unwrap().hash(&mut h);
            "link"
        } else if t.is_file() {
            fs::read(&p).unwrap().hash(&mut h);
            "file"
        } else if t.is_dir() {
            "dir"
        } else {
            md.rdev().hash(&mut h);
            "special"
        };
        m.insert(name, (kind.to_string(), md.len(), h.finish()));
    }
    m
}

/// Runs a command that must be refused with `code`, and checks that `dir` did not change.
fn refused(cwd: &Path, dir: &Path, args: &[&str], code: i32) -> String {
    let before = state(dir);
    let e = fails_with(cwd, args, code);
    assert_eq!(before, state(dir), "{args:?} changed the volume ({e})");
    e
}

/// The volume: 16 MiB of `A`, snapshot `s1` (8 MiB COW), then `B` over the first 4 MiB.
fn volume_a_b(d: &Path) {
    ok(d, &["create", "v", "--size", "16M"]);
    ok(
        d,
        &[
            "write", "v", "--offset", "0", "--fill", "0x41", "--len", "16M",
        ],
    );
    ok(d, &["snapshot", "v", "--name", "s1", "--size", "8M"]);
    ok(
        d,
        &[
            "write", "v", "--offset", "0", "--fill", "0x42", "--len", "4M",
        ],
    );
}

fn read4(d: &Path, target: &str, offset: &str) -> Vec<u8> {
    ok(d, &["read", target, "--offset", offset, "--len", "4"])
}

fn manifest(d: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(d.join("v/cowsnap.json")).unwrap()).unwrap()
}

fn set_manifest(d: &Path, m: &serde_json::Value) {
    fs::write(
        d.join("v/cowsnap.json"),
        serde_json::to_vec_pretty(m).unwrap(),
    )
    .unwrap();
}

/// `lvs --json` of a volume that may have broken snapshots (stderr then has warnings).
fn lvs_doc(d: &Path) -> (serde_json::Value, String) {
    let o = run(d, &["lvs", "v", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (
        serde_json::from_slice(&o.stdout).unwrap(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn lv<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["report"][0]["lv"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["lv_name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {doc}"))
}

/// Asserts `s1` is listed as broken with a reason containing `why`, and that the origin is refused
/// for writes while every read of the origin still works.
fn assert_broken(d: &Path, name: &str, why: &str) {
    let (doc, err) = lvs_doc(d);
    let r = lv(&doc, name);
    assert_eq!(r["lv_attr"], "swi---s-X-", "{r}");
    let reason = r["broken"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(reason.contains(why), "{reason}");
    assert!(err.contains(&format!("snapshot {name} is broken")), "{err}");
    let v = d.join("v");
    let e = refused(
        d,
        &v,
        &[
            "write", "v", "--offset", "0", "--fill", "0x43", "--len", "4K",
        ],
        REFUSED,
    );
    assert!(
        e.contains(&format!("snapshot {name} is broken")) && e.contains("remove --force"),
        "{e}"
    );
    assert_eq!(read4(d, "v", "0"), b"BBBB");
}

// ---- 1. A known COW is never formatted; COW paths stay plain names in the volume. ----

#[test]
fn zeroed_cow_header_is_corruption_never_reformatted() {
    let s = Scratch::new("zero-magic");
    let d = s.path();
    volume_a_b(d);
    let cow = s.join("v/s1.cow");
    let f = fs::OpenOptions::new().write(true).open(&cow).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0; 4], 0).unwrap();
    drop(f);
    assert_broken(d, "s1", "zeroed");
    let v = s.join("v");
    let e = refused(d, &v, &["read", "v/s1", "--offset", "0", "--len", "4"], IO);
    assert!(e.contains("s1") && e.contains("corrupt"), "{e}");
    refused(d, &v, &["extend", "v/s1", "--size", "+1M"], IO);
    refused(d, &v, &["merge", "v/s1"], IO);
    refused(d, &v, &["backup", "v/s1", "../out.img"], IO);
    assert!(!s.join("out.img").exists());

    // Empty: too short for a header.
    fs::write(&cow, b"").unwrap();
    assert_broken(d, "s1", "smaller than a header");
    refused(d, &v, &["read", "v/s1", "--offset", "0", "--len", "4"], IO);
    assert_eq!(fs::metadata(&cow).unwrap().len(), 0);
    // Truncated to 0 and back (the header reads as zeros): the same as zeroed.
    fs::OpenOptions::new()
        .write(true)
        .open(&cow)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    assert_broken(d, "s1", "zeroed");
    assert!(
        fs::read(&cow).unwrap().iter().all(|&b| b == 0),
        "COW formatted"
    );
}

#[test]
fn cow_paths_in_the_manifest_must_be_plain_names() {
    let s = Scratch::new("cow-paths");
    let d = s.path();
    volume_a_b(d);
    // A foreign file that would activate fine: a copy of a real COW, outside the volume.
    fs::copy(s.join("v/s1.cow"), s.join("foreign.cow")).unwrap();
    fs::create_dir(s.join("v/sub")).unwrap();
    fs::copy(s.join("v/s1.cow"), s.join("v/sub/x.cow")).unwrap();
    let foreign = fs::read(s.join("foreign.cow")).unwrap();
    let abs = s.join("foreign.cow").to_string_lossy().into_owned();
    for bad in ["../foreign.cow", abs.as_str(), "sub/x.cow", "..", "."] {
        let mut m = manifest(d);
        m["snapshots"][0]["cow"] = bad.into();
        set_manifest(d, &m);
        assert_broken(d, "s1", "plain file name");
        assert_eq!(fs::read(s.join("foreign.cow")).unwrap(), foreign, "{bad}");
    }
    // The origin's name too: the whole volume is refused.
    let mut m = manifest(d);
    m["snapshots"][0]["cow"] = "s1.cow".into();
    m["origin"] = "../foreign.cow".into();
    set_manifest(d, &m);
    let e = refused(d, &s.join("v"), &["lvs", "v"], IO);
    assert!(e.contains("plain file name"), "{e}");
}

#[test]
fn symlinks_directories_and_special_files_are_refused() {
    let s = Scratch::new("links");
    let d = s.path();
    volume_a_b(d);
    let v = s.join("v");
    let cow = s.join("v/s1.cow");
    fs::rename(&cow, s.join("s1.cow.saved")).unwrap();

    // s1.cow -> origin.img: a header written there would destroy the origin.
    std::os::unix::fs::symlink("origin.img", &cow).unwrap();
    assert_broken(d, "s1", "symbolic link");
    // s1.cow -> a real COW elsewhere: refused too (it could be another volume's).
    fs::remove_file(&cow).unwrap();
    std::os::unix::fs::symlink(s.join("s1.cow.saved"), &cow).unwrap();
    assert_broken(d, "s1", "symbolic link");
    // A directory, a FIFO (must not hang).
    fs::remove_file(&cow).unwrap();
    fs::create_dir(&cow).unwrap();
    assert_broken(d, "s1", "directory");
    fs::remove_dir(&cow).unwrap();
    let c = CString::new(cow.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    assert_broken(d, "s1", "not a regular file");
    fs::remove_file(&cow).unwrap();
    // A character device node (root): refused, not written through.
    if is_root("device-node COW") {
        // SAFETY: mknod with a valid C string; 1:3 is /dev/null.
        let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
        assert_eq!(r, 0);
        assert!(fs::symlink_metadata(&cow)
            .unwrap()
            .file_type()
            .is_char_device());
        assert_broken(d, "s1", "not a regular file");
        fs::remove_file(&cow).unwrap();
    }
    fs::rename(s.join("s1.cow.saved"), &cow).unwrap();
    assert_eq!(read4(d, "v/s1", "0"), b"AAAA");

    // origin.img as a symlink (to a copy) or a directory: the whole volume is refused.
    let origin = s.join("v/origin.img");
    fs::rename(&origin, s.join("origin.saved")).unwrap();
    std::os::unix::fs::symlink(s.join("origin.saved"), &origin).unwrap();
    let e = refused(d, &v, &["lvs", "v"], REFUSED);
    assert!(e.contains("origin") && e.contains("symbolic link"), "{e}");
    refused(
        d,
        &v,
        &["write", "v", "--offset", "0", "--fill", "1", "--len", "1"],
        REFUSED,
    );
    fs::remove_file(&origin).unwrap();
    fs::create_dir(&origin).unwrap();
    let e = refused(
        d,
        &v,
        &["read", "v", "--offset", "0", "--len", "1"],
        REFUSED,
    );
    assert!(e.contains("is a directory, not an image file"), "{e}");
    let e = refused(
        d,
        &v,
        &["snapshot", "v", "--name", "s2", "--size", "1M"],
        REFUSED,
    );
    assert!(e.contains("is a directory"), "{e}");
    fs::remove_dir(&origin).unwrap();
    fs::rename(s.join("origin.saved"), &origin).unwrap();
    assert_eq!(read4(d, "v/s1", "0"), b"AAAA");
    assert_eq!(read4(d, "v", "0"), b"BBBB");
}

// ---- 2. Reserved COWs; a write that loses a snapshot says so; host errors exit 4. ----

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: Scratch,
}

impl Tmpfs {
    fn new(tag: &str, size: &str) -> Tmpfs {
        let dir = Scratch::new(tag);
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(st.success(), "mount tmpfs");
        Tmpfs { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn join(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }
    fn free(&self) -> u64 {
        free_bytes(self.path())
    }
    /// Fills the file system: a file taking all free space but `leave` bytes.
    fn fill(&self, leave: u64) {
        let free = self.free();
        let f = fs::File::create(self.join("filler")).unwrap();
        let n = free.saturating_sub(leave);
        if n > 0 {
            // SAFETY: posix_fallocate on a file we own.
            let r =
                unsafe { libc::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), 0, n as i64) };
            assert_eq!(r, 0, "fill");
        }
        assert!(
            self.free() <= leave + 4096,
            "free {} leave {leave}",
            self.free()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn free_bytes(p: &Path) -> u64 {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs into a zeroed struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

fn state_of(d: &Path, snap: &str) -> String {
    lv(&lvs_doc(d).0, snap)["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn snapshot_reserves_its_cow_and_a_full_disk_never_invalidates_it() {
    if !is_root("COW reservation test (tmpfs)") {
        return;
    }
    let t = Tmpfs::new("reserve", "200m");
    let d = t.path();
    ok(d, &["create", "v", "--size", "16M"]);
    ok(
        d,
        &[
            "write", "v", "--offset", "0", "--fill", "0x41", "--len", "8M",
        ],
    );
    let before = t.free();
    let start = Instant::now();
    ok(d, &["snapshot", "v", "--name", "s1", "--size", "64M"]);
    eprintln!("snapshot --size 64M on tmpfs: {:?}", start.elapsed());
    let dropped = before - t.free();
    assert!(
        (64 * MIB..=64 * MIB + MIB).contains(&dropped),
        "free space dropped by {dropped} bytes, expected ~64 MiB"
    );

    t.fill(0);
    // Overwriting allocated origin blocks: done (rc 0), the snapshot stays valid.
    ok(
        d,
        &[
            "write", "v", "--offset", "0", "--fill", "0x42", "--len", "8M",
        ],
    );
    assert_eq!(state_of(d, "s1"), "active");
    // A sparse origin range on a full disk: the host refuses (exit 4), the snapshot stays valid.
    let e = fails_with(
        d,
        &[
            "write", "v", "--offset", "8M", "--fill", "0x43", "--len", "1M",
        ],
        IO,
    );
    assert!(e.contains("No space left on device"), "{e}");
    assert_eq!(state_of(d, "s1"), "active");
    assert_eq!(read4(d, "v/s1", "0"), b"AAAA");
    assert_eq!(read4(d, "v/s1", "7M"), b"AAAA");
    assert_eq!(read4(d, "v/s1", "8M"), [0; 4]);
    assert_eq!(read4(d, "v", "0"), b"BBBB");
    // The reservation covers the whole COW: extend cannot find more room, and says so.
    let v = t.join("v");
    let e = refused(d, &v, &["extend", "v/s1", "--size", "+4M"], IO);
    assert!(e.contains("reserve") && e.contains("No space left"), "{e}");
}

#[test]
fn snapshot_and_extend_fail_cleanly_without_space() {
    if !is_root("ENOSPC at snapshot creation (tmpfs)") {
        return;
    }
    let t = Tmpfs::new("nospace", "20m");
    let d = t.path();
    let v = t.join("v");
    ok(d, &["create", "v", "--size", "8M"]);
    ok(
        d,
        &[
            "write", "v", "--offset", "0", "--fill", "0x41", "--len", "8M",
        ],
    );
    ok(d, &["snapshot", "v", "--name", "s1", "--size", "1M"]);
    t.fill(4 * MIB);
    let e = refused(
        d,
        &v,
        &["snapshot", "v", "--name", "s2", "--size", "8M"],
        IO,
    );
    assert!(e.contains("No space left on device"), "{e}");
    let e = refused(d, &v, &["extend", "v/s1", "--size", "+8M"], IO);
    assert!(e.contains("No space left on device"), "{e}");
    // Within the free space both work, and take it.
    let before = t.free();
    ok(d, &["extend", "v/s1", "--size", "+2M"]);
    assert!(before - t.free() >= 2 * MIB);
    assert_eq!(fs::metadata(t.join("v/s1.cow")).unwrap().len(), 3 * MIB);
}

#[test]
fn manifest_save_without_space_leaves_no_cow_and_no_tmp() {
    if !is_root("ENOSPC at manifest save (tmpfs)") {
        return;
    }
    let t = Tmpfs::new("nospace-manifest", "20m");
    let d = t.path();
    let v = t.join("v");
    ok(d, &["create", "v", "--size", "4M"]);
    ok(d, &["lvs", "v"]);
    // Room for the 4 MiB COW exactly, none for the manifest's temporary file.
    t.fill(4 * MIB);
    assert_eq!(t.free(), 4 * MIB, "tmpfs accounting");
    let e = refused(
        d,
        &v,
        &["snapshot", "v", "--name", "s1", "--size", "4M"],
        IO,
    );
    assert!(
        e.contains("cowsnap.json") && e.contains("No space left"),
        "{e}"
    );
    assert!(!t.join("v/s1.cow").exists());
    assert!(!t.join("v/cowsnap.json.tmp").exists());
    assert_eq!(
        t.free(),
        4 * MIB,
        "the COW's reservation was not given back"
    );
}

#[test]
fn merge_on_a_full_disk_keeps_the_other_snapshot() {
    if !is_root("merge on a full disk (tmpfs)") {
        return;
    }
    let t = Tmpfs::new("merge-full", "40m");
    let d = t.path();
    ok(d, &["create", "v", "--size", "8M"]);
    ok(
        d,
        &[
            "write", "v", "--offset", "0", "--fill", "0x41", "--len", "8M",
        ],
    );
    ok(d, &["snapshot", "v", "--name", "s1", "--size", "4M"]);
    ok(
        d,
        &[
            "write", "v", "--offset", "0", "--fill", "0x42", "--len", "2M",
        ],
    );
    // s2 holds B; merging s1 puts A back over it, so s2's COW takes 2 MiB of copies.
    ok(d, &["snapshot", "v", "--name", "s2", "--size", "4M"]);
    // No room even for the manifest that records the merge: refused before anything changes.
    t.fill(0);
    let e = refused(d, &t.join("v"), &["merge", "v/s1"], IO);
    assert!(e.contains("No space left"), "{e}");
    // Room for the manifest only: the merge's copies into s2 go to its reserved COW.
    fs::remove_file(t.join("filler")).unwrap();
    t.fill(64 << 10);
    ok(d, &["merge", "v/s1"]);
    assert_eq!(state_of(d, "s2"), "active");
    assert_eq!(read4(d, "v", "0"), b"AAAA");
    assert_eq!(read4(d, "v/s2", "0"), b"BBBB");
    assert_eq!(read4(d, "v/s2", "2M"), b"AAAA");
}

#[test]
fn origin_write_that_invalidates_a_snapshot_warns_and_exits_3() {
    let s = Scratch::new("lost");
    let d = s.path();
    ok(d, &["create", "v", "--size", "4M"]);
    ok(d, &["snapshot", "v", "--name", "small", "--size", "16K"]);
    ok(d, &["snapshot", "v", "--name", "big", "--size", "2M"]);
    let o = run(
        d,
        &["write", "v", "--offset", "0", "--fill", "9", "--len", "1M"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(REFUSED), "{err}");
    assert!(
        err.starts_with("cowsnap: warning: wrote 1048576 bytes")
            && err.contains("snapshot small was invalidated")
            && !err.contains("big"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // The write happened; `big` is intact.
    assert_eq!(read4(d, "v", "0"), [9; 4]);
    assert_eq!(read4(d, "v/big", "0"), [0; 4]);
    assert_eq!(state_of(d, "small"), "invalid");
    // A later write loses nothing more: rc 0.
    ok(
        d,
        &["write", "v", "--offset", "0", "--fill", "8", "--len", "4K"],
    );
}

// ---- 5. One file, one role. ----

#[test]
fn one_file_is_never_two_devices() {
    let s = Scratch::new("identity");
    let d = s.path();
    volume_a_b(d);
    ok(d, &["snapshot", "v", "--name", "s2", "--size", "8M"]);
    let v = s.join("v");
    let s2 = s.join("v/s2.cow");
    fs::rename(&s2, s.join("s2.saved")).unwrap();
    // s2.cow hard-linked to s1.cow: writes to s2 would change s1.
    fs::hard_link(s.join("v/s1.cow"), &s2).unwrap();
    assert_broken(d, "s2", "same file as snapshot s1's COW");
    let e = refused(
        d,
        &v,
        &[
            "write", "v/s2", "--offset", "0", "--fill", "1", "--len", "4K",
        ],
        REFUSED,
    );
    assert!(e.contains("s2 is broken"), "{e}");
    assert_eq!(read4(d, "v/s1", "0"), b"AAAA");
    // s2.cow symlinked to s1.cow.
    fs::remove_file(&s2).unwrap();
    std::os::unix::fs::symlink("s1.cow", &s2).unwrap();
    assert_broken(d, "s2", "symbolic link");
    // s2.cow hard-linked to the origin.
    fs::remove_file(&s2).unwrap();
    fs::hard_link(s.join("v/origin.img"), &s2).unwrap();
    assert_broken(d, "s2", "same file as the origin");
    fs::remove_file(&s2).unwrap();
    fs::rename(s.join("s2.saved"), &s2).unwrap();
    assert_eq!(read4(d, "v/s2", "0"), b"BBBB");
    // The same name twice in the manifest, or the origin's name: broken, and `remove --force`
    // drops the entry without deleting the file the other entry (or the origin) still uses.
    for name in ["s1.cow", "origin.img"] {
        let mut m = manifest(d);
        let entry = m["snapshots"][1].clone();
        m["snapshots"][1]["cow"] = name.into();
        set_manifest(d, &m);
        assert_broken(d, "s2", "same file as");
        let kept = fs::read(s.join("v").join(name)).unwrap();
        ok(d, &["-q", "remove", "--force", "v/s2"]);
        assert_eq!(
            fs::read(s.join("v").join(name)).unwrap(),
            kept,
            "{name} deleted"
        );
        assert_eq!(read4(d, "v/s1", "0"), b"AAAA");
        let mut m = manifest(d);
        m["snapshots"].as_array_mut().unwrap().push(entry);
        set_manifest(d, &m);
    }
    // A second name outside the manifest (another volume's file, a `cp -al` copy): reported by
    // lvs (a hard-link copy of a volume must not lock it out), not refused.
    fs::hard_link(&s2, s.join("elsewhere.cow")).unwrap();
    fs::hard_link(s.join("v/origin.img"), s.join("elsewhere.img")).unwrap();
    let (doc, err) = lvs_doc(d);
    assert_eq!(
        doc["hard_links_outside"],
        serde_json::json!({"origin.img": 1, "s2.cow": 1})
    );
    assert!(
        err.contains("s2.cow has 1 hard link(s) outside this volume"),
        "{err}"
    );
    assert_eq!(lv(&doc, "s2")["lv_attr"], "swi-a-s---");
    fs::remove_file(s.join("elsewhere.cow")).unwrap();
    fs::remove_file(s.join("elsewhere.img")).unwrap();
    let (doc, err) = lvs_doc(d);
    assert_eq!(doc["hard_links_outside"], serde_json::json!({}));
    assert!(err.is_empty(), "{err}");
    // The same inode through a bind mount of one file over another (root).
    if is_root("bind-mounted COW") {
        let st = Command::new("mount")
            .arg("--bind")
            .arg(s.join("v/s1.cow"))
            .arg(&s2)
            .status()
            .unwrap();
        assert!(st.success());
        let (doc, _) = lvs_doc(d);
        let _ = Command::new("umount").arg(&s2).status();
        let reason = lv(&doc, "s2")["broken"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            reason.contains("same file as snapshot s1's COW"),
            "{reason}"
        );
    }
    assert_eq!(read4(d, "v/s2", "0"), b"BBBB");
    // Creation cannot take an existing name either (a hard link to s1.cow under s3.cow).
    fs::hard_link(s.join("v/s1.cow"), s.join("v/s3.cow")).unwrap();
    let e = refused(
        d,
        &v,
        &["snapshot", "v", "--name", "s3", "--size", "1M"],
        REFUSED,
    );
    assert!(e.contains("already exists"), "{e}");
    // That stray name is reported (a name of s1's COW the manifest does not know).
    assert_eq!(
        lvs_doc(d).0["hard_links_outside"],
        serde_json::json!({"s1.cow": 1})
    );
    fs::remove_file(s.join("v/s3.cow")).unwrap();
    assert_eq!(read4(d, "v/s1", "0"), b"AAAA");
}

// ---- 6. Origin size recorded; header chunk size checked against the manifest. ----

#[test]
fn a_resized_origin_is_refused() {
    let s = Scratch::new("origin-size");
    let d = s.path();
    volume_a_b(d);
    assert_eq!(manifest(d)["origin_size"], 16 * MIB);
    let v = s.join("v");
    let origin = s.join("v/origin.img");
    let saved = fs::read(&origin).unwrap();
    for len in [8 * MIB, 32 * MIB, 16 * MIB - 512] {
        fs::OpenOptions::new()
            .write(true)
            .open(&origin)
            .unwrap()
            .set_len(len)
            .unwrap();
        for args in [
            &["lvs", "v"][..],
            &["read", "v/s1", "--offset", "0", "--len", "4"],
            &["write", "v", "--offset", "0", "--fill", "1", "--len", "1"],
            &["snapshot", "v", "--name", "s2", "--size", "1M"],
        ] {
            let e = refused(d, &v, args, IO);
            assert!(e.contains("truncated or grown"), "{e}");
        }
        fs::write(&origin, &saved).unwrap();
    }
    // A manifest from before the field: still opens; the next writing command records the size.
    let mut m = manifest(d);
    m.as_object_mut().unwrap().remove("origin_size");
    set_manifest(d, &m);
    assert_eq!(read4(d, "v/s1", "0"), b"AAAA");
    assert!(manifest(d).get("origin_size").is_none());
    ok(
        d,
        &[
            "write", "v", "--offset", "12M", "--fill", "0x44", "--len", "4K",
        ],
    );
    assert_eq!(manifest(d)["origin_size"], 16 * MIB);
}

#[test]
fn a_cow_header_chunk_size_must_match_the_manifest() {
    let s = Scratch::new("chunk-size");
    let d = s.path();
    volume_a_b(d);
    let cow = s.join("v/s1.cow");
    let f = fs::OpenOptions::new().write(true).open(&cow).unwrap();
    // 1, 2, 4 sectors (below the minimum) and 16 (plausible, but not what was created).
    for sectors in [1u32, 2, 4, 16] {
        std::os::unix::fs::FileExt::write_all_at(&f, &sectors.to_le_bytes(), 12).unwrap();
        assert_broken(d, "s1", "chunk size");
        let e = refused(
            d,
            &s.join("v"),
            &["read", "v/s1", "--offset", "0", "--len", "4"],
            IO,
        );
        assert!(e.contains("corrupt"), "{e}");
    }
    std::os::unix::fs::FileExt::write_all_at(&f, &8u32.to_le_bytes(), 12).unwrap();
    assert_eq!(read4(d, "v/s1", "0"), b"AAAA");
}

// ---- 7. Read-only file systems. ----

#[test]
fn read_only_mount_can_be_listed_read_and_backed_up() {
    if !is_root("read-only bind mount test") {
        return;
    }
    let s = Scratch::new("ro");
    fs::create_dir(s.join("src")).unwrap();
    let src = s.join("src");
    volume_a_b(&src);
    fs::create_dir(s.join("ro")).unwrap();
    let ro = s.join("ro");
    let sh = |args: &[&str]| {
        let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
        assert!(st.success(), "{args:?}");
    };
    let (src_s, ro_s) = (src.to_str().unwrap(), ro.to_str().unwrap());
    sh(&["mount", "--bind", src_s, ro_s]);
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(ro.clone());
    sh(&["mount", "-o", "remount,bind,ro", ro_s]);

    // With the lock files there (made by the commands above), then without them.
    for round in 0..2 {
        let v = ro.join("v");
        let before = state(&v);
        let rows = lvs(&ro, "v");
        assert_eq!(row(&rows, "s1")["lv_attr"], "swi-a-s---", "round {round}");
        assert_eq!(read4(&ro, "v/s1", "0"), b"AAAA");
        assert_eq!(read4(&ro, "v", "0"), b"BBBB");
        let out = s.join(&format!("backup{round}.img"));
        ok(&ro, &["backup", "v/s1", out.to_str().unwrap()]);
        let img = fs::read(&out).unwrap();
        assert_eq!(img.len() as u64, 16 * MIB);
        assert!(img.iter().all(|&b| b == b'A'));
        // Writing commands fail as I/O errors, naming the read-only file system.
        let e = fails_with(
            &ro,
            &["write", "v", "--offset", "0", "--fill", "1", "--len", "1"],
            IO,
        );
        assert!(e.contains("Read-only file system"), "{e}");
        assert_eq!(before, state(&v));
        // Round 2: no lock files at all on the read-only file system.
        for f in [".cowsnap.lock", ".cowsnap.wlock"] {
            let _ = fs::remove_file(src.join("v").join(f));
        }
    }
    assert!(!src.join("v/.cowsnap.lock").exists());
}

// ---- 9. Writers are not starved by readers. ----

#[test]
fn a_writer_gets_in_while_readers_keep_arriving() {
    let s = Scratch::new("starve");
    let d = s.path();
    // Sparse: each read of the whole volume takes a good part of a second, so the three readers'
    // shared locks always overlap (a writer waiting for a free moment never gets one).
    ok(d, &["create", "v", "--size", "256M"]);
    let stop = Arc::new(AtomicBool::new(false));
    let dir = d.to_path_buf();
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let stop = stop.clone();
            let dir = dir.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30 * i));
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let st = bin()
                        .current_dir(&dir)
                        .args(["-q", "read", "v", "--offset", "0", "--len", "256M"])
                        .stdout(Stdio::null())
                        .status()
                        .unwrap();
                    assert!(st.success());
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2000));
    let start = Instant::now();
    let o = bin()
        .current_dir(d)
        .args([
            "-q", "write", "v", "--offset", "0", "--fill", "0x42", "--len", "4K",
        ])
        .output()
        .unwrap();
    let waited = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let reads: u32 = readers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eprintln!("writer waited {waited:?} among 3 looping readers ({reads} reads)");
    assert!(reads >= 3, "the readers did not run");
    assert!(
        waited < Duration::from_secs(5),
        "writer starved for {waited:?}"
    );
    assert_eq!(read4(d, "v", "0"), [0x42; 4]);
}

// ---- 10. One broken snapshot does not lock out the volume. ----

#[test]
fn a_missing_cow_breaks_one_snapshot_only() {
    let s = Scratch::new("broken");
    let d = s.path();
    volume_a_b(d);
    ok(d, &["snapshot", "v", "--name", "s2", "--size", "8M"]);
    let v = s.join("v");
    fs::remove_file(s.join("v/s1.cow")).unwrap();
    assert_broken(d, "s1", "No such file");
    // Everything on s2 works, and s2 can be removed.
    assert_eq!(read4(d, "v/s2", "0"), b"BBBB");
    assert!(lv(&lvs_doc(d).0, "s2")["broken"].is_null());
    ok(d, &["-q", "backup", "v/s2", "s2.img"]);
    assert_eq!(&fs::read(s.join("s2.img")).unwrap()[..4], b"BBBB");
    ok(
        d,
        &[
            "write", "v/s2", "--offset", "0", "--fill", "0x45", "--len", "4K",
        ],
    );
    assert_eq!(read4(d, "v/s2", "0"), b"EEEE");
    ok(d, &["extend", "v/s2", "--size", "+1M"]);
    ok(d, &["snapshot", "v", "--name", "s3", "--size", "1M"]);
    ok(d, &["remove", "v/s3"]);
    // Changing the origin is refused: merge, write.
    let e = refused(d, &v, &["merge", "v/s2"], REFUSED);
    assert!(e.contains("s1 is broken"), "{e}");
    // The broken one goes only with --force.
    let e = refused(d, &v, &["remove", "v/s1"], REFUSED);
    assert!(e.contains("--force"), "{e}");
    let o = ok_str(d, &["remove", "--force", "v/s1"]);
    assert!(o.contains("removed broken snapshot s1"), "{o}");
    assert_eq!(manifest(d)["snapshots"].as_array().unwrap().len(), 1);
    ok(
        d,
        &[
            "write", "v", "--offset", "0", "--fill", "0x43", "--len", "4K",
        ],
    );
    assert_eq!(read4(d, "v", "0"), b"CCCC");
    assert_eq!(read4(d, "v/s2", "0"), b"EEEE");
    ok(d, &["remove", "v/s2"]);
}

#[test]
fn an_interrupted_merge_waits_while_another_snapshot_is_broken() {
    let s = Scratch::new("merge-broken");
    let d = s.path();
    ok(d, &["create", "v", "--size", "2M"]);
    ok(
        d,
        &["write", "v", "--offset", "0", "--fill", "1", "--len", "2M"],
    );
    for n in ["a", "b", "c"] {
        ok(d, &["snapshot", "v", "--name", n, "--size", "1M"]);
    }
    ok(
        d,
        &[
            "write", "v", "--offset", "4K", "--fill", "2", "--len", "100K",
        ],
    );
    let a = ok(d, &["read", "v/a", "--offset", "0", "--len", "2M"]);
    let b = ok(d, &["read", "v/b", "--offset", "0", "--len", "2M"]);
    // `merge v/a` was killed right after recording itself; then c's COW went missing.
    let mut m = manifest(d);
    m["merging"] = "a".into();
    set_manifest(d, &m);
    fs::remove_file(s.join("v/c.cow")).unwrap();
    let v = s.join("v");
    let before = state(&v);
    // Readers see the merge's result (the origin shows a) and nothing is written.
    let o = run(d, &["read", "v", "--offset", "0", "--len", "2M"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, a);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("resuming the merge of a refused") && err.contains("c is broken"),
        "{err}"
    );
    assert_eq!(before, state(&v));
    assert_eq!(read4(d, "v/b", "4K"), [1; 4]);
    let e = refused(
        d,
        &v,
        &["write", "v", "--offset", "0", "--fill", "3", "--len", "4K"],
        REFUSED,
    );
    assert!(e.contains("c is broken"), "{e}");
    // Dropping c lets the next command finish the merge.
    ok(d, &["-q", "remove", "--force", "v/c"]);
    assert_eq!(ok(d, &["read", "v", "--offset", "0", "--len", "2M"]), a);
    assert_eq!(ok(d, &["read", "v/b", "--offset", "0", "--len", "2M"]), b);
    assert!(!s.join("v/a.cow").exists());
    assert!(manifest(d)["merging"].is_null());
}

// ---- 11. Debris. ----

#[test]
fn failures_leave_nothing_and_leftovers_are_reported() {
    let s = Scratch::new("debris");
    let d = s.path();
    // create: a size the file system cannot hold leaves no directory; an empty one stays empty.
    let e = fails_with(d, &["create", "w", "--size", "1E"], IO);
    assert!(e.contains("origin.img"), "{e}");
    assert!(!s.join("w").exists(), "create left a directory");
    fs::create_dir(s.join("empty")).unwrap();
    fails_with(d, &["create", "empty", "--size", "1E"], IO);
    assert_eq!(fs::read_dir(s.join("empty")).unwrap().count(), 0);
    ok(d, &["create", "w", "--size", "1M"]);

    volume_a_b(d);
    let v = s.join("v");
    let e = refused(
        d,
        &v,
        &["snapshot", "v", "--name", "s2", "--size", "1E"],
        IO,
    );
    assert!(e.contains("s2.cow"), "{e}");
    assert!(!s.join("v/s2.cow").exists());

    // What a kill -9 leaves: an orphan COW, a backup's temporary file, the manifest's.
    fs::write(s.join("v/orphan.cow"), b"x").unwrap();
    fs::write(s.join("v/out.img.cowsnap-tmp"), b"x").unwrap();
    fs::write(s.join("v/cowsnap.json.tmp"), b"").unwrap();
    let (doc, err) = lvs_doc(d);
    assert_eq!(
        doc["leftovers"],
        serde_json::json!(["cowsnap.json.tmp", "orphan.cow", "out.img.cowsnap-tmp"])
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("orphan.cow") && err.contains("left by an interrupted"),
        "{err}"
    );
    // A writing command removes the manifest's temporary file only (written under this lock,
    // never data); the others may be data or another command's: reported, never deleted.
    ok(
        d,
        &["write", "v", "--offset", "0", "--fill", "1", "--len", "1"],
    );
    assert!(!s.join("v/cowsnap.json.tmp").exists());
    assert!(s.join("v/orphan.cow").exists() && s.join("v/out.img.cowsnap-tmp").exists());
    assert_eq!(
        lvs_doc(d).0["leftovers"],
        serde_json::json!(["orphan.cow", "out.img.cowsnap-tmp"])
    );
    // A clean volume has an empty list and no warning.
    fs::remove_file(s.join("v/orphan.cow")).unwrap();
    fs::remove_file(s.join("v/out.img.cowsnap-tmp")).unwrap();
    let (doc, err) = lvs_doc(d);
    assert_eq!(doc["leftovers"], serde_json::json!([]));
    assert!(err.is_empty(), "{err}");
}

#[test]
fn a_snapshot_killed_while_reserving_leaves_a_reported_orphan() {
    if !is_root("kill -9 during snapshot (tmpfs)") {
        return;
    }
    // tmpfs allocates pages: reserving 1.5 GiB takes long enough to be interrupted.
    let t = Tmpfs::new("kill9", "2g");
    let d = t.path();
    ok(d, &["create", "v", "--size", "1M"]);
    let before = manifest(d);
    let mut child = bin()
        .current_dir(d)
        .args(["-q", "snapshot", "v", "--name", "big", "--size", "1536M"])
        .spawn()
        .unwrap();
    let cow = t.join("v/big.cow");
    let start = Instant::now();
    while !cow.exists() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL
    let st = child.wait().unwrap();
    if st.success() {
        eprintln!("SKIPPED kill -9 check: the snapshot finished before the kill");
        return;
    }
    assert!(cow.exists(), "no COW file seen");
    assert_eq!(manifest(d), before, "the manifest changed");
    let (doc, err) = lvs_doc(d);
    assert_eq!(doc["leftovers"], serde_json::json!(["big.cow"]));
    assert!(err.contains("big.cow"), "{err}");
    // The volume works; the name is taken until the orphan is moved away.
    ok(
        d,
        &["write", "v", "--offset", "0", "--fill", "1", "--len", "4K"],
    );
    let e = refused(
        d,
        &t.join("v"),
        &["snapshot", "v", "--name", "big", "--size", "1M"],
        REFUSED,
    );
    assert!(e.contains("big.cow already exists"), "{e}");
    fs::remove_file(&cow).unwrap();
    ok(d, &["snapshot", "v", "--name", "big", "--size", "1M"]);
}

// ---- 12. Smaller ones. ----

#[test]
fn smaller_edges() {
    let s = Scratch::new("small");
    let d = s.path();
    volume_a_b(d);
    let v = s.join("v");
    // snapshot --name X never truncates an unrelated X.cow.
    fs::write(s.join("v/X.cow"), b"precious").unwrap();
    let e = refused(
        d,
        &v,
        &["snapshot", "v", "--name", "X", "--size", "1M"],
        REFUSED,
    );
    assert!(e.contains("X.cow already exists"), "{e}");
    assert_eq!(fs::read(s.join("v/X.cow")).unwrap(), b"precious");
    fs::remove_file(s.join("v/X.cow")).unwrap();
    // A dangling symlink of that name is refused too (O_EXCL).
    std::os::unix::fs::symlink(s.join("nowhere.cow"), s.join("v/X.cow")).unwrap();
    refused(
        d,
        &v,
        &["snapshot", "v", "--name", "X", "--size", "1M"],
        REFUSED,
    );
    assert!(!s.join("nowhere.cow").exists());
    fs::remove_file(s.join("v/X.cow")).unwrap();

    // A COW of 2 chunks (header + metadata area, no room for data) is refused, 3 are taken.
    let e = refused(
        d,
        &v,
        &["snapshot", "v", "--name", "t", "--size", "8K"],
        REFUSED,
    );
    assert!(
        e.contains("needs 3 chunks") && e.contains("[NO_SPACE]"),
        "{e}"
    );
    ok(d, &["snapshot", "v", "--name", "t", "--size", "12K"]);
    ok(d, &["-q", "remove", "v/t"]);

    // Sizes: not sector-aligned, 2^64-1, too large for a file.
    let e = fails_with(d, &["create", "w", "--size", "1000"], REFUSED);
    assert!(e.contains("512-byte sectors"), "{e}");
    assert!(!s.join("w").exists());
    let e = fails_with(
        d,
        &["create", "w", "--size", "18446744073709551615"],
        REFUSED,
    );
    assert!(e.contains("too large") && !e.contains("integral"), "{e}");
    assert!(!s.join("w").exists());
    let e = refused(
        d,
        &v,
        &[
            "snapshot",
            "v",
            "--name",
            "s2",
            "--size",
            "18446744073709551615",
        ],
        REFUSED,
    );
    assert!(e.contains("too large") && !e.contains("integral"), "{e}");
    // extend to huge sizes: a clear message, never "COW device too small".
    let e = refused(d, &v, &["extend", "v/s1", "--size", "8E"], REFUSED);
    assert!(e.contains("too large"), "{e}");
    let e = refused(d, &v, &["extend", "v/s1", "--size", "+1E"], IO);
    assert!(
        e.contains("cannot reserve") && !e.contains("too small"),
        "{e}"
    );
    let e = refused(
        d,
        &v,
        &["extend", "v/s1", "--size", "+18446744073709551615"],
        REFUSED,
    );
    assert!(e.contains("overflows") && !e.contains("too small"), "{e}");
    assert_eq!(fs::metadata(s.join("v/s1.cow")).unwrap().len(), 8 * MIB);

    // Duplicate names in a manifest.
    let mut m = manifest(d);
    let first = m["snapshots"][0].clone();
    m["snapshots"].as_array_mut().unwrap().push(first);
    set_manifest(d, &m);
    let e = refused(d, &v, &["lvs", "v"], IO);
    assert!(e.contains("listed twice"), "{e}");
    m["snapshots"].as_array_mut().unwrap().pop();
    set_manifest(d, &m);

    // A missing volume directory is named itself.
    let e = fails_with(d, &["lvs", "nowhere"], REFUSED);
    assert!(e.contains("no such volume directory: nowhere"), "{e}");
    let e = fails_with(
        d,
        &["read", "nowhere/s1", "--offset", "0", "--len", "1"],
        REFUSED,
    );
    assert!(e.contains("no such volume directory: nowhere"), "{e}");
    let e = fails_with(
        d,
        &[
            "write", "nowhere", "--offset", "0", "--fill", "1", "--len", "1",
        ],
        REFUSED,
    );
    assert!(e.contains("no such volume directory: nowhere"), "{e}");
    assert!(!s.join("nowhere").exists() && !s.join("cowsnap.json").exists());
    assert!(!s.join(".cowsnap.lock").exists());
}

#[test]
fn exit_codes_are_distinct() {
    let s = Scratch::new("codes");
    let d = s.path();
    ok(d, &["create", "v", "--size", "1M"]);
    // 2: usage (clap).
    assert_eq!(
        run(d, &["create", "w", "--size", "12Q"]).status.code(),
        Some(2)
    );
    assert_eq!(run(d, &["lvs"]).status.code(), Some(2));
    // 3: refused.
    fails_with(
        d,
        &["read", "v/nosuch", "--offset", "0", "--len", "1"],
        REFUSED,
    );
    fails_with(d, &["read", "v", "--offset", "1M", "--len", "1"], REFUSED);
    fails_with(d, &["create", "v", "--size", "1M"], REFUSED);
    // 4: I/O or corruption (here: a verify mismatch after a snapshot write).
    ok(d, &["-q", "snapshot", "v", "--name", "s", "--size", "64K"]);
    ok(d, &["-q", "backup", "v/s", "b.img"]);
    ok(
        d,
        &[
            "-q", "write", "v/s", "--offset", "0", "--fill", "7", "--len", "4K",
        ],
    );
    let o = run(d, &["verify", "v/s", "--sums", "b.img.sums"]);
    assert_eq!(
        o.status.code(),
        Some(IO),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    fs::write(s.join("v/cowsnap.json"), b"{").unwrap();
    fails_with(d, &["lvs", "v"], IO);
    // And `--help` says so.
    let help = ok_str(d, &["--help"]);
    assert!(
        help.contains("Exit codes: 0 done; 2 usage error; 3 refused"),
        "{help}"
    );
}

#[test]
fn already_mounted_is_said_once() {
    // SAFETY: geteuid cannot fail.
    if !(unsafe { libc::geteuid() } == 0 && Path::new("/dev/fuse").exists()) {
        eprintln!("SKIPPED already-mounted test: needs root and /dev/fuse");
        return;
    }
    let s = Scratch::new("mounted-once");
    let d = s.path();
    ok(d, &["create", "v", "--size", "1M"]);
    fs::create_dir(s.join("m1")).unwrap();
    fs::create_dir(s.join("m2")).unwrap();
    ok(d, &["-q", "mount", "--daemon", "v", "m1"]);
    let o = run(d, &["mount", "--daemon", "v", "m2"]);
    // Forwarded commands keep their exit codes (the kind travels with the error).
    let unknown = run(d, &["read", "v/nosuch", "--offset", "0", "--len", "1"]);
    let past = run(d, &["read", "v", "--offset", "1M", "--len", "1"]);
    let _ = run(d, &["-q", "umount", "m1"]);
    assert_eq!(unknown.status.code(), Some(REFUSED));
    assert_eq!(past.status.code(), Some(REFUSED));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no snapshot named"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(REFUSED), "{err}");
    assert_eq!(err.matches("already mounted").count(), 1, "{err}");
}
