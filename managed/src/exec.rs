//! Request execution: the commands on a managed volume, run the same way in a command's own
//! process or in the `cowsnap mount` daemon that holds the volume open (see [`crate::protocol`]).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use cowsnap_core::store::parse_store;
use cowsnap_core::{Autoextend, SnapshotId, SnapshotState, StoreKind};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::files::{self, FileId, MAX_FILE_SIZE};
use crate::manifest::{check_name, AutoextendSpec, Manifest, SnapshotEntry};
use crate::progress::Progress;
use crate::size::{human, SizeArg};
use crate::volume::{entry_options, Opened, COW_SUFFIX, TMP_SUFFIX};
use crate::{Error, Result};

/// `println!` to a command's output (stdout here, the client's stdout when run by the mount daemon).
macro_rules! outln {
    ($io:expr, $($arg:tt)*) => {
        writeln!($io.out, $($arg)*).map_err(|e| Error::msg(format!("stdout: {e}")))?
    };
}

/// Bytes moved per step by read, write, backup.
pub const STEP: u64 = 1 << 20;

/// A command on a managed volume, with every path already absolute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Snapshot {
        name: String,
        size: u64,
        store: String,
        autoextend: Option<String>,
        chunk_size: Option<u64>,
    },
    Lvs {
        json: bool,
    },
    Write {
        snap: Option<String>,
        offset: u64,
        fill: Option<u8>,
        from: Option<PathBuf>,
        len: u64,
    },
    Read {
        snap: Option<String>,
        offset: u64,
        len: u64,
        out: Option<PathBuf>,
    },
    Remove {
        snap: String,
        /// Drop a broken snapshot from the manifest.
        #[serde(default)]
        force: bool,
    },
    Merge {
        snap: String,
    },
    Extend {
        snap: String,
        size: SizeArg,
    },
}

impl Request {
    /// True when the command changes the volume (exclusive lock; the daemon's write lock).
    pub fn writes(&self) -> bool {
        !matches!(self, Request::Lvs { .. } | Request::Read { .. })
    }
}

/// What a mounted volume (`cowsnap mount`) needs to know about commands it runs for clients.
pub trait MountHooks {
    /// Refuses to remove a snapshot whose file is open under the mount point.
    fn check_removable(&self, id: SnapshotId, name: &str) -> Result;
    /// A snapshot is gone: forget its directory entry.
    fn removed(&self, id: SnapshotId, name: &str);
    /// The origin (`None`) or a snapshot was written behind the kernel's page cache.
    fn changed(&self, id: Option<SnapshotId>);
}

/// Where a command writes its output, and the mount it runs in, if any.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    /// The data of `write --from` (the file here; frames from the client in the mount process).
    pub input: Option<&'a mut dyn Read>,
    pub quiet: bool,
    pub mountpoint: Option<&'a Path>,
    /// The device number of the mount's file system, read by the mount process before the
    /// command took the volume's lock: a `stat` of the mount point from inside the command would
    /// ask the FUSE threads, which may be waiting for that lock.
    pub mount_dev: Option<u64>,
    pub mount: Option<&'a dyn MountHooks>,
}

impl Io<'_> {
    fn changed(&self, id: Option<SnapshotId>) {
        if let Some(m) = self.mount {
            m.changed(id);
        }
    }
}

/// Runs a command that only reads the volume.
pub fn exec_ro(v: &Opened, req: &Request, io: &mut Io) -> Result {
    match req {
        Request::Lvs { json } => exec_lvs(v, *json, io),
        Request::Read {
            snap,
            offset,
            len,
            out,
        } => exec_read(v, snap.as_deref(), *offset, *len, out.as_deref(), io),
        _ => Err(Error::msg(
            "internal error: a writing command on a read-only volume",
        )),
    }
}

