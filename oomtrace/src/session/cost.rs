//! Measures what the session itself costs: events read, BPF program time (from the kernel's
//! run-time statistics, switched on for the session), and oomtrace's CPU time and peak memory.

use std::os::fd::OwnedFd;
use std::time::Instant;

use oomtrace_common::EventKind;

use crate::probe::Probes;
use crate::probe::stats;
use crate::report::cost::{ProgramCost, TracerCost};

/// Counters the ingestion loop keeps, plus the statistics switch it holds open.
pub struct CostMeter {
    /// Keeps the kernel's run-time statistics on; closing it turns them off.
    stats_fd: Option<OwnedFd>,
    stats_error: Option<String>,
    /// Events read from the ring buffer.
    pub events: u64,
    /// Allocations, reallocations and frees among them.
    pub allocator_events: u64,
    /// When tracing started, and oomtrace's CPU seconds then (loading the programs before it is
    /// set-up, not tracing cost).
    started: (Instant, f64),
}

impl CostMeter {
    /// Turns the kernel's statistics on (a failure is reported, never fatal).
    pub fn start() -> Self {
        let (fd, err) = match stats::enable() {
            Ok(fd) => (Some(fd), None),
            Err(e) => (None, Some(e)),
        };
        Self {
            stats_fd: fd,
            stats_error: err,
            events: 0,
            allocator_events: 0,
            started: (Instant::now(), own_usage().0),
        }
    }

    /// Counts one event read from the kernel.
    #[inline]
    pub fn count(&mut self, kind: Option<EventKind>) {
        self.events += 1;
        if matches!(
            kind,
            Some(EventKind::Alloc | EventKind::Realloc | EventKind::Free)
        ) {
            self.allocator_events += 1;
        }
    }

    /// BPF nanoseconds per allocator call so far, when statistics are on.
    pub fn bpf_ns_per_call(&self, probes: &Probes) -> Option<f64> {
        self.stats_fd.as_ref()?;
        per_call(&probes.program_runs())
    }

    /// The figures for the report, after `duration_s` seconds of tracing.
    pub fn finish(&self, probes: &Probes, lost_events: u64, duration_s: f64) -> TracerCost {
        let runs = if self.stats_fd.is_some() {
            probes.program_runs()
        } else {
            Vec::new()
        };
        let (cpu_now, peak_rss_bytes) = own_usage();
        let cpu_s = (cpu_now - self.started.1).max(0.0);
        let wall_s = self.started.0.elapsed().as_secs_f64().max(1e-9);
        let mut programs: Vec<ProgramCost> = runs
            .iter()
            .map(|r| ProgramCost {
                name: r.name.clone(),
                runs: r.runs,
                run_time_ns: r.run_time_ns,
                ns_per_run: (r.runs > 0).then(|| r.run_time_ns as f64 / r.runs as f64),
                verified_insns: r.verified_insns,
            })
            .collect();
        programs.sort_by(|a, b| b.run_time_ns.cmp(&a.run_time_ns).then(a.name.cmp(&b.name)));
        TracerCost {
            bpf_stats: self.stats_fd.is_some(),
            bpf_stats_error: self.stats_error.clone(),
            events: self.events,
            allocator_events: self.allocator_events,
            events_per_s: self.events as f64 / duration_s.max(1e-9),
            lost_events,
            bpf_ns_per_call: per_call(&runs),
            programs,
            cpu_s,
            cpu_pct: cpu_s / wall_s * 100.0,
            peak_rss_bytes,
        }
    }
}

/// Time of the allocator programs (entries and the return) per allocator call (entry runs).
fn per_call(runs: &[stats::ProgramRuns]) -> Option<f64> {
    let mut time = 0u64;
    let mut calls = 0u64;
    for r in runs {
        if stats::is_allocator_entry(&r.name) {
            calls += r.runs;
            time += r.run_time_ns;
        } else if stats::is_allocator_return(&r.name) {
            time += r.run_time_ns;
        }
    }
    (calls > 0).then(|| time as f64 / calls as f64)
}

/// oomtrace's own CPU seconds (user + system) and peak RSS in bytes.
fn own_usage() -> (f64, u64) {
    // SAFETY: getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs(ru.ru_utime) + secs(ru.ru_stime),
        ru.ru_maxrss as u64 * 1024,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(name: &str, runs: u64, ns: u64) -> stats::ProgramRuns {
        stats::ProgramRuns {
            name: name.into(),
            runs,
            run_time_ns: ns,
            verified_insns: None,
        }
    }

    #[test]
    fn per_call_adds_the_return_program_to_the_entries() {
        let r = [
            runs("alloc_enter", 200, 7_000),
            runs("alloc_return", 100, 7_000),
            runs("mmap_enter", 10, 90_000),
        ];
        // (5000 + 2000 + 7000) ns over 200 calls; the tracepoint is not an allocator call.
        assert_eq!(per_call(&r), Some(70.0));
        assert_eq!(per_call(&[runs("mmap_enter", 1, 1)]), None);
    }

    #[test]
    fn counts_allocator_events_apart() {
        let mut m = CostMeter {
            stats_fd: None,
            stats_error: None,
            events: 0,
            allocator_events: 0,
            started: (Instant::now(), 0.0),
        };
        for k in [
            EventKind::Alloc,
            EventKind::Free,
            EventKind::Mmap,
            EventKind::Realloc,
        ] {
            m.count(Some(k));
        }
        m.count(None);
        assert_eq!((m.events, m.allocator_events), (5, 3));
    }
}
