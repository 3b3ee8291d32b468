//! The desired state: what the data plane should do, independent of how maps are laid out.
//!
//! Configuration, health checks, neighbour resolution and runtime edits all end up here; the
//! planner (`reconcile::plan`) turns the difference between two desired states into map updates.
//! The capacities of the maps ([`Limits`]) and the table entries as read ([`ConnEntry`]) are
//! the other words every layer shares.

mod entries;
mod limits;

pub use entries::{Conn6Entry, ConnEntry, ListedFlow, PersistKey, Template6Entry, TemplateEntry};
pub use limits::{AttachMode, Limits, vip_buckets_for};

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use serde::{Deserialize, Serialize};

/// Transport protocol of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => lb_common::proto::TCP,
            Protocol::Udp => lb_common::proto::UDP,
        }
    }

    /// Upper-case name as ipvsadm prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A virtual service: VIP, port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    /// Virtual IP.
    pub vip: IpAddr,
    /// Port (never 0).
    pub port: u16,
    /// Protocol.
    pub proto: Protocol,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.vip {
            IpAddr::V4(a) => write!(f, "{} {}:{}", self.proto, a, self.port),
            IpAddr::V6(a) => write!(f, "{} [{}]:{}", self.proto, a, self.port),
        }
    }
}

/// A real server inside a service: address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RealKey {
    /// Real server address.
    pub addr: IpAddr,
    /// Port (equal to the service port in DR).
    pub port: u16,
}

impl fmt::Display for RealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{}:{}", a, self.port),
            IpAddr::V6(a) => write!(f, "[{}]:{}", a, self.port),
        }
    }
}

/// How new flows pick a real.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scheduler {
    /// Weighted Maglev over the 5-tuple (serves rr and wrr).
    Maglev,
    /// Weighted Maglev over the source address (sh, mh).
    SourceHash,
    /// Weighted Maglev over the destination address (dh).
    DestinationHash,
    /// Least connections: `active x 256 + inactive` (lc).
    LeastConn,
    /// Weighted least connections: that load divided by the weight (wlc).
    WeightedLeastConn,
    /// Shortest expected delay: `(active + 1) / weight` (sed).
    ShortestExpectedDelay,
    /// Never queue: an idle real first, else sed (nq).
    NeverQueue,
    /// Weighted failover: the available real with the highest weight (fo).
    Failover,
    /// Overflow: the highest-weight available real until its active connections exceed its
    /// weight (ovf).
    Overflow,
    /// Weighted random of two choices: the less loaded of two reals drawn by weight (twos).
    TwoChoices,
}

impl Scheduler {
    /// The data plane's `SCHED_*` value.
    pub const fn code(self) -> u32 {
        match self {
            Scheduler::Maglev | Scheduler::SourceHash | Scheduler::DestinationHash => {
                lb_common::SCHED_MAGLEV
            }
            Scheduler::LeastConn => lb_common::SCHED_LC,
            Scheduler::WeightedLeastConn => lb_common::SCHED_WLC,
            Scheduler::ShortestExpectedDelay => lb_common::SCHED_SED,
            Scheduler::NeverQueue => lb_common::SCHED_NQ,
            Scheduler::Failover => lb_common::SCHED_FO,
            Scheduler::Overflow => lb_common::SCHED_OVF,
            Scheduler::TwoChoices => lb_common::SCHED_TWOS,
        }
    }

    /// Whether new flows are placed over the service's candidates (connection counts, or
    /// weights for fo and ovf) rather than by the Maglev table.
    pub const fn is_least_conn(self) -> bool {
        self.code() != lb_common::SCHED_MAGLEV
    }
}

/// A service's scheduling flags (IPVS's; keepalived's `sh-port`, `sh-fallback`, `mh-port`,
/// `mh-fallback` and `ops`; ipvsadm's `-b` and `-o`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedFlags {
    /// `sh-port`/`mh-port`: the source hash takes in the source port.
    pub port: bool,
    /// `sh-fallback`/`mh-fallback`: a new flow whose hashed real is overloaded or down goes to
    /// another real instead of being dropped.
    pub fallback: bool,
    /// `ops`: one-packet scheduling, each UDP datagram on its own, no connection entry.
    pub one_packet: bool,
}

impl SchedFlags {
    /// The flags' names as keepalived and ipvsadm write them for scheduler `sched` (`sh`,
    /// `mh`): `sh-fallback`, `sh-port`, then `ops`.
    pub fn names(&self, sched: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.fallback {
            out.push(format!("{sched}-fallback"));
        }
        if self.port {
            out.push(format!("{sched}-port"));
        }
        if self.one_packet {
            out.push("ops".to_owned());
        }
        out
    }
}

