//! Reference XDP programs for the benchmarks (never deployed): the cost of running any XDP
//! program at all, and the floor of a direct-routing forwarder.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// Does nothing: the cost of running an XDP program.
#[xdp]
pub fn xdp_empty(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Swaps the MAC addresses and transmits: the least any DR forwarder must do.
#[xdp]
pub fn xdp_swap_macs(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let macs = start as *mut [u8; 12];
    // SAFETY: the 12 bytes were bounds-checked above.
    unsafe {
        let m = *macs;
        let mut swapped = [0u8; 12];
        swapped[..6].copy_from_slice(&m[6..]);
        swapped[6..].copy_from_slice(&m[..6]);
        *macs = swapped;
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
