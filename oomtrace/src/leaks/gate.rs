//! The CI gate on a finished run's report: `--max-leaked SIZE` (with `--leak-kinds` and
//! `--suppressions`) and `--expect-no-growth`. A failed gate makes `run` exit
//! [`EXIT_GATE_FAILED`] and names the stacks on stderr and in the report (`leak_gate`).
//!
//! What counts against `--max-leaked`: on each stack of a process scanned at its exit, the
//! bytes of the counted kinds (definitely and indirectly lost unless `--leak-kinds` says
//! otherwise); on a process that was not scanned (killed by SIGKILL, never held), every byte
//! still outstanding, since nothing tells its kinds. Stacks a suppression rule matches are
//! excused, and listed with what they held.

use std::fmt::Write as _;

use serde::Serialize;

use super::suppress::Suppressions;
use crate::model::growth::GrowthClass;
use crate::model::leak::LeakKind;
use crate::report::{Report, human_bytes};
use crate::symbols::Frame;

/// The exit status of a run that fails its gate (as `--budget`'s).
pub const EXIT_GATE_FAILED: i32 = 3;

/// Which leak kinds count against `--max-leaked`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindSet(pub [bool; 4]);

impl Default for KindSet {
    /// Definitely and indirectly lost, as LeakSanitizer fails on.
    fn default() -> Self {
        Self([true, true, false, false])
    }
}

impl KindSet {
    /// Parses `definite,indirect,possible,reachable` (any of them, comma-separated) or `all`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut set = [false; 4];
        for word in s.split(',').map(str::trim) {
            match word {
                "definite" | "definitely" => set[0] = true,
                "indirect" | "indirectly" => set[1] = true,
                "possible" | "possibly" => set[2] = true,
                "reachable" => set[3] = true,
                "all" => set = [true; 4],
                other => {
                    return Err(format!(
                        "unknown leak kind {other:?}: use definite, indirect, possible, \
                         reachable or all, comma-separated"
                    ));
                }
            }
        }
        Ok(Self(set))
    }

    /// Whether `kind` counts.
    pub fn has(&self, kind: LeakKind) -> bool {
        self.0[kind as usize]
    }

    /// The counted kinds.
    pub fn kinds(&self) -> Vec<LeakKind> {
        LeakKind::ALL.into_iter().filter(|&k| self.has(k)).collect()
    }

    /// `definitely or indirectly lost`.
    pub fn words(&self) -> String {
        let w: Vec<&str> = self.kinds().into_iter().map(LeakKind::words).collect();
        w.join(" or ")
    }
}

/// What `run` asked the gate for.
#[derive(Clone, Debug, Default)]
pub struct GateOptions {
    /// `--max-leaked`.
    pub max_leaked: Option<u64>,
    /// `--leak-kinds`.
    pub kinds: KindSet,
    /// `--suppressions`.
    pub suppressions: Option<Suppressions>,
    /// `--expect-no-growth`.
    pub expect_no_growth: bool,
}

impl GateOptions {
    /// Whether any gate option was given.
    pub fn active(&self) -> bool {
        self.max_leaked.is_some() || self.suppressions.is_some() || self.expect_no_growth
    }
}

/// A stack that counts against the gate.
#[derive(Clone, Debug, Serialize)]
pub struct Offender {
    /// Its process.
    pub pid: u32,
    /// Bytes of it that count.
    pub bytes: u64,
    /// Blocks of it that count.
    pub blocks: u64,
    /// The counted kind holding most of it (`definitely_lost`, ...), or `outstanding` for a
    /// process that was not scanned.
    pub kind: String,
    /// The counted bytes by kind (null for a process that was not scanned).
    pub by_kind: Option<Vec<(LeakKind, u64)>>,
    /// Its frames, call site first.
    pub frames: Vec<Frame>,
}

/// What one suppression rule excused.
#[derive(Clone, Debug, Serialize)]
pub struct Suppressed {
    /// The rule.
    pub rule: String,
    /// Bytes it excused (of the counted kinds).
    pub bytes: u64,
    /// Blocks it excused.
    pub blocks: u64,
    /// Stacks it matched.
    pub stacks: u64,
}

/// Something `--expect-no-growth` found growing.
#[derive(Clone, Debug, Serialize)]
pub struct Growing {
    /// Its process.
    pub pid: u32,
    /// `stack`, `heap`, `rss`, `threads` or `fds`.
    pub what: String,
    /// The rate, in `unit`s per second.
    pub per_s: f64,
    /// `bytes`, `threads` or `fds`.
    pub unit: String,
    /// A stack's frames (empty for a process's own series).
    pub frames: Vec<Frame>,
}

