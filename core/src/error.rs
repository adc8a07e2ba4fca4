//! The one error type of the engine, and the stable numeric codes every front end shares.

use alloc::string::String;
use core::fmt;

/// Everything that can go wrong in cowsnap.
///
/// Variants are chosen so that a caller can act on them; the `Display` text says why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// I/O outside the device (or snapshot) bounds. Nothing was read or written.
    OutOfRange {
        /// First byte asked for.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// Size of the device or snapshot, in bytes.
        size: u64,
    },
    /// A chunk size that is not a power of two number of sectors in the accepted range.
    BadChunkSize {
        /// The size asked for, in bytes.
        bytes: u64,
    },
    /// An argument that makes no sense (a zero-length COW, a bad policy...).
    InvalidArgument(&'static str),
    /// The snapshot has been invalidated (COW overflow or an I/O error); its data is gone for good.
    SnapshotInvalid,
    /// The snapshot (store `PO`) ran out of COW space on a snapshot write: writes fail, reads still work.
    SnapshotOverflow,
    /// The COW device is too small for what was asked (e.g. smaller than header + one metadata area).
    NoSpace,
    /// A new COW device smaller than its store needs ([`crate::SnapshotOptions::check_cow_len`]);
    /// code `NO_SPACE`, with the numbers for the message.
    CowTooSmall {
        /// The COW size given, in bytes.
        len: u64,
        /// The least size the store accepts, in bytes.
        min: u64,
        /// Chunk size in bytes.
        chunk: u64,
        /// Why the least size is what it is.
        reason: &'static str,
    },
    /// No snapshot with this id (never created, deleted or merged).
    UnknownSnapshot(u32),
    /// The COW metadata is not a dm-snapshot persistent store we can trust.
    Corrupt(String),
    /// A device reported an I/O error.
    Io(String),
    /// The snapshot is being merged: the operation is not allowed until the merge ends.
    Merging,
    /// The operation is not supported for this snapshot or device (e.g. growing a fixed device).
    Unsupported(&'static str),
}

/// Declares the stable error codes once: the Rust enum, its numbers, names and descriptions, from
/// which every front end's table is derived (the C enum in `ffi/src/result.rs` and the TypeScript
/// union in `wasm/js/index.d.ts` are generated from [`ErrorCode::ALL`] and checked by a test; Python
/// builds its exception classes at import through `cowsnap_error_codes` / `cowsnap_error_name`).
macro_rules! error_codes {
    ($( $variant:ident = $num:literal, $name:literal, $desc:literal; )*) => {
        /// Stable error codes, shared by the C ABI, Python and JavaScript (`code` names are
        /// [`ErrorCode::name`]).
        ///
        /// Numbers never change once released; new kinds get new numbers.
        #[repr(i32)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( #[doc = $desc] $variant = $num, )*
        }

        impl ErrorCode {
            /// All codes, in number order (0, -1, -2...), for front ends that build tables from them.
            pub const ALL: [ErrorCode; [$($name),*].len()] = [$(ErrorCode::$variant),*];

            /// The stable name, as used for C enum constants (`COWSNAP_ERR_<NAME>`, `COWSNAP_OK`),
            /// Python's `CowsnapError.name` and JS `error.code`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }

            /// [`ErrorCode::name`] with a terminating NUL, for C callers.
            pub const fn name_nul(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => concat!($name, "\0"),)*
                }
            }

            /// What the code means, in one sentence (documentation of every front end's constant).
            pub const fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $desc,)*
                }
            }

            /// [`ErrorCode::description`] with a terminating NUL, for C callers.
            pub const fn description_nul(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => concat!($desc, "\0"),)*
                }
            }

            /// The code with this number, if any.
            pub fn from_i32(value: i32) -> Option<ErrorCode> {
                ErrorCode::ALL.iter().copied().find(|c| *c as i32 == value)
            }
        }
    };
}

