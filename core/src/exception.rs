//! The in-memory exception table: which origin chunks a snapshot holds a copy of, and where.
//!
//! Like the kernel's, the table is a hash of 256-chunk windows of the origin (`old >> 8`), and each
//! window keeps *runs* of consecutive exceptions (`old..old+n` → `new..new+n`, n ≤ 256) so that a
//! sequential workload costs a fraction of a byte per exception. A run is packed into one `u64`
//! (48-bit COW chunk, 8-bit offset in the window, 8-bit length − 1), and a window's runs sit sorted
//! in its room of one arena shared by all windows, grown by a quarter at a time: about 11 bytes
//! per exception for random workloads loaded at activation, 13–14 when inserted one by one.
//! Lookups are one hash probe plus a binary search of at most 256 runs: no scan.
//!
//! Activation loads a table in bulk ([`ExceptionTable::from_sorted`], and a bucket sorter
//! for records that come in disk order): sorted once, then built window by window, in the
//! sorter's memory (about 8 bytes per record in all while loading).

use alloc::vec::Vec;

/// One exception: origin chunk `old` is preserved in COW chunk `new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Exception {
    /// The origin chunk.
    pub old: u64,
    /// The COW chunk holding its data as it was.
    pub new: u64,
}

/// A run of consecutive exceptions: `old..old+len` → `new..new+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First origin chunk.
    pub old: u64,
    /// COW chunk of the first origin chunk.
    pub new: u64,
    /// Number of chunks (at least 1).
    pub len: u64,
}

/// COW chunk numbers must stay below this (48 bits, as packed in a run). A COW device this large
/// (2^48 chunks) is refused by the stores before it could reach the table.
pub const MAX_COW_CHUNKS: u64 = 1 << 48;

const WINDOW_BITS: u32 = 8;
const WINDOW: u64 = 1 << WINDOW_BITS;
const EMPTY: u64 = u64::MAX; // never a window number: windows are `old >> 8`

/// A run packed in a `u64`: `new << 16 | offset << 8 | (len - 1)`.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Packed(u64);

impl Packed {
    fn new(new: u64, off: u64, len: u64) -> Self {
        debug_assert!(new < MAX_COW_CHUNKS && off < WINDOW && (1..=WINDOW).contains(&len));
        Packed(new << 16 | off << 8 | (len - 1))
    }
    fn new_chunk(self) -> u64 {
        self.0 >> 16
    }
    fn off(self) -> u64 {
        (self.0 >> 8) & 0xff
    }
    fn len(self) -> u64 {
        (self.0 & 0xff) + 1
    }
    fn end(self) -> u64 {
        self.off() + self.len()
    }
}

/// A window number (`EMPTY` when free) and where its runs are: `runs[start..start + len]` of the
/// table's run arena, sorted by offset, with room for `cap`. Windows emptied by merge keep their
/// slot.
#[derive(Clone, Copy)]
struct Slot {
    key: u64,
    start: u64,
    len: u16,
    cap: u16,
}

impl Slot {
    const FREE: Slot = Slot {
        key: EMPTY,
        start: 0,
        len: 0,
        cap: 0,
    };

    fn range(self) -> core::ops::Range<usize> {
        self.start as usize..self.start as usize + usize::from(self.len)
    }
}

/// Completed exceptions of one snapshot.
///
/// The runs of every window live in one arena vector (no allocation per window): a window that
/// outgrows its room moves to the end of the arena with a quarter more, and the arena is
/// compacted when more than a quarter of it is such left-behind room.
#[derive(Clone, Default)]
pub struct ExceptionTable {
    /// Open addressing, linear probing.
    slots: Vec<Slot>,
    runs: Vec<Packed>,
    /// Arena entries no window uses (left behind by moves).
    garbage: usize,
    windows: usize,
    count: u64,
}

