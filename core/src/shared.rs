//! A volume shared by threads (`std` builds): writers, readers and flushers run together, and no
//! lock is held while a device flushes.
//!
//! The volume's state sits behind a read-write lock that is only held for memory work and
//! page-cache I/O (copying a chunk into a COW, holding or releasing an origin write, writing a
//! metadata area). The device flushes of a group commit — the COWs' data flush, the flush after
//! their metadata writes, the origin flush of a durable flush — run outside it, each COW's in
//! parallel, through the devices' [`FlushHandle`]s (devices without one are flushed under the
//! lock; memory devices have nothing to flush).
//!
//! One commit runs at a time (the *turn*). Threads that flush while a commit is under way wait for
//! it and then share the next one, which carries everything that arrived meanwhile (leader and
//! followers, as a database's group commit). Operations that change the set of snapshots or
//! commit on their own (snapshot create/delete/write, merge steps, ...) take the turn too, through
//! [`SharedVolume::exclusive`], so they never meet a commit half done.
//!
//! The crash rule holds as with [`Volume`]: a held origin write is released only by the commit
//! that made durable every record it depends on. Each held write is tagged with the commit that
//! will carry the records waiting when it arrived (the next one to start); a commit releases
//! exactly the writes tagged with it or earlier, after the flush of its metadata writes.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use std::vec::Vec;

use crate::chunk::check_range;
use crate::committer::Committer;
use crate::device::FlushHandle;
use crate::error::{Error, Result};
use crate::flushers::Flushers;
use crate::volume::{Cycle, Target, Volume};

/// How long an origin write may wait for its commit when nobody flushes (background committer).
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// A thread panicked while it changed the volume: its state cannot be trusted any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poisoned;

impl From<Poisoned> for Error {
    fn from(_: Poisoned) -> Self {
        Error::io("the volume is unusable: a thread panicked while changing it")
    }
}

/// Who commits.
#[derive(Debug, Default)]
struct Turn {
    /// A commit or an exclusive operation is under way.
    busy: bool,
    /// Generation of the last durable commit that completed.
    durable: Option<u64>,
    /// Flushes waiting for a commit under way (they will share the next one).
    waiting: usize,
    /// Most flushes seen waiting since the last durable commit started: how many threads flush
    /// together, so the next leader can wait a moment for them (see [`GATHER`]).
    peak: usize,
}

/// Longest a flush that starts a commit waits for the threads that flushed together last time
/// (they are between their previous flush's return and their next write's): with several
/// threads flushing each request, the commit then carries all their writes instead of one, and
/// the others do not wait a whole commit more. A thread flushing alone never waits.
const GATHER: Duration = Duration::from_micros(500);

/// What a [`SharedVolume`] shares: a [`Volume`], or a value that holds one with state of its own
/// that changes with it (the CLI's mount shares a managed volume: the engine and its manifest
/// under one lock, so that a command sees both as one).
pub trait HoldsVolume: Send + Sync {
    /// The volume.
    fn volume(&self) -> &Volume;
    /// The volume, to change.
    fn volume_mut(&mut self) -> &mut Volume;
}

impl HoldsVolume for Volume {
    fn volume(&self) -> &Volume {
        self
    }
    fn volume_mut(&mut self) -> &mut Volume {
        self
    }
}

/// A [`Volume`] (or a [`HoldsVolume`]) for several threads. See the module documentation.
#[derive(Debug)]
pub struct SharedVolume<T = Volume> {
    vol: RwLock<T>,
    turn: Mutex<Turn>,
    turn_free: Condvar,
    /// A flush started waiting (for a leader gathering followers).
    arrived: Condvar,
    /// Threads that flush a commit's devices in parallel.
    flushers: Flushers,
}

/// Exclusive access to the volume, between commits (see [`SharedVolume::exclusive`]).
pub struct Exclusive<'a, T: HoldsVolume = Volume> {
    shared: &'a SharedVolume<T>,
    guard: Option<RwLockWriteGuard<'a, T>>,
}

impl<T: HoldsVolume> Deref for Exclusive<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("held until drop")
    }
}

impl<T: HoldsVolume> DerefMut for Exclusive<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("held until drop")
    }
}

impl<T: HoldsVolume> Drop for Exclusive<'_, T> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.shared.give_turn();
    }
}

/// The volume of a read guard (what the commit code works on, whatever holds the volume).
struct VolRead<'a, T>(RwLockReadGuard<'a, T>);

impl<T: HoldsVolume> Deref for VolRead<'_, T> {
    type Target = Volume;
    fn deref(&self) -> &Volume {
        self.0.volume()
    }
}

/// The volume of a write guard.
struct VolWrite<'a, T>(RwLockWriteGuard<'a, T>);

