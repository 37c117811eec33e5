//! The C malloc/free loops (`tests/workloads/bench_loop.c`): one thread, two threads, and the
//! free phase. The workload times its own loop, so start-up, attach and detach are excluded.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::tracers::{self, Config, Role, Tracer};
use super::{median, report};
use crate::{root, status};

/// One workload: its arguments, what its printed time measures, and how many calls it makes.
pub struct Workload {
    pub title: &'static str,
    pub args: &'static [&'static str],
    pub what: &'static str,
    /// Calls the time is divided by for the per-call column.
    pub calls: f64,
    pub unit: &'static str,
    pub rounds: usize,
}

/// The medians of one workload under each configuration.
pub struct Measured {
    pub configs: Vec<Config>,
    /// Median loop time (ns); `None` for skipped configurations.
    pub medians: Vec<Option<f64>>,
    /// oomtrace's last JSON report per configuration (its `tracer_cost` above all).
    pub reports: Vec<Option<Value>>,
    /// Rounds that started while other processes held uprobe/kprobe programs.
    pub busy_rounds: usize,
}

impl Measured {
    /// The median of the configuration with `role`, if it ran.
    pub fn by_role(&self, role: Role) -> Option<f64> {
        self.configs
            .iter()
            .zip(&self.medians)
            .find(|(c, _)| c.role == role)
            .and_then(|(_, m)| *m)
    }

    /// The last report of the configuration with `role`.
    pub fn report(&self, role: Role) -> Option<&Value> {
        tracers::report_of(&self.configs, &self.reports, role)
    }
}

/// Builds the workload with the flags the tests use for it.
pub fn build_workload(dir: &Path) -> Result<PathBuf> {
    let exe = dir.join("bench_loop");
    status(
        Command::new("cc")
            .args(["-O2", "-g", "-pthread", "-o"])
            .arg(&exe)
            .arg(root().join("tests/workloads/bench_loop.c")),
    )?;
    Ok(exe)
}

/// Runs the workload once under `cfg`: the loop's own nanoseconds, and oomtrace's report.
fn run_once(
    oomtrace: &Path,
    cfg: &Config,
    argv: &[String],
    dir: &Path,
    allocator: &str,
) -> Result<(f64, Option<Value>)> {
    let report_path = dir.join("loop-report.json");
    let _ = std::fs::remove_file(&report_path);
    let out = tracers::command(oomtrace, cfg, argv, &report_path, allocator)
        .output()
        .with_context(|| format!("cannot start {}", cfg.name))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            cfg.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // The workload's time is the first line that is a bare number (tracers print their own).
    let ns: f64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let l = l.trim();
            (!l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
                .then(|| l.parse().ok())
                .flatten()
        })
        .with_context(|| format!("{} printed no timing", cfg.name))?;
    let report = match cfg.tracer {
        Tracer::Oomtrace(_) => {
            let bytes = std::fs::read(&report_path)
                .with_context(|| format!("{} wrote no report", cfg.name))?;
            Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} wrote a report that is not JSON", cfg.name))?,
            )
        }
        _ => None,
    };
    Ok((ns, report))
}

/// Runs every configuration on `w`, interleaved round by round so that drift in the machine
/// hits all alike.
pub fn measure(
    oomtrace: &Path,
    exe: &Path,
    configs: Vec<Config>,
    w: &Workload,
    dir: &Path,
) -> Result<Measured> {
    let allocator = tracers::allocator_of(oomtrace, exe)?;
    let argv: Vec<String> = std::iter::once(exe.display().to_string())
        .chain(w.args.iter().map(|s| (*s).to_owned()))
        .collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut reports: Vec<Option<Value>> = vec![None; configs.len()];
    let mut busy_rounds = 0;
    for round in 0..w.rounds {
        let others = super::interference::foreign_probe_holders();
        if !others.is_empty() {
            eprintln!(
                "bench: round {}: other processes hold probes: {others:?}",
                round + 1
            );
            busy_rounds += 1;
        }
        for (i, cfg) in configs.iter().enumerate() {
            if cfg.skipped.is_some() {
                continue;
            }
            let (ns, report) = run_once(oomtrace, cfg, &argv, dir, &allocator)?;
            eprintln!(
                "bench: {} round {} {:<42} {:>10.1} ms",
                w.title,
                round + 1,
                cfg.name,
                ns / 1e6
            );
            samples[i].push(ns);
            if report.is_some() {
                reports[i] = report;
            }
        }
    }
    Ok(Measured {
        medians: samples
            .into_iter()
            .map(|s| (!s.is_empty()).then(|| median(s)))
            .collect(),
        configs,
        reports,
        busy_rounds,
    })
}

/// The table of one workload: command, median, per call, vs untraced, vs the floor.
pub fn table(md: &mut String, w: &Workload, m: &Measured) {
    report::line(md, &format!("## {}\n\n{}.\n", w.title, w.what));
    report::line(
        md,
        &format!(
            "| configuration | command | median | {} | vs untraced | vs its floor |",
            w.unit
        ),
    );
    report::line(md, "|---|---|---:|---:|---:|---:|");
    let args: Vec<&str> = std::iter::once("bench_loop")
        .chain(w.args.iter().copied())
        .collect();
    let untraced = m.by_role(Role::Untraced);
    for (cfg, med) in m.configs.iter().zip(&m.medians) {
        let cmd = tracers::shown(cfg, &args);
        let Some(med) = med else {
            let why = cfg.skipped.as_deref().unwrap_or("did not run");
            report::line(md, &format!("| {} | {cmd} | {why} | – | – | – |", cfg.name));
            continue;
        };
        let floor = cfg.role.floor().and_then(|r| m.by_role(r));
        let vs_floor = floor.map_or("–".to_owned(), |f| format!("{:.2}×", med / f));
        let vs_untraced = untraced.map_or("–".to_owned(), |u| format!("{:.1}×", med / u));
        report::line(
            md,
            &format!(
                "| {} | {cmd} | {:.1} ms | {:.2} µs | {vs_untraced} | {vs_floor} |",
                cfg.name,
                med / 1e6,
                med / w.calls / 1e3,
            ),
        );
    }
    report::line(md, "");
    let note = floors_note(m);
    if !note.is_empty() {
        report::line(md, &note);
    }
    report::line(md, &super::interference::note(m.busy_rounds, w.rounds));
}

/// Which floor each mode's `vs its floor` divides by, for the floors this table has.
fn floors_note(m: &Measured) -> String {
    let has = |r: Role| m.configs.iter().any(|c| c.role == r);
    let mut parts = Vec::new();
    if has(Role::FloorSession) && has(Role::Sample) {
        parts.push(
            "`sample` against the entry-only floor (uprobe sessions: its unsampled calls skip \
             the return probe, as the floor's every call does)",
        );
    }
    if has(Role::FloorAuto) {
        parts.push(
            "`exact`, `growth` and `sample` without sessions against the entry+return floor at \
             oomtrace's placement",
        );
    }
    if has(Role::FloorEntry) && has(Role::ExactEntry) {
        parts.push("`exact` at offset 0 against the floor at offset 0");
    }
    if parts.is_empty() {
        return String::new();
    }
    format!("`vs its floor`: {}.\n", parts.join("; "))
}
