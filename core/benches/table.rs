//! Exception-table cost at 1 M exceptions: heap bytes per exception (measured with a counting global
//! allocator) for sequential and random insert order, and lookup time; and the bulk load of
//! activation (`ExceptionTable::from_sorted` on the same exceptions, sorted) against inserting them.
//! `cargo bench -p cowsnap-core --bench table`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use cowsnap_core::ExceptionTable;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

const N: u64 = 1 << 20;

fn lcg(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *x >> 11
}

fn main() {
    // Random order over an origin 16x larger than the exceptions: few neighbours, little run merging.
    let mut olds: Vec<u64> = Vec::with_capacity(N as usize);
    let mut seen = std::collections::HashSet::new();
    let mut x = 42;
    while olds.len() < N as usize {
        let o = lcg(&mut x) % (16 * N);
        if seen.insert(o) {
            olds.push(o);
        }
    }
    drop(seen);
    for (label, order) in [("sequential", (0..N).collect::<Vec<_>>()), ("random", olds)] {
        let before = LIVE.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let mut t = ExceptionTable::new();
        for (i, &o) in order.iter().enumerate() {
            t.insert(o, 2 + i as u64);
        }
        let insert = t0.elapsed();
        let bytes = LIVE.load(Ordering::Relaxed) - before;
        // Median lookup latency over batches of 1000 random probes of present chunks.
        let mut samples = Vec::new();
        let mut x = 7;
        let mut hits = 0u64;
        for _ in 0..2000 {
            let probes: Vec<u64> = (0..1000)
                .map(|_| order[(lcg(&mut x) % N) as usize])
                .collect();
            let s = Instant::now();
            for &o in &probes {
                hits += t.lookup(o).is_some() as u64;
            }
            samples.push(s.elapsed().as_nanos() as f64 / 1000.0);
        }
        assert_eq!(hits, 2_000_000);
        // Bulk load: the exceptions sorted by origin chunk, as activation hands them over.
        let mut sorted: Vec<(u64, u64)> = order
            .iter()
            .enumerate()
            .map(|(i, &o)| (o, 2 + i as u64))
            .collect();
        sorted.sort_unstable();
        let before_bulk = LIVE.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let bulk = ExceptionTable::from_sorted(
            sorted
                .iter()
                .map(|&(old, new)| cowsnap_core::Exception { old, new }),
        )
        .unwrap();
        let bulk_time = t0.elapsed();
        let bulk_bytes = LIVE.load(Ordering::Relaxed) - before_bulk;
        assert!(bulk == t);
        println!(
            "bulk   {label:>10}: from_sorted {:.0} ns/exception, {:.2} bytes/exception",
            bulk_time.as_nanos() as f64 / N as f64,
            bulk_bytes as f64 / N as f64
        );
        drop((bulk, sorted));
        samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "table {label:>10}: {N} exceptions, {} runs, {:.2} bytes/exception, insert {:.0} ns/exception, lookup median {:.1} ns",
            t.run_count(),
            bytes as f64 / N as f64,
            insert.as_nanos() as f64 / N as f64,
            samples[samples.len() / 2]
        );
    }
}
