//! `oomtrace agent`: a long-running daemon for a whole machine (or cgroup subtrees, or
//! command names) that feeds Prometheus (`/metrics`) and profile stores (pprof push, rotating
//! files) instead of growing a backend of its own.
//!
//! It is one more view on the session's pipeline: [`crate::session::trace_observed`] runs the
//! usual probes → events → model loop, and [`snapshot::Exporter`], the session's observer, reads
//! the model every refresh on the loop's own task. The HTTP server and the push task run on the
//! same runtime. Growth mode (no uprobes) by default, with caps on processes, stacks and series
//! that exited processes do not hold ([`config`]).
//!
//! SIGHUP reads the configuration again: what only the exporters use applies at once; a
//! change of what is traced ends the session and starts the next one (counters go on). SIGTERM
//! and SIGINT stop it cleanly (exit 0); reaching its own memory limit stops it with exit 1, for
//! the service manager to restart it.

pub mod config;
pub mod http;
pub mod metrics;
pub mod push;
pub mod site;
pub mod snapshot;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};

use self::config::{AgentArgs, Settings};
use crate::session::{Options, StopReason, Target};

/// `CLOCK_MONOTONIC` now, the clock of event timestamps.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How the agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// SIGTERM or SIGINT.
    Stopped,
    /// Its own memory reached `self_max`.
    SelfLimit,
}

/// `oomtrace agent`: prints the configuration, or runs until stopped.
pub fn main(args: AgentArgs) -> Result<Ended> {
    let settings = config::load(&args)?;
    if args.print_config {
        print!("{}", settings.config.to_toml());
        return Ok(Ended::Stopped);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args, settings))
}

/// The session options of `s`.
fn options(s: &Settings) -> Options {
    let t = &s.tracing;
    Options {
        target: if t.selection.is_empty() {
            Target::All
        } else {
            Target::Select(t.selection.clone())
        },
        duration: None,
        placement: crate::probe::placement::PlacementMode::Auto,
        ring_bytes: t.ring_bytes,
        record: None,
        monitor: None,
        tick: t.tick,
        mode: t.mode,
        kernel: false,
        probe_floor: false,
        children: true,
        self_max: t.self_max,
        stack_depth: t.stack_depth,
        python_depth: t.python_depth,
        fail: None,
    }
}

async fn run(args: AgentArgs, settings: Settings) -> Result<Ended> {
    // Before anything slow: a SIGHUP sent meanwhile must not end the process.
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let metrics = Arc::new(Mutex::new(metrics::Metrics::new()));
    let mut listen = settings.export.listen;
    let listener = http::bind(listen).await?;
    let mut server = tokio::spawn(http::serve(listener, metrics.clone()));
    let (push_tx, push_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(push::run(push_rx));
    let (latest_tx, latest) = tokio::sync::watch::channel(Arc::new(settings));
    crate::say!("oomtrace: agent: metrics on http://{listen}/metrics");
    loop {
        let current = latest.borrow().clone();
        let stop = Arc::new(AtomicBool::new(false));
        metrics.lock().expect("metrics lock").begin_session();
        let exporter = snapshot::Exporter {
            settings: current.clone(),
            latest: latest.clone(),
            metrics: metrics.clone(),
            push: push_tx.clone(),
            stop: stop.clone(),
            builder: snapshot::Builder::default(),
            last_push: None,
        };
        let session = crate::session::trace_observed(options(&current), Box::new(exporter));
        tokio::pin!(session);
        let outcome = loop {
            tokio::select! {
                outcome = &mut session => break outcome?,
                _ = hup.recv() => {
                    let new = match config::load(&args) {
                        Ok(new) => new,
                        Err(e) => {
                            crate::say!(
                                "oomtrace: warning: configuration not reloaded, the running one \
                                 stays: {e:#}"
                            );
                            continue;
                        }
                    };
                    if new.export.listen != listen {
                        match http::bind(new.export.listen).await {
                            Ok(l) => {
                                server.abort();
                                server = tokio::spawn(http::serve(l, metrics.clone()));
                                listen = new.export.listen;
                            }
                            Err(e) => crate::say!("oomtrace: warning: {e:#}; still on {listen}"),
                        }
                    }
                    let restart = new.tracing != current.tracing;
                    crate::say!(
                        "oomtrace: agent: configuration reloaded{}",
                        if restart { "; tracing starts again with it" } else { "" }
                    );
                    stop.store(restart, Ordering::Relaxed);
                    let _ = latest_tx.send(Arc::new(new));
                }
            }
        };
        // Detach before the next session attaches (the kernel takes a moment).
        let stop_reason = outcome.stop;
        drop(outcome);
        match stop_reason {
            StopReason::Quit => continue,
            StopReason::SelfLimit(rss) => {
                crate::say!(
                    "oomtrace: error: agent: its own memory reached {} (self_max): stopping",
                    crate::report::human_bytes(rss)
                );
                return Ok(Ended::SelfLimit);
            }
            StopReason::Signal(_)
            | StopReason::Duration
            | StopReason::TargetExited
            | StopReason::RecordingCut => {
                crate::say!("oomtrace: agent: stopped");
                return Ok(Ended::Stopped);
            }
        }
    }
}
