//! One ring-buffer record, any bytes: decoded and written as the pipeline does.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| agent::fuzzing::event(bytes));
