//! The traced process as the scan sees it at its exit stop: its mappings (`/proc/TID/maps`), the
//! registers of the thread that ends it (`PTRACE_GETREGS`, so this runs on the thread holding
//! it under ptrace), and its memory (`process_vm_readv`, many blocks per call).
//!
//! What counts as a root, as memcheck has it for a program whose heap it does not own:
//!
//! - every private writable mapping of a module (`.data`, `.got`, and the anonymous `.bss`
//!   that follows a module's last file mapping);
//! - the stack of the thread that ends the process, from its stack pointer up (below it is
//!   dead), the static TLS around its thread pointer (`fs_base`), and its registers;
//! - the program's own direct mappings (`mmap` outside the allocator), which may hold pointers
//!   like any memory it manages itself.
//!
//! Never roots: the heap itself (`[heap]`, and any mapping that holds a tracked block: glibc's
//! arenas, a large block's own mapping), the allocator's private mappings (made inside it, so
//! the model never saw them: freed chunks keep stale pointers), stacks of threads already gone,
//! shared mappings, and the kernel's `[vvar]`/`[vdso]`.

use std::time::{Duration, Instant};

use super::scan::{self, Memory, Roots, ScanStats};
use crate::model::leak::{LeakCounts, LeakKind};
use crate::model::process::{LeakBlock, MappedOwner};

/// What the holder thread needs from the model to scan a process at its exit.
#[derive(Clone, Debug, Default)]
pub struct ScanJob {
    /// The process.
    pub pid: u32,
    /// The thread that ends it, stopped at its exit stop.
    pub tid: u32,
    /// Its blocks still outstanding, by address.
    pub blocks: Vec<LeakBlock>,
    /// Its live direct mappings, thread stacks and reservations.
    pub pieces: Vec<(u64, u64, MappedOwner)>,
}

/// What the scan of one process found.
#[derive(Clone, Debug, Default)]
pub struct ScanReport {
    /// The process.
    pub pid: u32,
    /// Per stack index (of the process's stack table), the bytes and blocks of each kind.
    pub per_stack: Vec<(u32, LeakCounts)>,
    /// What it cost.
    pub stats: ScanStats,
    /// Wall time.
    pub elapsed: Duration,
    /// Why it could not run, when it could not (its blocks are then left unclassified).
    pub error: Option<String>,
}

/// Scans a process stopped at its exit (call on the thread that traces it).
pub fn scan(job: &ScanJob) -> ScanReport {
    let started = Instant::now();
    let mut report = ScanReport {
        pid: job.pid,
        ..ScanReport::default()
    };
    let regs = match thread_state(job.tid) {
        Some(r) => r,
        None => {
            report.error = Some(format!(
                "cannot read the registers of thread {}: {}",
                job.tid,
                std::io::Error::last_os_error()
            ));
            return report;
        }
    };
    let maps = match std::fs::read_to_string(format!("/proc/{}/maps", job.tid)) {
        Ok(text) => parse_maps(&text),
        Err(e) => {
            report.error = Some(format!("cannot read /proc/{}/maps: {e}", job.tid));
            return report;
        }
    };
    let roots = Roots {
        regions: root_regions(&maps, &job.blocks, &job.pieces, regs.sp, regs.fs_base),
        words: regs.words,
    };
    let mut mem = ProcessMemory {
        pid: job.tid as libc::pid_t,
    };
    let (kinds, stats) = scan::classify(&job.blocks, &roots, &mut mem);
    report.per_stack = count_by_stack(&job.blocks, &kinds);
    report.stats = stats;
    report.elapsed = started.elapsed();
    report
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Shared (not private).
    pub shared: bool,
    /// The file's inode (0 when anonymous).
    pub inode: u64,
    /// The path or pseudo-name (`[heap]`, `[stack]`), empty when anonymous.
    pub path: String,
}

/// Parses `/proc/PID/maps`; malformed lines are skipped.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let (range, perms) = (f.next()?, f.next()?.as_bytes());
            let (_offset, _dev, inode) = (f.next()?, f.next()?, f.next()?);
            let (a, b) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(a, 16).ok()?,
                end: u64::from_str_radix(b, 16).ok()?,
                read: perms.first() == Some(&b'r'),
                write: perms.get(1) == Some(&b'w'),
                shared: perms.get(3) == Some(&b's'),
                inode: inode.parse().ok()?,
                path: f.collect::<Vec<_>>().join(" "),
            })
        })
        .collect()
}

