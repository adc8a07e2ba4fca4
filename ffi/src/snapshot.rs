//! Snapshots: creation options, I/O, status, deletion, merge, COW export and resizing.

use std::ffi::{c_char, c_void};

use cowsnap_core::{
    limits, Autoextend, ChunkSize, Error, ErrorCode, MergeEvent, MergeProgress, MergeStepper,
    OverflowMode, SnapshotId, SnapshotOptions, SnapshotState, SnapshotStatus, StoreKind,
};

use crate::sized::{offset_of, SizedStruct, MAX_STRUCT_SIZE};
use crate::volume::{cowsnap_volume, in_buf, mem_device, out_buf, path_arg};
use crate::{cowsnap_result, Failure, FfiResult};

/// Exception store of a snapshot (`cowsnap_snapshot_options.store`).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum cowsnap_store_kind {
    /// dm's `P`: the kernel's on-disk COW format; survives `cowsnap_volume_open_file`.
    COWSNAP_STORE_PERSISTENT = 0,
    /// dm's `N`: exceptions kept in memory only.
    COWSNAP_STORE_TRANSIENT = 1,
}

/// What a snapshot write does when the COW is full (`cowsnap_snapshot_options.overflow`). An origin
/// write that finds the COW full always invalidates the snapshot.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum cowsnap_overflow_mode {
    /// dm's `P` (what LVM uses): the snapshot is invalidated.
    COWSNAP_OVERFLOW_INVALIDATE = 0,
    /// dm's `PO`: the snapshot enters state OVERFLOW; its writes fail, reads still work.
    COWSNAP_OVERFLOW_REPORT = 1,
}

/// Life cycle of a snapshot (`cowsnap_snapshot_status.state`).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum cowsnap_snapshot_state {
    /// Usable: reads and writes work.
    COWSNAP_STATE_ACTIVE = 0,
    /// Overflow mode REPORT and the COW filled up on a snapshot write: writes fail, reads work.
    COWSNAP_STATE_OVERFLOW = 1,
    /// Invalidated (COW overflow on an origin write, or I/O error): all I/O fails; delete it.
    COWSNAP_STATE_INVALID = 2,
    /// Being merged into the origin.
    COWSNAP_STATE_MERGING = 3,
}

/// How to create a snapshot: the first layout, frozen (it cannot gain fields without breaking
/// compiled programs). Deprecated: use `struct cowsnap_snapshot_create_options` and
/// `cowsnap_snapshot_create_with`, which can. Still fully supported.
///
/// Initialise with `cowsnap_snapshot_options_init` (or zero it: all-zero means 4 KiB chunks,
/// persistent store, INVALIDATE, no autoextend, memory COW; `cow_size` must be set). Each field means
/// what the field of the same name in `struct cowsnap_snapshot_create_options` means.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cowsnap_snapshot_options {
    pub chunk_size: u32,
    pub store: i32,
    pub overflow: i32,
    pub cow_size: u64,
    pub cow_path: *const c_char,
    pub autoextend_threshold: u32,
    pub autoextend_percent: u32,
}

/// A snapshot's status: the numbers `dmsetup status` and `lvs` print. The first layout, frozen.
/// Deprecated: use `struct cowsnap_snapshot_info` and `cowsnap_snapshot_get_info`, which can gain
/// fields (this struct has no short name: in C, `cowsnap_snapshot_status` names the function).
/// Still fully supported. Each field means what the field of the same name in
/// `struct cowsnap_snapshot_info` means.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cowsnap_snapshot_status {
    pub state: i32,
    pub store: i32,
    pub overflow: i32,
    pub chunk_size: u64,
    pub sectors_allocated: u64,
    pub total_sectors: u64,
    pub metadata_sectors: u64,
    pub exceptions: u64,
    pub merging: bool,
    pub merge_merged: u64,
    pub merge_total: u64,
    pub data_percent: f64,
    pub dm_status: [c_char; 64],
    pub lvs_attr: [c_char; 16],
}

