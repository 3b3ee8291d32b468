//! Packet-level tests of the reals' connection thresholds (IPVS's `u_threshold` and
//! `l_threshold`, keepalived's `uthreshold` and `lthreshold`): an overloaded real gets no new
//! flow under any scheduler, keeps its connections, and takes new flows again below the lower
//! threshold. Real frames through the real program (BPF_PROG_TEST_RUN), with the per-real
//! connection counts set to known values. Needs root.

use std::{collections::BTreeMap, net::Ipv4Addr};

use lb_tests::{
    lab::{Lab, XDP_TX, desired, expect_drop, expect_tx, mac_of, rk, spec, tcp},
    packet::{Frame, dst_mac, flags},
};
use lb_userspace::model::{Scheduler, ServiceKey, ServiceSpec, Thresholds};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const R1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const R2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);
const R3: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 13);
const M: u32 = 251;
const PORT: u16 = 80;

/// Every scheduler the data plane has.
const ALL: [Scheduler; 6] = [
    Scheduler::Maglev,
    Scheduler::SourceHash,
    Scheduler::LeastConn,
    Scheduler::WeightedLeastConn,
    Scheduler::ShortestExpectedDelay,
    Scheduler::NeverQueue,
];

fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 0, 0)) + i)
}

fn svc() -> ServiceKey {
    tcp(VIP, PORT)
}

fn syn(c: u32) -> Vec<u8> {
    Frame::tcp(client(c), 40000, VIP, PORT, flags::SYN).build()
}

/// A service over R1, R2 and R3 (weight 1 each) under `sched`, R1 with `thresholds`.
fn with(sched: Scheduler, thresholds: Thresholds) -> ServiceSpec {
    let mut s = spec(PORT, M, &[(R1, 1), (R2, 1), (R3, 1)]);
    s.scheduler = sched;
    s.reals.get_mut(&rk(R1, PORT)).unwrap().thresholds = thresholds;
    s
}

fn lab(sched: Scheduler, thresholds: Thresholds) -> Lab {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(svc(), with(sched, thresholds))]));
    lab
}

const fn upper(upper: u32, lower: u32) -> Thresholds {
    Thresholds { upper, lower }
}

#[track_caller]
fn sent_to(lab: &Lab, frame: &[u8]) -> Ipv4Addr {
    let mac = expect_tx(lab, frame);
    [R1, R2, R3]
        .into_iter()
        .find(|r| mac_of(*r) == mac)
        .unwrap_or_else(|| panic!("sent to an unknown MAC {mac:02x?}"))
}

/// Sets a real's counts to `(active, inactive)` and runs the agent's recount, which
/// re-evaluates the overload of the reals with thresholds (as when connections end).
fn set_load(lab: &mut Lab, r: Ipv4Addr, active: i64, inactive: i64) {
    let i = lab.real_index(&svc(), &rk(r, PORT));
    lab.set_load(i, active, inactive);
    lab.dp.reconcile_loads(&[i]).expect("recount");
}

fn load_of(lab: &Lab, r: Ipv4Addr) -> (i64, i64) {
    lab.load_of(lab.real_index(&svc(), &rk(r, PORT)))
}

/// SYNs from clients `first..first + n`: how many went to each real (dropped ones under
/// `None`). Each frame runs once: a second run would be a new connection.
fn spread(lab: &Lab, first: u32, n: u32) -> BTreeMap<Option<Ipv4Addr>, u32> {
    lab.destinations((first..first + n).map(syn), &[R1, R2, R3])
}

#[test]
fn an_overloaded_real_gets_no_new_flow_under_any_scheduler() {
    for sched in ALL {
        let mut lab = lab(sched, upper(10, 0));
        // 4 active + 6 inactive = 10 connections: at the upper threshold.
        set_load(&mut lab, R1, 4, 6);
        let seen = spread(&lab, 1, 300);
        assert_eq!(seen.get(&Some(R1)), None, "{sched:?}: {seen:?}");
        if sched == Scheduler::SourceHash {
            // IPVS's sh without sh-fallback: the clients that hash to R1 have no real.
            assert!(seen.get(&None).is_some_and(|&n| n > 50), "{seen:?}");
        } else {
            assert_eq!(seen.get(&None), None, "{sched:?}: {seen:?}");
        }
        assert_eq!(load_of(&lab, R1), (4, 6), "{sched:?}: no entry was added");
    }
}

