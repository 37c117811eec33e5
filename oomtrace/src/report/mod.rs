//! The report: a plain snapshot of the model with symbolized stacks, written as text or JSON.

pub mod cost;
pub mod csv;
pub mod diff;
pub mod faults;
pub mod flamegraph;
pub mod folded;
pub mod gpu;
pub mod kernel;
pub mod leaks;
pub mod pprof;
pub mod proto;
pub mod site;
pub mod text;
pub mod vitals;

use serde::Serialize;

use crate::model::growth::{Growth, GrowthConfig};
use crate::model::hist::{LifetimeSummary, SizeSummary};
use crate::model::oom::OomEvent;
use crate::model::timeline::ProcGrowth;
use crate::model::{Counts, Model, Process, StackKey, StackStats};
use crate::symbols::Frame;
pub use crate::symbols::SymbolSource;
pub use crate::units::{human_bytes, human_bytes_with};

/// Where deeper stack frames come from (the kernel's stack map live, a recording offline).
pub trait StackSource {
    /// The stack stored under `stack_id`: the return addresses above the call site, innermost
    /// first, and how the walk ended.
    fn walk(&self, stack_id: u32) -> Option<crate::unwind::UserStack>;
}

/// One model stack with its frames resolved, before identical stacks are merged.
#[derive(Clone, Debug)]
pub struct ResolvedStack {
    /// Process id.
    pub pid: u32,
    /// The model's key of the stack.
    pub key: StackKey,
    /// Its growth verdict.
    pub growth: Growth,
    /// Its allocation sizes.
    pub sizes: Option<SizeSummary>,
    /// Lifetimes of its freed blocks.
    pub lifetime_ms: Option<LifetimeSummary>,
    /// The stack's statistics.
    pub counts: Counts,
    /// `frames[0]` is the call site.
    pub frames: Vec<Frame>,
    /// How the walk above the call site ended ([`oomtrace_common::stack`] flags).
    pub walk: u64,
    /// What the leak scan at exit found among its blocks.
    pub leak: Option<leaks::StackLeak>,
    /// A direct mapping's resident bytes, once sampled.
    pub resident_bytes: Option<u64>,
}

/// Resolves the frames of every stack of the model, in model order.
pub fn resolve(
    model: &Model,
    stacks: &dyn StackSource,
    symbols: &mut dyn SymbolSource,
) -> Vec<ResolvedStack> {
    let mut out = Vec::new();
    let cfg = GrowthConfig::default();
    for p in model.processes() {
        for s in &p.stacks {
            let (frames, walk) = stack_frames_and_walk(p, s, stacks, symbols);
            out.push(ResolvedStack {
                pid: p.pid,
                key: s.key,
                growth: model.timeline.stack_growth(p.pid, &s.key, &cfg),
                sizes: s.sizes.summary(),
                lifetime_ms: s.lifetimes.as_ref().map(|h| h.summary()),
                counts: s.counts,
                frames,
                walk,
                leak: leaks::StackLeak::of(s.leak.as_deref()),
                resident_bytes: s.resident,
            });
        }
        // Crash and free stacks the faults name, resolved now while the symbols are at hand.
        let own: std::collections::HashSet<StackKey> = p.stacks.iter().map(|s| s.key).collect();
        for key in p.fault_keys().into_iter().filter(|k| !own.contains(k)) {
            let (frames, walk) = key_frames_and_walk(p, key, stacks, symbols);
            out.push(ResolvedStack {
                pid: p.pid,
                key,
                growth: Growth::unknown(),
                sizes: None,
                lifetime_ms: None,
                counts: Counts::default(),
                frames,
                walk,
                leak: None,
                resident_bytes: None,
            });
        }
    }
    out
}

/// Counters shown at the top of every report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    /// Events the kernel side could not emit, plus records that did not decode.
    pub lost_events: u64,
    /// Stack ids that could not be taken.
    pub stack_collisions: u64,
}

