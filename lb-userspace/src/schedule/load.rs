//! Connection counts for the least-connection schedulers (`lc`, `wlc`, `sed`, `nq`).
//!
//! The data plane keeps each real's counts of connection-table entries in `REAL_LOAD` (see
//! [`lb_common::RealLoad`]), exact whatever the traffic: it adds and subtracts as entries are
//! created, change class or are overwritten. Two kinds of entries no longer stand for a
//! connection, and it cannot tell them apart: entries that expired without a last packet (a
//! client that vanished, a UDP flow that ended), and connections a real lost while it was down
//! (its clients got resets straight from the real, which the director never sees). So the agent
//! counts those stale entries in both connection tables (IPv4 and IPv6) every
//! [`RECONCILE_EVERY`] and after every change of the tables, and writes the numbers beside the
//! counts (`Dataplane::reconcile_loads`, with [`stale`]); a real's load is the difference.
//!
//! New connections do not disturb that count: they are neither expired nor stale. What can be
//! off is what changed while the table was read (an entry expiring, or a stale entry being
//! overwritten or used again), by a handful of entries until the next count.
//!
//! A service with more eligible reals than the data plane compares per new flow
//! ([`LC_CANDIDATES`]) gets its least loaded ones written as candidates every
//! [`CANDIDATES_EVERY`] ([`least_loaded`]).

use std::{collections::BTreeMap, time::Duration};

use lb_common::{
    Candidates, ConnState, LC_CANDIDATES, LcCost, NO_REAL, RealLoad, SCHED_OVF, SCHED_TWOS,
    Settings, Twos, by_weight, idle_first, least_conn_choice, weight_choice,
};

use crate::model::ConnEntry;

/// How often the counters are reconciled with the connection table.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// How often the candidates of services with many reals are refreshed.
pub const CANDIDATES_EVERY: Duration = Duration::from_millis(100);

/// A real's live connections, as counted from the connection table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// ESTABLISHED (IPVS's ActiveConn).
    pub active: u64,
    /// Every other state (IPVS's InActConn).
    pub inactive: u64,
}

impl Counts {
    /// The load the schedulers see: the data plane's counts less the stale entries.
    pub fn from_load(load: &RealLoad) -> Self {
        let (active, inactive) = load.live();
        Self { active, inactive }
    }
}

/// Counts the live entries per real index: not expired, and used (stamped) no earlier than
/// `up_since(real)`, the clock second at which the real last became usable (`None`: count
/// none of its entries).
pub fn recount<K>(
    entries: impl IntoIterator<Item = ConnEntry<K>>,
    settings: &Settings,
    up_since: impl Fn(u32) -> Option<u32>,
) -> BTreeMap<u32, Counts> {
    let mut counts = BTreeMap::new();
    recount_into(&mut counts, entries, settings, up_since);
    counts
}

/// [`recount`] adding to `counts`, so that the entries of both connection tables (a real's
/// flows are all of its family, but a table of each family is read) end up in one count.
pub fn recount_into<K>(
    counts: &mut BTreeMap<u32, Counts>,
    entries: impl IntoIterator<Item = ConnEntry<K>>,
    settings: &Settings,
    up_since: impl Fn(u32) -> Option<u32>,
) {
    tally_into(counts, entries, settings, up_since, true);
}

/// Counts the stale entries per real index: expired, or not used since `up_since(real)`, the
/// clock second at which the real last became usable (`None`: none of its entries).
pub fn stale<K>(
    entries: impl IntoIterator<Item = ConnEntry<K>>,
    settings: &Settings,
    up_since: impl Fn(u32) -> Option<u32>,
) -> BTreeMap<u32, Counts> {
    let mut counts = BTreeMap::new();
    stale_into(&mut counts, entries, settings, up_since);
    counts
}

/// [`stale`] adding to `counts` (for the second connection table).
pub fn stale_into<K>(
    counts: &mut BTreeMap<u32, Counts>,
    entries: impl IntoIterator<Item = ConnEntry<K>>,
    settings: &Settings,
    up_since: impl Fn(u32) -> Option<u32>,
) {
    tally_into(counts, entries, settings, up_since, false);
}

