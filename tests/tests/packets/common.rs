//! The packet-level tests both families share, written once over [`Family`] and run for each
//! (`common::v4::NAME`, `common::v6::NAME`): forwarding, parsing limits, fragments, the
//! connection table and TCP state, drain and down reals, scheduling and persistence, counters.
//! What only one family has (IPv4 options and header length, IPv6 extension headers, ICMP of
//! each kind, neighbour discovery, dual stack) is in [`super::ipv4`] and [`super::ipv6`].

use std::collections::{HashMap, HashSet};

use lb_common::{ConnState, proto};
use lb_tests::{
    family::{Family, Packet},
    lab::{Lab, START_CLOCK, XDP_TX, desired, expect_drop, expect_pass, expect_tx, forwarded},
    packet::{DIRECTOR_MAC, dst_mac, flags, nh},
};
use lb_userspace::model::{Health, Scheduler, ServiceKey};

/// Runs each named generic test as `v4::NAME` and `v6::NAME`.
macro_rules! for_both_families {
    ($($name:ident),* $(,)?) => {
        /// The shared tests over IPv4.
        mod v4 {
            $(
                #[test]
                fn $name() {
                    super::$name::<lb_tests::family::V4>()
                }
            )*
        }

        /// The shared tests over IPv6.
        mod v6 {
            $(
                #[test]
                fn $name() {
                    super::$name::<lb_tests::family::V6>()
                }
            )*
        }
    };
}

for_both_families!(
    tcp_syn_to_service_goes_to_one_of_its_reals,
    tcp_frames_with_payload_keep_every_byte,
    udp_to_service_is_forwarded,
    each_service_uses_only_its_own_reals,
    non_vip_traffic_passes,
    wrong_port_passes,
    wrong_protocol_passes,
    vlan_tagged_frame_is_forwarded_with_its_tag,
    vlan_tagged_non_vip_passes,
    double_tagged_frame_passes,
    every_truncation_of_a_syn_passes_untouched,
    fragments_of_a_vip_without_service_for_protocol_pass,
    fragments_follow_the_lowest_port_service_of_the_vip,
    tcp_states_follow_ipvs_input_only_table,
    mid_flow_packet_without_entry_is_picked_up_as_established,
    conn_entry_records_real_and_time,
    existing_flows_keep_their_real_when_the_table_changes,
    expired_entry_is_a_miss,
    new_syn_is_scheduled_afresh,
    drained_real_keeps_its_flows_but_gets_no_new_ones,
    down_real_loses_its_flows_at_once,
    no_usable_real_drops_and_counts,
    real_whose_index_moved_to_another_service_is_not_used,
    weights_are_honoured_for_new_flows,
    source_hash_keeps_a_client_on_one_real_without_templates,
    persistence_keeps_a_client_on_its_real_across_table_changes,
    expired_template_is_not_followed,
    template_to_a_down_real_is_not_followed,
    counters_per_service_per_real_and_global,
    source_mac_is_the_directors_whatever_arrived,
    port_zero_is_never_a_service,
);

const M: u32 = 65_537;

/// Set-ups and frames of these tests, for every family.
trait Suite: Family {
    /// One TCP service on 5672 with three reals of weight 1.
    fn lab_5672() -> Lab {
        let mut lab = Lab::new();
        lab.apply(&desired(vec![(
            Self::tcp_service(Self::VIP, 5672),
            Self::spec(5672, M, &[(Self::R1, 1), (Self::R2, 1), (Self::R3, 1)]),
        )]));
        lab
    }

    /// A SYN from `src:sport` to the VIP.
    fn syn(src: Self::Addr, sport: u16, dport: u16) -> Vec<u8> {
        Self::tcp(src, sport, Self::VIP, dport, flags::SYN).build()
    }

    /// An ACK from `src:sport` to the VIP.
    fn ack(src: Self::Addr, sport: u16, dport: u16) -> Vec<u8> {
        Self::tcp(src, sport, Self::VIP, dport, flags::ACK).build()
    }

    /// The connection-table key of `src:sport -> VIP:dport`.
    fn vip_flow(src: Self::Addr, sport: u16, dport: u16, p: u8) -> Self::Flow {
        Self::flow(src, sport, Self::VIP, dport, p)
    }

