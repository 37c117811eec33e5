//! A tracing session: preflight, load and attach, start or attach to the target, then one loop
//! ([`ingest`]) that drains the ring buffer into the model until the target is done or a
//! signal arrives; with `record`, the same events are teed into a recording.

pub mod cost;
mod exitscan;
mod ingest;
pub mod kernel;
mod mapped;
pub mod monitor;
mod plans;
mod python;
mod sampling;
pub mod select;
pub mod selfmem;
pub mod view;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use oomtrace_common::{EventKind, MemEvent, STATUS_EXITED, STATUS_SIGNALED};
use tokio::io::unix::AsyncFd;

use self::ingest::Session;
use crate::hold::{self, OnStop, Stop};
use crate::launch::ChildStatus;
use crate::model::Model;
use crate::probe::allocators;
use crate::probe::placement::PlacementMode;
use crate::probe::uprobes::Attacher;
use crate::probe::{ProbeConfig, Probes, preflight, target};
use crate::proc_tree;
use crate::record::Counters;
use crate::record::recorder::Recorder;
use crate::report::{Losses, Report, StackSource, resolve};
use crate::source::live::RingReader;
use crate::symbols::Symbolizer;

/// What to trace.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start this command (argv[0] first) and follow its children.
    Run(Vec<OsString>),
    /// Attach to a running process and the children it forks.
    Pid(u32),
    /// Every process using the system libc.
    All,
    /// The processes of some cgroup subtrees or with some command names, looked for again at
    /// every tick (`oomtrace agent --cgroup/--comm`), and their children.
    Select(select::Selection),
}

/// Session options.
#[derive(Debug, Clone)]
pub struct Options {
    /// What to trace.
    pub target: Target,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Probe placement policy.
    pub placement: PlacementMode,
    /// Ring buffer size in bytes.
    pub ring_bytes: u32,
    /// Tee the event stream into this recording.
    pub record: Option<PathBuf>,
    /// Memory cap, artifacts, sampling (`run` only).
    pub monitor: Option<monitor::MonitorOptions>,
    /// Time-series sampling period (growth detection).
    pub tick: Duration,
    /// `--mode`: exact, sample or growth.
    pub mode: crate::mode::Mode,
    /// `--kernel`: trace kernel allocations too.
    pub kernel: bool,
    /// Attach only the empty floor programs (`run --probe-floor`, for the benchmark).
    pub probe_floor: bool,
    /// `--pid`: also the process's descendants, existing and future (`--no-children`: false).
    pub children: bool,
    /// `--self-max`: oomtrace's own memory limit in bytes.
    pub self_max: u64,
    /// `--stack-depth`: frames per stack, the call site included.
    pub stack_depth: u64,
    /// `--python-depth`: Python frames per stack (0: none).
    pub python_depth: u64,
    /// `run --fail-*`: which allocator calls to fail.
    pub fail: Option<crate::inject::FailSpec>,
}

/// What the monitor of a `run` saw.
pub struct Monitored {
    /// Peak RSS of the process tree.
    pub peak_rss_bytes: u64,
    /// Peak outstanding heap.
    pub peak_heap_bytes: u64,
    /// Samples taken.
    pub samples: u64,
    /// OOM kills in CMD's cgroup (counted by the kernel), if capped.
    pub cgroup_oom_kills: Option<u64>,
    /// The stacks that held most at the heap peak.
    pub peak_stacks: Vec<crate::report::StackReport>,
    /// The kernel's OOM lines.
    pub kernel_lines: Vec<String>,
}

/// The live TUI's side of a session: where snapshots go, and how the user says stop.
pub struct UiLink {
    /// Latest snapshot for the TUI.
    pub tx: tokio::sync::watch::Sender<std::sync::Arc<crate::tui::Snapshot>>,
    /// Fires when the user quits.
    pub quit: tokio::sync::oneshot::Receiver<()>,
    /// How often to publish.
    pub refresh: Duration,
}

