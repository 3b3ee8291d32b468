//! Packet-level tests of the XDP program: real frames through the real program in the kernel
//! (BPF_PROG_TEST_RUN), asserting the action and every output byte. Needs root.

use std::net::Ipv4Addr;

use lb_common::{Conn, ConnState, Flow4Key, proto};
use lb_tests::{
    lab::{
        Lab, XDP_TX, desired, expect_drop, expect_pass, expect_tx, forwarded, mac_of, persistent,
        rk, spec, tcp, udp,
    },
    packet::{ETH_P_ARP, ETH_P_IPV6, Frame, L4, dst_mac, flags, icmp_unreachable},
};
use lb_userspace::model::{Health, Scheduler};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 21);
const R1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const R2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);
const R3: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 13);
const R4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 14);
const M: u32 = 65_537;

fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 0, 0)) + i)
}

/// One TCP service on 5672 with three reals of weight 1.
fn lab_5672() -> Lab {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        tcp(VIP, 5672),
        spec(5672, M, &[(R1, 1), (R2, 1), (R3, 1)]),
    )]));
    lab
}

fn syn(src: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    Frame::tcp(src, sport, VIP, dport, flags::SYN).build()
}

fn ack(src: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    Frame::tcp(src, sport, VIP, dport, flags::ACK).build()
}

fn flow(src: Ipv4Addr, sport: u16, dport: u16, p: u8) -> Flow4Key {
    Flow4Key::from_parts(src.octets(), sport, VIP.octets(), dport, p)
}

fn reals_macs(reals: &[Ipv4Addr]) -> Vec<[u8; 6]> {
    reals.iter().map(|r| mac_of(*r)).collect()
}

// --- Forwarding --------------------------------------------------------------------------------

#[test]
fn tcp_syn_to_service_goes_to_one_of_its_reals() {
    let lab = lab_5672();
    let mac = expect_tx(&lab, &syn(CLIENT, 40000, 5672));
    assert!(reals_macs(&[R1, R2, R3]).contains(&mac));
}

#[test]
fn tcp_frames_with_payload_keep_every_byte() {
    let lab = lab_5672();
    let frame = Frame::tcp(CLIENT, 40001, VIP, 5672, flags::ACK | flags::PSH)
        .payload(b"AMQP\x00\x00\x09\x01 payload bytes")
        .build();
    expect_tx(&lab, &frame);
}

#[test]
fn udp_to_service_is_forwarded() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        udp(VIP, 53),
        spec(53, M, &[(R1, 1), (R2, 1)]),
    )]));
    let frame = Frame::udp(CLIENT, 5353, VIP, 53).payload(b"query").build();
    let mac = expect_tx(&lab, &frame);
    assert!(reals_macs(&[R1, R2]).contains(&mac));
    let c = lab.dp.conn4(&flow(CLIENT, 5353, 53, proto::UDP)).unwrap();
    assert_eq!(c.conn.state, ConnState::Udp as u8);
}

#[test]
fn each_service_uses_only_its_own_reals() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![
        (tcp(VIP, 5672), spec(5672, M, &[(R1, 1), (R2, 1)])),
        (tcp(VIP, 15672), spec(15672, M, &[(R3, 1)])),
        (udp(VIP, 5672), spec(5672, M, &[(R4, 1)])),
    ]));
    for i in 0..200 {
        let a = expect_tx(&lab, &syn(client(i), 30000, 5672));
        assert!(reals_macs(&[R1, R2]).contains(&a));
        assert_eq!(expect_tx(&lab, &syn(client(i), 30000, 15672)), mac_of(R3));
        let u = Frame::udp(client(i), 30000, VIP, 5672).build();
        assert_eq!(expect_tx(&lab, &u), mac_of(R4));
    }
}

#[test]
fn non_vip_traffic_passes() {
    let lab = lab_5672();
    expect_pass(
        &lab,
        &Frame::tcp(CLIENT, 40000, OTHER_IP, 5672, flags::SYN).build(),
    );
}

#[test]
fn wrong_port_passes() {
    let lab = lab_5672();
    expect_pass(&lab, &syn(CLIENT, 40000, 5673));
    expect_pass(&lab, &syn(CLIENT, 40000, 22));
}

