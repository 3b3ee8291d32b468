//! A small builder of Ethernet frames (optional 802.1Q tag, IPv4 with options and fragments,
//! TCP, UDP, ICMP) with correct checksums, and a parser of the fields tests assert on.

use std::net::Ipv4Addr;

/// TCP flag bits.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Ethertypes.
pub const ETH_P_IPV4: u16 = 0x0800;
/// 802.1Q.
pub const ETH_P_8021Q: u16 = 0x8100;
/// ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;

/// The transport part of a frame.
#[derive(Clone, Debug)]
pub enum L4 {
    /// A TCP segment.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flags byte.
        flags: u8,
        /// Sequence number.
        seq: u32,
        /// Acknowledgement number.
        ack: u32,
    },
    /// A UDP datagram.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// An ICMP message: type, code, the 4 "rest of header" bytes.
    Icmp {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
        /// Rest of header (e.g. next-hop MTU for frag-needed).
        rest: [u8; 4],
    },
    /// Raw bytes with an explicit protocol number (no checksum work).
    Raw {
        /// IP protocol number.
        proto: u8,
    },
}

/// A frame under construction.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// 802.1Q tag control information, if tagged.
    pub vlan: Option<u16>,
    /// Ethertype after the (optional) tag; IPv4 unless changed.
    pub ether_type: u16,
    /// IPv4 source.
    pub src: Ipv4Addr,
    /// IPv4 destination.
    pub dst: Ipv4Addr,
    /// IP options (padded to 4 bytes by the builder).
    pub ip_options: Vec<u8>,
    /// TTL.
    pub ttl: u8,
    /// IP identification.
    pub ip_id: u16,
    /// More-fragments flag.
    pub more_fragments: bool,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
    /// Transport.
    pub l4: L4,
    /// Payload after the transport header.
    pub payload: Vec<u8>,
}

/// MAC of the client in packet tests.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0x1e, 0x47, 0x00, 0x01];
/// MAC of the director in packet tests.
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0xd1, 0x2e, 0xc7, 0x00, 0x01];

