//! A small builder of Ethernet frames (optional 802.1Q tag; IPv4 with options and fragments, or
//! IPv6 with extension headers; TCP, UDP, ICMP or ICMPv6) with correct checksums, and a parser of
//! the fields tests assert on.

use std::net::{Ipv4Addr, Ipv6Addr};

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

// --- IPv6 ------------------------------------------------------------------------------------

/// IPv6 next-header values (extension headers and upper layers).
pub mod nh {
    /// Hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating security payload.
    pub const ESP: u8 = 50;
    /// Authentication header.
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// No next header.
    pub const NO_NEXT: u8 = 59;
    /// Destination options.
    pub const DEST_OPTS: u8 = 60;
}

/// ICMPv6 types.
pub mod icmp6 {
    /// Destination unreachable.
    pub const DEST_UNREACH: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Neighbour solicitation.
    pub const NEIGHBOUR_SOLICIT: u8 = 135;
    /// Neighbour advertisement.
    pub const NEIGHBOUR_ADVERT: u8 = 136;
}

/// An IPv6 extension header, serialized with the next-header field of whatever follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtHdr {
    /// Hop-by-hop options (TLVs; padded with Pad1/PadN to a multiple of 8 bytes).
    HopByHop {
        /// Option TLVs.
        options: Vec<u8>,
    },
    /// Routing header: type, segments left and the type-specific data (padded with zeros to
    /// a multiple of 8 bytes). For types 0 and 2 with segments left, the last address of the
    /// data is the final destination, used in the upper-layer checksum.
    Routing {
        /// Routing type.
        routing_type: u8,
        /// Segments left.
        segments_left: u8,
        /// Type-specific data after the first 4 bytes.
        data: Vec<u8>,
    },
    /// Destination options (TLVs; padded like hop-by-hop).
    DestOpts {
        /// Option TLVs.
        options: Vec<u8>,
    },
    /// Fragment header.
    Fragment {
        /// Offset in 8-byte units.
        offset: u16,
        /// More-fragments flag.
        more: bool,
        /// Identification.
        id: u32,
    },
    /// Authentication header (length `(payload len + 2) * 4`): SPI, sequence number and an
    /// integrity check value (padded with zeros so the header is a multiple of 8 bytes).
    Auth {
        /// Security parameters index.
        spi: u32,
        /// Sequence number.
        seq: u32,
        /// Integrity check value.
        icv: Vec<u8>,
    },
    /// Encapsulating security payload: SPI and sequence number. Everything after it stands for
    /// the encrypted payload (no next-header field precedes it, so parsers cannot go on).
    Esp {
        /// Security parameters index.
        spi: u32,
        /// Sequence number.
        seq: u32,
    },
}

impl ExtHdr {
    /// A hop-by-hop header with a router-alert option (MLD), 8 bytes.
    pub fn hop_by_hop() -> Self {
        Self::HopByHop {
            options: vec![5, 2, 0, 0],
        }
    }

