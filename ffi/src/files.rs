//! How the C ABI turns paths into devices: which files it opens, which it creates, and what it refuses
//! before anything is written.
//!
//! - Opening (an origin, a COW to activate) never creates, truncates or formats anything. The path
//!   must name an existing regular file (symlinks are followed) that is writable: a directory, a
//!   device node, a FIFO or a socket is refused, and so is a file without any write permission bit,
//!   even for root (whose `open` would succeed): a file marked read-only is never written.
//! - Creating (an origin, a snapshot's COW) never replaces anything: the path must not exist (it is
//!   created with `O_EXCL`, which also refuses a dangling symlink) or must be an empty regular file
//!   that is not a symlink (a `mkstemp` file). A failed creation removes the file it created, or
//!   shrinks the empty file it was given back to 0 bytes.
//! - Every opened file carries its identity (`st_dev`, `st_ino`, read from the open descriptor) so
//!   that one file named twice (same path, symlink, hard link, `..` path) is refused with names.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cowsnap_core::{BlockDevice, Error, ErrorCode, FileDevice};

use crate::{Failure, FfiResult};

/// A file's identity: the same pair means the same file, whatever path led to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(m: &Metadata) -> Self {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// What a path names, for messages.
fn kind(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a regular file"
    }
}

/// An error from the OS about `path`, with a code that says whose fault it is.
fn os_failure(e: io::Error, doing: &str, path: &Path) -> Failure {
    let code = match e.raw_os_error() {
        Some(libc::EISDIR) | Some(libc::ELOOP) | Some(libc::EEXIST) => ErrorCode::InvalidArgument,
        _ => ErrorCode::Io,
    };
    Failure::new(code, format!("cannot {doing} {}: {e}", path.display()))
}

