//! Recordings read back offline: identical reports, pprof read by real pprof, damaged files,
//! diff and time travel (issue 6).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::*;

/// `oomtrace record -o <name>.oomtrace --format json -- args…`: the file and the live report.
pub(crate) fn record(name: &str, args: &[&str]) -> (PathBuf, Value) {
    let file = work_dir().join(format!("{name}.oomtrace"));
    let out = output(
        oomtrace()
            .arg("record")
            .arg("-o")
            .arg(&file)
            .args(["--format", "json", "--"])
            .args(args),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        file,
        serde_json::from_slice(&out.stdout).expect("live report is JSON"),
    )
}

fn report(file: &Path, extra: &[&str]) -> std::process::Output {
    output(oomtrace().arg("report").arg(file).args(extra))
}

fn gt() -> String {
    groundtruth_fp().to_string_lossy().into_owned()
}

#[test]
fn offline_report_equals_the_live_one() {
    if !require_bpf() {
        return;
    }
    for scenario in ["kinds", "fork"] {
        let (file, live) = record(&format!("identical-{scenario}"), &[&gt(), scenario]);
        let offline = report_json(&file);
        assert_eq!(
            offline, live,
            "{scenario}: the report from the recording must equal the live report"
        );
    }
}

#[test]
fn pprof_export_is_read_by_go_tool_pprof() {
    if !require_bpf() {
        return;
    }
    let go = ["go", "/usr/lib/go/bin/go"].into_iter().find(|g| {
        Command::new(g)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(go) = go else {
        assert!(
            std::env::var("CI").is_err(),
            "go (Debian golang-go) is needed under CI: cargo xtask setup installs it"
        );
        eprintln!("skipping: no go toolchain for `go tool pprof`");
        return;
    };
    let (file, _) = record("pprof", &[&gt(), "kinds"]);
    let prof = work_dir().join("kinds.pb.gz");
    assert!(
        report(&file, &["--format", "pprof", "-o", prof.to_str().unwrap()])
            .status
            .success()
    );
    let top = output(
        Command::new(go)
            .args([
                "tool",
                "pprof",
                "-top",
                "-sample_index=inuse_space",
                "-symbolize=none",
                "-nodefraction=0",
                "-unit=B",
            ])
            .arg(&prof)
            .env("HOME", work_dir()),
    );
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success(),
        "{}",
        String::from_utf8_lossy(&top.stderr)
    );
    // The flat column, in bytes, of every function that leaks in the workload.
    let expected = [
        ("leak_large", "2097152B"),
        ("map_pages", "12288B"),
        ("leak_malloc", "10000B"),
        ("free_half", "6400B"),
        ("leak_calloc", "5000B"),
        ("leak_realloc", "4000B"),
        ("leak_posix_memalign", "1536B"),
        ("leak_memalign", "600B"),
        ("leak_aligned_alloc", "512B"),
        ("leak_reallocarray", "300B"),
        ("leak_pvalloc", "200B"),
        ("leak_valloc", "100B"),
    ];
    for (func, flat) in expected {
        let line = text
            .lines()
            .find(|l| l.trim_end().ends_with(func))
            .unwrap_or_else(|| panic!("{func} not in:\n{text}"));
        assert_eq!(line.split_whitespace().next(), Some(flat), "{func}: {line}");
    }
}

#[test]
fn damaged_recordings_give_a_clear_error_or_the_readable_prefix() {
    if !require_bpf() {
        return;
    }
    let (file, live) = record("damage", &[&gt(), "kinds"]);
    let bytes = std::fs::read(&file).unwrap();
    let cut = work_dir().join("damaged.oomtrace");
    let mut offsets: Vec<usize> = (0..24).collect();
    offsets.extend((24..bytes.len()).step_by(bytes.len() / 40 + 1));
    for &at in &offsets {
        std::fs::write(&cut, &bytes[..at]).unwrap();
        check_damaged(&cut, &live, &format!("cut at {at}"));
    }
    for i in 0..40 {
        let mut flipped = bytes.clone();
        let pos = (i * 7919) % bytes.len();
        flipped[pos] ^= 1 << (i % 8);
        std::fs::write(&cut, &flipped).unwrap();
        check_damaged(&cut, &live, &format!("bit flip at {pos}"));
    }
}

fn check_damaged(file: &Path, live: &Value, what: &str) {
    let out = report(file, &["--format", "json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{what}: {err}");
    match out.status.code() {
        Some(0) => {
            // A readable prefix: a valid report with no more events than the whole run.
            let r: Value =
                serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}"));
            let allocs = |v: &Value| {
                v["processes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["allocs"].as_u64().unwrap())
                    .sum::<u64>()
            };
            assert!(allocs(&r) <= allocs(live), "{what}");
            if allocs(&r) < allocs(live) {
                assert!(
                    err.contains("warning"),
                    "{what}: a shortened recording must say so: {err}"
                );
            }
        }
        Some(1) => {
            assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
            assert!(
                err.contains("byte") || err.contains("empty"),
                "{what}: the error names the offset: {err}"
            );
        }
        other => panic!("{what}: exit {other:?}: {err}"),
    }
}

#[test]
fn diff_puts_the_doubled_leak_first() {
    if !require_bpf() {
        return;
    }
    let (a, _) = record("diff-a", &[&gt(), "scaled", "50"]);
    let (b, _) = record("diff-b", &[&gt(), "scaled", "100"]);
    let out = output(
        oomtrace()
            .args(["diff", "--format", "json"])
            .arg(&a)
            .arg(&b),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &d["stacks"][0];
    assert_eq!(first["frames"][0]["function"], "scaled_leak", "{d}");
    assert_eq!(first["before_bytes"], 50_000);
    assert_eq!(first["after_bytes"], 100_000);
    assert_eq!(first["delta_bytes"], 50_000);
    let text = output(oomtrace().arg("diff").arg(&a).arg(&b));
    assert!(String::from_utf8_lossy(&text.stdout).contains("scaled_leak"));
}

#[test]
fn report_at_a_time_folded_and_flamegraph() {
    if !require_bpf() {
        return;
    }
    let demo = build_c("demo", "demo", &["-O2", "-g", "-fno-omit-frame-pointer"]);
    let (file, live) = record("demo", &[demo.to_str().unwrap()]);
    let duration = live["duration_s"].as_f64().unwrap();
    let at_half = report(
        &file,
        &[
            "--format",
            "json",
            "--at",
            &format!("{:.3}", duration / 2.0),
        ],
    );
    assert!(at_half.status.success());
    let half: Value = serde_json::from_slice(&at_half.stdout).unwrap();
    let now = figures(&half, "remember_session", None);
    assert!(
        now.allocs > 0 && now.allocs < 2000,
        "halfway through, some but not all sessions: {now:?}"
    );
    assert_eq!(
        now.outstanding_bytes,
        now.allocs * 4096,
        "each session holds 4096 bytes"
    );
    // Folded: root-first, the call site last, outstanding bytes.
    let folded = String::from_utf8(report(&file, &["--format", "folded"]).stdout).unwrap();
    let line = folded
        .lines()
        .find(|l| l.contains(";remember_session "))
        .unwrap_or_else(|| panic!("{folded}"));
    assert!(line.ends_with(" 8192000"), "{line}");
    assert!(
        line.contains("main;handle_request;remember_session"),
        "{line}"
    );
    let svg = work_dir().join("demo.svg");
    assert!(
        report(
            &file,
            &["--format", "csv", "--flamegraph", svg.to_str().unwrap()]
        )
        .status
        .success()
    );
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.contains("<svg") && svg.contains("remember_session"));
}

#[test]
fn missing_and_empty_recordings_are_one_line_errors() {
    let out = report(Path::new("/nonexistent.oomtrace"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("oomtrace: error: cannot read recording")
    );
    let empty = work_dir().join("empty.oomtrace");
    std::fs::write(&empty, b"").unwrap();
    let out = report(&empty, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

/// Issue 19: `report` needs no privilege but file access, so it drops the rest before reading
/// anything. Seen from outside while it waits on a FIFO for its recording.
#[test]
fn report_drops_every_capability_but_file_access() {
    // Root, to have capabilities to drop (and never skipped under CI=true).
    if !require_bpf() {
        return;
    }
    let fifo = work_dir().join("privs.fifo");
    let _ = std::fs::remove_file(&fifo);
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let mut child = oomtrace()
        .args(["report", "--format", "text"])
        .arg(&fifo)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let field = |status: &str, name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let start = std::time::Instant::now();
    let status = loop {
        let status = std::fs::read_to_string(&status_file).unwrap_or_default();
        if field(&status, "NoNewPrivs") == "1" || start.elapsed().as_secs() > 10 {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&fifo);
    assert_eq!(field(&status, "NoNewPrivs"), "1", "{status}");
    // CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER: bits 1-3.
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(field(&status, set), "000000000000000e", "{set} in {status}");
    }
    assert_eq!(field(&status, "CapInh"), "0000000000000000", "{status}");
}

/// Runs a tool the project's setup installs (binutils), which must succeed.
fn tool(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `debug_names.c` built `-O2 -g` with a build id as `name`, its debug info kept apart in
/// `name.debug` and the program stripped of every symbol into `name-stripped`: (the stripped
/// program, its debug file, its build id in hex).
fn stripped_with_debug_file(name: &str, flags: &[&str]) -> (PathBuf, PathBuf, String) {
    let mut all = flags.to_vec();
    all.extend(["-g", "-fno-omit-frame-pointer", "-Wl,--build-id"]);
    let full = build_c("debug_names", name, &all);
    let debug = work_dir().join(format!("{name}.debug"));
    let stripped = work_dir().join(format!("{name}-stripped"));
    tool(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&full)
            .arg(&debug),
    );
    tool(
        Command::new("strip")
            .arg("--strip-all")
            .arg("-o")
            .arg(&stripped)
            .arg(&full),
    );
    let notes = tool(Command::new("readelf").arg("-n").arg(&stripped));
    let id = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("no build id in {}: {notes}", stripped.display()))
        .trim()
        .to_owned();
    (stripped, debug, id)
}

/// `DIR/.build-id/xx/rest.debug` ← `debug`, for build id `id`, in a fresh `DIR`.
fn debug_dir(name: &str, id: &str, debug: &Path) -> PathBuf {
    let dir = work_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let sub = dir.join(".build-id").join(&id[..2]);
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::copy(debug, sub.join(format!("{}.debug", &id[2..]))).unwrap();
    dir
}

/// Function ranges of `file`'s symbol table: name → [start, end) in the module.
fn function_ranges(file: &Path) -> Vec<(String, u64, u64)> {
    tool(
        Command::new("nm")
            .args(["--defined-only", "--print-size"])
            .arg(file),
    )
    .lines()
    .filter_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let [start, size, kind, name] = f[..] else {
            return None;
        };
        let start = u64::from_str_radix(start, 16).ok()?;
        let size = u64::from_str_radix(size, 16).ok()?;
        matches!(kind, "T" | "t").then(|| (name.to_owned(), start, start + size))
    })
    .collect()
}

/// The line of `debug_names.c` marked `site: <function>`.
fn site_line(function: &str) -> u64 {
    let src = std::fs::read_to_string(root().join("tests/workloads/debug_names.c")).unwrap();
    let mark = format!("/* site: {function} */");
    1 + src.lines().position(|l| l.contains(&mark)).unwrap() as u64
}

/// A stripped program is recorded with no names; `report --debug-dir` names its frames on
/// the report's side, from the debug file of its build id, with the exact bytes; a debug file
/// of another build put under that build id names nothing.
#[test]
fn report_debug_dir_names_a_stripped_programs_frames_by_build_id() {
    if !require_bpf() {
        return;
    }
    let (exe, debug, id) = stripped_with_debug_file("debug-names", &["-O2"]);
    let module = exe.file_name().unwrap().to_str().unwrap().to_owned();
    let (file, live) = record("debug-names", &[exe.to_str().unwrap()]);
    let ours = |r: &Value| -> Vec<Value> {
        r["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["frames"][0]["module"] == module.as_str())
            .cloned()
            .collect()
    };
    // Recorded without names: each stack's frames in the program are unnamed; together they
    // hold every byte, from two call sites (one per function).
    for r in [&live, &report_json(&file)] {
        let stacks = ours(r);
        for s in &stacks {
            assert!(s["frames"][0]["function"].is_null(), "{s}");
            assert!(s["frames"][1]["function"].is_null(), "{s}");
            assert_eq!(s["frames"][0]["build_id"], id.as_str(), "{s}");
        }
        let sum = |k: &str| -> u64 { stacks.iter().map(|s| s[k].as_u64().unwrap()).sum() };
        assert_eq!(
            (sum("outstanding_bytes"), sum("outstanding_allocs")),
            (3 * 4096 + 2 * 1000, 5),
            "{r}"
        );
        let mut sites: Vec<&str> = stacks
            .iter()
            .map(|s| s["frames"][0]["addr"].as_str().unwrap())
            .collect();
        sites.sort();
        sites.dedup();
        assert_eq!(sites.len(), 2, "{sites:?}");
    }
    // The text report names them `module+0xoffset`, each offset inside the function the
    // debug file says it is in.
    let text = String::from_utf8(report(&file, &[]).stdout).unwrap();
    let ranges = function_ranges(&debug);
    // The function of `debug` a return address at module offset `off` lies in.
    let function_at = |off: u64| {
        ranges
            .iter()
            .find(|(_, start, end)| off > *start && off <= *end)
            .map(|(name, _, _)| name.clone())
    };
    let offset = |f: &Value| {
        let hex = f["offset"].as_str().unwrap_or_else(|| panic!("{f}"));
        u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap()
    };
    let prefix = format!("{module}+0x");
    let mut seen: Vec<String> = text
        .match_indices(&prefix)
        .map(|(at, _)| {
            let hex: String = text[at + prefix.len()..]
                .chars()
                .take_while(char::is_ascii_hexdigit)
                .collect();
            let off = u64::from_str_radix(&hex, 16).unwrap();
            function_at(off)
                .unwrap_or_else(|| panic!("{prefix}{hex} lies in no function: {ranges:?}"))
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        ["_start", "fill_cache", "main", "make_table"],
        "{text}"
    );
    assert!(!text.contains(&format!("{module}@")), "{text}");

    // With the debug directory: named, with file and line, and the same bytes.
    let dir = debug_dir("debug-names-dir", &id, &debug);
    let out = report(
        &file,
        &["--format", "json", "--debug-dir", dir.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let named: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_figures(&named, "make_table", None, leak(3 * 4096, 3));
    assert_figures(&named, "fill_cache", None, leak(2000, 2));
    for s in ours(&named) {
        let function = s["frames"][0]["function"].as_str().unwrap();
        let f = &s["frames"][0];
        assert!(
            f["file"].as_str().unwrap().ends_with("debug_names.c"),
            "{f}"
        );
        assert_eq!(f["line"].as_u64(), Some(site_line(function)), "{f}");
        assert_eq!(f["module"], module.as_str());
        assert_eq!(function_at(offset(f)).as_deref(), Some(function), "{f}");
        assert_eq!(s["frames"][1]["function"], "main", "{s}");
    }
    let text =
        String::from_utf8(report(&file, &["--debug-dir", dir.to_str().unwrap()]).stdout).unwrap();
    let line = site_line("make_table");
    assert!(
        text.contains(&format!("make_table (debug_names.c:{line}) [{module}]")),
        "{text}"
    );

    // Another build's debug file under this build id: refused, nothing named.
    let (_, other_debug, other_id) = stripped_with_debug_file("debug-names-o0", &["-O0"]);
    assert_ne!(other_id, id);
    let wrong = debug_dir("debug-names-wrong", &id, &other_debug);
    let out = report(
        &file,
        &["--format", "json", "--debug-dir", wrong.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unnamed: Value = serde_json::from_slice(&out.stdout).unwrap();
    for s in ours(&unnamed) {
        assert!(s["frames"][0]["function"].is_null(), "{s}");
        assert!(s["frames"][1]["function"].is_null(), "{s}");
    }
}
