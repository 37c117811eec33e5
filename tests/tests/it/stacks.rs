//! Whole stacks without frame pointers (issue 13): programs built `-O2 -fomit-frame-pointer`,
//! `g++ -O2`, allocations inside glibc and in a library loaded with `dlopen` all unwind to
//! `main` through the `.eh_frame` tables the kernel walks, with exact bytes; valgrind agrees.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::util::*;

/// Flags of the frame-pointer-free builds.
pub(crate) const NO_FP: &[&str] = &["-O2", "-g", "-fomit-frame-pointer"];

/// `unwind_chain.c` built without frame pointers.
fn chain_program() -> PathBuf {
    build_c("unwind_chain", "unwind-chain-nofp", NO_FP)
}

/// `unwind_plugin.c` as a shared library without frame pointers.
fn plugin_library() -> PathBuf {
    let mut flags = NO_FP.to_vec();
    flags.extend(["-fPIC", "-shared"]);
    build_c("unwind_plugin", "libunwind-plugin.so", &flags)
}

/// `unwind_new.cc` built `g++ -O2` (no frame pointers: GCC's default).
fn cxx_program() -> PathBuf {
    let out = work_dir().join("unwind-new-o2");
    let status = Command::new("g++")
        .args(["-O2", "-g", "-o"])
        .arg(&out)
        .arg(root().join("tests/workloads/unwind_new.cc"))
        .status()
        .expect("g++ runs");
    assert!(status.success(), "building unwind_new.cc failed");
    out
}

/// Function names of a report stack's frames, frame 0 first.
pub(crate) fn names(stack: &Value) -> Vec<String> {
    stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The report's stacks (of any process) whose frames include `function`, with their names.
pub(crate) fn stacks_through<'a>(
    report: &'a Value,
    function: &str,
) -> Vec<(&'a Value, Vec<String>)> {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s, names(s)))
        .filter(|(_, n)| n.iter().any(|f| f == function))
        .collect()
}

/// Asserts that every stack through `function` holds `chain` from it up to `main`, complete
/// (the walk reached the outermost frame), and that together they hold `bytes` in `blocks`.
pub(crate) fn assert_chain(
    report: &Value,
    function: &str,
    chain: &[&str],
    bytes: u64,
    blocks: u64,
) {
    let found = stacks_through(report, function);
    assert!(!found.is_empty(), "no stack through {function}: {report}");
    let (mut b, mut n) = (0, 0);
    for (st, names) in &found {
        let at = names.iter().position(|f| f == function).unwrap();
        let got: Vec<&str> = names[at..].iter().map(String::as_str).collect();
        assert!(
            got.starts_with(chain),
            "stack through {function}: expected {chain:?} from it on, got {names:?}"
        );
        let walk = st["walk"].as_array().unwrap();
        assert!(
            walk.iter().any(|w| w == "complete"),
            "the walk of {names:?} ended early: {walk:?}"
        );
        b += st["outstanding_bytes"].as_u64().unwrap();
        n += st["outstanding_allocs"].as_u64().unwrap();
    }
    assert_eq!(
        (b, n),
        (bytes, blocks),
        "held through {function}: expected {bytes} B in {blocks}, got {b} B in {n}"
    );
}

/// Runs `oomtrace run` on `args` (perf uprobes when `perf`) and returns its report.
pub(crate) fn trace(args: &[&std::ffi::OsStr], perf: bool) -> Value {
    let mut cmd = oomtrace();
    cmd.args(["run", "--format", "json", "--"]).args(args);
    if perf {
        cmd.env("OOMTRACE_UPROBES", "perf");
    }
    let out = output(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}); stderr: {stderr}"))
}

