//! One snapshot of GPU memory: devices, DRM clients, dma-bufs, KFD and meminfo.
//!
//! Walks `<proc_root>/<pid>/fdinfo/*` once. A DRM client (one `struct
//! drm_file`) is keyed by (`drm-pdev`, `drm-client-id`) and counted once
//! however many fds and processes share it; a dma-buf is keyed by its inode
//! when the fdinfo prints one. Each device's *unattributed* memory is what
//! sysfs says is used minus what its clients hold resident, never below zero:
//! GTT no process owns on an APU is the signal of a driver leak.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::bail;
use serde::Serialize;

use super::Roots;
use super::fdinfo::{DmabufFdinfo, DrmFdinfo, RegionMemory, parse_dmabuf_fdinfo, parse_fdinfo};
use super::kfd::{KfdVram, read_kfd};
use super::nvml::{NvidiaSource, Nvml};
use super::procfs::{self, MAX_FDINFO_BYTES, MeminfoGpu, Read};
use super::sysfs::{GpuDevice, read_devices};
use super::warning::{Warning, Warnings};

/// The `schema` value of the JSON form.
pub const SCHEMA: &str = "oomtrace.gpu/1";

/// Most DRM clients, dma-bufs and KFD entries kept; more are counted in a warning.
pub const MAX_ENTRIES: usize = 65536;

/// Everything known about GPU memory at one moment; serializes to the `oomtrace.gpu/1` JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuSnapshot {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// DRM cards, ordered by card number.
    pub devices: Vec<GpuDevice>,
    /// DRM clients, ordered by (pdev, client id).
    pub clients: Vec<DrmClient>,
    /// dma-bufs held through fds; `None` when the proc root could not be listed.
    pub dmabufs: Option<Vec<Dmabuf>>,
    /// KFD per-process VRAM; `None` when KFD is absent.
    pub kfd: Option<Vec<KfdVram>>,
    /// The GPU lines of `<proc_root>/meminfo`.
    pub meminfo: MeminfoGpu,
    /// NVIDIA GPUs through NVML; `available: false` with a notice when it cannot be loaded.
    pub nvidia: NvidiaSource,
    /// What was skipped while reading, with the file concerned.
    pub warnings: Vec<Warning>,
}

/// One DRM client, merged over every fd and process that shares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrmClient {
    /// `drm-pdev`, absent for some platform devices.
    pub pdev: Option<String>,
    /// `drm-driver`.
    pub driver: String,
    /// `drm-client-id`.
    pub client_id: u64,
    /// Every process holding an fd of this client, ascending.
    pub pids: Vec<u32>,
    /// Their command names, sorted, each once.
    pub comms: Vec<String>,
    /// Memory per region, as printed under the first fd seen.
    pub regions: BTreeMap<String, RegionMemory>,
}

/// One dma-buf, merged over every fd and process that shares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dmabuf {
    /// The buffer's inode; `None` when the fdinfo prints none (then each fd counts alone).
    pub ino: Option<u64>,
    /// Size in bytes.
    pub size: u64,
    /// The exporter's name.
    pub exp_name: String,
    /// The name user space gave it, if any.
    pub name: Option<String>,
    /// Every process holding an fd of it, ascending.
    pub pids: Vec<u32>,
    /// Their command names, sorted, each once.
    pub comms: Vec<String>,
}

impl GpuSnapshot {
    /// The JSON form: `{"schema": "oomtrace.gpu/1", "devices": [...], "clients": [...], ...}`.
    ///
    /// A `Value` sorts object keys; serializing the snapshot itself (it is `Serialize`,
    /// e.g. `serde_json::to_writer_pretty(out, &snap)`) keeps the documented order.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self)
            .unwrap_or_else(|e| serde_json::json!({ "schema": SCHEMA, "error": e.to_string() }))
    }
}

/// How a dma-buf is told apart: by inode, or by the one fd it was seen under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum BufKey {
    Ino(u64),
    Fd(u32, u32),
}

