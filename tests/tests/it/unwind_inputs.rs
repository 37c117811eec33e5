//! Inputs the unwinder must survive (issue 13): a library with no `.eh_frame` or a damaged
//! one, a library deleted from disk while mapped, a signal frame in a frame-pointer-free
//! program, and code in anonymous executable memory (a JIT's). Each time the stacks are as
//! whole as the input allows, the bytes are exact, and what could not be done is said.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::stacks::{NO_FP, assert_chain, stacks_through};
use crate::util::*;

/// `unwind_inputs.c` without frame pointers.
fn program() -> PathBuf {
    build_c("unwind_inputs", "unwind-inputs", NO_FP)
}

/// `unwind_plugin.c` as a shared library built with `flags` (and `-fPIC -shared`) into `name`.
fn plugin(name: &str, flags: &[&str]) -> PathBuf {
    let mut all = flags.to_vec();
    all.extend(["-fPIC", "-shared"]);
    build_c("unwind_plugin", name, &all)
}

fn tool(cmd: &mut Command) {
    let st = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(st.success(), "{cmd:?} failed");
}

/// `oomtrace run` on `args`: the JSON report, the text report and stderr.
fn run_both(args: &[&std::ffi::OsStr], name: &str) -> (Value, String, String) {
    let art = work_dir().join(format!("{name}-artifacts"));
    let _ = std::fs::remove_dir_all(&art);
    let text_file = work_dir().join(format!("{name}-report.txt"));
    let out = output(
        oomtrace()
            .args(["run", "--format", "text", "-o"])
            .arg(&text_file)
            .arg("--artifacts")
            .arg(&art)
            .arg("--")
            .args(args)
            .stdout(Stdio::null()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(art.join("report.json")).unwrap())
            .unwrap_or_else(|e| panic!("report.json: {e}; {stderr}"));
    assert_consistent(&report);
    (report, std::fs::read_to_string(text_file).unwrap(), stderr)
}

/// The walk statuses of the stacks through `function`.
fn walks(report: &Value, function: &str) -> Vec<Vec<String>> {
    stacks_through(report, function)
        .iter()
        .map(|(s, _)| {
            s["walk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

/// The library's chain: through its two functions (walked by frame pointers, since it has no
/// usable unwind rows) into the program, and on to the C library's start-up code.
fn check_plugin_chain(report: &Value) {
    assert_chain(
        report,
        "plugin_inner",
        &["plugin_inner", "plugin_make", "use_lib"],
        3 * 2222,
        3,
    );
    for (_, n) in stacks_through(report, "plugin_inner") {
        assert!(n.iter().any(|f| f == "__libc_start_call_main"), "{n:?}");
    }
}

#[test]
fn a_library_without_eh_frame_unwinds_by_its_frame_pointers_and_says_so() {
    if !require_bpf() {
        return;
    }
    // Built without unwind tables, then its crt files' .eh_frame hidden (renamed: removing a
    // loaded section would break the library's layout): no unwind info at all.
    let lib = plugin(
        "libunwind-noeh.so",
        &[
            "-O2",
            "-fno-omit-frame-pointer",
            "-fno-asynchronous-unwind-tables",
            "-fno-unwind-tables",
        ],
    );
    tool(
        Command::new("objcopy")
            .args([
                "--rename-section",
                ".eh_frame=.hidden_frame",
                "--rename-section",
                ".eh_frame_hdr=.hidden_frame_hdr",
            ])
            .arg(&lib),
    );
    let exe = program();
    let (report, _, stderr) = run_both(&[exe.as_os_str(), "lib".as_ref(), lib.as_os_str()], "noeh");
    check_plugin_chain(&report);
    for w in walks(&report, "plugin_inner") {
        assert!(w.contains(&"frame_pointers".to_owned()), "{w:?}");
    }
    assert_eq!(
        report["unwind"]["modules_without_unwind_info"], 1,
        "{}",
        report["unwind"]
    );
    assert!(
        stderr.contains(&format!(
            "{} has no .eh_frame: frames in it use frame pointers",
            lib.display()
        )),
        "{stderr}"
    );
}

/// Points every FDE of `lib`'s `.eh_frame` at a CIE that is not there.
fn damage_eh_frame(lib: &Path) {
    let dump = lib.with_extension("eh_frame");
    tool(
        Command::new("objcopy")
            .arg(format!("--dump-section=.eh_frame={}", dump.display()))
            .arg(lib),
    );
    let mut b = std::fs::read(&dump).unwrap();
    let (mut at, mut fdes) = (0usize, 0);
    while at + 8 <= b.len() {
        let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || len == 0xffff_ffff {
            break;
        }
        let id = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap());
        if id != 0 {
            // An FDE: its CIE pointer (backwards from here) now points before the section.
            b[at + 4..at + 8].copy_from_slice(&(at as u32 + 0x1000).to_le_bytes());
            fdes += 1;
        }
        at += 4 + len;
    }
    assert!(fdes >= 2, "{fdes} FDEs in {}", lib.display());
    std::fs::write(&dump, &b).unwrap();
    tool(
        Command::new("objcopy")
            .arg(format!("--update-section=.eh_frame={}", dump.display()))
            .arg(lib),
    );
}

#[test]
fn a_library_with_a_damaged_eh_frame_unwinds_by_its_frame_pointers_and_says_so() {
    if !require_bpf() {
        return;
    }
    let lib = plugin("libunwind-damaged.so", &["-O2", "-fno-omit-frame-pointer"]);
    damage_eh_frame(&lib);
    let exe = program();
    let (report, _, stderr) = run_both(
        &[exe.as_os_str(), "lib".as_ref(), lib.as_os_str()],
        "damaged",
    );
    check_plugin_chain(&report);
    for w in walks(&report, "plugin_inner") {
        assert!(w.contains(&"frame_pointers".to_owned()), "{w:?}");
    }
    assert_eq!(
        report["unwind"]["modules_damaged"], 1,
        "{}",
        report["unwind"]
    );
    let shown = lib.display().to_string();
    assert!(
        stderr.lines().any(|l| l.contains(&shown)
            && l.contains("frame pointers")
            && l.starts_with("oomtrace: notice: unwind:")),
        "{stderr}"
    );
}

#[test]
fn a_library_deleted_while_mapped_unwinds_through_it() {
    if !require_bpf() {
        return;
    }
    // No frame pointers: only its tables, built from the mapped object, can unwind it.
    let lib = plugin("libunwind-deleted.so", NO_FP);
    let exe = program();
    let (report, _, stderr) = run_both(
        &[exe.as_os_str(), "deleted".as_ref(), lib.as_os_str()],
        "deleted",
    );
    let found = stacks_through(&report, "use_lib");
    assert_eq!(found.len(), 1, "{report}");
    let (st, n) = &found[0];
    // Two frames in the deleted copy (plugin_inner, plugin_make), then the program's.
    let modules: Vec<&str> = st["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["module"].as_str().unwrap_or("?"))
        .collect();
    let copy = modules[0];
    assert!(
        copy.starts_with("oomtrace-deleted-") && copy.ends_with(".so"),
        "frame 0 lies in the deleted copy: {modules:?}"
    );
    assert_eq!(modules[1], copy, "{modules:?}");
    assert_eq!(n[2], "use_lib", "{n:?}");
    assert!(n.iter().any(|f| f == "__libc_start_call_main"), "{n:?}");
    // Named from the mapped object, which the symbolizer opened while the process lived.
    for (i, want) in [(0, "plugin_inner"), (1, "plugin_make")] {
        let f = &st["frames"][i]["function"];
        assert_eq!(f, want, "frame {i}");
    }
    let w: Vec<&str> = st["walk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(
        w,
        ["complete"],
        "unwound by the deleted object's own tables"
    );
    assert_eq!(
        (
            st["outstanding_bytes"].as_u64(),
            st["outstanding_allocs"].as_u64()
        ),
        (Some(3 * 2222), Some(3))
    );
    assert_eq!(
        report["unwind"]["modules_unreadable"], 0,
        "{}: {stderr}",
        report["unwind"]
    );
}

#[test]
fn an_allocation_in_a_signal_handler_unwinds_through_the_signal_frame() {
    if !require_bpf() {
        return;
    }
    let exe = program();
    let (report, _, _) = run_both(&[exe.as_os_str(), "signal".as_ref()], "signal");
    // The handler, the C library's signal trampoline (`__restore_rt`), the function the timer
    // interrupted, and its callers: without frame pointers anywhere.
    let found = stacks_through(&report, "on_signal");
    assert_eq!(found.len(), 1, "{report}");
    let (st, n) = &found[0];
    assert_eq!(n[0], "on_signal", "{n:?}");
    assert_eq!(st["frames"][1]["module"], "libc.so.6", "{st}");
    assert_eq!(n[2..4], ["spin_here", "wait_signal"], "{n:?}");
    assert!(n.iter().any(|f| f == "__libc_start_call_main"), "{n:?}");
    let w = &walks(&report, "on_signal")[0];
    assert!(
        w.contains(&"signal_frame".to_owned()) && w.contains(&"complete".to_owned()),
        "{w:?}"
    );
    assert_eq!(
        (
            st["outstanding_bytes"].as_u64(),
            st["outstanding_allocs"].as_u64()
        ),
        (Some(333), Some(1))
    );
}

/// A stub in anonymous executable memory: one keeping a frame pointer is walked through, to
/// its true callers, after the process is gone; one that uses rbp for itself ends the stack
/// there, and the report says so. Without frame pointers in the program.
#[test]
fn code_in_anonymous_memory_is_walked_through_by_its_frame_pointer_or_ends_the_stack() {
    if !require_bpf() {
        return;
    }
    let exe = program();
    let (report, text, _) = run_both(&[exe.as_os_str(), "jit".as_ref()], "jit");
    for (function, bytes) in [("jit_framed_alloc", 4444), ("jit_bare_alloc", 5555)] {
        let found = stacks_through(&report, function);
        assert_eq!(found.len(), 1, "{report}");
        let (st, n) = &found[0];
        assert_eq!(n[0], function, "{n:?}");
        assert_eq!(st["site"], 0);
        assert_eq!(
            (
                st["outstanding_bytes"].as_u64(),
                st["outstanding_allocs"].as_u64()
            ),
            (Some(bytes), Some(1))
        );
        // Past frame 0 lies the stub in anonymous memory: a frame no module names.
        let jit = &st["frames"][1];
        assert!(jit["module"].is_null() && jit["function"].is_null(), "{st}");
        let w = &walks(&report, function)[0];
        if function == "jit_framed_alloc" {
            // Its frame pointer leads back into the program, whose tables go on to the end.
            assert_eq!(n[2..4], ["run_jit", "main"], "{n:?}");
            assert!(n.iter().any(|f| f == "__libc_start_call_main"), "{n:?}");
            assert!(
                w.contains(&"complete".to_owned()) && !w.contains(&"stopped".to_owned()),
                "{w:?}"
            );
        } else {
            assert_eq!(n.len(), 2, "nothing after the bare stub: {n:?}");
            assert!(
                w.contains(&"stopped".to_owned()),
                "the walk says it stopped: {w:?}"
            );
        }
    }
    assert_eq!(report["stacks_incomplete"].as_u64(), Some(1), "{report}");
    assert!(text.contains("[stack: stopped"), "{text}");
    assert!(text.contains("whose unwinding stopped early"), "{text}");
}

/// The framed JIT stub's stack, in a report made after the process is gone: the C function
/// under it, the stub (a frame no module names), and the callers above it (`run_jit`, `main`)
/// found through the stub's frame pointer, with the exact bytes.
fn check_frames_past_jit(report: &Value, what: &str) {
    let found = stacks_through(report, "jit_framed_alloc");
    assert_eq!(found.len(), 1, "{what}: {report}");
    let (st, n) = &found[0];
    assert_eq!(n[0], "jit_framed_alloc", "{what}: {n:?}");
    assert!(n.len() >= 4, "{what}: cut at the stub: {st}");
    let jit = &st["frames"][1];
    assert!(
        jit["module"].is_null() && jit["function"].is_null(),
        "{what}: frame 1 is the stub: {st}"
    );
    assert_eq!(n[2..4], ["run_jit", "main"], "{what}: {n:?}");
    assert_eq!(
        (
            st["outstanding_bytes"].as_u64(),
            st["outstanding_allocs"].as_u64()
        ),
        (Some(4444), Some(1)),
        "{what}"
    );
}

#[test]
fn frames_past_jit_code_survive_the_process_in_run_and_in_recordings() {
    if !require_bpf() {
        return;
    }
    // Frame pointers everywhere: past the stub, the walk goes on by them.
    let exe = build_c(
        "unwind_inputs",
        "unwind-inputs-fp",
        &["-O2", "-g", "-fno-omit-frame-pointer"],
    );
    // `run`'s final report is made once the process has exited.
    let (report, _, _) = run_both(&[exe.as_os_str(), "jit".as_ref()], "jit-fp");
    check_frames_past_jit(&report, "run");
    // A recording answers the same, live and from the file.
    let (file, live) = crate::offline::record("jit-fp", &[exe.to_str().unwrap(), "jit"]);
    check_frames_past_jit(&live, "record");
    check_frames_past_jit(&report_json(&file), "report");
    // Code mapped after the process's maps were last read (at the loader's first allocation
    // and again at the program's), the process gone at once: known from the kernel's record of
    // the mapping alone.
    let (report, _, _) = run_both(&[exe.as_os_str(), "jit-late".as_ref()], "jit-late");
    check_frames_past_jit(&report, "run, code mapped late");
}