/// Merge progress callback: called after the merge starts and after each merge step with the chunks
/// merged so far and in all; `done` is true on the last call. Return 0 to go on, non-zero to stop
/// (`cowsnap_snapshot_merge` then returns `COWSNAP_ERR_MERGING`; calling it again resumes).
/// Called on the merging thread, without any cowsnap lock held: it may call cowsnap functions (even on
/// the same volume, e.g. to read it), but not `cowsnap_volume_free` of that volume.
pub type cowsnap_merge_progress_cb = Option<
    unsafe extern "C" fn(user_data: *mut c_void, merged: u64, total: u64, done: bool) -> i32,
>;

/// The core's options for the C ones, checked by the core's rules (`SnapshotOptions::validate`).
fn options(o: &cowsnap_snapshot_options) -> FfiResult<SnapshotOptions> {
    let chunk_size = match o.chunk_size {
        0 => ChunkSize::DEFAULT,
        n => ChunkSize::new(n.into())?,
    };
    let store = match o.store {
        0 => StoreKind::Persistent,
        1 => StoreKind::Transient,
        n => return Err(Failure::invalid(format!("unknown store kind {n}"))),
    };
    let overflow = match o.overflow {
        0 => OverflowMode::Invalidate,
        1 => OverflowMode::Report,
        n => return Err(Failure::invalid(format!("unknown overflow mode {n}"))),
    };
    let autoextend = Autoextend::from_percents(o.autoextend_threshold, o.autoextend_percent)?;
    let opts = SnapshotOptions {
        chunk_size,
        store,
        overflow,
        autoextend,
    };
    Ok(opts.validate()?)
}

/// Fills `*opts` with the defaults: 4 KiB chunks, persistent store, overflow INVALIDATE, no
/// autoextend, memory COW, `cow_size` 0 (to be set by the caller).
///
/// Errors: `NULL_POINTER`. Thread-safety: safe from any thread.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_snapshot_options_init(
    opts: *mut cowsnap_snapshot_options,
) -> cowsnap_result {
    ffi_guard!("cowsnap_snapshot_options_init", {
        let opts = out!(opts);
        *opts = cowsnap_snapshot_options {
            chunk_size: 4096,
            store: cowsnap_store_kind::COWSNAP_STORE_PERSISTENT as i32,
            overflow: cowsnap_overflow_mode::COWSNAP_OVERFLOW_INVALIDATE as i32,
            cow_size: 0,
            cow_path: std::ptr::null(),
            autoextend_threshold: 0,
            autoextend_percent: 0,
        };
        Ok(())
    })
}

/// Takes a snapshot of the origin (like `lvcreate -s`): formats its COW and copies no data, whatever
/// the volume size. Stores the new snapshot's id in `*out_id`; ids are never reused by a volume.
///
/// `opts` (and its `cow_path`) are borrowed for the call. A `cow_path` that names an existing,
/// non-empty file, a directory, a device node or a symlink is refused (`INVALID_ARGUMENT`) rather
/// than overwritten: it may be another snapshot's COW or the origin itself. When the file system
/// cannot reserve `cow_size` bytes the call fails with `IO` ("No space left on device") and leaves no
/// file behind; any failure after the file was created removes it again (an empty file given is left
/// empty). Errors: `NULL_POINTER`, `INVALID_ARGUMENT` (cow_size 0, unknown enum value, bad autoextend
/// policy, cow_path taken), `BAD_CHUNK_SIZE`, `NO_SPACE` (COW smaller than 3 chunks for a persistent
/// store or 1 chunk for a transient one, or out of memory), `IO` (COW file), `MERGING` (a merge is in
/// progress).
/// Thread-safety: safe from any thread; takes the write lock (so an application that needs a snapshot
/// consistent with its own data just stops its writers around this call).
///
/// Deprecated (kept, with its struct, for programs already compiled): `cowsnap_snapshot_create_with`
/// does the same with options that can gain fields.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_snapshot_create(
    vol: *mut cowsnap_volume,
    opts: *const cowsnap_snapshot_options,
    out_id: *mut u32,
) -> cowsnap_result {
    ffi_guard!("cowsnap_snapshot_create", {
        // SAFETY: `opts` is NULL or points to an initialised struct.
        let o = unsafe { opts.as_ref() }.ok_or_else(|| Failure::null("opts"))?;
        // SAFETY: argument contracts above.
        unsafe { create(vol, o, out_id) }
    })
}