/// The gate's verdict (report key `leak_gate`).
#[derive(Clone, Debug, Serialize)]
pub struct GateReport {
    /// Whether the run passes.
    pub passed: bool,
    /// `--max-leaked`, when given.
    pub max_leaked_bytes: Option<u64>,
    /// The kinds that count.
    pub kinds: Vec<LeakKind>,
    /// Bytes that count, over every process.
    pub leaked_bytes: u64,
    /// Blocks that count.
    pub leaked_blocks: u64,
    /// Processes whose leaks could not be classified (all their outstanding bytes count).
    pub unscanned_pids: Vec<u32>,
    /// The stacks that count, largest first.
    pub stacks: Vec<Offender>,
    /// What each suppression rule excused.
    pub suppressed: Vec<Suppressed>,
    /// `--expect-no-growth`: what grows.
    pub growing: Vec<Growing>,
}

/// Stacks named on stderr.
const SHOWN: usize = 10;

/// Evaluates the gate on `report`, marks suppressed stacks in it, stores the verdict in it and
/// returns it.
pub fn apply(report: &mut Report, opts: &GateOptions) -> GateReport {
    let scanned: std::collections::HashSet<u32> = report
        .processes
        .iter()
        .filter(|p| p.leaks.is_some())
        .map(|p| p.pid)
        .collect();
    let mut unscanned_pids: Vec<u32> = report
        .processes
        .iter()
        .filter(|p| p.leaks.is_none() && p.counts.outstanding_bytes > 0)
        .map(|p| p.pid)
        .collect();
    unscanned_pids.sort_unstable();
    let mut suppressed: Vec<Suppressed> = opts
        .suppressions
        .iter()
        .flat_map(|s| &s.rules)
        .map(|r| Suppressed {
            rule: r.to_string(),
            bytes: 0,
            blocks: 0,
            stacks: 0,
        })
        .collect();
    let mut stacks = Vec::new();
    let mut excused = std::collections::HashSet::new();
    for (i, st) in report.stacks.iter_mut().enumerate() {
        let (bytes, blocks, kind, by_kind) = if scanned.contains(&st.pid) {
            let Some(l) = &st.leak else { continue };
            let c = l.figures.counts();
            let kinds: Vec<LeakKind> = opts
                .kinds
                .kinds()
                .into_iter()
                .filter(|&k| c.blocks[k as usize] > 0)
                .collect();
            let bytes: u64 = kinds.iter().map(|&k| c.bytes[k as usize]).sum();
            let blocks: u64 = kinds.iter().map(|&k| c.blocks[k as usize]).sum();
            let main = kinds
                .iter()
                .copied()
                .max_by_key(|&k| c.bytes[k as usize])
                .map_or("none", kind_key);
            let by_kind = kinds.iter().map(|&k| (k, c.bytes[k as usize])).collect();
            (bytes, blocks, main.to_owned(), Some(by_kind))
        } else {
            (
                st.outstanding_bytes,
                st.outstanding_allocs,
                "outstanding".to_owned(),
                None,
            )
        };
        let rule = opts.suppressions.as_ref().and_then(|s| {
            let i = s.rules.iter().position(|r| r.matches(&st.frames))?;
            Some((i, s.rules[i].to_string()))
        });
        if let Some((r, text)) = rule {
            excused.insert(i);
            if let Some(l) = &mut st.leak {
                l.suppressed_by = Some(text);
            }
            let s = &mut suppressed[r];
            s.bytes += bytes;
            s.blocks += blocks;
            s.stacks += 1;
            continue;
        }
        if bytes > 0 {
            stacks.push(Offender {
                pid: st.pid,
                bytes,
                blocks,
                kind,
                by_kind,
                frames: st.frames.clone(),
            });
        }
    }
    stacks.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.pid.cmp(&b.pid)));
    let leaked_bytes = stacks.iter().map(|s| s.bytes).sum();
    let leaked_blocks = stacks.iter().map(|s| s.blocks).sum();
    let growing = if opts.expect_no_growth {
        growing(report, &excused)
    } else {
        Vec::new()
    };
    let over = opts.max_leaked.is_some_and(|max| leaked_bytes > max);
    let gate = GateReport {
        passed: !over && growing.is_empty(),
        max_leaked_bytes: opts.max_leaked,
        kinds: opts.kinds.kinds(),
        leaked_bytes,
        leaked_blocks,
        unscanned_pids,
        stacks,
        suppressed,
        growing,
    };
    report.leak_gate = Some(gate.clone());
    gate
}

/// Report key of a kind (`definitely_lost`).
fn kind_key(k: LeakKind) -> &'static str {
    match k {
        LeakKind::DefinitelyLost => "definitely_lost",
        LeakKind::IndirectlyLost => "indirectly_lost",
        LeakKind::PossiblyLost => "possibly_lost",
        LeakKind::StillReachable => "still_reachable",
    }
}

