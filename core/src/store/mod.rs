//! Exception stores: where a snapshot's exception records live.
//!
//! The store decides where the next copied chunk goes and how records become durable; the snapshot
//! keeps the in-memory table and does the data copies. Two stores exist, as in dm-snapshot:
//! [`persistent`] (the on-disk format, `P`/`PO`) and `transient` (`N`, memory only).

pub mod persistent;
pub(crate) mod transient;

use alloc::vec::Vec;

use crate::chunk::ChunkSize;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::exception::Exception;
use crate::snapshot::OverflowMode;

/// Which store a snapshot uses. The numbers are stable: the C ABI's `cowsnap_store_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(i32)]
pub enum StoreKind {
    /// dm's `N`: exceptions only in memory; the snapshot does not survive deactivation.
    Transient = 1,
    /// dm's `P` (and `PO` with [`crate::OverflowMode::Report`]): the kernel's on-disk format.
    #[default]
    Persistent = 0,
}

/// Parses dm's store letters, as `dmsetup table` and LVM write them: `P` (persistent), `PO`
/// (persistent, overflow reported) or `N` (transient), case-insensitive.
pub fn parse_store(letters: &str) -> Result<(StoreKind, OverflowMode)> {
    match letters.to_ascii_uppercase().as_str() {
        "P" => Ok((StoreKind::Persistent, OverflowMode::Invalidate)),
        "PO" => Ok((StoreKind::Persistent, OverflowMode::Report)),
        "N" => Ok((StoreKind::Transient, OverflowMode::Invalidate)),
        _ => Err(Error::InvalidArgument("store must be P, PO or N")),
    }
}

/// COW space accounting, in sectors, as `dmsetup status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Sectors handed out so far, header and metadata areas included.
    pub allocated_sectors: u64,
    /// Size of the COW device.
    pub total_sectors: u64,
    /// Header plus metadata areas up to the current one (0 for a transient store).
    pub metadata_sectors: u64,
}

/// A commit that did not complete.
#[derive(Debug)]
pub(crate) struct CommitFailure {
    /// What the device said.
    pub(crate) error: crate::Error,
    /// True when the store forgot the records and is as before the call: what reached the disk of
    /// them names chunks that hold the right data and are never handed out again in this session.
    /// False when the store is unusable and the snapshot must be invalidated.
    pub(crate) undone: bool,
    /// True when no record reached the device, so the records' chunks can be handed out again.
    pub(crate) reusable: bool,
}

/// A commit taken by the store whose device I/O is still to be done (see `ExceptionStore::stage`).
#[derive(Debug)]
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) struct StagedCommit {
    /// Offsets of metadata areas to zero (one chunk each) before the data flush: the area after
    /// every one this commit fills, so that a scan always finds an end marker.
    pub(crate) zero: Vec<u64>,
    /// Metadata writes `(offset, bytes)`, after the data flush.
    pub(crate) writes: Vec<(u64, Vec<u8>)>,
    /// The store's state before the staging.
    pub(crate) undo: Undo,
}

/// What a persistent store was before a staged commit (to take it back).
#[derive(Debug)]
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) struct Undo {
    pub(crate) area: u64,
    pub(crate) len: usize,
    pub(crate) on_disk: usize,
    /// The current area's records, when the commit filled it (otherwise truncating restores it).
    pub(crate) old_area: Option<Vec<Exception>>,
}

/// What a snapshot needs from its exception store. Internal: the two stores are dm's, and the
/// snapshot code relies on their exact behaviour (records, flushes, undo), so no other store can be
/// plugged in.
pub(crate) trait ExceptionStore: Send + Sync {
    /// Transient or persistent.
    fn kind(&self) -> StoreKind;
    /// The store's chunk size.
    fn chunk_size(&self) -> ChunkSize;
    /// Reserves the next COW chunk for a new exception; `None` when the COW (of `cow_len` bytes) is full.
    fn prepare(&mut self, cow_len: u64) -> Option<u64>;
    /// How many more records can be committed before a commit fails for want of room on a COW of
    /// `cow_len` bytes (persistent: the metadata area after a full one must fit).
    fn commit_capacity(&self, cow_len: u64) -> u64;
    /// Takes back every chunk handed out since (and including) `first`, which no record names:
    /// their copy failed, or their commit failed before any record reached the device.
    fn unprepare(&mut self, first: u64);
    /// Makes `records` durable. Their data chunks are already written; on return the origin may be
    /// overwritten. On failure the store says whether it could take the records back (the snapshot
    /// stays as it was) or not (the snapshot must be invalidated).
    fn commit(
        &mut self,
        cow: &mut dyn BlockDevice,
        records: &[Exception],
    ) -> core::result::Result<(), CommitFailure>;
    /// A commit of `records` split in steps, so that its device flushes can run outside the
    /// volume's locks: the store takes the records now (as if committed) and says what to write;
    /// the caller zeroes [`StagedCommit::zero`], flushes the COW (the records' data), writes
    /// [`StagedCommit::writes`] in order, flushes again, and then the records are durable. On a
    /// failure on the way the caller hands the staged commit back to [`ExceptionStore::unstage`].
    /// `None` (the default, and for an invalid store or no records): use [`ExceptionStore::commit`].
    /// (`std` builds: the small build commits every write on its own and never stages.)
    #[cfg(feature = "std")]
    fn stage(&mut self, _records: &[Exception]) -> Option<StagedCommit> {
        None
    }
    /// Takes back a staged commit that failed. `written` says whether any of its metadata writes
    /// was started. Returns true when the store is as before the staging (the records can be
    /// staged again), false when it is unusable and the snapshot must be invalidated.
    #[cfg(feature = "std")]
    fn unstage(
        &mut self,
        _staged: StagedCommit,
        _written: bool,
        _cow: &mut dyn BlockDevice,
    ) -> bool {
        false
    }
    /// Marks the store invalid for good (persistent: writes `valid = 0` to the header and flushes).
    fn invalidate(&mut self, cow: &mut dyn BlockDevice) -> Result<()>;
    /// Space accounting for a COW of `cow_len` bytes.
    /// `pending` records are allocated but wait for a group commit: they count as committed.
    fn usage(&self, cow_len: u64, pending: u64) -> Usage;
    /// Merge: the newest records, at most `max` (from several metadata areas when the current one
    /// holds fewer), oldest first (empty when no record is left). Dropping them leaves the state
    /// the kernel's merge leaves with as many records: it drops trailing runs one after the other,
    /// emptying (and writing) each area before it steps back into the one before.
    fn merge_prepare(&mut self, cow: &dyn BlockDevice, max: usize) -> Result<Vec<Exception>>;
    /// Merge: drops the newest `n` records durably (their chunks have been copied back and flushed).
    fn merge_commit(&mut self, cow: &mut dyn BlockDevice, n: u64) -> Result<()>;
}
