// GENERATED from cowsnap_core::ErrorCode by ffi/tests/generated.rs; do not edit.
// Regenerate: COWSNAP_BLESS=1 cargo test -p cowsnap-ffi --test generated

use cowsnap_core::ErrorCode;

/// Result of every fallible cowsnap function: `COWSNAP_OK` (0) or a negative error kind.
///
/// The numbers are the stable error codes shared by every cowsnap front end (C, Python,
/// JavaScript): they never change once released. `cowsnap_error_name()` gives the name without
/// the `COWSNAP_ERR_` prefix (e.g. "OUT_OF_RANGE"), `cowsnap_last_error()` the message of the
/// last failure.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum cowsnap_result {
    /// Success.
    COWSNAP_OK = 0,
    /// I/O outside the volume (or snapshot) bounds; nothing was read or written.
    COWSNAP_ERR_OUT_OF_RANGE = -1,
    /// Chunk size not a power of two between 4 KiB and 512 KiB.
    COWSNAP_ERR_BAD_CHUNK_SIZE = -2,
    /// An argument that makes no sense (zero size, unknown enum value, bad autoextend policy, an option combination dm has no store type for, a handle used after it was freed...).
    COWSNAP_ERR_INVALID_ARGUMENT = -3,
    /// The snapshot was invalidated (COW overflow on an origin write, or an I/O error): delete it.
    COWSNAP_ERR_SNAPSHOT_INVALID = -4,
    /// The snapshot (overflow mode report, dm's PO) is full: snapshot writes are refused, reads still work.
    COWSNAP_ERR_SNAPSHOT_OVERFLOW = -5,
    /// The COW device is too small (or memory could not be allocated).
    COWSNAP_ERR_NO_SPACE = -6,
    /// No snapshot with this id (never created, deleted or merged).
    COWSNAP_ERR_UNKNOWN_SNAPSHOT = -7,
    /// A COW device whose metadata is not a dm-snapshot persistent store cowsnap can trust.
    COWSNAP_ERR_CORRUPT_METADATA = -8,
    /// The operating system reported an I/O error (including failing to open a file).
    COWSNAP_ERR_IO = -9,
    /// The snapshot is being merged (or a merge was stopped by its progress callback).
    COWSNAP_ERR_MERGING = -10,
    /// Not supported for this snapshot or device.
    COWSNAP_ERR_UNSUPPORTED = -11,
    /// A required pointer argument was NULL.
    COWSNAP_ERR_NULL_POINTER = -12,
    /// An internal error (a Rust panic, caught at the boundary). The volume may be unusable.
    COWSNAP_ERR_PANIC = -13,
    /// The caller's buffer is too small; the size needed was stored in the out-parameter.
    COWSNAP_ERR_BUFFER_TOO_SMALL = -14,
}

impl cowsnap_result {
    /// The C constant for a core error code.
    pub fn from_code(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Ok => cowsnap_result::COWSNAP_OK,
            ErrorCode::OutOfRange => cowsnap_result::COWSNAP_ERR_OUT_OF_RANGE,
            ErrorCode::BadChunkSize => cowsnap_result::COWSNAP_ERR_BAD_CHUNK_SIZE,
            ErrorCode::InvalidArgument => cowsnap_result::COWSNAP_ERR_INVALID_ARGUMENT,
            ErrorCode::SnapshotInvalid => cowsnap_result::COWSNAP_ERR_SNAPSHOT_INVALID,
            ErrorCode::SnapshotOverflow => cowsnap_result::COWSNAP_ERR_SNAPSHOT_OVERFLOW,
            ErrorCode::NoSpace => cowsnap_result::COWSNAP_ERR_NO_SPACE,
            ErrorCode::UnknownSnapshot => cowsnap_result::COWSNAP_ERR_UNKNOWN_SNAPSHOT,
            ErrorCode::CorruptMetadata => cowsnap_result::COWSNAP_ERR_CORRUPT_METADATA,
            ErrorCode::Io => cowsnap_result::COWSNAP_ERR_IO,
            ErrorCode::Merging => cowsnap_result::COWSNAP_ERR_MERGING,
            ErrorCode::Unsupported => cowsnap_result::COWSNAP_ERR_UNSUPPORTED,
            ErrorCode::NullPointer => cowsnap_result::COWSNAP_ERR_NULL_POINTER,
            ErrorCode::Panic => cowsnap_result::COWSNAP_ERR_PANIC,
            ErrorCode::BufferTooSmall => cowsnap_result::COWSNAP_ERR_BUFFER_TOO_SMALL,
        }
    }
}
