//! A checker for persistent COW devices, as `thin_check` is for thin-pool metadata: it reads the
//! header and every metadata area and reports *every* problem with where it is, instead of stopping
//! at the first as activation does.
//!
//! Two kinds of findings:
//! - **damage** ([`ProblemKind::is_damage`]): what makes activation refuse the device (a bad
//!   header, a record naming a chunk it cannot name, a chunk named twice, an area past the end).
//!   [`Report::activates`] is true exactly when there is none (with the same origin bound).
//! - **warnings**: what activation accepts, as the kernel does, but which looks like lost records:
//!   bytes after an area's end marker (a torn write, or a zeroed record in the middle of an area), an
//!   area after the last one that holds records (a zeroed or lost area), a header chunk size under
//!   which no record is found while another size finds them. The format has no checksums, so these
//!   are hints, not proofs: `lvcreate` wipes only the first 4 KiB of a COW volume, and a reused
//!   volume may hold an earlier store's bytes.
//!
//! The metadata is read once (a second time only on a device where chunks repeat, to name the
//! records), in memory fixed by the device's size, not by its number of records; the same pass
//! gives what activation's scan gives ([`Report::scan`]), so a tool needs no other. A COW checked
//! without its origin is the one case where a bound had to be chosen: see [`check_with_budget`].

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

mod chunk_set;
use chunk_set::{ChunkSet, Seen};

use crate::chunk::ChunkSize;
use crate::device::{self, BlockDevice};
use crate::error::Result;
use crate::exception::{Exception, MAX_COW_CHUNKS};
use crate::store::persistent::{
    Geometry, Header, Scan, DISK_VERSION, EXCEPTION_RECORD_BYTES, HEADER_BYTES, SNAP_MAGIC,
};

/// Most problems a report lists; a device of garbage would otherwise give one per record.
pub const MAX_PROBLEMS: usize = 1000;

/// How far past an area's end marker the checker looks for left-over records.
const AFTER_END_SCAN: u64 = 1 << 20;

/// Bytes read at a time.
const PIECE: u64 = 64 * 1024;

/// Where a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The device as a whole.
    Device,
    /// The header (chunk 0).
    Header,
    /// Metadata area `area`, at COW chunk `chunk`.
    Area {
        /// Area number, from 0.
        area: u64,
        /// Its COW chunk.
        chunk: u64,
    },
    /// Record `index` of metadata area `area`.
    Record {
        /// Area number, from 0.
        area: u64,
        /// Record number in the area, from 0.
        index: u64,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Location::Device => write!(f, "device"),
            Location::Header => write!(f, "header"),
            Location::Area { area, chunk } => write!(f, "metadata area {area} (chunk {chunk})"),
            Location::Record { area, index } => write!(f, "record {index} of area {area}"),
        }
    }
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The device cannot hold the 16-byte header.
    TooSmallForHeader {
        /// Device size in bytes.
        len: u64,
    },
    /// Magic 0: a wiped header, or a device never formatted (activation refuses it; only creating
    /// a snapshot formats a COW).
    ZeroMagic,
    /// Not a dm-snapshot store.
    BadMagic {
        /// The magic found.
        magic: u32,
    },
    /// An on-disk version other than 1.
    BadVersion {
        /// The version found.
        version: u32,
    },
    /// A chunk size the engine does not read (not a power of two, below 8 sectors or above 2^21).
    BadChunkSize {
        /// The chunk size found, in sectors.
        sectors: u32,
    },
    /// Fewer whole chunks than the header and the first metadata area need.
    TooSmallForMetadata {
        /// Whole chunks in the device.
        chunks: u64,
    },
    /// The area before is full, so this one must exist, but it lies past the end of the device.
    AreaPastEnd,
    /// A record names a COW chunk outside the device.
    CowChunkOutOfRange {
        /// The COW chunk named.
        new: u64,
        /// Whole chunks in the device.
        cow_chunks: u64,
    },
    /// A record names the header or a metadata area as the chunk holding data.
    CowChunkIsMetadata {
        /// The COW chunk named.
        new: u64,
    },
    /// A record names an origin chunk beyond the origin (only with an origin bound).
    OriginChunkBeyondOrigin {
        /// The origin chunk named.
        old: u64,
        /// Chunks in the origin.
        origin_chunks: u64,
    },
    /// Two records for one origin chunk.
    OriginChunkTwice {
        /// The origin chunk.
        old: u64,
        /// The record that named it first.
        first: Location,
    },
    /// Two records share one COW chunk (two origin chunks would read the same data).
    CowChunkTwice {
        /// The COW chunk.
        new: u64,
        /// The record that named it first.
        first: Location,
    },
    /// Warning: after this area's end marker, records that are not zero: a torn area write, or a
    /// record zeroed in the middle of the area (the records after it are lost to activation).
    RecordsAfterEndMarker {
        /// Non-zero records seen after the end marker.
        records: u64,
    },
    /// Warning: the area after the store's last one holds plausible records (data chunks of its
    /// own): the last area may have been zeroed or lost, with every record after it.
    RecordsPastLastArea {
        /// The area holding them.
        area: u64,
    },
    /// Warning: the origin chunks of these records were not checked for repeats: without an origin
    /// bound, the set of origin chunks named would have passed its memory budget (see
    /// [`check_with_budget`]). Activation refuses a repeat the check did not look for.
    OriginChunksNotChecked {
        /// Records whose origin chunk was not checked.
        records: u64,
        /// The budget, in bytes.
        budget: u64,
    },
    /// Warning: no record under the header's chunk size, but another chunk size finds records: the
    /// header's chunk size may be wrong (activation would read the snapshot as the origin).
    ChunkSizeMismatch {
        /// The header's chunk size, in sectors.
        header_sectors: u32,
        /// A chunk size under which records are found, in sectors.
        found_sectors: u32,
    },
}

