//! `cowsnap_volume`: the opaque handle (an origin and its snapshots behind a read-write lock), its
//! constructors and the origin I/O functions; plus the argument checks every entry point shares.

use std::ffi::{c_char, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use cowsnap_core::{limits, ErrorCode, MemDevice, Volume};
use cowsnap_managed::handle::Handle;
use cowsnap_managed::paths;
use cowsnap_managed::volume::Lease;

use crate::{cowsnap_result, Failure, FfiResult};

/// A volume: an origin device (memory or file) and its snapshots. Opaque; create it with
/// `cowsnap_volume_create_mem`, `cowsnap_volume_create_file` or `cowsnap_volume_open_file` and
/// release it with `cowsnap_volume_free`.
///
/// Thread-safety: every function taking a `cowsnap_volume *` (except `cowsnap_volume_free`) may be
/// called from several threads at once. Reads of the origin and of snapshots run in parallel;
/// origin writes hold the volume's lock only to copy chunks and hold their data, never across a
/// device flush; flushes from several threads share group commits (see `SharedVolume` in the
/// core); snapshot creation/deletion/writes and merge steps run between commits, one at a time.
pub struct cowsnap_volume(Handle);

impl cowsnap_volume {
    fn boxed(vol: Volume) -> *mut cowsnap_volume {
        Self::boxed_with(vol, None)
    }

    pub(crate) fn boxed_with(vol: Volume, lease: Option<Lease>) -> *mut cowsnap_volume {
        Box::into_raw(Box::new(cowsnap_volume(Handle::new(vol, lease))))
    }
}

impl std::ops::Deref for cowsnap_volume {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.0
    }
}

/// The volume behind a handle.
///
/// # Safety
/// `p` is NULL or a live handle from a cowsnap constructor.
pub(crate) unsafe fn volume<'a>(p: *const cowsnap_volume) -> FfiResult<&'a cowsnap_volume> {
    // SAFETY: the caller's contract (documented on every function) is a live handle or NULL.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::null("vol"))
}

/// An out-parameter.
///
/// # Safety
/// `p` is NULL or valid for writes of a `T`.
pub(crate) unsafe fn out<'a, T>(p: *mut T, what: &str) -> FfiResult<&'a mut T> {
    // SAFETY: see above.
    unsafe { p.as_mut() }.ok_or_else(|| Failure::null(what))
}

/// Checks a caller's buffer: `buf` may be NULL only when `len` is 0; false when `len` is 0.
fn buf_ok(null: bool, len: usize) -> FfiResult<bool> {
    if len == 0 {
        Ok(false)
    } else if null {
        Err(Failure::null("buf"))
    } else if len > isize::MAX as usize {
        Err(Failure::invalid(format!(
            "buffer length {len} is too large"
        )))
    } else {
        Ok(true)
    }
}

/// A caller's input buffer; `buf` may be NULL only when `len` is 0.
///
/// # Safety
/// `buf` is NULL or valid for reads of `len` bytes for the duration of the call.
pub(crate) unsafe fn in_buf<'a>(buf: *const u8, len: usize) -> FfiResult<&'a [u8]> {
    Ok(match buf_ok(buf.is_null(), len)? {
        // SAFETY: non-null, length checked, and the caller guarantees `len` readable bytes.
        true => unsafe { std::slice::from_raw_parts(buf, len) },
        false => &[],
    })
}

/// A caller's output buffer; `buf` may be NULL only when `len` is 0.
///
/// # Safety
/// `buf` is NULL or valid for writes of `len` bytes for the duration of the call.
pub(crate) unsafe fn out_buf<'a>(buf: *mut u8, len: usize) -> FfiResult<&'a mut [u8]> {
    Ok(match buf_ok(buf.is_null(), len)? {
        // SAFETY: non-null, length checked, and the caller guarantees `len` writable bytes.
        true => unsafe { std::slice::from_raw_parts_mut(buf, len) },
        false => &mut [],
    })
}

