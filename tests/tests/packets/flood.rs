//! A spoofed SYN flood against the connection table, under every scheduler: unconfirmed
//! entries never evict established connections (`lb_common::conn_eviction`), so no established
//! flow loses its real, and the flood's own SYNs and legitimate new connections are still
//! forwarded. Run through the real program with BPF_PROG_TEST_RUN.

use std::{collections::VecDeque, net::Ipv4Addr};

use lb_common::{Flow4Key, proto};
use lb_tests::{
    lab::{Lab, desired, expect_tx, persistent, spec, tcp, test_limits},
    packet::{Frame, flags},
    rng::Rng,
};
use lb_userspace::model::{Limits, Scheduler};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const PORT: u16 = 5672;
const REALS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 0, 0, 11),
    Ipv4Addr::new(10, 0, 0, 12),
    Ipv4Addr::new(10, 0, 0, 13),
];
/// Long-lived connections established before the flood.
const ESTABLISHED: u32 = 60;
/// Spoofed SYNs between a legitimate client's SYN and its ACK.
const RTT: u32 = 1000;

/// Every scheduler, and a persistent service.
fn services() -> Vec<(&'static str, lb_userspace::model::ServiceSpec)> {
    let reals: Vec<(Ipv4Addr, u32)> = REALS.iter().map(|&r| (r, 1)).collect();
    let with = |sched: Scheduler| {
        let mut s = spec(PORT, 251, &reals);
        s.scheduler = sched;
        s
    };
    vec![
        ("mh", with(Scheduler::Maglev)),
        ("sh", with(Scheduler::SourceHash)),
        ("lc", with(Scheduler::LeastConn)),
        ("wlc", with(Scheduler::WeightedLeastConn)),
        ("sed", with(Scheduler::ShortestExpectedDelay)),
        ("nq", with(Scheduler::NeverQueue)),
        (
            "wlc, persistent",
            persistent(with(Scheduler::WeightedLeastConn), 300, Ipv4Addr::BROADCAST),
        ),
    ]
}

fn lab(conn_entries: u32, s: &lb_userspace::model::ServiceSpec) -> Lab {
    let mut lab = Lab::with_limits(Limits {
        conn_entries,
        max_table_size: 251,
        ..test_limits()
    });
    lab.apply(&desired(vec![(tcp(VIP, PORT), s.clone())]));
    lab
}

fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 0, 1)) + i)
}

fn frame(src: Ipv4Addr, sport: u16, f: u8) -> Vec<u8> {
    Frame::tcp(src, sport, VIP, PORT, f).build()
}

/// A spoofed source: anywhere in 100.64.0.0/10, any port.
fn spoofed(rng: &mut Rng) -> (Ipv4Addr, u16) {
    let addr = u32::from(Ipv4Addr::new(100, 64, 0, 0)) | (rng.bits() as u32 & 0x003f_ffff);
    (Ipv4Addr::from(addr), 1024 + (rng.bits() % 60_000) as u16)
}

/// Opens `ESTABLISHED` connections (SYN, then ACK); returns each one's real MAC.
fn establish(lab: &Lab) -> Vec<[u8; 6]> {
    (0..ESTABLISHED)
        .map(|i| {
            let mac = expect_tx(lab, &frame(client(i), 40_000, flags::SYN));
            assert_eq!(
                expect_tx(lab, &frame(client(i), 40_000, flags::ACK)),
                mac,
                "the handshake stays on one real"
            );
            mac
        })
        .collect()
}

/// The established connections' next segments: how many went to another real.
fn broken(lab: &Lab, macs: &[[u8; 6]]) -> usize {
    (0..ESTABLISHED)
        .filter(|&i| {
            let f = frame(client(i), 40_000, flags::ACK | flags::PSH);
            expect_tx(lab, &f) != macs[i as usize]
        })
        .count()
}

