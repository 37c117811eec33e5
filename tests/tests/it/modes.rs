//! `--all`, stopping with SIGINT, and a full ring buffer (issue 2).

use std::io::Write as _;
use std::process::{Child, Command};

use serde_json::Value;

use crate::util::*;

fn sigint(child: &Child) {
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn all_mode_sees_a_process_it_did_not_start() {
    if !require_bpf() {
        return;
    }
    let (mut w, pid, mut stdin) = waiting_workload();
    let tracer = start_tracer(&["--all", "--format", "json", "--duration", "60s"]);
    writeln!(stdin, "go").unwrap();
    assert!(w.wait().unwrap().success());
    let tracer_pid = u64::from(tracer.id());
    sigint(&tracer);
    let out = tracer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Ctrl-C ends an --all session normally ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_figures(
        &report,
        "after_attach",
        Some(u64::from(pid)),
        leak(20_000, 5),
    );
    assert_eq!(process(&report, u64::from(pid))["exit_code"], 0);
    let own = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["pid"].as_u64() == Some(tracer_pid));
    assert!(!own, "oomtrace never traces itself");
}

#[test]
fn sigint_stops_an_attach_session_and_writes_the_report() {
    if !require_bpf() {
        return;
    }
    let (mut w, pid, mut stdin) = waiting_workload();
    let tracer = start_tracer(&["--pid", &pid.to_string(), "--format", "json"]);
    sigint(&tracer);
    let out = tracer.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = process(&report, u64::from(pid));
    assert_eq!(
        p["exit_code"],
        Value::Null,
        "still running when the report was written"
    );
    writeln!(stdin, "go").unwrap();
    assert!(
        w.wait().unwrap().success(),
        "the target runs on, untouched, after oomtrace detached"
    );
}

#[test]
fn a_full_ring_buffer_is_counted_and_shown() {
    if !require_bpf() {
        return;
    }
    // 4 KiB holds 64 events; the loop makes 40000 between two reads.
    let exe = build_c("bench_loop", "bench_loop", &["-O2"]);
    let out = output(
        oomtrace()
            .args(["run", "--ring-buffer-kib", "4", "--"])
            .arg(&exe)
            .args(["20000", "1"]),
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lost: u64 = text
        .split("lost events: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lost-events figure in:\n{text}"));
    assert!(lost > 0, "{text}");
    assert!(
        text.contains(&format!("warning: {lost} events were lost")),
        "{text}"
    );
}
