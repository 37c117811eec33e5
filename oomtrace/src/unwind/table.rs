//! A module's `.eh_frame` (or `.debug_frame`) as the kernel-side walker's compact rows.
//!
//! gimli evaluates each FDE's CFA program; every row becomes 8 bytes: its start address and how
//! to find the caller's frame from there (CFA from `rsp` or `rbp` plus an offset, where `rbp`
//! was saved). Addresses that no FDE covers get a gap row (frame pointers there). Rows are then
//! indexed by 4 KiB page, so the kernel's search is one page entry and a few row reads.

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, Operation,
    RegisterRule, UnwindContext, UnwindSection, X86_64,
};
use object::elf;
use object::read::elf::SectionHeader as _;
use oomtrace_common::unwind::{PAGE_SHIFT, fits_cfa_off, kind, page, row};

use crate::objfile::elf::ElfLayout;

/// `.eh_frame`/`.debug_frame` larger than this are not read.
const MAX_SECTION: u64 = 256 << 20;
/// Rows one module may have (past it the module is refused, not cut).
pub const MAX_MODULE_ROWS: usize = 1 << 21;
/// The walker searches at most this many rows per page.
const MAX_PAGE_ROWS: u32 = 4097;

/// One module's rows and page index, ready for the kernel maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleRows {
    /// The page index's first address (4 KiB aligned).
    pub vaddr_lo: u64,
    /// Per 4 KiB page: [`page`]`(first row, rows to search)`.
    pub pages: Vec<u64>,
    /// Sorted rows ([`row`]).
    pub rows: Vec<u64>,
    /// What the builder met on the way.
    pub stats: BuildStats,
}

/// What building one module's rows met.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// FDEs read.
    pub fdes: u64,
    /// FDEs (or the section's tail) that did not parse: their code has gap rows.
    pub bad_entries: u64,
    /// Rows with a rule the walker cannot evaluate.
    pub unsupported: u64,
    /// Whether the rows came from `.debug_frame` (no `.eh_frame`).
    pub debug_frame: bool,
}

