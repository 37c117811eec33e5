//! The kernel's own record of executable mappings: a software `perf` event per CPU that asks for
//! `PERF_RECORD_MMAP2` and exec `PERF_RECORD_COMM` records (what `perf record` symbolizes with).
//!
//! The kernel writes each record synchronously inside `mmap` and `execve`, with the file's path
//! already resolved, so a process that lives a millisecond is still mapped here after it is gone,
//! whereas `/proc/PID/maps` must be read before it exits. Records are read without waiting, at
//! the pace of the event loop; none of this touches BPF.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{Ordering, fence};

use anyhow::{Context as _, Result, bail};

use crate::objfile::FileId;

/// Pages of record data per CPU (plus one header page). Exec mappings are rare: 64 KiB holds
/// hundreds of execs between two reads.
const DATA_PAGES: usize = 16;

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_DUMMY: u64 = 9;
const PERF_SAMPLE_TIME: u64 = 1 << 2;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_COMM: u32 = 3;
const PERF_RECORD_MMAP2: u32 = 10;
const PERF_RECORD_MISC_COMM_EXEC: u16 = 1 << 13;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

// `perf_event_attr` flag bits (the kernel's bitfield, lowest bit first).
const ATTR_MMAP: u64 = 1 << 8;
const ATTR_COMM: u64 = 1 << 9;
const ATTR_SAMPLE_ID_ALL: u64 = 1 << 18;
const ATTR_MMAP2: u64 = 1 << 23;
const ATTR_COMM_EXEC: u64 = 1 << 24;
const ATTR_USE_CLOCKID: u64 = 1 << 25;

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER5` (112 bytes): the fields used here and
/// the zeros in between.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
}

const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == 112);

/// One record the symbolizer cares about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// `pid` exec'd a new image at `ts` (CLOCK_MONOTONIC ns, as the BPF events' stamps).
    Exec { pid: u32, ts: u64 },
    /// `pid` mapped `len` bytes of `path` (the file `id`) at `addr`, from file offset `pgoff`,
    /// executable.
    Map {
        pid: u32,
        ts: u64,
        addr: u64,
        len: u64,
        pgoff: u64,
        id: FileId,
        path: String,
    },
    /// The kernel dropped `count` records: a ring was full.
    Lost { count: u64 },
}

/// Decodes one raw record (header included); `None` for kinds not asked for or a short record.
pub fn decode(raw: &[u8]) -> Option<Record> {
    let u32_at = |o: usize| Some(u32::from_ne_bytes(raw.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_ne_bytes(raw.get(o..o + 8)?.try_into().ok()?));
    let kind = u32_at(0)?;
    let misc = u16::from_ne_bytes(raw.get(4..6)?.try_into().ok()?);
    // sample_id_all with PERF_SAMPLE_TIME: the time is the record's last 8 bytes.
    let ts = || u64_at(raw.len().checked_sub(8)?);
    match kind {
        PERF_RECORD_COMM if misc & PERF_RECORD_MISC_COMM_EXEC != 0 => Some(Record::Exec {
            pid: u32_at(8)?,
            ts: ts()?,
        }),
        PERF_RECORD_MMAP2 => {
            // header 8, pid/tid 8, addr/len/pgoff 24, maj/min/ino/ino_generation 24, prot/flags 8.
            let name = raw.get(72..raw.len().checked_sub(8)?)?;
            let end = name.iter().position(|&b| b == 0)?;
            Some(Record::Map {
                pid: u32_at(8)?,
                ts: ts()?,
                addr: u64_at(16)?,
                len: u64_at(24)?,
                pgoff: u64_at(32)?,
                id: FileId::from_parts(u32_at(40)?, u32_at(44)?, u64_at(48)?),
                path: String::from_utf8_lossy(&name[..end]).into_owned(),
            })
        }
        PERF_RECORD_LOST => Some(Record::Lost { count: u64_at(16)? }),
        _ => None,
    }
}

/// One CPU's event and its mapped ring.
struct CpuRing {
    /// The event: open as long as records are wanted.
    _event: OwnedFd,
    base: *mut u8,
    len: usize,
    page: usize,
}

impl Drop for CpuRing {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned; nothing borrows the mapping.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

// SAFETY: the mapping is owned by this value and only touched through `&mut self`.
unsafe impl Send for CpuRing {}

impl CpuRing {
    fn open(cpu: i32) -> Result<Self> {
        let attr = PerfEventAttr {
            kind: PERF_TYPE_SOFTWARE,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_DUMMY,
            sample_type: PERF_SAMPLE_TIME,
            flags: ATTR_MMAP
                | ATTR_COMM
                | ATTR_SAMPLE_ID_ALL
                | ATTR_MMAP2
                | ATTR_COMM_EXEC
                | ATTR_USE_CLOCKID,
            clockid: libc::CLOCK_MONOTONIC,
            ..Default::default()
        };
        // SAFETY: perf_event_open with a valid attr; pid -1 and a CPU means every process there.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                -1,
                cpu,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            bail!("perf_event_open on CPU {cpu}: {e}");
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = page * (1 + DATA_PAGES);
        // SAFETY: mapping the event's ring as the perf ABI defines it; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            bail!("mapping the perf ring of CPU {cpu}: {e}");
        }
        Ok(Self {
            _event: fd,
            base: base.cast(),
            len,
            page,
        })
    }

    /// Appends every complete record queued in this ring to `out`.
    fn read(&mut self, out: &mut Vec<Record>) {
        // perf_event_mmap_page: data_head at 1024, data_tail at 1032.
        // SAFETY: both offsets lie in the header page we mapped; the kernel writes data_head,
        // we write data_tail, as the ABI prescribes (acquire after head, full fence before tail).
        let (head_ptr, tail_ptr) = unsafe {
            (
                self.base.add(1024).cast::<u64>(),
                self.base.add(1032).cast::<u64>(),
            )
        };
        // SAFETY: see above.
        let head = unsafe { head_ptr.read_volatile() };
        fence(Ordering::Acquire);
        // SAFETY: see above.
        let mut tail = unsafe { tail_ptr.read_volatile() };
        let size = (self.len - self.page) as u64;
        // SAFETY: the data area follows the header page and is `size` bytes long.
        let data = unsafe { std::slice::from_raw_parts(self.base.add(self.page), size as usize) };
        let mut raw = Vec::new();
        while head.wrapping_sub(tail) >= 8 {
            let at = |i: u64| data[((tail + i) % size) as usize];
            let rec_len = u16::from_ne_bytes([at(6), at(7)]) as u64;
            if rec_len < 8 || head.wrapping_sub(tail) < rec_len {
                break;
            }
            raw.clear();
            raw.extend((0..rec_len).map(at));
            if let Some(r) = decode(&raw) {
                out.push(r);
            }
            tail += rec_len;
        }
        fence(Ordering::SeqCst);
        // SAFETY: see above.
        unsafe { tail_ptr.write_volatile(tail) };
    }
}

/// Exec and executable-mapping records of every process, one ring per CPU.
pub struct MapRecords {
    rings: Vec<CpuRing>,
}

impl MapRecords {
    /// Opens one dummy software event per online CPU.
    pub fn open() -> Result<Self> {
        let cpus = online_cpus().context("cannot list the online CPUs")?;
        let rings = cpus
            .into_iter()
            .map(CpuRing::open)
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { rings })
    }

    /// Every record queued since the last call, in no particular order across CPUs.
    pub fn read(&mut self, out: &mut Vec<Record>) {
        for r in &mut self.rings {
            r.read(out);
        }
    }
}

/// CPU numbers from `/sys/devices/system/cpu/online` ("0-3,6").
fn online_cpus() -> Result<Vec<i32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    parse_cpu_list(text.trim()).context("unreadable CPU list")
}

fn parse_cpu_list(text: &str) -> Option<Vec<i32>> {
    let mut cpus = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<i32>().ok()?..=b.parse::<i32>().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u32, misc: u16, body: &[u8], ts: u64) -> Vec<u8> {
        let len = 8 + body.len() + 8;
        let mut r = Vec::new();
        r.extend(kind.to_ne_bytes());
        r.extend(misc.to_ne_bytes());
        r.extend((len as u16).to_ne_bytes());
        r.extend(body);
        r.extend(ts.to_ne_bytes());
        r
    }

    #[test]
    fn decodes_an_mmap2_record() {
        let mut body = Vec::new();
        body.extend(42u32.to_ne_bytes());
        body.extend(43u32.to_ne_bytes());
        body.extend(0x7f00_0000_1000u64.to_ne_bytes());
        body.extend(0x2000u64.to_ne_bytes());
        body.extend(0x1000u64.to_ne_bytes());
        body.extend(0xfeu32.to_ne_bytes());
        body.extend(1u32.to_ne_bytes());
        body.extend(1835043u64.to_ne_bytes());
        body.extend(0u64.to_ne_bytes());
        body.extend(5u32.to_ne_bytes());
        body.extend(2u32.to_ne_bytes());
        body.extend(b"/usr/lib/libc.so.6\0\0\0\0\0\0");
        let raw = record(PERF_RECORD_MMAP2, 0, &body, 777);
        assert_eq!(
            decode(&raw),
            Some(Record::Map {
                pid: 42,
                ts: 777,
                addr: 0x7f00_0000_1000,
                len: 0x2000,
                pgoff: 0x1000,
                id: FileId::from_parts(0xfe, 1, 1835043),
                path: "/usr/lib/libc.so.6".into()
            })
        );
        // Cut short: no name terminator, no record.
        assert_eq!(decode(&raw[..80]), None);
    }

    #[test]
    fn only_exec_comm_records_count() {
        let mut body = Vec::new();
        body.extend(7u32.to_ne_bytes());
        body.extend(7u32.to_ne_bytes());
        body.extend(b"true\0\0\0\0");
        let exec = record(PERF_RECORD_COMM, PERF_RECORD_MISC_COMM_EXEC, &body, 9);
        assert_eq!(decode(&exec), Some(Record::Exec { pid: 7, ts: 9 }));
        let rename = record(PERF_RECORD_COMM, 0, &body, 9);
        assert_eq!(decode(&rename), None);
        assert_eq!(decode(&[1, 2, 3]), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("x"), None);
    }

    /// The kernel records a child's exec and its mappings though the child is gone when read.
    #[test]
    fn a_finished_process_is_still_mapped() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "needs root under CI=true"
            );
            return;
        }
        let mut recs = MapRecords::open().expect("perf events open as root");
        let child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        child.wait_with_output().unwrap();
        let mut out = Vec::new();
        recs.read(&mut out);
        assert!(
            out.iter()
                .any(|r| matches!(r, Record::Exec { pid: p, .. } if *p == pid)),
            "no exec of pid {pid}: {out:?}"
        );
        assert!(
            out.iter().any(|r| matches!(r, Record::Map { pid: p, path, .. } if *p == pid && path.contains("libc"))),
            "no libc mapping of pid {pid}: {out:?}"
        );
    }
}
