//! Nothing left behind whatever happens to oomtrace, the memory log up to the kill, full disks,
//! a command run without a shell, and a short soak (issue 19).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::gates::gates_exe;
use crate::util::*;

/// The cgroup v1 memory hierarchy of this machine (as `oom.rs`).
const CGROUP_V1: &str = "/sys/fs/cgroup/memory";

/// Polls `done` every 50 ms for up to `secs`; panics with `what` if it never holds.
fn wait_for(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pids whose command line starts with `marker`.
fn pids_running(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            cmd.starts_with(marker.as_bytes()).then_some(pid)
        })
        .collect()
}

/// The BPF program ids process `pid` holds (from its descriptors' fdinfo).
fn bpf_progs_of(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut ids: Vec<u64> = dir
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Every BPF program id loaded now (`bpftool prog show`).
fn loaded_progs() -> Vec<u64> {
    let out = output(Command::new("bpftool").args(["prog", "show", "--json"]));
    assert!(out.status.success(), "bpftool failed: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

#[test]
fn kill_9_of_oomtrace_leaves_no_job_no_cgroup_and_no_bpf_program() {
    if !require_bpf() {
        return;
    }
    // A copy of sleep under a name of its own, so no other sleep is mistaken for it.
    let marker = work_dir().join(format!("capped-job-{}", std::process::id()));
    std::fs::copy("/bin/sleep", &marker).unwrap();
    let marker_s = marker.to_string_lossy().into_owned();
    let mut tracer = oomtrace()
        .args(["run", "--memory-max", "256M", "--format", "json", "--"])
        .arg(&marker)
        .arg("60")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tracer_pid = tracer.id();
    wait_for(20, "the job never started", || {
        !pids_running(&marker_s).is_empty()
    });
    let job = pids_running(&marker_s)[0];
    let cgroup = std::fs::read_to_string(format!("/proc/{job}/cgroup")).unwrap();
    let name = format!("oomtrace-{tracer_pid}-");
    assert!(cgroup.contains(&name), "the job runs in the cap: {cgroup}");
    let progs = bpf_progs_of(tracer_pid);
    assert!(!progs.is_empty(), "oomtrace holds its programs");
    tracer.kill().unwrap();
    tracer.wait().unwrap();
    wait_for(5, "the job outlived oomtrace's SIGKILL", || {
        pids_running(&marker_s).is_empty()
    });
    wait_for(
        15,
        "a BPF program of the killed oomtrace is still loaded",
        || {
            let loaded = loaded_progs();
            progs.iter().all(|p| !loaded.contains(p))
        },
    );
    // Its cgroup is still there (nobody removed it) until the next run.
    let stale: Vec<PathBuf> = std::fs::read_dir(CGROUP_V1)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&name))
        .collect();
    assert_eq!(stale.len(), 1, "{stale:?}");
    let out = output(oomtrace().args([
        "run",
        "--memory-max",
        "64M",
        "--format",
        "json",
        "-o",
        "/dev/null",
        "--",
        "true",
    ]));
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("removed {}", stale[0].display())),
        "{stderr}"
    );
    assert!(!stale[0].exists());
    // `oomtrace cleanup` removes one too (made here for an owner that is gone).
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let left = Path::new(CGROUP_V1).join(format!("oomtrace-{dead}-7"));
    std::fs::create_dir(&left).unwrap();
    let out = output(oomtrace().arg("cleanup"));
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("removed {}", left.display())),
        "{stdout}"
    );
    assert!(!left.exists());
    let _ = std::fs::remove_file(&marker);
}

