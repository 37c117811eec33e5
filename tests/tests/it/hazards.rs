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

/// `tests/workloads/hazards.c`, with frame pointers.
fn hazards_prog() -> std::path::PathBuf {
    build_c(
        "hazards",
        "hazards",
        &["-O0", "-g", "-fno-omit-frame-pointer"],
    )
}

/// The one process's `faults`, and its hazards of `kind`.
fn faults_of(report: &Value) -> &Value {
    let procs = report["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{report}");
    &procs[0]["faults"]
}

fn functions(frames: &Value) -> Vec<&str> {
    frames
        .as_array()
        .unwrap_or_else(|| panic!("no frames: {frames}"))
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect()
}

#[test]
fn allocations_in_signal_handlers_are_hazards_and_siglongjmp_ends_one() {
    if !require_bpf() {
        return;
    }
    let prog = hazards_prog();
    let (code, report) = run_json(&[prog.as_os_str(), "handler".as_ref()]);
    assert_eq!(code, 0, "{report}");
    let f = faults_of(&report);
    assert_eq!(f["hazard_counts"]["signal_handler_allocs"], 2, "{f}");
    assert_eq!(f["hazard_counts"]["double_frees"], 0, "{f}");
    assert_eq!(f["hazard_counts"]["invalid_frees"], 0, "{f}");
    let hazards = f["hazards"].as_array().unwrap();
    // SIGALRM's handler returned through rt_sigreturn; SIGUSR1's left by siglongjmp, and the
    // 99 B allocation after the jump is not in any handler.
    let seen: Vec<(i64, i64, &str)> = hazards
        .iter()
        .map(|h| {
            assert_eq!(h["kind"], "signal_handler_alloc", "{h}");
            assert_eq!(h["function"], "malloc", "{h}");
            (
                h["signal"].as_i64().unwrap(),
                h["size"].as_i64().unwrap(),
                functions(&h["frames"])[0],
            )
        })
        .collect();
    assert_eq!(seen, vec![(14, 77, "on_alarm"), (10, 88, "on_usr1")], "{f}");
    for h in hazards {
        assert!(functions(&h["frames"]).contains(&"main"), "{h}");
    }
    // The accounting is untouched: the handlers' blocks are still held, the jump's freed.
    let on_alarm = figures(&report, "on_alarm", None);
    assert_eq!((on_alarm.allocs, on_alarm.outstanding_bytes), (1, 77));
    let after = figures(&report, "after_jump", None);
    assert_eq!((after.allocs, after.outstanding_bytes), (1, 0));
}

#[test]
fn a_double_free_is_reported_with_the_allocation_and_both_frees() {
    if !require_bpf() {
        return;
    }
    let prog = hazards_prog();
    let (code, report) = run_json(&[prog.as_os_str(), "double".as_ref()]);
    // glibc catches it too, and aborts: 128 + SIGABRT.
    assert_eq!(code, 134, "{report}");
    let f = faults_of(&report);
    assert_eq!(f["hazard_counts"]["double_frees"], 1, "{f}");
    assert_eq!(f["hazard_counts"]["invalid_frees"], 0, "{f}");
    let h = &f["hazards"][0];
    assert_eq!(h["kind"], "double_free", "{h}");
    assert_eq!(functions(&h["frames"])[0], "free_again", "{h}");
    assert_eq!(
        functions(&h["alloc_frames"])[..3],
        ["make_block", "twice", "main"],
        "{h}"
    );
    assert_eq!(functions(&h["first_free_frames"])[0], "free_once", "{h}");
    // The abort that followed is the crash, in the kernel's own words.
    assert_eq!(f["crash"]["signal"], 6, "{f}");
}

#[test]
fn a_block_freed_through_another_allocator_names_both() {
    if !require_bpf() {
        return;
    }
    let prog = hazards_prog();
    let (code, report) = run_json(&[prog.as_os_str(), "cross".as_ref()]);
    // glibc's free refuses mimalloc's block and aborts.
    assert_eq!(code, 134, "{report}");
    let f = faults_of(&report);
    assert_eq!(f["hazard_counts"]["cross_allocator_frees"], 1, "{f}");
    let h = &f["hazards"][0];
    assert_eq!(h["kind"], "cross_allocator_free", "{h}");
    assert_eq!(functions(&h["frames"])[0], "free_with_libc", "{h}");
    assert_eq!(
        functions(&h["alloc_frames"])[..3],
        ["from_mimalloc", "cross", "main"],
        "{h}"
    );
}

#[test]
fn a_crash_is_reported_with_the_stack_where_it_struck() {
    if !require_bpf() {
        return;
    }
    let prog = hazards_prog();
    let (code, report) = run_json(&[prog.as_os_str(), "crash".as_ref()]);
    assert_eq!(code, 128 + 11, "{report}");
    let p = &report["processes"][0];
    assert_eq!(p["signal"], 11, "{p}");
    let crash = &faults_of(&report)["crash"];
    assert_eq!(crash["signal"], 11, "{crash}");
    assert_eq!(
        functions(&crash["frames"])[..2],
        ["crash_here", "main"],
        "{crash}"
    );
    // The faulting line itself, not the call before it.
    let source = std::fs::read_to_string(root().join("tests/workloads/hazards.c")).unwrap();
    let line = source
        .lines()
        .position(|l| l.contains("*nowhere = 1"))
        .unwrap()
        + 1;
    assert_eq!(crash["frames"][0]["line"], line, "{crash}");
    assert_eq!(faults_of(&report)["hazard_counts"]["double_frees"], 0);
}
