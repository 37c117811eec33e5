//! `run --fail-*`: failing chosen allocator calls of an unmodified program.
//!
//! The kernel side decides which calls fail (`oomtrace-ebpf/src/inject.rs`) and stops their
//! thread; this side, on the thread that holds the command under ptrace, makes each stopped call
//! return as its allocator does when out of memory ([`regs`]), and gives the kernel the address
//! ranges its site criteria need ([`layout`]).

pub mod layout;
pub mod regs;

use oomtrace_common::inject::{self as rule, Record, Rule};

use crate::objfile::maps;
use crate::probe::inject::InjectMaps;

/// Inclusive bounds of a requested size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeRange {
    /// Smallest.
    pub min: u64,
    /// Largest.
    pub max: u64,
}

/// What `--fail-*` asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FailSpec {
    /// Function globs, any frame of the stack (`--fail-site`).
    pub sites: Vec<String>,
    /// Function globs, the allocation site only (`--fail-at-site`).
    pub at_sites: Vec<String>,
    /// Only the Nth matching call.
    pub nth: Option<u64>,
    /// Requested sizes.
    pub size: Option<SizeRange>,
    /// Probability of each matching call.
    pub rate: Option<f64>,
    /// The draws' seed.
    pub seed: u64,
    /// The allocator-level cap.
    pub after: Option<u64>,
}

impl FailSpec {
    /// Whether any criterion was given (otherwise nothing is armed).
    pub fn armed(&self) -> bool {
        !self.sites.is_empty()
            || !self.at_sites.is_empty()
            || self.nth.is_some()
            || self.size.is_some()
            || self.rate.is_some()
            || self.after.is_some()
    }

    /// The kernel's rule.
    pub fn rule(&self) -> Rule {
        let mut r = Rule::default();
        if !self.sites.is_empty() {
            r.when |= rule::SITE_ANY;
        }
        if !self.at_sites.is_empty() {
            r.when |= rule::SITE_ONLY;
        }
        if let Some(n) = self.nth {
            r.when |= rule::NTH;
            r.nth = n;
        }
        if let Some(s) = self.size {
            r.when |= rule::SIZE;
            r.size_min = s.min;
            r.size_max = s.max;
        }
        if let Some(p) = self.rate {
            r.when |= rule::RATE;
            // P = 1 is every call: the draw's high half is always below 2^32.
            r.rate = (p * 4_294_967_296.0).round().min(4_294_967_296.0) as u64;
            r.seed = self.seed;
        }
        if let Some(a) = self.after {
            r.when |= rule::AFTER;
            r.after = a;
        }
        r
    }

    /// One line saying what will fail.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.sites.is_empty() {
            parts.push(format!("with a frame in {}", self.sites.join(" or ")));
        }
        if !self.at_sites.is_empty() {
            parts.push(format!("made at {}", self.at_sites.join(" or ")));
        }
        if let Some(s) = self.size {
            parts.push(match (s.min, s.max) {
                (a, b) if a == b => format!("of {a} bytes"),
                (0, b) => format!("of at most {b} bytes"),
                (a, u64::MAX) => format!("of at least {a} bytes"),
                (a, b) => format!("of {a} to {b} bytes"),
            });
        }
        if let Some(a) = self.after {
            parts.push(format!(
                "past {} outstanding",
                crate::report::human_bytes(a)
            ));
        }
        let which = match (self.nth, self.rate) {
            (Some(n), _) => format!("the allocator call #{n}"),
            (None, Some(p)) => format!(
                "each allocator call with probability {p} (seed {}; --fail-seed {} repeats it)",
                self.seed, self.seed
            ),
            (None, None) => "every allocator call".to_owned(),
        };
        let mut line = format!("oomtrace: failing {which}");
        if !parts.is_empty() {
            line.push(' ');
            line.push_str(&parts.join(", "));
        }
        line
    }
}

/// Parses `--fail-size`: `N`, `A-B`, `A-` or `-B` (sizes as `--memory-max` takes them).
pub fn parse_size_range(s: &str) -> Result<SizeRange, String> {
    let size = |t: &str| crate::oom::sizes::parse_size_arg(t.trim());
    let range = match s.split_once('-') {
        None => {
            let n = size(s)?;
            SizeRange { min: n, max: n }
        }
        Some((a, b)) => SizeRange {
            min: if a.trim().is_empty() { 0 } else { size(a)? },
            max: if b.trim().is_empty() {
                u64::MAX
            } else {
                size(b)?
            },
        },
    };
    if range.min > range.max {
        return Err(format!("empty size range {s:?}: its start is past its end"));
    }
    Ok(range)
}

/// Parses `--fail-rate`: a probability in (0, 1].
pub fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid probability {s:?} (a number in (0, 1], e.g. 0.01)"))?;
    if !(p > 0.0 && p <= 1.0) {
        return Err(format!("probability {s} is not in (0, 1]"));
    }
    Ok(p)
}

/// A seed for `--fail-rate` when none was given.
pub fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Small enough to type back.
    (t ^ u64::from(std::process::id()).rotate_left(32)) % 1_000_000_007
}

/// The holder thread's side of injection: serves the stops the kernel makes.
pub struct Injector {
    maps: InjectMaps,
    layout: Option<layout::Resolver>,
    /// Said once each.
    said: std::collections::HashSet<String>,
}

impl Injector {
    /// Serves `spec` with the kernel's maps.
    pub fn new(maps: InjectMaps, spec: &FailSpec) -> Self {
        let layout = if !spec.at_sites.is_empty() {
            Some(layout::Resolver::new(spec.at_sites.clone(), true))
        } else if !spec.sites.is_empty() {
            Some(layout::Resolver::new(spec.sites.clone(), false))
        } else {
            None
        };
        Self {
            maps,
            layout,
            said: Default::default(),
        }
    }

