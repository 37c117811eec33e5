//! Folded stacks (`root;caller;call_site bytes`), the input of flame-graph tools.
//!
//! One line per stack, root first: the process (`comm (pid)`), then the outermost caller, down to
//! the allocation call site; the count is the stack's outstanding (or allocated) bytes. Frames are
//! function names, or `module+0xaddr` where the function is unknown; paths that render the same
//! are merged. Stacks with a zero count are left out. Lines are sorted, as `flamegraph.pl` and
//! inferno expect.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::Report;
use crate::symbols::Frame;

/// Which count a folded line carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FoldedValue {
    /// Requested bytes still allocated.
    #[default]
    Outstanding,
    /// Requested bytes over all allocations.
    Allocated,
}

/// Renders `report` as folded stacks, one line per distinct path, each ending in `\n`.
pub fn to_folded(report: &Report, value: FoldedValue) -> String {
    let comms = comms(report);
    let mut paths: BTreeMap<String, u64> = BTreeMap::new();
    for st in &report.stacks {
        let n = match value {
            FoldedValue::Outstanding => st.outstanding_bytes,
            FoldedValue::Allocated => st.allocated_bytes,
        };
        if n == 0 {
            continue;
        }
        let mut path = clean(&process_label(comms.get(&st.pid).copied(), st.pid));
        for f in st.frames.iter().rev() {
            path.push(';');
            path.push_str(&clean(&frame_name(f)));
        }
        let total = paths.entry(path).or_insert(0);
        *total = total.saturating_add(n);
    }
    let mut out = String::new();
    for (path, n) in &paths {
        let _ = writeln!(out, "{path} {n}");
    }
    out
}

/// The name of a frame: its function, else `module+0xaddr`, else `0xaddr`.
pub fn frame_name(f: &Frame) -> String {
    match (&f.function, &f.module) {
        (Some(func), _) => func.clone(),
        (None, Some(m)) => format!("{m}+{:#x}", f.addr),
        (None, None) => format!("{:#x}", f.addr),
    }
}

/// The root frame of a process's stacks: `comm (pid)`, or `pid N` when its name is unknown.
pub fn process_label(comm: Option<&str>, pid: u32) -> String {
    match comm {
        Some(c) if !c.is_empty() => format!("{c} ({pid})"),
        _ => format!("pid {pid}"),
    }
}

/// Each traced process's command name, by pid.
pub(super) fn comms(report: &Report) -> HashMap<u32, &str> {
    report
        .processes
        .iter()
        .map(|p| (p.pid, p.comm.as_str()))
        .collect()
}