/// Refuses what cannot be written: a file whose mode has no write bit at all.
fn check_writable(m: &Metadata, what: &str, path: &Path) -> FfiResult<()> {
    let mode = m.permissions().mode();
    if mode & 0o222 == 0 {
        return Err(Failure::new(
            ErrorCode::Io,
            format!(
                "{what} {} is read-only (mode {:04o}); cowsnap writes to the files it is given and \
                 never writes to a read-only one",
                path.display(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// A file the volume will use, opened read-write.
pub(crate) struct Opened {
    pub(crate) device: FileDevice,
    pub(crate) id: FileId,
}

/// Opens an existing regular file read-write, changing nothing in it.
pub(crate) fn open_existing(path: &Path, what: &str) -> FfiResult<Opened> {
    // Look before opening: opening a device node can have effects of its own (a tape rewinds).
    let before =
        std::fs::metadata(path).map_err(|e| os_failure(e, &format!("open {what}"), path))?;
    if !before.is_file() {
        return Err(Failure::invalid(format!(
            "{what} {} is {}, not a regular file",
            path.display(),
            kind(&before)
        )));
    }
    check_writable(&before, what, path)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .map_err(|e| os_failure(e, &format!("open {what}"), path))?;
    let id = same_file_as_looked_at(&file, &before, what, path)?;
    let device = FileDevice::from_file(file)
        .map_err(|e| crate::volume::with_path(e, "cannot open", path))?;
    Ok(Opened { device, id })
}

/// Checks that the descriptor is the file that was examined (the path was not swapped in between).
fn same_file_as_looked_at(
    file: &File,
    looked_at: &Metadata,
    what: &str,
    path: &Path,
) -> FfiResult<FileId> {
    let now = file
        .metadata()
        .map_err(|e| os_failure(e, &format!("examine {what}"), path))?;
    let id = FileId::of(&now);
    if id != FileId::of(looked_at) || !now.is_file() {
        return Err(Failure::new(
            ErrorCode::Io,
            format!(
                "{what} {} changed while it was being opened",
                path.display()
            ),
        ));
    }
    Ok(id)
}

/// Refuses the same file named twice among `files` (`(argument name, path, identity)`).
pub(crate) fn check_distinct(files: &[(String, &Path, FileId)]) -> FfiResult<()> {
    for (i, (name, path, id)) in files.iter().enumerate() {
        if let Some((first, first_path, _)) = files[..i].iter().find(|(_, _, other)| other == id) {
            return Err(Failure::invalid(format!(
                "{name} ({}) is the same file as {first} ({}): one file cannot be two devices of a \
                 volume",
                path.display(),
                first_path.display()
            )));
        }
    }
    Ok(())
}

/// How to take back a creation that the volume then refused.
pub(crate) enum Undo {
    /// The file did not exist: remove it (if the path still names it).
    Remove(PathBuf, FileId),
    /// The caller's empty file: shrink it back to 0 bytes.
    Shrink(File),
}

impl Undo {
    /// Best effort: the original failure is what the caller reports.
    pub(crate) fn run(self) {
        match self {
            Undo::Remove(path, id) => {
                if std::fs::symlink_metadata(&path).is_ok_and(|m| FileId::of(&m) == id) {
                    let _ = std::fs::remove_file(&path);
                }
            }
            Undo::Shrink(file) => {
                let _ = file.set_len(0);
            }
        }
    }
}

/// A file created for a volume, and how to take it back.
pub(crate) struct Created {
    pub(crate) device: FileDevice,
    pub(crate) undo: Undo,
}

/// What [`create`] does to the space of the new file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    /// Reserve every byte now (a COW: a snapshot must not die of a full disk later).
    Reserve,
    /// A sparse file (an origin: its blocks are allocated as they are written).
    Sparse,
}

/// Creates `path` as a file of `len` bytes: a new file, or the caller's existing empty regular file.
/// Anything else at `path` is refused and left as it was.
pub(crate) fn create(path: &Path, len: u64, space: Space, what: &str) -> FfiResult<Created> {
    check_len(len, what)?;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_new(path, len, space, what),
        Err(e) => Err(os_failure(e, &format!("create {what}"), path)),
        Ok(m) => grow_empty(path, &m, len, space, what),
    }
}

/// Sizes no file can have (the core's limit: `off_t` is signed), with the file's role in the message.
fn check_len(len: u64, what: &str) -> FfiResult<()> {
    if len > cowsnap_core::limits::MAX_DEVICE_LEN {
        return Err(Failure::invalid(format!(
            "{what} size {len} bytes is larger than any file can be ({} bytes)",
            cowsnap_core::limits::MAX_DEVICE_LEN
        )));
    }
    Ok(())
}

fn create_new(path: &Path, len: u64, space: Space, what: &str) -> FfiResult<Created> {
    let device = match space {
        Space::Reserve => FileDevice::create_new(path, len)
            .map_err(|e| crate::volume::with_path(e, &format!("cannot create {what}"), path))?,
        Space::Sparse => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| os_failure(e, &format!("create {what}"), path))?;
            if let Err(e) = file.set_len(len) {
                drop(file);
                let _ = std::fs::remove_file(path);
                return Err(os_failure(e, &format!("size {what}"), path));
            }
            FileDevice::from_file(file).map_err(|e| {
                let _ = std::fs::remove_file(path);
                crate::volume::with_path(e, &format!("cannot create {what}"), path)
            })?
        }
    };
    let id = std::fs::symlink_metadata(path)
        .map(|m| FileId::of(&m))
        .map_err(|e| os_failure(e, &format!("examine {what}"), path));
    match id {
        Ok(id) => Ok(Created {
            device,
            undo: Undo::Remove(path.to_path_buf(), id),
        }),
        Err(f) => {
            drop(device);
            let _ = std::fs::remove_file(path);
            Err(f)
        }
    }
}

/// The caller's empty regular file (not through a symlink), grown to `len` bytes.
fn grow_empty(path: &Path, m: &Metadata, len: u64, space: Space, what: &str) -> FfiResult<Created> {
    if !m.is_file() {
        let advice = if m.file_type().is_symlink() {
            "; give the path of the file itself"
        } else {
            ""
        };
        return Err(Failure::invalid(format!(
            "{what} {} exists and is {}: a new {what} must be a new file or an empty regular \
             file{advice}",
            path.display(),
            kind(m)
        )));
    }
    if m.len() > 0 {
        return Err(Failure::invalid(format!(
            "{what} file {} exists and is not empty; refusing to overwrite it",
            path.display()
        )));
    }
    check_writable(m, what, path)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| os_failure(e, &format!("open {what}"), path))?;
    same_file_as_looked_at(&file, m, what, path)?;
    // Checked on the descriptor: from here on, shrinking back to 0 bytes destroys nothing.
    if file.metadata().map_or(true, |now| now.len() != 0) {
        return Err(Failure::invalid(format!(
            "{what} file {} stopped being empty while it was being opened; leaving it alone",
            path.display()
        )));
    }
    let keep = file
        .try_clone()
        .map_err(|e| os_failure(e, &format!("open {what}"), path))?;
    let grown = match space {
        // The core's `set_len` reserves the range it adds.
        Space::Reserve => FileDevice::from_file(file).and_then(|mut device| {
            device.set_len(len)?;
            Ok(device)
        }),
        Space::Sparse => file
            .set_len(len)
            .map_err(Error::from)
            .and_then(|()| FileDevice::from_file(file)),
    };
    match grown {
        Ok(device) => Ok(Created {
            device,
            undo: Undo::Shrink(keep),
        }),
        Err(e) => {
            Undo::Shrink(keep).run();
            Err(crate::volume::with_path(
                e,
                &format!("cannot create {what}"),
                path,
            ))
        }
    }
}
