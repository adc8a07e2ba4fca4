//! Origin writes held in memory until the exceptions they depend on are durable (group commit).
//!
//! dm-snapshot's rule is that new data may reach the origin device only once the old chunk's copy
//! and its record are durable in every snapshot. Committing (two device flushes) for every write
//! is what makes copy-on-write slow for callers that never asked for durability; so origin writes
//! whose chunks were just copied wait here, reads see them, and one commit releases many.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Non-overlapping byte ranges of new origin data, by start offset.
#[derive(Debug, Default)]
pub(crate) struct HeldWrites {
    ranges: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
}

impl HeldWrites {
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds `data` at `offset`, over whatever was held there (ranges that overlap or touch it are
    /// merged into one).
    pub(crate) fn hold(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        let mut start = offset;
        let mut stop = end;
        // Ranges that overlap or touch [offset, end): the one starting at or before `offset`, and
        // every one starting inside.
        let mut absorbed: Vec<(u64, Vec<u8>)> = Vec::new();
        if let Some((&s, v)) = self.ranges.range(..=offset).next_back() {
            if s + v.len() as u64 >= offset {
                absorbed.push((s, Vec::new()));
            }
        }
        for (&s, _) in self.ranges.range(offset..=end) {
            if absorbed.first().map(|a| a.0) != Some(s) {
                absorbed.push((s, Vec::new()));
            }
        }
        for a in &mut absorbed {
            let v = self.ranges.remove(&a.0).unwrap_or_default();
            self.bytes -= v.len();
            start = start.min(a.0);
            stop = stop.max(a.0 + v.len() as u64);
            a.1 = v;
        }
        let mut merged = if absorbed.len() == 1 && absorbed[0].0 == start {
            // Common case (sequential appends): grow the one buffer in place.
            let mut v = core::mem::take(&mut absorbed[0].1);
            v.resize((stop - start) as usize, 0);
            absorbed.clear();
            v
        } else {
            alloc::vec![0u8; (stop - start) as usize]
        };
        for (s, v) in &absorbed {
            let o = (s - start) as usize;
            merged[o..o + v.len()].copy_from_slice(v);
        }
        let o = (offset - start) as usize;
        merged[o..o + data.len()].copy_from_slice(data);
        self.bytes += merged.len();
        self.ranges.insert(start, merged);
    }

    /// Copies the held bytes that fall in `[offset, offset + buf.len())` over `buf`.
    pub(crate) fn overlay(&self, offset: u64, buf: &mut [u8]) {
        if self.ranges.is_empty() || buf.is_empty() {
            return;
        }
        let end = offset + buf.len() as u64;
        let first = self
            .ranges
            .range(..=offset)
            .next_back()
            .map_or(offset, |(&s, _)| s);
        for (&s, v) in self.ranges.range(first..end) {
            let (a, b) = (s.max(offset), (s + v.len() as u64).min(end));
            if a < b {
                buf[(a - offset) as usize..(b - offset) as usize]
                    .copy_from_slice(&v[(a - s) as usize..(b - s) as usize]);
            }
        }
    }

    /// The held ranges, in offset order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.ranges.iter().map(|(&s, v)| (s, v.as_slice()))
    }

    /// The first held range.
    pub(crate) fn first(&self) -> Option<(u64, &[u8])> {
        self.ranges.iter().next().map(|(&s, v)| (s, v.as_slice()))
    }

    /// Forgets the range starting at `start` (it reached the device).
    pub(crate) fn release(&mut self, start: u64) {
        if let Some(v) = self.ranges.remove(&start) {
            self.bytes -= v.len();
        }
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
}
