//! Key handling, sorting, filtering and selection, without a terminal.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};

use super::*;
use crate::tui::fixtures::{self, MIB};

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn ch(c: char) -> KeyEvent {
    key(KeyCode::Char(c))
}

fn keys_of(app: &App, snap: &Snapshot) -> Vec<u64> {
    visible_stacks(app, snap).iter().map(|s| s.key).collect()
}

fn selected_key(app: &App, snap: &Snapshot) -> Option<u64> {
    let keys = keys_of(app, snap);
    app.stack_sel.index_in(&keys).map(|i| keys[i])
}

#[test]
fn s_cycles_the_sort_and_each_orders_descending() {
    let snap = fixtures::busy();
    let mut app = App::new();
    assert_eq!(app.sort, SortKey::Outstanding);
    assert_eq!(keys_of(&app, &snap), [1, 2, 3, 4]);
    assert_eq!(app.handle_key(ch('s'), &snap), Intent::Redraw);
    assert_eq!(app.sort, SortKey::Growth);
    // growing, bounded, unknown, shrinking
    assert_eq!(keys_of(&app, &snap), [1, 2, 4, 3]);
    app.handle_key(ch('s'), &snap);
    assert_eq!(app.sort, SortKey::Allocations);
    // alloc rates 10, 20, 30, 0.5 /s
    assert_eq!(keys_of(&app, &snap), [3, 2, 1, 4]);
    app.handle_key(ch('s'), &snap);
    assert_eq!(app.sort, SortKey::Outstanding);
    app.handle_key(ch('g'), &snap);
    assert_eq!(app.sort, SortKey::Growth);
    app.handle_key(ch('a'), &snap);
    assert_eq!(app.sort, SortKey::Allocations);
    app.handle_key(ch('o'), &snap);
    assert_eq!(app.sort, SortKey::Outstanding);
}

#[test]
fn growth_sort_puts_the_fastest_leak_first() {
    let mut snap = fixtures::busy();
    snap.stacks[1].growth = fixtures::growth(GrowthClass::Growing, 2.0 * MIB as f64);
    let app = App {
        sort: SortKey::Growth,
        ..App::new()
    };
    assert_eq!(keys_of(&app, &snap), [2, 1, 4, 3]);
}

#[test]
fn filter_narrows_esc_ends_editing_then_clears() {
    let snap = fixtures::busy();
    let mut app = App::new();
    app.handle_key(ch('/'), &snap);
    assert!(app.editing);
    for c in "CACHE".chars() {
        app.handle_key(ch(c), &snap);
    }
    assert_eq!(app.filter, "CACHE");
    assert_eq!(keys_of(&app, &snap), [2], "case-insensitive function match");
    // While typing, q is text, not quit.
    assert_eq!(app.handle_key(ch('q'), &snap), Intent::Redraw);
    assert!(keys_of(&app, &snap).is_empty());
    app.handle_key(key(KeyCode::Backspace), &snap);
    assert_eq!(app.handle_key(key(KeyCode::Esc), &snap), Intent::Redraw);
    assert!(!app.editing);
    assert_eq!(app.filter, "CACHE", "the first Esc only ends editing");
    assert_eq!(keys_of(&app, &snap), [2]);
    assert_eq!(app.handle_key(key(KeyCode::Esc), &snap), Intent::Redraw);
    assert_eq!(app.filter, "");
    assert_eq!(keys_of(&app, &snap), [1, 2, 3, 4]);
    assert_eq!(app.handle_key(key(KeyCode::Esc), &snap), Intent::Quit);
}

#[test]
fn filter_matches_file_and_module_and_enter_keeps_it() {
    let snap = fixtures::busy();
    let mut app = App::new();
    app.handle_key(ch('/'), &snap);
    for c in "http.c".chars() {
        app.handle_key(ch(c), &snap);
    }
    app.handle_key(key(KeyCode::Enter), &snap);
    assert!(!app.editing);
    assert_eq!(keys_of(&app, &snap), [3]);
    app.filter = "DEMO".to_string();
    assert_eq!(
        keys_of(&app, &snap),
        [1, 2, 3],
        "module match; key 4 has none"
    );
}

