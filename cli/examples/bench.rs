//! cowsnap side of `benches/compare.sh`: throughput of cowsnap on file devices next to raw `pwrite`
//! and the first-write floor (read the old chunk, write it to a second file, write the new data).
//!
//! `cargo run --release -p cowsnap-cli --example bench -- DIR MiB MODE` where MODE is `cache`
//! (page cache, no flushes: the COW/origin devices' flush is a no-op, like qemu `cache=unsafe`) or
//! `sync` (every write request durable on return: the engine's own flushes plus one at the end of
//! each request, like qemu `cache=writethrough`). Prints `case<TAB>MiB/s<TAB>ops/s` lines.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cowsnap_core::{BlockDevice, FileDevice, SnapshotOptions, Volume};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Cache,
    Sync,
}

/// A file device whose flush is a no-op (page-cache mode).
struct Dev {
    f: FileDevice,
    mode: Mode,
}

impl BlockDevice for Dev {
    fn len(&self) -> u64 {
        self.f.len()
    }
    fn read_at(&self, o: u64, b: &mut [u8]) -> cowsnap_core::Result<()> {
        self.f.read_at(o, b)
    }
    fn write_at(&mut self, o: u64, b: &[u8]) -> cowsnap_core::Result<()> {
        self.f.write_at(o, b)
    }
    fn flush(&mut self) -> cowsnap_core::Result<()> {
        match self.mode {
            Mode::Cache => Ok(()),
            Mode::Sync => self.f.flush(),
        }
    }
    fn set_len(&mut self, n: u64) -> cowsnap_core::Result<()> {
        self.f.set_len(n)
    }
}

struct Ctx {
    dir: PathBuf,
    size: u64,
    mode: Mode,
    rand: Vec<u64>,
}

const K64: usize = 64 * 1024;
const K4: usize = 4096;

fn prefilled(path: &Path, size: u64) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("create");
    let buf = vec![0x5au8; 1 << 20];
    let mut o = 0;
    while o < size {
        f.write_all_at(&buf, o).expect("fill");
        o += buf.len() as u64;
    }
    f.sync_all().expect("sync");
    f
}

fn dev(path: &Path, mode: Mode) -> Dev {
    Dev {
        f: FileDevice::open(path).expect("open"),
        mode,
    }
}

fn new_dev(path: &Path, len: u64, mode: Mode) -> Dev {
    Dev {
        f: FileDevice::create(path, len).expect("create"),
        mode,
    }
}

/// Offsets of a pattern: sequential 64 KiB or random (no repeats) 4 KiB.
fn offsets(c: &Ctx, bs: usize) -> Vec<u64> {
    if bs == K64 {
        (0..c.size / K64 as u64).map(|i| i * K64 as u64).collect()
    } else {
        c.rand.clone()
    }
}

fn report(name: &str, bytes: u64, ops: u64, t: Duration) {
    let s = t.as_secs_f64();
    println!(
        "{name}\t{:.1}\t{:.0}",
        bytes as f64 / s / (1 << 20) as f64,
        ops as f64 / s
    );
}

fn raw(c: &Ctx, bs: usize, name: &str) {
    let p = c.dir.join("raw.img");
    let f = prefilled(&p, c.size);
    let buf = vec![1u8; bs];
    let offs = offsets(c, bs);
    let t = Instant::now();
    for &o in &offs {
        f.write_all_at(&buf, o).expect("pwrite");
        if c.mode == Mode::Sync {
            f.sync_data().expect("fdatasync");
        }
    }
    report(
        name,
        (offs.len() * bs) as u64,
        offs.len() as u64,
        t.elapsed(),
    );
}

/// The first-write floor: per request, read the old data, write it to a second file (appending, as
/// a COW allocates), make it durable in sync mode, then write the new data.
fn floor(c: &Ctx, bs: usize, name: &str) {
    let p = c.dir.join("floor.img");
    let f = prefilled(&p, c.size);
    let copy = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(c.dir.join("floor.cow"))
        .expect("create");
    let buf = vec![1u8; bs];
    let mut old = vec![0u8; bs];
    let offs = offsets(c, bs);
    let mut next = 0u64;
    let t = Instant::now();
    for &o in &offs {
        f.read_exact_at(&mut old, o).expect("read");
        copy.write_all_at(&old, next).expect("write copy");
        next += bs as u64;
        if c.mode == Mode::Sync {
            copy.sync_data().expect("fdatasync");
        }
        f.write_all_at(&buf, o).expect("pwrite");
        if c.mode == Mode::Sync {
            f.sync_data().expect("fdatasync");
        }
    }
    report(
        name,
        (offs.len() * bs) as u64,
        offs.len() as u64,
        t.elapsed(),
    );
}

fn volume(c: &Ctx, snaps: usize) -> Volume {
    let p = c.dir.join("origin.img");
    drop(prefilled(&p, c.size));
    let mut vol = Volume::new(dev(&p, c.mode));
    for i in 0..snaps {
        // Room for every chunk plus metadata.
        let cow = new_dev(
            &c.dir.join(format!("s{i}.cow")),
            c.size + c.size / 8 + (1 << 20),
            c.mode,
        );
        vol.create_snapshot(cow, SnapshotOptions::default())
            .expect("snapshot");
    }
    vol
}

