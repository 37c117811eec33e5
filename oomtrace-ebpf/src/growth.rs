//! `--mode growth`: no allocator probes. User page faults say which stack made memory resident
//! (one event per faulting page, at tracepoint cost); `madvise` says which pages went away
//! besides unmaps (the syscall tracepoints of `syscalls.rs` report munmap, brk and mremap).

use aya_ebpf::{
    helpers::bpf_probe_read_user, macros::raw_tracepoint, programs::RawTracePointContext,
};
use oomtrace_common::EventKind;

use crate::{emit, event, ids, stack, traced};

const PAGE: u64 = 4096;
/// User addresses end here on x86-64 (4-level paging; 5-level is rarer and larger: still user).
const USER_END: u64 = 1 << 56;
/// madvise behaviours that drop pages while the mapping stays.
const MADV_DONTNEED: u64 = 4;
const MADV_FREE: u64 = 8;
const MADV_REMOVE: u64 = 9;
const MADV_DONTNEED_LOCKED: u64 = 24;

/// Whether `ret` looks like a return address: the bytes before it are a `call` instruction
/// (`e8 rel32`, `ff 15 disp32`, `ff /2` through a register, with or without a disp8).
#[inline(always)]
pub fn after_call(ret: u64) -> bool {
    if ret < 6 {
        return false;
    }
    // SAFETY: user memory read through the helper; a bad address just fails.
    let Ok(b) = (unsafe { bpf_probe_read_user((ret - 6) as *const [u8; 6]) }) else {
        return false;
    };
    b[1] == 0xe8
        || (b[0] == 0xff && b[1] == 0x15)
        || (b[4] == 0xff && b[5] & 0xf8 == 0xd0)
        || (b[3] == 0xff && b[4] & 0xf8 == 0x50)
}

/// Faults in user mode, and faults the kernel takes on user addresses for the process (a
/// `read()` into a fresh buffer): the user registers are the process's own either way.
/// Raw tracepoint: `(address, regs, error_code)`.
#[raw_tracepoint]
pub fn page_fault(ctx: RawTracePointContext) -> i32 {
    let (tgid, tid) = ids();
    if !traced(tgid) {
        return 0;
    }
    let address: u64 = ctx.arg(0);
    if address >= USER_END {
        return 0;
    }
    let (ip, sp, bp) = crate::signals::user_regs();
    // The walk starts at the faulting instruction itself. Where no unwind rows cover it, a leaf
    // without a frame of its own (libc's memset) leaves rbp to its caller, and frame pointers
    // would skip that caller: its return address sits at [sp] then. Take it when it is one.
    // SAFETY: user memory read through the helper.
    let top = unsafe { bpf_probe_read_user(sp as *const u64).unwrap_or(0) };
    let start = stack::Start {
        pc: ip,
        sp,
        bp,
        exact: true,
        leaf_ret: if after_call(top) { top } else { 0 },
    };
    let mut ev = event(EventKind::Fault, tgid, tid);
    ev.addr = address & !(PAGE - 1);
    ev.size = PAGE;
    // The faulting instruction, + 1 so that it symbolizes like a return address (at addr - 1).
    ev.call_site = ip.wrapping_add(1);
    ev.stack_id = stack::stack_id(tgid, tid, start);
    emit(&ev);
    0
}

/// `madvise(addr, len, behavior)` that drops pages: reported as a `Munmap` whose `aux` is the
/// behaviour (non-zero). From `dispatch.rs`, in growth mode.
#[inline(always)]
pub fn madvise_enter(addr: u64, len: u64, behavior: u64) {
    if !matches!(
        behavior,
        MADV_DONTNEED | MADV_FREE | MADV_REMOVE | MADV_DONTNEED_LOCKED
    ) {
        return;
    }
    let (tgid, tid) = ids();
    if !traced(tgid) {
        return;
    }
    let mut ev = event(EventKind::Munmap, tgid, tid);
    ev.addr = addr;
    ev.size = len;
    ev.aux = behavior;
    emit(&ev);
}
