//! Fuzz target `patch` (see capstan::fuzzing).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| capstan::fuzzing::run("patch", data));
