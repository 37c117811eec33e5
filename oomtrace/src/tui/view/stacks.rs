//! The stacks table: one row per call stack holding memory, the allocation site first.
//!
//! Columns, in the order shown: pid (`--all` only), site (function and `file:line`), module,
//! outstanding, % of the heap, blocks, growth, allocs/s, p50 size. The site, outstanding and
//! growth always show; the others are dropped, lowest priority first (module, p50, alloc rate,
//! pid, blocks, %), until the row fits: a narrow terminal loses columns, never wraps. The column
//! the table is sorted by is never dropped.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table, TableState};

use super::{dim, empty_message, fit, growth_style, heading, selected, window};
use crate::tui::app::{App, SortKey, visible_stacks};
use crate::tui::format;
use crate::tui::snapshot::{Snapshot, StackRow};

/// A column of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// Process id (`--all` mode).
    Pid,
    /// Function and `file:line`.
    Site,
    /// Object of the allocation site.
    Module,
    /// Outstanding bytes.
    Outstanding,
    /// Share of the heap.
    Percent,
    /// Outstanding blocks.
    Blocks,
    /// Growth verdict and rate.
    Growth,
    /// Allocations per second.
    AllocRate,
    /// Median allocation size.
    P50,
}

/// Narrowest the site column may get before other columns are dropped.
const SITE_MIN: u16 = 24;
/// Space between columns.
const SPACING: u16 = 1;

impl Column {
    /// Header text.
    fn title(self) -> &'static str {
        match self {
            Column::Pid => "pid",
            Column::Site => "allocation site",
            Column::Module => "module",
            Column::Outstanding => "outstanding",
            Column::Percent => "%",
            Column::Blocks => "blocks",
            Column::Growth => "growth",
            Column::AllocRate => "allocs/s",
            Column::P50 => "p50 size",
        }
    }

    /// Width of a fixed column (the site takes what is left).
    fn width(self) -> u16 {
        match self {
            Column::Pid => 7,
            Column::Site => SITE_MIN,
            Column::Module => 16,
            Column::Outstanding => 12,
            Column::Percent => 6,
            Column::Blocks => 7,
            Column::Growth => 22,
            Column::AllocRate => 9,
            Column::P50 => 9,
        }
    }
}

/// The columns that fit in `width`, in display order.
pub fn columns(width: u16, sort: SortKey, all_mode: bool) -> Vec<Column> {
    let mut by_priority = vec![
        Column::Site,
        Column::Outstanding,
        Column::Growth,
        Column::Percent,
        Column::Blocks,
    ];
    if all_mode {
        by_priority.push(Column::Pid);
    }
    by_priority.extend([Column::AllocRate, Column::P50, Column::Module]);
    if sort == SortKey::Allocations {
        // The sorted column stays: move it up to the always-shown ones.
        by_priority.retain(|&c| c != Column::AllocRate);
        by_priority.insert(3, Column::AllocRate);
    }
    let mut chosen = Vec::new();
    let mut used = 0u16;
    for c in by_priority {
        let need = c.width() + if chosen.is_empty() { 0 } else { SPACING };
        if chosen.len() >= 3 && used + need > width {
            continue;
        }
        used += need;
        chosen.push(c);
    }
    const ORDER: [Column; 9] = [
        Column::Pid,
        Column::Site,
        Column::Module,
        Column::Outstanding,
        Column::Percent,
        Column::Blocks,
        Column::Growth,
        Column::AllocRate,
        Column::P50,
    ];
    ORDER.into_iter().filter(|c| chosen.contains(c)).collect()
}

