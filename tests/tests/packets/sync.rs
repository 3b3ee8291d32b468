//! Director sync at the packet level: which frames make the program announce a flow in
//! `SYNC_RING` (confirmed flows and their close only, never a SYN, so a spoofed flood cannot flood the sync
//! channel), and how a peer's flow stored by the agent steers the flow's next frames and
//! counts. Needs root.

use std::net::Ipv4Addr;

use lb_common::{ConnState, Flow4Key, SYNC_SLOTS, SyncEvent, SyncedFlow, proto};
use lb_tests::{
    lab::{Lab, desired, expect_tx, mac_of, persistent, rk, spec, tcp, udp},
    packet::{Frame, flags},
};
use lb_userspace::{dataplane::PeerStore, model::Scheduler};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const R1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const R2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);
const R3: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 13);
const PORT: u16 = 5672;
const DNS: u16 = 53;
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 7);

fn lab(sched: Scheduler) -> Lab {
    let reals = [(R1, 1), (R2, 1), (R3, 1)];
    let mut amqp = spec(PORT, 251, &reals);
    amqp.scheduler = sched;
    let mut lab = Lab::new();
    lab.apply(&desired(vec![
        (tcp(VIP, PORT), amqp),
        (udp(VIP, DNS), spec(DNS, 251, &reals)),
    ]));
    lab
}

fn segment(src: Ipv4Addr, sport: u16, f: u8) -> Vec<u8> {
    Frame::tcp(src, sport, VIP, PORT, f).build()
}

fn key(src: Ipv4Addr, sport: u16) -> Flow4Key {
    Flow4Key::from_parts(src.octets(), sport, VIP.octets(), PORT, proto::TCP)
}

/// A flow as a peer's announcement names it.
fn v4(src: Ipv4Addr, sport: u16) -> SyncedFlow {
    SyncedFlow::V4(key(src, sport))
}

/// What the program announced since the last call; none may have been overwritten.
#[track_caller]
fn announced(lab: &mut Lab) -> Vec<SyncEvent> {
    let drain = lab.dp.drain_sync_ring(usize::MAX).unwrap();
    assert_eq!(drain.lost, 0, "announcements overwritten");
    drain.events
}

fn index(lab: &Lab, r: Ipv4Addr) -> u32 {
    lab.real_index(&tcp(VIP, PORT), &rk(r, PORT))
}

fn real_of(mac: [u8; 6]) -> Ipv4Addr {
    [R1, R2, R3]
        .into_iter()
        .find(|r| mac_of(*r) == mac)
        .expect("a known real")
}

#[test]
fn only_confirmed_flows_are_announced_and_only_while_sync_is_on() {
    let mut lab = lab(Scheduler::WeightedLeastConn);
    lab.dp.set_sync(true).unwrap();

    // The handshake: the SYN is not announced, the ACK that completes it is, once.
    let real = real_of(expect_tx(&lab, &segment(CLIENT, 40_000, flags::SYN)));
    assert_eq!(announced(&mut lab), vec![]);
    expect_tx(&lab, &segment(CLIENT, 40_000, flags::ACK));
    let events = announced(&mut lab);
    assert_eq!(events.len(), 1, "{events:?}");
    let e: SyncEvent = events[0];
    assert_eq!(e.flow(), Some(SyncedFlow::V4(key(CLIENT, 40_000))));
    assert_eq!(e.real, index(&lab, real));
    assert_eq!(e.state, ConnState::Established as u8);
    expect_tx(&lab, &segment(CLIENT, 40_000, flags::ACK | flags::PSH));
    assert_eq!(announced(&mut lab), vec![]);
    // The close is announced too (peers count the connection inactive), once.
    expect_tx(&lab, &segment(CLIENT, 40_000, flags::FIN | flags::ACK));
    expect_tx(&lab, &segment(CLIENT, 40_000, flags::ACK));
    let events = announced(&mut lab);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].state, ConnState::FinWait as u8);

    // A spoofed SYN flood: entries, but no announcement.
    for i in 0..2000u32 {
        let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + i);
        expect_tx(&lab, &segment(src, 1024 + (i % 60_000) as u16, flags::SYN));
    }
    assert_eq!(announced(&mut lab), vec![]);

    // A flow that arrives mid-stream (its entry lost) is confirmed at once.
    expect_tx(&lab, &segment(CLIENT, 40_001, flags::ACK));
    assert_eq!(announced(&mut lab).len(), 1);

    // A UDP flow on its first datagram.
    expect_tx(&lab, &Frame::udp(CLIENT, 5353, VIP, DNS).build());
    expect_tx(&lab, &Frame::udp(CLIENT, 5353, VIP, DNS).build());
    let events = announced(&mut lab);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].state, ConnState::Udp as u8);

    // Sync off: a completed handshake goes unannounced.
    lab.dp.set_sync(false).unwrap();
    expect_tx(&lab, &segment(CLIENT, 40_002, flags::SYN));
    expect_tx(&lab, &segment(CLIENT, 40_002, flags::ACK));
    assert_eq!(announced(&mut lab), vec![]);
}

