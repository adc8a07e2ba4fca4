//! The commands the CLI sends to a volume as data: the managed-volume library's requests, plus
//! the image commands that only the CLI runs (backups, verify). Untagged, so the wire format of
//! each is its own (`{"Snapshot":{...}}`, `{"Backup":{...}}`), as in protocol version 1.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Commands that write images (the CLI's image helpers) from a volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ImageRequest {
    Backup {
        snap: String,
        out: PathBuf,
        #[serde(default)]
        sums: crate::verify::SumsTo,
    },
    Verify {
        snap: String,
        sums: PathBuf,
    },
    /// `backup --to URL`: to object storage.
    BackupTo {
        snap: String,
        to: crate::backupstore::BackupTo,
    },
}

/// A command on a managed volume, with every path already absolute.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Request {
    Volume(cowsnap_managed::Request),
    Image(ImageRequest),
}

impl Request {
    /// True when the command changes the volume (exclusive lock; the daemon's write lock).
    pub fn writes(&self) -> bool {
        match self {
            Request::Volume(r) => r.writes(),
            Request::Image(_) => false,
        }
    }
}

impl From<cowsnap_managed::Request> for Request {
    fn from(r: cowsnap_managed::Request) -> Self {
        Request::Volume(r)
    }
}

impl From<ImageRequest> for Request {
    fn from(r: ImageRequest) -> Self {
        Request::Image(r)
    }
}
