//! Replaying a recording through the same model the live session feeds: the report from a file
//! is built by the same code, from the same events, as the live one.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;

use crate::model::Model;
use crate::record::recorder::{KEY_DURATION_NS, KEY_START_NS};
use crate::record::{Recording, RecordingReader, Warning};
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
}

impl Replay {
    /// The report, exactly as the live session would have built it at that point.
    pub fn report(mut self) -> Report {
        Report::build(
            &self.model,
            &self.stacks,
            &mut self.symbols,
            self.start_ns,
            self.duration_s,
            self.losses,
        )
    }
}

/// Stack id → frames from a recording.
#[derive(Default)]
pub struct RecordedStacks(HashMap<i32, Vec<u64>>);

impl StackSource for RecordedStacks {
    fn walk(&self, stack_id: u32) -> Option<Vec<u64>> {
        self.0.get(&(stack_id as i32)).cloned()
    }
}

/// Reads `path` and replays its events up to `at` seconds after the recording started
/// (all of them without `at`). Damage past the readable prefix comes back as warnings.
pub fn load(path: &Path, at: Option<f64>) -> Result<(Replay, Vec<Warning>)> {
    let (recording, warnings) = RecordingReader::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read recording {}: {e}", path.display()))?;
    Ok((replay(recording, at), warnings))
}

/// Replays an already read recording.
pub fn replay(rec: Recording, at: Option<f64>) -> Replay {
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
    let recorded_s = match value(KEY_DURATION_NS) {
        Some(ns) => ns as f64 / 1e9,
        // A recording cut short has no footer: it covers up to its last event.
        None => rec
            .events
            .last()
            .map_or(0.0, |e| e.ts_ns.saturating_sub(start_ns) as f64 / 1e9),
    };
    let cutoff = at.map(|s| start_ns.saturating_add((s.max(0.0) * 1e9) as u64));
    let mut model = Model::new();
    for ev in &rec.events {
        if cutoff.is_some_and(|c| ev.ts_ns > c) {
            break;
        }
        model.apply(ev);
    }
    for oom in &rec.ooms {
        let cgroup = serde_json::from_slice::<serde_json::Value>(&oom.json)
            .ok()
            .and_then(|v| v["cgroup"].as_str().map(str::to_owned));
        if let Some(cgroup) = cgroup {
            model.set_oom_cgroup(oom.tgid, cgroup);
        }
    }
    let mut symbols = RecordedSymbols::default();
    let text = |id: u32| {
        rec.strings
            .get(id)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    for (&(tgid, addr), s) in rec.symbols.iter() {
        let frame = Frame {
            addr,
            function: text(s.function),
            module: text(s.module),
            file: text(s.file),
            line: (s.line > 0).then_some(s.line),
        };
        symbols.insert(tgid, frame);
    }
    let losses = Losses {
        lost_events: counters.lost_events,
        stack_collisions: counters.stack_collisions,
    };
    Replay {
        model,
        stacks: RecordedStacks(rec.stacks),
        symbols,
        losses,
        duration_s: at.map_or(recorded_s, |a| a.min(recorded_s)),
        start_ns,
    }
}
