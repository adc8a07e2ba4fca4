//! Files named by a program's own paths (not members of a volume directory: see [`crate::files`]):
//! which the library opens, which it creates, and what it refuses before anything is written. The
//! rules of the C ABI's `cowsnap_volume_create_file` / `_open_file` / `cowsnap_snapshot_create` with
//! a `cow_path`, and so of Python's `Volume.create_file` / `open_file`.
//!
//! - Opening (an origin, a COW to activate) never creates, truncates or formats anything. The path
//!   must name an existing regular file (symlinks are followed) that is writable: a directory, a
//!   device node, a FIFO or a socket is refused, and so is a file without any write permission bit,
//!   even for root (whose `open` would succeed): a file marked read-only is never written.
//! - Creating (an origin, a snapshot's COW) never replaces anything: the path must not exist (it is
//!   created with `O_EXCL`, which also refuses a dangling symlink) or must be an empty regular file
//!   that is not a symlink (a `mkstemp` file). A failed creation removes the file it created, or
//!   shrinks the empty file it was given back to 0 bytes.
//! - With direct I/O (C's `COWSNAP_OPEN_DIRECT`) every file is used with `O_DIRECT` (no page cache): its size must be
//!   a multiple of 4096 bytes (checked before anything is created), a file system without direct
//!   I/O is `UNSUPPORTED` naming the file (a file this call created is removed again), and the
//!   volume refuses reads and writes whose offset or length is not a multiple of 4096.
//! - Every opened file carries its identity (`st_dev`, `st_ino`, read from the open descriptor) so
//!   that one file named twice (same path, symlink, hard link, `..` path) is refused with names.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cowsnap_core::{limits, BlockDevice, ErrorCode, FileDevice, SnapshotOptions, Volume};

use crate::files::FileId;
use crate::{Error, Result};

type CoreError = cowsnap_core::Error;

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

/// An `open` with `O_DIRECT` refused with `EINVAL`: the file system has no direct I/O.
fn no_direct_io(path: &Path) -> Error {
    Error::coded(
        ErrorCode::Unsupported,
        format!(
            "the file system of {} does not support direct I/O (O_DIRECT); open it without \
             direct I/O",
            path.display()
        ),
    )
}

/// Refuses a size direct I/O cannot cover, before anything is created or opened.
fn check_direct_len(len: u64, direct: bool, what: &str, path: &Path) -> Result<()> {
    if direct && len % cowsnap_core::DIRECT_IO_ALIGN != 0 {
        return Err(Error::invalid(format!(
            "{what} {}: with direct I/O (O_DIRECT) the size must be a multiple of {} bytes, not \
             {len}",
            path.display(),
            cowsnap_core::DIRECT_IO_ALIGN
        )));
    }
    Ok(())
}

/// `OpenOptions` for reading and writing, with `O_NOCTTY` and (when asked) `O_DIRECT`.
fn read_write(direct: bool, extra: i32) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | extra | if direct { libc::O_DIRECT } else { 0 });
    o
}

/// An open failure, `UNSUPPORTED` when it was `O_DIRECT` the file system refused.
fn open_failure(e: io::Error, direct: bool, doing: &str, path: &Path) -> Error {
    if direct && e.raw_os_error() == Some(libc::EINVAL) {
        return no_direct_io(path);
    }
    os_failure(e, doing, path)
}

/// The device over an open file.
fn device(file: File, direct: bool) -> core::result::Result<FileDevice, CoreError> {
    if direct {
        FileDevice::from_direct_file(file)
    } else {
        FileDevice::from_file(file)
    }
}

/// An error from the OS about `path`, with a code that says whose fault it is.
fn os_failure(e: io::Error, doing: &str, path: &Path) -> Error {
    let code = match e.raw_os_error() {
        Some(libc::EISDIR) | Some(libc::ELOOP) | Some(libc::EEXIST) => ErrorCode::InvalidArgument,
        _ => ErrorCode::Io,
    };
    Error::coded(code, format!("cannot {doing} {}: {e}", path.display()))
}

