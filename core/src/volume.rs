//! A volume: the origin device and its snapshots, and the origin write path that ties them together.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::chunk::{check_range, pieces};
use crate::device::{self, BlockDevice, MemDevice};
use crate::error::{Error, Result};
use crate::exception::Exception;
use crate::held::Generations;
use crate::snapshot::{Autoextend, Snapshot, SnapshotOptions};
use crate::status::{SnapshotState, SnapshotStatus};

/// Largest origin range read once for several snapshots (beyond it each snapshot reads for itself).
const SHARED_READ_MAX: u64 = 4 << 20;

/// Group commit exists in `std` builds only: it saves device flushes, and the `no_std` (wasm)
/// build's memory devices have none to save, so there it would only cost code size.
pub(crate) const GROUP_COMMIT: bool = cfg!(feature = "std");

/// Default bound of the group commit: origin bytes held (and records waiting) before a commit.
pub const DEFAULT_COMMIT_BYTES: usize = 8 << 20;
/// Default of the most origin bytes one merge step copies back (one origin flush and one commit
/// per step; see [`Volume::set_merge_step_bytes`]).
pub const DEFAULT_MERGE_STEP_BYTES: u64 = 16 << 20;
/// Records waiting for a commit, over all snapshots, before one is forced.
const COMMIT_RECORDS: usize = 4096;

/// A read-only view of an origin range already in memory, standing in for the origin device while
/// several snapshots copy from it. Reads outside the range are refused, never served wrongly.
struct CachedRange<'a> {
    len: u64,
    base: u64,
    data: &'a [u8],
}

impl BlockDevice for CachedRange<'_> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let inside = offset
            .checked_sub(self.base)
            .filter(|&o| o + buf.len() as u64 <= self.data.len() as u64);
        match inside {
            Some(o) => {
                buf.copy_from_slice(&self.data[o as usize..o as usize + buf.len()]);
                Ok(())
            }
            None => Err(Error::io("read outside the cached origin range")),
        }
    }
    fn write_at(&mut self, _: u64, _: &[u8]) -> Result<()> {
        Err(Error::Unsupported("the cached origin range is read-only"))
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Identifies a snapshot within its volume. Ids are never reused by a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId(pub u32);

/// A snapshot's id with its COW device, as [`Volume::into_parts`] hands them back.
pub type CowDevice = (SnapshotId, Box<dyn BlockDevice>);

/// Progress of a merge, in chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeProgress {
    /// Chunks copied back so far.
    pub merged: u64,
    /// Chunks to copy back in all.
    pub total: u64,
    /// True once every record is merged (the snapshot is then removed).
    pub done: bool,
}

/// An origin device and its snapshots.
///
/// Every origin write goes through [`Volume::write_at`], which first preserves the old contents of the
/// chunks it touches in every snapshot that needs them. Reads of the origin and of snapshots take
/// `&self`, so a `RwLock<Volume>` lets them run in parallel.
pub struct Volume {
    origin: Box<dyn BlockDevice>,
    /// Buffer for origin ranges read once on behalf of several snapshots.
    shared_read: Vec<u8>,
    /// Origin written since its last flush.
    origin_dirty: bool,
    snapshots: BTreeMap<SnapshotId, Snapshot>,
    next_id: u32,
    /// Origin writes waiting for their exceptions to be committed (see [`Volume::commit`]).
    held: Generations,
    /// Held bytes that force a commit.
    commit_bytes: usize,
    /// Most origin bytes a merge step copies back.
    merge_step_bytes: u64,
    /// The generation of the next group commit to start (see [`Generations`]).
    next_gen: u64,
    /// A group commit is under way in steps (see [`Volume::commit_begin`]).
    committing: bool,
}

