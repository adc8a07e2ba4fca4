//! Entry points shared by the fuzz targets (`fuzz/`) and the stable tests that replay their corpus.

use alloc::vec;

use crate::device::MemDevice;
use crate::snapshot::SnapshotOptions;
use crate::volume::Volume;

/// Activates a snapshot from arbitrary COW bytes over a small origin, then reads it all and writes
/// to the origin. Must never panic, hang or allocate beyond the input's size.
pub fn activate_and_read(data: &[u8]) {
    let origin_len = 256 * 1024;
    let mut vol = Volume::new(MemDevice::new(origin_len));
    let Ok(id) = vol.activate_snapshot(
        MemDevice::from_vec(data.to_vec()),
        SnapshotOptions::default(),
    ) else {
        return;
    };
    let mut buf = vec![0u8; origin_len];
    let _ = vol.snapshot_read_at(id, 0, &mut buf);
    let _ = vol.snapshot_status(id).map(|s| s.dm_status());
    let _ = vol.write_at(0, &buf[..4096]);
    let _ = vol.snapshot_read_at(id, 1000, &mut buf[..5000]);
    let _ = vol.snapshot_exceptions(id);
}
