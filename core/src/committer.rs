//! A background thread that commits held origin writes at a short interval (`std` builds), so a
//! caller that never flushes still sees them reach the devices soon, as page-cache writes would:
//! a process that dies loses at most one interval of writes (plus what the OS had not written).
//! Used by the C ABI (and so Python) and the CLI's mount.

use std::boxed::Box;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Runs a tick every interval until the tick returns false or the committer is dropped (which
/// stops and joins the thread), unless it was [`Committer::detach`]ed.
#[derive(Debug)]
pub struct Committer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the thread; `tick` commits what waits (and returns false once its volume is gone).
    pub fn start(
        interval: Duration,
        tick: impl FnMut() -> bool + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s = stop.clone();
        let mut tick: Box<dyn FnMut() -> bool + Send> = Box::new(tick);
        let thread = std::thread::Builder::new()
            .name("cowsnap-commit".into())
            .spawn(move || run(interval, &mut tick, &s))?;
        Ok(Committer {
            stop,
            thread: Some(thread),
        })
    }

    /// Lets the thread run on its own until its tick returns false.
    pub fn detach(mut self) {
        drop(self.thread.take());
    }
}

fn run(interval: Duration, tick: &mut dyn FnMut() -> bool, stop: &(Mutex<bool>, Condvar)) {
    let (lock, cv) = stop;
    let Ok(mut stopped) = lock.lock() else { return };
    loop {
        stopped = match cv.wait_timeout(stopped, interval) {
            Ok((g, _)) => g,
            Err(_) => return,
        };
        if *stopped {
            return;
        }
        // Commit without the stop lock, so that a drop meanwhile does not wait on the lock.
        drop(stopped);
        if !tick() {
            return;
        }
        stopped = match lock.lock() {
            Ok(g) => g,
            Err(_) => return,
        };
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        let Some(t) = self.thread.take() else {
            return; // detached
        };
        if let Ok(mut s) = self.stop.0.lock() {
            *s = true;
        }
        self.stop.1.notify_all();
        let _ = t.join();
    }
}
