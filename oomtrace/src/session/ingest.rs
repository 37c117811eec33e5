//! The ingestion loop: the single owner of the model. It drains the ring buffer on wake-ups and
//! on a short tick, feeds every event to the model (and the recording), reads new processes'
//! memory maps while they live, and decides when the session is over.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use oomtrace_common::{EventKind, MemEvent};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};

use super::{Options, StopReason, Target, comm_event, status_event};
use crate::launch::ChildStatus;
use crate::model::{Hint, Model, has_call_site};
use crate::probe::Probes;
use crate::record::recorder::Recorder;
use crate::source::live::RingReader;
use crate::symbols::Symbolizer;

/// The TUI's link and the view state behind it.
pub struct Ui {
    pub link: super::UiLink,
    pub view: super::view::ViewState,
}

/// Everything the loop owns.
pub struct Session {
    /// A periodic reader besides the TUI (`oomtrace agent`).
    pub observer: Option<Box<dyn super::Observer>>,
    /// `Target::Select`: the selected processes traced already.
    pub adopted: super::select::Adopted,
    pub ui: Option<Ui>,
    pub probes: Probes,
    pub ring: AsyncFd<RingReader>,
    pub model: Model,
    pub symbols: Symbolizer,
    pub recorder: Option<Recorder>,
    pub monitor: Option<super::monitor::Monitor>,
    pub trace_all: bool,
    /// `run` holds its processes at fork and exec ([`crate::hold`]): they are attached there.
    pub held: bool,
    /// Which allocators each exec'd program uses.
    pub plans: super::plans::PlanCache,
    /// Allocators traced processes map after they started.
    pub mapped: super::mapped::MappedAllocators,
    /// `--all`: the system libc, probed in every process already; a process's own plan adds
    /// only what lies beyond it.
    pub system_libc: Option<crate::objfile::FileId>,
    /// Children attached after they started (`--pid`).
    pub late: LateAttach,
    /// GPU memory, sampled at each tick.
    pub gpu: crate::gpu::Sampler,
    /// oomtrace's own cost (events read, BPF run-time statistics).
    pub cost: super::cost::CostMeter,
    /// The stack walker's tables (none for the probe floor).
    pub unwind: Option<crate::unwind::Unwinder>,
    /// When to sample (fast while the run is young), and what was sampled.
    pub sampling: super::sampling::Sampling,
    /// Python processes and their spliced stacks (none: `--python-depth 0`).
    pub python: Option<super::python::PythonFrames>,
}

impl Session {
    /// Applies one event, kernel or synthetic, to the model and tees it into the recording.
    pub fn feed(&mut self, ev: &MemEvent) -> Hint {
        if let Some(r) = &mut self.recorder {
            r.push(ev);
        }
        self.model.apply(ev)
    }

