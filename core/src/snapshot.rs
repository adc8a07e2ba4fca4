//! One snapshot: its COW device, exception store and table, and the per-snapshot halves of the
//! write path (preserving origin chunks, snapshot reads and writes).

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::chunk::{check_range, pieces, ChunkSize};
use crate::device::{self, BlockDevice, COPY_BUF};
use crate::error::{Error, Result};
use crate::exception::{Exception, ExceptionTable};
use crate::status::{SnapshotState, SnapshotStatus};
use crate::store::persistent::PersistentStore;
use crate::store::transient::TransientStore;
use crate::store::{ExceptionStore, StagedCommit, StoreKind};

/// What happens when a *snapshot write* finds the COW full (origin writes always invalidate).
/// The numbers are stable: the C ABI's `cowsnap_overflow_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(i32)]
pub enum OverflowMode {
    /// dm's `P` (what LVM uses): the snapshot is invalidated.
    #[default]
    Invalidate = 0,
    /// dm's `PO`: the snapshot enters `Overflow`; writes fail, reads still work.
    Report = 1,
}

/// LVM's `snapshot_autoextend_threshold` / `snapshot_autoextend_percent` for one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Autoextend {
    /// Grow when an allocation would take Data% past this (1–100; 100 disables).
    pub threshold_percent: u32,
    /// Grow by this percentage of the current COW size (≥ 1).
    pub extend_percent: u32,
}

impl Autoextend {
    /// Checks the numbers.
    pub fn validate(self) -> Result<Self> {
        if self.threshold_percent == 0 || self.threshold_percent > 100 {
            return Err(Error::InvalidArgument(
                "autoextend threshold must be 1..=100 percent",
            ));
        }
        if self.extend_percent == 0 {
            return Err(Error::InvalidArgument(
                "autoextend percent must be at least 1",
            ));
        }
        Ok(self)
    }

    /// The policy given as the pair of numbers the C and Python front ends take: `(0, 0)` is no
    /// policy, anything else must pass [`Autoextend::validate`].
    pub fn from_percents(threshold_percent: u32, extend_percent: u32) -> Result<Option<Self>> {
        match (threshold_percent, extend_percent) {
            (0, 0) => return Ok(None),
            (0, _) => {
                return Err(Error::InvalidArgument(
                    "autoextend percent is set but the threshold is 0 (0 and 0: no autoextend)",
                ))
            }
            _ => {}
        }
        let a = Autoextend {
            threshold_percent,
            extend_percent,
        };
        a.validate().map(Some)
    }

    /// False when the policy is switched off (threshold 100, as in lvm.conf).
    pub fn enabled(self) -> bool {
        self.threshold_percent < 100
    }

    /// True when having `allocated` of `total` sectors in use passes the threshold.
    pub fn exceeded(self, allocated: u64, total: u64) -> bool {
        allocated as u128 * 100 > self.threshold_percent as u128 * total as u128
    }

    /// The size a COW of `len` bytes grows to: by `extend_percent`, rounded up to whole chunks,
    /// and by at least one chunk.
    pub fn grown_len(self, len: u64, chunk: ChunkSize) -> u64 {
        let cb = chunk.bytes() as u128;
        let add = (len as u128 * self.extend_percent as u128).div_ceil(100);
        let add = add.max(cb).div_ceil(cb) * cb;
        u64::try_from(len as u128 + add).unwrap_or(u64::MAX)
    }
}

/// How to create a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotOptions {
    /// The unit of copy-on-write (`lvcreate --chunksize`).
    pub chunk_size: ChunkSize,
    /// Where the exception records live: on the COW device (`P`, `PO`) or in memory (`N`).
    pub store: StoreKind,
    /// What a snapshot write does when the COW is full (`P` invalidates, `PO` reports).
    pub overflow: OverflowMode,
    /// Grow the COW before it fills up (LVM's `snapshot_autoextend_*`); `None`: never.
    pub autoextend: Option<Autoextend>,
}

/// LVM's `SNAPSHOT_MIN_CHUNKS`: the smallest persistent COW `lvcreate -s` accepts holds the header,
/// the first metadata area and one data chunk. (The engine formats two chunks, but such a COW has no
/// room for any data: the first origin write would invalidate it.)
const MIN_PERSISTENT_CHUNKS: u64 = 3;

