//! What `lbadm` lists and `/metrics` exports, read from the same maps the data plane uses:
//! counters, rates (IPVS's estimator), connection counts and entries from the connection tables
//! (IPv4 and IPv6), health from the checkers, and `--which`.
//!
//! The snapshot and its listings are here; the rate estimator is in `rates`, `--which` in
//! `which`.

mod rates;
mod which;

pub use rates::{RATE_INTERVAL, RateEstimator, sample};
pub use which::{WhichError, which, which_installed};

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use lb_common::{ConnState, Settings};

use self::rates::counters;
use crate::{
    config::Config,
    control::{
        ConnInfo, Forward, GlobalInfo, HealthInfo, PersistInfo, RealInfo, ServiceInfo, Snapshot,
    },
    dataplane::Dataplane,
    health::{CheckKey, CheckStatus},
    model::{
        ConnEntry, DesiredState, ListedFlow, PersistKey, Protocol, RealKey, ServiceKey,
        TemplateEntry,
    },
    reconcile::plan::Installed,
    schedule::load,
};

/// The agent's state a snapshot is read from.
pub struct View<'a> {
    /// Running configuration.
    pub config: &'a Config,
    /// What the maps hold.
    pub installed: &'a Installed,
    /// What the data plane should do (effective weights, sorry servers).
    pub desired: &'a DesiredState,
    /// The maps.
    pub dp: &'a Dataplane,
    /// Checkers' state.
    pub health: &'a BTreeMap<CheckKey, CheckStatus>,
    /// The checkers' clock (for `since`).
    pub health_clock: Duration,
    /// Resolved MACs.
    pub macs: &'a BTreeMap<IpAddr, [u8; 6]>,
    /// Rates.
    pub rates: &'a RateEstimator,
    /// Reloads applied and rejected.
    pub reloads: (u64, u64),
    /// Which services hold quorum (a service not in it has not been evaluated yet: it does).
    pub quorum: &'a BTreeMap<ServiceKey, bool>,
}

