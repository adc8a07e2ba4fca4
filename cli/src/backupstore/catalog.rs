//! A backup's manifest (`backups/<id>`): what was backed up, and which object holds each block.
//!
//! It is JSON compressed with zstd (with zstd's content checksum, so a damaged manifest fails to
//! decode rather than parse as something else). The block map is compact: runs of consecutive
//! non-zero blocks, `[first block, "<hash><hash>..."]`; blocks in no run are zero and have no
//! object. Every manifest names every block it needs (an incremental one copies its base's
//! entries for unchanged blocks), so a backup restores and prunes on its own: `base` is history.

use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::objects::{hex, parse_hex, Hash};

/// Manifest format written by this version.
pub const FORMAT: u32 = 1;
/// Largest decoded manifest accepted (a 1 TiB volume of 256 KiB blocks, all data, is ~270 MB).
const MAX_MANIFEST: u64 = 1 << 30;
/// Block sizes accepted.
pub const MIN_BLOCK: u64 = 4096;
pub const MAX_BLOCK: u64 = 64 << 20;

/// One backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    /// Unix time (seconds) the backup started.
    pub created: u64,
    /// The volume directory's name, and what identifies the volume (host path and origin inode).
    pub volume: String,
    pub volume_key: String,
    pub snapshot: String,
    /// Identifies the snapshot's COW file (a snapshot removed and made again under the same name
    /// has another): an incremental backup may only use the base's own snapshot.
    pub snapshot_key: String,
    /// Volume size in bytes.
    pub size: u64,
    /// The snapshot's chunk size (for `restore --volume`).
    pub chunk_size: u64,
    /// Bytes per block object (the last block may be shorter).
    pub block_size: u64,
    /// The backup this one was made against, if incremental.
    pub base: Option<String>,
    /// Bytes read from the snapshot.
    pub bytes_read: u64,
    /// Compressed bytes of the objects this backup added to the store.
    pub bytes_uploaded: u64,
    /// Objects this backup added.
    pub new_objects: u64,
    /// Runs of non-zero blocks: (first block, concatenated hex hashes).
    pub map: Vec<(u64, String)>,
}

impl Manifest {
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(self.block_size)
    }

    /// Length of block `b`.
    pub fn block_len(&self, b: u64) -> u64 {
        self.block_size.min(self.size - b * self.block_size)
    }

    /// Every non-zero block and its object, in block order (the manifest was checked by `decode`).
    pub fn entries(&self) -> impl Iterator<Item = (u64, Hash)> + '_ {
        self.map.iter().flat_map(|(first, hashes)| {
            (0..hashes.len() / 64).map(move |i| {
                let h = parse_hex(&hashes[i * 64..i * 64 + 64]).unwrap_or([0; 32]);
                (first + i as u64, h)
            })
        })
    }

    /// Number of non-zero blocks.
    pub fn data_blocks(&self) -> u64 {
        self.map.iter().map(|(_, h)| h.len() as u64 / 64).sum()
    }

    /// Builds the run form of `entries` (sorted by block, no duplicates).
    pub fn runs_of(entries: &[(u64, Hash)]) -> Vec<(u64, String)> {
        let mut map: Vec<(u64, String)> = Vec::new();
        let mut next = u64::MAX;
        for &(b, h) in entries {
            match map.last_mut() {
                Some((_, s)) if b == next => s.push_str(&hex(&h)),
                _ => map.push((b, hex(&h))),
            }
            next = b + 1;
        }
        map
    }

    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let json = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).map_err(|e| e.to_string())?;
        enc.include_checksum(true).map_err(|e| e.to_string())?;
        enc.write_all(&json).map_err(|e| e.to_string())?;
        enc.finish().map_err(|e| e.to_string())
    }

    /// Decodes and checks the manifest stored as `backups/<id>`.
    pub fn decode(id: &str, stored: &[u8]) -> Result<Self, String> {
        let mut json = Vec::new();
        zstd::stream::Decoder::new(stored)
            .map_err(|e| e.to_string())?
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut json)
            .map_err(|e| format!("does not decompress ({e})"))?;
        if json.len() as u64 > MAX_MANIFEST {
            return Err("larger than 1 GiB".into());
        }
        let m: Manifest = serde_json::from_slice(&json).map_err(|e| format!("bad JSON: {e}"))?;
        m.check(id)?;
        Ok(m)
    }

    fn check(&self, id: &str) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format {} (this cowsnap reads {FORMAT})",
                self.format
            ));
        }
        if self.id != id {
            return Err(format!("names backup {:?}, stored as {id:?}", self.id));
        }
        if !self.block_size.is_power_of_two() || !(MIN_BLOCK..=MAX_BLOCK).contains(&self.block_size)
        {
            return Err(format!("bad block size {}", self.block_size));
        }
        if self.size == 0 {
            return Err("volume size 0".into());
        }
        let blocks = self.blocks();
        let mut next = 0u64;
        for (first, hashes) in &self.map {
            let n = hashes.len() as u64 / 64;
            if hashes.is_empty() || hashes.len() % 64 != 0 {
                return Err(format!("bad run at block {first}"));
            }
            if *first < next || first.checked_add(n).is_none_or(|end| end > blocks) {
                return Err(format!(
                    "run at block {first} out of order or out of the volume"
                ));
            }
            if hashes
                .as_bytes()
                .chunks(64)
                .any(|h| std::str::from_utf8(h).ok().and_then(parse_hex).is_none())
            {
                return Err(format!("bad object name in the run at block {first}"));
            }
            next = first + n;
        }
        Ok(())
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a Unix time.
pub fn utc(t: u64) -> String {
    let (y, mo, d) = civil(t / 86400);
    let s = t % 86400;
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// A new backup id: its start time (so ids sort by age), then random digits.
pub fn new_id() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = t.as_secs();
    let (y, mo, d) = civil(secs / 86400);
    let s = secs % 86400;
    let salt = blake3::hash(
        format!(
            "{}:{}:{:?}",
            t.as_nanos(),
            std::process::id(),
            std::thread::current().id()
        )
        .as_bytes(),
    );
    format!(
        "{y:04}{mo:02}{d:02}-{:02}{:02}{:02}-{:03}-{}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        t.subsec_millis(),
        &hex(salt.as_bytes())[..8]
    )
}

