//! What `lbadm` lists and `/metrics` exports, read from the same maps the data plane uses:
//! counters, rates (IPVS's estimator), connection counts and entries from the connection table,
//! health from the checkers, and `--which`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use lb_common::{
    ConnState, Flow4Key, Persist4Key, REAL_UP, SVC_F_HASH_SRC, SVC_F_PERSIST, source_hash4,
    table_slot,
};

use crate::{
    config::Config,
    control::{
        ConnInfo, Counters, Forward, GlobalInfo, HealthInfo, PersistInfo, Rates, RealInfo,
        ServiceInfo, Snapshot, WhichAnswer,
    },
    dataplane::Dataplane,
    health::{CheckKey, CheckStatus},
    plan::Installed,
    state::{DesiredState, Protocol, RealKey, ServiceKey},
};

/// IPVS's rate estimator: counters sampled every two seconds, each rate smoothed as
/// `avg += (sample - avg) / 4`.
#[derive(Clone, Debug, Default)]
pub struct RateEstimator {
    services: BTreeMap<ServiceKey, (Counters, Averages)>,
    reals: BTreeMap<(ServiceKey, RealKey), (Counters, Averages)>,
}

/// Smoothed rates, kept unrounded (rounding at every step would stall short of the rate).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Averages([f64; 5]);

impl Averages {
    fn rates(&self) -> Rates {
        let r = |x: f64| x.round().max(0.0) as u64;
        let [cps, in_pps, out_pps, in_bps, out_bps] = self.0;
        Rates {
            cps: r(cps),
            in_pps: r(in_pps),
            out_pps: r(out_pps),
            in_bps: r(in_bps),
            out_bps: r(out_bps),
        }
    }
}

/// How often the agent samples counters for rates.
pub const RATE_INTERVAL: Duration = Duration::from_secs(2);

fn smooth(old: &Averages, prev: &Counters, now: &Counters, secs: f64) -> Averages {
    let pairs = [
        (prev.conns, now.conns),
        (prev.in_pkts, now.in_pkts),
        (prev.out_pkts, now.out_pkts),
        (prev.in_bytes, now.in_bytes),
        (prev.out_bytes, now.out_bytes),
    ];
    let mut out = old.0;
    for (avg, (a, b)) in out.iter_mut().zip(pairs) {
        let sample = b.saturating_sub(a) as f64 / secs;
        *avg += (sample - *avg) / 4.0;
    }
    Averages(out)
}

impl RateEstimator {
    /// Takes a sample of every counter, `elapsed` after the previous one.
    pub fn sample(
        &mut self,
        elapsed: Duration,
        services: BTreeMap<ServiceKey, Counters>,
        reals: BTreeMap<(ServiceKey, RealKey), Counters>,
    ) {
        let secs = elapsed.as_secs_f64().max(0.001);
        let step = |old: Option<&(Counters, Averages)>, now: Counters| match old {
            Some((prev, avg)) => {
                let next = smooth(avg, prev, &now, secs);
                (now, next)
            }
            None => (now, Averages::default()),
        };
        self.services = services
            .into_iter()
            .map(|(k, c)| (k, step(self.services.get(&k), c)))
            .collect();
        self.reals = reals
            .into_iter()
            .map(|(k, c)| (k, step(self.reals.get(&k), c)))
            .collect();
    }

    /// Forgets a service's (or every) history, after its counters were zeroed.
    pub fn reset(&mut self, service: Option<&ServiceKey>) {
        match service {
            Some(s) => {
                self.services.remove(s);
                self.reals.retain(|(k, _), _| k != s);
            }
            None => {
                self.services.clear();
                self.reals.clear();
            }
        }
    }

    fn service(&self, key: &ServiceKey) -> Rates {
        self.services
            .get(key)
            .map(|(_, a)| a.rates())
            .unwrap_or_default()
    }

    fn real(&self, key: &(ServiceKey, RealKey)) -> Rates {
        self.reals
            .get(key)
            .map(|(_, a)| a.rates())
            .unwrap_or_default()
    }
}

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
}

fn counters(dp: &Dataplane, service: Option<u32>, real: Option<u32>) -> Counters {
    let stats = match (service, real) {
        (Some(id), _) => dp.service_stats(id),
        (_, Some(index)) => dp.real_stats(index),
        _ => return Counters::default(),
    }
    .unwrap_or_default();
    Counters {
        conns: stats.conns,
        in_pkts: stats.packets,
        out_pkts: 0,
        in_bytes: stats.bytes,
        out_bytes: 0,
    }
}

