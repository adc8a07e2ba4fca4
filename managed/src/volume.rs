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

use std::fs;
use std::path::{Path, PathBuf};

use cowsnap_core::store::parse_store;
use cowsnap_core::store::persistent::{Header, SNAP_MAGIC};
use cowsnap_core::{
    Autoextend, ChunkSize, FileDevice, SnapshotId, SnapshotOptions, StoreKind, Volume,
};

use crate::error::io_err;
use crate::files::{self, Access, FileId, MAX_FILE_SIZE};
use crate::manifest::{Manifest, SnapshotEntry, VolumeLock};
use crate::progress::Progress;
use crate::{Code, Error, ErrorKind, Result};

/// Origin image file name.
pub const ORIGIN_FILE: &str = "origin.img";
/// File names (suffixes) only cowsnap makes in a volume directory: found as leftovers when the
/// manifest does not know them.
pub const COW_SUFFIX: &str = ".cow";
pub const TMP_SUFFIX: &str = ".cowsnap-tmp";

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
    /// How the files are opened (and the COWs created later).
    pub access: Access,
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
pub fn resolve(path: &Path) -> Result<Target> {
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
                .ok_or_else(|| Error::msg(format!("bad snapshot name in {}", path.display())))?;
            return Ok(Target {
                dir: parent.to_path_buf(),
                snap: Some(name.to_string()),
            });
        }
    }
    // Name what is actually missing: the directory itself, or (for DIR/NAME) a missing DIR.
    if !path.exists() {
        if let Some(p) = parent.filter(|p| !p.exists()) {
            return Err(Error::msg(format!(
                "no such volume directory: {}",
                p.display()
            )));
        }
    }
    Err(Manifest::load(path)
        .err()
        .unwrap_or_else(|| Error::msg(format!("{} is not a cowsnap volume", path.display()))))
}

/// Resolves `DIR/NAME`, refusing a bare volume.
pub fn resolve_snapshot(path: &Path) -> Result<(PathBuf, String)> {
    let t = resolve(path)?;
    match t.snap {
        Some(s) => Ok((t.dir, s)),
        None => Err(Error::msg(format!(
            "{} is a volume; this command needs a snapshot: DIR/NAME",
            path.display()
        ))),
    }
}

