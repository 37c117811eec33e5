//! The kernel side's user-space handle: load the eBPF object, attach probes, fill the traced-pid
//! map, and read the maps that are not the event stream (drop counters, stacks).

pub mod allocators;
pub mod btf;
pub mod detach;
pub mod drm;
pub mod elf;
pub mod entries;
pub mod inject;
pub mod kernel;
pub mod linkmap;
pub mod modes;
pub mod placement;
pub mod preflight;
pub mod pyarena;
pub mod python;
pub mod stacks;
pub mod stats;
pub mod sys;
pub mod target;
pub mod uprobes;

use std::collections::HashMap as StdHashMap;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::trace_point::TracePointLink;
use aya::programs::{RawTracePoint, TracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use oomtrace_common::{ConfigKey, DropReason};

use self::elf::ElfObject;
use self::placement::{Placement, PlacementMode};
use self::uprobes::{Attacher, Mechanism, ProgramPair, Scope};

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oomtrace"));

/// The entry and return programs of real tracing, and of the bare probe floor.
const TRACING_PROGRAMS: [&str; 2] = ["alloc_enter", "alloc_return"];
const FLOOR_PROGRAMS: [&str; 2] = ["floor_enter", "floor_return"];

/// (syscall tracepoint, program): the memory syscalls. Perf tracepoints, not raw `sys_enter`:
/// they filter by syscall number in the kernel, so every other process's syscalls cost less
/// (`oomtrace-ebpf/src/dispatch.rs`).
/// The entries that take a stack share one program, `stack_enter`: the verifier checks the
/// stack walk once per program.
const SYSCALL_TRACEPOINTS: &[(&str, &str)] = &[
    ("sys_enter_mmap", "stack_enter"),
    ("sys_exit_mmap", "mmap_exit"),
    ("sys_enter_munmap", "munmap_enter"),
    ("sys_enter_mremap", "stack_enter"),
    ("sys_exit_mremap", "mremap_exit"),
    ("sys_enter_brk", "stack_enter"),
    ("sys_exit_brk", "brk_exit"),
];

/// Signal delivery (handlers, and a crash's stack): a perf tracepoint, for it shares the
/// stack-taking program with the syscalls, which tells it apart by its link's cookie.
const SIGNAL_DELIVER: (&str, &str) = ("signal", "signal_deliver");

/// (syscall tracepoint, program): where a signal handler returns.
const SIGNAL_TRACEPOINTS: &[(&str, &str)] = &[("sys_enter_rt_sigreturn", "sigreturn_enter")];

/// (raw tracepoint, program): the process lifecycle and the OOM killer. Raw tracepoints attach
/// and detach in microseconds; a perf tracepoint costs a grace period to detach.
const RAW_TRACEPOINTS: &[(&str, &str)] = &[
    ("mark_victim", "oom_mark_victim"),
    ("sched_process_fork", "process_fork"),
    ("sched_process_exec", "process_exec"),
    ("sched_process_exit", "process_exit"),
    ("signal_generate", "signal_generate"),
];

/// What to trace.
#[derive(Clone, Copy, Debug)]
pub struct ProbeConfig {
    /// Every process but oomtrace itself.
    pub trace_all: bool,
    /// Add forked children of traced processes.
    pub follow_forks: bool,
    /// How entry offsets are chosen.
    pub placement: PlacementMode,
    /// Ring buffer size in bytes (a power-of-two number of pages).
    pub ring_bytes: u32,
    /// `--mode`: what the kernel side traces.
    pub mode: crate::mode::Mode,
    /// `--kernel`: trace kernel allocations (sizes the kernel-side maps for it).
    pub kernel: bool,
    /// Attach the empty floor programs instead of the real ones (`--probe-floor`).
    pub floor: bool,
    /// `--fail-after`: the kernel keeps every live block's size (its table is sized for it).
    pub track_blocks: bool,
}

/// One attached allocator probe, for `oomtrace probes` and the placement test.
#[derive(Clone, Debug)]
pub struct AttachedProbe {
    /// Exported function name (aliases share one probe: `memalign/aligned_alloc`).
    pub function: String,
    /// Object file probed.
    pub object: PathBuf,
    /// Offset from the function's start.
    pub offset: u64,
    /// Whether the kernel emulates the probed instruction.
    pub emulated: bool,
}

/// Summed drop counters of the kernel side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Events lost: ring buffer full, pending-call map full, traced map full.
    pub lost_events: u64,
    /// Stack ids that could not be taken (collision or full stack map).
    pub stack_collisions: u64,
}