/// A periodic reader of the model besides the TUI (`oomtrace agent`'s exporters). It is called
/// on the ingestion loop's own task right after a drain, so it sees the model as the loop owns
/// it; what it returns is the housekeeping the loop then does.
pub trait Observer {
    /// How often to be called.
    fn every(&self) -> Duration;
    /// The caps of the model it reads (a long-running observer keeps it smaller).
    fn limits(&self) -> crate::model::Limits {
        crate::model::Limits::default()
    }
    /// Reads the model.
    fn observe(&mut self, seen: Observed<'_>) -> Upkeep;
}

/// What an [`Observer`] is shown.
pub struct Observed<'a> {
    /// The model, just drained.
    pub model: &'a Model,
    /// Deeper frames of its stacks.
    pub stacks: &'a dyn StackSource,
    /// Names of their frames.
    pub symbols: &'a mut dyn crate::report::SymbolSource,
    /// Events lost so far (kernel side, and records that did not decode).
    pub lost_events: u64,
}

/// The loop's housekeeping after an [`Observer`] has looked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Upkeep {
    /// Drop the processes that have exited, and their series (they have been shown).
    pub forget_exited: bool,
    /// The oldest OOM events it has accounted for, dropped from the model.
    pub ooms_done: usize,
    /// End the session (its configuration changed).
    pub stop: bool,
}

/// Why the session stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The user quit the TUI.
    Quit,
    /// The command (and its children) or the attached process exited.
    TargetExited,
    /// `--duration` elapsed.
    Duration,
    /// SIGINT/SIGTERM.
    Signal(i32),
    /// oomtrace's own memory reached `--self-max` (its resident bytes then).
    SelfLimit(u64),
    /// A write to the recording failed (a full disk): it was cut at its last complete chunk.
    RecordingCut,
}

/// What a finished session hands to the report writers.
pub struct Outcome {
    /// The report.
    pub report: Report,
    /// Why tracing stopped.
    pub stop: StopReason,
    /// The command's own status (`run` only).
    pub child: Option<ChildStatus>,
    /// Size of the recording written, if any.
    pub recorded_bytes: Option<u64>,
    /// What the monitor saw (`run` with a cap, artifacts or a budget).
    pub monitored: Option<Monitored>,
    /// The attached probes: dropping them detaches, which takes the kernel ~2 s, so callers
    /// write the report first and drop this last.
    pub probes: Probes,
    /// `run` stopped at `--self-max` with the command still running: its status, to wait for
    /// after the report is out (the command is not killed for oomtrace's sake).
    pub pending_child: Option<tokio::sync::oneshot::Receiver<Result<ChildStatus>>>,
}

/// The kernel's stacks, with Python frames spliced in where the session resolved them.
struct KernelStacks<'a>(&'a Probes, Option<&'a python::PythonFrames>);

impl StackSource for KernelStacks<'_> {
    fn walk(&self, stack_id: u32) -> Option<crate::unwind::UserStack> {
        if let Some(s) = self.1.and_then(|p| p.stack(stack_id)) {
            return Some(s.clone());
        }
        self.0.stored_stack(stack_id)
    }
}

/// `CLOCK_MONOTONIC` now, the clock `bpf_ktime_get_ns` reads: event timestamps are on it.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A user-side event (comm, exit status) that goes through the same path as kernel events.
fn synthetic(kind: EventKind, pid: u32) -> MemEvent {
    MemEvent {
        kind: kind as u16,
        alloc_fn: oomtrace_common::AllocFn::Syscall as u16,
        tgid: pid,
        tid: pid,
        stack_id: -1,
        ts_ns: monotonic_ns(),
        addr: 0,
        size: 0,
        old_addr: 0,
        call_site: 0,
        aux: 0,
    }
}

