//! NVIDIA GPUs through NVML, loaded at run time (`libnvidia-ml.so.1`, from the driver).
//!
//! The proprietary driver exposes no drm-usage-stats, so NVML is the only per-process source
//! for NVIDIA memory. The library is opened with `dlopen` (through `nvml-wrapper`), never
//! linked: on a machine without it the source is *absent* with a notice that says why, and
//! every other source still works. Absent is never reported as zero.

use serde::Serialize;

/// Environment variable naming another NVML library to load (tests use a missing path).
pub const LIB_ENV: &str = "OOMTRACE_NVML_LIB";

/// The library the driver installs.
const DEFAULT_LIB: &str = "libnvidia-ml.so.1";

/// Most processes kept per device (NVML lists every process on the machine).
const MAX_PROCESSES: usize = 4096;

/// What NVML said, or why it could not be asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NvidiaSource {
    /// Whether NVML was loaded and initialized.
    pub available: bool,
    /// Why it is absent (or what failed while reading it); `None` when all went well.
    pub notice: Option<String>,
    /// The driver's version string.
    pub driver_version: Option<String>,
    /// Every NVIDIA GPU, by NVML index.
    pub devices: Vec<NvidiaDevice>,
}

/// One NVIDIA GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NvidiaDevice {
    /// NVML's index.
    pub index: u32,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: Option<String>,
    /// PCI bus id, e.g. `00000000:00:06.0`.
    pub pci_bus_id: Option<String>,
    /// Framebuffer memory installed, bytes.
    pub memory_total: Option<u64>,
    /// Framebuffer memory in use (every process plus the driver's own), bytes.
    pub memory_used: Option<u64>,
    /// Processes with a compute or graphics context, ascending by pid.
    pub processes: Vec<NvidiaProcess>,
}

/// One process's memory on one NVIDIA GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NvidiaProcess {
    /// Process id, as NVML reports it (the host's pid namespace).
    pub pid: u32,
    /// Bytes of GPU memory the process holds; `None` when NVML cannot tell (e.g. under MIG).
    pub used_bytes: Option<u64>,
    /// `compute`, `graphics` or `compute+graphics`.
    pub context: String,
}

/// A handle on NVML kept across samples (initializing it costs milliseconds).
pub struct Nvml {
    lib: Result<nvml_wrapper::Nvml, String>,
}

impl Nvml {
    /// Loads and initializes NVML; failure is remembered as the notice of every later read.
    pub fn open() -> Self {
        let path = std::env::var_os(LIB_ENV).unwrap_or_else(|| DEFAULT_LIB.into());
        let lib = nvml_wrapper::Nvml::builder()
            .lib_path(&path)
            .init()
            .map_err(|e| absent_notice(&path.to_string_lossy(), &e));
        Self { lib }
    }

    /// A source that is absent for `why` (e.g. the snapshot reads a saved tree, not this machine).
    pub fn absent(why: &str) -> Self {
        Self {
            lib: Err(why.to_owned()),
        }
    }

    /// Reads every device; per-device failures become the notice, the rest is kept.
    pub fn read(&self) -> NvidiaSource {
        let nvml = match &self.lib {
            Ok(nvml) => nvml,
            Err(why) => {
                return NvidiaSource {
                    notice: Some(why.clone()),
                    ..NvidiaSource::default()
                };
            }
        };
        let mut problems = Vec::new();
        let count = nvml.device_count().unwrap_or_else(|e| {
            problems.push(format!("cannot count devices: {e}"));
            0
        });
        let devices = (0..count)
            .filter_map(|i| match nvml.device_by_index(i) {
                Ok(dev) => Some(read_device(i, &dev, &mut problems)),
                Err(e) => {
                    problems.push(format!("device {i}: {e}"));
                    None
                }
            })
            .collect();
        NvidiaSource {
            available: true,
            notice: (!problems.is_empty()).then(|| format!("NVML: {}", problems.join("; "))),
            driver_version: nvml.sys_driver_version().ok(),
            devices,
        }
    }
}

fn absent_notice(path: &str, e: &nvml_wrapper::error::NvmlError) -> String {
    use nvml_wrapper::error::NvmlError as E;
    match e {
        E::LibloadingError(_) => format!(
            "NVIDIA: {path} not found: NVIDIA GPUs not read (it comes with the NVIDIA driver)"
        ),
        E::DriverNotLoaded => {
            format!("NVIDIA: {path} loaded but the NVIDIA driver is not: no NVIDIA GPU read")
        }
        E::NoPermission => format!("NVIDIA: {path}: no permission to talk to the driver"),
        other => format!("NVIDIA: {path} could not be initialized: {other}"),
    }
}

