//! The kernel's own account of OOM kills, read from `/dev/kmsg` for `kernel_log.txt`.
//!
//! [`KernelLog::open`] positions itself at the end of the kernel log, so only messages printed
//! during the run are read; [`KernelLog::read_new`] never blocks. Only kernel messages
//! (facility 0: user space writing to `/dev/kmsg` cannot forge them) are considered, and of
//! those only the OOM report, which the kernel prints as one block:
//!
//! ```text
//! [ 2673.381198] python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
//! [ 2673.381239] CPU: 0 UID: 0 PID: 7739 Comm: python3 Not tainted 6.18.44 #1
//! [ 2673.381361] Call Trace: ...
//! [ 2673.383764] memory: usage 32768kB, limit 32768kB, failcnt 0
//! [ 2673.383777] Memory cgroup stats for /oomtrace-7700-0:  ...
//! [ 2673.386868] Tasks state (memory values in pages): ...
//! [ 2673.386877] oom-kill:constraint=CONSTRAINT_MEMCG,...,task=python3,pid=7739,uid=0
//! [ 2673.386903] Memory cgroup out of memory: Killed process 7739 (python3) total-vm:...
//! ```
//!
//! Every line from `invoked oom-killer` up to and including `Killed process` is kept; outside
//! such a block, lines naming an OOM event on their own are kept (`oom_reaper: reaped process`,
//! a lone `Out of memory`, ...). At most [`MAX_KEPT_BYTES`] are kept per run.

use std::fs::File;
use std::io::{ErrorKind, Read as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::io::AsRawFd as _;

/// The most bytes of kernel lines one [`KernelLog`] keeps.
pub const MAX_KEPT_BYTES: usize = 1 << 20;
/// An OOM block longer than this many lines (a huge task table) stops being followed.
const MAX_BLOCK_LINES: usize = 20_000;
/// The kernel's largest record (`CONSOLE_EXT_LOG_MAX`); reads of `/dev/kmsg` return one each.
const RECORD_MAX: usize = 8192;
/// A bound on the records one [`KernelLog::read_new`] call reads (the ring holds fewer).
const MAX_RECORDS_PER_READ: usize = 1 << 20;

/// Lines that name an OOM event on their own, kept even outside an `invoked oom-killer` block.
const OOM_MARKERS: &[&str] = &[
    "invoked oom-killer",
    "Out of memory",
    "Memory cgroup out of memory",
    "oom-kill:",
    "Killed process",
    "oom_reaper",
    "Memory cgroup stats",
    "Tasks state",
];

/// Decides line by line which kernel lines belong to OOM reports.
#[derive(Debug, Default)]
struct OomFilter {
    /// Lines kept from the current block (its `invoked oom-killer` line included), while in one.
    block: Option<usize>,
}

impl OomFilter {
    fn keep(&mut self, line: &str) -> bool {
        if line.contains("invoked oom-killer") {
            self.block = Some(1);
            return true;
        }
        if let Some(n) = self.block {
            let ends = line.contains("Killed process") || line.contains("oom_reaper");
            self.block = (!ends && n + 1 < MAX_BLOCK_LINES).then_some(n + 1);
            return true;
        }
        OOM_MARKERS.iter().any(|m| line.contains(m))
    }
}

/// The OOM-related lines of `lines`, in order (the pure part of [`KernelLog::read_new`]).
pub fn filter_oom_lines(lines: &[String]) -> Vec<String> {
    let mut filter = OomFilter::default();
    lines.iter().filter(|l| filter.keep(l)).cloned().collect()
}

/// `/dev/kmsg`, opened non-blocking at its end.
#[derive(Debug)]
pub struct KernelLog {
    file: File,
    filter: OomFilter,
    kept_bytes: usize,
    truncated: bool,
}

impl KernelLog {
    /// Opens `/dev/kmsg` at its end; `None` when it is not readable (not root, or restricted).
    pub fn open() -> Option<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .ok()?;
        // SAFETY: lseek on a descriptor we own; /dev/kmsg treats SEEK_END as "after the last
        // record", so earlier messages are skipped.
        if unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) } < 0 {
            return None;
        }
        Some(Self {
            file,
            filter: OomFilter::default(),
            kept_bytes: 0,
            truncated: false,
        })
    }

    /// The OOM lines printed since the last call (`[seconds.micros] text`), without blocking.
    pub fn read_new(&mut self) -> Vec<String> {
        let mut kept = Vec::new();
        let mut buf = vec![0u8; RECORD_MAX];
        for _ in 0..MAX_RECORDS_PER_READ {
            let n = match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // EPIPE: records were overwritten before we read them; the next read goes on
                // with the oldest one still there.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                // EAGAIN (nothing new) or anything unexpected: stop for now.
                Err(_) => break,
            };
            let Some(line) = parse_record(&buf[..n]) else {
                continue;
            };
            if !self.filter.keep(&line) || self.truncated {
                continue;
            }
            if self.kept_bytes + line.len() + 1 > MAX_KEPT_BYTES {
                self.truncated = true;
                kept.push(format!(
                    "[oomtrace: kernel log cut at {} KiB]",
                    MAX_KEPT_BYTES / 1024
                ));
                continue;
            }
            self.kept_bytes += line.len() + 1;
            kept.push(line);
        }
        kept
    }

    /// Whether lines were dropped because [`MAX_KEPT_BYTES`] was reached.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

