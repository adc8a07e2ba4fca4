//! Replays the fuzz corpus (`fuzz/corpus/activate`) on stable, so every input the fuzzer ever kept
//! stays a regression test, plus a few hostile inputs written by hand.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cowsnap_core::store::persistent::{Header, SNAP_MAGIC};
use cowsnap_core::testkit::fuzzing::activate_and_read;

/// Counts this thread's live heap bytes and their peak, so a test can bound what one call allocates.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|live| {
            live.set(live.get() + l.size());
            let _ = PEAK.try_with(|p| p.set(p.get().max(live.get())));
        });
        System.alloc(l)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, l: Layout) {
        let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(l.size())));
        System.dealloc(ptr, l)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Runs `f` and returns the peak of extra heap bytes it held at once (on this thread).
fn peak_extra(f: impl FnOnce()) -> usize {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    f();
    PEAK.with(Cell::get) - base
}

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
fn hostile_headers_neither_panic_nor_allocate_beyond_their_size() {
    // activate_and_read itself holds a 256 KiB origin, a 256 KiB read buffer and a copy of the
    // input; anything far beyond that would be the engine trusting a size it read.
    let budget = |input: usize| 2 * input + (1 << 20) + (256 << 10) * 2;
    let header = |chunk_sectors| Header {
        magic: SNAP_MAGIC,
        valid: 1,
        version: 1,
        chunk_sectors,
    };
    let mut h = header(1 << 21).to_bytes().to_vec();
    h.resize(4096, 0xff); // a 1 GiB chunk size claimed by a 4 KiB device
    let peak = peak_extra(|| activate_and_read(&h));
    assert!(peak < budget(h.len()), "1 GiB chunk header: {peak} bytes");
    for sectors in [1u32, 2, 8, 1 << 20, u32::MAX, 0] {
        let mut b = header(sectors).to_bytes().to_vec();
        b.resize(64 * 1024, 0xff); // every record non-zero: full areas all the way
        let peak = peak_extra(|| activate_and_read(&b));
        assert!(
            peak < budget(b.len()),
            "chunk {sectors} sectors: {peak} bytes"
        );
    }
    activate_and_read(&[]);
    activate_and_read(&[0x53]);
}

/// The checker (`cowsnap_core::check`) on every corpus entry: it finds damage exactly when
/// activation (the fuzz target's, on a 256 KiB origin) refuses the bytes.
#[test]
fn the_checker_agrees_with_activation_on_the_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/activate");
    let origin = 256 * 1024;
    let mut n = 0;
    for f in std::fs::read_dir(dir).unwrap() {
        let img = std::fs::read(f.unwrap().path()).unwrap();
        let cow = cowsnap_core::MemDevice::from_vec(img.clone());
        let chunk = cowsnap_core::check::check(&cow, None).unwrap().chunk;
        let r =
            cowsnap_core::check::check(&cow, chunk.map(|c| c.chunks_in(origin as u64))).unwrap();
        let mut vol = cowsnap_core::Volume::new(cowsnap_core::MemDevice::new(origin));
        let ok = vol
            .activate_snapshot(cow, cowsnap_core::SnapshotOptions::default())
            .is_ok();
        assert_eq!(r.activates(), ok, "{:?}", r.problems);
        n += 1;
    }
    assert!(n > 10, "{n} corpus entries");
}
