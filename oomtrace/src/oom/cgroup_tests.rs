//! Tests for [`super`]: real cgroups on this machine (they need root; under `CI=true` a missing
//! prerequisite fails instead of skipping).

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Child, Command, Stdio};

use super::*;

const MIB: u64 = 1024 * 1024;

/// Returns false (after a note) when the test cannot run here; panics instead under CI.
fn can_run(what: &str, available: bool) -> bool {
    if !available {
        let note = format!("skipped: needs {what}");
        assert!(
            std::env::var_os("CI").is_none_or(|v| v != "true"),
            "{note} (CI=true)"
        );
        eprintln!("{note}");
    }
    available
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The v1 memory hierarchy, when mounted and we are root.
fn v1_root() -> Option<PathBuf> {
    let root = CgroupMounts::discover().v1_memory.filter(|_| is_root());
    can_run("root with a cgroup v1 memory hierarchy", root.is_some());
    root
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Starts `sh -c 'read _; exec ...'`: held until [`release`], like the real launcher's child.
fn spawn_held(exec: &str) -> Child {
    Command::new("sh")
        .args(["-c", &format!("read _ && exec {exec}")])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn sh")
}

fn release(child: &mut Child) {
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(b"go\n").expect("release the held child");
}

#[test]
fn v1_cgroup_has_limit_and_no_swap_room() {
    let Some(root) = v1_root() else { return };
    let cg = MemoryCgroup::create_under(&root, CgroupVersion::V1, 64 * MIB).unwrap();
    assert_eq!(cg.version(), CgroupVersion::V1);
    assert_eq!(cg.path().parent(), Some(root.as_path()));
    assert!(
        cg.name()
            .starts_with(&format!("oomtrace-{}-", std::process::id())),
        "{}",
        cg.name()
    );
    assert_eq!(
        read(&cg.path().join("memory.limit_in_bytes")).trim(),
        "67108864"
    );
    let memsw = cg.path().join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        assert_eq!(read(&memsw).trim(), "67108864");
    }
    assert_eq!(cg.limit_bytes(), 64 * MIB);
    assert_eq!(cg.oom_kills(), Some(0));
    assert!(cg.pids().is_empty());
    let path = cg.path().to_path_buf();
    cg.remove().unwrap();
    assert!(!path.exists());
}

#[test]
fn create_picks_the_hierarchy_with_the_memory_controller() {
    let mounts = CgroupMounts::discover();
    if !is_root() {
        // Without root the directory cannot be made: the error says so, on one line.
        if let Err(e) = MemoryCgroup::create(48 * MIB) {
            assert!(
                matches!(
                    e,
                    CgroupError::PermissionDenied { .. } | CgroupError::NoMemoryController
                ),
                "{e:?}"
            );
            eprintln!("as non-root: {e}");
        }
        return;
    }
    let v2_memory = mounts.v2.as_deref().is_some_and(v2_has_memory);
    let cg = match MemoryCgroup::create(48 * MIB) {
        Err(CgroupError::NoMemoryController) if !v2_memory && mounts.v1_memory.is_none() => {
            return;
        }
        other => other.unwrap(),
    };
    let (want, limit_file) = if v2_memory {
        (CgroupVersion::V2, "memory.max")
    } else {
        (CgroupVersion::V1, "memory.limit_in_bytes")
    };
    eprintln!("create() used {} at {}", cg.version(), cg.path().display());
    assert_eq!(cg.version(), want);
    assert_eq!(
        read(&cg.path().join(limit_file)).trim(),
        (48 * MIB).to_string()
    );
}

#[test]
fn child_joins_and_remove_kills_it() {
    let Some(root) = v1_root() else { return };
    let cg = MemoryCgroup::create_under(&root, CgroupVersion::V1, 64 * MIB).unwrap();
    let mut child = Command::new("sleep").arg("5").spawn().unwrap();
    cg.add_pid(child.id()).unwrap();
    assert_eq!(cg.pids(), vec![child.id()]);
    let procs = read(&cg.path().join("cgroup.procs"));
    assert!(
        procs.lines().any(|l| l == child.id().to_string()),
        "{procs:?}"
    );
    assert_eq!(cgroup_of_pid(child.id()), Some(format!("/{}", cg.name())));
    assert!(cg.usage_bytes().is_some());
    assert!(cg.peak_usage_bytes().is_some());

    let path = cg.path().to_path_buf();
    // The child is not reaped yet: removal must not wait for its zombie.
    cg.remove().unwrap();
    assert!(!path.exists(), "{} still exists", path.display());
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}

#[test]
fn drop_kills_and_removes() {
    let Some(root) = v1_root() else { return };
    let mut child = Command::new("sleep").arg("5").spawn().unwrap();
    let path = {
        let cg = MemoryCgroup::create_under(&root, CgroupVersion::V1, 64 * MIB).unwrap();
        cg.add_pid(child.id()).unwrap();
        cg.path().to_path_buf()
    };
    assert!(!path.exists(), "{} still exists after drop", path.display());
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
}

#[test]
fn real_oom_inside_the_cap_is_a_sigkill_and_counted() {
    let Some(root) = v1_root() else { return };
    if !can_run(
        "python3",
        Command::new("python3").arg("-V").output().is_ok(),
    ) {
        return;
    }
    let mut kernel_log = super::super::kmsg::KernelLog::open();
    assert!(kernel_log.is_some(), "/dev/kmsg should open as root");
    let cg = MemoryCgroup::create_under(&root, CgroupVersion::V1, 32 * MIB).unwrap();
    // 256 MiB of touched bytes, far beyond the 32 MiB cap.
    let mut child = spawn_held("python3 -c 'b = b\"x\" * (256 << 20); print(len(b))'");
    cg.add_pid(child.id()).unwrap();
    release(&mut child);
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let kills = cg.oom_kills();
    assert!(kills.is_some_and(|k| k >= 1), "oom_kills = {kills:?}");
    assert!(cg.peak_usage_bytes().is_some_and(|p| p > 16 * MIB));

    if let Some(log) = kernel_log.as_mut() {
        let lines = log.read_new();
        let killed = format!("Killed process {} ", child.id());
        assert!(
            lines.iter().any(|l| l.contains(&killed)),
            "no {killed:?} line in the kernel log:\n{}",
            lines.join("\n")
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("oom_memcg=/{}", cg.name())))
        );
    }
    cg.remove().unwrap();
}

