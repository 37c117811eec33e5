//! Heap profiles for profile stores: every push interval the largest processes' stacks become
//! gzip pprof profiles ([`crate::report::pprof`]), sent to a Pyroscope-compatible `/ingest`
//! (`format=pprof`, one request per process, named `oomtrace{host=…,comm=…,pid=…}`) and/or
//! written as one file per interval into a directory whose total size stays bounded.
//!
//! The profiles are built on the ingestion loop's task ([`Batch::build`]); sending and writing
//! happen on a task of their own ([`run`]), so a slow server never holds up tracing: a batch
//! that finds the previous one still under way is skipped.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};

use super::config::Export;
use crate::model::growth::Growth;
use crate::model::{Model, StackStats};
use crate::report::{Losses, Report, ResolvedStack, StackSource, SymbolSource};

/// Stacks per process put into a profile, the largest first.
const STACKS_PER_PROFILE: usize = 1000;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// File names in `--pprof-dir`: `oomtrace-<unix ms, 13 digits>.pb.gz`, so names sort by age.
const FILE_PREFIX: &str = "oomtrace-";
const FILE_SUFFIX: &str = ".pb.gz";

/// Where profiles are pushed: an `http://` server's `/ingest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `HOST` or `HOST:PORT` as given (the Host header).
    pub authority: String,
    /// Host to connect to.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    /// The ingest path (`/ingest`, or the given path when it ends with it).
    pub path: String,
}

impl Endpoint {
    /// Parses `http://HOST[:PORT][/PATH]`.
    pub fn parse(url: &str) -> Result<Self> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!(
                "pprof_push {url:?}: give an http:// URL (for https, push through a local \
                 forwarder such as Grafana Alloy)"
            );
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let path = path.split(['?', '#']).next().unwrap_or("");
        let bad_port = |p: &str| format!("pprof_push {url:?}: bad port {p:?}");
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, rest) = v6
                .split_once(']')
                .with_context(|| format!("pprof_push {url:?}: no closing ]"))?;
            match rest.strip_prefix(':') {
                Some(p) => (h, p.parse::<u16>().with_context(|| bad_port(p))?),
                None if rest.is_empty() => (h, 80),
                None => bail!(bad_port(rest)),
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().with_context(|| bad_port(p))?),
                None => (authority, 80),
            }
        };
        if host.is_empty() {
            bail!("pprof_push {url:?}: no host");
        }
        let path = path.trim_end_matches('/');
        let path = if path.ends_with("ingest") {
            format!("/{path}")
        } else if path.is_empty() {
            "/ingest".to_owned()
        } else {
            format!("/{path}/ingest")
        };
        Ok(Self {
            authority: authority.to_owned(),
            host: host.to_owned(),
            port,
            path,
        })
    }
}

/// One process's profile.
pub struct Profile {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// gzip `profile.proto`.
    pub gz: Vec<u8>,
}

/// One interval's profiles, and where they go.
pub struct Batch {
    /// Per process, for the push.
    pub profiles: Vec<Profile>,
    /// All of them in one profile, for the directory.
    pub whole: Option<Vec<u8>>,
    /// The interval, unix seconds.
    pub from_s: u64,
    /// Its end.
    pub until_s: u64,
    /// Push target.
    pub endpoint: Option<Endpoint>,
    /// Directory and its size bound.
    pub dir: Option<(PathBuf, u64)>,
    /// The `host` label.
    pub host: String,
}

