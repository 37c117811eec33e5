//! The model: every traced process's tables, fed one event at a time. It never draws and never
//! touches BPF; views and reports read it.

pub mod fasthash;
pub mod gpu;
pub mod growth;
pub mod hist;
pub mod kernel;
pub mod leak;
pub mod oom;
pub mod process;
pub mod ranges;
pub mod series;
pub mod timeline;

use oomtrace_common::{EventKind, MemEvent};

pub use self::process::{Counts, ExitStatus, Process, StackKey, StackStats};

/// Live blocks tracked over all processes; past this, allocations are counted but not tracked
/// (their frees become unknown frees) and `blocks_untracked` says so.
pub const MAX_TRACKED_BLOCKS: usize = 16 * 1024 * 1024;
/// Processes kept; past this, the oldest exited ones are dropped (counted), and a new process
/// finds no room while every kept one lives (counted).
pub const MAX_PROCESSES: usize = 16_384;

/// The caps on what the traced world may make the model hold. A session keeps the defaults;
/// `oomtrace agent`, which runs for months over a whole machine, sets its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Processes kept ([`MAX_PROCESSES`]).
    pub processes: usize,
    /// Stacks per process; later ones fold into one overflow stack
    /// ([`process::MAX_STACKS_PER_PROCESS`]).
    pub stacks_per_process: usize,
    /// Stacks with a growth series, over all processes ([`timeline::MAX_STACK_SERIES`]).
    pub stack_series: usize,
    /// Live blocks (pages in growth mode) tracked ([`MAX_TRACKED_BLOCKS`]).
    pub tracked_blocks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            processes: MAX_PROCESSES,
            stacks_per_process: process::MAX_STACKS_PER_PROCESS,
            stack_series: timeline::MAX_STACK_SERIES,
            tracked_blocks: MAX_TRACKED_BLOCKS,
        }
    }
}

/// What the caller should do after applying an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hint {
    /// Nothing.
    None,
    /// The process exited.
    Exited(u32),
    /// A followed child appeared: (parent, child). It shares the parent's memory layout.
    Forked(u32, u32),
    /// The first event of a process oomtrace did not know yet.
    NewProcess(u32),
    /// The OOM killer chose this process (traced or not).
    Oom(u32),
}

/// Counters that are not per process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Allocations counted but not tracked because of the block cap.
    pub blocks_untracked: u64,
    /// Exited processes dropped because of the process cap.
    pub processes_dropped: u64,
    /// Records that did not decode (wrong length or kind).
    pub malformed_events: u64,
    /// OOM events dropped because of the cap.
    pub ooms_dropped: u64,
    /// Events of processes that found no room (every kept process alive at the cap).
    pub processes_refused: u64,
}

/// All traced processes.
#[derive(Debug, Default)]
pub struct Model {
    procs: fasthash::FastMap<u32, Process>,
    order: Vec<u32>,
    /// Model-level counters.
    pub counters: Counters,
    tracked_blocks: usize,
    /// Events applied.
    pub events: u64,
    /// OOM kills seen, oldest first.
    pub ooms: Vec<oom::OomEvent>,
    /// Time series for growth detection.
    pub timeline: timeline::Timeline,
    /// GPU memory samples and their series.
    pub gpu: gpu::GpuTimeline,
    /// `--kernel`: kernel allocations by kernel stack.
    pub kernel: kernel::KernelTable,
    /// Outstanding bytes over all processes now, and the most there ever were.
    outstanding: u64,
    peak_outstanding: u64,
    /// What the events measure (`--mode`): every process follows it.
    pub mode: crate::mode::Mode,
    /// Its caps.
    limits: Limits,
}

impl Model {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one GPU snapshot (the `oomtrace.gpu/1` JSON) taken at `ts_ns`.
    pub fn gpu_sample(&mut self, ts_ns: u64, snapshot: serde_json::Value) {
        let procs = &self.procs;
        self.gpu
            .observe(ts_ns, snapshot, |pid| procs.contains_key(&pid));
    }

