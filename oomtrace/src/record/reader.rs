//! [`RecordingReader`]: a whole recording into memory, keeping the readable prefix of a
//! damaged one.
//!
//! A bad header (empty file, wrong magic, unknown version, truncated or corrupted header) is an
//! error: nothing is readable. After the header, the first chunk that is incomplete, fails its
//! checksum, or does not decode ends the reading: everything before it is kept, and a
//! [`Warning`] names the offset. A chunk applies completely or not at all, so the events kept
//! are exactly those of the intact chunks, in order. A recording without a footer (the
//! recorder did not finish) reads fine, with a warning.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use oomtrace_common::MemEvent;

use super::codec::{ChunkType, SiteTable, read_events};
use super::error::RecordError;
use super::format::{Chunk, ChunkReader, Header};
use super::intern::{StringTable, SymbolTable};
use super::payloads::{
    Counters, Footer, Gpu, Oom, ProcMaps, Sample, Stacks, Strings, SymbolOrigins, Symbols,
};
use super::wire::Cursor;

/// Everything a recording holds, decoded.
#[derive(Clone, Debug)]
pub struct Recording {
    /// The file header.
    pub header: Header,
    /// All events, in the order they were recorded.
    pub events: Vec<MemEvent>,
    /// Interned strings.
    pub strings: StringTable,
    /// Stack id → frames (return addresses, innermost first).
    pub stacks: HashMap<i32, Vec<u64>>,
    /// Symbols by (tgid, address).
    pub symbols: SymbolTable,
    /// Mapping snapshots, in file order.
    pub maps: Vec<ProcMaps>,
    /// Memory samples, in file order.
    pub samples: Vec<Sample>,
    /// OOM events, in file order.
    pub ooms: Vec<Oom>,
    /// GPU snapshots, in file order (an empty `json` repeats the previous one).
    pub gpu: Vec<Gpu>,
    /// The last counters written (the footer's, if there is one).
    pub counters: Counters,
    /// The footer, if the recorder finished properly.
    pub footer: Option<Footer>,
    /// Chunks read and applied.
    pub chunks: u64,
    /// Bytes of the intact prefix (header and applied chunks).
    pub readable_bytes: u64,
}

impl Recording {
    fn new(header: Header) -> Self {
        Self {
            readable_bytes: header.encoded_len(),
            header,
            events: Vec::new(),
            strings: StringTable::new(),
            stacks: HashMap::new(),
            symbols: SymbolTable::new(),
            maps: Vec::new(),
            samples: Vec::new(),
            ooms: Vec::new(),
            gpu: Vec::new(),
            counters: Counters::default(),
            footer: None,
            chunks: 0,
        }
    }
}

/// Something wrong with a recording that still left a readable prefix.
#[derive(Debug)]
pub struct Warning {
    /// The byte offset the warning is about.
    pub offset: u64,
    /// One line for the user.
    pub message: String,
    /// The error that ended the reading, if one did.
    pub cause: Option<RecordError>,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Reads recordings (see the module docs for how damage is handled).
pub struct RecordingReader;

impl RecordingReader {
    /// Reads the recording at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<(Recording, Vec<Warning>), RecordError> {
        let file = File::open(path)?;
        Self::from_reader(BufReader::with_capacity(1 << 20, file))
    }

    /// Reads a recording from any byte stream.
    pub fn from_reader<R: Read>(r: R) -> Result<(Recording, Vec<Warning>), RecordError> {
        let mut chunks = ChunkReader::new(r)?;
        let mut loader = Loader {
            rec: Recording::new(chunks.header().clone()),
            sites: SiteTable::new(),
            warnings: Vec::new(),
            unknown_types: Vec::new(),
        };
        let mut stopped = false;
        for item in &mut chunks {
            let result = item.and_then(|chunk| {
                if loader.rec.footer.is_some() {
                    let offset = chunk.offset;
                    loader.warn(
                        offset,
                        format!("ignored data after the footer, from byte {offset}"),
                    );
                    return Ok(false);
                }
                loader.apply(&chunk)?;
                loader.rec.chunks += 1;
                loader.rec.readable_bytes = chunk.end();
                Ok(true)
            });
            match result {
                Ok(true) => {}
                Ok(false) => {
                    stopped = true;
                    break;
                }
                Err(RecordError::Io(e)) => return Err(RecordError::Io(e)),
                Err(e) => {
                    loader.stop(e);
                    stopped = true;
                    break;
                }
            }
        }
        loader.finish(stopped);
        Ok((loader.rec, loader.warnings))
    }
}

/// Reading state beyond what the [`Recording`] keeps.
struct Loader {
    rec: Recording,
    sites: SiteTable,
    warnings: Vec<Warning>,
    unknown_types: Vec<u8>,
}

