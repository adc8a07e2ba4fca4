//! Progress bars on a terminal only (never in pipes or with `--quiet`).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar that may be switched off.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar of `total` units; `bytes` selects byte formatting, else chunks.
    pub fn new(total: u64, what: &str, bytes: bool, quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let template = if bytes {
            "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})"
        } else {
            "{msg} [{bar:40}] {pos}/{len} chunks ({eta})"
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let pb = ProgressBar::new(total).with_style(style);
        pb.set_message(what.to_string());
        Progress(Some(pb))
    }

    pub fn set(&self, pos: u64) {
        if let Some(pb) = &self.0 {
            pb.set_position(pos);
        }
    }

    pub fn set_total(&self, total: u64) {
        if let Some(pb) = &self.0 {
            pb.set_length(total);
        }
    }

    pub fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}
