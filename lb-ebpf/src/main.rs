//! The XDP data plane: direct-routing load balancing.
//!
//! Read top to bottom, this file is a packet's journey:
//! parse (Ethernet, optional 802.1Q tag, IPv4) -> find the service -> connection table ->
//! schedule (persistence template, then the Maglev lookup table) -> rewrite the destination
//! MAC -> XDP_TX. Anything that is not for a configured service leaves with XDP_PASS, untouched.
//!
//! Map layouts and constants live in `lb-common`; map sizes are set by the loader.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, xdp_action},
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use lb_common::{
    Conn, ConnState, Flow4Key, GlobalStats, LOOKUP_ROW, LookupRow, NO_REAL, Persist4Key,
    PersistEntry, REAL_UP, Real, SVC_F_HASH_SRC, SVC_F_PERSIST, Service, Settings, TcpFlags,
    TrafficStats, Vip4Key, flow_hash4, fragment_hash4, proto, source_hash4, table_slot,
};
use network_types::{
    eth::EthHdr, icmp::Icmpv4Hdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr, vlan::VlanHdr,
};

// Sizes here are placeholders: the loader sets every map's size from configuration.

#[map(name = "SETTINGS")]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
#[map(name = "SERVICES4")]
static SERVICES4: HashMap<Vip4Key, Service> = HashMap::with_max_entries(1, 0);
#[map(name = "LOOKUP")]
static LOOKUP: Array<LookupRow> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "REALS")]
static REALS: Array<Real> = Array::with_max_entries(1, 0);
#[map(name = "CONNS4")]
static CONNS4: LruHashMap<Flow4Key, Conn> = LruHashMap::with_max_entries(1, 0);
#[map(name = "PERSIST4")]
static PERSIST4: LruHashMap<Persist4Key, PersistEntry> = LruHashMap::with_max_entries(1, 0);
#[map(name = "GLOBAL_STATS")]
static GLOBAL_STATS: PerCpuArray<GlobalStats> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "SERVICE_STATS")]
static SERVICE_STATS: PerCpuArray<TrafficStats> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "REAL_STATS")]
static REAL_STATS: PerCpuArray<TrafficStats> = PerCpuArray::with_max_entries(1, 0);

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
/// IPv4 "more fragments" flag and fragment offset bits of `frags`.
const IP_MF_OFFSET: u16 = 0x3fff;
const ICMP_DEST_UNREACH: u8 = 3;
/// Byte of the TCP header holding the flags (CWR..FIN).
const TCP_FLAGS_OFFSET: usize = 13;
const NS_PER_SEC: u64 = 1_000_000_000;

/// What happens to the frame.
enum Verdict {
    /// Not ours: hand to the kernel untouched.
    Pass,
    /// For a service without a usable real.
    DropNoReal,
    /// Rewritten and sent to a real.
    Tx,
}

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let Some(g) = global_stats() else {
        return xdp_action::XDP_PASS;
    };
    g.rx += 1;
    match process(&ctx, g) {
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

/// The parsed IPv4 packet: where its headers are and the fields scheduling needs.
struct Packet {
    /// Offset of the L4 header.
    l4: usize,
    /// IP total length (what IPVS counts as bytes).
    ip_len: u16,
    src: u32,
    dst: u32,
    proto: u8,
    /// Fragment (more-fragments set, or a non-zero offset).
    fragment: bool,
}

#[inline(always)]
fn process(ctx: &XdpContext, g: &mut GlobalStats) -> Verdict {
    let Some(pkt) = parse_ipv4(ctx) else {
        return Verdict::Pass;
    };
    match pkt.proto {
        proto::TCP | proto::UDP if pkt.fragment => forward_fragment(ctx, &pkt, g),
        proto::TCP | proto::UDP => forward_flow(ctx, &pkt, g),
        proto::ICMP if !pkt.fragment => forward_icmp_error(ctx, &pkt, g),
        _ => Verdict::Pass,
    }
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

/// Ethernet (with at most one 802.1Q tag) then IPv4; `None` for anything else.
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext) -> Option<Packet> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    let mut l3 = EthHdr::LEN;
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    if ether_type == ETH_P_8021Q {
        let vlan: *const VlanHdr = ptr_at(ctx, l3)?;
        ether_type = u16::from_be(unsafe { (*vlan).ether_type });
        l3 += VlanHdr::LEN;
    }
    if ether_type != ETH_P_IPV4 {
        return None;
    }
    let ip: *const Ipv4Hdr = ptr_at(ctx, l3)?;
    let ip = unsafe { &*ip };
    let ihl = ((ip.vihl & 0x0f) as usize) << 2;
    if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        return None;
    }
    Some(Packet {
        l4: l3 + ihl,
        ip_len: u16::from_be_bytes(ip.tot_len),
        src: u32::from_ne_bytes(ip.src_addr),
        dst: u32::from_ne_bytes(ip.dst_addr),
        proto: ip.proto,
        fragment: u16::from_be_bytes(ip.frags) & IP_MF_OFFSET != 0,
    })
}

