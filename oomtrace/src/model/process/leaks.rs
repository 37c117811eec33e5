//! The leak scan's side of a process: the blocks it is handed at exit, and the `Leak` events
//! that bring its findings back (per stack and kind).

use oomtrace_common::MemEvent;

use super::Process;
use crate::model::leak::{LEAK_SCAN_DONE, LeakCounts, LeakKind};

/// A block still outstanding, for the leak scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeakBlock {
    /// Its address.
    pub addr: u64,
    /// Its requested size.
    pub size: u64,
    /// Its stack's index in [`Process::stacks`].
    pub stack: u32,
    /// The allocator family that handed it out (high byte of `alloc_fn`).
    pub family: u8,
}

impl Process {
    /// Every block still outstanding, by address.
    pub fn leak_blocks(&self) -> Vec<LeakBlock> {
        let mut v: Vec<LeakBlock> = self
            .blocks
            .iter()
            .map(|(&addr, b)| LeakBlock {
                addr,
                size: b.size,
                stack: b.stack(),
                family: b.family(),
            })
            .collect();
        v.sort_unstable_by_key(|b| b.addr);
        v
    }

    /// A `Leak` event: counts of one kind on one stack, or the end of the scan.
    pub(super) fn apply_leak(&mut self, ev: &MemEvent) {
        let totals = self.leaks.get_or_insert_with(LeakCounts::default);
        if ev.alloc_fn == LEAK_SCAN_DONE {
            return;
        }
        let Some(kind) = LeakKind::from_code(ev.alloc_fn) else {
            return;
        };
        totals.add(kind, ev.size, ev.addr);
        let i = self.stack(ev) as usize;
        self.stacks[i]
            .leak
            .get_or_insert_with(Box::default)
            .add(kind, ev.size, ev.addr);
    }
}
