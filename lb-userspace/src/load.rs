//! Connection counts for the least-connection schedulers (`lc`, `wlc`, `sed`, `nq`).
//!
//! The data plane keeps each real's counts in `REAL_LOAD` as it goes (see
//! [`lb_common::RealLoad`]). Two things it cannot see make them drift: entries that expire
//! without a last packet (a client that vanished, a UDP flow that ended), and connections a
//! real lost while it was down (its clients got resets straight from the real, which the
//! director never sees). So the agent recounts the connection tables (IPv4 and IPv6) every
//! [`RECONCILE_EVERY`], counting an entry only if it has not expired and was used since its real
//! last became usable, and moves each real's counters to the recount ([`reconcile`]).
//!
//! A service with more eligible reals than the data plane compares per new flow
//! ([`LC_CANDIDATES`]) gets its least loaded ones written as candidates every
//! [`CANDIDATES_EVERY`] ([`least_loaded`]).

use std::{collections::BTreeMap, time::Duration};

use lb_common::{
    Candidates, ConnState, LC_CANDIDATES, NO_REAL, RealLoad, SCHED_LC, SCHED_NQ, SCHED_WLC,
    Settings,
};

use crate::dataplane::{ConnEntry, Dataplane, DataplaneError};

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
    /// The data plane's counters as counts (negative ones read as 0).
    pub fn from_load(load: &RealLoad) -> Self {
        Self {
            active: load.active.max(0) as u64,
            inactive: load.inactive.max(0) as u64,
        }
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
    let now = settings.clock;
    for e in entries {
        let idle = now.wrapping_sub(e.stamp);
        if idle > settings.timeout(e.conn.state) {
            continue;
        }
        let Some(since) = up_since(e.conn.real) else {
            continue;
        };
        // Ages rather than stamps, so that the comparison survives the clock wrapping.
        if idle > now.wrapping_sub(since) {
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

/// What to add to a counter that read `before` when a recount started and `after` when it
/// ended, so that it holds the recount's `truth`.
///
/// Changes the data plane made during the recount are in `after - before`; those made to sets
/// the recount had already read are missing from `truth`, the others are in it. Taking the
/// midpoint of the two readings splits the difference: the result is off by half the changes
/// made during the recount at most, and by nothing on average when changes are spread evenly
/// over it. Whatever is left is corrected by the next recount.
pub fn correction(before: i64, after: i64, truth: u64) -> i64 {
    let mid = (i128::from(before) + i128::from(after)).div_euclid(2);
    (i128::from(truth) - mid) as i64
}

/// Recounts both connection tables and corrects the counters of `reals` (indices) to them.
/// Returns the corrections made (index, delta), for logging and tests.
pub fn reconcile(
    dp: &mut Dataplane,
    reals: &[u32],
) -> Result<Vec<(u32, RealLoad)>, DataplaneError> {
    let before = reals
        .iter()
        .map(|&i| Ok((i, dp.real_load(i)?)))
        .collect::<Result<BTreeMap<u32, RealLoad>, DataplaneError>>()?;
    let settings = dp.settings();
    let up_since = |i| before.get(&i).map(|l: &RealLoad| l.up_since);
    let mut truth = recount(dp.conns4(), &settings, up_since);
    recount_into(&mut truth, dp.conns6(), &settings, up_since);
    let mut made = Vec::new();
    for (&index, b) in &before {
        let a = dp.real_load(index)?;
        let t = truth.get(&index).copied().unwrap_or_default();
        let delta = RealLoad {
            active: correction(b.active, a.active, t.active),
            inactive: correction(b.inactive, a.inactive, t.inactive),
            ..RealLoad::default()
        };
        if delta.active != 0 || delta.inactive != 0 {
            dp.adjust_real_load(index, delta)?;
            made.push((index, delta));
        }
    }
    Ok(made)
}

/// The `LC_CANDIDATES` least loaded of `eligible` reals (index, weight > 0) under `sched`
/// (`SCHED_*`), with the data plane's metric: `lc` by `active x 256 + inactive`, `wlc` by that over the
/// weight, `sed` by `(active + 1) / weight`, `nq` idle reals first, then as `sed`. Ties go to
/// the lower index. Unused slots are [`NO_REAL`].
pub fn least_loaded(
    sched: u32,
    eligible: &[(u32, u32)],
    load: impl Fn(u32) -> Counts,
) -> Candidates {
    let mut ranked: Vec<(bool, u128, u128, u32)> = eligible
        .iter()
        .filter(|&&(_, w)| w > 0)
        .map(|&(index, weight)| {
            let c = load(index);
            let (cost, per) = match sched {
                SCHED_LC => (c.active * 256 + c.inactive, 1),
                SCHED_WLC => (c.active * 256 + c.inactive, u64::from(weight)),
                _ => (c.active + 1, u64::from(weight)),
            };
            let busy = sched == SCHED_NQ && c.active > 0;
            (busy, u128::from(cost), u128::from(per), index)
        })
        .collect();
    // cost_a / per_a < cost_b / per_b  <=>  cost_a * per_b < cost_b * per_a (pers are > 0).
    ranked.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| (a.1 * b.2).cmp(&(b.1 * a.2)))
            .then_with(|| a.3.cmp(&b.3))
    });
    let mut out = [NO_REAL; LC_CANDIDATES];
    for (slot, r) in out.iter_mut().zip(&ranked) {
        *slot = r.3;
    }
    out
}

/// The real the data plane picks for a new flow with schedule hash `hash` among `candidates`
/// (the same scan, in the same order): `usable(index)` gives the weight of a candidate that is
/// up and belongs to the service, `load(index)` its counts.
pub fn pick(
    sched: u32,
    candidates: &Candidates,
    hash: u32,
    usable: impl Fn(u32) -> Option<u32>,
    load: impl Fn(u32) -> Counts,
) -> Option<u32> {
    let mut best: Option<(u32, u128, u128)> = None;
    for i in 0..LC_CANDIDATES {
        let index = candidates[(hash as usize).wrapping_add(i) & (LC_CANDIDATES - 1)];
        if index == NO_REAL {
            continue;
        }
        let Some(weight) = usable(index).filter(|&w| w > 0) else {
            continue;
        };
        let c = load(index);
        if sched == SCHED_NQ && c.active == 0 {
            return Some(index);
        }
        let (cost, per) = match sched {
            SCHED_LC => (c.active * 256 + c.inactive, 1),
            SCHED_WLC => (c.active * 256 + c.inactive, u64::from(weight)),
            _ => (c.active + 1, u64::from(weight)),
        };
        let (cost, per) = (u128::from(cost), u128::from(per));
        if best.is_none_or(|(_, bc, bp)| cost * bp < bc * per) {
            best = Some((index, cost, per));
        }
    }
    best.map(|(index, _, _)| index)
}

#[cfg(test)]
mod tests {
    use lb_common::{Conn, Flow4Key, Flow6Key, SCHED_SED};

    use crate::dataplane::Conn6Entry;

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
    fn correction_lands_on_the_truth_when_nothing_changed() {
        assert_eq!(correction(40, 40, 30), -10);
        assert_eq!(correction(-3, -3, 0), 3);
        assert_eq!(correction(0, 0, 7), 7);
        // Four connections opened during the recount: half of them are assumed counted.
        assert_eq!(correction(40, 44, 32), -10);
        assert_eq!(correction(i64::MAX, i64::MAX, 0), -i64::MAX);
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
