//! The help overlay (`?`): every key, in a box over the centre of the screen. Any key closes it
//! (`q` still quits).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::{dim, heading};
use crate::tui::app::App;
use crate::tui::snapshot::Snapshot;

/// Every key and what it does, in the order shown.
pub const KEYS: &[(&str, &str)] = &[
    ("Tab  Shift-Tab", "next / previous pane"),
    ("1 2 3 4", "Stacks, OOM events, GPU memory, Processes"),
    ("↑ ↓  j k", "move the selection"),
    ("PgUp PgDn", "move a page"),
    ("Home End", "first / last row"),
    ("mouse wheel", "scroll"),
    ("Enter", "open the stack in full; on a process: its stacks"),
    ("Esc  Backspace", "back from the open stack"),
    ("s", "cycle the sort: outstanding, growth, alloc rate"),
    ("o  g  a", "sort by outstanding / growth / alloc rate"),
    ("/", "filter by function, file or module; Enter or Esc ends"),
    ("Esc", "clear the filter; at top level: quit"),
    ("space", "pause / resume the view (tracing goes on)"),
    ("?", "show / hide this help"),
    ("q  Ctrl-C", "quit"),
];

/// Draws the overlay centred in `area`.
pub fn render(frame: &mut Frame, area: Rect, _app: &App, _snap: &Snapshot) {
    let key_w = KEYS.iter().map(|k| k.0.chars().count()).max().unwrap_or(0);
    let text_w = KEYS.iter().map(|k| k.1.chars().count()).max().unwrap_or(0);
    let width = ((key_w + text_w + 6) as u16).min(area.width);
    let height = (KEYS.len() as u16 + 4).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!(" {k:<key_w$}  "),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::default());
    lines.push(Line::from(Span::styled(" any key closes this help", dim())));
    let block = Block::bordered()
        .title(Span::styled(" keys ", heading()))
        .border_style(dim());
    frame.render_widget(Clear, rect);
    frame.render_widget(Paragraph::new(lines).block(block), rect);
}