/// Loaded eBPF programs and maps. Dropping it detaches every probe.
pub struct Probes {
    ebpf: Ebpf,
    placement: PlacementMode,
    mode: crate::mode::Mode,
    /// Attach the empty floor programs instead of the real ones (`--probe-floor`).
    floor: bool,
    /// The allocator probes, per process; loaded at the first attach.
    attacher: Option<Arc<Attacher>>,
    /// Why multi-uprobe links are not used, when they are not (said once).
    fallback: Option<String>,
    /// The syscall tracepoints' links, owned here so the session can close them off its
    /// critical path.
    perf_links: Vec<TracePointLink>,
    /// Links made here rather than by aya (a perf tracepoint with a cookie), and their events.
    own_links: Vec<std::os::fd::OwnedFd>,
    /// The allocator programs being verified on another thread (see [`Probes::finish_load`]).
    loading: Option<std::thread::JoinHandle<Result<LoadedPrograms>>>,
    /// The kernel's BTF, read once for the setup's structure offsets and dropped when the
    /// setup ends ([`Probes::finish_load`], [`Probes::attach_oom_only`]): it is megabytes.
    kernel_btf: Option<Arc<btf::Btf>>,
}

/// Allocator programs loaded for multi-uprobe links.
struct LoadedPrograms {
    /// The uprobe-session program (its one descriptor in `fds`), or none: the entry and
    /// return pair.
    session: Option<&'static str>,
    fds: Vec<std::os::fd::OwnedFd>,
    /// Why the kernel refused the session program, when it did.
    session_refused: Option<String>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        // The loader thread uses the maps' descriptors: they close with `ebpf`, after it.
        if let Some(loading) = self.loading.take() {
            let _ = loading.join();
        }
    }
}

impl Probes {
    /// Loads the programs (nothing attached yet) and writes the config words.
    pub fn load(cfg: ProbeConfig) -> Result<Self> {
        // Read on the other CPU while aya loads the object on this one.
        let kernel_btf = std::thread::spawn(btf::Btf::kernel);
        // The kernel-allocation maps cost megabytes: one entry each unless `--kernel`.
        let (kstacks, klive) = if cfg.kernel {
            (kernel::KSTACK_ENTRIES, kernel::KLIVE_ENTRIES)
        } else {
            (1, 1)
        };
        let ebpf = EbpfLoader::new()
            // No CO-RE relocations in these programs (the structure offsets they read come
            // from `CONFIG`): aya need not read and parse the kernel's BTF, megabytes.
            .btf(None)
            .map_max_entries("EVENTS", cfg.ring_bytes)
            .map_max_entries("KSTACKS", kstacks)
            .map_max_entries("KLIVE", klive)
            .map_max_entries("INJECT_BLOCKS", if cfg.track_blocks { 1 << 20 } else { 1 })
            // Sampled blocks are remembered only in sample mode (megabytes preallocated).
            .map_max_entries(
                "SAMPLED",
                if matches!(cfg.mode, crate::mode::Mode::Sample { .. }) {
                    1 << 17
                } else {
                    1
                },
            )
            .load(EBPF_OBJECT)
            .context("cannot load oomtrace's eBPF programs into the kernel")?;
        let mut probes = Self {
            ebpf,
            placement: cfg.placement,
            mode: cfg.mode,
            floor: cfg.floor,
            attacher: None,
            fallback: None,
            perf_links: Vec::new(),
            own_links: Vec::new(),
            loading: None,
            kernel_btf: None,
        };
        // The allocator programs first: their verification is most of the start-up, and it
        // runs on another CPU while this one does the rest.
        if cfg.mode.probes_allocator() {
            probes.start_allocator_load()?;
        }
        modes::configure(&mut probes.ebpf, cfg.mode)?;
        let mut config: Array<_, u64> = Array::try_from(probes.map_mut("CONFIG")?)?;
        config.set(ConfigKey::TraceAll as u32, u64::from(cfg.trace_all), 0)?;
        config.set(ConfigKey::SelfTgid as u32, u64::from(std::process::id()), 0)?;
        config.set(
            ConfigKey::FollowForks as u32,
            u64::from(cfg.follow_forks),
            0,
        )?;
        config.set(ConfigKey::Kernel as u32, u64::from(cfg.kernel), 0)?;
        // The raw tracepoints read kernel structures at the offsets this kernel's BTF gives.
        let btf =
            Arc::new(kernel_btf.join().ok().flatten().ok_or_else(|| {
                anyhow!("cannot read the kernel's BTF (/sys/kernel/btf/vmlinux)")
            })?);
        let offsets = [
            (ConfigKey::TaskTgidOffset, "task_struct", "tgid"),
            (ConfigKey::TaskComm, "task_struct", "comm"),
            (ConfigKey::TaskMm, "task_struct", "mm"),
            (ConfigKey::TaskSignal, "task_struct", "signal"),
            (ConfigKey::TaskExitCode, "task_struct", "exit_code"),
            (
                ConfigKey::SignalOomScoreAdj,
                "signal_struct",
                "oom_score_adj",
            ),
            (ConfigKey::MmTotalVm, "mm_struct", "total_vm"),
            (ConfigKey::MmRssStat, "mm_struct", "rss_stat"),
            (ConfigKey::CounterCount, "percpu_counter", "count"),
        ];
        for (key, st, member) in offsets {
            let off = btf.member_offset(st, member).ok_or_else(|| {
                anyhow!("cannot find {st}.{member} in the kernel's BTF (/sys/kernel/btf/vmlinux)")
            })?;
            config.set(key as u32, u64::from(off), 0)?;
        }
        let counter_size = btf
            .struct_size("percpu_counter")
            .ok_or_else(|| anyhow!("cannot find struct percpu_counter in the kernel's BTF"))?;
        config.set(ConfigKey::CounterSize as u32, u64::from(counter_size), 0)?;
        probes.kernel_btf = Some(btf);
        Ok(probes)
    }

