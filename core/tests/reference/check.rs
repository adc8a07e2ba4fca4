//! The checker as it was before it streamed (24 bytes kept per record, sorted twice once all are
//! read), kept verbatim as the reference model of `check_one_pass.rs`: the streaming checker must
//! report exactly the same problems, in the same order, with the same counts.

use cowsnap_core::check::{Location, Problem, ProblemKind, MAX_PROBLEMS};
use cowsnap_core::exception::MAX_COW_CHUNKS;
use cowsnap_core::store::persistent::{
    Geometry, Header, DISK_VERSION, EXCEPTION_RECORD_BYTES, HEADER_BYTES, SNAP_MAGIC,
};
use cowsnap_core::{BlockDevice, ChunkSize, Result};

const AFTER_END_SCAN: u64 = 1 << 20;
const PIECE: u64 = 64 * 1024;

fn read(cow: &dyn BlockDevice, at: u64, buf: &mut [u8]) -> Result<()> {
    cow.read_at(at, buf)
}

/// What the old checker reported (its `Report` without the header and chunk size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub len: u64,
    pub header: Option<Header>,
    pub chunk: Option<ChunkSize>,
    pub areas: u64,
    pub records: u64,
    pub problems: Vec<Problem>,
    pub omitted: u64,
}

impl Report {
    fn add(&mut self, location: Location, kind: ProblemKind) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem { location, kind });
        } else {
            self.omitted += 1;
        }
    }
}

