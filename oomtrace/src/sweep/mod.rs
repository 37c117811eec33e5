//! `oomtrace sweep -- CMD`: the OOM-resilience audit. A first run lists the allocation sites;
//! then CMD runs once per (site, occurrence) with the k-th call from that site made to fail
//! (`run --fail-at-site SITE --fail-nth k`), and each run is classified: handled, crashed,
//! aborted, hung, or not reached, with what it leaked that the first run did not.
//!
//! Each run is `oomtrace run --format json` in a child process of its own process group, so a
//! run that hangs is killed whole (oomtrace, and with it the traced tree) and nothing is left.

pub mod classify;
pub mod output;
pub mod plan;

use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::cli::{Format, SweepArgs};
use classify::{Ended, Outcome};
use output::{Injected, RunResult, SweepReport};
use plan::RunReport;

/// `sweep`'s exit code when a run crashed or hung.
pub const EXIT_FAILED: i32 = 3;

/// Bytes of a run's stderr kept (its tail holds the command's last message).
const STDERR_TAIL: usize = 64 * 1024;

/// Runs the sweep; returns its exit code.
pub fn run(args: &SweepArgs) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().context("cannot find oomtrace's own executable")?;
    let dir = std::env::temp_dir().join(format!("oomtrace-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = sweep(args, &exe, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    let text = match args.format {
        Format::Json => report.0.to_json() + "\n",
        Format::Text => report.0.render_text(&report.1),
    };
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("cannot write the sweep's results")?;
        }
    }
    Ok(if report.0.failed() { EXIT_FAILED } else { 0 })
}

fn sweep(args: &SweepArgs, exe: &Path, dir: &Path) -> anyhow::Result<(SweepReport, String)> {
    let base = run_once(
        exe,
        &[],
        &args.command,
        args.timeout,
        &dir.join("base.json"),
    )?;
    let Some(base_report) = base.report else {
        anyhow::bail!(
            "the first run (no failure injected) wrote no report{}: {}",
            if base.timed_out {
                format!(", it ran past --timeout {:?}", args.timeout)
            } else {
                String::new()
            },
            base.oomtrace_lines().unwrap_or_else(|| "no message".into())
        );
    };
    let (sites, unnamed) = plan::sites(&base_report);
    let (planned, over) = plan::plan(&sites, &args.occurrences, args.max_runs);
    let mut header = format!(
        "oomtrace sweep: {} allocation site(s), {} run(s) failing call k of a site",
        sites.len(),
        planned.len()
    );
    if over > 0 {
        header.push_str(&format!("; {over} more left out by --max-runs"));
    }
    if unnamed > 0 {
        header.push_str(&format!(
            "; {unnamed} stack(s) left out: no function of the program's own on them"
        ));
    }
    crate::say!("{header}");
    let mut runs = Vec::with_capacity(planned.len());
    for (i, p) in planned.iter().enumerate() {
        let site = &sites[p.site];
        let extra: Vec<OsString> = vec![
            "--fail-at-site".into(),
            site.function.clone().into(),
            "--fail-nth".into(),
            p.occurrence.to_string().into(),
        ];
        let path = dir.join(format!("run-{i}.json"));
        let r = run_once(exe, &extra, &args.command, args.timeout, &path)?;
        let result = classify_run(&base_report, site, p.occurrence, r);
        crate::say!(
            "oomtrace sweep: [{}/{}] call {} at {}: {}",
            i + 1,
            planned.len(),
            p.occurrence,
            site.function,
            result.outcome.word()
        );
        runs.push(result);
    }
    Ok((SweepReport { runs }, header))
}

fn classify_run(base: &RunReport, site: &plan::Site, occurrence: u64, r: Finished) -> RunResult {
    let end = if r.timed_out {
        Ended {
            timed_out: true,
            ..Ended::default()
        }
    } else {
        classify::ended(r.code, r.report.as_ref())
    };
    let outcome = classify::outcome(end, r.report.as_ref());
    let (leaked_bytes, leak_stacks) = r
        .report
        .as_ref()
        .map(|run| classify::new_leaks(base, run))
        .unwrap_or_default();
    let message = match outcome {
        Outcome::Error => r.oomtrace_lines(),
        _ => r.command_message(),
    };
    RunResult {
        injected: Injected {
            site: site.function.clone(),
            frames: site.frames.clone(),
            occurrence,
        },
        outcome,
        exit_code: end.exit_code,
        signal: end.signal,
        crash_frames: r
            .report
            .as_ref()
            .map(classify::crash_frames)
            .unwrap_or_default(),
        leaked_bytes,
        leak_stacks,
        message,
    }
}

/// One finished (or killed) `oomtrace run`.
struct Finished {
    /// Its exit code (`None`: it was killed).
    code: Option<i32>,
    timed_out: bool,
    /// The tail of its stderr: oomtrace's lines and the command's.
    stderr: String,
    report: Option<RunReport>,
}

impl Finished {
    /// The command's last message on stderr: its last line that is neither oomtrace's nor part
    /// of a backtrace (indented frames, Rust's `note:` and `stack backtrace:` lines).
    fn command_message(&self) -> Option<String> {
        self.stderr
            .lines()
            .rev()
            .filter(|l| !l.starts_with(char::is_whitespace))
            .map(str::trim)
            .find(|l| {
                !l.is_empty()
                    && !l.starts_with("oomtrace")
                    && !l.starts_with("note:")
                    && !l.starts_with("stack backtrace:")
            })
            .map(|l| l.chars().take(300).collect())
    }

    /// oomtrace's own lines, for a run that failed as a run.
    fn oomtrace_lines(&self) -> Option<String> {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("oomtrace"))
            .collect();
        (!lines.is_empty()).then(|| lines.join(" / "))
    }
}

/// Runs `oomtrace run --format json -o REPORT EXTRA -- CMD` within `timeout`.
fn run_once(
    exe: &Path,
    extra: &[OsString],
    cmd: &[OsString],
    timeout: Duration,
    report: &PathBuf,
) -> anyhow::Result<Finished> {
    let _ = std::fs::remove_file(report);
    let mut child = Command::new(exe)
        .arg("run")
        .arg("--format")
        .arg("json")
        .arg("-o")
        .arg(report)
        .args(extra)
        .arg("--")
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own group: a hung run is killed whole.
        .process_group(0)
        .spawn()
        .context("cannot start `oomtrace run`")?;
    let pgid = child.id() as i32;
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let reader = std::thread::spawn(move || {
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 2 * STDERR_TAIL {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
        }
        String::from_utf8_lossy(&tail).into_owned()
    });
    let started = Instant::now();
    let (code, timed_out) = loop {
        if let Some(status) = child.try_wait().context("cannot wait for `oomtrace run`")? {
            break (status.code(), false);
        }
        if started.elapsed() >= timeout {
            kill_group(pgid);
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Whatever it started and left in its group (a detach helper) ends with the group.
    if timed_out {
        kill_group(pgid);
    }
    let stderr = reader.join().unwrap_or_default();
    let report = if timed_out {
        None
    } else {
        std::fs::read(report)
            .ok()
            .and_then(|b| serde_json::from_slice::<RunReport>(&b).ok())
    };
    Ok(Finished {
        code,
        timed_out,
        stderr,
        report,
    })
}

/// SIGKILLs process group `pgid` until none of it is left (at most about two seconds).
fn kill_group(pgid: i32) {
    for _ in 0..100 {
        // SAFETY: kill has no memory preconditions; a negative pid names the group.
        let r = unsafe { libc::kill(-pgid, libc::SIGKILL) };
        if r != 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
