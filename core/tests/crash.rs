//! Crash consistency and I/O errors: a fault-injecting device that records every write and flush,
//! "loses power" at any chosen write (unflushed writes dropped, kept, or the last one torn at a sector
//! boundary), or fails one chosen operation. After each fault the volume is reactivated from what was
//! durable and every snapshot must read exactly what it should, or report invalid — never wrong data.

mod common;

use common::{AfterCrash, OUTCOMES};
use std::sync::{Arc, Mutex};

use cowsnap_core::testkit::device::{Access, Hooked, SharedMem, Verdict};
use cowsnap_core::{
    BlockDevice, ChunkSize, Error, MemDevice, OverflowMode, SnapshotId, SnapshotOptions,
    SnapshotState, StoreKind, Volume,
};

/// Per device: its durable bytes and the writes since its last flush.
type Images = Arc<Mutex<Vec<Option<(Vec<u8>, Vec<(u64, Vec<u8>)>)>>>>;

#[derive(Default)]
struct Power {
    /// Writes and flushes so far (the crash points).
    writes: usize,
    crash_at: Option<usize>,
    /// Fail only this one operation (reads, writes and flushes counted together), then go on.
    fail_op: Option<usize>,
    ops: usize,
    dead: bool,
    /// (device, offset, bytes) of the write that was in flight when power went.
    torn: Option<(usize, u64, Vec<u8>)>,
}

/// A device of the rig: memory (the bytes a read sees) behind a hook that counts operations, fails
/// the chosen one, cuts the power at the chosen write or flush, and keeps what is durable (the
/// bytes at the last flush) and the writes since, for `after_crash`.
type FaultDev = Hooked<SharedMem>;

/// Counts one operation; fails it when it is the chosen one or the power is gone.
fn op(power: &Mutex<Power>) -> cowsnap_core::Result<()> {
    let mut p = power.lock().unwrap();
    if p.dead {
        return Err(Error::io("power lost"));
    }
    p.ops += 1;
    if p.fail_op == Some(p.ops - 1) {
        return Err(Error::io("injected I/O error"));
    }
    Ok(())
}

/// Counts one write or flush (a crash point); true when the power goes now.
fn crash_point(power: &Mutex<Power>) -> bool {
    let mut p = power.lock().unwrap();
    p.writes += 1;
    if p.crash_at == Some(p.writes - 1) {
        p.dead = true;
        return true;
    }
    false
}

/// The hook of device `idx`: its durable bytes and the writes since its last flush live in the
/// rig's `images`, updated in place (no copy of the whole device per write).
fn fault_hook(
    idx: usize,
    power: Arc<Mutex<Power>>,
    images: Images,
) -> impl Fn(Access<'_>) -> Verdict + Send + Sync {
    move |a| {
        if let Access::SetLen(_) = a {
            // A fixed device: the journal keeps whole images of one size.
            return Verdict::Fail(Error::Unsupported("this device cannot be resized"));
        }
        if let Access::WriteBehind { .. } = a {
            // A hint: it makes nothing durable and fails nothing, so it is no operation to fail
            // or cut power at (the journal ignores it).
            return Verdict::Pass;
        }
        if let Err(e) = op(&power) {
            return Verdict::Fail(e);
        }
        match a {
            Access::Read { .. } | Access::SetLen(_) | Access::WriteBehind { .. } => Verdict::Pass,
            Access::Write { offset, data } => {
                if crash_point(&power) {
                    power.lock().unwrap().torn = Some((idx, offset, data.to_vec()));
                    return Verdict::Fail(Error::io("power lost"));
                }
                let mut imgs = images.lock().unwrap();
                imgs[idx].as_mut().unwrap().1.push((offset, data.to_vec()));
                Verdict::Pass
            }
            Access::Flush => {
                // Power can also go at a flush, before it takes effect.
                if crash_point(&power) {
                    return Verdict::Fail(Error::io("power lost"));
                }
                let mut imgs = images.lock().unwrap();
                let (durable, pending) = imgs[idx].as_mut().unwrap();
                for (o, b) in pending.drain(..) {
                    durable[o as usize..o as usize + b.len()].copy_from_slice(&b);
                }
                Verdict::Pass
            }
        }
    }
}