/// The C program's chains, whichever way the probes are attached.
fn check_c_chains(report: &Value) {
    let six = [
        "chain6", "chain5", "chain4", "chain3", "chain2", "chain1", "main",
    ];
    assert_chain(report, "chain6", &six, 7 * 1111, 7);
    // Inside glibc: strdup's and fopen's own malloc calls reach the caller.
    assert_chain(report, "dup_name", &["dup_name", "main"], 38, 1);
    let fopen = stacks_through(report, "open_status");
    assert_eq!(fopen.len(), 1, "{report}");
    assert_ne!(fopen[0].1[0], "open_status", "frame 0 is inside glibc");
    assert_eq!(fopen[0].0["site"], 1, "the site is the user's function");
    // A library mapped by dlopen after the program started.
    assert_chain(
        report,
        "plugin_inner",
        &["plugin_inner", "plugin_make", "use_plugin", "main"],
        3 * 2222,
        3,
    );
    assert_consistent(report);
}

#[test]
fn an_o2_chain_without_frame_pointers_unwinds_to_main() {
    if !require_bpf() {
        return;
    }
    let (exe, lib) = (chain_program(), plugin_library());
    let report = trace(&[exe.as_os_str(), lib.as_os_str()], false);
    check_c_chains(&report);
    assert_eq!(
        report["unwind"]["modules_unreadable"], 0,
        "{}",
        report["unwind"]
    );
}

#[test]
fn perf_uprobes_walk_the_same_tables() {
    if !require_bpf() {
        return;
    }
    let (exe, lib) = (chain_program(), plugin_library());
    let report = trace(&[exe.as_os_str(), lib.as_os_str()], true);
    check_c_chains(&report);
}

#[test]
fn cxx_new_shows_the_caller_past_operator_new() {
    if !require_bpf() {
        return;
    }
    let exe = cxx_program();
    let report = trace(&[exe.as_os_str()], false);
    let widgets = stacks_through(&report, "make_widgets(unsigned long)");
    assert_eq!(widgets.len(), 1, "{report}");
    let (st, n) = &widgets[0];
    assert!(n[0].starts_with("operator new"), "{n:?}");
    assert_eq!(st["site"], 1, "the site is past operator new: {n:?}");
    assert_chain(
        &report,
        "make_widgets(unsigned long)",
        &["make_widgets(unsigned long)", "build_all()", "main"],
        5 * 3333,
        5,
    );
    assert_chain(
        &report,
        "make_node()",
        &["make_node()", "build_all()", "main"],
        4 * 40,
        4,
    );
}

/// One block valgrind reports held at exit: bytes, blocks and its stack's function names.
struct Held {
    bytes: u64,
    blocks: u64,
    stack: Vec<String>,
}

/// The text of XML element `t` in `s` (its first occurrence).
fn tag(s: &str, t: &str) -> Option<String> {
    let open = format!("<{t}>");
    let start = s.find(&open)? + open.len();
    let end = s[start..].find(&format!("</{t}>"))? + start;
    Some(s[start..end].to_owned())
}

/// The leak records (`<error>` of a `Leak_*` kind) of valgrind's XML report.
fn leak_records(xml: &str) -> impl Iterator<Item = &str> {
    xml.split("<error>")
        .skip(1)
        .filter(|e| tag(e, "kind").is_some_and(|k| k.starts_with("Leak_")))
}

/// The held blocks of valgrind's XML report (`--leak-check=full --show-leak-kinds=all`).
fn valgrind_held(xml: &str) -> Vec<Held> {
    leak_records(xml)
        .map(|e| Held {
            bytes: tag(e, "leakedbytes").unwrap().parse().unwrap(),
            blocks: tag(e, "leakedblocks").unwrap().parse().unwrap(),
            stack: e
                .split("<frame>")
                .skip(1)
                .filter_map(|f| tag(f, "fn"))
                .collect(),
        })
        .collect()
}

