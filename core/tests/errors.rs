//! Every error path of the core API, and the exact bytes the spec pins.

mod common;

use common::no_grow;
use cowsnap_core::store::persistent::{Geometry, SNAP_MAGIC};
use cowsnap_core::testkit::device::{Access, Hooked, SharedMem, Verdict};
use cowsnap_core::{
    Autoextend, ChunkSize, Error, ErrorCode, MemDevice, OverflowMode, SnapshotId, SnapshotOptions,
    SnapshotState, StoreKind, Volume,
};

fn opts(chunk: u64) -> SnapshotOptions {
    SnapshotOptions {
        chunk_size: ChunkSize::new(chunk).unwrap(),
        ..Default::default()
    }
}

fn cow_bytes(vol: &Volume, id: SnapshotId) -> Vec<u8> {
    let cow = vol.snapshot_cow(id).unwrap();
    let mut v = vec![0u8; cow.len() as usize];
    cow.read_at(0, &mut v).unwrap();
    v
}

#[test]
fn out_of_range_io_is_refused_and_changes_nothing() {
    let mut vol = Volume::new(MemDevice::new(10_000));
    let s = vol
        .create_snapshot(MemDevice::new(64 << 10), opts(4096))
        .unwrap();
    let before = cow_bytes(&vol, s);
    let e = vol.write_at(9_999, &[1, 2]).unwrap_err();
    assert_eq!(
        e,
        Error::OutOfRange {
            offset: 9_999,
            len: 2,
            size: 10_000
        }
    );
    assert_eq!(e.code(), ErrorCode::OutOfRange);
    assert!(vol.write_at(u64::MAX, &[1]).is_err());
    assert!(vol.read_at(10_000, &mut [0]).is_err());
    assert!(vol.snapshot_read_at(s, 5_000, &mut [0; 6_000]).is_err());
    assert!(vol.snapshot_write_at(s, 10_000, &[0]).is_err());
    assert_eq!(
        cow_bytes(&vol, s),
        before,
        "a refused write touched the COW"
    );
    let mut b = [9u8; 2];
    vol.read_at(9_998, &mut b).unwrap();
    assert_eq!(b, [0, 0]);
    // Zero-length I/O at the very end is fine.
    vol.write_at(10_000, &[]).unwrap();
}

#[test]
fn bad_chunk_sizes_are_refused() {
    for bytes in [0u64, 512, 2048, 3 * 4096, 1 << 20] {
        assert_eq!(ChunkSize::new(bytes), Err(Error::BadChunkSize { bytes }));
    }
    assert_eq!(
        Error::BadChunkSize { bytes: 2048 }.code(),
        ErrorCode::BadChunkSize
    );
}

#[test]
fn cow_too_small_is_refused() {
    let mut vol = Volume::new(MemDevice::new(1 << 20));
    // Header + area 0 need two chunks.
    assert_eq!(
        vol.create_snapshot(MemDevice::new(8191), opts(4096))
            .unwrap_err(),
        Error::NoSpace
    );
    let t = SnapshotOptions {
        store: StoreKind::Transient,
        ..opts(4096)
    };
    assert_eq!(
        vol.create_snapshot(MemDevice::new(100), t).unwrap_err(),
        Error::NoSpace
    );
    assert!(vol.snapshot_ids().is_empty());
}

#[test]
fn cow_too_small_message_has_the_numbers() {
    let e = opts(8192).check_cow_len(16384).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoSpace);
    let msg = e.to_string();
    assert!(
        msg.contains("3 chunks") && msg.contains("24576 bytes"),
        "{msg}"
    );
    assert!(
        msg.contains("8192-byte chunks") && msg.ends_with("is 16384"),
        "{msg}"
    );
}

#[test]
fn autoextend_from_percents_is_none_for_zero_and_validated_otherwise() {
    assert_eq!(Autoextend::from_percents(0, 0), Ok(None));
    let a = Autoextend::from_percents(70, 20).unwrap().unwrap();
    assert_eq!((a.threshold_percent, a.extend_percent), (70, 20));
    for (t, p) in [(0, 5), (101, 5), (70, 0)] {
        let e = Autoextend::from_percents(t, p).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "({t}, {p})");
    }
}

