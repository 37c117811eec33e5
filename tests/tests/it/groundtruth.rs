//! Exact figures for workloads that allocate known bytes from known functions (issue 2).

use std::io::Write as _;

use serde_json::Value;

use crate::util::*;

const ALLOCATOR_INTERNALS: &[&str] = &[
    "malloc",
    "__libc_malloc",
    "_int_malloc",
    "calloc",
    "__libc_calloc",
    "realloc",
    "__libc_realloc",
    "free",
    "_int_free",
    "tcache_init",
];

pub fn assert_kinds(report: &Value) {
    assert_allocator_kinds(report);
    let pid = report["processes"][0]["pid"].as_u64().unwrap();
    // Direct mmap of 4 pages with the middle one unmapped: one allocation, three pages.
    assert_figures(report, "map_pages", Some(pid), MAP_PAGES);
}

/// The `kinds` scenario's allocator figures (everything but the direct mmap).
pub fn assert_allocator_kinds(report: &Value) {
    assert_eq!(report["schema"], "oomtrace.report/1");
    assert_eq!(
        report["lost_events"], 0,
        "no event may be lost on this small workload"
    );
    let pid = report["processes"][0]["pid"].as_u64().unwrap();
    assert_eq!(process(report, pid)["exit_code"], 0);
    assert_figures(report, "leak_malloc", Some(pid), leak(10_000, 10));
    assert_figures(report, "leak_calloc", Some(pid), leak(5_000, 5));
    // The realloc chain: four allocations, three of them freed by the next realloc.
    assert_figures(
        report,
        "leak_realloc",
        Some(pid),
        Figures {
            outstanding_bytes: 4000,
            outstanding_allocs: 1,
            allocated_bytes: 10_000,
            allocs: 4,
            failed_allocs: 0,
        },
    );
    assert_figures(report, "leak_reallocarray", Some(pid), leak(300, 1));
    assert_figures(report, "leak_posix_memalign", Some(pid), leak(1536, 3));
    assert_figures(report, "leak_aligned_alloc", Some(pid), leak(512, 2));
    assert_figures(report, "leak_memalign", Some(pid), leak(600, 2));
    assert_figures(report, "leak_valloc", Some(pid), leak(100, 1));
    assert_figures(report, "leak_pvalloc", Some(pid), leak(200, 1));
    assert_figures(
        report,
        "churn",
        Some(pid),
        Figures {
            outstanding_bytes: 0,
            outstanding_allocs: 0,
            allocated_bytes: 64_000,
            allocs: 1000,
            failed_allocs: 0,
        },
    );
    assert_figures(
        report,
        "free_half",
        Some(pid),
        Figures {
            outstanding_bytes: 6400,
            outstanding_allocs: 50,
            allocated_bytes: 12_800,
            allocs: 100,
            failed_allocs: 0,
        },
    );
    assert_figures(
        report,
        "fail_alloc",
        Some(pid),
        Figures {
            failed_allocs: 4,
            ..Figures::default()
        },
    );
    // Served by mmap inside malloc: counted once, as the malloc.
    assert_figures(report, "leak_large", Some(pid), leak(2 << 20, 2));
    assert_allocator_internals_hidden(report);
}

/// `map_pages`: a direct mmap of 4 pages with the middle one unmapped.
pub const MAP_PAGES: Figures = Figures {
    outstanding_bytes: 3 * 4096,
    outstanding_allocs: 1,
    allocated_bytes: 4 * 4096,
    allocs: 1,
    failed_allocs: 0,
};

/// Every process's totals add up, and no allocator-internal frame shows.
pub fn assert_allocator_internals_hidden(report: &Value) {
    assert_consistent(report);
    for st in report["stacks"].as_array().unwrap() {
        for f in st["frames"].as_array().unwrap() {
            let name = f["function"].as_str().unwrap_or("");
            assert!(
                !ALLOCATOR_INTERNALS.contains(&name),
                "allocator-internal frame {name} in {st}"
            );
        }
    }
}

fn frames_of(report: &Value, function: &str) -> Vec<String> {
    let st = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["frames"][0]["function"] == function)
        .unwrap_or_else(|| panic!("no stack for {function}"));
    st["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("??").to_owned())
        .collect()
}

#[test]
fn every_allocator_entry_point_is_exact_with_frame_pointers() {
    if !require_bpf() {
        return;
    }
    let (code, report) = run_json(&[groundtruth_fp().as_os_str(), "kinds".as_ref()]);
    assert_eq!(code, 0);
    assert_kinds(&report);
    // Frame pointers give the deeper frames: main called leak_malloc.
    let frames = frames_of(&report, "leak_malloc");
    assert_eq!(
        frames.get(1).map(String::as_str),
        Some("main"),
        "frames: {frames:?}"
    );
    let f0 = &report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["frames"][0]["function"] == "leak_malloc")
        .unwrap()["frames"][0];
    assert_eq!(f0["module"], "groundtruth-fp");
    assert!(
        f0["file"].as_str().unwrap().ends_with("groundtruth.c"),
        "{f0}"
    );
    assert!(f0["line"].as_u64().unwrap() > 0);
}

#[test]
fn every_allocator_entry_point_is_exact_without_frame_pointers() {
    if !require_bpf() {
        return;
    }
    let (code, report) = run_json(&[groundtruth_nofp().as_os_str(), "kinds".as_ref()]);
    assert_eq!(code, 0);
    // Frame 0 comes from the return address at entry, so it is exact with or without them.
    assert_kinds(&report);
}

