//! Signals seen from the traced threads: which handler is running (an allocation inside one is
//! a hazard), and where a fatal signal struck (the crash stack).
//!
//! A handler starts at `signal_deliver` and ends at its `rt_sigreturn`. A handler left with
//! `siglongjmp` never returns that way: it is over once the thread's stack pointer is back at
//! or above the interrupted context's (the handler's frame lies below it), which the next
//! allocator call checks.

use aya_ebpf::{
    helpers::{
        bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use oomtrace_common::EventKind;

use crate::{MAX_HANDLERS, Thread, emit, event, ids, stack, thread, traced};

/// `struct pt_regs` offsets (x86-64).
const PT_REGS_BP: usize = 4 * 8;
const PT_REGS_IP: usize = 16 * 8;
const PT_REGS_SP: usize = 19 * 8;

/// `SIG_IGN`: a handler word above it is a function.
const SIG_IGN: u64 = 1;

/// Signals whose default action ends the process with a core: the program's own fault, not
/// a request to stop (SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS).
#[inline(always)]
fn is_crash(sig: u64) -> bool {
    matches!(sig, 4..=8 | 11 | 31)
}

/// The user registers the thread entered the kernel with: (ip, sp, bp).
#[inline(always)]
pub fn user_regs() -> (u64, u64, u64) {
    // SAFETY: the task and its saved registers come from BTF helpers; the words are read
    // through the probe-read helper.
    unsafe {
        let task = bpf_get_current_task_btf();
        let regs = bpf_task_pt_regs(task) as *const u8;
        (
            bpf_probe_read_kernel(regs.add(PT_REGS_IP) as *const u64).unwrap_or(0),
            bpf_probe_read_kernel(regs.add(PT_REGS_SP) as *const u64).unwrap_or(0),
            bpf_probe_read_kernel(regs.add(PT_REGS_BP) as *const u64).unwrap_or(0),
        )
    }
}

/// Signal `sig` is being delivered to the current thread, `handler` its action's handler word
/// (0: the default action).
#[inline(always)]
pub fn delivered(sig: u64, handler: u64) {
    let (tgid, tid) = ids();
    if !traced(tgid) {
        return;
    }
    if handler == 0 {
        default_action(tgid, tid, sig);
        if is_crash(sig) {
            crash(tgid, tid, sig);
        }
        return;
    }
    if handler == SIG_IGN {
        return;
    }
    handler_entered(tid, sig);
}

/// A handler for `sig` starts on thread `tid`. A subprogram, as are [`default_action`] and
/// [`crash`]: the walk that `crash` starts has 512 bytes of stack for its whole call chain.
#[inline(never)]
fn handler_entered(tid: u32, sig: u64) {
    let Some(t) = thread(tid) else { return };
    // SAFETY: this thread's own map value; only this thread touches it.
    let t = unsafe { &mut *t };
    let n = t.handlers as usize;
    if n < MAX_HANDLERS {
        let (_, sp, _) = user_regs();
        t.handler_sp[n] = sp;
        t.handler_sigs = (t.handler_sigs & !(0xff << (8 * n))) | ((sig & 0xff) << (8 * n));
    }
    t.handlers = t.handlers.saturating_add(1);
}

/// Signal `sig` takes its default action. A subprogram: its event must not sit in the frame
/// that calls [`crash`].
#[inline(never)]
fn default_action(tgid: u32, tid: u32, sig: u64) {
    let mut ev = event(EventKind::Signal, tgid, tid);
    ev.aux = sig;
    emit(&ev);
}

/// Where a fatal signal struck: the faulting instruction and the stack above it.
#[inline(never)]
fn crash(tgid: u32, tid: u32, sig: u64) {
    let (ip, sp, bp) = user_regs();
    // The walk starts at the faulting instruction itself. Where no unwind rows cover it, a
    // leaf without a frame of its own leaves rbp to its caller: its return address sits at
    // [sp] then; take it when it looks like one.
    // SAFETY: user memory read through the helper.
    let top = unsafe { bpf_probe_read_user(sp as *const u64).unwrap_or(0) };
    let start = stack::Start {
        pc: ip,
        sp,
        bp,
        exact: true,
        leaf_ret: if crate::growth::after_call(top) {
            top
        } else {
            0
        },
    };
    let stack_id = stack::stack_id(tgid, tid, start);
    let mut ev = event(EventKind::Crash, tgid, tid);
    ev.aux = sig;
    // + 1 so that it symbolizes like a return address (at call_site - 1).
    ev.call_site = ip.wrapping_add(1);
    ev.stack_id = stack_id;
    emit(&ev);
}

/// `rt_sigreturn` entered: the innermost handler is over.
#[tracepoint]
pub fn sigreturn_enter(_ctx: TracePointContext) -> u32 {
    let (tgid, tid) = ids();
    if !traced(tgid) {
        return 0;
    }
    if let Some(t) = crate::THREADS.get_ptr_mut(tid) {
        // SAFETY: this thread's own map value.
        let t = unsafe { &mut *t };
        t.handlers = t.handlers.saturating_sub(1);
    }
    0
}

/// The signal whose handler this allocator call runs in (0: none), the caller's stack pointer
/// being `caller_sp`. Handlers left by `siglongjmp` are dropped on the way.
#[inline(always)]
pub fn running_handler(t: &mut Thread, caller_sp: u64) -> u64 {
    // Unrolled: at most MAX_HANDLERS levels are recorded.
    for _ in 0..MAX_HANDLERS {
        // Read afresh each round: derived from the last round's value, the index would lose
        // the bounds the verifier needs.
        // SAFETY: a plain field of the thread's own map value.
        let n = unsafe { core::ptr::read_volatile(&t.handlers) } as usize;
        if n == 0 {
            return 0;
        }
        if n > MAX_HANDLERS {
            // Deeper than recorded: still inside one.
            return (t.handler_sigs >> (8 * (MAX_HANDLERS - 1))) & 0xff;
        }
        // The mask changes nothing (n is 1..=4) but keeps the index bounded for the verifier.
        let level = (n - 1) & (MAX_HANDLERS - 1);
        let sp = t.handler_sp[level];
        if caller_sp < sp {
            return (t.handler_sigs >> (8 * level)) & 0xff;
        }
        t.handlers -= 1;
    }
    0
}
