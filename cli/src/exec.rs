//! Runs a CLI request on an opened volume (here or in the mount daemon): the volume commands in the
//! managed-volume library, the image commands (backups, verify) here.

use std::path::Path;

use cowsnap_managed::exec::copy_out;
use cowsnap_managed::{Io, Opened};

use crate::progress::Progress;
use crate::request::{ImageRequest, Request};
use crate::size::human;
use crate::{CliError, CliResult};

/// Runs `req` (`v` opened writable when `req.writes()`).
pub fn exec(v: &mut Opened, req: &Request, io: &mut Io) -> CliResult {
    match req {
        Request::Volume(r) => cowsnap_managed::exec(v, r, io),
        Request::Image(r) => exec_image(v, r, io),
    }
}

/// Runs a request that only reads the volume.
pub fn exec_ro(v: &Opened, req: &Request, io: &mut Io) -> CliResult {
    match req {
        Request::Volume(r) => cowsnap_managed::exec_ro(v, r, io),
        Request::Image(r) => exec_image(v, r, io),
    }
}

fn exec_image(v: &Opened, req: &ImageRequest, io: &mut Io) -> CliResult {
    match req {
        ImageRequest::Backup { snap, out, sums } => exec_backup(v, snap, out, sums, io),
        ImageRequest::Verify { snap, sums } => crate::verify::exec_verify(v, snap, sums, io),
        ImageRequest::BackupTo { snap, to } => crate::backupstore::exec_backup(v, snap, to, io),
    }
}

fn exec_backup(
    v: &Opened,
    name: &str,
    out: &Path,
    sums: &crate::verify::SumsTo,
    io: &mut Io,
) -> CliResult {
    let id = v.id(name)?;
    let len = v.vol.len();
    let guard = crate::output::Guard::volume(&v.dir, &v.manifest, io.mountpoint.zip(io.mount_dev))?;
    let bar = Progress::new(len, &format!("backup {name}"), true, io.quiet);
    let r = crate::verify::write_backup(out, sums, len, &guard, |sink| {
        copy_out(v, Some(id), 0, len, &bar, sink)
    });
    bar.finish();
    let sums = r?;
    if !io.quiet {
        match sums {
            Some(s) => writeln!(
                io.out,
                "backed up {name} ({}) to {} (checksums: {})",
                human(len),
                out.display(),
                s.display()
            ),
            None => writeln!(
                io.out,
                "backed up {name} ({}) to {}",
                human(len),
                out.display()
            ),
        }
        .map_err(|e| CliError::msg(format!("stdout: {e}")))?;
    }
    Ok(())
}