impl ProblemKind {
    /// True for what makes activation refuse the device; false for warnings.
    pub fn is_damage(&self) -> bool {
        !matches!(
            self,
            ProblemKind::RecordsAfterEndMarker { .. }
                | ProblemKind::RecordsPastLastArea { .. }
                | ProblemKind::OriginChunksNotChecked { .. }
                | ProblemKind::ChunkSizeMismatch { .. }
        )
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProblemKind::TooSmallForHeader { len } => {
                write!(f, "device of {len} bytes is smaller than a header")
            }
            ProblemKind::ZeroMagic => write!(
                f,
                "magic is 0: the header was wiped or the device never held a snapshot"
            ),
            ProblemKind::BadMagic { magic } => write!(
                f,
                "bad magic {magic:#010x} (expected {SNAP_MAGIC:#010x} \"SnAp\")"
            ),
            ProblemKind::BadVersion { version } => write!(
                f,
                "unsupported on-disk version {version} (only {DISK_VERSION} exists)"
            ),
            ProblemKind::BadChunkSize { sectors } => write!(
                f,
                "chunk size {sectors} sectors is not a power of two from 8 to 2^21 sectors"
            ),
            ProblemKind::TooSmallForMetadata { chunks } => write!(
                f,
                "{chunks} whole chunks: too small for the header and the first metadata area"
            ),
            ProblemKind::AreaPastEnd => write!(
                f,
                "the area before is full, but this one lies past the end of the device"
            ),
            ProblemKind::CowChunkOutOfRange { new, cow_chunks } => write!(
                f,
                "COW chunk {new} is not a data chunk of this device: it is outside its {cow_chunks} chunks"
            ),
            ProblemKind::CowChunkIsMetadata { new } => {
                write!(
                    f,
                    "COW chunk {new} is not a data chunk of this device: it is the header or a metadata area"
                )
            }
            ProblemKind::OriginChunkBeyondOrigin { old, origin_chunks } => write!(
                f,
                "origin chunk {old} is beyond the origin ({origin_chunks} chunks)"
            ),
            ProblemKind::OriginChunkTwice { old, first } => {
                write!(f, "origin chunk {old} appears twice (first at {first})")
            }
            ProblemKind::CowChunkTwice { new, first } => {
                write!(
                    f,
                    "COW chunk {new} is named by two records (first at {first})"
                )
            }
            ProblemKind::RecordsAfterEndMarker { records } => write!(
                f,
                "warning: {records} non-zero records after the end marker (a torn write, or a \
                 zeroed record hiding the ones after it)"
            ),
            ProblemKind::RecordsPastLastArea { area } => write!(
                f,
                "warning: area {area}, after the last one, holds records (the last area zeroed \
                 or lost?)"
            ),
            ProblemKind::OriginChunksNotChecked { records, budget } => write!(
                f,
                "warning: the origin chunks of {records} records were not checked for repeats \
                 (without the origin's size, the origin chunks named need more than the {budget} \
                 bytes the check may take for them)"
            ),
            ProblemKind::ChunkSizeMismatch {
                header_sectors,
                found_sectors,
            } => write!(
                f,
                "warning: no record with the header's chunk size of {header_sectors} sectors, \
                 but records with {found_sectors} sectors: a wrong chunk size in the header?"
            ),
        }
    }
}

