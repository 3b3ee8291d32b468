use std::net::{Ipv4Addr, Ipv6Addr};

use super::{fake_maps::FakeMaps, *};
use crate::model::{Health, Persistence, RealSpec, SchedFlags, Thresholds};

const M: u32 = 251;

fn limits() -> Limits {
    Limits {
        max_services: 4,
        max_reals: 16,
        max_table_size: M,
        conn_entries: 1024,
        persist_entries: 1024,
        conn_entries6: 1024,
        persist_entries6: 1024,
    }
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

fn real(weight: u32, last: u8) -> RealSpec {
    RealSpec {
        weight,
        thresholds: Thresholds::default(),
        mac: Some([2, 0, 0, 0, 0, last]),
        health: Health::Up,
    }
}

fn service(port: u16, reals: &[(u8, u32)]) -> ServiceSpec {
    ServiceSpec {
        scheduler: Scheduler::Maglev,
        flags: SchedFlags::default(),
        persistence: None,
        table_size: M,
        reals: reals
            .iter()
            .map(|&(last, w)| (rkey(last, port), real(w, last)))
            .collect(),
    }
}

fn desired(services: Vec<(u16, ServiceSpec)>) -> DesiredState {
    DesiredState {
        services: services.into_iter().map(|(p, s)| (skey(p), s)).collect(),
    }
}

const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

fn skey6(port: u16) -> ServiceKey {
    ServiceKey {
        vip: IpAddr::V6(VIP6),
        port,
        proto: Protocol::Tcp,
    }
}

fn rkey6(last: u8, port: u16) -> RealKey {
    RealKey {
        addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last.into())),
        port,
    }
}

fn service6(port: u16, reals: &[(u8, u32)]) -> ServiceSpec {
    ServiceSpec {
        reals: reals
            .iter()
            .map(|&(last, w)| (rkey6(last, port), real(w, last)))
            .collect(),
        ..service(port, &[])
    }
}

fn desired6(services: Vec<(u16, ServiceSpec)>) -> DesiredState {
    DesiredState {
        services: services.into_iter().map(|(p, s)| (skey6(p), s)).collect(),
    }
}

/// IPv4 services on 10.0.0.100 and IPv6 ones on 2001:db8::100 in one state.
fn dual(v4: Vec<(u16, ServiceSpec)>, v6: Vec<(u16, ServiceSpec)>) -> DesiredState {
    let mut d = desired(v4);
    d.services.extend(desired6(v6).services);
    d
}

/// The maps' model, checked after every op: what a packet could see.
impl FakeMaps {
    fn apply(&mut self, ops: &[Op]) {
        for op in ops {
            self.apply_op(op);
            self.check_invariant();
        }
    }

    fn service_id(&self, key: &Vip4Key) -> Option<u32> {
        if self.vips.is_empty() {
            return None;
        }
        viptable::lookup(&self.vips, key)
    }

    fn service_id6(&self, key: &Vip6Key) -> Option<u32> {
        if self.vips6.is_empty() {
            return None;
        }
        viptable::lookup(&self.vips6, key)
    }

    /// The service id a packet for `key` finds, in the table of its family.
    fn reachable(&self, key: &ServiceKey) -> Option<u32> {
        match (vip4_key(key), vip6_key(key)) {
            (Some(k), _) => self.service_id(&k),
            (_, Some(k)) => self.service_id6(&k),
            (None, None) => None,
        }
    }

    /// Every slot of every reachable service's table (in both VIP tables) points at a real
    /// that is up, belongs to the service and is of the VIP's family, and reachable
    /// services have parameters.
    fn check_invariant(&self) {
        let ids4 = viptable::entries::<Vip4Key>(&self.vips)
            .into_values()
            .map(|id| (id, 4));
        let ids6 = viptable::entries::<Vip6Key>(&self.vips6)
            .into_values()
            .map(|id| (id, 6));
        for (id, family) in ids4.chain(ids6) {
            assert!(
                self.params.contains_key(&id),
                "reachable service without params"
            );
            let (base, size) = *self.tables.get(&id).expect("reachable without table");
            for slot in 0..size {
                let r = self.lookup.get(&(base + slot)).copied().unwrap_or(0);
                assert_ne!(r, NO_REAL, "active table has an empty slot");
                let real = self.reals.get(&r).expect("table points at unwritten real");
                assert_eq!(real.state, REAL_UP, "active table points at a down real");
                assert_eq!(real.service_id, id, "active table points at a foreign real");
                assert_eq!(real.family, family, "active table points at another family");
            }
        }
    }

