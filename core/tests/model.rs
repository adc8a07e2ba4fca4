//! The reference-model test: the engine against a naive model in which every snapshot is a full copy
//! of the origin taken at creation (plus its own writes), with COW accounting that predicts overflow,
//! Data% and the persistent store's metadata exactly. proptest drives random operation sequences and
//! compares everything readable, and every status, after each step.
//!
//! `PROPTEST_CASES` sets the number of cases (1000 by default here).

use cowsnap_core::{
    Autoextend, ChunkSize, Error, MemDevice, OverflowMode, SnapshotId, SnapshotOptions,
    SnapshotState, StoreKind, Volume,
};
use proptest::prelude::*;

mod common;
use common::no_grow;

#[derive(Debug, Clone)]
enum Op {
    Create {
        chunk_shift: u32,
        cow_chunks: u64,
        transient: bool,
        report: bool,
        autoextend: Option<(u32, u32)>,
        growable: bool,
        /// A zero-filled COW, as a new sparse or reserved file (else stale bytes).
        fresh: bool,
    },
    Delete(usize),
    WriteOrigin {
        off: u64,
        len: u64,
        seed: u8,
    },
    WriteSnap {
        which: usize,
        off: u64,
        len: u64,
        seed: u8,
    },
    Read {
        which: usize,
        off: u64,
        len: u64,
    },
    Merge(usize),
    Extend {
        which: usize,
        chunks: u64,
    },
    Reactivate,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u32..3, 2u64..48, any::<bool>(), any::<bool>(),
              prop::option::weighted(0.3, (50u32..=100, 10u32..60)), any::<bool>(), any::<bool>())
            .prop_map(|(chunk_shift, cow_chunks, transient, report, autoextend, growable, fresh)| Op::Create {
                chunk_shift, cow_chunks, transient: transient && cow_chunks % 3 == 0,
                // dm has no transient store that reports overflow (P, PO, N): the engine refuses it.
                report: report && !(transient && cow_chunks % 3 == 0), autoextend, growable, fresh }),
        1 => any::<usize>().prop_map(Op::Delete),
        6 => (any::<u64>(), any::<u64>(), any::<u8>()).prop_map(|(off, len, seed)| Op::WriteOrigin { off, len, seed }),
        3 => (any::<usize>(), any::<u64>(), any::<u64>(), any::<u8>())
            .prop_map(|(which, off, len, seed)| Op::WriteSnap { which, off, len, seed }),
        2 => (any::<usize>(), any::<u64>(), any::<u64>()).prop_map(|(which, off, len)| Op::Read { which, off, len }),
        1 => any::<usize>().prop_map(Op::Merge),
        1 => (any::<usize>(), 1u64..20).prop_map(|(which, chunks)| Op::Extend { which, chunks }),
        1 => Just(Op::Reactivate),
    ]
}

/// A byte range from raw random numbers: mostly inside the device, sometimes whole, sometimes past the end.
fn range(size: u64, off: u64, len: u64) -> (u64, u64) {
    match off % 10 {
        0 => (0, size),                                       // whole device
        1 => (size - (len % size.min(9000)), 1 + len % 9000), // near or past the end
        _ => {
            let o = (off >> 8) % size;
            (o, (len % (size - o).min(70_000)).max(1))
        }
    }
}

fn pattern(seed: u8, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8).wrapping_mul(7))
        .collect()
}

/// What an origin write writes: one in five writes zeros (a sparse origin's holes and zeroed
/// blocks), so that copies of zeros into fresh COWs are skipped (`BlockDevice::known_zeros`) and
/// later writes over the skipped chunks must still read back right.
fn write_data(seed: u8, len: u64) -> Vec<u8> {
    if seed % 5 == 0 {
        vec![0; len as usize]
    } else {
        pattern(seed, len)
    }
}

/// The first origin: patterned with zero stretches (holes), 12 KiB of each 20 KiB.
fn origin_image(size: u64) -> Vec<u8> {
    let mut o = pattern(0x5a, size);
    for (i, b) in o.iter_mut().enumerate() {
        if i % 20_480 < 12_288 {
            *b = 0;
        }
    }
    o
}

