//! `oomtrace`: parse the command line, run the session, write the report, exit with the right code.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use oomtrace::cli::{Cli, Command, Format, OutputArgs};
use oomtrace::leaks::gate::GateOptions;
use oomtrace::oom::finish::RunEnd;
use oomtrace::probe::preflight::PreflightError;
use oomtrace::report::text;
use oomtrace::session::monitor::MonitorOptions;
use oomtrace::session::{self, Options, StopReason, Target};

/// Exit codes besides the traced command's own.
mod code {
    pub const ERROR: u8 = 1;
    pub const NO_PERMISSION: u8 = 77;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            oomtrace::say!("oomtrace: error: {}", one_line(&err));
            match err.downcast_ref::<PreflightError>() {
                Some(PreflightError::NotPrivileged) => ExitCode::from(code::NO_PERMISSION),
                _ => ExitCode::from(code::ERROR),
            }
        }
    }
}

/// The error and its causes on one line.
fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    oomtrace::privs::drop_if_offline(cli.command.as_ref());
    let mut run_end: Option<RunEnd> = None;
    let mut gate: Option<GateOptions> = None;
    let (opts, output) = match cli.command {
        Some(Command::Probes(args)) => {
            if args.tracing.kernel {
                anyhow::bail!("--kernel applies to run, --pid, --all and record, not to probes");
            }
            print!(
                "{}",
                session::describe_probes(args.pid, args.binary, args.tracing.placement.into())?
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Gpu(args)) => {
            let roots = oomtrace::gpu::Roots {
                proc_root: args.proc_root,
                sys_root: args.sys_root,
            };
            let snap = oomtrace::gpu::snapshot(&roots)?;
            for w in &snap.warnings {
                oomtrace::say!("oomtrace: warning: {w}");
            }
            let body = match args.format {
                Format::Json => serde_json::to_string_pretty(&snap)? + "\n",
                Format::Text => snap.render_text(),
            };
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(body.as_bytes())?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::OomWatch(args)) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(oomtrace::oom::watch::watch(
                args.format == Format::Json,
                args.count,
            ))?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Replay(args)) => {
            if !std::io::stdout().is_terminal() {
                anyhow::bail!(
                    "replay needs a terminal (for a report from a recording use `oomtrace report`)"
                );
            }
            return Ok(
                match oomtrace::replay::run(&args.file, args.speed, args.refresh)? {
                    oomtrace::tui::Ended::Interrupted => ExitCode::from(130),
                    _ => ExitCode::SUCCESS,
                },
            );
        }
        Some(Command::Agent(args)) => {
            return Ok(match oomtrace::agent::main(*args)? {
                oomtrace::agent::Ended::Stopped => ExitCode::SUCCESS,
                oomtrace::agent::Ended::SelfLimit => ExitCode::from(code::ERROR),
            });
        }
        Some(Command::Report(args)) => {
            args.names.apply();
            oomtrace::offline::report(&args)?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Diff(args)) => {
            oomtrace::offline::diff_cmd(&args)?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Cleanup) => return cleanup(),
        Some(Command::Sweep(args)) => {
            let code = oomtrace::sweep::run(&args)?;
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        Some(Command::Record(args)) => {
            let target = match (args.pid, args.all, args.command.is_empty()) {
                (Some(pid), _, _) => Target::Pid(pid),
                (None, true, _) => Target::All,
                (None, false, false) => Target::Run(args.command),
                (None, false, true) => {
                    anyhow::bail!("nothing to record: give `-- CMD`, `--pid N` or `--all`")
                }
            };
            let opts = Options {
                target,
                duration: args.duration,
                placement: args.tracing.placement.into(),
                ring_bytes: args.tracing.ring_buffer_kib * 1024,
                record: Some(args.recording.clone()),
                monitor: None,
                tick: args.tracing.tick,
                mode: args.tracing.mode,
                kernel: args.tracing.kernel,
                probe_floor: false,
                children: !args.no_children,
                self_max: self_max(&args.tracing),
                stack_depth: args.tracing.stack_depth,
                python_depth: args.tracing.python_depth,
                fail: None,
            };
            args.tracing.names.apply();
            let output = OutputArgs {
                format: Some(args.format),
                refresh: std::time::Duration::from_secs(1),
                output: None,
                top: args.top,
            };
            (opts, output)
        }
        Some(Command::Run(args)) => {
            let g = GateOptions {
                max_leaked: args.max_leaked,
                kinds: args.leak_kinds,
                suppressions: args
                    .suppressions
                    .as_deref()
                    .map(oomtrace::leaks::suppress::Suppressions::load)
                    .transpose()?,
                expect_no_growth: args.expect_no_growth,
            };
            if g.max_leaked.is_some() && args.tracing.mode != oomtrace::mode::Mode::Exact {
                anyhow::bail!(
                    "--max-leaked needs --mode exact (the default): telling lost blocks from \
                     reachable ones takes every block"
                );
            }
            gate = g.active().then_some(g);
            remove_stale_cgroups();
            let monitored =
                args.memory_max.is_some() || args.artifacts.is_some() || args.budget.is_some();
            args.tracing.names.apply();
            run_end = Some(RunEnd {
                artifacts: args.artifacts.clone(),
                budget: args.budget,
                warn_at: args.warn_at,
                memory_max: args.memory_max,
            });
            (
                Options {
                    target: Target::Run(args.command),
                    duration: None,
                    placement: args.tracing.placement.into(),
                    ring_bytes: args.tracing.ring_buffer_kib * 1024,
                    record: None,
                    mode: args.tracing.mode,
                    kernel: args.tracing.kernel,
                    probe_floor: args.probe_floor,
                    children: true,
                    self_max: self_max(&args.tracing),
                    stack_depth: args.tracing.stack_depth,
                    python_depth: args.tracing.python_depth,
                    fail: {
                        let fail = args.fail.spec();
                        if fail.is_some() && args.tracing.mode != oomtrace::mode::Mode::Exact {
                            anyhow::bail!(
                                "--fail-* decides at every allocator call: it needs --mode exact \
                                 (the default)"
                            );
                        }
                        fail
                    },
                    // A monitored run samples its growth as often as its memory.
                    tick: if monitored {
                        args.tracing.tick.min(args.sample_interval)
                    } else {
                        args.tracing.tick
                    },
                    monitor: monitored.then_some(MonitorOptions {
                        memory_max: args.memory_max,
                        artifacts: args.artifacts,
                        sample_interval: args.sample_interval,
                    }),
                },
                args.output,
            )
        }
        None => {
            let a = cli.attach;
            a.tracing.names.apply();
            let target = match (a.pid, a.all) {
                (Some(pid), _) => Target::Pid(pid),
                (None, true) => Target::All,
                (None, false) => {
                    anyhow::bail!(
                        "nothing to trace: give `run -- CMD`, `--pid N` or `--all` (see --help)"
                    )
                }
            };
            (
                Options {
                    target,
                    duration: a.duration,
                    placement: a.tracing.placement.into(),
                    ring_bytes: a.tracing.ring_buffer_kib * 1024,
                    record: None,
                    monitor: None,
                    tick: a.tracing.tick,
                    mode: a.tracing.mode,
                    kernel: a.tracing.kernel,
                    probe_floor: false,
                    children: !a.no_children,
                    self_max: self_max(&a.tracing),
                    stack_depth: a.tracing.stack_depth,
                    python_depth: a.tracing.python_depth,
                    fail: None,
                },
                a.output,
            )
        }
    };
    let is_run = matches!(opts.target, Target::Run(_));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tui = output.format.is_none() && output.output.is_none() && std::io::stdout().is_terminal();
    let outcome = if tui {
        drop(runtime);
        match run_tui(opts, output.refresh)? {
            Some(outcome) => outcome,
            // Quit in the TUI before anything was traced.
            None => return Ok(ExitCode::SUCCESS),
        }
    } else {
        runtime.block_on(session::trace(opts, None))?
    };
    let mut outcome = outcome;
    let gate_failed = gate.as_ref().is_some_and(|g| {
        let verdict = oomtrace::leaks::gate::apply(&mut outcome.report, g);
        for (i, line) in verdict.stderr_lines(&g.kinds).iter().enumerate() {
            match i {
                0 => oomtrace::say!("oomtrace: {line}"),
                _ => oomtrace::say!("{line}"),
            }
        }
        !verdict.passed
    });
    let written = write_report(&outcome.report, &output);
    for line in oomtrace::report::faults::summary_lines(&outcome.report) {
        oomtrace::say!("{line}");
    }
    if let Some(bytes) = outcome.recorded_bytes {
        oomtrace::say!(
            "oomtrace: recording written ({bytes} bytes); read it with `oomtrace report FILE`"
        );
    }
    let child = match outcome.pending_child.take() {
        // Stopped at --self-max: the command runs on, untraced, to its own end.
        Some(rx) => {
            oomtrace::say!("oomtrace: the command goes on untraced; waiting for it to end");
            let runtime = tokio::runtime::Builder::new_current_thread().build()?;
            Some(runtime.block_on(rx)??)
        }
        None => outcome.child,
    };
    let mut code = match (child, outcome.stop) {
        (Some(status), _) => status.exit_code(),
        // `run` interrupted before the command ended.
        (None, StopReason::Signal(sig)) if is_run => 128 + sig,
        // Ctrl-C is how an attach session normally ends: the report is the result.
        (None, _) => 0,
    };
    if let (Some(end), Some(m)) = (&run_end, &outcome.monitored) {
        code = oomtrace::oom::finish::finish_run(end, m, &outcome, code)?;
    }
    if gate_failed {
        code = oomtrace::leaks::gate::EXIT_GATE_FAILED;
    }
    if outcome.stop == StopReason::RecordingCut {
        // Its one line said why; the prefix on disk reads back.
        code = i32::from(code::ERROR);
    }
    let code = ExitCode::from(code.clamp(0, 255) as u8);
    // Detach only after the report is out. The allocator probes go at once (in parallel: they
    // are what the traced processes pay for); the syscall tracepoints, quiesced, are closed by a
    // short-lived helper process, since the kernel takes a grace period for each and nobody should
    // wait for that.
    outcome.probes.detach_in_background();
    written.map(|()| code)
}

