//! One merge loop for front ends that must release the volume between steps (the C ABI takes its
//! lock per step, JavaScript its `RefCell` borrow) and report progress with no lock held: the order
//! begin → steps until done → finish, and resuming a stopped merge, live here once.
//!
//! ```
//! use cowsnap_core::{MemDevice, MergeEvent, MergeStepper, SnapshotOptions, Volume};
//!
//! let mut vol = Volume::new(MemDevice::new(1 << 20));
//! let id = vol.create_snapshot(MemDevice::new(256 << 10), SnapshotOptions::default()).unwrap();
//! vol.write_at(0, b"new").unwrap();
//! let mut merge = MergeStepper::new(id);
//! loop {
//!     // (a front end takes its lock here, and releases it before reporting)
//!     match merge.step(&mut vol).unwrap() {
//!         MergeEvent::Progress(p) => println!("{}/{}", p.merged, p.total),
//!         MergeEvent::Finished(_cow) => break,
//!     }
//! }
//! assert!(vol.snapshot_ids().is_empty());
//! ```

use alloc::boxed::Box;

use crate::device::BlockDevice;
use crate::error::Result;
use crate::volume::{MergeProgress, SnapshotId, Volume};

/// What one [`MergeStepper::step`] did.
pub enum MergeEvent {
    /// The merge started (or resumed) or advanced: report it, then call `step` again.
    Progress(MergeProgress),
    /// The merge is complete and the snapshot removed: its COW device (records cleared).
    Finished(Box<dyn BlockDevice>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Begin,
    Step,
    Finish,
}

/// Drives [`Volume::merge_begin`], [`Volume::merge_step`] and [`Volume::merge_finish`] one call at
/// a time. A merge stopped between steps (a progress callback asked to stop) is resumed by a new
/// stepper: `merge_begin` on a merging snapshot resumes it.
#[derive(Debug, Clone)]
pub struct MergeStepper {
    id: SnapshotId,
    next: Next,
}

impl MergeStepper {
    /// A stepper for snapshot `id` (nothing happens until the first [`MergeStepper::step`]).
    pub fn new(id: SnapshotId) -> Self {
        MergeStepper {
            id,
            next: Next::Begin,
        }
    }

    /// The snapshot being merged.
    pub fn id(&self) -> SnapshotId {
        self.id
    }

    /// Runs the next part of the merge on `vol`. After an error the stepper is unchanged: calling
    /// `step` again retries the same part.
    pub fn step(&mut self, vol: &mut Volume) -> Result<MergeEvent> {
        let p = match self.next {
            Next::Begin => vol.merge_begin(self.id)?,
            Next::Step => vol.merge_step(self.id)?,
            Next::Finish => {
                let cow = vol.merge_finish(self.id)?;
                return Ok(MergeEvent::Finished(cow));
            }
        };
        self.next = if p.done { Next::Finish } else { Next::Step };
        Ok(MergeEvent::Progress(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, MemDevice, SnapshotOptions};
    use alloc::vec::Vec;

    #[test]
    fn reports_begin_each_step_and_finishes_once() {
        let mut vol = Volume::new(MemDevice::new(1 << 20));
        let id = vol
            .create_snapshot(MemDevice::new(256 << 10), SnapshotOptions::default())
            .unwrap();
        vol.write_at(0, &[7u8; 20000]).unwrap();
        let mut m = MergeStepper::new(id);
        let mut seen = Vec::new();
        while let MergeEvent::Progress(p) = m.step(&mut vol).unwrap() {
            seen.push(p);
        }
        assert_eq!(seen.first().unwrap().merged, 0);
        assert!(seen.last().unwrap().done);
        assert_eq!(seen.iter().filter(|p| p.done).count(), 1);
        assert!(vol.snapshot_ids().is_empty());
        let mut b = [0u8; 4];
        vol.read_at(0, &mut b).unwrap();
        assert_eq!(b, [0; 4]);
        assert!(matches!(m.step(&mut vol), Err(Error::UnknownSnapshot(_))));
    }

    #[test]
    fn a_new_stepper_resumes_a_stopped_merge() {
        let mut vol = Volume::new(MemDevice::new(1 << 20));
        let id = vol
            .create_snapshot(MemDevice::new(256 << 10), SnapshotOptions::default())
            .unwrap();
        vol.write_at(0, &[7u8; 4096]).unwrap();
        let mut first = MergeStepper::new(id);
        assert!(matches!(first.step(&mut vol), Ok(MergeEvent::Progress(_))));
        // Stopped here: the snapshot stays merging; a second stepper finishes it.
        let mut again = MergeStepper::new(id);
        let finished = loop {
            if let MergeEvent::Finished(cow) = again.step(&mut vol).unwrap() {
                break cow;
            }
        };
        assert_eq!(finished.len(), 256 << 10);
        assert!(vol.snapshot_ids().is_empty());
    }
}