impl Frame {
    /// A frame from `src` to `dst` carrying `l4`, addressed to the director's MAC.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Self {
        Self {
            dst_mac: DIRECTOR_MAC,
            src_mac: CLIENT_MAC,
            vlan: None,
            ether_type: ETH_P_IPV4,
            src,
            dst,
            ip_options: Vec::new(),
            ttl: 64,
            ip_id: 0x1234,
            more_fragments: false,
            frag_offset: 0,
            l4,
            payload: Vec::new(),
        }
    }

    /// A TCP segment.
    pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Self {
        Self::new(
            src,
            dst,
            L4::Tcp {
                sport,
                dport,
                flags,
                seq: 1000,
                ack: if flags & flags::ACK != 0 { 2000 } else { 0 },
            },
        )
    }

    /// A UDP datagram.
    pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Self {
        Self::new(src, dst, L4::Udp { sport, dport })
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// Adds an 802.1Q tag.
    pub fn vlan(mut self, tci: u16) -> Self {
        self.vlan = Some(tci);
        self
    }

    /// Sets IP options (padded with END to a multiple of 4 bytes).
    pub fn ip_options(mut self, options: &[u8]) -> Self {
        self.ip_options = options.to_vec();
        self
    }

    /// Marks the frame as a fragment.
    pub fn fragment(mut self, more_fragments: bool, offset_units: u16) -> Self {
        self.more_fragments = more_fragments;
        self.frag_offset = offset_units;
        self
    }

    fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { .. } => 1,
            L4::Raw { proto } => proto,
        }
    }

    /// The transport header and payload (checksummed).
    fn l4_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
                seq,
                ack,
            } => {
                b.extend(sport.to_be_bytes());
                b.extend(dport.to_be_bytes());
                b.extend(seq.to_be_bytes());
                b.extend(ack.to_be_bytes());
                b.push(5 << 4);
                b.push(flags);
                b.extend(64240u16.to_be_bytes());
                b.extend([0, 0, 0, 0]);
                b.extend(&self.payload);
                let sum = l4_checksum(self.src, self.dst, 6, &b);
                b[16..18].copy_from_slice(&sum.to_be_bytes());
            }
            L4::Udp { sport, dport } => {
                b.extend(sport.to_be_bytes());
                b.extend(dport.to_be_bytes());
                b.extend(((8 + self.payload.len()) as u16).to_be_bytes());
                b.extend([0, 0]);
                b.extend(&self.payload);
                let sum = l4_checksum(self.src, self.dst, 17, &b);
                let sum = if sum == 0 { 0xffff } else { sum };
                b[6..8].copy_from_slice(&sum.to_be_bytes());
            }
            L4::Icmp { ty, code, rest } => {
                b.push(ty);
                b.push(code);
                b.extend([0, 0]);
                b.extend(rest);
                b.extend(&self.payload);
                let sum = checksum(&b);
                b[2..4].copy_from_slice(&sum.to_be_bytes());
            }
            L4::Raw { .. } => b.extend(&self.payload),
        }
        b
    }

    /// The IPv4 packet (header, options, transport, payload).
    pub fn ip_bytes(&self) -> Vec<u8> {
        let mut opts = self.ip_options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let l4 = self.l4_bytes();
        let ihl = 5 + opts.len() / 4;
        let total = ihl * 4 + l4.len();
        let mut h = Vec::with_capacity(total);
        h.push(0x40 | ihl as u8);
        h.push(0);
        h.extend((total as u16).to_be_bytes());
        h.extend(self.ip_id.to_be_bytes());
        let frags = (u16::from(self.more_fragments) << 13) | (self.frag_offset & 0x1fff);
        h.extend(frags.to_be_bytes());
        h.push(self.ttl);
        h.push(self.proto());
        h.extend([0, 0]);
        h.extend(self.src.octets());
        h.extend(self.dst.octets());
        h.extend(&opts);
        let sum = checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend(l4);
        h
    }

    /// The whole Ethernet frame.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend(self.dst_mac);
        f.extend(self.src_mac);
        if let Some(tci) = self.vlan {
            f.extend(ETH_P_8021Q.to_be_bytes());
            f.extend(tci.to_be_bytes());
        }
        f.extend(self.ether_type.to_be_bytes());
        f.extend(self.ip_bytes());
        f
    }
}

/// An ICMP destination-unreachable from `router` to `vip` quoting a packet the real sent as
/// the VIP (`vip:vport -> client:cport`), as a router on the return path would.
pub fn icmp_unreachable(
    router: Ipv4Addr,
    vip: Ipv4Addr,
    code: u8,
    mtu: u16,
    quoted: &Frame,
) -> Frame {
    let inner = quoted.ip_bytes();
    let quote_len = inner.len().min(((inner[0] & 0x0f) as usize) * 4 + 8);
    let mut rest = [0u8; 4];
    rest[2..4].copy_from_slice(&mtu.to_be_bytes());
    Frame::new(router, vip, L4::Icmp { ty: 3, code, rest }).payload(&inner[..quote_len])
}

/// RFC 1071 checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12 + segment.len());
    pseudo.extend(src.octets());
    pseudo.extend(dst.octets());
    pseudo.push(0);
    pseudo.push(proto);
    pseudo.extend((segment.len() as u16).to_be_bytes());
    pseudo.extend(segment);
    checksum(&pseudo)
}

/// Destination MAC of a frame.
pub fn dst_mac(frame: &[u8]) -> [u8; 6] {
    frame[0..6].try_into().expect("frame has a header")
}

/// Source MAC of a frame.
pub fn src_mac(frame: &[u8]) -> [u8; 6] {
    frame[6..12].try_into().expect("frame has a header")
}
