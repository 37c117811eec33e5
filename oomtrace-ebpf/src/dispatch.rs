//! The two raw syscall tracepoints, `sys_enter` and `sys_exit`, dispatched by syscall number to
//! the memory and lifecycle handlers. One program per direction replaces a perf tracepoint per
//! syscall: raw tracepoints attach and detach in microseconds, perf ones in a grace period each.
//! The price: the program runs at every syscall of every process (a number compared, for those
//! it does not want), where the perf syscall tracepoints filtered by number in the kernel first.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::raw_tracepoint, programs::RawTracePointContext,
};
use oomtrace_common::{ConfigKey, MODE_GROWTH};

use crate::{config, growth, lifecycle, syscalls};

// x86-64 syscall numbers.
const NR_MMAP: u64 = 9;
const NR_MUNMAP: u64 = 11;
const NR_BRK: u64 = 12;
const NR_MREMAP: u64 = 25;
const NR_MADVISE: u64 = 28;
const NR_EXIT_GROUP: u64 = 231;

/// Offsets of the syscall argument registers and `orig_ax` in x86-64 `struct pt_regs` (an
/// ABI-stable layout): rdi, rsi, rdx, r10, r8.
const ARG_OFFSETS: [usize; 5] = [14 * 8, 13 * 8, 12 * 8, 7 * 8, 9 * 8];
const ORIG_AX: usize = 15 * 8;

/// Syscall argument `n` from the user registers `regs`.
#[inline(always)]
fn arg(regs: u64, n: usize) -> u64 {
    let Some(&off) = ARG_OFFSETS.get(n) else {
        return 0;
    };
    // SAFETY: the tracepoint's pt_regs pointer, read through the helper.
    unsafe { bpf_probe_read_kernel((regs + off as u64) as *const u64).unwrap_or(0) }
}

/// Raw tracepoint: `(regs, id)`.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let id: u64 = ctx.arg(1);
    if !matches!(
        id,
        NR_MMAP | NR_MUNMAP | NR_BRK | NR_MREMAP | NR_MADVISE | NR_EXIT_GROUP
    ) {
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    match id {
        NR_MMAP => syscalls::mmap_enter(arg(regs, 1), arg(regs, 2), arg(regs, 3)),
        NR_MUNMAP => syscalls::munmap_enter(arg(regs, 0), arg(regs, 1)),
        NR_BRK => syscalls::brk_enter(arg(regs, 0)),
        NR_MREMAP => syscalls::mremap_enter(arg(regs, 0), arg(regs, 1), arg(regs, 2)),
        NR_MADVISE if config(ConfigKey::Mode) == MODE_GROWTH => {
            growth::madvise_enter(arg(regs, 0), arg(regs, 1), arg(regs, 2))
        }
        NR_EXIT_GROUP => lifecycle::exit_group_enter(arg(regs, 0)),
        _ => {}
    }
    0
}

/// Raw tracepoint: `(regs, ret)`; the syscall number is `regs->orig_ax`.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs: u64 = ctx.arg(0);
    // SAFETY: the tracepoint's pt_regs pointer, read through the helper.
    let id = unsafe { bpf_probe_read_kernel((regs + ORIG_AX as u64) as *const u64).unwrap_or(0) };
    if !matches!(id, NR_MMAP | NR_BRK | NR_MREMAP) {
        return 0;
    }
    let ret: i64 = ctx.arg(1);
    match id {
        NR_MMAP => syscalls::mmap_exit(ret),
        NR_BRK => syscalls::brk_exit(ret),
        NR_MREMAP => syscalls::mremap_exit(ret),
        _ => {}
    }
    0
}
