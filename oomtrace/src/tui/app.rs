//! UI state and input handling: which pane is shown, how the stacks are sorted and filtered,
//! what is selected, whether the view is paused. No drawing and no I/O happen here.
//!
//! [`App::handle_key`] and [`App::handle_mouse`] turn input into state changes and return an
//! [`Intent`] for the event loop. What a table shows is computed by pure functions
//! ([`visible_stacks`], [`visible_processes`]) from the `App` and a [`Snapshot`], so the views
//! and the tests agree on it. Selections are held by a stable key (the stack's key, the
//! process's pid), so they follow their row when the rows reorder between snapshots; if the row
//! disappears the selection stays at the same position.

use std::cmp::Ordering;
use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind};

use super::snapshot::{ProcessRow, Snapshot, StackRow};
use crate::model::growth::{Growth, GrowthClass};

/// A pane of the TUI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    /// The stacks table (and the detail of one stack).
    Stacks,
    /// OOM kills seen.
    Ooms,
    /// GPU/driver memory.
    Gpu,
    /// Traced processes (`--all` mode only).
    Processes,
}

impl Tab {
    /// The title shown in the tab bar.
    pub fn title(self) -> &'static str {
        match self {
            Tab::Stacks => "Stacks",
            Tab::Ooms => "OOM events",
            Tab::Gpu => "GPU memory",
            Tab::Processes => "Processes",
        }
    }

    /// The panes that exist for a snapshot, in tab order.
    pub fn all(snap: &Snapshot) -> &'static [Tab] {
        if snap.all_mode {
            &[Tab::Stacks, Tab::Ooms, Tab::Gpu, Tab::Processes]
        } else {
            &[Tab::Stacks, Tab::Ooms, Tab::Gpu]
        }
    }
}

/// How the stacks (and processes) are ordered; every order is descending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// Outstanding bytes.
    Outstanding,
    /// Growth: growing stacks first, fastest first; shrinking last.
    Growth,
    /// Allocation rate (processes: outstanding blocks).
    Allocations,
}

impl SortKey {
    /// The next order for the `s` key.
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Outstanding => SortKey::Growth,
            SortKey::Growth => SortKey::Allocations,
            SortKey::Allocations => SortKey::Outstanding,
        }
    }

    /// The name shown in the table title.
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Outstanding => "outstanding",
            SortKey::Growth => "growth",
            SortKey::Allocations => "alloc rate",
        }
    }
}

/// What the event loop should do after an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Nothing changed.
    None,
    /// Leave the TUI.
    Quit,
    /// The state changed: draw again.
    Redraw,
}

/// A selected row, held by its stable key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Key of the selected row; `None` selects the first.
    pub key: Option<u64>,
    /// Where the row was last seen, used when it disappears.
    pub index: usize,
    /// First row shown.
    pub offset: usize,
}

impl Selection {
    /// Position of the selection among `keys`: the row with its key, else the same position
    /// (clamped); `None` when there are no rows.
    pub fn index_in(&self, keys: &[u64]) -> Option<usize> {
        if keys.is_empty() {
            return None;
        }
        let found = self.key.and_then(|k| keys.iter().position(|&x| x == k));
        Some(found.unwrap_or(self.index.min(keys.len() - 1)))
    }

    /// Moves by `delta` rows (clamped) and keeps the row within a `page` of rows from `offset`.
    fn move_by(&mut self, keys: &[u64], delta: isize, page: usize) {
        let Some(cur) = self.index_in(keys) else {
            return;
        };
        let new = cur.saturating_add_signed(delta).min(keys.len() - 1);
        self.select(keys, new, page);
    }

    /// Selects row `new` of `keys`.
    fn select(&mut self, keys: &[u64], new: usize, page: usize) {
        self.key = keys.get(new).copied();
        self.index = new;
        let page = page.max(1);
        if new < self.offset {
            self.offset = new;
        } else if new >= self.offset + page {
            self.offset = new + 1 - page;
        }
    }

    /// Re-anchors the key after the rows changed: a vanished row hands the selection to the
    /// row now at its position.
    fn sync(&mut self, keys: &[u64]) {
        if let Some(i) = self.index_in(keys) {
            self.key = Some(keys[i]);
            self.index = i;
        }
    }
}