/// What the walk over `/proc` gathers.
#[derive(Debug, Default)]
struct ProcScan {
    clients: BTreeMap<(Option<String>, u64), DrmClient>,
    dmabufs: BTreeMap<BufKey, Dmabuf>,
    denied_pids: usize,
    clients_dropped: usize,
    dmabufs_dropped: usize,
}

/// Takes a snapshot; fails only when a root exists but is not a directory.
pub(crate) fn collect(roots: &Roots, nvml: &Nvml) -> anyhow::Result<GpuSnapshot> {
    for root in [&roots.proc_root, &roots.sys_root] {
        if root.exists() && !root.is_dir() {
            bail!("{} is not a directory", root.display());
        }
    }
    let mut warnings = Warnings::default();
    let (clients, dmabufs) = match scan_proc(&roots.proc_root, &mut warnings) {
        Some(scan) => (
            scan.clients.into_values().collect(),
            Some(scan.dmabufs.into_values().collect()),
        ),
        None => (Vec::new(), None),
    };
    let mut devices = read_devices(&roots.sys_root, &mut warnings);
    attribute(&mut devices, &clients);
    let kfd = read_kfd(
        &roots.sys_root,
        &roots.proc_root,
        MAX_ENTRIES,
        &mut warnings,
    );
    let meminfo = procfs::read_meminfo(&roots.proc_root).unwrap_or_default();
    Ok(GpuSnapshot {
        schema: SCHEMA,
        devices,
        clients,
        dmabufs,
        kfd,
        meminfo,
        nvidia: nvml.read(),
        warnings: warnings.finish(),
    })
}

/// Reads every fdinfo under `proc_root`; `None` when the root cannot be listed.
fn scan_proc(proc_root: &Path, warnings: &mut Warnings) -> Option<ProcScan> {
    let pids = match procfs::list_pids(proc_root) {
        Ok(pids) => pids,
        Err(e) if procfs::is_gone(&e) => return None,
        Err(e) => {
            warnings.at(proc_root, format!("cannot list processes: {e}"));
            return None;
        }
    };
    let mut scan = ProcScan::default();
    for pid in pids {
        scan_pid(proc_root, pid, &mut scan, warnings);
    }
    for (dropped, what) in [
        (scan.clients_dropped, "DRM clients"),
        (scan.dmabufs_dropped, "dma-bufs"),
    ] {
        if dropped > 0 {
            warnings.general(format!(
                "more than {MAX_ENTRIES} {what}: {dropped} fds of further ones not counted"
            ));
        }
    }
    if scan.denied_pids > 0 {
        let n = scan.denied_pids;
        let processes = if n == 1 { "process" } else { "processes" };
        warnings.general(format!(
            "fdinfo of {n} {processes} not readable (permission denied): their GPU memory is \
             missing and unattributed memory may be overstated"
        ));
    }
    for item in scan.clients.values_mut() {
        item.comms.sort_unstable();
        item.comms.dedup();
    }
    for item in scan.dmabufs.values_mut() {
        item.comms.sort_unstable();
        item.comms.dedup();
    }
    Some(scan)
}

