//! cowsnap-core: a copy-on-write snapshot engine with the semantics of Linux dm-snapshot and a
//! persistent COW store that is byte-compatible with the kernel's.
//!
//! ```
//! use cowsnap_core::{MemDevice, SnapshotOptions, Volume};
//!
//! let mut vol = Volume::new(MemDevice::new(1 << 20));
//! vol.write_at(0, b"before").unwrap();
//! let snap = vol.create_snapshot(MemDevice::new(256 << 10), SnapshotOptions::default()).unwrap();
//! vol.write_at(0, b"after!").unwrap();
//! let mut buf = [0u8; 6];
//! vol.snapshot_read_at(snap, 0, &mut buf).unwrap();
//! assert_eq!(&buf, b"before");
//! assert_eq!(vol.snapshot_status(snap).unwrap().dm_status(), "24/512 16");
//! ```
#![no_std]
#![deny(unsafe_code)]
// audited exceptions: `posix_fallocate` in `device::file::reserve`; `lseek`, `fstatfs` and
// `sync_file_range` in `device::file` (`known_zeros`, `FsTraits::of`, `write_behind`);
// `copy_file_range` in `device::kernel_copy`; `alloc_zeroed` in `MemDevice::try_new`
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod check;
pub mod chunk;
#[cfg(feature = "std")]
pub mod committer;
pub mod device;
pub mod error;
pub mod exception;
#[cfg(feature = "std")]
mod flushers;
mod held;
pub mod limits;
pub mod merge_stepper;
#[cfg(feature = "std")]
pub mod shared;
pub mod snapshot;
pub mod status;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod volume;

pub use chunk::{ChunkSize, SECTOR_SIZE};
pub use device::{BlockDevice, DeviceId, MemDevice, DIRECT_IO_ALIGN};
#[cfg(feature = "std")]
pub use device::{FileDevice, FlushHandle, ReadHandle};
pub use error::{Error, ErrorCode, Result};
pub use exception::{Exception, ExceptionTable};
pub use merge_stepper::{MergeEvent, MergeStepper};
#[cfg(feature = "std")]
pub use shared::{HoldsVolume, SharedVolume, COMMIT_INTERVAL};
pub use snapshot::{Autoextend, OverflowMode, SnapshotOptions};
pub use status::{origin_lvs_attr, SnapshotState, SnapshotStatus};
pub use store::{StoreKind, Usage};
pub use volume::{MergeProgress, SnapshotId, Volume};

/// The crate version, for front ends' version functions.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