/// A `Comm` event for `pid`.
fn comm_event(pid: u32, comm: &str) -> MemEvent {
    let mut ev = synthetic(EventKind::Comm, pid);
    ev.pack_comm(comm.as_bytes());
    ev
}

/// A `Status` event for `pid`; `None` = ended, how is unknown.
fn status_event(pid: u32, status: Option<ChildStatus>) -> MemEvent {
    let mut ev = synthetic(EventKind::Status, pid);
    ev.aux = match status {
        Some(ChildStatus::Exited(code)) => STATUS_EXITED | u64::from(code as u32),
        Some(ChildStatus::Signaled(sig)) => STATUS_SIGNALED | u64::from(sig as u32),
        None => 0,
    };
    ev
}

/// Runs a whole session (with the TUI fed through `ui`, if given).
pub async fn trace(opts: Options, ui: Option<UiLink>) -> Result<Outcome> {
    trace_with(opts, ui, None).await
}

/// Runs a whole session read by `observer` every [`Observer::every`], until a signal, the
/// observer or `--duration` ends it.
pub async fn trace_observed(opts: Options, observer: Box<dyn Observer>) -> Result<Outcome> {
    trace_with(opts, None, Some(observer)).await
}

async fn trace_with(
    opts: Options,
    ui: Option<UiLink>,
    observer: Option<Box<dyn Observer>>,
) -> Result<Outcome> {
    let t0 = Instant::now();
    let phase = |what: &str| {
        if std::env::var_os("OOMTRACE_TIMING").is_some() {
            crate::say!(
                "timing: {what} at {:.1} ms",
                t0.elapsed().as_secs_f64() * 1e3
            );
        }
    };
    preflight::check()?;
    phase("preflight");
    let signals = ingest::Signals::handle()?;
    // Growth mode probes no allocator: a program without a dynamic one (static, Go) is fine.
    let needs_allocator = opts.mode.probes_allocator();
    let (plan, exe) = match &opts.target {
        Target::Run(argv) => {
            let exe = target::resolve_command(&argv[0])?;
            let preload = std::env::var("LD_PRELOAD").ok();
            match allocators::plan_for_program(&exe, preload.as_deref()) {
                Ok(plan) => (Some(plan), Some(exe)),
                Err(_) if !needs_allocator => (None, Some(exe)),
                Err(e) => return Err(e.into()),
            }
        }
        Target::Pid(pid) if *pid == std::process::id() => {
            anyhow::bail!(
                "pid {pid} is oomtrace itself, which never traces itself: give another pid"
            )
        }
        Target::Pid(pid) => match allocators::plan_for_pid(*pid) {
            Ok(plan) => (Some(plan), None),
            Err(e @ (target::TargetError::NoSuchProcess(_) | target::TargetError::Gone(_))) => {
                return Err(e.into());
            }
            Err(_) if !needs_allocator => (None, None),
            Err(e) => return Err(e.into()),
        },
        Target::All => (Some(allocators::plan_for_system()?), None),
        // Each selected process gets its own plan when it is adopted.
        Target::Select(_) => (None, None),
    };
    if needs_allocator
        && let Some(p) = &plan
        && p.program == allocators::Program::Go
    {
        crate::say!("oomtrace: notice: {}", p.reason);
    }
    phase("plan");
    let recorder = match &opts.record {
        Some(path) => Some(Recorder::create(
            path,
            &format!("oomtrace {:?} {}", opts.target, opts.mode.meta_token()),
        )?),
        None => None,
    };
    let monitor = opts
        .monitor
        .as_ref()
        .map(monitor::Monitor::new)
        .transpose()?;
    let trace_all = matches!(opts.target, Target::All);
    let mut probes = Probes::load(ProbeConfig {
        trace_all,
        follow_forks: opts.children || !matches!(opts.target, Target::Pid(_)),
        placement: opts.placement,
        ring_bytes: opts.ring_bytes,
        mode: opts.mode,
        kernel: opts.kernel,
        floor: opts.probe_floor,
        track_blocks: opts.fail.as_ref().is_some_and(|f| f.after.is_some()),
    })?;
    phase("load");
    let unwind = if opts.probe_floor {
        None
    } else {
        let (u, notices) = probes.take_unwinder(opts.stack_depth)?;
        for n in notices {
            crate::say!("{n}");
        }
        Some(u)
    };
    let python = if opts.probe_floor || opts.python_depth == 0 {
        None
    } else {
        if let Some(n) = probes.set_python_depth(opts.python_depth)? {
            crate::say!("{n}");
        }
        Some(python::PythonFrames::new())
    };
    if opts.probe_floor {
        probes.finish_load()?;
    } else {
        probes.attach_tracepoints()?;
    }
    phase("tracepoints");
    // The allocator programs loaded in the background: a fallback there is said now.
    if let Some(n) = probes.fallback_notice() {
        crate::say!("{n}");
    }
    let kernel_mode = opts
        .kernel
        .then(|| kernel::start(&mut probes))
        .transpose()?;
    if trace_all && let Some(p) = &plan {
        probes.attach_plan(None, p)?;
    }
    let reader = RingReader::new(probes.take_ring()?);
    // SAFETY: RingReader owns the ring map's fd, which stays open and unchanged for its lifetime.
    let ring = unsafe { AsyncFd::register(reader) }
        .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e}"))?;
    let label = match &opts.target {
        Target::Run(argv) => argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        Target::Pid(pid) => format!("pid {pid} ({})", ingest::read_comm(*pid)),
        Target::All => "all processes".to_owned(),
        Target::Select(sel) => sel.describe(),
    };
    let label = crate::mode::label(label, opts.mode);
    let memory_max = opts.monitor.as_ref().and_then(|m| m.memory_max);
    let ui = ui.map(|link| ingest::Ui {
        link,
        view: view::ViewState::new(label, trace_all, monotonic_ns(), memory_max),
    });
    phase("ring");
    let (symbols, notice) = Symbolizer::with_kernel_maps();
    if let Some(n) = notice {
        crate::say!("{n}");
    }
    let limits = observer
        .as_ref()
        .map_or_else(crate::model::Limits::default, |o| o.limits());
    let mut session = Session {
        observer,
        adopted: select::Adopted::default(),
        ui,
        probes,
        ring,
        model: Model::with_limits(opts.mode, limits),
        symbols,
        recorder,
        monitor,
        trace_all,
        held: false,
        plans: plans::PlanCache::default(),
        system_libc: if trace_all {
            target::system_libc().ok().and_then(|p| file_id(&p))
        } else {
            None
        },
        mapped: mapped::MappedAllocators::default(),
        late: ingest::LateAttach::default(),
        gpu: crate::gpu::Sampler::from_env(),
        cost: cost::CostMeter::start(),
        unwind,
        sampling: sampling::Sampling::new(opts.tick, !trace_all),
        python,
    };
    session.model.kernel.enabled = opts.kernel;

    let started = Instant::now();
    let start_ns = monotonic_ns();
    let mut child_rx = None;
    let mut root = None;
    // `run` holds its processes at their end: the leak scan (exact mode, where blocks are), and
    // the last Python frames of every mode.
    let mut exit_scans = None;
    // The baseline sample (GPU included) now: once the command runs, the loop reads its events
    // first.
    session.sample();
    match &opts.target {
        Target::Run(argv) => {
            let exe = exe.expect("resolved above");
            // Every mode holds a process at its end until the ring is drained: its last
            // stacks' Python frames are read out of its memory then (the leak scan itself is
            // exact mode's alone).
            let scanner = {
                let (scanner, rx) = crate::leaks::ExitScanner::new();
                exit_scans = Some(rx);
                Some(scanner)
            };
            let watch = session.unwind.as_ref().and_then(|u| u.watch().ok());
            let on_stop = on_stop(session.probes.attacher(), scanner, watch);
            let fail = opts.fail.as_ref().filter(|f| f.armed());
            let on_signal = match fail {
                Some(spec) => {
                    let maps = session.probes.arm_injection(spec.rule())?;
                    let mut injector = crate::inject::Injector::new(maps, spec);
                    crate::say!("{}", spec.describe());
                    Some(
                        Box::new(move |tid, pid, sig| injector.on_signal(tid, pid, sig))
                            as hold::OnSignal,
                    )
                }
                None => None,
            };
            let mut spawned = hold::spawn(&exe, argv, on_stop, on_signal)?;
            let pid = spawned.pid;
            session.held = spawned.held;
            if fail.is_some() && !spawned.held {
                // SAFETY: kill on our own child, blocked before exec.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                anyhow::bail!(
                    "cannot fail allocations: the command cannot be held under ptrace ({});                      --fail-* needs it (is it already traced, or does Yama forbid ptrace?)",
                    spawned.refused.as_deref().unwrap_or("refused")
                );
            }
            if spawned.held && opts.mode == crate::mode::Mode::Exact {
                // Traced from its first instruction: a bad free is a hazard worth its site.
                session
                    .probes
                    .set_config(oomtrace_common::ConfigKey::FreeSites, 1)?;
            }
            // No unwind tables are published for it yet: until its exec it is a copy of
            // oomtrace. Its own image is published at its exec event.
            if let Some(why) = &spawned.refused {
                crate::say!(
                    "oomtrace: notice: cannot hold the command's processes at fork and exec \
                     (ptrace: {why}): children are attached when their fork is seen, and what \
                     they allocate before that is not counted"
                );
            }
            session.probes.trace_pid(pid)?;
            if let Some(p) = &plan {
                session.probes.attach_plan(Some(pid), p)?;
            }
            // The unwind tables of what the command will map, before it runs: the dynamic
            // linker maps its libraries and calls malloc long before the session could read
            // its maps, and the kernel side finds them by inode meanwhile.
            if let Some(u) = &mut session.unwind {
                let preload = std::env::var("LD_PRELOAD").ok();
                for object in allocators::program_objects(&exe, preload.as_deref()) {
                    u.prepare(&object);
                }
            }
            if let Some(m) = &mut session.monitor {
                // Joins the cgroup before exec: everything CMD runs is capped.
                m.watch(pid)?;
            }
            spawned.release(&exe)?;
            child_rx = Some(spawned.status);
            root = Some(pid);
        }
        Target::Pid(pid) => {
            let tree = if opts.children {
                proc_tree::descendants(*pid, &proc_tree::parents(std::path::Path::new("/proc")))
            } else {
                vec![*pid]
            };
            // All of them traced first, so what they fork from now on is followed.
            for &p in &tree {
                session.probes.trace_pid(p)?;
                session.sync_unwind(p);
                if let Some(py) = &mut session.python {
                    // Before its probes go in: its first traced allocation has its Python frames.
                    py.check(&mut session.probes, p, 0, false);
                }
            }
            if let Some(p) = &plan {
                session.probes.attach_plan(Some(*pid), p)?;
            }
            let mut others = 0;
            for &p in &tree[1..] {
                match allocators::plan_for_pid(p) {
                    Ok(plan) => {
                        if let Err(e) = session.probes.attach_plan(Some(p), &plan) {
                            crate::say!("oomtrace: warning: cannot attach to pid {p}: {e:#}");
                        }
                    }
                    // Gone meanwhile, or no dynamic allocator (growth mode needs none).
                    Err(target::TargetError::NoSuchProcess(_)) => continue,
                    Err(e) if needs_allocator => {
                        crate::say!("oomtrace: warning: not tracing pid {p}: {e}");
                        continue;
                    }
                    Err(_) => {}
                }
                let comm = ingest::read_comm(p);
                session.feed(&comm_event(p, &comm));
                session.symbols.read_maps(p, 0);
                others += 1;
            }
            let comm = ingest::read_comm(*pid);
            let children = match (opts.children, others) {
                (false, _) => " (not its children: --no-children)".to_owned(),
                (true, 0) => String::new(),
                (true, n) => format!(" and its {n} descendant(s)"),
            };
            // Its maps (and mapped objects) before saying it is attached: a process that exits
            // right after would otherwise keep no symbols.
            session.symbols.read_maps(*pid, 0);
            crate::say!(
                "oomtrace: attached to pid {pid} ({comm}){children}, {}; Ctrl-C to stop and report",
                crate::probe::allocators::probing(opts.mode, plan.as_ref())
            );
            session.feed(&comm_event(*pid, &comm));
            root = Some(*pid);
        }
        Target::All => {
            // Processes already running: their maps now, before any of them can exit unread;
            // and the ones whose malloc is not the system libc's get their own allocator.
            let mut own = Vec::new();
            for pid in ingest::running_pids() {
                session.symbols.read_maps(pid, 0);
                session.sync_unwind(pid);
                if !needs_allocator {
                    continue;
                }
                if let Ok(p) = allocators::plan_for_pid(pid) {
                    let p = ingest::beyond_system(p, session.system_libc);
                    if !p.objects.is_empty() && session.probes.attach_plan(Some(pid), &p).is_ok() {
                        own.push(format!("{pid} ({})", p.summary()));
                    }
                }
            }

            crate::say!(
                "oomtrace: {}; Ctrl-C to stop and report",
                crate::mode::label(
                    format!(
                        "tracing every process that uses {}",
                        plan.as_ref()
                            .and_then(|p| p.provider())
                            .map_or_else(String::new, |p| p.display().to_string())
                    ),
                    opts.mode
                )
            );
            if !own.is_empty() {
                crate::say!(
                    "oomtrace: {} process(es) allocate through more than the system libc, probed \
                     each: {}",
                    own.len(),
                    own.join("; ")
                );
            }
        }
        Target::Select(sel) => {
            let n = session.adopt(sel, needs_allocator);
            crate::say!(
                "oomtrace: {}; {n} process(es) now, more as they appear",
                crate::mode::label(format!("tracing {}", sel.describe()), opts.mode)
            );
        }
    }

    phase("started");
    let looped = session
        .run_loop(
            &opts,
            root,
            &mut child_rx,
            &mut exit_scans,
            started,
            signals,
        )
        .await;
    session.finish_exit_scans(&mut exit_scans);
    let (stop, child) = looped?;
    phase("stopped");
    if let StopReason::SelfLimit(rss) = stop {
        crate::say!(
            "oomtrace: warning: oomtrace's own memory reached {} (--self-max {}): tracing \
             stopped here, and the report covers what was traced until now",
            crate::report::human_bytes(rss),
            crate::report::human_bytes(opts.self_max)
        );
    }
    session.drain();
    session.sample();
    if let (Some(pid), Some(status)) = (root, child) {
        // waitpid's word is exact for our own child.
        session.feed(&status_event(pid, Some(status)));
    }
    let drops = session.probes.drops().unwrap_or_default();
    session.symbols.poll();
    let lost_maps = session.symbols.lost_map_records();
    if lost_maps > 0 {
        crate::say!(
            "oomtrace: warning: the kernel dropped {lost_maps} mapping record(s) (its ring was \
             full): frames of processes that exited early may show as bare addresses"
        );
    }
    for notice in session.symbols.notices() {
        crate::say!("{notice}");
    }
    for notice in session.unwind.iter().flat_map(|u| u.notices()) {
        crate::say!("{notice}");
    }
    if let Some(n) = session
        .python
        .as_ref()
        .and_then(|p| p.notice(session.symbols.python.dropped))
    {
        crate::say!("{n}");
    }
    let losses = Losses {
        lost_events: drops.lost_events + session.ring.get_ref().malformed,
        stack_collisions: drops.stack_collisions,
    };
    let duration_ns = started.elapsed().as_nanos() as u64;
    let resolved = resolve(
        &session.model,
        &KernelStacks(&session.probes, session.python.as_ref()),
        &mut session.symbols,
    );
    let mut report = Report::from_resolved(
        &session.model,
        &resolved,
        start_ns,
        duration_ns as f64 / 1e9,
        losses,
    );
    if let Some(k) = &kernel_mode {
        k.finish(&session.model, &session.probes, &mut report);
    }
    report.late_attach = session.late.report();
    if opts.record.is_none() {
        // Like the tracer's cost: a recording's report cannot know it.
        report.unwind = session.unwind.as_ref().map(|u| u.stats());
    }
    if let StopReason::SelfLimit(rss) = stop {
        report.self_limit = Some(crate::report::SelfLimitReport {
            limit_bytes: opts.self_max,
            resident_bytes: rss,
        });
    }
    if opts.record.is_none() {
        // A recording's summary must equal the report read back from it, which cannot know this.
        let lost = report.lost_events;
        report.tracer_cost = Some(session.cost.finish(
            &session.probes,
            lost,
            duration_ns as f64 / 1e9,
        ));
    }
    let monitored = match session.monitor.take() {
        Some(mut m) => {
            m.sample(&session.model)?;
            m.finish(&session.model);
            let cgroup_oom_kills = m.oom_kills();
            m.remove_cgroup()?;
            let peak_stacks = m
                .peaks
                .stacks
                .iter()
                .map(|(pid, key, counts)| crate::report::stack_at(*pid, key, counts, &resolved))
                .collect();
            Some(Monitored {
                peak_rss_bytes: m.peaks.rss_bytes,
                peak_heap_bytes: m.peaks.heap_bytes,
                samples: m.peaks.samples,
                cgroup_oom_kills,
                peak_stacks,
                kernel_lines: std::mem::take(&mut m.kernel_lines),
            })
        }
        None => None,
    };
    let recorded_bytes = match session.recorder.take() {
        Some(mut recorder) => {
            if let Some(k) = &report.kernel_stacks {
                recorder.kernel_stacks(k);
            }
            let stacks = recorded_stacks(
                &session.model,
                &KernelStacks(&session.probes, session.python.as_ref()),
            );
            let counters = Counters {
                lost_events: losses.lost_events,
                unknown_frees: report.unknown_frees,
                stack_collisions: losses.stack_collisions,
                other: Vec::new(),
            };
            let cut = recorder.is_cut();
            let bytes = recorder.finish(stacks, resolved, counters, start_ns, duration_ns)?;
            // A cut recording said so when it happened: no "written" line for it.
            (!cut).then_some(bytes)
        }
        None => None,
    };
    phase("report");
    let pending_child = match stop {
        StopReason::SelfLimit(_) | StopReason::RecordingCut if child.is_none() => {
            // Nothing more is traced; the command runs on to its own end.
            session.probes.quiesce();
            child_rx.take()
        }
        _ => None,
    };
    Ok(Outcome {
        report,
        stop,
        child,
        recorded_bytes,
        monitored,
        probes: session.probes,
        pending_child,
    })
}

