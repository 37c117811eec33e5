//! The loop's side of the leak scan at exit (see `crate::leaks` for the protocol): hand the
//! holder thread a process's blocks once the ring is drained, and turn what the scan found into
//! `Leak` events, so the model and the recording get the same figures.

use oomtrace_common::EventKind;
use tokio::sync::mpsc::UnboundedReceiver;

use super::ingest::Session;
use crate::leaks::{ScanJob, ScanReport, ToModel};
use crate::model::leak::{LEAK_SCAN_DONE, LeakKind, leak_event};

impl Session {
    /// Handles one message of the holder thread.
    pub fn exit_scan(&mut self, msg: ToModel) {
        match msg {
            ToModel::Exiting { pid, tid, reply } => {
                // Every event the process made is in the ring by now: the block set is exact.
                self.drain();
                let job = self
                    .model
                    .process(pid)
                    .filter(|p| p.exit.is_none() && p.mode == crate::mode::Mode::Exact)
                    .map(|p| ScanJob {
                        pid,
                        tid,
                        blocks: p.leak_blocks(),
                        pieces: p.mapped_pieces(),
                    });
                let _ = reply.send(job);
            }
            ToModel::Scanned(report) => self.scanned(report),
        }
    }

    fn scanned(&mut self, r: ScanReport) {
        if let Some(e) = &r.error {
            crate::say!(
                "oomtrace: warning: no leak scan for pid {}: {e}; its outstanding blocks are \
                 left unclassified",
                r.pid
            );
            return;
        }
        let Some(p) = self.model.process(r.pid) else {
            return;
        };
        let template = super::synthetic(EventKind::Leak, r.pid);
        let mut events = Vec::new();
        for (stack, counts) in &r.per_stack {
            let Some(st) = p.stacks.get(*stack as usize) else {
                continue;
            };
            let site = oomtrace_common::MemEvent {
                call_site: st.key.call_site,
                stack_id: st.key.stack_id,
                ..template
            };
            for kind in LeakKind::ALL {
                let (bytes, blocks) = (counts.bytes[kind as usize], counts.blocks[kind as usize]);
                if blocks > 0 {
                    events.push(leak_event(&site, kind, bytes, blocks));
                }
            }
        }
        let mut done = template;
        done.alloc_fn = LEAK_SCAN_DONE;
        done.aux = r.elapsed.as_micros() as u64;
        events.push(done);
        for ev in &events {
            self.feed(ev);
        }
        if std::env::var_os("OOMTRACE_VERBOSE").is_some() {
            crate::say!(
                "oomtrace: leak scan of pid {}: {} blocks, {} root bytes and {} block bytes read, \
                 {} lookups, {:.1} ms",
                r.pid,
                r.per_stack
                    .iter()
                    .map(|(_, c)| c.blocks.iter().sum::<u64>())
                    .sum::<u64>(),
                r.stats.root_bytes,
                r.stats.block_bytes,
                r.stats.lookups,
                r.elapsed.as_secs_f64() * 1e3
            );
        }
    }

    /// After the loop: no process waits any more, and the findings already sent are applied.
    pub fn finish_exit_scans(&mut self, rx: &mut Option<UnboundedReceiver<ToModel>>) {
        let Some(mut rx) = rx.take() else {
            return;
        };
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                // Too late to drain for it: let it go at once.
                ToModel::Exiting { reply, .. } => {
                    let _ = reply.send(None);
                }
                ToModel::Scanned(report) => self.scanned(report),
            }
        }
    }
}
