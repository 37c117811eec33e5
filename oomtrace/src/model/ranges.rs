//! Address ranges from direct `mmap`/`brk`, which a partial `munmap` can trim or split.
//!
//! One allocation may become several pieces; it stays outstanding until its last piece goes.

use std::collections::BTreeMap;

const PAGE: u64 = 4096;

/// A live piece of an allocation: `[start, end)` within the requested bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    end: u64,
    alloc: u64,
}

/// What removing a range released, per allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Released {
    /// The allocation the bytes belonged to.
    pub alloc: u64,
    /// Requested bytes released.
    pub bytes: u64,
    /// Whether that was the allocation's last piece.
    pub gone: bool,
}

/// Live pieces keyed by start address, and each allocation's piece count.
#[derive(Default, Debug)]
pub struct Ranges {
    pieces: BTreeMap<u64, Piece>,
    counts: std::collections::HashMap<u64, u32>,
}

impl Ranges {
    /// Records allocation `alloc` covering `[start, start + len)`.
    pub fn insert(&mut self, start: u64, len: u64, alloc: u64) {
        if len == 0 {
            return;
        }
        self.pieces.insert(
            start,
            Piece {
                end: start.saturating_add(len),
                alloc,
            },
        );
        *self.counts.entry(alloc).or_default() += 1;
    }

    /// Removes `[start, start + len)` (page-rounded, as the kernel does) from every piece it
    /// overlaps, trimming or splitting them.
    pub fn remove(&mut self, start: u64, len: u64) -> Vec<Released> {
        let end = start.saturating_add(len.div_ceil(PAGE) * PAGE);
        let mut released = Vec::new();
        for (s, p) in self.overlapping(start, end) {
            let (a, b) = self.cut(s, p, start, end);
            let count = self.counts.entry(p.alloc).or_default();
            *count -= 1;
            let gone = *count == 0;
            if gone {
                self.counts.remove(&p.alloc);
            }
            released.push(Released {
                alloc: p.alloc,
                bytes: b - a,
                gone,
            });
        }
        released
    }

    /// Whether `addr` lies in a live piece.
    pub fn covers(&self, addr: u64) -> bool {
        self.pieces
            .range(..=addr)
            .next_back()
            .is_some_and(|(_, p)| p.end > addr)
    }

    /// Moves the pieces within `[old, old + len)` (page-rounded) to the same offsets from `new`,
    /// trimming or splitting pieces that straddle the edges (`mremap` moving a mapping). The
    /// target range must hold no pieces.
    pub fn relocate(&mut self, old: u64, len: u64, new: u64) {
        let end = old.saturating_add(len.div_ceil(PAGE) * PAGE);
        let mut moved = Vec::new();
        for (s, p) in self.overlapping(old, end) {
            // The piece goes on as its moved part (its count stays).
            let (a, b) = self.cut(s, p, old, end);
            moved.push((a - old + new, b - old + new, p.alloc));
        }
        for (a, b, alloc) in moved {
            self.pieces.insert(a, Piece { end: b, alloc });
        }
    }

    /// The pieces overlapping `[start, end)`, last first.
    fn overlapping(&self, start: u64, end: u64) -> Vec<(u64, Piece)> {
        self.pieces
            .range(..end)
            .rev()
            .take_while(|(_, p)| p.end > start)
            .map(|(&s, &p)| (s, p))
            .collect()
    }

    /// Takes piece `(s, p)` out, keeps its parts outside `[start, end)` as pieces of their own
    /// (each counted), and returns the part inside.
    fn cut(&mut self, s: u64, p: Piece, start: u64, end: u64) -> (u64, u64) {
        self.pieces.remove(&s);
        for (a, b) in [(s, start), (end, p.end)] {
            // `s < start` for the left part, `end < p.end` for the right one.
            if a < b {
                self.pieces.insert(
                    a,
                    Piece {
                        end: b,
                        alloc: p.alloc,
                    },
                );
                *self.counts.entry(p.alloc).or_default() += 1;
            }
        }
        (s.max(start), p.end.min(end))
    }

    /// Every live piece as `(start, end, allocation)`, in address order.
    pub fn pieces(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.pieces.iter().map(|(&s, p)| (s, p.end, p.alloc))
    }

    /// Drops every piece (the address space went away).
    pub fn clear(&mut self) {
        self.pieces.clear();
        self.counts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn middle_unmap_splits_and_keeps_the_allocation() {
        let mut r = Ranges::default();
        r.insert(0x10000, 4 * PAGE, 7);
        let rel = r.remove(0x10000 + PAGE, PAGE);
        assert_eq!(
            rel,
            vec![Released {
                alloc: 7,
                bytes: PAGE,
                gone: false
            }]
        );
        let rel = r.remove(0x10000, 4 * PAGE);
        let total: u64 = rel.iter().map(|x| x.bytes).sum();
        assert_eq!(total, 3 * PAGE);
        assert!(rel.iter().any(|x| x.gone));
    }

    #[test]
    fn covers_and_relocate() {
        let mut r = Ranges::default();
        r.insert(0x10000, PAGE, 1);
        r.insert(0x11000, PAGE, 2);
        assert!(r.covers(0x10000) && r.covers(0x11fff));
        assert!(!r.covers(0x12000) && !r.covers(0xffff));
        r.relocate(0x10000, 2 * PAGE, 0x50000);
        assert!(!r.covers(0x10000));
        assert!(r.covers(0x50000) && r.covers(0x51000));
        let rel = r.remove(0x50000, 2 * PAGE);
        assert_eq!(rel.len(), 2);
        assert!(rel.iter().all(|x| x.gone && x.bytes == PAGE));
    }

    #[test]
    fn unmap_of_unknown_range_releases_nothing() {
        let mut r = Ranges::default();
        r.insert(0x10000, PAGE, 1);
        assert!(r.remove(0x20000, PAGE).is_empty());
    }

    #[test]
    fn requested_bytes_not_page_rounded() {
        let mut r = Ranges::default();
        r.insert(0x10000, 100, 1);
        assert_eq!(
            r.remove(0x10000, 100),
            vec![Released {
                alloc: 1,
                bytes: 100,
                gone: true
            }]
        );
    }
}