impl core::fmt::Debug for Volume {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Volume")
            .field("len", &self.len())
            .field("snapshots", &self.snapshots.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Volume {
    /// A volume over `origin`, with no snapshots.
    pub fn new(origin: impl BlockDevice + 'static) -> Self {
        Self::from_boxed(Box::new(origin))
    }

    /// Same as [`Volume::new`] for an already boxed device.
    pub fn from_boxed(origin: Box<dyn BlockDevice>) -> Self {
        Volume {
            origin,
            shared_read: Vec::new(),
            origin_dirty: false,
            snapshots: BTreeMap::new(),
            next_id: 0,
            held: Generations::default(),
            commit_bytes: DEFAULT_COMMIT_BYTES,
            merge_step_bytes: DEFAULT_MERGE_STEP_BYTES,
            next_gen: 0,
            committing: false,
        }
    }

    /// Size of the origin (and of every snapshot) in bytes.
    pub fn len(&self) -> u64 {
        self.origin.len()
    }

    /// True for a zero-length origin.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The origin device (for export; writes must go through [`Volume::write_at`]). Writes waiting
    /// for a group commit are not on it yet: call [`Volume::commit`] before copying its bytes.
    pub fn origin(&self) -> &dyn BlockDevice {
        &*self.origin
    }

    /// Takes the volume apart: the origin device and each snapshot's COW device, oldest first
    /// (for deactivation; reactivate with [`Volume::activate_snapshot`]). Held origin writes are
    /// committed first (see [`Volume::commit`]); call [`Volume::flush`] before to see its errors
    /// and make everything durable: nothing is flushed here.
    pub fn into_parts(mut self) -> (Box<dyn BlockDevice>, Vec<CowDevice>) {
        let _ = self.commit();
        let snaps = core::mem::take(&mut self.snapshots)
            .into_iter()
            .map(|(id, s)| (id, s.cow))
            .collect();
        let origin = core::mem::replace(&mut self.origin, Box::new(MemDevice::default()));
        (origin, snaps)
    }

    /// Sets how many bytes of origin writes may wait for one group commit (default
    /// [`DEFAULT_COMMIT_BYTES`]; 0 commits every write on its own, as the kernel's first write to
    /// a chunk would).
    pub fn set_commit_bytes(&mut self, bytes: usize) {
        self.commit_bytes = bytes;
    }

    /// Sets how many origin bytes one merge step may copy back (default
    /// [`DEFAULT_MERGE_STEP_BYTES`]; at least one chunk is always taken). Smaller steps report
    /// progress more often and hold less in memory; each step costs one origin flush and one
    /// metadata commit (one area write per metadata area it changes, two COW flushes).
    pub fn set_merge_step_bytes(&mut self, bytes: u64) {
        self.merge_step_bytes = bytes;
    }

    /// Bytes of origin writes waiting for a commit.
    pub fn held_bytes(&self) -> usize {
        self.held.bytes()
    }

    /// Group commit: makes every exception copied so far durable in its snapshot (per snapshot one
    /// data flush, the metadata area writes, one flush), then writes the origin data that waited
    /// for them to the origin device (not flushed: that is [`Volume::flush`]).
    ///
    /// Origin writes return before their exceptions are committed: they wait in memory (reads see
    /// them) until this runs — on [`Volume::flush`], when [`Volume::set_commit_bytes`] bytes are
    /// waiting, before any snapshot is created, activated, written, merged or deleted, and when the
    /// volume is dropped. On an error nothing that waits is lost: it stays waiting and the next
    /// commit tries again (a snapshot whose store could not take its records back is invalidated,
    /// and the error says so once).
    pub fn commit(&mut self) -> Result<()> {
        if !GROUP_COMMIT {
            return Ok(());
        }
        let mut cycle = self.commit_begin();
        for t in cycle.targets() {
            if let Err(e) = self.flush_target(t) {
                return Err(self.commit_abort(cycle, e));
            }
        }
        self.commit_write(&mut cycle)?;
        for t in cycle.targets() {
            if let Err(e) = self.flush_target(t) {
                return Err(self.commit_abort(cycle, e));
            }
        }
        self.commit_finish(cycle)
    }

    fn uncommitted_records(&self) -> usize {
        self.snapshots.values().map(|s| s.uncommitted.len()).sum()
    }

    /// Ids of the current snapshots, oldest first.
    pub fn snapshot_ids(&self) -> Vec<SnapshotId> {
        self.snapshots.keys().copied().collect()
    }

    fn snap(&self, id: SnapshotId) -> Result<&Snapshot> {
        self.snapshots.get(&id).ok_or(Error::UnknownSnapshot(id.0))
    }

    fn snap_mut(&mut self, id: SnapshotId) -> Result<&mut Snapshot> {
        self.snapshots
            .get_mut(&id)
            .ok_or(Error::UnknownSnapshot(id.0))
    }

    fn merging(&self) -> Option<SnapshotId> {
        self.snapshots
            .iter()
            .find(|(_, s)| s.state == SnapshotState::Merging)
            .map(|(&id, _)| id)
    }

    fn add(&mut self, snap: Snapshot) -> Result<SnapshotId> {
        let id = SnapshotId(self.next_id);
        self.next_id = self
            .next_id
            .checked_add(1)
            .ok_or(Error::InvalidArgument("snapshot ids exhausted"))?;
        self.snapshots.insert(id, snap);
        Ok(id)
    }

    /// Refuses a COW device that is already in use here, as the origin or another snapshot's COW
    /// (the same file through two paths, a hard link, a symlink): writing one would silently change
    /// the other. Devices that cannot tell their identity are trusted.
    fn check_unused(&self, cow: &dyn BlockDevice) -> Result<()> {
        let Some(id) = cow.identity() else {
            return Ok(());
        };
        if self.origin.identity() == Some(id) {
            return Err(Error::InvalidArgument(
                "the COW device is the origin itself (the same file through another name)",
            ));
        }
        if self
            .snapshots
            .values()
            .any(|s| s.cow.identity() == Some(id))
        {
            return Err(Error::InvalidArgument(
                "the COW device is already another snapshot's COW (the same file through another name)",
            ));
        }
        Ok(())
    }

    /// Takes a snapshot on `cow` (like `lvcreate -s`): formats the COW (persistent store) and copies no
    /// data, whatever the origin size.
    pub fn create_snapshot(
        &mut self,
        cow: impl BlockDevice + 'static,
        opts: SnapshotOptions,
    ) -> Result<SnapshotId> {
        self.create_snapshot_boxed(Box::new(cow), opts)
    }

    /// [`Volume::create_snapshot`] for a boxed device.
    pub fn create_snapshot_boxed(
        &mut self,
        cow: Box<dyn BlockDevice>,
        opts: SnapshotOptions,
    ) -> Result<SnapshotId> {
        if self.merging().is_some() {
            return Err(Error::Merging);
        }
        self.check_unused(&*cow)?;
        // The new snapshot copies from the origin device: everything waiting must be on it.
        self.commit()?;
        let mut snap = Snapshot::create(cow, opts)?;
        snap.formatted_here = true;
        self.add(snap)
    }

    /// Activates an existing persistent COW device (after a clean shutdown or a crash), as the kernel
    /// loads a snapshot table: the header's chunk size wins over `opts.chunk_size`, `valid = 0` gives
    /// an invalid snapshot, corrupt metadata is refused. Unlike the kernel, a zero magic is refused
    /// as corrupt: a COW the caller knows as a snapshot can only have lost its header (a wiped or
    /// truncated file, or the wrong file); formatting it would turn the snapshot into the current
    /// origin with a success code. Only [`Volume::create_snapshot`] formats. The device must not
    /// be the origin or another snapshot's COW.
    pub fn activate_snapshot(
        &mut self,
        cow: impl BlockDevice + 'static,
        opts: SnapshotOptions,
    ) -> Result<SnapshotId> {
        self.activate_snapshot_boxed(Box::new(cow), opts)
    }

    /// [`Volume::activate_snapshot`] for a boxed device.
    pub fn activate_snapshot_boxed(
        &mut self,
        cow: Box<dyn BlockDevice>,
        opts: SnapshotOptions,
    ) -> Result<SnapshotId> {
        // A snapshot that starts now would see the physical origin, not the merged view the origin
        // shows while a merge runs: refuse, as for create.
        if self.merging().is_some() {
            return Err(Error::Merging);
        }
        self.check_unused(&*cow)?;
        self.commit()?;
        let snap = Snapshot::activate(cow, opts, self.len())?;
        self.add(snap)
    }

    /// Removes a snapshot and hands back its COW device (as it is now).
    pub fn delete_snapshot(&mut self, id: SnapshotId) -> Result<Box<dyn BlockDevice>> {
        if self.snap(id)?.state == SnapshotState::Merging {
            return Err(Error::Merging);
        }
        // The COW handed back holds every record it was given, as if each had been committed at
        // once (a failure here does not stop the delete).
        if GROUP_COMMIT {
            let _ = self.snap_mut(id)?.commit_deferred();
        }
        let s = self
            .snapshots
            .remove(&id)
            .ok_or(Error::UnknownSnapshot(id.0))?;
        // Writes that waited only for this snapshot can go now; an error stays for the next
        // commit or flush to report (the snapshot is gone either way).
        let _ = self.commit();
        Ok(s.cow)
    }

    /// The alignment callers' I/O must keep: the largest [`BlockDevice::io_alignment`] of the
    /// origin and every COW (4096 as soon as one is a file opened with `O_DIRECT`; 1 otherwise).
    /// One rule for every read and write, since a merge moves caller writes onto a COW.
    pub fn io_alignment(&self) -> u64 {
        self.snapshots
            .values()
            .map(|s| s.cow.io_alignment())
            .fold(self.origin.io_alignment(), u64::max)
    }

    /// Refuses a caller's I/O that a direct device could not do (see [`Volume::io_alignment`]).
    pub(crate) fn check_user_io(&self, offset: u64, len: usize) -> Result<()> {
        device::check_aligned(self.io_alignment(), offset, len)
    }

    /// Reads the origin. During a merge this is the merged view (the merging snapshot's contents).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(offset, buf.len(), self.len())?;
        self.check_user_io(offset, buf.len())?;
        match self.merging() {
            Some(id) => self.snap(id)?.read_view(&*self.origin, offset, buf),
            None => {
                device::read(&*self.origin, offset, buf)?;
                self.held.overlay(offset, buf);
                Ok(())
            }
        }
    }

    /// Writes the origin: every snapshot that lacks an exception for a touched chunk gets a copy of the
    /// chunk first (whole chunks, even for a one-byte write). Snapshots whose COW is full are
    /// invalidated; the write itself goes on. A write that needed copies waits in memory for their
    /// group commit (see [`Volume::commit`]); reads see it at once.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        check_range(offset, data.len(), self.len())?;
        self.check_user_io(offset, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        if let Some(id) = self.merging() {
            return self.write_during_merge(id, offset, data);
        }
        // Commit before taking more, so that a failed commit refuses this write whole (and, not
        // grouping, so that nothing waiting lands after this write).
        if GROUP_COMMIT && self.commit_due() {
            self.commit()?;
        }
        self.write_preserved(offset, data, GROUP_COMMIT && self.commit_bytes > 0)
    }

    /// True when held writes or waiting records have reached the group commit's bounds.
    pub(crate) fn commit_due(&self) -> bool {
        self.held.bytes() >= self.commit_bytes
            || self.uncommitted_records() >= COMMIT_RECORDS
            || (self.commit_bytes == 0 && !self.held.is_empty())
    }

    /// An origin write outside a merge, after any commit due: copies first, then the write goes
    /// to the origin device, or (`group`) waits for the commit of what it depends on.
    pub(crate) fn write_preserved(&mut self, offset: u64, data: &[u8], group: bool) -> Result<()> {
        self.preserve_all(offset, data.len() as u64, None, group)?;
        // A write straight to the origin device must depend on nothing uncommitted and must not
        // be overwritten later by an older held write.
        if !group || (self.held.is_empty() && self.uncommitted_records() == 0 && !self.committing) {
            self.origin_dirty = true;
            return device::write(&mut *self.origin, offset, data);
        }
        self.held.hold(self.next_gen, offset, data);
        Ok(())
    }

    /// Before an origin write: every snapshot (but `except`) gets its copies of the chunks touched.
    /// When several snapshots need copies, the origin range is read once and each copies from that
    /// (the kernel's kcopyd likewise reads once for several destinations).
    fn preserve_all(
        &mut self,
        offset: u64,
        len: u64,
        except: Option<SnapshotId>,
        defer: bool,
    ) -> Result<()> {
        let Volume {
            origin,
            snapshots,
            shared_read,
            ..
        } = self;
        let origin = &**origin;
        let needy = |(id, s): &(&SnapshotId, &mut Snapshot)| {
            Some(**id) != except && s.needs_copy(offset, len)
        };
        let mut span: Option<(u64, u64, usize)> = None; // (start, end, snapshots)
        for (_, s) in snapshots.iter_mut().filter(needy) {
            let (a, b) = s.chunk_span(offset, len);
            span = Some(match span {
                None => (a, b, 1),
                Some((x, y, n)) => (x.min(a), y.max(b), n + 1),
            });
        }
        let Some((start, end, n)) = span else {
            return Ok(());
        };
        let end = end.min(origin.len());
        if n >= 2 && end > start && end - start <= SHARED_READ_MAX {
            let want = (end - start) as usize;
            if shared_read.len() < want {
                shared_read.resize(want, 0);
            }
            let data = &mut shared_read[..want];
            device::read(origin, start, data)?;
            let cached = CachedRange {
                len: origin.len(),
                base: start,
                data,
            };
            for (_, s) in snapshots.iter_mut().filter(needy) {
                s.preserve(&cached, offset, len, defer)?;
            }
        } else {
            for (_, s) in snapshots.iter_mut().filter(needy) {
                s.preserve(origin, offset, len, defer)?;
            }
        }
        Ok(())
    }

    /// During a merge, chunks that still have a record are the merging snapshot's COW chunks (the merge
    /// copies them back later); the rest are plain origin chunks.
    fn write_during_merge(&mut self, id: SnapshotId, offset: u64, data: &[u8]) -> Result<()> {
        let cs = self.snap(id)?.chunk();
        // Runs of consecutive pieces without a record go to the origin together (one preserve, so
        // one commit per other snapshot, and one origin write); pieces with a record go to the COW.
        let mut run: Option<(u64, usize, usize)> = None; // (origin offset, start in data, len)
        for (c, in_chunk, at, n) in pieces(cs, offset, data.len()) {
            match self.snap(id)?.table.lookup(c) {
                Some(new) => {
                    if let Some(r) = run.take() {
                        self.write_origin_run(id, r, data)?;
                    }
                    let s = self.snap_mut(id)?;
                    s.dirty = true;
                    let piece = &data[at..at + n];
                    device::write(&mut *s.cow, cs.offset_of(new) + in_chunk as u64, piece)?;
                }
                None => match &mut run {
                    Some(r) => r.2 += n,
                    None => run = Some((cs.offset_of(c) + in_chunk as u64, at, n)),
                },
            }
        }
        if let Some(r) = run {
            self.write_origin_run(id, r, data)?;
        }
        Ok(())
    }

    /// During a merge: an origin write to chunks the merging snapshot no longer maps.
    fn write_origin_run(
        &mut self,
        merging: SnapshotId,
        (pos, at, n): (u64, usize, usize),
        data: &[u8],
    ) -> Result<()> {
        self.preserve_all(pos, n as u64, Some(merging), false)?;
        self.origin_dirty = true;
        device::write(&mut *self.origin, pos, &data[at..at + n])
    }

    /// Makes everything written so far durable (origin and every COW). Devices with nothing
    /// unflushed are skipped: exception commits already flush their COW.
    pub fn flush(&mut self) -> Result<()> {
        self.commit()?;
        if self.origin_dirty {
            self.origin.flush()?;
            self.origin_dirty = false;
        }
        for s in self.snapshots.values_mut() {
            if s.dirty {
                s.cow.flush()?;
                s.dirty = false;
            }
        }
        Ok(())
    }

    /// Reads a snapshot: its own copies where it has them, the origin elsewhere.
    pub fn snapshot_read_at(&self, id: SnapshotId, offset: u64, buf: &mut [u8]) -> Result<()> {
        let s = self.snap(id)?;
        self.check_user_io(offset, buf.len())?;
        s.read(&*self.origin, offset, buf)
    }

    /// Writes a snapshot (never the origin).
    pub fn snapshot_write_at(&mut self, id: SnapshotId, offset: u64, data: &[u8]) -> Result<()> {
        self.snap(id)?;
        self.check_user_io(offset, data.len())?;
        // The snapshot commits its own records right away; those waiting go first, in order.
        self.commit()?;
        let origin = &*self.origin;
        let s = self
            .snapshots
            .get_mut(&id)
            .ok_or(Error::UnknownSnapshot(id.0))?;
        s.write(origin, offset, data)
    }

    /// A snapshot's status.
    pub fn snapshot_status(&self, id: SnapshotId) -> Result<SnapshotStatus> {
        Ok(self.snap(id)?.status())
    }

    /// A snapshot's exceptions, in origin-chunk order.
    pub fn snapshot_exceptions(&self, id: SnapshotId) -> Result<Vec<Exception>> {
        Ok(self.snap(id)?.table.iter().collect())
    }

    /// A snapshot's COW device, e.g. to export its dm-format image. Exceptions waiting for a group
    /// commit are not on it yet: call [`Volume::commit`] (or `flush`) before copying its bytes.
    pub fn snapshot_cow(&self, id: SnapshotId) -> Result<&dyn BlockDevice> {
        Ok(&*self.snap(id)?.cow)
    }

    /// Grows a snapshot's COW device to `new_len` bytes (like `lvextend` on a snapshot).
    pub fn extend_snapshot(&mut self, id: SnapshotId, new_len: u64) -> Result<()> {
        self.snap_mut(id)?.extend(new_len)
    }

    /// Sets or clears a snapshot's autoextend policy.
    pub fn set_autoextend(&mut self, id: SnapshotId, policy: Option<Autoextend>) -> Result<()> {
        self.snap_mut(id)?.set_autoextend(policy)
    }

    /// Starts merging a snapshot into the origin (like `lvconvert --merge`). The origin shows the
    /// snapshot's contents from now on; [`Volume::merge_step`] copies the data back.
    pub fn merge_begin(&mut self, id: SnapshotId) -> Result<MergeProgress> {
        if let Some(m) = self.merging() {
            return if m == id {
                self.merge_progress(id)
            } else {
                Err(Error::Merging)
            };
        }
        self.snap(id)?;
        // The merge reads the COW's records and writes the origin device: nothing may wait.
        self.commit()?;
        let s = self.snap_mut(id)?;
        match s.state {
            SnapshotState::Invalid => return Err(Error::SnapshotInvalid),
            SnapshotState::Active | SnapshotState::Overflow => {}
            SnapshotState::Merging => unreachable!("checked above"),
        }
        s.state = SnapshotState::Merging;
        s.merge_total = s.table.len();
        self.merge_progress(id)
    }

    fn merge_progress(&self, id: SnapshotId) -> Result<MergeProgress> {
        let s = self.snap(id)?;
        Ok(MergeProgress {
            merged: s.merged_chunks(),
            total: s.merge_total,
            done: s.table.is_empty(),
        })
    }

    /// Merges a batch of records (the newest ones, any chunks, across metadata areas, up to
    /// [`Volume::set_merge_step_bytes`] of chunks, 16 MiB by default), the kernel's way but many
    /// runs at once: other snapshots first get (and commit) their copies of the origin chunks
    /// about to change, then COW → origin, one origin flush, then the records are cleared: each
    /// area the step empties is written as zeros, newest first, then the area left partial, and
    /// one COW flush. After the step the COW is the one the kernel's merge leaves with as many
    /// records; a crash within it leaves one that activates to the records of such a state (see
    /// `PersistentStore::merge_drop`). `done` is set once no record is left; then call
    /// [`Volume::merge_finish`].
    pub fn merge_step(&mut self, id: SnapshotId) -> Result<MergeProgress> {
        if self.snap(id)?.state != SnapshotState::Merging {
            return Err(Error::InvalidArgument(
                "snapshot is not merging; call merge_begin",
            ));
        }
        let cs = self.snap(id)?.chunk();
        let max = (self.merge_step_bytes / cs.bytes()).clamp(1, usize::MAX as u64) as usize;
        let mut records = self.snap_mut(id)?.merge_next(max)?;
        if !GROUP_COMMIT {
            // The small build merges the kernel's way, one trailing run per step (what the
            // playground shows step by step); its memory devices have no flush to save.
            let last = records.last().copied();
            let run = records
                .iter()
                .rev()
                .zip(0u64..)
                .take_while(|(e, i)| last.is_some_and(|l| e.old + i == l.old && e.new + i == l.new))
                .count();
            records.drain(..records.len() - run);
        }
        if records.is_empty() {
            if !self.snap(id)?.table.is_empty() {
                return Err(Error::corrupt(
                    "merge found no records left but the table is not empty",
                ));
            }
            return self.merge_progress(id);
        }
        // Every other snapshot gets its copies of all the chunks about to change, committed in
        // one group, before the origin changes.
        let ranges = self.snap(id)?.origin_ranges(&records, self.len());
        for &(start, len) in &ranges {
            self.preserve_all(start, len, Some(id), GROUP_COMMIT)?;
        }
        if GROUP_COMMIT {
            for (_, s) in self.snapshots.iter_mut().filter(|(&o, _)| o != id) {
                s.commit_deferred()?;
            }
        }
        let origin = &mut *self.origin;
        let s = self
            .snapshots
            .get_mut(&id)
            .ok_or(Error::UnknownSnapshot(id.0))?;
        s.merge_copy(origin, &records)?;
        s.merge_commit(&records)?;
        self.merge_progress(id)
    }

    /// Ends a completed merge: removes the snapshot and returns its COW device (records cleared).
    pub fn merge_finish(&mut self, id: SnapshotId) -> Result<Box<dyn BlockDevice>> {
        let s = self.snap(id)?;
        if s.state != SnapshotState::Merging || !s.table.is_empty() {
            return Err(Error::InvalidArgument("merge is not complete"));
        }
        let s = self
            .snapshots
            .remove(&id)
            .ok_or(Error::UnknownSnapshot(id.0))?;
        Ok(s.cow)
    }

    /// Merges a snapshot completely (starting or resuming), reporting progress after each step, and
    /// returns its COW device.
    pub fn merge_snapshot(
        &mut self,
        id: SnapshotId,
        mut progress: impl FnMut(MergeProgress),
    ) -> Result<Box<dyn BlockDevice>> {
        let mut p = self.merge_begin(id)?;
        progress(p);
        while !p.done {
            p = self.merge_step(id)?;
            progress(p);
        }
        self.merge_finish(id)
    }
}

/// Where a group commit flushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "std"), allow(dead_code))] // the origin is flushed as a target by `shared`
pub(crate) enum Target {
    Origin,
    Cow(SnapshotId),
}

/// A group commit under way in steps (std builds share them between threads, see
/// [`crate::shared`]): [`Volume::commit_begin`], flush [`Cycle::targets`], [`Volume::commit_write`],
/// flush them again, [`Volume::commit_finish`]; or [`Volume::commit_abort`] on a failure.
#[derive(Debug)]
pub(crate) struct Cycle {
    pub(crate) generation: u64,
    cows: Vec<SnapshotId>,
    /// A snapshot could not take its records: held writes must go on waiting.
    blocked: bool,
    error: Option<Error>,
}

impl Cycle {
    /// The COWs whose records this commit carries.
    pub(crate) fn targets(&self) -> Vec<Target> {
        self.cows.iter().map(|&id| Target::Cow(id)).collect()
    }
}

impl Volume {
    /// Starts a group commit: every snapshot's waiting records are taken for it (and the areas
    /// they fill zeroed); origin writes held until now wait for it. Until it finishes, writes go
    /// on (their records wait for the next commit, their data is held behind this one's).
    pub(crate) fn commit_begin(&mut self) -> Cycle {
        let generation = self.next_gen;
        self.next_gen += 1;
        self.committing = true;
        let (mut cows, mut blocked, mut error) = (Vec::new(), false, None);
        for (&id, s) in self.snapshots.iter_mut() {
            match s.stage() {
                Ok(true) => cows.push(id),
                Ok(false) => {}
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
            // Records left waiting (their commit failed, the store took them back) block the
            // release of the writes that depend on them.
            blocked |= !s.uncommitted.is_empty();
        }
        Cycle {
            generation,
            cows,
            blocked,
            error,
        }
    }

    /// The commit's metadata writes (its data flush is done).
    pub(crate) fn commit_write(&mut self, cycle: &mut Cycle) -> Result<()> {
        for id in &cycle.cows {
            if let Some(s) = self.snapshots.get_mut(id) {
                if let Err(e) = s.write_staged() {
                    let c = core::mem::replace(
                        cycle,
                        Cycle {
                            generation: cycle.generation,
                            cows: Vec::new(),
                            blocked: true,
                            error: None,
                        },
                    );
                    return Err(self.commit_abort(c, e));
                }
            }
        }
        Ok(())
    }

    /// The commit failed on the way: its records wait again (or their snapshot is invalidated),
    /// and so do the writes held for them. Returns `error`.
    pub(crate) fn commit_abort(&mut self, cycle: Cycle, error: Error) -> Error {
        for id in &cycle.cows {
            if let Some(s) = self.snapshots.get_mut(id) {
                s.abort_staged();
            }
        }
        self.committing = false;
        error
    }

    /// The commit's records are durable (its metadata writes were flushed): the origin writes
    /// that waited for it go to the origin device (not flushed).
    pub(crate) fn commit_finish(&mut self, cycle: Cycle) -> Result<()> {
        for id in &cycle.cows {
            if let Some(s) = self.snapshots.get_mut(id) {
                s.finish_staged();
            }
        }
        self.committing = false;
        if !cycle.blocked {
            let Volume {
                origin,
                held,
                origin_dirty,
                ..
            } = self;
            held.release(cycle.generation, |start, data| {
                *origin_dirty = true;
                device::write(&mut **origin, start, data)
            })?;
        }
        match cycle.error {
            Some(e) => Err(e),
            None if cycle.blocked => Err(Error::io("exceptions left uncommitted")),
            None => Ok(()),
        }
    }

    /// Flushes one device under the volume's lock (devices without a flush handle).
    pub(crate) fn flush_target(&mut self, t: Target) -> Result<()> {
        match t {
            Target::Origin => self.origin.flush(),
            Target::Cow(id) => match self.snapshots.get_mut(&id) {
                Some(s) => s.cow.flush(),
                None => Ok(()), // deleted: nothing depends on it
            },
        }
    }

    #[cfg(feature = "std")]
    /// The devices written since their last flush (origin data, snapshot writes), marked clean:
    /// a flush of all of them completes a durable flush. On failure, [`Volume::mark_dirty`].
    pub(crate) fn take_dirty(&mut self) -> Vec<Target> {
        let mut out = Vec::new();
        if core::mem::take(&mut self.origin_dirty) {
            out.push(Target::Origin);
        }
        for (&id, s) in self.snapshots.iter_mut() {
            if core::mem::take(&mut s.dirty) {
                out.push(Target::Cow(id));
            }
        }
        out
    }

    #[cfg(feature = "std")]
    /// Devices whose flush failed stay to be flushed.
    pub(crate) fn mark_dirty(&mut self, targets: &[Target]) {
        for t in targets {
            match t {
                Target::Origin => self.origin_dirty = true,
                Target::Cow(id) => {
                    if let Some(s) = self.snapshots.get_mut(id) {
                        s.dirty = true;
                    }
                }
            }
        }
    }

    /// A handle to flush `t` outside the volume's lock, if its device has one.
    #[cfg(feature = "std")]
    pub(crate) fn flush_handle(
        &self,
        t: Target,
    ) -> Option<std::sync::Arc<dyn device::FlushHandle>> {
        match t {
            Target::Origin => self.origin.flush_handle(),
            Target::Cow(id) => self.snapshots.get(&id)?.cow.flush_handle(),
        }
    }

    #[cfg(feature = "std")]
    /// The generation the next commit will have: a flush asked now is done once a durable
    /// commit of this generation (or a later one) is.
    pub(crate) fn next_generation(&self) -> u64 {
        self.next_gen
    }

    #[cfg(feature = "std")]
    /// True while a merge runs (origin writes then take another path).
    pub(crate) fn is_merging(&self) -> bool {
        self.merging().is_some()
    }

    /// Records waiting for a commit, over all snapshots.
    pub fn uncommitted(&self) -> usize {
        self.uncommitted_records()
    }

    /// The bound of [`Volume::set_commit_bytes`].
    pub fn commit_bytes(&self) -> usize {
        self.commit_bytes
    }
}

impl Drop for Volume {
    /// Writes held for a group commit reach their devices (not flushed): a volume dropped without
    /// [`Volume::flush`] loses no more than it would have without group commit, unless a device
    /// fails here, which nothing could report.
    fn drop(&mut self) {
        let _ = self.commit();
    }
}

/// Changed chunks: what an incremental backup has to read (lvmsync, `rbd export-diff`, `thin_delta`).
impl Volume {
    /// The origin chunks that may differ between snapshot `id` and the current origin, as sorted,
    /// disjoint ranges `(first chunk, count)` in the snapshot's chunk size: its exception keys,
    /// i.e. every chunk the origin wrote since the snapshot was taken, and every chunk written to
    /// the snapshot itself. Outside these ranges the snapshot reads exactly as the origin does.
    ///
    /// An invalid snapshot has lost its table (its answer would be "nothing changed", a lie) and a
    /// merging one loses records as the merge runs: both are refused.
    pub fn changed_chunks(&self, id: SnapshotId) -> Result<Vec<(u64, u64)>> {
        let s = self.snap(id)?;
        match s.state {
            SnapshotState::Invalid => return Err(Error::SnapshotInvalid),
            SnapshotState::Merging => return Err(Error::Merging),
            SnapshotState::Active | SnapshotState::Overflow => {}
        }
        let mut out: Vec<(u64, u64)> = Vec::new();
        // `runs` come in origin order but split at 256-chunk windows: join neighbours.
        for r in s.table.runs() {
            match out.last_mut() {
                Some((start, n)) if *start + *n == r.old => *n += r.len,
                _ => out.push((r.old, r.len)),
            }
        }
        Ok(out)
    }

