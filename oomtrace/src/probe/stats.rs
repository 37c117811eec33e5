//! The kernel's run-time statistics of oomtrace's own programs (`BPF_ENABLE_STATS`).
//!
//! While the descriptor from [`enable`] is open the kernel times every BPF program run on the
//! machine (two clock reads per run) and counts runs; closing it turns that off again, so
//! nothing is left flipped if oomtrace dies. The time covers the program only: the uprobe trap
//! and the uretprobe trampoline around it are invisible to it.

use std::os::fd::{AsFd as _, OwnedFd};

use aya::sys::{Stats, enable_stats};

use super::Probes;

/// Turns on run-time statistics for as long as the returned descriptor lives.
pub fn enable() -> Result<OwnedFd, String> {
    enable_stats(Stats::RunTime).map_err(|e| format!("BPF run-time statistics unavailable: {e}"))
}

/// One loaded program's runs and time, as the kernel counted them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramRuns {
    /// The program's name in the eBPF object (`malloc_enter`, `alloc_return`, …).
    pub name: String,
    /// Runs counted while statistics were on.
    pub runs: u64,
    /// Nanoseconds spent in those runs.
    pub run_time_ns: u64,
    /// Instructions the verifier went through to accept it (its limit is a million).
    pub verified_insns: Option<u32>,
}

impl Probes {
    /// Runs and time of every loaded program, by name.
    pub fn program_runs(&self) -> Vec<ProgramRuns> {
        let mut runs: Vec<ProgramRuns> = self
            .ebpf
            .programs()
            .filter_map(|(name, prog)| {
                let info = prog.info().ok()?;
                Some(ProgramRuns {
                    name: name.to_owned(),
                    runs: info.run_count(),
                    run_time_ns: info.run_time().as_nanos() as u64,
                    verified_insns: info.verified_instruction_count(),
                })
            })
            .collect();
        // The allocator programs loaded for multi-uprobe links are copies aya does not know.
        if let Some(a) = &self.attacher {
            let p = a.programs();
            for (name, fd) in [&p.enter, &p.ret] {
                let Ok(stats) = super::sys::prog_stats(fd.as_fd()) else {
                    continue;
                };
                if let Some(r) = runs.iter_mut().find(|r| r.name == *name) {
                    // The perf fallback uses aya's own copy: the same program, counted once.
                    r.runs = stats.runs;
                    r.run_time_ns = stats.run_time_ns;
                    r.verified_insns = Some(stats.verified_insns);
                } else {
                    runs.push(ProgramRuns {
                        name: (*name).to_owned(),
                        runs: stats.runs,
                        run_time_ns: stats.run_time_ns,
                        verified_insns: Some(stats.verified_insns),
                    });
                }
            }
        }
        runs
    }
}

/// Whether `program` is an allocator entry program (one run per allocator call). The
/// uprobe-session programs count here: they also run at the return of the calls that ask for
/// it (sampled ones only, a small fraction), so their runs slightly overstate the calls.
pub fn is_allocator_entry(program: &str) -> bool {
    matches!(
        program,
        "floor_enter" | "alloc_enter" | "alloc_session" | "floor_session"
    )
}

/// Whether `program` is the allocator return program.
pub fn is_allocator_return(program: &str) -> bool {
    program == "alloc_return" || program == "floor_return"
}
