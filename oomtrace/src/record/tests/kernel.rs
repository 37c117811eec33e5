//! `--kernel` events (kinds above 15 take the escape path) and kernel stacks round-trip.

use oomtrace_common::{EventKind, KernelSource};

use super::super::recorder::{KERNEL_SYMBOLS_TGID, kernel_stack_record_id};
use super::super::*;
use super::{event, record};

#[test]
fn kernel_events_round_trip_exactly() {
    let mut events = Vec::new();
    for (i, (source, addr, size)) in [
        (KernelSource::Page, 0x12_3456, 4096),
        (KernelSource::Page, 0x12_3457, 4096 << 9),
        (KernelSource::Slab, 0xffff_8880_0123_4560, 192),
        (KernelSource::Vmalloc, 0xffff_c900_0001_0000, 20480),
        (KernelSource::Gpu, 0xffff_8881_0000_0000, 1 << 20),
    ]
    .into_iter()
    .enumerate()
    {
        let mut a = event();
        a.kind = EventKind::KAlloc as u16;
        a.alloc_fn = source as u16;
        a.tgid = 4242;
        a.tid = 4243;
        a.stack_id = i as i32;
        a.ts_ns = 1_000_000 + i as u64 * 77;
        a.addr = addr;
        a.size = size;
        let mut f = a;
        f.kind = EventKind::KFree as u16;
        f.tgid = 1;
        f.tid = 9;
        f.stack_id = -1;
        f.ts_ns += 5_000;
        events.extend([a, f]);
    }
    let bytes = record(&events, 3);
    let (rec, warnings) = read_from_bytes(&bytes).expect("read");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(rec.events, events);
}

#[test]
fn kernel_stacks_share_the_stacks_chunk_without_clashing() {
    let header = Header {
        flags: 0,
        created_unix_ns: 1,
        meta: "t".into(),
    };
    let mut w = RecordingWriter::new(Vec::new(), &header).expect("header");
    w.write_stacks(&Stacks {
        stacks: vec![
            Stack {
                id: 0,
                frames: vec![0x5555_0000_1000],
            },
            Stack {
                id: kernel_stack_record_id(0),
                frames: vec![0xffff_ffff_8100_0000, 0xffff_ffff_8100_0040],
            },
        ],
    })
    .unwrap();
    let name = w.intern("anon_pipe_write");
    w.write_symbols(&Symbols {
        tgid: KERNEL_SYMBOLS_TGID,
        symbols: vec![Symbol {
            addr: 0xffff_ffff_8100_0040,
            function: name,
            ..Symbol::default()
        }],
    })
    .unwrap();
    let bytes = w.finish(&Counters::default()).unwrap();
    let (rec, warnings) = read_from_bytes(&bytes).expect("read");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(kernel_stack_record_id(0), -2);
    assert_eq!(rec.stacks[&0], vec![0x5555_0000_1000]);
    assert_eq!(rec.stacks[&-2].len(), 2);
    let sym = rec
        .symbols
        .get(KERNEL_SYMBOLS_TGID, 0xffff_ffff_8100_0040)
        .unwrap();
    assert_eq!(rec.strings.get(sym.function), Some("anon_pipe_write"));
}