/// One snapshot of the model: a full copy of what it should read, and its COW accounting.
#[derive(Debug, Clone)]
struct ModelSnap {
    id: SnapshotId,
    data: Vec<u8>,
    chunk: u64,
    cow_len: u64,
    transient: bool,
    report: bool,
    autoextend: Option<(u32, u32)>,
    growable: bool,
    state: SnapshotState,
    copied: std::collections::BTreeSet<u64>,
    next_free: u64, // in chunks
}

impl ModelSnap {
    fn epa(&self) -> u64 {
        self.chunk / 16
    }
    fn sectors(&self) -> u64 {
        self.chunk / 512
    }
    /// Allocation as the stores do it, autoextend first. `false` when the COW is full.
    fn allocate(&mut self) -> bool {
        if let Some((t, p)) = self.autoextend.filter(|a| a.0 < 100 && self.growable) {
            while (self.next_free + 1) * self.sectors() * 100 > t as u64 * (self.cow_len / 512) {
                let add = (self.cow_len * p as u64).div_ceil(100).max(self.chunk);
                self.cow_len += add.div_ceil(self.chunk) * self.chunk;
            }
        }
        if (self.next_free + 1) * self.chunk > self.cow_len {
            return false;
        }
        self.next_free += 1;
        if !self.transient && self.next_free % (self.epa() + 1) == 1 {
            self.next_free += 1;
        }
        true
    }
    /// Commits `n` new records: false when an area fills and its successor lies past the device end.
    fn commit(&mut self, chunks: &[u64]) -> bool {
        for &c in chunks {
            self.copied.insert(c);
            let r = self.copied.len() as u64;
            if !self.transient && r % self.epa() == 0 {
                let loc = 1 + (r / self.epa()) * (self.epa() + 1);
                if (loc + 1) * self.chunk > self.cow_len {
                    return false;
                }
            }
        }
        true
    }
    fn invalidate(&mut self) {
        self.state = SnapshotState::Invalid;
        self.copied.clear();
    }
    /// An origin write to `[off, off+len)` is about to happen.
    fn preserve(&mut self, off: u64, len: u64) {
        if !matches!(self.state, SnapshotState::Active | SnapshotState::Overflow) || len == 0 {
            return;
        }
        let mut new = Vec::new();
        for c in off / self.chunk..=(off + len - 1) / self.chunk {
            if !self.copied.contains(&c) {
                if !self.allocate() {
                    return self.invalidate();
                }
                new.push(c);
            }
        }
        if !self.commit(&new) {
            self.invalidate();
        }
    }
    fn expected_status(&self) -> (u64, u64, u64) {
        let s = self.sectors();
        let meta = if self.transient {
            0
        } else {
            (self.copied.len() as u64 / self.epa() + 2) * s
        };
        (self.next_free * s, self.cow_len / 512, meta)
    }
}

struct Harness {
    vol: Volume,
    origin: Vec<u8>,
    snaps: Vec<ModelSnap>,
}