/// Why a module has no rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// Neither `.eh_frame` nor `.debug_frame` (with any FDE) is there.
    NoUnwindInfo,
    /// Unwind info is there, but none of its entries could be read (damaged ones met before
    /// the walk through the section had to stop).
    Damaged(u64),
    /// The section could not be read.
    Unreadable(&'static str),
    /// Addresses above 4 GiB, or more rows than a module may have.
    TooLarge(&'static str),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoUnwindInfo => f.write_str("no .eh_frame or .debug_frame"),
            Self::Damaged(_) => f.write_str("its unwind info is damaged: no entry could be read"),
            Self::Unreadable(what) => write!(f, "cannot read {what}"),
            Self::TooLarge(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for BuildError {}

/// One unwind row before packing: `[start, end)` and its rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u64,
    end: u64,
    kind: u32,
    rbp_slot: i8,
    cfa_off: i32,
}

/// Builds the rows of the module `elf`.
pub fn build(elf: &ElfLayout) -> Result<ModuleRows, BuildError> {
    let find = |name: &[u8]| (0..elf.sections().len()).find(|&i| elf.section_name(i) == Some(name));
    let e = elf.endian();
    let addr_of = |i: usize| elf.sections()[i].sh_addr(e);
    let mut bases = BaseAddresses::default();
    if let Some(i) = find(b".text") {
        bases = bases.set_text(addr_of(i));
    }
    if let Some(i) = find(b".got") {
        bases = bases.set_got(addr_of(i));
    }
    let mut stats = BuildStats::default();
    let mut spans = Vec::new();
    if let Some(i) = find(b".eh_frame") {
        let data = elf
            .section_bytes(i, MAX_SECTION, ".eh_frame")
            .map_err(|_| BuildError::Unreadable(".eh_frame"))?;
        let bases = bases.clone().set_eh_frame(addr_of(i));
        let section = EhFrame::new(&data, LittleEndian);
        collect(&section, &bases, &mut spans, &mut stats);
    }
    if spans.is_empty()
        && let Some(i) = find(b".debug_frame")
    {
        let data = elf
            .section_bytes(i, MAX_SECTION, ".debug_frame")
            .map_err(|_| BuildError::Unreadable(".debug_frame"))?;
        let mut section = DebugFrame::new(&data, LittleEndian);
        section.set_address_size(8);
        collect(&section, &bases, &mut spans, &mut stats);
        stats.debug_frame = true;
    }
    if spans.is_empty() {
        // Told apart: "no .eh_frame" would send the reader to the wrong build flag.
        return Err(match stats.bad_entries {
            0 => BuildError::NoUnwindInfo,
            n => BuildError::Damaged(n),
        });
    }
    // Only rows inside the executable segments matter (and bound the page index).
    let exec: Vec<(u64, u64)> = elf
        .segments()
        .iter()
        .filter(|p| p.p_type.get(e) == elf::PT_LOAD && p.p_flags.get(e) & elf::PF_X != 0)
        .map(|p| (p.p_vaddr.get(e), p.p_vaddr.get(e) + p.p_memsz.get(e)))
        .collect();
    if !exec.is_empty() {
        spans.retain(|s| exec.iter().any(|&(lo, hi)| s.start < hi && s.end > lo));
    }
    pack(spans, stats)
}

/// Evaluates every FDE of `section` into `spans`.
fn collect<'a, S>(section: &S, bases: &BaseAddresses, spans: &mut Vec<Span>, stats: &mut BuildStats)
where
    S: UnwindSection<EndianSlice<'a, LittleEndian>>,
{
    let mut ctx = Box::new(UnwindContext::new());
    let mut entries = section.entries(bases);
    loop {
        let entry = match entries.next() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            // A damaged length field: nothing past it can be found.
            Err(_) => {
                stats.bad_entries += 1;
                break;
            }
        };
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(S::cie_from_offset) else {
            stats.bad_entries += 1;
            continue;
        };
        stats.fdes += 1;
        let signal = fde.cie().is_signal_trampoline();
        let encoding = fde.cie().encoding();
        let Ok(mut table) = fde.rows(section, bases, &mut ctx) else {
            stats.bad_entries += 1;
            continue;
        };
        loop {
            let row = match table.next_row() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(_) => {
                    stats.bad_entries += 1;
                    break;
                }
            };
            let (start, end) = (row.start_address(), row.end_address());
            if end <= start {
                continue;
            }
            let mut span = Span {
                start,
                end,
                kind: kind::RSP,
                rbp_slot: 0,
                cfa_off: 0,
            };
            if signal {
                span.kind = kind::SIGNAL;
                spans.push(span);
                continue;
            }
            match row.register(X86_64::RA) {
                Some(RegisterRule::Undefined) => {
                    span.kind = kind::END;
                    spans.push(span);
                    continue;
                }
                Some(RegisterRule::Offset(-8)) => {}
                _ => span.kind = kind::UNSUPPORTED,
            }
            match row.cfa() {
                CfaRule::RegisterAndOffset { register, offset } if fits_cfa_off(*offset) => {
                    span.cfa_off = *offset as i32;
                    // RSP is the kind the span starts with (an unsupported RA rule stays so).
                    if *register == X86_64::RSP {
                    } else if *register == X86_64::RBP {
                        span.kind = span.kind.max(kind::RBP);
                    } else {
                        span.kind = kind::UNSUPPORTED;
                    }
                }
                CfaRule::Expression(expr) => {
                    let ops = expr
                        .get(section)
                        .ok()
                        .map(|x| operations(x, encoding))
                        .unwrap_or_default();
                    match classify_expression(&ops) {
                        Some((k, off)) if span.kind != kind::UNSUPPORTED => {
                            span.kind = k;
                            span.cfa_off = off;
                        }
                        _ => span.kind = kind::UNSUPPORTED,
                    }
                }
                CfaRule::RegisterAndOffset { .. } => span.kind = kind::UNSUPPORTED,
            }
            if let Some(RegisterRule::Offset(off)) = row.register(X86_64::RBP) {
                match i8::try_from(off / 8) {
                    Ok(slot) if off % 8 == 0 && slot != 0 => span.rbp_slot = slot,
                    _ => span.kind = kind::UNSUPPORTED,
                }
            }
            if span.kind == kind::UNSUPPORTED {
                stats.unsupported += 1;
            }
            spans.push(span);
        }
    }
}

/// The operations of a CFA expression (empty if it does not parse).
fn operations(
    expr: gimli::Expression<EndianSlice<'_, LittleEndian>>,
    encoding: gimli::Encoding,
) -> Vec<Operation<EndianSlice<'_, LittleEndian>>> {
    let mut out = Vec::new();
    let mut ops = expr.operations(encoding);
    while let Ok(Some(op)) = ops.next() {
        out.push(op);
        if out.len() > 16 {
            return Vec::new();
        }
    }
    out
}

