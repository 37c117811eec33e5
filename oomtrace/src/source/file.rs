//! Replaying a recording through the same model the live session feeds: the report from a file
//! is built by the same code, from the same events, as the live one. A [`Player`] applies the
//! events up to a point in recorded time and can go on from there (`oomtrace replay`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use oomtrace_common::MemEvent;

use crate::model::Model;
use crate::record::recorder::{
    KERNEL_SYMBOLS_TGID, KEY_DURATION_NS, KEY_KERNEL, KEY_START_NS, kernel_stack_record_id,
};
use crate::record::{Recording, RecordingReader, Warning};
use crate::report::kernel::{KernelFrame, KernelSymbolSource, kernel_stacks};
use crate::report::{Losses, Report, StackSource};
use crate::symbols::{Frame, RecordedSymbols};

/// A recording replayed into a model, with what the report needs besides it.
pub struct Replay {
    /// The model after the replayed events.
    pub model: Model,
    /// Stacks as recorded.
    pub stacks: RecordedStacks,
    /// Symbols as resolved at record time.
    pub symbols: RecordedSymbols,
    /// Losses counted while recording.
    pub losses: Losses,
    /// Seconds covered by the replay.
    pub duration_s: f64,
    /// Monotonic time the recording started.
    pub start_ns: u64,
    /// `--kernel`'s stacks and names as recorded.
    pub kernel: RecordedKernel,
}

impl Replay {
    /// The report, exactly as the live session would have built it at that point.
    pub fn report(mut self) -> Report {
        let mut report = Report::build(
            &self.model,
            &self.stacks,
            &mut self.symbols,
            self.start_ns,
            self.duration_s,
            self.losses,
        );
        if self.kernel.enabled || !self.model.kernel.is_empty() {
            report.kernel_stacks = Some(kernel_stacks(&self.model, &mut self.kernel));
        }
        report
    }
}

/// `--kernel` data of a recording: kernel stacks by id, and kernel frames' names.
#[derive(Default)]
pub struct RecordedKernel {
    /// The recording was made with `--kernel`.
    pub enabled: bool,
    stacks: HashMap<i32, Vec<u64>>,
    frames: HashMap<u64, KernelFrame>,
}

impl RecordedKernel {
    fn of(rec: &Recording) -> Self {
        let text = |id: u32| {
            rec.strings
                .get(id)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let frames = rec
            .symbols
            .iter()
            .filter(|((tgid, _), _)| *tgid == KERNEL_SYMBOLS_TGID)
            .map(|(&(_, addr), s)| {
                let frame = KernelFrame {
                    addr,
                    function: text(s.function),
                    module: text(s.module),
                };
                (addr, frame)
            })
            .collect();
        Self {
            enabled: false,
            stacks: rec
                .stacks
                .iter()
                .filter(|(id, _)| **id < -1)
                .map(|(&id, frames)| (id, frames.clone()))
                .collect(),
            frames,
        }
    }
}

impl KernelSymbolSource for RecordedKernel {
    fn walk(&self, stack_id: u32) -> Option<Vec<u64>> {
        let id = i32::try_from(stack_id).ok()?;
        self.stacks.get(&kernel_stack_record_id(id)).cloned()
    }

