//! `--kernel`: kernel allocations (pages, slab, vmalloc) made in the context of a traced process,
//! with the kernel stack that made them, and the frees of exactly those allocations.
//!
//! Frees are paired here, not in user space: every traced allocation's (source, address) goes
//! into `KLIVE`, and a free emits a `KFree` only when it removes an entry. The page and slab
//! free tracepoints fire for every free on the machine; without this filter they would flood
//! the ring. Whoever frees (any process, a kworker, an interrupt) emits the `KFree`.
//!
//! Attribution is by context: an allocation belongs to the process that was current. An
//! allocation made in interrupt context on top of a traced process (a softirq run at
//! `local_bh_enable`, a hardware interrupt) is attributed to it too; its kernel stack shows the
//! interrupt entry, and the user side flags such stacks as `interrupt`. Kernel threads are
//! traced only in `--all` mode; the idle task (tgid 0) never.
//!
//! Field offsets come from the user side (`KFIELDS`, read from each tracepoint's `format`).

use aya_ebpf::{
    macros::{map, tracepoint},
    maps::{Array, HashMap, StackTrace},
    programs::{TracePointContext, tracing::StackIdContext},
};
use oomtrace_common::{ConfigKey, DropReason, EventKind, KERNEL_FIELDS, KernelField, KernelSource};

use crate::syscalls::tp;
use crate::{config, count_drop, emit, event, ids, traced};

/// Bytes in a page on x86-64.
const PAGE_SIZE: u64 = 4096;

/// Key of a live kernel allocation: its source and its address (pfn for pages).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct KLiveKey {
    pub source: u64,
    pub addr: u64,
}

/// Kernel stacks of traced kernel allocations (the user side shrinks it to one entry without
/// `--kernel`: each entry holds 127 frames).
#[map]
pub static KSTACKS: StackTrace = StackTrace::with_max_entries(4096, 0);
/// Live traced kernel allocations → bytes (shrunk to one entry without `--kernel`).
#[map]
pub static KLIVE: HashMap<KLiveKey, u64> = HashMap::with_max_entries(262_144, 0);
/// Tracepoint field offsets, indexed by [`KernelField`].
#[map]
pub static KFIELDS: Array<u32> = Array::with_max_entries(KERNEL_FIELDS, 0);

/// Reads the `u64` field `f` of the record (0 if its offset is unknown).
#[inline(always)]
fn field(ctx: &TracePointContext, f: KernelField) -> u64 {
    match KFIELDS.get(f as u32) {
        Some(&off) if off > 0 => tp::<u64>(ctx, off as usize),
        _ => 0,
    }
}

/// Reads the `u32` field `f` of the record.
#[inline(always)]
fn field32(ctx: &TracePointContext, f: KernelField) -> u32 {
    match KFIELDS.get(f as u32) {
        Some(&off) if off > 0 => tp::<u32>(ctx, off as usize),
        _ => 0,
    }
}

/// Records a kernel allocation of the current (traced) process and emits its `KAlloc`.
#[inline(always)]
pub fn kalloc<C: StackIdContext>(ctx: &C, source: KernelSource, addr: u64, size: u64) {
    if config(ConfigKey::Kernel) == 0 || addr == 0 {
        return;
    }
    let (tgid, tid) = ids();
    if tgid == 0 || !traced(tgid) {
        return;
    }
    let key = KLiveKey {
        source: source as u64,
        addr,
    };
    // Not reported at all when its free could not be paired: it would look outstanding forever.
    if KLIVE.insert(key, size, 0).is_err() {
        count_drop(DropReason::KernelLiveFull);
        return;
    }
    let stack_id = match ctx.get_stackid(&KSTACKS, 0) {
        Ok(id) => id as i32,
        Err(_) => {
            count_drop(DropReason::StackCollision);
            -1
        }
    };
    let mut ev = event(EventKind::KAlloc, tgid, tid);
    ev.alloc_fn = source as u16;
    ev.addr = addr;
    ev.size = size;
    ev.stack_id = stack_id;
    emit(&ev);
}