impl core::fmt::Debug for ExceptionTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ExceptionTable")
            .field("exceptions", &self.count)
            .field("runs", &self.run_count())
            .finish()
    }
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
        self.slots.iter().map(|s| usize::from(s.len)).sum()
    }

    fn window_runs(&self, slot: usize) -> &[Packed] {
        &self.runs[self.slots[slot].range()]
    }

    fn slot_of(&self, window: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = hash(window, self.slots.len()) & mask;
        loop {
            match self.slots[i].key {
                k if k == window => return Some(i),
                EMPTY => return None,
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn slot_for_insert(&mut self, window: u64) -> usize {
        if let Some(i) = self.slot_of(window) {
            return i;
        }
        if (self.windows + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = hash(window, self.slots.len()) & mask;
        while self.slots[i].key != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = Slot {
            key: window,
            ..Slot::FREE
        };
        self.windows += 1;
        i
    }

    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(16);
        let old = core::mem::replace(&mut self.slots, alloc::vec![Slot::FREE; cap]);
        for s in old.into_iter().filter(|s| s.key != EMPTY) {
            let mut i = hash(s.key, cap) & (cap - 1);
            while self.slots[i].key != EMPTY {
                i = (i + 1) & (cap - 1);
            }
            self.slots[i] = s;
        }
    }

    /// Inserts `run` at index `i` of window `slot`, moving the window to the end of the arena
    /// (with a quarter more room) when it is full.
    fn insert_run(&mut self, slot: usize, i: usize, run: Packed) {
        let s = self.slots[slot];
        if s.len == s.cap {
            // Grow by a quarter: a few moves more, a lot less slack.
            let cap = (s.cap + (s.cap / 4).max(1)).min(WINDOW as u16);
            let start = self.runs.len();
            if self.runs.capacity() - start < usize::from(cap) {
                // The arena grows by a quarter too (large reallocations only remap pages).
                self.runs.reserve_exact((start / 4).max(usize::from(cap)));
            }
            self.runs.extend_from_within(s.range());
            self.runs.resize(start + usize::from(cap), Packed(0));
            self.garbage += usize::from(s.cap);
            self.slots[slot].start = start as u64;
            self.slots[slot].cap = cap;
        }
        let r = self.slots[slot].range();
        self.runs.copy_within(r.start + i..r.end, r.start + i + 1);
        self.runs[r.start + i] = run;
        self.slots[slot].len += 1;
        if self.garbage > 1024 && self.garbage * 4 > self.runs.len() {
            self.compact();
        }
    }

    /// Removes index `i` of window `slot` (its room stays the window's).
    fn remove_run(&mut self, slot: usize, i: usize) {
        let r = self.slots[slot].range();
        self.runs.copy_within(r.start + i + 1..r.end, r.start + i);
        self.slots[slot].len -= 1;
    }

    /// Copies every window's room into a fresh arena, dropping what moves left behind.
    fn compact(&mut self) {
        let mut runs = Vec::with_capacity(self.runs.len() - self.garbage);
        for s in self.slots.iter_mut().filter(|s| s.key != EMPTY) {
            let start = runs.len();
            runs.extend_from_slice(&self.runs[s.range()]);
            runs.resize(start + usize::from(s.cap), Packed(0));
            s.start = start as u64;
        }
        self.runs = runs;
        self.garbage = 0;
    }

    /// The run of `old`'s window that covers it: (slot, index in the window, run).
    fn find(&self, old: u64) -> Option<(usize, usize, Packed)> {
        let slot = self.slot_of(old >> WINDOW_BITS)?;
        let off = old & (WINDOW - 1);
        let runs = self.window_runs(slot);
        let i = runs.partition_point(|r| r.off() <= off).checked_sub(1)?;
        let r = runs[i];
        (off < r.end()).then_some((slot, i, r))
    }

    /// The COW chunk holding origin chunk `old`, if any.
    pub fn lookup(&self, old: u64) -> Option<u64> {
        self.find(old)
            .map(|(_, _, r)| r.new_chunk() + (old & (WINDOW - 1)) - r.off())
    }

    /// `(COW chunk of old, n)`: chunks `old..old+n` map to consecutive COW chunks (n ≥ 1). Lets
    /// readers coalesce I/O.
    pub fn run_from(&self, old: u64) -> Option<(u64, u64)> {
        self.find(old).map(|(_, _, r)| {
            let k = (old & (WINDOW - 1)) - r.off();
            (r.new_chunk() + k, r.len() - k)
        })
    }

    /// First origin chunk in `old..end` that has an exception.
    pub fn next_mapped(&self, old: u64, end: u64) -> Option<u64> {
        let mut w = old >> WINDOW_BITS;
        let mut from = old & (WINDOW - 1);
        let last_window = end.saturating_sub(1) >> WINDOW_BITS;
        while old < end && w <= last_window {
            if let Some(slot) = self.slot_of(w) {
                let runs = self.window_runs(slot);
                let i = runs.partition_point(|r| r.end() <= from);
                if let Some(r) = runs.get(i) {
                    let c = (w << WINDOW_BITS) + r.off().max(from);
                    return (c < end).then_some(c);
                }
            }
            w += 1;
            from = 0;
        }
        None
    }

    /// Records `old → new`. Returns false (and changes nothing) when `old` already has an exception,
    /// or when `new` is not below [`MAX_COW_CHUNKS`] (the stores never hand out such chunks).
    pub fn insert(&mut self, old: u64, new: u64) -> bool {
        if new >= MAX_COW_CHUNKS || self.lookup(old).is_some() {
            return false;
        }
        let slot = self.slot_for_insert(old >> WINDOW_BITS);
        let off = old & (WINDOW - 1);
        let base = self.slots[slot].start as usize;
        let runs = self.window_runs(slot);
        let i = runs.partition_point(|r| r.off() < off);
        let joins_prev = i > 0 && {
            let p = runs[i - 1];
            p.end() == off && p.new_chunk() + p.len() == new
        };
        let joins_next = runs
            .get(i)
            .is_some_and(|n| n.off() == off + 1 && n.new_chunk() == new + 1);
        match (joins_prev, joins_next) {
            (true, true) => {
                let (p, n) = (runs[i - 1], runs[i]);
                self.runs[base + i - 1] =
                    Packed::new(p.new_chunk(), p.off(), p.len() + 1 + n.len());
                self.remove_run(slot, i);
            }
            (true, false) => {
                let p = runs[i - 1];
                self.runs[base + i - 1] = Packed::new(p.new_chunk(), p.off(), p.len() + 1);
            }
            (false, true) => {
                let n = runs[i];
                self.runs[base + i] = Packed::new(new, off, n.len() + 1);
            }
            (false, false) => self.insert_run(slot, i, Packed::new(new, off, 1)),
        }
        self.count += 1;
        true
    }

    /// Removes the exception of origin chunk `old` (used by merge). Returns its COW chunk.
    pub fn remove(&mut self, old: u64) -> Option<u64> {
        let (slot, i, r) = self.find(old)?;
        let off = old & (WINDOW - 1);
        let k = off - r.off();
        let base = self.slots[slot].start as usize;
        let mut parts = [None, None];
        if k > 0 {
            parts[0] = Some(Packed::new(r.new_chunk(), r.off(), k));
        }
        if k + 1 < r.len() {
            parts[1] = Some(Packed::new(r.new_chunk() + k + 1, off + 1, r.len() - k - 1));
        }
        match parts {
            [None, None] => self.remove_run(slot, i),
            [Some(a), None] | [None, Some(a)] => self.runs[base + i] = a,
            [Some(a), Some(b)] => {
                self.runs[base + i] = a;
                self.insert_run(slot, i + 1, b);
            }
        }
        self.count -= 1;
        Some(r.new_chunk() + k)
    }

    /// Builds the table of `exceptions` given in strictly increasing origin-chunk order, in one
    /// pass: the table [`insert`](Self::insert) builds from the same exceptions in any order (runs
    /// joined the same way), without its per-record probe and sorted insertion. `None` where
    /// `insert` would refuse a record: an origin chunk that repeats (or comes out of order), or a
    /// COW chunk not below [`MAX_COW_CHUNKS`].
    pub fn from_sorted(exceptions: impl IntoIterator<Item = Exception>) -> Option<Self> {
        let mut b = Builder::new();
        for e in exceptions {
            if !b.push(e.old, e.new) {
                return None;
            }
        }
        Some(b.finish())
    }

    /// Drops every exception.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Runs in origin-chunk order (consecutive runs in neighbouring windows are reported separately).
    pub fn runs(&self) -> impl Iterator<Item = Run> + '_ {
        let mut slots: Vec<&Slot> = self.slots.iter().filter(|s| s.key != EMPTY).collect();
        slots.sort_unstable_by_key(|s| s.key);
        slots.into_iter().flat_map(move |s| {
            let base = s.key << WINDOW_BITS;
            self.runs[s.range()].iter().map(move |r| Run {
                old: base + r.off(),
                new: r.new_chunk(),
                len: r.len(),
            })
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

impl PartialEq for ExceptionTable {
    /// Same exceptions, in the same runs (however the tables were built or how much they reserved).
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.runs().eq(other.runs())
    }
}

impl Eq for ExceptionTable {}

/// Bulk loading: builds a table from exceptions sorted by origin chunk. Runs go straight into the
/// table's arena, each window exactly as large as it needs; the windows are then placed in a slot
/// array sized once for all of them, a batch at a time (the slots of a batch are touched first,
/// so that their cache misses overlap instead of coming one after the other). No allocation or
/// probe per record or window, no shifting of sorted runs, no regrowth.
pub(crate) struct Builder {
    /// Finished windows, in window order.
    done: Vec<Slot>,
    /// The runs are `runs[..len]`. (Beyond `len`, when the builder writes into a [`Sorter`]'s
    /// memory: keys the sorter has not handed over yet, or room it gave up.)
    runs: Vec<Packed>,
    len: usize,
    /// The window being assembled (`EMPTY` before the first record) and where its runs start.
    window: u64,
    start: usize,
    /// Where the window's last run ends (offset in the window, `NO_RUN` when the window has none
    /// yet) and the COW chunk after its last one: a record continues that run exactly when it
    /// comes at both. Kept here so that joining never reads the run back from the arena.
    run_end: u64,
    run_new_end: u64,
    last: Option<u64>,
    count: u64,
}

/// `Builder::run_end` of a window with no run yet: never an offset.
const NO_RUN: u64 = u64::MAX;

/// Windows placed per batch by [`Builder::finish`].
const PLACE_BATCH: usize = 16;

impl Builder {
    pub(crate) fn new() -> Self {
        Builder {
            done: Vec::new(),
            runs: Vec::new(),
            len: 0,
            window: EMPTY,
            start: 0,
            run_end: NO_RUN,
            run_new_end: 0,
            last: None,
            count: 0,
        }
    }

    /// A builder that writes its runs into `arena` from its start, over what is there (see
    /// [`Sorter::build`]).
    fn in_arena(arena: Vec<Packed>) -> Self {
        let mut b = Self::new();
        b.runs = arena;
        b
    }

    /// Adds `old → new`; false (and nothing added) unless `old` is above every origin chunk added
    /// so far and `new` is below [`MAX_COW_CHUNKS`].
    #[inline]
    pub(crate) fn push(&mut self, old: u64, new: u64) -> bool {
        if new >= MAX_COW_CHUNKS || self.last.is_some_and(|l| old <= l) {
            return false;
        }
        let window = old >> WINDOW_BITS;
        if window != self.window {
            self.close_window();
            self.window = window;
        }
        self.add(old & (WINDOW - 1), new);
        self.count += 1;
        self.last = Some(old);
        true
    }

    /// Adds `off → new` to the current window: joins the window's last run exactly when `insert`
    /// would have joined them (`off` and `new` both right after it), else starts a run.
    #[inline(always)]
    fn add(&mut self, off: u64, new: u64) {
        if off == self.run_end && new == self.run_new_end {
            // One more chunk: the length (minus one) is the low byte, and stays below 256 as the
            // run ends inside the window.
            self.runs[self.len - 1].0 += 1;
        } else {
            let run = Packed::new(new, off, 1);
            match self.runs.get_mut(self.len) {
                Some(r) => *r = run,
                None => self.runs.push(run),
            }
            self.len += 1;
        }
        self.run_end = off + 1;
        self.run_new_end = new + 1;
    }

    /// Adds records packed as `old << new_bits | new`, sorted by origin chunk, each `new` below
    /// [`MAX_COW_CHUNKS`] (activation checked them), the first one's origin chunk not below any
    /// added so far. False when an origin chunk repeats (one of the keys', or the last one added
    /// before): the records before the repeat are added, the builder is not to be finished.
    pub(crate) fn push_packed(&mut self, keys: &[u64], new_bits: u32) -> bool {
        debug_assert!((1..64).contains(&new_bits));
        let mask = (1u64 << new_bits) - 1;
        // No origin chunk is `u64::MAX` once shifted right by `new_bits` (at least 1).
        let mut prev = self.last.unwrap_or(u64::MAX);
        for &k in keys {
            let (old, new) = (k >> new_bits, k & mask);
            if old == prev {
                self.last = Some(prev);
                return false;
            }
            debug_assert!(prev == u64::MAX || old > prev);
            debug_assert!(new < MAX_COW_CHUNKS);
            prev = old;
            let window = old >> WINDOW_BITS;
            if window != self.window {
                self.close_window();
                self.window = window;
            }
            self.add(old & (WINDOW - 1), new);
        }
        self.count += keys.len() as u64;
        if let Some(&k) = keys.last() {
            self.last = Some(k >> new_bits);
        }
        true
    }

    fn close_window(&mut self) {
        self.run_end = NO_RUN;
        let len = self.len - self.start;
        if len == 0 {
            return;
        }
        self.done.push(Slot {
            key: self.window,
            start: self.start as u64,
            len: len as u16,
            cap: len as u16,
        });
        self.start = self.len;
    }

    pub(crate) fn finish(mut self) -> ExceptionTable {
        self.close_window();
        self.runs.truncate(self.len);
        self.runs.shrink_to_fit();
        let windows = self.done.len();
        let mut t = ExceptionTable {
            slots: Vec::new(),
            runs: self.runs,
            garbage: 0,
            windows,
            count: self.count,
        };
        if windows == 0 {
            return t;
        }
        // The smallest power of two that keeps the load factor of `slot_for_insert` (≤ 3/4).
        let cap = (windows * 4).div_ceil(3).next_power_of_two().max(16);
        t.slots = alloc::vec![Slot::FREE; cap];
        let mask = cap - 1;
        for batch in self.done.chunks(PLACE_BATCH) {
            // Independent loads of every home slot of the batch: the memory system fetches them
            // together.
            let mut home = [0usize; PLACE_BATCH];
            let mut free = 0;
            for (h, s) in home.iter_mut().zip(batch) {
                *h = hash(s.key, cap) & mask;
                free += usize::from(t.slots[*h].key == EMPTY);
            }
            core::hint::black_box(free);
            for (&h, s) in home.iter().zip(batch) {
                // Each window comes once: the first free slot of its probe sequence is its slot.
                let mut i = h;
                while t.slots[i].key != EMPTY {
                    i = (i + 1) & mask;
                }
                t.slots[i] = *s;
            }
        }
        t
    }
}

/// Sorts `u64` keys by their bits from `lo` up (the *field*), as they come: each key goes straight
/// into one of 256 buckets by the field's top bits, and [`Sorter::for_each_sorted`] then sorts one
/// bucket at a time by the remaining bits (in a buffer the size of one bucket, in the cache) and
/// hands it over. One trip through memory, no second array of all keys.
///
/// The buckets keep their keys in blocks of one arena, which [`Sorter::build`] turns into the run
/// arena of the table it builds from the sorted keys: the runs are written from the arena's start
/// as the buckets are sorted, over blocks already sorted (a block of a bucket not sorted yet that
/// is in the way moves to a free block further on first). Activation thus holds about 8 bytes per
/// record at most, and writes each page of the table once.
///
/// The field's range need not be known: when a key's field outgrows the buckets, the buckets are
/// merged by neighbouring pairs (or more) and cover a range twice (or more) as large. Keys with
/// equal fields always stay in one bucket in arrival order, so the sort is stable.
///
/// Bulk activation sorts packed `(origin chunk, COW chunk)` records with it; one sort for every
/// caller keeps the no_std build small.
pub(crate) struct Sorter {
    lo: u32,
    /// Bucket of a key: `(key >> lo) >> shift`.
    shift: u32,
    /// The keys, in blocks of `block` slots (block `k` is `arena[k * block..][..block]`).
    arena: Vec<Packed>,
    block: usize,
    /// The blocks of each bucket, in arrival order.
    lists: Vec<Vec<u32>>,
    /// Keys in each block; for a bucket's open block, see `open`.
    fill: Vec<u32>,
    /// The block each bucket writes (`NONE`: none), the slot its next key goes to, and the end of
    /// the block.
    open: [u32; BUCKETS],
    next: [usize; BUCKETS],
    end: [usize; BUCKETS],
    len: usize,
}

const BUCKET_BITS: u32 = 8;
const BUCKETS: usize = 1 << BUCKET_BITS;
const NONE: u32 = u32::MAX;

impl Sorter {
    /// A sorter by bits `lo..`, expecting fields below `2^bits` and at most about `records` keys
    /// (hints: larger fields and more keys are taken; `records` sizes the blocks).
    pub(crate) fn new(lo: u32, bits: u32, records: u64) -> Self {
        // Small blocks for small stores (each bucket's last block is part empty), pages for the
        // large ones.
        let block = (records / 2048).clamp(16, 512).next_power_of_two() as usize;
        // Room for what the device may hold, up to 16 MiB, reserved at once: growing the arena
        // would copy it (the pages are only touched as keys come).
        let mut arena = Vec::new();
        let room = (records as usize)
            .saturating_add(BUCKETS * block)
            .min(1 << 21);
        let _ = arena.try_reserve_exact(room);
        Sorter {
            lo,
            shift: bits.saturating_sub(BUCKET_BITS),
            arena,
            block,
            lists: (0..BUCKETS).map(|_| Vec::new()).collect(),
            fill: Vec::new(),
            open: [NONE; BUCKETS],
            next: [0; BUCKETS],
            end: [0; BUCKETS],
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn push(&mut self, key: u64) {
        let field = key >> self.lo;
        let mut b = field >> self.shift;
        if b >> BUCKET_BITS != 0 {
            self.widen(64 - field.leading_zeros());
            b = field >> self.shift;
        }
        let b = b as usize;
        if self.next[b] == self.end[b] {
            self.open_block(b);
        }
        self.arena[self.next[b]] = Packed(key);
        self.next[b] += 1;
        self.len += 1;
    }

    /// Gives bucket `b` a new block, at the end of the arena.
    fn open_block(&mut self, b: usize) {
        self.close(b);
        let k = self.fill.len();
        self.arena.resize((k + 1) * self.block, Packed(0));
        self.fill.push(0);
        self.lists[b].push(k as u32);
        self.open[b] = k as u32;
        (self.next[b], self.end[b]) = (k * self.block, (k + 1) * self.block);
    }

    /// Records how many keys bucket `b`'s open block holds; the bucket then has none open.
    fn close(&mut self, b: usize) {
        if self.open[b] != NONE {
            let k = self.open[b] as usize;
            self.fill[k] = (self.next[b] - k * self.block) as u32;
        }
        self.open[b] = NONE;
        (self.next[b], self.end[b]) = (0, 0);
    }

    /// Makes the buckets cover fields of `bits` bits. (Keys with equal fields were in one bucket
    /// and stay in one, in arrival order.)
    fn widen(&mut self, bits: u32) {
        let shift = bits - BUCKET_BITS;
        let k = shift - self.shift;
        for j in 0..BUCKETS {
            self.close(j);
        }
        for j in 1..BUCKETS {
            let to = j >> k;
            if to != j {
                let moved = core::mem::take(&mut self.lists[j]);
                self.lists[to].extend(moved);
            }
        }
        self.shift = shift;
    }

    /// Bucket `b`'s keys, in arrival order, appended to `out`.
    fn keys_of(&self, arena: &[Packed], b: usize, out: &mut Vec<u64>) {
        for &k in &self.lists[b] {
            let k = k as usize;
            out.extend(
                arena[k * self.block..][..self.fill[k] as usize]
                    .iter()
                    .map(|p| p.0),
            );
        }
    }

    /// Sorts one bucket's keys by the bits of the field below the bucket's range that vary.
    fn sort_bucket(&self, keys: &mut [u64], scratch: &mut Vec<u64>) {
        let any = keys.iter().fold(0, |a, k| a | k >> self.lo);
        let bits = self.shift.min(64 - any.leading_zeros());
        sort_by_bits(keys, self.lo, self.lo + bits, scratch);
    }

    /// True when two keys so far have the same field (for error paths: sorts a copy).
    pub(crate) fn has_equal_fields(&mut self) -> bool {
        for b in 0..BUCKETS {
            self.close(b);
        }
        let (mut keys, mut scratch) = (Vec::new(), Vec::new());
        (0..BUCKETS).any(|b| {
            keys.clear();
            self.keys_of(&self.arena, b, &mut keys);
            self.sort_bucket(&mut keys, &mut scratch);
            keys.windows(2).any(|w| w[0] >> self.lo == w[1] >> self.lo)
        })
    }

    /// Calls `f` with the keys sorted by field (stably), a bucket at a time, in order, until `f`
    /// returns false (then returns false).
    pub(crate) fn for_each_sorted(self, f: &mut dyn FnMut(&[u64]) -> bool) -> bool {
        self.sort(None, f).is_some()
    }

    /// [`Sorter::for_each_sorted`], then the table of the keys (packed `old << new_bits | new`,
    /// `new` below [`MAX_COW_CHUNKS`], fields being origin chunks: `lo == new_bits`), built in
    /// the sorter's memory. `None` when `f` returned false or an origin chunk repeats.
    pub(crate) fn build(
        self,
        new_bits: u32,
        f: &mut dyn FnMut(&[u64]) -> bool,
    ) -> Option<ExceptionTable> {
        debug_assert_eq!(self.lo, new_bits);
        self.sort(Some(new_bits), f).flatten()
    }

    fn sort(
        mut self,
        build: Option<u32>,
        f: &mut dyn FnMut(&[u64]) -> bool,
    ) -> Option<Option<ExceptionTable>> {
        for b in 0..BUCKETS {
            self.close(b);
        }
        let block = self.block;
        // Who holds each block: (bucket, place in its list), or `FREE` (sorted, or runs).
        const FREE: (u16, u32) = (u16::MAX, 0);
        let mut owner = alloc::vec![FREE; self.fill.len()];
        for (b, list) in self.lists.iter().enumerate() {
            for (i, &k) in list.iter().enumerate() {
                owner[k as usize] = (b as u16, i as u32);
            }
        }
        // Blocks whose keys were handed over (some may lie behind the runs by now).
        let mut free: Vec<u32> = Vec::new();
        // The memory is the builder's (it writes runs from the start) except while a bucket's
        // keys are gathered and blocks in the way of its runs moved.
        let mut arena = core::mem::take(&mut self.arena);
        let mut builder = build.map(|_| Builder::in_arena(core::mem::take(&mut arena)));
        let (mut keys, mut scratch) = (Vec::new(), Vec::new());
        for b in 0..BUCKETS {
            if self.lists[b].is_empty() {
                continue;
            }
            if let Some(bl) = builder.as_mut() {
                core::mem::swap(&mut arena, &mut bl.runs);
            }
            keys.clear();
            self.keys_of(&arena, b, &mut keys);
            for k in core::mem::take(&mut self.lists[b]) {
                owner[k as usize] = FREE;
                free.push(k);
            }
            self.sort_bucket(&mut keys, &mut scratch);
            if !f(&keys) {
                return None;
            }
            let (Some(bl), Some(new_bits)) = (builder.as_mut(), build) else {
                continue;
            };
            // This bucket's runs (at most one per key) go to `runs[len..len + keys]`: blocks of
            // buckets not sorted yet there move to a free block beyond, or to a new one.
            let (first, last) = (bl.len / block, (bl.len + keys.len()).div_ceil(block));
            for k in first..last.min(owner.len()) {
                let (c, i) = owner[k];
                if (c, i) == FREE {
                    continue;
                }
                let to = loop {
                    match free.pop() {
                        Some(t) if t as usize >= last => break t as usize,
                        Some(_) => continue, // behind the runs, or about to be
                        None => {
                            // (No run lies beyond the blocks: runs are at most the keys.)
                            let t = owner.len();
                            debug_assert_eq!(arena.len(), t * block);
                            arena.resize((t + 1) * block, Packed(0));
                            owner.push(FREE);
                            self.fill.push(0);
                            break t;
                        }
                    }
                };
                let n = self.fill[k] as usize;
                arena.copy_within(k * block..k * block + n, to * block);
                self.fill[to] = self.fill[k];
                self.lists[usize::from(c)][i as usize] = to as u32;
                (owner[to], owner[k]) = ((c, i), FREE);
            }
            core::mem::swap(&mut arena, &mut bl.runs);
            if !bl.push_packed(&keys, new_bits) {
                return None;
            }
        }
        Some(builder.map(Builder::finish))
    }
}

/// Sorts `keys` by bits `lo..hi` with an LSD radix sort (stable; a few linear passes of at most
/// 11 bits each, 8 for inputs that fit in the cache), using `scratch` as the second buffer.
pub(crate) fn sort_by_bits(keys: &mut [u64], lo: u32, hi: u32, scratch: &mut Vec<u64>) {
    debug_assert!(lo <= hi && hi <= 64);
    let bits = hi - lo;
    if bits == 0 || keys.len() < 2 {
        return;
    }
    let max_digit = if keys.len() <= 1 << 14 { 8 } else { 11 };
    let passes = bits.div_ceil(max_digit);
    let digit = bits.div_ceil(passes);
    let mut counts = [0usize; 1 << 11];
    scratch.clear();
    scratch.resize(keys.len(), 0);
    let (mut from, mut to): (&mut [u64], &mut [u64]) = (keys, scratch);
    let mut shift = lo;
    let mut in_scratch = false;
    while shift < hi {
        let width = digit.min(hi - shift);
        let mask = (1u64 << width) - 1;
        let counts = &mut counts[..1 << width];
        counts.fill(0);
        for &k in from.iter() {
            counts[((k >> shift) & mask) as usize] += 1;
        }
        let mut at = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = at;
            at += n;
        }
        for &k in from.iter() {
            let d = ((k >> shift) & mask) as usize;
            to[counts[d]] = k;
            counts[d] += 1;
        }
        core::mem::swap(&mut from, &mut to);
        in_scratch = !in_scratch;
        shift += width;
    }
    if in_scratch {
        to.copy_from_slice(from);
    }
}

/// Fibonacci hashing of a window number into a power-of-two table.
fn hash(window: u64, cap: usize) -> usize {
    let bits = cap.trailing_zeros();
    (window.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits.max(1))) as usize
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
        assert!(
            !t.insert(7, MAX_COW_CHUNKS),
            "COW chunks beyond 48 bits are refused"
        );
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
        fn table_matches_a_map(ops in proptest::collection::vec((0u64..700, 0u64..700, any::<bool>()), 0..600)) {
            let mut t = ExceptionTable::new();
            let mut m = BTreeMap::new();
            for (old, new, ins) in ops {
                // Bias towards neighbours so that runs form, split and merge.
                let new = if new % 3 == 0 { old + 5 } else { new };
                if ins {
                    let fresh = !m.contains_key(&old);
                    prop_assert_eq!(t.insert(old, new), fresh);
                    if fresh { m.insert(old, new); }
                } else {
                    prop_assert_eq!(t.remove(old), m.remove(&old));
                }
                prop_assert_eq!(t.len(), m.len() as u64);
            }
            for c in 0..710 {
                prop_assert_eq!(t.lookup(c), m.get(&c).copied());
                let next = m.range(c..c + 300).next().map(|(&k, _)| k);
                prop_assert_eq!(t.next_mapped(c, c + 300), next);
                if let Some((new, n)) = t.run_from(c) {
                    for k in 0..n {
                        prop_assert_eq!(m.get(&(c + k)).copied(), Some(new + k));
                    }
                }
            }
            let all: Vec<_> = t.iter().map(|e| (e.old, e.new)).collect();
            let want: Vec<_> = m.into_iter().collect();
            prop_assert_eq!(all, want);
        }

        /// Many windows growing and shrinking: windows move in the arena and the arena is
        /// compacted, with nothing lost or changed.
        #[test]
        fn arena_moves_and_compaction_keep_every_exception(
            ops in proptest::collection::vec((0u64..40_000, any::<bool>()), 2000..6000),
        ) {
            let mut t = ExceptionTable::new();
            let mut m = BTreeMap::new();
            let mut compactions = 0;
            for (k, (old, ins)) in ops.into_iter().enumerate() {
                // Mostly inserts, non-consecutive COW chunks (one run each).
                let before = t.garbage;
                if ins || k % 3 != 0 {
                    let new = 3 * k as u64 + 1;
                    prop_assert_eq!(t.insert(old, new), !m.contains_key(&old));
                    m.entry(old).or_insert(new);
                } else {
                    prop_assert_eq!(t.remove(old), m.remove(&old));
                }
                compactions += usize::from(t.garbage < before);
            }
            prop_assert!(compactions > 0, "no compaction exercised");
            let all: Vec<_> = t.iter().map(|e| (e.old, e.new)).collect();
            let want: Vec<_> = m.into_iter().collect();
            prop_assert_eq!(all, want);
        }

        /// The bulk builder gives the table `insert` gives, whatever the order `insert` saw, and
        /// refuses exactly what `insert` refuses (a repeated origin chunk, a COW chunk too large).
        #[test]
        fn bulk_built_table_is_the_inserted_one(
            recs in proptest::collection::vec((0u64..1200, 0u64..1200, 0u8..20), 0..900),
        ) {
            // Bias towards runs (consecutive chunks on both sides, across window borders too) and
            // sprinkle COW chunks at and beyond the limit.
            let recs: Vec<Exception> = recs
                .into_iter()
                .enumerate()
                .map(|(i, (old, new, kind))| match kind {
                    0..=7 => Exception { old: i as u64 + 200, new: i as u64 + 7 },
                    8 => Exception { old, new: MAX_COW_CHUNKS - 1 + new % 2 },
                    _ => Exception { old, new },
                })
                .collect();
            let mut t = ExceptionTable::new();
            let inserted = recs.iter().all(|e| t.insert(e.old, e.new));
            let mut sorted = recs.clone();
            sorted.sort_by_key(|e| e.old); // stable, like the radix sort of activation
            let bulk = ExceptionTable::from_sorted(sorted.iter().copied());
            prop_assert_eq!(bulk.is_some(), inserted);
            if let Some(b) = bulk {
                prop_assert_eq!(&b, &t);
                prop_assert_eq!(b.len(), t.len());
                prop_assert_eq!(b.run_count(), t.run_count());
                for c in 0..1500 {
                    prop_assert_eq!(b.lookup(c), t.lookup(c));
                    prop_assert_eq!(b.run_from(c), t.run_from(c));
                    prop_assert_eq!(b.next_mapped(c, c + 300), t.next_mapped(c, c + 300));
                }
                // A bulk-built table keeps working as an ordinary one.
                let (mut b, mut t) = (b, t);
                for e in recs.iter().step_by(3) {
                    prop_assert_eq!(b.remove(e.old), t.remove(e.old));
                    prop_assert_eq!(b.insert(e.old + 1, e.new + 1), t.insert(e.old + 1, e.new + 1));
                }
                prop_assert_eq!(b, t);
            }
        }

        /// Packed keys handed over in pieces (as the bucket sorter hands them) build the table
        /// `insert` builds, and a repeated origin chunk (inside a piece or across two) is
        /// refused, as `insert` refuses it.
        #[test]
        fn packed_pieces_build_the_inserted_table(
            recs in proptest::collection::vec((0u64..1500, 0u64..1200, 0u8..10), 0..900),
            cuts in proptest::collection::vec(0usize..900, 0..12),
            new_bits in 11u32..40,
        ) {
            // Runs (consecutive on both sides, across window borders too) and scattered records.
            let recs: Vec<Exception> = recs
                .into_iter()
                .enumerate()
                .map(|(i, (old, new, kind))| match kind {
                    0..=5 => Exception { old: i as u64 + 200, new: i as u64 + 7 },
                    _ => Exception { old, new },
                })
                .collect();
            let mut t = ExceptionTable::new();
            let inserted = recs.iter().all(|e| t.insert(e.old, e.new));
            let mut keys: Vec<u64> = recs.iter().map(|e| e.old << new_bits | e.new).collect();
            keys.sort_unstable();
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= keys.len()).collect();
            cuts.extend([0, keys.len()]);
            cuts.sort_unstable();
            let mut b = Builder::new();
            let whole = cuts.windows(2).all(|c| b.push_packed(&keys[c[0]..c[1]], new_bits));
            prop_assert_eq!(whole, inserted);
            if whole {
                let b = b.finish();
                prop_assert_eq!(&b, &t);
                prop_assert_eq!(b.run_count(), t.run_count());
                for c in 0..1600 {
                    prop_assert_eq!(b.lookup(c), t.lookup(c));
                }
            }
        }

        #[test]
        fn radix_sort_sorts_by_the_bit_range(
            keys in proptest::collection::vec(any::<u64>(), 0..3000),
            lo in 0u32..64,
            width in 0u32..40,
        ) {
            let hi = (lo + width).min(64);
            let field = |k: u64| if hi == lo { 0 } else { (k >> lo) & (u64::MAX >> (64 - (hi - lo))) };
            let mut want = keys.clone();
            want.sort_by_key(|&k| field(k)); // stable
            let mut got = keys.clone();
            sort_by_bits(&mut got, lo, hi, &mut Vec::new());
            prop_assert_eq!(&got, &want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The bucket sorter hands over the stably sorted keys, in order, whatever range it was
        /// told to expect (too small: it widens as keys come).
        #[test]
        fn sorter_hands_over_sorted_buckets(
            keys in proptest::collection::vec(any::<u64>(), 0..3000),
            lo in 0u32..40,
            hint in 0u32..64,
            spread in 1u32..64,
            records in 0u64..100_000,
        ) {
            let keys: Vec<u64> = keys.into_iter().map(|k| k >> (64 - spread)).collect();
            let mut want = keys.clone();
            want.sort_by_key(|&k| k >> lo); // stable
            let mut s = Sorter::new(lo, hint, records);
            for &k in &keys {
                s.push(k);
            }
            prop_assert_eq!(s.len(), keys.len());
            let mut fields: Vec<u64> = keys.iter().map(|k| k >> lo).collect();
            fields.sort_unstable();
            prop_assert_eq!(s.has_equal_fields(), fields.windows(2).any(|w| w[0] == w[1]));
            let mut pieces = Vec::new();
            let whole = s.for_each_sorted(&mut |p| {
                pieces.extend_from_slice(p);
                true
            });
            prop_assert!(whole);
            prop_assert_eq!(pieces, want);
        }

        /// A few crowded buckets whose blocks come interleaved: runs overlap blocks of buckets not
        /// sorted yet at every step, and the room freed by the bucket being sorted often lies in
        /// the runs' own way.
        #[test]
        fn sorter_builds_with_few_crowded_buckets(
            recs in proptest::collection::vec((0u64..3, 0u64..1024, 0u64..4000), 1..400),
        ) {
            let new_bits = 12;
            let mut t = ExceptionTable::new();
            let mut s = Sorter::new(new_bits, 8 + 10, 0); // buckets of 2^10 origin chunks
            for &(bucket, low, new) in &recs {
                let old = bucket << 10 | low;
                if t.insert(old, new) {
                    s.push(old << new_bits | new);
                }
            }
            let built = s.build(new_bits, &mut |_| true);
            prop_assert_eq!(built.as_ref(), Some(&t));
        }

        /// The sorter builds, in its own memory, the table `insert` builds from the same records
        /// in any order (blocks of buckets not sorted yet move out of the runs' way), hands `f` the
        /// sorted keys on the way, and refuses a repeated origin chunk as `insert` does.
        #[test]
        fn sorter_builds_the_inserted_table(
            recs in proptest::collection::vec((0u64..6000, 0u64..4096, 0u8..10), 0..3000),
            hint in 0u32..20,
            records in 0u64..100_000,
            stop in proptest::option::of(0usize..3000),
        ) {
            // Runs (consecutive on both sides, across window borders too) and scattered records.
            let recs: Vec<Exception> = recs
                .into_iter()
                .enumerate()
                .map(|(i, (old, new, kind))| match kind {
                    0..=4 => Exception { old: i as u64 + 900, new: i as u64 % 4000 + 7 },
                    _ => Exception { old, new },
                })
                .collect();
            let new_bits = 12;
            let mut t = ExceptionTable::new();
            let inserted = recs.iter().all(|e| t.insert(e.old, e.new));
            let mut s = Sorter::new(new_bits, hint, records);
            let keys: Vec<u64> = recs.iter().map(|e| e.old << new_bits | e.new).collect();
            for &k in &keys {
                s.push(k);
            }
            let mut want = keys.clone();
            want.sort_by_key(|&k| k >> new_bits); // stable
            let mut seen = Vec::new();
            let built = s.build(new_bits, &mut |p| {
                seen.extend_from_slice(p);
                stop.map_or(true, |n| seen.len() <= n)
            });
            let stopped = stop.is_some_and(|n| n < keys.len());
            prop_assert_eq!(built.is_some(), inserted && !stopped);
            prop_assert!(want.starts_with(&seen));
            if let Some(b) = built {
                prop_assert_eq!(seen.len(), keys.len());
                prop_assert_eq!(&b, &t);
                prop_assert_eq!(b.run_count(), t.run_count());
                for c in 0..6100 {
                    prop_assert_eq!(b.lookup(c), t.lookup(c));
                }
            }
        }
    }
}
