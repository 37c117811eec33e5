//! The Processes pane (`--all` mode): every traced process with its outstanding heap, blocks
//! and growth, sorted like the stacks. Enter on a process shows only its stacks.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table, TableState};

use super::{dim, empty_message, growth_style, heading, selected, window};
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
            format!(
                "no process matches \"{}\" (Esc clears the filter)",
                app.filter
            )
        };
        empty_message(frame, area, &why);
        return;
    }
    // pid, command, outstanding, growth and state always; blocks and % when there is room.
    let wide = area.width >= 96;
    let right = |s: &'static str| Cell::from(Line::from(s).right_aligned());
    let mut titles = vec![right("pid"), Cell::from("command"), right("outstanding")];
    if wide {
        titles.extend([right("%"), right("blocks")]);
    }
    titles.extend([Cell::from("growth"), Cell::from("state")]);
    let header = Row::new(titles).style(heading());
    let total = snap.header.heap_bytes;
    let pids: Vec<u64> = rows.iter().map(|p| u64::from(p.pid)).collect();
    let selected_row = app.process_sel.index_in(&pids);
    let height = usize::from(area.height.saturating_sub(1));
    let (start, end) = window(rows.len(), selected_row, app.process_sel.offset, height);
    let body = rows[start..end].iter().map(|p| {
        let state = match &p.exited {
            Some(e) => Span::styled(e.clone(), dim()),
            None => Span::raw("running"),
        };
        let mut cells = vec![
            Cell::from(Line::from(p.pid.to_string()).right_aligned()),
            Cell::from(p.comm.clone()),
            Cell::from(
                Line::from(Span::styled(
                    format::bytes(p.outstanding_bytes),
                    Style::new().add_modifier(Modifier::BOLD),
                ))
                .right_aligned(),
            ),
        ];
        if wide {
            cells.push(Cell::from(
                Line::from(format::percent(p.outstanding_bytes, total)).right_aligned(),
            ));
            cells.push(Cell::from(
                Line::from(format::count(p.outstanding_allocs as f64)).right_aligned(),
            ));
        }
        cells.push(Cell::from(Span::styled(
            format::growth(&p.growth),
            growth_style(p.growth.class),
        )));
        cells.push(Cell::from(state));
        Row::new(cells)
    });
    let mut widths = vec![
        Constraint::Length(7),
        Constraint::Fill(1),
        Constraint::Length(11),
    ];
    if wide {
        widths.extend([Constraint::Length(6), Constraint::Length(7)]);
    }
    widths.extend([Constraint::Length(22), Constraint::Length(17)]);
    let mut state = TableState::new().with_selected(selected_row.map(|i| i - start));
    let table = Table::new(body, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(selected());
    frame.render_stateful_widget(table, area, &mut state);
}
