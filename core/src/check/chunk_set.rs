//! A set of chunk numbers for the checker's search for repeats, in memory that depends on the
//! range of chunks named and never on the number of records.
//!
//! A bitset in pages of [`PAGE_BITS`] bits, made when a chunk of their range is first named, found
//! through a small open-addressing directory (page number → page). COW chunks (all below the
//! device's chunk count) and the origin chunks of a store on a known origin cost at most about 1.6
//! bits per chunk of the device (pages, their pointers, the directory), whatever their number of
//! records. The
//! origin chunks of a bare COW (no origin known) can lie anywhere in 2^64: their set takes an
//! optional memory budget, and once a new page would pass it, chunks of pages not yet made are
//! answered [`Seen::Unchecked`] (the pages made stay exact: a page is never dropped).

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

/// Words in a page: 1024 bits, 128 bytes (two cache lines). Small enough that a sparse set (a big
/// origin with scattered writes) wastes little, large enough that a dense one spends little on
/// the directory.
const PAGE_WORDS: usize = 16;
/// Chunks a page covers.
pub(super) const PAGE_BITS: u64 = 64 * PAGE_WORDS as u64;

type Page = [u64; PAGE_WORDS];

/// Bytes of a directory entry.
const ENTRY_BYTES: usize = core::mem::size_of::<(u64, u32)>();

/// What [`ChunkSet::insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Not in the set before; it is now.
    First,
    /// Already in the set.
    Again,
    /// Not known: its page would pass the memory budget.
    Unchecked,
}

/// A set of chunk numbers (see the module's comment).
pub(super) struct ChunkSet {
    /// (page number + 1, index in `pages`); 0: a free entry. Its length is 0 or a power of two, at
    /// least twice the number of pages.
    dir: Vec<(u64, u32)>,
    /// Pages boxed one by one: the set holds no more than the pages it made (a `Vec<Page>` would
    /// hold up to twice as many after growing), and growing moves pointers, not pages.
    #[allow(clippy::vec_box)]
    pages: Vec<Box<Page>>,
    /// Most bytes the set may hold (directory and pages); `None`: no limit.
    budget: Option<usize>,
    /// The page of the last insertion and its index (records name neighbouring chunks often).
    last: Option<(u64, usize)>,
}

impl ChunkSet {
    /// An empty set that holds at most `budget` bytes (`None`: as many as its range needs).
    pub(super) fn new(budget: Option<usize>) -> Self {
        ChunkSet {
            dir: Vec::new(),
            pages: Vec::new(),
            budget,
            last: None,
        }
    }

    /// Adds `chunk`, saying whether it was there.
    #[inline]
    pub(super) fn insert(&mut self, chunk: u64) -> Seen {
        let page = chunk / PAGE_BITS;
        let at = match self.last {
            Some((p, at)) if p == page => at,
            _ => match self.find(page) {
                Some(at) => at,
                None => match self.add_page(page) {
                    Some(at) => at,
                    None => return Seen::Unchecked,
                },
            },
        };
        self.last = Some((page, at));
        let bit = chunk % PAGE_BITS;
        let word = &mut self.pages[at][(bit / 64) as usize];
        let mask = 1u64 << (bit % 64);
        if *word & mask != 0 {
            Seen::Again
        } else {
            *word |= mask;
            Seen::First
        }
    }

