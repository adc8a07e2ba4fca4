//! Crash consistency and I/O errors: a fault-injecting device that records every write and flush,
//! "loses power" at any chosen write (unflushed writes dropped, kept, or the last one torn at a sector
//! boundary), or fails one chosen operation. After each fault the volume is reactivated from what was
//! durable and every snapshot must read exactly what it should, or report invalid — never wrong data.

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

/// What one device's hook keeps: its durable bytes and the writes since its last flush.
struct Journal {
    idx: usize,
    durable: Vec<u8>,
    pending: Vec<(u64, Vec<u8>)>,
}

impl Journal {
    fn publish(&self, images: &Images) {
        images.lock().unwrap()[self.idx] = Some((self.durable.clone(), self.pending.clone()));
    }
}

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

fn fault_hook(
    mem: SharedMem,
    journal: Mutex<Journal>,
    power: Arc<Mutex<Power>>,
    images: Images,
) -> impl Fn(Access<'_>) -> Verdict + Send + Sync {
    move |a| {
        if let Access::SetLen(_) = a {
            // A fixed device: the journal keeps whole images of one size.
            return Verdict::Fail(Error::Unsupported("this device cannot be resized"));
        }
        if let Err(e) = op(&power) {
            return Verdict::Fail(e);
        }
        match a {
            Access::Read { .. } | Access::SetLen(_) => Verdict::Pass,
            Access::Write { offset, data } => {
                if crash_point(&power) {
                    let idx = journal.lock().unwrap().idx;
                    power.lock().unwrap().torn = Some((idx, offset, data.to_vec()));
                    return Verdict::Fail(Error::io("power lost"));
                }
                let mut j = journal.lock().unwrap();
                j.pending.push((offset, data.to_vec()));
                j.publish(&images);
                Verdict::Pass
            }
            Access::Flush => {
                // Power can also go at a flush, before it takes effect.
                if crash_point(&power) {
                    return Verdict::Fail(Error::io("power lost"));
                }
                let mut j = journal.lock().unwrap();
                j.durable = mem.bytes();
                j.pending.clear();
                j.publish(&images);
                Verdict::Pass
            }
        }
    }
}

/// What COW devices hold before use: like an LVM COW volume (only its first 4 KiB wiped), stale
/// bytes, so metadata areas that were never zeroed are garbage and a missing zeroing shows.
const STALE: u8 = 0xA5;

#[derive(Clone, Copy, Debug)]
enum AfterCrash {
    DropUnflushed,
    KeepUnflushed,
    TearLast,
    /// The device persisted only its latest unflushed write, not the earlier ones: write-back caches
    /// may reorder, so only a flush orders writes. Catches a missing barrier inside one device.
    KeepLastOnly,
}