impl SnapshotOptions {
    /// The rules on the options themselves, applied by [`Volume::create_snapshot`] and
    /// [`Volume::activate_snapshot`] and so by every front end: dm's store types are `P`, `PO` and
    /// `N` — overflow mode [`OverflowMode::Report`] (`PO`) needs the persistent store — and the
    /// autoextend numbers must make sense ([`Autoextend::validate`]).
    ///
    /// [`Volume::create_snapshot`]: crate::Volume::create_snapshot
    /// [`Volume::activate_snapshot`]: crate::Volume::activate_snapshot
    pub fn validate(self) -> Result<Self> {
        if self.store == StoreKind::Transient && self.overflow == OverflowMode::Report {
            return Err(Error::InvalidArgument(
                "overflow mode report (dm's PO) needs a persistent store",
            ));
        }
        if let Some(a) = self.autoextend {
            a.validate()?;
        }
        Ok(self)
    }

    /// Smallest COW device the front ends create for these options: 3 chunks for a persistent store
    /// (LVM's minimum: header, metadata area, one data chunk), 1 for a transient one.
    pub fn min_cow_len(&self) -> u64 {
        let chunks = match self.store {
            StoreKind::Persistent => MIN_PERSISTENT_CHUNKS,
            StoreKind::Transient => 1,
        };
        chunks * self.chunk_size.bytes()
    }

    /// Why [`SnapshotOptions::min_cow_len`] is what it is, for front ends' messages.
    pub fn min_cow_reason(&self) -> &'static str {
        match self.store {
            StoreKind::Persistent => {
                "a persistent COW needs 3 chunks (header, metadata area, one data chunk)"
            }
            StoreKind::Transient => "a transient COW needs 1 chunk",
        }
    }

    /// The size rule for a new COW device, checked by every front end before it allocates or
    /// creates anything: 0 is `INVALID_ARGUMENT`, less than [`SnapshotOptions::min_cow_len`] is
    /// `NO_SPACE` ([`Error::CowTooSmall`], with the numbers), more than
    /// [`crate::limits::MAX_DEVICE_LEN`] is `INVALID_ARGUMENT`.
    pub fn check_cow_len(&self, len: u64) -> Result<()> {
        if len == 0 {
            return Err(Error::InvalidArgument("COW size is 0"));
        }
        if len < self.min_cow_len() {
            return Err(Error::CowTooSmall {
                len,
                min: self.min_cow_len(),
                chunk: self.chunk_size.bytes(),
                reason: self.min_cow_reason(),
            });
        }
        crate::limits::check_cow_growth(len)
    }
}

/// A snapshot of a volume's origin.
pub(crate) struct Snapshot {
    pub(crate) cow: Box<dyn BlockDevice>,
    pub(crate) store: Box<dyn ExceptionStore>,
    pub(crate) table: ExceptionTable,
    pub(crate) state: SnapshotState,
    overflow: OverflowMode,
    autoextend: Option<Autoextend>,
    /// Chunks to merge when the merge started.
    pub(crate) merge_total: u64,
    /// Written since the last flush (commits flush on their own; user data written after a commit
    /// and writes during a merge do not).
    pub(crate) dirty: bool,
    /// Group commit: records whose chunks are copied (and in `table`, so reads see them) but not
    /// yet committed to the store. Origin writes that depend on them are held by the volume until
    /// [`Snapshot::commit_deferred`] made them durable.
    pub(crate) uncommitted: Vec<Exception>,
    /// Where each origin write's records start in `uncommitted`: a group commit that would
    /// overflow keeps the writes before the one that overflows, as per-write commits would.
    uncommitted_writes: Vec<usize>,
    /// A group commit taken from `uncommitted` whose device I/O is under way (see
    /// [`Snapshot::stage`]); dropped if the snapshot is invalidated meanwhile.
    in_flight: Option<InFlight>,
    scratch: Vec<u8>,
    /// The COW was formatted by this volume ([`Volume::create_snapshot`]), not activated from
    /// disk: copies into it skip ranges that read as zeros on both sides
    /// ([`BlockDevice::known_zeros`]), as a sparse origin's holes copied into reserved COW space.
    /// A COW activated from disk (the kernel's, or one reused) is always written, whatever its
    /// device says.
    ///
    /// [`Volume::create_snapshot`]: crate::Volume::create_snapshot
    pub(crate) formatted_here: bool,
}

/// Records being committed in steps.
struct InFlight {
    records: Vec<Exception>,
    writes: Vec<usize>,
    staged: StagedCommit,
    /// A metadata write was started.
    written: bool,
}

/// How a commit ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Committed {
    Yes,
    /// The COW had no room for the records' metadata: the snapshot is now invalid.
    Overflowed,
}

/// With zeros skipped, data is copied in pieces of at most this, each after a look for zeros (a
/// hole after data is found within this many bytes).
const ZERO_PROBE: u64 = 256 * 1024;

/// What went wrong in a copy: reading the source or writing the destination.
enum CopyError {
    Read(Error),
    Write(Error),
}

