//! `cargo xtask bench`: overhead on the traced process, measured side by side, into BENCHMARKS.md.
//!
//! Every table runs its configurations ([`tracers`]) interleaved round by round, so drift in the
//! machine hits each alike, and reports medians with ratios taken within the same run. Parts:
//! the C malloc/free loops ([`loops`]), redis-server under redis-benchmark ([`redis`]), the
//! user-side pipeline alone ([`pipeline`]), the tracer's own CPU and memory, the recording size
//! and the classifier's memory; then the goals ([`report`]).
//!
//! `cargo xtask bench PART…` (bystander, startstop, loop, mt, free, cost, redis, pipeline, extra,
//! agent, inject, stacks, soak) runs only those and
//! writes `target/bench/partial.md` instead of BENCHMARKS.md. `soak` ([`soak`]) runs only when
//! named; a number among the parts is its length in seconds (default 1800).
//! `BENCH_STACKS_ROUNDS=N` gives `stacks` ([`stacks`]) N rounds instead of 5, and
//! `BENCH_ROUNDS=N` the loops and redis N rounds instead of theirs, for a quick check of a part.

mod agent;
mod bystander;
mod extra;
mod inject;
mod interference;
mod loops;
mod pipeline;
mod redis;
mod report;
mod soak;
mod stacks;
mod tracers;

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use self::loops::{Measured, Workload};
use self::report::{Goal, line};
use self::tracers::Role;
use crate::root;

/// Rounds of the C loops (cheap: median of 5), unless `BENCH_ROUNDS` says otherwise.
const ROUNDS: usize = 5;
/// The goals the issue sets.
const EXACT_VS_FLOOR_MAX: f64 = 1.3;
/// Sample mode against the entry-only (uprobe session) floor.
const SAMPLE_VS_SESSION_FLOOR_MAX: f64 = 1.1;
const SAMPLE_REDIS_MIN: f64 = 0.70;
const GROWTH_REDIS_MIN: f64 = 0.97;
const PIPELINE_MIN: f64 = 10e6;
const BYSTANDER_MAX: f64 = 1.05;
/// `oomtrace agent`'s own CPU over a churning workload, % of one core.
const AGENT_CPU_MAX: f64 = 2.0;
/// `oomtrace agent`'s stated memory bound (its default `self_max`).
const AGENT_RSS_MAX: u64 = 512 << 20;
const PARTS: &[&str] = &[
    "bystander",
    "startstop",
    "loop",
    "mt",
    "free",
    "cost",
    "redis",
    "pipeline",
    "extra",
    "agent",
    "inject",
    "stacks",
    "soak",
];

/// `default` rounds, or `BENCH_ROUNDS` when set (loops and redis).
fn rounds(default: usize) -> Result<usize> {
    match std::env::var("BENCH_ROUNDS") {
        Err(_) => Ok(default),
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!(
                "BENCH_ROUNDS={v:?} is not a number of rounds: give a whole number ≥ 1, or \
                 unset it for each part's own"
            ),
        },
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn first_line(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / (1 << 20) as f64);
    format!(
        "{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {} (a VM shared with other work, load average \
         {} at the start: figures are comparable within one run, not across machines). Tools: {}, \
         {}, {}, {}",
        kernel.trim(),
        load_average(),
        first_line("bpftrace", "--version"),
        first_line("heaptrack", "--version"),
        first_line("redis-server", "--version")
            .split(" sha=")
            .next()
            .unwrap_or(""),
        first_line("redis-benchmark", "--version"),
    )
}

/// `/proc/loadavg`'s 1-minute figure: how busy the machine was besides the bench.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// The tools the bench compares against must be there (`setup` installs them).
fn check_tools() -> Result<()> {
    for tool in [
        "bpftrace",
        "heaptrack",
        "redis-server",
        "redis-cli",
        "redis-benchmark",
    ] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            bail!("{tool} is missing: `cargo xtask setup` did not install it");
        }
    }
    Ok(())
}

