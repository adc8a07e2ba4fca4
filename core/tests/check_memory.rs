//! The checker's memory does not grow with the number of records: measured with a counting
//! allocator (the whole binary's; it holds this one test so that nothing else allocates meanwhile)
//! on stores of 100 000 and 400 000 records, kept in a sparse device so that the device's own
//! memory is allocated before the measure starts. Keeping even 8 bytes a record (as the sorting
//! checker kept 24, and a sort of packed records keeps 8) fails both bounds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use cowsnap_core::check::check;
use cowsnap_core::{BlockDevice, Result};

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            let now = NOW.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        NOW.fetch_sub(l.size(), Relaxed);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static A: Counting = Counting;

const EPA: u64 = 256; // records per area with 4 KiB chunks
const C: u64 = 4096;

fn loc(area: u64) -> u64 {
    1 + area * (EPA + 1)
}

/// A COW whose metadata areas alone are held; every other byte reads as zero.
struct Sparse {
    len: u64,
    /// Metadata area bytes by COW chunk.
    areas: BTreeMap<u64, Vec<u8>>,
}

impl BlockDevice for Sparse {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        buf.fill(0);
        let chunk = offset / C;
        let at = (offset % C) as usize;
        assert!(at + buf.len() <= C as usize, "reads stay within a chunk");
        if let Some(a) = self.areas.get(&chunk) {
            buf.copy_from_slice(&a[at..at + buf.len()]);
        }
        Ok(())
    }
    fn write_at(&mut self, _: u64, _: &[u8]) -> Result<()> {
        unreachable!("the checker does not write")
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A 4 KiB-chunk store of `n` records, origin chunks scattered over 2^22, each in the next data
/// chunk, on a COW of `cow_chunks` chunks.
fn store(n: u64, cow_chunks: u64) -> Sparse {
    let mut areas = BTreeMap::new();
    let mut header = vec![0u8; C as usize];
    header[0..4].copy_from_slice(&0x7041_6E53u32.to_le_bytes());
    header[4..8].copy_from_slice(&1u32.to_le_bytes());
    header[8..12].copy_from_slice(&1u32.to_le_bytes());
    header[12..16].copy_from_slice(&8u32.to_le_bytes());
    areas.insert(0, header);
    for p in 0..n {
        let (area, i) = (p / EPA, (p % EPA) as usize);
        let a = areas
            .entry(loc(area))
            .or_insert_with(|| vec![0u8; C as usize]);
        let old = p.wrapping_mul(0x9E37_79B9) % (1 << 22);
        let new = loc(area) + 1 + i as u64;
        a[i * 16..i * 16 + 8].copy_from_slice(&old.to_le_bytes());
        a[i * 16 + 8..i * 16 + 16].copy_from_slice(&new.to_le_bytes());
    }
    Sparse {
        len: cow_chunks * C,
        areas,
    }
}

/// Bytes allocated at most while `cow` is checked, above what was allocated before.
fn peak_of_check(cow: &Sparse) -> (usize, u64) {
    let base = NOW.load(Relaxed);
    PEAK.store(base, Relaxed);
    let r = check(cow, None).unwrap();
    assert!(r.is_clean(), "{:?}", &r.problems[..r.problems.len().min(3)]);
    let peak = PEAK.load(Relaxed) - base;
    (peak, r.records)
}

#[test]
fn memory_does_not_grow_with_the_number_of_records() {
    let cow_chunks = loc(400_000 / EPA + 1) + 1;
    let small = store(100_000, cow_chunks);
    let large = store(400_000, cow_chunks);
    let (peak_small, n) = peak_of_check(&small);
    assert_eq!(n, 100_000);
    let (peak_large, n) = peak_of_check(&large);
    assert_eq!(n, 400_000);
    // Absolute: the sets of origin chunks (2^22 bits) and COW chunks (one bit each), a piece
    // buffer, the last area: well under a megabyte; 8 bytes a record would be 3.2 MB.
    assert!(
        peak_large < 1 << 20,
        "{peak_large} bytes for 400 000 records"
    );
    // Relative: 300 000 more records add only their COW chunks' bits (~50 KB), not 8 bytes each
    // (2.4 MB).
    assert!(
        peak_large < peak_small + 300_000 / 2,
        "{peak_small} bytes for 100 000 records, {peak_large} for 400 000"
    );
}
