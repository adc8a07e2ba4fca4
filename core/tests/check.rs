//! The checker (`cowsnap_core::check`): clean on every store the engine wrote; on corrupt images
//! built here, every problem with its location, several at once; and it agrees with activation
//! (damage found exactly when activation refuses) on random damage. (The kernel's images, in
//! `vectors.rs`, and the fuzz corpus, in `fuzz_corpus.rs`, are checked where the repository's files
//! are read.)

use cowsnap_core::check::{check, Location, ProblemKind, Report, MAX_PROBLEMS};
use cowsnap_core::{ChunkSize, MemDevice, SnapshotOptions, Volume};
use proptest::prelude::*;

const EPA: u64 = 256; // records per area with 4 KiB chunks
const C: usize = 4096;

fn loc(area: u64) -> u64 {
    1 + area * (EPA + 1)
}

/// A dm persistent COW (4 KiB chunks) holding `olds` in allocation order, each in the next data
/// chunk, with `spare` data chunks after the last.
fn dm_cow(olds: &[u64], spare: u64) -> Vec<u8> {
    let n = olds.len() as u64;
    let chunks = loc(n / EPA) + 1 + n % EPA + spare;
    let mut img = vec![0u8; chunks as usize * C];
    img[0..4].copy_from_slice(&0x7041_6E53u32.to_le_bytes());
    img[4..8].copy_from_slice(&1u32.to_le_bytes());
    img[8..12].copy_from_slice(&1u32.to_le_bytes());
    img[12..16].copy_from_slice(&8u32.to_le_bytes());
    for (p, &old) in olds.iter().enumerate() {
        let p = p as u64;
        set_record(&mut img, p / EPA, p % EPA, old, loc(p / EPA) + 1 + p % EPA);
    }
    img
}

fn set_record(img: &mut [u8], area: u64, i: u64, old: u64, new: u64) {
    let at = (loc(area) * C as u64 + i * 16) as usize;
    img[at..at + 8].copy_from_slice(&old.to_le_bytes());
    img[at + 8..at + 16].copy_from_slice(&new.to_le_bytes());
}

fn run(img: &[u8], origin_chunks: Option<u64>) -> Report {
    check(&MemDevice::from_vec(img.to_vec()), origin_chunks).unwrap()
}

/// (location, kind) of every problem, for exact comparisons.
fn found(r: &Report) -> Vec<(Location, ProblemKind)> {
    r.problems
        .iter()
        .map(|p| (p.location, p.kind.clone()))
        .collect()
}

fn rec(area: u64, index: u64) -> Location {
    Location::Record { area, index }
}

/// What activation on an origin of `origin_chunks` 4 KiB chunks says.
fn activates(img: &[u8], origin_chunks: u64) -> bool {
    let mut vol = Volume::new(MemDevice::new(origin_chunks as usize * C));
    vol.activate_snapshot(
        MemDevice::from_vec(img.to_vec()),
        SnapshotOptions::default(),
    )
    .is_ok()
}

#[test]
fn engine_stores_are_clean_through_writes_areas_and_merges() {
    let mut vol = Volume::new(MemDevice::new(4 << 20));
    let opts = SnapshotOptions {
        chunk_size: ChunkSize::new(4096).unwrap(),
        ..Default::default()
    };
    let a = vol.create_snapshot(MemDevice::new(3 << 20), opts).unwrap();
    let b = vol.create_snapshot(MemDevice::new(3 << 20), opts).unwrap();
    vol.set_commit_bytes(0);
    for (i, c) in (0..600u64).map(|i| (i, i * 7 % 1024)) {
        vol.write_at(c * 4096, &[(i % 250) as u8 + 1; 100]).unwrap();
    }
    vol.flush().unwrap();
    for id in [a, b] {
        let r = check(vol.snapshot_cow(id).unwrap(), Some(1024)).unwrap();
        assert!(r.is_clean(), "{:?}", r.problems);
        assert_eq!((r.records, r.areas), (600, 3));
    }
    // Stopped half way: a merge leaves records of a state the kernel could have written. Steps of
    // 100 chunks, so that the first ones end inside a metadata area and then cross one.
    vol.set_merge_step_bytes(100 * 4096);
    assert!(!vol.merge_begin(a).unwrap().done);
    assert!(!vol.merge_step(a).unwrap().done);
    let r = check(vol.snapshot_cow(a).unwrap(), Some(1024)).unwrap();
    assert!(r.is_clean(), "{:?}", r.problems);
    assert!(r.records < 600);
    while !vol.merge_step(a).unwrap().done {
        let r = check(vol.snapshot_cow(a).unwrap(), Some(1024)).unwrap();
        assert!(r.is_clean(), "{:?}", r.problems);
    }
    let cow = vol.merge_finish(a).unwrap();
    let r = check(&cow, Some(1024)).unwrap();
    assert!(r.is_clean(), "{:?}", r.problems);
    assert_eq!(r.records, 0);
}

