//! The data plane's decisions, written once.
//!
//! The XDP program makes these per packet; the control plane makes the same ones to answer
//! `lbadm --which`, to rank least-connection candidates and to recount loads. Both call the
//! functions here, so they cannot drift:
//!
//! - entry liveness: when a connection entry or a persistence template has expired
//!   ([`Settings::conn_live`], [`Service::template_live`]), and which entry a new one may
//!   replace ([`conn_eviction`], [`Service::template_eviction`]);
//! - the VIP probe: how a `(VIP, port, protocol)` is found in a VIP table half
//!   ([`find_service`]);
//! - the schedule hash and the persistence key of a flow ([`FlowKey`]);
//! - the least-connection cost and choice ([`LcCost`], [`least_conn_choice`]), and the
//!   weight-ordered choice of `fo` and `ovf` ([`weight_choice`]);
//! - a real's overload under its connection thresholds ([`overloaded`]).
//!
//! Everything is `#[inline(always)]` and free of calls, loops without a constant bound and
//! memory comparisons, so that the program's copy is as cheap as hand-written code.

use core::cmp::Ordering;

use crate::{
    Addr6, Candidates, Conn, ConnState, Evict, Flow4Key, Flow6Key, LC_CANDIDATES, NO_REAL,
    Persist4Key, Persist6Key, SCHED_LC, SCHED_NQ, SCHED_OVF, SCHED_WLC, SVC_F_HASH_DST,
    SVC_F_HASH_PORT, SVC_F_HASH_SRC, SVC_F_PERSIST, Service, Settings, SlotData, SyncEvent,
    VIP_PROBES, Vip4Key, Vip6Key, VipBucket4, VipBucket6, source_hash4, source_hash6, vip_hash4,
    vip_hash6, with_port,
};

// ---------------------------------------------------------------------------------------------
// Entry liveness

impl Settings {
    /// Seconds since `stamp` by the data-plane clock; ages rather than stamps are compared so
    /// that every test survives the clock wrapping.
    #[inline(always)]
    pub const fn idle(&self, stamp: u32) -> u32 {
        self.clock.wrapping_sub(stamp)
    }

    /// Whether a connection entry in state `state`, last used at `stamp`, is live: idle no
    /// longer than its state's timeout.
    #[inline(always)]
    pub fn conn_live(&self, state: u8, stamp: u32) -> bool {
        self.idle(stamp) <= self.timeout(state)
    }
}

impl Service {
    /// Whether a persistence template of this service last used at `stamp` is live at clock
    /// second `now`: idle no longer than the persistence timeout.
    #[inline(always)]
    pub const fn template_live(&self, now: u32, stamp: u32) -> bool {
        now.wrapping_sub(stamp) <= self.persist_timeout
    }
}

impl Service {
    /// How a new template of this service may treat a used slot whose template was last used
    /// at `stamp`: expired ones first, then the least recently used.
    #[inline(always)]
    pub const fn template_eviction(&self, now: u32, stamp: u32) -> Evict {
        if self.template_live(now, stamp) {
            Evict::Live
        } else {
            Evict::Expired
        }
    }
}

/// How a new connection entry in state `new_state` may treat a used slot holding `old`, last
/// used at `stamp`: expired entries go first, then the least recently used unconfirmed ones
/// (SYN_RECV, UDP flows, closing states: anything but ESTABLISHED). A live ESTABLISHED entry
/// goes last, and never for an unconfirmed new entry, so that a flood of new flows, spoofed
/// SYNs included, cannot push established connections out of the table.
#[inline(always)]
pub fn conn_eviction(settings: &Settings, new_state: u8, old: &Conn, stamp: u32) -> Evict {
    let established = ConnState::Established as u8;
    if !settings.conn_live(old.state, stamp) {
        Evict::Expired
    } else if old.state != established {
        Evict::Live
    } else if new_state == established {
        Evict::Last
    } else {
        Evict::Protected
    }
}

// ---------------------------------------------------------------------------------------------
// The VIP probe

/// A key of a VIP table ([`Vip4Key`] in `VIPS4`, [`Vip6Key`] in `VIPS6`) and its bucket.
pub trait VipKey: Copy {
    /// One bucket of the table.
    type Bucket;

