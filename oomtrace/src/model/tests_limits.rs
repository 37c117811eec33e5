//! The caps of [`Limits`] and [`Model::forget_exited`]: what a long-running view relies on to
//! stay bounded.

use oomtrace_common::{AllocFn, EventKind, MemEvent};

use super::*;

fn ev(kind: EventKind, pid: u32, addr: u64, size: u64, site: u64) -> MemEvent {
    MemEvent {
        kind: kind as u16,
        alloc_fn: AllocFn::Malloc as u16,
        tgid: pid,
        tid: pid,
        stack_id: -1,
        ts_ns: 1_000_000_000,
        addr,
        size,
        old_addr: 0,
        call_site: site,
        aux: 0,
    }
}

fn limits(processes: usize, stacks: usize, series: usize) -> Limits {
    Limits {
        processes,
        stacks_per_process: stacks,
        stack_series: series,
        tracked_blocks: 1 << 20,
    }
}

#[test]
fn live_processes_past_the_cap_are_refused_and_counted() {
    let mut m = Model::with_limits(crate::mode::Mode::Exact, limits(2, 16, 16));
    for pid in 1..=3 {
        m.apply(&ev(EventKind::Alloc, pid, 0x1000, 10, 1));
    }
    assert_eq!(m.processes().count(), 2);
    assert!(m.process(3).is_none());
    assert_eq!(m.counters.processes_refused, 1);
    // Once one exits, the next newcomer takes its place.
    m.apply(&ev(EventKind::Exit, 1, 0, 0, 0));
    m.apply(&ev(EventKind::Alloc, 3, 0x1000, 10, 1));
    assert!(m.process(3).is_some());
    assert!(m.process(1).is_none());
    assert_eq!(m.counters.processes_dropped, 1);
}

#[test]
fn stacks_past_the_cap_fold_into_one() {
    let mut m = Model::with_limits(crate::mode::Mode::Exact, limits(4, 3, 16));
    for site in 1..=10u64 {
        m.apply(&ev(EventKind::Alloc, 7, 0x1000 * site, 100, site));
    }
    let p = m.process(7).unwrap();
    // Three distinct stacks, then everything else in the overflow stack (call site 0).
    assert_eq!(p.stacks.len(), 4);
    let overflow = p.stacks.iter().find(|s| s.key.call_site == 0).unwrap();
    assert_eq!(overflow.counts.outstanding_bytes, 700);
    assert_eq!(p.totals.outstanding_bytes, 1000);
}

#[test]
fn series_past_the_cap_are_not_kept_and_exited_processes_are_forgotten() {
    let mut m = Model::with_limits(crate::mode::Mode::Exact, limits(8, 16, 2));
    for (pid, site) in [(1, 1), (1, 2), (2, 1)] {
        m.apply(&ev(EventKind::Alloc, pid, 0x1000 * site, 100, site));
    }
    m.apply(&ev(EventKind::Tick, 0, 0, 0, 0));
    assert_eq!(m.timeline.stack_series(), 2);
    assert_eq!(m.timeline.stacks_without_series, 1);
    m.apply(&ev(EventKind::Exit, 1, 0, 0, 0));
    assert_eq!(m.forget_exited(), 1);
    assert!(m.process(1).is_none());
    assert_eq!(m.timeline.stack_series(), 0);
    assert!(m.timeline.process(1).is_none());
    assert_eq!(m.processes().count(), 1);
    // Room again: process 2's stack gets its series at the next tick.
    m.apply(&ev(EventKind::Tick, 0, 0, 0, 0));
    assert_eq!(m.timeline.stack_series(), 1);
    assert_eq!(m.forget_exited(), 0);
}