/// A NUL-terminated path (bytes, any encoding, as the OS takes them).
///
/// # Safety
/// `p` is NULL or a NUL-terminated string.
pub(crate) unsafe fn path_arg(p: *const c_char, what: &str) -> FfiResult<PathBuf> {
    if p.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-null and NUL-terminated by contract.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    if bytes.is_empty() {
        return Err(Failure::invalid(format!("{what} is an empty string")));
    }
    Ok(PathBuf::from(OsStr::from_bytes(bytes)))
}

/// A zero-filled memory device ([`MemDevice::try_new`]), with the size in the message when the
/// memory cannot be had (`COWSNAP_ERR_NO_SPACE`).
pub(crate) fn mem_device(len: u64) -> FfiResult<MemDevice> {
    MemDevice::try_new(len)
        .map_err(|e| Failure::new(e.code(), format!("cannot allocate {len} bytes of memory")))
}

/// Creates a volume whose origin is `size` bytes of zero-filled memory.
///
/// On success `*out_vol` receives a new handle, owned by the caller, to be released with
/// `cowsnap_volume_free`; on failure `*out_vol` is set to NULL.
/// Errors: `NULL_POINTER` (out_vol), `INVALID_ARGUMENT` (size 0), `NO_SPACE` (out of memory).
/// Thread-safety: safe from any thread.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_volume_create_mem(
    size: u64,
    out_vol: *mut *mut cowsnap_volume,
) -> cowsnap_result {
    ffi_guard!("cowsnap_volume_create_mem", {
        let out_vol = out!(out_vol);
        *out_vol = std::ptr::null_mut();
        limits::check_origin_len(size)?;
        *out_vol = cowsnap_volume::boxed(Volume::new(mem_device(size)?));
        Ok(())
    })
}

/// Creates the file `path` as a sparse file of `size` bytes and makes it the origin of a new volume.
///
/// `path` must not exist, or must be an empty regular file (not a symlink; e.g. from `mkstemp`):
/// anything else there (a non-empty file, a directory, a device node, a symlink) is refused with
/// `INVALID_ARGUMENT` and left untouched; open an existing origin with `cowsnap_volume_open_file`.
/// On failure a file this call created is removed (an empty file given is left empty).
/// `path` is borrowed for the call (NUL-terminated, passed to the OS as is). On success `*out_vol`
/// receives a new handle owned by the caller (release with `cowsnap_volume_free`); on failure it is set
/// to NULL. Errors: `NULL_POINTER`, `INVALID_ARGUMENT` (size 0 or beyond 2^63 - 1, empty path, path
/// taken), `IO` (missing directory, read-only file or file system, disk full).
/// Thread-safety: safe from any thread.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_volume_create_file(
    path: *const c_char,
    size: u64,
    out_vol: *mut *mut cowsnap_volume,
) -> cowsnap_result {
    ffi_guard!("cowsnap_volume_create_file", {
        // SAFETY: the contract above.
        unsafe { create_file(path, size, 0, out_vol) }
    })
}

/// `cowsnap_volume_create_file` with `flags`: 0, or `COWSNAP_OPEN_DIRECT` to use the origin (and
/// every COW file `cowsnap_snapshot_create` creates for this volume) with `O_DIRECT`, bypassing the
/// page cache (for applications that cache for themselves). Direct I/O rules: `size` (and every
/// `cow_size`) must be a multiple of 4096 bytes (`INVALID_ARGUMENT`, nothing created); every read
/// and write of the volume or its snapshots must have an offset and a length that are multiples of
/// 4096 (`INVALID_ARGUMENT`, nothing read or written; buffers need no alignment); a file system
/// without direct I/O (ramfs, tmpfs before Linux 6.6) is `UNSUPPORTED` and the file is removed
/// again. Unknown flag bits are `INVALID_ARGUMENT`. Everything else as `cowsnap_volume_create_file`.
/// Thread-safety: safe from any thread.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_volume_create_file_ex(
    path: *const c_char,
    size: u64,
    flags: u32,
    out_vol: *mut *mut cowsnap_volume,
) -> cowsnap_result {
    ffi_guard!("cowsnap_volume_create_file_ex", {
        // SAFETY: the contract above.
        unsafe { create_file(path, size, flags, out_vol) }
    })
}

