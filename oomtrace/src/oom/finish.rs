//! The end of a monitored `run`: the artifacts on disk and the budget's verdict.

use std::path::PathBuf;

use anyhow::Result;

use super::artifacts::{self, Summary};
use super::budget::{self, Verdict};
use crate::report::human_bytes;
use crate::session::{Monitored, Outcome};

/// What `run` asked for at its end.
#[derive(Debug, Clone)]
pub struct RunEnd {
    /// Where the artifacts go.
    pub artifacts: Option<PathBuf>,
    /// The CI budget.
    pub budget: Option<u64>,
    /// Warning threshold, percent of the budget.
    pub warn_at: f64,
    /// The cap CMD ran under.
    pub memory_max: Option<u64>,
}

/// Writes the artifacts, prints the budget's verdict, and returns the exit status.
pub fn finish_run(end: &RunEnd, m: &Monitored, outcome: &Outcome, status: i32) -> Result<i32> {
    let report = &outcome.report;
    let oom_kills = (report
        .oom_events
        .iter()
        .filter(|o| report.processes.iter().any(|p| p.pid == o.pid))
        .count() as u64)
        .max(m.cgroup_oom_kills.unwrap_or(0));
    if let Some(dir) = &end.artifacts {
        let (exit_code, signal) = match outcome.child {
            Some(crate::launch::ChildStatus::Exited(c)) => (Some(c), None),
            Some(crate::launch::ChildStatus::Signaled(s)) => (None, Some(s)),
            None => (None, None),
        };
        let summary = Summary {
            peak_rss_bytes: m.peak_rss_bytes,
            peak_outstanding_bytes: m.peak_heap_bytes,
            duration_s: report.duration_s,
            samples: m.samples,
            oom_kills,
            exit_code,
            signal,
            memory_max: end.memory_max,
        };
        artifacts::write_json(dir, artifacts::SUMMARY, &summary)?;
        artifacts::write_json(dir, artifacts::OOM_EVENTS, &report.oom_events)?;
        artifacts::write_json(dir, artifacts::REPORT, report)?;
        artifacts::write_text(
            dir,
            artifacts::KERNEL_LOG,
            &(m.kernel_lines.join("\n") + "\n"),
        )?;
    }
    let Some(limit) = end.budget else {
        return Ok(status);
    };
    let verdict = budget::evaluate(m.peak_heap_bytes, m.peak_rss_bytes, limit, end.warn_at);
    let peak = m.peak_heap_bytes.max(m.peak_rss_bytes);
    if let Some(msg) = verdict.message(peak, limit, end.warn_at) {
        crate::say!("oomtrace: {msg}");
    }
    if let Verdict::Exceeded { .. } = verdict {
        crate::say!("oomtrace: stacks holding the most at the peak:");
        for (i, st) in m.peak_stacks.iter().take(5).enumerate() {
            let site = st
                .frames
                .first()
                .and_then(|f| f.function.as_deref())
                .unwrap_or("??");
            crate::say!(
                "  #{} {} in {} block(s) at {site} (pid {})",
                i + 1,
                human_bytes(st.outstanding_bytes),
                st.outstanding_allocs,
                st.pid
            );
        }
    }
    Ok(verdict.exit_code(status))
}
