//! oomtrace's own cost in the report: event rate, losses, BPF time per allocator call, and the
//! tracer's CPU and memory.

use std::fmt::Write as _;

use serde::Serialize;

/// What tracing cost, as measured by the session that produced the report (`tracer_cost`).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TracerCost {
    /// Whether the kernel's BPF run-time statistics were on (the program figures need them).
    pub bpf_stats: bool,
    /// Why they were not, when they were not.
    pub bpf_stats_error: Option<String>,
    /// Events read from the kernel's ring buffer.
    pub events: u64,
    /// Of those, allocator calls: allocations, reallocations and frees.
    pub allocator_events: u64,
    /// `events` per second of tracing.
    pub events_per_s: f64,
    /// Events lost (same figure as the report's `lost_events`).
    pub lost_events: u64,
    /// BPF program time per allocator call (entry program plus return program), nanoseconds.
    /// Excludes the uprobe trap and the uretprobe trampoline, which the kernel's statistics do
    /// not see; counts every process that calls the probed allocator, traced or not.
    pub bpf_ns_per_call: Option<f64>,
    /// Each loaded program's runs and time (runs of every process that hit its probe).
    pub programs: Vec<ProgramCost>,
    /// oomtrace's own CPU time (user + system) from the start of tracing to the report (loading
    /// the programs before it excluded), seconds.
    pub cpu_s: f64,
    /// That CPU time over the same stretch of wall time, percent of one core.
    pub cpu_pct: f64,
    /// oomtrace's own peak resident memory.
    pub peak_rss_bytes: u64,
}

/// One BPF program's share of the cost.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ProgramCost {
    /// Program name (`malloc_enter`, `alloc_return`, `mmap_enter`, …).
    pub name: String,
    /// Runs while statistics were on.
    pub runs: u64,
    /// Total run time, nanoseconds.
    pub run_time_ns: u64,
    /// Mean time per run, nanoseconds (null without runs).
    pub ns_per_run: Option<f64>,
    /// Instructions the verifier went through to accept the program (null if not known).
    pub verified_insns: Option<u32>,
}

impl TracerCost {
    /// The text report's line about the tracer itself.
    pub fn render_text(&self) -> String {
        let mut s = format!(
            "tracer cost: {} events ({:.0}/s), {} lost, {:.2} s CPU ({:.1}% of a core), peak RSS {:.1} MiB",
            self.events,
            self.events_per_s,
            self.lost_events,
            self.cpu_s,
            self.cpu_pct,
            self.peak_rss_bytes as f64 / (1 << 20) as f64
        );
        match (self.bpf_ns_per_call, &self.bpf_stats_error) {
            (Some(ns), _) => {
                let _ = write!(
                    s,
                    "; BPF {ns:.0} ns per allocator call (programs only: the uprobe trap is extra)"
                );
            }
            (None, Some(e)) => {
                let _ = write!(s, "; {e}");
            }
            (None, None) => {}
        }
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_line_says_what_the_bpf_time_excludes() {
        let c = TracerCost {
            bpf_stats: true,
            events: 400_010,
            events_per_s: 200_005.0,
            bpf_ns_per_call: Some(85.4),
            cpu_s: 0.25,
            cpu_pct: 12.5,
            peak_rss_bytes: 32 << 20,
            ..Default::default()
        };
        let line = c.render_text();
        assert!(line.contains("400010 events (200005/s), 0 lost"), "{line}");
        assert!(line.contains("BPF 85 ns per allocator call"), "{line}");
        assert!(line.contains("uprobe trap is extra"), "{line}");
        assert!(line.contains("peak RSS 32.0 MiB"), "{line}");
    }
}
