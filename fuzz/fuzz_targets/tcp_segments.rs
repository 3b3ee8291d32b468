//! libFuzzer entry point: [`lb_fuzz::tcp_segments`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::tcp_segments(data));
