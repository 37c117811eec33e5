//! What the TUI shows, as plain data: one [`Snapshot`] of the model at one moment.
//!
//! The ingestion side converts its model into a `Snapshot` (sorted or not, the view sorts), wraps
//! it in an `Arc` and publishes it on a `tokio::sync::watch` channel; the TUI only ever reads it.
//! Nothing here refers to the model's internals, so views are tested from hand-written values.
//! Times are seconds since tracing started; sizes are bytes.

use crate::model::growth::Growth;
use crate::model::hist::{LifetimeSummary, SizeSummary};
use crate::model::timeline::ProcGrowth;

/// Everything one frame of the TUI needs.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// What is traced and for how long.
    pub target: Target,
    /// Figures for the header: RSS, heap, event rate, the tracer's own cost.
    pub header: Header,
    /// Call stacks holding memory (the main table), in any order.
    pub stacks: Vec<StackRow>,
    /// Traced processes (shown only in `--all` mode).
    pub processes: Vec<ProcessRow>,
    /// OOM kills seen since tracing started, oldest first.
    pub ooms: Vec<OomRow>,
    /// GPU/driver memory.
    pub gpu: GpuPane,
    /// True under `--all`: the Processes pane exists and stacks show their pid.
    pub all_mode: bool,
}

/// The traced target.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// `"pid 1234 (redis-server)"`, `"./demo"` or `"all processes"`.
    pub label: String,
    /// Seconds since tracing started.
    pub uptime_s: f64,
    /// Set once the traced command has ended, e.g. `"exited (status 0)"`.
    pub exited: Option<String>,
}

/// Figures shown in the header.
#[derive(Clone, Debug, Default)]
pub struct Header {
    /// Resident set size of the target (summed in `--all` mode), when known.
    pub rss_bytes: Option<u64>,
    /// Heap outstanding: bytes allocated and not yet freed, over all stacks.
    pub heap_bytes: u64,
    /// Samples over time, oldest first: (seconds since start, RSS or 0 when unknown, heap).
    pub history: Vec<(f64, u64, u64)>,
    /// Events ingested per second, recently.
    pub events_per_s: f64,
    /// Events lost so far (full ring buffer or maps, stack-map collisions).
    pub lost_events: u64,
    /// The tracer's own CPU use, percent of one core.
    pub tracer_cpu_pct: f64,
    /// The tracer's own resident memory.
    pub tracer_rss_bytes: u64,
    /// BPF program time per allocator call (uprobe trap excluded), when the kernel's run-time
    /// statistics are on.
    pub bpf_ns_per_call: Option<f64>,
    /// The memory the target may use before it is OOM-killed (its cgroup's `memory.max`, else
    /// the machine's memory), when known: with a growing heap it gives a time to OOM.
    pub limit_bytes: Option<u64>,
    /// Things the user should know, one line each ("fentry unavailable: ...").
    pub notices: Vec<String>,
}

/// One call stack that holds memory.
#[derive(Clone, Debug)]
pub struct StackRow {
    /// Identifies the stack across snapshots (selection follows it when rows reorder).
    pub key: u64,
    /// The process that allocated.
    pub pid: u32,
    /// Allocation site: the function of frame 0 (the allocator's caller).
    pub function: String,
    /// `file:line` of the allocation site, when debug info has it.
    pub location: Option<String>,
    /// The object (executable or library) of the allocation site.
    pub module: Option<String>,
    /// Bytes allocated here and not yet freed.
    pub outstanding_bytes: u64,
    /// Blocks allocated here and not yet freed.
    pub outstanding_allocs: u64,
    /// Trend of `outstanding_bytes` over time.
    pub growth: Growth,
    /// Allocations per second, recently.
    pub alloc_rate: f64,
    /// Allocation sizes, when any were recorded.
    pub sizes: Option<SizeSummary>,
    /// Lifetimes of the blocks freed so far, when any were.
    pub lifetime: Option<LifetimeSummary>,
    /// Every frame, the allocation site first.
    pub frames: Vec<FrameRow>,
    /// Outstanding bytes over time, oldest first: (seconds since start, bytes).
    pub history: Vec<(f64, u64)>,
}

