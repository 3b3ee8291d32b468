//! The address family as a type, for packet tests written once and run for IPv4 and IPv6:
//! the addresses the suites use, frame builders over [`Frame`] and [`Frame6`], service and
//! real keys and specs, and the family's connection and persistence tables.
//!
//! A test generic over `F: Family` builds frames with [`Family::tcp`] and friends, changes
//! them through [`Packet`], and reads the data plane through [`Family::conn`] and the table
//! sizes; [`Family::Other`] names the other family, whose tables such a test may check stay
//! empty.

use std::{
    fmt::{Debug, Display},
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use lb_common::{Conn, Flow4Key, Flow6Key};
use lb_userspace::{
    dataplane::Dataplane,
    model::{ConnEntry, RealKey, ServiceKey, ServiceSpec},
};

use crate::{
    lab,
    packet::{ETH_P_IPV4, ETH_P_IPV6, ExtHdr, Frame, Frame6, L4, icmp_unreachable, icmp6_too_big},
};

/// A frame under construction, of either family.
pub trait Packet: Clone {
    /// Sets the payload.
    fn payload(self, payload: &[u8]) -> Self;
    /// Adds an 802.1Q tag.
    fn vlan(self, tci: u16) -> Self;
    /// Sets the destination and source MACs.
    fn macs(self, dst: [u8; 6], src: [u8; 6]) -> Self;
    /// Makes the frame a fragment: more-fragments flag, offset in 8-byte units, datagram
    /// identification (IPv4: its low 16 bits; IPv6: a fragment header).
    fn fragment(self, more: bool, offset_units: u16, id: u32) -> Self;
    /// The frame's bytes.
    fn build(&self) -> Vec<u8>;
}

impl Packet for Frame {
    fn payload(self, payload: &[u8]) -> Self {
        Frame::payload(self, payload)
    }

    fn vlan(self, tci: u16) -> Self {
        Frame::vlan(self, tci)
    }

    fn macs(mut self, dst: [u8; 6], src: [u8; 6]) -> Self {
        self.dst_mac = dst;
        self.src_mac = src;
        self
    }

    fn fragment(self, more: bool, offset_units: u16, id: u32) -> Self {
        let mut f = Frame::fragment(self, more, offset_units);
        f.ip_id = id as u16;
        f
    }

    fn build(&self) -> Vec<u8> {
        Frame::build(self)
    }
}

impl Packet for Frame6 {
    fn payload(self, payload: &[u8]) -> Self {
        Frame6::payload(self, payload)
    }

    fn vlan(self, tci: u16) -> Self {
        Frame6::vlan(self, tci)
    }

    fn macs(mut self, dst: [u8; 6], src: [u8; 6]) -> Self {
        self.dst_mac = dst;
        self.src_mac = src;
        self
    }

    fn fragment(self, more: bool, offset_units: u16, id: u32) -> Self {
        Frame6::fragment(self, more, offset_units, id)
    }

    fn build(&self) -> Vec<u8> {
        Frame6::build(self)
    }
}

/// An address family: IPv4 ([`V4`]) or IPv6 ([`V6`]).
pub trait Family: 'static {
    /// An address of the family.
    type Addr: Copy + Eq + Hash + Debug + Display + Into<IpAddr>;
    /// Its frame builder.
    type Frame: Packet;
    /// The key of its connection table.
    type Flow: Copy + Eq + Debug;
    /// The other family.
    type Other: Family;

    /// `Real::family` of its reals: 4 or 6.
    const FAMILY: u8;
    /// Its ethertype.
    const ETHER_TYPE: u16;
    /// Length of its fixed IP header: 20 or 40.
    const IP_HEADER_LEN: usize;
    /// Bits in an address: 32 or 128 (the persistence prefix of one client).
    const ADDR_BITS: u8;
    /// The other family's ICMP protocol number (58 or 1), which means nothing in this one.
    const FOREIGN_ICMP: u8;
    /// Length of the optional headers [`Family::with_options`] adds.
    const OPTIONS_LEN: usize;
    /// Whether those are extension headers, whose cut-short frames the program counts in
    /// `ext_hdr_passed` (IPv6), or IPv4 options (not counted).
    const OPTIONS_ARE_EXT_HDRS: bool;

    /// The VIP of the suites' services.
    const VIP: Self::Addr;
    /// An address near the VIP that is no VIP.
    const OTHER_IP: Self::Addr;
    /// The client of single-client tests.
    const CLIENT: Self::Addr;
    /// A router on the return path, the source of ICMP errors.
    const ROUTER: Self::Addr;
    /// Real 1.
    const R1: Self::Addr;
    /// Real 2.
    const R2: Self::Addr;
    /// Real 3.
    const R3: Self::Addr;
    /// Real 4.
    const R4: Self::Addr;

    /// Client `i`: distinct addresses for distinct `i`.
    fn client(i: u32) -> Self::Addr;
    /// Addresses that differ from [`Family::VIP`] in the last bit of one 32-bit word, one per
    /// word.
    fn near_vips() -> Vec<Self::Addr>;

    /// A frame from `src` to `dst` whose IP header names protocol `proto`, with no transport
    /// header.
    fn raw(src: Self::Addr, dst: Self::Addr, proto: u8) -> Self::Frame;
    /// A TCP segment with `flags`.
    fn tcp(src: Self::Addr, sport: u16, dst: Self::Addr, dport: u16, flags: u8) -> Self::Frame;
    /// A UDP datagram.
    fn udp(src: Self::Addr, sport: u16, dst: Self::Addr, dport: u16) -> Self::Frame;
    /// The frame with optional IP headers the program must skip and keep
    /// ([`Family::OPTIONS_LEN`] bytes): IPv4 options (4 NOPs), IPv6 hop-by-hop and
    /// destination-options headers.
    fn with_options(f: Self::Frame) -> Self::Frame;
    /// The error a router sends `vip` when `quoted` (sent as the VIP) was too big: ICMP
    /// fragmentation needed (MTU 1400) or ICMPv6 packet too big (MTU 1280).
    fn too_big(router: Self::Addr, vip: Self::Addr, quoted: &Self::Frame) -> Self::Frame;

    /// A TCP service key.
    fn tcp_service(vip: Self::Addr, port: u16) -> ServiceKey;
    /// A UDP service key.
    fn udp_service(vip: Self::Addr, port: u16) -> ServiceKey;
    /// A real key.
    fn real_key(addr: Self::Addr, port: u16) -> RealKey;
    /// The MAC tests give the real at `addr` ([`lab::mac_of`], [`lab::mac_of6`]).
    fn mac_of(addr: Self::Addr) -> [u8; 6];
    /// A service spec over reals `(address, weight)` on `port`, Maglev, table size `m`.
    fn spec(port: u16, m: u32, reals: &[(Self::Addr, u32)]) -> ServiceSpec;
    /// The spec with persistence on, clients grouped by their first `prefix_len` bits
    /// (at most [`Family::ADDR_BITS`], which is per client).
    fn persistent(s: ServiceSpec, timeout: u32, prefix_len: u8) -> ServiceSpec;

    /// The connection-table key of `src:sport -> dst:dport` over protocol `proto`.
    fn flow(src: Self::Addr, sport: u16, dst: Self::Addr, dport: u16, proto: u8) -> Self::Flow;
    /// The connection-table entry of a flow.
    fn conn(dp: &Dataplane, key: &Self::Flow) -> Option<ConnEntry<Self::Flow>>;
    /// Writes a connection-table entry (false: no room).
    fn insert_conn(dp: &mut Dataplane, key: &Self::Flow, conn: &Conn) -> bool;
    /// Used slots of the family's connection table.
    fn conns(dp: &Dataplane) -> usize;
    /// Used slots of the family's persistence table (templates).
    fn templates(dp: &Dataplane) -> usize;
}

