//! GPU memory over time: the latest snapshot (the `oomtrace.gpu/1` JSON, as sampled or as
//! recorded) and one series per device counter and per traced process, classified by the same
//! growth classifier as heap stacks.
//!
//! The model keeps the snapshot as JSON so that a live session and a replayed recording hand it
//! exactly the same value; the numbers it follows are read out of it by [`readings`].

use std::collections::BTreeMap;

use serde_json::Value;

use super::growth::{Growth, GrowthConfig, classify};
use super::series::Series;

/// Series kept; readings of further names are counted in [`GpuTimeline::series_dropped`].
pub const MAX_GPU_SERIES: usize = 1024;

/// Device counters followed, as named in the snapshot's `devices` entries.
const DEVICE_COUNTERS: [&str; 4] = [
    "vram_used",
    "gtt_used",
    "unattributed_vram",
    "unattributed_gtt",
];

/// The GPU samples seen so far.
#[derive(Debug, Default)]
pub struct GpuTimeline {
    origin_ns: Option<u64>,
    latest: Option<Value>,
    series: BTreeMap<String, Series>,
    /// Snapshots applied.
    pub samples: u64,
    /// Readings that found no room for a series of their own.
    pub series_dropped: u64,
}

/// One followed figure's latest value, peak and growth (report key `gpu.series`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct GpuSeriesSummary {
    /// `card0 unattributed_gtt`, `nvidia0 used` or `pid 1234` (all its GPU memory).
    pub name: String,
    /// The latest value, bytes.
    pub latest_bytes: u64,
    /// The largest value sampled, bytes.
    pub peak_bytes: u64,
    /// Its growth over time.
    pub growth: Growth,
}

impl GpuTimeline {
    /// Applies one snapshot taken at `ts_ns`; `traced` says which pids get a series of their own.
    pub fn observe(&mut self, ts_ns: u64, snapshot: Value, traced: impl Fn(u32) -> bool) {
        let origin = *self.origin_ns.get_or_insert(ts_ns);
        let t = ts_ns.saturating_sub(origin) as f64 / 1e9;
        for (name, value) in readings(&snapshot, traced) {
            if let Some(s) = self.series.get_mut(&name) {
                s.push(t, value as f64);
            } else if self.series.len() >= MAX_GPU_SERIES {
                self.series_dropped += 1;
            } else {
                let mut s = Series::new();
                s.push(t, value as f64);
                self.series.insert(name, s);
            }
        }
        self.latest = Some(snapshot);
        self.samples += 1;
    }

    /// The latest snapshot, if any was taken.
    pub fn latest(&self) -> Option<&Value> {
        self.latest.as_ref()
    }

    /// Every series' summary: growing ones first, then by latest value.
    pub fn summaries(&self, cfg: &GrowthConfig) -> Vec<GpuSeriesSummary> {
        let mut out: Vec<GpuSeriesSummary> = self
            .series
            .iter()
            .map(|(name, s)| GpuSeriesSummary {
                name: name.clone(),
                latest_bytes: s.last().map_or(0, |(_, v)| v as u64),
                peak_bytes: s.max().map_or(0, |v| v as u64),
                growth: classify(s, cfg),
            })
            .collect();
        let growing = |g: &GpuSeriesSummary| g.growth.class == super::growth::GrowthClass::Growing;
        out.sort_by(|a, b| {
            growing(b)
                .cmp(&growing(a))
                .then(b.latest_bytes.cmp(&a.latest_bytes))
                .then(a.name.cmp(&b.name))
        });
        out
    }
}

