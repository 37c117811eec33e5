//! What the agent reads from the model at each refresh: a plain [`Snapshot`] of the processes,
//! their top allocation sites, the OOM kills since the previous one and GPU memory. Built on the
//! ingestion loop's task by [`Exporter`], the session's [`Observer`]; the metrics and the
//! profiles are made from it elsewhere.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::config::Settings;
use crate::model::growth::{Growth, GrowthClass, GrowthConfig, classify};
use crate::model::{Model, Process, StackKey};
use crate::report::{StackSource, SymbolSource, stack_frames};
use crate::session::{Observed, Observer, Upkeep};

/// Stacks per process whose site is resolved at each refresh (the largest), so that a process
/// with thousands of small stacks costs no more than one with a few.
const CANDIDATE_STACKS: usize = 64;
/// Sites remembered by stack, over all processes; past this the cache starts over.
const MAX_CACHED_SITES: usize = 65_536;
/// Distinct `comm` labels of `oomtrace_oom_kills_total`; later names count under `other`.
pub const MAX_OOM_COMMS: usize = 512;
/// An OOM kill is counted once its victim's name arrived, or this long after the kill.
const OOM_COMM_WAIT: Duration = Duration::from_secs(1);

/// One live process.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessRow {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// Resident set size at the last tick.
    pub rss_bytes: Option<u64>,
    /// What the model holds for it: requested heap bytes (sample mode) or resident bytes its
    /// stacks faulted in (growth mode).
    pub heap_bytes: u64,
    /// Growth rate of that figure, bytes/s: positive when growing, negative when shrinking,
    /// 0 when bounded or not known yet.
    pub growth_bytes_per_s: f64,
}

/// One allocation site of one process (its stacks with that site, summed).
#[derive(Clone, Debug, PartialEq)]
pub struct SiteRow {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// The site's function.
    pub site: String,
    /// Bytes its stacks hold.
    pub outstanding_bytes: u64,
    /// Growth rate, as [`ProcessRow::growth_bytes_per_s`] (the growing stacks' rates summed).
    pub growth_bytes_per_s: f64,
}

/// GPU memory of one client in one region of one device.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GpuRow {
    /// `card0`, `nvidia0`.
    pub device: String,
    /// `vram`, `gtt`, ….
    pub region: String,
    /// `COMM/PID` of the client; empty for a device's unattributed memory.
    pub client: String,
    /// Resident bytes.
    pub bytes: u64,
}

/// Everything the metrics show, at one refresh.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Live processes.
    pub processes: Vec<ProcessRow>,
    /// The top sites of each process.
    pub sites: Vec<SiteRow>,
    /// Victims' names of the OOM kills counted at this refresh.
    pub oom_kills: Vec<String>,
    /// GPU memory per client.
    pub gpu_clients: Vec<GpuRow>,
    /// GPU memory no client accounts for, per device and region (`client` empty).
    pub gpu_unattributed: Vec<GpuRow>,
    /// Events lost in this session so far.
    pub lost_events: u64,
}

/// The verdict's rate as the metrics show it.
fn rate(g: &Growth) -> f64 {
    match g.class {
        GrowthClass::Growing | GrowthClass::Shrinking => g.bytes_per_s,
        GrowthClass::Bounded | GrowthClass::Unknown => 0.0,
    }
}

/// Builds snapshots: the top sites of each process, with each stack's site remembered.
#[derive(Default)]
pub struct Builder {
    sites: HashMap<(u32, StackKey), String>,
    /// OOM events of the model counted already (a prefix of `model.ooms`).
    ooms_counted: usize,
}

impl Builder {
    /// The snapshot of `model` with at most `top_k` sites per process, none under `min_bytes`.
    pub fn build(
        &mut self,
        model: &Model,
        stacks: &dyn StackSource,
        symbols: &mut dyn SymbolSource,
        top_k: usize,
        min_bytes: u64,
        now_ns: u64,
    ) -> Snapshot {
        let cfg = GrowthConfig::default();
        let mut snap = Snapshot::default();
        for p in model.processes().filter(|p| p.exit.is_none()) {
            let heap = p.totals.outstanding_bytes;
            let growth = match model.timeline.process(p.pid) {
                Some(series) if heap >= min_bytes => rate(&classify(&series.heap, &cfg)),
                _ => 0.0,
            };
            snap.processes.push(ProcessRow {
                pid: p.pid,
                comm: p.comm.clone(),
                rss_bytes: model
                    .timeline
                    .process(p.pid)
                    .and_then(|s| s.rss.last())
                    .map(|(_, v)| v as u64),
                heap_bytes: heap,
                growth_bytes_per_s: growth,
            });
            if heap >= min_bytes {
                snap.sites
                    .extend(self.sites_of(model, p, stacks, symbols, top_k, min_bytes, &cfg));
            }
        }
        snap.oom_kills = self.new_oom_kills(model, now_ns);
        if let Some(gpu) = model.gpu.latest() {
            (snap.gpu_clients, snap.gpu_unattributed) = gpu_rows(gpu);
        }
        snap
    }

