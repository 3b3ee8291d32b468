//! Packet-level tests of the XDP program that only IPv6 has: real frames through the real
//! program in the kernel (BPF_PROG_TEST_RUN), asserting the action and every output byte. The
//! tests IPv6 shares with IPv4 are in [`super::common`]; the addresses are the same
//! ([`V6`]). The contract is `/work/notes/ipv6-contract.md`: extension headers skipped (at
//! most four), fragments through the VIP's port-0 entry, ICMPv6 errors to the real of the
//! quoted flow. Needs root.

use std::{
    collections::{HashMap, HashSet},
    net::{Ipv4Addr, Ipv6Addr},
};

use lb_common::{Flow6Key, proto};
use lb_tests::{
    family::{Family, V4, V6},
    lab::{
        Lab, XDP_PASS, XDP_TX, desired, expect_pass, expect_tx, forwarded, mac_of, mac_of6,
        persistent6, rk6, spec, spec6, tcp, tcp6, udp6,
    },
    packet::{
        ETH_P_IPV4, ExtHdr, Frame, Frame6, L4, dst_mac, flags, icmp6, icmp6_error, icmp6_too_big,
        icmp6_unreachable, neighbour_solicitation, nh,
    },
};
use lb_userspace::model::Scheduler;

const VIP: Ipv6Addr = V6::VIP;
const OTHER_IP: Ipv6Addr = V6::OTHER_IP;
const CLIENT: Ipv6Addr = V6::CLIENT;
const ROUTER: Ipv6Addr = V6::ROUTER;
const R1: Ipv6Addr = V6::R1;
const R2: Ipv6Addr = V6::R2;
const R3: Ipv6Addr = V6::R3;
const R4: Ipv6Addr = V6::R4;
const M: u32 = 65_537;

/// Client `i`: distinct addresses in one /64 (low 32 bits).
fn client(i: u32) -> Ipv6Addr {
    V6::client(i)
}

/// Host `host` of client network `net` (`2001:db8:100:<net>::/64`).
fn net_host(net: u16, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x100, net, 0, 0, 0x5, host)
}

/// One TCP service on 5672 with three reals of weight 1.
fn lab_5672() -> Lab {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        tcp6(VIP, 5672),
        spec6(5672, M, &[(R1, 1), (R2, 1), (R3, 1)]),
    )]));
    lab
}

fn syn(src: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    Frame6::tcp(src, sport, VIP, dport, flags::SYN).build()
}

fn ack(src: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    Frame6::tcp(src, sport, VIP, dport, flags::ACK).build()
}

fn flow(src: Ipv6Addr, sport: u16, dport: u16, p: u8) -> Flow6Key {
    Flow6Key::from_parts(src.octets(), sport, VIP.octets(), dport, p)
}

fn reals_macs(reals: &[Ipv6Addr]) -> Vec<[u8; 6]> {
    reals.iter().map(|r| mac_of6(*r)).collect()
}

/// The real server's reply `VIP:vport -> client:cport`, as an ICMPv6 error quotes it.
fn reply(c: Ipv6Addr, cport: u16, vport: u16) -> Frame6 {
    Frame6::tcp(VIP, vport, c, cport, flags::SYN | flags::ACK).payload(&[0; 32])
}

// --- Forwarding --------------------------------------------------------------------------------

/// The IPv6 half of `common::*::tcp_frames_with_payload_keep_every_byte`: traffic class, flow
/// label and hop limit, whatever they are, are kept too.
#[test]
fn tcp_frames_keep_traffic_class_flow_label_and_hop_limit() {
    let lab = lab_5672();
    let mut f = Frame6::tcp(CLIENT, 40001, VIP, 5672, flags::ACK | flags::PSH)
        .payload(b"AMQP\x00\x00\x09\x01 payload bytes");
    f.traffic_class = 0xb8;
    f.flow_label = 0xf_edcb;
    f.hop_limit = 3;
    expect_tx(&lab, &f.build());
}