#[test]
fn header_problems_are_all_reported() {
    let r = run(&[0u8; 8], None);
    assert_eq!(
        found(&r),
        [(Location::Device, ProblemKind::TooSmallForHeader { len: 8 })]
    );
    let r = run(&vec![0u8; 4 * C], None);
    assert_eq!(found(&r), [(Location::Header, ProblemKind::ZeroMagic)]);
    assert!(!r.activates());
    // Magic, version and chunk size all wrong: three problems, not the first only.
    let mut img = dm_cow(&[1, 2], 2);
    img[0..4].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    img[8..12].copy_from_slice(&7u32.to_le_bytes());
    img[12..16].copy_from_slice(&3u32.to_le_bytes());
    assert_eq!(
        found(&run(&img, None)),
        [
            (
                Location::Header,
                ProblemKind::BadMagic { magic: 0x1234_5678 }
            ),
            (Location::Header, ProblemKind::BadVersion { version: 7 }),
            (Location::Header, ProblemKind::BadChunkSize { sectors: 3 }),
        ]
    );
    // A header below LVM's 8-sector minimum is refused like activation refuses it.
    let mut img = dm_cow(&[], 2);
    img[12..16].copy_from_slice(&4u32.to_le_bytes());
    assert_eq!(
        found(&run(&img, None)),
        [(Location::Header, ProblemKind::BadChunkSize { sectors: 4 })]
    );
    // Room for the header chunk only.
    let r = run(&dm_cow(&[], 0)[..C + 100], None);
    assert_eq!(
        found(&r),
        [(
            Location::Device,
            ProblemKind::TooSmallForMetadata { chunks: 1 }
        )]
    );
}

#[test]
fn every_bad_record_is_reported_with_its_place() {
    let olds: Vec<u64> = (0..300).collect();
    let mut img = dm_cow(&olds, 0);
    let cow_chunks = (img.len() / C) as u64;
    set_record(&mut img, 0, 3, 3, cow_chunks + 5); // outside the device
    set_record(&mut img, 0, 10, 10, loc(1)); // a metadata area
    set_record(&mut img, 0, 20, 20, loc(0)); // the first metadata area
    set_record(&mut img, 0, 30, 5, loc(0) + 1 + 30); // origin chunk 5 again
    set_record(&mut img, 1, 4, 1000, loc(0) + 1 + 40); // COW chunk of record 40 of area 0
    set_record(&mut img, 1, 5, 99_999, loc(1) + 1 + 5); // beyond a 4096-chunk origin
    let r = run(&img, Some(4096));
    assert_eq!(
        found(&r),
        [
            (
                rec(0, 3),
                ProblemKind::CowChunkOutOfRange {
                    new: cow_chunks + 5,
                    cow_chunks
                }
            ),
            (rec(0, 10), ProblemKind::CowChunkIsMetadata { new: loc(1) }),
            (rec(0, 20), ProblemKind::CowChunkIsMetadata { new: loc(0) }),
            (
                rec(0, 30),
                ProblemKind::OriginChunkTwice {
                    old: 5,
                    first: rec(0, 5)
                }
            ),
            (
                rec(1, 4),
                ProblemKind::CowChunkTwice {
                    new: loc(0) + 1 + 40,
                    first: rec(0, 40)
                }
            ),
            (
                rec(1, 5),
                ProblemKind::OriginChunkBeyondOrigin {
                    old: 99_999,
                    origin_chunks: 4096
                }
            ),
        ]
    );
    assert_eq!((r.areas, r.records), (2, 300));
    assert!(!r.activates() && !activates(&img, 4096));
    // Without an origin, the origin bound is not checked.
    assert_eq!(run(&img, None).problems.len(), 5);
    // The texts name the place.
    let text: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        text[3],
        "record 30 of area 0: origin chunk 5 appears twice (first at record 5 of area 0)"
    );
}

#[test]
fn a_full_last_area_needs_the_next_one_on_the_device() {
    let olds: Vec<u64> = (0..EPA).collect();
    let whole = dm_cow(&olds, 0); // area 1 (empty) in its last chunk
    let img = &whole[..loc(1) as usize * C]; // ends right after area 0's data chunks
    let r = run(img, None);
    assert_eq!(
        found(&r),
        [(
            Location::Area {
                area: 1,
                chunk: loc(1)
            },
            ProblemKind::AreaPastEnd
        )]
    );
    assert!(!r.activates() && !activates(img, 1024));
    // One chunk more holds the (empty) area 1: clean.
    assert!(run(&whole, None).is_clean());
}

