//! The header: what is traced and for how long, RSS and heap with a chart of both over time,
//! where the heap is heading (growing stacks, time to the memory limit), the event rate, lost
//! events (red when any) and the tracer's own CPU and memory. An exited target gets a banner.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph};

use super::{alert, dim, growth_style, paused_style};
use crate::model::growth::GrowthClass;
use crate::report::vitals;
use crate::tui::app::{App, visible_processes};
use crate::tui::format;
use crate::tui::snapshot::Snapshot;

/// Colour of the heap line and label.
const HEAP: Color = Color::Cyan;
/// Colour of the RSS line and label.
const RSS: Color = Color::Yellow;

/// Rows the header takes on a screen of size `area`: borders, text lines, and a chart that
/// grows with the screen (none below 16 rows), never more than half the screen.
pub fn height(area: Rect, snap: &Snapshot) -> u16 {
    let text = text_lines(snap);
    let chart = if area.height < 16 {
        0
    } else {
        (area.height.saturating_sub(18) / 3).clamp(3, 12)
    };
    (2 + text + chart)
        .min(area.height / 2)
        .max(3.min(area.height))
}

/// Text lines above the chart.
fn text_lines(snap: &Snapshot) -> u16 {
    2 + u16::from(snap.target.exited.is_some())
        + u16::from(!snap.processes.is_empty())
        + snap.header.notices.len().min(2) as u16
}

/// Draws the header into `area`.
pub fn render(frame: &mut Frame, area: Rect, app: &App, snap: &Snapshot) {
    let t = &snap.target;
    let mut title = vec![
        Span::styled(" oomtrace ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw("· "),
        Span::styled(t.label.clone(), Style::new().add_modifier(Modifier::BOLD)),
        Span::styled(format!(" · up {} ", format::duration(t.uptime_s)), dim()),
    ];
    if t.exited.is_some() {
        title.push(Span::styled("· ended ", dim()));
    }
    let mut block = Block::bordered()
        .border_style(dim())
        .title(Line::from(title))
        .title_bottom(activity_line(snap).right_aligned());
    if app.paused() {
        block = block.title(Line::from(Span::styled(" PAUSED ", paused_style())).right_aligned());
    }
    let inner = block.inner(area);
    frame.render_widget(block, area);

    let mut lines = Vec::new();
    if let Some(exited) = &t.exited {
        lines.push(Line::from(vec![
            Span::styled(format!(" ■ {exited} "), alert()),
            Span::raw(" final state kept on screen; press q to quit"),
        ]));
    }
    lines.push(memory_line(snap, inner.width));
    lines.push(trend_line(snap));
    if let Some(line) = vitals_line(app, snap) {
        lines.push(line);
    }
    for notice in snap.header.notices.iter().take(2) {
        lines.push(Line::from(Span::styled(
            format!("! {notice}"),
            Style::new().fg(Color::Yellow),
        )));
    }
    let text_h = (lines.len() as u16).min(inner.height);
    let [text_area, chart_area] =
        Layout::vertical([Constraint::Length(text_h), Constraint::Min(0)]).areas(inner);
    frame.render_widget(Paragraph::new(lines), text_area);
    if chart_area.height > 0 {
        render_chart(frame, chart_area, snap);
    }
}

/// `pid 1234 (demo): heap ▲ growing 640 KiB/s · RSS ■ bounded · threads ▲ growing 3.0
/// threads/s · fds · unknown`, in the text report's words: the process selected in the
/// Processes pane (`--all`), else the first one traced (the target).
fn vitals_line(app: &App, snap: &Snapshot) -> Option<Line<'static>> {
    let p = if snap.all_mode {
        let rows = visible_processes(app, snap);
        let pids: Vec<u64> = rows.iter().map(|p| u64::from(p.pid)).collect();
        app.process_sel
            .index_in(&pids)
            .map(|i| rows[i])
            .or_else(|| snap.processes.first())?
    } else {
        snap.processes.first()?
    };
    let mut spans = vec![Span::styled(format!("pid {} ({}): ", p.pid, p.comm), dim())];
    for (k, (label, g, unit)) in vitals::parts(&p.vitals).into_iter().enumerate() {
        if k > 0 {
            spans.push(Span::styled(" · ", dim()));
        }
        spans.push(Span::raw(format!("{label} ")));
        spans.push(Span::styled(
            vitals::verdict(g, unit),
            growth_style(g.class),
        ));
    }
    Some(Line::from(spans))
}

/// `RSS 76.0 MiB  heap 11.5 MiB  limit 512 MiB`, and at the right the chart's time span.
fn memory_line(snap: &Snapshot, width: u16) -> Line<'static> {
    let h = &snap.header;
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut spans = vec![
        Span::styled("RSS ", Style::new().fg(RSS)),
        Span::styled(
            h.rss_bytes.map_or_else(|| "-".to_string(), format::bytes),
            bold,
        ),
        Span::styled("  heap ", Style::new().fg(HEAP)),
        Span::styled(format::bytes(h.heap_bytes), bold),
    ];
    if let Some(limit) = h.limit_bytes {
        spans.push(Span::styled(
            format!("  limit {}", format::bytes(limit)),
            dim(),
        ));
    }
    if let (Some(first), Some(last)) = (h.history.first(), h.history.last())
        && h.history.len() >= 2
    {
        let span = format!("chart: last {}", format::duration(last.0 - first.0));
        let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
        let pad = usize::from(width).saturating_sub(used + span.chars().count());
        if pad >= 2 {
            spans.push(Span::raw(" ".repeat(pad)));
            spans.push(Span::styled(span, dim()));
        }
    }
    Line::from(spans)
}

