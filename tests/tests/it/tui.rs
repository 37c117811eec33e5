//! The live TUI in a real terminal (issue 5): tmux runs `oomtrace --pid N` against a workload
//! that leaks from a known function; the function shows as growing; `q` gives the shell back.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

struct Tmux(String);

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.0]);
        c
    }

    /// Types `key` into the session.
    fn send(&self, key: &str) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "t", key])
            .status()
            .unwrap();
        assert!(st.success(), "tmux send-keys {key:?} failed");
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the screen until `pred` holds; returns it and the time it took.
    fn wait_for(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> (String, Duration) {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return (screen, start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "timed out; the screen was:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

#[test]
fn live_view_marks_the_leak_as_growing_and_q_quits() {
    if !require_bpf() {
        return;
    }
    let exe = build_c(
        "shapes",
        "shapes",
        &["-O2", "-g", "-fno-omit-frame-pointer"],
    );
    let mut workload = Command::new(&exe)
        .arg("60")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let tmux = Tmux(format!("oomtrace-test-{}", std::process::id()));
    let line = format!(
        "{} --pid {} --tick 500ms; echo SHELL-BACK-$?; sleep 60",
        bin().display(),
        workload.id()
    );
    let st = tmux
        .cmd()
        .args([
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "160",
            "-y",
            "45",
            &line,
        ])
        .status()
        .unwrap();
    assert!(st.success(), "tmux could not start");
    // The classifier needs ~10 samples: 5 s at 500 ms.
    let (screen, _) = tmux.wait_for(Duration::from_secs(40), |s| {
        s.lines()
            .any(|l| l.contains("steady_leak") && l.contains("▲ growing"))
    });
    assert!(screen.contains("oomtrace"), "{screen}");
    assert!(
        screen
            .lines()
            .any(|l| l.contains("batch_buffer") && l.contains("bounded")),
        "a batch buffer is not a leak:\n{screen}"
    );
    tmux.send("q");
    let (screen, took) = tmux.wait_for(Duration::from_secs(10), |s| s.contains("SHELL-BACK-"));
    assert!(
        took < Duration::from_millis(2500),
        "q took {took:?} to give the shell back"
    );
    assert!(screen.contains("SHELL-BACK-0"), "{screen}");
    let _ = workload.kill();
    let _ = workload.wait();
}

#[test]
fn replay_plays_a_recording_with_time_controls() {
    if !require_bpf() {
        return;
    }
    let demo = build_c("demo", "demo", &["-O2", "-g", "-fno-omit-frame-pointer"]);
    let file = work_dir().join("replay-demo.oomtrace");
    let rec = output(
        oomtrace()
            .arg("record")
            .arg("-o")
            .arg(&file)
            .args(["--format", "json", "--"])
            .arg(&demo),
    );
    assert!(
        rec.status.success(),
        "{}",
        String::from_utf8_lossy(&rec.stderr)
    );
    let tmux = Tmux(format!("oomtrace-replay-{}", std::process::id()));
    let line = format!(
        "{} replay {} --speed 0.05; echo SHELL-BACK-$?; sleep 60",
        bin().display(),
        file.display()
    );
    assert!(
        tmux.cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "160",
                "-y",
                "40",
                &line
            ])
            .status()
            .unwrap()
            .success()
    );
    // At 1/20 speed the ~0.7 s run plays for ~14 s: it is still playing and holds the leak.
    let (screen, _) = tmux.wait_for(Duration::from_secs(15), |s| {
        s.contains("playing") && s.contains("remember_session")
    });
    assert!(screen.contains("replay replay-demo.oomtrace"), "{screen}");
    tmux.send(" ");
    tmux.wait_for(Duration::from_secs(5), |s| s.contains("paused"));
    // Seek back to the start: nothing allocated yet.
    tmux.send("<");
    let (screen, _) = tmux.wait_for(Duration::from_secs(5), |s| {
        s.contains(" 0.0/") && s.contains("up 0ms")
    });
    assert!(
        !screen.contains("remember_session"),
        "at 0 s the leak has not happened yet:\n{screen}"
    );
    // Seek to the end: the whole leak.
    tmux.send(">");
    let (screen, _) = tmux.wait_for(Duration::from_secs(5), |s| {
        s.contains("remember_session") && s.contains("7.81 MiB")
    });
    assert!(screen.contains("paused"), "{screen}");
    tmux.send("q");
    tmux.wait_for(Duration::from_secs(5), |s| s.contains("SHELL-BACK-0"));
}

/// Issue 19: the TUI states the target's heap, RSS, thread and fd verdicts with their rates in
/// their own units, as the text report does (`gates vitals`: 3 threads and 10 fds a second).
#[test]
fn live_view_shows_thread_and_fd_growth_in_their_units() {
    if !require_bpf() {
        return;
    }
    let tmux = Tmux(format!("oomtrace-vitals-{}", std::process::id()));
    let line = format!(
        "{} run -- {} vitals; echo SHELL-BACK-$?; sleep 60",
        bin().display(),
        crate::gates::gates_exe().display()
    );
    let st = tmux
        .cmd()
        .args([
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "200",
            "-y",
            "45",
            &line,
        ])
        .status()
        .unwrap();
    assert!(st.success(), "tmux could not start");
    // The final state, kept on screen once the 3-second workload has exited.
    let (screen, _) = tmux.wait_for(Duration::from_secs(40), |s| {
        s.contains("final state kept on screen") && s.contains("threads ▲ growing")
    });
    let vitals = screen
        .lines()
        .find(|l| l.contains("): heap "))
        .unwrap_or_else(|| panic!("no vitals line:\n{screen}"));
    assert!(vitals.contains("(gates): heap "), "{vitals}");
    let threads = crate::gates::rate_in(vitals, "threads", "threads");
    let fds = crate::gates::rate_in(vitals, "fds", "fds");
    assert!((2.4..=3.6).contains(&threads), "{vitals}");
    assert!((8.0..=12.0).contains(&fds), "{vitals}");
    tmux.send("q");
    let (screen, _) = tmux.wait_for(Duration::from_secs(10), |s| s.contains("SHELL-BACK-"));
    assert!(screen.contains("SHELL-BACK-0"), "{screen}");
}
