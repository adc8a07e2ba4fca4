//! Where commands put their results (`read --out`, `backup`, `export --out`, `replay --out-dir`):
//! what an output path names is decided before anything is written, and an output never replaces a
//! device node, a symlink, an input or a file of a volume.
//!
//! By kind of target (`cli/README.md` says the same to users):
//! - a regular file or a missing path: written to `PATH.cowsnap-tmp` in the same directory (created
//!   new, never an existing file), fsynced, then renamed over `PATH`; sparse where the data is zero.
//! - an existing block device: written in place like `dd of=` (opened `O_EXCL`, so a mounted device
//!   is refused; never truncated; refused when smaller than the data; zeros are written, a device is
//!   not sparse); the bytes past the data are left as they are.
//! - a character device or a FIFO: written through in order, every byte.
//! - a symlink: followed to its final target, and these rules apply to that; the link itself is never
//!   replaced. A dangling symlink is refused (we would have to pick where to create the file).
//! - a directory or a socket: refused.
//!
//! Identities, not names: an output that is the same file as an input or as a file of the volume
//! (same `st_dev` + `st_ino`, so through any path, symlink, hard link, `..` or bind mount; the same
//! `st_rdev` for two nodes of one block device; a loop device and its backing file) is refused before
//! anything is written.

use std::ffi::OsString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{ErrorKind, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::manifest::{Manifest, LOCK, MANIFEST};
use crate::{Error, Result};

/// Suffix of the temporary file a regular-file output is written to before it is renamed in place.
pub const TMP_SUFFIX: &str = ".cowsnap-tmp";

/// What makes two paths the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ident {
    /// A file system object: the same through any path, symlink, hard link or bind mount.
    Inode { dev: u64, ino: u64 },
    /// A block device, whichever node names it.
    Block(u64),
}

/// The identities of an existing file: its inode; for a block device also the device number and,
/// for a loop device, its backing file.
fn identities(path: &Path, meta: &Metadata) -> Vec<Ident> {
    let mut v = vec![Ident::Inode {
        dev: meta.dev(),
        ino: meta.ino(),
    }];
    if meta.file_type().is_block_device() {
        v.push(Ident::Block(meta.rdev()));
        if let Some(b) = loop_backing(path) {
            v.push(b);
        }
    }
    v
}

/// `struct loop_info64` of `<linux/loop.h>` (not in the libc crate).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;

/// The backing file of a loop device (`None` for any other block device, or an unbound loop).
fn loop_backing(path: &Path) -> Option<Ident> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    // SAFETY: an all-zero loop_info64 is a valid value (plain integers and byte arrays).
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 fills a struct loop_info64, which `info` is; the fd is ours. On any
    // other device the ioctl fails (ENOTTY) and nothing is written.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_GET_STATUS64 as _, &mut info) };
    (r == 0).then_some(Ident::Inode {
        dev: info.lo_device,
        ino: info.lo_inode,
    })
}

/// What an output must not be: inputs, the files of a volume (also by name, for those missing), the
/// file systems of a mount of the volume.
#[derive(Default, Clone)]
pub struct Guard {
    taken: Vec<(Ident, String)>,
    /// (directory dev, directory ino, file name, what).
    names: Vec<(u64, u64, OsString, String)>,
    /// st_dev of file systems no output may be on (a FUSE mount of the volume).
    filesystems: Vec<(u64, String)>,
}

impl Guard {
    pub fn new() -> Self {
        Guard::default()
    }

    /// An input of the command. A missing input is ignored here (opening it reports it).
    pub fn input(&mut self, path: &Path, what: &str) {
        if let Ok(meta) = fs::metadata(path) {
            for id in identities(path, &meta) {
                self.taken
                    .push((id, format!("{what} ({})", path.display())));
            }
        }
    }

    /// A file of a volume: refused by identity when it exists and by name in the volume directory
    /// (a missing COW or manifest must not be created by an output either).
    fn volume_file(&mut self, dir: &Path, dir_meta: &Metadata, name: &str, what: &str) {
        let p = dir.join(name);
        self.input(&p, what);
        self.names.push((
            dir_meta.dev(),
            dir_meta.ino(),
            OsString::from(name),
            format!("{what} ({})", p.display()),
        ));
    }

