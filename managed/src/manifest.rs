//! The manifest of a managed volume (`DIR/cowsnap.json`), its atomic update, and the volume lock.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// File name of the manifest inside a volume directory.
pub const MANIFEST: &str = "cowsnap.json";
/// File name of the lock file inside a volume directory.
pub const LOCK: &str = ".cowsnap.lock";
/// File name of the writers' gate (see [`VolumeLock`]).
pub const WRITER_GATE: &str = ".cowsnap.wlock";
/// The temporary file of [`Manifest::save`].
pub const MANIFEST_TMP: &str = "cowsnap.json.tmp";
/// Manifest format version written by this tool.
pub const FORMAT: u32 = 1;

/// A snapshot's autoextend policy (`snapshot_autoextend_threshold` / `_percent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoextendSpec {
    pub threshold_percent: u32,
    pub extend_percent: u32,
}

/// One snapshot of a managed volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    pub name: String,
    /// COW image file, relative to the volume directory.
    pub cow: String,
    /// dm store letters: `P` or `PO`.
    pub store: String,
    /// Chunk size in bytes (the COW header is authoritative; this is what it was created with).
    pub chunk_size: u64,
    #[serde(default)]
    pub autoextend: Option<AutoextendSpec>,
    /// Unique to this snapshot (a snapshot removed and made again under its name gets another):
    /// an incremental backup checks that its base's snapshot is still the same one. Absent in
    /// manifests written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// The manifest: everything needed to activate the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// Origin image file, relative to the volume directory.
    pub origin: String,
    /// Origin size in bytes. A changed size means a truncated or grown `origin.img`: refused.
    /// Manifests written before this field have none; it is recorded on the next writable open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_size: Option<u64>,
    /// Default chunk size for new snapshots, in bytes.
    pub chunk_size: u64,
    /// Snapshots, oldest first.
    pub snapshots: Vec<SnapshotEntry>,
    /// Name of a snapshot whose merge was started and not yet finished (resumed on next open).
    #[serde(default)]
    pub merging: Option<String>,
}

impl Manifest {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(MANIFEST)
    }

    /// Reads and checks `DIR/cowsnap.json`.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let p = Self::path(dir);
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::msg(if !dir.exists() {
                    format!("no such volume directory: {}", dir.display())
                } else if !dir.is_dir() {
                    format!("{} is not a volume directory", dir.display())
                } else {
                    format!(
                        "{} is not a cowsnap volume: missing manifest {}",
                        dir.display(),
                        p.display()
                    )
                })
                .with_code(crate::Code::NotAVolume))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(
                    Error::msg(format!("{} is not a volume directory", dir.display()))
                        .with_code(crate::Code::NotAVolume),
                )
            }
            Err(e) => return Err(Error::io(format!("cannot read {}: {e}", p.display()))),
        };
        let corrupt = |e: &dyn std::fmt::Display| {
            Error::corrupt(format!("corrupt manifest {}: {e}", p.display()))
        };
        let m: Manifest = serde_json::from_str(&text).map_err(|e| corrupt(&e))?;
        if m.format != FORMAT {
            return Err(Error::msg(format!(
                "manifest {} has format {}, this cowsnap understands {FORMAT}",
                p.display(),
                m.format
            )));
        }
        crate::files::check_plain_name(&m.origin).map_err(|e| corrupt(&format!("origin: {e}")))?;
        for (i, s) in m.snapshots.iter().enumerate() {
            check_name(&s.name).map_err(|e| corrupt(&e))?;
            if m.snapshots[..i].iter().any(|o| o.name == s.name) {
                return Err(corrupt(&format!("snapshot {:?} is listed twice", s.name)));
            }
        }
        if let Some(n) = &m.merging {
            if m.find(n).is_none() {
                return Err(corrupt(&format!("merging snapshot {n:?} is not listed")));
            }
        }
        Ok(m)
    }

    /// Writes the manifest atomically: a temporary file, fsync, rename, fsync of the directory. On
    /// failure the temporary file is removed and the old manifest stays as it was.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        let p = Self::path(dir);
        let tmp = dir.join(MANIFEST_TMP);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::msg(format!("cannot encode manifest: {e}")))?;
        let io = |e: std::io::Error| Error::io(format!("cannot write {}: {e}", p.display()));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &p)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io(e));
        }
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }

    pub fn find(&self, name: &str) -> Option<&SnapshotEntry> {
        self.snapshots.iter().find(|s| s.name == name)
    }
}