    fn table(&self, key: &ServiceKey) -> Vec<u32> {
        let id = self.reachable(key).expect("service reachable");
        let (base, size) = self.tables[&id];
        (0..size).map(|s| self.lookup[&(base + s)]).collect()
    }
}

fn apply(installed: &Installed, maps: &mut FakeMaps, d: &DesiredState) -> (Vec<Op>, Installed) {
    let (ops, next) = installed.plan(d).expect("plan");
    maps.apply(&ops);
    (ops, next)
}

fn count_slots(ops: &[Op]) -> usize {
    ops.iter()
        .map(|o| match o {
            Op::WriteSlots { slots, .. } => slots.len(),
            _ => 0,
        })
        .sum()
}

#[test]
fn first_install_writes_reals_table_and_vip_entries() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let d = desired(vec![(5672, service(5672, &[(2, 1), (3, 1)]))]);
    let (ops, next) = apply(&inst, &mut maps, &d);
    assert!(matches!(ops[0], Op::ResetServiceStats(0)));
    assert!(
        matches!(ops.last(), Some(Op::SetVips { .. })),
        "published last"
    );
    let id = maps.reachable(&skey(5672)).unwrap();
    let frag = maps.service_id(&vip4_key(&skey(5672)).unwrap().fragment());
    assert_eq!(frag, Some(id), "fragment entry follows the service");
    let table = maps.table(&skey(5672));
    assert_eq!(table.len(), M as usize);
    assert_eq!(next.active_table(&skey(5672)).unwrap(), &table[..]);
    let idx: Vec<u32> = next.services[&skey(5672)]
        .reals
        .values()
        .map(|r| r.index)
        .collect();
    assert!(idx.iter().all(|i| table.contains(i)));
}

#[test]
fn dual_stack_services_are_published_with_one_flip() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let udp = service6(53, &[(7, 1)]);
    let mut d = dual(
        vec![(80, service(80, &[(2, 1), (3, 1)]))],
        vec![
            (443, service6(443, &[(2, 1), (3, 1)])),
            (8443, service6(8443, &[(4, 1)])),
        ],
    );
    let udp_key = ServiceKey {
        proto: Protocol::Udp,
        ..skey6(53)
    };
    d.services.insert(udp_key, udp);
    let (ops, next) = apply(&inst, &mut maps, &d);
    let flips = ops
        .iter()
        .filter(|o| matches!(o, Op::SetVips { .. }))
        .count();
    assert_eq!(flips, 1, "one flip publishes both tables");
    assert!(matches!(ops.last(), Some(Op::SetVips { .. })));
    for key in d.services.keys() {
        assert_eq!(maps.reachable(key), Some(next.services[key].id), "{key}");
        assert_eq!(maps.table(key), next.active_table(key).unwrap());
    }
    // Fragment entries: the lowest port of each (VIP, protocol), per family.
    let tcp6 = vip6_key(&skey6(8443)).unwrap().fragment();
    assert_eq!(tcp6.port, 0);
    assert_eq!(maps.service_id6(&tcp6), Some(next.services[&skey6(443)].id));
    let udp6 = vip6_key(&udp_key).unwrap().fragment();
    assert_eq!(maps.service_id6(&udp6), Some(next.services[&udp_key].id));
    assert_eq!(
        maps.service_id(&vip4_key(&skey(80)).unwrap().fragment()),
        Some(next.services[&skey(80)].id)
    );
    assert_eq!(next.vips().len(), 2);
    assert_eq!(next.vips6().len(), 5);
    // IPv6 reals carry family 6 and their 16 address bytes.
    let r = &next.services[&skey6(443)].reals[&rkey6(3, 443)];
    assert_eq!(maps.reals[&r.index].family, 6);
    assert_eq!(
        maps.reals[&r.index].addr,
        "2001:db8::3".parse::<Ipv6Addr>().unwrap().octets()
    );
    let r4 = &next.services[&skey(80)].reals[&rkey(3, 80)];
    assert_eq!(maps.reals[&r4.index].family, 4);
    assert_eq!(maps.reals[&r4.index].addr[..4], [10, 0, 0, 3]);
    assert_eq!(
        next.plan(&d).unwrap().0,
        vec![],
        "same state: nothing to do"
    );
}

