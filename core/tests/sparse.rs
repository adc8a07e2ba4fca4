//! Copies of zeros onto zeros are skipped (`BlockDevice::known_zeros`): a sparse origin's holes
//! become records without data I/O into a COW this volume formatted. Snapshots must read exactly
//! what they should all the same, after reactivation too; a COW activated from disk is always
//! written, whatever its device claims.

use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

use cowsnap_core::{
    BlockDevice, ChunkSize, FileDevice, MemDevice, SnapshotOptions, StoreKind, Volume,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cowsnap-sparse-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pattern(seed: u8, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8).wrapping_mul(7) | 1)
        .collect()
}

fn opts() -> SnapshotOptions {
    SnapshotOptions {
        chunk_size: ChunkSize::new(4096).unwrap(),
        store: StoreKind::Persistent,
        ..Default::default()
    }
}

/// Bytes of `path` in data extents (not holes), by `lseek(SEEK_DATA / SEEK_HOLE)`.
fn data_bytes(path: &std::path::Path) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as i64;
    let mut total = 0;
    let mut pos = 0i64;
    while pos < len {
        // SAFETY: lseek on a descriptor owned by `f`.
        let d = unsafe { libc::lseek(f.as_raw_fd(), pos, libc::SEEK_DATA) };
        if d < 0 {
            break; // ENXIO: no data after pos
        }
        // SAFETY: as above.
        let h = unsafe { libc::lseek(f.as_raw_fd(), d, libc::SEEK_HOLE) };
        total += (h - d) as u64;
        pos = h;
    }
    total
}

/// Whether this file system reports `fallocate`d, unwritten space as a hole (ext4, XFS do).
fn reserved_space_is_a_hole(dir: &std::path::Path) -> bool {
    let p = dir.join("probe");
    let d = FileDevice::create_new(&p, 64 * KIB).unwrap();
    let hole = d.known_zeros(0, 64 * KIB) == 64 * KIB;
    std::fs::remove_file(&p).unwrap();
    hole
}

