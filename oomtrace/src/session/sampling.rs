//! When the session samples, and the resident bytes of mapped regions.
//!
//! **Schedule.** Every [`crate::model::timeline::FAST_TICK`] while a run is young, every
//! `--tick` after (`--all` keeps `--tick` throughout: a /proc walk of every process ten times a
//! second costs too much there). GPU snapshots and resident figures come at most once per
//! `--tick`.
//!
//! **Resident bytes** of direct mappings, thread stacks and reservations come from
//! `/proc/PID/smaps` (`Rss` per mapping, shared out over the model's pieces by overlap). Chosen
//! over `/proc/PID/pagemap` by measurement (a 2-core VM, Linux 6.18): pagemap costs 8 bytes read
//! per *reserved* page whether resident or not (200 idle threads: 3.2 MB per sample; a Go
//! program's 64 GiB of arena reservations would be 128 MB), while smaps walks only page tables
//! that exist: 2.4 ms for 200 thread stacks, 6.8 ms with 512 MiB resident in one mapping. At
//! most [`SMAPS_PER_SAMPLE`] processes are read per sample, in turn.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use oomtrace_common::EventKind;

use super::ingest::Session;
use crate::model::process::MappedOwner;
use crate::model::timeline::{FAST_PHASE, next_tick};

/// Processes whose smaps is read per sample.
const SMAPS_PER_SAMPLE: usize = 16;

/// The sampling schedule and what it last sent.
pub struct Sampling {
    /// `--tick`: the coarse period.
    pub tick: Duration,
    /// Whether the run starts with fast ticks.
    pub fast: bool,
    started: Instant,
    last_coarse: Option<Instant>,
    /// Resident bytes last sent, per process and owner (only changes are sent again).
    sent: HashMap<u32, HashMap<MappedOwner, u64>>,
    /// Where the next smaps round starts.
    turn: usize,
}

impl Sampling {
    /// The schedule of a session with `--tick` `tick`.
    pub fn new(tick: Duration, fast: bool) -> Self {
        Self {
            tick,
            fast,
            started: Instant::now(),
            last_coarse: None,
            sent: HashMap::new(),
            turn: 0,
        }
    }

    /// How long until the next sample, from now.
    pub fn next(&self) -> Duration {
        if self.fast {
            next_tick(self.started.elapsed(), self.tick)
        } else {
            self.tick
        }
    }

    /// Whether the once-per-`--tick` samples are due (and counts them taken).
    fn coarse_due(&mut self) -> bool {
        let now = Instant::now();
        // A little slack, so fast ticks that fall just short of a tick do not skip one.
        let due = self
            .last_coarse
            .is_none_or(|t| now.duration_since(t) + Duration::from_millis(20) >= self.tick);
        if due {
            self.last_coarse = Some(now);
        }
        due
    }

    /// The `Tick` event's fields: (fast phase ns, coarse step ns); zeros without a fast phase.
    pub fn tick_fields(&self) -> (u64, u64) {
        if self.fast {
            (FAST_PHASE.as_nanos() as u64, self.tick.as_nanos() as u64)
        } else {
            (0, 0)
        }
    }
}

impl Session {
    /// The samples taken once per `--tick`: GPU memory and mapped regions' resident bytes.
    pub fn sample_coarse(&mut self) {
        if !self.sampling.coarse_due() {
            return;
        }
        self.sample_gpu();
        self.sample_resident();
    }

    /// Reads the smaps of processes with mapped regions (a few per sample, in turn) and sends
    /// what changed as `Resident` events.
    fn sample_resident(&mut self) {
        if self.model.mode == crate::mode::Mode::Growth {
            return;
        }
        let pids: Vec<u32> = self
            .model
            .live_pids()
            .into_iter()
            .filter(|&pid| {
                self.model
                    .process(pid)
                    .is_some_and(|p| p.mapped != Default::default())
            })
            .collect();
        self.sampling.sent.retain(|pid, _| pids.contains(pid));
        if pids.is_empty() {
            return;
        }
        let start = self.sampling.turn % pids.len();
        self.sampling.turn = start + SMAPS_PER_SAMPLE;
        for &pid in pids
            .iter()
            .cycle()
            .skip(start)
            .take(SMAPS_PER_SAMPLE.min(pids.len()))
        {
            let Some(p) = self.model.process(pid) else {
                continue;
            };
            let pieces = p.mapped_pieces();
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
                continue;
            };
            let mut resident = attribute(&pieces, &smaps_rss(&text));
            // Kinds with no region left still say so once (0), so the report never keeps a
            // stale figure.
            for owner in [MappedOwner::ThreadStack, MappedOwner::Reservation] {
                if !resident.iter().any(|r| r.0 == owner) {
                    resident.push((owner, 0));
                }
            }
            let sent = self.sampling.sent.entry(pid).or_default();
            resident.retain(|&(owner, bytes)| sent.insert(owner, bytes) != Some(bytes));
            let template = super::synthetic(EventKind::Resident, pid);
            let events: Vec<_> =
                crate::model::process::resident_events(template, &resident).collect();
            for ev in &events {
                self.feed(ev);
            }
        }
    }
}

