//! Where events come from: the live ring buffer (recordings join later).

pub mod live;