fn vol_writes(c: &Ctx, vol: &mut Volume, bs: usize, fill: u8) -> (u64, u64, Duration) {
    let buf = vec![fill; bs];
    let offs = offsets(c, bs);
    let t = Instant::now();
    for &o in &offs {
        vol.write_at(o, &buf).expect("write");
        if c.mode == Mode::Sync {
            vol.flush().expect("flush");
        }
    }
    ((offs.len() * bs) as u64, offs.len() as u64, t.elapsed())
}

fn cowsnap_writes(c: &Ctx, bs: usize, tag: &str) {
    let mut vol = volume(c, 1);
    let (b, n, t) = vol_writes(c, &mut vol, bs, 1);
    report(&format!("cowsnap_first_{tag}"), b, n, t);
    let (b, n, t) = vol_writes(c, &mut vol, bs, 2);
    report(&format!("cowsnap_rewrite_{tag}"), b, n, t);
    if bs == K64 {
        let id = vol.snapshot_ids()[0];
        let mut buf = vec![0u8; bs];
        let t = Instant::now();
        let mut o = 0;
        while o < c.size {
            vol.snapshot_read_at(id, o, &mut buf).expect("read");
            assert_eq!(buf[0], 0x5a);
            o += bs as u64;
        }
        report(
            "cowsnap_snapread_seq64k",
            c.size,
            c.size / bs as u64,
            t.elapsed(),
        );
    }
}

fn multi(c: &Ctx) {
    for n in [1usize, 2, 4] {
        let mut vol = volume(c, n);
        let (b, ops, t) = vol_writes(c, &mut vol, K64, 1);
        report(&format!("cowsnap_first_seq64k_{n}snap"), b, ops, t);
    }
}

fn creation(c: &Ctx) {
    // Interleaved, best of 30 each: only `create_snapshot` is timed (the COW file exists already).
    let sizes = [("1g", 1u64 << 30), ("1t", 1u64 << 40)];
    let mut best = [f64::MAX; 2];
    for (i, (name, size)) in sizes.iter().cycle().take(60).enumerate() {
        let p = c.dir.join(format!("sparse-{name}.img"));
        let f = File::create(&p).expect("create");
        f.set_len(*size).expect("set_len");
        drop(f);
        let mut vol = Volume::new(dev(&p, c.mode));
        let cow = new_dev(&c.dir.join(format!("create-{name}.cow")), 64 << 20, c.mode);
        let t = Instant::now();
        vol.create_snapshot(cow, SnapshotOptions::default())
            .expect("snapshot");
        best[i % 2] = best[i % 2].min(t.elapsed().as_secs_f64());
    }
    for (i, (name, _)) in sizes.iter().enumerate() {
        println!("create_snapshot_{name}_us\t{:.1}\t0", best[i] * 1e6);
        let _ = std::fs::remove_file(c.dir.join(format!("sparse-{name}.img")));
        let _ = std::fs::remove_file(c.dir.join(format!("create-{name}.cow")));
    }
}

fn membw() {
    let n = 256 << 20;
    let src = vec![3u8; n];
    let mut dst = vec![0u8; n];
    dst.copy_from_slice(&src); // fault the pages in
    let t = Instant::now();
    for _ in 0..4 {
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
    }
    report("memcpy", 4 * n as u64, 4, t.elapsed());
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        eprintln!("usage: bench DIR MiB cache|sync [rand4k-ops]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&a[1]);
    std::fs::create_dir_all(&dir).expect("dir");
    let size = a[2].parse::<u64>().expect("MiB") << 20;
    let mode = match a[3].as_str() {
        "cache" => Mode::Cache,
        "sync" => Mode::Sync,
        m => panic!("mode {m}"),
    };
    let nrand: u64 = a.get(4).map_or(4096, |s| s.parse().expect("ops"));
    // Random distinct 4 KiB offsets (xorshift, fixed seed; Fisher-Yates over the 4 KiB blocks).
    let blocks = size / K4 as u64;
    let mut all: Vec<u64> = (0..blocks).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..all.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        all.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let rand = all
        .into_iter()
        .take(nrand.min(blocks) as usize)
        .map(|b| b * K4 as u64)
        .collect();
    let c = Ctx {
        dir,
        size,
        mode,
        rand,
    };
    if mode == Mode::Cache {
        membw();
    }
    raw(&c, K64, "raw_seq64k");
    raw(&c, K4, "raw_rand4k");
    floor(&c, K64, "floor_seq64k");
    floor(&c, K4, "floor_rand4k");
    cowsnap_writes(&c, K64, "seq64k");
    cowsnap_writes(&c, K4, "rand4k");
    multi(&c);
    creation(&c);
    for f in ["raw.img", "floor.img", "floor.cow", "origin.img"] {
        let _ = std::fs::remove_file(c.dir.join(f));
    }
    for i in 0..4 {
        let _ = std::fs::remove_file(c.dir.join(format!("s{i}.cow")));
    }
}
