//! `--mode sample` and `--mode growth` against ground truth (tests/workloads/modes.c).
//!
//! Sampling is random, so its assertions are statistical; each states its failure probability.
//! The estimator of a leak of L bytes in blocks of s bytes at rate R has a relative standard
//! deviation of sqrt((1 - p) / (p · L/s)) with p = 1 - exp(-s/R) (≈ sqrt(R/L) for s ≪ R).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::util::*;

const MIB: u64 = 1 << 20;

fn modes_fp() -> PathBuf {
    build_c(
        "modes",
        "modes-fp",
        &["-O2", "-g", "-fno-omit-frame-pointer"],
    )
}

fn modes_nofp() -> PathBuf {
    build_c(
        "modes",
        "modes-nofp",
        &["-O2", "-g", "-fomit-frame-pointer"],
    )
}

/// `oomtrace run --mode MODE --format json -- EXE SCENARIO` with `env`: (report, stderr).
fn run_mode(mode: &str, exe: &PathBuf, scenario: &str, env: &[(&str, &str)]) -> (Value, String) {
    let out = output(
        oomtrace()
            .args(["run", "--mode", mode, "--format", "json", "--"])
            .arg(exe)
            .arg(scenario)
            .envs(env.iter().copied()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}); stderr: {stderr}"));
    (report, stderr)
}

/// Asserts `got` within `tol` (relative) of `truth`, showing both.
fn assert_near(what: &str, got: u64, truth: u64, tol: f64) {
    let rel = (got as f64 - truth as f64) / truth as f64;
    assert!(
        rel.abs() <= tol,
        "{what}: estimated {got}, truth {truth} ({:+.2} %, tolerance ±{:.0} %)",
        rel * 100.0,
        tol * 100.0
    );
}

/// The rel. std dev of the estimate of `leak` bytes in blocks of `size` at `rate`.
fn rel_sd(leak: u64, size: u64, rate: u64) -> f64 {
    let p = -(-(size as f64) / rate as f64).exp_m1();
    ((1.0 - p) / (p * (leak / size) as f64)).sqrt()
}

#[test]
fn sampled_estimates_are_within_ten_percent_of_the_truth() {
    if !require_bpf() {
        return;
    }
    const RATE: u64 = 16 * 1024;
    // Every `ev kind=K` line on stderr is one event the kernel side emitted.
    let (report, stderr) = run_mode(
        "sample=16K",
        &modes_fp(),
        "sample",
        &[("OOMTRACE_DEBUG_EVENTS", "1")],
    );
    assert_eq!(report["mode"]["name"], "sample");
    assert_eq!(report["mode"]["sample_rate_bytes"], RATE);
    assert_eq!(report["mode"]["stack_bytes"], "estimated_requested");
    assert_eq!(report["lost_events"], 0);
    // A free the kernel side let through for a block it had not sampled would be unknown here.
    assert_eq!(report["unknown_frees"], 0);
    let pid = report["processes"][0]["pid"].as_u64();

    // 64 MiB of 64 B blocks: rel. sd 1.56 %, so ±10 % is 6.4 sd: P(miss) < 2e-10.
    // 64 MiB of 4 KiB blocks: rel. sd 1.47 % (6.8 sd): P(miss) < 1e-11.
    assert!(rel_sd(64 * MIB, 64, RATE) < 0.016 && rel_sd(64 * MIB, 4096, RATE) < 0.015);
    for (function, size) in [("leak_small", 64), ("leak_pages", 4096)] {
        let f = figures(&report, function, pid);
        assert_near(function, f.outstanding_bytes, 64 * MIB, 0.10);
        assert_near(function, f.allocated_bytes, 64 * MIB, 0.10);
        assert_near(
            &format!("{function} blocks"),
            f.outstanding_allocs,
            64 * MIB / size,
            0.10,
        );
    }
    // 8 MiB blocks are sampled with P = 1 - exp(-512): the figure is exact.
    assert_figures(&report, "leak_huge", pid, leak(32 * MIB, 4));

    // Freed sampled blocks leave outstanding exactly; allocated stays an estimate.
    // churn_sampled: 1024 x 64 KiB (rel. sd 0.4 %); churn_small: 1 Mi x 64 B (1.56 %).
    for function in ["churn_sampled", "churn_small"] {
        let f = figures(&report, function, pid);
        assert_eq!(f.outstanding_bytes, 0, "{function}: {f:?}");
        assert_eq!(f.outstanding_allocs, 0, "{function}: {f:?}");
        assert_near(function, f.allocated_bytes, 64 * MIB, 0.10);
    }
    // realloc through every old/new sampled combination, then free: nothing outstanding, and
    // the 256 KiB / 300 KiB steps (P = 1 - exp(-16) or more) make allocated all but exact.
    let f = figures(&report, "realloc_walk", pid);
    assert_eq!((f.outstanding_bytes, f.outstanding_allocs), (0, 0), "{f:?}");
    let truth = 200 * (64 + 256 * 1024 + 300 * 1024 + 64 + 80);
    assert_near("realloc_walk allocated", f.allocated_bytes, truth, 0.01);

    // Unsampled frees cost no event: the workload frees 1,049,600 + 1024 + 200 blocks, the
    // kernel side reports only frees of sampled ones (~4200 expected at 16 KiB).
    let count = |kind: u32| {
        stderr
            .lines()
            .filter(|l| l.starts_with(&format!("ev kind={kind} ")))
            .count()
    };
    let (allocs, frees, reallocs) = (count(1), count(2), count(3));
    assert!(
        frees > 1000 && frees < 20_000,
        "{frees} free events for ~1.05 M frees (allocs {allocs}, reallocs {reallocs})"
    );
    assert!(
        frees <= allocs + reallocs,
        "every free event is of a sampled block: {frees} frees, {allocs} + {reallocs} sampled"
    );
    assert_consistent(&report);
}

