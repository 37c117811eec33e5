//! Fixed snapshots for the tests of the app and the views, and a helper that draws a screen
//! into a `TestBackend` and returns it as text.

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;

use super::app::App;
use super::snapshot::{
    FrameRow, GpuClientRow, GpuDeviceRow, GpuPane, Header, OomRow, ProcessRow, Snapshot, StackRow,
    Target,
};
use crate::model::growth::{Growth, GrowthClass};
use crate::model::hist::{LifetimeSummary, SizeSummary};
use crate::model::timeline::ProcGrowth;

/// KiB, MiB, GiB.
pub const KIB: u64 = 1024;
/// One MiB.
pub const MIB: u64 = 1024 * KIB;
/// One GiB.
pub const GIB: u64 = 1024 * MIB;

/// A growth verdict of `class` at `rate` bytes/s.
pub fn growth(class: GrowthClass, rate: f64) -> Growth {
    Growth {
        class,
        bytes_per_s: rate,
        confidence: 0.9,
        growing_for_s: (class == GrowthClass::Growing).then_some(130.0),
    }
}

/// A stack with one frame per name in `frames` (the first is the allocation site).
pub fn stack(key: u64, frames: &[(&str, &str)], bytes: u64, growth: Growth) -> StackRow {
    let rows: Vec<FrameRow> = frames
        .iter()
        .map(|(f, loc)| FrameRow {
            function: f.to_string(),
            location: Some(loc.to_string()),
            module: Some("demo".to_string()),
        })
        .collect();
    StackRow {
        key,
        pid: 1234,
        function: frames[0].0.to_string(),
        location: Some(frames[0].1.to_string()),
        module: Some("demo".to_string()),
        outstanding_bytes: bytes,
        outstanding_allocs: bytes / 4096,
        growth,
        alloc_rate: key as f64 * 10.0,
        sizes: Some(SizeSummary {
            p50: 4096,
            p90: 4096,
            p99: 64 * KIB,
            max: MIB,
        }),
        lifetime: None,
        frames: rows,
        history: (0..60).map(|i| (i as f64, bytes * i / 59)).collect(),
    }
}

/// Nothing seen yet: no stacks, no history, no GPU.
pub fn empty() -> Snapshot {
    Snapshot {
        target: Target {
            label: "pid 1234 (demo)".to_string(),
            uptime_s: 2.0,
            exited: None,
        },
        gpu: GpuPane::Absent("GPU: no DRM devices found".to_string()),
        ..Snapshot::default()
    }
}

/// A leak (growing 640 KiB/s), a bounded cache, a shrinking buffer and an unknown.
pub fn busy() -> Snapshot {
    let stacks = vec![
        stack(
            1,
            &[
                ("remember_session", "demo.c:20"),
                ("handle_request", "demo.c:29"),
                ("main", "demo.c:37"),
            ],
            8 * MIB,
            growth(GrowthClass::Growing, 640.0 * KIB as f64),
        ),
        stack(
            2,
            &[("cache_fill", "cache.c:88"), ("main", "demo.c:40")],
            3 * MIB,
            growth(GrowthClass::Bounded, 10.0),
        ),
        stack(
            3,
            &[("parse_request", "http.c:140")],
            512 * KIB,
            growth(GrowthClass::Shrinking, -12.0 * KIB as f64),
        ),
        StackRow {
            key: 4,
            pid: 1234,
            function: "0x7f12aa00".to_string(),
            outstanding_bytes: 4 * KIB,
            outstanding_allocs: 1,
            growth: Growth::unknown(),
            alloc_rate: 0.5,
            ..StackRow::default()
        },
    ];
    let history = (0..120u32)
        .map(|i| {
            let t = f64::from(i);
            (
                t,
                64 * MIB + u64::from(i) * 100 * KIB,
                u64::from(i) * 96 * KIB,
            )
        })
        .collect();
    Snapshot {
        target: Target {
            label: "pid 1234 (demo)".to_string(),
            uptime_s: 125.0,
            exited: None,
        },
        header: Header {
            rss_bytes: Some(76 * MIB),
            heap_bytes: 11 * MIB + 516 * KIB,
            history,
            events_per_s: 12_345.0,
            lost_events: 0,
            tracer_cpu_pct: 1.5,
            tracer_rss_bytes: 34 * MIB,
            limit_bytes: Some(512 * MIB),
            notices: Vec::new(),
            bpf_ns_per_call: None,
        },
        stacks,
        processes: Vec::new(),
        ooms: Vec::new(),
        gpu: apu(),
        all_mode: false,
    }
}

