//! [`RecordingWriter`]: events in, checksummed chunks out.
//!
//! Events are encoded into an in-memory batch as they are pushed; every `batch_size` events
//! (or 1 MiB of encoded batch, or on [`RecordingWriter::flush`]) the batch becomes one `Events`
//! chunk, written whole and flushed. Strings and stacks are interned and written before the
//! first chunk that may refer to them. Every other `write_*` call first writes the pending
//! batch, so chunks appear in the file in the order of the calls. [`RecordingWriter::finish`]
//! writes the footer; a recording without one was cut short, but its complete chunks still
//! read back.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use oomtrace_common::MemEvent;

use super::codec::{ChunkType, EventEncoder};
use super::error::RecordError;
use super::format::{ChunkWriter, Header, MAX_CHUNK_LEN};
use super::intern::{StackInterner, StringInterner};
use super::payloads::{
    Counters, Footer, Gpu, Oom, Payload, ProcMaps, Sample, Stacks, SymbolOrigins, Symbols,
};

/// Events per `Events` chunk unless told otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 4096;
/// The largest batch size accepted (keeps every `Events` chunk far below the chunk limit).
pub const MAX_BATCH_SIZE: usize = 65536;
/// An `Events` chunk is cut once its encoding reaches this many bytes.
const EVENTS_SOFT_LIMIT: usize = 1 << 20;

/// Writes a recording: header, chunks, footer.
pub struct RecordingWriter<W: Write> {
    chunks: ChunkWriter<W>,
    events: EventEncoder,
    strings: StringInterner,
    stacks: StackInterner,
    batch_size: usize,
    events_pushed: u64,
}

impl RecordingWriter<File> {
    /// Creates (or truncates) the file at `path` and writes a header carrying `meta`. A new file
    /// is readable by its owner only (0600): a recording holds a program's stacks and symbols.
    /// A symlink at `path` is refused, never followed (`O_NOFOLLOW`).
    pub fn create(path: impl AsRef<Path>, meta: &str) -> Result<Self, RecordError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        Self::new(file, &Header::new(meta))
    }
}

impl<W: Write> RecordingWriter<W> {
    /// Writes `header` to `out`. `out` should not buffer beyond a chunk (a `File` is ideal):
    /// every chunk is flushed as soon as it is written.
    pub fn new(out: W, header: &Header) -> Result<Self, RecordError> {
        Ok(Self {
            chunks: ChunkWriter::new(out, header)?,
            events: EventEncoder::new(),
            strings: StringInterner::new(),
            stacks: StackInterner::new(),
            batch_size: DEFAULT_BATCH_SIZE,
            events_pushed: 0,
        })
    }

    /// Sets how many events go in one `Events` chunk (clamped to 1..=[`MAX_BATCH_SIZE`]).
    pub fn set_batch_size(&mut self, n: usize) {
        self.batch_size = n.clamp(1, MAX_BATCH_SIZE);
    }

    /// Adds one event; writes an `Events` chunk when the batch is full.
    pub fn push_event(&mut self, ev: &MemEvent) -> Result<(), RecordError> {
        if self.chunks.has_failed() {
            return Err(RecordError::WriterFailed);
        }
        self.events.push(ev);
        self.events_pushed += 1;
        if self.events.len() >= self.batch_size || self.events.encoded_len() >= EVENTS_SOFT_LIMIT {
            self.write_events()?;
        }
        Ok(())
    }

    /// The id of `s` in the recording's string table (0 for the empty string); the string is
    /// written before the next chunk that is not an `Events` chunk.
    pub fn intern(&mut self, s: &str) -> u32 {
        self.strings.intern(s)
    }

    /// Records the frames of stack `id` (written before the next `Events` chunk) unless the
    /// same frames were recorded for it already; true if they are new.
    pub fn define_stack(&mut self, id: i32, frames: &[u64]) -> bool {
        self.stacks.define(id, frames)
    }

    /// True if stack `id` has been defined.
    pub fn has_stack(&self, id: i32) -> bool {
        self.stacks.contains(id)
    }