/// IPv4.
pub struct V4;

/// IPv6.
pub struct V6;

impl Family for V4 {
    type Addr = Ipv4Addr;
    type Frame = Frame;
    type Flow = Flow4Key;
    type Other = V6;

    const FAMILY: u8 = 4;
    const ETHER_TYPE: u16 = ETH_P_IPV4;
    const IP_HEADER_LEN: usize = 20;
    const ADDR_BITS: u8 = 32;
    const FOREIGN_ICMP: u8 = 58;
    const OPTIONS_LEN: usize = 4;
    const OPTIONS_ARE_EXT_HDRS: bool = false;

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
    const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 21);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const R1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
    const R2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);
    const R3: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 13);
    const R4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 14);

    /// `192.168.0.0 + i`.
    fn client(i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 0, 0)) + i)
    }

    fn near_vips() -> Vec<Ipv4Addr> {
        vec![Ipv4Addr::from(u32::from(Self::VIP) ^ 1)]
    }

    fn raw(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Frame {
        Frame::new(src, dst, L4::Raw { proto })
    }

    fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Frame {
        Frame::tcp(src, sport, dst, dport, flags)
    }

    fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Frame {
        Frame::udp(src, sport, dst, dport)
    }

    fn with_options(f: Frame) -> Frame {
        f.ip_options(&[1; Self::OPTIONS_LEN])
    }

    fn too_big(router: Ipv4Addr, vip: Ipv4Addr, quoted: &Frame) -> Frame {
        icmp_unreachable(router, vip, 4, 1400, quoted)
    }

    fn tcp_service(vip: Ipv4Addr, port: u16) -> ServiceKey {
        lab::tcp(vip, port)
    }

    fn udp_service(vip: Ipv4Addr, port: u16) -> ServiceKey {
        lab::udp(vip, port)
    }

    fn real_key(addr: Ipv4Addr, port: u16) -> RealKey {
        lab::rk(addr, port)
    }

    fn mac_of(addr: Ipv4Addr) -> [u8; 6] {
        lab::mac_of(addr)
    }

    fn spec(port: u16, m: u32, reals: &[(Ipv4Addr, u32)]) -> ServiceSpec {
        lab::spec(port, m, reals)
    }

    fn persistent(s: ServiceSpec, timeout: u32, prefix_len: u8) -> ServiceSpec {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0);
        lab::persistent(s, timeout, Ipv4Addr::from(mask))
    }

    fn flow(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, proto: u8) -> Flow4Key {
        Flow4Key::from_parts(src.octets(), sport, dst.octets(), dport, proto)
    }

    fn conn(dp: &Dataplane, key: &Flow4Key) -> Option<ConnEntry<Flow4Key>> {
        dp.conn4(key)
    }

    fn insert_conn(dp: &mut Dataplane, key: &Flow4Key, conn: &Conn) -> bool {
        dp.insert_conn4(key, conn)
    }

    fn conns(dp: &Dataplane) -> usize {
        dp.conns4().len()
    }

    fn templates(dp: &Dataplane) -> usize {
        dp.persist4().len()
    }
}

