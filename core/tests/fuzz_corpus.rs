//! Replays the fuzz corpus (`fuzz/corpus/activate`) on stable, so every input the fuzzer ever kept
//! stays a regression test, plus a few hostile inputs written by hand.

use cowsnap_core::fuzzing::activate_and_read;
use cowsnap_core::store::persistent::{Header, SNAP_MAGIC};

#[test]
fn corpus_entries_do_not_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/activate");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        activate_and_read(&data);
        n += 1;
    }
    assert!(n >= 5, "corpus missing in {}", dir.display());
}

#[test]
fn hostile_headers_do_not_allocate_or_panic() {
    let mut h = Header {
        magic: SNAP_MAGIC,
        valid: 1,
        version: 1,
        chunk_sectors: 1 << 21,
    }
    .to_bytes()
    .to_vec();
    h.resize(4096, 0xff); // a 1 GiB chunk size claimed by a 4 KiB device
    activate_and_read(&h);
    for sectors in [1u32, 2, 8, 1 << 20, u32::MAX, 0] {
        let mut b = Header {
            magic: SNAP_MAGIC,
            valid: 1,
            version: 1,
            chunk_sectors: sectors,
        }
        .to_bytes()
        .to_vec();
        b.resize(64 * 1024, 0xff); // every record non-zero: full areas all the way
        activate_and_read(&b);
    }
    activate_and_read(&[]);
    activate_and_read(&[0x53]);
}
