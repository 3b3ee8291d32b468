//! The XDP data plane: direct-routing load balancing.
//!
//! Read top to bottom, this file is a packet's journey:
//! parse (Ethernet, optional 802.1Q tag, IPv4 or IPv6 with its extension headers) -> find the
//! service -> connection table -> schedule (persistence template, then the Maglev lookup table
//! or the least-connection choice) -> rewrite the destination MAC -> XDP_TX. Anything that is
//! not for a configured service leaves with XDP_PASS, untouched. The path is written once, over
//! a [`Family`] that supplies the address type, keys and tables of IPv4 or IPv6.
//!
//! Every table is an array (see `lb-common`): lookups compile to a few instructions with no
//! helper calls. Map layouts and constants live in `lb-common`; sizes are set by the loader.
#![no_std]
#![no_main]

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, xdp_action},
    helpers::{bpf_get_prandom_u32, bpf_get_smp_processor_id, bpf_loop},
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use lb_common::{
    Addr6, CONN_WAYS, Candidates, Conn, ConnSet4, ConnSet6, ConnState, FALLBACK_PROBES, Flow4Key,
    Flow6Key, FlowKey, GlobalStats, Inserted, LC_CANDIDATES, LOOKUP_ROW, LookupRow, MAX_EXT_HDRS,
    NO_REAL, PERSIST_WAYS, Persist4Key, Persist6Key, PersistSet4, PersistSet6, REAL_UP, Real,
    RealLoad, SCHED_MAGLEV, SCHED_TWOS, SVC_F_FALLBACK, SVC_F_HASH_DST, SVC_F_HASH_SRC,
    SVC_F_ONE_PACKET, SVC_F_PERSIST, SYNC_SLOTS, Service, Set, Settings, SlotData, SyncSlot,
    TcpFlags, Template, TrafficStats, Twos, Vip4Key, Vip6Key, VipBucket4, VipBucket6, VipKey,
    addr6, by_weight, conn_eviction, find_service, fragment_hash4, fragment_hash6,
    least_conn_choice, proto, same6, table_slot, weight_choice,
};
use network_types::{
    eth::EthHdr,
    icmp::Icmpv4Hdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

// Sizes here are placeholders: the loader sets every map's size from configuration. The
// tables the control plane writes are memory-mapped into the agent.

#[map(name = "SETTINGS")]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "VIPS4")]
static VIPS4: Array<VipBucket4> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "SERVICES")]
static SERVICES: Array<Service> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "LOOKUP")]
static LOOKUP: Array<LookupRow> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "REALS")]
static REALS: Array<Real> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "CONNS4")]
static CONNS4: Array<ConnSet4> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "PERSIST4")]
static PERSIST4: Array<PersistSet4> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "VIPS6")]
static VIPS6: Array<VipBucket6> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "CONNS6")]
static CONNS6: Array<ConnSet6> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "PERSIST6")]
static PERSIST6: Array<PersistSet6> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "REAL_LOAD")]
static REAL_LOAD: Array<RealLoad> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "LC_CANDIDATES")]
static CANDIDATES: Array<Candidates> = Array::with_max_entries(1, BPF_F_MMAPABLE);
/// How the pinned maps were created (see `lb_common::layout`); only the agent reads it.
#[map(name = "LAYOUT")]
static LAYOUT: Array<u32> = Array::with_max_entries(lb_common::layout::ENTRIES, 0);
/// One word per CPU that the parser stores a value to and loads it back from, so that the
/// verifier forgets how the value was computed (see [`forget`]); not pinned, holds nothing.
#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "GLOBAL_STATS")]
static GLOBAL_STATS: PerCpuArray<GlobalStats> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "SERVICE_STATS")]
static SERVICE_STATS: PerCpuArray<TrafficStats> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "REAL_STATS")]
static REAL_STATS: PerCpuArray<TrafficStats> = PerCpuArray::with_max_entries(1, 0);
/// Each CPU's ring of the flows this director confirmed, for the agent's director sync
/// (`lb_common::sync`); written only while `Settings::sync` is set.
#[map(name = "SYNC_RING")]
static SYNC_RING: Array<SyncSlot> = Array::with_max_entries(1, BPF_F_MMAPABLE);
/// Per CPU, the number of announcements written to its ring.
#[map(name = "SYNC_HEAD")]
static SYNC_HEAD: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
/// IPv4 "more fragments" flag and fragment offset bits of `frags`.
const IP_MF_OFFSET: u16 = 0x3fff;
const ICMP_DEST_UNREACH: u8 = 3;
/// Byte of the TCP header holding the flags (CWR..FIN).
const TCP_FLAGS_OFFSET: usize = 13;

/// IPv6 next-header values the parser knows.
mod nexthdr {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const DEST_OPTS: u8 = 60;
}
/// Fragment offset and M flag bits of an IPv6 fragment header's second 16-bit word.
const IP6_OFFSET_MF: u16 = 0xfff9;
const ICMP6_DEST_UNREACH: u8 = 1;
const ICMP6_PACKET_TOO_BIG: u8 = 2;
/// Bytes before the quoted packet in an ICMP or ICMPv6 error.
const ICMP_ERROR_HEADER: usize = 8;

/// What happens to the frame.
enum Verdict {
    /// Not ours: hand to the kernel untouched.
    Pass,
    /// For a service without a usable real.
    DropNoReal,
    /// Rewritten and sent to a real.
    Tx,
}

/// The entry point. `inline(always)` folds this body into the function the `xdp` macro wraps
/// around it: left to itself, LLVM keeps the (large) body a separate BPF function, and the
/// BPF-to-BPF call and its return cost every packet about 8 ns here (return thunks).
#[xdp]
#[inline(always)]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let (Some(g), Some(settings)) = (global_stats(), SETTINGS.get(0)) else {
        return xdp_action::XDP_PASS;
    };
    g.rx += 1;
    match process(&ctx, settings, g) {
        Verdict::Pass => {
            g.passed += 1;
            xdp_action::XDP_PASS
        }
        Verdict::DropNoReal => {
            g.drop_no_real += 1;
            xdp_action::XDP_DROP
        }
        Verdict::Tx => {
            g.transmitted += 1;
            xdp_action::XDP_TX
        }
    }
}

