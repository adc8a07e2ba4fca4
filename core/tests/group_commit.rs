//! Group commit: origin writes that needed copies wait for one commit of many exceptions. The
//! bytes that end on the devices are exactly those of committing every write on its own (the
//! kernel's), only with far fewer flushes; reads see waiting writes at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cowsnap_core::testkit::device::{Access, Hooked, SharedMem, Verdict};
use cowsnap_core::{ChunkSize, MemDevice, SnapshotOptions, Volume};
use proptest::prelude::*;

/// A memory device shared with the test, counting flushes.
#[derive(Clone)]
struct Counted {
    mem: SharedMem,
    flushes: Arc<AtomicUsize>,
}

impl Counted {
    fn new(len: usize) -> Self {
        Counted {
            mem: SharedMem::zeroed(len),
            flushes: Arc::new(AtomicUsize::new(0)),
        }
    }
    fn bytes(&self) -> Vec<u8> {
        self.mem.bytes()
    }
    fn flushes(&self) -> usize {
        self.flushes.load(Ordering::SeqCst)
    }
    /// The device to give the volume (sharing bytes and count with `self`).
    fn device(&self) -> Hooked<SharedMem> {
        let n = self.flushes.clone();
        Hooked::new(self.mem.clone(), move |a| {
            if a == Access::Flush {
                n.fetch_add(1, Ordering::SeqCst);
            }
            Verdict::Pass
        })
    }
}

const ORIGIN: usize = 4 << 20;
const COW: usize = 2 << 20;
/// COW sizes for the property test: roomy, and ending right at a metadata area's edge (the
/// filling record's next area does not fit), and one chunk past it.
const COW_SIZES: [usize; 4] = [COW, 258 * 4096, 259 * 4096, 515 * 4096];

fn opts(chunk: u64) -> SnapshotOptions {
    SnapshotOptions {
        chunk_size: ChunkSize::new(chunk).unwrap(),
        ..Default::default()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, u16, u8),
    Flush,
    Snapshot(usize),
    SnapWrite(usize, u64, u8),
    Delete(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..ORIGIN as u64 - 70_000, 1..65_000u16, any::<u8>()).prop_map(|(o, l, b)| Op::Write(o, l, b)),
        1 => Just(Op::Flush),
        1 => (0..COW_SIZES.len()).prop_map(Op::Snapshot),
        1 => (0..4usize, 0..ORIGIN as u64 - 512, any::<u8>()).prop_map(|(i, o, b)| Op::SnapWrite(i, o, b)),
        1 => (0..4usize).prop_map(Op::Delete),
    ]
}

/// Runs `ops` with the given commit bound; returns every device's final bytes and the reads seen.
fn run(ops: &[Op], commit_bytes: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let origin = Counted::new(ORIGIN);
    let mut vol = Volume::new(origin.device());
    vol.set_commit_bytes(commit_bytes);
    let mut devs = vec![origin];
    let mut ids = Vec::new();
    let mut reads = Vec::new();
    for op in ops {
        match *op {
            Op::Write(o, l, b) => {
                let r = vol.write_at(o, &vec![b; l as usize]);
                assert!(r.is_ok(), "{r:?}");
                let mut buf = vec![0; l as usize + 100];
                vol.read_at(o.saturating_sub(50), &mut buf).unwrap();
                reads.push(buf);
            }
            Op::Flush => vol.flush().unwrap(),
            Op::Snapshot(size) if ids.len() < 3 => {
                let cow = Counted::new(COW_SIZES[size]);
                ids.push(Some(vol.create_snapshot(cow.device(), opts(4096)).unwrap()));
                devs.push(cow);
            }
            Op::Snapshot(_) => {}
            Op::SnapWrite(i, o, b) => {
                if let Some(Some(id)) = ids.get(i) {
                    let _ = vol.snapshot_write_at(*id, o, &[b; 512]);
                }
            }
            Op::Delete(i) => {
                if let Some(Some(id)) = ids.get(i).copied() {
                    vol.delete_snapshot(id).unwrap();
                    ids[i] = None;
                }
            }
        }
        for id in ids.iter().flatten() {
            let mut buf = vec![0; 8192];
            if vol.snapshot_read_at(*id, 0, &mut buf).is_ok() {
                reads.push(buf);
            }
        }
    }
    vol.flush().unwrap();
    (devs.iter().map(Counted::bytes).collect(), reads)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Grouped or not, the same reads at every step and the same bytes on every device at the end
    /// (so the kernel vectors, replayed one commit per write, still match byte for byte).
    #[test]
    fn grouped_commits_leave_the_bytes_of_one_commit_per_write(ops in prop::collection::vec(op(), 1..40)) {
        let (each, each_reads) = run(&ops, 0);
        let (grouped, grouped_reads) = run(&ops, 1 << 20);
        prop_assert_eq!(each_reads, grouped_reads);
        prop_assert_eq!(each.len(), grouped.len());
        for (i, (a, b)) in each.iter().zip(&grouped).enumerate() {
            prop_assert!(a == b, "device {} differs", i);
        }
    }
}

