//! The kernel side's share of `--mode`: its config words, the sampling table, and the
//! tracepoints that only growth mode attaches.

use anyhow::{Context as _, Result};
use aya::Ebpf;
use aya::maps::Array;
use oomtrace_common::ConfigKey;

use crate::mode::{Mode, exp_table};

/// (raw tracepoint, program) attached in growth mode only.
pub const GROWTH_RAW_TRACEPOINTS: &[(&str, &str)] = &[
    ("page_fault_user", "page_fault"),
    ("page_fault_kernel", "page_fault"),
];

/// (syscall tracepoint, program) attached in growth mode only.
pub const GROWTH_SYSCALL_TRACEPOINTS: &[(&str, &str)] = &[("sys_enter_madvise", "madvise_enter")];

/// Writes the mode's config words and, in sample mode, the exponential quantile table.
pub fn configure(ebpf: &mut Ebpf, mode: Mode) -> Result<()> {
    let map = ebpf
        .map_mut("CONFIG")
        .context("eBPF object has no map CONFIG")?;
    let mut config: Array<_, u64> = Array::try_from(map)?;
    config.set(ConfigKey::Mode as u32, mode.config_word(), 0)?;
    let Some(rate) = mode.sample_rate() else {
        return Ok(());
    };
    config.set(ConfigKey::SampleRate as u32, rate, 0)?;
    let map = ebpf
        .map_mut("EXP_TABLE")
        .context("eBPF object has no map EXP_TABLE")?;
    let mut table: Array<_, u64> = Array::try_from(map)?;
    for (i, v) in exp_table(rate).into_iter().enumerate() {
        table
            .set(i as u32, v, 0)
            .context("cannot fill the sampling table")?;
    }
    Ok(())
}
