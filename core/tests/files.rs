//! File devices at their edges: reservation, identity, refusing existing paths.

mod common;

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

#[test]
fn metadata_read_ahead_from_a_file_gives_what_reading_memory_gives() {
    // Large enough for activation to read a file's areas ahead in another thread (a memory
    // device is read one area after the other): same records, same refusals.
    use cowsnap_core::store::persistent::inspect;
    use cowsnap_core::MemDevice;
    let d = scratch("ahead");
    let n = 100 * 256 + 17;
    let intact = common::cow_image(n, 1 + 101 * 257 + 5);
    let mut bad = intact.clone();
    // Record 9 of area 80 names its own metadata chunk.
    let at = ((1 + 80 * 257) * 4096 + 9 * 16 + 8) as usize;
    bad[at..at + 8].copy_from_slice(&(1u64 + 80 * 257).to_le_bytes());
    // One hundred full areas, and the device ends where the next one would be.
    let cut = common::cow_image(100 * 256, 1 + 100 * 257);
    for (name, image) in [("intact", &intact), ("bad", &bad), ("cut", &cut)] {
        let p = d.join(format!("{name}.cow"));
        std::fs::write(&p, image).unwrap();
        let file = FileDevice::open(&p).unwrap();
        let mut mem = MemDevice::new(image.len());
        mem.write_at(0, image).unwrap();
        let (a, b) = (
            inspect(&file, Some(1_000_003)),
            inspect(&mem, Some(1_000_003)),
        );
        match (&a, &b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.exceptions, b.exceptions);
                assert_eq!(a.areas, b.areas);
                assert_eq!(a.records, b.records);
                assert_eq!(a.records.len() as u64, n);
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "{name}"),
            _ => panic!("{name}: {a:?} / {b:?}"),
        }
        let origin = d.join("origin");
        std::fs::File::create(&origin)
            .unwrap()
            .set_len(1_000_003 * 4096)
            .unwrap();
        let mut vol = Volume::new(FileDevice::open(&origin).unwrap());
        let got = vol.activate_snapshot(file, SnapshotOptions::default());
        match (got, &b) {
            (Ok(id), Ok(b)) => {
                assert_eq!(vol.snapshot_status(id).unwrap().exceptions, b.exceptions)
            }
            (Err(e), Err(b)) => assert_eq!(&e, b, "{name}"),
            (got, b) => panic!("{name}: {got:?} / {b:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// `write_behind` is a hint: it changes no byte, and a range past the end or of no length is
/// ignored, not an error or a panic.
#[test]
fn write_behind_changes_nothing() {
    let d = scratch("behind");
    let mut dev = FileDevice::create_new(d.join("f"), 1 << 20).unwrap();
    let data: Vec<u8> = (0..256 << 10).map(|i| (i % 251) as u8).collect();
    dev.write_at(4096, &data).unwrap();
    dev.write_behind(4096, data.len() as u64);
    dev.write_behind(0, u64::MAX);
    dev.write_behind(2 << 20, 4096);
    dev.write_behind(4096, 0);
    dev.flush().unwrap();
    let mut back = vec![0u8; data.len()];
    dev.read_at(4096, &mut back).unwrap();
    assert_eq!(back, data);
}

/// A merge hands what it copies onto the origin to write-back as it goes when the copies lie
/// side by side on the origin (so the step's flush waits for less), and leaves scattered
/// copies to that flush: the hints cover every merged byte of a sequential merge and none of a
/// scattered one; the origin ends as the snapshot was either way.
#[test]
fn a_merge_hands_sequential_copies_to_write_back() {
    use cowsnap_core::testkit::device::{Access, Hooked, Verdict};
    use cowsnap_core::MemDevice;
    use std::sync::{Arc, Mutex};

    const CHUNK: u64 = 4096;
    const ORIGIN: usize = 64 << 20;
    for (name, stride) in [("sequential", 1u64), ("scattered", 16)] {
        let hints: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
        let h = hints.clone();
        let origin = Hooked::new(MemDevice::new(ORIGIN), move |a| {
            if let Access::WriteBehind { offset, len } = a {
                h.lock().unwrap().push((offset, len));
            }
            Verdict::Pass
        });
        let mut vol = Volume::new(origin);
        vol.write_at(0, &vec![0x11; ORIGIN]).unwrap();
        let opts = SnapshotOptions {
            chunk_size: cowsnap_core::ChunkSize::new(CHUNK).unwrap(),
            ..SnapshotOptions::default()
        };
        let id = vol.create_snapshot(MemDevice::new(8 << 20), opts).unwrap();
        // 768 first writes (3 MiB of copies: several 1 MiB pieces per step).
        let chunks: Vec<u64> = (0..768).map(|i| i * stride).collect();
        for &c in &chunks {
            vol.write_at(c * CHUNK, &[0x22; CHUNK as usize]).unwrap();
        }
        vol.flush().unwrap();
        hints.lock().unwrap().clear();
        vol.merge_snapshot(id, |_| {}).unwrap();
        let mut all = vec![0u8; ORIGIN];
        vol.read_at(0, &mut all).unwrap();
        assert!(all.iter().all(|&b| b == 0x11), "{name}: merge lost data");
        let hints = hints.lock().unwrap();
        let hinted = |c: u64| {
            hints
                .iter()
                .any(|&(o, l)| o <= c * CHUNK && (c + 1) * CHUNK <= o + l)
        };
        if stride == 1 {
            let missing: Vec<u64> = chunks.iter().copied().filter(|&c| !hinted(c)).collect();
            assert!(
                missing.is_empty(),
                "{name}: chunks never hinted: {missing:?}"
            );
        } else {
            assert!(
                hints.is_empty(),
                "{name}: scattered copies hinted: {hints:?}"
            );
        }
    }
}

/// First writes between two files are copied by the kernel (`copy_file_range`): a volume on
/// file devices and the same volume in memory (which copies through this process) end with the
/// same bytes everywhere — origin, COW files, every snapshot — for writes of every alignment,
/// rewrites, a second snapshot (the origin read once for both) and a merge. A copy that came out
/// wrong, short or at the wrong offset shows as a difference.
#[test]
fn copies_between_files_give_what_copies_in_memory_give() {
    use cowsnap_core::MemDevice;
    const LEN: usize = 8 << 20;
    let d = scratch("kcopy");
    let origin: Vec<u8> = (0..LEN).map(|i| (i * 7 + i / 4096) as u8).collect();
    std::fs::write(d.join("origin"), &origin).unwrap();
    let mut file_vol = Volume::new(FileDevice::open(d.join("origin")).unwrap());
    let mut mem_vol = Volume::new(MemDevice::from_vec(origin.clone()));
    // The same snapshot on both volumes: a COW file and a COW in memory.
    let snap_pair = |file_vol: &mut Volume, mem_vol: &mut Volume, name: &str, chunk: u64| {
        let opts = SnapshotOptions {
            chunk_size: cowsnap_core::ChunkSize::new(chunk).unwrap(),
            ..SnapshotOptions::default()
        };
        let cow = FileDevice::create_new(d.join(name), 12 << 20).unwrap();
        let f = file_vol.create_snapshot(cow, opts).unwrap();
        let m = mem_vol
            .create_snapshot(MemDevice::new(12 << 20), opts)
            .unwrap();
        (f, m)
    };
    let (a_f, a_m) = snap_pair(&mut file_vol, &mut mem_vol, "a.cow", 4096);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |m: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % m
    };
    let mut ids = vec![(a_f, a_m)];
    for round in 0..300 {
        if round == 150 {
            ids.push(snap_pair(&mut file_vol, &mut mem_vol, "b.cow", 16384));
        }
        if round == 200 {
            // A 2 MiB run of first writes: the merge's large-run path copies it back.
            let run = vec![0xA5; 2 << 20];
            file_vol.write_at(3 << 20, &run).unwrap();
            mem_vol.write_at(3 << 20, &run).unwrap();
        }
        let off = next(LEN as u64 - 70_000);
        let len = 1 + next(70_000) as usize;
        let data = vec![(round % 251) as u8 + 1; len];
        file_vol.write_at(off, &data).unwrap();
        mem_vol.write_at(off, &data).unwrap();
        if round % 50 == 49 {
            file_vol.flush().unwrap();
            mem_vol.flush().unwrap();
        }
    }
    file_vol.flush().unwrap();
    mem_vol.flush().unwrap();
    let mut f = vec![0u8; LEN];
    let mut m = vec![0u8; LEN];
    for &(idf, idm) in &ids {
        file_vol.snapshot_read_at(idf, 0, &mut f).unwrap();
        mem_vol.snapshot_read_at(idm, 0, &mut m).unwrap();
        assert!(
            f == m,
            "snapshot differs at {:?}",
            common::first_diff(&f, &m)
        );
    }
    for name in ["a.cow", "b.cow"] {
        let on_disk = std::fs::read(d.join(name)).unwrap();
        let id = if name == "a.cow" { ids[0].1 } else { ids[1].1 };
        let mut mem = vec![0u8; on_disk.len()];
        mem_vol
            .snapshot_cow(id)
            .unwrap()
            .read_at(0, &mut mem)
            .unwrap();
        assert!(
            on_disk == mem,
            "{name} differs at {:?}",
            common::first_diff(&on_disk, &mem)
        );
    }
    // Merging the first snapshot back copies COW -> origin between files too.
    file_vol.merge_snapshot(ids[0].0, |_| {}).unwrap();
    mem_vol.merge_snapshot(ids[0].1, |_| {}).unwrap();
    file_vol.read_at(0, &mut f).unwrap();
    mem_vol.read_at(0, &mut m).unwrap();
    assert!(
        f == m,
        "origin after merge differs at {:?}",
        common::first_diff(&f, &m)
    );
    assert!(
        f == origin,
        "the merge did not bring the first snapshot back"
    );
}
