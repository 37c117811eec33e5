//! Damaged input: truncation, bit flips, bad headers, absurd lengths, a full disk. Reading
//! must give a clean error or the intact prefix with a warning, and never panic.

use std::io::{self, Write};

use bytes::BytesMut;
use oomtrace_common::MemEvent;

use super::super::wire::put_varint;
use super::super::*;
use super::{Lcg, random_events, record};

/// A recording with several chunk types, and its events.
fn sample_recording() -> (Vec<u8>, Vec<MemEvent>) {
    let events = random_events(21, 3_000);
    let mut w = RecordingWriter::new(Vec::new(), &Header::new("damage")).expect("header");
    w.set_batch_size(256);
    for (i, ev) in events.iter().enumerate() {
        w.push_event(ev).expect("push");
        if i % 1000 == 500 {
            let f = w.intern(&format!("fn{i}"));
            w.write_symbols(&Symbols {
                tgid: ev.tgid,
                symbols: vec![Symbol {
                    addr: ev.call_site,
                    function: f,
                    ..Symbol::default()
                }],
            })
            .expect("symbols");
            w.write_sample(&Sample {
                ts_ns: ev.ts_ns,
                tgid: ev.tgid,
                ..Sample::default()
            })
            .expect("sample");
        }
    }
    (w.finish(&Counters::default()).expect("finish"), events)
}

/// For each chunk of a whole recording: (end offset, events in all chunks up to its end).
fn chunk_ends(bytes: &[u8]) -> Vec<(u64, usize)> {
    let mut sites = SiteTable::new();
    let mut events = Vec::new();
    ChunkReader::new(bytes)
        .expect("header")
        .map(|c| {
            let c = c.expect("intact");
            if c.ty == ChunkType::Events as u8 {
                decode_events(&mut &c.payload[..], &mut sites, &mut events).expect("events");
            }
            (c.end(), events.len())
        })
        .collect()
}

/// Events expected from a file whose first `len` bytes are intact.
fn events_before(ends: &[(u64, usize)], len: u64) -> usize {
    ends.iter()
        .take_while(|(end, _)| *end <= len)
        .last()
        .map_or(0, |&(_, n)| n)
}

fn header_len(bytes: &[u8]) -> u64 {
    ChunkReader::new(bytes).expect("header").offset()
}

#[test]
fn truncation_at_any_offset_keeps_the_complete_chunks() {
    let (bytes, events) = sample_recording();
    let ends = chunk_ends(&bytes);
    let header = header_len(&bytes);
    let mut rng = Lcg::new(3);
    let mut cuts: Vec<usize> = (0..=64).collect();
    cuts.extend((0..500).map(|_| rng.below(bytes.len() as u64) as usize));
    cuts.extend(ends.iter().map(|&(end, _)| end as usize - 1));
    cuts.push(bytes.len());
    for cut in cuts {
        match read_from_bytes(&bytes[..cut]) {
            Err(e) => {
                assert!(
                    (cut as u64) < header,
                    "cut {cut}: error after the header: {e}"
                );
                assert!(e.offset().is_some(), "cut {cut}: {e}");
                assert!(e.to_string().contains("byte 0"), "cut {cut}: {e}");
            }
            Ok((rec, warnings)) => {
                assert!(cut as u64 >= header, "cut {cut}: header accepted");
                let want = events_before(&ends, cut as u64);
                assert_eq!(rec.events.len(), want, "cut {cut}");
                assert!(rec.events == events[..want], "cut {cut}: not a prefix");
                assert_eq!(
                    warnings.is_empty(),
                    cut == bytes.len(),
                    "cut {cut}: {warnings:?}"
                );
                if let Some(w) = warnings.first() {
                    let at = rec.readable_bytes.to_string();
                    assert!(w.message.contains(&at), "cut {cut}: {w}");
                }
            }
        }
    }
}

