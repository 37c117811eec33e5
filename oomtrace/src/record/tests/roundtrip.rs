//! Round trips: what is written reads back exactly; the size target is met.

use bytes::BytesMut;

use super::super::*;
use super::{event, malloc_free_loop, random_events, record};

#[test]
fn random_event_streams_round_trip_exactly() {
    for (seed, n) in [(1, 1), (2, 10), (3, 5_000), (4, 20_000)] {
        let events = random_events(seed, n);
        for batch in [1, 3, 100, DEFAULT_BATCH_SIZE] {
            let bytes = record(&events, batch);
            let (rec, warnings) = read_from_bytes(&bytes).expect("read");
            assert!(
                warnings.is_empty(),
                "seed {seed} batch {batch}: {warnings:?}"
            );
            assert_eq!(rec.events.len(), events.len(), "seed {seed} batch {batch}");
            for (i, (got, want)) in rec.events.iter().zip(&events).enumerate() {
                assert_eq!(got, want, "seed {seed} batch {batch} event {i}");
            }
            assert_eq!(rec.footer.map(|f| f.events), Some(n as u64));
            assert_eq!(rec.readable_bytes, bytes.len() as u64);
        }
    }
}

#[test]
fn extreme_events_round_trip() {
    let mut all_max = event();
    all_max.kind = u16::MAX;
    all_max.alloc_fn = u16::MAX;
    all_max.tgid = u32::MAX;
    all_max.tid = 0;
    all_max.stack_id = i32::MIN;
    all_max.ts_ns = u64::MAX;
    all_max.addr = u64::MAX;
    all_max.size = u64::MAX;
    all_max.old_addr = u64::MAX;
    all_max.call_site = u64::MAX;
    all_max.aux = u64::MAX;
    let mut zero_after_max = event();
    zero_after_max.kind = 1;
    zero_after_max.tid = u32::MAX;
    let mut events = vec![event(), all_max, zero_after_max, all_max, event()];
    for kind in 0..=26 {
        let mut ev = all_max;
        ev.kind = kind;
        events.push(ev);
        ev.stack_id = -1;
        ev.addr = 0;
        events.push(ev);
    }
    let bytes = record(&events, 4);
    let (rec, warnings) = read_from_bytes(&bytes).expect("read");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(rec.events, events);
}

#[test]
fn one_batch_decodes_with_the_low_level_api() {
    let events = random_events(7, 300);
    let mut enc = EventEncoder::new();
    for ev in &events {
        enc.push(ev);
    }
    let mut payload = BytesMut::new();
    enc.take_chunk(&mut payload);
    let mut sites = SiteTable::new();
    let mut out = Vec::new();
    let mut buf = &payload[..];
    decode_events(&mut buf, &mut sites, &mut out).expect("decode");
    assert!(buf.is_empty());
    assert_eq!(out, events);
    // A second batch refers to the sites of the first without redefining them.
    for ev in &events[..10] {
        enc.push(ev);
    }
    payload.clear();
    enc.take_chunk(&mut payload);
    let before = sites.len();
    let mut buf = &payload[..];
    decode_events(&mut buf, &mut sites, &mut out).expect("decode second");
    assert_eq!(sites.len(), before);
    assert_eq!(out[events.len()..], events[..10]);
}

