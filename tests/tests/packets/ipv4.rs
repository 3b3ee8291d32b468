//! Packet-level tests of the XDP program that only IPv4 has: real frames through the real
//! program in the kernel (BPF_PROG_TEST_RUN), asserting the action and every output byte. The
//! tests IPv4 shares with IPv6 are in [`super::common`]; the addresses are the same
//! ([`V4`]). Needs root.

use std::net::Ipv4Addr;

use lb_tests::{
    family::{Family, V4},
    lab::{Lab, desired, expect_pass, expect_tx, mac_of, persistent, rk, spec, tcp, udp},
    packet::{ETH_P_ARP, ETH_P_IPV6, Frame, L4, flags, icmp_unreachable},
};

const VIP: Ipv4Addr = V4::VIP;
const CLIENT: Ipv4Addr = V4::CLIENT;
const R1: Ipv4Addr = V4::R1;
const R2: Ipv4Addr = V4::R2;
const R3: Ipv4Addr = V4::R3;
const M: u32 = 65_537;

fn client(i: u32) -> Ipv4Addr {
    V4::client(i)
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

// --- Forwarding --------------------------------------------------------------------------------

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

// --- Reals --------------------------------------------------------------------------------------

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

// --- Persistence granularity --------------------------------------------------------------------

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