const OUTCOMES: [AfterCrash; 4] = [
    AfterCrash::DropUnflushed,
    AfterCrash::KeepUnflushed,
    AfterCrash::TearLast,
    AfterCrash::KeepLastOnly,
];

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
        imgs.push(None);
        let journal = Journal {
            idx: imgs.len() - 1,
            durable: data.clone(),
            pending: Vec::new(),
        };
        drop(imgs);
        journal.publish(&self.images);
        let mem = SharedMem::new(data);
        let hook = fault_hook(
            mem.clone(),
            Mutex::new(journal),
            self.power.clone(),
            self.images.clone(),
        );
        Hooked::new(mem, hook)
    }
    /// What each device holds after the power cut.
    fn after_crash(&self, mode: AfterCrash) -> Vec<Vec<u8>> {
        let torn = self.power.lock().unwrap().torn.clone();
        let imgs = self.images.lock().unwrap();
        imgs.iter()
            .enumerate()
            .map(|(i, img)| {
                let (durable, pending) = img.clone().unwrap();
                let mut d = durable;
                let apply = |d: &mut Vec<u8>, o: u64, b: &[u8]| {
                    d[o as usize..o as usize + b.len()].copy_from_slice(b)
                };
                match mode {
                    AfterCrash::DropUnflushed => {}
                    AfterCrash::KeepUnflushed | AfterCrash::TearLast => {
                        for (o, b) in &pending {
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
fn rigged_volume(rig: &Rig, origin: &[u8], specs: &[SnapSpec]) -> (Volume, Vec<SnapshotId>) {
    let mut vol = Volume::new(rig.dev(origin.to_vec()));
    let ids = specs
        .iter()
        .map(|s| create(&mut vol, rig.dev(vec![STALE; s.cow as usize]), s))
        .collect();
    vol.flush().unwrap();
    (vol, ids)
}

fn apply(vol: &mut Volume, ids: &[SnapshotId], op: &WOp) -> cowsnap_core::Result<()> {
    match *op {
        WOp::Origin(off, len, seed) => vol.write_at(off, &pattern(seed, len as usize)),
        WOp::Snap(i, off, seed) => vol.snapshot_write_at(ids[i], off, &pattern(seed, 512)),
        WOp::Flush => vol.flush(),
    }
}

/// Runs the workload on fault devices with `setup` deciding the fault; returns the rig, the index of
/// the first op that failed (or ops.len()) and the ops completed before the last successful flush.
fn faulty_run(
    origin: &[u8],
    specs: &[SnapSpec],
    ops: &[WOp],
    setup: impl FnOnce(&mut Power),
) -> (Rig, usize, usize, Vec<SnapshotId>) {
    let rig = Rig::new();
    let (mut vol, ids) = rigged_volume(&rig, origin, specs);
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
    let expected = clean_run(&origin, &specs, &ops);
    let (rig, _, _, _) = faulty_run(&origin, &specs, &ops, |_| {});
    let total = rig.power.lock().unwrap().writes;
    assert!(total >= 40, "workload too small: {total} writes");
    let mut tried = 0;
    for k in 0..total {
        for mode in OUTCOMES {
            let (rig, failed, last_flush, _) =
                faulty_run(&origin, &specs, &ops, |p| p.crash_at = Some(k));
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
    let (origin, specs, ops) = workload();
    let ops: Vec<WOp> = ops
        .into_iter()
        .filter(|o| !matches!(o, WOp::Snap(..)))
        .collect();
    // With origin writes only, each snapshot must always read its creation-time contents.
    let (rig, _, _, _) = faulty_run(&origin, &specs, &ops, |_| {});
    let total = rig.power.lock().unwrap().ops;
    let mut errors_seen = 0;
    for k in (0..total).step_by(3) {
        let rig = Rig::new();
        let (mut vol, ids) = rigged_volume(&rig, &origin, &specs);
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
    assert!(errors_seen > 0, "no injected error ever surfaced");
}

#[test]
fn merge_crash_at_every_write_resumes_to_the_right_origin() {
    let origin = pattern(0x44, 1_150_000);
    let specs = [
        SnapSpec {
            chunk: 4096,
            cow: 1_400_000,
            store: StoreKind::Persistent,
            overflow: OverflowMode::Invalidate,
        },
        SnapSpec {
            chunk: 8192,
            cow: 1_400_000,
            store: StoreKind::Persistent,
            overflow: OverflowMode::Invalidate,
        },
    ];
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
        vol.snapshot_write_at(m, 5_000, &pattern(3, 20_000))
            .unwrap();
        vol.snapshot_write_at(m, 1_148_000, &pattern(4, 2_000))
            .unwrap();
        vol.flush().unwrap();
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
    let clean = Rig::new();
    let (mut vol, ids) = setup(&clean);
    let want_origin = read_all(&vol, Some(ids[0]));
    let want_other = read_all(&vol, Some(ids[1]));
    clean.power.lock().unwrap().writes = 0;
    let mut steps = 0;
    vol.merge_snapshot(ids[0], |_| steps += 1).unwrap();
    assert_eq!(read_all(&vol, None), want_origin);
    assert_eq!(read_all(&vol, Some(ids[1])), want_other);
    let total = clean.power.lock().unwrap().writes;
    // Progress once at the start, then one batched step per metadata area (two here).
    assert!(steps >= 3, "merge should take several steps, took {steps}");
    let mut tried = 0;
    for k in 0..total {
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
            assert!(
                read_all(&vol, Some(m)) == want_origin,
                "merge crash at {k} ({mode:?}): merging snapshot changed"
            );
            assert!(
                read_all(&vol, Some(o)) == want_other,
                "merge crash at {k} ({mode:?}): other snapshot changed"
            );
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
    let (origin, _, ops) = workload();
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
    let (rig, _, _, _) = faulty_run(&origin, &specs, &ops, |_| {});
    let total = rig.power.lock().unwrap().ops;
    let (mut cow_faults, mut invalidated) = (0, 0);
    for k in 0..total {
        let rig = Rig::new();
        let (mut vol, ids) = rigged_volume(&rig, &origin, &specs);
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
                panic!("fault at op {k}: snapshot invalidated by {op:?}, which reported success");
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
    println!("{total} fault points, {cow_faults} surfaced as errors, {invalidated} invalidated");
    assert!(cow_faults > 0, "no injected error ever surfaced");
    // Only a commit that failed after writing out a full metadata area may cost the snapshot.
    assert!(
        invalidated * 10 < cow_faults,
        "{invalidated} of {cow_faults} failing writes invalidated the snapshot"
    );
}