    /// The MACs of `reals`.
    fn reals_macs(reals: &[Self::Addr]) -> Vec<[u8; 6]> {
        reals.iter().map(|r| Self::mac_of(*r)).collect()
    }

    /// Applies the last desired state with `real` of `svc` set to `health`.
    fn set_health(lab: &mut Lab, svc: &ServiceKey, real: Self::Addr, health: Health) {
        let mut d = lab.desired.clone();
        d.services
            .get_mut(svc)
            .unwrap()
            .reals
            .get_mut(&Self::real_key(real, svc.port))
            .unwrap()
            .health = health;
        lab.apply(&d);
    }
}

impl<F: Family> Suite for F {}

// --- Forwarding --------------------------------------------------------------------------------

fn tcp_syn_to_service_goes_to_one_of_its_reals<F: Family>() {
    let lab = F::lab_5672();
    let mac = expect_tx(&lab, &F::syn(F::CLIENT, 40000, 5672));
    assert!(F::reals_macs(&[F::R1, F::R2, F::R3]).contains(&mac));
    let c = F::conn(&lab.dp, &F::vip_flow(F::CLIENT, 40000, 5672, proto::TCP)).unwrap();
    let real = lab.dp.real(c.conn.real).unwrap();
    assert_eq!(real.mac, mac);
    assert_eq!(real.family, F::FAMILY);
}

fn tcp_frames_with_payload_keep_every_byte<F: Family>() {
    let lab = F::lab_5672();
    let frame = F::tcp(F::CLIENT, 40001, F::VIP, 5672, flags::ACK | flags::PSH)
        .payload(b"AMQP\x00\x00\x09\x01 payload bytes")
        .build();
    expect_tx(&lab, &frame);
}

fn udp_to_service_is_forwarded<F: Family>() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        F::udp_service(F::VIP, 53),
        F::spec(53, M, &[(F::R1, 1), (F::R2, 1)]),
    )]));
    let frame = F::udp(F::CLIENT, 5353, F::VIP, 53)
        .payload(b"query")
        .build();
    let mac = expect_tx(&lab, &frame);
    assert!(F::reals_macs(&[F::R1, F::R2]).contains(&mac));
    let c = F::conn(&lab.dp, &F::vip_flow(F::CLIENT, 5353, 53, proto::UDP)).unwrap();
    assert_eq!(c.conn.state, ConnState::Udp as u8);
    assert_eq!(
        expect_tx(&lab, &frame),
        mac,
        "the next datagram follows the entry"
    );
}

fn each_service_uses_only_its_own_reals<F: Family>() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![
        (
            F::tcp_service(F::VIP, 5672),
            F::spec(5672, M, &[(F::R1, 1), (F::R2, 1)]),
        ),
        (
            F::tcp_service(F::VIP, 15672),
            F::spec(15672, M, &[(F::R3, 1)]),
        ),
        (
            F::udp_service(F::VIP, 5672),
            F::spec(5672, M, &[(F::R4, 1)]),
        ),
    ]));
    for i in 0..200 {
        let a = expect_tx(&lab, &F::syn(F::client(i), 30000, 5672));
        assert!(F::reals_macs(&[F::R1, F::R2]).contains(&a));
        assert_eq!(
            expect_tx(&lab, &F::syn(F::client(i), 30000, 15672)),
            F::mac_of(F::R3)
        );
        let u = F::udp(F::client(i), 30000, F::VIP, 5672).build();
        assert_eq!(expect_tx(&lab, &u), F::mac_of(F::R4));
    }
}

fn non_vip_traffic_passes<F: Family>() {
    let lab = F::lab_5672();
    expect_pass(
        &lab,
        &F::tcp(F::CLIENT, 40000, F::OTHER_IP, 5672, flags::SYN).build(),
    );
    // Addresses that differ from the VIP in one word only.
    for near in F::near_vips() {
        expect_pass(
            &lab,
            &F::tcp(F::CLIENT, 40000, near, 5672, flags::SYN).build(),
        );
    }
    // The VIP as the source is not the VIP as the destination.
    expect_pass(
        &lab,
        &F::tcp(F::VIP, 5672, F::CLIENT, 40000, flags::SYN | flags::ACK).build(),
    );
}