#[test]
fn threads_and_cross_thread_frees() {
    if !require_bpf() {
        return;
    }
    let (code, report) = run_json(&[groundtruth_fp().as_os_str(), "threads".as_ref()]);
    assert_eq!(code, 0);
    let pid = report["processes"][0]["pid"].as_u64().unwrap();
    assert_figures(&report, "thread_leak", Some(pid), leak(80_000, 40));
    // Allocated in one thread, freed in another: nothing outstanding, nothing unknown about it.
    assert_figures(
        &report,
        "xthread_alloc",
        Some(pid),
        Figures {
            outstanding_bytes: 0,
            outstanding_allocs: 0,
            allocated_bytes: 10_000,
            allocs: 20,
            failed_allocs: 0,
        },
    );
    assert!(process(&report, pid)["frees"].as_u64().unwrap() >= 20);
    assert_consistent(&report);
}

#[test]
fn forked_children_are_followed_per_pid() {
    if !require_bpf() {
        return;
    }
    let (code, report) = run_json(&[groundtruth_fp().as_os_str(), "fork".as_ref()]);
    assert_eq!(code, 0);
    let procs = report["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 3, "parent and two children: {procs:?}");
    let parent = figures(&report, "parent_leak", None);
    assert_eq!(parent, leak(1000, 1));
    // Child k leaks k × 3000 bytes in child_leak: find each child by its own figure.
    let mut child_figures: Vec<Figures> = procs
        .iter()
        .map(|p| figures(&report, "child_leak", p["pid"].as_u64()))
        .filter(|f| f.allocs > 0)
        .collect();
    child_figures.sort_by_key(|f| f.outstanding_bytes);
    assert_eq!(child_figures, vec![leak(3000, 1), leak(6000, 2)]);
    for p in procs {
        assert_eq!(p["exit_code"], 0, "{p}");
    }
    assert_consistent(&report);
}

#[test]
fn attach_counts_only_what_happens_after() {
    if !require_bpf() {
        return;
    }
    let (mut workload, pid, mut stdin) = waiting_workload();
    let tracer = start_tracer(&["--pid", &pid.to_string(), "--format", "json"]);
    // Now the 100 early blocks are freed (before attach: unknown) and 5 × 4000 leaked.
    writeln!(stdin, "go").unwrap();
    assert!(workload.wait().unwrap().success());
    let out = tracer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "oomtrace must report a target that exits, not fail"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_figures(
        &report,
        "after_attach",
        Some(u64::from(pid)),
        leak(20_000, 5),
    );
    assert_eq!(figures(&report, "before_attach", None), Figures::default());
    assert_eq!(
        report["unknown_frees"], 100,
        "frees of pre-attach blocks are counted, not subtracted"
    );
    assert_eq!(process(&report, u64::from(pid))["exit_code"], 0);
}

#[test]
fn exit_status_is_the_commands_own() {
    if !require_bpf() {
        return;
    }
    let (code, report) = run_json(&["sh".as_ref(), "-c".as_ref(), "exit 7".as_ref()]);
    assert_eq!(code, 7);
    assert_eq!(report["processes"][0]["exit_code"], 7);
    let (code, report) = run_json(&["sh".as_ref(), "-c".as_ref(), "kill -9 $$".as_ref()]);
    assert_eq!(
        code, 137,
        "a command killed by SIGKILL makes oomtrace exit 128+9"
    );
    let root = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["signal"] == 9);
    assert!(
        root.is_some(),
        "the killed process reports signal 9: {report}"
    );
}

#[test]
fn text_report_names_the_leaking_function() {
    if !require_bpf() {
        return;
    }
    let out = output(
        oomtrace()
            .args(["run", "--"])
            .arg(groundtruth_fp())
            .arg("kinds"),
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("lost events: 0"), "{text}");
    // leak_large holds the most: first, in MiB (gcc's two unrolled call sites are one line).
    let first = text
        .split("\n#1 ")
        .nth(1)
        .unwrap_or_else(|| panic!("no stacks in:\n{text}"))
        .trim_start();
    assert!(first.starts_with("2.00 MiB in 2 block(s)"), "{first}");
    assert!(
        first
            .lines()
            .nth(1)
            .unwrap()
            .contains("leak_large (groundtruth.c:"),
        "{first}"
    );
}

#[test]
fn demo_workload_figures_are_exact() {
    if !require_bpf() {
        return;
    }
    let demo = build_c("demo", "demo", &["-O2", "-g", "-fno-omit-frame-pointer"]);
    let (code, report) = run_json(&[demo.as_os_str()]);
    assert_eq!(code, 0);
    // What README's demo shows: the leak leads, the bounded cache and the churn do not leak.
    assert_eq!(
        report["stacks"][0]["frames"][0]["function"],
        "remember_session"
    );
    assert_figures(&report, "remember_session", None, leak(2000 * 4096, 2000));
    assert_figures(&report, "warm_cache", None, leak(256 * 1024, 256));
    // The demo runs about 2 s: long enough for the verdicts the README shows. The leak grows
    // 4096 B per request, a request at most every 1 ms (its sleep) plus the work.
    let growth = &report["stacks"][0]["growth"];
    assert_eq!(growth["class"], "growing", "{growth}");
    let rate = growth["bytes_per_s"].as_f64().unwrap();
    assert!(
        (0.5 * 4_096_000.0..=1.2 * 4_096_000.0).contains(&rate),
        "{growth}"
    );
    let cache = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["frames"][0]["function"] == "warm_cache")
        .unwrap();
    assert_eq!(cache["growth"]["class"], "bounded", "{cache}");
    assert_figures(
        &report,
        "handle_request",
        None,
        Figures {
            outstanding_bytes: 0,
            outstanding_allocs: 0,
            allocated_bytes: 2000 * 16384,
            allocs: 2000,
            failed_allocs: 0,
        },
    );
}
