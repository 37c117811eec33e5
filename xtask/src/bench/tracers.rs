//! The configurations compared side by side: untraced, oomtrace's bare probe floors, oomtrace in
//! each mode, bpftrace with a memleak-style script, heaptrack. One table of data drives every
//! benchmark; a configuration that cannot run fails the bench, except an oomtrace mode this
//! build does not have, which becomes a "skipped" row.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::root;

/// How a workload is run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tracer {
    /// The workload alone.
    Untraced,
    /// `oomtrace run ARGS --format json -o REPORT -- CMD`.
    Oomtrace(Vec<String>),
    /// CMD started alone, then `oomtrace --pid PID ARGS --format json -o REPORT` attached to it.
    OomtraceAttach(Vec<String>),
    /// `bpftrace -q -c CMD xtask/bench/memleak.bt ALLOCATOR`.
    Bpftrace,
    /// `heaptrack -o FILE CMD` (LD_PRELOAD).
    Heaptrack,
}

/// One configuration of a table.
#[derive(Clone, Debug)]
pub struct Config {
    /// Short name, also the row's label.
    pub name: String,
    /// How it runs.
    pub tracer: Tracer,
    /// Why it does not run on this build (an oomtrace mode it lacks): the row says so.
    pub skipped: Option<String>,
    /// Which benchmark roles it plays (goals and ratios look configurations up by role).
    pub role: Role,
    /// Environment given to oomtrace (shown before the command).
    pub env: Vec<(&'static str, &'static str)>,
}

/// What a configuration stands for in ratios and goals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Untraced,
    /// Empty programs on oomtrace's own placement.
    FloorAuto,
    /// Empty programs at offset 0.
    FloorEntry,
    /// An empty uprobe-session program on oomtrace's placement that skips every return: the
    /// entry-only floor sample mode pays.
    FloorSession,
    Exact,
    /// `exact` with probes forced to offset 0.
    ExactEntry,
    Sample,
    /// `sample` with the entry and return pair (`OOMTRACE_UPROBES=multi`), not sessions.
    SampleMulti,
    Growth,
    Other,
}

impl Role {
    /// A bare probe floor: empty programs, so no allocation is seen.
    pub fn is_floor(self) -> bool {
        matches!(
            self,
            Role::FloorAuto | Role::FloorEntry | Role::FloorSession
        )
    }

    /// The floor this role's rows are compared with: sample mode (with sessions) against the
    /// entry-only session floor, `exact` at offset 0 against the floor at offset 0, every other
    /// mode against the entry+return floor at oomtrace's placement.
    pub fn floor(self) -> Option<Role> {
        match self {
            Role::Sample => Some(Role::FloorSession),
            Role::Exact | Role::SampleMulti | Role::Growth => Some(Role::FloorAuto),
            Role::ExactEntry => Some(Role::FloorEntry),
            _ => None,
        }
    }
}

/// The environment that makes sample mode use the entry and return pair instead of sessions.
const NO_SESSIONS: (&str, &str) = ("OOMTRACE_UPROBES", "multi");

/// oomtrace's modes: (row name, role, `--mode` value).
const MODES: &[(&str, Role, &str)] = &[
    ("oomtrace exact", Role::Exact, "exact"),
    ("oomtrace sample 512 KiB", Role::Sample, "sample=524288"),
    ("oomtrace growth", Role::Growth, "growth"),
];

fn config(name: &str, tracer: Tracer, role: Role) -> Config {
    Config {
        name: name.to_owned(),
        tracer,
        skipped: None,
        role,
        env: Vec::new(),
    }
}

fn oomtrace(args: &[&str]) -> Tracer {
    Tracer::Oomtrace(args.iter().map(|s| (*s).to_owned()).collect())
}

