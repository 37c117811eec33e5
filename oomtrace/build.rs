//! Builds the eBPF programs (nightly, bpf-linker) and embeds them in the oomtrace binary.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let meta = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?
        .join("oomtrace-ebpf");
    let root = meta.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [Package {
            name: "oomtrace-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