    /// The kernel's BTF while the session sets up (read once; `None` after).
    pub(crate) fn kernel_btf(&self) -> Option<Arc<btf::Btf>> {
        self.kernel_btf.clone()
    }

    /// Starts loading the allocator programs: on another thread for multi-uprobe links (see
    /// [`Probes::finish_load`]), or here for perf uprobes (`OOMTRACE_UPROBES=perf`).
    fn start_allocator_load(&mut self) -> Result<()> {
        if std::env::var("OOMTRACE_UPROBES").is_ok_and(|v| v == "perf") {
            self.fallback = Some("OOMTRACE_UPROBES=perf".into());
            self.attacher = Some(Arc::new(self.load_perf_attacher()?));
            return Ok(());
        }
        let prepared = uprobes::MultiLoad::prepare(&self.ebpf);
        let names = self.allocator_programs();
        let session = self.session_program();
        self.loading = Some(std::thread::spawn(move || {
            let mut session_refused = None;
            if let Some(name) = session {
                match prepared.load(EBPF_OBJECT, &[name], sys::BPF_TRACE_UPROBE_SESSION) {
                    Ok(fds) => {
                        return Ok(LoadedPrograms {
                            session: Some(name),
                            fds,
                            session_refused: None,
                        });
                    }
                    Err(e) => session_refused = Some(format!("{e:#}")),
                }
            }
            let fds = prepared.load(EBPF_OBJECT, &names, sys::BPF_TRACE_UPROBE_MULTI)?;
            Ok(LoadedPrograms {
                session: None,
                fds,
                session_refused,
            })
        }));
        Ok(())
    }

