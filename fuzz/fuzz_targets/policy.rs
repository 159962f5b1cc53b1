//! A policy file's text, as `egress-agent check` reads it: parsed, merged, compiled.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| agent::fuzzing::policy(text));
