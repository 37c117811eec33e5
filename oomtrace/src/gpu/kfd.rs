//! ROCm compute memory per process from `<sys_root>/class/kfd/kfd/proc/<pid>/vram_<gpuid>`.
//!
//! KFD (the amdgpu compute interface) keeps per-process VRAM that may not show
//! in DRM fdinfo. Each `vram_<gpuid>` file holds one decimal number of bytes.
//! The whole source is `None` when `class/kfd/kfd/proc` is absent; a process
//! that exits while being read is skipped silently.

use std::fs;
use std::path::Path;

use serde::Serialize;

use super::procfs::{is_gone, read_comm};
use super::sysfs::read_u64_file;
use super::warning::Warnings;

/// VRAM one process holds on one GPU through KFD, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KfdVram {
    /// The process.
    pub pid: u32,
    /// Its command name from `<proc_root>/<pid>/comm`, if readable.
    pub comm: Option<String>,
    /// The KFD GPU id (as in `class/kfd/kfd/topology/nodes/*/gpu_id`).
    pub gpu_id: u32,
    /// Bytes of VRAM.
    pub vram: u64,
}

/// Reads every `vram_<gpuid>` file, ordered by (pid, gpu id); `None` when KFD is absent.
pub(crate) fn read_kfd(
    sys_root: &Path,
    proc_root: &Path,
    limit: usize,
    warnings: &mut Warnings,
) -> Option<Vec<KfdVram>> {
    let dir = sys_root.join("class/kfd/kfd/proc");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if is_gone(&e) => return None,
        Err(e) => {
            warnings.at(&dir, format!("cannot list KFD processes: {e}"));
            return None;
        }
    };
    let mut pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let mut out = Vec::new();
    for pid in pids {
        let mut found = read_process(&dir.join(pid.to_string()), warnings);
        if found.is_empty() {
            continue;
        }
        let comm = read_comm(proc_root, pid);
        for (gpu_id, vram) in found.drain(..) {
            if out.len() == limit {
                warnings.at(
                    &dir,
                    format!("more than {limit} KFD entries; the rest are not shown"),
                );
                return Some(out);
            }
            out.push(KfdVram {
                pid,
                comm: comm.clone(),
                gpu_id,
                vram,
            });
        }
    }
    Some(out)
}

/// The `(gpu id, bytes)` pairs of one process directory, ordered by gpu id.
fn read_process(dir: &Path, warnings: &mut Warnings) -> Vec<(u32, u64)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_prefix("vram_")) else {
            continue;
        };
        let Ok(gpu_id) = id.parse() else {
            warnings.at(
                &entry.path(),
                "GPU id in the file name is not a number; skipped",
            );
            continue;
        };
        if let Some(bytes) = read_u64_file(&entry.path(), warnings) {
            found.push((gpu_id, bytes));
        }
    }
    found.sort_unstable();
    found
}
