//! What a stack costs per allocation (`cargo xtask bench stacks`): the kernel's walk through the
//! `.eh_frame` tables against the frame-pointer walk and the bare probe floors (entry+return for
//! exact mode, entry only with uprobe sessions for sample mode), at two depths, in exact and
//! sample mode, on `tests/workloads/bench_stack.c` built with and without frame
//! pointers, with the goals for both modes at depth 32; then what preparing the tables
//! costs for a process with many modules, and the memory the walker's maps take.
//!
//! `BENCH_STACKS_ROUNDS=N` runs N rounds instead of [`ROUNDS`], for a quick look at this part
//! alone (`BENCH_STACKS_ROUNDS=2 cargo xtask bench stacks`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::report::Goal;
use super::{median, report};
use crate::{root, status};

/// malloc+free pairs per run.
const PAIRS: u64 = 100_000;
/// Functions nested above the loop: deeper than the deepest stack measured.
const NESTING: &str = "40";
/// Rounds per configuration (interleaved).
const ROUNDS: usize = 5;
/// The goals at depth 32: the mode's cost per pair at most this many times the floor's.
const EXACT_STACKS_MAX: f64 = 2.0;
const SAMPLE_STACKS_MAX: f64 = 1.2;
/// The depth the goals are stated at.
const GOAL_DEPTH: u32 = 32;

/// [`ROUNDS`], or `BENCH_STACKS_ROUNDS` when set.
fn rounds() -> Result<usize> {
    match std::env::var("BENCH_STACKS_ROUNDS") {
        Err(_) => Ok(ROUNDS),
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!(
                "BENCH_STACKS_ROUNDS={v:?} is not a number of rounds: give a whole number ≥ 1, \
                 or unset it for {ROUNDS}"
            ),
        },
    }
}

