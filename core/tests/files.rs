//! File devices at their edges: reservation, identity, refusing existing paths.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use cowsnap_core::{BlockDevice, Error, FileDevice, SnapshotOptions, Volume};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cowsnap-files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn create_new_reserves_its_space_and_refuses_existing_paths() {
    let d = scratch("reserve");
    let p = d.join("a.cow");
    let dev = FileDevice::create_new(&p, 8 << 20).unwrap();
    assert_eq!(dev.len(), 8 << 20);
    let m = std::fs::metadata(&p).unwrap();
    assert!(
        m.blocks() * 512 >= 8 << 20,
        "only {} bytes allocated",
        m.blocks() * 512
    );
    drop(dev);
    // An existing file, a symlink to one, a dangling symlink: refused, nothing changed.
    std::fs::write(d.join("old"), b"keep me").unwrap();
    std::os::unix::fs::symlink(d.join("old"), d.join("link")).unwrap();
    std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling")).unwrap();
    for name in ["a.cow", "old", "link", "dangling"] {
        assert!(
            FileDevice::create_new(d.join(name), 1 << 20).is_err(),
            "{name}"
        );
    }
    assert_eq!(std::fs::read(d.join("old")).unwrap(), b"keep me");
    assert!(!d.join("nowhere").exists());
    // Growing reserves too.
    let mut dev = FileDevice::open(&p).unwrap();
    dev.set_len(16 << 20).unwrap();
    assert!(std::fs::metadata(&p).unwrap().blocks() * 512 >= 16 << 20);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn one_file_cannot_be_two_devices_of_a_volume() {
    let d = scratch("identity");
    let (o, c) = (d.join("origin.img"), d.join("s1.cow"));
    FileDevice::create(&o, 1 << 20).unwrap();
    let mut vol = Volume::new(FileDevice::open(&o).unwrap());
    vol.create_snapshot(
        FileDevice::create_new(&c, 1 << 20).unwrap(),
        SnapshotOptions::default(),
    )
    .unwrap();
    vol.flush().unwrap();
    std::fs::hard_link(&c, d.join("hard.cow")).unwrap();
    std::os::unix::fs::symlink(&c, d.join("sym.cow")).unwrap();
    std::os::unix::fs::symlink(&o, d.join("origin-link.cow")).unwrap();
    let before = (std::fs::read(&o).unwrap(), std::fs::read(&c).unwrap());
    for name in [
        "s1.cow",
        "hard.cow",
        "sym.cow",
        "origin.img",
        "origin-link.cow",
    ] {
        let dev = FileDevice::open(d.join(name)).unwrap();
        let e = vol
            .activate_snapshot(dev, SnapshotOptions::default())
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{name}: {e:?}");
        let dev = FileDevice::open(d.join(name)).unwrap();
        let e = vol
            .create_snapshot(dev, SnapshotOptions::default())
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{name}: {e:?}");
    }
    assert_eq!(vol.snapshot_ids().len(), 1);
    assert_eq!(
        (std::fs::read(&o).unwrap(), std::fs::read(&c).unwrap()),
        before,
        "a refused device was written"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// ENOSPC at creation: the reservation fails cleanly and leaves no file (root: a small tmpfs).
#[test]
fn create_new_on_a_full_file_system_leaves_nothing() {
    if !is_root() {
        println!("skipped: needs root to mount a tmpfs");
        return;
    }
    let d = scratch("enospc");
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&d)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("skipped: cannot mount a tmpfs here");
        return;
    }
    let r = FileDevice::create_new(d.join("big.cow"), 64 << 20);
    let listing: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
    let _ = std::process::Command::new("umount").arg(&d).status();
    let _ = std::fs::remove_dir_all(&d);
    assert!(
        matches!(r, Err(Error::Io(ref m)) if m.contains("No space")),
        "{r:?}"
    );
    assert!(listing.is_empty(), "left behind: {listing:?}");
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
