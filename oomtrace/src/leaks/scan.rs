//! The classification memcheck makes at exit, on the blocks oomtrace tracked.
//!
//! 1. **Roots.** Every aligned word of the root regions and every register value that points
//!    into a block marks it: a pointer to its start makes it *reachable*, a pointer into its
//!    middle *possibly* reachable. Marked blocks are scanned in turn: a reachable block passes
//!    on what it points to as roots do, a possibly reachable one passes on "possibly" only.
//!    (This is a fixpoint, so the order blocks are scanned in does not matter.)
//! 2. **Cliques.** The blocks still unmarked are lost. In address order, each one not yet
//!    claimed leads a clique: every unmarked block reachable from it (through any pointer,
//!    start or interior) is *indirectly* lost, and the leader stays *definitely* lost. A leader
//!    reached later by another leader's clique becomes indirect.
//!
//! **Reading.** The blocks are read once, in address order and in large batches (many blocks per
//! `process_vm_readv`), into a compact graph: per block, the blocks its words point into (4
//! bytes an edge). The marking then runs in memory, whatever the heap's shape: a linked list
//! read block by block as a search reaches it would cost a system call per block (measured on
//! a 1 GiB list of 1 KiB blocks, `gates heap 1024`, 2 loaded cores: 7.8 s that way, 2.1–2.8 s
//! this way). Past [`MAX_EDGES`] the graph is dropped and the marking reads blocks as it
//! reaches them, in batches of its frontier.
//!
//! A pointer into a block counts when it lies within the block's requested bytes (or equals the
//! address of a zero-sized block), as memcheck has it. One exception, for glibc: its arena
//! keeps pointers to the free chunk right after a block (`main_arena.top`, the bins), and that
//! chunk's header overlaps the block's last word when the block uses it. Such a pointer, at
//! exactly the offset the block's own chunk-size word names, is the allocator's, not the
//! program's, and is ignored (valgrind never sees it: its blocks come from its own allocator).

use std::collections::HashMap;

use crate::model::leak::LeakKind;
use crate::model::process::LeakBlock;

/// Where a scan reads the traced process's memory.
pub trait Memory {
    /// Reads each `(addr, len)` of `reqs` into consecutive parts of `out` (resized to their
    /// sum); returns per request how many bytes were read (the rest of its part is zeros).
    fn read_many(&mut self, reqs: &[(u64, usize)], out: &mut Vec<u8>) -> Vec<usize>;
}

/// What a scan starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roots {
    /// Memory ranges `[start, end)` scanned word by word (module data, the stack, TLS, ...).
    pub regions: Vec<(u64, u64)>,
    /// Register values of the thread that ended the process.
    pub words: Vec<u64>,
}

/// What a scan cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Root bytes read.
    pub root_bytes: u64,
    /// Block bytes read (a block marked twice is read twice).
    pub block_bytes: u64,
    /// Words that fell inside the heap's address range and were looked up.
    pub lookups: u64,
}

/// Bytes read per `process_vm_readv` batch.
const BATCH_BYTES: usize = 4 << 20;
/// Edges the in-memory graph may hold (4 bytes each): past this, blocks are read as reached.
pub const MAX_EDGES: usize = 16 << 20;
/// An edge's flag: the pointer is into the block's middle, not at its start.
const INTERIOR: u32 = 1 << 31;
/// Requests per batch (`IOV_MAX`).
const BATCH_REQS: usize = 1024;

const UNREACHED: u8 = 0;
const INDIRECT: u8 = 1;
const POSSIBLE: u8 = 2;
const REACHABLE: u8 = 3;

/// Classifies `blocks` (sorted by address, not overlapping) as memcheck would; returns the kind
/// of each, in order.
pub fn classify(
    blocks: &[LeakBlock],
    roots: &Roots,
    mem: &mut dyn Memory,
) -> (Vec<LeakKind>, ScanStats) {
    classify_capped(blocks, roots, mem, MAX_EDGES)
}