    fn say_once(&mut self, line: String) {
        if self.said.insert(line.clone()) {
            crate::say!("{line}");
        }
    }

    /// Thread `tid` of process `pid` stopped with `sig`: true when the stop was injection's
    /// (served; the signal must not be delivered).
    pub fn on_signal(&mut self, tid: u32, pid: u32, sig: i32) -> bool {
        if sig != libc::SIGSTOP {
            return false;
        }
        let Some(rec) = self.maps.take(tid) else {
            return false;
        };
        let done = match rec.action {
            rule::SYNC => self.sync(tid, pid, &rec),
            rule::FAIL_THROW => match throw_address(pid) {
                Some(at) => regs::throw(tid, &rec, at),
                None => {
                    self.say_once(format!(
                        "oomtrace: warning: cannot make operator new throw in pid {pid} (no \
                         std::__throw_bad_alloc in its C++ runtime): that call went on"
                    ));
                    regs::rerun(tid, &rec)
                }
            },
            _ => regs::fail(tid, &rec, |fs_base| errno_address(tid, pid, fs_base)),
        };
        if let Err(e) = done {
            // ESRCH: the thread died meanwhile; anything else leaves the call as it was.
            if e.raw_os_error() != Some(libc::ESRCH) {
                self.say_once(format!(
                    "oomtrace: warning: cannot rewrite the stopped call in thread {tid}: {e}"
                ));
            }
        }
        true
    }

    /// The first call of a new image: its site ranges now, then the call runs again.
    fn sync(&mut self, tid: u32, pid: u32, rec: &Record) -> std::io::Result<()> {
        if let Some(l) = &mut self.layout {
            let before = l.matched;
            let ranges = l.ranges(pid);
            let left_out = self.maps.set_ranges(pid, &ranges.sites, &ranges.wrappers);
            if left_out > 0 {
                self.say_once(
                    "oomtrace: warning: too many site ranges for the kernel's table: some \
                     --fail-site functions are not matched"
                        .to_owned(),
                );
            }
            if ranges.sites.is_empty() && before == 0 {
                self.say_once(format!(
                    "oomtrace: notice: no function of pid {pid} matches the --fail-site globs \
                     (yet: libraries it loads later are not looked at)"
                ));
            }
        }
        regs::rerun(tid, rec)
    }
}

/// The address of function `name` in process `pid`, from the first executable mapping that
/// defines it.
fn function_address(pid: u32, names: &[&str]) -> Option<(u64, Vec<u8>, u64)> {
    let text = maps::read(pid).ok()?;
    for line in text.lines() {
        if !line.exec() {
            continue;
        }
        let Some((elf, bias)) = layout::mapped_object(pid, &line) else {
            continue;
        };
        for name in names {
            if let Some(f) = elf.function(name) {
                return Some((f.vaddr.wrapping_add(bias), f.code, bias));
            }
        }
    }
    None
}

/// `std::__throw_bad_alloc()` in process `pid` (libstdc++, or libc++).
fn throw_address(pid: u32) -> Option<u64> {
    function_address(
        pid,
        &["_ZSt17__throw_bad_allocv", "_ZNSt3__117__throw_bad_allocEv"],
    )
    .map(|(at, _, _)| at)
}

/// Where thread `tid`'s `errno` is: its thread pointer plus the offset glibc's
/// `__errno_location` loads from its GOT.
fn errno_address(tid: u32, pid: u32, fs_base: u64) -> Option<u64> {
    let (at, code, bias) = function_address(pid, &["__errno_location"])?;
    let slot = regs::errno_slot(&code, at.wrapping_sub(bias))?;
    let offset = regs::peek(tid, slot.wrapping_add(bias)).ok()?;
    Some(fs_base.wrapping_add(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_ranges_parse() {
        assert_eq!(parse_size_range("64"), Ok(SizeRange { min: 64, max: 64 }));
        assert_eq!(
            parse_size_range("1K-1M"),
            Ok(SizeRange {
                min: 1024,
                max: 1 << 20
            })
        );
        assert_eq!(
            parse_size_range("4096-"),
            Ok(SizeRange {
                min: 4096,
                max: u64::MAX
            })
        );
        assert_eq!(parse_size_range("-128"), Ok(SizeRange { min: 0, max: 128 }));
        assert!(parse_size_range("2K-1K").is_err());
        assert!(parse_size_range("lots").is_err());
    }

    #[test]
    fn probabilities_parse() {
        assert_eq!(parse_probability("0.25"), Ok(0.25));
        assert_eq!(parse_probability("1"), Ok(1.0));
        assert!(parse_probability("0").is_err());
        assert!(parse_probability("1.5").is_err());
        assert!(parse_probability("x").is_err());
    }

    #[test]
    fn rules_carry_every_criterion() {
        let spec = FailSpec {
            at_sites: vec!["parse_*".into()],
            nth: Some(3),
            size: Some(SizeRange { min: 8, max: 64 }),
            rate: Some(1.0),
            seed: 7,
            after: Some(1 << 20),
            ..FailSpec::default()
        };
        let r = spec.rule();
        assert_eq!(
            r.when,
            rule::SITE_ONLY | rule::NTH | rule::SIZE | rule::RATE | rule::AFTER
        );
        assert_eq!(
            (r.nth, r.size_min, r.size_max, r.after),
            (3, 8, 64, 1 << 20)
        );
        assert_eq!(r.rate, 1 << 32);
        assert!(spec.armed());
        assert!(!FailSpec::default().armed());
    }
}
