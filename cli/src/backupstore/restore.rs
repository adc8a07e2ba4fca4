//! `cowsnap restore URL --id ID --out PATH | --volume DIR`: a backup back to an image file, a
//! block device (written through, zeros included), or a new managed volume.
//!
//! Objects are fetched in parallel (bounded) and written in block order; each is checked against
//! its name before its bytes are written. A file output is written beside its destination and
//! renamed in place only once every block checked out; a new volume is removed again on failure.
//! So a missing or damaged object fails the restore and leaves no file or volume that looks whole.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use futures::StreamExt;
use tokio::runtime::Runtime;

use super::catalog::Manifest;
use super::location::Location;
use super::objects::{self, Hash};
use super::{read_manifest, runtime};
use crate::output::{Guard, Kind, Target};
use crate::progress::Progress;
use crate::size::human;
use crate::{CliError, CliResult};

/// Fetches and checks the object of block `b`.
async fn fetch(loc: &Location, m: &Manifest, b: u64, h: Hash) -> CliResult<Vec<u8>> {
    let path = loc.chunk(&h);
    let what = || format!("block {b} of backup {} (object {path})", m.id);
    let stored = match loc.store.get(&path).await {
        Ok(r) => r.bytes().await,
        Err(e) => Err(e),
    }
    .map_err(|e| match e {
        object_store::Error::NotFound { .. } => {
            CliError::corrupt(format!("{} is missing from the store", what()))
        }
        e => CliError::io(format!("{}: {e}", what())),
    })?;
    let want = m.block_len(b) as usize;
    let data = objects::decode(&h, &stored, want)
        .map_err(|e| CliError::corrupt(format!("{} is damaged: {e}", what())))?;
    if data.len() != want {
        return Err(CliError::corrupt(format!(
            "{} holds {} bytes, the block has {want}",
            what(),
            data.len()
        )));
    }
    Ok(data)
}

/// Streams every block in order to `sink(offset, bytes)`; zero blocks only when `zeros`.
fn stream_blocks(
    rt: &Runtime,
    loc: &Location,
    m: &Manifest,
    jobs: usize,
    zeros: bool,
    bar: &Progress,
    mut sink: impl FnMut(u64, &[u8]) -> CliResult,
) -> CliResult {
    let entries: Vec<(u64, Hash)> = m.entries().collect();
    let zero = vec![0u8; m.block_size as usize];
    rt.block_on(async {
        let mut fetched = futures::stream::iter(entries.iter().copied())
            .map(|(b, h)| async move { fetch(loc, m, b, h).await.map(|d| (b, d)) })
            .buffered(jobs);
        let mut next = 0u64; // first block not yet written
        let mut done = 0u64;
        // Zero blocks [from, to), for outputs that need their bytes.
        let zeros_between = |from: u64, to: u64, sink: &mut dyn FnMut(u64, &[u8]) -> CliResult| {
            if zeros {
                for z in from..to {
                    sink(z * m.block_size, &zero[..m.block_len(z) as usize])?;
                }
            }
            Ok::<(), CliError>(())
        };
        while let Some(r) = fetched.next().await {
            let (b, data) = r?;
            zeros_between(next, b, &mut sink)?;
            sink(b * m.block_size, &data)?;
            next = b + 1;
            done += data.len() as u64;
            bar.set(done);
        }
        zeros_between(next, m.blocks(), &mut sink)
    })
}

pub fn restore(
    url: &str,
    id: &str,
    out: Option<&Path>,
    volume: Option<&Path>,
    jobs: usize,
    quiet: bool,
) -> CliResult {
    super::catalog::check_id(id).map_err(CliError::msg)?;
    if jobs == 0 {
        return Err(CliError::msg("--jobs must be at least 1"));
    }
    let loc = Location::open(url, false)?;
    let rt = runtime()?;
    let m = read_manifest(&rt, &loc, id)?;
    let data_bytes: u64 = m.entries().map(|(b, _)| m.block_len(b)).sum();
    let bar = Progress::new(data_bytes, &format!("restore {id}"), true, quiet);
    let shown = match (out, volume) {
        (Some(p), None) => {
            let t = Target::classify(p, m.size, &Guard::new())?;
            // A new file is sparse: zero blocks are holes. A device or a stream gets every byte.
            let zeros = t.kind() != Kind::Replace;
            let mut w = t.open(m.size)?;
            stream_blocks(&rt, &loc, &m, jobs, zeros, &bar, |at, b| w.write_at(at, b))?;
            w.finish()?.commit()?;
            p.display().to_string()
        }
        (None, Some(dir)) => {
            to_volume(&rt, &loc, &m, dir, jobs, &bar)?;
            format!("the new volume {}", dir.display())
        }
        _ => {
            return Err(CliError::msg(
                "restore takes either --out PATH or --volume DIR",
            ))
        }
    };
    bar.finish();
    if !quiet {
        println!(
            "restored backup {id} ({} of {}/{}) to {shown}",
            human(m.size),
            m.volume,
            m.snapshot
        );
    }
    Ok(())
}

/// Restores into a new managed volume: created (sparse origin, the backup's chunk size), filled,
/// made durable; removed again if anything fails.
fn to_volume(
    rt: &Runtime,
    loc: &Location,
    m: &Manifest,
    dir: &Path,
    jobs: usize,
    bar: &Progress,
) -> CliResult {
    let existed = dir.exists();
    cowsnap_managed::volume::create_volume(dir, m.size, m.chunk_size, crate::access())?;
    let r = (|| {
        let origin = dir.join("origin.img");
        let f = OpenOptions::new()
            .write(true)
            .open(&origin)
            .map_err(|e| CliError::io(format!("{}: {e}", origin.display())))?;
        stream_blocks(rt, loc, m, jobs, false, bar, |at, b| {
            f.write_all_at(b, at)
                .map_err(|e| CliError::io(format!("{}: {e}", origin.display())))
        })?;
        f.sync_all()
            .map_err(|e| CliError::io(format!("{}: {e}", origin.display())))
    })();
    if r.is_err() {
        // Nothing half-restored stays behind: the volume did not exist before this command.
        if existed {
            for f in [
                "origin.img",
                crate::manifest::MANIFEST,
                crate::manifest::MANIFEST_TMP,
                crate::manifest::LOCK,
                crate::manifest::WRITER_GATE,
            ] {
                let _ = std::fs::remove_file(dir.join(f));
            }
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    r
}