impl Snapshot {
    /// A new snapshot on `cow` (formatted fresh for a persistent store, as `lvcreate -s` does).
    pub(crate) fn create(mut cow: Box<dyn BlockDevice>, opts: SnapshotOptions) -> Result<Self> {
        let autoextend = opts.validate()?.autoextend;
        let store: Box<dyn ExceptionStore> = match opts.store {
            StoreKind::Persistent => Box::new(PersistentStore::create(&mut *cow, opts.chunk_size)?),
            StoreKind::Transient => {
                if cow.len() < opts.chunk_size.bytes() {
                    return Err(Error::NoSpace);
                }
                Box::new(TransientStore::new(opts.chunk_size))
            }
        };
        Ok(Self::assemble(
            cow,
            store,
            ExceptionTable::new(),
            SnapshotState::Active,
            opts.overflow,
            autoextend,
        ))
    }

    /// Activates an existing persistent COW (a zero magic is refused: only `create` formats).
    pub(crate) fn activate(
        cow: Box<dyn BlockDevice>,
        opts: SnapshotOptions,
        origin_len: u64,
    ) -> Result<Self> {
        if opts.store == StoreKind::Transient {
            return Self::create(cow, opts);
        }
        let autoextend = opts.validate()?.autoextend;
        let mut table = ExceptionTable::new();
        let store =
            PersistentStore::open(&*cow, |c: ChunkSize| c.chunks_in(origin_len), &mut table)?;
        let state = if store.is_valid() {
            SnapshotState::Active
        } else {
            SnapshotState::Invalid
        };
        Ok(Self::assemble(
            cow,
            Box::new(store),
            table,
            state,
            opts.overflow,
            autoextend,
        ))
    }

    fn assemble(
        cow: Box<dyn BlockDevice>,
        store: Box<dyn ExceptionStore>,
        table: ExceptionTable,
        state: SnapshotState,
        overflow: OverflowMode,
        autoextend: Option<Autoextend>,
    ) -> Self {
        Snapshot {
            cow,
            store,
            table,
            state,
            overflow,
            autoextend,
            merge_total: 0,
            dirty: false,
            uncommitted: Vec::new(),
            uncommitted_writes: Vec::new(),
            in_flight: None,
            scratch: Vec::new(),
            formatted_here: false,
        }
    }

    /// Chunks merged since the merge started.
    pub(crate) fn merged_chunks(&self) -> u64 {
        self.merge_total - self.table.len().min(self.merge_total)
    }

    pub(crate) fn chunk(&self) -> ChunkSize {
        self.store.chunk_size()
    }

    pub(crate) fn set_autoextend(&mut self, policy: Option<Autoextend>) -> Result<()> {
        self.autoextend = policy.map(Autoextend::validate).transpose()?;
        Ok(())
    }

    pub(crate) fn status(&self) -> SnapshotStatus {
        let u = self
            .store
            .usage(self.cow.len(), self.uncommitted.len() as u64);
        SnapshotStatus {
            state: self.state,
            store: self.store.kind(),
            overflow_reporting: self.overflow == OverflowMode::Report,
            chunk_bytes: self.chunk().bytes(),
            sectors_allocated: u.allocated_sectors,
            total_sectors: u.total_sectors,
            metadata_sectors: u.metadata_sectors,
            exceptions: self.table.len(),
            merge_progress: (self.state == SnapshotState::Merging)
                .then(|| (self.merged_chunks(), self.merge_total)),
        }
    }

