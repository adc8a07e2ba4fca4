//! Managed cowsnap volumes, as the `cowsnap` CLI makes them: a directory holding the origin image,
//! one COW image per snapshot and a manifest (`cowsnap.json`) that records each snapshot's store
//! (`P`/`PO`), chunk size, autoextend policy, and a merge in progress.
//!
//! Layering: commands (the CLI, the C ABI's `cowsnap_volume_open_dir`, Python's
//! `Volume.open_dir`) → this library → `cowsnap-core`.
//!
//! - [`manifest`]: the manifest, its atomic update, the volume lock (writer-preferring `flock`).
//! - [`files`]: the volume's files, opened so that a manifest can never lead outside the directory.
//! - [`paths`]: files named by a program's own paths (the C ABI's and Python's file volumes): opened
//!   or created without ever replacing, truncating or aliasing a file.
//! - [`handle`]: a volume opened by a program (the C ABI's handle): threads, background commits,
//!   a directory's lock.
//! - [`volume`]: activation by manifest ([`Opened`]): every snapshot with its policies, a merge
//!   resumed, broken snapshots reported.
//! - [`mod@exec`]: the commands on a volume ([`Request`]), run in-process or in the mount daemon.
//! - [`protocol`] and [`client`]: the mount daemon's versioned wire protocol, with error codes.
//! - [`output`]: writing images safely (never onto an input, atomically).
//! - [`error`]: one error type with a kind (exit code) and a stable [`Code`].

pub mod client;
pub mod error;
pub mod exec;
pub mod files;
pub mod handle;
pub mod manifest;
pub mod output;
pub mod paths;
pub mod progress;
pub mod protocol;
pub mod size;
pub mod volume;

pub use error::{Code, Error, ErrorKind, Result};
pub use exec::{exec, exec_ro, Io, MountHooks, Request};
pub use volume::{open_dir, Opened};