/// Runs the benchmarks (all of them, or `parts`) and writes the markdown.
pub fn run(args: &[String]) -> Result<()> {
    // A number is the soak's length in seconds (`bench soak 60`).
    let soak_seconds = args
        .iter()
        .find_map(|a| a.parse::<u64>().ok())
        .unwrap_or(soak::DEFAULT_SECONDS);
    let parts: Vec<String> = args
        .iter()
        .filter(|a| a.parse::<u64>().is_err())
        .cloned()
        .collect();
    for p in &parts {
        if !PARTS.contains(&p.as_str()) {
            bail!("unknown bench part {p} (parts: {})", PARTS.join(", "));
        }
    }
    let want = |p: &str| parts.is_empty() || parts.iter().any(|q| q == p);
    // The soak runs only when named: 30 minutes by default.
    check_tools()?;
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let exe = loops::build_workload(&dir)?;
    let oomtrace = root().join("target/release/oomtrace");
    let started = std::time::Instant::now();
    let loop_rounds = rounds(ROUNDS)?;

    let mut md = String::new();
    line(&mut md, "# Benchmarks\n");
    line(
        &mut md,
        &format!(
            "Written by `cargo xtask bench` (as root). Machine: {}.\n",
            machine()
        ),
    );
    line(
        &mut md,
        &format!(
            "C workload: `tests/workloads/bench_loop.c` built with `cc -O2 -g`. Each loop figure is the time \
             the workload measures around its own loop (`clock_gettime`), so start-up, attach and detach \
             are excluded for every tracer (bpftrace's `-c` starts the workload once its probes are \
             attached; heaptrack preloads before `main`). {loop_rounds} rounds with the configurations \
             interleaved within each round; medians. The **bare probe floor** is `oomtrace run \
             --probe-floor`: programs that return at once, attached on exactly the functions and offsets \
             a real run probes, and nothing else; it is what any uprobe tool pays for the traps. It comes \
             in two kinds: **entry+return** (an empty program at each allocator call's entry and \
             another at its return, the uretprobe trampoline included), which `exact` pays, and \
             **entry only** (`--probe-floor --mode sample`: one empty uprobe-session program that skips \
             every return), which `sample` pays, since its unsampled calls skip their return probe. \
             `vs its floor` compares each mode with the floor of its own kind at the same placement: \
             `sample` with the entry-only floor; `exact`, `growth` and `sample` without sessions \
             (`OOMTRACE_UPROBES=multi`, the entry+return pair) with the entry+return one. oomtrace runs with \
             the kernel's BPF run-time statistics on (its own-cost figures), which adds two clock \
             reads per program run to it and to the floor alike.\n"
        ),
    );
    let mut goals = Vec::new();

    if want("bystander") {
        let rows = bystander::measure(&oomtrace, &exe)?;
        bystander::table(&mut md, &rows);
        let worst = bystander::worst_ratio(&rows);
        goals.push(Goal {
            goal: format!(
                "an untraced process's malloc/free loop while oomtrace traces another (`run` and \
                 `--pid`, every mode) ≤ {BYSTANDER_MAX}× untraced, fastest runs"
            ),
            measured: Some(format!("worst {worst:.2}×")),
            met: Some(worst <= BYSTANDER_MAX),
            why: if worst <= BYSTANDER_MAX {
                String::new()
            } else {
                "the bystander carries no breakpoint (the tests check its code byte for byte): \
                 the rest is this shared VM's noise between phases"
                    .into()
            },
        });
    }
    if want("startstop") {
        let libc = tracers::allocator_of(&oomtrace, std::path::Path::new("/bin/true"))?;
        let s = bystander::start_stop(&oomtrace, &libc)?;
        bystander::start_stop_table(&mut md, &s);
        let ours = s.rows[0].2;
        let heaptrack = s.rows[1].2;
        goals.push(Goal {
            goal: "`oomtrace run -- /bin/true` ≤ heaptrack's whole run of the same command".into(),
            measured: Some(format!("{ours:.3} s vs {heaptrack:.3} s")),
            met: Some(ours <= heaptrack),
            why: if ours <= heaptrack {
                String::new()
            } else {
                format!(
                    "over by {:.0} ms: loading and verifying the programs is most of it (the \
                     allocator entry program alone is tens of ms of verification), then the \
                     tracepoints and the symbolizer's kernel mapping records",
                    (ours - heaptrack) * 1e3
                )
            },
        });
        goals.push(Goal {
            goal: "`--pid` attach and detach each under 0.3 s".into(),
            measured: Some(format!("{:.3} s / {:.3} s", s.attach_s, s.detach_s)),
            met: Some(s.attach_s < 0.3 && s.detach_s < 0.3),
            why: String::new(),
        });
    }

    let one_thread = Workload {
        title: "malloc/free loop, one thread",
        args: &["200000", "1"],
        what: "200000 × (`malloc(64)`; `free`) in one thread; the loop's own time",
        calls: 200_000.0,
        unit: "per malloc+free pair",
        rounds: loop_rounds,
    };
    let mut loop1 = None;
    if want("loop") {
        let m = loops::measure(
            &oomtrace,
            &exe,
            tracers::loop_configs(&oomtrace)?,
            &one_thread,
            &dir,
        )?;
        loops::table(&mut md, &one_thread, &m);
        line(
            &mut md,
            "bpftrace runs `xtask/bench/memleak.bt` (uprobe `malloc` → size per thread, uretprobe → \
             address → size and `ustack`, uprobe `free` → delete) on the same allocator object oomtrace \
             resolves; like every tool but oomtrace it probes offset 0, where glibc's `free` starts with \
             a single-stepped instruction. heaptrack preloads `libheaptrack_preload.so` and pipes every \
             call to its interpreter.\n",
        );
        loop1 = Some(m);
    }
    let mt = Workload {
        title: "malloc/free loop, two threads",
        args: &["100000", "2"],
        what: "2 threads × 100000 × (`malloc(64)`; `free`) on the 2-core machine: the highest event rate; \
               the loop's own time (per pair: over all 200000 pairs)",
        calls: 200_000.0,
        unit: "per malloc+free pair",
        rounds: loop_rounds,
    };
    let mut loop2 = None;
    if want("mt") || want("cost") {
        let m = loops::measure(&oomtrace, &exe, tracers::mt_configs(&oomtrace)?, &mt, &dir)?;
        loops::table(&mut md, &mt, &m);
        loop2 = Some(m);
    }
    if want("free") {
        let free = Workload {
            title: "free phase",
            args: &["200000", "free-phase"],
            what: "200000 `malloc(64)`, then the 200000 `free`s timed alone: where `free`'s probe placement acts",
            calls: 200_000.0,
            unit: "per free",
            rounds: loop_rounds,
        };
        let m = loops::measure(&oomtrace, &exe, tracers::free_phase_configs(), &free, &dir)?;
        loops::table(&mut md, &free, &m);
        if let (Some(auto), Some(entry)) = (m.by_role(Role::Exact), m.by_role(Role::ExactEntry)) {
            line(
                &mut md,
                &format!(
                    "Placement by prologue decoding vs offset 0: **{:.1}× faster**. glibc's `free` starts \
                     with `test %rdi,%rdi`, which the kernel single-steps; oomtrace probes the `je` at \
                     `free+3` instead, which the kernel emulates.\n",
                    entry / auto
                ),
            );
        }
    }
    if let Some(m) = &loop2 {
        tracer_cost(&mut md, m, &mt)?;
    }
    if let Some(m) = &loop1 {
        goals.push(exact_goal(m));
        goals.push(sample_goal(m, &one_thread));
    }
    if want("redis") {
        let m = redis::measure(&oomtrace, tracers::redis_configs(&oomtrace)?, &dir)?;
        redis::table(&mut md, &m);
        goals.extend(redis_goals(&m));
    }
    if want("pipeline") {
        let rate = pipeline::run()?;
        line(
            &mut md,
            &format!(
                "## User-side pipeline alone\n\n`cargo bench -p oomtrace --bench pipeline` \
                 (`oomtrace/benches/pipeline.rs`): 1000000 synthetic ring records (allocations from 1000 \
                 call sites with four sizes each, frees of ~10000 live blocks, a realloc now and then, a \
                 tick every 50000) decoded and applied to the model with the symbolizer's per-event \
                 bookkeeping, as the ingestion loop does, timed in the thread's CPU time: \
                 **{:.1} M events/s per core**.\n",
                rate / 1e6
            ),
        );
        goals.push(Goal {
            goal: format!(
                "user-side pipeline ≥ {:.0} M events/s per core",
                PIPELINE_MIN / 1e6
            ),
            measured: Some(format!("{:.1} M events/s", rate / 1e6)),
            met: Some(rate >= PIPELINE_MIN),
            why: if rate >= PIPELINE_MIN {
                String::new()
            } else {
                format!(
                    "short by {:.0} %: the per-event work is cache misses in the block table and the \
                     per-stack size and lifetime histograms (perf); SipHash was replaced by a \
                     multiply-rotate hasher for the model's maps (4.3 → 8.3 M/s measured the same way)",
                    (1.0 - rate / PIPELINE_MIN) * 100.0
                )
            },
        });
    }
    if want("agent") {
        let rows = agent::measure(&oomtrace, &dir)?;
        agent::table(&mut md, &rows);
        for r in &rows {
            let cpu_ok = r.cpu_pct < AGENT_CPU_MAX;
            goals.push(Goal {
                goal: format!(
                    "`oomtrace agent` over {}, {} s of churn: its own CPU < {AGENT_CPU_MAX} % of \
                     a core, its memory ≤ {} MiB",
                    r.name,
                    agent::SECONDS,
                    AGENT_RSS_MAX >> 20
                ),
                measured: Some(format!(
                    "{:.2} %, peak {:.0} MiB",
                    r.cpu_pct,
                    r.peak_rss as f64 / (1 << 20) as f64
                )),
                met: Some(cpu_ok && r.peak_rss <= AGENT_RSS_MAX),
                why: if cpu_ok {
                    String::new()
                } else if r.name.contains("--cgroup") {
                    // Only the cgroup's processes are traced: the churn workload's own events.
                    "the workload's own events are what the agent reads here; see the agent \
                     table for its rate"
                        .into()
                } else {
                    "the whole machine is traced: every page fault of whatever else runs here \
                     (compilers on this shared VM) is an event the agent reads"
                        .into()
                },
            });
        }
    }
    if want("inject") {
        inject::measure(&oomtrace, &exe, &mut md)?;
    }
    if want("stacks") {
        goals.extend(stacks::measure(&oomtrace, &dir, &mut md)?);
    }
    if parts.iter().any(|q| q == "soak") {
        goals.extend(soak::measure(&oomtrace, &dir, soak_seconds, &mut md)?);
    }
    if want("extra") {
        extra::recording_size(&oomtrace, &exe, &dir, &mut md)?;
        extra::classifier_memory(&mut md)?;
    }
    if !goals.is_empty() {
        report::goals(&mut md, &goals);
    }
    line(
        &mut md,
        &format!(
            "The whole bench took {:.0} s; load average {} at its end.",
            started.elapsed().as_secs_f64(),
            load_average()
        ),
    );
    let out = if parts.is_empty() {
        root().join("BENCHMARKS.md")
    } else {
        dir.join("partial.md")
    };
    std::fs::write(&out, md).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("bench: wrote {}", out.display());
    Ok(())
}