/// Runs any command on an opened volume (opened writable for commands that write).
pub fn exec(v: &mut Opened, req: &Request, io: &mut Io) -> Result {
    match req {
        Request::Snapshot {
            name,
            size,
            store,
            autoextend,
            chunk_size,
        } => exec_snapshot(
            v,
            name,
            *size,
            store,
            autoextend.as_deref(),
            *chunk_size,
            io,
        ),
        Request::Write {
            snap,
            offset,
            fill,
            from,
            len,
        } => exec_write(
            v,
            snap.as_deref(),
            *offset,
            *fill,
            from.as_deref(),
            *len,
            io,
        ),
        Request::Remove { snap, force } => exec_remove(v, snap, *force, io),
        Request::Merge { snap } => exec_merge(v, snap, io),
        Request::Extend { snap, size } => exec_extend(v, snap, *size, io),
        _ => exec_ro(v, req, io),
    }
}

fn parse_autoextend(s: &str) -> Result<Option<AutoextendSpec>> {
    if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let bad = || {
        Error::msg(format!(
            "bad --autoextend {s:?}: expected THRESHOLD:PERCENT like 70:20, or off"
        ))
    };
    let (t, p) = s.split_once(':').ok_or_else(bad)?;
    let spec = AutoextendSpec {
        threshold_percent: t.trim().trim_end_matches('%').parse().map_err(|_| bad())?,
        extend_percent: p.trim().trim_end_matches('%').parse().map_err(|_| bad())?,
    };
    Autoextend {
        threshold_percent: spec.threshold_percent,
        extend_percent: spec.extend_percent,
    }
    .validate()
    .map_err(|e| Error::core("--autoextend", e))?;
    Ok(Some(spec))
}

/// A snapshot's unique id: a hash of where, what and when (nanoseconds) it was made.
fn new_uid(dir: &Path, name: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!(
        "{}:{name}:{}:{}",
        dir.display(),
        t.as_nanos(),
        std::process::id()
    );
    blake3::hash(seed.as_bytes()).to_hex()[..32].to_string()
}

fn exec_snapshot(
    v: &mut Opened,
    name: &str,
    size: u64,
    store: &str,
    autoextend: Option<&str>,
    chunk_size: Option<u64>,
    io: &mut Io,
) -> Result {
    check_name(name).map_err(Error::msg)?;
    let (kind, _) = parse_store(store).map_err(|e| Error::core("--store", e))?;
    if kind == StoreKind::Transient {
        return Err(Error::msg(
            "--store N (transient) is not available for managed volumes: its exceptions live only \
             in memory and would be lost when this command exits; use P or PO",
        ));
    }
    let autoextend = autoextend.map(parse_autoextend).transpose()?.flatten();
    if v.manifest.find(name).is_some() {
        return Err(Error::msg(format!(
            "snapshot {name:?} already exists in {}",
            v.dir.display()
        ))
        .with_code(crate::Code::Exists));
    }
    let chunk = chunk_size.unwrap_or(v.manifest.chunk_size);
    let entry = SnapshotEntry {
        name: name.into(),
        cow: format!("{name}.cow"),
        store: store.to_ascii_uppercase(),
        chunk_size: chunk,
        autoextend,
        uid: Some(new_uid(&v.dir, name)),
    };
    let opts = entry_options(&entry)?;
    // The core's rule, as every front end applies it (a COW that cannot hold one data chunk would
    // be invalid at the first origin write): its code, this front end's wording.
    if size > MAX_FILE_SIZE {
        return Err(files::too_large(size));
    }
    if let Err(e) = opts.check_cow_len(size) {
        let msg = if e.code() == cowsnap_core::ErrorCode::NoSpace {
            format!(
                "COW size {} is too small: {} ({})",
                human(size),
                opts.min_cow_reason(),
                human(opts.min_cow_len())
            )
        } else {
            format!("COW size {}: {e}", human(size))
        };
        return Err(Error { msg, ..e.into() });
    }
    let path = v.dir.join(&entry.cow);
    // The whole COW is allocated now (as LVM allocates a snapshot's extents): a full host disk can
    // then never invalidate this snapshot. Refuses an existing file of that name.
    let what = format!("snapshot {name}'s COW");
    let cow = files::create_reserved(&v.dir, &entry.cow, size, &what, v.access)?;
    let undo = |v: &mut Opened, id: Option<SnapshotId>, e: Error| {
        if let Some(id) = id {
            let _ = v.vol.delete_snapshot(id);
        }
        let _ = fs::remove_file(&path);
        Err(e)
    };
    let made = v
        .vol
        .create_snapshot(cow, opts)
        .map_err(|e| Error::core(format!("snapshot {name}"), e));
    let id = match made {
        Ok(id) => id,
        Err(e) => return undo(v, None, e),
    };
    v.manifest.snapshots.push(entry);
    if let Err(e) = v.manifest.save(&v.dir) {
        v.manifest.snapshots.pop();
        return undo(v, Some(id), e);
    }
    v.ids.push(Some(id));
    v.broken.push(None);
    if !io.quiet {
        outln!(
            io,
            "created snapshot {name} of {} (COW {}, chunk {}, store {})",
            v.dir.display(),
            human(size),
            human(chunk),
            store.to_ascii_uppercase()
        );
    }
    Ok(())
}