/// The last report of the configuration with `role` among `configs` (reports in the same
/// order).
pub fn report_of<'a>(
    configs: &[Config],
    reports: &'a [Option<serde_json::Value>],
    role: Role,
) -> Option<&'a serde_json::Value> {
    configs
        .iter()
        .zip(reports)
        .find(|(c, _)| c.role == role)
        .and_then(|(_, r)| r.as_ref())
}

/// oomtrace in each mode. `exact` is what oomtrace does without `--mode`: on a build without
/// the flag it runs without it; the other modes are skipped there.
/// Sample mode also runs without sessions (`OOMTRACE_UPROBES=multi`), against the
/// entry+return floor, so that what sessions save shows.
pub fn modes(oomtrace_bin: &Path) -> Result<Vec<Config>> {
    let has_mode_flag = mode_flag_known(oomtrace_bin)?;
    let mut v = Vec::new();
    for &(name, role, mode) in MODES {
        let flag = format!("--mode={mode}");
        v.push(match (has_mode_flag, role) {
            (true, _) => config(name, oomtrace(&["run", &flag]), role),
            (false, Role::Exact) => config(name, oomtrace(&["run"]), role),
            (false, _) => without_mode(config(name, oomtrace(&["run", &flag]), role), mode),
        });
        if role == Role::Sample {
            let cfg = Config {
                env: vec![NO_SESSIONS],
                ..config(
                    &format!("{name}, without sessions"),
                    oomtrace(&["run", &flag]),
                    Role::SampleMulti,
                )
            };
            v.push(if has_mode_flag {
                cfg
            } else {
                without_mode(cfg, mode)
            });
        }
    }
    Ok(v)
}

/// The entry-only floor: `--probe-floor` in sample mode attaches an empty session program
/// that skips every return (skipped on a build without `--mode`).
fn session_floor(oomtrace_bin: &Path) -> Result<Config> {
    let cfg = config(
        "bare probe floor, entry only (uprobe sessions)",
        oomtrace(&["run", "--probe-floor", "--mode=sample"]),
        Role::FloorSession,
    );
    Ok(if mode_flag_known(oomtrace_bin)? {
        cfg
    } else {
        without_mode(cfg, "sample")
    })
}

/// `cfg` marked as skipped: this oomtrace has no `--mode`.
fn without_mode(cfg: Config, mode: &str) -> Config {
    Config {
        skipped: Some(format!(
            "skipped: oomtrace has no --mode {}",
            mode.split('=').next().unwrap_or(mode)
        )),
        ..cfg
    }
}

