//! Mechanical checks of the ABI discipline: every exported function is `#[no_mangle]`, and its body is
//! exactly one panic-boundary macro call naming the function (so no panic can unwind into C and every
//! error message says where it came from). Also: the result codes are the core's codes.

use std::path::Path;

use cowsnap::cowsnap_result;
use cowsnap_core::ErrorCode;

struct Export {
    file: String,
    name: String,
    body_start: String,
    no_mangle: bool,
}

fn scan() -> Vec<Export> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = src.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            if !(t.contains("extern \"C\" fn ") && t.starts_with("pub ")) {
                continue;
            }
            let name: String = t[t.find("fn ").unwrap() + 3..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            // The body starts after the line that closes the signature with `{`.
            let open = (i..lines.len())
                .find(|&j| lines[j].trim_end().ends_with('{'))
                .unwrap();
            let body_start = lines[open + 1..]
                .iter()
                .map(|l| l.trim())
                .find(|l| !l.is_empty() && !l.starts_with("//"))
                .unwrap_or("")
                .to_string();
            found.push(Export {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                name,
                body_start,
                no_mangle: i > 0 && lines[i - 1].trim() == "#[no_mangle]",
            });
        }
    }
    found
}

#[test]
fn every_export_is_wrapped_in_the_panic_guard() {
    let exports = scan();
    assert!(exports.len() >= 20, "found only {} exports", exports.len());
    for e in &exports {
        assert!(e.no_mangle, "{}: {} lacks #[no_mangle]", e.file, e.name);
        let ok = e.body_start == format!("ffi_guard!(\"{}\", {{", e.name)
            || e.body_start
                .starts_with(&format!("ffi_guard_value!(\"{}\", ", e.name));
        assert!(
            ok,
            "{}: the body of {} must be `ffi_guard!(\"{}\", {{ ... }})` (or ffi_guard_value!), found `{}`",
            e.file, e.name, e.name, e.body_start
        );
    }
    // Every export is named cowsnap_*.
    for e in &exports {
        assert!(e.name.starts_with("cowsnap_"), "{} is not prefixed", e.name);
    }
}

#[test]
fn no_other_extern_functions_escape_the_scan() {
    // Any `extern "C"` item that the scan above would not see (e.g. written over several lines) fails.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let scanned = scan().len();
    let mut no_mangle = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let src = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        no_mangle += src.matches("#[no_mangle]").count();
        no_mangle += src.matches("#[export_name").count();
    }
    assert_eq!(
        no_mangle, scanned,
        "every #[no_mangle] must be a scanned `pub extern \"C\" fn`"
    );
}

#[test]
fn result_codes_are_the_core_codes() {
    let mut seen = std::collections::HashSet::new();
    for code in ErrorCode::ALL {
        let c = cowsnap_result::from_code(code);
        assert_eq!(c as i32, code as i32, "{code:?}");
        assert!(seen.insert(c as i32), "duplicate number for {code:?}");
        assert_eq!(cowsnap_result::code_of(code as i32), Some(code));
        let name = cowsnap::cowsnap_error_name(code as i32);
        // SAFETY: a static NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_str().unwrap();
        assert_eq!(name, code.name());
        let expect = if code == ErrorCode::Ok {
            "COWSNAP_OK".to_string()
        } else {
            format!("COWSNAP_ERR_{}", code.name())
        };
        assert_eq!(format!("{c:?}"), expect);
    }
    let unknown = cowsnap::cowsnap_error_name(-999);
    // SAFETY: a static NUL-terminated string.
    assert_eq!(
        unsafe { std::ffi::CStr::from_ptr(unknown) }.to_bytes(),
        b"UNKNOWN"
    );
}

#[test]
fn a_panic_becomes_a_result_code_and_a_message() {
    assert_eq!(
        cowsnap::__test_panic_inside_guard(),
        cowsnap_result::COWSNAP_ERR_PANIC
    );
    let mut buf = [0 as std::ffi::c_char; 256];
    // SAFETY: buffer of the given length.
    let n = unsafe { cowsnap::cowsnap_last_error(buf.as_mut_ptr(), buf.len()) };
    // SAFETY: NUL-terminated by cowsnap_last_error.
    let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_str()
        .unwrap();
    assert_eq!(n, msg.len());
    assert!(msg.contains("deliberate test panic"), "{msg}");
}
