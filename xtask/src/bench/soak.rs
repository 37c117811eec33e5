//! `cargo xtask bench soak [SECONDS]`: oomtrace under a long churn and under storms
//! (`tests/workloads/gates.c`), each checked against the workload's own ground truth:
//!
//! * soak: `gates churn SECONDS` (1800 by default), one block replaced per step over a live set
//!   of 4096; oomtrace's RSS sampled every second must stay flat, and the outstanding bytes of
//!   `churn_alloc` at the end must equal the workload's own `live B` line;
//! * fork storm: 1000 children one after another, each keeping 4096 bytes;
//! * thread storm: 200 threads at once, each 1000 malloc/free pairs and one kept block;
//! * mmap storm: 100,000 anonymous 64 KiB mmap/munmap pairs.
//!
//! Every run has `--self-max 256M`; lost events are counted and shown, and each workload's own
//! time is given traced and untraced (what the target paid).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::report::{Goal, line};

/// The soak's length when none is given: the 30 minutes.
pub const DEFAULT_SECONDS: u64 = 1800;
/// oomtrace's own limit in every run here.
const SELF_MAX: u64 = 256 << 20;
/// How much oomtrace's RSS may rise from a quarter of the soak to its end and still be flat.
const FLAT_SLACK: u64 = 8 << 20;

/// One traced run.
pub struct Traced {
    /// What ran, for the table.
    pub name: String,
    /// The workload's arguments.
    pub args: Vec<String>,
    /// The workload's own stdout (its ground-truth line).
    pub stdout: String,
    /// The JSON report.
    pub report: Value,
    /// oomtrace's RSS over the run: (seconds, bytes).
    pub rss: Vec<(f64, u64)>,
    /// oomtrace's peak RSS (VmHWM, last read).
    pub peak: u64,
    /// The workload's own time, traced and untraced (from its `in S s` line), when it prints one.
    pub workload_s: Option<(f64, f64)>,
}

