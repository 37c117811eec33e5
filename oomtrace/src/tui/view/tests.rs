//! Screens drawn into a `TestBackend` from fixed snapshots; each test checks the lines that
//! carry what it is about, so it fails if that disappears or garbles.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::buffer::Buffer;
use ratatui::style::Color;

use crate::tui::app::{App, SortKey, Tab};
use crate::tui::fixtures::{self, lines, screen, text};
use crate::tui::snapshot::{GpuPane, Snapshot};

/// The one line containing `needle`; panics with the screen if none or several do.
fn line_with(buf: &Buffer, needle: &str) -> String {
    let found: Vec<String> = lines(buf)
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "want one line with {needle:?} in:\n{}",
        text(buf)
    );
    found[0].clone()
}

/// Position (x, y) of the first cell where `needle` starts.
fn find(buf: &Buffer, needle: &str) -> (u16, u16) {
    for (y, line) in lines(buf).iter().enumerate() {
        if let Some(byte) = line.find(needle) {
            let x = line[..byte].chars().count();
            return (x as u16, y as u16);
        }
    }
    panic!("{needle:?} not on screen:\n{}", text(buf));
}

fn press(app: &mut App, snap: &Snapshot, code: KeyCode) {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE), snap);
}

#[test]
fn empty_state_says_why() {
    let buf = screen(&App::new(), &fixtures::empty(), 80, 24);
    line_with(&buf, "pid 1234 (demo)");
    line_with(
        &buf,
        "no allocation seen yet — waiting for the target to allocate",
    );
    line_with(&buf, "collecting samples");
    line_with(&buf, "heap 0 B");
    assert!(
        !text(&buf).contains("allocation site"),
        "no table header without rows"
    );
}

#[test]
fn growing_stack_shows_class_marker_and_rate_in_red() {
    let buf = screen(&App::new(), &fixtures::busy(), 100, 30);
    let row = line_with(&buf, "remember_session");
    assert!(row.contains("▲ growing 640 KiB/s"), "{row}");
    assert!(row.contains("8.00 MiB"), "{row}");
    let (x, y) = find(&buf, "▲ growing");
    assert_eq!(buf[(x, y)].fg, Color::Red);
    assert!(line_with(&buf, "cache_fill").contains("■ bounded"));
    assert!(line_with(&buf, "parse_request").contains("▼ shrinking 12.0 KiB/s"));
    assert!(line_with(&buf, "0x7f12aa00").contains("· unknown"));
    // The header sums the growth and gives a time to the limit.
    let mem = line_with(&buf, "RSS 76.0 MiB");
    assert!(mem.contains("heap 11.5 MiB  limit 512 MiB"), "{mem}");
    let trend = line_with(&buf, "▲ 1 stack growing, +640 KiB/s");
    assert!(trend.contains("OOM in ~11m38s at this rate"), "{trend}");
}

#[test]
fn lost_events_are_highlighted_with_their_count() {
    let mut snap = fixtures::busy();
    let quiet = screen(&App::new(), &snap, 80, 24);
    let (x, y) = find(&quiet, "lost 0");
    assert_ne!(quiet[(x, y)].bg, Color::Red);
    snap.header.lost_events = 1234;
    let buf = screen(&App::new(), &snap, 80, 24);
    let line = line_with(&buf, "lost 1234 events");
    assert!(line.contains("events 12.3k/s"), "{line}");
    assert!(line.contains("tracer 1.5% CPU, 34.0 MiB"), "{line}");
    let (x, y) = find(&buf, "lost 1234");
    assert_eq!(buf[(x, y)].bg, Color::Red);
}

