//! A volume opened by a program (the C ABI's `cowsnap_volume`, and so Python's `Volume`): shared by
//! the program's threads, committed in the background, and, when it came from a volume directory,
//! holding that directory's lock and refusing to change the snapshots its manifest lists.

use std::path::Path;
use std::sync::{Arc, RwLockReadGuard};

use cowsnap_core::committer::Committer;
use cowsnap_core::shared::Exclusive;
use cowsnap_core::{limits, ErrorCode, SharedVolume, SnapshotId, SnapshotOptions, Volume};

use crate::paths::{self, Created, Space};
use crate::volume::Lease;
use crate::{Error, Result};

/// An open volume and what keeps it safe while a program uses it.
pub struct Handle {
    inner: Arc<SharedVolume>,
    /// Origin size in bytes (fixed for the life of the volume).
    size: u64,
    /// Commits waiting origin writes in the background, so that a program that never flushes
    /// loses at most one interval of writes with the process.
    committer: Option<Committer>,
    /// A volume directory's lock and manifest. Last: dropped after the volume, so the lock
    /// outlives every write.
    lease: Option<Lease>,
}

impl Handle {
    /// Shares `vol` between threads and starts its background commits; `lease` when it was opened
    /// from a volume directory.
    pub fn new(vol: Volume, lease: Option<Lease>) -> Self {
        let size = vol.len();
        let inner = Arc::new(SharedVolume::new(vol));
        // Without the thread the volume still commits on flush and on its size bound. A failed
        // background commit leaves the writes waiting; the program's next flush reports it.
        let committer = inner.start_committer(|_| {}).ok();
        Handle {
            inner,
            size,
            committer,
            lease,
        }
    }

    /// The volume directory this volume was opened from, if any.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// Refuses `what` on a snapshot listed in the manifest of the volume directory.
    pub fn check_unlisted(&self, id: SnapshotId, what: &str) -> Result {
        self.lease
            .as_ref()
            .map_or(Ok(()), |l| l.check_unlisted(id, what))
    }

    /// Origin size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Checks `offset..offset + len` against the volume before any buffer is touched.
    pub fn check_range(&self, offset: u64, len: usize) -> Result {
        Ok(limits::check_range(offset, len as u64, self.size)?)
    }

    /// Shared access: reads of the origin and snapshots, status.
    pub fn read(&self) -> Result<RwLockReadGuard<'_, Volume>> {
        self.inner.read().map_err(|_| poisoned())
    }

    /// Exclusive access between group commits (snapshot management, snapshot writes, merge steps).
    pub fn exclusive(&self) -> Result<Exclusive<'_>> {
        self.inner.exclusive().map_err(|_| poisoned())
    }

    /// Origin writes and flushes: parallel writers, group commits (see [`SharedVolume`]).
    pub fn shared(&self) -> &SharedVolume {
        &self.inner
    }

    /// Takes a snapshot whose COW is the new file `path` of `len` bytes, all reserved (the rules
    /// of [`paths::create`]); when the volume then refuses it (a merge in progress...), no
    /// snapshot and no file are left. The file uses direct I/O when the origin does.
    pub fn create_snapshot_file(
        &self,
        path: &Path,
        len: u64,
        opts: SnapshotOptions,
    ) -> Result<SnapshotId> {
        let direct = self.read()?.origin().io_alignment() > 1;
        let Created { device, undo } = paths::create(path, len, Space::Reserve, "COW", direct)?;
        let made = self
            .exclusive()
            .and_then(|mut vol| Ok(vol.create_snapshot(device, opts)?));
        if made.is_err() {
            undo.run();
        }
        made
    }

    /// Stops the background commits and flushes every device, ignoring errors (a program that
    /// needs to know flushes first). The lock, if any, is released last.
    pub fn close(mut self) {
        drop(self.committer.take()); // stops and joins the thread: the volume is ours alone
        let _ = self.inner.flush();
    }
}

fn poisoned() -> Error {
    Error::coded(
        ErrorCode::Panic,
        "the volume is unusable: an earlier call failed with an internal error while changing it",
    )
}
