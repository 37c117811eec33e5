//! Allocators a traced process maps after it started: a `dlopen`ed library with a heap of its
//! own, or a program whose allocator could not be decided before it ran (it exec'd in another
//! mount namespace, where oomtrace's view of the files is not the process's). The kernel's
//! mapping records name each new executable mapping; the ones that define an allocator get
//! probed then, and what the process allocated through them before is said to be uncounted.

use std::collections::HashMap;

use crate::objfile::{FileId, ObjFile};
use crate::probe::Probes;
use crate::probe::allocators::{ObjectRef, PlannedObject};
use crate::probe::elf::ElfObject;
use crate::probe::entries::{self, ObjectSets};
use crate::symbols::NewMapping;

/// Objects remembered; past it the cache starts over.
const MAX_OBJECTS: usize = 4096;

/// What an object offers, as far as allocators go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Offer {
    /// Its standard names (mask over [`entries::STANDARD`]); `malloc` among them if provider.
    standard: u16,
    defines_malloc: bool,
    /// Prefixed heaps of its own.
    own: ObjectSets,
    /// The provider's extras (tcmalloc/mimalloc API, C++ operators), if it were the provider.
    provider: ObjectSets,
}

/// Decides, per new mapping of a traced process, whether to probe it.
#[derive(Default)]
pub struct MappedAllocators {
    offers: HashMap<FileId, Option<Offer>>,
    /// Objects probed late this way (for the report's note).
    pub late: u64,
}

impl MappedAllocators {
    /// A traced process `m.pid` mapped `m`: probes it if it is an allocator the process has no
    /// probe on yet.
    pub fn consider(&mut self, probes: &Probes, m: &NewMapping) {
        let Some(attacher) = probes.attacher() else {
            return;
        };
        let Some(offer) = self.offer(m) else { return };
        let attached = attacher.objects(Some(m.pid));
        let sets = if attached.is_empty() && offer.defines_malloc {
            offer.provider.clone()
        } else {
            offer.own.clone()
        };
        if sets.is_empty() {
            return;
        }
        let object = PlannedObject {
            name: m.path.clone(),
            object: ObjectRef::Mapping {
                start: m.start,
                end: m.end,
            },
            sets,
        };
        match attacher.attach(Some(m.pid), &object) {
            Ok(probes) if !probes.is_empty() => {
                self.late += 1;
                crate::say!(
                    "oomtrace: warning: pid {} mapped {} after it started; it is probed from \
                     now on, and what the process allocated through it before is not counted",
                    m.pid,
                    m.path.display()
                );
            }
            Ok(_) => {}
            Err(e) => crate::say!(
                "oomtrace: warning: cannot probe {} for pid {}: {e:#}",
                m.path.display(),
                m.pid
            ),
        }
    }

    fn offer(&mut self, m: &NewMapping) -> Option<Offer> {
        if let Some(known) = self.offers.get(&m.id) {
            return known.clone();
        }
        let offer = ObjFile::open_mapping(m.pid, m.start, m.end, m.id, &m.path)
            .ok()
            .and_then(|f| ElfObject::from_file(f, &m.path).ok())
            .map(|elf| {
                let defines = |n: &str| elf.defines(n);
                let standard = entries::standard_mask(defines);
                Offer {
                    standard,
                    defines_malloc: elf.defines("malloc"),
                    own: entries::other_sets(defines),
                    provider: entries::provider_sets(standard, defines),
                }
            });
        if self.offers.len() >= MAX_OBJECTS {
            self.offers.clear();
        }
        self.offers.insert(m.id, offer.clone());
        offer
    }
}

/// Whether process `pid` sees the same files as oomtrace (the same mount namespace).
pub fn same_mount_namespace(pid: u32) -> bool {
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
    ns(&pid.to_string()) == ns("self")
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomtrace_common::family;

    #[test]
    fn our_libc_offers_the_standard_heap() {
        let maps = crate::objfile::maps::read(std::process::id()).unwrap();
        let line = maps
            .lines()
            .find(|l| l.exec() && l.file().is_some_and(|p| p.ends_with("/libc.so.6")))
            .unwrap();
        let m = NewMapping {
            pid: std::process::id(),
            start: line.start,
            end: line.end,
            id: line.id,
            path: line.file().unwrap().into(),
        };
        let mut mapped = MappedAllocators::default();
        let offer = mapped.offer(&m).unwrap();
        assert!(offer.defines_malloc);
        assert!(offer.own.is_empty());
        assert_eq!(offer.provider[0].1, family::STANDARD);
        assert!(same_mount_namespace(std::process::id()));
    }
}
