//! Idempotent set-up: installs only what is missing.

use std::process::{Command, Stdio};

use anyhow::{Result, bail};

use crate::status;

/// Debian packages the build and tests use: a C compiler and static libc for the ground-truth
/// workloads, util-linux's setpriv for the unprivileged test (and unshare for the mount-namespace
/// one), binutils' objdump for the placement cross-check, golang-go for `go tool pprof` reading
/// our pprof exports, tmux to drive the TUI in a real terminal, PostgreSQL (its server, psql and
/// pgbench, and the `postgres` user) for the attach-to-a-database test, GNU time to measure
/// oomtrace's own peak RSS from outside, Prometheus (with promtool) scraping `oomtrace agent`,
/// valgrind as the oracle the leak scan's kinds are checked against, bpftool to see that no
/// BPF program outlives a killed oomtrace, and sqlite3 and python3 as real software to unwind.
const APT_PACKAGES: &[&str] = &[
    "gcc",
    // C++ workloads (failure injection: `new` throwing `std::bad_alloc`).
    "g++",
    "libc6-dev",
    "util-linux",
    "binutils",
    "golang-go",
    "tmux",
    "postgresql",
    "time",
    // The allocators a process may really use (tests link the ground truth against each).
    "libjemalloc-dev",
    "libgoogle-perftools-dev",
    "libmimalloc-dev",
    "prometheus",
    "valgrind",
    "bpftool",
    // Real software without frame pointers or .symtab: the Debian sqlite3 stack test.
    "sqlite3",
    // The Python frames tests (the interpreter itself).
    "python3",
    // C extension modules built by the Python frames tests (Python.h).
    "python3-dev",
];
/// Debian packages only `cargo xtask bench` needs: the tools it compares oomtrace with, and the
/// real application it drives (redis-server under redis-benchmark, from redis-tools).
const BENCH_APT_PACKAGES: &[&str] = &["bpftrace", "heaptrack", "redis-server", "redis-tools"];
const BPF_LINKER_VERSION: &str = "0.10.4";

/// Runs every set-up step.
pub fn run() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    apt()?;
    Ok(())
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output();
    let installed = out.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.starts_with("rust-src"))
    });
    if installed {
        return Ok(());
    }
    eprintln!("setup: installing the nightly toolchain's rust-src (for the eBPF build)");
    status(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn bpf_linker() -> Result<()> {
    let ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if ok {
        return Ok(());
    }
    eprintln!("setup: installing bpf-linker {BPF_LINKER_VERSION} (about 2 minutes, once)");
    status(Command::new("cargo").args([
        "+stable",
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
    ]))
}

/// Installs what the benchmark needs besides the build and test set-up.
pub fn bench() -> Result<()> {
    apt_install(BENCH_APT_PACKAGES)
}

fn apt() -> Result<()> {
    apt_install(APT_PACKAGES)
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !quiet(Command::new("dpkg").args(["-s", p])))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    let sudo = |args: &[&str]| {
        let root = is_root();
        let mut c = Command::new(if root { args[0] } else { "sudo" });
        if root {
            c.args(&args[1..]);
        } else {
            c.args(args);
        }
        c
    };
    status(sudo(&["apt-get", "update", "-qq"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    let mut install = sudo(&["apt-get", "install", "-y", "-qq", "--no-install-recommends"]);
    install
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    if status(&mut install).is_err() {
        bail!(
            "could not install {}: install them with apt-get and retry",
            missing.join(" ")
        );
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|v| v.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}
