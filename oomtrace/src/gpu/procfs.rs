//! Reading a `/proc`-like tree: pids, comms, fdinfo files and the GPU lines of `meminfo`.
//!
//! `/proc` changes under the reader: a process may exit or close an fd between
//! listing and reading. Such vanished entries are reported as [`Gone`] so the
//! caller can skip them silently; other users' processes refuse access
//! ([`Read::Denied`]), which the caller counts instead of warning per file.
//!
//! [`Gone`]: Read::Gone

use std::fs::{self, File};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Longest fdinfo text read; DRM and dma-buf fdinfo are a few hundred bytes.
pub(crate) const MAX_FDINFO_BYTES: u64 = 64 * 1024;

/// The outcome of reading something that may race with a process exiting.
#[derive(Debug)]
pub(crate) enum Read<T> {
    /// It was read.
    Ok(T),
    /// It vanished (process exited, fd closed): skip silently.
    Gone,
    /// Permission denied: typically another user's process.
    Denied,
    /// Any other error, worth a warning.
    Failed(io::Error),
}

impl<T> Read<T> {
    fn from_io(result: io::Result<T>) -> Self {
        match result {
            Ok(v) => Read::Ok(v),
            Err(e) if is_gone(&e) => Read::Gone,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Read::Denied,
            Err(e) => Read::Failed(e),
        }
    }
}

/// Whether an error means the file went away (`ENOENT`, or `ESRCH` from a dying process).
pub(crate) fn is_gone(e: &io::Error) -> bool {
    const ESRCH: i32 = 3;
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(ESRCH)
}

/// GPU lines of `/proc/meminfo`, in bytes; `None` where the line (or the file) is absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MeminfoGpu {
    /// `GPUActive`: memory the GPU drivers hold in use.
    pub gpu_active: Option<u64>,
    /// `GPUReclaim`: memory the GPU drivers hold in pools they can give back.
    pub gpu_reclaim: Option<u64>,
}

/// Parses the `GPUActive:`/`GPUReclaim:` lines (`<n> kB`) of a meminfo text into bytes.
pub fn parse_meminfo(text: &str) -> MeminfoGpu {
    let mut out = MeminfoGpu::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key.trim() {
            "GPUActive" => &mut out.gpu_active,
            "GPUReclaim" => &mut out.gpu_reclaim,
            _ => continue,
        };
        *slot = parse_kb(value);
    }
    out
}

/// Reads `<n> kB` (or a bare `<n>`, taken as kB like the rest of meminfo) as bytes.
fn parse_kb(value: &str) -> Option<u64> {
    let mut words = value.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match (words.next(), words.next()) {
        (None | Some("kB"), None) => n.checked_mul(1024),
        _ => None,
    }
}

/// The numeric entries of `proc_root` (the pids), ascending.
pub(crate) fn list_pids(proc_root: &Path) -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// The fdinfo files of one process as `(fd, path)`, ascending by fd.
pub(crate) fn list_fdinfo(proc_root: &Path, pid: u32) -> Read<Vec<(u32, PathBuf)>> {
    let dir = proc_root.join(pid.to_string()).join("fdinfo");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => return Read::from_io(Err(e)),
    };
    let mut fds: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            Some((fd, e.path()))
        })
        .collect();
    fds.sort_unstable_by_key(|(fd, _)| *fd);
    Read::Ok(fds)
}

/// Reads at most `limit` bytes of a text file, replacing invalid UTF-8.
pub(crate) fn read_capped(path: &Path, limit: u64) -> Read<String> {
    let mut bytes = Vec::new();
    let result = File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes));
    Read::from_io(result.map(|_| String::from_utf8_lossy(&bytes).into_owned()))
}

/// The command name of a process, without its trailing newline; `None` if it cannot be read.
pub(crate) fn read_comm(proc_root: &Path, pid: u32) -> Option<String> {
    let path = proc_root.join(pid.to_string()).join("comm");
    match read_capped(&path, 256) {
        Read::Ok(text) => Some(text.trim_end_matches('\n').to_string()),
        _ => None,
    }
}

/// Reads `<proc_root>/meminfo`; `None` when the file cannot be read.
pub(crate) fn read_meminfo(proc_root: &Path) -> Option<MeminfoGpu> {
    match read_capped(&proc_root.join("meminfo"), 1 << 20) {
        Read::Ok(text) => Some(parse_meminfo(&text)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_gpu_lines_in_bytes() {
        let text =
            "MemTotal:       65536000 kB\nGPUActive:        2048 kB\nGPUReclaim:    \t 16 kB\n";
        let m = parse_meminfo(text);
        assert_eq!(
            m,
            MeminfoGpu {
                gpu_active: Some(2048 * 1024),
                gpu_reclaim: Some(16 * 1024)
            }
        );
    }

    #[test]
    fn meminfo_without_gpu_lines_is_absent_not_zero() {
        assert_eq!(
            parse_meminfo("MemTotal: 1 kB\nMemFree: 1 kB\n"),
            MeminfoGpu::default()
        );
        assert_eq!(
            parse_meminfo("GPUActive: lots kB\nGPUReclaim: 1 MB\n"),
            MeminfoGpu::default()
        );
        assert_eq!(parse_meminfo("GPUActive: 0 kB\n").gpu_active, Some(0));
    }

    #[test]
    fn missing_things_read_as_gone() {
        let nowhere = Path::new("/nonexistent-oomtrace-test");
        assert!(matches!(read_capped(&nowhere.join("x"), 10), Read::Gone));
        assert!(matches!(list_fdinfo(nowhere, 1), Read::Gone));
        assert_eq!(read_comm(nowhere, 1), None);
        assert_eq!(read_meminfo(nowhere), None);
        assert!(list_pids(nowhere).is_err());
    }
}