/// One problem and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where.
    pub location: Location,
    /// What.
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.kind)
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Device size in bytes.
    pub len: u64,
    /// The header, when the device holds one.
    pub header: Option<Header>,
    /// The chunk size, when the header gives a usable one.
    pub chunk: Option<ChunkSize>,
    /// Metadata areas read.
    pub areas: u64,
    /// Records read (good or not).
    pub records: u64,
    /// Every problem, in on-disk order. At most [`MAX_PROBLEMS`]: beyond, those of each record on
    /// its own come first, then repeats of an earlier record's chunk.
    pub problems: Vec<Problem>,
    /// Problems found beyond [`MAX_PROBLEMS`], not listed.
    pub omitted: u64,
    /// Records whose origin chunk was not checked for repeats, because the set of origin chunks
    /// met would have passed its memory budget (only without an origin bound: see
    /// [`check_with_budget`]); reported as [`ProblemKind::OriginChunksNotChecked`] too.
    pub origin_unchecked: u64,
    /// What reading the store as activation does gives ([`survey`]: header, chunk size, counts,
    /// the last area's records, the largest COW chunk), found by the same pass: `Some` exactly
    /// when [`Report::activates`], so that a tool shows the status without reading the metadata
    /// again.
    ///
    /// [`survey`]: crate::store::persistent::survey
    pub scan: Option<Scan>,
}

impl Report {
    /// True when activation accepts the device: no damage, warnings allowed. (When
    /// [`Report::origin_unchecked`] is not 0, a repeated origin chunk among those records, which
    /// activation refuses, may have gone unseen.)
    pub fn activates(&self) -> bool {
        !self.problems.iter().any(|p| p.kind.is_damage())
    }

    /// True when nothing at all was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.omitted == 0
    }

    fn add(&mut self, location: Location, kind: ProblemKind) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem { location, kind });
        } else {
            self.omitted += 1;
        }
    }
}

/// Least memory budget of the origin chunks' set of a COW checked without its origin (64 MiB): over
/// 300 000 pages of 1024 chunks (a page takes 128 bytes, its pointer and 32 to 64 bytes of
/// directory), enough for an origin of 2^28 chunks (1 TiB in 4 KiB chunks) written all over, or for
/// 300 000 records scattered over an origin of any size.
pub const MIN_ORIGIN_SET_BUDGET: usize = 64 << 20;

/// The memory budget [`check`] gives the set of origin chunks of a COW of `cow_chunks` chunks
/// checked without its origin: [`MIN_ORIGIN_SET_BUDGET`], or one byte per COW chunk when that is
/// more. A store holds fewer records than the device has chunks, so this bound is fixed by the
/// device, as the bound of the COW chunks' set is (the sorting checker this replaced kept 24 bytes
/// a record).
pub fn origin_set_budget(cow_chunks: u64) -> usize {
    usize::try_from(cow_chunks)
        .unwrap_or(usize::MAX)
        .max(MIN_ORIGIN_SET_BUDGET)
}

/// Checks a persistent COW device without changing it. `origin_chunks` bounds the origin chunks
/// records may name (in the store's chunk size), as activation on an origin does; `None` when the
/// origin is not known. Errors are the device's only (I/O); everything wrong with its contents is in
/// the report.
///
/// One pass over the metadata, in memory that does not grow with the number of records: see
/// [`check_with_budget`], with the budget [`origin_set_budget`].
pub fn check(cow: &dyn BlockDevice, origin_chunks: Option<u64>) -> Result<Report> {
    check_within(cow, origin_chunks, None)
}

/// The header of `cow`, `None` when it cannot hold one.
fn header_of(cow: &dyn BlockDevice) -> Result<Option<Header>> {
    if cow.len() < HEADER_BYTES as u64 {
        return Ok(None);
    }
    let mut b = [0u8; HEADER_BYTES];
    device::read(cow, 0, &mut b)?;
    Ok(Some(Header::parse(&b)))
}