/// A parsed IP packet of either family: where its upper-layer header is and the fields
/// scheduling needs.
struct Packet<A> {
    /// Offset of the L4 header.
    l4: usize,
    /// IP length: the header (with extension headers) and payload, as IPVS counts bytes.
    ip_len: u32,
    src: A,
    dst: A,
    /// The upper-layer protocol (after IPv6 extension headers).
    proto: u8,
    /// Fragment (more-fragments set, or a non-zero offset).
    fragment: bool,
}

/// A service found in the VIP table.
struct Svc {
    id: u32,
    info: &'static Service,
}

/// A real that may take the frame: its index and its entry.
#[derive(Clone, Copy)]
struct Target {
    idx: u32,
    real: &'static Real,
}

#[inline(always)]
fn process(ctx: &XdpContext, settings: &Settings, g: &mut GlobalStats) -> Verdict {
    let Some((ether_type, l3)) = parse_ethernet(ctx) else {
        return Verdict::Pass;
    };
    match ether_type {
        ETH_P_IPV4 => {
            let Some(pkt) = parse_ipv4(ctx, l3) else {
                return Verdict::Pass;
            };
            match pkt.proto {
                proto::TCP | proto::UDP if pkt.fragment => {
                    forward_fragment::<V4>(ctx, &pkt, settings, g)
                }
                proto::TCP | proto::UDP => forward_flow::<V4>(ctx, &pkt, settings, g),
                proto::ICMP if !pkt.fragment => forward_icmp4_error(ctx, &pkt, settings, g),
                _ => Verdict::Pass,
            }
        }
        ETH_P_IPV6 => {
            let Some(pkt) = parse_ipv6(ctx, l3, g) else {
                return Verdict::Pass;
            };
            match pkt.proto {
                proto::TCP | proto::UDP if pkt.fragment => {
                    forward_fragment::<V6>(ctx, &pkt, settings, g)
                }
                proto::TCP | proto::UDP => forward_flow::<V6>(ctx, &pkt, settings, g),
                nexthdr::ICMPV6 if !pkt.fragment => forward_icmp6_error(ctx, &pkt, settings, g),
                _ => Verdict::Pass,
            }
        }
        _ => Verdict::Pass,
    }
}

// ---------------------------------------------------------------------------------------------
// The two address families

/// What differs between IPv4 and IPv6 on the packet path: the address type, the keys and the
/// tables. Everything else (services, reals, lookup tables, counts, counters) is shared, and
/// the path below is written once for both. What a key decides (its hashes, the persistence
/// key, the VIP probe) is `lb_common::decide`'s, which the control plane calls too.
trait Family {
    /// An address as stored in keys.
    type Addr: Copy;
    /// Connection-table key.
    type Flow: FlowKey<Addr = Self::Addr, Client = Self::Client>;
    /// Persistence-template key.
    type Client: SlotData;
    /// VIP-table key.
    type Vip: VipKey + 'static;

    /// The VIP-table key of `(addr, port, proto)` (port in wire order; 0 = the fragment entry).
    fn vip(addr: Self::Addr, port: u16, proto: u8) -> Self::Vip;
    /// Bucket `idx` of the VIP table.
    fn vip_bucket(idx: u32) -> Option<&'static <Self::Vip as VipKey>::Bucket>;
    /// The connection-table set of a flow hash.
    fn conn_set(settings: &Settings, hash: u32) -> Option<*mut Set<Self::Flow, Conn, CONN_WAYS>>;
    /// The persistence-table set and tag of a client key.
    fn persist_set(
        settings: &Settings,
        client: &Self::Client,
    ) -> Option<(*mut Set<Self::Client, Template, PERSIST_WAYS>, u32)>;
    /// Hash of a fragment's (source, destination, protocol).
    fn fragment_hash(src: Self::Addr, dst: Self::Addr, proto: u8) -> u32;
}

/// IPv4: addresses are one network-order word.
struct V4;

impl Family for V4 {
    type Addr = u32;
    type Flow = Flow4Key;
    type Client = Persist4Key;
    type Vip = Vip4Key;

    #[inline(always)]
    fn vip(addr: u32, port: u16, proto: u8) -> Vip4Key {
        Vip4Key {
            addr,
            port,
            proto,
            _pad: 0,
        }
    }

    #[inline(always)]
    fn vip_bucket(idx: u32) -> Option<&'static VipBucket4> {
        VIPS4.get(idx)
    }

    #[inline(always)]
    fn conn_set(settings: &Settings, hash: u32) -> Option<*mut ConnSet4> {
        CONNS4.get_ptr_mut(hash & settings.conn_mask)
    }

    #[inline(always)]
    fn persist_set(settings: &Settings, client: &Persist4Key) -> Option<(*mut PersistSet4, u32)> {
        let hash = client.hash();
        Some((
            PERSIST4.get_ptr_mut(hash & settings.persist_mask)?,
            hash | 1,
        ))
    }

    #[inline(always)]
    fn fragment_hash(src: u32, dst: u32, proto: u8) -> u32 {
        fragment_hash4(src, dst, proto)
    }
}

/// IPv6: addresses are four network-order words ([`Addr6`]).
struct V6;

impl Family for V6 {
    type Addr = Addr6;
    type Flow = Flow6Key;
    type Client = Persist6Key;
    type Vip = Vip6Key;

    #[inline(always)]
    fn vip(addr: Addr6, port: u16, proto: u8) -> Vip6Key {
        Vip6Key {
            addr,
            port,
            proto,
            _pad: 0,
        }
    }