#[test]
fn use_after_delete_and_unknown_ids() {
    let mut vol = Volume::new(MemDevice::new(1 << 16));
    let s = vol
        .create_snapshot(MemDevice::new(1 << 16), opts(4096))
        .unwrap();
    vol.delete_snapshot(s).unwrap();
    assert_eq!(
        vol.snapshot_read_at(s, 0, &mut [0]).unwrap_err(),
        Error::UnknownSnapshot(s.0)
    );
    assert!(matches!(
        vol.snapshot_write_at(s, 0, &[0]),
        Err(Error::UnknownSnapshot(_))
    ));
    assert!(matches!(
        vol.snapshot_status(s),
        Err(Error::UnknownSnapshot(_))
    ));
    assert!(matches!(
        vol.delete_snapshot(s),
        Err(Error::UnknownSnapshot(_))
    ));
    assert!(matches!(
        vol.merge_snapshot(s, |_| {}),
        Err(Error::UnknownSnapshot(_))
    ));
    assert!(matches!(
        vol.snapshot_status(SnapshotId(77)),
        Err(Error::UnknownSnapshot(77))
    ));
    // Ids are not reused.
    let s2 = vol
        .create_snapshot(MemDevice::new(1 << 16), opts(4096))
        .unwrap();
    assert_ne!(s, s2);
}

#[test]
fn overflow_invalidates_and_says_so_on_disk() {
    let mut vol = Volume::new(MemDevice::new(1 << 20));
    // 4 chunks: header, area 0, two data chunks.
    let s = vol
        .create_snapshot(MemDevice::new(4 * 4096), opts(4096))
        .unwrap();
    let o = vol
        .create_snapshot(MemDevice::new(1 << 20), opts(4096))
        .unwrap();
    vol.write_at(0, &[1; 8192]).unwrap();
    assert_eq!(vol.snapshot_status(s).unwrap().data_percent(), Some(100.0));
    vol.write_at(8192, &[2; 10]).unwrap(); // needs a third chunk
    let st = vol.snapshot_status(s).unwrap();
    assert_eq!(st.state, SnapshotState::Invalid);
    assert_eq!(st.dm_status(), "Invalid");
    assert_eq!(st.data_percent(), None);
    assert_eq!(
        vol.snapshot_read_at(s, 0, &mut [0]).unwrap_err(),
        Error::SnapshotInvalid
    );
    assert_eq!(
        vol.snapshot_write_at(s, 0, &[0]).unwrap_err(),
        Error::SnapshotInvalid
    );
    assert!(matches!(
        vol.merge_snapshot(s, |_| {}),
        Err(Error::SnapshotInvalid)
    ));
    let cow = cow_bytes(&vol, s);
    assert_eq!(&cow[4..8], &[0, 0, 0, 0], "valid=0 written to the header");
    // The origin write went on, and the other snapshot kept the old data.
    let mut b = [0u8; 10];
    vol.read_at(8192, &mut b).unwrap();
    assert_eq!(b, [2; 10]);
    vol.snapshot_read_at(o, 8192, &mut b).unwrap();
    assert_eq!(b, [0; 10]);
    // Reactivation keeps it invalid.
    let mut vol2 = Volume::new(MemDevice::new(1 << 20));
    let s2 = vol2
        .activate_snapshot(MemDevice::from_vec(cow), SnapshotOptions::default())
        .unwrap();
    assert_eq!(
        vol2.snapshot_status(s2).unwrap().state,
        SnapshotState::Invalid
    );
}

#[test]
fn snapshot_write_overflow_report_mode_keeps_reads() {
    let mut vol = Volume::new(MemDevice::new(1 << 20));
    let po = SnapshotOptions {
        overflow: OverflowMode::Report,
        ..opts(4096)
    };
    let s = vol.create_snapshot(MemDevice::new(3 * 4096), po).unwrap();
    vol.snapshot_write_at(s, 0, &[7; 100]).unwrap();
    assert_eq!(
        vol.snapshot_write_at(s, 4096, &[8; 100]).unwrap_err(),
        Error::SnapshotOverflow
    );
    let st = vol.snapshot_status(s).unwrap();
    assert_eq!(
        (st.state, st.dm_status().as_str()),
        (SnapshotState::Overflow, "Overflow")
    );
    let mut b = [0u8; 100];
    vol.snapshot_read_at(s, 0, &mut b).unwrap();
    assert_eq!(b, [7; 100]);
    assert_eq!(
        vol.snapshot_write_at(s, 0, &[1]).unwrap_err(),
        Error::SnapshotOverflow
    );
    // Header stays valid.
    assert_eq!(&cow_bytes(&vol, s)[4..8], &[1, 0, 0, 0]);
}

