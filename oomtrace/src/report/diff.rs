//! `oomtrace diff A B`: how each stack's outstanding memory changed between two reports.
//!
//! Pids and raw addresses differ from run to run, so stacks are matched by what a reader sees:
//! the process's command name and each frame's function, file and line (the module, for a frame
//! with no symbol). Stacks with the same identity within one report are added up first. The
//! result is sorted by growth, the largest increase first; it renders as text, JSON
//! (`oomtrace.diff/1`) or, through [`super::pprof::diff_pprof`], a pprof profile.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::folded::comms;
use super::{Report, human_bytes};
use crate::symbols::Frame;

/// One stack's change from report A to report B.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StackDiff {
    /// Human label: the command name, then the frames, call site first.
    pub key: String,
    /// The frames as last seen (from B if the stack is in B, else from A).
    pub frames: Vec<Frame>,
    /// Command name of the processes that hold it.
    pub comm: String,
    /// Outstanding bytes in A.
    pub before_bytes: u64,
    /// Outstanding bytes in B.
    pub after_bytes: u64,
    /// `after_bytes - before_bytes`.
    pub delta_bytes: i64,
    /// Outstanding blocks in A.
    pub before_allocs: u64,
    /// Outstanding blocks in B.
    pub after_allocs: u64,
    /// `after_allocs - before_allocs`.
    pub delta_allocs: i64,
}

/// `oomtrace.diff/1`: every stack outstanding in A or B, by growth.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReportDiff {
    /// Always `oomtrace.diff/1`.
    pub schema: &'static str,
    /// Largest increase first; stacks with nothing outstanding in either report are left out.
    pub stacks: Vec<StackDiff>,
    /// Change in outstanding bytes over all stacks.
    pub total_delta_bytes: i64,
}

impl ReportDiff {
    /// The JSON text of the diff.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}

/// What identifies a frame across runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FrameKey {
    Symbol {
        function: String,
        file: Option<String>,
        line: Option<u32>,
    },
    Unknown {
        module: Option<String>,
    },
}

impl FrameKey {
    fn of(f: &Frame) -> Self {
        match &f.function {
            Some(function) => Self::Symbol {
                function: function.clone(),
                file: f.file.clone(),
                line: f.line,
            },
            None => Self::Unknown {
                module: f.module.clone(),
            },
        }
    }

    fn label(&self) -> String {
        match self {
            Self::Symbol {
                function,
                file: Some(file),
                line: Some(line),
            } => format!("{function} ({}:{line})", short(file)),
            Self::Symbol { function, .. } => function.clone(),
            Self::Unknown { module: Some(m) } => format!("?? [{m}]"),
            Self::Unknown { module: None } => "??".to_owned(),
        }
    }
}

/// A stack's identity across runs: the command name and its frames' keys.
type Key = (String, Vec<FrameKey>);

/// Outstanding bytes and blocks of one stack identity in one report, summed.
#[derive(Default)]
struct Side {
    bytes: u64,
    allocs: u64,
}

/// Compares report `a` (before) with report `b` (after).
pub fn diff(a: &Report, b: &Report) -> ReportDiff {
    // Identity -> index into `rows`: (identity, before, after, frames to show).
    let mut index: HashMap<Key, usize> = HashMap::new();
    let mut rows: Vec<(Key, Side, Side, Vec<Frame>)> = Vec::new();
    for (report, after) in [(a, false), (b, true)] {
        let comms = comms(report);
        for st in &report.stacks {
            let comm = comms.get(&st.pid).copied().unwrap_or_default().to_owned();
            let key: Key = (comm, st.frames.iter().map(FrameKey::of).collect());
            let i = *index.entry(key.clone()).or_insert_with(|| {
                rows.push((key, Side::default(), Side::default(), Vec::new()));
                rows.len() - 1
            });
            let row = &mut rows[i];
            let side = if after { &mut row.2 } else { &mut row.1 };
            side.bytes = side.bytes.saturating_add(st.outstanding_bytes);
            side.allocs = side.allocs.saturating_add(st.outstanding_allocs);
            if after || row.3.is_empty() {
                row.3.clone_from(&st.frames);
            }
        }
    }
    let mut stacks: Vec<StackDiff> = rows
        .into_iter()
        .filter(|(_, x, y, _)| x.bytes | x.allocs | y.bytes | y.allocs != 0)
        .map(|((comm, keys), x, y, frames)| StackDiff {
            key: label(&comm, &keys),
            frames,
            comm,
            before_bytes: x.bytes,
            after_bytes: y.bytes,
            delta_bytes: delta(x.bytes, y.bytes),
            before_allocs: x.allocs,
            after_allocs: y.allocs,
            delta_allocs: delta(x.allocs, y.allocs),
        })
        .collect();
    stacks.sort_by(|p, q| {
        q.delta_bytes
            .cmp(&p.delta_bytes)
            .then(q.delta_allocs.cmp(&p.delta_allocs))
            .then(q.after_bytes.cmp(&p.after_bytes))
            .then_with(|| p.key.cmp(&q.key))
    });
    let total: i128 = stacks.iter().map(|s| i128::from(s.delta_bytes)).sum();
    ReportDiff {
        schema: "oomtrace.diff/1",
        stacks,
        total_delta_bytes: clamp(total),
    }
}

