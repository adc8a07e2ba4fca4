//! Block devices: the only way the engine touches storage.
//!
//! The trait is deliberately small (byte-addressed positional I/O, flush, length, optional grow) so that
//! tests can wrap a device to count, fail or "lose power", and embedders can bring their own storage.

use alloc::vec;
use alloc::vec::Vec;

use crate::chunk::check_range;
use crate::error::{Error, Result};

/// A fixed-size, byte-addressed storage device.
///
/// Implementations must not grow on `write_at`: writing past `len()` is an error (the engine checks too).
/// `flush` makes every completed write durable (it is the engine's PREFLUSH/FUA barrier).
pub trait BlockDevice: Send + Sync {
    /// Size in bytes.
    fn len(&self) -> u64;
    /// Fills `buf` from `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes `buf` at `offset`.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()>;
    /// Makes all completed writes durable.
    fn flush(&mut self) -> Result<()>;
    /// Grows (or shrinks) the device. Devices that cannot change size return `Unsupported`.
    fn set_len(&mut self, _new_len: u64) -> Result<()> {
        Err(Error::Unsupported("this device cannot be resized"))
    }
    /// True when the device holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// What the device is, when it can tell (a file's device and inode): the volume refuses to use
    /// one device twice (as the origin and a COW, or as two COWs), which would destroy data.
    fn identity(&self) -> Option<DeviceId> {
        None
    }
    /// A handle that flushes this device without borrowing it (`std` builds), so that a volume
    /// shared by several threads can flush outside its locks while other threads write. Flushing
    /// through it must make durable every write completed before the call, as [`flush`] does.
    /// `None` (the default): the volume flushes through [`flush`], under its lock.
    ///
    /// [`flush`]: BlockDevice::flush
    #[cfg(feature = "std")]
    fn flush_handle(&self) -> Option<std::sync::Arc<dyn FlushHandle>> {
        None
    }
}

/// Flushes a device from any thread (see [`BlockDevice::flush_handle`]).
#[cfg(feature = "std")]
pub trait FlushHandle: Send + Sync {
    /// Makes every write completed on the device before this call durable.
    fn flush(&self) -> Result<()>;
}

/// The identity of the storage behind a device: for files and device nodes, `st_dev` and `st_ino`
/// (the same for every path, symlink or hard link that names the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceId {
    /// `st_dev`: the file system (or device) the file lives on.
    pub dev: u64,
    /// `st_ino`: the file's inode number on that file system.
    pub ino: u64,
}

impl<D: BlockDevice + ?Sized> BlockDevice for alloc::boxed::Box<D> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        (**self).write_at(offset, buf)
    }
    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
    fn set_len(&mut self, new_len: u64) -> Result<()> {
        (**self).set_len(new_len)
    }
    fn identity(&self) -> Option<DeviceId> {
        (**self).identity()
    }
    #[cfg(feature = "std")]
    fn flush_handle(&self) -> Option<std::sync::Arc<dyn FlushHandle>> {
        (**self).flush_handle()
    }
}

/// Bounds-checked read: the engine never trusts a device to check its own range.
pub(crate) fn read(dev: &dyn BlockDevice, offset: u64, buf: &mut [u8]) -> Result<()> {
    check_range(offset, buf.len(), dev.len())?;
    if buf.is_empty() {
        return Ok(());
    }
    dev.read_at(offset, buf)
}

/// Bounds-checked write.
pub(crate) fn write(dev: &mut dyn BlockDevice, offset: u64, buf: &[u8]) -> Result<()> {
    check_range(offset, buf.len(), dev.len())?;
    if buf.is_empty() {
        return Ok(());
    }
    dev.write_at(offset, buf)
}

/// Writes `len` zero bytes at `offset`, in bounded pieces (chunks may be up to 1 GiB).
pub(crate) fn write_zeros(dev: &mut dyn BlockDevice, offset: u64, len: u64) -> Result<()> {
    check_range(offset, len as usize, dev.len())?;
    let zeros = vec![0u8; len.min(COPY_BUF) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(COPY_BUF);
        dev.write_at(offset + done, &zeros[..n as usize])?;
        done += n;
    }
    Ok(())
}

/// Largest buffer the engine allocates for one copy step.
pub(crate) const COPY_BUF: u64 = 1 << 20;

