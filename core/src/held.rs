//! Origin writes held in memory until the exceptions they depend on are durable (group commit).
//!
//! dm-snapshot's rule is that new data may reach the origin device only once the old chunk's copy
//! and its record are durable in every snapshot. Committing (two device flushes) for every write
//! is what makes copy-on-write slow for callers that never asked for durability; so origin writes
//! whose chunks were just copied wait here, reads see them, and one commit releases many.

use alloc::vec::Vec;

/// Non-overlapping, non-touching byte ranges of new origin data, sorted by start offset. A sorted
/// vector rather than a tree: writes mostly append, and the wasm build stays small.
#[derive(Debug, Default)]
pub(crate) struct HeldWrites {
    ranges: Vec<(u64, Vec<u8>)>,
    bytes: usize,
}

impl HeldWrites {
    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Index of the first range that ends at or after `offset` (could overlap or touch it).
    fn first_reaching(&self, offset: u64) -> usize {
        self.ranges
            .partition_point(|(s, v)| s + (v.len() as u64) < offset)
    }

    /// Holds `data` at `offset`, over whatever was held there (ranges that overlap or touch it are
    /// merged into one).
    pub(crate) fn hold(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        let i = self.first_reaching(offset);
        // Ranges i..j overlap or touch [offset, end).
        let j = i + self.ranges[i..].partition_point(|(s, _)| *s <= end);
        if j == i {
            self.ranges.insert(i, (offset, data.to_vec()));
            self.bytes += data.len();
            return;
        }
        // A sequential writer appends: grow the range it touches in place (one copy; no zero
        // fill, and a large buffer grows by remapping rather than copying).
        if j == i + 1 && self.ranges[i].0 + self.ranges[i].1.len() as u64 == offset {
            self.ranges[i].1.extend_from_slice(data);
            self.bytes += data.len();
            return;
        }
        let start = self.ranges[i].0.min(offset);
        let stop = {
            let (s, v) = &self.ranges[j - 1];
            (s + v.len() as u64).max(end)
        };
        // Grow the first range's buffer in place when it starts the merged range (appends).
        let mut merged = if self.ranges[i].0 == start {
            core::mem::take(&mut self.ranges[i].1)
        } else {
            Vec::new()
        };
        let kept = merged.len();
        self.bytes -= kept;
        merged.resize((stop - start) as usize, 0);
        for (s, v) in self.ranges.drain(i..j) {
            self.bytes -= v.len();
            let o = (s - start) as usize;
            merged[o..o + v.len()].copy_from_slice(&v);
        }
        let o = (offset - start) as usize;
        merged[o..o + data.len()].copy_from_slice(data);
        self.bytes += merged.len();
        self.ranges.insert(i, (start, merged));
    }

    /// Copies the held bytes that fall in `[offset, offset + buf.len())` over `buf`.
    pub(crate) fn overlay(&self, offset: u64, buf: &mut [u8]) {
        if self.ranges.is_empty() || buf.is_empty() {
            return;
        }
        let end = offset + buf.len() as u64;
        for (s, v) in &self.ranges[self.first_reaching(offset)..] {
            if *s >= end {
                break;
            }
            let (a, b) = ((*s).max(offset), (s + v.len() as u64).min(end));
            if a < b {
                buf[(a - offset) as usize..(b - offset) as usize]
                    .copy_from_slice(&v[(a - s) as usize..(b - s) as usize]);
            }
        }
    }

    /// The held ranges, in offset order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.ranges.iter().map(|(s, v)| (*s, v.as_slice()))
    }

    /// Hands every held range to `write`, in offset order, forgetting those it took; stops at its
    /// first error, keeping that range and the ones after it.
    pub(crate) fn release<E>(
        &mut self,
        mut write: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut done = 0;
        let mut result = Ok(());
        for (s, v) in &self.ranges {
            if let Err(e) = write(*s, v) {
                result = Err(e);
                break;
            }
            done += 1;
        }
        for (_, v) in self.ranges.drain(..done) {
            self.bytes -= v.len();
        }
        result
    }
}
/// Held writes by the commit they wait for (its generation), oldest first. A write waits for
/// the commit that takes the records waiting when it is held: with a commit in flight, that is
/// the next one. Writes of different generations are not merged, so that a commit releases
/// exactly what waited for it (a later write over an earlier one must not hold the earlier one's
/// other bytes back past a flush that covered them); reads lay them over the origin oldest first.
#[derive(Debug, Default)]
pub(crate) struct Generations {
    gens: Vec<(u64, HeldWrites)>,
}

