//! The streaming checker (`cowsnap_core::check`, one pass, chunk bitsets) against the checker it
//! replaced (kept verbatim in `reference/check.rs`: every record kept, sorted twice): the same
//! problems in the same order, the same counts, on random stores with repeated origin and COW
//! chunks, chunks out of range, metadata chunks, end markers in the middle, bytes after the end
//! and areas past the device's end. Then: a clean store is read once (no byte twice), the status
//! it gives is activation's (`survey`), and a bare COW's origin set keeps to its budget.

use std::sync::{Arc, Mutex};

use cowsnap_core::check::{
    check, check_with_budget, origin_set_budget, Location, ProblemKind, Report,
    MIN_ORIGIN_SET_BUDGET,
};
use cowsnap_core::store::persistent::survey;
use cowsnap_core::testkit::device::{Access, Hooked, Verdict};
use cowsnap_core::MemDevice;
use proptest::prelude::*;

#[path = "reference/check.rs"]
mod reference;

const EPA: u64 = 256; // records per area with 4 KiB chunks
const C: usize = 4096;

fn loc(area: u64) -> u64 {
    1 + area * (EPA + 1)
}

fn set_record(img: &mut [u8], p: u64, old: u64, new: u64) {
    let at = (loc(p / EPA) * C as u64 + p % EPA * 16) as usize;
    if at + 16 <= img.len() {
        img[at..at + 8].copy_from_slice(&old.to_le_bytes());
        img[at + 8..at + 16].copy_from_slice(&new.to_le_bytes());
    }
}

fn header(img: &mut [u8]) {
    img[0..4].copy_from_slice(&0x7041_6E53u32.to_le_bytes());
    img[4..8].copy_from_slice(&1u32.to_le_bytes());
    img[8..12].copy_from_slice(&1u32.to_le_bytes());
    img[12..16].copy_from_slice(&8u32.to_le_bytes());
}

/// The `p`-th data chunk of a 4 KiB-chunk COW (allocation order).
fn data_chunk(p: u64) -> u64 {
    loc(p / EPA) + 1 + p % EPA
}

/// How a random record is made: (kind of origin chunk, value, kind of COW chunk, value).
type Spec = (u8, u64, u8, u64);

/// A COW image from `records` specs: `extra` chunks after what the records need (negative: the
/// device ends before, down to cutting the last area off), then `tail` bytes written after the
/// records (what follows an end marker).
fn image(records: &[Spec], extra: i64, tail: &[(u16, u8)]) -> Vec<u8> {
    let n = records.len() as u64;
    let need = data_chunk(n) + 1;
    let chunks = (need as i64 + extra).max(2) as usize;
    let mut img = vec![0u8; chunks * C];
    header(&mut img);
    let cow_chunks = chunks as u64;
    for (p, &(ko, xo, kn, xn)) in records.iter().enumerate() {
        let p = p as u64;
        let old = match ko % 4 {
            0 => xo % 40,   // repeats
            1 => xo % 5000, // a few repeats, some beyond small origins
            2 => xo,        // anywhere
            _ => p,         // distinct
        };
        let new = match kn % 8 {
            0 => xn % (cow_chunks + 8), // repeats, out of range, metadata
            1 => loc(xn % 6),           // a metadata chunk
            2 if xn % 16 == 0 => 0,     // an end marker in the middle
            3 => xn,                    // anywhere
            _ => data_chunk(p),         // what the kernel writes
        };
        set_record(&mut img, p, old, new);
    }
    // Bytes after the records: after the end marker, in the area after, anywhere.
    let after = (loc(n / EPA) * C as u64 + (n % EPA) * 16 + 16) as usize;
    for &(off, b) in tail {
        let at = after + off as usize * 7;
        if at < img.len() {
            img[at] = b;
        }
    }
    img
}

/// (location, kind) of every problem, for exact comparisons.
fn found(r: &Report) -> Vec<(Location, ProblemKind)> {
    r.problems
        .iter()
        .map(|p| (p.location, p.kind.clone()))
        .collect()
}

