//! The allocator each process really uses (issue: pid attach by linker order, jemalloc/tcmalloc/
//! mimalloc with prefixes, static binaries, Go, containers): the mixed ground-truth workload
//! linked against each allocator, statically, and a Rust binary with a prefixed jemalloc beside
//! glibc, started by `run` and attached by `--pid`, with exact per-function figures.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::groundtruth::{MAP_PAGES, assert_allocator_kinds, assert_kinds};
use crate::util::*;

/// The ground-truth workload linked against `lib` (`-l<lib>` before libc), or statically.
fn groundtruth_with(lib: &str) -> PathBuf {
    let name = format!("groundtruth-{lib}");
    let mut flags = vec![
        "-O2",
        "-g",
        "-fno-omit-frame-pointer",
        "-Wno-alloc-size-larger-than",
    ];
    let l = format!("-l{lib}");
    if lib == "static" {
        flags.push("-static");
    } else {
        flags.extend(["-Wl,--no-as-needed", l.as_str()]);
    }
    build_c("groundtruth", &name, &flags)
}

const LIBS: &[(&str, &str)] = &[
    ("jemalloc", "libjemalloc.so"),
    ("tcmalloc", "libtcmalloc.so"),
    ("mimalloc", "libmimalloc.so"),
];

/// `oomtrace probes ARGS`: its text.
fn probes(args: &[&str]) -> String {
    let out = output(oomtrace().arg("probes").args(args));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn each_allocator_library_and_static_glibc_is_exact_under_run() {
    if !require_bpf() {
        return;
    }
    for (lib, soname) in LIBS
        .iter()
        .copied()
        .chain([("static", "groundtruth-static")])
    {
        let exe = groundtruth_with(lib);
        let text = probes(&["--binary", exe.to_str().unwrap()]);
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("allocator object: ") && first.contains(soname),
            "{lib}: {text}"
        );
        assert!(text.contains("why: malloc comes from"), "{lib}: {text}");
        let (code, report) = run_json(&[exe.as_os_str(), "kinds".as_ref()]);
        assert_eq!(code, 0, "{lib}");
        if lib == "tcmalloc" {
            // tcmalloc interposes mmap itself: the direct mapping is counted exactly, but its
            // call site is tcmalloc's mmap wrapper (no frame pointer there to walk past it).
            assert_allocator_kinds(&report);
            let exact = report["stacks"].as_array().unwrap().iter().any(|s| {
                let n = |k: &str| s[k].as_u64().unwrap();
                (n("outstanding_bytes"), n("allocated_bytes"), n("allocs"))
                    == (
                        MAP_PAGES.outstanding_bytes,
                        MAP_PAGES.allocated_bytes,
                        MAP_PAGES.allocs,
                    )
            });
            assert!(exact, "map_pages's mapping, counted exactly");
        } else {
            assert_kinds(&report);
        }
        assert_eq!(report["mismatched_frees"], 0, "{lib}");
    }
}

/// Starts `exe attach` (it allocates before, then waits for a line): (child, pid, stdin).
fn waiting(exe: &std::path::Path) -> (std::process::Child, u32, std::process::ChildStdin) {
    use std::io::BufRead as _;
    let mut w = Command::new(exe)
        .arg("attach")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(w.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = line.trim().strip_prefix("ready ").unwrap().parse().unwrap();
    let stdin = w.stdin.take().unwrap();
    (w, pid, stdin)
}

/// Attaches to `pid` until it exits; the report.
fn attach_until_exit(
    pid: u32,
    mut stdin: std::process::ChildStdin,
    mut w: std::process::Child,
) -> Value {
    let tracer = start_tracer(&["--pid", &pid.to_string(), "--format", "json"]);
    writeln!(stdin, "go").unwrap();
    assert!(w.wait().unwrap().success());
    let out = tracer.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn pid_attach_takes_the_allocator_the_process_links() {
    if !require_bpf() {
        return;
    }
    for (lib, soname) in LIBS
        .iter()
        .copied()
        .chain([("static", "groundtruth-static")])
    {
        let exe = groundtruth_with(lib);
        let (w, pid, stdin) = waiting(&exe);
        // The decision, from the process's own link map, before anything is attached.
        let text = probes(&["--pid", &pid.to_string()]);
        assert!(
            text.lines().next().unwrap_or_default().contains(soname),
            "{lib}: {text}"
        );
        let report = attach_until_exit(pid, stdin, w);
        assert_figures(
            &report,
            "after_attach",
            Some(u64::from(pid)),
            leak(20_000, 5),
        );
        assert_eq!(report["unknown_frees"], 100, "{lib}");
        assert_eq!(report["mismatched_frees"], 0, "{lib}");
    }
}

/// The Rust program (tests/rust-heaps): tikv-jemallocator (`_rjem_*`) as its global allocator,
/// glibc's malloc beside it. Built once, with frame pointers so its functions show on stacks.
fn rust_heaps() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = root().join("target/rust-heaps");
            let status = Command::new("cargo")
                .args(["build", "--release", "--locked", "--manifest-path"])
                .arg(root().join("tests/rust-heaps/Cargo.toml"))
                .env("CARGO_TARGET_DIR", &target)
                .env("RUSTFLAGS", "-C force-frame-pointers=yes")
                .env_remove("CARGO_BUILD_TARGET")
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building tests/rust-heaps failed");
            target.join("release/rust-heaps")
        })
        .clone()
}

