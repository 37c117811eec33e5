//! What the leak scan at a process's exit found (see `crate::leaks`), as the model keeps it:
//! bytes and blocks of each kind, per stack and per process, fed by `Leak` events so a recording
//! replays to the same figures.

use oomtrace_common::MemEvent;

/// How memcheck (and LeakSanitizer) classify a block still allocated at exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakKind {
    /// No pointer to it anywhere (not even from another lost block).
    DefinitelyLost = 0,
    /// Pointed to only from lost blocks (the nodes of a list whose head is lost).
    IndirectlyLost = 1,
    /// Reached only through a pointer into its middle.
    PossiblyLost = 2,
    /// A pointer to its start is still held (a global table, a static cache).
    StillReachable = 3,
}

impl LeakKind {
    /// Every kind, in code order.
    pub const ALL: [LeakKind; 4] = [
        Self::DefinitelyLost,
        Self::IndirectlyLost,
        Self::PossiblyLost,
        Self::StillReachable,
    ];

    /// The kind of event code `code` (`alloc_fn` of a `Leak` event).
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// Words as memcheck prints them.
    pub fn words(self) -> &'static str {
        match self {
            Self::DefinitelyLost => "definitely lost",
            Self::IndirectlyLost => "indirectly lost",
            Self::PossiblyLost => "possibly lost",
            Self::StillReachable => "still reachable",
        }
    }
}

/// `alloc_fn` of the `Leak` event that closes a process's scan (its counts were all sent).
pub const LEAK_SCAN_DONE: u16 = 0x00ff;

/// Bytes and blocks of each [`LeakKind`] (indexed by its code).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeakCounts {
    /// Requested bytes of each kind.
    pub bytes: [u64; 4],
    /// Blocks of each kind.
    pub blocks: [u64; 4],
}

impl LeakCounts {
    /// Adds `bytes` in `blocks` of `kind`.
    pub fn add(&mut self, kind: LeakKind, bytes: u64, blocks: u64) {
        self.bytes[kind as usize] += bytes;
        self.blocks[kind as usize] += blocks;
    }

    /// Adds every kind of `other`.
    pub fn merge(&mut self, other: &LeakCounts) {
        for k in 0..4 {
            self.bytes[k] += other.bytes[k];
            self.blocks[k] += other.blocks[k];
        }
    }

    /// Bytes of `kind`.
    pub fn bytes_of(&self, kind: LeakKind) -> u64 {
        self.bytes[kind as usize]
    }

    /// The kind holding the most bytes, the worse kind on a tie; `None` when empty.
    pub fn main_kind(&self) -> Option<LeakKind> {
        LeakKind::ALL
            .iter()
            .copied()
            .filter(|&k| self.bytes[k as usize] > 0 || self.blocks[k as usize] > 0)
            .max_by(|a, b| {
                self.bytes[*a as usize]
                    .cmp(&self.bytes[*b as usize])
                    .then(b.cmp(a))
            })
    }

    /// True when no block was classified.
    pub fn is_empty(&self) -> bool {
        self.blocks.iter().all(|&b| b == 0) && self.bytes.iter().all(|&b| b == 0)
    }
}

/// A `Leak` event: `blocks` blocks of `bytes` of `kind` on the stack of `template` (its tgid,
/// call site and stack id), at `ts_ns`.
pub fn leak_event(template: &MemEvent, kind: LeakKind, bytes: u64, blocks: u64) -> MemEvent {
    MemEvent {
        kind: oomtrace_common::EventKind::Leak as u16,
        alloc_fn: kind as u16,
        size: bytes,
        addr: blocks,
        ..*template
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_kind_is_the_largest_then_the_worst() {
        let mut c = LeakCounts::default();
        assert_eq!(c.main_kind(), None);
        c.add(LeakKind::StillReachable, 100, 1);
        c.add(LeakKind::DefinitelyLost, 100, 2);
        assert_eq!(c.main_kind(), Some(LeakKind::DefinitelyLost));
        c.add(LeakKind::IndirectlyLost, 300, 3);
        assert_eq!(c.main_kind(), Some(LeakKind::IndirectlyLost));
        let mut d = LeakCounts::default();
        d.merge(&c);
        d.merge(&c);
        assert_eq!(d.bytes_of(LeakKind::IndirectlyLost), 600);
        assert_eq!(d.blocks, [4, 6, 0, 2]);
        assert_eq!(LeakKind::from_code(3), Some(LeakKind::StillReachable));
        assert_eq!(LeakKind::from_code(4), None);
    }
}
