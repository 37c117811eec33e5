//! Which allocators a process really uses, decided the way the dynamic linker decides, and what
//! to probe in each.
//!
//! The linker binds `malloc` to the first object in its search order that defines it: the
//! executable, then `LD_PRELOAD`, then the libraries breadth-first. Debian's redis-server gets it
//! from libjemalloc, not libc. That object is the process's *provider*: it gets the standard
//! names and, when it is an allocator library, its own API (tcmalloc's `tc_`, mimalloc's `mi_`,
//! jemalloc's `mallocx`) and C++ operators, all one heap. Any other object defining a prefixed
//! heap (a Rust binary's `_rjem_` jemalloc, a `je_` jemalloc beside glibc) gets it probed as a
//! heap of its own ([`super::entries`]).
//!
//! For a running process the order comes from its own link map ([`super::linkmap`]), and every
//! object is reached through its mapping (`/proc/PID/map_files`), so a container's or a deleted
//! library is read and probed as the process has it. For a command about to start, from the ELF
//! dependency graph. A static binary is its own provider; a Go program has no allocator to probe
//! and is traced by the memory it maps.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::elf::ElfObject;
use super::entries::{self, ObjectSets};
use super::linkmap;
use super::target::{SearchPath, TargetError, interpreter_of_script};
use crate::objfile::{FileId, ObjFile, maps, note_refusal};
use oomtrace_common::family;

/// Where an object is, for reading it and for the kernel's uprobe lookup.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ObjectRef {
    /// A path in oomtrace's own view (a command about to start, its libraries).
    Path(PathBuf),
    /// A mapping of a running process: `/proc/PID/map_files/START-END`, the mapped file itself
    /// (deleted, or in another mount namespace, alike). A forked child has it at the same place.
    Mapping {
        /// First address.
        start: u64,
        /// One past the last.
        end: u64,
    },
}

impl ObjectRef {
    /// The path to reach it through, for process `pid`.
    pub fn path_in(&self, pid: u32) -> PathBuf {
        match self {
            Self::Path(p) => p.clone(),
            Self::Mapping { start, end } => {
                PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"))
            }
        }
    }
}

/// One object to probe, and for what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedObject {
    /// Its path as the process names it.
    pub name: PathBuf,
    /// How to reach it.
    pub object: ObjectRef,
    /// Its entry points and their families.
    pub sets: ObjectSets,
}

/// What kind of program it is, as far as allocators go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// Dynamically linked.
    Dynamic,
    /// Statically linked: its allocator is in the executable.
    Static,
    /// Go: its heap is the Go runtime's; only a C allocator (cgo) is probed.
    Go,
}

/// The allocators of one process (or program), and why those.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocatorPlan {
    /// What to probe.
    pub objects: Vec<PlannedObject>,
    /// What kind of program.
    pub program: Program,
    /// Why: the search order and where `malloc` was found.
    pub reason: String,
}

impl AllocatorPlan {
    /// One line naming each probed object and its heaps, for the "attached" line.
    pub fn summary(&self) -> String {
        if self.objects.is_empty() {
            return "no allocator to probe (a Go program: traced by the memory it maps)".into();
        }
        let parts: Vec<String> = self
            .objects
            .iter()
            .map(|o| {
                let mut fams: Vec<&str> = o
                    .sets
                    .iter()
                    .map(|&(_, f)| entries::family_name(f))
                    .collect();
                fams.dedup();
                format!("{} ({})", o.name.display(), fams.join(", "))
            })
            .collect();
        format!("probing {}", parts.join(" and "))
    }

    /// The provider's path (what `--all` and older messages call "the allocator").
    pub fn provider(&self) -> Option<&Path> {
        self.objects.first().map(|o| o.name.as_path())
    }
}

/// One object in search order, opened.
struct Candidate {
    name: PathBuf,
    object: ObjectRef,
    elf: ElfObject,
}