#[test]
fn the_chains_and_bytes_match_valgrind() {
    if !require_bpf() {
        return;
    }
    let (exe, lib) = (chain_program(), plugin_library());
    let xml = work_dir().join("unwind-chain.valgrind.xml");
    let status = Command::new("valgrind")
        .args([
            "--xml=yes",
            "--leak-check=full",
            "--show-leak-kinds=all",
            "--quiet",
        ])
        .arg(format!("--xml-file={}", xml.display()))
        .arg(&exe)
        .arg(&lib)
        .status()
        .expect("valgrind runs (installed by the project's set-up)");
    assert!(status.success());
    let held = valgrind_held(&std::fs::read_to_string(&xml).unwrap());
    let report = trace(&[exe.as_os_str(), lib.as_os_str()], false);
    let ours = ["chain6", "dup_name", "open_status", "plugin_inner"];
    // valgrind may split one site's blocks between leak kinds: summed per chain.
    let mut sites: Vec<(Vec<String>, u64, u64)> = Vec::new();
    for h in &held {
        // From the workload's first function on to main: valgrind names glibc's internals
        // its own way, and its frame 0 is its malloc replacement.
        let Some(at) = h.stack.iter().position(|f| ours.contains(&f.as_str())) else {
            continue;
        };
        let end = h.stack.iter().position(|f| f == "main").unwrap() + 1;
        let chain = h.stack[at..end].to_vec();
        match sites.iter_mut().find(|s| s.0 == chain) {
            Some(s) => (s.1, s.2) = (s.1 + h.bytes, s.2 + h.blocks),
            None => sites.push((chain, h.bytes, h.blocks)),
        }
    }
    assert_eq!(sites.len(), ours.len(), "valgrind saw each site once");
    for (chain, bytes, blocks) in &sites {
        let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
        assert_chain(&report, chain[0], &chain, *bytes, *blocks);
    }
}

#[test]
fn programs_a_shell_execs_unwind_from_their_first_allocation() {
    if !require_bpf() {
        return;
    }
    let exe = chain_program();
    let script = format!("{0} -; {0} -; true", exe.display());
    let report = trace(&["sh".as_ref(), "-c".as_ref(), script.as_ref()], false);
    let six = [
        "chain6", "chain5", "chain4", "chain3", "chain2", "chain1", "main",
    ];
    // Two processes, each its own stack: the chain in both, 7 blocks each.
    assert_chain(&report, "chain6", &six, 2 * 7 * 1111, 14);
    assert_eq!(stacks_through(&report, "chain6").len(), 2, "{report}");
    assert_chain(&report, "dup_name", &["dup_name", "main"], 2 * 38, 2);
}

/// Debian's `sqlite3` (no frame pointers; `libsqlite3.so` and the program have no `.symtab`,
/// only `.dynsym`) on `tests/workloads/unwind_sqlite.sql`, its output thrown away.
fn sqlite_args() -> Vec<std::ffi::OsString> {
    let script = root().join("tests/workloads/unwind_sqlite.sql");
    vec![
        "sqlite3".into(),
        "-init".into(),
        "/dev/null".into(),
        "-batch".into(),
        ":memory:".into(),
        format!(".read {}", script.display()).into(),
    ]
}

/// One frame of a valgrind XML stack: function (when named), object basename, pc.
#[derive(Debug, Clone, PartialEq)]
struct VgFrame {
    function: Option<String>,
    object: String,
    ip: u64,
}

/// A held record of valgrind's: bytes, blocks and its frames.
type VgHeld = (u64, u64, Vec<VgFrame>);

/// A chain of (module, pc within its page) with the bytes and blocks held on it.
type HeldChain = (Vec<(String, u64)>, u64, u64);

/// The held records of valgrind's XML report with their frames (inlined frames, which repeat
/// the pc, kept once).
fn valgrind_held_frames(xml: &str) -> Vec<VgHeld> {
    leak_records(xml)
        .map(|e| {
            let mut frames: Vec<VgFrame> = Vec::new();
            for f in e.split("<frame>").skip(1) {
                let ip = tag(f, "ip").unwrap();
                let ip = u64::from_str_radix(ip.trim_start_matches("0x"), 16).unwrap();
                if frames.last().is_some_and(|l| l.ip == ip) {
                    continue;
                }
                let object = tag(f, "obj").unwrap_or_default();
                frames.push(VgFrame {
                    function: tag(f, "fn"),
                    object: object.rsplit('/').next().unwrap().to_owned(),
                    ip,
                });
            }
            (
                tag(e, "leakedbytes").unwrap().parse().unwrap(),
                tag(e, "leakedblocks").unwrap().parse().unwrap(),
                frames,
            )
        })
        .collect()
}

