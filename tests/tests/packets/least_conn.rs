//! Packet-level tests of the least-connection schedulers (lc, wlc, sed, nq): real frames through
//! the real program (BPF_PROG_TEST_RUN), with the per-real connection counts set to known
//! values, and the counts read back as the program moves them. Needs root.

use std::{collections::BTreeMap, net::Ipv4Addr};

use lb_common::{ConnState, Flow4Key, NO_REAL, RealLoad, proto};
use lb_tests::{
    lab::{Lab, XDP_TX, desired, expect_tx, mac_of, persistent, rk, spec, tcp, udp},
    packet::{Frame, dst_mac, flags},
};
use lb_userspace::{
    model::{Health, Scheduler, ServiceKey, ServiceSpec},
    schedule::load,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const R1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const R2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);
const R3: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 13);
const M: u32 = 251;
const PORT: u16 = 5672;

fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 0, 0)) + i)
}

fn svc() -> ServiceKey {
    tcp(VIP, PORT)
}

fn with(sched: Scheduler, reals: &[(Ipv4Addr, u32)]) -> ServiceSpec {
    let mut s = spec(PORT, M, reals);
    s.scheduler = sched;
    s
}

fn lab(sched: Scheduler, reals: &[(Ipv4Addr, u32)]) -> Lab {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(svc(), with(sched, reals))]));
    lab
}

fn tcp_frame(src: Ipv4Addr, sport: u16, f: u8) -> Vec<u8> {
    Frame::tcp(src, sport, VIP, PORT, f).build()
}

/// Runs `frame`, asserts XDP_TX with only the MACs changed, returns the real's address.
#[track_caller]
fn sent_to(lab: &Lab, frame: &[u8]) -> Ipv4Addr {
    let mac = expect_tx(lab, frame);
    [R1, R2, R3]
        .into_iter()
        .find(|r| mac_of(*r) == mac)
        .unwrap_or_else(|| panic!("sent to an unknown MAC {mac:02x?}"))
}

fn index(lab: &Lab, r: Ipv4Addr) -> u32 {
    lab.real_index(&svc(), &rk(r, PORT))
}

/// Sets a real's counts to `(active, inactive)`.
fn set_load(lab: &mut Lab, r: Ipv4Addr, active: i64, inactive: i64) {
    let i = index(lab, r);
    lab.set_load(i, active, inactive);
}

/// A real's counts of connection-table entries, as the data plane keeps them.
fn load_of(lab: &Lab, r: Ipv4Addr) -> (i64, i64) {
    lab.load_of(index(lab, r))
}

/// A real's load as the schedulers see it: stale entries left out.
fn live_of(lab: &Lab, r: Ipv4Addr) -> (u64, u64) {
    lab.dp.real_load(index(lab, r)).unwrap().live()
}

/// Sends SYNs from `n` new clients and returns how many went to each real.
fn spread(lab: &Lab, n: u32, first_client: u32) -> BTreeMap<Ipv4Addr, u32> {
    let mut seen = BTreeMap::new();
    for c in first_client..first_client + n {
        *seen
            .entry(sent_to(lab, &tcp_frame(client(c), 40000, flags::SYN)))
            .or_default() += 1;
    }
    seen
}

#[test]
fn wlc_sends_a_new_connection_to_the_least_loaded_real() {
    let mut lab = lab(Scheduler::WeightedLeastConn, &[(R1, 1), (R2, 1), (R3, 1)]);
    set_load(&mut lab, R1, 5, 0);
    set_load(&mut lab, R2, 2, 0);
    set_load(&mut lab, R3, 3, 0);
    assert_eq!(sent_to(&lab, &tcp_frame(client(1), 40000, flags::SYN)), R2);
    // The new entry (SYN_RECV) is inactive: R2 is now 2 x 256 + 1.
    assert_eq!(load_of(&lab, R2), (2, 1));
    set_load(&mut lab, R2, 4, 0);
    assert_eq!(sent_to(&lab, &tcp_frame(client(2), 40000, flags::SYN)), R3);
}

#[test]
fn wlc_divides_the_load_by_the_weight_and_lc_does_not() {
    for (sched, want) in [
        (Scheduler::WeightedLeastConn, R1), // 6 x 256 / 3 = 512 < 3 x 256 / 1 = 768
        (Scheduler::LeastConn, R2),         // 1536 > 768
    ] {
        let mut lab = lab(sched, &[(R1, 3), (R2, 1)]);
        set_load(&mut lab, R1, 6, 0);
        set_load(&mut lab, R2, 3, 0);
        assert_eq!(
            sent_to(&lab, &tcp_frame(client(1), 40000, flags::SYN)),
            want,
            "{sched:?}"
        );
    }
}

