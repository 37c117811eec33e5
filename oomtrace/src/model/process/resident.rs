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

#[cfg(test)]
mod tests {
    use oomtrace_common::{EventKind, MemEvent};

    use crate::mode::Mode;
    use crate::model::Model;

    const PAGE: u64 = 4096;

    fn ev(kind: EventKind, addr: u64, size: u64, site: u64) -> MemEvent {
        MemEvent {
            kind: kind as u16,
            alloc_fn: 9,
            tgid: 7,
            tid: 7,
            stack_id: -1,
            ts_ns: 1,
            addr,
            size,
            old_addr: 0,
            call_site: site,
            aux: 0,
        }
    }

    fn fault(addr: u64, site: u64) -> MemEvent {
        ev(EventKind::Fault, addr, PAGE, site)
    }

    fn resident_of(m: &Model, site: u64) -> u64 {
        m.process(7)
            .unwrap()
            .stacks
            .iter()
            .filter(|s| s.key.call_site == site)
            .map(|s| s.counts.outstanding_bytes)
            .sum()
    }

    #[test]
    fn a_page_counts_once_and_goes_with_its_unmap() {
        let mut m = Model::with_mode(Mode::Growth);
        // Anonymous mmap reserves addresses: nothing resident yet.
        m.apply(&ev(EventKind::Mmap, 0x10000, 8 * PAGE, 0x1));
        assert_eq!(m.outstanding(), 0);
        for i in 0..8 {
            m.apply(&fault(0x10000 + i * PAGE, 0xa));
        }
        // Read then write: the second fault of a page is no growth.
        m.apply(&fault(0x10000, 0xb));
        assert_eq!(resident_of(&m, 0xa), 8 * PAGE);
        assert_eq!(resident_of(&m, 0xb), 0);
        // madvise(DONTNEED) of two pages, munmap of two more.
        let mut advise = ev(EventKind::Munmap, 0x10000, 2 * PAGE, 0);
        advise.aux = 4;
        m.apply(&advise);
        m.apply(&ev(EventKind::Munmap, 0x10000 + 6 * PAGE, 2 * PAGE, 0));
        assert_eq!(resident_of(&m, 0xa), 4 * PAGE);
        // A page dropped by madvise that is touched again is growth again.
        m.apply(&fault(0x10000, 0xb));
        assert_eq!(resident_of(&m, 0xb), PAGE);
        assert_eq!(m.outstanding(), 5 * PAGE);
    }

    #[test]
    fn brk_shrink_drops_pages_and_mremap_moves_them() {
        let mut m = Model::with_mode(Mode::Growth);
        let mut brk = ev(EventKind::Brk, 0x100000, 0, 0);
        m.apply(&brk);
        brk.addr = 0x104000;
        brk.aux = 0x104000;
        m.apply(&brk);
        for i in 0..4 {
            m.apply(&fault(0x100000 + i * PAGE, 0xa));
        }
        brk.addr = 0x102000;
        brk.aux = 0x102000;
        m.apply(&brk);
        assert_eq!(resident_of(&m, 0xa), 2 * PAGE);
        // mremap(0x200000, 2 pages → 4 pages) to 0x300000: the resident pages move along.
        for i in 0..2 {
            m.apply(&fault(0x200000 + i * PAGE, 0xc));
        }
        let mut mremap = ev(EventKind::Mremap, 0x300000, 4 * PAGE, 0x1);
        mremap.old_addr = 0x200000;
        mremap.aux = 2 * PAGE;
        m.apply(&mremap);
        assert_eq!(resident_of(&m, 0xc), 2 * PAGE);
        m.apply(&fault(0x300000, 0xd));
        assert_eq!(resident_of(&m, 0xd), 0, "moved pages are still resident");
        m.apply(&ev(EventKind::Munmap, 0x300000, 4 * PAGE, 0));
        assert_eq!(resident_of(&m, 0xc), 0);
    }

    #[test]
    fn exact_mode_ignores_madvise() {
        let mut m = Model::new();
        m.apply(&ev(EventKind::Mmap, 0x10000, 4 * PAGE, 0xa));
        let mut advise = ev(EventKind::Munmap, 0x10000, 4 * PAGE, 0);
        advise.aux = 4;
        m.apply(&advise);
        assert_eq!(resident_of(&m, 0xa), 4 * PAGE);
    }
}