    /// An empty model for events traced in `mode`.
    pub fn with_mode(mode: crate::mode::Mode) -> Self {
        Self::with_limits(mode, Limits::default())
    }

    /// An empty model for events traced in `mode`, holding at most what `limits` allow.
    pub fn with_limits(mode: crate::mode::Mode, limits: Limits) -> Self {
        let mut model = Self {
            mode,
            limits,
            ..Self::default()
        };
        model.timeline.max_stacks = limits.stack_series;
        model
    }

    /// Its caps.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Applies one event.
    pub fn apply(&mut self, ev: &MemEvent) -> Hint {
        let Some(kind) = EventKind::from_u16(ev.kind) else {
            self.counters.malformed_events += 1;
            return Hint::None;
        };
        self.events += 1;
        let pid = ev.tgid;
        match kind {
            EventKind::Oom => {
                if self.ooms.len() < oom::MAX_OOM_EVENTS {
                    self.ooms.push(oom::OomEvent::new(ev, self.procs.get(&pid)));
                } else {
                    self.counters.ooms_dropped += 1;
                }
                return Hint::Oom(pid);
            }
            EventKind::Tick => {
                let t = self.timeline.tick(ev.ts_ns);
                for pid in &self.order {
                    if let Some(p) = self.procs.get_mut(pid) {
                        self.timeline.sample_process(t, p);
                    }
                }
                self.timeline.sample_stacks(ev.ts_ns, self.kernel.samples());
                self.timeline.coarsen(t, ev.addr, ev.size);
                return Hint::None;
            }
            // The session's business (it disarms the child); nothing to account.
            EventKind::Unfollowed | EventKind::NewCode => return Hint::None,
            EventKind::KAlloc | EventKind::KFree => {
                // Model-wide: a kernel free is matched by address, whoever frees.
                self.kernel.apply(ev);
                return Hint::None;
            }
            EventKind::ProcSample => {
                if self.procs.contains_key(&pid) {
                    self.timeline
                        .proc_sample(pid, ev.ts_ns, ev.addr, ev.size, ev.old_addr);
                }
                return Hint::None;
            }
            EventKind::OomComm => {
                let comm = ev.packed_comm();
                let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
                if let Some(o) = self.ooms.iter_mut().rev().find(|o| o.pid == pid) {
                    o.comm = String::from_utf8_lossy(&comm[..len]).into_owned();
                }
                return Hint::None;
            }
            _ => {}
        }
        if !self.room_for(pid) {
            self.counters.processes_refused += 1;
            return Hint::None;
        }
        if kind == EventKind::Fork {
            let child = ev.aux as u32;
            if !self.room_for(child) {
                self.counters.processes_refused += 1;
                return Hint::None;
            }
            self.insert(Process::new(child, Some(pid)));
            self.process_mut(pid);
            return Hint::Forked(pid, child);
        }
        let track = self.tracked_blocks < self.limits.tracked_blocks;
        let new = !self.procs.contains_key(&pid);
        let proc = self.process_mut(pid);
        let before = proc.live_blocks();
        let (held, was_live) = (proc.totals.outstanding_bytes, proc.exit.is_none());
        proc.apply(ev, track);
        let after = proc.live_blocks();
        let (now_held, is_live) = (proc.totals.outstanding_bytes, proc.exit.is_none());
        // An exited process's table is frozen for the report, but its memory is gone.
        self.outstanding = match (was_live, is_live) {
            (true, true) => (self.outstanding + now_held).saturating_sub(held),
            (true, false) => self.outstanding.saturating_sub(held),
            (false, _) => self.outstanding,
        };
        self.peak_outstanding = self.peak_outstanding.max(self.outstanding);
        self.tracked_blocks = (self.tracked_blocks + after).saturating_sub(before);
        if !track && matches!(kind, EventKind::Alloc | EventKind::Realloc) && ev.addr != 0 {
            self.counters.blocks_untracked += 1;
        }
        match kind {
            EventKind::Exit => Hint::Exited(pid),
            _ if new => Hint::NewProcess(pid),
            _ => Hint::None,
        }
    }

