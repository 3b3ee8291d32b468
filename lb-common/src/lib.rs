//! The contract between the XDP data plane (`lb-ebpf`) and the control plane (`lb-userspace`).
//!
//! Every map key and value, every constant both sides must agree on, the hashes and the
//! decisions both sides make ([`decide`]) live here and nowhere else. Each type says who writes
//! it and who reads it. All types are `#[repr(C)]`, `Copy`, free of implicit padding, and (for
//! the memory-mapped arrays) a multiple of 8 bytes long, because the kernel lays array elements
//! out on an 8-byte stride.
//!
//! # Why arrays
//! Every table the data plane reads per packet is a `BPF_F_MMAPABLE` array: the verifier turns
//! array lookups into a few inline instructions, while a hash-map lookup is a helper call (on the
//! machines we measured, 27-52 ns per hash lookup and 190 ns per LRU insert, against about 1 ns
//! for an array element). The control plane writes the arrays through a shared memory mapping.
//! Hash tables are built on top of arrays: an open-addressing VIP table and set-associative
//! connection and persistence tables ([`set`]).
//!
//! # Byte order
//! Addresses and ports are kept as they appear on the wire (network byte order) inside
//! `u32`/`u16` fields, i.e. `u32::from_ne_bytes(ip.octets())`. The data plane copies header
//! fields without conversion; the `from_parts` constructors convert for userspace.
//!
//! # Time
//! The data plane's clock is [`Settings::clock`], whole seconds of `CLOCK_MONOTONIC` that the
//! agent advances several times a second. Reading it costs nothing on the packet path. While no
//! agent runs, the clock stands still and idle entries do not age.
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]
#![warn(missing_docs)]

pub mod decide;
pub mod hash;
pub mod set;
pub mod sync;
pub mod tcp;

pub use decide::{
    FlowKey, LcCost, MAX_WEIGHT, Twos, VipKey, by_weight, conn_eviction, find_service, idle_first,
    least_conn_choice, masked6, overloaded, same6, weight_choice,
};

pub use hash::{
    Addr6, flow_hash4, flow_hash6, fragment_hash4, fragment_hash6, persist_hash4, persist_hash6,
    source_hash4, source_hash6, table_slot, vip_hash4, vip_hash6, with_port,
};
pub use set::{Evict, Inserted, Set, Slot, SlotData};
pub use sync::{SYNC_SLOTS, SyncEvent, SyncSlot, SyncedFlow};
pub use tcp::{ConnState, TcpFlags};

/// Names of the maps in the eBPF object, shared so that the loader and the program agree.
pub mod map_names {
    /// [`crate::Settings`] (array, one element).
    pub const SETTINGS: &str = "SETTINGS";
    /// [`crate::VipBucket4`] open-addressing table, two halves (array).
    pub const VIPS4: &str = "VIPS4";
    /// Service id -> [`crate::Service`] (array).
    pub const SERVICES: &str = "SERVICES";
    /// Lookup tables: [`crate::LookupRow`]s; each service owns two regions (array).
    pub const LOOKUP: &str = "LOOKUP";
    /// Real index -> [`crate::Real`] (array; index 0 is never a real).
    pub const REALS: &str = "REALS";
    /// [`crate::ConnSet4`] connection table (array of sets).
    pub const CONNS4: &str = "CONNS4";
    /// [`crate::PersistSet4`] persistence templates (array of sets).
    pub const PERSIST4: &str = "PERSIST4";
    /// [`crate::VipBucket6`] open-addressing table, two halves (array).
    pub const VIPS6: &str = "VIPS6";
    /// [`crate::ConnSet6`] connection table (array of sets).
    pub const CONNS6: &str = "CONNS6";
    /// [`crate::PersistSet6`] persistence templates (array of sets).
    pub const PERSIST6: &str = "PERSIST6";
    /// Real index -> [`crate::RealLoad`] (array).
    pub const REAL_LOAD: &str = "REAL_LOAD";
    /// Service id -> [`crate::Candidates`] (array).
    pub const LC_CANDIDATES: &str = "LC_CANDIDATES";
    /// Per-CPU [`crate::GlobalStats`] (per-CPU array, one element).
    pub const GLOBAL_STATS: &str = "GLOBAL_STATS";
    /// Service id -> per-CPU [`crate::TrafficStats`] (per-CPU array).
    pub const SERVICE_STATS: &str = "SERVICE_STATS";
    /// Real index -> per-CPU [`crate::TrafficStats`] (per-CPU array).
    pub const REAL_STATS: &str = "REAL_STATS";
    /// How the pinned maps were created ([`crate::layout`]); never read by the program.
    pub const LAYOUT: &str = "LAYOUT";
    /// [`crate::SyncSlot`]s: each CPU's ring of director-sync announcements (array).
    pub const SYNC_RING: &str = "SYNC_RING";
    /// Per CPU, the number of announcements it has written to its ring (per-CPU array, one
    /// element).
    pub const SYNC_HEAD: &str = "SYNC_HEAD";
    /// The XDP program itself.
    pub const PROGRAM: &str = "lb_xdp";