/// One row of `lvs`.
struct Row {
    name: String,
    attr: String,
    size: u64,
    origin: String,
    data: Option<f64>,
    extra: serde_json::Value,
}

fn exec_lvs(v: &Opened, as_json: bool, io: &mut Io) -> Result {
    let vname = v.volume_name();
    let merging = v.active().any(|(_, id)| {
        v.vol
            .snapshot_status(id)
            .is_ok_and(|s| s.state == SnapshotState::Merging)
    });
    let origin_attr = cowsnap_core::origin_lvs_attr(!v.ids.is_empty(), merging);
    let mut rows = vec![Row {
        name: vname.clone(),
        attr: origin_attr.into(),
        size: v.vol.len(),
        origin: String::new(),
        data: None,
        extra: match io.mountpoint {
            Some(m) => json!({"file": v.manifest.origin, "mountpoint": m.display().to_string()}),
            None => json!({"file": v.manifest.origin}),
        },
    }];
    for (i, e) in v.manifest.snapshots.iter().enumerate() {
        let Some(id) = v.ids[i] else {
            let why = v.broken[i]
                .as_ref()
                .map(|b| b.reason.clone())
                .unwrap_or_default();
            if !io.quiet {
                eprintln!("cowsnap: warning: snapshot {} is broken: {why}", e.name);
            }
            // The file's size, if there is a file of that name at all.
            let size = files::check_plain_name(&e.cow)
                .ok()
                .and_then(|()| fs::symlink_metadata(v.dir.join(&e.cow)).ok())
                .filter(|m| m.is_file())
                .map_or(0, |m| m.len());
            rows.push(Row {
                name: e.name.clone(),
                // Inactive ('-' state) with an unknown health ('X'), as lvs shows an LV it
                // cannot activate.
                attr: "swi---s-X-".into(),
                size,
                origin: vname.clone(),
                data: None,
                extra: json!({
                    "file": e.cow,
                    "state": "broken",
                    "store": e.store,
                    "chunk_size": e.chunk_size,
                    "broken": why,
                }),
            });
            continue;
        };
        let st = v
            .vol
            .snapshot_status(id)
            .map_err(|err| Error::core(&e.name, err))?;
        let cow_len = v.vol.snapshot_cow(id).map(|c| c.len()).unwrap_or(0);
        rows.push(Row {
            name: e.name.clone(),
            attr: st.lvs_attr().into(),
            size: cow_len,
            origin: vname.clone(),
            data: st.data_percent(),
            extra: json!({
                "file": e.cow,
                "state": st.state.name(),
                "store": e.store,
                "chunk_size": st.chunk_bytes,
                "exceptions": st.exceptions,
                "dm_status": st.dm_status(),
                "autoextend": e.autoextend.map(|a| format!("{}:{}", a.threshold_percent, a.extend_percent)),
                "broken": null,
            }),
        });
    }
    for (name, n) in names_outside(v) {
        if !io.quiet {
            eprintln!(
                "cowsnap: warning: {name} has {n} hard link(s) outside this volume (another \
                 volume's file, a `cp -al` copy): that other name changes with every write here"
            );
        }
    }
    let debris = leftovers(&v.dir, &v.manifest);
    if !debris.is_empty() && !io.quiet {
        eprintln!(
            "cowsnap: warning: {} holds files left by an interrupted command, not in the manifest: \
             {} (cowsnap does not delete them: check and remove them by hand)",
            v.dir.display(),
            debris.join(", ")
        );
    }
    if as_json {
        let lv: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut o = json!({
                    "lv_name": r.name,
                    "lv_attr": r.attr,
                    "lv_size": human(r.size),
                    "lv_size_bytes": r.size,
                    "origin": r.origin,
                    "data_percent": r.data.map(|d| format!("{d:.2}")).unwrap_or_default(),
                });
                if let (Some(o), Some(x)) = (o.as_object_mut(), r.extra.as_object()) {
                    o.extend(x.clone());
                }
                o
            })
            .collect();
        let outside: serde_json::Map<String, serde_json::Value> = names_outside(v)
            .into_iter()
            .map(|(n, c)| (n, json!(c)))
            .collect();
        let doc = json!({
            "report": [{"lv": lv}],
            "leftovers": debris,
            "hard_links_outside": outside,
        });
        outln!(
            io,
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        );
        return Ok(());
    }
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(2).max(2);
    let wo = rows
        .iter()
        .map(|r| r.origin.len())
        .max()
        .unwrap_or(6)
        .max(6);
    outln!(
        io,
        "  {:<w$} {:<10} {:>9} {:<wo$} {:>6}",
        "LV",
        "Attr",
        "LSize",
        "Origin",
        "Data%"
    );
    for r in &rows {
        let data = r.data.map(|d| format!("{d:.2}")).unwrap_or_default();
        let line = format!(
            "  {:<w$} {:<10} {:>9} {:<wo$} {:>6}",
            r.name,
            r.attr,
            human(r.size),
            r.origin,
            data
        );
        outln!(io, "{}", line.trim_end());
    }
    Ok(())
}