/// Both `create_file` exports.
///
/// # Safety
/// The contract of `cowsnap_volume_create_file`.
unsafe fn create_file(
    path: *const c_char,
    size: u64,
    flags: u32,
    out_vol: *mut *mut cowsnap_volume,
) -> FfiResult<()> {
    let out_vol = out!(out_vol);
    *out_vol = std::ptr::null_mut();
    // SAFETY: NUL-terminated string by contract.
    let path = unsafe { path_arg(path, "path") }?;
    let vol = paths::create_origin(&path, size, direct_flag(flags)?)?;
    *out_vol = cowsnap_volume::boxed(vol);
    Ok(())
}

/// Opens an existing origin file and activates the persistent COW files `cow_paths[0..n_cows]` on it,
/// as LVM activates a volume group after a restart or a crash. Nothing is created, truncated or
/// formatted: a COW whose header is zeroed (never formatted, or wiped) is `CORRUPT_METADATA`, since
/// only `cowsnap_snapshot_create` formats a COW.
///
/// Every path must name an existing, writable regular file (symlinks are followed): a directory or a
/// device node is `INVALID_ARGUMENT`, a missing or read-only file `IO`. One file named twice (the
/// origin as a COW, a COW twice, through the same path, a symlink or a hard link) is
/// `INVALID_ARGUMENT`, naming both arguments; nothing is written then.
/// Snapshot ids are assigned in the order of `cow_paths` (0, 1, ...; see `cowsnap_volume_snapshot_ids`).
/// Each COW's chunk size comes from its header; a COW whose header says invalid gives an invalid
/// snapshot; corrupt metadata fails the whole call with `CORRUPT_METADATA` (message names the file).
/// Activated snapshots use overflow mode INVALIDATE and no autoextend (set it with
/// `cowsnap_snapshot_set_autoextend`).
/// All strings are borrowed for the call; `cow_paths` may be NULL when `n_cows` is 0. On success
/// `*out_vol` receives a new handle owned by the caller; on failure it is set to NULL and nothing
/// stays open. Thread-safety: safe from any thread (do not activate the same files twice at once).
#[no_mangle]
pub unsafe extern "C" fn cowsnap_volume_open_file(
    origin_path: *const c_char,
    cow_paths: *const *const c_char,
    n_cows: usize,
    out_vol: *mut *mut cowsnap_volume,
) -> cowsnap_result {
    ffi_guard!("cowsnap_volume_open_file", {
        // SAFETY: the contract above.
        unsafe { open_file(origin_path, cow_paths, n_cows, 0, out_vol) }
    })
}

/// `cowsnap_volume_open_file` with `flags`: 0, or `COWSNAP_OPEN_DIRECT` to open the origin and every
/// COW file (and the COW files `cowsnap_snapshot_create` creates later) with `O_DIRECT`. The rules
/// of `cowsnap_volume_create_file_ex` apply: every file's size must be a multiple of 4096 bytes
/// (`INVALID_ARGUMENT` naming it), a file system without direct I/O is `UNSUPPORTED` naming the file,
/// and reads and writes must be 4096-aligned in offset and length. Unknown flag bits are
/// `INVALID_ARGUMENT`. Thread-safety: as `cowsnap_volume_open_file`.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_volume_open_file_ex(
    origin_path: *const c_char,
    cow_paths: *const *const c_char,
    n_cows: usize,
    flags: u32,
    out_vol: *mut *mut cowsnap_volume,
) -> cowsnap_result {
    ffi_guard!("cowsnap_volume_open_file_ex", {
        // SAFETY: the contract above.
        unsafe { open_file(origin_path, cow_paths, n_cows, flags, out_vol) }
    })
}