/// Current counters of every installed service and real (for the rate estimator).
pub fn sample(
    dp: &Dataplane,
    installed: &Installed,
) -> (
    BTreeMap<ServiceKey, Counters>,
    BTreeMap<(ServiceKey, RealKey), Counters>,
) {
    let mut services = BTreeMap::new();
    let mut reals = BTreeMap::new();
    for (key, svc) in &installed.services {
        services.insert(*key, counters(dp, Some(svc.id), None));
        for (rk, r) in &svc.reals {
            reals.insert((*key, *rk), counters(dp, None, Some(r.index)));
        }
    }
    (services, reals)
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

    let entries = v.dp.conns4();
    // ActiveConn / InActConn: what the least-connection schedulers count (entries a real lost
    // while it was down are listed by -c but not counted).
    let active = crate::load::recount(entries.iter().copied(), &settings, |index| {
        by_index.get(&index)?;
        v.dp.real_load(index).ok().map(|l| l.up_since)
    });
    let mut conns = Vec::new();
    let mut used = 0u64;
    for e in entries {
        let idle = now.wrapping_sub(e.stamp);
        let timeout = settings.timeout(e.conn.state);
        if idle > timeout {
            continue;
        }
        used += 1;
        let state = ConnState::from_u8(e.conn.state);
        if with_conns && let Some((_, rk)) = by_index.get(&e.conn.real) {
            conns.push(ConnInfo {
                proto: if e.key.proto == lb_common::proto::UDP {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                expire_secs: timeout - idle,
                state: state.name().into(),
                client: socket4(e.key.src, e.key.sport),
                virtual_addr: socket4(e.key.dst, e.key.dport),
                real: SocketAddr::new(rk.addr, rk.port),
            });
        }
    }
    if with_conns {
        for t in v.dp.persist4() {
            let Some(key) = by_id.get(&t.key.service_id) else {
                continue;
            };
            let Some(vs) = v.config.virtual_server(key) else {
                continue;
            };
            let Some(p) = vs.persistence else { continue };
            let idle = now.wrapping_sub(t.stamp);
            if idle > p.timeout {
                continue;
            }
            let Some((_, rk)) = by_index.get(&t.template.real) else {
                continue;
            };
            conns.push(ConnInfo {
                proto: key.proto,
                expire_secs: p.timeout - idle,
                state: ConnState::None.name().into(),
                client: SocketAddr::new(IpAddr::from(t.key.client.to_ne_bytes()), 0),
                virtual_addr: SocketAddr::new(key.vip, key.port),
                real: SocketAddr::new(rk.addr, rk.port),
            });
        }
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
            let status = v.health.get(&key);
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
            let reason = if !v.macs.contains_key(&rk.addr) {
                Some("no neighbour".to_owned())
            } else if status.is_some_and(|s| !s.up) {
                status
                    .and_then(|s| s.last.as_ref())
                    .map(|o| o.detail.clone())
            } else {
                None
            };
            reals.push(RealInfo {
                key: *rk,
                forward: Forward::Route,
                weight: rs.weight,
                active_conns: act,
                inactive_conns: inact,
                stats: counters(v.dp, None, Some(installed.index)),
                rate: v.rates.real(&key),
                health: HealthInfo {
                    checker: status.map_or("none", |s| s.checker).into(),
                    state: state.into(),
                    last_result: status
                        .and_then(|s| s.last.as_ref())
                        .map(|o| o.detail.clone()),
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
            persistence: vs.persistence.map(|p| PersistInfo {
                timeout: p.timeout,
                netmask: p.granularity.to_string(),
            }),
            stats: counters(v.dp, Some(inst.id), None),
            rate: v.rates.service(&vs.key),
            reals,
            sorry_server_active: vs.sorry_server.is_some_and(|s| spec.reals.contains_key(&s))
                && !vs
                    .real_servers
                    .iter()
                    .any(|r| Some(r.key) == vs.sorry_server),
        });
    }
    services.sort_by_key(|s| s.key);

    let g = v.dp.global_stats().unwrap_or_default();
    Snapshot {
        conn_table_size: v.dp.limits().conn_sets() * lb_common::CONN_WAYS as u32,
        timeouts: v.config.timeouts,
        services,
        conns: with_conns.then_some(conns),
        global: GlobalInfo {
            rx: g.rx,
            passed: g.passed,
            transmitted: g.transmitted,
            drop_no_real: g.drop_no_real,
            conn_hits: g.conn_hits,
            conn_misses: g.conn_misses,
            conn_rescheduled: g.conn_rescheduled,
            conn_insert_failed: g.conn_insert_failed,
            fragments: g.fragments,
            icmp_forwarded: g.icmp_forwarded,
            persist_hits: g.persist_hits,
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
    }
}

fn socket4(addr: u32, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::from(addr.to_ne_bytes()), u16::from_be(port))
}

/// Which real a client's flow to `service` is on (connection table), or would get (its
/// persistence template, else the lookup table), read from the data plane's own tables with
/// its own hashes.
pub fn which(v: &View, service: &ServiceKey, client: SocketAddr) -> Result<WhichAnswer, String> {
    let inst = v
        .installed
        .services
        .get(service)
        .ok_or_else(|| format!("{service}: no such service"))?;
    let (IpAddr::V4(vip), IpAddr::V4(src)) = (service.vip, client.ip()) else {
        return Err("IPv6 flows are not supported yet".into());
    };
    let name = |index: u32| {
        inst.reals
            .iter()
            .chain(inst.retiring.iter())
            .find(|(_, r)| r.index == index)
            .map(|(k, _)| *k)
    };
    let usable = |index: u32| {
        v.dp.real(index)
            .is_ok_and(|r| r.state == REAL_UP && r.service_id == inst.id)
    };
    let settings = v.dp.settings();
    let now = settings.clock;
    let flow = Flow4Key::from_parts(
        src.octets(),
        client.port(),
        vip.octets(),
        service.port,
        service.proto.number(),
    );
    if let Some(e) = v.dp.conn4(&flow) {
        let idle = now.wrapping_sub(e.stamp);
        if idle <= settings.timeout(e.conn.state) && usable(e.conn.real) {
            let state = ConnState::from_u8(e.conn.state).name();
            return Ok(WhichAnswer {
                real: name(e.conn.real),
                source: "connection table".into(),
                detail: format!("{state}, idle {idle} s"),
            });
        }
    }
    let params = inst.params;
    let masked = u32::from_ne_bytes(src.octets()) & params.persist_mask4;
    if params.flags & SVC_F_PERSIST != 0 {
        let key = Persist4Key {
            service_id: inst.id,
            client: masked,
        };
        if let Some(t) =
            v.dp.persist4()
                .into_iter()
                .find(|t| t.key == key)
                .filter(|t| now.wrapping_sub(t.stamp) <= params.persist_timeout)
                .filter(|t| usable(t.template.real))
        {
            return Ok(WhichAnswer {
                real: name(t.template.real),
                source: "persistence template".into(),
                detail: format!(
                    "client network {}, used {} s ago",
                    IpAddr::from(masked.to_ne_bytes()),
                    now.wrapping_sub(t.stamp)
                ),
            });
        }
    }
    let hash = if params.flags & (SVC_F_HASH_SRC | SVC_F_PERSIST) != 0 {
        source_hash4(masked)
    } else {
        flow.hash()
    };
    if params.sched != lb_common::SCHED_MAGLEV {
        let candidates =
            v.dp.candidates(inst.id)
                .map_err(|e| format!("reading the candidates: {e}"))?;
        let counts = |index| {
            v.dp.real_load(index)
                .map(|l| crate::load::Counts::from_load(&l))
                .unwrap_or_default()
        };
        let weight = |index| {
            v.dp.real(index)
                .ok()
                .filter(|r| r.state == REAL_UP && r.service_id == inst.id)
                .map(|r| r.weight)
        };
        let Some(index) = crate::load::pick(params.sched, &candidates, hash, weight, counts) else {
            return Ok(WhichAnswer {
                real: None,
                source: "least connection".into(),
                detail: "no usable real: a new connection would be dropped".into(),
            });
        };
        let c = counts(index);
        return Ok(WhichAnswer {
            real: name(index),
            source: "least connection".into(),
            detail: format!(
                "least loaded now: {} active, {} inactive, weight {}",
                c.active,
                c.inactive,
                weight(index).unwrap_or(0)
            ),
        });
    }
    let (base, size) = inst.table;
    if size == 0 {
        return Ok(WhichAnswer {
            real: None,
            source: "lookup table".into(),
            detail: "no usable real: a new connection would be dropped".into(),
        });
    }
    let slot = table_slot(hash, size);
    let index =
        v.dp.lookup_slot(base + slot)
            .map_err(|e| format!("reading the lookup table: {e}"))?;
    Ok(WhichAnswer {
        real: name(index),
        source: "lookup table".into(),
        detail: format!("slot {slot} of {size}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(conns: u64, pkts: u64, bytes: u64) -> Counters {
        Counters {
            conns,
            in_pkts: pkts,
            out_pkts: 0,
            in_bytes: bytes,
            out_bytes: 0,
        }
    }

    #[test]
    fn rates_smooth_towards_the_sampled_rate() {
        let key = ServiceKey {
            vip: IpAddr::from([10, 0, 0, 1]),
            port: 80,
            proto: Protocol::Tcp,
        };
        let mut e = RateEstimator::default();
        let two = Duration::from_secs(2);
        e.sample(two, BTreeMap::from([(key, c(0, 0, 0))]), BTreeMap::new());
        assert_eq!(
            e.service(&key),
            Rates::default(),
            "the first sample has no rate"
        );
        // 100 conns/s, 1000 pkts/s, 80000 B/s for a long time: the average converges.
        let mut total = c(0, 0, 0);
        for _ in 0..60 {
            total = c(
                total.conns + 200,
                total.in_pkts + 2000,
                total.in_bytes + 160_000,
            );
            e.sample(two, BTreeMap::from([(key, total.clone())]), BTreeMap::new());
        }
        let r = e.service(&key);
        assert_eq!((r.cps, r.in_pps, r.in_bps), (100, 1000, 80_000));
        // One sample: a quarter of the way.
        total = c(total.conns, total.in_pkts, total.in_bytes);
        e.sample(two, BTreeMap::from([(key, total)]), BTreeMap::new());
        assert_eq!(e.service(&key).cps, 75);
        e.reset(Some(&key));
        assert_eq!(e.service(&key), Rates::default());
    }
}
