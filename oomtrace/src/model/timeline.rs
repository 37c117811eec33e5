//! Time series for growth detection: every stack's outstanding bytes and every process's heap,
//! RSS, threads and descriptors, sampled at each `Tick` event, in bounded memory.
//!
//! Sampling happens inside the event stream (the session injects `Tick` and `ProcSample`
//! events), so a recording replays to exactly the same series and verdicts.
//!
//! The schedule: a young run is sampled every [`FAST_TICK`] for its first [`FAST_PHASE`], then
//! every `--tick` (1 s). A `Tick` event carries the coarse step (`size`, ns) and the fast phase
//! (`addr`, ns); once the fast phase is over, every tick merges the points before it to one per
//! coarse step (`Series::coarsen`: the dense first seconds at the first coarse tick, nothing
//! after). So the classifier has its 10 points about a second into a run, and a longer run's
//! series is as even as a 1-s tick's, which is what its tuning was measured on. (A tick without
//! those fields, as older recordings have, merges nothing.)

use std::time::Duration;

use std::collections::HashMap;

use super::growth::{Growth, GrowthConfig, classify};
use super::series::{Merge, Series};
use super::{Process, StackKey};

/// The tick while a run is young.
pub const FAST_TICK: Duration = Duration::from_millis(100);
/// How long a run is young.
pub const FAST_PHASE: Duration = Duration::from_secs(10);

/// When the session samples next, `elapsed` into the run: every [`FAST_TICK`] (or `tick`, if
/// shorter) while young, every `tick` after.
pub fn next_tick(elapsed: Duration, tick: Duration) -> Duration {
    if elapsed < FAST_PHASE {
        FAST_TICK.min(tick)
    } else {
        tick
    }
}

/// Stacks with a series; later ones get none (their growth is `unknown`), counted.
/// Each series holds at most ~16 KiB (see `Series::heap_bytes`): 8192 × 16 KiB = 128 MiB worst case.
pub const MAX_STACK_SERIES: usize = 8192;

/// A process's series.
#[derive(Debug, Default)]
pub struct ProcSeries {
    /// Outstanding heap bytes.
    pub heap: Series,
    /// Resident set size, bytes.
    pub rss: Series,
    /// Thread count.
    pub threads: Series,
    /// Open file descriptors.
    pub fds: Series,
}

/// Growth verdicts of a process's series (report key `growth` of a process). Threads and
/// descriptors carry their rate as `per_s` with their `unit`, not as bytes.
#[derive(Clone, Debug)]
pub struct ProcGrowth {
    /// Of its outstanding heap.
    pub heap: Growth,
    /// Of its RSS.
    pub rss: Growth,
    /// Of its thread count (a thread leak).
    pub threads: Growth,
    /// Of its open descriptors (an fd leak).
    pub fds: Growth,
}

impl serde::Serialize for ProcGrowth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut m = s.serialize_struct("ProcGrowth", 4)?;
        m.serialize_field("heap", &self.heap)?;
        m.serialize_field("rss", &self.rss)?;
        m.serialize_field("threads", &Counted(&self.threads, "threads"))?;
        m.serialize_field("fds", &Counted(&self.fds, "fds"))?;
        m.end()
    }
}

/// A verdict on a count (threads, descriptors): its rate is `per_s` of `unit`.
struct Counted<'a>(&'a Growth, &'static str);

impl serde::Serialize for Counted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let g = self.0;
        let mut m = s.serialize_struct("Growth", 5)?;
        m.serialize_field("class", &g.class)?;
        m.serialize_field("per_s", &g.bytes_per_s)?;
        m.serialize_field("unit", self.1)?;
        m.serialize_field("confidence", &g.confidence)?;
        m.serialize_field("growing_for_s", &g.growing_for_s)?;
        m.end()
    }
}

/// All series.
#[derive(Debug)]
pub struct Timeline {
    origin_ns: Option<u64>,
    stacks: HashMap<(u32, StackKey), Series>,
    procs: HashMap<u32, ProcSeries>,
    /// Stacks that got no series because of [`MAX_STACK_SERIES`].
    pub stacks_without_series: u64,
    /// Ticks seen.
    pub ticks: u64,
    /// Stacks that may have a series ([`MAX_STACK_SERIES`] unless the model says less).
    pub max_stacks: usize,
}

impl Default for Timeline {
    fn default() -> Self {
        Self {
            origin_ns: None,
            stacks: HashMap::new(),
            procs: HashMap::new(),
            stacks_without_series: 0,
            ticks: 0,
            max_stacks: MAX_STACK_SERIES,
        }
    }
}

