//! CPython's line tables, decoded: which source line a bytecode offset belongs to. Pure
//! functions over the table's bytes; every offset here is in **bytes** from the start of the
//! code, as `PyCode_Addr2Line` takes it.
//!
//! - 3.8, 3.9 `co_lnotab`: pairs (byte increment, signed line increment); the line of offset `x`
//!   is the first line plus every line increment whose pair starts at or before `x`.
//! - 3.10 `co_linetable`: pairs (byte length of a range, signed line delta; -128: no line).
//! - 3.11+ location table: entries of one header byte (bit 7 set, a 4-bit form code, a length
//!   of 1–8 code units) and, per form, a line delta and columns as varints.

/// The line-table format of a CPython version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// 3.8, 3.9: `co_lnotab`.
    Lnotab,
    /// 3.10: `co_linetable` of (length, line delta) pairs.
    Pairs310,
    /// 3.11+: the location table.
    Locations,
}

impl Format {
    /// The format of `version` (3.8+).
    pub fn of(version: (u8, u8)) -> Self {
        match version {
            (3, 8) | (3, 9) => Self::Lnotab,
            (3, 10) => Self::Pairs310,
            _ => Self::Locations,
        }
    }
}

/// A run of bytecode `[start, end)` (bytes) and its line (`None`: no line, as for artificial
/// instructions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First byte offset.
    pub start: u32,
    /// One past the last.
    pub end: u32,
    /// Its line.
    pub line: Option<u32>,
}

/// The line of the instruction at byte offset `offset` (negative: before the first instruction,
/// which CPython reports as the first line). `None`: the table gives it no line, or does not
/// reach it.
pub fn line_at(format: Format, table: &[u8], first_line: u32, offset: i64) -> Option<u32> {
    if offset < 0 {
        return Some(first_line);
    }
    match format {
        Format::Lnotab => lnotab_line(table, first_line, offset as u64),
        Format::Pairs310 | Format::Locations => ranges(format, table, first_line)
            .find(|r| u64::from(r.start) <= offset as u64 && (offset as u64) < u64::from(r.end))
            .and_then(|r| r.line),
    }
}

/// A computed line as CPython reports it (0 happens: a module's `RESUME` is on line 0).
fn as_line(line: i64) -> Option<u32> {
    u32::try_from(line).ok()
}

/// 3.8/3.9: the first line plus the line increments of every pair that starts at or before
/// `offset`.
fn lnotab_line(table: &[u8], first_line: u32, offset: u64) -> Option<u32> {
    let mut line = i64::from(first_line);
    let mut addr = 0u64;
    for pair in table.chunks_exact(2) {
        addr += u64::from(pair[0]);
        if addr > offset {
            break;
        }
        line += i64::from(pair[1] as i8);
    }
    as_line(line)
}

/// The ranges of a 3.10 or 3.11+ table in order (empty ones skipped, as CPython does).
pub fn ranges(format: Format, table: &[u8], first_line: u32) -> impl Iterator<Item = Range> + '_ {
    let mut at = 0usize;
    let mut start = 0u32;
    let mut line = i64::from(first_line);
    std::iter::from_fn(move || {
        loop {
            let (len, delta, no_line) = match format {
                Format::Pairs310 => {
                    let pair = table.get(at..at + 2)?;
                    at += 2;
                    let delta = pair[1] as i8;
                    (
                        u32::from(pair[0]),
                        if delta == -128 { 0 } else { i64::from(delta) },
                        delta == -128,
                    )
                }
                Format::Locations => {
                    let (len, delta, no_line, next) = location_entry(table, at)?;
                    at = next;
                    (len, delta, no_line)
                }
                Format::Lnotab => return None,
            };
            line += delta;
            let end = start.checked_add(len)?;
            let range = Range {
                start,
                end,
                line: if no_line { None } else { as_line(line) },
            };
            start = end;
            if len > 0 {
                return Some(range);
            }
        }
    })
}

/// Location-table form codes (3.11+).
const FORM_NONE: u8 = 15;
const FORM_LONG: u8 = 14;
const FORM_NO_COLUMNS: u8 = 13;
const FORM_ONE_LINE0: u8 = 10;

