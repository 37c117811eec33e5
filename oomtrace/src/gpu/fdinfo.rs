//! Parsing of one `/proc/<pid>/fdinfo/<fd>` text: DRM clients and dma-bufs.
//!
//! The DRM keys follow the kernel's `Documentation/gpu/drm-usage-stats.rst`:
//! one `key: value` per line, split at the first `:`, both sides trimmed (tabs
//! and spaces alike). A file is a DRM client when it has a `drm-driver:` line.
//!
//! - memory: `drm-{total,shared,resident,purgeable,active}-<region>: <uint> [KiB|MiB|GiB]`
//!   (a bare number is bytes); the deprecated amdgpu `drm-memory-<region>` is
//!   an alias of `drm-resident-<region>` and only fills it when the current key
//!   is absent.
//! - engines: `drm-total-cycles-`, `drm-engine-capacity-`, `drm-engine-`,
//!   `drm-cycles-`, `drm-maxfreq-` — the longer prefixes are tried first, so
//!   `drm-total-cycles-rcs` is never read as memory region `cycles-rcs`.
//! - anything else is kept verbatim in [`DrmFdinfo::other`].
//!
//! A bad value on one line (not a number, unknown unit, overflow) skips that
//! key and adds a line to [`DrmFdinfo::warnings`]; only a missing or
//! unreadable client id makes the whole file unusable ([`FdinfoError`]).
//!
//! A dma-buf fd's fdinfo has `size:` and `exp_name:` lines instead; see
//! [`parse_dmabuf_fdinfo`].

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Memory one client holds in one region, in bytes; `None` where the driver prints no such key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegionMemory {
    /// `drm-total-<region>`: all buffers the client can reach, shared or not.
    pub total: Option<u64>,
    /// `drm-shared-<region>`: buffers shared with other clients.
    pub shared: Option<u64>,
    /// `drm-resident-<region>` (or legacy `drm-memory-<region>`): buffers present in the region.
    pub resident: Option<u64>,
    /// `drm-purgeable-<region>`: resident buffers the driver may discard.
    pub purgeable: Option<u64>,
    /// `drm-active-<region>`: buffers in use by the GPU right now.
    pub active: Option<u64>,
}

/// Use of one engine by one client; `None` where the driver prints no such key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EngineUsage {
    /// `drm-engine-<e>`: busy time in nanoseconds.
    pub busy_ns: Option<u64>,
    /// `drm-cycles-<e>`: cycles spent on this client's work.
    pub cycles: Option<u64>,
    /// `drm-total-cycles-<e>`: cycles elapsed on the engine in total.
    pub total_cycles: Option<u64>,
    /// `drm-engine-capacity-<e>`: how many engines of this class there are.
    pub capacity: Option<u64>,
    /// `drm-maxfreq-<e>`: the engine's top frequency in Hz.
    pub maxfreq_hz: Option<u64>,
}

/// One DRM client as printed in one fdinfo file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DrmFdinfo {
    /// `drm-driver`: the kernel driver's name (`amdgpu`, `i915`, `xe`, ...).
    pub driver: String,
    /// `drm-pdev`: the device's bus address, absent for some platform devices.
    pub pdev: Option<String>,
    /// `drm-client-id`: the `struct drm_file`, shared by every fd that refers to it.
    pub client_id: u64,
    /// Memory per region name (`vram`, `gtt`, `cpu`, `vram0`, `system`, ...).
    pub regions: BTreeMap<String, RegionMemory>,
    /// Engine use per engine name (`gfx`, `render`, `rcs`, ...).
    pub engines: BTreeMap<String, EngineUsage>,
    /// Every other key, value trimmed (`pos`, `pasid`, `amd-requested-vram`, ...).
    pub other: BTreeMap<String, String>,
    /// One line per key that was skipped, e.g. for a value that is not a number.
    pub warnings: Vec<String>,
}

/// One dma-buf fd's fdinfo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DmabufFdinfo {
    /// `size`: the buffer's size in bytes.
    pub size: u64,
    /// `exp_name`: the exporter (`drm`, `amdgpu`, `system`, ...).
    pub exp_name: String,
    /// `ino`: the buffer's inode, the same in every fd and process sharing it.
    pub ino: Option<u64>,
    /// `name`: the name user space gave the buffer, if any.
    pub name: Option<String>,
}

/// Why an fdinfo file that claims to be a DRM client or dma-buf cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FdinfoError {
    /// The `drm-driver:` line has an empty value.
    EmptyDriver,
    /// There is a `drm-driver:` line but no `drm-client-id:`, so the client cannot be identified.
    MissingClientId,
    /// `drm-client-id` is not an unsigned decimal number; holds the value.
    BadClientId(String),
    /// A dma-buf's `size` is not an unsigned decimal number; holds the value.
    BadDmabufSize(String),
}

