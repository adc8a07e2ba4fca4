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
    /// The granularity callers' I/O must keep: 1 for most devices, [`DIRECT_IO_ALIGN`] for a file
    /// opened with `O_DIRECT`. The volume refuses a caller's read or write whose offset or length
    /// is not a multiple of it (its own I/O, such as 16-byte header updates, the device handles).
    fn io_alignment(&self) -> u64 {
        1
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
    /// How many bytes from `offset` on (at most `len`) read as zeros, as far as the device can
    /// tell without reading them: a hole of a sparse file, or space reserved and never written.
    /// 0 (the default) when it cannot tell. It may understate, never overstate: the engine skips
    /// copying zeros onto zeros on this answer alone (see `Volume::create_snapshot`).
    fn known_zeros(&self, _offset: u64, _len: u64) -> u64 {
        0
    }
    /// A handle that reads this device from another thread (`std` builds), so that activation can
    /// read metadata areas ahead while it checks the ones already read. Reads through it must
    /// return what [`read_at`] returns. `None` (the default): activation reads through
    /// [`read_at`], one area after the other.
    ///
    /// [`read_at`]: BlockDevice::read_at
    #[cfg(feature = "std")]
    fn read_handle(&self) -> Option<std::sync::Arc<dyn ReadHandle>> {
        None
    }
    /// The file whose bytes at the same offsets are this device's, read and written through the
    /// page cache (`std` builds): a copy between two such devices is made by the kernel
    /// (`copy_file_range`) without passing through this process. `None` (the default) for every
    /// other device, a file opened with `O_DIRECT` included. A device that returns a file must
    /// have nothing else to do on a write (no cache of its own, no bookkeeping).
    #[cfg(feature = "std")]
    fn backing_file(&self) -> Option<&std::fs::File> {
        None
    }
    /// A hint that `[offset, offset + len)`, just written, is about to be flushed: the device may
    /// start writing it back now, so the flush that follows waits for less (a merge step copies
    /// megabytes onto the origin, then flushes it). It never changes what a flush makes durable,
    /// nor when a write is durable; errors are left for that flush to report. Default: nothing.
    fn write_behind(&self, _offset: u64, _len: u64) {}
}

/// Alignment of offsets, lengths and sizes on a device opened with `O_DIRECT`: 4096 bytes, the
/// logical block size of 4Kn disks (and a multiple of the 512 bytes of the others), which is also
/// the page size the kernel wants memory aligned to.
pub const DIRECT_IO_ALIGN: u64 = 4096;

/// Refuses a caller's I/O that is not a multiple of `align` (see [`BlockDevice::io_alignment`]).
pub(crate) fn check_aligned(align: u64, offset: u64, len: usize) -> Result<()> {
    if align > 1 && (offset % align != 0 || len as u64 % align != 0) {
        return Err(Error::InvalidArgument(
            "direct I/O (O_DIRECT): offset and length must be multiples of 4096 bytes",
        ));
    }
    Ok(())
}

/// Reads a device from any thread (see [`BlockDevice::read_handle`]).
#[cfg(feature = "std")]
pub trait ReadHandle: Send + Sync {
    /// Reads `buf.len()` bytes at `offset`, as [`BlockDevice::read_at`] does.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
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
    fn io_alignment(&self) -> u64 {
        (**self).io_alignment()
    }
    #[cfg(feature = "std")]
    fn flush_handle(&self) -> Option<std::sync::Arc<dyn FlushHandle>> {
        (**self).flush_handle()
    }
    fn known_zeros(&self, offset: u64, len: u64) -> u64 {
        (**self).known_zeros(offset, len)
    }
    #[cfg(feature = "std")]
    fn read_handle(&self) -> Option<std::sync::Arc<dyn ReadHandle>> {
        (**self).read_handle()
    }
    fn write_behind(&self, offset: u64, len: u64) {
        (**self).write_behind(offset, len)
    }
    #[cfg(feature = "std")]
    fn backing_file(&self) -> Option<&std::fs::File> {
        (**self).backing_file()
    }
}

