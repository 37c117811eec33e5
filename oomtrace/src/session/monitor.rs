//! What `oomtrace run --memory-max/--artifacts/--budget` adds to a session: the memory cgroup
//! CMD runs in, an RSS sample every interval (`memory_log.csv`), the peak and the stacks that
//! held most at it, and the kernel's OOM lines.
//!
//! So that the log tells the whole story of an OOM, the interval tightens to
//! [`NEAR_CAP_INTERVAL`] once the cgroup's usage passes [`NEAR_CAP`] of its limit (a job that
//! climbs to its cap in 0.2 s still leaves a curve), and each OOM kill adds a row with the
//! victim's RSS as the kernel's `oom:mark_victim` event gave it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::model::{Counts, Model, StackKey};
use crate::oom::artifacts::{MemoryLog, Row};
use crate::oom::cgroup::MemoryCgroup;
use crate::oom::kmsg::KernelLog;
use crate::oom::sampler;

/// Stacks remembered at the heap peak.
const PEAK_STACKS: usize = 10;
/// Past this share of `memory.max`, samples come every [`NEAR_CAP_INTERVAL`].
pub const NEAR_CAP: f64 = 0.8;
/// The sample interval near the cap (the loop checks every 20 ms).
pub const NEAR_CAP_INTERVAL: Duration = Duration::from_millis(20);

/// Options of a monitored run.
#[derive(Debug, Clone, Default)]
pub struct MonitorOptions {
    /// Run CMD in a fresh memory cgroup with this limit.
    pub memory_max: Option<u64>,
    /// Write the artifacts here.
    pub artifacts: Option<PathBuf>,
    /// RSS sampling interval.
    pub sample_interval: Duration,
}

/// Peaks and samples of a monitored run.
#[derive(Debug, Clone, Default)]
pub struct Peaks {
    /// Largest RSS of the process tree sampled.
    pub rss_bytes: u64,
    /// Largest outstanding heap over the traced processes.
    pub heap_bytes: u64,
    /// Samples taken.
    pub samples: u64,
    /// The largest stacks when the heap peaked: (pid, stack, its statistics then).
    pub stacks: Vec<(u32, StackKey, Counts)>,
}

/// The monitor of one run.
pub struct Monitor {
    pub cgroup: Option<MemoryCgroup>,
    log: Option<MemoryLog>,
    kernel: Option<KernelLog>,
    /// OOM lines the kernel printed during the run.
    pub kernel_lines: Vec<String>,
    interval: Duration,
    next: Instant,
    last: Instant,
    start: Instant,
    /// `start` on the events' clock, for OOM rows.
    start_ns: u64,
    /// OOM events already logged.
    ooms_logged: usize,
    root: u32,
    /// Peaks so far.
    pub peaks: Peaks,
    /// Heap outstanding when `peaks.stacks` was taken.
    stacks_heap: u64,
}

