//! The memory syscalls, from their perf tracepoints (`syscalls:sys_enter_mmap`, ...), handed to
//! `syscalls.rs` and `growth.rs` with the syscall's arguments; and `signal:signal_deliver`,
//! which shares the stack-taking program with them ([`stack_enter`]).
//!
//! Why perf tracepoints here when the lifecycle uses raw ones: once any syscall hook is on, every
//! syscall of every process on the machine passes it. A perf syscall tracepoint filters by number
//! inside the kernel before any program runs; a raw `sys_enter` runs its program for every
//! syscall. Measured here with empty programs: about 80 ns per syscall for the perf ones, 165 ns
//! for raw `sys_enter`/`sys_exit`. Bystanders come first. The perf ones cost a grace period each
//! to detach instead, which the session pays off its critical path (`probe/detach.rs`).

use aya_ebpf::{
    EbpfContext as _, helpers::bpf_get_attach_cookie, macros::tracepoint,
    programs::TracePointContext,
};
use oomtrace_common::SIGNAL_DELIVER_COOKIE;

use crate::syscalls::tp;
use crate::{growth, signals, syscalls};

/// x86-64 syscall numbers of the memory syscalls that take a stack at entry.
const NR_MMAP: i32 = 9;
const NR_MREMAP: i32 = 25;
const NR_BRK: i32 = 12;

/// `syscalls:sys_enter_*` records: the syscall's arguments start at offset 16, 8 bytes each.
#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    tp(ctx, 16 + 8 * n)
}

/// `syscalls:sys_exit_*` records: the return value at offset 16.
#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    tp(ctx, 16)
}

/// Every tracepoint that takes a user stack, in one program: `sys_enter_mmap`,
/// `sys_enter_mremap`, `sys_enter_brk` and `signal:signal_deliver` (a crash's stack).
///
/// One program because the verifier checks the stack walk once per program, about 50k
/// instructions and 45 ms each here: four programs made most of every start-up. The signal's
/// link carries a cookie (a record's `common_type` cannot tell: the kernel overwrites a perf
/// tracepoint record's first 8 bytes before a program sees it); the syscalls' records share
/// one layout, `__syscall_nr` at offset 8.
#[tracepoint]
pub fn stack_enter(ctx: TracePointContext) -> u32 {
    // SAFETY: the helper reads the cookie of the link that ran this program.
    if unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } == SIGNAL_DELIVER_COOKIE {
        // `signal:signal_deliver`: sig (int) at 8, sa_handler at 24.
        let sig: i32 = tp(&ctx, 8);
        signals::delivered(sig as u64 & 0xffff_ffff, tp(&ctx, 24));
        return 0;
    }
    match tp::<i32>(&ctx, 8) {
        NR_MMAP => mmap_enter(arg(&ctx, 1), arg(&ctx, 2), arg(&ctx, 3)),
        NR_MREMAP => mremap_enter(arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2)),
        NR_BRK => brk_enter(arg(&ctx, 0)),
        _ => {}
    }
    0
}

// Each case is a subprogram of its own: inlined side by side, their locals would add up in one
// frame and take the walk's call chain past the verifier's 512 bytes of stack.

#[inline(never)]
fn mmap_enter(len: u64, prot: u64, flags: u64) {
    syscalls::mmap_enter(len, prot, flags);
}

#[inline(never)]
fn mremap_enter(addr: u64, old_len: u64, new_len: u64) {
    syscalls::mremap_enter(addr, old_len, new_len);
}

#[inline(never)]
fn brk_enter(brk: u64) {
    syscalls::brk_enter(brk);
}

#[tracepoint]
pub fn mmap_exit(ctx: TracePointContext) -> u32 {
    syscalls::mmap_exit(ret(&ctx));
    0
}

#[tracepoint]
pub fn munmap_enter(ctx: TracePointContext) -> u32 {
    syscalls::munmap_enter(arg(&ctx, 0), arg(&ctx, 1));
    0
}

#[tracepoint]
pub fn mremap_exit(ctx: TracePointContext) -> u32 {
    syscalls::mremap_exit(ret(&ctx));
    0
}

#[tracepoint]
pub fn brk_exit(ctx: TracePointContext) -> u32 {
    syscalls::brk_exit(ret(&ctx));
    0
}

/// Growth mode only.
#[tracepoint]
pub fn madvise_enter(ctx: TracePointContext) -> u32 {
    growth::madvise_enter(arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2));
    0
}
