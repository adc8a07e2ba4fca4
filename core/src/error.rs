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

/// Stable error codes, shared by the C ABI, Python and JavaScript (`code` names are `name()`).
///
/// Numbers never change once released; new kinds get new numbers.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Success.
    Ok = 0,
    /// [`Error::OutOfRange`].
    OutOfRange = -1,
    /// [`Error::BadChunkSize`].
    BadChunkSize = -2,
    /// [`Error::InvalidArgument`].
    InvalidArgument = -3,
    /// [`Error::SnapshotInvalid`].
    SnapshotInvalid = -4,
    /// [`Error::SnapshotOverflow`].
    SnapshotOverflow = -5,
    /// [`Error::NoSpace`] (front ends also use it for out of memory).
    NoSpace = -6,
    /// [`Error::UnknownSnapshot`].
    UnknownSnapshot = -7,
    /// [`Error::Corrupt`].
    CorruptMetadata = -8,
    /// [`Error::Io`].
    Io = -9,
    /// [`Error::Merging`].
    Merging = -10,
    /// [`Error::Unsupported`].
    Unsupported = -11,
    /// Front ends only: a required pointer or handle was NULL.
    NullPointer = -12,
    /// Front ends only: an internal bug, caught before it crossed the boundary.
    Panic = -13,
    /// Front ends only: the caller's buffer is too small; the size needed is reported.
    BufferTooSmall = -14,
}

impl ErrorCode {
    /// All codes, for front ends that build tables from them.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::Ok,
        ErrorCode::OutOfRange,
        ErrorCode::BadChunkSize,
        ErrorCode::InvalidArgument,
        ErrorCode::SnapshotInvalid,
        ErrorCode::SnapshotOverflow,
        ErrorCode::NoSpace,
        ErrorCode::UnknownSnapshot,
        ErrorCode::CorruptMetadata,
        ErrorCode::Io,
        ErrorCode::Merging,
        ErrorCode::Unsupported,
        ErrorCode::NullPointer,
        ErrorCode::Panic,
        ErrorCode::BufferTooSmall,
    ];

    /// The stable name, as used for C enum constants (`COWSNAP_<NAME>`) and JS `error.code`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Ok => "OK",
            ErrorCode::OutOfRange => "OUT_OF_RANGE",
            ErrorCode::BadChunkSize => "BAD_CHUNK_SIZE",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::SnapshotInvalid => "SNAPSHOT_INVALID",
            ErrorCode::SnapshotOverflow => "SNAPSHOT_OVERFLOW",
            ErrorCode::NoSpace => "NO_SPACE",
            ErrorCode::UnknownSnapshot => "UNKNOWN_SNAPSHOT",
            ErrorCode::CorruptMetadata => "CORRUPT_METADATA",
            ErrorCode::Io => "IO",
            ErrorCode::Merging => "MERGING",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::NullPointer => "NULL_POINTER",
            ErrorCode::Panic => "PANIC",
            ErrorCode::BufferTooSmall => "BUFFER_TOO_SMALL",
        }
    }
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
            Error::NoSpace => ErrorCode::NoSpace,
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