/// Reads the state for `lbadm`; the connection entries only when `with_conns`.
pub fn snapshot(v: &View, with_conns: bool) -> Snapshot {
    let settings = v.dp.settings();
    let now = settings.clock;
    // Real index -> (service, real), for everything the maps still reference.
    let mut by_index: BTreeMap<u32, (ServiceKey, RealKey)> = BTreeMap::new();
    let mut by_id: BTreeMap<u32, ServiceKey> = BTreeMap::new();
    for (key, svc) in &v.installed.services {
        by_id.insert(svc.id, *key);
        for (rk, r) in svc.reals.iter().chain(svc.retiring.iter()) {
            by_index.insert(r.index, (*key, *rk));
        }
    }

    // ActiveConn / InActConn: what the least-connection schedulers count (entries a real lost
    // while it was down are listed by -c but not counted), over both connection tables.
    let entries4 = v.dp.conns4();
    let entries6 = v.dp.conns6();
    let up_since = |index| {
        by_index.get(&index)?;
        v.dp.real_load(index).ok().map(|l| l.up_since)
    };
    let mut active = load::recount(entries4.iter().copied(), &settings, up_since);
    load::recount_into(&mut active, entries6.iter().copied(), &settings, up_since);
    let mut conns = Vec::new();
    let listing = with_conns.then_some(&mut conns);
    let mut used = listed_conns(&entries4, &settings, &by_index, listing);
    let listing = with_conns.then_some(&mut conns);
    used += listed_conns(&entries6, &settings, &by_index, listing);
    if with_conns {
        let entry = |id: &u32| {
            let key = by_id.get(id)?;
            let inst = v.installed.services.get(key)?;
            Some((*key, inst.params.entry(inst.table)))
        };
        listed_templates(v.dp.persist4(), now, entry, &by_index, &mut conns);
        listed_templates(v.dp.persist6(), now, entry, &by_index, &mut conns);
        conns.sort_by_key(|c| (c.virtual_addr, c.client, c.real));
    }

    let mut services: Vec<ServiceInfo> = Vec::new();
    for vs in &v.config.virtual_servers {
        let (Some(inst), Some(spec)) = (
            v.installed.services.get(&vs.key),
            v.desired.services.get(&vs.key),
        ) else {
            continue;
        };
        let mut reals = Vec::new();
        for (rk, rs) in &spec.reals {
            let Some(installed) = inst.reals.get(rk) else {
                continue;
            };
            let key = (vs.key, *rk);
            // A group's members are checked through its leader, on the leader's port.
            let checked = match &vs.group {
                Some(g) => (
                    g.leader,
                    RealKey {
                        addr: rk.addr,
                        port: g.leader.port,
                    },
                ),
                None => (vs.key, *rk),
            };
            let (checker, status) = real_checks(v.health, checked.0, checked.1);
            let counts = active.get(&installed.index).copied().unwrap_or_default();
            let (act, inact) = (counts.active, counts.inactive);
            let sorry =
                vs.sorry_server == Some(*rk) && !vs.real_servers.iter().any(|r| r.key == *rk);
            let state = if !rs.is_up() {
                "down"
            } else if rs.weight == 0 {
                "draining"
            } else {
                "up"
            };
            let (last_result, reason) = result_and_reason(status, v.macs.contains_key(&rk.addr));
            reals.push(RealInfo {
                key: *rk,
                forward: Forward::Route,
                weight: rs.weight,
                active_conns: act,
                inactive_conns: inact,
                stats: counters(v.dp, None, Some(installed.index)),
                rate: v.rates.real(&key),
                health: HealthInfo {
                    checker,
                    state: state.into(),
                    last_result,
                    reason,
                    latency_ms: status
                        .and_then(|s| s.latency)
                        .map(|d| d.as_secs_f64() * 1000.0),
                    since_secs: status.map(|s| v.health_clock.saturating_sub(s.since).as_secs()),
                },
                sorry_server: sorry,
            });
        }
        services.push(ServiceInfo {
            key: vs.key,
            scheduler: vs.lb_algo.name().into(),
            flags: vs.lb_flags.names(vs.lb_algo.name()),
            persistence: vs.persistence.map(|p| PersistInfo {
                timeout: p.timeout,
                netmask: p.granularity_text(vs.key.vip),
            }),
            stats: counters(v.dp, Some(inst.id), None),
            rate: v.rates.service(&vs.key),
            reals,
            sorry_server_active: vs.sorry_server.is_some_and(|s| spec.reals.contains_key(&s))
                && !vs
                    .real_servers
                    .iter()
                    .any(|r| Some(r.key) == vs.sorry_server),
            quorum_held: v.quorum.get(&vs.key).copied().unwrap_or(true),
        });
    }
    services.sort_by_key(|s| s.key);

    Snapshot {
        conn_table_size: (v.dp.limits().conn_sets() + v.dp.limits().conn6_sets())
            * lb_common::CONN_WAYS as u32,
        timeouts: v.config.timeouts,
        services,
        conns: with_conns.then_some(conns),
        global: GlobalInfo {
            dataplane: v.dp.global_stats().unwrap_or_default(),
            conn_table_used: used,
            reloads_ok: v.reloads.0,
            reloads_failed: v.reloads.1,
            checks_run: v.health.values().map(|s| s.checks).sum(),
            check_latency_ms_sum: v
                .health
                .values()
                .map(|s| s.latency_total.as_secs_f64() * 1000.0)
                .sum(),
        },
        // Director sync is the agent's own, not the maps'; it fills this in.
        sync: None,
    }
}

