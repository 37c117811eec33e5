//! `oomtrace agent`'s configuration: defaults, then a TOML file (`--config FILE`), then flags;
//! every key of the file is also a flag (`push_interval` is `--push-interval`).
//! `--print-config` prints the result as TOML, which reads back as the same configuration.
//!
//! Durations are written `500ms`, `30s`, `5m`; sizes `256K`, `512M`, `1G` (binary units).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::mode::Mode;

/// The agent's flags: each key of the file, plus where the file is and what to do with it.
#[derive(Debug, Args, Clone, Default)]
pub struct AgentArgs {
    /// Read the configuration from this TOML file (flags given here win over it). SIGHUP
    /// reads it again.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// `/metrics` listens here [default: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// `growth` (default: no allocator probes, page faults by stack) or `sample[=BYTES]`
    /// (allocator probes, byte-sampled; only with --cgroup or --comm).
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// Trace this cgroup subtree (a directory under /sys/fs/cgroup) instead of the whole
    /// machine. Repeatable.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroup: Vec<PathBuf>,
    /// Trace processes with this command name (`/proc/PID/comm`). Repeatable.
    #[arg(long = "comm", value_name = "NAME")]
    pub comm: Vec<String>,
    /// Period of the time series behind growth detection [default: 1s].
    #[arg(long, value_name = "D")]
    pub tick: Option<String>,
    /// How often the metrics are computed anew [default: 5s].
    #[arg(long, value_name = "D")]
    pub refresh: Option<String>,
    /// Allocation sites exported per process [default: 10].
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Sites holding less than this are not exported [default: 256K].
    #[arg(long, value_name = "SIZE")]
    pub min_site_bytes: Option<String>,
    /// Processes kept [default: 2048].
    #[arg(long, value_name = "N")]
    pub max_processes: Option<usize>,
    /// Stacks kept per process; later ones fold into one [default: 256].
    #[arg(long, value_name = "N")]
    pub max_stacks_per_process: Option<usize>,
    /// Stacks with a growth series, over all processes [default: 4096].
    #[arg(long, value_name = "N")]
    pub max_series: Option<usize>,
    /// Resident pages (growth mode) or live blocks (sample mode) tracked [default: 1048576].
    #[arg(long, value_name = "N")]
    pub max_blocks: Option<usize>,
    /// oomtrace's own memory limit: past it, the agent stops and exits 1 [default: 512M].
    #[arg(long, value_name = "SIZE")]
    pub self_max: Option<String>,
    /// Ring buffer between kernel and agent, KiB (a power of two) [default: 16384].
    #[arg(long, value_name = "KIB")]
    pub ring_buffer_kib: Option<u32>,
    /// Frames per stack (2 to 64) [default: 32].
    #[arg(long, value_name = "N")]
    pub stack_depth: Option<u64>,
    /// Python frames per stack in Python processes (0 to 64; 0: none) [default: 64].
    #[arg(long, value_name = "N")]
    pub python_depth: Option<u64>,
    /// Push the heap profiles (gzip pprof) to this Pyroscope-compatible server (`http://HOST:PORT`;
    /// `/ingest` is appended unless the path ends with it).
    #[arg(long, value_name = "URL")]
    pub pprof_push: Option<String>,
    /// How often profiles are pushed and written [default: 60s].
    #[arg(long, value_name = "D")]
    pub push_interval: Option<String>,
    /// Processes pushed per interval, the largest first [default: 20].
    #[arg(long, value_name = "N")]
    pub push_processes: Option<usize>,
    /// Write each interval's profile into this directory (`oomtrace-<unix ms>.pb.gz`).
    #[arg(long, value_name = "DIR")]
    pub pprof_dir: Option<PathBuf>,
    /// The files in --pprof-dir take at most this much; the oldest go first [default: 256M].
    #[arg(long, value_name = "SIZE")]
    pub pprof_dir_max: Option<String>,
    /// The `host` label of pushed profiles [default: this machine's hostname].
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
}

