//! The files `oomtrace run --artifacts DIR` leaves behind, in the shapes hand-made OOM
//! harnesses used, so existing notebooks and CI checks keep working:
//!
//! | file | written by | content |
//! |---|---|---|
//! | [`MEMORY_LOG`] | [`MemoryLog`] | header + one [`Row`] per sample, appended as the run goes |
//! | [`SUMMARY`] | [`write_json`] of a [`Summary`] | peaks, duration, OOM kills, how CMD ended |
//! | [`OOM_EVENTS`] | [`write_json`] | each OOM kill with the victim's snapshot |
//! | [`REPORT`] | [`write_json`] / [`write_text`] | the normal `oomtrace.report/1` JSON report |
//! | [`KERNEL_LOG`] | [`write_text`] | the kernel's OOM lines (see `kmsg`) |
//!
//! The memory log is written row by row, unbuffered, so a run that is SIGKILLed keeps every
//! row taken so far; the other files are written once, atomically (a temporary file renamed
//! into place), so a reader never sees half a JSON document.
//!
//! Every file is created readable by its owner only (0600: they hold a program's stacks), and
//! never through a symlink someone planted in the directory: the log is opened `O_NOFOLLOW`, a
//! temporary file `O_EXCL | O_NOFOLLOW`, and the rename that follows replaces a planted link
//! rather than writing where it points. When the disk fills, the log is cut back to its last
//! whole row, one line says so, and the run goes on without it.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// The per-sample CSV.
pub const MEMORY_LOG: &str = "memory_log.csv";
/// The run summary.
pub const SUMMARY: &str = "summary.json";
/// The OOM kills seen, with the victims' snapshots.
pub const OOM_EVENTS: &str = "oom_events.json";
/// The normal JSON report.
pub const REPORT: &str = "report.json";
/// The kernel's OOM messages.
pub const KERNEL_LOG: &str = "kernel_log.txt";
/// The first line of [`MEMORY_LOG`].
pub const CSV_HEADER: &str = "t_s,pid,rss_bytes,heap_outstanding_bytes,cgroup_usage_bytes";

/// One sample: one line of [`MEMORY_LOG`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row {
    /// Seconds since CMD started.
    pub t_s: f64,
    /// CMD's pid (the root of the traced tree).
    pub pid: u32,
    /// Resident set size of the process tree, in bytes.
    pub rss_bytes: u64,
    /// Heap bytes allocated and not yet freed (from the tracer), in bytes.
    pub heap_outstanding_bytes: u64,
    /// The run cgroup's charged memory; empty in the CSV without `--memory-max`.
    pub cgroup_usage_bytes: Option<u64>,
}

impl Row {
    /// The CSV line, without the newline: `t_s` to the millisecond, the integers exact.
    pub fn to_csv(&self) -> String {
        let cgroup = self
            .cgroup_usage_bytes
            .map(|b| b.to_string())
            .unwrap_or_default();
        format!(
            "{:.3},{},{},{},{cgroup}",
            self.t_s, self.pid, self.rss_bytes, self.heap_outstanding_bytes
        )
    }
}

/// [`MEMORY_LOG`], appended to one row at a time.
#[derive(Debug)]
pub struct MemoryLog {
    file: File,
    path: PathBuf,
    rows: u64,
    /// Bytes of whole rows (and the header) in the file.
    len: u64,
    /// Set once a write failed: the file stays as it was cut.
    stopped: bool,
}

/// Opens `path` for writing, 0600 when new, refusing a symlink there.
fn create_private(path: &Path, exclusive: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).mode(0o600).custom_flags(libc::O_NOFOLLOW);
    if exclusive {
        o.create_new(true);
    } else {
        o.create(true).truncate(true);
    }
    o.open(path)
}

impl MemoryLog {
    /// Creates `dir` if needed and `dir/memory_log.csv` (truncated) with its header.
    pub fn create(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create artifacts directory {}", dir.display()))?;
        let path = dir.join(MEMORY_LOG);
        let mut file = create_private(&path, false)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let header = format!("{CSV_HEADER}\n");
        file.write_all(header.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self {
            file,
            path,
            rows: 0,
            len: header.len() as u64,
            stopped: false,
        })
    }

    /// Appends one row; it is in the file (the kernel's page cache) when this returns. When the
    /// write fails (a full disk), the file is cut back to its last whole row, one line says
    /// so, and later rows are dropped.
    pub fn push(&mut self, row: &Row) {
        if self.stopped {
            return;
        }
        let line = format!("{}\n", row.to_csv());
        // One unbuffered write per row: nothing waits in our memory if we are killed.
        match self.file.write_all(line.as_bytes()) {
            Ok(()) => {
                self.rows += 1;
                self.len += line.len() as u64;
            }
            Err(e) => {
                self.stopped = true;
                // Shrinking needs no space, even on a full disk.
                let _ = self.file.set_len(self.len);
                crate::say!(
                    "oomtrace: error: cannot write {}: {e}; it stops at its {} row(s) so far \
                     and the run goes on",
                    self.path.display(),
                    self.rows
                );
            }
        }
    }

    /// Whether a write failed and the log stopped.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Rows written so far (the header not counted).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The content of [`SUMMARY`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Highest RSS of the process tree seen by the sampler, in bytes.
    pub peak_rss_bytes: u64,
    /// Highest outstanding heap seen by the tracer, in bytes.
    pub peak_outstanding_bytes: u64,
    /// Seconds from CMD's start to its end.
    pub duration_s: f64,
    /// Rows in [`MEMORY_LOG`].
    pub samples: u64,
    /// Processes the OOM killer killed during the run.
    pub oom_kills: u64,
    /// CMD's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed CMD, when it was killed (9 for the OOM killer).
    pub signal: Option<i32>,
    /// The `--memory-max` limit in bytes, when one was set.
    pub memory_max: Option<u64>,
}

