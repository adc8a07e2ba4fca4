//! Files generated from the core's one table of error codes (`cowsnap_core::ErrorCode`, declared
//! once by `error_codes!` in core/src/error.rs): the C enum `cowsnap_result` (`ffi/src/result.rs`,
//! which cbindgen turns into the header's `COWSNAP_ERR_*`) and the TypeScript `ErrorCode` union
//! (`wasm/js/index.d.ts`, between its GENERATED markers). Each test fails when the checked-in text
//! is stale; regenerate with `COWSNAP_BLESS=1 cargo test -p cowsnap-ffi --test generated`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cowsnap_core::ErrorCode;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The C name of a code: `COWSNAP_OK`, `COWSNAP_ERR_<NAME>`.
fn c_name(code: ErrorCode) -> String {
    match code {
        ErrorCode::Ok => "COWSNAP_OK".into(),
        c => format!("COWSNAP_ERR_{}", c.name()),
    }
}

fn result_rs() -> String {
    let mut s = String::from(
        "// GENERATED from cowsnap_core::ErrorCode by ffi/tests/generated.rs; do not edit.\n\
         // Regenerate: COWSNAP_BLESS=1 cargo test -p cowsnap-ffi --test generated\n\n\
         use cowsnap_core::ErrorCode;\n\n\
         /// Result of every fallible cowsnap function: `COWSNAP_OK` (0) or a negative error kind.\n\
         ///\n\
         /// The numbers are the stable error codes shared by every cowsnap front end (C, Python,\n\
         /// JavaScript): they never change once released. `cowsnap_error_name()` gives the name without\n\
         /// the `COWSNAP_ERR_` prefix (e.g. \"OUT_OF_RANGE\"), `cowsnap_last_error()` the message of the\n\
         /// last failure.\n\
         #[repr(i32)]\n\
         #[derive(Debug, Clone, Copy, PartialEq, Eq)]\n\
         pub enum cowsnap_result {\n",
    );
    for c in ErrorCode::ALL {
        writeln!(s, "    /// {}", c.description()).unwrap();
        writeln!(s, "    {} = {},", c_name(c), c as i32).unwrap();
    }
    s.push_str(
        "}\n\n\
         impl cowsnap_result {\n\
         \x20   /// The C constant for a core error code.\n\
         \x20   pub fn from_code(code: ErrorCode) -> Self {\n\
         \x20       match code {\n",
    );
    for c in ErrorCode::ALL {
        writeln!(
            s,
            "            ErrorCode::{c:?} => cowsnap_result::{},",
            c_name(c)
        )
        .unwrap();
    }
    s.push_str("        }\n    }\n}\n");
    s
}

const TS_BEGIN: &str = "// BEGIN GENERATED ErrorCode";
const TS_END: &str = "// END GENERATED ErrorCode";

fn ts_union() -> String {
    let mut s = format!(
        "{TS_BEGIN} (from cowsnap_core::ErrorCode by ffi/tests/generated.rs; do not edit)\n\
         /** Stable error codes, shared with the C API and Python (`error.code`). */\n\
         export type ErrorCode =\n"
    );
    let codes: Vec<_> = ErrorCode::ALL
        .iter()
        .filter(|c| **c != ErrorCode::Ok)
        .collect();
    for (i, c) in codes.iter().enumerate() {
        let end = if i + 1 == codes.len() { ";" } else { "" };
        writeln!(s, "  | '{}'{end}", c.name()).unwrap();
    }
    s.push_str(TS_END);
    s
}

/// `current` with the text between the markers (markers included) replaced by `block`.
fn splice(current: &str, block: &str) -> String {
    let a = current.find(TS_BEGIN).expect("BEGIN marker in index.d.ts");
    let b = current[a..].find(TS_END).expect("END marker in index.d.ts") + a + TS_END.len();
    format!("{}{block}{}", &current[..a], &current[b..])
}

fn check(path: &Path, fresh: &str) {
    if std::env::var_os("COWSNAP_BLESS").is_some() {
        std::fs::write(path, fresh).unwrap();
        return;
    }
    let current = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        current == fresh,
        "{} is out of date with cowsnap_core::ErrorCode; regenerate it with \
         `COWSNAP_BLESS=1 cargo test -p cowsnap-ffi --test generated` and commit it",
        path.display()
    );
}

#[test]
fn c_result_enum_is_generated_from_the_core_table() {
    check(&repo().join("ffi/src/result.rs"), &result_rs());
}

#[test]
fn typescript_error_code_union_is_generated_from_the_core_table() {
    let path = repo().join("wasm/js/index.d.ts");
    let current = std::fs::read_to_string(&path).unwrap();
    check(&path, &splice(&current, &ts_union()));
}

#[test]
fn splice_replaces_only_the_block() {
    let text = format!("a\n{TS_BEGIN} old\nx\n{TS_END}\nb\n");
    assert_eq!(splice(&text, "NEW"), "a\nNEW\nb\n");
}