/// A frame that cannot break the format: `;` separates frames and a line is one stack.
fn clean(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| match c {
            ';' => ':',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    let s = s.trim();
    if s.is_empty() {
        "??".to_owned()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::Counts;
    use crate::report::{ProcessReport, StackReport};

    /// A frame with a known function.
    pub(crate) fn known(func: &str, file: &str, line: u32, addr: u64) -> Frame {
        Frame {
            addr,
            function: Some(func.to_owned()),
            module: Some("demo".to_owned()),
            file: Some(file.to_owned()),
            line: Some(line),
            ..Frame::default()
        }
    }

    /// A frame with no symbol.
    pub(crate) fn unknown(module: Option<&str>, addr: u64) -> Frame {
        Frame {
            addr,
            module: module.map(str::to_owned),
            ..Frame::default()
        }
    }

    /// A stack with `bytes` outstanding in `blocks` blocks, allocated twice over.
    pub(crate) fn stack(pid: u32, bytes: u64, blocks: u64, frames: Vec<Frame>) -> StackReport {
        StackReport {
            pid,
            outstanding_bytes: bytes,
            outstanding_allocs: blocks,
            allocated_bytes: bytes.saturating_mul(2),
            allocs: blocks.saturating_mul(2),
            failed_allocs: 0,
            growth: crate::model::growth::Growth::unknown(),
            sizes: None,
            lifetime_ms: None,
            site: crate::report::site::site_index(&frames),
            via: Vec::new(),
            walk: Vec::new(),
            frames,
            leak: None,
            resident_bytes: None,
        }
    }

    /// A report of `stacks` from the processes `procs` (pid, comm).
    pub(crate) fn report(procs: &[(u32, &str)], stacks: Vec<StackReport>) -> Report {
        Report {
            schema: "oomtrace.report/1",
            mode: crate::mode::Mode::Exact.report(),
            duration_s: 2.5,
            lost_events: 0,
            unknown_frees: 0,
            mismatched_frees: 0,
            stack_collisions: 0,
            stacks_truncated: 0,
            stacks_incomplete: 0,
            python_truncated: 0,
            python_failed: 0,
            unwind: None,
            processes: procs
                .iter()
                .map(|&(pid, comm)| ProcessReport {
                    pid,
                    comm: comm.to_owned(),
                    exit_code: None,
                    signal: None,
                    killed_by: None,
                    counts: Counts::default(),
                    growth: crate::model::timeline::ProcGrowth {
                        heap: crate::model::growth::Growth::unknown(),
                        rss: crate::model::growth::Growth::unknown(),
                        threads: crate::model::growth::Growth::unknown(),
                        fds: crate::model::growth::Growth::unknown(),
                    },
                    leaks: None,
                    faults: None,
                    mapped: Default::default(),
                })
                .collect(),
            stacks,
            oom_events: Vec::new(),
            gpu: None,
            kernel_stacks: None,
            kernel_probes: None,
            tracer_cost: None,
            late_attach: None,
            self_limit: None,
            leak_gate: None,
        }
    }

    /// `main -> handle -> leak_a` (10000 bytes, 10 blocks) and `main -> leak_b` (5000, 5).
    pub(crate) fn two_leaks(pid: u32, shift: u64) -> Report {
        report(
            &[(pid, "demo")],
            vec![
                stack(
                    pid,
                    10_000,
                    10,
                    vec![
                        known("leak_a", "demo.c", 20, 0x1120 + shift),
                        known("handle", "demo.c", 29, 0x1180 + shift),
                        known("main", "demo.c", 37, 0x11c0 + shift),
                    ],
                ),
                stack(
                    pid,
                    5_000,
                    5,
                    vec![
                        known("leak_b", "demo.c", 24, 0x1150 + shift),
                        known("main", "demo.c", 38, 0x11d0 + shift),
                    ],
                ),
            ],
        )
    }

    #[test]
    fn exact_lines_root_first() {
        let r = two_leaks(42, 0);
        assert_eq!(
            to_folded(&r, FoldedValue::Outstanding),
            "demo (42);main;handle;leak_a 10000\ndemo (42);main;leak_b 5000\n"
        );
        assert_eq!(
            to_folded(&r, FoldedValue::Allocated),
            "demo (42);main;handle;leak_a 20000\ndemo (42);main;leak_b 10000\n"
        );
    }

    #[test]
    fn identical_paths_merge() {
        // Same functions on different lines: one folded path.
        let r = report(
            &[(7, "srv")],
            vec![
                stack(
                    7,
                    100,
                    1,
                    vec![known("f", "a.c", 1, 0x10), known("main", "a.c", 9, 0x90)],
                ),
                stack(
                    7,
                    50,
                    1,
                    vec![known("f", "a.c", 2, 0x20), known("main", "a.c", 9, 0x90)],
                ),
                stack(7, 0, 0, vec![known("g", "a.c", 3, 0x30)]),
            ],
        );
        assert_eq!(
            to_folded(&r, FoldedValue::Outstanding),
            "srv (7);main;f 150\n"
        );
    }

    #[test]
    fn unknown_frames_and_processes() {
        let r = report(
            &[(1, "a;b\nc")],
            vec![
                stack(
                    1,
                    8,
                    1,
                    vec![
                        unknown(Some("libfoo.so"), 0x7f00_1234),
                        unknown(None, 0xabc),
                    ],
                ),
                stack(2, 16, 1, vec![known("x;y", "f.c", 1, 1)]),
                stack(3, 4, 1, vec![]),
            ],
        );
        assert_eq!(
            to_folded(&r, FoldedValue::Outstanding),
            "a:b c (1);0xabc;libfoo.so+0x7f001234 8\npid 2;x:y 16\npid 3 4\n"
        );
    }

    #[test]
    fn empty_and_huge() {
        assert_eq!(
            to_folded(&report(&[], vec![]), FoldedValue::Outstanding),
            ""
        );
        let f = || vec![known("f", "a.c", 1, 1)];
        let r = report(
            &[(1, "x")],
            vec![stack(1, u64::MAX, 1, f()), stack(1, u64::MAX, 1, f())],
        );
        assert_eq!(
            to_folded(&r, FoldedValue::Outstanding),
            format!("x (1);f {}\n", u64::MAX)
        );
    }
}