/// `exact` vs the floor at the same placement, on the one-thread loop.
fn exact_goal(m: &Measured) -> Goal {
    let goal = format!(
        "`exact` on the malloc/free loop ≤ {EXACT_VS_FLOOR_MAX}× the entry+return probe floor at the same placement"
    );
    let (Some(exact), Some(floor)) = (m.by_role(Role::Exact), m.by_role(Role::FloorAuto)) else {
        return Goal {
            goal,
            measured: None,
            met: None,
            why: "a configuration did not run".into(),
        };
    };
    let ratio = exact / floor;
    let why = if ratio <= EXACT_VS_FLOOR_MAX {
        String::new()
    } else {
        format!(
            "over by {:.0} %: the traps are the same, the difference is the programs' own work \
             (bpf_stats per run: {}; floor: {}) and the user side reading the events on the same 2 cores (see \"Tracer cost under load\")",
            (ratio / EXACT_VS_FLOOR_MAX - 1.0) * 100.0,
            programs(m.report(Role::Exact)),
            programs(m.report(Role::FloorAuto)),
        )
    };
    Goal {
        goal,
        measured: Some(format!(
            "{:.2}× ({:.1} ms vs {:.1} ms)",
            ratio,
            exact / 1e6,
            floor / 1e6
        )),
        met: Some(ratio <= EXACT_VS_FLOOR_MAX),
        why,
    }
}

