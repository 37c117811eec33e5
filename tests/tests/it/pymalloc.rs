//! CPython's object allocator as an allocator layer (issue #21): each `PyObject_Malloc` is one
//! allocation at its caller, pymalloc's arenas are the layer's internal mappings (never counted
//! as mappings of their own), and a large block pymalloc hands to `malloc` is counted once.
//! Ground truth: `tracemalloc`, on the same deterministic script, in a run of its own (tracing
//! changes the interpreter's allocator, so it cannot share a run with oomtrace).

use std::path::Path;

use serde_json::Value;

use crate::util::*;

const PYTHON: &str = "/usr/bin/python3.11";
const N: u64 = 200_000;

/// Debian's python3.11 (required under CI=true: the project's setup installs it).
fn debian_python() -> Option<&'static Path> {
    let p = Path::new(PYTHON);
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but {PYTHON} is missing: run `cargo xtask setup`"
    );
    eprintln!("skipping: {PYTHON} is not installed");
    None
}

fn script() -> std::path::PathBuf {
    root().join("tests/workloads/python/pymalloc_floats.py")
}

/// Outstanding bytes of `pid`'s stacks that pass through native function `function`.
fn through(report: &Value, pid: u64, function: &str) -> u64 {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["pid"].as_u64() == Some(pid))
        .filter(|s| {
            s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["function"].as_str() == Some(function))
        })
        .map(|s| s["outstanding_bytes"].as_u64().unwrap())
        .sum()
}

#[test]
fn small_objects_are_counted_at_pyobject_malloc_and_arenas_once() {
    if !require_bpf() {
        return;
    }
    let Some(python) = debian_python() else {
        return;
    };
    let n = N.to_string();
    // Ground truth: tracemalloc from the interpreter's start, in a run of its own.
    let truth = output(
        std::process::Command::new(python)
            .args(["-X", "tracemalloc"])
            .arg(script())
            .args([n.as_str(), "trace"]),
    );
    assert!(
        truth.status.success(),
        "{}",
        String::from_utf8_lossy(&truth.stderr)
    );
    let truth: Value = serde_json::from_slice(&truth.stdout).unwrap();
    let tm = |k: &str| truth[k].as_u64().unwrap();

    let (code, report) = run_json(&[
        python.as_os_str(),
        script().as_os_str(),
        n.as_ref(),
        "plain".as_ref(),
    ]);
    assert_eq!(code, 0);
    assert_consistent(&report);
    let processes = report["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 1, "one python process");
    let pid = processes[0]["pid"].as_u64().unwrap();
    let total = processes[0]["outstanding_bytes"].as_u64().unwrap();

    // The floats: `i * 1.5` is float_mul, under PyNumber_Multiply, calling PyObject_Malloc(24).
    // tracemalloc's FLOATS line counts the same objects; the two runs may differ by what the
    // float free list (at most 100 floats in 3.11) held when the loop began.
    let floats = through(&report, pid, "PyNumber_Multiply");
    let free_list = 100 * 24;
    assert!(
        floats.abs_diff(tm("floats")) <= free_list,
        "floats: oomtrace {floats} B, tracemalloc {} B (N = {N}: {} B)",
        tm("floats"),
        N * 24
    );
    assert!(floats.abs_diff(N * 24) <= free_list, "floats: {floats} B");

    // The list's item array (PyMem_Malloc of N pointers, over 512 B: pymalloc hands it to
    // malloc, inside the layer's call) is one block, counted once. tracemalloc's LIST line
    // adds the list object itself (56 B; a GC object whose allocation Debian's build inlines,
    // so no PyObject_Malloc call is made for it).
    let array = N * 8;
    let blocks: Vec<u64> = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["pid"].as_u64() == Some(pid) && s["outstanding_bytes"].as_u64() == Some(array)
        })
        .map(|s| s["outstanding_allocs"].as_u64().unwrap())
        .collect();
    assert_eq!(
        blocks,
        [1],
        "one stack holds the {array}-byte array, as one block"
    );
    assert!(
        (0..=64).contains(&(tm("list") - array)),
        "tracemalloc's LIST line: {} B",
        tm("list")
    );

    // Arenas counted once: pymalloc maps 1 MiB arenas for the floats (over 6 MiB here). Were
    // they counted as mappings besides the floats in them, the total would pass tracemalloc's
    // whole-process figure by that much. Tolerance: 1 MiB for what C code (the dynamic
    // linker, libc, the interpreter's raw startup state) takes from malloc without Python's
    // allocators; below, the two lines' objects are all there.
    assert!(
        total <= tm("total") + (1 << 20),
        "outstanding {total} B, tracemalloc {} B from startup: arenas counted twice?",
        tm("total")
    );
    assert!(total >= floats + array, "outstanding {total} B");

    // Frees through the layer of objects the inlined fast paths allocated (unseen) are not
    // hazards: a correct interpreter has no invalid or double frees.
    // (The report leaves `faults` out when there are none.)
    let faults = &processes[0]["faults"];
    let hazards = |k: &str| faults["hazard_counts"][k].as_u64().unwrap_or(0);
    assert_eq!(
        (hazards("invalid_frees"), hazards("double_frees")),
        (0, 0),
        "{faults}"
    );
}