#[test]
fn many_first_writes_share_one_commit() {
    let origin = Counted::new(ORIGIN);
    let cow = Counted::new(COW);
    let mut vol = Volume::new(origin.device());
    let s = vol.create_snapshot(cow.device(), opts(4096)).unwrap();
    let base = cow.flushes();
    // 200 first writes to scattered chunks (within one metadata area), no flush asked for.
    for i in 0..200u64 {
        vol.write_at((i * 37 % 1024) * 4096, &[0xAB; 4096]).unwrap();
    }
    assert_eq!(
        cow.flushes(),
        base,
        "a write flushed the COW before any commit was due"
    );
    assert_eq!(vol.held_bytes(), 200 * 4096);
    // Reads see the waiting writes; the snapshot still reads the old (zero) bytes.
    let mut b = [0u8; 4096];
    vol.read_at(37 * 4096, &mut b).unwrap();
    assert_eq!(b, [0xAB; 4096]);
    vol.snapshot_read_at(s, 37 * 4096, &mut b).unwrap();
    assert_eq!(b, [0; 4096]);
    // The origin device has none of it yet: its old chunks are not durable anywhere else.
    assert!(origin.bytes().iter().all(|&x| x == 0));
    vol.flush().unwrap();
    assert_eq!(
        cow.flushes() - base,
        2,
        "one commit: data flush + record flush"
    );
    assert_eq!(vol.held_bytes(), 0);
    assert_eq!(&origin.bytes()[37 * 4096..38 * 4096], &[0xAB; 4096]);
}

#[test]
fn a_dropped_volume_writes_what_was_waiting() {
    let origin = Counted::new(ORIGIN);
    let cow = Counted::new(COW);
    {
        let mut vol = Volume::new(origin.device());
        vol.create_snapshot(cow.device(), opts(4096)).unwrap();
        vol.write_at(4096, b"kept").unwrap();
        assert!(vol.held_bytes() > 0);
    }
    assert_eq!(&origin.bytes()[4096..4100], b"kept");
    // And the COW holds the record: reactivated, the snapshot reads the old zeros.
    let mut again = Volume::new(MemDevice::from_vec(origin.bytes()));
    let s = again
        .activate_snapshot(MemDevice::from_vec(cow.bytes()), opts(4096))
        .unwrap();
    let mut b = [1u8; 4];
    again.snapshot_read_at(s, 4096, &mut b).unwrap();
    assert_eq!(b, [0; 4]);
}

/// A COW that ends where a metadata area would start overflows on the record that fills the area
/// before it; grouped, the writes before the overflowing one are committed, as one by one.
#[test]
fn overflow_at_an_area_edge_leaves_the_bytes_of_per_write_commits() {
    for write_chunks in [1u64, 3, 16] {
        let run = |commit_bytes: usize| {
            let origin = Counted::new(ORIGIN);
            let cow = Counted::new(258 * 4096);
            let mut vol = Volume::new(origin.device());
            vol.set_commit_bytes(commit_bytes);
            let s = vol.create_snapshot(cow.device(), opts(4096)).unwrap();
            let mut c = 0;
            while c < 300 {
                vol.write_at(c * 4096, &vec![c as u8; (write_chunks * 4096) as usize])
                    .unwrap();
                c += write_chunks;
            }
            vol.flush().unwrap();
            let state = vol.snapshot_status(s).unwrap().state;
            (origin.bytes(), cow.bytes(), state)
        };
        let (o1, c1, s1) = run(0);
        let (o2, c2, s2) = run(64 << 20);
        assert_eq!(s1, cowsnap_core::SnapshotState::Invalid);
        assert_eq!(s1, s2);
        assert!(o1 == o2, "{write_chunks}-chunk writes: origins differ");
        assert!(c1 == c2, "{write_chunks}-chunk writes: COWs differ");
    }
}