/// One row: how oomtrace runs (or not), on which build.
struct Row {
    name: String,
    /// `oomtrace run` arguments; `None`: untraced.
    args: Option<Vec<String>>,
    /// `OOMTRACE_UNWIND=frame-pointers`.
    fp_only: bool,
    /// The build with frame pointers.
    with_fp: bool,
    /// oomtrace's mode and stack depth; `None` for the untraced run and the floor.
    traced: Option<(&'static str, u32)>,
}

/// Builds the workload with and without frame pointers: (with, without).
fn build(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let src = root().join("tests/workloads/bench_stack.c");
    let mut out = Vec::new();
    for (name, flag) in [
        ("bench_stack-fp", "-fno-omit-frame-pointer"),
        ("bench_stack-nofp", "-fomit-frame-pointer"),
    ] {
        let exe = dir.join(name);
        status(
            Command::new("cc")
                .args(["-O2", "-g", flag, "-o"])
                .arg(&exe)
                .arg(&src),
        )?;
        out.push(exe);
    }
    let nofp = out.pop().expect("two builds");
    Ok((out.pop().expect("two builds"), nofp))
}

fn rows() -> Vec<Row> {
    let oom = |args: &[&str]| Some(args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
    let mut v = vec![
        Row {
            name: "untraced".into(),
            args: None,
            fp_only: false,
            with_fp: false,
            traced: None,
        },
        Row {
            name: "bare probe floor, entry+return".into(),
            args: oom(&["run", "--probe-floor"]),
            fp_only: false,
            with_fp: false,
            traced: None,
        },
        // Sample mode's floor: one empty session program that skips every return.
        Row {
            name: "bare probe floor, entry only (uprobe sessions)".into(),
            args: oom(&["run", "--probe-floor", "--mode", "sample"]),
            fp_only: false,
            with_fp: false,
            traced: None,
        },
    ];
    for depth in [8, GOAL_DEPTH] {
        let d = depth.to_string();
        let args = oom(&["run", "--stack-depth", &d]);
        let traced = Some(("exact", depth));
        v.push(Row {
            name: format!("exact, depth {depth}, frame pointers only (-fno-omit-frame-pointer)"),
            args: args.clone(),
            fp_only: true,
            with_fp: true,
            traced,
        });
        v.push(Row {
            name: format!("exact, depth {depth}, tables (-fno-omit-frame-pointer)"),
            args: args.clone(),
            fp_only: false,
            with_fp: true,
            traced,
        });
        v.push(Row {
            name: format!("exact, depth {depth}, tables (-fomit-frame-pointer)"),
            args,
            fp_only: false,
            with_fp: false,
            traced,
        });
    }
    // Sample mode at its default rate: the walk runs for the sampled calls only.
    for depth in [8, GOAL_DEPTH] {
        let d = depth.to_string();
        let args = oom(&["run", "--mode", "sample", "--stack-depth", &d]);
        let traced = Some(("sample", depth));
        for (with_fp, build) in [
            (true, "-fno-omit-frame-pointer"),
            (false, "-fomit-frame-pointer"),
        ] {
            v.push(Row {
                name: format!("sample, depth {depth}, tables ({build})"),
                args: args.clone(),
                fp_only: false,
                with_fp,
                traced,
            });
        }
    }
    v
}

/// Runs one row once: the loop's nanoseconds, and oomtrace's report.
fn run_once(oomtrace: &Path, row: &Row, exe: &Path, dir: &Path) -> Result<(f64, Option<Value>)> {
    let report_path = dir.join("stacks-report.json");
    let _ = std::fs::remove_file(&report_path);
    let mut cmd = match &row.args {
        None => Command::new(exe),
        Some(args) => {
            let mut c = Command::new(oomtrace);
            c.args(args)
                .args(["--format", "json", "-o"])
                .arg(&report_path)
                .arg("--")
                .arg(exe);
            c
        }
    };
    cmd.args([&PAIRS.to_string(), NESTING]);
    if row.fp_only {
        cmd.env("OOMTRACE_UNWIND", "frame-pointers");
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {}", row.name))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            row.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let ns: f64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .with_context(|| format!("{} printed no timing", row.name))?;
    let report = match row.args {
        Some(_) => Some(serde_json::from_slice(&std::fs::read(&report_path)?)?),
        None => None,
    };
    Ok((ns, report))
}

/// A program's own nanoseconds per run (the kernel's BPF statistics), from a report.
fn ns_per_run(report: &Value, name: &str) -> Option<f64> {
    program(report, name)?["ns_per_run"].as_f64()
}

/// A program's entry in a report's BPF statistics, if it ran.
fn program<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    report["tracer_cost"]["programs"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name && p["runs"].as_u64().unwrap_or(0) > 0)
}

/// The program that ran at allocator entries in a row's report: the session program where the
/// run attached uprobe sessions, else the entry program.
fn entry_program(report: &Value, floor: bool) -> Option<&'static str> {
    let names: [&'static str; 2] = if floor {
        ["floor_session", "floor_enter"]
    } else {
        ["alloc_session", "alloc_enter"]
    };
    names.into_iter().find(|n| program(report, n).is_some())
}

/// The deepest stack's frame count, from a report.
fn frames(report: &Value) -> Option<u64> {
    report["stacks"]
        .as_array()
        .and_then(|ss| {
            ss.iter()
                .map(|s| s["frames"].as_array().map_or(0, Vec::len))
                .max()
        })
        .map(|n| n as u64)
}

/// Microseconds per malloc+free pair.
fn per_pair_us(ns: f64) -> f64 {
    ns / PAIRS as f64 / 1e3
}

/// A program's own time over the whole run, per pair of the loop (µs).
fn program_per_pair_us(report: Option<&Value>, name: &str) -> Option<f64> {
    let ns = program(report?, name)?["run_time_ns"].as_f64()?;
    Some(per_pair_us(ns))
}

/// One row's result: the median loop time and the last round's report.
struct Measured<'a> {
    row: &'a Row,
    ns: f64,
    report: Option<Value>,
}

