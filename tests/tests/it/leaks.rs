//! Leaks at exit as memcheck tells them, and the CI gate on them (issue 19):
//! tests/workloads/leaks.c, with valgrind's memcheck as the oracle.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::util::*;

fn leaks_exe() -> PathBuf {
    build_c("leaks", "leaks", &["-O2", "-g", "-fno-omit-frame-pointer"])
}

/// Bytes and blocks of the four kinds, in memcheck's order.
#[derive(Debug, Default, PartialEq, Eq)]
struct Kinds {
    definitely: (u64, u64),
    indirectly: (u64, u64),
    possibly: (u64, u64),
    reachable: (u64, u64),
}

/// The text between `<tag>` and `</tag>` in `s`, from `at`.
fn tag<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = s.find(&open)? + open.len();
    let end = s[start..].find(&format!("</{name}>"))? + start;
    Some(&s[start..end])
}

/// memcheck's leak summary of `args`, from its XML: every loss record summed by kind. A
/// definitely-lost record counts its direct bytes only (its indirect ones have their own).
fn valgrind(args: &[&str]) -> Kinds {
    let xml = work_dir().join(format!("valgrind-{}.xml", args.join("-").replace('/', "_")));
    let out = output(
        Command::new("valgrind")
            .args([
                "--leak-check=full",
                "--show-leak-kinds=all",
                "--xml=yes",
                &format!("--xml-file={}", xml.display()),
            ])
            .args(args),
    );
    assert!(out.status.success(), "valgrind failed: {out:?}");
    let text = std::fs::read_to_string(&xml).unwrap();
    let mut k = Kinds::default();
    for error in text.split("<error>").skip(1) {
        let num = |name: &str| tag(error, name).unwrap().trim().parse::<u64>().unwrap();
        let (mut bytes, blocks) = (num("leakedbytes"), num("leakedblocks"));
        let what = tag(error, "text").unwrap();
        if let Some(direct) = what
            .split(" direct, ")
            .next()
            .filter(|_| what.contains(" direct, "))
        {
            bytes = direct.rsplit('(').next().unwrap().parse().unwrap();
        }
        let slot = match tag(error, "kind").unwrap() {
            "Leak_DefinitelyLost" => &mut k.definitely,
            "Leak_IndirectlyLost" => &mut k.indirectly,
            "Leak_PossiblyLost" => &mut k.possibly,
            "Leak_StillReachable" => &mut k.reachable,
            _ => continue,
        };
        slot.0 += bytes;
        slot.1 += blocks;
    }
    k
}

/// A report's `leaks` object of its first process.
fn ours(report: &Value) -> Kinds {
    let l = &report["processes"][0]["leaks"];
    assert!(l.is_object(), "no leak scan in {report}");
    let n = |k: &str| l[k].as_u64().unwrap();
    Kinds {
        definitely: (n("definitely_lost_bytes"), n("definitely_lost_blocks")),
        indirectly: (n("indirectly_lost_bytes"), n("indirectly_lost_blocks")),
        possibly: (n("possibly_lost_bytes"), n("possibly_lost_blocks")),
        reachable: (n("still_reachable_bytes"), n("still_reachable_blocks")),
    }
}

/// The leak figures of the stack whose call site is in `function`.
fn stack_leak<'a>(report: &'a Value, function: &str) -> &'a Value {
    &report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["frames"][0]["function"] == function)
        .unwrap_or_else(|| panic!("no stack for {function}"))["leak"]
}

#[test]
fn leak_kinds_equal_valgrind_memchecks_summary() {
    if !require_bpf() {
        return;
    }
    let exe = leaks_exe();
    let exe = exe.to_str().unwrap();
    // The ground truth the workload documents, so neither tool can drift unnoticed.
    let documented = Kinds {
        definitely: (348, 4),
        indirectly: (192, 4),
        possibly: (88, 2),
        reachable: (320, 9),
    };
    assert_eq!(valgrind(&[exe, "kinds"]), documented);
    for scenario in ["kinds", "list", "cache", "none"] {
        let memcheck = valgrind(&[exe, scenario]);
        let (code, report) = run_json(&[exe.as_ref(), scenario.as_ref()]);
        assert_eq!(code, 0);
        assert_eq!(ours(&report), memcheck, "{scenario}: oomtrace vs memcheck");
        if scenario == "kinds" {
            // Per stack: the list's head is lost and its nodes with it, the table is held.
            let list = stack_leak(&report, "lose_list");
            assert_eq!(list["kind"], "indirectly_lost", "{list}");
            assert_eq!(list["definitely_lost_bytes"], 48);
            assert_eq!(list["indirectly_lost_bytes"], 192);
            assert_eq!(stack_leak(&report, "fill_table")["kind"], "still_reachable");
            // Its two calls: the block pointed into, and the one only it points to.
            let possibly: u64 = report["stacks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["frames"][0]["function"] == "hold_interior")
                .map(|s| s["leak"]["possibly_lost_bytes"].as_u64().unwrap())
                .sum();
            assert_eq!(possibly, 64 + 24);
        }
    }
}

#[test]
fn a_recording_replays_to_the_same_leaks() {
    if !require_bpf() {
        return;
    }
    let exe = leaks_exe();
    let file = work_dir().join("leaks.oomtrace");
    let out = output(
        oomtrace()
            .args(["record", "--format", "json", "-o"])
            .arg(&file)
            .arg("--")
            .args([exe.as_os_str(), "kinds".as_ref()]),
    );
    assert!(out.status.success(), "{out:?}");
    let out = output(oomtrace().args(["report", "--format", "json"]).arg(&file));
    let replayed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        ours(&replayed),
        Kinds {
            definitely: (348, 4),
            indirectly: (192, 4),
            possibly: (88, 2),
            reachable: (320, 9),
        }
    );
    assert_eq!(
        stack_leak(&replayed, "lose_list")["indirectly_lost_bytes"],
        192
    );
}

