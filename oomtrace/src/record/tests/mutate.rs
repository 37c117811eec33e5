//! A small in-tree fuzzer: mutates chunk payloads and then fixes their checksums, so the
//! payload decoders (not just the CRC) see garbage. Reading must never panic.

use super::super::*;
use super::{Lcg, random_events};

/// Rewrites the CRC of the chunk at `start` with payload length `len`.
fn fix_crc(bytes: &mut [u8], start: usize, len: usize) {
    let crc = crc32fast::hash(&bytes[start..start + 5 + len]);
    bytes[start + 5 + len..start + 9 + len].copy_from_slice(&crc.to_le_bytes());
}

fn valid_recording() -> Vec<u8> {
    let events = random_events(41, 1_500);
    let mut w = RecordingWriter::new(Vec::new(), &Header::new("mutate")).expect("header");
    w.set_batch_size(300);
    for (i, ev) in events.iter().enumerate() {
        w.push_event(ev).expect("push");
        if i % 500 == 0 {
            let name = w.intern(&format!("f{i}"));
            w.define_stack(ev.stack_id, &[ev.call_site, ev.addr, 1, u64::MAX]);
            let sym = Symbol {
                addr: ev.call_site,
                function: name,
                module: name,
                file: 0,
                line: 3,
            };
            w.write_symbols(&Symbols {
                tgid: ev.tgid,
                symbols: vec![sym; 3],
            })
            .expect("symbols");
            let mapping = Mapping {
                start: 1,
                end: 9,
                path: name,
                build_id: vec![7; 20],
                ..Mapping::default()
            };
            w.write_maps(&ProcMaps {
                ts_ns: 1,
                tgid: 2,
                mappings: vec![mapping],
            })
            .expect("maps");
            let sample = Sample {
                values: vec![(name, 5)],
                ..Sample::default()
            };
            w.write_sample(&sample).expect("sample");
            w.write_oom(&Oom {
                ts_ns: 3,
                tgid: 4,
                json: b"{}".to_vec(),
            })
            .expect("oom");
            w.write_counters(&Counters {
                other: vec![(name, 1)],
                ..Counters::default()
            })
            .expect("counters");
        }
    }
    w.finish(&Counters::default()).expect("finish")
}

#[test]
fn mutated_payloads_with_valid_checksums_never_panic() {
    let bytes = valid_recording();
    let chunks: Vec<(usize, usize)> = ChunkReader::new(&bytes[..])
        .expect("header")
        .map(|c| {
            let c = c.expect("intact");
            (c.offset as usize, c.payload.len())
        })
        .collect();
    let mut rng = Lcg::new(77);
    let mut rejected = 0;
    for _ in 0..4_000 {
        let mut damaged = bytes.clone();
        let (start, len) = chunks[rng.below(chunks.len() as u64) as usize];
        if len == 0 {
            continue;
        }
        for _ in 0..1 + rng.below(4) {
            let at = start + 5 + rng.below(len as u64) as usize;
            damaged[at] = match rng.below(5) {
                0 => damaged[at] ^ (1 << rng.below(8)),
                1 => 0xff,
                2 => 0x80,
                3 => 0,
                _ => rng.next_u64() as u8,
            };
        }
        if rng.chance(10) {
            damaged[start + 4] = 1 + rng.below(9) as u8;
        }
        fix_crc(&mut damaged, start, len);
        let (rec, warnings) = read_from_bytes(&damaged).expect("the header is intact");
        assert!(rec.readable_bytes <= damaged.len() as u64);
        if warnings.iter().any(|w| w.cause.is_some()) {
            rejected += 1;
        }
    }
    // Most mutations must be caught by the decoders themselves.
    assert!(rejected > 1_000, "only {rejected} mutations rejected");
}

#[test]
fn random_payloads_of_every_type_never_panic() {
    let mut rng = Lcg::new(78);
    for _ in 0..20_000 {
        let mut cw = ChunkWriter::new(Vec::new(), &Header::new("")).expect("header");
        for _ in 0..1 + rng.below(3) {
            let len = rng.below(40) as usize;
            let payload: Vec<u8> = (0..len)
                .map(|_| match rng.below(4) {
                    0 => 0,
                    1 => 0x80 | rng.below(128) as u8,
                    _ => rng.below(8) as u8,
                })
                .collect();
            cw.write_chunk(1 + rng.below(10) as u8, &payload)
                .expect("write");
        }
        let bytes = cw.into_inner();
        let (rec, _) = read_from_bytes(&bytes).expect("the header is intact");
        assert!(rec.readable_bytes <= bytes.len() as u64);
    }
}