/// The goal for `mode` at [`GOAL_DEPTH`]: the worst of the mode's rows that unwind as
/// oomtrace does by default (tables, not `OOMTRACE_UNWIND=frame-pointers`), against the floor
/// that mode pays.
fn stack_goal(mode: &str, max: f64, all: &[Measured], floor: &Measured) -> Goal {
    let goal = format!(
        "`{mode}` with full stacks (depth {GOAL_DEPTH}, `bench_stack`) ≤ {max}× the {}, per \
         malloc+free pair",
        floor.row.name
    );
    let worst = all
        .iter()
        .filter(|m| m.row.traced == Some((mode, GOAL_DEPTH)) && !m.row.fp_only)
        .max_by(|a, b| a.ns.total_cmp(&b.ns));
    let Some(w) = worst else {
        return Goal {
            goal,
            measured: None,
            met: None,
            why: "a configuration did not run".into(),
        };
    };
    let ratio = w.ns / floor.ns;
    let met = ratio <= max;
    let frames = w
        .report
        .as_ref()
        .and_then(frames)
        .map_or("–".into(), |f| f.to_string());
    let measured = format!(
        "{ratio:.2}× ({:.2} µs vs {:.2} µs per pair; worst row: {}, {frames} frames)",
        per_pair_us(w.ns),
        per_pair_us(floor.ns),
        w.row.name,
    );
    let why = if met {
        String::new()
    } else {
        let over = per_pair_us(w.ns - floor.ns);
        let above = |ours: &str, theirs: &str| {
            Some(
                program_per_pair_us(w.report.as_ref(), ours)?
                    - program_per_pair_us(floor.report.as_ref(), theirs)?,
            )
        };
        let over_pct = (ratio / max - 1.0) * 100.0;
        let sessions = w
            .report
            .as_ref()
            .is_some_and(|r| program(r, "alloc_session").is_some());
        if sessions {
            match above("alloc_session", "floor_session") {
                Some(prog) => format!(
                    "over by {over_pct:.0} %: {over:.2} µs per pair above the floor, of which \
                     `alloc_session` (entry, where the walk is, and the sampled calls' return) \
                     is {prog:.2} µs above `floor_session` (the kernel's BPF statistics over \
                     the run, per pair); the other {:.2} µs is outside the programs",
                    over - prog,
                ),
                None => format!(
                    "over by {over_pct:.0} %: {over:.2} µs per pair above the floor (a report \
                     had no session program's statistics to split it by program)"
                ),
            }
        } else {
            match (
                above("alloc_enter", "floor_enter"),
                above("alloc_return", "floor_return"),
            ) {
                (Some(enter), Some(ret)) => format!(
                    "over by {over_pct:.0} %: {over:.2} µs per pair above the floor, of which \
                     `alloc_enter` (where the walk is) is {enter:.2} µs and `alloc_return` \
                     {ret:.2} µs above the floor's programs (the kernel's BPF statistics over \
                     the run, per pair); the other {:.2} µs is outside the programs",
                    over - enter - ret,
                ),
                _ => format!(
                    "over by {over_pct:.0} %: {over:.2} µs per pair above the floor (a report \
                     had no BPF statistics to split it by program)"
                ),
            }
        }
    };
    Goal {
        goal,
        measured: Some(measured),
        met: Some(met),
        why,
    }
}

