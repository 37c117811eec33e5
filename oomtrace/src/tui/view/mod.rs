//! Drawing: one file per screen, each a pure `render(frame, area, app, snap)` that reads the
//! [`App`] and the [`Snapshot`] and changes neither.
//!
//! [`draw`] lays the screen out: the header (target, figures, heap chart) on top, a tab bar, the
//! current pane, a one-line key hint at the bottom, and the help overlay over everything when
//! open. The same layout function answers [`page_rows`] so that PgUp/PgDn move by what is seen.
//! Colour is kept for meaning: red for growth, loss and OOM, yellow for warnings, dim for
//! secondary text.

pub mod detail;
pub mod gpu;
pub mod header;
pub mod help;
pub mod ooms;
pub mod processes;
pub mod stacks;

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::app::{App, Tab, visible_processes, visible_stacks};
use super::snapshot::Snapshot;
use crate::model::growth::GrowthClass;

/// Where each part of the screen goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Areas {
    /// Header: target, figures, chart.
    pub header: Rect,
    /// Tab bar and the current table's sort/filter.
    pub tabs: Rect,
    /// The current pane.
    pub body: Rect,
    /// Key hints or the filter being typed.
    pub footer: Rect,
}

/// Splits `area` for `snap`.
pub fn layout(area: Rect, snap: &Snapshot) -> Areas {
    let [header, tabs, body, footer] = Layout::vertical([
        Constraint::Length(header::height(area, snap)),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    Areas {
        header,
        tabs,
        body,
        footer,
    }
}

/// Rows of the current table that fit on a screen of size `area` (for paging).
pub fn page_rows(area: Rect, snap: &Snapshot) -> usize {
    usize::from(layout(area, snap).body.height.saturating_sub(1)).max(1)
}

/// Draws the whole screen: the shown snapshot is the frozen one while paused.
pub fn draw(frame: &mut Frame, app: &App, latest: &Snapshot) {
    let snap = app.shown(latest);
    let areas = layout(frame.area(), snap);
    header::render(frame, areas.header, app, snap);
    render_tabs(frame, areas.tabs, app, snap);
    match app.tab_for(snap) {
        Tab::Stacks if app.detail.is_some() => detail::render(frame, areas.body, app, snap),
        Tab::Stacks => stacks::render(frame, areas.body, app, snap),
        Tab::Ooms => ooms::render(frame, areas.body, app, snap),
        Tab::Gpu => gpu::render(frame, areas.body, app, snap),
        Tab::Processes => processes::render(frame, areas.body, app, snap),
    }
    render_footer(frame, areas.footer, app, snap);
    if app.help {
        help::render(frame, frame.area(), app, snap);
    }
}

/// The tab bar: numbered pane titles, the current one highlighted; the table's state at right.
fn render_tabs(frame: &mut Frame, area: Rect, app: &App, snap: &Snapshot) {
    let current = app.tab_for(snap);
    let mut spans = Vec::new();
    for (i, &tab) in Tab::all(snap).iter().enumerate() {
        let oom_count = if tab == Tab::Ooms && !snap.ooms.is_empty() {
            format!(" ({})", snap.ooms.len())
        } else {
            String::new()
        };
        let title = format!(" {} {}{oom_count} ", i + 1, tab.title());
        let style = if tab == current {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else if !oom_count.is_empty() {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        };
        spans.push(Span::styled(title, style));
        spans.push(Span::raw(" "));
    }
    let tabs = Line::from(spans);
    let room = usize::from(area.width).saturating_sub(tabs.width() + 1);
    frame.render_widget(Paragraph::new(tabs), area);
    let mut parts = table_state(app, snap, current);
    while !parts.is_empty() && parts.join(" · ").chars().count() + 1 > room {
        parts.pop();
    }
    if !parts.is_empty() {
        let text = format!("{} ", parts.join(" · "));
        let right = Paragraph::new(Span::styled(text, dim())).alignment(Alignment::Right);
        frame.render_widget(right, area);
    }
}

/// What the table shows, most important first: `filter "foo"`, `pid 12 only`, `sort: growth`,
/// `12 of 340 stacks`.
fn table_state(app: &App, snap: &Snapshot, tab: Tab) -> Vec<String> {
    let (shown, total, what) = match tab {
        Tab::Stacks if app.detail.is_none() => {
            (visible_stacks(app, snap).len(), snap.stacks.len(), "stacks")
        }
        Tab::Processes => (
            visible_processes(app, snap).len(),
            snap.processes.len(),
            "processes",
        ),
        _ => return Vec::new(),
    };
    let mut parts = Vec::new();
    if !app.filter.is_empty() {
        parts.push(format!("filter \"{}\"", app.filter));
    }
    if let (Tab::Stacks, Some(pid)) = (tab, app.pid_filter) {
        parts.push(format!("pid {pid} only"));
    }
    parts.push(format!("sort: {}", app.sort.label()));
    parts.push(if shown == total {
        format!("{total} {what}")
    } else {
        format!("{shown} of {total} {what}")
    });
    parts
}

/// The rows `[start, end)` of a table of `len` rows to build for a viewport of `height` rows:
/// from `offset`, moved just enough to show `selected`, and filling the viewport when it can.
pub fn window(len: usize, selected: Option<usize>, offset: usize, height: usize) -> (usize, usize) {
    let height = height.max(1);
    let mut start = offset.min(len.saturating_sub(height));
    if let Some(sel) = selected {
        if sel < start {
            start = sel;
        } else if sel >= start + height {
            start = sel + 1 - height;
        }
    }
    (start, (start + height).min(len))
}

/// The last line: the filter being typed, or the keys that matter here.
fn render_footer(frame: &mut Frame, area: Rect, app: &App, snap: &Snapshot) {
    let key = |k: &'static str| Span::styled(k, Style::new().add_modifier(Modifier::BOLD));
    let line = if app.editing {
        Line::from(vec![
            key(" / "),
            Span::raw(app.filter.clone()),
            Span::styled("▏", Style::new().add_modifier(Modifier::SLOW_BLINK)),
            Span::styled("   Enter/Esc: done · Esc again clears", dim()),
        ])
    } else {
        let mut hints: Vec<(&str, &str)> = vec![("q", "quit"), ("?", "help")];
        match app.tab_for(snap) {
            Tab::Stacks if app.detail.is_some() => hints.push(("Esc", "back")),
            Tab::Stacks => hints.extend([
                ("↑↓", "move"),
                ("Enter", "open"),
                ("s", "sort"),
                ("/", "filter"),
            ]),
            Tab::Processes => {
                hints.extend([("Enter", "its stacks"), ("s", "sort"), ("/", "filter")])
            }
            Tab::Ooms | Tab::Gpu => hints.push(("↑↓", "scroll")),
        }
        hints.push(("Tab", "pane"));
        hints.push(("space", if app.paused() { "resume" } else { "pause" }));
        let mut spans = Vec::new();
        for (k, what) in hints {
            spans.push(key(if spans.is_empty() { " " } else { "  " }));
            spans.push(key(k));
            spans.push(Span::styled(format!(" {what}"), dim()));
        }
        if app.paused() {
            spans.push(Span::raw("  "));
            spans.push(Span::styled(" PAUSED ", paused_style()));
        }
        Line::from(spans)
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// Dim text for secondary information.
pub fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

/// Column headers.
pub fn heading() -> Style {
    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
}

/// The selected row.
pub fn selected() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

/// The PAUSED marker.
pub fn paused_style() -> Style {
    Style::new()
        .fg(Color::Black)
        .bg(Color::Yellow)
        .add_modifier(Modifier::BOLD)
}

/// Something that needs attention now (lost events, OOM, an exited target).
pub fn alert() -> Style {
    Style::new()
        .fg(Color::White)
        .bg(Color::Red)
        .add_modifier(Modifier::BOLD)
}

/// Colour of a growth verdict.
pub fn growth_style(class: GrowthClass) -> Style {
    match class {
        GrowthClass::Growing => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        GrowthClass::Bounded => Style::new(),
        GrowthClass::Shrinking => Style::new().fg(Color::Green),
        GrowthClass::Unknown => dim(),
    }
}

/// A centred message in an empty pane, saying why it is empty.
pub fn empty_message(frame: &mut Frame, area: Rect, text: &str) {
    if area.height == 0 {
        return;
    }
    let top = area.height.saturating_sub(1) / 2;
    let rect = Rect {
        y: area.y + top.min(2),
        height: area.height - top.min(2),
        ..area
    };
    let p = Paragraph::new(Span::styled(text.to_string(), dim()))
        .alignment(Alignment::Center)
        .wrap(Wrap { trim: true });
    frame.render_widget(p, rect);
}

/// `s` cut to at most `width` characters, with `…` when cut.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests;