#[test]
fn wrong_protocol_passes() {
    let lab = lab_5672();
    expect_pass(&lab, &Frame::udp(CLIENT, 40000, VIP, 5672).build());
    let gre = Frame::new(CLIENT, VIP, L4::Raw { proto: 47 }).payload(&[0; 24]);
    expect_pass(&lab, &gre.build());
}

#[test]
fn arp_and_ipv6_pass() {
    let lab = lab_5672();
    let mut arp = syn(CLIENT, 40000, 5672);
    arp[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    expect_pass(&lab, &arp);
    let mut v6 = Frame::tcp(CLIENT, 40000, VIP, 5672, flags::SYN);
    v6.ether_type = ETH_P_IPV6;
    expect_pass(&lab, &v6.build());
}

#[test]
fn icmp_echo_to_vip_passes() {
    let lab = lab_5672();
    let echo = Frame::new(
        CLIENT,
        VIP,
        L4::Icmp {
            ty: 8,
            code: 0,
            rest: [0, 1, 0, 1],
        },
    )
    .payload(b"ping");
    expect_pass(&lab, &echo.build());
}

#[test]
fn vlan_tagged_frame_is_forwarded_with_its_tag() {
    let lab = lab_5672();
    let frame = Frame::tcp(CLIENT, 40000, VIP, 5672, flags::SYN)
        .vlan(0x2064)
        .build();
    let out = lab.run(&frame);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(&out.frame[12..16], &[0x81, 0x00, 0x20, 0x64], "tag kept");
    assert_eq!(out.frame, forwarded(&frame, dst_mac(&out.frame)));
}

#[test]
fn vlan_tagged_non_vip_passes() {
    let lab = lab_5672();
    expect_pass(
        &lab,
        &Frame::tcp(CLIENT, 40000, OTHER_IP, 5672, flags::SYN)
            .vlan(7)
            .build(),
    );
}

#[test]
fn double_tagged_frame_passes() {
    let lab = lab_5672();
    // Only one 802.1Q tag is understood; a second tag makes the frame someone else's.
    let inner = Frame::tcp(CLIENT, 40000, VIP, 5672, flags::SYN)
        .vlan(7)
        .build();
    let mut qinq = inner[..12].to_vec();
    qinq.extend([0x81, 0x00, 0x00, 0x05]);
    qinq.extend(&inner[12..]);
    expect_pass(&lab, &qinq);
}

#[test]
fn ip_options_are_skipped_and_kept() {
    let lab = lab_5672();
    // Record-route option (7), length 11, pointer 4, room for two addresses.
    let opts = [7u8, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0];
    let frame = Frame::tcp(CLIENT, 40000, VIP, 5672, flags::SYN)
        .ip_options(&opts)
        .build();
    assert_eq!(frame[14] & 0x0f, 8);
    expect_tx(&lab, &frame);
}

#[test]
fn maximal_ip_header_is_handled() {
    let lab = lab_5672();
    let frame = Frame::tcp(CLIENT, 40000, VIP, 5672, flags::SYN)
        .ip_options(&[1u8; 40])
        .build();
    assert_eq!(frame[14] & 0x0f, 15);
    expect_tx(&lab, &frame);
}

#[test]
fn bad_ip_header_length_or_version_passes() {
    let lab = lab_5672();
    let mut short = syn(CLIENT, 40000, 5672);
    short[14] = 0x44; // IHL 4 words: invalid
    expect_pass(&lab, &short);
    let mut v5 = syn(CLIENT, 40000, 5672);
    v5[14] = 0x55;
    expect_pass(&lab, &v5);
}

#[test]
fn every_truncation_of_a_syn_passes_untouched() {
    let lab = lab_5672();
    let frame = Frame::tcp(CLIENT, 40000, VIP, 5672, flags::SYN)
        .vlan(3)
        .ip_options(&[1, 1, 1, 1])
        .build();
    assert_eq!(
        lab.run(&frame).action,
        XDP_TX,
        "the whole frame is forwarded"
    );
    // Cut anywhere before the end of the TCP header, the frame cannot be scheduled; the
    // kernel keeps it (and drops it in its own checks).
    let tcp_end = 18 + 24 + 20;
    assert_eq!(frame.len(), tcp_end);
    for len in 14..tcp_end {
        expect_pass(&lab, &frame[..len]);
    }
    // Frames shorter than an Ethernet header never reach XDP; the kernel refuses to run them.
    for len in 0..14 {
        assert!(
            lab.dp.test_run(&frame[..len]).is_err(),
            "{len}-byte frame was run"
        );
    }
    assert_eq!(lab.dp.global_stats().unwrap().transmitted, 1);
}

// --- Fragments and ICMP -------------------------------------------------------------------------

#[test]
fn fragments_of_a_datagram_reach_one_real() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        udp(VIP, 5000),
        spec(5000, M, &[(R1, 1), (R2, 1), (R3, 1)]),
    )]));
    let mut seen = std::collections::HashSet::new();
    for i in 0..60 {
        let src = client(i);
        let first = Frame::udp(src, 1000 + i as u16, VIP, 5000)
            .payload(&[0xab; 64])
            .fragment(true, 0)
            .build();
        let middle = Frame::new(src, VIP, L4::Raw { proto: 17 })
            .payload(&[0xcd; 72])
            .fragment(true, 9)
            .build();
        let last = Frame::new(src, VIP, L4::Raw { proto: 17 })
            .payload(&[0xef; 10])
            .fragment(false, 18)
            .build();
        let a = expect_tx(&lab, &first);
        assert_eq!(expect_tx(&lab, &middle), a);
        assert_eq!(expect_tx(&lab, &last), a);
        seen.insert(a);
    }
    assert_eq!(seen.len(), 3, "fragments spread over all reals by source");
    let g = lab.dp.global_stats().unwrap();
    assert_eq!(g.fragments, 180);
    assert!(
        lab.dp.conns4().is_empty(),
        "fragments create no connection entries"
    );
}