#[test]
fn an_active_connection_weighs_256_inactive_ones() {
    let mut lab = lab(Scheduler::LeastConn, &[(R1, 1), (R2, 1)]);
    set_load(&mut lab, R1, 1, 0); // 256
    set_load(&mut lab, R2, 0, 300); // 300
    assert_eq!(sent_to(&lab, &tcp_frame(client(1), 40000, flags::SYN)), R1);
    set_load(&mut lab, R1, 1, 100); // 356
    assert_eq!(sent_to(&lab, &tcp_frame(client(2), 40000, flags::SYN)), R2);
}

#[test]
fn sed_counts_the_new_connection_and_ignores_inactive_ones() {
    // sed: (active + 1) / weight: R1 (0 + 1) / 1 = 1, R2 (1 + 1) / 3 = 0.67.
    let mut lab = lab(Scheduler::ShortestExpectedDelay, &[(R1, 1), (R2, 3)]);
    set_load(&mut lab, R1, 0, 0);
    set_load(&mut lab, R2, 1, 900);
    assert_eq!(sent_to(&lab, &tcp_frame(client(1), 40000, flags::SYN)), R2);
    // wlc on the same counts picks the idle R1 (0 < (256 + 900) / 3).
    let mut lab = lab_wlc_same();
    set_load(&mut lab, R1, 0, 0);
    set_load(&mut lab, R2, 1, 900);
    assert_eq!(sent_to(&lab, &tcp_frame(client(1), 40000, flags::SYN)), R1);
}

fn lab_wlc_same() -> Lab {
    lab(Scheduler::WeightedLeastConn, &[(R1, 1), (R2, 3)])
}

#[test]
fn nq_sends_to_an_idle_real_first() {
    // sed would pick R1: (1 + 1) / 10 = 0.2 < (0 + 1) / 1 = 1; nq takes the idle R2.
    let mut lab = lab(Scheduler::NeverQueue, &[(R1, 10), (R2, 1)]);
    set_load(&mut lab, R1, 1, 0);
    set_load(&mut lab, R2, 0, 50);
    assert_eq!(sent_to(&lab, &tcp_frame(client(1), 40000, flags::SYN)), R2);
    let mut sed = self::lab(Scheduler::ShortestExpectedDelay, &[(R1, 10), (R2, 1)]);
    set_load(&mut sed, R1, 1, 0);
    set_load(&mut sed, R2, 0, 50);
    assert_eq!(sent_to(&sed, &tcp_frame(client(1), 40000, flags::SYN)), R1);
    // With no idle real, nq is sed.
    set_load(&mut lab, R2, 1, 0);
    assert_eq!(sent_to(&lab, &tcp_frame(client(2), 40000, flags::SYN)), R1);
}

#[test]
fn drained_and_down_reals_are_never_chosen() {
    let mut lab = Lab::new();
    let mut s = with(Scheduler::WeightedLeastConn, &[(R1, 0), (R2, 1), (R3, 1)]);
    s.reals.get_mut(&rk(R2, PORT)).unwrap().health = Health::Down;
    lab.apply(&desired(vec![(svc(), s)]));
    set_load(&mut lab, R3, 1000, 1000);
    for sched in [
        Scheduler::LeastConn,
        Scheduler::WeightedLeastConn,
        Scheduler::ShortestExpectedDelay,
        Scheduler::NeverQueue,
    ] {
        let mut d = lab.desired.clone();
        d.services.get_mut(&svc()).unwrap().scheduler = sched;
        lab.apply(&d);
        let seen = spread(&lab, 50, 100);
        assert_eq!(seen.get(&R3), Some(&50), "{sched:?}: {seen:?}");
    }
    assert_eq!(load_of(&lab, R1), (0, 0));
    assert_eq!(load_of(&lab, R2), (0, 0));
}

#[test]
fn counts_follow_syn_established_fin_and_rst() {
    let lab = lab(Scheduler::WeightedLeastConn, &[(R1, 1)]);
    let a = client(1);
    sent_to(&lab, &tcp_frame(a, 1000, flags::SYN));
    assert_eq!(load_of(&lab, R1), (0, 1), "SYN_RECV is inactive");
    sent_to(&lab, &tcp_frame(a, 1000, flags::ACK));
    assert_eq!(load_of(&lab, R1), (1, 0), "ESTABLISHED is active");
    sent_to(&lab, &tcp_frame(a, 1000, flags::ACK | flags::PSH));
    assert_eq!(load_of(&lab, R1), (1, 0), "no change within a state class");
    sent_to(&lab, &tcp_frame(a, 1000, flags::FIN | flags::ACK));
    assert_eq!(load_of(&lab, R1), (0, 1), "FIN_WAIT is inactive");
    let b = client(2);
    sent_to(&lab, &tcp_frame(b, 2000, flags::SYN));
    sent_to(&lab, &tcp_frame(b, 2000, flags::ACK));
    assert_eq!(load_of(&lab, R1), (1, 1));
    sent_to(&lab, &tcp_frame(b, 2000, flags::RST));
    assert_eq!(load_of(&lab, R1), (0, 2), "RST: CLOSE is inactive");
    assert_eq!(
        lab.dp
            .conn4(&Flow4Key::from_parts(
                b.octets(),
                2000,
                VIP.octets(),
                PORT,
                proto::TCP
            ))
            .unwrap()
            .conn
            .state,
        ConnState::Close as u8
    );
    // A mid-flow packet without entry is picked up as established.
    sent_to(&lab, &tcp_frame(client(3), 3000, flags::ACK));
    assert_eq!(load_of(&lab, R1), (1, 2));
}