/// Copies up to `len` bytes from `src` at `s` to `dst` at `d` inside the kernel, when both devices
/// are files ([`BlockDevice::backing_file`]) and the ranges are theirs; returns how many bytes it
/// copied, from the start (0 when it cannot, or at its first error: the caller copies the rest
/// itself, and meets the error, if any, with what it means for a read or a write).
#[cfg(feature = "std")]
#[allow(unsafe_code)]
pub(crate) fn kernel_copy(
    src: &dyn BlockDevice,
    s: u64,
    dst: &dyn BlockDevice,
    d: u64,
    len: u64,
) -> u64 {
    use std::os::unix::io::AsRawFd;
    let (Some(from), Some(to)) = (src.backing_file(), dst.backing_file()) else {
        return 0;
    };
    let fits = |at: u64, dev: &dyn BlockDevice| at.checked_add(len).is_some_and(|e| e <= dev.len());
    if !fits(s, src) || !fits(d, dst) {
        return 0;
    }
    let mut done = 0u64;
    while done < len {
        let (Ok(mut off_in), Ok(mut off_out)) = (
            libc::off64_t::try_from(s + done),
            libc::off64_t::try_from(d + done),
        ) else {
            break;
        };
        let n = usize::try_from(len - done).unwrap_or(usize::MAX);
        // SAFETY: two descriptors the devices own, offsets passed by pointer to locals that
        // live across the call; the kernel reads and writes no other memory of ours.
        let r = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off_in,
                to.as_raw_fd(),
                &mut off_out,
                n,
                0,
            )
        };
        if r <= 0 {
            break; // 0: the source file ended early; < 0: unsupported here, or an error
        }
        done += r as u64;
    }
    done
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

/// How many bytes at the start of `bytes` are zero (memory devices' [`BlockDevice::known_zeros`]).
pub(crate) fn zero_prefix(bytes: &[u8]) -> usize {
    let mut n = 0;
    for c in bytes.chunks_exact(64) {
        if c.iter().fold(0, |a, &b| a | b) != 0 {
            break;
        }
        n += 64;
    }
    n + bytes[n..]
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len() - n)
}

/// [`BlockDevice::known_zeros`] of a device whose bytes are in memory: exactly the zeros there.
fn known_zeros_in(data: &[u8], offset: u64, len: u64) -> u64 {
    let len = len.min((data.len() as u64).saturating_sub(offset));
    if len == 0 {
        return 0;
    }
    let o = offset as usize;
    zero_prefix(&data[o..o + len as usize]) as u64
}

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
    /// The bytes themselves say: a memory device knows its zeros exactly.
    fn known_zeros(&self, offset: u64, len: u64) -> u64 {
        known_zeros_in(&self.data, offset, len)
    }
}

#[cfg(feature = "std")]
pub use file::FileDevice;

#[cfg(feature = "std")]
mod file {
    use super::*;
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::path::Path;
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::Arc;

    /// A device backed by a file (an image file or a block device node), using positional I/O.
    ///
    /// The length is fixed at open time and only changes through `set_len`, so a stray write can never
    /// silently grow the file.
    ///
    /// **Direct I/O** ([`FileDevice::open_direct`] and friends) opens the file with `O_DIRECT`, for
    /// callers that cache for themselves (databases): reads and writes bypass the page cache. The
    /// kernel then wants offsets, lengths and memory aligned; the device keeps it so:
    /// - its size must be a multiple of [`DIRECT_IO_ALIGN`] (at open, create and `set_len`);
    /// - memory that is not aligned goes through an aligned bounce buffer (at most 1 MiB at a time);
    /// - a range that does not start and end on a 4096-byte boundary is read whole-block through the
    ///   bounce buffer, and written by read-modify-write of its first and last blocks. The engine
    ///   needs this for its own metadata (16-byte header updates, sector-granular area writes), whose
    ///   writes to one device never overlap in time (`write_at` takes `&mut self`);
    /// - callers' I/O through a [`crate::Volume`] is refused instead when not aligned
    ///   ([`BlockDevice::io_alignment`]): a database asking for `O_DIRECT` gets an error, not a
    ///   silent read-modify-write.
    ///
    /// A file system without `O_DIRECT` (ramfs; tmpfs before Linux 6.6) refuses the open with
    /// `EINVAL`, reported as [`Error::Unsupported`].
    #[derive(Debug)]
    pub struct FileDevice {
        /// Shared with flush handles (`fdatasync` needs no exclusive access).
        file: Arc<File>,
        len: u64,
        direct: bool,
        /// What the file's file system can be trusted with (see [`FsTraits`]).
        fs: FsTraits,
        /// The first error a [`BlockDevice::write_behind`] met, for the next flush to report
        /// (0: none). Shared with flush handles.
        behind_err: Arc<AtomicI32>,
    }

