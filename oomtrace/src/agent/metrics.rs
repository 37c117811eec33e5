//! The `/metrics` families (their names are an interface: see docs/metrics.md), set from each
//! [`Snapshot`] and rendered once per refresh in the Prometheus text format (0.0.4), which
//! every scraper and `promtool check metrics` read.
//!
//! Gauges show the latest snapshot only: a process that exited, or a site that left its
//! process's top K, is gone from the next page. Counters (`_total`) only go up, across
//! sessions too (a reload that restarts tracing keeps them).

use std::sync::Arc;

use prometheus::{Counter, Gauge, GaugeVec, IntCounter, IntCounterVec, Opts, Registry};

use super::snapshot::{MAX_OOM_COMMS, Snapshot};

/// The registry, its families, and the text of the latest refresh.
pub struct Metrics {
    registry: Registry,
    process_rss: GaugeVec,
    process_heap: GaugeVec,
    process_growth: GaugeVec,
    stack_outstanding: GaugeVec,
    stack_growth: GaugeVec,
    oom_kills: IntCounterVec,
    gpu_memory: GaugeVec,
    gpu_unattributed: GaugeVec,
    lost_events: IntCounter,
    tracer_cpu: Counter,
    tracer_resident: Gauge,
    /// Comm labels of `oom_kills` so far (bounded by [`MAX_OOM_COMMS`]).
    oom_comms: std::collections::HashSet<String>,
    /// The session's lost events already counted.
    session_lost: u64,
    /// oomtrace's CPU seconds already counted.
    cpu_counted: f64,
    text: Arc<str>,
}

