//! The contract between the XDP data plane (`lb-ebpf`) and the control plane (`lb-userspace`).
//!
//! Every map key and value, every constant both sides must agree on, and the flow hash live here
//! and nowhere else. Each type says who writes it and who reads it. All types are `#[repr(C)]`,
//! `Copy`, and free of implicit padding so that the kernel and userspace see the same bytes.
//!
//! Byte order: addresses and ports are kept exactly as they appear on the wire (network byte
//! order) inside `u32`/`u16` fields, i.e. `u32::from_ne_bytes(ip.octets())`. The data plane then
//! copies header fields without conversion; the `from_parts` constructors do the conversion for
//! userspace.
#![no_std]
#![warn(missing_docs)]

pub mod hash;
pub mod tcp;

pub use hash::{flow_hash4, fragment_hash4, source_hash4, table_slot};
pub use tcp::{ConnState, TcpFlags};

/// Names of the maps in the eBPF object, shared so that the loader and the program agree.
pub mod map_names {
    /// [`crate::Settings`] (array, one entry).
    pub const SETTINGS: &str = "SETTINGS";
    /// [`crate::Vip4Key`] -> [`crate::Service`] (hash).
    pub const SERVICES4: &str = "SERVICES4";
    /// Lookup tables: an array of [`crate::LookupRow`]s; each service owns two regions.
    pub const LOOKUP: &str = "LOOKUP";
    /// Real index -> [`crate::Real`] (array; index 0 is never a real).
    pub const REALS: &str = "REALS";
    /// [`crate::Flow4Key`] -> [`crate::Conn`] (LRU hash).
    pub const CONNS4: &str = "CONNS4";
    /// [`crate::Persist4Key`] -> [`crate::PersistEntry`] (LRU hash).
    pub const PERSIST4: &str = "PERSIST4";
    /// Per-CPU [`crate::GlobalStats`] (per-CPU array, one entry).
    pub const GLOBAL_STATS: &str = "GLOBAL_STATS";
    /// Service id -> per-CPU [`crate::TrafficStats`] (per-CPU array).
    pub const SERVICE_STATS: &str = "SERVICE_STATS";
    /// Real index -> per-CPU [`crate::TrafficStats`] (per-CPU array).
    pub const REAL_STATS: &str = "REAL_STATS";
    /// The XDP program itself.
    pub const PROGRAM: &str = "lb_xdp";
}

/// IP protocol numbers the data plane understands.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// The real index that means "no real" in lookup tables and connection entries.
pub const NO_REAL: u32 = 0;

/// Default Maglev lookup table size (a prime, as in the Maglev paper).
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

/// Slots per `LOOKUP` element. The kernel pads array elements to 8 bytes, so tables are packed
/// into rows of 16 real indices (64 bytes, no padding): slot `s` of the flat table is
/// `LOOKUP[s / LOOKUP_ROW][s % LOOKUP_ROW]`, and the memory-mapped array reads as one flat
/// `u32` table.
pub const LOOKUP_ROW: u32 = 16;

/// One `LOOKUP` element: [`LOOKUP_ROW`] consecutive slots, each a real index ([`NO_REAL`] =
/// empty). Written by the control plane (through a memory mapping), read by the data plane.
pub type LookupRow = [u32; LOOKUP_ROW as usize];

/// Director-wide settings. Written by the control plane at start-up (and when timeouts
/// change); read by the data plane on every packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// MAC address of the interface the program is attached to; becomes the source MAC of
    /// every forwarded frame.
    pub mac: [u8; 6],
    /// Explicit padding.
    pub _pad: [u8; 2],
    /// Idle timeout in seconds for each [`ConnState`], indexed by its value.
    pub timeouts: [u32; ConnState::COUNT],
}

impl Settings {
    /// Settings with IPVS's default timeouts.
    pub const fn new(mac: [u8; 6]) -> Self {
        Self {
            mac,
            _pad: [0; 2],
            timeouts: ConnState::DEFAULT_TIMEOUTS,
        }
    }

    /// Idle timeout of `state` in nanoseconds (0 for an unknown state, which makes it expire).
    #[inline(always)]
    pub fn timeout_ns(&self, state: u8) -> u64 {
        match self.timeouts.get(state as usize) {
            Some(t) => *t as u64 * 1_000_000_000,
            None => 0,
        }
    }
}