#[test]
fn enter_opens_the_selected_stack_and_esc_or_backspace_returns() {
    let snap = fixtures::busy();
    let mut app = App::new();
    app.handle_key(key(KeyCode::Down), &snap);
    assert_eq!(app.handle_key(key(KeyCode::Enter), &snap), Intent::Redraw);
    assert_eq!(app.detail, Some(2));
    assert_eq!(
        detail_stack(&app, &snap).map(|s| s.function.as_str()),
        Some("cache_fill")
    );
    assert_eq!(app.handle_key(key(KeyCode::Esc), &snap), Intent::Redraw);
    assert_eq!(
        app.detail, None,
        "Esc in the detail view goes back, not quit"
    );
    app.handle_key(key(KeyCode::Enter), &snap);
    assert_eq!(app.detail, Some(2));
    // ↓ scrolls the frames, not the table.
    app.handle_key(key(KeyCode::Down), &snap);
    assert_eq!((app.detail_scroll, selected_key(&app, &snap)), (1, Some(2)));
    app.handle_key(key(KeyCode::Backspace), &snap);
    assert_eq!(app.detail, None);
}

#[test]
fn enter_on_an_empty_table_does_nothing() {
    let snap = fixtures::empty();
    let mut app = App::new();
    assert_eq!(app.handle_key(key(KeyCode::Enter), &snap), Intent::None);
    assert_eq!(app.detail, None);
    assert_eq!(app.handle_key(key(KeyCode::Down), &snap), Intent::Redraw);
}

#[test]
fn pause_freezes_the_shown_snapshot_while_new_ones_arrive() {
    let first = fixtures::busy();
    let mut app = App::new();
    assert_eq!(app.handle_key(ch(' '), &first), Intent::Redraw);
    assert!(app.paused());
    let mut newer = fixtures::busy();
    newer.stacks[2].outstanding_bytes = 100 * MIB;
    newer.target.uptime_s = 999.0;
    app.sync(&newer);
    let shown = app.shown(&newer);
    assert_eq!(shown.target.uptime_s, 125.0);
    assert_eq!(keys_of(&app, shown), [1, 2, 3, 4]);
    // Keys act on the frozen snapshot.
    app.handle_key(key(KeyCode::Down), &newer);
    assert_eq!(selected_key(&app, app.shown(&newer)), Some(2));
    app.handle_key(ch(' '), &newer);
    assert!(!app.paused());
    let shown = app.shown(&newer);
    assert_eq!(shown.target.uptime_s, 999.0);
    assert_eq!(keys_of(&app, shown), [3, 1, 2, 4]);
}

#[test]
fn selection_follows_the_stable_key_when_rows_reorder() {
    let snap = fixtures::busy();
    let mut app = App::new();
    app.handle_key(key(KeyCode::Down), &snap);
    assert_eq!(selected_key(&app, &snap), Some(2));
    let mut next = fixtures::busy();
    next.stacks[1].outstanding_bytes = 50 * MIB; // key 2 is now the largest
    app.sync(&next);
    assert_eq!(keys_of(&app, &next), [2, 1, 3, 4]);
    assert_eq!(selected_key(&app, &next), Some(2));
    app.handle_key(key(KeyCode::Enter), &next);
    assert_eq!(app.detail, Some(2));
}

#[test]
fn a_vanished_row_hands_the_selection_to_its_position() {
    let snap = fixtures::busy();
    let mut app = App::new();
    app.handle_key(key(KeyCode::Down), &snap);
    let mut next = fixtures::busy();
    next.stacks.remove(1); // key 2 freed everything
    app.sync(&next);
    assert_eq!(selected_key(&app, &next), Some(3));
    next.stacks.truncate(1);
    app.sync(&next);
    assert_eq!(selected_key(&app, &next), Some(1));
}

#[test]
fn moving_pages_and_ends() {
    let mut snap = fixtures::busy();
    for k in 10..40 {
        snap.stacks.push(fixtures::stack(
            k,
            &[("filler", "f.c:1")],
            1000 - k,
            crate::model::growth::Growth::unknown(),
        ));
    }
    let mut app = App {
        page: 10,
        ..App::new()
    };
    app.handle_key(key(KeyCode::PageDown), &snap);
    assert_eq!(app.stack_sel.index, 10);
    assert_eq!(
        app.stack_sel.offset, 1,
        "the selection stays within the page"
    );
    app.handle_key(key(KeyCode::End), &snap);
    assert_eq!(app.stack_sel.index, 33);
    assert_eq!(selected_key(&app, &snap), Some(39));
    app.handle_key(key(KeyCode::Up), &snap);
    assert_eq!(app.stack_sel.index, 32);
    app.handle_key(key(KeyCode::Home), &snap);
    assert_eq!((app.stack_sel.index, app.stack_sel.offset), (0, 0));
    app.handle_key(key(KeyCode::PageUp), &snap);
    assert_eq!(app.stack_sel.index, 0);
    let wheel = |kind| MouseEvent {
        kind,
        column: 0,
        row: 0,
        modifiers: KeyModifiers::NONE,
    };
    app.handle_mouse(wheel(MouseEventKind::ScrollDown), &snap);
    assert_eq!(app.stack_sel.index, 3);
    app.handle_mouse(wheel(MouseEventKind::ScrollUp), &snap);
    assert_eq!(app.stack_sel.index, 0);
}