/// Checks a persistent COW device without changing it. `origin_chunks` bounds the origin chunks
/// records may name (in the store's chunk size), as activation on an origin does; `None` when the
/// origin is not known. Errors are the device's only (I/O); everything wrong with its contents is in
/// the report.
pub fn check(cow: &dyn BlockDevice, origin_chunks: Option<u64>) -> Result<Report> {
    let len = cow.len();
    let mut r = Report {
        len,
        header: None,
        chunk: None,
        areas: 0,
        records: 0,
        problems: Vec::new(),
        omitted: 0,
    };
    if len < HEADER_BYTES as u64 {
        r.add(Location::Device, ProblemKind::TooSmallForHeader { len });
        return Ok(r);
    }
    let mut b = [0u8; HEADER_BYTES];
    read(cow, 0, &mut b)?;
    let h = Header::parse(&b);
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
    if !r.problems.is_empty() || h.valid == 0 {
        // Not a store activation would read (or an invalidated one: the kernel ignores its records).
        return Ok(r);
    }
    let origin_chunks = origin_chunks.unwrap_or(u64::MAX);
    let geo = Geometry { chunk };
    let epa = geo.exceptions_per_area();
    let rec = EXCEPTION_RECORD_BYTES;
    // Every record as (origin chunk, COW chunk, position), for the repeats once all are read:
    // 24 bytes a record, sorted in place (no map with a node per record).
    let mut seen: Vec<(u64, u64, u64)> = Vec::new();
    let mut buf = vec![0u8; (epa * rec).min(PIECE) as usize];
    let mut area = 0u64;
    loop {
        let loc = geo.area_location(area);
        if loc >= cow_chunks {
            r.add(
                Location::Area { area, chunk: loc },
                ProblemKind::AreaPastEnd,
            );
            break;
        }
        let at = chunk.offset_of(loc);
        r.areas += 1;
        // Records up to the end marker, piece by piece.
        let mut index = 0u64;
        let mut ended = false;
        while index < epa && !ended {
            let n = (epa - index).min(buf.len() as u64 / rec);
            let piece = &mut buf[..(n * rec) as usize];
            read(cow, at + index * rec, piece)?;
            for raw in piece.chunks_exact(rec as usize) {
                let old = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
                let new = u64::from_le_bytes(raw[8..16].try_into().expect("8 bytes"));
                if new == 0 {
                    ended = true;
                    break;
                }
                let here = Location::Record { area, index };
                r.records += 1;
                let mut pos = area * epa + index;
                if new >= cow_chunks || new >= MAX_COW_CHUNKS {
                    r.add(here, ProblemKind::CowChunkOutOfRange { new, cow_chunks });
                    pos |= NEW_BAD;
                } else if geo.is_metadata_chunk(new) {
                    r.add(here, ProblemKind::CowChunkIsMetadata { new });
                    pos |= NEW_BAD;
                }
                if old >= origin_chunks {
                    r.add(
                        here,
                        ProblemKind::OriginChunkBeyondOrigin { old, origin_chunks },
                    );
                    pos |= OLD_BAD;
                }
                seen.push((old, new, pos));
                index += 1;
            }
        }
        if !ended {
            area += 1;
            continue;
        }
        // The last area: what follows its end marker, then the area after it.
        let left = records_after(cow, at, index + 1, epa, &mut buf)?;
        if left > 0 {
            r.add(
                Location::Area { area, chunk: loc },
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
        break;
    }
    repeats(&mut r, &mut seen, epa);
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
    Ok(r)
}

/// Marks, in a record's position, that its COW chunk or its origin chunk is already reported (and so
/// takes no part in the search for repeats).
const NEW_BAD: u64 = 1 << 63;
const OLD_BAD: u64 = 1 << 62;

/// The place of the record at `pos` (area by area, `epa` records each).
fn record_at(pos: u64, epa: u64) -> Location {
    let pos = pos & !(NEW_BAD | OLD_BAD);
    Location::Record {
        area: pos / epa,
        index: pos % epa,
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

/// Reports every record that repeats an origin chunk or a COW chunk of an earlier record (in disk
/// order), naming that first record.
fn repeats(r: &mut Report, seen: &mut [(u64, u64, u64)], epa: u64) {
    let real = |pos: u64| pos & !(NEW_BAD | OLD_BAD);
    seen.sort_unstable_by_key(|&(old, _, pos)| (pos & OLD_BAD, old, real(pos)));
    for run in runs(seen, |a, b| a.0 == b.0 && a.2 & OLD_BAD == b.2 & OLD_BAD) {
        if run[0].2 & OLD_BAD != 0 {
            continue;
        }
        let first = record_at(run[0].2, epa);
        for &(old, _, pos) in &run[1..] {
            r.add(
                record_at(pos, epa),
                ProblemKind::OriginChunkTwice { old, first },
            );
        }
    }
    seen.sort_unstable_by_key(|&(_, new, pos)| (pos & NEW_BAD, new, real(pos)));
    for run in runs(seen, |a, b| a.1 == b.1 && a.2 & NEW_BAD == b.2 & NEW_BAD) {
        if run[0].2 & NEW_BAD != 0 {
            continue;
        }
        let first = record_at(run[0].2, epa);
        for &(_, new, pos) in &run[1..] {
            r.add(
                record_at(pos, epa),
                ProblemKind::CowChunkTwice { new, first },
            );
        }
    }
}

/// The runs of neighbours that are `same` (what `slice::chunk_by` does, after rust-version 1.75).
fn runs<'a, T>(
    v: &'a [T],
    same: impl Fn(&T, &T) -> bool + 'a,
) -> impl Iterator<Item = &'a [T]> + 'a {
    let mut rest = v;
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = 1 + rest.windows(2).take_while(|w| same(&w[0], &w[1])).count();
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

/// Non-zero records of the area at byte `at` from record `from` on (at most [`AFTER_END_SCAN`]
/// bytes of them).
fn records_after(
    cow: &dyn BlockDevice,
    at: u64,
    from: u64,
    epa: u64,
    buf: &mut [u8],
) -> Result<u64> {
    let rec = EXCEPTION_RECORD_BYTES;
    let last = epa.min(from + AFTER_END_SCAN / rec);
    let mut i = from;
    let mut found = 0;
    while i < last {
        let n = (last - i).min(buf.len() as u64 / rec);
        let piece = &mut buf[..(n * rec) as usize];
        read(cow, at + i * rec, piece)?;
        found += piece
            .chunks_exact(rec as usize)
            .filter(|r| r.iter().any(|&b| b != 0))
            .count() as u64;
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
    read(cow, at, &mut b)?;
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
