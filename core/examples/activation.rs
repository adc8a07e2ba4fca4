//! Activation cost against the floor of reading the same metadata.
//!
//! `gen COW N [ORIGIN_CHUNKS]` writes a dm-snapshot persistent COW (4 KiB chunks) holding `N`
//! exceptions of distinct random origin chunks below `ORIGIN_CHUNKS` (default 16·N), in allocation
//! order as the kernel writes them; data chunks stay holes. `origin PATH ORIGIN_CHUNKS` makes a
//! matching sparse origin. `bench COW ORIGIN ROUNDS` then runs interleaved rounds of (a) `pread` of
//! every metadata area, exactly the bytes activation reads, and (b) `Volume::activate_snapshot` on
//! file devices, and prints min/median/max of each and of their ratio per round, in wall time and
//! in the process's CPU time (all its threads: activation reads the areas ahead in a second one;
//! other processes on a busy machine do not inflate it). Warm cache:
//! the first round is a discarded warm-up; the freed table is given back to the system between
//! rounds (`malloc_trim`), so each activation starts like a fresh process. The peak of heap bytes
//! held during an activation (per exception) is printed too: allocations are counted, reserved
//! room included; and the peak of the resident set over the process's (`VmHWM` after a reset
//! through `/proc/self/clear_refs`), which counts only the pages touched.
//!
//! `cargo run --release -p cowsnap-core --example activation -- gen /var/tmp/c1m.cow 1048576`

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use cowsnap_core::{FileDevice, SnapshotOptions, Volume};

/// Live heap bytes and their peak since the last reset (all threads).
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size() as isize);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        grew(l.size() as isize);
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        grew(n as isize - l.size() as isize);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

const CHUNK: u64 = 4096;
const EPA: u64 = CHUNK / 16;

fn area_location(a: u64) -> u64 {
    1 + a * (EPA + 1)
}

fn lcg(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *x >> 11
}

fn gen(path: &str, n: u64, origin_chunks: u64) {
    assert!(origin_chunks >= n);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    // Full areas plus the area after the last record (zeroed: the end marker).
    let areas = n / EPA + 1;
    f.set_len(area_location(areas) * CHUNK).unwrap();
    let mut hdr = [0u8; 16];
    hdr[0..4].copy_from_slice(&0x7041_6E53u32.to_le_bytes());
    hdr[4..8].copy_from_slice(&1u32.to_le_bytes());
    hdr[8..12].copy_from_slice(&1u32.to_le_bytes());
    hdr[12..16].copy_from_slice(&((CHUNK / 512) as u32).to_le_bytes());
    f.write_all_at(&hdr, 0).unwrap();
    let mut used = vec![0u64; origin_chunks.div_ceil(64) as usize];
    let mut x = 0x5eed ^ n;
    let mut area = vec![0u8; CHUNK as usize];
    let mut i = 0u64;
    while i < n {
        let old = lcg(&mut x) % origin_chunks;
        let (w, b) = ((old / 64) as usize, old % 64);
        if used[w] >> b & 1 == 1 {
            continue;
        }
        used[w] |= 1 << b;
        let (a, j) = (i / EPA, i % EPA);
        let new = area_location(a) + 1 + j;
        let o = (j * 16) as usize;
        area[o..o + 8].copy_from_slice(&old.to_le_bytes());
        area[o + 8..o + 16].copy_from_slice(&new.to_le_bytes());
        i += 1;
        if j == EPA - 1 || i == n {
            f.write_all_at(&area[..(o + 16)], area_location(a) * CHUNK)
                .unwrap();
            area.fill(0);
        }
    }
    f.sync_all().unwrap();
    println!("{path}: {n} exceptions, origin {origin_chunks} chunks, {areas} areas");
}