/// What COW devices hold before use: like an LVM COW volume (only its first 4 KiB wiped), stale
/// bytes, so metadata areas that were never zeroed are garbage and a missing zeroing shows.
const STALE: u8 = 0xA5;

struct Rig {
    power: Arc<Mutex<Power>>,
    images: Images,
}

impl Rig {
    fn new() -> Self {
        Rig {
            power: Arc::new(Mutex::new(Power::default())),
            images: Arc::new(Mutex::new(Vec::new())),
        }
    }
    fn dev(&self, data: Vec<u8>) -> FaultDev {
        let mut imgs = self.images.lock().unwrap();
        imgs.push(Some((data.clone(), Vec::new())));
        let idx = imgs.len() - 1;
        drop(imgs);
        let hook = fault_hook(idx, self.power.clone(), self.images.clone());
        Hooked::new(SharedMem::new(data), hook)
    }
    /// What each device holds after the power cut.
    fn after_crash(&self, mode: AfterCrash) -> Vec<Vec<u8>> {
        let torn = self.power.lock().unwrap().torn.clone();
        let imgs = self.images.lock().unwrap();
        imgs.iter()
            .enumerate()
            .map(|(i, img)| {
                let (durable, pending) = img.as_ref().unwrap();
                let mut d = durable.clone();
                let apply = |d: &mut Vec<u8>, o: u64, b: &[u8]| {
                    d[o as usize..o as usize + b.len()].copy_from_slice(b)
                };
                match mode {
                    AfterCrash::DropUnflushed => {}
                    AfterCrash::KeepUnflushed | AfterCrash::TearLast => {
                        for (o, b) in pending {
                            apply(&mut d, *o, b);
                        }
                    }
                    AfterCrash::KeepLastOnly => {
                        if let Some((o, b)) = pending.last() {
                            apply(&mut d, *o, b);
                        }
                    }
                }
                if let (AfterCrash::TearLast, Some((ti, o, b))) = (mode, &torn) {
                    if *ti == i {
                        let keep = (b.len() / 512 / 2) * 512;
                        apply(&mut d, *o, &b[..keep]);
                    }
                }
                d
            })
            .collect()
    }
}

#[derive(Clone, Debug)]
enum WOp {
    Origin(u64, u64, u8),
    Snap(usize, u64, u8), // one sector
    Flush,
}

struct SnapSpec {
    chunk: u64,
    cow: u64,
    store: StoreKind,
    overflow: OverflowMode,
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed ^ (i % 253) as u8).collect()
}

/// Expected contents of each snapshot after each prefix of `ops` (`None` = invalid), from a clean run.
fn clean_run(origin: &[u8], specs: &[SnapSpec], ops: &[WOp]) -> Vec<Vec<Option<Vec<u8>>>> {
    let mut vol = Volume::new(MemDevice::from_vec(origin.to_vec()));
    let ids: Vec<SnapshotId> = specs
        .iter()
        .map(|s| create(&mut vol, MemDevice::new(s.cow as usize), s))
        .collect();
    let snapshot_views = |vol: &Volume| -> Vec<Option<Vec<u8>>> {
        ids.iter()
            .map(|&id| {
                let mut b = vec![0u8; origin.len()];
                vol.snapshot_read_at(id, 0, &mut b).ok().map(|_| b)
            })
            .collect()
    };
    let mut states = vec![snapshot_views(&vol)];
    for op in ops {
        let _ = apply(&mut vol, &ids, op);
        states.push(snapshot_views(&vol));
    }
    states
}

fn create(vol: &mut Volume, cow: impl BlockDevice + 'static, s: &SnapSpec) -> SnapshotId {
    vol.create_snapshot(
        cow,
        SnapshotOptions {
            chunk_size: ChunkSize::new(s.chunk).unwrap(),
            store: s.store,
            overflow: s.overflow,
            autoextend: None,
        },
    )
    .unwrap()
}

