//! The limits on sizes and byte ranges that every front end applies, in one place, so that C,
//! Python, JavaScript and the CLI refuse the same inputs with the same codes (the conformance table
//! under `tests/conformance/` checks it). Front ends call these *before* allocating memory or
//! touching a caller's buffer; the engine applies the same range rule again on every I/O.

use crate::error::{Error, Result};

/// Largest size of a device or COW any front end creates: what a file offset (`off_t`) holds.
pub const MAX_DEVICE_LEN: u64 = i64::MAX as u64;

/// `[offset, offset + len)` must lie inside a device of `size` bytes (a zero-length range at
/// `offset == size` is inside). `OUT_OF_RANGE` otherwise, overflow included.
pub fn check_range(offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfRange { offset, len, size }),
    }
}

/// The size of a new origin: at least one byte, at most [`MAX_DEVICE_LEN`].
pub fn check_origin_len(len: u64) -> Result<()> {
    if len == 0 {
        return Err(Error::InvalidArgument("volume size is 0"));
    }
    if len > MAX_DEVICE_LEN {
        return Err(Error::InvalidArgument(
            "volume size is larger than any file can be (2^63 - 1 bytes)",
        ));
    }
    Ok(())
}

/// A new size for a COW device (extend): at most [`MAX_DEVICE_LEN`] (shrinking is refused by the
/// engine).
pub fn check_cow_growth(len: u64) -> Result<()> {
    if len > MAX_DEVICE_LEN {
        return Err(Error::InvalidArgument(
            "COW size is out of range (at most 2^63 - 1 bytes)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_at_and_around_the_end() {
        assert!(check_range(0, 10, 10).is_ok());
        assert!(check_range(10, 0, 10).is_ok());
        assert!(check_range(11, 0, 10).is_err());
        assert!(check_range(1, 10, 10).is_err());
        assert!(check_range(u64::MAX, 2, 10).is_err());
    }

    #[test]
    fn origin_sizes() {
        assert!(check_origin_len(0).is_err());
        assert!(check_origin_len(1).is_ok());
        assert!(check_origin_len(MAX_DEVICE_LEN).is_ok());
        assert!(check_origin_len(MAX_DEVICE_LEN + 1).is_err());
    }
}
