//! `cowsnap backup VOL/SNAP --to URL [--base ID]`: a snapshot's blocks to the store.
//!
//! A full backup reads every block that can hold data: the origin file's data extents (holes of a
//! sparse origin read as zero and are skipped) and the snapshot's own exceptions. An incremental
//! one reads only the blocks where the base's snapshot and this one may differ (their exception
//! tables, `Volume::changed_between`) and takes every other block's object from the base's
//! manifest. Zero blocks get no object. Each non-zero block is hashed here; its object is looked
//! for (HEAD) and, if missing, compressed and uploaded by a bounded set of parallel tasks. The
//! manifest is written last: a backup killed before it leaves objects (reused by the next run,
//! which finds them) and no backup.

use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cowsnap_core::{SnapshotId, SnapshotState};
use futures::TryStreamExt;
use object_store::{ObjectStore, PutPayload};
use serde_json::json;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

use super::catalog::{self, Manifest, FORMAT, MAX_BLOCK, MIN_BLOCK};
use super::location::{store_err, Location};
use super::locks::{Lock, STALE};
use super::objects::{self, Hash};
use super::{read_manifest, runtime};
use crate::progress::Progress;
use crate::size::human;
use crate::{CliError, CliResult};
use cowsnap_managed::{Io, Opened};

/// Default bytes per block object: the snapshot's chunk size, but at least this (per-object
/// request costs dominate below it; above it one changed chunk re-uploads more).
pub const DEFAULT_BLOCK: u64 = 256 << 10;

/// Backups of this many blocks or more list the stored objects once instead of asking for each.
const LIST_FROM_BLOCKS: u64 = 1000;

/// Test hook: abort the process (as `kill -9` would) after this many uploads.
const ABORT_AFTER_PUTS: &str = "COWSNAP_TEST_ABORT_AFTER_PUTS";

/// Options of `backup --to`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BackupTo {
    pub to: String,
    pub base: Option<String>,
    pub json: bool,
    pub block_size: Option<u64>,
    pub jobs: usize,
}

/// What identifies a file: a snapshot's COW removed and made again under the same name is another.
fn file_key(p: &Path) -> CliResult<String> {
    let m = std::fs::metadata(p).map_err(|e| CliError::io(format!("{}: {e}", p.display())))?;
    let born = m
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(format!("{}:{}:{born}", m.dev(), m.ino()))
}

/// What identifies a snapshot: its uid (older manifests have none: then its COW file's identity,
/// weaker, as an inode number can be reused).
fn snapshot_key(v: &Opened, e: &crate::manifest::SnapshotEntry) -> CliResult<String> {
    match &e.uid {
        Some(u) => Ok(format!("uid:{u}")),
        None => file_key(&v.dir.join(&e.cow)),
    }
}

/// The data extents of a regular file (`SEEK_DATA`/`SEEK_HOLE`), or `None` when the file system
/// cannot tell (then everything is read).
fn data_extents(p: &Path, len: u64) -> Option<Vec<(u64, u64)>> {
    let f = std::fs::File::open(p).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut at: i64 = 0;
    while (at as u64) < len {
        // SAFETY: lseek on a descriptor we own.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENXIO) => Some(out), // no data past `at`
                _ => None,
            };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return None;
        }
        let end = (hole as u64).min(len);
        if end > data as u64 {
            out.push((data as u64, end - data as u64));
        }
        at = hole;
    }
    Some(out)
}

/// Byte ranges to sorted, merged block ranges `[first, end)`.
fn blocks_of(
    ranges: impl IntoIterator<Item = (u64, u64)>,
    block: u64,
    blocks: u64,
) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = ranges
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .map(|(a, n)| (a / block, (a + n).div_ceil(block).min(blocks)))
        .filter(|&(a, b)| a < b)
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some((_, e)) if a <= *e => *e = (*e).max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn in_ranges(r: &[(u64, u64)], b: u64) -> bool {
    let i = r.partition_point(|&(_, end)| end <= b);
    i < r.len() && r[i].0 <= b
}

/// Counters and the first error of the upload tasks.
#[derive(Default)]
struct Uploads {
    bytes: AtomicU64,
    objects: AtomicU64,
    error: Mutex<Option<String>>,
}