    /// The key's home bucket before masking.
    fn home(&self) -> u32;
    /// Whether two keys are the same (address, port and protocol), without a call.
    fn same(&self, other: &Self) -> bool;
    /// Whether this is the key of an empty bucket (protocol 0), which ends a probe sequence.
    fn is_empty(&self) -> bool;
    /// The key a bucket holds.
    fn key_of(bucket: &Self::Bucket) -> &Self;
    /// The service id a bucket holds.
    fn service_of(bucket: &Self::Bucket) -> u32;
}

/// The service id of `key` in the table half whose bucket 0 is at `base` and whose size is
/// `mask + 1`: linear probing from the key's home bucket, at most [`VIP_PROBES`] buckets; an
/// empty bucket, or a bucket `bucket(index)` cannot give, ends the search.
#[inline(always)]
pub fn find_service<'t, K: VipKey + 't>(
    key: &K,
    base: u32,
    mask: u32,
    bucket: impl Fn(u32) -> Option<&'t K::Bucket>,
) -> Option<u32> {
    let home = key.home();
    let mut probe = 0;
    while probe < VIP_PROBES {
        let b = bucket(base + (home.wrapping_add(probe) & mask))?;
        let found = K::key_of(b);
        if found.same(key) {
            return Some(K::service_of(b));
        }
        if found.is_empty() {
            return None;
        }
        probe += 1;
    }
    None
}

impl VipKey for Vip4Key {
    type Bucket = VipBucket4;

    #[inline(always)]
    fn home(&self) -> u32 {
        vip_hash4(self.addr, self.port, self.proto)
    }

    #[inline(always)]
    fn same(&self, other: &Self) -> bool {
        self.addr == other.addr && self.port == other.port && self.proto == other.proto
    }

    #[inline(always)]
    fn is_empty(&self) -> bool {
        self.proto == 0
    }

    #[inline(always)]
    fn key_of(bucket: &VipBucket4) -> &Self {
        &bucket.key
    }

    #[inline(always)]
    fn service_of(bucket: &VipBucket4) -> u32 {
        bucket.service_id
    }
}

impl VipKey for Vip6Key {
    type Bucket = VipBucket6;

    #[inline(always)]
    fn home(&self) -> u32 {
        vip_hash6(&self.addr, self.port, self.proto)
    }

    #[inline(always)]
    fn same(&self, other: &Self) -> bool {
        same6(&self.addr, &other.addr) && self.port == other.port && self.proto == other.proto
    }

    #[inline(always)]
    fn is_empty(&self) -> bool {
        self.proto == 0
    }

    #[inline(always)]
    fn key_of(bucket: &VipBucket6) -> &Self {
        &bucket.key
    }

    #[inline(always)]
    fn service_of(bucket: &VipBucket6) -> u32 {
        bucket.service_id
    }
}

/// Whether two IPv6 addresses are equal, without a call (an array comparison may become one
/// in BPF).
#[inline(always)]
pub const fn same6(a: &Addr6, b: &Addr6) -> bool {
    ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0
}

/// `a & mask`, word by word.
#[inline(always)]
pub const fn masked6(a: &Addr6, mask: &Addr6) -> Addr6 {
    [
        a[0] & mask[0],
        a[1] & mask[1],
        a[2] & mask[2],
        a[3] & mask[3],
    ]
}

// ---------------------------------------------------------------------------------------------
// Flow keys: the schedule hash and the persistence key

/// A connection-table key ([`Flow4Key`], [`Flow6Key`]) and what scheduling derives from it.
pub trait FlowKey: SlotData {
    /// An address as stored in keys.
    type Addr: Copy;
    /// The persistence-template key of the family.
    type Client: SlotData;

    /// The key of a client->VIP 5-tuple (wire-order values).
    fn of(src: Self::Addr, dst: Self::Addr, sport: u16, dport: u16, proto: u8) -> Self;
    /// The flow hash: picks the connection-table set; the per-flow lookup-table slot.
    fn flow_hash(&self) -> u32;
    /// The client address.
    fn src(&self) -> Self::Addr;
    /// The persistence key of the flow's client: its address under the service's
    /// granularity, inside service `service_id`.
    fn client(&self, service_id: u32, svc: &Service) -> Self::Client;
    /// Hash of the client address under the service's granularity (`sh`, persistence).
    fn source_hash(&self, svc: &Service) -> u32;
    /// The director-sync announcement of this flow on real `real` in `state`.
    fn sync_event(&self, real: u32, state: u8) -> SyncEvent;

