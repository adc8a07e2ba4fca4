//! The transient store (`N`): data chunks from COW chunk 0 upward, records only in memory.

use alloc::vec::Vec;

use super::{CommitFailure, ExceptionStore, StoreKind, Usage};
use crate::chunk::{ChunkSize, SECTOR_SIZE};
use crate::device::BlockDevice;
use crate::error::Result;
use crate::exception::{Exception, MAX_COW_CHUNKS};

/// dm-snap-transient: nothing on disk but the copied chunks.
#[derive(Debug)]
pub struct TransientStore {
    chunk: ChunkSize,
    /// Next free position, in chunks (the kernel counts sectors; status converts).
    next_free: u64,
    /// Records in commit order, kept so that a transient snapshot can be merged too.
    records: Vec<Exception>,
}

impl TransientStore {
    /// A new, empty store.
    pub fn new(chunk: ChunkSize) -> Self {
        TransientStore {
            chunk,
            next_free: 0,
            records: Vec::new(),
        }
    }
}

impl ExceptionStore for TransientStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Transient
    }
    fn chunk_size(&self) -> ChunkSize {
        self.chunk
    }
    fn prepare(&mut self, cow_len: u64) -> Option<u64> {
        // Kernel: fail if next_free + chunk_size > size (in sectors).
        if (self.next_free + 1) * self.chunk.sectors() > cow_len / SECTOR_SIZE
            || self.next_free >= MAX_COW_CHUNKS
        {
            return None;
        }
        self.next_free += 1;
        Some(self.next_free - 1)
    }
    fn commit_capacity(&self, _cow_len: u64) -> u64 {
        u64::MAX
    }
    fn unprepare(&mut self, first: u64) {
        self.next_free = self.next_free.min(first);
    }
    fn commit(
        &mut self,
        _cow: &mut dyn BlockDevice,
        records: &[Exception],
    ) -> core::result::Result<(), CommitFailure> {
        self.records.extend_from_slice(records);
        Ok(())
    }
    fn invalidate(&mut self, _cow: &mut dyn BlockDevice) -> Result<()> {
        self.records = Vec::new();
        Ok(())
    }
    fn usage(&self, cow_len: u64, _pending: u64) -> Usage {
        Usage {
            allocated_sectors: self.next_free * self.chunk.sectors(),
            total_sectors: cow_len / SECTOR_SIZE,
            metadata_sectors: 0,
        }
    }
    fn merge_prepare(&mut self, _cow: &dyn BlockDevice, max: usize) -> Result<Vec<Exception>> {
        Ok(self.records[self.records.len().saturating_sub(max)..].to_vec())
    }
    fn merge_commit(&mut self, _cow: &mut dyn BlockDevice, n: u64) -> Result<()> {
        let keep = self.records.len().saturating_sub(n as usize);
        self.records.truncate(keep);
        self.next_free = self.records.last().map_or(0, |e| e.new + 1);
        Ok(())
    }
}
