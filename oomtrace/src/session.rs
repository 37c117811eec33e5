//! A tracing session: preflight, load and attach, start or attach to the target, then one loop
//! that drains the ring buffer into the model until the target is done or a signal arrives.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};

use crate::launch::{self, ChildStatus};
use crate::model::{ExitStatus, Hint, Model, has_call_site};
use crate::probe::placement::PlacementMode;
use crate::probe::{DropCounts, ProbeConfig, Probes, preflight, target};
use crate::report::{Losses, Report, StackSource};
use crate::source::live::RingReader;
use crate::symbols::Symbolizer;
use oomtrace_common::EventKind;

/// What to trace.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start this command (argv[0] first) and follow its children.
    Run(Vec<OsString>),
    /// Attach to a running process and the children it forks.
    Pid(u32),
    /// Every process using the system libc.
    All,
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
}

/// Why the session stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The command (and its children) or the attached process exited.
    TargetExited,
    /// `--duration` elapsed.
    Duration,
    /// SIGINT/SIGTERM.
    Signal(i32),
}

/// What a finished session hands to the report writers.
pub struct Outcome {
    /// The report.
    pub report: Report,
    /// Why tracing stopped.
    pub stop: StopReason,
    /// The command's own status (`run` only).
    pub child: Option<ChildStatus>,
    /// The attached probes: dropping them detaches, which takes the kernel ~2 s, so callers
    /// write the report first and drop this last.
    pub probes: Probes,
}

struct KernelStacks<'a>(&'a Probes);

impl StackSource for KernelStacks<'_> {
    fn walk(&self, stack_id: u32) -> Option<Vec<u64>> {
        self.0.stack(stack_id)
    }
}

/// Runs a whole session.
pub async fn trace(opts: Options) -> Result<Outcome> {
    preflight::check()?;
    let (allocator, exe) = match &opts.target {
        Target::Run(argv) => {
            let exe = target::resolve_command(&argv[0])?;
            (target::allocator_of_program(&exe)?, Some(exe))
        }
        Target::Pid(pid) if *pid == std::process::id() => {
            anyhow::bail!(
                "pid {pid} is oomtrace itself, which never traces itself: give another pid"
            )
        }
        Target::Pid(pid) => (target::allocator_of_pid(*pid)?, None),
        Target::All => (target::system_libc()?, None),
    };
    let trace_all = matches!(opts.target, Target::All);
    let mut probes = Probes::load(ProbeConfig {
        trace_all,
        follow_forks: true,
        placement: opts.placement,
        ring_bytes: opts.ring_bytes,
    })?;
    probes.attach_tracepoints()?;
    probes.attach_allocator(&allocator)?;
    let reader = RingReader::new(probes.take_ring()?);
    // SAFETY: RingReader owns the ring map's fd, which stays open and unchanged for its lifetime.
    let ring = unsafe { AsyncFd::register(reader) }
        .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e}"))?;
    let mut session = Session {
        probes,
        ring,
        model: Model::new(),
        symbols: Symbolizer::new(),
        trace_all,
        exes: HashSet::new(),
    };

    let started = Instant::now();
    let mut child_rx = None;
    let mut root = None;
    match &opts.target {
        Target::Run(argv) => {
            let exe = exe.expect("resolved above");
            let held = launch::spawn_held(&exe, argv)?;
            let pid = held.pid;
            session.probes.trace_pid(pid)?;
            held.release(&exe)?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let _ = tx.send(launch::wait(pid));
            });
            child_rx = Some(rx);
            root = Some(pid);
        }
        Target::Pid(pid) => {
            session.probes.trace_pid(*pid)?;
            let comm = read_comm(*pid);
            eprintln!(
                "oomtrace: attached to pid {pid} ({comm}), probing {}; Ctrl-C to stop and report",
                allocator.display()
            );
            session.model.process_mut(*pid).comm = comm;
            session.symbols.read_maps(*pid, 0);
            root = Some(*pid);
        }
        Target::All => {
            // Processes already running: their maps now, before any of them can exit unread.
            for pid in running_pids() {
                session.symbols.read_maps(pid, 0);
            }
            eprintln!(
                "oomtrace: tracing every process that uses {}; Ctrl-C to stop and report",
                allocator.display()
            );
        }
    }

    let (stop, child) = session.run_loop(&opts, root, child_rx, started).await?;
    session.drain();
    let drops = session.probes.drops().unwrap_or_default();
    if std::env::var_os("OOMTRACE_DEBUG").is_some() {
        eprintln!(
            "debug: {} events applied, drops {drops:?}, stop {stop:?}",
            session.model.events
        );
    }
    if let (Some(pid), Some(status)) = (root, child) {
        session
            .model
            .process_mut(pid)
            .set_exit_status(match status {
                ChildStatus::Exited(code) => ExitStatus {
                    code: Some(code),
                    signal: None,
                },
                ChildStatus::Signaled(sig) => ExitStatus {
                    code: None,
                    signal: Some(sig),
                },
            });
    }
    let losses = losses(drops, session.ring.get_ref().malformed);
    let report = Report::build(
        &session.model,
        &KernelStacks(&session.probes),
        &mut session.symbols,
        started.elapsed().as_secs_f64(),
        losses,
    );
    Ok(Outcome {
        report,
        stop,
        child,
        probes: session.probes,
    })
}

fn losses(d: DropCounts, malformed: u64) -> Losses {
    Losses {
        lost_events: d.lost_events + malformed,
        stack_collisions: d.stack_collisions,
    }
}

struct Session {
    probes: Probes,
    ring: AsyncFd<RingReader>,
    model: Model,
    symbols: Symbolizer,
    trace_all: bool,
    /// Executables whose allocator was already resolved.
    exes: HashSet<PathBuf>,
}

