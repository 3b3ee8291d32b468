//! libFuzzer entry point: [`lb_fuzz::keepalived_import`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::keepalived_import(data));
