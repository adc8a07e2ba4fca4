//! Operation scripts (`shared/vectors/README.md`): a deterministic list of snapshot operations that
//! every front end can replay to byte-identical images. This is the Rust replayer, on memory devices.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::chunk::{ChunkSize, SECTOR_SIZE};
use crate::device::{BlockDevice, MemDevice};
use crate::error::{Error, Result};
use crate::snapshot::SnapshotOptions;
use crate::store::parse_store;
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
    /// The name operations use (never `origin`).
    pub name: String,
    /// Size of its COW device in bytes.
    pub cow_size: u64,
    /// Chunk size in sectors.
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
    Snapshot {
        /// A declared snapshot.
        name: String,
    },
    /// Fill `len` bytes at `offset` of `target` (`origin` or a snapshot name) with `fill`.
    Write {
        /// `origin` or a snapshot's name.
        target: String,
        /// First byte.
        offset: u64,
        /// Bytes to write.
        len: u64,
        /// The byte written.
        fill: u8,
    },
    /// Delete the named snapshot.
    Delete {
        /// A live snapshot.
        name: String,
    },
    /// Merge the named snapshot into the origin.
    Merge {
        /// A live snapshot.
        name: String,
    },
}

/// A whole script.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Script {
    /// Size of the origin in bytes.
    pub origin_size: u64,
    /// What the origin holds at the start.
    pub origin_init: OriginInit,
    /// The snapshots operations may name, in declaration order.
    pub snapshots: Vec<ScriptSnapshot>,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

/// What a replay leaves of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedSnapshot {
    /// Its declared name.
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
    /// The origin's bytes at the end.
    pub origin: Vec<u8>,
    /// In declaration order; snapshots never created are absent.
    pub snapshots: Vec<ReplayedSnapshot>,
    /// Operations the engine refused (`WRITE-ERR <target> <offset>`), as the kernel lists them.
    pub errors: Vec<String>,
}

/// The initial origin contents a script asks for.
pub fn origin_image(size: u64, init: OriginInit) -> Result<Vec<u8>> {
    let mut v = zeroed(size, "origin too large to hold in memory")?;
    if init == OriginInit::SectorIndex {
        fill_sector_index(0, &mut v);
    }
    Ok(v)
}

/// Writes the sector-index pattern for the bytes at `offset..offset + buf.len()` (`offset` is a
/// sector boundary).
fn fill_sector_index(offset: u64, buf: &mut [u8]) {
    let first = offset / SECTOR_SIZE;
    for (k, sector) in buf.chunks_mut(SECTOR_SIZE as usize).enumerate() {
        let b = (first + k as u64).to_le_bytes();
        for w in sector.chunks_mut(8) {
            w.copy_from_slice(&b[..w.len()]);
        }
    }
}

/// `size` zero bytes, or an error instead of an allocation failure (which would abort the process).
fn zeroed(size: u64, what: &'static str) -> Result<Vec<u8>> {
    crate::device::MemDevice::try_new(size)
        .map(crate::device::MemDevice::into_vec)
        .map_err(|_| Error::InvalidArgument(what))
}

impl ScriptSnapshot {
    /// The snapshot options this declaration stands for.
    pub fn options(&self) -> Result<SnapshotOptions> {
        let (store, overflow) = parse_store(&self.store)?;
        SnapshotOptions {
            chunk_size: ChunkSize::new(u64::from(self.chunk_sectors) * SECTOR_SIZE)?,
            store,
            overflow,
            autoextend: None,
        }
        .validate()
    }
}

fn device_bytes(dev: &dyn BlockDevice) -> Result<Vec<u8>> {
    let mut v = zeroed(dev.len(), "device too large to hold in memory")?;
    dev.read_at(0, &mut v)?;
    Ok(v)
}

/// Largest buffer one scripted write is applied with. Longer writes are applied in pieces of this
/// size, in order (the kernel too splits a large write into bios), so a write length of 2^64 - 1
/// never becomes an allocation.
pub const WRITE_STEP: u64 = 16 << 20;

/// Where a replay keeps its devices: memory for [`replay`], files for a front end that writes the
/// results out (sparse, without holding whole images in memory).
pub trait ReplayDevices {
    /// A zero-filled origin of `size` bytes.
    fn origin(&mut self, size: u64) -> Result<Box<dyn BlockDevice>>;
    /// A zero-filled COW device of `size` bytes for the snapshot `name`.
    fn cow(&mut self, name: &str, size: u64) -> Result<Box<dyn BlockDevice>>;
}

/// A declared snapshot after [`replay_on`].
pub enum RunSnapshot {
    /// Still active in the volume.
    Live(SnapshotId),
    /// Deleted or merged: its COW device as it was then, and its status then.
    Gone {
        /// The COW device.
        cow: Box<dyn BlockDevice>,
        /// Its `dmsetup status` then.
        status: String,
    },
}

/// What [`replay_on`] leaves: the volume itself, so the caller reads what it needs.
pub struct Run {
    /// The volume after the last operation.
    pub volume: Volume,
    /// Declared snapshots that were created, in declaration order.
    pub snapshots: Vec<(String, RunSnapshot)>,
    /// Operations the engine refused (`WRITE-ERR <target> <offset>`). `READ-ERR` lines for invalid
    /// snapshots are the caller's, when it reads their images.
    pub errors: Vec<String>,
}

