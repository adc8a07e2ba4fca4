//! The in-memory exception table: which origin chunks a snapshot holds a copy of, and where.
//!
//! Like the kernel, consecutive exceptions (`old..old+n` → `new..new+n`) are stored as one run, so a
//! sequential workload costs a few bytes per million chunks. Runs sit in an ordered map keyed by their
//! first origin chunk: lookups are a logarithmic search, never a scan, and iteration is in origin order.

use alloc::collections::BTreeMap;

/// One exception: origin chunk `old` is preserved in COW chunk `new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Exception {
    pub old: u64,
    pub new: u64,
}

/// A run of consecutive exceptions: `old..old+len` → `new..new+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub old: u64,
    pub new: u64,
    pub len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunTail {
    new: u64,
    len: u64,
}

/// Completed exceptions of one snapshot.
#[derive(Debug, Clone, Default)]
pub struct ExceptionTable {
    runs: BTreeMap<u64, RunTail>,
    count: u64,
}

impl ExceptionTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of exceptions (chunks), not runs.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True when no chunk has an exception.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of runs the table stores.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    fn run_containing(&self, old: u64) -> Option<Run> {
        let (&start, tail) = self.runs.range(..=old).next_back()?;
        (old < start + tail.len).then_some(Run {
            old: start,
            new: tail.new,
            len: tail.len,
        })
    }

    /// The COW chunk holding origin chunk `old`, if any.
    pub fn lookup(&self, old: u64) -> Option<u64> {
        self.run_containing(old).map(|r| r.new + (old - r.old))
    }

    /// How many chunks from `old` on map to consecutive COW chunks starting at `lookup(old)`
    /// (0 when `old` has no exception). Lets readers coalesce I/O.
    pub fn run_from(&self, old: u64) -> Option<(u64, u64)> {
        self.run_containing(old)
            .map(|r| (r.new + (old - r.old), r.old + r.len - old))
    }

    /// First origin chunk ≥ `old` that has an exception.
    pub fn next_mapped(&self, old: u64) -> Option<u64> {
        if self.lookup(old).is_some() {
            return Some(old);
        }
        self.runs.range(old..).next().map(|(&s, _)| s)
    }

    /// Records `old → new`. Returns false (and changes nothing) when `old` already has an exception.
    pub fn insert(&mut self, old: u64, new: u64) -> bool {
        if self.lookup(old).is_some() {
            return false;
        }
        // Extend the run that ends right before, if it also ends right before `new`.
        let before = self
            .runs
            .range(..old)
            .next_back()
            .map(|(&s, t)| (s, *t))
            .filter(|&(s, t)| s + t.len == old && t.new + t.len == new);
        let after = old
            .checked_add(1)
            .and_then(|n| self.runs.get(&n).copied())
            .filter(|t| Some(t.new) == new.checked_add(1));
        match (before, after) {
            (Some((s, t)), Some(a)) => {
                self.runs.remove(&(old + 1));
                self.runs.insert(
                    s,
                    RunTail {
                        new: t.new,
                        len: t.len + 1 + a.len,
                    },
                );
            }
            (Some((s, t)), None) => {
                self.runs.insert(
                    s,
                    RunTail {
                        new: t.new,
                        len: t.len + 1,
                    },
                );
            }
            (None, Some(a)) => {
                self.runs.remove(&(old + 1));
                self.runs.insert(
                    old,
                    RunTail {
                        new,
                        len: a.len + 1,
                    },
                );
            }
            (None, None) => {
                self.runs.insert(old, RunTail { new, len: 1 });
            }
        }
        self.count += 1;
        true
    }

    /// Removes the exception of origin chunk `old` (used by merge). Returns its COW chunk.
    pub fn remove(&mut self, old: u64) -> Option<u64> {
        let r = self.run_containing(old)?;
        self.runs.remove(&r.old);
        let k = old - r.old;
        if k > 0 {
            self.runs.insert(r.old, RunTail { new: r.new, len: k });
        }
        if k + 1 < r.len {
            self.runs.insert(
                old + 1,
                RunTail {
                    new: r.new + k + 1,
                    len: r.len - k - 1,
                },
            );
        }
        self.count -= 1;
        Some(r.new + k)
    }

    /// Drops every exception.
    pub fn clear(&mut self) {
        self.runs.clear();
        self.count = 0;
    }

    /// Runs in origin-chunk order.
    pub fn runs(&self) -> impl Iterator<Item = Run> + '_ {
        self.runs.iter().map(|(&old, t)| Run {
            old,
            new: t.new,
            len: t.len,
        })
    }

    /// Every exception, in origin-chunk order.
    pub fn iter(&self) -> impl Iterator<Item = Exception> + '_ {
        self.runs().flat_map(|r| {
            (0..r.len).map(move |i| Exception {
                old: r.old + i,
                new: r.new + i,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[test]
    fn runs_merge_on_both_sides() {
        let mut t = ExceptionTable::new();
        assert!(t.insert(100, 2));
        assert!(t.insert(102, 4));
        assert_eq!(t.run_count(), 2);
        assert!(t.insert(101, 3));
        assert_eq!(t.run_count(), 1);
        assert_eq!(t.lookup(101), Some(3));
        assert_eq!(t.lookup(103), None);
        assert!(!t.insert(101, 9));
        assert_eq!(t.len(), 3);
        assert_eq!(t.remove(101), Some(3));
        assert_eq!(t.run_count(), 2);
        assert_eq!(t.lookup(102), Some(4));
        assert_eq!(t.lookup(101), None);
    }

    proptest! {
        #[test]
        fn table_matches_a_map(ops in proptest::collection::vec((0u64..64, 0u64..64, any::<bool>()), 0..200)) {
            let mut t = ExceptionTable::new();
            let mut m = BTreeMap::new();
            for (old, new, ins) in ops {
                if ins {
                    let fresh = !m.contains_key(&old);
                    prop_assert_eq!(t.insert(old, new), fresh);
                    if fresh { m.insert(old, new); }
                } else {
                    prop_assert_eq!(t.remove(old), m.remove(&old));
                }
                prop_assert_eq!(t.len(), m.len() as u64);
            }
            for c in 0..70 {
                prop_assert_eq!(t.lookup(c), m.get(&c).copied());
            }
            let all: Vec<_> = t.iter().map(|e| (e.old, e.new)).collect();
            let want: Vec<_> = m.into_iter().collect();
            prop_assert_eq!(all, want);
        }
    }
}
