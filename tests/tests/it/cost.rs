//! oomtrace's own cost in the report (`tracer_cost`), checked against a workload whose calls are
//! known: `bench_loop 200000 1` makes 200000 × (`malloc(64)`; `free`) from its `loop` function.

use serde_json::Value;

use crate::util::*;

const CALLS: u64 = 200_000;
/// The loop's calls plus the few libc makes at start-up and exit (stdio buffer, thread set-up).
const LIBC_SLACK: u64 = 64;
/// Probes are in the traced process only: the programs run for its calls and no one else's.
const RUNS_BOUND: u64 = 2 * CALLS + LIBC_SLACK;

fn bench_loop() -> std::path::PathBuf {
    build_c("bench_loop", "bench_loop", &["-O2", "-g"])
}

/// `oomtrace run EXTRA --format json -o FILE -- bench_loop N 1` (the workload prints its time
/// on stdout, so the report goes to a file): the report.
fn run_loop(extra: &[&str], n: u64, name: &str) -> Value {
    let file = work_dir().join(format!("cost-{name}.json"));
    let _ = std::fs::remove_file(&file);
    let out = output(
        oomtrace()
            .arg("run")
            .args(extra)
            .args(["--format", "json", "-o"])
            .arg(&file)
            .arg("--")
            .arg(bench_loop())
            .args([n.to_string(), "1".into()]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
}

fn program<'a>(cost: &'a Value, name: &str) -> &'a Value {
    cost["programs"]
        .as_array()
        .expect("programs is an array")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no program {name} in {cost:#}"))
}

fn runs(cost: &Value, name: &str) -> u64 {
    program(cost, name)["runs"].as_u64().unwrap()
}

#[test]
fn report_shows_bpf_runs_time_per_call_and_events() {
    if !require_bpf() {
        return;
    }
    let report = run_loop(&[], CALLS, "exact");
    let loop_figures = figures(&report, "loop", None);
    assert_eq!(loop_figures.allocs, CALLS, "ground truth: {loop_figures:?}");
    let cost = &report["tracer_cost"];
    assert_eq!(cost["bpf_stats"], true, "{cost:#}");
    // One entry program for every allocator function: a malloc and a free per iteration.
    let enter_runs = runs(cost, "alloc_enter");
    assert!(
        (2 * CALLS..=RUNS_BOUND).contains(&enter_runs),
        "alloc_enter ran {enter_runs} times for {CALLS} mallocs and {CALLS} frees"
    );
    let return_runs = runs(cost, "alloc_return");
    assert!(
        (CALLS..=CALLS + LIBC_SLACK).contains(&return_runs),
        "alloc_return ran {return_runs} times for {CALLS} mallocs"
    );
    let per_run = program(cost, "alloc_enter")["ns_per_run"].as_f64().unwrap();
    assert!(per_run > 0.0, "alloc_enter time per run: {per_run}");
    let per_call = cost["bpf_ns_per_call"].as_f64().unwrap();
    assert!(per_call > 0.0, "BPF time per allocator call: {per_call}");
    // Every allocation and free the workload made, none lost, none invented.
    assert_eq!(cost["lost_events"], 0);
    let allocator_events = cost["allocator_events"].as_u64().unwrap();
    assert!(
        (2 * CALLS..=2 * CALLS + LIBC_SLACK).contains(&allocator_events),
        "allocator events {allocator_events}, expected 2 × {CALLS} plus libc's few"
    );
    let p = &report["processes"][0];
    let counted = p["allocs"].as_u64().unwrap()
        + p["frees"].as_u64().unwrap()
        + report["unknown_frees"].as_u64().unwrap();
    assert!(
        counted <= allocator_events + LIBC_SLACK && allocator_events <= counted + LIBC_SLACK,
        "the model counted {counted} allocations and frees, the ring delivered {allocator_events}"
    );
    let events = cost["events"].as_u64().unwrap();
    assert!(events >= allocator_events);
    assert!(cost["events_per_s"].as_f64().unwrap() > 0.0);
    assert!(cost["cpu_s"].as_f64().unwrap() > 0.0);
    assert!(cost["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
}

#[test]
fn text_report_has_the_cost_line() {
    if !require_bpf() {
        return;
    }
    let exe = bench_loop();
    let out = output(
        oomtrace()
            .args(["run", "--format", "text", "--"])
            .arg(&exe)
            .args(["20000", "1"]),
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("tracer cost: "))
        .unwrap_or_else(|| panic!("no cost line in:\n{text}"));
    assert!(line.contains("0 lost"), "{line}");
    assert!(line.contains("ns per allocator call"), "{line}");
}

#[test]
fn probe_floor_runs_only_the_empty_programs() {
    if !require_bpf() {
        return;
    }
    let report = run_loop(&["--probe-floor"], CALLS, "floor");
    let cost = &report["tracer_cost"];
    // malloc's and free's entries on the same probes as a real run; malloc's return.
    let enters = runs(cost, "floor_enter");
    assert!(
        (2 * CALLS..=RUNS_BOUND).contains(&enters),
        "floor_enter ran {enters} times"
    );
    let returns = runs(cost, "floor_return");
    assert!(
        (CALLS..=CALLS + LIBC_SLACK).contains(&returns),
        "floor_return ran {returns} times"
    );
    // Nothing of the real tracing is loaded, so nothing is counted.
    assert_eq!(cost["events"], 0);
    assert!(
        cost["programs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"].as_str().unwrap().starts_with("floor_")),
        "only the floor programs are loaded: {cost:#}"
    );
    assert_eq!(report["stacks"].as_array().unwrap().len(), 0);
}