#[test]
fn bit_flips_give_an_error_or_the_prefix_before_the_damaged_chunk() {
    let (bytes, events) = sample_recording();
    let ends = chunk_ends(&bytes);
    let header = header_len(&bytes);
    let mut rng = Lcg::new(4);
    let mut positions: Vec<usize> = (0..header as usize).collect();
    positions.extend((0..500).map(|_| rng.below(bytes.len() as u64) as usize));
    for pos in positions {
        let mut damaged = bytes.clone();
        damaged[pos] ^= 1 << rng.below(8);
        match read_from_bytes(&damaged) {
            Err(e) => assert!((pos as u64) < header, "flip at {pos}: {e}"),
            Ok((rec, warnings)) => {
                assert!(pos as u64 >= header, "flip at {pos} in the header accepted");
                // The damaged chunk and everything after it are dropped.
                let chunk_start = ends
                    .iter()
                    .rev()
                    .map(|&(end, _)| end)
                    .find(|&end| end <= pos as u64)
                    .unwrap_or(header);
                let want = events_before(&ends, chunk_start);
                assert_eq!(rec.events.len(), want, "flip at {pos}");
                assert!(rec.events == events[..want], "flip at {pos}: not a prefix");
                assert!(!warnings.is_empty(), "flip at {pos}: no warning");
                let cause = warnings[0].cause.as_ref().expect("a cause");
                assert_eq!(cause.offset(), Some(chunk_start), "flip at {pos}: {cause}");
            }
        }
    }
}

#[test]
fn empty_file_is_an_error_at_byte_0() {
    let e = read_from_bytes(&[]).expect_err("empty");
    assert!(matches!(e, RecordError::Empty), "{e:?}");
    assert!(e.to_string().contains("byte 0"), "{e}");
}