#[test]
fn oom_pane_lists_the_kill_or_says_none() {
    let mut snap = fixtures::busy();
    let mut app = App {
        tab: Tab::Ooms,
        ..App::new()
    };
    let buf = screen(&app, &snap, 80, 24);
    line_with(&buf, "no OOM kill seen since start");
    snap.ooms.push(fixtures::oom());
    let buf = screen(&app, &snap, 100, 24);
    let header = line_with(&buf, "anon RSS");
    assert!(
        header.contains("cgroup") && header.contains("top stack"),
        "{header}"
    );
    let row = line_with(&buf, "hog");
    for want in [
        "+1m36s",
        "4321",
        "250 MiB",
        "/sys/fs/cgroup/oomtest",
        "grow_forever",
    ] {
        assert!(row.contains(want), "{want:?} missing from {row:?}");
    }
    line_with(&buf, "2 OOM events (1)");
    // Narrow: still one line per kill.
    app.ooms_scroll = 0;
    let buf = screen(&app, &snap, 80, 24);
    assert!(line_with(&buf, "hog").contains("250 MiB"));
}

#[test]
fn gpu_pane_shows_an_apu_with_unattributed_gtt() {
    let snap = fixtures::busy();
    let app = App {
        tab: Tab::Gpu,
        ..App::new()
    };
    let buf = screen(&app, &snap, 80, 24);
    let dev = line_with(&buf, "100 MiB / 512 MiB");
    for want in ["card0", "amdgpu", "2.50 GiB / 16.0 GiB", "gtt 1.50 GiB"] {
        assert!(dev.contains(want), "{want:?} missing from {dev:?}");
    }
    let (x, y) = find(&buf, "gtt 1.50 GiB");
    assert_eq!(buf[(x, y)].fg, Color::Yellow);
    line_with(&buf, "card0: 1.50 GiB of GTT is held by no process");
    let client = line_with(&buf, "firefox");
    assert!(client.contains("4321"), "{client}");
    assert!(client.contains("vram 90.0 MiB · gtt 1.00 GiB"), "{client}");
}

#[test]
fn gpu_pane_absent_says_why() {
    let app = App {
        tab: Tab::Gpu,
        ..App::new()
    };
    let buf = screen(&app, &fixtures::empty(), 80, 24);
    line_with(&buf, "GPU: no DRM devices found");
    let mut snap = fixtures::busy();
    snap.gpu = GpuPane::Devices {
        devices: Vec::new(),
        clients: Vec::new(),
    };
    line_with(&screen(&app, &snap, 80, 24), "GPU: no DRM devices found");
}

#[test]
fn detail_view_shows_every_frame_percentiles_and_chart() {
    let mut snap = fixtures::busy();
    snap.stacks[0].lifetime = Some(fixtures::lifetime());
    let mut app = App::new();
    press(&mut app, &snap, KeyCode::Enter);
    let buf = screen(&app, &snap, 100, 40);
    let site = line_with(&buf, "remember_session  demo.c:20  [demo]  pid 1234");
    assert!(!site.contains("handle_request"));
    line_with(&buf, "  0  remember_session  demo.c:20  [demo]");
    line_with(&buf, "  1  handle_request  demo.c:29  [demo]");
    line_with(&buf, "  2  main  demo.c:37  [demo]");
    line_with(&buf, "frames (3)");
    line_with(&buf, "outstanding 8.00 MiB in 2048 blocks");
    line_with(
        &buf,
        "growth ▲ growing 640 KiB/s for 2m10s (confidence 90%)",
    );
    let sizes = line_with(
        &buf,
        "sizes p50 4.00 KiB  p90 4.00 KiB  p99 64.0 KiB  max 1.00 MiB",
    );
    assert!(sizes.contains("lifetime p50 1.5s  p99 12.0s"), "{sizes}");
    line_with(&buf, "outstanding over the last 59.0s");
    // The chart draws braille dots.
    assert!(
        text(&buf)
            .chars()
            .any(|c| ('\u{2801}'..='\u{28ff}').contains(&c))
    );
    // Back to the table.
    press(&mut app, &snap, KeyCode::Esc);
    let buf = screen(&app, &snap, 100, 40);
    line_with(&buf, "allocation site");
}