/// Writes `value` as pretty JSON to `dir/name`, atomically.
pub fn write_json(dir: &Path, name: &str, value: &impl Serialize) -> Result<()> {
    let mut bytes =
        serde_json::to_vec_pretty(value).with_context(|| format!("cannot serialize {name}"))?;
    bytes.push(b'\n');
    write_atomic(dir, name, &bytes)
}

/// Writes `text` to `dir/name`, atomically.
pub fn write_text(dir: &Path, name: &str, text: &str) -> Result<()> {
    write_atomic(dir, name, text.as_bytes())
}

/// Writes a hidden temporary file next to the target, then renames it over the target.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        bail!("invalid artifact file name {name:?}: expected a plain file name like {SUMMARY}");
    }
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create artifacts directory {}", dir.display()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A stale temporary of ours (a killed run with our pid) goes first: O_EXCL wants it gone.
    let _ = fs::remove_file(&tmp);
    let written = create_private(&tmp, true)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty directory per test.
    fn temp_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oomtrace-art-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn memory_log_has_header_and_one_exact_row_per_push() {
        let dir = temp_dir("log");
        let mut log = MemoryLog::create(&dir.join("nested")).unwrap();
        let rows = [
            Row {
                t_s: 0.0,
                pid: 4242,
                rss_bytes: 1_048_576,
                heap_outstanding_bytes: 0,
                cgroup_usage_bytes: Some(2_097_152),
            },
            Row {
                t_s: 0.2,
                pid: 4242,
                rss_bytes: 18_446_744_073_709_551_615,
                heap_outstanding_bytes: 123_456_789,
                cgroup_usage_bytes: None,
            },
            Row {
                t_s: 12.3456,
                pid: 1,
                rss_bytes: 7,
                heap_outstanding_bytes: 8,
                cgroup_usage_bytes: Some(0),
            },
        ];
        for row in &rows {
            log.push(row);
        }
        assert_eq!(log.rows(), 3);
        let text = fs::read_to_string(log.path()).unwrap();
        assert_eq!(
            text,
            "t_s,pid,rss_bytes,heap_outstanding_bytes,cgroup_usage_bytes\n\
             0.000,4242,1048576,0,2097152\n\
             0.200,4242,18446744073709551615,123456789,\n\
             12.346,1,7,8,0\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn summary_keys_are_exactly_the_documented_ones() {
        let dir = temp_dir("summary");
        let summary = Summary {
            peak_rss_bytes: 33_554_432,
            peak_outstanding_bytes: 30_000_000,
            duration_s: 1.5,
            samples: 8,
            oom_kills: 1,
            exit_code: None,
            signal: Some(9),
            memory_max: Some(33_554_432),
        };
        write_json(&dir, SUMMARY, &summary).unwrap();
        let text = fs::read_to_string(dir.join(SUMMARY)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = [
            "peak_rss_bytes",
            "peak_outstanding_bytes",
            "duration_s",
            "samples",
            "oom_kills",
            "exit_code",
            "signal",
            "memory_max",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(value["exit_code"], serde_json::Value::Null);
        assert_eq!(value["signal"], 9);
        assert_eq!(value["memory_max"], 33_554_432);
        assert_eq!(serde_json::from_str::<Summary>(&text).unwrap(), summary);
        assert!(
            text.contains("\n  \"peak_rss_bytes\": 33554432,\n"),
            "not pretty: {text}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_are_private_and_planted_links_are_not_followed() {
        use std::os::unix::fs::{PermissionsExt as _, symlink};
        let dir = temp_dir("links");
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "precious").unwrap();
        // A link planted where the log goes: creating the log fails, the target is untouched.
        symlink(&victim, dir.join(MEMORY_LOG)).unwrap();
        assert!(MemoryLog::create(&dir).is_err());
        // One planted where a JSON file goes: the file replaces the link.
        symlink(&victim, dir.join(SUMMARY)).unwrap();
        write_json(&dir, SUMMARY, &Summary::default()).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        let meta = fs::symlink_metadata(dir.join(SUMMARY)).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        fs::remove_file(dir.join(MEMORY_LOG)).unwrap();
        let log = MemoryLog::create(&dir).unwrap();
        let mode = fs::metadata(log.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writes_are_atomic_and_replace() {
        let dir = temp_dir("atomic");
        write_text(&dir, KERNEL_LOG, "first\n").unwrap();
        write_text(&dir, KERNEL_LOG, "second\n").unwrap();
        let report = serde_json::json!({"schema": "oomtrace.report/1", "stacks": []});
        write_json(&dir, REPORT, &report).unwrap();
        write_json(&dir, OOM_EVENTS, &Vec::<u32>::new()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join(KERNEL_LOG)).unwrap(),
            "second\n"
        );
        assert_eq!(files_in(&dir), [KERNEL_LOG, OOM_EVENTS, REPORT]);
        let back: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join(REPORT)).unwrap()).unwrap();
        assert_eq!(back, report);

        for bad in ["", "a/b", "..", "."] {
            let err = write_text(&dir, bad, "x").unwrap_err().to_string();
            assert!(err.starts_with("invalid artifact file name"), "{err}");
        }
        // A target that cannot be replaced (a non-empty directory) leaves no temporary behind.
        fs::create_dir_all(dir.join("busy.json/inside")).unwrap();
        assert!(write_text(&dir, "busy.json", "x").is_err());
        assert_eq!(
            files_in(&dir),
            ["busy.json", KERNEL_LOG, OOM_EVENTS, REPORT]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