/// `oomtrace.report/1`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Always `oomtrace.report/1`.
    pub schema: &'static str,
    /// The tracing mode, and what the byte figures below mean in it.
    pub mode: crate::mode::ModeReport,
    /// Seconds traced.
    pub duration_s: f64,
    /// Events lost (counted, never hidden).
    pub lost_events: u64,
    /// Frees of blocks allocated before tracing began.
    pub unknown_frees: u64,
    /// Frees through another allocator than the one that allocated the block (never counted as
    /// frees: the block stays held).
    pub mismatched_frees: u64,
    /// Stacks whose deeper frames are unknown.
    pub stack_collisions: u64,
    /// Stacks cut at `--stack-depth` (each is marked `truncated`).
    pub stacks_truncated: u64,
    /// Stacks whose walk stopped before the outermost frame for another reason (each says
    /// why in its `walk`).
    pub stacks_incomplete: u64,
    /// Stacks whose Python frames were cut at `--python-depth` (each is marked
    /// `python_truncated`).
    #[serde(skip_serializing_if = "is_zero")]
    pub python_truncated: u64,
    /// Stacks whose Python frames could not all be read (each is marked `python_failed`).
    #[serde(skip_serializing_if = "is_zero")]
    pub python_failed: u64,
    /// Live sessions: the unwind tables prepared for the traced processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unwind: Option<crate::unwind::UnwindStats>,
    /// Per process, by outstanding bytes.
    pub processes: Vec<ProcessReport>,
    /// Per stack, by outstanding bytes.
    pub stacks: Vec<StackReport>,
    /// Every OOM kill seen while tracing, traced victims or not.
    pub oom_events: Vec<OomReport>,
    /// GPU and driver memory: the latest snapshot and its growth (null when never sampled).
    pub gpu: Option<gpu::GpuReport>,
    /// `--kernel`: kernel allocations by kernel stack, by peak outstanding bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_stacks: Option<Vec<kernel::KernelStackReport>>,
    /// `--kernel`, live only: what became of each DRM/TTM probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_probes: Option<Vec<crate::model::kernel::KernelProbe>>,
    /// What tracing cost (live `run` and attach sessions; absent from recordings' reports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracer_cost: Option<cost::TracerCost>,
    /// Live attach sessions: processes whose probes went in after they had started running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late_attach: Option<LateAttachReport>,
    /// Tracing stopped early because oomtrace's own memory reached `--self-max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_limit: Option<SelfLimitReport>,
    /// `run --max-leaked`/`--suppressions`/`--expect-no-growth`: the gate's verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leak_gate: Option<crate::leaks::gate::GateReport>,
}

/// oomtrace stopped tracing at its own memory limit: the report covers what came before.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SelfLimitReport {
    /// `--self-max`.
    pub limit_bytes: u64,
    /// oomtrace's resident bytes when it stopped.
    pub resident_bytes: u64,
}

/// Processes attached after they started: what they allocated before is not counted.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LateAttachReport {
    /// Processes attached when their fork event arrived, not held (`--pid` children).
    pub processes: u64,
    /// Median milliseconds from fork to probes in.
    pub median_ms: f64,
    /// Longest such delay, in milliseconds.
    pub max_ms: f64,
}

/// One OOM kill in the report.
#[derive(Clone, Debug, Serialize)]
pub struct OomReport {
    /// The victim.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
    /// Its uid.
    pub uid: u32,
    /// Its memory cgroup, when it could be read before it died.
    pub cgroup: Option<String>,
    /// Virtual size.
    pub total_vm_bytes: u64,
    /// Anonymous RSS.
    pub anon_rss_bytes: u64,
    /// File-backed RSS.
    pub file_rss_bytes: u64,
    /// Shared-memory RSS.
    pub shmem_rss_bytes: u64,
    /// Its `oom_score_adj`.
    pub oom_score_adj: i16,
    /// Seconds after tracing started.
    pub time_s: f64,
    /// The victim's largest stacks at the kill, when oomtrace traced it.
    pub top_stacks: Vec<StackReport>,
    /// The victim's RSS over time up to the kill, `[seconds, bytes]` (traced victims).
    pub rss_series: Vec<(f64, u64)>,
    /// Each top stack's outstanding bytes over time up to the kill, in `top_stacks` order.
    pub stack_series: Vec<Vec<(f64, u64)>>,
}