#[test]
fn the_memory_log_reaches_the_oom_kill() {
    if !require_bpf() {
        return;
    }
    let dir = work_dir().join("oom-csv");
    let _ = std::fs::remove_dir_all(&dir);
    let out = output(
        oomtrace()
            .args(["run", "--memory-max", "64M", "--artifacts"])
            .arg(&dir)
            .args(["--format", "json", "-o", "/dev/null", "--"])
            .arg(groundtruth_fp())
            .arg("grow"),
    );
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    let ooms: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("oom_events.json")).unwrap())
            .unwrap();
    let victim = &ooms[0];
    let rss = ["anon_rss_bytes", "file_rss_bytes", "shmem_rss_bytes"]
        .iter()
        .map(|k| victim[k].as_u64().unwrap())
        .sum::<u64>();
    let log = std::fs::read_to_string(dir.join("memory_log.csv")).unwrap();
    let rows: Vec<Vec<&str>> = log
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    // A row at the kill: the victim's RSS as the kernel reported it.
    assert!(
        rows.iter()
            .any(|r| r[1].parse::<u64>().ok() == victim["pid"].as_u64() && r[2] == rss.to_string()),
        "no row with the victim's {rss} B:\n{log}"
    );
    assert!(rss >= 48 << 20, "{victim}");
    // Past 80 % of the cap, rows come less than 100 ms apart.
    let near: Vec<f64> = rows
        .iter()
        .filter(|r| r[4].parse::<u64>().is_ok_and(|u| u >= (64 << 20) * 4 / 5))
        .map(|r| r[0].parse().unwrap())
        .collect();
    assert!(near.len() >= 2, "{log}");
    assert!(
        near.windows(2).all(|w| w[1] - w[0] < 0.1),
        "gaps near the cap:\n{log}"
    );
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(name: &str, size: &str) -> Self {
        let dir = work_dir().join(name);
        let _ = Command::new("umount")
            .arg(&dir)
            .stderr(Stdio::null())
            .status();
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "oomtrace-test",
            ])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot mount a tmpfs on {}", dir.display());
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_cuts_the_recording_at_a_readable_chunk() {
    if !require_bpf() {
        return;
    }
    let fs = Tmpfs::mount("full-disk", "1m");
    let file = fs.0.join("run.oomtrace");
    let out = output(
        oomtrace()
            .args(["record", "--format", "json", "-o"])
            .arg(&file)
            .args([
                "--".as_ref(),
                gates_exe().as_os_str(),
                "churn".as_ref(),
                "3".as_ref(),
            ]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("No space left on device"))
        .collect();
    assert_eq!(lines.len(), 1, "one clear line: {stderr}");
    let at: u64 = lines[0]
        .split("stops at byte ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", lines[0]));
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        at,
        "cut at the chunk it names"
    );
    let out = output(oomtrace().args(["report", "--format", "json"]).arg(&file));
    assert!(out.status.success(), "{out:?}");
    // The prefix holds the run's events (names come with the footer's symbols, which a cut
    // recording never got: frames are addresses).
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(most_allocs(&report) > 10_000, "{report}");
}

#[test]
fn a_recording_cut_by_sigkill_reads_back_to_its_last_chunk() {
    if !require_bpf() {
        return;
    }
    let file = work_dir().join("killed.oomtrace");
    let mut tracer = oomtrace()
        .args(["record", "--format", "json", "-o"])
        .arg(&file)
        .args([
            "--".as_ref(),
            gates_exe().as_os_str(),
            "churn".as_ref(),
            "20".as_ref(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(20, "nothing recorded", || {
        std::fs::metadata(&file).is_ok_and(|m| m.len() > 200_000)
    });
    tracer.kill().unwrap();
    tracer.wait().unwrap();
    let out = output(oomtrace().args(["report", "--format", "json"]).arg(&file));
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("footer"),
        "the reader says it was cut: {stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(most_allocs(&report) > 10_000, "{report}");
}

/// The most allocations on one stack of `report`.
fn most_allocs(report: &Value) -> u64 {
    report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["allocs"].as_u64().unwrap())
        .max()
        .unwrap_or(0)
}

#[test]
fn the_command_runs_without_a_shell() {
    if !require_bpf() {
        return;
    }
    let planted = work_dir().join("shell-ran");
    let _ = std::fs::remove_file(&planted);
    let out = output(
        oomtrace()
            .args(["run", "--format", "json", "-o", "/dev/null", "--", "echo"])
            .arg(format!("a; touch {}", planted.display())),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("a; touch {}\n", planted.display())
    );
    assert!(!planted.exists(), "a shell interpreted the argument");
}

/// VmRSS of `pid`, bytes.
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}

/// The short soak (`cargo xtask bench soak` runs the 30-minute one): 40 s of churn over a
/// bounded live set. The tracer's memory stays flat after its first seconds, nothing is lost,
/// and what it says is outstanding is the program's own count, byte for byte.
#[test]
fn soak_outstanding_stays_exact_and_the_tracer_flat() {
    if !require_bpf() {
        return;
    }
    let report_file = work_dir().join("soak.json");
    let mut tracer = oomtrace()
        .args(["run", "--format", "json", "-o"])
        .arg(&report_file)
        .args([
            "--".as_ref(),
            gates_exe().as_os_str(),
            "churn".as_ref(),
            "40".as_ref(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = tracer.id();
    let started = Instant::now();
    let mut samples: Vec<(f64, u64)> = Vec::new();
    while let Some(rss) = rss_of(pid) {
        samples.push((started.elapsed().as_secs_f64(), rss));
        if tracer.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut stdout = String::new();
    tracer
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(tracer.wait().unwrap().success());
    // "live B steps N" from the program itself.
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let (live, steps): (u64, u64) = (words[1].parse().unwrap(), words[3].parse().unwrap());
    let report: Value = serde_json::from_slice(&std::fs::read(&report_file).unwrap()).unwrap();
    assert_eq!(report["lost_events"], 0);
    let churn = report["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["frames"][0]["function"] == "churn_alloc")
        .unwrap();
    assert_eq!(churn["outstanding_bytes"], live, "{churn}");
    assert_eq!(churn["allocs"], steps, "{churn}");
    // Flat: from 10 s on, the tracer's RSS never grows by 16 MiB (it drops at the end).
    let after: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= 10.0)
        .map(|s| s.1)
        .collect();
    let (first, hi) = (after[0], *after.iter().max().unwrap());
    assert!(
        hi - first < 16 << 20,
        "tracer RSS {first}..{hi}: {samples:?}"
    );
}