/// Decides from objects in search order; `exe` is the first.
fn decide(candidates: Vec<Candidate>, what: &str) -> Result<AllocatorPlan, TargetError> {
    let Some(exe) = candidates.first() else {
        return Err(TargetError::NoAllocator(what.to_owned()));
    };
    let is_go = exe.elf.is_go();
    let is_static = !exe.elf.has_interp() && !exe.elf.is_dynamic();
    let program = if is_go {
        Program::Go
    } else if is_static {
        Program::Static
    } else {
        Program::Dynamic
    };
    let order: Vec<String> = candidates
        .iter()
        .map(|c| {
            c.name.file_name().map_or_else(
                || c.name.display().to_string(),
                |n| n.to_string_lossy().into(),
            )
        })
        .collect();
    let provider = candidates.iter().position(|c| c.elf.defines("malloc"));
    // The linker binds each standard name on its own, to the first object defining it: a
    // jemalloc process still gets pvalloc from libc.
    let mut bound = vec![0u16; candidates.len()];
    let mut taken = 0u16;
    for (i, c) in candidates.iter().enumerate() {
        let mask = entries::standard_mask(|n| c.elf.defines(n)) & !taken;
        bound[i] = mask;
        taken |= mask;
    }
    let mut objects = Vec::new();
    let mut reason = String::new();
    if let Some(i) = provider {
        let c = &candidates[i];
        let _ = write!(
            reason,
            "malloc comes from {}: the first object that defines it in the dynamic linker's \
             search order ({})",
            c.name.display(),
            order.join(", ")
        );
        objects.push(PlannedObject {
            name: c.name.clone(),
            object: c.object.clone(),
            sets: entries::provider_sets(bound[i], |n| c.elf.defines(n)),
        });
    }
    for (i, c) in candidates.iter().enumerate() {
        if Some(i) == provider {
            continue;
        }
        let mut sets = entries::other_sets(|n| c.elf.defines(n));
        if provider.is_some() && bound[i] != 0 {
            let names: Vec<String> = entries::Set::StandardSome(bound[i])
                .entries()
                .into_iter()
                .map(|e| e.0)
                .collect();
            let _ = write!(
                reason,
                "; {} comes from {} (not defined earlier)",
                names.join(", "),
                c.name.display()
            );
            sets.insert(0, (entries::Set::StandardSome(bound[i]), family::STANDARD));
        }
        if sets.is_empty() {
            continue;
        }
        let heaps: Vec<&str> = sets
            .iter()
            .filter(|&&(_, f)| f != family::STANDARD)
            .map(|&(_, f)| entries::family_name(f))
            .collect();
        let mut heaps = heaps;
        heaps.dedup();
        if !heaps.is_empty() {
            let _ = write!(
                reason,
                "; {} has a heap of its own ({})",
                c.name.display(),
                heaps.join(", ")
            );
        }
        objects.push(PlannedObject {
            name: c.name.clone(),
            object: c.object.clone(),
            sets,
        });
    }
    if is_go && provider.is_none() {
        reason = format!(
            "{what} is a Go program without cgo: its heap is the Go runtime's, which is never \
             probed (moving goroutine stacks break uretprobes); it is traced by the memory it \
             maps (mmap/munmap) and, with --mode growth, by the pages it faults in"
        );
        return Ok(AllocatorPlan {
            objects,
            program,
            reason,
        });
    }
    if objects.is_empty() {
        return Err(if is_static {
            TargetError::StaticStripped(what.to_owned())
        } else {
            TargetError::NoAllocator(what.to_owned())
        });
    }
    if is_go {
        let _ = write!(
            reason,
            "; a Go program: only its C allocator (cgo) is probed, the Go heap is traced by the \
             memory it maps"
        );
    }
    Ok(AllocatorPlan {
        objects,
        program,
        reason,
    })
}

/// The allocators of a command about to start: `exe` (or a script's interpreter), then
/// `preload` (`LD_PRELOAD`'s value), then its libraries breadth-first, found as the dynamic
/// linker finds them.
pub fn plan_for_program(exe: &Path, preload: Option<&str>) -> Result<AllocatorPlan, TargetError> {
    let (exe, candidates) = load_order(exe, preload)?;
    decide(candidates, &exe.display().to_string())
}

/// The objects a command about to start will map, in the dynamic linker's order: `exe` (or a
/// script's interpreter), `preload`'s, then its libraries breadth-first, and its dynamic linker.
pub fn program_objects(exe: &Path, preload: Option<&str>) -> Vec<PathBuf> {
    let Ok((_, candidates)) = load_order(exe, preload) else {
        return Vec::new();
    };
    // The dynamic linker too: it allocates (its own minimal malloc, then libc's) before the
    // program's first instruction.
    let interp = candidates.first().and_then(|c| c.elf.interpreter());
    candidates
        .into_iter()
        .filter_map(|c| match c.object {
            ObjectRef::Path(p) => Some(p),
            ObjectRef::Mapping { .. } => None,
        })
        .chain(interp)
        .collect()
}

