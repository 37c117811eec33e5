//! Tests of the recording format: round trips, size, and damaged input.
//!
//! Inputs come from a deterministic generator ([`Lcg`]), so every failure reproduces.

mod damage;
mod kernel;
mod mutate;
mod roundtrip;

use oomtrace_common::{AllocFn, EventKind, MemEvent};

use super::{Counters, Header, RecordingWriter};

/// A 64-bit linear congruential generator with an xorshift-multiply output.
pub(super) struct Lcg(u64);

impl Lcg {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed ^ 0x853c_49e6_748f_ea9b)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let x = self.0;
        let x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 29)
    }

    /// A value in `0..n` (`n > 0`).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `pct` percent.
    pub(super) fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    pub(super) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A zeroed event.
pub(super) fn event() -> MemEvent {
    MemEvent {
        kind: 0,
        alloc_fn: 0,
        tgid: 0,
        tid: 0,
        stack_id: 0,
        ts_ns: 0,
        addr: 0,
        size: 0,
        old_addr: 0,
        call_site: 0,
        aux: 0,
    }
}

/// `n` events of every kind, with extreme values mixed in.
pub(super) fn random_events(seed: u64, n: usize) -> Vec<MemEvent> {
    let mut rng = Lcg::new(seed);
    let tgids = [1, 4242, 4243, 77_777, u32::MAX, 0];
    let stacks = [-14, -1, 0, 7, 12_345, i32::MAX, i32::MIN];
    let sites = [
        0,
        0x5555_5555_1234,
        0x5555_5555_1300,
        0x7fff_0000_0000,
        u64::MAX,
    ];
    let sizes = [0, 1, 24, 64, 4096, 1 << 20, u64::MAX];
    let mut live: Vec<u64> = Vec::new();
    let mut ts = rng.next_u64() >> 8;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut ev = event();
        ev.kind = if rng.chance(5) {
            rng.pick(&[0, 13, 15, 16, 255, u16::MAX])
        } else {
            1 + rng.below(12) as u16
        };
        ev.alloc_fn = if rng.chance(2) {
            rng.pick(&[10, 300, u16::MAX])
        } else {
            rng.below(10) as u16
        };
        ev.tgid = rng.pick(&tgids);
        ev.tid = match rng.below(10) {
            0..=5 => ev.tgid,
            6..=8 => ev.tgid.wrapping_add(rng.below(64) as u32),
            _ => rng.next_u64() as u32,
        };
        ev.stack_id = rng.pick(&stacks);
        ev.call_site = rng.pick(&sites);
        ts = match rng.below(100) {
            0..=2 => ts.wrapping_sub(rng.below(1000)),
            3 => rng.next_u64(),
            _ => ts.wrapping_add(rng.below(5000)),
        };
        ev.ts_ns = ts;
        ev.addr = match rng.below(100) {
            0..=54 if !live.is_empty() => rng.pick(&live),
            0..=79 => 0x5555_0000_0000 + (rng.below(1 << 24) << 4),
            80..=84 => 0,
            85..=89 => u64::MAX,
            _ => rng.next_u64(),
        };
        if live.len() < 64 {
            live.push(ev.addr);
        } else {
            live[rng.below(64) as usize] = ev.addr;
        }
        ev.size = if rng.chance(20) {
            rng.next_u64()
        } else {
            rng.pick(&sizes)
        };
        let kind = EventKind::from_u16(ev.kind);
        if matches!(kind, Some(EventKind::Realloc | EventKind::Mremap)) || rng.chance(5) {
            let any = rng.next_u64();
            ev.old_addr = rng.pick(&[ev.addr.wrapping_sub(4096), 0, u64::MAX, any]);
        }
        if matches!(
            kind,
            Some(
                EventKind::Mremap
                    | EventKind::Brk
                    | EventKind::Fork
                    | EventKind::ExitGroup
                    | EventKind::Signal
            )
        ) || rng.chance(5)
        {
            let any = rng.next_u64();
            ev.aux = rng.pick(&[0, 9, ev.addr.wrapping_add(8192), u64::MAX, any]);
        }
        out.push(ev);
    }
    out
}

/// The malloc/free loop of the size target: one process, one stack, four addresses.
pub(super) fn malloc_free_loop(n: usize) -> Vec<MemEvent> {
    let mut rng = Lcg::new(99);
    let mut ts = 1_000_000_000u64;
    (0..n)
        .map(|i| {
            ts += 90 + rng.below(21);
            let mut ev = event();
            ev.tgid = 4242;
            ev.tid = 4242;
            ev.stack_id = 3;
            ev.call_site = 0x5555_5555_8abc;
            ev.alloc_fn = AllocFn::Malloc as u16;
            ev.ts_ns = ts;
            ev.addr = 0x5555_5556_02a0 + ((i / 2) % 4) as u64 * 0x50;
            if i % 2 == 0 {
                ev.kind = EventKind::Alloc as u16;
                ev.size = 64;
            } else {
                ev.kind = EventKind::Free as u16;
            }
            ev
        })
        .collect()
}

/// A finished recording of `events`, cut into chunks of `batch` events.
pub(super) fn record(events: &[MemEvent], batch: usize) -> Vec<u8> {
    let header = Header {
        flags: 0,
        created_unix_ns: 1_700_000_000_000_000_000,
        meta: "oomtrace test".into(),
    };
    let mut w = RecordingWriter::new(Vec::new(), &header).expect("header");
    w.set_batch_size(batch);
    for ev in events {
        w.push_event(ev).expect("push");
    }
    w.finish(&Counters::default()).expect("finish")
}
