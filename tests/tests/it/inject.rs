//! Failure injection and the sweep (issue 20, parts 1 and 2): each `--fail-*` flag fails exactly
//! the calls it names (checked against what the program itself saw), realloc keeps the old
//! block, C++ `new` throws, a Rust program aborts, and `oomtrace sweep` classifies a checked
//! site, an unchecked one, a leaking transaction and a hang.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::*;

/// The C workload with nine calls from named sites (`tests/workloads/inject.c`).
fn inject_c() -> PathBuf {
    build_c("inject", "inject", &["-O0", "-g"])
}

/// Builds `tests/workloads/<src>` with `compiler ARGS -o OUT SRC`.
fn build_with(compiler: &str, args: &[&str], src: &str, name: &str) -> PathBuf {
    let out = work_dir().join(name);
    let status = Command::new(compiler)
        .args(args)
        .arg("-o")
        .arg(&out)
        .arg(root().join("tests/workloads").join(src))
        .status()
        .unwrap_or_else(|e| panic!("{compiler} runs: {e}"));
    assert!(status.success(), "building {name} with {compiler} failed");
    out
}

/// `oomtrace run --format json -o FILE ARGS -- PROG`: the output (the program's stdout) and the
/// report.
fn run_failing(args: &[&str], prog: &Path) -> (Output, Value) {
    let file = work_dir().join("inject-report.json");
    let _ = std::fs::remove_file(&file);
    let out = output(
        oomtrace()
            .args(["run", "--format", "json", "-o"])
            .arg(&file)
            .args(args)
            .arg("--")
            .arg(prog),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read(&file).unwrap_or_else(|e| panic!("no report ({e}); {stderr}"));
    let report: Value = serde_json::from_slice(&text).unwrap();
    (out, report)
}

/// The program's lines other than successful calls: what failed, and what it made of it.
fn failures(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.ends_with(" ok"))
        .map(str::to_owned)
        .collect()
}

fn injections_total(report: &Value) -> u64 {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["faults"]["injections_total"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn each_fail_flag_fails_exactly_the_calls_it_names() {
    if !require_bpf() {
        return;
    }
    let prog = inject_c();
    let null = |n: u32, site: &str, f: &str, size: u32| {
        format!("call {n} {site} {f} {size} NULL errno=12")
    };
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        // The 4th allocator call of the process, whatever it is.
        (
            vec!["--fail-nth", "4"],
            vec![null(4, "site_two", "calloc", 200)],
        ),
        // Any frame: both calls made at site_two.
        (
            vec!["--fail-site", "site_two"],
            vec![
                null(4, "site_two", "calloc", 200),
                null(5, "site_two", "calloc", 200),
            ],
        ),
        // Any frame: outer_path is a caller of site_three.
        (
            vec!["--fail-site", "outer_path"],
            vec![null(6, "site_three", "malloc", 5000)],
        ),
        // Only the site counts: outer_path calls no allocator itself.
        (vec!["--fail-at-site", "outer_path"], vec![]),
        // The 2nd call made at site_one.
        (
            vec!["--fail-at-site", "site_one", "--fail-nth", "2"],
            vec![null(2, "site_one", "malloc", 100)],
        ),
        (
            vec!["--fail-size", "4000-6000"],
            vec![
                null(6, "site_three", "malloc", 5000),
                null(9, "site_grow", "realloc", 4096),
                "old block intact".into(),
            ],
        ),
        (
            vec!["--fail-rate", "1", "--fail-seed", "7", "--fail-size", "200"],
            vec![
                null(4, "site_two", "calloc", 200),
                null(5, "site_two", "calloc", 200),
            ],
        ),
        // 700 B held after call 5: 5000 more, then 256 more, then 4096 more pass 800.
        (
            vec!["--fail-after", "800"],
            vec![
                null(6, "site_three", "malloc", 5000),
                "call 7 site_align posix_memalign 256 ret=12 untouched".into(),
                null(9, "site_grow", "realloc", 4096),
                "old block intact".into(),
            ],
        ),
        (
            vec!["--fail-at-site", "site_align"],
            vec!["call 7 site_align posix_memalign 256 ret=12 untouched".into()],
        ),
        // realloc's failure leaves the old block as it was.
        (
            vec!["--fail-at-site", "site_grow"],
            vec![
                null(9, "site_grow", "realloc", 4096),
                "old block intact".into(),
            ],
        ),
    ];
    for (args, expected) in cases {
        let (out, report) = run_failing(&args, &prog);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        let got = failures(&out);
        assert_eq!(
            got, expected,
            "{args:?}: expected {expected:?}, got {got:?}; {stderr}"
        );
        let failed = expected.iter().filter(|l| l.starts_with("call ")).count() as u64;
        assert_eq!(injections_total(&report), failed, "{args:?}: {stderr}");
        // Every allocator call of the program is counted once, failed ones too.
        let calls = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("call "))
            .count();
        assert_eq!(calls, 9, "{args:?}");
    }
}