/// The volume's files (origin and COWs) with hard links the manifest does not account for, and how
/// many. Reported by `lvs`, not refused: a hard-link copy of a volume must not lock it out.
fn names_outside(v: &Opened) -> Vec<(String, u64)> {
    let files: Vec<&str> = std::iter::once(v.manifest.origin.as_str())
        .chain(v.manifest.snapshots.iter().map(|e| e.cow.as_str()))
        .collect();
    let ids: Vec<Option<(FileId, u64)>> = files
        .iter()
        .map(|n| files::identity_of(&v.dir, n))
        .collect();
    let mut out = Vec::new();
    for (i, (name, id)) in files.iter().zip(&ids).enumerate() {
        let Some((id, links)) = *id else { continue };
        let inside = ids.iter().flatten().filter(|(o, _)| *o == id).count() as u64;
        // Once per file, at its first name.
        let first = ids.iter().position(|x| x.is_some_and(|(o, _)| o == id)) == Some(i);
        if first && links > inside {
            out.push((name.to_string(), links - inside));
        }
    }
    out
}

/// Files in the volume directory with names only cowsnap makes (`*.cow`, `*.cowsnap-tmp`, the
/// manifest's temporary file) that the manifest does not list: debris of a killed command.
pub fn leftovers(dir: &Path, m: &Manifest) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            (n.ends_with(COW_SUFFIX) && !m.snapshots.iter().any(|s| s.cow == *n))
                || n.ends_with(TMP_SUFFIX)
                || n == crate::manifest::MANIFEST_TMP
        })
        .collect();
    v.sort();
    v
}

pub use crate::error::io_err;

/// The core's range rule, in this crate's error type.
pub fn check_range(offset: u64, len: u64, size: u64) -> Result {
    Ok(cowsnap_core::limits::check_range(offset, len, size)?)
}