    /// Hash of the destination address (`dh`).
    fn dest_hash(&self) -> u32;
    /// The client's port (wire order).
    fn sport(&self) -> u16;

    /// The hash that places a new flow in the service's lookup table (or breaks
    /// least-connection ties): by the destination for `dh`; by the masked source for `sh`,
    /// `mh` and persistent services, with the source port under `sh-port`/`mh-port`; else the
    /// flow hash (`flow_hash`, passed in because the caller has it already).
    #[inline(always)]
    fn schedule_hash(&self, svc: &Service, flow_hash: u32) -> u32 {
        if svc.flags & SVC_F_HASH_DST != 0 {
            self.dest_hash()
        } else if svc.flags & (SVC_F_HASH_SRC | SVC_F_PERSIST) != 0 {
            let h = self.source_hash(svc);
            if svc.flags & SVC_F_HASH_PORT != 0 {
                with_port(h, self.sport())
            } else {
                h
            }
        } else {
            flow_hash
        }
    }
}

impl FlowKey for Flow4Key {
    type Addr = u32;
    type Client = Persist4Key;

    #[inline(always)]
    fn of(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> Self {
        Flow4Key {
            src,
            dst,
            sport,
            dport,
            proto,
            _pad: [0; 3],
        }
    }

    #[inline(always)]
    fn flow_hash(&self) -> u32 {
        self.hash()
    }

    #[inline(always)]
    fn src(&self) -> u32 {
        self.src
    }

    #[inline(always)]
    fn client(&self, service_id: u32, svc: &Service) -> Persist4Key {
        Persist4Key {
            service_id,
            client: self.src & svc.persist_mask4,
        }
    }

    #[inline(always)]
    fn source_hash(&self, svc: &Service) -> u32 {
        source_hash4(self.src & svc.persist_mask4)
    }

    #[inline(always)]
    fn sync_event(&self, real: u32, state: u8) -> SyncEvent {
        SyncEvent::of4(self, real, state)
    }

    #[inline(always)]
    fn dest_hash(&self) -> u32 {
        source_hash4(self.dst)
    }

    #[inline(always)]
    fn sport(&self) -> u16 {
        self.sport
    }
}

impl FlowKey for Flow6Key {
    type Addr = Addr6;
    type Client = Persist6Key;

    #[inline(always)]
    fn of(src: Addr6, dst: Addr6, sport: u16, dport: u16, proto: u8) -> Self {
        Flow6Key {
            src,
            dst,
            sport,
            dport,
            proto,
            _pad: [0; 3],
        }
    }

    #[inline(always)]
    fn flow_hash(&self) -> u32 {
        self.hash()
    }

    #[inline(always)]
    fn src(&self) -> Addr6 {
        self.src
    }

    #[inline(always)]
    fn client(&self, service_id: u32, svc: &Service) -> Persist6Key {
        Persist6Key {
            service_id,
            _pad: 0,
            client: masked6(&self.src, &svc.persist_mask6),
        }
    }

    #[inline(always)]
    fn source_hash(&self, svc: &Service) -> u32 {
        source_hash6(&masked6(&self.src, &svc.persist_mask6))
    }

    #[inline(always)]
    fn sync_event(&self, real: u32, state: u8) -> SyncEvent {
        SyncEvent::of6(self, real, state)
    }

    #[inline(always)]
    fn dest_hash(&self) -> u32 {
        source_hash6(&self.dst)
    }

    #[inline(always)]
    fn sport(&self) -> u16 {
        self.sport
    }
}

// ---------------------------------------------------------------------------------------------
// Two random choices: twos

/// IPVS's `twos` choice, one candidate at a time: two independent draws among the usable
/// candidates, each real drawn with a probability in proportion to its weight (a weighted
/// reservoir of one, per draw), then the less loaded of the two by `wlc`'s cost (the first
/// draw on a tie). The caller feeds every candidate to [`Twos::step`] with two fresh random
/// numbers, then takes [`Twos::choice`].
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Twos {
    total: u64,
    first: u32,
    second: u32,
    first_cost: LcCost,
    second_cost: LcCost,
}

impl Default for Twos {
    fn default() -> Self {
        Self::new()
    }
}

impl Twos {
    /// No candidate seen yet.
    #[inline(always)]
    pub const fn new() -> Self {
        let none = LcCost { cost: 0, per: 1 };
        Self {
            total: 0,
            first: NO_REAL,
            second: NO_REAL,
            first_cost: none,
            second_cost: none,
        }
    }