/// Renders the diff: a summary line, then the `top` stacks that changed most, by growth.
pub fn render_text(d: &ReportDiff, top: usize) -> String {
    let changed: Vec<&StackDiff> = d
        .stacks
        .iter()
        .filter(|s| s.delta_bytes != 0 || s.delta_allocs != 0)
        .collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "oomtrace diff: {} stack(s) changed; outstanding {} in total",
        changed.len(),
        signed_bytes(d.total_delta_bytes)
    );
    if changed.is_empty() {
        let _ = writeln!(s, "\nNo stack changed.");
        return s;
    }
    let shown = changed.len().min(top);
    let _ = writeln!(s, "\nTop {shown} stacks by growth (after - before):");
    for (i, st) in changed.iter().take(top).enumerate() {
        let comm = if st.comm.is_empty() { "?" } else { &st.comm };
        let _ = writeln!(
            s,
            "\n#{:<3} {} ({} block(s))  [{comm}: {} in {} -> {} in {}]",
            i + 1,
            signed_bytes(st.delta_bytes),
            signed(st.delta_allocs),
            human_bytes(st.before_bytes),
            st.before_allocs,
            human_bytes(st.after_bytes),
            st.after_allocs,
        );
        for f in &st.frames {
            let _ = writeln!(s, "       {}", super::text::frame_line(f));
        }
    }
    if changed.len() > shown {
        let _ = writeln!(s, "\n… and {} more.", changed.len() - shown);
    }
    s
}

/// A signed byte count: `+9.77 KiB`, `-512 B`, `0 B`.
pub fn signed_bytes(n: i64) -> String {
    let sign = match n.signum() {
        1 => "+",
        -1 => "-",
        _ => "",
    };
    format!("{sign}{}", human_bytes(n.unsigned_abs()))
}

