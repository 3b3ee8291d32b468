//! What `lbadm` lists and `/metrics` exports, read from the same maps the data plane uses:
//! counters, rates (IPVS's estimator), connection counts and entries from the connection tables
//! (IPv4 and IPv6), health from the checkers, and `--which`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use lb_common::{
    Candidates, Conn, ConnState, Flow4Key, Flow6Key, FlowKey, Persist4Key, Persist6Key, REAL_UP,
    Real, SVC_F_PERSIST, Settings, addr6_bytes, table_slot,
};

use crate::{
    config::Config,
    control::{
        ConnInfo, Counters, Forward, GlobalInfo, HealthInfo, PersistInfo, Rates, RealInfo,
        ServiceInfo, Snapshot, WhichAnswer,
    },
    dataplane::Dataplane,
    health::{CheckKey, CheckStatus},
    model::{
        Conn6Entry, ConnEntry, DesiredState, ListedFlow, PersistKey, Protocol, RealKey, ServiceKey,
        Template6Entry, TemplateEntry,
    },
    reconcile::plan::{Installed, InstalledService},
    schedule::load::{self, Counts},
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
                    checker: status.map_or("none", |s| s.checker).into(),
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

/// The data plane's tables as `which` reads them: the maps, or a model of them in tests.
trait Tables {
    /// Director settings (clock and timeouts).
    fn settings(&self) -> Settings;
    /// The IPv4 connection entry of a flow.
    fn conn4(&self, key: &Flow4Key) -> Option<ConnEntry>;
    /// The IPv6 connection entry of a flow.
    fn conn6(&self, key: &Flow6Key) -> Option<Conn6Entry>;
    /// An IPv4 persistence template.
    fn template4(&self, key: &Persist4Key) -> Option<TemplateEntry>;
    /// An IPv6 persistence template.
    fn template6(&self, key: &Persist6Key) -> Option<Template6Entry>;
    /// `REALS[index]`.
    fn real(&self, index: u32) -> Option<Real>;
    /// A real's connection counts.
    fn load(&self, index: u32) -> Counts;
    /// A least-connection service's candidates.
    fn candidates(&self, id: u32) -> Result<Candidates, String>;
    /// Flat slot `index` of the lookup tables.
    fn slot(&self, index: u32) -> Result<u32, String>;
}

impl Tables for Dataplane {
    fn settings(&self) -> Settings {
        Dataplane::settings(self)
    }

    fn conn4(&self, key: &Flow4Key) -> Option<ConnEntry> {
        Dataplane::conn4(self, key)
    }

    fn conn6(&self, key: &Flow6Key) -> Option<Conn6Entry> {
        Dataplane::conn6(self, key)
    }

    fn template4(&self, key: &Persist4Key) -> Option<TemplateEntry> {
        Dataplane::template4(self, key)
    }

    fn template6(&self, key: &Persist6Key) -> Option<Template6Entry> {
        Dataplane::template6(self, key)
    }

    fn real(&self, index: u32) -> Option<Real> {
        Dataplane::real(self, index).ok()
    }

    fn load(&self, index: u32) -> Counts {
        self.real_load(index)
            .map(|l| Counts::from_load(&l))
            .unwrap_or_default()
    }

    fn candidates(&self, id: u32) -> Result<Candidates, String> {
        Dataplane::candidates(self, id).map_err(|e| format!("reading the candidates: {e}"))
    }

    fn slot(&self, index: u32) -> Result<u32, String> {
        self.lookup_slot(index)
            .map_err(|e| format!("reading the lookup table: {e}"))
    }
}

/// What the data plane's tables say about one client's flow, whatever its family.
struct Probe {
    /// The flow's connection entry.
    conn: Option<(Conn, u32)>,
    /// The client network's template (persistent services only): real and stamp.
    template: Option<(u32, u32)>,
    /// The client address under the service's granularity.
    network: IpAddr,
    /// The hash that places the flow: by the masked source for `sh` and persistence, else
    /// the 5-tuple's.
    hash: u32,
}

impl Probe {
    /// Reads the tables for `client`'s flow to `service`, with the data plane's keys and
    /// hashes for the family ([`FlowKey`]); an error if the client is not of the VIP's family.
    fn read(
        t: &impl Tables,
        inst: &InstalledService,
        service: &ServiceKey,
        client: SocketAddr,
    ) -> Result<Probe, String> {
        let p = &inst.params.entry(inst.table);
        let persistent = p.flags & SVC_F_PERSIST != 0;
        let proto = service.proto.number();
        match (service.vip, client.ip()) {
            (IpAddr::V4(vip), IpAddr::V4(src)) => {
                let (o, v) = (src.octets(), vip.octets());
                let flow = Flow4Key::from_parts(o, client.port(), v, service.port, proto);
                let key = flow.client(inst.id, p);
                Ok(Probe {
                    conn: t.conn4(&flow).map(|e| (e.conn, e.stamp)),
                    template: persistent
                        .then(|| t.template4(&key))
                        .flatten()
                        .map(|e| (e.template.real, e.stamp)),
                    network: IpAddr::from(key.client.to_ne_bytes()),
                    hash: flow.schedule_hash(p, flow.hash()),
                })
            }
            (IpAddr::V6(vip), IpAddr::V6(src)) => {
                let (o, v) = (src.octets(), vip.octets());
                let flow = Flow6Key::from_parts(o, client.port(), v, service.port, proto);
                let key = flow.client(inst.id, p);
                Ok(Probe {
                    conn: t.conn6(&flow).map(|e| (e.conn, e.stamp)),
                    template: persistent
                        .then(|| t.template6(&key))
                        .flatten()
                        .map(|e| (e.template.real, e.stamp)),
                    network: IpAddr::from(addr6_bytes(&key.client)),
                    hash: flow.schedule_hash(p, flow.hash()),
                })
            }
            _ => Err(format!(
                "the client {client} is not of the address family of {service}"
            )),
        }
    }
}

/// Which real a client's flow to `service` is on (connection table), or would get (its
/// persistence template, else the lookup table or the least-connection choice), read from the
/// data plane's own tables with its own keys and hashes, for IPv4 and IPv6 alike.
pub fn which(v: &View, service: &ServiceKey, client: SocketAddr) -> Result<WhichAnswer, String> {
    let inst = v
        .installed
        .services
        .get(service)
        .ok_or_else(|| format!("{service}: no such service"))?;
    which_installed(v.dp, inst, service, client)
}

/// [`which`] for one installed service, read from the data plane's maps: the userspace side of
/// the decisions the program makes (the agreement test runs both).
pub fn which_installed(
    dp: &Dataplane,
    inst: &InstalledService,
    service: &ServiceKey,
    client: SocketAddr,
) -> Result<WhichAnswer, String> {
    which_in(dp, inst, service, client)
}

/// [`which`] over any [`Tables`].
fn which_in(
    t: &impl Tables,
    inst: &InstalledService,
    service: &ServiceKey,
    client: SocketAddr,
) -> Result<WhichAnswer, String> {
    let name = |index: u32| {
        inst.reals
            .iter()
            .chain(inst.retiring.iter())
            .find(|(_, r)| r.index == index)
            .map(|(k, _)| *k)
    };
    // The weight of a real that is up and of this service.
    let weight = |index: u32| {
        t.real(index)
            .filter(|r| r.state == REAL_UP && r.service_id == inst.id)
            .map(|r| r.weight)
    };
    let settings = t.settings();
    let now = settings.clock;
    let probe = Probe::read(t, inst, service, client)?;
    if let Some((conn, stamp)) = probe.conn {
        let idle = settings.idle(stamp);
        if settings.conn_live(conn.state, stamp) && weight(conn.real).is_some() {
            let state = ConnState::from_u8(conn.state).name();
            return Ok(WhichAnswer {
                real: name(conn.real),
                source: "connection table".into(),
                detail: format!("{state}, idle {idle} s"),
            });
        }
    }
    let params = inst.params;
    if let Some((real, stamp)) = probe.template
        && params.entry(inst.table).template_live(now, stamp)
        && weight(real).is_some()
    {
        return Ok(WhichAnswer {
            real: name(real),
            source: "persistence template".into(),
            detail: format!(
                "client network {}, used {} s ago",
                probe.network,
                now.wrapping_sub(stamp)
            ),
        });
    }
    let hash = probe.hash;
    if params.sched != lb_common::SCHED_MAGLEV {
        let candidates = t.candidates(inst.id)?;
        let counts = |index| t.load(index);
        let Some(index) = load::pick(params.sched, &candidates, hash, weight, counts) else {
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
    let index = t.slot(base + slot)?;
    Ok(WhichAnswer {
        real: name(index),
        source: "lookup table".into(),
        detail: format!("slot {slot} of {size}"),
    })
}

/// The `Result` and `Reason` health columns of a real: what the last check saw when it
/// passed (`connected`, `HTTP 200`), else `failed`; and why the real is or may go down: no
/// neighbour entry for it, or what the failed check saw (`connect refused`). The detail of a
/// failure is in one column only.
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
mod tests {
    use std::net::Ipv6Addr;

    use lb_common::{Template, addr6, source_hash6};

    use super::*;
    use crate::{
        model::Limits,
        model::{DesiredState, Health, Persistence, RealSpec, Scheduler, ServiceSpec},
        reconcile::plan::{Op, ServiceParams},
    };

    fn checked(up: bool, ok: bool, detail: &str) -> CheckStatus {
        CheckStatus {
            checker: "tcp_check",
            up,
            last: Some(crate::health::Outcome {
                ok,
                detail: detail.into(),
            }),
            latency: None,
            latency_total: Duration::ZERO,
            since: Duration::ZERO,
            checks: 1,
            failures: u64::from(!ok),
        }
    }

    #[test]
    fn a_failed_check_says_failed_once_and_why_once() {
        let some = |s: &str| Some(s.to_owned());
        let down = checked(false, false, "connect refused");
        assert_eq!(
            result_and_reason(Some(&down), true),
            (some("failed"), some("connect refused"))
        );
        // Up, but the last probe failed (retries left): the reason is shown already.
        let retrying = checked(true, false, "timeout");
        assert_eq!(
            result_and_reason(Some(&retrying), true),
            (some("failed"), some("timeout"))
        );
        let up = checked(true, true, "HTTP 200");
        assert_eq!(result_and_reason(Some(&up), true), (some("HTTP 200"), None));
        assert_eq!(
            result_and_reason(Some(&up), false),
            (some("HTTP 200"), some("no neighbour"))
        );
        assert_eq!(result_and_reason(None, true), (None, None));
    }

    /// A model of the tables `which` reads, filled by the planner's ops.
    #[derive(Default)]
    struct FakeTables {
        clock: u32,
        conns4: BTreeMap<Flow4Key, ConnEntry>,
        conns6: BTreeMap<Flow6Key, Conn6Entry>,
        templates4: BTreeMap<Persist4Key, TemplateEntry>,
        templates6: BTreeMap<Persist6Key, Template6Entry>,
        reals: BTreeMap<u32, Real>,
        loads: BTreeMap<u32, Counts>,
        candidates: BTreeMap<u32, Candidates>,
        slots: BTreeMap<u32, u32>,
    }

    impl FakeTables {
        fn apply(&mut self, ops: &[Op]) {
            for op in ops {
                match op {
                    Op::SetReal { index, real } => {
                        self.reals.insert(*index, *real);
                    }
                    Op::WriteSlots { base, slots } => {
                        for (off, r) in slots {
                            self.slots.insert(base + off, *r);
                        }
                    }
                    Op::SetCandidates { id, reals } => {
                        self.candidates.insert(*id, *reals);
                    }
                    _ => {}
                }
            }
        }
    }

    impl Tables for FakeTables {
        fn settings(&self) -> Settings {
            Settings {
                clock: self.clock,
                ..Settings::new([0; 6])
            }
        }

        fn conn4(&self, key: &Flow4Key) -> Option<ConnEntry> {
            self.conns4.get(key).copied()
        }

        fn conn6(&self, key: &Flow6Key) -> Option<Conn6Entry> {
            self.conns6.get(key).copied()
        }

        fn template4(&self, key: &Persist4Key) -> Option<TemplateEntry> {
            self.templates4.get(key).copied()
        }

        fn template6(&self, key: &Persist6Key) -> Option<Template6Entry> {
            self.templates6.get(key).copied()
        }

        fn real(&self, index: u32) -> Option<Real> {
            self.reals.get(&index).copied()
        }

        fn load(&self, index: u32) -> Counts {
            self.loads.get(&index).copied().unwrap_or_default()
        }

        fn candidates(&self, id: u32) -> Result<Candidates, String> {
            Ok(self.candidates.get(&id).copied().unwrap_or_default())
        }

        fn slot(&self, index: u32) -> Result<u32, String> {
            Ok(self
                .slots
                .get(&index)
                .copied()
                .unwrap_or(lb_common::NO_REAL))
        }
    }

    const M: u32 = 251;
    const NOW: u32 = 10_000;

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn svc6(port: u16) -> ServiceKey {
        ServiceKey {
            vip: IpAddr::V6(v6("2001:db8::100")),
            port,
            proto: Protocol::Tcp,
        }
    }

    fn real6(last: u16) -> RealKey {
        RealKey {
            addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)),
            port: 443,
        }
    }

    /// Installs `spec` on `key` through the planner, with the ops applied to fresh tables.
    fn install(key: ServiceKey, spec: ServiceSpec) -> (FakeTables, InstalledService) {
        let limits = Limits {
            max_services: 4,
            max_reals: 16,
            max_table_size: M,
            ..Limits::default()
        };
        let desired = DesiredState {
            services: [(key, spec)].into(),
        };
        let (ops, inst) = Installed::new(limits).plan(&desired).expect("plan");
        let mut t = FakeTables {
            clock: NOW,
            ..FakeTables::default()
        };
        t.apply(&ops);
        (t, inst.services[&key].clone())
    }

    fn spec(scheduler: Scheduler, reals: &[u16]) -> ServiceSpec {
        ServiceSpec {
            scheduler,
            persistence: None,
            table_size: M,
            reals: reals
                .iter()
                .map(|&r| {
                    let spec = RealSpec {
                        weight: 1,
                        mac: Some([2, 0, 0, 0, 0, r as u8]),
                        health: Health::Up,
                    };
                    (real6(r), spec)
                })
                .collect(),
        }
    }

    fn conn(real: u32, state: ConnState, stamp: u32) -> (Conn, u32) {
        let conn = Conn {
            real,
            state: state as u8,
            _pad: [0; 3],
        };
        (conn, stamp)
    }

    fn index(inst: &InstalledService, last: u16) -> u32 {
        inst.reals[&real6(last)].index
    }

    #[test]
    fn which_answers_ipv6_flows_from_the_connection_table_then_the_lookup_table() {
        let key = svc6(443);
        let (mut t, inst) = install(key, spec(Scheduler::Maglev, &[0x11, 0x12, 0x13]));
        let client: SocketAddr = "[2001:db8:1::5]:40000".parse().unwrap();
        let flow = Flow6Key::from_parts(
            v6("2001:db8:1::5").octets(),
            40000,
            v6("2001:db8::100").octets(),
            443,
            lb_common::proto::TCP,
        );
        // No entry: the slot of the flow's hash in the published table.
        let (base, size) = inst.table;
        assert_eq!(size, M);
        let slot = table_slot(flow.hash(), size);
        let by_table = t.slots[&(base + slot)];
        let a = which_in(&t, &inst, &key, client).unwrap();
        assert_eq!(a.source, "lookup table");
        assert_eq!(a.detail, format!("slot {slot} of {M}"));
        assert_eq!(a.real.map(|r| inst.reals[&r].index), Some(by_table));
        // A live entry on another real wins.
        let other = [0x11, 0x12, 0x13]
            .map(|r| index(&inst, r))
            .into_iter()
            .find(|&i| i != by_table)
            .unwrap();
        let (c, stamp) = conn(other, ConnState::Established, NOW - 5);
        let entry = ConnEntry {
            key: flow,
            conn: c,
            stamp,
        };
        t.conns6.insert(flow, entry);
        let a = which_in(&t, &inst, &key, client).unwrap();
        assert_eq!(a.source, "connection table");
        assert_eq!(a.detail, "ESTABLISHED, idle 5 s");
        assert_eq!(a.real.map(|r| inst.reals[&r].index), Some(other));
        // Expired, or on a real that went down: scheduled again.
        let expired = Settings::new([0; 6]).timeout(ConnState::Established as u8) + 1;
        t.conns6.get_mut(&flow).unwrap().stamp = NOW - expired;
        assert_eq!(
            which_in(&t, &inst, &key, client).unwrap().source,
            "lookup table"
        );
        t.conns6.get_mut(&flow).unwrap().stamp = NOW;
        t.reals.get_mut(&other).unwrap().state = lb_common::REAL_DOWN;
        assert_eq!(
            which_in(&t, &inst, &key, client).unwrap().source,
            "lookup table"
        );
        // An IPv4 client of an IPv6 service has no flow.
        let err = which_in(&t, &inst, &key, "192.0.2.1:40000".parse().unwrap()).unwrap_err();
        assert!(err.contains("address family"), "{err}");
    }

    #[test]
    fn which_follows_ipv6_persistence_by_prefix() {
        let key = svc6(443);
        let mut p = spec(Scheduler::Maglev, &[0x11, 0x12, 0x13, 0x14]);
        p.persistence = Some(Persistence {
            prefix6: 64,
            ..Persistence::per_client(300)
        });
        let (mut t, inst) = install(key, p);
        let a: SocketAddr = "[2001:db8:1:2::5]:40000".parse().unwrap();
        let b: SocketAddr = "[2001:db8:1:2:ffff::9]:1234".parse().unwrap();
        let far: SocketAddr = "[2001:db8:1:3::5]:40000".parse().unwrap();
        // Without a template: the lookup table at the hash of the client's /64.
        let network = addr6(v6("2001:db8:1:2::").octets());
        let slot = table_slot(source_hash6(&network), M);
        for client in [a, b] {
            let w = which_in(&t, &inst, &key, client).unwrap();
            assert_eq!(w.source, "lookup table");
            assert_eq!(w.detail, format!("slot {slot} of {M}"), "{client}");
        }
        // A template for the /64 pins both clients, not the next network.
        let pinned = index(&inst, 0x13);
        let tkey = Persist6Key {
            service_id: inst.id,
            _pad: 0,
            client: network,
        };
        let template = TemplateEntry {
            key: tkey,
            template: Template {
                real: pinned,
                _pad: 0,
            },
            stamp: NOW - 3,
        };
        t.templates6.insert(tkey, template);
        for client in [a, b] {
            let w = which_in(&t, &inst, &key, client).unwrap();
            assert_eq!(w.source, "persistence template");
            assert_eq!(w.detail, "client network 2001:db8:1:2::, used 3 s ago");
            assert_eq!(w.real, Some(real6(0x13)));
        }
        assert_eq!(
            which_in(&t, &inst, &key, far).unwrap().source,
            "lookup table"
        );
        // A drained real keeps its clients; an expired template does not.
        t.reals.get_mut(&pinned).unwrap().weight = 0;
        assert_eq!(
            which_in(&t, &inst, &key, a).unwrap().real,
            Some(real6(0x13))
        );
        t.templates6.get_mut(&tkey).unwrap().stamp = NOW - 301;
        assert_eq!(which_in(&t, &inst, &key, a).unwrap().source, "lookup table");
    }

    #[test]
    fn which_picks_the_least_loaded_ipv6_real() {
        let key = svc6(443);
        let (mut t, inst) = install(key, spec(Scheduler::WeightedLeastConn, &[0x11, 0x12, 0x13]));
        for (r, active) in [(0x11, 5), (0x12, 1), (0x13, 9)] {
            t.loads.insert(
                index(&inst, r),
                Counts {
                    active,
                    inactive: 0,
                },
            );
        }
        let w = which_in(&t, &inst, &key, "[2001:db8:1::5]:40000".parse().unwrap()).unwrap();
        assert_eq!(w.source, "least connection");
        assert_eq!(w.real, Some(real6(0x12)));
        assert_eq!(w.detail, "least loaded now: 1 active, 0 inactive, weight 1");
    }

    #[test]
    fn ipv6_entries_and_templates_are_listed() {
        let key = svc6(443);
        let by_index: BTreeMap<u32, (ServiceKey, RealKey)> = [(7, (key, real6(0x11)))].into();
        let settings = Settings {
            clock: NOW,
            ..Settings::new([0; 6])
        };
        let flow = |port| {
            Flow6Key::from_parts(
                v6("2001:db8:1::5").octets(),
                port,
                v6("2001:db8::100").octets(),
                443,
                lb_common::proto::TCP,
            )
        };
        let entry = |port, real, state, stamp| {
            let (conn, stamp) = conn(real, state, stamp);
            ConnEntry {
                key: flow(port),
                conn,
                stamp,
            }
        };
        let entries = [
            entry(40000, 7, ConnState::Established, NOW - 100),
            entry(40001, 7, ConnState::Established, NOW - 901), // expired
            entry(40002, 9, ConnState::SynRecv, NOW),           // a real the maps no longer name
        ];
        let mut out = Vec::new();
        assert_eq!(
            listed_conns(&entries, &settings, &by_index, Some(&mut out)),
            2
        );
        assert_eq!(listed_conns(&entries, &settings, &by_index, None), 2);
        assert_eq!(
            out,
            [ConnInfo {
                proto: Protocol::Tcp,
                expire_secs: 800,
                state: "ESTABLISHED".into(),
                client: "[2001:db8:1::5]:40000".parse().unwrap(),
                virtual_addr: "[2001:db8::100]:443".parse().unwrap(),
                real: "[2001:db8::11]:443".parse().unwrap(),
            }]
        );
        let template = |client: &str, stamp| TemplateEntry {
            key: Persist6Key {
                service_id: 2,
                _pad: 0,
                client: addr6(v6(client).octets()),
            },
            template: Template { real: 7, _pad: 0 },
            stamp,
        };
        let mut out = Vec::new();
        listed_templates(
            vec![
                template("2001:db8:1::", NOW - 50),
                template("2001:db8:2::", NOW - 301), // expired
            ],
            NOW,
            |id| {
                let params = ServiceParams {
                    persist_timeout: 300,
                    ..ServiceParams::default()
                };
                (*id == 2).then_some((key, params.entry((0, 0))))
            },
            &by_index,
            &mut out,
        );
        assert_eq!(
            out,
            [ConnInfo {
                proto: Protocol::Tcp,
                expire_secs: 250,
                state: "NONE".into(),
                client: "[2001:db8:1::]:0".parse().unwrap(),
                virtual_addr: "[2001:db8::100]:443".parse().unwrap(),
                real: "[2001:db8::11]:443".parse().unwrap(),
            }]
        );
    }

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
