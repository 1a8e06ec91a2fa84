//! Fuzz target `manifest` (see capstan::fuzzing).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| capstan::fuzzing::run("manifest", data));
