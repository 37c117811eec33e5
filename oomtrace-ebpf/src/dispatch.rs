//! The memory syscalls, from their perf tracepoints (`syscalls:sys_enter_mmap`, ...), handed to
//! `syscalls.rs` and `growth.rs` with the syscall's arguments.
//!
//! Why perf tracepoints here when the lifecycle uses raw ones: once any syscall hook is on, every
//! syscall of every process on the machine passes it. A perf syscall tracepoint filters by number
//! inside the kernel before any program runs; a raw `sys_enter` runs its program for every
//! syscall. Measured here with empty programs: about 80 ns per syscall for the perf ones, 165 ns
//! for raw `sys_enter`/`sys_exit`. Bystanders come first. The perf ones cost a grace period each
//! to detach instead, which the session pays off its critical path (`probe/detach.rs`).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::syscalls::tp;
use crate::{growth, syscalls};

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

#[tracepoint]
pub fn mmap_enter(ctx: TracePointContext) -> u32 {
    syscalls::mmap_enter(arg(&ctx, 1), arg(&ctx, 2), arg(&ctx, 3));
    0
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
pub fn mremap_enter(ctx: TracePointContext) -> u32 {
    syscalls::mremap_enter(arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2));
    0
}

#[tracepoint]
pub fn mremap_exit(ctx: TracePointContext) -> u32 {
    syscalls::mremap_exit(ret(&ctx));
    0
}

#[tracepoint]
pub fn brk_enter(ctx: TracePointContext) -> u32 {
    syscalls::brk_enter(arg(&ctx, 0));
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