    /// A routing header of type 0 with no segments left, listing one address already visited,
    /// 24 bytes (a host that is the destination processes it and goes on).
    pub fn routing() -> Self {
        let mut data = vec![0; 4];
        data.extend(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x99).octets());
        Self::Routing {
            routing_type: 0,
            segments_left: 0,
            data,
        }
    }

    /// A destination-options header holding only padding, 8 bytes.
    pub fn dest_opts() -> Self {
        Self::DestOpts {
            options: Vec::new(),
        }
    }

    /// A fragment header.
    pub fn fragment(offset: u16, more: bool, id: u32) -> Self {
        Self::Fragment { offset, more, id }
    }

    /// An authentication header with a 96-bit ICV (HMAC-SHA1-96), 24 bytes.
    pub fn auth() -> Self {
        Self::Auth {
            spi: 0x1000,
            seq: 1,
            icv: vec![0xa5; 12],
        }
    }

    /// An ESP header.
    pub fn esp() -> Self {
        Self::Esp {
            spi: 0x2000,
            seq: 1,
        }
    }

    /// The next-header value that announces this header.
    pub fn number(&self) -> u8 {
        match self {
            Self::HopByHop { .. } => nh::HOP_BY_HOP,
            Self::Routing { .. } => nh::ROUTING,
            Self::DestOpts { .. } => nh::DEST_OPTS,
            Self::Fragment { .. } => nh::FRAGMENT,
            Self::Auth { .. } => nh::AH,
            Self::Esp { .. } => nh::ESP,
        }
    }

    /// The header's bytes, followed by `next`.
    pub fn bytes(&self, next: u8) -> Vec<u8> {
        match self {
            Self::HopByHop { options } | Self::DestOpts { options } => {
                let mut b = vec![next, 0];
                b.extend(options);
                let pad = (8 - b.len() % 8) % 8;
                match pad {
                    0 => {}
                    1 => b.push(0),
                    n => {
                        b.extend([1, (n - 2) as u8]);
                        b.resize(b.len() + n - 2, 0);
                    }
                }
                b[1] = (b.len() / 8 - 1) as u8;
                b
            }
            Self::Routing {
                routing_type,
                segments_left,
                data,
            } => {
                let mut b = vec![next, 0, *routing_type, *segments_left];
                b.extend(data);
                b.resize(b.len().next_multiple_of(8), 0);
                b[1] = (b.len() / 8 - 1) as u8;
                b
            }
            Self::Fragment { offset, more, id } => {
                let mut b = vec![next, 0];
                b.extend(((offset << 3) | u16::from(*more)).to_be_bytes());
                b.extend(id.to_be_bytes());
                b
            }
            Self::Auth { spi, seq, icv } => {
                let mut b = vec![next, 0, 0, 0];
                b.extend(spi.to_be_bytes());
                b.extend(seq.to_be_bytes());
                b.extend(icv);
                b.resize(b.len().next_multiple_of(8), 0);
                b[1] = (b.len() / 4 - 2) as u8;
                b
            }
            Self::Esp { spi, seq } => {
                let mut b = spi.to_be_bytes().to_vec();
                b.extend(seq.to_be_bytes());
                b
            }
        }
    }
}

/// Serializes a chain of extension headers ending in upper layer `upper`: the next-header
/// value that announces the chain, and its bytes.
pub fn ext_chain(exts: &[ExtHdr], upper: u8) -> (u8, Vec<u8>) {
    let mut next = upper;
    let mut parts = Vec::with_capacity(exts.len());
    for h in exts.iter().rev() {
        parts.push(h.bytes(next));
        next = h.number();
    }
    (next, parts.into_iter().rev().flatten().collect())
}

/// An IPv6 frame under construction: Ethernet, optional 802.1Q tag, IPv6, extension headers
/// in the order given, then the upper layer ([`L4::Icmp`] is ICMPv6 here).
#[derive(Clone, Debug)]
pub struct Frame6 {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// 802.1Q tag control information, if tagged.
    pub vlan: Option<u16>,
    /// Ethertype after the (optional) tag; IPv6 unless changed.
    pub ether_type: u16,
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
    /// Hop limit.
    pub hop_limit: u8,
    /// Extension headers, in order.
    pub ext: Vec<ExtHdr>,
    /// Upper layer.
    pub l4: L4,
    /// Payload after the upper-layer header.
    pub payload: Vec<u8>,
}

