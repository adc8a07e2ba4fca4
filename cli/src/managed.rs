//! Managed volumes: a directory with the origin image, one COW image per snapshot and a manifest.
//!
//! Activating a volume = the origin as a [`FileDevice`] + `activate_snapshot` for every COW listed in
//! the manifest (with its overflow mode and autoextend policy), so every origin write preserves the
//! chunks of every snapshot. Commands that change anything hold an exclusive lock on the directory.
//!
//! A snapshot whose COW cannot be activated (missing, corrupt, a symbolic link, the same file as
//! another...) is *broken*: listed with the reason, every command on the origin's reads and on the
//! other snapshots goes on, but origin writes and merges are refused (its COW could not follow
//! them) until `remove --force` drops it. A COW the manifest knows is never formatted.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use cowsnap_core::replay::parse_store;
use cowsnap_core::store::persistent::{Header, SNAP_MAGIC};
use cowsnap_core::{
    Autoextend, ChunkSize, FileDevice, SnapshotId, SnapshotOptions, SnapshotState, StoreKind,
    Volume,
};
use serde_json::json;

use crate::files::{self, FileId, MAX_FILE_SIZE};
use crate::manifest::{check_name, AutoextendSpec, Manifest, SnapshotEntry, VolumeLock};
use crate::progress::Progress;
use crate::request::Request;
use crate::size::{human, SizeArg};
use crate::{CliError, CliResult, ErrorKind};

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
/// File names (suffixes) only cowsnap makes in a volume directory: found as leftovers when the
/// manifest does not know them.
const COW_SUFFIX: &str = ".cow";
const TMP_SUFFIX: &str = ".cowsnap-tmp";

/// Why a snapshot of the manifest could not be activated.
#[derive(Debug, Clone)]
pub struct Broken {
    pub kind: ErrorKind,
    pub reason: String,
}

