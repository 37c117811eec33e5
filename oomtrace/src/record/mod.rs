//! Recordings: `oomtrace record -o FILE` writes one, `oomtrace report FILE` and friends read it.
//!
//! A recording is the event stream plus everything needed to analyse it offline: interned
//! strings, stacks, symbols, process maps, memory samples, OOM events and loss counters. The
//! byte-level format is documented in `docs/recording-format.md`; in short:
//!
//! - [`format`](mod@format): the container, a versioned header then self-delimiting chunks
//!   (length, type, payload, CRC32), each written whole, so a killed recorder or a full disk
//!   leaves every complete chunk readable;
//! - [`codec`]: chunk types and the compact encoding of [`MemEvent`] batches (a few bytes per
//!   event); [`payloads`]: the other chunk payloads; [`intern`]: string and stack interning;
//! - [`RecordingWriter`] and [`RecordingReader`] tie them together; [`error`] is the typed
//!   error, whose every message names the byte offset of the damage.
//!
//! # Example
//!
//! ```no_run
//! # use oomtrace_common::MemEvent;
//! # fn demo(events: &[MemEvent]) -> Result<(), Box<dyn std::error::Error>> {
//! use oomtrace::record::{Counters, RecordingReader, RecordingWriter};
//!
//! let mut w = RecordingWriter::create("run.oomtrace", "oomtrace record -- ./app")?;
//! for ev in events {
//!     w.push_event(ev)?;
//! }
//! w.finish(&Counters::default())?;
//!
//! let (recording, warnings) = RecordingReader::open("run.oomtrace")?;
//! for w in &warnings {
//!     eprintln!("warning: {w}");
//! }
//! println!("{} events", recording.events.len());
//! # Ok(())
//! # }
//! ```
//!
//! [`MemEvent`]: oomtrace_common::MemEvent

pub mod codec;
pub mod error;
pub mod format;
pub mod intern;
pub mod payloads;
mod reader;
pub mod recorder;
mod wire;
mod writer;

#[cfg(test)]
mod tests;

pub use codec::{ChunkType, EventEncoder, Site, SiteTable, decode_events};
pub use error::RecordError;
pub use format::{Chunk, ChunkReader, ChunkWriter, Header, MAGIC, MAX_CHUNK_LEN, VERSION};
pub use intern::{StackInterner, StringInterner, StringTable, SymbolTable};
pub use payloads::{
    Counters, Footer, Gpu, Mapping, Oom, PERM_EXEC, PERM_READ, PERM_SHARED, PERM_WRITE, ProcMaps,
    Sample, Stack, Stacks, Strings, Symbol, SymbolOrigin, SymbolOrigins, Symbols,
};
pub use reader::{Recording, RecordingReader, Warning};
pub use writer::{DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE, RecordingWriter};

/// Reads a recording held in memory (what the fuzz target feeds); never panics.
pub fn read_from_bytes(bytes: &[u8]) -> Result<(Recording, Vec<Warning>), RecordError> {
    RecordingReader::from_reader(bytes)
}
