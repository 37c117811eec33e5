//! Interning: the writer gives each distinct string and stack one id and writes it once; the
//! reader collects the definitions into tables.
//!
//! String id 0 is the empty string, meaning "unknown"; it is never written. Other ids are
//! assigned from 1 in order of first use. A string id, once defined, never changes meaning; a
//! stack id may be redefined (the kernel's stack map can reuse ids), and the latest wins.

use std::collections::HashMap;
use std::collections::hash_map::{DefaultHasher, Entry};
use std::hash::{Hash, Hasher};

use super::payloads::{Stack, Stacks, Strings, Symbol, SymbolOrigin, SymbolOrigins, Symbols};

/// Writer side: string → id, with the strings not yet written.
#[derive(Debug)]
pub struct StringInterner {
    ids: HashMap<String, u32>,
    next: u32,
    pending: Vec<(u32, String)>,
}

impl Default for StringInterner {
    fn default() -> Self {
        Self::new()
    }
}

impl StringInterner {
    /// An interner that knows only the empty string (id 0).
    pub fn new() -> Self {
        Self {
            ids: HashMap::new(),
            next: 1,
            pending: Vec::new(),
        }
    }

    /// The id of `s`, assigning (and queueing for writing) a new one if `s` is new.
    pub fn intern(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.next;
        self.next = self.next.saturating_add(1);
        self.ids.insert(s.to_owned(), id);
        self.pending.push((id, s.to_owned()));
        id
    }

    /// True if some interned string has not been taken for writing yet.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The strings interned since the last call, as a `Strings` payload.
    pub fn take_pending(&mut self) -> Strings {
        Strings {
            entries: std::mem::take(&mut self.pending),
        }
    }
}

/// Writer side: which stack ids have been defined, and with what frames.
#[derive(Debug, Default)]
pub struct StackInterner {
    known: HashMap<i32, u64>,
    pending: Vec<Stack>,
}

impl StackInterner {
    /// An interner with no stacks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `frames` as stack `id` unless the same frames were already defined for it;
    /// true if queued.
    pub fn define(&mut self, id: i32, frames: &[u64]) -> bool {
        let mut h = DefaultHasher::new();
        frames.hash(&mut h);
        let hash = h.finish();
        match self.known.entry(id) {
            Entry::Occupied(e) if *e.get() == hash => return false,
            Entry::Occupied(mut e) => {
                e.insert(hash);
            }
            Entry::Vacant(e) => {
                e.insert(hash);
            }
        }
        self.pending.push(Stack {
            id,
            frames: frames.to_vec(),
        });
        true
    }

    /// True if `id` has been defined.
    pub fn contains(&self, id: i32) -> bool {
        self.known.contains_key(&id)
    }

    /// True if some defined stack has not been taken for writing yet.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The stacks defined since the last call, as a `Stacks` payload.
    pub fn take_pending(&mut self) -> Stacks {
        Stacks {
            stacks: std::mem::take(&mut self.pending),
        }
    }
}

/// Reader side: string id → text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StringTable {
    strings: HashMap<u32, String>,
}

impl StringTable {
    /// A table that knows only the empty string (id 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a definition; `Err` if `id` already means a different string.
    pub fn insert(&mut self, id: u32, s: String) -> Result<(), &'static str> {
        if id == 0 {
            return if s.is_empty() {
                Ok(())
            } else {
                Err("string id 0 is reserved for the empty string")
            };
        }
        match self.strings.entry(id) {
            Entry::Occupied(e) if *e.get() == s => Ok(()),
            Entry::Occupied(_) => Err("a string id is defined twice with different text"),
            Entry::Vacant(e) => {
                e.insert(s);
                Ok(())
            }
        }
    }

    /// The text of string `id`, if defined.
    pub fn get(&self, id: u32) -> Option<&str> {
        if id == 0 {
            return Some("");
        }
        self.strings.get(&id).map(String::as_str)
    }

    /// The text of string `id`, or `"?"` if it is not defined.
    pub fn resolve(&self, id: u32) -> &str {
        self.get(id).unwrap_or("?")
    }

    /// Number of strings defined (the empty string not counted).
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// True if no string is defined.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

/// Reader side: (tgid, address) → symbol, and where it lies (build id, offset).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymbolTable {
    symbols: HashMap<(u32, u64), Symbol>,
    origins: HashMap<(u32, u64), SymbolOrigin>,
}

impl SymbolTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the symbols of one chunk.
    pub fn extend(&mut self, chunk: Symbols) {
        self.symbols.reserve(chunk.symbols.len());
        for s in chunk.symbols {
            self.symbols.insert((chunk.tgid, s.addr), s);
        }
    }

    /// Adds (or replaces) the origins of one chunk.
    pub fn extend_origins(&mut self, chunk: SymbolOrigins) {
        self.origins.reserve(chunk.origins.len());
        for o in chunk.origins {
            self.origins.insert((chunk.tgid, o.addr), o);
        }
    }

    /// Where `addr` in process `tgid` lies, if recorded (recordings before origins: never).
    pub fn origin(&self, tgid: u32, addr: u64) -> Option<&SymbolOrigin> {
        self.origins.get(&(tgid, addr))
    }

    /// The symbol of `addr` in process `tgid`, if recorded.
    pub fn get(&self, tgid: u32, addr: u64) -> Option<&Symbol> {
        self.symbols.get(&(tgid, addr))
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// True if there are no symbols.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// All symbols, keyed by (tgid, address), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&(u32, u64), &Symbol)> {
        self.symbols.iter()
    }
}