fn same_as_reference(img: &[u8], origin: Option<u64>) -> Report {
    let dev = MemDevice::from_vec(img.to_vec());
    let new = check(&dev, origin).unwrap();
    let old = reference::check(&dev, origin).unwrap();
    let old_found: Vec<_> = old
        .problems
        .iter()
        .map(|p| (p.location, p.kind.clone()))
        .collect();
    assert_eq!(found(&new), old_found);
    assert_eq!(new.omitted, old.omitted);
    assert_eq!(
        (new.len, new.header, new.chunk, new.areas, new.records),
        (old.len, old.header, old.chunk, old.areas, old.records)
    );
    assert_eq!(new.origin_unchecked, 0);
    // The status comes from the same pass: what activation's scan finds, exactly when it
    // activates.
    match survey(&dev, origin) {
        Ok(s) => {
            assert!(new.activates(), "survey reads it: {:?}", found(&new));
            assert_eq!(new.scan.as_ref(), Some(&s));
        }
        Err(e) => {
            assert!(
                !new.activates(),
                "survey refuses it ({e}), the check does not"
            );
            assert_eq!(new.scan, None);
        }
    }
    new
}

/// The reads of `check` on `img`, as (offset, length).
fn reads_of(img: &[u8], origin: Option<u64>) -> (Report, Vec<(u64, usize)>) {
    let reads = Arc::new(Mutex::new(Vec::new()));
    let log = reads.clone();
    let dev = Hooked::new(MemDevice::from_vec(img.to_vec()), move |a| {
        if let Access::Read { offset, len } = a {
            log.lock().unwrap().push((offset, len));
        }
        Verdict::Pass
    });
    let r = check(&dev, origin).unwrap();
    let v = reads.lock().unwrap().clone();
    (r, v)
}

