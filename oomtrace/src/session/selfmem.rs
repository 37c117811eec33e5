//! oomtrace's own memory: the limit it keeps to (`--self-max`), and the reading it checks.
//!
//! oomtrace runs on machines already short of memory, and what it holds grows with what the
//! traced world does (live blocks, stacks, processes). Every table has a cap, and on top of
//! that the whole process stops tracing at a limit rather than grow until the OOM killer has
//! to choose: it writes what it has and says why.

/// The default limit: this share of the machine's memory...
const DEFAULT_SHARE: u64 = 8;
/// ...but never below this.
const DEFAULT_FLOOR: u64 = 256 << 20;

/// The default `--self-max`: an eighth of the machine's memory (at least 256 MiB).
pub fn default_limit() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| mem_total(&m))
        .unwrap_or(8 << 30);
    (total / DEFAULT_SHARE).max(DEFAULT_FLOOR)
}

/// `MemTotal` in bytes, from `/proc/meminfo` text.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// oomtrace's resident bytes now (`/proc/self/statm`).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    resident_from_statm(&statm)
}

/// The resident bytes in `statm` text (its second field, in pages).
pub fn resident_from_statm(statm: &str) -> Option<u64> {
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo_and_statm() {
        let m = "MemTotal:       24576000 kB\nMemFree:  1000 kB\n";
        assert_eq!(mem_total(m), Some(24_576_000 * 1024));
        assert_eq!(mem_total("garbage"), None);
        assert_eq!(
            resident_from_statm("1000 250 10 1 0 100 0"),
            Some(250 * 4096)
        );
        assert_eq!(resident_from_statm(""), None);
    }

    #[test]
    fn the_default_is_a_share_of_this_machine_with_a_floor() {
        let total = mem_total(&std::fs::read_to_string("/proc/meminfo").unwrap()).unwrap();
        assert_eq!(default_limit(), (total / 8).max(256 << 20));
        assert!(resident_bytes().unwrap() > 0);
    }
}
