//! `--kernel`: kernel memory that no malloc sees (pages pinned in pipes that are never read),
//! attributed to the kernel stack that allocated it, and the DRM/TTM probes reported as what
//! they are on this machine.

use std::path::PathBuf;

use serde_json::Value;

use crate::util::*;

const PAGE: u64 = 4096;

fn pipes() -> PathBuf {
    build_c("pipes", "pipes", &["-O2", "-g"])
}

/// `oomtrace ARGS… --kernel --format json -- pipes N K`: (exit code, report, stderr).
fn traced(leading: &[&str], n: u64, k: u64) -> (i32, Value, String) {
    let out = output(
        oomtrace()
            .args(leading)
            .args(["--kernel", "--format", "json", "--"])
            .arg(pipes())
            .args([n.to_string(), k.to_string()]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}); stderr: {stderr}"));
    (out.status.code().unwrap_or(-1), report, stderr)
}

fn functions(stack: &Value) -> Vec<&str> {
    stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect()
}

/// The page stacks that ran through the pipe write path.
fn pipe_write_stacks(report: &Value) -> Vec<&Value> {
    report["kernel_stacks"]
        .as_array()
        .expect("--kernel report has kernel_stacks")
        .iter()
        // An interrupt that allocates while the write runs shows the write deeper in its stack.
        .filter(|s| s["interrupt"] == false)
        .filter(|s| s["source"] == "page" && functions(s).contains(&"anon_pipe_write"))
        .collect()
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn assert_pipe_pages(report: &Value, pipes: u64, pages: u64) {
    let stacks = pipe_write_stacks(report);
    // One stack: the tracepoint fires at the end of the page allocator whatever path it took,
    // and the workload touches its buffer first, so no user fault happens inside the write.
    assert_eq!(
        stacks.len(),
        1,
        "expected one page stack through anon_pipe_write, got {stacks:#?}"
    );
    let s = stacks[0];
    let bytes = pipes * pages * PAGE;
    let got = (
        n(s, "peak_outstanding_bytes"),
        n(s, "outstanding_bytes"),
        n(s, "allocated_bytes"),
        n(s, "allocs"),
        n(s, "frees"),
    );
    assert_eq!(
        got,
        (bytes, 0, bytes, pipes * pages, pipes * pages),
        "anon_pipe_write (peak, outstanding, allocated, allocs, frees): expected {:?}, got {got:?}",
        (bytes, 0, bytes, pipes * pages, pipes * pages)
    );
    let traced_pid = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["pid"] == s["pid"]);
    assert!(traced_pid, "the pipe pages belong to the traced process");
    // Innermost first: the page allocator, then (a few frames up) the pipe write, the syscall.
    let f = functions(s);
    let write = f.iter().position(|&x| x == "anon_pipe_write").unwrap();
    assert!(
        f[..write].iter().any(|x| x.contains("alloc_pages")),
        "{f:?}"
    );
    assert!(f[write..].contains(&"ksys_write"), "{f:?}");
}

/// Whether the kernel has function `name` (then its probe may be attached or refused).
fn kernel_has(name: &str) -> bool {
    let syms = std::fs::read_to_string("/proc/kallsyms").unwrap();
    syms.lines()
        .any(|l| l.split_whitespace().nth(2) == Some(name))
}

#[test]
fn pipe_pages_are_attributed_to_anon_pipe_write() {
    if !require_bpf() {
        return;
    }
    let (pipes_n, pages) = (8, 32);
    let (code, report, stderr) = traced(&["run"], pipes_n, pages);
    assert_eq!(
        code, 0,
        "the workload and oomtrace succeed; stderr: {stderr}"
    );
    assert_pipe_pages(&report, pipes_n, pages);
    // The pipes' buffer rings grew with F_SETPIPE_SZ: slab, under pipe_fcntl.
    let slab = report["kernel_stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "slab" && functions(s).contains(&"pipe_fcntl"))
        .expect("a slab stack under pipe_fcntl");
    assert_eq!(n(slab, "allocs"), pipes_n, "one ring per pipe");
    assert_eq!(n(slab, "outstanding_bytes"), 0, "freed at close");
    // Sorted by peak outstanding bytes.
    let peaks: Vec<u64> = report["kernel_stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| n(s, "peak_outstanding_bytes"))
        .collect();
    assert!(peaks.windows(2).all(|w| w[0] >= w[1]), "{peaks:?}");
    assert_eq!(n(&report, "lost_events"), 0);
}

#[test]
fn drm_and_ttm_probes_are_reported_without_failing_the_run() {
    if !require_bpf() {
        return;
    }
    let (code, report, stderr) = traced(&["run"], 1, 4);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_pipe_pages(&report, 1, 4);
    let probes = report["kernel_probes"].as_array().expect("kernel_probes");
    let status = |name: &str| {
        probes
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {probes:?}"))
    };
    for (name, kind) in [
        ("drm_gem_object_init", "fexit"),
        ("drm_gem_object_release", "fentry"),
        ("ttm_pool_alloc", "fexit"),
        ("ttm_pool_free", "fentry"),
    ] {
        let p = status(name);
        assert_eq!(p["kind"], kind, "{p}");
        if kernel_has(name) {
            assert!(p["status"] == "attached" || p["status"] == "refused", "{p}");
        } else {
            assert_eq!(p["status"], "absent", "{p}");
            assert!(stderr.contains(&format!("{name} absent")), "{stderr}");
        }
    }
    let events = std::path::Path::new("/sys/kernel/tracing/events");
    for (name, dir) in [
        ("amdgpu:amdgpu_bo_create", "amdgpu/amdgpu_bo_create"),
        ("gpu_mem:gpu_mem_total", "gpu_mem/gpu_mem_total"),
    ] {
        let p = status(name);
        assert_eq!(p["kind"], "tracepoint");
        if !events.join(dir).exists() {
            assert_eq!(p["status"], "absent", "{p}");
        }
    }
    // One notice line per unavailable group, not one per probe.
    let notices = stderr
        .lines()
        .filter(|l| l.starts_with("oomtrace: notice:"))
        .count();
    assert!(notices <= 4, "{stderr}");
}

#[test]
fn kernel_stacks_survive_a_recording() {
    if !require_bpf() {
        return;
    }
    let file = work_dir().join("kernel.oomtrace");
    let (code, live, stderr) = traced(&["record", "-o", file.to_str().unwrap()], 4, 16);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_pipe_pages(&live, 4, 16);
    let offline = report_json(&file);
    assert_eq!(
        offline["kernel_stacks"], live["kernel_stacks"],
        "kernel_stacks from the recording must equal the live ones"
    );
    // Everything else too; the probe statuses describe the live session only.
    let mut live = live;
    live.as_object_mut().unwrap().remove("kernel_probes");
    assert_eq!(offline, live);
    let text = output(oomtrace().arg("report").arg(&file));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("kernel stacks by peak outstanding bytes"),
        "{text}"
    );
    assert!(text.contains("anon_pipe_write"), "{text}");
}

#[test]
fn without_kernel_the_report_has_no_kernel_section() {
    if !require_bpf() {
        return;
    }
    let out = output(
        oomtrace()
            .args(["run", "--format", "json", "--"])
            .arg(pipes())
            .args(["1", "1", "0"]),
    );
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report.get("kernel_stacks").is_none());
    assert!(report.get("kernel_probes").is_none());
}

#[test]
fn probes_refuses_kernel_with_one_line() {
    let out = output(oomtrace().args(["probes", "--kernel"]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--kernel applies to run"), "{stderr}");
}
