//! Closing probe links off the critical path.
//!
//! Closing a uprobe link blocks the closing thread for a grace period (tens of milliseconds
//! here). Nothing should wait for that: not the report, not a traced child's exit, not the
//! next attach. Links are handed to worker threads that close them; several closing at once
//! share grace periods, so a batch costs about one.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};

/// Worker threads at most: each blocks in `close` for a grace period.
const WORKERS: usize = 8;

#[derive(Default)]
struct Queue {
    batches: Vec<Vec<OwnedFd>>,
    /// Batches handed out and not yet closed.
    busy: usize,
    workers: usize,
    idle_workers: usize,
}

/// A pool of threads that close descriptors.
#[derive(Default)]
pub struct Closer {
    shared: Arc<(Mutex<Queue>, Condvar)>,
}

impl Closer {
    /// An idle pool (threads start on demand).
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes `fds` on a worker thread.
    pub fn close(&self, fds: Vec<OwnedFd>) {
        if fds.is_empty() {
            return;
        }
        let (lock, cv) = &*self.shared;
        let mut q = lock.lock().expect("closer lock");
        q.batches.push(fds);
        if q.idle_workers == 0 && q.workers < WORKERS {
            q.workers += 1;
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("oomtrace-detach".into())
                .spawn(move || worker(&shared));
            if spawned.is_err() {
                // No thread: close here, slowly, rather than leak probes.
                q.workers -= 1;
                let batch = q.batches.pop();
                drop(q);
                drop(batch);
                return;
            }
        }
        cv.notify_all();
    }

    /// Waits until everything handed over so far is closed.
    pub fn wait_idle(&self) {
        let (lock, cv) = &*self.shared;
        let mut q = lock.lock().expect("closer lock");
        while !q.batches.is_empty() || q.busy > 0 {
            q = cv.wait(q).expect("closer lock");
        }
    }
}

fn worker(shared: &(Mutex<Queue>, Condvar)) {
    let (lock, cv) = shared;
    let mut q = lock.lock().expect("closer lock");
    loop {
        if let Some(batch) = q.batches.pop() {
            q.busy += 1;
            drop(q);
            drop(batch);
            q = lock.lock().expect("closer lock");
            q.busy -= 1;
            cv.notify_all();
            continue;
        }
        q.idle_workers += 1;
        q = cv.wait(q).expect("closer lock");
        q.idle_workers -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_everything_handed_over() {
        use std::io::Read as _;
        let closer = Closer::new();
        let mut readers = Vec::new();
        for _ in 0..20 {
            let mut fds = [0; 2];
            // SAFETY: fds has room for the two descriptors.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: both descriptors were just created and are owned by nobody else.
            let (r, w) = unsafe {
                use std::os::fd::FromRawFd as _;
                (
                    std::fs::File::from_raw_fd(fds[0]),
                    OwnedFd::from_raw_fd(fds[1]),
                )
            };
            readers.push(r);
            closer.close(vec![w]);
        }
        closer.wait_idle();
        // Every write end closed: each read end is at end of file at once.
        for mut r in readers {
            let mut buf = [0u8; 1];
            assert_eq!(r.read(&mut buf).unwrap(), 0);
        }
        let (lock, _) = &*closer.shared;
        assert!(lock.lock().unwrap().workers <= WORKERS);
    }
}
