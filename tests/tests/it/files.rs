//! Issue 22, "A PostgreSQL server makes oomtrace eat the machine": whatever a target maps,
//! oomtrace opens only the regular ELF objects it maps executable, through the mapping itself,
//! and reads them under bounds. Its own peak RSS is measured from outside (`/usr/bin/time`).
//!
//! Before the fix, attached by pid to `mapped maps` below, oomtrace read the 4 GiB sparse file
//! and `/dev/zero` whole: 4.2 GB peak RSS under a 6 GB address-space limit, and no stack reported.

mod postgres;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::Value;

use crate::util::*;

/// The bound on oomtrace's own peak RSS (issue 22).
const MAX_RSS_KIB: u64 = 256 << 10;

/// A fresh directory under /tmp, removed at drop.
pub struct TempDir {
    /// Its path.
    pub path: PathBuf,
}

impl TempDir {
    /// Creates `/tmp/oomtrace-TAG-PID-N`.
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = PathBuf::from(format!("/tmp/oomtrace-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `mapped.c` built as the program.
fn mapped_program() -> PathBuf {
    build_c(
        "mapped",
        "mapped",
        &["-O2", "-g", "-fno-omit-frame-pointer"],
    )
}

/// `mapped.c` built as `libmaplib.so`.
fn maplib() -> PathBuf {
    build_c(
        "mapped",
        "libmaplib.so",
        &["-O2", "-g", "-shared", "-fPIC", "-DMAPLIB"],
    )
}

/// `/usr/bin/time -f %M -o RSS_FILE`, to which the command is appended.
fn timed(rss_file: &Path) -> Command {
    let mut c = Command::new("/usr/bin/time");
    c.args(["-f", "%M", "-o"]).arg(rss_file);
    c
}

/// The peak RSS in KiB that `/usr/bin/time` wrote (its last line).
fn peak_kib(rss_file: &Path) -> u64 {
    let text = std::fs::read_to_string(rss_file).unwrap();
    text.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {}: {text:?}", rss_file.display()))
}

/// oomtrace attached by pid under `/usr/bin/time`, its stderr read up to the "attached" line.
pub struct Tracer {
    child: Child,
    rss_file: PathBuf,
    stderr: BufReader<ChildStderr>,
    /// The stderr lines read so far.
    pub lines: Vec<String>,
}

impl Tracer {
    /// Starts `oomtrace ARGS` (with `envs`) and waits until it has attached.
    pub fn start(args: &[&str], envs: &[(&str, &str)], rss_file: &Path) -> Self {
        let mut child = timed(rss_file)
            .arg(bin())
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let _ = child.kill();
                panic!("oomtrace ended before attaching:\n{}", lines.join(""));
            }
            let attached = line.contains("attached to pid");
            lines.push(line);
            if attached {
                break;
            }
        }
        Self {
            child,
            rss_file: rss_file.to_owned(),
            stderr,
            lines,
        }
    }

    /// Waits for the report: (exit code, report, all of stderr, peak RSS in KiB).
    pub fn finish(mut self) -> (i32, Value, String, u64) {
        let mut stdout = self.child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut stdout, &mut out).unwrap();
            out
        });
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stderr, &mut rest).unwrap();
        let status = self.child.wait().unwrap();
        let out = reader.join().unwrap();
        let stderr = self.lines.concat() + &rest;
        let report: Value = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("report is not JSON ({e}); stderr:\n{stderr}"));
        (
            status.code().unwrap_or(-1),
            report,
            stderr,
            peak_kib(&self.rss_file),
        )
    }
}

/// A workload started with "wait": its pid is known, and it allocates when told to.
pub struct Waiting {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Its pid.
    pub pid: u32,
}

impl Waiting {
    /// Spawns `cmd` (which ends in "wait") and reads its "ready PID" line.
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let pid = line
            .trim()
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("workload did not start: {line:?}"))
            .parse()
            .unwrap();
        Self {
            child,
            stdin,
            stdout,
            pid,
        }
    }

    /// Lets it allocate and waits for its "done".
    pub fn allocate(&mut self) {
        writeln!(self.stdin.as_mut().unwrap(), "go").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done");
    }

    /// Lets it exit (EOF on its stdin) and waits for it.
    pub fn finish(&mut self) {
        drop(self.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stacks whose frame 0 is `function`, in process `pid`.
fn stacks_with_top<'a>(report: &'a Value, function: &str, pid: u64) -> Vec<&'a Value> {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["pid"].as_u64() == Some(pid) && s["frames"][0]["function"] == function)
        .collect()
}

