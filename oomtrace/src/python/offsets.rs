//! Where CPython keeps what a frame reader needs, per version (x86-64).
//!
//! 3.8 to 3.12 publish nothing for external readers: their tables below were printed by
//! `tests/workloads/python/offsets.c` (`offsetof` with `Py_BUILD_CORE`, compiled against each
//! version's own headers) and baked in; a test rebuilds that program against every version's
//! headers found on the machine and compares. 3.13+ publish `_Py_DebugOffsets` at the start of
//! `_PyRuntime`: [`Offsets::from_debug_offsets`] reads them from the process. See `docs/python.md`.

use anyhow::{Result, bail};

/// Byte offsets of the fields a frame walk and the code reader read; `None`: absent in that
/// version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offsets {
    /// `_PyRuntime.gilstate.tstate_current` (3.8–3.11): the thread state holding the GIL.
    pub runtime_tstate_current: Option<u16>,
    /// `_PyRuntime.interpreters.head`.
    pub runtime_interpreters_head: u16,
    /// `PyInterpreterState.tstate_head` (≤3.10) / `.threads.head` (3.11+).
    pub interp_threads_head: u16,
    /// `PyThreadState.next`.
    pub tstate_next: u16,
    /// `PyThreadState.thread_id` (`pthread_self()`, the thread's fsbase on x86-64 glibc).
    pub tstate_thread_id: u16,
    /// `PyThreadState.native_thread_id` (3.11+): the kernel tid.
    pub tstate_native_thread_id: Option<u16>,
    /// ≤3.10: `tstate->frame`; 3.11/3.12: `tstate->cframe`; 3.13+: `tstate->current_frame`.
    pub tstate_frame: u16,
    /// 3.11/3.12: `_PyCFrame.current_frame` (read `tstate_frame`, then this).
    pub cframe_current_frame: Option<u16>,
    /// `f_back` (≤3.10) / `previous` (3.11+).
    pub frame_previous: u16,
    /// `f_code` / `f_executable` (3.13+).
    pub frame_code: u16,
    /// ≤3.10: `f_lasti` (an `int`); 3.11/3.12: `prev_instr`; 3.13+: `instr_ptr` (pointers).
    pub frame_instr: u16,
    /// Whether `frame_instr` holds a pointer (3.11+) rather than an `int` index.
    pub frame_instr_is_pointer: bool,
    /// 3.12+: the `owner` byte (frames owned by the C stack are shims: skip them).
    pub frame_owner: Option<u16>,
    /// The value of `FRAME_OWNED_BY_CSTACK` in that version (0 where there is none).
    pub frame_owner_cstack: u8,
    /// 3.11: `is_entry`, the first frame of a C-level eval call.
    pub frame_is_entry: Option<u16>,
    /// `co_filename`.
    pub code_filename: u16,
    /// `co_name`.
    pub code_name: u16,
    /// `co_qualname` (3.11+).
    pub code_qualname: Option<u16>,
    /// `co_firstlineno` (an `int`).
    pub code_firstlineno: u16,
    /// `co_linetable` (3.10+) / `co_lnotab` (3.8, 3.9): a bytes object.
    pub code_linetable: u16,
    /// 3.11+: `co_code_adaptive`, the instructions inside the code object.
    pub code_adaptive: Option<u16>,
    /// ≤3.10: `co_code` (a bytes object).
    pub code_code: Option<u16>,
    /// `PyVarObject.ob_size` (a bytes object's length; a 3.11+ code object's code units).
    pub var_size: u16,
    /// `PyBytesObject.ob_sval`: where a bytes object's data starts.
    pub bytes_data: u16,
    /// `PyASCIIObject.length` (in characters).
    pub unicode_length: u16,
    /// `PyASCIIObject.state` (a 32-bit word of bit-fields).
    pub unicode_state: u16,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
    pub unicode_ascii_size: u16,
    /// `sizeof(PyCompactUnicodeObject)`: where another compact string's characters start.
    pub unicode_compact_size: u16,
}

