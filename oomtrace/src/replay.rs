//! `oomtrace replay FILE`: the live TUI driven by a recording, with time controls (space pause,
//! `[`/`]` speed, `.` step, `<`/`>` seek). The player runs on its own thread and publishes
//! snapshots the same way the live session does.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::record::RecordingReader;
use crate::session::view::ViewState;
use crate::source::file::Player;
use crate::tui::{self, Ended, ReplayControl, Snapshot};

/// Replays `path` in the TUI at `speed` × recorded time.
pub fn run(path: &Path, speed: f64, refresh: Duration) -> Result<Ended> {
    let (rec, warnings) = RecordingReader::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read recording {}: {e}", path.display()))?;
    for w in &warnings {
        crate::say!("oomtrace: warning: {}: {w}", path.display());
    }
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(Snapshot::default()));
    let (ctl_tx, ctl_rx) = channel();
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    let player = std::thread::Builder::new()
        .name("oomtrace-replay".into())
        .spawn(move || play(Player::new(rec), &name, speed, refresh, &tx, &ctl_rx, &stop))
        .context("cannot start the replay thread")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ended = runtime.block_on(tui::run_with_controls(rx, refresh, Some(ctl_tx)));
    done.store(true, Ordering::Relaxed);
    let _ = player.join();
    ended
}

fn play(
    mut player: Player,
    name: &str,
    mut speed: f64,
    refresh: Duration,
    tx: &tokio::sync::watch::Sender<Arc<Snapshot>>,
    controls: &Receiver<ReplayControl>,
    done: &AtomicBool,
) {
    let (model, _, _, start_ns) = player.parts();
    let label = crate::mode::label(String::new(), model.mode);
    let mut view = ViewState::new(label, true, start_ns, None);
    let mut paused = false;
    let mut last = Instant::now();
    let mut last_publish: Option<Instant> = None;
    while !done.load(Ordering::Relaxed) {
        let mut jump = None;
        loop {
            match controls.try_recv() {
                Ok(ReplayControl::TogglePause) => paused = !paused,
                Ok(ReplayControl::Faster) => speed = (speed * 2.0).min(1024.0),
                Ok(ReplayControl::Slower) => speed = (speed / 2.0).max(1.0 / 64.0),
                Ok(ReplayControl::Step) => jump = Some(player.at_s + 1.0),
                Ok(ReplayControl::Seek(d)) => jump = Some(player.at_s + d),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let now = Instant::now();
        let dt = now.duration_since(last).as_secs_f64();
        last = now;
        let moved = match jump {
            Some(t) => {
                player.advance_to(t.clamp(0.0, player.length_s));
                true
            }
            None if !paused && player.at_s < player.length_s => {
                player.advance_to((player.at_s + dt * speed).min(player.length_s));
                true
            }
            None => false,
        };
        if moved || last_publish.is_none_or(|t| t.elapsed() >= refresh) {
            let state = if paused {
                "paused"
            } else if player.at_s >= player.length_s {
                "end"
            } else {
                "playing"
            };
            let label = format!(
                "replay {name} · {:.1}/{:.1} s · {speed}× {state} (space, [ ], ., < >)",
                player.at_s, player.length_s
            );
            let at = player.at_s;
            let lost = player.losses().lost_events;
            let (model, stacks, symbols, _) = player.parts();
            let mut snap = view.snapshot(model, stacks, symbols, lost, at, None);
            snap.target.label = label;
            let _ = tx.send(Arc::new(snap));
            last_publish = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