/// One process in the report.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessReport {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// Exit code, if it exited normally.
    pub exit_code: Option<i32>,
    /// Terminating signal, if one killed it.
    pub signal: Option<i32>,
    /// Who sent that signal (a process, or the kernel), when it was seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub killed_by: Option<crate::model::process::SignalSender>,
    /// Its statistics.
    #[serde(flatten)]
    pub counts: Counts,
    /// Growth of its heap, RSS, threads and descriptors.
    pub growth: ProcGrowth,
    /// The leak scan at its exit (`run`; null when it was not scanned).
    pub leaks: Option<leaks::LeakReport>,
    /// Injected failures, the crash and hazards (absent when it had none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faults: Option<faults::FaultsReport>,
    /// Its mapped regions: direct mappings, thread stacks, reservations.
    pub mapped: crate::model::process::Mapped,
}

/// One stack in the report.
#[derive(Clone, Debug, Serialize)]
pub struct StackReport {
    /// Process id.
    pub pid: u32,
    /// Requested bytes still allocated.
    pub outstanding_bytes: u64,
    /// Blocks still allocated.
    pub outstanding_allocs: u64,
    /// Bytes over all allocations.
    pub allocated_bytes: u64,
    /// Allocations.
    pub allocs: u64,
    /// Failed allocations.
    pub failed_allocs: u64,
    /// Growth of its outstanding bytes over time.
    pub growth: Growth,
    /// Percentiles of its allocation sizes (null before any).
    pub sizes: Option<SizeSummary>,
    /// Lifetimes of its freed blocks, ms (null when none was freed).
    pub lifetime_ms: Option<LifetimeSummary>,
    /// `frames[0]` is the allocation call site; the outermost caller is last.
    pub frames: Vec<Frame>,
    /// Index in `frames` of the allocation site: the first frame outside the allocator's
    /// wrappers ([`site`]).
    pub site: usize,
    /// The wrapper frames before the site, innermost first: `malloc` was reached via these.
    pub via: Vec<String>,
    /// How the walk ended: `complete` (it reached the outermost frame), `truncated` (at
    /// `--stack-depth`), `stopped`, `unknown_module`, `unsupported_rule` (frames may be
    /// missing), and `frame_pointers`, `signal_frame`, `trampoline_fixed` (how it got there);
    /// for Python processes, `python_truncated` (at `--python-depth`) and `python_failed`.
    pub walk: Vec<&'static str>,
    /// What the leak scan at exit found among its blocks (null when not scanned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leak: Option<leaks::StackLeak>,
    /// A direct mapping's resident bytes, once sampled (its outstanding bytes are reserved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resident_bytes: Option<u64>,
}

/// The names of the [`oomtrace_common::stack`] flags set in `status`.
pub fn walk_words(status: u64) -> Vec<&'static str> {
    use oomtrace_common::stack as st;
    [
        (st::COMPLETE, "complete"),
        (st::TRUNCATED, "truncated"),
        (st::STOPPED, "stopped"),
        (st::UNKNOWN_MODULE, "unknown_module"),
        (st::UNSUPPORTED_RULE, "unsupported_rule"),
        (st::FRAME_POINTERS, "frame_pointers"),
        (st::SIGNAL_FRAME, "signal_frame"),
        (st::TRAMPOLINE_FIXED, "trampoline_fixed"),
        (st::PYTHON_TRUNCATED, "python_truncated"),
        (st::PYTHON_FAILED, "python_failed"),
    ]
    .into_iter()
    .filter(|(bit, _)| status & bit != 0)
    .map(|(_, w)| w)
    .collect()
}

/// Whether a walk with `status` may have missed frames (not cut at the depth, not whole).
pub fn walk_incomplete(status: u64) -> bool {
    use oomtrace_common::stack as st;
    status & (st::STOPPED | st::UNKNOWN_MODULE | st::UNSUPPORTED_RULE) != 0
}

/// The site index and the "via" names of `frames`.
fn site_and_via(frames: &[Frame]) -> (usize, Vec<String>) {
    let site = site::site_index(frames);
    // Unnamed wrappers (a stripped interpreter's static functions) by address: recordings made
    // before they carried module offsets replay the same as new ones.
    let via = frames[..site]
        .iter()
        .map(|f| match (&f.function, &f.module) {
            (None, Some(m)) => format!("{m}@{:#x}", f.addr),
            _ => display_name(f),
        })
        .collect();
    (site, via)
}

