//! OOM kills, memory-capped runs, artifacts and CI budgets (issue 3).

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

const CGROUP_V1: &str = "/sys/fs/cgroup/memory";

/// Cgroups oomtrace process `owner` created (named `oomtrace-<owner>-<n>`).
fn cgroups_of(owner: u32) -> Vec<String> {
    let prefix = format!("oomtrace-{owner}-");
    std::fs::read_dir(CGROUP_V1)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn capped_run_is_oom_killed_and_reported_with_its_growing_stack() {
    if !require_bpf() {
        return;
    }
    let dir = work_dir().join("oom-artifacts");
    let _ = std::fs::remove_dir_all(&dir);
    let child = oomtrace()
        .args(["run", "--memory-max", "64M", "--artifacts"])
        .arg(&dir)
        .args(["--format", "json", "--"])
        .arg(groundtruth_fp())
        .arg("grow")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tracer_pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(137),
        "a SIGKILLed command makes oomtrace exit 137: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = report["processes"][0]["pid"].as_u64().unwrap();
    assert_eq!(report["processes"][0]["signal"], 9);
    // The OOM killer sent it: the kernel, no process.
    let killed_by = &report["processes"][0]["killed_by"];
    assert_eq!(killed_by["signal"], 9, "{killed_by}");
    assert_eq!(killed_by["comm"], "kernel", "{killed_by}");
    assert!(killed_by["pid"].is_null(), "{killed_by}");
    let oom = report["oom_events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["pid"] == root)
        .unwrap_or_else(|| panic!("victim not in {report}"));
    assert_eq!(
        oom["top_stacks"][0]["frames"][0]["function"], "grow_forever",
        "{oom}"
    );
    let anon = oom["anon_rss_bytes"].as_u64().unwrap();
    assert!(
        (48 << 20..=68 << 20).contains(&anon),
        "anon RSS near the 64 MiB cap: {anon}"
    );
    assert!(
        oom["cgroup"].as_str().unwrap().contains("oomtrace-"),
        "{oom}"
    );
    assert!(oom["top_stacks"][0]["outstanding_bytes"].as_u64().unwrap() >= 48 << 20);
    // The victim's history up to the kill: its RSS and its top stack's bytes, both rising.
    let rising = |series: &Value| {
        let pts = series.as_array().unwrap();
        pts.len() >= 2 && pts.last().unwrap()[1].as_u64() > pts.first().unwrap()[1].as_u64()
    };
    assert!(rising(&oom["rss_series"]), "{}", oom["rss_series"]);
    assert!(
        rising(&oom["stack_series"][0]),
        "{}",
        oom["stack_series"][0]
    );
    // Artifacts.
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert!(summary["oom_kills"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["signal"], 9);
    assert_eq!(summary["memory_max"], 64u64 << 20);
    assert!(
        summary["peak_outstanding_bytes"].as_u64().unwrap() >= 48 << 20,
        "{summary}"
    );
    assert!(
        summary["peak_rss_bytes"].as_u64().unwrap() >= 48 << 20,
        "{summary}"
    );
    let log = std::fs::read_to_string(dir.join("memory_log.csv")).unwrap();
    let mut lines = log.lines();
    assert_eq!(
        lines.next(),
        Some("t_s,pid,rss_bytes,heap_outstanding_bytes,cgroup_usage_bytes")
    );
    assert!(
        lines.count() as u64 == summary["samples"].as_u64().unwrap(),
        "one row per sample"
    );
    let ooms: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("oom_events.json")).unwrap())
            .unwrap();
    assert_eq!(ooms, report["oom_events"]);
    let kernel = std::fs::read_to_string(dir.join("kernel_log.txt")).unwrap();
    assert!(
        kernel.contains(&format!("Killed process {root}")),
        "{kernel}"
    );
    let rep: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(rep, report);
    assert!(
        cgroups_of(tracer_pid).is_empty(),
        "cgroup left behind: {:?}",
        cgroups_of(tracer_pid)
    );
}

#[test]
fn budgets_pass_fail_and_warn() {
    if !require_bpf() {
        return;
    }
    let gt = groundtruth_fp();
    // Under budget: the command's own status.
    let out = output(
        oomtrace()
            .args(["run", "--budget", "1G", "--", "sh", "-c"])
            .arg(format!("{} scaled 100; exit 5", gt.display())),
    );
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 10000 × 1000 bytes = 9.5 MiB of heap: over an 8 MiB budget, exit 3 naming the stack.
    let out = output(
        oomtrace()
            .args(["run", "--budget", "8M", "--"])
            .arg(&gt)
            .args(["scaled", "10000"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("budget exceeded"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("#1") && l.contains("scaled_leak") && l.contains("10000 block(s)")),
        "{err}"
    );
    // Within 80-100 % of a 12 MiB budget: a warning, the command's status.
    let out = output(
        oomtrace()
            .args(["run", "--budget", "12M", "--warn-at", "75%", "--"])
            .arg(&gt)
            .args(["scaled", "10000"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("warning: peak memory"), "{err}");
}

#[test]
fn an_untraced_oom_kill_shows_in_oom_watch_and_in_the_report() {
    if !require_bpf() {
        return;
    }
    let mut watch = oomtrace()
        .args(["oom-watch", "--format", "json", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(watch.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("watching the OOM killer"), "{line}");
    let tracer = oomtrace()
        .args(["run", "--format", "json", "--", "sleep", "4"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // A process in a cgroup of the test's own, with a 32 MiB cap, that oomtrace does not trace.
    let cg = Path::new(CGROUP_V1).join(format!("oomtrace-test-hog-{}", std::process::id()));
    std::fs::create_dir_all(&cg).unwrap();
    std::fs::write(cg.join("memory.limit_in_bytes"), (32u64 << 20).to_string()).unwrap();
    let script = format!(
        "echo $$ > {}/cgroup.procs; exec {} grow",
        cg.display(),
        groundtruth_fp().display()
    );
    let hog = Command::new("sh").arg("-c").arg(&script).spawn().unwrap();
    let hog_pid = hog.id();
    let st = hog.wait_with_output().unwrap().status;
    let _ = std::fs::remove_dir(&cg);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
    let watched = watch.wait_with_output().unwrap();
    let kill: Value = serde_json::from_slice(&watched.stdout).unwrap();
    assert_eq!(kill["pid"], hog_pid);
    assert_eq!(kill["comm"], "groundtruth-fp");
    assert!(
        kill["cgroup"]
            .as_str()
            .unwrap()
            .contains("oomtrace-test-hog"),
        "{kill}"
    );
    let report: Value = serde_json::from_slice(&tracer.wait_with_output().unwrap().stdout).unwrap();
    let o = report["oom_events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["pid"] == hog_pid)
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(o["comm"], "groundtruth-fp");
    assert_eq!(
        o["top_stacks"],
        serde_json::json!([]),
        "not traced: no stacks"
    );
}

#[test]
fn ctrl_c_during_a_capped_run_leaves_no_cgroup() {
    if !require_bpf() {
        return;
    }
    let child = oomtrace()
        .args(["run", "--memory-max", "64M", "--", "sleep", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cgroups_of(pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "oomtrace never created its cgroup"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let cg = Path::new(CGROUP_V1).join(&cgroups_of(pid)[0]);
    let sleeper: u32 = loop {
        let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
        if let Some(p) = procs.lines().next() {
            break p.trim().parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cgroups_of(pid).is_empty(), "cgroup left behind");
    assert!(
        !Path::new(&format!("/proc/{sleeper}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{sleeper}/cmdline"))
                .unwrap_or_default()
                .is_empty(),
        "the capped command was ended with its cgroup"
    );
}
