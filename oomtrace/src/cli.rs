//! Command-line interface. The `run` / `--pid` / `--all` contract is used by other tools: keep it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::probe::placement::PlacementMode;

/// oomtrace: who holds memory, by call stack, and what grows — no recompile, no restart.
#[derive(Debug, Parser)]
#[command(
    name = "oomtrace",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Subcommand; without one, `--pid N` or `--all` attaches to running processes.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Attach options (`oomtrace --pid N`, `oomtrace --all`).
    #[command(flatten)]
    pub attach: AttachArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run CMD traced from its first allocation (children too) and report when it exits.
    Run(Box<RunArgs>),
    /// Show which allocator object and probe offsets oomtrace would use (no tracing).
    Probes(ProbesArgs),
    /// One snapshot of GPU/driver memory: DRM devices and clients, dma-bufs, KFD, meminfo.
    Gpu(GpuArgs),
    /// Trace like `run`/`--pid`/`--all` and write a recording for offline analysis.
    Record(RecordArgs),
    /// Report from a recording, at its end or at a point in time, in any export format.
    Report(ReportArgs),
    /// Per-stack change between two recordings (or two times in one: FILE@SECONDS).
    Diff(DiffArgs),
    /// Print every OOM kill on the machine as it happens.
    OomWatch(OomWatchArgs),
    /// Play a recording back in the live TUI, with time controls.
    Replay(ReplayArgs),
    /// Run as a daemon for the whole machine (or --cgroup, --comm): Prometheus metrics on
    /// --listen, heap profiles pushed to a profile store or written to a directory.
    Agent(Box<crate::agent::config::AgentArgs>),
    /// Remove what an oomtrace that was killed left behind (its memory cgroups).
    Cleanup,
    /// The OOM-resilience audit: run CMD once per allocation site, failing the k-th call from
    /// it, and report what each failure did (handled, crashed, aborted, hung, leaked).
    Sweep(SweepArgs),
}

/// Options of `oomtrace sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Which call from each site fails, one run each (comma-separated k's: 1,3,7,37).
    #[arg(long, value_name = "K,...", value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u64).range(1..))]
    pub occurrences: Vec<u64>,
    /// At most this many failing runs (the largest sites first).
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub max_runs: usize,
    /// A run still going after this long is killed and classified `hung`.
    #[arg(long, value_name = "D", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// `text`: a table by site, worst first; `json`: `{"runs": [...]}` (docs/inject.md).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the results to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Options of `oomtrace replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording.
    pub file: PathBuf,
    /// Playback speed, × recorded time (`[`/`]` change it while playing).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// TUI refresh period.
    #[arg(long, value_name = "D", default_value = "500ms", value_parser = parse_duration)]
    pub refresh: Duration,
}

/// Options of `oomtrace oom-watch`.
#[derive(Debug, Args)]
pub struct OomWatchArgs {
    /// `text`: one line per kill; `json`: one JSON object per line.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Exit after this many kills.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// Options of `oomtrace record`.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The recording to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub recording: PathBuf,
    /// Attach to this running process and its descendants instead of starting a command.
    #[arg(long, conflicts_with_all = ["all", "command"])]
    pub pid: Option<u32>,
    /// With --pid: only that process, not its children.
    #[arg(long, requires = "pid")]
    pub no_children: bool,
    /// Record every process that uses the system libc (every process on the machine then pays
    /// the probe trap on each allocator call).
    #[arg(long, conflicts_with = "command")]
    pub all: bool,
    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Format of the summary printed when recording ends.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Stacks shown in the text summary.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Tracing options.
    #[command(flatten)]
    pub tracing: TracingArgs,
    /// The command to start and record (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Formats `oomtrace report` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Human-readable.
    Text,
    /// `oomtrace.report/1` JSON, as the live report.
    Json,
    /// gzip-compressed profile.proto (go tool pprof, Pyroscope, Parca, speedscope).
    Pprof,
    /// Folded stacks, `frame;frame;frame bytes` (flame graph input).
    Folded,
    /// One row per stack.
    Csv,
}

