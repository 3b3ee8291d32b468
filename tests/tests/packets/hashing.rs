//! Packet-level tests of IPVS's hashing schedulers and scheduling flags: `dh` (by destination
//! address), `sh` and `mh` (by source address) with `sh-port`/`mh-port` and
//! `sh-fallback`/`mh-fallback`, and one-packet scheduling (`ops`) of UDP services. Real frames
//! through the real program (BPF_PROG_TEST_RUN). Needs root.

use std::{collections::BTreeMap, net::Ipv4Addr};

use lb_tests::{
    lab::{Lab, XDP_DROP, XDP_TX, desired, mac_of, rk, spec, tcp, udp},
    packet::{Frame, dst_mac, flags},
};
use lb_userspace::model::{Health, SchedFlags, Scheduler, ServiceKey, ServiceSpec, Thresholds};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);
const R1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const R2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);
const R3: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 13);
const M: u32 = 251;
const PORT: u16 = 53;

fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 0, 0)) + i)
}

fn with(sched: Scheduler, flags: SchedFlags) -> ServiceSpec {
    let mut s = spec(PORT, M, &[(R1, 1), (R2, 1), (R3, 1)]);
    s.scheduler = sched;
    s.flags = flags;
    s
}

fn lab(services: Vec<(ServiceKey, ServiceSpec)>) -> Lab {
    let mut lab = Lab::new();
    lab.apply(&desired(services));
    lab
}

/// The real a frame went to (`None`: dropped).
#[track_caller]
fn to(lab: &Lab, frame: &[u8]) -> Option<Ipv4Addr> {
    let out = lab.run(frame);
    match out.action {
        XDP_TX => {
            let mac = dst_mac(&out.frame);
            let real = [R1, R2, R3].into_iter().find(|r| mac_of(*r) == mac);
            Some(real.unwrap_or_else(|| panic!("sent to an unknown MAC {mac:02x?}")))
        }
        XDP_DROP => None,
        other => panic!("unexpected action {other}"),
    }
}

fn syn(c: u32, sport: u16, vip: Ipv4Addr) -> Vec<u8> {
    Frame::tcp(client(c), sport, vip, PORT, flags::SYN).build()
}

fn count(seen: impl IntoIterator<Item = Option<Ipv4Addr>>) -> BTreeMap<Option<Ipv4Addr>, u32> {
    let mut out = BTreeMap::new();
    for r in seen {
        *out.entry(r).or_default() += 1;
    }
    out
}

#[test]
fn dh_sends_every_client_of_a_destination_to_one_real() {
    let lab = lab(vec![
        (
            tcp(VIP, PORT),
            with(Scheduler::DestinationHash, SchedFlags::default()),
        ),
        (
            tcp(VIP2, PORT),
            with(Scheduler::DestinationHash, SchedFlags::default()),
        ),
    ]);
    for vip in [VIP, VIP2] {
        let seen = count((1..200).map(|c| to(&lab, &syn(c, 1000 + c as u16, vip))));
        assert_eq!(seen.len(), 1, "{vip}: one real for every client: {seen:?}");
        assert!(!seen.contains_key(&None), "{seen:?}");
    }
}

#[test]
fn sh_and_mh_keep_a_client_on_one_real_whatever_its_port_unless_port_is_set() {
    for sched_flags in [
        SchedFlags::default(),
        SchedFlags {
            port: true,
            ..SchedFlags::default()
        },
    ] {
        let lab = lab(vec![(
            tcp(VIP, PORT),
            with(Scheduler::SourceHash, sched_flags),
        )]);
        let mut spread_ports = 0;
        for c in 1..60 {
            let seen = count((0..30).map(|p| to(&lab, &syn(c, 2000 + p, VIP))));
            assert!(!seen.contains_key(&None), "{seen:?}");
            if seen.len() > 1 {
                spread_ports += 1;
            }
        }
        if sched_flags.port {
            assert!(
                spread_ports > 50,
                "sh-port spreads a client's ports: {spread_ports}"
            );
        } else {
            assert_eq!(
                spread_ports, 0,
                "without sh-port a client stays on one real"
            );
        }
    }
}