impl Uploads {
    fn failed(&self) -> bool {
        self.error.lock().map(|e| e.is_some()).unwrap_or(true)
    }
    fn fail(&self, e: String) {
        if let Ok(mut g) = self.error.lock() {
            g.get_or_insert(e);
        }
    }
}

/// Stores one block unless its object exists.
async fn put_block(
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
    data: Vec<u8>,
    look_first: bool,
    up: Arc<Uploads>,
    abort_after: Option<u64>,
) -> Result<(), String> {
    if look_first {
        match store.head(&path).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(format!("looking for {path}: {e}")),
        }
    }
    let stored = tokio::task::spawn_blocking(move || objects::encode(&data))
        .await
        .map_err(|e| e.to_string())??;
    let n = stored.len() as u64;
    store
        .put(&path, PutPayload::from(stored))
        .await
        .map_err(|e| format!("uploading {path}: {e}"))?;
    up.bytes.fetch_add(n, Ordering::Relaxed);
    let done = up.objects.fetch_add(1, Ordering::Relaxed) + 1;
    if abort_after.is_some_and(|a| done >= a) {
        std::process::abort();
    }
    Ok(())
}

pub fn exec_backup(v: &Opened, name: &str, a: &BackupTo, io: &mut Io) -> CliResult {
    let started = Instant::now();
    let id = v.id(name)?;
    let st = v.vol.snapshot_status(id)?;
    match st.state {
        SnapshotState::Invalid => {
            return Err(CliError::core(name, cowsnap_core::Error::SnapshotInvalid))
        }
        SnapshotState::Merging => return Err(CliError::core(name, cowsnap_core::Error::Merging)),
        _ => {}
    }
    if a.jobs == 0 {
        return Err(CliError::msg("--jobs must be at least 1"));
    }
    let size = v.vol.len();
    let entry = &v.manifest.snapshots[v.index(name)?];
    let snapshot_key = snapshot_key(v, entry)?;
    let origin = v.dir.join(&v.manifest.origin);
    let canon = std::fs::canonicalize(&v.dir).unwrap_or_else(|_| v.dir.clone());
    let volume_key = format!("{}@{}", canon.display(), file_key(&origin)?);
    let volume = canon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    let loc = Location::open(&a.to, true)?;
    let rt = runtime()?;
    let base = a
        .base
        .as_deref()
        .map(|b| base_of(v, &rt, &loc, b, &volume_key, size))
        .transpose()?;
    let block = match (&base, a.block_size) {
        (Some((m, _)), Some(b)) if b != m.block_size => {
            return Err(CliError::refused(format!(
                "--block-size {} differs from the base backup's ({}): an incremental backup uses \
                 its base's block size",
                human(b),
                human(m.block_size)
            )))
        }
        (Some((m, _)), _) => m.block_size,
        (None, Some(b)) => b,
        (None, None) => st.chunk_bytes.max(DEFAULT_BLOCK),
    };
    if !block.is_power_of_two() || !(MIN_BLOCK..=MAX_BLOCK).contains(&block) {
        return Err(CliError::msg(format!(
            "--block-size must be a power of two from {} to {}",
            human(MIN_BLOCK),
            human(MAX_BLOCK)
        )));
    }
    let blocks = size.div_ceil(block);
    let to_read = match &base {
        Some((_, base_id)) => blocks_of(
            v.vol
                .changed_between(*base_id, id)
                .map_err(|e| CliError::core("changed chunks", e))?,
            block,
            blocks,
        ),
        None => {
            let cs = st.chunk_bytes;
            let own = v
                .vol
                .changed_chunks(id)
                .map_err(|e| CliError::core("changed chunks", e))?;
            let own = own.into_iter().map(|(c, n)| (c * cs, n * cs));
            match data_extents(&origin, size) {
                Some(ext) => blocks_of(ext.into_iter().chain(own), block, blocks),
                None => vec![(0, blocks)],
            }
        }
    };
    let block_len = |b: u64| block.min(size - b * block);
    let total: u64 = to_read
        .iter()
        .map(|&(x, y)| (x..y).map(block_len).sum::<u64>())
        .sum();

    let backup_id = catalog::new_id();
    let mut lock = Lock::take(&rt, &loc, "backup", &backup_id)?;
    let r = (|| -> CliResult<Manifest> {
        wait_for_prune(&rt, &loc, &mut lock, io.quiet)?;
        let bar = Progress::new(total, &format!("backup {name}"), true, io.quiet);
        let r = upload(
            v, id, &rt, &loc, &mut lock, &to_read, block, size, a.jobs, &bar,
        );
        bar.finish();
        let (mut entries, bytes_read, up) = r?;
        if let Some((m, _)) = &base {
            entries.extend(m.entries().filter(|&(b, _)| !in_ranges(&to_read, b)));
            entries.sort_unstable_by_key(|e| e.0);
        }
        let m = Manifest {
            format: FORMAT,
            id: backup_id.clone(),
            created: catalog::now(),
            volume: volume.clone(),
            volume_key: volume_key.clone(),
            snapshot: name.to_string(),
            snapshot_key: snapshot_key.clone(),
            size,
            chunk_size: st.chunk_bytes,
            block_size: block,
            base: base.as_ref().map(|(m, _)| m.id.clone()),
            bytes_read,
            bytes_uploaded: up.bytes.load(Ordering::Relaxed),
            new_objects: up.objects.load(Ordering::Relaxed),
            map: Manifest::runs_of(&entries),
        };
        let enc = m.encode().map_err(CliError::msg)?;
        rt.block_on(
            loc.store
                .put(&loc.backup(&backup_id), PutPayload::from(enc)),
        )
        .map_err(store_err(format!(
            "writing the manifest of backup {backup_id}"
        )))?;
        Ok(m)
    })();
    lock.release(&rt, &loc);
    let m = r?;
    let secs = started.elapsed().as_secs_f64();
    let doc = json!({
        "id": m.id,
        "bytes_read": m.bytes_read,
        "bytes_uploaded": m.bytes_uploaded,
        "chunks": m.data_blocks(),
        "chunks_uploaded": m.new_objects,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "base": m.base,
        "block_size": m.block_size,
        "size": m.size,
    });
    let out = if a.json {
        doc.to_string()
    } else {
        if !io.quiet {
            eprintln!(
                "cowsnap: backed up {name} ({}): read {}, uploaded {} in {} new objects, {secs:.1}s",
                human(size),
                human(m.bytes_read),
                human(m.bytes_uploaded),
                m.new_objects
            );
        }
        m.id.clone()
    };
    writeln!(io.out, "{out}").map_err(|e| CliError::msg(format!("stdout: {e}")))
}