impl Harness {
    fn check(&self) -> Result<(), TestCaseError> {
        let mut buf = vec![0u8; self.origin.len()];
        self.vol.read_at(0, &mut buf).unwrap();
        prop_assert!(buf == self.origin, "origin differs");
        for s in &self.snaps {
            let st = self.vol.snapshot_status(s.id).unwrap();
            prop_assert_eq!(st.state, s.state, "state of {:?}", s.id);
            let r = self.vol.snapshot_read_at(s.id, 0, &mut buf);
            if s.state == SnapshotState::Invalid {
                prop_assert_eq!(r, Err(Error::SnapshotInvalid));
                continue;
            }
            r.unwrap();
            prop_assert!(buf == s.data, "snapshot {:?} differs", s.id);
            prop_assert_eq!(
                (st.sectors_allocated, st.total_sectors, st.metadata_sectors),
                s.expected_status(),
                "status of {:?}",
                s.id
            );
            prop_assert_eq!(st.exceptions, s.copied.len() as u64);
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let size = self.origin.len() as u64;
        let n = self.snaps.len();
        match *op {
            Op::Create {
                chunk_shift,
                cow_chunks,
                transient,
                report,
                autoextend,
                growable,
                fresh,
            } => {
                let chunk = 4096u64 << chunk_shift;
                let cow_len = cow_chunks * chunk;
                let opts = SnapshotOptions {
                    chunk_size: ChunkSize::new(chunk).unwrap(),
                    store: if transient {
                        StoreKind::Transient
                    } else {
                        StoreKind::Persistent
                    },
                    overflow: if report {
                        OverflowMode::Report
                    } else {
                        OverflowMode::Invalidate
                    },
                    autoextend: autoextend.map(|(t, p)| Autoextend {
                        threshold_percent: t,
                        extend_percent: p,
                    }),
                };
                // Stale bytes, as on a reused LVM volume: the engine must zero what it relies on.
                // Or zeros, as a new file: copies of zeros into it are skipped.
                let fill = if fresh { 0 } else { 0xA5 };
                let mem = MemDevice::from_vec(vec![fill; cow_len as usize]);
                let id = if growable {
                    self.vol.create_snapshot(mem, opts).unwrap()
                } else {
                    self.vol.create_snapshot(no_grow(mem, false), opts).unwrap()
                };
                self.snaps.push(ModelSnap {
                    id,
                    data: self.origin.clone(),
                    chunk,
                    cow_len,
                    transient,
                    report,
                    autoextend,
                    growable,
                    state: SnapshotState::Active,
                    copied: Default::default(),
                    next_free: if transient { 0 } else { 2 },
                });
            }
            Op::Delete(w) if n > 0 => {
                let s = self.snaps.remove(w % n);
                self.vol.delete_snapshot(s.id).unwrap();
                prop_assert!(matches!(
                    self.vol.snapshot_status(s.id),
                    Err(Error::UnknownSnapshot(_))
                ));
            }
            Op::WriteOrigin { off, len, seed } => {
                let (off, len) = range(size, off, len);
                let data = write_data(seed, len);
                let r = self.vol.write_at(off, &data);
                if off + len > size {
                    prop_assert!(matches!(r, Err(Error::OutOfRange { .. })), "{:?}", r);
                    return Ok(());
                }
                r.unwrap();
                for s in &mut self.snaps {
                    s.preserve(off, len);
                }
                self.origin[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            Op::WriteSnap {
                which,
                off,
                len,
                seed,
            } if n > 0 => {
                let (off, len) = range(size, off, len);
                let data = pattern(seed, len);
                let s = &mut self.snaps[which % n];
                let r = self.vol.snapshot_write_at(s.id, off, &data);
                match s.state {
                    SnapshotState::Invalid => prop_assert_eq!(r, Err(Error::SnapshotInvalid)),
                    SnapshotState::Overflow => prop_assert_eq!(r, Err(Error::SnapshotOverflow)),
                    _ if off + len > size => {
                        prop_assert!(matches!(r, Err(Error::OutOfRange { .. })), "{:?}", r)
                    }
                    _ => {
                        // Chunk by chunk: allocate what is missing until the COW is full.
                        let mut stop = off + len;
                        let mut new = Vec::new();
                        let mut c = off / s.chunk;
                        while c * s.chunk < off + len {
                            if !s.copied.contains(&c) && !new.contains(&c) {
                                if !s.allocate() {
                                    stop = (c * s.chunk).max(off);
                                    break;
                                }
                                new.push(c);
                            }
                            c += 1;
                        }
                        if !s.commit(&new) {
                            s.invalidate();
                            prop_assert!(r.is_err());
                            return Ok(());
                        }
                        s.data[off as usize..stop as usize]
                            .copy_from_slice(&data[..(stop - off) as usize]);
                        if stop < off + len {
                            if s.report {
                                s.state = SnapshotState::Overflow;
                                prop_assert_eq!(r, Err(Error::SnapshotOverflow));
                            } else {
                                s.invalidate();
                                prop_assert_eq!(r, Err(Error::SnapshotInvalid));
                            }
                        } else {
                            prop_assert_eq!(r, Ok(()));
                        }
                    }
                }
            }
            Op::Read { which, off, len } => {
                let (off, len) = range(size, off, len);
                let mut buf = vec![0u8; len as usize];
                let (r, want) = if n == 0 || which % (n + 1) == n {
                    (self.vol.read_at(off, &mut buf), &self.origin)
                } else {
                    let s = &self.snaps[which % (n + 1)];
                    if s.state == SnapshotState::Invalid {
                        prop_assert_eq!(
                            self.vol.snapshot_read_at(s.id, off, &mut buf),
                            Err(Error::SnapshotInvalid)
                        );
                        return Ok(());
                    }
                    (self.vol.snapshot_read_at(s.id, off, &mut buf), &s.data)
                };
                if off + len > size {
                    prop_assert!(matches!(r, Err(Error::OutOfRange { .. })), "{:?}", r);
                } else {
                    r.unwrap();
                    prop_assert!(buf[..] == want[off as usize..(off + len) as usize]);
                }
            }
            Op::Merge(w) if n > 0 => {
                let i = w % n;
                let r = self.vol.merge_snapshot(self.snaps[i].id, |_| {});
                if self.snaps[i].state == SnapshotState::Invalid {
                    prop_assert!(matches!(r, Err(Error::SnapshotInvalid)));
                    return Ok(());
                }
                r.unwrap();
                let m = self.snaps.remove(i);
                // Other snapshots first get copies of every chunk the merge rewrites.
                for c in &m.copied {
                    let start = c * m.chunk;
                    let end = ((c + 1) * m.chunk).min(size);
                    if start < end {
                        for s in &mut self.snaps {
                            s.preserve(start, end - start);
                        }
                    }
                }
                self.origin = m.data;
            }
            Op::Extend { which, chunks } if n > 0 => {
                let s = &mut self.snaps[which % n];
                let new_len = s.cow_len + chunks * s.chunk;
                let r = self.vol.extend_snapshot(s.id, new_len);
                if s.growable {
                    r.unwrap();
                    s.cow_len = new_len;
                } else {
                    prop_assert!(matches!(r, Err(Error::Unsupported(_))));
                }
            }
            Op::Reactivate => {
                self.vol.flush().unwrap();
                let vol = std::mem::replace(&mut self.vol, Volume::new(MemDevice::new(0)));
                let (origin, cows) = vol.into_parts();
                self.vol = Volume::from_boxed(origin);
                let mut kept = Vec::new();
                for ((_, cow), mut s) in cows.into_iter().zip(self.snaps.drain(..)) {
                    if s.transient {
                        continue; // a transient store does not survive deactivation
                    }
                    let opts = SnapshotOptions {
                        chunk_size: ChunkSize::new(4096).unwrap(), // the header's size wins
                        store: StoreKind::Persistent,
                        overflow: if s.report {
                            OverflowMode::Report
                        } else {
                            OverflowMode::Invalidate
                        },
                        autoextend: s.autoextend.map(|(t, p)| Autoextend {
                            threshold_percent: t,
                            extend_percent: p,
                        }),
                    };
                    s.id = self.vol.activate_snapshot_boxed(cow, opts).unwrap();
                    if s.state == SnapshotState::Overflow {
                        s.state = SnapshotState::Active; // Overflow is not persistent (dm PO)
                    }
                    kept.push(s);
                }
                self.snaps = kept;
            }
            _ => {}
        }
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(
        large in prop::bool::weighted(0.15),
        size_raw in any::<u64>(),
        ops in prop::collection::vec(op_strategy(), 1..24),
    ) {
        // Mostly small origins (any length, not only whole chunks); sometimes > 256 chunks so that
        // metadata areas fill and cross.
        let size = if large { 1_100_000 + size_raw % 300_000 } else { 1 + size_raw % 131_072 };
        let origin: Vec<u8> = origin_image(size);
        let mut h = Harness { vol: Volume::new(MemDevice::from_vec(origin.clone())), origin, snaps: Vec::new() };
        for op in &ops {
            h.step(op)?;
            h.check()?;
        }
    }
}
