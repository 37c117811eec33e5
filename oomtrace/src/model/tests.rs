//! Accounting rules (DESIGN §2) on synthetic event streams.

use oomtrace_common::{AllocFn, EventKind, MemEvent};

use super::*;

fn ev(kind: EventKind, addr: u64, size: u64, site: u64) -> MemEvent {
    MemEvent {
        kind: kind as u16,
        alloc_fn: AllocFn::Malloc as u16,
        tgid: 100,
        tid: 100,
        stack_id: 1,
        ts_ns: 0,
        addr,
        size,
        old_addr: 0,
        call_site: site,
        aux: 0,
    }
}

fn stack(m: &Model, site: u64) -> Counts {
    let p = m.process(100).unwrap();
    p.stacks
        .iter()
        .find(|s| s.key.call_site == site)
        .unwrap()
        .counts
}

#[test]
fn malloc_free_and_unknown_free() {
    let mut m = Model::new();
    m.apply(&ev(EventKind::Alloc, 0x1000, 100, 1));
    m.apply(&ev(EventKind::Alloc, 0x2000, 50, 1));
    m.apply(&ev(EventKind::Free, 0x1000, 0, 0));
    m.apply(&ev(EventKind::Free, 0x9999, 0, 0));
    let c = stack(&m, 1);
    assert_eq!(
        (c.outstanding_bytes, c.outstanding_allocs, c.allocs, c.frees),
        (50, 1, 2, 1)
    );
    assert_eq!(m.unknown_frees(), 1);
}

#[test]
fn failed_allocation_is_counted_never_outstanding() {
    let mut m = Model::new();
    m.apply(&ev(EventKind::Alloc, 0, 1 << 60, 2));
    let c = stack(&m, 2);
    assert_eq!((c.failed_allocs, c.outstanding_bytes, c.allocs), (1, 0, 0));
}

#[test]
fn realloc_moves_the_block_to_the_realloc_stack() {
    let mut m = Model::new();
    m.apply(&ev(EventKind::Alloc, 0x1000, 10, 1));
    let mut r = ev(EventKind::Realloc, 0x5000, 20, 3);
    r.old_addr = 0x1000;
    m.apply(&r);
    assert_eq!(stack(&m, 1).outstanding_bytes, 0);
    assert_eq!(stack(&m, 3).outstanding_bytes, 20);
    // Failure keeps the old block.
    let mut f = ev(EventKind::Realloc, 0, 1 << 60, 4);
    f.old_addr = 0x5000;
    m.apply(&f);
    assert_eq!(stack(&m, 3).outstanding_bytes, 20);
    assert_eq!(stack(&m, 4).failed_allocs, 1);
    // realloc(p, 0) frees.
    let mut z = ev(EventKind::Realloc, 0, 0, 5);
    z.old_addr = 0x5000;
    m.apply(&z);
    assert_eq!(stack(&m, 3).outstanding_bytes, 0);
}

#[test]
fn partial_munmap_trims_mmap_blocks_only() {
    let mut m = Model::new();
    m.apply(&ev(EventKind::Mmap, 0x100000, 4 * 4096, 7));
    m.apply(&ev(EventKind::Alloc, 0x100010, 64, 8));
    m.apply(&ev(EventKind::Munmap, 0x100000, 4096, 0));
    assert_eq!(stack(&m, 7).outstanding_bytes, 3 * 4096);
    assert_eq!(stack(&m, 7).outstanding_allocs, 1);
    assert_eq!(stack(&m, 8).outstanding_bytes, 64);
    m.apply(&ev(EventKind::Munmap, 0x101000, 3 * 4096, 0));
    assert_eq!(stack(&m, 7).outstanding_allocs, 0);
}

#[test]
fn exec_releases_the_old_image_and_exit_freezes() {
    let mut m = Model::new();
    m.apply(&ev(EventKind::Alloc, 0x1000, 10, 1));
    m.apply(&ev(EventKind::Exec, 0, 0, 0));
    assert_eq!(m.process(100).unwrap().totals.outstanding_bytes, 0);
    m.apply(&ev(EventKind::Alloc, 0x1000, 30, 1));
    let mut eg = ev(EventKind::ExitGroup, 0, 0, 0);
    eg.aux = 3;
    m.apply(&eg);
    assert_eq!(m.apply(&ev(EventKind::Exit, 0, 0, 0)), Hint::Exited(100));
    let p = m.process(100).unwrap();
    assert_eq!(p.totals.outstanding_bytes, 30);
    assert_eq!(
        p.exit,
        Some(ExitStatus {
            code: Some(3),
            signal: None
        })
    );
    assert_eq!(p.live_blocks(), 0);
}

#[test]
fn fork_creates_the_child() {
    let mut m = Model::new();
    let mut f = ev(EventKind::Fork, 0, 0, 0);
    f.aux = 101;
    assert_eq!(m.apply(&f), Hint::Forked(100, 101));
    assert_eq!(m.process(101).unwrap().ppid, Some(100));
}

