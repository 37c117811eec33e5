//! The sweep's results: JSON (`{"runs": [...]}`, see `docs/inject.md`) and a text table by
//! site, worst outcome first.

use std::fmt::Write as _;

use serde::Serialize;

use super::classify::{LeakStack, Outcome};
use super::plan::JFrame;
use crate::report::human_bytes;

/// The failure a run injected.
#[derive(Clone, Debug, Serialize)]
pub struct Injected {
    /// The site's function (what `--fail-at-site` was given).
    pub site: String,
    /// The site's deep stack in the first run (its busiest), call site first.
    pub frames: Vec<JFrame>,
    /// k: the k-th call from the site failed.
    pub occurrence: u64,
}

/// One run of the sweep.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// What was made to fail.
    pub injected: Injected,
    /// How it ended.
    pub outcome: Outcome,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Fatal signal, when one killed it.
    pub signal: Option<i32>,
    /// Where the fatal signal struck (empty when none, or unknown).
    pub crash_frames: Vec<JFrame>,
    /// Bytes definitely or indirectly lost at exit that the first run did not lose.
    pub leaked_bytes: u64,
    /// Those bytes by stack, largest first.
    pub leak_stacks: Vec<LeakStack>,
    /// The last line the command wrote on stderr (its error message), or why oomtrace could
    /// not run it.
    pub message: Option<String>,
}

/// The sweep's JSON document.
#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    /// Every run, in the order they ran.
    pub runs: Vec<RunResult>,
}

impl SweepReport {
    /// Whether CI should fail: a run crashed or hung.
    pub fn failed(&self) -> bool {
        self.runs
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Crashed | Outcome::Hung))
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{\"runs\": []}".to_owned())
    }

    /// The text table: sites worst outcome first, each site's runs worst first.
    pub fn render_text(&self, header: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{header}");
        let mut sites: Vec<(&str, Vec<&RunResult>)> = Vec::new();
        for r in &self.runs {
            match sites.iter_mut().find(|(n, _)| *n == r.injected.site) {
                Some((_, runs)) => runs.push(r),
                None => sites.push((&r.injected.site, vec![r])),
            }
        }
        let worst = |runs: &[&RunResult]| {
            runs.iter()
                .map(|r| (r.outcome.severity(), r.leaked_bytes))
                .max()
                .unwrap_or_default()
        };
        for (_, runs) in &mut sites {
            runs.sort_by(|a, b| {
                (b.outcome.severity(), b.leaked_bytes)
                    .cmp(&(a.outcome.severity(), a.leaked_bytes))
                    .then(a.injected.occurrence.cmp(&b.injected.occurrence))
            });
        }
        sites.sort_by_key(|s| std::cmp::Reverse(worst(&s.1)));
        let _ = writeln!(
            s,
            "\n{:<12} {:>5} {:>10} {:>12}  SITE",
            "OUTCOME", "K", "EXIT", "LEAKED"
        );
        for (site, runs) in &sites {
            for r in runs {
                let exit = match (r.exit_code, r.signal) {
                    (_, Some(sig)) => crate::report::faults::signal_name(sig),
                    (Some(c), None) => c.to_string(),
                    (None, None) => "-".to_owned(),
                };
                let _ = writeln!(
                    s,
                    "{:<12} {:>5} {:>10} {:>12}  {site}",
                    r.outcome.word(),
                    r.injected.occurrence,
                    exit,
                    human_bytes(r.leaked_bytes),
                );
            }
        }
        let detailed: Vec<&RunResult> = sites
            .iter()
            .flat_map(|(_, runs)| runs.iter().copied())
            .filter(|r| r.outcome != Outcome::NotReached)
            .collect();
        for r in detailed {
            let _ = writeln!(
                s,
                "\n{} when call {} at {} failed:",
                r.outcome.word(),
                r.injected.occurrence,
                r.injected.site
            );
            frames(&mut s, &r.injected.frames);
            if let Some(m) = &r.message {
                let _ = writeln!(s, "  message: {m}");
            }
            if !r.crash_frames.is_empty() {
                let _ = writeln!(s, "  crashed at:");
                frames(&mut s, &r.crash_frames);
            }
            for l in &r.leak_stacks {
                let _ = writeln!(s, "  leaked {} allocated at:", human_bytes(l.bytes));
                frames(&mut s, &l.frames);
            }
        }
        s
    }
}

fn frames(s: &mut String, frames: &[JFrame]) {
    for f in frames {
        let mut line = f.name();
        if let (Some(file), Some(l)) = (&f.file, f.line) {
            let short = file.rsplit('/').next().unwrap_or(file);
            let _ = write!(line, " ({short}:{l})");
        }
        if let Some(m) = &f.module {
            let _ = write!(line, " [{m}]");
        }
        let _ = writeln!(s, "      {line}");
    }
}
