//! Progress bars on a terminal only (never in pipes or with `--quiet`), installed into the
//! managed-volume library, which draws them for merges, reads and backups.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub use cowsnap_managed::progress::Progress;

struct Bar(ProgressBar);

impl cowsnap_managed::progress::Bar for Bar {
    fn set(&self, pos: u64) {
        self.0.set_position(pos);
    }
    fn set_total(&self, total: u64) {
        self.0.set_length(total);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// A bar of `total` units; `bytes` selects byte formatting, else chunks.
fn make(total: u64, what: &str, bytes: bool) -> Option<Box<dyn cowsnap_managed::progress::Bar>> {
    if !std::io::stderr().is_terminal() {
        return None;
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
    Some(Box::new(Bar(pb)))
}

/// Installs the terminal's progress bars (at start-up).
pub fn install() {
    cowsnap_managed::progress::set_bars(make);
}
