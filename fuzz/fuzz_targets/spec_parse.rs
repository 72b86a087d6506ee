//! libFuzzer entry point of [`ferry_fuzz::spec_parse`]; the checks live in `fuzz/src/lib.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::spec_parse(data));