/// Functions of each stack of process `pid`, innermost first, with its allocated bytes.
pub fn frames_of(report: &Value, pid: u64) -> Vec<(u64, Vec<String>)> {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["pid"].as_u64() == Some(pid))
        .map(|s| {
            let frames = s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    f["function"].as_str().map_or_else(
                        || format!("?? [{}]", f["module"].as_str().unwrap_or("?")),
                        str::to_owned,
                    )
                })
                .collect();
            (s["allocated_bytes"].as_u64().unwrap(), frames)
        })
        .collect()
}

/// Prints a process's stacks (for the test log, and the issue).
pub fn show(report: &Value, pid: u64, what: &str) {
    let mut stacks = frames_of(report, pid);
    stacks.sort_by_key(|s| std::cmp::Reverse(s.0));
    eprintln!("{what} (pid {pid}): {} stacks", stacks.len());
    for (bytes, frames) in stacks.iter().take(12) {
        eprintln!("  {bytes:>10}  {}", frames.join(" < "));
    }
}

#[test]
fn run_of_a_target_mapping_dev_zero_a_sparse_file_and_a_deleted_file() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("mapped-run");
    let rss = dir.path.join("rss");
    let out = output(
        timed(&rss)
            .arg(bin())
            .args(["run", "--format", "json", "--"])
            .arg(mapped_program())
            .arg("maps")
            .arg(&dir.path),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}); stderr:\n{stderr}"));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let pid = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["comm"] == "mapped")
        .and_then(|p| p["pid"].as_u64())
        .unwrap_or_else(|| panic!("no mapped process: {report}"));
    assert_figures(&report, "mapped_alloc", Some(pid), leak(500_000, 5));
    assert_consistent(&report);
    // time's figure is the largest of oomtrace and its command: both must be small.
    let peak = peak_kib(&rss);
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB");
}

#[test]
fn attach_to_a_target_mapping_dev_zero_a_sparse_file_and_a_deleted_library() {
    if !require_bpf() {
        return;
    }
    let dir = TempDir::new("mapped-pid");
    // A library loaded from a file that is deleted at once: "(deleted)" in the maps, and nothing
    // at its path by the time oomtrace symbolizes (the target has exited then too).
    let lib = dir.path.join("libmaplib-deleted.so");
    std::fs::copy(maplib(), &lib).unwrap();
    let mut w = Waiting::spawn(
        Command::new(mapped_program())
            .arg("maps")
            .arg(&dir.path)
            .arg(&lib)
            .arg("wait"),
    );
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", w.pid)).unwrap();
    for what in [
        "/dev/zero (deleted)",
        "/sparse",
        "libmaplib-deleted.so (deleted)",
    ] {
        assert!(maps.contains(what), "{what} is not mapped:\n{maps}");
    }
    let pid = w.pid.to_string();
    let tracer = Tracer::start(
        &["--pid", &pid, "--duration", "30s", "--format", "json"],
        &[("OOMTRACE_VERBOSE", "1")],
        &dir.path.join("rss"),
    );
    w.allocate();
    w.finish();
    let (code, report, stderr, peak) = tracer.finish();
    assert_eq!(code, 0, "{stderr}");
    let pid = u64::from(w.pid);
    show(&report, pid, "the target");
    assert_figures(&report, "mapped_alloc", Some(pid), leak(500_000, 5));
    assert_figures(&report, "maplib_alloc", Some(pid), leak(21_000, 3));
    for st in stacks_with_top(&report, "maplib_alloc", pid) {
        assert_eq!(st["frames"][0]["module"], "libmaplib-deleted.so", "{st}");
    }
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB\n{stderr}");
    // The executable mappings that are not ELF objects were refused, each said; /dev/zero is
    // not code and was never opened at all.
    let sparse = format!("not reading {}/sparse", dir.path.display());
    for (what, why) in [
        (sparse.as_str(), "no ELF magic"),
        ("/memfd:oomtrace-data", "no ELF magic"),
    ] {
        assert!(
            stderr.lines().any(|l| l.contains(what) && l.contains(why)),
            "no refusal of {what}:\n{stderr}"
        );
    }
    assert!(!stderr.contains("/dev/zero"), "{stderr}");
}