/// The entry at `at`: (length in bytes, line delta, whether it has no line, where the next
/// entry starts). `None` at the end or on a malformed entry.
fn location_entry(table: &[u8], at: usize) -> Option<(u32, i64, bool, usize)> {
    let head = *table.get(at)?;
    if head & 0x80 == 0 {
        return None;
    }
    let code = (head >> 3) & 15;
    let len = (u32::from(head & 7) + 1) * 2;
    let delta = match code {
        FORM_NONE => 0,
        FORM_LONG | FORM_NO_COLUMNS => signed_varint(table, at + 1)?,
        FORM_ONE_LINE0..FORM_NO_COLUMNS => i64::from(code - FORM_ONE_LINE0),
        _ => 0,
    };
    // The next entry is the next byte with bit 7 set (column bytes and varints have it clear).
    let next = table[at + 1..]
        .iter()
        .position(|&b| b & 0x80 != 0)
        .map_or(table.len(), |p| at + 1 + p);
    Some((len, delta, code == FORM_NONE, next))
}

/// A varint of 6-bit groups, low group first, bit 6 set on every group but the last.
fn varint(table: &[u8], mut at: usize) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0u32;
    loop {
        let b = *table.get(at)?;
        value |= u64::from(b & 63) << shift;
        if b & 64 == 0 {
            return Some(value);
        }
        at += 1;
        shift += 6;
        if shift > 60 {
            return None;
        }
    }
}

/// A varint holding the sign in its low bit.
fn signed_varint(table: &[u8], at: usize) -> Option<i64> {
    let v = varint(table, at)?;
    let magnitude = (v >> 1) as i64;
    Some(if v & 1 != 0 { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lnotab_adds_the_increments_before_the_offset() {
        // Line 10: bytes 0-5 on 10, 6-9 on 11, 10+ on 9 (a loop's jump back).
        let table = [6, 1, 4, (-2i8) as u8];
        let at = |o| line_at(Format::Lnotab, &table, 10, o);
        assert_eq!(
            (at(0), at(5), at(6), at(9), at(10), at(200)),
            (Some(10), Some(10), Some(11), Some(11), Some(9), Some(9))
        );
        assert_eq!(
            at(-1),
            Some(10),
            "before the first instruction: the first line"
        );
    }

    #[test]
    fn pairs_310_skip_empty_ranges_and_know_no_line() {
        // 4 bytes on line 5+1, a zero-length line jump of +3, 2 bytes on 9, 2 bytes with no line.
        let table = [4, 1, 0, 3, 2, 0, 2, 0x80];
        let r: Vec<Range> = ranges(Format::Pairs310, &table, 5).collect();
        assert_eq!(
            r,
            [
                Range {
                    start: 0,
                    end: 4,
                    line: Some(6)
                },
                Range {
                    start: 4,
                    end: 6,
                    line: Some(9)
                },
                Range {
                    start: 6,
                    end: 8,
                    line: None
                },
            ]
        );
        assert_eq!(
            line_at(Format::Pairs310, &table, 5, 8),
            None,
            "past the table"
        );
    }

    #[test]
    fn location_forms_move_the_line_as_cpython_does() {
        let table = [
            0x80 | (13 << 3) | 1,
            2, // no columns, 2 units, line +1
            0x80 | (11 << 3),
            4,
            8,                    // one line form, 1 unit, line +1, columns
            0x80 | (15 << 3) | 2, // no location, 3 units
            0x80 | (14 << 3),
            3,
            0,
            1,
            1, // long form, 1 unit, line -1
            0x80 | (5 << 3),
            7, // short form, 1 unit, same line
        ];
        let r: Vec<Range> = ranges(Format::Locations, &table, 20).collect();
        assert_eq!(
            r,
            [
                Range {
                    start: 0,
                    end: 4,
                    line: Some(21)
                },
                Range {
                    start: 4,
                    end: 6,
                    line: Some(22)
                },
                Range {
                    start: 6,
                    end: 12,
                    line: None
                },
                Range {
                    start: 12,
                    end: 14,
                    line: Some(21)
                },
                Range {
                    start: 14,
                    end: 16,
                    line: Some(21)
                },
            ]
        );
    }

    #[test]
    fn long_varints_carry_big_jumps() {
        // +300 lines: 600 = 0b1001011000 → groups 0b011000 (with continuation), 0b001001.
        let table = [0x80 | (13 << 3), 0x40 | 0b011000, 0b001001];
        assert_eq!(line_at(Format::Locations, &table, 1, 0), Some(301));
        assert_eq!(
            line_at(Format::Locations, &[0x7f], 1, 0),
            None,
            "no start bit: malformed"
        );
    }
}