#[test]
fn neighbour_discovery_and_echo_to_the_vip_pass() {
    let lab = lab_5672();
    let mac = [0x02, 0xc1, 0, 0, 0, 0x21];
    // Address resolution (to the solicited-node group) and reachability probes (unicast to
    // the VIP itself).
    expect_pass(
        &lab,
        &neighbour_solicitation(CLIENT, mac, VIP, false).build(),
    );
    expect_pass(
        &lab,
        &neighbour_solicitation(CLIENT, mac, VIP, true).build(),
    );
    let mut na = Vec::from(VIP.octets());
    na.extend([2, 1, 2, 0, 0, 0, 0, 0x11]);
    let advert = Frame6::icmp(R1, VIP, icmp6::NEIGHBOUR_ADVERT, 0, [0x60, 0, 0, 0]).payload(&na);
    expect_pass(&lab, &advert.build());
    let rs = Frame6::icmp(CLIENT, VIP, icmp6::ROUTER_SOLICIT, 0, [0; 4]);
    expect_pass(&lab, &rs.build());
    expect_pass(
        &lab,
        &Frame6::echo_request(CLIENT, VIP, 7, 1)
            .payload(b"ping")
            .build(),
    );
    let reply = Frame6::icmp(CLIENT, VIP, icmp6::ECHO_REPLY, 0, [0, 7, 0, 1]);
    expect_pass(&lab, &reply.build());
    // With a VLAN tag and an extension header too.
    expect_pass(
        &lab,
        &Frame6::echo_request(CLIENT, VIP, 7, 2)
            .vlan(5)
            .ext(ExtHdr::dest_opts())
            .build(),
    );
    let g = lab.dp.global_stats().unwrap();
    assert_eq!((g.passed, g.transmitted, g.icmp_forwarded), (7, 0, 0));
}

#[test]
fn wrong_version_or_ethertype_passes() {
    let lab = lab_5672();
    let good = syn(CLIENT, 40000, 5672);
    for version in [0x40, 0x50, 0x70, 0x00] {
        let mut f = good.clone();
        f[14] = version | (f[14] & 0x0f);
        expect_pass(&lab, &f);
    }
    // An IPv6 packet under the IPv4 ethertype is not parsed as IPv6.
    let mut f = Frame6::tcp(CLIENT, 40000, VIP, 5672, flags::SYN);
    f.ether_type = ETH_P_IPV4;
    expect_pass(&lab, &f.build());
    // The IPv4-mapped form of an address is not the address.
    let mapped = Ipv4Addr::new(10, 0, 0, 100).to_ipv6_mapped();
    expect_pass(
        &lab,
        &Frame6::tcp(CLIENT, 40000, mapped, 5672, flags::SYN).build(),
    );
    assert_eq!(lab.dp.global_stats().unwrap().transmitted, 0);
}

// --- Extension headers -------------------------------------------------------------------------

/// Each kind the program skips, with its contract name.
fn skippable() -> Vec<(&'static str, ExtHdr)> {
    vec![
        ("hop-by-hop", ExtHdr::hop_by_hop()),
        ("routing", ExtHdr::routing()),
        ("destination options", ExtHdr::dest_opts()),
        ("atomic fragment", ExtHdr::fragment(0, false, 0x77)),
        ("authentication", ExtHdr::auth()),
    ]
}

#[test]
fn each_extension_header_type_is_skipped_and_the_frame_forwarded_unchanged() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![
        (
            tcp6(VIP, 5672),
            spec6(5672, M, &[(R1, 1), (R2, 1), (R3, 1)]),
        ),
        (udp6(VIP, 53), spec6(53, M, &[(R4, 1)])),
    ]));
    for (i, (name, h)) in skippable().into_iter().enumerate() {
        let sport = 41000 + i as u16;
        let f = Frame6::tcp(CLIENT, sport, VIP, 5672, flags::SYN)
            .ext(h.clone())
            .payload(b"data");
        let mac = expect_tx(&lab, &f.build());
        // The ports were read from behind the header: the flow has its entry, and the same
        // flow without the header follows it.
        let c = lab
            .dp
            .conn6(&flow(CLIENT, sport, 5672, proto::TCP))
            .unwrap_or_else(|| panic!("{name}: no entry for the flow"));
        assert_eq!(lab.dp.real(c.conn.real).unwrap().mac, mac, "{name}");
        assert_eq!(expect_tx(&lab, &ack(CLIENT, sport, 5672)), mac, "{name}");
        let u = Frame6::udp(CLIENT, sport, VIP, 53).ext(h).payload(b"q");
        assert_eq!(expect_tx(&lab, &u.build()), mac_of6(R4), "{name} (UDP)");
    }
    let g = lab.dp.global_stats().unwrap();
    assert_eq!((g.fragments, g.ext_hdr_passed), (0, 0));
}

