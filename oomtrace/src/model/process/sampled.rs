//! Weights of `--mode sample`'s events: a sampled allocation (its `aux` holds the sample rate)
//! stands for more bytes and blocks than its own.

use oomtrace_common::MemEvent;

use crate::mode::{round_unbiased, sampled_weight};

/// (bytes, blocks) that an `Alloc`/`Realloc` event of `size` bytes counts for: itself when it
/// was traced exactly (`aux` 0), else the unbiased estimate. Rounding to whole bytes and blocks
/// is randomized by the event's own address and time: unbiased, and the same on every replay.
pub fn weigh(ev: &MemEvent, size: u64) -> (u64, u32) {
    if ev.aux == 0 {
        return (size, 1);
    }
    let (bytes, blocks) = sampled_weight(size, ev.aux);
    let seed = ev.addr ^ ev.ts_ns.rotate_left(32);
    let blocks = round_unbiased(blocks, seed ^ 0x5bd1_e995).clamp(1, u64::from(u32::MAX));
    (round_unbiased(bytes, seed), blocks as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomtrace_common::EventKind;

    fn ev(size: u64, aux: u64, addr: u64) -> MemEvent {
        MemEvent {
            kind: EventKind::Alloc as u16,
            alloc_fn: 0,
            tgid: 1,
            tid: 1,
            stack_id: -1,
            ts_ns: addr * 7,
            addr,
            size,
            old_addr: 0,
            call_site: 0,
            aux,
        }
    }

    #[test]
    fn exact_events_weigh_themselves() {
        assert_eq!(weigh(&ev(100, 0, 1), 100), (100, 1));
    }

    #[test]
    fn sampled_events_weigh_their_inverse_probability() {
        // 64 B at 4 KiB: P = 1 - exp(-1/64), weight ≈ 4128 bytes, ≈ 64.5 blocks.
        let n = 20_000u64;
        let (mut bytes, mut blocks) = (0u64, 0u64);
        for a in 1..=n {
            let (b, k) = weigh(&ev(64, 4096, a * 64), 64);
            bytes += b;
            blocks += u64::from(k);
        }
        let (eb, ek) = sampled_weight(64, 4096);
        assert!((bytes as f64 / n as f64 - eb).abs() < 0.5);
        assert!((blocks as f64 / n as f64 - ek).abs() < 0.05);
    }
}