/// Checks what a script declares before anything runs: unique snapshot names, none called
/// `origin` (the origin's name in write operations).
pub fn check(script: &Script) -> Result<()> {
    let mut seen = BTreeMap::new();
    for d in &script.snapshots {
        if d.name == "origin" {
            return Err(Error::corrupt(String::from(
                "script declares a snapshot named \"origin\" (the name of the origin)",
            )));
        }
        if seen.insert(d.name.as_str(), ()).is_some() {
            return Err(Error::corrupt(format!(
                "script declares snapshot {:?} twice",
                d.name
            )));
        }
    }
    Ok(())
}

/// Replays `script` on the devices `devs` gives.
pub fn replay_on(script: &Script, devs: &mut dyn ReplayDevices) -> Result<Run> {
    check(script)?;
    let mut origin = devs.origin(script.origin_size)?;
    if script.origin_init == OriginInit::SectorIndex {
        let size = script.origin_size;
        let mut buf = zeroed(size.min(WRITE_STEP), "origin step")?;
        let mut at = 0;
        while at < size {
            let n = (size - at).min(WRITE_STEP) as usize;
            fill_sector_index(at, &mut buf[..n]);
            origin.write_at(at, &buf[..n])?;
            at += n as u64;
        }
    }
    let mut vol = Volume::from_boxed(origin);
    // One commit per write, as the kernel does: an overflow shows at the write that caused it.
    vol.set_commit_bytes(0);
    let decl: BTreeMap<&str, &ScriptSnapshot> = script
        .snapshots
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let mut live: BTreeMap<String, SnapshotId> = BTreeMap::new();
    let mut gone: BTreeMap<String, (Box<dyn BlockDevice>, String)> = BTreeMap::new();
    let mut errors = Vec::new();
    let unknown = |n: &str| Error::corrupt(format!("script names unknown snapshot {n:?}"));
    for op in &script.ops {
        match op {
            Op::Snapshot { name } => {
                let d = decl.get(name.as_str()).ok_or_else(|| unknown(name))?;
                if live.contains_key(name) || gone.contains_key(name) {
                    return Err(Error::corrupt(format!(
                        "script creates snapshot {name:?} twice"
                    )));
                }
                let opts = d.options()?;
                let cow = devs.cow(name, d.cow_size)?;
                let id = vol.create_snapshot_boxed(cow, opts)?;
                live.insert(name.clone(), id);
            }
            Op::Write {
                target,
                offset,
                len,
                fill,
            } => {
                let id = if target == "origin" {
                    None
                } else {
                    Some(*live.get(target).ok_or_else(|| unknown(target))?)
                };
                // Out of range: what the engine would answer, without building the data.
                let in_range = offset.checked_add(*len).is_some_and(|end| end <= vol.len());
                if !in_range {
                    errors.push(format!("WRITE-ERR {target} {offset}"));
                    continue;
                }
                let data = vec![*fill; (*len).min(WRITE_STEP) as usize];
                let mut done = 0;
                while done < *len {
                    let n = (*len - done).min(WRITE_STEP) as usize;
                    let r = match id {
                        None => vol.write_at(offset + done, &data[..n]),
                        Some(id) => vol.snapshot_write_at(id, offset + done, &data[..n]),
                    };
                    match r {
                        Ok(()) => done += n as u64,
                        // The host's failure, not the engine's answer: the replay cannot go on.
                        Err(e @ Error::Io(_)) => return Err(e),
                        Err(_) => {
                            errors.push(format!("WRITE-ERR {target} {offset}"));
                            break;
                        }
                    }
                }
            }
            Op::Delete { name } => {
                let id = live.remove(name).ok_or_else(|| unknown(name))?;
                let status = vol.snapshot_status(id)?.dm_status();
                let cow = vol.delete_snapshot(id)?;
                gone.insert(name.clone(), (cow, status));
            }
            Op::Merge { name } => {
                let id = live.remove(name).ok_or_else(|| unknown(name))?;
                let mut p = vol.merge_begin(id)?;
                while !p.done {
                    p = vol.merge_step(id)?;
                }
                let status = vol.snapshot_status(id)?.dm_status();
                let cow = vol.merge_finish(id)?;
                gone.insert(name.clone(), (cow, status));
            }
        }
    }
    let mut snapshots = Vec::new();
    for d in &script.snapshots {
        if let Some(&id) = live.get(&d.name) {
            snapshots.push((d.name.clone(), RunSnapshot::Live(id)));
        } else if let Some((cow, status)) = gone.remove(&d.name) {
            snapshots.push((d.name.clone(), RunSnapshot::Gone { cow, status }));
        }
    }
    Ok(Run {
        volume: vol,
        snapshots,
        errors,
    })
}

/// Memory devices, allocated without aborting on a size the host cannot hold.
struct MemDevices;