#[test]
fn long_extension_headers_are_skipped() {
    let lab = lab_5672();
    // The longest destination-options header (2048 bytes), a 256-byte hop-by-hop header and
    // an authentication header with a 256-bit ICV.
    let mut pads = Vec::new();
    for _ in 0..8 {
        pads.push(1);
        pads.push(253);
        pads.extend([0; 253]);
    }
    pads.extend([1, 4, 0, 0, 0, 0]);
    let long_dest = ExtHdr::DestOpts { options: pads };
    assert_eq!(long_dest.bytes(6).len(), 2048);
    let long_hbh = ExtHdr::HopByHop {
        options: [vec![5, 2, 0, 0], vec![1, 246], vec![0; 246]].concat(),
    };
    assert_eq!(long_hbh.bytes(6).len(), 256);
    let long_ah = ExtHdr::Auth {
        spi: 9,
        seq: 9,
        icv: vec![0x3c; 36],
    };
    assert_eq!(long_ah.bytes(6).len(), 48);
    let f = Frame6::tcp(CLIENT, 40000, VIP, 5672, flags::SYN)
        .ext(long_hbh)
        .ext(long_dest)
        .ext(long_ah);
    let mac = expect_tx(&lab, &f.build());
    assert_eq!(
        expect_tx(&lab, &ack(CLIENT, 40000, 5672)),
        mac,
        "the entry has the flow's ports"
    );
}

#[test]
fn four_extension_headers_are_skipped_and_a_fifth_is_passed_and_counted() {
    let lab = lab_5672();
    let kinds = skippable();
    // Every choice of four of the five kinds, in two orders.
    let mut port = 42000;
    for leave_out in 0..kinds.len() {
        let four: Vec<ExtHdr> = kinds
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != leave_out)
            .map(|(_, (_, h))| h.clone())
            .collect();
        for order in [four.clone(), four.iter().rev().cloned().collect()] {
            let mut f = Frame6::tcp(CLIENT, port, VIP, 5672, flags::SYN);
            f.ext = order;
            expect_tx(&lab, &f.build());
            port += 1;
        }
    }
    // Four of one kind is four too.
    let mut f = Frame6::tcp(CLIENT, port, VIP, 5672, flags::SYN);
    f.ext = vec![ExtHdr::dest_opts(); 4];
    expect_tx(&lab, &f.build());
    assert_eq!(lab.dp.global_stats().unwrap().ext_hdr_passed, 0);

    // Five: the kernel gets it, untouched, and the counter says why.
    let mut five = Frame6::tcp(CLIENT, 43000, VIP, 5672, flags::SYN);
    five.ext = kinds.iter().map(|(_, h)| h.clone()).collect();
    expect_pass(&lab, &five.build());
    five.ext = vec![ExtHdr::dest_opts(); 5];
    expect_pass(&lab, &five.build());
    five.ext = vec![ExtHdr::hop_by_hop(); 9];
    expect_pass(&lab, &five.build());
    let g = lab.dp.global_stats().unwrap();
    assert_eq!(g.ext_hdr_passed, 3);
    assert!(
        lab.dp
            .conn6(&flow(CLIENT, 43000, 5672, proto::TCP))
            .is_none(),
        "a passed frame creates no entry"
    );
}

#[test]
fn esp_is_passed_and_counted() {
    let lab = lab_5672();
    let esp = Frame6::tcp(CLIENT, 40000, VIP, 5672, flags::SYN).ext(ExtHdr::esp());
    expect_pass(&lab, &esp.build());
    let behind = Frame6::tcp(CLIENT, 40000, VIP, 5672, flags::SYN)
        .ext(ExtHdr::hop_by_hop())
        .ext(ExtHdr::auth())
        .ext(ExtHdr::esp());
    expect_pass(&lab, &behind.build());
    let g = lab.dp.global_stats().unwrap();
    assert_eq!((g.ext_hdr_passed, g.passed, g.transmitted), (2, 2, 0));
}

#[test]
fn unknown_headers_after_the_extension_headers_pass() {
    let lab = lab_5672();
    for p in [nh::NO_NEXT, 135, 139, 140, 253, 47] {
        let f = Frame6::new(CLIENT, VIP, L4::Raw { proto: p })
            .ext(ExtHdr::hop_by_hop())
            .payload(&[0; 32]);
        expect_pass(&lab, &f.build());
    }
}