/// A volume on the rig's fault devices (origin, then one stale COW per spec), its snapshots taken
/// and everything flushed: the durable starting point of a faulty run.
fn rigged_volume(
    rig: &Rig,
    origin: &[u8],
    specs: &[SnapSpec],
    cow_fill: u8,
) -> (Volume, Vec<SnapshotId>) {
    let mut vol = Volume::new(rig.dev(origin.to_vec()));
    let ids = specs
        .iter()
        .map(|s| create(&mut vol, rig.dev(vec![cow_fill; s.cow as usize]), s))
        .collect();
    vol.flush().unwrap();
    (vol, ids)
}

/// `origin` with every other 32 KiB zeroed: holes whose copies into a zeroed COW are skipped.
fn with_holes(origin: &[u8]) -> Vec<u8> {
    let mut o = origin.to_vec();
    for piece in o.chunks_mut(32 * 1024).step_by(2) {
        piece.fill(0);
    }
    o
}

fn apply(vol: &mut Volume, ids: &[SnapshotId], op: &WOp) -> cowsnap_core::Result<()> {
    match *op {
        WOp::Origin(off, len, seed) => vol.write_at(off, &pattern(seed, len as usize)),
        WOp::Snap(i, off, seed) => vol.snapshot_write_at(ids[i], off, &pattern(seed, 512)),
        WOp::Flush => vol.flush(),
    }
}

/// Runs the workload on fault devices with `setup` deciding the fault, the COWs holding `cow_fill`
/// before use (0: new files, whose zeros are known); returns the rig, the index of the first op
/// that failed (or ops.len()) and the ops completed before the last successful flush.
fn faulty_run_on(
    origin: &[u8],
    specs: &[SnapSpec],
    ops: &[WOp],
    cow_fill: u8,
    setup: impl FnOnce(&mut Power),
) -> (Rig, usize, usize, Vec<SnapshotId>) {
    let rig = Rig::new();
    let (mut vol, ids) = rigged_volume(&rig, origin, specs, cow_fill);
    {
        let mut p = rig.power.lock().unwrap();
        p.writes = 0;
        p.ops = 0;
        setup(&mut p);
    }
    let mut last_flush = 0;
    let mut failed = ops.len();
    for (i, op) in ops.iter().enumerate() {
        let r = apply(&mut vol, &ids, op);
        if rig.power.lock().unwrap().dead {
            failed = i;
            break;
        }
        if matches!(op, WOp::Flush) && r.is_ok() {
            last_flush = i + 1;
        }
    }
    (rig, failed, last_flush, ids)
}

fn workload() -> (Vec<u8>, Vec<SnapSpec>, Vec<WOp>) {
    let origin = pattern(0x33, 1_200_000); // > 256 chunks of 4 KiB: areas fill and cross
    let specs = vec![
        SnapSpec {
            chunk: 4096,
            cow: 1_300_000,
            store: StoreKind::Persistent,
            overflow: OverflowMode::Invalidate,
        },
        SnapSpec {
            chunk: 8192,
            cow: 8192 * 12,
            store: StoreKind::Persistent,
            overflow: OverflowMode::Report,
        },
        SnapSpec {
            chunk: 16384,
            cow: 16384 * 40,
            store: StoreKind::Persistent,
            overflow: OverflowMode::Invalidate,
        },
    ];
    let mut ops = vec![
        WOp::Origin(0, 70_000, 1),
        WOp::Snap(1, 100_352, 2),
        WOp::Flush,
        WOp::Origin(4_000, 1, 3),
        WOp::Origin(200_000, 300_000, 4),
        WOp::Snap(0, 1_000_448, 5),
        WOp::Origin(600_000, 500_000, 6),
        WOp::Flush,
        WOp::Origin(1_150_000, 50_000, 7),
        WOp::Snap(2, 512, 8),
        WOp::Origin(0, 1_200_000, 9),
    ];
    // Scattered small writes: many separate batches, some crossing chunk boundaries.
    for i in 0..24u64 {
        ops.push(WOp::Origin(
            (i * 48_611) % 1_190_000,
            1 + (i * 977) % 9_000,
            10 + i as u8,
        ));
        if i % 8 == 7 {
            ops.push(WOp::Flush);
        }
    }
    ops.push(WOp::Flush);
    (origin, specs, ops)
}