impl Frame6 {
    /// A frame from `src` to `dst` carrying `l4`, addressed to the director's MAC.
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr, l4: L4) -> Self {
        Self {
            dst_mac: DIRECTOR_MAC,
            src_mac: CLIENT_MAC,
            vlan: None,
            ether_type: ETH_P_IPV6,
            src,
            dst,
            traffic_class: 0,
            flow_label: 0x1_2345,
            hop_limit: 64,
            ext: Vec::new(),
            l4,
            payload: Vec::new(),
        }
    }

    /// A TCP segment.
    pub fn tcp(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, flags: u8) -> Self {
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
    pub fn udp(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Self {
        Self::new(src, dst, L4::Udp { sport, dport })
    }

    /// An ICMPv6 message.
    pub fn icmp(src: Ipv6Addr, dst: Ipv6Addr, ty: u8, code: u8, rest: [u8; 4]) -> Self {
        Self::new(src, dst, L4::Icmp { ty, code, rest })
    }

    /// An ICMPv6 echo request with identifier `id` and sequence number `seq`.
    pub fn echo_request(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16) -> Self {
        let [a, b] = id.to_be_bytes();
        let [c, d] = seq.to_be_bytes();
        Self::icmp(src, dst, icmp6::ECHO_REQUEST, 0, [a, b, c, d])
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

    /// Appends an extension header (after those already there).
    pub fn ext(mut self, h: ExtHdr) -> Self {
        self.ext.push(h);
        self
    }

    /// Appends a fragment header: offset in 8-byte units, more-fragments flag, identification.
    pub fn fragment(self, more: bool, offset_units: u16, id: u32) -> Self {
        self.ext(ExtHdr::fragment(offset_units, more, id))
    }

    /// The upper-layer protocol number.
    pub fn upper(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => nh::TCP,
            L4::Udp { .. } => nh::UDP,
            L4::Icmp { .. } => nh::ICMPV6,
            L4::Raw { proto } => proto,
        }
    }

    /// The destination the upper-layer checksum uses: the last address of a type 0 or 2
    /// routing header with segments left, else the IPv6 destination.
    pub fn final_dst(&self) -> Ipv6Addr {
        for h in &self.ext {
            if let ExtHdr::Routing {
                routing_type: 0 | 2,
                segments_left: 1..,
                data,
            } = h
                && data.len() >= 20
            {
                let n = (data.len() - 4) / 16;
                let last: [u8; 16] = data[4 + (n - 1) * 16..4 + n * 16].try_into().unwrap();
                return Ipv6Addr::from(last);
            }
        }
        self.dst
    }

    /// The upper-layer header and payload, with the checksum over the IPv6 pseudo-header.
    pub fn l4_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        let csum_at = match self.l4 {
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
                b.extend(64800u16.to_be_bytes());
                b.extend([0, 0, 0, 0]);
                Some(16)
            }
            L4::Udp { sport, dport } => {
                b.extend(sport.to_be_bytes());
                b.extend(dport.to_be_bytes());
                b.extend(((8 + self.payload.len()) as u16).to_be_bytes());
                b.extend([0, 0]);
                Some(6)
            }
            L4::Icmp { ty, code, rest } => {
                b.extend([ty, code, 0, 0]);
                b.extend(rest);
                Some(2)
            }
            L4::Raw { .. } => None,
        };
        b.extend(&self.payload);
        if let Some(at) = csum_at {
            let mut sum = l4_checksum6(self.src, self.final_dst(), self.upper(), &b);
            if sum == 0 && self.upper() == nh::UDP {
                sum = 0xffff;
            }
            b[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        b
    }

    fn header(&self, payload_len: usize, next: u8) -> Vec<u8> {
        let mut h = Vec::with_capacity(40);
        let word =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0xfffff);
        h.extend(word.to_be_bytes());
        h.extend((payload_len as u16).to_be_bytes());
        h.push(next);
        h.push(self.hop_limit);
        h.extend(self.src.octets());
        h.extend(self.dst.octets());
        h
    }

    /// The IPv6 packet: header, extension headers, upper layer, payload.
    pub fn ip_bytes(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let (next, exts) = ext_chain(&self.ext, self.upper());
        let mut p = self.header(exts.len() + l4.len(), next);
        p.extend(exts);
        p.extend(l4);
        p
    }

    fn link_header(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend(self.dst_mac);
        f.extend(self.src_mac);
        if let Some(tci) = self.vlan {
            f.extend(ETH_P_8021Q.to_be_bytes());
            f.extend(tci.to_be_bytes());
        }
        f.extend(self.ether_type.to_be_bytes());
        f
    }

    /// The whole Ethernet frame.
    pub fn build(&self) -> Vec<u8> {
        let mut f = self.link_header();
        f.extend(self.ip_bytes());
        f
    }

    /// The frame cut into fragments as a host sends a datagram too big for the path: the
    /// unfragmentable part (the IPv6 header, and the extension headers up to the last routing
    /// header, or a leading hop-by-hop header) in every fragment, then a fragment header with
    /// identification `id`, then at most `chunk` bytes (rounded down to a multiple of 8) of the
    /// rest: the other extension headers and the upper layer, whose checksum covers the whole
    /// datagram. The frame must not have a fragment header of its own.
    pub fn fragments(&self, id: u32, chunk: usize) -> Vec<Vec<u8>> {
        assert!(
            !self
                .ext
                .iter()
                .any(|h| matches!(h, ExtHdr::Fragment { .. })),
            "already a fragment"
        );
        let chunk = chunk / 8 * 8;
        assert!(chunk > 0, "fragments carry at least 8 bytes");
        let split = match self
            .ext
            .iter()
            .rposition(|h| matches!(h, ExtHdr::Routing { .. }))
        {
            Some(i) => i + 1,
            None => usize::from(matches!(self.ext.first(), Some(ExtHdr::HopByHop { .. }))),
        };
        let (unfrag, frag) = self.ext.split_at(split);
        let (first, mut rest) = ext_chain(frag, self.upper());
        rest.extend(self.l4_bytes());
        let mut out = Vec::new();
        for (i, piece) in rest.chunks(chunk).enumerate() {
            let more = (i + 1) * chunk < rest.len();
            let mut exts = unfrag.to_vec();
            exts.push(ExtHdr::fragment((i * chunk / 8) as u16, more, id));
            let (next, mut hdrs) = ext_chain(&exts, first);
            let mut f = self.link_header();
            f.extend(self.header(hdrs.len() + piece.len(), next));
            hdrs.extend(piece);
            f.extend(hdrs);
            out.push(f);
        }
        out
    }
}