#[test]
fn tables_round_trip() {
    let header = Header::new("tables");
    let mut w = RecordingWriter::new(Vec::new(), &header).expect("header");
    let events = random_events(11, 50);
    for ev in &events[..25] {
        w.push_event(ev).expect("push");
    }
    let main = w.intern("main");
    let libc = w.intern("/usr/lib/libc.so.6");
    let gpu = w.intern("gpu_bytes");
    assert_eq!(w.intern("main"), main);
    assert_eq!(w.intern(""), 0);
    assert!(w.define_stack(7, &[0x1000, 0x0fff, u64::MAX, 0]));
    assert!(!w.define_stack(7, &[0x1000, 0x0fff, u64::MAX, 0]));
    assert!(w.define_stack(-3, &[]));
    let symbols = Symbols {
        tgid: 42,
        symbols: vec![
            Symbol {
                addr: 0x2000,
                function: main,
                module: libc,
                file: 0,
                line: 17,
            },
            Symbol {
                addr: 0x1000,
                function: main,
                module: libc,
                file: main,
                line: u32::MAX,
            },
        ],
    };
    w.write_symbols(&symbols).expect("symbols");
    let build_id = w.intern("5221b80bd99650e3e55370b0e24f4b4dbe81264f");
    let origins = SymbolOrigins {
        tgid: 42,
        origins: vec![
            SymbolOrigin {
                addr: 0x2000,
                build_id,
                offset: Some(0x35285),
            },
            SymbolOrigin {
                addr: 0x1000,
                build_id: 0,
                offset: None,
            },
            SymbolOrigin {
                addr: u64::MAX,
                build_id,
                offset: Some(0),
            },
        ],
    };
    w.write_symbol_origins(&origins).expect("origins");
    let maps = ProcMaps {
        ts_ns: 5,
        tgid: 42,
        mappings: vec![
            Mapping {
                start: 0x5555_0000_0000,
                end: 0x5555_0000_8000,
                file_offset: 0x1000,
                perms: PERM_READ | PERM_EXEC,
                path: libc,
                build_id: vec![0xab; 20],
            },
            Mapping {
                start: 10,
                end: 2,
                file_offset: u64::MAX,
                perms: 0xff,
                path: 0,
                build_id: vec![],
            },
        ],
    };
    w.write_maps(&maps).expect("maps");
    let sample = Sample {
        ts_ns: 9,
        tgid: 42,
        rss_bytes: 1 << 30,
        heap_outstanding: 77,
        values: vec![(gpu, 123)],
    };
    w.write_sample(&sample).expect("sample");
    let oom = Oom {
        ts_ns: 10,
        tgid: 42,
        json: br#"{"victim":42}"#.to_vec(),
    };
    w.write_oom(&oom).expect("oom");
    let mid = Counters {
        lost_events: 1,
        unknown_frees: 2,
        stack_collisions: 3,
        other: vec![(gpu, 4)],
    };
    w.write_counters(&mid).expect("counters");
    w.write_stacks(&Stacks {
        stacks: vec![Stack {
            id: 8,
            frames: vec![1, 2, 3],
        }],
    })
    .expect("stacks");
    for ev in &events[25..] {
        w.push_event(ev).expect("push");
    }
    let last = Counters {
        lost_events: 5,
        ..Counters::default()
    };
    let bytes = w.finish(&last).expect("finish");

    let (rec, warnings) = read_from_bytes(&bytes).expect("read");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(rec.header, header);
    assert_eq!(rec.events, events);
    assert_eq!(rec.strings.get(main), Some("main"));
    assert_eq!(rec.strings.get(libc), Some("/usr/lib/libc.so.6"));
    assert_eq!(rec.strings.get(0), Some(""));
    assert_eq!(rec.strings.resolve(9999), "?");
    assert_eq!(
        rec.stacks.get(&7).map(Vec::as_slice),
        Some(&[0x1000, 0x0fff, u64::MAX, 0][..])
    );
    assert_eq!(rec.stacks.get(&-3).map(Vec::len), Some(0));
    assert_eq!(rec.stacks.get(&8).map(Vec::as_slice), Some(&[1, 2, 3][..]));
    assert_eq!(rec.symbols.get(42, 0x1000), Some(&symbols.symbols[1]));
    assert_eq!(rec.symbols.len(), 2);
    for o in &origins.origins {
        assert_eq!(rec.symbols.origin(42, o.addr), Some(o));
    }
    assert_eq!(rec.symbols.origin(43, 0x2000), None);
    assert_eq!(rec.maps, vec![maps]);
    assert_eq!(rec.samples, vec![sample]);
    assert_eq!(rec.ooms, vec![oom]);
    assert_eq!(rec.counters, last);
    assert_eq!(rec.footer.map(|f| f.events), Some(50));
}

#[test]
fn payloads_decode_standalone() {
    let sample = Sample {
        ts_ns: u64::MAX,
        tgid: 1,
        rss_bytes: 2,
        heap_outstanding: 3,
        values: vec![(1, 2)],
    };
    let mut buf = BytesMut::new();
    sample.encode(&mut buf);
    let mut slice = &buf[..];
    assert_eq!(Sample::decode(&mut slice).expect("decode"), sample);
    assert!(slice.is_empty());
    let mut short = &buf[..buf.len() - 1];
    let err = Sample::decode(&mut short).expect_err("short");
    assert!(
        matches!(
            err,
            RecordError::PayloadEnds { .. } | RecordError::AbsurdLength { .. }
        ),
        "{err}"
    );
}

