//! Who pays: an untraced malloc/free loop while oomtrace traces another process. With probes
//! attached per traced process, the bystander takes no trap; `--all` (system-wide by nature)
//! is the contrast. Also the whole-run time of `oomtrace run -- /bin/true`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::median;
use super::report::line;

/// Runs per phase.
const RUNS: usize = 5;
/// Iterations of the bystander's loop (about 30 ms untraced here).
const LOOP: &str = "3000000";

/// One configuration: how oomtrace runs while the bystander loops.
struct Config {
    name: String,
    how: &'static str,
    mode: &'static str,
}

/// The bystander loop's median and fastest run, untraced and traced, for each configuration.
pub struct Row {
    name: String,
    command: String,
    untraced_ms: f64,
    traced_ms: f64,
    untraced_min_ms: f64,
    traced_min_ms: f64,
}

fn loop_ms(exe: &Path) -> Result<f64> {
    let out = Command::new(exe)
        .args([LOOP, "1"])
        .output()
        .context("cannot run the bystander loop")?;
    let ns: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("the bystander printed no time")?;
    Ok(ns / 1e6)
}

/// Starts oomtrace per `cfg` (tracing a `sleep`), waits until it is tracing.
fn start(oomtrace: &Path, cfg: &Config) -> Result<(Child, Option<Child>)> {
    let mut sleeper = None;
    let mut cmd = Command::new(oomtrace);
    match cfg.how {
        "run" => {
            cmd.args([
                "run", "--mode", cfg.mode, "--format", "json", "--", "sleep", "600",
            ]);
        }
        "pid" => {
            let s = Command::new("sleep").arg("600").spawn()?;
            cmd.args(["--pid", &s.id().to_string(), "--mode", cfg.mode]);
            cmd.args(["--format", "json"]);
            sleeper = Some(s);
        }
        _ => {
            cmd.args(["--all", "--mode", cfg.mode, "--format", "json"]);
        }
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start oomtrace")?;
    // Attach, load and the first probes: well within this here.
    std::thread::sleep(Duration::from_millis(2500));
    Ok((child, sleeper))
}

fn stop(mut child: Child, sleeper: Option<Child>) {
    // SIGINT: the report is written and everything detached.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    if let Some(mut s) = sleeper {
        let _ = s.kill();
        let _ = s.wait();
    }
}

/// Measures every configuration: untraced runs and traced runs alternate phase by phase.
pub fn measure(oomtrace: &Path, exe: &Path) -> Result<Vec<Row>> {
    let mut configs = Vec::new();
    for how in ["run", "pid"] {
        for mode in ["exact", "sample", "growth"] {
            let form = if how == "run" {
                "run -- sleep"
            } else {
                "--pid $(sleep)"
            };
            configs.push(Config {
                name: format!("`oomtrace {form}`, {mode}"),
                how,
                mode,
            });
        }
    }
    configs.push(Config {
        name: "`oomtrace --all`, exact (system-wide by nature)".into(),
        how: "all",
        mode: "exact",
    });
    let mut rows = Vec::new();
    for cfg in configs {
        let mut untraced = Vec::new();
        let mut traced = Vec::new();
        for _ in 0..RUNS {
            untraced.push(loop_ms(exe)?);
        }
        let (child, sleeper) = start(oomtrace, &cfg)?;
        for _ in 0..RUNS {
            traced.push(loop_ms(exe)?);
        }
        stop(child, sleeper);
        for _ in 0..RUNS {
            untraced.push(loop_ms(exe)?);
        }
        rows.push(Row {
            command: match cfg.how {
                "run" => format!("oomtrace run --mode {} -- sleep 600", cfg.mode),
                "pid" => format!("oomtrace --pid $(sleep 600) --mode {}", cfg.mode),
                _ => format!("oomtrace --all --mode {}", cfg.mode),
            },
            name: cfg.name,
            untraced_min_ms: fastest(&untraced),
            traced_min_ms: fastest(&traced),
            untraced_ms: median(untraced),
            traced_ms: median(traced),
        });
    }
    Ok(rows)
}

/// The fastest of `v`.
fn fastest(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The bystander table.
pub fn table(md: &mut String, rows: &[Row]) {
    line(
        md,
        "## Who pays: an untraced process while oomtrace traces another\n",
    );
    line(
        md,
        &format!(
            "`bench_loop {LOOP} 1` (an untraced malloc/free loop, its own time) run {RUNS} times \
             before, {RUNS} times during and {RUNS} times after each oomtrace session tracing an \
             idle `sleep`. oomtrace attaches its allocator probes to the traced processes \
             only (a multi-uprobe link with the pid), so the bystander's code carries no \
             breakpoint. `--all` probes every process by nature. The goal compares the fastest \
             runs: a cost oomtrace put on the bystander (a trap per call) slows every run, the \
             fastest too, while this shared VM's interference comes and goes between runs \
             (the loop alone takes 27 to 40 ms from one run to the next); the medians are shown \
             as well.\n"
        ),
    );
    line(
        md,
        "| oomtrace tracing | command | untraced median | during median | untraced fastest | \
         during fastest | fastest vs untraced |",
    );
    line(md, "|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        line(
            md,
            &format!(
                "| {} | `{}` | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2}× |",
                r.name,
                r.command,
                r.untraced_ms,
                r.traced_ms,
                r.untraced_min_ms,
                r.traced_min_ms,
                r.traced_min_ms / r.untraced_min_ms
            ),
        );
    }
    line(md, "");
}

