//! The checked-in `include/cowsnap.h` must be exactly what cbindgen generates from the sources.
//! Regenerate it with `COWSNAP_BLESS=1 cargo test -p cowsnap-ffi --test header`.

use std::path::Path;

fn generate() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config =
        cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("read ffi/cbindgen.toml");
    // Version macros come from Cargo.toml, never typed by hand.
    let extra = config.after_includes.take().unwrap_or_default();
    config.after_includes = Some(format!(
        "\n/* Version of this header (the library reports its own with cowsnap_version()). */\n\
         #define COWSNAP_VERSION_MAJOR {}\n\
         #define COWSNAP_VERSION_MINOR {}\n\
         #define COWSNAP_VERSION_PATCH {}\n\
         #define COWSNAP_VERSION_STRING \"{}\"\n{extra}",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION"),
    ));
    // Parse the source files directly (no `cargo metadata`): fast, and independent of the workspace.
    // (cbindgen follows the `mod` items of lib.rs.)
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen failed");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn checked_in_header_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/cowsnap.h");
    let fresh = generate();
    if std::env::var_os("COWSNAP_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != fresh {
        let first = current
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(current.lines().count().min(fresh.lines().count()));
        panic!(
            "ffi/include/cowsnap.h is out of date (first difference at line {}); regenerate it with \
             `COWSNAP_BLESS=1 cargo test -p cowsnap-ffi --test header` and commit it",
            first + 1
        );
    }
}

#[test]
fn header_declares_every_export_and_the_version() {
    let h = generate();
    for name in exports() {
        assert!(
            h.contains(&format!("{name}(")),
            "{name} missing from the header"
        );
    }
    assert!(h.contains(&format!(
        "#define COWSNAP_VERSION_STRING \"{}\"",
        env!("CARGO_PKG_VERSION")
    )));
    for code in cowsnap_core::ErrorCode::ALL {
        let c = if code == cowsnap_core::ErrorCode::Ok {
            "COWSNAP_OK = 0".to_string()
        } else {
            format!("COWSNAP_ERR_{} = {}", code.name(), code as i32)
        };
        assert!(h.contains(&c), "{c} missing from the header");
    }
}

/// Names of the `#[no_mangle]` functions in the sources.
fn exports() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let src = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in src.lines() {
            if let Some(i) = line.find("extern \"C\" fn ") {
                let rest = &line[i + "extern \"C\" fn ".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
            }
        }
    }
    assert!(names.len() >= 20, "found only {} exports", names.len());
    names
}