#[test]
fn zeroed_and_torn_records_are_warnings() {
    // A record zeroed in the middle of the last area: activation stops there and loses the rest.
    let olds: Vec<u64> = (100..110).collect();
    let mut img = dm_cow(&olds, 2);
    set_record(&mut img, 0, 3, 0, 0);
    let r = run(&img, Some(1024));
    assert_eq!(
        found(&r),
        [(
            Location::Area {
                area: 0,
                chunk: loc(0)
            },
            ProblemKind::RecordsAfterEndMarker { records: 6 }
        )]
    );
    assert_eq!(r.records, 3);
    assert!(
        r.activates() && activates(&img, 1024),
        "a warning, as the kernel reads it"
    );
    assert!(!r.is_clean());
    // A zeroed area in the middle: the store seems to end there, the next area holds records.
    let olds: Vec<u64> = (0..600).collect();
    let mut img = dm_cow(&olds, 0);
    let a1 = loc(1) as usize * C;
    img[a1..a1 + C].fill(0);
    let r = run(&img, Some(1024));
    assert_eq!(
        found(&r),
        [(
            Location::Area {
                area: 2,
                chunk: loc(2)
            },
            ProblemKind::RecordsPastLastArea { area: 2 }
        )]
    );
    assert!(r.activates());
    // Stale bytes after the last area are not records: a copy of data repeats one value.
    let mut img = dm_cow(&(0..10).collect::<Vec<_>>(), 247);
    let a1 = loc(1) as usize * C;
    for w in img[a1..a1 + C].chunks_mut(8) {
        w.copy_from_slice(&(loc(1) + 1).to_le_bytes());
    }
    let r = run(&img, Some(1024));
    assert!(
        !r.problems
            .iter()
            .any(|p| matches!(p.kind, ProblemKind::RecordsPastLastArea { .. })),
        "{:?}",
        r.problems
    );
}

#[test]
fn a_wrong_chunk_size_in_the_header_is_a_warning() {
    // Written with 8 KiB chunks (epa 512), the header says 4 KiB: no record where 4 KiB puts area 0.
    let cb = 8192usize;
    let mut img = vec![0u8; 8 * cb];
    img[0..4].copy_from_slice(&0x7041_6E53u32.to_le_bytes());
    img[4..8].copy_from_slice(&1u32.to_le_bytes());
    img[8..12].copy_from_slice(&1u32.to_le_bytes());
    img[12..16].copy_from_slice(&16u32.to_le_bytes());
    for (i, old) in [7u64, 9, 11].iter().enumerate() {
        let at = cb + i * 16;
        img[at..at + 8].copy_from_slice(&old.to_le_bytes());
        img[at + 8..at + 16].copy_from_slice(&(2 + i as u64).to_le_bytes());
    }
    assert!(run(&img, None).is_clean());
    img[12..16].copy_from_slice(&8u32.to_le_bytes());
    let r = run(&img, None);
    assert_eq!(
        found(&r),
        [(
            Location::Header,
            ProblemKind::ChunkSizeMismatch {
                header_sectors: 8,
                found_sectors: 16
            }
        )]
    );
    assert!(r.activates());
}

#[test]
fn an_invalidated_store_is_not_read() {
    let mut img = dm_cow(&[1, 2, 3], 1);
    set_record(&mut img, 0, 1, 1, 1); // would be damage in a valid store
    img[4..8].copy_from_slice(&0u32.to_le_bytes());
    let r = run(&img, None);
    assert!(r.is_clean(), "{:?}", r.problems);
    assert_eq!(r.records, 0);
}

#[test]
fn garbage_lists_at_most_max_problems() {
    let olds: Vec<u64> = (0..5 * EPA).collect();
    let mut img = dm_cow(&olds, 1);
    for p in 0..5 * EPA {
        set_record(&mut img, p / EPA, p % EPA, 7, 1); // metadata chunk, origin chunk 7 again
    }
    let r = run(&img, None);
    assert_eq!(r.problems.len(), MAX_PROBLEMS);
    // Each record: its COW chunk is metadata; all but the first repeat origin chunk 7.
    assert_eq!(r.problems.len() as u64 + r.omitted, 2 * 5 * EPA - 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random damage (bytes set anywhere in the header and the first areas of a two-area store):
    /// the checker finds damage exactly when activation refuses.
    #[test]
    fn agrees_with_activation_on_random_damage(
        hits in proptest::collection::vec((0usize..(3 * C + 2 * 16 * 40), any::<u8>()), 1..6)
    ) {
        let olds: Vec<u64> = (0..300u64).map(|i| i * 3 % 700).collect();
        let mut img = dm_cow(&olds, 2);
        let area1 = loc(1) as usize * C;
        for (at, b) in hits {
            // Header and area 0 for the first 3 chunks' worth, then area 1's first records.
            let at = if at < 3 * C { at % (2 * C) } else { area1 + (at - 3 * C) };
            img[at] = b;
        }
        let r = run(&img, Some(1024));
        prop_assert_eq!(r.activates(), activates(&img, 1024), "{:?}", r.problems);
    }
}