/// [`classify`] with the graph capped at `max_edges` edges.
fn classify_capped(
    blocks: &[LeakBlock],
    roots: &Roots,
    mem: &mut dyn Memory,
    max_edges: usize,
) -> (Vec<LeakKind>, ScanStats) {
    let mut m = Marker {
        heap: Heap::new(blocks),
        state: vec![UNREACHED; blocks.len()],
        stack: Vec::new(),
        headers: HashMap::new(),
        stats: ScanStats::default(),
        buf: Vec::new(),
        debug: std::env::var_os("OOMTRACE_DEBUG_LEAKS").is_some(),
        graph: None,
    };
    m.graph = m.build_graph(mem, max_edges);
    for &w in &roots.words {
        if m.debug && m.heap.find(w).is_some() {
            crate::say!("leak scan: a register points to {w:#x}");
        }
        m.reach(w, true, mem);
    }
    for &(start, end) in &roots.regions {
        m.scan_region(start, end, mem);
    }
    m.drain(None, mem);
    for leader in 0..blocks.len() {
        if m.state[leader] == UNREACHED {
            m.stack.push(leader as u32);
            m.drain(Some(leader), mem);
        }
    }
    let kinds = m
        .state
        .iter()
        .map(|&s| match s {
            REACHABLE => LeakKind::StillReachable,
            POSSIBLE => LeakKind::PossiblyLost,
            INDIRECT => LeakKind::IndirectlyLost,
            _ => LeakKind::DefinitelyLost,
        })
        .collect();
    (kinds, m.stats)
}

/// The blocks, searchable by any address inside them.
struct Heap<'a> {
    blocks: &'a [LeakBlock],
    lo: u64,
    hi: u64,
}

impl<'a> Heap<'a> {
    fn new(blocks: &'a [LeakBlock]) -> Self {
        let lo = blocks.first().map_or(u64::MAX, |b| b.addr);
        let hi = blocks
            .iter()
            .map(|b| b.addr.saturating_add(b.size.max(1)))
            .max()
            .unwrap_or(0);
        Self { blocks, lo, hi }
    }

    /// The block `p` points into and whether it points at its start.
    fn find(&self, p: u64) -> Option<(usize, bool)> {
        if p < self.lo || p >= self.hi {
            return None;
        }
        let i = self
            .blocks
            .partition_point(|b| b.addr <= p)
            .checked_sub(1)?;
        let b = &self.blocks[i];
        if p == b.addr {
            Some((i, true))
        } else {
            (p - b.addr < b.size).then_some((i, false))
        }
    }
}

struct Marker<'a> {
    heap: Heap<'a>,
    state: Vec<u8>,
    /// Blocks waiting to be scanned.
    stack: Vec<u32>,
    /// Per block whose header was read: the interior offset that is glibc's next chunk.
    headers: HashMap<usize, Option<u64>>,
    stats: ScanStats,
    buf: Vec<u8>,
    /// A developer's aid: which root word reaches which block, on stderr.
    debug: bool,
    /// Every block's edges, when they fit.
    graph: Option<Graph>,
}

/// The blocks' pointers to one another: block `i`'s edges are
/// `edges[start[i]..start[i + 1]]`, each a block index, [`INTERIOR`] set for a pointer into its
/// middle.
struct Graph {
    start: Vec<u32>,
    edges: Vec<u32>,
}