/// Bits of `PyASCIIObject.state` (the same in 3.8 to 3.13): `kind` (bytes per character).
pub const UNICODE_KIND_MASK: u32 = 0x1c;
/// Its shift.
pub const UNICODE_KIND_SHIFT: u32 = 2;
/// `compact`: the characters follow the header.
pub const UNICODE_COMPACT: u32 = 0x20;
/// `ascii`: the characters are ASCII, right after a `PyASCIIObject`.
pub const UNICODE_ASCII: u32 = 0x40;

/// 3.8 (printed by `tests/workloads/python/offsets.c` against 3.8.18's headers).
pub const PY38: Offsets = Offsets {
    runtime_tstate_current: Some(1368),
    runtime_interpreters_head: 32,
    interp_threads_head: 8,
    tstate_next: 8,
    tstate_thread_id: 176,
    tstate_native_thread_id: None,
    tstate_frame: 24,
    cframe_current_frame: None,
    frame_previous: 24,
    frame_code: 32,
    frame_instr: 104,
    frame_instr_is_pointer: false,
    frame_owner: None,
    frame_owner_cstack: 0,
    frame_is_entry: None,
    code_filename: 104,
    code_name: 112,
    code_qualname: None,
    code_firstlineno: 40,
    code_linetable: 120,
    code_adaptive: None,
    code_code: Some(48),
    var_size: 16,
    bytes_data: 32,
    unicode_length: 16,
    unicode_state: 32,
    unicode_ascii_size: 48,
    unicode_compact_size: 72,
};

/// 3.9 (3.9.18's headers): only `gilstate.tstate_current` moved from 3.8.
pub const PY39: Offsets = Offsets {
    runtime_tstate_current: Some(568),
    ..PY38
};

/// 3.10 (3.10.13's headers): `f_lasti` moved (and now counts code units, not bytes).
pub const PY310: Offsets = Offsets {
    runtime_tstate_current: Some(568),
    frame_instr: 96,
    ..PY38
};

/// 3.11 (3.11.7's and Debian's 3.11.2 headers, which agree).
pub const PY311: Offsets = Offsets {
    runtime_tstate_current: Some(576),
    runtime_interpreters_head: 40,
    interp_threads_head: 16,
    tstate_next: 8,
    tstate_thread_id: 152,
    tstate_native_thread_id: Some(160),
    tstate_frame: 56,
    cframe_current_frame: Some(8),
    frame_previous: 48,
    frame_code: 32,
    frame_instr: 56,
    frame_instr_is_pointer: true,
    frame_owner: None,
    frame_owner_cstack: 0,
    frame_is_entry: Some(68),
    code_filename: 112,
    code_name: 120,
    code_qualname: Some(128),
    code_firstlineno: 72,
    code_linetable: 136,
    code_adaptive: Some(184),
    code_code: None,
    var_size: 16,
    bytes_data: 32,
    unicode_length: 16,
    unicode_state: 32,
    unicode_ascii_size: 48,
    unicode_compact_size: 72,
};

/// 3.12 (3.12.1's headers).
pub const PY312: Offsets = Offsets {
    runtime_tstate_current: None,
    runtime_interpreters_head: 40,
    interp_threads_head: 72,
    tstate_next: 8,
    tstate_thread_id: 136,
    tstate_native_thread_id: Some(144),
    tstate_frame: 56,
    cframe_current_frame: Some(0),
    frame_previous: 8,
    frame_code: 0,
    frame_instr: 56,
    frame_instr_is_pointer: true,
    frame_owner: Some(70),
    frame_owner_cstack: 3,
    frame_is_entry: None,
    code_filename: 112,
    code_name: 120,
    code_qualname: Some(128),
    code_firstlineno: 68,
    code_linetable: 136,
    code_adaptive: Some(192),
    code_code: None,
    var_size: 16,
    bytes_data: 32,
    unicode_length: 16,
    unicode_state: 32,
    unicode_ascii_size: 40,
    unicode_compact_size: 56,
};