/// [`check`] with the memory budget, in bytes, of the set of origin chunks met when the origin is
/// not known (`origin_chunks` is `None`).
///
/// The records are read once, area by area. Each is checked on its own as it is read, and its
/// chunks go into two sets of chunk numbers (bitsets in pages, `check::chunk_set`): a chunk
/// already in its set is a repeat. COW chunks are below the device's chunk count (records naming
/// one outside it, or a metadata chunk, are reported and left out), so their set takes at most
/// about 1.6 bits per COW chunk; origin chunks likewise with an origin bound. Without one, an
/// origin chunk can be anything: their set grows with the range of origin chunks named, up to
/// `origin_budget` bytes; records whose origin chunk would need a page beyond it are counted in
/// [`Report::origin_unchecked`] and reported once as [`ProblemKind::OriginChunksNotChecked`] (a
/// warning) rather than taking unbounded memory.
///
/// Besides the two sets, memory holds a piece buffer (64 KiB at most) and the records of one area
/// (a chunk's worth: those of the last area are [`Report::scan`]'s, as activation keeps them).
///
/// Only a damaged device, where repeats were found, is read a second time: the first pass keeps,
/// with their counts, the [`MAX_PROBLEMS`] smallest chunks of each kind met again (what the list
/// shows: repeats of origin chunks by chunk, then of COW chunks), and the second pass finds, for
/// those alone, the record that named each first and the records that repeat it.
pub fn check_with_budget(
    cow: &dyn BlockDevice,
    origin_chunks: Option<u64>,
    origin_budget: usize,
) -> Result<Report> {
    check_within(cow, origin_chunks, Some(origin_budget))
}

/// [`check_with_budget`], the budget [`origin_set_budget`] when `None`.
fn check_within(
    cow: &dyn BlockDevice,
    origin_chunks: Option<u64>,
    origin_budget: Option<usize>,
) -> Result<Report> {
    let len = cow.len();
    let mut r = Report {
        len,
        header: None,
        chunk: None,
        areas: 0,
        records: 0,
        problems: Vec::new(),
        omitted: 0,
        origin_unchecked: 0,
        scan: None,
    };
    let Some(h) = header_of(cow)? else {
        r.add(Location::Device, ProblemKind::TooSmallForHeader { len });
        return Ok(r);
    };
    r.header = Some(h);
    if h.magic == 0 {
        r.add(Location::Header, ProblemKind::ZeroMagic);
    } else if h.magic != SNAP_MAGIC {
        r.add(Location::Header, ProblemKind::BadMagic { magic: h.magic });
    }
    if h.magic != 0 && h.version != DISK_VERSION {
        r.add(
            Location::Header,
            ProblemKind::BadVersion { version: h.version },
        );
    }
    let chunk = match ChunkSize::from_disk_sectors(h.chunk_sectors) {
        Ok(c) => c,
        Err(_) => {
            if h.magic != 0 {
                r.add(
                    Location::Header,
                    ProblemKind::BadChunkSize {
                        sectors: h.chunk_sectors,
                    },
                );
            }
            return Ok(r);
        }
    };
    r.chunk = Some(chunk);
    let cow_chunks = chunk.whole_chunks_in(len);
    if cow_chunks < 2 {
        r.add(
            Location::Device,
            ProblemKind::TooSmallForMetadata { chunks: cow_chunks },
        );
        return Ok(r);
    }
    let mut scan = Scan::empty(h, chunk);
    if !r.problems.is_empty() {
        return Ok(r);
    }
    if h.valid == 0 {
        // An invalidated store: the kernel ignores its records, and so does the check.
        r.scan = Some(scan);
        return Ok(r);
    }
    let geo = Geometry { chunk };
    let origin_budget = origin_budget.unwrap_or_else(|| origin_set_budget(cow_chunks));
    let limits = Limits {
        geo,
        cow_chunks,
        origin_chunks: origin_chunks.unwrap_or(u64::MAX),
    };
    let mut olds = Repeats::new(origin_chunks.map_or(Some(origin_budget), |_| None));
    let mut news = Repeats::new(None);
    let mut buf =
        vec![0u8; (geo.exceptions_per_area() * EXCEPTION_RECORD_BYTES).min(PIECE) as usize];
    // The records of the area being read (the last area's, once all are read).
    let mut last_area = (0u64, Vec::new());
    let end = walk(
        cow,
        geo,
        cow_chunks,
        &mut buf,
        true,
        |area, index, old, new| {
            if last_area.0 != area {
                last_area.0 = area;
                last_area.1.clear();
            }
            last_area.1.push(Exception { old, new });
            r.records += 1;
            let here = Location::Record { area, index };
            let (new_ok, old_ok) = limits.classify(old, new);
            match new_ok {
                Named::Data => {
                    news.see(new);
                    scan.max_new = scan.max_new.max(new);
                }
                Named::OutOfRange => {
                    r.add(here, ProblemKind::CowChunkOutOfRange { new, cow_chunks })
                }
                Named::Metadata => r.add(here, ProblemKind::CowChunkIsMetadata { new }),
            }
            if old_ok {
                olds.see(old);
            } else {
                r.add(
                    here,
                    ProblemKind::OriginChunkBeyondOrigin {
                        old,
                        origin_chunks: limits.origin_chunks,
                    },
                );
            }
        },
    )?;
    match end {
        End::PastEnd { area, chunk } => {
            r.areas = area;
            r.add(Location::Area { area, chunk }, ProblemKind::AreaPastEnd);
        }
        End::Marker { area, chunk, left } => {
            r.areas = area + 1;
            if left > 0 {
                r.add(
                    Location::Area { area, chunk },
                    ProblemKind::RecordsAfterEndMarker { records: left },
                );
            }
            let next = geo.area_location(area + 1);
            if next < cow_chunks && holds_records(cow, geo, next)? {
                r.add(
                    Location::Area {
                        area: area + 1,
                        chunk: next,
                    },
                    ProblemKind::RecordsPastLastArea { area: area + 1 },
                );
            }
            if last_area.0 == area {
                scan.last_area = last_area.1;
            }
        }
    }
    r.origin_unchecked = olds.unchecked;
    if olds.unchecked > 0 {
        r.add(
            Location::Device,
            ProblemKind::OriginChunksNotChecked {
                records: olds.unchecked,
                budget: origin_budget as u64,
            },
        );
    }
    if olds.count + news.count > 0 {
        name_repeats(&mut r, cow, limits, &mut buf, olds, news)?;
    }
    r.problems.sort_by_key(|p| order(p.location));
    if r.records == 0 {
        if let Some(found) = other_chunk_size(cow, chunk)? {
            r.add(
                Location::Header,
                ProblemKind::ChunkSizeMismatch {
                    header_sectors: h.chunk_sectors,
                    found_sectors: found.sectors() as u32,
                },
            );
        }
    }
    if r.activates() {
        scan.exceptions = r.records;
        scan.areas = r.areas;
        r.scan = Some(scan);
    }
    Ok(r)
}

