//! Project tasks: `cargo xtask setup | build | test | demo`.
//!
//! Every task first runs `setup`, which installs only what is missing, so a fresh clone needs
//! nothing but `cargo xtask demo` or `cargo xtask test`.

mod bench;
mod setup;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args.get(1..).unwrap_or_default();
    match task {
        "setup" => setup::run(),
        "build" => {
            setup::run()?;
            build()
        }
        "test" => {
            setup::run()?;
            build()?;
            test(rest)
        }
        "demo" => {
            setup::run()?;
            build()?;
            demo()
        }
        "bench" => {
            setup::run()?;
            setup::bench()?;
            build()?;
            bench::run(rest)
        }
        "fuzz" => {
            setup::run()?;
            let secs = rest.first().and_then(|s| s.parse().ok()).unwrap_or(60u64);
            fuzz(secs)
        }
        _ => {
            eprintln!("usage: cargo xtask <setup|build|test|demo|bench>");
            eprintln!(
                "  setup  install the nightly rust-src, bpf-linker and Debian packages the build and tests need"
            );
            eprintln!("  build  set up, then cargo build --release (target/release/oomtrace)");
            eprintln!(
                "  test   set up, build, then run every test, the privileged BPF ones included (needs root)"
            );
            eprintln!(
                "  demo   set up, build, then trace the bundled demo workload and print the report"
            );
            eprintln!(
                "  bench  set up, build, then measure overhead side by side and rewrite BENCHMARKS.md\n         (bench PART…: only bystander, startstop, loop, mt, free, cost, redis, pipeline, extra, agent,\n         inject, stacks or soak [SECONDS], into target/bench/partial.md; soak runs only when named;\n         BENCH_ROUNDS=N and BENCH_STACKS_ROUNDS=N set the rounds of the loop/redis and stacks parts)"
            );
            if task == "help" {
                Ok(())
            } else {
                bail!("unknown task {task}")
            }
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_owned()
}

/// `cargo` in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs `cmd`, failing with its description if it fails.
pub fn status(cmd: &mut Command) -> Result<()> {
    let what = format!("{cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

fn build() -> Result<()> {
    status(cargo().args(["build", "--release", "--package", "oomtrace"]))
}

fn oomtrace_bin() -> PathBuf {
    root().join("target/release/oomtrace")
}

/// fmt and clippy (`-D warnings`) on the user side and on the eBPF side (for its real target).
fn lint() -> Result<()> {
    status(cargo().args(["fmt", "--all", "--check"]))?;
    status(cargo().args([
        "clippy",
        "--release",
        "--workspace",
        "--exclude",
        "oomtrace-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    status(
        Command::new("cargo")
            .current_dir(root().join("oomtrace-ebpf"))
            .args([
                "+nightly",
                "clippy",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ])
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER"),
    )
}

fn test(extra: &[String]) -> Result<()> {
    lint()?;
    // Unit tests, then the integration tests: those load real BPF programs and share kernel
    // state (probes, tracefs, cgroups), so they run one at a time.
    status(cargo().args([
        "test",
        "--release",
        "--workspace",
        "--exclude",
        "oomtrace-tests",
    ]))?;
    status(
        cargo()
            .args(["test", "--release", "--package", "oomtrace-tests", "--"])
            .arg("--test-threads=1")
            .args(extra)
            .env("OOMTRACE_BIN", oomtrace_bin()),
    )
}

/// Fuzzes the recording reader for `secs` seconds (installs cargo-fuzz once).
fn fuzz(secs: u64) -> Result<()> {
    let have = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("fuzz: installing cargo-fuzz (once)");
        status(Command::new("cargo").args(["+stable", "install", "cargo-fuzz", "--locked"]))?;
    }
    // The fuzz crate is its own workspace: start from the main lock file so it builds with the
    // same (pinned) versions.
    let lock = root().join("fuzz/Cargo.lock");
    if !lock.exists() {
        std::fs::copy(root().join("Cargo.lock"), &lock)?;
    }
    // Seed the corpus with real recordings when the tests left some behind.
    let corpus = root().join("fuzz/corpus/recording_reader");
    std::fs::create_dir_all(&corpus)?;
    if let Ok(dir) = std::fs::read_dir(root().join("target/test-workloads")) {
        for entry in dir.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "oomtrace") {
                let _ = std::fs::copy(&path, corpus.join(entry.file_name()));
            }
        }
    }
    status(
        Command::new("cargo")
            .current_dir(root())
            .args([
                "+nightly",
                "fuzz",
                "run",
                "recording_reader",
                "--",
                &format!("-max_total_time={secs}"),
                "-rss_limit_mb=2048",
            ])
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER"),
    )
}

fn demo() -> Result<()> {
    let dir = root().join("target/demo");
    std::fs::create_dir_all(&dir)?;
    let exe = dir.join("demo");
    status(
        Command::new("cc")
            .args(["-O2", "-g", "-fno-omit-frame-pointer", "-pthread", "-o"])
            .arg(&exe)
            .arg(root().join("tests/workloads/demo.c")),
    )?;
    println!("$ oomtrace run -- {}", exe.display());
    let st = Command::new(oomtrace_bin())
        .arg("run")
        .arg("--")
        .arg(&exe)
        .status()?;
    if !st.success() {
        bail!("oomtrace exited with {st}");
    }
    Ok(())
}