/// Options of `oomtrace report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The recording.
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Text)]
    pub format: ExportFormat,
    /// Write to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Report the state this many seconds after the recording started.
    #[arg(long, value_name = "SECONDS")]
    pub at: Option<f64>,
    /// Only this process.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Also render a flame graph of outstanding bytes to this SVG file.
    #[arg(long, value_name = "SVG")]
    pub flamegraph: Option<PathBuf>,
    /// Stacks shown in the text report.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// How stacks are named and read.
    #[command(flatten)]
    pub names: NameArgs,
}

/// Formats `oomtrace diff` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// Human-readable, biggest growth first.
    Text,
    /// `oomtrace.diff/1` JSON.
    Json,
    /// A pprof profile of AFTER − BEFORE.
    Pprof,
}

/// Options of `oomtrace diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier recording, `FILE` or `FILE@SECONDS`.
    pub before: String,
    /// The later recording, `FILE` or `FILE@SECONDS`.
    pub after: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    pub format: DiffFormat,
    /// Write to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Stacks shown in the text diff.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

/// Options of `oomtrace gpu`.
#[derive(Debug, Args)]
pub struct GpuArgs {
    /// procfs root (a saved copy or a fixture tree stands in for /proc).
    #[arg(long, default_value = "/proc")]
    pub proc_root: PathBuf,
    /// sysfs root (a saved copy or a fixture tree stands in for /sys).
    #[arg(long, default_value = "/sys")]
    pub sys_root: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Options of `oomtrace --pid N` / `--all`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Attach to this running process and its descendants (those running now and those forked
    /// from now on); only they pay for the probes.
    #[arg(long, value_name = "PID", conflicts_with = "all")]
    pub pid: Option<u32>,
    /// With --pid: only that process, not its children.
    #[arg(long, requires = "pid")]
    pub no_children: bool,
    /// Trace every process that uses the system libc. Every process on the machine then pays
    /// the probe trap (about a microsecond) on each allocator call while oomtrace runs.
    #[arg(long)]
    pub all: bool,
    /// Stop after this long (e.g. 30s, 5m, 500ms); default: Ctrl-C or the process's exit.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Report options.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Tracing options.
    #[command(flatten)]
    pub tracing: TracingArgs,
}

/// Options of `oomtrace run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Report options.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Tracing options.
    #[command(flatten)]
    pub tracing: TracingArgs,
    /// Run CMD in a fresh memory cgroup with this limit (64M, 2G, 512MiB; binary units).
    #[arg(long, value_name = "SIZE", value_parser = crate::oom::sizes::parse_size_arg)]
    pub memory_max: Option<u64>,
    /// Write memory_log.csv, summary.json, oom_events.json, report.json, kernel_log.txt here.
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// RSS sampling interval (for memory_log.csv and the peak).
    #[arg(long, value_name = "D", default_value = "200ms", value_parser = parse_duration)]
    pub sample_interval: Duration,
    /// Fail (exit 3) if the peak (outstanding heap, or RSS if larger) exceeds SIZE.
    #[arg(long, value_name = "SIZE", value_parser = crate::oom::sizes::parse_size_arg)]
    pub budget: Option<u64>,
    /// Warn when the peak reaches this share of the budget.
    #[arg(long, value_name = "PCT", default_value = "80%", value_parser = crate::oom::sizes::parse_percent, requires = "budget")]
    pub warn_at: f64,
    /// Fail chosen allocator calls (`--fail-*`).
    #[command(flatten)]
    pub fail: FailArgs,
    /// Fail (exit 3) when more than SIZE leaked by the time CMD exits (definitely and
    /// indirectly lost, as memcheck tells them; see --leak-kinds), naming the stacks.
    #[arg(long, value_name = "SIZE", value_parser = crate::oom::sizes::parse_limit_arg)]
    pub max_leaked: Option<u64>,
    /// Which leak kinds count against --max-leaked: definite, indirect, possible, reachable
    /// (comma-separated) or all.
    #[arg(long, value_name = "KINDS", default_value = "definite,indirect", value_parser = crate::leaks::gate::KindSet::parse)]
    pub leak_kinds: crate::leaks::gate::KindSet,
    /// Excuse the stacks a rule of FILE matches (`function GLOB` or `module GLOB`, one a line,
    /// `#` comments); the report lists what each rule excused.
    #[arg(long, value_name = "FILE")]
    pub suppressions: Option<PathBuf>,
    /// Fail (exit 3) when any stack, or a process's heap, RSS, threads or descriptors, is
    /// growing at the end.
    #[arg(long)]
    pub expect_no_growth: bool,
    /// For `cargo xtask bench` only: attach empty programs on the allocator functions and offsets
    /// a real run would probe, and nothing else (the bare probe floor). The report stays empty.
    #[arg(long, hide = true)]
    pub probe_floor: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `run --fail-*`: make chosen allocator calls fail, as they do when memory runs out. The
/// criteria combine (all must hold); the report lists each failure with its stack and what
/// followed.
#[derive(Debug, Args, Clone, Default)]
pub struct FailArgs {
    /// Fail calls whose stack has a frame in a function matching GLOB (`*`, `?`; the name as
    /// reports show it, or the symbol). Repeatable: any of them.
    #[arg(long = "fail-site", value_name = "GLOB")]
    pub sites: Vec<String>,
    /// As --fail-site, but only the allocation site counts: the first frame outside the
    /// allocator's wrappers (what `oomtrace sweep` fails). Repeatable.
    #[arg(long = "fail-at-site", value_name = "GLOB", conflicts_with = "sites")]
    pub at_sites: Vec<String>,
    /// Only the Nth call that meets the other criteria (1: the first).
    #[arg(long = "fail-nth", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub nth: Option<u64>,
    /// Calls requesting a size in RANGE: `64`, `1K-1M`, `4096-`, `-128` (bytes; K, M, G are
    /// binary units).
    #[arg(long = "fail-size", value_name = "RANGE", value_parser = crate::inject::parse_size_range)]
    pub size: Option<crate::inject::SizeRange>,
    /// Each call that meets the other criteria with probability P (0 < P ≤ 1).
    #[arg(long = "fail-rate", value_name = "P", value_parser = crate::inject::parse_probability)]
    pub rate: Option<f64>,
    /// The seed of --fail-rate's draws (default: a fresh one, printed so the run can be
    /// repeated).
    #[arg(long = "fail-seed", value_name = "S", requires = "rate")]
    pub seed: Option<u64>,
    /// Fail every call while the process's outstanding heap bytes plus the request would pass
    /// SIZE: an allocator-level memory cap (64M, 2G).
    #[arg(long = "fail-after", value_name = "SIZE", value_parser = crate::oom::sizes::parse_size_arg)]
    pub after: Option<u64>,
}

impl FailArgs {
    /// What they ask for (`None` when no --fail-* was given).
    pub fn spec(&self) -> Option<crate::inject::FailSpec> {
        let spec = crate::inject::FailSpec {
            sites: self.sites.clone(),
            at_sites: self.at_sites.clone(),
            nth: self.nth,
            size: self.size,
            rate: self.rate,
            seed: self.seed.unwrap_or_else(crate::inject::fresh_seed),
            after: self.after,
        };
        spec.armed().then_some(spec)
    }
}

/// Options of `oomtrace probes`.
#[derive(Debug, Args)]
pub struct ProbesArgs {
    /// Inspect the allocator of this running process.
    #[arg(long, conflicts_with = "binary")]
    pub pid: Option<u32>,
    /// Inspect the allocator this program would use (default: the system libc).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Tracing options.
    #[command(flatten)]
    pub tracing: TracingArgs,
}

/// Where and how the report is written.
#[derive(Debug, Args, Clone)]
pub struct OutputArgs {
    /// Report format (without it, on a terminal, the live TUI opens).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// TUI refresh period.
    #[arg(long, value_name = "D", default_value = "1s", value_parser = parse_duration)]
    pub refresh: Duration,
    /// Write the report to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Stacks shown in the text report.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

/// Knobs of the kernel side.
#[derive(Debug, Args, Clone)]
pub struct TracingArgs {
    /// Probe placement: `auto` decodes prologues to avoid single-stepping; `entry` probes offset 0.
    #[arg(long, value_enum, default_value_t = Placement::Auto, hide = true)]
    pub placement: Placement,
    /// Ring buffer size between kernel and oomtrace, in KiB (a power of two, ≥ 4). Bigger absorbs
    /// longer bursts; events that do not fit are counted as lost.
    #[arg(long, value_name = "KIB", default_value_t = 16384, value_parser = parse_ring_kib)]
    pub ring_buffer_kib: u32,
    /// Period of the time series behind growth detection (e.g. 1s, 500ms).
    #[arg(long, value_name = "D", default_value = "1s", value_parser = parse_duration)]
    pub tick: Duration,
    /// `exact`: every allocator call. `sample[=BYTES]`: byte-sampled unbiased estimates, one
    /// sample per ~BYTES allocated (default 512K), far cheaper. `growth`: no allocator probes;
    /// page faults attribute resident-memory (RSS) growth to stacks, at tracepoint cost.
    #[arg(long, value_name = "MODE", default_value = "exact", value_parser = crate::mode::Mode::parse)]
    pub mode: crate::mode::Mode,
    /// Also trace kernel allocations (pages, slab, vmalloc; DRM/TTM buffers where the kernel
    /// allows) made in the traced processes' context, by kernel stack.
    #[arg(long)]
    pub kernel: bool,
    /// oomtrace's own memory limit (e.g. 512M, 2G): past it, oomtrace stops tracing, writes
    /// what it has and says why, rather than grow. Default: an eighth of the machine's memory.
    #[arg(long, value_name = "SIZE", value_parser = crate::oom::sizes::parse_size_arg)]
    pub self_max: Option<u64>,
    /// Frames per stack, the allocation call site included (2 to 64). Deeper stacks are cut
    /// there and marked `truncated`.
    #[arg(long, value_name = "N", default_value_t = oomtrace_common::DEFAULT_STACK_DEPTH,
          value_parser = clap::value_parser!(u64).range(2..=64))]
    pub stack_depth: u64,
    /// Python frames read per stack in Python processes (0 to 64; 0: none), spliced into the
    /// native frames where the interpreter's eval loop ran them. Deeper chains are cut there and
    /// marked `python_truncated`.
    #[arg(long, value_name = "N", default_value_t = oomtrace_common::python::DEFAULT_PYTHON_DEPTH,
          value_parser = clap::value_parser!(u64).range(0..=64))]
    pub python_depth: u64,
    /// How stacks are named and read (also on `report`).
    #[command(flatten)]
    pub names: NameArgs,
}