    pub async fn run_loop(
        &mut self,
        opts: &Options,
        root: Option<u32>,
        child_rx: &mut Option<tokio::sync::oneshot::Receiver<Result<ChildStatus>>>,
        exit_scans: &mut Option<tokio::sync::mpsc::UnboundedReceiver<crate::leaks::ToModel>>,
        started: Instant,
        signals: Signals,
    ) -> Result<(StopReason, Option<ChildStatus>)> {
        let Signals {
            int: mut sigint,
            term: mut sigterm,
        } = signals;
        // The kernel side wakes us only past a fill threshold (or for a new process); the tick
        // bounds latency otherwise.
        // None fires at once: the command was just released, and its first events (and maps)
        // come before a /proc and GPU walk. The session sampled once before releasing it.
        let tick_every = Duration::from_millis(20);
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + tick_every, tick_every);
        // Fast while the run is young, every --tick after (see `sampling`).
        let mut next_sample = tokio::time::Instant::now() + self.sampling.next();
        let refresh_every = self
            .ui
            .as_ref()
            .map_or(Duration::from_secs(3600), |u| u.link.refresh);
        let mut refresh = tokio::time::interval(refresh_every);
        let observe_every = self
            .observer
            .as_ref()
            .map_or(Duration::from_secs(3600), |o| o.every());
        let mut observe =
            tokio::time::interval_at(tokio::time::Instant::now() + observe_every, observe_every);
        // Out of `self`, so the select's branches borrow disjoint things.
        let mut quit = self
            .ui
            .as_mut()
            .map(|u| std::mem::replace(&mut u.link.quit, tokio::sync::oneshot::channel().1));
        let deadline = opts.duration.map(|d| started + d);
        let mut child: Option<ChildStatus> = None;
        let mut last_alive_check = Instant::now();
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                // Events first: a process that exits before its maps are read loses its symbols.
                biased;
                guard = self.ring.readable_mut() => {
                    let mut guard = guard.context("ring buffer poll failed")?;
                    guard.clear_ready();
                    self.drain();
                }
                _ = tick.tick() => {
                    self.drain();
                    if let Some(m) = &mut self.monitor {
                        m.tick(&self.model)?;
                    }
                    if self.recorder.as_ref().is_some_and(|r| r.is_cut()) {
                        return Ok((StopReason::RecordingCut, child));
                    }
                    ticks += 1;
                    // Every 100 ms: oomtrace's own memory against --self-max.
                    if ticks.is_multiple_of(5)
                        && let Some(rss) = super::selfmem::resident_bytes()
                        && rss > opts.self_max
                    {
                        return Ok((StopReason::SelfLimit(rss), child));
                    }
                }
                _ = tokio::time::sleep_until(next_sample) => {
                    self.drain();
                    if let Target::Select(sel) = &opts.target {
                        self.adopt(sel, opts.mode.probes_allocator());
                    }
                    self.sample();
                    next_sample = tokio::time::Instant::now() + self.sampling.next();
                }
                // A process held at its exit waits for this (the leak scan).
                msg = async { exit_scans.as_mut().expect("guarded").recv().await }, if exit_scans.is_some() => {
                    match msg {
                        Some(msg) => self.exit_scan(msg),
                        None => *exit_scans = None,
                    }
                }
                _ = observe.tick(), if self.observer.is_some() => {
                    self.drain();
                    if self.observe() {
                        return Ok((StopReason::Quit, child));
                    }
                }
                _ = refresh.tick(), if self.ui.is_some() => self.publish(started, None),
                _ = async { quit.as_mut().expect("guarded").await }, if quit.is_some() => {
                    return Ok((StopReason::Quit, child));
                }
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
                        if self.ui.is_some() {
                            // Keep the final state on screen until the user quits.
                            let banner = child.map(|c| match c {
                                ChildStatus::Exited(code) => format!("exited (status {code})"),
                                ChildStatus::Signaled(sig) => {
                                    match root
                                        .and_then(|r| self.model.process(r)?.killed_by().cloned())
                                    {
                                        Some(k) => format!("killed by signal {sig} {k}"),
                                        None => format!("killed by signal {sig}"),
                                    }
                                }
                            });
                            self.sample();
                            self.publish(started, banner);
                            let quit = quit.as_mut().expect("a UI has a quit channel");
                            tokio::select! {
                                _ = quit => {}
                                _ = sigint.recv() => {}
                                _ = sigterm.recv() => {}
                            }
                        }
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

    /// Sends the TUI a fresh snapshot.
    fn publish(&mut self, started: Instant, exited: Option<String>) {
        let Some(ui) = &mut self.ui else { return };
        let lost = self.probes.drops().map(|d| d.lost_events).unwrap_or(0);
        let mut snap = ui.view.snapshot(
            &self.model,
            &super::KernelStacks(&self.probes, self.python.as_ref()),
            &mut self.symbols,
            lost,
            started.elapsed().as_secs_f64(),
            exited,
        );
        snap.header.bpf_ns_per_call = self.cost.bpf_ns_per_call(&self.probes);
        let _ = ui.link.tx.send(std::sync::Arc::new(snap));
    }

    /// The sampling tick: each live process's RSS, threads and descriptors, then `Tick`, all as
    /// events (so a recording replays to the same time series).
    pub fn sample(&mut self) {
        for pid in self.model.live_pids() {
            if let Some(s) = crate::oom::sampler::sample_pid(pid) {
                let mut ev = super::synthetic(EventKind::ProcSample, pid);
                ev.addr = s.rss_bytes;
                ev.size = s.threads;
                ev.old_addr = s.fds;
                self.feed(&ev);
            }
        }
        self.sample_coarse();
        let mut tick = super::synthetic(EventKind::Tick, 0);
        (tick.addr, tick.size) = self.sampling.tick_fields();
        self.feed(&tick);
    }

    /// One GPU snapshot into the model and the recording. A snapshot that cannot be taken at
    /// all (a root that is not a directory) is skipped: the heap figures do not depend on it.
    pub fn sample_gpu(&mut self) {
        let Ok(snap) = self.gpu.sample() else {
            return;
        };
        let value = snap.to_json();
        let ts = super::monotonic_ns();
        if let Some(r) = &mut self.recorder {
            r.gpu(ts, &value);
        }
        self.model.gpu_sample(ts, value);
    }