impl Default for StackRow {
    fn default() -> Self {
        StackRow {
            key: 0,
            pid: 0,
            function: String::new(),
            location: None,
            module: None,
            outstanding_bytes: 0,
            outstanding_allocs: 0,
            growth: Growth::unknown(),
            alloc_rate: 0.0,
            sizes: None,
            lifetime: None,
            frames: Vec::new(),
            history: Vec::new(),
        }
    }
}

/// One frame of a stack.
#[derive(Clone, Debug, Default)]
pub struct FrameRow {
    /// Function name, or the address in hex when unknown.
    pub function: String,
    /// `file:line`, when debug info has it.
    pub location: Option<String>,
    /// The object the frame lies in.
    pub module: Option<String>,
}

/// One traced process (the Processes pane of `--all` mode).
#[derive(Clone, Debug)]
pub struct ProcessRow {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// Heap outstanding in this process.
    pub outstanding_bytes: u64,
    /// Blocks outstanding in this process.
    pub outstanding_allocs: u64,
    /// Trend of `outstanding_bytes`.
    pub growth: Growth,
    /// Verdicts on its heap, RSS, threads and descriptors, as the text report gives them.
    pub vitals: ProcGrowth,
    /// Set once the process has ended, e.g. `"exited (status 1)"`.
    pub exited: Option<String>,
}

impl Default for ProcessRow {
    fn default() -> Self {
        ProcessRow {
            pid: 0,
            comm: String::new(),
            outstanding_bytes: 0,
            outstanding_allocs: 0,
            growth: Growth::unknown(),
            vitals: ProcGrowth {
                heap: Growth::unknown(),
                rss: Growth::unknown(),
                threads: Growth::unknown(),
                fds: Growth::unknown(),
            },
            exited: None,
        }
    }
}

/// One OOM kill (`oom:mark_victim`).
#[derive(Clone, Debug, Default)]
pub struct OomRow {
    /// Seconds since tracing started.
    pub time_s: f64,
    /// The victim's pid.
    pub pid: u32,
    /// The victim's command name.
    pub comm: String,
    /// The victim's anonymous RSS when it was chosen.
    pub anon_rss_bytes: u64,
    /// The memory cgroup whose limit was hit, when known.
    pub cgroup: Option<String>,
    /// Function of the victim's largest stack, when it was traced.
    pub top_function: Option<String>,
}

/// The GPU/driver memory pane.
#[derive(Clone, Debug)]
pub enum GpuPane {
    /// Nothing to show, and why in plain words ("GPU: no DRM devices found").
    Absent(String),
    /// DRM devices and their clients.
    Devices {
        /// Cards, in card order.
        devices: Vec<GpuDeviceRow>,
        /// DRM clients (one per open device file description, shared fds counted once).
        clients: Vec<GpuClientRow>,
    },
}

impl Default for GpuPane {
    fn default() -> Self {
        GpuPane::Absent("GPU: not read yet".to_string())
    }
}

/// One DRM card; sizes are `None` where the driver does not report them.
#[derive(Clone, Debug, Default)]
pub struct GpuDeviceRow {
    /// `card0`.
    pub card: String,
    /// The kernel driver (`amdgpu`, `i915`).
    pub driver: Option<String>,
    /// Bus address (`0000:c3:00.0`).
    pub pdev: Option<String>,
    /// VRAM in use.
    pub vram_used: Option<u64>,
    /// VRAM size.
    pub vram_total: Option<u64>,
    /// GTT (system RAM mapped for the GPU) in use.
    pub gtt_used: Option<u64>,
    /// GTT size.
    pub gtt_total: Option<u64>,
    /// VRAM in use that no client holds resident.
    pub unattributed_vram: Option<u64>,
    /// GTT in use that no client holds resident: on an APU, the sign of a driver leak.
    pub unattributed_gtt: Option<u64>,
}

/// One DRM client.
#[derive(Clone, Debug, Default)]
pub struct GpuClientRow {
    /// The card (or bus address) the client belongs to.
    pub device: String,
    /// The driver.
    pub driver: String,
    /// Every process holding it, ascending.
    pub pids: Vec<u32>,
    /// Their command names.
    pub comms: Vec<String>,
    /// Resident bytes per memory region (`vram`, `gtt`, `system`), in the driver's order.
    pub resident: Vec<(String, u64)>,
}