/// The baked table of `version`, 3.8 to 3.12.
pub fn baked(version: (u8, u8)) -> Option<Offsets> {
    match version {
        (3, 8) => Some(PY38),
        (3, 9) => Some(PY39),
        (3, 10) => Some(PY310),
        (3, 11) => Some(PY311),
        (3, 12) => Some(PY312),
        _ => None,
    }
}

/// The cookie that opens `_Py_DebugOffsets`.
pub const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";
/// Bytes of `_Py_DebugOffsets` read from the start of `_PyRuntime` (3.13's struct: 73 words, 584 bytes).
pub const DEBUG_OFFSETS_LEN: usize = 584;

/// `FRAME_OWNED_BY_CSTACK` in 3.13 (`_Py_DebugOffsets` gives the field, not the value).
const PY313_OWNED_BY_CSTACK: u8 = 3;

impl Offsets {
    /// From the `_Py_DebugOffsets` bytes at the start of a 3.13 `_PyRuntime` (at least
    /// [`DEBUG_OFFSETS_LEN`] of them), for an interpreter detected as `version`.
    pub fn from_debug_offsets(bytes: &[u8], version: (u8, u8)) -> Result<Self> {
        if bytes.len() < DEBUG_OFFSETS_LEN {
            bail!("only {} bytes of _Py_DebugOffsets were read", bytes.len());
        }
        if &bytes[..8] != DEBUG_COOKIE {
            bail!(
                "_PyRuntime does not start with the cookie \"xdebugpy\" (found {:02x?}): not a \
                 CPython 3.13+ runtime oomtrace can read",
                &bytes[..8]
            );
        }
        let word = |index: usize| {
            u64::from_le_bytes(
                bytes[index * 8..index * 8 + 8]
                    .try_into()
                    .unwrap_or_default(),
            )
        };
        let hex = word(1);
        let (major, minor) = ((hex >> 24) as u8, (hex >> 16) as u8);
        if (major, minor) != version {
            bail!(
                "_Py_DebugOffsets says version {major}.{minor} (0x{hex:08x}), the library says \
                 {}.{}: refusing to guess which is right",
                version.0,
                version.1
            );
        }
        if (major, minor) != (3, 13) {
            bail!(
                "CPython {major}.{minor}'s _Py_DebugOffsets layout is not known to this oomtrace \
                 (it reads 3.13's): Python frames are left out for this process"
            );
        }
        if word(2) != 0 {
            bail!("a free-threaded CPython 3.13 build: its frames are not read by oomtrace");
        }
        // 3.13's layout, in 8-byte words: [0] cookie, [1] version, [2] free_threaded,
        // runtime_state {size, finalizing, interpreters_head} at [3..6],
        // interpreter_state {size, id, next, threads_head, ...} at [6..19],
        // thread_state {size, prev, next, interp, current_frame, thread_id, native_thread_id,
        // datastack_chunk, status} at [19..28],
        // interpreter_frame {size, previous, executable, instr_ptr, localsplus, owner} at [28..34],
        // code_object {size, filename, name, qualname, linetable, firstlineno, argcount,
        // localsplusnames, localspluskinds, co_code_adaptive} at [34..44],
        // pyobject [44..46], type_object [46..50], tuple [50..53], list [53..56], dict [56..59],
        // float [59..61], long [61..64], bytes_object {size, ob_size, ob_sval} at [64..67],
        // unicode_object {size, state, length, asciiobject_size} at [67..71], gc [71..73].
        let field = |struct_size: usize, index: usize, what: &str| -> Result<u16> {
            let (size, value) = (word(struct_size), word(index));
            if value >= size || value > u64::from(u16::MAX) {
                bail!(
                    "_Py_DebugOffsets: {what} at {value} in a structure of {size} bytes: not a \
                     layout oomtrace can trust"
                );
            }
            Ok(value as u16)
        };
        let (rt, is, ts, fr, co, by, un) = (3, 6, 19, 28, 34, 64, 67);
        let ascii_size = field(un, un + 3, "unicode asciiobject_size")?;
        Ok(Offsets {
            runtime_tstate_current: None,
            runtime_interpreters_head: field(rt, rt + 2, "runtime interpreters_head")?,
            interp_threads_head: field(is, is + 3, "interpreter threads_head")?,
            tstate_next: field(ts, ts + 2, "thread state next")?,
            tstate_thread_id: field(ts, ts + 5, "thread state thread_id")?,
            tstate_native_thread_id: Some(field(ts, ts + 6, "thread state native_thread_id")?),
            tstate_frame: field(ts, ts + 4, "thread state current_frame")?,
            cframe_current_frame: None,
            frame_previous: field(fr, fr + 1, "frame previous")?,
            frame_code: field(fr, fr + 2, "frame executable")?,
            frame_instr: field(fr, fr + 3, "frame instr_ptr")?,
            frame_instr_is_pointer: true,
            frame_owner: Some(field(fr, fr + 5, "frame owner")?),
            frame_owner_cstack: PY313_OWNED_BY_CSTACK,
            frame_is_entry: None,
            code_filename: field(co, co + 1, "code filename")?,
            code_name: field(co, co + 2, "code name")?,
            code_qualname: Some(field(co, co + 3, "code qualname")?),
            code_firstlineno: field(co, co + 5, "code firstlineno")?,
            code_linetable: field(co, co + 4, "code linetable")?,
            code_adaptive: Some(field(co, co + 9, "code co_code_adaptive")?),
            code_code: None,
            var_size: field(by, by + 1, "bytes ob_size")?,
            bytes_data: field(by, by + 2, "bytes ob_sval")?,
            unicode_length: field(un, un + 2, "unicode length")?,
            unicode_state: field(un, un + 1, "unicode state")?,
            unicode_ascii_size: ascii_size,
            // PyCompactUnicodeObject adds utf8_length and utf8 (3.12+: no wstr fields).
            unicode_compact_size: ascii_size + 16,
        })
    }

