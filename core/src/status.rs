//! What a snapshot reports about itself: `dmsetup status` numbers, LVM's Data% and `lvs` attributes.

use alloc::format;
use alloc::string::String;

use crate::store::StoreKind;

/// Life cycle of a snapshot. The numbers are stable: the C ABI's `cowsnap_snapshot_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum SnapshotState {
    /// Usable: reads and writes work.
    Active = 0,
    /// Store `PO` ran out of COW space on a snapshot write: writes fail, reads work (not persistent).
    Overflow = 1,
    /// The COW overflowed on an origin write, or failed: all I/O to the snapshot fails, for good.
    Invalid = 2,
    /// Being merged back into the origin.
    Merging = 3,
}

impl SnapshotState {
    /// Stable lowercase name for front ends.
    pub fn name(self) -> &'static str {
        match self {
            SnapshotState::Active => "active",
            SnapshotState::Overflow => "overflow",
            SnapshotState::Invalid => "invalid",
            SnapshotState::Merging => "merging",
        }
    }
}

/// A snapshot's status, with the numbers `dmsetup status` prints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnapshotStatus {
    /// Where the snapshot is in its life cycle.
    pub state: SnapshotState,
    /// Its exception store.
    pub store: StoreKind,
    /// True for `PO`: snapshot-write overflow is reported instead of invalidating.
    pub overflow_reporting: bool,
    /// Chunk size in bytes.
    pub chunk_bytes: u64,
    /// Sectors handed out (header and metadata included).
    pub sectors_allocated: u64,
    /// COW device size in sectors.
    pub total_sectors: u64,
    /// Header plus metadata areas so far (0 for transient stores).
    pub metadata_sectors: u64,
    /// Number of exceptions (chunks copied).
    pub exceptions: u64,
    /// While merging: chunks merged so far and chunks to merge in all.
    pub merge_progress: Option<(u64, u64)>,
}

impl SnapshotStatus {
    /// LVM's Data% (`lvs`): `None` for an invalid snapshot; 0 when nothing but metadata is
    /// allocated; 100 when full (or overflowed); otherwise allocated/total·100.
    pub fn data_percent(&self) -> Option<f64> {
        match self.state {
            SnapshotState::Invalid => None,
            SnapshotState::Overflow => Some(100.0),
            _ if self.sectors_allocated == self.metadata_sectors => Some(0.0),
            _ if self.sectors_allocated == self.total_sectors => Some(100.0),
            _ if self.total_sectors == 0 => Some(100.0),
            _ => Some(self.sectors_allocated as f64 * 100.0 / self.total_sectors as f64),
        }
    }

    /// Merge progress in percent (100 − Data% in LVM's terms, here exact by chunk counts).
    pub fn merge_percent(&self) -> Option<f64> {
        self.merge_progress.map(|(done, total)| {
            if total == 0 {
                100.0
            } else {
                done as f64 * 100.0 / total as f64
            }
        })
    }

    /// The `dmsetup status` parameter string: `Invalid`, `Overflow` or `alloc/total meta`.
    pub fn dm_status(&self) -> String {
        match self.state {
            SnapshotState::Invalid => "Invalid".into(),
            SnapshotState::Overflow => "Overflow".into(),
            _ => format!(
                "{}/{} {}",
                self.sectors_allocated, self.total_sectors, self.metadata_sectors
            ),
        }
    }

    /// The 10-character `lvs` attribute string of the snapshot LV.
    pub fn lvs_attr(&self) -> &'static str {
        match self.state {
            SnapshotState::Active | SnapshotState::Overflow => "swi-a-s---",
            SnapshotState::Invalid => "swi-I-s---",
            SnapshotState::Merging => "Swi-a-s---",
        }
    }
}

/// The 10-character `lvs` attribute string of an origin LV: `-wi-a-----` without snapshots,
/// `owi-a-s---` with some, `Owi-a-s---` while one of them merges into it.
pub fn origin_lvs_attr(has_snapshots: bool, merging: bool) -> &'static str {
    match (has_snapshots, merging) {
        (_, true) => "Owi-a-s---",
        (true, false) => "owi-a-s---",
        (false, false) => "-wi-a-----",
    }
}

impl crate::Volume {
    /// The origin's `lvs` attribute string ([`origin_lvs_attr`] of this volume's snapshots).
    pub fn origin_lvs_attr(&self) -> &'static str {
        let ids = self.snapshot_ids();
        let merging = ids.iter().any(|&id| {
            self.snapshot_status(id)
                .is_ok_and(|s| s.state == SnapshotState::Merging)
        });
        origin_lvs_attr(!ids.is_empty(), merging)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: SnapshotState, a: u64, t: u64, m: u64) -> SnapshotStatus {
        SnapshotStatus {
            state,
            store: StoreKind::Persistent,
            overflow_reporting: false,
            chunk_bytes: 4096,
            sectors_allocated: a,
            total_sectors: t,
            metadata_sectors: m,
            exceptions: 0,
            merge_progress: None,
        }
    }

    #[test]
    fn lvm_data_percent_rules() {
        assert_eq!(
            st(SnapshotState::Active, 16, 262144, 16).data_percent(),
            Some(0.0)
        );
        assert_eq!(
            st(SnapshotState::Active, 16, 262144, 16).dm_status(),
            "16/262144 16"
        );
        assert_eq!(
            st(SnapshotState::Active, 24, 2048, 16).data_percent(),
            Some(1.171875)
        );
        assert_eq!(
            st(SnapshotState::Active, 2072, 2072, 24).data_percent(),
            Some(100.0)
        );
        assert_eq!(
            st(SnapshotState::Invalid, 24, 2048, 16).data_percent(),
            None
        );
        assert_eq!(
            st(SnapshotState::Invalid, 24, 2048, 16).dm_status(),
            "Invalid"
        );
        assert_eq!(
            st(SnapshotState::Overflow, 24, 2048, 16).dm_status(),
            "Overflow"
        );
        assert_eq!(
            st(SnapshotState::Invalid, 24, 2048, 16).lvs_attr(),
            "swi-I-s---"
        );
    }
}
