//! Whether a skipped leaf allocator call still runs, without its return address.
//!
//! With uprobe sessions an unsampled call skips its return probe, and the thread remembers where
//! the call entered, so that what happens inside it (the allocator's own `mmap` and `brk`)
//! stays the allocator's. Reading the return address at every such entry costs a user-memory
//! read, about 130 ns here, more than the rest of the call's program. A leaf allocator's call
//! ([`oomtrace_common::cookie::LEAF`]: `malloc`, `calloc`) makes no probed call inside, so only
//! a syscall made below its entry asks whether it still runs; that rare question is answered
//! here from the stack: the word at the entry's stack pointer is the call's return address
//! while it runs, and the instruction before a return address says which function was called.

use aya_ebpf::helpers::bpf_probe_read_user;

/// How far into its function an allocator's probe may sit (`probe/placement.rs` picks an
/// instruction of the prologue).
const MAX_PROBE_OFFSET: u64 = 64;

/// Whether the leaf call that entered at `skipped_sp`, probed at `probed`, still runs: the word
/// there is a return address whose call instruction calls that function.
#[inline(always)]
pub fn still_running(skipped_sp: u64, probed: u64) -> bool {
    read::<u64>(skipped_sp).is_some_and(|ret| calls(ret, probed))
}

/// Whether the instruction that ends at return address `ret` calls the function probed at
/// `probed`: directly (`call rel32`), through a PLT stub, or through a GOT slot
/// (`call *disp(%rip)`, `-fno-plt`).
#[inline(always)]
fn calls(ret: u64, probed: u64) -> bool {
    let Some(before) = read::<[u8; 8]>(ret.wrapping_sub(8)) else {
        return false;
    };
    let rel = i32::from_le_bytes([before[4], before[5], before[6], before[7]]) as i64 as u64;
    if before[3] == 0xe8 {
        let target = ret.wrapping_add(rel);
        return is_function(target, probed)
            || plt_target(target).is_some_and(|t| is_function(t, probed));
    }
    if before[2] == 0xff && before[3] == 0x15 {
        return read::<u64>(ret.wrapping_add(rel)).is_some_and(|t| is_function(t, probed));
    }
    false
}

/// Whether `start` is the start of the function probed at `probed`.
#[inline(always)]
fn is_function(start: u64, probed: u64) -> bool {
    start <= probed && probed - start <= MAX_PROBE_OFFSET
}

/// Where the PLT stub at `stub` jumps: its `jmp *disp(%rip)` slot's value, after the `endbr64`
/// and the `bnd` prefix the stub may start with.
#[inline(always)]
fn plt_target(stub: u64) -> Option<u64> {
    let w = read::<[u8; 16]>(stub)?;
    let at = if w[0] == 0xf3 && w[1] == 0x0f && w[2] == 0x1e && w[3] == 0xfa {
        if w[4] == 0xf2 { 5 } else { 4 }
    } else if w[0] == 0xf2 {
        1
    } else {
        0
    };
    // Fixed offsets: a computed index into the bytes would lose the verifier's bounds.
    let (op, disp) = match at {
        0 => ([w[0], w[1]], [w[2], w[3], w[4], w[5]]),
        1 => ([w[1], w[2]], [w[3], w[4], w[5], w[6]]),
        4 => ([w[4], w[5]], [w[6], w[7], w[8], w[9]]),
        _ => ([w[5], w[6]], [w[7], w[8], w[9], w[10]]),
    };
    if op != [0xff, 0x25] {
        return None;
    }
    let slot = stub
        .wrapping_add(at + 6)
        .wrapping_add(i32::from_le_bytes(disp) as i64 as u64);
    read::<u64>(slot)
}

/// A value of user memory at `addr`.
#[inline(always)]
fn read<T>(addr: u64) -> Option<T> {
    // SAFETY: user memory read through the helper; a bad address just fails.
    unsafe { bpf_probe_read_user(addr as *const T).ok() }
}