#[test]
fn crash_at_every_write_never_serves_wrong_data() {
    let (origin, specs, ops) = workload();
    crash_everywhere(&origin, &specs, &ops, STALE);
}

/// As above with a sparse origin (zero stretches, as a sparse file's holes) and zeroed COWs (new
/// files): first copies of zero chunks are skipped (the records point at COW chunks that were
/// never written), and every crash state must still read exactly.
#[test]
fn crash_with_holes_skipped_never_serves_wrong_data() {
    let (mut origin, specs, ops) = workload();
    for (i, b) in origin.iter_mut().enumerate() {
        if i % 98_304 < 65_536 {
            *b = 0;
        }
    }
    crash_everywhere(&origin, &specs, &ops, 0);
}

/// Power lost at every write and flush of the workload, with every outcome of the unflushed
/// writes: after reactivation every snapshot reads a state between its last completed flush and
/// the failure, or is invalid where that state is.
fn crash_everywhere(origin: &[u8], specs: &[SnapSpec], ops: &[WOp], cow_fill: u8) {
    let expected = clean_run(origin, specs, ops);
    let (rig, _, _, _) = faulty_run_on(origin, specs, ops, cow_fill, |_| {});
    let total = rig.power.lock().unwrap().writes;
    assert!(total >= 40, "workload too small: {total} writes");
    let mut tried = 0;
    for k in 0..total {
        for mode in OUTCOMES {
            let (rig, failed, last_flush, _) =
                faulty_run_on(origin, specs, ops, cow_fill, |p| p.crash_at = Some(k));
            assert!(failed < ops.len(), "crash point {k} never reached");
            let imgs = rig.after_crash(mode);
            let mut vol = Volume::new(MemDevice::from_vec(imgs[0].clone()));
            for (i, s) in specs.iter().enumerate() {
                let id = vol
                    .activate_snapshot(
                        MemDevice::from_vec(imgs[i + 1].clone()),
                        SnapshotOptions {
                            overflow: s.overflow,
                            ..Default::default()
                        },
                    )
                    .unwrap_or_else(|e| {
                        panic!("crash at write {k} ({mode:?}): snapshot {i} does not activate: {e}")
                    });
                let mut b = vec![0u8; origin.len()];
                let acceptable: Vec<&Option<Vec<u8>>> = (last_flush..=failed + 1)
                    .map(|p| &expected[p.min(ops.len())][i])
                    .collect();
                match vol.snapshot_read_at(id, 0, &mut b) {
                    Ok(()) => assert!(
                        acceptable.iter().any(|a| a.as_deref() == Some(&b[..])),
                        "crash at write {k} ({mode:?}): snapshot {i} reads data it never had"
                    ),
                    Err(Error::SnapshotInvalid) => assert!(
                        acceptable.iter().any(|a| a.is_none()),
                        "crash at write {k} ({mode:?}): snapshot {i} invalid but should not be"
                    ),
                    Err(e) => panic!("crash at write {k}: {e}"),
                }
                assert_ne!(
                    vol.snapshot_status(id).unwrap().state,
                    SnapshotState::Merging
                );
            }
            tried += 1;
        }
    }
    println!("crash points tried: {tried} ({total} writes and flushes x 4 power-loss outcomes)");
}

