//! The background group commit of a volume handle.
//!
//! Origin writes that needed copies wait in memory until their exceptions are committed (see
//! `Volume::commit`). A C caller that never calls `cowsnap_volume_flush` must still see them reach
//! the origin device soon, as page-cache writes would: this thread commits whatever waits every
//! [`INTERVAL`], so a process that dies loses at most that much (plus what the OS had not written).

use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use cowsnap_core::Volume;

/// How long an origin write may wait for its commit when nobody flushes.
pub(crate) const INTERVAL: Duration = Duration::from_millis(200);

/// Stops (and joins) its thread when dropped.
pub(crate) struct Committer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts committing `vol` in the background; `None` if no thread could be started (the
    /// volume then commits on flush and on its size bound only).
    pub(crate) fn start(vol: Weak<RwLock<Volume>>) -> Option<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cowsnap-commit".into())
            .spawn(move || run(&vol, &s))
            .ok()?;
        Some(Committer {
            stop,
            thread: Some(thread),
        })
    }
}

fn run(vol: &Weak<RwLock<Volume>>, stop: &(Mutex<bool>, Condvar)) {
    let (lock, cv) = stop;
    let Ok(mut stopped) = lock.lock() else { return };
    loop {
        stopped = match cv.wait_timeout(stopped, INTERVAL) {
            Ok((g, _)) => g,
            Err(_) => return,
        };
        if *stopped {
            return;
        }
        let Some(v) = vol.upgrade() else { return };
        let waiting = v.read().map(|g| g.held_bytes() > 0).unwrap_or(false);
        if waiting {
            if let Ok(mut g) = v.write() {
                // An error leaves the writes waiting; the caller's next flush reports it.
                let _ = g.commit();
            }
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        if let Ok(mut s) = self.stop.0.lock() {
            *s = true;
        }
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