fn exec_write(
    v: &mut Opened,
    snap: Option<&str>,
    offset: u64,
    fill: Option<u8>,
    from: Option<&Path>,
    len: u64,
    io: &mut Io,
) -> Result {
    let mut src = match from {
        Some(_) => Some(
            io.input
                .take()
                .ok_or_else(|| Error::msg("internal error: write --from without its data"))?,
        ),
        None => None,
    };
    let id = snap.map(|n| v.id(n)).transpose()?;
    if id.is_none() {
        v.check_origin_writable("writing the origin")?;
    }
    check_range(offset, len, v.target_len())?;
    let label = snap.unwrap_or("origin").to_string();
    // Which snapshots are valid now: a write that invalidates one (a full COW) must say so.
    let valid_before = valid_snapshots(v);
    let mut buf = vec![fill.unwrap_or(0); len.min(STEP) as usize];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(STEP) as usize;
        if let (Some(f), Some(p)) = (src.as_mut(), from) {
            f.read_exact(&mut buf[..n]).map_err(|e| {
                Error::msg(format!("{}: {e} (file shorter than --len?)", p.display()))
            })?;
        }
        let r = match id {
            None => v.vol.write_at(offset + done, &buf[..n]),
            Some(id) => v.vol.snapshot_write_at(id, offset + done, &buf[..n]),
        };
        if let Err(e) = r {
            // What was written so far stays written (as with a failed dd); make it durable.
            let _ = v.vol.flush();
            io.changed(id);
            let mut err = Error::core(format!("write to {label} at offset {}", offset + done), e);
            if let Some(lost) = lost_snapshots(v, &valid_before) {
                err.msg.push_str(&format!("; {lost}"));
            }
            return Err(err);
        }
        done += n as u64;
    }
    v.flush()?;
    io.changed(id);
    if !io.quiet {
        outln!(io, "wrote {len} bytes at offset {offset} of {label}");
    }
    match lost_snapshots(v, &valid_before) {
        Some(lost) => Err(Error::degraded(format!(
            "wrote {len} bytes at offset {offset} of {label}, but {lost}"
        ))),
        None => Ok(()),
    }
}

/// Names of the active snapshots that are not invalid.
fn valid_snapshots(v: &Opened) -> Vec<(String, SnapshotId)> {
    v.active()
        .filter(|(_, id)| {
            v.vol
                .snapshot_status(*id)
                .is_ok_and(|s| s.state != SnapshotState::Invalid)
        })
        .map(|(e, id)| (e.name.clone(), id))
        .collect()
}

/// "snapshot s1 was invalidated ..." for the snapshots of `before` that are invalid now.
fn lost_snapshots(v: &Opened, before: &[(String, SnapshotId)]) -> Option<String> {
    let lost: Vec<&str> = before
        .iter()
        .filter(|(_, id)| {
            v.vol
                .snapshot_status(*id)
                .is_ok_and(|s| s.state == SnapshotState::Invalid)
        })
        .map(|(n, _)| n.as_str())
        .collect();
    if lost.is_empty() {
        return None;
    }
    Some(format!(
        "snapshot {} was invalidated by this write (its COW is full): its data is lost; remove it \
         (cowsnap remove {}) and give snapshots more room (extend, --autoextend)",
        lost.join(", "),
        v.dir.join(lost[0]).display()
    ))
}

/// Reads `[offset, offset+len)` of the origin (`None`) or a snapshot into `sink`, in steps.
pub fn copy_out(
    v: &Opened,
    id: Option<SnapshotId>,
    offset: u64,
    len: u64,
    bar: &Progress,
    mut sink: impl FnMut(u64, &[u8]) -> Result,
) -> Result {
    let mut buf = vec![0u8; len.min(STEP) as usize];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(STEP) as usize;
        let b = &mut buf[..n];
        match id {
            None => v.vol.read_at(offset + done, b),
            Some(id) => v.vol.snapshot_read_at(id, offset + done, b),
        }
        .map_err(|e| Error::core(format!("read at offset {}", offset + done), e))?;
        sink(done, b)?;
        done += n as u64;
        bar.set(done);
    }
    Ok(())
}