    /// How many of the model's OOM events are counted (the loop may drop them).
    pub fn ooms_done(&mut self) -> usize {
        std::mem::take(&mut self.ooms_counted)
    }

    /// Forgets the sites of processes that are gone.
    pub fn forget_exited(&mut self, model: &Model) {
        self.sites
            .retain(|(pid, _), _| model.process(*pid).is_some_and(|p| p.exit.is_none()));
    }

    #[allow(clippy::too_many_arguments)]
    fn sites_of(
        &mut self,
        model: &Model,
        p: &Process,
        stacks: &dyn StackSource,
        symbols: &mut dyn SymbolSource,
        top_k: usize,
        min_bytes: u64,
        cfg: &GrowthConfig,
    ) -> Vec<SiteRow> {
        let mut held: Vec<&crate::model::StackStats> = p
            .stacks
            .iter()
            .filter(|s| s.counts.outstanding_bytes > 0)
            .collect();
        held.sort_by_key(|s| std::cmp::Reverse(s.counts.outstanding_bytes));
        held.truncate(CANDIDATE_STACKS);
        let mut by_site: BTreeMap<String, (u64, f64)> = BTreeMap::new();
        for s in held {
            let key = (p.pid, s.key);
            let site = match self.sites.get(&key) {
                Some(site) => site.clone(),
                None => {
                    let frames = stack_frames(p, s, stacks, symbols);
                    let site = super::site::site_name(&frames).unwrap_or_default();
                    // A frame without a name may get one once the process's maps are read.
                    if frames.first().is_some_and(|f| f.function.is_some()) {
                        if self.sites.len() >= MAX_CACHED_SITES {
                            self.sites.clear();
                        }
                        self.sites.insert(key, site.clone());
                    }
                    site
                }
            };
            let growth = rate(&model.timeline.stack_growth(p.pid, &s.key, cfg));
            let e = by_site.entry(site).or_default();
            e.0 += s.counts.outstanding_bytes;
            e.1 += growth;
        }
        let mut rows: Vec<SiteRow> = by_site
            .into_iter()
            .filter(|(_, (bytes, _))| *bytes >= min_bytes)
            .map(|(site, (bytes, growth))| SiteRow {
                pid: p.pid,
                comm: p.comm.clone(),
                site,
                outstanding_bytes: bytes,
                growth_bytes_per_s: growth,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.growth_bytes_per_s
                .total_cmp(&a.growth_bytes_per_s)
                .then(b.outstanding_bytes.cmp(&a.outstanding_bytes))
                .then(a.site.cmp(&b.site))
        });
        rows.truncate(top_k);
        rows
    }

    /// Victims' names of the model's OOM events not counted yet, in order, stopping at one
    /// whose name may still be on its way.
    fn new_oom_kills(&mut self, model: &Model, now_ns: u64) -> Vec<String> {
        let mut out = Vec::new();
        for o in &model.ooms[self.ooms_counted.min(model.ooms.len())..] {
            let old = now_ns.saturating_sub(o.ts_ns) >= OOM_COMM_WAIT.as_nanos() as u64;
            if o.comm.is_empty() && !old {
                break;
            }
            out.push(o.comm.clone());
            self.ooms_counted += 1;
        }
        out
    }
}