impl Generations {
    pub(crate) fn is_empty(&self) -> bool {
        self.gens.is_empty()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.gens.iter().map(|(_, h)| h.bytes()).sum()
    }

    /// Holds `data` at `offset` until commit `generation` is done (generations never go down).
    pub(crate) fn hold(&mut self, generation: u64, offset: u64, data: &[u8]) {
        match self.gens.last_mut() {
            Some((g, h)) if *g == generation => h.hold(offset, data),
            _ => {
                let mut h = HeldWrites::default();
                h.hold(offset, data);
                self.gens.push((generation, h));
            }
        }
    }

    pub(crate) fn overlay(&self, offset: u64, buf: &mut [u8]) {
        for (_, h) in &self.gens {
            h.overlay(offset, buf);
        }
    }

    /// Releases (oldest first) every write waiting for commit `generation` or an earlier one; stops
    /// at the first error, keeping what was not written.
    pub(crate) fn release<E>(
        &mut self,
        generation: u64,
        mut write: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some((g, h)) = self.gens.first_mut() {
            if *g > generation {
                break;
            }
            h.release(&mut write)?;
            self.gens.remove(0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain byte array: any sequence of holds reads back the same.
    #[test]
    fn holds_merge_and_overlay_like_a_flat_buffer() {
        let mut h = HeldWrites::default();
        let mut model = alloc::vec![None::<u8>; 300];
        let mut seed = 7u64;
        for i in 0..2000u32 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let off = (seed >> 33) % 280;
            let len = 1 + (seed >> 20) % 20;
            let byte = i as u8;
            h.hold(off, &alloc::vec![byte; len as usize]);
            for m in &mut model[off as usize..(off + len) as usize] {
                *m = Some(byte);
            }
            let mut buf = alloc::vec![0xEEu8; 300];
            h.overlay(0, &mut buf);
            for (j, m) in model.iter().enumerate() {
                assert_eq!(buf[j], m.unwrap_or(0xEE), "step {i} byte {j}");
            }
            let held: usize = model.iter().filter(|m| m.is_some()).count();
            assert_eq!(h.bytes(), held, "step {i}");
            // Ranges stay disjoint and apart.
            let mut last_end = None;
            for (s, v) in h.iter() {
                if let Some(e) = last_end {
                    assert!(s > e, "ranges touch at {s}");
                }
                last_end = Some(s + v.len() as u64);
            }
        }
    }

    /// A failing write keeps its range and every later one; the earlier ones are gone.
    #[test]
    fn release_stops_at_the_first_failure() {
        let mut h = HeldWrites::default();
        for off in [0u64, 100, 200] {
            h.hold(off, &[1; 10]);
        }
        let mut seen = alloc::vec::Vec::new();
        let r = h.release(|s, d| {
            if s == 100 {
                return Err(());
            }
            seen.push((s, d.len()));
            Ok(())
        });
        assert_eq!(r, Err(()));
        assert_eq!(seen, [(0, 10)]);
        assert_eq!(h.bytes(), 20);
        assert_eq!(
            h.iter().map(|(s, _)| s).collect::<alloc::vec::Vec<_>>(),
            [100, 200]
        );
        assert_eq!(h.release(|_, _| Ok::<(), ()>(())), Ok(()));
        assert_eq!(h.iter().count(), 0);
        assert_eq!(h.bytes(), 0);
    }

    /// Generations release up to the one asked, oldest first; reads see the newest bytes.
    #[test]
    fn generations_release_in_order() {
        let mut g = Generations::default();
        g.hold(1, 0, &[1; 8]);
        g.hold(2, 4, &[2; 8]);
        g.hold(2, 20, &[3; 2]);
        let mut buf = [0u8; 22];
        g.overlay(0, &mut buf);
        assert_eq!(&buf[..12], &[1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(g.bytes(), 18);
        let mut out = alloc::vec::Vec::new();
        g.release(1, |s, d| {
            out.push((s, d.to_vec()));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(out, [(0, alloc::vec![1u8; 8])]);
        assert_eq!(g.bytes(), 10);
        g.release(2, |s, d| {
            out.push((s, d.to_vec()));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(out.len(), 3);
        assert!(g.is_empty());
    }
}
