//! Threads that flush devices for a shared volume's commits, kept for the volume's life (`std`
//! builds). A commit flushes every COW with new records in parallel, then again after their
//! metadata writes, then (durable) the origin and COWs: with four snapshots a durable request
//! started six threads, about a seventh of its time on this machine. These threads are started
//! once, as many as the most devices flushed together so far, and end with the volume.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::vec::Vec;

use crate::device::FlushHandle;
use crate::error::{Error, Result};

/// A flush to do and where its result goes.
type Job = (Arc<dyn FlushHandle>, Sender<Result<()>>);

/// The pool. Dropping it ends its threads (their queue closes) and waits for them.
pub(crate) struct Flushers {
    jobs: Option<Sender<Job>>,
    queue: Arc<Mutex<Receiver<Job>>>,
    /// The threads started so far.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The process that started them: a child of `fork` has none of them, and flushes on the
    /// calling thread instead of waiting for threads that do not exist.
    pid: u32,
}

impl core::fmt::Debug for Flushers {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let n = self.threads.lock().map_or(0, |t| t.len());
        write!(f, "Flushers({n} threads)")
    }
}

impl Flushers {
    pub(crate) fn new() -> Self {
        let (jobs, queue) = channel();
        Flushers {
            jobs: Some(jobs),
            queue: Arc::new(Mutex::new(queue)),
            threads: Mutex::new(Vec::new()),
            pid: std::process::id(),
        }
    }

    /// Flushes every handle, the first on the calling thread and the others at the same time on
    /// the pool's threads, and returns when all are done: `Ok` if every flush succeeded, else
    /// one of the errors. A handle that panics gives an error (its thread lives on). Handles the
    /// pool has no thread for (none could be started) are flushed on the calling thread.
    pub(crate) fn flush_all(&self, handles: &[Arc<dyn FlushHandle>]) -> Result<()> {
        let Some((first, others)) = handles.split_first() else {
            return Ok(());
        };
        let threads = self.grow_to(others.len());
        let (reply, results) = channel();
        let mut queued = 0;
        let mut here = Vec::new();
        for (i, h) in others.iter().enumerate() {
            let sent = i < threads
                && self
                    .jobs
                    .as_ref()
                    .is_some_and(|j| j.send((h.clone(), reply.clone())).is_ok());
            if sent {
                queued += 1;
            } else {
                here.push(h);
            }
        }
        drop(reply);
        let mut result = flush_one(first);
        for h in here {
            let r = flush_one(h);
            if result.is_ok() {
                result = r;
            }
        }
        for _ in 0..queued {
            // A closed channel before every answer came: a pool thread ended under its job.
            let r = results
                .recv()
                .unwrap_or_else(|_| Err(Error::io("a flush thread ended")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// Starts threads until there are `n` (or as many as could be started); returns how many.
    fn grow_to(&self, n: usize) -> usize {
        if std::process::id() != self.pid {
            return 0;
        }
        let Ok(mut threads) = self.threads.lock() else {
            return 0;
        };
        while threads.len() < n {
            let queue = self.queue.clone();
            let spawned = std::thread::Builder::new()
                .name("cowsnap-flush".into())
                .spawn(move || serve(&queue));
            match spawned {
                Ok(t) => threads.push(t),
                Err(_) => break,
            }
        }
        threads.len()
    }
}

impl Drop for Flushers {
    fn drop(&mut self) {
        // The queue closes: each thread ends after the job in hand (none: flush_all waits for
        // its jobs, and the pool is only dropped with its volume). Joined, so that a C host can
        // unload the library once the volume is freed.
        drop(self.jobs.take());
        if std::process::id() != self.pid {
            return; // a child of fork has none of these threads
        }
        if let Ok(threads) = self.threads.get_mut() {
            for t in threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

fn flush_one(h: &Arc<dyn FlushHandle>) -> Result<()> {
    catch_unwind(AssertUnwindSafe(|| h.flush()))
        .unwrap_or_else(|_| Err(Error::io("a device's flush panicked")))
}

/// A pool thread: flushes what comes until the pool is dropped.
fn serve(queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = match queue.lock() {
            Ok(q) => q.recv(),
            Err(_) => return,
        };
        let Ok((h, reply)) = job else {
            return; // the pool is gone
        };
        // The handle is dropped inside too: a panic there must not end the thread either.
        let r = catch_unwind(AssertUnwindSafe(move || h.flush()))
            .unwrap_or_else(|_| Err(Error::io("a device's flush panicked")));
        let _ = reply.send(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;
    use std::vec;

    struct Counting(Arc<AtomicUsize>, Option<Arc<Barrier>>, bool);
    impl FlushHandle for Counting {
        fn flush(&self) -> Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            if let Some(b) = &self.1 {
                b.wait();
            }
            if self.2 {
                panic!("injected");
            }
            Ok(())
        }
    }

    /// Four handles meet at a barrier of four: only flushes running at the same time pass it.
    /// Done twice: the second time no thread is started.
    #[test]
    fn flushes_run_together_on_threads_kept_between_calls() {
        let pool = Arc::new(Flushers::new());
        let n = Arc::new(AtomicUsize::new(0));
        for round in 1..=2 {
            let b = Arc::new(Barrier::new(4));
            let hs: Vec<Arc<dyn FlushHandle>> = (0..4)
                .map(|_| Arc::new(Counting(n.clone(), Some(b.clone()), false)) as _)
                .collect();
            // A pool that flushed one after the other would wait at the barrier for ever.
            let (done, wait) = channel();
            let p = pool.clone();
            std::thread::spawn(move || done.send(p.flush_all(&hs)));
            let r = wait.recv_timeout(std::time::Duration::from_secs(60));
            r.expect("the flushes did not run at the same time")
                .unwrap();
            assert_eq!(n.load(Ordering::SeqCst), 4 * round);
            assert_eq!(pool.threads.lock().unwrap().len(), 3);
        }
    }

    /// A handle that panics gives an error; the pool keeps serving.
    #[test]
    fn a_panicking_flush_is_an_error_and_the_pool_goes_on() {
        let pool = Flushers::new();
        let n = Arc::new(AtomicUsize::new(0));
        let hs: Vec<Arc<dyn FlushHandle>> = vec![
            Arc::new(Counting(n.clone(), None, false)),
            Arc::new(Counting(n.clone(), None, true)),
            Arc::new(Counting(n.clone(), None, false)),
        ];
        assert!(pool.flush_all(&hs).is_err());
        pool.flush_all(&hs[..1]).unwrap();
        // Both threads still serve: three flushes meet at a barrier of three.
        let b = Arc::new(Barrier::new(3));
        let again: Vec<Arc<dyn FlushHandle>> = (0..3)
            .map(|_| Arc::new(Counting(n.clone(), Some(b.clone()), false)) as _)
            .collect();
        let (done, wait) = channel();
        std::thread::spawn(move || done.send(pool.flush_all(&again)));
        let r = wait.recv_timeout(std::time::Duration::from_secs(60));
        r.expect("a pool thread died with the panicking flush")
            .unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 3 + 1 + 3);
    }
}
