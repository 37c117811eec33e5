//! CSV (RFC 4180): one row per stack, for spreadsheets and scripts.
//!
//! Columns: `pid, outstanding_bytes, outstanding_allocs, allocated_bytes, allocs, failed_allocs`,
//! then the call site's `function, file, line, module`, then the whole `stack`, innermost first,
//! its frames joined by ` <- `. A header row comes first; rows end in CRLF; a field is quoted
//! when it holds a comma, a quote, CR or LF, with quotes doubled. Unknown values are empty.

use std::fmt::Write as _;

use super::Report;
use super::folded::frame_name;
use crate::symbols::Frame;

/// The header row's column names.
pub const COLUMNS: [&str; 11] = [
    "pid",
    "outstanding_bytes",
    "outstanding_allocs",
    "allocated_bytes",
    "allocs",
    "failed_allocs",
    "function",
    "file",
    "line",
    "module",
    "stack",
];

/// Renders `report` as CSV: the header, then one row per stack in the report's order.
pub fn to_csv(report: &Report) -> String {
    let mut out = String::new();
    push_row(&mut out, COLUMNS.iter().map(|c| (*c).to_owned()));
    for st in &report.stacks {
        let site = st.frames.first();
        let text =
            |get: fn(&Frame) -> Option<&String>| site.and_then(get).cloned().unwrap_or_default();
        let stack: Vec<String> = st.frames.iter().map(frame_label).collect();
        push_row(
            &mut out,
            [
                st.pid.to_string(),
                st.outstanding_bytes.to_string(),
                st.outstanding_allocs.to_string(),
                st.allocated_bytes.to_string(),
                st.allocs.to_string(),
                st.failed_allocs.to_string(),
                text(|f| f.function.as_ref()),
                text(|f| f.file.as_ref()),
                site.and_then(|f| f.line)
                    .map(|l| l.to_string())
                    .unwrap_or_default(),
                text(|f| f.module.as_ref()),
                stack.join(" <- "),
            ],
        );
    }
    out
}

/// A frame in the `stack` column: its name, then `(file:line)` where known.
fn frame_label(f: &Frame) -> String {
    let mut s = frame_name(f);
    if let (Some(file), Some(line)) = (&f.file, f.line) {
        let _ = write!(s, " ({file}:{line})");
    }
    s
}

fn push_row(out: &mut String, fields: impl IntoIterator<Item = String>) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_field(out, &field);
    }
    out.push_str("\r\n");
}

fn push_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::folded::tests::{known, report, stack, two_leaks, unknown};

    /// Splits RFC 4180 text into rows of fields (a minimal reader, for checking the writer).
    fn parse(text: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut field)),
                (false, '\r') => {}
                (false, '\n') => {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => field.push(c),
            }
        }
        assert!(
            field.is_empty() && row.is_empty(),
            "text ends mid-row: {text:?}"
        );
        rows
    }

    #[test]
    fn header_and_rows() {
        let text = to_csv(&two_leaks(42, 0));
        let rows = parse(&text);
        assert_eq!(rows.len(), 3, "{text}");
        assert_eq!(rows[0], COLUMNS);
        assert_eq!(
            rows[1],
            [
                "42",
                "10000",
                "10",
                "20000",
                "20",
                "0",
                "leak_a",
                "demo.c",
                "20",
                "demo",
                "leak_a (demo.c:20) <- handle (demo.c:29) <- main (demo.c:37)"
            ]
        );
        assert!(text.ends_with("\r\n"));
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn quotes_commas_and_newlines() {
        let f = known(
            "std::map<int, int>::insert(\"x\")",
            "we\"ird,\nfile.c",
            3,
            0x10,
        );
        let text = to_csv(&report(&[], vec![stack(5, 1, 1, vec![f])]));
        assert!(
            text.contains(",\"std::map<int, int>::insert(\"\"x\"\")\",\"we\"\"ird,\nfile.c\",3,"),
            "{text}"
        );
        let rows = parse(&text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].len(), COLUMNS.len());
        assert_eq!(rows[1][6], "std::map<int, int>::insert(\"x\")");
        assert_eq!(rows[1][7], "we\"ird,\nfile.c");
    }

    #[test]
    fn unknown_and_empty() {
        let text = to_csv(&report(
            &[],
            vec![
                stack(
                    1,
                    u64::MAX,
                    1,
                    vec![unknown(Some("libc.so.6"), 0xff), unknown(None, 1)],
                ),
                stack(2, 0, 0, vec![]),
            ],
        ));
        let rows = parse(&text);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1][1], u64::MAX.to_string());
        assert_eq!(
            rows[1][6..],
            ["", "", "", "libc.so.6", "libc.so.6+0xff <- 0x1"]
        );
        assert_eq!(rows[2][6..], ["", "", "", "", ""]);
        assert_eq!(parse(&to_csv(&report(&[], vec![]))).len(), 1);
    }
}
