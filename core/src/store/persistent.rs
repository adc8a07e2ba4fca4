//! The persistent store (`P`, `PO`): byte-compatible with the Linux kernel's dm-snap-persistent.
//!
//! Layout (all little-endian): chunk 0 is the header (`magic`, `valid`, `version`, `chunk_size` in
//! sectors); metadata area `a` sits at chunk `1 + a·(epa+1)` and holds `epa = chunk_bytes/16` records
//! `(old_chunk: u64, new_chunk: u64)`, followed by the `epa` data chunks it describes. A record with
//! `new_chunk == 0` ends the list. See `shared/spec/dm-snapshot.md`.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use super::{CommitFailure, ExceptionStore, StoreKind, Usage};
#[cfg(feature = "std")]
use super::{StagedCommit, Undo};
use crate::chunk::{ChunkSize, SECTOR_SIZE};
use crate::device::{self, BlockDevice};
use crate::error::{Error, Result};
use crate::exception::{Exception, ExceptionTable, Sorter, MAX_COW_CHUNKS};
use crate::status::{SnapshotState, SnapshotStatus};

mod areas;
use areas::Areas;

/// Header magic, "SnAp" on disk.
pub const SNAP_MAGIC: u32 = 0x7041_6E53;
/// The only on-disk version that exists.
pub const DISK_VERSION: u32 = 1;
/// Size of one exception record.
pub const EXCEPTION_RECORD_BYTES: u64 = 16;
/// Bytes of the header that carry meaning.
pub const HEADER_BYTES: usize = 16;

/// Largest piece of a metadata area read or written in one call (areas can be 1 GiB in theory).
const AREA_IO: u64 = 64 * 1024;

/// The header fields of chunk 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// [`SNAP_MAGIC`] for a store; 0 for a device never formatted (or wiped).
    pub magic: u32,
    /// 1 while the snapshot is valid; 0 once invalidated (overflow or I/O error), for good.
    pub valid: u32,
    /// [`DISK_VERSION`].
    pub version: u32,
    /// Chunk size in 512-byte sectors.
    pub chunk_sectors: u32,
}

impl Header {
    /// A fresh, valid header.
    pub fn new(chunk: ChunkSize) -> Self {
        Header {
            magic: SNAP_MAGIC,
            valid: 1,
            version: DISK_VERSION,
            chunk_sectors: chunk.sectors() as u32,
        }
    }

    /// Parses the first 16 bytes of a COW device.
    pub fn parse(b: &[u8; HEADER_BYTES]) -> Self {
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            magic: u(0),
            valid: u(4),
            version: u(8),
            chunk_sectors: u(12),
        }
    }

    /// The 16 on-disk bytes.
    pub fn to_bytes(self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..4].copy_from_slice(&self.magic.to_le_bytes());
        b[4..8].copy_from_slice(&self.valid.to_le_bytes());
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.chunk_sectors.to_le_bytes());
        b
    }

    /// Reads the header of `cow`.
    pub fn read(cow: &dyn BlockDevice) -> Result<Self> {
        let mut b = [0u8; HEADER_BYTES];
        device::read(cow, 0, &mut b).map_err(|e| match e {
            Error::OutOfRange { .. } => Error::corrupt("COW device is smaller than a header"),
            e => e,
        })?;
        Ok(Header::parse(&b))
    }

    /// Checks magic and version and returns the chunk size (`None` for a new, all-zero-magic store).
    pub fn validate(&self) -> Result<Option<ChunkSize>> {
        if self.magic == 0 {
            return Ok(None);
        }
        if self.magic != SNAP_MAGIC {
            return Err(Error::corrupt(format!(
                "bad magic {:#010x} (expected {:#010x} \"SnAp\")",
                self.magic, SNAP_MAGIC
            )));
        }
        if self.version != DISK_VERSION {
            return Err(Error::corrupt(format!(
                "unsupported on-disk version {} (only {} exists)",
                self.version, DISK_VERSION
            )));
        }
        ChunkSize::from_disk_sectors(self.chunk_sectors).map(Some)
    }
}

/// Where things are in a persistent COW of a given chunk size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// The store's chunk size, which fixes everything else.
    pub chunk: ChunkSize,
}

impl Geometry {
    /// Records per metadata area.
    pub fn exceptions_per_area(self) -> u64 {
        self.chunk.bytes() / EXCEPTION_RECORD_BYTES
    }

    /// COW chunk of metadata area `area`.
    pub fn area_location(self, area: u64) -> u64 {
        1 + area * (self.exceptions_per_area() + 1)
    }

    /// True when COW chunk `chunk` is the header or a metadata area.
    pub fn is_metadata_chunk(self, chunk: u64) -> bool {
        chunk == 0 || chunk % (self.exceptions_per_area() + 1) == 1
    }
}

/// What reading an existing COW device found (for inspection tools).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The header as read.
    pub header: Header,
    /// The chunk size the header gives.
    pub chunk: ChunkSize,
    /// Records in on-disk order (empty when the store is invalid; filled by [`inspect`] only:
    /// activation keeps just the table).
    pub records: Vec<Exception>,
    /// Number of exception records.
    pub exceptions: u64,
    /// Number of metadata areas read.
    pub areas: u64,
    /// Records of the last (current) area.
    pub last_area: Vec<Exception>,
    /// Largest COW chunk named by a record (1 when there is none).
    pub max_new: u64,
}

/// A persistent exception store, open on a COW device.
#[derive(Debug)]
pub(crate) struct PersistentStore {
    geo: Geometry,
    valid: bool,
    next_free: u64,
    current_area: u64,
    /// Records of the current area, in order.
    area: Vec<Exception>,
    /// How many records of the current area are (possibly) non-zero on disk, so that records cleared
    /// by a merge are written back as zeros.
    area_on_disk: usize,
    /// Set when an area write was started (so records may be on the device, even if it failed).
    area_written: bool,
    /// During a merge: full areas under the current one already read, by area number (areas
    /// under the current one change only through the merge, which keeps this up to date).
    below: Vec<(u64, Vec<Exception>)>,
    /// Set after a failed merge commit: the next one writes whole areas (see `merge_commit`).
    merge_rewrite: bool,
}

impl PersistentStore {
    /// Formats `cow` as a new store (as `lvcreate -s` + first activation do): header, zeroed area 0.
    pub fn create(cow: &mut dyn BlockDevice, chunk: ChunkSize) -> Result<Self> {
        let geo = Geometry { chunk };
        if cow.len() < 2 * chunk.bytes() {
            return Err(Error::NoSpace);
        }
        let mut hdr = vec![0u8; (chunk.bytes().min(AREA_IO)) as usize];
        hdr[..HEADER_BYTES].copy_from_slice(&Header::new(chunk).to_bytes());
        device::write(cow, 0, &hdr)?;
        if chunk.bytes() > AREA_IO {
            device::write_zeros(cow, AREA_IO, chunk.bytes() - AREA_IO)?;
        }
        device::write_zeros(cow, chunk.offset_of(geo.area_location(0)), chunk.bytes())?;
        cow.flush()?;
        Ok(Self::empty(geo))
    }

    fn empty(geo: Geometry) -> Self {
        PersistentStore {
            geo,
            valid: true,
            next_free: 2,
            current_area: 0,
            area: Vec::new(),
            area_on_disk: 0,
            area_written: false,
            below: Vec::new(),
            merge_rewrite: false,
        }
    }

