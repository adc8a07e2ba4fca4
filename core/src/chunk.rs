//! Units: sectors and chunk sizes, and the arithmetic between bytes and chunks.

use crate::error::{Error, Result};

/// dm counts everything in 512-byte sectors.
pub const SECTOR_SIZE: u64 = 512;

/// Smallest chunk size cowsnap creates (LVM's `lvcreate -s -c` lower bound), in sectors.
pub const MIN_CREATE_CHUNK_SECTORS: u32 = 8;
/// Largest chunk size cowsnap creates (LVM's upper bound, 512 KiB), in sectors.
pub const MAX_CREATE_CHUNK_SECTORS: u32 = 1024;
/// Largest chunk size the kernel accepts (and so cowsnap reads): the largest power of two ≤ INT_MAX >> 9.
pub const MAX_READ_CHUNK_SECTORS: u32 = 1 << 21;
/// Smallest chunk size (in sectors) accepted in a COW header: 4 KiB, LVM's minimum.
pub const MIN_READ_CHUNK_SECTORS: u32 = 8;

/// A chunk size: a power of two number of sectors.
///
/// The constructor checks the range, so holding a `ChunkSize` means the arithmetic below cannot overflow
/// for any device that fits in a `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkSize {
    shift: u32, // log2(bytes)
}

impl ChunkSize {
    /// The default LVM uses: 4 KiB.
    pub const DEFAULT: ChunkSize = ChunkSize { shift: 12 };

    /// A chunk size that cowsnap may create: 4 KiB … 512 KiB, power of two.
    pub fn new(bytes: u64) -> Result<Self> {
        let lo = MIN_CREATE_CHUNK_SECTORS as u64 * SECTOR_SIZE;
        let hi = MAX_CREATE_CHUNK_SECTORS as u64 * SECTOR_SIZE;
        if !bytes.is_power_of_two() || bytes < lo || bytes > hi {
            return Err(Error::BadChunkSize { bytes });
        }
        Ok(ChunkSize {
            shift: bytes.trailing_zeros(),
        })
    }

    /// Any chunk size the kernel accepts, as found in an existing COW header (1 sector … 2^21 sectors).
    pub fn from_disk_sectors(sectors: u32) -> Result<Self> {
        if !sectors.is_power_of_two() || sectors > MAX_READ_CHUNK_SECTORS {
            return Err(Error::corrupt(alloc::format!(
                "chunk size {sectors} sectors in header is not a power of two up to 2^21"
            )));
        }
        // The kernel accepts 1..4 sectors through a hand-made dmsetup table, but LVM never creates
        // them and neither does cowsnap: a header saying so is far more likely a damaged one, and
        // reading with the wrong geometry finds no records (the snapshot would silently read as
        // the origin).
        if sectors < MIN_READ_CHUNK_SECTORS {
            return Err(Error::corrupt(alloc::format!(
                "chunk size {sectors} sectors in header is below the 8-sector (4 KiB) minimum"
            )));
        }
        Ok(ChunkSize {
            shift: sectors.trailing_zeros() + 9,
        })
    }

    /// Bytes in one chunk.
    pub fn bytes(self) -> u64 {
        1u64 << self.shift
    }

    /// Sectors in one chunk.
    pub fn sectors(self) -> u64 {
        self.bytes() / SECTOR_SIZE
    }

    /// The chunk that holds byte `offset`.
    pub fn chunk_of(self, offset: u64) -> u64 {
        offset >> self.shift
    }

    /// Byte offset of chunk `chunk`.
    pub fn offset_of(self, chunk: u64) -> u64 {
        chunk << self.shift
    }

    /// Number of chunks (rounded up) covering `bytes` bytes.
    pub fn chunks_in(self, bytes: u64) -> u64 {
        (bytes >> self.shift) + u64::from(bytes & (self.bytes() - 1) != 0)
    }

    /// Number of whole chunks in `bytes` bytes (a trailing partial chunk is never used for COW data).
    pub fn whole_chunks_in(self, bytes: u64) -> u64 {
        bytes >> self.shift
    }
}

impl Default for ChunkSize {
    fn default() -> Self {
        ChunkSize::DEFAULT
    }
}

/// Checks that `[offset, offset+len)` lies inside a device of `size` bytes.
pub(crate) fn check_range(offset: u64, len: usize, size: u64) -> Result<()> {
    crate::limits::check_range(offset, len as u64, size)
}

/// Splits `[offset, offset+len)` into pieces that each lie inside one chunk:
/// yields `(chunk, offset_in_chunk, position_in_buffer, piece_len)`.
pub(crate) fn pieces(
    chunk: ChunkSize,
    offset: u64,
    len: usize,
) -> impl Iterator<Item = (u64, usize, usize, usize)> {
    let end = offset + len as u64;
    let mut pos = offset;
    core::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let c = chunk.chunk_of(pos);
        let in_chunk = pos - chunk.offset_of(c);
        let take = (chunk.bytes() - in_chunk).min(end - pos);
        let item = (c, in_chunk as usize, (pos - offset) as usize, take as usize);
        pos += take;
        Some(item)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_bounds() {
        assert!(ChunkSize::new(4096).is_ok());
        assert!(ChunkSize::new(512 * 1024).is_ok());
        assert_eq!(
            ChunkSize::new(2048),
            Err(Error::BadChunkSize { bytes: 2048 })
        );
        assert!(ChunkSize::new(1024 * 1024).is_err());
        assert!(ChunkSize::new(12288).is_err());
        assert!(ChunkSize::new(0).is_err());
        assert!(ChunkSize::from_disk_sectors(1).is_err());
        assert!(ChunkSize::from_disk_sectors(4).is_err());
        assert!(ChunkSize::from_disk_sectors(8).is_ok());
        assert!(ChunkSize::from_disk_sectors(1 << 21).is_ok());
        assert!(ChunkSize::from_disk_sectors(1 << 22).is_err());
        assert!(ChunkSize::from_disk_sectors(0).is_err());
        assert!(ChunkSize::from_disk_sectors(24).is_err());
    }

    #[test]
    fn pieces_split_at_chunk_boundaries() {
        let cs = ChunkSize::new(4096).unwrap();
        let v: alloc::vec::Vec<_> = pieces(cs, 4000, 5000).collect();
        assert_eq!(
            v,
            alloc::vec![(0, 4000, 0, 96), (1, 0, 96, 4096), (2, 0, 4192, 808)]
        );
        assert_eq!(pieces(cs, 10, 0).count(), 0);
    }

    #[test]
    fn range_checks() {
        assert!(check_range(0, 10, 10).is_ok());
        assert!(check_range(1, 10, 10).is_err());
        assert!(check_range(u64::MAX, 2, 10).is_err());
    }
}
