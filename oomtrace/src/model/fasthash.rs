//! A fast hasher for the model's integer keys (addresses, pids, stack keys).
//!
//! std's SipHash is built to resist hash flooding from untrusted keys; the model's keys come
//! from the kernel side and are hashed several times per event, where SipHash was a fifth of the
//! pipeline's time. This is a multiply-and-rotate mix: the product's high bits are well mixed,
//! and `finish` rotates them down to where hashbrown takes its bucket index (the low bits),
//! so 16-byte-aligned addresses spread as well as any.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Odd 64-bit constant from the golden ratio.
const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// The hasher (one `u64` of state).
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn mix(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }
    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.mix(u64::from(v));
    }
    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.mix(u64::from(v));
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.mix(u64::from(v));
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }
    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.mix(v as u64);
    }
    #[inline]
    fn write_i32(&mut self, v: i32) {
        self.mix(v as u32 as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher as _, BuildHasherDefault};

    use super::*;

    #[test]
    fn aligned_addresses_fill_the_low_bits() {
        // 4096 blocks 16 bytes apart must land in most of 4096 buckets, as hashbrown indexes.
        let b = BuildHasherDefault::<FastHasher>::default();
        let mut used = std::collections::HashSet::new();
        for i in 0..4096u64 {
            used.insert(b.hash_one(0x5555_0000_0000u64 + i * 16) & 4095);
        }
        assert!(
            used.len() > 2500,
            "only {} of 4096 buckets used",
            used.len()
        );
    }

    #[test]
    fn map_works_as_a_map() {
        let mut m: FastMap<u64, u32> = FastMap::default();
        for i in 0..1000u64 {
            m.insert(i * 4096, i as u32);
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m.get(&(999 * 4096)), Some(&999));
        assert_eq!(m.remove(&0), Some(0));
        assert!(!m.contains_key(&0));
    }
}
