//! The flow hash, shared by the data plane (scheduling) and the control plane (`lbadm --which`,
//! simulations, tests): both must map a flow to the same lookup-table slot.
//!
//! Inputs are wire-order values as stored in the map keys. The mixer is the 64-bit finaliser of
//! MurmurHash3; it is cheap in eBPF (shifts, xors and two multiplies, no loops) and its output is
//! uniform enough for Maglev tables. Every director computes the same hash for the same flow, so
//! directors with the same configuration pick the same real without sharing state.

const SEED_FLOW: u64 = 0x9e37_79b9_7f4a_7c15;
const SEED_SOURCE: u64 = 0xc2b2_ae3d_27d4_eb4f;
const SEED_FRAGMENT: u64 = 0x1656_67b1_9e37_79f9;
const SEED_VIP: u64 = 0x27d4_eb2f_1656_67c5;
const SEED_PERSIST: u64 = 0x85eb_ca77_c2b2_ae63;

/// MurmurHash3's 64-bit finaliser: a bijective mix of all input bits.
#[inline(always)]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

#[inline(always)]
const fn fold(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32
}

/// Hash of an IPv4 5-tuple (wire-order values): picks the connection-table set and, for
/// services scheduled per flow, the lookup-table slot. The ports are spread over all 64 bits by
/// one multiply, then one finaliser round mixes them with the addresses.
#[inline(always)]
pub const fn flow_hash4(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> u32 {
    let addrs = ((src as u64) << 32) | dst as u64;
    let rest = ((sport as u64) << 24) | ((dport as u64) << 8) | proto as u64;
    fold(mix64(
        addrs ^ (rest ^ SEED_FLOW).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    ))
}

/// Hash of an IPv4 source address (already masked), for `sh` and persistent services.
#[inline(always)]
pub const fn source_hash4(src: u32) -> u32 {
    fold(mix64(src as u64 ^ SEED_SOURCE))
}

/// Hash of an IPv4 fragment's (source, destination, protocol), so that every fragment of a
/// datagram reaches the same real.
#[inline(always)]
pub const fn fragment_hash4(src: u32, dst: u32, proto: u8) -> u32 {
    let addrs = ((src as u64) << 32) | dst as u64;
    fold(mix64(addrs ^ mix64(proto as u64 ^ SEED_FRAGMENT)))
}

/// Hash of an IPv4 VIP key (address, port, protocol; wire order), for the VIP table. A few
/// dozen keys in a table eight times larger only need a Fibonacci multiply.
#[inline(always)]
pub const fn vip_hash4(addr: u32, port: u16, proto: u8) -> u32 {
    let v = ((addr as u64) << 32) | ((port as u64) << 16) | proto as u64;
    let h = (v ^ (v >> 29) ^ SEED_VIP).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 32) as u32
}

/// Hash of a persistence template key (service id, masked client).
#[inline(always)]
pub const fn persist_hash4(service_id: u32, client: u32) -> u32 {
    let v = ((service_id as u64) << 32) | client as u64;
    fold(mix64(v ^ SEED_PERSIST))
}

/// Maps a 32-bit hash onto a table of `size` slots without a division (multiply-shift).
#[inline(always)]
pub const fn table_slot(hash: u32, size: u32) -> u32 {
    ((hash as u64 * size as u64) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_is_in_range_and_spreads() {
        let m = 65_537u32;
        let mut buckets = [0u32; 16];
        for i in 0..160_000u32 {
            let h = flow_hash4(
                i.wrapping_mul(2_654_435_761),
                0x6400_000a,
                (i % 65_000) as u16,
                80,
                6,
            );
            let s = table_slot(h, m);
            assert!(s < m);
            buckets[(s * 16 / m) as usize] += 1;
        }
        for b in buckets {
            assert!((9_000..11_000).contains(&b), "uneven bucket {b}");
        }
    }

    #[test]
    fn hashes_depend_on_every_field() {
        let base = flow_hash4(1, 2, 3, 4, 6);
        assert_ne!(base, flow_hash4(9, 2, 3, 4, 6));
        assert_ne!(base, flow_hash4(1, 9, 3, 4, 6));
        assert_ne!(base, flow_hash4(1, 2, 9, 4, 6));
        assert_ne!(base, flow_hash4(1, 2, 3, 9, 6));
        assert_ne!(base, flow_hash4(1, 2, 3, 4, 17));
        assert_ne!(fragment_hash4(1, 2, 6), fragment_hash4(1, 2, 17));
        assert_ne!(source_hash4(1), source_hash4(2));
        assert_ne!(vip_hash4(1, 80, 6), vip_hash4(1, 81, 6));
        assert_ne!(vip_hash4(1, 80, 6), vip_hash4(1, 80, 17));
        assert_ne!(persist_hash4(1, 2), persist_hash4(2, 1));
    }

    #[test]
    fn slot_edges() {
        assert_eq!(table_slot(0, 7), 0);
        assert_eq!(table_slot(u32::MAX, 7), 6);
        assert_eq!(table_slot(u32::MAX, 1), 0);
    }
}