/// Every growing stack (not excused) and process series.
fn growing(report: &Report, excused: &std::collections::HashSet<usize>) -> Vec<Growing> {
    let mut out = Vec::new();
    for (i, st) in report.stacks.iter().enumerate() {
        if st.growth.class == GrowthClass::Growing && !excused.contains(&i) {
            out.push(Growing {
                pid: st.pid,
                what: "stack".into(),
                per_s: st.growth.bytes_per_s,
                unit: "bytes".into(),
                frames: st.frames.clone(),
            });
        }
    }
    for p in &report.processes {
        let g = &p.growth;
        for (what, growth, unit) in [
            ("heap", &g.heap, "bytes"),
            ("rss", &g.rss, "bytes"),
            ("threads", &g.threads, "threads"),
            ("fds", &g.fds, "fds"),
        ] {
            if growth.class == GrowthClass::Growing {
                out.push(Growing {
                    pid: p.pid,
                    what: what.into(),
                    per_s: growth.bytes_per_s,
                    unit: unit.into(),
                    frames: Vec::new(),
                });
            }
        }
    }
    out
}

impl GateReport {
    /// The stderr lines of a failed gate (none when it passed), without the `oomtrace: ` prefix
    /// on the first.
    pub fn stderr_lines(&self, kinds: &KindSet) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(max) = self.max_leaked_bytes
            && self.leaked_bytes > max
        {
            lines.push(format!(
                "leak gate failed: {} {} in {} block(s) exceeds --max-leaked {}; the stacks:",
                human_bytes(self.leaked_bytes),
                kinds.words(),
                self.leaked_blocks,
                human_bytes(max)
            ));
            for (i, s) in self.stacks.iter().take(SHOWN).enumerate() {
                let kinds = match &s.by_kind {
                    Some(k) => k
                        .iter()
                        .map(|(k, b)| format!("{} {}", human_bytes(*b), k.words()))
                        .collect::<Vec<_>>()
                        .join(" + "),
                    None => format!("{} outstanding", human_bytes(s.bytes)),
                };
                lines.push(format!(
                    "  #{} {kinds} in {} block(s) at {} (pid {})",
                    i + 1,
                    s.blocks,
                    site(&s.frames),
                    s.pid
                ));
            }
            if self.stacks.len() > SHOWN {
                lines.push(format!(
                    "  ... and {} more stack(s) in the report",
                    self.stacks.len() - SHOWN
                ));
            }
            if !self.unscanned_pids.is_empty() {
                lines.push(format!(
                    "  (pid(s) {:?} ended without a leak scan, killed by SIGKILL or not held: all \
                     they still held counts)",
                    self.unscanned_pids
                ));
            }
        }
        if !self.growing.is_empty() {
            lines.push(format!(
                "growth gate failed (--expect-no-growth): {} series growing:",
                self.growing.len()
            ));
            for g in self.growing.iter().take(SHOWN) {
                let what = match g.what.as_str() {
                    "stack" => format!("stack at {}", site(&g.frames)),
                    other => other.to_owned(),
                };
                lines.push(format!(
                    "  pid {}: {what} growing {}",
                    g.pid,
                    rate(g.per_s, &g.unit)
                ));
            }
        }
        lines
    }

    /// The text report's gate lines.
    pub fn render_text(&self, s: &mut String) {
        let verdict = if self.passed { "passed" } else { "FAILED" };
        let _ = write!(
            s,
            "\nLeak gate: {verdict}: {} counted in {} block(s)",
            human_bytes(self.leaked_bytes),
            self.leaked_blocks
        );
        if let Some(max) = self.max_leaked_bytes {
            let _ = write!(s, " (--max-leaked {})", human_bytes(max));
        }
        let _ = writeln!(s);
        for sup in &self.suppressed {
            let _ = writeln!(
                s,
                "  suppressed by `{}`: {} in {} block(s) on {} stack(s)",
                sup.rule,
                human_bytes(sup.bytes),
                sup.blocks,
                sup.stacks
            );
        }
        for g in &self.growing {
            let _ = writeln!(
                s,
                "  growing: pid {} {} {}",
                g.pid,
                if g.what == "stack" {
                    format!("stack at {}", site(&g.frames))
                } else {
                    g.what.clone()
                },
                rate(g.per_s, &g.unit)
            );
        }
    }
}

/// A rate in its unit: `80.00 KiB/s`, `3.3 threads/s`.
fn rate(per_s: f64, unit: &str) -> String {
    match unit {
        "bytes" => format!("{}/s", human_bytes(per_s.max(0.0) as u64)),
        other => format!("{per_s:.1} {other}/s"),
    }
}

/// The first frame, as the text report prints it.
fn site(frames: &[Frame]) -> String {
    frames
        .first()
        .map_or_else(|| "??".to_owned(), crate::report::text::frame_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_sets() {
        assert_eq!(
            KindSet::default().words(),
            "definitely lost or indirectly lost"
        );
        assert_eq!(KindSet::parse("all").unwrap(), KindSet([true; 4]));
        assert_eq!(
            KindSet::parse("definite, possible").unwrap(),
            KindSet([true, false, true, false])
        );
        assert!(
            KindSet::parse("lost")
                .unwrap_err()
                .contains("unknown leak kind")
        );
    }
}