/// Key of an IPv4 virtual service. Written by the control plane, read by the data plane.
///
/// A key with `port == 0` is the service that receives the IP fragments of `(addr, proto)`:
/// fragments after the first carry no ports, so all fragments of a VIP and protocol are
/// scheduled through one designated service (the lowest port).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vip4Key {
    /// VIP, network byte order.
    pub addr: u32,
    /// Port, network byte order (0 = the fragment service of this VIP and protocol).
    pub port: u16,
    /// IP protocol ([`proto::TCP`] or [`proto::UDP`]).
    pub proto: u8,
    /// Explicit padding, always 0.
    pub _pad: u8,
}

impl Vip4Key {
    /// Builds a key from host-order parts.
    pub const fn from_parts(addr: [u8; 4], port: u16, proto: u8) -> Self {
        Self {
            addr: u32::from_ne_bytes(addr),
            port: port.to_be(),
            proto,
            _pad: 0,
        }
    }
}

/// `Service::flags`: schedule new flows by the (masked) source address only (`sh`).
pub const SVC_F_HASH_SRC: u32 = 1;
/// `Service::flags`: persistence is on (templates in `PERSIST4`); implies hashing by source.
pub const SVC_F_PERSIST: u32 = 2;

/// A virtual service as the data plane sees it. Written by the control plane (a whole-value
/// update of a hash map entry is atomic for readers, which is how table flips are published);
/// read by the data plane.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// Service id: index into `SERVICE_STATS` and owner tag of its reals.
    pub id: u32,
    /// `SVC_F_*` flags.
    pub flags: u32,
    /// Size M of the active lookup table (prime); 0 means no usable real (packets dropped).
    pub table_size: u32,
    /// Flat slot index (see [`LOOKUP_ROW`]) of slot 0 of the active table.
    pub table_base: u32,
    /// Persistence timeout in seconds (`SVC_F_PERSIST`).
    pub persist_timeout: u32,
    /// Persistence granularity as an IPv4 netmask, network byte order (`0xffffffff` = /32).
    pub persist_mask4: u32,
}

/// `Real::state`: the real takes traffic (new flows only if it is in the lookup table).
pub const REAL_UP: u8 = 1;
/// `Real::state`: the real is down or removed; its flows are rescheduled on their next packet.
pub const REAL_DOWN: u8 = 0;

/// A real server (an IPVS "destination": one real inside one service). Written by the control
/// plane, read by the data plane. Index 0 is reserved ([`NO_REAL`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Real {
    /// MAC address frames for this real are sent to.
    pub mac: [u8; 6],
    /// [`REAL_UP`] or [`REAL_DOWN`].
    pub state: u8,
    /// Address family of `addr`: 4 or 6.
    pub family: u8,
    /// Id of the service this real belongs to; a connection entry whose real belongs to
    /// another service (index reused) is treated as a miss.
    pub service_id: u32,
    /// The real's address (IPv4 in the first 4 bytes), for diagnostics and listings.
    pub addr: [u8; 16],
}

impl Real {
    /// An unused slot.
    pub const EMPTY: Self = Self {
        mac: [0; 6],
        state: REAL_DOWN,
        family: 0,
        service_id: u32::MAX,
        addr: [0; 16],
    };
}

/// Key of the IPv4 connection table: the client->VIP 5-tuple as seen on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow4Key {
    /// Client address, network byte order.
    pub src: u32,
    /// VIP, network byte order.
    pub dst: u32,
    /// Client port, network byte order.
    pub sport: u16,
    /// VIP port, network byte order.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Explicit padding, always 0.
    pub _pad: [u8; 3],
}

impl Flow4Key {
    /// Builds a key from host-order parts.
    pub const fn from_parts(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, proto: u8) -> Self {
        Self {
            src: u32::from_ne_bytes(src),
            dst: u32::from_ne_bytes(dst),
            sport: sport.to_be(),
            dport: dport.to_be(),
            proto,
            _pad: [0; 3],
        }
    }
}

/// A connection table entry. Written by the data plane (created on scheduling, updated as
/// packets pass); read by the control plane for ActiveConn/InActConn and `-c` listings.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    /// Index of the real this flow is pinned to.
    pub real: u32,
    /// [`ConnState`] as a `u8`.
    pub state: u8,
    /// Explicit padding.
    pub _pad: [u8; 3],
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE) of the last packet.
    pub last_seen_ns: u64,
}

