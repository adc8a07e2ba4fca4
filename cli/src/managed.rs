//! Managed volumes: a directory with the origin image, one COW image per snapshot and a manifest.
//!
//! Activating a volume = the origin as a [`FileDevice`] + `activate_snapshot` for every COW listed in
//! the manifest (with its overflow mode and autoextend policy), so every origin write preserves the
//! chunks of every snapshot. Commands that change anything hold an exclusive lock on the directory.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use cowsnap_core::replay::parse_store;
use cowsnap_core::{
    Autoextend, BlockDevice, ChunkSize, FileDevice, SnapshotId, SnapshotOptions, SnapshotState,
    StoreKind, Volume,
};
use serde_json::json;

use crate::manifest::{check_name, AutoextendSpec, Manifest, SnapshotEntry, VolumeLock};
use crate::progress::Progress;
use crate::request::Request;
use crate::size::{human, SizeArg};
use crate::{CliError, CliResult};

/// `println!` to a command's output (stdout here, the client's stdout when run by the mount daemon).
macro_rules! outln {
    ($io:expr, $($arg:tt)*) => {
        writeln!($io.out, $($arg)*).map_err(|e| CliError::msg(format!("stdout: {e}")))?
    };
}

/// Bytes moved per step by read, write, backup.
const STEP: u64 = 1 << 20;
/// Origin image file name.
const ORIGIN_FILE: &str = "origin.img";

/// An activated managed volume, locked.
pub struct Opened {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub vol: Volume,
    /// Snapshot ids, in manifest order.
    pub ids: Vec<SnapshotId>,
    writable: bool,
    _lock: VolumeLock,
}

/// `DIR` (the origin) or `DIR/NAME` (a snapshot).
pub struct Target {
    pub dir: PathBuf,
    pub snap: Option<String>,
}

fn has_manifest(p: &Path) -> bool {
    Manifest::path(p).is_file()
}

/// Resolves `DIR` or `DIR/NAME`.
pub fn resolve(path: &Path) -> CliResult<Target> {
    if has_manifest(path) {
        return Ok(Target {
            dir: path.to_path_buf(),
            snap: None,
        });
    }
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if has_manifest(parent) {
            let name = name
                .to_str()
                .ok_or_else(|| CliError::msg(format!("bad snapshot name in {}", path.display())))?;
            return Ok(Target {
                dir: parent.to_path_buf(),
                snap: Some(name.to_string()),
            });
        }
    }
    let dir = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(path)
    };
    Err(CliError::msg(format!(
        "{} is not a cowsnap volume: missing manifest {}",
        path.display(),
        Manifest::path(dir).display()
    )))
}

/// Resolves `DIR/NAME`, refusing a bare volume.
fn resolve_snapshot(path: &Path) -> CliResult<(PathBuf, String)> {
    let t = resolve(path)?;
    match t.snap {
        Some(s) => Ok((t.dir, s)),
        None => Err(CliError::msg(format!(
            "{} is a volume; this command needs a snapshot: DIR/NAME",
            path.display()
        ))),
    }
}

fn entry_options(e: &SnapshotEntry) -> CliResult<SnapshotOptions> {
    let (store, overflow) = parse_store(&e.store).map_err(|err| {
        CliError::msg(format!(
            "snapshot {}: store {:?} in manifest: {err}",
            e.name, e.store
        ))
    })?;
    if store == StoreKind::Transient {
        return Err(CliError::msg(format!(
            "snapshot {}: a transient (N) store cannot be in a manifest",
            e.name
        )));
    }
    Ok(SnapshotOptions {
        chunk_size: ChunkSize::new(e.chunk_size)
            .map_err(|err| CliError::core(format!("snapshot {}", e.name), err))?,
        store,
        overflow,
        autoextend: e.autoextend.map(|a| Autoextend {
            threshold_percent: a.threshold_percent,
            extend_percent: a.extend_percent,
        }),
    })
}