#[test]
fn a_change_in_one_family_rewrites_both_halves() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let d1 = dual(
        vec![(80, service(80, &[(2, 1)]))],
        vec![(443, service6(443, &[(2, 1)]))],
    );
    let (_, s1) = apply(&inst, &mut maps, &d1);
    // Only IPv6 changes: the IPv4 half that becomes active must still hold port 80.
    let d2 = dual(
        vec![(80, service(80, &[(2, 1)]))],
        vec![
            (443, service6(443, &[(2, 1)])),
            (444, service6(444, &[(3, 1)])),
        ],
    );
    let (ops, s2) = apply(&s1, &mut maps, &d2);
    let Some(Op::SetVips { v4, v6 }) = ops.iter().find(|o| matches!(o, Op::SetVips { .. })) else {
        panic!("no VIP flip in {ops:?}");
    };
    assert_eq!(viptable::entries::<Vip4Key>(v4), *s1.vips());
    assert_eq!(viptable::entries::<Vip6Key>(v6), *s2.vips6());
    assert_eq!(maps.reachable(&skey(80)), Some(s1.services[&skey(80)].id));
    assert!(maps.reachable(&skey6(444)).is_some());
    // Removing the IPv6 services leaves the IPv4 one; their reals go after the flip.
    let idx = s2.services[&skey6(444)].reals[&rkey6(3, 444)].index;
    let (ops, s3) = apply(&s2, &mut maps, &desired(vec![(80, service(80, &[(2, 1)]))]));
    let flip = ops
        .iter()
        .position(|o| matches!(o, Op::SetVips { .. }))
        .unwrap();
    let emptied = ops
        .iter()
        .position(|o| matches!(o, Op::SetReal { index, .. } if *index == idx))
        .unwrap();
    assert!(flip < emptied);
    assert!(s3.vips6().is_empty());
    assert_eq!(maps.reachable(&skey6(443)), None);
    assert_eq!(maps.reachable(&skey(80)), Some(s1.services[&skey(80)].id));
}

#[test]
fn ipv6_persistence_and_source_hash_masks() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let mut p64 = service6(443, &[(2, 1)]);
    p64.persistence = Some(Persistence {
        prefix6: 64,
        ..Persistence::per_client(50)
    });
    let mut p56 = service6(444, &[(2, 1)]);
    p56.persistence = Some(Persistence {
        // The IPv4 netmask does not apply to an IPv6 service.
        granularity: Ipv4Addr::new(255, 0, 0, 0),
        prefix6: 57,
        ..Persistence::per_client(50)
    });
    let mut sh = service6(445, &[(2, 1)]);
    sh.scheduler = Scheduler::SourceHash;
    let (_, s1) = apply(
        &inst,
        &mut maps,
        &desired6(vec![(443, p64), (444, p56), (445, sh)]),
    );
    let params = |port| maps.params[&s1.services[&skey6(port)].id];
    let p = params(443);
    assert_eq!(p.flags, SVC_F_PERSIST);
    assert_eq!(p.persist_timeout, 50);
    assert_eq!(
        addr6_bytes(&p.persist_mask6),
        [
            255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0
        ]
    );
    assert_eq!(p.persist_mask4, u32::MAX);
    assert_eq!(
        addr6_bytes(&params(444).persist_mask6),
        [
            255, 255, 255, 255, 255, 255, 255, 0x80, 0, 0, 0, 0, 0, 0, 0, 0
        ]
    );
    assert_eq!(params(444).persist_mask4, u32::MAX);
    let s = params(445);
    assert_eq!(s.flags, SVC_F_HASH_SRC);
    assert_eq!(s.persist_mask6, [u32::MAX; 4]);
}