/// Snapshot names: what LVM allows in an LV name, minus what would clash with the volume's files.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 127 {
        return Err(format!("bad snapshot name {name:?}: 1 to 127 characters"));
    }
    if name.starts_with('-') || name.starts_with('.') {
        return Err(format!(
            "bad snapshot name {name:?}: must not start with '-' or '.'"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c))
    {
        return Err(format!(
            "bad snapshot name {name:?}: use letters, digits and + _ . - only"
        ));
    }
    if name == "origin" {
        return Err("bad snapshot name \"origin\": reserved for the origin".into());
    }
    Ok(())
}

/// An advisory `flock` on `DIR/.cowsnap.lock`, released when dropped (or when the process dies):
/// exclusive for commands that change the volume, shared for readers.
///
/// Writer preference: `flock` alone lets a stream of overlapping readers starve a writer forever.
/// So a writer first takes `DIR/.cowsnap.wlock` exclusively and keeps it while it waits for the
/// main lock; a reader takes the gate shared only while it waits for its own lock. A new reader
/// thus queues behind a waiting writer, the readers already in finish, and the writer gets in.
///
/// On a read-only file system the lock files cannot be created: readers open them read-only
/// (`flock` works on any descriptor) or, when they do not exist, go without (nothing can write
/// there anyway).
pub struct VolumeLock {
    _file: Option<File>,
}

/// The writers' gate, held while waiting for the main lock.
pub struct Gate {
    _file: Option<File>,
    /// The "waiting" message was printed.
    pub said: bool,
}

/// Says once that we wait for another process.
fn say_waiting(dir: &Path, quiet: bool, said: &mut bool) {
    if !*said && !quiet {
        eprintln!(
            "cowsnap: waiting for another cowsnap process using {}",
            dir.display()
        );
    }
    *said = true;
}

fn lock_op(exclusive: bool) -> libc::c_int {
    if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    }
}

/// Opens (creating it when we can) a lock file of `dir`; `None` on a read-only file system where
/// it does not exist, for a reader.
fn open_lock_file(dir: &Path, name: &str, exclusive: bool) -> Result<Option<File>, Error> {
    let p = dir.join(name);
    let err = |e: std::io::Error| Error::io(format!("cannot open lock file {}: {e}", p.display()));
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&p);
    match rw {
        Ok(f) => Ok(Some(f)),
        Err(e) if !exclusive && matches!(e.raw_os_error(), Some(libc::EROFS | libc::EACCES)) => {
            let ro = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&p);
            match ro {
                Ok(f) => Ok(Some(f)),
                Err(e2)
                    if e.raw_os_error() == Some(libc::EROFS)
                        && e2.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(None)
                }
                Err(e2) => Err(err(e2)),
            }
        }
        Err(e) => Err(err(e)),
    }
}

impl Gate {
    /// Passes the writers' gate: exclusive for a writer, shared for a reader. Hold the result until
    /// the main lock (or the mount daemon's socket) is reached.
    pub fn enter(dir: &Path, exclusive: bool, quiet: bool) -> Result<Self, Error> {
        let mut said = false;
        let file = open_lock_file(dir, WRITER_GATE, exclusive)?;
        if let Some(f) = &file {
            let op = lock_op(exclusive);
            if !flock(f, op | libc::LOCK_NB)? {
                say_waiting(dir, quiet, &mut said);
                flock(f, op)?;
            }
        }
        Ok(Gate { _file: file, said })
    }
}

impl VolumeLock {
    /// Takes the lock, exclusive for commands that change the volume, shared for readers. Waits
    /// (saying so on stderr unless `quiet`) while another process holds it.
    pub fn acquire(dir: &Path, exclusive: bool, quiet: bool) -> Result<Self, Error> {
        let gate = Gate::enter(dir, exclusive, quiet)?;
        let mut said = gate.said;
        let file = open_lock_file(dir, LOCK, exclusive)?;
        if let Some(f) = &file {
            let op = lock_op(exclusive);
            if !flock(f, op | libc::LOCK_NB)? {
                say_waiting(dir, quiet, &mut said);
                flock(f, op)?;
            }
        }
        drop(gate);
        Ok(VolumeLock { _file: file })
    }

    /// Takes the lock without waiting; `None` when another process holds it.
    pub fn try_acquire(dir: &Path, exclusive: bool) -> Result<Option<Self>, Error> {
        match open_lock_file(dir, LOCK, exclusive)? {
            Some(f) => Ok(flock(&f, lock_op(exclusive) | libc::LOCK_NB)?
                .then_some(VolumeLock { _file: Some(f) })),
            None => Ok(Some(VolumeLock { _file: None })),
        }
    }
}

/// Returns false when a non-blocking lock would block.
fn flock(file: &File, op: libc::c_int) -> Result<bool, Error> {
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        if r == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if op & libc::LOCK_NB != 0 => return Ok(false),
            _ => return Err(Error::io(format!("cannot lock volume: {e}"))),
        }
    }
}
