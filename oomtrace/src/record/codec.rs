//! Chunk types, and the compact encoding of [`MemEvent`] batches.
//!
//! An `Events` chunk holds a batch of events. Everything an event shares with an earlier one is
//! left out: the timestamp is a delta-of-delta, the address is "same as the last event", a short
//! delta, or a slot in a 256-entry table of recent addresses, and the context (allocator
//! function, call site, thread, size) is "same as the last event of this kind". The call site of
//! an event is the triple (tgid, call_site, stack_id), interned file-wide as a [`Site`]: a chunk
//! first defines the sites it introduces, then refers to sites by index. All other state starts
//! afresh in each chunk, so a chunk decodes given only the site table of the chunks before it.
//! The byte layout is in `docs/recording-format.md`.

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};
use oomtrace_common::{EventKind, MemEvent};

use super::error::RecordError;
use super::wire::{Cursor, put_varint, put_zigzag, zigzag};

/// What a chunk holds; the container stores it as one byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ChunkType {
    /// A batch of events (see the module docs).
    Events = 1,
    /// Interned strings: id → UTF-8.
    Strings = 2,
    /// Stack traces: stack id → frame addresses.
    Stacks = 3,
    /// Symbols of addresses in one process.
    Symbols = 4,
    /// A snapshot of one process's memory mappings.
    ProcMaps = 5,
    /// A periodic RSS / heap / GPU sample.
    Sample = 6,
    /// An OOM event, as an opaque JSON blob.
    Oom = 7,
    /// Counters of what the tracer lost.
    Counters = 8,
    /// The last chunk of a finished recording.
    Footer = 9,
    /// A GPU memory snapshot (the `oomtrace.gpu/1` JSON), or "unchanged".
    Gpu = 10,
    /// Where symbolized addresses lie: each one's module build id and module-relative offset,
    /// so names can be looked up later (a reader that does not know it skips it).
    SymbolOrigins = 11,
}

impl ChunkType {
    /// The chunk type for a type byte, if this version knows it.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Events,
            2 => Self::Strings,
            3 => Self::Stacks,
            4 => Self::Symbols,
            5 => Self::ProcMaps,
            6 => Self::Sample,
            7 => Self::Oom,
            8 => Self::Counters,
            9 => Self::Footer,
            10 => Self::Gpu,
            11 => Self::SymbolOrigins,
            _ => return None,
        })
    }
}

/// Where an event came from: interned file-wide, referred to by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Site {
    /// Process id.
    pub tgid: u32,
    /// Return address at the allocator's entry.
    pub call_site: u64,
    /// Stack map id (negative: no stack).
    pub stack_id: i32,
}

impl Site {
    fn of(ev: &MemEvent) -> Self {
        Self {
            tgid: ev.tgid,
            call_site: ev.call_site,
            stack_id: ev.stack_id,
        }
    }
}

/// Smallest encoding of one site (three one-byte varints).
const MIN_SITE_LEN: usize = 3;
/// Smallest encoding of one event (head byte and timestamp).
const MIN_EVENT_LEN: usize = 2;

// Head byte: bits 0-3 kind code (0 = kind follows as a varint), then flags and address mode.
const KIND_MASK: u8 = 0x0f;
const SAME_CTX: u8 = 0x10;
const SAME_SIZE: u8 = 0x20;
const ADDR_SHIFT: u8 = 6;
const ADDR_PREV: u8 = 0;
const ADDR_DELTA: u8 = 1;
const ADDR_RECENT: u8 = 2;
const ADDR_ZERO: u8 = 3;

// Context byte, present unless SAME_CTX: which fields follow explicitly.
const CTX_ALLOC_FN: u8 = 0x01;
const CTX_SITE: u8 = 0x02;
const CTX_TID: u8 = 0x04;
const CTX_EXTRA: u8 = 0x08;
const CTX_ALL: u8 = CTX_ALLOC_FN | CTX_SITE | CTX_TID;

/// How a kind's `aux` field is encoded when it has one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Aux {
    None,
    Plain,
    VsAddr,
}

/// Which of `old_addr` and `aux` an event kind uses.
fn extras(kind: u16) -> (bool, Aux) {
    match EventKind::from_u16(kind) {
        Some(EventKind::Realloc) => (true, Aux::None),
        Some(EventKind::Oom) => (true, Aux::Plain),
        Some(EventKind::ProcSample) => (true, Aux::None),
        Some(EventKind::Mremap) => (true, Aux::Plain),
        Some(EventKind::Mmap) => (false, Aux::Plain),
        Some(EventKind::Brk) => (false, Aux::VsAddr),
        Some(EventKind::Fork | EventKind::ExitGroup | EventKind::Signal | EventKind::Status) => {
            (false, Aux::Plain)
        }
        _ => (false, Aux::None),
    }
}

