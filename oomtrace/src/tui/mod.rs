//! The live TUI: `oomtrace --pid N`, `oomtrace run -- CMD` and `oomtrace --all` open it when
//! stdout is a terminal and no `--format` is given.
//!
//! It answers within seconds which stacks hold memory, which are growing and how fast, and
//! whether the target is heading for an OOM. Shape (after tokio-console and bottom):
//!
//! * [`snapshot`]: the plain data one frame shows; the ingestion side fills it from the model
//!   and publishes it as `Arc<Snapshot>` on a `tokio::sync::watch` channel.
//! * [`app`]: UI state (pane, sort, filter, selection, pause, help) and key handling that
//!   returns an [`Intent`]; sorting and filtering are pure functions.
//! * [`view`]: one file per screen, each drawing from `&App` and `&Snapshot` only.
//! * [`term`]: terminal set-up and restore (also on SIGTERM and panics) and the event loop,
//!   [`run`].
//! * [`format`]: sizes, rates, durations and growth verdicts as short text.
//!
//! Example (the ingestion side):
//! ```ignore
//! let (tx, rx) = tokio::sync::watch::channel(Arc::new(Snapshot::default()));
//! tokio::spawn(async move { /* apply events; tx.send_replace(Arc::new(snapshot_of(&model))); */ });
//! tui::run(rx, Duration::from_secs(1)).await?;
//! ```

pub mod app;
pub mod format;
pub mod snapshot;
pub mod term;
pub mod view;

#[cfg(test)]
pub(crate) mod fixtures;

pub use app::{App, Intent};
pub use snapshot::{
    FrameRow, GpuClientRow, GpuDeviceRow, GpuPane, Header, OomRow, ProcessRow, Snapshot, StackRow,
    Target,
};
pub use term::{Ended, ReplayControl, restore, run, run_until_quit, run_with_controls};
