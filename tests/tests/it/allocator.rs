//! oomtrace probes the allocator a program really uses, resolved as the dynamic linker does (the
//! executable, then its libraries in load order), not libc's by default: Debian's redis-server
//! gets malloc from libjemalloc (DESIGN §4). Here a program gets it from a library of our own.

use std::path::PathBuf;

use crate::util::*;

/// (the program, its malloc library), built once.
pub fn own_malloc_program() -> (PathBuf, PathBuf) {
    let lib = build_c(
        "ownmalloc",
        "libownmalloc.so",
        &["-O2", "-g", "-shared", "-fPIC", "-DOWN_MALLOC_LIB"],
    );
    let dir = work_dir();
    let dir = dir.to_str().unwrap();
    let exe = build_c(
        "ownmalloc",
        "ownmalloc",
        &[
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            &format!("-L{dir}"),
            &format!("-Wl,-rpath,{dir}"),
            "-Wl,--no-as-needed",
            "-lownmalloc",
        ],
    );
    (exe, lib)
}

#[test]
fn probes_name_the_library_that_defines_malloc() {
    let (exe, lib) = own_malloc_program();
    let out = output(oomtrace().args(["probes", "--binary"]).arg(&exe));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().next(),
        Some(format!("allocator object: {}", lib.display()).as_str()),
        "{text}"
    );
    for f in ["malloc", "free", "calloc", "realloc"] {
        assert!(
            text.lines().any(|l| l.split_whitespace().next() == Some(f)),
            "{f} is not probed:\n{text}"
        );
    }
}

#[test]
fn allocations_through_a_non_libc_malloc_are_exact() {
    if !require_bpf() {
        return;
    }
    let (exe, _) = own_malloc_program();
    let (code, report) = run_json(&[exe.as_os_str()]);
    assert_eq!(code, 0);
    assert_figures(&report, "leak_own", None, leak(10_000, 10));
    assert_figures(
        &report,
        "churn_own",
        None,
        Figures {
            outstanding_bytes: 0,
            outstanding_allocs: 0,
            allocated_bytes: 1500,
            allocs: 5,
            failed_allocs: 0,
        },
    );
    assert_consistent(&report);
}