#[test]
fn fragments_of_a_vip_without_service_for_protocol_pass() {
    let lab = lab_5672();
    let frag = Frame::new(CLIENT, VIP, L4::Raw { proto: 17 })
        .payload(&[0; 16])
        .fragment(false, 3);
    expect_pass(&lab, &frag.build());
    let frag = Frame::new(CLIENT, OTHER_IP, L4::Raw { proto: 6 })
        .payload(&[0; 16])
        .fragment(true, 0);
    expect_pass(&lab, &frag.build());
}

#[test]
fn fragments_follow_the_lowest_port_service_of_the_vip() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![
        (tcp(VIP, 5672), spec(5672, M, &[(R1, 1)])),
        (tcp(VIP, 15672), spec(15672, M, &[(R2, 1)])),
    ]));
    let frag = Frame::new(CLIENT, VIP, L4::Raw { proto: 6 })
        .payload(&[0; 16])
        .fragment(false, 100);
    assert_eq!(expect_tx(&lab, &frag.build()), mac_of(R1));
}

#[test]
fn icmp_frag_needed_goes_to_the_real_of_the_quoted_flow() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        tcp(VIP, 5672),
        spec(5672, M, &[(R1, 1), (R2, 1), (R3, 1)]),
    )]));
    let router = Ipv4Addr::new(10, 0, 0, 1);
    for i in 0..30 {
        let c = client(i);
        let real = expect_tx(&lab, &syn(c, 41000, 5672));
        // The real's reply, VIP:5672 -> client:41000, was too big for a router on the way.
        let reply = Frame::tcp(VIP, 5672, c, 41000, flags::SYN | flags::ACK).payload(&[0; 32]);
        let icmp = icmp_unreachable(router, VIP, 4, 1400, &reply).build();
        assert_eq!(expect_tx(&lab, &icmp), real, "client {c}");
    }
    assert_eq!(lab.dp.global_stats().unwrap().icmp_forwarded, 30);
}

#[test]
fn icmp_unreachable_for_unknown_flow_follows_the_lookup_table() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        tcp(VIP, 5672),
        spec(5672, M, &[(R1, 1), (R2, 1), (R3, 1)]),
    )]));
    let reply = Frame::tcp(VIP, 5672, CLIENT, 42000, flags::ACK);
    let icmp = icmp_unreachable(Ipv4Addr::new(10, 0, 0, 1), VIP, 1, 0, &reply).build();
    let via_icmp = expect_tx(&lab, &icmp);
    assert!(
        lab.dp.conns4().is_empty(),
        "ICMP creates no connection entry"
    );
    // The flow itself would be scheduled to the same real.
    assert_eq!(expect_tx(&lab, &ack(CLIENT, 42000, 5672)), via_icmp);
}

