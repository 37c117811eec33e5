//! Failure injection's costs on the malloc/free loop: an armed rule that never fires (the kernel
//! program decides at every call), and the time per injected failure (the thread stopped,
//! its return emulated through ptrace, resumed).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::{ROUNDS, median};

/// Calls of the idle-rule loop.
const IDLE_CALLS: u64 = 1_000_000;
/// Calls of the failing loop (each one fails).
const FAIL_CALLS: u64 = 2_000;

/// `oomtrace run --format json -o /dev/null FLAGS -- bench_loop N`: the loop's own ns.
fn loop_ns(oomtrace: &Path, exe: &Path, flags: &[&str], n: u64) -> Result<f64> {
    let out = Command::new(oomtrace)
        .args(["run", "--format", "json", "-o", "/dev/null"])
        .args(flags)
        .arg("--")
        .arg(exe)
        .arg(n.to_string())
        .output()
        .context("cannot start oomtrace")?;
    if !out.status.success() {
        bail!(
            "oomtrace run {flags:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse::<f64>()
        .with_context(|| format!("bench_loop printed {text:?}"))
}

/// Measures both figures, rounds interleaved, and writes their section.
pub fn measure(oomtrace: &Path, exe: &Path, md: &mut String) -> Result<()> {
    let idle_rule: &[&str] = &["--fail-nth", "4000000000"];
    let every_call: &[&str] = &["--fail-rate", "1", "--fail-seed", "1", "--fail-size", "64"];
    let (mut plain, mut armed, mut small, mut failing) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        eprintln!("bench: inject round {}/{ROUNDS}", round + 1);
        plain.push(loop_ns(oomtrace, exe, &[], IDLE_CALLS)?);
        armed.push(loop_ns(oomtrace, exe, idle_rule, IDLE_CALLS)?);
        small.push(loop_ns(oomtrace, exe, &[], FAIL_CALLS)?);
        failing.push(loop_ns(oomtrace, exe, every_call, FAIL_CALLS)?);
    }
    let (plain, armed) = (median(plain), median(armed));
    let (small, failing) = (median(small), median(failing));
    let per = |ns: f64, n: u64| ns / n as f64 / 1e3;
    let idle_us = per(armed - plain, IDLE_CALLS);
    let fail_us = per(failing - small, FAIL_CALLS);
    let _ = writeln!(
        md,
        "\n## Failure injection\n\nThe malloc/free loop under `oomtrace run`, {ROUNDS} rounds \
         interleaved, medians of the loop's own time.\n\n\
         | configuration | loop | per iteration (one malloc, one free) |\n|---|---|---|\n\
         | {IDLE_CALLS} iterations, no rule | {:.3} s | {:.3} µs |\n\
         | {IDLE_CALLS} iterations, `--fail-nth 4000000000` (armed, never fires) | {:.3} s | {:.3} µs |\n\
         | {FAIL_CALLS} iterations, no rule | {:.3} s | {:.3} µs |\n\
         | {FAIL_CALLS} iterations, `--fail-rate 1 --fail-size 64` (every malloc fails) | {:.3} s | {:.3} µs |\n\n\
         **An armed but idle rule costs {idle_us:+.3} µs per call** (the kernel's decision: a \
         difference within the noise of the traced call itself). **An injected failure costs {fail_us:.0} µs** over a traced \
         call: the thread is stopped by a signal, its registers rewritten through ptrace, and \
         resumed.",
        plain / 1e9,
        per(plain, IDLE_CALLS),
        armed / 1e9,
        per(armed, IDLE_CALLS),
        small / 1e9,
        per(small, FAIL_CALLS),
        failing / 1e9,
        per(failing, FAIL_CALLS),
    );
    eprintln!("bench: idle rule {idle_us:+.3} µs/call, injected failure {fail_us:.0} µs");
    Ok(())
}