/// The configuration as the file spells it (and `--print-config` prints it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `/metrics` address.
    pub listen: String,
    /// Tracing mode.
    pub mode: String,
    /// Cgroup subtrees traced (none: the whole machine).
    pub cgroup: Vec<PathBuf>,
    /// Command names traced.
    pub comm: Vec<String>,
    /// Series period.
    pub tick: String,
    /// Metrics refresh period.
    pub refresh: String,
    /// Sites per process.
    pub top_k: usize,
    /// Smallest exported site.
    pub min_site_bytes: String,
    /// Processes kept.
    pub max_processes: usize,
    /// Stacks per process.
    pub max_stacks_per_process: usize,
    /// Stack series over all processes.
    pub max_series: usize,
    /// Pages or blocks tracked.
    pub max_blocks: usize,
    /// oomtrace's own memory limit.
    pub self_max: String,
    /// Ring buffer, KiB.
    pub ring_buffer_kib: u32,
    /// Frames per stack.
    pub stack_depth: u64,
    /// Python frames per stack.
    pub python_depth: u64,
    /// Pyroscope-compatible server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pprof_push: Option<String>,
    /// Push and write period.
    pub push_interval: String,
    /// Processes pushed per interval.
    pub push_processes: usize,
    /// Profile directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pprof_dir: Option<PathBuf>,
    /// Its size bound.
    pub pprof_dir_max: String,
    /// The `host` label.
    pub hostname: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            mode: "growth".into(),
            cgroup: Vec::new(),
            comm: Vec::new(),
            tick: "1s".into(),
            refresh: "5s".into(),
            top_k: 10,
            min_site_bytes: "256K".into(),
            max_processes: 2048,
            max_stacks_per_process: 256,
            max_series: 4096,
            max_blocks: 1 << 20,
            self_max: "512M".into(),
            ring_buffer_kib: 16384,
            stack_depth: oomtrace_common::DEFAULT_STACK_DEPTH,
            python_depth: oomtrace_common::python::DEFAULT_PYTHON_DEPTH,
            pprof_push: None,
            push_interval: "60s".into(),
            push_processes: 20,
            pprof_dir: None,
            pprof_dir_max: "256M".into(),
            hostname: hostname(),
        }
    }
}

/// What tracing runs with: a change here needs a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracing {
    /// `--mode`.
    pub mode: Mode,
    /// Who is traced (empty: the whole machine).
    pub selection: crate::session::select::Selection,
    /// Series period.
    pub tick: Duration,
    /// How often the observer looks.
    pub refresh: Duration,
    /// The model's caps.
    pub limits: crate::model::Limits,
    /// oomtrace's own memory limit.
    pub self_max: u64,
    /// Ring buffer bytes.
    pub ring_bytes: u32,
    /// Frames per stack.
    pub stack_depth: u64,
    /// Python frames per stack.
    pub python_depth: u64,
}

/// What the exporters run with: changes apply at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// `/metrics` address.
    pub listen: SocketAddr,
    /// Sites per process.
    pub top_k: usize,
    /// Smallest exported site.
    pub min_site_bytes: u64,
    /// Pyroscope-compatible server.
    pub pprof_push: Option<String>,
    /// Push and write period.
    pub push_interval: Duration,
    /// Processes pushed per interval.
    pub push_processes: usize,
    /// Profile directory and its size bound.
    pub pprof_dir: Option<(PathBuf, u64)>,
    /// The `host` label.
    pub hostname: String,
}

/// A checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// As written.
    pub config: Config,
    /// Its tracing part.
    pub tracing: Tracing,
    /// Its exporting part.
    pub export: Export,
}