    /// Processes whose exit we will never see (fork event seen, process already gone).
    fn forget_vanished(&mut self) {
        for pid in self.model.live_pids() {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                self.drain();
                if self.model.process(pid).is_some_and(|p| p.exit.is_none()) {
                    self.feed(&status_event(pid, None));
                }
            }
        }
    }

    /// Applies every queued event to the model.
    pub fn drain(&mut self) {
        // A developer's aid: every decoded event on stderr.
        static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let debug = *DEBUG.get_or_init(|| std::env::var_os("OOMTRACE_DEBUG_EVENTS").is_some());
        let mut execs = Vec::new();
        self.symbols.poll();
        while let Some(ev) = self.ring.get_mut().next_event() {
            if debug {
                crate::say!(
                    "ev kind={} fn={} tgid={} tid={} addr={:#x} size={} site={:#x} stack={} old={:#x} aux={:#x} ts={}",
                    ev.kind,
                    ev.alloc_fn,
                    ev.tgid,
                    ev.tid,
                    ev.addr,
                    ev.size,
                    ev.call_site,
                    ev.stack_id,
                    ev.old_addr,
                    ev.aux,
                    ev.ts_ns
                );
            }
            let kind = EventKind::from_u16(ev.kind);
            if kind == Some(EventKind::Unfollowed) {
                // `--no-children`: the child keeps its parent's breakpoints until disarmed.
                self.probes.release(ev.tgid, ev.aux as u32);
                continue;
            }
            if kind == Some(EventKind::NewCode) {
                // The stack walker met code outside the mappings it knows: publish them anew.
                self.sync_unwind(ev.tgid);
                continue;
            }
            let hint = self.feed(&ev);
            self.cost.count(kind);
            if kind == Some(EventKind::Exec) {
                // The new image may run to its end within a millisecond: its maps now, before
                // anything slower (the allocator lookup below), so its frames still symbolize.
                let generation = self.model.process(ev.tgid).map_or(0, |p| p.generation);
                self.symbols.exec(ev.tgid, generation, ev.ts_ns);
                if let Some(u) = &mut self.unwind {
                    u.forget(ev.tgid);
                }
                self.sync_unwind(ev.tgid);
                if let Some(py) = &mut self.python {
                    // A statically linked interpreter is there already; a libpython comes later.
                    py.forget(ev.tgid);
                    py.check(&mut self.probes, ev.tgid, generation, true);
                }
            }
            if kind.is_some_and(has_call_site) {
                let generation = self.model.process(ev.tgid).map_or(0, |p| p.generation);
                if matches!(kind, Some(EventKind::Alloc | EventKind::Realloc)) {
                    self.symbols.settle(ev.tgid, generation);
                    self.settle_unwind(ev.tgid, generation);
                }
                self.symbols.observe(ev.tgid, generation, ev.call_site);
                if let Some(py) = &mut self.python
                    && ev.stack_id >= 0
                {
                    if matches!(kind, Some(EventKind::Alloc | EventKind::Realloc)) {
                        // Past the dynamic linker (whose mmaps come first): every library the
                        // program needs is mapped, a libpython included.
                        py.check(&mut self.probes, ev.tgid, generation, false);
                    }
                    py.observe(
                        &self.probes,
                        &mut self.symbols,
                        ev.tgid,
                        generation,
                        ev.stack_id,
                        ev.call_site,
                    );
                }
            }
            match hint {
                Hint::NewProcess(pid) => {
                    let comm = read_comm(pid);
                    if !comm.is_empty() {
                        self.feed(&comm_event(pid, &comm));
                    }
                }
                Hint::Forked(parent, child) => {
                    if !self.held && !self.trace_all {
                        // Not held: the child runs, uncounted, until this is done.
                        self.probes.attach_like(parent, child);
                        self.late.record(ev.ts_ns, super::monotonic_ns());
                    }
                    let generation = self.model.process(parent).map_or(0, |p| p.generation);
                    self.symbols.inherit(parent, generation, child, ev.ts_ns);
                    self.sync_unwind(child);
                    if let Some(py) = &mut self.python {
                        py.inherit(parent, child);
                    }
                }
                Hint::Exited(pid) => {
                    self.probes.forget_exited(pid);
                    if let Some(py) = &mut self.python {
                        py.forget(pid);
                    }
                    if let Some(u) = &mut self.unwind {
                        u.forget(pid);
                    }
                }
                Hint::Oom(pid) => {
                    // The victim dies in moments: its cgroup now, or never.
                    if let Some(cgroup) = crate::oom::cgroup::cgroup_of_pid(pid) {
                        self.model.set_oom_cgroup(pid, cgroup.clone());
                        if let Some(r) = &mut self.recorder {
                            r.oom_cgroup(pid, &cgroup);
                        }
                    }
                    // The memory log's row at the kill.
                    if let Some(m) = &mut self.monitor {
                        m.log_ooms(&self.model);
                    }
                }
                Hint::None => {}
            }
            if kind == Some(EventKind::Exec) && !self.held {
                execs.push(ev.tgid);
            }
        }
        // Allocator libraries traced processes mapped since (dlopen, or a program that exec'd in
        // another mount namespace).
        let new_maps = self.symbols.take_new_mappings();
        if !self.trace_all {
            for m in &new_maps {
                if self.model.process(m.pid).is_some_and(|p| p.exit.is_none()) {
                    self.mapped.consider(&self.probes, m);
                }
            }
        }
        // Their unwind tables too, before the walker meets their code (it finds a file whose
        // tables are built through the kernel's VMA until the process's maps are published).
        if let Some(py) = &mut self.python {
            for m in new_maps.iter().filter(|m| {
                m.path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("python"))
            }) {
                let generation = self.model.process(m.pid).map_or(0, |p| p.generation);
                py.check(&mut self.probes, m.pid, generation, true);
            }
        }
        let mut synced: Vec<u32> = Vec::new();
        for m in &new_maps {
            if !synced.contains(&m.pid)
                && self.model.process(m.pid).is_some_and(|p| p.exit.is_none())
            {
                synced.push(m.pid);
                self.sync_unwind(m.pid);
            }
        }
        // After the batch: reading new processes' maps comes first (they may exit any moment);
        // resolving an exec'd program's allocator takes milliseconds.
        // Growth mode probes no allocator: planning one per exec would be wasted ELF reading.
        if !self.probes.probes_allocators() {
            execs.clear();
        }
        for pid in execs {
            let generation = self.model.process(pid).map_or(0, |p| p.generation);
            // A process already gone has no /proc/PID/exe; the kernel's record still names it.
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .or_else(|| self.symbols.program(pid, generation));
            if let Some(exe) = exe {
                attach_new_allocator(&self.probes, &mut self.plans, pid, &exe, self.system_libc);
            }
        }
        if let Some(r) = &mut self.recorder {
            r.send_batch();
        }
    }
}

