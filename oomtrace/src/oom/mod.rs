//! Memory-capped runs and CI memory budgets: what `oomtrace run --memory-max`, `--artifacts`
//! and `--budget` need besides the tracer itself.
//!
//! - [`sizes`]: `64M`, `2G`, `512MiB` (binary units) and `80%` on the command line.
//! - [`cgroup`]: a fresh `oomtrace-<pid>-<n>` memory cgroup with the limit (v2, else v1) that
//!   CMD joins before exec, and that is removed whatever happens.
//! - [`sampler`]: RSS, threads and descriptors of the process tree from `/proc`.
//! - [`artifacts`]: `memory_log.csv`, `summary.json`, `oom_events.json`, `report.json`,
//!   `kernel_log.txt`.
//! - [`kmsg`]: the kernel's OOM report lines from `/dev/kmsg`.
//! - [`budget`]: the peak against `--budget`, and the exit status that follows.
//!
//! The run loop that ties them together (in the session) goes:
//!
//! ```text
//! let cg = memory_max.map(MemoryCgroup::create).transpose()?;   // before the fork
//! let kernel = KernelLog::open();                               // before CMD starts
//! let held = launch::spawn_held(..)?;  cg.add_pid(held.pid)?;  held.release(..)?;
//! every 0.2 s: rss_of_pids(&cg.pids() or process_tree(pid)), cg.usage_bytes(),
//!              log.push(&Row { .. }), kernel.read_new(), cg.oom_kills()
//! after:  write_json(dir, SUMMARY, &Summary { .. }), write_text(dir, KERNEL_LOG, ..),
//!         evaluate(peak_heap, peak_rss, budget, warn_at) → exit status
//! ```

pub mod artifacts;
pub mod budget;
pub mod cgroup;
pub mod finish;
pub mod kmsg;
pub mod sampler;
pub mod sizes;
pub mod watch;