#[test]
fn prefix_masks() {
    assert_eq!(prefix_mask6(128), [u32::MAX; 4]);
    assert_eq!(prefix_mask6(200), [u32::MAX; 4]);
    assert_eq!(prefix_mask6(0), [0; 4]);
    assert_eq!(
        addr6_bytes(&prefix_mask6(1)),
        [0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        addr6_bytes(&prefix_mask6(48)),
        [255, 255, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    // Words hold wire-order bytes, so a mask ANDs directly with an address's words.
    let a = addr6("2001:db8:1:2::5".parse::<Ipv6Addr>().unwrap().octets());
    let m = prefix_mask6(48);
    let masked: Addr6 = [a[0] & m[0], a[1] & m[1], a[2] & m[2], a[3] & m[3]];
    assert_eq!(
        addr6_bytes(&masked),
        "2001:db8:1::".parse::<Ipv6Addr>().unwrap().octets()
    );
}

#[test]
fn service_keys_round_trip_through_vip_keys() {
    for key in [skey(80), skey6(443)] {
        let back = match (vip4_key(&key), vip6_key(&key)) {
            (Some(k), None) => service_key_from_vip4(&k),
            (None, Some(k)) => service_key_from_vip6(&k),
            other => panic!("{key}: {other:?}"),
        };
        assert_eq!(back, Some(key));
    }
    assert_eq!(
        service_key_from_vip6(&vip6_key(&skey6(443)).unwrap().fragment()),
        None,
        "a fragment entry is no service"
    );
}

#[test]
fn same_state_twice_is_a_no_op() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let d = desired(vec![(5672, service(5672, &[(2, 1), (3, 1)]))]);
    let (_, next) = apply(&inst, &mut maps, &d);
    let (ops, _) = next.plan(&d).unwrap();
    assert!(ops.is_empty(), "{ops:?}");
}

#[test]
fn table_change_goes_to_inactive_buffer_then_is_published() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let (_, s1) = apply(
        &inst,
        &mut maps,
        &desired(vec![(80, service(80, &[(2, 1), (3, 1)]))]),
    );
    let id = s1.services[&skey(80)].id;
    let base1 = maps.tables[&id].0;
    let (ops, s2) = apply(
        &s1,
        &mut maps,
        &desired(vec![(80, service(80, &[(2, 1), (3, 1), (4, 1)]))]),
    );
    assert_ne!(
        maps.tables[&id].0, base1,
        "a changed table is published by a flip"
    );
    let w = ops
        .iter()
        .position(|o| matches!(o, Op::WriteSlots { .. }))
        .unwrap();
    let p = ops
        .iter()
        .position(|o| matches!(o, Op::PublishTable { .. }))
        .unwrap();
    assert!(w < p);
    assert!(
        !ops.iter().any(|o| matches!(o, Op::SetVips { .. })),
        "VIPs unchanged"
    );
    // Back to two reals: the old buffer already holds exactly that table.
    let (ops, _) = apply(
        &s2,
        &mut maps,
        &desired(vec![(80, service(80, &[(2, 1), (3, 1)]))]),
    );
    assert_eq!(count_slots(&ops), 0);
    assert_eq!(maps.tables[&id].0, base1);
}

#[test]
fn down_real_leaves_table_before_it_is_marked_down() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let mut spec = service(80, &[(2, 1), (3, 1), (4, 1)]);
    let (_, s1) = apply(&inst, &mut maps, &desired(vec![(80, spec.clone())]));
    spec.reals.get_mut(&rkey(3, 80)).unwrap().health = Health::Down;
    // FakeMaps checks after every op that no reachable table points at a down real.
    let (ops, s2) = apply(&s1, &mut maps, &desired(vec![(80, spec.clone())]));
    let idx3 = s1.services[&skey(80)].reals[&rkey(3, 80)].index;
    assert!(ops.iter().any(
        |o| matches!(o, Op::SetReal { index, real } if *index == idx3 && real.state == REAL_DOWN)
    ));
    assert!(!maps.table(&skey(80)).contains(&idx3));
    spec.reals.get_mut(&rkey(3, 80)).unwrap().health = Health::Up;
    apply(&s2, &mut maps, &desired(vec![(80, spec)]));
    assert!(maps.table(&skey(80)).contains(&idx3));
}

/// Plans skip rebuilding a table whose input did not change; every change of the input
/// (a real out and back, all reals out and back, the size, a service replaced under the
/// same id) still gives the table a fresh build would.
#[test]
fn tables_are_rebuilt_exactly_when_their_input_changes() {
    // A table as the reals' addresses its slots name (indices differ between views).
    let addrs = |inst: &Installed, maps: &FakeMaps, key: &ServiceKey| -> Vec<IpAddr> {
        let svc = &inst.services[key];
        let addr = |i: u32| svc.reals.iter().find(|(_, r)| r.index == i).unwrap().0.addr;
        maps.table(key).into_iter().map(addr).collect()
    };
    let fresh = |d: &DesiredState, key: &ServiceKey| {
        let mut maps = FakeMaps::default();
        let (_, inst) = apply(&Installed::new(limits()), &mut maps, d);
        addrs(&inst, &maps, key)
    };
    let mut maps = FakeMaps::default();
    let mut spec = service(80, &[(2, 1), (3, 1), (4, 1)]);
    let d1 = desired(vec![(80, spec.clone())]);
    let (_, s) = apply(&Installed::new(limits()), &mut maps, &d1);
    let (ops, s) = apply(&s, &mut maps, &d1);
    assert!(ops.is_empty(), "{ops:?}");

    spec.reals.get_mut(&rkey(3, 80)).unwrap().health = Health::Down;
    let (_, s) = apply(&s, &mut maps, &desired(vec![(80, spec.clone())]));
    spec.reals.get_mut(&rkey(3, 80)).unwrap().health = Health::Up;
    let (_, s) = apply(&s, &mut maps, &d1);
    assert_eq!(addrs(&s, &maps, &skey(80)), fresh(&d1, &skey(80)));

    for r in spec.reals.values_mut() {
        r.health = Health::Down;
    }
    let (_, s) = apply(&s, &mut maps, &desired(vec![(80, spec.clone())]));
    assert!(maps.table(&skey(80)).is_empty());
    let (ops, s) = apply(&s, &mut maps, &d1);
    assert!(
        ops.iter()
            .any(|o| matches!(o, Op::PublishTable { size, .. } if *size == M))
    );
    assert_eq!(addrs(&s, &maps, &skey(80)), fresh(&d1, &skey(80)));

    let mut smaller = service(80, &[(2, 1), (3, 1), (4, 1)]);
    smaller.table_size = 13;
    let d2 = desired(vec![(80, smaller)]);
    let (_, s) = apply(&s, &mut maps, &d2);
    assert_eq!(maps.table(&skey(80)).len(), 13);
    assert_eq!(addrs(&s, &maps, &skey(80)), fresh(&d2, &skey(80)));

    // The service goes, another one takes its id with the same reals' addresses.
    let (_, s) = apply(&s, &mut maps, &desired(vec![]));
    let d3 = desired(vec![(81, service(81, &[(2, 1), (3, 1), (4, 1)]))]);
    let (_, s) = apply(&s, &mut maps, &d3);
    assert_eq!(addrs(&s, &maps, &skey(81)), fresh(&d3, &skey(81)));
    let (ops, _) = apply(&s, &mut maps, &d3);
    assert!(ops.is_empty(), "{ops:?}");
}

