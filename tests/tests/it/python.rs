//! Python frames (issue 21): the Python function and line that hold the memory, read in the
//! kernel at each allocation and spliced into the native stack, checked against tracemalloc,
//! on a process attached by pid, through a C extension, under a memory cap, and replayed.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::*;

/// Debian's interpreter: installed by `cargo xtask setup`, so required under CI.
const DEBIAN_PYTHON: &str = "/usr/bin/python3.11";
/// A pyenv build with `libpython` (3.12 has shim frames), run when the machine has it.
const PYENV_PYTHONS: &[&str] = &["/root/.pyenv/versions/3.12.1/bin/python3.12"];

/// The interpreters to test with: Debian's (required under CI=true; without it, outside CI,
/// none) and each pyenv one present (its absence is said).
fn interpreters() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if Path::new(DEBIAN_PYTHON).exists() {
        out.push(PathBuf::from(DEBIAN_PYTHON));
    } else if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{DEBIAN_PYTHON} is missing: `cargo xtask setup` installs python3 (Debian)");
    } else {
        eprintln!("skipping: no {DEBIAN_PYTHON}");
        return out;
    }
    for p in PYENV_PYTHONS {
        if Path::new(p).exists() {
            out.push(PathBuf::from(p));
        } else {
            eprintln!("note: {p} is absent: not tested with it");
        }
    }
    out
}

fn workload(name: &str) -> PathBuf {
    root().join("tests/workloads/python").join(name)
}

/// The 1-based line of `marker` in a workload script.
fn line_of(script: &Path, marker: &str) -> u64 {
    let text = std::fs::read_to_string(script).unwrap();
    text.lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker} not in {}", script.display())) as u64
        + 1
}

/// A stack's allocation site frame.
fn site(stack: &Value) -> &Value {
    let i = stack["site"].as_u64().unwrap() as usize;
    &stack["frames"][i]
}

/// Whether a frame is a Python frame (a token address, see `oomtrace_common::python`).
fn is_python(frame: &Value) -> bool {
    frame["addr"]
        .as_str()
        .is_some_and(|a| a.len() == 18 && a.starts_with("0x80000000"))
}

/// The stacks of `report` whose site is line `line` of `script`: their summed outstanding
/// bytes and allocations, and the site functions seen.
fn at_line(report: &Value, script: &Path, line: u64) -> (u64, u64, Vec<String>) {
    let (mut bytes, mut allocs, mut functions) = (0, 0, Vec::new());
    for st in report["stacks"].as_array().unwrap() {
        let f = site(st);
        if f["file"].as_str() == Some(script.to_str().unwrap()) && f["line"] == line {
            bytes += st["outstanding_bytes"].as_u64().unwrap();
            allocs += st["outstanding_allocs"].as_u64().unwrap();
            let name = f["function"].as_str().unwrap_or("?").to_owned();
            if !functions.contains(&name) {
                functions.push(name);
            }
        }
    }
    (bytes, allocs, functions)
}