#[test]
fn detail_of_a_vanished_stack_says_so() {
    let snap = fixtures::busy();
    let mut app = App::new();
    press(&mut app, &snap, KeyCode::Enter);
    let mut later = fixtures::busy();
    later.stacks.remove(0);
    let buf = screen(&app, &later, 100, 30);
    line_with(&buf, "this stack holds no memory any more");
}

#[test]
fn help_overlay_lists_every_key() {
    let snap = fixtures::busy();
    let mut app = App::new();
    press(&mut app, &snap, KeyCode::Char('?'));
    let buf = screen(&app, &snap, 80, 24);
    for (key, what) in super::help::KEYS {
        assert!(
            lines(&buf)
                .iter()
                .any(|l| l.contains(&format!(" {key} ")) && l.contains(what)),
            "{key:?} {what:?} missing:\n{}",
            text(&buf)
        );
    }
    press(&mut app, &snap, KeyCode::Char('?'));
    let buf = screen(&app, &snap, 80, 24);
    assert!(!text(&buf).contains("any key closes this help"));
}

#[test]
fn narrow_80x24_drops_low_priority_columns_and_never_wraps() {
    let snap = fixtures::busy();
    let buf = screen(&App::new(), &snap, 80, 24);
    let header = line_with(&buf, "allocation site");
    for want in ["outstanding", "%", "blocks", "growth"] {
        assert!(header.contains(want), "{want:?} missing from {header:?}");
    }
    for dropped in ["module", "p50", "allocs/s"] {
        assert!(
            !header.contains(dropped),
            "{dropped:?} should be dropped: {header:?}"
        );
    }
    // One line per stack, holding its site, size and growth.
    for (func, growth) in [
        ("remember_session", "▲ growing 640 KiB/s"),
        ("cache_fill", "■ bounded"),
        ("parse_request", "▼ shrinking 12.0 KiB/s"),
        ("0x7f12aa00", "· unknown"),
    ] {
        let row = line_with(&buf, func);
        assert!(row.contains(growth), "{growth:?} missing from {row:?}");
    }
    assert!(line_with(&buf, "remember_session").contains("demo.c:20"));
    // Every region is where it belongs: header on top, key hints at the bottom.
    let all = lines(&buf);
    assert!(all[0].contains("oomtrace · pid 1234 (demo)"), "{}", all[0]);
    assert!(all[23].contains("q quit"), "{}", all[23]);
    assert!(
        all.iter()
            .any(|l| l.contains("1 Stacks") && l.contains("sort: outstanding"))
    );
}

#[test]
fn narrow_keeps_the_sorted_column() {
    let snap = fixtures::busy();
    let app = App {
        sort: SortKey::Allocations,
        ..App::new()
    };
    let buf = screen(&app, &snap, 80, 24);
    let header = line_with(&buf, "allocation site");
    assert!(header.contains("▾allocs/s"), "{header}");
    assert!(header.contains("growth"), "{header}");
    assert!(line_with(&buf, "parse_request").contains("30/s"));
}

#[test]
fn wide_200x60_shows_every_column_and_a_taller_chart() {
    let snap = fixtures::all_mode();
    let buf = screen(&App::new(), &snap, 200, 60);
    let header = line_with(&buf, "allocation site");
    for want in [
        "pid",
        "module",
        "▾outstanding",
        "%",
        "blocks",
        "growth",
        "allocs/s",
        "p50 size",
    ] {
        assert!(header.contains(want), "{want:?} missing from {header:?}");
    }
    let row = line_with(&buf, "remember_session");
    for want in [
        "1234",
        "demo.c:20",
        "demo",
        "8.00 MiB",
        "▲ growing 640 KiB/s",
        "10/s",
        "4.00 KiB",
    ] {
        assert!(row.contains(want), "{want:?} missing from {row:?}");
    }
    // The header's bottom border (with the event rate) is lower than at 80x24 (both under a
    // line of the selected process's vitals).
    let bottom = lines(&buf).iter().position(|l| l.starts_with('└'));
    assert_eq!(bottom, Some(16), "\n{}", text(&buf));
    assert!(lines(&buf)[16].contains("events 12.3k/s"));
    let narrow = screen(&App::new(), &snap, 80, 24);
    assert_eq!(
        lines(&narrow).iter().position(|l| l.starts_with('└')),
        Some(7)
    );
    line_with(&buf, "4 Processes");
}