#[test]
fn drained_real_stays_up_but_leaves_table() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let (_, s1) = apply(
        &inst,
        &mut maps,
        &desired(vec![(80, service(80, &[(2, 1), (3, 1)]))]),
    );
    apply(
        &s1,
        &mut maps,
        &desired(vec![(80, service(80, &[(2, 1), (3, 0)]))]),
    );
    let idx3 = s1.services[&skey(80)].reals[&rkey(3, 80)].index;
    assert_eq!(maps.reals[&idx3].state, REAL_UP);
    assert!(!maps.table(&skey(80)).contains(&idx3));
}

#[test]
fn unresolved_mac_means_down() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let mut spec = service(80, &[(2, 1), (3, 1)]);
    spec.reals.get_mut(&rkey(3, 80)).unwrap().mac = None;
    let (_, s1) = apply(&inst, &mut maps, &desired(vec![(80, spec)]));
    let idx3 = s1.services[&skey(80)].reals[&rkey(3, 80)].index;
    assert_eq!(maps.reals[&idx3].state, REAL_DOWN);
    assert!(!maps.table(&skey(80)).contains(&idx3));
}

#[test]
fn no_usable_real_publishes_an_empty_table_and_it_comes_back() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let (_, s1) = apply(
        &inst,
        &mut maps,
        &desired(vec![(80, service(80, &[(2, 1)]))]),
    );
    let id = s1.services[&skey(80)].id;
    let (_, s2) = apply(&s1, &mut maps, &desired(vec![(80, service(80, &[(2, 0)]))]));
    assert_eq!(maps.tables[&id].1, 0);
    assert_eq!(s2.active_table(&skey(80)).unwrap(), &[] as &[u32]);
    apply(&s2, &mut maps, &desired(vec![(80, service(80, &[(2, 1)]))]));
    assert_eq!(maps.tables[&id].1, M);
    assert_eq!(maps.table(&skey(80)), s1.active_table(&skey(80)).unwrap());
}

#[test]
fn remove_service_and_reals_then_reuse_ids() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let (_, s1) = apply(
        &inst,
        &mut maps,
        &desired(vec![
            (80, service(80, &[(2, 1)])),
            (443, service(443, &[(2, 1), (3, 1)])),
        ]),
    );
    let (ops, s2) = apply(
        &s1,
        &mut maps,
        &desired(vec![(443, service(443, &[(2, 1), (3, 1)]))]),
    );
    assert_eq!(maps.reachable(&skey(80)), None);
    let frag = maps.service_id(&vip4_key(&skey(443)).unwrap().fragment());
    assert_eq!(
        frag,
        Some(s2.services[&skey(443)].id),
        "fragments follow port 443"
    );
    let idx = s1.services[&skey(80)].reals[&rkey(2, 80)].index;
    assert_eq!(maps.reals[&idx], Real::EMPTY);
    let vips = ops
        .iter()
        .position(|o| matches!(o, Op::SetVips { .. }))
        .unwrap();
    let down = ops
        .iter()
        .position(|o| matches!(o, Op::SetReal { index, .. } if *index == idx))
        .unwrap();
    assert!(
        vips < down,
        "service is unreachable before its reals are emptied"
    );
    let (_, s3) = apply(
        &s2,
        &mut maps,
        &desired(vec![(443, service(443, &[(2, 1), (3, 1), (4, 1)]))]),
    );
    assert_ne!(
        s3.services[&skey(443)].reals[&rkey(4, 443)].index,
        idx,
        "freed real indices are reused last"
    );
}

