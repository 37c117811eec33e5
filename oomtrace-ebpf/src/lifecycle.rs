//! Process lifecycle: fork (followed children join the traced set before they first run),
//! exec (a new image), exit (the last thread), and how it ended (exit code or fatal signal).
//!
//! Raw tracepoints: attaching and detaching them costs microseconds, where a perf tracepoint
//! costs a grace period each way (about 70 ms here). The OOM killer's stays a perf tracepoint:
//! its record carries the victim's sizes, computed by the kernel.

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_probe_read_kernel,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use oomtrace_common::{ConfigKey, DropReason, EventKind, MemEvent};

use crate::syscalls::tp;
use crate::{
    SEEN, SEEN_BIT, THREADS, TRACED, config, count_drop, emit, emit_with, event, ids, traced,
};

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
        let _ = SEEN.remove(tgid);
        if let Some(flags) = TRACED.get_ptr_mut(tgid) {
            // SAFETY: pointer into the map value, valid for this program run.
            unsafe { *flags &= !SEEN_BIT };
        }
        // The old layout is gone: no walk may use its mappings.
        crate::unwind::forget(tgid);
        emit(&with_comm(event(EventKind::Exec, tgid, tid)));
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
        emit_with(&with_comm(event(EventKind::Exit, tgid, tid)), true);
        let _ = TRACED.remove(tgid);
        let _ = SEEN.remove(tgid);
        crate::unwind::forget(tgid);
    }
    0
}

/// `exit_group(code)` entered (from `dispatch.rs`).
#[inline(always)]
pub fn exit_group_enter(code: u64) {
    let (tgid, tid) = ids();
    if traced(tgid) {
        let mut ev = event(EventKind::ExitGroup, tgid, tid);
        ev.aux = code & 0xffff_ffff;
        emit(&ev);
    }
}

/// Raw tracepoint: `(sig, info, ka)`; the handler is the first word of `*ka`.
#[raw_tracepoint(tracepoint = "signal_deliver")]
pub fn signal_deliver(ctx: RawTracePointContext) -> i32 {
    let (tgid, tid) = ids();
    if traced(tgid) {
        let ka: u64 = ctx.arg(2);
        // SAFETY: a kernel pointer the tracepoint passed, read through the helper.
        let handler = unsafe { bpf_probe_read_kernel(ka as *const u64).unwrap_or(1) };
        if handler == 0 {
            let sig: u64 = ctx.arg(0);
            let mut ev = event(EventKind::Signal, tgid, tid);
            ev.aux = sig & 0xffff_ffff;
            emit(&ev);
        }
    }
    0
}

/// Every OOM kill on the machine, traced or not: the victim's size as the killer saw it.
#[tracepoint]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    let (tgid, _) = ids();
    let victim: i32 = tp(&ctx, 8);
    let mut ev = event(EventKind::Oom, victim as u32, tgid);
    ev.addr = tp(&ctx, 16);
    ev.size = tp(&ctx, 24);
    ev.old_addr = tp(&ctx, 32);
    ev.call_site = tp(&ctx, 40);
    let uid: u32 = tp(&ctx, 48);
    let adj: i16 = tp(&ctx, 64);
    ev.aux = u64::from(uid) | (u64::from(adj as u16) << 32);
    emit_with(&ev, true);
    // The comm is a __data_loc string: offset in the low 16 bits of the u32 at 12.
    let loc: u32 = tp(&ctx, 12);
    let mut comm = event(EventKind::OomComm, victim as u32, tgid);
    let mut raw = [0u8; 16];
    // SAFETY: the record is kernel memory; the helper bounds the read and stops at NUL.
    unsafe {
        let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
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