/// An activated managed volume, locked.
pub struct Opened {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub vol: Volume,
    /// Snapshot ids, in manifest order; `None` for a broken snapshot.
    pub ids: Vec<Option<SnapshotId>>,
    /// Why each broken snapshot is broken (manifest order; `None` when active).
    pub broken: Vec<Option<Broken>>,
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
    let parent = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    if let (Some(parent), Some(name)) = (parent, path.file_name()) {
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
    // Name what is actually missing: the directory itself, or (for DIR/NAME) a missing DIR.
    if !path.exists() {
        if let Some(p) = parent.filter(|p| !p.exists()) {
            return Err(CliError::msg(format!(
                "no such volume directory: {}",
                p.display()
            )));
        }
    }
    Err(Manifest::load(path)
        .err()
        .unwrap_or_else(|| CliError::msg(format!("{} is not a cowsnap volume", path.display()))))
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

/// Checks a known snapshot's COW header before the core sees it: a zero magic is corruption here
/// (only `snapshot` formats a COW), and the chunk size must be the one the manifest recorded.
fn check_header(e: &SnapshotEntry, cow: &FileDevice) -> CliResult {
    let corrupt =
        |why: String| CliError::io(format!("snapshot {}: corrupt COW {}: {why}", e.name, e.cow));
    let h = Header::read(cow).map_err(|err| corrupt(err.to_string()))?;
    if h.magic == 0 {
        return Err(corrupt(
            "its header is zeroed (magic 0): the file was overwritten or truncated; cowsnap never \
             re-formats a snapshot it knows"
                .into(),
        ));
    }
    if h.magic != SNAP_MAGIC {
        return Err(corrupt(format!(
            "bad magic {:#010x}, not a dm-snapshot COW",
            h.magic
        )));
    }
    let bytes = u64::from(h.chunk_sectors) * 512;
    if bytes != e.chunk_size {
        return Err(corrupt(format!(
            "header chunk size is {} sectors ({bytes} bytes) but the manifest records {} bytes",
            h.chunk_sectors, e.chunk_size
        )));
    }
    Ok(())
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
        let origin = files::open_member(dir, &manifest.origin, writable, "origin")?;
        let mut record_size = false;
        match manifest.origin_size {
            Some(n) if n != origin.len => {
                return Err(CliError::io(format!(
                    "origin {} is {} bytes but the manifest records {n}: it was truncated or grown \
                     outside cowsnap; refusing the volume (every snapshot's size and contents \
                     depend on it)",
                    dir.join(&manifest.origin).display(),
                    origin.len
                )))
            }
            Some(_) => {}
            None => record_size = writable,
        }
        let origin_id = origin.id;
        let dev = files::device(origin.file)
            .map_err(|e| CliError::core(dir.join(&manifest.origin).display(), e))?;
        let mut vol = Volume::new(dev);
        let mut seen: Vec<(FileId, String)> = vec![(origin_id, "the origin".into())];
        let (mut ids, mut broken) = (Vec::new(), Vec::new());
        for e in &manifest.snapshots {
            match activate(&mut vol, dir, e, writable, &mut seen) {
                Ok(id) => {
                    ids.push(Some(id));
                    broken.push(None);
                }
                Err(err) => {
                    ids.push(None);
                    broken.push(Some(Broken {
                        kind: err.kind,
                        reason: err.msg,
                    }));
                }
            }
        }
        let mut me = Opened {
            dir: dir.to_path_buf(),
            manifest,
            vol,
            ids,
            broken,
            writable,
            _lock: lock,
        };
        if record_size {
            me.manifest.origin_size = Some(me.vol.len());
            me.manifest.save(dir)?;
        }
        if writable {
            // Only ever written under this exclusive lock: a leftover is debris of a killed save.
            let _ = fs::remove_file(dir.join(crate::manifest::MANIFEST_TMP));
        }
        if let Some(name) = me.manifest.merging.clone() {
            if let Err(blocked) = me.check_origin_writable(&format!("resuming the merge of {name}"))
            {
                // The merge would change the origin behind a broken snapshot's back: not resumed
                // (every command still opens, so `remove --force` can drop the broken one). The
                // origin shows the merging snapshot, as during any merge (in memory only, nothing
                // is written); origin writes stay refused while the snapshot is broken.
                if let Ok(id) = me.id(&name) {
                    let _ = me.vol.merge_begin(id);
                }
                // (A writing command says it itself if it needs the origin; one line only.)
                if !asked_writable {
                    eprintln!("cowsnap: warning: {}", blocked.msg);
                }
                return Ok(me);
            }
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
                    e.msg
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

    /// The id of an active snapshot; a broken one is an error saying why and what to do.
    pub fn id(&self, name: &str) -> CliResult<SnapshotId> {
        let i = self.index(name)?;
        match (self.ids[i], &self.broken[i]) {
            (Some(id), _) => Ok(id),
            (None, b) => {
                let b = b.clone().unwrap_or(Broken {
                    kind: ErrorKind::Io,
                    reason: "not activated".into(),
                });
                Err(CliError {
                    kind: b.kind,
                    msg: format!(
                        "snapshot {name} is broken: {}; drop it with `cowsnap remove --force {}`",
                        b.reason,
                        self.dir.join(name).display()
                    ),
                })
            }
        }
    }

    /// Active snapshots: (manifest entry, id).
    pub fn active(&self) -> impl Iterator<Item = (&SnapshotEntry, SnapshotId)> {
        self.manifest
            .snapshots
            .iter()
            .zip(&self.ids)
            .filter_map(|(e, id)| id.map(|id| (e, id)))
    }

    /// Refuses to change the origin while a snapshot is broken: its COW could not preserve the
    /// chunks being overwritten, so the snapshot would silently stop being a snapshot.
    pub fn check_origin_writable(&self, what: &str) -> CliResult {
        let first = self
            .manifest
            .snapshots
            .iter()
            .zip(&self.broken)
            .find_map(|(e, b)| b.as_ref().map(|b| (e, b)));
        match first {
            None => Ok(()),
            Some((e, b)) => Err(CliError::msg(format!(
                "{what} refused: snapshot {} is broken ({}) and its COW could not be kept up to \
                 date with the origin; drop it first with `cowsnap remove --force {}`",
                e.name,
                b.reason,
                self.dir.join(&e.name).display()
            ))),
        }
    }

    fn volume_name(&self) -> String {
        let canon = fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        canon
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "origin".into())
    }

    /// Drops a snapshot from the manifest (atomically) and deletes its COW file (only a file named
    /// in the volume directory itself, never following a link).
    fn forget(&mut self, name: &str) -> CliResult {
        let i = self.index(name)?;
        let e = self.manifest.snapshots.remove(i);
        self.ids.remove(i);
        self.broken.remove(i);
        if self.manifest.merging.as_deref() == Some(name) {
            self.manifest.merging = None;
        }
        self.manifest.save(&self.dir)?;
        // A name outside the directory, or one the manifest still uses (a broken entry naming the
        // origin or another snapshot's COW), is only dropped from the manifest.
        let in_use =
            self.manifest.origin == e.cow || self.manifest.snapshots.iter().any(|s| s.cow == e.cow);
        if files::check_plain_name(&e.cow).is_err() || in_use {
            return Ok(());
        }
        let p = self.dir.join(&e.cow);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() || m.file_type().is_symlink() => fs::remove_file(&p)
                .map_err(|err| CliError::io(format!("cannot remove {}: {err}", p.display()))),
            // Missing already, or something we never made (a directory, a device node): leave it.
            _ => Ok(()),
        }
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

/// Opens, checks and activates one snapshot of the manifest. `seen` holds the identities of the
/// files already in use (origin and COWs): the core refuses a repeated device too, but here the
/// message can name both files.
fn activate(
    vol: &mut Volume,
    dir: &Path,
    e: &SnapshotEntry,
    writable: bool,
    seen: &mut Vec<(FileId, String)>,
) -> CliResult<SnapshotId> {
    let what = format!("snapshot {}'s COW", e.name);
    let f = files::open_member(dir, &e.cow, writable, &what)?;
    if let Some((_, other)) = seen.iter().find(|(id, _)| *id == f.id) {
        return Err(CliError::msg(format!(
            "{what} {} is the same file as {other} (a hard link or a second name of one file): \
             two devices on one file would corrupt both",
            e.cow
        )));
    }
    seen.push((f.id, format!("snapshot {}'s COW {}", e.name, e.cow)));
    let cow = files::device(f.file).map_err(|err| CliError::core(&what, err))?;
    check_header(e, &cow)?;
    let opts = entry_options(e)?;
    vol.activate_snapshot(cow, opts)
        .map_err(|err| CliError::core(format!("snapshot {} ({})", e.name, e.cow), err))
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
        Request::Remove { snap, force } => exec_remove(v, snap, *force, io),
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

pub fn remove(target: &Path, force: bool, quiet: bool) -> CliResult {
    let (dir, snap) = resolve_snapshot(target)?;
    dispatch(&dir, Request::Remove { snap, force }, quiet)
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
    if size > MAX_FILE_SIZE {
        return Err(files::too_large(size));
    }
    if size % 512 != 0 {
        return Err(CliError::msg(format!(
            "origin size {size} bytes is not a whole number of 512-byte sectors"
        )));
    }
    if has_manifest(dir) {
        return Err(CliError::msg(format!(
            "{} is already a cowsnap volume",
            dir.display()
        )));
    }
    let made_dir = if dir.exists() {
        let empty = fs::read_dir(dir)
            .map_err(|e| CliError::io(format!("cannot read {}: {e}", dir.display())))?
            .next()
            .is_none();
        if !empty {
            return Err(CliError::msg(format!(
                "{} exists and is not empty",
                dir.display()
            )));
        }
        false
    } else {
        fs::create_dir_all(dir)
            .map_err(|e| CliError::io(format!("cannot create {}: {e}", dir.display())))?;
        true
    };
    let r = create_in(dir, size, chunk_size, quiet);
    if r.is_err() {
        // Leave the directory as it was: our files go, and the directory if we made it.
        for f in [
            ORIGIN_FILE,
            crate::manifest::MANIFEST_TMP,
            crate::manifest::LOCK,
            crate::manifest::WRITER_GATE,
        ] {
            let _ = fs::remove_file(dir.join(f));
        }
        if made_dir {
            let _ = fs::remove_dir(dir);
        }
    }
    r
}

fn create_in(dir: &Path, size: u64, chunk_size: u64, quiet: bool) -> CliResult {
    files::check_direct_size(size, "origin")?;
    let _lock = VolumeLock::acquire(dir, true, quiet)?;
    let origin = dir.join(ORIGIN_FILE);
    // Sparse, like a thin LV: the origin's space is taken as it is written.
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&origin)
        .map_err(io_err(&origin))?;
    f.set_len(size)
        .and_then(|()| f.sync_all())
        .map_err(io_err(&origin))?;
    let m = Manifest {
        format: crate::manifest::FORMAT,
        origin: ORIGIN_FILE.into(),
        origin_size: Some(size),
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
    // As lvcreate (and the C API): a COW that cannot hold one data chunk is invalid at the first
    // origin write.
    if size < 3 * chunk {
        return Err(CliError::msg(format!(
            "COW size {} is too small: a snapshot needs at least 3 chunks ({}) for its header, \
             first metadata area and one data chunk",
            human(size),
            human(3 * chunk)
        )));
    }
    if size > MAX_FILE_SIZE {
        return Err(files::too_large(size));
    }
    let path = v.dir.join(&entry.cow);
    // The whole COW is allocated now (as LVM allocates a snapshot's extents): a full host disk can
    // then never invalidate this snapshot. Refuses an existing file of that name.
    let cow = files::create_reserved(&v.dir, &entry.cow, size, &format!("snapshot {name}'s COW"))?;
    let undo = |v: &mut Opened, id: Option<SnapshotId>, e: CliError| {
        if let Some(id) = id {
            let _ = v.vol.delete_snapshot(id);
        }
        let _ = fs::remove_file(&path);
        Err(e)
    };
    let made = v
        .vol
        .create_snapshot(cow, opts)
        .map_err(|e| CliError::core(format!("snapshot {name}"), e));
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

fn exec_lvs(v: &Opened, as_json: bool, io: &mut Io) -> CliResult {
    let vname = v.volume_name();
    let merging = v.active().any(|(_, id)| {
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

fn io_err(what: &Path) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError::io(format!("{}: {e}", what.display()))
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
            let mut err =
                CliError::core(format!("write to {label} at offset {}", offset + done), e);
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
        Some(lost) => Err(CliError::degraded(format!(
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

fn exec_remove(v: &mut Opened, name: &str, force: bool, io: &mut Io) -> CliResult {
    let i = v.index(name)?;
    if v.ids[i].is_none() {
        if !force {
            // Say why, and how to drop it.
            return Err(CliError::msg(
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
    v.check_origin_writable(&format!("merging {name}"))?;
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
    let i = v.index(name)?;
    let cur = v.vol.snapshot_cow(id)?.len();
    let new = size
        .apply(cur)
        .map_err(|e| CliError::msg(format!("extend {name}: {e}")))?;
    if new > MAX_FILE_SIZE {
        return Err(files::too_large(new));
    }
    if new < cur {
        return Err(CliError::msg(format!(
            "extend {name}: {} is smaller than the COW's {}: a COW cannot shrink",
            human(new),
            human(cur)
        )));
    }
    // The core's FileDevice reserves the added range (the COW keeps its size if it cannot).
    v.vol.extend_snapshot(id, new).map_err(|e| {
        CliError::core(
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
