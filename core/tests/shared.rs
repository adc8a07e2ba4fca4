//! A volume shared by threads (`SharedVolume`): group commits run in steps with writes between
//! them, flushes run outside the volume's lock and in parallel over the COWs.
//!
//! The crash test drives the interleavings from a script (writers' writes between the steps of a
//! commit, each device flush a step of its own), so every run is the same and power can be cut at
//! every write and flush of it. The stress test runs real threads and compares with a model.

mod common;

use common::{AfterCrash, OUTCOMES};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use cowsnap_core::{
    BlockDevice, ChunkSize, Error, FlushHandle, MemDevice, SharedVolume, SnapshotId,
    SnapshotOptions, SnapshotState, Volume,
};

/// Writes and flushes so far, and where power goes.
#[derive(Default)]
struct Power {
    ops: usize,
    crash_at: Option<usize>,
    dead: bool,
    /// (device, offset, bytes) of the write in flight when power went.
    torn: Option<(usize, u64, Vec<u8>)>,
}

/// A device's bytes: what a reader sees, what is durable, and the writes since the last flush.
struct Image {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<(u64, Vec<u8>)>,
}

/// A device on the rig: its image is shared with the test and with its flush handle.
#[derive(Clone)]
struct Dev {
    idx: usize,
    img: Arc<Mutex<Image>>,
    power: Arc<Mutex<Power>>,
}

impl Dev {
    /// One write or flush: a crash point.
    fn crash_point(&self, write: Option<(u64, &[u8])>) -> cowsnap_core::Result<()> {
        let mut p = self.power.lock().unwrap();
        if p.dead {
            return Err(Error::io("power lost"));
        }
        p.ops += 1;
        if p.crash_at == Some(p.ops - 1) {
            p.dead = true;
            p.torn = write.map(|(o, b)| (self.idx, o, b.to_vec()));
            return Err(Error::io("power lost"));
        }
        Ok(())
    }

    fn sync(&self) -> cowsnap_core::Result<()> {
        self.crash_point(None)?;
        let mut img = self.img.lock().unwrap();
        let pending = std::mem::take(&mut img.pending);
        for (o, b) in pending {
            img.durable[o as usize..o as usize + b.len()].copy_from_slice(&b);
        }
        Ok(())
    }
}

impl BlockDevice for Dev {
    fn len(&self) -> u64 {
        self.img.lock().unwrap().current.len() as u64
    }
    fn read_at(&self, o: u64, b: &mut [u8]) -> cowsnap_core::Result<()> {
        if self.power.lock().unwrap().dead {
            return Err(Error::io("power lost"));
        }
        let img = self.img.lock().unwrap();
        b.copy_from_slice(&img.current[o as usize..o as usize + b.len()]);
        Ok(())
    }
    fn write_at(&mut self, o: u64, b: &[u8]) -> cowsnap_core::Result<()> {
        self.crash_point(Some((o, b)))?;
        let mut img = self.img.lock().unwrap();
        img.current[o as usize..o as usize + b.len()].copy_from_slice(b);
        // The device writes whole sectors (a write below the page cache carries the sector's
        // other bytes as they are now): a crash keeps or loses sectors, never part of one.
        let start = o as usize / 512 * 512;
        let end = (o as usize + b.len()).div_ceil(512) * 512;
        let end = end.min(img.current.len());
        let sectors = img.current[start..end].to_vec();
        img.pending.push((start as u64, sectors));
        Ok(())
    }
    fn flush(&mut self) -> cowsnap_core::Result<()> {
        self.sync()
    }
    fn flush_handle(&self) -> Option<Arc<dyn FlushHandle>> {
        Some(Arc::new(self.clone()))
    }
}

impl FlushHandle for Dev {
    fn flush(&self) -> cowsnap_core::Result<()> {
        self.sync()
    }
}

struct Rig {
    power: Arc<Mutex<Power>>,
    devs: Vec<Dev>,
}