#[test]
fn removed_real_drains_its_connections_until_retired() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let (_, s1) = apply(
        &inst,
        &mut maps,
        &desired(vec![(80, service(80, &[(2, 1), (3, 1)]))]),
    );
    let idx3 = s1.services[&skey(80)].reals[&rkey(3, 80)].index;
    let (ops, s2) = apply(&s1, &mut maps, &desired(vec![(80, service(80, &[(2, 1)]))]));
    assert!(
        !ops.iter()
            .any(|o| matches!(o, Op::SetReal { index, .. } if *index == idx3)),
        "a removed real's entry stays, so its flows continue: {ops:?}"
    );
    assert_eq!(maps.reals[&idx3].state, REAL_UP);
    assert!(!maps.table(&skey(80)).contains(&idx3), "no new flows");
    assert!(s2.services[&skey(80)].retiring.contains_key(&rkey(3, 80)));
    // Still carrying connections: nothing happens.
    let (ops, released, same) = s2.retire(|i| i == idx3);
    assert!(ops.is_empty() && released.is_empty());
    assert_eq!(same.services, s2.services);
    // Idle: emptied and its index freed.
    let (ops, released, s3) = s2.retire(|_| false);
    maps.apply(&ops);
    assert_eq!(released, vec![(skey(80), rkey(3, 80))]);
    assert_eq!(maps.reals[&idx3], Real::EMPTY);
    assert!(s3.services[&skey(80)].retiring.is_empty());
    assert!(s3.free_reals.contains(&idx3));
}

#[test]
fn a_retiring_real_that_comes_back_keeps_its_index() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let both = desired(vec![(80, service(80, &[(2, 1), (3, 1)]))]);
    let (_, s1) = apply(&inst, &mut maps, &both);
    let idx3 = s1.services[&skey(80)].reals[&rkey(3, 80)].index;
    let (_, s2) = apply(&s1, &mut maps, &desired(vec![(80, service(80, &[(2, 1)]))]));
    let (ops, s3) = apply(&s2, &mut maps, &both);
    assert_eq!(s3.services[&skey(80)].reals[&rkey(3, 80)].index, idx3);
    assert!(s3.services[&skey(80)].retiring.is_empty());
    assert!(maps.table(&skey(80)).contains(&idx3));
    assert!(!ops.iter().any(|o| matches!(o, Op::ResetRealStats(_))));
}

#[test]
fn least_connection_services_get_their_candidates() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let mut spec = service(80, &[(2, 1), (3, 2), (4, 0)]);
    spec.scheduler = Scheduler::WeightedLeastConn;
    let (_, s1) = apply(&inst, &mut maps, &desired(vec![(80, spec.clone())]));
    let svc = &s1.services[&skey(80)];
    assert_eq!(maps.params[&svc.id].sched, lb_common::SCHED_WLC);
    let idx = |last| svc.reals[&rkey(last, 80)].index;
    let c = maps.candidates[&svc.id];
    assert_eq!(
        &c[..3],
        &[idx(2), idx(3), NO_REAL],
        "drained reals are no candidates"
    );
    assert_eq!(maps.reals[&idx(3)].weight, 2);
    assert_eq!(maps.reals[&idx(4)].weight, 0);
    // A real going down leaves the candidates.
    spec.reals.get_mut(&rkey(2, 80)).unwrap().health = Health::Down;
    let (ops, _) = apply(&s1, &mut maps, &desired(vec![(80, spec)]));
    assert!(ops.iter().any(|o| matches!(o, Op::SetCandidates { .. })));
    assert_eq!(maps.candidates[&svc.id][0], idx(3));
    // Maglev services have none.
    let (_, s2) = apply(
        &inst,
        &mut FakeMaps::default(),
        &desired(vec![(80, service(80, &[(2, 1)]))]),
    );
    assert_eq!(s2.services[&skey(80)].candidates, [NO_REAL; LC_CANDIDATES]);
}

#[test]
fn persistence_and_source_hash_params() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let mut spec = service(80, &[(2, 1)]);
    spec.persistence = Some(Persistence {
        timeout: 50,
        granularity: Ipv4Addr::new(255, 255, 255, 0),
        prefix6: 64,
    });
    let mut sh = service(81, &[(2, 1)]);
    sh.scheduler = Scheduler::SourceHash;
    let (_, s1) = apply(&inst, &mut maps, &desired(vec![(80, spec), (81, sh)]));
    let p = maps.params[&s1.services[&skey(80)].id];
    assert_eq!(p.flags, SVC_F_PERSIST);
    assert_eq!(p.persist_timeout, 50);
    assert_eq!(p.persist_mask4.to_ne_bytes(), [255, 255, 255, 0]);
    assert_eq!(
        p.persist_mask6,
        [u32::MAX; 4],
        "an IPv4 service's IPv6 mask is all ones"
    );
    let s = maps.params[&s1.services[&skey(81)].id];
    assert_eq!(s.flags, SVC_F_HASH_SRC);
    assert_eq!(s.persist_mask4, u32::MAX);
}