// --- Fragments and ICMPv6 ----------------------------------------------------------------------

#[test]
fn fragments_of_a_datagram_reach_one_real_and_create_no_entries() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        udp6(VIP, 5000),
        spec6(5000, M, &[(R1, 1), (R2, 1), (R3, 1)]),
    )]));
    let mut seen = HashSet::new();
    let mut n = 0;
    for i in 0..60 {
        let mut datagram = Frame6::udp(client(i), 1000 + i as u16, VIP, 5000).payload(&[0xab; 300]);
        if i % 2 == 1 {
            // Unfragmentable headers in front of the fragment header.
            datagram = datagram.ext(ExtHdr::hop_by_hop()).ext(ExtHdr::routing());
        }
        let frags = datagram.fragments(0x1000 + i, 104);
        assert!(frags.len() >= 3, "{} fragments", frags.len());
        let first = expect_tx(&lab, &frags[0]);
        for f in &frags[1..] {
            assert_eq!(expect_tx(&lab, f), first, "client {i}");
        }
        n += frags.len() as u64;
        seen.insert(first);
    }
    assert_eq!(seen.len(), 3, "fragments spread over all reals by source");
    let g = lab.dp.global_stats().unwrap();
    assert_eq!(g.fragments, n);
    assert!(
        lab.dp.conns6().is_empty(),
        "fragments create no connection entries"
    );
}

#[test]
fn fragments_whose_fragmentable_part_starts_with_an_extension_header_share_one_verdict() {
    // A UDP datagram with a destination-options header in its fragmentable part: the fragment
    // header names that header, which only the first fragment carries. Whatever the program
    // does with such fragments, it must do the same with all of them (one real, or the
    // kernel), and never parse a later fragment's data as headers. Here the data of the
    // second fragment happens to look like a destination-options header and a TCP header to a
    // TCP service's port.
    let mut lab = Lab::new();
    lab.apply(&desired(vec![
        (udp6(VIP, 5000), spec6(5000, M, &[(R1, 1), (R2, 1)])),
        (tcp6(VIP, 5672), spec6(5672, M, &[(R3, 1), (R4, 1)])),
    ]));
    let mut data = vec![0xab; 80];
    let mut lure = vec![nh::TCP, 0, 1, 4, 0, 0, 0, 0];
    lure.extend(&Frame6::tcp(CLIENT, 40000, VIP, 5672, flags::SYN).l4_bytes());
    data.extend(&lure);
    data.resize(300, 0xcd);
    let datagram = Frame6::udp(CLIENT, 7000, VIP, 5000)
        .ext(ExtHdr::dest_opts())
        .payload(&data);
    // Dest opts (8) + UDP (8) + 80 bytes: the second fragment's data starts with the lure.
    let frags = datagram.fragments(0x4242, 96);
    assert_eq!(&frags[1][14 + 48..14 + 48 + 8], &lure[..8]);
    let verdicts: Vec<(u32, Vec<u8>)> = frags
        .iter()
        .map(|f| {
            let out = lab.run(f);
            match out.action {
                XDP_TX => {
                    assert_eq!(out.frame, forwarded(f, dst_mac(&out.frame)));
                    (XDP_TX, dst_mac(&out.frame).to_vec())
                }
                XDP_PASS => {
                    assert_eq!(&out.frame, f);
                    (XDP_PASS, Vec::new())
                }
                other => (other, Vec::new()),
            }
        })
        .collect();
    assert!(
        verdicts.iter().all(|v| *v == verdicts[0]),
        "the fragments of one datagram got different verdicts (action, real MAC): {verdicts:?}"
    );
    if verdicts[0].0 == XDP_TX {
        assert!(reals_macs(&[R1, R2]).contains(&verdicts[0].1.as_slice().try_into().unwrap()));
    }
    assert!(lab.dp.conns6().is_empty());
}

