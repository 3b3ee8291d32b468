//! IPVS's rate estimator over the data plane's counters, and the counters it samples.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    control::{Counters, Rates},
    dataplane::Dataplane,
    model::{RealKey, ServiceKey},
    reconcile::plan::Installed,
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

    pub(super) fn service(&self, key: &ServiceKey) -> Rates {
        self.services
            .get(key)
            .map(|(_, a)| a.rates())
            .unwrap_or_default()
    }

    pub(super) fn real(&self, key: &(ServiceKey, RealKey)) -> Rates {
        self.reals
            .get(key)
            .map(|(_, a)| a.rates())
            .unwrap_or_default()
    }
}

/// The counters of a service (by id) or a real (by index) as the data plane keeps them.
pub(super) fn counters(dp: &Dataplane, service: Option<u32>, real: Option<u32>) -> Counters {
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::model::Protocol;

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