impl fmt::Display for FdinfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyDriver => write!(f, "drm-driver is empty"),
            Self::MissingClientId => write!(f, "DRM fdinfo without drm-client-id"),
            Self::BadClientId(v) => write!(f, "drm-client-id {:?} is not a number", clip(v)),
            Self::BadDmabufSize(v) => write!(f, "dma-buf size {:?} is not a number", clip(v)),
        }
    }
}

impl std::error::Error for FdinfoError {}

/// Which memory counter a key sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemField {
    Total,
    Shared,
    Resident,
    Purgeable,
    Active,
    /// `drm-memory-<region>`: the deprecated alias of resident.
    Legacy,
}

/// Which engine counter a key sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EngineField {
    BusyNs,
    Cycles,
    TotalCycles,
    Capacity,
    MaxFreq,
}

/// What a key means, with the region or engine name it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key<'a> {
    Driver,
    Pdev,
    ClientId,
    Memory(MemField, &'a str),
    Engine(EngineField, &'a str),
    Other,
}

/// Engine prefixes, longer ones before the prefixes they extend.
const ENGINE_PREFIXES: [(&str, EngineField); 5] = [
    ("drm-total-cycles-", EngineField::TotalCycles),
    ("drm-engine-capacity-", EngineField::Capacity),
    ("drm-engine-", EngineField::BusyNs),
    ("drm-cycles-", EngineField::Cycles),
    ("drm-maxfreq-", EngineField::MaxFreq),
];

/// Memory prefixes; tried after [`ENGINE_PREFIXES`] so `drm-total-cycles-` wins over `drm-total-`.
const MEMORY_PREFIXES: [(&str, MemField); 6] = [
    ("drm-total-", MemField::Total),
    ("drm-shared-", MemField::Shared),
    ("drm-resident-", MemField::Resident),
    ("drm-purgeable-", MemField::Purgeable),
    ("drm-active-", MemField::Active),
    ("drm-memory-", MemField::Legacy),
];

/// Most per-line warnings kept for one file; more are summed up in one last line.
pub const MAX_WARNINGS_PER_FILE: usize = 32;

const MEMORY_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
];
const NS_UNITS: &[(&str, u64)] = &[("", 1), ("ns", 1)];
const COUNT_UNITS: &[(&str, u64)] = &[("", 1)];
const HZ_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("Hz", 1),
    ("KHz", 1_000),
    ("kHz", 1_000),
    ("MHz", 1_000_000),
    ("GHz", 1_000_000_000),
];

/// Names a key, trying longer prefixes first.
fn classify(key: &str) -> Key<'_> {
    match key {
        "drm-driver" => return Key::Driver,
        "drm-pdev" => return Key::Pdev,
        "drm-client-id" => return Key::ClientId,
        _ => {}
    }
    for (prefix, field) in ENGINE_PREFIXES {
        if let Some(name) = key.strip_prefix(prefix) {
            return if name.is_empty() {
                Key::Other
            } else {
                Key::Engine(field, name)
            };
        }
    }
    for (prefix, field) in MEMORY_PREFIXES {
        if let Some(name) = key.strip_prefix(prefix) {
            return if name.is_empty() {
                Key::Other
            } else {
                Key::Memory(field, name)
            };
        }
    }
    Key::Other
}

/// Splits fdinfo text into trimmed `(line number, key, value)`; lines without `:` give `Err(line)`.
fn fields(text: &str) -> impl Iterator<Item = (usize, Result<(&str, &str), &str>)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return None;
        }
        let item = match trimmed.split_once(':') {
            Some((k, v)) => Ok((k.trim(), v.trim())),
            None => Err(trimmed),
        };
        Some((i + 1, item))
    })
}

/// Reads `<uint> [unit]` and scales it by the unit's factor from `units` (`""` = no unit).
pub(crate) fn parse_quantity(value: &str, units: &[(&str, u64)]) -> Result<u64, String> {
    let mut words = value.split_whitespace();
    let number = words.next().ok_or_else(|| "empty value".to_string())?;
    let unit = words.next().unwrap_or("");
    if words.next().is_some() {
        return Err(format!("unexpected text after {number:?} {unit:?}"));
    }
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{:?} is not a number", clip(number)))?;
    let factor = units
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, f)| *f)
        .ok_or_else(|| format!("unknown unit {:?}", clip(unit)))?;
    n.checked_mul(factor)
        .ok_or_else(|| format!("{:?} overflows 64 bits", clip(value)))
}