#[test]
fn icmp_about_non_service_or_other_types_passes() {
    let lab = lab_5672();
    let router = Ipv4Addr::new(10, 0, 0, 1);
    let reply = Frame::tcp(VIP, 22, CLIENT, 42000, flags::ACK);
    expect_pass(
        &lab,
        &icmp_unreachable(router, VIP, 4, 1400, &reply).build(),
    );
    // Time exceeded (type 11) quoting a service flow is not ours.
    let reply = Frame::tcp(VIP, 5672, CLIENT, 42000, flags::ACK);
    let mut te = icmp_unreachable(router, VIP, 0, 0, &reply);
    te.l4 = L4::Icmp {
        ty: 11,
        code: 0,
        rest: [0; 4],
    };
    expect_pass(&lab, &te.build());
    // Truncated quote (no ports) passes.
    let full = icmp_unreachable(router, VIP, 4, 1400, &reply).build();
    expect_pass(&lab, &full[..full.len() - 6]);
}

// --- Connection table and TCP state ----------------------------------------------------------------

#[test]
fn tcp_states_follow_ipvs_input_only_table() {
    let lab = lab_5672();
    let f = flow(CLIENT, 40000, 5672, proto::TCP);
    let state = |lab: &Lab| ConnState::from_u8(lab.dp.conn4(&f).unwrap().conn.state);
    let real = expect_tx(&lab, &syn(CLIENT, 40000, 5672));
    assert_eq!(state(&lab), ConnState::SynRecv);
    assert_eq!(expect_tx(&lab, &ack(CLIENT, 40000, 5672)), real);
    assert_eq!(state(&lab), ConnState::Established);
    let fin = Frame::tcp(CLIENT, 40000, VIP, 5672, flags::FIN | flags::ACK).build();
    assert_eq!(expect_tx(&lab, &fin), real);
    assert_eq!(state(&lab), ConnState::FinWait);
    let rst = Frame::tcp(CLIENT, 40000, VIP, 5672, flags::RST).build();
    assert_eq!(expect_tx(&lab, &rst), real);
    assert_eq!(state(&lab), ConnState::Close);
}

#[test]
fn mid_flow_packet_without_entry_is_picked_up_as_established() {
    let lab = lab_5672();
    let real = expect_tx(&lab, &ack(CLIENT, 40000, 5672));
    let c = lab
        .dp
        .conn4(&flow(CLIENT, 40000, 5672, proto::TCP))
        .unwrap()
        .conn;
    assert_eq!(c.state, ConnState::Established as u8);
    assert_eq!(lab.dp.real(c.real).unwrap().mac, real);
    let g = lab.dp.global_stats().unwrap();
    assert_eq!((g.conn_misses, g.conn_hits), (1, 0));
    expect_tx(&lab, &ack(CLIENT, 40000, 5672));
    assert_eq!(lab.dp.global_stats().unwrap().conn_hits, 1);
}

#[test]
fn existing_flows_keep_their_real_when_the_table_changes() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        tcp(VIP, 5672),
        spec(5672, M, &[(R1, 1), (R2, 1)]),
    )]));
    let before: Vec<[u8; 6]> = (0..300)
        .map(|i| expect_tx(&lab, &syn(client(i), 50000, 5672)))
        .collect();
    // Table switch: two more reals; half of the flows' slots now belong to them.
    lab.apply(&desired(vec![(
        tcp(VIP, 5672),
        spec(5672, M, &[(R1, 1), (R2, 1), (R3, 1), (R4, 1)]),
    )]));
    for (i, mac) in before.iter().enumerate() {
        assert_eq!(expect_tx(&lab, &ack(client(i as u32), 50000, 5672)), *mac);
    }
    // New flows do use the new reals.
    let new: std::collections::HashSet<_> = (1000..1300)
        .map(|i| expect_tx(&lab, &syn(client(i), 50000, 5672)))
        .collect();
    assert!(new.contains(&mac_of(R3)) && new.contains(&mac_of(R4)));
}