    /// Reserves a COW chunk, growing the COW first when the autoextend policy asks for it.
    /// `Ok(None)`: the COW is full (the overflow rules apply). `Err`: the COW is full because it
    /// could not grow for a reason of the host's (no space, I/O error): that is not an overflow of
    /// the snapshot, so the caller refuses its write instead of invalidating.
    fn allocate(&mut self) -> Result<Option<u64>> {
        let mut grow_error = None;
        if let Some(p) = self.autoextend.filter(|p| p.enabled()) {
            let cs = self.chunk();
            loop {
                let u = self
                    .store
                    .usage(self.cow.len(), self.uncommitted.len() as u64);
                if !p.exceeded(u.allocated_sectors + cs.sectors(), u.total_sectors) {
                    break;
                }
                let before = self.cow.len();
                let grown = p.grown_len(before, cs);
                match self.cow.set_len(grown) {
                    Err(Error::Unsupported(_)) => break, // a fixed device: overflow rules
                    Err(e) => {
                        grow_error = Some(e);
                        break;
                    }
                    Ok(()) if self.cow.len() <= before => break,
                    Ok(()) => {}
                }
            }
        }
        match (self.store.prepare(self.cow.len()), grow_error) {
            (Some(c), _) => Ok(Some(c)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(None),
        }
    }

    /// Invalidates the snapshot for good. Fails only when the invalidation could not be made durable.
    pub(crate) fn invalidate(&mut self) -> Result<()> {
        self.state = SnapshotState::Invalid;
        self.table.clear();
        self.uncommitted.clear();
        self.uncommitted_writes.clear();
        self.in_flight = None;
        self.store.invalidate(&mut *self.cow)
    }

    /// Copies byte ranges between devices in bounded steps: `(src_off, dst_off, len)` triples.
    ///
    /// With `skip_zeros`, a range that both devices know to read as zeros
    /// ([`BlockDevice::known_zeros`]) is left alone: writing it would change nothing, and the
    /// destination's next flush makes its content (those zeros included) durable as it would
    /// have made the copy. This turns a sparse origin's holes into records without data I/O.
    fn copy(
        scratch: &mut Vec<u8>,
        src: &dyn BlockDevice,
        dst: &mut dyn BlockDevice,
        runs: impl Iterator<Item = (u64, u64, u64)>,
        skip_zeros: bool,
    ) -> core::result::Result<(), CopyError> {
        for (s, d, len) in runs {
            let mut done = 0;
            while done < len {
                let n = (len - done).min(COPY_BUF);
                if skip_zeros {
                    let z = match src.known_zeros(s + done, n) {
                        0 => 0,
                        z => dst.known_zeros(d + done, z).min(z),
                    };
                    if z > 0 {
                        done += z;
                        continue;
                    }
                }
                // Data here: copied up to the next look for zeros (a hole may follow it).
                let n = if skip_zeros { n.min(ZERO_PROBE) } else { n } as usize;
                // Between two files the kernel copies (one memory copy instead of two, and
                // none on a file system that shares the blocks); what it does not copy, and
                // its errors, go the way below.
                #[cfg(feature = "std")]
                {
                    let k = device::kernel_copy(src, s + done, &*dst, d + done, n as u64);
                    if k > 0 {
                        done += k;
                        continue;
                    }
                }
                if scratch.len() < n {
                    scratch.resize(n, 0);
                }
                let buf = &mut scratch[..n];
                device::read(src, s + done, buf).map_err(CopyError::Read)?;
                device::write(dst, d + done, buf).map_err(CopyError::Write)?;
                done += n as u64;
            }
        }
        Ok(())
    }

    /// Byte runs `(origin_off, cow_off, len)` for `records`, coalescing consecutive chunks and clipping
    /// at the end of the origin (a short last chunk copies only what exists, like the kernel).
    fn record_runs(
        chunk: ChunkSize,
        origin_len: u64,
        records: &[Exception],
    ) -> Vec<(u64, u64, u64)> {
        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        for e in records {
            let o = chunk.offset_of(e.old);
            let len = chunk.bytes().min(origin_len.saturating_sub(o));
            if len == 0 {
                continue;
            }
            let d = chunk.offset_of(e.new);
            match runs.last_mut() {
                Some(r) if r.0 + r.2 == o && r.1 + r.2 == d => r.2 += len,
                _ => runs.push((o, d, len)),
            }
        }
        runs
    }

    /// True when an origin write to `[offset, offset+len)` would make this snapshot copy a chunk.
    pub(crate) fn needs_copy(&self, offset: u64, len: u64) -> bool {
        if !matches!(self.state, SnapshotState::Active | SnapshotState::Overflow) || len == 0 {
            return false;
        }
        let cs = self.chunk();
        let (mut c, last) = (cs.chunk_of(offset), cs.chunk_of(offset + len - 1));
        while c <= last {
            match self.table.run_from(c) {
                Some((_, run)) => c += run,
                None => return true,
            }
        }
        false
    }

    /// The byte range of whole chunks that an origin write to `[offset, offset+len)` touches.
    pub(crate) fn chunk_span(&self, offset: u64, len: u64) -> (u64, u64) {
        let cs = self.chunk();
        let start = cs.offset_of(cs.chunk_of(offset));
        let end = (cs.chunk_of(offset + len - 1) + 1).saturating_mul(cs.bytes());
        (start, end)
    }

    /// Before an origin write to `[offset, offset+len)`: copies every chunk of that range that this
    /// snapshot has not preserved yet into the COW, and commits the records.
    ///
    /// A full COW invalidates the snapshot (dm-snapshot's overflow) and the origin write may
    /// proceed. Any error means the origin write must not proceed: the origin could not be read,
    /// the COW device failed (the snapshot stays valid, or is invalidated when its store could not
    /// take the records back), or the invalidation could not be made durable.
    ///
    /// With `defer` (group commit), the records are not committed here: they join `uncommitted`
    /// (and the table), and the caller holds its origin write until [`Snapshot::commit_deferred`].
    pub(crate) fn preserve(
        &mut self,
        origin: &dyn BlockDevice,
        offset: u64,
        len: u64,
        defer: bool,
    ) -> Result<()> {
        if !matches!(self.state, SnapshotState::Active | SnapshotState::Overflow) || len == 0 {
            return Ok(());
        }
        let cs = self.chunk();
        let (first, last) = (cs.chunk_of(offset), cs.chunk_of(offset + len - 1));
        let mut pending = Vec::new();
        let mut c = first;
        while c <= last {
            if let Some((_, run)) = self.table.run_from(c) {
                c += run;
                continue;
            }
            match self.allocate() {
                Ok(Some(new)) => pending.push(Exception { old: c, new }),
                Ok(None) => {
                    // Overflow. Records copied earlier go out first, as the kernel (which
                    // committed each as it went) would have them on disk under the invalid header.
                    // (With a commit of this snapshot in flight the order cannot be kept: the
                    // snapshot is invalid either way.)
                    if crate::volume::GROUP_COMMIT && self.in_flight.is_none() {
                        let _ = self.commit_deferred();
                    }
                    return self.invalidate();
                }
                Err(e) => return Err(self.release(&pending, e)),
            }
            c += 1;
        }
        if pending.is_empty() {
            return Ok(());
        }
        let runs = Self::record_runs(cs, origin.len(), &pending);
        // A failing COW device refuses the origin write and leaves the snapshot as it was.
        let zeros = self.formatted_here;
        match Self::copy(
            &mut self.scratch,
            origin,
            &mut *self.cow,
            runs.into_iter(),
            zeros,
        ) {
            Ok(()) => {}
            Err(CopyError::Read(e)) | Err(CopyError::Write(e)) => {
                return Err(self.release(&pending, e))
            }
        }
        if defer {
            for e in &pending {
                self.table.insert(e.old, e.new);
            }
            self.uncommitted_writes.push(self.uncommitted.len());
            self.uncommitted.extend_from_slice(&pending);
            return Ok(());
        }
        if self.commit(&pending, true)? == Committed::Overflowed {
            return Ok(());
        }
        for e in &pending {
            self.table.insert(e.old, e.new);
        }
        Ok(())
    }

    /// Group commit: makes the records copied under `defer` durable (one data flush, the area
    /// writes, one flush for all of them). On a failure the store took them back, they stay
    /// uncommitted and the next call retries; or the snapshot was invalidated and they are gone.
    /// Either way the error is returned.
    pub(crate) fn commit_deferred(&mut self) -> Result<()> {
        if self.in_flight.is_some() {
            return Err(Error::io("a commit of this snapshot is already under way"));
        }
        if !self.stage()? {
            return Ok(());
        }
        let r = self
            .cow
            .flush()
            .and_then(|()| self.write_staged())
            .and_then(|()| self.cow.flush());
        match r {
            Ok(()) => {
                self.finish_staged();
                Ok(())
            }
            Err(e) => {
                self.abort_staged();
                Err(e)
            }
        }
    }

    /// First step of a group commit: takes every uncommitted record for one commit, zeroes the
    /// metadata areas it will fill, and leaves the rest of its I/O to the caller: flush the COW
    /// (the records' data), [`Snapshot::write_staged`], flush again, [`Snapshot::finish_staged`]
    /// (or [`Snapshot::abort_staged`] on a failure). True when such a commit is under way; false
    /// when there was nothing to commit or it was done here (a store that cannot stage, or the
    /// records that still fit before an overflow).
    pub(crate) fn stage(&mut self) -> Result<bool> {
        if self.uncommitted.is_empty() || self.in_flight.is_some() {
            return Ok(false);
        }
        let capacity = self.store.commit_capacity(self.cow.len());
        if self.uncommitted.len() as u64 > capacity {
            // The metadata would run past the COW: the write whose records cross that point
            // overflows the snapshot. Those before it are committed first, so the COW ends as
            // the kernel's (committing each write on its own) would.
            let cut = self
                .uncommitted_writes
                .iter()
                .rev()
                .find(|&&start| start as u64 <= capacity)
                .copied()
                .unwrap_or(0);
            self.uncommitted.truncate(cut);
            self.uncommitted_writes.retain(|&s| s < cut);
            if !self.uncommitted.is_empty() {
                self.commit_deferred()?;
            }
            self.invalidate()?;
            return Ok(false);
        }
        let records = core::mem::take(&mut self.uncommitted);
        let writes = core::mem::take(&mut self.uncommitted_writes);
        #[cfg(feature = "std")]
        let staged = self.store.stage(&records);
        #[cfg(not(feature = "std"))]
        let staged: Option<StagedCommit> = None;
        let Some(staged) = staged else {
            return match self.commit(&records, false) {
                // committed, or overflowed (invalidated: nothing depends on it now)
                Ok(_) => Ok(false),
                Err(e) => {
                    self.restore(records, writes);
                    Err(e)
                }
            };
        };
        let chunk = self.chunk().bytes();
        for &at in &staged.zero {
            if let Err(e) = device::write_zeros(&mut *self.cow, at, chunk) {
                self.in_flight = Some(InFlight {
                    records,
                    writes,
                    staged,
                    written: false,
                });
                self.abort_staged();
                return Err(e);
            }
        }
        self.in_flight = Some(InFlight {
            records,
            writes,
            staged,
            written: false,
        });
        Ok(true)
    }

    /// The metadata writes of the staged commit (its data must be durable already).
    pub(crate) fn write_staged(&mut self) -> Result<()> {
        let Some(f) = self.in_flight.as_mut() else {
            return Ok(()); // invalidated meanwhile
        };
        f.written = true;
        for (at, buf) in &f.staged.writes {
            device::write(&mut *self.cow, *at, buf)?;
        }
        Ok(())
    }

    /// The staged commit's records are durable (its metadata writes were flushed).
    pub(crate) fn finish_staged(&mut self) {
        self.in_flight = None;
    }

    /// The staged commit failed: its records wait again (before any taken since), or the
    /// snapshot is invalidated when its store cannot go back.
    pub(crate) fn abort_staged(&mut self) {
        let Some(f) = self.in_flight.take() else {
            return;
        };
        #[cfg(feature = "std")]
        let undone = self.store.unstage(f.staged, f.written, &mut *self.cow);
        #[cfg(not(feature = "std"))]
        let undone = false;
        if undone {
            self.restore(f.records, f.writes);
        } else {
            let _ = self.invalidate();
        }
    }

    /// Puts records taken for a commit back in front of those that came since.
    fn restore(&mut self, mut records: Vec<Exception>, mut writes: Vec<usize>) {
        let n = records.len();
        records.append(&mut self.uncommitted);
        writes.extend(self.uncommitted_writes.drain(..).map(|i| i + n));
        self.uncommitted = records;
        self.uncommitted_writes = writes;
    }

    /// Gives back the chunks of `records` (allocated in order, named by nothing on the device)
    /// after a failure, and returns the failure's error.
    fn release(&mut self, records: &[Exception], error: Error) -> Error {
        if let Some(first) = records.first() {
            self.store.unprepare(first.new);
        }
        error
    }

    /// Commits `records` to the store. A commit that runs past the end of the COW (the next
    /// metadata area does not fit) is an overflow, as in the kernel: the snapshot is invalidated
    /// and `Overflowed` returned. Any other failure is the device's: the error is returned, and
    /// the snapshot is invalidated only when its store could not take the records back.
    /// With `release`, chunks of records taken back are handed out again (callers whose records
    /// are not in the table yet).
    fn commit(&mut self, records: &[Exception], release: bool) -> Result<Committed> {
        match self.store.commit(&mut *self.cow, records) {
            Ok(()) => Ok(Committed::Yes),
            Err(f) if matches!(f.error, Error::OutOfRange { .. }) => {
                self.invalidate()?;
                Ok(Committed::Overflowed)
            }
            Err(f) if release && f.undone && f.reusable => Err(self.release(records, f.error)),
            Err(f) if f.undone => Err(f.error),
            Err(f) => {
                self.invalidate()?;
                Err(f.error)
            }
        }
    }

    /// Reads the snapshot's view: COW chunks where an exception exists, the origin elsewhere.
    pub(crate) fn read(&self, origin: &dyn BlockDevice, offset: u64, buf: &mut [u8]) -> Result<()> {
        if self.state == SnapshotState::Invalid {
            return Err(Error::SnapshotInvalid);
        }
        self.read_view(origin, offset, buf)
    }

    /// The snapshot's view without the validity check (also the origin's view during a merge).
    pub(crate) fn read_view(
        &self,
        origin: &dyn BlockDevice,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        check_range(offset, buf.len(), origin.len())?;
        let cs = self.chunk();
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let c = cs.chunk_of(pos);
            let in_chunk = pos - cs.offset_of(c);
            let at = (pos - offset) as usize;
            if let Some((new, run)) = self.table.run_from(c) {
                let n = (cs.offset_of(run) - in_chunk).min(end - pos);
                let dst = &mut buf[at..at + n as usize];
                device::read(&*self.cow, cs.offset_of(new) + in_chunk, dst)?;
                pos += n;
            } else {
                let stop = self
                    .table
                    .next_mapped(c, cs.chunks_in(end))
                    .map_or(end, |m| cs.offset_of(m).min(end));
                let dst = &mut buf[at..at + (stop - pos) as usize];
                device::read(origin, pos, dst)?;
                pos = stop;
            }
        }
        Ok(())
    }

