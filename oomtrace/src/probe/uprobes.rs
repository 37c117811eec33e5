//! Allocator probes attached per process: only the traced processes take the trap.
//!
//! A uprobe attached to a file without a pid puts its breakpoint into every process that maps
//! the file, and each of them pays the trap (about 0.6 µs here) on every `malloc`, traced or
//! not. Attached with the traced process's pid, the kernel installs the breakpoint in that
//! address space only. The preferred mechanism is one multi-uprobe link per (process, object)
//! for all entry points, and one for the returns (Linux 6.6): attaching is one syscall, and
//! closing a link costs one grace period for all its probes. Older kernels get one perf uprobe
//! per entry point and process (closing each costs a grace period, serialized by the kernel).
//!
//! Every entry probe runs the same program; the attach cookie says which function it is.
//!
//! A forked child inherits its parent's breakpoints. A multi link keeps them armed in the child
//! (it pays the trap, uncounted) until the child gets its own link or is released
//! ([`Attacher::release`]); a perf uprobe is removed from the child at its first hit. Either way
//! the caller attaches every followed child and releases every other one.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use aya::Ebpf;
use aya::maps::Map;

use super::allocators::{ObjectRef, PlannedObject};
use super::detach::Closer;
use super::elf::ElfObject;
use super::entries::ObjectSets;
use super::placement::PlacementMode;
use super::sys::{self, MultiKind, PerfUprobePmu};
use super::{AttachedProbe, plan_allocator};

/// How probes are attached on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// One multi-uprobe link per (process, object) and direction.
    Multi,
    /// One uprobe-session link per (process, object): a call's return probe only where its
    /// entry asks for it (`--mode sample`, Linux 6.13).
    Session,
    /// One perf uprobe per entry point and process (kernels before 6.6).
    Perf(PerfUprobePmu),
}

impl Mechanism {
    /// What reports and notices call it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Multi => "uprobe_multi links",
            Self::Session => "uprobe session links",
            Self::Perf(_) => "perf uprobes",
        }
    }
}

/// An object file's identity: one file can have several paths (`/lib` → `/usr/lib`).
type ObjectKey = (u64, u64);

/// The probes one object gets: where, with which cookie, and whether they return.
struct Plan {
    probes: Vec<AttachedProbe>,
    /// File offsets and cookies of every entry probe.
    entries: (Vec<u64>, Vec<u64>),
    /// File offsets of every function with a return probe.
    returns: Vec<u64>,
}

/// The links of one object in one process (or in every process).
struct Attachment {
    key: ObjectKey,
    object: PlannedObject,
    links: Vec<OwnedFd>,
}

/// Links of exited processes waiting to be closed, and since when the oldest waits.
#[derive(Default)]
struct Retired {
    links: Vec<OwnedFd>,
    since: Option<Instant>,
}

/// Retired links are closed once this many wait, or once the oldest has waited this long.
const RETIRED_MAX: usize = 256;
const RETIRED_AGE: Duration = Duration::from_secs(1);

/// Where probes apply: one process, or every process (`--all`).
pub type Scope = Option<u32>;