impl Marker<'_> {
    /// The block word `p` points into (and whether at its start), glibc's chunk headers left
    /// out.
    fn target(&mut self, p: u64, mem: &mut dyn Memory) -> Option<(usize, bool)> {
        let (i, start) = self.heap.find(p)?;
        self.stats.lookups += 1;
        (start || !self.is_chunk_header(i, p, mem)).then_some((i, start))
    }

    /// Phase 1: a word `p` seen in a root (`definite`) or in a block of that state.
    fn reach(&mut self, p: u64, definite: bool, mem: &mut dyn Memory) {
        if let Some((i, start)) = self.target(p, mem) {
            self.reach_block(i, start, definite);
        }
    }

    /// Phase 1: block `i` pointed to (at its `start` or not) from something `definite`.
    fn reach_block(&mut self, i: usize, start: bool, definite: bool) {
        match self.state[i] {
            REACHABLE => {}
            _ if start && definite => {
                self.state[i] = REACHABLE;
                self.stack.push(i as u32);
            }
            UNREACHED => {
                self.state[i] = POSSIBLE;
                self.stack.push(i as u32);
            }
            _ => {}
        }
    }

    /// Phase 2: a word `p` seen in a block of `leader`'s clique.
    fn claim(&mut self, p: u64, leader: usize, mem: &mut dyn Memory) {
        if let Some((i, _)) = self.target(p, mem) {
            self.claim_block(i, leader);
        }
    }

    /// Phase 2: block `i` pointed to from `leader`'s clique.
    fn claim_block(&mut self, i: usize, leader: usize) {
        if self.state[i] == UNREACHED && i != leader {
            self.state[i] = INDIRECT;
            self.stack.push(i as u32);
        }
    }

    /// Whether interior pointer `p` into block `i` is exactly glibc's next-chunk address.
    fn is_chunk_header(&mut self, i: usize, p: u64, mem: &mut dyn Memory) -> bool {
        let b = self.heap.blocks[i];
        let off = p - b.addr;
        // Only the block's last word can hold the next chunk's header.
        if off + 8 < b.size || !off.is_multiple_of(16) {
            return false;
        }
        let next = *self.headers.entry(i).or_insert_with(|| {
            let mut word = Vec::new();
            let got = mem.read_many(&[(b.addr.wrapping_sub(8), 8)], &mut word);
            (got.first() == Some(&8)).then(|| {
                let size_word = u64::from_le_bytes(word[..8].try_into().expect("8 bytes"));
                next_chunk_offset(size_word, b.size)
            })?
        });
        next == Some(off)
    }

    /// Scans a root region, in batches.
    fn scan_region(&mut self, start: u64, end: u64, mem: &mut dyn Memory) {
        let mut at = start.next_multiple_of(8);
        while at < end {
            let len = ((end - at) as usize).min(BATCH_BYTES);
            let got = mem.read_many(&[(at, len)], &mut self.buf);
            self.stats.root_bytes += got[0] as u64;
            let buf = std::mem::take(&mut self.buf);
            for (k, w) in words(&buf[..got[0]]).enumerate() {
                if self.debug
                    && let Some((i, at_start)) = self.heap.find(w)
                {
                    crate::say!(
                        "leak scan: root word at {:#x} (region {start:#x}-{end:#x}) points to \
                         block {:#x}{}",
                        at + 8 * k as u64,
                        self.heap.blocks[i].addr,
                        if at_start { "" } else { " (interior)" }
                    );
                }
                self.reach(w, true, mem);
            }
            self.buf = buf;
            at += len as u64;
        }
    }

    /// Reads every block once, in address order, into the graph; `None` past `max_edges`.
    fn build_graph(&mut self, mem: &mut dyn Memory, max_edges: usize) -> Option<Graph> {
        let blocks = self.heap.blocks;
        // An edge holds a block index below INTERIOR, and `start` an edge count in a u32.
        if blocks.len() >= INTERIOR as usize || max_edges >= u32::MAX as usize {
            return None;
        }
        let mut g = Graph {
            start: Vec::with_capacity(blocks.len() + 1),
            edges: Vec::new(),
        };
        // Requests in address order; a large block is several, in order. The cursor is the next
        // block and how much of it was asked for already.
        let mut reqs: Vec<(u64, usize)> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        let (mut next, mut done) = (0, 0u64);
        while next < blocks.len() {
            let mut bytes = 0;
            while next < blocks.len() && reqs.len() < BATCH_REQS && bytes < BATCH_BYTES {
                let b = blocks[next];
                // A block split between batches is split at a word.
                let room = (BATCH_BYTES - bytes) & !7;
                if room == 0 {
                    break;
                }
                let n = ((b.size - done) as usize).min(room);
                reqs.push((b.addr + done, n));
                owner.push(next);
                bytes += n;
                done += n as u64;
                if done >= b.size {
                    (next, done) = (next + 1, 0);
                }
            }
            let got = mem.read_many(&reqs, &mut self.buf);
            let buf = std::mem::take(&mut self.buf);
            let mut off = 0;
            for (k, &i) in owner.iter().enumerate() {
                while g.start.len() <= i {
                    g.start.push(g.edges.len() as u32);
                }
                let part = &buf[off..off + got[k]];
                off += reqs[k].1;
                self.stats.block_bytes += part.len() as u64;
                for w in words(part) {
                    if let Some((j, start)) = self.target(w, mem) {
                        g.edges.push(j as u32 | if start { 0 } else { INTERIOR });
                    }
                }
                if g.edges.len() > max_edges {
                    self.buf = buf;
                    return None;
                }
            }
            self.buf = buf;
            reqs.clear();
            owner.clear();
        }
        while g.start.len() <= blocks.len() {
            g.start.push(g.edges.len() as u32);
        }
        Some(g)
    }

    /// Scans the waiting blocks until none is left: phase 1 without a leader, phase 2 with one.
    fn drain(&mut self, leader: Option<usize>, mem: &mut dyn Memory) {
        if let Some(g) = self.graph.take() {
            while let Some(i) = self.stack.pop() {
                let i = i as usize;
                let definite = self.state[i] == REACHABLE;
                for &e in &g.edges[g.start[i] as usize..g.start[i + 1] as usize] {
                    let (j, start) = ((e & !INTERIOR) as usize, e & INTERIOR == 0);
                    match leader {
                        None => self.reach_block(j, start, definite),
                        Some(l) => self.claim_block(j, l),
                    }
                }
            }
            self.graph = Some(g);
            return;
        }
        let mut reqs: Vec<(u64, usize)> = Vec::new();
        // Per request: whether its block was reachable when taken (what phase 1 passes on).
        let mut which: Vec<bool> = Vec::new();
        while !self.stack.is_empty() {
            reqs.clear();
            which.clear();
            let mut bytes = 0;
            while let Some(&i) = self.stack.last() {
                let b = self.heap.blocks[i as usize];
                let len = (b.size as usize).min(BATCH_BYTES);
                if !reqs.is_empty() && (bytes + len > BATCH_BYTES || reqs.len() == BATCH_REQS) {
                    break;
                }
                self.stack.pop();
                // Phase 1 passes on what the block is at the time it is scanned.
                which.push(self.state[i as usize] == REACHABLE);
                reqs.push((b.addr, len));
                bytes += len;
                // A block larger than a batch: its remainder in batches of its own.
                let mut at = b.addr + len as u64;
                while at < b.addr + b.size {
                    let n = ((b.addr + b.size - at) as usize).min(BATCH_BYTES);
                    self.scan_block_part(i as usize, at, n, leader, mem);
                    at += n as u64;
                }
            }
            let got = mem.read_many(&reqs, &mut self.buf);
            let buf = std::mem::take(&mut self.buf);
            let mut off = 0;
            for (k, &definite) in which.iter().enumerate() {
                let part = &buf[off..off + got[k]];
                off += reqs[k].1;
                self.stats.block_bytes += part.len() as u64;
                for w in words(part) {
                    match leader {
                        None => self.reach(w, definite, mem),
                        Some(l) => self.claim(w, l, mem),
                    }
                }
            }
            self.buf = buf;
        }
    }

    /// Scans `[at, at + n)` of block `i` on its own (the part of a large block beyond a batch).
    fn scan_block_part(
        &mut self,
        i: usize,
        at: u64,
        n: usize,
        leader: Option<usize>,
        mem: &mut dyn Memory,
    ) {
        let definite = self.state[i] == REACHABLE;
        let mut part = Vec::new();
        let got = mem.read_many(&[(at, n)], &mut part);
        self.stats.block_bytes += got[0] as u64;
        for w in words(&part[..got[0]]) {
            match leader {
                None => self.reach(w, definite, mem),
                Some(l) => self.claim(w, l, mem),
            }
        }
    }
}