/// What the holder thread does while a process of `run` waits: a new process gets its parent's
/// probes; a new program gets its own allocator probed before it runs.
fn on_stop(
    attacher: Option<Arc<Attacher>>,
    exits: Option<crate::leaks::ExitScanner>,
    unwind: Option<crate::unwind::kernel::PublishWatch>,
) -> OnStop {
    let mut cache = plans::PlanCache::default();
    Box::new(move |stop| {
        if let Stop::Exiting { pid, tid } = stop {
            if let Some(x) = &exits {
                x.at_exit(pid, tid);
            }
            return;
        }
        let Some(a) = &attacher else { return };
        match stop {
            Stop::Exiting { .. } => {}
            Stop::Forked { parent, child } => {
                if let Err(e) = a.attach_like(parent, child) {
                    crate::say!("oomtrace: warning: cannot attach to new process {child}: {e:#}");
                }
            }
            Stop::Execed { pid, former_tid } => {
                attach_exec(a, &mut cache, pid, former_tid);
                // The new image's first allocations unwind through its own tables once the
                // session has read its maps (it does at the exec event): a moment's wait.
                if let Some(w) = &unwind {
                    w.wait(pid, EXEC_PUBLISH_WAIT);
                }
            }
        }
    })
}

/// How long `run`'s hold waits at an exec for the new image's mappings to be published.
const EXEC_PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Probes the allocator of the program process `pid` exec'd (`former_tid`: the thread that
/// called exec).
fn attach_exec(a: &Attacher, cache: &mut plans::PlanCache, pid: u32, former_tid: u32) {
    if !mapped::same_mount_namespace(pid) {
        // Its files are not ours to resolve by path: its allocator is probed when
        // it maps it (the kernel's mapping records).
        a.detach(pid);
        return;
    }
    if former_tid != pid {
        // Another thread exec'd: the kernel's filter followed the old leader's
        // task, so the process gets fresh links.
        let objects = a.objects(Some(pid));
        a.detach(pid);
        for o in &objects {
            let _ = a.attach(Some(pid), o);
        }
    }
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return;
    };
    let preload = allocators::preload_of_pid(pid);
    let Some(plan) = cache.plan_of(&exe, preload.as_deref()) else {
        return;
    };
    for object in &plan.objects {
        if let Err(e) = a.attach(Some(pid), object) {
            crate::say!(
                "oomtrace: warning: cannot probe {} for pid {pid}: {e:#}",
                object.name.display()
            );
        }
    }
}

