//! libFuzzer entry point: [`lb_fuzz::lbadm_args`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::lbadm_args(data));