fn kind_code(kind: u16) -> u8 {
    if (1..=u16::from(KIND_MASK)).contains(&kind) {
        kind as u8
    } else {
        0
    }
}

/// The hash of an address into the recent-address table.
fn recent_slot(addr: u64) -> u8 {
    (addr.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

/// The context last seen for one kind code.
#[derive(Clone, Copy)]
struct Slot {
    alloc_fn: u16,
    site: u32,
    tid: u32,
    size: u64,
}

/// Per-chunk coding state, identical on both sides.
struct BatchState {
    prev_ts: u64,
    prev_delta: u64,
    prev_addr: u64,
    recent: [u64; 256],
    slots: [Option<Slot>; 16],
}

impl BatchState {
    fn new(base_ts: u64) -> Self {
        Self {
            prev_ts: base_ts,
            prev_delta: 0,
            prev_addr: 0,
            recent: [0; 256],
            slots: [None; 16],
        }
    }

    fn advance(&mut self, ev: &MemEvent, code: u8, site: u32) {
        self.prev_delta = ev.ts_ns.wrapping_sub(self.prev_ts);
        self.prev_ts = ev.ts_ns;
        self.prev_addr = ev.addr;
        self.recent[usize::from(recent_slot(ev.addr))] = ev.addr;
        self.slots[usize::from(code)] = Some(Slot {
            alloc_fn: ev.alloc_fn,
            site,
            tid: ev.tid,
            size: ev.size,
        });
    }
}

/// Writer side: interns sites and encodes events into the next `Events` chunk.
pub struct EventEncoder {
    sites: HashMap<Site, u32>,
    site_list: Vec<Site>,
    first_new_site: u32,
    new_sites: BytesMut,
    new_site_count: u32,
    body: BytesMut,
    count: u32,
    base_ts: u64,
    state: BatchState,
}

impl Default for EventEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl EventEncoder {
    /// An encoder with no sites interned.
    pub fn new() -> Self {
        Self {
            sites: HashMap::new(),
            site_list: Vec::new(),
            first_new_site: 0,
            new_sites: BytesMut::new(),
            new_site_count: 0,
            body: BytesMut::new(),
            count: 0,
            base_ts: 0,
            state: BatchState::new(0),
        }
    }

    /// Events buffered for the next chunk.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True if no event is buffered.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the buffered events will take in the chunk payload (approximately).
    pub fn encoded_len(&self) -> usize {
        self.new_sites.len() + self.body.len() + 20
    }

    /// The file-wide index of the event's site, interning it (and queueing its definition) if new.
    fn site_index(&mut self, ev: &MemEvent, slot: Option<Slot>) -> u32 {
        let site = Site::of(ev);
        if let Some(s) = slot
            && self.site_list.get(s.site as usize) == Some(&site)
        {
            return s.site;
        }
        if let Some(&index) = self.sites.get(&site) {
            return index;
        }
        let index = self.site_list.len() as u32;
        self.sites.insert(site, index);
        self.site_list.push(site);
        put_varint(&mut self.new_sites, site.tgid.into());
        put_varint(&mut self.new_sites, site.call_site);
        put_zigzag(&mut self.new_sites, site.stack_id.into());
        self.new_site_count += 1;
        index
    }

    /// Appends one event to the batch.
    pub fn push(&mut self, ev: &MemEvent) {
        if self.count == 0 {
            self.base_ts = ev.ts_ns;
            self.state = BatchState::new(ev.ts_ns);
        }
        let code = kind_code(ev.kind);
        let slot = self.state.slots[usize::from(code)];
        let site = self.site_index(ev, slot);
        let (uses_old, aux_mode) = extras(ev.kind);
        let extra = (!uses_old && ev.old_addr != 0) || (aux_mode == Aux::None && ev.aux != 0);

        let mut head = code;
        let ctx = match slot {
            Some(s) => {
                let mut ctx = if extra { CTX_EXTRA } else { 0 };
                if s.alloc_fn != ev.alloc_fn {
                    ctx |= CTX_ALLOC_FN;
                }
                if s.site != site {
                    ctx |= CTX_SITE;
                }
                if s.tid != ev.tid {
                    ctx |= CTX_TID;
                }
                if s.size == ev.size {
                    head |= SAME_SIZE;
                }
                ctx
            }
            None => CTX_ALL | if extra { CTX_EXTRA } else { 0 },
        };
        if ctx == 0 {
            head |= SAME_CTX;
        }
        let delta = ev.addr.wrapping_sub(self.state.prev_addr) as i64;
        let addr_mode = if ev.addr == self.state.prev_addr {
            ADDR_PREV
        } else if ev.addr == 0 {
            ADDR_ZERO
        } else if zigzag(delta) >= 0x80
            && self.state.recent[usize::from(recent_slot(ev.addr))] == ev.addr
        {
            ADDR_RECENT
        } else {
            ADDR_DELTA
        };
        head |= addr_mode << ADDR_SHIFT;

        let b = &mut self.body;
        b.put_u8(head);
        if code == 0 {
            put_varint(b, ev.kind.into());
        }
        if ctx != 0 {
            b.put_u8(ctx);
            if ctx & CTX_ALLOC_FN != 0 {
                put_varint(b, ev.alloc_fn.into());
            }
            if ctx & CTX_SITE != 0 {
                put_varint(b, site.into());
            }
            if ctx & CTX_TID != 0 {
                put_zigzag(b, i64::from(ev.tid) - i64::from(ev.tgid));
            }
        }
        let ts_delta = ev.ts_ns.wrapping_sub(self.state.prev_ts);
        put_zigzag(b, ts_delta.wrapping_sub(self.state.prev_delta) as i64);
        match addr_mode {
            ADDR_DELTA => put_zigzag(b, delta),
            ADDR_RECENT => b.put_u8(recent_slot(ev.addr)),
            _ => {}
        }
        if head & SAME_SIZE == 0 {
            put_varint(b, ev.size);
        }
        let old_delta = ev.old_addr.wrapping_sub(ev.addr) as i64;
        if extra {
            put_zigzag(b, old_delta);
            put_varint(b, ev.aux);
        } else {
            if uses_old {
                put_zigzag(b, old_delta);
            }
            match aux_mode {
                Aux::None => {}
                Aux::Plain => put_varint(b, ev.aux),
                Aux::VsAddr => put_zigzag(b, ev.aux.wrapping_sub(ev.addr) as i64),
            }
        }
        self.state.advance(ev, code, site);
        self.count += 1;
    }

    /// Appends the batch as an `Events` payload to `out` and starts a new batch.
    pub fn take_chunk(&mut self, out: &mut BytesMut) {
        put_varint(out, self.first_new_site.into());
        put_varint(out, self.new_site_count.into());
        out.put_slice(&self.new_sites);
        put_varint(out, self.count.into());
        put_varint(out, self.base_ts);
        out.put_slice(&self.body);
        self.first_new_site = self.site_list.len() as u32;
        self.new_sites.clear();
        self.new_site_count = 0;
        self.body.clear();
        self.count = 0;
    }
}

/// Reader side: the sites defined by the chunks read so far.
#[derive(Clone, Debug, Default)]
pub struct SiteTable {
    sites: Vec<Site>,
}

impl SiteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of sites defined.
    pub fn len(&self) -> usize {
        self.sites.len()
    }

    /// True if no site is defined.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// The site with this index.
    pub fn get(&self, index: u32) -> Option<Site> {
        self.sites.get(index as usize).copied()
    }
}

/// Decodes an `Events` payload from the front of `buf`, appending its sites to `sites` and its
/// events to `out`; on error neither is changed. Offsets in errors count from the start of `buf`.
pub fn decode_events(
    buf: &mut &[u8],
    sites: &mut SiteTable,
    out: &mut Vec<MemEvent>,
) -> Result<(), RecordError> {
    let mut cur = Cursor::new(buf, 0);
    read_events(&mut cur, sites, out)?;
    *buf = &buf[cur.pos()..];
    Ok(())
}

/// Decodes the `Events` payload under `cur`; on error, `sites` and `out` are left as they were.
pub(crate) fn read_events(
    cur: &mut Cursor<'_>,
    sites: &mut SiteTable,
    out: &mut Vec<MemEvent>,
) -> Result<(), RecordError> {
    let (sites_before, out_before) = (sites.sites.len(), out.len());
    let result = read_batch(cur, sites, out);
    if result.is_err() {
        sites.sites.truncate(sites_before);
        out.truncate(out_before);
    }
    result
}

fn read_batch(
    cur: &mut Cursor<'_>,
    sites: &mut SiteTable,
    out: &mut Vec<MemEvent>,
) -> Result<(), RecordError> {
    let first = cur.varint("the first new call site's index")?;
    if first != sites.len() as u64 {
        return Err(cur.malformed("the chunk's call sites do not follow the previous chunk's"));
    }
    let new_sites = cur.count(MIN_SITE_LEN, "the number of new call sites")?;
    sites.sites.reserve(new_sites);
    for _ in 0..new_sites {
        let tgid = cur.u32("a call site's tgid")?;
        let call_site = cur.varint("a call site's address")?;
        let stack_id = cur.i32("a call site's stack id")?;
        sites.sites.push(Site {
            tgid,
            call_site,
            stack_id,
        });
    }
    let count = cur.count(MIN_EVENT_LEN, "the number of events")?;
    let base_ts = cur.varint("the batch's base timestamp")?;
    out.reserve(count);
    let mut st = BatchState::new(base_ts);
    for _ in 0..count {
        let ev = read_event(cur, sites, &mut st)?;
        out.push(ev);
    }
    cur.finish()
}

fn read_event(
    cur: &mut Cursor<'_>,
    sites: &SiteTable,
    st: &mut BatchState,
) -> Result<MemEvent, RecordError> {
    let head = cur.u8("an event")?;
    let code = head & KIND_MASK;
    let kind = if code == 0 {
        cur.u16("an event's kind")?
    } else {
        u16::from(code)
    };
    let slot = st.slots[usize::from(code)];
    let ctx = if head & SAME_CTX != 0 {
        0
    } else {
        let ctx = cur.u8("an event's context flags")?;
        if ctx & !(CTX_ALL | CTX_EXTRA) != 0 {
            return Err(cur.malformed("an event has unknown context flags"));
        }
        ctx
    };
    let prev = match slot {
        Some(s) => s,
        None if ctx & CTX_ALL == CTX_ALL && head & SAME_SIZE == 0 => Slot {
            alloc_fn: 0,
            site: 0,
            tid: 0,
            size: 0,
        },
        None => {
            return Err(cur.malformed(
                "an event refers to an earlier event of its kind that its chunk does not have",
            ));
        }
    };
    let alloc_fn = if ctx & CTX_ALLOC_FN != 0 {
        cur.u16("an event's allocator function")?
    } else {
        prev.alloc_fn
    };
    let site_index = if ctx & CTX_SITE != 0 {
        cur.u32("an event's call site")?
    } else {
        prev.site
    };
    let site = sites
        .get(site_index)
        .ok_or_else(|| cur.malformed("an event refers to an undefined call site"))?;
    let tid = if ctx & CTX_TID != 0 {
        let d = cur.zigzag("an event's thread id")?;
        i64::from(site.tgid)
            .checked_add(d)
            .and_then(|t| u32::try_from(t).ok())
            .ok_or_else(|| cur.malformed("an event's thread id is out of range"))?
    } else {
        prev.tid
    };
    let dod = cur.zigzag("an event's timestamp")? as u64;
    let ts_delta = st.prev_delta.wrapping_add(dod);
    let ts_ns = st.prev_ts.wrapping_add(ts_delta);
    let addr = match head >> ADDR_SHIFT {
        ADDR_PREV => st.prev_addr,
        ADDR_DELTA => st
            .prev_addr
            .wrapping_add(cur.zigzag("an event's address")? as u64),
        ADDR_RECENT => st.recent[usize::from(cur.u8("an event's address slot")?)],
        _ => 0,
    };
    let size = if head & SAME_SIZE != 0 {
        prev.size
    } else {
        cur.varint("an event's size")?
    };
    let (uses_old, aux_mode) = extras(kind);
    let (old_addr, aux) = if ctx & CTX_EXTRA != 0 {
        let old = addr.wrapping_add(cur.zigzag("an event's old address")? as u64);
        (old, cur.varint("an event's aux value")?)
    } else {
        let old = if uses_old {
            addr.wrapping_add(cur.zigzag("an event's old address")? as u64)
        } else {
            0
        };
        let aux = match aux_mode {
            Aux::None => 0,
            Aux::Plain => cur.varint("an event's aux value")?,
            Aux::VsAddr => addr.wrapping_add(cur.zigzag("an event's aux value")? as u64),
        };
        (old, aux)
    };
    let ev = MemEvent {
        kind,
        alloc_fn,
        tgid: site.tgid,
        tid,
        stack_id: site.stack_id,
        ts_ns,
        addr,
        size,
        old_addr,
        call_site: site.call_site,
        aux,
    };
    st.advance(&ev, code, site_index);
    Ok(ev)
}