#[test]
fn headers_running_past_the_end_of_the_frame_pass() {
    // A destination-options header that claims 32 bytes where the frame has 8: nothing after
    // it is in the frame, whether the packet is a whole datagram or a first fragment.
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        udp6(VIP, 5000),
        spec6(5000, M, &[(R1, 1), (R2, 1)]),
    )]));
    let whole = Frame6::udp(CLIENT, 7000, VIP, 5000).ext(ExtHdr::dest_opts());
    let first_fragment = Frame6::udp(CLIENT, 7000, VIP, 5000)
        .fragment(true, 0, 9)
        .ext(ExtHdr::dest_opts());
    for (name, f, at) in [
        ("whole datagram", whole, 14 + 40),
        ("first fragment", first_fragment, 14 + 48),
    ] {
        let mut bytes = f.build();
        assert_eq!(bytes[at], nh::UDP, "{name}: the dest opts header");
        bytes[at + 1] = 3;
        bytes.truncate(at + 8);
        let payload_len = (bytes.len() - 14 - 40) as u16;
        bytes[18..20].copy_from_slice(&payload_len.to_be_bytes());
        let out = lab.run(&bytes);
        assert_eq!(
            (out.action, out.frame == bytes),
            (XDP_PASS, true),
            "{name}: {bytes:02x?}"
        );
    }
    assert_eq!(lab.dp.global_stats().unwrap().transmitted, 0);
}

#[test]
fn atomic_fragment_is_an_ordinary_packet() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        udp6(VIP, 5000),
        spec6(5000, M, &[(R1, 1), (R2, 1), (R3, 1)]),
    )]));
    let atomic = Frame6::udp(CLIENT, 7000, VIP, 5000)
        .fragment(false, 0, 99)
        .payload(b"whole");
    let mac = expect_tx(&lab, &atomic.build());
    let c = lab
        .dp
        .conn6(&flow(CLIENT, 7000, 5000, proto::UDP))
        .expect("an atomic fragment is scheduled by its ports");
    assert_eq!(lab.dp.real(c.conn.real).unwrap().mac, mac);
    let plain = Frame6::udp(CLIENT, 7000, VIP, 5000).payload(b"next");
    assert_eq!(expect_tx(&lab, &plain.build()), mac);
    let g = lab.dp.global_stats().unwrap();
    assert_eq!((g.fragments, g.conn_hits), (0, 1));
}

#[test]
fn icmp6_packet_too_big_goes_to_the_real_of_the_quoted_flow() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        tcp6(VIP, 5672),
        spec6(5672, M, &[(R1, 1), (R2, 1)]),
    )]));
    let flows: Vec<(Ipv6Addr, [u8; 6])> = (0..30)
        .map(|i| (client(i), expect_tx(&lab, &syn(client(i), 41000, 5672))))
        .collect();
    // The table changes: half of the flows' slots now belong to new reals. The ICMP errors
    // follow the connection table, not the lookup table.
    lab.apply(&desired(vec![(
        tcp6(VIP, 5672),
        spec6(5672, M, &[(R1, 1), (R2, 1), (R3, 1), (R4, 1)]),
    )]));
    for (c, real) in &flows {
        // The real's reply, VIP:5672 -> client:41000, was too big for a router on the way.
        let icmp = icmp6_too_big(ROUTER, VIP, 1280, &reply(*c, 41000, 5672)).build();
        assert_eq!(expect_tx(&lab, &icmp), *real, "client {c}");
    }
    let g = lab.dp.global_stats().unwrap();
    assert_eq!(g.icmp_forwarded, 30);
    assert_eq!(lab.dp.conns6().len(), 30, "ICMP creates no entry");
}

#[test]
fn icmp6_unreachable_goes_to_the_real_of_the_quoted_flow() {
    let lab = lab_5672();
    for code in 0..=6 {
        let c = client(100 + u32::from(code));
        let real = expect_tx(&lab, &syn(c, 41000, 5672));
        let icmp = icmp6_unreachable(ROUTER, VIP, code, &reply(c, 41000, 5672))
            .vlan(9)
            .build();
        assert_eq!(expect_tx(&lab, &icmp), real, "code {code}");
    }
    assert_eq!(lab.dp.global_stats().unwrap().icmp_forwarded, 7);
}

#[test]
fn icmp6_error_for_an_unknown_flow_follows_the_lookup_table() {
    let lab = lab_5672();
    let quoted = Frame6::tcp(VIP, 5672, CLIENT, 42000, flags::ACK);
    let via_icmp = expect_tx(&lab, &icmp6_unreachable(ROUTER, VIP, 1, &quoted).build());
    let via_ptb = expect_tx(&lab, &icmp6_too_big(ROUTER, VIP, 1400, &quoted).build());
    assert_eq!(via_ptb, via_icmp);
    assert!(
        lab.dp.conns6().is_empty(),
        "ICMP creates no connection entry"
    );
    // The flow itself is scheduled to the same real.
    assert_eq!(expect_tx(&lab, &ack(CLIENT, 42000, 5672)), via_icmp);
}

