//! Payloads of every chunk type but `Events`: strings, stacks, symbols, maps, samples, OOMs,
//! counters and the footer.
//!
//! Each type has `encode(&self, &mut BytesMut)` and `decode(&mut &[u8])`. Strings are referred
//! to by id (see [`super::intern`]); id 0 is always the empty string, meaning "unknown". Every
//! count read from a file is checked against the bytes left before anything is allocated for it.

use bytes::{BufMut, BytesMut};

use super::codec::ChunkType;
use super::error::RecordError;
use super::wire::{Cursor, put_bytes, put_varint, put_zigzag};

/// Mapping permission bit: readable.
pub const PERM_READ: u8 = 1;
/// Mapping permission bit: writable.
pub const PERM_WRITE: u8 = 2;
/// Mapping permission bit: executable.
pub const PERM_EXEC: u8 = 4;
/// Mapping permission bit: shared (not private).
pub const PERM_SHARED: u8 = 8;

/// What the writer needs to know of a payload type.
pub(crate) trait Payload: Sized {
    /// The chunk type that carries it.
    const TYPE: ChunkType;
    /// Appends the encoding.
    fn encode_into(&self, buf: &mut BytesMut);
    /// Two halves that together say the same, for payloads too big for one chunk.
    fn split(&self) -> Option<(Self, Self)> {
        None
    }
}

/// Implements the public `encode`/`decode` pair and [`Payload`] from a `read` function.
macro_rules! payload {
    ($t:ident, $ty:ident $(, split: $field:ident)?) => {
        impl $t {
            /// Appends this payload's encoding to `buf`.
            pub fn encode(&self, buf: &mut BytesMut) {
                self.write(buf);
            }

            /// Decodes a payload from the front of `buf` (offsets in errors count from there).
            pub fn decode(buf: &mut &[u8]) -> Result<Self, RecordError> {
                let mut cur = Cursor::new(buf, 0);
                let v = Self::read(&mut cur)?;
                *buf = &buf[cur.pos()..];
                Ok(v)
            }
        }

        impl Payload for $t {
            const TYPE: ChunkType = ChunkType::$ty;
            fn encode_into(&self, buf: &mut BytesMut) {
                self.write(buf);
            }
            $(fn split(&self) -> Option<(Self, Self)> {
                if self.$field.len() < 2 {
                    return None;
                }
                let (a, b) = self.$field.split_at(self.$field.len() / 2);
                let mut first = self.clone();
                first.$field = a.to_vec();
                let mut second = self.clone();
                second.$field = b.to_vec();
                Some((first, second))
            })?
        }
    };
}

fn put_pairs(buf: &mut BytesMut, pairs: &[(u32, u64)]) {
    put_varint(buf, pairs.len() as u64);
    for &(key, value) in pairs {
        put_varint(buf, key.into());
        put_varint(buf, value);
    }
}

fn read_pairs(cur: &mut Cursor<'_>) -> Result<Vec<(u32, u64)>, RecordError> {
    let n = cur.count(2, "the number of values")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push((cur.u32("a value's key")?, cur.varint("a value")?));
    }
    Ok(out)
}

/// Interned strings: id → UTF-8 text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Strings {
    /// (id, text) pairs.
    pub entries: Vec<(u32, String)>,
}

impl Strings {
    fn write(&self, buf: &mut BytesMut) {
        put_varint(buf, self.entries.len() as u64);
        for (id, s) in &self.entries {
            put_varint(buf, (*id).into());
            put_bytes(buf, s.as_bytes());
        }
    }

    pub(crate) fn read(cur: &mut Cursor<'_>) -> Result<Self, RecordError> {
        let n = cur.count(2, "the number of strings")?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push((cur.u32("a string id")?, cur.string("a string")?));
        }
        Ok(Self { entries })
    }
}
payload!(Strings, Strings, split: entries);

/// One stack trace from the kernel's stack map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stack {
    /// The stack map id events refer to.
    pub id: i32,
    /// Return addresses, innermost first.
    pub frames: Vec<u64>,
}

