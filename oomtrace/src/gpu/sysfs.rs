//! DRM devices from `<sys_root>/class/drm/card<N>/device/`.
//!
//! For each `card<N>` (connector entries such as `card0-DP-1` and render
//! nodes are skipped): the driver is the basename of the `device/driver`
//! symlink, the bus address (`pdev`) the basename of the `device` symlink's
//! target, and the amdgpu `mem_info_{vram,vis_vram,gtt}_{total,used}` files
//! give memory in bytes where they exist. A missing file is `None`, never 0.

use std::fs;
use std::io;
use std::path::Path;

use serde::Serialize;

use super::warning::Warnings;

/// One DRM card and its memory counters in bytes; `None` where sysfs has no such file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GpuDevice {
    /// The card's name under `class/drm` (`card0`).
    pub card: String,
    /// The bus address the `device` link points at (`0000:c3:00.0`), as in `drm-pdev`.
    pub pdev: Option<String>,
    /// The kernel driver bound to the device (`amdgpu`).
    pub driver: Option<String>,
    /// `mem_info_vram_total`.
    pub vram_total: Option<u64>,
    /// `mem_info_vram_used`.
    pub vram_used: Option<u64>,
    /// `mem_info_vis_vram_total`: the CPU-visible part of VRAM.
    pub vis_vram_total: Option<u64>,
    /// `mem_info_vis_vram_used`.
    pub vis_vram_used: Option<u64>,
    /// `mem_info_gtt_total`: system RAM the GPU may map.
    pub gtt_total: Option<u64>,
    /// `mem_info_gtt_used`.
    pub gtt_used: Option<u64>,
    /// VRAM used that no DRM client on this device holds as resident.
    pub unattributed_vram: Option<u64>,
    /// GTT used that no DRM client on this device holds as resident.
    pub unattributed_gtt: Option<u64>,
}

/// The card number of a `card<N>` name; `None` for connectors (`card0-DP-1`) and others.
pub(crate) fn card_number(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("card")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Reads every `card<N>` under `<sys_root>/class/drm`, ordered by N; empty when the directory is absent.
pub(crate) fn read_devices(sys_root: &Path, warnings: &mut Warnings) -> Vec<GpuDevice> {
    let class = sys_root.join("class/drm");
    let entries = match fs::read_dir(&class) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warnings.at(&class, format!("cannot list DRM devices: {e}"));
            return Vec::new();
        }
    };
    let mut cards: Vec<(u32, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((card_number(&name)?, name))
        })
        .collect();
    cards.sort_unstable();
    cards
        .into_iter()
        .map(|(_, name)| read_card(&class.join(&name), name, warnings))
        .collect()
}

/// Reads one card directory.
fn read_card(card_dir: &Path, card: String, warnings: &mut Warnings) -> GpuDevice {
    let device = card_dir.join("device");
    let mut read = |file: &str| read_u64_file(&device.join(file), warnings);
    GpuDevice {
        vram_total: read("mem_info_vram_total"),
        vram_used: read("mem_info_vram_used"),
        vis_vram_total: read("mem_info_vis_vram_total"),
        vis_vram_used: read("mem_info_vis_vram_used"),
        gtt_total: read("mem_info_gtt_total"),
        gtt_used: read("mem_info_gtt_used"),
        pdev: link_basename(&device),
        driver: link_basename(&device.join("driver")),
        card,
        unattributed_vram: None,
        unattributed_gtt: None,
    }
}

/// The last component of where the symlink `link` points; `None` if it is not a symlink.
fn link_basename(link: &Path) -> Option<String> {
    let target = fs::read_link(link).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Reads a file holding one decimal number; `None` (with a warning if it exists but is bad) otherwise.
pub(crate) fn read_u64_file(path: &Path, warnings: &mut Warnings) -> Option<u64> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            warnings.at(path, format!("unreadable: {e}"));
            return None;
        }
    };
    match text.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => {
            let shown = super::fdinfo::clip(text.trim());
            warnings.at(path, format!("{shown:?} is not a number; ignored"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_card_names_count() {
        assert_eq!(card_number("card0"), Some(0));
        assert_eq!(card_number("card12"), Some(12));
        for name in [
            "card0-DP-1",
            "card1-eDP-1",
            "renderD128",
            "card",
            "version",
            "card+1",
            "cardx",
        ] {
            assert_eq!(card_number(name), None, "{name}");
        }
    }

    #[test]
    fn absent_class_dir_gives_no_devices_and_no_warnings() {
        let mut w = Warnings::default();
        assert!(read_devices(Path::new("/nonexistent-oomtrace-test"), &mut w).is_empty());
        assert!(w.finish().is_empty());
    }
}
