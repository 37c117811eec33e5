//! `oomtrace record`: the live event stream teed into a recording by a writer thread.
//!
//! The ingestion loop only moves events into a batch and hands full batches over a channel;
//! encoding and file I/O happen on the writer thread. Each batch becomes complete chunks, so a
//! recorder killed at any moment leaves a file that reads back up to its last batch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

use anyhow::{Context as _, Result, anyhow};
use oomtrace_common::MemEvent;

use super::{
    Counters, RecordError, RecordingWriter, Stack, Stacks, Symbol, SymbolOrigin, SymbolOrigins,
    Symbols,
};
use crate::report::ResolvedStack;
use crate::report::kernel::{KernelFrame, KernelStackReport};

/// Events handed to the writer at once.
const BATCH: usize = 4096;
/// Batches queued before the ingestion loop would wait (bounds the tracer's memory).
const QUEUE: usize = 64;
/// Footer counter keys (in `Counters::other`, by string id).
pub const KEY_DURATION_NS: &str = "duration_ns";
/// Monotonic time the session started (the origin of `--at`).
pub const KEY_START_NS: &str = "start_ns";
/// Present (value 1) when the recording was made with `--kernel`.
pub const KEY_KERNEL: &str = "kernel";
/// The `Symbols` chunk of kernel addresses uses this tgid (no process has it: pid_max < 2^22).
pub const KERNEL_SYMBOLS_TGID: u32 = u32::MAX;

/// The id under which kernel stack `id` is stored in a `Stacks` chunk: negative ids below -1
/// (user stack ids are never negative and -1 means "no stack"), so both share the chunk type.
pub fn kernel_stack_record_id(id: i32) -> i32 {
    -2 - id
}

enum Msg {
    Events(Vec<MemEvent>),
    Gpu(u64, Vec<u8>),
    /// The memory cgroup of an OOM victim (not carried by events: a path).
    OomCgroup(u32, String),
    /// `--kernel`: kernel stacks (id, frames) and the names of their frames.
    Kernel(Vec<(i32, Vec<u64>)>, Vec<KernelFrame>),
    Finish(Box<Finish>),
}

struct Finish {
    stacks: Vec<(i32, Vec<u64>)>,
    resolved: Vec<ResolvedStack>,
    counters: Counters,
    start_ns: u64,
    duration_ns: u64,
}

/// The tee into a recording file.
pub struct Recorder {
    path: PathBuf,
    batch: Vec<MemEvent>,
    tx: Option<SyncSender<Msg>>,
    last_gpu: Option<Vec<u8>>,
    thread: Option<JoinHandle<Result<u64, RecordError>>>,
    /// Set once a write failed and the file was cut at its last complete chunk.
    cut: Arc<AtomicBool>,
}

impl Recorder {
    /// Creates the file now (so a bad path fails before tracing starts) and the writer thread.
    pub fn create(path: &Path, meta: &str) -> Result<Self> {
        let writer = RecordingWriter::create(path, meta)
            .map_err(|e| anyhow!("cannot create recording {}: {e}", path.display()))?;
        let (tx, rx) = sync_channel(QUEUE);
        let cut = Arc::new(AtomicBool::new(false));
        let (name, flag) = (path.to_owned(), cut.clone());
        let thread = std::thread::Builder::new()
            .name("oomtrace-record".into())
            .spawn(move || write_thread(writer, rx, &name, &flag))
            .context("cannot start the recording thread")?;
        Ok(Self {
            path: path.to_owned(),
            batch: Vec::with_capacity(BATCH),
            tx: Some(tx),
            last_gpu: None,
            thread: Some(thread),
            cut,
        })
    }

    /// Whether a write failed (the disk is full, say): the file was cut at its last complete
    /// chunk, one line said so, and nothing more is written.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    /// Adds one event.
    pub fn push(&mut self, ev: &MemEvent) {
        self.batch.push(*ev);
        if self.batch.len() >= BATCH {
            self.send_batch();
        }
    }

