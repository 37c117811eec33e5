//! A process that allocates and exits within a millisecond is gone before its `/proc/PID/maps`
//! can be read; its frames must symbolize anyway (from the kernel's records of its mappings).
//! And a child whose allocator had to be probed after it started is warned about.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::util::*;

/// Keeps every CPU busy until dropped, so the tracer (niced) is the last to run.
struct CpuHogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHogs {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `ownmalloc.c` built against libc's malloc: it allocates its known bytes and exits at once.
fn quick_program() -> std::path::PathBuf {
    build_c(
        "ownmalloc",
        "ownmalloc-libc",
        &["-O2", "-g", "-fno-omit-frame-pointer"],
    )
}

#[test]
fn processes_gone_in_a_millisecond_still_symbolize() {
    if !require_bpf() {
        return;
    }
    const RUNS: usize = 30;
    let exe = quick_program();
    let script = format!("for i in $(seq {RUNS}); do {}; done", exe.display());
    // Busy CPUs keep the tracer from reading a child's maps before it exits: without the
    // kernel's mapping records a fifth to a third of these children lost every symbol.
    let hogs = CpuHogs::start();
    let (code, report) = run_json(&["sh".as_ref(), "-c".as_ref(), script.as_ref()]);
    drop(hogs);
    assert_eq!(code, 0);
    let children: Vec<u64> = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["comm"] == "ownmalloc-libc")
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(children.len(), RUNS, "{report}");
    for pid in children {
        assert_figures(&report, "leak_own", Some(pid), leak(10_000, 10));
        let churn = figures(&report, "churn_own", Some(pid));
        assert_eq!(
            (churn.allocs, churn.allocated_bytes),
            (5, 1500),
            "pid {pid}"
        );
        for st in report["stacks"].as_array().unwrap() {
            let top = st["frames"][0]["function"].as_str();
            if st["pid"].as_u64() == Some(pid) && matches!(top, Some("leak_own" | "churn_own")) {
                assert_eq!(st["frames"][1]["function"], "main", "{st}");
            }
        }
    }
    assert_consistent(&report);
}

/// `run` holds each exec until the new program's allocator is probed: a child that execs a
/// program with its own malloc library is counted from its first call, and nothing is "late".
#[test]
fn a_child_with_its_own_allocator_is_exact_from_its_first_call() {
    if !require_bpf() {
        return;
    }
    let (exe, _lib) = crate::allocator::own_malloc_program();
    let script = format!("{} && {}", exe.display(), exe.display());
    let out = output(
        oomtrace()
            .args(["run", "--format", "json", "--", "sh", "-c"])
            .arg(&script),
    );
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("probed only after it started"),
        "nothing is probed late under run:\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let children: Vec<u64> = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["comm"] == "ownmalloc")
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(children.len(), 2, "{report}");
    for pid in children {
        assert_figures(&report, "leak_own", Some(pid), leak(10_000, 10));
        let churn = figures(&report, "churn_own", Some(pid));
        assert_eq!(
            (churn.allocs, churn.allocated_bytes),
            (5, 1500),
            "pid {pid}"
        );
    }
}