#[test]
fn oversized_payloads_are_split_or_refused() {
    let mut w = RecordingWriter::new(Vec::new(), &Header::new("")).expect("header");
    let big = Symbols {
        tgid: 1,
        symbols: (0..1_300_000u64)
            .map(|i| Symbol {
                addr: i << 40,
                function: u32::MAX,
                module: u32::MAX,
                file: u32::MAX,
                line: u32::MAX,
            })
            .collect(),
    };
    w.write_symbols(&big).expect("split");
    assert!(w.chunks_written() >= 2, "{} chunks", w.chunks_written());
    let oom = Oom {
        ts_ns: 0,
        tgid: 0,
        json: vec![b' '; MAX_CHUNK_LEN as usize + 1],
    };
    assert!(matches!(
        w.write_oom(&oom),
        Err(RecordError::ChunkTooLarge { .. })
    ));
    let bytes = w.finish(&Counters::default()).expect("still usable");
    let (rec, warnings) = read_from_bytes(&bytes).expect("read");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(rec.symbols.len(), big.symbols.len());
}

#[test]
fn chunk_writer_buffers_then_writes_whole_chunks() {
    let mut cw = ChunkWriter::new(Vec::new(), &Header::new("")).expect("header");
    let start = cw.bytes_written();
    cw.begin_chunk(ChunkType::Oom as u8)
        .expect("begin")
        .extend_from_slice(b"abc");
    assert!(!cw.flush_if_larger_than(3).expect("no flush"));
    assert_eq!(cw.get_ref().len() as u64, start);
    cw.begin_chunk(ChunkType::Oom as u8)
        .expect("continue")
        .extend_from_slice(b"d");
    assert!(cw.flush_if_larger_than(3).expect("flush"));
    cw.write_chunk(200, b"").expect("empty chunk");
    let bytes = cw.into_inner();
    let chunks: Vec<Chunk> = ChunkReader::new(&bytes[..])
        .expect("header")
        .collect::<Result<_, _>>()
        .expect("chunks");
    assert_eq!(chunks.len(), 2);
    assert_eq!((chunks[0].ty, &chunks[0].payload[..]), (7, &b"abcd"[..]));
    assert_eq!(
        (chunks[1].ty, chunks[1].payload.len(), chunks[1].index),
        (200, 0, 1)
    );
}

#[test]
fn unknown_chunk_types_are_skipped_with_a_warning() {
    let mut cw = ChunkWriter::new(Vec::new(), &Header::new("")).expect("header");
    cw.write_chunk(99, b"from the future").expect("write");
    cw.write_chunk(99, b"again").expect("write");
    let mut footer = BytesMut::new();
    Footer::default().encode(&mut footer);
    cw.write_chunk(ChunkType::Footer as u8, &footer)
        .expect("footer");
    let (rec, warnings) = read_from_bytes(&cw.into_inner()).expect("read");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].message.contains("chunk type 99"),
        "{}",
        warnings[0]
    );
    assert_eq!(rec.chunks, 3);
}

#[test]
fn malloc_free_loop_takes_a_few_bytes_per_event() {
    let events = malloc_free_loop(1_000_000);
    let bytes = record(&events, DEFAULT_BATCH_SIZE);
    let per_event = bytes.len() as f64 / events.len() as f64;
    println!(
        "malloc/free loop: {} bytes for {} events = {per_event:.3} bytes/event",
        bytes.len(),
        events.len()
    );
    assert!(per_event <= 4.0, "{per_event:.3} bytes/event");
    let (rec, warnings) = read_from_bytes(&bytes).expect("read");
    assert!(warnings.is_empty());
    assert!(rec.events == events);

    let random = random_events(5, 100_000);
    let bytes = record(&random, DEFAULT_BATCH_SIZE);
    println!(
        "random stream (every kind, extremes): {:.2} bytes/event",
        bytes.len() as f64 / random.len() as f64
    );
}