#[test]
fn fail_rate_prints_its_seed_and_the_seed_repeats_the_run() {
    if !require_bpf() {
        return;
    }
    let prog = inject_c();
    let (first, _) = run_failing(&["--fail-rate", "0.5"], &prog);
    let stderr = String::from_utf8_lossy(&first.stderr);
    let seed = stderr
        .split("--fail-seed ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no seed printed: {stderr}"))
        .to_owned();
    let (again, report) = run_failing(&["--fail-rate", "0.5", "--fail-seed", &seed], &prog);
    assert_eq!(failures(&again), failures(&first), "seed {seed}");
    let failed = failures(&again)
        .iter()
        .filter(|l| l.starts_with("call "))
        .count() as u64;
    assert_eq!(injections_total(&report), failed);
}

#[test]
fn the_report_lists_the_injected_failure_with_its_stack_and_exit_status() {
    if !require_bpf() {
        return;
    }
    let prog = build_c("sweep", "sweep-workload", &["-O0", "-g"]);
    let (out, report) = run_failing(&["--fail-at-site", "checked_site"], &prog);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("checked: out of memory"), "{stderr}");
    assert!(
        stderr.contains("oomtrace: injected 1 allocation failure(s) in pid")
            && stderr.contains("at checked_site; then exited with 1"),
        "{stderr}"
    );
    let procs = report["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{report}");
    let p = &procs[0];
    assert_eq!(p["exit_code"], 1, "{p}");
    let f = &p["faults"];
    assert_eq!(f["injections_total"], 1, "{f}");
    let inj = f["injections"].as_array().unwrap();
    assert_eq!(inj.len(), 1, "{f}");
    let i = &inj[0];
    assert_eq!(i["function"], "malloc", "{i}");
    assert_eq!(i["size"], 32, "{i}");
    assert_eq!(i["how"], "null", "{i}");
    let names: Vec<&str> = i["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect();
    let site = i["site"].as_u64().unwrap() as usize;
    assert_eq!(names.get(site), Some(&"checked_site"), "{i}");
    assert!(names.contains(&"main"), "{i}");
    // The failed call is counted on its stack.
    assert_eq!(figures(&report, "checked_site", None).failed_allocs, 1);

    // The text report says the same.
    let text = output(
        oomtrace()
            .args([
                "run",
                "--format",
                "text",
                "--fail-at-site",
                "checked_site",
                "--",
            ])
            .arg(&prog),
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Injected failures: 1"), "{text}");
    assert!(text.contains("1 injected, then exited with 1"), "{text}");
    assert!(
        text.contains("#1 malloc(32) failed (NULL, errno ENOMEM) at checked_site"),
        "{text}"
    );
}

#[test]
fn cpp_new_throws_bad_alloc_and_nothrow_new_returns_null() {
    if !require_bpf() {
        return;
    }
    let prog = build_with("g++", &["-O0", "-g"], "inject_new.cpp", "inject-new");
    // new char[100] is the program's only 100-byte request; new (nothrow) char[200] its only
    // 200-byte one.
    let (out, report) = run_failing(&["--fail-size", "100"], &prog);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "caught std::bad_alloc\nnothrow ok\n");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(injections_total(&report), 1);
    let (out, report) = run_failing(&["--fail-size", "200"], &prog);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "new ok\nnothrow NULL\n");
    assert_eq!(injections_total(&report), 1);
}

/// `oomtrace sweep --format json ARGS -- PROG`: exit code, results.
fn sweep(args: &[&str], prog: &Path) -> (i32, Value, String) {
    let out = output(
        oomtrace()
            .args(["sweep", "--format", "json"])
            .args(args)
            .arg("--")
            .arg(prog),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("sweep output is not JSON ({e}); stderr: {stderr}"));
    (out.status.code().unwrap_or(-1), v, stderr)
}

