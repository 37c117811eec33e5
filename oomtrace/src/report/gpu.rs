//! The report's `gpu` object: the latest GPU snapshot (the same fields as `oomtrace gpu`) plus
//! every followed figure's growth over the traced time.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::gpu::{GpuSeriesSummary, GpuTimeline};
use crate::model::growth::GrowthConfig;

/// `gpu` in the report.
#[derive(Clone, Debug, Serialize)]
pub struct GpuReport {
    /// The latest snapshot's keys: `schema`, `devices`, `clients`, `dmabufs`, `kfd`, `meminfo`,
    /// `nvidia`, `warnings`, exactly as `oomtrace gpu --format json` prints them.
    #[serde(flatten)]
    pub latest: Map<String, Value>,
    /// Snapshots taken while tracing (one per sampling tick).
    pub samples: u64,
    /// Each device counter, NVIDIA device and traced process over time, growing ones first.
    pub series: Vec<GpuSeriesSummary>,
}

impl GpuReport {
    /// The report of `gpu`; `None` when no snapshot was taken.
    pub fn build(gpu: &GpuTimeline) -> Option<Self> {
        let latest = gpu.latest()?.as_object()?.clone();
        Some(Self {
            latest,
            samples: gpu.samples,
            series: gpu.summaries(&GrowthConfig::default()),
        })
    }

    /// The text section: one line per followed figure, or why there is none.
    pub fn render(
        &self,
        out: &mut String,
        growth_word: impl Fn(&crate::model::growth::Growth) -> String,
    ) {
        let _ = writeln!(out, "\nGPU memory ({} sample(s)):", self.samples);
        if self.series.is_empty() {
            let _ = writeln!(
                out,
                "  no DRM devices or GPU clients of traced processes found"
            );
        }
        for s in &self.series {
            let _ = writeln!(
                out,
                "  {:<28} {:>12}  peak {:>12}  {}",
                s.name,
                super::human_bytes(s.latest_bytes),
                super::human_bytes(s.peak_bytes),
                growth_word(&s.growth)
            );
        }
        let nvidia = &self.latest["nvidia"];
        if nvidia["available"] == false
            && let Some(why) = nvidia["notice"].as_str()
        {
            let _ = writeln!(out, "  {why}");
        }
    }
}