#[test]
fn default_rate_is_stated_and_recorded() {
    if !require_bpf() {
        return;
    }
    let dir = work_dir().join("sampling-record");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sample.oomtrace");
    let out = output(
        oomtrace()
            .args(["record", "--mode", "sample", "-o"])
            .arg(&file)
            .arg("--")
            .arg(modes_fp())
            .arg("sample"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = output(
        oomtrace()
            .arg("report")
            .arg(&file)
            .args(["--format", "json"]),
    );
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["mode"]["name"], "sample");
    assert_eq!(report["mode"]["sample_rate_bytes"], 512 * 1024);
    // 8 MiB blocks at 512 KiB: each missed with P = exp(-16) = 1.1e-7 (4.5e-7 for any of the
    // four), and each sampled one weighs 8 MiB / (1 - exp(-16)) = 8 MiB + 0.94 B.
    let f = figures(&report, "leak_huge", None);
    assert_eq!(f.outstanding_allocs, 4, "{f:?}");
    assert!(
        (32 * MIB..=32 * MIB + 8).contains(&f.outstanding_bytes),
        "{f:?}"
    );
    let text = output(oomtrace().arg("report").arg(&file));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("estimated, sampled every ~512 KiB"),
        "the text report states the estimate and its rate:\n{text}"
    );
}

/// Stacks whose frame `depth` is `function`, summed (resident bytes, pages).
fn resident(report: &Value, depth: usize, function: &str) -> (u64, u64) {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["frames"][depth]["function"].as_str() == Some(function))
        .fold((0, 0), |(b, n), s| {
            (
                b + s["outstanding_bytes"].as_u64().unwrap(),
                n + s["outstanding_allocs"].as_u64().unwrap(),
            )
        })
}

fn is_memset(frame: &Value) -> bool {
    frame["function"]
        .as_str()
        .is_some_and(|f| f.contains("memset"))
}