/// Runs valgrind on `args`: its XML held records, and its "total heap usage" (allocations,
/// bytes) from the log. libc's exit-time frees (`--run-libc-freeres`) are off: oomtrace sees
/// the process as it is at exit, without them.
fn valgrind_run(args: &[std::ffi::OsString], name: &str) -> (Vec<VgHeld>, (u64, u64)) {
    let xml = work_dir().join(format!("{name}.valgrind.xml"));
    let log = work_dir().join(format!("{name}.valgrind.log"));
    let status = Command::new("valgrind")
        .args([
            "--xml=yes",
            "--leak-check=full",
            "--show-leak-kinds=all",
            "--run-libc-freeres=no",
            "--num-callers=64",
        ])
        .arg(format!("--xml-file={}", xml.display()))
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("valgrind runs (installed by the project's set-up)");
    assert!(status.success());
    let held = valgrind_held_frames(&std::fs::read_to_string(&xml).unwrap());
    // The XML has no heap summary: the same run again, plain, for its totals line.
    let status = Command::new("valgrind")
        .args(["--run-libc-freeres=no"])
        .arg(format!("--log-file={}", log.display()))
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("valgrind runs");
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("total heap usage:"))
        .unwrap_or_else(|| panic!("no heap summary in valgrind's log: {text}"));
    // "total heap usage: 41,957 allocs, 41,942 frees, 8,924,543 bytes allocated"
    let nums: Vec<u64> = line
        .split("usage:")
        .nth(1)
        .unwrap()
        .split(',')
        .collect::<Vec<_>>()
        .join("")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums.len(), 3, "{line}");
    (held, (nums[0], nums[2]))
}

/// Frames of a report stack as (function, module).
fn named_frames(stack: &Value) -> Vec<(Option<&str>, &str)> {
    stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["function"].as_str(),
                f["module"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a frame without module: {f}")),
            )
        })
        .collect()
}

/// Whether every frame of `stack` is the dynamic linker's own: its start-up mappings, made
/// before the program runs, which valgrind does not count as heap.
fn loader_only(stack: &Value) -> bool {
    named_frames(stack)
        .iter()
        .all(|(_, m)| m.starts_with("ld-linux"))
}

