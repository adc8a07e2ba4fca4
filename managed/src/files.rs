//! The files of a managed volume, opened so that a manifest entry can never lead outside the volume,
//! to a device node, or to one file twice: plain names inside the volume directory, no symbolic
//! links, regular files only, one identity (device + inode) per file. New COW files are created
//! exclusively with their whole size reserved, so that a full host disk can never invalidate them.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use cowsnap_core::FileDevice;

use crate::size::human;
use crate::{Error, Result};

/// The largest file size the host can address (`off_t` is signed).
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// Which file a handle is: two paths naming one file (hard link, bind mount) share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
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
pub fn open_member(dir: &Path, name: &str, writable: bool, what: &str) -> Result<VolFile> {
    check_plain_name(name).map_err(|e| Error::msg(format!("{what}: {e}")))?;
    let p = dir.join(name);
    let f = OpenOptions::new()
        .read(true)
        .write(writable)
        // O_NONBLOCK: opening a FIFO planted under our name must not hang; no effect on files.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&p);
    let f = match f {
        Ok(f) => f,
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
        id: FileId {
            dev: m.dev(),
            ino: m.ino(),
        },
        len: m.len(),
    })
}

/// The identity and hard-link count of `dir/name` without following a link; `None` when it is not
/// a regular file.
pub fn identity_of(dir: &Path, name: &str) -> Option<(FileId, u64)> {
    check_plain_name(name).ok()?;
    let m = fs::symlink_metadata(dir.join(name)).ok()?;
    m.is_file().then(|| {
        (
            FileId {
                dev: m.dev(),
                ino: m.ino(),
            },
            m.nlink(),
        )
    })
}

/// Creates `dir/name` as a new COW device with all of its `len` bytes reserved (the core's
/// `FileDevice::create_new`: `O_EXCL`, `posix_fallocate`, removed again on failure), refusing any
/// existing path, a dangling symbolic link included.
pub fn create_reserved(dir: &Path, name: &str, len: u64, what: &str) -> Result<FileDevice> {
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
    FileDevice::create_new(&p, len).map_err(|e| {
        Error::io(format!(
            "cannot create {what} {} with {} reserved: {e}",
            p.display(),
            human(len)
        ))
    })
}

/// The message for a size the host cannot hold in one file.
pub fn too_large(len: u64) -> Error {
    Error::msg(format!(
        "size {len} bytes is too large: a file can hold at most {MAX_FILE_SIZE} bytes (8 EiB)"
    ))
}