/// Adds to `counts` the entries that are live (`live`), or stale (`!live`), by real and
/// class. An entry is live when it has not expired and was used no earlier than the second
/// its real last became usable (`up_since`); entries of reals without one are in neither.
fn tally_into<K>(
    counts: &mut BTreeMap<u32, Counts>,
    entries: impl IntoIterator<Item = ConnEntry<K>>,
    settings: &Settings,
    up_since: impl Fn(u32) -> Option<u32>,
    live: bool,
) {
    for e in entries {
        let Some(since) = up_since(e.conn.real) else {
            continue;
        };
        // Ages rather than stamps, so that the comparison survives the clock wrapping.
        let is_live = settings.conn_live(e.conn.state, e.stamp)
            && settings.idle(e.stamp) <= settings.idle(since);
        if is_live != live {
            continue;
        }
        let c = counts.entry(e.conn.real).or_default();
        if ConnState::from_u8(e.conn.state).is_active() {
            c.active += 1;
        } else {
            c.inactive += 1;
        }
    }
}

/// The `LC_CANDIDATES` least loaded of `eligible` reals (index, weight > 0) under `sched`
/// (`SCHED_*`), by the data plane's cost ([`LcCost`]); for `nq`, idle reals come first. Ties go
/// to the lower index. Unused slots are [`NO_REAL`].
pub fn least_loaded(
    sched: u32,
    eligible: &[(u32, u32)],
    load: impl Fn(u32) -> Counts,
) -> Candidates {
    if by_weight(sched) {
        return heaviest(sched, eligible, load);
    }
    let mut ranked: Vec<(bool, LcCost, u32)> = eligible
        .iter()
        .filter(|&&(_, w)| w > 0)
        .map(|&(index, weight)| {
            let c = load(index);
            let cost = LcCost::of(sched, c.active, c.inactive, weight);
            (!idle_first(sched, c.active), cost, index)
        })
        .collect();
    ranked.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.compare(&b.1))
            .then_with(|| a.2.cmp(&b.2))
    });
    let mut out = [NO_REAL; LC_CANDIDATES];
    for (slot, r) in out.iter_mut().zip(&ranked) {
        *slot = r.2;
    }
    out
}

/// The `LC_CANDIDATES` candidates of an `fo` or `ovf` service ([`weight_choice`]): the heaviest
/// reals, for `ovf` those whose active connections do not exceed their weight first. Ties go to
/// the lower index.
fn heaviest(sched: u32, eligible: &[(u32, u32)], load: impl Fn(u32) -> Counts) -> Candidates {
    let mut ranked: Vec<(bool, std::cmp::Reverse<u32>, u32)> = eligible
        .iter()
        .filter(|&&(_, w)| w > 0)
        .map(|&(index, weight)| {
            let full = sched == SCHED_OVF && load(index).active > u64::from(weight);
            (full, std::cmp::Reverse(weight), index)
        })
        .collect();
    ranked.sort();
    let mut out = [NO_REAL; LC_CANDIDATES];
    for (slot, r) in out.iter_mut().zip(&ranked) {
        *slot = r.2;
    }
    out
}

/// The real the data plane picks for a new flow with schedule hash `hash` among `candidates`
/// ([`least_conn_choice`], the program's own scan): `usable(index)` gives the weight of a
/// candidate that is up and belongs to the service, `load(index)` its counts.
pub fn pick(
    sched: u32,
    candidates: &Candidates,
    hash: u32,
    usable: impl Fn(u32) -> Option<u32>,
    load: impl Fn(u32) -> Counts,
) -> Option<u32> {
    let real = |index| {
        let weight = usable(index)?;
        let c = load(index);
        Some((index, weight, (c.active, c.inactive)))
    };
    if sched == SCHED_TWOS {
        // The program draws two random numbers per candidate; the same draws taken from the
        // flow's hash give one choice it could make.
        let mut twos = Twos::new();
        for (k, &index) in candidates.iter().enumerate() {
            if let Some((_, weight, load)) = real(index) {
                let r = hash.rotate_left(k as u32 * 4);
                twos.step(index, weight, load, r, r.rotate_left(16));
            }
        }
        let choice = twos.choice();
        (choice != NO_REAL).then_some(choice)
    } else if by_weight(sched) {
        weight_choice(sched, candidates, real)
    } else {
        least_conn_choice(sched, candidates, hash, real)
    }
}

#[cfg(test)]
mod tests {
    use lb_common::{Conn, Flow4Key, Flow6Key, SCHED_LC, SCHED_NQ, SCHED_SED, SCHED_WLC};

    use crate::model::Conn6Entry;

    use super::*;

    fn entry(port: u16, real: u32, state: ConnState, stamp: u32) -> ConnEntry {
        ConnEntry {
            key: Flow4Key::from_parts([10, 0, 0, 1], port, [10, 0, 0, 100], 80, 6),
            conn: Conn {
                real,
                state: state as u8,
                _pad: [0; 3],
            },
            stamp,
        }
    }