/// A file's (device, inode).
fn file_id(path: &std::path::Path) -> Option<crate::objfile::FileId> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some(crate::objfile::FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// The kernel's frames of every stack the model refers to.
fn recorded_stacks(model: &Model, stacks: &KernelStacks<'_>) -> Vec<(i32, Vec<u64>)> {
    let mut ids: Vec<i32> = model
        .processes()
        .flat_map(|p| p.stacks.iter().map(|s| s.key.stack_id))
        .filter(|&id| id >= 0)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .filter_map(|id| Some((id, stacks.walk(id as u32)?.to_words())))
        .collect()
}

/// The probe table oomtrace would use, for `oomtrace probes`.
pub fn describe_probes(
    pid: Option<u32>,
    binary: Option<PathBuf>,
    mode: PlacementMode,
) -> Result<String> {
    let plan = match (pid, binary) {
        (Some(pid), _) => allocators::plan_for_pid(pid)?,
        (None, Some(bin)) => allocators::plan_for_program(
            &target::resolve_command(bin.as_os_str())?,
            std::env::var("LD_PRELOAD").ok().as_deref(),
        )?,
        (None, None) => allocators::plan_for_system()?,
    };
    let mut out = String::new();
    if plan.objects.is_empty() {
        out.push_str("allocator object: none\n");
    }
    for o in &plan.objects {
        out.push_str(&format!("allocator object: {}\n", o.name.display()));
        let mut fams: Vec<&str> = o
            .sets
            .iter()
            .map(|&(_, f)| crate::probe::entries::family_name(f))
            .collect();
        fams.dedup();
        out.push_str(&format!("  heap: {}\n", fams.join(", ")));
        let path = o.object.path_in(pid.unwrap_or(0));
        for p in
            crate::probe::planned_probes(&path, &o.sets, mode).context("cannot plan the probes")?
        {
            let how = if p.emulated {
                "emulated"
            } else {
                "single-stepped"
            };
            out.push_str(&format!("{:<28} +{:<4} {how}\n", p.function, p.offset));
        }
    }
    out.push_str(&format!("why: {}\n", plan.reason));
    Ok(out)
}
