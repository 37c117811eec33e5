//! Process lifecycle: fork (followed children join the traced set before they first run),
//! exec (a new image), exit (the last thread), and how it ended (exit code or fatal signal).
//!
//! Raw tracepoints: attaching and detaching them costs microseconds, where a perf tracepoint
//! costs a grace period each way (about 70 ms here). Their arguments are bare pointers: the
//! fields read from them sit at offsets the user side finds in the kernel's BTF.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::raw_tracepoint, programs::RawTracePointContext,
};
use oomtrace_common::{ConfigKey, DropReason, EventKind, MemEvent, SIGNAL_FROM_KERNEL};

use crate::{THREADS, TRACED, config, count_drop, emit, emit_with, event, ids, traced};

/// Runs in the parent before the child is first scheduled, so a followed child is traced
/// from its very first instruction. Raw tracepoint: `(parent, child)` task pointers; the child's
/// thread group id is read at the offset the user side found in the kernel's BTF.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn process_fork(ctx: RawTracePointContext) -> i32 {
    let (tgid, tid) = ids();
    if !traced(tgid) {
        return 0;
    }
    let child_task: u64 = ctx.arg(1);
    let offset = config(ConfigKey::TaskTgidOffset);
    // SAFETY: a kernel pointer the tracepoint passed, read through the helper.
    let Ok(child) = (unsafe { bpf_probe_read_kernel((child_task + offset) as *const i32) }) else {
        return 0;
    };
    let child = child as u32;
    if child == tgid {
        // A new thread of the same process.
        return 0;
    }
    // The child starts with its parent's layout: it unwinds with the parent's mappings until
    // the user side publishes its own.
    crate::unwind::inherit(tgid, child);
    crate::python::inherit(tgid, child);
    let mut ev = event(EventKind::Fork, tgid, tid);
    ev.aux = child as u64;
    if config(ConfigKey::TraceAll) == 0 {
        if config(ConfigKey::FollowForks) == 0 {
            // Not followed: the user side must still disarm what the child inherited.
            ev.kind = EventKind::Unfollowed as u16;
        } else if TRACED.insert(child, 1, 0).is_err() {
            count_drop(DropReason::TracedFull);
        }
    }
    // At once: the child runs uncounted until the user side has attached its probes (unless
    // `run` holds it).
    emit_with(&ev, true);
    0
}

/// Packs the task's comm into `addr` and `size` (16 bytes, little-endian).
#[inline(always)]
fn with_comm(mut ev: MemEvent) -> MemEvent {
    if let Ok(comm) = aya_ebpf::helpers::bpf_get_current_comm() {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&comm[..8]);
        hi.copy_from_slice(&comm[8..16]);
        ev.addr = u64::from_le_bytes(lo);
        ev.size = u64::from_le_bytes(hi);
    }
    ev
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn process_exec(_ctx: RawTracePointContext) -> i32 {
    let (tgid, tid) = ids();
    if traced(tgid) {
        // The old image's open calls died with it, and its next allocation is a first again.
        let _ = THREADS.remove(tid);
        // The old layout is gone: no walk may use its mappings.
        crate::unwind::forget(tgid);
        crate::python::forget(tgid);
        // Woken at once: a held process waits for the session to publish its new image's
        // tables, and a short one may end within the next tick.
        emit_with(&with_comm(event(EventKind::Exec, tgid, tid)), true);
    }
    0
}

/// Raw tracepoint: `(task, group_dead)`.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn process_exit(ctx: RawTracePointContext) -> i32 {
    let (tgid, tid) = ids();
    let _ = THREADS.remove(tid);
    if !traced(tgid) {
        return 0;
    }
    let group_dead: u64 = ctx.arg(1);
    if group_dead & 0xff != 0 {
        // The exit status word, as wait() sees it: a normal exit carries its code (what
        // exit_group() was given); a fatal signal is reported by signal_deliver.
        let task: u64 = ctx.arg(0);
        let status = kernel_u64(task, config(ConfigKey::TaskExitCode)) as u32;
        if status & 0x7f == 0 {
            let mut ev = event(EventKind::ExitGroup, tgid, tid);
            ev.aux = u64::from((status >> 8) & 0xff);
            emit(&ev);
        } else {
            // The signal that ended it. Delivery saw SIGKILL: the kernel turns a fatal signal
            // into SIGKILL for every thread of the group, but keeps the original here.
            let mut ev = event(EventKind::Signal, tgid, tid);
            ev.aux = u64::from(status & 0x7f);
            emit(&ev);
        }
        emit_with(&with_comm(event(EventKind::Exit, tgid, tid)), true);
        let _ = TRACED.remove(tgid);
        crate::unwind::forget(tgid);
        crate::python::forget(tgid);
    }
    0
}