    /// What a file's file system does that the engine relies on, read once (`fstatfs`).
    #[derive(Debug, Clone, Copy)]
    struct FsTraits {
        /// `lseek(SEEK_DATA)` can be trusted for [`BlockDevice::known_zeros`] (see
        /// [`FsTraits::of`]).
        holes: bool,
        /// `copy_file_range` is a copy through the page cache, as `pread` + `pwrite` would be.
        splice_copies: bool,
    }

    const NO_DIRECT: &str =
        "the file system does not support direct I/O (O_DIRECT); open the file without it";
    const DIRECT_SIZE: &str =
        "direct I/O (O_DIRECT): the file's size must be a multiple of 4096 bytes";

    /// An `open` error, naming `O_DIRECT` when that is what the file system refused.
    fn open_error(e: std::io::Error, direct: bool) -> Error {
        if direct && e.raw_os_error() == Some(libc::EINVAL) {
            Error::Unsupported(NO_DIRECT)
        } else {
            e.into()
        }
    }

    fn direct_options(direct: bool) -> OpenOptions {
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o
    }

    fn check_direct_len(direct: bool, len: u64) -> Result<()> {
        if direct && len % DIRECT_IO_ALIGN != 0 {
            return Err(Error::InvalidArgument(DIRECT_SIZE));
        }
        Ok(())
    }

    impl FileDevice {
        /// Opens an existing file read-write; its current size is the device size.
        pub fn open(path: impl AsRef<Path>) -> Result<Self> {
            Self::open_impl(path.as_ref(), false)
        }

        /// [`FileDevice::open`] with `O_DIRECT` (see the type's documentation for the rules).
        pub fn open_direct(path: impl AsRef<Path>) -> Result<Self> {
            Self::open_impl(path.as_ref(), true)
        }