    /// Every file of the volume in `dir`; with `mount` (its mount point and the device number of
    /// its file system), also anything on its FUSE mount.
    pub fn volume(dir: &Path, m: &Manifest, mount: Option<(&Path, u64)>) -> Result<Self> {
        let mut g = Guard::new();
        let dir_meta = fs::metadata(dir).map_err(|e| io_msg(dir, e))?;
        let vol = format!("a file of the volume {}", dir.display());
        let origin = format!("the origin of the volume {}", dir.display());
        g.volume_file(dir, &dir_meta, &m.origin, &origin);
        for s in &m.snapshots {
            g.volume_file(
                dir,
                &dir_meta,
                &s.cow,
                &format!("the COW of snapshot {}", s.name),
            );
        }
        let tmp = format!("{MANIFEST}.tmp");
        for name in [
            MANIFEST,
            tmp.as_str(),
            LOCK,
            crate::client::SOCKET,
            crate::client::LOG,
        ] {
            g.volume_file(dir, &dir_meta, name, &vol);
        }
        g.input(dir, &vol);
        if let Some((mp, dev)) = mount {
            g.filesystems
                .push((dev, format!("the mount of this volume at {}", mp.display())));
        }
        Ok(g)
    }

    /// An input that is a file of a managed volume (its directory has a manifest) brings the whole
    /// volume: a raw `export` of `v/s1.cow` must not write over `v/s2.cow` either.
    pub fn volume_of(&mut self, input: &Path) {
        let Some(dir) = fs::canonicalize(input)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        else {
            return;
        };
        if let Ok(m) = Manifest::load(&dir) {
            if let Ok(g) = Guard::volume(&dir, &m, None) {
                self.taken.extend(g.taken);
                self.names.extend(g.names);
            }
        }
    }

    /// Refuses `shown` (resolved to `path`, with `meta` when it exists) if it is anything guarded.
    fn check(&self, shown: &Path, path: &Path, meta: Option<&Metadata>) -> Result {
        let refuse = |what: &str| {
            Err(Error::refused(format!(
                "refusing to write {}: it is {what}",
                shown.display()
            )))
        };
        if let Some(meta) = meta {
            for id in identities(path, meta) {
                if let Some((_, what)) = self.taken.iter().find(|(t, _)| *t == id) {
                    return refuse(what);
                }
            }
        }
        // The directory entry the output creates or replaces.
        let (parent, name) = split(path)?;
        let pmeta = fs::metadata(&parent).map_err(|e| {
            Error::msg(format!(
                "cannot write {}: directory {}: {e}",
                shown.display(),
                parent.display()
            ))
        })?;
        let dev = meta.map_or(pmeta.dev(), |m| m.dev());
        if let Some((_, what)) = self.filesystems.iter().find(|(d, _)| *d == dev) {
            return Err(Error::refused(format!(
                "refusing to write {}: it is on {what}",
                shown.display()
            )));
        }
        if let Some((.., what)) = self
            .names
            .iter()
            .find(|(d, i, n, _)| *d == pmeta.dev() && *i == pmeta.ino() && n == &name)
        {
            return refuse(what);
        }
        Ok(())
    }
}

/// A path's directory and file name (`.` for a bare name).
fn split(path: &Path) -> Result<(PathBuf, OsString)> {
    let name = path.file_name().ok_or_else(|| {
        Error::refused(format!(
            "{}: not a file name (it ends in .. or /)",
            path.display()
        ))
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_os_string()))
}

fn io_msg(p: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{}: {e}", p.display()))
}

/// True when `a` and `b` are the same existing file (or the same block device, or a loop device
/// and its backing file).
pub fn aliases(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (fs::metadata(a), fs::metadata(b)) else {
        return false;
    };
    let ib = identities(b, &mb);
    identities(a, &ma).iter().any(|i| ib.contains(i))
}

/// `out` with the temporary suffix.
pub fn tmp_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(TMP_SUFFIX);
    PathBuf::from(s)
}

/// How an output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file or a missing path: temporary file, fsync, rename; sparse.
    Replace,
    /// An existing block device: in place, every byte.
    Block,
    /// A character device or FIFO: in order, every byte.
    Stream,
}

/// An output path, classified and checked; nothing written yet.
pub struct Target {
    /// The path as given (for messages).
    shown: PathBuf,
    /// For `Replace`, the final file (symlinks followed); else the node to open.
    path: PathBuf,
    kind: Kind,
    /// A block device, opened (exclusively) while checking its size.
    device: Option<File>,
    /// The node classified (to check that the one opened is the same).
    meta: Option<Metadata>,
}