/// A device in memory. Used for tests, wasm, and transient COW areas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemDevice {
    data: Vec<u8>,
}

impl MemDevice {
    /// A zero-filled device of `len` bytes.
    pub fn new(len: usize) -> Self {
        MemDevice { data: vec![0; len] }
    }

    /// A zero-filled device of `len` bytes, or `NO_SPACE` when the memory cannot be had (instead of
    /// aborting, as [`MemDevice::new`] does). The memory comes zeroed from the allocator (calloc),
    /// not allocated then filled: the system hands out zero pages lazily, so a large memory COW costs
    /// no time up front (it is often created while an application holds its database lock).
    pub fn try_new(len: u64) -> Result<Self> {
        let n = usize::try_from(len).map_err(|_| Error::NoSpace)?;
        if n == 0 {
            return Ok(MemDevice::default());
        }
        let layout = alloc::alloc::Layout::array::<u8>(n).map_err(|_| Error::NoSpace)?;
        #[allow(unsafe_code)]
        // SAFETY: `layout` has a non-zero size (n > 0). A non-null `ptr` comes from the global
        // allocator with exactly this layout (n bytes, align 1) and all n bytes initialised (zero);
        // the Vec takes ownership and frees it with the same layout.
        let data = unsafe {
            let ptr = alloc::alloc::alloc_zeroed(layout);
            if ptr.is_null() {
                return Err(Error::NoSpace);
            }
            Vec::from_raw_parts(ptr, n, n)
        };
        Ok(MemDevice { data })
    }

    /// A device holding `data` (for instance a COW image read from a file).
    pub fn from_vec(data: Vec<u8>) -> Self {
        MemDevice { data }
    }

    /// The device's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// Takes the bytes out.
    pub fn into_vec(self) -> Vec<u8> {
        self.data
    }
}

impl BlockDevice for MemDevice {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(offset, buf.len(), self.len())?;
        let o = offset as usize;
        buf.copy_from_slice(&self.data[o..o + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(offset, buf.len(), self.len())?;
        let o = offset as usize;
        self.data[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn set_len(&mut self, new_len: u64) -> Result<()> {
        let n = usize::try_from(new_len).map_err(|_| Error::NoSpace)?;
        // Amortised growth: autoextend grows in small steps, and an exact reservation would copy the
        // whole device each time.
        let extra = n.saturating_sub(self.data.len());
        self.data.try_reserve(extra).map_err(|_| Error::NoSpace)?;
        self.data.resize(n, 0);
        Ok(())
    }
}

#[cfg(feature = "std")]
pub use file::FileDevice;

#[cfg(feature = "std")]
mod file {
    use super::*;
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::sync::Arc;

    /// A device backed by a file (an image file or a block device node), using positional I/O.
    ///
    /// The length is fixed at open time and only changes through `set_len`, so a stray write can never
    /// silently grow the file.
    #[derive(Debug)]
    pub struct FileDevice {
        /// Shared with flush handles (`fdatasync` needs no exclusive access).
        file: Arc<File>,
        len: u64,
    }

    impl FileDevice {
        /// Opens an existing file read-write; its current size is the device size.
        pub fn open(path: impl AsRef<Path>) -> Result<Self> {
            let file = OpenOptions::new().read(true).write(true).open(path)?;
            let len = file.metadata()?.len();
            Ok(FileDevice {
                file: Arc::new(file),
                len,
            })
        }

        /// Creates (or truncates) a sparse file of `len` bytes. Nothing is reserved: writes into it
        /// can fail later on a full file system. New COW devices should use [`FileDevice::create_new`].
        pub fn create(path: impl AsRef<Path>, len: u64) -> Result<Self> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)?;
            file.set_len(len)?;
            Ok(FileDevice {
                file: Arc::new(file),
                len,
            })
        }

        /// Creates a new file of `len` bytes with all of its space reserved (like LVM allocating a
        /// snapshot's extents at `lvcreate`), so that copies into it cannot fail for want of space
        /// later. Refuses any existing path, a symlink included (`O_EXCL`); on failure (e.g. not
        /// enough space) the file is removed again and nothing is left behind.
        pub fn create_new(path: impl AsRef<Path>, len: u64) -> Result<Self> {
            let path = path.as_ref();
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)?;
            match reserve(&file, 0, len) {
                Ok(()) => Ok(FileDevice {
                    file: Arc::new(file),
                    len,
                }),
                Err(e) => {
                    drop(file);
                    let _ = std::fs::remove_file(path);
                    Err(e)
                }
            }
        }

        /// Wraps an open file.
        pub fn from_file(file: File) -> Result<Self> {
            let len = file.metadata()?.len();
            Ok(FileDevice {
                file: Arc::new(file),
                len,
            })
        }
    }