/// Key of an IPv4 persistence template: a client network inside one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Persist4Key {
    /// Service id.
    pub service_id: u32,
    /// Client address masked by the service's granularity, network byte order.
    pub client: u32,
}

/// A persistence template (IPVS shows these as state NONE with client port 0). Written by the
/// data plane when it schedules a flow of a persistent service; read by the control plane.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PersistEntry {
    /// Index of the real the client is pinned to.
    pub real: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// `bpf_ktime_get_coarse_ns()` when a connection last used or ended under this template.
    pub last_seen_ns: u64,
}

/// Director-wide counters (one per CPU; the control plane sums them). Written by the data
/// plane only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalStats {
    /// Frames seen by the program.
    pub rx: u64,
    /// Frames passed to the kernel untouched (not for a service, or not parseable).
    pub passed: u64,
    /// Frames forwarded to a real (XDP_TX).
    pub transmitted: u64,
    /// Frames dropped because the service had no usable real.
    pub drop_no_real: u64,
    /// Connection-table hits (live entry on a usable real).
    pub conn_hits: u64,
    /// Connection-table misses (no entry, expired, or new SYN) that were scheduled.
    pub conn_misses: u64,
    /// Hits on a real that is down or gone, rescheduled to a live real.
    pub conn_rescheduled: u64,
    /// Failed inserts into the connection table (frame still forwarded).
    pub conn_insert_failed: u64,
    /// IP fragments forwarded (scheduled by source, destination and protocol).
    pub fragments: u64,
    /// ICMP errors about a VIP flow forwarded to the flow's real.
    pub icmp_forwarded: u64,
    /// New flows that followed a live persistence template.
    pub persist_hits: u64,
}

/// Traffic counters of one service or one real (one per CPU). Written by the data plane only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficStats {
    /// Frames forwarded.
    pub packets: u64,
    /// IP bytes forwarded (IP header and payload, no link-layer header), as IPVS counts.
    pub bytes: u64,
    /// New connections scheduled.
    pub conns: u64,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: all of these are `#[repr(C)]`, made of integers and byte arrays, with explicit
    // padding fields, so every bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for Vip4Key {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for Real {}
    unsafe impl aya::Pod for Flow4Key {}
    unsafe impl aya::Pod for Conn {}
    unsafe impl aya::Pod for Persist4Key {}
    unsafe impl aya::Pod for PersistEntry {}
    unsafe impl aya::Pod for GlobalStats {}
    unsafe impl aya::Pod for TrafficStats {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<Settings>(), 8 + 4 * ConnState::COUNT);
        assert_eq!(size_of::<Vip4Key>(), 8);
        assert_eq!(size_of::<Service>(), 24);
        assert_eq!(size_of::<Real>(), 28);
        assert_eq!(size_of::<Flow4Key>(), 16);
        assert_eq!(size_of::<Conn>(), 16);
        assert_eq!(size_of::<Persist4Key>(), 8);
        assert_eq!(size_of::<PersistEntry>(), 16);
        assert_eq!(size_of::<GlobalStats>(), 11 * 8);
        assert_eq!(size_of::<TrafficStats>(), 24);
    }

    #[test]
    fn keys_hold_wire_order() {
        let k = Vip4Key::from_parts([10, 0, 0, 100], 5672, proto::TCP);
        assert_eq!(k.addr.to_ne_bytes(), [10, 0, 0, 100]);
        assert_eq!(k.port.to_ne_bytes(), 5672u16.to_be_bytes());
        let f = Flow4Key::from_parts([1, 2, 3, 4], 40000, [10, 0, 0, 100], 80, proto::UDP);
        assert_eq!(f.sport.to_ne_bytes(), 40000u16.to_be_bytes());
        assert_eq!(f.dst.to_ne_bytes(), [10, 0, 0, 100]);
    }

    #[test]
    fn settings_timeouts() {
        let s = Settings::new([0; 6]);
        assert_eq!(s.timeout_ns(ConnState::Established as u8), 900_000_000_000);
        assert_eq!(s.timeout_ns(ConnState::Udp as u8), 300_000_000_000);
        assert_eq!(s.timeout_ns(200), 0);
    }
}
