//! The user-side pipeline alone: ring records → decoding → model (and the symbolizer's
//! per-event bookkeeping), as the ingestion loop runs them, on one core. No BPF needed. Time is
//! the thread's CPU time, so the figure is events per second per core.
//!
//! The synthetic stream is a realistic mix for an allocation-heavy process: allocations from
//! 1000 call sites (four sizes each, 16 B – 4 KiB), frees of live blocks (about 10000 outstanding), a
//! realloc now and then, and a time-series tick every 50000 events. `cargo xtask bench` copies
//! the throughput into BENCHMARKS.md; the goal is ≥ 10 M events/s so that the user side is never
//! the bottleneck.

use std::hint::black_box;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use oomtrace::model::{Model, has_call_site};
use oomtrace::source::live::decode;
use oomtrace::symbols::Symbolizer;
use oomtrace_common::{AllocFn, EventKind, MEM_EVENT_SIZE, MemEvent};

const EVENTS: usize = 1_000_000;
const STACKS: u64 = 1000;
const LIVE_BLOCKS: usize = 10_000;

/// xorshift64: deterministic and cheap.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn event(kind: EventKind, pid: u32, ts_ns: u64) -> MemEvent {
    MemEvent {
        kind: kind as u16,
        alloc_fn: AllocFn::Malloc as u16,
        tgid: pid,
        tid: pid,
        stack_id: -1,
        ts_ns,
        addr: 0,
        size: 0,
        old_addr: 0,
        call_site: 0,
        aux: 0,
    }
}

/// `EVENTS` ring records, back to back, as the kernel writes them.
fn stream() -> Vec<u8> {
    // Call sites inside this binary's own code, so the symbolizer finds them mapped as it would
    // find a real process's.
    let text = stream as *const () as u64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live: Vec<u64> = Vec::with_capacity(LIVE_BLOCKS * 2);
    let mut next_addr = 0x5555_0000_0000u64;
    let mut out = Vec::with_capacity(EVENTS * MEM_EVENT_SIZE);
    let pid = std::process::id();
    for i in 0..EVENTS as u64 {
        let ts = 1_000_000_000 + i * 500;
        let r = rng.next();
        let ev = if i % 50_000 == 49_999 {
            event(EventKind::Tick, pid, ts)
        } else if live.len() < LIVE_BLOCKS / 2
            || (live.len() < LIVE_BLOCKS * 2 && r.is_multiple_of(2))
        {
            let stack = (r >> 8) % STACKS;
            let mut ev = event(EventKind::Alloc, pid, ts);
            // A call site allocates one or a few sizes: four per site here.
            ev.size = 16 + (stack * 40) % 4000 + ((r >> 20) % 4) * 16;
            ev.addr = next_addr;
            ev.call_site = text + stack * 16;
            ev.stack_id = stack as i32;
            if r % 64 == 1 && !live.is_empty() {
                // realloc of a live block to a fresh address.
                let j = (r >> 32) as usize % live.len();
                ev.kind = EventKind::Realloc as u16;
                ev.alloc_fn = AllocFn::Realloc as u16;
                ev.old_addr = live.swap_remove(j);
            }
            next_addr += 4096;
            live.push(ev.addr);
            ev
        } else {
            let j = (r >> 32) as usize % live.len();
            let mut ev = event(EventKind::Free, pid, ts);
            ev.addr = live.swap_remove(j);
            ev
        };
        // SAFETY: MemEvent is plain #[repr(C)] data of MEM_EVENT_SIZE bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), MEM_EVENT_SIZE) };
        out.extend_from_slice(bytes);
    }
    out
}

/// What the ingestion loop does with each record (minus the recording tee and BPF reads).
fn ingest(records: &[u8], model: &mut Model, symbols: &mut Symbolizer) {
    for rec in records.chunks_exact(MEM_EVENT_SIZE) {
        let Some(ev) = decode(rec) else { continue };
        black_box(model.apply(&ev));
        let kind = EventKind::from_u16(ev.kind);
        if kind.is_some_and(has_call_site) {
            let generation = model.process(ev.tgid).map_or(0, |p| p.generation);
            if matches!(kind, Some(EventKind::Alloc | EventKind::Realloc)) {
                symbols.settle(ev.tgid, generation);
            }
            symbols.observe(ev.tgid, generation, ev.call_site);
        }
    }
}

/// This thread's CPU time, so the figure is per core even while other work shares the machine.
struct ThreadCpu(WallTime);

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds, like wall time: the same units and throughput formatting.
        self.0.formatter()
    }
}

fn pipeline(c: &mut Criterion<ThreadCpu>) {
    let records = stream();
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.bench_function("decode+model", |b| {
        b.iter_batched(
            || (Model::new(), Symbolizer::new()),
            |(mut model, mut symbols)| {
                ingest(&records, &mut model, &mut symbols);
                (model, symbols)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu(WallTime));
    targets = pipeline
}
criterion_main!(benches);
