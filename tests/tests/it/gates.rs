//! Growth verdicts on runs of seconds, a process's own growth in the text report, thread stacks
//! as reserved vs resident, and `--expect-no-growth` (issue 19): tests/workloads/gates.c.

use std::path::PathBuf;

use serde_json::Value;

use crate::util::*;

pub fn gates_exe() -> PathBuf {
    build_c("gates", "gates", &["-O2", "-g", "-fno-omit-frame-pointer"])
}

fn stack<'a>(report: &'a Value, function: &str) -> &'a Value {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["frames"][0]["function"] == function)
        .unwrap_or_else(|| panic!("no stack for {function}"))
}

#[test]
fn a_two_second_leak_is_growing_and_a_cache_full_in_a_second_is_not() {
    if !require_bpf() {
        return;
    }
    let report_file = work_dir().join("gates-short.json");
    let out = output(
        oomtrace()
            .args(["run", "--expect-no-growth", "--format", "json", "-o"])
            .arg(&report_file)
            .args(["--".as_ref(), gates_exe().as_os_str(), "short".as_ref()]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The program says what it leaked and how long it took: the true rate.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let (leaked, secs): (f64, f64) = (words[1].parse().unwrap(), words[3].parse().unwrap());
    let truth = leaked / secs;
    let report: Value = serde_json::from_slice(&std::fs::read(&report_file).unwrap()).unwrap();
    let leak = &stack(&report, "steady_leak")["growth"];
    assert_eq!(leak["class"], "growing", "{leak}");
    let rate = leak["bytes_per_s"].as_f64().unwrap();
    assert!(
        (rate - truth).abs() <= 0.2 * truth,
        "rate {rate} vs {truth} B/s"
    );
    let cache = &stack(&report, "cache_put")["growth"];
    assert_ne!(cache["class"], "growing", "{cache}");
    // --expect-no-growth fails the run on the leak and names it.
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("growth gate failed"), "{stderr}");
    assert!(
        stderr.contains("stack at steady_leak (gates.c:"),
        "{stderr}"
    );
    assert!(!stderr.contains("cache_put"), "{stderr}");
}

/// The rate after `what ▲ growing ` in a growth line, in `unit`s per second.
pub fn rate_in(line: &str, what: &str, unit: &str) -> f64 {
    let rest = line
        .split(&format!("{what} ▲ growing "))
        .nth(1)
        .unwrap_or_else(|| panic!("{what} not growing in {line:?}"));
    let (num, tail) = rest.split_once(' ').unwrap();
    assert!(tail.starts_with(&format!("{unit}/s")), "{line}");
    num.parse().unwrap()
}

#[test]
fn thread_and_fd_growth_of_a_three_second_run_is_in_the_text_report() {
    if !require_bpf() {
        return;
    }
    let out = output(
        oomtrace()
            .args(["run", "--format", "text", "--"])
            .args([gates_exe().as_os_str(), "vitals".as_ref()]),
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .skip_while(|l| !l.starts_with("Growth of each process:"))
        .nth(1)
        .unwrap_or_else(|| panic!("no growth lines in {text}"));
    // 3 threads and 10 descriptors a second, in their own units.
    let threads = rate_in(line, "threads", "threads");
    let fds = rate_in(line, "fds", "fds");
    assert!((2.4..=3.6).contains(&threads), "{line}");
    assert!((8.0..=12.0).contains(&fds), "{line}");
}

#[test]
fn thread_stacks_are_reserved_address_space_not_heap() {
    if !require_bpf() {
        return;
    }
    let file = work_dir().join("gates-stacks.json");
    let out = output(
        oomtrace()
            .args(["run", "--format", "json", "-o"])
            .arg(&file)
            .args(["--".as_ref(), gates_exe().as_os_str(), "stacks".as_ref()]),
    );
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let p = &report["processes"][0];
    let ts = &p["mapped"]["thread_stacks"];
    assert_eq!(ts["count"], 20, "{ts}");
    let reserved = ts["reserved_bytes"].as_u64().unwrap();
    assert!(
        (20 * (8 << 20)..=20 * ((8 << 20) + (64 << 10))).contains(&reserved),
        "{ts}"
    );
    // Parked threads touch a few pages of their 8 MiB each.
    let resident = ts["resident_bytes"].as_u64().unwrap();
    assert!(resident > 0 && resident < 4 << 20, "{ts}");
    // Not heap: nothing near 8 MiB on any stack, and the process holds little.
    assert!(p["outstanding_bytes"].as_u64().unwrap() < 1 << 20, "{p}");
    for s in report["stacks"].as_array().unwrap() {
        assert!(s["outstanding_bytes"].as_u64().unwrap() < 1 << 20, "{s}");
    }
    let out = output(
        oomtrace()
            .args(["run", "--format", "text", "--"])
            .args([gates_exe().as_os_str(), "stacks".as_ref()]),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("thread stacks: 20 thread(s), 160."), "{text}");
}