error_codes! {
    Ok = 0, "OK",
        "Success.";
    OutOfRange = -1, "OUT_OF_RANGE",
        "I/O outside the volume (or snapshot) bounds; nothing was read or written.";
    BadChunkSize = -2, "BAD_CHUNK_SIZE",
        "Chunk size not a power of two between 4 KiB and 512 KiB.";
    InvalidArgument = -3, "INVALID_ARGUMENT",
        "An argument that makes no sense (zero size, unknown enum value, bad autoextend policy, \
         an option combination dm has no store type for, a handle used after it was freed...).";
    SnapshotInvalid = -4, "SNAPSHOT_INVALID",
        "The snapshot was invalidated (COW overflow on an origin write, or an I/O error): delete \
         it.";
    SnapshotOverflow = -5, "SNAPSHOT_OVERFLOW",
        "The snapshot (overflow mode report, dm's PO) is full: snapshot writes are refused, reads \
         still work.";
    NoSpace = -6, "NO_SPACE",
        "The COW device is too small (or memory could not be allocated).";
    UnknownSnapshot = -7, "UNKNOWN_SNAPSHOT",
        "No snapshot with this id (never created, deleted or merged).";
    CorruptMetadata = -8, "CORRUPT_METADATA",
        "A COW device whose metadata is not a dm-snapshot persistent store cowsnap can trust.";
    Io = -9, "IO",
        "The operating system reported an I/O error (including failing to open a file).";
    Merging = -10, "MERGING",
        "The snapshot is being merged (or a merge was stopped by its progress callback).";
    Unsupported = -11, "UNSUPPORTED",
        "Not supported for this snapshot or device.";
    NullPointer = -12, "NULL_POINTER",
        "A required pointer argument was NULL.";
    Panic = -13, "PANIC",
        "An internal error (a Rust panic, caught at the boundary). The volume may be unusable.";
    BufferTooSmall = -14, "BUFFER_TOO_SMALL",
        "The caller's buffer is too small; the size needed was stored in the out-parameter.";
    Busy = -15, "BUSY",
        "Another process holds the volume (a cowsnap command's lock or a mount): nothing was done; \
         try again when it is released.";
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::OutOfRange { .. } => ErrorCode::OutOfRange,
            Error::BadChunkSize { .. } => ErrorCode::BadChunkSize,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::SnapshotInvalid => ErrorCode::SnapshotInvalid,
            Error::SnapshotOverflow => ErrorCode::SnapshotOverflow,
            Error::NoSpace | Error::CowTooSmall { .. } => ErrorCode::NoSpace,
            Error::UnknownSnapshot(_) => ErrorCode::UnknownSnapshot,
            Error::Corrupt(_) => ErrorCode::CorruptMetadata,
            Error::Io(_) => ErrorCode::Io,
            Error::Merging => ErrorCode::Merging,
            Error::Unsupported(_) => ErrorCode::Unsupported,
        }
    }

    /// Shorthand for a corrupt-metadata error.
    pub fn corrupt(reason: impl Into<String>) -> Self {
        Error::Corrupt(reason.into())
    }

    /// Shorthand for a device I/O error.
    pub fn io(reason: impl Into<String>) -> Self {
        Error::Io(reason.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::OutOfRange { offset, len, size } => write!(
                f,
                "I/O out of range: {len} bytes at offset {offset} on a device of {size} bytes"
            ),
            Error::BadChunkSize { bytes } => write!(
                f,
                "bad chunk size {bytes} bytes: must be a power of two between 4 KiB and 512 KiB"
            ),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::SnapshotInvalid => write!(
                f,
                "snapshot is invalid (its COW overflowed or failed); its data is lost, remove it"
            ),
            Error::SnapshotOverflow => write!(
                f,
                "snapshot overflowed: its COW is full, writes are refused (reads still work)"
            ),
            Error::NoSpace => write!(f, "COW device too small"),
            Error::CowTooSmall {
                len,
                min,
                chunk,
                reason,
            } => write!(
                f,
                "COW device too small: {reason}, {min} bytes with {chunk}-byte chunks; the COW \
                 size is {len}"
            ),
            Error::UnknownSnapshot(id) => write!(f, "no snapshot with id {id}"),
            Error::Corrupt(why) => write!(f, "invalid or corrupt snapshot: {why}"),
            Error::Io(why) => write!(f, "I/O error: {why}"),
            Error::Merging => write!(f, "snapshot is being merged"),
            Error::Unsupported(what) => write!(f, "not supported: {what}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

#[cfg(feature = "std")]
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(alloc::format!("{e}"))
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = core::result::Result<T, E>;