fn wrong_port_passes<F: Family>() {
    let lab = F::lab_5672();
    expect_pass(&lab, &F::syn(F::CLIENT, 40000, 5673));
    expect_pass(&lab, &F::syn(F::CLIENT, 40000, 22));
}

fn wrong_protocol_passes<F: Family>() {
    let lab = F::lab_5672();
    expect_pass(&lab, &F::udp(F::CLIENT, 40000, F::VIP, 5672).build());
    let gre = F::raw(F::CLIENT, F::VIP, 47).payload(&[0; 24]);
    expect_pass(&lab, &gre.build());
    // IPv6's "no next header" (in IPv4 one more protocol that is no service's).
    let no_next = F::raw(F::CLIENT, F::VIP, nh::NO_NEXT);
    expect_pass(&lab, &no_next.build());
    // The other family's ICMP number means nothing here.
    let foreign_icmp =
        F::raw(F::CLIENT, F::VIP, F::FOREIGN_ICMP).payload(&[3, 4, 0, 0, 0, 0, 0, 0]);
    expect_pass(&lab, &foreign_icmp.build());
    assert_eq!(lab.dp.global_stats().unwrap().ext_hdr_passed, 0);
}

fn vlan_tagged_frame_is_forwarded_with_its_tag<F: Family>() {
    let lab = F::lab_5672();
    let frame = F::tcp(F::CLIENT, 40000, F::VIP, 5672, flags::SYN)
        .vlan(0x2064)
        .build();
    let out = lab.run(&frame);
    assert_eq!(out.action, XDP_TX);
    let [t0, t1] = F::ETHER_TYPE.to_be_bytes();
    assert_eq!(
        &out.frame[12..18],
        &[0x81, 0x00, 0x20, 0x64, t0, t1],
        "tag kept"
    );
    assert_eq!(out.frame, forwarded(&frame, dst_mac(&out.frame)));
}

fn vlan_tagged_non_vip_passes<F: Family>() {
    let lab = F::lab_5672();
    expect_pass(
        &lab,
        &F::tcp(F::CLIENT, 40000, F::OTHER_IP, 5672, flags::SYN)
            .vlan(7)
            .build(),
    );
}

fn double_tagged_frame_passes<F: Family>() {
    let lab = F::lab_5672();
    // Only one 802.1Q tag is understood; a second tag makes the frame someone else's.
    let inner = F::tcp(F::CLIENT, 40000, F::VIP, 5672, flags::SYN)
        .vlan(7)
        .build();
    let mut qinq = inner[..12].to_vec();
    qinq.extend([0x81, 0x00, 0x00, 0x05]);
    qinq.extend(&inner[12..]);
    expect_pass(&lab, &qinq);
}

fn every_truncation_of_a_syn_passes_untouched<F: Family>() {
    let lab = F::lab_5672();
    let frame = F::with_options(F::tcp(F::CLIENT, 40000, F::VIP, 5672, flags::SYN).vlan(3)).build();
    assert_eq!(
        lab.run(&frame).action,
        XDP_TX,
        "the whole frame is forwarded"
    );
    // Cut anywhere before the end of the TCP header, the frame cannot be scheduled; the
    // kernel keeps it (and drops it in its own checks).
    let options_start = 18 + F::IP_HEADER_LEN;
    let tcp_start = options_start + F::OPTIONS_LEN;
    let tcp_end = tcp_start + 20;
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
    let g = lab.dp.global_stats().unwrap();
    assert_eq!(g.transmitted, 1);
    // Cut inside the IPv6 extension headers (an extension header cut short) is what the counter
    // counts; a cut IP or TCP header, or cut IPv4 options, is not an extension-header matter.
    let counted = if F::OPTIONS_ARE_EXT_HDRS {
        tcp_start - options_start
    } else {
        0
    };
    assert_eq!(g.ext_hdr_passed, counted as u64);
}

// --- Fragments ---------------------------------------------------------------------------------

fn fragments_of_a_vip_without_service_for_protocol_pass<F: Family>() {
    let lab = F::lab_5672();
    let frag = F::raw(F::CLIENT, F::VIP, proto::UDP)
        .fragment(false, 3, 1)
        .payload(&[0; 16]);
    expect_pass(&lab, &frag.build());
    let frag = F::raw(F::CLIENT, F::OTHER_IP, proto::TCP)
        .fragment(true, 0, 2)
        .payload(&[0; 16]);
    expect_pass(&lab, &frag.build());
    assert_eq!(lab.dp.global_stats().unwrap().fragments, 0);
}

