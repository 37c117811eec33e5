//! Other tracers on the machine. A uprobe attached system-wide on libc's malloc by any other
//! process (another tool, another test run) traps every process's malloc, the untraced
//! configurations' included, so the bench notes when such programs were loaded.

/// `BPF_PROG_TYPE_KPROBE`: the program type of uprobes and kprobes.
const PROG_TYPE_KPROBE: &str = "2";

/// Pids of other processes holding uprobe or kprobe BPF programs now.
pub fn foreign_probe_holders() -> Vec<u32> {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && holds_probe_program(pid))
        .collect()
}

fn holds_probe_program(pid: u32) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf-prog")
            && std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .is_ok_and(|info| {
                info.lines().any(|l| {
                    l.strip_prefix("prog_type:")
                        .is_some_and(|v| v.trim() == PROG_TYPE_KPROBE)
                })
            })
    })
}

/// The sentence under a table: in how many rounds others' probes were loaded.
pub fn note(busy_rounds: usize, rounds: usize) -> String {
    if busy_rounds == 0 {
        format!(
            "No other process held uprobe/kprobe programs at the start of any of the {rounds} rounds.\n"
        )
    } else {
        format!(
            "**Other processes held uprobe/kprobe BPF programs at the start of {busy_rounds} of {rounds} \
             rounds** (other tracers or test runs on this shared machine): a system-wide probe on \
             libc's malloc traps every process, untraced ones included, so those rounds ran slower.\n"
        )
    }
}
