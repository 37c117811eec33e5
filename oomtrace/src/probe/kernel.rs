//! `--kernel`: attach the kernel-allocation tracepoints (pages, slab, vmalloc) and tell the
//! kernel side where each tracepoint keeps its fields.
//!
//! Field offsets are read from each tracepoint's `format` file rather than assumed: the kmem
//! events changed layout between kernels (6.x moved `bytes_req` of `kmem_cache_alloc` behind a
//! `name` field that `kmalloc` does not have).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::{Array, stack_trace::StackTraceMap};
use oomtrace_common::KernelField;

use super::Probes;

/// A kernel tracepoint oomtrace uses with `--kernel`: (category, name, program, fields).
struct KernelTracepoint {
    category: &'static str,
    name: &'static str,
    program: &'static str,
    /// Field name in the format file → slot in the kernel side's `KFIELDS`.
    fields: &'static [(&'static str, KernelField)],
    /// Without it `--kernel` cannot work (the vmalloc events are newer and optional).
    required: bool,
}

const KMEM: &[KernelTracepoint] = &[
    KernelTracepoint {
        category: "kmem",
        name: "mm_page_alloc",
        program: "kmem_page_alloc",
        fields: &[
            ("pfn", KernelField::PageAllocPfn),
            ("order", KernelField::PageAllocOrder),
        ],
        required: true,
    },
    KernelTracepoint {
        category: "kmem",
        name: "mm_page_free",
        program: "kmem_page_free",
        fields: &[
            ("pfn", KernelField::PageFreePfn),
            ("order", KernelField::PageFreeOrder),
        ],
        required: true,
    },
    KernelTracepoint {
        category: "kmem",
        name: "mm_page_free_batched",
        program: "kmem_page_free_batched",
        fields: &[("pfn", KernelField::PageBatchedPfn)],
        required: false,
    },
    KernelTracepoint {
        category: "kmem",
        name: "kmalloc",
        program: "kmem_kmalloc",
        fields: &[
            ("ptr", KernelField::KmallocPtr),
            ("bytes_req", KernelField::KmallocBytes),
        ],
        required: true,
    },
    KernelTracepoint {
        category: "kmem",
        name: "kfree",
        program: "kmem_kfree",
        fields: &[("ptr", KernelField::KfreePtr)],
        required: true,
    },
    KernelTracepoint {
        category: "kmem",
        name: "kmem_cache_alloc",
        program: "kmem_cache_alloc",
        fields: &[
            ("ptr", KernelField::CacheAllocPtr),
            ("bytes_req", KernelField::CacheAllocBytes),
        ],
        required: true,
    },
    KernelTracepoint {
        category: "kmem",
        name: "kmem_cache_free",
        program: "kmem_cache_free",
        fields: &[("ptr", KernelField::CacheFreePtr)],
        required: true,
    },
    KernelTracepoint {
        category: "vmalloc",
        name: "alloc_vmap_area",
        program: "vmalloc_alloc",
        fields: &[
            ("addr", KernelField::VmapAddr),
            ("size", KernelField::VmapSize),
            ("failed", KernelField::VmapFailed),
        ],
        required: false,
    },
    KernelTracepoint {
        category: "vmalloc",
        name: "free_vmap_area_noflush",
        program: "vmalloc_free",
        fields: &[("va_start", KernelField::VfreeAddr)],
        required: false,
    },
];

/// Entries of the kernel-stack map with `--kernel` (each holds 127 frames: ~1 KiB).
pub const KSTACK_ENTRIES: u32 = 4096;
/// Live traced kernel allocations the kernel side can pair with their frees.
pub const KLIVE_ENTRIES: u32 = 262_144;

/// The tracefs `events` directory.
pub fn events_dir() -> PathBuf {
    let primary = Path::new("/sys/kernel/tracing/events");
    if primary.is_dir() {
        primary.to_owned()
    } else {
        PathBuf::from("/sys/kernel/debug/tracing/events")
    }
}