/// Measures every row, appends the tables to `md` and returns the goals for stacks.
pub fn measure(oomtrace: &Path, dir: &Path, md: &mut String) -> Result<Vec<Goal>> {
    let rounds = rounds()?;
    let (fp, nofp) = build(dir)?;
    let rows = rows();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    let mut reports: Vec<Option<Value>> = vec![None; rows.len()];
    for round in 0..rounds {
        for (i, row) in rows.iter().enumerate() {
            let exe = if row.with_fp { &fp } else { &nofp };
            let (ns, r) = run_once(oomtrace, row, exe, dir)?;
            eprintln!(
                "bench: stacks round {} {:<62} {:>8.1} ms",
                round + 1,
                row.name,
                ns / 1e6
            );
            if let (Some(r), Some((mode, _))) = (&r, row.traced)
                && r["mode"]["name"] != mode
            {
                bail!(
                    "{}: oomtrace's report says mode {} where {mode} was asked: is \
                     target/release/oomtrace current? (cargo build --release -p oomtrace)",
                    row.name,
                    r["mode"]["name"]
                );
            }
            samples[i].push(ns);
            if r.is_some() {
                reports[i] = r;
            }
        }
    }
    let all: Vec<Measured> = rows
        .iter()
        .zip(samples)
        .zip(reports)
        .map(|((row, s), report)| Measured {
            row,
            ns: median(s),
            report,
        })
        .collect();
    // Exact mode pays the entry+return floor; sample mode, whose unsampled calls skip their
    // return probe, the entry-only one.
    let (pair_floor, session_floor) = (&all[1], &all[2]);
    let floor_of = |m: &Measured| match m.row.traced {
        Some(("sample", _)) => session_floor,
        _ => pair_floor,
    };
    // The sampling rate the sample rows ran at, as their reports state it.
    let rate = all
        .iter()
        .filter(|m| m.row.traced.is_some_and(|(mode, _)| mode == "sample"))
        .find_map(|m| m.report.as_ref()?["mode"]["sample_rate_bytes"].as_u64())
        .context("no sample row's report states its sampling rate (mode.sample_rate_bytes)")?;
    report::line(
        md,
        &format!(
            "## Stacks: the table walk against frame pointers\n\n`tests/workloads/bench_stack.c`: \
             {PAIRS} × (`malloc(64)`; `free`) under {NESTING} nested functions, built `-O2` with \
             and without frame pointers; the loop's own time. \"frame pointers only\" is \
             `OOMTRACE_UNWIND=frame-pointers`. `sample` is `--mode sample` at its default rate, \
             one sample per {} KiB allocated on average (the reports' `mode.sample_rate_bytes`): \
             about {:.0} of the {PAIRS} `malloc`s are sampled, and only those have their stack \
             walked. `vs its floor`: `exact` rows against the entry+return floor, `sample` rows \
             against the entry-only floor (uprobe sessions: the unsampled calls skip their \
             return probe, as the floor's every call does). The entry program's own time per run \
             (the kernel's BPF statistics) is `alloc_enter`'s in exact mode and \
             `alloc_session`'s in sample mode (the session program, which also runs at the \
             sampled calls' returns), where the walk happens; the floors' are `floor_enter` and \
             `floor_session`, which return at once. It serves `malloc` and `free` alike, so this \
             is the BPF time per allocator call at entry. {rounds} round(s), interleaved; \
             medians.\n",
            rate / 1024,
            (PAIRS * 64) as f64 / rate as f64,
        ),
    );
    report::line(
        md,
        "| configuration | per malloc+free pair | vs its floor | entry program per run | frames |",
    );
    report::line(md, "|---|---:|---:|---:|---:|");
    for m in &all {
        let entry = m.report.as_ref().and_then(|r| {
            let name = entry_program(r, m.row.traced.is_none())?;
            Some((name, ns_per_run(r, name)?))
        });
        let frames = m.report.as_ref().and_then(frames);
        // The untraced run and both floors show against the entry+return floor.
        let vs = format!("{:.2}×", m.ns / floor_of(m).ns);
        report::line(
            md,
            &format!(
                "| {} | {:.2} µs | {vs} | {} | {} |",
                m.row.name,
                per_pair_us(m.ns),
                entry.map_or("–".into(), |(name, n)| format!("{n:.0} ns (`{name}`)")),
                frames.map_or("–".into(), |f| f.to_string()),
            ),
        );
    }
    report::line(md, "");
    let goals = vec![
        stack_goal("exact", EXACT_STACKS_MAX, &all, pair_floor),
        stack_goal("sample", SAMPLE_STACKS_MAX, &all, session_floor),
    ];
    report::line(
        md,
        "The issue's goals for full stacks, per malloc+free pair against the floor each mode \
         pays, taken on the worst of each mode's table rows at depth 32 (also in the Goals \
         table):\n",
    );
    for g in &goals {
        let verdict = match g.met {
            Some(true) => "met",
            Some(false) => "missed",
            None => "not measured",
        };
        report::line(
            md,
            &format!(
                "- {}: {}, **{verdict}**.",
                g.goal,
                g.measured.as_deref().unwrap_or("–")
            ),
        );
    }
    report::line(md, "");
    prepare(oomtrace, dir, rounds, md)?;
    Ok(goals)
}