#[test]
fn injected_io_errors_surface_and_never_serve_wrong_data() {
    let (plain, specs, ops) = workload();
    let ops: Vec<WOp> = ops
        .into_iter()
        .filter(|o| !matches!(o, WOp::Snap(..)))
        .collect();
    // With origin writes only, each snapshot must always read its creation-time contents. Twice:
    // on stale COWs, and on zeroed COWs over an origin with holes, where copies of zeros are
    // skipped (a chunk slot handed back after a failure and handed out again for a hole).
    let mut errors_seen = 0;
    for (origin, fill) in [(plain.clone(), STALE), (with_holes(&plain), 0)] {
        let (rig, _, _, _) = faulty_run_on(&origin, &specs, &ops, fill, |_| {});
        let total = rig.power.lock().unwrap().ops;
        for k in (0..total).step_by(3) {
            let rig = Rig::new();
            let (mut vol, ids) = rigged_volume(&rig, &origin, &specs, fill);
            {
                let mut p = rig.power.lock().unwrap();
                p.ops = 0;
                p.fail_op = Some(k);
            }
            for op in &ops {
                if apply(&mut vol, &ids, op).is_err() {
                    errors_seen += 1;
                }
            }
            for &id in &ids {
                let mut b = vec![0u8; origin.len()];
                match vol.snapshot_read_at(id, 0, &mut b) {
                    Ok(()) => assert!(
                        b == origin,
                        "I/O error at op {k}: snapshot {id:?} reads wrong data"
                    ),
                    Err(Error::SnapshotInvalid) => {}
                    Err(Error::Io(_)) => {} // the injected error hit this read itself
                    Err(e) => panic!("I/O error at op {k}: {e}"),
                }
            }
        }
    }
    assert!(errors_seen > 0, "no injected error ever surfaced");
}

#[test]
fn merge_crash_at_every_write_resumes_to_the_right_origin() {
    // One batched step takes both metadata areas (281 records).
    merge_crash(MergeCase::TWO_AREAS, 16 << 20, 2);
}

#[test]
fn merge_crash_in_small_steps_across_an_area_edge_resumes() {
    // Steps of 100 chunks: the third one starts in area 1 and ends in area 0.
    merge_crash(MergeCase::TWO_AREAS, 100 * 4096, 4);
}

#[test]
fn merge_crash_in_steps_spanning_several_areas_resumes() {
    // Scattered records over four areas, steps of 300 chunks: each crosses one or two area edges.
    merge_crash(MergeCase::FOUR_AREAS, 300 * 4096, 4);
}

/// What a merge-crash test starts from.
#[derive(Clone, Copy)]
struct MergeCase {
    origin: usize,
    cow: u64,
    /// Origin writes after the second snapshot `(offset, len)`, one chunk apart, newest last.
    scattered: usize,
}

impl MergeCase {
    const TWO_AREAS: MergeCase = MergeCase {
        origin: 1_150_000,
        cow: 1_400_000,
        scattered: 0,
    };
    const FOUR_AREAS: MergeCase = MergeCase {
        origin: 5_600_000,
        cow: 6_200_000,
        scattered: 540,
    };
}