    /// The maps an instance pins (the log ring buffer, the program's read-only data and its
    /// private `SCRATCH` map are not).
    pub const PINNED: [&str; 18] = [
        LAYOUT,
        SETTINGS,
        VIPS4,
        VIPS6,
        SERVICES,
        LOOKUP,
        REALS,
        CONNS4,
        PERSIST4,
        CONNS6,
        PERSIST6,
        REAL_LOAD,
        LC_CANDIDATES,
        GLOBAL_STATS,
        SERVICE_STATS,
        REAL_STATS,
        SYNC_RING,
        SYNC_HEAD,
    ];
}

/// The `LAYOUT` map: an array of `u32` recording how an instance's pinned maps were created, so
/// that a restarted agent adopts only maps it understands. Written once by the control plane
/// when it creates the maps; the data plane never reads it. Its own format never changes.
pub mod layout {
    /// Index of [`crate::LAYOUT_VERSION`] (0 = the maps' creation was interrupted).
    pub const VERSION: u32 = 0;
    /// Index of the interface index the instance is attached to.
    pub const IFINDEX: u32 = 1;
    /// Index of `max_services`.
    pub const MAX_SERVICES: u32 = 2;
    /// Index of `max_reals`.
    pub const MAX_REALS: u32 = 3;
    /// Index of `max_table_size`.
    pub const MAX_TABLE_SIZE: u32 = 4;
    /// Index of `conn_entries`.
    pub const CONN_ENTRIES: u32 = 5;
    /// Index of `persist_entries`.
    pub const PERSIST_ENTRIES: u32 = 6;
    /// Index of `conn_entries6`.
    pub const CONN_ENTRIES6: u32 = 7;
    /// Index of `persist_entries6`.
    pub const PERSIST_ENTRIES6: u32 = 8;
    /// Entries of the map.
    pub const ENTRIES: u32 = 16;
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

/// Version of the map layout. A restarted agent adopts pinned maps only if they were created
/// with the same version; bump it whenever a map's key, value or meaning changes.
pub const LAYOUT_VERSION: u32 = 6;

/// Default Maglev lookup table size (a prime, as in the Maglev paper).
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

/// Slots per `LOOKUP` element: tables are packed into rows of 16 real indices (64 bytes, no
/// padding), so slot `s` of the flat table is `LOOKUP[s / LOOKUP_ROW][s % LOOKUP_ROW]` and the
/// memory-mapped array reads as one flat `u32` table.
pub const LOOKUP_ROW: u32 = 16;

/// One `LOOKUP` element: [`LOOKUP_ROW`] consecutive slots, each a real index ([`NO_REAL`] =
/// empty). Written by the control plane, read by the data plane.
pub type LookupRow = [u32; LOOKUP_ROW as usize];

/// Director-wide settings, one element. Written by the control plane (the clock several times
/// a second, the VIP table half on every change); read by the data plane on every packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// MAC address of the interface the program is attached to; becomes the source MAC of
    /// every forwarded frame.
    pub mac: [u8; 6],
    /// Explicit padding.
    pub _pad: [u8; 2],
    /// Seconds of `CLOCK_MONOTONIC`, advanced by the agent (stored with one 4-byte write).
    pub clock: u32,
    /// Index in `VIPS4` and `VIPS6` of the active halves' bucket 0 (0 or `vip_mask + 1`; one
    /// 4-byte write flips both tables at once).
    pub vip_base: u32,
    /// Buckets per `VIPS4` / `VIPS6` half, minus one (the half size is a power of two).
    pub vip_mask: u32,
    /// Sets in `CONNS4` minus one (a power of two minus one).
    pub conn_mask: u32,
    /// Sets in `PERSIST4` minus one (a power of two minus one).
    pub persist_mask: u32,
    /// Sets in `CONNS6` minus one (a power of two minus one).
    pub conn6_mask: u32,
    /// Sets in `PERSIST6` minus one (a power of two minus one).
    pub persist6_mask: u32,
    /// Non-zero: director sync is on, and the program announces every flow it confirms (see
    /// [`sync`]) in `SYNC_RING`; zero: the ring is never touched.
    pub sync: u32,
    /// Idle timeout in seconds for each [`ConnState`], indexed by its value; entries past the
    /// last state are 0. Sixteen entries, so that `state & 15` is always a valid index and the
    /// verifier needs no range proof.
    pub timeouts: [u32; TIMEOUT_SLOTS],
}