impl<T: HoldsVolume> Deref for VolWrite<'_, T> {
    type Target = Volume;
    fn deref(&self) -> &Volume {
        self.0.volume()
    }
}

impl<T: HoldsVolume> DerefMut for VolWrite<'_, T> {
    fn deref_mut(&mut self) -> &mut Volume {
        self.0.volume_mut()
    }
}

impl<T: HoldsVolume> SharedVolume<T> {
    /// Shares `vol` between threads.
    pub fn new(vol: T) -> Self {
        SharedVolume {
            vol: RwLock::new(vol),
            turn: Mutex::new(Turn::default()),
            turn_free: Condvar::new(),
            arrived: Condvar::new(),
            flushers: Flushers::new(),
        }
    }

    /// The volume back (held writes keep waiting in it: flush first).
    pub fn into_inner(self) -> core::result::Result<T, Poisoned> {
        self.vol.into_inner().map_err(|_| Poisoned)
    }

    /// Shared access for reads (origin, snapshots, status). Runs beside writes and commits; a
    /// writer holds the lock only for memory and page-cache work, never across a device flush.
    pub fn read(&self) -> core::result::Result<RwLockReadGuard<'_, T>, Poisoned> {
        self.vol.read().map_err(|_| Poisoned)
    }

    fn vol_read(&self) -> core::result::Result<VolRead<'_, T>, Poisoned> {
        self.vol.read().map(VolRead).map_err(|_| Poisoned)
    }

    fn write_lock(&self) -> core::result::Result<VolWrite<'_, T>, Poisoned> {
        self.vol.write().map(VolWrite).map_err(|_| Poisoned)
    }

    fn turn(&self) -> core::result::Result<MutexGuard<'_, Turn>, Poisoned> {
        self.turn.lock().map_err(|_| Poisoned)
    }

    /// Waits for the turn and takes it.
    fn take_turn(&self) -> core::result::Result<(), Poisoned> {
        let mut t = self.turn()?;
        while t.busy {
            t = self.turn_free.wait(t).map_err(|_| Poisoned)?;
        }
        t.busy = true;
        Ok(())
    }

    fn give_turn(&self) {
        if let Ok(mut t) = self.turn.lock() {
            t.busy = false;
        }
        self.turn_free.notify_all();
    }

    /// Exclusive access for everything else (snapshot create, activate, delete, write, merge,
    /// status changes...): waits for a commit under way to finish, and keeps others from starting
    /// until dropped. Reads and writes wait while it is held.
    pub fn exclusive(&self) -> core::result::Result<Exclusive<'_, T>, Poisoned> {
        self.take_turn()?;
        match self.vol.write().map_err(|_| Poisoned) {
            Ok(g) => Ok(Exclusive {
                shared: self,
                guard: Some(g),
            }),
            Err(p) => {
                self.give_turn();
                Err(p)
            }
        }
    }

    /// Reads the origin (see [`Volume::read_at`]).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.vol_read()?.read_at(offset, buf)
    }

    /// Writes the origin (see [`Volume::write_at`]). Copies into snapshots are made under the
    /// volume's lock; the write then waits in memory for its group commit, which runs when a bound
    /// is reached, on [`SharedVolume::flush`], or from a [`Committer`]. With a commit bound of 0
    /// (the kernel's way) the write returns once its own commit is done.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        if self.vol_read()?.commit_due() {
            self.commit_due_now()?;
        }
        let each = {
            let mut g = self.write_lock()?;
            check_range(offset, data.len(), g.len())?;
            g.check_user_io(offset, data.len())?;
            if data.is_empty() {
                return Ok(());
            }
            if g.is_merging() {
                None
            } else {
                g.write_preserved(offset, data, true)?;
                Some(g.commit_bytes() == 0)
            }
        };
        match each {
            // During a merge writes go their own way (committed at once), between commits.
            None => self.exclusive()?.volume_mut().write_at(offset, data),
            Some(true) => self.commit(),
            Some(false) => Ok(()),
        }
    }

    /// A bound was reached: commit, or if a commit is under way, wait for it (it releases what it
    /// can; the next write checks again).
    fn commit_due_now(&self) -> Result<()> {
        {
            let mut t = self.turn()?;
            if t.busy {
                while t.busy {
                    t = self.turn_free.wait(t).map_err(|_| Poisoned)?;
                }
                return Ok(());
            }
            t.busy = true;
        }
        CommitSteps::start(self, false, true)?.run()
    }

    /// Makes every waiting record durable and releases the origin writes that waited for them to
    /// the origin device (not flushed): one group commit, after any under way.
    pub fn commit(&self) -> Result<()> {
        self.take_turn()?;
        CommitSteps::start(self, false, true)?.run()
    }

    /// [`SharedVolume::commit`] if anything waits and no commit is under way (a background
    /// committer's tick).
    pub fn commit_waiting(&self) -> Result<()> {
        {
            let g = self.vol_read()?;
            if g.held_bytes() == 0 && g.uncommitted() == 0 {
                return Ok(());
            }
        }
        {
            let mut t = self.turn()?;
            if t.busy {
                return Ok(());
            }
            t.busy = true;
        }
        CommitSteps::start(self, false, true)?.run()
    }

    /// Makes everything written before the call durable (see [`Volume::flush`]). Threads that
    /// flush together share one commit: a flush that arrives while one is under way waits for it,
    /// and the next carries everything that arrived meanwhile.
    pub fn flush(&self) -> Result<()> {
        // Every write done before now waits for this generation's commit at the latest, and a
        // commit of it starts after now, so its origin flush covers writes that went straight on.
        let target = self.vol_read()?.next_generation();
        {
            let mut t = self.turn()?;
            loop {
                if t.durable.is_some_and(|d| d >= target) {
                    return Ok(());
                }
                if !t.busy {
                    break;
                }
                t.waiting += 1;
                t.peak = t.peak.max(t.waiting);
                self.arrived.notify_one();
                let woken = self.turn_free.wait(t);
                t = woken.map_err(|_| Poisoned)?;
                t.waiting -= 1;
            }
            t.busy = true;
            // Leader: wait a moment for the threads that flushed with us last time.
            let want = t.peak;
            if want > t.waiting {
                let deadline = std::time::Instant::now() + GATHER;
                while t.waiting < want {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        break;
                    }
                    t = match self.arrived.wait_timeout(t, deadline - now) {
                        Ok((g, _)) => g,
                        Err(_) => {
                            drop(self.turn.lock().map(|mut t| t.busy = false));
                            self.turn_free.notify_all();
                            return Err(Poisoned.into());
                        }
                    };
                }
            }
            t.peak = t.waiting;
        }
        CommitSteps::start(self, true, true)?.run()
    }

    /// How many flushes wait for the commit under way (tests of commit sharing).
    #[doc(hidden)]
    pub fn flushes_waiting(&self) -> usize {
        self.turn().map_or(0, |t| t.waiting)
    }

    /// A group commit driven step by step (each device flush on its own), taking the turn until
    /// dropped; for tests that interleave writers with a commit deterministically.
    #[doc(hidden)]
    pub fn commit_steps(&self, durable: bool) -> Result<CommitSteps<'_, T>> {
        self.take_turn()?;
        CommitSteps::start(self, durable, false)
    }

    /// Starts a background thread that commits what waits every [`COMMIT_INTERVAL`] (so a caller
    /// that never flushes loses at most that much with the process), until the volume is dropped
    /// or the committer is. `on_error` hears a failed commit (the writes keep waiting; the next
    /// flush reports it too).
    pub fn start_committer(
        self: &Arc<Self>,
        on_error: impl Fn(&Error) + Send + 'static,
    ) -> std::io::Result<Committer>
    where
        T: 'static,
    {
        let weak = Arc::downgrade(self);
        Committer::start(COMMIT_INTERVAL, move || {
            let Some(v) = weak.upgrade() else {
                return false;
            };
            if let Err(e) = v.commit_waiting() {
                on_error(&e);
            }
            true
        })
    }

    /// Flushes `targets` outside the volume's lock, in parallel when there are several.
    fn flush_targets(&self, targets: &[Target]) -> Result<()> {
        let handles: Vec<(Target, Option<Arc<dyn FlushHandle>>)> = {
            let g = self.vol_read()?;
            targets.iter().map(|&t| (t, g.flush_handle(t))).collect()
        };
        // Devices with a flush handle flush together (the pool's threads); the others under
        // the lock, one after the other.
        let (with, without): (Vec<_>, Vec<_>) = handles.into_iter().partition(|(_, h)| h.is_some());
        let with: Vec<Arc<dyn FlushHandle>> = with.into_iter().filter_map(|(_, h)| h).collect();
        let mut result = self.flushers.flush_all(&with);
        for (t, _) in without {
            let r = self
                .write_lock()
                .map_err(Error::from)
                .and_then(|mut g| g.flush_target(t));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// Where a commit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Flushing the COWs' data (the records' chunks).
    Data,
    /// Writing the metadata areas.
    Write,
    /// Flushing the COWs' metadata.
    Records,
    /// Releasing the held origin writes.
    Release,
    /// A durable flush: flushing the origin and every device written.
    Durable,
    Done,
}

/// One group commit of a [`SharedVolume`], holding the turn until dropped. Each step takes the
/// volume's lock only for memory work and page-cache writes; flushes run without it.
#[doc(hidden)]
pub struct CommitSteps<'a, T: HoldsVolume = Volume> {
    shared: &'a SharedVolume<T>,
    cycle: Option<Cycle>,
    generation: u64,
    durable: bool,
    /// All flushes of a phase at once (in parallel), or one per step.
    together: bool,
    phase: Phase,
    /// Devices still to flush in this phase.
    pending: Vec<Target>,
    /// Devices the durable phase flushes (marked dirty again if it fails).
    dirty: Vec<Target>,
    succeeded: bool,
}

