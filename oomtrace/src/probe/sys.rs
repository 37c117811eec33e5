//! The raw `bpf(2)` and `perf_event_open(2)` calls that aya 0.14 has no API for: loading a
//! program for multi-uprobe links (with the object's BTF, which `bpf_loop` callbacks need),
//! creating those links (one per process and object, with the
//! process's pid as the kernel's filter), perf uprobe links with a cookie (the fallback on kernels
//! without multi-uprobe links), and reading a program's run statistics.
//!
//! This is the FFI seam of the probe layer: every `unsafe` block here passes a `#[repr(C)]`
//! struct we own to the kernel and turns the returned descriptor into an `OwnedFd`.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};

use aya_obj::generated::bpf_insn;

/// `BPF_PROG_TYPE_KPROBE`: uprobes are kprobe-type programs.
const BPF_PROG_TYPE_KPROBE: u32 = 2;
/// `bpf(2)` commands.
const BPF_PROG_LOAD: i64 = 5;
const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;
const BPF_BTF_LOAD: i64 = 18;
const BPF_LINK_CREATE: i64 = 28;
/// `BPF_PERF_EVENT`: attach type of a link that binds a program to a perf event.
const BPF_PERF_EVENT: u32 = 41;
/// `BPF_TRACE_UPROBE_MULTI` (Linux 6.6).
pub const BPF_TRACE_UPROBE_MULTI: u32 = 48;
/// `BPF_TRACE_UPROBE_SESSION` (Linux 6.13): one program at entry and return; an entry that
/// returns non-zero skips its return.
pub const BPF_TRACE_UPROBE_SESSION: u32 = 57;
/// `BPF_F_UPROBE_MULTI_RETURN`: the link's probes are return probes.
const BPF_F_UPROBE_MULTI_RETURN: u32 = 1;
/// `PERF_FLAG_FD_CLOEXEC`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `attach_btf_id`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
}

/// The `BPF_BTF_LOAD` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    /// Zero (no padding the kernel could read as flags).
    btf_flags: u32,
}

/// The `BPF_LINK_CREATE` part of `union bpf_attr` with its `uprobe_multi` member.
#[repr(C)]
#[derive(Default)]
struct UprobeMultiAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    _pad: u32,
}

/// The `BPF_LINK_CREATE` part of `union bpf_attr` with its `perf_event` member.
#[repr(C)]
#[derive(Default)]
struct PerfLinkAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    bpf_cookie: u64,
}

/// The `BPF_OBJ_GET_INFO_BY_FD` part of `union bpf_attr`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The start of `struct perf_event_attr` (`PERF_ATTR_SIZE_VER5`, 112 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
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
    _reserved: u16,
}