/// GPU memory per client and unattributed per device, from an `oomtrace.gpu/1` snapshot.
pub fn gpu_rows(snap: &Value) -> (Vec<GpuRow>, Vec<GpuRow>) {
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let devices = list(&snap["devices"]);
    let card_of = |pdev: &str| {
        devices
            .iter()
            .find(|d| d["pdev"].as_str() == Some(pdev))
            .and_then(|d| d["card"].as_str())
            .unwrap_or(pdev)
            .to_owned()
    };
    let mut clients: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for c in list(&snap["clients"]) {
        let device = card_of(c["pdev"].as_str().unwrap_or("?"));
        let pid = c["pids"][0].as_u64().unwrap_or(0);
        let comm = c["comms"][0].as_str().unwrap_or("");
        let client = format!("{comm}/{pid}");
        for (region, m) in c["regions"].as_object().into_iter().flatten() {
            if let Some(bytes) = m["resident"].as_u64() {
                *clients
                    .entry((device.clone(), region.clone(), client.clone()))
                    .or_default() += bytes;
            }
        }
    }
    for d in list(&snap["nvidia"]["devices"]) {
        let device = format!("nvidia{}", d["index"].as_u64().unwrap_or(0));
        for p in list(&d["processes"]) {
            if let (Some(pid), Some(bytes)) = (p["pid"].as_u64(), p["used_bytes"].as_u64()) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                *clients
                    .entry((
                        device.clone(),
                        "vram".into(),
                        format!("{}/{pid}", comm.trim()),
                    ))
                    .or_default() += bytes;
            }
        }
    }
    let mut unattributed = Vec::new();
    for d in &devices {
        let device = d["card"].as_str().unwrap_or("?").to_owned();
        for (key, region) in [("unattributed_vram", "vram"), ("unattributed_gtt", "gtt")] {
            if let Some(bytes) = d[key].as_u64() {
                unattributed.push(GpuRow {
                    device: device.clone(),
                    region: region.into(),
                    client: String::new(),
                    bytes,
                });
            }
        }
    }
    let clients = clients
        .into_iter()
        .map(|((device, region, client), bytes)| GpuRow {
            device,
            region,
            client,
            bytes,
        })
        .collect();
    (clients, unattributed)
}

/// The session's observer: builds a snapshot every refresh, renders the metrics, and hands
/// the profiles to the push task every push interval.
pub struct Exporter {
    /// The configuration the session runs with (its tracing part is fixed for the session).
    pub settings: Arc<Settings>,
    /// The latest configuration (its export part applies at once).
    pub latest: tokio::sync::watch::Receiver<Arc<Settings>>,
    /// The metrics and their text.
    pub metrics: Arc<Mutex<super::metrics::Metrics>>,
    /// Profiles for the push task.
    pub push: tokio::sync::mpsc::Sender<super::push::Batch>,
    /// Set when the session must end (a reload changed what is traced).
    pub stop: Arc<AtomicBool>,
    /// The snapshot builder.
    pub builder: Builder,
    /// When profiles were last handed over.
    pub last_push: Option<Instant>,
}

impl Observer for Exporter {
    fn every(&self) -> Duration {
        self.settings.tracing.refresh
    }

    fn limits(&self) -> crate::model::Limits {
        self.settings.tracing.limits
    }