/// Entries of [`Settings::timeouts`].
pub const TIMEOUT_SLOTS: usize = 16;

impl Settings {
    /// Settings with IPVS's default timeouts.
    pub const fn new(mac: [u8; 6]) -> Self {
        Self {
            mac,
            _pad: [0; 2],
            clock: 0,
            vip_base: 0,
            vip_mask: 0,
            conn_mask: 0,
            persist_mask: 0,
            conn6_mask: 0,
            persist6_mask: 0,
            sync: 0,
            timeouts: default_timeouts(),
        }
    }

    /// Idle timeout of `state` in seconds (0 past the last state, which makes it expire; the
    /// index is taken modulo 16).
    #[inline(always)]
    pub fn timeout(&self, state: u8) -> u32 {
        self.timeouts[(state & 15) as usize]
    }
}

/// IPVS's default timeouts laid out as [`Settings::timeouts`].
const fn default_timeouts() -> [u32; TIMEOUT_SLOTS] {
    let mut t = [0; TIMEOUT_SLOTS];
    let mut i = 0;
    while i < ConnState::COUNT {
        t[i] = ConnState::DEFAULT_TIMEOUTS[i];
        i += 1;
    }
    t
}

/// Key of an IPv4 virtual service.
///
/// A key with `port == 0` is the entry that receives the IP fragments of `(addr, proto)`:
/// fragments after the first carry no ports, so all fragments of a VIP and protocol are
/// scheduled through one designated service (the lowest port). An all-zero key marks an empty
/// bucket (no real key has protocol 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vip4Key {
    /// VIP, network byte order.
    pub addr: u32,
    /// Port, network byte order (0 = the fragment entry of this VIP and protocol).
    pub port: u16,
    /// IP protocol ([`proto::TCP`] or [`proto::UDP`]).
    pub proto: u8,
    /// Explicit padding, always 0.
    pub _pad: u8,
}

impl Vip4Key {
    /// The key of an empty bucket.
    pub const EMPTY: Self = Self {
        addr: 0,
        port: 0,
        proto: 0,
        _pad: 0,
    };

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

/// Buckets a VIP key may be away from its home bucket in `VIPS4` (linear probing). The control
/// plane refuses a VIP set it cannot place within this distance.
pub const VIP_PROBES: u32 = 16;

/// One bucket of the IPv4 VIP table: key -> service id. Written by the control plane (into the
/// inactive half only, then published by flipping [`Settings::vip_base`]); read by the data
/// plane.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipBucket4 {
    /// Key ([`Vip4Key::EMPTY`] = empty bucket, which ends a probe sequence).
    pub key: Vip4Key,
    /// Service id (index into `SERVICES`).
    pub service_id: u32,
    /// Explicit padding.
    pub _pad: u32,
}

impl VipBucket4 {
    /// An empty bucket.
    pub const EMPTY: Self = Self {
        key: Vip4Key::EMPTY,
        service_id: 0,
        _pad: 0,
    };
}

/// Key of an IPv6 virtual service; the IPv6 counterpart of [`Vip4Key`] (port 0 is the
/// fragment entry of the VIP and next header; all zero is an empty bucket).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vip6Key {
    /// VIP, as four network-order words ([`Addr6`]).
    pub addr: Addr6,
    /// Port, network byte order (0 = the fragment entry of this VIP and protocol).
    pub port: u16,
    /// IP protocol ([`proto::TCP`] or [`proto::UDP`]).
    pub proto: u8,
    /// Explicit padding, always 0.
    pub _pad: u8,
}

impl Vip6Key {
    /// The key of an empty bucket.
    pub const EMPTY: Self = Self {
        addr: [0; 4],
        port: 0,
        proto: 0,
        _pad: 0,
    };

    /// Builds a key from host-order parts.
    pub const fn from_parts(addr: [u8; 16], port: u16, proto: u8) -> Self {
        Self {
            addr: addr6(addr),
            port: port.to_be(),
            proto,
            _pad: 0,
        }
    }
}

/// An IPv6 address's bytes as [`Addr6`] words.
pub const fn addr6(b: [u8; 16]) -> Addr6 {
    [
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
    ]
}

/// [`Addr6`] words back as an IPv6 address's bytes.
pub const fn addr6_bytes(a: &Addr6) -> [u8; 16] {
    let mut b = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let w = a[i].to_ne_bytes();
        b[i * 4] = w[0];
        b[i * 4 + 1] = w[1];
        b[i * 4 + 2] = w[2];
        b[i * 4 + 3] = w[3];
        i += 1;
    }
    b
}