    /// Writes pending strings, pending stacks and the pending events, then flushes.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        self.write_strings()?;
        self.write_events()
    }

    /// Writes the strings interned since they were last written.
    pub fn write_strings(&mut self) -> Result<(), RecordError> {
        if self.strings.has_pending() {
            let strings = self.strings.take_pending();
            self.write_payload(&strings)?;
        }
        Ok(())
    }

    /// Writes stacks (those whose frames are already recorded under their id are skipped).
    pub fn write_stacks(&mut self, stacks: &Stacks) -> Result<(), RecordError> {
        for s in &stacks.stacks {
            self.stacks.define(s.id, &s.frames);
        }
        self.write_events()
    }

    /// Writes the symbols of one process.
    pub fn write_symbols(&mut self, symbols: &Symbols) -> Result<(), RecordError> {
        self.write_in_order(symbols)
    }

    /// Writes where symbolized addresses of one process lie (build id, offset).
    pub fn write_symbol_origins(&mut self, origins: &SymbolOrigins) -> Result<(), RecordError> {
        self.write_in_order(origins)
    }

    /// Writes a snapshot of one process's mappings.
    pub fn write_maps(&mut self, maps: &ProcMaps) -> Result<(), RecordError> {
        self.write_in_order(maps)
    }

    /// Writes a memory sample.
    pub fn write_sample(&mut self, sample: &Sample) -> Result<(), RecordError> {
        self.write_in_order(sample)
    }

    /// Writes a GPU snapshot.
    pub fn write_gpu(&mut self, gpu: &Gpu) -> Result<(), RecordError> {
        self.write_in_order(gpu)
    }

    /// Writes an OOM event.
    pub fn write_oom(&mut self, oom: &Oom) -> Result<(), RecordError> {
        self.write_in_order(oom)
    }

    /// Writes the tracer's loss counters as they stand now.
    pub fn write_counters(&mut self, counters: &Counters) -> Result<(), RecordError> {
        self.write_in_order(counters)
    }

    /// Writes everything pending and the footer, and returns the underlying writer.
    pub fn finish(mut self, counters: &Counters) -> Result<W, RecordError> {
        let footer = Footer {
            events: self.events_pushed,
            counters: counters.clone(),
        };
        self.write_in_order(&footer)?;
        Ok(self.chunks.into_inner())
    }

    /// Events pushed so far.
    pub fn events_pushed(&self) -> u64 {
        self.events_pushed
    }

    /// Bytes written so far (header and complete chunks).
    pub fn bytes_written(&self) -> u64 {
        self.chunks.bytes_written()
    }

    /// Chunks written so far.
    pub fn chunks_written(&self) -> u64 {
        self.chunks.chunks_written()
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        self.chunks.get_ref()
    }

    /// Writes the pending events (after pending stacks), then `payload` after pending strings.
    fn write_in_order<P: Payload>(&mut self, payload: &P) -> Result<(), RecordError> {
        self.write_events()?;
        self.write_strings()?;
        self.write_payload(payload)
    }

    /// Writes pending stacks, then the pending batch of events as one chunk.
    fn write_events(&mut self) -> Result<(), RecordError> {
        if self.stacks.has_pending() {
            let stacks = self.stacks.take_pending();
            self.write_payload(&stacks)?;
        }
        if self.events.is_empty() {
            return Ok(());
        }
        let buf = self.chunks.begin_chunk(ChunkType::Events as u8)?;
        self.events.take_chunk(buf);
        self.chunks.finish_chunk()
    }

    /// Writes one payload, split over several chunks if it is too big for one.
    fn write_payload<P: Payload>(&mut self, payload: &P) -> Result<(), RecordError> {
        let buf = self.chunks.begin_chunk(P::TYPE as u8)?;
        payload.encode_into(buf);
        let len = buf.len();
        if len > MAX_CHUNK_LEN as usize {
            self.chunks.discard_chunk();
            let (a, b) = payload
                .split()
                .ok_or(RecordError::ChunkTooLarge { len: len as u64 })?;
            self.write_payload(&a)?;
            return self.write_payload(&b);
        }
        self.chunks.finish_chunk()
    }
}