/// `SEND_SIG_PRIV`: the `info` the kernel passes for signals it sends itself (the OOM killer).
const SEND_SIG_PRIV: u64 = 1;
/// `si_code` values of signals a process sent: `SI_USER` (kill), `SI_QUEUE`, `SI_TKILL`.
const SI_USER: i32 = 0;
const SI_QUEUE: i32 = -1;
const SI_TKILL: i32 = -6;

/// Who sends a signal to a traced process: runs in the sender's context. Raw tracepoint
/// `(sig, info, task, group, result)`; the sender is the current task unless the kernel sent it
/// (`info` is `SEND_SIG_PRIV`, or its `si_code` says a fault or the kernel).
#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn signal_generate(ctx: RawTracePointContext) -> i32 {
    let task: u64 = ctx.arg(2);
    let target = kernel_u64(task, config(ConfigKey::TaskTgidOffset)) as u32;
    if !traced(target) {
        return 0;
    }
    let sig: u64 = ctx.arg(0);
    let info: u64 = ctx.arg(1);
    let from_kernel = if info <= SEND_SIG_PRIV {
        info == SEND_SIG_PRIV
    } else {
        // SAFETY: a kernel pointer the tracepoint passed, read through the helper.
        let code = unsafe { bpf_probe_read_kernel((info + 8) as *const i32).unwrap_or(SI_USER) };
        !matches!(code, SI_USER | SI_QUEUE | SI_TKILL)
    };
    let (sender, sender_tid) = ids();
    let mut ev = event(EventKind::SignalSent, target, sender_tid);
    ev.aux = (sig & 0xff) | if from_kernel { SIGNAL_FROM_KERNEL } else { 0 };
    if !from_kernel {
        ev.addr = u64::from(sender);
        ev.size = aya_ebpf::helpers::bpf_get_current_uid_gid() & 0xffff_ffff;
        let comm = with_comm(event(EventKind::SignalSent, 0, 0));
        ev.old_addr = comm.addr;
        ev.call_site = comm.size;
    }
    emit(&ev);
    0
}

/// A kernel word at `base + offset` (0 when it cannot be read).
#[inline(always)]
fn kernel_u64(base: u64, offset: u64) -> u64 {
    // SAFETY: kernel memory read through the helper; a bad address just fails.
    unsafe { bpf_probe_read_kernel((base + offset) as *const u64).unwrap_or(0) }
}

/// Every OOM kill on the machine, traced or not: the victim's size as the killer saw it.
/// Raw tracepoint `(task, uid)`: the victim's fields are read at the offsets the user side found
/// in the kernel's BTF, computed as the kernel's own `mark_victim` record computes them (pages
/// counted in the mm's rss counters, shown in KiB).
#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn oom_mark_victim(ctx: RawTracePointContext) -> i32 {
    let (tgid, _) = ids();
    let task: u64 = ctx.arg(0);
    let uid: u64 = ctx.arg(1);
    let victim = kernel_u64(task, config(ConfigKey::TaskTgidOffset)) as u32;
    let mm = kernel_u64(task, config(ConfigKey::TaskMm));
    let signal = kernel_u64(task, config(ConfigKey::TaskSignal));
    let counters = mm + config(ConfigKey::MmRssStat);
    let counter_size = config(ConfigKey::CounterSize);
    let count = config(ConfigKey::CounterCount);
    // percpu_counter_read_positive(): the counter's count, never below 0, in pages.
    let rss_kib = |i: u64| {
        let pages = kernel_u64(counters + i * counter_size, count) as i64;
        (pages.max(0) as u64) << 2
    };
    let mut ev = event(EventKind::Oom, victim, tgid);
    ev.addr = kernel_u64(mm, config(ConfigKey::MmTotalVm)) << 2;
    // MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES.
    ev.size = rss_kib(1);
    ev.old_addr = rss_kib(0);
    ev.call_site = rss_kib(3);
    let adj = kernel_u64(signal, config(ConfigKey::SignalOomScoreAdj)) as u16;
    ev.aux = (uid & 0xffff_ffff) | (u64::from(adj) << 32);
    emit_with(&ev, true);
    let mut comm = event(EventKind::OomComm, victim, tgid);
    let mut raw = [0u8; 16];
    // SAFETY: kernel memory; the helper bounds the read and stops at NUL.
    unsafe {
        let src = (task + config(ConfigKey::TaskComm)) as *const u8;
        let _ = aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(src, &mut raw);
    }
    let (lo, hi) = raw.split_at(8);
    let mut l = [0u8; 8];
    let mut h = [0u8; 8];
    l.copy_from_slice(lo);
    h.copy_from_slice(hi);
    comm.addr = u64::from_le_bytes(l);
    comm.size = u64::from_le_bytes(h);
    emit_with(&comm, true);
    0
}