/// `(start, end, Rss bytes)` of each mapping in a `/proc/PID/smaps` text.
pub fn smaps_rss(text: &str) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    let mut range = None;
    for line in text.lines() {
        if let Some(kib) = line.strip_prefix("Rss:") {
            if let (Some((a, b)), Ok(kib)) = (
                range.take(),
                kib.trim().trim_end_matches("kB").trim().parse::<u64>(),
            ) {
                out.push((a, b, kib * 1024));
            }
            continue;
        }
        let Some(first) = line.split_ascii_whitespace().next() else {
            continue;
        };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
        {
            range = Some((a, b));
        }
    }
    out
}

/// Resident bytes per owner: each mapping's Rss shared out over the pieces it overlaps, by
/// overlap (a piece is usually a whole mapping).
pub fn attribute(
    pieces: &[(u64, u64, MappedOwner)],
    vmas: &[(u64, u64, u64)],
) -> Vec<(MappedOwner, u64)> {
    let mut by: Vec<(MappedOwner, u64)> = Vec::new();
    for &(start, end, owner) in pieces {
        let first = vmas.partition_point(|v| v.1 <= start);
        let mut bytes: u64 = 0;
        for &(a, b, rss) in vmas[first..].iter().take_while(|v| v.0 < end) {
            let overlap = end.min(b).saturating_sub(start.max(a));
            let len = b - a;
            if len > 0 {
                bytes += (u128::from(rss) * u128::from(overlap) / u128::from(len)) as u64;
            }
        }
        match by.iter_mut().find(|e| e.0 == owner) {
            Some(e) => e.1 += bytes,
            None => by.push((owner, bytes)),
        }
    }
    by
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StackKey;

    const SMAPS: &str = "\
7f0000000000-7f0000800000 rw-p 00000000 00:00 0
Size:               8192 kB
Rss:                  64 kB
Pss:                  64 kB
7f0000800000-7f0000801000 ---p 00000000 00:00 0
Size:                  4 kB
Rss:                   0 kB
7f1000000000-7f1040000000 rw-p 00000000 00:00 0
Size:            1048576 kB
Rss:               10240 kB
";

    #[test]
    fn resident_bytes_by_owner() {
        let vmas = smaps_rss(SMAPS);
        assert_eq!(
            vmas,
            [
                (0x7f0000000000, 0x7f0000800000, 64 << 10),
                (0x7f0000800000, 0x7f0000801000, 0),
                (0x7f1000000000, 0x7f1040000000, 10 << 20),
            ]
        );
        let key = StackKey {
            generation: 0,
            call_site: 1,
            stack_id: -1,
        };
        let pieces = [
            (0x7f0000000000, 0x7f0000801000, MappedOwner::ThreadStack),
            // Half of the big mapping (a partial munmap took the rest).
            (0x7f1000000000, 0x7f1020000000, MappedOwner::Stack(key)),
        ];
        assert_eq!(
            attribute(&pieces, &vmas),
            [
                (MappedOwner::ThreadStack, 64 << 10),
                (MappedOwner::Stack(key), 5 << 20)
            ]
        );
    }

    #[test]
    fn fast_then_coarse() {
        let s = Sampling::new(Duration::from_secs(1), true);
        assert_eq!(s.next(), Duration::from_millis(100));
        assert_eq!(s.tick_fields(), (10_000_000_000, 1_000_000_000));
        let s = Sampling::new(Duration::from_secs(1), false);
        assert_eq!(s.next(), Duration::from_secs(1));
        assert_eq!(s.tick_fields(), (0, 0));
    }
}
