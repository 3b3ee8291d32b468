//! libFuzzer entry point: [`lb_fuzz::config_yaml`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::config_yaml(data));
