//! `cowsnap backups list | verify | prune URL`: what a store holds, whether it is whole, and
//! dropping old backups with the objects only they used.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use serde_json::json;
use tokio::runtime::Runtime;

use super::catalog::{self, Manifest};
use super::location::{store_err, Location};
use super::locks::Lock;
use super::objects::{self, parse_hex, Hash};
use super::{read_manifest, runtime};
use crate::size::human;
use crate::{CliError, CliResult};

/// Every object under `dir`.
fn list(
    rt: &Runtime,
    loc: &Location,
    dir: &object_store::path::Path,
) -> CliResult<Vec<ObjectMeta>> {
    rt.block_on(loc.store.list(Some(dir)).try_collect())
        .map_err(store_err(format!("listing {} in {}", dir, loc.shown)))
}

/// The ids of the backups in the store, oldest first.
fn backup_ids(rt: &Runtime, loc: &Location) -> CliResult<Vec<String>> {
    let mut ids: Vec<String> = list(rt, loc, &loc.backups_dir())?
        .into_iter()
        .filter_map(|m| m.location.filename().map(str::to_string))
        .filter(|n| catalog::check_id(n).is_ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// A manifest that cannot be read: its id and why.
type Unreadable = (String, String);

/// Every manifest, read and checked; the unreadable ones are returned with their error.
fn manifests(
    rt: &Runtime,
    loc: &Location,
    ids: &[String],
) -> CliResult<(Vec<Manifest>, Vec<Unreadable>)> {
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for id in ids {
        match read_manifest(rt, loc, id) {
            Ok(m) => good.push(m),
            Err(e) => bad.push((id.clone(), e.msg)),
        }
    }
    Ok((good, bad))
}

pub fn list_backups(url: &str, as_json: bool) -> CliResult {
    let loc = Location::open(url, false)?;
    let rt = runtime()?;
    let ids = backup_ids(&rt, &loc)?;
    let (ms, bad) = manifests(&rt, &loc, &ids)?;
    if as_json {
        let rows: Vec<_> = ms
            .iter()
            .map(|m| {
                json!({
                    "id": m.id,
                    "time": catalog::utc(m.created),
                    "created": m.created,
                    "volume": m.volume,
                    "snapshot": m.snapshot,
                    "size": m.size,
                    "block_size": m.block_size,
                    "base": m.base,
                    "new_bytes": m.bytes_uploaded,
                    "new_objects": m.new_objects,
                    "bytes_read": m.bytes_read,
                    "chunks": m.data_blocks(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        println!(
            "{:<30} {:<19} {:<20} {:>9} {:<30} {:>9}",
            "ID", "TIME (UTC)", "VOLUME/SNAPSHOT", "SIZE", "BASE", "NEW"
        );
        for m in &ms {
            println!(
                "{:<30} {:<19} {:<20} {:>9} {:<30} {:>9}",
                m.id,
                catalog::utc(m.created),
                format!("{}/{}", m.volume, m.snapshot),
                human(m.size),
                m.base.as_deref().unwrap_or("-"),
                human(m.bytes_uploaded)
            );
        }
    }
    report_bad(&bad)
}

fn report_bad(bad: &[Unreadable]) -> CliResult {
    for (id, e) in bad {
        eprintln!("cowsnap: backup {id}: {e}");
    }
    match bad.len() {
        0 => Ok(()),
        n => Err(CliError::corrupt(format!(
            "{n} backup manifest(s) cannot be read"
        ))),
    }
}

pub fn verify(url: &str, id: Option<&str>, jobs: usize, quiet: bool) -> CliResult {
    if jobs == 0 {
        return Err(CliError::msg("--jobs must be at least 1"));
    }
    let loc = Location::open(url, false)?;
    let rt = runtime()?;
    let (ms, bad) = match id {
        // One backup: a missing one is refused, a damaged manifest fails as damaged.
        Some(i) => (vec![read_manifest(&rt, &loc, i)?], Vec::new()),
        None => manifests(&rt, &loc, &backup_ids(&rt, &loc)?)?,
    };
    // Each object once, with the largest block it stands for (its bound when decompressing) and
    // the backups that need it.
    let mut need: HashMap<Hash, (u64, Vec<usize>)> = HashMap::new();
    for (i, m) in ms.iter().enumerate() {
        for (b, h) in m.entries() {
            let e = need.entry(h).or_insert((0, Vec::new()));
            e.0 = e.0.max(m.block_len(b));
            if e.1.last() != Some(&i) {
                e.1.push(i);
            }
        }
    }
    let bar = crate::progress::Progress::new(need.len() as u64, "verify", false, quiet);
    let problems: Vec<(Hash, String)> = rt.block_on(async {
        let loc = &loc;
        let mut checked = 0u64;
        let mut out = Vec::new();
        let mut s = futures::stream::iter(need.iter())
            .map(|(h, (max, _))| async move {
                let path = loc.chunk(h);
                let r = match loc.store.get(&path).await {
                    Ok(g) => g.bytes().await,
                    Err(e) => Err(e),
                };
                let problem = match r {
                    Err(object_store::Error::NotFound { .. }) => Some("missing".to_string()),
                    Err(e) => Some(format!("cannot be read: {e}")),
                    Ok(stored) => objects::decode(h, &stored, *max as usize)
                        .err()
                        .map(|e| format!("damaged: {e}")),
                };
                (*h, problem)
            })
            .buffer_unordered(jobs);
        while let Some((h, p)) = s.next().await {
            checked += 1;
            bar.set(checked);
            if let Some(p) = p {
                out.push((h, p));
            }
        }
        out
    });
    bar.finish();
    let mut hurt: BTreeMap<String, usize> = BTreeMap::new();
    for (h, p) in &problems {
        eprintln!("cowsnap: object {}: {p}", loc.chunk(h));
        for &i in &need[h].1 {
            *hurt.entry(ms[i].id.clone()).or_default() += 1;
        }
    }
    for (id, n) in &hurt {
        eprintln!(
            "cowsnap: backup {id} cannot be restored: {n} of its objects are missing or damaged"
        );
    }
    for (id, e) in &bad {
        eprintln!("cowsnap: backup {id}: {e}");
    }
    if problems.is_empty() && bad.is_empty() {
        if !quiet {
            println!(
                "verified {} backup(s): {} objects present and matching their hashes",
                ms.len(),
                need.len()
            );
        }
        return Ok(());
    }
    Err(CliError::corrupt(format!(
        "verify failed: {} damaged or missing object(s), {} unreadable manifest(s), {} backup(s) \
         affected",
        problems.len(),
        bad.len(),
        hurt.len() + bad.len()
    )))
}

pub fn prune(url: &str, keep: usize, grace: u64, quiet: bool) -> CliResult {
    if keep == 0 {
        return Err(CliError::msg(
            "--keep must be at least 1 (prune keeps the newest N backups of each volume)",
        ));
    }
    let loc = Location::open(url, false)?;
    let rt = runtime()?;
    let me = catalog::new_id();
    let mut lock = Lock::take(&rt, &loc, "prune", &me)?;
    let r = prune_locked(&rt, &loc, &mut lock, keep, grace, quiet);
    lock.release(&rt, &loc);
    r
}

fn prune_locked(
    rt: &Runtime,
    loc: &Location,
    lock: &mut Lock,
    keep: usize,
    grace: u64,
    quiet: bool,
) -> CliResult {
    // Read every manifest first: one that cannot be read might need any object, so nothing is
    // deleted then.
    let ids = backup_ids(rt, loc)?;
    let (ms, bad) = manifests(rt, loc, &ids)?;
    if !bad.is_empty() {
        for (id, e) in &bad {
            eprintln!("cowsnap: backup {id}: {e}");
        }
        return Err(CliError::corrupt(
            "prune refused: some manifests cannot be read, so what they need is unknown; nothing \
             was deleted (see `cowsnap backups verify`)",
        ));
    }
    // The newest `keep` of each volume stay.
    let mut by_volume: BTreeMap<&str, Vec<&Manifest>> = BTreeMap::new();
    for m in &ms {
        by_volume.entry(m.volume_key.as_str()).or_default().push(m);
    }
    let mut drop_ids = Vec::new();
    for list in by_volume.values_mut() {
        list.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        let n = list.len().saturating_sub(keep);
        drop_ids.extend(list[..n].iter().map(|m| m.id.clone()));
    }
    for id in &drop_ids {
        rt.block_on(loc.store.delete(&loc.backup(id)))
            .map_err(store_err(format!("deleting backup {id}")))?;
        if !quiet {
            println!("dropped backup {id}");
        }
    }
    // Mark: what the remaining backups (listed again: one may have been added meanwhile) need.
    let (live_backups, stale) = lock.others(rt, loc, "backup")?;
    let ids = backup_ids(rt, loc)?;
    let (ms, bad) = manifests(rt, loc, &ids)?;
    if !bad.is_empty() {
        return Err(CliError::corrupt(
            "prune stopped before deleting objects: a manifest cannot be read",
        ));
    }
    let marked: HashSet<Hash> = ms.iter().flat_map(|m| m.entries().map(|e| e.1)).collect();
    if !live_backups.is_empty() {
        if !quiet {
            println!(
                "dropped {} backup(s); no object deleted: a backup is running ({}, lock written \
                 {}s ago), it may be using any of them. Run prune again later.",
                drop_ids.len(),
                live_backups[0].name,
                live_backups[0].age
            );
        }
        return Ok(());
    }
    for s in stale {
        let _ = rt.block_on(loc.store.delete(&s.path));
    }
    // Sweep: objects nobody needs, older than the grace period (a backup killed a moment ago
    // resumes with them).
    let now = catalog::now() as i64;
    let (mut deleted, mut freed, mut young) = (0u64, 0u64, 0u64);
    for o in list(rt, loc, &loc.chunks_dir())? {
        let Some(h) = o.location.filename().and_then(parse_hex) else {
            continue; // not a chunk object: not ours to delete
        };
        if marked.contains(&h) {
            continue;
        }
        if ((now - o.last_modified.timestamp()).max(0) as u64) < grace {
            young += 1;
            continue;
        }
        rt.block_on(loc.store.delete(&o.location))
            .map_err(store_err(format!("deleting {}", o.location)))?;
        deleted += 1;
        freed += o.size;
        lock.refresh(rt, loc)?;
    }
    if !quiet {
        println!(
            "dropped {} backup(s), kept {}; deleted {deleted} unreferenced object(s) ({}); kept \
             {young} unreferenced object(s) younger than {grace}s",
            drop_ids.len(),
            ms.len(),
            human(freed)
        );
    }
    Ok(())
}