/// Source and destination port (wire order) and TCP flags of the L4 header at `pkt.l4`.
#[inline(always)]
fn parse_ports(ctx: &XdpContext, pkt: &Packet) -> Option<(u16, u16, TcpFlags)> {
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
fn forward_flow(ctx: &XdpContext, pkt: &Packet, g: &mut GlobalStats) -> Verdict {
    let Some((sport, dport, flags)) = parse_ports(ctx, pkt) else {
        return Verdict::Pass;
    };
    // Port 0 keys are the VIPs' fragment entries, not services.
    if dport == 0 {
        return Verdict::Pass;
    }
    let Some(svc) = service(pkt.dst, dport, pkt.proto) else {
        return Verdict::Pass;
    };
    let Some(settings) = settings() else {
        return Verdict::Pass;
    };
    let flow = Flow4Key {
        src: pkt.src,
        dst: pkt.dst,
        sport,
        dport,
        proto: pkt.proto,
        _pad: [0; 3],
    };
    let now = now_ns();
    let tcp = pkt.proto == proto::TCP;

    // A new SYN is always scheduled afresh (the client may reuse a port); everything else
    // looks for its connection first.
    if !(tcp && flags.is_new_syn())
        && let Some(real_idx) = established_real(svc, &flow, flags, tcp, now, settings, g)
    {
        return transmit(ctx, pkt, svc, real_idx, false);
    }

    g.conn_misses += 1;
    let Some(real_idx) = schedule(svc, &flow, now, g) else {
        debug!(ctx, "service {} has no usable real", svc.id);
        return Verdict::DropNoReal;
    };
    let state = if tcp {
        ConnState::first_tcp(flags)
    } else {
        ConnState::Udp
    };
    let entry = Conn {
        real: real_idx,
        state: state as u8,
        _pad: [0; 3],
        last_seen_ns: now,
    };
    if CONNS4.insert(flow, entry, 0).is_err() {
        g.conn_insert_failed += 1;
    }
    transmit(ctx, pkt, svc, real_idx, true)
}

/// An IP fragment: no ports, so scheduled by (source, destination, protocol) through the
/// VIP's fragment service; no connection entry.
#[inline(always)]
fn forward_fragment(ctx: &XdpContext, pkt: &Packet, g: &mut GlobalStats) -> Verdict {
    let Some(svc) = service(pkt.dst, 0, pkt.proto) else {
        return Verdict::Pass;
    };
    let Some(real_idx) = table_pick(svc, fragment_hash4(pkt.src, pkt.dst, pkt.proto)) else {
        return Verdict::DropNoReal;
    };
    g.fragments += 1;
    transmit(ctx, pkt, svc, real_idx, false)
}

/// ICMP destination-unreachable (fragmentation needed included) about a VIP flow: sent to the
/// real that owns the quoted flow, so path MTU discovery works through the director.
#[inline(always)]
fn forward_icmp_error(ctx: &XdpContext, pkt: &Packet, g: &mut GlobalStats) -> Verdict {
    let Some(icmp) = ptr_at::<Icmpv4Hdr>(ctx, pkt.l4) else {
        return Verdict::Pass;
    };
    if unsafe { (*icmp).type_ } != ICMP_DEST_UNREACH {
        return Verdict::Pass;
    }
    // The quoted packet is one the real sent as the VIP: VIP:vport -> client:cport.
    let inner_l3 = pkt.l4 + Icmpv4Hdr::LEN;
    let Some(inner) = ptr_at::<Ipv4Hdr>(ctx, inner_l3) else {
        return Verdict::Pass;
    };
    let inner = unsafe { &*inner };
    let inner_ihl = ((inner.vihl & 0x0f) as usize) << 2;
    let inner_src = u32::from_ne_bytes(inner.src_addr);
    if inner.vihl >> 4 != 4 || inner_ihl < Ipv4Hdr::LEN || inner_src != pkt.dst {
        return Verdict::Pass;
    }
    let inner_proto = inner.proto;
    if inner_proto != proto::TCP && inner_proto != proto::UDP {
        return Verdict::Pass;
    }
    // The first 4 bytes of TCP and UDP headers are the ports.
    let Some(ports) = ptr_at::<[u16; 2]>(ctx, inner_l3 + inner_ihl) else {
        return Verdict::Pass;
    };
    let [vport, cport] = unsafe { *ports };
    if vport == 0 {
        return Verdict::Pass;
    }
    let Some(svc) = service(inner_src, vport, inner_proto) else {
        return Verdict::Pass;
    };
    let Some(settings) = settings() else {
        return Verdict::Pass;
    };
    let flow = Flow4Key {
        src: u32::from_ne_bytes(inner.dst_addr),
        dst: inner_src,
        sport: cport,
        dport: vport,
        proto: inner_proto,
        _pad: [0; 3],
    };
    let real_idx = match live_conn_real(svc, &flow, now_ns(), settings) {
        Some(idx) => idx,
        None => match table_pick(svc, flow_schedule_hash(svc, &flow)) {
            Some(idx) => idx,
            None => return Verdict::DropNoReal,
        },
    };
    g.icmp_forwarded += 1;
    transmit(ctx, pkt, svc, real_idx, false)
}

// ---------------------------------------------------------------------------------------------
// Connection table and scheduling

/// The real of a live connection entry for `flow`, if that real can still take it; updates
/// the entry's TCP state and last-seen time. A hit on a down or foreign real is counted as
/// rescheduled and returns `None` so the caller schedules the flow again.
#[inline(always)]
fn established_real(
    svc: &Service,
    flow: &Flow4Key,
    flags: TcpFlags,
    tcp: bool,
    now: u64,
    settings: &Settings,
    g: &mut GlobalStats,
) -> Option<u32> {
    let entry = CONNS4.get_ptr_mut(flow)?;
    let entry = unsafe { &mut *entry };
    if now.saturating_sub(entry.last_seen_ns) > settings.timeout_ns(entry.state) {
        return None;
    }
    if usable_real(entry.real, svc.id).is_none() {
        g.conn_rescheduled += 1;
        return None;
    }
    g.conn_hits += 1;
    let state = if tcp {
        ConnState::from_u8(entry.state).next_tcp(flags) as u8
    } else {
        entry.state
    };
    if state != entry.state {
        entry.state = state;
        // Opening and closing keep the client's persistence template alive.
        if svc.flags & SVC_F_PERSIST != 0 {
            touch_template(svc, flow, entry.real, now);
        }
    }
    if entry.last_seen_ns != now {
        entry.last_seen_ns = now;
    }
    Some(entry.real)
}

/// The real of a live connection entry, without changing anything (for ICMP errors).
#[inline(always)]
fn live_conn_real(svc: &Service, flow: &Flow4Key, now: u64, settings: &Settings) -> Option<u32> {
    let entry = unsafe { CONNS4.get(flow) }?;
    if now.saturating_sub(entry.last_seen_ns) > settings.timeout_ns(entry.state) {
        return None;
    }
    usable_real(entry.real, svc.id)?;
    Some(entry.real)
}

/// Picks the real for a new flow: the client's live persistence template if the service has
/// one and its real is not down, else the lookup table.
#[inline(always)]
fn schedule(svc: &Service, flow: &Flow4Key, now: u64, g: &mut GlobalStats) -> Option<u32> {
    if svc.flags & SVC_F_PERSIST == 0 {
        return table_pick(svc, flow_schedule_hash(svc, flow));
    }
    let key = Persist4Key {
        service_id: svc.id,
        client: flow.src & svc.persist_mask4,
    };
    if let Some(t) = PERSIST4.get_ptr_mut(key) {
        let t = unsafe { &mut *t };
        let timeout = svc.persist_timeout as u64 * NS_PER_SEC;
        if now.saturating_sub(t.last_seen_ns) <= timeout && usable_real(t.real, svc.id).is_some() {
            t.last_seen_ns = now;
            g.persist_hits += 1;
            return Some(t.real);
        }
    }
    let real = table_pick(svc, source_hash4(key.client))?;
    let template = PersistEntry {
        real,
        _pad: 0,
        last_seen_ns: now,
    };
    // A failed insert only loses stickiness for the next connection; the flow still goes.
    let _ = PERSIST4.insert(key, template, 0);
    Some(real)
}

/// Refreshes the client's template if it still points at `real`.
#[inline(always)]
fn touch_template(svc: &Service, flow: &Flow4Key, real: u32, now: u64) {
    let key = Persist4Key {
        service_id: svc.id,
        client: flow.src & svc.persist_mask4,
    };
    if let Some(t) = PERSIST4.get_ptr_mut(key) {
        let t = unsafe { &mut *t };
        if t.real == real {
            t.last_seen_ns = now;
        }
    }
}

/// The hash that places a flow in the service's lookup table: by source for `sh` and
/// persistent services, else by the 5-tuple.
#[inline(always)]
fn flow_schedule_hash(svc: &Service, flow: &Flow4Key) -> u32 {
    if svc.flags & (SVC_F_HASH_SRC | SVC_F_PERSIST) != 0 {
        source_hash4(flow.src & svc.persist_mask4)
    } else {
        flow_hash4(flow.src, flow.dst, flow.sport, flow.dport, flow.proto)
    }
}

/// The real in the service's active lookup table at the slot for `hash`, if it is usable.
#[inline(always)]
fn table_pick(svc: &Service, hash: u32) -> Option<u32> {
    if svc.table_size == 0 {
        return None;
    }
    let slot = svc
        .table_base
        .wrapping_add(table_slot(hash, svc.table_size));
    let row = LOOKUP.get(slot / LOOKUP_ROW)?;
    let real = row[(slot % LOOKUP_ROW) as usize];
    if real == NO_REAL {
        return None;
    }
    usable_real(real, svc.id)?;
    Some(real)
}

/// The real at `idx` if it is up and belongs to service `service_id`.
#[inline(always)]
fn usable_real(idx: u32, service_id: u32) -> Option<&'static Real> {
    let real = REALS.get(idx)?;
    if real.state == REAL_UP && real.service_id == service_id {
        Some(real)
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
    pkt: &Packet,
    svc: &Service,
    real_idx: u32,
    new_conn: bool,
) -> Verdict {
    let (Some(real), Some(settings)) = (REALS.get(real_idx), settings()) else {
        return Verdict::DropNoReal;
    };
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Verdict::Pass;
    };
    unsafe {
        (*eth).dst_addr = real.mac;
        (*eth).src_addr = settings.mac;
    }
    count(&SERVICE_STATS, svc.id, pkt.ip_len, new_conn);
    count(&REAL_STATS, real_idx, pkt.ip_len, new_conn);
    Verdict::Tx
}

#[inline(always)]
fn count(stats: &PerCpuArray<TrafficStats>, idx: u32, bytes: u16, new_conn: bool) {
    if let Some(s) = stats.get_ptr_mut(idx) {
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

#[inline(always)]
fn service(addr: u32, port: u16, proto: u8) -> Option<&'static Service> {
    let key = Vip4Key {
        addr,
        port,
        proto,
        _pad: 0,
    };
    unsafe { SERVICES4.get(key) }
}

#[inline(always)]
fn settings() -> Option<&'static Settings> {
    SETTINGS.get(0)
}

#[inline(always)]
fn global_stats() -> Option<&'static mut GlobalStats> {
    GLOBAL_STATS.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Coarse monotonic time (tick resolution is plenty for idle timeouts, and it is cheap).
#[inline(always)]
fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