/// Stack traces by stack id; a later definition of an id replaces an earlier one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stacks {
    /// The stacks.
    pub stacks: Vec<Stack>,
}

impl Stacks {
    fn write(&self, buf: &mut BytesMut) {
        put_varint(buf, self.stacks.len() as u64);
        for stack in &self.stacks {
            put_zigzag(buf, stack.id.into());
            put_varint(buf, stack.frames.len() as u64);
            let mut prev = 0u64;
            for &frame in &stack.frames {
                put_zigzag(buf, frame.wrapping_sub(prev) as i64);
                prev = frame;
            }
        }
    }

    pub(crate) fn read(cur: &mut Cursor<'_>) -> Result<Self, RecordError> {
        let n = cur.count(2, "the number of stacks")?;
        let mut stacks = Vec::with_capacity(n);
        for _ in 0..n {
            let id = cur.i32("a stack id")?;
            let depth = cur.count(1, "a stack's depth")?;
            let mut frames = Vec::with_capacity(depth);
            let mut prev = 0u64;
            for _ in 0..depth {
                prev = prev.wrapping_add(cur.zigzag("a stack frame")? as u64);
                frames.push(prev);
            }
            stacks.push(Stack { id, frames });
        }
        Ok(Self { stacks })
    }
}
payload!(Stacks, Stacks, split: stacks);

/// What one address in a process resolves to; names are string ids (0: unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Symbol {
    /// The address (as it occurs in events and stacks).
    pub addr: u64,
    /// Function name.
    pub function: u32,
    /// Module (binary or shared object) path.
    pub module: u32,
    /// Source file.
    pub file: u32,
    /// Source line (0: unknown).
    pub line: u32,
}

/// Symbols of addresses in one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Symbols {
    /// The process the addresses belong to.
    pub tgid: u32,
    /// The symbols (sorted by address is smallest, but any order works).
    pub symbols: Vec<Symbol>,
}

impl Symbols {
    fn write(&self, buf: &mut BytesMut) {
        put_varint(buf, self.tgid.into());
        put_varint(buf, self.symbols.len() as u64);
        let mut prev = 0u64;
        for s in &self.symbols {
            put_zigzag(buf, s.addr.wrapping_sub(prev) as i64);
            prev = s.addr;
            for v in [s.function, s.module, s.file, s.line] {
                put_varint(buf, v.into());
            }
        }
    }

    pub(crate) fn read(cur: &mut Cursor<'_>) -> Result<Self, RecordError> {
        let tgid = cur.u32("the symbols' tgid")?;
        let n = cur.count(5, "the number of symbols")?;
        let mut symbols = Vec::with_capacity(n);
        let mut prev = 0u64;
        for _ in 0..n {
            prev = prev.wrapping_add(cur.zigzag("a symbol's address")? as u64);
            symbols.push(Symbol {
                addr: prev,
                function: cur.u32("a symbol's function")?,
                module: cur.u32("a symbol's module")?,
                file: cur.u32("a symbol's file")?,
                line: cur.u32("a symbol's line")?,
            });
        }
        Ok(Self { tgid, symbols })
    }
}
payload!(Symbols, Symbols, split: symbols);

/// Where one symbolized address lies: its module's build id (a string id, 0: unknown) and its
/// address in the module's own address space (`None`: unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymbolOrigin {
    /// The address (as it occurs in events and stacks).
    pub addr: u64,
    /// The module's GNU build id, as hex.
    pub build_id: u32,
    /// The address in the module (as in its symbol table).
    pub offset: Option<u64>,
}

/// Origins of symbolized addresses in one process: what `report --debug-dir` needs to name
/// them on another machine. Kept apart from [`Symbols`] so readers that predate it still read
/// the names (they skip this chunk).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymbolOrigins {
    /// The process the addresses belong to.
    pub tgid: u32,
    /// The origins (sorted by address is smallest, but any order works).
    pub origins: Vec<SymbolOrigin>,
}