    /// The uprobe-session program of this configuration, where sessions pay off: sample mode,
    /// whose unsampled calls then skip their return probe (`OOMTRACE_UPROBES=multi` keeps the
    /// entry and return pair, to measure against).
    fn session_program(&self) -> Option<&'static str> {
        let sample = matches!(self.mode, crate::mode::Mode::Sample { .. });
        if !sample || std::env::var("OOMTRACE_UPROBES").is_ok_and(|v| v == "multi") {
            return None;
        }
        Some(if self.floor {
            "floor_session"
        } else {
            "alloc_session"
        })
    }

    /// The (entry, return) allocator programs of this configuration.
    fn allocator_programs(&self) -> [&'static str; 2] {
        if self.floor {
            FLOOR_PROGRAMS
        } else {
            TRACING_PROGRAMS
        }
    }

    /// Waits for the allocator programs loading in the background, and falls back to perf
    /// uprobes if the kernel refused them for multi-uprobe links. [`Probes::attach_tracepoints`]
    /// calls it; a session that attaches none calls it itself before attaching allocators.
    pub fn finish_load(&mut self) -> Result<()> {
        // The setup that reads structure offsets is over.
        self.kernel_btf = None;
        let Some(loading) = self.loading.take() else {
            return Ok(());
        };
        let loaded = loading
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the allocator programs' loader thread panicked")));
        let attacher = match loaded {
            Ok(LoadedPrograms {
                session: Some(name),
                mut fds,
                ..
            }) => {
                let fd = fds.pop().expect("one program");
                Attacher::new(
                    Mechanism::Session,
                    ProgramPair {
                        enter: (name, fd.try_clone()?),
                        ret: (name, fd),
                    },
                    self.placement,
                )
            }
            Ok(LoadedPrograms {
                session: None,
                mut fds,
                session_refused,
            }) => {
                if let Some(why) = session_refused {
                    // The kernel's reason, first line (a verifier log follows it).
                    let why = why.lines().next().unwrap_or_default().to_owned();
                    self.fallback = Some(format!("uprobe sessions refused: {why}"));
                }
                let [enter, ret] = self.allocator_programs();
                let ret_fd = fds.pop().expect("two programs");
                let enter_fd = fds.pop().expect("two programs");
                Attacher::new(
                    Mechanism::Multi,
                    ProgramPair {
                        enter: (enter, enter_fd),
                        ret: (ret, ret_fd),
                    },
                    self.placement,
                )
            }
            Err(e) => {
                self.fallback = Some(format!("{e:#}"));
                self.load_perf_attacher()?
            }
        };
        self.attacher = Some(Arc::new(attacher));
        Ok(())
    }

    /// Loads the allocator programs for perf uprobes: the fallback where the kernel has no
    /// multi-uprobe links (`OOMTRACE_UPROBES=perf` forces it, for tests).
    fn load_perf_attacher(&mut self) -> Result<Attacher> {
        let [enter, ret] = self.allocator_programs();
        let pmu = sys::PerfUprobePmu::from_sysfs()
            .context("this kernel has neither multi-uprobe links nor the uprobe PMU")?;
        let mut fd_of = |name: &'static str| -> Result<(&'static str, std::os::fd::OwnedFd)> {
            let up: &mut UProbe = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("eBPF object has no program {name}"))?
                .try_into()?;
            if up.fd().is_err() {
                up.load()
                    .with_context(|| format!("the kernel rejected program {name}"))?;
            }
            let fd = up.fd()?.as_fd().try_clone_to_owned()?;
            Ok((name, fd))
        };
        let programs = ProgramPair {
            enter: fd_of(enter)?,
            ret: fd_of(ret)?,
        };
        Ok(Attacher::new(
            Mechanism::Perf(pmu),
            programs,
            self.placement,
        ))
    }

    /// When allocator probes are not multi-uprobe links: why (a one-line notice for the user).
    pub fn fallback_notice(&self) -> Option<String> {
        let a = self.attacher.as_ref()?;
        let why = self.fallback.as_ref()?;
        if a.mechanism() == Mechanism::Multi {
            // Multi links after all: the session program was refused (a kernel before 6.13).
            return Some(format!(
                "oomtrace: notice: {why}: every sampled or unsampled call pays its return probe"
            ));
        }
        Some(format!(
            "oomtrace: notice: allocator probes use {} ({why}): attaching and detaching each \
             process is slower",
            a.mechanism().name()
        ))
    }

    /// The allocator probes (absent in growth mode), to share with the thread that holds new
    /// processes until they are attached.
    pub fn attacher(&self) -> Option<Arc<Attacher>> {
        self.attacher.clone()
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("eBPF object has no map {name}"))
    }

    /// Attaches the memory-syscall and process-lifecycle tracepoints.
    pub fn attach_tracepoints(&mut self) -> Result<()> {
        self.attach_tracepoints_only()?;
        self.finish_load()
    }

    fn attach_tracepoints_only(&mut self) -> Result<()> {
        self.attach_raw_tracepoints(RAW_TRACEPOINTS)?;
        self.attach_syscall_tracepoints(SYSCALL_TRACEPOINTS)?;
        self.attach_signal_deliver()?;
        if self.mode != crate::mode::Mode::Growth {
            // A signal handler's end, for the allocations made inside one (rare: every other
            // process's rt_sigreturn costs the number filter only).
            self.attach_syscall_tracepoints(SIGNAL_TRACEPOINTS)?;
        }
        if self.mode == crate::mode::Mode::Growth {
            self.attach_raw_tracepoints(modes::GROWTH_RAW_TRACEPOINTS)?;
            self.attach_syscall_tracepoints(modes::GROWTH_SYSCALL_TRACEPOINTS)?;
        }
        Ok(())
    }

    /// Perf tracepoints of `syscalls:`. Their links go into `perf_links`: closing one waits for
    /// a grace period, so the session closes them off its critical path.
    fn attach_syscall_tracepoints(&mut self, which: &[(&str, &str)]) -> Result<()> {
        for &(name, program) in which {
            self.attach_perf_tracepoint("syscalls", name, program)?;
        }
        Ok(())
    }

    /// Attaches `stack_enter` (loaded on first use) to `signal:signal_deliver`,
    /// through a link with the cookie that tells the program which event it runs for.
    fn attach_signal_deliver(&mut self) -> Result<()> {
        let (category, event) = SIGNAL_DELIVER;
        let id = tracepoint_id(category, event)?;
        let tp = self.loaded_tracepoint("stack_enter")?;
        let (perf, link) =
            sys::perf_tracepoint_link(tp.fd()?.as_fd(), id, oomtrace_common::SIGNAL_DELIVER_COOKIE)
                .with_context(|| format!("cannot attach tracepoint {category}:{event}"))?;
        self.own_links.extend([link, perf]);
        Ok(())
    }

    /// Tracepoint program `program`, loaded on first use.
    pub(crate) fn loaded_tracepoint(&mut self, program: &str) -> Result<&mut TracePoint> {
        let tp: &mut TracePoint = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow!("eBPF object has no program {program}"))?
            .try_into()?;
        if tp.fd().is_err() {
            tp.load()
                .with_context(|| format!("the kernel rejected program {program}"))?;
        }
        Ok(tp)
    }

    /// Attaches `program` (loaded on first use) to the perf tracepoint `category:name`.
    fn attach_perf_tracepoint(&mut self, category: &str, name: &str, program: &str) -> Result<()> {
        let tp = self.loaded_tracepoint(program)?;
        let id = tp
            .attach(category, name)
            .with_context(|| format!("cannot attach tracepoint {category}:{name}"))?;
        let link = tp.take_link(id)?;
        self.perf_links.push(link);
        Ok(())
    }

    fn attach_raw_tracepoints(&mut self, which: &[(&str, &str)]) -> Result<()> {
        for &(name, program) in which {
            let tp: &mut RawTracePoint = self
                .ebpf
                .program_mut(program)
                .ok_or_else(|| anyhow!("eBPF object has no program {program}"))?
                .try_into()?;
            if tp.fd().is_err() {
                tp.load()
                    .with_context(|| format!("the kernel rejected program {program}"))?;
            }
            tp.attach(name)
                .with_context(|| format!("cannot attach raw tracepoint {name}"))?;
        }
        Ok(())
    }

    /// Attaches only the OOM killer's tracepoint (`oomtrace oom-watch`).
    pub fn attach_oom_only(&mut self) -> Result<()> {
        self.kernel_btf = None;
        self.attach_raw_tracepoints(&[("mark_victim", "oom_mark_victim")])
    }

    /// Whether allocator uprobes are attached at all (none in growth mode).
    pub fn probes_allocators(&self) -> bool {
        self.attacher.is_some()
    }

    /// Attaches entry (and return) probes on every allocator function `object` defines, for
    /// `scope` (one process, or every process). Returns what was attached; attaching the same
    /// object twice for a scope is a no-op. In growth mode nothing is attached: that mode has
    /// no allocator probes.
    pub fn attach_allocator(
        &self,
        scope: Scope,
        object: &allocators::PlannedObject,
    ) -> Result<Vec<AttachedProbe>> {
        match &self.attacher {
            Some(a) => a.attach(scope, object),
            None => Ok(Vec::new()),
        }
    }

    /// Attaches every object of `plan` for `scope`; returns what was attached.
    pub fn attach_plan(
        &self,
        scope: Scope,
        plan: &allocators::AllocatorPlan,
    ) -> Result<Vec<AttachedProbe>> {
        let mut all = Vec::new();
        for o in &plan.objects {
            all.extend(self.attach_allocator(scope, o)?);
        }
        Ok(all)
    }

    /// Detaches everything without making the caller wait: a forked child takes the last
    /// references to every link and closes them once the caller has exited, the allocator
    /// probes first (they are what the traced processes pay for), then the tracepoints. Each
    /// release costs the kernel a grace period (uprobes: about 35 ms for all; perf tracepoints
    /// serialized, about 0.3 s together), which nobody waits for. Nothing is traced any more
    /// from the moment this returns.
    pub fn detach_in_background(mut self) {
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let first: Vec<std::os::fd::RawFd> = self
            .attacher
            .as_ref()
            .map(|a| a.link_fds())
            .unwrap_or_default();
        // The child must hold the last references: it waits for EOF on this pipe, i.e. for us
        // to have exited, then releases them. Our write end closes at our exit.
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == 0 {
            // SAFETY: the child only calls async-signal-safe functions (close, read, close_range,
            // _exit) and allocates nothing (`first` was made before the fork).
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: as above; the child never returns into Rust code.
                unsafe {
                    libc::close(fds[1]);
                    for fd in 0..3 {
                        libc::close(fd);
                    }
                    let mut b = 0u8;
                    while libc::read(fds[0], (&raw mut b).cast(), 1) > 0 {}
                    for &fd in &first {
                        libc::close(fd);
                    }
                    libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
                    libc::_exit(0);
                }
            }
            // SAFETY: our copy of the read end; the write end stays open until we exit.
            unsafe { libc::close(fds[0]) };
        }
        // Our copies are not the last: closing them is immediate. (If fork failed, this is the
        // slow, synchronous detach.)
        self.quiesce();
        drop(self);
    }

    /// Starts tracing process `pid`.
    pub fn trace_pid(&mut self, pid: u32) -> Result<()> {
        let mut traced: HashMap<_, u32, u8> = HashMap::try_from(self.map_mut("TRACED")?)?;
        traced
            .insert(pid, 1, 0)
            .with_context(|| format!("cannot add pid {pid} to the traced set"))
    }

    /// Stops all tracing at once: allocator probes are detached (in parallel; they are what the
    /// traced processes pay for) and will not be attached again, and the kernel side traces no
    /// process any more. The tracepoints stay until the `Probes` go.
    pub fn quiesce(&mut self) {
        if let Some(a) = &self.attacher {
            a.shut();
        }
        if let Ok(map) = self.map_mut("CONFIG")
            && let Ok(mut config) = Array::<_, u64>::try_from(map)
        {
            // The allocator programs skip the traced-set lookup (their links are per process):
            // this word tells them tracing has ended while the links are being closed. First:
            // with `--all` over, a system-wide link would otherwise count as one process's.
            let _ = config.set(ConfigKey::Mode as u32, oomtrace_common::MODE_STOPPED, 0);
            let _ = config.set(ConfigKey::TraceAll as u32, 0, 0);
        }
        if let Ok(map) = self.map_mut("TRACED")
            && let Ok(mut traced) = HashMap::<_, u32, u8>::try_from(map)
        {
            let pids: Vec<u32> = traced.keys().filter_map(Result::ok).collect();
            for pid in pids {
                let _ = traced.remove(&pid);
            }
        }
    }

    /// Gives `child` its parent's allocator probes (a fork seen, not held); failures are warned
    /// about, never fatal.
    pub fn attach_like(&self, parent: u32, child: u32) {
        if let Some(a) = &self.attacher
            && let Err(e) = a.attach_like(parent, child)
        {
            crate::say!("oomtrace: warning: cannot attach to new process {child}: {e:#}");
        }
    }

    /// Disarms the breakpoints `child` inherited from `parent` (a child not followed).
    pub fn release(&self, parent: u32, child: u32) {
        if let Some(a) = &self.attacher {
            a.release(parent, child);
        }
    }

    /// Stops probing process `pid`, which runs on: its allocator probes go now, off this thread.
    pub fn forget_pid(&self, pid: u32) {
        if let Some(a) = &self.attacher {
            a.detach(pid);
        }
    }

    /// Process `pid` has exited: its allocator probes go in a later batch (they arm nothing).
    pub fn forget_exited(&self, pid: u32) {
        if let Some(a) = &self.attacher {
            a.detach_exited(pid);
        }
    }

    /// Takes the event ring buffer (call once).
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or_else(|| anyhow!("no EVENTS map"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Reads the kernel side's drop counters.
    pub fn drops(&self) -> Result<DropCounts> {
        let map = self
            .ebpf
            .map("DROPS")
            .ok_or_else(|| anyhow!("no DROPS map"))?;
        let drops: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        let sum = |d: DropReason| -> Result<u64> { Ok(drops.get(&(d as u32), 0)?.iter().sum()) };
        Ok(DropCounts {
            lost_events: sum(DropReason::RingFull)?
                + sum(DropReason::PendingFull)?
                + sum(DropReason::TracedFull)?
                + sum(DropReason::StaleCall)?
                + sum(DropReason::KernelLiveFull)?,
            stack_collisions: sum(DropReason::StackCollision)?,
        })
    }

    /// The return addresses above the call site stored under `stack_id`, innermost first.
    pub fn stack(&self, stack_id: u32) -> Option<Vec<u64>> {
        self.stored_stack(stack_id).map(|s| s.frames)
    }
}

/// One probe of a plan: its function's names, cookie (family included), symbol and placement.
struct PlannedProbe {
    names: String,
    cookie: u64,
    func: elf::FuncSymbol,
    placement: Placement,
}

/// For each distinct function of `sets` that `elf` defines: one probe. Aliases (glibc's
/// `aligned_alloc` is `memalign`, tcmalloc's `malloc` is `tc_malloc`) share one probe under all
/// their names, counted as the first.
fn plan_allocator(
    elf: &ElfObject,
    sets: &entries::ObjectSets,
    mode: PlacementMode,
) -> Vec<PlannedProbe> {
    let mut by_addr: StdHashMap<u64, usize> = StdHashMap::new();
    let mut plan: Vec<PlannedProbe> = Vec::new();
    for &(set, family) in sets {
        for (name, entry) in set.entries() {
            let found = match set {
                entries::Set::PythonArena => pyarena::find(elf, &name),
                _ => elf.function(&name),
            };
            let Some(func) = found else {
                continue;
            };
            if let Some(&i) = by_addr.get(&func.vaddr) {
                plan[i].names = format!("{}/{name}", plan[i].names);
                continue;
            }
            let placement = placement::choose(&func.code, func.vaddr, entry.nargs(), mode);
            if !placement::decodes(&func.code) {
                crate::say!(
                    "oomtrace: notice: cannot decode the first instruction of {name} in {}: it \
                     is probed at its first byte, which may cost a single-step per call",
                    elf.path.display()
                );
            }
            by_addr.insert(func.vaddr, plan.len());
            plan.push(PlannedProbe {
                names: name,
                cookie: entry.cookie_in(family),
                func,
                placement,
            });
        }
    }
    plan
}

/// The probes oomtrace would attach on `object`, without loading anything (`oomtrace probes`).
pub fn planned_probes(
    object: &Path,
    sets: &entries::ObjectSets,
    mode: PlacementMode,
) -> Result<Vec<AttachedProbe>> {
    let elf = ElfObject::open(object)?;
    Ok(plan_allocator(&elf, sets, mode)
        .into_iter()
        .map(|p| AttachedProbe {
            function: p.names,
            object: object.to_owned(),
            offset: p.placement.offset,
            emulated: p.placement.emulated,
        })
        .collect())
}

/// The perf event id of tracepoint `category:name` (its records' `common_type`), from tracefs.
fn tracepoint_id(category: &str, name: &str) -> Result<u64> {
    let rel = format!("events/{category}/{name}/id");
    let path = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(|root| Path::new(root).join(&rel))
        .find(|p| p.exists())
        .ok_or_else(|| anyhow!("tracefs has no tracepoint {category}:{name} ({rel})"))?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds no event id: {:?}", path.display(), text.trim()))
}