/// Whether `oomtrace run` knows `--mode` (clap says "unexpected argument" when it does not).
fn mode_flag_known(oomtrace_bin: &Path) -> Result<bool> {
    let out = Command::new(oomtrace_bin)
        .args(["run", "--help"])
        .output()
        .with_context(|| format!("cannot run {}", oomtrace_bin.display()))?;
    if !out.status.success() {
        bail!(
            "`oomtrace run --help` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).contains("--mode"))
}

/// Configurations of the malloc/free loop: every tracer.
pub fn loop_configs(oomtrace_bin: &Path) -> Result<Vec<Config>> {
    let mut v = vec![
        config("untraced", Tracer::Untraced, Role::Untraced),
        config(
            "bare probe floor, offset 0",
            oomtrace(&["run", "--probe-floor", "--placement", "entry"]),
            Role::FloorEntry,
        ),
        config(
            "bare probe floor, oomtrace's placement",
            oomtrace(&["run", "--probe-floor"]),
            Role::FloorAuto,
        ),
        session_floor(oomtrace_bin)?,
    ];
    v.extend(modes(oomtrace_bin)?);
    v.push(config(
        "bpftrace memleak-style",
        Tracer::Bpftrace,
        Role::Other,
    ));
    v.push(config("heaptrack", Tracer::Heaptrack, Role::Other));
    Ok(v)
}

/// Configurations of the multi-threaded loop (bpftrace left out: ~40 µs per call at offset 0
/// would make it the whole bench's time).
pub fn mt_configs(oomtrace_bin: &Path) -> Result<Vec<Config>> {
    let mut v = vec![
        config("untraced", Tracer::Untraced, Role::Untraced),
        config(
            "bare probe floor, oomtrace's placement",
            oomtrace(&["run", "--probe-floor"]),
            Role::FloorAuto,
        ),
        session_floor(oomtrace_bin)?,
    ];
    v.extend(modes(oomtrace_bin)?);
    v.push(config("heaptrack", Tracer::Heaptrack, Role::Other));
    Ok(v)
}

/// Configurations of the free phase: where placement acts.
pub fn free_phase_configs() -> Vec<Config> {
    vec![
        config("untraced", Tracer::Untraced, Role::Untraced),
        config("oomtrace exact", oomtrace(&["run"]), Role::Exact),
        config(
            "oomtrace exact, probes forced to offset 0",
            oomtrace(&["run", "--placement", "entry"]),
            Role::ExactEntry,
        ),
    ]
}

/// Configurations of the redis benchmark: the multi-threaded loop's set (untraced, both floors,
/// each mode, heaptrack).
pub fn redis_configs(oomtrace_bin: &Path) -> Result<Vec<Config>> {
    let mut v = mt_configs(oomtrace_bin)?;
    // Attached to the running server, as a user pages in: it must find jemalloc by itself.
    v.push(config(
        "oomtrace exact, attached by --pid",
        Tracer::OomtraceAttach(vec!["--mode=exact".into()]),
        Role::Other,
    ));
    Ok(v)
}

/// The memleak-style bpftrace script.
pub fn bpftrace_script() -> PathBuf {
    root().join("xtask/bench/memleak.bt")
}

/// The object whose `malloc` `exe` calls, as oomtrace resolves it (bpftrace probes the same).
pub fn allocator_of(oomtrace_bin: &Path, exe: &Path) -> Result<String> {
    let out = Command::new(oomtrace_bin)
        .args(["probes", "--binary"])
        .arg(exe)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("allocator object: "))
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "`oomtrace probes --binary {}` named no allocator: {}",
                exe.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// The command that runs `argv` under `cfg`; `report` receives oomtrace's JSON report.
pub fn command(
    oomtrace_bin: &Path,
    cfg: &Config,
    argv: &[String],
    report: &Path,
    allocator: &str,
) -> Command {
    match &cfg.tracer {
        Tracer::Untraced | Tracer::OomtraceAttach(_) => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
        Tracer::Oomtrace(args) => {
            let mut c = Command::new(oomtrace_bin);
            c.envs(cfg.env.iter().copied())
                .args(args)
                .args(["--format", "json", "-o"])
                .arg(report)
                .arg("--")
                .args(argv);
            c
        }
        Tracer::Bpftrace => {
            let mut c = Command::new("bpftrace");
            c.args(["-q", "-c", &argv.join(" ")])
                .arg(bpftrace_script())
                .arg(allocator);
            c
        }
        Tracer::Heaptrack => {
            let mut c = Command::new("heaptrack");
            c.arg("-o")
                .arg(report.with_extension("heaptrack"))
                .args(argv);
            c
        }
    }
}

/// The command as the table shows it (paths shortened to names).
pub fn shown(cfg: &Config, argv: &[&str]) -> String {
    let cmd = argv.join(" ");
    match &cfg.tracer {
        Tracer::Untraced => format!("`{cmd}`"),
        Tracer::Oomtrace(args) => {
            let env: String = cfg.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
            format!("`{env}oomtrace {} -- {cmd}`", args.join(" "))
        }
        Tracer::OomtraceAttach(args) => {
            format!("`{cmd}`, then `oomtrace --pid PID {}`", args.join(" "))
        }
        Tracer::Bpftrace => format!("`bpftrace -q -c '{cmd}' xtask/bench/memleak.bt LIBC`"),
        Tracer::Heaptrack => format!("`heaptrack {cmd}`"),
    }
}