#[test]
fn a_reader_that_falls_a_ring_behind_learns_how_many_it_lost() {
    let mut lab = lab(Scheduler::WeightedLeastConn);
    lab.dp.set_sync(true).unwrap();
    // More confirmations than all the CPUs' rings hold together, unread.
    let cpus = aya::util::nr_cpus().unwrap() as u32;
    let n = cpus * SYNC_SLOTS + 100;
    for i in 0..n {
        let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 20, 0, 0)) + i);
        expect_tx(&lab, &udp_frame(src));
    }
    let drain = lab.dp.drain_sync_ring(usize::MAX).unwrap();
    assert_eq!(drain.events.len() as u64 + drain.lost, u64::from(n));
    assert!(drain.lost >= 100, "{} lost", drain.lost);
    // Every event read is whole: a UDP flow of this run, in state UDP.
    assert!(drain.events.iter().all(|e| e.state == ConnState::Udp as u8
        && matches!(e.flow(), Some(SyncedFlow::V4(k)) if k.dport == DNS.to_be())));
    // And the next read starts where the program is.
    expect_tx(&lab, &udp_frame(CLIENT));
    assert_eq!(announced(&mut lab).len(), 1);
}

fn udp_frame(src: Ipv4Addr) -> Vec<u8> {
    Frame::udp(src, 5353, VIP, DNS).build()
}

#[test]
fn a_peers_flow_continues_on_the_peers_real_and_counts_there() {
    let mut lab = lab(Scheduler::WeightedLeastConn);
    let svc = lab.service_id(&tcp(VIP, PORT));
    // This director would place a new flow on R1 (the others look loaded).
    let (i1, i2, i3) = (index(&lab, R1), index(&lab, R2), index(&lab, R3));
    lab.set_load(i2, 50, 0);
    lab.set_load(i3, 50, 0);
    let peer = lb_common::Conn {
        real: i3,
        state: ConnState::Established as u8,
        _pad: [0; 3],
    };
    let now = lab.dp.clock();
    let stored = lab
        .dp
        .store_peer_conn(&v4(CLIENT, 41_000), &peer, now, svc)
        .unwrap();
    assert_eq!(stored, PeerStore::Stored);
    assert_eq!(
        lab.load_of(i3),
        (51, 0),
        "the peer's flow counts on its real"
    );
    // Its data goes where the peer put it, not where this director would schedule it.
    for _ in 0..3 {
        let mac = expect_tx(&lab, &segment(CLIENT, 41_000, flags::ACK | flags::PSH));
        assert_eq!(real_of(mac), R3);
    }
    // The same announcement again only refreshes it; the count does not move.
    let again = lab
        .dp
        .store_peer_conn(&v4(CLIENT, 41_000), &peer, now, svc)
        .unwrap();
    assert_eq!(again, PeerStore::Refreshed);
    assert_eq!(lab.load_of(i3), (51, 0));

    // A flow this director serves now: an older announcement for another real leaves it.
    expect_tx(&lab, &segment(CLIENT, 41_001, flags::SYN));
    expect_tx(&lab, &segment(CLIENT, 41_001, flags::ACK));
    lab.advance_clock(5);
    expect_tx(&lab, &segment(CLIENT, 41_001, flags::ACK));
    let local = lab.dp.conn4(&key(CLIENT, 41_001)).unwrap().conn.real;
    assert_eq!(local, i1);
    let stale = lab.dp.clock() - 3;
    let kept = lab
        .dp
        .store_peer_conn(
            &v4(CLIENT, 41_001),
            &lb_common::Conn { real: i2, ..peer },
            stale,
            svc,
        )
        .unwrap();
    assert_eq!(kept, PeerStore::Kept);
    let mac = expect_tx(&lab, &segment(CLIENT, 41_001, flags::ACK));
    assert_eq!(real_of(mac), R1);
}

#[test]
fn a_peers_flow_of_a_persistent_service_brings_its_clients_template() {
    let reals = [(R1, 1), (R2, 1), (R3, 1)];
    let mut s = persistent(
        spec(PORT, 251, &reals),
        300,
        Ipv4Addr::new(255, 255, 255, 255),
    );
    s.scheduler = Scheduler::WeightedLeastConn;
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(tcp(VIP, PORT), s)]));
    let svc = lab.service_id(&tcp(VIP, PORT));
    let i2 = index(&lab, R2);
    let peer = lb_common::Conn {
        real: i2,
        state: ConnState::Established as u8,
        _pad: [0; 3],
    };
    let now = lab.dp.clock();
    lab.dp
        .store_peer_conn(&v4(CLIENT, 42_000), &peer, now, svc)
        .unwrap();
    // The client's next connections follow the template to the same real.
    for sport in 42_001..42_006 {
        let mac = expect_tx(&lab, &segment(CLIENT, sport, flags::SYN));
        assert_eq!(real_of(mac), R2);
    }
}
