//! The report's leak figures: each process's four totals from the scan at its exit, each
//! stack's kinds, and the leak gate's verdict (`crate::leaks::gate`), in JSON and text.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Report, human_bytes};
use crate::model::leak::{LeakCounts, LeakKind};

/// A process's (or a stack's) leak figures (report key `leaks` of a process).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LeakReport {
    /// Bytes no pointer reaches.
    pub definitely_lost_bytes: u64,
    /// Bytes reached only from lost blocks.
    pub indirectly_lost_bytes: u64,
    /// Bytes reached only through interior pointers.
    pub possibly_lost_bytes: u64,
    /// Bytes still pointed to.
    pub still_reachable_bytes: u64,
    /// Blocks definitely lost.
    pub definitely_lost_blocks: u64,
    /// Blocks indirectly lost.
    pub indirectly_lost_blocks: u64,
    /// Blocks possibly lost.
    pub possibly_lost_blocks: u64,
    /// Blocks still reachable.
    pub still_reachable_blocks: u64,
}

impl From<&LeakCounts> for LeakReport {
    fn from(c: &LeakCounts) -> Self {
        Self {
            definitely_lost_bytes: c.bytes[0],
            indirectly_lost_bytes: c.bytes[1],
            possibly_lost_bytes: c.bytes[2],
            still_reachable_bytes: c.bytes[3],
            definitely_lost_blocks: c.blocks[0],
            indirectly_lost_blocks: c.blocks[1],
            possibly_lost_blocks: c.blocks[2],
            still_reachable_blocks: c.blocks[3],
        }
    }
}

impl LeakReport {
    /// Back to counts by kind code.
    pub fn counts(&self) -> LeakCounts {
        LeakCounts {
            bytes: [
                self.definitely_lost_bytes,
                self.indirectly_lost_bytes,
                self.possibly_lost_bytes,
                self.still_reachable_bytes,
            ],
            blocks: [
                self.definitely_lost_blocks,
                self.indirectly_lost_blocks,
                self.possibly_lost_blocks,
                self.still_reachable_blocks,
            ],
        }
    }

    /// `definitely lost 1.00 KiB in 1 block(s), ...` (kinds with nothing left out; "nothing").
    pub fn text(&self) -> String {
        let c = self.counts();
        let parts: Vec<String> = LeakKind::ALL
            .iter()
            .filter(|&&k| c.blocks[k as usize] > 0)
            .map(|&k| {
                format!(
                    "{} {} in {} block(s)",
                    k.words(),
                    human_bytes(c.bytes[k as usize]),
                    c.blocks[k as usize]
                )
            })
            .collect();
        if parts.is_empty() {
            "nothing outstanding".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// A stack's leak figures (report key `leak` of a stack).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StackLeak {
    /// The kind holding most of its bytes.
    pub kind: LeakKind,
    /// Its figures by kind.
    #[serde(flatten)]
    pub figures: LeakReport,
    /// The suppression rule that excused it, if one did.
    pub suppressed_by: Option<String>,
}

impl StackLeak {
    /// From a stack's counts; `None` when nothing was classified.
    pub fn of(c: Option<&LeakCounts>) -> Option<Self> {
        let c = c?;
        Some(Self {
            kind: c.main_kind()?,
            figures: LeakReport::from(c),
            suppressed_by: None,
        })
    }

    /// Adds another stack's figures (stacks that symbolize alike are merged).
    pub fn merge(a: &mut Option<Self>, b: &Option<Self>) {
        match (a.as_mut(), b) {
            (_, None) => {}
            (None, Some(b)) => *a = Some(b.clone()),
            (Some(x), Some(y)) => {
                let mut c = x.figures.counts();
                c.merge(&y.figures.counts());
                x.figures = LeakReport::from(&c);
                x.kind = c.main_kind().unwrap_or(x.kind);
            }
        }
    }
}

/// The text report's leak lines: each scanned process's totals, then the gate.
pub fn render_text(s: &mut String, report: &Report) {
    let scanned: Vec<_> = report
        .processes
        .iter()
        .filter_map(|p| Some((p, p.leaks?)))
        .collect();
    if !scanned.is_empty() {
        let _ = writeln!(s, "\nLeaks at exit (as memcheck classifies them):");
        for (p, l) in scanned {
            let _ = writeln!(s, "  pid {} ({}): {}", p.pid, p.comm, l.text());
        }
    }
    if let Some(g) = &report.leak_gate {
        g.render_text(s);
    }
}

/// The words a stack line gets for its leak kind: `; 1.00 KiB definitely lost`.
pub fn stack_words(l: &StackLeak) -> String {
    let bytes = l.figures.counts().bytes_of(l.kind);
    let mut w = format!("; {} {}", human_bytes(bytes), l.kind.words());
    if let Some(rule) = &l.suppressed_by {
        let _ = write!(w, " (suppressed: {rule})");
    }
    w
}
