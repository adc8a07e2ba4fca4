//! The panic boundary. Every `extern "C"` function's body is exactly one of these macros, so no panic
//! unwinds into C and every failure leaves a message for `cowsnap_last_error` (`tests/exports.rs`
//! checks mechanically that no export lacks it).

/// Body of an entry point returning `cowsnap_result`: `ffi_guard!("name", { ...; Ok(()) })`.
/// The block evaluates to `FfiResult<()>`; `?` works inside it.
macro_rules! ffi_guard {
    ($name:literal, $body:block) => {
        $crate::run($name, move || -> $crate::FfiResult<()> { $body })
    };
}

/// Body of an entry point returning a plain value: `fallback` is returned if the body panics.
macro_rules! ffi_guard_value {
    ($name:literal, $fallback:expr, $body:block) => {
        $crate::run_value($name, $fallback, move || $body)
    };
}

/// The volume behind an entry point's `vol` argument; NULL is `NULL_POINTER`.
macro_rules! vol {
    ($p:expr) => {{
        let p = $p;
        // SAFETY: every entry point's contract: `vol` is NULL or a live handle.
        unsafe { $crate::volume::volume(p) }?
    }};
}

/// An entry point's out-parameter `$p`, named in the message when it is NULL (`NULL_POINTER`).
macro_rules! out {
    ($p:ident) => {{
        let p = $p;
        // SAFETY: every entry point's contract: an out-parameter is NULL or valid for writes.
        unsafe { $crate::volume::out(p, stringify!($p)) }?
    }};
}
