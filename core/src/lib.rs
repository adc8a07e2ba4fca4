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
#![deny(unsafe_code)] // one audited exception: `posix_fallocate` in `device::file::reserve`
#![warn(missing_docs)]
#![allow(missing_docs)] // fields of plain-data structs are documented on the struct

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod chunk;
#[cfg(feature = "std")]
pub mod committer;
pub mod device;
pub mod error;
pub mod exception;
#[doc(hidden)]
pub mod fuzzing;
mod held;
pub mod replay;
#[cfg(feature = "std")]
pub mod shared;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod volume;

pub use chunk::{ChunkSize, SECTOR_SIZE};
pub use device::{BlockDevice, DeviceId, MemDevice};
#[cfg(feature = "std")]
pub use device::{FileDevice, FlushHandle};
pub use error::{Error, ErrorCode, Result};
pub use exception::{Exception, ExceptionTable};
#[cfg(feature = "std")]
pub use shared::{SharedVolume, COMMIT_INTERVAL};
pub use snapshot::{Autoextend, OverflowMode, SnapshotOptions};
pub use status::{SnapshotState, SnapshotStatus};
pub use store::{StoreKind, Usage};
pub use volume::{MergeProgress, SnapshotId, Volume};

/// The crate version, for front ends' version functions.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
