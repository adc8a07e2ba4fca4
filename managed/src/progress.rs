//! Progress of long operations (merge, read, backup), drawn by whoever links this library: the
//! `cowsnap` CLI installs progress bars with [`set_bars`]; without it nothing is drawn.

use std::sync::OnceLock;

/// A progress display.
pub trait Bar: Send + Sync {
    fn set(&self, pos: u64);
    fn set_total(&self, total: u64);
    fn finish(&self);
}

/// Makes a bar of `total` units (`bytes`: byte formatting, else chunks) titled `what`; `None` for
/// none.
pub type MakeBar = fn(total: u64, what: &str, bytes: bool) -> Option<Box<dyn Bar>>;

static MAKE: OnceLock<MakeBar> = OnceLock::new();

/// Installs the process's progress bars (once; later calls are ignored).
pub fn set_bars(make: MakeBar) {
    let _ = MAKE.set(make);
}

/// A progress bar that may be switched off.
pub struct Progress(Option<Box<dyn Bar>>);

impl Progress {
    /// A bar of `total` units; `bytes` selects byte formatting, else chunks; none when `quiet`.
    pub fn new(total: u64, what: &str, bytes: bool, quiet: bool) -> Self {
        if quiet {
            return Progress(None);
        }
        Progress(MAKE.get().and_then(|m| m(total, what, bytes)))
    }

    pub fn set(&self, pos: u64) {
        if let Some(b) = &self.0 {
            b.set(pos);
        }
    }

    pub fn set_total(&self, total: u64) {
        if let Some(b) = &self.0 {
            b.set_total(total);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish();
        }
    }
}
