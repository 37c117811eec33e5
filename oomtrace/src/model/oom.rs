//! OOM kills: every victim the kernel chose while oomtrace ran, with the victim's own top stacks
//! at that moment when oomtrace was tracing it.

use oomtrace_common::MemEvent;

use super::{Counts, Process, StackKey};

/// OOM events kept; later ones are counted in `Model::counters.ooms_dropped`.
pub const MAX_OOM_EVENTS: usize = 1024;
/// Stacks snapshotted per victim.
pub const TOP_STACKS: usize = 10;

/// One OOM kill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomEvent {
    /// When (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    /// The victim.
    pub pid: u32,
    /// The process whose allocation triggered the kill.
    pub trigger_pid: u32,
    /// The victim's command name.
    pub comm: String,
    /// The victim's uid.
    pub uid: u32,
    /// The victim's `oom_score_adj`.
    pub oom_score_adj: i16,
    /// Virtual size, bytes.
    pub total_vm_bytes: u64,
    /// Anonymous RSS, bytes.
    pub anon_rss_bytes: u64,
    /// File-backed RSS, bytes.
    pub file_rss_bytes: u64,
    /// Shared-memory RSS, bytes.
    pub shmem_rss_bytes: u64,
    /// The victim's memory cgroup, when it could be read.
    pub cgroup: Option<String>,
    /// The victim's largest stacks at the kill (only if oomtrace traced it).
    pub top_stacks: Vec<(StackKey, Counts)>,
}

impl OomEvent {
    /// From an `Oom` event, with the victim's stacks if it is a traced process.
    pub fn new(ev: &MemEvent, victim: Option<&Process>) -> Self {
        let kib = |v: u64| v.saturating_mul(1024);
        // What is resident made the kill: a direct mapping ranks by its resident bytes.
        let mut held: Vec<(StackKey, Counts, u64)> = victim
            .map(|p| {
                p.stacks
                    .iter()
                    .filter(|s| s.held_bytes() > 0)
                    .map(|s| (s.key, s.counts, s.held_bytes()))
                    .collect()
            })
            .unwrap_or_default();
        held.sort_by_key(|s| std::cmp::Reverse(s.2));
        held.truncate(TOP_STACKS);
        let top_stacks = held.into_iter().map(|(k, c, _)| (k, c)).collect();
        Self {
            ts_ns: ev.ts_ns,
            pid: ev.tgid,
            trigger_pid: ev.tid,
            comm: victim.map(|p| p.comm.clone()).unwrap_or_default(),
            uid: ev.aux as u32,
            oom_score_adj: (ev.aux >> 32) as u16 as i16,
            total_vm_bytes: kib(ev.addr),
            anon_rss_bytes: kib(ev.size),
            file_rss_bytes: kib(ev.old_addr),
            shmem_rss_bytes: kib(ev.call_site),
            cgroup: None,
            top_stacks,
        }
    }
}