/// The TUI's state; everything else is in the [`Snapshot`].
#[derive(Clone, Debug)]
pub struct App {
    /// The pane shown.
    pub tab: Tab,
    /// Order of the stacks and processes tables.
    pub sort: SortKey,
    /// Text filter: a stack is shown when its function, location or module contains it
    /// (case-insensitive); a process when its command or pid does.
    pub filter: String,
    /// True while the filter is being typed.
    pub editing: bool,
    /// Only stacks of this process (chosen in the Processes pane).
    pub pid_filter: Option<u32>,
    /// Selected stack.
    pub stack_sel: Selection,
    /// Selected process (key: pid).
    pub process_sel: Selection,
    /// First row shown in the OOM pane.
    pub ooms_scroll: usize,
    /// First line shown in the GPU pane.
    pub gpu_scroll: usize,
    /// Key of the stack shown in full, when one is open.
    pub detail: Option<u64>,
    /// First frame shown in the detail view.
    pub detail_scroll: usize,
    /// While paused, the snapshot that stays on screen.
    pub frozen: Option<Arc<Snapshot>>,
    /// True while the help overlay is shown.
    pub help: bool,
    /// Rows in one page of the current table (set by the event loop from the terminal size).
    pub page: usize,
}

impl Default for App {
    fn default() -> Self {
        App {
            tab: Tab::Stacks,
            sort: SortKey::Outstanding,
            filter: String::new(),
            editing: false,
            pid_filter: None,
            stack_sel: Selection::default(),
            process_sel: Selection::default(),
            ooms_scroll: 0,
            gpu_scroll: 0,
            detail: None,
            detail_scroll: 0,
            frozen: None,
            help: false,
            page: 10,
        }
    }
}

impl App {
    /// A fresh state: the Stacks pane, sorted by outstanding bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// The snapshot to draw: the frozen one while paused, else `latest`.
    pub fn shown<'a>(&'a self, latest: &'a Snapshot) -> &'a Snapshot {
        self.frozen.as_deref().unwrap_or(latest)
    }

    /// True while paused.
    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    /// The pane to draw for `snap` (Processes falls back to Stacks outside `--all` mode).
    pub fn tab_for(&self, snap: &Snapshot) -> Tab {
        if Tab::all(snap).contains(&self.tab) {
            self.tab
        } else {
            Tab::Stacks
        }
    }

    /// Re-anchors selections after a new snapshot arrived (no-op while paused).
    pub fn sync(&mut self, latest: &Snapshot) {
        if self.paused() {
            return;
        }
        self.tab = self.tab_for(latest);
        let keys = stack_keys(self, latest);
        self.stack_sel.sync(&keys);
        let keys = process_keys(self, latest);
        self.process_sel.sync(&keys);
    }

