//! The data plane's decisions (entry liveness, the VIP probe, the schedule hash and persistence
//! key, the least-connection cost and choice) are written once, in `lb_common::decide`, and made
//! both by the XDP program, per packet, and by the control plane, for `lbadm --which` and the
//! least-connection candidates. These tests run the loaded program and the userspace code on
//! the same randomized services, loads, clients and clock, and assert that they agree on every
//! packet. Needs root. `LB_RANDOM_SEED=N` replays a run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lb_common::{Vip4Key, Vip6Key, proto};
use lb_tests::{
    lab::{Lab, XDP_DROP, XDP_PASS, XDP_TX, desired, mac_of_any, spec_any},
    packet::{Frame, Frame6, dst_mac, flags},
    rng::Rng,
};
use lb_userspace::{
    model::Limits,
    model::{
        DesiredState, Health, Persistence, Protocol, RealKey, Scheduler, ServiceKey, ServiceSpec,
    },
    observe::snapshot::which_installed,
    schedule::load::{self, Counts},
    schedule::viptable,
};

/// Configurations tried per run.
const ROUNDS: u32 = 12;
/// Packets per configuration.
const PACKETS: u32 = 500;

fn seed() -> u64 {
    std::env::var("LB_RANDOM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001)
}

const SCHEDULERS: [Scheduler; 6] = [
    Scheduler::Maglev,
    Scheduler::SourceHash,
    Scheduler::LeastConn,
    Scheduler::WeightedLeastConn,
    Scheduler::ShortestExpectedDelay,
    Scheduler::NeverQueue,
];

fn vip(i: u32, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            2,
            0,
            0,
            0,
            0,
            0x100 + i as u16,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 2, 0, 100 + i as u8))
    }
}

fn real_addr(service: u32, j: u32, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            3,
            service as u16,
            0,
            0,
            0,
            1 + j as u16,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 3, service as u8, 1 + j as u8))
    }
}

/// A random weight: drained, small, or anywhere up to ipvsadm's maximum.
fn weight(rng: &mut Rng) -> u32 {
    match rng.below(10) {
        0 => 0,
        1..=5 => 1 + rng.below(3) as u32,
        _ => 1 + rng.below(u64::from(lb_common::MAX_WEIGHT)) as u32,
    }
}

/// Service `i`: a random family, protocol, scheduler, persistence and set of reals.
fn service(rng: &mut Rng, i: u32) -> (ServiceKey, ServiceSpec) {
    let v6 = rng.chance(40);
    let key = ServiceKey {
        vip: vip(i % 3, v6),
        port: 1000 + i as u16,
        proto: if rng.chance(70) {
            Protocol::Tcp
        } else {
            Protocol::Udp
        },
    };
    let n = 1 + rng.below(12) as u32;
    let reals: Vec<(IpAddr, u32)> = (0..n).map(|j| (real_addr(i, j, v6), weight(rng))).collect();
    let mut s = spec_any(key.port, 251, &reals);
    s.scheduler = rng.pick(&SCHEDULERS);
    for r in s.reals.values_mut() {
        if rng.chance(10) {
            r.health = Health::Down;
        }
    }
    if rng.chance(35) {
        s.persistence = Some(Persistence {
            timeout: 10 + rng.below(600) as u32,
            granularity: rng.pick(&[
                Ipv4Addr::BROADCAST,
                Ipv4Addr::new(255, 255, 255, 0),
                Ipv4Addr::new(255, 255, 0, 0),
            ]),
            prefix6: rng.pick(&[128, 64, 48]),
        });
    }
    (key, s)
}

/// Maps for up to 16 services of small tables, and 1 to `most` random services (not applied).
fn random_lab(rng: &mut Rng, most: u64) -> (Lab, Vec<(ServiceKey, ServiceSpec)>) {
    let lab = Lab::with_limits(Limits {
        max_services: 16,
        max_reals: 256,
        max_table_size: 251,
        ..lb_tests::lab::test_limits()
    });
    let services = (0..1 + rng.below(most) as u32)
        .map(|i| service(rng, i))
        .collect();
    (lab, services)
}