#[test]
fn expired_entry_is_a_miss() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(tcp(VIP, 5672), spec(5672, M, &[(R1, 1)]))]));
    expect_tx(&lab, &syn(CLIENT, 40000, 5672));
    expect_tx(&lab, &ack(CLIENT, 40000, 5672));
    // The table now sends the flow to R2; the entry keeps it on R1 while it lives.
    lab.apply(&desired(vec![(
        tcp(VIP, 5672),
        spec(5672, M, &[(R1, 0), (R2, 1)]),
    )]));
    lab.advance_clock(900);
    assert_eq!(
        expect_tx(&lab, &ack(CLIENT, 40000, 5672)),
        mac_of(R1),
        "900 s idle: live"
    );
    lab.advance_clock(901);
    assert_eq!(
        expect_tx(&lab, &ack(CLIENT, 40000, 5672)),
        mac_of(R2),
        "901 s idle: expired"
    );
    // CLOSE lives 10 s.
    let rst = Frame::tcp(CLIENT, 40000, VIP, 5672, flags::RST).build();
    assert_eq!(expect_tx(&lab, &rst), mac_of(R2));
    lab.apply(&desired(vec![(
        tcp(VIP, 5672),
        spec(5672, M, &[(R1, 1), (R2, 0)]),
    )]));
    lab.advance_clock(10);
    assert_eq!(expect_tx(&lab, &ack(CLIENT, 40000, 5672)), mac_of(R2));
    lab.advance_clock(11);
    assert_eq!(expect_tx(&lab, &ack(CLIENT, 40000, 5672)), mac_of(R1));
}

#[test]
fn new_syn_is_scheduled_afresh() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        tcp(VIP, 5672),
        spec(5672, M, &[(R1, 1), (R2, 0)]),
    )]));
    let f = flow(CLIENT, 40000, 5672, proto::TCP);
    expect_tx(&lab, &syn(CLIENT, 40000, 5672));
    expect_tx(&lab, &ack(CLIENT, 40000, 5672));
    // The client reuses the port after the table changed: the SYN does not follow the old
    // entry; the ACK after it follows the new one.
    lab.apply(&desired(vec![(
        tcp(VIP, 5672),
        spec(5672, M, &[(R1, 0), (R2, 1)]),
    )]));
    assert_eq!(expect_tx(&lab, &syn(CLIENT, 40000, 5672)), mac_of(R2));
    assert_eq!(
        lab.dp.conn4(&f).unwrap().conn.state,
        ConnState::SynRecv as u8
    );
    assert_eq!(expect_tx(&lab, &ack(CLIENT, 40000, 5672)), mac_of(R2));
}

// --- Drain, down, empty --------------------------------------------------------------------------

#[test]
fn drained_real_keeps_its_flows_but_gets_no_new_ones() {
    let mut lab = lab_5672();
    let flows: Vec<(u32, [u8; 6])> = (0..300)
        .map(|i| (i, expect_tx(&lab, &syn(client(i), 45000, 5672))))
        .collect();
    assert!(flows.iter().any(|(_, m)| *m == mac_of(R2)));
    lab.apply(&desired(vec![(
        tcp(VIP, 5672),
        spec(5672, M, &[(R1, 1), (R2, 0), (R3, 1)]),
    )]));
    for (i, mac) in &flows {
        assert_eq!(expect_tx(&lab, &ack(client(*i), 45000, 5672)), *mac);
    }
    for i in 1000..1500 {
        assert_ne!(expect_tx(&lab, &syn(client(i), 45000, 5672)), mac_of(R2));
    }
}

