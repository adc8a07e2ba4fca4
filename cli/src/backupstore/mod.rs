//! Incremental, verified backups of snapshots to object storage (S3 or a local directory, through
//! `object_store`): `backup --to`, `restore`, `backups list|verify|prune`.
//!
//! A backup is a set of content-addressed block objects (zstd, named by the BLAKE3 of their bytes,
//! checked on every read) and a manifest naming each block's object, written last. Objects are
//! shared by every backup, of any volume, that has the same bytes.

mod catalog;
mod location;
mod locks;
mod maintain;
mod objects;
mod restore;
mod upload;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tokio::runtime::Runtime;

pub use upload::{exec_backup, BackupTo};

use crate::{CliError, CliResult};
use catalog::Manifest;
use location::Location;

/// Default number of objects moved at once.
pub const DEFAULT_JOBS: usize = 8;

/// `cowsnap restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Backup store: s3://bucket/prefix or file:///path.
    url: String,
    /// The backup (see `cowsnap backups list URL`).
    #[arg(long)]
    id: String,
    /// Image file (created sparse, put in place only once complete) or block device (written in
    /// place, zeros included).
    #[arg(long, required_unless_present = "volume", conflicts_with = "volume")]
    out: Option<PathBuf>,
    /// Restore into a new managed volume in DIR (must not exist, or be empty).
    #[arg(long)]
    volume: Option<PathBuf>,
    /// Objects fetched at once.
    #[arg(long, default_value_t = DEFAULT_JOBS)]
    jobs: usize,
}

/// `cowsnap backups ...`.
#[derive(Subcommand, Debug)]
pub enum BackupsCmd {
    /// The backups in a store: id, time, volume/snapshot, size, base, new bytes.
    List {
        url: String,
        #[arg(long)]
        json: bool,
    },
    /// Check that every object the backups (or one) need is there and matches its hash.
    Verify {
        url: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value_t = DEFAULT_JOBS)]
        jobs: usize,
    },
    /// Keep the newest N backups of each volume; delete the others and the objects no kept
    /// backup needs (mark and sweep; objects younger than --grace are kept for running backups).
    Prune {
        url: String,
        #[arg(long)]
        keep: usize,
        /// Seconds an unreferenced object is kept after its upload.
        #[arg(long, default_value_t = 3600)]
        grace: u64,
    },
}

pub fn restore(a: &RestoreArgs, quiet: bool) -> CliResult {
    restore::restore(
        &a.url,
        &a.id,
        a.out.as_deref(),
        a.volume.as_deref(),
        a.jobs,
        quiet,
    )
}

pub fn backups(cmd: &BackupsCmd, quiet: bool) -> CliResult {
    match cmd {
        BackupsCmd::List { url, json } => maintain::list_backups(url, *json),
        BackupsCmd::Verify { url, id, jobs } => maintain::verify(url, id.as_deref(), *jobs, quiet),
        BackupsCmd::Prune { url, keep, grace } => maintain::prune(url, *keep, *grace, quiet),
    }
}

/// The runtime object_store runs on: two workers (requests are I/O bound; compression runs on
/// the blocking pool).
fn runtime() -> CliResult<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::io(format!("cannot start the I/O runtime: {e}")))
}

/// Reads and checks the manifest of backup `id`.
fn read_manifest(rt: &Runtime, loc: &Location, id: &str) -> CliResult<Manifest> {
    catalog::check_id(id).map_err(CliError::msg)?;
    let path = loc.backup(id);
    let stored = rt
        .block_on(async { loc.store.get(&path).await?.bytes().await })
        .map_err(|e| match e {
            object_store::Error::NotFound { .. } => CliError::msg(format!(
                "no backup {id} in {} (see `cowsnap backups list {}`)",
                loc.shown, loc.shown
            )),
            e => CliError::io(format!("reading backup {id}: {e}")),
        })?;
    Manifest::decode(id, &stored)
        .map_err(|e| CliError::corrupt(format!("the manifest of backup {id} is damaged: {e}")))
}
