//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;

use cowsnap_core::testkit::device::{Access, Hooked, Verdict};

/// The shared vector set, as copied into the repository (`tests/shared`): a clone alone passes, and
/// nothing outside the repository is read.
pub fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/shared")
}

/// Reads a gzip file.
pub fn gunzip(path: &std::path::Path) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// First differing offset of two byte strings, for readable failures.
pub fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// A memory device whose `set_len` either refuses (`Unsupported`, what a fixed device says) or
/// claims success without growing (`lies`): autoextend must not spin on it.
pub fn no_grow(mem: cowsnap_core::MemDevice, lies: bool) -> Hooked<cowsnap_core::MemDevice> {
    Hooked::new(mem, move |a| match a {
        Access::SetLen(_) if lies => Verdict::Skip,
        Access::SetLen(_) => Verdict::Fail(cowsnap_core::Error::Unsupported("fixed")),
        _ => Verdict::Pass,
    })
}

/// What a device holds after a power cut (the crash rigs of `crash.rs` and `shared.rs`).
#[derive(Clone, Copy, Debug)]
pub enum AfterCrash {
    /// Every write since the last flush is lost.
    DropUnflushed,
    /// Every write since the last flush made it.
    KeepUnflushed,
    /// Those, and the write in flight half on the device (whole sectors).
    TearLast,
    /// The device persisted only its latest unflushed write, not the earlier ones: write-back caches
    /// may reorder, so only a flush orders writes. Catches a missing barrier inside one device.
    KeepLastOnly,
}

/// Every [`AfterCrash`], tried at each crash point.
pub const OUTCOMES: [AfterCrash; 4] = [
    AfterCrash::DropUnflushed,
    AfterCrash::KeepUnflushed,
    AfterCrash::TearLast,
    AfterCrash::KeepLastOnly,
];

/// A persistent COW image (4 KiB chunks) holding `n` records of distinct origin chunks in the
/// kernel's layout, `chunks` chunks long (records that would fall past the end are left out: a cut
/// image).
pub fn cow_image(n: u64, chunks: u64) -> Vec<u8> {
    const EPA: u64 = 256;
    let loc = |area: u64| 1 + area * (EPA + 1);
    let mut b = vec![0u8; (chunks * 4096) as usize];
    for (i, v) in [0x7041_6E53u32, 1, 1, 8].into_iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    for p in 0..n {
        let at = ((loc(p / EPA) * 4096) + p % EPA * 16) as usize;
        if at + 16 <= b.len() {
            b[at..at + 8].copy_from_slice(&(p * 7919 % 1_000_003).to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&(loc(p / EPA) + 1 + p % EPA).to_le_bytes());
        }
    }
    b
}
