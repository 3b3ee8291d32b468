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

/// A source hash with the source port mixed in (`sh-port`, `mh-port`).
#[inline(always)]
pub const fn with_port(hash: u32, port: u16) -> u32 {
    fold(mix64(((hash as u64) << 16) ^ port as u64 ^ SEED_SOURCE))
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

/// An IPv6 address as stored in the map keys: four 32-bit words, each in network byte order
/// (as read from the packet with native-endian loads).
pub type Addr6 = [u32; 4];

#[inline(always)]
const fn words6(a: &Addr6) -> (u64, u64) {
    (
        ((a[0] as u64) << 32) | a[1] as u64,
        ((a[2] as u64) << 32) | a[3] as u64,
    )
}

/// Hash of an IPv6 5-tuple (wire-order values), the IPv6 counterpart of [`flow_hash4`]: each
/// address half goes through a finaliser round before the next is mixed in, then the ports.
#[inline(always)]
pub const fn flow_hash6(src: &Addr6, dst: &Addr6, sport: u16, dport: u16, proto: u8) -> u32 {
    let (s0, s1) = words6(src);
    let (d0, d1) = words6(dst);
    let rest = ((sport as u64) << 24) | ((dport as u64) << 8) | proto as u64;
    let mut h = mix64(s0 ^ SEED_FLOW);
    h = mix64(h ^ s1);
    h = mix64(h ^ d0);
    fold(mix64(
        h ^ d1 ^ (rest ^ SEED_FLOW).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    ))
}

/// Hash of an IPv6 source address (already masked), for `sh` and persistent services.
#[inline(always)]
pub const fn source_hash6(src: &Addr6) -> u32 {
    let (s0, s1) = words6(src);
    fold(mix64(mix64(s0 ^ SEED_SOURCE) ^ s1))
}

/// Hash of an IPv6 fragment's (source, destination, next header).
#[inline(always)]
pub const fn fragment_hash6(src: &Addr6, dst: &Addr6, proto: u8) -> u32 {
    let (s0, s1) = words6(src);
    let (d0, d1) = words6(dst);
    let mut h = mix64(s0 ^ mix64(proto as u64 ^ SEED_FRAGMENT));
    h = mix64(h ^ s1);
    h = mix64(h ^ d0);
    fold(mix64(h ^ d1))
}

/// Hash of an IPv6 VIP key, for the VIP table.
#[inline(always)]
pub const fn vip_hash6(addr: &Addr6, port: u16, proto: u8) -> u32 {
    // Two finaliser rounds: IPv6 VIPs differ in few bits, often at the same place in several
    // words (2001:db8:a:N::N), which a plain multiply would fold together.
    let (a0, a1) = words6(addr);
    fold(mix64(
        mix64(a0 ^ SEED_VIP) ^ a1 ^ ((port as u64) << 16) ^ proto as u64,
    ))
}

/// Hash of an IPv6 persistence template key (service id, masked client).
#[inline(always)]
pub const fn persist_hash6(service_id: u32, client: &Addr6) -> u32 {
    let (c0, c1) = words6(client);
    fold(mix64(mix64(c0 ^ SEED_PERSIST ^ service_id as u64) ^ c1))
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
    fn ipv6_hashes_depend_on_every_field_and_spread() {
        let a = [1, 2, 3, 4];
        let b = [5, 6, 7, 8];
        let base = flow_hash6(&a, &b, 3, 4, 6);
        for (i, other) in [[9, 2, 3, 4], [1, 9, 3, 4], [1, 2, 9, 4], [1, 2, 3, 9]]
            .iter()
            .enumerate()
        {
            assert_ne!(base, flow_hash6(other, &b, 3, 4, 6), "src word {i}");
            assert_ne!(base, flow_hash6(&a, other, 3, 4, 6), "dst word {i}");
            assert_ne!(source_hash6(&a), source_hash6(other), "source word {i}");
            assert_ne!(
                persist_hash6(1, &a),
                persist_hash6(1, other),
                "client word {i}"
            );
            assert_ne!(
                vip_hash6(&a, 80, 6),
                vip_hash6(other, 80, 6),
                "vip word {i}"
            );
            assert_ne!(
                fragment_hash6(&a, &b, 17),
                fragment_hash6(other, &b, 17),
                "fragment word {i}"
            );
        }
        assert_ne!(base, flow_hash6(&a, &b, 9, 4, 6));
        assert_ne!(base, flow_hash6(&a, &b, 3, 9, 6));
        assert_ne!(base, flow_hash6(&a, &b, 3, 4, 17));
        assert_ne!(fragment_hash6(&a, &b, 6), fragment_hash6(&a, &b, 17));
        assert_ne!(persist_hash6(1, &a), persist_hash6(2, &a));
        assert_ne!(vip_hash6(&a, 80, 6), vip_hash6(&a, 81, 6));
        // VIPs that differ in the same byte of two words (2001:db8:a:N::N) spread too.
        let mut homes = [0u32; 1024];
        for n in 0..256u32 {
            let b = n.to_be_bytes()[3];
            let mut vip = [0u8; 16];
            vip[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0x0a]);
            vip[7] = b;
            vip[15] = b;
            homes[(vip_hash6(&crate::addr6(vip), 443u16.to_be(), 6) & 1023) as usize] += 1;
        }
        assert!(
            homes.iter().all(|&h| h <= 3),
            "VIPs pile up: {:?}",
            homes.iter().max()
        );
        // Clients differing only in the low word spread over a table.
        let m = 65_537u32;
        let mut buckets = [0u32; 16];
        for i in 0..160_000u32 {
            let src = [0x2001_0db8u32.to_be(), 0, 0, i.wrapping_mul(2_654_435_761)];
            let s = table_slot(flow_hash6(&src, &b, 1000, 80, 6), m);
            buckets[(s * 16 / m) as usize] += 1;
        }
        for n in buckets {
            assert!((9_000..11_000).contains(&n), "uneven bucket {n}");
        }
    }

    #[test]
    fn slot_edges() {
        assert_eq!(table_slot(0, 7), 0);
        assert_eq!(table_slot(u32::MAX, 7), 6);
        assert_eq!(table_slot(u32::MAX, 1), 0);
    }
}