/// How to create a snapshot, in a struct that can gain fields: set `struct_size` to
/// `sizeof(struct cowsnap_snapshot_create_options)` as your program sees it (or call
/// `cowsnap_snapshot_create_options_init`), zero the rest for the defaults (4 KiB chunks, persistent
/// store, INVALIDATE, no autoextend, memory COW), and set `cow_size`. A program compiled against this
/// header keeps working with later libraries, whose struct may be longer (the fields it does not know
/// take their defaults); a field set by a program built against a later header is refused by an
/// older library (`INVALID_ARGUMENT`) rather than ignored.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cowsnap_snapshot_create_options {
    /// `sizeof(struct cowsnap_snapshot_create_options)` in the caller's program.
    pub struct_size: usize,
    /// Chunk size in bytes: a power of two from 4096 to 524288; 0 means 4096.
    pub chunk_size: u32,
    /// A `cowsnap_store_kind` value.
    pub store: i32,
    /// A `cowsnap_overflow_mode` value.
    pub overflow: i32,
    /// Autoextend (LVM's `snapshot_autoextend_threshold`): grow the COW when Data% would pass this
    /// (1..100; 100 disables). 0 means no autoextend policy.
    pub autoextend_threshold: u32,
    /// Autoextend (LVM's `snapshot_autoextend_percent`): grow by this percentage of the COW size (>= 1).
    pub autoextend_percent: u32,
    /// Size of the COW device in bytes (> 0). A persistent store needs at least 3 chunks (header,
    /// one metadata area, one data chunk), as `lvcreate` requires; a transient store 1 chunk.
    pub cow_size: u64,
    /// NULL: the COW lives in memory. Otherwise the path of a new file (or of an existing empty
    /// regular file), created with all `cow_size` bytes reserved on the file system (as LVM allocates
    /// a snapshot's extents at creation), so that a full disk later cannot invalidate the snapshot.
    /// Anything else at the path (a non-empty file, a directory, a device node, a symlink) is refused
    /// and left untouched. Borrowed for the call. Reopen it later with `cowsnap_volume_open_file`.
    pub cow_path: *const c_char,
}

/// Size of the first version of `cowsnap_snapshot_create_options`: the least `struct_size` accepted.
const CREATE_OPTIONS_MIN: usize = std::mem::size_of::<cowsnap_snapshot_create_options>();

/// The caller's sized options, in the first layout (fields it does not have take their defaults).
///
/// # Safety
/// `p` is NULL or points to a `cowsnap_snapshot_create_options` of `struct_size` readable bytes.
unsafe fn read_create_options(
    p: *const cowsnap_snapshot_create_options,
) -> FfiResult<cowsnap_snapshot_options> {
    type T = cowsnap_snapshot_create_options;
    // SAFETY: the pointer contract above.
    let s = unsafe { SizedStruct::new(p, CREATE_OPTIONS_MIN, "opts") }?;
    // SAFETY: the fields at their offsets in T, read only when inside the caller's struct_size.
    unsafe {
        s.check_unknown_zero(std::mem::size_of::<T>(), "opts")?;
        Ok(cowsnap_snapshot_options {
            chunk_size: s.get(offset_of!(T, chunk_size), 0),
            store: s.get(offset_of!(T, store), 0),
            overflow: s.get(offset_of!(T, overflow), 0),
            cow_size: s.get(offset_of!(T, cow_size), 0),
            cow_path: s.get(offset_of!(T, cow_path), std::ptr::null()),
            autoextend_threshold: s.get(offset_of!(T, autoextend_threshold), 0),
            autoextend_percent: s.get(offset_of!(T, autoextend_percent), 0),
        })
    }
}