impl SymbolOrigins {
    fn write(&self, buf: &mut BytesMut) {
        put_varint(buf, self.tgid.into());
        put_varint(buf, self.origins.len() as u64);
        let mut prev = 0u64;
        for o in &self.origins {
            put_zigzag(buf, o.addr.wrapping_sub(prev) as i64);
            prev = o.addr;
            put_varint(buf, o.build_id.into());
            // 0: unknown; else the offset + 1.
            put_varint(buf, o.offset.map_or(0, |v| v.wrapping_add(1)));
        }
    }

    pub(crate) fn read(cur: &mut Cursor<'_>) -> Result<Self, RecordError> {
        let tgid = cur.u32("the symbol origins' tgid")?;
        let n = cur.count(3, "the number of symbol origins")?;
        let mut origins = Vec::with_capacity(n);
        let mut prev = 0u64;
        for _ in 0..n {
            prev = prev.wrapping_add(cur.zigzag("a symbol origin's address")? as u64);
            let build_id = cur.u32("a symbol origin's build id")?;
            let offset = cur.varint("a symbol origin's offset")?;
            origins.push(SymbolOrigin {
                addr: prev,
                build_id,
                offset: offset.checked_sub(1),
            });
        }
        Ok(Self { tgid, origins })
    }
}
payload!(SymbolOrigins, SymbolOrigins, split: origins);

/// One line of `/proc/PID/maps`, with the build id of the mapped file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Offset in the mapped file.
    pub file_offset: u64,
    /// `PERM_*` bits.
    pub perms: u8,
    /// Path or pseudo-path (`[heap]`) as a string id (0: anonymous).
    pub path: u32,
    /// GNU build id of the file (empty: none).
    pub build_id: Vec<u8>,
}

/// A snapshot of one process's memory mappings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcMaps {
    /// When the snapshot was taken (the events' clock).
    pub ts_ns: u64,
    /// The process.
    pub tgid: u32,
    /// Its mappings.
    pub mappings: Vec<Mapping>,
}

impl ProcMaps {
    fn write(&self, buf: &mut BytesMut) {
        put_varint(buf, self.ts_ns);
        put_varint(buf, self.tgid.into());
        put_varint(buf, self.mappings.len() as u64);
        let mut prev_end = 0u64;
        for m in &self.mappings {
            put_zigzag(buf, m.start.wrapping_sub(prev_end) as i64);
            put_varint(buf, m.end.wrapping_sub(m.start));
            put_varint(buf, m.file_offset);
            buf.put_u8(m.perms);
            put_varint(buf, m.path.into());
            put_bytes(buf, &m.build_id);
            prev_end = m.end;
        }
    }

    pub(crate) fn read(cur: &mut Cursor<'_>) -> Result<Self, RecordError> {
        let ts_ns = cur.varint("the maps' timestamp")?;
        let tgid = cur.u32("the maps' tgid")?;
        let n = cur.count(6, "the number of mappings")?;
        let mut mappings = Vec::with_capacity(n);
        let mut prev_end = 0u64;
        for _ in 0..n {
            let start = prev_end.wrapping_add(cur.zigzag("a mapping's start")? as u64);
            let end = start.wrapping_add(cur.varint("a mapping's length")?);
            mappings.push(Mapping {
                start,
                end,
                file_offset: cur.varint("a mapping's file offset")?,
                perms: cur.u8("a mapping's permissions")?,
                path: cur.u32("a mapping's path")?,
                build_id: cur.bytes("a mapping's build id")?.to_vec(),
            });
            prev_end = end;
        }
        Ok(Self {
            ts_ns,
            tgid,
            mappings,
        })
    }
}
payload!(ProcMaps, ProcMaps, split: mappings);

/// A periodic sample of one process's memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// When it was taken (the events' clock).
    pub ts_ns: u64,
    /// The process.
    pub tgid: u32,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Bytes allocated and not yet freed, as the tracer counts them.
    pub heap_outstanding: u64,
    /// Further values (GPU memory, …) as (name string id, value).
    pub values: Vec<(u32, u64)>,
}

