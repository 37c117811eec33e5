//! What a stack costs per allocation (`cargo xtask bench stacks`): the kernel's walk through the
//! `.eh_frame` tables against the frame-pointer walk and the bare probe floor, at two depths,
//! on `tests/workloads/bench_stack.c` built with and without frame pointers.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{median, report};
use crate::{root, status};

/// malloc+free pairs per run.
const PAIRS: u64 = 100_000;
/// Functions nested above the loop: deeper than the deepest stack measured.
const NESTING: &str = "40";
/// Rounds per configuration (interleaved).
const ROUNDS: usize = 5;

/// One row: how oomtrace runs (or not), on which build.
struct Row {
    name: String,
    /// `oomtrace run` arguments; `None`: untraced.
    args: Option<Vec<String>>,
    /// `OOMTRACE_UNWIND=frame-pointers`.
    fp_only: bool,
    /// The build with frame pointers.
    with_fp: bool,
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
        },
        Row {
            name: "bare probe floor".into(),
            args: oom(&["run", "--probe-floor"]),
            fp_only: false,
            with_fp: false,
        },
    ];
    for depth in ["8", "32"] {
        let args = oom(&["run", "--stack-depth", depth]);
        v.push(Row {
            name: format!("exact, depth {depth}, frame pointers only (-fno-omit-frame-pointer)"),
            args: args.clone(),
            fp_only: true,
            with_fp: true,
        });
        v.push(Row {
            name: format!("exact, depth {depth}, tables (-fno-omit-frame-pointer)"),
            args: args.clone(),
            fp_only: false,
            with_fp: true,
        });
        v.push(Row {
            name: format!("exact, depth {depth}, tables (-fomit-frame-pointer)"),
            args,
            fp_only: false,
            with_fp: false,
        });
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

/// `alloc_enter`'s own nanoseconds per run (the kernel's BPF statistics) and the deepest
/// stack's frame count, from a report.
fn kernel_side(report: &Value) -> (Option<f64>, Option<u64>) {
    let ns = report["tracer_cost"]["programs"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "alloc_enter"))
        .and_then(|p| p["ns_per_run"].as_f64());
    let frames = report["stacks"]
        .as_array()
        .and_then(|ss| {
            ss.iter()
                .map(|s| s["frames"].as_array().map_or(0, Vec::len))
                .max()
        })
        .map(|n| n as u64);
    (ns, frames)
}

/// Measures every row and appends the table to `md`.
pub fn measure(oomtrace: &Path, dir: &Path, md: &mut String) -> Result<()> {
    let (fp, nofp) = build(dir)?;
    let rows = rows();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    let mut reports: Vec<Option<Value>> = vec![None; rows.len()];
    for round in 0..ROUNDS {
        for (i, row) in rows.iter().enumerate() {
            let exe = if row.with_fp { &fp } else { &nofp };
            let (ns, r) = run_once(oomtrace, row, exe, dir)?;
            eprintln!(
                "bench: stacks round {} {:<62} {:>8.1} ms",
                round + 1,
                row.name,
                ns / 1e6
            );
            samples[i].push(ns);
            if r.is_some() {
                reports[i] = r;
            }
        }
    }
    let medians: Vec<f64> = samples.into_iter().map(median).collect();
    let floor = medians[1];
    report::line(
        md,
        &format!(
            "## Stacks: the table walk against frame pointers\n\n`tests/workloads/bench_stack.c`: \
             {PAIRS} × (`malloc(64)`; `free`) under {NESTING} nested functions, built `-O2` with \
             and without frame pointers; the loop's own time. \"frame pointers only\" is \
             `OOMTRACE_UNWIND=frame-pointers`. `alloc_enter` is the entry program's own time per \
             run (the kernel's BPF statistics), where the walk happens. {ROUNDS} rounds, \
             interleaved; medians.\n"
        ),
    );
    report::line(
        md,
        "| configuration | per malloc+free pair | vs floor | `alloc_enter` per run | frames |",
    );
    report::line(md, "|---|---:|---:|---:|---:|");
    for ((row, med), r) in rows.iter().zip(&medians).zip(&reports) {
        let (ns, frames) = r.as_ref().map_or((None, None), kernel_side);
        report::line(
            md,
            &format!(
                "| {} | {:.2} µs | {:.2}× | {} | {} |",
                row.name,
                med / PAIRS as f64 / 1e3,
                med / floor,
                ns.map_or("–".into(), |n| format!("{n:.0} ns")),
                frames.map_or("–".into(), |f| f.to_string()),
            ),
        );
    }
    report::line(md, "");
    Ok(())
}