#[test]
fn a_flood_of_ten_times_the_table_breaks_no_established_connection() {
    let table = 4096;
    let mut report = Vec::new();
    for (name, s) in services() {
        let lab = lab(table, &s);
        let macs = establish(&lab);
        let mut rng = Rng::new(0xf100d);
        let (mut legit, mut legit_ok) = (0u32, 0u32);
        let mut pending = VecDeque::new();
        for n in 0..table * 10 {
            let (src, sport) = spoofed(&mut rng);
            // Every flood SYN is forwarded like any SYN (the reals answer it; we cannot tell).
            expect_tx(&lab, &frame(src, sport, flags::SYN));
            if n % 500 == 0 {
                assert_eq!(broken(&lab, &macs), 0, "{name}: after {n} spoofed SYNs");
            }
            // A legitimate client every 250 SYNs: its handshake completes RTT spoofed SYNs
            // later (its round trip), and its next segments must reach the real its SYN did.
            if n % 250 == 0 {
                while pending
                    .front()
                    .is_some_and(|&(start, _, _)| start + RTT <= n)
                {
                    let (_, c, mac) = pending.pop_front().expect("checked");
                    let ack = expect_tx(&lab, &frame(c, 50_000, flags::ACK));
                    let data = expect_tx(&lab, &frame(c, 50_000, flags::ACK | flags::PSH));
                    legit_ok += u32::from(ack == mac && data == mac);
                    legit += 1;
                }
                let i = n / 250;
                let c = Ipv4Addr::new(172, 16, (i >> 8) as u8, i as u8);
                pending.push_back((n, c, expect_tx(&lab, &frame(c, 50_000, flags::SYN))));
            }
        }
        assert_eq!(broken(&lab, &macs), 0, "{name}: after the flood");
        let g = lab.dp.global_stats().unwrap();
        assert_eq!(
            g.conn_evicted_established, 0,
            "{name}: no established entry was evicted"
        );
        assert!(
            g.conn_evicted_other > 0,
            "{name}: the flood churned the table"
        );
        report.push(format!(
            "{name}: {legit_ok}/{legit} new connections completed"
        ));
        // The hash schedulers place a rescheduled flow where it was: every legitimate
        // connection completes. The least-connection ones (persistent or not: the flood
        // churns the templates too) lose a handshake when the flood evicted its SYN_RECV
        // entry and the choice then fell on another real.
        let least = legit * 4 / 5;
        assert!(
            legit_ok >= least,
            "{name}: only {legit_ok} of {legit} legitimate connections completed"
        );
        if name == "mh" || name == "sh" {
            assert_eq!(legit_ok, legit, "{name}");
        }
    }
    println!("{}", report.join("\n"));
}

#[test]
fn a_set_full_of_established_connections_refuses_new_entries_but_forwards_them() {
    for (name, s) in services() {
        let lab = lab(4096, &s);
        let sets = lab.dp.limits().conn_sets();
        let set_of = |src: Ipv4Addr, sport: u16| {
            Flow4Key::from_parts(src.octets(), sport, VIP.octets(), PORT, proto::TCP).hash()
                & (sets - 1)
        };
        // Four connections whose entries share one set, established.
        let conns: Vec<(Ipv4Addr, u16)> = (1024..u16::MAX)
            .map(|port| (client(0), port))
            .filter(|&(c, p)| set_of(c, p) == 0)
            .take(lb_common::CONN_WAYS)
            .collect();
        let macs: Vec<[u8; 6]> = conns
            .iter()
            .map(|&(c, p)| {
                let mac = expect_tx(&lab, &frame(c, p, flags::SYN));
                assert_eq!(expect_tx(&lab, &frame(c, p, flags::ACK)), mac);
                mac
            })
            .collect();
        // Spoofed SYNs into the same set: forwarded, not stored, counted.
        let before = lab.dp.global_stats().unwrap();
        let mut rng = Rng::new(7);
        let mut sent = 0;
        while sent < 200 {
            let (src, sport) = spoofed(&mut rng);
            if set_of(src, sport) == 0 {
                expect_tx(&lab, &frame(src, sport, flags::SYN));
                sent += 1;
            }
        }
        let g = lab.dp.global_stats().unwrap();
        assert_eq!(
            g.conn_insert_refused - before.conn_insert_refused,
            200,
            "{name}: every spoofed SYN into the full set is refused and counted"
        );
        assert_eq!(g.conn_evicted_established, 0, "{name}");
        for (&(c, p), mac) in conns.iter().zip(&macs) {
            let f = frame(c, p, flags::ACK | flags::PSH);
            assert_eq!(&expect_tx(&lab, &f), mac, "{name}: {c}:{p} kept its real");
        }
    }
}