#[test]
fn below_the_upper_threshold_a_real_takes_flows_until_it_reaches_it() {
    // wlc: R1 is the least loaded of the three until it holds 5 connections; its own new
    // entries (SYN_RECV, inactive) bring it there.
    let mut lab = lab(Scheduler::WeightedLeastConn, upper(5, 0));
    set_load(&mut lab, R1, 0, 3);
    set_load(&mut lab, R2, 100, 0);
    set_load(&mut lab, R3, 100, 0);
    assert_eq!(sent_to(&lab, &syn(1)), R1);
    assert_eq!(sent_to(&lab, &syn(2)), R1);
    assert_eq!(load_of(&lab, R1), (0, 5));
    // At 5: overloaded, though still by far the least loaded.
    assert_ne!(sent_to(&lab, &syn(3)), R1);
    // The same without a threshold.
    let mut free = self::lab(Scheduler::WeightedLeastConn, Thresholds::default());
    set_load(&mut free, R1, 0, 5);
    set_load(&mut free, R2, 100, 0);
    set_load(&mut free, R3, 100, 0);
    assert_eq!(sent_to(&free, &syn(3)), R1);
}

#[test]
fn the_overload_clears_below_three_quarters_of_the_upper_threshold() {
    for sched in [Scheduler::Maglev, Scheduler::WeightedLeastConn] {
        let mut lab = lab(sched, upper(100, 0));
        set_load(&mut lab, R1, 100, 0);
        assert_eq!(spread(&lab, 1, 60).get(&Some(R1)), None, "{sched:?}");
        // 75 is not below 3/4 of 100: still overloaded (hysteresis)...
        set_load(&mut lab, R1, 75, 0);
        assert_eq!(spread(&lab, 100, 60).get(&Some(R1)), None, "{sched:?}");
        // ...74 is.
        set_load(&mut lab, R1, 74, 0);
        if sched == Scheduler::WeightedLeastConn {
            set_load(&mut lab, R2, 500, 0);
            set_load(&mut lab, R3, 500, 0);
        }
        let seen = spread(&lab, 200, 60);
        assert!(
            seen.get(&Some(R1)).is_some_and(|&n| n > 0),
            "{sched:?}: {seen:?}"
        );
        // Below the upper threshold but never over it: not overloaded.
        let mut fresh = self::lab(sched, upper(100, 0));
        set_load(&mut fresh, R1, 80, 0);
        if sched == Scheduler::WeightedLeastConn {
            set_load(&mut fresh, R2, 500, 0);
            set_load(&mut fresh, R3, 500, 0);
        }
        let seen = spread(&fresh, 300, 60);
        assert!(
            seen.get(&Some(R1)).is_some_and(|&n| n > 0),
            "{sched:?}: {seen:?}"
        );
    }
}

#[test]
fn the_lower_threshold_ends_the_overload() {
    let mut lab = lab(Scheduler::Maglev, upper(50, 10));
    set_load(&mut lab, R1, 0, 50);
    assert_eq!(spread(&lab, 1, 60).get(&Some(R1)), None);
    // 10 is not below the lower threshold; 9 is.
    set_load(&mut lab, R1, 0, 10);
    assert_eq!(spread(&lab, 100, 60).get(&Some(R1)), None);
    set_load(&mut lab, R1, 0, 9);
    let seen = spread(&lab, 200, 90);
    assert!(seen.get(&Some(R1)).is_some_and(|&n| n > 10), "{seen:?}");
}

#[test]
fn maglev_spreads_an_overloaded_reals_flows_over_the_others_by_weight() {
    let mut s = spec(PORT, M, &[(R1, 1), (R2, 1), (R3, 3)]);
    s.reals.get_mut(&rk(R1, PORT)).unwrap().thresholds = upper(1, 0);
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(svc(), s)]));
    set_load(&mut lab, R1, 1, 0);
    let seen = spread(&lab, 1, 2000);
    assert_eq!(seen.get(&Some(R1)), None, "{seen:?}");
    assert_eq!(seen.get(&None), None, "{seen:?}");
    let (r2, r3) = (seen[&Some(R2)], seen[&Some(R3)]);
    assert_eq!(r2 + r3, 2000);
    // R3 has three times R2's weight: about 1500 and 500.
    assert!((1300..=1700).contains(&r3), "{seen:?}");
}