impl Config {
    /// Defaults, then `file`'s keys.
    pub fn from_file(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the configuration {}", file.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not valid", file.display()))
    }

    /// `self` with every flag given in `args` taking its key's place.
    pub fn with_flags(mut self, args: &AgentArgs) -> Self {
        fn set<T: Clone>(key: &mut T, flag: &Option<T>) {
            if let Some(v) = flag {
                *key = v.clone();
            }
        }
        set(&mut self.listen, &args.listen);
        set(&mut self.mode, &args.mode);
        if !args.cgroup.is_empty() {
            self.cgroup = args.cgroup.clone();
        }
        if !args.comm.is_empty() {
            self.comm = args.comm.clone();
        }
        set(&mut self.tick, &args.tick);
        set(&mut self.refresh, &args.refresh);
        set(&mut self.top_k, &args.top_k);
        set(&mut self.min_site_bytes, &args.min_site_bytes);
        set(&mut self.max_processes, &args.max_processes);
        set(
            &mut self.max_stacks_per_process,
            &args.max_stacks_per_process,
        );
        set(&mut self.max_series, &args.max_series);
        set(&mut self.max_blocks, &args.max_blocks);
        set(&mut self.self_max, &args.self_max);
        set(&mut self.ring_buffer_kib, &args.ring_buffer_kib);
        set(&mut self.stack_depth, &args.stack_depth);
        set(&mut self.python_depth, &args.python_depth);
        if args.pprof_push.is_some() {
            self.pprof_push = args.pprof_push.clone();
        }
        set(&mut self.push_interval, &args.push_interval);
        set(&mut self.push_processes, &args.push_processes);
        if args.pprof_dir.is_some() {
            self.pprof_dir = args.pprof_dir.clone();
        }
        set(&mut self.pprof_dir_max, &args.pprof_dir_max);
        set(&mut self.hostname, &args.hostname);
        self
    }

    /// The TOML text `--print-config` prints.
    pub fn to_toml(&self) -> String {
        format!(
            "# oomtrace agent: the effective configuration (defaults, then --config, then flags)\n{}",
            toml::to_string(self).expect("a configuration serializes")
        )
    }

    /// Checks every value and splits them by what a change needs.
    pub fn settings(&self) -> Result<Settings> {
        let mode = Mode::parse(&self.mode).map_err(anyhow::Error::msg)?;
        let selection = crate::session::select::Selection {
            cgroups: self.cgroup.clone(),
            comms: self.comm.clone(),
        };
        match mode {
            Mode::Growth => {}
            Mode::Sample { .. } if !selection.is_empty() => {}
            Mode::Sample { .. } => bail!(
                "mode {:?} probes the allocator of every process it traces: give --cgroup or \
                 --comm (the whole machine runs in growth mode)",
                self.mode
            ),
            Mode::Exact => bail!(
                "mode exact is for one process at a time (`oomtrace run`, `--pid`): the agent \
                 runs growth or sample"
            ),
        }
        for cg in &self.cgroup {
            if !cg.join("cgroup.procs").is_file() {
                bail!(
                    "cgroup {}: not a cgroup directory (no cgroup.procs in it)",
                    cg.display()
                );
            }
        }
        let positive = |what: &str, v: usize| -> Result<usize> {
            if v == 0 {
                bail!("{what} must be at least 1");
            }
            Ok(v)
        };
        let limits = crate::model::Limits {
            processes: positive("max_processes", self.max_processes)?,
            stacks_per_process: positive("max_stacks_per_process", self.max_stacks_per_process)?
                .min(crate::model::process::MAX_STACKS_PER_PROCESS),
            stack_series: positive("max_series", self.max_series)?,
            tracked_blocks: positive("max_blocks", self.max_blocks)?,
        };
        if !(4..=1 << 21).contains(&self.ring_buffer_kib) || !self.ring_buffer_kib.is_power_of_two()
        {
            bail!(
                "ring_buffer_kib {} must be a power of two between 4 and 2097152",
                self.ring_buffer_kib
            );
        }
        if !(2..=64).contains(&self.stack_depth) {
            bail!("stack_depth {} must be between 2 and 64", self.stack_depth);
        }
        if self.python_depth > 64 {
            bail!(
                "python_depth {} must be between 0 and 64",
                self.python_depth
            );
        }
        let tracing = Tracing {
            mode,
            selection,
            tick: duration("tick", &self.tick)?,
            refresh: duration("refresh", &self.refresh)?,
            limits,
            self_max: size("self_max", &self.self_max)?,
            ring_bytes: self.ring_buffer_kib * 1024,
            stack_depth: self.stack_depth,
            python_depth: self.python_depth,
        };
        if let Some(url) = &self.pprof_push {
            super::push::Endpoint::parse(url)?;
        }
        let export = Export {
            listen: self
                .listen
                .parse()
                .with_context(|| format!("listen {:?} is not an address:port", self.listen))?,
            top_k: positive("top_k", self.top_k)?,
            min_site_bytes: size("min_site_bytes", &self.min_site_bytes)?,
            pprof_push: self.pprof_push.clone(),
            push_interval: duration("push_interval", &self.push_interval)?,
            push_processes: positive("push_processes", self.push_processes)?,
            pprof_dir: match &self.pprof_dir {
                Some(dir) => Some((dir.clone(), size("pprof_dir_max", &self.pprof_dir_max)?)),
                None => None,
            },
            hostname: self.hostname.clone(),
        };
        Ok(Settings {
            config: self.clone(),
            tracing,
            export,
        })
    }
}

