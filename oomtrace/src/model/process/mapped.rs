//! A process's mapped regions, told apart by the `prot` and `flags` its `mmap` events carry:
//!
//! - **direct mappings** (`PROT_READ`/`WRITE` anonymous memory the program maps itself) are heap
//!   to the reader: each is a stack's allocation of its requested bytes, as DESIGN §2 says;
//! - **thread stacks** (`MAP_STACK`: glibc's and musl's `pthread_create`) are threads, not heap:
//!   20 idle threads reserve 160 MiB and keep a few hundred KiB resident;
//! - **reservations** (`PROT_NONE` without `MAP_STACK`: Go's arena hints, guard regions) are
//!   address space only.
//!
//! Each kind shows its reserved bytes (from the events) and its resident bytes (from
//! `/proc/PID/smaps`, sampled by the session and fed back as `Resident` events, so replay agrees).
//! Growth and the OOM story use resident bytes: a direct mapping's stack is sampled into its
//! series at what is resident once a sample came, and thread stacks and reservations never
//! enter the heap at all.

use oomtrace_common::MemEvent;

use super::Process;

/// `range_allocs` value of a thread stack (stack indices stay far below).
pub(super) const THREAD_STACK: u32 = u32::MAX;
/// `range_allocs` value of a `PROT_NONE` reservation.
pub(super) const RESERVATION: u32 = u32::MAX - 1;
/// `MAP_STACK` in the high half of an `Mmap` event's `aux`.
const MAP_STACK: u64 = 0x20000;

/// `alloc_fn` of a `Resident` event: one stack's direct mappings.
pub const RESIDENT_STACK: u16 = 0;
/// `alloc_fn` of a `Resident` event: the thread stacks.
pub const RESIDENT_THREAD_STACKS: u16 = 1;
/// `alloc_fn` of a `Resident` event: the reservations.
pub const RESIDENT_RESERVATIONS: u16 = 2;

/// Live regions of one kind: how many, reserved bytes, resident bytes when sampled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RegionTotals {
    /// Live regions (a region split by a partial unmap counts once).
    pub count: u64,
    /// Bytes of address space they hold.
    pub reserved_bytes: u64,
    /// Bytes of them resident at the last sample (null before the first one).
    pub resident_bytes: Option<u64>,
}

/// A process's mapped regions by kind (report key `mapped` of a process).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Mapped {
    /// Direct anonymous mappings (and `brk` growth) by user code: counted as heap.
    pub direct: RegionTotals,
    /// Thread stacks (`MAP_STACK`): the process's threads, not heap.
    pub thread_stacks: RegionTotals,
    /// `PROT_NONE` reservations: address space, not memory.
    pub reservations: RegionTotals,
}

impl Mapped {
    /// Forgets every live region (the address space was replaced).
    pub(super) fn clear_live(&mut self) {
        *self = Self::default();
    }
}

/// Who owns a mapped piece, for the resident sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MappedOwner {
    /// A direct mapping of this stack.
    Stack(super::StackKey),
    /// A thread stack.
    ThreadStack,
    /// A reservation.
    Reservation,
}

impl Process {
    /// A successful direct `mmap`: a new mapping replaces whatever the model still had at those
    /// addresses (`MAP_FIXED` over a reservation, as Go maps its arenas), then it is filed by
    /// kind.
    pub(super) fn add_mapping(&mut self, ev: &MemEvent) {
        let (start, len) = (ev.addr, ev.size);
        self.remove_range(start, len);
        let region = match ev.aux >> 32 {
            flags if flags & MAP_STACK != 0 => THREAD_STACK,
            _ if ev.aux & 0xffff_ffff == 0 && ev.aux != 0 => RESERVATION,
            _ => return self.add_range(ev, start, len),
        };
        let id = self.next_range_alloc;
        self.next_range_alloc += 1;
        self.ranges.insert(start, len, id);
        self.range_allocs.insert(id, region);
        let totals = self.region_mut(region);
        totals.count += 1;
        totals.reserved_bytes += len;
    }