fn assert_growth_report(report: &Value) {
    assert_eq!(report["mode"]["name"], "growth");
    assert_eq!(report["mode"]["sample_rate_bytes"], Value::Null);
    assert_eq!(report["mode"]["stack_bytes"], "resident");
    assert_eq!(report["lost_events"], 0);
    let top = &report["stacks"][0];
    assert_eq!(
        top["frames"][0]["function"], "leak_touch",
        "the leaking function leads the RSS-growth table: {top}"
    );
    // leak_touch writes 64 x 256 pages; malloc itself wrote the first page of each block (its
    // header), so 16320 pages are leak_touch's: within 0.5 % below 64 MiB, never above.
    let (bytes, pages) = resident(report, 0, "leak_touch");
    assert!(
        (64 * MIB * 995 / 1000..=64 * MIB).contains(&bytes),
        "leak_touch: {bytes} resident bytes in {pages} pages, 64 MiB touched"
    );
    assert_eq!(bytes, pages * 4096);
    // Faults inside libc's memset belong to memset's caller: frame 1 is leak_memset / bounded
    // (the frame-pointer walk alone would skip it and name main).
    let memset_stacks: Vec<&Value> = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| is_memset(&s["frames"][0]) && s["outstanding_bytes"].as_u64() > Some(MIB))
        .collect();
    assert!(!memset_stacks.is_empty(), "memset faults are reported");
    for s in &memset_stacks {
        let caller = s["frames"][1]["function"].as_str().unwrap_or("?");
        assert!(
            caller == "leak_memset" || caller == "bounded",
            "a fault in memset is attributed to memset's caller, not {caller}: {s}"
        );
    }
    // 128 x 256 KiB written by memset (the header page is malloc's, and past the block's end).
    let (bytes, _) = resident(report, 1, "leak_memset");
    assert_near("leak_memset resident", bytes, 32 * MIB, 0.01);
    let (bytes, _) = resident(report, 1, "bounded");
    assert_near("bounded resident", bytes, 4 * MIB, 0.01);
    // The churning function freed (unmapped or trimmed) what it touched: at most its last MiB.
    let (bytes, _) = resident(report, 0, "churn_pages");
    assert!(bytes <= MIB + 4096, "churn_pages keeps {bytes} resident");
}

#[test]
fn growth_mode_attributes_rss_growth_to_the_leaking_function() {
    if !require_bpf() {
        return;
    }
    for exe in [modes_fp(), modes_nofp()] {
        let (report, _) = run_mode("growth", &exe, "growth", &[]);
        assert_growth_report(&report);
        if exe == modes_fp() {
            // With frame pointers the walk goes on above the call site.
            assert_eq!(report["stacks"][0]["frames"][1]["function"], "main");
        }
    }
}

