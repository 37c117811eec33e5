//! The model seen by the TUI: a plain [`Snapshot`] built once per refresh. The TUI never sees
//! the model, and the model never draws.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use serde_json::Value;

use crate::model::growth::{GrowthClass, GrowthConfig};
use crate::model::{Model, Process, StackKey};
use crate::report::{StackSource, SymbolSource, stack_frames};
use crate::symbols::Frame;
use crate::tui::{
    FrameRow, GpuClientRow, GpuDeviceRow, GpuPane, Header, OomRow, ProcessRow, Snapshot, StackRow,
    Target,
};

/// Stacks sent to the view per refresh (the largest and the growing ones).
const VIEW_STACKS: usize = 500;
/// Header history kept (one point per refresh).
const HISTORY: usize = 600;

/// What the view remembers between refreshes (rates are differences).
pub struct ViewState {
    label: String,
    all_mode: bool,
    start_ns: u64,
    limit: Option<u64>,
    history: VecDeque<(f64, u64, u64)>,
    prev_allocs: HashMap<(u32, StackKey), u64>,
    prev: Option<(Instant, u64, u64)>,
    gpu: GpuPane,
    /// GPU snapshots of the model the pane was built from.
    gpu_samples: Option<u64>,
}

impl ViewState {
    /// A view of target `label`; `limit` is the memory cap, if any (else total RAM).
    pub fn new(label: String, all_mode: bool, start_ns: u64, limit: Option<u64>) -> Self {
        Self {
            label,
            all_mode,
            start_ns,
            limit: limit.or_else(mem_total),
            history: VecDeque::new(),
            prev_allocs: HashMap::new(),
            prev: None,
            gpu: GpuPane::default(),
            gpu_samples: None,
        }
    }

    /// Builds the snapshot the TUI draws.
    pub fn snapshot(
        &mut self,
        model: &Model,
        stacks: &dyn StackSource,
        symbols: &mut dyn SymbolSource,
        lost_events: u64,
        uptime_s: f64,
        exited: Option<String>,
    ) -> Snapshot {
        let now = Instant::now();
        let cpu = own_cpu_ticks();
        let (dt, events_per_s, cpu_pct) = match self.prev {
            Some((t, events, ticks)) => {
                let dt = now.duration_since(t).as_secs_f64().max(1e-3);
                let ev = model.events.saturating_sub(events) as f64 / dt;
                (
                    dt,
                    ev,
                    cpu.saturating_sub(ticks) as f64 / clock_ticks() / dt * 100.0,
                )
            }
            None => (0.0, 0.0, 0.0),
        };
        self.prev = Some((now, model.events, cpu));
        let cfg = GrowthConfig::default();
        let live = model.processes().filter(|p| p.exit.is_none());
        let rss: u64 = live
            .filter_map(|p| model.timeline.process(p.pid)?.rss.last())
            .map(|(_, v)| v as u64)
            .sum();
        let heap = model.outstanding();
        self.history.push_back((uptime_s, rss, heap));
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
        let header = Header {
            rss_bytes: (rss > 0).then_some(rss),
            heap_bytes: heap,
            history: self.history.iter().copied().collect(),
            events_per_s,
            lost_events,
            tracer_cpu_pct: cpu_pct,
            tracer_rss_bytes: own_rss(),
            limit_bytes: self.limit,
            notices: model
                .processes()
                .filter_map(|p| hazard_notice(p, symbols))
                .collect(),
            bpf_ns_per_call: None,
        };
        let stack_rows = self.stack_rows(model, stacks, symbols, &cfg, dt);
        let processes = model
            .processes()
            .map(|p| {
                let vitals = model.timeline.process_growth(p.pid, &cfg);
                (p, vitals)
            })
            .map(|(p, vitals)| ProcessRow {
                pid: p.pid,
                comm: p.comm.clone(),
                outstanding_bytes: p.totals.outstanding_bytes,
                outstanding_allocs: p.totals.outstanding_allocs,
                growth: vitals.heap.clone(),
                vitals,
                exited: p.exit.map(|e| match (e.code, e.signal) {
                    (_, Some(sig)) => match p.killed_by() {
                        Some(k) => format!("killed by signal {sig} {k}"),
                        None => format!("killed by signal {sig}"),
                    },
                    (Some(code), None) => format!("exited ({code})"),
                    (None, None) => "exited".to_owned(),
                }),
            })
            .collect();
        let ooms = model
            .ooms
            .iter()
            .map(|o| OomRow {
                time_s: o.ts_ns.saturating_sub(self.start_ns) as f64 / 1e9,
                pid: o.pid,
                comm: o.comm.clone(),
                anon_rss_bytes: o.anon_rss_bytes,
                cgroup: o.cgroup.clone(),
                top_function: o
                    .top_stacks
                    .first()
                    .and_then(|(k, _)| symbols.frame(o.pid, k.generation, k.call_site).function),
            })
            .collect();
        self.refresh_gpu(model);
        Snapshot {
            target: Target {
                label: self.label.clone(),
                uptime_s,
                exited,
            },
            header,
            stacks: stack_rows,
            processes,
            ooms,
            gpu: self.gpu.clone(),
            all_mode: self.all_mode,
        }
    }