/// A frame's name as a reader sees it: the function, else `module+0xoffset`, else the address.
pub fn display_name(f: &Frame) -> String {
    if let Some(name) = &f.function {
        return name.clone();
    }
    match (&f.module, f.offset) {
        (Some(m), Some(off)) => format!("{m}+{off:#x}"),
        (Some(m), None) => format!("{m}@{:#x}", f.addr),
        _ => format!("{:#x}", f.addr),
    }
}

impl Report {
    /// Builds the report from the model.
    pub fn build(
        model: &Model,
        stacks: &dyn StackSource,
        symbols: &mut dyn SymbolSource,
        start_ns: u64,
        duration_s: f64,
        losses: Losses,
    ) -> Self {
        let resolved = resolve(model, stacks, symbols);
        Self::from_resolved(model, &resolved, start_ns, duration_s, losses)
    }

    /// Builds the report from already resolved stacks.
    pub fn from_resolved(
        model: &Model,
        resolved: &[ResolvedStack],
        start_ns: u64,
        duration_s: f64,
        losses: Losses,
    ) -> Self {
        let fault_frames = faults::Frames::index(model, resolved);
        let mut processes: Vec<ProcessReport> = model
            .processes()
            .map(|p| ProcessReport {
                faults: faults::build(p, &fault_frames),
                ..process_report(model, p)
            })
            .collect();
        let fault_only = faults::fault_only_keys(model);
        processes.sort_by(|a, b| {
            b.counts
                .outstanding_bytes
                .cmp(&a.counts.outstanding_bytes)
                .then(a.pid.cmp(&b.pid))
        });
        let mut out: Vec<StackReport> = Vec::new();
        // Stacks that symbolize identically (an unrolled loop's two call instructions on one
        // line) are one stack to the reader: merge them.
        let mut seen: std::collections::HashMap<(u32, Vec<FrameIdentity>), usize> =
            Default::default();
        for r in resolved {
            if !fault_only.is_empty() && fault_only.contains(&(r.pid, r.key)) {
                continue;
            }
            let id = (
                r.pid,
                r.frames.iter().map(FrameIdentity::of).collect::<Vec<_>>(),
            );
            let c = r.counts;
            let (site, via) = site_and_via(&r.frames);
            let report = StackReport {
                pid: r.pid,
                outstanding_bytes: c.outstanding_bytes,
                outstanding_allocs: c.outstanding_allocs,
                allocated_bytes: c.allocated_bytes,
                allocs: c.allocs,
                failed_allocs: c.failed_allocs,
                growth: r.growth.clone(),
                sizes: r.sizes,
                lifetime_ms: r.lifetime_ms,
                frames: r.frames.clone(),
                site,
                via,
                walk: walk_words(r.walk),
                leak: r.leak.clone(),
                resident_bytes: r.resident_bytes,
            };
            match seen.get(&id) {
                Some(&i) => out[i].merge(&report),
                None => {
                    seen.insert(id, out.len());
                    out.push(report);
                }
            }
        }
        out.sort_by(|a, b| {
            b.outstanding_bytes
                .cmp(&a.outstanding_bytes)
                .then(b.allocated_bytes.cmp(&a.allocated_bytes))
                .then(b.failed_allocs.cmp(&a.failed_allocs))
                .then(a.pid.cmp(&b.pid))
        });
        let stacks_truncated = resolved
            .iter()
            .filter(|r| !fault_only.contains(&(r.pid, r.key)))
            .filter(|r| r.walk & oomtrace_common::stack::TRUNCATED != 0)
            .count() as u64;
        let stacks_incomplete = resolved
            .iter()
            .filter(|r| !fault_only.contains(&(r.pid, r.key)))
            .filter(|r| walk_incomplete(r.walk))
            .count() as u64;
        let with_flag = |flag: u64| {
            resolved
                .iter()
                .filter(|r| !fault_only.contains(&(r.pid, r.key)))
                .filter(|r| r.walk & flag != 0)
                .count() as u64
        };
        Self {
            schema: "oomtrace.report/1",
            mode: model.mode.report(),
            duration_s,
            lost_events: losses.lost_events + model.counters.malformed_events,
            unknown_frees: model.unknown_frees(),
            mismatched_frees: model.processes().map(|p| p.mismatched_frees).sum(),
            stack_collisions: losses.stack_collisions,
            stacks_truncated,
            stacks_incomplete,
            python_truncated: with_flag(oomtrace_common::stack::PYTHON_TRUNCATED),
            python_failed: with_flag(oomtrace_common::stack::PYTHON_FAILED),
            unwind: None,
            processes,
            stacks: out,
            oom_events: model
                .ooms
                .iter()
                .map(|o| oom_report(o, resolved, &model.timeline, start_ns))
                .collect(),
            gpu: gpu::GpuReport::build(&model.gpu),
            kernel_stacks: None,
            kernel_probes: None,
            tracer_cost: None,
            late_attach: None,
            self_limit: None,
            leak_gate: None,
        }
    }