    fn observe(&mut self, seen: Observed<'_>) -> Upkeep {
        let export = self.latest.borrow().export.clone();
        let now_ns = super::monotonic_ns();
        let snap = self.builder.build(
            seen.model,
            seen.stacks,
            seen.symbols,
            export.top_k,
            export.min_site_bytes,
            now_ns,
        );
        let mut snap = snap;
        snap.lost_events = seen.lost_events;
        self.metrics.lock().expect("metrics lock").update(&snap);
        let push_due = self
            .last_push
            .is_none_or(|t| t.elapsed() >= export.push_interval);
        if push_due && (export.pprof_push.is_some() || export.pprof_dir.is_some()) {
            self.last_push = Some(Instant::now());
            let batch = super::push::Batch::build(seen.model, seen.stacks, seen.symbols, &export);
            // A push still under way: this interval's profiles are skipped, not queued up.
            let _ = self.push.try_send(batch);
        }
        self.builder.forget_exited(seen.model);
        Upkeep {
            forget_exited: true,
            ooms_done: self.builder.ooms_done(),
            stop: self.stop.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::Frame;
    use oomtrace_common::{AllocFn, EventKind, MemEvent};

    struct NoWalk;
    impl StackSource for NoWalk {
        fn walk(&self, _: u32) -> Option<crate::unwind::UserStack> {
            None
        }
    }

    /// Call sites 1, 2, 3 are `leaky`, `cache`, `small`.
    struct Names;
    impl SymbolSource for Names {
        fn is_code(&self, _: u32, _: u32, _: u64) -> bool {
            true
        }
        fn frame(&mut self, _: u32, _: u32, addr: u64) -> Frame {
            let name = ["?", "leaky", "cache", "small"][addr as usize];
            Frame {
                addr,
                function: Some(name.into()),
                module: Some("app".into()),
                ..Frame::default()
            }
        }
    }

    fn ev(kind: EventKind, addr: u64, size: u64, site: u64, t_s: u64) -> MemEvent {
        MemEvent {
            kind: kind as u16,
            alloc_fn: AllocFn::Malloc as u16,
            tgid: 100,
            tid: 100,
            stack_id: -1,
            ts_ns: t_s * 1_000_000_000,
            addr,
            size,
            old_addr: 0,
            call_site: site,
            aux: 0,
        }
    }

    #[test]
    fn sites_rates_top_k_and_oom_kills() {
        let mut m = Model::new();
        m.apply(&ev(EventKind::Alloc, 0x100_0000, 1 << 20, 2, 0));
        m.apply(&ev(EventKind::Alloc, 0x200_0000, 300 << 10, 3, 0));
        for t in 0..30u64 {
            // 64 KiB/s from `leaky`; `cache` holds 1 MiB throughout.
            m.apply(&ev(
                EventKind::Alloc,
                0x1000_0000 + t * 0x10_0000,
                64 << 10,
                1,
                t,
            ));
            m.apply(&ev(EventKind::Tick, 0, 0, 0, t));
        }
        let mut b = Builder::default();
        let snap = b.build(&m, &NoWalk, &mut Names, 2, 256 << 10, 30_000_000_000);
        let sites: Vec<(&str, u64, f64)> = snap
            .sites
            .iter()
            .map(|s| (s.site.as_str(), s.outstanding_bytes, s.growth_bytes_per_s))
            .collect();
        assert_eq!(sites.len(), 2, "top 2 of 3: {sites:?}");
        assert_eq!(sites[0].0, "leaky", "the growing site first: {sites:?}");
        assert_eq!(sites[0].1, 30 * (64 << 10));
        assert!((sites[0].2 - 65536.0).abs() < 655.36, "{sites:?}");
        assert_eq!(sites[1], ("cache", 1 << 20, 0.0));
        assert_eq!(snap.processes.len(), 1);
        assert!((snap.processes[0].growth_bytes_per_s - 65536.0).abs() < 655.36);
        // Below min_site_bytes: no series at all.
        let snap = b.build(&m, &NoWalk, &mut Names, 10, 3 << 19, 30_000_000_000);
        assert_eq!(
            snap.sites
                .iter()
                .map(|s| s.site.as_str())
                .collect::<Vec<_>>(),
            ["leaky"]
        );

        // An OOM kill whose name has not arrived yet waits (up to a second), then counts once.
        let mut oom = ev(EventKind::Oom, 0, 0, 0, 31);
        oom.tgid = 555;
        m.apply(&oom);
        assert!(
            b.build(&m, &NoWalk, &mut Names, 2, 0, 31_000_000_000)
                .oom_kills
                .is_empty()
        );
        let mut comm = ev(EventKind::OomComm, 0, 0, 0, 31);
        comm.tgid = 555;
        comm.pack_comm(b"victim");
        m.apply(&comm);
        assert_eq!(
            b.build(&m, &NoWalk, &mut Names, 2, 0, 31_000_000_000)
                .oom_kills,
            ["victim"]
        );
        assert!(
            b.build(&m, &NoWalk, &mut Names, 2, 0, 32_000_000_000)
                .oom_kills
                .is_empty()
        );
        assert_eq!(b.ooms_done(), 1);
    }

    #[test]
    fn gpu_clients_by_device_region_and_client_and_unattributed_memory() {
        let snap = serde_json::json!({
            "devices": [{"card": "card0", "pdev": "0000:c4:00.0", "unattributed_vram": 0,
                "unattributed_gtt": 3000}],
            "clients": [
                {"pdev": "0000:c4:00.0", "pids": [42], "comms": ["Xorg"],
                 "regions": {"gtt": {"resident": 2000}, "vram": {"resident": 100}}},
                {"pdev": "0000:c4:00.0", "pids": [42], "comms": ["Xorg"],
                 "regions": {"gtt": {"resident": 5}, "vram": {"resident": null}}}],
            "nvidia": {"devices": []}
        });
        let (clients, unattributed) = gpu_rows(&snap);
        let row = |d: &str, r: &str, c: &str, b| GpuRow {
            device: d.into(),
            region: r.into(),
            client: c.into(),
            bytes: b,
        };
        assert_eq!(
            clients,
            vec![
                row("card0", "gtt", "Xorg/42", 2005),
                row("card0", "vram", "Xorg/42", 100)
            ]
        );
        assert_eq!(
            unattributed,
            vec![row("card0", "vram", "", 0), row("card0", "gtt", "", 3000)]
        );
    }
}