#[test]
fn v2_cgroup_when_a_hierarchy_has_the_memory_controller() {
    let root = CgroupMounts::discover()
        .v2
        .filter(|r| v2_has_memory(r) && is_root());
    let Some(root) = root else {
        // Not a CI failure: hybrid hosts keep the memory controller on v1 (as this one does).
        eprintln!("note: no cgroup2 hierarchy with the memory controller here; v2 test skipped");
        return;
    };
    let cg = MemoryCgroup::create_under(&root, CgroupVersion::V2, 64 * MIB).unwrap();
    assert_eq!(read(&cg.path().join("memory.max")).trim(), "67108864");
    let swap = cg.path().join("memory.swap.max");
    if swap.exists() {
        assert_eq!(read(&swap).trim(), "0");
    }
    let mut child = Command::new("sleep").arg("5").spawn().unwrap();
    cg.add_pid(child.id()).unwrap();
    assert_eq!(cg.pids(), vec![child.id()]);
    assert!(cg.usage_bytes().is_some());
    assert_eq!(cg.oom_kills(), Some(0));
    let path = cg.path().to_path_buf();
    cg.remove().unwrap();
    assert!(!path.exists());
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
}

/// The v2 set-up steps against plain files, for hosts (like this one) without a v2 memory
/// controller: the real kernel behaviour is covered by the test above where it can run.
#[test]
fn v2_set_up_steps_against_a_simulated_hierarchy() {
    let root = std::env::temp_dir().join(format!("oomtrace-fakev2-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
    fs::write(root.join("cgroup.subtree_control"), "cpu\n").unwrap();

    let cg = MemoryCgroup::create_under(&root, CgroupVersion::V2, 64 * MIB).unwrap();
    assert_eq!(read(&root.join("cgroup.subtree_control")), "+memory");
    assert_eq!(read(&cg.path().join("memory.max")), "67108864");
    assert!(
        !cg.path().join("memory.swap.max").exists(),
        "written although absent"
    );
    fs::write(cg.path().join("memory.current"), "4096\n").unwrap();
    fs::write(
        cg.path().join("memory.events"),
        "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
    )
    .unwrap();
    assert_eq!(cg.usage_bytes(), Some(4096));
    assert_eq!(cg.oom_kills(), Some(1));
    // Plain files make the directory non-empty, so rmdir fails: a reported error, not a panic.
    assert!(matches!(cg.remove(), Err(CgroupError::Io { .. })));

    fs::write(root.join("cgroup.controllers"), "cpu io\n").unwrap();
    let err = MemoryCgroup::create_under(&root, CgroupVersion::V2, MIB).unwrap_err();
    assert!(matches!(err, CgroupError::NotAHierarchy { .. }), "{err:?}");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn stale_cgroups_are_found_and_removed() {
    let Some(root) = v1_root() else { return };
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let stale = root.join(format!("oomtrace-{}-7", gone.id()));
    fs::create_dir(&stale).unwrap();
    let live = MemoryCgroup::create_under(&root, CgroupVersion::V1, 64 * MIB).unwrap();

    let found = stale_cgroups();
    assert!(found.contains(&stale), "{found:?}");
    assert!(!found.iter().any(|p| p == live.path()), "{found:?}");
    assert!(stale_cgroups_under(&root).contains(&stale));

    remove_stale(&stale).unwrap();
    assert!(!stale.exists());
    let err = remove_stale(&root.join("not-ours")).unwrap_err();
    assert!(err.to_string().contains("not an oomtrace cgroup"), "{err}");
}

#[test]
fn a_directory_that_is_not_a_hierarchy_is_refused() {
    let dir = std::env::temp_dir().join(format!("oomtrace-cgtest-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    for version in [CgroupVersion::V1, CgroupVersion::V2] {
        let err = MemoryCgroup::create_under(&dir, version, MIB).unwrap_err();
        assert!(matches!(err, CgroupError::NotAHierarchy { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("is not a {version} hierarchy")),
            "{msg}"
        );
    }
    fs::remove_dir(&dir).unwrap();
}

#[test]
fn errors_are_one_line_with_what_to_do() {
    let p = PathBuf::from("/sys/fs/cgroup/memory/oomtrace-1-0");
    let errors = [
        CgroupError::NoMemoryController,
        CgroupError::ControllerNotEnabled {
            parent: p.clone(),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        },
        io_error(
            "create memory cgroup",
            &p,
            io::Error::from_raw_os_error(libc::EACCES),
        ),
        io_error(
            "create memory cgroup",
            &p,
            io::Error::from_raw_os_error(libc::EROFS),
        ),
        CgroupError::Busy {
            path: p.clone(),
            pids: vec![42],
        },
        io_error(
            "set the memory limit in",
            &p,
            io::Error::from_raw_os_error(libc::EINVAL),
        ),
    ];
    for err in &errors {
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains("; "), "no advice in {msg:?}");
    }
    assert!(matches!(errors[2], CgroupError::PermissionDenied { .. }));
    assert!(matches!(errors[3], CgroupError::PermissionDenied { .. }));
    assert!(errors[2].to_string().starts_with(
        "cannot create memory cgroup /sys/fs/cgroup/memory/oomtrace-1-0: Permission denied"
    ));
    assert!(matches!(errors[5], CgroupError::Io { .. }));
}

#[test]
fn memory_cgroup_of_a_process_prefers_the_v1_memory_line() {
    let hybrid = "9:name=systemd:/\n4:memory:/oomtrace-1-0\n3:cpu,cpuacct:/\n0::/\n";
    assert_eq!(memory_cgroup_from(hybrid).as_deref(), Some("/oomtrace-1-0"));
    let unified = "0::/system.slice/oomtrace-7-2\n";
    assert_eq!(
        memory_cgroup_from(unified).as_deref(),
        Some("/system.slice/oomtrace-7-2")
    );
    assert_eq!(memory_cgroup_from("garbage\n"), None);
    assert!(cgroup_of_pid(std::process::id()).is_some());
    assert_eq!(cgroup_of_pid(u32::MAX), None);
}

#[test]
fn mountinfo_finds_both_kinds() {
    let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:11 - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    assert_eq!(
        CgroupMounts::parse(hybrid),
        CgroupMounts {
            v2: Some("/sys/fs/cgroup/unified".into()),
            v1_memory: Some("/sys/fs/cgroup/memory".into()),
        }
    );
    let unified = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n\
                   30 23 0:27 / /mnt/my\\040cg rw - cgroup cgroup rw,memory,cpu\n";
    assert_eq!(
        CgroupMounts::parse(unified),
        CgroupMounts {
            v2: Some("/sys/fs/cgroup".into()),
            v1_memory: Some("/mnt/my cg".into()),
        }
    );
    assert_eq!(
        CgroupMounts::parse("nonsense\n - \n"),
        CgroupMounts::default()
    );
}

#[test]
fn owner_pids_come_from_our_names_only() {
    assert_eq!(owner_pid("oomtrace-4242-0"), Some(4242));
    assert_eq!(owner_pid("oomtrace-4242-17"), Some(4242));
    for name in [
        "oomtrace-4242",
        "oomtrace-x-0",
        "oomtrace-0-0",
        "other-1-0",
        "oomtrace-1-a",
    ] {
        assert_eq!(owner_pid(name), None, "{name}");
    }
    assert_eq!(
        keyed_value("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
        Some(3)
    );
    assert_eq!(
        keyed_value("low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n", "oom_kill"),
        Some(1)
    );
    assert_eq!(keyed_value("oom 2\n", "oom_kill"), None);
}