/// Sums the stacks whose first `depth` frames include `function`.
fn through(report: &Value, function: &str, depth: usize) -> Figures {
    let mut f = Figures::default();
    for st in report["stacks"].as_array().unwrap() {
        let frames = st["frames"].as_array().unwrap();
        if !frames
            .iter()
            .take(depth)
            .any(|fr| fr["function"] == function)
        {
            continue;
        }
        let n = |k: &str| st[k].as_u64().unwrap();
        f.outstanding_bytes += n("outstanding_bytes");
        f.outstanding_allocs += n("outstanding_allocs");
        f.allocated_bytes += n("allocated_bytes");
        f.allocs += n("allocs");
        f.failed_allocs += n("failed_allocs");
    }
    f
}

fn assert_rust_heaps(report: &Value) {
    assert_eq!(
        through(report, "rust_heaps::leak_boxes", 4),
        leak(10_000, 10),
        "tikv-jemallocator blocks"
    );
    let churn = through(report, "rust_heaps::churn", 4);
    assert_eq!(
        (churn.allocs, churn.allocated_bytes, churn.outstanding_bytes),
        (1000, 64_000, 0),
        "freed through _rjem_sdallocx, paired within its own heap"
    );
    assert_eq!(
        through(report, "rust_heaps::leak_libc", 1),
        leak(1500, 3),
        "glibc's heap beside it"
    );
    assert_eq!(report["mismatched_frees"], 0);
}

#[test]
fn a_rust_binary_with_tikv_jemallocator_has_two_heaps() {
    if !require_bpf() {
        return;
    }
    let exe = rust_heaps();
    let text = probes(&["--binary", exe.to_str().unwrap()]);
    assert!(text.contains("_rjem_malloc"), "{text}");
    assert!(text.contains("has a heap of its own"), "{text}");
    let (code, report) = run_json(&[exe.as_os_str(), "run".as_ref()]);
    assert_eq!(code, 0);
    assert_rust_heaps(&report);
    // Attached by pid, the same.
    let (w, pid, stdin) = waiting(&exe);
    let report = attach_until_exit(pid, stdin, w);
    assert_rust_heaps(&report);
}

#[test]
fn a_go_program_runs_unprobed_to_its_normal_exit() {
    if !require_bpf() {
        return;
    }
    let dir = root().join("tests/workloads/goleak");
    let exe = work_dir().join("goleak");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&exe)
        .arg(".")
        .current_dir(&dir)
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", work_dir().join("go-cache"))
        .env("GOPATH", work_dir().join("go-path"))
        .status()
        .expect("go runs");
    assert!(status.success(), "building the Go workload failed");
    let untraced = output(&mut Command::new(&exe));
    let traced = output(
        oomtrace()
            .args(["run", "--format", "json", "-o"])
            .arg(work_dir().join("goleak.json"))
            .arg("--")
            .arg(&exe),
    );
    let stderr = String::from_utf8_lossy(&traced.stderr);
    assert_eq!(traced.status.code(), Some(0), "{stderr}");
    assert_eq!(traced.stdout, untraced.stdout, "its output is unchanged");
    assert!(stderr.contains("is a Go program"), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.contains("Go program")).count(),
        1,
        "one line says what is traced: {stderr}"
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(work_dir().join("goleak.json")).unwrap()).unwrap();
    // Its 64 MiB heap lies in memory the Go runtime mapped, attributed to the runtime's mmap.
    let p = &report["processes"][0];
    assert!(p["outstanding_bytes"].as_u64().unwrap() >= 64 << 20, "{p}");
    assert!(
        report["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["function"] == "runtime.sysAlloc" || f["function"] == "runtime.mmap")),
        "the runtime's mappings are on the stacks"
    );
}