#[test]
fn icmp6_about_non_service_flows_or_of_other_types_passes() {
    let lab = lab_5672();
    let svc_reply = Frame6::tcp(VIP, 5672, CLIENT, 42000, flags::ACK);
    // Quoting a port that is no service, another protocol, another source than the VIP.
    for quoted in [
        Frame6::tcp(VIP, 22, CLIENT, 42000, flags::ACK),
        Frame6::udp(VIP, 5672, CLIENT, 42000),
        Frame6::tcp(OTHER_IP, 5672, CLIENT, 42000, flags::ACK),
    ] {
        expect_pass(&lab, &icmp6_too_big(ROUTER, VIP, 1280, &quoted).build());
    }
    // Sent to another address than the VIP it quotes.
    expect_pass(
        &lab,
        &icmp6_too_big(ROUTER, OTHER_IP, 1280, &svc_reply).build(),
    );
    // Time exceeded and parameter problem quoting a service flow are not ours.
    for ty in [icmp6::TIME_EXCEEDED, 4] {
        expect_pass(
            &lab,
            &icmp6_error(ROUTER, VIP, ty, 0, [0; 4], &svc_reply).build(),
        );
    }
    // An extension header inside the quote is not followed.
    let with_ext = svc_reply.clone().ext(ExtHdr::dest_opts());
    expect_pass(&lab, &icmp6_too_big(ROUTER, VIP, 1280, &with_ext).build());
    // A quote cut before the end of the ports (the quote is 40 + 20 bytes, the ports its
    // bytes 40 to 43).
    let full = icmp6_too_big(ROUTER, VIP, 1280, &svc_reply).build();
    for cut in [17, 19, 20, 40] {
        expect_pass(&lab, &full[..full.len() - cut]);
    }
    let g = lab.dp.global_stats().unwrap();
    assert_eq!((g.icmp_forwarded, g.transmitted), (0, 0));
    // With the ports complete, it is the flow's.
    expect_tx(&lab, &full[..full.len() - 16]);
}

// --- Persistence granularity --------------------------------------------------------------------

#[test]
fn persistence_granularity_64_groups_a_network_and_128_each_client() {
    for (prefix, templates_per_net) in [(64u8, 1usize), (128, 12)] {
        let mut lab = Lab::new();
        lab.apply(&desired(vec![(
            tcp6(VIP, 80),
            persistent6(spec6(80, M, &[(R1, 1), (R2, 1), (R3, 1)]), 300, prefix),
        )]));
        let mut per_net = Vec::new();
        for net in 0..20u16 {
            let first = expect_tx(&lab, &syn(net_host(net, 1), 30000, 80));
            let mut reals = HashSet::from([first]);
            for host in 2..=12 {
                let mac = expect_tx(&lab, &syn(net_host(net, host), 30000, 80));
                if prefix == 64 {
                    assert_eq!(mac, first, "/64: host {host} of network {net}");
                }
                reals.insert(mac);
            }
            per_net.push(reals.len());
        }
        assert_eq!(lab.dp.persist6().len(), 20 * templates_per_net, "/{prefix}");
        if prefix == 128 {
            assert!(
                per_net.iter().any(|&n| n > 1),
                "/128: clients of one network spread over the reals"
            );
        }
        // The template key holds the masked client address.
        let masked: HashSet<[u8; 16]> = lab
            .dp
            .persist6()
            .iter()
            .map(|t| lb_common::addr6_bytes(&t.key.client))
            .collect();
        if prefix == 64 {
            assert!(masked.contains(&Ipv6Addr::new(0x2001, 0xdb8, 0x100, 3, 0, 0, 0, 0).octets()));
        } else {
            assert!(masked.contains(&net_host(3, 7).octets()));
        }
    }
}

