//! A fresh memory cgroup with a hard limit, for `oomtrace run --memory-max`.
//!
//! [`MemoryCgroup::create`] picks cgroup v2 when a mounted cgroup2 hierarchy offers the memory
//! controller (enabling `+memory` in the root's `cgroup.subtree_control` if needed), else the
//! cgroup v1 memory hierarchy. The cgroup is made directly under the hierarchy's root (on v2
//! the only cgroup that may hold processes and still delegate controllers), named
//! `oomtrace-<our pid>-<n>`, and capped with swap disabled so swap cannot hide the limit:
//!
//! | | limit | swap |
//! |---|---|---|
//! | v2 | `memory.max` | `memory.swap.max` = 0, when present |
//! | v1 | `memory.limit_in_bytes` | `memory.memsw.limit_in_bytes` = the limit, when present |
//!
//! The held child joins with [`MemoryCgroup::add_pid`] before it execs, so everything it runs
//! is capped. Dropping the value (normal return, `?`, panic) kills whatever is still inside
//! and removes the directory; [`MemoryCgroup::remove`] does the same and reports failures.
//! Ctrl-C and SIGTERM are covered as long as the caller handles them by returning (as the
//! session does to write its report), not by `process::exit` or the default disposition. A
//! cgroup left behind because oomtrace itself was SIGKILLed is found by [`stale_cgroups`] (its
//! owner pid is gone) and removed by [`remove_stale`].
//!
//! ```text
//! let cg = MemoryCgroup::create(64 << 20)?;  // /sys/fs/cgroup/memory/oomtrace-4242-0
//! cg.add_pid(held.pid)?;                     // before release: exec happens inside the cap
//! ... cg.usage_bytes(), cg.oom_kills(), cg.pids() while it runs ...
//! cg.remove()?;
//! ```

use std::fmt;
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long [`MemoryCgroup::remove`] waits for killed processes to leave before giving up.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(3);
/// The poll step while waiting for a cgroup to empty.
const POLL_STEP: Duration = Duration::from_millis(10);
/// The prefix of every cgroup oomtrace creates.
pub const NAME_PREFIX: &str = "oomtrace-";

/// Which cgroup interface a [`MemoryCgroup`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    /// The legacy per-controller hierarchy (`/sys/fs/cgroup/memory`).
    V1,
    /// The unified hierarchy (`cgroup2`).
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "cgroup v1",
            Self::V2 => "cgroup v2",
        })
    }
}

/// Why a memory cgroup could not be set up or torn down.
#[derive(Debug)]
#[non_exhaustive]
pub enum CgroupError {
    /// No mounted hierarchy offers the memory controller.
    NoMemoryController,
    /// The given root is not a usable hierarchy of the requested version.
    NotAHierarchy {
        /// The root that was given.
        root: PathBuf,
        /// The version that was asked for.
        version: CgroupVersion,
    },
    /// cgroup v2: `+memory` could not be written to the parent's `cgroup.subtree_control`.
    ControllerNotEnabled {
        /// The parent cgroup.
        parent: PathBuf,
        /// The write error.
        source: io::Error,
    },
    /// Creating or changing the cgroup was refused (not root, or a read-only cgroupfs).
    PermissionDenied {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The refusal.
        source: io::Error,
    },
    /// Processes were still inside the cgroup after being killed.
    Busy {
        /// The cgroup directory.
        path: PathBuf,
        /// The pids still listed in `cgroup.procs`.
        pids: Vec<u32>,
    },
    /// Any other failure on a cgroup file or directory.
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for CgroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMemoryController => f.write_str(
                "no memory cgroup available: neither cgroup v2 with the memory controller nor a \
                 cgroup v1 memory hierarchy is mounted; mount one or run without --memory-max",
            ),
            Self::NotAHierarchy { root, version } => write!(
                f,
                "{} is not a {version} hierarchy with the memory controller; pass the mount \
                 point of one",
                root.display()
            ),
            Self::ControllerNotEnabled { parent, source } => write!(
                f,
                "cannot enable the memory controller in {}/cgroup.subtree_control: {source}; \
                 cgroup v2 refuses this when that cgroup holds processes itself (e.g. inside a \
                 container): enable it there, or run without --memory-max",
                parent.display()
            ),
            Self::PermissionDenied {
                action,
                path,
                source,
            } => write!(
                f,
                "cannot {action} {}: {source}; run oomtrace as root with a writable cgroup \
                 filesystem, or run without --memory-max",
                path.display()
            ),
            Self::Busy { path, pids } => write!(
                f,
                "memory cgroup {} still holds pid(s) {pids:?} after SIGKILL; kill them, then \
                 `rmdir {}`",
                path.display(),
                path.display()
            ),
            Self::Io {
                action,
                path,
                source,
            } => write!(
                f,
                "cannot {action} {}: {source}; check that the cgroup filesystem is mounted and \
                 writable",
                path.display()
            ),
        }
    }
}

