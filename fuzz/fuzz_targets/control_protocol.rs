//! libFuzzer entry point: [`lb_fuzz::control_protocol`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::control_protocol(data));