fn fragments_follow_the_lowest_port_service_of_the_vip<F: Family>() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![
        (
            F::tcp_service(F::VIP, 15672),
            F::spec(15672, M, &[(F::R2, 1)]),
        ),
        (
            F::tcp_service(F::VIP, 5672),
            F::spec(5672, M, &[(F::R1, 1)]),
        ),
        (F::udp_service(F::VIP, 53), F::spec(53, M, &[(F::R3, 1)])),
    ]));
    let frag = F::raw(F::CLIENT, F::VIP, proto::TCP)
        .fragment(false, 100, 5)
        .payload(&[0; 16]);
    assert_eq!(expect_tx(&lab, &frag.build()), F::mac_of(F::R1));
    let frag = F::raw(F::CLIENT, F::VIP, proto::UDP)
        .fragment(true, 1, 6)
        .payload(&[0; 16]);
    assert_eq!(expect_tx(&lab, &frag.build()), F::mac_of(F::R3));
}

// --- Connection table and TCP state ----------------------------------------------------------------

fn tcp_states_follow_ipvs_input_only_table<F: Family>() {
    let lab = F::lab_5672();
    let f = F::vip_flow(F::CLIENT, 40000, 5672, proto::TCP);
    let state = |lab: &Lab| ConnState::from_u8(F::conn(&lab.dp, &f).unwrap().conn.state);
    let real = expect_tx(&lab, &F::syn(F::CLIENT, 40000, 5672));
    assert_eq!(state(&lab), ConnState::SynRecv);
    assert_eq!(expect_tx(&lab, &F::ack(F::CLIENT, 40000, 5672)), real);
    assert_eq!(state(&lab), ConnState::Established);
    let fin = F::tcp(F::CLIENT, 40000, F::VIP, 5672, flags::FIN | flags::ACK).build();
    assert_eq!(expect_tx(&lab, &fin), real);
    assert_eq!(state(&lab), ConnState::FinWait);
    let rst = F::tcp(F::CLIENT, 40000, F::VIP, 5672, flags::RST).build();
    assert_eq!(expect_tx(&lab, &rst), real);
    assert_eq!(state(&lab), ConnState::Close);
}

fn mid_flow_packet_without_entry_is_picked_up_as_established<F: Family>() {
    let lab = F::lab_5672();
    let real = expect_tx(&lab, &F::ack(F::CLIENT, 40000, 5672));
    let c = F::conn(&lab.dp, &F::vip_flow(F::CLIENT, 40000, 5672, proto::TCP))
        .unwrap()
        .conn;
    assert_eq!(c.state, ConnState::Established as u8);
    assert_eq!(lab.dp.real(c.real).unwrap().mac, real);
    let g = lab.dp.global_stats().unwrap();
    assert_eq!((g.conn_misses, g.conn_hits), (1, 0));
    expect_tx(&lab, &F::ack(F::CLIENT, 40000, 5672));
    assert_eq!(lab.dp.global_stats().unwrap().conn_hits, 1);
}

fn conn_entry_records_real_and_time<F: Family>() {
    let mut lab = F::lab_5672();
    let mac = expect_tx(&lab, &F::syn(F::CLIENT, 40000, 5672));
    let key = F::vip_flow(F::CLIENT, 40000, 5672, proto::TCP);
    let e = F::conn(&lab.dp, &key).unwrap();
    assert_eq!(lab.dp.real(e.conn.real).unwrap().mac, mac);
    assert_eq!(e.stamp, START_CLOCK);
    assert_eq!(e.key, key);
    lab.advance_clock(30);
    expect_tx(&lab, &F::ack(F::CLIENT, 40000, 5672));
    let e = F::conn(&lab.dp, &key).unwrap();
    assert_eq!(e.stamp, START_CLOCK + 30);
    assert_eq!(F::conns(&lab.dp), 1);
    assert_eq!(
        <F::Other as Family>::conns(&lab.dp),
        0,
        "nothing in the other family's table"
    );
}