/// What a record's COW chunk is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Named {
    /// A data chunk of the device.
    Data,
    /// Outside the device (or beyond what the engine addresses).
    OutOfRange,
    /// The header or a metadata area.
    Metadata,
}

/// What the records of a device may name.
#[derive(Clone, Copy)]
struct Limits {
    geo: Geometry,
    cow_chunks: u64,
    /// `u64::MAX` without an origin bound.
    origin_chunks: u64,
}

impl Limits {
    /// What the COW chunk `new` is, and whether the origin chunk `old` is one of the origin. A
    /// chunk that is not takes no part in the search for repeats (it is reported on its own).
    #[inline]
    fn classify(&self, old: u64, new: u64) -> (Named, bool) {
        let new_ok = if new >= self.cow_chunks || new >= MAX_COW_CHUNKS {
            Named::OutOfRange
        } else if self.geo.is_metadata_chunk(new) {
            Named::Metadata
        } else {
            Named::Data
        };
        (new_ok, old < self.origin_chunks)
    }
}

/// The chunks of one kind met so far, and those met again.
struct Repeats {
    set: ChunkSet,
    /// Records that name a chunk an earlier record named.
    count: u64,
    /// Records whose chunk the set could not say (over its budget).
    unchecked: u64,
    /// The [`MAX_PROBLEMS`] smallest chunks met again, with how many records repeat each. A chunk
    /// stays from its first repeat on or is never there: once full, the largest only goes down,
    /// so a chunk pushed out (or turned away) never comes back, and the counts kept are exact.
    smallest: BTreeMap<u64, u64>,
}

impl Repeats {
    fn new(budget: Option<usize>) -> Self {
        Repeats {
            set: ChunkSet::new(budget),
            count: 0,
            unchecked: 0,
            smallest: BTreeMap::new(),
        }
    }