#[test]
fn growth_mode_is_recorded_and_replays_the_same() {
    if !require_bpf() {
        return;
    }
    let dir = work_dir().join("sampling-record");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("growth.oomtrace");
    let out = output(
        oomtrace()
            .args(["record", "--mode", "growth", "--format", "json", "-o"])
            .arg(&file)
            .arg("--")
            .arg(modes_fp())
            .arg("growth"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live: Value = serde_json::from_slice(&out.stdout).unwrap();
    let replayed = output(
        oomtrace()
            .arg("report")
            .arg(&file)
            .args(["--format", "json"]),
    );
    let replayed: Value = serde_json::from_slice(&replayed.stdout).unwrap();
    assert_growth_report(&replayed);
    assert_eq!(live["stacks"], replayed["stacks"]);
    assert_eq!(live["mode"], replayed["mode"]);
    let text = output(oomtrace().arg("report").arg(&file));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("RSS growth (resident bytes faulted in and not unmapped)"));
}

/// The first code bytes of the workload's own malloc and free, as it saw them while running.
fn code_bytes(tracer_args: Option<&[&str]>) -> String {
    let exe = build_c("own_malloc", "own-malloc", &["-O2"]);
    let dir = work_dir().join("sampling-record");
    std::fs::create_dir_all(&dir).unwrap();
    let dump = dir.join("code-bytes.txt");
    let _ = std::fs::remove_file(&dump);
    let status = match tracer_args {
        None => Command::new(&exe).arg(&dump).status().unwrap(),
        Some(args) => oomtrace()
            .args(["run"])
            .args(args)
            .args(["--format", "json", "-o"])
            .arg(dir.join("code-bytes.json"))
            .arg("--")
            .arg(&exe)
            .arg(&dump)
            .status()
            .unwrap(),
    };
    assert!(status.success());
    std::fs::read_to_string(&dump).unwrap()
}

#[test]
fn growth_mode_attaches_no_allocator_probes() {
    if !require_bpf() {
        return;
    }
    // The workload exports its own malloc family, which oomtrace would probe in its own file:
    // no other tracer on the machine touches those bytes. A uprobe is an int3 written into them.
    let untraced = code_bytes(None);
    let exact = code_bytes(Some(&["--mode", "exact"]));
    assert_ne!(
        exact, untraced,
        "control: exact mode's uprobes are visible in the code bytes"
    );
    assert!(exact.contains(" cc"), "{exact}");
    let growth = code_bytes(Some(&["--mode", "growth"]));
    assert_eq!(
        growth, untraced,
        "growth mode must write no uprobe into the allocator"
    );
}

#[test]
fn attach_in_sample_mode() {
    if !require_bpf() {
        return;
    }
    use std::io::Write as _;
    // At one sample per byte every allocation is sampled with P = 1 - exp(-4000): the weights
    // are exactly 1, so the --pid plumbing of sample mode is checked with exact figures.
    let (mut workload, pid, mut stdin) = waiting_workload();
    let tracer = start_tracer(&[
        "--pid",
        &pid.to_string(),
        "--mode",
        "sample=1",
        "--format",
        "json",
    ]);
    writeln!(stdin, "go").unwrap();
    assert!(workload.wait().unwrap().success());
    let out = tracer.wait_with_output().unwrap();
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mode"]["name"], "sample");
    assert_eq!(report["mode"]["sample_rate_bytes"], 1);
    assert_figures(
        &report,
        "after_attach",
        Some(u64::from(pid)),
        leak(20_000, 5),
    );
    // The 100 frees of blocks allocated before attaching were never sampled: no event at all.
    assert_eq!(report["unknown_frees"], 0);
}

#[test]
fn a_bad_mode_is_a_usage_error() {
    for bad in ["fast", "sample=0", "sample=2G", "sample=lots"] {
        let out = output(oomtrace().args(["run", "--mode", bad, "--", "true"]));
        assert_eq!(out.status.code(), Some(2), "--mode {bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("");
        assert!(
            first.starts_with("error: invalid value") && first.contains("--mode"),
            "--mode {bad}: {stderr}"
        );
    }
}

#[test]
fn growth_mode_needs_no_allocator_to_probe() {
    if !require_bpf() {
        return;
    }
    // A static program has no dynamic malloc (exact mode refuses it); growth mode traces it.
    let exe = build_c("static", "static-binary", &["-O2", "-static"]);
    let (report, _) = run_mode("growth", &exe, "", &[]);
    assert_eq!(report["mode"]["name"], "growth");
    let p = &report["processes"][0];
    assert_eq!(p["exit_code"], 0);
    assert!(
        p["outstanding_bytes"].as_u64().unwrap() >= 4096,
        "its start-up faulted pages in: {p}"
    );
}

/// Runs of the allocator program `name` in `report`'s own-cost figures (0: not loaded).
fn program_runs(report: &Value, name: &str) -> u64 {
    report["tracer_cost"]["programs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .map_or(0, |p| p["runs"].as_u64().unwrap())
}

#[test]
fn uprobe_sessions_run_no_return_for_unsampled_calls() {
    if !require_bpf() {
        return;
    }
    let exe = build_c("bench_loop", "bench-loop", &["-O2", "-g"]);
    // The loop prints its time on stdout: the report goes to a file.
    let json = work_dir().join("sessions-report.json");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = output(
            oomtrace()
                .args(["run", "--format", "json", "-o"])
                .arg(&json)
                .args(args)
                .arg("--")
                .arg(&exe)
                .args(["50000", "1"])
                .envs(env.iter().copied()),
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
        let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap())
            .unwrap_or_else(|e| panic!("report is not JSON ({e}); stderr: {stderr}"));
        (report, stderr)
    };
    // Exact mode: every allocator call's entry (the loop's 50000 mallocs and 50000 frees, and
    // the C library's own few), and a return per malloc.
    let (exact, _) = run(&["--mode", "exact"], &[]);
    let entries = program_runs(&exact, "alloc_enter");
    assert!(
        (100_000..100_100).contains(&entries),
        "exact entries: {entries}"
    );
    let returns = program_runs(&exact, "alloc_return");
    assert!(
        (50_000..50_050).contains(&returns),
        "exact returns: {returns}"
    );

    // Sample mode: one session program, run once per call, and once more at the return of
    // each sampled call (each returns one allocation event).
    let (sample, stderr) = run(&["--mode", "sample=16K"], &[("OOMTRACE_DEBUG_EVENTS", "1")]);
    assert_eq!(program_runs(&sample, "alloc_return"), 0);
    let pid = sample["processes"][0]["pid"].as_u64().unwrap();
    let sampled = stderr
        .lines()
        .filter(|l| l.starts_with("ev kind=1 ") && l.contains(&format!(" tgid={pid} ")))
        .count() as u64;
    // 50000 x 64 B at 16 KiB: ~195 samples expected.
    assert!((50..=600).contains(&sampled), "{sampled} sampled calls");
    assert_eq!(
        program_runs(&sample, "alloc_session"),
        entries + sampled,
        "session runs = entries + sampled returns: {}",
        sample["tracer_cost"]
    );
    // The session floor takes no return at all.
    let (floor, _) = run(&["--probe-floor", "--mode", "sample"], &[]);
    assert_eq!(
        program_runs(&floor, "floor_session"),
        entries,
        "{}",
        floor["tracer_cost"]
    );
    assert_eq!(program_runs(&floor, "floor_return"), 0);
}

#[test]
fn with_sessions_an_unsampled_calls_own_mmaps_stay_its_business() {
    if !require_bpf() {
        return;
    }
    // malloc maps the 8 MiB and 256 KiB blocks itself, and moves the break for the small ones:
    // inside calls whose return was skipped, none of it is the program's own mapping.
    let (exact, _) = run_mode("exact", &modes_fp(), "sample", &[]);
    let (sample, _) = run_mode("sample=16K", &modes_fp(), "sample", &[]);
    assert!(
        program_runs(&sample, "alloc_session") > 0,
        "sessions in use"
    );
    let mapped = |r: &Value| r["processes"][0]["mapped"]["direct"].clone();
    assert_eq!(
        mapped(&sample),
        mapped(&exact),
        "direct mappings, sample vs exact"
    );
    assert_eq!(
        mapped(&exact)["count"].as_u64(),
        Some(3),
        "the loader's three, none of malloc's: {}",
        mapped(&exact)
    );
}

#[test]
fn with_sessions_a_leaf_calls_mmaps_are_its_own_and_the_programs_are_counted() {
    if !require_bpf() {
        return;
    }
    // At a 1 GiB rate no malloc is sampled: each returns unseen, its return address never read
    // (malloc is a leaf allocator). The mmap malloc makes inside must still be told from the
    // program's own, made one frame deeper between the malloc calls.
    let (exact, _) = run_mode("exact", &modes_fp(), "leafmaps", &[]);
    let (sample, _) = run_mode("sample=1G", &modes_fp(), "leafmaps", &[]);
    assert!(
        program_runs(&sample, "alloc_session") > 0,
        "sessions in use"
    );
    let mapped = |r: &Value| r["processes"][0]["mapped"]["direct"].clone();
    assert_eq!(
        mapped(&exact)["count"].as_u64(),
        Some(6),
        "the loader's three and the program's three, none of malloc's: {}",
        mapped(&exact)
    );
    assert_eq!(
        mapped(&sample),
        mapped(&exact),
        "direct mappings, sample vs exact"
    );
}