impl<'a, T: HoldsVolume> CommitSteps<'a, T> {
    /// Begins a commit; the caller holds the turn, which this owns from now on.
    fn start(shared: &'a SharedVolume<T>, durable: bool, together: bool) -> Result<Self> {
        let mut steps = CommitSteps {
            shared,
            cycle: None,
            generation: 0,
            durable,
            together,
            phase: Phase::Data,
            pending: Vec::new(),
            dirty: Vec::new(),
            succeeded: false,
        };
        let cycle = shared.write_lock()?.commit_begin();
        steps.generation = cycle.generation;
        steps.pending = cycle.targets();
        steps.cycle = Some(cycle);
        Ok(steps)
    }

    /// Runs every step.
    pub fn run(mut self) -> Result<()> {
        while self.step()? {}
        Ok(())
    }

    /// Does the next step; false once the commit is done. After an error the commit is over
    /// (its records wait again, or their snapshot is invalidated).
    pub fn step(&mut self) -> Result<bool> {
        let r = self.step_inner();
        if r.is_err() {
            self.fail();
        }
        r.map(|()| self.phase != Phase::Done)
    }

    fn step_inner(&mut self) -> Result<()> {
        match self.phase {
            Phase::Data | Phase::Records | Phase::Durable => {
                let n = if self.together { self.pending.len() } else { 1 };
                let now: Vec<Target> = self.pending.drain(..n.min(self.pending.len())).collect();
                if self.phase == Phase::Durable {
                    if let Err(e) = self.shared.flush_targets(&now) {
                        let mut g = self.shared.write_lock()?;
                        g.mark_dirty(&self.dirty);
                        self.dirty.clear();
                        self.phase = Phase::Done;
                        return Err(e);
                    }
                } else if let Err(e) = self.shared.flush_targets(&now) {
                    if let Some(c) = self.cycle.take() {
                        self.shared.write_lock()?.commit_abort(c, e.clone());
                    }
                    self.phase = Phase::Done;
                    return Err(e);
                }
                if self.pending.is_empty() {
                    self.phase = match self.phase {
                        Phase::Data => Phase::Write,
                        Phase::Records => Phase::Release,
                        _ => {
                            self.succeeded = true;
                            Phase::Done
                        }
                    };
                }
                Ok(())
            }
            Phase::Write => {
                let mut g = self.shared.write_lock()?;
                if let Some(c) = self.cycle.as_mut() {
                    self.pending = c.targets();
                    if let Err(e) = g.commit_write(c) {
                        self.cycle = None; // aborted by commit_write
                        self.phase = Phase::Done;
                        return Err(e);
                    }
                }
                self.phase = Phase::Records;
                Ok(())
            }
            Phase::Release => {
                let mut g = self.shared.write_lock()?;
                self.phase = Phase::Done;
                if let Some(c) = self.cycle.take() {
                    g.commit_finish(c)?;
                }
                if self.durable {
                    self.dirty = g.take_dirty();
                    self.pending = self.dirty.clone();
                    self.phase = Phase::Durable;
                } else {
                    self.succeeded = true;
                }
                Ok(())
            }
            Phase::Done => Ok(()),
        }
    }

    /// Ends a commit that failed or was dropped half way.
    fn fail(&mut self) {
        self.phase = Phase::Done;
        if let Ok(mut g) = self.shared.write_lock() {
            if let Some(c) = self.cycle.take() {
                g.commit_abort(c, Error::io("commit abandoned"));
            }
            if !self.dirty.is_empty() {
                g.mark_dirty(&self.dirty);
                self.dirty.clear();
            }
        }
    }
}

impl<T: HoldsVolume> Drop for CommitSteps<'_, T> {
    fn drop(&mut self) {
        if self.phase != Phase::Done || self.cycle.is_some() {
            self.fail();
        }
        if self.succeeded && self.durable {
            if let Ok(mut t) = self.shared.turn.lock() {
                t.durable = Some(
                    t.durable
                        .map_or(self.generation, |d| d.max(self.generation)),
                );
            }
        }
        self.shared.give_turn();
    }
}