#[test]
fn persistence_granularity_48_ignores_the_subnet() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        tcp6(VIP, 80),
        persistent6(spec6(80, M, &[(R1, 1), (R2, 1), (R3, 1)]), 300, 48),
    )]));
    let first = expect_tx(&lab, &syn(net_host(0, 1), 30000, 80));
    for net in 1..30 {
        assert_eq!(expect_tx(&lab, &syn(net_host(net, 9), 30000, 80)), first);
    }
    assert_eq!(lab.dp.persist6().len(), 1);
}

// --- Dual stack ----------------------------------------------------------------------------------

const VIP4: Ipv4Addr = V4::VIP;
const CLIENT4: Ipv4Addr = V4::CLIENT;
const R4_1: Ipv4Addr = V4::R1;
const R4_2: Ipv4Addr = V4::R2;

#[test]
fn ipv4_and_ipv6_services_on_one_port_keep_separate_tables() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![
        (tcp(VIP4, 80), spec(80, M, &[(R4_1, 1), (R4_2, 1)])),
        (tcp6(VIP, 80), spec6(80, M, &[(R1, 1), (R2, 1)])),
    ]));
    let v4 = [mac_of(R4_1), mac_of(R4_2)];
    let v6 = reals_macs(&[R1, R2]);
    for i in 0..100u16 {
        let f4 = Frame::tcp(CLIENT4, 20000 + i, VIP4, 80, flags::SYN).build();
        assert!(v4.contains(&expect_tx(&lab, &f4)));
        assert!(v6.contains(&expect_tx(&lab, &syn(CLIENT, 20000 + i, 80))));
    }
    assert_eq!(lab.dp.conns4().len(), 100);
    assert_eq!(lab.dp.conns6().len(), 100);
    assert!(
        lab.dp
            .conns6()
            .iter()
            .all(|e| e.key.dst == lb_common::addr6(VIP.octets()))
    );
    // The IPv4 VIP written as IPv6 and an IPv6 frame under IPv4's ethertype are nobody's.
    let mapped = Frame6::tcp(CLIENT, 1, VIP4.to_ipv6_mapped(), 80, flags::SYN);
    expect_pass(&lab, &mapped.build());
    let s4 = lab
        .dp
        .service_stats(lab.service_id(&tcp(VIP4, 80)))
        .unwrap();
    let s6 = lab
        .dp
        .service_stats(lab.service_id(&tcp6(VIP, 80)))
        .unwrap();
    assert_eq!((s4.conns, s6.conns), (100, 100));
    assert_eq!(s6.bytes, 100 * 60);
    assert_eq!(s4.bytes, 100 * 40);
}

#[test]
fn adding_and_removing_one_family_leaves_the_other_alone() {
    let mut lab = Lab::new();
    let v4 = (tcp(VIP4, 80), spec(80, M, &[(R4_1, 1)]));
    let v6 = (tcp6(VIP, 80), spec6(80, M, &[(R1, 1)]));
    let f4 = |p| Frame::tcp(CLIENT4, p, VIP4, 80, flags::SYN).build();
    lab.apply(&desired(vec![v4.clone()]));
    assert_eq!(expect_tx(&lab, &f4(1)), mac_of(R4_1));
    expect_pass(&lab, &syn(CLIENT, 1, 80));
    // One flip of the VIP tables publishes the IPv6 service and keeps the IPv4 one.
    lab.apply(&desired(vec![v4.clone(), v6.clone()]));
    assert_eq!(expect_tx(&lab, &f4(2)), mac_of(R4_1));
    assert_eq!(expect_tx(&lab, &syn(CLIENT, 2, 80)), mac_of6(R1));
    lab.apply(&desired(vec![v6.clone()]));
    expect_pass(&lab, &f4(3));
    assert_eq!(expect_tx(&lab, &syn(CLIENT, 3, 80)), mac_of6(R1));
    lab.apply(&desired(vec![v4, v6]));
    assert_eq!(expect_tx(&lab, &f4(4)), mac_of(R4_1));
    assert_eq!(expect_tx(&lab, &syn(CLIENT, 4, 80)), mac_of6(R1));
    lab.apply(&desired(vec![]));
    expect_pass(&lab, &f4(5));
    expect_pass(&lab, &syn(CLIENT, 5, 80));
}