    /// Applies one key press; `latest` is the newest snapshot (the frozen one is used instead
    /// while paused).
    pub fn handle_key(&mut self, key: KeyEvent, latest: &Snapshot) -> Intent {
        if key.kind == KeyEventKind::Release {
            return Intent::None;
        }
        let frozen = self.frozen.clone();
        let snap = frozen.as_deref().unwrap_or(latest);
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return Intent::Quit;
        }
        if self.help {
            if key.code == KeyCode::Char('q') {
                return Intent::Quit;
            }
            self.help = false;
            return Intent::Redraw;
        }
        if self.editing {
            return self.edit_filter(key, snap);
        }
        match key.code {
            KeyCode::Char('q') => return Intent::Quit,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char(' ') => self.toggle_pause(latest),
            KeyCode::Tab => self.cycle_tab(snap, 1),
            KeyCode::BackTab => self.cycle_tab(snap, -1),
            KeyCode::Char(c @ '1'..='4') => {
                let tabs = Tab::all(snap);
                let Some(&tab) = tabs.get(usize::from(c as u8 - b'1')) else {
                    return Intent::None;
                };
                self.switch_to(tab);
            }
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('o') => self.sort = SortKey::Outstanding,
            KeyCode::Char('g') => self.sort = SortKey::Growth,
            KeyCode::Char('a') => self.sort = SortKey::Allocations,
            KeyCode::Char('/') => {
                if !matches!(self.tab_for(snap), Tab::Stacks | Tab::Processes) {
                    self.switch_to(Tab::Stacks);
                }
                self.detail = None;
                self.editing = true;
            }
            KeyCode::Esc | KeyCode::Backspace if self.detail.is_some() => self.detail = None,
            KeyCode::Esc => {
                if !self.filter.is_empty() {
                    self.filter.clear();
                } else if self.pid_filter.is_some() {
                    self.pid_filter = None;
                } else {
                    return Intent::Quit;
                }
            }
            KeyCode::Enter => return self.enter(snap),
            _ => return self.navigate(key.code, snap),
        }
        Intent::Redraw
    }

    /// Applies a mouse event: the wheel scrolls the current list.
    pub fn handle_mouse(&mut self, ev: MouseEvent, latest: &Snapshot) -> Intent {
        let frozen = self.frozen.clone();
        let snap = frozen.as_deref().unwrap_or(latest);
        match ev.kind {
            MouseEventKind::ScrollDown => self.scroll(snap, 3),
            MouseEventKind::ScrollUp => self.scroll(snap, -3),
            _ => Intent::None,
        }
    }

    /// Keys while the filter is typed.
    fn edit_filter(&mut self, key: KeyEvent, snap: &Snapshot) -> Intent {
        match key.code {
            KeyCode::Enter | KeyCode::Esc => self.editing = false,
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.filter.clear();
            }
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.filter.push(c);
            }
            code => return self.navigate(code, snap),
        }
        Intent::Redraw
    }

    /// Pauses on the snapshot shown, or resumes.
    fn toggle_pause(&mut self, latest: &Snapshot) {
        self.frozen = match self.frozen {
            Some(_) => None,
            None => Some(Arc::new(latest.clone())),
        };
    }

    /// Moves `step` panes along the tab bar, wrapping.
    fn cycle_tab(&mut self, snap: &Snapshot, step: isize) {
        let tabs = Tab::all(snap);
        let cur = tabs
            .iter()
            .position(|&t| t == self.tab_for(snap))
            .unwrap_or(0);
        let next = (cur as isize + step).rem_euclid(tabs.len() as isize) as usize;
        self.switch_to(tabs[next]);
    }

    /// Shows `tab`, closing the detail view.
    fn switch_to(&mut self, tab: Tab) {
        self.tab = tab;
        self.detail = None;
    }

    /// Enter: open the selected stack, or show the selected process's stacks.
    fn enter(&mut self, snap: &Snapshot) -> Intent {
        match self.tab_for(snap) {
            Tab::Stacks if self.detail.is_none() => {
                let rows = visible_stacks(self, snap);
                let keys: Vec<u64> = rows.iter().map(|r| r.key).collect();
                let Some(i) = self.stack_sel.index_in(&keys) else {
                    return Intent::None;
                };
                self.stack_sel.key = Some(keys[i]);
                self.detail = Some(keys[i]);
                self.detail_scroll = 0;
            }
            Tab::Processes => {
                let keys = process_keys(self, snap);
                let Some(i) = self.process_sel.index_in(&keys) else {
                    return Intent::None;
                };
                self.pid_filter = u32::try_from(keys[i]).ok();
                self.filter.clear();
                self.stack_sel = Selection::default();
                self.switch_to(Tab::Stacks);
            }
            _ => return Intent::None,
        }
        Intent::Redraw
    }

    /// Arrow keys, paging, Home/End.
    fn navigate(&mut self, code: KeyCode, snap: &Snapshot) -> Intent {
        let page = self.page.max(1) as isize;
        let delta = match code {
            KeyCode::Up | KeyCode::Char('k') => -1,
            KeyCode::Down | KeyCode::Char('j') => 1,
            KeyCode::PageUp => -page,
            KeyCode::PageDown => page,
            KeyCode::Home => isize::MIN / 2,
            KeyCode::End => isize::MAX / 2,
            _ => return Intent::None,
        };
        self.scroll(snap, delta)
    }

    /// Moves the selection (or the scroll position) of the current list by `delta`.
    fn scroll(&mut self, snap: &Snapshot, delta: isize) -> Intent {
        let page = self.page;
        let shift = |v: usize, max: usize| v.saturating_add_signed(delta).min(max);
        match self.tab_for(snap) {
            Tab::Stacks if self.detail.is_some() => {
                let frames = detail_stack(self, snap).map_or(0, |s| s.frames.len());
                self.detail_scroll = shift(self.detail_scroll, frames.saturating_sub(1));
            }
            Tab::Stacks => {
                let keys = stack_keys(self, snap);
                self.stack_sel.move_by(&keys, delta, page);
            }
            Tab::Processes => {
                let keys = process_keys(self, snap);
                self.process_sel.move_by(&keys, delta, page);
            }
            Tab::Ooms => {
                self.ooms_scroll = shift(self.ooms_scroll, snap.ooms.len().saturating_sub(1));
            }
            Tab::Gpu => {
                let lines = match &snap.gpu {
                    super::snapshot::GpuPane::Absent(_) => 0,
                    super::snapshot::GpuPane::Devices { devices, clients } => {
                        devices.len() + clients.len()
                    }
                };
                self.gpu_scroll = shift(self.gpu_scroll, lines);
            }
        }
        Intent::Redraw
    }
}

