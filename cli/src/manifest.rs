//! The manifest of a managed volume (`DIR/cowsnap.json`), its atomic update, and the volume lock.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::CliError;

/// File name of the manifest inside a volume directory.
pub const MANIFEST: &str = "cowsnap.json";
/// File name of the lock file inside a volume directory.
pub const LOCK: &str = ".cowsnap.lock";
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
    pub fn load(dir: &Path) -> Result<Self, CliError> {
        let p = Self::path(dir);
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CliError::msg(format!(
                    "{} is not a cowsnap volume: missing manifest {}",
                    dir.display(),
                    p.display()
                )))
            }
            Err(e) => return Err(CliError::msg(format!("cannot read {}: {e}", p.display()))),
        };
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| CliError::msg(format!("corrupt manifest {}: {e}", p.display())))?;
        if m.format != FORMAT {
            return Err(CliError::msg(format!(
                "manifest {} has format {}, this cowsnap understands {FORMAT}",
                p.display(),
                m.format
            )));
        }
        for s in &m.snapshots {
            check_name(&s.name)
                .map_err(|e| CliError::msg(format!("corrupt manifest {}: {e}", p.display())))?;
        }
        if let Some(n) = &m.merging {
            if m.find(n).is_none() {
                return Err(CliError::msg(format!(
                    "corrupt manifest {}: merging snapshot {n:?} is not listed",
                    p.display()
                )));
            }
        }
        Ok(m)
    }

    /// Writes the manifest atomically: a temporary file, fsync, rename, fsync of the directory.
    pub fn save(&self, dir: &Path) -> Result<(), CliError> {
        let p = Self::path(dir);
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| CliError::msg(format!("cannot encode manifest: {e}")))?;
        let io = |e: std::io::Error| CliError::msg(format!("cannot write {}: {e}", p.display()));
        {
            let mut f = File::create(&tmp).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.write_all(b"\n").map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        fs::rename(&tmp, &p).map_err(io)?;
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

/// An advisory `flock` on `DIR/.cowsnap.lock`, released when dropped (or when the process dies).
pub struct VolumeLock {
    _file: File,
}

impl VolumeLock {
    /// Takes the lock, exclusive for commands that change the volume, shared for readers. Waits
    /// (saying so on stderr unless `quiet`) while another process holds it.
    pub fn acquire(dir: &Path, exclusive: bool, quiet: bool) -> Result<Self, CliError> {
        let (file, op) = Self::open(dir, exclusive)?;
        if !flock(&file, op | libc::LOCK_NB)? {
            if !quiet {
                eprintln!(
                    "cowsnap: waiting for another cowsnap process using {}",
                    dir.display()
                );
            }
            flock(&file, op)?;
        }
        Ok(VolumeLock { _file: file })
    }

    /// The lock file and the `flock` operation for the wanted mode.
    fn open(dir: &Path, exclusive: bool) -> Result<(File, libc::c_int), CliError> {
        let p = dir.join(LOCK);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .map_err(|e| CliError::msg(format!("cannot open lock file {}: {e}", p.display())))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        Ok((file, op))
    }
}

impl VolumeLock {
    /// Takes the lock without waiting; `None` when another process holds it.
    pub fn try_acquire(dir: &Path, exclusive: bool) -> Result<Option<Self>, CliError> {
        let (file, op) = Self::open(dir, exclusive)?;
        Ok(flock(&file, op | libc::LOCK_NB)?.then_some(VolumeLock { _file: file }))
    }
}

/// Returns false when a non-blocking lock would block.
fn flock(file: &File, op: libc::c_int) -> Result<bool, CliError> {
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
            _ => return Err(CliError::msg(format!("cannot lock volume: {e}"))),
        }
    }
}