/// Refuses what cannot be written: a file whose mode has no write bit at all.
fn check_writable(m: &Metadata, what: &str, path: &Path) -> Result<()> {
    let mode = m.permissions().mode();
    if mode & 0o222 == 0 {
        return Err(Error::coded(
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
pub struct OpenedFile {
    pub device: FileDevice,
    pub id: FileId,
}

/// Opens an existing regular file read-write (with `O_DIRECT` if `direct`), changing nothing in it.
pub fn open_existing(path: &Path, what: &str, direct: bool) -> Result<OpenedFile> {
    // Look before opening: opening a device node can have effects of its own (a tape rewinds).
    let before =
        std::fs::metadata(path).map_err(|e| os_failure(e, &format!("open {what}"), path))?;
    if !before.is_file() {
        return Err(Error::invalid(format!(
            "{what} {} is {}, not a regular file",
            path.display(),
            kind(&before)
        )));
    }
    check_writable(&before, what, path)?;
    let file = read_write(direct, 0)
        .open(path)
        .map_err(|e| open_failure(e, direct, &format!("open {what}"), path))?;
    let id = same_file_as_looked_at(&file, &before, what, path)?;
    let device = device(file, direct).map_err(|e| with_path(e, "cannot open", path))?;
    Ok(OpenedFile { device, id })
}

/// Checks that the descriptor is the file that was examined (the path was not swapped in between).
fn same_file_as_looked_at(
    file: &File,
    looked_at: &Metadata,
    what: &str,
    path: &Path,
) -> Result<FileId> {
    let now = file
        .metadata()
        .map_err(|e| os_failure(e, &format!("examine {what}"), path))?;
    let id = FileId::of(&now);
    if id != FileId::of(looked_at) || !now.is_file() {
        return Err(Error::coded(
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
pub fn check_distinct(files: &[(String, &Path, FileId)]) -> Result<()> {
    for (i, (name, path, id)) in files.iter().enumerate() {
        if let Some((first, first_path, _)) = files[..i].iter().find(|(_, _, other)| other == id) {
            return Err(Error::invalid(format!(
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
pub enum Undo {
    /// The file did not exist: remove it (if the path still names it).
    Remove(PathBuf, FileId),
    /// The caller's empty file: shrink it back to 0 bytes.
    Shrink(File),
}

impl Undo {
    /// Best effort: the original failure is what the caller reports.
    pub fn run(self) {
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
pub struct Created {
    pub device: FileDevice,
    pub undo: Undo,
}

/// What [`create`] does to the space of the new file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Reserve every byte now (a COW: a snapshot must not die of a full disk later).
    Reserve,
    /// A sparse file (an origin: its blocks are allocated as they are written).
    Sparse,
}

/// Creates `path` as a file of `len` bytes: a new file, or the caller's existing empty regular file.
/// Anything else at `path` is refused and left as it was. With `direct` the device uses `O_DIRECT`.
pub fn create(path: &Path, len: u64, space: Space, what: &str, direct: bool) -> Result<Created> {
    check_len(len, what)?;
    check_direct_len(len, direct, what, path)?;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_new(path, len, space, what, direct),
        Err(e) => Err(os_failure(e, &format!("create {what}"), path)),
        Ok(m) => grow_empty(path, &m, len, space, what, direct),
    }
}

/// Sizes no file can have (the core's limit: `off_t` is signed), with the file's role in the message.
fn check_len(len: u64, what: &str) -> Result<()> {
    if len > cowsnap_core::limits::MAX_DEVICE_LEN {
        return Err(Error::invalid(format!(
            "{what} size {len} bytes is larger than any file can be ({} bytes)",
            cowsnap_core::limits::MAX_DEVICE_LEN
        )));
    }
    Ok(())
}

fn create_new(path: &Path, len: u64, space: Space, what: &str, direct: bool) -> Result<Created> {
    let device = match space {
        Space::Reserve => {
            let made = if direct {
                FileDevice::create_new_direct(path, len)
            } else {
                FileDevice::create_new(path, len)
            };
            made.map_err(|e| match e {
                CoreError::Unsupported(_) if direct => no_direct_io(path),
                e => with_path(e, &format!("cannot create {what}"), path),
            })?
        }
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
            // Created without O_DIRECT (so that a refusal of the flag is told apart from one of
            // the creation), then reopened with it, checked to be the same file.
            let file = if direct {
                let before = file
                    .metadata()
                    .map_err(|e| os_failure(e, &format!("examine {what}"), path));
                let reopened = before.and_then(|m| {
                    let f = read_write(true, libc::O_NOFOLLOW)
                        .open(path)
                        .map_err(|e| open_failure(e, true, &format!("open {what}"), path))?;
                    same_file_as_looked_at(&f, &m, what, path)?;
                    Ok(f)
                });
                match reopened {
                    Ok(f) => f,
                    Err(f) => {
                        drop(file);
                        let _ = std::fs::remove_file(path);
                        return Err(f);
                    }
                }
            } else {
                file
            };
            device(file, direct).map_err(|e| {
                let _ = std::fs::remove_file(path);
                with_path(e, &format!("cannot create {what}"), path)
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
fn grow_empty(
    path: &Path,
    m: &Metadata,
    len: u64,
    space: Space,
    what: &str,
    direct: bool,
) -> Result<Created> {
    if !m.is_file() {
        let advice = if m.file_type().is_symlink() {
            "; give the path of the file itself"
        } else {
            ""
        };
        return Err(Error::invalid(format!(
            "{what} {} exists and is {}: a new {what} must be a new file or an empty regular \
             file{advice}",
            path.display(),
            kind(m)
        )));
    }
    if m.len() > 0 {
        return Err(Error::invalid(format!(
            "{what} file {} exists and is not empty; refusing to overwrite it",
            path.display()
        )));
    }
    check_writable(m, what, path)?;
    let file = read_write(direct, libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| open_failure(e, direct, &format!("open {what}"), path))?;
    same_file_as_looked_at(&file, m, what, path)?;
    // Checked on the descriptor: from here on, shrinking back to 0 bytes destroys nothing.
    if file.metadata().map_or(true, |now| now.len() != 0) {
        return Err(Error::invalid(format!(
            "{what} file {} stopped being empty while it was being opened; leaving it alone",
            path.display()
        )));
    }
    let keep = file
        .try_clone()
        .map_err(|e| os_failure(e, &format!("open {what}"), path))?;
    let grown = match space {
        // The core's `set_len` reserves the range it adds.
        Space::Reserve => device(file, direct).and_then(|mut device| {
            device.set_len(len)?;
            Ok(device)
        }),
        Space::Sparse => file
            .set_len(len)
            .map_err(CoreError::from)
            .and_then(|()| device(file, direct)),
    };
    match grown {
        Ok(device) => Ok(Created {
            device,
            undo: Undo::Shrink(keep),
        }),
        Err(e) => {
            Undo::Shrink(keep).run();
            Err(with_path(e, &format!("cannot create {what}"), path))
        }
    }
}

/// Adds the file name to an error from opening or creating a file.
fn with_path(e: CoreError, what: &str, path: &Path) -> Error {
    Error::core(format_args!("{what} {}", path.display()), e)
}

/// Creates `path` as a sparse origin of `len` bytes (see [`create`]) and a volume over it.
pub fn create_origin(path: &Path, len: u64, direct: bool) -> Result<Volume> {
    limits::check_origin_len(len)?;
    let created = create(path, len, Space::Sparse, "origin", direct)?;
    Ok(Volume::new(created.device))
}

/// Opens the origin at `origin` and activates the persistent COWs `cows` (`(argument name, path)`,
/// in the order of their snapshot ids) on it, with the default options (overflow invalidates, no
/// autoextend). Every file is opened and compared before the first COW is read: one file named
/// twice is refused, naming both arguments, with nothing written.
pub fn open_volume(origin: &Path, cows: &[(String, PathBuf)], direct: bool) -> Result<Volume> {
    let first = open_existing(origin, "origin", direct)?;
    if first.device.is_empty() {
        return Err(Error::invalid(format!(
            "origin {} is empty",
            origin.display()
        )));
    }
    let mut opened = Vec::with_capacity(cows.len());
    for (name, path) in cows {
        opened.push(open_existing(path, &format!("COW {name}"), direct)?);
    }
    let mut ids = vec![("origin_path".to_string(), origin, first.id)];
    for ((name, path), cow) in cows.iter().zip(&opened) {
        ids.push((name.clone(), path.as_path(), cow.id));
    }
    check_distinct(&ids)?;
    let mut vol = Volume::new(first.device);
    for ((name, path), cow) in cows.iter().zip(opened) {
        vol.activate_snapshot(cow.device, SnapshotOptions::default())
            .map_err(|e| with_path(e, &format!("cannot activate {name}"), path))?;
    }
    Ok(vol)
}
