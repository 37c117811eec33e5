//! Builds the eBPF programs (the nightly toolchain, bpf-linker) and embeds them in the oomtrace
//! binary, so a plain `cargo build --release` gives the complete tool.
//!
//! The nested build's output is shown only when it fails: a newcomer's `cargo build` should not
//! scroll past thirty lines of another compiler's progress as warnings.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let workspace = manifest
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?;
    let ebpf = workspace.join("oomtrace-ebpf");
    for dir in [&ebpf, &workspace.join("oomtrace-common")] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    let target_dir = out_dir.join("ebpf-target");
    let arch = env("CARGO_CFG_TARGET_ARCH")?;
    // The same flags aya's build helper passes: the target arch as a cfg, BTF in the object.
    // And the stack walker's global functions, which the verifier checks on their own only if
    // the linker leaves them global (`oomtrace-ebpf/src/unwind.rs`, `python.rs`).
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
        "-Clink-arg=--export=unwind_step,unwind_row,unwind_vma_row,unwind_read,python_walk,python_tstate,python_step,python_hash,python_same,walk_cached,walk_keep,stack_take".into(),
    ]
    .join("\x1f");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--package",
        "oomtrace-ebpf",
    ])
    .args(["--bins", "--release", "--target", "bpfel-unknown-none"])
    .args(["-Z", "build-std=core", "--target-dir"])
    .arg(&target_dir)
    .current_dir(workspace)
    .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
    // The outer build's compiler is stable: the nested one must pick its own.
    .env_remove("RUSTC")
    .env_remove("RUSTC_WORKSPACE_WRAPPER")
    .env_remove("CARGO_TARGET_DIR");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?} (is rustup installed?)"))?;
    if !out.status.success() {
        for line in String::from_utf8_lossy(&out.stderr)
            .lines()
            .chain(String::from_utf8_lossy(&out.stdout).lines())
        {
            println!("cargo:warning={line}");
        }
        bail!(
            "building the eBPF programs failed ({}): run `cargo xtask setup` for the nightly's \
             rust-src and bpf-linker",
            out.status
        );
    }
    let object = target_dir.join("bpfel-unknown-none/release/oomtrace");
    copy(&object, &out_dir.join("oomtrace"))
}

fn env(key: &str) -> anyhow::Result<String> {
    std::env::var(key).with_context(|| format!("{key} is not set"))
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}
