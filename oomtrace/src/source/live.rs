//! The only code that reads the event ring buffer: checks each record's length and decodes it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use aya::maps::{MapData, RingBuf};
use oomtrace_common::{MEM_EVENT_SIZE, MemEvent};

/// The ring buffer plus a count of records that did not decode.
pub struct RingReader {
    ring: RingBuf<MapData>,
    /// Records of the wrong length.
    pub malformed: u64,
}

impl RingReader {
    /// Wraps the kernel side's ring buffer.
    pub fn new(ring: RingBuf<MapData>) -> Self {
        Self { ring, malformed: 0 }
    }

    /// The next event, if one is queued.
    pub fn next_event(&mut self) -> Option<MemEvent> {
        loop {
            let item = self.ring.next()?;
            if let Some(ev) = decode(&item) {
                return Some(ev);
            }
            self.malformed += 1;
        }
    }
}

/// Decodes one record; `None` if its length is not that of a [`MemEvent`].
pub fn decode(bytes: &[u8]) -> Option<MemEvent> {
    if bytes.len() != MEM_EVENT_SIZE {
        return None;
    }
    // SAFETY: the length is checked, MemEvent is plain data valid for any bit pattern, and
    // read_unaligned tolerates the record's alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<MemEvent>()) })
}

impl AsRawFd for RingReader {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_fd().as_raw_fd()
    }
}

impl AsFd for RingReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_length_is_rejected() {
        assert!(decode(&[0u8; 63]).is_none());
        assert!(decode(&[0u8; 65]).is_none());
        let ev = decode(&[0u8; 64]).unwrap();
        assert_eq!(ev.kind, 0);
    }
}
