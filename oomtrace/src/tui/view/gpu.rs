//! The GPU/driver memory pane: DRM devices (VRAM and GTT used of total, and what no client
//! holds: *unattributed*, the sign of a driver leak on an APU), then DRM clients with the
//! processes holding them and their resident memory per region, largest first.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

use super::{dim, empty_message, fit, heading};
use crate::tui::app::App;
use crate::tui::format;
use crate::tui::snapshot::{GpuClientRow, GpuDeviceRow, GpuPane, Snapshot};

/// Draws the GPU pane (or why it is empty) into `area`.
pub fn render(frame: &mut Frame, area: Rect, app: &App, snap: &Snapshot) {
    let (devices, clients) = match &snap.gpu {
        GpuPane::Absent(why) => {
            empty_message(frame, area, why);
            return;
        }
        GpuPane::Devices { devices, clients } => (devices, clients),
    };
    if devices.is_empty() && clients.is_empty() {
        empty_message(frame, area, "GPU: no DRM devices found");
        return;
    }
    let warnings: Vec<Line> = devices.iter().filter_map(warning).collect();
    let dev_h = devices.len() as u16 + 1;
    let [dev_area, warn_area, _, client_area] = Layout::vertical([
        Constraint::Length(dev_h),
        Constraint::Length(warnings.len() as u16),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(area);
    render_devices(frame, dev_area, devices);
    frame.render_widget(Paragraph::new(warnings), warn_area);
    render_clients(frame, client_area, app, clients);
}

/// `used / total`, `-` parts where unknown.
fn used_of(used: Option<u64>, total: Option<u64>) -> String {
    match (used, total) {
        (None, None) => "-".to_string(),
        (u, t) => format!(
            "{} / {}",
            u.map_or_else(|| "?".to_string(), format::bytes),
            t.map_or_else(|| "?".to_string(), format::bytes)
        ),
    }
}

/// The devices table.
fn render_devices(frame: &mut Frame, area: Rect, devices: &[GpuDeviceRow]) {
    let header = Row::new([
        "card",
        "driver",
        "VRAM used/total",
        "GTT used/total",
        "unattributed",
    ])
    .style(heading());
    let rows = devices.iter().map(|d| {
        let mut parts = Vec::new();
        if let Some(g) = d.unattributed_gtt.filter(|&g| g > 0) {
            parts.push(format!("gtt {}", format::bytes(g)));
        }
        if let Some(v) = d.unattributed_vram.filter(|&v| v > 0) {
            parts.push(format!("vram {}", format::bytes(v)));
        }
        let unattributed = if parts.is_empty() {
            Span::styled("none", dim())
        } else {
            Span::styled(
                parts.join(" · "),
                Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            )
        };
        Row::new([
            Cell::from(d.card.clone()),
            Cell::from(d.driver.clone().unwrap_or_else(|| "-".into())),
            Cell::from(used_of(d.vram_used, d.vram_total)),
            Cell::from(used_of(d.gtt_used, d.gtt_total)),
            Cell::from(unattributed),
        ])
    });
    let widths = [
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(19),
        Constraint::Length(19),
        Constraint::Fill(1),
    ];
    frame.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        area,
    );
}

/// A line explaining a device's unattributed GTT, when there is any.
fn warning(d: &GpuDeviceRow) -> Option<Line<'static>> {
    let g = d.unattributed_gtt.filter(|&g| g > 0)?;
    Some(Line::from(vec![
        Span::styled("! ", Style::new().fg(Color::Yellow)),
        Span::raw(format!(
            "{}: {} of GTT is held by no process: driver-internal or leaked",
            d.card,
            format::bytes(g)
        )),
    ]))
}

/// The clients table, largest resident first, scrolled by `app.gpu_scroll`.
fn render_clients(frame: &mut Frame, area: Rect, app: &App, clients: &[GpuClientRow]) {
    if clients.is_empty() {
        empty_message(frame, area, "no process has a DRM client open");
        return;
    }
    let mut sorted: Vec<&GpuClientRow> = clients.iter().collect();
    let total = |c: &GpuClientRow| c.resident.iter().map(|r| r.1).sum::<u64>();
    sorted.sort_by(|a, b| total(b).cmp(&total(a)).then(a.pids.cmp(&b.pids)));
    let header = Row::new(["pids", "command", "device", "resident"]).style(heading());
    let rows = sorted.iter().map(|c| {
        let pids: Vec<String> = c.pids.iter().map(u32::to_string).collect();
        let resident: Vec<String> = c
            .resident
            .iter()
            .map(|(region, b)| format!("{region} {}", format::bytes(*b)))
            .collect();
        Row::new([
            Cell::from(fit(&pids.join(","), 14)),
            Cell::from(fit(&c.comms.join(","), 16)),
            Cell::from(Span::styled(format!("{} {}", c.device, c.driver), dim())),
            Cell::from(if resident.is_empty() {
                "-".to_string()
            } else {
                resident.join(" · ")
            }),
        ])
    });
    let widths = [
        Constraint::Length(14),
        Constraint::Length(16),
        Constraint::Length(14),
        Constraint::Fill(1),
    ];
    let mut state = TableState::new().with_offset(app.gpu_scroll);
    let table = Table::new(rows, widths).header(header).column_spacing(1);
    frame.render_stateful_widget(table, area, &mut state);
}