    /// Activates an existing store as the kernel loads a table: header and areas are read and every
    /// record goes into `table`. A zero magic (which the kernel formats) is refused: see
    /// [`crate::Volume::activate_snapshot`].
    /// `origin_chunks` bounds `old_chunk` (records beyond the origin are corruption).
    pub fn open(
        cow: &dyn BlockDevice,
        origin_chunks_of: impl Fn(ChunkSize) -> u64,
        table: &mut ExceptionTable,
    ) -> Result<Self> {
        let header = Header::read(cow)?;
        let Some(disk_chunk) = header.validate()? else {
            return Err(Error::corrupt(
                "magic is 0: this COW was never formatted or its header was wiped; only creating a \
                 snapshot formats a COW",
            ));
        };
        let origin_chunks = origin_chunks_of(disk_chunk);
        let scan = scan(cow, header, disk_chunk, origin_chunks, Some(table), false)?;
        Ok(Self::from_scan(scan))
    }

    /// The store as activation leaves it after `scan`.
    fn from_scan(scan: Scan) -> Self {
        let mut store = Self::empty(Geometry { chunk: scan.chunk });
        if scan.header.valid == 0 {
            store.valid = false;
            return store;
        }
        store.current_area = scan.areas - 1;
        store.area = scan.last_area;
        store.area_on_disk = store.area.len();
        store.next_free = (scan.max_new + 1).max(2);
        store.skip_metadata();
        store
    }

    /// Whether the header says valid.
    pub fn is_valid(&self) -> bool {
        self.valid
    }

    fn skip_metadata(&mut self) {
        if self.next_free % (self.geo.exceptions_per_area() + 1) == 1 {
            self.next_free += 1;
        }
    }

    fn area_offset(&self, area: u64) -> u64 {
        self.geo.chunk.offset_of(self.geo.area_location(area))
    }

    /// Writes the in-memory current area from record `from` on (the records before it are already
    /// on disk): whole sectors from the one holding `from`, up to the last record, then zeros over
    /// records that used to be there (after a merge). The bytes on disk end up exactly as the
    /// kernel's whole-chunk write leaves them; only less is written.
    fn write_area(&mut self, cow: &mut dyn BlockDevice, from: usize) -> Result<()> {
        let (at, buf) = self.area_bytes(from);
        self.area_written = true;
        device::write(cow, at, &buf)?;
        self.area_on_disk = self.area.len();
        Ok(())
    }

    /// Where and what [`PersistentStore::write_area`] writes.
    fn area_bytes(&self, from: usize) -> (u64, Vec<u8>) {
        let rec = EXCEPTION_RECORD_BYTES as usize;
        let end = self.area.len().max(self.area_on_disk) * rec;
        let start = (from.min(self.area.len()) * rec) / SECTOR_SIZE as usize * SECTOR_SIZE as usize;
        let mut buf = vec![0u8; end - start];
        for (i, e) in self.area.iter().enumerate().skip(start / rec) {
            let o = i * rec - start;
            buf[o..o + 8].copy_from_slice(&e.old.to_le_bytes());
            buf[o + 8..o + 16].copy_from_slice(&e.new.to_le_bytes());
        }
        let at = self.area_offset(self.current_area) + start as u64;
        (at, buf)
    }

    fn commit_inner(&mut self, cow: &mut dyn BlockDevice, records: &[Exception]) -> Result<()> {
        let epa = self.geo.exceptions_per_area() as usize;
        // PREFLUSH: the data chunks are durable before any record that names them.
        cow.flush()?;
        let mut dirty_from = None;
        for &r in records {
            dirty_from.get_or_insert(self.area.len());
            self.area.push(r);
            if self.area.len() == epa {
                // The successor area is zeroed (and durable) before the full area is written, so a
                // scan always finds an end marker.
                let next = self.area_offset(self.current_area + 1);
                device::write_zeros(cow, next, self.geo.chunk.bytes())?;
                cow.flush()?;
                self.write_area(cow, dirty_from.take().unwrap_or(0))?;
                self.current_area += 1;
                self.area.clear();
                self.area_on_disk = 0;
            }
        }
        if let Some(from) = dirty_from {
            self.write_area(cow, from)?;
        }
        // FUA: the records are durable before the caller overwrites the origin.
        cow.flush()
    }
}