/// The programs that ran in a report's BPF statistics, with their own ns per run.
fn programs(r: Option<&Value>) -> String {
    let ran: Vec<String> = r
        .and_then(|r| r["tracer_cost"]["programs"].as_array())
        .into_iter()
        .flatten()
        .filter(|p| p["runs"].as_u64().unwrap_or(0) > 0)
        .take(3)
        .map(|p| {
            format!(
                "{} {:.0} ns",
                p["name"].as_str().unwrap_or("?"),
                p["ns_per_run"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    if ran.is_empty() {
        "no statistics".into()
    } else {
        ran.join(", ")
    }
}

/// A program's entry in a report's BPF statistics, if it ran.
fn program<'a>(r: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    r?["tracer_cost"]["programs"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name && p["runs"].as_u64().unwrap_or(0) > 0)
}

/// Whether the run behind a report attached uprobe sessions (its session program ran).
fn used_sessions(r: Option<&Value>) -> bool {
    program(r, "alloc_session").is_some() || program(r, "floor_session").is_some()
}

/// `sample` vs the entry-only (uprobe session) floor, on the one-thread loop.
fn sample_goal(m: &Measured, w: &Workload) -> Goal {
    let goal = format!(
        "`sample` on the malloc/free loop (one thread) ≤ {SAMPLE_VS_SESSION_FLOOR_MAX}× the \
         entry-only (uprobe session) floor"
    );
    let (Some(sample), Some(floor)) = (m.by_role(Role::Sample), m.by_role(Role::FloorSession))
    else {
        return Goal {
            goal,
            measured: None,
            met: None,
            why: "a configuration did not run (this oomtrace has no `--mode`)".into(),
        };
    };
    let ratio = sample / floor;
    let met = ratio <= SAMPLE_VS_SESSION_FLOOR_MAX;
    let (sr, fr) = (m.report(Role::Sample), m.report(Role::FloorSession));
    // What sessions save: the same mode with the entry and return pair, against its floor.
    let multi = match (m.by_role(Role::SampleMulti), m.by_role(Role::FloorAuto)) {
        (Some(s), Some(f)) => format!(
            "; without sessions {:.2}× the entry+return floor ({:.1} ms vs {:.1} ms)",
            s / f,
            s / 1e6,
            f / 1e6
        ),
        _ => String::new(),
    };
    let why = if met {
        String::new()
    } else if !used_sessions(sr) || !used_sessions(fr) {
        format!(
            "over by {:.0} %, but a run did not attach uprobe sessions (the kernel refused them: \
             the report's programs are {} for sample, {} for the floor), so the return probes \
             were not skipped",
            (ratio / SAMPLE_VS_SESSION_FLOOR_MAX - 1.0) * 100.0,
            programs(sr),
            programs(fr)
        )
    } else {
        let per_call = |r: Option<&Value>, name: &str| -> Option<(f64, f64)> {
            let p = program(r, name)?;
            Some((
                p["ns_per_run"].as_f64()?,
                p["run_time_ns"].as_f64()? / w.calls,
            ))
        };
        let over_ns = (sample - floor) / w.calls;
        match (per_call(sr, "alloc_session"), per_call(fr, "floor_session")) {
            (Some((s_run, s_pair)), Some((f_run, f_pair))) => format!(
                "over by {:.0} %: {over_ns:.0} ns per malloc+free pair above the floor, of which \
                 the session program's own time is {:.0} ns (`alloc_session` {s_run:.0} ns per \
                 run vs `floor_session` {f_run:.0} ns, the kernel's BPF statistics over the \
                 run); the other {:.0} ns is outside the programs (the sampled calls' return \
                 trampoline, the user side reading events on the same 2 cores)",
                (ratio / SAMPLE_VS_SESSION_FLOOR_MAX - 1.0) * 100.0,
                s_pair - f_pair,
                over_ns - (s_pair - f_pair)
            ),
            _ => format!(
                "over by {:.0} %: {over_ns:.0} ns per pair above the floor (programs: {}; \
                 floor: {})",
                (ratio / SAMPLE_VS_SESSION_FLOOR_MAX - 1.0) * 100.0,
                programs(sr),
                programs(fr)
            ),
        }
    };
    Goal {
        goal,
        measured: Some(format!(
            "{ratio:.2}× ({:.1} ms vs {:.1} ms){multi}",
            sample / 1e6,
            floor / 1e6
        )),
        met: Some(met),
        why,
    }
}

fn redis_goals(m: &redis::Measured) -> Vec<Goal> {
    let untraced = m.combined(Role::Untraced);
    let share = |role: Role| Some(m.combined(role)? / untraced?);
    [
        (Role::Sample, "sample", SAMPLE_REDIS_MIN),
        (Role::Growth, "growth", GROWTH_REDIS_MIN),
    ]
    .into_iter()
    .map(|(role, name, min)| {
        let goal = format!(
            "`{name}` keeps redis-benchmark throughput ≥ {:.0} % of untraced",
            min * 100.0
        );
        let Some(got) = share(role) else {
            return Goal {
                goal,
                measured: None,
                met: None,
                why: format!("this oomtrace build has no `--mode {name}`: rerun after merging it"),
            };
        };
        let short = (min - got) * 100.0;
        let why = if got >= min {
            String::new()
        } else if role == Role::Sample {
            sample_redis_why(m, got, min, share(Role::FloorSession), share(Role::FloorAuto))
        } else if role == Role::Growth {
            format!(
                "short by {short:.0} points: growth mode has no uprobe; its cost is the \
                 page-fault and mmap/brk/madvise tracepoint programs and the user side reading \
                 their events on the same 2 cores ({} rounds; the untraced rounds themselves \
                 vary by several points)",
                m.rounds
            )
        } else {
            format!("short by {short:.0} points: see the redis table (the floor rows are the traps' share)")
        };
        Goal {
            goal,
            measured: Some(format!("{:.0} %", got * 100.0)),
            met: Some(got >= min),
            why,
        }
    })
    .collect()
}

/// Why sample mode keeps less than `min` of redis's throughput: against the floor it pays,
/// the entry-only one when its run attached uprobe sessions, else the entry+return one.
fn sample_redis_why(
    m: &redis::Measured,
    got: f64,
    min: f64,
    session_floor: Option<f64>,
    pair_floor: Option<f64>,
) -> String {
    let short = (min - got) * 100.0;
    let sessions = used_sessions(m.report(Role::Sample));
    let (floor, kind) = if sessions {
        (
            session_floor,
            "the entry-only floor (one empty uprobe-session program on the same probes, \
             skipping every return)",
        )
    } else {
        (
            pair_floor,
            "the entry+return floor (empty programs on the same probes; this sample run did \
             not attach uprobe sessions)",
        )
    };
    let Some(f) = floor else {
        return format!("short by {short:.0} points: see the redis table (its floor did not run)");
    };
    let programs = format!(
        "the programs' own time per run: {}; floor: {}",
        programs(m.report(Role::Sample)),
        programs(m.report(if sessions {
            Role::FloorSession
        } else {
            Role::FloorAuto
        }))
    );
    if f < min {
        // The floor's traps alone (empty programs) set sample mode's ceiling.
        format!(
            "short by {short:.0} points, and out of reach for any tool that probes the \
             allocator's entries here: {kind} alone keeps {:.0} %; sampling's own cost on top \
             of it is {:.0} points ({programs})",
            f * 100.0,
            (f - got) * 100.0
        )
    } else {
        format!(
            "short by {short:.0} points: {kind} keeps {:.0} %, so sampling's own cost on top of \
             it, {:.0} points, is what misses ({programs}; the rest is the user side reading \
             events on the same 2 cores)",
            f * 100.0,
            (f - got) * 100.0
        )
    }
}

/// oomtrace's own CPU, memory and losses at the highest event rate, from its report.
fn tracer_cost(md: &mut String, m: &Measured, w: &Workload) -> Result<()> {
    line(
        md,
        &format!(
            "## Tracer cost under load\n\nFrom oomtrace's own report (`tracer_cost`: getrusage of oomtrace \
             itself, the kernel's BPF run-time statistics, the ring's counters) of the last round of \
             `{}` (`bench_loop {}`), the highest event rate here.\n",
            w.title,
            w.args.join(" ")
        ),
    );
    line(
        md,
        "| configuration | events | events/s | lost | tracer CPU | tracer CPU (% of a core) | tracer peak RSS | BPF ns per allocator call |",
    );
    line(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (cfg, r) in m.configs.iter().zip(&m.reports) {
        let Some(r) = r else { continue };
        let c = &r["tracer_cost"];
        if c.is_null() {
            bail!("{}'s report has no tracer_cost", cfg.name);
        }
        let f = |k: &str| c[k].as_f64().unwrap_or(0.0);
        line(
            md,
            &format!(
                "| {} | {} | {:.0} | {} | {:.2} s | {:.0} % | {:.1} MiB | {} |",
                cfg.name,
                c["events"],
                f("events_per_s"),
                c["lost_events"],
                f("cpu_s"),
                f("cpu_pct"),
                f("peak_rss_bytes") / (1 << 20) as f64,
                c["bpf_ns_per_call"]
                    .as_f64()
                    .map_or("–".into(), |v| format!("{v:.0}")),
            ),
        );
    }
    line(
        md,
        "\nThe BPF time is the programs' own run time as the kernel counts it (`BPF_ENABLE_STATS`): it \
         excludes the uprobe trap and the uretprobe trampoline, and covers the traced processes' calls \
         only (the probes are attached to them alone). Lost events are counted by the kernel side and \
         shown in every report.\n",
    );
    Ok(())
}
