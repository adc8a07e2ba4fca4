//! Managed volume directories (made by the `cowsnap` CLI) opened from C: the manifest's snapshots
//! with their store, chunk size and autoextend policy, the volume's lock held for the handle's
//! life, an interrupted merge finished. See `cowsnap-managed`.

use std::ffi::{c_char, CStr};

use crate::volume::{cowsnap_volume, path_arg};
use crate::{cowsnap_result, Failure, FfiResult};

/// Opens the volume directory `dir` made by the `cowsnap` CLI (`cowsnap create DIR`), as the CLI
/// opens it: the origin image and every snapshot of its manifest (`cowsnap.json`) activated with
/// the manifest's store (`P` invalidates on overflow, `PO` reports it), chunk size and autoextend
/// policy; a merge that was interrupted is finished first. Stores the handle in `*out_vol`.
///
/// The handle holds the volume's exclusive lock until `cowsnap_volume_free`: `cowsnap` commands on
/// the directory wait meanwhile (they say so), and a second `cowsnap_volume_open_dir` fails. If a
/// `cowsnap` command or mount holds the lock, this returns `BUSY` at once ("in use", "mounted"), without
/// waiting. Snapshots listed in the manifest cannot be deleted or merged through the handle
/// (`INVALID_ARGUMENT`: use `cowsnap remove` / `cowsnap merge`); snapshots created through it are not
/// added to the manifest (they live as long as the handle, or as your own COW files).
///
/// Errors: `NULL_POINTER`, `INVALID_ARGUMENT` (not a volume directory: no manifest), `BUSY` (lock
/// held: retry later), `IO` (unreadable files), `SNAPSHOT_INVALID` (a snapshot of the manifest cannot be activated: see
/// `cowsnap lvs DIR`; drop it with `cowsnap remove --force`), `CORRUPT_METADATA`.
/// Ownership: `dir` is borrowed for the call; the handle is the caller's, released with
/// `cowsnap_volume_free`. Thread-safety: the handle is like any other (see `cowsnap_volume`).
#[no_mangle]
pub unsafe extern "C" fn cowsnap_volume_open_dir(
    dir: *const c_char,
    out_vol: *mut *mut cowsnap_volume,
) -> cowsnap_result {
    ffi_guard!("cowsnap_volume_open_dir", {
        let out_vol = out!(out_vol);
        *out_vol = std::ptr::null_mut();
        // SAFETY: NUL-terminated string by contract.
        let dir = unsafe { path_arg(dir, "dir") }?;
        let opened = cowsnap_managed::open_dir(&dir)?;
        let (vol, lease) = opened.into_parts();
        *out_vol = cowsnap_volume::boxed_with(vol, Some(lease));
        Ok(())
    })
}

/// Stores in `*out_id` the id of the snapshot named `name` in the manifest of a volume opened with
/// `cowsnap_volume_open_dir` (the names `cowsnap lvs` shows).
///
/// Errors: `NULL_POINTER`, `UNKNOWN_SNAPSHOT` (no such name in the manifest), `INVALID_ARGUMENT`
/// (`vol` was not opened from a directory, or `name` is not UTF-8). Thread-safety: safe to call
/// concurrently with anything but free.
#[no_mangle]
pub unsafe extern "C" fn cowsnap_volume_dir_snapshot_id(
    vol: *mut cowsnap_volume,
    name: *const c_char,
    out_id: *mut u32,
) -> cowsnap_result {
    ffi_guard!("cowsnap_volume_dir_snapshot_id", {
        let v = vol!(vol);
        let out_id = out!(out_id);
        let name = name_arg(name)?;
        let m = v.lease().ok_or_else(|| {
            Failure::invalid("the volume was not opened with cowsnap_volume_open_dir")
        })?;
        let id = m.snapshot_named(name)?;
        *out_id = id.0;
        Ok(())
    })
}

fn name_arg<'a>(p: *const c_char) -> FfiResult<&'a str> {
    if p.is_null() {
        return Err(Failure::null("name"));
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Failure::invalid("name is not UTF-8"))
}
