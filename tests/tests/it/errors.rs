//! Bad input gets one clear line and the right exit code, never a panic (issue 2).

use std::process::Output;

use crate::util::*;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_one_clear_line(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line, got: {err}");
    assert!(err.starts_with("oomtrace: error: "), "{err}");
}

#[test]
fn not_root_is_refused_with_exit_77() {
    if !require_bpf() {
        return;
    }
    // Drop to nobody with no capabilities at all.
    let out = output(
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ])
            .arg(bin())
            .args(["run", "--", "true"]),
    );
    assert_one_clear_line(&out, 77, "insufficient privileges");
    assert!(stderr(&out).contains("sudo"));
}

#[test]
fn kernel_without_btf_is_named() {
    if !require_bpf() {
        return;
    }
    let empty = tempdir("nobtf");
    let out = output(
        oomtrace()
            .env("OOMTRACE_SYS_ROOT", &empty)
            .args(["run", "--", "true"]),
    );
    assert_one_clear_line(&out, 1, "no BTF");
}

#[test]
fn kernel_without_uprobes_is_named() {
    if !require_bpf() {
        return;
    }
    let fake = tempdir("nouprobes");
    std::fs::create_dir_all(fake.join("kernel/btf")).unwrap();
    std::fs::write(fake.join("kernel/btf/vmlinux"), b"").unwrap();
    let out = output(
        oomtrace()
            .env("OOMTRACE_SYS_ROOT", &fake)
            .args(["run", "--", "true"]),
    );
    assert_one_clear_line(&out, 1, "no uprobes");
}

#[test]
fn missing_pid_is_named() {
    if !require_bpf() {
        return;
    }
    let out = output(oomtrace().args(["--pid", "3999999", "--format", "json"]));
    assert_one_clear_line(&out, 1, "no process with pid 3999999");
}

#[test]
fn stripped_static_program_is_named() {
    if !require_bpf() {
        return;
    }
    // A static program is traced through the allocator inside it (tests/it/heaps.rs); a stripped
    // one has no symbol left to probe.
    let exe = build_c(
        "static",
        "static-binary-stripped",
        &["-O2", "-static", "-s"],
    );
    let out = output(oomtrace().args(["run", "--"]).arg(&exe));
    assert_one_clear_line(&out, 1, "statically linked and stripped");
}

#[test]
fn missing_command_is_named() {
    if !require_bpf() {
        return;
    }
    let out = output(oomtrace().args(["run", "--", "/nonexistent/program"]));
    assert_one_clear_line(&out, 1, "command not found: /nonexistent/program");
}

#[test]
fn nothing_to_trace_is_a_usage_error() {
    let out = output(&mut oomtrace());
    assert_one_clear_line(&out, 1, "nothing to trace");
}

#[test]
fn tracefs_is_mounted_when_missing() {
    if !require_bpf() {
        return;
    }
    let tracing = std::path::Path::new("/sys/kernel/tracing");
    // Unmount every stacked tracefs there, then let oomtrace mount it back.
    while tracing.join("events").is_dir() {
        let st = std::process::Command::new("umount")
            .arg(tracing)
            .status()
            .unwrap();
        assert!(st.success(), "cannot unmount tracefs for the test");
    }
    let (code, report) = run_json(&["true".as_ref()]);
    assert_eq!(code, 0, "{report}");
    assert!(tracing.join("events").is_dir(), "oomtrace mounted tracefs");
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = work_dir().join(format!("tmp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