    /// The same `vip_base` flips both VIP tables.
    #[inline(always)]
    fn vip_bucket(idx: u32) -> Option<&'static VipBucket6> {
        VIPS6.get(idx)
    }

    #[inline(always)]
    fn conn_set(settings: &Settings, hash: u32) -> Option<*mut ConnSet6> {
        CONNS6.get_ptr_mut(hash & settings.conn6_mask)
    }

    #[inline(always)]
    fn persist_set(settings: &Settings, client: &Persist6Key) -> Option<(*mut PersistSet6, u32)> {
        let hash = client.hash();
        Some((
            PERSIST6.get_ptr_mut(hash & settings.persist6_mask)?,
            hash | 1,
        ))
    }

    #[inline(always)]
    fn fragment_hash(src: Addr6, dst: Addr6, proto: u8) -> u32 {
        fragment_hash6(&src, &dst, proto)
    }
}

/// The service of `(addr, port, proto)` in the active half of the family's VIP table.
#[inline(always)]
fn service<F: Family>(settings: &Settings, addr: F::Addr, port: u16, proto: u8) -> Option<Svc> {
    let key = F::vip(addr, port, proto);
    let id = find_service(&key, settings.vip_base, settings.vip_mask, F::vip_bucket)?;
    service_by_id(id)
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Pointer to a `T` at `offset` in the frame, if the whole `T` is inside it.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Ethernet with at most one 802.1Q tag: the ether type and the offset of the L3 header.
#[inline(always)]
fn parse_ethernet(ctx: &XdpContext) -> Option<(u16, usize)> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked that the Ethernet header is inside the frame.
    let ether_type = u16::from_be(unsafe { (*eth).ether_type });
    if ether_type != ETH_P_8021Q {
        return Some((ether_type, EthHdr::LEN));
    }
    let vlan: *const VlanHdr = ptr_at(ctx, EthHdr::LEN)?;
    // SAFETY: ptr_at checked that the tag is inside the frame.
    let inner = u16::from_be(unsafe { (*vlan).ether_type });
    Some((inner, EthHdr::LEN + VlanHdr::LEN))
}

/// The IPv4 header at `l3` (options skipped); `None` if it is not a valid one.
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3: usize) -> Option<Packet<u32>> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, l3)?;
    // SAFETY: ptr_at checked that the fixed header is inside the frame.
    let ip = unsafe { &*ip };
    let ihl = ((ip.vihl & 0x0f) as usize) << 2;
    if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        return None;
    }
    Some(Packet {
        l4: l3 + ihl,
        ip_len: u16::from_be_bytes(ip.tot_len) as u32,
        src: u32::from_ne_bytes(ip.src_addr),
        dst: u32::from_ne_bytes(ip.dst_addr),
        proto: ip.proto,
        fragment: u16::from_be_bytes(ip.frags) & IP_MF_OFFSET != 0,
    })
}

/// The IPv6 header at `l3` and up to `MAX_EXT_HDRS` extension headers after it (hop-by-hop,
/// routing, destination options, fragment, AH); `None` if it is not a valid IPv6 header, or if
/// the extension headers cannot be skipped within the bound: more of them, ESP, or one cut
/// short by the end of the frame (counted in `ext_hdr_passed`).
#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3: usize, g: &mut GlobalStats) -> Option<Packet<Addr6>> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, l3)?;
    // SAFETY: ptr_at checked that the fixed header is inside the frame.
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != 6 {
        return None;
    }
    let mut next = ip.next_hdr;
    let mut off = l3 + Ipv6Hdr::LEN;
    let mut fragment = false;
    let mut skipped = 0;
    while skipped < MAX_EXT_HDRS && is_extension(next) {
        // Every extension header is at least 8 bytes long.
        let Some(h) = ptr_at::<[u8; 8]>(ctx, off) else {
            g.ext_hdr_passed += 1;
            return None;
        };
        // SAFETY: ptr_at checked that the 8 bytes are inside the frame.
        let h = unsafe { *h };
        let this = next;
        next = h[0];
        skipped += 1;
        off += match this {
            nexthdr::FRAGMENT => 8,
            nexthdr::AH => (h[1] as usize + 2) * 4,
            _ => (h[1] as usize + 1) * 8,
        };
        // A fragment, unless offset and M flag are both 0 (an atomic fragment): what follows
        // its header is fragment data (later fragments carry no headers), so parsing stops and
        // every fragment of the datagram is scheduled by the fragment header's next header.
        if this == nexthdr::FRAGMENT && u16::from_be_bytes([h[2], h[3]]) & IP6_OFFSET_MF != 0 {
            fragment = true;
            break;
        }
    }
    // The headers must end inside the frame (a fragment's upper layer is never read, so
    // nothing else would notice).
    if (!fragment && (is_extension(next) || next == nexthdr::ESP))
        || ctx.data() + off > ctx.data_end()
    {
        g.ext_hdr_passed += 1;
        return None;
    }
    let l4 = forget(off)?;
    Some(Packet {
        l4,
        ip_len: u16::from_be_bytes(ip.payload_len) as u32 + Ipv6Hdr::LEN as u32,
        src: addr6(ip.src_addr),
        dst: addr6(ip.dst_addr),
        proto: next,
        fragment,
    })
}

/// Largest L4 offset the parser produces: an 802.1Q-tagged IPv6 header and `MAX_EXT_HDRS`
/// extension headers of the largest size (2048 bytes).
const MAX_L4_OFFSET: usize = EthHdr::LEN + VlanHdr::LEN + Ipv6Hdr::LEN + MAX_EXT_HDRS * 2048;

/// `off` through a per-CPU memory word, checked against [`MAX_L4_OFFSET`]. The verifier tracks
/// each combination of extension-header lengths as its own range of offsets and would check
/// the whole forwarding path once per combination (hundreds of times); after this round trip
/// every combination reaches it with the same range.
#[inline(always)]
fn forget(off: usize) -> Option<usize> {
    let p = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: `p` points to this CPU's word of the SCRATCH map value.
    let off = unsafe {
        core::ptr::write_volatile(p, off as u64);
        core::ptr::read_volatile(p) as usize
    };
    (off <= MAX_L4_OFFSET).then_some(off)
}