/// Where the heap is heading: `▲ 2 stacks growing, +640 KiB/s · OOM in ~12m`, from the growing
/// stacks' rates and the distance to the limit.
fn trend_line(snap: &Snapshot) -> Line<'static> {
    let h = &snap.header;
    let growing: Vec<f64> = snap
        .stacks
        .iter()
        .filter(|s| s.growth.class == GrowthClass::Growing)
        .map(|s| s.growth.bytes_per_s.max(0.0))
        .collect();
    if growing.is_empty() {
        let text = if snap.stacks.is_empty() {
            "no stack holds memory yet"
        } else {
            "■ no stack is growing"
        };
        return Line::from(Span::styled(text, dim()));
    }
    let rate: f64 = growing.iter().sum();
    let stacks = if growing.len() == 1 {
        "stack"
    } else {
        "stacks"
    };
    let mut spans = vec![Span::styled(
        format!(
            "▲ {} {stacks} growing, +{}",
            growing.len(),
            format::byte_rate(rate)
        ),
        Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    )];
    // No time to OOM for a target that has ended.
    if let (Some(limit), None) = (h.limit_bytes, &snap.target.exited) {
        let used = h.rss_bytes.unwrap_or(h.heap_bytes);
        let (text, soon) = if used >= limit {
            ("at the memory limit".to_string(), true)
        } else {
            let eta = (limit - used) as f64 / rate;
            (
                format!("OOM in ~{} at this rate", format::duration(eta)),
                eta < 600.0,
            )
        };
        let style = if soon {
            alert()
        } else {
            Style::new().fg(Color::Yellow)
        };
        spans.push(Span::raw(" · "));
        spans.push(Span::styled(text, style));
    }
    Line::from(spans)
}

/// `events 12.3k/s  lost 0  tracer 1.5% CPU, 34.0 MiB  bpf 85 ns/call`, lost in red when
/// non-zero. The BPF time is the programs' only (the uprobe trap is not in the kernel's figure).
fn activity_line(snap: &Snapshot) -> Line<'static> {
    let h = &snap.header;
    let lost = if h.lost_events > 0 {
        Span::styled(format!(" lost {} events ", h.lost_events), alert())
    } else {
        Span::styled("lost 0", dim())
    };
    Line::from(vec![
        Span::styled(" events ", dim()),
        Span::raw(format::rate(h.events_per_s)),
        Span::raw("  "),
        lost,
        Span::styled("  tracer ", dim()),
        Span::raw(format!(
            "{:.1}% CPU, {}",
            h.tracer_cpu_pct,
            format::bytes(h.tracer_rss_bytes)
        )),
        Span::raw(
            h.bpf_ns_per_call
                .map(|ns| format!("  bpf {ns:.0} ns/call"))
                .unwrap_or_default(),
        ),
        Span::raw(" "),
    ])
}

/// Heap and RSS over time, braille lines, the y axis labelled 0 and the top.
fn render_chart(frame: &mut Frame, area: Rect, snap: &Snapshot) {
    let hist = &snap.header.history;
    let heap: Vec<(f64, f64)> = hist.iter().map(|&(t, _, h)| (t, h as f64)).collect();
    let rss: Vec<(f64, f64)> = hist
        .iter()
        .filter(|&&(_, r, _)| r > 0)
        .map(|&(t, r, _)| (t, r as f64))
        .collect();
    let t0 = hist.first().map_or(0.0, |p| p.0);
    let t1 = hist.last().map_or(1.0, |p| p.0).max(t0 + 1.0);
    let top = hist.iter().map(|&(_, r, h)| r.max(h)).max().unwrap_or(0);
    let y_max = (top as f64 * 1.05).max(1.0);
    let mut datasets = Vec::new();
    if !rss.is_empty() {
        datasets.push(
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(RSS))
                .data(&rss),
        );
    }
    datasets.push(
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(HEAP))
            .data(&heap),
    );
    let chart = Chart::new(datasets)
        .legend_position(None)
        .x_axis(Axis::default().bounds([t0, t1]))
        .y_axis(
            Axis::default()
                .bounds([0.0, y_max])
                .style(dim())
                .labels([Span::raw("0"), Span::raw(format::bytes(top))]),
        );
    frame.render_widget(chart, area);
    if hist.len() < 2 {
        let msg = Paragraph::new(Span::styled(" collecting samples…", dim()));
        let row = Rect {
            y: area.y + area.height / 2,
            height: 1,
            x: area.x + 10,
            width: area.width.saturating_sub(10),
        };
        frame.render_widget(msg, row);
    }
}
