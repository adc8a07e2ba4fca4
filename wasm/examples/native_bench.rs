//! The native half of `wasm/bench.mjs`: the same workload as the wasm half, on the core's `MemDevice`.
//!
//! `cargo run --release -p cowsnap-wasm --example native_bench -- ORIGIN_MIB CHUNK_BYTES WRITE_BYTES READ_BYTES ROUNDS`
//! prints one JSON object: the best-of-`ROUNDS` seconds of each phase.
//!
//! Phases (as in bench.mjs): `firstWrites` — a fresh snapshot, then one `WRITE_BYTES` origin write at
//! the start of every chunk (each one copies the chunk into the COW and commits its record);
//! `snapshotReads` — the whole snapshot read in `READ_BYTES` pieces into one reused buffer.

use std::time::Instant;

use cowsnap_core::{ChunkSize, MemDevice, SnapshotOptions, Volume};

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i)
        .map(|s| s.parse().expect("numeric argument"))
        .unwrap_or(default)
}

/// A zeroed buffer whose pages are already mapped, as the wasm side's are (it zero-fills explicitly),
/// so that page faults do not land in the timed phases.
fn touched(n: usize) -> Vec<u8> {
    // black_box between the two fills: otherwise the compiler may merge them into one zeroed
    // allocation, whose pages the kernel maps on first touch, in the timed phase (seen in a
    // copy of this code inlined elsewhere: 4x slower first writes).
    let mut v = std::hint::black_box(vec![1u8; n]);
    v.fill(0);
    std::hint::black_box(v)
}

fn main() -> Result<(), cowsnap_core::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let origin = arg(&args, 0, 64) as usize * 1024 * 1024;
    let chunk = arg(&args, 1, 4096) as usize;
    let write = arg(&args, 2, 4096) as usize;
    let read = arg(&args, 3, 65536) as usize;
    let rounds = arg(&args, 4, 3);
    let chunks = origin / chunk;
    // Room for every chunk plus header and metadata areas (one 16-byte record per chunk).
    let cow_len = origin + origin / chunk * 16 * 2 + 4 * chunk;

    let mut best_w = f64::MAX;
    let mut best_r = f64::MAX;
    let mut checksum = 0u64;
    for _ in 0..rounds {
        let mut vol = Volume::new(MemDevice::from_vec(vec![0x5a; origin]));
        // The wasm build commits each write on its own (no group commit without `std`): the
        // native side runs the same engine path, so the ratio compares code, not algorithms.
        vol.set_commit_bytes(0);
        let opts = SnapshotOptions {
            chunk_size: ChunkSize::new(chunk as u64)?,
            ..SnapshotOptions::default()
        };
        let snap = vol.create_snapshot(MemDevice::from_vec(touched(cow_len)), opts)?;
        let data = vec![0xabu8; write];
        let t = Instant::now();
        for c in 0..chunks {
            vol.write_at((c * chunk) as u64, &data)?;
        }
        best_w = best_w.min(t.elapsed().as_secs_f64());
        assert_eq!(vol.snapshot_status(snap)?.exceptions, chunks as u64);

        let mut buf = vec![0u8; read];
        let t = Instant::now();
        let mut off = 0;
        while off < origin {
            vol.snapshot_read_at(snap, off as u64, &mut buf)?;
            checksum = checksum.wrapping_add(u64::from(buf[0]));
            off += read;
        }
        best_r = best_r.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"firstWrites\": {best_w}, \"snapshotReads\": {best_r}, \"chunks\": {chunks}, \"checksum\": {checksum}}}"
    );
    Ok(())
}
