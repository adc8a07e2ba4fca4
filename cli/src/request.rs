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
    /// The files the command reads or writes besides the volume (inputs and outputs, as given).
    pub fn paths(&self) -> Vec<&std::path::Path> {
        use cowsnap_managed::Request as V;
        let mut v = Vec::new();
        match self {
            Request::Volume(V::Write { from: Some(p), .. }) => v.push(p.as_path()),
            Request::Volume(V::Read { out: Some(p), .. }) => v.push(p.as_path()),
            Request::Volume(_) => {}
            Request::Image(ImageRequest::Backup { out, sums, .. }) => {
                v.push(out.as_path());
                if let crate::verify::SumsTo::Path(p) = sums {
                    v.push(p.as_path());
                }
            }
            Request::Image(ImageRequest::Verify { sums, .. }) => v.push(sums.as_path()),
            Request::Image(ImageRequest::BackupTo { to, .. }) => {
                // A `file://` store is a directory here too.
                if let Some(dir) = to.to.strip_prefix("file://") {
                    v.push(std::path::Path::new(dir));
                }
            }
        }
        v
    }

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