impl ReplayDevices for MemDevices {
    fn origin(&mut self, size: u64) -> Result<Box<dyn BlockDevice>> {
        Ok(Box::new(MemDevice::from_vec(zeroed(
            size,
            "origin too large to hold in memory",
        )?)))
    }
    fn cow(&mut self, _: &str, size: u64) -> Result<Box<dyn BlockDevice>> {
        Ok(Box::new(MemDevice::from_vec(zeroed(
            size,
            "COW too large to hold in memory",
        )?)))
    }
}

/// Replays `script` on memory devices.
pub fn replay(script: &Script) -> Result<Replayed> {
    let Run {
        volume: vol,
        snapshots: run,
        mut errors,
    } = replay_on(script, &mut MemDevices)?;
    let mut snapshots = Vec::new();
    for (name, s) in run {
        snapshots.push(match s {
            RunSnapshot::Live(id) => {
                let mut image = zeroed(vol.len(), "snapshot too large to hold in memory")?;
                let image = match vol.snapshot_read_at(id, 0, &mut image) {
                    Ok(()) => Some(image),
                    Err(Error::SnapshotInvalid) => {
                        errors.push(format!("READ-ERR {name}"));
                        None
                    }
                    Err(e) => return Err(e),
                };
                ReplayedSnapshot {
                    cow: device_bytes(vol.snapshot_cow(id)?)?,
                    image,
                    status: vol.snapshot_status(id)?.dm_status(),
                    name,
                }
            }
            RunSnapshot::Gone { cow, status } => ReplayedSnapshot {
                name,
                cow: device_bytes(&*cow)?,
                image: None,
                status,
            },
        });
    }
    Ok(Replayed {
        origin: device_bytes(vol.origin())?,
        snapshots,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(origin_size: u64, snapshots: &[(&str, u64)], ops: Vec<Op>) -> Script {
        Script {
            origin_size,
            origin_init: OriginInit::Zero,
            snapshots: snapshots
                .iter()
                .map(|&(name, cow_size)| ScriptSnapshot {
                    name: name.into(),
                    cow_size,
                    chunk_sectors: 8,
                    store: "P".into(),
                })
                .collect(),
            ops,
        }
    }

    fn write(target: &str, offset: u64, len: u64, fill: u8) -> Op {
        Op::Write {
            target: target.into(),
            offset,
            len,
            fill,
        }
    }

    /// Sizes no memory can hold are errors, not allocation aborts.
    #[test]
    fn huge_sizes_are_errors() {
        assert!(replay(&script(1 << 63, &[], vec![])).is_err());
        assert!(replay(&script(u64::MAX, &[], vec![])).is_err());
        let s = script(
            1 << 20,
            &[("s", 1 << 63)],
            vec![Op::Snapshot { name: "s".into() }],
        );
        assert!(replay(&s).is_err());
    }

    /// A write of 2^64 - 1 bytes, or at an offset near 2^64, is the engine's refusal (WRITE-ERR).
    #[test]
    fn huge_write_lengths_are_write_errors() {
        let s = script(
            1 << 20,
            &[("s", 1 << 20)],
            vec![
                Op::Snapshot { name: "s".into() },
                write("origin", 0, u64::MAX, 1),
                write("s", u64::MAX, 2, 1),
                write("origin", 4096, 4096, 7),
            ],
        );
        let r = replay(&s).unwrap();
        assert_eq!(
            r.errors,
            vec![
                String::from("WRITE-ERR origin 0"),
                format!("WRITE-ERR s {}", u64::MAX)
            ]
        );
        assert!(r.origin[4096..8192].iter().all(|&b| b == 7));
    }

    /// A write longer than WRITE_STEP, applied in pieces, leaves what one write would.
    #[test]
    fn long_writes_are_applied_in_steps() {
        let len = 2 * WRITE_STEP + 12288;
        let size = len + (1 << 20);
        let s = script(
            size,
            &[("s", len + (4 << 20))],
            vec![
                Op::Snapshot { name: "s".into() },
                write("origin", 512 * 8, len, 5),
            ],
        );
        let r = replay(&s).unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.origin[..4096].iter().all(|&b| b == 0));
        assert!(r.origin[4096..4096 + len as usize].iter().all(|&b| b == 5));
        assert!(r.origin[4096 + len as usize..].iter().all(|&b| b == 0));
        let img = r.snapshots[0].image.as_ref().unwrap();
        assert!(img.iter().all(|&b| b == 0), "the snapshot kept the zeros");
    }

    #[test]
    fn names_declared_twice_or_origin_are_refused() {
        let twice = script(1 << 20, &[("a", 1 << 20), ("a", 1 << 20)], vec![]);
        assert!(matches!(replay(&twice), Err(Error::Corrupt(_))));
        let origin = script(1 << 20, &[("origin", 1 << 20)], vec![]);
        assert!(matches!(replay(&origin), Err(Error::Corrupt(_))));
        let again = script(
            1 << 20,
            &[("a", 1 << 20)],
            vec![
                Op::Snapshot { name: "a".into() },
                Op::Snapshot { name: "a".into() },
            ],
        );
        assert!(matches!(replay(&again), Err(Error::Corrupt(_))));
    }
}