/// Both `open_file` exports.
///
/// # Safety
/// The contract of `cowsnap_volume_open_file`.
unsafe fn open_file(
    origin_path: *const c_char,
    cow_paths: *const *const c_char,
    n_cows: usize,
    flags: u32,
    out_vol: *mut *mut cowsnap_volume,
) -> FfiResult<()> {
    let direct = direct_flag(flags);
    let out_vol = out!(out_vol);
    *out_vol = std::ptr::null_mut();
    // SAFETY: NUL-terminated string by contract.
    let origin_path = unsafe { path_arg(origin_path, "origin_path") }?;
    if n_cows > 0 && cow_paths.is_null() {
        return Err(Failure::null("cow_paths"));
    }
    let mut cows = Vec::with_capacity(n_cows.min(1024));
    for i in 0..n_cows {
        let name = format!("cow_paths[{i}]");
        // SAFETY: `cow_paths` holds `n_cows` NUL-terminated strings by contract.
        let path = unsafe { path_arg(*cow_paths.add(i), &name) }?;
        cows.push((name, path));
    }
    let vol = paths::open_volume(&origin_path, &cows, direct?)?;
    *out_vol = cowsnap_volume::boxed(vol);
    Ok(())
}

/// `flags` bit of `cowsnap_volume_create_file_ex` and `cowsnap_volume_open_file_ex`: open every
/// file of the volume (origin and COW files) with `O_DIRECT`.
pub const COWSNAP_OPEN_DIRECT: u32 = 1;

/// The flags this library knows; any other bit is refused (a newer caller's flag is not ignored).
fn direct_flag(flags: u32) -> FfiResult<bool> {
    if flags & !COWSNAP_OPEN_DIRECT != 0 {
        return Err(Failure::invalid(format!(
            "unknown flags {:#x} (known: COWSNAP_OPEN_DIRECT = {COWSNAP_OPEN_DIRECT})",
            flags & !COWSNAP_OPEN_DIRECT
        )));
    }
    Ok(flags & COWSNAP_OPEN_DIRECT != 0)
}

/// Releases a volume and everything it owns (its snapshots' COW memory; files are closed, not
/// deleted). Flushes file-backed devices first, ignoring errors: call `cowsnap_volume_flush` before
/// if you need to know that the data is durable. NULL is accepted and ignored.
///
/// Ownership: takes `vol` back; it must not be used afterwards (by any thread). Thread-safety: no other
/// call on `vol` may be in progress or start during or after this call.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_volume_free(vol: *mut cowsnap_volume) {
    ffi_guard_value!("cowsnap_volume_free", (), {
        if !vol.is_null() {
            // SAFETY: a handle from a cowsnap constructor, freed once (caller's contract).
            unsafe { Box::from_raw(vol) }.0.close();
        }
    })
}

/// Stores the origin size in bytes (the size of every snapshot too) in `*out_size`.
///
/// Errors: `NULL_POINTER`. Thread-safety: safe to call concurrently with anything but free.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_volume_size(
    vol: *mut cowsnap_volume,
    out_size: *mut u64,
) -> cowsnap_result {
    ffi_guard!("cowsnap_volume_size", {
        let v = vol!(vol);
        *out!(out_size) = v.size();
        Ok(())
    })
}

/// Copies the origin's 10-character `lvs` attribute string and a NUL into `buf` (at least 11 bytes):
/// `-wi-a-----` without snapshots, `owi-a-s---` with some, `Owi-a-s---` while one is merging.
///
/// Errors: `NULL_POINTER`, `BUFFER_TOO_SMALL` (len < 11; nothing copied). `buf` is borrowed for the
/// call. Thread-safety: safe to call concurrently (takes the read lock).
#[no_mangle]
pub unsafe extern "C" fn cowsnap_volume_lvs_attr(
    vol: *mut cowsnap_volume,
    buf: *mut c_char,
    len: usize,
) -> cowsnap_result {
    ffi_guard!("cowsnap_volume_lvs_attr", {
        let v = vol!(vol);
        let attr = v.read()?.origin_lvs_attr();
        if len <= attr.len() {
            return Err(Failure::new(
                ErrorCode::BufferTooSmall,
                format!("the attribute string needs {} bytes", attr.len() + 1),
            ));
        }
        // SAFETY: `buf` has room for `len` > attr.len() bytes by contract.
        let out = unsafe { out_buf(buf.cast::<u8>(), attr.len() + 1) }?;
        out[..attr.len()].copy_from_slice(attr.as_bytes());
        out[attr.len()] = 0;
        Ok(())
    })
}