/// A client of the VIP's family; few networks, so that persistence groups clients.
fn client(rng: &mut Rng, v6: bool) -> IpAddr {
    if v6 {
        let net = rng.below(3) as u16;
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xff,
            net,
            rng.below(2) as u16,
            0,
            0,
            1 + rng.below(5000) as u16,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(
            192,
            168,
            rng.below(3) as u8,
            1 + rng.below(250) as u8,
        ))
    }
}

/// A frame of `flow` to `svc`: a SYN opens a TCP flow, an ACK continues one; UDP is UDP.
fn frame(svc: &ServiceKey, from: SocketAddr, syn: bool) -> Vec<u8> {
    let tcp_flags = if syn { flags::SYN } else { flags::ACK };
    match (from.ip(), svc.vip, svc.proto) {
        (IpAddr::V4(c), IpAddr::V4(v), Protocol::Tcp) => {
            Frame::tcp(c, from.port(), v, svc.port, tcp_flags).build()
        }
        (IpAddr::V4(c), IpAddr::V4(v), Protocol::Udp) => {
            Frame::udp(c, from.port(), v, svc.port).build()
        }
        (IpAddr::V6(c), IpAddr::V6(v), Protocol::Tcp) => {
            Frame6::tcp(c, from.port(), v, svc.port, tcp_flags).build()
        }
        (IpAddr::V6(c), IpAddr::V6(v), Protocol::Udp) => {
            Frame6::udp(c, from.port(), v, svc.port).build()
        }
        _ => unreachable!("clients are of the VIP's family"),
    }
}

/// The real the program sent `frame` to, or `None` if it dropped it.
fn program_choice(lab: &Lab, svc: &ServiceKey, frame: &[u8]) -> Option<RealKey> {
    let out = lab.run(frame);
    match out.action {
        XDP_DROP => None,
        XDP_TX => {
            let mac = dst_mac(&out.frame);
            let reals = &lab.desired.services[svc].reals;
            let real = reals.keys().find(|r| mac_of_any(r.addr) == mac);
            Some(*real.unwrap_or_else(|| panic!("sent to an unknown MAC {mac:02x?}")))
        }
        other => panic!("{svc}: action {other}, expected XDP_TX or XDP_DROP"),
    }
}

/// Moves the counts of a random real of `svc` by random amounts, now and then far beyond
/// any real table (the shared cost clamps them the same way on both sides).
fn disturb_load(rng: &mut Rng, lab: &mut Lab, svc: &ServiceKey) {
    let inst = &lab.installed.services[svc];
    let Some(real) = inst
        .reals
        .values()
        .nth(rng.below(inst.reals.len() as u64) as usize)
    else {
        return;
    };
    let big = rng.chance(10);
    let amount = |rng: &mut Rng| {
        let span = if big { 1 << 34 } else { 6 };
        rng.below(span) as i64 - (span as i64) / 3
    };
    let delta = lb_common::RealLoad {
        active: amount(rng),
        inactive: amount(rng),
        ..Default::default()
    };
    lab.dp.adjust_real_load(real.index, delta).unwrap();
}

/// The agent's candidate refresh: the least loaded eligible reals of a least-connection
/// service, ranked by the shared cost.
fn refresh_candidates(lab: &mut Lab, svc: &ServiceKey) {
    let inst = &lab.installed.services[svc];
    let eligible: Vec<(u32, u32)> = inst
        .reals
        .values()
        .filter(|r| r.value.state == lb_common::REAL_UP)
        .map(|r| (r.index, r.value.weight))
        .collect();
    let dp = &lab.dp;
    let ranked = load::least_loaded(inst.params.sched, &eligible, |i| {
        Counts::from_load(&dp.real_load(i).unwrap())
    });
    let id = inst.id;
    lab.dp.set_candidates(id, &ranked).unwrap();
}