/// The byte offset of field `name` in a tracepoint `format` file's text.
pub fn field_offset(format: &str, name: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        // `unsigned long pfn`, `const void * ptr`, `__data_loc char[] name`.
        let field = decl.rsplit([' ', '*']).next()?.trim();
        if field != name {
            return None;
        }
        let off = line.split("offset:").nth(1)?.split(';').next()?;
        off.trim().parse().ok()
    })
}

/// Reads a tracepoint's field offsets into the kernel side's `KFIELDS`.
pub fn set_fields(
    probes: &mut Probes,
    events: &Path,
    category: &str,
    name: &str,
    fields: &[(&str, KernelField)],
) -> Result<()> {
    let path = events.join(category).join(name).join("format");
    let format = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut slots: Array<_, u32> = Array::try_from(probes.map_mut("KFIELDS")?)?;
    for &(field, slot) in fields {
        let off = field_offset(&format, field).ok_or_else(|| {
            anyhow!("tracepoint {category}:{name} has no field {field} on this kernel")
        })?;
        slots.set(slot as u32, off, 0)?;
    }
    Ok(())
}

/// Loads and attaches tracepoint program `program` to `category:name`.
pub fn attach_tracepoint(
    probes: &mut Probes,
    category: &str,
    name: &str,
    program: &str,
) -> Result<()> {
    let tp = probes.loaded_tracepoint(program)?;
    tp.attach(category, name)
        .with_context(|| format!("cannot attach tracepoint {category}:{name}"))?;
    Ok(())
}

/// Attaches the kernel-allocation tracepoints. Optional ones that are missing are returned as
/// notices; a missing required one is an error.
pub fn attach(probes: &mut Probes) -> Result<Vec<String>> {
    let events = events_dir();
    let mut notices = Vec::new();
    for t in KMEM {
        let exists = events.join(t.category).join(t.name).is_dir();
        if !exists {
            if t.required {
                bail!(
                    "--kernel needs tracepoint {}:{}, which this kernel does not have",
                    t.category,
                    t.name
                );
            }
            notices.push(format!(
                "tracepoint {}:{} is absent on this kernel: {} allocations are not traced",
                t.category,
                t.name,
                if t.category == "vmalloc" {
                    "vmalloc"
                } else {
                    "batched page"
                }
            ));
            continue;
        }
        set_fields(probes, &events, t.category, t.name, t.fields)?;
        attach_tracepoint(probes, t.category, t.name, t.program)?;
    }
    Ok(notices)
}

impl Probes {
    /// The kernel return addresses stored under kernel stack id `id`, innermost first.
    pub fn kernel_stack(&self, id: u32) -> Option<Vec<u64>> {
        let map = self.ebpf.map("KSTACKS")?;
        let stacks: StackTraceMap<_> = StackTraceMap::try_from(map).ok()?;
        let trace = stacks.get(&id, 0).ok()?;
        Some(trace.frames().iter().map(|f| f.ip).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KMEM_CACHE_ALLOC: &str = "name: kmem_cache_alloc
ID: 512
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:unsigned long call_site;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * ptr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:__data_loc char[] name;\toffset:24;\tsize:4;\tsigned:0;
\tfield:size_t bytes_req;\toffset:32;\tsize:8;\tsigned:0;
\tfield:size_t bytes_alloc;\toffset:40;\tsize:8;\tsigned:0;

print fmt: \"call_site=%pS ptr=%p bytes_req=%zu\", REC->call_site, REC->ptr, REC->bytes_req
";

    #[test]
    fn offsets_come_from_the_format_file() {
        assert_eq!(field_offset(KMEM_CACHE_ALLOC, "ptr"), Some(16));
        assert_eq!(field_offset(KMEM_CACHE_ALLOC, "bytes_req"), Some(32));
        assert_eq!(field_offset(KMEM_CACHE_ALLOC, "name"), Some(24));
        assert_eq!(field_offset(KMEM_CACHE_ALLOC, "call_site"), Some(8));
        // A name that only occurs in the print format is no field.
        assert_eq!(field_offset(KMEM_CACHE_ALLOC, "REC"), None);
        assert_eq!(field_offset(KMEM_CACHE_ALLOC, "order"), None);
        assert_eq!(field_offset("", "ptr"), None);
    }
}