    #[inline]
    fn see(&mut self, chunk: u64) {
        match self.set.insert(chunk) {
            Seen::First => {}
            Seen::Again => self.again(chunk),
            Seen::Unchecked => self.unchecked += 1,
        }
    }

    #[cold]
    fn again(&mut self, chunk: u64) {
        self.count += 1;
        if let Some(n) = self.smallest.get_mut(&chunk) {
            *n += 1;
            return;
        }
        if self.smallest.len() == MAX_PROBLEMS {
            match self.smallest.last_key_value() {
                Some((&largest, _)) if largest > chunk => {
                    self.smallest.remove(&largest);
                }
                _ => return,
            }
        }
        self.smallest.insert(chunk, 1);
    }

    /// The chunks whose repeats the list has room for (`room` at most, the smallest chunks first),
    /// with how many of their repeats to name; takes from `room` what they use.
    fn wanted(&self, room: &mut u64) -> BTreeMap<u64, Wanted> {
        let mut w = BTreeMap::new();
        for (&chunk, &n) in &self.smallest {
            if *room == 0 {
                break;
            }
            let take = n.min(*room);
            *room -= take;
            w.insert(
                chunk,
                Wanted {
                    first: None,
                    take,
                    again: Vec::new(),
                },
            );
        }
        w
    }
}

/// A repeated chunk the list names: the record that named it first, and the first `take` that
/// named it again.
struct Wanted {
    first: Option<Location>,
    take: u64,
    again: Vec<Location>,
}

impl Wanted {
    fn met(&mut self, here: Location) {
        if self.first.is_none() {
            self.first = Some(here);
        } else if (self.again.len() as u64) < self.take {
            self.again.push(here);
        }
    }
}

/// Lists the repeats the first pass counted, as many as the list has room for (by origin chunk,
/// then by COW chunk, each in disk order, as [`MAX_PROBLEMS`] says), reading the records again
/// for the records that name them; the others are counted in [`Report::omitted`].
fn name_repeats(
    r: &mut Report,
    cow: &dyn BlockDevice,
    limits: Limits,
    buf: &mut [u8],
    olds: Repeats,
    news: Repeats,
) -> Result<()> {
    let mut room = (MAX_PROBLEMS - r.problems.len().min(MAX_PROBLEMS)) as u64;
    let mut by_old = olds.wanted(&mut room);
    let mut by_new = news.wanted(&mut room);
    if !by_old.is_empty() || !by_new.is_empty() {
        walk(
            cow,
            limits.geo,
            limits.cow_chunks,
            buf,
            false,
            |area, index, old, new| {
                let here = Location::Record { area, index };
                let (new_ok, old_ok) = limits.classify(old, new);
                if old_ok {
                    if let Some(w) = by_old.get_mut(&old) {
                        w.met(here);
                    }
                }
                if new_ok == Named::Data {
                    if let Some(w) = by_new.get_mut(&new) {
                        w.met(here);
                    }
                }
            },
        )?;
    }
    let mut named = 0u64;
    for (old, w) in by_old {
        let Some(first) = w.first else { continue };
        for at in w.again {
            r.add(at, ProblemKind::OriginChunkTwice { old, first });
            named += 1;
        }
    }
    for (new, w) in by_new {
        let Some(first) = w.first else { continue };
        for at in w.again {
            r.add(at, ProblemKind::CowChunkTwice { new, first });
            named += 1;
        }
    }
    // Fewer named than counted only if the device changed between the two reads.
    r.omitted += (olds.count + news.count).saturating_sub(named);
    Ok(())
}

/// How a walk over the metadata areas ended.
enum End {
    /// Area `area`, at COW chunk `chunk`, lies past the end of the device (the one before is full).
    PastEnd { area: u64, chunk: u64 },
    /// Area `area`, at COW chunk `chunk`, holds the end marker; `left` non-zero records follow it
    /// (counted only when asked).
    Marker { area: u64, chunk: u64, left: u64 },
}