#[test]
fn capacity_errors_change_nothing() {
    let inst = Installed::new(limits());
    let five: Vec<_> = (1..=5).map(|p| (p, service(p, &[(2, 1)]))).collect();
    assert_eq!(
        inst.plan(&desired(five)).unwrap_err(),
        PlanError::TooManyServices { wanted: 5, max: 4 }
    );
    let many: Vec<(u8, u32)> = (1..=16).map(|i| (i, 1)).collect();
    assert!(matches!(
        inst.plan(&desired(vec![(80, service(80, &many))]))
            .unwrap_err(),
        PlanError::TooManyReals {
            wanted: 16,
            max: 15
        }
    ));
    let mut big = service(80, &[(2, 1)]);
    big.table_size = 257;
    assert!(matches!(
        inst.plan(&desired(vec![(80, big)])).unwrap_err(),
        PlanError::TableTooLarge { size: 257, .. }
    ));
    let mut mixed = desired(vec![]);
    mixed.services.insert(skey6(80), service(80, &[(2, 1)]));
    assert!(matches!(
        inst.plan(&mixed).unwrap_err(),
        PlanError::MixedFamily { .. }
    ));
    let mut bad_prefix = service6(80, &[(2, 1)]);
    bad_prefix.persistence = Some(Persistence {
        prefix6: 129,
        ..Persistence::per_client(50)
    });
    assert!(matches!(
        inst.plan(&desired6(vec![(80, bad_prefix)])).unwrap_err(),
        PlanError::Granularity { prefix: 129, .. }
    ));
    assert!(matches!(
        inst.plan(&desired(vec![(0, service(0, &[(2, 1)]))]))
            .unwrap_err(),
        PlanError::PortZero(_)
    ));
    assert!(inst.services.is_empty());
}

#[test]
fn replacing_all_reals_counts_old_and_new_at_peak() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let a: Vec<(u8, u32)> = (1..=8).map(|i| (i, 1)).collect();
    let b: Vec<(u8, u32)> = (9..=16).map(|i| (i, 1)).collect();
    let (_, s1) = apply(&inst, &mut maps, &desired(vec![(80, service(80, &a))]));
    assert!(matches!(
        s1.plan(&desired(vec![(80, service(80, &b))])).unwrap_err(),
        PlanError::TooManyReals { wanted: 16, .. }
    ));
}

#[test]
fn mac_change_rewrites_the_real_only() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let mut spec = service(80, &[(2, 1), (3, 1)]);
    let (_, s1) = apply(&inst, &mut maps, &desired(vec![(80, spec.clone())]));
    spec.reals.get_mut(&rkey(3, 80)).unwrap().mac = Some([2, 0, 0, 0, 0, 0x33]);
    let (ops, _) = apply(&s1, &mut maps, &desired(vec![(80, spec)]));
    assert_eq!(ops.len(), 1, "{ops:?}");
    let idx3 = s1.services[&skey(80)].reals[&rkey(3, 80)].index;
    assert_eq!(maps.reals[&idx3].mac, [2, 0, 0, 0, 0, 0x33]);
}

impl FakeMaps {
    /// The maps as arrays, as a restarted agent finds them.
    fn reconstruct(&self, limits: Limits) -> (Installed, Vec<u32>) {
        let mut services = vec![
            Service {
                flags: 0,
                persist_timeout: 0,
                persist_mask4: 0,
                sched: 0,
                table: 0,
                persist_mask6: [0; 4],
            };
            limits.max_services as usize
        ];
        for (id, p) in &self.params {
            services[*id as usize].flags = p.flags;
            services[*id as usize].persist_timeout = p.persist_timeout;
            services[*id as usize].persist_mask4 = p.persist_mask4;
            services[*id as usize].sched = p.sched;
            services[*id as usize].persist_mask6 = p.persist_mask6;
        }
        let mut candidates = vec![[NO_REAL; LC_CANDIDATES]; limits.max_services as usize];
        for (id, c) in &self.candidates {
            candidates[*id as usize] = *c;
        }
        for (id, (base, size)) in &self.tables {
            services[*id as usize].table = Service::pack_table(*base, *size);
        }
        let mut reals = vec![Real::EMPTY; limits.max_reals as usize];
        for (i, r) in &self.reals {
            reals[*i as usize] = *r;
        }
        let empty4 = vec![VipBucket4::EMPTY; limits.vip_buckets() as usize];
        let empty6 = vec![VipBucket6::EMPTY; limits.vip_buckets() as usize];
        let vips = if self.vips.is_empty() {
            &empty4
        } else {
            &self.vips
        };
        let vips6 = if self.vips6.is_empty() {
            &empty6
        } else {
            &self.vips6
        };
        Installed::reconstruct(limits, vips, vips6, &services, &candidates, &reals, |s| {
            self.lookup.get(&s).copied().unwrap_or(0)
        })
    }
}