    fn settings(clock: u32) -> Settings {
        Settings {
            clock,
            ..Settings::new([0; 6])
        }
    }

    #[test]
    fn recount_splits_active_and_inactive_and_skips_expired() {
        let s = settings(1000);
        let es = s.timeout(ConnState::Established as u8);
        let entries = [
            entry(1, 5, ConnState::Established, 1000),
            entry(2, 5, ConnState::Established, 1000 - es),
            entry(3, 5, ConnState::Established, 1000 - es - 1), // expired
            entry(4, 5, ConnState::SynRecv, 999),
            entry(5, 5, ConnState::FinWait, 990),
            entry(6, 6, ConnState::Close, 1000),
        ];
        let counts = recount(entries, &s, |_| Some(0));
        assert_eq!(
            counts[&5],
            Counts {
                active: 2,
                inactive: 2
            }
        );
        assert_eq!(
            counts[&6],
            Counts {
                active: 0,
                inactive: 1
            }
        );
    }

    fn entry6(port: u16, real: u32, state: ConnState, stamp: u32) -> Conn6Entry {
        let client = "2001:db8:1::1".parse::<std::net::Ipv6Addr>().unwrap();
        let vip = "2001:db8::100".parse::<std::net::Ipv6Addr>().unwrap();
        let e = entry(port, real, state, stamp);
        ConnEntry {
            key: Flow6Key::from_parts(client.octets(), port, vip.octets(), 443, 6),
            conn: e.conn,
            stamp: e.stamp,
        }
    }

    #[test]
    fn both_tables_add_up_in_one_count() {
        let s = settings(1000);
        let es = s.timeout(ConnState::Established as u8);
        let v4 = [
            entry(1, 5, ConnState::Established, 1000),
            entry(2, 7, ConnState::SynRecv, 1000),
        ];
        let v6 = [
            entry6(1, 7, ConnState::Established, 999),
            entry6(2, 7, ConnState::Established, 1000 - es - 1), // expired
            entry6(3, 7, ConnState::FinWait, 1000),
            entry6(4, 8, ConnState::Established, 900), // before real 8 came back
        ];
        let up_since = |r| Some(if r == 8 { 950 } else { 0 });
        let mut counts = recount(v4, &s, up_since);
        recount_into(&mut counts, v6, &s, up_since);
        assert_eq!(
            counts[&5],
            Counts {
                active: 1,
                inactive: 0
            }
        );
        assert_eq!(
            counts[&7],
            Counts {
                active: 1,
                inactive: 2
            }
        );
        assert!(!counts.contains_key(&8));
    }

    #[test]
    fn entries_older_than_the_reals_return_are_not_counted() {
        let s = settings(1000);
        let entries = [
            entry(1, 5, ConnState::Established, 900), // lost while real 5 was down
            entry(2, 5, ConnState::Established, 950), // used since it came back
            entry(3, 6, ConnState::Established, 900),
        ];
        let counts = recount(entries, &s, |r| match r {
            5 => Some(950),
            _ => None,
        });
        assert_eq!(counts[&5].active, 1);
        assert!(!counts.contains_key(&6), "an unknown real counts nothing");
    }

    #[test]
    fn recount_survives_the_clock_wrapping() {
        let s = settings(5);
        let entries = [
            entry(1, 5, ConnState::Established, u32::MAX - 2),
            entry(2, 5, ConnState::Established, u32::MAX - 20),
        ];
        let counts = recount(entries, &s, |_| Some(u32::MAX - 10));
        assert_eq!(counts[&5].active, 1);
    }

    #[test]
    fn stale_entries_are_the_expired_and_the_older_than_the_reals_return() {
        let s = settings(1000);
        let es = s.timeout(ConnState::Established as u8);
        let entries = [
            entry(1, 5, ConnState::Established, 1000),          // live
            entry(2, 5, ConnState::Established, 1000 - es - 1), // expired
            entry(3, 5, ConnState::SynRecv, 1000 - 200),        // expired (SYN_RECV: 60 s)
            entry(4, 6, ConnState::Established, 900),           // before real 6 came back
            entry(5, 6, ConnState::Established, 960),           // used since
            entry(6, 7, ConnState::Established, 900),           // unknown real
        ];
        let since = |r| match r {
            5 => Some(0),
            6 => Some(950),
            _ => None,
        };
        let counts = stale(entries, &s, since);
        assert_eq!(
            counts[&5],
            Counts {
                active: 1,
                inactive: 1
            }
        );
        assert_eq!(counts[&6].active, 1);
        assert!(!counts.contains_key(&7));
        // Stale and live entries partition the entries of known reals.
        let live = recount(entries, &s, since);
        assert_eq!(live[&5].active + counts[&5].active, 2);
        assert_eq!(live[&6].active + counts[&6].active, 2);
    }

