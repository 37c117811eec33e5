//! `--kernel`: GPU buffer allocations through DRM/TTM, where this kernel lets oomtrace see them.
//!
//! Each probe is tried on its own and gets a status: `attached`; `absent` (the function is not
//! in the kernel's BTF, or the tracepoint does not exist: no such driver); `refused` (the kernel
//! would not load or attach it, with the error: fentry is EPERM on some kernels); `unused` (it
//! exists but carries no per-buffer event). Nothing here fails the run.

use std::path::Path;

use aya::programs::{FEntry, FExit, ProgramError};
use aya::{Btf, BtfError};
use oomtrace_common::KernelField;

pub use crate::model::kernel::KernelProbe;

use super::Probes;
use super::kernel::{attach_tracepoint, set_fields};

/// The BTF-traced DRM/TTM functions: (function, kind, program).
const FUNCTIONS: &[(&str, &str, &str)] = &[
    ("drm_gem_object_init", "fexit", "drm_gem_init_exit"),
    ("drm_gem_object_release", "fentry", "drm_gem_release"),
    ("ttm_pool_alloc", "fexit", "ttm_pool_alloc_exit"),
    ("ttm_pool_free", "fentry", "ttm_pool_free_entry"),
];

/// Tries every DRM/TTM probe and says what became of each.
pub fn attach(probes: &mut Probes) -> Vec<KernelProbe> {
    let btf = Btf::from_sys_fs();
    // DRM and TTM are usually modules: their functions are in the module's BTF, not vmlinux's.
    let kallsyms = crate::kallsyms::Kallsyms::load().ok();
    let mut out = Vec::new();
    for &(function, kind, program) in FUNCTIONS {
        let module = kallsyms
            .as_ref()
            .and_then(|k| k.by_name(function))
            .and_then(|s| s.module.clone());
        let (status, detail) = match (&btf, module) {
            (_, Some(module)) => (
                "refused",
                format!(
                    "in module {module}: attaching fentry/fexit to a module's function needs                      its module BTF, which aya 0.14 does not support"
                ),
            ),
            (Err(e), None) => ("absent", format!("no kernel BTF: {e}")),
            (Ok(btf), None) => match attach_function(probes, btf, function, kind, program) {
                Ok(()) => ("attached", String::new()),
                Err(e) => e,
            },
        };
        out.push(KernelProbe {
            name: function.to_owned(),
            kind,
            status,
            detail,
        });
    }
    let events = super::kernel::events_dir();
    out.push(amdgpu(probes, &events));
    let gpu_mem = events.join("gpu_mem/gpu_mem_total").is_dir();
    out.push(KernelProbe {
        name: "gpu_mem:gpu_mem_total".to_owned(),
        kind: "tracepoint",
        status: if gpu_mem { "unused" } else { "absent" },
        detail: if gpu_mem {
            "a per-process GPU total, not per buffer (see `oomtrace gpu`)".to_owned()
        } else {
            "no such tracepoint".to_owned()
        },
    });
    out
}

fn attach_function(
    probes: &mut Probes,
    btf: &Btf,
    function: &str,
    kind: &str,
    program: &str,
) -> Result<(), (&'static str, String)> {
    let prog = probes
        .ebpf
        .program_mut(program)
        .ok_or_else(|| ("refused", format!("eBPF object has no program {program}")))?;
    let err = status_of;
    if kind == "fexit" {
        let p: &mut FExit = prog.try_into().map_err(err)?;
        p.load(function, btf).map_err(err)?;
        p.attach().map_err(err)?;
    } else {
        let p: &mut FEntry = prog.try_into().map_err(err)?;
        p.load(function, btf).map_err(err)?;
        p.attach().map_err(err)?;
    }
    Ok(())
}

/// `absent` when the function is not in the kernel's BTF, `refused` with the error otherwise.
fn status_of(e: ProgramError) -> (&'static str, String) {
    match e {
        ProgramError::Btf(BtfError::UnknownBtfTypeName { .. }) => (
            "absent",
            "not in the kernel's BTF (no such driver)".to_owned(),
        ),
        e => ("refused", errno_text(&e)),
    }
}

/// An error with its OS cause (`EPERM`) when it has one.
fn errno_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            text = format!("{text}: {io}");
            break;
        }
        cause = c.source();
    }
    text
}

fn amdgpu(probes: &mut Probes, events: &Path) -> KernelProbe {
    let name = "amdgpu:amdgpu_bo_create";
    let (status, detail) = if !events.join("amdgpu/amdgpu_bo_create").is_dir() {
        ("absent", "no such tracepoint (no amdgpu driver)".to_owned())
    } else {
        let fields = [
            ("bo", KernelField::AmdgpuBo),
            ("pages", KernelField::AmdgpuPages),
        ];
        match set_fields(probes, events, "amdgpu", "amdgpu_bo_create", &fields).and_then(|()| {
            attach_tracepoint(probes, "amdgpu", "amdgpu_bo_create", "amdgpu_bo_create")
        }) {
            Ok(()) => ("attached", String::new()),
            Err(e) => ("refused", format!("{e:#}")),
        }
    };
    KernelProbe {
        name: name.to_owned(),
        kind: "tracepoint",
        status,
        detail,
    }
}

/// One notice line per group of unavailable probes (DRM, TTM, amdgpu, gpu_mem).
pub fn notices(probes: &[KernelProbe]) -> Vec<String> {
    let groups: [(&str, &str); 4] = [
        ("drm_gem_", "DRM GEM objects"),
        ("ttm_", "TTM pools"),
        ("amdgpu:", "amdgpu buffer objects"),
        ("gpu_mem:", "gpu_mem totals"),
    ];
    let mut out = Vec::new();
    for (prefix, what) in groups {
        let members: Vec<&KernelProbe> = probes
            .iter()
            .filter(|p| p.name.starts_with(prefix) && p.status != "attached")
            .collect();
        if members.is_empty() || (prefix == "gpu_mem:" && members[0].status == "unused") {
            continue;
        }
        let names: Vec<String> = members
            .iter()
            .map(|p| format!("{} {}", p.name, p.status))
            .collect();
        let why = &members[0].detail;
        out.push(format!(
            "{what} are not traced ({}): {why}",
            names.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(name: &str, status: &'static str) -> KernelProbe {
        KernelProbe {
            name: name.to_owned(),
            kind: "fentry",
            status,
            detail: "why".to_owned(),
        }
    }

    #[test]
    fn one_notice_per_unavailable_group() {
        let probes = vec![
            probe("drm_gem_object_init", "absent"),
            probe("drm_gem_object_release", "absent"),
            probe("ttm_pool_alloc", "attached"),
            probe("ttm_pool_free", "attached"),
            probe("amdgpu:amdgpu_bo_create", "refused"),
            probe("gpu_mem:gpu_mem_total", "unused"),
        ];
        let n = notices(&probes);
        assert_eq!(n.len(), 2, "{n:?}");
        assert!(n[0].starts_with("DRM GEM objects are not traced (drm_gem_object_init absent, drm_gem_object_release absent)"), "{}", n[0]);
        assert!(n[1].contains("amdgpu:amdgpu_bo_create refused"), "{}", n[1]);
    }
}