/// The stacks the Stacks pane shows, in order: the pid filter and text filter applied, sorted
/// by the current key (ties by outstanding bytes, then key, so the order is stable).
pub fn visible_stacks<'a>(app: &App, snap: &'a Snapshot) -> Vec<&'a StackRow> {
    let needle = app.filter.to_lowercase();
    let mut rows: Vec<&StackRow> = snap
        .stacks
        .iter()
        .filter(|s| app.pid_filter.is_none_or(|p| s.pid == p))
        .filter(|s| needle.is_empty() || stack_matches(s, &needle))
        .collect();
    rows.sort_by(|a, b| {
        let primary = match app.sort {
            SortKey::Outstanding => Ordering::Equal,
            SortKey::Growth => growth_order(&b.growth, &a.growth),
            SortKey::Allocations => b.alloc_rate.total_cmp(&a.alloc_rate),
        };
        primary
            .then(b.outstanding_bytes.cmp(&a.outstanding_bytes))
            .then(a.key.cmp(&b.key))
    });
    rows
}

/// The processes the Processes pane shows, filtered by text and sorted like the stacks.
pub fn visible_processes<'a>(app: &App, snap: &'a Snapshot) -> Vec<&'a ProcessRow> {
    let needle = app.filter.to_lowercase();
    let mut rows: Vec<&ProcessRow> = snap
        .processes
        .iter()
        .filter(|p| {
            needle.is_empty()
                || p.comm.to_lowercase().contains(&needle)
                || p.pid.to_string().contains(&needle)
        })
        .collect();
    rows.sort_by(|a, b| {
        let primary = match app.sort {
            SortKey::Outstanding => Ordering::Equal,
            SortKey::Growth => growth_order(&b.growth, &a.growth),
            SortKey::Allocations => b.outstanding_allocs.cmp(&a.outstanding_allocs),
        };
        primary
            .then(b.outstanding_bytes.cmp(&a.outstanding_bytes))
            .then(a.pid.cmp(&b.pid))
    });
    rows
}

/// The stack open in the detail view, if it is still in `snap`.
pub fn detail_stack<'a>(app: &App, snap: &'a Snapshot) -> Option<&'a StackRow> {
    let key = app.detail?;
    snap.stacks.iter().find(|s| s.key == key)
}

/// Keys of the visible stacks, in order.
fn stack_keys(app: &App, snap: &Snapshot) -> Vec<u64> {
    visible_stacks(app, snap).iter().map(|s| s.key).collect()
}

/// Pids of the visible processes, in order, as selection keys.
fn process_keys(app: &App, snap: &Snapshot) -> Vec<u64> {
    visible_processes(app, snap)
        .iter()
        .map(|p| u64::from(p.pid))
        .collect()
}

/// True when the stack's function, location or module contains `needle` (lowercase).
fn stack_matches(s: &StackRow, needle: &str) -> bool {
    let has = |t: &str| t.to_lowercase().contains(needle);
    has(&s.function)
        || s.location.as_deref().is_some_and(has)
        || s.module.as_deref().is_some_and(has)
}

/// Orders growth verdicts: growing (by rate), bounded, unknown, shrinking (slowest first).
fn growth_order(a: &Growth, b: &Growth) -> Ordering {
    let rank = |g: &Growth| match g.class {
        GrowthClass::Growing => 3,
        GrowthClass::Bounded => 2,
        GrowthClass::Unknown => 1,
        GrowthClass::Shrinking => 0,
    };
    rank(a).cmp(&rank(b)).then_with(|| match a.class {
        GrowthClass::Growing => a.bytes_per_s.total_cmp(&b.bytes_per_s),
        GrowthClass::Shrinking => b.bytes_per_s.abs().total_cmp(&a.bytes_per_s.abs()),
        _ => Ordering::Equal,
    })
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