#[test]
fn an_overloaded_real_keeps_its_connections() {
    let mut lab = lab(Scheduler::Maglev, upper(1, 0));
    // Find a client that lands on R1, open its connection, then overload R1.
    let c = (1..500).find(|&c| sent_to(&lab, &syn(c)) == R1).unwrap();
    set_load(&mut lab, R1, 1, 0);
    let ack = Frame::tcp(client(c), 40000, VIP, PORT, flags::ACK).build();
    assert_eq!(sent_to(&lab, &ack), R1, "the established flow stays");
    // A new SYN from the same client and port is a new connection: scheduled elsewhere.
    assert_ne!(sent_to(&lab, &syn(c)), R1);
}

#[test]
fn new_thresholds_reset_the_overload() {
    let mut lab = lab(Scheduler::Maglev, upper(10, 0));
    set_load(&mut lab, R1, 0, 9);
    // 9 of 10 is not overloaded; at 10 it is.
    let seen = spread(&lab, 1, 60);
    assert_eq!(
        seen.get(&Some(R1)),
        Some(&1),
        "one flow reaches 10: {seen:?}"
    );
    set_load(&mut lab, R1, 0, 10);
    assert_eq!(spread(&lab, 100, 60).get(&Some(R1)), None);
    // Raising the threshold to 12: 10 is under it (IPVS clears the flag on such an edit).
    lab.apply(&desired(vec![(
        svc(),
        with(Scheduler::Maglev, upper(12, 0)),
    )]));
    set_load(&mut lab, R1, 0, 9);
    assert!(spread(&lab, 200, 60).contains_key(&Some(R1)));
    // Removing it: never overloaded.
    lab.apply(&desired(vec![(
        svc(),
        with(Scheduler::Maglev, Thresholds::default()),
    )]));
    set_load(&mut lab, R1, 0, 1000);
    assert!(spread(&lab, 300, 60).contains_key(&Some(R1)));
}

#[test]
fn an_sh_client_of_an_overloaded_real_is_dropped_and_comes_back() {
    let mut lab = lab(Scheduler::SourceHash, upper(3, 1));
    let c = (1..500).find(|&c| sent_to(&lab, &syn(c)) == R1).unwrap();
    set_load(&mut lab, R1, 0, 3);
    expect_drop(&lab, &syn(c));
    set_load(&mut lab, R1, 0, 0);
    assert_eq!(sent_to(&lab, &syn(c)), R1);
}

#[test]
fn which_follows_the_program_past_an_overloaded_real() {
    use std::net::SocketAddr;

    use lb_userspace::{model::SchedFlags, observe::snapshot::which_installed};

    for (sched, fallback) in [
        (Scheduler::Maglev, false),
        (Scheduler::SourceHash, false),
        (Scheduler::SourceHash, true),
        (Scheduler::WeightedLeastConn, false),
        (Scheduler::Failover, false),
    ] {
        let mut s = with(sched, upper(5, 0));
        s.flags = SchedFlags {
            fallback,
            ..SchedFlags::default()
        };
        let mut lab = Lab::new();
        lab.apply(&desired(vec![(svc(), s)]));
        set_load(&mut lab, R1, 0, 5);
        for c in 1..100 {
            let inst = &lab.installed.services[&svc()];
            let flow = SocketAddr::new(client(c).into(), 40000);
            let predicted = which_installed(&lab.dp, inst, &svc(), flow).unwrap();
            let out = lab.run(&syn(c));
            let sent = (out.action == XDP_TX).then(|| {
                let mac = dst_mac(&out.frame);
                [R1, R2, R3]
                    .into_iter()
                    .find(|r| mac_of(*r) == mac)
                    .unwrap()
            });
            let predicted_addr = predicted.real.map(|k| match k.addr {
                std::net::IpAddr::V4(a) => a,
                std::net::IpAddr::V6(_) => unreachable!(),
            });
            assert_eq!(
                sent, predicted_addr,
                "{sched:?} fallback {fallback} client {c}: which said {} ({})",
                predicted.source, predicted.detail
            );
            assert_ne!(sent, Some(R1), "{sched:?}");
        }
    }
}
