//! `cowsnap mount DIR MOUNTPOINT`: the origin and every snapshot as files, through FUSE, and the
//! control socket through which other `cowsnap` commands reach the mounted volume.
//!
//! The mount process holds the volume open and its exclusive lock for as long as it runs, so it is the
//! only writer of the manifest and of every image. It listens on `DIR/.cowsnap.sock`; a managed
//! command (`snapshot`, `lvs`, `remove`, `read`, `write`, `extend`, `backup`) that finds a live socket
//! sends its request there and the mount process runs it between two FUSE requests, under the same
//! lock as the file system's writes. See `cli/FUSE.md`.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime};

use cowsnap_core::committer::Committer;
use cowsnap_core::shared::Poisoned;
use cowsnap_core::{Error as CoreError, SharedVolume, SnapshotId};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, InitFlags,
    KernelConfig, LockOwner, MountOption, Notifier, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, Session,
    SessionACL, WriteFlags,
};

use cowsnap_managed::client::{try_connect, with_socket_path, LOG, SOCKET};
use cowsnap_managed::manifest::{Manifest, VolumeLock, LOCK};
use cowsnap_managed::protocol::{self as request, FrameWriter, TAG_ERR, TAG_OK, TAG_REQUEST};
use cowsnap_managed::{Code, Io, MountHooks, Opened};

use crate::exec::{exec, exec_ro};
use crate::request::Request as CliRequest;
use crate::{CliError, CliResult};

/// Subtype of the file system (`fuse.cowsnap` when mounted through fusermount3; the direct mount(2)
/// path shows `fuse`, with the source `cowsnap:DIR`).
const SUBTYPE: &str = "cowsnap";

/// True for a mount made by `cowsnap mount`.
fn is_ours(fstype: &str, source: &str) -> bool {
    (fstype == "fuse" || fstype == "fuse.cowsnap") && source.starts_with("cowsnap")
}

const ROOT: u64 = 1;
const ORIGIN: u64 = 2;
/// Snapshot inode = SNAP_BASE + the core's snapshot id (never reused while mounted).
const SNAP_BASE: u64 = 16;
const TTL: Duration = Duration::from_secs(1);
/// Largest FUSE write (and readahead) request asked of the kernel. The kernel caps it at
/// `/proc/sys/fs/fuse/max_pages_limit` pages (256 = 1 MiB by default); asking for more lets a raised
/// limit be used. 4 MiB: one write-back request then covers many chunks' copies and one commit.
const MAX_WRITE: u32 = 4 << 20;
/// Held origin writes (waiting for their copies' commit) at which a FUSE thread, once it has
/// replied to its write, commits them. The commit's device flushes hold no lock (see
/// [`SharedVolume`]), so the other FUSE threads serve requests meanwhile.
const COMMIT_SOON_BYTES: usize = 16 << 20;
/// Held bytes at which a write waits for a commit before it is taken (the commits cannot keep up
/// with the writers): the bound on the memory held writes take.
const COMMIT_NOW_BYTES: usize = 64 << 20;

/// Options of `cowsnap mount`.
pub struct MountOpts {
    pub daemon: bool,
    pub writable_snapshots: bool,
    pub allow_other: bool,
    pub threads: usize,
    /// The kernel's write-back cache for the files (see `CowFs::init`).
    pub writeback_cache: bool,
}

/// State shared by the FUSE handlers and the control socket.
struct State {
    /// The volume and its manifest, shared as the C ABI shares a volume: origin writes from many
    /// FUSE threads at once, group commits whose device flushes hold no lock, commands through
    /// the control socket between commits.
    vol: SharedVolume<Opened>,
    /// Open file handles per inode (a snapshot with open handles cannot be removed).
    opens: Mutex<HashMap<u64, u32>>,
    writable_snapshots: bool,
    /// The kernel's write-back cache is asked for (see `CowFs::init`).
    writeback: bool,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
    mountpoint: PathBuf,
    /// The device number of the mount's file system (see `serve_client`).
    mount_dev: OnceLock<u64>,
    notifier: OnceLock<Notifier>,
    /// The origin is opened with `FOPEN_DIRECT_IO` (see `CowFs::init`).
    direct_io: AtomicBool,
}