impl Session {
    async fn run_loop(
        &mut self,
        opts: &Options,
        root: Option<u32>,
        mut child_rx: Option<tokio::sync::oneshot::Receiver<Result<ChildStatus>>>,
        started: Instant,
    ) -> Result<(StopReason, Option<ChildStatus>)> {
        let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        // The kernel side wakes us only past a fill threshold; the tick bounds latency.
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let deadline = opts.duration.map(|d| started + d);
        let mut child: Option<ChildStatus> = None;
        let mut last_alive_check = Instant::now();
        loop {
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    let mut guard = guard.context("ring buffer poll failed")?;
                    guard.clear_ready();
                    self.drain();
                }
                _ = tick.tick() => self.drain(),
                _ = sigint.recv() => return Ok((StopReason::Signal(libc::SIGINT), child)),
                _ = sigterm.recv() => {
                    if let (Target::Run(_), Some(pid)) = (&opts.target, root) && child.is_none() {
                        // Do not leave the command running untraced behind us.
                        // SAFETY: signalling our own child.
                        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                    }
                    return Ok((StopReason::Signal(libc::SIGTERM), child));
                }
                status = async { child_rx.as_mut().expect("guarded").await }, if child_rx.is_some() && child.is_none() => {
                    child = Some(status.context("waiter thread vanished")??);
                    self.drain();
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok((StopReason::Duration, child));
            }
            match (&opts.target, root) {
                (Target::Run(_), _) if child.is_some() => {
                    // The root's exit event precedes waitpid's return; children may outlive it.
                    self.drain();
                    if self.model.live_pids().is_empty() {
                        return Ok((StopReason::TargetExited, child));
                    }
                    if last_alive_check.elapsed() > Duration::from_millis(200) {
                        last_alive_check = Instant::now();
                        self.forget_vanished();
                    }
                }
                (Target::Pid(_), Some(pid)) => {
                    let exited = self.model.process(pid).is_some_and(|p| p.exit.is_some());
                    if exited || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                        self.drain();
                        return Ok((StopReason::TargetExited, child));
                    }
                }
                _ => {}
            }
        }
    }

    /// Processes whose exit we will never see (fork event seen, process already gone).
    fn forget_vanished(&mut self) {
        for pid in self.model.live_pids() {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                self.drain();
                let p = self.model.process_mut(pid);
                if p.exit.is_none() {
                    p.set_exit_status(ExitStatus::default());
                }
            }
        }
    }

    /// Applies every queued event to the model.
    fn drain(&mut self) {
        let Self {
            ring,
            model,
            symbols,
            probes,
            trace_all,
            exes,
        } = self;
        let reader = ring.get_mut();
        let debug = std::env::var_os("OOMTRACE_DEBUG_EVENTS").is_some();
        let mut execs = Vec::new();
        while let Some(ev) = reader.next_event() {
            if debug {
                eprintln!(
                    "ev kind={} fn={} tgid={} tid={} addr={:#x} size={} site={:#x} ts={}",
                    ev.kind, ev.alloc_fn, ev.tgid, ev.tid, ev.addr, ev.size, ev.call_site, ev.ts_ns
                );
            }
            let hint = model.apply(&ev);
            if EventKind::from_u16(ev.kind).is_some_and(has_call_site) {
                let generation = model.process(ev.tgid).map_or(0, |p| p.generation);
                symbols.observe(ev.tgid, generation, ev.call_site);
            }
            if let Hint::NewProcess(pid) = hint {
                let comm = read_comm(pid);
                if !comm.is_empty() {
                    model.process_mut(pid).comm = comm;
                }
            }
            if matches!(EventKind::from_u16(ev.kind), Some(EventKind::Exec)) && !*trace_all {
                execs.push(ev.tgid);
            }
            if let Hint::Forked(parent, child) = hint {
                let generation = model.process(parent).map_or(0, |p| p.generation);
                symbols.inherit(parent, generation, child);
            }
        }
        // After the batch: reading new processes' maps comes first (they may exit any moment);
        // resolving an exec'd program's allocator takes milliseconds.
        for pid in execs {
            // The new image may bring its own allocator (jemalloc, say): probe it too.
            attach_new_allocator(probes, exes, pid);
        }
    }
}

/// A child that exec'd a program with its own allocator (jemalloc, say) gets it probed too.
fn attach_new_allocator(probes: &mut Probes, seen: &mut HashSet<PathBuf>, pid: u32) {
    // At exec only the executable and the dynamic linker are mapped: resolve from the ELF.
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return;
    };
    if !seen.insert(exe.clone()) {
        return;
    }
    if let Ok(object) = target::allocator_of_program(&exe)
        && let Err(e) = probes.attach_allocator(&object)
    {
        eprintln!(
            "oomtrace: warning: cannot probe {} for pid {pid}: {e:#}",
            object.display()
        );
    }
}

fn running_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&p| p != me)
        .collect()
}

fn read_comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The probe table oomtrace would use, for `oomtrace probes`.
pub fn describe_probes(
    pid: Option<u32>,
    binary: Option<PathBuf>,
    mode: PlacementMode,
) -> Result<String> {
    let object = match (pid, binary) {
        (Some(pid), _) => target::allocator_of_pid(pid)?,
        (None, Some(bin)) => {
            target::allocator_of_program(&target::resolve_command(bin.as_os_str())?)?
        }
        (None, None) => target::system_libc()?,
    };
    let mut out = format!("allocator object: {}\n", object.display());
    for p in crate::probe::planned_probes(&object, mode)? {
        out.push_str(&format!(
            "{:<28} +{:<4} {}\n",
            p.function,
            p.offset,
            if p.emulated {
                "emulated"
            } else {
                "single-stepped"
            }
        ));
    }
    Ok(out)
}