impl ExceptionStore for PersistentStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Persistent
    }
    fn chunk_size(&self) -> ChunkSize {
        self.geo.chunk
    }
    fn prepare(&mut self, cow_len: u64) -> Option<u64> {
        let cs = self.geo.chunk.sectors();
        if (self.next_free + 1) * cs > cow_len / SECTOR_SIZE || self.next_free >= MAX_COW_CHUNKS {
            return None;
        }
        let c = self.next_free;
        self.next_free += 1;
        self.skip_metadata();
        Some(c)
    }
    fn commit_capacity(&self, cow_len: u64) -> u64 {
        // The record that fills area `a` needs area `a + 1` zeroed, so it lies inside the device.
        // With `last` the last area that fits, areas current..last-1 take every record, `last`
        // all but one (its filling record fails).
        let epa = self.geo.exceptions_per_area();
        let cow_chunks = self.geo.chunk.whole_chunks_in(cow_len);
        if cow_chunks <= self.geo.area_location(self.current_area) {
            return 0;
        }
        let last = (cow_chunks - 2) / (epa + 1); // area_location(last) <= cow_chunks - 1
        ((last - self.current_area + 1) * epa)
            .saturating_sub(self.area.len() as u64)
            .saturating_sub(1)
    }
    fn unprepare(&mut self, first: u64) {
        self.next_free = self.next_free.min(first);
    }
    fn commit(
        &mut self,
        cow: &mut dyn BlockDevice,
        records: &[Exception],
    ) -> core::result::Result<(), CommitFailure> {
        if !self.valid {
            return Err(CommitFailure {
                error: Error::SnapshotInvalid,
                undone: true,
                reusable: true,
            });
        }
        if records.is_empty() {
            return Ok(());
        }
        let (area, len) = (self.current_area, self.area.len());
        self.area_written = false;
        let Err(error) = self.commit_inner(cow, records) else {
            return Ok(());
        };
        let mut reusable = !self.area_written;
        if self.current_area == area {
            // Within one area the records can be taken back: the area on disk may hold some of
            // them (a partial write), but they name chunks whose data was written and flushed
            // before, of origin chunks not yet overwritten; unless they are erased below, their
            // chunks are not handed out again, and the next area write zeroes them.
            let attempted = self.area.len();
            self.area.truncate(len);
            self.area_on_disk = self.area_on_disk.max(attempted);
            // Try to take them off the device now (a passing fault): then the chunks can be
            // handed out again instead of being lost to this session.
            if !reusable && self.write_area(cow, len).is_ok() && cow.flush().is_ok() {
                reusable = true;
            }
            return Err(CommitFailure {
                error,
                undone: true,
                reusable,
            });
        }
        // A full area went out (it may or may not be on disk) and the store moved on: there is no
        // state to go back to that the disk is known to match.
        self.valid = false;
        Err(CommitFailure {
            error,
            undone: false,
            reusable: false,
        })
    }
    #[cfg(feature = "std")]
    fn stage(&mut self, records: &[Exception]) -> Option<StagedCommit> {
        if !self.valid || records.is_empty() {
            return None;
        }
        let epa = self.geo.exceptions_per_area() as usize;
        let mut undo = Undo {
            area: self.current_area,
            len: self.area.len(),
            on_disk: self.area_on_disk,
            old_area: None,
        };
        let (mut zero, mut writes) = (Vec::new(), Vec::new());
        let mut dirty_from = None;
        for &r in records {
            dirty_from.get_or_insert(self.area.len());
            self.area.push(r);
            if self.area.len() == epa {
                // As `commit_inner`, but the successor area is zeroed before the data flush (it
                // lies past an end marker until the full area is written after that flush).
                if undo.old_area.is_none() {
                    undo.old_area = Some(self.area[..undo.len].to_vec());
                }
                zero.push(self.area_offset(self.current_area + 1));
                writes.push(self.area_bytes(dirty_from.take().unwrap_or(0)));
                self.current_area += 1;
                self.area.clear();
                self.area_on_disk = 0;
            }
        }
        if let Some(from) = dirty_from {
            writes.push(self.area_bytes(from));
            self.area_on_disk = self.area.len();
        }
        Some(StagedCommit { zero, writes, undo })
    }
    #[cfg(feature = "std")]
    fn unstage(&mut self, staged: StagedCommit, written: bool, cow: &mut dyn BlockDevice) -> bool {
        let undo = staged.undo;
        if !written {
            // Nothing reached the areas in use (zeroed areas lie past an end marker).
            self.current_area = undo.area;
            match undo.old_area {
                Some(old) => self.area = old,
                None => self.area.truncate(undo.len),
            }
            self.area_on_disk = undo.on_disk;
            return true;
        }
        if self.current_area == undo.area {
            // As in `commit`: the records may be on the device, naming chunks whose data was
            // flushed, of origin chunks not yet overwritten. Try to take them off it now.
            let attempted = self.area.len();
            self.area.truncate(undo.len);
            self.area_on_disk = self.area_on_disk.max(attempted);
            if self.write_area(cow, undo.len).is_ok() {
                let _ = cow.flush();
            }
            return true;
        }
        // A full area went out (it may or may not be on disk): no state the disk is known to match.
        self.valid = false;
        false
    }
    fn invalidate(&mut self, cow: &mut dyn BlockDevice) -> Result<()> {
        self.valid = false;
        self.area = Vec::new();
        let mut h = Header::new(self.geo.chunk);
        h.valid = 0;
        device::write(cow, 0, &h.to_bytes())?;
        cow.flush()
    }
    fn usage(&self, cow_len: u64, pending: u64) -> Usage {
        let cs = self.geo.chunk.sectors();
        // The area the pending records will have moved the store to once committed.
        let current_area =
            self.current_area + (self.area.len() as u64 + pending) / self.geo.exceptions_per_area();
        Usage {
            allocated_sectors: self.next_free * cs,
            total_sectors: cow_len / SECTOR_SIZE,
            metadata_sectors: (current_area + 2) * cs,
        }
    }
    fn merge_prepare(&mut self, cow: &dyn BlockDevice, max: usize) -> Result<Vec<Exception>> {
        if self.area.is_empty() {
            if self.current_area == 0 {
                return Ok(Vec::new());
            }
            // Step back into the previous (full) area, as the kernel's prepare_merge does.
            let prev = self.current_area - 1;
            self.area = self.full_area(cow, prev)?;
            self.below.retain(|(a, _)| *a != prev);
            self.current_area = prev;
            self.area_on_disk = self.area.len();
        }
        if self.area.is_empty() {
            return Err(Error::corrupt("empty metadata area during merge"));
        }
        let max = max.max(1);
        // The small (`no_std`) build merges one trailing run per step, which never leaves an
        // area: it leaves out the code that reaches into the areas below (wasm size budget).
        if !cfg!(feature = "std") || self.area.len() >= max || self.current_area == 0 {
            return Ok(self.area[self.area.len().saturating_sub(max)..].to_vec());
        }
        #[cfg(feature = "std")]
        return self.merge_prepare_below(cow, max);
        #[cfg(not(feature = "std"))]
        unreachable!("no_std builds return above")
    }
    fn merge_commit(&mut self, cow: &mut dyn BlockDevice, n: u64) -> Result<()> {
        let saved = (self.current_area, self.area.clone(), self.area_on_disk);
        #[cfg(feature = "std")]
        let below = self.below.clone();
        let r = self.merge_drop(cow, n);
        match r {
            Ok(()) => self.merge_rewrite = false,
            Err(_) => {
                // The disk may hold any of the step's area writes, or none: go back to the state
                // before the step. Its records (whose chunks are on the origin, or are copied back
                // again) the next step drops again, writing every area it touches from its first
                // record, so no record a failed write left behind survives.
                (self.current_area, self.area, self.area_on_disk) = saved;
                #[cfg(feature = "std")]
                {
                    self.below = below;
                }
                self.merge_rewrite = true;
            }
        }
        r
    }
}

impl PersistentStore {
    /// [`ExceptionStore::merge_prepare`] when the current area holds fewer than `max` records: the
    /// current area's records, then whole areas under it (each full), until `max`, oldest first.
    #[cfg(feature = "std")]
    fn merge_prepare_below(&mut self, cow: &dyn BlockDevice, max: usize) -> Result<Vec<Exception>> {
        let mut parts: Vec<Vec<Exception>> = Vec::new();
        let mut have = self.area.len();
        let mut a = self.current_area;
        while have < max && a > 0 {
            a -= 1;
            let recs = self.full_area(cow, a)?;
            have += recs.len();
            if !self.below.iter().any(|(x, _)| *x == a) {
                self.below.push((a, recs.clone()));
            }
            parts.push(recs);
        }
        let mut out = Vec::with_capacity(have.min(max));
        // Oldest first: the deepest area's tail, then the areas above it whole.
        let mut skip = have.saturating_sub(max);
        for p in parts.iter().rev().chain(core::iter::once(&self.area)) {
            let n = skip.min(p.len());
            skip -= n;
            out.extend_from_slice(&p[n..]);
        }
        Ok(out)
    }

    /// The records of area `area`, which lies before the current one and so is full: from the
    /// merge's cache, or read.
    fn full_area(&self, cow: &dyn BlockDevice, area: u64) -> Result<Vec<Exception>> {
        if let Some((_, recs)) = self.below.iter().find(|(a, _)| *a == area) {
            return Ok(recs.clone());
        }
        let epa = self.geo.exceptions_per_area();
        let recs = read_records(cow, self.area_offset(area), epa)?;
        if (recs.len() as u64) != epa {
            return Err(Error::corrupt(
                "a metadata area before the current one is not full",
            ));
        }
        Ok(recs)
    }

    /// During a merge step: makes the (full) area under the current one current.
    #[cfg(feature = "std")]
    fn step_down(&mut self, cow: &dyn BlockDevice) -> Result<()> {
        if self.current_area == 0 {
            return Err(Error::InvalidArgument(
                "merge commit of more records than the store holds",
            ));
        }
        let prev = self.current_area - 1;
        self.area = self.full_area(cow, prev)?;
        self.below.retain(|(a, _)| *a != prev);
        self.current_area = prev;
        self.area_on_disk = self.area.len();
        Ok(())
    }

    /// The small build's steps never leave their area (see `merge_prepare`).
    #[cfg(not(feature = "std"))]
    fn step_down(&mut self, _cow: &dyn BlockDevice) -> Result<()> {
        Err(Error::InvalidArgument(
            "merge commit of more records than the area holds",
        ))
    }

    /// Drops the newest `n` records, from the current area down through the areas under it: each
    /// area the step empties is written as zeros, newest first, then the area left partial, and
    /// one flush makes them durable (the first write is preceded by a flush, the kernel's
    /// `REQ_PREFLUSH`). When the flush returns, the COW is the one the kernel's merge leaves with
    /// as many records (it empties and writes the areas one after the other).
    ///
    /// A crash before that flush may keep any of these writes (even torn ones): every area is
    /// then either as it was or a prefix of it (records, then zeros), so activation finds a
    /// prefix of the records as they were, at least those the step keeps; the others it drops
    /// name chunks already copied back and flushed to the origin, and a resumed merge copies them
    /// again. An emptied area may stay behind, unreachable, above the first one a scan stops at,
    /// like the stale areas of any COW: a commit zeroes the area after a full one before writing
    /// it, so such records never come back. One flush per step, not one per area, is what lets a
    /// step of 16 MiB (16 areas at 4 KiB chunks) cost about what copying its bytes costs.
    fn merge_drop(&mut self, cow: &mut dyn BlockDevice, n: u64) -> Result<()> {
        let mut left = n as usize;
        cow.flush()?;
        loop {
            let take = left.min(self.area.len());
            let keep = self.area.len() - take;
            self.area.truncate(keep);
            left -= take;
            let from = if self.merge_rewrite { 0 } else { keep };
            self.write_area(cow, from)?;
            if left == 0 {
                break;
            }
            self.step_down(&*cow)?;
        }
        cow.flush()?;
        self.next_free = self.geo.area_location(self.current_area) + self.area.len() as u64 + 1;
        Ok(())
    }
}