/// Runs the session with the live TUI: the session on its own thread (its own runtime), the
/// TUI on this one, so drawing never holds up ingestion. The TUI opens once the session has
/// attached, so set-up errors print as plain lines.
fn run_tui(
    opts: Options,
    refresh: std::time::Duration,
) -> anyhow::Result<Option<session::Outcome>> {
    use std::sync::Arc;
    let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(oomtrace::tui::Snapshot::default()));
    let (quit_tx, quit_rx) = tokio::sync::oneshot::channel();
    let link = session::UiLink {
        tx,
        quit: quit_rx,
        refresh,
    };
    let tracing = std::thread::Builder::new()
        .name("oomtrace-ingest".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(session::trace(opts, Some(link)))
        })?;
    let join = |t: std::thread::JoinHandle<anyhow::Result<session::Outcome>>| {
        t.join()
            .map_err(|_| anyhow::anyhow!("the tracing thread panicked"))?
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The first snapshot means "attached"; a closed channel means the session ended (an error).
    if runtime.block_on(rx.changed()).is_err() {
        return join(tracing).map(Some);
    }
    let ended = runtime.block_on(oomtrace::tui::run_until_quit(rx, refresh));
    let _ = quit_tx.send(());
    let outcome = join(tracing)?;
    ended?;
    Ok(Some(outcome))
}

