//! The typed error of the recording format.
//!
//! Every variant that comes from reading a file names the byte offset where the problem is, so
//! the one-line message a user sees says where the file went wrong and what to do about it.
//! Offsets count from the first byte of the file. Chunk numbers in messages count from 1; the
//! `chunk` fields hold 0-based indices (equal to the number of intact chunks before it).

use std::fmt;

use super::format::{MAGIC, MAX_CHUNK_LEN, MAX_META_LEN, VERSION};

/// What went wrong reading or writing a recording.
#[derive(Debug)]
#[non_exhaustive]
pub enum RecordError {
    /// The file has no bytes at all.
    Empty,
    /// The file does not start with the magic number (zero-padded if the file is shorter).
    BadMagic {
        /// The first (up to) eight bytes of the file.
        found: [u8; 8],
    },
    /// The header names a format version this reader does not understand.
    UnsupportedVersion {
        /// The version found at byte 8.
        found: u16,
    },
    /// The file ends in the middle of the header or of a chunk.
    Truncated {
        /// Where the incomplete part starts: everything before it is intact.
        offset: u64,
        /// What is incomplete ("the header", "the last chunk").
        what: &'static str,
    },
    /// A chunk's CRC32 does not match its bytes.
    ChecksumMismatch {
        /// Where the chunk starts.
        offset: u64,
        /// 0-based index of the chunk (= number of intact chunks before it).
        chunk: u64,
    },
    /// A length field exceeds the format's limit for it.
    AbsurdLength {
        /// Where the length field is.
        offset: u64,
        /// The length found.
        len: u64,
        /// The largest value possible there.
        max: u64,
    },
    /// A chunk's payload ends in the middle of a field.
    PayloadEnds {
        /// Where the incomplete field starts.
        offset: u64,
        /// The field being read.
        field: &'static str,
    },
    /// A checksummed chunk holds bytes that do not decode (a writer bug or an undetected flip).
    Malformed {
        /// Where the bad bytes are.
        offset: u64,
        /// What is wrong with them.
        what: &'static str,
    },
    /// The header's free-form meta string is longer than the format allows.
    MetaTooLong {
        /// Its length in bytes.
        len: u64,
    },
    /// The writer was asked to write a chunk larger than the format allows.
    ChunkTooLarge {
        /// The encoded payload length.
        len: u64,
    },
    /// An earlier write failed; the writer accepts no more data.
    WriterFailed,
    /// Reading or writing the underlying file failed.
    Io(std::io::Error),
}

impl RecordError {
    /// The byte offset the error names, if it names one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Empty | Self::BadMagic { .. } => Some(0),
            Self::UnsupportedVersion { .. } => Some(8),
            Self::Truncated { offset, .. }
            | Self::ChecksumMismatch { offset, .. }
            | Self::AbsurdLength { offset, .. }
            | Self::PayloadEnds { offset, .. }
            | Self::Malformed { offset, .. } => Some(*offset),
            Self::MetaTooLong { .. }
            | Self::ChunkTooLarge { .. }
            | Self::WriterFailed
            | Self::Io(_) => None,
        }
    }
}

impl RecordError {
    /// What is wrong, in one line naming the offset, without advice on what to do.
    pub fn problem(&self) -> String {
        match self {
            Self::Empty => "recording is empty: there is no data at byte 0".into(),
            Self::BadMagic { found } => format!(
                "not an oomtrace recording: the magic number at byte 0 is \"{}\", expected \"{}\"",
                found.escape_ascii(),
                MAGIC.escape_ascii()
            ),
            Self::UnsupportedVersion { found } => format!(
                "recording format version {found} (at byte 8) is not supported; this oomtrace \
                 reads version {VERSION}"
            ),
            Self::Truncated { offset, what } => {
                format!("recording is truncated at byte {offset}: {what} is incomplete")
            }
            Self::ChecksumMismatch { offset, chunk } => format!(
                "recording is corrupted at byte {offset}: checksum mismatch in chunk {}",
                chunk + 1
            ),
            Self::AbsurdLength { offset, len, max } => format!(
                "recording is corrupted at byte {offset}: a length or count of {len} exceeds the \
                 {max} possible there"
            ),
            Self::PayloadEnds { offset, field } => {
                format!("recording is malformed at byte {offset}: the chunk ends inside {field}")
            }
            Self::Malformed { offset, what } => {
                format!("recording is malformed at byte {offset}: {what}")
            }
            Self::MetaTooLong { len } => format!(
                "cannot write a {len}-byte meta string: the header allows at most {MAX_META_LEN} \
                 bytes"
            ),
            Self::ChunkTooLarge { len } => format!(
                "cannot write a {len}-byte chunk: the format allows at most {MAX_CHUNK_LEN} bytes \
                 per chunk"
            ),
            Self::WriterFailed => "an earlier write to the recording failed".into(),
            Self::Io(e) => format!("I/O error on the recording: {e}"),
        }
    }

    /// What the user can do about it, if there is something to say.
    fn advice(&self) -> Option<String> {
        Some(match self {
            Self::Empty => "the recorder wrote nothing; re-record".into(),
            Self::BadMagic { .. } => "check the file name".into(),
            Self::UnsupportedVersion { .. } => "use the oomtrace release that wrote it".into(),
            Self::Truncated { offset: 0, .. } => {
                "the recorder stopped before writing anything; re-record".into()
            }
            Self::Truncated { offset, .. } => format!(
                "the recorder was killed or the disk filled; everything before byte {offset} is \
                 intact"
            ),
            Self::ChecksumMismatch { chunk, .. } => {
                format!("re-record, or keep the first {chunk} chunks, which are intact")
            }
            Self::AbsurdLength { offset, .. } => {
                format!("re-record; the data before byte {offset} is intact")
            }
            Self::PayloadEnds { .. } | Self::Malformed { .. } => {
                "a writer bug or damage; re-record".into()
            }
            Self::WriterFailed => {
                "the file ends at the last complete chunk and can still be read".into()
            }
            Self::MetaTooLong { .. } | Self::ChunkTooLarge { .. } | Self::Io(_) => return None,
        })
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem())?;
        match self.advice() {
            Some(advice) => write!(f, " ({advice})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for RecordError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for RecordError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}