/// Fills the `struct_size` bytes of `*opts` with the defaults (4 KiB chunks, persistent store,
/// overflow INVALIDATE, no autoextend, memory COW, `cow_size` 0 to be set by the caller) and sets
/// `opts->struct_size`. Pass `sizeof *opts`: the library writes no byte past it.
///
/// Errors: `NULL_POINTER`, `INVALID_ARGUMENT` (`struct_size` smaller than the first version of the
/// struct, or beyond 4096). Thread-safety: safe from any thread.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_snapshot_create_options_init(
    opts: *mut cowsnap_snapshot_create_options,
    struct_size: usize,
) -> cowsnap_result {
    ffi_guard!("cowsnap_snapshot_create_options_init", {
        type T = cowsnap_snapshot_create_options;
        if opts.is_null() {
            return Err(Failure::null("opts"));
        }
        if !(CREATE_OPTIONS_MIN..=MAX_STRUCT_SIZE).contains(&struct_size) {
            return Err(Failure::invalid(format!(
                "struct_size is {struct_size}: pass sizeof(struct cowsnap_snapshot_create_options) \
                 (this library's is {CREATE_OPTIONS_MIN})"
            )));
        }
        // SAFETY: `opts` holds `struct_size` writable bytes by contract; all-zero is the defaults
        // but for the chunk size, written as a field when the caller's struct has it.
        unsafe {
            std::ptr::write_bytes(opts as *mut u8, 0, struct_size);
            std::ptr::write_unaligned(opts as *mut usize, struct_size);
            let s = SizedStruct::new(opts as *const T, CREATE_OPTIONS_MIN, "opts")?;
            s.set(offset_of!(T, chunk_size), 4096u32);
        }
        Ok(())
    })
}

/// Takes a snapshot of the origin (like `lvcreate -s`), as `cowsnap_snapshot_create` does (same
/// behaviour, same errors), with options that can gain fields: see
/// `struct cowsnap_snapshot_create_options`. Stores the new snapshot's id in `*out_id`.
///
/// `opts` (and its `cow_path`) are borrowed for the call. Errors: those of `cowsnap_snapshot_create`,
/// and `INVALID_ARGUMENT` for a `struct_size` smaller than the first version of the struct (or beyond
/// 4096), or a field this library does not know set to non-zero.
/// Thread-safety: as `cowsnap_snapshot_create`.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_snapshot_create_with(
    vol: *mut cowsnap_volume,
    opts: *const cowsnap_snapshot_create_options,
    out_id: *mut u32,
) -> cowsnap_result {
    ffi_guard!("cowsnap_snapshot_create_with", {
        // SAFETY: argument contracts above.
        let o = unsafe { read_create_options(opts) }?;
        // SAFETY: argument contracts above.
        unsafe { create(vol, &o, out_id) }
    })
}

/// `cowsnap_snapshot_create` and `cowsnap_snapshot_create_with`, on options in the first layout.
///
/// # Safety
/// `vol` and `out_id` as `cowsnap_snapshot_create` documents; `o.cow_path` NULL or a C string.
unsafe fn create(
    vol: *mut cowsnap_volume,
    o: &cowsnap_snapshot_options,
    out_id: *mut u32,
) -> FfiResult<()> {
    let v = vol!(vol);
    let out_id = out!(out_id);
    let sopts = options(o)?;
    sopts.check_cow_len(o.cow_size)?;
    let id = if o.cow_path.is_null() {
        let cow = mem_device(o.cow_size)?;
        v.exclusive()?.create_snapshot(cow, sopts)?
    } else {
        // SAFETY: NUL-terminated string by contract.
        let path = unsafe { path_arg(o.cow_path, "cow_path") }?;
        v.create_snapshot_file(&path, o.cow_size, sopts)?
    };
    *out_id = id.0;
    Ok(())
}

/// Reads `len` bytes of snapshot `id` at byte `offset` into `buf` (the origin as it was when the
/// snapshot was taken, plus the snapshot's own writes).
///
/// `buf` is borrowed for the call (NULL only when `len` is 0). Errors: `NULL_POINTER`, `OUT_OF_RANGE`,
/// `UNKNOWN_SNAPSHOT` (never created, deleted or merged), `SNAPSHOT_INVALID`, `IO`.
/// Thread-safety: runs in parallel with other reads; waits for writes in progress.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_snapshot_read(
    vol: *mut cowsnap_volume,
    id: u32,
    offset: u64,
    buf: *mut u8,
    len: usize,
) -> cowsnap_result {
    ffi_guard!("cowsnap_snapshot_read", {
        let v = vol!(vol);
        v.check_range(offset, len)?;
        // SAFETY: `buf` holds `len` writable bytes by contract.
        let buf = unsafe { out_buf(buf, len) }?;
        v.read()?.snapshot_read_at(SnapshotId(id), offset, buf)?;
        Ok(())
    })
}