impl Timeline {
    fn t(&mut self, ts_ns: u64) -> f64 {
        let origin = *self.origin_ns.get_or_insert(ts_ns);
        ts_ns.saturating_sub(origin) as f64 / 1e9
    }

    /// A tick at `ts_ns`: counts it and returns its time for [`Timeline::sample_process`].
    pub fn tick(&mut self, ts_ns: u64) -> f64 {
        self.ticks += 1;
        self.t(ts_ns)
    }

    /// Samples a live process's heap and every stack that holds (or held) memory at tick time
    /// `t`, each at the most it held since the previous tick.
    pub fn sample_process(&mut self, t: f64, p: &mut Process) {
        if p.exit.is_some() {
            return;
        }
        let pid = p.pid;
        let (heap, stacks) = p.take_interval_peaks();
        self.procs.entry(pid).or_default().heap.push(t, heap as f64);
        for (key, value) in stacks {
            self.push_stack(t, (pid, key), value);
        }
    }

    /// After a tick at `t`: once the fast phase (`phase_ns`) is over, merges every series'
    /// points up to `t` into one per `step_ns`, a step apart back from `t` (nothing when either
    /// is 0).
    pub fn coarsen(&mut self, t: f64, phase_ns: u64, step_ns: u64) {
        if phase_ns == 0 || step_ns == 0 || t < phase_ns as f64 / 1e9 {
            return;
        }
        let (before, step) = (t, step_ns as f64 / 1e9);
        // Heap and stacks are sampled at their high-water marks, the rest are readings.
        for s in self.stacks.values_mut() {
            s.coarsen(before, step, Merge::Max);
        }
        for p in self.procs.values_mut() {
            p.heap.coarsen(before, step, Merge::Max);
            for s in [&mut p.rss, &mut p.threads, &mut p.fds] {
                s.coarsen(before, step, Merge::Last);
            }
        }
    }

    /// Samples more stacks (`--kernel`'s) at the tick just counted by [`Timeline::tick`].
    pub fn sample_stacks(
        &mut self,
        ts_ns: u64,
        stacks: impl Iterator<Item = (u32, StackKey, u64)>,
    ) {
        let t = self.t(ts_ns);
        for (pid, key, value) in stacks {
            self.push_stack(t, (pid, key), value);
        }
    }

    fn push_stack(&mut self, t: f64, key: (u32, StackKey), value: u64) {
        let value = value as f64;
        if let Some(series) = self.stacks.get_mut(&key) {
            series.push(t, value);
        } else if value == 0.0 {
            // Churn that never holds anything needs no series.
        } else if self.stacks.len() >= self.max_stacks {
            self.stacks_without_series += 1;
        } else {
            let mut series = Series::new();
            series.push(t, value);
            self.stacks.insert(key, series);
        }
    }

    /// A process sample read from /proc.
    pub fn proc_sample(&mut self, pid: u32, ts_ns: u64, rss: u64, threads: u64, fds: u64) {
        let t = self.t(ts_ns);
        let s = self.procs.entry(pid).or_default();
        s.rss.push(t, rss as f64);
        s.threads.push(t, threads as f64);
        s.fds.push(t, fds as f64);
    }

    /// Drops every series of these processes (they exited and were shown).
    pub fn forget(&mut self, pids: &[u32]) {
        let gone: std::collections::HashSet<u32> = pids.iter().copied().collect();
        self.procs.retain(|p, _| !gone.contains(p));
        self.stacks.retain(|(p, _), _| !gone.contains(p));
    }

    /// Stack series kept now.
    pub fn stack_series(&self) -> usize {
        self.stacks.len()
    }

    /// The series of one stack.
    pub fn stack(&self, pid: u32, key: &StackKey) -> Option<&Series> {
        self.stacks.get(&(pid, *key))
    }

    /// The series of one process.
    pub fn process(&self, pid: u32) -> Option<&ProcSeries> {
        self.procs.get(&pid)
    }

    /// Growth of one stack (`unknown` without a series).
    pub fn stack_growth(&self, pid: u32, key: &StackKey, cfg: &GrowthConfig) -> Growth {
        self.stack(pid, key)
            .map_or_else(|| classify(&Series::new(), cfg), |s| classify(s, cfg))
    }

    /// Growth of one process's heap, RSS, threads and descriptors.
    pub fn process_growth(&self, pid: u32, cfg: &GrowthConfig) -> ProcGrowth {
        let empty = ProcSeries::default();
        let s = self.procs.get(&pid).unwrap_or(&empty);
        ProcGrowth {
            heap: classify(&s.heap, cfg),
            rss: classify(&s.rss, cfg),
            threads: classify(&s.threads, cfg),
            fds: classify(&s.fds, cfg),
        }
    }
}