#[test]
fn corrupt_headers_are_refused_with_reasons() {
    let good = {
        let mut vol = Volume::new(MemDevice::new(1 << 20));
        vol.set_commit_bytes(0); // per-write commits: the bytes after each write are checked
        let s = vol
            .create_snapshot(MemDevice::new(1 << 20), opts(4096))
            .unwrap();
        vol.write_at(0, &[1; 5000]).unwrap();
        cow_bytes(&vol, s)
    };
    let activate = |bytes: Vec<u8>| {
        let mut vol = Volume::new(MemDevice::new(1 << 20));
        vol.set_commit_bytes(0); // per-write commits: the bytes after each write are checked
        vol.activate_snapshot(MemDevice::from_vec(bytes), SnapshotOptions::default())
    };
    assert!(activate(good.clone()).is_ok());
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert!(matches!(activate(bad_magic), Err(Error::Corrupt(r)) if r.contains("magic")));
    let mut bad_version = good.clone();
    bad_version[8] = 2;
    assert!(matches!(activate(bad_version), Err(Error::Corrupt(r)) if r.contains("version")));
    let mut bad_chunk = good.clone();
    bad_chunk[12] = 3;
    assert!(matches!(activate(bad_chunk), Err(Error::Corrupt(r)) if r.contains("chunk size")));
    let mut huge_chunk = good.clone();
    huge_chunk[12..16].copy_from_slice(&(1u32 << 21).to_le_bytes());
    assert!(matches!(activate(huge_chunk), Err(Error::Corrupt(_))));
    assert!(matches!(
        activate(good[..10].to_vec()),
        Err(Error::Corrupt(_))
    ));
    // A record pointing past the COW device, at a metadata chunk, beyond the origin, or twice.
    // (records 0 and 1 are (0 → 2) and (1 → 3); these replace record 2)
    for (old, new) in [(0u64, 1u64 << 40), (0, 1), (1u64 << 50, 5), (0, 3), (2, 3)] {
        let mut b = good.clone();
        let at = 4096 + 16 * 2;
        b[at..at + 8].copy_from_slice(&old.to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&new.to_le_bytes());
        assert!(
            matches!(activate(b), Err(Error::Corrupt(_))),
            "record ({old}, {new})"
        );
    }
    // A zero magic is refused (the kernel would format it): activation never formats, so a
    // wiped header cannot turn a snapshot into the current origin. Nothing is written.
    let mut zeroed = good.clone();
    zeroed[..4].fill(0);
    let mut vol = Volume::new(MemDevice::new(1 << 20));
    vol.set_commit_bytes(0); // per-write commits: the bytes after each write are checked
    let dev = SharedMem::new(zeroed.clone());
    let err = vol.activate_snapshot(dev.clone(), opts(8192)).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt(m) if m.contains("magic is 0")),
        "{err:?}"
    );
    assert_eq!(dev.bytes(), zeroed, "a refused activation wrote to the COW");
    assert!(matches!(
        vol.activate_snapshot(MemDevice::new(1 << 16), opts(8192)),
        Err(Error::Corrupt(_))
    ));
    // Chunk sizes below 8 sectors (which LVM never creates) are refused, whatever else is right.
    for sectors in [1u32, 2, 4] {
        let mut b = good.clone();
        b[12..16].copy_from_slice(&sectors.to_le_bytes());
        assert!(
            matches!(activate(b), Err(Error::Corrupt(_))),
            "chunk of {sectors} sectors"
        );
    }
}

