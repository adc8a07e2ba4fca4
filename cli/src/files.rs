//! The files of a managed volume, opened so that a manifest entry can never lead outside the volume,
//! to a device node, or to one file twice: plain names inside the volume directory, no symbolic
//! links, regular files only, one identity (device + inode) per file. New COW files are created
//! exclusively with their whole size reserved, so that a full host disk can never invalidate them.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::size::human;
use crate::{CliError, CliResult};

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
pub fn open_member(dir: &Path, name: &str, writable: bool, what: &str) -> CliResult<VolFile> {
    check_plain_name(name).map_err(|e| CliError::msg(format!("{what}: {e}")))?;
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
            return Err(CliError::msg(format!(
                "{what} {} is a symbolic link: a volume's files must be regular files in the \
                 volume directory (a link could name another file of the volume or a foreign one)",
                p.display()
            )))
        }
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
            return Err(CliError::msg(format!(
                "{what} {} is a directory, not an image file",
                p.display()
            )))
        }
        Err(e) => {
            return Err(CliError::io(format!(
                "cannot open {what} {}: {e}",
                p.display()
            )))
        }
    };
    let m = f
        .metadata()
        .map_err(|e| CliError::io(format!("{what} {}: {e}", p.display())))?;
    let t = m.file_type();
    if t.is_dir() {
        return Err(CliError::msg(format!(
            "{what} {} is a directory, not an image file",
            p.display()
        )));
    }
    if !t.is_file() {
        return Err(CliError::msg(format!(
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

/// Creates `dir/name` (refusing any existing path, even a dangling symbolic link) and reserves
/// `len` bytes for it. On any failure the file is removed: nothing is left behind.
pub fn create_reserved(dir: &Path, name: &str, len: u64, what: &str) -> CliResult<File> {
    check_plain_name(name).map_err(|e| CliError::msg(format!("{what}: {e}")))?;
    if len > MAX_FILE_SIZE {
        return Err(too_large(len));
    }
    let p = dir.join(name);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o644)
        .open(&p)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CliError::msg(format!(
                "{} already exists and is not a snapshot of this volume: move it away or choose \
                 another name",
                p.display()
            )),
            _ => CliError::io(format!("cannot create {}: {e}", p.display())),
        })?;
    if let Err(e) = reserve(&f, 0, len).and_then(|()| f.sync_all()) {
        drop(f);
        let _ = fs::remove_file(&p);
        return Err(CliError::io(format!(
            "cannot reserve {} for {what} {}: {e}",
            human(len),
            p.display()
        )));
    }
    Ok(f)
}

/// Allocates `[from, from+len)` of `f` (growing it), so that later writes there cannot fail for lack
/// of space. `posix_fallocate` falls back to writing zeros where `fallocate` is not supported.
pub fn reserve(f: &File, from: u64, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    if from.checked_add(len).is_none_or(|end| end > MAX_FILE_SIZE) {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    }
    loop {
        // SAFETY: posix_fallocate on a file descriptor we own; no memory is passed.
        let r = unsafe { libc::posix_fallocate(f.as_raw_fd(), from as i64, len as i64) };
        match r {
            0 => return Ok(()),
            libc::EINTR => continue,
            e => return Err(std::io::Error::from_raw_os_error(e)),
        }
    }
}

/// The message for a size the host cannot hold in one file.
pub fn too_large(len: u64) -> CliError {
    CliError::msg(format!(
        "size {len} bytes is too large: a file can hold at most {MAX_FILE_SIZE} bytes (8 EiB)"
    ))
}