/// Builds a volume with a snapshot to merge (records in two or more metadata areas, some written
/// through the snapshot) and another one that must not change, merges it in steps of
/// `step_bytes`, and then loses power at every write and flush of that merge in each way a disk
/// can: reactivated, both snapshots read as before, and the merge resumed gives the same origin.
/// The clean run also checks that after every step the merging COW is byte for byte what a
/// merge of one record per step (the kernel's smallest) leaves with as many records.
fn merge_crash(case: MergeCase, step_bytes: u64, min_steps: usize) {
    let origin = pattern(0x44, case.origin);
    let spec = |chunk| SnapSpec {
        chunk,
        cow: case.cow,
        store: StoreKind::Persistent,
        overflow: OverflowMode::Invalidate,
    };
    let specs = [spec(4096), spec(8192)];
    // Snapshot 0 is merged; snapshot 1 must not change while the origin does.
    let setup = |rig: &Rig| -> (Volume, Vec<SnapshotId>) {
        let mut vol = Volume::new(rig.dev(origin.clone()));
        let m = create(
            &mut vol,
            rig.dev(vec![STALE; specs[0].cow as usize]),
            &specs[0],
        );
        vol.write_at(0, &pattern(1, 300_000)).unwrap(); // 74 chunks for m only
        let o = create(
            &mut vol,
            rig.dev(vec![STALE; specs[1].cow as usize]),
            &specs[1],
        );
        vol.write_at(290_000, &pattern(2, 800_000)).unwrap(); // > 256 exceptions in m: two areas
                                                              // Every other chunk above, in a shuffled order: records that form no runs.
        let top = 1_200_000 / 4096 + 1;
        for i in 0..case.scattered {
            let c = top + (i * 7919) % case.scattered * 2;
            if (c as u64 + 1) * 4096 <= case.origin as u64 {
                vol.write_at(c as u64 * 4096 + 100, &pattern(i as u8, 5))
                    .unwrap();
            }
        }
        vol.snapshot_write_at(m, 5_000, &pattern(3, 20_000))
            .unwrap();
        vol.snapshot_write_at(m, case.origin as u64 - 2_000, &pattern(4, 2_000))
            .unwrap();
        vol.flush().unwrap();
        vol.set_merge_step_bytes(step_bytes);
        (vol, vec![m, o])
    };
    let read_all = |vol: &Volume, id: Option<SnapshotId>| {
        let mut b = vec![0u8; origin.len()];
        match id {
            Some(id) => vol.snapshot_read_at(id, 0, &mut b).unwrap(),
            None => vol.read_at(0, &mut b).unwrap(),
        }
        b
    };
    // The merging COW's metadata: header and every area the records use, plus the next one (a
    // merge writes nothing else; hundreds of states are kept).
    let meta_of = |cow: &dyn BlockDevice, areas: usize| {
        let mut out = vec![0u8; 4096 * (areas + 2)];
        for (i, b) in out.chunks_mut(4096).enumerate() {
            let chunk = if i == 0 { 0 } else { 1 + (i as u64 - 1) * 257 };
            if (chunk + 1) * 4096 <= cow.len() {
                cow.read_at(chunk * 4096, b).unwrap();
            }
        }
        out
    };
    let cow_meta = |vol: &Volume, id, areas: usize| meta_of(vol.snapshot_cow(id).unwrap(), areas);
    // The kernel's states: one record merged per step, the COW after each by records left.
    let reference = Rig::new();
    let (mut vol, ids) = setup(&reference);
    let records = vol.snapshot_exceptions(ids[0]).unwrap().len();
    let areas = records.div_ceil(256);
    assert!(
        areas >= if case.scattered > 0 { 4 } else { 2 },
        "only {records} records"
    );
    vol.set_merge_step_bytes(1);
    let mut kernel_states = std::collections::HashMap::new();
    kernel_states.insert(records as u64, cow_meta(&vol, ids[0], areas));
    // The tables those states activate to (records left, by origin chunk).
    let mut kernel_tables = vec![vol.snapshot_exceptions(ids[0]).unwrap()];
    let mut p = vol.merge_begin(ids[0]).unwrap();
    while !p.done {
        p = vol.merge_step(ids[0]).unwrap();
        kernel_states.insert(p.total - p.merged, cow_meta(&vol, ids[0], areas));
        kernel_tables.push(vol.snapshot_exceptions(ids[0]).unwrap_or_default());
    }

    let clean = Rig::new();
    let (mut vol, ids) = setup(&clean);
    let want_origin = read_all(&vol, Some(ids[0]));
    let want_other = read_all(&vol, Some(ids[1]));
    clean.power.lock().unwrap().writes = 0;
    clean.power.lock().unwrap().ops = 0;
    let mut steps = 0;
    // Write counts at the end of each step: its area writes and flushes come just before.
    let mut step_ends = Vec::new();
    let mut p = vol.merge_begin(ids[0]).unwrap();
    while !p.done {
        p = vol.merge_step(ids[0]).unwrap();
        steps += 1;
        step_ends.push(clean.power.lock().unwrap().writes);
        let left = p.total - p.merged;
        assert!(
            cow_meta(&vol, ids[0], areas) == kernel_states[&left],
            "after step {steps} ({left} records left) the COW is not the kernel's"
        );
    }
    vol.merge_finish(ids[0]).unwrap();
    assert_eq!(read_all(&vol, None), want_origin);
    assert_eq!(read_all(&vol, Some(ids[1])), want_other);
    let total = clean.power.lock().unwrap().writes;
    let total_ops = clean.power.lock().unwrap().ops;
    // An I/O error at any operation of the merge (sampled on large ones): the merge reports it,
    // and merging again on the same volume finishes with the right origin.
    let mut failed = 0;
    for k in (0..total_ops).step_by((total_ops / 150).max(1)) {
        let rig = Rig::new();
        let (mut vol, ids) = setup(&rig);
        {
            let mut p = rig.power.lock().unwrap();
            p.ops = 0;
            p.fail_op = Some(k);
        }
        let r = vol.merge_snapshot(ids[0], |_| {});
        if rig.power.lock().unwrap().ops <= k {
            // Past the merge's operations (the clean run counted its checks' reads too).
            assert!(r.is_ok());
            break;
        }
        assert!(r.is_err(), "I/O error at op {k}: the merge returned Ok");
        if r.is_err() {
            failed += 1;
            vol.merge_snapshot(ids[0], |_| {})
                .unwrap_or_else(|e| panic!("I/O error at op {k}: merging again failed: {e}"));
        }
        assert!(
            read_all(&vol, None) == want_origin,
            "I/O error at op {k}: wrong origin after the merge"
        );
        assert!(
            read_all(&vol, Some(ids[1])) == want_other,
            "I/O error at op {k}: other snapshot changed"
        );
    }
    assert!(failed > 0, "no injected error hit the merge");
    assert!(
        steps >= min_steps - 1 && steps <= records.div_ceil((step_bytes / 4096).max(1) as usize),
        "{records} records merged in {steps} steps of {step_bytes} bytes"
    );
    let mut tried = 0;
    // Every write and flush of small merges; of large ones (hundreds of chunk copies) every one
    // near the end of a step (the commit: area writes and flushes) and every 16th elsewhere.
    let crash_points = (0..total)
        .filter(|&k| total < 200 || k % 16 == 0 || step_ends.iter().any(|&e| k < e && e - k <= 24));
    for k in crash_points {
        for mode in OUTCOMES {
            let rig = Rig::new();
            let (mut vol, ids) = setup(&rig);
            rig.power.lock().unwrap().writes = 0;
            rig.power.lock().unwrap().crash_at = Some(k);
            assert!(
                vol.merge_snapshot(ids[0], |_| {}).is_err(),
                "crash point {k} not reached"
            );
            let imgs = rig.after_crash(mode);
            let mut vol = Volume::new(MemDevice::from_vec(imgs[0].clone()));
            let m = vol
                .activate_snapshot(
                    MemDevice::from_vec(imgs[1].clone()),
                    SnapshotOptions::default(),
                )
                .unwrap();
            let o = vol
                .activate_snapshot(
                    MemDevice::from_vec(imgs[2].clone()),
                    SnapshotOptions::default(),
                )
                .unwrap();
            // The merging COW activates to the records a kernel merge leaves at some point
            // (within a step, areas already emptied may stay behind the one the scan stops at).
            let table = vol.snapshot_exceptions(m).unwrap();
            assert!(
                kernel_tables.contains(&table),
                "merge crash at {k} ({mode:?}): {} records left, no state of the kernel's merge",
                table.len()
            );
            assert!(
                read_all(&vol, Some(m)) == want_origin,
                "merge crash at {k} ({mode:?}): merging snapshot changed"
            );
            assert!(
                read_all(&vol, Some(o)) == want_other,
                "merge crash at {k} ({mode:?}): other snapshot changed"
            );
            vol.set_merge_step_bytes(step_bytes);
            vol.merge_snapshot(m, |_| {}).unwrap();
            assert!(
                read_all(&vol, None) == want_origin,
                "merge crash at {k} ({mode:?}): resumed merge gave a wrong origin"
            );
            assert!(
                read_all(&vol, Some(o)) == want_other,
                "merge crash at {k} ({mode:?}): other snapshot changed after resume"
            );
            tried += 1;
        }
    }
    println!("merge crash points tried: {tried} ({total} writes and flushes x 4)");
}

