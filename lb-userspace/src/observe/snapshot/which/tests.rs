use std::collections::BTreeMap;

use lb_common::{Template, addr6, source_hash6};

use super::*;
use crate::observe::snapshot::tests::{NOW, conn, real6, svc6, v6};
use crate::{
    model::Limits,
    model::{
        DesiredState, Health, Persistence, RealSpec, SchedFlags, Scheduler, ServiceSpec, Thresholds,
    },
    reconcile::plan::{Installed, Op, fake_maps::FakeMaps},
};

/// A model of the tables `which` reads, filled by the planner's ops.
#[derive(Default)]
struct FakeTables {
    clock: u32,
    maps: FakeMaps,
    conns4: BTreeMap<Flow4Key, ConnEntry>,
    conns6: BTreeMap<Flow6Key, Conn6Entry>,
    templates4: BTreeMap<Persist4Key, TemplateEntry>,
    templates6: BTreeMap<Persist6Key, Template6Entry>,
    loads: BTreeMap<u32, Counts>,
}

impl FakeTables {
    fn apply(&mut self, ops: &[Op]) {
        for op in ops {
            self.maps.apply_op(op);
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
        self.maps.reals.get(&index).copied()
    }

    fn load(&self, index: u32) -> Counts {
        self.loads.get(&index).copied().unwrap_or_default()
    }

    fn overloaded(&self, _index: u32) -> bool {
        false
    }

    fn candidates(&self, id: u32) -> Result<Candidates, WhichError> {
        Ok(self.maps.candidates.get(&id).copied().unwrap_or_default())
    }

    fn slot(&self, index: u32) -> Result<u32, WhichError> {
        Ok(self
            .maps
            .lookup
            .get(&index)
            .copied()
            .unwrap_or(lb_common::NO_REAL))
    }
}

const M: u32 = 251;
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
        flags: SchedFlags::default(),
        persistence: None,
        table_size: M,
        reals: reals
            .iter()
            .map(|&r| {
                let spec = RealSpec {
                    weight: 1,
                    thresholds: Thresholds::default(),
                    mac: Some([2, 0, 0, 0, 0, r as u8]),
                    health: Health::Up,
                };
                (real6(r), spec)
            })
            .collect(),
    }
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
    let by_table = t.maps.lookup[&(base + slot)];
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
    t.maps.reals.get_mut(&other).unwrap().state = lb_common::REAL_DOWN;
    assert_eq!(
        which_in(&t, &inst, &key, client).unwrap().source,
        "lookup table"
    );
    // An IPv4 client of an IPv6 service has no flow.
    let err = which_in(&t, &inst, &key, "192.0.2.1:40000".parse().unwrap()).unwrap_err();
    assert!(matches!(err, WhichError::AddressFamily { .. }), "{err}");
    assert!(err.to_string().contains("address family"), "{err}");
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
    t.maps.reals.get_mut(&pinned).unwrap().weight = 0;
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