#[test]
fn down_real_loses_its_flows_at_once() {
    let mut lab = lab_5672();
    let flows: Vec<(u32, [u8; 6])> = (0..300)
        .map(|i| (i, expect_tx(&lab, &syn(client(i), 46000, 5672))))
        .collect();
    let on_r2 = flows.iter().filter(|(_, m)| *m == mac_of(R2)).count();
    assert!(on_r2 > 50);
    let mut d = lab.desired.clone();
    d.services
        .get_mut(&tcp(VIP, 5672))
        .unwrap()
        .reals
        .get_mut(&rk(R2, 5672))
        .unwrap()
        .health = Health::Down;
    lab.apply(&d);
    for (i, mac) in &flows {
        let now = expect_tx(&lab, &ack(client(*i), 46000, 5672));
        if *mac == mac_of(R2) {
            assert_ne!(now, mac_of(R2), "flow {i} still sent to the down real");
        } else {
            assert_eq!(now, *mac, "flow {i} on a live real moved");
        }
    }
    assert_eq!(
        lab.dp.global_stats().unwrap().conn_rescheduled,
        on_r2 as u64
    );
    // The rescheduled flows stay where they were moved.
    for (i, mac) in &flows {
        if *mac == mac_of(R2) {
            let again = expect_tx(&lab, &ack(client(*i), 46000, 5672));
            assert_ne!(again, mac_of(R2));
        }
    }
}

#[test]
fn no_usable_real_drops_and_counts() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        tcp(VIP, 5672),
        spec(5672, M, &[(R1, 0), (R2, 0)]),
    )]));
    expect_drop(&lab, &syn(CLIENT, 40000, 5672));
    let mut d = desired(vec![(tcp(VIP, 5672), spec(5672, M, &[(R1, 1)]))]);
    d.services
        .get_mut(&tcp(VIP, 5672))
        .unwrap()
        .reals
        .get_mut(&rk(R1, 5672))
        .unwrap()
        .health = Health::Down;
    lab.apply(&d);
    expect_drop(&lab, &ack(CLIENT, 40001, 5672));
    lab.apply(&desired(vec![(tcp(VIP, 5672), spec(5672, M, &[]))]));
    expect_drop(&lab, &syn(CLIENT, 40002, 5672));
    let frag = Frame::new(CLIENT, VIP, L4::Raw { proto: 6 })
        .payload(&[0; 8])
        .fragment(false, 8);
    expect_drop(&lab, &frag.build());
    let g = lab.dp.global_stats().unwrap();
    assert_eq!(g.drop_no_real, 4);
    assert_eq!(g.transmitted, 0);
}

#[test]
fn real_whose_index_moved_to_another_service_is_not_used() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![
        (tcp(VIP, 80), spec(80, M, &[(R1, 1)])),
        (tcp(VIP, 443), spec(443, M, &[(R2, 1)])),
    ]));
    let f = flow(CLIENT, 40000, 80, proto::TCP);
    expect_tx(&lab, &syn(CLIENT, 40000, 80));
    // Forge the entry to point at the 443 service's real: it must not be used for port 80.
    let mut c = lab.dp.conn4(&f).unwrap().conn;
    c.real = lab.real_index(&tcp(VIP, 443), &rk(R2, 443));
    assert!(lab.dp.insert_conn4(&f, &c));
    assert_eq!(expect_tx(&lab, &ack(CLIENT, 40000, 80)), mac_of(R1));
    assert_eq!(lab.dp.global_stats().unwrap().conn_rescheduled, 1);
}

#[test]
fn mac_change_of_a_real_is_followed_by_its_flows() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(tcp(VIP, 80), spec(80, M, &[(R1, 1)]))]));
    assert_eq!(expect_tx(&lab, &syn(CLIENT, 40000, 80)), mac_of(R1));
    let mut d = lab.desired.clone();
    let new_mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
    d.services
        .get_mut(&tcp(VIP, 80))
        .unwrap()
        .reals
        .get_mut(&rk(R1, 80))
        .unwrap()
        .mac = Some(new_mac);
    lab.apply(&d);
    assert_eq!(expect_tx(&lab, &ack(CLIENT, 40000, 80)), new_mac);
}

// --- Scheduling: weights, sh, persistence -----------------------------------------------------------

#[test]
fn weights_are_honoured_for_new_flows() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        tcp(VIP, 80),
        spec(80, M, &[(R1, 100), (R2, 100), (R3, 50)]),
    )]));
    let mut counts = std::collections::HashMap::new();
    let n = 5000;
    for i in 0..n {
        *counts
            .entry(expect_tx(
                &lab,
                &syn(client(i), 1024 + (i % 50000) as u16, 80),
            ))
            .or_insert(0u32) += 1;
    }
    let share = |r| counts[&mac_of(r)] as f64 / n as f64;
    for (r, want) in [(R1, 0.4), (R2, 0.4), (R3, 0.2)] {
        assert!(
            (share(r) - want).abs() < 0.03,
            "{r}: {} vs {want}",
            share(r)
        );
    }
}