/// The aligned little-endian words of `bytes` (which starts aligned).
fn words(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
}

/// glibc: the offset from a block's address of the next chunk, from the block's size word (the
/// 8 bytes before it), when that word is a plausible in-arena chunk size for `size` requested
/// bytes and the next chunk's header overlaps the block's last word.
fn next_chunk_offset(size_word: u64, size: u64) -> Option<u64> {
    const IS_MMAPPED: u64 = 2;
    if size_word & IS_MMAPPED != 0 {
        return None;
    }
    let chunk = size_word & !7;
    // A chunk holds its request plus the 8-byte size word, rounded to 16 (at least 32).
    let plausible =
        chunk.is_multiple_of(16) && chunk >= size + 8 && chunk <= (size + 8).max(32) + 48;
    let off = chunk.checked_sub(16)?;
    (plausible && off < size).then_some(off)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory made of words at addresses.
    #[derive(Default)]
    struct Fake(HashMap<u64, u64>);

    impl Fake {
        fn put(&mut self, addr: u64, value: u64) {
            self.0.insert(addr, value);
        }
    }

    impl Memory for Fake {
        fn read_many(&mut self, reqs: &[(u64, usize)], out: &mut Vec<u8>) -> Vec<usize> {
            out.clear();
            for &(addr, len) in reqs {
                for w in 0..len.div_ceil(8) {
                    let v = self.0.get(&(addr + 8 * w as u64)).copied().unwrap_or(0);
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.truncate(out.len() - (len.div_ceil(8) * 8 - len));
            }
            reqs.iter().map(|r| r.1).collect()
        }
    }

    fn block(addr: u64, size: u64) -> LeakBlock {
        LeakBlock {
            addr,
            size,
            stack: 0,
            family: 0,
        }
    }

    const ROOT: u64 = 0x1000;

    /// Classifies with the in-memory graph and without it (reading blocks as reached): both
    /// must agree.
    fn run(blocks: &[LeakBlock], mem: &mut Fake, words: Vec<u64>) -> Vec<LeakKind> {
        let roots = Roots {
            regions: vec![(ROOT, ROOT + 0x100)],
            words,
        };
        let with_graph = classify(blocks, &roots, mem).0;
        let without = classify_capped(blocks, &roots, mem, 0).0;
        assert_eq!(with_graph, without, "graph and remote marking disagree");
        with_graph
    }

    use LeakKind::*;

    #[test]
    fn memcheck_kinds() {
        // A list whose head is lost: head definite, nodes indirect.
        // A global table: reachable, and what it points to too.
        // An interior pointer from a root: possible, and its children possible.
        let blocks = [
            block(0x10000, 32), // lost head
            block(0x10100, 32), // node 1
            block(0x10200, 32), // node 2
            block(0x20000, 64), // table
            block(0x20100, 16), // entry
            block(0x30000, 64), // reached by an interior pointer
            block(0x30100, 16), // its child
            block(0x40000, 0),  // malloc(0), held
        ];
        let mut m = Fake::default();
        m.put(0x10000, 0x10100);
        m.put(0x10100, 0x10200);
        m.put(0x10208, 0x10000); // a cycle back to the head: still one clique
        m.put(ROOT, 0x20000);
        m.put(0x20008, 0x20100);
        m.put(ROOT + 8, 0x30020);
        m.put(0x30000, 0x30100);
        let kinds = run(&blocks, &mut m, vec![0x40000]);
        assert_eq!(
            kinds,
            [
                DefinitelyLost,
                IndirectlyLost,
                IndirectlyLost,
                StillReachable,
                StillReachable,
                PossiblyLost,
                PossiblyLost,
                StillReachable,
            ]
        );
    }

    #[test]
    fn a_start_pointer_later_upgrades_a_possible_block() {
        let blocks = [block(0x10000, 64), block(0x10100, 16)];
        let mut m = Fake::default();
        m.put(ROOT, 0x10010); // interior first
        m.put(ROOT + 8, 0x10000); // then the start
        m.put(0x10000, 0x10100);
        assert_eq!(
            run(&blocks, &mut m, vec![]),
            [StillReachable, StillReachable]
        );
    }

    #[test]
    fn a_later_leader_takes_an_earlier_one_into_its_clique() {
        // B (lower address) is lost and pointed to by A (higher), also lost: A leads.
        let blocks = [block(0x10000, 16), block(0x20000, 16)];
        let mut m = Fake::default();
        m.put(0x20000, 0x10000);
        assert_eq!(
            run(&blocks, &mut m, vec![]),
            [IndirectlyLost, DefinitelyLost]
        );
        // Pointers past the requested bytes do not count.
        let mut m = Fake::default();
        m.put(ROOT, 0x10010);
        assert_eq!(
            run(&blocks, &mut m, vec![]),
            [DefinitelyLost, DefinitelyLost]
        );
    }

    #[test]
    fn glibc_next_chunk_pointer_is_not_an_interior_pointer() {
        // malloc(24): chunk of 32, size word 0x21 (PREV_INUSE); the next chunk (the top) starts
        // at addr + 16, inside the block's 24 bytes. The arena's pointer to it is ignored;
        // another interior pointer is not.
        let blocks = [block(0x10010, 24), block(0x20010, 24)];
        let mut m = Fake::default();
        m.put(0x10008, 0x21);
        m.put(0x20008, 0x21);
        m.put(ROOT, 0x10020);
        m.put(ROOT + 8, 0x20018);
        assert_eq!(run(&blocks, &mut m, vec![]), [DefinitelyLost, PossiblyLost]);
        assert_eq!(next_chunk_offset(0x21, 24), Some(16));
        assert_eq!(next_chunk_offset(0x31, 40), Some(32));
        assert_eq!(next_chunk_offset(0x31, 32), None, "not inside the block");
        assert_eq!(next_chunk_offset(0x23, 24), None, "mmapped");
        assert_eq!(next_chunk_offset(0x1001, 24), None, "implausible");
    }

    #[test]
    fn a_graph_past_its_cap_falls_back_to_reading_blocks_as_reached() {
        // A held list of 100 blocks and a lost one of 100: 198 edges, the cap at 50 is passed
        // halfway through the graph's reading.
        let mut blocks = Vec::new();
        let mut m = Fake::default();
        for list in 0..2u64 {
            for k in 0..100u64 {
                let addr = 0x10_0000 * (list + 1) + 0x100 * k;
                blocks.push(block(addr, 32));
                if k > 0 {
                    m.put(addr, addr - 0x100);
                }
            }
        }
        m.put(ROOT, 0x10_0000 + 0x100 * 99);
        let roots = Roots {
            regions: vec![(ROOT, ROOT + 0x100)],
            words: vec![],
        };
        let (full, full_stats) = classify(&blocks, &roots, &mut m);
        let (capped, capped_stats) = classify_capped(&blocks, &roots, &mut m, 50);
        assert_eq!(full, capped);
        assert!(full[..100].iter().all(|&k| k == StillReachable));
        assert!(full[100..199].iter().all(|&k| k == IndirectlyLost));
        assert_eq!(
            full[199], DefinitelyLost,
            "the lost list's last block leads"
        );
        // The full graph reads each block once; the capped scan read part of them for the graph
        // it dropped, then every block again as the marking reached it.
        assert_eq!(full_stats.block_bytes, 200 * 32);
        assert!(capped_stats.block_bytes > 200 * 32);
        assert!(capped_stats.block_bytes < 2 * 200 * 32);
    }

    #[test]
    fn large_blocks_are_read_in_parts() {
        let big = (BATCH_BYTES as u64) * 2 + 4096;
        let blocks = [block(0x1000_0000, big), block(0x2000_0000, 16)];
        let mut m = Fake::default();
        m.put(ROOT, 0x1000_0000);
        m.put(0x1000_0000 + big - 8, 0x2000_0000);
        let roots = Roots {
            regions: vec![(ROOT, ROOT + 0x100)],
            words: vec![],
        };
        let (kinds, stats) = classify(&blocks, &roots, &mut m);
        assert_eq!(kinds, [StillReachable, StillReachable]);
        assert_eq!(stats.block_bytes, big + 16);
        assert_eq!(stats.root_bytes, 0x100);
    }
}
