//! The client side of a managed volume: reach the `cowsnap mount` daemon that holds it (through its
//! control socket) or, when it is not mounted, take its lock.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::manifest::{Gate, VolumeLock};
use crate::{Error, Result};

/// Control socket of a mounted volume, inside the volume directory.
pub const SOCKET: &str = ".cowsnap.sock";
/// Log of a `--daemon` mount (its stdout and stderr), inside the volume directory.
pub const LOG: &str = ".cowsnap-mount.log";
/// How a managed command reaches its volume.
pub enum Access {
    /// The volume is mounted: talk to the mount process.
    Remote(UnixStream),
    /// Not mounted: the lock is ours, open the files.
    Local(VolumeLock),
}

/// Calls `f` with a path naming `DIR/.cowsnap.sock` that fits in a unix socket address (through
/// `/proc/self/fd` when the directory path is long).
pub fn with_socket_path<T>(dir: &Path, f: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    let p = dir.join(SOCKET);
    if p.as_os_str().len() < 100 {
        return f(&p);
    }
    let d = File::open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", d.as_raw_fd()));
    let r = f(&short);
    drop(d);
    r
}

/// Connects to the mount process of `dir`; `None` when the volume is not mounted.
pub fn try_connect(dir: &Path) -> Result<Option<UnixStream>> {
    if fs::symlink_metadata(dir.join(SOCKET)).is_err() {
        return Ok(None);
    }
    match with_socket_path(dir, |p| UnixStream::connect(p)) {
        Ok(s) => Ok(Some(s)),
        // A socket left by a mount process that died: the lock decides.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ECONNREFUSED) | Some(libc::ENOENT)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::msg(format!(
            "{} is mounted but its control socket {} refuses this process: {e}",
            dir.display(),
            dir.join(SOCKET).display()
        ))),
    }
}

/// The mount process's socket when the volume is mounted, else the volume lock (waiting for it while
/// another command holds it, and saying so unless `quiet`).
pub fn connect_or_lock(dir: &Path, exclusive: bool, quiet: bool) -> Result<Access> {
    // Held until we are in: a waiting writer keeps new readers out (writer preference).
    let gate = Gate::enter(dir, exclusive, quiet)?;
    let mut said = gate.said;
    loop {
        if let Some(s) = try_connect(dir)? {
            return Ok(Access::Remote(s));
        }
        if let Some(l) = VolumeLock::try_acquire(dir, exclusive)? {
            return Ok(Access::Local(l));
        }
        if !said && !quiet {
            eprintln!(
                "cowsnap: waiting for another cowsnap process using {}",
                dir.display()
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
