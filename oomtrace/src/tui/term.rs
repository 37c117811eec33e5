//! The terminal and the event loop.
//!
//! [`run`] takes over the terminal (raw mode, alternate screen, mouse capture), draws the latest
//! [`Snapshot`] on every refresh tick and after every key, and gives the terminal back when the
//! user quits, when SIGTERM or SIGINT arrives, on an error, and on a panic. The ingestion side
//! publishes snapshots on a `watch` channel: sending never waits for the TUI, and a new snapshot
//! only marks the screen stale, so a slow terminal slows the drawing, never the tracing.
//!
//! Restoring is one function, [`restore`], shared by the guard's `Drop` and the panic hook, and
//! guarded by a flag so it runs once: a panic prints its message on a normal screen.
//!
//! Drawing writes to the terminal synchronously. On a multi-thread runtime it runs inside
//! `block_in_place`, so other tasks (the ring-buffer reader) move to other workers; on a
//! current-thread runtime the ingestion should run on its own thread.

use std::io::{self, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use anyhow::Context;
use crossterm::event::{DisableMouseCapture, EnableMouseCapture, Event, EventStream};
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use crossterm::{cursor, execute};
use futures::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::app::{App, Intent};
use super::snapshot::Snapshot;
use super::view;

/// Why [`run_until_quit`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The user quit (`q`, Esc at top level).
    Quit,
    /// Ctrl-C (a key in raw mode) or SIGINT.
    Interrupted,
    /// SIGTERM.
    Terminated,
}

/// True while the terminal is in TUI mode and must be restored.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Installs the panic hook once per process.
static HOOK: Once = Once::new();

/// Gives the terminal back: leaves the alternate screen, stops mouse capture, shows the cursor
/// and leaves raw mode. Does nothing unless the TUI holds the terminal, so calling it twice (the
/// panic hook, then the guard's drop while unwinding) is harmless.
pub fn restore() -> io::Result<()> {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return Ok(());
    }
    let mut out = io::stdout();
    // Try every step even if one fails; report the first failure.
    let screen = execute!(out, DisableMouseCapture, LeaveAlternateScreen, cursor::Show);
    let raw = disable_raw_mode();
    let flush = out.flush();
    screen.and(raw).and(flush)
}

/// Holds the terminal in TUI mode; dropping it restores the terminal.
struct TerminalGuard {
    /// The ratatui terminal drawing to stdout.
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    /// Enters raw mode, the alternate screen and mouse capture, after installing the panic hook.
    fn enter() -> anyhow::Result<TerminalGuard> {
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let _ = restore();
                previous(info);
            }));
        });
        enable_raw_mode().context("cannot put the terminal in raw mode")?;
        ACTIVE.store(true, Ordering::SeqCst);
        // From here on, an early return drops `guard`, which restores.
        let mut guard = TerminalGuard::restore_on_drop();
        execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture)
            .context("cannot switch to the alternate screen")?;
        let terminal = Terminal::new(CrosstermBackend::new(io::stdout()))
            .context("cannot set up the terminal")?;
        guard.disarm();
        Ok(TerminalGuard { terminal })
    }

    /// A guard without a terminal, for the steps of [`TerminalGuard::enter`].
    fn restore_on_drop() -> RestoreOnDrop {
        RestoreOnDrop(true)
    }

    /// Draws one frame.
    fn draw(&mut self, app: &App, latest: &Snapshot) -> io::Result<()> {
        let mut draw = || {
            self.terminal
                .draw(|frame| view::draw(frame, app, latest))
                .map(|_| ())
        };
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(draw),
            _ => draw(),
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = restore();
    }
}

/// Restores the terminal when dropped while armed (set-up steps that fail half-way).
struct RestoreOnDrop(bool);

impl RestoreOnDrop {
    /// Keeps the terminal as it is when dropped.
    fn disarm(&mut self) {
        self.0 = false;
    }
}

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        if self.0 {
            let _ = restore();
        }
    }
}

/// Runs the TUI until the user quits or SIGTERM/SIGINT arrives, drawing the snapshots published
/// on `updates` every `refresh` and after each key. The terminal is restored in every case.
pub async fn run(updates: watch::Receiver<Arc<Snapshot>>, refresh: Duration) -> anyhow::Result<()> {
    run_until_quit(updates, refresh).await.map(|_| ())
}