/// Writes `len` bytes from `buf` to snapshot `id` at byte `offset` (never to the origin).
///
/// `buf` is borrowed for the call (NULL only when `len` is 0). Errors: `NULL_POINTER`, `OUT_OF_RANGE`,
/// `UNKNOWN_SNAPSHOT`, `SNAPSHOT_INVALID`, `SNAPSHOT_OVERFLOW` (overflow mode REPORT, COW full),
/// `MERGING`, `IO`. Thread-safety: safe from several threads; takes the write lock.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_snapshot_write(
    vol: *mut cowsnap_volume,
    id: u32,
    offset: u64,
    buf: *const u8,
    len: usize,
) -> cowsnap_result {
    ffi_guard!("cowsnap_snapshot_write", {
        let v = vol!(vol);
        v.check_range(offset, len)?;
        // SAFETY: `buf` holds `len` readable bytes by contract.
        let data = unsafe { in_buf(buf, len) }?;
        v.exclusive()?
            .snapshot_write_at(SnapshotId(id), offset, data)?;
        Ok(())
    })
}

fn fill_text(dst: &mut [c_char], s: &str) {
    let n = s.len().min(dst.len() - 1);
    for (d, b) in dst.iter_mut().zip(s.as_bytes()[..n].iter()) {
        *d = *b as c_char;
    }
    for d in dst[n..].iter_mut() {
        *d = 0;
    }
}

fn status_to_c(st: &SnapshotStatus) -> cowsnap_snapshot_status {
    let overflow = match st.overflow_reporting {
        true => OverflowMode::Report,
        false => OverflowMode::Invalidate,
    };
    let (merged, total) = st.merge_progress.unwrap_or((0, 0));
    let mut out = cowsnap_snapshot_status {
        // The core's numbers are the C enums' (ffi/tests/generated.rs checks it).
        state: st.state as i32,
        store: st.store as i32,
        overflow: overflow as i32,
        chunk_size: st.chunk_bytes,
        sectors_allocated: st.sectors_allocated,
        total_sectors: st.total_sectors,
        metadata_sectors: st.metadata_sectors,
        exceptions: st.exceptions,
        merging: st.state == SnapshotState::Merging,
        merge_merged: merged,
        merge_total: total,
        data_percent: st.data_percent().unwrap_or(-1.0),
        dm_status: [0; 64],
        lvs_attr: [0; 16],
    };
    fill_text(&mut out.dm_status, &st.dm_status());
    fill_text(&mut out.lvs_attr, st.lvs_attr());
    out
}

/// Fills `*out_status` with snapshot `id`'s status (state, COW usage, Data%, merge progress...).
///
/// `out_status` is borrowed for the call. Errors: `NULL_POINTER`, `UNKNOWN_SNAPSHOT` (an invalid
/// snapshot still has a status: state INVALID, data_percent < 0).
/// Thread-safety: runs in parallel with reads.
///
/// Deprecated (kept, with its struct, for programs already compiled): `cowsnap_snapshot_get_info`
/// gives the same numbers in a struct that can gain fields.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_snapshot_status(
    vol: *mut cowsnap_volume,
    id: u32,
    out_status: *mut cowsnap_snapshot_status,
) -> cowsnap_result {
    ffi_guard!("cowsnap_snapshot_status", {
        let v = vol!(vol);
        let out_status = out!(out_status);
        let st = v.read()?.snapshot_status(SnapshotId(id))?;
        *out_status = status_to_c(&st);
        Ok(())
    })
}