impl Loader {
    fn warn(&mut self, offset: u64, message: String) {
        self.warnings.push(Warning {
            offset,
            message,
            cause: None,
        });
    }

    /// Records the error that ended the reading.
    fn stop(&mut self, e: RecordError) {
        let offset = e.offset().unwrap_or(self.rec.readable_bytes);
        let message = format!(
            "{}; kept the first {} chunks ({} events, bytes 0..{}) and ignored the rest",
            e.problem(),
            self.rec.chunks,
            self.rec.events.len(),
            self.rec.readable_bytes
        );
        self.warnings.push(Warning {
            offset,
            message,
            cause: Some(e),
        });
    }

    /// Adds the warnings about an unfinished or inconsistent recording.
    fn finish(&mut self, stopped: bool) {
        let end = self.rec.readable_bytes;
        match &self.rec.footer {
            None if !stopped => self.warn(
                end,
                format!(
                    "recording has no footer: the recorder did not finish (killed?); \
                     its {} chunks up to byte {end} are intact",
                    self.rec.chunks
                ),
            ),
            Some(f) if f.events != self.rec.events.len() as u64 => {
                let message = format!(
                    "the footer before byte {end} counts {} events but the file holds {}",
                    f.events,
                    self.rec.events.len()
                );
                self.warn(end, message);
            }
            _ => {}
        }
    }

    /// Decodes one chunk and adds it to the recording, completely or not at all.
    fn apply(&mut self, chunk: &Chunk) -> Result<(), RecordError> {
        let mut cur = Cursor::new(&chunk.payload, chunk.payload_offset());
        let Some(ty) = ChunkType::from_u8(chunk.ty) else {
            if !self.unknown_types.contains(&chunk.ty) {
                self.unknown_types.push(chunk.ty);
                let message = format!(
                    "skipped chunk type {} at byte {} (unknown to this oomtrace; a newer one \
                     may read it)",
                    chunk.ty, chunk.offset
                );
                self.warn(chunk.offset, message);
            }
            return Ok(());
        };
        match ty {
            ChunkType::Events => read_events(&mut cur, &mut self.sites, &mut self.rec.events)?,
            ChunkType::Strings => {
                let strings = Strings::read(&mut cur)?;
                cur.finish()?;
                self.add_strings(strings, chunk.payload_offset())?;
            }
            ChunkType::Stacks => {
                let stacks = Stacks::read(&mut cur)?;
                cur.finish()?;
                for s in stacks.stacks {
                    self.rec.stacks.insert(s.id, s.frames);
                }
            }
            ChunkType::Symbols => {
                let symbols = Symbols::read(&mut cur)?;
                cur.finish()?;
                self.rec.symbols.extend(symbols);
            }
            ChunkType::SymbolOrigins => {
                let origins = SymbolOrigins::read(&mut cur)?;
                cur.finish()?;
                self.rec.symbols.extend_origins(origins);
            }
            ChunkType::ProcMaps => {
                let maps = ProcMaps::read(&mut cur)?;
                cur.finish()?;
                self.rec.maps.push(maps);
            }
            ChunkType::Sample => {
                let sample = Sample::read(&mut cur)?;
                cur.finish()?;
                self.rec.samples.push(sample);
            }
            ChunkType::Oom => {
                let oom = Oom::read(&mut cur)?;
                cur.finish()?;
                self.rec.ooms.push(oom);
            }
            ChunkType::Gpu => {
                let gpu = Gpu::read(&mut cur)?;
                cur.finish()?;
                self.rec.gpu.push(gpu);
            }
            ChunkType::Counters => {
                let counters = Counters::read(&mut cur)?;
                cur.finish()?;
                self.rec.counters = counters;
            }
            ChunkType::Footer => {
                let footer = Footer::read(&mut cur)?;
                cur.finish()?;
                self.rec.counters = footer.counters.clone();
                self.rec.footer = Some(footer);
            }
        }
        Ok(())
    }

    /// Adds string definitions, checking first that none contradicts an earlier one.
    fn add_strings(&mut self, strings: Strings, offset: u64) -> Result<(), RecordError> {
        let conflict = RecordError::Malformed {
            offset,
            what: "a string id is defined twice with different text",
        };
        let mut seen: HashMap<u32, &str> = HashMap::new();
        for (id, s) in &strings.entries {
            let earlier = self.rec.strings.get(*id).or_else(|| seen.get(id).copied());
            if earlier.is_some_and(|old| old != s) || (*id == 0 && !s.is_empty()) {
                return Err(conflict);
            }
            seen.insert(*id, s);
        }
        for (id, s) in strings.entries {
            self.rec
                .strings
                .insert(id, s)
                .map_err(|what| RecordError::Malformed { offset, what })?;
        }
        Ok(())
    }
}