/// Reads the fdinfo files of one process into `scan`.
fn scan_pid(proc_root: &Path, pid: u32, scan: &mut ProcScan, warnings: &mut Warnings) {
    let fds = match procfs::list_fdinfo(proc_root, pid) {
        Read::Ok(fds) => fds,
        Read::Gone => return,
        Read::Denied => {
            scan.denied_pids += 1;
            return;
        }
        Read::Failed(e) => {
            warnings.at(
                &proc_root.join(pid.to_string()).join("fdinfo"),
                format!("cannot list: {e}"),
            );
            return;
        }
    };
    let mut comm: Option<Option<String>> = None;
    let mut denied = false;
    for (fd, path) in fds {
        let text = match procfs::read_capped(&path, MAX_FDINFO_BYTES) {
            Read::Ok(text) => text,
            Read::Gone => continue,
            Read::Denied => {
                denied = true;
                continue;
            }
            Read::Failed(e) => {
                warnings.at(&path, format!("unreadable: {e}"));
                continue;
            }
        };
        let found = match classify(&text) {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(why) => {
                warnings.at(&path, why);
                continue;
            }
        };
        let comm = comm
            .get_or_insert_with(|| procfs::read_comm(proc_root, pid))
            .clone();
        match found {
            Found::Client(info) => {
                for w in &info.warnings {
                    warnings.at(&path, w.as_str());
                }
                add_client(scan, pid, comm, info);
            }
            Found::Dmabuf(buf) => add_dmabuf(scan, pid, fd, comm, buf),
        }
    }
    if denied {
        scan.denied_pids += 1;
    }
}

/// What one fdinfo file holds that this module counts.
enum Found {
    Client(DrmFdinfo),
    Dmabuf(DmabufFdinfo),
}

/// Tells a DRM client from a dma-buf; `Ok(None)` for any other fd.
fn classify(text: &str) -> Result<Option<Found>, String> {
    match parse_fdinfo(text) {
        Ok(Some(info)) => return Ok(Some(Found::Client(info))),
        Ok(None) => {}
        Err(e) => return Err(format!("{e}; not counted as a DRM client")),
    }
    match parse_dmabuf_fdinfo(text) {
        Ok(found) => Ok(found.map(Found::Dmabuf)),
        Err(e) => Err(format!("{e}; not counted as a dma-buf")),
    }
}

/// Adds one fd's client, merging with a client already seen under the same key.
fn add_client(scan: &mut ProcScan, pid: u32, comm: Option<String>, info: DrmFdinfo) {
    let key = (info.pdev.clone(), info.client_id);
    let at_limit = scan.clients.len() >= MAX_ENTRIES;
    if at_limit && !scan.clients.contains_key(&key) {
        scan.clients_dropped += 1;
        return;
    }
    let client = scan.clients.entry(key).or_insert_with(|| DrmClient {
        pdev: info.pdev,
        driver: info.driver,
        client_id: info.client_id,
        pids: Vec::new(),
        comms: Vec::new(),
        regions: info.regions,
    });
    note_holder(&mut client.pids, &mut client.comms, pid, comm);
}

/// Adds one fd's dma-buf, merging by inode where there is one.
fn add_dmabuf(scan: &mut ProcScan, pid: u32, fd: u32, comm: Option<String>, buf: DmabufFdinfo) {
    let key = buf.ino.map_or(BufKey::Fd(pid, fd), BufKey::Ino);
    if scan.dmabufs.len() >= MAX_ENTRIES && !scan.dmabufs.contains_key(&key) {
        scan.dmabufs_dropped += 1;
        return;
    }
    let item = scan.dmabufs.entry(key).or_insert_with(|| Dmabuf {
        ino: buf.ino,
        size: buf.size,
        exp_name: buf.exp_name,
        name: buf.name,
        pids: Vec::new(),
        comms: Vec::new(),
    });
    note_holder(&mut item.pids, &mut item.comms, pid, comm);
}

/// Records a holding process once; pids arrive in ascending order.
fn note_holder(pids: &mut Vec<u32>, comms: &mut Vec<String>, pid: u32, comm: Option<String>) {
    if pids.last() == Some(&pid) {
        return;
    }
    pids.push(pid);
    comms.extend(comm);
}