#[test]
fn reconstructed_view_plans_nothing_and_keeps_working() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let mut p = service(443, &[(2, 1), (5, 0)]);
    p.persistence = Some(Persistence {
        timeout: 50,
        granularity: Ipv4Addr::new(255, 255, 255, 0),
        prefix6: 128,
    });
    let d = desired(vec![(80, service(80, &[(2, 1), (3, 1), (4, 1)])), (443, p)]);
    let (_, s1) = apply(&inst, &mut maps, &d);
    // A second change so that both buffers of port 80 are in use.
    let mut d2 = d.clone();
    d2.services
        .get_mut(&skey(80))
        .unwrap()
        .reals
        .get_mut(&rkey(4, 80))
        .unwrap()
        .weight = 3;
    let (_, s2) = apply(&s1, &mut maps, &d2);
    // A real left behind by an interrupted change (its service is gone).
    maps.reals.insert(
        14,
        Real {
            service_id: 3,
            family: 4,
            ..Real::EMPTY
        },
    );
    let (rebuilt, stale) = maps.reconstruct(limits());
    assert_eq!(stale, vec![14]);
    assert_eq!(rebuilt.services, s2.services);
    assert_eq!(rebuilt.vips, s2.vips);
    let (ops, _) = rebuilt.plan(&d2).unwrap();
    assert!(
        ops.is_empty(),
        "adoption must not rewrite anything: {ops:?}"
    );
    // Further changes from the rebuilt view are minimal and keep the invariant.
    let (ops, _) = rebuilt.plan(&d).unwrap();
    maps.apply(&ops);
    assert!(count_slots(&ops) < M as usize / 2);
    assert_eq!(maps.table(&skey(80)), s1.active_table(&skey(80)).unwrap());
}

#[test]
fn reconstructed_dual_stack_view_plans_nothing() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let mut p = service6(443, &[(2, 1), (3, 1)]);
    p.persistence = Some(Persistence {
        prefix6: 64,
        ..Persistence::per_client(50)
    });
    let d = dual(
        vec![(80, service(80, &[(2, 1), (3, 1)]))],
        vec![(443, p), (80, service6(80, &[(4, 1)]))],
    );
    let (_, s1) = apply(&inst, &mut maps, &d);
    let (rebuilt, stale) = maps.reconstruct(limits());
    assert!(stale.is_empty());
    assert_eq!(rebuilt.services, s1.services);
    assert_eq!(rebuilt.vips, s1.vips);
    assert_eq!(rebuilt.vips6, s1.vips6);
    let (ops, _) = rebuilt.plan(&d).unwrap();
    assert!(
        ops.is_empty(),
        "adoption must not rewrite anything: {ops:?}"
    );
    let key = RealKey {
        addr: "2001:db8::3".parse().unwrap(),
        port: 443,
    };
    assert!(rebuilt.services[&skey6(443)].reals.contains_key(&key));
}

#[test]
fn weight_change_rewrites_only_changed_slots() {
    let inst = Installed::new(limits());
    let mut maps = FakeMaps::default();
    let reals: Vec<(u8, u32)> = (1..=10).map(|i| (i, 100)).collect();
    let (_, s1) = apply(&inst, &mut maps, &desired(vec![(80, service(80, &reals))]));
    let mut w4 = reals.clone();
    w4[3].1 = 50;
    // The second buffer starts empty, so the first change fills it whole.
    let (ops, s2) = apply(&s1, &mut maps, &desired(vec![(80, service(80, &w4))]));
    assert_eq!(count_slots(&ops), M as usize);
    // From then on only the slots that differ from the buffer's old table are written.
    let mut w5 = reals.clone();
    w5[4].1 = 50;
    let (ops, _) = apply(&s2, &mut maps, &desired(vec![(80, service(80, &w5))]));
    let written = count_slots(&ops);
    assert!(
        written > 0 && written < M as usize / 5,
        "{written} of {M} slots written"
    );
}