/// A snapshot's status (the numbers `dmsetup status` and `lvs` print), in a struct that can gain
/// fields: set `struct_size` to `sizeof(struct cowsnap_snapshot_info)` before calling
/// `cowsnap_snapshot_get_info`. The library fills the fields that fit in `struct_size`, zeroes any
/// it does not know, and sets `struct_size` to the bytes it filled.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cowsnap_snapshot_info {
    /// In: `sizeof(struct cowsnap_snapshot_info)` in the caller's program. Out: the bytes filled.
    pub struct_size: usize,
    /// A `cowsnap_snapshot_state` value.
    pub state: i32,
    /// A `cowsnap_store_kind` value.
    pub store: i32,
    /// A `cowsnap_overflow_mode` value.
    pub overflow: i32,
    /// True while the snapshot is being merged (then `merge_merged`/`merge_total` are meaningful).
    pub merging: bool,
    /// Chunk size in bytes.
    pub chunk_size: u64,
    /// COW sectors (512 bytes) handed out, header and metadata included.
    pub sectors_allocated: u64,
    /// COW device size in sectors.
    pub total_sectors: u64,
    /// Header plus metadata sectors so far (0 for a transient store).
    pub metadata_sectors: u64,
    /// Number of exceptions (chunks copied into the COW).
    pub exceptions: u64,
    /// Chunks merged back so far.
    pub merge_merged: u64,
    /// Chunks to merge in all.
    pub merge_total: u64,
    /// LVM's Data% (0..100); negative when the snapshot is invalid (LVM prints no value).
    pub data_percent: f64,
    /// NUL-terminated `dmsetup status` text: "Invalid", "Overflow" or `<allocated>/<total> <metadata>`.
    pub dm_status: [c_char; 64],
    /// NUL-terminated 10-character `lvs` attribute string, e.g. "swi-a-s---".
    pub lvs_attr: [c_char; 16],
}

/// Writes the fields of `$st` to the sized struct `$s` at their offsets in `$t` (those it holds).
macro_rules! set_fields {
    ($s:ident, $t:ty, $st:ident: $($f:ident),*) => { $($s.set(offset_of!($t, $f), $st.$f);)* };
}

/// Size of the first version of `cowsnap_snapshot_info`: the least `struct_size` accepted.
const INFO_MIN: usize = std::mem::size_of::<cowsnap_snapshot_info>();

/// Fills `*out_info` with snapshot `id`'s status (state, COW usage, Data%, merge progress...), the
/// numbers `cowsnap_snapshot_status` gives; set `out_info->struct_size` first (see
/// `struct cowsnap_snapshot_info`). Nothing is written when the call fails.
///
/// `out_info` is borrowed for the call. Errors: `NULL_POINTER`, `INVALID_ARGUMENT` (`struct_size`
/// smaller than the first version of the struct, or beyond 4096), `UNKNOWN_SNAPSHOT` (an invalid
/// snapshot still has a status: state INVALID, data_percent < 0).
/// Thread-safety: runs in parallel with reads.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_snapshot_get_info(
    vol: *mut cowsnap_volume,
    id: u32,
    out_info: *mut cowsnap_snapshot_info,
) -> cowsnap_result {
    ffi_guard!("cowsnap_snapshot_get_info", {
        type T = cowsnap_snapshot_info;
        let v = vol!(vol);
        // SAFETY: `out_info` is NULL or holds `struct_size` writable bytes, by contract.
        let s = unsafe { SizedStruct::new(out_info as *const T, INFO_MIN, "out_info") }?;
        let st = status_to_c(&v.read()?.snapshot_status(SnapshotId(id))?);
        // SAFETY: each field at its offset in T, written only when inside the caller's struct_size.
        unsafe {
            set_fields!(s, T, st: state, store, overflow, merging, chunk_size, sectors_allocated,
                total_sectors, metadata_sectors, exceptions, merge_merged, merge_total, data_percent,
                dm_status, lvs_attr);
            s.finish_out(std::mem::size_of::<T>());
        }
        Ok(())
    })
}

/// Removes snapshot `id` (like `lvremove`): its COW memory is released; a COW file is closed and left
/// on disk (delete it yourself if you do not need it). The id is never reused: later calls with it
/// return `UNKNOWN_SNAPSHOT`.
///
/// Errors: `NULL_POINTER`, `UNKNOWN_SNAPSHOT`, `MERGING`. Thread-safety: safe from any thread; takes
/// the write lock (reads of this snapshot in other threads finish first or fail with UNKNOWN_SNAPSHOT).
#[no_mangle]
pub unsafe extern "C" fn cowsnap_snapshot_delete(
    vol: *mut cowsnap_volume,
    id: u32,
) -> cowsnap_result {
    ffi_guard!("cowsnap_snapshot_delete", {
        let v = vol!(vol);
        v.check_unlisted(SnapshotId(id), "cowsnap_snapshot_delete")?;
        let cow = v.exclusive()?.delete_snapshot(SnapshotId(id))?;
        drop(cow);
        Ok(())
    })
}

