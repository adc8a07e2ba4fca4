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
use crate::chunk::{ChunkSize, SECTOR_SIZE};
use crate::device::{self, BlockDevice};
use crate::error::{Error, Result};
use crate::exception::{Exception, ExceptionTable, MAX_COW_CHUNKS};

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
    pub magic: u32,
    pub valid: u32,
    pub version: u32,
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
#[derive(Debug, Clone)]
pub struct Scan {
    pub header: Header,
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
pub struct PersistentStore {
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
        let scan = scan(cow, header, disk_chunk, origin_chunks, table, false)?;
        let geo = Geometry { chunk: disk_chunk };
        let mut store = Self::empty(geo);
        if header.valid == 0 {
            store.valid = false;
            return Ok(store);
        }
        store.current_area = scan.areas - 1;
        store.area = scan.last_area;
        store.area_on_disk = store.area.len();
        store.next_free = (scan.max_new + 1).max(2);
        store.skip_metadata();
        Ok(store)
    }

    /// Whether the header says valid.
    pub fn is_valid(&self) -> bool {
        self.valid
    }

    /// The store's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geo
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
        self.area_written = true;
        device::write(cow, at, &buf)?;
        self.area_on_disk = self.area.len();
        Ok(())
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
            // Step back into the previous (full) area.
            let prev = self.current_area - 1;
            let epa = self.geo.exceptions_per_area();
            let recs = read_records(cow, self.area_offset(prev), epa)?;
            if (recs.len() as u64) != epa {
                return Err(Error::corrupt(
                    "a metadata area before the current one is not full",
                ));
            }
            self.current_area = prev;
            self.area = recs;
            self.area_on_disk = self.area.len();
        }
        if self.area.is_empty() {
            return Err(Error::corrupt("empty metadata area during merge"));
        }
        Ok(self.area[self.area.len().saturating_sub(max.max(1))..].to_vec())
    }
    fn merge_commit(&mut self, cow: &mut dyn BlockDevice, n: u64) -> Result<()> {
        let keep = self.area.len().saturating_sub(n as usize);
        self.area.truncate(keep);
        cow.flush()?;
        self.write_area(cow, keep)?;
        cow.flush()?;
        self.next_free = self.geo.area_location(self.current_area) + self.area.len() as u64 + 1;
        Ok(())
    }
}

/// Reads up to `max` records of the area at byte `at`, stopping at the end marker.
fn read_records(cow: &dyn BlockDevice, at: u64, max: u64) -> Result<Vec<Exception>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; (max * EXCEPTION_RECORD_BYTES).min(AREA_IO) as usize];
    let mut i = 0u64;
    while i < max {
        let n = (max - i).min(buf.len() as u64 / EXCEPTION_RECORD_BYTES);
        let b = &mut buf[..(n * EXCEPTION_RECORD_BYTES) as usize];
        device::read(cow, at + i * EXCEPTION_RECORD_BYTES, b)?;
        for rec in b.chunks_exact(EXCEPTION_RECORD_BYTES as usize) {
            let old = u64::from_le_bytes(rec[0..8].try_into().expect("8 bytes"));
            let new = u64::from_le_bytes(rec[8..16].try_into().expect("8 bytes"));
            if new == 0 {
                return Ok(out);
            }
            out.push(Exception { old, new });
        }
        i += n;
    }
    Ok(out)
}

/// Reads and checks every metadata area of a valid store, as activation does.
///
/// Stricter than the kernel (which trusts its records): a record pointing outside the COW device, at
/// a metadata chunk, at an origin chunk beyond `origin_chunks`, or repeating an origin chunk is
/// reported as corruption instead of being served.
fn scan(
    cow: &dyn BlockDevice,
    header: Header,
    chunk: ChunkSize,
    origin_chunks: u64,
    seen: &mut ExceptionTable,
    keep_all: bool,
) -> Result<Scan> {
    let geo = Geometry { chunk };
    let cow_chunks = chunk.whole_chunks_in(cow.len());
    if cow_chunks < 2 {
        return Err(Error::corrupt(
            "COW device too small for its header and first metadata area",
        ));
    }
    let mut out = Scan {
        header,
        chunk,
        records: Vec::new(),
        exceptions: 0,
        areas: 0,
        last_area: Vec::new(),
        max_new: 1,
    };
    if header.valid == 0 {
        return Ok(out);
    }
    let epa = geo.exceptions_per_area();
    // Two records naming the same COW chunk would make two origin chunks share data. Records of a
    // kernel-written store name strictly increasing chunks (allocation order), which proves there
    // is no repeat at no cost; anything else is checked by sorting.
    let mut increasing = true;
    loop {
        let area = out.areas;
        let loc = geo.area_location(area);
        if loc >= cow_chunks {
            return Err(Error::corrupt(format!(
                "metadata area {area} (chunk {loc}) lies past the end of the COW device"
            )));
        }
        let recs = read_records(cow, chunk.offset_of(loc), epa)?;
        out.areas += 1;
        for (i, r) in recs.iter().enumerate() {
            if r.new >= cow_chunks || r.new >= MAX_COW_CHUNKS || geo.is_metadata_chunk(r.new) {
                return Err(Error::corrupt(format!(
                    "record {i} of area {area}: COW chunk {} is not a data chunk of this device",
                    r.new
                )));
            }
            if r.old >= origin_chunks {
                return Err(Error::corrupt(format!(
                    "record {i} of area {area}: origin chunk {} is beyond the origin ({origin_chunks} chunks)",
                    r.old
                )));
            }
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
        // A second table keyed by COW chunk finds a repeat (no sort: keeps the wasm build small).
        let mut by_new = ExceptionTable::new();
        for e in seen.iter() {
            if by_new.lookup(e.new).is_some() {
                return Err(Error::corrupt(format!(
                    "COW chunk {} is named by two records",
                    e.new
                )));
            }
            by_new.insert(e.new, e.old);
        }
    }
    Ok(out)
}

/// Reads a COW device without changing it: header, chunk size and (for a valid store) all records.
/// For inspection tools; activation does the same checks.
pub fn inspect(cow: &dyn BlockDevice, origin_chunks: Option<u64>) -> Result<Scan> {
    let header = Header::read(cow)?;
    let chunk = header
        .validate()?
        .ok_or_else(|| Error::corrupt("magic is 0: the COW device was never activated"))?;
    let mut table = ExceptionTable::new();
    scan(
        cow,
        header,
        chunk,
        origin_chunks.unwrap_or(u64::MAX),
        &mut table,
        true,
    )
}