impl Sample {
    fn write(&self, buf: &mut BytesMut) {
        put_varint(buf, self.ts_ns);
        put_varint(buf, self.tgid.into());
        put_varint(buf, self.rss_bytes);
        put_varint(buf, self.heap_outstanding);
        put_pairs(buf, &self.values);
    }

    pub(crate) fn read(cur: &mut Cursor<'_>) -> Result<Self, RecordError> {
        Ok(Self {
            ts_ns: cur.varint("the sample's timestamp")?,
            tgid: cur.u32("the sample's tgid")?,
            rss_bytes: cur.varint("the sample's RSS")?,
            heap_outstanding: cur.varint("the sample's heap size")?,
            values: read_pairs(cur)?,
        })
    }
}
payload!(Sample, Sample);

/// An OOM kill or allocation failure, described by an opaque JSON document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Oom {
    /// When it happened (the events' clock).
    pub ts_ns: u64,
    /// The process it happened to.
    pub tgid: u32,
    /// The description, as JSON bytes (not checked by this module).
    pub json: Vec<u8>,
}

impl Oom {
    fn write(&self, buf: &mut BytesMut) {
        put_varint(buf, self.ts_ns);
        put_varint(buf, self.tgid.into());
        put_bytes(buf, &self.json);
    }

    pub(crate) fn read(cur: &mut Cursor<'_>) -> Result<Self, RecordError> {
        Ok(Self {
            ts_ns: cur.varint("the OOM's timestamp")?,
            tgid: cur.u32("the OOM's tgid")?,
            json: cur.bytes("the OOM's JSON")?.to_vec(),
        })
    }
}
payload!(Oom, Oom);

/// A GPU memory snapshot taken at the sampling tick.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gpu {
    /// When it was taken (the events' clock).
    pub ts_ns: u64,
    /// The `oomtrace.gpu/1` JSON bytes; empty means "the same as the previous snapshot".
    pub json: Vec<u8>,
}

impl Gpu {
    fn write(&self, buf: &mut BytesMut) {
        put_varint(buf, self.ts_ns);
        put_bytes(buf, &self.json);
    }

    pub(crate) fn read(cur: &mut Cursor<'_>) -> Result<Self, RecordError> {
        Ok(Self {
            ts_ns: cur.varint("the GPU snapshot's timestamp")?,
            json: cur.bytes("the GPU snapshot's JSON")?.to_vec(),
        })
    }
}
payload!(Gpu, Gpu);

/// What the tracer lost or could not attribute, cumulative since the recording started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events the kernel side could not emit (ring buffer full).
    pub lost_events: u64,
    /// Frees of addresses with no recorded allocation.
    pub unknown_frees: u64,
    /// Stack ids lost to stack-map collisions.
    pub stack_collisions: u64,
    /// Further counters as (name string id, value).
    pub other: Vec<(u32, u64)>,
}

impl Counters {
    fn write(&self, buf: &mut BytesMut) {
        put_varint(buf, self.lost_events);
        put_varint(buf, self.unknown_frees);
        put_varint(buf, self.stack_collisions);
        put_pairs(buf, &self.other);
    }

    pub(crate) fn read(cur: &mut Cursor<'_>) -> Result<Self, RecordError> {
        Ok(Self {
            lost_events: cur.varint("the lost-events counter")?,
            unknown_frees: cur.varint("the unknown-frees counter")?,
            stack_collisions: cur.varint("the stack-collisions counter")?,
            other: read_pairs(cur)?,
        })
    }
}
payload!(Counters, Counters);

/// The last chunk of a recording that was finished properly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Footer {
    /// Events written in the whole file.
    pub events: u64,
    /// The final counters.
    pub counters: Counters,
}

impl Footer {
    fn write(&self, buf: &mut BytesMut) {
        put_varint(buf, self.events);
        self.counters.write(buf);
    }

    pub(crate) fn read(cur: &mut Cursor<'_>) -> Result<Self, RecordError> {
        Ok(Self {
            events: cur.varint("the footer's event count")?,
            counters: Counters::read(cur)?,
        })
    }
}
payload!(Footer, Footer);