#[test]
fn spec_bytes_and_offsets() {
    // New store, 4 KiB chunks.
    let mut vol = Volume::new(MemDevice::new(4 << 20));
    vol.set_commit_bytes(0); // per-write commits: the bytes after each write are checked
    let s = vol
        .create_snapshot(MemDevice::new(128 << 20), opts(4096))
        .unwrap();
    let cow = cow_bytes(&vol, s);
    assert_eq!(
        &cow[..16],
        &[0x53, 0x6E, 0x41, 0x70, 1, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0]
    );
    assert!(cow[16..8192].iter().all(|&b| b == 0));
    assert_eq!(u32::from_le_bytes(cow[..4].try_into().unwrap()), SNAP_MAGIC);
    assert_eq!(vol.snapshot_status(s).unwrap().dm_status(), "16/262144 16");
    // One origin write to chunk 5: record (5, 2), data at byte 8192.
    vol.write_at(5 * 4096, &[0xEE; 1]).unwrap();
    let cow = cow_bytes(&vol, s);
    assert_eq!(
        &cow[4096..4112],
        &[5, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]
    );
    // 257 distinct first writes: area 0 full, record 0 of area 1 at chunk 258 points at chunk 259.
    for c in 6..(6 + 256) {
        vol.write_at(c * 4096, &[1]).unwrap();
    }
    let cow = cow_bytes(&vol, s);
    let g = Geometry {
        chunk: ChunkSize::new(4096).unwrap(),
    };
    assert_eq!(g.area_location(1), 258);
    let r = 258 * 4096;
    assert_eq!(
        u64::from_le_bytes(cow[r..r + 8].try_into().unwrap()),
        6 + 255
    );
    assert_eq!(
        u64::from_le_bytes(cow[r + 8..r + 16].try_into().unwrap()),
        259
    );
    assert_eq!(
        vol.snapshot_status(s).unwrap().dm_status(),
        "2080/262144 24"
    );
    // 64 KiB chunks: area 0 at byte 65536, area 1 at chunk 4098.
    let g = Geometry {
        chunk: ChunkSize::new(65536).unwrap(),
    };
    assert_eq!((g.area_location(0), g.area_location(1)), (1, 4098));
}

#[test]
fn cow_ending_at_an_area_boundary_invalidates_on_the_last_exception() {
    // Scenario B variant: 258 chunks; the 256th commit must zero chunk 258, past the end.
    let mut vol = Volume::new(MemDevice::new(1 << 20));
    vol.set_commit_bytes(0); // per-write commits: the bytes after each write are checked
    let s = vol
        .create_snapshot(MemDevice::new(258 * 4096), opts(4096))
        .unwrap();
    for c in 0..255 {
        vol.write_at(c * 4096, &[1]).unwrap();
    }
    assert_eq!(vol.snapshot_status(s).unwrap().state, SnapshotState::Active);
    vol.write_at(255 * 4096, &[1]).unwrap();
    assert_eq!(
        vol.snapshot_status(s).unwrap().state,
        SnapshotState::Invalid
    );
    // With one spare area (259 chunks, LVM's sizing) the same writes fit and reload.
    let mut vol = Volume::new(MemDevice::new(1 << 20));
    vol.set_commit_bytes(0); // per-write commits: the bytes after each write are checked
    let s = vol
        .create_snapshot(MemDevice::new(259 * 4096), opts(4096))
        .unwrap();
    vol.write_at(0, &vec![1; 256 * 4096]).unwrap();
    let st = vol.snapshot_status(s).unwrap();
    assert_eq!(st.dm_status(), "2072/2072 24");
    let (origin, cows) = vol.into_parts();
    let mut vol = Volume::from_boxed(origin);
    let s = vol
        .activate_snapshot_boxed(
            cows.into_iter().next().unwrap().1,
            SnapshotOptions::default(),
        )
        .unwrap();
    assert_eq!(vol.snapshot_status(s).unwrap().dm_status(), "2072/2072 24");
    let mut b = vec![0u8; 1 << 20];
    vol.snapshot_read_at(s, 0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0));
}