        fn open_impl(path: &Path, direct: bool) -> Result<Self> {
            let file = direct_options(direct)
                .open(path)
                .map_err(|e| open_error(e, direct))?;
            Self::wrap(file, direct)
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
                fs: FsTraits::of(&file),
                behind_err: Arc::default(),
                file: Arc::new(file),
                len,
                direct: false,
            })
        }

        /// Creates a new file of `len` bytes with all of its space reserved (like LVM allocating a
        /// snapshot's extents at `lvcreate`), so that copies into it cannot fail for want of space
        /// later. Refuses any existing path, a symlink included (`O_EXCL`); on failure (e.g. not
        /// enough space) the file is removed again and nothing is left behind.
        pub fn create_new(path: impl AsRef<Path>, len: u64) -> Result<Self> {
            Self::create_new_impl(path.as_ref(), len, false)
        }

        /// [`FileDevice::create_new`] with `O_DIRECT`; `len` must be a multiple of
        /// [`DIRECT_IO_ALIGN`]. On a file system without `O_DIRECT` nothing is left behind either
        /// (Linux creates the file before it refuses the flag: it is removed again).
        pub fn create_new_direct(path: impl AsRef<Path>, len: u64) -> Result<Self> {
            Self::create_new_impl(path.as_ref(), len, true)
        }

        fn create_new_impl(path: &Path, len: u64, direct: bool) -> Result<Self> {
            check_direct_len(direct, len)?;
            let file = direct_options(false).create_new(true).open(path)?;
            // Created without O_DIRECT, then reopened with it: the path is ours from here on, and
            // a refusal of the flag is told apart from a refusal of the creation.
            let made = reserve(&file, 0, len).and_then(|()| {
                if direct {
                    let f = direct_options(true)
                        .open(path)
                        .map_err(|e| open_error(e, true))?;
                    if f.metadata()?.ino() != file.metadata()?.ino() {
                        return Err(Error::io("the new file was replaced while it was opened"));
                    }
                    Ok(f)
                } else {
                    Ok(file)
                }
            });
            match made {
                Ok(file) => Ok(FileDevice {
                    fs: FsTraits::of(&file),
                    behind_err: Arc::default(),
                    file: Arc::new(file),
                    len,
                    direct,
                }),
                Err(e) => {
                    let _ = std::fs::remove_file(path);
                    Err(e)
                }
            }
        }

        /// Wraps an open file.
        pub fn from_file(file: File) -> Result<Self> {
            Self::wrap(file, false)
        }

        /// Wraps a file the caller opened with `O_DIRECT` (`custom_flags(libc::O_DIRECT)`): I/O
        /// follows the alignment rules of direct I/O. Its size must be a multiple of
        /// [`DIRECT_IO_ALIGN`].
        pub fn from_direct_file(file: File) -> Result<Self> {
            Self::wrap(file, true)
        }

        fn wrap(file: File, direct: bool) -> Result<Self> {
            let len = file.metadata()?.len();
            check_direct_len(direct, len)?;
            Ok(FileDevice {
                fs: FsTraits::of(&file),
                behind_err: Arc::default(),
                file: Arc::new(file),
                len,
                direct,
            })
        }

        /// True when the file was opened with `O_DIRECT`.
        pub fn is_direct(&self) -> bool {
            self.direct
        }
    }

    /// An aligned window of `len` bytes inside a fresh buffer (no unsafe code: the buffer is
    /// over-allocated and the window starts at its first aligned byte).
    struct Bounce {
        buf: Vec<u8>,
        at: usize,
        len: usize,
    }

    impl Bounce {
        fn new(len: usize) -> Self {
            let buf = vec![0u8; len + DIRECT_IO_ALIGN as usize];
            let at = buf.as_ptr().align_offset(DIRECT_IO_ALIGN as usize);
            Bounce { buf, at, len }
        }
        fn get(&mut self) -> &mut [u8] {
            &mut self.buf[self.at..self.at + self.len]
        }
    }

    fn is_aligned(offset: u64, len: usize, ptr: *const u8) -> bool {
        let a = DIRECT_IO_ALIGN;
        offset % a == 0 && len as u64 % a == 0 && (ptr as usize) % a as usize == 0
    }

    /// The aligned pieces `(aligned start, aligned len, byte in piece where the range starts, bytes
    /// of the range in the piece)` covering `[offset, offset + len)`, at most [`COPY_BUF`] each.
    fn aligned_pieces(offset: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize, usize)> {
        let a = DIRECT_IO_ALIGN;
        let end = offset + len as u64;
        let mut pos = offset;
        core::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let start = pos / a * a;
            let stop = (start + COPY_BUF).min(end.div_ceil(a) * a);
            let skip = (pos - start) as usize;
            let n = (stop.min(end) - pos) as usize;
            pos += n as u64;
            Some((start, (stop - start) as usize, skip, n))
        })
    }

    impl FileDevice {
        fn read_direct(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            if is_aligned(offset, buf.len(), buf.as_ptr()) {
                self.file.read_exact_at(buf, offset)?;
                return Ok(());
            }
            let mut done = 0;
            for (start, span, skip, n) in aligned_pieces(offset, buf.len()) {
                let mut b = Bounce::new(span);
                self.file.read_exact_at(b.get(), start)?;
                buf[done..done + n].copy_from_slice(&b.get()[skip..skip + n]);
                done += n;
            }
            Ok(())
        }

        fn write_direct(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
            if is_aligned(offset, buf.len(), buf.as_ptr()) {
                self.file.write_all_at(buf, offset)?;
                return Ok(());
            }
            let a = DIRECT_IO_ALIGN as usize;
            let mut done = 0;
            for (start, span, skip, n) in aligned_pieces(offset, buf.len()) {
                let mut b = Bounce::new(span);
                // Read-modify-write of the partial first and last blocks only.
                if skip != 0 {
                    self.file.read_exact_at(&mut b.get()[..a], start)?;
                }
                if (skip + n) % a != 0 && (span > a || skip == 0) {
                    let last = span - a;
                    self.file
                        .read_exact_at(&mut b.get()[last..], start + last as u64)?;
                }
                b.get()[skip..skip + n].copy_from_slice(&buf[done..done + n]);
                self.file.write_all_at(b.get(), start)?;
                done += n;
            }
            Ok(())
        }
    }

    impl BlockDevice for FileDevice {
        fn len(&self) -> u64 {
            self.len
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            check_range(offset, buf.len(), self.len)?;
            if self.direct {
                return self.read_direct(offset, buf);
            }
            self.file.read_exact_at(buf, offset)?;
            Ok(())
        }
        fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
            check_range(offset, buf.len(), self.len)?;
            if self.direct {
                return self.write_direct(offset, buf);
            }
            self.file.write_all_at(buf, offset)?;
            Ok(())
        }
        fn flush(&mut self) -> Result<()> {
            // Also with O_DIRECT: it bypasses the page cache, not the disk's write cache, and
            // allocating writes need their metadata committed.
            sync(&self.file, &self.behind_err)
        }
        /// Growing reserves the added space (so an autoextended COW cannot run out of host space
        /// later); if the space is not there the file keeps its size and the error is returned.
        fn set_len(&mut self, new_len: u64) -> Result<()> {
            check_direct_len(self.direct, new_len)?;
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
            let m = self.file.metadata().ok()?;
            Some(DeviceId {
                dev: m.dev(),
                ino: m.ino(),
            })
        }
        fn io_alignment(&self) -> u64 {
            if self.direct {
                DIRECT_IO_ALIGN
            } else {
                1
            }
        }
        fn flush_handle(&self) -> Option<Arc<dyn FlushHandle>> {
            Some(Arc::new(SyncFile {
                file: self.file.clone(),
                behind_err: self.behind_err.clone(),
            }))
        }
        fn read_handle(&self) -> Option<Arc<dyn ReadHandle>> {
            Some(Arc::new(FileReader(FileDevice {
                file: self.file.clone(),
                len: self.len,
                direct: self.direct,
                fs: self.fs,
                behind_err: self.behind_err.clone(),
            })))
        }
        /// Only where `copy_file_range` copies through the page cache (ext2/3/4, tmpfs): on
        /// XFS, btrfs, NFS, ZFS or a FUSE server it may share blocks instead, which gives back
        /// the COW's reserved space (a later origin write can then fail for want of space) and
        /// makes correctness depend on each file system's cloning.
        fn backing_file(&self) -> Option<&File> {
            (!self.direct && self.fs.splice_copies).then_some(&self.file)
        }
        /// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: starts writing the range's dirty pages back
        /// and returns without waiting. Durability still comes from `fdatasync` alone (this
        /// writes no file-system metadata); an error it meets is kept and returned by this
        /// device's next flush (besides what `fdatasync` reports itself).
        #[allow(unsafe_code)]
        fn write_behind(&self, offset: u64, len: u64) {
            use std::os::unix::io::AsRawFd;
            let end = offset.saturating_add(len).min(self.len);
            if self.direct || offset >= end {
                return; // O_DIRECT writes leave no dirty pages behind
            }
            let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(end - offset)) else {
                return;
            };
            // SAFETY: a plain system call on a descriptor this device owns; no memory is passed.
            let r = unsafe {
                libc::sync_file_range(self.file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE)
            };
            if r != 0 {
                // Not every file system keeps an error met while starting write-back for the
                // next `fdatasync`: this device does (not supported at all is no error).
                let e = std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO);
                if e != libc::EINVAL && e != libc::ENOSYS && e != libc::ESPIPE {
                    let _ =
                        self.behind_err
                            .compare_exchange(0, e, Ordering::SeqCst, Ordering::SeqCst);
                }
            }
        }
        /// Holes by `lseek(SEEK_DATA)`, which counts a range as a hole only when it reads as
        /// zeros now: never written, or reserved by `fallocate` and never written (dirty pages
        /// in the page cache count as data). Its answer is the file's content as `fdatasync`
        /// makes it durable, so a later flush keeps those zeros. File systems without the call
        /// answer "data" (0 here), as do block devices.
        fn known_zeros(&self, offset: u64, len: u64) -> u64 {
            let end = offset.saturating_add(len).min(self.len);
            if !self.fs.holes || offset >= end {
                return 0;
            }
            match seek_data(&self.file, offset) {
                Ok(Some(data)) => data.clamp(offset, end) - offset,
                // No data from `offset` to the end of the file: zeros up to its size (a file
                // shrunk behind our back fails reads past its end; those are not zeros).
                Ok(None) => match self.file.metadata() {
                    Ok(m) if m.len() > offset => m.len().min(end) - offset,
                    _ => 0,
                },
                Err(_) => 0,
            }
        }
    }

    impl FsTraits {
        /// Read from `fstatfs`; an unknown file system (or a failed call) gets neither.
        ///
        /// Holes: a file system whose `lseek(SEEK_DATA)` answers from the file's content as a
        /// read sees it, dirty page-cache data included: ext4, XFS, btrfs, tmpfs and f2fs (read
        /// in their code). Elsewhere a hole may be reported over data not yet written back (FUSE
        /// with a write-back cache asks its server without writing back first; some OpenZFS
        /// releases did so too), and a copy skipped on such an answer would lose data: there
        /// [`BlockDevice::known_zeros`] says nothing.
        ///
        /// Copies: a file system whose `copy_file_range` is the kernel's page-cache splice (a
        /// read and a write, done in the kernel): ext2/3/4 and tmpfs. XFS, btrfs, NFS 4.2,
        /// OpenZFS 2.2+ and FUSE servers may share blocks or implement the copy themselves.
        #[allow(unsafe_code)]
        fn of(file: &File) -> Self {
            use std::os::unix::io::AsRawFd;
            const EXT: u32 = 0xEF53; // ext2/3/4
            const XFS: u32 = 0x5846_5342;
            const BTRFS: u32 = 0x9123_683E;
            const TMPFS: u32 = 0x0102_1994;
            const F2FS: u32 = 0xF2F5_2010;
            // SAFETY: `statfs` is plain data (all-zero is a valid value), which `fstatfs` fills
            // from a descriptor this function borrows.
            let (r, st) = unsafe {
                let mut st: libc::statfs = core::mem::zeroed();
                (libc::fstatfs(file.as_raw_fd(), &mut st), st)
            };
            if r != 0 {
                return FsTraits {
                    holes: false,
                    splice_copies: false,
                };
            }
            // `f_type` is a signed word of the platform's size: compare its low 32 bits.
            let t = st.f_type as u64 as u32;
            FsTraits {
                holes: [EXT, XFS, BTRFS, TMPFS, F2FS].contains(&t),
                splice_copies: [EXT, TMPFS].contains(&t),
            }
        }
    }

    /// An empty directory of this process for a test's files.
    #[cfg(test)]
    fn scratch_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(std::format!("cowsnap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[cfg(test)]
    #[test]
    fn a_write_behind_error_is_reported_by_the_next_flush_once() {
        let dir = scratch_dir("behind");
        let mut dev = FileDevice::create_new(dir.join("f"), 1 << 16).unwrap();
        let handle = dev.flush_handle().unwrap();
        dev.behind_err.store(libc::EIO, Ordering::SeqCst);
        assert!(handle.flush().is_err(), "through the flush handle");
        dev.flush().unwrap();
        dev.behind_err.store(libc::ENOSPC, Ordering::SeqCst);
        assert!(dev.flush().is_err(), "through the device");
        handle.flush().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Between two files of a file system whose `copy_file_range` is a page-cache copy the
    /// kernel copies, byte for byte; a memory device, a range past a device's end or a file
    /// system not on the list leaves the copy to the caller (0).
    #[cfg(test)]
    #[test]
    fn kernel_copies_only_between_files_that_splice() {
        let dir = scratch_dir("kcopy");
        let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
        std::fs::write(dir.join("a"), &data).unwrap();
        let a = FileDevice::open(dir.join("a")).unwrap();
        let b = FileDevice::create_new(dir.join("b"), 1 << 20).unwrap();
        let splices = a.fs.splice_copies && b.fs.splice_copies;
        let n = kernel_copy(&a, 4096, &b, 8192, 300_000);
        if splices {
            assert_eq!(n, 300_000);
            let mut back = vec![0u8; 300_000];
            b.read_at(8192, &mut back).unwrap();
            assert!(back == data[4096..304_096], "copied bytes differ");
        } else {
            assert_eq!(n, 0, "a file system not on the list must not be asked");
        }
        assert_eq!(
            kernel_copy(&a, (1 << 20) - 10, &b, 0, 11),
            0,
            "past the source's end"
        );
        assert_eq!(
            kernel_copy(&a, 0, &b, (1 << 20) - 10, 11),
            0,
            "past the target's end"
        );
        let mem = MemDevice::new(1 << 20);
        assert_eq!(kernel_copy(&a, 0, &mem, 0, 4096), 0);
        assert_eq!(kernel_copy(&mem, 0, &b, 0, 4096), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(test)]
    #[test]
    fn holes_are_trusted_on_the_listed_file_systems_only() {
        // procfs is not on the list: a device there would never claim zeros.
        let proc_file = File::open("/proc/self/status").unwrap();
        assert!(!FsTraits::of(&proc_file).holes);
        assert!(!FsTraits::of(&proc_file).splice_copies);
        // tmpfs is (where /dev/shm is one).
        if let Ok(f) = File::create("/dev/shm/cowsnap-holes-trusted-test") {
            let on_tmpfs = std::process::Command::new("stat")
                .args(["-f", "-c", "%T", "/dev/shm"])
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"tmpfs"));
            assert_eq!(FsTraits::of(&f).holes, on_tmpfs);
            assert_eq!(FsTraits::of(&f).splice_copies, on_tmpfs);
            let _ = std::fs::remove_file("/dev/shm/cowsnap-holes-trusted-test");
        }
    }

    /// `lseek(fd, offset, SEEK_DATA)`: where the next data at or after `offset` starts, `None`
    /// when there is none before the end of the file (`ENXIO`).
    #[allow(unsafe_code)]
    fn seek_data(file: &File, offset: u64) -> std::io::Result<Option<u64>> {
        use std::os::unix::io::AsRawFd;
        let off = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a plain system call on a descriptor this function borrows; no memory. The
        // descriptor's file position changes, which no one uses (all I/O is positioned).
        let r = unsafe { libc::lseek(file.as_raw_fd(), off, libc::SEEK_DATA) };
        if r >= 0 {
            return Ok(Some(r as u64));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        }
    }

    /// Reads of a device's file from any thread: a second `FileDevice` on the same open file,
    /// of which only reads are ever used.
    struct FileReader(FileDevice);

    impl ReadHandle for FileReader {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            self.0.read_at(offset, buf)
        }
    }

    /// `fdatasync` of a device's file from any thread.
    struct SyncFile {
        file: Arc<File>,
        behind_err: Arc<AtomicI32>,
    }

    impl FlushHandle for SyncFile {
        fn flush(&self) -> Result<()> {
            sync(&self.file, &self.behind_err)
        }
    }

    /// `fdatasync`, then the error a write-behind met since the last flush, if any: the pages
    /// it could not start writing may have been written since, or not; the caller retries.
    fn sync(file: &File, behind_err: &AtomicI32) -> Result<()> {
        file.sync_data()?;
        match behind_err.swap(0, Ordering::SeqCst) {
            0 => Ok(()),
            e => Err(std::io::Error::from_raw_os_error(e).into()),
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
