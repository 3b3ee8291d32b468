//! Packet-level tests of IPVS's weight-ordered schedulers, `fo` (weighted failover) and `ovf`
//! (overflow): which real's MAC new flows go to over many flows, as reals go down, overflow or
//! overload. Real frames through the real program (BPF_PROG_TEST_RUN). Needs root.

use std::{collections::BTreeMap, net::Ipv4Addr};

use lb_tests::{
    lab::{Lab, XDP_TX, desired, rk, spec, tcp},
    packet::{Frame, flags},
};
use lb_userspace::model::{Health, Scheduler, ServiceKey, ServiceSpec, Thresholds};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const R1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const R2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);
const R3: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 13);
const M: u32 = 251;
const PORT: u16 = 443;

fn svc() -> ServiceKey {
    tcp(VIP, PORT)
}

fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 0, 0)) + i)
}

fn with(sched: Scheduler, reals: &[(Ipv4Addr, u32)]) -> ServiceSpec {
    let mut s = spec(PORT, M, reals);
    s.scheduler = sched;
    s
}

fn lab(s: ServiceSpec) -> Lab {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(svc(), s)]));
    lab
}

fn index(lab: &Lab, r: Ipv4Addr) -> u32 {
    lab.real_index(&svc(), &rk(r, PORT))
}

/// SYNs from clients `first..first + n`, each run once: how many went to each real (dropped
/// ones under `None`).
fn spread(lab: &Lab, first: u32, n: u32) -> BTreeMap<Option<Ipv4Addr>, u32> {
    lab.destinations(
        (first..first + n).map(|c| Frame::tcp(client(c), 40000, VIP, PORT, flags::SYN).build()),
        &[R1, R2, R3],
    )
}

fn all_to(r: Option<Ipv4Addr>, n: u32) -> BTreeMap<Option<Ipv4Addr>, u32> {
    BTreeMap::from([(r, n)])
}

#[test]
fn fo_sends_every_new_flow_to_the_heaviest_available_real() {
    let s = with(Scheduler::Failover, &[(R1, 1), (R2, 3), (R3, 2)]);
    let mut lab = lab(s.clone());
    assert_eq!(spread(&lab, 1, 100), all_to(Some(R2), 100));
    assert_eq!(
        lab.load_of(index(&lab, R2)),
        (0, 100),
        "100 SYN_RECV entries"
    );
    // Connections do not matter: R2 stays the choice however loaded.
    lab.set_load(index(&lab, R2), 10_000, 0);
    assert_eq!(spread(&lab, 100, 20), all_to(Some(R2), 20));
    // R2 down: the next heaviest.
    let mut down = s.clone();
    down.reals.get_mut(&rk(R2, PORT)).unwrap().health = Health::Down;
    lab.apply(&desired(vec![(svc(), down.clone())]));
    assert_eq!(spread(&lab, 200, 50), all_to(Some(R3), 50));
    // R3 drained (weight 0) too: R1.
    down.reals.get_mut(&rk(R3, PORT)).unwrap().weight = 0;
    lab.apply(&desired(vec![(svc(), down)]));
    assert_eq!(spread(&lab, 300, 50), all_to(Some(R1), 50));
    // Back up: R2 again.
    lab.apply(&desired(vec![(svc(), s)]));
    assert_eq!(spread(&lab, 400, 50), all_to(Some(R2), 50));
}

#[test]
fn fo_skips_an_overloaded_real() {
    let mut s = with(Scheduler::Failover, &[(R1, 1), (R2, 3), (R3, 2)]);
    s.reals.get_mut(&rk(R2, PORT)).unwrap().thresholds = Thresholds {
        upper: 30,
        lower: 10,
    };
    let mut lab = lab(s);
    // 30 flows fill R2 to its upper threshold; the rest go to R3.
    let seen = spread(&lab, 1, 100);
    assert_eq!(seen, BTreeMap::from([(Some(R2), 30), (Some(R3), 70)]));
    // Below the lower threshold again (connections ended, counted by the agent's recount).
    let i = index(&lab, R2);
    lab.set_load(i, 0, 9);
    lab.dp.reconcile_loads(&[i]).unwrap();
    assert_eq!(spread(&lab, 200, 5), all_to(Some(R2), 5));
}

#[test]
fn equal_weights_go_to_the_same_real_every_time() {
    let lab = lab(with(Scheduler::Failover, &[(R1, 2), (R2, 2), (R3, 1)]));
    let seen = spread(&lab, 1, 50);
    assert_eq!(seen.len(), 1, "one real takes every flow: {seen:?}");
    assert!(seen.contains_key(&Some(R1)) || seen.contains_key(&Some(R2)));
}

#[test]
fn ovf_fills_the_heaviest_real_up_to_its_weight_then_overflows_by_weight() {
    let mut lab = lab(with(Scheduler::Overflow, &[(R1, 2), (R2, 5), (R3, 1)]));
    // Only active (ESTABLISHED) connections count: SYN_RECV entries do not fill R2.
    assert_eq!(spread(&lab, 1, 40), all_to(Some(R2), 40));
    // R2 with 5 active connections holds as many as its weight: still R2.
    lab.set_load(index(&lab, R2), 5, 0);
    assert_eq!(spread(&lab, 100, 10), all_to(Some(R2), 10));
    // 6 > 5: R2 overflows to the next heaviest, R1...
    lab.set_load(index(&lab, R2), 6, 0);
    assert_eq!(spread(&lab, 200, 10), all_to(Some(R1), 10));
    // ...then R3...
    lab.set_load(index(&lab, R1), 3, 0);
    assert_eq!(spread(&lab, 300, 10), all_to(Some(R3), 10));
    // ...and with every real overflowing, no real: the SYN is dropped, as IPVS does.
    lab.set_load(index(&lab, R3), 2, 0);
    assert_eq!(spread(&lab, 400, 10), all_to(None, 10));
    // A handshake completing on R2 makes its connection active.
    lab.set_load(index(&lab, R2), 0, 0);
    let c = client(500);
    let syn = Frame::tcp(c, 1, VIP, PORT, flags::SYN).build();
    let ack = Frame::tcp(c, 1, VIP, PORT, flags::ACK).build();
    assert_eq!(lab.run(&syn).action, XDP_TX);
    assert_eq!(lab.run(&ack).action, XDP_TX);
    assert_eq!(lab.load_of(index(&lab, R2)), (1, 0));
}
