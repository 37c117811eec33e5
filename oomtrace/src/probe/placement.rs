//! Where inside an allocator function to put its probe.
//!
//! A uprobe on an instruction the kernel emulates (push, jmp, jcc, call, nop) costs ~0.45 µs; on
//! any other instruction the kernel single-steps it out of line for ~16 µs. glibc's `free` starts
//! with `test %rdi,%rdi`, so a probe at `free+0` is ~35× dearer than one at `free+3` (`je`).
//! We decode the prologue and pick the first emulated instruction that every path reaches before
//! anything writes the argument registers or the stack pointer: the arguments and the return
//! address at `[rsp]` are then exactly what they were at entry, so both the entry probe and the
//! uretprobe (which hijacks `[rsp]` when it fires) behave as at offset 0.

use iced_x86::{Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, OpAccess, Register};

/// How the probe offset was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementMode {
    /// Decode the prologue and pick the cheapest equivalent instruction.
    Auto,
    /// Always offset 0 (what other tools do; kept for benchmarks).
    Entry,
}

/// The chosen probe location within one function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Byte offset from the function's start.
    pub offset: u64,
    /// Whether the kernel emulates the instruction there (the cheap path).
    pub emulated: bool,
}

/// Integer argument registers of the SysV x86-64 ABI, in order.
const ARG_REGS: [Register; 6] = [
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::RCX,
    Register::R8,
    Register::R9,
];

/// Chooses the probe offset for a function whose machine code is `code`, loaded at `ip`, that
/// reads its first `nargs` integer arguments.
pub fn choose(code: &[u8], ip: u64, nargs: usize, mode: PlacementMode) -> Placement {
    let at_zero = Placement {
        offset: 0,
        emulated: code.first().is_some_and(|_| is_emulated(first_insn(code))),
    };
    if mode == PlacementMode::Entry || code.is_empty() {
        return at_zero;
    }
    // Branch targets anywhere in the function: a probe must not sit where a jump could re-enter
    // the prologue, or it would fire twice per call.
    let targets = branch_targets(code, ip);
    let mut info = InstructionInfoFactory::new();
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    for insn in &mut decoder {
        if insn.is_invalid() {
            break;
        }
        let offset = insn.ip() - ip;
        if offset > 0 && targets.iter().any(|&t| t > ip && t <= insn.ip()) {
            break;
        }
        let bytes = &code[offset as usize..offset as usize + insn.len()];
        if is_emulated(bytes) {
            return Placement {
                offset,
                emulated: true,
            };
        }
        if insn.flow_control() != FlowControl::Next {
            break;
        }
        let used = info.info(&insn);
        let clobbers = used.used_registers().iter().any(|r| {
            let writes = !matches!(
                r.access(),
                OpAccess::Read | OpAccess::CondRead | OpAccess::NoMemAccess | OpAccess::None
            );
            let reg = r.register().full_register();
            writes && (reg == Register::RSP || ARG_REGS[..nargs.min(6)].contains(&reg))
        });
        if clobbers {
            break;
        }
    }
    at_zero
}

/// Whether the function's first instruction decodes at all (placement falls back to offset 0
/// when it does not, and the caller says so).
pub fn decodes(code: &[u8]) -> bool {
    !first_insn(code).is_empty()
}

fn first_insn(code: &[u8]) -> &[u8] {
    let mut decoder = Decoder::new(64, code, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        &code[..0]
    } else {
        &code[..insn.len()]
    }
}

/// Near branch targets of every instruction in `code`.
fn branch_targets(code: &[u8], ip: u64) -> Vec<u64> {
    let mut targets = Vec::new();
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    for insn in &mut decoder {
        if matches!(
            insn.flow_control(),
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch
        ) && insn.is_jcc_short_or_near() | insn.is_jmp_short_or_near()
        {
            targets.push(insn.near_branch_target());
        }
    }
    targets
}

/// Whether the kernel's x86 uprobe code emulates this instruction instead of single-stepping it:
/// `push reg`, `jmp`/`call` rel, `jcc` rel, and `nop` — without operand-size or other prefixes,
/// which the kernel's branch emulation refuses.
pub fn is_emulated(bytes: &[u8]) -> bool {
    matches!(
        bytes,
        [0x50..=0x57]
            | [0x41, 0x50..=0x57]
            | [0x90]
            | [0x0f, 0x1f, ..]
            | [0xeb, _]
            | [0xe9, _, _, _, _]
            | [0xe8, _, _, _, _]
            | [0x70..=0x7f, _]
            | [0x0f, 0x80..=0x8f, _, _, _, _]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_free_shape_moves_to_the_je() {
        // test %rdi,%rdi ; je +0xbf ; push %rbp ; lea -0x10(%rdi),%rsi
        let code = [
            0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0, 0, 0, 0x55, 0x48, 0x8d, 0x77, 0xf0,
        ];
        let p = choose(&code, 0x1000, 1, PlacementMode::Auto);
        assert_eq!(
            p,
            Placement {
                offset: 3,
                emulated: true
            }
        );
        assert_eq!(choose(&code, 0x1000, 1, PlacementMode::Entry).offset, 0);
    }

    #[test]
    fn push_at_entry_stays_at_zero() {
        let code = [0x41, 0x54, 0x55, 0x53];
        assert_eq!(
            choose(&code, 0, 1, PlacementMode::Auto),
            Placement {
                offset: 0,
                emulated: true
            }
        );
    }

    #[test]
    fn writing_an_argument_register_first_keeps_offset_zero() {
        // mov %rsi,%rdi ; push %rbx
        let code = [0x48, 0x89, 0xf7, 0x53];
        assert_eq!(choose(&code, 0, 1, PlacementMode::Auto).offset, 0);
        // The same write is harmless to a function that reads no argument... but rsp changes are not.
        // sub $0x8,%rsp ; push %rbx
        let code = [0x48, 0x83, 0xec, 0x08, 0x53];
        assert_eq!(choose(&code, 0, 0, PlacementMode::Auto).offset, 0);
    }

    #[test]
    fn a_jump_back_into_the_prologue_keeps_offset_zero() {
        // 0: cmp $0,%rdi (48 83 ff 00) ; 4: push %rbx ; 5: jmp 4 (eb fd)
        let code = [0x48, 0x83, 0xff, 0x00, 0x53, 0xeb, 0xfd];
        assert_eq!(choose(&code, 0, 1, PlacementMode::Auto).offset, 0);
    }

    #[test]
    fn undecodable_code_is_recognized() {
        assert!(decodes(&[0x53]));
        assert!(!decodes(&[]));
        // A lone operand-size prefix is no instruction.
        assert!(!decodes(&[0x66]));
    }

    #[test]
    fn emulated_instruction_table() {
        assert!(is_emulated(&[0x53]));
        assert!(is_emulated(&[0x41, 0x57]));
        assert!(is_emulated(&[0x74, 0x07]));
        assert!(!is_emulated(&[0x48, 0x85, 0xff]));
        assert!(!is_emulated(&[0x66, 0x90]));
        assert!(!is_emulated(&[0xf3, 0x0f, 0x1e, 0xfa]));
    }
}
