//! Changed chunks (`Volume::changed_chunks`, `Volume::changed_between`): outside the ranges they
//! report, a snapshot reads exactly as the origin (or the other snapshot) does, and the ranges are
//! sorted, disjoint and merged.

use cowsnap_core::{ChunkSize, Error, MemDevice, SnapshotOptions, Volume};
use proptest::prelude::*;

const LEN: u64 = 1 << 20;

fn opts(chunk: u64) -> SnapshotOptions {
    SnapshotOptions {
        chunk_size: ChunkSize::new(chunk).unwrap(),
        ..SnapshotOptions::default()
    }
}

fn read_snap(v: &Volume, id: cowsnap_core::SnapshotId) -> Vec<u8> {
    let mut b = vec![0; LEN as usize];
    v.snapshot_read_at(id, 0, &mut b).unwrap();
    b
}

fn read_origin(v: &Volume) -> Vec<u8> {
    let mut b = vec![0; LEN as usize];
    v.read_at(0, &mut b).unwrap();
    b
}

/// Byte ranges are sorted, disjoint, not touching (merged) and inside the volume.
fn check_shape(r: &[(u64, u64)], limit: u64) {
    for w in r.windows(2) {
        assert!(w[0].0 + w[0].1 < w[1].0, "not merged or not sorted: {r:?}");
    }
    for &(a, n) in r {
        assert!(n > 0 && a + n <= limit, "bad range {a}+{n} in {r:?}");
    }
}

fn covered(r: &[(u64, u64)], at: u64) -> bool {
    r.iter().any(|&(a, n)| at >= a && at < a + n)
}

#[test]
fn adjacent_runs_across_windows_are_one_range() {
    let mut v = Volume::new(MemDevice::new(2 * LEN as usize));
    let s = v
        .create_snapshot(MemDevice::new(LEN as usize), opts(4096))
        .unwrap();
    // Chunks 250..262 straddle the 256-chunk window boundary of the table; 300 stands alone.
    v.write_at(250 * 4096, &vec![1; 12 * 4096]).unwrap();
    v.write_at(300 * 4096 + 7, b"x").unwrap();
    assert_eq!(v.changed_chunks(s).unwrap(), vec![(250, 12), (300, 1)]);
    assert_eq!(
        v.changed_between(s, s).unwrap(),
        vec![(250 * 4096, 12 * 4096), (300 * 4096, 4096)]
    );
}

#[test]
fn invalid_and_unknown_snapshots_are_refused() {
    let mut v = Volume::new(MemDevice::new(LEN as usize));
    // A COW of 4 chunks: header, one metadata area, two data chunks; the third copy overflows.
    let s = v
        .create_snapshot(MemDevice::new(4 * 4096), opts(4096))
        .unwrap();
    let t = v
        .create_snapshot(MemDevice::new(LEN as usize), opts(4096))
        .unwrap();
    for c in 0..3 {
        v.write_at(c * 4096, b"y").unwrap();
    }
    v.flush().unwrap();
    assert!(matches!(v.changed_chunks(s), Err(Error::SnapshotInvalid)));
    assert!(matches!(
        v.changed_between(s, t),
        Err(Error::SnapshotInvalid)
    ));
    v.delete_snapshot(t).unwrap();
    assert!(matches!(
        v.changed_chunks(t),
        Err(Error::UnknownSnapshot(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Random origin and snapshot writes around two snapshots of different chunk sizes: every byte
    /// outside the reported ranges is the same in both views.
    #[test]
    fn outside_the_ranges_nothing_differs(
        before in prop::collection::vec((0..LEN - 1, 1u64..20_000, any::<u8>(), any::<bool>()), 0..12),
        after in prop::collection::vec((0..LEN - 1, 1u64..20_000, any::<u8>(), 0u8..3), 0..12),
        small in any::<bool>(),
    ) {
        let (c_old, c_new) = if small { (4096, 65536) } else { (65536, 8192) };
        let mut v = Volume::new(MemDevice::new(LEN as usize));
        v.write_at(0, &vec![0x5a; LEN as usize]).unwrap();
        let old = v.create_snapshot(MemDevice::new(3 * LEN as usize), opts(c_old)).unwrap();
        for &(at, n, b, to_snap) in &before {
            let n = n.min(LEN - at) as usize;
            if to_snap {
                v.snapshot_write_at(old, at, &vec![b; n]).unwrap();
            } else {
                v.write_at(at, &vec![b; n]).unwrap();
            }
        }
        let new = v.create_snapshot(MemDevice::new(3 * LEN as usize), opts(c_new)).unwrap();
        for &(at, n, b, whom) in &after {
            let n = n.min(LEN - at) as usize;
            match whom {
                0 => v.write_at(at, &vec![b; n]).unwrap(),
                1 => v.snapshot_write_at(old, at, &vec![b; n]).unwrap(),
                _ => v.snapshot_write_at(new, at, &vec![b; n]).unwrap(),
            }
        }
        let between = v.changed_between(old, new).unwrap();
        check_shape(&between, LEN);
        prop_assert_eq!(&between, &v.changed_between(new, old).unwrap());
        let (a, b) = (read_snap(&v, old), read_snap(&v, new));
        let origin = read_origin(&v);
        for i in 0..LEN {
            if !covered(&between, i) {
                prop_assert_eq!(a[i as usize], b[i as usize], "byte {} differs outside {:?}", i, between);
            }
        }
        // One snapshot against the origin, in its own chunk units.
        let chunks = v.changed_chunks(old).unwrap();
        let bytes: Vec<(u64, u64)> = chunks.iter().map(|&(c, n)| (c * c_old, n * c_old)).collect();
        check_shape(&bytes, LEN);
        for i in 0..LEN {
            if !covered(&bytes, i) {
                prop_assert_eq!(a[i as usize], origin[i as usize]);
            }
        }
    }
}