impl Rig {
    fn new() -> Self {
        Rig {
            power: Arc::new(Mutex::new(Power::default())),
            devs: Vec::new(),
        }
    }
    fn dev(&mut self, data: Vec<u8>) -> Dev {
        let d = Dev {
            idx: self.devs.len(),
            img: Arc::new(Mutex::new(Image {
                durable: data.clone(),
                current: data,
                pending: Vec::new(),
            })),
            power: self.power.clone(),
        };
        self.devs.push(d.clone());
        d
    }
    fn after_crash(&self, mode: AfterCrash) -> Vec<Vec<u8>> {
        let torn = self.power.lock().unwrap().torn.clone();
        self.devs
            .iter()
            .map(|dev| {
                let img = dev.img.lock().unwrap();
                let mut d = img.durable.clone();
                let mut apply = |o: u64, b: &[u8]| {
                    d[o as usize..o as usize + b.len()].copy_from_slice(b);
                };
                match mode {
                    AfterCrash::DropUnflushed => {}
                    AfterCrash::KeepUnflushed | AfterCrash::TearLast => {
                        for (o, b) in &img.pending {
                            apply(*o, b);
                        }
                    }
                    AfterCrash::KeepLastOnly => {
                        if let Some((o, b)) = img.pending.last() {
                            apply(*o, b);
                        }
                    }
                }
                if let (AfterCrash::TearLast, Some((i, o, b))) = (mode, &torn) {
                    if *i == dev.idx {
                        // Torn at a sector of the device: whole sectors from the first half.
                        let cut = ((*o + b.len() as u64 / 2) / 512 * 512).saturating_sub(*o);
                        apply(*o, &b[..cut as usize]);
                    }
                }
                d
            })
            .collect()
    }
}

/// One step of a script.
#[derive(Clone, Debug)]
enum Op {
    /// An origin write by one of the writers: (offset, len, seed).
    Write(u64, u64, u8),
    /// A group commit starts (durable: a flush's).
    Begin(bool),
    /// The commit under way does its next step (one device flush, the metadata writes, the
    /// release of held writes...).
    Step,
    /// A whole flush, once no commit is under way.
    Flush,
}

const ORIGIN: usize = 1_100_000; // 269 chunks of 4 KiB: a metadata area fills and the next begins
const STALE: u8 = 0xA5;

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed ^ (i % 251) as u8).collect()
}

fn initial() -> Vec<u8> {
    pattern(0x5C, ORIGIN)
}

/// (chunk size, COW size): a roomy one whose metadata crosses an area, one that overflows
/// during the script, one in between.
const SNAPS: [(u64, u64); 3] = [(4096, 1_300_000), (8192, 8192 * 40), (16384, 16384 * 60)];

fn opts(chunk: u64) -> SnapshotOptions {
    SnapshotOptions {
        chunk_size: ChunkSize::new(chunk).unwrap(),
        ..Default::default()
    }
}

/// A scripted interleaving of writers and commits, from `seed`: writers write while commits are
/// under way (to chunks being committed, to chunks of records waiting, to new chunks).
fn script(seed: u64) -> Vec<Op> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut ops = Vec::new();
    let mut in_flight = false;
    let mut seedb = 1u8;
    for i in 0..90 {
        let r = rnd(100);
        if in_flight && r < 45 {
            ops.push(Op::Step);
            continue;
        }
        if !in_flight && r < 10 {
            ops.push(Op::Begin(rnd(2) == 0));
            in_flight = true;
            continue;
        }
        if !in_flight && r < 16 {
            ops.push(Op::Flush);
            continue;
        }
        if in_flight && r < 52 {
            // A commit runs to its end (a later Begin needs the turn).
            ops.extend(std::iter::repeat(Op::Step).take(12));
            in_flight = false;
            continue;
        }
        // Writes: a hot region (rewrites of chunks being committed), anywhere, now and then a
        // long one (the first snapshot's records cross a metadata area).
        let (off, len) = match rnd(10) {
            0..=4 => (rnd(64 << 10), 1 + rnd(9000)),
            5..=8 => (rnd(ORIGIN as u64 - 20_000), 1 + rnd(20_000)),
            _ => {
                let len = 200_000 + rnd(200_000);
                (rnd(ORIGIN as u64 - len), len)
            }
        };
        seedb = seedb.wrapping_add(1 + (i % 3) as u8);
        ops.push(Op::Write(off, len, seedb));
    }
    if in_flight {
        ops.extend(std::iter::repeat(Op::Step).take(12));
    }
    ops.push(Op::Flush);
    ops
}