/// A backup id as given by a user: refused unless it could be one (it becomes an object name).
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a backup id (see `cowsnap backups list URL`)"
        ))
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as u64, m as u64, d as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let entries: Vec<(u64, Hash)> = [0u64, 1, 2, 7, 9, 10]
            .iter()
            .map(|&b| (b, super::super::objects::hash(&b.to_le_bytes())))
            .collect();
        Manifest {
            format: FORMAT,
            id: "x-1".into(),
            created: 0,
            volume: "v".into(),
            volume_key: "k".into(),
            snapshot: "s".into(),
            snapshot_key: "sk".into(),
            size: 11 * 4096 - 100,
            chunk_size: 4096,
            block_size: 4096,
            base: None,
            bytes_read: 0,
            bytes_uploaded: 0,
            new_objects: 0,
            map: Manifest::runs_of(&entries),
        }
    }

    #[test]
    fn runs_round_trip() {
        let m = sample();
        assert_eq!(m.map.len(), 3);
        let back = Manifest::decode("x-1", &m.encode().unwrap()).unwrap();
        let blocks: Vec<u64> = back.entries().map(|(b, _)| b).collect();
        assert_eq!(blocks, vec![0, 1, 2, 7, 9, 10]);
        assert_eq!(back.block_len(10), 4096 - 100);
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_000_000_000), "2001-09-09 01:46:40");
    }

    #[test]
    fn damaged_manifests_are_refused() {
        let m = sample();
        let enc = m.encode().unwrap();
        assert!(Manifest::decode("other", &enc).is_err());
        let mut bad = enc.clone();
        let i = bad.len() / 2;
        bad[i] ^= 0x40;
        assert!(Manifest::decode("x-1", &bad).is_err());
        assert!(Manifest::decode("x-1", &enc[..enc.len() - 3]).is_err());
        let mut out_of_volume = m.clone();
        out_of_volume.map.push((11, "00".repeat(32)));
        assert!(Manifest::decode("x-1", &out_of_volume.encode().unwrap()).is_err());
        let mut overlapping = m.clone();
        overlapping.map.push((8, "00".repeat(32)));
        assert!(Manifest::decode("x-1", &overlapping.encode().unwrap()).is_err());
        assert!(check_id("../etc").is_err());
        assert!(check_id(&new_id()).is_ok());
    }
}