impl Opened {
    /// Activates the volume in `dir` under `lock` (exclusive when `writable`); finishes an
    /// interrupted merge first.
    pub fn open_locked(
        dir: &Path,
        writable: bool,
        quiet: bool,
        mut lock: VolumeLock,
    ) -> CliResult<Self> {
        let mut manifest = Manifest::load(dir)?;
        let asked_writable = writable;
        let mut writable = writable;
        if manifest.merging.is_some() && !writable {
            drop(lock);
            lock = VolumeLock::acquire(dir, true, quiet)?;
            manifest = Manifest::load(dir)?;
            writable = true;
        }
        let origin_path = dir.join(&manifest.origin);
        let origin = crate::raw::open(&origin_path, writable)?;
        let mut vol = Volume::new(origin);
        let mut ids = Vec::new();
        for e in &manifest.snapshots {
            let opts = entry_options(e)?;
            let p = dir.join(&e.cow);
            let cow = crate::raw::open(&p, writable)?;
            let id = vol.activate_snapshot(cow, opts).map_err(|err| {
                CliError::core(format!("snapshot {} ({})", e.name, p.display()), err)
            })?;
            ids.push(id);
        }
        let mut me = Opened {
            dir: dir.to_path_buf(),
            manifest,
            vol,
            ids,
            writable,
            _lock: lock,
        };
        if let Some(name) = me.manifest.merging.clone() {
            if !quiet {
                eprintln!("cowsnap: resuming the interrupted merge of {name}");
            }
            if let Err(e) = me.finish_merge(&name, quiet) {
                // A merge that cannot finish (say, an unreadable COW chunk) must not lock the user
                // out of looking at the volume: read-only commands go on, the merge stays recorded.
                if asked_writable {
                    return Err(e);
                }
                eprintln!(
                    "cowsnap: warning: the interrupted merge of {name} could not be finished ({}); \
                     showing the volume as it is, the merge stays recorded",
                    e.0
                );
            }
        }
        Ok(me)
    }

    pub fn index(&self, name: &str) -> CliResult<usize> {
        self.manifest
            .snapshots
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| {
                CliError::msg(format!(
                    "no snapshot named {name:?} in volume {} (see `cowsnap lvs {}`)",
                    self.dir.display(),
                    self.dir.display()
                ))
            })
    }

    pub fn id(&self, name: &str) -> CliResult<SnapshotId> {
        Ok(self.ids[self.index(name)?])
    }

    fn volume_name(&self) -> String {
        let canon = fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        canon
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "origin".into())
    }

    /// Drops a snapshot from the manifest (atomically) and deletes its COW file.
    fn forget(&mut self, name: &str) -> CliResult {
        let i = self.index(name)?;
        let e = self.manifest.snapshots.remove(i);
        self.ids.remove(i);
        if self.manifest.merging.as_deref() == Some(name) {
            self.manifest.merging = None;
        }
        self.manifest.save(&self.dir)?;
        let p = self.dir.join(&e.cow);
        fs::remove_file(&p)
            .map_err(|err| CliError::msg(format!("cannot remove {}: {err}", p.display())))
    }

    /// Runs (or resumes) the merge of `name` to the end, then forgets the snapshot.
    fn finish_merge(&mut self, name: &str, quiet: bool) -> CliResult {
        debug_assert!(self.writable);
        let id = self.id(name)?;
        let ctx = format!("merge of {name}");
        let bar = Progress::new(0, &format!("merging {name}"), false, quiet);
        let result = self.vol.merge_snapshot(id, |p| {
            bar.set_total(p.total);
            bar.set(p.merged);
        });
        bar.finish();
        result.map_err(|e| CliError::core(&ctx, e))?;
        self.vol.flush().map_err(|e| CliError::core(&ctx, e))?;
        self.forget(name)
    }

    pub fn flush(&mut self) -> CliResult {
        self.vol.flush().map_err(|e| CliError::core("flush", e))
    }

    pub fn target_len(&self) -> u64 {
        self.vol.len()
    }
}

/// What a mounted volume (`cowsnap mount`) needs to know about commands it runs for clients.
pub trait MountHooks {
    /// Refuses to remove a snapshot whose file is open under the mount point.
    fn check_removable(&self, id: SnapshotId, name: &str) -> CliResult;
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
pub fn exec_ro(v: &Opened, req: &Request, io: &mut Io) -> CliResult {
    match req {
        Request::Lvs { json } => exec_lvs(v, *json, io),
        Request::Read {
            snap,
            offset,
            len,
            out,
        } => exec_read(v, snap.as_deref(), *offset, *len, out.as_deref(), io),
        Request::Backup { snap, out, sums } => exec_backup(v, snap, out, sums, io),
        Request::Verify { snap, sums } => crate::verify::exec_verify(v, snap, sums, io),
        Request::BackupTo { snap, to } => crate::backupstore::exec_backup(v, snap, to, io),
        _ => Err(CliError::msg(
            "internal error: a writing command on a read-only volume",
        )),
    }
}

/// Runs any command on an opened volume (opened writable for commands that write).
pub fn exec(v: &mut Opened, req: &Request, io: &mut Io) -> CliResult {
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
        Request::Remove { snap } => exec_remove(v, snap, io),
        Request::Merge { snap } => exec_merge(v, snap, io),
        Request::Extend { snap, size } => exec_extend(v, snap, *size, io),
        _ => exec_ro(v, req, io),
    }
}

