//! Field offsets of kernel structures, from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Raw tracepoints hand their programs bare pointers (the forked child's `task_struct`); the
//! programs read the fields they need at offsets this module finds, which the session writes
//! into the programs' config words. Only what that needs is parsed: the type section, walked
//! once, and the names of structures and their members.

use std::path::Path;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;
/// The most BTF read (vmlinux's is a few MiB).
const MAX_BTF: u64 = 64 << 20;

/// A kernel's BTF, parsed far enough to find structure members.
pub struct Btf {
    data: Vec<u8>,
    strings: (usize, usize),
    /// Byte offset of every type's record, by type id (id 0 is `void`).
    types: Vec<usize>,
}

impl Btf {
    /// The running kernel's BTF.
    pub fn kernel() -> Option<Self> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    /// BTF from a file.
    pub fn from_file(path: &Path) -> Option<Self> {
        use std::io::Read as _;
        let mut data = Vec::new();
        std::fs::File::open(path)
            .ok()?
            .take(MAX_BTF)
            .read_to_end(&mut data)
            .ok()?;
        Self::parse(data)
    }

    /// Parses raw BTF; `None` when it is not BTF or is cut short.
    pub fn parse(data: Vec<u8>) -> Option<Self> {
        let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
        let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
        if u16_at(0)? != BTF_MAGIC {
            return None;
        }
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let types_start = hdr_len.checked_add(type_off)?;
        let types_end = types_start.checked_add(type_len)?;
        let strings = (hdr_len + str_off, hdr_len + str_off + str_len);
        if types_end > data.len() || strings.1 > data.len() {
            return None;
        }
        let mut types = vec![0];
        let mut at = types_start;
        while at + 12 <= types_end {
            types.push(at);
            let info = u32_at(at + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            at += 12
                + match kind {
                    KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                    KIND_ARRAY => 12,
                    KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                    KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                    _ => 0,
                };
        }
        Some(Self {
            data,
            strings,
            types,
        })
    }

    fn u32_at(&self, o: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.data.get(o..o + 4)?.try_into().ok()?,
        ))
    }

    fn name(&self, off: u32) -> Option<&[u8]> {
        let start = self.strings.0.checked_add(off as usize)?;
        let rest = self.data.get(start..self.strings.1)?;
        rest.split(|&b| b == 0).next()
    }

    /// The size of `struct name` in bytes.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        let at = self.struct_record(name)?;
        self.u32_at(at + 8)
    }

    fn struct_record(&self, name: &str) -> Option<usize> {
        self.struct_id(name).map(|id| self.types[id])
    }

    /// The type id of `struct name`.
    fn struct_id(&self, name: &str) -> Option<usize> {
        self.types.iter().position(|&at| {
            at != 0
                && self
                    .u32_at(at + 4)
                    .is_some_and(|i| (i >> 24) & 0x1f == KIND_STRUCT)
                && self
                    .u32_at(at)
                    .and_then(|n| self.name(n))
                    .is_some_and(|n| n == name.as_bytes())
        })
    }

    /// The byte offset of `member` in `struct name` (a member of a nested anonymous struct or
    /// union is found too). `None` for a bitfield, or when there is no such member.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let id = self.struct_id(name)?;
        self.find_member(id, member.as_bytes(), 0)
    }

    fn find_member(&self, id: usize, member: &[u8], depth: u32) -> Option<u32> {
        let at = *self.types.get(id)?;
        let info = self.u32_at(at + 4)?;
        let kind = (info >> 24) & 0x1f;
        if !matches!(kind, KIND_STRUCT | KIND_UNION) || depth > 8 {
            return None;
        }
        let kflag = info >> 31 != 0;
        for i in 0..(info & 0xffff) as usize {
            let m = at + 12 + i * 12;
            let (name_off, ty, raw) = (self.u32_at(m)?, self.u32_at(m + 4)?, self.u32_at(m + 8)?);
            let (bits, bitfield) = if kflag {
                (raw & 0x00ff_ffff, raw >> 24 != 0)
            } else {
                (raw, false)
            };
            let name = self.name(name_off)?;
            if name == member {
                return (!bitfield && bits % 8 == 0).then_some(bits / 8);
            }
            if name.is_empty()
                && let Some(inner) = self.find_member(self.resolve(ty as usize)?, member, depth + 1)
            {
                return Some(bits / 8 + inner);
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: usize) -> Option<usize> {
        for _ in 0..16 {
            let at = *self.types.get(id)?;
            let kind = (self.u32_at(at + 4)? >> 24) & 0x1f;
            // typedef, volatile, const, restrict, type tag
            if matches!(kind, 8..=11 | 18) {
                id = self.u32_at(at + 8)? as usize;
            } else {
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_struct_fields_of_this_kernel() {
        let Some(btf) = Btf::kernel() else {
            panic!("this kernel has no BTF (DESIGN: the machine has it)");
        };
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        let tgid = btf.member_offset("task_struct", "tgid").unwrap();
        // pid_t pid; pid_t tgid; are adjacent in every kernel since 2.6.
        assert_eq!(tgid, pid + 4);
        assert!(btf.member_offset("task_struct", "no_such_field").is_none());
        assert!(btf.member_offset("no_such_struct", "pid").is_none());
        // mm_struct keeps most of its fields in an anonymous inner struct: found all the same.
        assert!(btf.member_offset("mm_struct", "total_vm").is_some());
        assert_eq!(btf.member_offset("percpu_counter", "count"), Some(8));
        assert!(btf.struct_size("percpu_counter").is_some_and(|s| s >= 16));
    }

    #[test]
    fn garbage_is_not_btf() {
        assert!(Btf::parse(vec![0; 64]).is_none());
        assert!(Btf::parse(Vec::new()).is_none());
        // A header that claims more than there is.
        let mut v = vec![0u8; 24];
        v[..2].copy_from_slice(&BTF_MAGIC.to_le_bytes());
        v[4..8].copy_from_slice(&24u32.to_le_bytes());
        v[12..16].copy_from_slice(&1000u32.to_le_bytes());
        assert!(Btf::parse(v).is_none());
    }
}
