//! `oomtrace agent`'s own cost: its CPU and memory over 60 s of a churning workload
//! (`tests/workloads/fleet.c churn`: 1 MiB blocks mapped, touched and freed at 20 Hz, a child
//! touching 4 MiB every 100 ms, an exec every 500 ms), with `/metrics` scraped every 5 s. Two
//! configurations: the whole machine (the default, so whatever else the machine runs is traced
//! too) and the workload's cgroup alone.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::report::line;

/// Seconds measured.
pub const SECONDS: u64 = 60;

/// One configuration's figures.
pub struct Row {
    /// What was traced.
    pub name: String,
    /// The agent's command line.
    pub command: String,
    /// Its CPU over the measured window, % of one core.
    pub cpu_pct: f64,
    /// Its peak resident set (start-up included).
    pub peak_rss: u64,
    /// Its resident set at the end.
    pub end_rss: u64,
    /// The series on its last page.
    pub series: usize,
}

fn build(dir: &Path) -> Result<PathBuf> {
    let exe = dir.join("fleet_churn");
    let src = crate::root().join("tests/workloads/fleet.c");
    let st = Command::new("cc")
        .args(["-O2", "-g", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .context("cannot run cc")?;
    if !st.success() {
        bail!("building {} failed", src.display());
    }
    Ok(exe)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn get_metrics(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_owned())
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    Ok(f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0))
}

/// A `/proc/PID/status` field in bytes (`VmHWM`, `VmRSS`).
fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// A cgroup for the workload (v2 where the memory controller is, else v1), removed by `drop`.
struct Group(PathBuf);

impl Group {
    fn new() -> Result<Self> {
        let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"));
        let root = if v2 {
            "/sys/fs/cgroup"
        } else {
            "/sys/fs/cgroup/memory"
        };
        let dir = Path::new(root).join(format!("oomtrace-bench-agent-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn start_agent(oomtrace: &Path, args: &[String], log: &Path) -> Result<Child> {
    let child = Command::new(oomtrace)
        .arg("agent")
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("cannot start oomtrace agent")?;
    let end = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("tracing")
    {
        if Instant::now() > end {
            bail!(
                "the agent did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(child)
}

fn measure_one(oomtrace: &Path, exe: &Path, dir: &Path, cgroup: bool) -> Result<Row> {
    let port = free_port()?;
    let group = if cgroup { Some(Group::new()?) } else { None };
    let mut args = vec!["--listen".to_owned(), format!("127.0.0.1:{port}")];
    if let Some(g) = &group {
        args.push("--cgroup".into());
        args.push(g.0.display().to_string());
    }
    let mut agent = start_agent(oomtrace, &args, &dir.join("agent.log"))?;
    let pid = agent.id();
    // Past the start-up (maps of every process, unwind tables): the steady state is measured.
    std::thread::sleep(Duration::from_secs(5));
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid)?;
    let mut workload = Command::new("sh");
    workload.arg("-c");
    match &group {
        Some(g) => workload.arg(format!(
            "echo $$ > {}/cgroup.procs && exec \"$0\" churn {SECONDS}",
            g.0.display()
        )),
        None => workload.arg(format!("exec \"$0\" churn {SECONDS}")),
    };
    let mut workload = workload
        .arg(exe)
        .spawn()
        .context("cannot start the churn")?;
    let mut page = String::new();
    while workload.try_wait()?.is_none() {
        std::thread::sleep(Duration::from_secs(5));
        page = get_metrics(port).unwrap_or_default();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let c1 = cpu_ticks(pid)?;
    // /proc counts CPU time in USER_HZ, which is 100 on Linux.
    let hz = 100.0;
    let peak_rss = status_bytes(pid, "VmHWM");
    let end_rss = status_bytes(pid, "VmRSS");
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    agent.wait()?;
    drop(group);
    Ok(Row {
        name: if cgroup {
            "the workload's cgroup (`--cgroup`)".into()
        } else {
            "the whole machine (default)".into()
        },
        command: format!("oomtrace agent {}", args.join(" "))
            .replace(&dir.display().to_string(), "…"),
        cpu_pct: (c1 - c0) as f64 / hz / elapsed * 100.0,
        peak_rss,
        end_rss,
        series: page
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count(),
    })
}

/// Both configurations.
pub fn measure(oomtrace: &Path, dir: &Path) -> Result<Vec<Row>> {
    let exe = build(dir)?;
    Ok(vec![
        measure_one(oomtrace, &exe, dir, false)?,
        measure_one(oomtrace, &exe, dir, true)?,
    ])
}

/// The table.
pub fn table(md: &mut String, rows: &[Row]) {
    line(md, "## `oomtrace agent`: its own CPU and memory\n");
    line(
        md,
        &format!(
            "Default settings (growth mode, refresh 5 s, tick 1 s), {SECONDS} s of \
             `tests/workloads/fleet.c churn` (1 MiB mapped, touched and freed at 20 Hz, a child \
             touching 4 MiB every 100 ms, an exec of /bin/true every 500 ms: about {} processes), \
             `/metrics` fetched every 5 s. CPU is the agent's utime + stime over the window, \
             after 5 s of start-up; peak RSS is its `VmHWM` (start-up included). The whole-machine \
             row traces everything else this shared VM runs too.\n",
            SECONDS * 12
        ),
    );
    line(
        md,
        "| traced | command | agent CPU (% of a core) | peak RSS | RSS at the end | series on the page |",
    );
    line(md, "|---|---|---:|---:|---:|---:|");
    for r in rows {
        line(
            md,
            &format!(
                "| {} | `{}` | {:.2} % | {:.1} MiB | {:.1} MiB | {} |",
                r.name,
                r.command,
                r.cpu_pct,
                r.peak_rss as f64 / (1 << 20) as f64,
                r.end_rss as f64 / (1 << 20) as f64,
                r.series
            ),
        );
    }
    line(
        md,
        "\nThe memory bound: every table the agent keeps is capped (docs/metrics.md, \"Bounds\"), \
         exited processes are forgotten at the next refresh, and `self_max` (512 MiB by default) \
         stops it past that.\n",
    );
}