    /// Hands the pending events to the writer (at the end of each drain).
    pub fn send_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        if let Some(tx) = &self.tx {
            // A writer that died (disk full) has reported its error; later events are dropped.
            let _ = tx.send(Msg::Events(batch));
        }
    }

    /// Records a GPU snapshot taken at `ts_ns` (only "unchanged" when it equals the last one).
    pub fn gpu(&mut self, ts_ns: u64, snapshot: &serde_json::Value) {
        let json = snapshot.to_string().into_bytes();
        let json = if self.last_gpu.as_ref() == Some(&json) {
            Vec::new()
        } else {
            self.last_gpu = Some(json.clone());
            json
        };
        self.send_batch();
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Gpu(ts_ns, json));
        }
    }

    /// Records the memory cgroup of OOM victim `pid`.
    pub fn oom_cgroup(&mut self, pid: u32, cgroup: &str) {
        self.send_batch();
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::OomCgroup(pid, cgroup.to_owned()));
        }
    }

    /// Records the kernel stacks of a `--kernel` session: their frames and the frames' names.
    pub fn kernel_stacks(&mut self, stacks: &[KernelStackReport]) {
        self.send_batch();
        let mut ids = Vec::new();
        let mut frames: Vec<KernelFrame> = Vec::new();
        for k in stacks.iter().filter(|k| k.stack_id >= 0) {
            ids.push((k.stack_id, k.frames.iter().map(|f| f.addr).collect()));
            frames.extend(k.frames.iter().cloned());
        }
        frames.sort_by_key(|f| f.addr);
        frames.dedup_by_key(|f| f.addr);
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Kernel(ids, frames));
        }
    }

    /// Writes the stacks, the resolved symbols and the counters, then closes the file.
    /// Returns the recording's size in bytes.
    pub fn finish(
        mut self,
        stacks: Vec<(i32, Vec<u64>)>,
        resolved: Vec<ResolvedStack>,
        counters: Counters,
        start_ns: u64,
        duration_ns: u64,
    ) -> Result<u64> {
        self.send_batch();
        let finish = Finish {
            stacks,
            resolved,
            counters,
            start_ns,
            duration_ns,
        };
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Finish(Box::new(finish)));
        }
        let thread = self
            .thread
            .take()
            .ok_or_else(|| anyhow!("recorder already finished"))?;
        let result = thread
            .join()
            .map_err(|_| anyhow!("the recording thread panicked"))?;
        result.map_err(|e| anyhow!("writing recording {} failed: {e}", self.path.display()))
    }
}

/// The writer thread: the loop, then the footer; a failed write cuts the file back to its last
/// complete chunk and says so once (returning what was kept).
fn write_thread(
    mut w: RecordingWriter<std::fs::File>,
    rx: Receiver<Msg>,
    path: &Path,
    cut: &AtomicBool,
) -> Result<u64, RecordError> {
    // Kept to cut the file when the footer (which consumes the writer) fails.
    let spare = w.get_ref().try_clone().ok();
    let stop = |e: RecordError, good: u64, chunks: u64| -> Result<u64, RecordError> {
        if let Some(f) = &spare {
            let _ = f.set_len(good);
        }
        cut.store(true, Ordering::Relaxed);
        crate::say!(
            "oomtrace: error: {e}: recording {} stops at byte {good} ({chunks} complete \
             chunk(s), readable with `oomtrace report`); nothing more is recorded",
            path.display()
        );
        Ok(good)
    };
    let finish_msg = match write_loop(&mut w, &rx) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(w.bytes_written()),
        Err(e) => return stop(e, w.bytes_written(), w.chunks_written()),
    };
    let counters = match finish(&mut w, *finish_msg) {
        Ok(c) => c,
        Err(e) => return stop(e, w.bytes_written(), w.chunks_written()),
    };
    let (good, chunks) = (w.bytes_written(), w.chunks_written());
    match w.finish(&counters) {
        Ok(_) => Ok(good),
        Err(e) => stop(e, good, chunks),
    }
}

