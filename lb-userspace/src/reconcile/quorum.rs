//! keepalived's quorum: a service holds quorum while the total live weight of its live reals (up
//! by their checks, and with a resolved MAC) is at least `quorum`, with `hysteresis` on both
//! edges. While it is lost, the service's sorry server takes the new connections and the
//! `quorum_down` script has run; `quorum_up` runs when it comes back. Pure: the agent passes
//! the configuration, what it observed and the previous state, and acts on the changes.

use std::collections::BTreeMap;

use crate::{config::Config, model::ServiceKey, reconcile::desired::Observed};

/// A service whose quorum changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumChange {
    /// The service.
    pub service: ServiceKey,
    /// Whether it holds quorum now (it did not before), or lost it.
    pub held: bool,
    /// Total weight of its live reals.
    pub live_weight: u64,
    /// Its `quorum`.
    pub quorum: u32,
    /// The script to run: `quorum_up` on regaining, `quorum_down` on losing.
    pub script: Option<String>,
    /// Whether it has a sorry server (which takes new connections while quorum is lost).
    pub sorry_server: bool,
}

/// keepalived's quorum with hysteresis: a service holds quorum while the total weight of its
/// live reals is at least `quorum`; once held, it is lost only below `quorum - hysteresis`;
/// once lost, it comes back only at `quorum + hysteresis`. `previous` is `None` before the
/// first evaluation.
pub fn next_quorum(previous: Option<bool>, live_weight: u64, quorum: u32, hysteresis: u32) -> bool {
    let (q, h) = (u64::from(quorum), u64::from(hysteresis));
    match previous {
        None => live_weight >= q,
        Some(true) => live_weight >= q.saturating_sub(h),
        Some(false) => live_weight >= q + h,
    }
}