/// Whether a region name is VRAM: `vram`, or `vram<N>` as xe prints per tile.
pub(crate) fn is_vram_region(name: &str) -> bool {
    match name.strip_prefix("vram") {
        Some("") => true,
        Some(n) => n.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// Fills each device's unattributed VRAM and GTT from its clients' resident bytes.
fn attribute(devices: &mut [GpuDevice], clients: &[DrmClient]) {
    for device in devices {
        let Some(pdev) = device.pdev.as_deref() else {
            continue;
        };
        let (mut vram, mut gtt) = (0u64, 0u64);
        for client in clients.iter().filter(|c| c.pdev.as_deref() == Some(pdev)) {
            for (name, region) in &client.regions {
                let held = region.resident.unwrap_or(0);
                if is_vram_region(name) {
                    vram = vram.saturating_add(held);
                } else if name == "gtt" {
                    gtt = gtt.saturating_add(held);
                }
            }
        }
        device.unattributed_vram = device.vram_used.map(|used| used.saturating_sub(vram));
        device.unattributed_gtt = device.gtt_used.map(|used| used.saturating_sub(gtt));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(pdev: &str, regions: &[(&str, u64)]) -> DrmClient {
        let regions = regions
            .iter()
            .map(|(n, b)| {
                (
                    n.to_string(),
                    RegionMemory {
                        resident: Some(*b),
                        ..Default::default()
                    },
                )
            })
            .collect();
        DrmClient {
            pdev: Some(pdev.into()),
            driver: "amdgpu".into(),
            client_id: 1,
            pids: vec![],
            comms: vec![],
            regions,
        }
    }

    #[test]
    fn vram_regions() {
        for name in ["vram", "vram0", "vram12"] {
            assert!(is_vram_region(name), "{name}");
        }
        for name in ["gtt", "vramx", "cpu", "vis_vram", "Vram"] {
            assert!(!is_vram_region(name), "{name}");
        }
    }

    #[test]
    fn unattributed_is_used_minus_clients_of_that_device_and_never_negative() {
        let mut devices = vec![
            GpuDevice {
                card: "card0".into(),
                pdev: Some("a".into()),
                vram_used: Some(100),
                gtt_used: Some(1000),
                ..Default::default()
            },
            GpuDevice {
                card: "card1".into(),
                pdev: Some("b".into()),
                vram_used: Some(10),
                ..Default::default()
            },
            GpuDevice {
                card: "card2".into(),
                pdev: None,
                vram_used: Some(10),
                ..Default::default()
            },
        ];
        let clients = [
            client("a", &[("vram", 30), ("gtt", 200), ("cpu", 5000)]),
            client("a", &[("vram", 20), ("gtt", 300)]),
            client("b", &[("vram0", 8), ("vram1", 8)]),
            client("c", &[("vram", 1)]),
        ];
        attribute(&mut devices, &clients);
        assert_eq!(
            (devices[0].unattributed_vram, devices[0].unattributed_gtt),
            (Some(50), Some(500))
        );
        assert_eq!(
            (devices[1].unattributed_vram, devices[1].unattributed_gtt),
            (Some(0), None)
        );
        assert_eq!(
            (devices[2].unattributed_vram, devices[2].unattributed_gtt),
            (None, None)
        );
    }

    #[test]
    fn clients_beyond_the_cap_are_counted_not_kept() {
        let info = |id| DrmFdinfo {
            driver: "x".into(),
            client_id: id,
            ..Default::default()
        };
        let mut scan = ProcScan::default();
        for id in 0..=MAX_ENTRIES as u64 {
            add_client(&mut scan, 1, None, info(id));
        }
        // Another fd of a client already kept still merges.
        add_client(&mut scan, 2, Some("b".into()), info(0));
        assert_eq!(scan.clients.len(), MAX_ENTRIES);
        assert_eq!(scan.clients_dropped, 1);
        assert_eq!(scan.clients[&(None, 0)].pids, [1, 2]);
        assert_eq!(scan.clients[&(None, 0)].comms, ["b"]);
    }

    #[test]
    fn a_non_directory_root_is_an_error() {
        let roots = Roots {
            proc_root: "/proc/self/comm".into(),
            sys_root: "/nonexistent".into(),
        };
        assert!(collect(&roots, &Nvml::absent("test")).is_err());
    }
}