    impl BlockDevice for FileDevice {
        fn len(&self) -> u64 {
            self.len
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            check_range(offset, buf.len(), self.len)?;
            self.file.read_exact_at(buf, offset)?;
            Ok(())
        }
        fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
            check_range(offset, buf.len(), self.len)?;
            self.file.write_all_at(buf, offset)?;
            Ok(())
        }
        fn flush(&mut self) -> Result<()> {
            self.file.sync_data()?;
            Ok(())
        }
        /// Growing reserves the added space (so an autoextended COW cannot run out of host space
        /// later); if the space is not there the file keeps its size and the error is returned.
        fn set_len(&mut self, new_len: u64) -> Result<()> {
            if new_len > self.len && self.is_regular_file() {
                reserve(&self.file, self.len, new_len - self.len).map_err(|e| {
                    let _ = self.file.set_len(self.len);
                    e
                })?;
            } else {
                self.file.set_len(new_len)?;
            }
            self.len = new_len;
            Ok(())
        }
        fn identity(&self) -> Option<DeviceId> {
            use std::os::unix::fs::MetadataExt;
            let m = self.file.metadata().ok()?;
            Some(DeviceId {
                dev: m.dev(),
                ino: m.ino(),
            })
        }
        fn flush_handle(&self) -> Option<Arc<dyn FlushHandle>> {
            Some(Arc::new(SyncFile(self.file.clone())))
        }
    }

    /// `fdatasync` of a device's file from any thread.
    struct SyncFile(Arc<File>);

    impl FlushHandle for SyncFile {
        fn flush(&self) -> Result<()> {
            self.0.sync_data()?;
            Ok(())
        }
    }

    impl FileDevice {
        fn is_regular_file(&self) -> bool {
            self.file.metadata().is_ok_and(|m| m.is_file())
        }
    }

    /// Allocates `[offset, offset+len)` of `file` (`posix_fallocate`; the C library writes zeros
    /// on file systems without `fallocate`). The file grows to cover the range.
    #[allow(unsafe_code)]
    fn reserve(file: &File, offset: u64, len: u64) -> Result<()> {
        use std::os::unix::io::AsRawFd;
        if len == 0 {
            return Ok(());
        }
        let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(Error::InvalidArgument(
                "file size beyond what the OS can address",
            ));
        };
        if off.checked_add(n).is_none() {
            return Err(Error::InvalidArgument(
                "file size beyond what the OS can address",
            ));
        }
        loop {
            // SAFETY: a plain system call on a file descriptor this function borrows; no memory.
            let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), off, n) };
            match r {
                0 => return Ok(()),
                libc::EINTR => continue,
                e => return Err(std::io::Error::from_raw_os_error(e).into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_device_bounds() {
        let mut d = MemDevice::new(100);
        assert!(d.write_at(90, &[1; 10]).is_ok());
        assert!(matches!(
            d.write_at(91, &[1; 10]),
            Err(Error::OutOfRange { .. })
        ));
        let mut b = [0u8; 10];
        d.read_at(90, &mut b).unwrap();
        assert_eq!(b, [1; 10]);
        assert!(d.read_at(u64::MAX, &mut b).is_err());
        d.set_len(200).unwrap();
        assert_eq!(d.len(), 200);
    }

    #[cfg(feature = "std")]
    #[test]
    fn file_device_does_not_grow_on_write() {
        let dir = std::env::temp_dir().join(alloc::format!("cowsnap-dev-{}", std::process::id()));
        let mut d = FileDevice::create(&dir, 4096).unwrap();
        assert!(d.write_at(4095, &[1, 2]).is_err());
        d.write_at(4094, &[1, 2]).unwrap();
        d.flush().unwrap();
        let d2 = FileDevice::open(&dir).unwrap();
        assert_eq!(d2.len(), 4096);
        let mut b = [0; 2];
        d2.read_at(4094, &mut b).unwrap();
        assert_eq!(b, [1, 2]);
        std::fs::remove_file(&dir).unwrap();
    }
}