/// Calls `f(area, index, old, new)` with every record up to the end marker, in disk order, reading
/// `buf` at a time; with `count_left`, counts the non-zero records after the marker (from the piece
/// already read, then from the device), so that no byte is read twice.
fn walk(
    cow: &dyn BlockDevice,
    geo: Geometry,
    cow_chunks: u64,
    buf: &mut [u8],
    count_left: bool,
    mut f: impl FnMut(u64, u64, u64, u64),
) -> Result<End> {
    let rec = EXCEPTION_RECORD_BYTES;
    let epa = geo.exceptions_per_area();
    let mut area = 0u64;
    loop {
        let loc = geo.area_location(area);
        if loc >= cow_chunks {
            return Ok(End::PastEnd { area, chunk: loc });
        }
        let at = geo.chunk.offset_of(loc);
        let mut index = 0u64;
        while index < epa {
            let n = (epa - index).min(buf.len() as u64 / rec);
            let piece = &mut buf[..(n * rec) as usize];
            device::read(cow, at + index * rec, piece)?;
            let mut marker = None;
            for (j, raw) in piece.chunks_exact(rec as usize).enumerate() {
                let old = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
                let new = u64::from_le_bytes(raw[8..16].try_into().expect("8 bytes"));
                if new == 0 {
                    marker = Some(j);
                    break;
                }
                f(area, index + j as u64, old, new);
            }
            if let Some(j) = marker {
                let mut left = 0;
                if count_left {
                    left = non_zero(&piece[(j + 1) * rec as usize..]);
                    let last = epa.min(index + j as u64 + 1 + AFTER_END_SCAN / rec);
                    left += records_after(cow, at, index + n, last, buf)?;
                }
                return Ok(End::Marker {
                    area,
                    chunk: loc,
                    left,
                });
            }
            index += n;
        }
        area += 1;
    }
}

/// Sort key of a location: the device and the header first, then each area's records, then what
/// concerns the area as a whole.
fn order(l: Location) -> (u8, u64, u64) {
    match l {
        Location::Device => (0, 0, 0),
        Location::Header => (0, 1, 0),
        Location::Record { area, index } => (1, area, index),
        Location::Area { area, .. } => (1, area, u64::MAX),
    }
}

/// Non-zero records in `bytes`.
fn non_zero(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(EXCEPTION_RECORD_BYTES as usize)
        .filter(|r| r.iter().any(|&b| b != 0))
        .count() as u64
}

/// Non-zero records of the area at byte `at`, from record `from` to record `last`.
fn records_after(
    cow: &dyn BlockDevice,
    at: u64,
    from: u64,
    last: u64,
    buf: &mut [u8],
) -> Result<u64> {
    let rec = EXCEPTION_RECORD_BYTES;
    let mut i = from;
    let mut found = 0;
    while i < last {
        let n = (last - i).min(buf.len() as u64 / rec);
        let piece = &mut buf[..(n * rec) as usize];
        device::read(cow, at + i * rec, piece)?;
        found += non_zero(piece);
        i += n;
    }
    Ok(found)
}

/// True when the area at COW chunk `loc` starts like one a store wrote: its first record names one
/// of the data chunks that follow the area, and so does its second (a different one), unless the
/// first is the only one. Stale bytes rarely do: zeros end at once, and a repeated pattern (a copy
/// of data) names one chunk twice.
fn holds_records(cow: &dyn BlockDevice, geo: Geometry, loc: u64) -> Result<bool> {
    let mut b = [0u8; 2 * EXCEPTION_RECORD_BYTES as usize];
    let at = geo.chunk.offset_of(loc);
    if at + b.len() as u64 > cow.len() {
        return Ok(false);
    }
    device::read(cow, at, &mut b)?;
    let new =
        |i: usize| u64::from_le_bytes(b[i * 16 + 8..i * 16 + 16].try_into().expect("8 bytes"));
    let data = |n: u64| n > loc && n <= loc + geo.exceptions_per_area();
    let (first, second) = (new(0), new(1));
    Ok(data(first) && (second == 0 || (data(second) && second != first)))
}

/// Another chunk size (8 sectors to 1024, LVM's range) under which the first metadata area holds
/// a plausible first record, if any.
fn other_chunk_size(cow: &dyn BlockDevice, header: ChunkSize) -> Result<Option<ChunkSize>> {
    let mut sectors = 8u32;
    while sectors <= 1024 {
        let c = ChunkSize::from_disk_sectors(sectors)?;
        if c != header
            && c.whole_chunks_in(cow.len()) >= 3
            && holds_records(cow, Geometry { chunk: c }, 1)?
        {
            return Ok(Some(c));
        }
        sectors *= 2;
    }
    Ok(None)
}
