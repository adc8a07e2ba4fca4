//! Gives the shared library its SONAME, so that programs linked against it record the ABI version
//! they were built for. The policy is cargo-c's (`cargo cbuild` sets the same SONAME): Cargo's
//! compatibility rule, `libcowsnap.so.0.<minor>` while the major is 0 (a 0.x minor release may break
//! the ABI; `0.0.<patch>` for 0.0.x), `libcowsnap.so.<major>` from 1.0 on.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" || os.ends_with("bsd") {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
        let minor = std::env::var("CARGO_PKG_VERSION_MINOR").unwrap_or_else(|_| "0".into());
        let patch = std::env::var("CARGO_PKG_VERSION_PATCH").unwrap_or_else(|_| "0".into());
        let sover = match (major.as_str(), minor.as_str()) {
            ("0", "0") => format!("0.0.{patch}"),
            ("0", _) => format!("0.{minor}"),
            _ => major,
        };
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcowsnap.so.{sover}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