    /// The byte ranges `(offset, len)` of the origin where snapshots `older` and `newer` may
    /// differ, sorted and disjoint, within the origin's length. A chunk unchanged in both
    /// snapshots' tables reads as the current origin in each, so the union of their exception
    /// keys (the older one's is most of it: what the origin wrote since it was taken) covers every
    /// difference. The two may have different chunk sizes; the order of the arguments does not
    /// change the answer.
    pub fn changed_between(&self, older: SnapshotId, newer: SnapshotId) -> Result<Vec<(u64, u64)>> {
        let (a, b) = (self.changed_bytes(older)?, self.changed_bytes(newer)?);
        // Both lists are sorted: merge them (no sort, which would cost the wasm build kilobytes).
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let next = if j == b.len() || (i < a.len() && a[i].0 <= b[j].0) {
                i += 1;
                a[i - 1]
            } else {
                j += 1;
                b[j - 1]
            };
            match out.last_mut() {
                Some((s, m)) if next.0 <= *s + *m => *m = (*m).max(next.0 + next.1 - *s),
                _ => out.push(next),
            }
        }
        Ok(out)
    }

    /// [`Volume::changed_chunks`] as byte ranges within the origin.
    fn changed_bytes(&self, id: SnapshotId) -> Result<Vec<(u64, u64)>> {
        let (len, cs) = (self.len(), self.snap(id)?.chunk().bytes());
        let mut out = Vec::new();
        for (c, n) in self.changed_chunks(id)? {
            let start = c.saturating_mul(cs).min(len);
            let end = c.saturating_add(n).saturating_mul(cs).min(len);
            if end > start {
                out.push((start, end - start));
            }
        }
        Ok(out)
    }
}