fn bpf<T>(cmd: i64, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a live `#[repr(C)]` prefix of `union bpf_attr` for `cmd`; the kernel reads
    // (and for info queries writes) at most `size_of::<T>()` bytes of it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Why a program could not be loaded: the kernel's errno and its verifier log, if any.
#[derive(Debug)]
pub struct LoadError {
    /// The kernel's error.
    pub error: std::io::Error,
    /// The verifier's log (empty unless the verifier rejected the program).
    pub log: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        let tail: Vec<&str> = self.log.lines().rev().take(3).collect();
        if !tail.is_empty() {
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            write!(f, " (verifier: {})", tail.join(" / "))?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// Loads raw BTF (an object's types, for the programs' `func_info`); the kernel's log says why
/// when it refuses them.
pub fn load_btf(btf: &[u8]) -> Result<OwnedFd, LoadError> {
    let mut attr = BtfLoadAttr {
        btf: btf.as_ptr() as u64,
        btf_size: btf.len() as u32,
        ..Default::default()
    };
    match bpf(BPF_BTF_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(first) => {
            let mut log = vec![0u8; 64 * 1024];
            attr.btf_log_level = 1;
            attr.btf_log_size = log.len() as u32;
            attr.btf_log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_BTF_LOAD, &mut attr);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(LoadError {
                error: first,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

/// A program's BTF: the loaded types and its function and line records (raw, as the kernel
/// reads them).
pub struct ProgBtf<'a> {
    /// The loaded BTF ([`load_btf`]).
    pub fd: BorrowedFd<'a>,
    /// `bpf_func_info` records, one per function (subprograms and callbacks included).
    pub func_info: &'a [u8],
    /// Size of one `func_info` record.
    pub func_info_rec_size: u32,
    /// `bpf_line_info` records.
    pub line_info: &'a [u8],
    /// Size of one `line_info` record.
    pub line_info_rec_size: u32,
}

/// Loads `insns` as a uprobe (kprobe-type) program for `expected_attach_type`, with its BTF
/// when given (a program with `bpf_loop` callbacks or other subprograms needs it).
pub fn load_uprobe_program(
    name: &str,
    insns: &[bpf_insn],
    license: &CString,
    expected_attach_type: u32,
    btf: Option<&ProgBtf<'_>>,
) -> Result<OwnedFd, LoadError> {
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_KPROBE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        expected_attach_type,
        ..Default::default()
    };
    if let Some(b) = btf {
        attr.prog_btf_fd = b.fd.as_raw_fd() as u32;
        let count = |bytes: &[u8], size: u32| (bytes.len() / size.max(1) as usize) as u32;
        if b.func_info_rec_size > 0 && !b.func_info.is_empty() {
            attr.func_info_rec_size = b.func_info_rec_size;
            attr.func_info = b.func_info.as_ptr() as u64;
            attr.func_info_cnt = count(b.func_info, b.func_info_rec_size);
        }
        if b.line_info_rec_size > 0 && !b.line_info.is_empty() {
            attr.line_info_rec_size = b.line_info_rec_size;
            attr.line_info = b.line_info.as_ptr() as u64;
            attr.line_info_cnt = count(b.line_info, b.line_info_rec_size);
        }
    }
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(first) => {
            // Again with the verifier's log, to say why.
            let mut log = vec![0u8; 4 << 20];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            match bpf(BPF_PROG_LOAD, &mut attr) {
                Ok(fd) => Ok(owned(fd)),
                Err(_) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    Err(LoadError {
                        error: first,
                        log: String::from_utf8_lossy(&log[..end]).into_owned(),
                    })
                }
            }
        }
    }
}

/// What a multi-uprobe link's probes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultiKind {
    /// Entry probes.
    Entry,
    /// Return probes.
    Return,
    /// Uprobe sessions: entry, and return where the entry asks for it.
    Session,
}

/// One multi-uprobe link: `prog` on every `(offset, cookie)` of the object at `path`, for
/// process `pid` only (`None`: every process).
pub fn uprobe_multi_link(
    prog: BorrowedFd<'_>,
    path: &CString,
    offsets: &[u64],
    cookies: &[u64],
    pid: Option<u32>,
    kind: MultiKind,
) -> std::io::Result<OwnedFd> {
    assert_eq!(offsets.len(), cookies.len(), "one cookie per offset");
    let mut attr = UprobeMultiAttr {
        prog_fd: prog.as_raw_fd() as u32,
        attach_type: if kind == MultiKind::Session {
            BPF_TRACE_UPROBE_SESSION
        } else {
            BPF_TRACE_UPROBE_MULTI
        },
        path: path.as_ptr() as u64,
        offsets: offsets.as_ptr() as u64,
        cookies: cookies.as_ptr() as u64,
        cnt: offsets.len() as u32,
        multi_flags: if kind == MultiKind::Return {
            BPF_F_UPROBE_MULTI_RETURN
        } else {
            0
        },
        pid: pid.unwrap_or(0),
        ..Default::default()
    };
    bpf(BPF_LINK_CREATE, &mut attr).map(owned)
}

/// A perf uprobe (the kernel's `uprobe` PMU) on `offset` of `path`, for process `pid` (`None`:
/// every process, counted on CPU 0 but firing the program everywhere), with `prog` attached
/// through a link carrying `cookie`. Both descriptors must stay open for the probe to stay.
pub fn perf_uprobe_link(
    pmu: PerfUprobePmu,
    prog: BorrowedFd<'_>,
    path: &CString,
    offset: u64,
    cookie: u64,
    pid: Option<u32>,
    ret: bool,
) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let attr = PerfEventAttr {
        type_: pmu.type_,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: if ret { 1 << pmu.retprobe_bit } else { 0 },
        sample_period: 1,
        wakeup_events: 1,
        config1: path.as_ptr() as u64,
        config2: offset,
        ..Default::default()
    };
    let (pid, cpu) = match pid {
        Some(p) => (p as libc::pid_t, -1),
        None => (-1, 0),
    };
    // `path` outlives the call.
    perf_event_link(&attr, pid, cpu, prog, cookie)
}

/// `PERF_TYPE_TRACEPOINT`.
const PERF_TYPE_TRACEPOINT: u32 = 2;

/// The perf tracepoint of event id `id` (every process, counted on CPU 0), with `prog`
/// attached through a link carrying `cookie` (aya's tracepoint links carry none). Both
/// descriptors must stay open for the program to stay attached.
pub fn perf_tracepoint_link(
    prog: BorrowedFd<'_>,
    id: u64,
    cookie: u64,
) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let attr = PerfEventAttr {
        type_: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 1,
        wakeup_events: 1,
        ..Default::default()
    };
    perf_event_link(&attr, -1, 0, prog, cookie)
}

