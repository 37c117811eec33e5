//! The container: a versioned header, then self-delimiting, checksummed chunks.
//!
//! ```text
//! header: magic "OOMTRACE" (8) | version u16 | flags u16 | created_unix_ns u64
//!         | meta_len u32 (≤ 64 KiB) | meta (UTF-8) | crc32 u32 over all of the above
//! chunk:  len u32 (≤ 16 MiB) | type u8 | payload (len bytes) | crc32 u32 over len, type, payload
//! ```
//!
//! All fixed-width integers are little-endian. The container knows nothing of payloads: a chunk
//! type is a byte (see [`super::codec::ChunkType`]). [`ChunkWriter`] writes each chunk with one
//! `write_all` followed by a flush, so a killed recorder or a full disk leaves a file whose every
//! complete chunk is intact; [`ChunkReader`] yields chunks until the end, and reports an
//! incomplete last chunk as [`RecordError::Truncated`] so the caller can keep the prefix.

use std::io::{self, Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use super::error::RecordError;

/// The first eight bytes of every recording.
pub const MAGIC: [u8; 8] = *b"OOMTRACE";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// The largest chunk payload, in bytes; a larger length field is corruption.
pub const MAX_CHUNK_LEN: u32 = 16 << 20;
/// The largest header meta string, in bytes.
pub const MAX_META_LEN: u32 = 64 << 10;
/// Bytes of framing around each chunk's payload (length, type, CRC).
pub const CHUNK_OVERHEAD: u64 = 9;

/// Byte offset of the header's meta length field.
const META_LEN_OFFSET: u64 = 20;

/// The file header (magic and version are implied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Reserved: written as 0 by version 1 and ignored when read.
    pub flags: u16,
    /// When the recording started, in nanoseconds since the Unix epoch.
    pub created_unix_ns: u64,
    /// Free-form text (command line, host, tool version), at most [`MAX_META_LEN`] bytes.
    pub meta: String,
}

impl Header {
    /// A header stamped with the current time.
    pub fn new(meta: impl Into<String>) -> Self {
        let created_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self {
            flags: 0,
            created_unix_ns,
            meta: meta.into(),
        }
    }

    /// The header's size in the file.
    pub fn encoded_len(&self) -> u64 {
        META_LEN_OFFSET + 4 + self.meta.len() as u64 + 4
    }