/// Time controls of `oomtrace replay`, sent by keys the live view does not use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReplayControl {
    /// Stop or resume playing (space).
    TogglePause,
    /// Play twice as fast (`]` or `+`).
    Faster,
    /// Play half as fast (`[` or `-`).
    Slower,
    /// While paused, advance by one sampling tick (`.`).
    Step,
    /// Jump by this many seconds of recorded time (`>`/`<`: ±10 s; Home: to the start).
    Seek(f64),
}

/// The replay key bindings.
fn replay_control(event: &Event) -> Option<ReplayControl> {
    use crossterm::event::KeyCode;
    let Event::Key(key) = event else { return None };
    Some(match key.code {
        KeyCode::Char(' ') => ReplayControl::TogglePause,
        KeyCode::Char(']' | '+') => ReplayControl::Faster,
        KeyCode::Char('[' | '-') => ReplayControl::Slower,
        KeyCode::Char('.') => ReplayControl::Step,
        KeyCode::Char('>') => ReplayControl::Seek(10.0),
        KeyCode::Char('<') => ReplayControl::Seek(-10.0),
        _ => return None,
    })
}

/// [`run`], telling why it ended (for the exit code: 130 after Ctrl-C, 143 after SIGTERM).
pub async fn run_until_quit(
    updates: watch::Receiver<Arc<Snapshot>>,
    refresh: Duration,
) -> anyhow::Result<Ended> {
    run_with_controls(updates, refresh, None).await
}

/// [`run_until_quit`] for `oomtrace replay`: time-control keys go to `controls` instead of the
/// view (space pauses the playback rather than freezing the screen).
pub async fn run_with_controls(
    mut updates: watch::Receiver<Arc<Snapshot>>,
    refresh: Duration,
    controls: Option<std::sync::mpsc::Sender<ReplayControl>>,
) -> anyhow::Result<Ended> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
    let mut guard = TerminalGuard::enter()?;
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(refresh.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut app = App::new();
    let mut latest = updates.borrow_and_update().clone();
    let mut stale = false;
    let mut publisher_gone = false;
    let ended = loop {
        let redraw = tokio::select! {
            event = events.next() => {
                let Some(event) = event else { break Ended::Quit };
                let event = event.context("cannot read terminal input")?;
                if stale {
                    latest = updates.borrow_and_update().clone();
                    app.sync(&latest);
                    stale = false;
                }
                let size = guard.terminal.size().context("cannot read the terminal size")?;
                app.page = view::page_rows(size.into(), app.shown(&latest));
                let control = if app.editing || app.help { None } else { replay_control(&event) };
                let intent = match (&controls, control, &event) {
                    (Some(tx), Some(c), _) => {
                        let _ = tx.send(c);
                        Intent::Redraw
                    }
                    (_, _, Event::Key(key)) => app.handle_key(*key, &latest),
                    (_, _, Event::Mouse(mouse)) => app.handle_mouse(*mouse, &latest),
                    (_, _, Event::Resize(..)) => Intent::Redraw,
                    _ => Intent::None,
                };
                match intent {
                    Intent::Quit if is_ctrl_c(&event) => break Ended::Interrupted,
                    Intent::Quit => break Ended::Quit,
                    Intent::Redraw => true,
                    Intent::None => false,
                }
            }
            _ = tick.tick() => {
                if stale {
                    latest = updates.borrow_and_update().clone();
                    app.sync(&latest);
                    stale = false;
                }
                true
            }
            changed = updates.changed(), if !publisher_gone => {
                // The ingestion ended (sender dropped): keep the last state on screen.
                match changed {
                    Ok(()) => stale = true,
                    Err(_) => publisher_gone = true,
                }
                false
            }
            _ = sigterm.recv() => break Ended::Terminated,
            _ = sigint.recv() => break Ended::Interrupted,
        };
        if redraw {
            guard
                .draw(&app, &latest)
                .context("cannot draw to the terminal")?;
        }
    };
    let restored = restore();
    drop(guard);
    restored.context("cannot restore the terminal")?;
    Ok(ended)
}

/// True for Ctrl-C as a key (raw mode turns it into one).
fn is_ctrl_c(event: &Event) -> bool {
    matches!(event, Event::Key(k)
        if k.code == crossterm::event::KeyCode::Char('c')
            && k.modifiers.contains(crossterm::event::KeyModifiers::CONTROL))
}