    fn stack_rows(
        &mut self,
        model: &Model,
        stacks: &dyn StackSource,
        symbols: &mut dyn SymbolSource,
        cfg: &GrowthConfig,
        dt: f64,
    ) -> Vec<StackRow> {
        let mut candidates: Vec<(
            &crate::model::Process,
            &crate::model::StackStats,
            crate::model::growth::Growth,
        )> = model
            .processes()
            .flat_map(|p| p.stacks.iter().map(move |s| (p, s)))
            .filter(|(_, s)| s.counts.outstanding_bytes > 0)
            .map(|(p, s)| (p, s, model.timeline.stack_growth(p.pid, &s.key, cfg)))
            .collect();
        candidates.sort_by(|a, b| {
            let grows = |g: &crate::model::growth::Growth| g.class == GrowthClass::Growing;
            grows(&b.2).cmp(&grows(&a.2)).then(
                b.1.counts
                    .outstanding_bytes
                    .cmp(&a.1.counts.outstanding_bytes),
            )
        });
        candidates.truncate(VIEW_STACKS);
        let mut rows = Vec::with_capacity(candidates.len());
        for (p, s, growth) in candidates {
            let frames: Vec<FrameRow> = stack_frames(p, s, stacks, symbols)
                .iter()
                .map(frame_row)
                .collect();
            let head = frames.first().cloned().unwrap_or_default();
            let prev = self
                .prev_allocs
                .insert((p.pid, s.key), s.counts.allocs)
                .unwrap_or(s.counts.allocs);
            let alloc_rate = if dt > 0.0 {
                s.counts.allocs.saturating_sub(prev) as f64 / dt
            } else {
                0.0
            };
            let history = model
                .timeline
                .stack(p.pid, &s.key)
                .map(|series| series.points().map(|(t, v)| (t, v as u64)).collect())
                .unwrap_or_default();
            rows.push(StackRow {
                key: row_key(p.pid, &s.key),
                pid: p.pid,
                function: head.function.clone(),
                location: head.location.clone(),
                module: head.module.clone(),
                outstanding_bytes: s.counts.outstanding_bytes,
                outstanding_allocs: s.counts.outstanding_allocs,
                growth,
                alloc_rate,
                sizes: s.sizes.summary(),
                lifetime: s.lifetimes.as_ref().map(|h| h.summary()),
                frames,
                history,
            });
        }
        rows
    }

    /// Rebuilds the GPU pane when the model took a new GPU snapshot: the pane shows what the
    /// session sampled (or the recording holds), never a second reading of its own.
    fn refresh_gpu(&mut self, model: &Model) {
        if self.gpu_samples == Some(model.gpu.samples) {
            return;
        }
        self.gpu_samples = Some(model.gpu.samples);
        self.gpu = match model.gpu.latest() {
            Some(snap) => gpu_pane(snap),
            None => GpuPane::Absent("GPU: no snapshot taken yet".into()),
        };
    }
}

