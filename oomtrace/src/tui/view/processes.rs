//! The Processes pane (`--all` mode): every traced process with its outstanding heap, blocks
//! and growth, sorted like the stacks. Enter on a process shows only its stacks.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table, TableState};

use super::{dim, empty_message, growth_style, heading, selected};
use crate::tui::app::{App, visible_processes};
use crate::tui::format;
use crate::tui::snapshot::Snapshot;

/// Draws the processes table (or why it is empty) into `area`.
pub fn render(frame: &mut Frame, area: Rect, app: &App, snap: &Snapshot) {
    let rows = visible_processes(app, snap);
    if rows.is_empty() {
        let why = if snap.processes.is_empty() {
            "no traced process has allocated yet".to_string()
        } else {
            format!("no process matches \"{}\" (Esc clears the filter)", app.filter)
        };
        empty_message(frame, area, &why);
        return;
    }
    let right = |s: &'static str| Cell::from(Line::from(s).right_aligned());
    let header = Row::new([
        right("pid"),
        Cell::from("command"),
        right("outstanding"),
        right("blocks"),
        Cell::from("growth"),
        Cell::from("state"),
    ])
    .style(heading());
    let total = snap.header.heap_bytes;
    let body = rows.iter().map(|p| {
        let state = match &p.exited {
            Some(e) => Span::styled(e.clone(), dim()),
            None => Span::raw(format!("running, {} of heap", format::percent(p.outstanding_bytes, total))),
        };
        Row::new([
            Cell::from(Line::from(p.pid.to_string()).right_aligned()),
            Cell::from(p.comm.clone()),
            Cell::from(
                Line::from(Span::styled(
                    format::bytes(p.outstanding_bytes),
                    Style::new().add_modifier(Modifier::BOLD),
                ))
                .right_aligned(),
            ),
            Cell::from(Line::from(format::count(p.outstanding_allocs as f64)).right_aligned()),
            Cell::from(Span::styled(
                format::growth(&p.growth),
                growth_style(p.growth.class),
            )),
            Cell::from(state),
        ])
    });
    let widths = [
        Constraint::Length(7),
        Constraint::Length(16),
        Constraint::Length(11),
        Constraint::Length(7),
        Constraint::Length(22),
        Constraint::Fill(1),
    ];
    let pids: Vec<u64> = rows.iter().map(|p| u64::from(p.pid)).collect();
    let mut state = TableState::new()
        .with_offset(app.process_sel.offset)
        .with_selected(app.process_sel.index_in(&pids));
    let table = Table::new(body, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(selected());
    frame.render_stateful_widget(table, area, &mut state);
}