    fn region_mut(&mut self, region: u32) -> &mut RegionTotals {
        if region == THREAD_STACK {
            &mut self.mapped.thread_stacks
        } else {
            &mut self.mapped.reservations
        }
    }

    /// `bytes` of a thread stack or reservation unmapped; `gone` when it was its last piece.
    pub(super) fn release_region(&mut self, region: u32, bytes: u64, gone: bool) {
        let totals = self.region_mut(region);
        totals.reserved_bytes = totals.reserved_bytes.saturating_sub(bytes);
        if gone {
            totals.count = totals.count.saturating_sub(1);
        }
    }

    /// `bytes` of a direct mapping of stack `stack` unmapped.
    pub(super) fn release_direct(&mut self, stack: u32, bytes: u64, gone: bool) {
        let d = &mut self.mapped.direct;
        d.reserved_bytes = d.reserved_bytes.saturating_sub(bytes);
        if gone {
            d.count = d.count.saturating_sub(1);
        }
        // Nothing left mapped: nothing resident, whatever the last sample said.
        let st = &mut self.stacks[stack as usize];
        if st.counts.outstanding_bytes == 0
            && let Some(old) = st.resident.replace(0)
            && let Some(total) = &mut self.mapped.direct.resident_bytes
        {
            *total = total.saturating_sub(old);
        }
    }

    /// A `Resident` event: what a sample of `/proc/PID/smaps` found resident.
    pub(super) fn apply_resident_sample(&mut self, ev: &MemEvent) {
        if self.mode == crate::mode::Mode::Growth {
            // Its ranges are resident pages already.
            return;
        }
        let bytes = ev.addr;
        match ev.alloc_fn {
            RESIDENT_STACK => {
                let key = super::StackKey {
                    generation: self.generation,
                    call_site: ev.call_site,
                    stack_id: ev.stack_id,
                };
                let Some(&i) = self.index.get(&key) else {
                    return;
                };
                let old = self.stacks[i as usize].resident.replace(bytes).unwrap_or(0);
                let total = self.mapped.direct.resident_bytes.get_or_insert(0);
                *total = total.saturating_sub(old) + bytes;
            }
            RESIDENT_THREAD_STACKS => self.mapped.thread_stacks.resident_bytes = Some(bytes),
            RESIDENT_RESERVATIONS => self.mapped.reservations.resident_bytes = Some(bytes),
            _ => {}
        }
    }

    /// The live mapped pieces `[start, end)` and who owns each, in address order.
    pub fn mapped_pieces(&self) -> Vec<(u64, u64, MappedOwner)> {
        if self.mode == crate::mode::Mode::Growth {
            return Vec::new();
        }
        self.ranges
            .pieces()
            .filter_map(|(start, end, alloc)| {
                let owner = match *self.range_allocs.get(&alloc)? {
                    THREAD_STACK => MappedOwner::ThreadStack,
                    RESERVATION => MappedOwner::Reservation,
                    stack => MappedOwner::Stack(self.stacks.get(stack as usize)?.key),
                };
                Some((start, end, owner))
            })
            .collect()
    }
}

/// The `Resident` events for `pid` that `resident` (bytes per owner) asks for, made from
/// `template` (a synthetic event of that process).
pub fn resident_events(
    template: MemEvent,
    resident: &[(MappedOwner, u64)],
) -> impl Iterator<Item = MemEvent> + '_ {
    resident.iter().map(move |&(owner, bytes)| {
        let (alloc_fn, call_site, stack_id) = match owner {
            MappedOwner::Stack(k) => (RESIDENT_STACK, k.call_site, k.stack_id),
            MappedOwner::ThreadStack => (RESIDENT_THREAD_STACKS, 0, -1),
            MappedOwner::Reservation => (RESIDENT_RESERVATIONS, 0, -1),
        };
        MemEvent {
            kind: oomtrace_common::EventKind::Resident as u16,
            alloc_fn,
            call_site,
            stack_id,
            addr: bytes,
            ..template
        }
    })
}