#[test]
fn wrong_magic_is_an_error_at_byte_0() {
    let mut bytes = record(&random_events(1, 10), 4);
    bytes[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    let e = read_from_bytes(&bytes).expect_err("bad magic");
    assert!(matches!(e, RecordError::BadMagic { .. }), "{e:?}");
    assert!(e.to_string().contains("byte 0"), "{e}");
    let e = read_from_bytes(b"hello").expect_err("short bad magic");
    assert!(matches!(e, RecordError::BadMagic { .. }), "{e:?}");
}

#[test]
fn version_99_is_unsupported() {
    let mut bytes = record(&random_events(1, 10), 4);
    bytes[8..10].copy_from_slice(&99u16.to_le_bytes());
    let e = read_from_bytes(&bytes).expect_err("version");
    assert!(
        matches!(e, RecordError::UnsupportedVersion { found: 99 }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("version 99") && msg.contains("byte 8"),
        "{msg}"
    );
}

#[test]
fn absurd_chunk_length_is_named_with_its_offset() {
    let mut bytes = record(&random_events(1, 10), 4);
    let at = header_len(&bytes);
    bytes[at as usize..at as usize + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut chunks = ChunkReader::new(&bytes[..]).expect("header");
    let e = chunks.next().expect("an item").expect_err("absurd");
    assert!(
        matches!(e, RecordError::AbsurdLength { offset, len: 0xFFFF_FFFF, .. } if offset == at),
        "{e:?}"
    );
    assert!(e.to_string().contains(&format!("byte {at}")), "{e}");
    assert!(chunks.next().is_none(), "the reader stops after an error");

    let (rec, warnings) = read_from_bytes(&bytes).expect("header is fine");
    assert!(rec.events.is_empty());
    assert!(matches!(
        warnings[0].cause,
        Some(RecordError::AbsurdLength { .. })
    ));
    assert!(
        warnings[0].message.contains(&format!("byte {at}")),
        "{}",
        warnings[0]
    );
}

#[test]
fn absurd_lengths_inside_a_checksummed_chunk_allocate_nothing() {
    let bodies: Vec<(ChunkType, Vec<u64>)> = vec![
        (ChunkType::Events, vec![0, 0, u64::MAX >> 4]), // 2^60 events
        (ChunkType::Events, vec![0, u64::MAX]),         // 2^64-1 sites
        (ChunkType::Strings, vec![1, 1, 1 << 40]),      // a 1 TiB string
        (ChunkType::Stacks, vec![1, 0, 1 << 50]),       // a deep stack
        (ChunkType::Symbols, vec![0, 1 << 62]),
        (ChunkType::ProcMaps, vec![0, 0, 1 << 62]),
        (ChunkType::Oom, vec![0, 0, u64::MAX]),
    ];
    for (ty, fields) in bodies {
        let mut payload = BytesMut::new();
        for f in fields {
            put_varint(&mut payload, f);
        }
        let mut cw = ChunkWriter::new(Vec::new(), &Header::new("")).expect("header");
        cw.write_chunk(ty as u8, &payload).expect("write");
        let bytes = cw.into_inner();
        let (rec, warnings) = read_from_bytes(&bytes).expect("header is fine");
        assert!(rec.events.is_empty() && rec.chunks == 0, "{ty:?}");
        let cause = warnings[0].cause.as_ref().expect("a cause");
        assert!(
            matches!(
                cause,
                RecordError::AbsurdLength { .. } | RecordError::PayloadEnds { .. }
            ),
            "{ty:?}: {cause:?}"
        );
        assert!(
            cause.offset().is_some_and(|o| o > header_len(&bytes)),
            "{ty:?}: {cause}"
        );
    }
}

#[test]
fn checksum_mismatch_names_the_chunk_and_what_is_intact() {
    let (mut bytes, _) = sample_recording();
    let ends = chunk_ends(&bytes);
    let third = ends[1].0 as usize;
    bytes[third + 7] ^= 0x10;
    let (rec, warnings) = read_from_bytes(&bytes).expect("read");
    assert_eq!(rec.chunks, 2);
    let cause = warnings[0].cause.as_ref().expect("cause");
    assert!(
        matches!(cause, RecordError::ChecksumMismatch { chunk: 2, .. }),
        "{cause:?}"
    );
    let msg = cause.to_string();
    assert!(
        msg.contains(&format!("byte {third}")) && msg.contains("chunk 3"),
        "{msg}"
    );
    assert!(msg.contains("first 2 chunks"), "{msg}");
    assert!(!msg.contains('\n'));
}

#[test]
fn missing_footer_is_a_warning() {
    let events = random_events(8, 100);
    let mut w = RecordingWriter::new(Vec::new(), &Header::new("")).expect("header");
    for ev in &events {
        w.push_event(ev).expect("push");
    }
    w.flush().expect("flush");
    let bytes = w.get_ref().clone();
    let (rec, warnings) = read_from_bytes(&bytes).expect("read");
    assert_eq!(rec.events, events);
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].message.contains("no footer"), "{}", warnings[0]);
}

/// A sink that takes `left` more bytes, then reports a full disk.
struct FullDisk {
    data: Vec<u8>,
    left: usize,
}

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device",
            ));
        }
        let n = buf.len().min(self.left);
        self.data.extend_from_slice(&buf[..n]);
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_disk_leaves_every_complete_chunk_readable() {
    let events = random_events(31, 2_000);
    let full = record(&events, 100);
    let ends = chunk_ends(&full);
    let header = header_len(&full) as usize;
    let mut rng = Lcg::new(5);
    let mut limits: Vec<usize> = (0..40)
        .map(|_| rng.below(full.len() as u64) as usize)
        .collect();
    limits.extend([header, header + 1, ends[3].0 as usize, full.len() - 1]);
    for limit in limits {
        let disk = FullDisk {
            data: Vec::new(),
            left: limit,
        };
        let mut w = match RecordingWriter::new(
            disk,
            &Header {
                flags: 0,
                created_unix_ns: 1_700_000_000_000_000_000,
                meta: "oomtrace test".into(),
            },
        ) {
            Ok(w) => w,
            Err(e) => {
                assert!(limit < header, "limit {limit}: {e}");
                continue;
            }
        };
        w.set_batch_size(100);
        let mut failed = false;
        for ev in &events {
            if let Err(e) = w.push_event(ev) {
                assert!(
                    matches!(e, RecordError::Io(_) | RecordError::WriterFailed),
                    "{e}"
                );
                failed = true;
            }
        }
        if failed {
            assert!(matches!(
                w.push_event(&events[0]),
                Err(RecordError::WriterFailed)
            ));
        }
        let written = match w.finish(&Counters::default()) {
            Ok(disk) => disk.data,
            Err(_) => {
                // The data the sink accepted before it failed is what a file would hold.
                let mut w2 = FullDisk {
                    data: Vec::new(),
                    left: limit,
                };
                w2.write_all(&full[..limit.min(full.len())]).ok();
                w2.data
            }
        };
        assert_eq!(
            written[..],
            full[..written.len()],
            "limit {limit}: bytes differ"
        );
        let (rec, warnings) = read_from_bytes(&written).expect("header was written");
        let want = events_before(&ends, written.len() as u64);
        assert_eq!(rec.events.len(), want, "limit {limit}");
        assert!(rec.events == events[..want], "limit {limit}");
        assert_eq!(
            warnings.is_empty(),
            written.len() == full.len(),
            "limit {limit}"
        );
    }
}
