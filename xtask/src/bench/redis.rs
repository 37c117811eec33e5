//! A real application: Debian's `redis-server` (malloc from libjemalloc) driven by
//! `redis-benchmark` on loopback with a bounded request count; throughput per configuration.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::tracers::{self, Config, Role, Tracer};
use super::{median, report};

/// Loopback only.
const HOST: &str = "127.0.0.1";
const PORT: &str = "16379";
/// Requests per test (SET, then GET): bounded so a slow configuration still ends.
pub const REQUESTS: u64 = 100_000;
const CLIENTS: &str = "20";
/// Rounds, unless `BENCH_ROUNDS` says otherwise.
const ROUNDS: usize = 3;
/// The tracer must see at least this many allocations in redis-server, or it did not trace
/// redis's allocator (jemalloc) at all.
const MIN_ALLOCS: u64 = 1000;

/// Throughput medians per configuration.
pub struct Measured {
    pub configs: Vec<Config>,
    /// (SET, GET) requests per second, medians; `None` when skipped.
    pub rps: Vec<Option<(f64, f64)>>,
    /// oomtrace's last report per configuration.
    pub reports: Vec<Option<Value>>,
    /// Rounds that started while other processes held uprobe/kprobe programs.
    pub busy_rounds: usize,
    /// Rounds run.
    pub rounds: usize,
}

impl Measured {
    /// Combined throughput (requests over the time of both tests) of the configuration with
    /// `role`.
    pub fn combined(&self, role: Role) -> Option<f64> {
        self.configs
            .iter()
            .zip(&self.rps)
            .find(|(c, _)| c.role == role)
            .and_then(|(_, r)| r.map(combined))
    }

    /// The last report of the configuration with `role`.
    pub fn report(&self, role: Role) -> Option<&Value> {
        tracers::report_of(&self.configs, &self.reports, role)
    }
}

/// Requests per second over both tests: 2 / (1/set + 1/get).
fn combined((set, get): (f64, f64)) -> f64 {
    2.0 / (1.0 / set + 1.0 / get)
}

