//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;

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

/// A device whose `set_len` either refuses (`Unsupported`, the trait's default) or claims success
/// without growing.
pub struct NoGrow(pub cowsnap_core::MemDevice, pub bool);

impl cowsnap_core::BlockDevice for NoGrow {
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn read_at(&self, o: u64, b: &mut [u8]) -> cowsnap_core::Result<()> {
        self.0.read_at(o, b)
    }
    fn write_at(&mut self, o: u64, b: &[u8]) -> cowsnap_core::Result<()> {
        self.0.write_at(o, b)
    }
    fn flush(&mut self) -> cowsnap_core::Result<()> {
        Ok(())
    }
    fn set_len(&mut self, _: u64) -> cowsnap_core::Result<()> {
        if self.1 {
            Ok(()) // says yes, grows nothing: autoextend must not spin on it
        } else {
            Err(cowsnap_core::Error::Unsupported("fixed"))
        }
    }
}

/// A memory device whose bytes the test keeps a handle on (to see what a refused call wrote).
#[derive(Clone)]
pub struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[allow(dead_code)]
impl Shared {
    pub fn new(bytes: Vec<u8>) -> Self {
        Shared(std::sync::Arc::new(std::sync::Mutex::new(bytes)))
    }
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl cowsnap_core::BlockDevice for Shared {
    fn len(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    fn read_at(&self, o: u64, b: &mut [u8]) -> cowsnap_core::Result<()> {
        let d = self.0.lock().unwrap();
        b.copy_from_slice(&d[o as usize..o as usize + b.len()]);
        Ok(())
    }
    fn write_at(&mut self, o: u64, b: &[u8]) -> cowsnap_core::Result<()> {
        let mut d = self.0.lock().unwrap();
        d[o as usize..o as usize + b.len()].copy_from_slice(b);
        Ok(())
    }
    fn flush(&mut self) -> cowsnap_core::Result<()> {
        Ok(())
    }
}