/// Persistence (keepalived `persistence_timeout` / `persistence_granularity`).
///
/// The granularity is given per address family, as keepalived and ipvsadm give it: a netmask
/// for an IPv4 service, a prefix length for an IPv6 one. A service uses the field of its VIP's
/// family and ignores the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persistence {
    /// Seconds a client stays on its real after its last connection event.
    pub timeout: u32,
    /// IPv4 services: netmask applied to the client address (255.255.255.255 = per client).
    pub granularity: Ipv4Addr,
    /// IPv6 services: prefix length applied to the client address, 1 to 128 (128 = per
    /// client).
    pub prefix6: u8,
}

impl Persistence {
    /// Per-client persistence (a /32 or /128 granularity) for `timeout` seconds.
    pub const fn per_client(timeout: u32) -> Self {
        Self {
            timeout,
            granularity: Ipv4Addr::BROADCAST,
            prefix6: 128,
        }
    }

    /// The granularity of a service on `vip` as ipvsadm shows it: the netmask for IPv4
    /// (`255.255.255.0`), the prefix length for IPv6 (`64`).
    pub fn granularity_text(&self, vip: IpAddr) -> String {
        match vip {
            IpAddr::V4(_) => self.granularity.to_string(),
            IpAddr::V6(_) => self.prefix6.to_string(),
        }
    }
}

/// Health of a real as decided by its checker (or by the operator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Takes traffic.
    Up,
    /// Gets no new flows; existing flows are rescheduled.
    Down,
}

/// How one checker changes its real's weight (keepalived's per-checker `cur_weight`). A real's
/// live weight is its configured weight plus every checker's contribution, clamped to
/// `0..=MAX_WEIGHT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightEffect {
    /// `misc_dynamic`: the script asked for this weight (its exit status minus 2); it
    /// contributes the difference from the configured weight.
    Set(u32),
    /// `file_check`: the file's value times the check's weight, added to the weight.
    Add(i64),
}

impl WeightEffect {
    /// What this effect adds to a real whose configured weight is `configured`.
    pub fn delta(self, configured: u32) -> i64 {
        match self {
            Self::Set(w) => i64::from(w) - i64::from(configured),
            Self::Add(n) => n,
        }
    }
}

/// The live weight of a real configured with `configured` under `effects`: keepalived adds every
/// checker's contribution to the configured weight and clamps the sum to what IPVS takes (here
/// `0..=MAX_WEIGHT`).
pub fn effective_weight(configured: u32, effects: impl IntoIterator<Item = WeightEffect>) -> u32 {
    let sum = effects.into_iter().fold(i64::from(configured), |acc, e| {
        acc.saturating_add(e.delta(configured))
    });
    sum.clamp(0, i64::from(lb_common::MAX_WEIGHT)) as u32
}

/// A real's connection thresholds (IPVS's `u_threshold` and `l_threshold`; keepalived's
/// `uthreshold` and `lthreshold`; ipvsadm's `-x` and `-y`): a real with `upper` connections or
/// more (active + inactive) is overloaded and gets no new flows until it is below `lower` (below
/// 3/4 of `upper` when `lower` is 0). `upper` 0 means no threshold. The data plane decides it
/// (`lb_common::overloaded`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Upper threshold (0 = none).
    pub upper: u32,
    /// Lower threshold (0 = 3/4 of the upper one).
    pub lower: u32,
}

impl Thresholds {
    /// The largest threshold ipvsadm accepts (`INT_MAX`).
    pub const MAX: u32 = i32::MAX as u32;
}

/// What the data plane should do with one real.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealSpec {
    /// Weight; 0 drains (existing flows stay, no new ones).
    pub weight: u32,
    /// Connection thresholds: no new flows while overloaded.
    pub thresholds: Thresholds,
    /// Resolved MAC address; `None` (not resolved) makes the real down.
    pub mac: Option<[u8; 6]>,
    /// Health.
    pub health: Health,
}

impl RealSpec {
    /// Whether the data plane may send this real traffic at all.
    pub fn is_up(&self) -> bool {
        self.health == Health::Up && self.mac.is_some()
    }

    /// Whether the real gets new flows (is in the lookup table).
    pub fn takes_new_flows(&self) -> bool {
        self.is_up() && self.weight > 0
    }
}

/// What the data plane should do with one virtual service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Scheduler.
    pub scheduler: Scheduler,
    /// Scheduling flags.
    pub flags: SchedFlags,
    /// Persistence, if on.
    pub persistence: Option<Persistence>,
    /// Maglev table size M (prime).
    pub table_size: u32,
    /// Reals.
    pub reals: BTreeMap<RealKey, RealSpec>,
}

/// The whole desired data-plane state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// Services by key.
    pub services: BTreeMap<ServiceKey, ServiceSpec>,
}
