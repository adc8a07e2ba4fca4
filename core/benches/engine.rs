//! Engine throughput, side by side on the same machine and run: raw origin writes vs first writes after
//! a snapshot (COW) vs rewrites, snapshot reads, snapshot creation on 1 GiB vs 1 TiB sparse origins,
//! activation of 1 M exceptions, and flushes per MiB. `cargo bench -p cowsnap-core --bench engine`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cowsnap_core::store::persistent::{Geometry, Header};
use cowsnap_core::testkit::device::{Access, Hooked, Verdict};
use cowsnap_core::{BlockDevice, ChunkSize, FileDevice, MemDevice, SnapshotOptions, Volume};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const VOL: u64 = 32 << 20;
const IO: usize = 64 << 10;

fn opts() -> SnapshotOptions {
    SnapshotOptions {
        chunk_size: ChunkSize::new(4096).unwrap(),
        ..Default::default()
    }
}

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("cowsnap-bench-{}-{name}", std::process::id()))
}

/// `dev`, counting its flushes into `n`, to report flushes per MiB of first writes.
fn count_flush<D: BlockDevice>(
    dev: D,
    n: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Hooked<D> {
    Hooked::new(dev, move |a| {
        if a == Access::Flush {
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Verdict::Pass
    })
}

enum Kind {
    Mem,
    File,
}

fn origin(kind: &Kind, tag: &str) -> Box<dyn BlockDevice> {
    match kind {
        Kind::Mem => Box::new(MemDevice::new(VOL as usize)),
        Kind::File => Box::new(FileDevice::create(tmp(&format!("{tag}-origin")), VOL).unwrap()),
    }
}

fn cow(kind: &Kind, tag: &str) -> Box<dyn BlockDevice> {
    match kind {
        Kind::Mem => Box::new(MemDevice::new((VOL + (4 << 20)) as usize)),
        Kind::File => {
            Box::new(FileDevice::create(tmp(&format!("{tag}-cow")), VOL + (4 << 20)).unwrap())
        }
    }
}

/// Writes the whole volume sequentially in 64 KiB pieces (no flushes: page cache / memory).
fn fill(vol: &mut Volume, byte: u8) {
    let buf = vec![byte; IO];
    for off in (0..VOL).step_by(IO) {
        vol.write_at(off, &buf).unwrap();
    }
}

/// Same, with a flush after every write: the durability a COW first write always pays (its
/// records are flushed before the origin write), to compare like with like on files.
fn fill_sync(vol: &mut Volume, byte: u8) {
    let buf = vec![byte; IO];
    for off in (0..VOL).step_by(IO) {
        vol.write_at(off, &buf).unwrap();
        vol.flush().unwrap();
    }
}

fn write_paths(c: &mut Criterion) {
    let mut g = c.benchmark_group("write");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(VOL));
    for (kind, name) in [(Kind::Mem, "mem"), (Kind::File, "file")] {
        g.bench_function(BenchmarkId::new("raw", name), |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    let mut vol = Volume::from_boxed(origin(&kind, "raw"));
                    let s = Instant::now();
                    fill(&mut vol, 1);
                    t += s.elapsed();
                }
                t
            })
        });
        if matches!(kind, Kind::File) {
            g.bench_function(BenchmarkId::new("raw_flush_each_write", name), |b| {
                b.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        let mut vol = Volume::from_boxed(origin(&kind, "rawsync"));
                        let s = Instant::now();
                        fill_sync(&mut vol, 1);
                        t += s.elapsed();
                    }
                    t
                })
            });
        }
        g.bench_function(BenchmarkId::new("cow_first_write", name), |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    let mut vol = Volume::from_boxed(origin(&kind, "cow"));
                    vol.create_snapshot_boxed(cow(&kind, "cow"), opts())
                        .unwrap();
                    let s = Instant::now();
                    fill(&mut vol, 2);
                    t += s.elapsed();
                }
                t
            })
        });
        g.bench_function(BenchmarkId::new("rewrite_copied", name), |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    let mut vol = Volume::from_boxed(origin(&kind, "rw"));
                    vol.create_snapshot_boxed(cow(&kind, "rw"), opts()).unwrap();
                    fill(&mut vol, 2);
                    let s = Instant::now();
                    fill(&mut vol, 3);
                    t += s.elapsed();
                }
                t
            })
        });
        let mut vol = Volume::from_boxed(origin(&kind, "read"));
        let snap = vol
            .create_snapshot_boxed(cow(&kind, "read"), opts())
            .unwrap();
        g.bench_function(BenchmarkId::new("snapshot_read_unchanged", name), |b| {
            let mut buf = vec![0u8; IO];
            b.iter(|| {
                for off in (0..VOL).step_by(IO) {
                    vol.snapshot_read_at(snap, off, &mut buf).unwrap();
                }
                black_box(&buf);
            })
        });
        g.bench_function(BenchmarkId::new("origin_read", name), |b| {
            let mut buf = vec![0u8; IO];
            b.iter(|| {
                for off in (0..VOL).step_by(IO) {
                    vol.read_at(off, &mut buf).unwrap();
                }
                black_box(&buf);
            })
        });
    }
    g.finish();
    for f in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        if f.file_name()
            .to_string_lossy()
            .starts_with(&format!("cowsnap-bench-{}", std::process::id()))
        {
            let _ = std::fs::remove_file(f.path());
        }
    }
}