/// Reads up to `max` records of the area at byte `at`, stopping at the end marker.
fn read_records(cow: &dyn BlockDevice, at: u64, max: u64) -> Result<Vec<Exception>> {
    let mut buf = Vec::new();
    let n = read_area(&|at, b| device::read(cow, at, b), at, max, &mut buf, 0)?;
    Ok(parse(&buf[..n * EXCEPTION_RECORD_BYTES as usize]).collect())
}

/// Reads the records of the area at byte `at` (at most `max`) into `buf` with `read`, in pieces of
/// at most [`AREA_IO`], until the piece that holds the end marker; returns how many records
/// precede it. The records go to `buf[from..]` (`buf` grows as needed; what follows them there is
/// not theirs).
fn read_area(
    read: &dyn Fn(u64, &mut [u8]) -> Result<()>,
    at: u64,
    max: u64,
    buf: &mut Vec<u8>,
    from: usize,
) -> Result<usize> {
    let rec = EXCEPTION_RECORD_BYTES as usize;
    let piece = (max * EXCEPTION_RECORD_BYTES).min(AREA_IO) as usize / rec;
    let mut i = 0usize;
    while (i as u64) < max {
        let n = (max as usize - i).min(piece);
        let (start, end) = (from + i * rec, from + (i + n) * rec);
        if buf.len() < end {
            buf.resize(end, 0);
        }
        let b = &mut buf[start..end];
        read(at + (i * rec) as u64, b)?;
        if let Some(end) = b.chunks_exact(rec).position(|r| r[8..16] == [0; 8]) {
            return Ok(i + end);
        }
        i += n;
    }
    Ok(i)
}

/// The records in `bytes` (whole records, no end marker among them).
fn parse(bytes: &[u8]) -> impl Iterator<Item = Exception> + '_ {
    bytes
        .chunks_exact(EXCEPTION_RECORD_BYTES as usize)
        .map(|r| Exception {
            old: u64::from_le_bytes(r[0..8].try_into().expect("8 bytes")),
            new: u64::from_le_bytes(r[8..16].try_into().expect("8 bytes")),
        })
}

/// `chunk % (epa + 1) == 1` with a multiplication instead of a division per record: `epa + 1` is
/// odd (`epa` is a power of two), so `x` is a multiple of it exactly when `x · inverse` (mod 2^64)
/// is at most `u64::MAX / (epa + 1)`.
struct MetadataChunks {
    inverse: u64,
    limit: u64,
}

impl MetadataChunks {
    fn new(geo: Geometry) -> Self {
        let d = geo.exceptions_per_area() + 1;
        debug_assert!(d % 2 == 1);
        // Newton's iteration doubles the correct low bits each step: 5 steps from 3 bits give 96.
        let mut inverse = d;
        for _ in 0..5 {
            inverse = inverse.wrapping_mul(2u64.wrapping_sub(d.wrapping_mul(inverse)));
        }
        MetadataChunks {
            inverse,
            limit: u64::MAX / d,
        }
    }

    /// Same as [`Geometry::is_metadata_chunk`].
    #[inline]
    fn contains(&self, chunk: u64) -> bool {
        chunk == 0 || (chunk - 1).wrapping_mul(self.inverse) <= self.limit
    }
}

impl Scan {
    /// What both scans start from: nothing read yet, the device checked to hold a header and
    /// the first metadata area.
    fn start(header: Header, chunk: ChunkSize, cow_chunks: u64) -> Result<Self> {
        if cow_chunks < 2 {
            return Err(Error::corrupt(
                "COW device too small for its header and first metadata area",
            ));
        }
        Ok(Self::empty(header, chunk))
    }

    /// Nothing read yet (the checker starts here too).
    pub(crate) fn empty(header: Header, chunk: ChunkSize) -> Self {
        Scan {
            header,
            chunk,
            records: Vec::new(),
            exceptions: 0,
            areas: 0,
            last_area: Vec::new(),
            max_new: 1,
        }
    }
}