/// Opens the perf event `attr` for (`pid`, `cpu`) and links `prog` to it with `cookie`:
/// (event, link).
fn perf_event_link(
    attr: &PerfEventAttr,
    pid: libc::pid_t,
    cpu: libc::c_int,
    prog: BorrowedFd<'_>,
    cookie: u64,
) -> std::io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: `attr` is a valid perf_event_attr of the size it states, and whatever it points
    // to outlives the call (the caller's).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            pid,
            cpu,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let event = owned(fd);
    let mut link = PerfLinkAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: event.as_raw_fd() as u32,
        attach_type: BPF_PERF_EVENT,
        bpf_cookie: cookie,
        ..Default::default()
    };
    let link = bpf(BPF_LINK_CREATE, &mut link).map(owned)?;
    Ok((event, link))
}

/// The kernel's `uprobe` PMU: its type and the config bit that makes a probe a return probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerfUprobePmu {
    type_: u32,
    retprobe_bit: u32,
}

impl PerfUprobePmu {
    /// Reads the PMU from sysfs.
    pub fn from_sysfs() -> std::io::Result<Self> {
        let dir = "/sys/bus/event_source/devices/uprobe";
        let type_ = std::fs::read_to_string(format!("{dir}/type"))?;
        let type_ = type_.trim().parse().map_err(std::io::Error::other)?;
        // "config:0"
        let bit = std::fs::read_to_string(format!("{dir}/format/retprobe"))
            .ok()
            .and_then(|s| s.trim().strip_prefix("config:")?.parse().ok())
            .unwrap_or(0);
        Ok(Self {
            type_,
            retprobe_bit: bit,
        })
    }
}

/// A loaded program's id, name, runs and run time (statistics must be on for the last two).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    /// The kernel's id of the program.
    pub id: u32,
    /// Runs counted.
    pub runs: u64,
    /// Nanoseconds spent in those runs.
    pub run_time_ns: u64,
    /// Instructions the verifier processed to accept the program (its limit is a million).
    pub verified_insns: u32,
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a program.
pub fn prog_stats(prog: BorrowedFd<'_>) -> std::io::Result<ProgStats> {
    // SAFETY: bpf_prog_info is plain integers and arrays: all-zero is a valid value.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: &mut info as *mut _ as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(ProgStats {
        id: info.id,
        runs: info.run_cnt,
        run_time_ns: info.run_time_ns,
        verified_insns: info.verified_insns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_kernel_uapi() {
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_btf_fd), 72);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, func_info), 80);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, line_info), 96);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, attach_btf_id), 108);
        assert_eq!(std::mem::offset_of!(BtfLoadAttr, btf_size), 16);
        assert_eq!(std::mem::size_of::<BtfLoadAttr>(), 32);
        assert_eq!(std::mem::offset_of!(UprobeMultiAttr, path), 16);
        assert_eq!(std::mem::offset_of!(UprobeMultiAttr, cnt), 48);
        assert_eq!(std::mem::offset_of!(UprobeMultiAttr, pid), 56);
        assert_eq!(std::mem::offset_of!(PerfLinkAttr, bpf_cookie), 16);
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 112);
        assert_eq!(std::mem::offset_of!(PerfEventAttr, config1), 56);
    }
}