/// `oomtrace agent`'s hooks: a periodic observer of the model, and a selection of processes.
impl Session {
    /// Shows the model to the observer and does the housekeeping it asks for; true when it
    /// asks the session to end.
    fn observe(&mut self) -> bool {
        let Some(observer) = &mut self.observer else {
            return false;
        };
        let lost = self.probes.drops().map_or(0, |d| d.lost_events) + self.ring.get_ref().malformed;
        let upkeep = observer.observe(super::Observed {
            model: &self.model,
            stacks: &super::KernelStacks(&self.probes, self.python.as_ref()),
            symbols: &mut self.symbols,
            lost_events: lost,
        });
        if upkeep.forget_exited {
            self.model.forget_exited();
        }
        let done = upkeep.ooms_done.min(self.model.ooms.len());
        self.model.ooms.drain(..done);
        upkeep.stop
    }

    /// Traces the processes `sel` holds now that are not traced yet (each with its own
    /// allocator when the mode probes one); returns how many.
    pub fn adopt(&mut self, sel: &super::select::Selection, probe_allocator: bool) -> usize {
        let now = sel.pids(Path::new("/proc"));
        let fresh = self.adopted.newcomers(&now);
        for &pid in &fresh {
            if self.model.process(pid).is_some_and(|p| p.exit.is_none()) {
                // A child of a selected process: followed since its fork.
                continue;
            }
            if let Err(e) = self.probes.trace_pid(pid) {
                crate::say!("oomtrace: warning: cannot trace pid {pid}: {e:#}");
                continue;
            }
            self.sync_unwind(pid);
            self.symbols.read_maps(pid, 0);
            if probe_allocator {
                match crate::probe::allocators::plan_for_pid(pid) {
                    Ok(plan) => {
                        if let Err(e) = self.probes.attach_plan(Some(pid), &plan) {
                            crate::say!("oomtrace: warning: cannot attach to pid {pid}: {e:#}");
                        }
                    }
                    Err(crate::probe::target::TargetError::NoSuchProcess(_)) => continue,
                    Err(e) => {
                        crate::say!("oomtrace: warning: not probing pid {pid}: {e}");
                    }
                }
            }
            let comm = read_comm(pid);
            if !comm.is_empty() {
                self.feed(&comm_event(pid, &comm));
            }
        }
        fresh.len()
    }
}

