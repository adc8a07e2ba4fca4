//! Structs that can grow: the caller's `struct_size` says which version of a struct it was compiled
//! with, so fields can be added at the end without breaking compiled programs.
//!
//! The rules (those of Linux's `copy_struct_from_user`):
//! - In (options): the library reads the fields that lie inside the caller's `struct_size`; fields
//!   past it (a caller built against an older header) take their defaults (zero). Bytes past the
//!   library's own struct (a caller built against a newer header) must be zero: a field this library
//!   does not know cannot be honoured, so it is refused rather than ignored.
//! - Out (status): the library writes the fields that fit in the caller's `struct_size`, zeroes the
//!   caller's bytes it does not know, and sets `struct_size` to the bytes it filled.
//!
//! Fields are read and written one by one at their offsets, never as whole-struct byte copies, so
//! padding is never touched.

use std::mem::size_of;

use crate::{Failure, FfiResult};

/// Largest `struct_size` accepted: far more than any version of these structs will need, and small
/// enough that a garbage value (an uninitialised field) is refused instead of read as a size.
pub(crate) const MAX_STRUCT_SIZE: usize = 4096;

/// Byte offset of `$field` in `$t` (what `core::mem::offset_of!` does, within rust-version 1.75).
macro_rules! offset_of {
    ($t:ty, $field:ident) => {{
        let u = std::mem::MaybeUninit::<$t>::uninit();
        let base = u.as_ptr();
        // SAFETY: only the address of the field of an (uninitialised) local is taken; nothing is read.
        #[allow(unused_unsafe)] // also expanded inside unsafe blocks
        let field = unsafe { std::ptr::addr_of!((*base).$field) };
        field as usize - base as usize
    }};
}
pub(crate) use offset_of;

/// A caller's sized struct: its address and the `struct_size` it declares.
pub(crate) struct SizedStruct {
    base: *mut u8,
    size: usize,
}

impl SizedStruct {
    /// Reads `struct_size` (the leading `size_t`) of the struct at `p` and checks it: at least
    /// `min` bytes (the first published version of the struct), at most [`MAX_STRUCT_SIZE`].
    ///
    /// # Safety
    /// `p` is NULL or points to a struct whose first field is a `size_t` holding its size, with that
    /// many bytes readable (and writable, for an out-struct).
    pub(crate) unsafe fn new<T>(p: *const T, min: usize, what: &str) -> FfiResult<SizedStruct> {
        if p.is_null() {
            return Err(Failure::null(what));
        }
        // SAFETY: a non-NULL pointer to a struct that starts with its size_t struct_size.
        let size = unsafe { std::ptr::read_unaligned(p as *const usize) };
        if size < min || size > MAX_STRUCT_SIZE {
            return Err(Failure::invalid(format!(
                "{what}->struct_size is {size}: set it to sizeof(*{what}) (at least {min}; \
                 this library's struct is {} bytes)",
                size_of::<T>()
            )));
        }
        Ok(SizedStruct {
            base: p as *mut u8,
            size,
        })
    }

    /// True when the caller's struct holds the field of `len` bytes at `offset`.
    fn has(&self, offset: usize, len: usize) -> bool {
        offset + len <= self.size
    }

    /// The field at `offset` when the caller's struct holds it, else `default`.
    ///
    /// # Safety
    /// The struct given to [`SizedStruct::new`] holds a `V` at `offset` (when it is that long).
    pub(crate) unsafe fn get<V: Copy>(&self, offset: usize, default: V) -> V {
        if self.has(offset, size_of::<V>()) {
            // SAFETY: inside the caller's struct, by the contract of `new` and `has`.
            unsafe { std::ptr::read_unaligned(self.base.add(offset) as *const V) }
        } else {
            default
        }
    }

    /// Writes the field at `offset` when the caller's struct holds it.
    ///
    /// # Safety
    /// As [`SizedStruct::get`], and the struct is writable.
    pub(crate) unsafe fn set<V: Copy>(&self, offset: usize, value: V) {
        if self.has(offset, size_of::<V>()) {
            // SAFETY: inside the caller's writable struct.
            unsafe { std::ptr::write_unaligned(self.base.add(offset) as *mut V, value) }
        }
    }

    /// Refuses a struct from a newer header whose fields past `known` bytes (this library's
    /// struct) are set: they ask for something this library cannot do.
    ///
    /// # Safety
    /// As [`SizedStruct::get`].
    pub(crate) unsafe fn check_unknown_zero(&self, known: usize, what: &str) -> FfiResult<()> {
        if self.size <= known {
            return Ok(());
        }
        // SAFETY: the caller's bytes known..size, readable by the contract of `new`.
        let extra = unsafe { std::slice::from_raw_parts(self.base.add(known), self.size - known) };
        if let Some(i) = extra.iter().position(|&b| b != 0) {
            return Err(Failure::invalid(format!(
                "{what} sets byte {} of {}, a field this version of libcowsnap ({}) does not \
                 know ({known} bytes): link a newer libcowsnap",
                known + i,
                self.size,
                cowsnap_core::VERSION
            )));
        }
        Ok(())
    }

    /// Zeroes the caller's bytes from `from` to its `struct_size` (an out-struct's fields this
    /// library does not know), and sets `struct_size` to the bytes filled (`from` or less).
    ///
    /// # Safety
    /// As [`SizedStruct::set`].
    pub(crate) unsafe fn finish_out(&self, from: usize) {
        if self.size > from {
            // SAFETY: the caller's writable bytes from..size.
            unsafe { std::ptr::write_bytes(self.base.add(from), 0, self.size - from) };
        }
        // SAFETY: struct_size is the leading size_t.
        unsafe { self.set(0, self.size.min(from)) };
    }
}
