//! `oomtrace report` and `oomtrace diff`: recordings replayed through the model, then written
//! by the same report code as live, or by the exporters.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::cli::{DiffArgs, DiffFormat, ExportFormat, ReportArgs};
use crate::report::{Report, csv, diff, flamegraph, folded, pprof, text};
use crate::source::file;

/// Replays `path` up to `at` and builds its report; warnings about damage go to stderr.
pub fn load_report(path: &Path, at: Option<f64>) -> Result<Report> {
    if let Some(at) = at
        && !(at.is_finite() && at >= 0.0)
    {
        bail!("--at {at} is not a time in seconds since the recording started");
    }
    let (replay, warnings) = file::load(path, at)?;
    for w in &warnings {
        crate::say!("oomtrace: warning: {}: {w}", path.display());
    }
    Ok(replay.report())
}

/// Writes `bytes` to `output` or standard output.
pub fn emit(output: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match output {
        Some(path) => {
            std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)?;
            Ok(out.flush()?)
        }
    }
}

/// `oomtrace report`.
pub fn report(args: &ReportArgs) -> Result<()> {
    let mut report = load_report(&args.file, args.at)?;
    if let Some(pid) = args.pid {
        if !report.processes.iter().any(|p| p.pid == pid) {
            bail!(
                "pid {pid} is not in {} (see `oomtrace report` without --pid)",
                args.file.display()
            );
        }
        report = report.only_pid(pid);
    }
    if let Some(svg) = &args.flamegraph {
        let folded = folded::to_folded(&report, folded::FoldedValue::Outstanding);
        let bytes = flamegraph::to_svg(&folded, "oomtrace: outstanding bytes")?;
        std::fs::write(svg, bytes).with_context(|| format!("cannot write {}", svg.display()))?;
    }
    let bytes = match args.format {
        ExportFormat::Text => text::render(&report, args.top).into_bytes(),
        ExportFormat::Json => (report.to_json() + "\n").into_bytes(),
        ExportFormat::Pprof => pprof::to_pprof(&report),
        ExportFormat::Folded => {
            folded::to_folded(&report, folded::FoldedValue::Outstanding).into_bytes()
        }
        ExportFormat::Csv => csv::to_csv(&report).into_bytes(),
    };
    emit(args.output.as_deref(), &bytes)
}

/// `FILE` or `FILE@SECONDS`.
fn split_at_time(arg: &str) -> Result<(PathBuf, Option<f64>)> {
    if let Some((file, t)) = arg.rsplit_once('@')
        && !Path::new(arg).exists()
    {
        let secs: f64 = t
            .parse()
            .with_context(|| format!("{arg:?}: {t:?} after @ is not a number of seconds"))?;
        return Ok((PathBuf::from(file), Some(secs)));
    }
    Ok((PathBuf::from(arg), None))
}

/// `oomtrace diff`.
pub fn diff_cmd(args: &DiffArgs) -> Result<()> {
    let (a_path, a_at) = split_at_time(&args.before)?;
    let (b_path, b_at) = split_at_time(&args.after)?;
    let a = load_report(&a_path, a_at)?;
    let b = load_report(&b_path, b_at)?;
    let bytes = match args.format {
        DiffFormat::Text => diff::render_text(&diff::diff(&a, &b), args.top).into_bytes(),
        DiffFormat::Json => (diff::diff(&a, &b).to_json()? + "\n").into_bytes(),
        DiffFormat::Pprof => pprof::diff_pprof(&a, &b),
    };
    emit(args.output.as_deref(), &bytes)
}
