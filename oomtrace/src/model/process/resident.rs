//! `--mode growth`: a process's resident pages by the stack that faulted them in.
//!
//! Each `Fault` is a one-page range at the page's address (a page that faults twice — read,
//! then write — counts once); munmap, a brk shrink and `madvise(DONTNEED/FREE)` (a `Munmap`
//! with a non-zero `aux`) remove the pages in their range; mremap moves them. `mmap` and brk
//! growth only reserve addresses: not resident, not counted. The per-stack tables, series and
//! growth classifier then work unchanged, on resident bytes.

use oomtrace_common::{EventKind, MemEvent};

use super::Process;

impl Process {
    /// Applies `ev` by growth mode's rules; false when the exact rules apply unchanged.
    pub(super) fn apply_resident(&mut self, kind: EventKind, ev: &MemEvent, track: bool) -> bool {
        match kind {
            EventKind::Fault => {
                if !self.ranges.covers(ev.addr) {
                    if track {
                        self.add_range(ev, ev.addr, ev.size);
                    } else {
                        self.count_untracked(ev);
                    }
                }
            }
            EventKind::Mmap if ev.addr != 0 => {}
            EventKind::Brk => self.resident_brk(ev),
            EventKind::Munmap => self.remove_range(ev.addr, ev.size),
            EventKind::Mremap if ev.addr != 0 => self.resident_mremap(ev),
            _ => return false,
        }
        true
    }

    /// The break moved: a shrink drops the pages above the new break.
    fn resident_brk(&mut self, ev: &MemEvent) {
        let new = ev.addr;
        if new == 0 {
            return;
        }
        if let Some(cur) = self.brk
            && ev.aux != 0
            && new < cur
        {
            self.remove_range(new, cur - new);
        }
        self.brk = Some(new);
    }

    /// `mremap(old, old_len = aux, new_len = size) = addr`: resident pages move with the mapping.
    fn resident_mremap(&mut self, ev: &MemEvent) {
        let (old, old_len, new, new_len) = (ev.old_addr, ev.aux, ev.addr, ev.size);
        if new == old {
            if new_len < old_len {
                self.remove_range(old + new_len, old_len - new_len);
            }
            return;
        }
        // The target was free address space: anything still recorded there is stale.
        self.remove_range(new, new_len);
        self.ranges.relocate(old, old_len.min(new_len), new);
        self.remove_range(old, old_len);
    }
}