/// Reads and checks every metadata area of a valid store, as activation does, and builds `table`
/// (which must be empty) from the records.
///
/// Stricter than the kernel (which trusts its records): a record pointing outside the COW device, at
/// a metadata chunk, at an origin chunk beyond `origin_chunks`, or repeating an origin chunk is
/// reported as corruption instead of being served.
///
/// The records are loaded in bulk: each is checked on its own as it is read and goes, packed in a
/// `u64` (`old << new_bits | new`), into a [`Sorter`] by origin chunk; the sorted keys then show
/// repeats (adjacent equal origin chunks) and feed the table builder in order, with no hash probe
/// or sorted insertion per record, the runs written into the sorter's own memory. The areas are
/// read ahead by another thread when the device allows it ([`Areas`]), so that reading and
/// checking overlap. The result and every error message are those of the
/// record-by-record check ([`scan_each`]): when the bulk load meets a problem after a repeated
/// origin chunk, or finds one, the store is read again record by record to name the record that
/// check names (the bulk load does not keep the disk order).
fn scan(
    cow: &dyn BlockDevice,
    header: Header,
    chunk: ChunkSize,
    origin_chunks: u64,
    table: Option<&mut ExceptionTable>,
    keep_all: bool,
) -> Result<Scan> {
    if table.as_ref().is_some_and(|t| !t.is_empty()) {
        // Records would have to be checked against what the table already holds: rare, keep it
        // simple.
        let table = table.expect("checked above");
        return scan_each(cow, header, chunk, origin_chunks, table, keep_all);
    }
    if !cfg!(feature = "std") {
        // The small (wasm) build loads record by record: its stores are small, and the bulk
        // loader's sort and builder would cost it ~13 KB of its 150 KiB budget.
        let mut own = ExceptionTable::new();
        let table = table.unwrap_or(&mut own);
        return scan_each(cow, header, chunk, origin_chunks, table, keep_all);
    }
    let geo = Geometry { chunk };
    let cow_chunks = chunk.whole_chunks_in(cow.len());
    let mut out = Scan::start(header, chunk, cow_chunks)?;
    if header.valid == 0 {
        return Ok(out);
    }
    let epa = geo.exceptions_per_area();
    let metadata = MetadataChunks::new(geo);
    // Every COW chunk a record may name fits in `new_bits` bits; origin chunks get the rest.
    let new_bits = 64 - (cow_chunks.min(MAX_COW_CHUNKS) - 1).leading_zeros();
    // Fields beyond the origin bound are refused before they are sorted; without a bound
    // (inspect), the sorter widens as origin chunks come.
    let old_hint = if origin_chunks == u64::MAX {
        16
    } else {
        64 - origin_chunks.saturating_sub(1).leading_zeros()
    };
    let mut keys = Sorter::new(new_bits, old_hint.min(64 - new_bits), cow_chunks);
    let mut max_old = 0u64;
    // What the record-by-record check reports when the bulk load meets `error`: a repeated
    // origin chunk before it comes first.
    let first_error = |keys: &mut Sorter, error: Error| -> Error {
        if !keys.has_equal_fields() {
            return error;
        }
        let mut t = ExceptionTable::new();
        match scan_each(cow, header, chunk, origin_chunks, &mut t, false) {
            Err(e) => e,
            // Only if the device changed between the two reads.
            Ok(_) => error,
        }
    };
    // Two records naming the same COW chunk would make two origin chunks share data. Records of a
    // kernel-written store name strictly increasing chunks (allocation order), which proves there
    // is no repeat at no cost; anything else is checked by sorting.
    let mut increasing = true;
    let mut areas = Areas::new(cow, chunk, cow_chunks);
    // `Some` when the bulk load cannot go on: an error, or a record to check record by record.
    let stop = 'areas: loop {
        let (area, bytes) = match areas.next_area() {
            Some(Ok(a)) => a,
            Some(Err(e)) => break Some(Err(e)),
            None => break None,
        };
        let n = bytes.len() / EXCEPTION_RECORD_BYTES as usize;
        out.areas += 1;
        for (i, r) in parse(bytes).enumerate() {
            if let Err(e) = check_record(r, i, area, cow_chunks, origin_chunks, &metadata) {
                break 'areas Some(Err(e));
            }
            if r.old >> (64 - new_bits) != 0 {
                // An origin chunk too large to pack (only without an origin bound, on a damaged
                // device).
                break 'areas Some(Ok(()));
            }
            keys.push(r.old << new_bits | r.new);
            max_old = max_old.max(r.old);
            if keys.len() > 1 && r.new <= out.max_new {
                increasing = false;
            }
            out.max_new = out.max_new.max(r.new);
        }
        if keep_all {
            out.records.extend(parse(bytes));
        }
        if n as u64 != epa {
            out.last_area = parse(bytes).collect();
            break None;
        }
    };
    // Stops the reader thread, if any, before anything else reads the device.
    drop(areas);
    match stop {
        Some(Err(e)) => return Err(first_error(&mut keys, e)),
        Some(Ok(())) => {
            // Check record by record.
            drop(keys);
            let mut own = ExceptionTable::new();
            let t = table.unwrap_or(&mut own);
            return scan_each(cow, header, chunk, origin_chunks, t, keep_all);
        }
        None => {}
    }
    out.exceptions = keys.len() as u64;

    let old_bits = 64 - max_old.leading_zeros();
    let mut prev = None;
    // Kept for the check of COW chunks named twice (only needed when they do not increase).
    let mut again = Vec::new();
    let mut each = |sorted: &[u64]| {
        if !increasing {
            again.extend_from_slice(sorted);
        }
        true
    };
    let unique = match table {
        // The builder finds repeats (equal origin chunks side by side, also across buckets).
        Some(table) => keys
            .build(new_bits, &mut each)
            .map(|t| *table = t)
            .is_some(),
        None => keys.for_each_sorted(&mut |sorted| {
            let first = sorted[0] >> new_bits;
            let repeat = prev == Some(first)
                || sorted
                    .windows(2)
                    .any(|w| w[0] >> new_bits == w[1] >> new_bits);
            prev = Some(sorted[sorted.len() - 1] >> new_bits);
            !repeat && each(sorted)
        }),
    };
    if !unique {
        // An origin chunk repeats. The sort lost the disk order that says which record to name:
        // read again record by record.
        drop(again);
        let mut t = ExceptionTable::new();
        return match scan_each(cow, header, chunk, origin_chunks, &mut t, false) {
            Err(e) => Err(e),
            // Only if the device changed between the two reads.
            Ok(_) => Err(Error::corrupt("an origin chunk appears twice")),
        };
    }
    if !increasing {
        if let Some(new) = chunk_named_twice(&again, new_bits, old_bits) {
            return Err(named_twice(new));
        }
    }
    Ok(out)
}

/// The checks of one record that need no other record (record `i` of area `area`).
#[inline]
fn check_record(
    r: Exception,
    i: usize,
    area: u64,
    cow_chunks: u64,
    origin_chunks: u64,
    metadata: &MetadataChunks,
) -> Result<()> {
    if r.new >= cow_chunks || r.new >= MAX_COW_CHUNKS || metadata.contains(r.new) {
        return Err(not_data(i, area, r.new));
    }
    if r.old >= origin_chunks {
        return Err(beyond_origin(i, area, r.old, origin_chunks));
    }
    Ok(())
}

#[cold]
fn not_data(i: usize, area: u64, new: u64) -> Error {
    Error::corrupt(format!(
        "record {i} of area {area}: COW chunk {new} is not a data chunk of this device"
    ))
}

#[cold]
fn beyond_origin(i: usize, area: u64, old: u64, origin_chunks: u64) -> Error {
    Error::corrupt(format!(
        "record {i} of area {area}: origin chunk {old} is beyond the origin ({origin_chunks} chunks)"
    ))
}

fn past_end(area: u64, loc: u64) -> Error {
    Error::corrupt(format!(
        "metadata area {area} (chunk {loc}) lies past the end of the COW device"
    ))
}

fn named_twice(new: u64) -> Error {
    Error::corrupt(format!("COW chunk {new} is named by two records"))
}

/// The COW chunk that two records name, if any: `keys` are the records packed by origin chunk
/// (`old << new_bits | new`), with no origin chunk twice. Named as the record-by-record check names
/// it: walking the records by origin chunk and remembering each COW chunk, the first one met
/// again. (That check remembered only COW chunks whose origin chunk is below [`MAX_COW_CHUNKS`]: a
/// record beyond it is not a first sighting.)
fn chunk_named_twice(keys: &[u64], new_bits: u32, old_bits: u32) -> Option<u64> {
    let new_mask = (1u64 << new_bits) - 1;
    let mut by_new = Sorter::new(0, old_bits + new_bits, keys.len() as u64);
    for k in keys {
        by_new.push((k & new_mask) << old_bits | k >> new_bits);
    }
    let old_mask = if old_bits == 0 {
        0
    } else {
        u64::MAX >> (64 - old_bits)
    };
    // (origin chunk where a COW chunk is met again, that COW chunk)
    let mut found: Option<(u64, u64)> = None;
    // The COW chunk of the records being walked, and whether it was remembered (met again).
    let (mut current, mut remembered, mut met) = (None, false, false);
    // By COW chunk, then by origin chunk.
    by_new.for_each_sorted(&mut |sorted| {
        for &k in sorted {
            let (new, old) = (k >> old_bits, k & old_mask);
            if current != Some(new) {
                (current, remembered, met) = (Some(new), false, false);
            }
            if remembered && !met {
                met = true;
                if found.map_or(true, |(at, _)| old < at) {
                    found = Some((old, new));
                }
            }
            remembered |= old < MAX_COW_CHUNKS;
        }
        true
    });
    found.map(|(_, new)| new)
}