    /// Bytes the set holds (its directory, its pages and their pointers).
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        Self::bytes_of(self.dir.len(), self.pages.capacity(), self.pages.len())
    }

    fn bytes_of(dir: usize, page_slots: usize, pages: usize) -> usize {
        dir * ENTRY_BYTES
            + page_slots * core::mem::size_of::<Box<Page>>()
            + pages * core::mem::size_of::<Page>()
    }

    /// The directory entry where `page` is or would go.
    #[inline]
    fn slot(dir: &[(u64, u32)], page: u64) -> usize {
        let mask = dir.len() - 1;
        let shift = 64 - dir.len().trailing_zeros();
        // Fibonacci hashing: neighbouring pages land far apart.
        let mut i = (page.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize;
        while dir[i].0 != 0 && dir[i].0 != page + 1 {
            i = (i + 1) & mask;
        }
        i
    }

    #[inline]
    fn find(&self, page: u64) -> Option<usize> {
        if self.dir.is_empty() {
            return None;
        }
        let (key, at) = self.dir[Self::slot(&self.dir, page)];
        (key != 0).then_some(at as usize)
    }

    /// Makes the page `page` (not in the set), unless that passes the budget.
    #[cold]
    fn add_page(&mut self, page: u64) -> Option<usize> {
        let n = self.pages.len();
        let dir = if (n + 1) * 2 > self.dir.len() {
            (self.dir.len() * 2).max(16)
        } else {
            self.dir.len()
        };
        let slots = if n == self.pages.capacity() {
            (n * 2).max(16)
        } else {
            self.pages.capacity()
        };
        if self
            .budget
            .is_some_and(|b| Self::bytes_of(dir, slots, n + 1) > b)
            || n >= u32::MAX as usize
        {
            return None;
        }
        if dir != self.dir.len() {
            let old = core::mem::replace(&mut self.dir, vec![(0, 0); dir]);
            for e in old.into_iter().filter(|e| e.0 != 0) {
                let i = Self::slot(&self.dir, e.0 - 1);
                self.dir[i] = e;
            }
        }
        self.pages.reserve_exact(slots - n);
        self.pages.push(Box::new([0; PAGE_WORDS]));
        let i = Self::slot(&self.dir, page);
        self.dir[i] = (page + 1, n as u32);
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;

    /// Inserts `chunks` into a set and a `BTreeSet`, comparing every answer.
    fn same_as_model(chunks: &[u64], budget: Option<usize>) -> ChunkSet {
        let mut set = ChunkSet::new(budget);
        let mut model = BTreeSet::new();
        let mut pages = BTreeSet::new();
        for &c in chunks {
            let got = set.insert(c);
            let page_made = pages.contains(&(c / PAGE_BITS));
            match got {
                Seen::Unchecked => assert!(!page_made, "chunk {c}: its page was made"),
                Seen::First | Seen::Again => {
                    pages.insert(c / PAGE_BITS);
                    let want = if model.insert(c) {
                        Seen::First
                    } else {
                        Seen::Again
                    };
                    assert_eq!(got, want, "chunk {c}");
                }
            }
            if let Some(b) = budget {
                assert!(
                    set.bytes() <= b,
                    "{} bytes over a budget of {b}",
                    set.bytes()
                );
            }
        }
        set
    }

    #[test]
    fn agrees_with_a_btreeset() {
        let mut chunks = Vec::new();
        let mut x = 0x1234_5678_9abc_def0u64;
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Dense, repeated, far apart and at the very end of the range.
            chunks.push(match i % 4 {
                0 => x % 5000,
                1 => i % 3000,
                2 => x,
                _ => u64::MAX - x % 3,
            });
        }
        let set = same_as_model(&chunks, None);
        assert!(set.pages.len() > 5000);
    }

    #[test]
    fn a_budget_is_never_passed_and_made_pages_stay_exact() {
        let chunks: Vec<u64> = (0..10_000u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (1 << 40))
            .chain(0..100)
            .chain(0..100)
            .collect();
        let set = same_as_model(&chunks, Some(64 << 10));
        assert!(set.pages.len() > 100, "{} pages", set.pages.len());
        assert!(set.pages.len() < 1000, "{} pages", set.pages.len());
    }

    #[test]
    fn memory_follows_the_range_not_the_number_of_insertions() {
        let mut once = ChunkSet::new(None);
        for c in 0..100_000 {
            once.insert(c);
        }
        let mut often = ChunkSet::new(None);
        for _ in 0..20 {
            for c in (0..100_000).rev() {
                often.insert(c);
            }
        }
        assert_eq!(once.bytes(), often.bytes());
        // About a bit per chunk: pages of 1024 bits, their pointers and the directory.
        assert!(once.bytes() < 100_000 / 8 * 2, "{} bytes", once.bytes());
    }
}