/// How stacks are named and where their allocation site is.
#[derive(Debug, Args, Clone, Default)]
pub struct NameArgs {
    /// A function (glob: `*`, `?`) that only wraps the allocator, such as `sqlite3Malloc*` or
    /// `zmalloc`: the allocation site is the first frame outside it and the built-in wrappers
    /// (`operator new`, `__rust_alloc`, `g_malloc`, `xmalloc`...). Repeatable.
    #[arg(long = "wrapper", value_name = "GLOB")]
    pub wrappers: Vec<String>,
    /// Also look for debug files here, by build id (`.build-id/xx/rest.debug`, `xx/rest.debug`
    /// or `<build id>.debug`). Repeatable.
    #[arg(long = "debug-dir", value_name = "DIR")]
    pub debug_dirs: Vec<PathBuf>,
}

impl NameArgs {
    /// Makes the wrappers and debug directories the process-wide ones.
    pub fn apply(&self) {
        crate::report::site::set_extra_wrappers(self.wrappers.clone());
        crate::symbols::debug_dirs::set_extra(self.debug_dirs.clone());
    }
}

/// Ring sizes must be a power-of-two number of pages.
fn parse_ring_kib(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid ring buffer size {s:?} (KiB, e.g. 16384)"))?;
    if v < 4 || !v.is_power_of_two() || v > 1 << 21 {
        return Err(format!(
            "ring buffer size {v} KiB must be a power of two between 4 and 2097152"
        ));
    }
    Ok(v)
}

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable.
    Text,
    /// `oomtrace.report/1` JSON.
    Json,
}