#[test]
fn exited_target_keeps_its_state_under_a_banner() {
    let mut snap = fixtures::busy();
    snap.target.exited = Some("exited (status 0)".to_string());
    let buf = screen(&App::new(), &snap, 80, 24);
    let banner = line_with(&buf, "exited (status 0)");
    assert!(banner.contains("press q to quit"), "{banner}");
    let (x, y) = find(&buf, "exited (status 0)");
    assert_eq!(buf[(x, y)].bg, Color::Red);
    assert!(!text(&buf).contains("OOM in"), "no time to OOM once ended");
    line_with(&buf, "remember_session");
}

#[test]
fn paused_is_shown() {
    let snap = fixtures::busy();
    let mut app = App::new();
    press(&mut app, &snap, KeyCode::Char(' '));
    let buf = screen(&app, &snap, 80, 24);
    assert!(lines(&buf)[0].contains("PAUSED"), "{}", lines(&buf)[0]);
    assert!(
        lines(&buf)[23].contains("space resume"),
        "{}",
        lines(&buf)[23]
    );
}

#[test]
fn filter_typing_and_no_match_message() {
    let snap = fixtures::busy();
    let mut app = App::new();
    press(&mut app, &snap, KeyCode::Char('/'));
    for c in "zzz".chars() {
        press(&mut app, &snap, KeyCode::Char(c));
    }
    let buf = screen(&app, &snap, 80, 24);
    assert!(lines(&buf)[23].contains("/ zzz"), "{}", lines(&buf)[23]);
    line_with(&buf, "no stack matches \"zzz\" (Esc clears the filter)");
}

#[test]
fn processes_pane_in_all_mode() {
    let snap = fixtures::all_mode();
    let app = App {
        tab: Tab::Processes,
        ..App::new()
    };
    let buf = screen(&app, &snap, 80, 24);
    let demo = line_with(&buf, "1234 demo");
    assert!(demo.contains("▲ growing 640 KiB/s"), "{demo}");
    let cache = line_with(&buf, "cache-daemon");
    assert!(
        cache.contains("exited (status 0)") && cache.contains("3.00 MiB"),
        "{cache}"
    );
}

#[test]
fn notices_show_in_the_header() {
    let mut snap = fixtures::busy();
    snap.header.notices = vec!["fentry unavailable: using uprobes".to_string()];
    let buf = screen(&App::new(), &snap, 80, 24);
    line_with(&buf, "! fentry unavailable: using uprobes");
}

#[test]
fn bpf_time_per_call_shows_in_the_header() {
    let mut snap = fixtures::busy();
    snap.header.bpf_ns_per_call = Some(412.4);
    let buf = screen(&App::new(), &snap, 120, 24);
    line_with(&buf, "bpf 412 ns/call");
}

#[test]
fn tiny_terminal_does_not_panic() {
    let snap = fixtures::busy();
    for (w, h) in [(1, 1), (10, 3), (20, 8), (40, 12)] {
        for tab in [Tab::Stacks, Tab::Ooms, Tab::Gpu, Tab::Processes] {
            let app = App {
                tab,
                help: true,
                ..App::new()
            };
            screen(&app, &snap, w, h);
        }
        let mut app = App::new();
        press(&mut app, &snap, KeyCode::Enter);
        screen(&app, &snap, w, h);
    }
}

