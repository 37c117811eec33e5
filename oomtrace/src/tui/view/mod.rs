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

use super::app::{App, Tab};
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
        let mut title = format!(" {} {} ", i + 1, tab.title());
        if tab == Tab::Ooms && !snap.ooms.is_empty() {
            title = format!(" {} {} ({}) ", i + 1, tab.title(), snap.ooms.len());
        }
        let style = if tab == current {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else if tab == Tab::Ooms && !snap.ooms.is_empty() {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        };
        spans.push(Span::styled(title, style));
        spans.push(Span::raw(" "));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
    let state = table_state(app, snap, current);
    if !state.is_empty() {
        let used: u16 = Tab::all(snap)
            .iter()
            .enumerate()
            .map(|(i, t)| t.title().len() as u16 + 5 + u16::from(i > 8))
            .sum();
        if area.width > used + state.chars().count() as u16 {
            let right = Paragraph::new(Span::styled(state, dim())).alignment(Alignment::Right);
            frame.render_widget(right, area);
        }
    }
}

/// "sorted by growth · filter "foo" · pid 12" for the table panes.
fn table_state(app: &App, snap: &Snapshot, tab: Tab) -> String {
    if !matches!(tab, Tab::Stacks | Tab::Processes) || app.detail.is_some() {
        return String::new();
    }
    let mut parts = vec![format!("sort: {}", app.sort.label())];
    if !app.filter.is_empty() {
        parts.push(format!("filter: \"{}\"", app.filter));
    }
    if let (Tab::Stacks, Some(pid)) = (tab, app.pid_filter) {
        parts.push(format!("pid {pid} only"));
    }
    let _ = snap;
    format!("{} ", parts.join(" · "))
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
            Tab::Stacks => {
                hints.extend([("↑↓", "move"), ("Enter", "open"), ("s", "sort"), ("/", "filter")])
            }
            Tab::Processes => hints.extend([("Enter", "its stacks"), ("s", "sort"), ("/", "filter")]),
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