fn existing_flows_keep_their_real_when_the_table_changes<F: Family>() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        F::tcp_service(F::VIP, 5672),
        F::spec(5672, M, &[(F::R1, 1), (F::R2, 1)]),
    )]));
    let before: Vec<[u8; 6]> = (0..300)
        .map(|i| expect_tx(&lab, &F::syn(F::client(i), 50000, 5672)))
        .collect();
    // Table switch: two more reals; half of the flows' slots now belong to them.
    lab.apply(&desired(vec![(
        F::tcp_service(F::VIP, 5672),
        F::spec(5672, M, &[(F::R1, 1), (F::R2, 1), (F::R3, 1), (F::R4, 1)]),
    )]));
    for (i, mac) in before.iter().enumerate() {
        assert_eq!(
            expect_tx(&lab, &F::ack(F::client(i as u32), 50000, 5672)),
            *mac
        );
    }
    // New flows do use the new reals.
    let new: HashSet<_> = (1000..1300)
        .map(|i| expect_tx(&lab, &F::syn(F::client(i), 50000, 5672)))
        .collect();
    assert!(new.contains(&F::mac_of(F::R3)) && new.contains(&F::mac_of(F::R4)));
}

fn expired_entry_is_a_miss<F: Family>() {
    let mut lab = Lab::new();
    let s = |w1, w2| {
        desired(vec![(
            F::tcp_service(F::VIP, 5672),
            F::spec(5672, M, &[(F::R1, w1), (F::R2, w2)]),
        )])
    };
    lab.apply(&desired(vec![(
        F::tcp_service(F::VIP, 5672),
        F::spec(5672, M, &[(F::R1, 1)]),
    )]));
    expect_tx(&lab, &F::syn(F::CLIENT, 40000, 5672));
    expect_tx(&lab, &F::ack(F::CLIENT, 40000, 5672));
    // The table now sends the flow to R2; the entry keeps it on R1 while it lives.
    lab.apply(&s(0, 1));
    lab.advance_clock(900);
    assert_eq!(
        expect_tx(&lab, &F::ack(F::CLIENT, 40000, 5672)),
        F::mac_of(F::R1),
        "900 s idle: live"
    );
    lab.advance_clock(901);
    assert_eq!(
        expect_tx(&lab, &F::ack(F::CLIENT, 40000, 5672)),
        F::mac_of(F::R2),
        "901 s idle: expired"
    );
    // CLOSE lives 10 s.
    let rst = F::tcp(F::CLIENT, 40000, F::VIP, 5672, flags::RST).build();
    assert_eq!(expect_tx(&lab, &rst), F::mac_of(F::R2));
    lab.apply(&s(1, 0));
    lab.advance_clock(10);
    assert_eq!(
        expect_tx(&lab, &F::ack(F::CLIENT, 40000, 5672)),
        F::mac_of(F::R2)
    );
    lab.advance_clock(11);
    assert_eq!(
        expect_tx(&lab, &F::ack(F::CLIENT, 40000, 5672)),
        F::mac_of(F::R1)
    );
}

fn new_syn_is_scheduled_afresh<F: Family>() {
    let mut lab = Lab::new();
    let s = |w1, w2| {
        desired(vec![(
            F::tcp_service(F::VIP, 5672),
            F::spec(5672, M, &[(F::R1, w1), (F::R2, w2)]),
        )])
    };
    lab.apply(&s(1, 0));
    let f = F::vip_flow(F::CLIENT, 40000, 5672, proto::TCP);
    expect_tx(&lab, &F::syn(F::CLIENT, 40000, 5672));
    expect_tx(&lab, &F::ack(F::CLIENT, 40000, 5672));
    // The client reuses the port after the table changed: the SYN does not follow the old
    // entry; the ACK after it follows the new one.
    lab.apply(&s(0, 1));
    assert_eq!(
        expect_tx(&lab, &F::syn(F::CLIENT, 40000, 5672)),
        F::mac_of(F::R2)
    );
    assert_eq!(
        F::conn(&lab.dp, &f).unwrap().conn.state,
        ConnState::SynRecv as u8
    );
    assert_eq!(
        expect_tx(&lab, &F::ack(F::CLIENT, 40000, 5672)),
        F::mac_of(F::R2)
    );
}

// --- Drain, down, empty --------------------------------------------------------------------------

