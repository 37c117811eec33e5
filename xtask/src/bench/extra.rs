//! Figures besides overhead: bytes per event of a recording, and the growth classifier's memory.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Bytes per event of a recording of the malloc/free loop.
pub fn recording_size(oomtrace: &Path, exe: &Path, dir: &Path, md: &mut String) -> Result<()> {
    let file = dir.join("loop.oomtrace");
    let out = Command::new(oomtrace)
        .args(["record", "-o"])
        .arg(&file)
        .args(["--format", "json", "--"])
        .arg(exe)
        .args(["200000", "1"])
        .output()?;
    if !out.status.success() {
        bail!(
            "oomtrace record failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The workload prints to the same stdout: read the report back from the recording.
    let back = Command::new(oomtrace)
        .arg("report")
        .arg(&file)
        .args(["--format", "json"])
        .output()?;
    let report: serde_json::Value =
        serde_json::from_slice(&back.stdout).context("oomtrace report printed no JSON")?;
    // Allocations and frees of every process: the events that make up almost all of the file.
    let events: u64 = report["processes"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| p["allocs"].as_u64().unwrap_or(0) + p["frees"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    let bytes = std::fs::metadata(&file)?.len();
    let per = bytes as f64 / events.max(1) as f64;
    let _ = writeln!(
        md,
        "\n## Recording size\n\n`oomtrace record -o loop.oomtrace -- bench_loop 200000 1`: {bytes} bytes for \
         {events} allocations and frees: **{per:.2} bytes per event**, with the header, stacks, symbols, \
         samples and footer counted in.",
    );
    eprintln!("bench: recording {bytes} bytes, {per:.2} bytes per counted event");
    Ok(())
}

/// Memory the growth classifier keeps per stack, as the series' own test measures it.
pub fn classifier_memory(md: &mut String) -> Result<()> {
    let out = crate::cargo()
        .args([
            "test",
            "--release",
            "--package",
            "oomtrace",
            "--lib",
            "memory_bound_at_full_capacity",
            "--",
            "--nocapture",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The harness prints the test's name on the same line as the test's own output.
    let line = text
        .lines()
        .find_map(|l| l.find("Series at full capacity").map(|i| &l[i..]))
        .ok_or_else(|| anyhow::anyhow!("the series memory test printed no figure:\n{text}"))?;
    let _ = writeln!(
        md,
        "\n## Growth classifier memory\n\nPer time series (one per stack that held memory, and four per process), \
         at full capacity after 100000 samples: {line}. At most 8192 stack series are kept \
         (`model/timeline.rs`), so the classifier's memory stays under ~128 MiB however many stacks appear."
    );
    Ok(())
}