/// A COW device that fails once (a host's I/O error, ENOSPC) must never cost a snapshot silently:
/// the origin write it hit is refused (the origin keeps its old bytes), the snapshot stays valid
/// unless its store could not take the records back — and then the failing write says so — and
/// what is on disk reactivates to the same answers.
#[test]
fn a_failing_cow_refuses_the_origin_write_and_keeps_the_snapshot() {
    let (plain, _, ops) = workload();
    let ops: Vec<WOp> = ops
        .into_iter()
        .filter(|o| !matches!(o, WOp::Snap(..)))
        .collect();
    let specs = [SnapSpec {
        chunk: 4096,
        cow: 1_300_000, // room for every chunk: any invalidation is the fault's doing
        store: StoreKind::Persistent,
        overflow: OverflowMode::Invalidate,
    }];
    let (mut cow_faults, mut invalidated, mut total) = (0, 0, 0);
    // Stale COW bytes, then a zeroed COW over an origin with holes (copies of zeros skipped).
    for (origin, fill) in [(plain.clone(), STALE), (with_holes(&plain), 0)] {
        let (rig, _, _, _) = faulty_run_on(&origin, &specs, &ops, fill, |_| {});
        let ops_here = rig.power.lock().unwrap().ops;
        total += ops_here;
        for k in 0..ops_here {
            let rig = Rig::new();
            let (mut vol, ids) = rigged_volume(&rig, &origin, &specs, fill);
            {
                let mut p = rig.power.lock().unwrap();
                p.ops = 0;
                p.fail_op = Some(k);
            }
            let mut model = origin.clone();
            let mut failed = false;
            for op in &ops {
                let before = vol.snapshot_status(ids[0]).unwrap().state;
                let r = apply(&mut vol, &ids, op);
                let state = vol.snapshot_status(ids[0]).unwrap().state;
                if state == SnapshotState::Invalid && before != state && r.is_ok() {
                    panic!(
                        "fault at op {k}: snapshot invalidated by {op:?}, which reported success"
                    );
                }
                match (r, op) {
                    (Ok(()), WOp::Origin(off, len, seed)) => {
                        let (o, n) = (*off as usize, *len as usize);
                        model[o..o + n].copy_from_slice(&pattern(*seed, n));
                    }
                    (Ok(()), _) => {}
                    (Err(_), _) => failed = true,
                }
            }
            vol.flush().or_else(|_| vol.flush()).unwrap();
            let mut b = vec![0u8; origin.len()];
            vol.read_at(0, &mut b).unwrap();
            assert!(
                b == model,
                "fault at op {k}: a refused write changed the origin"
            );
            let live = vol.snapshot_read_at(ids[0], 0, &mut b);
            match &live {
                Ok(()) => assert!(b == origin, "fault at op {k}: snapshot reads wrong data"),
                Err(Error::SnapshotInvalid) => invalidated += 1,
                Err(e) => panic!("fault at op {k}: {e}"),
            }
            if failed && k > 0 {
                cow_faults += 1;
            }
            // Everything is flushed: reactivate from the devices' bytes.
            let imgs = rig.after_crash(AfterCrash::DropUnflushed);
            let mut again = Volume::new(MemDevice::from_vec(imgs[0].clone()));
            let s = again
                .activate_snapshot(
                    MemDevice::from_vec(imgs[1].clone()),
                    SnapshotOptions::default(),
                )
                .unwrap_or_else(|e| panic!("fault at op {k}: reactivation refused: {e}"));
            again.read_at(0, &mut b).unwrap();
            assert!(b == model, "fault at op {k}: origin after reactivation");
            match again.snapshot_read_at(s, 0, &mut b) {
                Ok(()) => {
                    assert!(live.is_ok(), "fault at op {k}: invalid snapshot came back");
                    assert!(
                        b == origin,
                        "fault at op {k}: reactivated snapshot reads wrong data"
                    );
                }
                Err(Error::SnapshotInvalid) => assert!(live.is_err()),
                Err(e) => panic!("fault at op {k}: {e}"),
            }
        }
    }
    println!("{total} fault points, {cow_faults} surfaced as errors, {invalidated} invalidated");
    assert!(cow_faults > 0, "no injected error ever surfaced");
    // Only a commit that failed after writing out a full metadata area may cost the snapshot.
    assert!(
        invalidated * 10 < cow_faults,
        "{invalidated} of {cow_faults} failing writes invalidated the snapshot"
    );
}
