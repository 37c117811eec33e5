//! The OOM events pane: every OOM kill seen since tracing started, newest first: when, the
//! victim (pid, command), its anonymous RSS, the memory cgroup whose limit was hit, and the
//! function of its largest stack when it was traced.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table, TableState};

use super::{dim, empty_message, heading};
use crate::tui::app::App;
use crate::tui::format;
use crate::tui::snapshot::Snapshot;

/// Draws the OOM table (or why it is empty) into `area`.
pub fn render(frame: &mut Frame, area: Rect, app: &App, snap: &Snapshot) {
    if snap.ooms.is_empty() {
        empty_message(frame, area, "no OOM kill seen since start");
        return;
    }
    let header = Row::new([
        Cell::from("at"),
        Cell::from(Line::from("pid").right_aligned()),
        Cell::from("command"),
        Cell::from(Line::from("anon RSS").right_aligned()),
        Cell::from("cgroup"),
        Cell::from("top stack"),
    ])
    .style(heading());
    let rows = snap.ooms.iter().rev().map(|o| {
        Row::new([
            Cell::from(format!("+{}", format::duration(o.time_s))),
            Cell::from(Line::from(o.pid.to_string()).right_aligned()),
            Cell::from(Span::styled(
                o.comm.clone(),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            )),
            Cell::from(Line::from(format::bytes(o.anon_rss_bytes)).right_aligned()),
            Cell::from(Span::styled(o.cgroup.clone().unwrap_or("-".into()), dim())),
            Cell::from(
                o.top_function
                    .clone()
                    .unwrap_or_else(|| "(not traced)".into()),
            ),
        ])
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(15),
        Constraint::Length(9),
        Constraint::Fill(1),
        Constraint::Fill(1),
    ];
    let mut state = TableState::new().with_offset(app.ooms_scroll);
    let table = Table::new(rows, widths).header(header).column_spacing(1);
    frame.render_stateful_widget(table, area, &mut state);
}
