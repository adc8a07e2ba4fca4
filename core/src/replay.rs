//! Operation scripts (`shared/vectors/README.md`): a deterministic list of snapshot operations that
//! every front end can replay to byte-identical images. This is the Rust replayer, on memory devices.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::chunk::{ChunkSize, SECTOR_SIZE};
use crate::device::{BlockDevice, MemDevice};
use crate::error::{Error, Result};
use crate::snapshot::{OverflowMode, SnapshotOptions};
use crate::store::StoreKind;
use crate::volume::{SnapshotId, Volume};

/// How the origin starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum OriginInit {
    /// All zero.
    Zero,
    /// Sector k holds the u64 little-endian value k, 64 times.
    SectorIndex,
}

/// A snapshot declared by a script.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ScriptSnapshot {
    pub name: String,
    pub cow_size: u64,
    pub chunk_sectors: u32,
    /// `P`, `PO` or `N`.
    pub store: String,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "op", rename_all = "lowercase"))]
pub enum Op {
    /// Create (activate) the named snapshot now.
    Snapshot { name: String },
    /// Fill `len` bytes at `offset` of `target` (`origin` or a snapshot name) with `fill`.
    Write {
        target: String,
        offset: u64,
        len: u64,
        fill: u8,
    },
    /// Delete the named snapshot.
    Delete { name: String },
    /// Merge the named snapshot into the origin.
    Merge { name: String },
}

/// A whole script.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Script {
    pub origin_size: u64,
    pub origin_init: OriginInit,
    pub snapshots: Vec<ScriptSnapshot>,
    pub ops: Vec<Op>,
}

/// What a replay leaves of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedSnapshot {
    pub name: String,
    /// The COW device's bytes (at deletion or merge time for deleted or merged snapshots).
    pub cow: Vec<u8>,
    /// The snapshot's logical image; `None` when invalid, merged or deleted.
    pub image: Option<Vec<u8>>,
    /// `dmsetup status` string at the end (for a merged snapshot: when its merge completed).
    pub status: String,
}

/// The result of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub origin: Vec<u8>,
    /// In declaration order; snapshots never created are absent.
    pub snapshots: Vec<ReplayedSnapshot>,
    /// Operations the engine refused (`WRITE-ERR <target> <offset>`), as the kernel lists them.
    pub errors: Vec<String>,
}

/// The initial origin contents a script asks for.
pub fn origin_image(size: u64, init: OriginInit) -> Result<Vec<u8>> {
    let n = usize::try_from(size).map_err(|_| Error::InvalidArgument("origin too large"))?;
    let mut v = vec![0u8; n];
    if init == OriginInit::SectorIndex {
        for (k, sector) in v.chunks_mut(SECTOR_SIZE as usize).enumerate() {
            let b = (k as u64).to_le_bytes();
            for w in sector.chunks_mut(8) {
                w.copy_from_slice(&b[..w.len()]);
            }
        }
    }
    Ok(v)
}

impl ScriptSnapshot {
    /// The snapshot options this declaration stands for.
    pub fn options(&self) -> Result<SnapshotOptions> {
        let (store, overflow) = parse_store(&self.store)?;
        Ok(SnapshotOptions {
            chunk_size: ChunkSize::new(u64::from(self.chunk_sectors) * SECTOR_SIZE)?,
            store,
            overflow,
            autoextend: None,
        })
    }
}

/// Parses a dm store letter: `P`, `PO` or `N` (case-insensitive).
pub fn parse_store(s: &str) -> Result<(StoreKind, OverflowMode)> {
    match s.to_ascii_uppercase().as_str() {
        "P" => Ok((StoreKind::Persistent, OverflowMode::Invalidate)),
        "PO" => Ok((StoreKind::Persistent, OverflowMode::Report)),
        "N" => Ok((StoreKind::Transient, OverflowMode::Invalidate)),
        _ => Err(Error::InvalidArgument("store must be P, PO or N")),
    }
}

fn device_bytes(dev: &dyn BlockDevice) -> Result<Vec<u8>> {
    let n = usize::try_from(dev.len()).map_err(|_| Error::InvalidArgument("device too large"))?;
    let mut v = vec![0u8; n];
    dev.read_at(0, &mut v)?;
    Ok(v)
}

/// Replays `script` on memory devices.
pub fn replay(script: &Script) -> Result<Replayed> {
    let mut vol = Volume::new(MemDevice::from_vec(origin_image(
        script.origin_size,
        script.origin_init,
    )?));
    // One commit per write, as the kernel does: an overflow shows at the write that caused it.
    vol.set_commit_bytes(0);
    let decl: BTreeMap<&str, &ScriptSnapshot> = script
        .snapshots
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let mut live: BTreeMap<String, SnapshotId> = BTreeMap::new();
    let mut gone: BTreeMap<String, (Vec<u8>, String)> = BTreeMap::new();
    let mut errors = Vec::new();
    let unknown = |n: &str| Error::corrupt(format!("script names unknown snapshot {n:?}"));
    for op in &script.ops {
        match op {
            Op::Snapshot { name } => {
                let d = decl.get(name.as_str()).ok_or_else(|| unknown(name))?;
                let cow = MemDevice::new(
                    usize::try_from(d.cow_size)
                        .map_err(|_| Error::InvalidArgument("COW too large"))?,
                );
                let id = vol.create_snapshot(cow, d.options()?)?;
                live.insert(name.clone(), id);
            }
            Op::Write {
                target,
                offset,
                len,
                fill,
            } => {
                let data = vec![*fill; *len as usize];
                let r = if target == "origin" {
                    vol.write_at(*offset, &data)
                } else {
                    let id = *live.get(target).ok_or_else(|| unknown(target))?;
                    vol.snapshot_write_at(id, *offset, &data)
                };
                if r.is_err() {
                    errors.push(format!("WRITE-ERR {target} {offset}"));
                }
            }
            Op::Delete { name } => {
                let id = live.remove(name).ok_or_else(|| unknown(name))?;
                let status = vol.snapshot_status(id)?.dm_status();
                let cow = vol.delete_snapshot(id)?;
                gone.insert(name.clone(), (device_bytes(&*cow)?, status));
            }
            Op::Merge { name } => {
                let id = live.remove(name).ok_or_else(|| unknown(name))?;
                let mut p = vol.merge_begin(id)?;
                while !p.done {
                    p = vol.merge_step(id)?;
                }
                let status = vol.snapshot_status(id)?.dm_status();
                let cow = vol.merge_finish(id)?;
                gone.insert(name.clone(), (device_bytes(&*cow)?, status));
            }
        }
    }
    let mut snapshots = Vec::new();
    for d in &script.snapshots {
        if let Some(&id) = live.get(&d.name) {
            let mut image = vec![0u8; script.origin_size as usize];
            let image = match vol.snapshot_read_at(id, 0, &mut image) {
                Ok(()) => Some(image),
                Err(Error::SnapshotInvalid) => {
                    errors.push(format!("READ-ERR {}", d.name));
                    None
                }
                Err(e) => return Err(e),
            };
            snapshots.push(ReplayedSnapshot {
                name: d.name.clone(),
                cow: device_bytes(vol.snapshot_cow(id)?)?,
                image,
                status: vol.snapshot_status(id)?.dm_status(),
            });
        } else if let Some((cow, status)) = gone.remove(&d.name) {
            snapshots.push(ReplayedSnapshot {
                name: d.name.clone(),
                cow,
                image: None,
                status,
            });
        }
    }
    Ok(Replayed {
        origin: device_bytes(vol.origin())?,
        snapshots,
        errors,
    })
}
