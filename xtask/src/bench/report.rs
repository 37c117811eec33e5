//! BENCHMARKS.md pieces: lines, and the goals table (met, or missed by how much).

use std::fmt::Write as _;

/// Appends one line.
pub fn line(md: &mut String, s: &str) {
    let _ = writeln!(md, "{s}");
}

/// One goal of the issue, with what was measured.
pub struct Goal {
    /// What is required, in words.
    pub goal: String,
    /// The measured figure in words, `None` when it could not be measured on this build.
    pub measured: Option<String>,
    /// Whether it is met (`None`: not measured).
    pub met: Option<bool>,
    /// Why it is missed, or why it was not measured.
    pub why: String,
}

/// The goals table.
pub fn goals(md: &mut String, goals: &[Goal]) {
    line(md, "\n## Goals\n");
    line(md, "| goal | measured | verdict | why |");
    line(md, "|---|---|---|---|");
    for g in goals {
        let verdict = match g.met {
            Some(true) => "**met**",
            Some(false) => "**missed**",
            None => "not measured",
        };
        line(
            md,
            &format!(
                "| {} | {} | {verdict} | {} |",
                g.goal,
                g.measured.as_deref().unwrap_or("–"),
                g.why
            ),
        );
    }
    line(md, "");
}