/// One bucket of the IPv6 VIP table, laid out and published like [`VipBucket4`] (the same
/// [`Settings::vip_base`] flip switches both tables).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipBucket6 {
    /// Key ([`Vip6Key::EMPTY`] = empty bucket, which ends a probe sequence).
    pub key: Vip6Key,
    /// Service id (index into `SERVICES`).
    pub service_id: u32,
}

impl VipBucket6 {
    /// An empty bucket.
    pub const EMPTY: Self = Self {
        key: Vip6Key::EMPTY,
        service_id: 0,
    };
}

/// `Service::flags`: schedule new flows by the (masked) source address only (`sh`).
pub const SVC_F_HASH_SRC: u32 = 1;
/// `Service::flags`: persistence is on (templates in `PERSIST4`); implies hashing by source.
pub const SVC_F_PERSIST: u32 = 2;
/// `Service::flags`: schedule new flows by the destination address (`dh`).
pub const SVC_F_HASH_DST: u32 = 4;
/// `Service::flags`: the source hash takes in the source port (IPVS `sh-port`, `mh-port`).
pub const SVC_F_HASH_PORT: u32 = 8;
/// `Service::flags`: a new flow whose hashed real is overloaded or down goes to the next
/// usable real of the table (IPVS `sh-fallback`, `mh-fallback`); without it, a hashing
/// scheduler (`sh`, `mh`, `dh`) drops it.
pub const SVC_F_FALLBACK: u32 = 16;
/// `Service::flags`: one-packet scheduling (IPVS `ops`): every UDP datagram is scheduled on its
/// own and leaves no connection entry. Ignored for TCP, as IPVS ignores it.
pub const SVC_F_ONE_PACKET: u32 = 32;

/// `Service::sched`: new flows placed by the Maglev table.
pub const SCHED_MAGLEV: u32 = 0;
/// `Service::sched`: least connections, load = active x 256 + inactive (IPVS `lc`).
pub const SCHED_LC: u32 = 1;
/// `Service::sched`: weighted least connections, load / weight (IPVS `wlc`).
pub const SCHED_WLC: u32 = 2;
/// `Service::sched`: shortest expected delay, (active + 1) / weight (IPVS `sed`).
pub const SCHED_SED: u32 = 3;
/// `Service::sched`: never queue: an idle real first, else `sed` (IPVS `nq`).
pub const SCHED_NQ: u32 = 4;
/// `Service::sched`: weighted failover: the available real with the highest weight (IPVS `fo`).
pub const SCHED_FO: u32 = 5;
/// `Service::sched`: overflow: the available real with the highest weight whose active
/// connections do not exceed its weight (IPVS `ovf`).
pub const SCHED_OVF: u32 = 6;
/// `Service::sched`: weighted random of two choices: two reals drawn at random in proportion
/// to their weights, the less loaded (by `wlc`'s cost) of the two (IPVS `twos`).
pub const SCHED_TWOS: u32 = 7;

/// A virtual service as the data plane sees it, indexed by service id. Written by the control
/// plane: parameters before the service is published in `VIPS4`, the table with one 8-byte
/// write (see [`Service::table`]); read by the data plane.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// `SVC_F_*` flags.
    pub flags: u32,
    /// Persistence timeout in seconds (`SVC_F_PERSIST`).
    pub persist_timeout: u32,
    /// Persistence granularity as an IPv4 netmask, network byte order (`0xffffffff` = /32);
    /// also the mask of `sh` hashing.
    pub persist_mask4: u32,
    /// `SCHED_*`: how new flows pick a real.
    pub sched: u32,
    /// The active lookup table: flat slot index of its slot 0 in the high 32 bits, its size M
    /// in the low 32 bits (0 = no usable real). One 8-byte write publishes a new table, so a
    /// packet sees the old table or the new one, never a mix.
    pub table: u64,
    /// Persistence granularity of an IPv6 service as a mask ([`Addr6`] words, all ones = /128);
    /// also the mask of `sh` hashing.
    pub persist_mask6: Addr6,
}

impl Service {
    /// Packs a table location for [`Service::table`].
    #[inline(always)]
    pub const fn pack_table(base: u32, size: u32) -> u64 {
        ((base as u64) << 32) | size as u64
    }

    /// Flat slot index of slot 0 of the active table.
    #[inline(always)]
    pub const fn table_base(&self) -> u32 {
        (self.table >> 32) as u32
    }

    /// Size M of the active table (0 = no usable real).
    #[inline(always)]
    pub const fn table_size(&self) -> u32 {
        self.table as u32
    }
}