/// The worst bystander ratio of fastest runs among the per-process configurations (the goal's
/// figure).
pub fn worst_ratio(rows: &[Row]) -> f64 {
    rows.iter()
        .filter(|r| !r.name.contains("--all"))
        .map(|r| r.traced_min_ms / r.untraced_min_ms)
        .fold(0.0, f64::max)
}

/// Medians of `RUNS` timings of `f`.
fn median_of(mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut v = Vec::new();
    for _ in 0..RUNS {
        v.push(f()?);
    }
    Ok(median(v))
}

/// Seconds `cmd` takes, start to exit.
fn whole(mut cmd: Command) -> Result<f64> {
    let t = Instant::now();
    let st = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Start-and-stop figures: whole runs of a trivial command under each tracer, and `--pid`
/// attach and detach latency on a running process.
pub struct StartStop {
    /// (row, command, median seconds).
    pub rows: Vec<(String, String, f64)>,
    /// `--pid`: seconds from start to the "attached" line.
    pub attach_s: f64,
    /// `--pid`: seconds from SIGINT to exit (report written; links released by a helper).
    pub detach_s: f64,
}

/// Measures start and stop.
pub fn start_stop(oomtrace: &Path, allocator: &str) -> Result<StartStop> {
    let mut rows = Vec::new();
    let ours = median_of(|| {
        let mut c = Command::new(oomtrace);
        c.args([
            "run",
            "--format",
            "json",
            "-o",
            "/dev/null",
            "--",
            "/bin/true",
        ]);
        whole(c)
    })?;
    rows.push((
        "oomtrace".to_owned(),
        "oomtrace run --format json -o /dev/null -- /bin/true".to_owned(),
        ours,
    ));
    let heaptrack_out = std::env::temp_dir().join("oomtrace-bench-heaptrack");
    let ht = median_of(|| {
        let mut c = Command::new("heaptrack");
        c.arg("-o").arg(&heaptrack_out).arg("/bin/true");
        whole(c)
    })?;
    rows.push(("heaptrack".into(), "heaptrack /bin/true".into(), ht));
    let script = super::tracers::bpftrace_script();
    let bt = median_of(|| {
        let mut c = Command::new("bpftrace");
        c.args(["-q", "-c", "/bin/true"])
            .arg(&script)
            .arg(allocator);
        whole(c)
    })?;
    rows.push((
        "bpftrace memleak-style".into(),
        "bpftrace -q -c /bin/true xtask/bench/memleak.bt LIBC".into(),
        bt,
    ));
    let mut attach = Vec::new();
    let mut detach = Vec::new();
    for _ in 0..RUNS {
        use std::io::BufRead as _;
        let mut target = Command::new("sleep").arg("60").spawn()?;
        // Let it load its libc first: before, there is no allocator to find.
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        let mut tracer = Command::new(oomtrace)
            .args([
                "--pid",
                &target.id().to_string(),
                "--format",
                "json",
                "-o",
                "/dev/null",
            ])
            .stderr(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(tracer.stderr.take().context("no stderr")?).read_line(&mut line)?;
        if !line.contains("attached to pid") {
            bail!("oomtrace --pid did not attach: {line}");
        }
        attach.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        Command::new("kill")
            .args(["-INT", &tracer.id().to_string()])
            .status()?;
        tracer.wait()?;
        detach.push(t.elapsed().as_secs_f64());
        let _ = target.kill();
        let _ = target.wait();
    }
    Ok(StartStop {
        rows,
        attach_s: median(attach),
        detach_s: median(detach),
    })
}

/// The start-and-stop table.
pub fn start_stop_table(md: &mut String, s: &StartStop) {
    line(
        md,
        "## Start and stop
",
    );
    line(
        md,
        &format!(
            "A trivial command, start to exit, under each tool (medians of {RUNS}); and `oomtrace \
             --pid` on a running `sleep`: from start to its \"attached\" line, and from SIGINT \
             to its exit with the report written. The probes' links are released by a helper \
             process that holds them past that exit (the kernel takes a grace period for each), \
             the allocator probes first.\n"
        ),
    );
    line(md, "| tool | command | whole run |");
    line(md, "|---|---|---:|");
    for (name, cmd, secs) in &s.rows {
        line(md, &format!("| {name} | `{cmd}` | {:.3} s |", secs));
    }
    line(
        md,
        &format!(
            "\n`oomtrace --pid` attach: **{:.3} s**; detach: **{:.3} s** (medians of {RUNS}).\n",
            s.attach_s, s.detach_s
        ),
    );
}