    /// Every field by the name `tests/workloads/python/offsets.c` prints it under (absent:
    /// `None`), for checking a table against the headers.
    pub fn fields(&self) -> Vec<(&'static str, Option<u64>)> {
        let some = |v: u16| Some(u64::from(v));
        let opt = |v: Option<u16>| v.map(u64::from);
        vec![
            ("runtime_tstate_current", opt(self.runtime_tstate_current)),
            (
                "runtime_interpreters_head",
                some(self.runtime_interpreters_head),
            ),
            ("interp_threads_head", some(self.interp_threads_head)),
            ("tstate_next", some(self.tstate_next)),
            ("tstate_thread_id", some(self.tstate_thread_id)),
            ("tstate_native_thread_id", opt(self.tstate_native_thread_id)),
            ("tstate_frame", some(self.tstate_frame)),
            ("cframe_current_frame", opt(self.cframe_current_frame)),
            ("frame_previous", some(self.frame_previous)),
            ("frame_code", some(self.frame_code)),
            ("frame_instr", some(self.frame_instr)),
            (
                "frame_instr_is_pointer",
                Some(u64::from(self.frame_instr_is_pointer)),
            ),
            ("frame_owner", opt(self.frame_owner)),
            (
                "frame_owner_cstack",
                Some(u64::from(self.frame_owner_cstack)),
            ),
            ("frame_is_entry", opt(self.frame_is_entry)),
            ("code_filename", some(self.code_filename)),
            ("code_name", some(self.code_name)),
            ("code_qualname", opt(self.code_qualname)),
            ("code_firstlineno", some(self.code_firstlineno)),
            ("code_linetable", some(self.code_linetable)),
            ("code_adaptive", opt(self.code_adaptive)),
            ("code_code", opt(self.code_code)),
            ("bytes_size", some(self.var_size)),
            ("bytes_data", some(self.bytes_data)),
            ("unicode_length", some(self.unicode_length)),
            ("unicode_state", some(self.unicode_state)),
            ("unicode_ascii_size", some(self.unicode_ascii_size)),
            ("unicode_compact_size", some(self.unicode_compact_size)),
            ("unicode_kind_mask", Some(u64::from(UNICODE_KIND_MASK))),
            ("unicode_compact_mask", Some(u64::from(UNICODE_COMPACT))),
            ("unicode_ascii_mask", Some(u64::from(UNICODE_ASCII))),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3.13 `_Py_DebugOffsets` with every structure 1000 bytes and each field at `10 * index`.
    fn debug_offsets(cookie: &[u8; 8], hex: u64, free_threaded: u64) -> Vec<u8> {
        let mut words = vec![0u64; DEBUG_OFFSETS_LEN / 8];
        words[1] = hex;
        words[2] = free_threaded;
        let sizes = [3, 6, 19, 28, 34, 44, 46, 50, 53, 56, 59, 61, 64, 67, 71];
        for (i, w) in words.iter_mut().enumerate().skip(3) {
            *w = if sizes.contains(&i) {
                1000
            } else {
                10 * i as u64
            };
        }
        let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes[..8].copy_from_slice(cookie);
        bytes
    }

    #[test]
    fn debug_offsets_are_read_where_313_puts_them() {
        let o = Offsets::from_debug_offsets(&debug_offsets(DEBUG_COOKIE, 0x030d00f0, 0), (3, 13))
            .unwrap();
        assert_eq!(o.runtime_interpreters_head, 50);
        assert_eq!(o.interp_threads_head, 90);
        assert_eq!(
            (o.tstate_next, o.tstate_frame, o.tstate_thread_id),
            (210, 230, 240)
        );
        assert_eq!(o.tstate_native_thread_id, Some(250));
        assert_eq!(
            (o.frame_previous, o.frame_code, o.frame_instr),
            (290, 300, 310)
        );
        assert_eq!(o.frame_owner, Some(330));
        assert_eq!(
            (o.code_filename, o.code_name, o.code_qualname),
            (350, 360, Some(370))
        );
        assert_eq!(
            (o.code_linetable, o.code_firstlineno, o.code_adaptive),
            (380, 390, Some(430))
        );
        assert_eq!((o.var_size, o.bytes_data), (650, 660));
        assert_eq!(
            (o.unicode_state, o.unicode_length, o.unicode_ascii_size),
            (680, 690, 700)
        );
        assert_eq!(o.unicode_compact_size, 716);
    }

    #[test]
    fn unknown_debug_offsets_are_refused_with_a_reason() {
        let err =
            |bytes: &[u8], v| format!("{:#}", Offsets::from_debug_offsets(bytes, v).unwrap_err());
        assert!(err(&debug_offsets(b"notdebug", 0x030d00f0, 0), (3, 13)).contains("xdebugpy"));
        assert!(err(&debug_offsets(DEBUG_COOKIE, 0x030e00f0, 0), (3, 13)).contains("3.14"));
        assert!(err(&debug_offsets(DEBUG_COOKIE, 0x030e00f0, 0), (3, 14)).contains("not known"));
        assert!(
            err(&debug_offsets(DEBUG_COOKIE, 0x030d00f0, 1), (3, 13)).contains("free-threaded")
        );
        assert!(err(&[0; 16], (3, 13)).contains("only 16 bytes"));
        let mut past = debug_offsets(DEBUG_COOKIE, 0x030d00f0, 0);
        past[5 * 8..6 * 8].copy_from_slice(&5000u64.to_le_bytes());
        assert!(err(&past, (3, 13)).contains("interpreters_head at 5000"));
    }

    #[test]
    fn baked_versions_are_38_to_312() {
        assert!(baked((3, 7)).is_none() && baked((3, 13)).is_none());
        for minor in 8..=12 {
            assert!(baked((3, minor)).is_some());
        }
    }
}