/// `Real::state`: the real takes traffic (new flows only if it is in the lookup table).
pub const REAL_UP: u8 = 1;
/// `Real::state`: the real is down or removed; its flows are rescheduled on their next packet.
pub const REAL_DOWN: u8 = 0;

/// A real server (an IPVS "destination": one real inside one service). Written by the control
/// plane; read by the data plane. Index 0 is reserved ([`NO_REAL`]). The first 8 bytes (MAC,
/// state, family) are written with one 8-byte store so a packet never sees half a MAC.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Real {
    /// MAC address frames for this real are sent to.
    pub mac: [u8; 6],
    /// [`REAL_UP`] or [`REAL_DOWN`].
    pub state: u8,
    /// Address family of `addr`: 4 or 6 (0 for an unused slot).
    pub family: u8,
    /// Id of the service this real belongs to; a connection entry whose real belongs to
    /// another service (index reused) is treated as a miss.
    pub service_id: u32,
    /// Weight for the least-connection schedulers (0: no new flows).
    pub weight: u32,
    /// The real's address (IPv4 in the first 4 bytes), for diagnostics and listings.
    pub addr: [u8; 16],
    /// IPVS's upper connection threshold (`uthreshold`, ipvsadm `-x`): at `active + inactive`
    /// connections at least this the real is overloaded and gets no new flows; 0 = none.
    pub u_threshold: u32,
    /// IPVS's lower connection threshold (`lthreshold`, ipvsadm `-y`): an overloaded real takes
    /// new flows again below it (below 3/4 of `u_threshold` when 0). See
    /// [`decide::overloaded`].
    pub l_threshold: u32,
}

impl Real {
    /// An unused slot.
    pub const EMPTY: Self = Self {
        mac: [0; 6],
        state: REAL_DOWN,
        family: 0,
        service_id: u32::MAX,
        weight: 0,
        addr: [0; 16],
        u_threshold: 0,
        l_threshold: 0,
    };

    /// The first 8 bytes (MAC, state, family) as one word, for the atomic store.
    pub fn head_word(&self) -> u64 {
        let mut b = [0u8; 8];
        b[..6].copy_from_slice(&self.mac);
        b[6] = self.state;
        b[7] = self.family;
        u64::from_ne_bytes(b)
    }
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

    /// The flow hash: its low bits pick the connection-table set, the Maglev slot comes from
    /// it too.
    #[inline(always)]
    pub const fn hash(&self) -> u32 {
        flow_hash4(self.src, self.dst, self.sport, self.dport, self.proto)
    }

    /// The tag of this key in the connection table (never 0).
    #[inline(always)]
    pub const fn tag(&self) -> u32 {
        self.hash() | 1
    }
}

/// What the connection table holds for a flow. Written by the data plane (created on
/// scheduling, updated as packets pass); read by the control plane for ActiveConn/InActConn
/// and `-c` listings.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    /// Index of the real this flow is pinned to.
    pub real: u32,
    /// [`ConnState`] as a `u8`.
    pub state: u8,
    /// Explicit padding.
    pub _pad: [u8; 3],
}

/// Ways per connection-table set.
pub const CONN_WAYS: usize = 4;
/// A set of the IPv4 connection table: [`CONN_WAYS`] slots and a writer lock.
pub type ConnSet4 = Set<Flow4Key, Conn, CONN_WAYS>;

/// Key of an IPv4 persistence template: a client network inside one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Persist4Key {
    /// Service id.
    pub service_id: u32,
    /// Client address masked by the service's granularity, network byte order.
    pub client: u32,
}

impl Persist4Key {
    /// The key's hash: its low bits pick the persistence-table set.
    #[inline(always)]
    pub const fn hash(&self) -> u32 {
        persist_hash4(self.service_id, self.client)
    }

    /// The tag of this key in the persistence table (never 0).
    #[inline(always)]
    pub const fn tag(&self) -> u32 {
        self.hash() | 1
    }
}

/// A persistence template (IPVS shows these as state NONE with client port 0). Written by the
/// data plane when it schedules a flow of a persistent service; read by the control plane.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template {
    /// Index of the real the client is pinned to.
    pub real: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Ways per persistence-table set.
pub const PERSIST_WAYS: usize = 4;
/// A set of the IPv4 persistence table.
pub type PersistSet4 = Set<Persist4Key, Template, PERSIST_WAYS>;

/// Key of the IPv6 connection table: the client->VIP 5-tuple as seen on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow6Key {
    /// Client address.
    pub src: Addr6,
    /// VIP.
    pub dst: Addr6,
    /// Client port, network byte order.
    pub sport: u16,
    /// VIP port, network byte order.
    pub dport: u16,
    /// IP protocol (the upper-layer header after any extension headers).
    pub proto: u8,
    /// Explicit padding, always 0.
    pub _pad: [u8; 3],
}