/// An ICMPv6 error from `router` to `vip` quoting as much of `quoted` (a packet the real sent
/// as the VIP, `vip:vport -> client:cport`) as fits in the minimum MTU of 1280 bytes.
pub fn icmp6_error(
    router: Ipv6Addr,
    vip: Ipv6Addr,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &Frame6,
) -> Frame6 {
    let inner = quoted.ip_bytes();
    let room = 1280 - 40 - 8;
    Frame6::icmp(router, vip, ty, code, rest).payload(&inner[..inner.len().min(room)])
}

/// An ICMPv6 destination unreachable (type 1) quoting `quoted`.
pub fn icmp6_unreachable(router: Ipv6Addr, vip: Ipv6Addr, code: u8, quoted: &Frame6) -> Frame6 {
    icmp6_error(router, vip, icmp6::DEST_UNREACH, code, [0; 4], quoted)
}

/// An ICMPv6 packet too big (type 2) with next-hop MTU `mtu` quoting `quoted`.
pub fn icmp6_too_big(router: Ipv6Addr, vip: Ipv6Addr, mtu: u32, quoted: &Frame6) -> Frame6 {
    icmp6_error(
        router,
        vip,
        icmp6::PACKET_TOO_BIG,
        0,
        mtu.to_be_bytes(),
        quoted,
    )
}

/// The solicited-node multicast address of `addr` (ff02::1:ffXX:XXXX).
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    let mut m = [0u8; 16];
    m[0] = 0xff;
    m[1] = 0x02;
    m[11] = 0x01;
    m[12] = 0xff;
    m[13..].copy_from_slice(&o[13..]);
    Ipv6Addr::from(m)
}

/// The Ethernet multicast MAC of an IPv6 multicast address (33:33 and its last 4 bytes).
pub fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// A neighbour solicitation from `src` (link-layer address `src_mac`, in a source
/// link-layer address option) for `target`: to the target's solicited-node group when
/// `unicast` is false (address resolution), else to `target` itself at [`DIRECTOR_MAC`]
/// (reachability confirmation). Hop limit 255, as NDP requires.
pub fn neighbour_solicitation(
    src: Ipv6Addr,
    src_mac: [u8; 6],
    target: Ipv6Addr,
    unicast: bool,
) -> Frame6 {
    let dst = if unicast {
        target
    } else {
        solicited_node(target)
    };
    let mut body = target.octets().to_vec();
    body.extend([1, 1]);
    body.extend(src_mac);
    let mut f = Frame6::icmp(src, dst, icmp6::NEIGHBOUR_SOLICIT, 0, [0; 4]).payload(&body);
    f.src_mac = src_mac;
    if !unicast {
        f.dst_mac = multicast_mac(dst);
    }
    f.hop_limit = 255;
    f
}

/// The upper-layer checksum of `segment` over the IPv6 pseudo-header (RFC 8200 8.1).
pub fn l4_checksum6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + segment.len());
    pseudo.extend(src.octets());
    pseudo.extend(dst.octets());
    pseudo.extend((segment.len() as u32).to_be_bytes());
    pseudo.extend([0, 0, 0, next]);
    pseudo.extend(segment);
    checksum(&pseudo)
}

#[cfg(test)]
mod tests {
    use std::{net::UdpSocket, time::Duration};

    use super::*;
    use crate::netns::{Netns, send_frame};