impl Target {
    /// Decides what `path` is and refuses what must not be written; `len` is the size of the data.
    pub fn classify(path: &Path, len: u64, guard: &Guard) -> Result<Target> {
        let shown = path.to_path_buf();
        let lmeta = match fs::symlink_metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(io_msg(path, e)),
        };
        let (path, meta) = match lmeta {
            None => (path.to_path_buf(), None),
            Some(m) if m.file_type().is_symlink() => match fs::metadata(path) {
                Ok(meta) if meta.is_file() => (
                    fs::canonicalize(path).map_err(|e| io_msg(path, e))?,
                    Some(meta),
                ),
                Ok(meta) => (path.to_path_buf(), Some(meta)),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    let to = fs::read_link(path).unwrap_or_default();
                    return Err(Error::refused(format!(
                        "refusing to write {}: it is a dangling symlink (to {}); name the file \
                         itself",
                        path.display(),
                        to.display()
                    )));
                }
                Err(e) => return Err(io_msg(path, e)),
            },
            Some(m) => (path.to_path_buf(), Some(m)),
        };
        let kind = match &meta {
            None => Kind::Replace,
            Some(m) => {
                let t = m.file_type();
                if t.is_file() {
                    Kind::Replace
                } else if t.is_block_device() {
                    Kind::Block
                } else if t.is_char_device() || t.is_fifo() {
                    Kind::Stream
                } else if t.is_dir() {
                    return Err(Error::refused(format!(
                        "cannot write {}: it is a directory; name a file",
                        shown.display()
                    )));
                } else {
                    return Err(Error::refused(format!(
                        "cannot write {}: it is a socket",
                        shown.display()
                    )));
                }
            }
        };
        guard.check(&shown, &path, meta.as_ref())?;
        // A file of another managed volume is no output either (its snapshots would read wrong).
        let (parent, _) = split(&path)?;
        if let Ok(m) = Manifest::load(&parent) {
            Guard::volume(&parent, &m, None)?.check(&shown, &path, meta.as_ref())?;
        }
        let mut device = None;
        match kind {
            Kind::Replace => {
                let (parent, _) = split(&path)?;
                if !fs::metadata(&parent).is_ok_and(|m| m.is_dir()) {
                    return Err(Error::msg(format!(
                        "cannot write {}: no directory {}",
                        shown.display(),
                        parent.display()
                    )));
                }
                let tmp = tmp_path(&path);
                if fs::symlink_metadata(&tmp).is_ok() {
                    return Err(Error::refused(format!(
                        "cannot write {}: {} exists (left by an interrupted cowsnap?); remove it \
                         first",
                        shown.display(),
                        tmp.display()
                    )));
                }
            }
            Kind::Block => {
                // O_EXCL on a block device: refused (EBUSY) while mounted or claimed, and claims it
                // for as long as we write.
                let mut f = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_EXCL)
                    .open(&path)
                    .map_err(|e| match e.raw_os_error() {
                        Some(libc::EBUSY) => Error::refused(format!(
                            "refusing to write {}: the device is in use (mounted?)",
                            shown.display()
                        )),
                        _ => io_msg(&shown, e),
                    })?;
                same_file(&f, meta.as_ref(), &shown)?;
                let size = f.seek(SeekFrom::End(0)).map_err(|e| io_msg(&shown, e))?;
                if size < len {
                    return Err(Error::refused(format!(
                        "refusing to write {}: the device holds {size} bytes, the data is {len}",
                        shown.display()
                    )));
                }
                device = Some(f);
            }
            Kind::Stream => {}
        }
        Ok(Target {
            shown,
            path,
            kind,
            device,
            meta,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// For a `Replace`: the temporary file, created and sized `len` (sparse), to be written as a
    /// device and committed by the caller.
    pub fn into_temp(self, len: u64) -> Result<TempFile> {
        if self.kind != Kind::Replace {
            return Err(Error::refused(format!(
                "cannot write {}: only a regular file (or a new one) can be written here, not a \
                 device",
                self.shown.display()
            )));
        }
        let t = TempFile::create(&self.path)?;
        t.file.set_len(len).map_err(|e| io_msg(&t.tmp, e))?;
        Ok(t)
    }

    /// Starts writing: creates the temporary file of a `Replace` (sized `len`, sparse), opens a
    /// stream.
    pub fn open(self, len: u64) -> Result<Writer> {
        let inner = match self.kind {
            Kind::Replace => {
                let t = TempFile::create(&self.path)?;
                t.file.set_len(len).map_err(|e| io_msg(&t.tmp, e))?;
                Inner::Temp(t)
            }
            Kind::Block => Inner::Block(
                self.device
                    .ok_or_else(|| Error::msg("internal error: block device output not opened"))?,
            ),
            Kind::Stream => {
                // No O_TRUNC, no O_CREAT: a node is written through, never made.
                let f = OpenOptions::new()
                    .write(true)
                    .open(&self.path)
                    .map_err(|e| io_msg(&self.shown, e))?;
                same_file(&f, self.meta.as_ref(), &self.shown)?;
                Inner::Stream(f)
            }
        };
        Ok(Writer {
            shown: self.shown,
            inner,
            pos: 0,
        })
    }
}

/// Refuses a node that is no longer the one classified (replaced between the check and the open).
fn same_file(f: &File, meta: Option<&Metadata>, shown: &Path) -> Result {
    let now = f.metadata().map_err(|e| io_msg(shown, e))?;
    match meta {
        Some(m) if m.dev() == now.dev() && m.ino() == now.ino() => Ok(()),
        _ => Err(Error::refused(format!(
            "refusing to write {}: it changed while being opened",
            shown.display()
        ))),
    }
}

/// A file created new beside its destination, removed unless committed.
pub struct TempFile {
    pub tmp: PathBuf,
    dest: PathBuf,
    pub file: File,
    committed: bool,
}

impl TempFile {
    /// Creates `DEST.cowsnap-tmp` (never opens an existing file, nor follows a symlink there).
    pub fn create(dest: &Path) -> Result<Self> {
        let tmp = tmp_path(dest);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => Error::refused(format!(
                    "cannot write {}: {} exists (left by an interrupted cowsnap?); remove it first",
                    dest.display(),
                    tmp.display()
                )),
                _ => io_msg(&tmp, e),
            })?;
        Ok(TempFile {
            tmp,
            dest: dest.to_path_buf(),
            file,
            committed: false,
        })
    }

    /// Makes the data durable (before it replaces anything).
    pub fn sync(&self) -> Result {
        self.file.sync_all().map_err(|e| io_msg(&self.tmp, e))
    }

    /// Renames the file over its destination and makes the rename durable.
    pub fn commit(mut self) -> Result {
        fs::rename(&self.tmp, &self.dest).map_err(|e| io_msg(&self.dest, e))?;
        self.committed = true;
        let (parent, _) = split(&self.dest)?;
        File::open(&parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_msg(&parent, e))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

enum Inner {
    Temp(TempFile),
    Block(File),
    Stream(File),
}

/// An output being written.
pub struct Writer {
    shown: PathBuf,
    inner: Inner,
    /// Bytes written so far to a stream.
    pos: u64,
}

impl Writer {
    /// Writes `b` at `at` (a stream only takes the next bytes in order).
    pub fn write_at(&mut self, at: u64, b: &[u8]) -> Result {
        let shown = &self.shown;
        let r = match &mut self.inner {
            Inner::Temp(t) => {
                if is_zero(b) {
                    return Ok(()); // a hole: the file was sized, and reads as zero there
                }
                t.file.write_all_at(b, at)
            }
            Inner::Block(f) => f.write_all_at(b, at),
            Inner::Stream(f) => {
                if at != self.pos {
                    return Err(Error::msg(format!(
                        "internal error: {} is a stream, written out of order",
                        shown.display()
                    )));
                }
                self.pos += b.len() as u64;
                f.write_all(b)
            }
        };
        r.map_err(|e| io_msg(shown, e))
    }

    /// Makes everything written durable; a `Replace` is put in place by [`Pending::commit`].
    pub fn finish(self) -> Result<Pending> {
        let shown = self.shown;
        match self.inner {
            Inner::Temp(t) => {
                t.sync()?;
                Ok(Pending(Some(t)))
            }
            Inner::Block(f) => {
                f.sync_all().map_err(|e| io_msg(&shown, e))?;
                Ok(Pending(None))
            }
            Inner::Stream(mut f) => {
                f.flush().map_err(|e| io_msg(&shown, e))?;
                // Character devices and FIFOs may not support fsync (EINVAL): nothing to make
                // durable there.
                match f.sync_all() {
                    Err(e) if e.raw_os_error() != Some(libc::EINVAL) => Err(io_msg(&shown, e)),
                    _ => Ok(Pending(None)),
                }
            }
        }
    }
}

/// A written output waiting to be renamed in place (nothing to do for devices).
pub struct Pending(Option<TempFile>);

impl Pending {
    pub fn commit(self) -> Result {
        match self.0 {
            Some(t) => t.commit(),
            None => Ok(()),
        }
    }
}

/// True when `b` is all zero (compared with memcmp, fast even unoptimised).
pub fn is_zero(b: &[u8]) -> bool {
    const Z: [u8; 4096] = [0; 4096];
    b.chunks(Z.len()).all(|c| c == &Z[..c.len()])
}

/// Writes a `len`-byte image to `out`: `fill` calls its sink with (offset, bytes), in order.
pub fn write_image(
    out: &Path,
    len: u64,
    guard: &Guard,
    fill: impl FnOnce(&mut dyn FnMut(u64, &[u8]) -> Result) -> Result,
) -> Result {
    let mut w = Target::classify(out, len, guard)?.open(len)?;
    fill(&mut |at, b| w.write_at(at, b))?;
    w.finish()?.commit()
}

/// The directory entry (`dev`, `ino` of the directory, name) a `Replace` target ends up at: two
/// outputs of one command must not share it.
pub fn entry_of(t: &Target) -> Result<(u64, u64, OsString)> {
    let (parent, name) = split(&t.path)?;
    let m = fs::metadata(&parent).map_err(|e| io_msg(&parent, e))?;
    Ok((m.dev(), m.ino(), name))
}