/// Runs `req` on the volume in `dir`: forwarded to the `cowsnap mount` daemon when the volume is
/// mounted (the daemon holds it open and locked), else on the files directly under the lock.
pub fn dispatch(dir: &Path, req: Request, quiet: bool) -> CliResult {
    dispatch_with_input(dir, req, quiet, None)
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
    match crate::mount::connect_or_lock(dir, req.writes(), quiet)? {
        crate::mount::Access::Remote(stream) => crate::request::call(stream, &req, quiet, input),
        crate::mount::Access::Local(lock) => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let mut io = Io {
                out: &mut out,
                input: input.as_mut().map(|f| f as &mut dyn Read),
                quiet,
                mountpoint: None,
                mount: None,
            };
            let mut v = Opened::open_locked(dir, req.writes(), quiet, lock)?;
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
    let req = Request::Snapshot {
        name: name.into(),
        size,
        store: store.into(),
        autoextend: autoextend.map(Into::into),
        chunk_size,
    };
    dispatch(dir, req, quiet)
}

pub fn lvs(dir: &Path, json: bool, quiet: bool) -> CliResult {
    dispatch(dir, Request::Lvs { json }, quiet)
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
    let req = Request::Write {
        snap: t.snap,
        offset,
        fill,
        from,
        len,
    };
    dispatch_with_input(&t.dir, req, quiet, input)
}

pub fn read(target: &Path, offset: u64, len: u64, out: Option<&Path>, quiet: bool) -> CliResult {
    let t = resolve(target)?;
    let req = Request::Read {
        snap: t.snap,
        offset,
        len,
        out: out.map(absolute).transpose()?,
    };
    dispatch(&t.dir, req, quiet)
}

pub fn remove(target: &Path, quiet: bool) -> CliResult {
    let (dir, snap) = resolve_snapshot(target)?;
    dispatch(&dir, Request::Remove { snap }, quiet)
}

pub fn merge(target: &Path, quiet: bool) -> CliResult {
    let (dir, snap) = resolve_snapshot(target)?;
    dispatch(&dir, Request::Merge { snap }, quiet)
}

pub fn extend(target: &Path, size: SizeArg, quiet: bool) -> CliResult {
    let (dir, snap) = resolve_snapshot(target)?;
    dispatch(&dir, Request::Extend { snap, size }, quiet)
}

pub fn backup(target: &Path, out: &Path, sums: crate::verify::SumsTo, quiet: bool) -> CliResult {
    let (dir, snap) = resolve_snapshot(target)?;
    let out = absolute(out)?;
    let sums = match sums {
        crate::verify::SumsTo::Path(p) => crate::verify::SumsTo::Path(absolute(&p)?),
        s => s,
    };
    dispatch(&dir, Request::Backup { snap, out, sums }, quiet)
}

/// `backup DIR/NAME --to URL`.
pub fn backup_to(target: &Path, to: crate::backupstore::BackupTo, quiet: bool) -> CliResult {
    let (dir, snap) = resolve_snapshot(target)?;
    dispatch(&dir, Request::BackupTo { snap, to }, quiet)
}

pub fn verify(target: &Path, sums: &Path, quiet: bool) -> CliResult {
    let (dir, snap) = resolve_snapshot(target)?;
    let sums = absolute(sums)?;
    dispatch(&dir, Request::Verify { snap, sums }, quiet)
}

pub fn create(dir: &Path, size: u64, chunk_size: u64, quiet: bool) -> CliResult {
    ChunkSize::new(chunk_size).map_err(|e| CliError::core("--chunk-size", e))?;
    if size == 0 {
        return Err(CliError::msg("--size must be greater than 0"));
    }
    if has_manifest(dir) {
        return Err(CliError::msg(format!(
            "{} is already a cowsnap volume",
            dir.display()
        )));
    }
    if dir.exists() {
        let empty = fs::read_dir(dir)
            .map_err(|e| CliError::msg(format!("cannot read {}: {e}", dir.display())))?
            .next()
            .is_none();
        if !empty {
            return Err(CliError::msg(format!(
                "{} exists and is not empty",
                dir.display()
            )));
        }
    } else {
        fs::create_dir_all(dir)
            .map_err(|e| CliError::msg(format!("cannot create {}: {e}", dir.display())))?;
    }
    let _lock = VolumeLock::acquire(dir, true, quiet)?;
    let origin = dir.join(ORIGIN_FILE);
    let mut dev =
        FileDevice::create(&origin, size).map_err(|e| CliError::core(origin.display(), e))?;
    dev.flush()
        .map_err(|e| CliError::core(origin.display(), e))?;
    let m = Manifest {
        format: crate::manifest::FORMAT,
        origin: ORIGIN_FILE.into(),
        chunk_size,
        snapshots: Vec::new(),
        merging: None,
    };
    m.save(dir)?;
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

fn parse_autoextend(s: &str) -> CliResult<Option<AutoextendSpec>> {
    if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let bad = || {
        CliError::msg(format!(
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
    .map_err(|e| CliError::core("--autoextend", e))?;
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
) -> CliResult {
    check_name(name).map_err(CliError::msg)?;
    let (kind, _) = parse_store(store).map_err(|e| CliError::core("--store", e))?;
    if kind == StoreKind::Transient {
        return Err(CliError::msg(
            "--store N (transient) is not available for managed volumes: its exceptions live only \
             in memory and would be lost when this command exits; use P or PO",
        ));
    }
    let autoextend = autoextend.map(parse_autoextend).transpose()?.flatten();
    if v.manifest.find(name).is_some() {
        return Err(CliError::msg(format!(
            "snapshot {name:?} already exists in {}",
            v.dir.display()
        )));
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
    if size < 2 * chunk {
        return Err(CliError::msg(format!(
            "COW size {} is too small: a snapshot needs at least 2 chunks ({}) for its header and \
             first metadata area",
            human(size),
            human(2 * chunk)
        )));
    }
    let path = v.dir.join(&entry.cow);
    let cow = FileDevice::create(&path, size).map_err(|e| CliError::core(path.display(), e))?;
    let made = v
        .vol
        .create_snapshot(cow, opts)
        .map_err(|e| CliError::core(format!("snapshot {name}"), e));
    let id = match made {
        Ok(id) => id,
        Err(e) => {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
    };
    v.ids.push(id);
    v.manifest.snapshots.push(entry);
    v.manifest.save(&v.dir)?;
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

fn exec_lvs(v: &Opened, as_json: bool, io: &mut Io) -> CliResult {
    let vname = v.volume_name();
    let merging = v.ids.iter().any(|&id| {
        v.vol
            .snapshot_status(id)
            .is_ok_and(|s| s.state == SnapshotState::Merging)
    });
    let origin_attr = match (v.ids.is_empty(), merging) {
        (true, _) => "-wi-a-----",
        (false, false) => "owi-a-s---",
        (false, true) => "Owi-a-s---",
    };
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
    for (e, &id) in v.manifest.snapshots.iter().zip(&v.ids) {
        let st = v
            .vol
            .snapshot_status(id)
            .map_err(|err| CliError::core(&e.name, err))?;
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
            }),
        });
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
        let doc = json!({"report": [{"lv": lv}]});
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

fn io_err(what: &Path) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError::msg(format!("{}: {e}", what.display()))
}

fn check_range(offset: u64, len: u64, size: u64) -> CliResult {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(CliError::from(cowsnap_core::Error::OutOfRange {
            offset,
            len,
            size,
        })),
    }
}

fn exec_write(
    v: &mut Opened,
    snap: Option<&str>,
    offset: u64,
    fill: Option<u8>,
    from: Option<&Path>,
    len: u64,
    io: &mut Io,
) -> CliResult {
    let mut src = match from {
        Some(_) => Some(
            io.input
                .take()
                .ok_or_else(|| CliError::msg("internal error: write --from without its data"))?,
        ),
        None => None,
    };
    let id = snap.map(|n| v.id(n)).transpose()?;
    check_range(offset, len, v.target_len())?;
    let label = snap.unwrap_or("origin").to_string();
    let mut buf = vec![fill.unwrap_or(0); len.min(STEP) as usize];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(STEP) as usize;
        if let (Some(f), Some(p)) = (src.as_mut(), from) {
            f.read_exact(&mut buf[..n]).map_err(|e| {
                CliError::msg(format!("{}: {e} (file shorter than --len?)", p.display()))
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
            return Err(CliError::core(
                format!("write to {label} at offset {}", offset + done),
                e,
            ));
        }
        done += n as u64;
    }
    v.flush()?;
    io.changed(id);
    if !io.quiet {
        outln!(io, "wrote {len} bytes at offset {offset} of {label}");
    }
    Ok(())
}

/// Reads `[offset, offset+len)` of the origin (`None`) or a snapshot into `sink`, in steps.
fn copy_out(
    v: &Opened,
    id: Option<SnapshotId>,
    offset: u64,
    len: u64,
    bar: &Progress,
    mut sink: impl FnMut(u64, &[u8]) -> CliResult,
) -> CliResult {
    let mut buf = vec![0u8; len.min(STEP) as usize];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(STEP) as usize;
        let b = &mut buf[..n];
        match id {
            None => v.vol.read_at(offset + done, b),
            Some(id) => v.vol.snapshot_read_at(id, offset + done, b),
        }
        .map_err(|e| CliError::core(format!("read at offset {}", offset + done), e))?;
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
) -> CliResult {
    let id = snap.map(|n| v.id(n)).transpose()?;
    check_range(offset, len, v.target_len())?;
    if let Some(id) = id {
        if v.vol.snapshot_status(id)?.state == SnapshotState::Invalid {
            return Err(CliError::core(
                snap.unwrap_or(""),
                cowsnap_core::Error::SnapshotInvalid,
            ));
        }
    }
    let bar = Progress::new(0, "", true, true);
    match out {
        Some(p) => {
            let guard = crate::output::Guard::volume(&v.dir, &v.manifest, io.mountpoint)?;
            crate::output::write_image(p, len, &guard, |sink| {
                copy_out(v, id, offset, len, &bar, sink)
            })
        }
        None => {
            copy_out(v, id, offset, len, &bar, |_, b| {
                io.out
                    .write_all(b)
                    .map_err(|e| CliError::msg(format!("stdout: {e}")))
            })?;
            io.out
                .flush()
                .map_err(|e| CliError::msg(format!("stdout: {e}")))
        }
    }
}

fn exec_remove(v: &mut Opened, name: &str, io: &mut Io) -> CliResult {
    let id = v.id(name)?;
    if let Some(m) = io.mount {
        m.check_removable(id, name)?;
    }
    v.vol
        .delete_snapshot(id)
        .map_err(|e| CliError::core(format!("remove {name}"), e))?;
    v.forget(name)?;
    if let Some(m) = io.mount {
        m.removed(id, name);
    }
    if !io.quiet {
        outln!(io, "removed snapshot {name}");
    }
    Ok(())
}

fn exec_merge(v: &mut Opened, name: &str, io: &mut Io) -> CliResult {
    let id = v.id(name)?;
    if let Some(mp) = io.mountpoint {
        return Err(CliError::msg(format!(
            "cannot merge {name} while the volume is mounted at {}: the origin's contents would \
             change under its users; unmount it first (cowsnap umount {})",
            mp.display(),
            mp.display()
        )));
    }
    // Refuse before recording anything (an invalid snapshot cannot be merged).
    v.vol
        .merge_begin(id)
        .map_err(|e| CliError::core(format!("merge of {name}"), e))?;
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

fn exec_extend(v: &mut Opened, name: &str, size: SizeArg, io: &mut Io) -> CliResult {
    let id = v.id(name)?;
    let cur = v.vol.snapshot_cow(id)?.len();
    let new = size.apply(cur).map_err(CliError::msg)?;
    v.vol
        .extend_snapshot(id, new)
        .map_err(|e| CliError::core(format!("extend {name}"), e))?;
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

fn exec_backup(
    v: &Opened,
    name: &str,
    out: &Path,
    sums: &crate::verify::SumsTo,
    io: &mut Io,
) -> CliResult {
    let id = v.id(name)?;
    let len = v.vol.len();
    let guard = crate::output::Guard::volume(&v.dir, &v.manifest, io.mountpoint)?;
    let bar = Progress::new(len, &format!("backup {name}"), true, io.quiet);
    let r = crate::verify::write_backup(out, sums, len, &guard, |sink| {
        copy_out(v, Some(id), 0, len, &bar, sink)
    });
    bar.finish();
    let sums = r?;
    if !io.quiet {
        match sums {
            Some(s) => outln!(
                io,
                "backed up {name} ({}) to {} (checksums: {})",
                human(len),
                out.display(),
                s.display()
            ),
            None => outln!(io, "backed up {name} ({}) to {}", human(len), out.display()),
        }
    }
    Ok(())
}
