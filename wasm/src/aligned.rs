//! The module's global allocator: the system's (dlmalloc), with blocks of a page or more aligned
//! to a cache line.
//!
//! dlmalloc aligns blocks to 8 bytes only, so the origin and a COW (each one large block) start at
//! different offsets within a cache line, and so does the buffer a write is copied in from. V8's
//! `memory.copy` is slow when source and destination are misaligned against each other: 4 KiB
//! copies across 64 MiB take 5.9 ms with the two 16 bytes apart, 7.7 ms with the destination 16
//! bytes off, 4.6 ms aligned alike (native `memcpy`: 4.4-6.1 ms). Every first write makes two
//! such copies (the old chunk into the COW, the new data into the origin).

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of at least this many bytes are aligned to [`LINE`].
const LARGE: usize = 4096;
/// A cache line.
const LINE: usize = 64;

/// [`System`] with large blocks aligned to [`LINE`].
pub struct LineAligned;

/// A large block is taken from the system this much larger, at the system's own alignment (8: its
/// aligned allocation, `memalign`, would add 6 KiB of code to the module), and handed out from the
/// first line boundary at least 8 bytes in; the `usize` before it holds that offset.
const PAD: usize = LINE + 8;

/// Whether a block of `layout` is a large one, made as [`PAD`] says.
fn is_large(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= 8
}

/// The layout of the system block behind a large block of `size` bytes.
fn padded(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(PAD)?, 8).ok()
}

/// Hands out the line-aligned part of the system block at `base` (null stays null).
///
/// # Safety
/// `base` is null or a block of at least `size + PAD` bytes, aligned to 8.
unsafe fn hand_out(base: *mut u8) -> *mut u8 {
    if base.is_null() {
        return base;
    }
    // The first line boundary at least 8 bytes in: 8 to LINE + 7 bytes in, within PAD.
    let offset = ((base as usize + 8 + (LINE - 1)) & !(LINE - 1)) - base as usize;
    let ptr = base.add(offset);
    ptr.cast::<usize>().sub(1).write(offset);
    ptr
}

/// The system block behind the large block at `ptr`.
///
/// # Safety
/// `ptr` came from [`hand_out`].
unsafe fn base_of(ptr: *mut u8) -> *mut u8 {
    ptr.sub(ptr.cast::<usize>().sub(1).read())
}

// SAFETY: small blocks are the system's own. A large block of `size` bytes lies inside a system
// block of `size + PAD` bytes (8-aligned), at an offset of 8 to LINE + 7 bytes recorded in the
// `usize` before it; it is released through that offset with the layout it was made with, a pure
// function of the caller's layout. `realloc` between sizes of different kinds allocates anew,
// copies and releases.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_large(layout) {
            return System.alloc(layout);
        }
        match padded(layout.size()) {
            Some(p) => hand_out(System.alloc(p)),
            None => std::ptr::null_mut(),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !is_large(layout) {
            return System.alloc_zeroed(layout);
        }
        match padded(layout.size()) {
            Some(p) => hand_out(System.alloc_zeroed(p)),
            None => std::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match is_large(layout).then(|| padded(layout.size())).flatten() {
            Some(p) => System.dealloc(base_of(ptr), p),
            None => System.dealloc(ptr, layout),
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The caller guarantees that `new_size`, rounded up to `layout.align()`, fits an isize.
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        if !is_large(layout) && !is_large(new) {
            return System.realloc(ptr, layout, new_size);
        }
        let moved = self.alloc(new);
        if !moved.is_null() {
            std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        moved
    }
}