/// Counts the live entries of one connection table (returned) and, into `out`, lists those of
/// reals the maps still reference (`-c`).
fn listed_conns<K: ListedFlow>(
    entries: &[ConnEntry<K>],
    settings: &Settings,
    by_index: &BTreeMap<u32, (ServiceKey, RealKey)>,
    mut out: Option<&mut Vec<ConnInfo>>,
) -> u64 {
    let mut used = 0;
    for e in entries {
        if !settings.conn_live(e.conn.state, e.stamp) {
            continue;
        }
        let (idle, timeout) = (settings.idle(e.stamp), settings.timeout(e.conn.state));
        used += 1;
        let (Some(out), Some((_, rk))) = (out.as_deref_mut(), by_index.get(&e.conn.real)) else {
            continue;
        };
        out.push(ConnInfo {
            proto: if e.key.proto() == lb_common::proto::UDP {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            expire_secs: timeout - idle,
            state: ConnState::from_u8(e.conn.state).name().into(),
            client: e.key.client_socket(),
            virtual_addr: e.key.virtual_addr(),
            real: SocketAddr::new(rk.addr, rk.port),
        });
    }
    used
}

/// Lists the live persistence templates of one table into `out`, as IPVS shows them: state
/// NONE, client port 0. `service(id)` gives a service id's key and map entry.
fn listed_templates<K: PersistKey>(
    templates: Vec<TemplateEntry<K>>,
    now: u32,
    service: impl Fn(&u32) -> Option<(ServiceKey, lb_common::Service)>,
    by_index: &BTreeMap<u32, (ServiceKey, RealKey)>,
    out: &mut Vec<ConnInfo>,
) {
    for t in templates {
        let Some((key, entry)) = service(&t.key.service_id()) else {
            continue;
        };
        if !entry.template_live(now, t.stamp) {
            continue;
        }
        let (idle, timeout) = (now.wrapping_sub(t.stamp), entry.persist_timeout);
        let Some((_, rk)) = by_index.get(&t.template.real) else {
            continue;
        };
        out.push(ConnInfo {
            proto: key.proto,
            expire_secs: timeout - idle,
            state: ConnState::None.name().into(),
            client: SocketAddr::new(t.key.client(), 0),
            virtual_addr: SocketAddr::new(key.vip, key.port),
            real: SocketAddr::new(rk.addr, rk.port),
        });
    }
}

/// The `Result` and `Reason` health columns of a real: what the last check saw when it
/// passed (`connected`, `HTTP 200`), else `failed`; and why the real is or may go down: no
/// neighbour entry for it, or what the failed check saw (`connect refused`). The detail of a
/// failure is in one column only.
/// The checkers of `real` in `service` as the listing shows them: their names joined with `+`
/// (`"none"` without any), and the status shown, the first that is down, else the first.
fn real_checks(
    health: &BTreeMap<CheckKey, CheckStatus>,
    service: ServiceKey,
    real: RealKey,
) -> (String, Option<&CheckStatus>) {
    let statuses: Vec<&CheckStatus> = health
        .range((service, real, 0)..=(service, real, usize::MAX))
        .map(|(_, s)| s)
        .collect();
    let shown = statuses
        .iter()
        .find(|s| !s.up)
        .or(statuses.first())
        .copied();
    let names = if statuses.is_empty() {
        "none".to_owned()
    } else {
        let names: Vec<&str> = statuses.iter().map(|s| s.checker).collect();
        names.join("+")
    };
    (names, shown)
}

fn result_and_reason(
    status: Option<&CheckStatus>,
    has_neighbour: bool,
) -> (Option<String>, Option<String>) {
    let last = status.and_then(|s| s.last.as_ref());
    let result = last.map(|o| {
        if o.ok {
            o.detail.clone()
        } else {
            "failed".to_owned()
        }
    });
    let reason = if !has_neighbour {
        Some("no neighbour".to_owned())
    } else {
        last.filter(|o| !o.ok).map(|o| o.detail.clone())
    };
    (result, reason)
}

#[cfg(test)]
mod tests;