impl Flow6Key {
    /// Builds a key from host-order parts.
    pub const fn from_parts(
        src: [u8; 16],
        sport: u16,
        dst: [u8; 16],
        dport: u16,
        proto: u8,
    ) -> Self {
        Self {
            src: addr6(src),
            dst: addr6(dst),
            sport: sport.to_be(),
            dport: dport.to_be(),
            proto,
            _pad: [0; 3],
        }
    }

    /// The flow hash (see [`Flow4Key::hash`]).
    #[inline(always)]
    pub const fn hash(&self) -> u32 {
        flow_hash6(&self.src, &self.dst, self.sport, self.dport, self.proto)
    }

    /// The tag of this key in the connection table (never 0).
    #[inline(always)]
    pub const fn tag(&self) -> u32 {
        self.hash() | 1
    }
}

/// A set of the IPv6 connection table.
pub type ConnSet6 = Set<Flow6Key, Conn, CONN_WAYS>;

/// Key of an IPv6 persistence template: a client network inside one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Persist6Key {
    /// Service id.
    pub service_id: u32,
    /// Explicit padding, always 0.
    pub _pad: u32,
    /// Client address masked by the service's granularity.
    pub client: Addr6,
}

impl Persist6Key {
    /// The key's hash: its low bits pick the persistence-table set.
    #[inline(always)]
    pub const fn hash(&self) -> u32 {
        persist_hash6(self.service_id, &self.client)
    }

    /// The tag of this key in the persistence table (never 0).
    #[inline(always)]
    pub const fn tag(&self) -> u32 {
        self.hash() | 1
    }
}

/// A set of the IPv6 persistence table.
pub type PersistSet6 = Set<Persist6Key, Template, PERSIST_WAYS>;

/// IPv6 extension headers the data plane skips before the upper-layer header; a frame with
/// more is passed to the kernel and counted ([`GlobalStats::ext_hdr_passed`]).
pub const MAX_EXT_HDRS: usize = 4;

/// A real's connection counts for the least-connection schedulers.
///
/// `active` and `inactive` count the connection-table entries of the real, by class
/// (ESTABLISHED is active, every other state inactive, as IPVS counts), expired ones included:
/// the data plane adds and subtracts with 64-bit atomic adds as entries are created, change
/// class or are overwritten, so the counts are exact at all times whatever the traffic. The
/// `stale_*` counts are the part of them that no longer stands for a connection: entries that
/// expired, and entries older than `up_since` (connections the real lost while it was down);
/// the control plane recounts them every second. A real's load is the difference.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealLoad {
    /// ESTABLISHED entries (data plane).
    pub active: i64,
    /// Entries in any other state, UDP flows included (data plane).
    pub inactive: i64,
    /// Of `active`, the stale entries (control plane).
    pub stale_active: i64,
    /// Of `inactive`, the stale entries (control plane).
    pub stale_inactive: i64,
    /// Clock second at which the real last became usable (its index allocated, or up after
    /// down), written by the control plane. The data plane does not read it.
    pub up_since: u32,
    /// IPVS's `IP_VS_DEST_F_OVERLOAD`: 1 while the real is overloaded (see
    /// [`decide::overloaded`]). The data plane keeps it as it schedules; the control plane
    /// clears it when the index gets a new user or the real's thresholds change.
    pub overloaded: u32,
}

impl RealLoad {
    /// The load the schedulers use: (active, inactive) connections, stale entries left out.
    #[inline(always)]
    pub fn live(&self) -> (u64, u64) {
        (
            (self.active - self.stale_active).max(0) as u64,
            (self.inactive - self.stale_inactive).max(0) as u64,
        )
    }

    /// Adds `delta` to the counter of the class of connection state `state` at `load`.
    ///
    /// # Safety
    /// `load` must point to a valid, 8-byte aligned `RealLoad` (a map value).
    #[inline(always)]
    pub unsafe fn add(load: *mut RealLoad, state: u8, delta: i64) {
        // SAFETY: the caller guarantees `load` is valid; both fields are aligned i64s.
        unsafe {
            let field = if state == ConnState::Established as u8 {
                core::ptr::addr_of_mut!((*load).active)
            } else {
                core::ptr::addr_of_mut!((*load).inactive)
            };
            atomic_add(field, delta);
        }
    }
}