    /// Writes to the snapshot itself (snapshots are writable, as with LVM).
    pub(crate) fn write(
        &mut self,
        origin: &dyn BlockDevice,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        match self.state {
            SnapshotState::Invalid => return Err(Error::SnapshotInvalid),
            SnapshotState::Overflow => return Err(Error::SnapshotOverflow),
            SnapshotState::Merging => return Err(Error::Merging),
            SnapshotState::Active => {}
        }
        let origin_len = origin.len();
        check_range(offset, data.len(), origin_len)?;
        let cs = self.chunk();
        // Phase 1: reserve COW chunks for every chunk without an exception, until the COW is full.
        let mut pending: Vec<(Exception, bool, usize, usize)> = Vec::new(); // (exception, whole-chunk write?, at, n)
        let mut stop = data.len(); // bytes of `data` that can be written
        for (c, in_chunk, at, n) in pieces(cs, offset, data.len()) {
            if self.table.lookup(c).is_some() {
                continue;
            }
            let next = match self.allocate() {
                Ok(next) => next,
                Err(e) => {
                    let mine: Vec<Exception> = pending.iter().map(|p| p.0).collect();
                    return Err(self.release(&mine, e));
                }
            };
            match next {
                Some(new) => {
                    let chunk_len = cs.bytes().min(origin_len - cs.offset_of(c));
                    let whole = in_chunk == 0 && n as u64 == chunk_len;
                    pending.push((Exception { old: c, new }, whole, at, n));
                }
                None => {
                    stop = at;
                    break;
                }
            }
        }
        // Phase 2: fill the new chunks — whole-chunk writes are their own copy; partial ones copy
        // the origin chunk first — then commit.
        let copies: Vec<Exception> = pending.iter().filter(|p| !p.1).map(|p| p.0).collect();
        let runs = Self::record_runs(cs, origin_len, &copies);
        let zeros = self.formatted_here;
        let mut result = match Self::copy(
            &mut self.scratch,
            origin,
            &mut *self.cow,
            runs.into_iter(),
            zeros,
        ) {
            Ok(()) => Ok(()),
            Err(CopyError::Read(e)) => Err(e),
            Err(CopyError::Write(e)) => Err(e),
        };
        if result.is_ok() {
            for &(e, whole, at, n) in &pending {
                if whole {
                    if let Err(err) =
                        device::write(&mut *self.cow, cs.offset_of(e.new), &data[at..at + n])
                    {
                        result = Err(err);
                        break;
                    }
                }
            }
        }
        // As for origin writes: a failing COW device refuses the write, the snapshot stays as it was.
        let records: Vec<Exception> = pending.iter().map(|p| p.0).collect();
        if let Err(e) = result {
            return Err(self.release(&records, e));
        }
        if self.commit(&records, true)? == Committed::Overflowed {
            return Err(Error::SnapshotInvalid);
        }
        for e in &records {
            self.table.insert(e.old, e.new);
        }
        // Phase 3: the remaining pieces go to their (now existing) COW chunks.
        let mut whole_done = pending.iter().filter(|p| p.1).map(|p| p.0.old).peekable();
        for (c, in_chunk, at, n) in pieces(cs, offset, stop) {
            if whole_done.peek() == Some(&c) {
                whole_done.next();
                continue;
            }
            let new = self
                .table
                .lookup(c)
                .ok_or_else(|| Error::corrupt("exception vanished during a snapshot write"))?;
            self.dirty = true;
            device::write(
                &mut *self.cow,
                cs.offset_of(new) + in_chunk as u64,
                &data[at..at + n],
            )?;
        }
        if stop < data.len() {
            return match self.overflow {
                OverflowMode::Report => {
                    self.state = SnapshotState::Overflow;
                    Err(Error::SnapshotOverflow)
                }
                OverflowMode::Invalidate => {
                    self.invalidate()?;
                    Err(Error::SnapshotInvalid)
                }
            };
        }
        Ok(())
    }

