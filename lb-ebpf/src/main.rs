//! The XDP data plane: direct-routing load balancing.
//!
//! Read top to bottom, this file is a packet's journey:
//! parse (Ethernet, optional 802.1Q tag, IPv4) -> find the service -> connection table ->
//! schedule (persistence template, then the Maglev lookup table) -> rewrite the destination
//! MAC -> XDP_TX. Anything that is not for a configured service leaves with XDP_PASS, untouched.
//!
//! Every table is an array (see `lb-common`): lookups compile to a few instructions with no
//! helper calls. Map layouts and constants live in `lb-common`; sizes are set by the loader.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, xdp_action},
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use lb_common::{
    Candidates, Conn, ConnSet4, ConnState, Flow4Key, GlobalStats, Inserted, LC_CANDIDATES,
    LOOKUP_ROW, LookupRow, NO_REAL, Persist4Key, PersistSet4, REAL_UP, Real, RealLoad, SCHED_LC,
    SCHED_MAGLEV, SCHED_NQ, SCHED_WLC, SVC_F_HASH_SRC, SVC_F_PERSIST, Service, Settings, TcpFlags,
    Template, TrafficStats, VIP_PROBES, Vip4Key, VipBucket4, fragment_hash4, proto, source_hash4,
    table_slot, vip_hash4,
};
use network_types::{
    eth::EthHdr, icmp::Icmpv4Hdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr, vlan::VlanHdr,
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
#[map(name = "REAL_LOAD")]
static REAL_LOAD: Array<RealLoad> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map(name = "LC_CANDIDATES")]
static CANDIDATES: Array<Candidates> = Array::with_max_entries(1, BPF_F_MMAPABLE);
/// How the pinned maps were created (see `lb_common::layout`); only the agent reads it.
#[map(name = "LAYOUT")]
static LAYOUT: Array<u32> = Array::with_max_entries(lb_common::layout::ENTRIES, 0);
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
    let Some(pkt) = parse_ipv4(ctx) else {
        return Verdict::Pass;
    };
    match pkt.proto {
        proto::TCP | proto::UDP if pkt.fragment => forward_fragment(ctx, &pkt, settings, g),
        proto::TCP | proto::UDP => forward_flow(ctx, &pkt, settings, g),
        proto::ICMP if !pkt.fragment => forward_icmp_error(ctx, &pkt, settings, g),
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
fn forward_flow(
    ctx: &XdpContext,
    pkt: &Packet,
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
    let Some(svc) = service(settings, pkt.dst, dport, pkt.proto) else {
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
    let hash = flow.hash();
    let Some(set) = CONNS4.get_ptr_mut(hash & settings.conn_mask) else {
        return Verdict::Pass;
    };
    let now = settings.clock;
    let tcp = pkt.proto == proto::TCP;

    // A new SYN is always scheduled afresh (the client may reuse a port); everything else
    // looks for its connection first.
    if !(tcp && flags.is_new_syn())
        && let Some(target) = established_real(&svc, set, &flow, hash | 1, flags, tcp, settings, g)
    {
        return transmit(ctx, pkt, &svc, target, settings, false);
    }

    g.conn_misses += 1;
    let Some(target) = schedule(&svc, &flow, hash, settings, g) else {
        debug!(ctx, "service {} has no usable real", svc.id);
        return Verdict::DropNoReal;
    };
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
    let expired = |c: &Conn, stamp: u32| now.wrapping_sub(stamp) > settings.timeout(c.state);
    // SAFETY: `set` points to a set in the CONNS4 map value.
    match unsafe { ConnSet4::insert(set, &flow, hash | 1, &entry, now, expired) } {
        Inserted::Busy => g.conn_insert_failed += 1,
        Inserted::Stored { replaced } => {
            // The counts follow the table: the new entry in, whatever it overwrote out.
            account(target.idx, entry.state, 1);
            if let Some(old) = replaced {
                account(old.real, old.state, -1);
            }
        }
    }
    transmit(ctx, pkt, &svc, target, settings, true)
}

/// An IP fragment: no ports, so scheduled by (source, destination, protocol) through the
/// VIP's fragment entry; no connection entry.
#[inline(always)]
fn forward_fragment(
    ctx: &XdpContext,
    pkt: &Packet,
    settings: &Settings,
    g: &mut GlobalStats,
) -> Verdict {
    let Some(svc) = service(settings, pkt.dst, 0, pkt.proto) else {
        return Verdict::Pass;
    };
    let Some(target) = table_pick(&svc, fragment_hash4(pkt.src, pkt.dst, pkt.proto)) else {
        return Verdict::DropNoReal;
    };
    g.fragments += 1;
    transmit(ctx, pkt, &svc, target, settings, false)
}

/// ICMP destination-unreachable (fragmentation needed included) about a VIP flow: sent to the
/// real that owns the quoted flow, so path MTU discovery works through the director.
#[inline(always)]
fn forward_icmp_error(
    ctx: &XdpContext,
    pkt: &Packet,
    settings: &Settings,
    g: &mut GlobalStats,
) -> Verdict {
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
    let Some(svc) = service(settings, inner_src, vport, inner_proto) else {
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
    let hash = flow.hash();
    let target = match live_conn_real(&svc, &flow, hash, settings) {
        Some(target) => target,
        None => match table_pick(&svc, flow_schedule_hash(&svc, &flow, hash)) {
            Some(target) => target,
            None => return Verdict::DropNoReal,
        },
    };
    g.icmp_forwarded += 1;
    transmit(ctx, pkt, &svc, target, settings, false)
}

// ---------------------------------------------------------------------------------------------
// Connection table and scheduling

/// The real of a live connection entry for `flow`, if that real can still take it; updates
/// the entry's TCP state and last-used time. A hit on a down or foreign real is counted as
/// rescheduled and returns `None` so the caller schedules the flow again.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn established_real(
    svc: &Svc,
    set: *mut ConnSet4,
    flow: &Flow4Key,
    tag: u32,
    flags: TcpFlags,
    tcp: bool,
    settings: &Settings,
    g: &mut GlobalStats,
) -> Option<Target> {
    // SAFETY: `set` points to a set in the CONNS4 map value.
    let found = unsafe { ConnSet4::find(set, flow, tag) }?;
    let now = settings.clock;
    let conn = found.value;
    if now.wrapping_sub(found.stamp) > settings.timeout(conn.state) {
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
        unsafe { ConnSet4::touch(set, found.way, &updated, now) };
        if (state == ConnState::Established as u8) != (conn.state == ConnState::Established as u8) {
            account(conn.real, conn.state, -1);
            account(conn.real, state, 1);
        }
        // Opening and closing keep the client's persistence template alive.
        if state != conn.state && svc.info.flags & SVC_F_PERSIST != 0 {
            touch_template(svc, flow, conn.real, settings);
        }
    }
    Some(target)
}

/// The real of a live connection entry, without changing anything (for ICMP errors).
#[inline(always)]
fn live_conn_real(svc: &Svc, flow: &Flow4Key, hash: u32, settings: &Settings) -> Option<Target> {
    let set = CONNS4.get_ptr_mut(hash & settings.conn_mask)?;
    // SAFETY: `set` points to a set in the CONNS4 map value.
    let found = unsafe { ConnSet4::find(set, flow, hash | 1) }?;
    if settings.clock.wrapping_sub(found.stamp) > settings.timeout(found.value.state) {
        return None;
    }
    usable_real(found.value.real, svc.id)
}

/// Picks the real for a new flow: the client's live persistence template if the service has
/// one and its real is not down, else the lookup table.
#[inline(always)]
fn schedule(
    svc: &Svc,
    flow: &Flow4Key,
    hash: u32,
    settings: &Settings,
    g: &mut GlobalStats,
) -> Option<Target> {
    if svc.info.flags & SVC_F_PERSIST == 0 {
        return pick_new(svc, flow_schedule_hash(svc, flow, hash));
    }
    let key = Persist4Key {
        service_id: svc.id,
        client: flow.src & svc.info.persist_mask4,
    };
    let hash = key.hash();
    let tag = hash | 1;
    let set = PERSIST4.get_ptr_mut(hash & settings.persist_mask)?;
    let now = settings.clock;
    let timeout = svc.info.persist_timeout;
    // SAFETY: `set` points to a set in the PERSIST4 map value.
    if let Some(t) = unsafe { PersistSet4::find(set, &key, tag) }
        && now.wrapping_sub(t.stamp) <= timeout
        && let Some(target) = usable_real(t.value.real, svc.id)
    {
        // SAFETY: `t.way` is a slot of `set`.
        unsafe { PersistSet4::touch(set, t.way, &t.value, now) };
        g.persist_hits += 1;
        return Some(target);
    }
    let target = pick_new(svc, source_hash4(key.client))?;
    let template = Template {
        real: target.idx,
        _pad: 0,
    };
    let expired = |_: &Template, stamp: u32| now.wrapping_sub(stamp) > timeout;
    // A failed insert only loses stickiness for the next connection; the flow still goes.
    // SAFETY: `set` points to a set in the PERSIST4 map value.
    let _ = unsafe { PersistSet4::insert(set, &key, tag, &template, now, expired) };
    Some(target)
}

/// The real for a flow no entry or template decides: the Maglev table at the slot for `hash`,
/// or, for a least-connection service, the least loaded candidate (ties broken by `hash`).
#[inline(always)]
fn pick_new(svc: &Svc, hash: u32) -> Option<Target> {
    if svc.info.sched == SCHED_MAGLEV {
        table_pick(svc, hash)
    } else {
        least_conn_pick(svc, hash)
    }
}

/// IPVS's least-connection family over the service's candidates (see `lb_common::Candidates`):
/// - `lc`: the least `active x 256 + inactive`;
/// - `wlc`: the least `(active x 256 + inactive) / weight`;
/// - `sed`: the least `(active + 1) / weight`;
/// - `nq`: the first idle real (no active connection), else as `sed`.
///
/// Ratios are compared by cross-multiplication, as IPVS does. Candidates that are down, of
/// weight 0 or of another service are skipped. The scan starts at a position taken from the
/// flow's hash, so ties spread over the tied reals instead of piling onto the first.
///
/// A real's load is its connection-table entries by class, which this program keeps exact, less
/// the stale ones the agent recounts every second (see `lb_common::RealLoad`): connections that
/// expired since the last recount still weigh on their real until the next one.
///
/// Error bound: with at most `LC_CANDIDATES` (8) eligible reals the candidates are all of them
/// and the choice is IPVS's exactly. With more, the candidates are the 8 least loaded at the
/// agent's last refresh (every 100 ms); a real outside them can only be less loaded than the
/// choice by the number of its connections that closed since that refresh.
#[inline(always)]
fn least_conn_pick(svc: &Svc, hash: u32) -> Option<Target> {
    let candidates = CANDIDATES.get(svc.id)?;
    let sched = svc.info.sched;
    let mut best: Option<Target> = None;
    let (mut best_load, mut best_weight) = (0u64, 1u64);
    let mut i = 0;
    while i < LC_CANDIDATES {
        let idx = candidates[(hash as usize).wrapping_add(i) & (LC_CANDIDATES - 1)];
        i += 1;
        if idx == NO_REAL {
            continue;
        }
        let Some(target) = usable_real(idx, svc.id) else {
            continue;
        };
        let weight = target.real.weight as u64;
        let Some(load) = REAL_LOAD.get(idx) else {
            continue;
        };
        if weight == 0 {
            continue;
        }
        let (active, inactive) = load.live();
        if sched == SCHED_NQ && active == 0 {
            return Some(target);
        }
        let (cost, per) = match sched {
            SCHED_LC => ((active << 8) + inactive, 1),
            SCHED_WLC => ((active << 8) + inactive, weight),
            _ => (active + 1, weight),
        };
        if best.is_none() || cost * best_weight < best_load * per {
            best = Some(target);
            best_load = cost;
            best_weight = per;
        }
    }
    best
}

/// Adds `delta` to the active or inactive count (by `state`) of real `idx`.
#[inline(always)]
fn account(idx: u32, state: u8, delta: i64) {
    if let Some(load) = REAL_LOAD.get_ptr_mut(idx) {
        // SAFETY: `load` points into the REAL_LOAD map value.
        unsafe { RealLoad::add(load, state, delta) };
    }
}

/// Refreshes the client's template if it still points at `real`.
#[inline(always)]
fn touch_template(svc: &Svc, flow: &Flow4Key, real: u32, settings: &Settings) {
    let key = Persist4Key {
        service_id: svc.id,
        client: flow.src & svc.info.persist_mask4,
    };
    let hash = key.hash();
    let tag = hash | 1;
    let Some(set) = PERSIST4.get_ptr_mut(hash & settings.persist_mask) else {
        return;
    };
    // SAFETY: `set` points to a set in the PERSIST4 map value; `t.way` is one of its slots.
    unsafe {
        if let Some(t) = PersistSet4::find(set, &key, tag)
            && t.value.real == real
        {
            PersistSet4::touch(set, t.way, &t.value, settings.clock);
        }
    }
}

/// The hash that places a flow in the service's lookup table: by source for `sh` and
/// persistent services, else the flow's 5-tuple hash.
#[inline(always)]
fn flow_schedule_hash(svc: &Svc, flow: &Flow4Key, flow_hash: u32) -> u32 {
    if svc.info.flags & (SVC_F_HASH_SRC | SVC_F_PERSIST) != 0 {
        source_hash4(flow.src & svc.info.persist_mask4)
    } else {
        flow_hash
    }
}

/// The real in the service's active lookup table at the slot for `hash`, if it is usable.
#[inline(always)]
fn table_pick(svc: &Svc, hash: u32) -> Option<Target> {
    // One 8-byte read: base and size of the same table, even while a new one is published.
    // SAFETY: `svc.info` is a reference into the SERVICES map value.
    let table = unsafe { core::ptr::read_volatile(&svc.info.table) };
    let (base, size) = ((table >> 32) as u32, table as u32);
    if size == 0 {
        return None;
    }
    let slot = base.wrapping_add(table_slot(hash, size));
    let row = LOOKUP.get(slot / LOOKUP_ROW)?;
    let real = row[(slot % LOOKUP_ROW) as usize];
    if real == NO_REAL {
        return None;
    }
    usable_real(real, svc.id)
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
    pkt: &Packet,
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
    count(&SERVICE_STATS, svc.id, pkt.ip_len, new_conn);
    count(&REAL_STATS, target.idx, pkt.ip_len, new_conn);
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

/// The service of `(addr, port, proto)` in the active half of the VIP table (linear probing,
/// at most `VIP_PROBES` buckets; an empty bucket ends the search).
#[inline(always)]
fn service(settings: &Settings, addr: u32, port: u16, proto: u8) -> Option<Svc> {
    let key = Vip4Key {
        addr,
        port,
        proto,
        _pad: 0,
    };
    let home = vip_hash4(addr, port, proto);
    let mut probe = 0;
    while probe < VIP_PROBES {
        let idx = settings.vip_base + (home.wrapping_add(probe) & settings.vip_mask);
        let bucket = VIPS4.get(idx)?;
        if bucket.key == key {
            let info = SERVICES.get(bucket.service_id)?;
            return Some(Svc {
                id: bucket.service_id,
                info,
            });
        }
        if bucket.key.proto == 0 {
            return None;
        }
        probe += 1;
    }
    None
}

#[inline(always)]
fn global_stats() -> Option<&'static mut GlobalStats> {
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