fn exec_read(
    v: &Opened,
    snap: Option<&str>,
    offset: u64,
    len: u64,
    out: Option<&Path>,
    io: &mut Io,
) -> Result {
    let id = snap.map(|n| v.id(n)).transpose()?;
    check_range(offset, len, v.target_len())?;
    if let Some(id) = id {
        if v.vol.snapshot_status(id)?.state == SnapshotState::Invalid {
            return Err(Error::core(
                snap.unwrap_or(""),
                cowsnap_core::Error::SnapshotInvalid,
            ));
        }
    }
    let bar = Progress::new(0, "", true, true);
    match out {
        Some(p) => {
            let mount = io.mountpoint.zip(io.mount_dev);
            let guard = crate::output::Guard::volume(&v.dir, &v.manifest, mount)?;
            crate::output::write_image(p, len, &guard, |sink| {
                copy_out(v, id, offset, len, &bar, sink)
            })
        }
        None => {
            copy_out(v, id, offset, len, &bar, |_, b| {
                io.out
                    .write_all(b)
                    .map_err(|e| Error::msg(format!("stdout: {e}")))
            })?;
            io.out
                .flush()
                .map_err(|e| Error::msg(format!("stdout: {e}")))
        }
    }
}

fn exec_remove(v: &mut Opened, name: &str, force: bool, io: &mut Io) -> Result {
    let i = v.index(name)?;
    if v.ids[i].is_none() {
        if !force {
            // Say why, and how to drop it.
            return Err(Error::msg(
                v.id(name).err().map(|e| e.msg).unwrap_or_default(),
            ));
        }
        v.forget(name)?;
        if !io.quiet {
            outln!(io, "removed broken snapshot {name} from the manifest");
        }
        return Ok(());
    }
    let id = v.id(name)?;
    if let Some(m) = io.mount {
        m.check_removable(id, name)?;
    }
    v.vol
        .delete_snapshot(id)
        .map_err(|e| Error::core(format!("remove {name}"), e))?;
    v.forget(name)?;
    if let Some(m) = io.mount {
        m.removed(id, name);
    }
    if !io.quiet {
        outln!(io, "removed snapshot {name}");
    }
    Ok(())
}

fn exec_merge(v: &mut Opened, name: &str, io: &mut Io) -> Result {
    let id = v.id(name)?;
    if let Some(mp) = io.mountpoint {
        return Err(Error::msg(format!(
            "cannot merge {name} while the volume is mounted at {}: the origin's contents would \
             change under its users; unmount it first (cowsnap umount {})",
            mp.display(),
            mp.display()
        )));
    }
    v.check_origin_writable(&format!("merging {name}"))?;
    // Refuse before recording anything (an invalid snapshot cannot be merged).
    v.vol
        .merge_begin(id)
        .map_err(|e| Error::core(format!("merge of {name}"), e))?;
    // Recorded before the first origin chunk changes: an interrupted merge resumes on next open.
    v.manifest.merging = Some(name.to_string());
    v.manifest.save(&v.dir)?;
    v.finish_merge(name, io.quiet)?;
    if !io.quiet {
        outln!(
            io,
            "merged snapshot {name} into the origin of {}",
            v.dir.display()
        );
    }
    Ok(())
}

fn exec_extend(v: &mut Opened, name: &str, size: SizeArg, io: &mut Io) -> Result {
    let id = v.id(name)?;
    let i = v.index(name)?;
    let cur = v.vol.snapshot_cow(id)?.len();
    let new = size
        .apply(cur)
        .map_err(|e| Error::msg(format!("extend {name}: {e}")))?;
    if new > MAX_FILE_SIZE {
        return Err(files::too_large(new));
    }
    if new < cur {
        return Err(Error::msg(format!(
            "extend {name}: {} is smaller than the COW's {}: a COW cannot shrink",
            human(new),
            human(cur)
        )));
    }
    // The core's FileDevice reserves the added range (the COW keeps its size if it cannot).
    v.vol.extend_snapshot(id, new).map_err(|e| {
        Error::core(
            format!(
                "extend {name}: cannot reserve {} more for its COW {}",
                human(new - cur),
                v.dir.join(&v.manifest.snapshots[i].cow).display()
            ),
            e,
        )
    })?;
    v.flush()?;
    if !io.quiet {
        outln!(
            io,
            "extended snapshot {name} from {} to {}",
            human(cur),
            human(new)
        );
    }
    Ok(())
}