pub(crate) fn entry_options(e: &SnapshotEntry) -> Result<SnapshotOptions> {
    let (store, overflow) = parse_store(&e.store).map_err(|err| {
        Error::msg(format!(
            "snapshot {}: store {:?} in manifest: {err}",
            e.name, e.store
        ))
    })?;
    if store == StoreKind::Transient {
        return Err(Error::msg(format!(
            "snapshot {}: a transient (N) store cannot be in a manifest",
            e.name
        )));
    }
    Ok(SnapshotOptions {
        chunk_size: ChunkSize::new(e.chunk_size)
            .map_err(|err| Error::core(format!("snapshot {}", e.name), err))?,
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
fn check_header(e: &SnapshotEntry, cow: &FileDevice) -> Result {
    let corrupt =
        |why: String| Error::io(format!("snapshot {}: corrupt COW {}: {why}", e.name, e.cow));
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
    /// Activates the volume in `dir` under `lock` (exclusive when `writable`), its files opened
    /// with `access`; finishes an interrupted merge first.
    pub fn open_locked(
        dir: &Path,
        writable: bool,
        quiet: bool,
        mut lock: VolumeLock,
        access: Access,
    ) -> Result<Self> {
        let mut manifest = Manifest::load(dir)?;
        let asked_writable = writable;
        let mut writable = writable;
        if manifest.merging.is_some() && !writable {
            drop(lock);
            lock = VolumeLock::acquire(dir, true, quiet)?;
            manifest = Manifest::load(dir)?;
            writable = true;
        }
        let origin = files::open_member(dir, &manifest.origin, writable, "origin", access)?;
        let mut record_size = false;
        match manifest.origin_size {
            Some(n) if n != origin.len => {
                return Err(Error::io(format!(
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
        let dev = files::device(origin.file, access)
            .map_err(|e| Error::core(dir.join(&manifest.origin).display(), e))?;
        let mut vol = Volume::new(dev);
        let mut seen: Vec<(FileId, String)> = vec![(origin_id, "the origin".into())];
        let (mut ids, mut broken) = (Vec::new(), Vec::new());
        for e in &manifest.snapshots {
            match activate(&mut vol, dir, e, writable, access, &mut seen) {
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
            access,
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

    pub fn index(&self, name: &str) -> Result<usize> {
        self.manifest
            .snapshots
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| {
                Error::msg(format!(
                    "no snapshot named {name:?} in volume {} (see `cowsnap lvs {}`)",
                    self.dir.display(),
                    self.dir.display()
                ))
                .with_code(Code::Core(cowsnap_core::ErrorCode::UnknownSnapshot))
            })
    }

    /// The id of an active snapshot; a broken one is an error saying why and what to do.
    pub fn id(&self, name: &str) -> Result<SnapshotId> {
        let i = self.index(name)?;
        match (self.ids[i], &self.broken[i]) {
            (Some(id), _) => Ok(id),
            (None, b) => {
                let b = b.clone().unwrap_or(Broken {
                    kind: ErrorKind::Io,
                    reason: "not activated".into(),
                });
                Err(Error {
                    kind: b.kind,
                    code: Code::Broken,
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
    pub fn check_origin_writable(&self, what: &str) -> Result {
        let first = self
            .manifest
            .snapshots
            .iter()
            .zip(&self.broken)
            .find_map(|(e, b)| b.as_ref().map(|b| (e, b)));
        match first {
            None => Ok(()),
            Some((e, b)) => Err(Error::msg(format!(
                "{what} refused: snapshot {} is broken ({}) and its COW could not be kept up to \
                 date with the origin; drop it first with `cowsnap remove --force {}`",
                e.name,
                b.reason,
                self.dir.join(&e.name).display()
            ))),
        }
    }

    pub fn volume_name(&self) -> String {
        let canon = fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        canon
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "origin".into())
    }

    /// Drops a snapshot from the manifest (atomically) and deletes its COW file (only a file named
    /// in the volume directory itself, never following a link).
    pub fn forget(&mut self, name: &str) -> Result {
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
                .map_err(|err| Error::io(format!("cannot remove {}: {err}", p.display()))),
            // Missing already, or something we never made (a directory, a device node): leave it.
            _ => Ok(()),
        }
    }

    /// Runs (or resumes) the merge of `name` to the end, then forgets the snapshot.
    pub fn finish_merge(&mut self, name: &str, quiet: bool) -> Result {
        debug_assert!(self.writable);
        let id = self.id(name)?;
        let ctx = format!("merge of {name}");
        let bar = Progress::new(0, &format!("merging {name}"), false, quiet);
        let result = self.vol.merge_snapshot(id, |p| {
            bar.set_total(p.total);
            bar.set(p.merged);
        });
        bar.finish();
        result.map_err(|e| Error::core(&ctx, e))?;
        self.vol.flush().map_err(|e| Error::core(&ctx, e))?;
        self.forget(name)
    }

    pub fn flush(&mut self) -> Result {
        self.vol.flush().map_err(|e| Error::core("flush", e))
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
    access: Access,
    seen: &mut Vec<(FileId, String)>,
) -> Result<SnapshotId> {
    let what = format!("snapshot {}'s COW", e.name);
    let f = files::open_member(dir, &e.cow, writable, &what, access)?;
    if let Some((_, other)) = seen.iter().find(|(id, _)| *id == f.id) {
        return Err(Error::msg(format!(
            "{what} {} is the same file as {other} (a hard link or a second name of one file): \
             two devices on one file would corrupt both",
            e.cow
        )));
    }
    seen.push((f.id, format!("snapshot {}'s COW {}", e.name, e.cow)));
    let cow = files::device(f.file, access).map_err(|err| Error::core(&what, err))?;
    check_header(e, &cow)?;
    let opts = entry_options(e)?;
    vol.activate_snapshot(cow, opts)
        .map_err(|err| Error::core(format!("snapshot {} ({})", e.name, e.cow), err))
}

/// Creates a managed volume in `dir` (made if missing, else it must be empty): a sparse origin
/// image of `size` bytes and a manifest whose snapshots default to `chunk_size`. Anything made is
/// removed again on failure.
pub fn create_volume(dir: &Path, size: u64, chunk_size: u64, access: Access) -> Result {
    ChunkSize::new(chunk_size).map_err(|e| Error::core("--chunk-size", e))?;
    if size == 0 {
        return Err(Error::msg("--size must be greater than 0"));
    }
    if size > MAX_FILE_SIZE {
        return Err(files::too_large(size));
    }
    if size % 512 != 0 {
        return Err(Error::msg(format!(
            "origin size {size} bytes is not a whole number of 512-byte sectors"
        )));
    }
    if has_manifest(dir) {
        return Err(Error::msg(format!(
            "{} is already a cowsnap volume",
            dir.display()
        )));
    }
    let made_dir = if dir.exists() {
        let empty = fs::read_dir(dir)
            .map_err(|e| Error::io(format!("cannot read {}: {e}", dir.display())))?
            .next()
            .is_none();
        if !empty {
            return Err(Error::msg(format!(
                "{} exists and is not empty",
                dir.display()
            )));
        }
        false
    } else {
        fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {}: {e}", dir.display())))?;
        true
    };
    let r = create_in(dir, size, chunk_size, access);
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

fn create_in(dir: &Path, size: u64, chunk_size: u64, access: Access) -> Result {
    files::check_direct_size(size, "origin", access)?;
    let _lock = VolumeLock::acquire(dir, true, true)?;
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
    Ok(())
}

/// Opens the managed volume in `dir` for a program (the C ABI, Python): the exclusive lock taken
/// without waiting (an error with code [`BUSY`](cowsnap_core::ErrorCode::Busy) when a `cowsnap`
/// command, a mount or another program holds it), every snapshot activated with the manifest's store, chunk size and autoextend
/// policy, an interrupted merge finished. A broken snapshot refuses the open (its COW could not
/// follow origin writes): `cowsnap lvs` shows why, `cowsnap remove --force` drops it.
pub fn open_dir(dir: &Path) -> Result<Opened> {
    Manifest::load(dir)?;
    let Some(lock) = VolumeLock::try_acquire(dir, true)? else {
        let mounted = crate::client::try_connect(dir).ok().flatten().is_some();
        return Err(Error::msg(if mounted {
            format!(
                "{} is mounted (cowsnap mount): its mount process is the only writer; use the \
                 files under its mount point, or unmount it",
                dir.display()
            )
        } else {
            format!(
                "{} is in use by another process (lock {} held)",
                dir.display(),
                dir.join(crate::manifest::LOCK).display()
            )
        })
        .with_code(Code::Core(cowsnap_core::ErrorCode::Busy)));
    };
    let v = Opened::open_locked(dir, true, true, lock, Access::default())?;
    v.check_origin_writable("opening the volume")
        .map_err(|e| e.with_code(Code::Broken))?;
    Ok(v)
}

/// What a program keeps of an [`Opened`] volume once it takes the [`Volume`] for itself (the C ABI
/// puts it behind its own lock): the exclusive lock, held until this is dropped, and which engine
/// snapshot is which manifest entry.
pub struct Lease {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Snapshot ids, in manifest order (`open_dir` refuses broken snapshots, so all are `Some`).
    pub ids: Vec<Option<SnapshotId>>,
    _lock: VolumeLock,
}

impl Lease {
    /// The manifest name of snapshot `id`, if the manifest lists it.
    pub fn name_of(&self, id: SnapshotId) -> Option<&str> {
        self.ids
            .iter()
            .position(|x| *x == Some(id))
            .map(|i| self.manifest.snapshots[i].name.as_str())
    }

    /// The id of the manifest snapshot `name`.
    pub fn id_of(&self, name: &str) -> Option<SnapshotId> {
        self.manifest
            .snapshots
            .iter()
            .position(|s| s.name == name)
            .and_then(|i| self.ids[i])
    }

    /// The id of the manifest snapshot `name`, or `UNKNOWN_SNAPSHOT` naming the directory.
    pub fn snapshot_named(&self, name: &str) -> Result<SnapshotId> {
        self.id_of(name).ok_or_else(|| {
            Error::coded(
                cowsnap_core::ErrorCode::UnknownSnapshot,
                format!(
                    "no snapshot named {name:?} in the manifest of {}",
                    self.dir.display()
                ),
            )
        })
    }

    /// Refuses to change which snapshots exist behind the manifest's back: deleting or merging a
    /// snapshot the manifest lists would leave an entry whose COW no longer follows the origin.
    pub fn check_unlisted(&self, id: SnapshotId, what: &str) -> Result {
        match self.name_of(id) {
            None => Ok(()),
            Some(name) => Err(Error::msg(format!(
                "{what} of snapshot {name} refused: it is listed in the manifest of the volume \
                 {}; use `cowsnap remove` / `cowsnap merge {}`",
                self.dir.display(),
                self.dir.join(name).display()
            ))),
        }
    }
}

/// A mount shares the volume with its manifest (one lock for both, see `cowsnap mount`).
impl cowsnap_core::HoldsVolume for Opened {
    fn volume(&self) -> &Volume {
        &self.vol
    }
    fn volume_mut(&mut self) -> &mut Volume {
        &mut self.vol
    }
}

impl Opened {
    /// Splits the volume from its lock and manifest (see [`Lease`]).
    pub fn into_parts(self) -> (Volume, Lease) {
        (
            self.vol,
            Lease {
                dir: self.dir,
                manifest: self.manifest,
                ids: self.ids,
                _lock: self._lock,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two volumes of one process, one opened with direct I/O and one without: each keeps its own
    /// access (no process-wide switch), for its origin and for the COWs it creates later.
    #[test]
    fn each_volume_keeps_its_own_access() {
        let base = std::env::temp_dir().join(format!("cowsnap-access-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).unwrap();
        let direct = Access { direct: true };
        let mut seen = Vec::new();
        for (name, access) in [("d", direct), ("b", Access::default()), ("d2", direct)] {
            let dir = base.join(name);
            create_volume(&dir, 1 << 20, 4096, access).unwrap();
            let lock = VolumeLock::acquire(&dir, true, true).unwrap();
            match Opened::open_locked(&dir, true, true, lock, access) {
                Ok(v) => seen.push((access, v.vol.origin().io_alignment(), v.access)),
                // A temporary directory without direct I/O (tmpfs before Linux 6.6): nothing to see.
                Err(e) if e.msg.contains("direct I/O") => {
                    let _ = fs::remove_dir_all(&base);
                    return;
                }
                Err(e) => panic!("{e}"),
            }
        }
        for (access, align, kept) in seen {
            assert_eq!(kept, access);
            assert_eq!(align > 1, access.direct, "{access:?}: alignment {align}");
        }
        fs::remove_dir_all(&base).unwrap();
    }
}