    fn insert(&mut self, mut p: Process) {
        p.mode = self.mode;
        p.max_stacks = self.limits.stacks_per_process;
        let pid = p.pid;
        if self.procs.insert(pid, p).is_none() {
            self.order.push(pid);
        }
        if self.procs.len() > self.limits.processes {
            self.evict_one();
        }
    }

    /// Whether `pid` is kept or can be: at the cap, the oldest exited process makes room.
    fn room_for(&mut self, pid: u32) -> bool {
        if self.procs.contains_key(&pid) || self.procs.len() < self.limits.processes {
            return true;
        }
        self.evict_one();
        self.procs.len() < self.limits.processes
    }

    fn evict_one(&mut self) {
        let victim = self
            .order
            .iter()
            .position(|pid| self.procs.get(pid).is_some_and(|p| p.exit.is_some()));
        if let Some(i) = victim {
            let pid = self.order.remove(i);
            self.procs.remove(&pid);
            self.counters.processes_dropped += 1;
        }
    }

    /// Drops every exited process and its time series (a long-running view that has shown
    /// them keeps only the living); returns how many. Their blocks were released at exit.
    pub fn forget_exited(&mut self) -> usize {
        let gone: Vec<u32> = self
            .processes()
            .filter(|p| p.exit.is_some())
            .map(|p| p.pid)
            .collect();
        if gone.is_empty() {
            return 0;
        }
        for pid in &gone {
            if let Some(p) = self.procs.remove(pid) {
                self.tracked_blocks = self.tracked_blocks.saturating_sub(p.live_blocks());
            }
        }
        self.timeline.forget(&gone);
        let procs = &self.procs;
        self.order.retain(|pid| procs.contains_key(pid));
        gone.len()
    }

    /// The process `pid`, created if unknown (a traced process seen first by its events).
    pub fn process_mut(&mut self, pid: u32) -> &mut Process {
        if !self.procs.contains_key(&pid) {
            self.insert(Process::new(pid, None));
        }
        self.procs.get_mut(&pid).expect("just inserted")
    }

    /// The process `pid`, if known.
    pub fn process(&self, pid: u32) -> Option<&Process> {
        self.procs.get(&pid)
    }

    /// Processes in first-seen order.
    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        self.order.iter().filter_map(|pid| self.procs.get(pid))
    }

    /// Processes that have not exited.
    pub fn live_pids(&self) -> Vec<u32> {
        self.processes()
            .filter(|p| p.exit.is_none())
            .map(|p| p.pid)
            .collect()
    }

    /// Outstanding bytes over all live processes now.
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }

    /// The most bytes ever outstanding at once over all processes (exact: every event counts).
    pub fn peak_outstanding(&self) -> u64 {
        self.peak_outstanding
    }

    /// Notes the memory cgroup of the latest OOM victim `pid`.
    pub fn set_oom_cgroup(&mut self, pid: u32, cgroup: String) {
        if let Some(o) = self.ooms.iter_mut().rev().find(|o| o.pid == pid) {
            o.cgroup = Some(cgroup);
        }
    }

    /// Frees of never-seen blocks, over all processes.
    pub fn unknown_frees(&self) -> u64 {
        self.procs.values().map(|p| p.unknown_frees).sum()
    }
}

/// Whether events of this kind carry a user call site.
pub fn has_call_site(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Alloc
            | EventKind::Realloc
            | EventKind::Mmap
            | EventKind::Mremap
            | EventKind::Brk
            | EventKind::Fault
            | EventKind::Injected
            | EventKind::Crash
            | EventKind::HandlerAlloc
    )
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_limits;