/// What a run saw: the op at which power went (or the number of ops), the op where the last
/// completed durable commit began, and the snapshots.
struct Run {
    rig: Rig,
    failed: usize,
    durable_from: usize,
    ids: Vec<SnapshotId>,
}

/// Runs `ops` on a volume on the rig (snapshots created and everything flushed first), cutting
/// power at device op `crash_at`.
fn run(ops: &[Op], crash_at: Option<usize>) -> Run {
    let mut rig = Rig::new();
    let mut vol = Volume::new(rig.dev(initial()));
    vol.set_commit_bytes(64 << 20); // commits only where the script says
    let ids: Vec<SnapshotId> = SNAPS
        .iter()
        .map(|&(chunk, cow)| {
            let d = rig.dev(vec![STALE; cow as usize]);
            vol.create_snapshot(d, opts(chunk)).unwrap()
        })
        .collect();
    vol.flush().unwrap();
    {
        let mut p = rig.power.lock().unwrap();
        p.ops = 0;
        p.crash_at = crash_at;
    }
    let shared = SharedVolume::new(vol);
    let mut failed = ops.len();
    let mut durable_from = 0;
    {
        let mut steps = None;
        let mut began = 0;
        for (i, op) in ops.iter().enumerate() {
            let r = match op {
                Op::Write(off, len, seed) => shared.write_at(*off, &pattern(*seed, *len as usize)),
                Op::Begin(durable) => {
                    began = i;
                    match shared.commit_steps(*durable) {
                        Ok(s) => {
                            steps = Some((s, *durable));
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Op::Step => match steps.as_mut() {
                    Some((s, durable)) => match s.step() {
                        Ok(true) => Ok(()),
                        Ok(false) => {
                            if *durable {
                                durable_from = began;
                            }
                            steps = None;
                            Ok(())
                        }
                        Err(e) => {
                            steps = None;
                            Err(e)
                        }
                    },
                    None => Ok(()),
                },
                Op::Flush => {
                    drop(steps.take());
                    let r = shared.flush();
                    if r.is_ok() {
                        durable_from = i;
                    }
                    r
                }
            };
            if rig.power.lock().unwrap().dead {
                failed = i;
                break;
            }
            r.unwrap_or_else(|e| panic!("op {i} {op:?} failed without a crash: {e}"));
        }
        std::mem::forget(steps); // power is gone: nothing more reaches the devices anyway
    }
    std::mem::forget(shared); // no commit on drop: the devices hold what they hold
    Run {
        rig,
        failed,
        durable_from,
        ids,
    }
}

/// The origin after each prefix of the script, and whether each snapshot was invalid then
/// (a clean run on memory devices, commits in the same places).
fn model(ops: &[Op]) -> (Vec<Vec<u8>>, Vec<Vec<bool>>) {
    let mut vol = Volume::new(MemDevice::from_vec(initial()));
    vol.set_commit_bytes(64 << 20);
    let ids: Vec<SnapshotId> = SNAPS
        .iter()
        .map(|&(chunk, cow)| {
            vol.create_snapshot(MemDevice::new(cow as usize), opts(chunk))
                .unwrap()
        })
        .collect();
    let shared = SharedVolume::new(vol);
    let mut origins = vec![initial()];
    let invalid = |shared: &SharedVolume| -> Vec<bool> {
        let g = shared.read().unwrap();
        ids.iter()
            .map(|&id| g.snapshot_status(id).unwrap().state == SnapshotState::Invalid)
            .collect()
    };
    let mut invalids = vec![invalid(&shared)];
    let mut model = initial();
    {
        let mut steps = None;
        for op in ops {
            match op {
                Op::Write(off, len, seed) => {
                    let d = pattern(*seed, *len as usize);
                    shared.write_at(*off, &d).unwrap();
                    model[*off as usize..(*off + *len) as usize].copy_from_slice(&d);
                }
                Op::Begin(d) => steps = Some(shared.commit_steps(*d).unwrap()),
                Op::Step => {
                    if let Some(s) = steps.as_mut() {
                        if !s.step().unwrap() {
                            steps = None;
                        }
                    }
                }
                Op::Flush => {
                    drop(steps.take());
                    shared.flush().unwrap();
                }
            }
            let mut seen = vec![0u8; ORIGIN];
            shared.read_at(0, &mut seen).unwrap();
            assert_eq!(seen, model, "reads see every write at once ({op:?})");
            origins.push(model.clone());
            invalids.push(invalid(&shared));
        }
    }
    (origins, invalids)
}

/// Power lost at every write and flush of scripted interleavings of writers and commit steps:
/// after reactivation every snapshot reads exactly its creation-time contents, or is invalid
/// where the clean run had it invalid; every origin sector holds what it held after some prefix
/// of the script from the last completed durable commit on (writes a flush covered are there).
#[test]
fn crash_at_every_write_and_flush_of_interleaved_writers() {
    let init = initial();
    let mut tried = 0;
    for seed in [1u64, 2, 3] {
        let ops = script(seed);
        let (origins, invalids) = model(&ops);
        let clean = run(&ops, None);
        assert_eq!(clean.failed, ops.len());
        let total = clean.rig.power.lock().unwrap().ops;
        assert!(total >= 60, "script {seed} too small: {total} device ops");
        assert!(
            invalids.last().unwrap()[1],
            "script {seed}: the small snapshot should overflow"
        );
        for k in 0..total {
            let r = run(&ops, Some(k));
            assert!(r.failed < ops.len(), "crash point {k} never reached");
            let window = r.durable_from..=(r.failed + 1).min(ops.len());
            for mode in OUTCOMES {
                let imgs = r.rig.after_crash(mode);
                let what = format!("script {seed}, crash at device op {k} ({mode:?})");
                // Origin: sector by sector, a state of the window.
                for s in 0..ORIGIN.div_ceil(512) {
                    let span = s * 512..((s + 1) * 512).min(ORIGIN);
                    let got = &imgs[0][span.clone()];
                    assert!(
                        window.clone().any(|p| origins[p][span.clone()] == *got),
                        "{what}: origin sector {s} holds data of no state since the last flush"
                    );
                }
                let mut vol = Volume::new(MemDevice::from_vec(imgs[0].clone()));
                for (i, _) in SNAPS.iter().enumerate() {
                    let id = vol
                        .activate_snapshot(
                            MemDevice::from_vec(imgs[i + 1].clone()),
                            SnapshotOptions::default(),
                        )
                        .unwrap_or_else(|e| panic!("{what}: snapshot {i} does not activate: {e}"));
                    let mut b = vec![0u8; ORIGIN];
                    match vol.snapshot_read_at(id, 0, &mut b) {
                        Ok(()) => assert!(
                            b == init,
                            "{what}: snapshot {i} reads data it never had (at {:?})",
                            b.iter().zip(&init).position(|(x, y)| x != y)
                        ),
                        Err(Error::SnapshotInvalid) => assert!(
                            window.clone().any(|p| invalids[p][i]),
                            "{what}: snapshot {i} invalid but should not be"
                        ),
                        Err(e) => panic!("{what}: {e}"),
                    }
                }
                tried += 1;
            }
            let _ = r.ids;
        }
    }
    println!("crash points tried: {tried}");
}

/// A memory device with a flush handle that can be made to wait at a barrier (to show flushes
/// overlapping) or on a gate (to show the volume usable while a flush runs).
#[derive(Clone)]
struct Slow {
    data: Arc<Mutex<Vec<u8>>>,
    /// Flushes through the handle.
    flushes: Arc<std::sync::atomic::AtomicUsize>,
    barrier: Option<Arc<Barrier>>,
    gate: Option<Arc<(Mutex<bool>, std::sync::Condvar)>>,
}

impl Slow {
    fn new(len: usize) -> Self {
        Slow {
            data: Arc::new(Mutex::new(vec![0; len])),
            flushes: Arc::default(),
            barrier: None,
            gate: None,
        }
    }
}

impl BlockDevice for Slow {
    fn len(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn read_at(&self, o: u64, b: &mut [u8]) -> cowsnap_core::Result<()> {
        b.copy_from_slice(&self.data.lock().unwrap()[o as usize..o as usize + b.len()]);
        Ok(())
    }
    fn write_at(&mut self, o: u64, b: &[u8]) -> cowsnap_core::Result<()> {
        self.data.lock().unwrap()[o as usize..o as usize + b.len()].copy_from_slice(b);
        Ok(())
    }
    fn flush(&mut self) -> cowsnap_core::Result<()> {
        FlushHandle::flush(self)
    }
    fn flush_handle(&self) -> Option<Arc<dyn FlushHandle>> {
        Some(Arc::new(self.clone()))
    }
}

impl FlushHandle for Slow {
    fn flush(&self) -> cowsnap_core::Result<()> {
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(b) = &self.barrier {
            b.wait();
        }
        if let Some(g) = &self.gate {
            let mut open = g.0.lock().unwrap();
            while !*open {
                open = g.1.wait(open).unwrap();
            }
        }
        Ok(())
    }
}

/// Runs `f` on a thread and fails the test if it has not finished within a minute (a deadlock
/// here is the bug the test looks for).
fn within_a_minute(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("did not finish: flushes did not overlap, or a lock was held across a flush");
}

/// The COWs of four snapshots flush at the same time: each COW's flush waits at a barrier for all
/// four, which only a commit that flushes them in parallel passes.
#[test]
fn commits_flush_several_cows_in_parallel() {
    within_a_minute(|| {
        let barrier = Arc::new(Barrier::new(4));
        let mut vol = Volume::new(MemDevice::new(1 << 20));
        for _ in 0..4 {
            let mut cow = Slow::new(1 << 20);
            cow.barrier = Some(barrier.clone());
            vol.create_snapshot(BarrierOnHandle(cow), opts(4096))
                .unwrap();
        }
        let shared = SharedVolume::new(vol);
        shared.write_at(0, &[7; 4096]).unwrap();
        shared.flush().unwrap(); // data flush and metadata flush: both phases pass the barrier
        let mut b = [0u8; 4096];
        shared.read_at(0, &mut b).unwrap();
        assert_eq!(b, [7; 4096]);
    });
}

/// A device whose `flush` does not wait (formatting) but whose flush handle does.
struct BarrierOnHandle(Slow);

impl BlockDevice for BarrierOnHandle {
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn read_at(&self, o: u64, b: &mut [u8]) -> cowsnap_core::Result<()> {
        self.0.read_at(o, b)
    }
    fn write_at(&mut self, o: u64, b: &[u8]) -> cowsnap_core::Result<()> {
        self.0.write_at(o, b)
    }
    fn flush(&mut self) -> cowsnap_core::Result<()> {
        Ok(())
    }
    fn flush_handle(&self) -> Option<Arc<dyn FlushHandle>> {
        self.0.flush_handle()
    }
}

/// While a commit's COW flush is stalled, other threads read the origin and the snapshot and
/// write other chunks (their writes wait for the next commit); the stalled flush's writers
/// are released once it completes, and a flush that arrived meanwhile covers the later writes.
#[test]
fn reads_and_writes_go_on_while_a_commit_flushes() {
    within_a_minute(|| {
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let mut cow = Slow::new(1 << 20);
        cow.gate = Some(gate.clone());
        let mut vol = Volume::new(MemDevice::new(1 << 20));
        let id = vol
            .create_snapshot(BarrierOnHandle(cow), opts(4096))
            .unwrap();
        let shared = Arc::new(SharedVolume::new(vol));
        shared.write_at(0, &[1; 4096]).unwrap();
        let flusher = {
            let s = shared.clone();
            std::thread::spawn(move || s.flush())
        };
        // Wait until the flusher is inside its commit (the write is then generation 0's).
        while shared.read().unwrap().uncommitted() != 0 {
            std::thread::yield_now();
        }
        // The flusher is stuck in the COW flush: the volume is not locked.
        shared.write_at(8192, &[2; 4096]).unwrap();
        let mut b = [0u8; 4096];
        shared.read_at(0, &mut b).unwrap();
        assert_eq!(b, [1; 4096], "a held write reads back during its commit");
        shared.read_at(8192, &mut b).unwrap();
        assert_eq!(b, [2; 4096]);
        shared
            .read()
            .unwrap()
            .snapshot_read_at(id, 0, &mut b)
            .unwrap();
        assert_eq!(b, [0; 4096]);
        // A second flusher arrives while the first commit is under way: it waits for it, then
        // commits the second write.
        let second = {
            let s = shared.clone();
            std::thread::spawn(move || s.flush())
        };
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        flusher.join().unwrap().unwrap();
        second.join().unwrap().unwrap();
        let g = shared.read().unwrap();
        assert_eq!(g.held_bytes(), 0);
        assert_eq!(g.uncommitted(), 0);
        let mut o = [0u8; 4096];
        g.origin().read_at(8192, &mut o).unwrap();
        assert_eq!(
            o, [2; 4096],
            "the second flush put the later write on the origin"
        );
    });
}

/// Threads that flush while a commit is under way share the next one: three writers flush while
/// the first commit is stalled in its COW flush; once it completes, one more commit (two COW
/// flushes, not six) makes all three writes durable.
#[test]
fn flushes_that_wait_share_one_commit() {
    within_a_minute(|| {
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let mut cow = Slow::new(1 << 20);
        cow.gate = Some(gate.clone());
        let flushes = cow.flushes.clone();
        let origin = Slow::new(1 << 20);
        let mut vol = Volume::new(origin.clone());
        vol.create_snapshot(BarrierOnHandle(cow), opts(4096))
            .unwrap();
        let shared = Arc::new(SharedVolume::new(vol));
        shared.write_at(0, &[9; 4096]).unwrap();
        let first = {
            let s = shared.clone();
            std::thread::spawn(move || s.flush())
        };
        while shared.read().unwrap().uncommitted() != 0 {
            std::thread::yield_now();
        }
        let followers: Vec<_> = (1..4u8)
            .map(|i| {
                let s = shared.clone();
                std::thread::spawn(move || {
                    s.write_at(u64::from(i) * 65536, &[i; 4096])?;
                    s.flush()
                })
            })
            .collect();
        while shared.flushes_waiting() < 3 {
            std::thread::yield_now();
        }
        let before = flushes.load(std::sync::atomic::Ordering::SeqCst);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        first.join().unwrap().unwrap();
        for f in followers {
            f.join().unwrap().unwrap();
        }
        // The first commit's two COW flushes (one was under way), then one shared commit's two.
        let after = flushes.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(before, 1, "the first commit was stalled in its data flush");
        assert_eq!(after, 4, "the three waiting flushes shared one commit");
        for i in 1..4u8 {
            let mut b = [0u8; 4096];
            origin.read_at(u64::from(i) * 65536, &mut b).unwrap();
            assert_eq!(b, [i; 4096]);
        }
    });
}

/// Real threads: writers on interleaved sectors (so they share chunks), flushing now and then,
/// reading their own writes back and the snapshots (which must not change), beside a background
/// committer; at the end the origin is the model's and the COWs reactivate to the initial data.
#[test]
fn threads_write_flush_and_read_against_a_model() {
    const LEN: usize = 4 << 20;
    const THREADS: usize = 4;
    let init = pattern(0x3C, LEN);
    let origin = Slow::new(LEN);
    origin.data.lock().unwrap().copy_from_slice(&init);
    let cows: Vec<Slow> = (0..3).map(|_| Slow::new(6 << 20)).collect();
    let mut vol = Volume::new(origin.clone());
    vol.set_commit_bytes(256 << 10); // the size bound triggers commits too
    let ids: Vec<SnapshotId> = cows
        .iter()
        .zip([4096u64, 8192, 65536])
        .map(|(c, chunk)| vol.create_snapshot(c.clone(), opts(chunk)).unwrap())
        .collect();
    let shared = Arc::new(SharedVolume::new(vol));
    let committer = shared.start_committer(|e| panic!("{e}")).unwrap();
    let models: Vec<Vec<u8>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let shared = &shared;
                let ids = &ids;
                let init = &init;
                s.spawn(move || {
                    let mut model = init.clone();
                    let mut x = 0x1234_5678u64 + t as u64;
                    for i in 0..300u32 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // This thread's sectors: those with sector % THREADS == t.
                        let first = (x as usize % (LEN / 512 / THREADS - 8)) * THREADS + t;
                        let n = 1 + (x >> 40) as usize % 6;
                        for k in 0..n {
                            let sec = first + k * THREADS;
                            let data = pattern((i as u8).wrapping_mul(7) ^ t as u8, 512);
                            shared.write_at(sec as u64 * 512, &data).unwrap();
                            model[sec * 512..(sec + 1) * 512].copy_from_slice(&data);
                            let mut back = [0u8; 512];
                            shared.read_at(sec as u64 * 512, &mut back).unwrap();
                            assert_eq!(back[..], data[..], "thread {t} reads its write");
                        }
                        if i % 5 == t as u32 % 5 {
                            shared.flush().unwrap();
                        }
                        let id = ids[i as usize % ids.len()];
                        let mut b = vec![0u8; 8192];
                        let at = (x >> 20) as usize % (LEN - 8192);
                        shared
                            .read()
                            .unwrap()
                            .snapshot_read_at(id, at as u64, &mut b)
                            .unwrap();
                        assert_eq!(b[..], init[at..at + 8192], "snapshot {id:?} changed");
                    }
                    model
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    drop(committer);
    shared.flush().unwrap();
    let mut want = init.clone();
    for s in 0..LEN / 512 {
        let t = s % THREADS;
        want[s * 512..(s + 1) * 512].copy_from_slice(&models[t][s * 512..(s + 1) * 512]);
    }
    assert_eq!(*origin.data.lock().unwrap(), want, "origin device");
    let mut vol = Volume::new(MemDevice::from_vec(want.clone()));
    for (c, id) in cows.iter().zip(&ids) {
        let snap = vol
            .activate_snapshot(
                MemDevice::from_vec(c.data.lock().unwrap().clone()),
                SnapshotOptions::default(),
            )
            .unwrap();
        let mut b = vec![0u8; LEN];
        vol.snapshot_read_at(snap, 0, &mut b).unwrap();
        assert!(b == init, "snapshot {id:?} after reactivation");
    }
}

/// A volume shared together with state of its own (as the CLI's mount shares a managed volume
/// with its manifest): that state is read beside a commit whose COW flush is stalled, origin
/// writes go on meanwhile, and exclusive access (waiting for the commit) changes both at once.
#[test]
fn a_holder_of_a_volume_is_shared_the_same_way() {
    struct Managed {
        vol: Volume,
        names: Vec<&'static str>,
    }
    impl cowsnap_core::HoldsVolume for Managed {
        fn volume(&self) -> &Volume {
            &self.vol
        }
        fn volume_mut(&mut self) -> &mut Volume {
            &mut self.vol
        }
    }
    within_a_minute(|| {
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let mut cow = Slow::new(1 << 20);
        cow.gate = Some(gate.clone());
        let mut vol = Volume::new(MemDevice::new(1 << 20));
        vol.create_snapshot(BarrierOnHandle(cow), opts(4096))
            .unwrap();
        let shared = Arc::new(SharedVolume::new(Managed {
            vol,
            names: vec!["s"],
        }));
        shared.write_at(0, &[1; 4096]).unwrap();
        let flusher = {
            let s = shared.clone();
            std::thread::spawn(move || s.flush())
        };
        while shared.read().unwrap().vol.uncommitted() != 0 {
            std::thread::yield_now();
        }
        // Stalled in the COW flush: the holder reads, the origin takes writes.
        assert_eq!(shared.read().unwrap().names, ["s"]);
        shared.write_at(8192, &[2; 4096]).unwrap();
        let renamer = {
            let s = shared.clone();
            std::thread::spawn(move || {
                let mut m = s.exclusive().unwrap();
                // The commit under way finished before exclusive access was given: its
                // write is on the origin device.
                let mut o = [0u8; 4096];
                m.vol.origin().read_at(0, &mut o).unwrap();
                assert_eq!(o, [1; 4096]);
                m.names.push("t");
            })
        };
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        flusher.join().unwrap().unwrap();
        renamer.join().unwrap();
        shared.flush().unwrap();
        let m = shared.read().unwrap();
        assert_eq!(m.names, ["s", "t"]);
        assert_eq!(m.vol.held_bytes(), 0);
        let mut o = [0u8; 4096];
        m.vol.origin().read_at(8192, &mut o).unwrap();
        assert_eq!(o, [2; 4096]);
    });
}