#[test]
fn a_process_in_its_own_mount_namespace_with_a_private_libc() {
    if !require_bpf() {
        return;
    }
    let exe = groundtruth_fp();
    let dir = work_dir().join("private-root");
    std::fs::create_dir_all(&dir).unwrap();
    // A private tmpfs holding a copy of libc (another inode, another path) that only this
    // process's namespace sees, and the program loads.
    let script = format!(
        "mount -t tmpfs none {d} && cp /lib/x86_64-linux-gnu/libc.so.6 {d}/ && \
         LD_LIBRARY_PATH={d} exec {exe} attach",
        d = dir.display(),
        exe = exe.display()
    );
    let mut w = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(w.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let pid: u32 = line.trim().strip_prefix("ready ").unwrap().parse().unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let private = format!("{}/libc.so.6", dir.display());
    assert!(
        maps.contains(&private),
        "the private libc is mapped: {maps}"
    );
    let text = probes(&["--pid", &pid.to_string()]);
    assert!(
        text.lines().next().unwrap_or_default().contains(&private),
        "{text}"
    );
    let stdin = w.stdin.take().unwrap();
    let report = attach_until_exit(pid, stdin, w);
    assert_figures(
        &report,
        "after_attach",
        Some(u64::from(pid)),
        leak(20_000, 5),
    );
}

#[test]
fn an_allocator_loaded_after_start_is_probed_when_mapped() {
    if !require_bpf() {
        return;
    }
    let exe = build_c(
        "dlopen_heap",
        "dlopen_heap",
        &["-O2", "-g", "-fno-omit-frame-pointer"],
    );
    let out = output(oomtrace().args(["run", "--format", "json", "--"]).arg(&exe));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("libmimalloc") && stderr.contains("after it started"),
        "the late probe is said: {stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_figures(&report, "leak_mi", None, leak(12_000, 4));
    let churn = figures(&report, "churn_mi", None);
    assert_eq!(
        (churn.allocs, churn.allocated_bytes, churn.outstanding_bytes),
        (2, 1000, 0)
    );
    assert_eq!(report["mismatched_frees"], 0);
}

#[test]
fn no_allocator_to_probe_is_one_clear_line() {
    if !require_bpf() {
        return;
    }
    // A stripped static binary: no symbol left.
    let stripped = work_dir().join("groundtruth-static-stripped");
    std::fs::copy(groundtruth_with("static"), &stripped).unwrap();
    assert!(
        Command::new("strip")
            .arg(&stripped)
            .status()
            .unwrap()
            .success()
    );
    let out = output(
        oomtrace()
            .args(["run", "--format", "json", "--"])
            .arg(&stripped)
            .arg("kinds"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("statically linked and stripped"),
        "{stderr}"
    );
    // Growth mode needs no allocator: it traces it anyway.
    let out = output(
        oomtrace()
            .args(["run", "--mode", "growth", "--format", "json", "--"])
            .arg(&stripped)
            .arg("kinds"),
    );
    assert_eq!(out.status.code(), Some(0));
    // A zombie: exited, nothing to trace.
    let mut z = Command::new("sh")
        .args(["-c", "sleep 0.2 & exec sleep 5"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let zombie = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                let f: Vec<&str> = s
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                f.first() == Some(&"Z") && f.get(1) == Some(&z.id().to_string().as_str())
            })
        })
        .expect("the zombie child");
    let out = output(oomtrace().args(["--pid", &zombie.to_string(), "--format", "json"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    z.kill().unwrap();
    z.wait().unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("has exited"), "{stderr}");
}