#[test]
fn which_and_the_program_send_every_flow_to_the_same_real() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let (mut compared, mut dropped, mut new_flows) = (0u32, 0u32, 0u32);
    for round in 0..ROUNDS {
        let (mut lab, services) = random_lab(&mut rng, 6);
        let keys: Vec<ServiceKey> = services.iter().map(|(k, _)| *k).collect();
        let mut state: DesiredState = desired(services);
        lab.apply(&state);
        let mut flows: Vec<(ServiceKey, SocketAddr)> = Vec::new();
        let mut next_port = 20_000u16;
        for packet in 0..PACKETS {
            let svc = rng.pick(&keys);
            let mine: Vec<SocketAddr> = flows.iter().filter(|f| f.0 == svc).map(|f| f.1).collect();
            let (flow, new) = if !mine.is_empty() && rng.chance(40) {
                (rng.pick(&mine), false)
            } else {
                next_port += 1;
                let from = SocketAddr::new(client(&mut rng, svc.vip.is_ipv6()), next_port);
                flows.push((svc, from));
                (from, true)
            };
            new_flows += u32::from(new);
            // A SYN only opens a flow: the program schedules every SYN afresh, while `which`
            // answers for the flow as it stands.
            let syn = new && rng.chance(80);
            let inst = &lab.installed.services[&svc];
            let predicted = which_installed(&lab.dp, inst, &svc, flow)
                .unwrap_or_else(|e| panic!("which {svc} {flow}: {e}"));
            let sent = program_choice(&lab, &svc, &frame(&svc, flow, syn));
            assert_eq!(
                sent, predicted.real,
                "seed {seed}, round {round}, packet {packet}: {svc} from {flow} (syn {syn}): \
                 `which` said {} ({})",
                predicted.source, predicted.detail
            );
            compared += 1;
            dropped += u32::from(sent.is_none());

            match rng.below(100) {
                0..=9 => lab.advance_clock(rng.below(700) as u32),
                10..=24 => disturb_load(&mut rng, &mut lab, &svc),
                25..=29 => refresh_candidates(&mut lab, &svc),
                30 => {
                    // An operator's change: a real's weight or health.
                    let spec = state.services.get_mut(&svc).unwrap();
                    let n = spec.reals.len() as u64;
                    let r = spec.reals.values_mut().nth(rng.below(n) as usize).unwrap();
                    if rng.chance(50) {
                        r.weight = weight(&mut rng);
                    } else {
                        r.health = match r.health {
                            Health::Up => Health::Down,
                            Health::Down => Health::Up,
                        };
                    }
                    lab.apply(&state);
                }
                _ => {}
            }
        }
    }
    // The inputs reached every kind of decision, not just one.
    assert_eq!(compared, ROUNDS * PACKETS);
    assert!(dropped > 0 && dropped < compared / 2, "{dropped} drops");
    assert!(new_flows > compared / 2, "{new_flows} new flows");
}

#[test]
fn the_vip_probe_finds_the_same_services_in_userspace_and_in_the_program() {
    let seed = seed();
    let mut rng = Rng::new(seed ^ 0x71b);
    for round in 0..ROUNDS {
        let (mut lab, services) = random_lab(&mut rng, 16);
        lab.apply(&desired(services));
        let table4 = lab.dp.vip_table().unwrap();
        let table6 = lab.dp.vip_table6().unwrap();
        for probe in 0..PACKETS {
            let v6 = rng.chance(50);
            let key = ServiceKey {
                vip: vip(rng.below(4) as u32, v6),
                port: 1000 + rng.below(18) as u16,
                proto: if rng.chance(50) {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                },
            };
            let number = match key.proto {
                Protocol::Tcp => proto::TCP,
                Protocol::Udp => proto::UDP,
            };
            let found = match key.vip {
                IpAddr::V4(a) => {
                    viptable::lookup(&table4, &Vip4Key::from_parts(a.octets(), key.port, number))
                }
                IpAddr::V6(a) => {
                    viptable::lookup(&table6, &Vip6Key::from_parts(a.octets(), key.port, number))
                }
            };
            let installed = lab.installed.services.get(&key).map(|s| s.id);
            assert_eq!(found, installed, "seed {seed}, round {round}: {key}");
            let client = SocketAddr::new(client(&mut rng, v6), 30_000 + probe as u16);
            let action = lab.run(&frame(&key, client, true)).action;
            assert_eq!(
                action == XDP_PASS,
                found.is_none(),
                "seed {seed}, round {round}: {key}: userspace found {found:?}, the program \
                 returned action {action}"
            );
        }
    }
}