fn server_argv() -> Vec<String> {
    [
        "redis-server",
        "--port",
        PORT,
        "--bind",
        HOST,
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn cli(args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli")
        .args(["-h", HOST, "-p", PORT])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .context("cannot run redis-cli")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Waits until the server answers PING (under a tracer, that is once it is attached).
fn wait_ready(child: &mut Child, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait()? {
            bail!("redis-server under {name} exited before it served ({st})");
        }
        if cli(&["ping"]).is_ok_and(|s| s == "PONG") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    bail!("redis-server under {name} did not answer PING within 60 s")
}

/// `redis-benchmark -q`: (SET, GET) requests per second.
fn drive() -> Result<(f64, f64)> {
    let n = REQUESTS.to_string();
    let out = Command::new("redis-benchmark")
        .args(["-h", HOST, "-p", PORT, "-q", "-n", &n, "-c", CLIENTS])
        .args(["-t", "set,get"])
        .output()
        .context("cannot run redis-benchmark")?;
    if !out.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // Progress lines end in '\r'; the results are "SET: 98039.22 requests per second, …".
    let rate = |test: &str| -> Result<f64> {
        text.split(['\r', '\n'])
            .filter_map(|l| l.trim().strip_prefix(&format!("{test}: ")))
            .find(|l| l.contains("requests per second"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("redis-benchmark printed no {test} result: {text}"))
    };
    Ok((rate("SET")?, rate("GET")?))
}

fn run_once(oomtrace: &Path, cfg: &Config, dir: &Path) -> Result<((f64, f64), Option<Value>)> {
    if cli(&["ping"]).is_ok_and(|s| s == "PONG") {
        bail!("something already listens on {HOST}:{PORT}: stop it and rerun the bench");
    }
    let report_path = dir.join("redis-report.json");
    let _ = std::fs::remove_file(&report_path);
    let mut child = tracers::command(oomtrace, cfg, &server_argv(), &report_path, "")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start redis-server under {}", cfg.name))?;
    wait_ready(&mut child, &cfg.name)?;
    let attached = match &cfg.tracer {
        Tracer::OomtraceAttach(args) => Some(attach(oomtrace, child.id(), args, &report_path)?),
        _ => None,
    };
    let rps = drive();
    if let Some(tracer) = attached {
        detach(tracer)?;
    }
    let _ = cli(&["shutdown", "nosave"]);
    let out = child.wait_with_output()?;
    let rps = rps?;
    if !out.status.success() {
        bail!(
            "redis-server under {} ended with {}: {}",
            cfg.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let report = match cfg.tracer {
        Tracer::Oomtrace(_) | Tracer::OomtraceAttach(_) => {
            let r: Value = serde_json::from_slice(
                &std::fs::read(&report_path)
                    .with_context(|| format!("{} wrote no report", cfg.name))?,
            )
            .with_context(|| format!("{} wrote a report that is not JSON", cfg.name))?;
            if !cfg.role.is_floor() {
                check_traced(&r, cfg)?;
            }
            Some(r)
        }
        _ => None,
    };
    Ok((rps, report))
}

/// `oomtrace --pid PID ARGS`, once it says it is attached.
fn attach(oomtrace: &Path, pid: u32, args: &[String], report: &Path) -> Result<Child> {
    use std::io::BufRead as _;
    let mut t = Command::new(oomtrace)
        .args(["--pid", &pid.to_string()])
        .args(args)
        .args(["--format", "json", "-o"])
        .arg(report)
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start oomtrace --pid")?;
    let mut line = String::new();
    std::io::BufReader::new(t.stderr.take().context("no stderr")?).read_line(&mut line)?;
    if !line.contains("attached to pid") {
        bail!("oomtrace --pid {pid} did not attach: {line}");
    }
    Ok(t)
}

/// Ctrl-C to an attached oomtrace: it writes its report and detaches.
fn detach(tracer: Child) -> Result<()> {
    let status = Command::new("kill")
        .args(["-INT", &tracer.id().to_string()])
        .status()?;
    if !status.success() {
        bail!("cannot stop oomtrace --pid");
    }
    let out = tracer.wait_with_output()?;
    if !out.status.success() {
        bail!("oomtrace --pid ended with {}", out.status);
    }
    Ok(())
}

/// Allocations the report shows in redis-server.
fn redis_allocs(report: &Value) -> u64 {
    report["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["comm"]
                .as_str()
                .is_some_and(|c| c.starts_with("redis-server"))
        })
        .map(|p| p["allocs"].as_u64().unwrap_or(0))
        .sum()
}

/// Fails unless the report shows redis-server's own allocations (jemalloc's, DESIGN §4); in
/// growth mode, which probes no allocator, its resident growth (the figures count 4 KiB pages).
fn check_traced(report: &Value, cfg: &Config) -> Result<()> {
    let name = &cfg.name;
    let allocs = redis_allocs(report);
    if cfg.role == Role::Growth {
        if allocs == 0 {
            bail!("{name} saw no page faults in redis-server: it does not trace it");
        }
        eprintln!("bench: redis {name}: {allocs} resident pages attributed in redis-server");
        return Ok(());
    }
    if allocs < MIN_ALLOCS {
        bail!(
            "{name} saw {allocs} allocations in redis-server: it does not trace redis's allocator"
        );
    }
    eprintln!("bench: redis {name}: {allocs} allocations seen in redis-server");
    Ok(())
}

/// Every configuration, `ROUNDS` rounds interleaved.
pub fn measure(oomtrace: &Path, configs: Vec<Config>, dir: &Path) -> Result<Measured> {
    let rounds = super::rounds(ROUNDS)?;
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); configs.len()];
    let mut reports: Vec<Option<Value>> = vec![None; configs.len()];
    let mut busy_rounds = 0;
    for round in 0..rounds {
        let others = super::interference::foreign_probe_holders();
        if !others.is_empty() {
            eprintln!(
                "bench: redis round {}: other processes hold probes: {others:?}",
                round + 1
            );
            busy_rounds += 1;
        }
        for (i, cfg) in configs.iter().enumerate() {
            if cfg.skipped.is_some() {
                continue;
            }
            let (rps, report) = run_once(oomtrace, cfg, dir)?;
            eprintln!(
                "bench: redis round {} {:<42} SET {:>9.0}/s GET {:>9.0}/s",
                round + 1,
                cfg.name,
                rps.0,
                rps.1
            );
            samples[i].push(rps);
            if report.is_some() {
                reports[i] = report;
            }
        }
    }
    let rps = samples
        .into_iter()
        .map(|s| {
            (!s.is_empty()).then(|| {
                (
                    median(s.iter().map(|r| r.0).collect()),
                    median(s.iter().map(|r| r.1).collect()),
                )
            })
        })
        .collect();
    Ok(Measured {
        configs,
        rps,
        reports,
        busy_rounds,
        rounds,
    })
}

/// The redis table.
pub fn table(md: &mut String, m: &Measured) {
    let cmd = format!("redis-server --port {PORT} --bind {HOST} --save '' --appendonly no");
    report::line(
        md,
        &format!(
            "## redis-server under redis-benchmark\n\n`{cmd}` (Debian's redis-server: malloc from \
             libjemalloc.so.2), driven by `redis-benchmark -h {HOST} -p {PORT} -q -n {REQUESTS} -c {CLIENTS} \
             -t set,get` once it answers PING (so start-up and attach are excluded). Medians of {} rounds, \
             configurations interleaved. Combined = both tests' requests over both tests' time. Every oomtrace \
             row's report was checked to hold ≥ {MIN_ALLOCS} allocations in redis-server (growth mode, \
             which probes no allocator: resident pages attributed to redis-server's stacks).\n",
            m.rounds
        ),
    );
    report::line(
        md,
        "| configuration | command | SET req/s | GET req/s | combined req/s | vs untraced | allocations seen (last round) | lost events | tracer CPU |",
    );
    report::line(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let untraced = m.combined(Role::Untraced);
    let argv: Vec<&str> = vec!["redis-server", "…"];
    for ((cfg, rps), rep) in m.configs.iter().zip(&m.rps).zip(&m.reports) {
        let shown = tracers::shown(cfg, &argv);
        let seen = match rep {
            Some(r) if !cfg.role.is_floor() => format!(
                "{}{} | {} | {:.2} s",
                redis_allocs(r),
                if cfg.role == Role::Growth {
                    " pages faulted in"
                } else {
                    ""
                },
                r["lost_events"],
                r["tracer_cost"]["cpu_s"].as_f64().unwrap_or(0.0)
            ),
            Some(r) => format!(
                "– | – | {:.2} s",
                r["tracer_cost"]["cpu_s"].as_f64().unwrap_or(0.0)
            ),
            None => "– | – | –".to_owned(),
        };
        match rps {
            None => report::line(
                md,
                &format!(
                    "| {} | {shown} | {} | – | – | – | – | – | – |",
                    cfg.name,
                    cfg.skipped.as_deref().unwrap_or("did not run")
                ),
            ),
            Some(r) => {
                let c = combined(*r);
                let vs = untraced.map_or("–".to_owned(), |u| format!("{:.0} %", c / u * 100.0));
                report::line(
                    md,
                    &format!(
                        "| {} | {shown} | {:.0} | {:.0} | {c:.0} | {vs} | {seen} |",
                        cfg.name, r.0, r.1
                    ),
                );
            }
        }
    }
    report::line(md, "");
    report::line(md, &super::interference::note(m.busy_rounds, m.rounds));
}
