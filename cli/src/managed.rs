//! The managed-volume commands (`snapshot`, `lvs`, `write`, `read`, `remove`, `merge`, `extend`,
//! `backup`, `verify`, `create`): arguments made into a [`Request`], sent to the mount daemon when
//! the volume is mounted, else run here under the volume's lock (see `cowsnap_managed`).

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use cowsnap_managed::client::{connect_or_lock, Access};
use cowsnap_managed::exec::{io_err, Request as VolumeRequest};
use cowsnap_managed::manifest::Manifest;
use cowsnap_managed::protocol;
use cowsnap_managed::volume::{resolve, resolve_snapshot, Opened};
use cowsnap_managed::Io;

use crate::exec::exec;
use crate::request::{ImageRequest, Request};
use crate::size::{human, SizeArg};
use crate::{CliError, CliResult};

/// Runs `req` on the volume in `dir`: forwarded to the `cowsnap mount` daemon when the volume is
/// mounted (the daemon holds it open and locked), else on the files directly under the lock.
pub fn dispatch(dir: &Path, req: impl Into<Request>, quiet: bool) -> CliResult {
    dispatch_with_input(dir, req.into(), quiet, None)
}

/// [`dispatch`] with the data of `write --from`.
fn dispatch_with_input(
    dir: &Path,
    req: Request,
    quiet: bool,
    mut input: Option<File>,
) -> CliResult {
    // Check first, so that a wrong path never gets a lock file.
    Manifest::load(dir)?;
    match connect_or_lock(dir, req.writes(), quiet)? {
        Access::Remote(stream) => protocol::call(stream, &req, quiet, input),
        Access::Local(lock) => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let mut io = Io {
                out: &mut out,
                input: input.as_mut().map(|f| f as &mut dyn Read),
                quiet,
                mountpoint: None,
                mount_dev: None,
                mount: None,
            };
            let mut v = Opened::open_locked(dir, req.writes(), quiet, lock, crate::access())?;
            exec(&mut v, &req, &mut io)
        }
    }
}

/// Makes a path given on the command line absolute (the mount daemon has its own working directory).
fn absolute(p: &Path) -> CliResult<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd =
        std::env::current_dir().map_err(|e| CliError::msg(format!("current directory: {e}")))?;
    Ok(cwd.join(p))
}

pub fn snapshot(
    dir: &Path,
    name: &str,
    size: u64,
    store: &str,
    autoextend: Option<&str>,
    chunk_size: Option<u64>,
    quiet: bool,
) -> CliResult {
    let req = VolumeRequest::Snapshot {
        name: name.into(),
        size,
        store: store.into(),
        autoextend: autoextend.map(Into::into),
        chunk_size,
    };
    dispatch(dir, req, quiet)
}

pub fn lvs(dir: &Path, json: bool, quiet: bool) -> CliResult {
    dispatch(dir, VolumeRequest::Lvs { json }, quiet)
}

pub fn write(
    target: &Path,
    offset: u64,
    fill: Option<u8>,
    from: Option<&Path>,
    len: Option<u64>,
    quiet: bool,
) -> CliResult {
    let t = resolve(target)?;
    let from = from.map(absolute).transpose()?;
    let len = match (len, &from) {
        (Some(l), _) => l,
        (None, Some(p)) => fs::metadata(p).map_err(io_err(p))?.len(),
        (None, None) => return Err(CliError::msg("--fill needs --len")),
    };
    // Opened here: a mounted volume gets the data through its socket, not the path.
    let input = from
        .as_deref()
        .map(|p| File::open(p).map_err(io_err(p)))
        .transpose()?;
    let req = VolumeRequest::Write {
        snap: t.snap,
        offset,
        fill,
        from,
        len,
    };
    dispatch_with_input(&t.dir, req.into(), quiet, input)
}

pub fn read(target: &Path, offset: u64, len: u64, out: Option<&Path>, quiet: bool) -> CliResult {
    let t = resolve(target)?;
    let req = VolumeRequest::Read {
        snap: t.snap,
        offset,
        len,
        out: out.map(absolute).transpose()?,
    };
    dispatch(&t.dir, req, quiet)
}

pub fn remove(target: &Path, force: bool, quiet: bool) -> CliResult {
    let (dir, snap) = resolve_snapshot(target)?;
    dispatch(&dir, VolumeRequest::Remove { snap, force }, quiet)
}

pub fn merge(target: &Path, quiet: bool) -> CliResult {
    let (dir, snap) = resolve_snapshot(target)?;
    dispatch(&dir, VolumeRequest::Merge { snap }, quiet)
}

pub fn extend(target: &Path, size: SizeArg, quiet: bool) -> CliResult {
    let (dir, snap) = resolve_snapshot(target)?;
    dispatch(&dir, VolumeRequest::Extend { snap, size }, quiet)
}

pub fn backup(target: &Path, out: &Path, sums: crate::verify::SumsTo, quiet: bool) -> CliResult {
    let (dir, snap) = resolve_snapshot(target)?;
    let out = absolute(out)?;
    let sums = match sums {
        crate::verify::SumsTo::Path(p) => crate::verify::SumsTo::Path(absolute(&p)?),
        s => s,
    };
    dispatch(&dir, ImageRequest::Backup { snap, out, sums }, quiet)
}

/// `backup DIR/NAME --to URL`.
pub fn backup_to(target: &Path, to: crate::backupstore::BackupTo, quiet: bool) -> CliResult {
    let (dir, snap) = resolve_snapshot(target)?;
    dispatch(&dir, ImageRequest::BackupTo { snap, to }, quiet)
}

pub fn verify(target: &Path, sums: &Path, quiet: bool) -> CliResult {
    let (dir, snap) = resolve_snapshot(target)?;
    let sums = absolute(sums)?;
    dispatch(&dir, ImageRequest::Verify { snap, sums }, quiet)
}

/// `cowsnap create DIR --size N`.
pub fn create(dir: &Path, size: u64, chunk_size: u64, quiet: bool) -> CliResult {
    cowsnap_managed::volume::create_volume(dir, size, chunk_size, crate::access())?;
    if !quiet {
        println!(
            "created volume {} (origin {}, chunk size {})",
            dir.display(),
            human(size),
            human(chunk_size)
        );
    }
    Ok(())
}
