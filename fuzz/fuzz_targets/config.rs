//! The agent's configuration file (`--config`), parsed and checked as at start.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| agent::fuzzing::config(text));
