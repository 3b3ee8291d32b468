//! Config + observations -> desired state, and the difference between two desired states as
//! operator-readable changes (one log line each).
//!
//! The configuration says what should exist; observations say what is true right now (the
//! MAC address the kernel resolved for each real, each real's health). Both feed
//! [`desired_state`], whose result goes to the planner. Reloads, neighbour changes and health
//! changes all take this one path.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use crate::{
    config::{Config, RealServer},
    model::{
        DesiredState, Health, RealKey, RealSpec, Scheduler, ServiceKey, ServiceSpec, Thresholds,
        WeightEffect, effective_weight,
    },
};

/// One checker of a real: its service, the real, and the checker's index in the real's
/// `checks`.
pub type CheckId = (ServiceKey, RealKey, usize);

/// What the agent has learned at run time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Resolved MAC address per real address (absent = not resolved).
    pub macs: BTreeMap<IpAddr, [u8; 6]>,
    /// Health per checker; absent = up. A real is down while any of its checkers is
    /// (keepalived).
    pub health: BTreeMap<CheckId, Health>,
    /// What a checker does to its real's weight (`misc_dynamic`, `file_check`); absent =
    /// nothing.
    pub weights: BTreeMap<CheckId, WeightEffect>,
    /// Services that lost quorum (keepalived's `quorum`): their sorry server takes the new
    /// connections.
    pub quorum_lost: BTreeSet<ServiceKey>,
}

impl Observed {
    /// Whether a checker of `real` in `service` has failed.
    pub fn real_failed(&self, service: ServiceKey, real: RealKey) -> bool {
        self.health
            .range((service, real, 0)..=(service, real, usize::MAX))
            .any(|(_, h)| *h == Health::Down)
    }

    /// Records what checker `key` reports: its state when it changed (`None`: unchanged) and
    /// what it now does to the weight. Returns the real's new health when that changed (it is
    /// down while any of its checkers is), for its `notify_up`/`notify_down`.
    pub fn record_check(
        &mut self,
        key: CheckId,
        health: Option<Health>,
        weight: Option<WeightEffect>,
    ) -> Option<Health> {
        let (service, real, _) = key;
        let was_failed = self.real_failed(service, real);
        match weight {
            Some(w) => self.weights.insert(key, w),
            None => self.weights.remove(&key),
        };
        match health {
            Some(Health::Down) => {
                self.health.insert(key, Health::Down);
            }
            Some(Health::Up) => {
                self.health.remove(&key);
            }
            None => {}
        }
        let failed = self.real_failed(service, real);
        (failed != was_failed).then_some(if failed { Health::Down } else { Health::Up })
    }

    /// The live weight of `rs` in `service`: its configured weight plus what its checkers
    /// contribute (keepalived's effective weight), clamped to what the data plane takes.
    pub fn live_weight(&self, service: ServiceKey, rs: &RealServer) -> u32 {
        let effects = self
            .weights
            .range((service, rs.key, 0)..=(service, rs.key, usize::MAX))
            .map(|(_, e)| *e);
        effective_weight(rs.weight, effects)
    }
}

/// The desired data-plane state for `config` given what has been observed, with keepalived's
/// rules for failures and weights:
/// - a real's weight is its configured one changed by its checkers (`misc_dynamic`,
///   `file_check`), see [`Observed::live_weight`];
/// - a real whose check fails is down (its flows are rescheduled at once), or, with
///   `inhibit_on_failure`, stays up with weight 0 (it drains: no new flows, existing ones stay);
/// - while a service has lost quorum, its reals get no new flows (weight 0, their existing flows
///   stay) and its `sorry_server` takes every new connection.
pub fn desired_state(config: &Config, observed: &Observed) -> DesiredState {
    let mut services = BTreeMap::new();
    for vs in &config.virtual_servers {
        let quorum_lost = observed.quorum_lost.contains(&vs.key);
        let mut reals: BTreeMap<RealKey, RealSpec> = vs
            .real_servers
            .iter()
            .map(|rs| {
                let failed = observed.real_failed(vs.key, rs.key);
                let inhibit = rs.inhibit_on_failure.unwrap_or(vs.inhibit_on_failure);
                let live = observed.live_weight(vs.key, rs);
                let (weight, health) = match (failed, inhibit) {
                    (false, _) => (live, Health::Up),
                    (true, true) => (0, Health::Up),
                    (true, false) => (live, Health::Down),
                };
                let spec = RealSpec {
                    weight: if quorum_lost { 0 } else { weight },
                    thresholds: rs.thresholds,
                    mac: observed.macs.get(&rs.key.addr).copied(),
                    health,
                };
                (rs.key, spec)
            })
            .collect();
        if quorum_lost && let Some(sorry) = vs.sorry_server {
            reals.insert(
                sorry,
                RealSpec {
                    weight: 1,
                    thresholds: Thresholds::default(),
                    mac: observed.macs.get(&sorry.addr).copied(),
                    health: Health::Up,
                },
            );
        }
        services.insert(
            vs.key,
            ServiceSpec {
                // Validation admits only schedulers the data plane serves.
                scheduler: vs.lb_algo.scheduler().unwrap_or(Scheduler::Maglev),
                flags: vs.lb_flags,
                persistence: vs.persistence,
                table_size: vs.table_size,
                reals,
            },
        );
    }
    DesiredState { services }
}