/// Adds `delta` to `*p` atomically (BPF's 64-bit atomic add in the program, a locked add in
/// userspace), so concurrent CPUs and the agent never lose an update.
///
/// # Safety
/// `p` must be valid and 8-byte aligned.
#[inline(always)]
pub unsafe fn atomic_add(p: *mut i64, delta: i64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: guaranteed by the caller.
    unsafe {
        core::intrinsics::atomic_xadd::<i64, i64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            p, delta,
        );
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: guaranteed by the caller.
    unsafe {
        core::sync::atomic::AtomicI64::from_ptr(p)
            .fetch_add(delta, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Slots of a Maglev table walked past an overloaded (or, with `SVC_F_FALLBACK`, down) real
/// before a new flow is dropped.
pub const FALLBACK_PROBES: u32 = 64;

/// Reals a least-connection service compares per new flow.
pub const LC_CANDIDATES: usize = 8;

/// A least-connection service's candidates: real indices ([`NO_REAL`] = unused). The control
/// plane writes all eligible reals when there are at most [`LC_CANDIDATES`], else the least
/// loaded ones, refreshed every 100 ms; the data plane compares their live loads.
pub type Candidates = [u32; LC_CANDIDATES];

/// Director-wide counters (one per CPU; the control plane sums them with [`GlobalStats::add`]).
/// Written by the data plane only. This is their only field list: the control plane reports
/// them as they are (`lbadm --json`, the metrics), so a new counter is a field here, its
/// increment in the program and its metric.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(default))]
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
    /// New entries not stored because another CPU was writing the same set (the frame is
    /// still forwarded; the flow's next packet stores it).
    pub conn_insert_failed: u64,
    /// New entries not stored because every slot of their set held a live ESTABLISHED
    /// connection that an unconfirmed entry may not evict (the frame is still forwarded).
    pub conn_insert_refused: u64,
    /// Live ESTABLISHED entries evicted to make room (by another ESTABLISHED one).
    pub conn_evicted_established: u64,
    /// Live entries in any other state evicted to make room.
    pub conn_evicted_other: u64,
    /// IP fragments forwarded (scheduled by source, destination and protocol).
    pub fragments: u64,
    /// ICMP errors about a VIP flow forwarded to the flow's real.
    pub icmp_forwarded: u64,
    /// New flows that followed a live persistence template.
    pub persist_hits: u64,
    /// IPv6 frames passed because of their extension headers: more than [`MAX_EXT_HDRS`], one
    /// that cannot be skipped (ESP), or one cut short by the end of the frame.
    pub ext_hdr_passed: u64,
}

/// Traffic counters of one service or one real (one per CPU; the control plane sums them with
/// [`TrafficStats::add`]). Written by the data plane only.
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

impl GlobalStats {
    /// Adds `other`'s counters to these (another CPU's, when summing).
    pub fn add(&mut self, other: &Self) {
        *self = add_words(self, other);
    }
}

impl TrafficStats {
    /// Adds `other`'s counters to these (another CPU's, when summing).
    pub fn add(&mut self, other: &Self) {
        *self = add_words(self, other);
    }
}

/// The word-by-word (wrapping) sum of two values made only of `u64` counters.
fn add_words<T: SlotData>(a: &T, b: &T) -> T {
    let mut sum = a.to_words();
    for (x, y) in sum.as_mut().iter_mut().zip(b.to_words().as_ref()) {
        *x = x.wrapping_add(*y);
    }
    T::from_words(sum)
}

// SAFETY: each is plain data of the stated number of 8-byte words, with explicit padding, so
// every bit pattern is a valid value.
unsafe impl SlotData for Flow4Key {
    type Words = [u64; 2];
}
// SAFETY: as above.
unsafe impl SlotData for Conn {
    type Words = [u64; 1];
}
// SAFETY: as above.
unsafe impl SlotData for Persist4Key {
    type Words = [u64; 1];
}
// SAFETY: as above.
unsafe impl SlotData for Template {
    type Words = [u64; 1];
}
// SAFETY: as above (40 bytes).
unsafe impl SlotData for Flow6Key {
    type Words = [u64; 5];
}
// SAFETY: as above (24 bytes).
unsafe impl SlotData for Persist6Key {
    type Words = [u64; 3];
}
// SAFETY: fifteen u64 counters.
unsafe impl SlotData for GlobalStats {
    type Words = [u64; 15];
}
// SAFETY: three u64 counters.
unsafe impl SlotData for TrafficStats {
    type Words = [u64; 3];
}

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: all of these are `#[repr(C)]`, made of integers and byte arrays, with explicit
    // padding fields, so every bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for Settings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Vip4Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for VipBucket4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Service {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Real {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Flow4Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Conn {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Persist4Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Template {}
    // SAFETY: as above.
    unsafe impl aya::Pod for GlobalStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TrafficStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RealLoad {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Vip6Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for VipBucket6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Flow6Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Persist6Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SyncSlot {}
    // SAFETY: a set is a lock word and an array of `Pod` slots, all explicitly padded.
    unsafe impl<K: aya::Pod, V: aya::Pod, const W: usize> aya::Pod for Set<K, V, W> {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding_and_an_8_byte_stride() {
        assert_eq!(size_of::<Settings>(), 40 + 4 * TIMEOUT_SLOTS);
        assert_eq!(size_of::<Vip4Key>(), 8);
        assert_eq!(size_of::<VipBucket4>(), 16);
        assert_eq!(size_of::<Service>(), 40);
        assert_eq!(size_of::<Vip6Key>(), 20);
        assert_eq!(size_of::<VipBucket6>(), 24);
        assert_eq!(size_of::<Flow6Key>(), 40);
        assert_eq!(size_of::<Persist6Key>(), 24);
        assert_eq!(size_of::<ConnSet6>(), 8 + 4 * 56);
        assert_eq!(size_of::<PersistSet6>(), 8 + 4 * 40);
        assert_eq!(size_of::<Real>(), 40);
        assert_eq!(size_of::<Flow4Key>(), 16);
        assert_eq!(size_of::<Conn>(), 8);
        assert_eq!(size_of::<Persist4Key>(), 8);
        assert_eq!(size_of::<Template>(), 8);
        assert_eq!(size_of::<ConnSet4>(), 8 + 4 * 32);
        assert_eq!(size_of::<PersistSet4>(), 8 + 4 * 24);
        assert_eq!(size_of::<LookupRow>(), 64);
        assert_eq!(size_of::<RealLoad>(), 40);
        assert_eq!(size_of::<Candidates>(), 32);
        for size in [
            size_of::<Settings>(),
            size_of::<VipBucket4>(),
            size_of::<Service>(),
            size_of::<Real>(),
            size_of::<ConnSet4>(),
            size_of::<PersistSet4>(),
            size_of::<LookupRow>(),
            size_of::<RealLoad>(),
            size_of::<Candidates>(),
            size_of::<VipBucket6>(),
            size_of::<ConnSet6>(),
            size_of::<PersistSet6>(),
        ] {
            assert_eq!(size % 8, 0, "mmapable element of {size} bytes");
        }
        assert_eq!(size_of::<GlobalStats>(), 15 * 8);
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
        assert_ne!(f.tag(), 0);
        let vip: [u8; 16] = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let k6 = Vip6Key::from_parts(vip, 443, proto::TCP);
        assert_eq!(addr6_bytes(&k6.addr), vip);
        assert_eq!(k6.addr[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        let f6 = Flow6Key::from_parts([1; 16], 40000, vip, 443, proto::TCP);
        assert_eq!(f6.dport.to_ne_bytes(), 443u16.to_be_bytes());
        assert_ne!(f6.tag(), 0);
    }

    #[test]
    fn settings_and_table_packing() {
        let s = Settings::new([0; 6]);
        assert_eq!(s.timeout(ConnState::Established as u8), 900);
        assert_eq!(s.timeout(ConnState::Udp as u8), 300);
        for unused in ConnState::COUNT as u8..16 {
            assert_eq!(s.timeout(unused), 0, "past the last state: expires at once");
        }
        let svc = Service {
            flags: 0,
            persist_timeout: 0,
            persist_mask4: 0,
            sched: SCHED_MAGLEV,
            table: Service::pack_table(131_088, 65_537),
            persist_mask6: [u32::MAX; 4],
        };
        assert_eq!((svc.table_base(), svc.table_size()), (131_088, 65_537));
    }

    #[test]
    fn counters_add_field_by_field() {
        let mut a = GlobalStats {
            rx: 1,
            ext_hdr_passed: 2,
            ..GlobalStats::default()
        };
        a.add(&GlobalStats {
            rx: 10,
            persist_hits: 5,
            ext_hdr_passed: u64::MAX,
            ..GlobalStats::default()
        });
        assert_eq!((a.rx, a.persist_hits, a.ext_hdr_passed), (11, 5, 1));
        let mut t = TrafficStats {
            packets: 1,
            bytes: 2,
            conns: 3,
        };
        let same = t;
        t.add(&same);
        assert_eq!((t.packets, t.bytes, t.conns), (2, 4, 6));
    }

    #[test]
    fn real_head_word_is_the_first_8_bytes() {
        let r = Real {
            mac: [1, 2, 3, 4, 5, 6],
            state: REAL_UP,
            family: 4,
            ..Real::EMPTY
        };
        let bytes: [u8; 8] = r.head_word().to_ne_bytes();
        assert_eq!(bytes, [1, 2, 3, 4, 5, 6, REAL_UP, 4]);
    }
}