fn report(
    cb: cowsnap_merge_progress_cb,
    user_data: *mut c_void,
    p: MergeProgress,
) -> FfiResult<()> {
    if let Some(f) = cb {
        // SAFETY: the caller's function pointer, called with the caller's own user_data.
        let stop = unsafe { f(user_data, p.merged, p.total, p.done) };
        if stop != 0 && !p.done {
            return Err(Failure::new(
                ErrorCode::Merging,
                format!(
                    "merge stopped by the progress callback after {} of {} chunks; the snapshot \
                     stays merging (the origin already shows its contents): call \
                     cowsnap_snapshot_merge again to finish",
                    p.merged, p.total
                ),
            ));
        }
    }
    Ok(())
}

/// Merges snapshot `id` back into the origin (like `lvconvert --merge`) and removes it: from the
/// first step on, the origin reads as the snapshot; when this returns `COWSNAP_OK` the data has been
/// copied back and the id is gone. A COW file is left on disk with no records.
///
/// `progress` (may be NULL) is called after the merge starts and after each step, with `user_data`;
/// a non-zero return stops the merge with `COWSNAP_ERR_MERGING` (call again to resume; meanwhile the
/// snapshot is in state MERGING and the origin shows the merged view). Errors: `NULL_POINTER`,
/// `UNKNOWN_SNAPSHOT`, `SNAPSHOT_INVALID`, `MERGING` (another snapshot is merging, or stopped), `IO`.
/// Thread-safety: takes the write lock for each step only, so other threads keep reading and writing
/// the volume (and other snapshots) during the merge; the callback runs with no lock held.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_snapshot_merge(
    vol: *mut cowsnap_volume,
    id: u32,
    progress: cowsnap_merge_progress_cb,
    user_data: *mut c_void,
) -> cowsnap_result {
    ffi_guard!("cowsnap_snapshot_merge", {
        let v = vol!(vol);
        v.check_unlisted(SnapshotId(id), "cowsnap_snapshot_merge")?;
        // The core's merge loop, one step per write lock; the callback runs with no lock held.
        let mut merge = MergeStepper::new(SnapshotId(id));
        loop {
            let event = merge.step(&mut *v.exclusive()?)?;
            match event {
                MergeEvent::Progress(p) => report(progress, user_data, p)?,
                MergeEvent::Finished(cow) => {
                    drop(cow);
                    return Ok(());
                }
            }
        }
    })
}

/// Copies snapshot `id`'s whole COW device into `buf`: for a persistent store, the dm-snapshot on-disk
/// format the Linux kernel reads. Stores the COW size in `*out_needed`.
///
/// Call with `buf = NULL, len = 0` to learn the size (returns `COWSNAP_OK`). If `len` is smaller than
/// the size, returns `BUFFER_TOO_SMALL` with `*out_needed` set and nothing copied (the COW may grow
/// between two calls if autoextend is on: retry). `buf` is borrowed for the call.
/// Errors: `NULL_POINTER`, `UNKNOWN_SNAPSHOT`, `BUFFER_TOO_SMALL`, `IO`. Works on invalid snapshots.
/// Thread-safety: commits the volume's waiting writes under the write lock first, then copies
/// under the read lock (in parallel with reads).
#[no_mangle]
pub unsafe extern "C" fn cowsnap_snapshot_export_cow(
    vol: *mut cowsnap_volume,
    id: u32,
    buf: *mut u8,
    len: usize,
    out_needed: *mut usize,
) -> cowsnap_result {
    ffi_guard!("cowsnap_snapshot_export_cow", {
        let v = vol!(vol);
        let out_needed = out!(out_needed);
        // Exceptions waiting for a group commit go to the COW first, so the image names them.
        v.exclusive()?.commit()?;
        let g = v.read()?;
        let cow = g.snapshot_cow(SnapshotId(id))?;
        let size = usize::try_from(cow.len())
            .map_err(|_| Failure::new(ErrorCode::NoSpace, "COW larger than the address space"))?;
        *out_needed = size;
        if crate::room(buf.is_null(), len, size, "buf", "COW bytes")? && size > 0 {
            // SAFETY: `buf` holds `len` >= size writable bytes by contract.
            cow.read_at(0, unsafe { out_buf(buf, size) }?)?;
        }
        Ok(())
    })
}