/// Parses one fdinfo text; `Ok(None)` when it is not a DRM client (no `drm-driver:` line).
pub fn parse_fdinfo(text: &str) -> Result<Option<DrmFdinfo>, FdinfoError> {
    let has_driver = fields(text).any(|(_, f)| matches!(f, Ok(("drm-driver", _))));
    if !has_driver {
        return Ok(None);
    }
    let mut info = DrmFdinfo::default();
    let mut driver = None;
    let mut client_id = None;
    let mut legacy = BTreeMap::new();
    for (line, field) in fields(text) {
        let (key, value) = match field {
            Ok(kv) => kv,
            Err(raw) => {
                info.warnings.push(format!(
                    "line {line}: no ':' in {:?}; line skipped",
                    clip(raw)
                ));
                continue;
            }
        };
        match classify(key) {
            Key::Driver => driver = Some(value.to_string()),
            Key::Pdev if value.is_empty() => {
                info.warnings
                    .push(format!("line {line}: drm-pdev is empty; ignored"));
            }
            Key::Pdev => info.pdev = Some(value.to_string()),
            Key::ClientId => client_id = Some(value.to_string()),
            Key::Memory(field, region) => match parse_quantity(value, MEMORY_UNITS) {
                Ok(bytes) if field == MemField::Legacy => {
                    legacy.insert(region.to_string(), bytes);
                }
                Ok(bytes) => set_memory(
                    info.regions.entry(region.to_string()).or_default(),
                    field,
                    bytes,
                ),
                Err(why) => info
                    .warnings
                    .push(format!("line {line}: {key}: {why}; key skipped")),
            },
            Key::Engine(field, engine) => match parse_quantity(value, engine_units(field)) {
                Ok(n) => set_engine(
                    info.engines.entry(engine.to_string()).or_default(),
                    field,
                    n,
                ),
                Err(why) => info
                    .warnings
                    .push(format!("line {line}: {key}: {why}; key skipped")),
            },
            Key::Other => {
                info.other.insert(key.to_string(), value.to_string());
            }
        }
    }
    for (region, bytes) in legacy {
        info.regions
            .entry(region)
            .or_default()
            .resident
            .get_or_insert(bytes);
    }
    if info.warnings.len() > MAX_WARNINGS_PER_FILE {
        let more = info.warnings.len() - MAX_WARNINGS_PER_FILE;
        info.warnings.truncate(MAX_WARNINGS_PER_FILE);
        info.warnings
            .push(format!("{more} more lines with problems"));
    }
    info.driver = driver.unwrap_or_default();
    if info.driver.is_empty() {
        return Err(FdinfoError::EmptyDriver);
    }
    let id = client_id.ok_or(FdinfoError::MissingClientId)?;
    info.client_id = id
        .parse()
        .map_err(|_| FdinfoError::BadClientId(id.clone()))?;
    Ok(Some(info))
}

/// Parses a dma-buf fd's fdinfo; `Ok(None)` unless it has both `size:` and `exp_name:` lines.
pub fn parse_dmabuf_fdinfo(text: &str) -> Result<Option<DmabufFdinfo>, FdinfoError> {
    let mut size = None;
    let mut exp_name = None;
    let mut ino = None;
    let mut name = None;
    for (_, field) in fields(text) {
        match field {
            Ok(("size", v)) => size = Some(v),
            Ok(("exp_name", v)) => exp_name = Some(v),
            Ok(("ino", v)) => ino = v.parse().ok(),
            Ok(("name", v)) if !v.is_empty() => name = Some(v.to_string()),
            _ => {}
        }
    }
    let (Some(size), Some(exp_name)) = (size, exp_name) else {
        return Ok(None);
    };
    let size = size
        .parse()
        .map_err(|_| FdinfoError::BadDmabufSize(size.to_string()))?;
    Ok(Some(DmabufFdinfo {
        size,
        exp_name: exp_name.to_string(),
        ino,
        name,
    }))
}

fn engine_units(field: EngineField) -> &'static [(&'static str, u64)] {
    match field {
        EngineField::BusyNs => NS_UNITS,
        EngineField::MaxFreq => HZ_UNITS,
        EngineField::Cycles | EngineField::TotalCycles | EngineField::Capacity => COUNT_UNITS,
    }
}

fn set_memory(region: &mut RegionMemory, field: MemField, bytes: u64) {
    let slot = match field {
        MemField::Total => &mut region.total,
        MemField::Shared => &mut region.shared,
        MemField::Resident | MemField::Legacy => &mut region.resident,
        MemField::Purgeable => &mut region.purgeable,
        MemField::Active => &mut region.active,
    };
    *slot = Some(bytes);
}

fn set_engine(engine: &mut EngineUsage, field: EngineField, n: u64) {
    let slot = match field {
        EngineField::BusyNs => &mut engine.busy_ns,
        EngineField::Cycles => &mut engine.cycles,
        EngineField::TotalCycles => &mut engine.total_cycles,
        EngineField::Capacity => &mut engine.capacity,
        EngineField::MaxFreq => &mut engine.maxfreq_hz,
    };
    *slot = Some(n);
}

/// Shortens text quoted in a message to at most 64 characters.
pub(crate) fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

#[cfg(test)]
#[path = "fdinfo_tests.rs"]
mod tests;