    /// Keeps only process `pid` and its stacks.
    pub fn only_pid(mut self, pid: u32) -> Self {
        self.processes.retain(|p| p.pid == pid);
        self.stacks.retain(|s| s.pid == pid);
        if let Some(k) = &mut self.kernel_stacks {
            k.retain(|s| s.pid == pid);
        }
        self
    }

    /// The JSON text of the report.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }
}

/// What makes two frames the same to a reader: the source location, or the address if unknown.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FrameIdentity {
    Source(Option<String>, Option<String>, Option<u32>, Option<String>),
    Addr(u64),
}

impl FrameIdentity {
    fn of(f: &Frame) -> Self {
        match (&f.function, f.line) {
            (Some(_), Some(_)) => {
                Self::Source(f.function.clone(), f.file.clone(), f.line, f.module.clone())
            }
            _ => Self::Addr(f.addr),
        }
    }
}

impl StackReport {
    fn merge(&mut self, other: &StackReport) {
        use crate::model::growth::GrowthClass::Growing;
        // Two call sites of one line that both grow: their rates add up.
        if self.growth.class == Growing && other.growth.class == Growing {
            self.growth.bytes_per_s += other.growth.bytes_per_s;
            self.growth.confidence = self.growth.confidence.min(other.growth.confidence);
        } else if other.outstanding_bytes > self.outstanding_bytes {
            self.growth = other.growth.clone();
            self.sizes = other.sizes.or(self.sizes);
            self.lifetime_ms = other.lifetime_ms.or(self.lifetime_ms);
        } else {
            self.sizes = self.sizes.or(other.sizes);
            self.lifetime_ms = self.lifetime_ms.or(other.lifetime_ms);
        }
        leaks::StackLeak::merge(&mut self.leak, &other.leak);
        self.resident_bytes = match (self.resident_bytes, other.resident_bytes) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.outstanding_bytes += other.outstanding_bytes;
        self.outstanding_allocs += other.outstanding_allocs;
        self.allocated_bytes += other.allocated_bytes;
        self.allocs += other.allocs;
        self.failed_allocs += other.failed_allocs;
    }
}

/// A stack as it stood at some moment (`counts` then), with its resolved frames.
pub fn stack_at(pid: u32, key: &StackKey, c: &Counts, resolved: &[ResolvedStack]) -> StackReport {
    let r = resolved.iter().find(|r| r.pid == pid && r.key == *key);
    let frames = r.map(|r| r.frames.clone()).unwrap_or_default();
    let (site, via) = site_and_via(&frames);
    StackReport {
        pid,
        outstanding_bytes: c.outstanding_bytes,
        outstanding_allocs: c.outstanding_allocs,
        allocated_bytes: c.allocated_bytes,
        allocs: c.allocs,
        failed_allocs: c.failed_allocs,
        growth: r.map_or_else(Growth::unknown, |r| r.growth.clone()),
        sizes: r.and_then(|r| r.sizes),
        lifetime_ms: r.and_then(|r| r.lifetime_ms),
        frames,
        site,
        via,
        walk: r.map(|r| walk_words(r.walk)).unwrap_or_default(),
        leak: None,
        resident_bytes: None,
    }
}

