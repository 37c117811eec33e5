//! Growth detection on a real traced run of known shapes (issue 4): tests/workloads/shapes.c.

use serde_json::Value;

use crate::util::*;

fn stack<'a>(report: &'a Value, function: &str) -> &'a Value {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["frames"][0]["function"] == function)
        .max_by_key(|s| s["outstanding_bytes"].as_u64())
        .unwrap_or_else(|| panic!("no stack for {function}"))
}

fn class(v: &Value) -> &str {
    v["class"].as_str().unwrap()
}

fn within(got: f64, truth: f64, tolerance: f64) -> bool {
    (got - truth).abs() <= truth * tolerance
}

#[test]
fn leaks_are_told_from_caches_and_buffers() {
    if !require_bpf() {
        return;
    }
    let exe = build_c(
        "shapes",
        "shapes",
        &["-O2", "-g", "-fno-omit-frame-pointer"],
    );
    let (code, report) = run_json(&[exe.as_os_str(), "15".as_ref()]);
    assert_eq!(code, 0);
    let steady = stack(&report, "steady_leak");
    assert_eq!(class(&steady["growth"]), "growing", "{steady}");
    // 4096 bytes per 50 ms step: 81920 B/s (a little less: the steps are a bit longer than 50 ms).
    let rate = steady["growth"]["bytes_per_s"].as_f64().unwrap();
    assert!(
        within(rate, 81_920.0, 0.20),
        "steady leak rate {rate} vs 81920 B/s"
    );
    assert!(steady["growth"]["growing_for_s"].as_f64().unwrap() >= 10.0);
    assert_eq!(steady["sizes"]["p50"], 4096);
    assert_eq!(
        steady["lifetime_ms"],
        Value::Null,
        "nothing of it is ever freed"
    );
    assert_eq!(
        class(&stack(&report, "churn_alloc")["growth"]),
        "growing",
        "a leak hidden under churn"
    );
    assert_eq!(
        class(&stack(&report, "lru_insert")["growth"]),
        "bounded",
        "a cache at its cap"
    );
    let batch = stack(&report, "batch_buffer");
    assert_eq!(
        class(&batch["growth"]),
        "bounded",
        "a buffer filled and freed"
    );
    let life = batch["lifetime_ms"]["p99"].as_u64().unwrap();
    assert!(
        (900..=1200).contains(&life),
        "batch blocks live up to ~1 s: {life}"
    );
    assert_ne!(
        class(&stack(&report, "stop_halfway")["growth"]),
        "growing",
        "growth that stopped"
    );
    // The children: one leaks a thread per second, one leaks 10 descriptors per second.
    let procs = report["processes"].as_array().unwrap();
    let by = |key: &str| {
        procs
            .iter()
            .find(|p| class(&p["growth"][key]) == "growing")
            .unwrap_or_else(|| panic!("no process with growing {key}: {procs:?}"))
    };
    let t = by("threads");
    assert!(
        within(t["growth"]["threads"]["per_s"].as_f64().unwrap(), 1.0, 0.2),
        "{t}"
    );
    let f = by("fds");
    assert!(
        within(f["growth"]["fds"]["per_s"].as_f64().unwrap(), 10.0, 0.2),
        "{f}"
    );
    assert_ne!(t["pid"], f["pid"]);
    let parent = procs
        .iter()
        .find(|p| p["pid"] != t["pid"] && p["pid"] != f["pid"])
        .unwrap();
    assert_ne!(class(&parent["growth"]["threads"]), "growing");
    assert_ne!(class(&parent["growth"]["fds"]), "growing");
}