/// The walker's maps (kernel names, at most 15 characters).
const UNWIND_MAPS: &[&str] = &[
    "UNWIND_MODULES",
    "UNWIND_PAGES",
    "UNWIND_ROWS",
    "EXEC_MAPPINGS",
    "PROC_MAPS",
    "MODULE_FILES",
    "MAPS_NOTICED",
    "ROW_CACHE",
    "STACK_WINDOW",
    "WALK_STATE",
    "VMA_HIT",
];

/// `oomtrace run` of python3 on `tests/workloads/bench_imports.py`, `times` times in one
/// session (one shell running it again and again): the report's `unwind` figures.
fn imports_once(oomtrace: &Path, dir: &Path, times: usize) -> Result<Value> {
    let report_path = dir.join("prepare-report.json");
    let _ = std::fs::remove_file(&report_path);
    let script = root().join("tests/workloads/bench_imports.py");
    let one = format!("/usr/bin/python3 {} >/dev/null", script.display());
    let out = Command::new(oomtrace)
        .args(["run", "--format", "json", "-o"])
        .arg(&report_path)
        .args(["--", "sh", "-c"])
        .arg(vec![one; times].join("; "))
        .output()
        .context("cannot start oomtrace")?;
    if !out.status.success() {
        bail!(
            "python3 importing its modules failed under oomtrace: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path)?)?;
    Ok(report["unwind"].clone())
}

/// The kernel's memory accounting (`memlock` in fdinfo) of each of oomtrace's BPF maps, by
/// name, read while python3 holds its modules.
fn maps_memory(oomtrace: &Path) -> Result<Vec<(String, u64, u64)>> {
    let script = root().join("tests/workloads/bench_imports.py");
    let mut child = Command::new(oomtrace)
        .args(["run", "--format", "json", "-o", "/dev/null", "--"])
        .arg("/usr/bin/python3")
        .arg(&script)
        .arg("3")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start oomtrace")?;
    std::thread::sleep(std::time::Duration::from_millis(2000));
    let pid = child.id();
    // fdinfo has the map's id, entries and memlock; bpftool has its name.
    let mut by_id: std::collections::HashMap<u64, (u64, u64)> = Default::default();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))?.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(mem), Some(n)) =
            (field("map_id:"), field("memlock:"), field("max_entries:"))
        {
            by_id.insert(id, (n, mem));
        }
    }
    let shown = Command::new("bpftool")
        .args(["map", "show", "-j"])
        .output()
        .context("bpftool runs (installed by `cargo xtask setup`)")?;
    let _ = child.wait();
    let maps: Value = serde_json::from_slice(&shown.stdout)?;
    let mut out = Vec::new();
    for m in maps.as_array().into_iter().flatten() {
        let (Some(id), Some(name)) = (m["id"].as_u64(), m["name"].as_str()) else {
            continue;
        };
        if let Some(&(n, mem)) = by_id.get(&id) {
            out.push((name.to_owned(), n, mem));
        }
    }
    if out.is_empty() {
        bail!("no BPF map of oomtrace (pid {pid}) found");
    }
    Ok(out)
}