impl Batch {
    /// The profiles of the `export.push_processes` live processes holding the most.
    pub fn build(
        model: &Model,
        stacks: &dyn StackSource,
        symbols: &mut dyn SymbolSource,
        export: &Export,
    ) -> Self {
        let mut procs: Vec<&crate::model::Process> = model
            .processes()
            .filter(|p| p.exit.is_none() && p.totals.outstanding_bytes > 0)
            .collect();
        procs.sort_by_key(|p| std::cmp::Reverse(p.totals.outstanding_bytes));
        procs.truncate(export.push_processes);
        let mut resolved = Vec::new();
        for p in &procs {
            let mut held: Vec<&StackStats> = p
                .stacks
                .iter()
                .filter(|s| s.counts.outstanding_bytes > 0)
                .collect();
            held.sort_by_key(|s| std::cmp::Reverse(s.counts.outstanding_bytes));
            held.truncate(STACKS_PER_PROFILE);
            for s in held {
                let (frames, walk) = crate::report::stack_frames_and_walk(p, s, stacks, symbols);
                resolved.push(ResolvedStack {
                    pid: p.pid,
                    key: s.key,
                    // A profile carries bytes, not verdicts.
                    growth: Growth::unknown(),
                    sizes: s.sizes.summary(),
                    lifetime_ms: None,
                    counts: s.counts,
                    frames,
                    walk,
                    leak: None,
                    resident_bytes: None,
                });
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let until_s = now.as_secs();
        let from_s = until_s.saturating_sub(export.push_interval.as_secs().max(1));
        let report = Report::from_resolved(
            model,
            &resolved,
            0,
            export.push_interval.as_secs_f64(),
            Losses::default(),
        );
        let endpoint = export
            .pprof_push
            .as_deref()
            .and_then(|u| Endpoint::parse(u).ok());
        let profiles = if endpoint.is_some() {
            procs
                .iter()
                .map(|p| Profile {
                    pid: p.pid,
                    comm: p.comm.clone(),
                    gz: crate::report::pprof::to_pprof(&report.clone().only_pid(p.pid)),
                })
                .collect()
        } else {
            Vec::new()
        };
        Self {
            whole: export
                .pprof_dir
                .is_some()
                .then(|| crate::report::pprof::to_pprof(&report)),
            profiles,
            from_s,
            until_s,
            endpoint,
            dir: export.pprof_dir.clone(),
            host: export.hostname.clone(),
        }
    }
}

/// Sends and writes every batch it is given, until the sender is gone.
pub async fn run(mut batches: tokio::sync::mpsc::Receiver<Batch>) {
    while let Some(batch) = batches.recv().await {
        if let (Some((dir, max)), Some(whole)) = (&batch.dir, &batch.whole)
            && let Err(e) = write_rotating(dir, *max, &whole[..])
        {
            crate::say!("oomtrace: warning: pprof dir: {e:#}");
        }
        if let Some(endpoint) = &batch.endpoint {
            let sent = tokio::time::timeout(
                REQUEST_TIMEOUT * (batch.profiles.len() as u32).max(1),
                push(endpoint, &batch),
            )
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => crate::say!(
                    "oomtrace: warning: pprof push to {}: {e:#}",
                    endpoint.authority
                ),
                Err(_) => crate::say!(
                    "oomtrace: warning: pprof push to {}: timed out",
                    endpoint.authority
                ),
            }
        }
    }
}

/// Pushes every profile of `batch` over one connection.
async fn push(endpoint: &Endpoint, batch: &Batch) -> Result<()> {
    if batch.profiles.is_empty() {
        return Ok(());
    }
    let stream = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .with_context(|| format!("cannot connect to {}", endpoint.authority))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let result = async {
        for p in &batch.profiles {
            let boundary = format!("oomtrace-{:016x}", fastrand_seed(p.pid, batch.until_s));
            let body = multipart(&boundary, &p.gz);
            let name = format!(
                "oomtrace{{host={},comm={},pid={}}}",
                label_value(&batch.host),
                label_value(&p.comm),
                p.pid
            );
            let uri = format!(
                "{}?name={}&from={}&until={}&format=pprof&spyName=oomtrace",
                endpoint.path,
                percent_encode(&name),
                batch.from_s,
                batch.until_s
            );
            let req = hyper::Request::post(uri)
                .header(hyper::header::HOST, &endpoint.authority)
                .header(
                    hyper::header::CONTENT_TYPE,
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(Full::new(Bytes::from(body)))?;
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let text = resp.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                bail!(
                    "{status} for pid {}: {}",
                    p.pid,
                    String::from_utf8_lossy(&text[..text.len().min(200)]).trim()
                );
            }
        }
        Ok(())
    }
    .await;
    drop(sender);
    let _ = driver.await;
    result
}

/// A boundary that cannot occur in the gzip data by accident often enough to matter.
fn fastrand_seed(pid: u32, t: u64) -> u64 {
    (u64::from(pid) << 32 ^ t).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

/// The `multipart/form-data` body with the profile as its `profile` part.
pub fn multipart(boundary: &str, gz: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(gz.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"; \
             filename=\"profile.pb.gz\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(gz);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// A label value Pyroscope's name syntax accepts (`,`, `=`, `{`, `}` and spaces replaced).
fn label_value(s: &str) -> String {
    let v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-/:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if v.is_empty() { "_".into() } else { v }
}

/// `application/x-www-form-urlencoded`-safe percent encoding of a query value.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Writes `gz` as the newest file of `dir`, then removes the oldest files until all of them
/// take at most `max` bytes.
pub fn write_rotating(dir: &Path, max: u64, gz: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let name = format!("{FILE_PREFIX}{ms:013}{FILE_SUFFIX}");
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, gz).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(&name))
        .with_context(|| format!("cannot rename {}", tmp.display()))?;
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let ours = n.starts_with(FILE_PREFIX) && n.ends_with(FILE_SUFFIX);
            Some((n, e.metadata().ok()?.len())).filter(|_| ours)
        })
        .collect();
    files.sort();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    for (n, len) in &files {
        if total <= max {
            break;
        }
        std::fs::remove_file(dir.join(n))
            .with_context(|| format!("cannot remove {}", dir.join(n).display()))?;
        total -= len;
    }
    if gz.len() as u64 > max {
        bail!(
            "a profile of {} bytes is larger than pprof_dir_max ({max} bytes): not kept",
            gz.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://pyroscope:4040").unwrap();
        assert_eq!(
            (
                e.host.as_str(),
                e.port,
                e.path.as_str(),
                e.authority.as_str()
            ),
            ("pyroscope", 4040, "/ingest", "pyroscope:4040")
        );
        assert_eq!(Endpoint::parse("http://h/ingest").unwrap().path, "/ingest");
        assert_eq!(Endpoint::parse("http://h/").unwrap().port, 80);
        assert_eq!(
            Endpoint::parse("http://h:1/tenant/a/").unwrap().path,
            "/tenant/a/ingest"
        );
        let v6 = Endpoint::parse("http://[::1]:4040").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 4040));
        assert!(Endpoint::parse("https://h").is_err());
        assert!(Endpoint::parse("http://h:x").is_err());
        assert!(Endpoint::parse("http://").is_err());
    }

    #[test]
    fn names_and_queries_are_escaped() {
        assert_eq!(label_value("my app,x=1"), "my_app_x_1");
        assert_eq!(percent_encode("a{b=c d}"), "a%7Bb%3Dc%20d%7D");
        let body = multipart("B", b"\x1f\x8b");
        assert!(body.starts_with(b"--B\r\nContent-Disposition: form-data; name=\"profile\""));
        assert!(body.ends_with(b"\r\n\x1f\x8b\r\n--B--\r\n"));
    }

    #[test]
    fn the_directory_keeps_the_newest_files_within_its_bound() {
        let dir = std::env::temp_dir().join(format!("oomtrace-pprof-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("unrelated.txt"), vec![0u8; 5000]).unwrap();
        for i in 0..6u8 {
            write_rotating(&dir, 2500, &[i; 1000]).unwrap();
            std::thread::sleep(Duration::from_millis(3));
        }
        let mut ours: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(FILE_SUFFIX))
            .map(|e| (e.file_name(), std::fs::read(e.path()).unwrap()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_values()
            .collect();
        assert_eq!(ours.len(), 2, "2 × 1000 bytes fit in 2500");
        assert_eq!(ours.pop().unwrap()[0], 5, "the newest is kept");
        assert_eq!(ours.pop().unwrap()[0], 4);
        assert!(
            dir.join("unrelated.txt").exists(),
            "other files are left alone"
        );
        assert!(write_rotating(&dir, 500, &[9; 1000]).is_err());
        let left = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(FILE_SUFFIX))
            .count();
        assert_eq!(left, 0, "nothing over the bound stays");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