#[test]
fn tab_and_digits_switch_panes() {
    let snap = fixtures::busy();
    let mut app = App::new();
    app.handle_key(key(KeyCode::Tab), &snap);
    assert_eq!(app.tab, Tab::Ooms);
    app.handle_key(key(KeyCode::Tab), &snap);
    assert_eq!(app.tab, Tab::Gpu);
    app.handle_key(key(KeyCode::Tab), &snap);
    assert_eq!(app.tab, Tab::Stacks, "no Processes pane outside --all");
    app.handle_key(key(KeyCode::BackTab), &snap);
    assert_eq!(app.tab, Tab::Gpu);
    app.handle_key(ch('2'), &snap);
    assert_eq!(app.tab, Tab::Ooms);
    assert_eq!(app.handle_key(ch('4'), &snap), Intent::None);
    assert_eq!(app.tab, Tab::Ooms);
    app.handle_key(ch('1'), &snap);
    assert_eq!(app.tab, Tab::Stacks);
    let all = fixtures::all_mode();
    app.handle_key(ch('4'), &all);
    assert_eq!(app.tab, Tab::Processes);
    app.handle_key(key(KeyCode::Tab), &all);
    assert_eq!(app.tab, Tab::Stacks);
}

#[test]
fn tab_closes_the_detail_view() {
    let snap = fixtures::busy();
    let mut app = App::new();
    app.handle_key(key(KeyCode::Enter), &snap);
    assert_eq!(app.detail, Some(1));
    app.handle_key(key(KeyCode::Tab), &snap);
    assert_eq!((app.tab, app.detail), (Tab::Ooms, None));
}

#[test]
fn question_mark_toggles_help_and_q_quits() {
    let snap = fixtures::busy();
    let mut app = App::new();
    app.handle_key(ch('?'), &snap);
    assert!(app.help);
    app.handle_key(ch('?'), &snap);
    assert!(!app.help);
    app.handle_key(ch('?'), &snap);
    assert_eq!(app.handle_key(key(KeyCode::Esc), &snap), Intent::Redraw);
    assert!(!app.help, "Esc closes the help without quitting");
    app.handle_key(ch('?'), &snap);
    assert_eq!(app.handle_key(ch('q'), &snap), Intent::Quit);
    let mut app = App::new();
    assert_eq!(app.handle_key(ch('q'), &snap), Intent::Quit);
}

#[test]
fn ctrl_c_quits_even_while_typing_a_filter() {
    let snap = fixtures::busy();
    let mut app = App::new();
    app.handle_key(ch('/'), &snap);
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(app.handle_key(ctrl_c, &snap), Intent::Quit);
}

#[test]
fn key_releases_are_ignored() {
    let snap = fixtures::busy();
    let mut app = App::new();
    let mut release = ch('q');
    release.kind = KeyEventKind::Release;
    assert_eq!(app.handle_key(release, &snap), Intent::None);
}

#[test]
fn enter_on_a_process_shows_only_its_stacks() {
    let snap = fixtures::all_mode();
    let mut app = App::new();
    app.handle_key(ch('4'), &snap);
    let pids: Vec<u32> = visible_processes(&app, &snap)
        .iter()
        .map(|p| p.pid)
        .collect();
    assert_eq!(pids, [1234, 77]);
    app.handle_key(key(KeyCode::Down), &snap);
    app.handle_key(key(KeyCode::Enter), &snap);
    assert_eq!((app.tab, app.pid_filter), (Tab::Stacks, Some(77)));
    assert_eq!(keys_of(&app, &snap), [2]);
    app.handle_key(key(KeyCode::Esc), &snap);
    assert_eq!(app.pid_filter, None);
    assert_eq!(keys_of(&app, &snap), [1, 2, 3, 4]);
}

#[test]
fn processes_leave_with_all_mode() {
    let mut app = App {
        tab: Tab::Processes,
        ..App::new()
    };
    let snap = fixtures::busy();
    assert_eq!(app.tab_for(&snap), Tab::Stacks);
    app.sync(&snap);
    assert_eq!(app.tab, Tab::Stacks);
}
