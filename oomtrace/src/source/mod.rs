//! Where events come from: the live ring buffer, or a recording.

pub mod file;
pub mod live;