fn oom_report(
    o: &OomEvent,
    resolved: &[ResolvedStack],
    timeline: &crate::model::timeline::Timeline,
    start_ns: u64,
) -> OomReport {
    let top_stacks = o
        .top_stacks
        .iter()
        .map(|(key, c)| stack_at(o.pid, key, c, resolved))
        .collect();
    let series = |s: &crate::model::series::Series| {
        s.points().map(|(t, v)| (t, v as u64)).collect::<Vec<_>>()
    };
    let rss_series = timeline
        .process(o.pid)
        .map(|p| series(&p.rss))
        .unwrap_or_default();
    let stack_series = o
        .top_stacks
        .iter()
        .map(|(key, _)| timeline.stack(o.pid, key).map(series).unwrap_or_default())
        .collect();
    OomReport {
        pid: o.pid,
        comm: o.comm.clone(),
        uid: o.uid,
        cgroup: o.cgroup.clone(),
        total_vm_bytes: o.total_vm_bytes,
        anon_rss_bytes: o.anon_rss_bytes,
        file_rss_bytes: o.file_rss_bytes,
        shmem_rss_bytes: o.shmem_rss_bytes,
        oom_score_adj: o.oom_score_adj,
        time_s: o.ts_ns.saturating_sub(start_ns) as f64 / 1e9,
        top_stacks,
        rss_series,
        stack_series,
    }
}

fn process_report(model: &Model, p: &Process) -> ProcessReport {
    ProcessReport {
        pid: p.pid,
        comm: p.comm.clone(),
        exit_code: p.exit.and_then(|e| e.code),
        signal: p.exit.and_then(|e| e.signal),
        killed_by: p.killed_by().cloned(),
        counts: p.totals,
        growth: model
            .timeline
            .process_growth(p.pid, &GrowthConfig::default()),
        leaks: p.leaks.as_ref().map(leaks::LeakReport::from),
        faults: None,
        mapped: p.mapped,
    }
}

/// The frames of one model stack: the call site, then the walk's frames.
pub fn stack_frames(
    p: &Process,
    s: &StackStats,
    stacks: &dyn StackSource,
    symbols: &mut dyn SymbolSource,
) -> Vec<Frame> {
    stack_frames_and_walk(p, s, stacks, symbols).0
}

/// [`stack_frames`], and how the walk ended ([`oomtrace_common::stack`] flags).
pub fn stack_frames_and_walk(
    p: &Process,
    s: &StackStats,
    stacks: &dyn StackSource,
    symbols: &mut dyn SymbolSource,
) -> (Vec<Frame>, u64) {
    key_frames_and_walk(p, s.key, stacks, symbols)
}

/// [`stack_frames_and_walk`] of any stack key of `p` (a crash's or a free's too).
pub fn key_frames_and_walk(
    p: &Process,
    key: StackKey,
    stacks: &dyn StackSource,
    symbols: &mut dyn SymbolSource,
) -> (Vec<Frame>, u64) {
    let mut addrs = vec![key.call_site];
    let mut status = 0;
    if key.stack_id >= 0
        && let Some(walk) = stacks.walk(key.stack_id as u32)
    {
        status = walk.status;
        for &a in &walk.frames {
            if addrs.len() == 1 && a == key.call_site {
                continue;
            }
            // Past a frame the unwinder could only guess (frame pointers through code with
            // neither tables nor frame pointers), stop at the first address that is not code.
            if status & oomtrace_common::stack::FRAME_POINTERS != 0
                && !symbols.is_code(p.pid, key.generation, a)
                && !symbols.is_anonymous_code(p.pid, key.generation, a)
            {
                status |= oomtrace_common::stack::STOPPED;
                break;
            }
            addrs.push(a);
        }
    }
    let frames = addrs
        .into_iter()
        .map(|a| symbols.frame(p.pid, key.generation, a))
        .collect();
    (frames, status)
}

/// For `skip_serializing_if`: a counter that is zero is left out.
fn is_zero(v: &u64) -> bool {
    *v == 0
}