/// Reads every metadata area, as activation does, and returns the record count (the end marker
/// stops it).
fn pread_metadata(f: &File) -> u64 {
    let mut buf = vec![0u8; CHUNK as usize];
    let mut count = 0;
    for a in 0.. {
        f.read_exact_at(&mut buf, area_location(a) * CHUNK).unwrap();
        let recs = buf
            .chunks_exact(16)
            .take_while(|r| r[8..16] != [0; 8])
            .count() as u64;
        count += recs;
        if recs < EPA {
            break;
        }
    }
    count
}

/// `VmRSS` or `VmHWM` of this process, in bytes.
fn vm(field: &str) -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    let kib: i64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// CPU time of this process, all threads (user + system), in seconds: unlike wall time, not
/// inflated when other processes hold the cores.
fn cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn bench(cow: &str, origin: &str, rounds: usize) {
    let mut v: [Vec<f64>; 6] = Default::default();
    // Per round: heap and resident-set peaks (the first round's are those of a fresh process).
    let mut peaks: Vec<(isize, i64)> = Vec::new();
    for round in 0..=rounds {
        let (t, c) = (Instant::now(), cpu());
        let n = pread_metadata(&File::open(cow).unwrap());
        let (f, fc) = (t.elapsed().as_secs_f64(), cpu() - c);
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        // Resets VmHWM to the current resident set.
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let rss = vm("VmRSS:");
        let base = LIVE.load(Ordering::Relaxed);
        let (t, c) = (Instant::now(), cpu());
        let mut vol = Volume::new(FileDevice::open(origin).unwrap());
        let id = vol
            .activate_snapshot(FileDevice::open(cow).unwrap(), SnapshotOptions::default())
            .unwrap();
        let (a, ac) = (t.elapsed().as_secs_f64(), cpu() - c);
        peaks.push((PEAK.load(Ordering::Relaxed) - base, vm("VmHWM:") - rss));
        assert_eq!(vol.snapshot_status(id).unwrap().exceptions, n);
        drop(vol);
        // Give the freed table back now, not inside the next timed activation.
        // SAFETY: malloc_trim only reorganises the allocator's free lists.
        unsafe { libc::malloc_trim(0) };
        if round > 0 {
            for (i, x) in [f * 1e3, a * 1e3, a / f, fc * 1e3, ac * 1e3, ac / fc]
                .into_iter()
                .enumerate()
            {
                v[i].push(x);
            }
        }
    }
    let names = [
        ("pread wall", " ms"),
        ("activ. wall", " ms"),
        ("ratio wall", "x "),
        ("pread cpu", " ms"),
        ("activ. cpu", " ms"),
        ("ratio cpu", "x "),
    ];
    for ((name, unit), v) in names.into_iter().zip(&mut v) {
        let (lo, med, hi) = stats(v);
        println!("{name:<12} min {lo:8.2}{unit}  median {med:8.2}{unit}  max {hi:8.2}{unit}");
    }
    let n = File::open(cow).map(|f| pread_metadata(&f)).unwrap();
    let later = |f: fn(&(isize, i64)) -> f64| peaks[1..].iter().map(f).fold(0.0, f64::max);
    let rows = [
        ("heap", peaks[0].0 as f64, later(|p| p.0 as f64)),
        ("resident set", peaks[0].1 as f64, later(|p| p.1 as f64)),
    ];
    for (what, first, rest) in rows {
        println!(
            "peak {what} growth during activation, bytes/exception: {:.2} the first (a fresh \
             process), {:.2} at most the others",
            first / n as f64,
            rest / n as f64
        );
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("gen") => {
            let n: u64 = a[3].parse().unwrap();
            let oc = a.get(4).map_or(16 * n, |s| s.parse().unwrap());
            gen(&a[2], n, oc)
        }
        Some("origin") => {
            let oc: u64 = a[3].parse().unwrap();
            let f = File::create(&a[2]).unwrap();
            f.set_len(oc * CHUNK).unwrap();
        }
        Some("bench") => bench(&a[2], &a[3], a.get(4).map_or(7, |s| s.parse().unwrap())),
        _ => eprintln!("usage: activation gen COW N [ORIGIN_CHUNKS] | origin PATH CHUNKS | bench COW ORIGIN [ROUNDS]"),
    }
}