/// inotify on one file: `IN_OPEN | IN_ACCESS`.
struct Watch(std::os::fd::OwnedFd);

impl Watch {
    fn new(path: &Path) -> Self {
        use std::os::fd::FromRawFd as _;
        use std::os::unix::ffi::OsStrExt as _;
        // SAFETY: no preconditions; the descriptor is owned below.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fresh and ours.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid inotify descriptor and a NUL-terminated path.
        let wd = unsafe {
            libc::inotify_add_watch(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                c.as_ptr(),
                libc::IN_OPEN | libc::IN_ACCESS,
            )
        };
        assert!(
            wd >= 0,
            "inotify_add_watch: {}",
            std::io::Error::last_os_error()
        );
        Self(fd)
    }

    /// Bytes of events queued since (0: the file was neither opened nor read).
    fn events(&self) -> usize {
        let mut buf = [0u8; 4096];
        // SAFETY: reading into a buffer we own, of the length given.
        let n = unsafe {
            libc::read(
                std::os::fd::AsRawFd::as_raw_fd(&self.0),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        usize::try_from(n).unwrap_or(0)
    }
}

/// A target in its own mount namespace maps a library, then replaces that path with a symlink to
/// a host file. oomtrace must symbolize from the mapped object and never open the host file
/// (followed as root, such a symlink could name any file on the host).
///
/// With `private`, the library lives on a tmpfs mounted in the target's namespace only: its path
/// leads nowhere on the host. Without, it lives in a directory both see (a shared volume): its
/// path leads, on the host too, to the symlink. Before the fix oomtrace's symbolizer opened that
/// path from the host's root, and so the host file.
fn swapped_library(private: bool) {
    let dir = TempDir::new("mntns");
    std::fs::create_dir(dir.path.join("ns")).unwrap();
    let marker = dir.path.join("marker");
    std::fs::write(&marker, "a host file the target points oomtrace at\n").unwrap();
    let watch = Watch::new(&marker);
    let mount = if private {
        r#"mount -t tmpfs oomtrace-test "$1/ns" && "#
    } else {
        ""
    };
    let script = format!(
        r#"{mount}cp "$2" "$1/ns/libswap.so" && exec "$3" swap "$1/ns/libswap.so" "$1/marker" wait"#
    );
    let mut w = Waiting::spawn(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .arg(&dir.path)
            .arg(maplib())
            .arg(mapped_program()),
    );
    // The swap happened where the target lives; the host sees the symlink only if shared.
    let inside = PathBuf::from(format!(
        "/proc/{}/root{}/ns/libswap.so",
        w.pid,
        dir.path.display()
    ));
    assert_eq!(std::fs::read_link(&inside).unwrap(), marker);
    let on_host = std::fs::read_link(dir.path.join("ns/libswap.so")).ok();
    assert_eq!(on_host, (!private).then(|| marker.clone()));
    let pid = w.pid.to_string();
    let tracer = Tracer::start(
        &["--pid", &pid, "--duration", "30s", "--format", "json"],
        &[],
        &dir.path.join("rss"),
    );
    w.allocate();
    w.finish();
    let (code, report, stderr, peak) = tracer.finish();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(watch.events(), 0, "oomtrace opened or read the host file");
    let pid = u64::from(w.pid);
    assert_figures(&report, "maplib_alloc", Some(pid), leak(21_000, 3));
    assert_figures(&report, "mapped_alloc", Some(pid), leak(500_000, 5));
    for st in stacks_with_top(&report, "maplib_alloc", pid) {
        assert_eq!(st["frames"][0]["module"], "libswap.so", "{st}");
    }
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB");
    // The watch does see an open: the check above can fail.
    std::fs::read(&marker).unwrap();
    assert!(watch.events() > 0);
}

#[test]
fn a_library_swapped_for_a_symlink_on_a_private_mount() {
    if require_bpf() {
        swapped_library(true);
    }
}

#[test]
fn a_library_swapped_for_a_symlink_in_a_shared_directory() {
    if require_bpf() {
        swapped_library(false);
    }
}