/// Lists the ids of the volume's snapshots, oldest first: stores their number in `*out_count` and, when
/// `ids` is not NULL, copies them to `ids[0..capacity]`.
///
/// Call with `ids = NULL, capacity = 0` to learn the count. If `capacity` is smaller than the count,
/// returns `BUFFER_TOO_SMALL` (with `*out_count` set; nothing copied). `ids` is borrowed for the call.
/// Errors: `NULL_POINTER` (vol, out_count, or ids with capacity > 0), `BUFFER_TOO_SMALL`.
/// Thread-safety: safe to call concurrently (the list may change right after if other threads create
/// or delete snapshots).
#[no_mangle]
pub unsafe extern "C" fn cowsnap_volume_snapshot_ids(
    vol: *mut cowsnap_volume,
    ids: *mut u32,
    capacity: usize,
    out_count: *mut usize,
) -> cowsnap_result {
    ffi_guard!("cowsnap_volume_snapshot_ids", {
        let v = vol!(vol);
        let list: Vec<u32> = v.read()?.snapshot_ids().iter().map(|id| id.0).collect();
        // SAFETY: argument contracts above.
        unsafe { crate::copy_out(&list, ids, capacity, out_count, "ids") }
    })
}

/// Reads `len` bytes of the origin at byte `offset` into `buf`. During a merge this is the merged view.
///
/// `buf` is borrowed for the call (may be NULL only when `len` is 0; a zero-length read only checks
/// `offset`). Errors: `NULL_POINTER`, `OUT_OF_RANGE` (nothing read), `IO`.
/// Thread-safety: runs in parallel with other reads; waits for writes in progress.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_volume_read(
    vol: *mut cowsnap_volume,
    offset: u64,
    buf: *mut u8,
    len: usize,
) -> cowsnap_result {
    ffi_guard!("cowsnap_volume_read", {
        let v = vol!(vol);
        v.check_range(offset, len)?;
        // SAFETY: `buf` holds `len` writable bytes by contract.
        let buf = unsafe { out_buf(buf, len) }?;
        v.read()?.read_at(offset, buf)?;
        Ok(())
    })
}

/// Writes `len` bytes from `buf` to the origin at byte `offset`. Every snapshot that still shares a
/// touched chunk first gets a copy of it (a snapshot whose COW is full is invalidated; the write goes on).
///
/// `buf` is borrowed for the call (NULL only when `len` is 0). Errors: `NULL_POINTER`, `OUT_OF_RANGE`
/// (nothing written), `IO`. Thread-safety: safe from several threads; the lock is held only to copy
/// chunks into snapshots and hold the data in memory, so writes to other chunks and reads go on.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_volume_write(
    vol: *mut cowsnap_volume,
    offset: u64,
    buf: *const u8,
    len: usize,
) -> cowsnap_result {
    ffi_guard!("cowsnap_volume_write", {
        let v = vol!(vol);
        v.check_range(offset, len)?;
        // SAFETY: `buf` holds `len` readable bytes by contract.
        let data = unsafe { in_buf(buf, len) }?;
        v.shared().write_at(offset, data)?;
        Ok(())
    })
}

/// Makes everything written so far durable (origin and every COW file: `fsync`). A no-op for memory.
///
/// Origin writes that needed copies into snapshots return before those copies' records are durable
/// (group commit): they wait in memory, reads see them, and they reach the origin device once
/// their records are committed — on this call, when 8 MiB wait, or after at most 200 ms from a
/// background thread. So a write costs no `fsync` unless you ask for one here; an error of a
/// background commit is reported by the next flush.
///
/// Errors: `NULL_POINTER`, `IO`. Thread-safety: safe from any thread; no lock is held while the
/// devices flush, and threads that flush at the same time share one commit (group commit).
#[no_mangle]
pub unsafe extern "C" fn cowsnap_volume_flush(vol: *mut cowsnap_volume) -> cowsnap_result {
    ffi_guard!("cowsnap_volume_flush", {
        let v = vol!(vol);
        v.shared().flush()?;
        Ok(())
    })
}