/// A loaded entry and return program pair, by name.
pub struct ProgramPair {
    /// The entry program (cookie-dispatched).
    pub enter: (&'static str, OwnedFd),
    /// The shared return program.
    pub ret: (&'static str, OwnedFd),
}

/// Attaches and detaches allocator probes per process. Shared between the ingestion loop and
/// the thread that holds new processes until their probes are in ([`crate::hold`]).
pub struct Attacher {
    mechanism: Mechanism,
    programs: ProgramPair,
    placement: PlacementMode,
    plans: Mutex<HashMap<(ObjectKey, ObjectSets), Arc<Plan>>>,
    attached: Mutex<HashMap<Scope, Vec<Attachment>>>,
    closer: Closer,
    /// Links of processes that have exited, closed in batches ([`Attacher::detach_exited`]).
    retired: Mutex<Retired>,
    /// Time spent attaching, and attachments made (for the report's own-cost figures).
    attach_time: Mutex<(Duration, u64)>,
    /// Shut: nothing is attached any more ([`Attacher::shut`]).
    shut: AtomicBool,
}

impl Attacher {
    /// An attacher using `programs` through `mechanism`.
    pub fn new(mechanism: Mechanism, programs: ProgramPair, placement: PlacementMode) -> Self {
        Self {
            mechanism,
            programs,
            placement,
            plans: Mutex::new(HashMap::new()),
            attached: Mutex::new(HashMap::new()),
            closer: Closer::new(),
            retired: Mutex::new(Retired::default()),
            attach_time: Mutex::new((Duration::ZERO, 0)),
            shut: AtomicBool::new(false),
        }
    }

    /// The mechanism in use.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The loaded programs (for run statistics).
    pub fn programs(&self) -> &ProgramPair {
        &self.programs
    }

    /// Attaches the allocator probes `object` plans for `scope`. Attaching an object a scope
    /// has already is a no-op (returns nothing). Returns what was attached.
    pub fn attach(&self, scope: Scope, object: &PlannedObject) -> Result<Vec<AttachedProbe>> {
        if self.shut.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let path = path_for(scope, object)?;
        let key = object_key(&path)?;
        if self.has(scope, key) {
            return Ok(Vec::new());
        }
        let plan = self.plan(key, &path, object)?;
        let links = self
            .link(scope, &path, &plan)
            .with_context(|| format!("cannot attach probes to {}", object.name.display()))?;
        let mut attached = self.attached.lock().expect("attacher lock");
        let list = attached.entry(scope).or_default();
        if list.iter().any(|a| a.key == key) {
            // Another thread attached it meanwhile: ours go.
            self.closer.close(links);
            return Ok(Vec::new());
        }
        list.push(Attachment {
            key,
            object: object.clone(),
            links,
        });
        drop(attached);
        let mut t = self.attach_time.lock().expect("attacher lock");
        t.0 += started.elapsed();
        t.1 += 1;
        Ok(plan.probes.clone())
    }

    /// Gives `child` the probes its parent has (a fork: same objects at the same places, a new
    /// address space). Returns how many objects were attached.
    pub fn attach_like(&self, parent: u32, child: u32) -> Result<usize> {
        let mut n = 0;
        for object in self.objects(Some(parent)) {
            if !self.attach(Some(child), &object)?.is_empty() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The objects attached for `scope`.
    pub fn objects(&self, scope: Scope) -> Vec<PlannedObject> {
        let attached = self.attached.lock().expect("attacher lock");
        attached
            .get(&scope)
            .map(|l| l.iter().map(|a| a.object.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether `scope` has probes on any object.
    pub fn is_attached(&self, scope: Scope) -> bool {
        let attached = self.attached.lock().expect("attacher lock");
        attached.get(&scope).is_some_and(|l| !l.is_empty())
    }

    fn has(&self, scope: Scope, key: ObjectKey) -> bool {
        let attached = self.attached.lock().expect("attacher lock");
        attached
            .get(&scope)
            .is_some_and(|l| l.iter().any(|a| a.key == key))
    }

    /// Process `pid` is gone (or no longer traced): its links are closed off this thread.
    pub fn detach(&self, pid: u32) {
        let gone = self
            .attached
            .lock()
            .expect("attacher lock")
            .remove(&Some(pid));
        if let Some(list) = gone {
            for a in list {
                self.closer.close(a.links);
            }
        }
    }

    /// Process `pid` has exited: its links go in a batch, later. A link whose process is gone
    /// arms no breakpoint anywhere (the kernel's filter matches that process's memory, which is
    /// gone too), so nothing pays for it meanwhile; closing one costs a grace period, which a
    /// `run` whose command just ended should not wait for. Batches share grace periods, and what
    /// is left at the end goes with the rest ([`Attacher::link_fds`], [`Attacher::shut`]).
    pub fn detach_exited(&self, pid: u32) {
        let gone = self
            .attached
            .lock()
            .expect("attacher lock")
            .remove(&Some(pid));
        let Some(list) = gone else { return };
        let mut retired = self.retired.lock().expect("attacher lock");
        let since = *retired.since.get_or_insert_with(Instant::now);
        retired.links.extend(list.into_iter().flat_map(|a| a.links));
        if retired.links.len() >= RETIRED_MAX || since.elapsed() >= RETIRED_AGE {
            let batch = std::mem::take(&mut retired.links);
            retired.since = None;
            drop(retired);
            self.closer.close(batch);
        }
    }

    /// Disarms the breakpoints a fork left in `child` (not followed) by registering and closing
    /// a link for it: on unregistration the kernel removes breakpoints from every address space
    /// that no remaining probe wants. Multi links only (perf uprobes remove themselves).
    pub fn release(&self, parent: u32, child: u32) {
        if matches!(self.mechanism, Mechanism::Perf(_)) {
            return;
        }
        for object in self.objects(Some(parent)) {
            let Ok(path) = path_for(Some(child), &object) else {
                continue;
            };
            let Ok(key) = object_key(&path) else { continue };
            let Ok(plan) = self.plan(key, &path, &object) else {
                continue;
            };
            if let Ok(links) = self.link(Some(child), &path, &plan) {
                self.closer.close(links);
            }
        }
    }

    /// Hands every link to the closer and waits until all are closed, in parallel (one grace
    /// period or so, not one per link).
    pub fn detach_all(&self) {
        let all: Vec<Attachment> = self
            .attached
            .lock()
            .expect("attacher lock")
            .drain()
            .flat_map(|(_, l)| l)
            .collect();
        for a in all {
            self.closer.close(a.links);
        }
        let retired = std::mem::take(&mut *self.retired.lock().expect("attacher lock"));
        self.closer.close(retired.links);
        self.closer.wait_idle();
    }

    /// The descriptors of every link attached now (for a process that releases them later).
    pub fn link_fds(&self) -> Vec<RawFd> {
        let attached = self.attached.lock().expect("attacher lock");
        let retired = self.retired.lock().expect("attacher lock");
        attached
            .values()
            .flatten()
            .flat_map(|a| a.links.iter())
            .chain(retired.links.iter())
            .map(|l| l.as_raw_fd())
            .collect()
    }

    /// Detaches everything and attaches nothing from now on (tracing has stopped).
    pub fn shut(&self) {
        self.shut.store(true, Ordering::Relaxed);
        self.detach_all();
    }

    /// Total time spent attaching, and attachments made.
    pub fn attach_time(&self) -> (Duration, u64) {
        *self.attach_time.lock().expect("attacher lock")
    }

    fn plan(&self, key: ObjectKey, path: &Path, object: &PlannedObject) -> Result<Arc<Plan>> {
        let cache_key = (key, object.sets.clone());
        if let Some(p) = self.plans.lock().expect("attacher lock").get(&cache_key) {
            return Ok(p.clone());
        }
        let elf = ElfObject::open(path)?;
        let planned = plan_allocator(&elf, &object.sets, self.placement);
        if planned.is_empty() {
            return Err(anyhow!(
                "{} defines no allocator functions",
                object.name.display()
            ));
        }
        let mut plan = Plan {
            probes: Vec::new(),
            entries: (Vec::new(), Vec::new()),
            returns: Vec::new(),
        };
        for p in planned {
            let offset = p.func.file_offset + p.placement.offset;
            plan.entries.0.push(offset);
            plan.entries.1.push(p.cookie);
            if oomtrace_common::cookie::returns(p.cookie) {
                // The same offset works for the return probe: rsp is still as at entry there.
                plan.returns.push(offset);
            }
            plan.probes.push(AttachedProbe {
                function: p.names,
                object: object.name.clone(),
                offset: p.placement.offset,
                emulated: p.placement.emulated,
            });
        }
        let plan = Arc::new(plan);
        let mut plans = self.plans.lock().expect("attacher lock");
        if plans.len() < MAX_PLANS {
            plans.insert(cache_key, plan.clone());
        }
        Ok(plan)
    }

    /// Creates the links of `plan` on `object` for `scope`. Return probes first: a call whose
    /// entry was seen must see its return, or the thread's nesting depth would stay raised.
    fn link(&self, scope: Scope, object: &Path, plan: &Plan) -> Result<Vec<OwnedFd>> {
        let path = CString::new(object.as_os_str().as_bytes())
            .map_err(|_| anyhow!("{} has a NUL byte", object.display()))?;
        let enter = self.programs.enter.1.as_fd();
        let ret = self.programs.ret.1.as_fd();
        let mut links = Vec::new();
        let result: Result<()> = (|| {
            match self.mechanism {
                Mechanism::Multi | Mechanism::Session => {
                    // Sessions take the return at the entry's offset, which lies before the
                    // stack pointer moves (as a return probe's offset would): no return links.
                    let session = self.mechanism == Mechanism::Session;
                    if !session && !plan.returns.is_empty() {
                        let cookies = vec![0; plan.returns.len()];
                        links.push(
                            sys::uprobe_multi_link(
                                ret,
                                &path,
                                &plan.returns,
                                &cookies,
                                scope,
                                MultiKind::Return,
                            )
                            .context("return probes (uprobe_multi)")?,
                        );
                    }
                    let (offsets, cookies) = &plan.entries;
                    let kind = if session {
                        MultiKind::Session
                    } else {
                        MultiKind::Entry
                    };
                    links.push(
                        sys::uprobe_multi_link(enter, &path, offsets, cookies, scope, kind)
                            .with_context(|| format!("entry probes ({})", self.mechanism.name()))?,
                    );
                }
                Mechanism::Perf(pmu) => {
                    for &offset in &plan.returns {
                        let (ev, link) =
                            sys::perf_uprobe_link(pmu, ret, &path, offset, 0, scope, true)
                                .context("return probe (perf uprobe)")?;
                        links.extend([link, ev]);
                    }
                    let (offsets, cookies) = &plan.entries;
                    for (&offset, &cookie) in offsets.iter().zip(cookies) {
                        let (ev, link) =
                            sys::perf_uprobe_link(pmu, enter, &path, offset, cookie, scope, false)
                                .context("entry probe (perf uprobe)")?;
                        links.extend([link, ev]);
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(links),
            Err(e) => {
                self.closer.close(links);
                Err(e)
            }
        }
    }
}

impl Drop for Attacher {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Plans kept (one per distinct allocator object seen).
const MAX_PLANS: usize = 1024;

/// The path that reaches `object` for `scope` (a mapping is reached through the process).
fn path_for(scope: Scope, object: &PlannedObject) -> Result<PathBuf> {
    match (scope, &object.object) {
        (_, ObjectRef::Path(p)) => Ok(p.clone()),
        (Some(pid), r) => Ok(r.path_in(pid)),
        (None, ObjectRef::Mapping { .. }) => Err(anyhow!(
            "{} is a process's mapping: it cannot be probed in every process",
            object.name.display()
        )),
    }
}

fn object_key(object: &Path) -> Result<ObjectKey> {
    use std::os::unix::fs::MetadataExt as _;
    let meta =
        std::fs::metadata(object).with_context(|| format!("cannot stat {}", object.display()))?;
    Ok((meta.dev(), meta.ino()))
}

/// Loads relocated copies of allocator programs for multi-uprobe or uprobe-session links:
/// aya 0.14 loads uprobe programs without an expected attach type, which those links refuse.
/// The object's BTF is loaded too and each program gets its function and line records: the
/// stack walk's `bpf_loop` callback is a subprogram, which the verifier accepts only with them.
///
/// What loading programs for multi-uprobe links needs from the loaded object: its maps'
/// descriptors. Owned, so the verification can run on another thread while the session loads
/// its tracepoints (the verifier is most of the start-up, and it runs on the calling CPU).
pub struct MultiLoad {
    fds: HashMap<String, i32>,
}

impl MultiLoad {
    /// The map descriptors of `ebpf`, which must outlive [`MultiLoad::load`].
    pub fn prepare(ebpf: &Ebpf) -> Self {
        let fds: HashMap<String, i32> = ebpf
            .maps()
            .filter_map(|(name, map)| Some((name.to_owned(), map_fd(map)?)))
            .collect();
        Self { fds }
    }

    /// Loads `names` from `image` for multi-uprobe links of `attach_type`
    /// (`BPF_TRACE_UPROBE_MULTI` or `_SESSION`), relocated against the maps.
    pub fn load(&self, image: &[u8], names: &[&str], attach_type: u32) -> Result<Vec<OwnedFd>> {
        let fds = &self.fds;
        let mut obj = aya_obj::Object::parse(image).context("cannot parse the eBPF object")?;
        let btf_fd = match aya::features().btf() {
            Some(features) => match obj
                .fixup_and_sanitize_btf(features)
                .map_err(|e| anyhow!("cannot prepare the eBPF object's BTF: {e}"))?
            {
                Some(btf) => Some(
                    sys::load_btf(&btf.to_bytes())
                        .map_err(|e| anyhow!("the kernel refused the eBPF object's BTF: {e}"))?,
                ),
                None => None,
            },
            None => None,
        };
        // Every map must be relocated: one left out would make its references point nowhere.
        let maps: Vec<(String, i32, aya_obj::Map)> = obj
            .maps
            .iter()
            .map(|(name, m)| {
                let fd = fds
                    .get(name)
                    .ok_or_else(|| anyhow!("no descriptor for map {name} to relocate against"))?;
                Ok((name.clone(), *fd, m.clone()))
            })
            .collect::<Result<_>>()?;
        let text_sections = obj.functions.keys().map(|(section, _)| *section).collect();
        obj.relocate_maps(
            maps.iter().map(|(n, fd, m)| (n.as_str(), *fd, m)),
            &text_sections,
        )
        .map_err(|e| anyhow!("cannot relocate map references: {e}"))?;
        obj.relocate_calls(&text_sections)
            .map_err(|e| anyhow!("cannot relocate calls: {e}"))?;
        obj.sanitize_functions(aya::features());
        names
            .iter()
            .map(|name| {
                let prog = obj
                    .programs
                    .get(*name)
                    .ok_or_else(|| anyhow!("eBPF object has no program {name}"))?;
                let func = obj
                    .functions
                    .get(&prog.function_key())
                    .ok_or_else(|| anyhow!("eBPF object has no code for {name}"))?;
                let (func_info, line_info) = (
                    func.func_info.func_info_bytes(),
                    func.line_info.line_info_bytes(),
                );
                let btf = btf_fd.as_ref().map(|fd| sys::ProgBtf {
                    fd: fd.as_fd(),
                    func_info: &func_info,
                    func_info_rec_size: func.func_info_rec_size as u32,
                    line_info: &line_info,
                    line_info_rec_size: func.line_info_rec_size as u32,
                });
                sys::load_uprobe_program(
                    name,
                    &func.instructions,
                    &prog.license,
                    attach_type,
                    btf.as_ref(),
                )
                .map_err(|e| anyhow!("the kernel rejected {name} for multi-uprobe links: {e}"))
            })
            .collect()
    }
}

/// The descriptor of a map aya created (the map types oomtrace's object uses).
fn map_fd(map: &Map) -> Option<i32> {
    use std::os::fd::AsRawFd as _;
    let data = match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::LpmTrie(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::ProgramArray(d)
        | Map::PerfEventArray(d)
        | Map::Queue(d)
        | Map::Stack(d)
        | Map::BloomFilter(d)
        | Map::RingBuf(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d) => d,
        _ => return None,
    };
    Some(data.fd().as_fd().as_raw_fd())
}
