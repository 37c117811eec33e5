//! Who killed it, and hazards (issue: the OOM-resilience audit, parts 3 and 4): a process that
//! dies by a signal names its sender, from `signal:signal_generate`, and the signal it really
//! died of (the kernel delivers SIGKILL for any fatal signal; the status word keeps the first).

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// Kills `pid` with SIGTERM from a `kill` process of its own; returns that process's pid.
fn kill_term(pid: u32) -> u32 {
    let mut k = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .spawn()
        .unwrap();
    let sender = k.id();
    assert!(k.wait().unwrap().success());
    sender
}

fn assert_killed_by(report: &Value, pid: u32, sender: u32) {
    let p = process(report, u64::from(pid));
    assert_eq!(p["signal"], 15, "{p}");
    let k = &p["killed_by"];
    assert_eq!(k["signal"], 15, "{k}");
    assert_eq!(k["pid"], sender, "{k}");
    assert_eq!(k["comm"], "kill", "{k}");
    assert_eq!(k["uid"], 0, "{k}");
}

#[test]
fn a_process_killed_by_another_names_the_sender() {
    if !require_bpf() {
        return;
    }
    // Under run: the command is our child's child; find it by its parent.
    let mut tracer = oomtrace()
        .args(["run", "--format", "json", "--", "sleep", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tracer_pid = tracer.id();
    let sleep = (0..400)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(25));
            let kids =
                std::fs::read_to_string(format!("/proc/{tracer_pid}/task/{tracer_pid}/children"))
                    .unwrap_or_default();
            // The holder thread forks the command: look in every thread's children.
            let mut all = kids;
            for t in std::fs::read_dir(format!("/proc/{tracer_pid}/task"))
                .unwrap()
                .flatten()
            {
                all.push(' ');
                all.push_str(
                    &std::fs::read_to_string(t.path().join("children")).unwrap_or_default(),
                );
            }
            all.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .find(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.trim() == "sleep")
                })
        })
        .expect("the traced sleep");
    std::thread::sleep(Duration::from_millis(300));
    let sender = kill_term(sleep);
    let mut out = String::new();
    std::io::Read::read_to_string(tracer.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(tracer.wait().unwrap().code(), Some(143));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_killed_by(&report, sleep, sender);

    // Attached by pid, the same.
    let mut target = Command::new("sleep").arg("60").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut t = oomtrace()
        .args(["--pid", &target.id().to_string(), "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(t.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("attached to pid"), "{line}");
    let sender = kill_term(target.id());
    let _ = target.wait();
    let out = t.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_killed_by(&report, target.id(), sender);
}