fn build(dir: &Path) -> Result<PathBuf> {
    let exe = dir.join("gates");
    let src = crate::root().join("tests/workloads/gates.c");
    let st = Command::new("cc")
        .args(["-O2", "-g", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .context("cannot run cc")?;
    if !st.success() {
        bail!("building {} failed", src.display());
    }
    Ok(exe)
}

/// A `/proc/PID/status` field in bytes (`VmHWM`, `VmRSS`); 0 once the process is gone.
fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The seconds in a workload's `... in S s` line.
fn seconds_in(stdout: &str) -> Option<f64> {
    let rest = stdout.rsplit_once(" in ")?.1;
    rest.split_whitespace().next()?.parse().ok()
}

fn run_traced(
    oomtrace: &Path,
    exe: &Path,
    dir: &Path,
    name: &str,
    args: &[&str],
    every: Duration,
    baseline: bool,
) -> Result<Traced> {
    // The storms' untraced time, for what the target paid (the soak has no timed loop).
    let untraced_s = if baseline {
        let untraced = Command::new(exe).args(args).output()?;
        seconds_in(&String::from_utf8_lossy(&untraced.stdout))
    } else {
        None
    };
    let file = dir.join(format!("soak-{}.json", name.replace(' ', "-")));
    let mut child = Command::new(oomtrace)
        .args(["run", "--format", "json", "--self-max", "256M", "-o"])
        .arg(&file)
        .arg("--")
        .arg(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start oomtrace")?;
    let pid = child.id();
    let start = Instant::now();
    let (mut rss, mut peak) = (Vec::new(), 0);
    while child.try_wait()?.is_none() {
        let now = status_bytes(pid, "VmRSS");
        if now > 0 {
            rss.push((start.elapsed().as_secs_f64(), now));
            peak = peak.max(status_bytes(pid, "VmHWM"));
        }
        std::thread::sleep(every);
    }
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout)?;
    }
    let report: Value = serde_json::from_slice(
        &std::fs::read(&file).with_context(|| format!("no report at {}", file.display()))?,
    )?;
    peak = peak.max(
        report["tracer_cost"]["peak_rss_bytes"]
            .as_u64()
            .unwrap_or(0),
    );
    Ok(Traced {
        name: name.to_owned(),
        args: args.iter().map(|a| a.to_string()).collect(),
        workload_s: seconds_in(&stdout).zip(untraced_s),
        stdout,
        report,
        rss,
        peak,
    })
}

/// Allocations and outstanding bytes over the stacks whose allocation site is `function`.
fn at_site(report: &Value, function: &str) -> (u64, u64) {
    let mut sum = (0, 0);
    for st in report["stacks"].as_array().into_iter().flatten() {
        let site = st["site"].as_u64().unwrap_or(0) as usize;
        if st["frames"][site]["function"].as_str() == Some(function) {
            sum.0 += st["allocs"].as_u64().unwrap_or(0);
            sum.1 += st["outstanding_bytes"].as_u64().unwrap_or(0);
        }
    }
    sum
}

fn lost(report: &Value) -> u64 {
    report["lost_events"].as_u64().unwrap_or(0)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// Runs the soak (`seconds` long) and the storms; appends their table and returns the goals.
pub fn measure(oomtrace: &Path, dir: &Path, seconds: u64, md: &mut String) -> Result<Vec<Goal>> {
    let exe = build(dir)?;
    let secs = seconds.to_string();
    let soak = run_traced(
        oomtrace,
        &exe,
        dir,
        "soak",
        &["churn", &secs],
        Duration::from_secs(1),
        false,
    )?;
    let every = Duration::from_millis(100);
    let forks = run_traced(
        oomtrace,
        &exe,
        dir,
        "fork storm",
        &["forks", "1000"],
        every,
        true,
    )?;
    let threads = run_traced(
        oomtrace,
        &exe,
        dir,
        "thread storm",
        &["threads", "200"],
        every,
        true,
    )?;
    let mmaps = run_traced(
        oomtrace,
        &exe,
        dir,
        "mmap storm",
        &["mmaps", "100000"],
        every,
        true,
    )?;

    let mut goals = Vec::new();
    // The soak: outstanding exact, RSS flat from a quarter of the run to its end.
    let live: Option<u64> = soak
        .stdout
        .split_whitespace()
        .skip_while(|w| *w != "live")
        .nth(1)
        .and_then(|v| v.parse().ok());
    let (_, outstanding) = at_site(&soak.report, "churn_alloc");
    let quarter = soak
        .rss
        .iter()
        .find(|(t, _)| *t >= seconds as f64 / 4.0)
        .map_or(0, |s| s.1);
    let end = soak.rss.last().map_or(0, |s| s.1);
    let flat = quarter > 0 && end <= quarter + FLAT_SLACK;
    goals.push(Goal {
        goal: format!(
            "soak ({seconds} s of `gates churn`): `churn_alloc`'s outstanding bytes = the \
             workload's `live` line"
        ),
        measured: Some(format!(
            "{outstanding} B vs {}",
            live.map_or("no line".into(), |l| format!("{l} B"))
        )),
        met: Some(live == Some(outstanding)),
        why: String::new(),
    });
    goals.push(Goal {
        goal: format!(
            "soak: oomtrace's RSS flat (at most {} more at the end than at a quarter of the run)",
            mib(FLAT_SLACK)
        ),
        measured: Some(format!(
            "{} → {}, peak {}",
            mib(quarter),
            mib(end),
            mib(soak.peak)
        )),
        met: Some(flat),
        why: String::new(),
    });
    // The storms, each against its own ground truth.
    let processes = forks.report["processes"].as_array().map_or(0, Vec::len);
    let (fork_allocs, fork_bytes) = at_site(&forks.report, "fork_child");
    goals.push(Goal {
        goal: "fork storm: 1000 children, each 4096 B outstanding at `fork_child`".into(),
        measured: Some(format!(
            "{processes} processes, {fork_allocs} allocations, {fork_bytes} B; lost events {}",
            lost(&forks.report)
        )),
        met: Some(processes == 1001 && fork_allocs == 1000 && fork_bytes == 1000 * 4096),
        why: String::new(),
    });
    let (thread_allocs, thread_bytes) = at_site(&threads.report, "thread_alloc");
    goals.push(Goal {
        goal: "thread storm: 200 threads × 1001 allocations at `thread_alloc`, 200 × 256 B kept"
            .into(),
        measured: Some(format!(
            "{thread_allocs} allocations, {thread_bytes} B; lost events {}",
            lost(&threads.report)
        )),
        met: Some(thread_allocs == 200 * 1001 && thread_bytes == 200 * 256),
        why: String::new(),
    });
    let (mmap_allocs, mmap_bytes) = at_site(&mmaps.report, "mmap_one");
    let mmap_lost = lost(&mmaps.report);
    goals.push(Goal {
        goal: "mmap storm: 100,000 mappings at `mmap_one`, all unmapped (or the loss counted)"
            .into(),
        measured: Some(format!(
            "{mmap_allocs} mappings, {mmap_bytes} B outstanding; lost events {mmap_lost}"
        )),
        met: Some(mmap_allocs + mmap_lost >= 100_000 && mmap_bytes == 0),
        why: String::new(),
    });
    let runs = [&soak, &forks, &threads, &mmaps];
    let worst = runs.iter().map(|r| r.peak).max().unwrap_or(0);
    goals.push(Goal {
        goal: format!(
            "oomtrace's peak RSS in every run ≤ --self-max {}",
            mib(SELF_MAX)
        ),
        measured: Some(format!("worst {}", mib(worst))),
        met: Some(worst <= SELF_MAX && runs.iter().all(|r| r.report["self_limit"].is_null())),
        why: String::new(),
    });

    line(md, "\n## Soak and storms\n");
    line(
        md,
        "`cargo xtask bench soak [SECONDS]`: `tests/workloads/gates.c` under `oomtrace run \
         --format json --self-max 256M`. The workload's time is its own (`clock_gettime` around \
         its loop), traced vs untraced.\n",
    );
    line(
        md,
        "| run | workload | oomtrace peak RSS | oomtrace RSS at ¼ → end | lost events | workload time traced / untraced |",
    );
    line(md, "|---|---|---|---|---|---|");
    for r in runs {
        let first = r.rss.first().map_or(0, |s| s.1);
        let last = r.rss.last().map_or(0, |s| s.1);
        let q = r.rss.get(r.rss.len() / 4).map_or(first, |s| s.1);
        line(
            md,
            &format!(
                "| {} | `gates {}` | {} | {} → {} | {} | {} |",
                r.name,
                r.args.join(" "),
                mib(r.peak),
                mib(q),
                mib(last),
                lost(&r.report),
                r.workload_s
                    .map_or("–".into(), |(t, u)| format!("{t:.2} s / {u:.2} s"))
            ),
        );
    }
    line(md, "");
    Ok(goals)
}