#[test]
fn many_ipv6_vips_are_all_found() {
    // Enough VIPs that some share a home bucket and are found by probing, numbered as people
    // number them: subnet N, host N.
    let mut lab = Lab::with_limits(lb_userspace::model::Limits {
        max_services: 64,
        max_table_size: 251,
        ..lb_tests::lab::test_limits()
    });
    let vip = |i: u16| Ipv6Addr::new(0x2001, 0xdb8, 0xa, i + 1, 0, 0, 0, i + 1);
    let services: Vec<_> = (0..48)
        .map(|i| (tcp6(vip(i), 443), spec6(443, 251, &[(R1, 1)])))
        .collect();
    lab.apply(&desired(services));
    for i in 0..48 {
        let f = Frame6::tcp(CLIENT, 1000, vip(i), 443, flags::SYN).build();
        assert_eq!(expect_tx(&lab, &f), mac_of6(R1), "VIP {}", vip(i));
        let f = Frame6::tcp(CLIENT, 1000, vip(i), 444, flags::SYN).build();
        expect_pass(&lab, &f);
    }
    expect_pass(
        &lab,
        &Frame6::tcp(CLIENT, 1000, vip(48), 443, flags::SYN).build(),
    );
}

// --- Least connection --------------------------------------------------------------------------

fn wlc_lab(reals: &[(Ipv6Addr, u32)]) -> Lab {
    let mut s = spec6(5672, 251, reals);
    s.scheduler = Scheduler::WeightedLeastConn;
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(tcp6(VIP, 5672), s)]));
    lab
}

fn set_load(lab: &mut Lab, r: Ipv6Addr, active: i64, inactive: i64) {
    let i = lab.real_index(&tcp6(VIP, 5672), &rk6(r, 5672));
    lab.set_load(i, active, inactive);
}

fn load_of(lab: &Lab, r: Ipv6Addr) -> (i64, i64) {
    lab.load_of(lab.real_index(&tcp6(VIP, 5672), &rk6(r, 5672)))
}

#[test]
fn wlc_sends_a_new_ipv6_connection_to_the_least_loaded_real() {
    let mut lab = wlc_lab(&[(R1, 1), (R2, 1), (R3, 2)]);
    set_load(&mut lab, R1, 5, 0);
    set_load(&mut lab, R2, 2, 0);
    set_load(&mut lab, R3, 6, 0); // 6 x 256 / 2 = 768 > 512
    assert_eq!(expect_tx(&lab, &syn(client(1), 40000, 5672)), mac_of6(R2));
    assert_eq!(load_of(&lab, R2), (2, 1), "SYN_RECV is inactive");
    set_load(&mut lab, R2, 4, 0);
    assert_eq!(expect_tx(&lab, &syn(client(2), 40000, 5672)), mac_of6(R3));
}

#[test]
fn wlc_counts_follow_ipv6_connections() {
    let lab = wlc_lab(&[(R1, 1)]);
    let a = client(1);
    let tcp = |f| Frame6::tcp(a, 1000, VIP, 5672, f).build();
    expect_tx(&lab, &tcp(flags::SYN));
    assert_eq!(load_of(&lab, R1), (0, 1));
    expect_tx(&lab, &tcp(flags::ACK));
    assert_eq!(load_of(&lab, R1), (1, 0), "ESTABLISHED is active");
    expect_tx(&lab, &tcp(flags::FIN | flags::ACK));
    assert_eq!(load_of(&lab, R1), (0, 1), "FIN_WAIT is inactive");
    // Fragments and ICMP errors move no count.
    let frag = Frame6::new(a, VIP, L4::Raw { proto: nh::TCP })
        .fragment(false, 2, 1)
        .payload(&[0; 8]);
    expect_tx(&lab, &frag.build());
    let quoted = Frame6::tcp(VIP, 5672, a, 1000, flags::ACK);
    expect_tx(&lab, &icmp6_too_big(ROUTER, VIP, 1280, &quoted).build());
    assert_eq!(load_of(&lab, R1), (0, 1));
}

#[test]
fn wlc_ties_spread_evenly_over_equal_ipv6_reals() {
    let lab = wlc_lab(&[(R1, 1), (R2, 1), (R3, 1)]);
    let mut seen: HashMap<[u8; 6], u32> = HashMap::new();
    for c in 0..300 {
        *seen
            .entry(expect_tx(&lab, &syn(client(c), 40000, 5672)))
            .or_default() += 1;
    }
    for r in [R1, R2, R3] {
        assert_eq!(seen.get(&mac_of6(r)), Some(&100), "{r}: {seen:?}");
    }
}
