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

/// The bystander loop's median untraced and traced, for each configuration.
pub struct Row {
    name: String,
    command: String,
    untraced_ms: f64,
    traced_ms: f64,
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
            untraced_ms: median(untraced),
            traced_ms: median(traced),
        });
    }
    Ok(rows)
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
             idle `sleep`; medians. oomtrace attaches its allocator probes to the traced processes \
             only (a multi-uprobe link with the pid), so the bystander's code carries no \
             breakpoint. `--all` probes every process by nature.\n"
        ),
    );
    line(
        md,
        "| oomtrace tracing | command | untraced median | during median | vs untraced |",
    );
    line(md, "|---|---|---:|---:|---:|");
    for r in rows {
        line(
            md,
            &format!(
                "| {} | `{}` | {:.1} ms | {:.1} ms | {:.2}× |",
                r.name,
                r.command,
                r.untraced_ms,
                r.traced_ms,
                r.traced_ms / r.untraced_ms
            ),
        );
    }
    line(md, "");
}

/// The worst bystander ratio among the per-process configurations (the goal's figure).
pub fn worst_ratio(rows: &[Row]) -> f64 {
    rows.iter()
        .filter(|r| !r.name.contains("--all"))
        .map(|r| r.traced_ms / r.untraced_ms)
        .fold(0.0, f64::max)
}

/// `oomtrace run -- /bin/true`, whole run (start, trace, report, detach), median of `RUNS`.
pub fn whole_run(oomtrace: &Path) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let st = Command::new(oomtrace)
            .args([
                "run",
                "--format",
                "json",
                "-o",
                "/dev/null",
                "--",
                "/bin/true",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("oomtrace run -- /bin/true failed ({st})");
        }
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}
