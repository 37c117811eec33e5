//! Whole stacks without frame pointers (issue 13): programs built `-O2 -fomit-frame-pointer`,
//! `g++ -O2`, allocations inside glibc and in a library loaded with `dlopen` all unwind to
//! `main` through the `.eh_frame` tables the kernel walks, with exact bytes; valgrind agrees.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::util::*;

/// Flags of the frame-pointer-free builds.
const NO_FP: &[&str] = &["-O2", "-g", "-fomit-frame-pointer"];

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
fn names(stack: &Value) -> Vec<String> {
    stack["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The report's stacks (of any process) whose frames include `function`, with their names.
fn stacks_through<'a>(report: &'a Value, function: &str) -> Vec<(&'a Value, Vec<String>)> {
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
fn assert_chain(report: &Value, function: &str, chain: &[&str], bytes: u64, blocks: u64) {
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
fn trace(args: &[&std::ffi::OsStr], perf: bool) -> Value {
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

/// The held blocks of valgrind's XML report (`--leak-check=full --show-leak-kinds=all`).
fn valgrind_held(xml: &str) -> Vec<Held> {
    let tag = |s: &str, t: &str| -> Option<String> {
        let open = format!("<{t}>");
        let start = s.find(&open)? + open.len();
        let end = s[start..].find(&format!("</{t}>"))? + start;
        Some(s[start..end].to_owned())
    };
    xml.split("<error>")
        .skip(1)
        .filter(|e| tag(e, "kind").is_some_and(|k| k.starts_with("Leak_")))
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