/// Writes every message until `Finish` (returned) or the session hangs up (`None`).
fn write_loop(
    w: &mut RecordingWriter<std::fs::File>,
    rx: &Receiver<Msg>,
) -> Result<Option<Box<Finish>>, RecordError> {
    let mut kernel = false;
    loop {
        let msg = match rx.try_recv() {
            Ok(msg) => msg,
            Err(TryRecvError::Empty) => {
                // Idle: make what we have durable before waiting.
                w.flush()?;
                match rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => return Ok(None),
                }
            }
            Err(TryRecvError::Disconnected) => {
                w.flush()?;
                return Ok(None);
            }
        };
        match msg {
            Msg::Events(events) => {
                for ev in &events {
                    w.push_event(ev)?;
                }
            }
            Msg::Gpu(ts_ns, json) => w.write_gpu(&super::Gpu { ts_ns, json })?,
            Msg::OomCgroup(pid, cgroup) => {
                let json = serde_json::json!({ "pid": pid, "cgroup": cgroup })
                    .to_string()
                    .into_bytes();
                w.write_oom(&super::Oom {
                    ts_ns: 0,
                    tgid: pid,
                    json,
                })?;
            }
            Msg::Kernel(stacks, frames) => {
                kernel = true;
                write_kernel(w, stacks, frames)?;
            }
            Msg::Finish(mut f) => {
                if kernel {
                    f.counters.other.push((w.intern(KEY_KERNEL), 1));
                }
                return Ok(Some(f));
            }
        }
    }
}

fn write_kernel(
    w: &mut RecordingWriter<std::fs::File>,
    stacks: Vec<(i32, Vec<u64>)>,
    frames: Vec<KernelFrame>,
) -> Result<(), RecordError> {
    let stacks = Stacks {
        stacks: stacks
            .into_iter()
            .map(|(id, frames)| Stack {
                id: kernel_stack_record_id(id),
                frames,
            })
            .collect(),
    };
    w.write_stacks(&stacks)?;
    let mut symbols = Vec::with_capacity(frames.len());
    for f in frames {
        symbols.push(Symbol {
            addr: f.addr,
            function: w.intern(f.function.as_deref().unwrap_or("")),
            module: w.intern(f.module.as_deref().unwrap_or("")),
            file: 0,
            line: 0,
        });
    }
    w.write_symbols(&Symbols {
        tgid: KERNEL_SYMBOLS_TGID,
        symbols,
    })
}

/// Everything but the footer; returns the footer's counters.
fn finish(w: &mut RecordingWriter<std::fs::File>, f: Finish) -> Result<Counters, RecordError> {
    w.flush()?;
    let stacks = Stacks {
        stacks: f
            .stacks
            .into_iter()
            .map(|(id, frames)| Stack { id, frames })
            .collect(),
    };
    w.write_stacks(&stacks)?;
    let mut by_pid: std::collections::BTreeMap<u32, Vec<Symbol>> = Default::default();
    let mut origins: std::collections::BTreeMap<u32, Vec<SymbolOrigin>> = Default::default();
    for r in &f.resolved {
        for frame in &r.frames {
            // Where the frame lies, for naming it later (`report --debug-dir`).
            if frame.build_id.is_some() || frame.offset.is_some() {
                let build_id = w.intern(frame.build_id.as_deref().unwrap_or(""));
                origins.entry(r.pid).or_default().push(SymbolOrigin {
                    addr: frame.addr,
                    build_id,
                    offset: frame.offset,
                });
            }
            let function = w.intern(frame.function.as_deref().unwrap_or(""));
            let module = w.intern(frame.module.as_deref().unwrap_or(""));
            let file = w.intern(frame.file.as_deref().unwrap_or(""));
            let symbol = Symbol {
                addr: frame.addr,
                function,
                module,
                file,
                line: frame.line.unwrap_or(0),
            };
            by_pid.entry(r.pid).or_default().push(symbol);
        }
    }
    for (tgid, mut symbols) in by_pid {
        symbols.sort_by_key(|s| s.addr);
        symbols.dedup_by_key(|s| s.addr);
        w.write_symbols(&Symbols { tgid, symbols })?;
    }
    for (tgid, mut origins) in origins {
        origins.sort_by_key(|o| o.addr);
        origins.dedup_by_key(|o| o.addr);
        w.write_symbol_origins(&SymbolOrigins { tgid, origins })?;
    }
    let mut counters = f.counters;
    counters.other.push((w.intern(KEY_START_NS), f.start_ns));
    counters
        .other
        .push((w.intern(KEY_DURATION_NS), f.duration_ns));
    w.write_counters(&counters)?;
    Ok(counters)
}