#[test]
fn the_library_lists_every_code_with_its_name_and_description() {
    let mut count = 0usize;
    // SAFETY: NULL/0 asks for the count; out_count is a valid pointer.
    let r = unsafe { cowsnap::cowsnap_error_codes(std::ptr::null_mut(), 0, &mut count) };
    assert_eq!(r as i32, 0);
    assert_eq!(count, ErrorCode::ALL.len());
    // A NULL array with a capacity is NULL_POINTER, as for every list function (copy_out).
    // SAFETY: NULL with a capacity is refused before anything is written; out_count is valid.
    let r = unsafe { cowsnap::cowsnap_error_codes(std::ptr::null_mut(), 3, &mut count) };
    assert_eq!(r as i32, ErrorCode::NullPointer as i32);
    let mut small = vec![0i32; count - 1];
    // SAFETY: `small` has room for count - 1 values.
    let r = unsafe { cowsnap::cowsnap_error_codes(small.as_mut_ptr(), small.len(), &mut count) };
    assert_eq!(r as i32, ErrorCode::BufferTooSmall as i32);
    assert!(
        small.iter().all(|c| *c == 0),
        "nothing copied on BUFFER_TOO_SMALL"
    );
    let mut codes = vec![1i32; count];
    // SAFETY: `codes` has room for count values.
    let r = unsafe { cowsnap::cowsnap_error_codes(codes.as_mut_ptr(), codes.len(), &mut count) };
    assert_eq!(r as i32, 0);
    let want: Vec<i32> = ErrorCode::ALL.iter().map(|c| *c as i32).collect();
    assert_eq!(codes, want);
    for c in ErrorCode::ALL {
        let d = cowsnap::cowsnap_error_description(c as i32);
        // SAFETY: a static NUL-terminated string.
        let d = unsafe { std::ffi::CStr::from_ptr(d) }.to_str().unwrap();
        assert_eq!(d, c.description());
        assert!(d.len() > 5 && d.ends_with('.'), "{c:?}: {d}");
    }
    let unknown = cowsnap::cowsnap_error_description(-999);
    // SAFETY: a static NUL-terminated string.
    assert_eq!(
        unsafe { std::ffi::CStr::from_ptr(unknown) }.to_bytes(),
        b"unknown result code"
    );
}

#[test]
fn the_origin_attribute_string_needs_eleven_bytes() {
    let mut vol = std::ptr::null_mut();
    // SAFETY: valid out-pointer; the volume is freed below.
    unsafe {
        assert_eq!(
            cowsnap::cowsnap_volume_create_mem(1 << 20, &mut vol) as i32,
            0
        );
        let mut buf = [0x7f as std::ffi::c_char; 16];
        let r = cowsnap::cowsnap_volume_lvs_attr(vol, buf.as_mut_ptr(), 10);
        assert_eq!(r as i32, ErrorCode::BufferTooSmall as i32);
        assert_eq!(buf[0], 0x7f, "nothing written");
        assert_eq!(
            cowsnap::cowsnap_volume_lvs_attr(vol, buf.as_mut_ptr(), 11) as i32,
            0
        );
        let s = std::ffi::CStr::from_ptr(buf.as_ptr()).to_str().unwrap();
        assert_eq!(s, "-wi-a-----");
        assert_eq!(buf[11], 0x7f, "nothing written past the NUL");
        cowsnap::cowsnap_volume_free(vol);
    }
}

/// The C ABI returns the core's state, store and overflow numbers as they are (`status_to_c`):
/// each C enum constant must be the core variant's number.
#[test]
fn c_enums_are_the_core_numbers() {
    use cowsnap::{
        cowsnap_overflow_mode as O, cowsnap_snapshot_state as S, cowsnap_store_kind as K,
    };
    use cowsnap_core::{OverflowMode, SnapshotState, StoreKind};
    let states = [
        (SnapshotState::Active, S::COWSNAP_STATE_ACTIVE),
        (SnapshotState::Overflow, S::COWSNAP_STATE_OVERFLOW),
        (SnapshotState::Invalid, S::COWSNAP_STATE_INVALID),
        (SnapshotState::Merging, S::COWSNAP_STATE_MERGING),
    ];
    for (core, c) in states {
        assert_eq!(core as i32, c as i32, "{core:?}");
    }
    let stores = [
        (StoreKind::Persistent, K::COWSNAP_STORE_PERSISTENT),
        (StoreKind::Transient, K::COWSNAP_STORE_TRANSIENT),
    ];
    for (core, c) in stores {
        assert_eq!(core as i32, c as i32, "{core:?}");
    }
    let modes = [
        (OverflowMode::Invalidate, O::COWSNAP_OVERFLOW_INVALIDATE),
        (OverflowMode::Report, O::COWSNAP_OVERFLOW_REPORT),
    ];
    for (core, c) in modes {
        assert_eq!(core as i32, c as i32, "{core:?}");
    }
}
