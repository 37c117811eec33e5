//! `oomtrace oom-watch`: every OOM kill on the machine as it happens, one line (or JSON line)
//! each, for people who only want that.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, Result};
use oomtrace_common::{EventKind, MemEvent};
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};

use super::cgroup::cgroup_of_pid;
use crate::model::oom::OomEvent;
use crate::probe::placement::PlacementMode;
use crate::probe::{ProbeConfig, Probes, preflight};
use crate::report::human_bytes;
use crate::source::live::RingReader;

/// One kill, as printed.
#[derive(Debug, Serialize)]
pub struct Kill {
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// The victim.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
    /// Its uid.
    pub uid: u32,
    /// Its memory cgroup, when readable before it died.
    pub cgroup: Option<String>,
    /// Virtual size.
    pub total_vm_bytes: u64,
    /// Anonymous RSS.
    pub anon_rss_bytes: u64,
    /// File-backed RSS.
    pub file_rss_bytes: u64,
    /// Shared-memory RSS.
    pub shmem_rss_bytes: u64,
    /// Its `oom_score_adj`.
    pub oom_score_adj: i16,
    /// The process whose allocation triggered the kill.
    pub trigger_pid: u32,
}

impl Kill {
    /// From an `Oom` event, decoded by the model's own `OomEvent` (one decoder for both).
    fn new(ev: &MemEvent) -> Self {
        let o = OomEvent::new(ev, None);
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self {
            time,
            pid: o.pid,
            comm: o.comm,
            uid: o.uid,
            cgroup: cgroup_of_pid(o.pid),
            total_vm_bytes: o.total_vm_bytes,
            anon_rss_bytes: o.anon_rss_bytes,
            file_rss_bytes: o.file_rss_bytes,
            shmem_rss_bytes: o.shmem_rss_bytes,
            oom_score_adj: o.oom_score_adj,
            trigger_pid: o.trigger_pid,
        }
    }

    /// The one-line text form.
    pub fn line(&self) -> String {
        format!(
            "OOM kill: pid {} ({}) uid {} cgroup {} anon-rss {} file-rss {} shmem-rss {} total-vm {} oom_score_adj {} (triggered by pid {})",
            self.pid,
            self.comm,
            self.uid,
            self.cgroup.as_deref().unwrap_or("?"),
            human_bytes(self.anon_rss_bytes),
            human_bytes(self.file_rss_bytes),
            human_bytes(self.shmem_rss_bytes),
            human_bytes(self.total_vm_bytes),
            self.oom_score_adj,
            self.trigger_pid
        )
    }
}

/// Watches until SIGINT/SIGTERM, or until `count` kills were printed.
pub async fn watch(json: bool, count: Option<u64>) -> Result<()> {
    preflight::check()?;
    let mut probes = Probes::load(ProbeConfig {
        trace_all: false,
        follow_forks: false,
        placement: PlacementMode::Auto,
        ring_bytes: 256 * 1024,
        // No allocator probes: only the OOM tracepoint is attached.
        mode: crate::mode::Mode::Growth,
        kernel: false,
        floor: false,
        track_blocks: false,
    })?;
    probes.attach_oom_only()?;
    let reader = RingReader::new(probes.take_ring()?);
    // SAFETY: RingReader owns the ring map's fd, which stays open and unchanged for its lifetime.
    let mut ring = unsafe { AsyncFd::register(reader) }
        .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e}"))?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    crate::say!("oomtrace: watching the OOM killer; Ctrl-C to stop");
    let mut pending: Option<Kill> = None;
    let mut printed = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            guard = ring.readable_mut() => guard.context("ring buffer poll failed")?.clear_ready(),
            _ = tick.tick() => {}
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        while let Some(ev) = ring.get_mut().next_event() {
            match EventKind::from_u16(ev.kind) {
                Some(EventKind::Oom) => pending = Some(Kill::new(&ev)),
                Some(EventKind::OomComm) => {
                    if let Some(mut kill) = pending.take() {
                        let raw = ev.packed_comm();
                        let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                        kill.comm = String::from_utf8_lossy(&raw[..len]).into_owned();
                        let line = if json {
                            serde_json::to_string(&kill)?
                        } else {
                            kill.line()
                        };
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "{line}")?;
                        out.flush()?;
                        printed += 1;
                        if count.is_some_and(|c| printed >= c) {
                            return Ok(());
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}