    /// Takes in usable candidate `index` of weight `weight` with `(active, inactive)`
    /// connections; `r1` and `r2` are fresh random numbers, one per draw. Weight 0 is skipped.
    #[inline(always)]
    pub fn step(&mut self, index: u32, weight: u32, load: (u64, u64), r1: u32, r2: u32) {
        if weight == 0 {
            return;
        }
        let weight = weight.min(MAX_WEIGHT);
        // At most 8 weights of at most MAX_WEIGHT: never 0 after this, and `max` says so to
        // the compiler (no division-by-zero panic in the program).
        self.total = self.total.saturating_add(u64::from(weight)).max(1);
        let total = self.total;
        let cost = LcCost::of(SCHED_WLC, load.0, load.1, weight);
        if u64::from(r1) % total < u64::from(weight) {
            self.first = index;
            self.first_cost = cost;
        }
        if u64::from(r2) % total < u64::from(weight) {
            self.second = index;
            self.second_cost = cost;
        }
    }

    /// The chosen candidate ([`NO_REAL`]: none was usable).
    #[inline(always)]
    pub fn choice(&self) -> u32 {
        if self.second_cost.below(&self.first_cost) {
            self.second
        } else {
            self.first
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connection thresholds

/// Whether a real with `conns` connections (active + inactive, IPVS's
/// `ip_vs_dest_totalconns`), upper threshold `upper` and lower threshold `lower` is overloaded,
/// given whether it was (`was`): IPVS's `IP_VS_DEST_F_OVERLOAD` with its hysteresis.
///
/// - `upper == 0`: no threshold, never overloaded;
/// - it becomes overloaded at `conns >= upper`;
/// - once overloaded it stays so until `conns < lower`, or, with `lower == 0`, until
///   `conns < 3/4 x upper`.
///
/// IPVS re-evaluates the flag when a connection is bound (set) or unbound (cleared); the data
/// plane evaluates it when it schedules a new flow, which is the only time the flag is read, so
/// the choices are the same.
#[inline(always)]
pub const fn overloaded(was: bool, conns: u64, upper: u32, lower: u32) -> bool {
    if upper == 0 {
        return false;
    }
    if conns >= upper as u64 {
        return true;
    }
    if !was {
        return false;
    }
    if lower != 0 {
        conns >= lower as u64
    } else {
        conns * 4 >= upper as u64 * 3
    }
}

// ---------------------------------------------------------------------------------------------
// Least connection

/// The largest weight a real may have (ipvsadm's limit); configuration refuses more.
pub const MAX_WEIGHT: u32 = 65_535;

/// A real's cost under a least-connection scheduler, the ratio `cost / per` (IPVS compares
/// such ratios by cross-multiplication):
/// - `lc`: `active x 256 + inactive`;
/// - `wlc`: `(active x 256 + inactive) / weight`;
/// - `sed` and `nq`: `(active + 1) / weight`.
///
/// Counts are taken at most `u32::MAX` (a table never holds more entries) and weights at most
/// [`MAX_WEIGHT`], so every product stays below 2^57: the arithmetic is 64-bit and exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LcCost {
    cost: u64,
    per: u64,
}

impl LcCost {
    /// The cost of a real with `active` and `inactive` live connections and weight `weight`
    /// (> 0) under scheduler `sched` (`SCHED_*`, not Maglev).
    #[inline(always)]
    pub fn of(sched: u32, active: u64, inactive: u64, weight: u32) -> Self {
        let active = active.min(u32::MAX as u64);
        let inactive = inactive.min(u32::MAX as u64);
        let weight = weight.min(MAX_WEIGHT) as u64;
        let (cost, per) = match sched {
            SCHED_LC => ((active << 8) + inactive, 1),
            SCHED_WLC => ((active << 8) + inactive, weight),
            _ => (active + 1, weight),
        };
        Self { cost, per }
    }

    /// Whether this cost is strictly below `other`.
    #[inline(always)]
    pub fn below(&self, other: &Self) -> bool {
        self.cost * other.per < other.cost * self.per
    }

    /// The order of two costs (equal ratios compare equal).
    pub fn compare(&self, other: &Self) -> Ordering {
        (self.cost * other.per).cmp(&(other.cost * self.per))
    }
}

/// Whether `nq` takes a real at once: it has no active connection.
#[inline(always)]
pub fn idle_first(sched: u32, active: u64) -> bool {
    sched == SCHED_NQ && active == 0
}

/// The least-connection choice among a service's `candidates` for a new flow with schedule
/// hash `hash`. `real(index)` gives a candidate that may take flows (up, of this service) as
/// `(value, weight, (active, inactive))`, else `None`; candidates of weight 0 are skipped. The
/// scan starts at a position taken from `hash`, so that ties spread over the tied reals; `nq`
/// takes the first idle real it meets. Returns the chosen candidate's value.
#[inline(always)]
pub fn least_conn_choice<T>(
    sched: u32,
    candidates: &Candidates,
    hash: u32,
    real: impl Fn(u32) -> Option<(T, u32, (u64, u64))>,
) -> Option<T> {
    let mut best: Option<(T, LcCost)> = None;
    let mut i = 0;
    while i < LC_CANDIDATES {
        let index = candidates[(hash as usize).wrapping_add(i) & (LC_CANDIDATES - 1)];
        i += 1;
        if index == NO_REAL {
            continue;
        }
        let Some((value, weight, (active, inactive))) = real(index) else {
            continue;
        };
        if weight == 0 {
            continue;
        }
        if idle_first(sched, active) {
            return Some(value);
        }
        let cost = LcCost::of(sched, active, inactive, weight);
        let better = match &best {
            None => true,
            Some((_, b)) => cost.below(b),
        };
        if better {
            best = Some((value, cost));
        }
    }
    best.map(|(value, _)| value)
}

// ---------------------------------------------------------------------------------------------
// Highest weight first: fo and ovf

/// Whether `sched` picks by weight ([`weight_choice`]) rather than by connection cost.
#[inline(always)]
pub const fn by_weight(sched: u32) -> bool {
    sched == crate::SCHED_FO || sched == SCHED_OVF
}

/// The `fo` or `ovf` choice among a service's `candidates`: the candidate with the highest
/// weight, the first of them in candidate order on a tie (IPVS takes the first in its list).
/// `real(index)` gives a candidate that may take flows as in [`least_conn_choice`]; weight 0
/// is skipped, and under `ovf` so is a real whose active connections exceed its weight.
#[inline(always)]
pub fn weight_choice<T>(
    sched: u32,
    candidates: &Candidates,
    real: impl Fn(u32) -> Option<(T, u32, (u64, u64))>,
) -> Option<T> {
    // The best weight so far starts at 0, so that the first usable real wins (IPVS's
    // `hweight`); kept apart from `best` so that no comparison reads an unset value.
    let mut best: Option<T> = None;
    let mut best_weight = 0u32;
    let mut i = 0;
    while i < LC_CANDIDATES {
        let index = candidates[i];
        i += 1;
        if index == NO_REAL {
            continue;
        }
        let Some((value, weight, (active, _))) = real(index) else {
            continue;
        };
        if sched == SCHED_OVF && active > u64::from(weight) {
            continue;
        }
        if weight > best_weight {
            best = Some(value);
            best_weight = weight;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SCHED_SED, proto};

    #[test]
    fn fo_takes_the_heaviest_real_and_ovf_the_heaviest_not_overflowing() {
        let candidates = [3, NO_REAL, 5, 7, 9, 0, 0, 0];
        // (weight, active): 3 (2, 0), 5 (4, 5), 7 (4, 1), 9 (0, 0); 11 is not usable.
        let look = |i: u32| match i {
            3 => Some((i, 2, (0, 0))),
            5 => Some((i, 4, (5, 0))),
            7 => Some((i, 4, (1, 0))),
            9 => Some((i, 0, (0, 0))),
            _ => None,
        };
        assert_eq!(weight_choice(crate::SCHED_FO, &candidates, look), Some(5));
        // ovf: 5 overflows (5 > 4); 7 holds as many as its weight at most.
        assert_eq!(weight_choice(SCHED_OVF, &candidates, look), Some(7));
        let full = |i: u32| look(i).map(|(v, w, _)| (v, w, (u64::from(w) + 1, 0)));
        assert_eq!(weight_choice(SCHED_OVF, &candidates, full), None);
        assert_eq!(weight_choice(crate::SCHED_FO, &candidates, full), Some(5));
        assert!(by_weight(SCHED_OVF) && by_weight(crate::SCHED_FO) && !by_weight(SCHED_NQ));
    }

    #[test]
    fn twos_draws_by_weight_and_takes_the_less_loaded_of_two() {
        // One real: always it.
        let mut t = Twos::new();
        t.step(4, 3, (100, 0), 12345, 999);
        assert_eq!(t.choice(), 4);
        assert_eq!(Twos::new().choice(), NO_REAL);
        // Weight 0 is never drawn.
        let mut t = Twos::new();
        t.step(4, 0, (0, 0), 0, 0);
        t.step(5, 1, (9, 0), 0, 0);
        assert_eq!(t.choice(), 5);
        // Two reals, both drawn: the less loaded wins, whichever draw it came from.
        for (r1, r2) in [(0, 1), (1, 0)] {
            let mut t = Twos::new();
            t.step(4, 1, (10, 0), 0, 0); // both draws take 4 first (0 % 1 < 1)
            t.step(5, 1, (1, 0), r1, r2); // 0 % 2 < 1 takes 5, 1 % 2 does not
            assert_eq!(t.choice(), 5, "{r1} {r2}");
        }
        // The draws follow the weights: over every r, real 5 (weight 3) takes 3 of 4.
        let mut fives = 0;
        for r in 0..400u32 {
            let mut t = Twos::new();
            t.step(4, 1, (0, 0), 0, 0);
            t.step(5, 3, (0, 0), r, r);
            fives += u32::from(t.choice() == 5);
        }
        assert_eq!(fives, 300);
    }

    #[test]
    fn overload_has_ipvs_hysteresis() {
        // No upper threshold: never, whatever the lower one says.
        assert!(!overloaded(true, 1_000_000, 0, 5));
        // Set at the upper threshold.
        assert!(!overloaded(false, 9, 10, 4));
        assert!(overloaded(false, 10, 10, 4));
        // Kept until below the lower threshold.
        assert!(overloaded(true, 9, 10, 4));
        assert!(overloaded(true, 4, 10, 4));
        assert!(!overloaded(true, 3, 10, 4));
        // Without a lower threshold, until below 3/4 of the upper one.
        assert!(overloaded(true, 75, 100, 0));
        assert!(!overloaded(true, 74, 100, 0));
        assert!(!overloaded(false, 80, 100, 0));
        // The largest inputs do not overflow.
        assert!(overloaded(true, u64::from(u32::MAX), u32::MAX, 0));
    }

    #[test]
    fn lc_costs_follow_ipvs() {
        // wlc: 1 active + 0 inactive at weight 2 (128) is below 1 active at weight 1 (256).
        let a = LcCost::of(SCHED_WLC, 1, 0, 2);
        let b = LcCost::of(SCHED_WLC, 1, 0, 1);
        assert!(a.below(&b) && !b.below(&a));
        // lc ignores the weight; one active connection weighs 256 inactive ones.
        assert_eq!(
            LcCost::of(SCHED_LC, 1, 0, 100).compare(&LcCost::of(SCHED_LC, 0, 256, 1)),
            Ordering::Equal
        );
        // sed counts the new connection and ignores inactive ones.
        assert!(LcCost::of(SCHED_SED, 0, 1000, 1).below(&LcCost::of(SCHED_SED, 1, 0, 1)));
        // The largest inputs do not overflow.
        let top = LcCost::of(SCHED_WLC, u64::MAX, u64::MAX, u32::MAX);
        assert_eq!(top.compare(&top), Ordering::Equal);
        assert!(LcCost::of(SCHED_WLC, 0, 0, 1).below(&top));
    }

    #[test]
    fn the_choice_skips_unusable_and_weightless_reals_and_nq_takes_an_idle_one() {
        let candidates = [3, NO_REAL, 5, 7, 0, 0, 0, 0];
        let look = |i: u32| match i {
            3 => Some((i, 1, (5, 0))),
            5 => Some((i, 0, (0, 0))), // weight 0
            7 => Some((i, 1, (2, 0))),
            _ => None,
        };
        for hash in 0..8 {
            assert_eq!(
                least_conn_choice(SCHED_WLC, &candidates, hash, look),
                Some(7)
            );
        }
        let idle = |i: u32| Some((i, 1, (u64::from(i != 7), 0)));
        assert_eq!(least_conn_choice(SCHED_NQ, &candidates, 0, idle), Some(7));
        assert_eq!(least_conn_choice(SCHED_LC, &[NO_REAL; 8], 0, idle), None);
    }

    #[test]
    fn vip_probe_stops_at_an_empty_bucket_and_wraps_in_its_half() {
        let key = Vip4Key::from_parts([10, 0, 0, 1], 80, proto::TCP);
        let mask = 15;
        let home = key.home() & mask;
        let mut table = [VipBucket4::EMPTY; 32];
        // The second half (base 16): one other key at home, ours right after it.
        let other = Vip4Key::from_parts([10, 0, 0, 2], 80, proto::TCP);
        table[(16 + home) as usize] = VipBucket4 {
            key: other,
            service_id: 1,
            _pad: 0,
        };
        table[(16 + ((home + 1) & mask)) as usize] = VipBucket4 {
            key,
            service_id: 2,
            _pad: 0,
        };
        let at = |i: u32| table.get(i as usize);
        assert_eq!(find_service(&key, 16, mask, at), Some(2));
        assert_eq!(
            find_service(&key, 0, mask, at),
            None,
            "the other half is empty"
        );
        table[(16 + home) as usize] = VipBucket4::EMPTY;
        let at = |i: u32| table.get(i as usize);
        assert_eq!(
            find_service(&key, 16, mask, at),
            None,
            "an empty home ends it"
        );
    }

    #[test]
    fn persistence_keys_and_hashes_use_the_granularity() {
        let svc = Service {
            flags: SVC_F_PERSIST,
            persist_timeout: 300,
            persist_mask4: u32::from_ne_bytes([255, 255, 255, 0]),
            sched: 0,
            table: 0,
            persist_mask6: [u32::MAX, 0, 0, 0],
        };
        let a = Flow4Key::from_parts([192, 168, 1, 7], 1000, [10, 0, 0, 1], 80, proto::TCP);
        let b = Flow4Key::from_parts([192, 168, 1, 9], 2000, [10, 0, 0, 1], 80, proto::TCP);
        assert_eq!(a.client(4, &svc), b.client(4, &svc));
        assert_eq!(
            a.schedule_hash(&svc, a.hash()),
            b.schedule_hash(&svc, b.hash())
        );
        let plain = Service { flags: 0, ..svc };
        assert_eq!(a.schedule_hash(&plain, a.hash()), a.hash());
        let c = Flow6Key::from_parts([0x20; 16], 1, [1; 16], 443, proto::TCP);
        let mut d_src = [0x20; 16];
        d_src[15] = 0x21;
        let d = Flow6Key::from_parts(d_src, 2, [1; 16], 443, proto::TCP);
        assert_eq!(c.client(1, &svc), d.client(1, &svc));
        assert_eq!(c.source_hash(&svc), d.source_hash(&svc));
    }

    #[test]
    fn unconfirmed_entries_never_evict_established_ones() {
        let mut s = Settings::new([0; 6]);
        s.clock = 1000;
        let conn = |state: ConnState| Conn {
            real: 1,
            state: state as u8,
            _pad: [0; 3],
        };
        let (syn, udp, est) = (
            ConnState::SynRecv as u8,
            ConnState::Udp as u8,
            ConnState::Established as u8,
        );
        let live_est = conn(ConnState::Established);
        assert_eq!(conn_eviction(&s, syn, &live_est, 990), Evict::Protected);
        assert_eq!(conn_eviction(&s, udp, &live_est, 990), Evict::Protected);
        assert_eq!(conn_eviction(&s, est, &live_est, 990), Evict::Last);
        assert_eq!(
            conn_eviction(&s, syn, &conn(ConnState::SynRecv), 990),
            Evict::Live
        );
        // An expired established entry is free to take (900 s idle is its timeout).
        assert_eq!(conn_eviction(&s, syn, &live_est, 99), Evict::Expired);
    }

    #[test]
    fn liveness_survives_the_clock_wrapping() {
        let mut s = Settings::new([0; 6]);
        s.clock = 5;
        let est = ConnState::Established as u8;
        assert!(s.conn_live(est, u32::MAX - 10));
        assert!(!s.conn_live(est, u32::MAX - 1000));
        let svc = Service {
            flags: SVC_F_PERSIST,
            persist_timeout: 60,
            persist_mask4: 0,
            sched: 0,
            table: 0,
            persist_mask6: [0; 4],
        };
        assert!(svc.template_live(5, u32::MAX - 50));
        assert!(!svc.template_live(5, u32::MAX - 60));
    }
}