    #[test]
    fn the_load_leaves_stale_entries_out() {
        let load = RealLoad {
            active: 10,
            inactive: 4,
            stale_active: 3,
            stale_inactive: 6,
            ..RealLoad::default()
        };
        assert_eq!(
            Counts::from_load(&load),
            Counts {
                active: 7,
                inactive: 0
            }
        );
    }

    fn counts(active: u64, inactive: u64) -> Counts {
        Counts { active, inactive }
    }

    #[test]
    fn least_loaded_orders_by_each_schedulers_metric() {
        let loads: BTreeMap<u32, Counts> = [
            (1, counts(10, 0)),
            (2, counts(4, 500)),
            (3, counts(6, 0)),
            (4, counts(0, 3)),
        ]
        .into();
        let load = |i| loads[&i];
        let weights = [(1, 4), (2, 1), (3, 1), (4, 1)];
        // lc: 2560, 1524, 1536, 3.
        assert_eq!(least_loaded(SCHED_LC, &weights, load)[..4], [4, 2, 3, 1]);
        // wlc: 640, 1524, 1536, 3.
        assert_eq!(least_loaded(SCHED_WLC, &weights, load)[..4], [4, 1, 2, 3]);
        // sed: 11/4, 5, 7, 1.
        assert_eq!(least_loaded(SCHED_SED, &weights, load)[..4], [4, 1, 2, 3]);
        // nq: the idle real first, then sed.
        let loads2: BTreeMap<u32, Counts> =
            [(1, counts(0, 9)), (2, counts(1, 0)), (3, counts(0, 0))].into();
        assert_eq!(
            least_loaded(SCHED_NQ, &[(1, 1), (2, 9), (3, 1)], |i| loads2[&i])[..3],
            [1, 3, 2]
        );
    }

    #[test]
    fn pick_scans_from_the_hash_and_keeps_the_first_of_equals() {
        let cands = [4, 5, 6, NO_REAL, NO_REAL, NO_REAL, NO_REAL, NO_REAL];
        let idle = |_| counts(0, 0);
        let up = |_| Some(1);
        assert_eq!(pick(SCHED_WLC, &cands, 0, up, idle), Some(4));
        assert_eq!(pick(SCHED_WLC, &cands, 1, up, idle), Some(5));
        assert_eq!(pick(SCHED_WLC, &cands, 2, up, idle), Some(6));
        assert_eq!(
            pick(SCHED_WLC, &cands, 3, up, idle),
            Some(4),
            "wraps around"
        );
        let busy = |i| counts(if i == 6 { 0 } else { 1 }, 0);
        assert_eq!(pick(SCHED_LC, &cands, 0, up, busy), Some(6));
        // Down or drained candidates are skipped; none usable: no pick.
        assert_eq!(
            pick(SCHED_LC, &cands, 0, |i| (i == 5).then_some(1), idle),
            Some(5)
        );
        assert_eq!(
            pick(SCHED_LC, &cands, 0, |i| (i == 5).then_some(0), idle),
            None
        );
        // nq stops at the first idle real in scan order.
        let loads = |i| counts(if i == 4 { 1 } else { 0 }, 0);
        assert_eq!(pick(SCHED_NQ, &cands, 0, |_| Some(100), loads), Some(5));
    }

    #[test]
    fn least_loaded_keeps_the_best_eight_and_skips_weight_zero() {
        let eligible: Vec<(u32, u32)> = (1..=20).map(|i| (i, if i == 3 { 0 } else { 1 })).collect();
        // Real i has 20 - i active connections: the highest indices are the least loaded.
        let c = least_loaded(SCHED_WLC, &eligible, |i| counts(u64::from(20 - i), 0));
        assert_eq!(c, [20, 19, 18, 17, 16, 15, 14, 13]);
        let few = least_loaded(SCHED_LC, &[(7, 1), (8, 0)], |_| counts(0, 0));
        assert_eq!(
            few,
            [
                7, NO_REAL, NO_REAL, NO_REAL, NO_REAL, NO_REAL, NO_REAL, NO_REAL
            ]
        );
    }
}
