//! Gives the shared library its SONAME (`libcowsnap.so.<major>`), so that programs linked against it
//! record the ABI version they were built for.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" || os.ends_with("bsd") {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcowsnap.so.{major}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