fn gauges(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("a valid metric definition")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family, registered and empty.
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::new(),
            process_rss: gauges(
                "oomtrace_process_rss_bytes",
                "Resident set size of the process at the last tick.",
                &["pid", "comm"],
            ),
            process_heap: gauges(
                "oomtrace_process_heap_bytes",
                "Bytes the process's stacks hold: resident bytes faulted in and not unmapped \
                 (growth mode), requested heap bytes (sample mode, estimated).",
                &["pid", "comm"],
            ),
            process_growth: gauges(
                "oomtrace_process_growth_bytes_per_second",
                "Growth rate of oomtrace_process_heap_bytes while the classifier says growing \
                 (negative: shrinking); 0 when bounded or not known yet.",
                &["pid", "comm"],
            ),
            stack_outstanding: gauges(
                "oomtrace_stack_outstanding_bytes",
                "Bytes held by the process's stacks whose allocation site is this function (top \
                 K sites per process).",
                &["pid", "comm", "site"],
            ),
            stack_growth: gauges(
                "oomtrace_stack_growth_bytes_per_second",
                "Growth rate of oomtrace_stack_outstanding_bytes: its growing stacks' rates \
                 summed (negative: shrinking); 0 when bounded or not known yet.",
                &["pid", "comm", "site"],
            ),
            oom_kills: IntCounterVec::new(
                Opts::new(
                    "oomtrace_oom_kills_total",
                    "OOM kills seen on the machine, by the victim's command name.",
                ),
                &["comm"],
            )
            .expect("a valid metric definition"),
            gpu_memory: gauges(
                "oomtrace_gpu_memory_bytes",
                "GPU memory resident for a client (COMM/PID) in a region of a device.",
                &["device", "region", "client"],
            ),
            gpu_unattributed: gauges(
                "oomtrace_gpu_unattributed_bytes",
                "GPU memory of a device region that no client accounts for (a driver leak's \
                 signature on APUs).",
                &["device", "region"],
            ),
            lost_events: IntCounter::new(
                "oomtrace_lost_events_total",
                "Events the kernel side could not deliver (full ring buffer or maps), and records \
                 that did not decode.",
            )
            .expect("a valid metric definition"),
            tracer_cpu: Counter::new(
                "oomtrace_tracer_cpu_seconds_total",
                "CPU time oomtrace itself used (user and system).",
            )
            .expect("a valid metric definition"),
            tracer_resident: Gauge::new(
                "oomtrace_tracer_resident_bytes",
                "oomtrace's own resident set size.",
            )
            .expect("a valid metric definition"),
            oom_comms: Default::default(),
            session_lost: 0,
            cpu_counted: 0.0,
            text: Arc::from(""),
        };
        for c in [
            Box::new(m.process_rss.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.process_heap.clone()),
            Box::new(m.process_growth.clone()),
            Box::new(m.stack_outstanding.clone()),
            Box::new(m.stack_growth.clone()),
            Box::new(m.oom_kills.clone()),
            Box::new(m.gpu_memory.clone()),
            Box::new(m.gpu_unattributed.clone()),
            Box::new(m.lost_events.clone()),
            Box::new(m.tracer_cpu.clone()),
            Box::new(m.tracer_resident.clone()),
        ] {
            m.registry.register(c).expect("names are unique");
        }
        m
    }

    /// A new tracing session starts: its lost events count from 0.
    pub fn begin_session(&mut self) {
        self.session_lost = 0;
    }

    /// Sets every family from `snap` (and oomtrace's own figures now), and renders the text.
    pub fn update(&mut self, snap: &Snapshot) {
        self.process_rss.reset();
        self.process_heap.reset();
        self.process_growth.reset();
        for p in &snap.processes {
            let labels = [p.pid.to_string(), p.comm.clone()];
            if let Some(rss) = p.rss_bytes {
                self.process_rss.with_label_values(&labels).set(rss as f64);
            }
            self.process_heap
                .with_label_values(&labels)
                .set(p.heap_bytes as f64);
            self.process_growth
                .with_label_values(&labels)
                .set(p.growth_bytes_per_s);
        }
        self.stack_outstanding.reset();
        self.stack_growth.reset();
        for s in &snap.sites {
            let labels = [s.pid.to_string(), s.comm.clone(), s.site.clone()];
            self.stack_outstanding
                .with_label_values(&labels)
                .set(s.outstanding_bytes as f64);
            self.stack_growth
                .with_label_values(&labels)
                .set(s.growth_bytes_per_s);
        }
        for comm in &snap.oom_kills {
            let label = if self.oom_comms.contains(comm) || self.oom_comms.len() < MAX_OOM_COMMS {
                self.oom_comms.insert(comm.clone());
                comm.as_str()
            } else {
                "other"
            };
            self.oom_kills.with_label_values(&[label]).inc();
        }
        self.gpu_memory.reset();
        for g in &snap.gpu_clients {
            self.gpu_memory
                .with_label_values(&[&g.device, &g.region, &g.client])
                .set(g.bytes as f64);
        }
        self.gpu_unattributed.reset();
        for g in &snap.gpu_unattributed {
            self.gpu_unattributed
                .with_label_values(&[&g.device, &g.region])
                .set(g.bytes as f64);
        }
        self.lost_events
            .inc_by(snap.lost_events.saturating_sub(self.session_lost));
        self.session_lost = self.session_lost.max(snap.lost_events);
        let cpu = own_cpu_seconds();
        if cpu > self.cpu_counted {
            self.tracer_cpu.inc_by(cpu - self.cpu_counted);
            self.cpu_counted = cpu;
        }
        if let Some(rss) = crate::session::selfmem::resident_bytes() {
            self.tracer_resident.set(rss as f64);
        }
        self.render();
    }

    fn render(&mut self) {
        let mut text = String::new();
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_utf8(&families, &mut text)
            .expect("the text format encodes any family");
        self.text = Arc::from(text);
    }

    /// The text of the latest refresh.
    pub fn text(&self) -> Arc<str> {
        if self.text.is_empty() {
            // Before the first refresh: the tracer's own figures at least.
            let mut text = String::new();
            let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut text);
            return Arc::from(text);
        }
        self.text.clone()
    }
}