#[test]
fn udp_flows_count_as_inactive() {
    let mut lab = Lab::new();
    let mut s = spec(53, M, &[(R1, 1), (R2, 1)]);
    s.scheduler = Scheduler::LeastConn;
    lab.apply(&desired(vec![(udp(VIP, 53), s)]));
    for c in 0..10 {
        let f = Frame::udp(client(c), 5353, VIP, 53).payload(b"q").build();
        assert_eq!(lab.run(&f).action, XDP_TX);
    }
    for r in [R1, R2] {
        let i = lab.real_index(&udp(VIP, 53), &rk(r, 53));
        let l = lab.dp.real_load(i).unwrap();
        assert_eq!((l.active, l.inactive), (0, 5), "{r}: lc alternates");
    }
}

#[test]
fn ties_spread_evenly_over_equal_reals() {
    let lab = lab(Scheduler::WeightedLeastConn, &[(R1, 1), (R2, 1), (R3, 1)]);
    let seen = spread(&lab, 300, 0);
    assert_eq!(seen.values().copied().collect::<Vec<_>>(), [100, 100, 100]);
}

#[test]
fn established_flows_stay_on_their_real() {
    let mut lab = lab(Scheduler::WeightedLeastConn, &[(R1, 1), (R2, 1), (R3, 1)]);
    let mut flows = Vec::new();
    for c in 0..30 {
        let r = sent_to(&lab, &tcp_frame(client(c), 7000, flags::SYN));
        assert_eq!(sent_to(&lab, &tcp_frame(client(c), 7000, flags::ACK)), r);
        flows.push((c, r));
    }
    // Whatever the counts say now, existing flows keep their real.
    set_load(&mut lab, R1, 10_000, 0);
    set_load(&mut lab, R2, 0, 0);
    set_load(&mut lab, R3, 10_000, 0);
    for (c, r) in flows {
        assert_eq!(sent_to(&lab, &tcp_frame(client(c), 7000, flags::ACK)), r);
    }
    assert_eq!(sent_to(&lab, &tcp_frame(client(99), 7000, flags::SYN)), R2);
}

#[test]
fn a_flow_moved_off_a_down_real_moves_its_count() {
    let mut lab = lab(Scheduler::WeightedLeastConn, &[(R1, 1), (R2, 1)]);
    let a = client(1);
    let first = sent_to(&lab, &tcp_frame(a, 1000, flags::SYN));
    sent_to(&lab, &tcp_frame(a, 1000, flags::ACK));
    let other = if first == R1 { R2 } else { R1 };
    assert_eq!(load_of(&lab, first), (1, 0));
    let mut d = lab.desired.clone();
    d.services
        .get_mut(&svc())
        .unwrap()
        .reals
        .get_mut(&rk(first, PORT))
        .unwrap()
        .health = Health::Down;
    lab.apply(&d);
    assert_eq!(sent_to(&lab, &tcp_frame(a, 1000, flags::ACK)), other);
    assert_eq!(
        load_of(&lab, first),
        (0, 0),
        "the overwritten entry left its real"
    );
    assert_eq!(load_of(&lab, other), (1, 0));
}

#[test]
fn persistence_applies_on_top() {
    let mut lab = Lab::new();
    let s = persistent(
        with(Scheduler::WeightedLeastConn, &[(R1, 1), (R2, 1), (R3, 1)]),
        300,
        Ipv4Addr::new(255, 255, 255, 255),
    );
    lab.apply(&desired(vec![(svc(), s)]));
    set_load(&mut lab, R1, 10, 0);
    set_load(&mut lab, R2, 0, 0);
    set_load(&mut lab, R3, 10, 0);
    let c = client(7);
    assert_eq!(sent_to(&lab, &tcp_frame(c, 1000, flags::SYN)), R2);
    // R2 becomes the busiest: the client's next connections still follow its template...
    set_load(&mut lab, R2, 50, 0);
    for port in 1001..1010 {
        assert_eq!(sent_to(&lab, &tcp_frame(c, port, flags::SYN)), R2);
    }
    // ... while a new client gets the least loaded real.
    set_load(&mut lab, R1, 60, 0);
    assert_eq!(sent_to(&lab, &tcp_frame(client(8), 1000, flags::SYN)), R3);
}