/// `oomtrace cleanup`: removes the memory cgroups of oomtraces that are gone.
fn cleanup() -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let removed = oomtrace::oom::cgroup::remove_all_stale();
    for (path, result) in &removed {
        match result {
            Ok(()) => println!("removed {}", path.display()),
            Err(e) => {
                failed = true;
                oomtrace::say!("oomtrace: error: {e}");
            }
        }
    }
    if removed.is_empty() {
        println!("nothing to clean up");
    }
    Ok(if failed {
        ExitCode::from(code::ERROR)
    } else {
        ExitCode::SUCCESS
    })
}

/// What a killed oomtrace left: its cgroups go before a new run (one line says so).
fn remove_stale_cgroups() {
    for (path, result) in oomtrace::oom::cgroup::remove_all_stale() {
        match result {
            Ok(()) => oomtrace::say!(
                "oomtrace: notice: removed {}, left by an oomtrace that is gone",
                path.display()
            ),
            Err(e) => oomtrace::say!("oomtrace: warning: {e}"),
        }
    }
}

/// `--self-max`, or its default for this machine.
fn self_max(t: &oomtrace::cli::TracingArgs) -> u64 {
    t.self_max
        .unwrap_or_else(oomtrace::session::selfmem::default_limit)
}

fn write_report(report: &oomtrace::report::Report, out: &OutputArgs) -> anyhow::Result<()> {
    let body = match out.format.unwrap_or(Format::Text) {
        Format::Json => report.to_json() + "\n",
        Format::Text => text::render(report, out.top),
    };
    match &out.output {
        Some(path) => std::fs::write(path, body)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display())),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(body.as_bytes())?;
            stdout.flush()?;
            Ok(())
        }
    }
}