/// Every configured service's quorum given `observed`, from `before` (a service not in it has
/// not been evaluated yet and counts as holding quorum), and the services whose quorum changed.
pub fn evaluate(
    config: &Config,
    observed: &Observed,
    before: &BTreeMap<ServiceKey, bool>,
) -> (BTreeMap<ServiceKey, bool>, Vec<QuorumChange>) {
    let mut now = BTreeMap::new();
    let mut changes = Vec::new();
    for vs in &config.virtual_servers {
        let live_weight: u64 = vs
            .real_servers
            .iter()
            .filter(|rs| {
                !observed.real_failed(vs.key, rs.key) && observed.macs.contains_key(&rs.key.addr)
            })
            .map(|rs| u64::from(observed.live_weight(vs.key, rs)))
            .sum();
        let was = before.get(&vs.key).copied().unwrap_or(true);
        let held = next_quorum(Some(was), live_weight, vs.quorum, vs.hysteresis);
        if held != was {
            changes.push(QuorumChange {
                service: vs.key,
                held,
                live_weight,
                quorum: vs.quorum,
                // A group runs its scripts once, for its leader (keepalived's one virtual
                // server); its members share the leader's reals and state.
                script: if vs.group.as_ref().is_some_and(|g| g.leader != vs.key) {
                    None
                } else if held {
                    vs.quorum_up.clone()
                } else {
                    vs.quorum_down.clone()
                },
                sorry_server: vs.sorry_server.is_some(),
            });
        }
        now.insert(vs.key, held);
    }
    (now, changes)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::Health;

    #[test]
    fn quorum_with_hysteresis() {
        // quorum 4, hysteresis 1: lost below 3, back at 5.
        assert!(next_quorum(None, 4, 4, 1));
        assert!(!next_quorum(None, 3, 4, 1));
        assert!(
            next_quorum(Some(true), 3, 4, 1),
            "held until below quorum - hysteresis"
        );
        assert!(!next_quorum(Some(true), 2, 4, 1));
        assert!(
            !next_quorum(Some(false), 4, 4, 1),
            "not back until quorum + hysteresis"
        );
        assert!(next_quorum(Some(false), 5, 4, 1));
        // No hysteresis: plain threshold both ways.
        assert!(!next_quorum(Some(true), 0, 1, 0));
        assert!(next_quorum(Some(false), 1, 1, 0));
    }

    const CONFIG: &str = "
interface: eth0
virtual_servers:
  - vip: 10.0.0.100
    port: 5672
    lb_kind: dr
    quorum: 4
    hysteresis: 1
    quorum_up: /bin/up
    quorum_down: /bin/down
    sorry_server: 10.0.0.99
    real_servers:
      - { ip: 10.0.0.11, weight: 3 }
      - { ip: 10.0.0.12, weight: 2 }
  - vip: 10.0.0.100
    port: 15672
    lb_kind: dr
    real_servers:
      - { ip: 10.0.0.13 }
";

    #[test]
    fn a_service_loses_quorum_below_its_hysteresis_and_regains_it_above() {
        let config = Config::from_yaml(CONFIG, Path::new("q.yaml")).unwrap();
        let amqp = config.virtual_servers[0].key;
        let ui = config.virtual_servers[1].key;
        let (r1, r2) = (
            config.virtual_servers[0].real_servers[0].key,
            config.virtual_servers[0].real_servers[1].key,
        );
        let mut observed = Observed::default();
        let r3 = config.virtual_servers[1].real_servers[0].key;
        for r in [r1, r2, r3] {
            observed.macs.insert(r.addr, [2, 0, 0, 0, 0, 1]);
        }
        // Both up: weight 5, held; nothing changes from the initial (held) state.
        let (held, changes) = evaluate(&config, &observed, &BTreeMap::new());
        assert_eq!(held, BTreeMap::from([(amqp, true), (ui, true)]));
        assert!(changes.is_empty());

        // The heavier one fails its check: weight 2 < 4 - 1, lost; quorum_down runs.
        observed.health.insert((amqp, r1, 0), Health::Down);
        let (held, changes) = evaluate(&config, &observed, &held);
        assert!(!held[&amqp] && held[&ui]);
        assert_eq!(
            changes,
            [QuorumChange {
                service: amqp,
                held: false,
                live_weight: 2,
                quorum: 4,
                script: Some("/bin/down".into()),
                sorry_server: true,
            }]
        );

        // Back up, but the other real's MAC is gone: weight 2 again, still lost, no change.
        observed.health.clear();
        observed.macs.remove(&r1.addr);
        let (held, changes) = evaluate(&config, &observed, &held);
        assert!(!held[&amqp] && changes.is_empty());

        // Both live: weight 5 >= 4 + 1, regained; quorum_up runs.
        observed.macs.insert(r1.addr, [2, 0, 0, 0, 0, 2]);
        let (held, changes) = evaluate(&config, &observed, &held);
        assert!(held[&amqp]);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].script.as_deref(), Some("/bin/up"));
    }

    #[test]
    fn quorum_counts_the_weights_checkers_set() {
        let config = Config::from_yaml(CONFIG, Path::new("q.yaml")).unwrap();
        let amqp = config.virtual_servers[0].key;
        let r1 = config.virtual_servers[0].real_servers[0].key;
        let mut observed = Observed::default();
        for rs in config.virtual_servers.iter().flat_map(|v| &v.real_servers) {
            observed.macs.insert(rs.key.addr, [2, 0, 0, 0, 0, 1]);
        }
        // misc_dynamic sets the weight-3 real to 0: live weight 2 < 4 - 1, lost.
        observed
            .weights
            .insert((amqp, r1, 0), crate::model::WeightEffect::Set(0));
        let (held, changes) = evaluate(&config, &observed, &BTreeMap::new());
        assert!(!held[&amqp]);
        assert_eq!(changes[0].live_weight, 2);
        // A file_check adds 10 to it: 12, regained.
        observed
            .weights
            .insert((amqp, r1, 1), crate::model::WeightEffect::Add(10));
        let (held, changes) = evaluate(&config, &observed, &held);
        assert!(held[&amqp]);
        assert_eq!(changes[0].live_weight, 12);
    }
}