/// Time to build and load the tables of a process with many modules (and of a second one
/// mapping the same, from the cache), and the walker's maps' memory.
fn prepare(oomtrace: &Path, dir: &Path, rounds: usize, md: &mut String) -> Result<()> {
    let mut runs: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (i, times) in [1, 2].into_iter().enumerate() {
            let u = imports_once(oomtrace, dir, times)?;
            eprintln!(
                "bench: stacks prepare round {} ({times} process(es)): {} modules, {:.1} ms",
                round + 1,
                u["modules"],
                u["build_ms"].as_f64().unwrap_or(f64::NAN)
            );
            runs[i].push(u);
        }
    }
    report::line(
        md,
        &format!(
            "## Stacks: preparing unwind tables for many modules\n\n`python3 \
             tests/workloads/bench_imports.py` (Debian's python3 importing every extension \
             module of its lib-dynload) under `oomtrace run`: the time the session spent \
             building the modules' tables from `.eh_frame` and loading them, with each \
             process's mappings (the report's `unwind.build_ms`), over the whole run. \"The same \
             twice\" runs it twice in one session: the second process's modules come from the \
             cache (by file, then by build id). {rounds} round(s), interleaved; medians.\n"
        ),
    );
    report::line(
        md,
        "| configuration | modules | rows | tables in use | preparation | per module | rounds' range |",
    );
    report::line(md, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, r) in [
        ("python3 importing its extension modules", &runs[0]),
        ("the same twice in one session", &runs[1]),
    ] {
        let all: Vec<f64> = r.iter().filter_map(|u| u["build_ms"].as_f64()).collect();
        let (lo, hi) = all
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        let ms = median(all);
        let last = r.last().expect("rounds");
        let modules = last["modules"].as_u64().unwrap_or(0);
        report::line(
            md,
            &format!(
                "| {name} | {modules} | {} | {:.1} MiB | {ms:.1} ms | {:.2} ms | {lo:.0}-{hi:.0} ms |",
                last["rows"],
                last["table_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64,
                ms / modules.max(1) as f64,
            ),
        );
    }
    report::line(md, "");
    let maps = maps_memory(oomtrace)?;
    // In the order of UNWIND_MAPS: the tables, then the mappings, then the per-CPU state.
    let unwind: Vec<&(String, u64, u64)> = UNWIND_MAPS
        .iter()
        .filter_map(|name| maps.iter().find(|m| m.0 == *name))
        .collect();
    let sum = |v: &[&(String, u64, u64)]| v.iter().map(|m| m.2).sum::<u64>();
    let all: Vec<&(String, u64, u64)> = maps.iter().collect();
    report::line(
        md,
        &format!(
            "The walker's maps, as the kernel accounts them (`memlock` in oomtrace's fdinfo, \
             read while that python3 runs): {:.1} MiB of oomtrace's {:.1} MiB of BPF maps in \
             all. They are allocated when loaded, whatever the tables hold; the computed \
             reservation is `unwind.reserved_bytes` = {:.1} MiB.\n",
            sum(&unwind) as f64 / (1 << 20) as f64,
            sum(&all) as f64 / (1 << 20) as f64,
            runs[0]
                .last()
                .and_then(|u| u["reserved_bytes"].as_f64())
                .unwrap_or(0.0)
                / (1 << 20) as f64,
        ),
    );
    report::line(md, "| map | entries | kernel memory |");
    report::line(md, "|---|---:|---:|");
    for (name, n, mem) in &unwind {
        report::line(
            md,
            &format!(
                "| `{name}` | {n} | {:.2} MiB |",
                *mem as f64 / (1 << 20) as f64
            ),
        );
    }
    report::line(md, "");
    Ok(())
}