/// Turns one `/dev/kmsg` record (`prio,seq,usec,flags[,...];text\n[ KEY=value\n]...`) into
/// `[seconds.micros] text`, or `None` when it is not a well-formed kernel (facility 0) record.
fn parse_record(record: &[u8]) -> Option<String> {
    let record = String::from_utf8_lossy(record);
    let (header, rest) = record.split_once(';')?;
    let mut fields = header.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    let _seq = fields.next()?;
    let usec: u64 = fields.next()?.parse().ok()?;
    if prio >> 3 != 0 {
        return None;
    }
    let text = rest.split('\n').next().unwrap_or("");
    Some(format!(
        "[{:5}.{:06}] {text}",
        usec / 1_000_000,
        usec % 1_000_000
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A memcg OOM as kernel 6.18 prints it (captured on a cgroup v1 host, trimmed), with
    /// unrelated lines around it and a later reaper line.
    const SAMPLE: &str = "\
[ 2601.000001] eth0: link up
[ 2673.381198] python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
[ 2673.381239] CPU: 0 UID: 0 PID: 7739 Comm: python3 Not tainted 6.18.44-fc-v595 #1 PREEMPT(none)
[ 2673.381361] Call Trace:
[ 2673.381753]  <TASK>
[ 2673.381801]  dump_stack_lvl+0x57/0x80
[ 2673.382371]  dump_header+0x43/0x1c0
[ 2673.382400]  oom_kill_process.cold+0x8/0x8a
[ 2673.382403]  out_of_memory+0x214/0x500
[ 2673.382778]  mem_cgroup_out_of_memory+0xc0/0x110
[ 2673.383024]  try_charge_memcg+0x422/0x6f0
[ 2673.383738]  </TASK>
[ 2673.383764] memory: usage 32768kB, limit 32768kB, failcnt 0
[ 2673.383774] memory+swap: usage 32768kB, limit 32768kB, failcnt 0
[ 2673.383776] kmem: usage 168kB, limit 9007199254740988kB, failcnt 0
[ 2673.383777] Memory cgroup stats for /oomtrace-7700-0:
[ 2673.386780] cache 0
[ 2673.386784] rss 33382400
[ 2673.386868] Tasks state (memory values in pages):
[ 2673.386869] [  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name
[ 2673.386873] [   7739]     0  7739    36910     9765     8128     1637         0   131072        0             0 python3
[ 2673.386877] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/oomtrace-7700-0,task_memcg=/oomtrace-7700-0,task=python3,pid=7739,uid=0
[ 2673.386903] Memory cgroup out of memory: Killed process 7739 (python3) total-vm:147640kB, anon-rss:32512kB, file-rss:6548kB, shmem-rss:0kB, UID:0 pgtables:128kB oom_score_adj:0
[ 2673.390000] EXT4-fs (vda): mounted filesystem
[ 2673.401234] oom_reaper: reaped process 7739 (python3), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB
[ 2673.500000] systemd[1]: something unrelated
";

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn keeps_the_whole_oom_block_and_the_reaper_line_only() {
        let all = lines(SAMPLE);
        let kept = filter_oom_lines(&all);
        // Everything from "invoked oom-killer" to "Killed process", then the reaper line.
        let block_end = all
            .iter()
            .position(|l| l.contains("Killed process"))
            .unwrap();
        let mut want = all[1..=block_end].to_vec();
        want.push(all[block_end + 2].clone());
        assert_eq!(kept, want);
        assert!(kept.iter().any(|l| l.contains("[   7739]     0  7739")));
        assert!(
            !kept
                .iter()
                .any(|l| l.contains("eth0") || l.contains("EXT4") || l.contains("systemd"))
        );
    }

    #[test]
    fn lone_markers_are_kept_and_blocks_restart() {
        let all = lines(
            "[ 1.0] Out of memory: Killed process 1 (a) total-vm:1kB, anon-rss:1kB\n\
             [ 2.0] unrelated\n\
             [ 3.0] a invoked oom-killer: gfp_mask=0x0, order=0, oom_score_adj=0\n\
             [ 4.0] inside\n\
             [ 5.0] b invoked oom-killer: gfp_mask=0x0, order=0, oom_score_adj=0\n\
             [ 6.0] Memory cgroup out of memory: Killed process 2 (b) total-vm:1kB\n\
             [ 7.0] after\n",
        );
        let kept = filter_oom_lines(&all);
        let texts: Vec<&str> = kept.iter().map(|l| &l[7..]).collect();
        assert_eq!(
            texts,
            [
                "Out of memory: Killed process 1 (a) total-vm:1kB, anon-rss:1kB",
                "a invoked oom-killer: gfp_mask=0x0, order=0, oom_score_adj=0",
                "inside",
                "b invoked oom-killer: gfp_mask=0x0, order=0, oom_score_adj=0",
                "Memory cgroup out of memory: Killed process 2 (b) total-vm:1kB",
            ]
        );
        assert!(filter_oom_lines(&[]).is_empty());
    }

    #[test]
    fn an_endless_block_stops_being_followed() {
        let mut all = vec!["x invoked oom-killer: gfp_mask=0x0".to_string()];
        all.extend((0..MAX_BLOCK_LINES + 10).map(|i| format!("task {i}")));
        assert_eq!(filter_oom_lines(&all).len(), MAX_BLOCK_LINES);
    }

    #[test]
    fn records_become_timestamped_lines() {
        let r = b"4,344,2673381198,-;python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL)\n";
        assert_eq!(
            parse_record(r).as_deref(),
            Some("[ 2673.381198] python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL)")
        );
        let with_dict = b"6,1,5,c;memory: usage 1kB\n SUBSYSTEM=memory\n DEVICE=+x\n";
        assert_eq!(
            parse_record(with_dict).as_deref(),
            Some("[    0.000005] memory: usage 1kB")
        );
        // Facility 1 (user space writing to /dev/kmsg) is not the kernel.
        assert_eq!(parse_record(b"12,9,100,-;Killed process 1 (fake)\n"), None);
        for bad in [&b""[..], b"no header", b"x,1,2,-;t", b"4,1;t", b"4,1,x,-;t"] {
            assert_eq!(
                parse_record(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn open_reads_nothing_old_and_never_blocks() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let Some(mut log) = KernelLog::open() else {
            assert!(!root, "/dev/kmsg should open as root");
            return;
        };
        let start = Instant::now();
        let first = log.read_new();
        let _ = log.read_new();
        assert!(start.elapsed() < Duration::from_secs(2), "read_new blocked");
        // Positioned at the end: at most what arrived since open (e.g. another test's OOM).
        assert!(first.iter().all(|l| l.starts_with('[')), "{first:?}");
        assert!(!log.truncated());
    }
}