/// oomtrace's user and system CPU seconds (`/proc/self/stat`).
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the comm (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (n(11) + n(12)) as f64 / if hz > 0 { hz as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::super::snapshot::{GpuRow, ProcessRow, SiteRow};
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            processes: vec![ProcessRow {
                pid: 42,
                comm: "redis-server".into(),
                rss_bytes: Some(1 << 20),
                heap_bytes: 4096,
                growth_bytes_per_s: 512.5,
            }],
            sites: vec![SiteRow {
                pid: 42,
                comm: "redis-server".into(),
                site: "zmalloc_usable \"quoted\"".into(),
                outstanding_bytes: 4096,
                growth_bytes_per_s: 512.5,
            }],
            oom_kills: vec!["hog".into(), "hog".into()],
            gpu_clients: vec![GpuRow {
                device: "card0".into(),
                region: "gtt".into(),
                client: "Xorg/7".into(),
                bytes: 2005,
            }],
            gpu_unattributed: vec![],
            lost_events: 3,
        }
    }

    #[test]
    fn families_carry_their_documented_names_and_labels() {
        let mut m = Metrics::new();
        m.update(&snapshot());
        let text = m.text();
        for line in [
            "oomtrace_process_rss_bytes{comm=\"redis-server\",pid=\"42\"} 1048576",
            "oomtrace_process_heap_bytes{comm=\"redis-server\",pid=\"42\"} 4096",
            "oomtrace_process_growth_bytes_per_second{comm=\"redis-server\",pid=\"42\"} 512.5",
            "oomtrace_stack_outstanding_bytes{comm=\"redis-server\",pid=\"42\",site=\"zmalloc_usable \\\"quoted\\\"\"} 4096",
            "oomtrace_stack_growth_bytes_per_second{comm=\"redis-server\",pid=\"42\",site=\"zmalloc_usable \\\"quoted\\\"\"} 512.5",
            "oomtrace_oom_kills_total{comm=\"hog\"} 2",
            "oomtrace_gpu_memory_bytes{client=\"Xorg/7\",device=\"card0\",region=\"gtt\"} 2005",
            "oomtrace_lost_events_total 3",
            "# TYPE oomtrace_tracer_cpu_seconds_total counter",
            "# TYPE oomtrace_tracer_resident_bytes gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
    }

    #[test]
    fn gauges_follow_the_latest_snapshot_and_counters_only_grow() {
        let mut m = Metrics::new();
        m.update(&snapshot());
        let mut next = snapshot();
        next.processes.clear();
        next.sites.clear();
        next.oom_kills = vec!["other-victim".into()];
        next.lost_events = 5;
        m.update(&next);
        let text = m.text();
        assert!(!text.contains("oomtrace_process_heap_bytes{"), "{text}");
        assert!(
            !text.contains("oomtrace_stack_outstanding_bytes{"),
            "{text}"
        );
        assert!(text.contains("oomtrace_oom_kills_total{comm=\"hog\"} 2"));
        assert!(text.contains("oomtrace_oom_kills_total{comm=\"other-victim\"} 1"));
        assert!(text.contains("oomtrace_lost_events_total 5"), "{text}");
        // A new session counts its own losses from 0 on top of the earlier ones.
        m.begin_session();
        next.lost_events = 2;
        m.update(&next);
        assert!(m.text().contains("oomtrace_lost_events_total 7"));
    }

    #[test]
    fn oom_comm_labels_are_bounded() {
        let mut m = Metrics::new();
        let mut snap = Snapshot {
            oom_kills: (0..MAX_OOM_COMMS + 5).map(|i| format!("c{i}")).collect(),
            ..Snapshot::default()
        };
        m.update(&snap);
        snap.oom_kills = vec!["c0".into()];
        m.update(&snap);
        let text = m.text();
        assert!(
            text.contains("oomtrace_oom_kills_total{comm=\"other\"} 5"),
            "{text}"
        );
        assert!(text.contains("oomtrace_oom_kills_total{comm=\"c0\"} 2"));
    }
}