/// One operator-visible difference between two desired states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A virtual service appeared.
    ServiceAdded(ServiceKey),
    /// A virtual service went away.
    ServiceRemoved(ServiceKey),
    /// A real appeared in a service.
    RealAdded(ServiceKey, RealKey, RealState),
    /// A real left a service.
    RealRemoved(ServiceKey, RealKey),
    /// A real's state changed.
    RealState(ServiceKey, RealKey, RealState, RealState),
}

/// A real's state as the operator reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealState {
    /// Takes new flows with this weight.
    Up(u32),
    /// Weight 0: keeps its flows, gets no new ones.
    Drained,
    /// Down because its health check fails.
    DownUnhealthy,
    /// Down because its MAC address is not resolved.
    DownNoNeighbour,
}

impl RealState {
    /// The state a real spec describes.
    pub fn of(spec: &RealSpec) -> Self {
        if spec.health == Health::Down {
            RealState::DownUnhealthy
        } else if spec.mac.is_none() {
            RealState::DownNoNeighbour
        } else if spec.weight == 0 {
            RealState::Drained
        } else {
            RealState::Up(spec.weight)
        }
    }
}

impl fmt::Display for RealState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RealState::Up(w) => write!(f, "up (weight {w})"),
            RealState::Drained => f.write_str("drained (weight 0)"),
            RealState::DownUnhealthy => f.write_str("down (health check failed)"),
            RealState::DownNoNeighbour => f.write_str("down (MAC address not resolved)"),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::ServiceAdded(s) => write!(f, "service {s} added"),
            Change::ServiceRemoved(s) => write!(f, "service {s} removed"),
            Change::RealAdded(s, r, st) => write!(f, "real {r} added to {s}: {st}"),
            Change::RealRemoved(s, r) => write!(
                f,
                "real {r} removed from {s}: no new connections, its existing ones finish there"
            ),
            Change::RealState(s, r, old, new) => write!(f, "real {r} of {s}: {old} -> {new}"),
        }
    }
}

