//! Struct member offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`), for the
//! uretprobe trampoline fix-up: where a thread's pending return instances are.
//!
//! Only what that needs is read: the type section's records are walked to find named structs and
//! their members' bit offsets.

use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;

/// The offsets the kernel-side walker reads pending uretprobes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReturnOffsets {
    /// `task_struct.utask`.
    pub task_utask: u64,
    /// `uprobe_task.return_instances`.
    pub utask_returns: u64,
    /// `return_instance.stack`.
    pub stack: u64,
    /// `return_instance.orig_ret_vaddr`.
    pub orig: u64,
    /// `return_instance.next`.
    pub next: u64,
}

/// Reads the offsets from the running kernel; `None` where BTF or a member is missing.
pub fn return_offsets() -> Option<ReturnOffsets> {
    let data = std::fs::read("/sys/kernel/btf/vmlinux").ok()?;
    let structs = struct_members(&data, &["task_struct", "uprobe_task", "return_instance"])?;
    let member = |s: &str, m: &str| structs.get(s)?.get(m).copied();
    Some(ReturnOffsets {
        task_utask: member("task_struct", "utask")?,
        utask_returns: member("uprobe_task", "return_instances")?,
        stack: member("return_instance", "stack")?,
        orig: member("return_instance", "orig_ret_vaddr")?,
        next: member("return_instance", "next")?,
    })
}

/// Byte offsets of the members of the named structs (their first definition each).
pub fn struct_members(
    data: &[u8],
    wanted: &[&str],
) -> Option<HashMap<String, HashMap<String, u64>>> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?));
    if u16_at(0)? != MAGIC {
        return None;
    }
    let hdr_len = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let str_off = u32_at(16)? as usize;
    let types = hdr_len.checked_add(type_off)?;
    let strings = hdr_len.checked_add(str_off)?;
    let name = |off: u32| -> Option<&str> {
        let rest = data.get(strings + off as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    };
    let mut out: HashMap<String, HashMap<String, u64>> = HashMap::new();
    let mut at = types;
    let end = types.checked_add(type_len)?;
    while at + 12 <= end {
        let (name_off, info) = (u32_at(at)?, u32_at(at + 4)?);
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kflag = info >> 31 == 1;
        at += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,
            3 => 12,
            4 | 5 => vlen * 12,
            6 | 13 => vlen * 8,
            15 | 19 => vlen * 12,
            _ => 0,
        };
        if kind == 4
            && let Some(n) = name(name_off)
            && wanted.contains(&n)
            && !out.contains_key(n)
        {
            let mut members = HashMap::new();
            for i in 0..vlen {
                let m = at + i * 12;
                let bits = u32_at(m + 8)?;
                let bit_off = if kflag { bits & 0x00ff_ffff } else { bits };
                if let Some(mn) = name(u32_at(m)?) {
                    members.insert(mn.to_owned(), u64::from(bit_off / 8));
                }
            }
            out.insert(n.to_owned(), members);
        }
        at += extra;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF has the members the fix-up reads, at sane offsets.
    #[test]
    fn running_kernel_has_return_instances() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            return;
        }
        let o = return_offsets().expect("offsets");
        assert!(o.task_utask > 0 && o.task_utask < 16384, "{o:?}");
        assert!(o.stack < 256 && o.orig < 256 && o.next < 256, "{o:?}");
        assert_ne!(o.stack, o.orig);
    }

    #[test]
    fn rejects_other_data() {
        assert!(struct_members(b"not btf at all", &["x"]).is_none());
        assert!(struct_members(&[], &["x"]).is_none());
    }
}
