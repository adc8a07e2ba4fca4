//! Locks between backups and prune, as objects (`locks/backup-<id>`, `locks/prune-<id>`).
//!
//! A backup may reuse any chunk object it finds in the store, including one that no kept backup
//! references any more, which is exactly what prune deletes. So: each writes its lock, *then*
//! lists the others' (object stores list what was written before: S3 is strongly consistent, and
//! so are the file system and moto). Of a backup and a prune that overlap, at least one sees the
//! other: a prune that sees a running backup deletes no chunk object; a backup that sees a running
//! prune waits for it to end. A lock not refreshed for `STALE` seconds (its process was killed)
//! is ignored, and prune removes it.

use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::PutPayload;
use tokio::runtime::Runtime;

use super::location::{store_err, Location};
use crate::CliResult;

/// Age after which a lock is the remains of a killed process.
pub const STALE: u64 = 600;
/// How often a long backup or prune rewrites its lock (well inside `STALE`).
pub const REFRESH: u64 = 60;

pub struct Lock {
    path: ObjPath,
    written: std::time::Instant,
}

/// A lock of another process: its name and age in seconds.
pub struct Other {
    pub name: String,
    pub path: ObjPath,
    pub age: u64,
}

impl Lock {
    pub fn take(rt: &Runtime, loc: &Location, kind: &str, id: &str) -> CliResult<Self> {
        let lock = Lock {
            path: loc.lock(&format!("{kind}-{id}")),
            written: std::time::Instant::now(),
        };
        lock.write(rt, loc)?;
        Ok(lock)
    }

    fn write(&self, rt: &Runtime, loc: &Location) -> CliResult {
        let body = format!(
            "{{\"pid\":{},\"time\":{}}}\n",
            std::process::id(),
            super::catalog::now()
        );
        rt.block_on(
            loc.store
                .put(&self.path, PutPayload::from(body.into_bytes())),
        )
        .map_err(store_err(format!("writing lock {}", self.path)))?;
        Ok(())
    }

    /// Rewrites the lock when it is getting old.
    pub fn refresh(&mut self, rt: &Runtime, loc: &Location) -> CliResult {
        if self.written.elapsed().as_secs() >= REFRESH {
            self.write(rt, loc)?;
            self.written = std::time::Instant::now();
        }
        Ok(())
    }

    /// Removes the lock (a failure leaves a lock that goes stale).
    pub fn release(self, rt: &Runtime, loc: &Location) {
        let _ = rt.block_on(loc.store.delete(&self.path));
    }

    /// Live locks of `kind` other than this one; stale ones are returned apart.
    pub fn others(
        &self,
        rt: &Runtime,
        loc: &Location,
        kind: &str,
    ) -> CliResult<(Vec<Other>, Vec<Other>)> {
        let metas: Vec<_> = rt
            .block_on(loc.store.list(Some(&loc.locks_dir())).try_collect())
            .map_err(store_err("listing locks"))?;
        let now = super::catalog::now() as i64;
        let (mut live, mut stale) = (Vec::new(), Vec::new());
        for m in metas {
            let Some(name) = m.location.filename().map(str::to_string) else {
                continue;
            };
            if m.location == self.path || !name.starts_with(&format!("{kind}-")) {
                continue;
            }
            let age = (now - m.last_modified.timestamp()).max(0) as u64;
            let o = Other {
                name,
                path: m.location,
                age,
            };
            if age >= STALE {
                stale.push(o);
            } else {
                live.push(o);
            }
        }
        Ok((live, stale))
    }
}
