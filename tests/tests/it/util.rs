//! Test harness: the oomtrace binary, ground-truth workloads built on demand, and report helpers.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

/// Workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The oomtrace binary under test (built by `cargo xtask test`).
pub fn bin() -> PathBuf {
    let p = std::env::var_os("OOMTRACE_BIN")
        .map_or_else(|| root().join("target/release/oomtrace"), PathBuf::from);
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo xtask test`",
        p.display()
    );
    p
}

/// A command for the oomtrace binary.
pub fn oomtrace() -> Command {
    Command::new(bin())
}

/// Whether this test may load BPF. Without root it skips, except under CI=true where it fails.
pub fn require_bpf() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("this test loads BPF programs and needs root; under CI=true it must not be skipped");
    }
    eprintln!("skipping: needs root to load BPF programs");
    false
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Directory for built workloads.
pub fn work_dir() -> PathBuf {
    let d = root().join("target/test-workloads");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Compiles `tests/workloads/<src>.c` with `flags` into `<name>` once per test process.
pub fn build_c(src: &str, name: &str, flags: &[&str]) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let out = work_dir().join(name);
    let status = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(root().join(format!("tests/workloads/{src}.c")))
        .arg("-pthread")
        .status()
        .expect("cc runs");
    assert!(status.success(), "building {name} failed");
    built.insert(name.to_owned(), out.clone());
    out
}

/// The ground-truth workload with frame pointers.
pub fn groundtruth_fp() -> PathBuf {
    build_c(
        "groundtruth",
        "groundtruth-fp",
        &[
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-Wno-alloc-size-larger-than",
        ],
    )
}

/// The ground-truth workload without frame pointers.
pub fn groundtruth_nofp() -> PathBuf {
    build_c(
        "groundtruth",
        "groundtruth-nofp",
        &[
            "-O2",
            "-g",
            "-fomit-frame-pointer",
            "-Wno-alloc-size-larger-than",
        ],
    )
}

/// Runs and returns the output, failing with stderr shown if it cannot start.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `oomtrace run --format json -- args…`: (exit code, report).
pub fn run_json(args: &[&std::ffi::OsStr]) -> (i32, Value) {
    let out = output(
        oomtrace()
            .args(["run", "--format", "json", "--"])
            .args(args),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}); stderr: {stderr}"));
    (out.status.code().unwrap_or(-1), report)
}

/// Asserts that `out` succeeded (showing its stderr if not) and parses its stdout as JSON.
pub fn ok_json(out: &std::process::Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("output is not JSON ({e}); stderr: {stderr}"))
}

/// Figures of one function's stacks within one process, summed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    pub outstanding_bytes: u64,
    pub outstanding_allocs: u64,
    pub allocated_bytes: u64,
    pub allocs: u64,
    pub failed_allocs: u64,
}

/// Sums the stacks whose frame 0 is `function` (in process `pid`, or any).
pub fn figures(report: &Value, function: &str, pid: Option<u64>) -> Figures {
    let mut f = Figures::default();
    for st in report["stacks"].as_array().unwrap() {
        if pid.is_some_and(|p| st["pid"].as_u64() != Some(p)) {
            continue;
        }
        if st["frames"][0]["function"].as_str() != Some(function) {
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

/// Asserts `function`'s figures, showing expected vs got.
pub fn assert_figures(report: &Value, function: &str, pid: Option<u64>, expected: Figures) {
    let got = figures(report, function, pid);
    assert_eq!(
        got, expected,
        "figures of {function} (pid {pid:?}): expected {expected:?}, got {got:?}"
    );
}

/// Shorthand for a leak: `bytes` in `blocks`, all still outstanding.
pub fn leak(bytes: u64, blocks: u64) -> Figures {
    Figures {
        outstanding_bytes: bytes,
        outstanding_allocs: blocks,
        allocated_bytes: bytes,
        allocs: blocks,
        failed_allocs: 0,
    }
}

/// The process entry for `pid`.
pub fn process(report: &Value, pid: u64) -> &Value {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
        .unwrap_or_else(|| panic!("no process {pid} in report"))
}

/// Every process's totals equal the sum of its stacks.
pub fn assert_consistent(report: &Value) {
    for p in report["processes"].as_array().unwrap() {
        let pid = p["pid"].as_u64().unwrap();
        let (mut out, mut allocs) = (0, 0);
        for st in report["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["pid"].as_u64() == Some(pid))
        {
            out += st["outstanding_bytes"].as_u64().unwrap();
            allocs += st["allocs"].as_u64().unwrap();
        }
        assert_eq!(
            p["outstanding_bytes"].as_u64().unwrap(),
            out,
            "pid {pid}: process outstanding != sum of stacks"
        );
        assert_eq!(
            p["allocs"].as_u64().unwrap(),
            allocs,
            "pid {pid}: process allocs != sum of stacks"
        );
    }
}

/// Starts the `attach` scenario; returns it, its pid and its stdin (a line lets it go on).
pub fn waiting_workload() -> (std::process::Child, u32, ChildStdin) {
    let mut w = Command::new(groundtruth_fp())
        .arg("attach")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
    let pid = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("ready ")
        .unwrap()
        .parse()
        .unwrap();
    let stdin = w.stdin.take().unwrap();
    (w, pid, stdin)
}

/// Starts oomtrace and waits for its "attached"/"tracing" line on stderr.
pub fn start_tracer(args: &[&str]) -> Child {
    let mut t = oomtrace()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(t.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(
        line.contains("attached to pid") || line.contains("tracing every process"),
        "{line}"
    );
    t
}

/// `oomtrace report FILE --format json`, which must succeed: the report of a recording.
pub fn report_json(file: &std::path::Path) -> serde_json::Value {
    let out = output(
        oomtrace()
            .arg("report")
            .arg(file)
            .args(["--format", "json"]),
    );
    assert!(
        out.status.success(),
        "report {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the report is JSON")
}