/// Defaults, then `args.config`, then the flags: checked.
pub fn load(args: &AgentArgs) -> Result<Settings> {
    let base = match &args.config {
        Some(file) => Config::from_file(file)?,
        None => Config::default(),
    };
    base.with_flags(args).settings()
}

fn duration(key: &str, v: &str) -> Result<Duration> {
    let d = crate::cli::parse_duration(v).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
    if d < Duration::from_millis(100) {
        bail!("{key} {v:?} is shorter than 100ms");
    }
    Ok(d)
}

fn size(key: &str, v: &str) -> Result<u64> {
    crate::oom::sizes::parse_size_arg(v).map_err(|e| anyhow::anyhow!("{key}: {e}"))
}

/// This machine's hostname (`/proc/sys/kernel/hostname`), or `localhost`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("oomtrace-agent-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let file = temp(
            "a.toml",
            "listen = \"127.0.0.1:9000\"\ntop_k = 3\nrefresh = \"2s\"\n",
        );
        let args = AgentArgs {
            config: Some(file.clone()),
            top_k: Some(7),
            ..AgentArgs::default()
        };
        let s = load(&args).unwrap();
        assert_eq!(s.export.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(s.export.top_k, 7);
        assert_eq!(s.tracing.refresh, Duration::from_secs(2));
        assert_eq!(s.tracing.tick, Duration::from_secs(1));
        assert_eq!(s.tracing.mode, Mode::Growth);
        let _ = std::fs::remove_file(file);
    }

    #[test]
    fn printed_configuration_reads_back_the_same() {
        let args = AgentArgs {
            pprof_push: Some("http://127.0.0.1:4040".into()),
            pprof_dir: Some("/tmp/p".into()),
            comm: vec!["redis-server".into()],
            mode: Some("sample=64K".into()),
            ..AgentArgs::default()
        };
        let cfg = Config::default().with_flags(&args);
        let text = cfg.to_toml();
        let file = temp("b.toml", &text);
        let back = Config::from_file(&file).unwrap();
        assert_eq!(back, cfg, "{text}");
        assert!(
            text.contains("pprof_push = \"http://127.0.0.1:4040\""),
            "{text}"
        );
        let _ = std::fs::remove_file(file);
    }

    #[test]
    fn bad_values_are_refused_with_the_key_named() {
        let bad = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.settings().unwrap_err().to_string()
        };
        assert!(bad(&|c| c.mode = "sample".into()).contains("--cgroup or --comm"));
        assert!(bad(&|c| c.mode = "exact".into()).contains("growth or sample"));
        assert!(bad(&|c| c.tick = "1x".into()).contains("tick"));
        assert!(bad(&|c| c.top_k = 0).contains("top_k"));
        assert!(bad(&|c| c.listen = "nowhere".into()).contains("listen"));
        assert!(bad(&|c| c.ring_buffer_kib = 1000).contains("ring_buffer_kib"));
        assert!(bad(&|c| c.cgroup = vec!["/nonexistent".into()]).contains("not a cgroup"));
        assert!(bad(&|c| c.pprof_push = Some("ftp://x".into())).contains("http://"));
        let unknown = temp("c.toml", "listen = \"127.0.0.1:1\"\ntop = 3\n");
        let err = format!("{:#}", Config::from_file(&unknown).unwrap_err());
        assert!(err.contains("top"), "{err}");
        let _ = std::fs::remove_file(unknown);
    }
}