    fn frame(&mut self, addr: u64) -> KernelFrame {
        self.frames.get(&addr).cloned().unwrap_or(KernelFrame {
            addr,
            function: None,
            module: None,
        })
    }
}

/// Stack id → frames from a recording.
#[derive(Default)]
pub struct RecordedStacks(HashMap<i32, Vec<u64>>);

impl StackSource for RecordedStacks {
    fn walk(&self, stack_id: u32) -> Option<crate::unwind::UserStack> {
        let words = self.0.get(&(stack_id as i32))?;
        Some(crate::unwind::UserStack::from_words(words))
    }
}

/// Reads `path` and replays its events up to `at` seconds after the recording started
/// (all of them without `at`). Damage past the readable prefix comes back as warnings.
pub fn load(path: &Path, at: Option<f64>) -> Result<(Replay, Vec<Warning>)> {
    let (recording, warnings) = RecordingReader::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read recording {}: {e}", path.display()))?;
    Ok((replay(recording, at), warnings))
}

/// Replays an already read recording up to `at` seconds (or its end).
pub fn replay(rec: Recording, at: Option<f64>) -> Replay {
    let mut player = Player::new(rec);
    player.advance_to(at.unwrap_or(f64::INFINITY));
    player.into_replay()
}

/// Plays a recording forward in recorded time; rewinding rebuilds the model from the start.
pub struct Player {
    events: Vec<MemEvent>,
    next: usize,
    model: Model,
    ooms: Vec<(u32, String)>,
    gpu: Vec<crate::record::Gpu>,
    next_gpu: usize,
    last_gpu: Option<serde_json::Value>,
    stacks: RecordedStacks,
    symbols: RecordedSymbols,
    kernel: RecordedKernel,
    losses: Losses,
    start_ns: u64,
    /// Seconds the recording covers.
    pub length_s: f64,
    /// Recorded time reached, in seconds.
    pub at_s: f64,
}

impl Player {
    /// A player at the start of `rec`.
    pub fn new(rec: Recording) -> Self {
        let counters = rec.footer.as_ref().map_or(&rec.counters, |f| &f.counters);
        let value = |key: &str| {
            counters
                .other
                .iter()
                .find(|(id, _)| rec.strings.get(*id) == Some(key))
                .map(|&(_, v)| v)
        };
        let first_ts = rec.events.first().map_or(0, |e| e.ts_ns);
        let start_ns = value(KEY_START_NS).unwrap_or(first_ts);
        let length_s = match value(KEY_DURATION_NS) {
            Some(ns) => ns as f64 / 1e9,
            // A recording cut short has no footer: it covers up to its last event.
            None => rec
                .events
                .last()
                .map_or(0.0, |e| e.ts_ns.saturating_sub(start_ns) as f64 / 1e9),
        };
        let losses = Losses {
            lost_events: counters.lost_events,
            stack_collisions: counters.stack_collisions,
        };
        let ooms = rec
            .ooms
            .iter()
            .filter_map(|oom| {
                let v = serde_json::from_slice::<serde_json::Value>(&oom.json).ok()?;
                Some((oom.tgid, v["cgroup"].as_str()?.to_owned()))
            })
            .collect();
        let mut kernel = RecordedKernel::of(&rec);
        kernel.enabled = value(KEY_KERNEL).is_some();
        let mut symbols = RecordedSymbols::default();
        let text = |id: u32| {
            rec.strings
                .get(id)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        for (&(tgid, addr), s) in rec.symbols.iter() {
            let origin = rec.symbols.origin(tgid, addr);
            let frame = Frame {
                addr,
                function: text(s.function),
                module: text(s.module),
                file: text(s.file),
                line: (s.line > 0).then_some(s.line),
                build_id: origin.and_then(|o| text(o.build_id)),
                offset: origin.and_then(|o| o.offset),
            };
            symbols.insert(tgid, frame);
        }
        // The mode rides in the header, so even a recording cut short replays in it.
        let mode = crate::mode::Mode::from_meta(&rec.header.meta);
        Self {
            events: rec.events,
            next: 0,
            model: Model::with_mode(mode),
            ooms,
            gpu: rec.gpu,
            next_gpu: 0,
            last_gpu: None,
            stacks: RecordedStacks(rec.stacks),
            symbols,
            kernel,
            losses,
            start_ns,
            length_s,
            at_s: 0.0,
        }
    }

    /// Applies the events up to `t_s` seconds of recorded time (going back rewinds).
    pub fn advance_to(&mut self, t_s: f64) {
        let t_s = t_s.max(0.0);
        if t_s < self.at_s {
            self.model = Model::with_mode(self.model.mode);
            self.next = 0;
            self.next_gpu = 0;
            self.last_gpu = None;
        }
        let cutoff = if t_s.is_finite() {
            self.start_ns.saturating_add((t_s * 1e9) as u64)
        } else {
            u64::MAX
        };
        while let Some(ev) = self.events.get(self.next) {
            if ev.ts_ns > cutoff {
                break;
            }
            let ts = ev.ts_ns;
            self.apply_gpu_before(ts);
            if let Some(ev) = self.events.get(self.next) {
                self.model.apply(ev);
            }
            self.next += 1;
        }
        self.apply_gpu_before(cutoff.saturating_add(1));
        // OOM cgroups are not events: note each for victims seen so far.
        for (pid, cgroup) in &self.ooms {
            self.model.set_oom_cgroup(*pid, cgroup.clone());
        }
        self.at_s = t_s.min(self.length_s);
    }

    /// Applies the GPU snapshots taken before `ts_ns`, as the live session did between events.
    fn apply_gpu_before(&mut self, ts_ns: u64) {
        while let Some(g) = self.gpu.get(self.next_gpu) {
            if g.ts_ns >= ts_ns {
                break;
            }
            self.next_gpu += 1;
            let value = if g.json.is_empty() {
                self.last_gpu.clone()
            } else {
                // A snapshot that does not parse is skipped: the file's checksums passed, so
                // only a writer bug could cause it, and the events stay exact without it.
                serde_json::from_slice(&g.json).ok()
            };
            if let Some(v) = value {
                self.last_gpu = Some(v.clone());
                self.model.gpu_sample(g.ts_ns, v);
            }
        }
    }

    /// Whether every event has been applied.
    pub fn finished(&self) -> bool {
        self.next >= self.events.len()
    }

    /// The model, the sources the views need, and the recording's start.
    pub fn parts(&mut self) -> (&Model, &RecordedStacks, &mut RecordedSymbols, u64) {
        (&self.model, &self.stacks, &mut self.symbols, self.start_ns)
    }

    /// Losses counted while recording.
    pub fn losses(&self) -> Losses {
        self.losses
    }

    /// The state reached, as a [`Replay`].
    pub fn into_replay(self) -> Replay {
        Replay {
            model: self.model,
            stacks: self.stacks,
            symbols: self.symbols,
            losses: self.losses,
            duration_s: self.at_s,
            start_ns: self.start_ns,
            kernel: self.kernel,
        }
    }
}
