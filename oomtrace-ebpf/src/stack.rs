//! The user stack above an allocation, by frame pointers, deduplicated into `STACKS`.
//!
//! At a function-entry probe (and inside a leaf syscall wrapper) `rbp` still belongs to the caller,
//! so `[rbp+8]` is the caller's own return address: the walk yields the frames *above* the call
//! site, which the event carries separately as frame 0. Without frame pointers `rbp` may hold
//! anything; the walk then stops at the first unreadable or non-ascending frame, and the user
//! side drops frames that are not code.

use aya_ebpf::helpers::bpf_probe_read_user;
use oomtrace_common::DropReason;

use crate::{SCRATCH, STACKS, count_drop};

/// Walks from `rbp`, stores the frames, and returns their stack id (-1: none or collision).
#[inline(always)]
pub fn stack_id(rbp: u64) -> i32 {
    stack_id_from(0, rbp)
}

/// As [`stack_id`], with `first` (when non-zero) as the innermost frame before the walk: a
/// return address found some other way (at a leaf that keeps no frame of its own).
#[inline(always)]
pub fn stack_id_from(first: u64, rbp: u64) -> i32 {
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return -1;
    };
    // SAFETY: per-CPU scratch slot, exclusively ours for this program run.
    let buf = unsafe { &mut *buf };
    let mut fp = rbp;
    let mut hash: u32 = 0x811c_9dc5;
    let mut n = 0usize;
    let mut start = 0usize;
    if first != 0
        && let Some(slot) = buf.get_mut(0)
    {
        *slot = first;
        hash = (hash ^ first as u32).wrapping_mul(0x0100_0193);
        hash = (hash ^ (first >> 32) as u32).wrapping_mul(0x0100_0193);
        n = 1;
        start = 1;
    }
    for (i, slot) in buf.iter_mut().enumerate().skip(start) {
        if fp == 0 || fp & 7 != 0 {
            break;
        }
        // SAFETY: user memory read through the helper; a bad address just fails.
        let Ok(frame) = (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }) else {
            break;
        };
        let ret = frame[1];
        if ret == 0 {
            break;
        }
        *slot = ret;
        hash = (hash ^ ret as u32).wrapping_mul(0x0100_0193);
        hash = (hash ^ (ret >> 32) as u32).wrapping_mul(0x0100_0193);
        n = i + 1;
        // Frames live at increasing addresses; anything else is not a frame chain.
        if frame[0] <= fp {
            break;
        }
        fp = frame[0];
    }
    if n == 0 {
        return -1;
    }
    for slot in buf.iter_mut().skip(n) {
        *slot = 0;
    }
    let id = hash & 0x7fff_ffff;
    if let Some(stored) = STACKS.get_ptr(id) {
        // SAFETY: pointer into the map value, valid for this program run.
        let stored = unsafe { &*stored };
        if stored.iter().zip(buf.iter()).any(|(a, b)| a != b) {
            count_drop(DropReason::StackCollision);
            return -1;
        }
        return id as i32;
    }
    // By reference: a 256-byte copy would not fit the 512-byte BPF stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let stored = STACKS.insert(id, &*buf, 0);
    if stored.is_err() {
        count_drop(DropReason::StackCollision);
        return -1;
    }
    id as i32
}
