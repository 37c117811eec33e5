//! GPU and driver memory: who holds what on each DRM device, and what no one holds.
//!
//! Sources, each optional (an absent one is `None`/`null`, never 0):
//! - DRM clients from `<proc_root>/<pid>/fdinfo/*` (`fdinfo.rs`): the kernel's
//!   drm-usage-stats keys, one client per (`drm-pdev`, `drm-client-id`);
//! - devices from `<sys_root>/class/drm/card<N>/device/` (`sysfs.rs`): driver,
//!   bus address and amdgpu `mem_info_*` counters, plus the *unattributed*
//!   memory (used minus what the device's clients hold resident);
//! - dma-bufs from the same fdinfo walk, KFD per-process VRAM (`kfd.rs`) and
//!   the `GPUActive`/`GPUReclaim` lines of `<proc_root>/meminfo`.
//!
//! Example — what `oomtrace gpu` does:
//!
//! ```ignore
//! let snap = gpu::snapshot(&gpu::Roots::default())?;
//! for w in &snap.warnings {
//!     eprintln!("warning: {w}");
//! }
//! print!("{}", snap.render_text()); // --format json: serde_json::to_writer_pretty(out, &snap)
//! ```
//!
//! Nothing read from the sources can make this panic: per-line and per-file
//! problems become [`Warning`]s, processes that exit mid-walk are skipped, and
//! the number of clients, dma-bufs, KFD entries and warnings kept is capped.

mod fdinfo;
mod kfd;
mod nvml;
mod procfs;
mod render;
mod snapshot;
mod sysfs;
mod warning;

#[cfg(test)]
mod testutil;
#[cfg(test)]
mod tree_tests;

use std::path::PathBuf;

// The module's public surface. In the `oomtrace` binary only part of it is
// named (the rest is reached through `GpuSnapshot`'s fields), hence the allow.
#[allow(unused_imports)]
pub use self::{
    fdinfo::{
        DmabufFdinfo, DrmFdinfo, EngineUsage, FdinfoError, MAX_WARNINGS_PER_FILE, RegionMemory,
        parse_dmabuf_fdinfo, parse_fdinfo,
    },
    kfd::KfdVram,
    nvml::{NvidiaDevice, NvidiaProcess, NvidiaSource, Nvml},
    procfs::{MeminfoGpu, parse_meminfo},
    render::format_bytes,
    snapshot::{Dmabuf, DrmClient, GpuSnapshot, MAX_ENTRIES, SCHEMA},
    sysfs::GpuDevice,
    warning::{MAX_WARNINGS, Warning},
};

/// Where the `/proc` and `/sys` trees are; point them elsewhere to read a saved copy or a fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// The procfs root, `/proc` by default.
    pub proc_root: PathBuf,
    /// The sysfs root, `/sys` by default.
    pub sys_root: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
        }
    }
}

/// Reads every source once; fails only when a root exists but is not a directory.
///
/// Absent sources come back as `None`/empty, and problems met along the way
/// as [`GpuSnapshot::warnings`], which the caller should print.
pub fn snapshot(roots: &Roots) -> anyhow::Result<GpuSnapshot> {
    snapshot::collect(roots, &Nvml::for_roots(roots))
}

/// Takes snapshots again and again, keeping NVML loaded between them.
pub struct Sampler {
    roots: Roots,
    nvml: Nvml,
}

impl Sampler {
    /// A sampler of the trees `roots` points at (NVML only when they are this machine's).
    pub fn new(roots: Roots) -> Self {
        let nvml = Nvml::for_roots(&roots);
        Self { roots, nvml }
    }

    /// The roots from `OOMTRACE_GPU_PROC_ROOT` / `OOMTRACE_GPU_SYS_ROOT`, `/proc` and `/sys`
    /// by default (the variables point a traced run at a saved or fixture tree).
    pub fn from_env() -> Self {
        let mut roots = Roots::default();
        if let Some(p) = std::env::var_os("OOMTRACE_GPU_PROC_ROOT") {
            roots.proc_root = p.into();
        }
        if let Some(s) = std::env::var_os("OOMTRACE_GPU_SYS_ROOT") {
            roots.sys_root = s.into();
        }
        Self::new(roots)
    }

    /// One snapshot.
    pub fn sample(&self) -> anyhow::Result<GpuSnapshot> {
        snapshot::collect(&self.roots, &self.nvml)
    }
}

impl Nvml {
    /// NVML for the live machine; absent with a notice when `roots` point at another tree.
    fn for_roots(roots: &Roots) -> Self {
        if *roots == Roots::default() {
            Self::open()
        } else {
            Self::absent("NVIDIA: not read: the snapshot is of a saved /proc or /sys tree")
        }
    }
}