#[test]
fn debian_sqlite3_unwinds_through_its_stripped_library_to_main() {
    if !require_bpf() {
        return;
    }
    let args = sqlite_args();
    let art = work_dir().join("sqlite-artifacts");
    let _ = std::fs::remove_dir_all(&art);
    let text_file = work_dir().join("sqlite-report.txt");
    let out = output(
        oomtrace()
            .args([
                "run",
                "--format",
                "text",
                "--wrapper",
                "sqlite3Malloc*",
                "--wrapper",
                "sqlite3Realloc",
                "-o",
            ])
            .arg(&text_file)
            .arg("--artifacts")
            .arg(&art)
            .arg("--")
            .args(&args)
            .stdout(std::process::Stdio::null()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(art.join("report.json")).unwrap()).unwrap();
    let text = std::fs::read_to_string(&text_file).unwrap();
    assert_consistent(&report);
    assert_eq!(report["processes"].as_array().unwrap().len(), 1, "{report}");

    // The stacks that allocate inside libsqlite3, biggest first by bytes allocated.
    let lib = "libsqlite3.so.0.8.6";
    let mut in_lib: Vec<&Value> = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| named_frames(s).first().is_some_and(|f| f.1 == lib))
        .collect();
    in_lib.sort_by_key(|s| std::cmp::Reverse(s["allocated_bytes"].as_u64().unwrap()));
    let all: u64 = in_lib
        .iter()
        .map(|s| s["allocated_bytes"].as_u64().unwrap())
        .sum();
    assert!(all > 8_000_000, "libsqlite3 allocated {all} B: {report}");
    // Those that make up 99 % of its bytes: each a whole chain, not one frame.
    let (mut seen, mut checked, mut through_api) = (0, 0, 0);
    for st in &in_lib {
        if seen * 100 >= all * 99 {
            break;
        }
        seen += st["allocated_bytes"].as_u64().unwrap();
        checked += 1;
        let frames = named_frames(st);
        let walk = st["walk"].as_array().unwrap();
        assert!(walk.iter().any(|w| w == "complete"), "{walk:?}: {frames:?}");
        // Frame 0 is the allocator's call site inside the library (sqlite3MemMalloc, static:
        // unnamed); the library's frames lead to the shell's.
        let shell = frames
            .iter()
            .position(|f| f.1 != lib)
            .unwrap_or_else(|| panic!("the chain stays in the library: {frames:?}"));
        // The exported entry point the shell called, where it is one (sqlite3_open_v2 tail-calls
        // a static function, which is not named), is named from .dynsym: the outermost one
        // (the shell's `.read` runs statements from inside another).
        if let Some(f) = frames[..shell].iter().rev().find_map(|f| f.0)
            && matches!(f, "sqlite3_step" | "sqlite3_exec")
        {
            through_api += st["allocated_bytes"].as_u64().unwrap();
        }
        // Above it the shell (`sqlite3`: no .symtab, and `main` is not exported) and the C
        // library's start-up code that called its main.
        let start = frames
            .iter()
            .position(|f| f.0 == Some("__libc_start_call_main"))
            .unwrap_or_else(|| panic!("the chain does not reach main's caller: {frames:?}"));
        assert!(start > shell, "{frames:?}");
        assert!(
            frames[shell..start]
                .iter()
                .all(|f| f.1 == "sqlite3" && f.0.is_none()),
            "{frames:?}"
        );
        // The wrappers it went through are named (from .dynsym): frame 1 is sqlite3Malloc or
        // sqlite3Realloc, called by their callers inside the library.
        assert_eq!(frames[0], (None, lib), "{frames:?}");
        assert!(
            matches!(frames[1].0, Some("sqlite3Malloc" | "sqlite3Realloc")),
            "{frames:?}"
        );
        // `--wrapper 'sqlite3Malloc*'`: the site is past the wrapper and the unnamed static
        // helper it called, at the wrapper's caller.
        let site = st["site"].as_u64().unwrap() as usize;
        assert!(site >= 2, "site {site}: {frames:?}");
        assert!(
            !matches!(frames[site].0, Some(f) if f.starts_with("sqlite3Malloc")),
            "site {site}: {frames:?}"
        );
        assert!(
            st["via"].as_array().unwrap().iter().any(|v| {
                v.as_str().is_some_and(|v| {
                    v.starts_with("sqlite3Malloc") || v.starts_with("sqlite3Realloc")
                })
            }),
            "{}",
            st["via"]
        );
    }
    assert!(
        checked >= 3,
        "{checked} stacks make 99 % of libsqlite3's bytes"
    );
    // Most of them run statements: sqlite3_step or sqlite3_exec is on their stacks.
    assert!(
        through_api * 10 >= all * 9,
        "{through_api} of {all} B allocated under sqlite3_step/sqlite3_exec"
    );
    // Unnamed frames are never empty: the text shows them as module+offset, the site of the
    // held stdio buffer (past the C library's frames) among them.
    assert!(
        text.contains("[site: sqlite3+0x"),
        "the shell's unnamed frames print as module+offset: {text}"
    );
    for st in report["stacks"].as_array().unwrap() {
        for f in st["frames"].as_array().unwrap() {
            assert_ne!(f["function"], "", "{f}");
        }
    }

    // valgrind on the same command: the same malloc-family totals (the loader's own start-up
    // mappings set aside: valgrind does not count them as heap) and the same held blocks,
    // each on the same chain (module, pc within its page) from the shell's first frame to
    // main's caller.
    let (held, (vg_allocs, vg_bytes)) = valgrind_run(&args, "sqlite");
    let heap: Vec<&Value> = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !loader_only(s))
        .collect();
    let sum = |k: &str| heap.iter().map(|s| s[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        (sum("allocs"), sum("allocated_bytes")),
        (vg_allocs, vg_bytes),
        "allocations and bytes allocated: oomtrace vs valgrind"
    );
    let leaks = &report["processes"][0]["leaks"];
    let (vg_held, vg_blocks) = held.iter().fold((0, 0), |(b, n), h| (b + h.0, n + h.1));
    assert_eq!(
        (sum("outstanding_bytes"), sum("outstanding_allocs")),
        (vg_held, vg_blocks),
        "held at exit: oomtrace vs valgrind"
    );
    assert_eq!(leaks["still_reachable_bytes"], vg_held, "{leaks}");
    // A chain: from the first frame in the shell on, (module, pc's offset within its page);
    // valgrind shows a return address less one.
    let mut ours: Vec<HeldChain> = Vec::new();
    for st in heap
        .iter()
        .filter(|s| s["outstanding_bytes"].as_u64() > Some(0))
    {
        let frames = st["frames"].as_array().unwrap();
        let at = frames
            .iter()
            .position(|f| f["module"] == "sqlite3")
            .unwrap();
        let end = frames
            .iter()
            .position(|f| f["function"] == "__libc_start_call_main")
            .unwrap_or_else(|| panic!("{st}"));
        let chain: Vec<(String, u64)> = frames[at..=end]
            .iter()
            .map(|f| {
                let addr =
                    u64::from_str_radix(f["addr"].as_str().unwrap().trim_start_matches("0x"), 16)
                        .unwrap();
                (f["module"].as_str().unwrap().to_owned(), (addr - 1) & 0xfff)
            })
            .collect();
        ours.push((
            chain,
            st["outstanding_bytes"].as_u64().unwrap(),
            st["outstanding_allocs"].as_u64().unwrap(),
        ));
    }
    let mut theirs: Vec<HeldChain> = Vec::new();
    for (bytes, blocks, frames) in &held {
        let at = frames
            .iter()
            .position(|f| f.object == "sqlite3")
            .unwrap_or_else(|| panic!("{frames:?}"));
        let end = frames
            .iter()
            .position(|f| f.function.as_deref() == Some("(below main)"))
            .unwrap_or_else(|| panic!("{frames:?}"));
        let chain: Vec<(String, u64)> = frames[at..=end]
            .iter()
            .map(|f| (f.object.clone(), f.ip & 0xfff))
            .collect();
        match theirs.iter_mut().find(|t| t.0 == chain) {
            Some(t) => (t.1, t.2) = (t.1 + bytes, t.2 + blocks),
            None => theirs.push((chain, *bytes, *blocks)),
        }
    }
    let mut merged: Vec<HeldChain> = Vec::new();
    for (chain, b, n) in ours {
        match merged.iter_mut().find(|t| t.0 == chain) {
            Some(t) => (t.1, t.2) = (t.1 + b, t.2 + n),
            None => merged.push((chain, b, n)),
        }
    }
    merged.sort();
    theirs.sort();
    assert!(!theirs.is_empty(), "valgrind saw blocks held at exit");
    assert_eq!(merged, theirs, "held blocks by chain: oomtrace vs valgrind");
}