/// Panics if a byte is read twice; returns the bytes read.
fn no_byte_twice(reads: &[(u64, usize)]) -> u64 {
    let mut v = reads.to_vec();
    v.sort_unstable();
    for w in v.windows(2) {
        assert!(
            w[0].0 + w[0].1 as u64 <= w[1].0,
            "bytes read twice: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    v.iter().map(|r| r.1 as u64).sum()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    (any::<u8>(), any::<u64>(), any::<u8>(), any::<u64>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn reports_what_the_sorting_checker_reported(
        records in prop_oneof![
            proptest::collection::vec(spec(), 0..40),
            proptest::collection::vec(spec(), 200..700),
            // Past MAX_PROBLEMS: which repeats are listed and how many are omitted.
            proptest::collection::vec(spec(), 1000..1600),
        ],
        extra in -300i64..40,
        tail in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..4),
        origin in proptest::option::of(0u64..6000),
        hdr in proptest::option::of((0usize..4, prop_oneof![
            Just(0u32), Just(1), Just(16), Just(32), Just(0x7041_6E53), any::<u32>()
        ])),
    ) {
        let mut img = image(&records, extra, &tail);
        // Sometimes a header field changed: a wiped or foreign magic, an invalidated store, an
        // unknown version, another chunk size (the records read under another geometry).
        if let Some((field, v)) = hdr {
            img[field * 4..field * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        same_as_reference(&img, origin);
    }

    #[test]
    fn many_repeats(
        n in 300u64..3000,
        olds in prop_oneof![1u64..30, 400u64..1500],
        news in prop_oneof![1u64..30, 400u64..1500],
        first_news in 0u64..400,
    ) {
        // Thousands of repeats of a few chunks, or of more chunks than the list has room for,
        // both kinds.
        let chunks = data_chunk(n) + 1;
        let mut img = vec![0u8; chunks as usize * C];
        header(&mut img);
        for p in 0..n {
            let new = if p < first_news { data_chunk(p) } else { data_chunk(p % news) };
            set_record(&mut img, p, (p * 7) % olds + (p % 3) * 5000, new);
        }
        same_as_reference(&img, None);
    }

    #[test]
    fn each_of_more_chunks_than_the_list_holds_named_twice(
        m in 900u64..1300,
        k in 1u64..1000,
        cow_too in any::<bool>(),
    ) {
        // Every origin chunk (and, with `cow_too`, every COW chunk) named exactly twice, the
        // second times in a scattered order: which ones the list has room for is decided by the
        // smallest chunks, not by the order they are met again.
        let n = 2 * m;
        let chunks = data_chunk(n) + 1;
        let mut img = vec![0u8; chunks as usize * C];
        header(&mut img);
        let step = (0..).map(|d| k + d).find(|s| gcd(*s, m) == 1).unwrap();
        for p in 0..n {
            let q = if p < m { p } else { (p - m) * step % m };
            let new = if cow_too { data_chunk(q) } else { data_chunk(p) };
            set_record(&mut img, p, q * 3 + 1, new);
        }
        same_as_reference(&img, None);
    }

    #[test]
    fn a_clean_store_is_read_once(
        n in 0u64..1200,
        spare in 0u64..600,
        seed in any::<u64>(),
    ) {
        let chunks = data_chunk(n) + 1 + spare;
        let mut img = vec![0u8; chunks as usize * C];
        header(&mut img);
        for p in 0..n {
            // Distinct origin chunks in a scattered order.
            set_record(&mut img, p, p.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed, data_chunk(p));
        }
        for origin in [None, Some(u64::MAX)] {
            let (r, reads) = reads_of(&img, origin);
            prop_assert!(r.is_clean(), "{:?}", found(&r));
            prop_assert_eq!(r.records, n);
            let bytes = no_byte_twice(&reads);
            // Every record and the end marker were read.
            prop_assert!(bytes >= 16 + (n + 1) * 16);
            let s = r.scan.unwrap();
            prop_assert_eq!(s.exceptions, n);
            prop_assert_eq!(s.last_area.len() as u64, n % EPA);
        }
    }
}

#[test]
fn repeats_are_read_again_for_their_names_only_when_there_are_some() {
    // A kernel-written store, then the same with one origin chunk named twice: the first is read
    // once, the second twice (the second pass names the records).
    let n = 3 * EPA + 10;
    let chunks = data_chunk(n) + 1;
    let mut img = vec![0u8; chunks as usize * C];
    header(&mut img);
    for p in 0..n {
        set_record(&mut img, p, p, data_chunk(p));
    }
    let (r, clean) = reads_of(&img, None);
    assert!(r.is_clean());
    let once = no_byte_twice(&clean);
    set_record(&mut img, n - 1, 5, data_chunk(n - 1));
    let (r, damaged) = reads_of(&img, None);
    assert_eq!(
        found(&r),
        [(
            Location::Record {
                area: (n - 1) / EPA,
                index: (n - 1) % EPA
            },
            ProblemKind::OriginChunkTwice {
                old: 5,
                first: Location::Record { area: 0, index: 5 }
            }
        )]
    );
    let twice: u64 = damaged.iter().map(|r| r.1 as u64).sum();
    assert!(
        twice > once + n * 16,
        "{twice} bytes read, {once} when clean"
    );
}

#[test]
fn a_bare_cows_origin_set_keeps_to_its_budget() {
    // Records scattered over 2^60 origin chunks: each needs its own page of the origin set.
    let n = 4000u64;
    let chunks = data_chunk(n) + 1;
    let mut img = vec![0u8; chunks as usize * C];
    header(&mut img);
    let old = |p: u64| p.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 4;
    for p in 0..n {
        set_record(&mut img, p, old(p), data_chunk(p));
    }
    // Record 3000 names the origin chunk of record 1: within the budget's pages, it is seen.
    set_record(&mut img, 3000, old(1), data_chunk(3000));
    let dev = MemDevice::from_vec(img.clone());
    let r = check_with_budget(&dev, None, 64 << 10).unwrap();
    assert!(r.origin_unchecked > 0 && r.origin_unchecked < n);
    assert!(
        r.problems.iter().any(|p| p.location == Location::Device
            && p.kind
                == ProblemKind::OriginChunksNotChecked {
                    records: r.origin_unchecked,
                    budget: 64 << 10
                }),
        "{:?}",
        found(&r)
    );
    assert!(r.problems.iter().any(|p| p.kind
        == ProblemKind::OriginChunkTwice {
            old: old(1),
            first: Location::Record { area: 0, index: 1 }
        }));
    assert!(!r.activates());
    // The default budget holds them all: the same report as the sorting checker.
    assert!(origin_set_budget(chunks) == MIN_ORIGIN_SET_BUDGET);
    let r = same_as_reference(&img, None);
    assert_eq!(r.problems.len(), 1);
    // Without the repeat, a warning only: the store activates as far as the check could see.
    set_record(&mut img, 3000, old(3000), data_chunk(3000));
    let r = check_with_budget(&MemDevice::from_vec(img), None, 64 << 10).unwrap();
    assert!(r.activates() && r.scan.is_some() && r.origin_unchecked > 0);
    assert_eq!(r.problems.len(), 1, "{:?}", found(&r));
}