    /// Grows the COW device (like `lvextend` on a snapshot).
    pub(crate) fn extend(&mut self, new_len: u64) -> Result<()> {
        if new_len < self.cow.len() {
            return Err(Error::InvalidArgument("a COW device cannot shrink"));
        }
        self.cow.set_len(new_len)
    }

    /// The records to merge next (the newest, at most `max`, one area), or none when done.
    pub(crate) fn merge_next(&mut self, max: usize) -> Result<Vec<Exception>> {
        self.store.merge_prepare(&*self.cow, max)
    }

    /// Byte ranges `(origin offset, len)` of `records`' origin chunks in the order the kernel's
    /// merge would reach them: trailing runs (consecutive in origin and COW chunk), newest first.
    /// Other snapshots copy in this order, so their COWs end byte for byte as the kernel's.
    pub(crate) fn origin_ranges(&self, records: &[Exception], origin_len: u64) -> Vec<(u64, u64)> {
        let cs = self.chunk();
        let mut out = Vec::new();
        let mut end = records.len();
        while end > 0 {
            let last = records[end - 1];
            let mut n = 1;
            while n < end {
                let e = records[end - 1 - n];
                if e.old + n as u64 != last.old || e.new + n as u64 != last.new {
                    break;
                }
                n += 1;
            }
            let first = last.old + 1 - n as u64;
            let start = cs.offset_of(first);
            let stop = (last.old + 1).saturating_mul(cs.bytes()).min(origin_len);
            if start < stop {
                out.push((start, stop - start));
            }
            end -= n;
        }
        out
    }