impl Monitor {
    /// Creates the cgroup (if capped) and the log; the caller adds CMD to the cgroup before exec.
    pub fn new(opts: &MonitorOptions) -> Result<Self> {
        let cgroup = opts.memory_max.map(MemoryCgroup::create).transpose()?;
        let log = match &opts.artifacts {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                Some(MemoryLog::create(dir)?)
            }
            None => None,
        };
        let now = Instant::now();
        Ok(Self {
            cgroup,
            log,
            kernel: KernelLog::open(),
            kernel_lines: Vec::new(),
            interval: opts.sample_interval.max(Duration::from_millis(10)),
            next: now,
            last: now,
            start: now,
            start_ns: super::monotonic_ns(),
            ooms_logged: 0,
            root: 0,
            peaks: Peaks::default(),
            stacks_heap: 0,
        })
    }

    /// Starts watching `root` (added to the cgroup, if any, before it execs).
    pub fn watch(&mut self, root: u32) -> Result<()> {
        self.root = root;
        if let Some(cg) = &self.cgroup {
            cg.add_pid(root)?;
        }
        self.start = Instant::now();
        self.start_ns = super::monotonic_ns();
        self.next = self.start;
        Ok(())
    }

    /// Takes a sample if one is due: every interval, or every [`NEAR_CAP_INTERVAL`] near the cap.
    pub fn tick(&mut self, model: &Model) -> Result<()> {
        let now = Instant::now();
        let due = now >= self.next || (now >= self.last + NEAR_CAP_INTERVAL && self.near_cap());
        if !due {
            return Ok(());
        }
        if now >= self.next {
            self.next += self.interval;
        }
        self.sample(model)
    }

    /// Whether the cgroup's usage is past [`NEAR_CAP`] of its limit.
    fn near_cap(&self) -> bool {
        let Some(cg) = &self.cgroup else {
            return false;
        };
        cg.usage_bytes()
            .is_some_and(|u| u as f64 >= NEAR_CAP * cg.limit_bytes() as f64)
    }

    /// Logs a row for each OOM kill not logged yet whose victim is ours (traced, or in our
    /// cgroup): its RSS as the kernel reported it at the kill.
    pub fn log_ooms(&mut self, model: &Model) {
        let ours = |o: &crate::model::oom::OomEvent| {
            model.process(o.pid).is_some()
                || self
                    .cgroup
                    .as_ref()
                    .zip(o.cgroup.as_deref())
                    .is_some_and(|(cg, path)| path.ends_with(cg.name()))
        };
        let new: Vec<Row> = model.ooms[self.ooms_logged.min(model.ooms.len())..]
            .iter()
            .filter(|o| ours(o))
            .map(|o| Row {
                t_s: o.ts_ns.saturating_sub(self.start_ns) as f64 / 1e9,
                pid: o.pid,
                rss_bytes: o.anon_rss_bytes + o.file_rss_bytes + o.shmem_rss_bytes,
                heap_outstanding_bytes: model.outstanding(),
                cgroup_usage_bytes: self.cgroup.as_ref().and_then(MemoryCgroup::usage_bytes),
            })
            .collect();
        self.ooms_logged = model.ooms.len();
        for row in &new {
            self.peaks.rss_bytes = self.peaks.rss_bytes.max(row.rss_bytes);
            self.peaks.samples += 1;
            if let Some(log) = &mut self.log {
                log.push(row);
            }
        }
    }

    /// Takes a sample now.
    pub fn sample(&mut self, model: &Model) -> Result<()> {
        let pids = match &self.cgroup {
            Some(cg) => cg.pids(),
            None => sampler::process_tree(self.root),
        };
        let rss = sampler::rss_of_pids(&pids);
        // A single process's own high-water mark catches peaks between samples.
        let hwm = if pids.len() == 1 {
            vm_hwm(pids[0]).unwrap_or(0)
        } else {
            0
        };
        let heap = model.outstanding();
        self.last = Instant::now();
        self.peaks.samples += 1;
        self.peaks.rss_bytes = self.peaks.rss_bytes.max(rss).max(hwm);
        // The exact peak comes from the model; the stacks are those of the largest sample.
        self.peaks.heap_bytes = model.peak_outstanding();
        if heap >= self.stacks_heap {
            self.stacks_heap = heap;
            self.peaks.stacks = top_stacks(model);
        }
        if let Some(k) = &mut self.kernel {
            self.kernel_lines.extend(k.read_new());
        }
        if let Some(log) = &mut self.log {
            let row = Row {
                t_s: self.start.elapsed().as_secs_f64(),
                pid: self.root,
                rss_bytes: rss,
                heap_outstanding_bytes: heap,
                cgroup_usage_bytes: self.cgroup.as_ref().and_then(MemoryCgroup::usage_bytes),
            };
            log.push(&row);
        }
        Ok(())
    }

    /// At the end: folds in what the samples may have missed. Traced OOM victims' RSS and stacks
    /// at the kill, and the tables frozen at each process's exit (a leak peaks there).
    pub fn finish(&mut self, model: &Model) {
        let at_exit: u64 = model.processes().map(|p| p.totals.outstanding_bytes).sum();
        if at_exit >= self.stacks_heap {
            self.stacks_heap = at_exit;
            self.peaks.stacks = top_stacks(model);
        }
        for o in &model.ooms {
            if model.process(o.pid).is_none() {
                continue;
            }
            let rss = o.anon_rss_bytes + o.file_rss_bytes + o.shmem_rss_bytes;
            self.peaks.rss_bytes = self.peaks.rss_bytes.max(rss);
            let held: u64 = o.top_stacks.iter().map(|(_, c)| c.outstanding_bytes).sum();
            if held >= self.stacks_heap {
                self.stacks_heap = held;
                self.peaks.stacks = o.top_stacks.iter().map(|(k, c)| (o.pid, *k, *c)).collect();
            }
        }
    }

    /// OOM kills inside our cgroup, as the kernel counts them.
    pub fn oom_kills(&self) -> Option<u64> {
        self.cgroup.as_ref().and_then(MemoryCgroup::oom_kills)
    }

    /// Removes the cgroup (killing anything left in it).
    pub fn remove_cgroup(&mut self) -> Result<()> {
        if let Some(cg) = self.cgroup.take() {
            cg.remove()?;
        }
        Ok(())
    }
}

/// The largest live stacks right now, over every process.
fn top_stacks(model: &Model) -> Vec<(u32, StackKey, Counts)> {
    let mut all: Vec<(u32, StackKey, Counts)> = model
        .processes()
        .flat_map(|p| {
            p.stacks
                .iter()
                .filter(|s| s.counts.outstanding_bytes > 0)
                .map(move |s| (p.pid, s.key, s.counts))
        })
        .collect();
    all.sort_by_key(|s| std::cmp::Reverse(s.2.outstanding_bytes));
    all.truncate(PEAK_STACKS);
    all
}

/// `VmHWM` (peak RSS) of a process, in bytes.
fn vm_hwm(pid: u32) -> Option<u64> {
    sampler::kib_field(&format!("/proc/{pid}/status"), "VmHWM")
}