/// `run --max-leaked ...`: (exit code, report, stderr).
fn gate(args: &[&str], scenario: &str) -> (i32, Value, String) {
    let out = output(
        oomtrace()
            .args(["run", "--format", "json"])
            .args(args)
            .arg("--")
            .args([leaks_exe().as_os_str(), scenario.as_ref()]),
    );
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    (
        out.status.code().unwrap(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_leak_gate_fails_on_lost_bytes_names_the_stacks_and_honours_suppressions() {
    if !require_bpf() {
        return;
    }
    // 348 definitely + 192 indirectly lost = 540 bytes count by default.
    let (code, report, stderr) = gate(&["--max-leaked", "500"], "kinds");
    assert_eq!(code, 3, "{stderr}");
    let g = &report["leak_gate"];
    assert_eq!(g["passed"], false);
    assert_eq!(g["leaked_bytes"], 540);
    assert_eq!(g["leaked_blocks"], 8);
    assert_eq!(g["stacks"][0]["frames"][0]["function"], "lose_list", "{g}");
    assert_eq!(g["stacks"][0]["bytes"], 240);
    assert!(
        stderr.contains("leak gate failed: 540 B definitely lost or indirectly lost"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "48 B definitely lost + 192 B indirectly lost in 5 block(s) at lose_list (leaks.c:"
        ),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches(" at lose_blocks (leaks.c:").count(),
        3,
        "{stderr}"
    );
    // Under the limit: the command's own status.
    let (code, report, _) = gate(&["--max-leaked", "540"], "kinds");
    assert_eq!(
        (code, &report["leak_gate"]["passed"]),
        (0, &Value::Bool(true))
    );
    // Every kind counts: 948 bytes.
    let (code, report, _) = gate(&["--max-leaked", "947", "--leak-kinds", "all"], "kinds");
    assert_eq!(
        (code, report["leak_gate"]["leaked_bytes"].as_u64()),
        (3, Some(948))
    );
    // A suppression file excuses what its rules match, and the report says how much.
    let supp = work_dir().join("leaks.supp");
    std::fs::write(
        &supp,
        "# known one-time allocations\nfunction lose_*   # the test's own\nmodule libnothing.so\n",
    )
    .unwrap();
    let supp = supp.to_str().unwrap();
    let (code, report, stderr) = gate(&["--max-leaked", "0", "--suppressions", supp], "kinds");
    assert_eq!(code, 0, "{stderr}");
    let g = &report["leak_gate"];
    assert_eq!(g["leaked_bytes"], 0);
    assert_eq!(g["suppressed"][0]["rule"], "function lose_*");
    assert_eq!(g["suppressed"][0]["bytes"], 540);
    assert_eq!(g["suppressed"][0]["blocks"], 8);
    assert_eq!(g["suppressed"][0]["stacks"], 4);
    assert_eq!(g["suppressed"][1]["bytes"], 0);
    assert_eq!(
        stack_leak(&report, "lose_list")["suppressed_by"],
        "function lose_*"
    );
    // What the rules do not match still fails: cache_fill's 4000 bytes.
    let (code, report, stderr) = gate(&["--max-leaked", "0", "--suppressions", supp], "cache");
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(report["leak_gate"]["leaked_bytes"], 4000);
    assert!(stderr.contains("at cache_fill (leaks.c:"), "{stderr}");
    // A bad suppression file is a one-line error, before anything runs.
    std::fs::write(work_dir().join("bad.supp"), "frame x\n").unwrap();
    let bad = work_dir().join("bad.supp");
    let (code, stderr) = {
        let out = output(
            oomtrace()
                .args(["run", "--max-leaked", "0", "--suppressions"])
                .arg(&bad)
                .args(["--", "true"]),
        );
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, 1);
    assert!(
        stderr.contains("line 1: unknown rule kind \"frame\""),
        "{stderr}"
    );
}

#[test]
fn the_text_report_shows_the_kinds() {
    if !require_bpf() {
        return;
    }
    let out = output(
        oomtrace()
            .args(["run", "--format", "text", "--"])
            .args([leaks_exe().as_os_str(), "kinds".as_ref()]),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "definitely lost 348 B in 4 block(s), indirectly lost 192 B in 4 block(s), possibly \
             lost 88 B in 2 block(s), still reachable 320 B in 9 block(s)"
        ),
        "{text}"
    );
    assert!(text.contains("; 192 B indirectly lost]"), "{text}");
    assert!(text.contains("; 256 B still reachable]"), "{text}");
}