/// The record-by-record check: what [`scan`] computes, one table insertion per record (the
/// reference for the messages of corrupt stores, which it names in disk order).
fn scan_each(
    cow: &dyn BlockDevice,
    header: Header,
    chunk: ChunkSize,
    origin_chunks: u64,
    seen: &mut ExceptionTable,
    keep_all: bool,
) -> Result<Scan> {
    let geo = Geometry { chunk };
    let cow_chunks = chunk.whole_chunks_in(cow.len());
    let mut out = Scan::start(header, chunk, cow_chunks)?;
    if header.valid == 0 {
        return Ok(out);
    }
    let epa = geo.exceptions_per_area();
    let metadata = MetadataChunks::new(geo);
    let mut increasing = true;
    loop {
        let area = out.areas;
        let loc = geo.area_location(area);
        if loc >= cow_chunks {
            return Err(past_end(area, loc));
        }
        let recs = read_records(cow, chunk.offset_of(loc), epa)?;
        out.areas += 1;
        for (i, &r) in recs.iter().enumerate() {
            check_record(r, i, area, cow_chunks, origin_chunks, &metadata)?;
            if !seen.insert(r.old, r.new) {
                return Err(Error::corrupt(format!(
                    "record {i} of area {area}: origin chunk {} appears twice",
                    r.old
                )));
            }
            if out.exceptions > 0 && r.new <= out.max_new {
                increasing = false;
            }
            out.max_new = out.max_new.max(r.new);
            out.exceptions += 1;
        }
        let full = recs.len() as u64 == epa;
        if keep_all {
            out.records.extend_from_slice(&recs);
        }
        out.last_area = recs;
        if !full {
            break;
        }
    }
    if !increasing {
        // A second table keyed by COW chunk finds a repeat.
        let mut by_new = ExceptionTable::new();
        for e in seen.iter() {
            if by_new.lookup(e.new).is_some() {
                return Err(named_twice(e.new));
            }
            by_new.insert(e.new, e.old);
        }
    }
    Ok(out)
}

impl Scan {
    /// COW space accounting of the store as activation leaves it (what `dmsetup status` shows
    /// right after activation), for a COW of `cow_len` bytes.
    pub fn usage(&self, cow_len: u64) -> Usage {
        PersistentStore::from_scan(self.clone()).usage(cow_len, 0)
    }

    /// The status a snapshot activated on this store with default options reports, without
    /// building its table (for inspection tools).
    pub fn status(&self, cow_len: u64) -> SnapshotStatus {
        let u = self.usage(cow_len);
        SnapshotStatus {
            state: if self.header.valid == 0 {
                SnapshotState::Invalid
            } else {
                SnapshotState::Active
            },
            store: StoreKind::Persistent,
            overflow_reporting: false,
            chunk_bytes: self.chunk.bytes(),
            sectors_allocated: u.allocated_sectors,
            total_sectors: u.total_sectors,
            metadata_sectors: u.metadata_sectors,
            exceptions: self.exceptions,
            merge_progress: None,
        }
    }
}

/// Reads a COW device without changing it: header, chunk size and (for a valid store) all records.
/// For inspection tools; activation does the same checks. See [`survey`] for large stores: this
/// keeps every record in memory.
pub fn inspect(cow: &dyn BlockDevice, origin_chunks: Option<u64>) -> Result<Scan> {
    inspect_with(cow, origin_chunks, true)
}

/// [`inspect`] without keeping the records ([`Scan::records`] stays empty): one pass over the
/// metadata with the checks of activation, no exception table; the records can then be streamed
/// with [`for_each_record`].
pub fn survey(cow: &dyn BlockDevice, origin_chunks: Option<u64>) -> Result<Scan> {
    inspect_with(cow, origin_chunks, false)
}

fn inspect_with(cow: &dyn BlockDevice, origin_chunks: Option<u64>, keep_all: bool) -> Result<Scan> {
    let header = Header::read(cow)?;
    let chunk = header
        .validate()?
        .ok_or_else(|| Error::corrupt("magic is 0: the COW device was never activated"))?;
    scan(
        cow,
        header,
        chunk,
        origin_chunks.unwrap_or(u64::MAX),
        None,
        keep_all,
    )
}