#[test]
fn source_hash_keeps_a_client_on_one_real_without_templates() {
    let mut lab = Lab::new();
    let mut s = spec(80, M, &[(R1, 1), (R2, 1), (R3, 1)]);
    s.scheduler = Scheduler::SourceHash;
    lab.apply(&desired(vec![(tcp(VIP, 80), s)]));
    let mut seen = std::collections::HashSet::new();
    for c in 0..50 {
        let first = expect_tx(&lab, &syn(client(c), 10000, 80));
        for port in 10001..10010 {
            assert_eq!(expect_tx(&lab, &syn(client(c), port, 80)), first);
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 3);
    assert!(lab.dp.persist4().is_empty());
}

#[test]
fn persistence_keeps_a_client_on_its_real_across_table_changes() {
    let mut lab = Lab::new();
    let s = |reals: &[(Ipv4Addr, u32)]| {
        persistent(spec(5672, M, reals), 50, Ipv4Addr::new(255, 255, 255, 255))
    };
    lab.apply(&desired(vec![(tcp(VIP, 5672), s(&[(R1, 1), (R2, 1)]))]));
    let firsts: Vec<[u8; 6]> = (0..100)
        .map(|c| expect_tx(&lab, &syn(client(c), 20000, 5672)))
        .collect();
    assert_eq!(lab.dp.persist4().len(), 100);
    // New reals join: new connections of known clients still go to their real.
    lab.apply(&desired(vec![(
        tcp(VIP, 5672),
        s(&[(R1, 1), (R2, 1), (R3, 1), (R4, 1)]),
    )]));
    for (c, mac) in firsts.iter().enumerate() {
        assert_eq!(expect_tx(&lab, &syn(client(c as u32), 20001, 5672)), *mac);
    }
    let g = lab.dp.global_stats().unwrap();
    assert_eq!(g.persist_hits, 100);
}

#[test]
fn persistence_granularity_groups_a_network() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        tcp(VIP, 80),
        persistent(
            spec(80, M, &[(R1, 1), (R2, 1), (R3, 1)]),
            300,
            Ipv4Addr::new(255, 255, 255, 0),
        ),
    )]));
    for net in 0..20u32 {
        let base = u32::from(Ipv4Addr::new(172, 16, net as u8, 0));
        let first = expect_tx(&lab, &syn(Ipv4Addr::from(base + 1), 30000, 80));
        for host in 2..20 {
            assert_eq!(
                expect_tx(&lab, &syn(Ipv4Addr::from(base + host), 30000, 80)),
                first
            );
        }
    }
    assert_eq!(lab.dp.persist4().len(), 20);
}

#[test]
fn expired_template_is_not_followed() {
    let mut lab = Lab::new();
    let s = |reals: &[(Ipv4Addr, u32)]| {
        persistent(spec(80, M, reals), 50, Ipv4Addr::new(255, 255, 255, 255))
    };
    lab.apply(&desired(vec![(tcp(VIP, 80), s(&[(R1, 1)]))]));
    expect_tx(&lab, &syn(CLIENT, 30000, 80));
    lab.apply(&desired(vec![(tcp(VIP, 80), s(&[(R1, 0), (R2, 1)]))]));
    // Live template: still R1 (a drained real keeps pinning, as IPVS does by default).
    assert_eq!(expect_tx(&lab, &syn(CLIENT, 30001, 80)), mac_of(R1));
    lab.advance_clock(50);
    assert_eq!(
        expect_tx(&lab, &syn(CLIENT, 30002, 80)),
        mac_of(R1),
        "50 s: live"
    );
    lab.advance_clock(51);
    assert_eq!(expect_tx(&lab, &syn(CLIENT, 30003, 80)), mac_of(R2));
}

