//! The stack walker's side of the loaded object: its depth, the kernel structure offsets it
//! reads (from the running kernel's BTF), its tables (handed to [`crate::unwind`]), and reading
//! stored stacks back.

use anyhow::Result;
use aya::maps::{Array, HashMap};
use oomtrace_common::{ConfigKey, MAX_STACK_FRAMES, STACK_WORDS};

use super::Probes;
use super::btf::Btf;
use crate::unwind::{Unwinder, UserStack, kernel::KernelTables};

/// What the uretprobe trampoline fix-up reads: where a thread's pending return instances are.
const RETURN_OFFSETS: [(ConfigKey, &str, &str); 5] = [
    (ConfigKey::TaskUtask, "task_struct", "utask"),
    (ConfigKey::UtaskReturns, "uprobe_task", "return_instances"),
    (ConfigKey::ReturnStack, "return_instance", "stack"),
    (ConfigKey::ReturnOrig, "return_instance", "orig_ret_vaddr"),
    (ConfigKey::ReturnNext, "return_instance", "next"),
];

/// What naming a mapping through the kernel's VMA reads: its range and file offset, and its
/// file's inode number and device.
const VMA_OFFSETS: [(ConfigKey, &str, &str); 8] = [
    (ConfigKey::VmaStart, "vm_area_struct", "vm_start"),
    (ConfigKey::VmaEnd, "vm_area_struct", "vm_end"),
    (ConfigKey::VmaPgoff, "vm_area_struct", "vm_pgoff"),
    (ConfigKey::VmaFile, "vm_area_struct", "vm_file"),
    (ConfigKey::FileInode, "file", "f_inode"),
    (ConfigKey::InodeIno, "inode", "i_ino"),
    (ConfigKey::InodeSb, "inode", "i_sb"),
    (ConfigKey::SbDev, "super_block", "s_dev"),
];

impl Probes {
    /// Sets how many frames the walk takes (`--stack-depth`, the call site included), gives it
    /// the kernel structure offsets it reads (the uretprobe trampoline fix-up; naming mappings
    /// published too late through the kernel's VMA), and hands the walker's tables to an
    /// [`Unwinder`]. Returns a notice for each part the kernel's BTF cannot serve.
    pub fn take_unwinder(&mut self, depth: u64) -> Result<(Unwinder, Vec<String>)> {
        let frames = depth.saturating_sub(1).min(MAX_STACK_FRAMES as u64);
        let btf = self
            .kernel_btf()
            .or_else(|| Btf::kernel().map(std::sync::Arc::new));
        let mut config: Array<_, u64> = Array::try_from(self.map_mut("CONFIG")?)?;
        config.set(ConfigKey::StackFrames as u32, frames, 0)?;
        let mut notices = Vec::new();
        let offsets = |which: &[(ConfigKey, &str, &str)]| -> Option<Vec<(ConfigKey, u64)>> {
            let btf = btf.as_ref()?;
            which
                .iter()
                .map(|&(key, s, m)| Some((key, u64::from(btf.member_offset(s, m)?))))
                .collect()
        };
        for (which, missing) in [
            (
                &RETURN_OFFSETS[..],
                "oomtrace: notice: the kernel's BTF does not say where pending uretprobes are: \
                 a frame under another tool's uretprobe may show the trampoline",
            ),
            (
                &VMA_OFFSETS[..],
                "oomtrace: notice: the kernel's BTF does not describe its memory mappings: \
                 frames in a library mapped moments before an allocation may be cut short",
            ),
        ] {
            match offsets(which) {
                Some(found) => {
                    for (key, off) in found {
                        config.set(key as u32, off, 0)?;
                    }
                }
                None => notices.push(missing.to_owned()),
            }
        }
        if std::env::var("OOMTRACE_UNWIND").is_ok_and(|v| v == "frame-pointers") {
            // The baseline the tables' cost is measured against (`cargo xtask bench stacks`).
            config.set(ConfigKey::UnwindFramePointers as u32, 1, 0)?;
            notices.push("oomtrace: notice: OOMTRACE_UNWIND=frame-pointers: stacks follow frame pointers only".into());
        }
        let tables = KernelTables::take(&mut self.ebpf)?;
        Ok((Unwinder::new(tables), notices))
    }

    /// The stack stored under `stack_id`.
    pub fn stored_stack(&self, stack_id: u32) -> Option<UserStack> {
        let map = self.ebpf.map("STACKS")?;
        let stacks: HashMap<_, u32, [u64; STACK_WORDS]> = HashMap::try_from(map).ok()?;
        let words = stacks.get(&stack_id, 0).ok()?;
        Some(UserStack::decode(&words))
    }
}