    /// Appends the header's bytes.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), RecordError> {
        let meta_len = u32::try_from(self.meta.len())
            .ok()
            .filter(|&n| n <= MAX_META_LEN)
            .ok_or(RecordError::MetaTooLong {
                len: self.meta.len() as u64,
            })?;
        let start = buf.len();
        buf.put_slice(&MAGIC);
        buf.put_u16_le(VERSION);
        buf.put_u16_le(self.flags);
        buf.put_u64_le(self.created_unix_ns);
        buf.put_u32_le(meta_len);
        buf.put_slice(self.meta.as_bytes());
        let crc = crc32fast::hash(&buf[start..]);
        buf.put_u32_le(crc);
        Ok(())
    }

    /// Reads and checks a header from the start of a file.
    pub fn read_from<R: Read>(r: &mut R) -> Result<Self, RecordError> {
        let truncated = |offset| RecordError::Truncated {
            offset,
            what: "the header",
        };
        let mut fixed = [0u8; 24];
        let n = read_full(r, &mut fixed[..8])?;
        if n == 0 {
            return Err(RecordError::Empty);
        }
        if fixed[..n] != MAGIC[..n] {
            let mut found = [0u8; 8];
            found.copy_from_slice(&fixed[..8]);
            return Err(RecordError::BadMagic { found });
        }
        if n < 8 {
            return Err(truncated(0));
        }
        if read_full(r, &mut fixed[8..10])? < 2 {
            return Err(truncated(0));
        }
        let version = u16::from_le_bytes([fixed[8], fixed[9]]);
        if version != VERSION {
            return Err(RecordError::UnsupportedVersion { found: version });
        }
        if read_full(r, &mut fixed[10..])? < 14 {
            return Err(truncated(0));
        }
        let flags = u16::from_le_bytes([fixed[10], fixed[11]]);
        let created_unix_ns = u64::from_le_bytes(fixed[12..20].try_into().expect("8 bytes"));
        let meta_len = u32::from_le_bytes(fixed[20..24].try_into().expect("4 bytes"));
        if meta_len > MAX_META_LEN {
            return Err(RecordError::AbsurdLength {
                offset: META_LEN_OFFSET,
                len: meta_len.into(),
                max: MAX_META_LEN.into(),
            });
        }
        let mut meta = Vec::new();
        r.take(meta_len.into()).read_to_end(&mut meta)?;
        let mut crc = [0u8; 4];
        if meta.len() < meta_len as usize || read_full(r, &mut crc)? < 4 {
            return Err(truncated(0));
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&fixed);
        hasher.update(&meta);
        if hasher.finalize() != u32::from_le_bytes(crc) {
            return Err(RecordError::Malformed {
                offset: 0,
                what: "header checksum mismatch",
            });
        }
        let meta = String::from_utf8(meta).map_err(|_| RecordError::Malformed {
            offset: META_LEN_OFFSET + 4,
            what: "the header's meta string is not valid UTF-8",
        })?;
        Ok(Self {
            flags,
            created_unix_ns,
            meta,
        })
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes the header, then whole chunks; each chunk reaches the writer in one `write_all`.
pub struct ChunkWriter<W: Write> {
    out: W,
    open: Option<u8>,
    payload: BytesMut,
    frame: BytesMut,
    offset: u64,
    chunks: u64,
    failed: bool,
}

impl<W: Write> ChunkWriter<W> {
    /// Writes `header` to `out` and flushes it.
    pub fn new(mut out: W, header: &Header) -> Result<Self, RecordError> {
        let mut frame = BytesMut::with_capacity(header.encoded_len() as usize);
        header.encode(&mut frame)?;
        out.write_all(&frame)?;
        out.flush()?;
        Ok(Self {
            out,
            open: None,
            payload: BytesMut::new(),
            frame,
            offset: header.encoded_len(),
            chunks: 0,
            failed: false,
        })
    }

    /// The payload buffer of an open chunk of type `ty`: continues the open chunk if it has
    /// that type, otherwise finishes the open chunk (if any) and starts a new one.
    pub fn begin_chunk(&mut self, ty: u8) -> Result<&mut BytesMut, RecordError> {
        if self.open.is_some_and(|open| open != ty) {
            self.finish_chunk()?;
        }
        self.open = Some(ty);
        Ok(&mut self.payload)
    }

    /// Payload bytes buffered in the open chunk.
    pub fn open_len(&self) -> usize {
        if self.open.is_some() {
            self.payload.len()
        } else {
            0
        }
    }

    /// Writes the open chunk whole and flushes; does nothing if no chunk is open.
    pub fn finish_chunk(&mut self) -> Result<(), RecordError> {
        let Some(ty) = self.open.take() else {
            return Ok(());
        };
        let payload = std::mem::take(&mut self.payload);
        let result = self.write_chunk(ty, &payload);
        self.payload = payload;
        self.payload.clear();
        result
    }

    /// Drops the open chunk's buffered payload without writing it.
    pub fn discard_chunk(&mut self) {
        self.open = None;
        self.payload.clear();
    }

    /// Finishes the open chunk if its payload is larger than `n` bytes; true if it did.
    pub fn flush_if_larger_than(&mut self, n: usize) -> Result<bool, RecordError> {
        if self.open_len() > n {
            self.finish_chunk()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes one chunk whole (after finishing any open chunk of another type) and flushes.
    pub fn write_chunk(&mut self, ty: u8, payload: &[u8]) -> Result<(), RecordError> {
        if self.open.is_some() {
            self.finish_chunk()?;
        }
        if self.failed {
            return Err(RecordError::WriterFailed);
        }
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&n| n <= MAX_CHUNK_LEN)
            .ok_or(RecordError::ChunkTooLarge {
                len: payload.len() as u64,
            })?;
        self.frame.clear();
        self.frame.reserve(payload.len() + CHUNK_OVERHEAD as usize);
        self.frame.put_u32_le(len);
        self.frame.put_u8(ty);
        self.frame.put_slice(payload);
        let crc = crc32fast::hash(&self.frame);
        self.frame.put_u32_le(crc);
        if let Err(e) = self
            .out
            .write_all(&self.frame)
            .and_then(|()| self.out.flush())
        {
            self.failed = true;
            return Err(RecordError::Io(e));
        }
        self.offset += self.frame.len() as u64;
        self.chunks += 1;
        Ok(())
    }

    /// True once a write has failed; every later write fails with [`RecordError::WriterFailed`].
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Bytes handed to the writer so far, header included.
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Chunks written so far.
    pub fn chunks_written(&self) -> u64 {
        self.chunks
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Returns the underlying writer, dropping any open chunk.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// One chunk as read from a file, checksum verified.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// File offset of the chunk's length field.
    pub offset: u64,
    /// 0-based position of the chunk in the file.
    pub index: u64,
    /// The chunk type byte.
    pub ty: u8,
    /// The payload bytes.
    pub payload: Bytes,
}

impl Chunk {
    /// File offset of the first payload byte.
    pub fn payload_offset(&self) -> u64 {
        self.offset + 5
    }

    /// File offset just past the chunk.
    pub fn end(&self) -> u64 {
        self.offset + CHUNK_OVERHEAD + self.payload.len() as u64
    }
}

/// Reads the header, then yields chunks; stops after the first error.
pub struct ChunkReader<R: Read> {
    inner: R,
    header: Header,
    offset: u64,
    index: u64,
    done: bool,
}

impl<R: Read> ChunkReader<R> {
    /// Reads and checks the header.
    pub fn new(mut inner: R) -> Result<Self, RecordError> {
        let header = Header::read_from(&mut inner)?;
        Ok(Self {
            offset: header.encoded_len(),
            inner,
            header,
            index: 0,
            done: false,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// File offset of the next chunk (just past the last one read).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn read_chunk(&mut self) -> Result<Option<Chunk>, RecordError> {
        let start = self.offset;
        let truncated = RecordError::Truncated {
            offset: start,
            what: "the last chunk",
        };
        let mut head = [0u8; 5];
        match read_full(&mut self.inner, &mut head)? {
            0 => return Ok(None),
            5 => {}
            _ => return Err(truncated),
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if len > MAX_CHUNK_LEN {
            return Err(RecordError::AbsurdLength {
                offset: start,
                len: len.into(),
                max: MAX_CHUNK_LEN.into(),
            });
        }
        // Grows with the bytes actually present, never with the length field alone.
        let mut payload = Vec::with_capacity((len as usize).min(64 << 10));
        (&mut self.inner)
            .take(len.into())
            .read_to_end(&mut payload)?;
        let mut crc = [0u8; 4];
        if payload.len() < len as usize || read_full(&mut self.inner, &mut crc)? < 4 {
            return Err(truncated);
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&head);
        hasher.update(&payload);
        if hasher.finalize() != u32::from_le_bytes(crc) {
            return Err(RecordError::ChecksumMismatch {
                offset: start,
                chunk: self.index,
            });
        }
        let chunk = Chunk {
            offset: start,
            index: self.index,
            ty: head[4],
            payload: Bytes::from(payload),
        };
        self.offset = chunk.end();
        self.index += 1;
        Ok(Some(chunk))
    }
}

impl<R: Read> Iterator for ChunkReader<R> {
    type Item = Result<Chunk, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.read_chunk().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}