    /// Copies merged records' chunks from the COW back over the origin, then flushes the origin
    /// once for all of them.
    pub(crate) fn merge_copy(
        &mut self,
        origin: &mut dyn BlockDevice,
        records: &[Exception],
    ) -> Result<()> {
        // Area order: allocation order, mostly ascending, so runs still coalesce (and no sort
        // routine lands in the small wasm build).
        let runs = Self::record_runs(self.chunk(), origin.len(), records);
        #[cfg(feature = "std")]
        self.merge_copy_runs(origin, &runs)?;
        // The small build merges one run per step: nothing to gather (wasm size budget).
        #[cfg(not(feature = "std"))]
        match Self::copy(
            &mut self.scratch,
            &*self.cow,
            origin,
            runs.into_iter().map(|(o, c, l)| (c, o, l)),
            false,
        ) {
            Ok(()) => {}
            Err(CopyError::Read(e)) | Err(CopyError::Write(e)) => return Err(e),
        }
        origin.flush()
    }

    /// COW → origin for `runs` `(origin offset, COW offset, len)`. Records allocated one after the
    /// other sit side by side in the COW even when their origin chunks are scattered: such
    /// neighbours are read with one call (up to `COPY_BUF`), then written piece by piece to their
    /// origin offsets.
    #[cfg(feature = "std")]
    fn merge_copy_runs(
        &mut self,
        origin: &mut dyn BlockDevice,
        runs: &[(u64, u64, u64)],
    ) -> Result<()> {
        let mut i = 0;
        while i < runs.len() {
            let (o, c, len) = runs[i];
            if len >= COPY_BUF {
                // Piece by piece, each handed to write-back as soon as it is written, so the
                // step's origin flush finds most of the step's bytes already on their way.
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(COPY_BUF);
                    let one = core::iter::once((c + done, o + done, n));
                    match Self::copy(&mut self.scratch, &*self.cow, origin, one, false) {
                        Ok(()) => {}
                        Err(CopyError::Read(e)) | Err(CopyError::Write(e)) => return Err(e),
                    }
                    origin.write_behind(o + done, n);
                    done += n;
                }
                i += 1;
                continue;
            }
            let mut j = i + 1;
            let mut span = len;
            while j < runs.len() && runs[j].1 == c + span && span + runs[j].2 <= COPY_BUF {
                span += runs[j].2;
                j += 1;
            }
            if self.scratch.len() < span as usize {
                self.scratch.resize(span as usize, 0);
            }
            let buf = &mut self.scratch[..span as usize];
            device::read(&*self.cow, c, buf)?;
            let (mut lo, mut hi) = (u64::MAX, 0);
            for &(o, rc, l) in &runs[i..j] {
                let at = (rc - c) as usize;
                device::write(origin, o, &buf[at..at + l as usize])?;
                (lo, hi) = (lo.min(o), hi.max(o + l));
            }
            // One hint for gathered pieces that lie close together on the origin (not one system
            // call per chunk). Scattered ones are left to the step's flush, which sorts them:
            // writing them back piece by piece measured slower than one flush of them all.
            if hi - lo <= 2 * span {
                origin.write_behind(lo, hi - lo);
            }
            i = j;
        }
        Ok(())
    }

    /// After merged records' chunks are on the origin: drops them durably and from the table.
    pub(crate) fn merge_commit(&mut self, records: &[Exception]) -> Result<()> {
        self.store
            .merge_commit(&mut *self.cow, records.len() as u64)?;
        for e in records.iter().rev() {
            self.table.remove(e.old);
        }
        Ok(())
    }
}