/// The changes from `old` to `new`, services in key order.
pub fn changes(old: &DesiredState, new: &DesiredState) -> Vec<Change> {
    let mut out = Vec::new();
    for (key, spec) in &new.services {
        let Some(before) = old.services.get(key) else {
            out.push(Change::ServiceAdded(*key));
            for (rk, rs) in &spec.reals {
                out.push(Change::RealAdded(*key, *rk, RealState::of(rs)));
            }
            continue;
        };
        for (rk, rs) in &spec.reals {
            match before.reals.get(rk) {
                None => out.push(Change::RealAdded(*key, *rk, RealState::of(rs))),
                Some(prev) if RealState::of(prev) != RealState::of(rs) => out.push(
                    Change::RealState(*key, *rk, RealState::of(prev), RealState::of(rs)),
                ),
                Some(_) => {}
            }
        }
        for rk in before
            .reals
            .keys()
            .filter(|rk| !spec.reals.contains_key(rk))
        {
            out.push(Change::RealRemoved(*key, *rk));
        }
    }
    for key in old
        .services
        .keys()
        .filter(|k| !new.services.contains_key(k))
    {
        out.push(Change::ServiceRemoved(*key));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, path::Path};

    use super::*;
    use crate::model::Protocol;

    const YAML: &str = "
interface: eth0
virtual_servers:
  - vip: 10.0.0.100
    port: 80
    lb_algo: wrr
    lb_kind: dr
    real_servers:
      - { ip: 10.0.0.11, weight: 2 }
      - { ip: 10.0.0.12 }
  - vip: 10.0.0.100
    port: 443
    lb_algo: sh
    lb_kind: dr
    persistence_timeout: 50
    table_size: 251
    real_servers:
      - { ip: 10.0.0.11 }
";

    fn config() -> Config {
        Config::from_yaml(YAML, Path::new("test.yaml")).expect("valid")
    }

    fn skey(port: u16) -> ServiceKey {
        ServiceKey {
            vip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)),
            port,
            proto: Protocol::Tcp,
        }
    }

    fn rkey(last: u8, port: u16) -> RealKey {
        RealKey {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
            port,
        }
    }

    fn all_resolved() -> Observed {
        let mut o = Observed::default();
        o.macs.insert(rkey(11, 0).addr, [2, 0, 0, 0, 0, 11]);
        o.macs.insert(rkey(12, 0).addr, [2, 0, 0, 0, 0, 12]);
        o
    }

    #[test]
    fn config_and_observations_make_the_desired_state() {
        let d = desired_state(&config(), &all_resolved());
        let web = &d.services[&skey(80)];
        assert_eq!(web.scheduler, Scheduler::Maglev);
        assert_eq!(web.reals[&rkey(11, 80)].weight, 2);
        assert_eq!(web.reals[&rkey(11, 80)].mac, Some([2, 0, 0, 0, 0, 11]));
        let tls = &d.services[&skey(443)];
        assert_eq!(tls.scheduler, Scheduler::SourceHash);
        assert_eq!(tls.table_size, 251);
        assert_eq!(tls.persistence.unwrap().timeout, 50);
    }

    #[test]
    fn unresolved_and_unhealthy_reals_are_down() {
        let mut o = all_resolved();
        o.macs.remove(&rkey(12, 0).addr);
        o.health.insert((skey(443), rkey(11, 443), 0), Health::Down);
        let d = desired_state(&config(), &o);
        assert!(!d.services[&skey(80)].reals[&rkey(12, 80)].is_up());
        assert!(d.services[&skey(80)].reals[&rkey(11, 80)].is_up());
        assert_eq!(
            d.services[&skey(443)].reals[&rkey(11, 443)].health,
            Health::Down
        );
    }

    #[test]
    fn one_failed_checker_of_several_takes_the_real_down() {
        let mut o = all_resolved();
        let (s, r) = (skey(80), rkey(11, 80));
        // Two checkers up (one recorded, one absent): up.
        o.health.insert((s, r, 0), Health::Up);
        assert!(desired_state(&config(), &o).services[&s].reals[&r].is_up());
        // The second one fails: down, whatever the first says.
        o.health.insert((s, r, 1), Health::Down);
        assert_eq!(
            desired_state(&config(), &o).services[&s].reals[&r].health,
            Health::Down
        );
        assert!(o.real_failed(s, r));
        // Another real of the service and the same real elsewhere are not affected.
        assert!(!o.real_failed(s, rkey(12, 80)));
        assert!(!o.real_failed(skey(443), rkey(11, 443)));
        // Both up again: up.
        o.health.insert((s, r, 1), Health::Up);
        assert!(desired_state(&config(), &o).services[&s].reals[&r].is_up());
    }

    #[test]
    fn the_real_changes_when_its_first_checker_fails_and_its_last_recovers() {
        let mut o = Observed::default();
        let (s, r) = (skey(80), rkey(11, 80));
        assert_eq!(
            o.record_check((s, r, 0), Some(Health::Down), None),
            Some(Health::Down)
        );
        // A second checker failing changes nothing for the real.
        assert_eq!(o.record_check((s, r, 1), Some(Health::Down), None), None);
        assert_eq!(o.record_check((s, r, 0), Some(Health::Up), None), None);
        // A weight alone changes nothing for the real's state.
        assert_eq!(
            o.record_check((s, r, 2), None, Some(WeightEffect::Set(4))),
            None
        );
        assert_eq!(o.weights[&(s, r, 2)], WeightEffect::Set(4));
        // The last failed checker recovers: the real is up.
        assert_eq!(
            o.record_check((s, r, 1), Some(Health::Up), None),
            Some(Health::Up)
        );
        // Weight back to none: the entry goes.
        o.record_check((s, r, 2), None, None);
        assert!(o.weights.is_empty() && o.health.is_empty());
    }

    #[test]
    fn checkers_change_the_weight_as_keepalived_does() {
        let mut o = all_resolved();
        let (s, r) = (skey(80), rkey(11, 80));
        let weight = |o: &Observed| desired_state(&config(), o).services[&s].reals[&r].weight;
        // Configured weight 2.
        assert_eq!(weight(&o), 2);
        // misc_dynamic exit 5: weight 3.
        o.weights.insert((s, r, 0), WeightEffect::Set(3));
        assert_eq!(weight(&o), 3);
        // And a file_check adding 10: 13 (keepalived sums the checkers' contributions).
        o.weights.insert((s, r, 1), WeightEffect::Add(10));
        assert_eq!(weight(&o), 13);
        // A file_check taking more than there is: 0, never negative.
        o.weights.insert((s, r, 1), WeightEffect::Add(-100));
        assert_eq!(weight(&o), 0);
        // Nor above the data plane's maximum.
        o.weights.insert((s, r, 1), WeightEffect::Add(i64::MAX));
        assert_eq!(weight(&o), lb_common::MAX_WEIGHT);
        // Exit 0 again (no effect recorded): the configured weight.
        o.weights.clear();
        assert_eq!(weight(&o), 2);
        // A failed real with inhibit_on_failure still drains at 0; without, it keeps the live
        // weight for when it comes back.
        o.weights.insert((s, r, 0), WeightEffect::Set(7));
        o.health.insert((s, r, 1), Health::Down);
        let down = desired_state(&config(), &o).services[&s].reals[&r];
        assert_eq!((down.weight, down.health), (7, Health::Down));
        // The weight of the real elsewhere is its own.
        assert_eq!(
            desired_state(&config(), &o).services[&skey(443)].reals[&rkey(11, 443)].weight,
            1
        );
    }

    #[test]
    fn inhibit_on_failure_drains_instead_of_taking_down() {
        let yaml = YAML.replace(
            "      - { ip: 10.0.0.12 }",
            "      - { ip: 10.0.0.12, inhibit_on_failure: true }",
        );
        let config = Config::from_yaml(&yaml, Path::new("t.yaml")).unwrap();
        let mut o = all_resolved();
        o.health.insert((skey(80), rkey(12, 80), 0), Health::Down);
        o.health.insert((skey(80), rkey(11, 80), 0), Health::Down);
        let d = desired_state(&config, &o);
        let inhibited = d.services[&skey(80)].reals[&rkey(12, 80)];
        assert_eq!(
            (inhibited.weight, inhibited.health),
            (0, Health::Up),
            "drains"
        );
        let down = d.services[&skey(80)].reals[&rkey(11, 80)];
        assert_eq!((down.weight, down.health), (2, Health::Down), "goes down");
    }

    #[test]
    fn lost_quorum_hands_new_connections_to_the_sorry_server() {
        let yaml = YAML.replacen(
            "    lb_algo: wrr",
            "    lb_algo: wrr\n    sorry_server: { ip: 10.0.0.99, port: 80 }",
            1,
        );
        let config = Config::from_yaml(&yaml, Path::new("t.yaml")).unwrap();
        let mut o = all_resolved();
        o.macs.insert(rkey(99, 80).addr, [2, 0, 0, 0, 0, 99]);
        let held = desired_state(&config, &o);
        assert!(!held.services[&skey(80)].reals.contains_key(&rkey(99, 80)));
        o.quorum_lost.insert(skey(80));
        let lost = desired_state(&config, &o);
        let reals = &lost.services[&skey(80)].reals;
        assert!(
            reals[&rkey(99, 80)].takes_new_flows(),
            "the sorry server takes new flows"
        );
        for r in [11, 12] {
            assert_eq!(
                reals[&rkey(r, 80)].weight,
                0,
                "real {r} keeps its flows only"
            );
            assert!(reals[&rkey(r, 80)].is_up());
        }
        let other = &lost.services[&skey(443)].reals[&rkey(11, 443)];
        assert!(other.takes_new_flows(), "other services are unaffected");
    }

    #[test]
    fn changes_read_as_one_line_each() {
        let before = desired_state(&config(), &all_resolved());
        let mut o = all_resolved();
        o.macs.remove(&rkey(12, 0).addr);
        let mut after = desired_state(&config(), &o);
        after.services.remove(&skey(443));
        after
            .services
            .get_mut(&skey(80))
            .unwrap()
            .reals
            .get_mut(&rkey(11, 80))
            .unwrap()
            .weight = 0;
        let lines: Vec<String> = changes(&before, &after)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            lines,
            vec![
                "real 10.0.0.11:80 of TCP 10.0.0.100:80: up (weight 2) -> drained (weight 0)",
                "real 10.0.0.12:80 of TCP 10.0.0.100:80: up (weight 1) -> down (MAC address not resolved)",
                "service TCP 10.0.0.100:443 removed",
            ]
        );
        let added: Vec<String> = changes(&DesiredState::default(), &before)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(added[0], "service TCP 10.0.0.100:80 added");
        assert_eq!(
            added[1],
            "real 10.0.0.11:80 added to TCP 10.0.0.100:80: up (weight 2)"
        );
        assert!(changes(&before, &before).is_empty());
    }
}