/// Draws the stacks table (or why it is empty) into `area`.
pub fn render(frame: &mut Frame, area: Rect, app: &App, snap: &Snapshot) {
    let rows = visible_stacks(app, snap);
    if rows.is_empty() {
        empty_message(frame, area, &empty_reason(app, snap));
        return;
    }
    let cols = columns(area.width, app.sort, snap.all_mode);
    let fixed: u16 = cols
        .iter()
        .filter(|&&c| c != Column::Site)
        .map(|c| c.width() + SPACING)
        .sum();
    let site_w = area.width.saturating_sub(fixed).max(1);
    let total = if snap.header.heap_bytes > 0 {
        snap.header.heap_bytes
    } else {
        snap.stacks.iter().map(|s| s.outstanding_bytes).sum()
    };
    let header = Row::new(cols.iter().map(|&c| {
        let mut title = c.title().to_string();
        if sort_column(app.sort) == c {
            title = format!("▾{title}");
        }
        let line = Line::from(title);
        Cell::from(if is_numeric(c) {
            line.right_aligned()
        } else {
            line
        })
    }))
    .style(heading());
    // Build only the rows on screen: the table may hold thousands.
    let keys: Vec<u64> = rows.iter().map(|s| s.key).collect();
    let selected_row = app.stack_sel.index_in(&keys);
    let height = usize::from(area.height.saturating_sub(1));
    let (start, end) = window(rows.len(), selected_row, app.stack_sel.offset, height);
    let body = rows[start..end]
        .iter()
        .map(|s| Row::new(cols.iter().map(|&c| cell(c, s, total, site_w))));
    let widths = cols.iter().map(|&c| match c {
        Column::Site => Constraint::Min(site_w.min(SITE_MIN)),
        c => Constraint::Length(c.width()),
    });
    let mut state = TableState::new().with_selected(selected_row.map(|i| i - start));
    let table = Table::new(body, widths)
        .header(header)
        .column_spacing(SPACING)
        .row_highlight_style(selected());
    frame.render_stateful_widget(table, area, &mut state);
}

/// Why the table is empty, in plain words.
fn empty_reason(app: &App, snap: &Snapshot) -> String {
    if snap.stacks.is_empty() {
        return match &snap.target.exited {
            Some(e) => format!("{} — no allocation was outstanding", e),
            None => "no allocation seen yet — waiting for the target to allocate".to_string(),
        };
    }
    match (app.filter.is_empty(), app.pid_filter) {
        (false, _) => format!(
            "no stack matches \"{}\" (Esc clears the filter)",
            app.filter
        ),
        (true, Some(pid)) => format!("pid {pid} holds no memory now (Esc shows every process)"),
        (true, None) => "no stack to show".to_string(),
    }
}

/// The column a sort key orders by.
fn sort_column(sort: SortKey) -> Column {
    match sort {
        SortKey::Outstanding => Column::Outstanding,
        SortKey::Growth => Column::Growth,
        SortKey::Allocations => Column::AllocRate,
    }
}

/// True for right-aligned (numeric) columns.
fn is_numeric(c: Column) -> bool {
    matches!(
        c,
        Column::Pid
            | Column::Outstanding
            | Column::Percent
            | Column::Blocks
            | Column::AllocRate
            | Column::P50
    )
}

/// One cell of a stack's row.
fn cell(c: Column, s: &StackRow, total: u64, site_w: u16) -> Cell<'static> {
    let right = |text: String| Cell::from(Line::from(text).right_aligned());
    match c {
        Column::Pid => right(s.pid.to_string()),
        Column::Site => Cell::from(site(s, usize::from(site_w))),
        Column::Module => Cell::from(Span::styled(
            fit(s.module.as_deref().unwrap_or("-"), 16),
            dim(),
        )),
        Column::Outstanding => Cell::from(
            Line::from(Span::styled(
                format::bytes(s.outstanding_bytes),
                Style::new().add_modifier(Modifier::BOLD),
            ))
            .right_aligned(),
        ),
        Column::Percent => right(format::percent(s.outstanding_bytes, total)),
        Column::Blocks => right(format::count(s.outstanding_allocs as f64)),
        Column::Growth => Cell::from(Span::styled(
            format::growth(&s.growth),
            growth_style(s.growth.class),
        )),
        Column::AllocRate => right(format::rate(s.alloc_rate)),
        Column::P50 => right(
            s.sizes
                .map_or_else(|| "-".to_string(), |z| format::bytes(z.p50)),
        ),
    }
}

/// `function  file:line`, cut to `width` with `…`; the location goes first when space is short.
fn site(s: &StackRow, width: usize) -> Line<'static> {
    let func_len = s.function.chars().count();
    match &s.location {
        Some(loc) if func_len + 2 + loc.chars().count() <= width => Line::from(vec![
            Span::raw(s.function.clone()),
            Span::raw("  "),
            Span::styled(loc.clone(), dim()),
        ]),
        Some(loc) if func_len + 3 < width => {
            let rest = width - func_len - 2;
            Line::from(vec![
                Span::raw(s.function.clone()),
                Span::raw("  "),
                Span::styled(fit(loc, rest), dim()),
            ])
        }
        _ => Line::from(fit(&s.function, width)),
    }
}