/// A tick samples the most a stack held since the previous tick: a buffer filled and freed
/// between two ticks shows its high-water mark, whatever the tick's phase.
#[test]
fn ticks_sample_the_high_water_mark_since_the_last_tick() {
    let mut m = Model::new();
    let tick = |ts| MemEvent {
        ts_ns: ts,
        ..ev(EventKind::Tick, 0, 0, 0)
    };
    m.apply(&ev(EventKind::Alloc, 0x1000, 1000, 7));
    m.apply(&ev(EventKind::Alloc, 0x2000, 500, 7));
    m.apply(&ev(EventKind::Free, 0x1000, 0, 0));
    m.apply(&ev(EventKind::Free, 0x2000, 0, 0));
    m.apply(&tick(1_000_000_000));
    // Nothing happens in the next interval: it samples what is held, 0.
    m.apply(&tick(2_000_000_000));
    m.apply(&ev(EventKind::Alloc, 0x3000, 200, 7));
    m.apply(&tick(3_000_000_000));
    let key = m.process(100).unwrap().stacks[0].key;
    let points: Vec<f64> = m
        .timeline
        .stack(100, &key)
        .unwrap()
        .points()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(points, [1500.0, 0.0, 200.0]);
    assert_eq!(stack(&m, 7).outstanding_bytes, 200);
}

/// Two heaps in one process (glibc's and a prefixed jemalloc's): a free pairs only with a block
/// of its own family; a free through the other one is a mismatch and frees nothing.
#[test]
fn frees_pair_only_within_an_allocator_family() {
    use oomtrace_common::family;
    let with = |mut e: MemEvent, f: u8| {
        e.alloc_fn = (e.alloc_fn & 0xff) | (u16::from(f) << 8);
        e
    };
    let mut m = Model::new();
    m.apply(&with(
        ev(EventKind::Alloc, 0x1000, 100, 1),
        family::STANDARD,
    ));
    m.apply(&with(ev(EventKind::Alloc, 0x2000, 70, 2), family::RJEM));
    // _rjem_free of the glibc block: a mismatch, the block stays.
    m.apply(&with(ev(EventKind::Free, 0x1000, 0, 0), family::RJEM));
    assert_eq!(stack(&m, 1).outstanding_bytes, 100);
    assert_eq!(m.process(100).unwrap().mismatched_frees, 1);
    // Each through its own: both go.
    m.apply(&with(ev(EventKind::Free, 0x1000, 0, 0), family::STANDARD));
    m.apply(&with(ev(EventKind::Free, 0x2000, 0, 0), family::RJEM));
    assert_eq!(stack(&m, 1).outstanding_bytes, 0);
    assert_eq!(stack(&m, 2).outstanding_bytes, 0);
    assert_eq!(m.process(100).unwrap().mismatched_frees, 1);
    assert_eq!(m.unknown_frees(), 0);
}

/// CPython's layer sits on the standard heap: its large blocks are malloc's, and an optimized
/// interpreter frees some through `free` directly (and the other way round). Same heap.
#[test]
fn the_python_layer_and_malloc_free_each_others_blocks() {
    use oomtrace_common::family;
    let with = |mut e: MemEvent, f: u8| {
        e.alloc_fn = (e.alloc_fn & 0xff) | (u16::from(f) << 8);
        e
    };
    let mut m = Model::new();
    m.apply(&with(ev(EventKind::Alloc, 0x1000, 1000, 1), family::PY));
    m.apply(&with(
        ev(EventKind::Alloc, 0x2000, 700, 2),
        family::STANDARD,
    ));
    m.apply(&with(ev(EventKind::Alloc, 0x3000, 50, 3), family::RJEM));
    m.apply(&with(ev(EventKind::Free, 0x1000, 0, 0), family::STANDARD));
    m.apply(&with(ev(EventKind::Free, 0x2000, 0, 0), family::PY));
    // Another heap altogether stays a mismatch.
    m.apply(&with(ev(EventKind::Free, 0x3000, 0, 0), family::PY));
    assert_eq!(stack(&m, 1).outstanding_bytes, 0);
    assert_eq!(stack(&m, 2).outstanding_bytes, 0);
    assert_eq!(stack(&m, 3).outstanding_bytes, 50);
    assert_eq!(m.process(100).unwrap().mismatched_frees, 1);
}

/// Under `run` frees are judged; a free through CPython's layer of a block never seen (an
/// inlined fast path allocated it) is not called invalid or double, a standard one is.
#[test]
fn python_layer_frees_of_unseen_blocks_are_not_hazards() {
    use oomtrace_common::family;
    let with = |mut e: MemEvent, f: u8| {
        e.alloc_fn = (e.alloc_fn & 0xff) | (u16::from(f) << 8);
        e
    };
    let mut m = Model::new();
    m.apply(&with(ev(EventKind::Alloc, 0x1000, 32, 1), family::PY));
    m.apply(&with(ev(EventKind::Free, 0x1000, 0, 7), family::PY));
    // The address reused by an unseen allocation, then freed through the layer.
    m.apply(&with(ev(EventKind::Free, 0x1000, 0, 7), family::PY));
    m.apply(&with(ev(EventKind::Free, 0x5000, 0, 7), family::PY));
    let counts = m.process(100).unwrap().faults.hazard_counts;
    assert_eq!((counts.double_frees, counts.invalid_frees), (0, 0));
    m.apply(&with(ev(EventKind::Free, 0x6000, 0, 7), family::STANDARD));
    assert_eq!(
        m.process(100).unwrap().faults.hazard_counts.invalid_frees,
        1
    );
}
