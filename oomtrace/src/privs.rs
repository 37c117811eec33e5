//! Privileges dropped where nothing later needs them (issue 19).
//!
//! `report`, `replay` and `diff` read recordings and write reports: they need no capability but
//! file access. They set `PR_SET_NO_NEW_PRIVS` and drop every other capability from the
//! bounding, ambient, inheritable, permitted and effective sets before doing anything else.
//! They keep `CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH` and `CAP_FOWNER`, so that
//! `sudo oomtrace report rec -o ~/out.txt` still reads root's 0600 recording and writes where
//! root may.
//!
//! `run`, `record`, `--pid` and `--all` drop nothing: until the end they attach probes to new
//! children (`CAP_BPF`, `CAP_PERFMON`, `CAP_SYS_ADMIN` where perf events need it), hold and stop
//! them (`CAP_SYS_PTRACE`, `CAP_KILL`), read their memory at exit (`process_vm_readv`), manage
//! the memory cgroup and read `/proc` and `/dev/kmsg` (`CAP_SYSLOG`). And Linux keeps
//! capabilities per thread: by attach time the runtime's worker threads exist, so a drop in one
//! thread would not bind the others.

/// File access, the only capabilities the offline commands keep: `CAP_DAC_OVERRIDE` (1),
/// `CAP_DAC_READ_SEARCH` (2), `CAP_FOWNER` (3).
pub const OFFLINE_KEEP: u64 = (1 << 1) | (1 << 2) | (1 << 3);

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets in two 32-bit halves.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// What a drop achieved (each step is best effort: what the kernel refuses stays).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// `PR_SET_NO_NEW_PRIVS` is set.
    pub no_new_privs: bool,
    /// Capabilities removed from the bounding set (0 without `CAP_SETPCAP`).
    pub bounding: u32,
    /// The thread's effective, permitted and inheritable sets were cut to what is kept.
    pub sets: bool,
}

/// Drops what an offline command (`report`, `replay`, `diff`) does not need; other commands
/// keep everything. Call it while the process has one thread: capabilities are per thread.
pub fn drop_if_offline(command: Option<&crate::cli::Command>) -> Option<Dropped> {
    use crate::cli::Command;
    matches!(
        command,
        Some(Command::Report(_) | Command::Replay(_) | Command::Diff(_))
    )
    .then(|| drop_to(OFFLINE_KEEP))
}

/// Sets `PR_SET_NO_NEW_PRIVS` and drops every capability outside `keep` (a bit per capability
/// number) from the calling thread and whatever it starts.
pub fn drop_to(keep: u64) -> Dropped {
    let mut done = Dropped {
        // SAFETY: prctl with integer arguments only.
        no_new_privs: unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == 0,
        ..Dropped::default()
    };
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40)
        .min(63);
    // The bounding set first: dropping from it needs CAP_SETPCAP, which the sets lose next.
    for cap in (0..=last).filter(|c| keep & (1 << c) == 0) {
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } == 0 {
            done.bounding += 1;
        }
    }
    // SAFETY: as above; failure (a kernel without ambient capabilities) leaves none to clear.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and two data records, as version 3 requires.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return done;
    }
    for (half, d) in data.iter_mut().enumerate() {
        let k = (keep >> (32 * half)) as u32;
        d.effective &= k;
        d.permitted &= k;
        d.inheritable = 0;
    }
    // SAFETY: as above.
    done.sets = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } == 0;
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field of this thread's `/proc/thread-self/status`.
    fn field(name: &str) -> String {
        std::fs::read_to_string("/proc/thread-self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn hex(name: &str) -> u64 {
        u64::from_str_radix(&field(name), 16).unwrap()
    }

    #[test]
    fn a_thread_keeps_only_file_access() {
        // On a thread of its own: capabilities are per thread, the test runner's stay.
        std::thread::spawn(|| {
            let root = hex("CapEff") != 0;
            let done = drop_to(OFFLINE_KEEP);
            assert!(done.no_new_privs && done.sets, "{done:?}");
            assert_eq!(field("NoNewPrivs"), "1");
            assert_eq!(hex("CapEff") & !OFFLINE_KEEP, 0);
            assert_eq!(hex("CapPrm") & !OFFLINE_KEEP, 0);
            assert_eq!(hex("CapInh"), 0);
            assert_eq!(hex("CapAmb"), 0);
            if root {
                // With CAP_SETPCAP, the bounding set loses the rest too.
                assert_eq!(hex("CapBnd") & !OFFLINE_KEEP, 0);
                assert!(done.bounding > 30, "{done:?}");
                assert_eq!(hex("CapEff"), OFFLINE_KEEP);
            }
        })
        .join()
        .unwrap();
    }
}