#[test]
fn many_reals_are_compared_through_the_agents_candidates() {
    let reals: Vec<(Ipv4Addr, u32)> = (0..12)
        .map(|i| (Ipv4Addr::new(10, 0, 1, 10 + i), 1))
        .collect();
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        svc(),
        with(Scheduler::WeightedLeastConn, &reals),
    )]));
    let id = lab.service_id(&svc());
    let idx: Vec<u32> = reals
        .iter()
        .map(|(a, _)| lab.real_index(&svc(), &rk(*a, PORT)))
        .collect();
    let written = lab.dp.candidates(id).unwrap();
    assert!(written.iter().all(|&c| c != NO_REAL && idx.contains(&c)));
    // Every real but the last is busy; the agent's refresh puts the idle one among the
    // candidates and the next new connection goes there.
    for (n, &i) in idx.iter().enumerate() {
        let busy = if n == 11 { 0 } else { 5 + n as i64 };
        lab.dp
            .adjust_real_load(
                i,
                RealLoad {
                    active: busy,
                    ..RealLoad::default()
                },
            )
            .unwrap();
    }
    let eligible: Vec<(u32, u32)> = idx.iter().map(|&i| (i, 1)).collect();
    let best = load::least_loaded(lb_common::SCHED_WLC, &eligible, |i| {
        load::Counts::from_load(&lab.dp.real_load(i).unwrap())
    });
    assert_eq!(best[0], idx[11]);
    lab.dp.set_candidates(id, &best).unwrap();
    let out = lab.run(&tcp_frame(client(1), 1000, flags::SYN));
    assert_eq!(dst_mac(&out.frame), mac_of(reals[11].0));
}

#[test]
fn stale_entries_stop_counting_and_overwritten_entries_leave_the_counts() {
    let mut lab = lab(Scheduler::WeightedLeastConn, &[(R1, 1), (R2, 1)]);
    for c in 0..20 {
        let r = sent_to(&lab, &tcp_frame(client(c), 1000, flags::SYN));
        assert_eq!(sent_to(&lab, &tcp_frame(client(c), 1000, flags::ACK)), r);
    }
    assert_eq!(load_of(&lab, R1), (10, 0));
    let reals = [index(&lab, R1), index(&lab, R2)];
    assert!(
        lab.dp.reconcile_loads(&reals).unwrap().is_empty(),
        "nothing is stale yet"
    );
    // R1 goes down and comes back: its ten clients got resets from the real itself, which the
    // director never sees; their entries stay in the table but no longer count.
    let mut d = lab.desired.clone();
    let health = |d: &mut lb_userspace::model::DesiredState, h| {
        d.services
            .get_mut(&svc())
            .unwrap()
            .reals
            .get_mut(&rk(R1, PORT))
            .unwrap()
            .health = h;
    };
    health(&mut d, Health::Down);
    lab.apply(&d);
    lab.advance_clock(5);
    health(&mut d, Health::Up);
    lab.apply(&d);
    lab.advance_clock(1);
    lab.dp.reconcile_loads(&reals).unwrap();
    assert_eq!(
        load_of(&lab, R1),
        (10, 0),
        "the entries are still in the table"
    );
    assert_eq!(live_of(&lab, R1), (0, 0));
    assert_eq!(live_of(&lab, R2), (10, 0));
    // So the returning real takes the next new connections until it catches up.
    let seen = spread(&lab, 10, 100);
    assert_eq!(seen.get(&R1), Some(&10), "{seen:?}");
    // Past ESTABLISHED's timeout every entry has expired: nothing counts.
    lab.advance_clock(lb_common::Settings::new([0; 6]).timeout(ConnState::Established as u8) + 1);
    lab.dp.reconcile_loads(&reals).unwrap();
    assert_eq!(live_of(&lab, R1), (0, 0));
    assert_eq!(live_of(&lab, R2), (0, 0));
    // A new connection that takes an expired entry's place takes it out of the counts: the
    // ESTABLISHED entry of client 0 is overwritten by its new SYN_RECV entry.
    let total = |lab: &Lab| {
        let (a1, i1) = load_of(lab, R1);
        let (a2, i2) = load_of(lab, R2);
        (a1 + a2, i1 + i2)
    };
    let (active, inactive) = total(&lab);
    sent_to(&lab, &tcp_frame(client(0), 1000, flags::SYN));
    assert_eq!(total(&lab), (active - 1, inactive + 1));
}