fn creation(c: &mut Criterion) {
    let mut g = c.benchmark_group("create_snapshot");
    g.sample_size(20);
    for (label, size) in [("1GiB", 1u64 << 30), ("1TiB", 1u64 << 40)] {
        let path = tmp(&format!("sparse-{label}"));
        let cow_path = tmp(&format!("sparse-cow-{label}"));
        // Only the snapshot creation is timed: the sparse origin is set up outside the measurement.
        FileDevice::create(&path, size).unwrap();
        g.bench_function(label, |b| {
            b.iter_batched(
                || {
                    let vol = Volume::new(FileDevice::open(&path).unwrap());
                    // A memory COW keeps fsync noise out: only the origin's size varies.
                    (vol, MemDevice::new(1 << 20))
                },
                |(mut vol, cow)| {
                    let id = vol.create_snapshot(cow, opts()).unwrap();
                    (vol, id) // dropped outside the measurement
                },
                criterion::BatchSize::PerIteration,
            )
        });
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&cow_path);
    }
    g.finish();
}

/// A sparse persistent COW holding `n` exceptions (records only; data chunks left as holes).
fn synthetic_cow(path: &std::path::Path, n: u64) -> u64 {
    let chunk = ChunkSize::new(4096).unwrap();
    let geo = Geometry { chunk };
    let epa = geo.exceptions_per_area();
    let areas = n / epa + 1;
    let chunks = geo.area_location(areas) + 1;
    let mut dev = FileDevice::create(path, chunks * 4096).unwrap();
    dev.write_at(0, &Header::new(chunk).to_bytes()).unwrap();
    let mut k = 0u64;
    for a in 0..areas {
        let mut area = vec![0u8; 4096];
        for i in 0..epa.min(n - k) {
            let rec = &mut area[(i * 16) as usize..(i * 16 + 16) as usize];
            rec[..8].copy_from_slice(&k.to_le_bytes()); // origin chunk k
            rec[8..].copy_from_slice(&(geo.area_location(a) + 1 + i).to_le_bytes());
            k += 1;
        }
        dev.write_at(geo.area_location(a) * 4096, &area).unwrap();
    }
    n
}

fn activation(c: &mut Criterion) {
    let path = tmp("activate-1M");
    let n = synthetic_cow(&path, 1 << 20);
    let mut g = c.benchmark_group("activate");
    g.sample_size(10).throughput(Throughput::Elements(n));
    g.bench_function("1M_exceptions", |b| {
        b.iter(|| {
            // The origin length bounds record validation: give a sparse 4 GiB origin.
            let mut vol = Volume::new(FileDevice::create(tmp("activate-origin"), 4 << 30).unwrap());
            let id = vol
                .activate_snapshot(FileDevice::open(&path).unwrap(), opts())
                .unwrap();
            assert_eq!(vol.snapshot_status(id).unwrap().exceptions, n);
        })
    });
    g.finish();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(tmp("activate-origin"));
}

fn flushes_per_mib(_c: &mut Criterion) {
    for (label, io, random) in [
        ("sequential 64 KiB", 64usize << 10, false),
        ("random 4 KiB", 4096, true),
    ] {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut vol = Volume::new(MemDevice::new(VOL as usize));
        vol.create_snapshot(
            count_flush(MemDevice::new((VOL + (4 << 20)) as usize), count.clone()),
            opts(),
        )
        .unwrap();
        count.store(0, std::sync::atomic::Ordering::Relaxed);
        let buf = vec![5u8; io];
        let n = (VOL / io as u64) / if random { 4 } else { 1 };
        let mut x = 12345u64;
        for i in 0..n {
            let off = if random {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 20) % (VOL / io as u64) * io as u64
            } else {
                i * io as u64
            };
            vol.write_at(off, &buf).unwrap();
        }
        let mib = (n * io as u64) as f64 / (1 << 20) as f64;
        println!(
            "flushes per MiB of first writes ({label}): {:.1}",
            count.load(std::sync::atomic::Ordering::Relaxed) as f64 / mib
        );
    }
}

criterion_group!(benches, flushes_per_mib, write_paths, creation, activation);
criterion_main!(benches);
