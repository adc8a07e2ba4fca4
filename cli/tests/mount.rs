//! `cowsnap mount`: FUSE files and commands forwarded to the mount process. Needs root and /dev/fuse
//! (the loop-mounted file systems and MariaDB are in scripts/test-fuse.sh); says SKIPPED otherwise.

mod common;

use common::*;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

fn can_mount() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let fuse = Path::new("/dev/fuse").exists();
    if !(root && fuse) {
        eprintln!("SKIPPED mount tests: need root and /dev/fuse (root {root}, /dev/fuse {fuse})");
    }
    root && fuse
}

/// Unmounts on drop, so that a failing test leaves no mount behind.
struct Mounted<'a>(&'a Scratch, &'static str);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let mp = self.0.join(self.1);
        if fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .contains(&format!(" {} ", mp.display()))
        {
            let _ = run(self.0.path(), &["-q", "umount", self.1]);
        }
    }
}

#[test]
fn mounted_volume_serves_files_and_forwards_commands() {
    if !can_mount() {
        return;
    }
    let s = Scratch::new("mount");
    let d = s.path();
    ok(d, &["create", "v", "--size", "4M"]);
    ok(
        d,
        &[
            "write", "v", "--offset", "0", "--fill", "0x41", "--len", "64K",
        ],
    );
    fs::create_dir(s.join("m")).unwrap();
    ok(d, &["-q", "mount", "--daemon", "v", "m"]);
    let _guard = Mounted(&s, "m");
    assert!(s.join("v/.cowsnap.sock").exists());
    let e = fails(d, &["mount", "--daemon", "v", "m"]);
    assert!(e.contains("already"), "{e}");

    // The origin file: the volume's bytes and size, writable.
    let origin = s.join("m/origin");
    assert_eq!(fs::metadata(&origin).unwrap().len(), 4 << 20);
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&origin)
        .unwrap();
    let mut b = [0u8; 4];
    f.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"AAAA");

    // A snapshot taken through the mount process appears as a read-only file.
    ok(d, &["snapshot", "v", "--name", "s1", "--size", "1M"]);
    let snap = s.join("m/s1");
    assert!(snap.exists());
    assert!(fs::OpenOptions::new().write(true).open(&snap).is_err());
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"BBBB").unwrap();
    f.sync_all().unwrap();
    let mut sb = [0u8; 4];
    fs::File::open(&snap).unwrap().read_exact(&mut sb).unwrap();
    assert_eq!(&sb, b"AAAA", "snapshot keeps the old bytes");
    assert_eq!(
        ok(d, &["read", "v", "--offset", "0", "--len", "4"]),
        b"BBBB"
    );
    assert_eq!(
        ok(d, &["read", "v/s1", "--offset", "0", "--len", "4"]),
        b"AAAA"
    );
    // Writes past the end: ENOSPC; truncation refused.
    f.seek(SeekFrom::Start((4 << 20) - 2)).unwrap();
    assert!(f.write_all(b"xxxx").and_then(|()| f.sync_all()).is_err());
    assert!(f.set_len(1).is_err());
    drop(f);

    // lvs goes through the socket and says where the volume is mounted.
    let rows = lvs(d, "v");
    assert_eq!(rows.len(), 2);
    assert!(rows[0]["mountpoint"].as_str().unwrap().ends_with("/m"));
    assert!(data_percent(&rows, "s1") > 0.0);

    // A write through the socket is visible in the file at once (page cache invalidated).
    let mut cached = String::new();
    fs::File::open(&origin)
        .unwrap()
        .take(4)
        .read_to_string(&mut cached)
        .unwrap();
    ok(
        d,
        &[
            "write", "v", "--offset", "0", "--fill", "0x43", "--len", "4",
        ],
    );
    let mut now = [0u8; 4];
    fs::File::open(&origin)
        .unwrap()
        .read_exact(&mut now)
        .unwrap();
    assert_eq!(&now, b"CCCC");
    // --from is streamed by the client.
    fs::write(s.join("data"), b"DDDD").unwrap();
    ok(d, &["write", "v", "--offset", "8", "--from", "data"]);
    assert_eq!(
        ok(d, &["read", "v", "--offset", "8", "--len", "4"]),
        b"DDDD"
    );
    // Errors come back as one line, with the exit code 1.
    let e = fails(d, &["read", "v/nosuch", "--offset", "0", "--len", "1"]);
    assert!(e.contains("no snapshot named"), "{e}");
    let e = fails(d, &["merge", "v/s1"]);
    assert!(e.contains("mounted"), "{e}");

    // An open snapshot file cannot be removed; once closed it can, and its file goes.
    let held = fs::File::open(&snap).unwrap();
    let e = fails(d, &["remove", "v/s1"]);
    assert!(e.contains("in use"), "{e}");
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(100)); // release is asynchronous
    ok(d, &["remove", "v/s1"]);
    assert!(!snap.exists());
    assert!(!s.join("v/s1.cow").exists());

    // Unmount waits for the mount process: then the volume opens directly again.
    ok(d, &["umount", "m"]);
    assert!(!s.join("v/.cowsnap.sock").exists());
    assert_eq!(lvs(d, "v").len(), 1);
    assert_eq!(
        ok(d, &["read", "v", "--offset", "0", "--len", "4"]),
        b"CCCC"
    );
    let e = fails(d, &["umount", "m"]);
    assert!(e.contains("not mounted"), "{e}");
}