fn short(python: &Path) -> String {
    python.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn python_sites_and_bytes_agree_with_tracemalloc() {
    if !require_bpf() {
        return;
    }
    let script = workload("groundtruth.py");
    let (keep_bytes, keep_buffers) = (
        line_of(&script, "# KEEP_BYTES"),
        line_of(&script, "# KEEP_BUFFERS"),
    );
    for python in interpreters() {
        // Ground truth: tracemalloc's bytes per line, blocks of 512 B and more (what malloc
        // serves; the script says why that is like with like).
        let out = output(Command::new(&python).arg(&script).arg("tracemalloc"));
        let truth = ok_json(&out);
        let (code, report) = run_json(&[python.as_os_str(), script.as_os_str(), "plain".as_ref()]);
        assert_eq!(code, 0, "{python:?}");
        for (line, function, blocks, size) in [
            (keep_bytes, "keep_bytes", 2000, 4096 + 33),
            (keep_buffers, "keep_buffers", 60, 100_001),
        ] {
            let expected = truth[line.to_string()].as_u64().unwrap();
            let (bytes, allocs, functions) = at_line(&report, &script, line);
            // The list comprehension is a function of its own before 3.12 (PEP 709).
            assert!(
                !functions.is_empty() && functions.iter().all(|f| f.starts_with(function)),
                "{}: line {line} must be named {function}: {functions:?}",
                short(&python)
            );
            let off = (bytes as f64 - expected as f64).abs() / expected as f64;
            assert!(
                off <= 0.05,
                "{}: line {line} ({function}): oomtrace {bytes} B, tracemalloc {expected} B",
                short(&python)
            );
            // And the objects themselves, exactly: each is one malloc of its size.
            assert!(
                allocs >= blocks && bytes >= blocks * size,
                "{}: line {line}: {allocs} blocks, {bytes} B",
                short(&python)
            );
        }
        // They are the top Python sites by outstanding bytes.
        let mut python_sites: Vec<(u64, u64)> = report["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| is_python(site(s)))
            .map(|s| {
                (
                    s["outstanding_bytes"].as_u64().unwrap(),
                    site(s)["line"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        python_sites.sort_unstable_by(|a, b| b.cmp(a));
        let top: Vec<u64> = python_sites.iter().take(2).map(|s| s.1).collect();
        assert!(
            top.contains(&keep_bytes) && top.contains(&keep_buffers),
            "{}: top Python sites {python_sites:?}",
            short(&python)
        );
        // A pure-Python stack: the interpreter's frames are the "via" note, none is the site.
        let st = report["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| site(s)["line"] == keep_buffers)
            .unwrap();
        assert!(!st["via"].as_array().unwrap().is_empty(), "{st}");
        assert_eq!(report["python_failed"], Value::Null, "no read failures");
    }
}

#[test]
fn attach_by_pid_names_the_growing_python_line_and_leaves_output_alone() {
    if !require_bpf() {
        return;
    }
    let script = workload("grow_wait.py");
    let grow = line_of(&script, "# GROW");
    for python in interpreters() {
        let run = |traced: bool| -> (String, Option<Value>) {
            let mut w = Command::new(&python)
                .arg(&script)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
            let ready = lines.next().unwrap().unwrap();
            let pid = ready.strip_prefix("ready ").unwrap().to_owned();
            let tracer = traced.then(|| start_tracer(&["--pid", &pid, "--format", "json"]));
            writeln!(w.stdin.take().unwrap()).unwrap();
            let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
            assert!(w.wait().unwrap().success());
            let report = tracer.map(|t| ok_json(&t.wait_with_output().unwrap()));
            (rest.join("\n"), report)
        };
        let (plain, _) = run(false);
        let (traced, report) = run(true);
        assert_eq!(
            traced,
            plain,
            "{}: the process's output is unchanged",
            short(&python)
        );
        let report = report.unwrap();
        let (_, _, functions) = at_line(&report, &script, grow);
        assert_eq!(functions, ["grow_cache"], "{}", short(&python));
        // 200 buffers of 64 KiB (+1 byte each: bytearray's terminator), all after attach, in
        // one stack; the list that holds them grows at the same line, in stacks of its own.
        let buffers: Vec<(u64, u64)> = report["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| site(s)["line"] == grow && s["sizes"]["max"] == 65537)
            .map(|s| {
                (
                    s["outstanding_bytes"].as_u64().unwrap(),
                    s["outstanding_allocs"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(buffers, [(200 * 65537, 200)], "{}", short(&python));
    }
}

/// Builds `grabber.c` for `python` (its own `-config` headers).
fn build_extension(python: &Path) -> PathBuf {
    let config = PathBuf::from(format!("{}-config", python.display()));
    let includes = output(Command::new(&config).arg("--includes"));
    assert!(includes.status.success(), "{config:?} --includes failed");
    let dir = work_dir().join(format!("python-ext-{}", short(python)));
    std::fs::create_dir_all(&dir).unwrap();
    let so = dir.join("grabber.so");
    let mut cc = Command::new("gcc");
    cc.args(["-shared", "-fPIC", "-O2", "-g", "-o"])
        .arg(&so)
        .arg(workload("grabber.c"))
        .args(String::from_utf8_lossy(&includes.stdout).split_whitespace());
    let out = output(&mut cc);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

#[test]
fn c_extension_allocation_reads_python_caller_then_extension() {
    if !require_bpf() {
        return;
    }
    let script = workload("ext_caller.py");
    let grab = line_of(&script, "# GRAB");
    for python in interpreters() {
        let dir = build_extension(&python);
        let (code, report) = run_json(&[python.as_os_str(), script.as_os_str(), dir.as_os_str()]);
        assert_eq!(code, 0);
        let st = report["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| site(s)["function"] == "grab")
            .unwrap_or_else(|| panic!("{}: no stack at grab: {report}", short(&python)));
        assert_eq!(st["outstanding_bytes"], 40 * 300_000, "{}", short(&python));
        assert_eq!(st["outstanding_allocs"], 40);
        // malloc's caller is the extension function; the first Python frame outside it is
        // its caller, at the line of the call.
        let frames = st["frames"].as_array().unwrap();
        assert_eq!(frames[0]["function"], "grab");
        assert_eq!(frames[0]["module"], "grabber.so");
        let caller = frames.iter().find(|f| is_python(f)).unwrap();
        assert_eq!(
            (caller["function"].as_str(), caller["line"].as_u64()),
            (Some("load_images"), Some(grab)),
            "{}: {st}",
            short(&python)
        );
    }
}

#[test]
fn capped_python_job_is_oom_killed_and_names_the_python_function() {
    if !require_bpf() {
        return;
    }
    let script = workload("ingest.py");
    let line = line_of(&script, "# INGEST");
    // The seed's scenario needs one interpreter: Debian's.
    let python = interpreters().into_iter().next();
    let Some(python) = python else { return };
    let dir = work_dir().join("python-oom-artifacts");
    let _ = std::fs::remove_dir_all(&dir);
    let out = output(
        oomtrace()
            .args(["run", "--memory-max", "200M", "--artifacts"])
            .arg(&dir)
            .args(["--format", "json", "--"])
            .arg(&python)
            .arg(&script),
    );
    assert_eq!(
        out.status.code(),
        Some(137),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ooms: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("oom_events.json")).unwrap())
            .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = report["processes"][0]["pid"].as_u64().unwrap();
    let oom = ooms
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["pid"] == root)
        .unwrap_or_else(|| panic!("victim not in {ooms}"));
    let top = &oom["top_stacks"][0];
    let f = site(top);
    assert_eq!(
        (f["function"].as_str(), f["line"].as_u64()),
        (Some("ingest_batch"), Some(line)),
        "{top}"
    );
    // Most of the cap, in 1 MiB (+1 byte) batches.
    let held = top["outstanding_bytes"].as_u64().unwrap();
    assert!(held >= 120 << 20, "{held}");
    assert_eq!(held % ((1 << 20) + 1), 0, "{held}");
}

#[test]
fn recorded_python_frames_replay_the_same() {
    if !require_bpf() {
        return;
    }
    let script = workload("groundtruth.py");
    let Some(python) = interpreters().into_iter().next() else {
        return;
    };
    let file = work_dir().join("python.oomtrace");
    let out = output(
        oomtrace()
            .arg("record")
            .arg("-o")
            .arg(&file)
            .args(["--format", "json", "--"])
            .arg(&python)
            .arg(&script)
            .arg("plain"),
    );
    let live = ok_json(&out);
    let offline = report_json(&file);
    assert_eq!(
        offline, live,
        "the report from the recording equals the live one"
    );
    let (bytes, _, functions) = at_line(&offline, &script, line_of(&script, "# KEEP_BUFFERS"));
    assert_eq!(functions, ["keep_buffers"]);
    assert_eq!(bytes, 60 * 100_001);
    // And in the folded export too (Python frames are frames everywhere).
    let out = output(
        oomtrace()
            .arg("report")
            .arg(&file)
            .args(["--format", "folded"]),
    );
    let folded = String::from_utf8_lossy(&out.stdout);
    assert!(
        folded.lines().any(|l| l.contains("keep_buffers")),
        "{folded}"
    );
}

/// Growth mode reads the Python frames at each page fault it attributes: the pages a Python
/// line wrote are that line's, the interpreter and libc's memset in its "via" note.
#[test]
fn growth_mode_attributes_faulted_pages_to_the_python_line() {
    if !require_bpf() {
        return;
    }
    let script = workload("groundtruth.py");
    let keep_buffers = line_of(&script, "# KEEP_BUFFERS");
    for python in interpreters() {
        let out = output(
            oomtrace()
                .args(["run", "--mode", "growth", "--format", "json", "--"])
                .arg(&python)
                .arg(&script)
                .arg("plain"),
        );
        let report = ok_json(&out);
        assert_eq!(report["mode"]["name"], "growth");
        assert_eq!(report["lost_events"], 0);
        // 60 zero-filled bytearrays of 100 000 bytes, side by side on malloc's heap: their pages
        // (about 1465) are faulted in by the line, a page or two shared with neighbours.
        let (bytes, _, functions) = at_line(&report, &script, keep_buffers);
        assert!(
            functions.iter().all(|f| f == "keep_buffers") && !functions.is_empty(),
            "{}: {functions:?}",
            short(&python)
        );
        let want = 60 * 100_001u64;
        let off = (bytes as f64 - want as f64).abs() / want as f64;
        assert!(
            off <= 0.05,
            "{}: keep_buffers' line faulted {bytes} B in, {want} B written",
            short(&python)
        );
        assert_eq!(bytes % 4096, 0, "growth mode counts whole pages: {bytes}");
    }
}