#[test]
fn merge_progress_and_writes_during_merge() {
    let mut vol = Volume::new(MemDevice::new(1 << 20));
    let s = vol
        .create_snapshot(MemDevice::new(1 << 20), opts(4096))
        .unwrap();
    for c in (0..40).step_by(3) {
        vol.write_at(c * 4096, &[9; 4096]).unwrap();
    }
    let other = vol
        .create_snapshot(MemDevice::new(1 << 20), opts(4096))
        .unwrap();
    let mut other_view = vec![0u8; 1 << 20];
    vol.snapshot_read_at(other, 0, &mut other_view).unwrap();
    let p = vol.merge_begin(s).unwrap();
    assert_eq!((p.merged, p.total, p.done), (0, 14, false));
    assert_eq!(
        vol.snapshot_status(s).unwrap().state,
        SnapshotState::Merging
    );
    assert_eq!(vol.snapshot_status(s).unwrap().lvs_attr(), "Swi-a-s---");
    // Merged view straight away: the origin reads the snapshot's (old) data.
    let mut b = [1u8; 4];
    vol.read_at(0, &mut b).unwrap();
    assert_eq!(b, [0; 4]);
    // Writes during a merge are allowed (as in the kernel) and land in the merged result.
    vol.write_at(3 * 4096 + 10, &[5; 4]).unwrap(); // chunk with a record: goes to the COW copy
    vol.write_at(4096, &[6; 4]).unwrap(); // chunk without: plain origin write
    assert!(matches!(
        vol.create_snapshot(MemDevice::new(1 << 16), opts(4096)),
        Err(Error::Merging)
    ));
    assert!(matches!(vol.delete_snapshot(s), Err(Error::Merging)));
    assert!(matches!(
        vol.snapshot_write_at(s, 0, &[0]),
        Err(Error::Merging)
    ));
    let mut seen = Vec::new();
    let mut p = vol.merge_step(s).unwrap();
    while !p.done {
        seen.push(p.merged);
        assert!(vol.snapshot_status(s).unwrap().merge_percent().unwrap() < 100.0);
        p = vol.merge_step(s).unwrap();
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    vol.merge_finish(s).unwrap();
    let mut b = [0u8; 4];
    vol.read_at(3 * 4096 + 10, &mut b).unwrap();
    assert_eq!(b, [5; 4]);
    vol.read_at(4096, &mut b).unwrap();
    assert_eq!(b, [6; 4]);
    vol.read_at(6 * 4096, &mut b).unwrap();
    assert_eq!(b, [0; 4]);
    // The other snapshot never changed.
    let mut now = vec![0u8; 1 << 20];
    vol.snapshot_read_at(other, 0, &mut now).unwrap();
    assert!(now == other_view);
}

#[test]
fn autoextend_grows_before_overflow() {
    let mut vol = Volume::new(MemDevice::new(4 << 20));
    let o = SnapshotOptions {
        autoextend: Some(cowsnap_core::Autoextend {
            threshold_percent: 70,
            extend_percent: 20,
        }),
        ..opts(4096)
    };
    let s = vol.create_snapshot(MemDevice::new(64 * 4096), o).unwrap();
    vol.write_at(0, &vec![3; 2 << 20]).unwrap(); // 512 chunks: far more than 64
    let st = vol.snapshot_status(s).unwrap();
    assert_eq!(st.state, SnapshotState::Active);
    assert!(
        st.total_sectors > 512 * 8,
        "COW grew: {} sectors",
        st.total_sectors
    );
    assert!(st.data_percent().unwrap() <= 70.0 + 1.0);
    let bad = cowsnap_core::Autoextend {
        threshold_percent: 0,
        extend_percent: 20,
    };
    assert!(matches!(
        vol.set_autoextend(s, Some(bad)),
        Err(Error::InvalidArgument(_))
    ));
    // Explicit extend.
    vol.extend_snapshot(s, st.total_sectors * 512 + 4096)
        .unwrap();
    assert!(matches!(
        vol.extend_snapshot(s, 4096),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn autoextend_on_a_device_that_cannot_grow_follows_the_overflow_rules() {
    for lies in [false, true] {
        let mut vol = Volume::new(MemDevice::new(1 << 20));
        let o = SnapshotOptions {
            autoextend: Some(cowsnap_core::Autoextend {
                threshold_percent: 70,
                extend_percent: 20,
            }),
            ..opts(4096)
        };
        let s = vol
            .create_snapshot(no_grow(MemDevice::new(8 * 4096), lies), o)
            .unwrap();
        vol.write_at(0, &[1; 5 * 4096]).unwrap(); // 5 chunks fit in 6 data chunks: past 70 %, no growth
        assert_eq!(vol.snapshot_status(s).unwrap().state, SnapshotState::Active);
        assert_eq!(vol.snapshot_status(s).unwrap().total_sectors, 64);
        vol.write_at(0, &vec![2; 16 * 4096]).unwrap(); // overflows
        assert_eq!(
            vol.snapshot_status(s).unwrap().state,
            SnapshotState::Invalid
        );
    }
}

#[test]
fn no_snapshot_can_start_during_a_merge() {
    let mut vol = Volume::new(MemDevice::new(1 << 20));
    let s = vol
        .create_snapshot(MemDevice::new(1 << 20), opts(4096))
        .unwrap();
    vol.write_at(0, &[1; 8192]).unwrap();
    vol.merge_begin(s).unwrap();
    // Neither a fresh snapshot nor an activation (which may format a new store) while merging: they
    // would see the physical origin, not the merged view.
    assert!(matches!(
        vol.create_snapshot(MemDevice::new(1 << 16), opts(4096)),
        Err(Error::Merging)
    ));
    assert!(matches!(
        vol.activate_snapshot(MemDevice::new(1 << 16), opts(4096)),
        Err(Error::Merging)
    ));
    let mut p = vol.merge_step(s).unwrap();
    while !p.done {
        p = vol.merge_step(s).unwrap();
    }
    let merged = vol.merge_finish(s).unwrap();
    // The merged (now empty) COW activates again once the merge is over.
    let mut image = vec![0u8; merged.len() as usize];
    merged.read_at(0, &mut image).unwrap();
    assert!(vol
        .activate_snapshot(MemDevice::from_vec(image), opts(4096))
        .is_ok());
}

#[test]
fn every_error_has_its_own_code() {
    let mut codes: Vec<i32> = ErrorCode::ALL.iter().map(|c| *c as i32).collect();
    let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
    codes.sort();
    codes.dedup();
    names.sort();
    names.dedup();
    assert_eq!(codes.len(), ErrorCode::ALL.len());
    assert_eq!(names.len(), ErrorCode::ALL.len());
    let errs = [
        Error::OutOfRange {
            offset: 0,
            len: 0,
            size: 0,
        },
        Error::BadChunkSize { bytes: 0 },
        Error::InvalidArgument("x"),
        Error::SnapshotInvalid,
        Error::SnapshotOverflow,
        Error::NoSpace,
        Error::UnknownSnapshot(0),
        Error::corrupt("x"),
        Error::io("x"),
        Error::Merging,
        Error::Unsupported("x"),
    ];
    let mut seen: Vec<i32> = errs.iter().map(|e| e.code() as i32).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), errs.len());
    assert!(errs.iter().all(|e| !e.to_string().is_empty()));
}

#[test]
fn transient_store_status_and_no_metadata() {
    let mut vol = Volume::new(MemDevice::new(1 << 20));
    let t = SnapshotOptions {
        store: StoreKind::Transient,
        ..opts(16384)
    };
    let s = vol.create_snapshot(MemDevice::new(1 << 20), t).unwrap();
    assert_eq!(vol.snapshot_status(s).unwrap().dm_status(), "0/2048 0");
    vol.write_at(0, &[1]).unwrap();
    vol.write_at(70_000, &[1]).unwrap();
    assert_eq!(vol.snapshot_status(s).unwrap().dm_status(), "64/2048 0");
    let cow = cow_bytes(&vol, s);
    assert!(
        cow[..16384].iter().all(|&b| b == 0),
        "chunk 0 holds data, not a header"
    );
}

/// A memory device counting the writes that touch the header (the first 16 bytes of the COW).
fn header_writes(
    mem: MemDevice,
    n: std::sync::Arc<std::sync::atomic::AtomicU32>,
) -> Hooked<MemDevice> {
    Hooked::new(mem, move |a| {
        if let Access::Write { offset, .. } = a {
            if offset < 16 {
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        Verdict::Pass
    })
}

#[test]
fn invalidation_is_written_exactly_once() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let writes = std::sync::Arc::new(AtomicU32::new(0));
    let mut vol = Volume::new(MemDevice::new(1 << 20));
    let s = vol
        .create_snapshot(
            header_writes(MemDevice::new(4 * 4096), writes.clone()),
            opts(4096),
        )
        .unwrap();
    assert_eq!(
        writes.load(Ordering::SeqCst),
        1,
        "the header is written at creation"
    );
    for c in 0..10u64 {
        vol.write_at(c * 4096, &[1]).unwrap(); // the third one overflows
    }
    assert_eq!(
        vol.snapshot_status(s).unwrap().state,
        SnapshotState::Invalid
    );
    assert!(vol.snapshot_write_at(s, 0, &[1]).is_err());
    assert_eq!(
        writes.load(Ordering::SeqCst),
        2,
        "valid=0 written once, never again"
    );
}