/// Grows snapshot `id`'s COW device to `new_cow_size` bytes (like `lvextend` on a snapshot). Works
/// for memory and file COWs; a file COW gets the added bytes reserved on its file system (a disk too
/// full for them fails with `IO` and leaves the COW as it was). An invalid snapshot stays invalid.
///
/// Errors: `NULL_POINTER`, `UNKNOWN_SNAPSHOT`, `INVALID_ARGUMENT` (shrinking, or a size beyond
/// 2^63 - 1 bytes, which no file or memory can hold), `NO_SPACE` (out of memory for a memory COW),
/// `IO`, `SNAPSHOT_INVALID`. Thread-safety: safe from any thread; takes the write lock.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_snapshot_extend(
    vol: *mut cowsnap_volume,
    id: u32,
    new_cow_size: u64,
) -> cowsnap_result {
    ffi_guard!("cowsnap_snapshot_extend", {
        let v = vol!(vol);
        limits::check_cow_growth(new_cow_size)?;
        v.exclusive()?
            .extend_snapshot(SnapshotId(id), new_cow_size)
            .map_err(|e| match e {
                // The core's "COW device too small" is about a full COW; here memory ran out.
                Error::NoSpace => Failure::new(
                    ErrorCode::NoSpace,
                    format!("cannot grow the COW to {new_cow_size} bytes: out of memory"),
                ),
                e => e.into(),
            })?;
        Ok(())
    })
}

/// Sets snapshot `id`'s autoextend policy (LVM's `snapshot_autoextend_threshold` and
/// `snapshot_autoextend_percent`); `threshold = 0, percent = 0` clears it.
///
/// Errors: `NULL_POINTER`, `UNKNOWN_SNAPSHOT`, `INVALID_ARGUMENT` (threshold > 100, percent 0).
/// Thread-safety: safe from any thread; takes the write lock.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_snapshot_set_autoextend(
    vol: *mut cowsnap_volume,
    id: u32,
    threshold_percent: u32,
    extend_percent: u32,
) -> cowsnap_result {
    ffi_guard!("cowsnap_snapshot_set_autoextend", {
        let v = vol!(vol);
        let policy = Autoextend::from_percents(threshold_percent, extend_percent)?;
        v.exclusive()?.set_autoextend(SnapshotId(id), policy)?;
        Ok(())
    })
}

/// A byte range of the origin (`cowsnap_snapshot_changed_ranges`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct cowsnap_range {
    /// First byte.
    pub offset: u64,
    /// Bytes (never 0).
    pub length: u64,
}

/// The byte ranges of the origin where snapshots `older` and `newer` may differ (for incremental
/// backups: read only these), sorted, disjoint and merged: the union of both snapshots' exception
/// keys, in their chunk sizes. With `older == newer`, where that snapshot may differ from the current
/// origin. Stores the number of ranges in `*out_count` and, when `ranges` is not NULL, copies them to
/// `ranges[0..capacity]`.
///
/// Call with `ranges = NULL, capacity = 0` to learn the count. If `capacity` is smaller, returns
/// `BUFFER_TOO_SMALL` with `*out_count` set and nothing copied (the count grows as the origin is
/// written: retry). `ranges` is borrowed for the call.
/// Errors: `NULL_POINTER`, `UNKNOWN_SNAPSHOT`, `SNAPSHOT_INVALID` (an invalid snapshot lost its
/// table: its answer would be wrong), `MERGING`, `BUFFER_TOO_SMALL`.
/// Thread-safety: runs in parallel with reads.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_snapshot_changed_ranges(
    vol: *mut cowsnap_volume,
    older: u32,
    newer: u32,
    ranges: *mut cowsnap_range,
    capacity: usize,
    out_count: *mut usize,
) -> cowsnap_result {
    ffi_guard!("cowsnap_snapshot_changed_ranges", {
        let v = vol!(vol);
        let list: Vec<cowsnap_range> = v
            .read()?
            .changed_between(SnapshotId(older), SnapshotId(newer))?
            .into_iter()
            .map(|(offset, length)| cowsnap_range { offset, length })
            .collect();
        // SAFETY: argument contracts above.
        unsafe { crate::copy_out(&list, ranges, capacity, out_count, "ranges") }
    })
}