#[test]
fn file_holes_are_known_zeros_and_data_never_is() {
    let dir = scratch("holes");
    let p = dir.join("sparse");
    let mut d = FileDevice::create(&p, MIB).unwrap();
    assert_eq!(d.known_zeros(0, MIB), MIB, "a new sparse file is one hole");
    d.write_at(256 * KIB, &[1, 2, 3]).unwrap();
    // Holes are whole blocks: zeros known up to the block holding the data, none from there.
    let z = d.known_zeros(0, MIB);
    assert!(z <= 256 * KIB, "overstated: {z}");
    assert!(z >= 252 * KIB, "the hole before the data was not seen: {z}");
    assert_eq!(d.known_zeros(256 * KIB, 10), 0);
    assert_eq!(d.known_zeros(256 * KIB + 2, 10), 0);
    // Never past the device's end; a range that starts there has none.
    assert_eq!(d.known_zeros(MIB - 10, 100), 10);
    assert_eq!(d.known_zeros(MIB, 100), 0);
    assert_eq!(d.known_zeros(u64::MAX - 1, 100), 0);
    // Reserved (fallocated) space that was never written reads as zeros: ext4 and XFS say so
    // (some file systems count it as data, which only understates).
    let r = FileDevice::create_new(dir.join("reserved"), MIB).unwrap();
    assert!(r.known_zeros(4096, 8192) <= 8192);
    // A file shrunk behind the device's back: no zeros claimed past its new end (reads fail).
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(512 * KIB).unwrap();
    assert_eq!(d.known_zeros(600 * KIB, 4096), 0);
    assert!(d.known_zeros(300 * KIB, MIB) <= 212 * KIB);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn memory_devices_know_their_zeros_exactly() {
    let mut m = MemDevice::new(10_000);
    assert_eq!(m.known_zeros(0, 10_000), 10_000);
    m.write_at(777, &[0, 0, 9]).unwrap();
    assert_eq!(m.known_zeros(0, 10_000), 779);
    assert_eq!(m.known_zeros(779, 5), 0);
    assert_eq!(m.known_zeros(780, 100_000), 9_220);
    assert_eq!(m.known_zeros(10_000, 1), 0);
    assert_eq!(m.known_zeros(u64::MAX, 1), 0);
}

/// A sparse origin file (data in the second MiB only) and a new reserved COW file: writing the
/// whole origin copies only the data chunks into the COW, and the snapshot reads the old origin
/// exactly, before and after the volume is reopened from the files.
#[test]
fn holes_become_records_without_copies_and_snapshots_stay_exact() {
    let dir = scratch("e2e");
    let (op, cp) = (dir.join("origin"), dir.join("cow"));
    let size = 4 * MIB;
    let mut old = vec![0u8; size as usize];
    {
        let mut o = FileDevice::create(&op, size).unwrap();
        let a = pattern(1, MIB);
        o.write_at(MIB, &a).unwrap();
        old[MIB as usize..2 * MIB as usize].copy_from_slice(&a);
        // One block of data inside a hole, and one chunk that is half hole, half data.
        o.write_at(3 * MIB + 8192, &[7; 4096]).unwrap();
        old[(3 * MIB + 8192) as usize..(3 * MIB + 12288) as usize].fill(7);
        o.write_at(3 * MIB + 102_400 + 2048, &[9; 2048]).unwrap();
        old[(3 * MIB + 104_448) as usize..(3 * MIB + 106_496) as usize].fill(9);
        o.flush().unwrap();
    }
    let new = pattern(2, size);
    {
        let mut vol = Volume::new(FileDevice::open(&op).unwrap());
        let cow = FileDevice::create_new(&cp, 8 * MIB).unwrap();
        let id = vol.create_snapshot(cow, opts()).unwrap();
        // In pieces of several sizes, as FUSE and loop devices write.
        let mut at = 0;
        for (i, n) in [MIB, 4096, 1000, 300 * KIB].iter().cycle().enumerate() {
            if at >= size {
                break;
            }
            let n = (*n + i as u64).min(size - at);
            vol.write_at(at, &new[at as usize..(at + n) as usize])
                .unwrap();
            at += n;
        }
        // (Measured before any read: pages read from holes count as data for SEEK_DATA.)
        // Copied: the 1 MiB of data, and from each of the two blocks of data in the last MiB at most
        // one probe's worth (zeros after data are copied up to the next look for a hole), header and
        // areas. Most of the 3 MiB of holes were not written.
        let copied = data_bytes(&cp);
        assert!(copied >= MIB + 8192, "copies missing: {copied}");
        if reserved_space_is_a_hole(&dir) {
            assert!(
                copied <= MIB + 2 * 256 * KIB + 32 * KIB,
                "zeros were copied: {copied} bytes of data in the COW"
            );
        } else {
            eprintln!("this file system counts reserved space as data: no copy is skipped here");
        }
        let mut b = vec![0u8; size as usize];
        vol.snapshot_read_at(id, 0, &mut b).unwrap();
        assert!(b == old, "the snapshot lost the old origin");
        vol.read_at(0, &mut b).unwrap();
        assert!(b == new);
        assert_eq!(
            vol.snapshot_exceptions(id).unwrap().len(),
            1024,
            "every chunk has a record"
        );
        vol.flush().unwrap();
    }
    // Reopened from the files: the records point at holes, which read as the old zeros.
    let mut vol = Volume::new(FileDevice::open(&op).unwrap());
    let id = vol
        .activate_snapshot(FileDevice::open(&cp).unwrap(), opts())
        .unwrap();
    let mut b = vec![0u8; size as usize];
    vol.snapshot_read_at(id, 0, &mut b).unwrap();
    assert!(b == old, "the reactivated snapshot lost the old origin");
    vol.read_at(0, &mut b).unwrap();
    assert!(b == new);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A memory device that claims every byte reads as zeros (it does not): only the engine's rules
/// stand between it and a wrong snapshot.
struct ClaimsZeros(MemDevice);

impl BlockDevice for ClaimsZeros {
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> cowsnap_core::Result<()> {
        self.0.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> cowsnap_core::Result<()> {
        self.0.write_at(offset, buf)
    }
    fn flush(&mut self) -> cowsnap_core::Result<()> {
        Ok(())
    }
    fn known_zeros(&self, offset: u64, len: u64) -> u64 {
        len.min(self.0.len().saturating_sub(offset))
    }
}

/// A COW activated from disk is written for every copy, whatever its device claims; only a COW
/// the volume formatted itself trusts the claim (shown here by a device that lies: the created
/// snapshot goes wrong, so the claim is really what decides the copy).
#[test]
fn only_cows_formatted_here_trust_known_zeros() {
    let size = 256 * KIB;
    let old = pattern(3, size);
    let new = pattern(4, size);
    let claims = |bytes: Vec<u8>| ClaimsZeros(MemDevice::from_vec(bytes));

    // Formatted here, lying devices: the copy is skipped and the snapshot reads the stale COW.
    let mut vol = Volume::new(claims(old.clone()));
    let id = vol
        .create_snapshot(claims(vec![0xA5; 2 * size as usize]), opts())
        .unwrap();
    vol.write_at(0, &new).unwrap();
    let mut b = vec![0u8; size as usize];
    vol.snapshot_read_at(id, 0, &mut b).unwrap();
    assert!(
        b != old,
        "a formatted COW did not use known_zeros: the test shows nothing"
    );

    // Activated from disk (formatted by another volume, as the kernel's or a reused one):
    // every copy is made, so the same lies change nothing.
    let mut first = Volume::new(MemDevice::from_vec(old.clone()));
    first
        .create_snapshot(MemDevice::from_vec(vec![0xA5; 2 * size as usize]), opts())
        .unwrap();
    first.flush().unwrap();
    let (_, mut cows) = first.into_parts();
    let (_, cow) = cows.pop().unwrap();
    let mut bytes = vec![0u8; cow.len() as usize];
    cow.read_at(0, &mut bytes).unwrap();
    let mut vol = Volume::new(claims(old.clone()));
    let id = vol.activate_snapshot(claims(bytes), opts()).unwrap();
    vol.write_at(0, &new).unwrap();
    vol.snapshot_read_at(id, 0, &mut b).unwrap();
    assert!(
        b == old,
        "an activated COW trusted a device's claim of zeros"
    );
    vol.read_at(0, &mut b).unwrap();
    assert!(b == new);
}

/// Origin data still dirty in the page cache (written, never flushed) is data: a snapshot taken
/// then keeps it, before and after reactivation. (ext4's delayed allocation leaves such pages
/// without blocks until writeback; its `SEEK_DATA` must still count them.)
#[test]
fn unflushed_origin_data_is_copied_not_taken_for_a_hole() {
    let dir = scratch("dirty");
    let (op, cp) = (dir.join("origin"), dir.join("cow"));
    let size = 2 * MIB;
    let old = pattern(3, 256 * KIB);
    let new = pattern(4, size);
    {
        let mut o = FileDevice::create(&op, size).unwrap();
        // No flush: the blocks are dirty pages of a sparse file.
        o.write_at(MIB, &old).unwrap();
        let mut vol = Volume::new(o);
        let cow = FileDevice::create_new(&cp, 4 * MIB).unwrap();
        let id = vol.create_snapshot(cow, opts()).unwrap();
        vol.write_at(0, &new).unwrap();
        let mut b = vec![0u8; old.len()];
        vol.snapshot_read_at(id, MIB, &mut b).unwrap();
        assert!(b == old, "the snapshot lost unflushed origin data");
        vol.flush().unwrap();
    }
    let mut vol = Volume::new(FileDevice::open(&op).unwrap());
    let id = vol
        .activate_snapshot(FileDevice::open(&cp).unwrap(), opts())
        .unwrap();
    let mut b = vec![0u8; old.len()];
    vol.snapshot_read_at(id, MIB, &mut b).unwrap();
    assert!(b == old, "after reactivation");
    let mut z = vec![1u8; MIB as usize];
    vol.snapshot_read_at(id, 0, &mut z).unwrap();
    assert!(z.iter().all(|&x| x == 0), "the hole reads as zeros");
    std::fs::remove_dir_all(&dir).unwrap();
}
