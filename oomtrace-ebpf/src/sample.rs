//! `--mode sample`: byte-based Poisson sampling of allocations (as tcmalloc, jemalloc and Go do).
//!
//! Each thread counts down the bytes to its next sample point; the gaps between points are
//! exponential with mean RATE, so every allocated byte is a sample point with the same tiny
//! probability, independently. An allocation of `s` bytes that reaches the point is sampled:
//! P = 1 - exp(-s/RATE), and the user side weighs it by s / P (unbiased). No floating point
//! here: user space fills [`EXP_TABLE`] with quantiles of the exponential, and a draw
//! interpolates between two of them with random bits.
//!
//! Sampled blocks are remembered in [`SAMPLED`]; `free` of any other block finds nothing there
//! and returns at once, without an event.

use aya_ebpf::{
    helpers::bpf_get_prandom_u32,
    macros::map,
    maps::{Array, LruHashMap},
};

/// Quantile bins of the exponential (a power of two: indexed by the top random bits).
pub const EXP_BINS: u32 = 1024;
const BIN_BITS: u32 = 10;
const FRAC_BITS: u32 = 32 - BIN_BITS;

/// `EXP_TABLE[i]` = RATE · -ln(1 - i/EXP_BINS) for i < EXP_BINS; the last entry closes the
/// tail bin at its conditional mean's double (same mean). Written by user space before attaching.
#[map]
pub static EXP_TABLE: Array<u64> = Array::with_max_entries(EXP_BINS + 1, 0);

/// A sampled block: (address, tgid) — forked children share their parent's addresses.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct SampledKey {
    pub addr: u64,
    pub tgid: u64,
}

/// Live sampled blocks (~9 MiB of kernel memory; at 512 KiB a full map stands for ~64 GiB).
/// LRU: entries of processes that exited without freeing age out instead of filling the map.
#[map]
pub static SAMPLED: LruHashMap<SampledKey, u8> = LruHashMap::with_max_entries(1 << 17, 0);

/// One draw of the gap to the next sample point, in bytes (≥ 1).
#[inline(always)]
fn draw() -> u64 {
    // SAFETY: plain helper call.
    let r = unsafe { bpf_get_prandom_u32() };
    let bin = r >> FRAC_BITS;
    let frac = u64::from(r & ((1 << FRAC_BITS) - 1));
    let lo = EXP_TABLE.get(bin).copied().unwrap_or(0);
    let hi = EXP_TABLE.get(bin + 1).copied().unwrap_or(lo);
    // hi - lo ≤ 2·RATE ≤ 2^31 (RATE ≤ 1 GiB), times 2^22: no overflow.
    (lo + ((hi.saturating_sub(lo) * frac) >> FRAC_BITS)).max(1)
}

/// Whether an allocation of `size` bytes on this thread is sampled; advances the countdown.
/// A countdown of 0 means "not drawn yet" (a new thread).
#[inline(always)]
pub fn take(countdown: &mut u64, size: u64) -> bool {
    if size == 0 {
        return false;
    }
    if *countdown == 0 {
        *countdown = draw();
    }
    if size < *countdown {
        *countdown -= size;
        return false;
    }
    // Memoryless: the next point lies an exponential gap past this allocation's end.
    *countdown = draw();
    true
}

/// Whether `addr` of process `tgid` is a live sampled block.
#[inline(always)]
pub fn is_sampled(tgid: u32, addr: u64) -> bool {
    let key = SampledKey {
        addr,
        tgid: u64::from(tgid),
    };
    // SAFETY: presence check only.
    unsafe { SAMPLED.get(key).is_some() }
}

/// Remembers a sampled block; false if it could not be stored.
#[inline(always)]
pub fn remember(tgid: u32, addr: u64) -> bool {
    let key = SampledKey {
        addr,
        tgid: u64::from(tgid),
    };
    SAMPLED.insert(key, 1, 0).is_ok()
}

/// Forgets a sampled block (freed, or moved by realloc).
#[inline(always)]
pub fn forget(tgid: u32, addr: u64) {
    let key = SampledKey {
        addr,
        tgid: u64::from(tgid),
    };
    let _ = SAMPLED.remove(key);
}