/// The CFA expressions the walker evaluates: a PLT stub's (`rsp + 8 + 8·((rip & 15) >= 11)`)
/// and a realigned frame's (`*(rbp + k)`).
fn classify_expression(ops: &[Operation<EndianSlice<'_, LittleEndian>>]) -> Option<(u32, i32)> {
    match ops {
        [
            Operation::RegisterOffset {
                register, offset, ..
            },
            Operation::Deref { .. },
        ] if *register == X86_64::RBP && fits_cfa_off(*offset) => {
            Some((kind::RBP_DEREF, *offset as i32))
        }
        [
            Operation::RegisterOffset {
                register: sp,
                offset: 8,
                ..
            },
            Operation::RegisterOffset { register: ip, .. },
            Operation::UnsignedConstant { value: 15 },
            Operation::And,
            Operation::UnsignedConstant { value: 11 },
            Operation::Ge,
            Operation::UnsignedConstant { value: 3 },
            Operation::Shl,
            Operation::Plus,
        ] if *sp == X86_64::RSP && *ip == X86_64::RA => Some((kind::PLT, 0)),
        _ => None,
    }
}

/// Sorts the spans into rows (gaps between them as gap rows) and indexes them by page.
fn pack(mut spans: Vec<Span>, stats: BuildStats) -> Result<ModuleRows, BuildError> {
    spans.sort_by_key(|s| (s.start, s.end));
    let top = spans.iter().map(|s| s.end).max().unwrap_or(0);
    if top > u64::from(u32::MAX) {
        return Err(BuildError::TooLarge("code above 4 GiB in the module"));
    }
    let mut rows: Vec<u64> = Vec::with_capacity(spans.len() + 16);
    let mut covered_to = 0u64;
    let mut last_info = u32::MAX;
    let mut push = |rows: &mut Vec<u64>, start: u64, k: u32, slot: i8, off: i32| {
        let r = row(start as u32, k, slot, off);
        if r as u32 == last_info {
            return;
        }
        last_info = r as u32;
        // A later span starting at the same address replaces the earlier row.
        if let Some(prev) = rows.last_mut()
            && (*prev >> 32) == start
        {
            *prev = r;
            return;
        }
        rows.push(r);
    };
    for s in &spans {
        if s.start > covered_to && !rows.is_empty() {
            push(&mut rows, covered_to, kind::GAP, 0, 0);
        }
        push(&mut rows, s.start, s.kind, s.rbp_slot, s.cfa_off);
        covered_to = covered_to.max(s.end);
    }
    push(&mut rows, covered_to, kind::GAP, 0, 0);
    if rows.len() > MAX_MODULE_ROWS {
        return Err(BuildError::TooLarge(
            "more unwind rows than a module may have",
        ));
    }
    let vaddr_lo = spans.first().map_or(0, |s| s.start) & !((1u64 << PAGE_SHIFT) - 1);
    let n_pages = (top - vaddr_lo).div_ceil(1 << PAGE_SHIFT) as usize;
    let mut pages = Vec::with_capacity(n_pages);
    // `first`: the last row at or below the page's start; `end`: the first row past the page.
    let (mut first, mut end) = (0usize, 0usize);
    for p in 0..n_pages as u64 {
        let page_start = vaddr_lo + (p << PAGE_SHIFT);
        let page_end = page_start + (1 << PAGE_SHIFT);
        while first + 1 < rows.len() && (rows[first + 1] >> 32) <= page_start {
            first += 1;
        }
        end = end.max(first);
        while end < rows.len() && (rows[end] >> 32) < page_end {
            end += 1;
        }
        let count = (end - first) as u32;
        if count > MAX_PAGE_ROWS {
            return Err(BuildError::TooLarge(
                "more unwind rows in a page than searched",
            ));
        }
        pages.push(page(first as u32, count));
    }
    Ok(ModuleRows {
        vaddr_lo,
        pages,
        rows,
        stats,
    })
}

/// The row covering `pc`, searched as the kernel side does (for tests and the user-side
/// check of a module's rows).
pub fn lookup(m: &ModuleRows, pc: u64) -> Option<u64> {
    let p = pc.checked_sub(m.vaddr_lo)? >> PAGE_SHIFT;
    let entry = *m.pages.get(usize::try_from(p).ok()?)?;
    let (first, count) = ((entry >> 32) as usize, entry as u32 as usize);
    let rows = m.rows.get(first..first + count)?;
    let i = rows.partition_point(|&r| u64::from((r >> 32) as u32) <= pc);
    (i > 0).then(|| rows[i - 1])
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