/// Whether an IPv6 next-header value is an extension header the parser skips.
#[inline(always)]
fn is_extension(next: u8) -> bool {
    matches!(
        next,
        nexthdr::HOP_BY_HOP
            | nexthdr::ROUTING
            | nexthdr::FRAGMENT
            | nexthdr::DEST_OPTS
            | nexthdr::AH
    )
}

/// Source and destination port (wire order) and TCP flags of the L4 header at `pkt.l4`.
#[inline(always)]
fn parse_ports<A>(ctx: &XdpContext, pkt: &Packet<A>) -> Option<(u16, u16, TcpFlags)> {
    if pkt.proto == proto::TCP {
        let tcp: *const TcpHdr = ptr_at(ctx, pkt.l4)?;
        // SAFETY: ptr_at checked that the whole fixed TCP header is inside the frame.
        let (source, dest, flags) = unsafe {
            (
                (*tcp).source,
                (*tcp).dest,
                *(tcp as *const u8).add(TCP_FLAGS_OFFSET),
            )
        };
        Some((
            u16::from_ne_bytes(source),
            u16::from_ne_bytes(dest),
            TcpFlags(flags),
        ))
    } else {
        let udp: *const UdpHdr = ptr_at(ctx, pkt.l4)?;
        // SAFETY: ptr_at checked that the UDP header is inside the frame.
        let udp = unsafe { &*udp };
        Some((
            u16::from_ne_bytes(udp.src),
            u16::from_ne_bytes(udp.dst),
            TcpFlags(0),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// The three ways a frame reaches a real

/// A TCP segment or UDP datagram to a service: connection table first, then scheduling.
#[inline(always)]
fn forward_flow<F: Family>(
    ctx: &XdpContext,
    pkt: &Packet<F::Addr>,
    settings: &Settings,
    g: &mut GlobalStats,
) -> Verdict {
    let Some((sport, dport, flags)) = parse_ports(ctx, pkt) else {
        return Verdict::Pass;
    };
    // Port 0 keys are the VIPs' fragment entries, not services.
    if dport == 0 {
        return Verdict::Pass;
    }
    let Some(svc) = service::<F>(settings, pkt.dst, dport, pkt.proto) else {
        return Verdict::Pass;
    };
    let flow = F::Flow::of(pkt.src, pkt.dst, sport, dport, pkt.proto);
    let hash = flow.flow_hash();
    let Some(set) = F::conn_set(settings, hash) else {
        return Verdict::Pass;
    };
    let now = settings.clock;
    let tcp = pkt.proto == proto::TCP;

    // One-packet scheduling (IPVS `ops`, UDP only): every datagram is scheduled on its own and
    // leaves no connection entry.
    let one_packet = !tcp && svc.info.flags & SVC_F_ONE_PACKET != 0;

    // A new SYN is always scheduled afresh (the client may reuse a port); everything else
    // looks for its connection first.
    if !one_packet
        && !(tcp && flags.is_new_syn())
        && let Some(target) =
            established_real::<F>(&svc, set, &flow, hash | 1, flags, tcp, settings, g)
    {
        return transmit(ctx, pkt.ip_len, &svc, target, settings, false);
    }

    g.conn_misses += 1;
    let Some(target) = schedule::<F>(&svc, &flow, hash, settings, g) else {
        debug!(ctx, "service {} has no usable real", svc.id);
        return Verdict::DropNoReal;
    };
    if one_packet {
        return transmit(ctx, pkt.ip_len, &svc, target, settings, true);
    }
    let state = if tcp {
        ConnState::first_tcp(flags)
    } else {
        ConnState::Udp
    };
    let entry = Conn {
        real: target.idx,
        state: state as u8,
        _pad: [0; 3],
    };
    // An unconfirmed entry never pushes out an established connection (see
    // `lb_common::conn_eviction`); without room it is not stored and the flow still goes.
    let evict = |old: &Conn, stamp: u32| conn_eviction(settings, entry.state, old, stamp);
    // SAFETY: `set` points to a set in the connection-table map value.
    match unsafe { Set::insert(set, &flow, hash | 1, &entry, now, evict) } {
        Inserted::Busy => g.conn_insert_failed += 1,
        Inserted::Full => g.conn_insert_refused += 1,
        Inserted::Stored { replaced, evicted } => {
            if lb_common::sync::confirmed(entry.state) {
                announce(&flow, &entry, settings);
            }
            // The counts follow the table: the new entry in, whatever it overwrote out.
            account(target.idx, entry.state, 1);
            bind_overload(&target);
            if let Some(old) = replaced {
                account(old.real, old.state, -1);
                if evicted && old.state == ConnState::Established as u8 {
                    g.conn_evicted_established += 1;
                } else if evicted {
                    g.conn_evicted_other += 1;
                }
            }
        }
    }
    transmit(ctx, pkt.ip_len, &svc, target, settings, true)
}

/// An IP fragment: no ports, so scheduled by (source, destination, protocol) through the
/// VIP's fragment entry; no connection entry.
#[inline(always)]
fn forward_fragment<F: Family>(
    ctx: &XdpContext,
    pkt: &Packet<F::Addr>,
    settings: &Settings,
    g: &mut GlobalStats,
) -> Verdict {
    let Some(svc) = service::<F>(settings, pkt.dst, 0, pkt.proto) else {
        return Verdict::Pass;
    };
    let Some(target) = table_pick(&svc, F::fragment_hash(pkt.src, pkt.dst, pkt.proto)) else {
        return Verdict::DropNoReal;
    };
    g.fragments += 1;
    transmit(ctx, pkt.ip_len, &svc, target, settings, false)
}

/// ICMP destination-unreachable (fragmentation needed included) about a VIP flow: sent to the
/// real that owns the quoted flow, so path MTU discovery works through the director.
#[inline(always)]
fn forward_icmp4_error(
    ctx: &XdpContext,
    pkt: &Packet<u32>,
    settings: &Settings,
    g: &mut GlobalStats,
) -> Verdict {
    let Some(icmp) = ptr_at::<Icmpv4Hdr>(ctx, pkt.l4) else {
        return Verdict::Pass;
    };
    // SAFETY: ptr_at checked that the ICMP header is inside the frame.
    if unsafe { (*icmp).type_ } != ICMP_DEST_UNREACH {
        return Verdict::Pass;
    }
    // The quoted packet is one the real sent as the VIP: VIP:vport -> client:cport.
    let inner_l3 = pkt.l4 + ICMP_ERROR_HEADER;
    let Some(inner) = ptr_at::<Ipv4Hdr>(ctx, inner_l3) else {
        return Verdict::Pass;
    };
    // SAFETY: ptr_at checked that the quoted header is inside the frame.
    let inner = unsafe { &*inner };
    let inner_ihl = ((inner.vihl & 0x0f) as usize) << 2;
    let inner_src = u32::from_ne_bytes(inner.src_addr);
    if inner.vihl >> 4 != 4 || inner_ihl < Ipv4Hdr::LEN || inner_src != pkt.dst {
        return Verdict::Pass;
    }
    let inner_dst = u32::from_ne_bytes(inner.dst_addr);
    forward_quoted::<V4>(
        ctx,
        pkt.ip_len,
        inner_src,
        inner_dst,
        inner.proto,
        inner_l3 + inner_ihl,
        settings,
        g,
    )
}

/// ICMPv6 destination-unreachable and packet-too-big about a VIP flow, as for IPv4. The quoted
/// packet's upper-layer header must follow its IPv6 header directly.
#[inline(always)]
fn forward_icmp6_error(
    ctx: &XdpContext,
    pkt: &Packet<Addr6>,
    settings: &Settings,
    g: &mut GlobalStats,
) -> Verdict {
    let Some(icmp) = ptr_at::<[u8; ICMP_ERROR_HEADER]>(ctx, pkt.l4) else {
        return Verdict::Pass;
    };
    // SAFETY: ptr_at checked that the ICMPv6 header is inside the frame.
    let ty = unsafe { (*icmp)[0] };
    if ty != ICMP6_DEST_UNREACH && ty != ICMP6_PACKET_TOO_BIG {
        return Verdict::Pass;
    }
    let inner_l3 = pkt.l4 + ICMP_ERROR_HEADER;
    let Some(inner) = ptr_at::<Ipv6Hdr>(ctx, inner_l3) else {
        return Verdict::Pass;
    };
    // SAFETY: ptr_at checked that the quoted header is inside the frame.
    let inner = unsafe { &*inner };
    let inner_src = addr6(inner.src_addr);
    if inner.vcf[0] >> 4 != 6 || !same6(&inner_src, &pkt.dst) {
        return Verdict::Pass;
    }
    let inner_dst = addr6(inner.dst_addr);
    forward_quoted::<V6>(
        ctx,
        pkt.ip_len,
        inner_src,
        inner_dst,
        inner.next_hdr,
        inner_l3 + Ipv6Hdr::LEN,
        settings,
        g,
    )
}

/// The end of both ICMP paths: the quoted packet went VIP:vport -> client:cport with protocol
/// `proto` and its ports at `ports_at`; the error goes to the real owning that flow, else to
/// the one the lookup table gives it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_quoted<F: Family>(
    ctx: &XdpContext,
    ip_len: u32,
    vip: F::Addr,
    client: F::Addr,
    proto: u8,
    ports_at: usize,
    settings: &Settings,
    g: &mut GlobalStats,
) -> Verdict {
    if proto != proto::TCP && proto != proto::UDP {
        return Verdict::Pass;
    }
    // The first 4 bytes of TCP and UDP headers are the ports.
    let Some(ports) = ptr_at::<[u16; 2]>(ctx, ports_at) else {
        return Verdict::Pass;
    };
    // SAFETY: ptr_at checked that both ports are inside the frame.
    let [vport, cport] = unsafe { *ports };
    if vport == 0 {
        return Verdict::Pass;
    }
    let Some(svc) = service::<F>(settings, vip, vport, proto) else {
        return Verdict::Pass;
    };
    let flow = F::Flow::of(client, vip, cport, vport, proto);
    let hash = flow.flow_hash();
    let target = match live_conn_real::<F>(&svc, &flow, hash, settings) {
        Some(target) => target,
        None => match table_pick(&svc, flow.schedule_hash(svc.info, hash)) {
            Some(target) => target,
            None => return Verdict::DropNoReal,
        },
    };
    g.icmp_forwarded += 1;
    transmit(ctx, ip_len, &svc, target, settings, false)
}

// ---------------------------------------------------------------------------------------------
// Connection table and scheduling

/// The real of a live connection entry for `flow`, if that real can still take it; updates
/// the entry's TCP state and last-used time. A hit on a down or foreign real is counted as
/// rescheduled and returns `None` so the caller schedules the flow again.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn established_real<F: Family>(
    svc: &Svc,
    set: *mut Set<F::Flow, Conn, CONN_WAYS>,
    flow: &F::Flow,
    tag: u32,
    flags: TcpFlags,
    tcp: bool,
    settings: &Settings,
    g: &mut GlobalStats,
) -> Option<Target> {
    // SAFETY: `set` points to a set in the connection-table map value.
    let found = unsafe { Set::find(set, flow, tag) }?;
    let now = settings.clock;
    let conn: Conn = found.value;
    if !settings.conn_live(conn.state, found.stamp) {
        return None;
    }
    let Some(target) = usable_real(conn.real, svc.id) else {
        g.conn_rescheduled += 1;
        return None;
    };
    g.conn_hits += 1;
    let state = if tcp {
        ConnState::from_u8(conn.state).next_tcp(flags) as u8
    } else {
        conn.state
    };
    if state != conn.state || found.stamp != now {
        let updated = Conn { state, ..conn };
        // SAFETY: `found.way` is a slot of `set`.
        unsafe { Set::touch(set, found.way, &updated, now) };
        if (state == ConnState::Established as u8) != (conn.state == ConnState::Established as u8) {
            account(conn.real, conn.state, -1);
            account(conn.real, state, 1);
            // Peers learn when a handshake completes and when the connection closes, so
            // their counts follow this director's.
            announce(flow, &updated, settings);
        }
        // Opening and closing keep the client's persistence template alive.
        if state != conn.state && svc.info.flags & SVC_F_PERSIST != 0 {
            touch_template::<F>(svc, flow, conn.real, settings);
        }
    }
    Some(target)
}

/// The real of a live connection entry, without changing anything (for ICMP errors).
#[inline(always)]
fn live_conn_real<F: Family>(
    svc: &Svc,
    flow: &F::Flow,
    hash: u32,
    settings: &Settings,
) -> Option<Target> {
    let set = F::conn_set(settings, hash)?;
    // SAFETY: `set` points to a set in the connection-table map value.
    let found = unsafe { Set::find(set, flow, hash | 1) }?;
    let conn: Conn = found.value;
    if !settings.conn_live(conn.state, found.stamp) {
        return None;
    }
    usable_real(conn.real, svc.id)
}

/// Picks the real for a new flow: the client's live persistence template if the service has
/// one and its real is not down, else the lookup table (or the least-connection choice).
#[inline(always)]
fn schedule<F: Family>(
    svc: &Svc,
    flow: &F::Flow,
    hash: u32,
    settings: &Settings,
    g: &mut GlobalStats,
) -> Option<Target> {
    if svc.info.flags & SVC_F_PERSIST == 0 {
        return pick_new(svc, flow.schedule_hash(svc.info, hash));
    }
    let key = flow.client(svc.id, svc.info);
    let (set, tag) = F::persist_set(settings, &key)?;
    let now = settings.clock;
    // SAFETY: `set` points to a set in the persistence map value.
    if let Some(t) = unsafe { Set::find(set, &key, tag) }
        && svc.info.template_live(now, t.stamp)
        && let Some(target) = usable_real(t.value.real, svc.id)
    {
        // SAFETY: `t.way` is a slot of `set`.
        unsafe { Set::touch(set, t.way, &t.value, now) };
        g.persist_hits += 1;
        return Some(target);
    }
    let target = pick_new(svc, flow.source_hash(svc.info))?;
    let template = Template {
        real: target.idx,
        _pad: 0,
    };
    let evict = |_: &Template, stamp: u32| svc.info.template_eviction(now, stamp);
    // A failed insert only loses stickiness for the next connection; the flow still goes.
    // SAFETY: `set` points to a set in the persistence map value.
    let _ = unsafe { Set::insert(set, &key, tag, &template, now, evict) };
    Some(target)
}

/// The real for a flow no entry or template decides: the Maglev table at the slot for `hash`,
/// or, for a least-connection service, the least loaded candidate (ties broken by `hash`). An
/// overloaded real (see [`overloaded`]) gets no new flow under any scheduler.
#[inline(always)]
fn pick_new(svc: &Svc, hash: u32) -> Option<Target> {
    if svc.info.sched == SCHED_MAGLEV {
        table_pick_new(svc, hash)
    } else {
        least_conn_pick(svc, hash)
    }
}

/// The Maglev table's real for a new flow: the real at the slot for `hash`, unless it is
/// overloaded or down. Then the hashing schedulers (`sh`, `mh`, `dh`) have none unless the
/// service has IPVS's fallback flag (`sh-fallback`, `mh-fallback`), as IPVS; with it, and for
/// `rr`/`wrr` past an overloaded real (IPVS's skip the overloaded), the flow takes the first
/// real neither down nor overloaded in the next `lb_common::FALLBACK_PROBES` slots, which the table fills
/// in proportion to the weights. The walk runs in `bpf_loop`, so that the verifier checks its
/// step once.
#[inline(always)]
fn table_pick_new(svc: &Svc, hash: u32) -> Option<Target> {
    let (base, size) = active_table(svc)?;
    let home = table_slot(hash, size);
    let flags = svc.info.flags;
    let fallback = flags & SVC_F_FALLBACK != 0;
    let hashing = flags & (SVC_F_HASH_SRC | SVC_F_HASH_DST) != 0;
    match slot_real(svc.id, base.wrapping_add(home)) {
        Some(first) if !overloaded(&first) => return Some(first),
        Some(_) if fallback || !hashing => {}
        None if fallback => {}
        _ => return None,
    }
    let mut walk = Walk {
        service_id: svc.id,
        base,
        size,
        home,
        found: NO_REAL,
    };
    // SAFETY: `walk_step` is a bpf_loop callback and `walk` outlives the call.
    unsafe {
        bpf_loop(
            FALLBACK_PROBES,
            walk_step as *mut c_void,
            (&raw mut walk).cast::<c_void>(),
            0,
        );
    }
    usable_real(walk.found, svc.id)
}

/// The state of a Maglev fallback walk (`bpf_loop`'s context).
#[repr(C)]
struct Walk {
    service_id: u32,
    base: u32,
    size: u32,
    home: u32,
    /// The real found ([`NO_REAL`]: none yet).
    found: u32,
}

/// Step `k` of a Maglev fallback walk: the slot `k + 1` after the home slot. Returns 1 (stop)
/// when its real is neither down nor overloaded.
#[inline(never)]
extern "C" fn walk_step(k: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` `table_pick_new` passes to bpf_loop.
    let walk = unsafe { &mut *ctx.cast::<Walk>() };
    if walk.size == 0 {
        return 1;
    }
    let offset = walk.home.wrapping_add(k as u32 + 1) % walk.size;
    match slot_real(walk.service_id, walk.base.wrapping_add(offset)) {
        Some(t) if !overloaded(&t) => {
            walk.found = t.idx;
            1
        }
        _ => 0,
    }
}

/// Whether a real is overloaded: IPVS's `IP_VS_DEST_F_OVERLOAD`, kept in its `RealLoad` (see
/// [`bind_overload`]). One read: the schedulers' loops stay cheap for the verifier.
#[inline(always)]
fn overloaded(t: &Target) -> bool {
    REAL_LOAD
        .get_ptr(t.idx)
        // SAFETY: the pointer is into the REAL_LOAD map value; an aligned u32.
        .is_some_and(|load| unsafe { core::ptr::read_volatile(&raw const (*load).overloaded) } != 0)
}

/// Re-evaluates real `t`'s overload after a new connection was bound to it, as IPVS does when
/// it binds one: its live counts against the thresholds in its `Real`, with the hysteresis of
/// `lb_common::overloaded`. The agent re-evaluates it with every recount of the stale entries
/// (every second), which is when connections that ended leave the counts: an overload ends up
/// to a second after IPVS would end it.
#[inline(always)]
fn bind_overload(t: &Target) {
    let (upper, lower) = (t.real.u_threshold, t.real.l_threshold);
    if upper == 0 {
        return;
    }
    let Some(load) = REAL_LOAD.get_ptr_mut(t.idx) else {
        return;
    };
    // SAFETY: `load` points into the REAL_LOAD map value; `overloaded` is an aligned u32 that
    // racing CPUs may both write, each with a decision from the counts it read.
    unsafe {
        let (active, inactive) = (*load).live();
        let was = core::ptr::read_volatile(&raw const (*load).overloaded) != 0;
        let now = lb_common::overloaded(was, active.saturating_add(inactive), upper, lower);
        if now != was {
            core::ptr::write_volatile(&raw mut (*load).overloaded, u32::from(now));
        }
    }
}

/// IPVS's schedulers that look at every real, over the service's candidates (see
/// `lb_common::Candidates`): the least-connection family `lc`, `wlc`, `sed` and `nq`, with the
/// costs of `lb_common::LcCost` and the scan of `lb_common::least_conn_choice`, and `fo` and
/// `ovf`, highest weight first (`lb_common::weight_choice`). Candidates that are down,
/// overloaded or of another service are skipped.
///
/// A real's load is its connection-table entries by class, which this program keeps exact, less
/// the stale ones the agent recounts every second (see `lb_common::RealLoad`): connections that
/// expired since the last recount still weigh on their real until the next one.
///
/// Error bound: with at most `LC_CANDIDATES` (8) eligible reals the candidates are all of them
/// and the choice is IPVS's exactly. With more, the candidates are the 8 least loaded (for
/// `fo` and `ovf`: the 8 heaviest, not overflowing first) at the agent's last refresh (every
/// 100 ms); a real outside them can only be less loaded than the choice by the number of its
/// connections that closed since that refresh.
#[inline(always)]
fn least_conn_pick(svc: &Svc, hash: u32) -> Option<Target> {
    let candidates = CANDIDATES.get(svc.id)?;
    let real = |idx| {
        let target = usable_real(idx, svc.id)?;
        let load = REAL_LOAD.get(idx)?;
        if load.overloaded != 0 {
            return None;
        }
        Some((target, target.real.weight, load.live()))
    };
    if svc.info.sched == SCHED_TWOS {
        twos_pick(svc)
    } else if by_weight(svc.info.sched) {
        weight_choice(svc.info.sched, candidates, real)
    } else {
        least_conn_choice(svc.info.sched, candidates, hash, real)
    }
}

/// IPVS's `twos` over the service's candidates (`lb_common::Twos`): two draws by weight among
/// the usable ones, the less loaded of the two. The scan runs in `bpf_loop`, so that the
/// verifier checks its step once.
#[inline(always)]
fn twos_pick(svc: &Svc) -> Option<Target> {
    let mut scan = TwosScan {
        service_id: svc.id,
        _pad: 0,
        twos: Twos::new(),
    };
    // SAFETY: `twos_step` is a bpf_loop callback and `scan` outlives the call.
    unsafe {
        bpf_loop(
            LC_CANDIDATES as u32,
            twos_step as *mut c_void,
            (&raw mut scan).cast::<c_void>(),
            0,
        );
    }
    usable_real(scan.twos.choice(), svc.id)
}

/// The state of a `twos` scan (`bpf_loop`'s context).
#[repr(C)]
struct TwosScan {
    service_id: u32,
    _pad: u32,
    twos: Twos,
}

/// Step `k` of a `twos` scan: candidate `k`, if it is usable and not overloaded, with two
/// fresh random numbers.
#[inline(never)]
extern "C" fn twos_step(k: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `TwosScan` `twos_pick` passes to bpf_loop.
    let scan = unsafe { &mut *ctx.cast::<TwosScan>() };
    let Some(candidates) = CANDIDATES.get(scan.service_id) else {
        return 1;
    };
    let Some(&index) = candidates.get(k as usize) else {
        return 1;
    };
    let Some(target) = usable_real(index, scan.service_id) else {
        return 0;
    };
    let Some(load) = REAL_LOAD.get(index) else {
        return 0;
    };
    if load.overloaded != 0 {
        return 0;
    }
    // SAFETY: helpers without arguments.
    let (r1, r2) = unsafe { (bpf_get_prandom_u32(), bpf_get_prandom_u32()) };
    scan.twos
        .step(index, target.real.weight, load.live(), r1, r2);
    0
}

/// Adds `delta` to the active or inactive count (by `state`) of real `idx`.
#[inline(always)]
fn account(idx: u32, state: u8, delta: i64) {
    if let Some(load) = REAL_LOAD.get_ptr_mut(idx) {
        // SAFETY: `load` points into the REAL_LOAD map value.
        unsafe { RealLoad::add(load, state, delta) };
    }
}

/// Tells the agent's director sync about `flow` on `conn`'s real (a handshake completed, a UDP
/// flow began, a connection closed), if sync is on: the event goes to this CPU's next ring slot
/// (see `lb_common::sync`), overwriting the oldest, which the agent has read long since.
#[inline(always)]
fn announce<K: FlowKey>(flow: &K, conn: &Conn, settings: &Settings) {
    if settings.sync == 0 {
        return;
    }
    let Some(head) = SYNC_HEAD.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: `head` points to this CPU's element, which only this CPU writes.
    let n = unsafe { *head };
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let index = cpu
        .wrapping_mul(SYNC_SLOTS)
        .wrapping_add(n as u32 & (SYNC_SLOTS - 1));
    let Some(slot) = SYNC_RING.get_ptr_mut(index) else {
        return;
    };
    let words = flow.sync_event(conn.real, conn.state).to_words();
    // SAFETY: `slot` points to an element of this CPU's ring, which only this CPU writes; the
    // sequence number is cleared first and stored last, so a reader never takes a half-written
    // event for a whole one.
    unsafe {
        core::ptr::write_volatile(&raw mut (*slot).seq, 0);
        let event = (&raw mut (*slot).event).cast::<u64>();
        for (i, w) in words.iter().enumerate() {
            core::ptr::write_volatile(event.add(i), *w);
        }
        core::ptr::write_volatile(&raw mut (*slot).seq, n + 1);
        *head = n + 1;
    }
}

/// Refreshes the template of the flow's client if it still points at `real`.
#[inline(always)]
fn touch_template<F: Family>(svc: &Svc, flow: &F::Flow, real: u32, settings: &Settings) {
    let key = flow.client(svc.id, svc.info);
    let Some((set, tag)) = F::persist_set(settings, &key) else {
        return;
    };
    // SAFETY: `set` points to a set in the persistence map value; `t.way` is one of its slots.
    unsafe {
        if let Some(t) = Set::find(set, &key, tag)
            && t.value.real == real
        {
            Set::touch(set, t.way, &t.value, settings.clock);
        }
    }
}

/// The real in the service's active lookup table at the slot for `hash`, if it is usable.
#[inline(always)]
fn table_pick(svc: &Svc, hash: u32) -> Option<Target> {
    let (base, size) = active_table(svc)?;
    slot_real(svc.id, base.wrapping_add(table_slot(hash, size)))
}

/// The service's active lookup table: flat index of its slot 0 and its size (`None`: no
/// usable real).
#[inline(always)]
fn active_table(svc: &Svc) -> Option<(u32, u32)> {
    // One 8-byte read: base and size of the same table, even while a new one is published.
    // SAFETY: `svc.info` is a reference into the SERVICES map value.
    let table = unsafe { core::ptr::read_volatile(&svc.info.table) };
    let (base, size) = ((table >> 32) as u32, table as u32);
    if size == 0 { None } else { Some((base, size)) }
}

/// The real at flat lookup slot `slot`, if it is usable by service `service_id`.
#[inline(always)]
fn slot_real(service_id: u32, slot: u32) -> Option<Target> {
    let row = LOOKUP.get(slot / LOOKUP_ROW)?;
    let real = row[(slot % LOOKUP_ROW) as usize];
    if real == NO_REAL {
        return None;
    }
    usable_real(real, service_id)
}

/// The real at `idx` if it is up and belongs to service `service_id`.
#[inline(always)]
fn usable_real(idx: u32, service_id: u32) -> Option<Target> {
    let real = REALS.get(idx)?;
    if real.state == REAL_UP && real.service_id == service_id {
        Some(Target { idx, real })
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Transmit and counters

/// Rewrites the MACs (destination = the real, source = this interface), counts, and returns
/// XDP_TX. No other byte of the frame changes.
#[inline(always)]
fn transmit(
    ctx: &XdpContext,
    ip_len: u32,
    svc: &Svc,
    target: Target,
    settings: &Settings,
    new_conn: bool,
) -> Verdict {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Verdict::Pass;
    };
    // SAFETY: ptr_at checked that the Ethernet header is inside the frame.
    unsafe {
        write_mac(eth.cast::<u8>(), &target.real.mac);
        write_mac(eth.cast::<u8>().add(6), &settings.mac);
    }
    count(&SERVICE_STATS, svc.id, ip_len, new_conn);
    count(&REAL_STATS, target.idx, ip_len, new_conn);
    Verdict::Tx
}

/// Writes a MAC address as one 4-byte and one 2-byte store (a plain array copy would become a
/// call to a byte-by-byte `memcpy` in BPF).
///
/// # Safety
/// `dst` must be valid for 6 bytes.
#[inline(always)]
unsafe fn write_mac(dst: *mut u8, mac: &[u8; 6]) {
    let head = u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let tail = u16::from_ne_bytes([mac[4], mac[5]]);
    // SAFETY: `dst` is valid for 6 bytes (caller); unaligned stores are allowed.
    unsafe {
        dst.cast::<u32>().write_unaligned(head);
        dst.add(4).cast::<u16>().write_unaligned(tail);
    }
}

/// Counts one forwarded frame of `bytes` IP bytes (and a new connection) in element `idx`.
#[inline(always)]
fn count(stats: &PerCpuArray<TrafficStats>, idx: u32, bytes: u32, new_conn: bool) {
    if let Some(s) = stats.get_ptr_mut(idx) {
        // SAFETY: `s` points to this CPU's element of the map, which nothing else writes while
        // this program runs on this CPU.
        let s = unsafe { &mut *s };
        s.packets += 1;
        s.bytes += bytes as u64;
        if new_conn {
            s.conns += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small lookups

/// The service with id `id`.
#[inline(always)]
fn service_by_id(id: u32) -> Option<Svc> {
    Some(Svc {
        id,
        info: SERVICES.get(id)?,
    })
}

/// This CPU's director-wide counters.
#[inline(always)]
fn global_stats() -> Option<&'static mut GlobalStats> {
    // SAFETY: `p` points to this CPU's element of the per-CPU map, which lives as long as the
    // program and which nothing else writes while this program runs on this CPU.
    GLOBAL_STATS.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