/// Probe placement policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Placement {
    /// First equivalent emulated instruction.
    Auto,
    /// Offset 0.
    Entry,
}

impl From<Placement> for PlacementMode {
    fn from(p: Placement) -> Self {
        match p {
            Placement::Auto => PlacementMode::Auto,
            Placement::Entry => PlacementMode::Entry,
        }
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h`, or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 30s, 5m, 500ms)"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn run_takes_the_command_after_dashes() {
        let cli =
            Cli::try_parse_from(["oomtrace", "run", "--format", "json", "--", "ls", "-l"]).unwrap();
        let Some(Command::Run(run)) = cli.command else {
            panic!()
        };
        assert_eq!(
            run.command,
            vec![OsString::from("ls"), OsString::from("-l")]
        );
        assert_eq!(run.output.format, Some(Format::Json));
    }

    #[test]
    fn mode_is_accepted_everywhere_it_traces() {
        use crate::mode::Mode;
        let cli = Cli::try_parse_from(["oomtrace", "run", "--mode", "sample", "--", "ls"]).unwrap();
        let Some(Command::Run(run)) = cli.command else {
            panic!()
        };
        assert_eq!(run.tracing.mode, Mode::Sample { rate: 512 * 1024 });
        let cli = Cli::try_parse_from(["oomtrace", "--pid", "1", "--mode", "growth"]).unwrap();
        assert_eq!(cli.attach.tracing.mode, Mode::Growth);
        let cli =
            Cli::try_parse_from(["oomtrace", "record", "-o", "f", "--mode=sample=1M", "--all"])
                .unwrap();
        let Some(Command::Record(rec)) = cli.command else {
            panic!()
        };
        assert_eq!(rec.tracing.mode, Mode::Sample { rate: 1 << 20 });
        let cli = Cli::try_parse_from(["oomtrace", "run", "--", "ls"]).unwrap();
        let Some(Command::Run(run)) = cli.command else {
            panic!()
        };
        assert_eq!(run.tracing.mode, Mode::Exact);
        assert!(Cli::try_parse_from(["oomtrace", "run", "--mode", "fast", "--", "ls"]).is_err());
    }

    #[test]
    fn gate_options() {
        let cli = Cli::try_parse_from([
            "oomtrace",
            "run",
            "--max-leaked",
            "1K",
            "--leak-kinds",
            "all",
            "--suppressions",
            "s.txt",
            "--expect-no-growth",
            "--",
            "ls",
        ])
        .unwrap();
        let Some(Command::Run(run)) = cli.command else {
            panic!()
        };
        assert_eq!(run.max_leaked, Some(1024));
        let zero = Cli::try_parse_from(["oomtrace", "run", "--max-leaked", "0", "--", "ls"]);
        assert!(matches!(zero.unwrap().command, Some(Command::Run(r)) if r.max_leaked == Some(0)));
        assert_eq!(run.leak_kinds, crate::leaks::gate::KindSet([true; 4]));
        assert!(run.expect_no_growth);
        let cli = Cli::try_parse_from(["oomtrace", "run", "--", "ls"]).unwrap();
        let Some(Command::Run(run)) = cli.command else {
            panic!()
        };
        assert_eq!(run.leak_kinds, crate::leaks::gate::KindSet::default());
        assert!(Cli::try_parse_from(["oomtrace", "run", "--leak-kinds", "x", "--", "ls"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["oomtrace", "cleanup"])
                .unwrap()
                .command,
            Some(Command::Cleanup)
        ));
    }

    #[test]
    fn pid_and_all_conflict() {
        assert!(Cli::try_parse_from(["oomtrace", "--pid", "1", "--all"]).is_err());
    }
}
