//! One stack in full: its allocation site, outstanding bytes and blocks, growth, allocation
//! rate, size and lifetime percentiles, a chart of its outstanding bytes over time, and every
//! frame (scrolled with ↑/↓). Esc or Backspace goes back to the table.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};

use super::{dim, empty_message, growth_style, heading};
use crate::model::growth::GrowthClass;
use crate::tui::app::{App, detail_stack};
use crate::tui::format;
use crate::tui::snapshot::{Snapshot, StackRow};

/// Draws the open stack into `area`.
pub fn render(frame: &mut Frame, area: Rect, app: &App, snap: &Snapshot) {
    let Some(s) = detail_stack(app, snap) else {
        empty_message(
            frame,
            area,
            "this stack holds no memory any more (freed, or its process ended) — Esc goes back",
        );
        return;
    };
    let info = info_lines(s, snap, area.width);
    let frames_h = (s.frames.len() as u16 + 1).max(2);
    let rest = area.height.saturating_sub(info.len() as u16);
    // The chart takes what the frames leave: at least 5 rows (with the caption), at most half the rest or 16.
    let floor = 5.min(rest);
    let chart_h = rest
        .saturating_sub(frames_h)
        .clamp(floor, (rest / 2).min(16).max(floor));
    let [info_area, chart_area, frames_area] = Layout::vertical([
        Constraint::Length(info.len() as u16),
        Constraint::Length(chart_h),
        Constraint::Min(0),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(info), info_area);
    render_chart(frame, chart_area, s);
    render_frames(frame, frames_area, app, s);
}

/// Site, totals, growth, sizes and lifetimes.
fn info_lines(s: &StackRow, snap: &Snapshot, width: u16) -> Vec<Line<'static>> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut site = vec![Span::styled(s.function.clone(), bold)];
    if let Some(loc) = &s.location {
        site.push(Span::raw(format!("  {loc}")));
    }
    if let Some(module) = &s.module {
        site.push(Span::styled(format!("  [{module}]"), dim()));
    }
    site.push(Span::styled(format!("  pid {}", s.pid), dim()));
    let total = snap.header.heap_bytes.max(1);
    let outstanding = Line::from(vec![
        Span::styled("outstanding ", dim()),
        Span::styled(format::bytes(s.outstanding_bytes), bold),
        Span::raw(format!(
            " in {} blocks · {} of heap · ",
            s.outstanding_allocs,
            format::percent(s.outstanding_bytes, total)
        )),
        Span::raw(format!("{} allocations", format::rate(s.alloc_rate))),
    ]);
    let g = &s.growth;
    let mut growth = vec![
        Span::styled("growth ", dim()),
        Span::styled(format::growth(g), growth_style(g.class)),
    ];
    if let (GrowthClass::Growing, Some(for_s)) = (g.class, g.growing_for_s) {
        growth.push(Span::raw(format!(" for {}", format::duration(for_s))));
    }
    if g.class != GrowthClass::Unknown {
        growth.push(Span::styled(
            format!(" (confidence {:.0}%)", g.confidence * 100.0),
            dim(),
        ));
    }
    let sizes = match s.sizes {
        Some(z) => vec![
            Span::styled("sizes ", dim()),
            Span::raw(format!(
                "p50 {}  p90 {}  p99 {}  max {}",
                format::bytes(z.p50),
                format::bytes(z.p90),
                format::bytes(z.p99),
                format::bytes(z.max)
            )),
        ],
        None => vec![Span::styled("sizes: none recorded", dim())],
    };
    let lifetime = match s.lifetime {
        Some(l) => vec![
            Span::styled("lifetime ", dim()),
            Span::raw(format!(
                "p50 {}  p99 {}",
                format::millis(l.p50),
                format::millis(l.p99)
            )),
        ],
        None => vec![Span::styled("lifetime: no block freed yet", dim())],
    };
    let mut lines = vec![Line::from(site), outstanding, Line::from(growth)];
    let sizes_w: usize = sizes.iter().map(|s| s.content.chars().count()).sum();
    let life_w: usize = lifetime.iter().map(|s| s.content.chars().count()).sum();
    if sizes_w + 4 + life_w <= usize::from(width) {
        let mut both = sizes;
        both.push(Span::raw("    "));
        both.extend(lifetime);
        lines.push(Line::from(both));
    } else {
        lines.push(Line::from(sizes));
        lines.push(Line::from(lifetime));
    }
    lines
}

/// This stack's outstanding bytes over time, under a one-line caption.
fn render_chart(frame: &mut Frame, area: Rect, s: &StackRow) {
    if area.height < 3 {
        return;
    }
    let [caption_area, area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let data: Vec<(f64, f64)> = s.history.iter().map(|&(t, v)| (t, v as f64)).collect();
    let t0 = data.first().map_or(0.0, |p| p.0);
    let t1 = data.last().map_or(1.0, |p| p.0).max(t0 + 1.0);
    let top = s.history.iter().map(|p| p.1).max().unwrap_or(0);
    let caption = if data.len() < 2 {
        "outstanding over time: collecting samples…".to_string()
    } else {
        format!("outstanding over the last {}", format::duration(t1 - t0))
    };
    frame.render_widget(
        Paragraph::new(Span::styled(caption, heading())),
        caption_area,
    );
    let color = if s.growth.class == GrowthClass::Growing {
        Color::Red
    } else {
        Color::Cyan
    };
    let chart = Chart::new(vec![
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(color))
            .data(&data),
    ])
    .legend_position(None)
    .x_axis(Axis::default().bounds([t0, t1]))
    .y_axis(
        Axis::default()
            .bounds([0.0, (top as f64 * 1.05).max(1.0)])
            .style(dim())
            .labels([Span::raw("0"), Span::raw(format::bytes(top))]),
    );
    frame.render_widget(chart, area);
}

/// Every frame, numbered from the allocation site, from `app.detail_scroll` on.
fn render_frames(frame: &mut Frame, area: Rect, app: &App, s: &StackRow) {
    if area.height == 0 {
        return;
    }
    let skip = app.detail_scroll.min(s.frames.len().saturating_sub(1));
    let mut lines = vec![Line::from(Span::styled(
        format!("frames ({})", s.frames.len()),
        heading(),
    ))];
    if s.frames.is_empty() {
        lines.push(Line::from(Span::styled("  no frames recorded", dim())));
    }
    for (i, f) in s.frames.iter().enumerate().skip(skip) {
        let mut spans = vec![
            Span::styled(format!("{i:>3}  "), dim()),
            Span::raw(f.function.clone()),
        ];
        if let Some(loc) = &f.location {
            spans.push(Span::raw(format!("  {loc}")));
        }
        if let Some(module) = &f.module {
            spans.push(Span::styled(format!("  [{module}]"), dim()));
        }
        lines.push(Line::from(spans));
    }
    frame.render_widget(Paragraph::new(lines), area);
}
