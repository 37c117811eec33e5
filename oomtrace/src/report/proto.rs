//! The messages of pprof's `profile.proto`, written out by hand for prost (no protoc, no build
//! script).
//!
//! Field numbers and types follow
//! <https://github.com/google/pprof/blob/main/proto/profile.proto>. Every string is an index into
//! `Profile::string_table`, whose entry 0 is always `""`; ids are 1-based and 0 means "none".

/// A profile: sample types, samples, and the tables they point into.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    /// What each sample value counts, and in which unit.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// One per stack.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// The objects the locations lie in.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// Distinct addresses, with their source lines.
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// Distinct functions.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// Every string the profile uses; entry 0 is `""`.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// Regex (string index) of frames to drop.
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// Regex (string index) of frames to keep.
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// When the profile was taken, in ns since the epoch.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// How long the profile covers, in ns.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// What one event of the period counts.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// Events per sample.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Free-form comments (string indices).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// The sample type shown by default (string index of its type).
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// A type and unit, both string indices.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct ValueType {
    /// E.g. `inuse_space`.
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// E.g. `bytes`.
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// One stack and its values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Location ids, leaf (the call site) first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per sample type.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// Extra key/value data, e.g. the pid.
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// A sample's label: a string (`str`) or a number (`num`, in `num_unit`).
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Label {
    /// String index of the key.
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// String index of the value, or 0.
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// Numeric value.
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// String index of the numeric value's unit, or 0.
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// An object mapped into a process.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Mapping {
    /// Unique, non-zero.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// First address.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// Address past the end.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// File offset of `memory_start`.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// String index of the object's file name.
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// String index of its build id.
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// Its locations carry function names.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// Its locations carry file names.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// Its locations carry line numbers.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// Its locations carry inlined frames.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// One address and the source lines it stands for.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    /// Unique, non-zero.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The mapping it lies in, or 0.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// The address in the process.
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Innermost first; empty when unsymbolized.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// Several addresses folded into this one.
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// A function and line.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Line {
    /// The function's id.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// Source line, or 0.
    #[prost(int64, tag = "2")]
    pub line: i64,
    /// Source column, or 0.
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// A function.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Function {
    /// Unique, non-zero.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// String index of its (demangled) name.
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// String index of its name as the linker sees it.
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// String index of its source file.
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// Its first line, or 0.
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}