/// The program (`exe`, or a script's interpreter) and the objects it will map, opened.
fn load_order(exe: &Path, preload: Option<&str>) -> Result<(PathBuf, Vec<Candidate>), TargetError> {
    let exe = interpreter_of_script(exe).unwrap_or_else(|| exe.to_owned());
    let root = ElfObject::open(&exe).map_err(|e| TargetError::Io(format!("{e:#}")))?;
    let search = SearchPath::new();
    let mut candidates = vec![Candidate {
        name: exe.clone(),
        object: ObjectRef::Path(exe.clone()),
        elf: root,
    }];
    let mut seen = HashSet::from([exe.clone()]);
    let mut queue = VecDeque::new();
    for name in preload_names(preload.unwrap_or("")) {
        if let Some(found) = search.find(&name, &[], Path::new("/")) {
            queue.push_back(found);
        }
    }
    let origin = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let (needed, runpath) = candidates[0].elf.dynamic_deps();
    for name in needed {
        if let Some(found) = search.find(&name, &runpath, &origin) {
            queue.push_back(found);
        }
    }
    while let Some(path) = queue.pop_front() {
        if candidates.len() >= linkmap::MAX_OBJECTS || !seen.insert(path.clone()) {
            continue;
        }
        let Ok(elf) = ElfObject::open(&path) else {
            continue;
        };
        let (needed, runpath) = elf.dynamic_deps();
        let origin = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for name in needed {
            if let Some(found) = search.find(&name, &runpath, &origin) {
                queue.push_back(found);
            }
        }
        candidates.push(Candidate {
            name: path.clone(),
            object: ObjectRef::Path(path),
            elf,
        });
    }
    Ok((exe, candidates))
}

/// What `--all` probes: the system C library, in every process that maps it.
pub fn plan_for_system() -> Result<AllocatorPlan, TargetError> {
    let libc = super::target::system_libc()?;
    let elf = ElfObject::open(&libc).map_err(|e| TargetError::Io(format!("{e:#}")))?;
    Ok(AllocatorPlan {
        objects: vec![PlannedObject {
            name: libc.clone(),
            object: ObjectRef::Path(libc.clone()),
            sets: entries::provider_sets(entries::standard_mask(|n| elf.defines(n)), |n| {
                elf.defines(n)
            }),
        }],
        program: Program::Dynamic,
        reason: format!(
            "--all probes {} in every process that maps it",
            libc.display()
        ),
    })
}

/// `LD_PRELOAD`'s entries (separated by spaces or colons).
pub fn preload_names(value: &str) -> Vec<String> {
    value
        .split([' ', ':'])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `LD_PRELOAD` in process `pid`'s environment (read under a bound).
pub fn preload_of_pid(pid: u32) -> Option<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    let mut env = Vec::new();
    file.take(1 << 20).read_to_end(&mut env).ok()?;
    env.split(|&b| b == 0).find_map(|kv| {
        let v = kv.strip_prefix(b"LD_PRELOAD=")?;
        Some(String::from_utf8_lossy(v).into_owned())
    })
}