#[test]
fn sh_without_fallback_drops_a_down_or_overloaded_reals_clients_and_with_it_moves_them() {
    for fallback in [false, true] {
        let f = SchedFlags {
            fallback,
            ..SchedFlags::default()
        };
        let mut s = with(Scheduler::SourceHash, f);
        s.reals.get_mut(&rk(R1, PORT)).unwrap().thresholds = Thresholds {
            upper: 1000,
            lower: 0,
        };
        let mut lab = lab(vec![(tcp(VIP, PORT), s)]);
        // The clients that hash to R1; then R1 at its upper threshold.
        let on_r1: Vec<u32> = (1..300)
            .filter(|&c| to(&lab, &syn(c, 7, VIP)) == Some(R1))
            .collect();
        assert!(on_r1.len() > 50, "{}", on_r1.len());
        let i = lab.real_index(&tcp(VIP, PORT), &rk(R1, PORT));
        lab.set_load(i, 0, 1000);
        lab.dp.reconcile_loads(&[i]).unwrap();
        let seen = count(on_r1.iter().map(|&c| to(&lab, &syn(c, 8, VIP))));
        if fallback {
            assert!(
                !seen.contains_key(&None) && !seen.contains_key(&Some(R1)),
                "{seen:?}"
            );
        } else {
            assert_eq!(seen, BTreeMap::from([(None, on_r1.len() as u32)]));
        }
        // R1 down (the table still holds it until the agent rebuilds it: an entry in the
        // table for a real that is down).
        let mut d = lab.desired.clone();
        let spec = d.services.get_mut(&tcp(VIP, PORT)).unwrap();
        spec.reals.get_mut(&rk(R1, PORT)).unwrap().thresholds = Thresholds::default();
        lab.apply(&d);
        let i = lab.real_index(&tcp(VIP, PORT), &rk(R1, PORT));
        let mut real = lab.dp.real(i).unwrap();
        real.state = lb_common::REAL_DOWN;
        lab.dp
            .apply(&[lb_userspace::reconcile::plan::Op::SetReal { index: i, real }])
            .unwrap();
        let seen = count(on_r1.iter().map(|&c| to(&lab, &syn(c, 9, VIP))));
        if fallback {
            assert!(
                !seen.contains_key(&None) && !seen.contains_key(&Some(R1)),
                "{seen:?}"
            );
        } else {
            assert_eq!(seen, BTreeMap::from([(None, on_r1.len() as u32)]));
        }
    }
}

#[test]
fn ops_schedules_every_datagram_and_leaves_no_entry() {
    let ops = SchedFlags {
        one_packet: true,
        ..SchedFlags::default()
    };
    let mut rr = with(Scheduler::Maglev, ops);
    rr.reals.get_mut(&rk(R3, PORT)).unwrap().health = Health::Up;
    let lab = lab(vec![(udp(VIP, PORT), rr.clone()), (tcp(VIP, PORT), rr)]);
    let i1 = lab.real_index(&udp(VIP, PORT), &rk(R1, PORT));
    // One client, one port: under rr every datagram is placed afresh by its flow hash, so the
    // same flow keeps its real, but nothing is stored.
    let dgram = |c: u32, p: u16| Frame::udp(client(c), p, VIP, PORT).build();
    let seen = count((1..300).map(|c| to(&lab, &dgram(c, 5000))));
    assert_eq!(seen.len(), 3, "{seen:?}");
    for r in [R1, R2, R3] {
        let i = lab.real_index(&udp(VIP, PORT), &rk(r, PORT));
        assert_eq!(lab.load_of(i), (0, 0), "no connection entry for {r}");
    }
    assert_eq!(lab.load_of(i1), (0, 0));
    // A new real weight changes where the next datagram of the same flow goes at once: no
    // entry holds it. (Drain R1: its datagrams move.)
    let c = (1..300)
        .find(|&c| to(&lab, &dgram(c, 5000)) == Some(R1))
        .unwrap();
    let mut lab = lab;
    let mut d = lab.desired.clone();
    d.services
        .get_mut(&udp(VIP, PORT))
        .unwrap()
        .reals
        .get_mut(&rk(R1, PORT))
        .unwrap()
        .weight = 0;
    lab.apply(&d);
    assert_ne!(
        to(&lab, &dgram(c, 5000)),
        Some(R1),
        "no entry keeps the flow on R1"
    );
    // TCP ignores ops, as IPVS: a SYN leaves an entry.
    let t1 = lab.real_index(&tcp(VIP, PORT), &rk(R2, PORT));
    let t = (1..300)
        .find(|&c| to(&lab, &syn(c, 6000, VIP)) == Some(R2))
        .unwrap();
    assert!(t > 0);
    assert_eq!(lab.load_of(t1), (0, 1));
}

#[test]
fn without_ops_a_udp_flow_keeps_its_real_through_a_drain() {
    let mut lab = lab(vec![(
        udp(VIP, PORT),
        with(Scheduler::Maglev, SchedFlags::default()),
    )]);
    let dgram = |c: u32| Frame::udp(client(c), 5000, VIP, PORT).build();
    let c = (1..300).find(|&c| to(&lab, &dgram(c)) == Some(R1)).unwrap();
    let mut d = lab.desired.clone();
    d.services
        .get_mut(&udp(VIP, PORT))
        .unwrap()
        .reals
        .get_mut(&rk(R1, PORT))
        .unwrap()
        .weight = 0;
    lab.apply(&d);
    assert_eq!(to(&lab, &dgram(c)), Some(R1), "its entry keeps it");
}