    const A: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1);
    const B: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2);

    /// Verifies an upper-layer checksum the way a receiver does, written independently of the
    /// builder: the one's-complement sum of the pseudo-header and the segment, checksum field
    /// included, is all ones.
    fn verifies(src: Ipv6Addr, dst: Ipv6Addr, next: u8, segment: &[u8]) -> bool {
        let mut sum: u64 = 0;
        let mut add = |bytes: &[u8]| {
            for (i, b) in bytes.iter().enumerate() {
                sum += u64::from(*b) << if i % 2 == 0 { 8 } else { 0 };
            }
        };
        add(&src.octets());
        add(&dst.octets());
        add(&(segment.len() as u32).to_be_bytes());
        add(&[0, 0, 0, next]);
        add(segment);
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    /// Walks the extension headers of an IPv6 packet: `(next-header values, header lengths,
    /// offset of the upper layer)`.
    fn walk(ip: &[u8]) -> (Vec<u8>, Vec<usize>, usize) {
        let mut next = ip[6];
        let mut at = 40;
        let (mut chain, mut lens) = (vec![next], Vec::new());
        while [0, 43, 44, 51, 60].contains(&next) {
            let len = match next {
                44 => 8,
                51 => (usize::from(ip[at + 1]) + 2) * 4,
                _ => (usize::from(ip[at + 1]) + 1) * 8,
            };
            next = ip[at];
            chain.push(next);
            lens.push(len);
            at += len;
        }
        (chain, lens, at)
    }

    #[test]
    fn ipv6_header_fields_and_lengths() {
        let f = Frame6::tcp(A, 40000, B, 443, flags::SYN).payload(b"hello");
        let b = f.build();
        assert_eq!(b.len(), 14 + 40 + 20 + 5);
        assert_eq!(&b[0..6], &DIRECTOR_MAC);
        assert_eq!(&b[6..12], &CLIENT_MAC);
        assert_eq!(&b[12..14], &[0x86, 0xdd]);
        assert_eq!(
            &b[14..18],
            &[0x60, 0x01, 0x23, 0x45],
            "version 6, flow label"
        );
        assert_eq!(u16::from_be_bytes([b[18], b[19]]), 25, "payload length");
        assert_eq!((b[20], b[21]), (6, 64));
        assert_eq!(&b[22..38], &A.octets());
        assert_eq!(&b[38..54], &B.octets());
        assert_eq!(u16::from_be_bytes([b[56], b[57]]), 443);
        assert_eq!(b[54 + 13], flags::SYN);
        assert!(verifies(A, B, 6, &b[54..]));

        let mut tc = f.clone().vlan(0x2064);
        tc.traffic_class = 0xb8;
        let v = tc.build();
        assert_eq!(&v[12..18], &[0x81, 0x00, 0x20, 0x64, 0x86, 0xdd]);
        assert_eq!(&v[18..22], &[0x6b, 0x81, 0x23, 0x45], "traffic class 0xb8");
        assert_eq!(&v[26..], &b[22..]);
    }

    #[test]
    fn extension_headers_chain_in_the_order_given_with_their_lengths() {
        let f = Frame6::udp(A, 5353, B, 53)
            .ext(ExtHdr::hop_by_hop())
            .ext(ExtHdr::routing())
            .ext(ExtHdr::dest_opts())
            .fragment(false, 0, 7)
            .ext(ExtHdr::auth())
            .payload(b"query");
        let ip = f.ip_bytes();
        let (chain, lens, upper) = walk(&ip);
        assert_eq!(chain, [0, 43, 60, 44, 51, 17]);
        assert_eq!(lens, [8, 24, 8, 8, 24]);
        assert_eq!(upper, 40 + 72);
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[4], ip[5]])),
            ip.len() - 40
        );
        assert_eq!(&ip[42..48], &[5, 2, 0, 0, 1, 0], "router alert, PadN");
        assert_eq!(&ip[74..80], &[1, 4, 0, 0, 0, 0], "PadN only");
        assert_eq!(&ip[80..88], &[51, 0, 0, 0, 0, 0, 0, 7], "atomic fragment");
        assert_eq!(ip[89], 4, "AH payload length: 24 / 4 - 2");
        assert_eq!(u16::from_be_bytes([ip[upper + 4], ip[upper + 5]]), 8 + 5);
        assert!(verifies(A, B, 17, &ip[upper..]));

        // Any order, and an upper layer the builder knows nothing about.
        let f = Frame6::new(A, B, L4::Raw { proto: 47 })
            .ext(ExtHdr::dest_opts())
            .ext(ExtHdr::hop_by_hop())
            .ext(ExtHdr::Fragment {
                offset: 0x1fff,
                more: true,
                id: 0xdead_beef,
            })
            .payload(&[9; 4]);
        let ip = f.ip_bytes();
        assert_eq!(walk(&ip).0, [60, 0, 44, 47]);
        assert_eq!(&ip[56..64], &[47, 0, 0xff, 0xf9, 0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&ip[64..], &[9; 4]);
    }

    #[test]
    fn esp_ends_what_a_parser_can_follow() {
        let f = Frame6::tcp(A, 1, B, 2, flags::ACK)
            .ext(ExtHdr::dest_opts())
            .ext(ExtHdr::esp());
        let ip = f.ip_bytes();
        assert_eq!((ip[6], ip[40]), (60, 50));
        assert_eq!(
            &ip[48..56],
            &[0, 0, 0x20, 0, 0, 0, 0, 1],
            "SPI, sequence number"
        );
        assert_eq!(ip.len(), 40 + 8 + 8 + 20);
    }

    #[test]
    fn checksums_cover_the_pseudo_header() {
        for payload in [&b""[..], b"x", b"odd-sized payload", &[0xff; 101]] {
            let frames = [
                Frame6::tcp(A, 40000, B, 80, flags::ACK | flags::PSH),
                Frame6::udp(A, 40000, B, 53),
                Frame6::echo_request(A, B, 0x1234, 7),
                Frame6::tcp(A, 40000, B, 80, flags::SYN)
                    .ext(ExtHdr::hop_by_hop())
                    .ext(ExtHdr::auth()),
            ];
            for f in frames {
                let f = f.payload(payload);
                let ip = f.ip_bytes();
                let (chain, _, upper) = walk(&ip);
                assert!(
                    verifies(A, B, *chain.last().unwrap(), &ip[upper..]),
                    "{f:?}"
                );
                // The checksum covers the addresses: another source would not verify.
                assert!(!verifies(B, B, *chain.last().unwrap(), &ip[upper..]));
            }
        }
    }

    #[test]
    fn routing_header_with_segments_left_checksums_over_the_final_destination() {
        let last = Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 9);
        let mut data = vec![0; 4];
        data.extend(B.octets());
        data.extend(last.octets());
        let f = Frame6::udp(A, 1000, B, 2000).ext(ExtHdr::Routing {
            routing_type: 0,
            segments_left: 2,
            data,
        });
        assert_eq!(f.final_dst(), last);
        let ip = f.ip_bytes();
        assert_eq!(walk(&ip).1, [40]);
        assert!(verifies(A, last, 17, &ip[80..]));
        assert!(!verifies(A, B, 17, &ip[80..]));
    }

    #[test]
    fn fragments_carry_the_datagram_in_8_byte_units() {
        let f = Frame6::udp(A, 5000, B, 6000)
            .ext(ExtHdr::hop_by_hop())
            .ext(ExtHdr::dest_opts())
            .payload(&(0..=255).collect::<Vec<u8>>());
        let frags = f.fragments(0x0102_0304, 100);
        assert_eq!(frags.len(), 3, "8 + 8 + 256 bytes in pieces of 96");
        let mut whole = Vec::new();
        for (i, frag) in frags.iter().enumerate() {
            let ip = &frag[14..];
            assert_eq!(
                usize::from(u16::from_be_bytes([ip[4], ip[5]])),
                ip.len() - 40
            );
            assert_eq!((ip[6], ip[40]), (0, 44), "hop-by-hop stays unfragmentable");
            let fh = &ip[48..56];
            assert_eq!(fh[0], 60, "the fragmentable part starts with dest opts");
            let word = u16::from_be_bytes([fh[2], fh[3]]);
            assert_eq!(usize::from(word >> 3) * 8, whole.len(), "offset");
            assert_eq!(word & 1 == 1, i < 2, "more fragments");
            assert_eq!(&fh[4..], &[1, 2, 3, 4]);
            if i < 2 {
                assert_eq!(ip.len() - 56, 96);
            }
            whole.extend(&ip[56..]);
        }
        let (_, mut expected) = ext_chain(&[ExtHdr::dest_opts()], 17);
        expected.extend(f.l4_bytes());
        assert_eq!(whole, expected);
        assert!(verifies(A, B, 17, &whole[8..]), "over the whole datagram");
    }

    #[test]
    fn icmp6_errors_quote_the_packet_within_the_minimum_mtu() {
        let router = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0xfe);
        let reply = Frame6::tcp(B, 443, A, 40000, flags::ACK).payload(&[7; 1400]);
        let ptb = icmp6_too_big(router, B, 1280, &reply);
        let b = ptb.build();
        assert_eq!(b.len() - 14, 1280);
        let ip = &b[14..];
        assert_eq!(ip[6], 58);
        assert_eq!(&ip[40..42], &[2, 0]);
        assert_eq!(&ip[44..48], &1280u32.to_be_bytes());
        assert_eq!(&ip[48..], &reply.ip_bytes()[..1232]);
        assert!(verifies(router, B, 58, &ip[40..]));

        let short = Frame6::udp(B, 53, A, 5353);
        let du = icmp6_unreachable(router, B, 4, &short).build();
        assert_eq!(&du[54..56], &[1, 4], "type, code");
        assert_eq!(&du[58..62], &[0; 4], "unused");
        assert_eq!(&du[14 + 48..], &short.ip_bytes()[..]);
    }

    #[test]
    fn neighbour_solicitation_layout() {
        let mac = [0x02, 0, 0, 0, 0, 0x11];
        let target = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0x12, 0x3456);
        let f = neighbour_solicitation(A, mac, target, false).build();
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
        assert_eq!(&f[6..12], &mac);
        let ip = &f[14..];
        assert_eq!((ip[6], ip[7]), (58, 255));
        assert_eq!(
            Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap()),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(&ip[40..42], &[135, 0]);
        assert_eq!(&ip[48..64], &target.octets());
        assert_eq!(&ip[64..72], &[1, 1, 0x02, 0, 0, 0, 0, 0x11]);
        assert!(verifies(A, solicited_node(target), 58, &ip[40..]));
        let u = neighbour_solicitation(A, mac, target, true).build();
        assert_eq!(&u[0..6], &DIRECTOR_MAC);
        assert_eq!(&u[38..54], &target.octets());
    }

    fn require_root() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "this test puts frames on a veth: it needs root");
    }

    /// A counter of `/proc/net/snmp6` (`Udp6InDatagrams`, ...) or `/proc/net/snmp` (`Tcp
    /// InSegs` as `TcpInSegs`) in `ns`.
    fn counter(ns: &Netns, name: &str) -> u64 {
        let six = ns.exec(&["cat", "/proc/net/snmp6"]).unwrap();
        if let Some(v) = six.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next().unwrap().parse().unwrap())
        }) {
            return v;
        }
        let snmp = ns.exec(&["cat", "/proc/net/snmp"]).unwrap();
        let lines: Vec<&str> = snmp.lines().collect();
        for pair in lines.chunks(2) {
            let keys: Vec<&str> = pair[0].split_whitespace().collect();
            let vals: Vec<&str> = pair[1].split_whitespace().collect();
            let group = keys[0].trim_end_matches(':');
            if let Some(i) = keys.iter().position(|k| format!("{group}{k}") == name) {
                return vals[i].parse().unwrap();
            }
        }
        panic!("no counter {name}");
    }

    /// The frames, sent on a veth to a host holding the destination address, are accepted by
    /// Linux's own IPv6 stack: that is the independent check of every checksum, length and
    /// extension header the builder writes. A corrupted copy of each is refused, so the check
    /// is real.
    #[test]
    fn the_linux_stack_accepts_the_frames() {
        require_root();
        let tx = Netns::new("pkt-tx").unwrap();
        let rx = Netns::new("pkt-rx").unwrap();
        tx.ip([
            "link",
            "add",
            "name",
            "txa",
            "type",
            "veth",
            "peer",
            "name",
            "rxb",
            "netns",
            rx.name(),
        ])
        .unwrap();
        tx.ip(["link", "set", "txa", "up"]).unwrap();
        rx.ip(["link", "set", "rxb", "address", "02:00:00:00:00:0b", "up"])
            .unwrap();
        rx.ip([
            "-6",
            "addr",
            "add",
            &format!("{B}/64"),
            "dev",
            "rxb",
            "nodad",
        ])
        .unwrap();
        let b_mac = rx.mac("rxb").unwrap();
        let send = |f: &Frame6| {
            let mut f = f.clone();
            if f.dst_mac == DIRECTOR_MAC {
                f.dst_mac = b_mac;
            }
            send_frame(&tx, "txa", &f.build()).unwrap();
        };
        let corrupt = |f: &Frame6| {
            let mut bytes = f.build();
            bytes[..6].copy_from_slice(&b_mac);
            *bytes.last_mut().unwrap() ^= 0x5a;
            send_frame(&tx, "txa", &bytes).unwrap();
        };
        let settle = || std::thread::sleep(Duration::from_millis(100));

        // UDP, plain, with extension headers, and fragmented: the datagram reaches the socket.
        let sock = rx.enter(|| UdpSocket::bind((B, 5000))).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 2048];
        let udp = |p: &[u8]| Frame6::udp(A, 4000, B, 5000).payload(p);
        let with_exts = udp(b"with extension headers")
            .ext(ExtHdr::hop_by_hop())
            .ext(ExtHdr::routing())
            .ext(ExtHdr::dest_opts())
            .fragment(false, 0, 1);
        for f in [udp(b"plain"), udp(b"odd"), with_exts] {
            send(&f);
            let n = sock.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &f.payload[..]);
        }
        let big = udp(&[0x42; 1000]).ext(ExtHdr::hop_by_hop());
        for frag in big.fragments(77, 400) {
            send_frame(&tx, "txa", &[&b_mac[..], &frag[6..]].concat()).unwrap();
        }
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[0x42; 1000][..], "reassembled");
        let errors = counter(&rx, "Udp6InCsumErrors");
        corrupt(&udp(b"bad"));
        settle();
        assert_eq!(counter(&rx, "Udp6InCsumErrors"), errors + 1);
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(sock.recv(&mut buf).is_err(), "a corrupted datagram arrived");

        // TCP: a SYN to a listener is taken in (and answered).
        let _listener = rx.enter(|| std::net::TcpListener::bind((B, 8080))).unwrap();
        let (segs, errs) = (counter(&rx, "TcpInSegs"), counter(&rx, "TcpInCsumErrors"));
        let syn = Frame6::tcp(A, 40000, B, 8080, flags::SYN).ext(ExtHdr::dest_opts());
        send(&syn);
        settle();
        assert_eq!(counter(&rx, "TcpInSegs"), segs + 1);
        assert_eq!(counter(&rx, "TcpInCsumErrors"), errs);
        corrupt(&Frame6::tcp(A, 40001, B, 8080, flags::SYN).payload(b"x"));
        settle();
        assert_eq!(counter(&rx, "TcpInCsumErrors"), errs + 1);

        // ICMPv6: an echo request, a neighbour solicitation (the kernel learns the sender's
        // MAC from it), a packet too big.
        let echos = counter(&rx, "Icmp6InEchos");
        send(&Frame6::echo_request(A, B, 1, 1).payload(b"ping"));
        let solicits = counter(&rx, "Icmp6InNeighborSolicits");
        let a_mac = [0x02, 0, 0, 0, 0, 0x0a];
        send(&neighbour_solicitation(A, a_mac, B, false));
        let ptbs = counter(&rx, "Icmp6InPktTooBigs");
        let quoted = Frame6::tcp(B, 8080, A, 40000, flags::ACK).payload(&[0; 1300]);
        send(&icmp6_too_big(A, B, 1280, &quoted));
        let icmp_errors = counter(&rx, "Icmp6InCsumErrors");
        corrupt(&Frame6::echo_request(A, B, 1, 2).payload(b"pong"));
        settle();
        assert_eq!(counter(&rx, "Icmp6InEchos"), echos + 1);
        assert_eq!(counter(&rx, "Icmp6InNeighborSolicits"), solicits + 1);
        assert_eq!(counter(&rx, "Icmp6InPktTooBigs"), ptbs + 1);
        assert_eq!(counter(&rx, "Icmp6InCsumErrors"), icmp_errors + 1);
        let neigh = rx.ip(["-6", "neigh", "show", "dev", "rxb"]).unwrap();
        assert!(
            neigh.contains(&format!("{A} lladdr 02:00:00:00:00:0a")),
            "{neigh}"
        );
    }
}