/// The root regions among `maps` (see the module docs), `[start, end)` each.
pub fn root_regions(
    maps: &[Mapping],
    blocks: &[LeakBlock],
    pieces: &[(u64, u64, MappedOwner)],
    sp: u64,
    fs_base: u64,
) -> Vec<(u64, u64)> {
    let holds_block = |m: &Mapping| {
        let i = blocks.partition_point(|b| b.addr < m.start);
        blocks.get(i).is_some_and(|b| b.addr < m.end)
    };
    let owner_in = |m: &Mapping| {
        let i = pieces.partition_point(|p| p.1 <= m.start);
        pieces.get(i).filter(|p| p.0 < m.end).map(|p| p.2)
    };
    let mut roots = Vec::new();
    let mut prev_file_end = None;
    for m in maps {
        let file = m.inode != 0;
        let module_bss = !file && m.path.is_empty() && prev_file_end == Some(m.start);
        prev_file_end = file.then_some(m.end);
        if !(m.read && m.write) || m.shared || holds_block(m) {
            continue;
        }
        let stack = m.path == "[stack]" || owner_in(m) == Some(MappedOwner::ThreadStack);
        if stack {
            if (m.start..m.end).contains(&sp) {
                roots.push((sp & !7, m.end));
            }
            continue;
        }
        if m.path.starts_with('[') {
            // [heap], [vvar], [vdso], [vsyscall], [anon:...] names of the kernel's own.
            continue;
        }
        let keep = file
            || module_bss
            || (m.start..m.end).contains(&fs_base)
            || matches!(owner_in(m), Some(MappedOwner::Stack(_)));
        if keep {
            roots.push((m.start, m.end));
        }
    }
    roots
}

/// What the scan needs of the thread that ends the process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadState {
    /// Its stack pointer.
    pub sp: u64,
    /// Its thread pointer (the static TLS sits just below it on x86-64).
    pub fs_base: u64,
    /// Its general-purpose registers (stack pointer excluded), as roots.
    pub words: Vec<u64>,
}

/// The registers of stopped tracee `tid`; call on the thread that traces it.
#[cfg(target_arch = "x86_64")]
pub fn thread_state(tid: u32) -> Option<ThreadState> {
    let r = crate::ptrace_regs::get(tid).ok()?;
    Some(ThreadState {
        sp: r.rsp,
        fs_base: r.fs_base,
        words: vec![
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12,
            r.r13, r.r14, r.r15,
        ],
    })
}

/// Other architectures: no registers (the scan then reports why it did not run).
#[cfg(not(target_arch = "x86_64"))]
pub fn thread_state(_tid: u32) -> Option<ThreadState> {
    None
}

/// Another process's memory through `process_vm_readv`.
pub struct ProcessMemory {
    /// Any thread of the process.
    pub pid: libc::pid_t,
}

/// Remote pieces per `process_vm_readv` call (`IOV_MAX`).
const IOV_MAX: usize = 1024;

impl Memory for ProcessMemory {
    fn read_many(&mut self, reqs: &[(u64, usize)], out: &mut Vec<u8>) -> Vec<usize> {
        let mut offsets = Vec::with_capacity(reqs.len() + 1);
        let mut total = 0;
        for r in reqs {
            offsets.push(total);
            total += r.1;
        }
        offsets.push(total);
        out.clear();
        out.resize(total, 0);
        let mut got = vec![0; reqs.len()];
        let mut i = 0;
        while i < reqs.len() {
            let n = (reqs.len() - i).min(IOV_MAX);
            let local = libc::iovec {
                // SAFETY: offsets[i] <= out.len(); the pointer stays inside `out`.
                iov_base: unsafe { out.as_mut_ptr().add(offsets[i]) }.cast(),
                iov_len: offsets[i + n] - offsets[i],
            };
            let remote: Vec<libc::iovec> = reqs[i..i + n]
                .iter()
                .map(|&(addr, len)| libc::iovec {
                    iov_base: addr as *mut libc::c_void,
                    iov_len: len,
                })
                .collect();
            // SAFETY: `local` covers exactly the bytes of `out` reserved for these requests,
            // which the kernel writes; `remote` names addresses in the other process, which
            // the kernel checks (a bad one ends the transfer early, never touches ours).
            let rc =
                unsafe { libc::process_vm_readv(self.pid, &local, 1, remote.as_ptr(), n as _, 0) };
            let mut left = usize::try_from(rc).unwrap_or(0);
            let mut j = i;
            while j < i + n && left >= reqs[j].1 {
                got[j] = reqs[j].1;
                left -= reqs[j].1;
                j += 1;
            }
            if j < i + n {
                // The transfer stopped inside request j: keep what came, go on after it.
                got[j] = left;
                j += 1;
            }
            i = j;
        }
        got
    }
}

