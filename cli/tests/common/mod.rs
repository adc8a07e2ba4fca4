//! Helpers shared by the CLI integration tests: run the built binary, scratch directories, vectors.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The binary under test: this build's, or `$COWSNAP_TEST_BIN` (to show that a test fails on an
/// older build).
pub fn bin() -> Command {
    match std::env::var_os("COWSNAP_TEST_BIN") {
        Some(b) => Command::new(b),
        None => Command::new(env!("CARGO_BIN_EXE_cowsnap")),
    }
}

/// Runs `cowsnap args...` in `cwd`.
pub fn run(cwd: &Path, args: &[&str]) -> Output {
    bin()
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("spawn cowsnap")
}

/// Runs and asserts success; returns stdout.
pub fn ok(cwd: &Path, args: &[&str]) -> Vec<u8> {
    let o = run(cwd, args);
    assert!(
        o.status.success(),
        "cowsnap {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

pub fn ok_str(cwd: &Path, args: &[&str]) -> String {
    String::from_utf8(ok(cwd, args)).expect("utf-8 stdout")
}

/// Runs and asserts a clean failure: non-zero exit, exactly one line on stderr, no panic. Returns it.
pub fn fails(cwd: &Path, args: &[&str]) -> String {
    failed(&run(cwd, args), args)
}

/// The checks of [`fails`] on an output.
pub fn failed(o: &Output, args: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "cowsnap {args:?} should fail; stdout {:?}",
        String::from_utf8_lossy(&o.stdout)
    );
    // 3 = refused operation, 4 = I/O error or corruption (2, clap's usage errors, print usage).
    assert!(
        matches!(o.status.code(), Some(3 | 4)),
        "exit code {:?} for {args:?}: {err}",
        o.status.code()
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err:?}"
    );
    // A warning: done, but something was lost (exit code 3).
    assert!(
        err.starts_with("cowsnap: error: ") || err.starts_with("cowsnap: warning: "),
        "{err}"
    );
    err
}

/// Like [`fails`], and asserts the exit code.
pub fn fails_with(cwd: &Path, args: &[&str], code: i32) -> String {
    let o = run(cwd, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "exit code for {args:?}: {err}");
    failed(&o, args)
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        Self::under(&std::env::temp_dir(), tag)
    }
    /// A scratch directory inside `base` (e.g. `/var/tmp`, a disk where `/tmp` may be a tmpfs).
    pub fn under(base: &Path, tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = base.join(format!(
            "cowsnap-cli-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The repository's copy of the shared vectors, `<repo>/tests/shared/vectors`.
pub fn vectors() -> PathBuf {
    let v = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/shared/vectors");
    assert!(
        v.join("scripts").is_dir(),
        "test vectors not found at {}",
        v.display()
    );
    v
}

/// Decompresses a `.gz` file.
pub fn gunzip(p: &Path) -> Vec<u8> {
    let f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    out
}

/// Names of the kernel vector folders.
pub fn kernel_cases() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(vectors().join("kernel"))
        .expect("kernel vectors")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

/// `lvs --json` rows as (name, attr, data_percent, size_bytes).
pub fn lvs(cwd: &Path, vol: &str) -> Vec<serde_json::Value> {
    let out = ok_str(cwd, &["lvs", vol, "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("lvs json");
    doc["report"][0]["lv"].as_array().expect("lv array").clone()
}

pub fn row<'a>(rows: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["lv_name"] == name)
        .unwrap_or_else(|| panic!("no row {name} in {rows:?}"))
}

pub fn data_percent(rows: &[serde_json::Value], name: &str) -> f64 {
    row(rows, name)["data_percent"]
        .as_str()
        .expect("string")
        .parse()
        .expect("number")
}