impl std::error::Error for CgroupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ControllerNotEnabled { source, .. }
            | Self::PermissionDenied { source, .. }
            | Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> CgroupError {
    let path = path.to_path_buf();
    match source.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            CgroupError::PermissionDenied {
                action,
                path,
                source,
            }
        }
        _ => CgroupError::Io {
            action,
            path,
            source,
        },
    }
}

/// A memory cgroup this process created; dropping it kills what is inside and removes it.
#[derive(Debug)]
pub struct MemoryCgroup {
    path: PathBuf,
    name: String,
    version: CgroupVersion,
    limit_bytes: u64,
    removed: bool,
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

impl MemoryCgroup {
    /// Creates `oomtrace-<pid>-<n>` with `limit_bytes` in the best available hierarchy.
    pub fn create(limit_bytes: u64) -> Result<Self, CgroupError> {
        let mounts = CgroupMounts::discover();
        if let Some(root) = mounts.v2.filter(|r| v2_has_memory(r)) {
            return Self::create_under(&root, CgroupVersion::V2, limit_bytes);
        }
        if let Some(root) = mounts.v1_memory {
            return Self::create_under(&root, CgroupVersion::V1, limit_bytes);
        }
        Err(CgroupError::NoMemoryController)
    }

    /// Creates the cgroup under a given hierarchy root (or any cgroup in it).
    pub fn create_under(
        root: &Path,
        version: CgroupVersion,
        limit_bytes: u64,
    ) -> Result<Self, CgroupError> {
        let not_hierarchy = || CgroupError::NotAHierarchy {
            root: root.to_path_buf(),
            version,
        };
        match version {
            CgroupVersion::V2 => {
                if !v2_has_memory(root) {
                    return Err(not_hierarchy());
                }
                enable_memory_for_children(root)?;
            }
            CgroupVersion::V1 => {
                if !root.join("memory.limit_in_bytes").exists() {
                    return Err(not_hierarchy());
                }
            }
        }
        let cgroup = Self::make_dir(root, version, limit_bytes)?;
        // From here on a failure drops `cgroup`, which removes the directory again.
        cgroup.set_limit()?;
        Ok(cgroup)
    }

    fn make_dir(root: &Path, version: CgroupVersion, limit: u64) -> Result<Self, CgroupError> {
        let pid = std::process::id();
        loop {
            let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let name = format!("{NAME_PREFIX}{pid}-{n}");
            let path = root.join(&name);
            match fs::create_dir(&path) {
                Ok(()) => {
                    return Ok(Self {
                        path,
                        name,
                        version,
                        limit_bytes: limit,
                        removed: false,
                    });
                }
                // Left behind by an earlier process that had our pid: try the next number.
                Err(e) if e.kind() == ErrorKind::AlreadyExists && n < u32::MAX => continue,
                Err(e) => return Err(io_error("create memory cgroup", &path, e)),
            }
        }
    }

    fn set_limit(&self) -> Result<(), CgroupError> {
        let limit = self.limit_bytes.to_string();
        let (limit_file, swap_file, swap_value) = match self.version {
            CgroupVersion::V2 => ("memory.max", "memory.swap.max", "0"),
            // memsw is memory + swap: equal to the memory limit, it leaves no room for swap.
            // It must be written after limit_in_bytes (the kernel keeps memsw ≥ memory).
            CgroupVersion::V1 => (
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                limit.as_str(),
            ),
        };
        self.write("set the memory limit in", limit_file, &limit)?;
        if self.path.join(swap_file).exists() {
            self.write("disable swap in", swap_file, swap_value)?;
        }
        Ok(())
    }