/// The base backup of an incremental one, and the snapshot it was made of (which must still be
/// here, the very same one, in this volume).
fn base_of(
    v: &Opened,
    rt: &Runtime,
    loc: &Location,
    base: &str,
    volume_key: &str,
    size: u64,
) -> CliResult<(Manifest, SnapshotId)> {
    let m = read_manifest(rt, loc, base)?;
    let refuse = |why: String| {
        CliError::refused(format!(
            "cannot back up incrementally against {base}: {why}; make a full backup (without --base)"
        ))
    };
    if m.volume_key != volume_key {
        return Err(refuse(format!(
            "it is a backup of another volume ({})",
            m.volume
        )));
    }
    if m.size != size {
        return Err(refuse(format!(
            "the volume was {} then, {} now",
            m.size, size
        )));
    }
    let Some(i) = v
        .manifest
        .snapshots
        .iter()
        .position(|s| s.name == m.snapshot)
    else {
        return Err(refuse(format!(
            "its snapshot {} no longer exists (the base's snapshot must be kept: its exception \
             table names what changed since)",
            m.snapshot
        )));
    };
    if snapshot_key(v, &v.manifest.snapshots[i])? != m.snapshot_key {
        return Err(refuse(format!(
            "snapshot {} is not the one that backup was made of (removed and made again?)",
            m.snapshot
        )));
    }
    let id = v.id(&m.snapshot)?;
    Ok((m, id))
}

