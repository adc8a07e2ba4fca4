//! File devices opened with `O_DIRECT`: the engine's own I/O works on them (bounce buffers,
//! read-modify-write of its sub-block metadata writes), callers' misaligned I/O is refused, and a file
//! system without direct I/O is reported, not panicked on.
//!
//! The files live under `/var/tmp` (a disk file system on most machines; `/tmp` may be a tmpfs,
//! where `O_DIRECT` means something else or nothing), or `COWSNAP_DIRECT_DIR`.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use cowsnap_core::{
    BlockDevice, ChunkSize, Error, FileDevice, MemDevice, SnapshotOptions, Volume, DIRECT_IO_ALIGN,
};
use proptest::prelude::*;

fn scratch(name: &str) -> PathBuf {
    let base = std::env::var_os("COWSNAP_DIRECT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let d = base.join(format!("cowsnap-direct-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

const MIB: u64 = 1 << 20;

/// The same operations on direct files and on memory devices leave byte-identical origins and
/// COW images (the format does not depend on how the bytes travel), and read the same.
#[test]
fn a_direct_volume_writes_the_bytes_a_buffered_one_writes() {
    let d = scratch("same");
    let (o, c) = (d.join("origin.img"), d.join("s.cow"));
    FileDevice::create(&o, 8 * MIB).unwrap();
    let mut disk = Volume::new(FileDevice::open_direct(&o).unwrap());
    let mut mem = Volume::new(MemDevice::new(8 * MIB as usize));
    assert_eq!(disk.io_alignment(), DIRECT_IO_ALIGN);
    assert_eq!(mem.io_alignment(), 1);
    let opts = SnapshotOptions {
        chunk_size: ChunkSize::new(8192).unwrap(),
        ..Default::default()
    };
    let base = pattern(1, 8 * MIB as usize);
    disk.write_at(0, &base).unwrap();
    mem.write_at(0, &base).unwrap();
    let sd = disk
        .create_snapshot(FileDevice::create_new_direct(&c, 2 * MIB).unwrap(), opts)
        .unwrap();
    let sm = mem
        .create_snapshot(MemDevice::new(2 * MIB as usize), opts)
        .unwrap();
    // Scattered aligned writes (one block inside a chunk, several chunks), from memory that is
    // deliberately not aligned (a slice starting one byte into a buffer).
    for (i, &(off, len)) in [
        (4096u64, 4096usize),
        (40960, 3 * 8192),
        (7 * MIB, 4096),
        (0, 8192),
    ]
    .iter()
    .enumerate()
    {
        let backing = pattern(10 + i as u8, len + 1);
        let data = &backing[1..];
        disk.write_at(off, data).unwrap();
        mem.write_at(off, data).unwrap();
    }
    disk.flush().unwrap();
    mem.flush().unwrap();
    let mut a = vec![0u8; 8 * MIB as usize];
    let mut b = vec![0u8; 8 * MIB as usize];
    disk.snapshot_read_at(sd, 0, &mut a).unwrap();
    mem.snapshot_read_at(sm, 0, &mut b).unwrap();
    assert!(a == base && b == base, "snapshot reads differ");
    disk.read_at(0, &mut a).unwrap();
    mem.read_at(0, &mut b).unwrap();
    assert!(a == b, "origin reads differ");
    let cow_disk = std::fs::read(&c).unwrap();
    let mut cow_mem = vec![0u8; 2 * MIB as usize];
    mem.snapshot_cow(sm)
        .unwrap()
        .read_at(0, &mut cow_mem)
        .unwrap();
    assert!(cow_disk == cow_mem, "COW images differ");
    // Merge back (area rewrites, header untouched), then the origin is the snapshot.
    disk.merge_snapshot(sd, |_| {}).unwrap();
    disk.flush().unwrap();
    assert!(std::fs::read(&o).unwrap() == base);
    // Invalidation writes 16 bytes of header: read-modify-write on a direct device.
    let sd = disk
        .create_snapshot(
            FileDevice::open_direct(&c).unwrap(),
            SnapshotOptions::default(),
        )
        .unwrap();
    disk.write_at(0, &vec![7u8; 4 * MIB as usize]).unwrap();
    assert_eq!(disk.flush(), Ok(()));
    let st = disk.snapshot_status(sd).unwrap();
    assert_eq!(st.dm_status(), "Invalid");
    let cow = std::fs::read(&c).unwrap();
    assert_eq!(&cow[4..8], &0u32.to_le_bytes(), "valid flag");
    assert_eq!(&cow[0..4], b"SnAp");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Callers' misaligned offsets and lengths are refused with the rule, before anything changes;
/// the same calls on a buffered volume succeed.
#[test]
fn misaligned_caller_io_is_refused_and_changes_nothing() {
    let d = scratch("misaligned");
    let (o, c) = (d.join("origin.img"), d.join("s.cow"));
    FileDevice::create(&o, 4 * MIB).unwrap();
    // A buffered origin with a direct COW: the rule is the volume's, whichever device is direct.
    let mut vol = Volume::new(FileDevice::open(&o).unwrap());
    vol.write_at(1, b"x").unwrap();
    let s = vol
        .create_snapshot(
            FileDevice::create_new_direct(&c, MIB).unwrap(),
            SnapshotOptions::default(),
        )
        .unwrap();
    assert_eq!(vol.io_alignment(), 4096);
    let before = std::fs::read(&c).unwrap();
    let block = vec![5u8; 4096];
    let mut buf = vec![0u8; 4096];
    let rule = |r: Result<(), Error>| {
        assert!(
            matches!(r, Err(Error::InvalidArgument(m)) if m.contains("multiples of 4096")),
            "{r:?}"
        );
    };
    rule(vol.write_at(512, &block)); // misaligned offset
    rule(vol.write_at(0, &block[..4000])); // misaligned length
    rule(vol.write_at(4095, &block[..1]));
    rule(vol.read_at(100, &mut buf));
    rule(vol.read_at(0, &mut buf[..100]));
    rule(vol.snapshot_read_at(s, 2048, &mut buf));
    rule(vol.snapshot_write_at(s, 0, &block[..512]));
    vol.flush().unwrap();
    assert!(std::fs::read(&c).unwrap() == before, "the COW changed");
    assert_eq!(std::fs::read(&o).unwrap()[..2], [0, b'x']);
    assert_eq!(vol.snapshot_status(s).unwrap().dm_status(), "16/2048 16");
    // Aligned I/O from misaligned memory works.
    let backing = vec![9u8; 4097];
    vol.write_at(4096, &backing[1..]).unwrap();
    let mut back = vec![0u8; 4097];
    vol.read_at(4096, &mut back[1..]).unwrap();
    assert!(back[1..].iter().all(|&b| b == 9));
    // Once the direct COW is gone the volume takes any I/O again.
    vol.delete_snapshot(s).unwrap();
    assert_eq!(vol.io_alignment(), 1);
    vol.write_at(3, b"y").unwrap();
    std::fs::remove_dir_all(&d).unwrap();
}

/// Sizes that direct I/O cannot cover are refused at open, create and resize; a refused
/// creation leaves no file.
#[test]
fn direct_devices_have_whole_block_sizes() {
    let d = scratch("sizes");
    let p = d.join("odd.img");
    std::fs::write(&p, vec![0u8; 5000]).unwrap();
    let r = FileDevice::open_direct(&p);
    assert!(
        matches!(r, Err(Error::InvalidArgument(m)) if m.contains("size must be a multiple of 4096")),
        "{r:?}"
    );
    assert!(FileDevice::open(&p).is_ok());
    let q = d.join("new.cow");
    assert!(matches!(
        FileDevice::create_new_direct(&q, MIB + 512),
        Err(Error::InvalidArgument(_))
    ));
    assert!(!q.exists(), "a refused creation left a file");
    let mut dev = FileDevice::create_new_direct(&q, MIB).unwrap();
    assert!(dev.is_direct());
    assert!(matches!(
        dev.set_len(2 * MIB + 100),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(dev.len(), MIB);
    dev.set_len(2 * MIB).unwrap();
    assert_eq!(std::fs::metadata(&q).unwrap().len(), 2 * MIB);
    std::fs::remove_dir_all(&d).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The device itself takes any range (the engine's metadata writes are 16 bytes to a sector):
    /// reads and read-modify-writes at any offset, length and memory alignment match a memory
    /// device doing the same.
    #[test]
    fn a_direct_device_takes_any_range_like_a_memory_device(
        ops in proptest::collection::vec((0u64..64 * 1024, 1usize..20_000, 0usize..8, any::<u8>()), 1..24)
    ) {
        let d = scratch("anyrange");
        let p = d.join("dev.img");
        let len = 96 * 1024u64;
        let mut file = FileDevice::create_new_direct(&p, len).unwrap();
        let mut mem = MemDevice::new(len as usize);
        for (off, n, skew, seed) in ops {
            let n = n.min((len - off) as usize);
            let backing = pattern(seed, n + skew);
            let data = &backing[skew..];
            file.write_at(off, data).unwrap();
            mem.write_at(off, data).unwrap();
            let mut a = vec![0u8; n + skew];
            let mut b = vec![0u8; n];
            file.read_at(off, &mut a[skew..]).unwrap();
            mem.read_at(off, &mut b).unwrap();
            prop_assert!(a[skew..] == b[..]);
        }
        file.flush().unwrap();
        let on_disk = std::fs::read(&p).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
        prop_assert!(on_disk == mem.as_slice());
    }
}

/// A file system that refuses `O_DIRECT` gives `Unsupported` with the reason, at open and at
/// create (which leaves no file). Needs root to mount a ramfs (which has no direct I/O).
#[test]
fn a_file_system_without_direct_io_is_reported() {
    if !std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        println!("skipped: needs root to mount a ramfs");
        return;
    }
    let d = scratch("ramfs");
    let ok = std::process::Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(&d)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("skipped: cannot mount a ramfs here");
        return;
    }
    let p = d.join("origin.img");
    std::fs::write(&p, vec![0u8; 8192]).unwrap();
    let open = FileDevice::open_direct(&p);
    let create = FileDevice::create_new_direct(d.join("new.cow"), MIB);
    let left = d.join("new.cow").exists();
    let buffered = FileDevice::open(&p).is_ok();
    let _ = std::process::Command::new("umount").arg(&d).status();
    let _ = std::fs::remove_dir_all(&d);
    for r in [open.map(drop), create.map(drop)] {
        assert!(
            matches!(r, Err(Error::Unsupported(m)) if m.contains("O_DIRECT")),
            "{r:?}"
        );
    }
    assert!(!left, "a refused creation left a file");
    assert!(buffered);
}

/// tmpfs: Linux 6.6 and later take `O_DIRECT` there (earlier ones refuse it with `EINVAL`). Either
/// way: it works with the same bytes, or it is `Unsupported` and leaves no file, never a panic.
#[test]
fn tmpfs_does_direct_io_or_says_it_cannot() {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        println!("skipped: no /dev/shm");
        return;
    }
    let p = shm.join(format!("cowsnap-direct-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    match FileDevice::create_new_direct(&p, MIB) {
        Ok(mut dev) => {
            let data = pattern(7, 8192 + 3);
            dev.write_at(4096, &data[3..]).unwrap();
            dev.write_at(100, b"header").unwrap();
            dev.flush().unwrap();
            let mut back = vec![0u8; 8192];
            dev.read_at(4096, &mut back).unwrap();
            let on_disk = std::fs::read(&p).unwrap();
            std::fs::remove_file(&p).unwrap();
            assert!(back[..] == data[3..]);
            assert_eq!(&on_disk[100..106], b"header");
            assert!(on_disk[4096..12288] == data[3..]);
        }
        Err(Error::Unsupported(m)) => {
            assert!(m.contains("O_DIRECT"), "{m}");
            assert!(!p.exists(), "a refused creation left a file");
        }
        Err(e) => panic!("tmpfs: {e:?}"),
    }
}

/// Activation reads the metadata of a large COW ahead in another thread, through its own handle
/// on the file: with `O_DIRECT` too it reads what a memory copy holds.
#[test]
fn metadata_read_ahead_with_direct_io_reads_what_memory_holds() {
    use cowsnap_core::store::persistent::inspect;
    let d = scratch("ahead");
    let n = 100 * 256 + 17;
    let image = common::cow_image(n, 1 + 101 * 257 + 5);
    let p = d.join("c.cow");
    std::fs::write(&p, &image).unwrap();
    let file = match FileDevice::open_direct(&p) {
        Err(Error::Unsupported(_)) => return, // no O_DIRECT here (see the test above)
        f => f.unwrap(),
    };
    let mut mem = MemDevice::new(image.len());
    mem.write_at(0, &image).unwrap();
    let (a, b) = (
        inspect(&file, Some(1_000_003)).unwrap(),
        inspect(&mem, Some(1_000_003)).unwrap(),
    );
    assert_eq!(a.records.len() as u64, n);
    assert_eq!(a.records, b.records);
    let _ = std::fs::remove_dir_all(&d);
}
