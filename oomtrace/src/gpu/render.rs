//! The human-readable text form of a [`GpuSnapshot`].
//!
//! Sizes are shown in B/KiB/MiB/GiB/TiB with one decimal; absent values as
//! `-`. Warnings are not part of the text: the caller prints
//! [`GpuSnapshot::warnings`] where it wants them (stderr, typically).

use std::fmt::Write as _;

use super::fdinfo::RegionMemory;
use super::nvml::NvidiaSource;
use super::snapshot::{Dmabuf, DrmClient, GpuSnapshot};
use super::sysfs::GpuDevice;

/// Formats a byte count as `512 B`, `1.5 KiB`, `2.0 MiB`, `3.2 GiB` or `1.0 TiB`.
pub fn format_bytes(bytes: u64) -> String {
    crate::report::human_bytes_with(bytes, 1)
}

/// Formats an optional byte count, `-` when absent.
fn opt_bytes(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "-".to_string(), format_bytes)
}

impl GpuSnapshot {
    /// The snapshot as text for a terminal; says "no DRM devices found" when there are none.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        render_devices(&mut out, &self.devices);
        out.push('\n');
        render_clients(&mut out, &self.clients);
        out.push('\n');
        render_dmabufs(&mut out, self.dmabufs.as_deref());
        out.push('\n');
        match &self.kfd {
            None => out.push_str("KFD: not present\n"),
            Some(list) if list.is_empty() => out.push_str("KFD: no processes\n"),
            Some(list) => {
                out.push_str("KFD VRAM\n");
                for k in list {
                    let comm = k.comm.as_deref().unwrap_or("?");
                    let _ = writeln!(
                        out,
                        "  pid {} ({comm})  gpu {}  {}",
                        k.pid,
                        k.gpu_id,
                        format_bytes(k.vram)
                    );
                }
            }
        }
        let m = &self.meminfo;
        let _ = writeln!(
            out,
            "meminfo: GPUActive {}, GPUReclaim {}",
            opt_bytes(m.gpu_active),
            opt_bytes(m.gpu_reclaim)
        );
        render_nvidia(&mut out, &self.nvidia);
        out
    }
}

fn render_nvidia(out: &mut String, nv: &NvidiaSource) {
    if !nv.available {
        let why = nv.notice.as_deref().unwrap_or("NVIDIA: NVML not loaded");
        let _ = writeln!(out, "{why}");
        return;
    }
    let version = nv.driver_version.as_deref().unwrap_or("?");
    let _ = writeln!(out, "NVIDIA (NVML, driver {version})");
    if nv.devices.is_empty() {
        out.push_str("  no NVIDIA GPUs\n");
    }
    for d in &nv.devices {
        let _ = writeln!(
            out,
            "  gpu {}  {}  {}  used {} of {}",
            d.index,
            d.name.as_deref().unwrap_or("?"),
            d.pci_bus_id.as_deref().unwrap_or("?"),
            opt_bytes(d.memory_used),
            opt_bytes(d.memory_total)
        );
        for p in &d.processes {
            let _ = writeln!(
                out,
                "    pid {} ({})  {}",
                p.pid,
                p.context,
                opt_bytes(p.used_bytes)
            );
        }
    }
    if let Some(n) = &nv.notice {
        let _ = writeln!(out, "  {n}");
    }
}