impl Family for V6 {
    type Addr = Ipv6Addr;
    type Frame = Frame6;
    type Flow = Flow6Key;
    type Other = V4;

    const FAMILY: u8 = 6;
    const ETHER_TYPE: u16 = ETH_P_IPV6;
    const IP_HEADER_LEN: usize = 40;
    const ADDR_BITS: u8 = 128;
    const FOREIGN_ICMP: u8 = 1;
    const OPTIONS_LEN: usize = 16;
    const OPTIONS_ARE_EXT_HDRS: bool = true;

    const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
    const OTHER_IP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x200);
    const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc1, 7, 0, 0, 0, 0x21);
    const ROUTER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const R1: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
    const R2: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x12);
    const R3: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x13);
    const R4: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x14);

    /// `2001:db8:c1:: + i`: distinct addresses in one /64.
    fn client(i: u32) -> Ipv6Addr {
        Ipv6Addr::from(
            u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0xc1, 0, 0, 0, 0, 0)) + u128::from(i),
        )
    }

    fn near_vips() -> Vec<Ipv6Addr> {
        (0..4u32)
            .map(|word| Ipv6Addr::from(u128::from(Self::VIP) ^ (1u128 << (96 - 32 * word))))
            .collect()
    }

    fn raw(src: Ipv6Addr, dst: Ipv6Addr, proto: u8) -> Frame6 {
        Frame6::new(src, dst, L4::Raw { proto })
    }

    fn tcp(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, flags: u8) -> Frame6 {
        Frame6::tcp(src, sport, dst, dport, flags)
    }

    fn udp(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Frame6 {
        Frame6::udp(src, sport, dst, dport)
    }

    fn with_options(f: Frame6) -> Frame6 {
        f.ext(ExtHdr::hop_by_hop()).ext(ExtHdr::dest_opts())
    }

    fn too_big(router: Ipv6Addr, vip: Ipv6Addr, quoted: &Frame6) -> Frame6 {
        icmp6_too_big(router, vip, 1280, quoted)
    }

    fn tcp_service(vip: Ipv6Addr, port: u16) -> ServiceKey {
        lab::tcp6(vip, port)
    }

    fn udp_service(vip: Ipv6Addr, port: u16) -> ServiceKey {
        lab::udp6(vip, port)
    }

    fn real_key(addr: Ipv6Addr, port: u16) -> RealKey {
        lab::rk6(addr, port)
    }

    fn mac_of(addr: Ipv6Addr) -> [u8; 6] {
        lab::mac_of6(addr)
    }

    fn spec(port: u16, m: u32, reals: &[(Ipv6Addr, u32)]) -> ServiceSpec {
        lab::spec6(port, m, reals)
    }

    fn persistent(s: ServiceSpec, timeout: u32, prefix_len: u8) -> ServiceSpec {
        lab::persistent6(s, timeout, prefix_len)
    }

    fn flow(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, proto: u8) -> Flow6Key {
        Flow6Key::from_parts(src.octets(), sport, dst.octets(), dport, proto)
    }

    fn conn(dp: &Dataplane, key: &Flow6Key) -> Option<ConnEntry<Flow6Key>> {
        dp.conn6(key)
    }

    fn insert_conn(dp: &mut Dataplane, key: &Flow6Key, conn: &Conn) -> bool {
        dp.insert_conn6(key, conn)
    }

    fn conns(dp: &Dataplane) -> usize {
        dp.conns6().len()
    }

    fn templates(dp: &Dataplane) -> usize {
        dp.persist6().len()
    }
}