fn run_at<'a>(v: &'a Value, site: &str) -> &'a Value {
    let runs: Vec<&Value> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["injected"]["site"] == site)
        .collect();
    assert_eq!(runs.len(), 1, "runs at {site}: {v}");
    runs[0]
}

fn function_names(frames: &Value) -> Vec<&str> {
    frames
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("?"))
        .collect()
}

#[test]
fn a_rust_program_aborts_on_allocation_failure_and_the_sweep_says_aborted() {
    if !require_bpf() {
        return;
    }
    let prog = build_with("rustc", &["-O", "-g"], "inject_abort.rs", "inject-abort");
    let (_, v, stderr) = sweep(&[], &prog);
    let r = run_at(&v, "inject_abort::site_vec");
    assert_eq!(r["outcome"], "aborted", "{r}; {stderr}");
    assert_eq!(r["signal"], 6, "{r}");
    assert_eq!(r["exit_code"], Value::Null, "{r}");
    assert_eq!(r["injected"]["occurrence"], 1, "{r}");
    assert_eq!(
        r["message"], "memory allocation of 1000 bytes failed",
        "{r}"
    );
}

#[test]
fn sweep_classifies_checked_unchecked_and_a_leaking_transaction() {
    if !require_bpf() {
        return;
    }
    let prog = build_c("sweep", "sweep-workload", &["-O0", "-g"]);
    let (code, v, stderr) = sweep(&["--occurrences", "1,3"], &prog);
    assert_eq!(code, 3, "a run crashed: {stderr}");
    // Each site is called once: k = 3 is never planned.
    assert_eq!(v["runs"].as_array().unwrap().len(), 4, "{v}");

    let r = run_at(&v, "checked_site");
    assert_eq!(r["outcome"], "handled", "{r}");
    assert_eq!(r["exit_code"], 1, "{r}");
    assert_eq!(r["message"], "checked: out of memory", "{r}");
    assert_eq!(r["leaked_bytes"], 0, "{r}");
    assert_eq!(
        function_names(&r["injected"]["frames"])[..2],
        ["checked_site", "main"]
    );

    let r = run_at(&v, "unchecked_site");
    assert_eq!(r["outcome"], "crashed", "{r}");
    assert_eq!(r["signal"], 11, "{r}");
    assert_eq!(r["exit_code"], Value::Null, "{r}");

    let r = run_at(&v, "txn_step_one");
    assert_eq!(r["outcome"], "handled", "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(r["leaked_bytes"], 0, "{r}");
    assert_eq!(r["message"], "txn: step one failed", "{r}");

    // Step two failed: step one's 256 bytes are lost, with step one's stack.
    let r = run_at(&v, "txn_step_two");
    assert_eq!(r["outcome"], "handled", "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(r["message"], "txn: step two failed", "{r}");
    assert_eq!(r["leaked_bytes"], 256, "{r}");
    let stacks = r["leak_stacks"].as_array().unwrap();
    assert_eq!(stacks.len(), 1, "{r}");
    assert_eq!(stacks[0]["bytes"], 256, "{r}");
    assert_eq!(
        function_names(&stacks[0]["frames"])[..3],
        ["txn_step_one", "transaction", "main"],
        "{r}"
    );

    // The text table: worst first.
    let out = output(oomtrace().args(["sweep", "--"]).arg(&prog));
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    let first_row = text
        .lines()
        .skip_while(|l| !l.starts_with("OUTCOME"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        first_row.starts_with("crashed") && first_row.ends_with("unchecked_site"),
        "{text}"
    );
    assert!(text.contains("leaked 256 B allocated at:"), "{text}");
}

#[test]
fn sweep_kills_a_hung_run_and_leaves_nothing_behind() {
    if !require_bpf() {
        return;
    }
    let prog = build_c("sweep_hang", "sweep-hang", &["-O0", "-g"]);
    let started = std::time::Instant::now();
    let (code, v, stderr) = sweep(&["--timeout", "2s"], &prog);
    assert_eq!(code, 3, "{stderr}");
    let r = run_at(&v, "hang_site");
    assert_eq!(r["outcome"], "hung", "{r}");
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    let left = Command::new("pgrep")
        .args(["-x", "sweep-hang"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left behind: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