fn signed(n: i64) -> String {
    if n > 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

fn delta(before: u64, after: u64) -> i64 {
    clamp(i128::from(after) - i128::from(before))
}

fn clamp(n: i128) -> i64 {
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

fn label(comm: &str, frames: &[FrameKey]) -> String {
    let comm = if comm.is_empty() { "?" } else { comm };
    let frames: Vec<String> = frames.iter().map(FrameKey::label).collect();
    if frames.is_empty() {
        comm.to_owned()
    } else {
        format!("{comm}: {}", frames.join(" <- "))
    }
}

fn short(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::folded::tests::{known, report, stack, two_leaks, unknown};

    /// Run A: leak_a 10000 B and leak_b 5000 B (pid 42). Run B (pid 77, other addresses):
    /// leak_a twice as much, leak_b gone, a new leak_c.
    fn runs() -> (Report, Report) {
        let a = two_leaks(42, 0);
        let mut b = two_leaks(77, 0x5550_0000_0000);
        b.stacks[0].outstanding_bytes = 20_000;
        b.stacks[0].outstanding_allocs = 20;
        b.stacks.remove(1);
        b.stacks.push(stack(
            77,
            3_000,
            3,
            vec![known("leak_c", "/src/demo.c", 50, 0x9)],
        ));
        (a, b)
    }

    #[test]
    fn matches_across_pids_and_addresses() {
        let (a, b) = runs();
        let d = diff(&a, &b);
        assert_eq!(d.schema, "oomtrace.diff/1");
        let got: Vec<(&str, i64, i64)> = d
            .stacks
            .iter()
            .map(|s| {
                (
                    s.frames[0].function.as_deref().unwrap(),
                    s.delta_bytes,
                    s.delta_allocs,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("leak_a", 10_000, 10),
                ("leak_c", 3_000, 3),
                ("leak_b", -5_000, -5)
            ]
        );
        let first = &d.stacks[0];
        assert_eq!((first.before_bytes, first.after_bytes), (10_000, 20_000));
        assert_eq!(first.comm, "demo");
        assert_eq!(
            first.key,
            "demo: leak_a (demo.c:20) <- handle (demo.c:29) <- main (demo.c:37)"
        );
        assert_eq!(first.frames[0].addr, 0x5550_0000_1120, "frames come from B");
        let only_a = &d.stacks[2];
        assert_eq!(
            (only_a.before_bytes, only_a.after_bytes, only_a.after_allocs),
            (5_000, 0, 0)
        );
        assert_eq!(only_a.frames[0].addr, 0x1150, "frames come from A");
        assert_eq!(d.stacks[1].before_bytes, 0);
        assert_eq!(d.total_delta_bytes, 8_000);
    }

    #[test]
    fn comm_separates_and_unknown_frames_match_by_module() {
        let a = report(
            &[(1, "x"), (2, "y")],
            vec![
                stack(1, 100, 1, vec![unknown(Some("libz.so"), 0x10)]),
                stack(2, 100, 1, vec![unknown(Some("libz.so"), 0x10)]),
                stack(3, 7, 1, vec![]),
            ],
        );
        let b = report(
            &[(5, "x"), (6, "x")],
            vec![
                stack(5, 150, 1, vec![unknown(Some("libz.so"), 0x99)]),
                stack(6, 150, 2, vec![unknown(Some("libz.so"), 0x77)]),
            ],
        );
        let d = diff(&a, &b);
        let got: Vec<(&str, i64)> = d
            .stacks
            .iter()
            .map(|s| (s.key.as_str(), s.delta_bytes))
            .collect();
        assert_eq!(
            got,
            [
                ("x: ?? [libz.so]", 200),
                ("?", -7),
                ("y: ?? [libz.so]", -100)
            ]
        );
        assert_eq!(
            d.stacks[0].after_allocs, 3,
            "two pids of one command add up"
        );
    }

    #[test]
    fn empty_and_huge() {
        let empty = report(&[], vec![]);
        let d = diff(&empty, &empty);
        assert!(d.stacks.is_empty());
        assert_eq!(d.total_delta_bytes, 0);
        assert!(render_text(&d, 10).contains("No stack changed."));
        let f = || vec![known("f", "a.c", 1, 1)];
        let huge = report(&[(1, "x")], vec![stack(1, u64::MAX, u64::MAX, f())]);
        let d = diff(&empty, &huge);
        assert_eq!(d.stacks[0].delta_bytes, i64::MAX);
        assert_eq!(diff(&huge, &empty).stacks[0].delta_bytes, i64::MIN);
        let text = render_text(&diff(&huge, &empty), 1);
        assert!(text.contains("-8.00 EiB"), "{text}");
        assert!(render_text(&diff(&huge, &empty), 0).contains("… and 1 more."));
    }

    #[test]
    fn text_shows_signed_sizes() {
        let (a, b) = runs();
        let text = render_text(&diff(&a, &b), 10);
        assert!(
            text.starts_with("oomtrace diff: 3 stack(s) changed; outstanding +7.81 KiB in total")
        );
        assert!(
            text.contains(
                "#1   +9.77 KiB (+10 block(s))  [demo: 9.77 KiB in 10 -> 19.53 KiB in 20]"
            ),
            "{text}"
        );
        assert!(text.contains("+2.93 KiB (+3 block(s))"), "{text}");
        assert!(text.contains("-4.88 KiB (-5 block(s))"), "{text}");
        assert!(
            text.contains("       leak_a (demo.c:20) [demo]\n"),
            "{text}"
        );
        let top1 = render_text(&diff(&a, &b), 1);
        assert!(
            top1.contains("… and 2 more.") && !top1.contains("leak_b"),
            "{top1}"
        );
        assert_eq!(signed_bytes(-512), "-512 B");
        assert_eq!(signed_bytes(0), "0 B");
    }

    #[test]
    fn json_has_the_schema() {
        let (a, b) = runs();
        let json = diff(&a, &b).to_json().expect("serializes");
        let v: serde_json::Value = serde_json::from_str(&json).expect("parses");
        assert_eq!(v["schema"], "oomtrace.diff/1");
        assert_eq!(v["stacks"][0]["delta_bytes"], 10_000);
        assert_eq!(v["stacks"][2]["delta_bytes"], -5_000);
        assert_eq!(v["total_delta_bytes"], 8_000);
    }
}