/// The GPU pane of an `oomtrace.gpu/1` snapshot: DRM devices and clients, then NVIDIA GPUs
/// and their processes; absent (and why) when there is none of them.
fn gpu_pane(snap: &Value) -> GpuPane {
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let mut devices: Vec<GpuDeviceRow> = list(&snap["devices"])
        .iter()
        .map(|d| GpuDeviceRow {
            card: text(&d["card"]).unwrap_or_default(),
            driver: text(&d["driver"]),
            pdev: text(&d["pdev"]),
            vram_used: d["vram_used"].as_u64(),
            vram_total: d["vram_total"].as_u64(),
            gtt_used: d["gtt_used"].as_u64(),
            gtt_total: d["gtt_total"].as_u64(),
            unattributed_vram: d["unattributed_vram"].as_u64(),
            unattributed_gtt: d["unattributed_gtt"].as_u64(),
        })
        .collect();
    let mut clients: Vec<GpuClientRow> = list(&snap["clients"])
        .iter()
        .map(|c| GpuClientRow {
            device: text(&c["pdev"]).unwrap_or_default(),
            driver: text(&c["driver"]).unwrap_or_default(),
            pids: list(&c["pids"])
                .iter()
                .filter_map(|p| u32::try_from(p.as_u64()?).ok())
                .collect(),
            comms: list(&c["comms"]).iter().filter_map(text).collect(),
            resident: c["regions"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(r, m)| Some((r.clone(), m["resident"].as_u64()?)))
                .collect(),
        })
        .collect();
    for d in list(&snap["nvidia"]["devices"]) {
        let card = format!("nvidia{}", d["index"].as_u64().unwrap_or(0));
        devices.push(GpuDeviceRow {
            card: card.clone(),
            driver: Some("nvidia".into()),
            pdev: text(&d["pci_bus_id"]),
            vram_used: d["memory_used"].as_u64(),
            vram_total: d["memory_total"].as_u64(),
            gtt_used: None,
            gtt_total: None,
            unattributed_vram: None,
            unattributed_gtt: None,
        });
        for p in list(&d["processes"]) {
            clients.push(GpuClientRow {
                device: card.clone(),
                driver: "nvidia".into(),
                pids: p["pid"]
                    .as_u64()
                    .and_then(|p| u32::try_from(p).ok())
                    .into_iter()
                    .collect(),
                comms: Vec::new(),
                resident: p["used_bytes"]
                    .as_u64()
                    .map(|b| ("vram".to_owned(), b))
                    .into_iter()
                    .collect(),
            });
        }
    }
    if devices.is_empty() && clients.is_empty() {
        let nvidia = snap["nvidia"]["notice"].as_str().unwrap_or("no NVIDIA GPU");
        return GpuPane::Absent(format!(
            "GPU: no DRM devices or clients found on this machine; {nvidia}"
        ));
    }
    GpuPane::Devices { devices, clients }
}

/// A stable key for a view row.
/// One header line for a process's hazards: how many of each kind, and where the first was.
fn hazard_notice(p: &Process, symbols: &mut dyn SymbolSource) -> Option<String> {
    use crate::model::process::faults::HazardKind as K;
    let c = &p.faults.hazard_counts;
    if c.total() == 0 {
        return None;
    }
    let mut parts = Vec::new();
    for (kind, n) in [
        (K::SignalHandlerAlloc, c.signal_handler_allocs),
        (K::DoubleFree, c.double_frees),
        (K::InvalidFree, c.invalid_frees),
        (K::CrossAllocatorFree, c.cross_allocator_frees),
    ] {
        if n == 0 {
            continue;
        }
        let at = p
            .faults
            .hazards
            .iter()
            .find(|h| h.kind == kind)
            .and_then(|h| {
                symbols
                    .frame(p.pid, h.key.generation, h.key.call_site)
                    .function
            });
        parts.push(format!(
            "{} × {}{}",
            n,
            crate::report::faults::kind_words(kind),
            at.map(|f| format!(" (in {f})")).unwrap_or_default()
        ));
    }
    Some(format!(
        "hazards in pid {} ({}): {}",
        p.pid,
        p.comm,
        parts.join(", ")
    ))
}

fn row_key(pid: u32, key: &StackKey) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (pid, key).hash(&mut h);
    h.finish()
}

