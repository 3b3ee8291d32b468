//! libFuzzer entry point: [`lb_fuzz::sync_datagram`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::sync_datagram(data));