fn drained_real_keeps_its_flows_but_gets_no_new_ones<F: Family>() {
    let mut lab = F::lab_5672();
    let flows: Vec<(u32, [u8; 6])> = (0..300)
        .map(|i| (i, expect_tx(&lab, &F::syn(F::client(i), 45000, 5672))))
        .collect();
    assert!(flows.iter().any(|(_, m)| *m == F::mac_of(F::R2)));
    lab.apply(&desired(vec![(
        F::tcp_service(F::VIP, 5672),
        F::spec(5672, M, &[(F::R1, 1), (F::R2, 0), (F::R3, 1)]),
    )]));
    for (i, mac) in &flows {
        assert_eq!(expect_tx(&lab, &F::ack(F::client(*i), 45000, 5672)), *mac);
    }
    for i in 1000..1500 {
        assert_ne!(
            expect_tx(&lab, &F::syn(F::client(i), 45000, 5672)),
            F::mac_of(F::R2)
        );
    }
}

fn down_real_loses_its_flows_at_once<F: Family>() {
    let mut lab = F::lab_5672();
    let flows: Vec<(u32, [u8; 6])> = (0..300)
        .map(|i| (i, expect_tx(&lab, &F::syn(F::client(i), 46000, 5672))))
        .collect();
    let r2 = F::mac_of(F::R2);
    let on_r2 = flows.iter().filter(|(_, m)| *m == r2).count();
    assert!(on_r2 > 50);
    F::set_health(&mut lab, &F::tcp_service(F::VIP, 5672), F::R2, Health::Down);
    for (i, mac) in &flows {
        let now = expect_tx(&lab, &F::ack(F::client(*i), 46000, 5672));
        if *mac == r2 {
            assert_ne!(now, r2, "flow {i} still sent to the down real");
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
        if *mac == r2 {
            let again = expect_tx(&lab, &F::ack(F::client(*i), 46000, 5672));
            assert_ne!(again, r2);
        }
    }
}

fn no_usable_real_drops_and_counts<F: Family>() {
    let mut lab = Lab::new();
    let svc = F::tcp_service(F::VIP, 5672);
    lab.apply(&desired(vec![(
        svc,
        F::spec(5672, M, &[(F::R1, 0), (F::R2, 0)]),
    )]));
    expect_drop(&lab, &F::syn(F::CLIENT, 40000, 5672));
    lab.apply(&desired(vec![(svc, F::spec(5672, M, &[(F::R1, 1)]))]));
    F::set_health(&mut lab, &svc, F::R1, Health::Down);
    expect_drop(&lab, &F::ack(F::CLIENT, 40001, 5672));
    lab.apply(&desired(vec![(svc, F::spec(5672, M, &[]))]));
    expect_drop(&lab, &F::syn(F::CLIENT, 40002, 5672));
    let frag = F::raw(F::CLIENT, F::VIP, proto::TCP)
        .fragment(false, 8, 3)
        .payload(&[0; 8]);
    expect_drop(&lab, &frag.build());
    let g = lab.dp.global_stats().unwrap();
    assert_eq!(g.drop_no_real, 4);
    assert_eq!(g.transmitted, 0);
}

fn real_whose_index_moved_to_another_service_is_not_used<F: Family>() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![
        (F::tcp_service(F::VIP, 80), F::spec(80, M, &[(F::R1, 1)])),
        (F::tcp_service(F::VIP, 443), F::spec(443, M, &[(F::R2, 1)])),
    ]));
    let f = F::vip_flow(F::CLIENT, 40000, 80, proto::TCP);
    expect_tx(&lab, &F::syn(F::CLIENT, 40000, 80));
    // Forge the entry to point at the 443 service's real: it must not be used for port 80.
    let mut c = F::conn(&lab.dp, &f).unwrap().conn;
    c.real = lab.real_index(&F::tcp_service(F::VIP, 443), &F::real_key(F::R2, 443));
    assert!(F::insert_conn(&mut lab.dp, &f, &c));
    assert_eq!(
        expect_tx(&lab, &F::ack(F::CLIENT, 40000, 80)),
        F::mac_of(F::R1)
    );
    assert_eq!(lab.dp.global_stats().unwrap().conn_rescheduled, 1);
}

// --- Scheduling: weights, sh, persistence -----------------------------------------------------------