fn read_device(
    index: u32,
    dev: &nvml_wrapper::Device<'_>,
    problems: &mut Vec<String>,
) -> NvidiaDevice {
    let memory = dev
        .memory_info()
        .map_err(|e| problems.push(format!("device {index} memory: {e}")))
        .ok();
    let mut processes: Vec<NvidiaProcess> = Vec::new();
    for (context, list) in [
        ("compute", dev.running_compute_processes()),
        ("graphics", dev.running_graphics_processes()),
    ] {
        let list = match list {
            Ok(list) => list,
            Err(e) => {
                problems.push(format!("device {index} {context} processes: {e}"));
                continue;
            }
        };
        for p in list {
            merge_process(
                &mut processes,
                p.pid,
                used_bytes(&p.used_gpu_memory),
                context,
            );
        }
    }
    processes.sort_by_key(|p| p.pid);
    NvidiaDevice {
        index,
        name: dev.name().ok(),
        pci_bus_id: dev.pci_info().ok().map(|p| p.bus_id),
        memory_total: memory.as_ref().map(|m| m.total),
        memory_used: memory.as_ref().map(|m| m.used),
        processes,
    }
}

fn used_bytes(m: &nvml_wrapper::enums::device::UsedGpuMemory) -> Option<u64> {
    match m {
        // Some drivers report "not available" as u64::MAX through the `Used` variant.
        nvml_wrapper::enums::device::UsedGpuMemory::Used(b) if *b != u64::MAX => Some(*b),
        _ => None,
    }
}

/// Adds a process seen under one context kind; a process with both counts its memory once
/// (NVML reports the same per-process figure under each list).
fn merge_process(list: &mut Vec<NvidiaProcess>, pid: u32, used: Option<u64>, context: &str) {
    if let Some(p) = list.iter_mut().find(|p| p.pid == pid) {
        if !p.context.contains(context) {
            p.context = format!("{}+{context}", p.context);
        }
        p.used_bytes = match (p.used_bytes, used) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    } else if list.len() < MAX_PROCESSES {
        list.push(NvidiaProcess {
            pid,
            used_bytes: used,
            context: context.to_owned(),
        });
    }
}

impl NvidiaSource {
    /// Bytes NVML says `pid` holds on all NVIDIA GPUs; `None` when it appears on none or
    /// NVML cannot tell its figure.
    pub fn process_bytes(&self, pid: u32) -> Option<u64> {
        let mut known = self
            .devices
            .iter()
            .flat_map(|d| d.processes.iter().filter(|p| p.pid == pid))
            .map(|p| p.used_bytes)
            .peekable();
        known.peek()?;
        known.sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_absent_with_a_notice() {
        // SAFETY: single-threaded test setup; no other test reads this variable.
        unsafe { std::env::set_var(LIB_ENV, "/nonexistent/libnvidia-ml.so.1") };
        let src = Nvml::open().read();
        unsafe { std::env::remove_var(LIB_ENV) };
        assert!(!src.available);
        assert!(src.devices.is_empty());
        let notice = src.notice.unwrap();
        assert!(
            notice.contains("/nonexistent/libnvidia-ml.so.1 not found"),
            "{notice}"
        );
    }

    #[test]
    fn a_process_in_both_lists_counts_once() {
        let mut list = Vec::new();
        merge_process(&mut list, 7, Some(1 << 20), "compute");
        merge_process(&mut list, 7, Some(1 << 20), "graphics");
        merge_process(&mut list, 9, None, "graphics");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].context, "compute+graphics");
        assert_eq!(list[0].used_bytes, Some(1 << 20));
        assert_eq!(list[1].used_bytes, None);
        let src = NvidiaSource {
            available: true,
            notice: None,
            driver_version: None,
            devices: vec![NvidiaDevice {
                index: 0,
                name: None,
                pci_bus_id: None,
                memory_total: None,
                memory_used: None,
                processes: list,
            }],
        };
        assert_eq!(src.process_bytes(7), Some(1 << 20));
        assert_eq!(src.process_bytes(9), None);
        assert_eq!(src.process_bytes(8), None);
    }
}
