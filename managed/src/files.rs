//! The files of a managed volume, opened so that a manifest entry can never lead outside the volume,
//! to a device node, or to one file twice: plain names inside the volume directory, no symbolic
//! links, regular files only, one identity (device + inode) per file. New COW files are created
//! exclusively with their whole size reserved, so that a full host disk can never invalidate them.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use cowsnap_core::{Error as CoreError, FileDevice, DIRECT_IO_ALIGN};

use crate::size::human;
use crate::{Error, Result};

/// The largest file size the host can address (`off_t` is signed).
pub const MAX_FILE_SIZE: u64 = cowsnap_core::limits::MAX_DEVICE_LEN;

/// How a volume's files are opened: through the page cache (the default), or with `O_DIRECT`
/// (the CLI's `--direct`: for programs that cache for themselves). Given to every function here
/// that opens or creates a file, and kept by an opened volume for the COWs it creates later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    /// Every file with `O_DIRECT`.
    pub direct: bool,
}

impl Access {
    /// The `open(2)` flag.
    fn flag(self) -> i32 {
        if self.direct {
            libc::O_DIRECT
        } else {
            0
        }
    }
}

/// The refusal of a file system without direct I/O.
pub fn no_direct_io(path: &Path) -> Error {
    Error::msg(format!(
        "the file system of {} does not support direct I/O (O_DIRECT); run without --direct",
        path.display()
    ))
}

/// With direct I/O, a size that is not whole 4096-byte blocks is refused (direct I/O cannot
/// address the rest).
pub fn check_direct_size(len: u64, what: &str, access: Access) -> Result {
    if access.direct && len % DIRECT_IO_ALIGN != 0 {
        return Err(Error::msg(format!(
            "{what}: with --direct (O_DIRECT) sizes must be multiples of {DIRECT_IO_ALIGN} bytes, \
             not {len}"
        )));
    }
    Ok(())
}

/// The device over a file [`open_member`] or [`open_path`] opened with `access`.
pub fn device(file: File, access: Access) -> Result<FileDevice, CoreError> {
    if access.direct {
        FileDevice::from_direct_file(file)
    } else {
        FileDevice::from_file(file)
    }
}

/// Opens `path` (read-only unless `writable`) with `access`, naming it in errors.
pub fn open_path(path: &Path, writable: bool, access: Access) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(writable)
        .custom_flags(access.flag())
        .open(path)
        .map_err(|e| {
            if access.direct && e.raw_os_error() == Some(libc::EINVAL) {
                no_direct_io(path)
            } else {
                Error::io(format!("cannot open {}: {e}", path.display()))
            }
        })
}

/// Which file a handle is: two paths naming one file (hard link, bind mount) share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The identity in `m` (from `stat`, `lstat` or an open file's `fstat`).
    pub fn of(m: &fs::Metadata) -> Self {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// A volume file opened for use as a device.
pub struct VolFile {
    pub file: File,
    pub id: FileId,
    pub len: u64,
}

/// A file name as a manifest may hold it: one path component inside the volume directory.
pub fn check_plain_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(format!(
            "{name:?} is not a plain file name inside the volume directory"
        ));
    }
    Ok(())
}

/// Opens `dir/name` (read-only unless `writable`) without following a symbolic link, and refuses
/// anything but a regular file. `what` names the file in messages ("origin", "snapshot s1's COW").
pub fn open_member(
    dir: &Path,
    name: &str,
    writable: bool,
    what: &str,
    access: Access,
) -> Result<VolFile> {
    check_plain_name(name).map_err(|e| Error::msg(format!("{what}: {e}")))?;
    let p = dir.join(name);
    let f = OpenOptions::new()
        .read(true)
        .write(writable)
        // O_NONBLOCK: opening a FIFO planted under our name must not hang; no effect on files.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | access.flag())
        .open(&p);
    let f = match f {
        Ok(f) => f,
        Err(e) if access.direct && e.raw_os_error() == Some(libc::EINVAL) => {
            return Err(no_direct_io(&p))
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::msg(format!(
                "{what} {} is a symbolic link: a volume's files must be regular files in the \
                 volume directory (a link could name another file of the volume or a foreign one)",
                p.display()
            )))
        }
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
            return Err(Error::msg(format!(
                "{what} {} is a directory, not an image file",
                p.display()
            )))
        }
        Err(e) => {
            return Err(Error::io(format!(
                "cannot open {what} {}: {e}",
                p.display()
            )))
        }
    };
    let m = f
        .metadata()
        .map_err(|e| Error::io(format!("{what} {}: {e}", p.display())))?;
    let t = m.file_type();
    if t.is_dir() {
        return Err(Error::msg(format!(
            "{what} {} is a directory, not an image file",
            p.display()
        )));
    }
    if !t.is_file() {
        return Err(Error::msg(format!(
            "{what} {} is not a regular file (a device node, FIFO or socket): refusing it",
            p.display()
        )));
    }
    Ok(VolFile {
        file: f,
        id: FileId::of(&m),
        len: m.len(),
    })
}

/// The identity and hard-link count of `dir/name` without following a link; `None` when it is not
/// a regular file.
pub fn identity_of(dir: &Path, name: &str) -> Option<(FileId, u64)> {
    check_plain_name(name).ok()?;
    let m = fs::symlink_metadata(dir.join(name)).ok()?;
    m.is_file().then(|| (FileId::of(&m), m.nlink()))
}

/// Creates `dir/name` as a new COW device with all of its `len` bytes reserved (the core's
/// `FileDevice::create_new`: `O_EXCL`, `posix_fallocate`, removed again on failure), refusing any
/// existing path, a dangling symbolic link included.
pub fn create_reserved(
    dir: &Path,
    name: &str,
    len: u64,
    what: &str,
    access: Access,
) -> Result<FileDevice> {
    check_plain_name(name).map_err(|e| Error::msg(format!("{what}: {e}")))?;
    if len > MAX_FILE_SIZE {
        return Err(too_large(len));
    }
    let p = dir.join(name);
    if fs::symlink_metadata(&p).is_ok() {
        return Err(Error::msg(format!(
            "{} already exists and is not a snapshot of this volume: move it away or choose \
             another name",
            p.display()
        )));
    }
    check_direct_size(len, what, access)?;
    let made = if access.direct {
        FileDevice::create_new_direct(&p, len)
    } else {
        FileDevice::create_new(&p, len)
    };
    made.map_err(|e| match e {
        CoreError::Unsupported(_) => no_direct_io(&p),
        e => Error::io(format!(
            "cannot create {what} {} with {} reserved: {e}",
            p.display(),
            human(len)
        )),
    })
}

/// The message for a size the host cannot hold in one file.
pub fn too_large(len: u64) -> Error {
    Error::msg(format!(
        "size {len} bytes is too large: a file can hold at most {MAX_FILE_SIZE} bytes (8 EiB)"
    ))
}
