//! A process's own growth and mapped regions in the text report: its heap, RSS, threads and
//! descriptors with each verdict in its own unit, and reserved vs resident address space.

use std::fmt::Write as _;

use super::{ProcessReport, human_bytes};
use crate::model::growth::{Growth, GrowthClass};
use crate::model::process::RegionTotals;
use crate::model::timeline::ProcGrowth;

/// A verdict with its rate in `unit`: `▲ growing 3.3 threads/s`.
pub fn verdict(g: &Growth, unit: &str) -> String {
    let rate = |v: f64| match unit {
        "bytes" => format!("{}/s", human_bytes(v.abs() as u64)),
        other => format!("{:.1} {other}/s", v.abs()),
    };
    match g.class {
        GrowthClass::Growing => format!("▲ growing {}", rate(g.bytes_per_s)),
        GrowthClass::Shrinking => format!("▼ shrinking {}", rate(g.bytes_per_s)),
        GrowthClass::Bounded => "■ bounded".to_owned(),
        GrowthClass::Unknown => "· unknown".to_owned(),
    }
}

/// A process's four verdicts, each with its label and unit: `("threads", g.threads, "threads")`.
pub fn parts(g: &ProcGrowth) -> [(&'static str, &Growth, &'static str); 4] {
    [
        ("heap", &g.heap, "bytes"),
        ("RSS", &g.rss, "bytes"),
        ("threads", &g.threads, "threads"),
        ("fds", &g.fds, "fds"),
    ]
}

/// The growth line of one process.
pub fn growth_line(p: &ProcessReport) -> String {
    let verdicts: Vec<String> = parts(&p.growth)
        .iter()
        .map(|(label, g, unit)| format!("{label} {}", verdict(g, unit)))
        .collect();
    format!("  pid {} ({}): {}", p.pid, p.comm, verdicts.join(" · "))
}

fn region(what: &str, r: &RegionTotals, noun: &str) -> Option<String> {
    if r.count == 0 && r.reserved_bytes == 0 {
        return None;
    }
    let resident = r
        .resident_bytes
        .map_or_else(|| "not sampled".to_owned(), human_bytes);
    Some(format!(
        "{what}: {} {noun}, {} reserved, {resident} resident",
        r.count,
        human_bytes(r.reserved_bytes)
    ))
}

/// The mapped-regions line of one process, if it maps anything.
pub fn mapped_line(p: &ProcessReport) -> Option<String> {
    let m = &p.mapped;
    let parts: Vec<String> = [
        region("direct mappings", &m.direct, "mapping(s)"),
        region("thread stacks", &m.thread_stacks, "thread(s)"),
        region("reservations", &m.reservations, "region(s)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| format!("  pid {} ({}): {}", p.pid, p.comm, parts.join("; ")))
}

/// Appends the growth lines of every process, then the mapped regions of those that map any.
pub fn render_text(s: &mut String, processes: &[ProcessReport]) {
    if processes.is_empty() {
        return;
    }
    let _ = writeln!(s, "\nGrowth of each process:");
    for p in processes {
        let _ = writeln!(s, "{}", growth_line(p));
    }
    let mapped: Vec<String> = processes.iter().filter_map(mapped_line).collect();
    if !mapped.is_empty() {
        let _ = writeln!(
            s,
            "\nMapped regions (reserved address space vs resident memory):"
        );
        for line in mapped {
            let _ = writeln!(s, "{line}");
        }
    }
}