impl State {
    /// Shared access; `None` once a thread panicked while it changed the volume (every request
    /// then fails with `EIO`: nothing is served from a state that may be half changed).
    fn read(&self) -> Option<RwLockReadGuard<'_, Opened>> {
        self.vol.read().ok()
    }
    fn open_count(&self, ino: u64) -> u32 {
        self.opens
            .lock()
            .map(|m| m.get(&ino).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Node {
    Root,
    Origin,
    Snap(SnapshotId),
}

fn snap_ino(id: SnapshotId) -> u64 {
    SNAP_BASE + u64::from(id.0)
}

/// The node of `ino`, if it (still) exists.
fn node(v: &Opened, ino: u64) -> Option<Node> {
    match ino {
        ROOT => Some(Node::Root),
        ORIGIN => Some(Node::Origin),
        i if i >= SNAP_BASE => {
            let id = SnapshotId(u32::try_from(i - SNAP_BASE).ok()?);
            v.ids.contains(&Some(id)).then_some(Node::Snap(id))
        }
        _ => None,
    }
}

fn errno_of(e: &CoreError) -> Errno {
    match e {
        CoreError::OutOfRange { .. } => Errno::EINVAL,
        CoreError::SnapshotInvalid => Errno::EIO,
        CoreError::UnknownSnapshot(_) => Errno::ENOENT,
        _ => Errno::EIO,
    }
}

/// The FUSE file system: `/origin` and `/<snapshot>`.
struct CowFs {
    st: Arc<State>,
}

impl CowFs {
    fn attr(&self, v: &Opened, n: Node) -> FileAttr {
        let t = self.st.mounted_at;
        let (ino, kind, perm, size, nlink) = match n {
            Node::Root => (ROOT, FileType::Directory, 0o755, 0, 2),
            Node::Origin => (ORIGIN, FileType::RegularFile, 0o644, v.vol.len(), 1),
            Node::Snap(id) => {
                let perm = if self.st.writable_snapshots {
                    0o644
                } else {
                    0o444
                };
                (snap_ino(id), FileType::RegularFile, perm, v.vol.len(), 1)
            }
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink,
            uid: self.st.uid,
            gid: self.st.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn writable(&self, n: Node) -> bool {
        match n {
            Node::Origin => true,
            Node::Snap(_) => self.st.writable_snapshots,
            Node::Root => false,
        }
    }
}

impl Filesystem for CowFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Err(limit) = the nearest value the kernel takes: use that.
        if let Err(max) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(max);
        }
        if let Err(max) = config.set_max_readahead(MAX_WRITE) {
            let _ = config.set_max_readahead(max);
        }
        // Write-back cache (`--writeback-cache`): writes land in the kernel's page cache and reach
        // us as write-back requests. It keeps fsync honest: the kernel writes the file's dirty pages
        // back (to `write`, here) and waits for them before it sends FUSE_FSYNC, which is the
        // engine's flush (`fsync` below), and a write-back error is returned by that fsync. What
        // changes is *when* a write's error shows: at fsync/close, as on any page-cached file.
        // Commands through the control socket write the dirty pages back first (`sync_mount`).
        if self.st.writeback {
            let _ = config.add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE);
        } else if config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_ok()
        {
            // Write-through: the origin is opened for direct I/O (`FOPEN_DIRECT_IO`). The kernel
            // then hands the caller's pages to us instead of copying them into a page cache of
            // its own first, which write-through gains nothing from (every write comes here
            // before it returns; reads are served from the origin file's own page cache). One
            // memory copy less per byte written or read (measured in cli/FUSE.md, Throughput).
            // Only with a kernel that still allows mmap on such files (6.6+), so that nothing a
            // caller could do before is refused now.
            self.st.direct_io.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 != ROOT {
            return reply.error(Errno::ENOENT);
        }
        let Some(v) = self.st.read() else {
            return reply.error(Errno::EIO);
        };
        let n = match name.to_str() {
            Some("origin") => Some(Node::Origin),
            Some(s) => v.index(s).ok().and_then(|i| v.ids[i]).map(Node::Snap),
            None => None,
        };
        match n {
            Some(n) => reply.entry(&TTL, &self.attr(&v, n), fuser::Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let Some(v) = self.st.read() else {
            return reply.error(Errno::EIO);
        };
        match node(&v, ino.0) {
            Some(n) => reply.attr(&TTL, &self.attr(&v, n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(v) = self.st.read() else {
            return reply.error(Errno::EIO);
        };
        let Some(n) = node(&v, ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        // The files are devices of a fixed size: no truncation; times and modes are not kept.
        if size.is_some_and(|s| s != v.vol.len()) {
            return reply.error(Errno::EPERM);
        }
        reply.attr(&TTL, &self.attr(&v, n));
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let Some(v) = self.st.read() else {
            return reply.error(Errno::EIO);
        };
        match node(&v, ino.0) {
            None => reply.error(Errno::ENOENT),
            Some(n) if mask.contains(AccessFlags::W_OK) && n != Node::Root && !self.writable(n) => {
                reply.error(Errno::EROFS)
            }
            Some(_) => reply.ok(),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(v) = self.st.read() else {
            return reply.error(Errno::EIO);
        };
        let Some(n) = node(&v, ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if n == Node::Root {
            return reply.error(Errno::EISDIR);
        }
        if flags.acc_mode() != OpenAccMode::O_RDONLY && !self.writable(n) {
            return reply.error(Errno::EROFS);
        }
        if let Ok(mut m) = self.st.opens.lock() {
            *m.entry(ino.0).or_insert(0) += 1;
        }
        // Read-only snapshots never change behind the kernel's back except through `cowsnap write`,
        // which invalidates the cache: keep it across opens.
        let keep = if matches!(n, Node::Snap(_)) {
            FopenFlags::FOPEN_KEEP_CACHE
        } else if self.st.direct_io.load(Ordering::Relaxed) {
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::empty()
        };
        reply.opened(FileHandle(ino.0), keep);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(v) = self.st.read() else {
            return reply.error(Errno::EIO);
        };
        let Some(n) = node(&v, ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let len = v.vol.len();
        if offset >= len {
            return reply.data(&[]);
        }
        let n_bytes = (len - offset).min(u64::from(size)) as usize;
        let mut buf = vec![0u8; n_bytes];
        let r = match n {
            Node::Origin => v.vol.read_at(offset, &mut buf),
            Node::Snap(id) => v.vol.snapshot_read_at(id, offset, &mut buf),
            Node::Root => return reply.error(Errno::EISDIR),
        };
        // Not held while the reply goes to the kernel.
        drop(v);
        match r {
            Ok(()) => reply.data(&buf),
            Err(e) => {
                eprintln!("cowsnap mount: read of inode {} at {offset}: {e}", ino.0);
                reply.error(errno_of(&e))
            }
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let (n, len) = {
            let Some(v) = self.st.read() else {
                return reply.error(Errno::EIO);
            };
            let Some(n) = node(&v, ino.0) else {
                return reply.error(Errno::ENOENT);
            };
            (n, v.vol.len())
        };
        if !self.writable(n) {
            return reply.error(Errno::EROFS);
        }
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|end| end > len)
        {
            // Like a block device: no room past the end.
            return reply.error(Errno::ENOSPC);
        }
        let r = match n {
            // Beside other threads' writes; may start (and wait for) a group commit.
            Node::Origin => self.st.vol.write_at(offset, data),
            // A snapshot removed meanwhile answers UnknownSnapshot (ENOENT).
            Node::Snap(id) => self
                .st
                .vol
                .exclusive()
                .map_err(CoreError::from)
                .and_then(|mut v| v.vol.snapshot_write_at(id, offset, data)),
            Node::Root => return reply.error(Errno::EISDIR),
        };
        match r {
            Ok(()) => {
                reply.written(data.len() as u32);
                // After the reply: this thread commits while the others serve the next writes
                // (nothing happens if a commit is under way; a failure leaves the writes
                // waiting, and the next fsync reports it).
                let soon = self
                    .st
                    .read()
                    .is_some_and(|v| v.vol.held_bytes() >= COMMIT_SOON_BYTES);
                if soon {
                    if let Err(e) = self.st.vol.commit_waiting() {
                        eprintln!("cowsnap mount: commit: {e} (retried; fsync reports it)");
                    }
                }
            }
            Err(e) => {
                eprintln!(
                    "cowsnap mount: write of {} bytes to inode {} at {offset}: {e}",
                    data.len(),
                    ino.0
                );
                reply.error(errno_of(&e))
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(): nothing is buffered here; durability is fsync's job.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut m) = self.st.opens.lock() {
            if let Some(c) = m.get_mut(&ino.0) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    m.remove(&ino.0);
                }
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // The engine's flush: origin and every COW with unflushed writes. (With the write-back
        // cache the kernel has written this file's dirty pages back, and waited, before this.)
        // Threads that fsync together share one group commit; no lock is held while the
        // devices flush, so reads and writes of other threads go on.
        let r = self.st.vol.flush();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => {
                eprintln!("cowsnap mount: fsync of inode {}: {e}", ino.0);
                reply.error(Errno::EIO)
            }
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let Some(v) = self.st.read() else {
            return reply.error(Errno::EIO);
        };
        let mut entries: Vec<(u64, FileType, String)> = vec![
            (ROOT, FileType::Directory, ".".into()),
            (ROOT, FileType::Directory, "..".into()),
            (ORIGIN, FileType::RegularFile, "origin".into()),
        ];
        for (e, id) in v.active() {
            entries.push((snap_ino(id), FileType::RegularFile, e.name.clone()));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let Some(v) = self.st.read() else {
            return reply.error(Errno::EIO);
        };
        let files = 1 + v.ids.len() as u64;
        let blocks = v.vol.len().div_ceil(4096) * files;
        reply.statfs(blocks, 0, 0, files, 0, 4096, 255, 4096);
    }
}

/// Mount hooks for commands run through the control socket: refusals and cache invalidations
/// (queued, and sent to the kernel after the volume lock is released).
struct Hooks<'a> {
    st: &'a State,
    pending: Mutex<Vec<Inval>>,
}

enum Inval {
    Inode(u64),
    Entry(String),
}

impl MountHooks for Hooks<'_> {
    fn check_removable(&self, id: SnapshotId, name: &str) -> CliResult {
        let n = self.st.open_count(snap_ino(id));
        if n > 0 {
            return Err(CliError::msg(format!(
                "snapshot {name} is in use: {}/{name} is open {n} time(s) (loop device? see \
                 `losetup -j {}/{name}`); detach it first",
                self.st.mountpoint.display(),
                self.st.mountpoint.display()
            )));
        }
        Ok(())
    }
    fn removed(&self, id: SnapshotId, name: &str) {
        if let Ok(mut p) = self.pending.lock() {
            p.push(Inval::Entry(name.to_string()));
            p.push(Inval::Inode(snap_ino(id)));
        }
    }
    fn changed(&self, id: Option<SnapshotId>) {
        if let Ok(mut p) = self.pending.lock() {
            p.push(Inval::Inode(id.map_or(ORIGIN, snap_ino)));
        }
    }
}

impl Hooks<'_> {
    fn send(self) {
        let Some(n) = self.st.notifier.get() else {
            return;
        };
        for i in self.pending.into_inner().unwrap_or_default() {
            // ENOENT: the kernel had nothing cached for it.
            let _ = match i {
                Inval::Inode(ino) => n.inval_inode(INodeNo(ino), 0, 0),
                Inval::Entry(name) => n.inval_entry(INodeNo(ROOT), OsStr::new(&name)),
            };
        }
    }
}

/// Serves one client of the control socket: one request, its output, its result.
fn serve_client(st: &State, stream: UnixStream) {
    let mut rd = &stream;
    // The client's protocol version decides the form of our error (1 had no version field).
    let mut version = 1;
    let req = match request::read_frame(&mut rd) {
        Ok(Some((TAG_REQUEST, b))) => {
            if let Some(v) = serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|j| j.get("version").and_then(|v| v.as_u64()))
            {
                version = u32::try_from(v).unwrap_or(u32::MAX);
            }
            serde_json::from_slice::<request::Envelope<CliRequest>>(&b)
                .map_err(|e| {
                    CliError::msg(format!("bad request to the mount process: {e}"))
                        .with_code(Code::Protocol)
                })
                .and_then(|env| env.check_version().map(|()| env))
        }
        Ok(_) => Err(CliError::msg("bad request to the mount process").with_code(Code::Protocol)),
        Err(e) => Err(CliError::msg(format!("reading the request: {e}")).with_code(Code::Protocol)),
    };
    // Everything written through the mount before this command is in the engine before it runs
    // (a snapshot holds it, `cowsnap read` sees it, and a `cowsnap write` is not overwritten later
    // by an older dirty page). No volume lock is held here: the write-back goes through the FUSE
    // threads.
    if st.writeback {
        if let Err(e) = sync_mount(&st.mountpoint) {
            eprintln!(
                "cowsnap mount: writing back dirty pages of {} before a command: {e} (the next \
                 fsync of the file reports it)",
                st.mountpoint.display()
            );
        }
    }
    // The mount's device number, for output paths on it: read here, with no lock held (a stat
    // of the mount point is served by the FUSE threads, which may need the volume's lock).
    let mount_dev = match st.mount_dev.get() {
        Some(d) => Some(*d),
        None => fs::metadata(&st.mountpoint).ok().map(|m| {
            let _ = st.mount_dev.set(m.dev());
            m.dev()
        }),
    };
    let hooks = Hooks {
        st,
        pending: Mutex::new(Vec::new()),
    };
    let mut out = FrameWriter::new(&stream);
    let mut input = request::FrameReader::new(&stream);
    let result = req.and_then(|env| {
        let req = env.request;
        refuse_own_files(&req, &st.mountpoint, mount_dev)?;
        let mut io = Io {
            out: &mut out,
            input: Some(&mut input),
            quiet: env.quiet,
            mountpoint: Some(&st.mountpoint),
            mount_dev,
            mount: Some(&hooks),
        };
        // Between group commits: a command sees the volume and its manifest as one.
        let poisoned = |p: Poisoned| CliError::core("the mounted volume", p.into());
        if req.writes() {
            exec(&mut *st.vol.exclusive().map_err(poisoned)?, &req, &mut io)
        } else {
            exec_ro(&*st.vol.read().map_err(poisoned)?, &req, &mut io)
        }
    });
    hooks.send();
    let _ = out.flush();
    let mut w = &stream;
    let _ = match result {
        Ok(()) => request::write_frame(&mut w, TAG_OK, &[]),
        Err(e) => request::write_frame(
            &mut w,
            TAG_ERR,
            &request::error_payload_for(&e, version.min(request::VERSION)),
        ),
    };
}

/// Refuses a command whose input or output file is on this mount, before any lock is taken. The
/// mount process would serve that file's reads and writes to itself while the command holds the
/// volume's lock (`write --from MOUNT/snap` waited for ever), and its files are the volume's own.
/// A path that does not exist yet is judged by its directory.
fn refuse_own_files(req: &CliRequest, mnt: &Path, mount_dev: Option<u64>) -> CliResult {
    let Some(dev) = mount_dev else {
        return Ok(());
    };
    for p in req.paths() {
        let on = |q: &Path| fs::metadata(q).is_ok_and(|m| m.dev() == dev);
        let here = if p.exists() {
            on(p)
        } else {
            p.parent().is_some_and(on)
        };
        if here {
            return Err(CliError::refused(format!(
                "refusing {}: it is on this volume's own mount at {} (its files are the volume; \
                 the mount process cannot read or write them for a command); use a path \
                 elsewhere, or unmount first",
                p.display(),
                mnt.display()
            )));
        }
    }
    Ok(())
}

/// syncfs(2) of the mount: the kernel writes every dirty page of its files back to this process
/// and waits for the replies.
fn sync_mount(mnt: &Path) -> io::Result<()> {
    let d = File::open(mnt)?;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Readahead of the mount's files: the kernel starts a FUSE mount at 128 KiB (what it offers at
/// INIT); a loop device reading a file sequentially gets whole `MAX_WRITE` requests with more. Best
/// effort (root only: `/sys/class/bdi/MAJ:MIN/read_ahead_kb`); read from mountinfo, not `stat`,
/// which would ask this very process before it serves.
fn tune_readahead(mnt: &Path) {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(dev) = text.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 4 && Path::new(f[4]) == mnt).then(|| f[2].to_string())
    }) else {
        return;
    };
    let _ = fs::write(
        format!("/sys/class/bdi/{dev}/read_ahead_kb"),
        (MAX_WRITE / 1024).to_string(),
    );
}

/// Parses `/proc/self/mountinfo`: (mount point, fs type, source) of every mount.
fn mounts() -> Vec<(PathBuf, String, String)> {
    fn unescape(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
                let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
                out.push(v);
                i += 4;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let f: Vec<&str> = pre.split(' ').collect();
        let g: Vec<&str> = post.split(' ').collect();
        if f.len() >= 5 && g.len() >= 2 {
            v.push((
                PathBuf::from(unescape(f[4])),
                g[0].to_string(),
                unescape(g[1]),
            ));
        }
    }
    v
}

/// The mount point as the kernel names it (a dead FUSE mount cannot be canonicalized: then the
/// absolute path as given).
fn mount_path(p: &Path) -> CliResult<PathBuf> {
    match fs::canonicalize(p) {
        Ok(c) => Ok(c),
        Err(_) if p.is_absolute() => Ok(p.to_path_buf()),
        Err(_) => {
            let cwd = std::env::current_dir()
                .map_err(|e| CliError::msg(format!("current directory: {e}")))?;
            Ok(cwd.join(p))
        }
    }
}

/// The mount source names the volume when its path allows it: `cowsnap:/abs/dir`.
fn fsname(dir: &Path) -> String {
    let s = dir.to_string_lossy();
    if s.chars()
        .any(|c| c == ',' || c == '\\' || c.is_whitespace())
    {
        "cowsnap".into()
    } else {
        format!("cowsnap:{s}")
    }
}

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn umount_syscall(mp: &Path) -> io::Result<()> {
    let c = CString::new(mp.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: umount2 with a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `cowsnap mount DIR MOUNTPOINT`.
pub fn mount(dir: &Path, mnt: &Path, opts: &MountOpts, quiet: bool) -> CliResult {
    Manifest::load(dir)?;
    let dir =
        fs::canonicalize(dir).map_err(|e| CliError::msg(format!("{}: {e}", dir.display())))?;
    let mnt = fs::canonicalize(mnt)
        .map_err(|e| CliError::msg(format!("mount point {}: {e}", mnt.display())))?;
    if !mnt.is_dir() {
        return Err(CliError::msg(format!(
            "mount point {} is not a directory",
            mnt.display()
        )));
    }
    if let Some((_, t, src)) = mounts().into_iter().rev().find(|(p, _, _)| *p == mnt) {
        if is_ours(&t, &src) {
            return Err(CliError::msg(format!(
                "{} is already a cowsnap mount point",
                mnt.display()
            )));
        }
    }
    if !opts.daemon {
        return serve(&dir, &mnt, opts, quiet, None).0;
    }
    // Fork before any thread exists; the parent returns once the child has mounted (or failed).
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(CliError::msg(format!(
            "pipe: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: the fds were just created by pipe2 and are owned here only.
    let (mut rd, wr) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: fork in a single-threaded process; the child only continues this program.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(CliError::msg(format!(
            "fork: {}",
            io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        drop(rd);
        // SAFETY: a new session, so that the daemon outlives the terminal.
        unsafe { libc::setsid() };
        let (r, told) = serve(&dir, &mnt, opts, quiet, Some(wr));
        let code = match r {
            Ok(()) => 0,
            Err(e) => {
                // An error the parent received through the pipe is printed there, once.
                if !told {
                    eprintln!("cowsnap: error: {}", e.msg);
                }
                e.kind.exit_code() as i32
            }
        };
        std::process::exit(code);
    }
    drop(wr);
    let mut msg = String::new();
    let _ = rd.read_to_string(&mut msg);
    match msg.strip_prefix("OK") {
        Some(_) => {
            if !quiet {
                println!(
                    "mounted {} at {} (daemon pid {pid}, log {}); unmount with: cowsnap umount {}",
                    dir.display(),
                    mnt.display(),
                    dir.join(LOG).display(),
                    mnt.display()
                );
            }
            Ok(())
        }
        None => {
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            Err(match msg.trim() {
                "" => CliError::io("the mount process exited during start-up"),
                m => request::parse_error_payload(m.as_bytes()),
            })
        }
    }
}

/// Opens the volume, mounts it and serves until it is unmounted. `ready` (daemon mode) receives
/// `OK` once mounted, or the error; the flag says whether an error went to `ready`.
fn serve(
    dir: &Path,
    mnt: &Path,
    opts: &MountOpts,
    quiet: bool,
    mut ready: Option<File>,
) -> (CliResult, bool) {
    let r = serve_inner(dir, mnt, opts, quiet, &mut ready);
    let mut told = false;
    if let (Err(e), Some(w)) = (&r, ready.as_mut()) {
        told = w.write_all(&request::error_payload(e)).is_ok();
    }
    (r, told)
}

fn serve_inner(
    dir: &Path,
    mnt: &Path,
    opts: &MountOpts,
    quiet: bool,
    ready: &mut Option<File>,
) -> CliResult {
    let Some(lock) = VolumeLock::try_acquire(dir, true)? else {
        return Err(CliError::msg(match try_connect(dir)? {
            Some(_) => format!("{} is already mounted", dir.display()),
            None => format!(
                "{} is in use by another cowsnap process (lock {})",
                dir.display(),
                dir.join(LOCK).display()
            ),
        }));
    };
    let mut v = Opened::open_locked(dir, true, quiet, lock, crate::access())?;
    v.vol.set_commit_bytes(COMMIT_NOW_BYTES);
    // The files of the mount would let the origin be written behind a broken snapshot's back.
    v.check_origin_writable("mounting the volume")?;
    // A client that goes away must not kill the mount process.
    // SAFETY: setting the disposition of SIGPIPE to ignore.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let st = Arc::new(State {
        vol: SharedVolume::new(v),
        opens: Mutex::new(HashMap::new()),
        writable_snapshots: opts.writable_snapshots,
        writeback: opts.writeback_cache,
        // SAFETY: getuid/getgid cannot fail.
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
        mounted_at: SystemTime::now(),
        mountpoint: mnt.to_path_buf(),
        mount_dev: OnceLock::new(),
        notifier: OnceLock::new(),
        direct_io: AtomicBool::new(false),
    });

    // A socket left by a dead mount process (we hold the lock, so nobody serves it).
    let sock = dir.join(SOCKET);
    let _ = fs::remove_file(&sock);
    let listener = with_socket_path(dir, |p| UnixListener::bind(p))
        .map_err(|e| CliError::msg(format!("cannot listen on {}: {e}", sock.display())))?;
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o600))
        .map_err(|e| CliError::msg(format!("{}: {e}", sock.display())))?;
    let cleanup = SocketCleanup(sock.clone());

    // Signals go to one thread (below), which unmounts: every thread inherits this mask.
    let signals = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
    let set = sigset(&signals);
    // SAFETY: changing this thread's signal mask with a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };

    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName(fsname(dir)),
        MountOption::Subtype(SUBTYPE.into()),
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoAtime,
    ];
    if opts.allow_other {
        config.acl = SessionACL::All;
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    config.n_threads = Some(opts.threads.max(1));
    // One /dev/fuse descriptor per thread: requests are handed to the threads by the kernel.
    config.clone_fd = true;
    let session = Session::new(CowFs { st: st.clone() }, mnt, &config).map_err(|e| {
        CliError::msg(format!(
            "cannot mount FUSE at {}: {e} (needs /dev/fuse, and root or fusermount3)",
            mnt.display()
        ))
    })?;
    let _ = st.notifier.set(session.notifier());
    tune_readahead(mnt);

    {
        let st = st.clone();
        std::thread::Builder::new()
            .name("cowsnap-control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    let st = st.clone();
                    let _ = std::thread::Builder::new()
                        .name("cowsnap-client".into())
                        .spawn(move || serve_client(&st, conn));
                }
            })
            .map_err(|e| CliError::msg(format!("thread: {e}")))?;
    }
    // Commits what waits every COMMIT_INTERVAL, so FUSE clients that never fsync still get their
    // writes onto the devices within 200 ms (a killed mount process loses no more than that).
    let committer = Committer::start(cowsnap_core::COMMIT_INTERVAL, {
        let weak = Arc::downgrade(&st);
        move || {
            let Some(st) = weak.upgrade() else {
                return false;
            };
            if let Err(e) = st.vol.commit_waiting() {
                eprintln!("cowsnap mount: background commit: {e} (retried; fsync reports it)");
            }
            true
        }
    })
    .map_err(|e| CliError::msg(format!("thread: {e}")))?;
    {
        let mnt = mnt.to_path_buf();
        std::thread::Builder::new()
            .name("cowsnap-signals".into())
            .spawn(move || loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: waiting for the blocked signals in `set`.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                match umount_syscall(&mnt) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {} // already gone
                    Err(e) => eprintln!(
                        "cowsnap mount: signal {sig}: cannot unmount {}: {e}; still serving \
                         (detach loop devices and close files under it first)",
                        mnt.display()
                    ),
                }
            })
            .map_err(|e| CliError::msg(format!("thread: {e}")))?;
    }

    match ready.take() {
        Some(mut w) => {
            redirect_output(&dir.join(LOG));
            eprintln!(
                "cowsnap mount: pid {} serving {} at {}",
                std::process::id(),
                dir.display(),
                mnt.display()
            );
            let _ = w.write_all(b"OK");
        }
        None => {
            if !quiet {
                let Some(v) = st.read() else {
                    return Err(CliError::core("the mounted volume", Poisoned.into()));
                };
                let names: Vec<&str> = v
                    .manifest
                    .snapshots
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect();
                println!(
                    "mounted {} at {}: origin{}{}; unmount with: cowsnap umount {} (or Ctrl-C)",
                    dir.display(),
                    mnt.display(),
                    if names.is_empty() { "" } else { ", " },
                    names.join(", "),
                    mnt.display()
                );
            }
        }
    }

    let started = Instant::now();
    let run = session.run();
    // Unmounted: make everything durable before the lock goes (with the process).
    drop(committer); // stopped and joined: the flush below is the last
    let flushed = match st.vol.exclusive() {
        Ok(mut v) => v.flush(),
        Err(p) => {
            // A FUSE thread panicked while it changed the volume: nothing of its state is
            // trusted, not even to write out what waits.
            eprintln!(
                "cowsnap mount: a thread panicked while changing the volume; origin writes that \
                 waited for their commit (at most {} MiB) were NOT written; the snapshots and \
                 the origin are as of the last commit",
                COMMIT_NOW_BYTES >> 20
            );
            Err(CliError::core("the mounted volume", p.into()))
        }
    };
    drop(cleanup);
    if !quiet {
        eprintln!(
            "cowsnap mount: unmounted {} after {:.0?}",
            mnt.display(),
            started.elapsed()
        );
    }
    run.map_err(|e| CliError::msg(format!("FUSE session of {}: {e}", mnt.display())))?;
    flushed
}

/// Removes the control socket when the mount process ends.
struct SocketCleanup(PathBuf);

impl Drop for SocketCleanup {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Daemon: stdin from /dev/null, stdout and stderr appended to the log.
fn redirect_output(log: &Path) {
    let null = File::open("/dev/null");
    let out = OpenOptions::new().create(true).append(true).open(log);
    // SAFETY: dup2 onto the standard descriptors with fds we own.
    unsafe {
        if let Ok(n) = &null {
            libc::dup2(n.as_raw_fd(), 0);
        }
        if let Ok(o) = &out {
            libc::dup2(o.as_raw_fd(), 1);
            libc::dup2(o.as_raw_fd(), 2);
        }
    }
}

/// `cowsnap umount MOUNTPOINT`: unmounts, then waits until the mount process has flushed the volume
/// and exited.
pub fn umount(mnt: &Path, quiet: bool) -> CliResult {
    let mp = mount_path(mnt)?;
    let Some((_, t, source)) = mounts().into_iter().rev().find(|(p, _, _)| *p == mp) else {
        return Err(CliError::msg(format!("{} is not mounted", mp.display())));
    };
    if !is_ours(&t, &source) {
        return Err(CliError::msg(format!(
            "{} is not a cowsnap mount (type {t}, source {source})",
            mp.display()
        )));
    }
    match umount_syscall(&mp) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            return Err(CliError::msg(format!(
                "{} is busy: a loop device or a process still uses a file under it (see \
                 `losetup -j {}/origin`, `fuser -vm {}`)",
                mp.display(),
                mp.display(),
                mp.display()
            )))
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let ok = ["fusermount3", "fusermount"].iter().any(|b| {
                std::process::Command::new(b)
                    .arg("-u")
                    .arg(&mp)
                    .status()
                    .is_ok_and(|s| s.success())
            });
            if !ok {
                return Err(CliError::msg(format!(
                    "cannot unmount {}: {e} (and fusermount -u failed)",
                    mp.display()
                )));
            }
        }
        Err(e) => {
            return Err(CliError::msg(format!(
                "cannot unmount {}: {e}",
                mp.display()
            )))
        }
    }
    // Wait for the mount process to flush and release the volume.
    if let Some(dir) = source.strip_prefix("cowsnap:").map(PathBuf::from) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Manifest::path(&dir).is_file() {
            if VolumeLock::try_acquire(&dir, true)?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                return Err(CliError::msg(format!(
                    "unmounted {}, but the mount process still holds {} after 60 s",
                    mp.display(),
                    dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if !quiet {
        println!("unmounted {}", mp.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsname_avoids_option_separators() {
        assert_eq!(fsname(Path::new("/a/b")), "cowsnap:/a/b");
        assert_eq!(fsname(Path::new("/a,b")), "cowsnap");
        assert_eq!(fsname(Path::new("/a b")), "cowsnap");
    }
}