fn wait_for_prune(rt: &Runtime, loc: &Location, lock: &mut Lock, quiet: bool) -> CliResult {
    let start = Instant::now();
    let mut told = false;
    loop {
        let (live, _) = lock.others(rt, loc, "prune")?;
        if live.is_empty() {
            return Ok(());
        }
        if start.elapsed().as_secs() > STALE {
            return Err(CliError::msg(format!(
                "a prune ({}) has held {} for over {STALE}s; try again later",
                live[0].name, loc.shown
            )));
        }
        if !quiet && !told {
            eprintln!("cowsnap: waiting for a prune of {} to end", loc.shown);
            told = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        lock.refresh(rt, loc)?;
    }
}

/// The non-zero blocks read with their objects, the bytes read, and the upload counters.
type Uploaded = (Vec<(u64, Hash)>, u64, Arc<Uploads>);

/// Reads the blocks of `ranges`, hashes them and uploads the missing ones; returns the non-zero
/// blocks read with their objects, the bytes read and the upload counters.
#[allow(clippy::too_many_arguments)]
fn upload(
    v: &Opened,
    id: SnapshotId,
    rt: &Runtime,
    loc: &Location,
    lock: &mut Lock,
    ranges: &[(u64, u64)],
    block: u64,
    size: u64,
    jobs: usize,
    bar: &Progress,
) -> CliResult<Uploaded> {
    let up = Arc::new(Uploads::default());
    let sem = Arc::new(Semaphore::new(jobs));
    let abort_after = std::env::var(ABORT_AFTER_PUTS)
        .ok()
        .and_then(|s| s.parse().ok());
    // Which objects exist: for a large backup, one listing of the store (a page holds 1000
    // names) instead of one HEAD request per block; for a small one, HEAD each.
    let blocks: u64 = ranges.iter().map(|&(a, b)| b - a).sum();
    let mut seen: HashSet<Hash> = HashSet::new();
    let listed = blocks >= LIST_FROM_BLOCKS;
    if listed {
        // Streamed: only the 32-byte names are kept, not the listing's metadata.
        let dir = loc.chunks_dir();
        rt.block_on(loc.store.list(Some(&dir)).try_for_each(|m| {
            if let Some(h) = m.location.filename().and_then(objects::parse_hex) {
                seen.insert(h);
            }
            futures::future::ready(Ok(()))
        }))
        .map_err(store_err("listing the stored objects"))?;
    }
    let mut entries = Vec::new();
    let mut buf = vec![0u8; block as usize];
    let mut read = 0u64;
    'all: for &(first, end) in ranges {
        for b in first..end {
            if up.failed() {
                break 'all;
            }
            let len = block.min(size - b * block) as usize;
            let data = &mut buf[..len];
            v.vol
                .snapshot_read_at(id, b * block, data)
                .map_err(|e| CliError::core(format!("read at offset {}", b * block), e))?;
            read += len as u64;
            bar.set(read);
            if crate::output::is_zero(data) {
                continue;
            }
            let h = objects::hash(data);
            entries.push((b, h));
            if !seen.insert(h) {
                continue;
            }
            let permit = rt
                .block_on(sem.clone().acquire_owned())
                .map_err(|e| CliError::msg(e.to_string()))?;
            let task = put_block(
                loc.store.clone(),
                loc.chunk(&h),
                data.to_vec(),
                !listed,
                up.clone(),
                abort_after,
            );
            let up2 = up.clone();
            rt.spawn(async move {
                if let Err(e) = task.await {
                    up2.fail(e);
                }
                drop(permit);
            });
            lock.refresh(rt, loc)?;
        }
    }
    // Every task done (each holds a permit until it ends).
    rt.block_on(sem.acquire_many(jobs as u32))
        .map_err(|e| CliError::msg(e.to_string()))?
        .forget();
    if let Some(e) = up.error.lock().ok().and_then(|g| g.clone()) {
        return Err(CliError::io(format!("backup not made: {e}")));
    }
    Ok((entries, read, up))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ranges() {
        let r = blocks_of(
            [(0, 1), (4096, 10), (3 * 65536 - 1, 2), (10 << 20, 5)],
            65536,
            100,
        );
        assert_eq!(r, vec![(0, 1), (2, 4)]);
        assert!(in_ranges(&r, 0) && in_ranges(&r, 3) && !in_ranges(&r, 1) && !in_ranges(&r, 4));
    }
}