/// `busy()` in `--all` mode: two processes, stacks from both.
pub fn all_mode() -> Snapshot {
    let mut snap = busy();
    snap.all_mode = true;
    snap.target.label = "all processes".to_string();
    snap.stacks[1].pid = 77;
    snap.processes = vec![
        ProcessRow {
            pid: 1234,
            comm: "demo".to_string(),
            outstanding_bytes: 8 * MIB + 516 * KIB,
            outstanding_allocs: 2100,
            growth: growth(GrowthClass::Growing, 640.0 * KIB as f64),
            vitals: ProcGrowth {
                heap: growth(GrowthClass::Growing, 640.0 * KIB as f64),
                rss: growth(GrowthClass::Growing, 512.0 * KIB as f64),
                threads: growth(GrowthClass::Growing, 3.0),
                fds: growth(GrowthClass::Bounded, 0.0),
            },
            exited: None,
        },
        ProcessRow {
            pid: 77,
            comm: "cache-daemon".to_string(),
            outstanding_bytes: 3 * MIB,
            outstanding_allocs: 768,
            growth: growth(GrowthClass::Bounded, 0.0),
            exited: Some("exited (status 0)".to_string()),
            ..ProcessRow::default()
        },
    ];
    snap
}

/// An OOM kill of pid 4321.
pub fn oom() -> OomRow {
    OomRow {
        time_s: 95.5,
        pid: 4321,
        comm: "hog".to_string(),
        anon_rss_bytes: 250 * MIB,
        cgroup: Some("/sys/fs/cgroup/oomtest".to_string()),
        top_function: Some("grow_forever".to_string()),
    }
}

/// An APU (amdgpu, small VRAM carve-out) with 1.5 GiB of GTT no client holds.
pub fn apu() -> GpuPane {
    GpuPane::Devices {
        devices: vec![GpuDeviceRow {
            card: "card0".to_string(),
            driver: Some("amdgpu".to_string()),
            pdev: Some("0000:c3:00.0".to_string()),
            vram_used: Some(100 * MIB),
            vram_total: Some(512 * MIB),
            gtt_used: Some(2 * GIB + 512 * MIB),
            gtt_total: Some(16 * GIB),
            unattributed_vram: Some(0),
            unattributed_gtt: Some(GIB + 512 * MIB),
        }],
        clients: vec![GpuClientRow {
            device: "card0".to_string(),
            driver: "amdgpu".to_string(),
            pids: vec![4321],
            comms: vec!["firefox".to_string()],
            resident: vec![("vram".to_string(), 90 * MIB), ("gtt".to_string(), GIB)],
        }],
    }
}

/// Lifetimes for the detail view.
pub fn lifetime() -> LifetimeSummary {
    LifetimeSummary {
        p50: 1500,
        p99: 12_000,
    }
}

/// Draws the whole screen at `width` x `height`.
pub fn screen(app: &App, snap: &Snapshot, width: u16, height: u16) -> Buffer {
    let mut terminal = match Terminal::new(TestBackend::new(width, height)) {
        Ok(t) => t,
        Err(e) => panic!("test terminal: {e}"),
    };
    if let Err(e) = terminal.draw(|f| super::view::draw(f, app, snap)) {
        panic!("draw: {e}");
    }
    terminal.backend().buffer().clone()
}

/// The rows of `buf` as text, trailing spaces removed.
pub fn lines(buf: &Buffer) -> Vec<String> {
    let area = buf.area;
    (0..area.height)
        .map(|y| {
            let row: String = (0..area.width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect();
            row.trim_end().to_string()
        })
        .collect()
}

/// The screen as one string, for failure messages.
pub fn text(buf: &Buffer) -> String {
    lines(buf).join("\n")
}