/// The figures a snapshot gives: each device counter that is present, each NVIDIA device's
/// used memory, and for each traced pid all the GPU memory it holds (DRM clients' resident
/// bytes in every region, NVML's figure, KFD VRAM), present only when some source names it.
pub fn readings(snapshot: &Value, traced: impl Fn(u32) -> bool) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for d in array(&snapshot["devices"]) {
        let card = d["card"].as_str().unwrap_or("card?");
        for key in DEVICE_COUNTERS {
            if let Some(v) = d[key].as_u64() {
                out.push((format!("{card} {key}"), v));
            }
        }
    }
    for d in array(&snapshot["nvidia"]["devices"]) {
        if let (Some(i), Some(v)) = (d["index"].as_u64(), d["memory_used"].as_u64()) {
            out.push((format!("nvidia{i} used"), v));
        }
    }
    let mut per_pid: BTreeMap<u32, u64> = BTreeMap::new();
    let mut add = |pid: Option<u64>, bytes: u64| {
        if let Some(pid) = pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| traced(p))
        {
            *per_pid.entry(pid).or_default() += bytes;
        }
    };
    for c in array(&snapshot["clients"]) {
        let held: u64 = c["regions"]
            .as_object()
            .into_iter()
            .flat_map(|r| r.values())
            .filter_map(|m| m["resident"].as_u64())
            .sum();
        for pid in array(&c["pids"]) {
            add(pid.as_u64(), held);
        }
    }
    for d in array(&snapshot["nvidia"]["devices"]) {
        for p in array(&d["processes"]) {
            if let Some(bytes) = p["used_bytes"].as_u64() {
                add(p["pid"].as_u64(), bytes);
            }
        }
    }
    for k in array(&snapshot["kfd"]) {
        if let Some(bytes) = k["vram"].as_u64() {
            add(k["pid"].as_u64(), bytes);
        }
    }
    out.extend(
        per_pid
            .into_iter()
            .map(|(pid, b)| (format!("pid {pid}"), b)),
    );
    out
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::growth::GrowthClass;
    use serde_json::json;

    fn apu(gtt_used: u64, unattributed: u64, client: u64) -> Value {
        json!({
            "schema": "oomtrace.gpu/1",
            "devices": [{"card": "card0", "pdev": "0000:c4:00.0", "driver": "amdgpu",
                "vram_total": 536870912u64, "vram_used": 100, "vis_vram_total": null,
                "vis_vram_used": null, "gtt_total": 1u64 << 34, "gtt_used": gtt_used,
                "unattributed_vram": 0, "unattributed_gtt": unattributed}],
            "clients": [{"pdev": "0000:c4:00.0", "driver": "amdgpu", "client_id": 5,
                "pids": [42, 43], "comms": ["a"],
                "regions": {"gtt": {"total": null, "shared": null, "resident": client,
                    "purgeable": null, "active": null},
                    "vram": {"total": null, "shared": null, "resident": 100,
                    "purgeable": null, "active": null}}}],
            "dmabufs": [], "kfd": [{"pid": 42, "gpu_id": 1, "vram": 7, "comm": "a"}],
            "meminfo": {"gpu_active": null, "gpu_reclaim": null},
            "nvidia": {"available": true, "notice": null, "driver_version": "580",
                "devices": [{"index": 0, "name": "H", "pci_bus_id": "x", "memory_total": 10,
                    "memory_used": 9, "processes": [{"pid": 42, "used_bytes": 1000,
                    "context": "compute"}, {"pid": 44, "used_bytes": null, "context": "compute"}]}]},
            "warnings": []
        })
    }

    #[test]
    fn readings_cover_devices_nvidia_and_traced_pids_only() {
        let r = readings(&apu(5000, 3000, 2000), |pid| pid != 43);
        let got: BTreeMap<String, u64> = r.into_iter().collect();
        let want: BTreeMap<String, u64> = [
            ("card0 vram_used", 100),
            ("card0 gtt_used", 5000),
            ("card0 unattributed_vram", 0),
            ("card0 unattributed_gtt", 3000),
            ("nvidia0 used", 9),
            // DRM client 2000 + 100 resident, NVML 1000, KFD 7.
            ("pid 42", 3107),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn absent_counters_give_no_series() {
        let mut snap = apu(5000, 3000, 2000);
        snap["devices"][0]["unattributed_gtt"] = Value::Null;
        snap["nvidia"] = json!({"available": false, "notice": "absent", "devices": []});
        let names: Vec<String> = readings(&snap, |_| false)
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(
            names,
            [
                "card0 vram_used",
                "card0 gtt_used",
                "card0 unattributed_vram"
            ]
        );
    }

    #[test]
    fn a_driver_leak_on_an_apu_is_growing_and_client_memory_is_bounded() {
        let mut tl = GpuTimeline::default();
        // 30 s at 1 Hz: GTT nobody holds grows 4 MiB/s, the client's own GTT stays put.
        for i in 0..30u64 {
            let leak = i * (4 << 20);
            let client = 64 << 20;
            tl.observe(i * 1_000_000_000, apu(client + leak, leak, client), |p| {
                p == 42
            });
        }
        assert_eq!(tl.samples, 30);
        let s = tl.summaries(&GrowthConfig::default());
        assert_eq!(s[0].name, "card0 gtt_used");
        let unattributed = s
            .iter()
            .find(|s| s.name == "card0 unattributed_gtt")
            .unwrap();
        assert_eq!(unattributed.growth.class, GrowthClass::Growing);
        assert!((unattributed.growth.bytes_per_s - (4 << 20) as f64).abs() < 1.0);
        assert_eq!(unattributed.latest_bytes, 29 * (4 << 20));
        assert_eq!(unattributed.peak_bytes, 29 * (4 << 20));
        let pid = s.iter().find(|s| s.name == "pid 42").unwrap();
        assert_eq!(pid.growth.class, GrowthClass::Bounded);
        assert_eq!(pid.latest_bytes, (64 << 20) + 100 + 1000 + 7);
        assert_eq!(
            tl.latest().unwrap()["devices"][0]["gtt_used"],
            (64u64 << 20) + 29 * (4 << 20)
        );
    }

    #[test]
    fn series_are_capped() {
        let mut tl = GpuTimeline::default();
        let mut snap = apu(1, 1, 1);
        let clients: Vec<Value> = (0..(MAX_GPU_SERIES as u64 + 10))
            .map(|pid| {
                json!({"pdev": "p", "driver": "d", "client_id": pid, "pids": [pid],
                    "comms": [], "regions": {"gtt": {"resident": 1}}})
            })
            .collect();
        snap["clients"] = Value::Array(clients);
        tl.observe(0, snap, |_| true);
        assert_eq!(tl.series.len(), MAX_GPU_SERIES);
        assert!(tl.series_dropped > 0);
    }
}
