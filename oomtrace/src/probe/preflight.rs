//! Checks made before loading anything, each failing with one line that says what to do.

use std::path::{Path, PathBuf};

/// Why oomtrace cannot trace on this machine. Callers map each to an exit code.
#[derive(Debug)]
#[non_exhaustive]
pub enum PreflightError {
    /// Neither root nor CAP_BPF+CAP_PERFMON (or CAP_SYS_ADMIN).
    NotPrivileged,
    /// The kernel exposes no BTF.
    NoBtf(PathBuf),
    /// The kernel has no uprobe PMU.
    NoUprobes(PathBuf),
    /// tracefs is not mounted and could not be mounted.
    NoTracefs(String),
}

impl std::fmt::Display for PreflightError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotPrivileged => f.write_str(
                "insufficient privileges: loading eBPF programs needs root \
                 (or CAP_BPF and CAP_PERFMON); run it with sudo",
            ),
            Self::NoBtf(p) => write!(
                f,
                "this kernel has no BTF ({} is missing): oomtrace needs a kernel built with \
                 CONFIG_DEBUG_INFO_BTF=y",
                p.display()
            ),
            Self::NoUprobes(p) => write!(
                f,
                "this kernel has no uprobes ({} is missing): oomtrace needs CONFIG_UPROBE_EVENTS=y",
                p.display()
            ),
            Self::NoTracefs(why) => write!(
                f,
                "tracefs is not mounted and mounting it failed ({why}): \
                 run `mount -t tracefs nodev /sys/kernel/tracing` as root"
            ),
        }
    }
}

impl std::error::Error for PreflightError {}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Root of sysfs; tests point it elsewhere with `OOMTRACE_SYS_ROOT` to simulate missing features.
fn sys_root() -> PathBuf {
    std::env::var_os("OOMTRACE_SYS_ROOT").map_or_else(|| PathBuf::from("/sys"), PathBuf::from)
}

/// Runs every check, mounting tracefs when it is missing.
pub fn check() -> Result<(), PreflightError> {
    check_privileges()?;
    let sys = sys_root();
    let btf = sys.join("kernel/btf/vmlinux");
    if !btf.exists() {
        return Err(PreflightError::NoBtf(btf));
    }
    let uprobe = sys.join("bus/event_source/devices/uprobe");
    if !uprobe.exists() {
        return Err(PreflightError::NoUprobes(uprobe));
    }
    ensure_tracefs()
}

/// Privileges from the effective capability set (root has them all).
pub fn check_privileges() -> Result<(), PreflightError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(PreflightError::NotPrivileged)
    }
}

/// Makes sure tracefs is mounted (tracepoint ids are read from it), mounting it if needed.
pub fn ensure_tracefs() -> Result<(), PreflightError> {
    let tracing = Path::new("/sys/kernel/tracing");
    if tracing.join("events").is_dir() || Path::new("/sys/kernel/debug/tracing/events").is_dir() {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (src, dst, fstype) = (c("nodev"), c("/sys/kernel/tracing"), c("tracefs"));
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(PreflightError::NoTracefs(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    Ok(())
}