/// A kernel free: emits `KFree` if a traced allocation is released (from any context).
#[inline(always)]
pub fn kfree(source: KernelSource, addr: u64) {
    if addr == 0 {
        return;
    }
    let key = KLiveKey {
        source: source as u64,
        addr,
    };
    // SAFETY: copied out before the removal.
    let Some(size) = (unsafe { KLIVE.get(key).copied() }) else {
        return;
    };
    // Two CPUs may race on one address: only the one that removes the entry reports it.
    if KLIVE.remove(key).is_err() {
        return;
    }
    let (tgid, tid) = ids();
    let mut ev = event(EventKind::KFree, tgid, tid);
    ev.alloc_fn = source as u16;
    ev.addr = addr;
    ev.size = size;
    emit(&ev);
}

#[tracepoint]
pub fn kmem_page_alloc(ctx: TracePointContext) -> u32 {
    let pfn = field(&ctx, KernelField::PageAllocPfn);
    // pfn is -1 for a failed allocation.
    if pfn != u64::MAX {
        let order = field32(&ctx, KernelField::PageAllocOrder) & 31;
        kalloc(&ctx, KernelSource::Page, pfn, PAGE_SIZE << order);
    }
    0
}

#[tracepoint]
pub fn kmem_page_free(ctx: TracePointContext) -> u32 {
    kfree(KernelSource::Page, field(&ctx, KernelField::PageFreePfn));
    0
}

#[tracepoint]
pub fn kmem_page_free_batched(ctx: TracePointContext) -> u32 {
    kfree(KernelSource::Page, field(&ctx, KernelField::PageBatchedPfn));
    0
}

#[tracepoint]
pub fn kmem_kmalloc(ctx: TracePointContext) -> u32 {
    let ptr = field(&ctx, KernelField::KmallocPtr);
    kalloc(
        &ctx,
        KernelSource::Slab,
        ptr,
        field(&ctx, KernelField::KmallocBytes),
    );
    0
}

#[tracepoint]
pub fn kmem_kfree(ctx: TracePointContext) -> u32 {
    kfree(KernelSource::Slab, field(&ctx, KernelField::KfreePtr));
    0
}

#[tracepoint]
pub fn kmem_cache_alloc(ctx: TracePointContext) -> u32 {
    let ptr = field(&ctx, KernelField::CacheAllocPtr);
    kalloc(
        &ctx,
        KernelSource::Slab,
        ptr,
        field(&ctx, KernelField::CacheAllocBytes),
    );
    0
}

#[tracepoint]
pub fn kmem_cache_free(ctx: TracePointContext) -> u32 {
    kfree(KernelSource::Slab, field(&ctx, KernelField::CacheFreePtr));
    0
}

#[tracepoint]
pub fn vmalloc_alloc(ctx: TracePointContext) -> u32 {
    if field32(&ctx, KernelField::VmapFailed) == 0 {
        let addr = field(&ctx, KernelField::VmapAddr);
        kalloc(
            &ctx,
            KernelSource::Vmalloc,
            addr,
            field(&ctx, KernelField::VmapSize),
        );
    }
    0
}

#[tracepoint]
pub fn vmalloc_free(ctx: TracePointContext) -> u32 {
    kfree(KernelSource::Vmalloc, field(&ctx, KernelField::VfreeAddr));
    0
}

/// `amdgpu:amdgpu_bo_create`: a buffer object of `pages` pages (no free tracepoint exists: its
/// release is seen only through the `drm_gem_object_release` fentry, where the kernel allows it).
#[tracepoint]
pub fn amdgpu_bo_create(ctx: TracePointContext) -> u32 {
    let bo = field(&ctx, KernelField::AmdgpuBo);
    let pages = field32(&ctx, KernelField::AmdgpuPages) as u64;
    kalloc(&ctx, KernelSource::Gpu, bo, pages * PAGE_SIZE);
    0
}
