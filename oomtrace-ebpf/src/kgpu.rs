//! `--kernel` on machines whose kernel allows fentry/fexit: GPU buffer objects by the DRM/TTM
//! functions that create and release them. The user side loads each program only when its
//! function is in the kernel's BTF, and reports the rest as absent or refused (this path is
//! not exercised where fentry is refused, as on oomtrace's test machines: keep it small).
//!
//! `drm_gem_object_init`'s object and an amdgpu buffer object share their address (the GEM
//! object is the first member), so the amdgpu tracepoint and these programs pair on it.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use oomtrace_common::KernelSource;

use crate::kmem::{kalloc, kfree};

/// Offset of `num_pages` (u32) in `struct ttm_tt` since Linux 5.14 (after `pages` and
/// `page_flags`).
const TTM_TT_NUM_PAGES: usize = 12;
const PAGE_SIZE: u64 = 4096;

/// `int drm_gem_object_init(struct drm_device *, struct drm_gem_object *obj, size_t size)`.
#[fexit(function = "drm_gem_object_init")]
pub fn drm_gem_init_exit(ctx: FExitContext) -> i32 {
    let ret: i64 = ctx.arg(3);
    if ret as i32 == 0 {
        let obj: u64 = ctx.arg(1);
        let size: u64 = ctx.arg(2);
        kalloc(&ctx, KernelSource::Gpu, obj, size);
    }
    0
}

/// `void drm_gem_object_release(struct drm_gem_object *obj)`.
#[fentry(function = "drm_gem_object_release")]
pub fn drm_gem_release(ctx: FEntryContext) -> i32 {
    let obj: u64 = ctx.arg(0);
    kfree(KernelSource::Gpu, obj);
    0
}

/// `int ttm_pool_alloc(struct ttm_pool *, struct ttm_tt *tt, struct ttm_operation_ctx *)`.
#[fexit(function = "ttm_pool_alloc")]
pub fn ttm_pool_alloc_exit(ctx: FExitContext) -> i32 {
    let ret: i64 = ctx.arg(3);
    if ret as i32 == 0 {
        let tt: u64 = ctx.arg(1);
        // SAFETY: kernel memory read through the helper; a bad pointer just fails.
        let pages: u32 = unsafe {
            bpf_probe_read_kernel((tt as usize + TTM_TT_NUM_PAGES) as *const u32).unwrap_or(0)
        };
        kalloc(&ctx, KernelSource::Gpu, tt, u64::from(pages) * PAGE_SIZE);
    }
    0
}

/// `void ttm_pool_free(struct ttm_pool *, struct ttm_tt *tt)`.
#[fentry(function = "ttm_pool_free")]
pub fn ttm_pool_free_entry(ctx: FEntryContext) -> i32 {
    let tt: u64 = ctx.arg(1);
    kfree(KernelSource::Gpu, tt);
    0
}