impl Session {
    /// Publishes `pid`'s current mappings to the stack walker.
    pub fn sync_unwind(&mut self, pid: u32) {
        if let Some(u) = &mut self.unwind {
            u.sync(pid);
        }
    }

    /// At an image's first allocator calls its libraries are mapped: publish them (once per
    /// image; later libraries come with the walker's own notices).
    fn settle_unwind(&mut self, pid: u32, generation: u32) {
        if let Some(u) = &mut self.unwind
            && u.settle(pid, generation)
        {
            u.sync(pid);
        }
    }
}

/// A process that exec'd a program with its own allocator (jemalloc, say) gets it probed too.
fn attach_new_allocator(
    probes: &Probes,
    plans: &mut super::plans::PlanCache,
    pid: u32,
    exe: &Path,
    system_libc: Option<crate::objfile::FileId>,
) {
    if !super::mapped::same_mount_namespace(pid) {
        // Another filesystem view: probed when it maps its allocator (the kernel's records).
        probes.forget_pid(pid);
        return;
    }
    // At exec only the executable and the dynamic linker are mapped: decide from the ELF.
    let preload = crate::probe::allocators::preload_of_pid(pid);
    let Some(plan) = plans.plan_of(exe, preload.as_deref()) else {
        return;
    };
    let plan = beyond_system(plan, system_libc);
    for object in &plan.objects {
        match probes.attach_allocator(Some(pid), object) {
            // Probing took a while, and the program ran meanwhile: say so rather than let a
            // smaller figure pass for the whole truth.
            Ok(attached) if !attached.is_empty() => crate::say!(
                "oomtrace: warning: pid {pid} ({}) allocates through {}, probed only after it \
                 started: its allocations up to this moment are not counted",
                exe.display(),
                object.name.display()
            ),
            Ok(_) => {}
            Err(e) => crate::say!(
                "oomtrace: warning: cannot probe {} for pid {pid}: {e:#}",
                object.name.display()
            ),
        }
    }
}

/// `plan` less the system libc (`--all` probes it in every process already: twice would count
/// twice).
pub fn beyond_system(
    mut plan: crate::probe::allocators::AllocatorPlan,
    system_libc: Option<crate::objfile::FileId>,
) -> crate::probe::allocators::AllocatorPlan {
    use std::os::unix::fs::MetadataExt as _;
    let Some(sys) = system_libc else {
        return plan;
    };
    plan.objects.retain(|o| {
        let path = match &o.object {
            crate::probe::allocators::ObjectRef::Path(p) => p.clone(),
            // The mapped file's identity, seen through any process that maps it: the name's.
            crate::probe::allocators::ObjectRef::Mapping { .. } => o.name.clone(),
        };
        std::fs::metadata(&path).map_or(true, |m| (m.dev(), m.ino()) != (sys.dev, sys.ino))
    });
    plan
}

/// SIGINT and SIGTERM, handled from before the session says it is tracing: a Ctrl-C right after
/// that line must end the session with its report, not kill oomtrace.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts handling both.
    pub fn handle() -> Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }
}

/// Children attached when their fork event arrived: how many, and how late.
#[derive(Default)]
pub struct LateAttach {
    /// Delays kept for the median (at most [`LATE_SAMPLES`]).
    delays_ns: Vec<u64>,
    count: u64,
    max_ns: u64,
}

/// Delays kept for the median.
const LATE_SAMPLES: usize = 4096;

impl LateAttach {
    /// A child forked at `forked_ns` had its probes in at `attached_ns`.
    pub fn record(&mut self, forked_ns: u64, attached_ns: u64) {
        let d = attached_ns.saturating_sub(forked_ns);
        self.count += 1;
        self.max_ns = self.max_ns.max(d);
        if self.delays_ns.len() < LATE_SAMPLES {
            self.delays_ns.push(d);
        }
    }

    /// The report's figures; `None` when no process was attached late.
    pub fn report(&self) -> Option<crate::report::LateAttachReport> {
        if self.count == 0 {
            return None;
        }
        let mut d = self.delays_ns.clone();
        d.sort_unstable();
        Some(crate::report::LateAttachReport {
            processes: self.count,
            median_ms: d[d.len() / 2] as f64 / 1e6,
            max_ms: self.max_ns as f64 / 1e6,
        })
    }
}

/// Every pid in /proc but ours.
pub fn running_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&p| p != me)
        .collect()
}

/// `/proc/PID/comm`, or empty.
pub fn read_comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