#[test]
fn long_table_builds_the_window_around_the_selection() {
    let mut snap = fixtures::busy();
    for k in 10..300 {
        snap.stacks.push(fixtures::stack(
            k,
            &[(&format!("filler_{k}"), "f.c:1")],
            1000 - k,
            crate::model::growth::Growth::unknown(),
        ));
    }
    let mut app = App {
        page: super::page_rows(ratatui::layout::Rect::new(0, 0, 80, 24), &snap),
        ..App::new()
    };
    press(&mut app, &snap, KeyCode::End);
    let buf = screen(&app, &snap, 80, 24);
    let (x, y) = find(&buf, "filler_299");
    assert!(
        buf[(x, y)]
            .modifier
            .contains(ratatui::style::Modifier::REVERSED)
    );
    assert!(!text(&buf).contains("remember_session"));
    line_with(&buf, "sort: outstanding · 294 stacks");
    // A page up keeps the selection on screen, and the table fills the screen.
    press(&mut app, &snap, KeyCode::PageUp);
    let buf = screen(&app, &snap, 80, 24);
    let y_sel = (0..24u16)
        .find(|&y| {
            buf[(0, y)]
                .modifier
                .contains(ratatui::style::Modifier::REVERSED)
        })
        .map(usize::from);
    assert!(y_sel.is_some(), "selection not shown:\n{}", text(&buf));
    assert!(lines(&buf)[22].contains("filler_"), "{}", text(&buf));
}

#[test]
fn tab_bar_counts_what_the_filter_leaves() {
    let snap = fixtures::busy();
    let app = App {
        filter: "c".to_string(),
        ..App::new()
    };
    let buf = screen(&app, &snap, 120, 30);
    line_with(&buf, "filter \"c\" · sort: outstanding · 3 of 4 stacks");
    // Narrow: the least important parts go first, the filter stays.
    let buf = screen(&app, &snap, 80, 24);
    let bar = line_with(&buf, "1 Stacks");
    assert!(bar.contains("filter \"c\""), "{bar}");
    assert!(!bar.contains("of 4 stacks"), "{bar}");
}

#[test]
fn window_follows_the_selection_and_fills_the_view() {
    use super::window;
    assert_eq!(window(0, None, 0, 10), (0, 0));
    assert_eq!(window(5, Some(4), 0, 10), (0, 5));
    assert_eq!(window(100, Some(50), 0, 10), (41, 51));
    assert_eq!(window(100, Some(45), 41, 10), (41, 51));
    assert_eq!(window(100, Some(3), 41, 10), (3, 13));
    assert_eq!(
        window(100, Some(99), 95, 10),
        (90, 100),
        "no blank rows at the end"
    );
}

#[test]
fn process_vitals_show_in_the_header_in_their_own_units() {
    // The target (the first process traced) outside `--all`: the text report's verdicts.
    let mut snap = fixtures::busy();
    snap.processes = fixtures::all_mode().processes;
    let buf = screen(&App::new(), &snap, 160, 30);
    let line = line_with(&buf, "pid 1234 (demo): ");
    let want = "pid 1234 (demo): heap ▲ growing 640.00 KiB/s · RSS ▲ growing 512.00 KiB/s · \
                threads ▲ growing 3.0 threads/s · fds ■ bounded";
    assert!(line.contains(want), "want {want:?} in {line:?}");
    let (x, y) = find(&buf, "▲ growing 3.0 threads/s");
    assert_eq!(buf[(x, y)].fg, Color::Red);
    // The same words as the report's growth line.
    let report_words: Vec<String> = crate::report::vitals::parts(&snap.processes[0].vitals)
        .iter()
        .map(|(label, g, unit)| format!("{label} {}", crate::report::vitals::verdict(g, unit)))
        .collect();
    assert!(line.contains(&report_words.join(" · ")), "{line}");
}

#[test]
fn process_vitals_follow_the_selected_process_in_all_mode() {
    let snap = fixtures::all_mode();
    let mut app = App {
        tab: Tab::Processes,
        ..App::new()
    };
    let buf = screen(&app, &snap, 160, 30);
    line_with(&buf, "pid 1234 (demo): heap ▲ growing");
    press(&mut app, &snap, KeyCode::Down);
    let buf = screen(&app, &snap, 160, 30);
    let line = line_with(&buf, "pid 77 (cache-daemon): ");
    assert!(
        line.contains("heap · unknown · RSS · unknown · threads · unknown · fds · unknown"),
        "{line}"
    );
}