#[test]
fn template_to_a_down_real_is_not_followed() {
    let mut lab = Lab::new();
    let s = persistent(
        spec(80, M, &[(R1, 1), (R2, 1)]),
        300,
        Ipv4Addr::new(255, 255, 255, 255),
    );
    lab.apply(&desired(vec![(tcp(VIP, 80), s)]));
    let first = expect_tx(&lab, &syn(CLIENT, 30000, 80));
    let down = if first == mac_of(R1) { R1 } else { R2 };
    let mut d = lab.desired.clone();
    d.services
        .get_mut(&tcp(VIP, 80))
        .unwrap()
        .reals
        .get_mut(&rk(down, 80))
        .unwrap()
        .health = Health::Down;
    lab.apply(&d);
    let next = expect_tx(&lab, &syn(CLIENT, 30001, 80));
    assert_ne!(next, mac_of(down));
    // The template now points at the live real.
    assert_eq!(expect_tx(&lab, &syn(CLIENT, 30002, 80)), next);
}

// --- Counters ------------------------------------------------------------------------------------

#[test]
fn counters_per_service_per_real_and_global() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![
        (tcp(VIP, 80), spec(80, M, &[(R1, 1)])),
        (tcp(VIP, 443), spec(443, M, &[(R2, 1)])),
    ]));
    let s = syn(CLIENT, 40000, 80);
    let a = Frame::tcp(CLIENT, 40000, VIP, 80, flags::ACK)
        .payload(&[1; 100])
        .build();
    expect_tx(&lab, &s);
    expect_tx(&lab, &a);
    expect_tx(&lab, &a);
    expect_tx(&lab, &syn(CLIENT, 40001, 443));
    expect_pass(&lab, &syn(CLIENT, 40000, 8080));
    let ip_len = |f: &[u8]| (f.len() - 14) as u64;
    let s80 = lab.dp.service_stats(lab.service_id(&tcp(VIP, 80))).unwrap();
    assert_eq!((s80.packets, s80.conns), (3, 1));
    assert_eq!(s80.bytes, ip_len(&s) + 2 * ip_len(&a));
    let r1 = lab
        .dp
        .real_stats(lab.real_index(&tcp(VIP, 80), &rk(R1, 80)))
        .unwrap();
    assert_eq!(r1, s80);
    let s443 = lab
        .dp
        .service_stats(lab.service_id(&tcp(VIP, 443)))
        .unwrap();
    assert_eq!((s443.packets, s443.conns), (1, 1));
    let g = lab.dp.global_stats().unwrap();
    assert_eq!((g.rx, g.transmitted, g.passed), (5, 4, 1));
    assert_eq!((g.conn_misses, g.conn_hits), (2, 2));
}

#[test]
fn source_mac_is_the_directors_whatever_arrived() {
    let lab = lab_5672();
    let mut f = Frame::tcp(CLIENT, 40000, VIP, 5672, flags::SYN);
    f.dst_mac = [0xff; 6];
    f.src_mac = [0x02, 1, 2, 3, 4, 5];
    let frame = f.build();
    let out = lab.run(&frame);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(&out.frame[6..12], &lb_tests::packet::DIRECTOR_MAC);
    assert_eq!(&out.frame[12..], &frame[12..]);
}

#[test]
fn conn_entry_records_real_and_time() {
    let lab = lab_5672();
    let mac = expect_tx(&lab, &syn(CLIENT, 40000, 5672));
    let e = lab
        .dp
        .conn4(&flow(CLIENT, 40000, 5672, proto::TCP))
        .unwrap();
    let c: Conn = e.conn;
    assert_eq!(lab.dp.real(c.real).unwrap().mac, mac);
    assert_eq!(e.stamp, lb_tests::lab::START_CLOCK);
}

#[test]
fn port_zero_is_never_a_service() {
    // Port 0 keys hold the VIPs' fragment entries; an unfragmented packet to port 0 is not
    // for a service (found by the randomized test).
    let lab = lab_5672();
    expect_pass(&lab, &syn(CLIENT, 40000, 0));
    expect_pass(&lab, &Frame::udp(CLIENT, 40000, VIP, 0).build());
    let reply = Frame::tcp(VIP, 0, CLIENT, 42000, flags::ACK);
    expect_pass(
        &lab,
        &icmp_unreachable(Ipv4Addr::new(10, 0, 0, 1), VIP, 4, 1400, &reply).build(),
    );
}
