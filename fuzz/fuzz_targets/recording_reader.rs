//! Fuzzes the recording reader: arbitrary bytes must give `Ok` (with warnings for damage) or a
//! clean `Err`, never a panic, an abort, or an allocation out of proportion to the input.
//!
//! Run with `cargo +nightly fuzz run recording_reader` from the repository root. A valid
//! recording (e.g. one written by `oomtrace record`) in `fuzz/corpus/recording_reader/` gives
//! the fuzzer a head start past the header and checksums.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match oomtrace::record::read_from_bytes(data) {
        Ok((recording, warnings)) => {
            // The readable prefix never claims more bytes than the input holds.
            assert!(recording.readable_bytes <= data.len() as u64);
            for w in &warnings {
                assert!(!w.message.is_empty());
            }
        }
        Err(e) => {
            // Every error renders to one line.
            assert!(!e.to_string().contains('\n'));
        }
    }
});