    fn write(&self, action: &'static str, file: &str, value: &str) -> Result<(), CgroupError> {
        let path = self.path.join(file);
        fs::write(&path, value).map_err(|e| io_error(action, &path, e))
    }

    fn read(&self, file: &str) -> Option<String> {
        fs::read_to_string(self.path.join(file)).ok()
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The interface in use.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The directory name, `oomtrace-<pid>-<n>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limit that was set, in bytes.
    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    /// Moves a process (with all its threads) into the cgroup; its future children follow.
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        self.write("add a process to", "cgroup.procs", &pid.to_string())
    }

    /// The processes now inside the cgroup.
    pub fn pids(&self) -> Vec<u32> {
        read_pids(&self.path)
    }

    /// Current memory charged to the cgroup (`memory.current` / `memory.usage_in_bytes`).
    pub fn usage_bytes(&self) -> Option<u64> {
        let file = match self.version {
            CgroupVersion::V2 => "memory.current",
            CgroupVersion::V1 => "memory.usage_in_bytes",
        };
        self.read(file)?.trim().parse().ok()
    }

    /// Highest usage so far (`memory.peak`, kernel ≥ 5.19 / `memory.max_usage_in_bytes`).
    pub fn peak_usage_bytes(&self) -> Option<u64> {
        let file = match self.version {
            CgroupVersion::V2 => "memory.peak",
            CgroupVersion::V1 => "memory.max_usage_in_bytes",
        };
        self.read(file)?.trim().parse().ok()
    }

    /// How many processes the OOM killer has killed in this cgroup (`oom_kill N`).
    pub fn oom_kills(&self) -> Option<u64> {
        let file = match self.version {
            CgroupVersion::V2 => "memory.events",
            CgroupVersion::V1 => "memory.oom_control",
        };
        keyed_value(&self.read(file)?, "oom_kill")
    }

    /// Kills whatever is still inside, waits until it is empty, and removes the directory.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.removed = true;
        teardown(&self.path, self.version)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        if !self.removed {
            // Best effort: Drop cannot report, and stale_cgroups() finds what is left.
            let _ = teardown(&self.path, self.version);
        }
    }
}

/// SIGKILLs everything in the cgroup at `path`, waits until it is empty and removes it.
fn teardown(path: &Path, version: CgroupVersion) -> Result<(), CgroupError> {
    if !path.exists() {
        return Ok(());
    }
    let kill_file = path.join("cgroup.kill");
    let use_kill_file = version == CgroupVersion::V2 && kill_file.exists();
    let ourselves = std::process::id();
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    loop {
        let pids: Vec<u32> = read_pids(path)
            .into_iter()
            .filter(|&p| p != ourselves)
            .collect();
        if !pids.is_empty() {
            if use_kill_file {
                let _ = fs::write(&kill_file, "1");
            } else {
                for &pid in &pids {
                    // SAFETY: kill(2) with a pid read from cgroup.procs; no memory involved.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                }
            }
        }
        // rmdir fails with EBUSY while the cgroup is populated (dying tasks included).
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                if Instant::now() >= deadline {
                    return Err(CgroupError::Busy {
                        path: path.to_path_buf(),
                        pids: read_pids(path),
                    });
                }
                thread::sleep(POLL_STEP);
            }
            Err(e) => return Err(io_error("remove memory cgroup", path, e)),
        }
    }
}

fn read_pids(cgroup: &Path) -> Vec<u32> {
    fs::read_to_string(cgroup.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The value of `key N` in a flat keyed file (`memory.events`, `memory.oom_control`).
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn v2_has_memory(cgroup: &Path) -> bool {
    fs::read_to_string(cgroup.join("cgroup.controllers"))
        .is_ok_and(|s| s.split_whitespace().any(|c| c == "memory"))
}

fn enable_memory_for_children(parent: &Path) -> Result<(), CgroupError> {
    let control = parent.join("cgroup.subtree_control");
    let enabled =
        fs::read_to_string(&control).is_ok_and(|s| s.split_whitespace().any(|c| c == "memory"));
    if enabled {
        return Ok(());
    }
    fs::write(&control, "+memory").map_err(|source| match source.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            CgroupError::PermissionDenied {
                action: "enable the memory controller in",
                path: control.clone(),
                source,
            }
        }
        _ => CgroupError::ControllerNotEnabled {
            parent: parent.to_path_buf(),
            source,
        },
    })
}

/// Where the cgroup hierarchies that matter here are mounted.
#[derive(Debug, Default, PartialEq, Eq)]
struct CgroupMounts {
    /// The first cgroup2 mount, whatever its controllers.
    v2: Option<PathBuf>,
    /// The cgroup v1 hierarchy carrying the memory controller.
    v1_memory: Option<PathBuf>,
}

impl CgroupMounts {
    fn discover() -> Self {
        fs::read_to_string("/proc/self/mountinfo")
            .map(|s| Self::parse(&s))
            .unwrap_or_default()
    }

    /// Reads mountinfo lines: `id parent dev root mountpoint opts [optional...] - type src superopts`.
    fn parse(mountinfo: &str) -> Self {
        let mut mounts = Self::default();
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = pre.split(' ').nth(4) else {
                continue;
            };
            let mut post = post.split(' ');
            let (fstype, superopts) = (post.next(), post.nth(1).unwrap_or(""));
            let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
            match fstype {
                Some("cgroup2") if mounts.v2.is_none() => mounts.v2 = Some(mount_point),
                Some("cgroup")
                    if mounts.v1_memory.is_none()
                        && superopts.split(',').any(|o| o == "memory") =>
                {
                    mounts.v1_memory = Some(mount_point)
                }
                _ => {}
            }
        }
        mounts
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(v as u8);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `oomtrace-*` cgroups, in every mounted memory-capable hierarchy, whose owner pid is gone.
pub fn stale_cgroups() -> Vec<PathBuf> {
    let mounts = CgroupMounts::discover();
    [mounts.v2, mounts.v1_memory]
        .into_iter()
        .flatten()
        .flat_map(|root| stale_cgroups_under(&root))
        .collect()
}

/// The `oomtrace-<pid>-<n>` directories directly under `root` whose `<pid>` no longer runs.
pub fn stale_cgroups_under(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut stale: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let name = e.file_name();
            owner_pid(&name.to_string_lossy())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(|e| e.path())
        .collect();
    stale.sort();
    stale
}

/// The owner pid in a name `oomtrace-<pid>-<n>`.
fn owner_pid(name: &str) -> Option<u32> {
    let (pid, n) = name.strip_prefix(NAME_PREFIX)?.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok().filter(|&p| p > 0)
}

/// Kills what is inside a stale cgroup (from [`stale_cgroups`]) and removes it.
pub fn remove_stale(path: &Path) -> Result<(), CgroupError> {
    let is_ours = path
        .file_name()
        .and_then(|n| owner_pid(&n.to_string_lossy()))
        .is_some();
    if !is_ours {
        return Err(CgroupError::Io {
            action: "remove (not an oomtrace cgroup)",
            path: path.to_path_buf(),
            source: io::Error::from(ErrorKind::InvalidInput),
        });
    }
    let version = if path.join("memory.limit_in_bytes").exists() {
        CgroupVersion::V1
    } else {
        CgroupVersion::V2
    };
    teardown(path, version)
}

/// Removes every stale cgroup ([`stale_cgroups`]); returns each one found and how its removal
/// went (whatever was still running inside was killed).
pub fn remove_all_stale() -> Vec<(PathBuf, Result<(), CgroupError>)> {
    stale_cgroups()
        .into_iter()
        .map(|path| {
            let r = remove_stale(&path);
            (path, r)
        })
        .collect()
}

/// The memory cgroup of a process (`/oomtrace-1-0`), from `/proc/PID/cgroup`.
///
/// The cgroup v1 `memory` line wins when there is one (the memory controller can live in only
/// one hierarchy); otherwise the v2 `0::` line.
pub fn cgroup_of_pid(pid: u32) -> Option<String> {
    memory_cgroup_from(&fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

fn memory_cgroup_from(proc_cgroup: &str) -> Option<String> {
    let mut v2 = None;
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return Some(path.to_string());
        }
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_string());
        }
    }
    v2
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
