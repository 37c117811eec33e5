//! Variable-length integers and a bounds-checked cursor over an untrusted payload.
//!
//! Integers are LEB128 varints: 7 bits per byte, least significant group first, the high bit set
//! on every byte but the last, so a `u64` takes 1 to 10 bytes. Signed values are zigzag-mapped
//! first (0, -1, 1, -2, … → 0, 1, 2, 3, …) so small magnitudes stay short either way.
//!
//! [`Cursor`] is the only way payload bytes are read: each read is checked against what is left,
//! counts are checked against the bytes left before anything is allocated for them, and every
//! error names the absolute byte offset in the file.

use bytes::BufMut;

use super::error::RecordError;

/// Appends `v` as a LEB128 varint.
pub fn put_varint(buf: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8(v as u8 | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Maps a signed value to an unsigned one with small magnitudes first.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverts [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends `v` zigzag-mapped as a varint.
pub fn put_zigzag(buf: &mut impl BufMut, v: i64) {
    put_varint(buf, zigzag(v));
}

/// Appends a varint length followed by the bytes.
pub fn put_bytes(buf: &mut impl BufMut, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    buf.put_slice(bytes);
}

/// A read position in a payload that lies at byte `base` of the file.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`, which starts at byte `base` of the file.
    pub(crate) fn new(buf: &'a [u8], base: u64) -> Self {
        Self { buf, pos: 0, base }
    }

    /// Bytes consumed so far.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The file offset of the next byte.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// A [`RecordError::Malformed`] at the current position.
    pub(crate) fn malformed(&self, what: &'static str) -> RecordError {
        RecordError::Malformed {
            offset: self.offset(),
            what,
        }
    }

    fn ends(&self, field: &'static str) -> RecordError {
        RecordError::PayloadEnds {
            offset: self.offset(),
            field,
        }
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, RecordError> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.ends(field))?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads a varint of at most 10 bytes whose value fits in a `u64`.
    pub(crate) fn varint(&mut self, field: &'static str) -> Result<u64, RecordError> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                self.pos = start;
                return Err(self.ends(field));
            };
            self.pos += 1;
            let low = u64::from(b & 0x7f);
            if shift == 63 && low > 1 {
                self.pos = start;
                return Err(self.malformed("varint overflows 64 bits"));
            }
            v |= low << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.pos = start;
        Err(self.malformed("varint longer than 10 bytes"))
    }

    /// Reads a zigzag-mapped varint.
    pub(crate) fn zigzag(&mut self, field: &'static str) -> Result<i64, RecordError> {
        self.varint(field).map(unzigzag)
    }

    /// Reads a varint that must fit in a `u32`.
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, RecordError> {
        let start = self.pos;
        let v = self.varint(field)?;
        u32::try_from(v).map_err(|_| {
            self.pos = start;
            self.malformed("a 32-bit field holds a larger value")
        })
    }

    /// Reads a varint that must fit in a `u16`.
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, RecordError> {
        let start = self.pos;
        let v = self.varint(field)?;
        u16::try_from(v).map_err(|_| {
            self.pos = start;
            self.malformed("a 16-bit field holds a larger value")
        })
    }

    /// Reads a zigzag varint that must fit in an `i32`.
    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, RecordError> {
        let start = self.pos;
        let v = self.zigzag(field)?;
        i32::try_from(v).map_err(|_| {
            self.pos = start;
            self.malformed("a 32-bit signed field holds a larger value")
        })
    }

    /// Takes the next `len` bytes, if that many are left.
    pub(crate) fn take(&mut self, len: u64, field: &'static str) -> Result<&'a [u8], RecordError> {
        if len > self.remaining() as u64 {
            return Err(self.ends(field));
        }
        let out = &self.buf[self.pos..self.pos + len as usize];
        self.pos += len as usize;
        Ok(out)
    }

    /// Reads a varint length, then that many bytes.
    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], RecordError> {
        let start = self.pos;
        let len = self.varint(field)?;
        self.take(len, field).inspect_err(|_| self.pos = start)
    }

    /// Reads a varint length, then that many bytes of UTF-8.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, RecordError> {
        let start = self.pos;
        let bytes = self.bytes(field)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => {
                self.pos = start;
                Err(self.malformed("a string is not valid UTF-8"))
            }
        }
    }

    /// Reads an element count, checking that `count * min_size` bytes are left before anyone
    /// allocates room for that many elements ([`RecordError::AbsurdLength`] if not).
    pub(crate) fn count(
        &mut self,
        min_size: usize,
        field: &'static str,
    ) -> Result<usize, RecordError> {
        let start = self.pos;
        let n = self.varint(field)?;
        let fits = n
            .checked_mul(min_size.max(1) as u64)
            .is_some_and(|need| need <= self.remaining() as u64);
        if !fits {
            self.pos = start;
            return Err(RecordError::AbsurdLength {
                offset: self.offset(),
                len: n,
                max: (self.remaining() / min_size.max(1)) as u64,
            });
        }
        Ok(n as usize)
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self) -> Result<(), RecordError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.malformed("unexpected bytes after the end of the chunk's content"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0,
            1,
            127,
            128,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert!(b.len() <= 10);
            let mut c = Cursor::new(&b, 0);
            assert_eq!(c.varint("v").unwrap(), v);
            c.finish().unwrap();
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn overlong_and_overflowing_varints_are_errors() {
        let eleven = [0x80u8; 11];
        assert!(matches!(
            Cursor::new(&eleven, 5).varint("v"),
            Err(RecordError::Malformed { offset: 5, .. })
        ));
        let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(Cursor::new(&overflow, 0).varint("v").is_err());
        assert!(matches!(
            Cursor::new(&[0x80], 9).varint("v"),
            Err(RecordError::PayloadEnds { offset: 9, .. })
        ));
    }

    #[test]
    fn counts_are_checked_before_allocation() {
        let mut b = BytesMut::new();
        put_varint(&mut b, u64::MAX);
        assert!(matches!(
            Cursor::new(&b, 0).count(8, "n"),
            Err(RecordError::AbsurdLength { .. })
        ));
    }
}