fn render_devices(out: &mut String, devices: &[GpuDevice]) {
    if devices.is_empty() {
        out.push_str("no DRM devices found\n");
        return;
    }
    out.push_str("GPU devices\n");
    for d in devices {
        let pdev = d.pdev.as_deref().unwrap_or("-");
        let driver = d.driver.as_deref().unwrap_or("-");
        let _ = writeln!(out, "  {}  {pdev}  {driver}", d.card);
        let rows = [
            ("vram", d.vram_used, d.vram_total, Some(d.unattributed_vram)),
            ("vis_vram", d.vis_vram_used, d.vis_vram_total, None),
            ("gtt", d.gtt_used, d.gtt_total, Some(d.unattributed_gtt)),
        ];
        let mut any = false;
        for (name, used, total, unattributed) in rows {
            if used.is_none() && total.is_none() {
                continue;
            }
            any = true;
            let _ = write!(
                out,
                "    {name:<9} used {} of {}",
                opt_bytes(used),
                opt_bytes(total)
            );
            if let Some(Some(u)) = unattributed {
                let _ = write!(out, ", unattributed {}", format_bytes(u));
            }
            out.push('\n');
        }
        if !any {
            out.push_str("    no memory counters\n");
        }
    }
}

fn render_clients(out: &mut String, clients: &[DrmClient]) {
    if clients.is_empty() {
        out.push_str("no DRM clients found\n");
        return;
    }
    let _ = writeln!(out, "DRM clients ({})", clients.len());
    for c in clients {
        let pdev = c.pdev.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "  {pdev}  {}  client {}  {}",
            c.driver,
            c.client_id,
            holders(&c.pids, &c.comms)
        );
        for (name, region) in &c.regions {
            let _ = writeln!(out, "    {name:<9} {}", region_text(region));
        }
    }
}

fn render_dmabufs(out: &mut String, dmabufs: Option<&[Dmabuf]>) {
    let list = match dmabufs {
        None => return out.push_str("dma-bufs: not available\n"),
        Some([]) => return out.push_str("dma-bufs: none\n"),
        Some(list) => list,
    };
    let total = list.iter().fold(0u64, |sum, b| sum.saturating_add(b.size));
    let _ = writeln!(
        out,
        "dma-bufs ({}, {} in all)",
        list.len(),
        format_bytes(total)
    );
    for b in list {
        let ino = b.ino.map_or_else(|| "-".to_string(), |i| i.to_string());
        let name = b
            .name
            .as_deref()
            .map(|n| format!(" {n:?}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  ino {ino}  {}  {}{name}  {}",
            format_bytes(b.size),
            b.exp_name,
            holders(&b.pids, &b.comms)
        );
    }
}

/// `pids 1,2 (a, b)`.
fn holders(pids: &[u32], comms: &[String]) -> String {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut s = format!("pids {}", pids.join(","));
    if !comms.is_empty() {
        let _ = write!(s, " ({})", comms.join(", "));
    }
    s
}

/// `total 1.0 MiB  resident 512.0 KiB`, listing only the counters present.
fn region_text(r: &RegionMemory) -> String {
    let fields = [
        ("total", r.total),
        ("shared", r.shared),
        ("resident", r.resident),
        ("purgeable", r.purgeable),
        ("active", r.active),
    ];
    let parts: Vec<String> = fields
        .iter()
        .filter_map(|(name, v)| v.map(|v| format!("{name} {}", format_bytes(v))))
        .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join("  ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_formatting() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(16 << 20), "16.0 MiB");
        assert_eq!(format_bytes(25_864_192_000), "24.1 GiB");
        assert_eq!(format_bytes(3 << 40), "3.0 TiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn empty_snapshot_says_so() {
        let snap = GpuSnapshot {
            schema: super::super::snapshot::SCHEMA,
            devices: vec![],
            clients: vec![],
            dmabufs: None,
            kfd: None,
            meminfo: Default::default(),
            nvidia: super::super::NvidiaSource {
                notice: Some("NVIDIA: libnvidia-ml.so.1 not found".into()),
                ..Default::default()
            },
            warnings: vec![],
        };
        let expected = "no DRM devices found\n\nno DRM clients found\n\ndma-bufs: not available\n\n\
                        KFD: not present\nmeminfo: GPUActive -, GPUReclaim -\n\
                        NVIDIA: libnvidia-ml.so.1 not found\n";
        assert_eq!(snap.render_text(), expected);
    }
}