fn weights_are_honoured_for_new_flows<F: Family>() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![(
        F::tcp_service(F::VIP, 80),
        F::spec(80, M, &[(F::R1, 100), (F::R2, 100), (F::R3, 50)]),
    )]));
    let mut counts = HashMap::new();
    let n = 5000;
    for i in 0..n {
        *counts
            .entry(expect_tx(
                &lab,
                &F::syn(F::client(i), 1024 + (i % 50000) as u16, 80),
            ))
            .or_insert(0u32) += 1;
    }
    let share = |r| f64::from(counts[&F::mac_of(r)]) / f64::from(n);
    for (r, want) in [(F::R1, 0.4), (F::R2, 0.4), (F::R3, 0.2)] {
        assert!(
            (share(r) - want).abs() < 0.03,
            "{r}: {} vs {want}",
            share(r)
        );
    }
}

fn source_hash_keeps_a_client_on_one_real_without_templates<F: Family>() {
    let mut lab = Lab::new();
    let mut s = F::spec(80, M, &[(F::R1, 1), (F::R2, 1), (F::R3, 1)]);
    s.scheduler = Scheduler::SourceHash;
    lab.apply(&desired(vec![(F::tcp_service(F::VIP, 80), s)]));
    let mut seen = HashSet::new();
    for c in 0..50 {
        let first = expect_tx(&lab, &F::syn(F::client(c), 10000, 80));
        for port in 10001..10010 {
            assert_eq!(expect_tx(&lab, &F::syn(F::client(c), port, 80)), first);
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 3);
    assert_eq!(F::templates(&lab.dp), 0);
}

fn persistence_keeps_a_client_on_its_real_across_table_changes<F: Family>() {
    let mut lab = Lab::new();
    let s = |reals: &[(F::Addr, u32)]| F::persistent(F::spec(5672, M, reals), 50, F::ADDR_BITS);
    lab.apply(&desired(vec![(
        F::tcp_service(F::VIP, 5672),
        s(&[(F::R1, 1), (F::R2, 1)]),
    )]));
    let firsts: Vec<[u8; 6]> = (0..100)
        .map(|c| expect_tx(&lab, &F::syn(F::client(c), 20000, 5672)))
        .collect();
    assert_eq!(F::templates(&lab.dp), 100);
    // New reals join: new connections of known clients still go to their real.
    lab.apply(&desired(vec![(
        F::tcp_service(F::VIP, 5672),
        s(&[(F::R1, 1), (F::R2, 1), (F::R3, 1), (F::R4, 1)]),
    )]));
    for (c, mac) in firsts.iter().enumerate() {
        assert_eq!(
            expect_tx(&lab, &F::syn(F::client(c as u32), 20001, 5672)),
            *mac
        );
    }
    assert_eq!(lab.dp.global_stats().unwrap().persist_hits, 100);
    assert_eq!(
        <F::Other as Family>::templates(&lab.dp),
        0,
        "nothing in the other family's table"
    );
}

fn expired_template_is_not_followed<F: Family>() {
    let mut lab = Lab::new();
    let s = |reals: &[(F::Addr, u32)]| F::persistent(F::spec(80, M, reals), 50, F::ADDR_BITS);
    lab.apply(&desired(vec![(
        F::tcp_service(F::VIP, 80),
        s(&[(F::R1, 1)]),
    )]));
    expect_tx(&lab, &F::syn(F::CLIENT, 30000, 80));
    lab.apply(&desired(vec![(
        F::tcp_service(F::VIP, 80),
        s(&[(F::R1, 0), (F::R2, 1)]),
    )]));
    // Live template: still R1 (a drained real keeps pinning, as IPVS does by default).
    assert_eq!(
        expect_tx(&lab, &F::syn(F::CLIENT, 30001, 80)),
        F::mac_of(F::R1)
    );
    lab.advance_clock(50);
    assert_eq!(
        expect_tx(&lab, &F::syn(F::CLIENT, 30002, 80)),
        F::mac_of(F::R1),
        "50 s: live"
    );
    lab.advance_clock(51);
    assert_eq!(
        expect_tx(&lab, &F::syn(F::CLIENT, 30003, 80)),
        F::mac_of(F::R2)
    );
}

fn template_to_a_down_real_is_not_followed<F: Family>() {
    let mut lab = Lab::new();
    let svc = F::tcp_service(F::VIP, 80);
    let s = F::persistent(F::spec(80, M, &[(F::R1, 1), (F::R2, 1)]), 300, F::ADDR_BITS);
    lab.apply(&desired(vec![(svc, s)]));
    let first = expect_tx(&lab, &F::syn(F::CLIENT, 30000, 80));
    let down = if first == F::mac_of(F::R1) {
        F::R1
    } else {
        F::R2
    };
    F::set_health(&mut lab, &svc, down, Health::Down);
    let next = expect_tx(&lab, &F::syn(F::CLIENT, 30001, 80));
    assert_ne!(next, F::mac_of(down));
    // The template now points at the live real.
    assert_eq!(expect_tx(&lab, &F::syn(F::CLIENT, 30002, 80)), next);
}

// --- Counters ------------------------------------------------------------------------------------

fn counters_per_service_per_real_and_global<F: Family>() {
    let mut lab = Lab::new();
    lab.apply(&desired(vec![
        (F::tcp_service(F::VIP, 80), F::spec(80, M, &[(F::R1, 1)])),
        (F::tcp_service(F::VIP, 443), F::spec(443, M, &[(F::R2, 1)])),
    ]));
    let s = F::syn(F::CLIENT, 40000, 80);
    // Bytes are the IP packet's: optional IP headers (IPv4 options, IPv6 extension headers)
    // count, the link layer does not.
    let a = F::with_options(F::tcp(F::CLIENT, 40000, F::VIP, 80, flags::ACK).vlan(12))
        .payload(&[1; 100])
        .build();
    expect_tx(&lab, &s);
    expect_tx(&lab, &a);
    expect_tx(&lab, &a);
    expect_tx(&lab, &F::syn(F::CLIENT, 40001, 443));
    expect_pass(&lab, &F::syn(F::CLIENT, 40000, 8080));
    let ip = F::IP_HEADER_LEN as u64;
    let options = F::OPTIONS_LEN as u64;
    let s80 = lab
        .dp
        .service_stats(lab.service_id(&F::tcp_service(F::VIP, 80)))
        .unwrap();
    assert_eq!((s80.packets, s80.conns), (3, 1));
    assert_eq!(s80.bytes, (ip + 20) + 2 * (ip + options + 20 + 100));
    let r1 = lab
        .dp
        .real_stats(lab.real_index(&F::tcp_service(F::VIP, 80), &F::real_key(F::R1, 80)))
        .unwrap();
    assert_eq!(r1, s80);
    let s443 = lab
        .dp
        .service_stats(lab.service_id(&F::tcp_service(F::VIP, 443)))
        .unwrap();
    assert_eq!((s443.packets, s443.conns, s443.bytes), (1, 1, ip + 20));
    let g = lab.dp.global_stats().unwrap();
    assert_eq!((g.rx, g.transmitted, g.passed), (5, 4, 1));
    assert_eq!((g.conn_misses, g.conn_hits), (2, 2));
}

fn source_mac_is_the_directors_whatever_arrived<F: Family>() {
    let lab = F::lab_5672();
    // Broadcast, and IPv6's all-nodes multicast.
    for dst in [[0xff; 6], [0x33, 0x33, 0, 0, 0, 1]] {
        let frame = F::tcp(F::CLIENT, 40000, F::VIP, 5672, flags::SYN)
            .macs(dst, [0x02, 1, 2, 3, 4, 5])
            .build();
        let out = lab.run(&frame);
        assert_eq!(out.action, XDP_TX);
        assert_eq!(&out.frame[6..12], &DIRECTOR_MAC);
        assert_eq!(&out.frame[12..], &frame[12..]);
    }
}

fn port_zero_is_never_a_service<F: Family>() {
    // Port 0 keys hold the VIPs' fragment entries; an unfragmented packet to port 0 is not
    // for a service (found by the randomized test).
    let lab = F::lab_5672();
    expect_pass(&lab, &F::syn(F::CLIENT, 40000, 0));
    expect_pass(&lab, &F::udp(F::CLIENT, 40000, F::VIP, 0).build());
    let quoted = F::tcp(F::VIP, 0, F::CLIENT, 42000, flags::ACK);
    expect_pass(&lab, &F::too_big(F::ROUTER, F::VIP, &quoted).build());
}
