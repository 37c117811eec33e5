//! Leaks at exit, told apart as valgrind's memcheck and LeakSanitizer tell them: definitely
//! lost, indirectly lost, possibly lost, still reachable; and the CI gate built on them
//! (`run --max-leaked`, `--suppressions`, `--leak-kinds`, `--expect-no-growth`).
//!
//! The protocol, for a process of `run` that ends:
//!
//! ```text
//! holder thread (ptrace)                         ingestion loop (owns the model)
//! exit stop of the thread that ends pid ──────►  Exiting { pid, tid, reply }
//!   (the process stays stopped)                  drain the ring (the block set is exact)
//!                                       ◄──────  reply: ScanJob { blocks, mapped pieces }
//! scan: registers, /proc/TID/maps, roots,
//!   process_vm_readv of roots and blocks
//! Scanned(ScanReport) ────────────────────────►  Leak events per stack and kind, fed to the
//! resume: the process exits                      model and the recording (replay agrees)
//! ```
//!
//! The loop never blocks on the scan (it reads the target's memory on the holder thread, which
//! must read the registers anyway), and the holder waits for the loop at most
//! [`REPLY_WAIT`]: a process is never held for long, whatever happens to the session.
//!
//! - [`scan`]: the classification, on any memory (unit-tested on synthetic heaps).
//! - [`remote`]: the real process: maps, registers, `process_vm_readv`, which regions are roots.
//! - [`suppress`]: suppression files (`function GLOB`, `module GLOB`).
//! - [`gate`]: the verdict on a report, its stderr lines and its report object.

pub mod gate;
pub mod remote;
pub mod scan;
pub mod suppress;

use std::sync::mpsc;
use std::time::Duration;

pub use self::remote::{ScanJob, ScanReport};

/// The longest a process waits at its exit for the loop's reply.
pub const REPLY_WAIT: Duration = Duration::from_secs(10);

/// What the holder thread tells the model's owner.
pub enum ToModel {
    /// Process `pid` is stopped at its exit (thread `tid`): drain, then reply with its blocks
    /// (`None`: nothing to scan).
    Exiting {
        /// The process.
        pid: u32,
        /// The thread that ends it.
        tid: u32,
        /// Where the job goes.
        reply: mpsc::SyncSender<Option<ScanJob>>,
    },
    /// What the scan of a process found.
    Scanned(ScanReport),
}

/// The holder thread's end of the protocol.
#[derive(Clone)]
pub struct ExitScanner {
    tx: tokio::sync::mpsc::UnboundedSender<ToModel>,
}

impl ExitScanner {
    /// A scanner and the receiver the ingestion loop polls.
    pub fn new() -> (Self, tokio::sync::mpsc::UnboundedReceiver<ToModel>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// At the exit stop of the thread `tid` that ends `pid` (on the holder thread, which traces
    /// it): gets the job from the loop, scans, sends the findings back. Returns once the process
    /// may go on.
    pub fn at_exit(&self, pid: u32, tid: u32) {
        let (reply, job) = mpsc::sync_channel(1);
        if self.tx.send(ToModel::Exiting { pid, tid, reply }).is_err() {
            return; // The session is over.
        }
        let Ok(Some(job)) = job.recv_timeout(REPLY_WAIT) else {
            return;
        };
        let _ = self.tx.send(ToModel::Scanned(remote::scan(&job)));
    }
}