/// `unwind_rust.rs` built as `cargo build --release` would (opt-level 3, no frame pointers,
/// symbols kept), plus `extra` flags.
fn rust_program(name: &str, extra: &[&str]) -> PathBuf {
    let out = work_dir().join(name);
    let status = Command::new("rustc")
        .args(["-C", "opt-level=3"])
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(root().join("tests/workloads/unwind_rust.rs"))
        .status()
        .expect("rustc runs");
    assert!(status.success(), "building unwind_rust.rs failed");
    out
}

/// The stacks through `function`, with site, via, frame names and walk, checked for `chain`
/// (from `function` on) and summed: (held bytes, held blocks, bytes allocated, calls).
fn rust_site(report: &Value, function: &str, chain: &[&str], via: &[&str]) -> (u64, u64, u64, u64) {
    let found = stacks_through(report, function);
    assert!(!found.is_empty(), "no stack through {function}: {report}");
    let mut sum = (0, 0, 0, 0);
    for (st, names) in &found {
        let at = names.iter().position(|f| f == function).unwrap();
        assert_eq!(st["site"], at, "the site is {function}: {names:?}");
        let got_via: Vec<&str> = st["via"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(got_via, via, "{names:?}");
        let got: Vec<&str> = names[at..].iter().map(String::as_str).collect();
        assert!(
            got.starts_with(chain),
            "expected {chain:?} from {function} on, got {names:?}"
        );
        let n = |k: &str| st[k].as_u64().unwrap();
        sum.0 += n("outstanding_bytes");
        sum.1 += n("outstanding_allocs");
        sum.2 += n("allocated_bytes");
        sum.3 += n("allocs");
    }
    sum
}

#[test]
fn a_rust_release_binary_shows_its_allocating_functions_and_callers() {
    if !require_bpf() {
        return;
    }
    let lang = [
        "unwind_rust::main",
        "std::sys::backtrace::__rust_begin_short_backtrace",
        "std::rt::lang_start::{{closure}}",
        "std::rt::lang_start_internal",
        "main",
    ];
    let upto = |head: &[&'static str]| -> Vec<&'static str> {
        head.iter().chain(&lang).copied().collect()
    };
    let check = |report: &Value, complete: bool| {
        // Vec::with_capacity and Box::new: __rust_alloc and __rdl_alloc tail-call malloc at
        // opt-level 3, so the user's function is frame 0 itself.
        let rows = rust_site(
            report,
            "unwind_rust::fill_rows",
            &upto(&["unwind_rust::fill_rows", "unwind_rust::build_table"]),
            &[],
        );
        assert_eq!(rows, (8000, 1, 8000, 1));
        let pages = rust_site(
            report,
            "unwind_rust::boxed_page",
            &upto(&["unwind_rust::boxed_page", "unwind_rust::build_table"]),
            &[],
        );
        assert_eq!(pages, (3 * 4096, 3, 3 * 4096, 3));
        // Vec::push grows through the standard library's out-of-line RawVec code: those
        // frames stay on the stack and make the site's "via"; the site is grow_list. One
        // malloc of 4 elements, then reallocs to 8, ..., 128: 16 + 32 + ... + 512 B.
        let grown = rust_site(
            report,
            "unwind_rust::grow_list",
            &upto(&["unwind_rust::grow_list", "unwind_rust::build_table"]),
            &[
                "alloc::raw_vec::RawVecInner<A>::finish_grow",
                "alloc::raw_vec::RawVecInner<A>::grow_amortized",
                "alloc::raw_vec::RawVec<T,A>::grow_one",
            ],
        );
        assert_eq!(grown, (512, 1, 1008, 6));
        for (st, names) in stacks_through(report, "unwind_rust::build_table") {
            let walk = st["walk"].as_array().unwrap();
            if complete {
                // Past Rust's `main` into the C library's start-up code and `_start`.
                assert!(walk.iter().any(|w| w == "complete"), "{walk:?}: {names:?}");
                assert!(
                    names.ends_with(&[
                        "main".to_owned(),
                        "__libc_start_call_main".to_owned(),
                        "__libc_start_main_impl".to_owned(),
                        "_start".to_owned(),
                    ]),
                    "{names:?}"
                );
            } else {
                // With panic=abort rustc emits the C `main` shim without unwind info: the
                // walk tries frame pointers there, fails, and says so; it is not shown whole.
                assert_eq!(names.last().map(String::as_str), Some("main"), "{names:?}");
                assert!(
                    walk.iter().any(|w| w == "frame_pointers")
                        && walk.iter().any(|w| w == "stopped")
                        && !walk.iter().any(|w| w == "complete"),
                    "{walk:?}: {names:?}"
                );
            }
        }
    };
    // The default profile (panic=unwind).
    let exe = rust_program("unwind-rust-release", &[]);
    check(&trace(&[exe.as_os_str()], false), true);
    // panic=abort.
    let exe = rust_program("unwind-rust-abort", &["-C", "panic=abort"]);
    check(&trace(&[exe.as_os_str()], false), false);
}

#[test]
fn reused_walks_keep_each_chain_exact() {
    if !require_bpf() {
        return;
    }
    let exe = build_c("walk_reuse", "walk-reuse-nofp", NO_FP);
    let report = trace(&[exe.as_os_str()], false);
    // The same site under callers that differ only in mid's return address, alternating:
    // each chain keeps its own bytes.
    assert_chain(&report, "via_x", &["via_x", "main"], 500 * 48, 500);
    assert_chain(&report, "via_y", &["via_y", "main"], 500 * 80, 500);
    for (via, bytes) in [("via_x", 48u64), ("via_y", 80)] {
        let found = stacks_through(&report, via);
        assert_eq!(found.len(), 1, "one stack through {via}: {report}");
        assert_eq!(
            &found[0].1[..3],
            &["leaf", "mid", via],
            "the stack through {via}"
        );
        assert_eq!(found[0].0["allocated_bytes"], 500 * bytes, "{via}");
    }
    // The churn loop: one stack, every allocation on it, freed.
    let churn = stacks_through(&report, "churn");
    assert_eq!(churn.len(), 1, "one stack through churn: {report}");
    let (st, names) = &churn[0];
    assert_eq!(&names[..3], &["leaf", "churn", "main"], "{names:?}");
    assert_eq!(
        (
            &st["allocs"],
            &st["allocated_bytes"],
            &st["outstanding_bytes"]
        ),
        (&20_000.into(), &640_000.into(), &0.into()),
        "{st}"
    );
    // Two call sites of one frame (same stack and frame pointers), alternating: each keeps its
    // own bytes, under its own call site.
    for (line_bytes, other) in [(24u64, 40u64), (40, 24)] {
        let found: Vec<_> = stacks_through(&report, "pair")
            .into_iter()
            .filter(|(st, _)| st["allocated_bytes"] == 10_000 * line_bytes)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one stack of {line_bytes} B blocks in pair (not {other}): {report}"
        );
        let (st, names) = &found[0];
        assert_eq!(&names[..2], &["pair", "main"], "{names:?}");
        assert_eq!(
            (&st["allocs"], &st["outstanding_bytes"]),
            (&10_000.into(), &0.into()),
            "{st}"
        );
    }
    let pair_lines: std::collections::BTreeSet<_> = stacks_through(&report, "pair")
        .iter()
        .map(|(st, _)| st["frames"][0]["line"].to_string())
        .collect();
    assert_eq!(pair_lines.len(), 2, "pair's two call sites: {pair_lines:?}");
    // The loops' walks were reused: all but their first (a few more where the thread moved to
    // the other CPU, whose kept walks are its own), pair's two sites both kept at once; the
    // alternating chains never are.
    let unwind = &report["unwind"];
    let reused = unwind["walks_reused"].as_u64().unwrap();
    assert!(
        (39_900..=40_050).contains(&reused),
        "walks reused: {reused}, expected the loops' 19999 + 19998 give or take migrations: \
         {unwind}"
    );
    assert!(
        unwind["walks"].as_u64().unwrap() >= 1_000,
        "the alternating chains are walked each time: {unwind}"
    );
}