/// The allocators of running process `pid`, from its link map, each object opened through its
/// mapping. A process without a link map (static, or still loading) is decided from its
/// executable and its mappings in address order.
pub fn plan_for_pid(pid: u32) -> Result<AllocatorPlan, TargetError> {
    let text = maps::read(pid).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TargetError::NoSuchProcess(pid)
        } else {
            TargetError::Io(format!("cannot read /proc/{pid}/maps: {e}"))
        }
    })?;
    if text.lines().next().is_none() || std::fs::read_link(format!("/proc/{pid}/root")).is_err() {
        return Err(TargetError::Gone(pid));
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let what = format!("pid {pid} ({})", comm.trim());
    // Executable mappings by path, in address order; the executable's by its identity.
    let mut mapped: Vec<(PathBuf, u64, u64, FileId)> = Vec::new();
    let mut seen_ids = HashSet::new();
    for line in text.lines() {
        let Some(path) = line.file() else { continue };
        if line.exec() && seen_ids.insert(line.id) {
            mapped.push((PathBuf::from(path), line.start, line.end, line.id));
        }
    }
    let exe_id = std::fs::metadata(format!("/proc/{pid}/exe")).ok().map(|m| {
        use std::os::unix::fs::MetadataExt as _;
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    });
    let open = |(name, start, end, id): &(PathBuf, u64, u64, FileId)| -> Option<Candidate> {
        let file = ObjFile::open_mapping(pid, *start, *end, *id, name)
            .map_err(|why| note_refusal(&format!("{} (mapped by pid {pid})", name.display()), &why))
            .ok()?;
        let elf = ElfObject::from_file(file, name)
            .map_err(|why| note_refusal(&name.display(), &why))
            .ok()?;
        Some(Candidate {
            name: name.clone(),
            object: ObjectRef::Mapping {
                start: *start,
                end: *end,
            },
            elf,
        })
    };
    let exe = mapped.iter().find(|m| Some(m.3) == exe_id);
    let ordered: Vec<&(PathBuf, u64, u64, FileId)> = match linkmap::objects(pid) {
        Some(names) => {
            let mut out: Vec<&(PathBuf, u64, u64, FileId)> = exe.into_iter().collect();
            for name in names.iter().skip(1) {
                // The linker's name may differ from the mapped path (`/lib` is `/usr/lib`): by
                // identity, seen from the process's root; else by the same path or file name.
                let id = std::fs::metadata(format!("/proc/{pid}/root{name}"))
                    .ok()
                    .map(|m| {
                        use std::os::unix::fs::MetadataExt as _;
                        FileId {
                            dev: m.dev(),
                            ino: m.ino(),
                        }
                    });
                let base = Path::new(name).file_name();
                let found = mapped
                    .iter()
                    .filter(|m| Some(m.3) != exe_id)
                    .find(|m| Some(m.3) == id)
                    .or_else(|| {
                        mapped
                            .iter()
                            .filter(|m| Some(m.3) != exe_id)
                            .find(|m| m.0.as_os_str() == name.as_str() || m.0.file_name() == base)
                    });
                if let Some(m) = found
                    && !out.contains(&m)
                {
                    out.push(m);
                }
            }
            out
        }
        // No link map: the executable, then every other mapped object.
        None => exe
            .into_iter()
            .chain(mapped.iter().filter(|m| Some(m.3) != exe_id))
            .collect(),
    };
    let candidates: Vec<Candidate> = ordered.into_iter().filter_map(open).collect();
    decide(candidates, &what)
}

/// What an attach says it probes: the allocator object, or none in growth mode.
pub fn probing(mode: crate::mode::Mode, plan: Option<&AllocatorPlan>) -> String {
    let what = plan.map_or_else(|| "no allocator".to_owned(), |p| p.summary());
    match mode {
        crate::mode::Mode::Growth => {
            "mode growth: no allocator probes, page faults and unmaps only".to_owned()
        }
        crate::mode::Mode::Exact => what,
        other => format!("{what} in mode {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_splits_like_the_linker() {
        assert_eq!(
            preload_names(" /a/x.so:libb.so  c.so"),
            vec!["/a/x.so", "libb.so", "c.so"]
        );
        assert!(preload_names("").is_empty());
    }

    #[test]
    fn sh_gets_malloc_from_libc_and_nothing_else() {
        let sh = super::super::target::resolve_command(std::ffi::OsStr::new("sh")).unwrap();
        let plan = plan_for_program(&sh, None).unwrap();
        assert_eq!(plan.program, Program::Dynamic);
        assert_eq!(plan.objects.len(), 1, "{plan:?}");
        assert!(plan.objects[0].name.to_string_lossy().contains("libc.so"));
        assert!(
            plan.reason.contains("first object that defines it"),
            "{}",
            plan.reason
        );
    }

    #[test]
    fn our_own_process_is_planned_through_its_mappings() {
        let plan = plan_for_pid(std::process::id()).unwrap();
        let provider = &plan.objects[0];
        assert!(
            provider.name.to_string_lossy().contains("libc.so"),
            "{plan:?}"
        );
        assert!(matches!(provider.object, ObjectRef::Mapping { .. }));
        let path = provider.object.path_in(std::process::id());
        assert!(path.to_string_lossy().contains("/map_files/"), "{path:?}");
        assert!(ElfObject::open(&path).is_ok_and(|e| e.defines("malloc")));
    }

    #[test]
    fn a_missing_pid_is_typed() {
        assert!(matches!(
            plan_for_pid(u32::MAX - 1),
            Err(TargetError::NoSuchProcess(_))
        ));
    }
}
