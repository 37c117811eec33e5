//! The fault-injection maps (`run --fail-*`): the rule the kernel applies, the per-process
//! address ranges its site criteria look up, and the records of the threads it stopped.

use std::collections::HashMap as StdMap;

use anyhow::{Context as _, Result, anyhow};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData};
use oomtrace_common::ConfigKey;
use oomtrace_common::inject::{Record, Rule, SiteKey};

use super::Probes;

/// Bits of a trie key that are the tgid.
const TGID_BITS: u32 = 32;

/// A key of the site and wrapper tries: a prefix of (tgid, address), big-endian.
type SiteTrieKey = Key<[u8; 12]>;
/// Trie entries at most, over all processes (the maps' sizes).
const MAX_SITE_KEYS: usize = 65536;
const MAX_WRAPPER_KEYS: usize = 262144;

/// The kernel's view of injection, handed to the thread that holds the command.
pub struct InjectMaps {
    records: HashMap<MapData, u32, Record>,
    sites: LpmTrie<MapData, [u8; 12], u8>,
    wrappers: LpmTrie<MapData, [u8; 12], u8>,
    ready: HashMap<MapData, u32, u8>,
    /// Keys put in per process (sites, wrappers), to take out when it gets new ones.
    keys: StdMap<u32, (Vec<SiteTrieKey>, Vec<SiteTrieKey>)>,
    site_keys: usize,
    wrapper_keys: usize,
}

impl Probes {
    /// Arms `rule` (exact mode's allocator probes only) and hands over the maps the holder
    /// thread serves it with.
    pub fn arm_injection(&mut self, rule: Rule) -> Result<InjectMaps> {
        let mut rules: Array<_, Rule> = Array::try_from(self.map_mut("INJECT_RULE")?)?;
        rules
            .set(0, rule, 0)
            .context("cannot write the injection rule")?;
        self.set_config(ConfigKey::InjectArmed, u64::from(rule.when.max(1)))?;
        let mut take = |name: &str| {
            self.ebpf
                .take_map(name)
                .ok_or_else(|| anyhow!("eBPF object has no map {name}"))
        };
        Ok(InjectMaps {
            records: HashMap::try_from(take("INJECTS")?)?,
            sites: LpmTrie::try_from(take("INJECT_SITES")?)?,
            wrappers: LpmTrie::try_from(take("INJECT_WRAPPERS")?)?,
            ready: HashMap::try_from(take("INJECT_READY")?)?,
            keys: StdMap::new(),
            site_keys: 0,
            wrapper_keys: 0,
        })
    }

    /// Writes one config word.
    pub fn set_config(&mut self, key: ConfigKey, value: u64) -> Result<()> {
        let mut config: Array<_, u64> = Array::try_from(self.map_mut("CONFIG")?)?;
        config
            .set(key as u32, value, 0)
            .with_context(|| format!("cannot set config word {key:?}"))
    }
}

impl InjectMaps {
    /// The record the kernel left for thread `tid` at its stop, taken out.
    pub fn take(&mut self, tid: u32) -> Option<Record> {
        let rec = self.records.get(&tid, 0).ok()?;
        let _ = self.records.remove(&tid);
        Some(rec)
    }

    /// Puts process `tgid`'s site and wrapper ranges (`[start, end)` each) in place of any it
    /// had, and lets its calls be decided. Returns how many ranges did not fit.
    pub fn set_ranges(
        &mut self,
        tgid: u32,
        sites: &[(u64, u64)],
        wrappers: &[(u64, u64)],
    ) -> usize {
        self.forget(tgid);
        let mut site_keys = Vec::new();
        let mut wrapper_keys = Vec::new();
        let mut left_out = 0;
        for &(start, end) in sites {
            for key in prefixes(tgid, start, end) {
                if self.site_keys >= MAX_SITE_KEYS || self.sites.insert(&key, 1, 0).is_err() {
                    left_out += 1;
                    break;
                }
                self.site_keys += 1;
                site_keys.push(key);
            }
        }
        for &(start, end) in wrappers {
            for key in prefixes(tgid, start, end) {
                if self.wrapper_keys >= MAX_WRAPPER_KEYS
                    || self.wrappers.insert(&key, 1, 0).is_err()
                {
                    left_out += 1;
                    break;
                }
                self.wrapper_keys += 1;
                wrapper_keys.push(key);
            }
        }
        self.keys.insert(tgid, (site_keys, wrapper_keys));
        let _ = self.ready.insert(tgid, 1, 0);
        left_out
    }

    /// Takes process `tgid`'s ranges out (it exec'd, or exited).
    pub fn forget(&mut self, tgid: u32) {
        let _ = self.ready.remove(&tgid);
        if let Some((sites, wrappers)) = self.keys.remove(&tgid) {
            for k in &sites {
                let _ = self.sites.remove(k);
            }
            for k in &wrappers {
                let _ = self.wrappers.remove(k);
            }
            self.site_keys -= sites.len();
            self.wrapper_keys -= wrappers.len();
        }
    }
}

/// The trie keys that cover `[start, end)` in process `tgid`: the range split into aligned
/// power-of-two blocks, each one prefix.
pub fn prefixes(tgid: u32, start: u64, end: u64) -> Vec<Key<[u8; 12]>> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        // The largest aligned block at `at` that fits before `end`.
        let align = if at == 0 {
            63
        } else {
            at.trailing_zeros().min(63)
        };
        let mut bits = align;
        while bits > 0 && at.checked_add(1u64 << bits).is_none_or(|e| e > end) {
            bits -= 1;
        }
        out.push(Key::new(TGID_BITS + 64 - bits, SiteKey::new(tgid, at).data));
        match at.checked_add(1u64 << bits) {
            Some(next) => at = next,
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocks of a range cover it exactly: every address inside is under one prefix, none
    /// outside is.
    #[test]
    fn prefixes_cover_a_range_exactly() {
        let (start, end) = (0x1003u64, 0x1100u64);
        let keys = prefixes(7, start, end);
        let covers = |addr: u64| {
            keys.iter().any(|k| {
                let bits = k.prefix_len() - TGID_BITS;
                let base = u64::from_be_bytes(k.data()[4..].try_into().unwrap());
                let mask = if bits == 0 {
                    0
                } else {
                    u64::MAX << (64 - bits)
                };
                k.data()[..4] == 7u32.to_be_bytes() && addr & mask == base
            })
        };
        for addr in 0xff0..0x1110 {
            assert_eq!(covers(addr), (start..end).contains(&addr), "{addr:#x}");
        }
        // 0x1003, 0x1004-7, 0x1008-f, 0x1010-1f, ..., 0x1080-ff: 7 blocks.
        assert_eq!(keys.len(), 7);
    }
}