/// Calls `f` with every record of the store `scan` describes, in on-disk order, reading one piece
/// of an area at a time: memory stays bounded however many records there are. Stops at the first
/// error of `f` or of the device.
pub fn for_each_record<E: From<Error>>(
    cow: &dyn BlockDevice,
    scan: &Scan,
    mut f: impl FnMut(Exception) -> core::result::Result<(), E>,
) -> core::result::Result<(), E> {
    if scan.header.valid == 0 {
        return Ok(());
    }
    let geo = Geometry { chunk: scan.chunk };
    let epa = geo.exceptions_per_area();
    let mut buf = vec![0u8; (epa * EXCEPTION_RECORD_BYTES).min(AREA_IO) as usize];
    let mut left = scan.exceptions;
    for area in 0..scan.areas {
        let at = scan.chunk.offset_of(geo.area_location(area));
        let mut i = 0;
        while i < epa && left > 0 {
            let n = (epa - i)
                .min(buf.len() as u64 / EXCEPTION_RECORD_BYTES)
                .min(left);
            let b = &mut buf[..(n * EXCEPTION_RECORD_BYTES) as usize];
            device::read(cow, at + i * EXCEPTION_RECORD_BYTES, b)?;
            for rec in b.chunks_exact(EXCEPTION_RECORD_BYTES as usize) {
                let old = u64::from_le_bytes(rec[0..8].try_into().expect("8 bytes"));
                let new = u64::from_le_bytes(rec[8..16].try_into().expect("8 bytes"));
                if new == 0 {
                    return Err(Error::corrupt("the COW device changed while it was read").into());
                }
                f(Exception { old, new })?;
            }
            i += n;
            left -= n;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemDevice;
    use alloc::string::ToString;
    use proptest::prelude::*;

    const CHUNK: u64 = 4096;
    const EPA: u64 = CHUNK / EXCEPTION_RECORD_BYTES;

    /// A device that fails every read reaching byte `fail_from`.
    struct Faulty(MemDevice, u64);

    impl BlockDevice for Faulty {
        fn len(&self) -> u64 {
            self.0.len()
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            if offset + buf.len() as u64 > self.1 {
                return Err(Error::io("injected read error"));
            }
            self.0.read_at(offset, buf)
        }
        fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
            self.0.write_at(offset, buf)
        }
        fn flush(&mut self) -> Result<()> {
            Ok(())
        }
    }

    /// A device that activation reads ahead in another thread (as it reads a file).
    struct Ahead<D>(std::sync::Arc<D>);

    impl<D: BlockDevice + Send + Sync + 'static> BlockDevice for Ahead<D> {
        fn len(&self) -> u64 {
            self.0.len()
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            self.0.read_at(offset, buf)
        }
        fn write_at(&mut self, _offset: u64, _buf: &[u8]) -> Result<()> {
            Err(Error::Unsupported("read only"))
        }
        fn flush(&mut self) -> Result<()> {
            Ok(())
        }
        fn read_handle(&self) -> Option<std::sync::Arc<dyn crate::device::ReadHandle>> {
            Some(std::sync::Arc::new(Ahead(self.0.clone())))
        }
    }

    impl<D: BlockDevice + Send + Sync> crate::device::ReadHandle for Ahead<D> {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            self.0.read_at(offset, buf)
        }
    }

    fn loc(area: u64) -> u64 {
        1 + area * (EPA + 1)
    }

    /// A COW image with `recs` written in areas as the kernel lays them out, `cow_chunks` long.
    fn image(recs: &[Exception], cow_chunks: u64, valid: bool) -> MemDevice {
        let mut d = MemDevice::new((cow_chunks * CHUNK) as usize);
        let mut h = Header::new(ChunkSize::new(CHUNK).unwrap());
        h.valid = u32::from(valid);
        d.write_at(0, &h.to_bytes()).unwrap();
        for (p, r) in recs.iter().enumerate() {
            let p = p as u64;
            let at = loc(p / EPA) * CHUNK + p % EPA * EXCEPTION_RECORD_BYTES;
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&r.old.to_le_bytes());
            b[8..].copy_from_slice(&r.new.to_le_bytes());
            if at + 16 <= d.len() {
                d.write_at(at, &b).unwrap();
            }
        }
        d
    }

    /// A store's records: origin chunks from `olds` (mapped into a few shapes), COW chunks in
    /// allocation order, shuffled, or arbitrary.
    fn records(olds: &[(u64, u64)], old_kind: u8, new_kind: u8, cow_chunks: u64) -> Vec<Exception> {
        let mut recs: Vec<Exception> = olds
            .iter()
            .enumerate()
            .map(|(p, &(o, n))| {
                let p = p as u64;
                let old = match old_kind {
                    0 => o, // may repeat
                    // distinct (37 is prime to 1009 and p < 1009), now and then the previous one again
                    1 if o % 64 == 0 && p > 0 => (p - 1) * 37 % 1009,
                    1 => p * 37 % 1009,
                    2 => (MAX_COW_CHUNKS - 4 + o % 8) ^ (p << 20), // beyond 2^48 (inspect)
                    _ => u64::MAX - o % 3 - p,                     // too wide to pack
                };
                let new = match new_kind {
                    // allocation order, now and then the previous chunk again
                    3 if o % 97 == 5 && p > 0 => loc((p - 1) / EPA) + 1 + (p - 1) % EPA,
                    0 | 1 | 3 => loc(p / EPA) + 1 + p % EPA,
                    _ => n % (cow_chunks + 3),
                };
                Exception { old, new }
            })
            .collect();
        if new_kind == 1 && recs.len() > 1 {
            // Out of allocation order, and now and then one COW chunk named twice.
            let k = recs.len();
            for i in (0..k).step_by(5) {
                let j = (i * 7 + 3) % k;
                let (a, b) = (recs[i].new, recs[j].new);
                recs[i].new = b;
                recs[j].new = if i % 3 == 0 { b } else { a };
            }
        }
        recs
    }

    type Outcome = Result<(Scan, ExceptionTable)>;

    /// The bulk scan and the record-by-record scan of `cow`.
    fn both(cow: &dyn BlockDevice, origin_chunks: u64, keep_all: bool) -> (Outcome, Outcome) {
        let header = Header::read(cow).unwrap();
        let chunk = header.validate().unwrap().unwrap();
        let mut t = ExceptionTable::new();
        let bulk = scan(cow, header, chunk, origin_chunks, Some(&mut t), keep_all).map(|s| (s, t));
        let mut t = ExceptionTable::new();
        let each = scan_each(cow, header, chunk, origin_chunks, &mut t, keep_all).map(|s| (s, t));
        (bulk, each)
    }

    fn same(a: &Outcome, b: &Outcome) -> bool {
        match (a, b) {
            (Ok((sa, ta)), Ok((sb, tb))) => {
                alloc::format!("{sa:?}") == alloc::format!("{sb:?}") && ta == tb
            }
            (Err(ea), Err(eb)) => ea == eb,
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Bulk activation finds what the record-by-record check finds: the same table and store
        /// state, or the same refusal with the same message (which record, which chunk), on
        /// valid, damaged and unreadable stores alike.
        #[test]
        fn bulk_scan_is_the_record_by_record_scan(
            olds in proptest::collection::vec((0u64..1500, any::<u64>()), 0..800),
            old_kind in prop_oneof![2 => Just(0u8), 6 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
            new_kind in 0u8..4,
            origin_chunks in prop_oneof![Just(u64::MAX), 1u64..2100],
            slack in 0u64..8,
            cut in prop_oneof![4 => Just(0u64), 1 => 0u64..300],
            valid in prop_oneof![9 => Just(true), 1 => Just(false)],
            fault in prop_oneof![4 => Just(None), 1 => (0u64..2_500_000).prop_map(Some)],
            keep_all in any::<bool>(),
            ahead in any::<bool>(),
        ) {
            let n = olds.len() as u64;
            let cow_chunks = (loc(n / EPA) + 1 + n % EPA + slack).saturating_sub(cut).max(2);
            let recs = records(&olds, old_kind, new_kind, cow_chunks);
            let dev = image(&recs, cow_chunks, valid);
            // The bulk scan reads ahead in another thread when the device allows it (the
            // record-by-record scan never does).
            let (bulk, each) = match (fault, ahead) {
                (None, false) => both(&dev, origin_chunks, keep_all),
                (None, true) => both(&Ahead(std::sync::Arc::new(dev)), origin_chunks, keep_all),
                (Some(f), false) => both(&Faulty(dev, f + CHUNK), origin_chunks, keep_all),
                (Some(f), true) => {
                    let dev = Ahead(std::sync::Arc::new(Faulty(dev, f + CHUNK)));
                    both(&dev, origin_chunks, keep_all)
                }
            };
            prop_assert!(same(&bulk, &each), "bulk {:?}\nrecord by record {:?}", bulk, each);
        }

        /// The status `inspect` derives from a survey is the status of the activated snapshot, and
        /// streaming the records gives the records `inspect` keeps.
        #[test]
        fn survey_reports_what_activation_reports(
            n in 0u64..900,
            slack in 0u64..300,
            valid in prop_oneof![5 => Just(true), 1 => Just(false)],
        ) {
            let olds: Vec<(u64, u64)> = (0..n).map(|_| (1, 0)).collect(); // distinct origin chunks
            let cow_chunks = loc(n / EPA) + 1 + n % EPA + slack;
            let recs = records(&olds, 1, 0, cow_chunks);
            let dev = image(&recs, cow_chunks, valid);
            let s = survey(&dev, None).unwrap();
            prop_assert!(s.records.is_empty());
            let full = inspect(&dev, None).unwrap();
            let mut streamed = Vec::new();
            for_each_record(&dev, &s, |e| {
                streamed.push(e);
                Ok::<(), Error>(())
            })
            .unwrap();
            prop_assert_eq!(&streamed, &full.records);
            let origin = MemDevice::new((4000 * CHUNK) as usize);
            let mut vol = crate::Volume::new(origin);
            let len = dev.len();
            let id = vol.activate_snapshot(dev, crate::SnapshotOptions::default()).unwrap();
            prop_assert_eq!(vol.snapshot_status(id).unwrap(), s.status(len));
        }

        #[test]
        fn metadata_test_without_division(shift in 3u32..22, x in any::<u64>(), k in 0u64..1000) {
            // Every chunk size a header may have: 8 sectors to 2^21.
            let geo = Geometry { chunk: ChunkSize::from_disk_sectors(1 << shift).unwrap() };
            let m = MetadataChunks::new(geo);
            let d = geo.exceptions_per_area() + 1;
            for c in [x, k, k * d, k * d + 1, k * d + 2, x / d * d + 1, 0, 1, u64::MAX] {
                prop_assert_eq!(m.contains(c), geo.is_metadata_chunk(c), "chunk {}", c);
            }
        }
    }

    #[test]
    fn a_repeat_before_a_later_failure_is_what_is_reported() {
        // Two full areas, the second repeating an origin chunk of the first; the third area is
        // past the end of the COW (or unreadable): the repeat was met first, so it is named.
        let recs: Vec<Exception> = (0..2 * EPA)
            .map(|p| Exception {
                old: if p == 300 { 7 } else { p },
                new: loc(p / EPA) + 1 + p % EPA,
            })
            .collect();
        let named = "record 44 of area 1: origin chunk 7 appears twice";
        let short = image(&recs, loc(2), true);
        let mut t = ExceptionTable::new();
        let e = PersistentStore::open(&short, |_| 1000, &mut t).unwrap_err();
        assert_eq!(e, Error::corrupt(named));
        let long = image(&recs, loc(2) + 1, true);
        let third = Faulty(long.clone(), loc(2) * CHUNK);
        let e = PersistentStore::open(&third, |_| 1000, &mut t).unwrap_err();
        assert_eq!(e, Error::corrupt(named));
        // Without the repeat, the later failure itself.
        let mut fine = recs.clone();
        fine[300].old = 300;
        let e = PersistentStore::open(&image(&fine, loc(2), true), |_| 1000, &mut t).unwrap_err();
        assert_eq!(
            e,
            Error::corrupt("metadata area 2 (chunk 515) lies past the end of the COW device")
        );
        let third = Faulty(image(&fine, loc(2) + 1, true), loc(2) * CHUNK);
        let e = PersistentStore::open(&third, |_| 1000, &mut t).unwrap_err();
        assert_eq!(e, Error::io("injected read error"));
        // And a record on a metadata chunk after the repeat: the repeat.
        let mut meta = recs;
        meta[400].new = loc(1);
        let e =
            PersistentStore::open(&image(&meta, loc(2) + 1, true), |_| 1000, &mut t).unwrap_err();
        assert_eq!(e, Error::corrupt(named));
        assert!(t.is_empty());
    }

    #[test]
    fn cow_chunks_named_twice_beyond_2_48_as_record_by_record() {
        // Without an origin bound (inspect), origin chunks may lie beyond 2^48; the record-by-record
        // check remembers COW chunks only for origin chunks below it. Same answers here.
        let big = MAX_COW_CHUNKS;
        for (a, b, c) in [
            (big + 1, big + 2, 3),
            (3, big + 1, big + 2),
            (big + 1, 3, big + 2),
        ] {
            let recs = [
                Exception { old: a, new: 9 },
                Exception { old: b, new: 9 },
                Exception { old: c, new: 2 },
                Exception { old: 5, new: 3 },
                Exception {
                    old: big + 9,
                    new: 3,
                },
            ];
            let dev = image(&recs, 40, true);
            let (bulk, each) = both(&dev, u64::MAX, false);
            assert!(same(&bulk, &each), "{bulk:?} {each:?}");
        }
    }

    #[test]
    fn areas_end_after_the_end_marker_or_an_error() {
        let chunk = ChunkSize::new(CHUNK).unwrap();
        for n in [0, 5, EPA, 3 * EPA, 3 * EPA + 7] {
            let recs: Vec<Exception> = (0..n)
                .map(|p| Exception {
                    old: p,
                    new: loc(p / EPA) + 1 + p % EPA,
                })
                .collect();
            let last = n / EPA;
            for cut in [false, true] {
                let cow_chunks = if cut { loc(last) } else { loc(last) + 2 };
                let mut want: Vec<Result<(u64, usize)>> =
                    (0..last).map(|a| Ok((a, CHUNK as usize))).collect();
                want.push(if cut {
                    Err(past_end(last, loc(last)))
                } else {
                    Ok((last, (n % EPA * EXCEPTION_RECORD_BYTES) as usize))
                });
                for ahead in [false, true] {
                    let dev = image(&recs, cow_chunks.max(2), true);
                    let dev: &dyn BlockDevice = if ahead {
                        &Ahead(std::sync::Arc::new(dev))
                    } else {
                        &dev
                    };
                    let mut areas = Areas::new(dev, chunk, cow_chunks);
                    let mut got = Vec::new();
                    while let Some(a) = areas.next_area() {
                        got.push(a.map(|(a, b)| (a, b.len())));
                    }
                    assert_eq!(got, want, "{n} records, cut {cut}, ahead {ahead}");
                }
            }
        }
    }

    #[test]
    fn read_ahead_stops_where_reading_area_by_area_stops() {
        // Ten full areas, then the device ends where the eleventh would be: activation must
        // report that area, a failed read or a bad record in any area, named as the
        // record-by-record check (which reads one area after the other) names it.
        let n = 10 * EPA;
        let kernel: Vec<Exception> = (0..n)
            .map(|p| Exception {
                old: p * 7919 % 1_000_003,
                new: loc(p / EPA) + 1 + p % EPA,
            })
            .collect();
        let end = loc(10);
        let ahead = |d: MemDevice| Ahead(std::sync::Arc::new(d));
        let (bulk, each) = both(&ahead(image(&kernel, end, true)), 1_000_003, false);
        assert!(same(&bulk, &each));
        assert_eq!(
            bulk.err(),
            Some(Error::corrupt(alloc::format!(
                "metadata area 10 (chunk {end}) lies past the end of the COW device"
            )))
        );
        let fits = end + 1 + 3;
        let (bulk, each) = both(&ahead(image(&kernel, fits, true)), 1_000_003, false);
        assert!(same(&bulk, &each));
        assert_eq!(bulk.unwrap().1.len(), n);
        for area in 0..10 {
            let dev = Faulty(image(&kernel, fits, true), loc(area) * CHUNK + 100);
            let (bulk, each) = both(&Ahead(std::sync::Arc::new(dev)), 1_000_003, false);
            assert!(same(&bulk, &each), "{bulk:?} {each:?}");
            assert_eq!(bulk.err(), Some(Error::io("injected read error")));
            let mut bad = kernel.clone();
            bad[(area * EPA + 5) as usize].new = loc(area);
            let (bulk, each) = both(&ahead(image(&bad, fits, true)), 1_000_003, false);
            assert!(same(&bulk, &each), "{bulk:?} {each:?}");
            let want = alloc::format!(
                "record 5 of area {area}: COW chunk {} is not a data chunk of this device",
                loc(area)
            );
            assert_eq!(bulk.err(), Some(Error::corrupt(want)));
        }
    }

    #[test]
    fn large_stores_as_record_by_record() {
        // Beyond 2^16 records the sort goes through buckets: same answers, across bucket borders.
        let n = 70_000u64;
        let prime = 1_000_003u64;
        let kernel: Vec<Exception> = (0..n)
            .map(|p| Exception {
                old: p * 7919 % prime,
                new: loc(p / EPA) + 1 + p % EPA,
            })
            .collect();
        let cow_chunks = loc(n / EPA) + 1 + n % EPA;
        let mut repeat = kernel.clone();
        repeat[69_000].old = repeat[123].old;
        repeat[50_000].old = repeat[40_000].old;
        let mut named_twice = kernel.clone();
        named_twice.swap(10, 60_000);
        named_twice[65_000].new = named_twice[3].new;
        let mut swapped = kernel.clone();
        swapped.swap(10, 60_000);
        let named = alloc::format!("COW chunk {} is named by two records", loc(0) + 4);
        let cases = [
            (kernel, None),
            (
                repeat,
                Some("record 80 of area 195: origin chunk 759052 appears twice"),
            ),
            (named_twice, Some(named.as_str())),
            (swapped, None),
        ];
        for (recs, want) in cases {
            let dev = image(&recs, cow_chunks, true);
            let (bulk, each) = both(&dev, prime, false);
            assert!(same(&bulk, &each), "{:?} {:?}", bulk.err(), each.err());
            match want {
                None => assert_eq!(bulk.unwrap().1.len(), n),
                Some(m) => assert_eq!(bulk.err(), Some(Error::corrupt(m))),
            }
        }
    }

    #[test]
    fn a_repeat_is_named_in_disk_order_whatever_the_sort_did() {
        // Origin chunk 5 repeats at record 300 (area 1), origin chunk 2 at record 400: the first
        // repeat in disk order is named, though 2 sorts first.
        let mut recs: Vec<Exception> = (0..500u64)
            .map(|p| Exception {
                old: 10 + p,
                new: loc(p / EPA) + 1 + p % EPA,
            })
            .collect();
        recs[0].old = 5;
        recs[300].old = 5;
        recs[1].old = 2;
        recs[400].old = 2;
        let dev = image(&recs, loc(2) + 1, true);
        let mut t = ExceptionTable::new();
        let e = PersistentStore::open(&dev, |_| 1000, &mut t).unwrap_err();
        assert_eq!(
            e.to_string(),
            Error::corrupt("record 44 of area 1: origin chunk 5 appears twice").to_string()
        );
    }
}
