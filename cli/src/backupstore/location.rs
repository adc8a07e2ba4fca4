//! Where backups live: a URL (`s3://bucket/prefix`, `file:///path`) opened as an `object_store`
//! store, and the names of the objects in it.
//!
//! Layout under the prefix:
//! - `chunks/<2 hex>/<64 hex>`: one zstd-compressed block, named by the BLAKE3 hash of its bytes;
//! - `backups/<id>`: one backup's manifest (written last: a backup exists once its manifest does);
//! - `locks/<kind>-<id>`: a backup or a prune in progress (see `locks.rs`).

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::ObjectStore;

use crate::{CliError, CliResult};

use super::objects::{hex, Hash};

/// An opened backup store.
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    /// The URL as the user gave it, for messages.
    pub shown: String,
}

impl Location {
    /// Opens `url`. `create` makes a missing `file://` directory (only commands that write do);
    /// otherwise a missing one is refused rather than read as an empty store.
    pub fn open(url: &str, create: bool) -> CliResult<Self> {
        let bad = |why: &str| CliError::msg(format!("backup store {url:?}: {why}"));
        if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(bad("a file URL needs an absolute path: file:///path"));
            }
            let dir = std::path::Path::new(rest);
            if create {
                std::fs::create_dir_all(dir)
                    .map_err(|e| bad(&format!("cannot create {}: {e}", dir.display())))?;
            }
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(bad("not a directory")),
                Err(e) => return Err(bad(&e.to_string())),
            }
            let fs = LocalFileSystem::new_with_prefix(dir).map_err(|e| bad(&e.to_string()))?;
            return Ok(Location {
                store: Arc::new(fs),
                prefix: ObjPath::default(),
                shown: url.to_string(),
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket: s3://bucket/prefix"));
            }
            let prefix = ObjPath::parse(prefix.trim_matches('/'))
                .map_err(|e| bad(&format!("bad prefix: {e}")))?;
            // AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
            // AWS_ALLOW_HTTP...: the usual environment. With an endpoint, requests are path-style.
            let s3 = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| bad(&e.to_string()))?;
            return Ok(Location {
                store: Arc::new(s3),
                prefix,
                shown: url.to_string(),
            });
        }
        Err(bad("expected s3://bucket/prefix or file:///path"))
    }

    fn under(&self, dir: &str) -> ObjPath {
        let mut p = self.prefix.clone();
        for part in dir.split('/') {
            p = p.child(part);
        }
        p
    }

    pub fn chunks_dir(&self) -> ObjPath {
        self.under("chunks")
    }

    pub fn chunk(&self, h: &Hash) -> ObjPath {
        let name = hex(h);
        self.under("chunks").child(&name[..2]).child(name)
    }

    pub fn backups_dir(&self) -> ObjPath {
        self.under("backups")
    }

    pub fn backup(&self, id: &str) -> ObjPath {
        self.under("backups").child(id)
    }

    pub fn locks_dir(&self) -> ObjPath {
        self.under("locks")
    }

    pub fn lock(&self, name: &str) -> ObjPath {
        self.under("locks").child(name)
    }
}

/// An object store error with what was being done.
pub fn store_err(what: impl std::fmt::Display) -> impl Fn(object_store::Error) -> CliError {
    move |e| CliError::io(format!("{what}: {e}"))
}