fn frame_row(f: &Frame) -> FrameRow {
    FrameRow {
        function: f
            .function
            .clone()
            .unwrap_or_else(|| format!("{:#x}", f.addr)),
        location: match (&f.file, f.line) {
            (Some(file), Some(line)) => Some(format!(
                "{}:{line}",
                file.rsplit('/').next().unwrap_or(file)
            )),
            _ => None,
        },
        module: f.module.clone(),
    }
}

fn mem_total() -> Option<u64> {
    crate::oom::sampler::kib_field("/proc/meminfo", "MemTotal")
}

fn own_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the comm (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn own_rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{GpuSnapshot, NvidiaDevice, NvidiaProcess, NvidiaSource, SCHEMA};

    #[test]
    fn nvidia_gpus_and_their_processes_become_pane_rows() {
        let snap = GpuSnapshot {
            schema: SCHEMA,
            devices: vec![],
            clients: vec![],
            dmabufs: None,
            kfd: None,
            meminfo: Default::default(),
            nvidia: NvidiaSource {
                available: true,
                notice: None,
                driver_version: Some("580.159.04".into()),
                devices: vec![NvidiaDevice {
                    index: 0,
                    name: Some("NVIDIA H100 80GB HBM3".into()),
                    pci_bus_id: Some("00000000:00:06.0".into()),
                    memory_total: Some(85_520_809_984),
                    memory_used: Some(811_597_824),
                    processes: vec![
                        NvidiaProcess {
                            pid: 626,
                            used_bytes: Some(811_597_824),
                            context: "compute".into(),
                        },
                        NvidiaProcess {
                            pid: 700,
                            used_bytes: None,
                            context: "graphics".into(),
                        },
                    ],
                }],
            },
            warnings: vec![],
        };
        let GpuPane::Devices { devices, clients } = gpu_pane(&snap.to_json()) else {
            panic!("an NVIDIA GPU is something to show");
        };
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].card, "nvidia0");
        assert_eq!(devices[0].vram_used, Some(811_597_824));
        assert_eq!(devices[0].vram_total, Some(85_520_809_984));
        assert_eq!(devices[0].gtt_used, None, "NVML has no GTT: absent, not 0");
        assert_eq!(clients.len(), 2);
        assert_eq!(clients[0].pids, [626]);
        assert_eq!(clients[0].resident, [("vram".to_owned(), 811_597_824)]);
        assert!(clients[1].resident.is_empty(), "an unknown figure is not 0");
    }

    /// Every call site is `on_alarm`.
    struct OnAlarm;
    impl SymbolSource for OnAlarm {
        fn is_code(&self, _: u32, _: u32, _: u64) -> bool {
            true
        }
        fn frame(&mut self, _: u32, _: u32, addr: u64) -> Frame {
            Frame {
                addr,
                function: Some("on_alarm".into()),
                ..Frame::default()
            }
        }
    }

    #[test]
    fn hazards_make_a_header_line_with_where_the_first_was() {
        use oomtrace_common::{EventKind, MemEvent};
        let mut m = Model::new();
        let ev = MemEvent {
            kind: EventKind::HandlerAlloc as u16,
            alloc_fn: 0,
            tgid: 100,
            tid: 100,
            stack_id: -1,
            ts_ns: 0,
            addr: 0,
            size: 48,
            old_addr: 0,
            call_site: 0x1234,
            aux: 14,
        };
        m.apply(&ev);
        m.apply(&ev);
        let p = m.process(100).unwrap();
        assert_eq!(
            hazard_notice(p, &mut OnAlarm).as_deref(),
            Some("hazards in pid 100 (): 2 × allocation in a signal handler (in on_alarm)")
        );
    }

    #[test]
    fn a_snapshot_with_nothing_says_why() {
        let snap = serde_json::json!({
            "devices": [], "clients": [],
            "nvidia": {"available": false, "notice": "NVIDIA: libnvidia-ml.so.1 not found", "devices": []},
        });
        let GpuPane::Absent(why) = gpu_pane(&snap) else {
            panic!("nothing to show");
        };
        assert_eq!(
            why,
            "GPU: no DRM devices or clients found on this machine; \
             NVIDIA: libnvidia-ml.so.1 not found"
        );
    }
}