/// Per-stack counts of `kinds` (one per block of `blocks`).
pub fn count_by_stack(blocks: &[LeakBlock], kinds: &[LeakKind]) -> Vec<(u32, LeakCounts)> {
    let mut per_stack: std::collections::BTreeMap<u32, LeakCounts> = Default::default();
    for (b, &kind) in blocks.iter().zip(kinds) {
        per_stack.entry(b.stack).or_default().add(kind, b.size, 1);
    }
    per_stack.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StackKey;

    const MAPS: &str = "\
55d000000000-55d000001000 r--p 00000000 fd:01 100 /usr/bin/prog
55d000001000-55d000002000 r-xp 00001000 fd:01 100 /usr/bin/prog
55d000003000-55d000004000 rw-p 00003000 fd:01 100 /usr/bin/prog
55d000004000-55d000006000 rw-p 00000000 00:00 0
55d000100000-55d000200000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
7f0000400000-7f0000401000 ---p 00000000 00:00 0
7f0000401000-7f0000c00000 rw-p 00000000 00:00 0
7f0000d00000-7f0000d01000 rw-p 00000000 00:00 0
7f0000e00000-7f0000e10000 rw-s 00000000 00:05 77 /dev/shm/x
7f0000f00000-7f0000f01000 rw-p 00000000 00:00 0
7f0001000000-7f0001100000 rw-p 00000000 00:00 0
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
7ffc00030000-7ffc00032000 r--p 00000000 00:00 0                          [vvar]
";

    #[test]
    fn roots_are_module_data_stack_tls_and_own_mappings() {
        let maps = parse_maps(MAPS);
        assert_eq!(maps.len(), 15);
        assert_eq!(maps[4].path, "[heap]");
        assert!(maps[10].shared);
        let key = StackKey {
            generation: 1,
            call_site: 0x55d000001234,
            stack_id: 3,
        };
        let blocks = [
            // In [heap], and in an arena the model never saw mapped.
            LeakBlock {
                addr: 0x55d000100010,
                size: 16,
                stack: 0,
                family: 0,
            },
            LeakBlock {
                addr: 0x7f0000000010,
                size: 16,
                stack: 0,
                family: 0,
            },
        ];
        let pieces = [
            (0x7f0000400000, 0x7f0000c00000, MappedOwner::ThreadStack),
            (0x7f0000f00000, 0x7f0000f01000, MappedOwner::Stack(key)),
        ];
        let sp = 0x7ffc00020008;
        let fs_base = 0x7f0000d00740;
        let roots = root_regions(&maps, &blocks, &pieces, sp, fs_base);
        assert_eq!(
            roots,
            [
                (0x55d000003000, 0x55d000004000), // .data
                (0x55d000004000, 0x55d000006000), // .bss
                (0x7f0000d00000, 0x7f0000d01000), // TLS
                (0x7f0000f00000, 0x7f0000f01000), // the program's own mapping
                (0x7ffc00020008, 0x7ffc00021000), // the live part of the stack
            ]
        );
        // The thread that ends it runs on a thread stack: that one is scanned instead.
        let roots = root_regions(&maps, &blocks, &pieces, 0x7f0000bff000, fs_base);
        assert!(roots.contains(&(0x7f0000bff000, 0x7f0000c00000)));
        assert!(!roots.iter().any(|r| r.0 >= 0x7ffc00000000));
    }

    #[test]
    fn reads_our_own_memory_in_many_pieces() {
        let data: Vec<u64> = (0..4096).collect();
        let base = data.as_ptr() as u64;
        let mut mem = ProcessMemory {
            pid: std::process::id() as libc::pid_t,
        };
        let mut reqs: Vec<(u64, usize)> = (0..2000).map(|i| (base + i * 16, 8)).collect();
        // An unmapped address in the middle: it reads nothing, the rest still reads.
        reqs.insert(1000, (8, 8));
        let mut out = Vec::new();
        let got = mem.read_many(&reqs, &mut out);
        assert_eq!(got[1000], 0);
        assert_eq!(got.iter().filter(|&&g| g == 8).count(), 2000);
        let word = |k: usize| u64::from_le_bytes(out[k * 8..k * 8 + 8].try_into().unwrap());
        assert_eq!(word(0), 0);
        assert_eq!(word(999), 2 * 999);
        assert_eq!(word(1001), 2 * 1000);
        assert_eq!(word(2000), 2 * 1999);
    }
}
