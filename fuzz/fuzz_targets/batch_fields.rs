//! libFuzzer entry point of [`ferry_fuzz::batch_fields`]; the checks live in `fuzz/src/lib.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::batch_fields(data));
