//! Randomized test: at least 100,000 random and mutated frames through the real program.
//! An independent parser (the oracle) decides which frames are for a service; the test asserts
//! that no other frame is ever forwarded or changed, that forwarded frames go only to an up real
//! of their own service with only the MACs rewritten, and that the counters add up.
//!
//! Set `LB_RANDOM_SEED` to replay a run; the seed is printed on failure.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
};

use lb_tests::{
    lab::{Lab, XDP_DROP, XDP_PASS, XDP_TX, desired, mac_of, persistent, spec, tcp, udp},
    packet::{DIRECTOR_MAC, Frame, L4, flags, icmp_unreachable},
};
use lb_userspace::state::{Health, ServiceKey};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 100);
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 101);
const VIP_EMPTY: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 102);
const FRAMES: usize = 120_000;

/// SplitMix64: small, seedable, good enough to drive a fuzzer.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// What the oracle knows about the configuration.
struct World {
    /// Services and the MACs of their reals that may receive new or existing flows (up).
    up_reals: HashMap<ServiceKey, HashSet<[u8; 6]>>,
    /// Services by (VIP, proto) -> ports, for the fragment rule.
    ports: BTreeMap<(Ipv4Addr, u8), Vec<u16>>,
}

impl World {
    fn service(&self, vip: Ipv4Addr, port: u16, proto: u8) -> Option<ServiceKey> {
        let key = match proto {
            6 => tcp(vip, port),
            17 => udp(vip, port),
            _ => return None,
        };
        self.up_reals.contains_key(&key).then_some(key)
    }
}

/// The oracle: which service a frame is for, by the documented rules, parsed independently of
/// the data plane.
fn oracle(world: &World, f: &[u8]) -> Option<ServiceKey> {
    let be16 = |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*f.get(i)?, *f.get(i + 1)?])) };
    let mut l3 = 14;
    let mut ethertype = be16(12)?;
    if ethertype == 0x8100 {
        ethertype = be16(16)?;
        l3 = 18;
    }
    if ethertype != 0x0800 || f.len() < l3 + 20 {
        return None;
    }
    let ip = &f[l3..];
    let (version, ihl) = (ip[0] >> 4, (ip[0] & 0x0f) as usize * 4);
    if version != 4 || ihl < 20 {
        return None;
    }
    let proto = ip[9];
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    let l4 = l3 + ihl;
    match proto {
        6 | 17 if fragment => {
            let port = *world.ports.get(&(dst, proto))?.iter().min()?;
            world.service(dst, port, proto)
        }
        6 | 17 => {
            let need = if proto == 6 { 20 } else { 8 };
            if f.len() < l4 + need {
                return None;
            }
            world.service(dst, be16(l4 + 2)?, proto)
        }
        1 if !fragment => {
            if f.len() < l4 + 8 || f[l4] != 3 {
                return None;
            }
            let inner = l4 + 8;
            if f.len() < inner + 20 {
                return None;
            }
            let (iv, iihl) = (f[inner] >> 4, (f[inner] & 0x0f) as usize * 4);
            let isrc = Ipv4Addr::new(f[inner + 12], f[inner + 13], f[inner + 14], f[inner + 15]);
            let iproto = f[inner + 9];
            if iv != 4 || iihl < 20 || isrc != dst || !(iproto == 6 || iproto == 17) {
                return None;
            }
            if f.len() < inner + iihl + 4 {
                return None;
            }
            world.service(isrc, be16(inner + iihl)?, iproto)
        }
        _ => None,
    }
}

fn valid_frame(rng: &mut Rng, world: &World) -> Vec<u8> {
    let clients = [
        Ipv4Addr::new(192, 168, 1, 1),
        Ipv4Addr::new(192, 168, 1, 2),
        Ipv4Addr::new(172, 16, 9, 9),
        Ipv4Addr::new(10, 1, 0, 50),
    ];
    let src = rng.pick(&clients);
    let dst = rng.pick(&[VIP, VIP, VIP2, VIP_EMPTY, Ipv4Addr::new(10, 1, 0, 7)]);
    let ports: Vec<u16> = world.ports.values().flatten().copied().collect();
    let dport = if rng.chance(80) {
        rng.pick(&ports)
    } else {
        rng.below(65536) as u16
    };
    let sport = 1024 + rng.below(200) as u16;
    let mut frame = match rng.below(10) {
        0..=4 => {
            let random_flags = rng.next() as u8;
            let fl = rng.pick(&[
                flags::SYN,
                flags::ACK,
                flags::ACK | flags::PSH,
                flags::FIN | flags::ACK,
                flags::RST,
                flags::SYN | flags::ACK,
                0,
                random_flags,
            ]);
            Frame::tcp(src, sport, dst, dport, fl)
        }
        5..=7 => Frame::udp(src, sport, dst, dport),
        8 => {
            let quoted = Frame::tcp(dst, dport, src, sport, flags::ACK);
            icmp_unreachable(
                Ipv4Addr::new(10, 1, 0, 1),
                dst,
                rng.below(16) as u8,
                1400,
                &quoted,
            )
        }
        _ => Frame::new(
            src,
            dst,
            L4::Raw {
                proto: rng.pick(&[6, 17, 1, 47, 50]),
            },
        ),
    };
    let payload_len = rng.below(80) as usize;
    frame = frame.payload(&rng.bytes(payload_len));
    if rng.chance(15) {
        frame = frame.vlan(rng.below(4096) as u16);
    }
    if rng.chance(10) {
        let n = 1 + rng.below(40) as usize;
        frame = frame.ip_options(&rng.bytes(n));
    }
    if rng.chance(10) {
        frame = frame.fragment(rng.chance(50), rng.below(200) as u16);
    }
    frame.build()
}

fn mutate(rng: &mut Rng, mut f: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 => {
                let i = rng.below(f.len() as u64) as usize;
                f[i] = rng.next() as u8;
            }
            1 => {
                let i = rng.below(f.len() as u64) as usize;
                f[i] ^= 1 << rng.below(8);
            }
            2 => {
                let keep = 14 + rng.below((f.len() - 13) as u64) as usize;
                f.truncate(keep.min(f.len()));
            }
            3 => {
                let n = rng.below(32) as usize;
                f.extend(rng.bytes(n));
            }
            _ => {
                // Hit the header fields that steer parsing.
                let i = rng.pick(&[12usize, 13, 14, 16, 17, 18, 20, 21, 23, 34, 35, 36, 37, 47]);
                if i < f.len() {
                    f[i] = rng.next() as u8;
                }
            }
        }
    }
    f
}

#[test]
fn random_and_mutated_frames_never_go_astray() {
    let seed: u64 = std::env::var("LB_RANDOM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1ba7);
    let mut rng = Rng(seed);

    let r = |last: u8| Ipv4Addr::new(10, 1, 0, last);
    let mut d = desired(vec![
        (
            tcp(VIP, 80),
            spec(80, 251, &[(r(11), 1), (r(12), 1), (r(13), 1)]),
        ),
        (tcp(VIP, 443), spec(443, 251, &[(r(11), 2), (r(14), 1)])),
        (udp(VIP, 53), spec(53, 251, &[(r(15), 1), (r(16), 0)])),
        (
            tcp(VIP2, 5672),
            persistent(
                spec(5672, 251, &[(r(21), 1), (r(22), 1)]),
                50,
                Ipv4Addr::new(255, 255, 255, 0),
            ),
        ),
        (tcp(VIP_EMPTY, 80), spec(80, 251, &[(r(31), 0)])),
    ]);
    // One real down in the middle of a service.
    d.services
        .get_mut(&tcp(VIP, 80))
        .unwrap()
        .reals
        .values_mut()
        .nth(1)
        .unwrap()
        .health = Health::Down;
    let mut lab = Lab::with_limits(lb_tests::lab::test_limits());
    lab.apply(&d);

    let mut world = World {
        up_reals: HashMap::new(),
        ports: BTreeMap::new(),
    };
    for (key, s) in &d.services {
        let up = s
            .reals
            .iter()
            .filter(|(_, rs)| rs.is_up())
            .map(|(rk, _)| match rk.addr {
                std::net::IpAddr::V4(a) => mac_of(a),
                std::net::IpAddr::V6(_) => unreachable!(),
            })
            .collect();
        world.up_reals.insert(*key, up);
        let std::net::IpAddr::V4(vip) = key.vip else {
            unreachable!()
        };
        world
            .ports
            .entry((vip, key.proto.number()))
            .or_default()
            .push(key.port);
    }
    let no_new_flows: HashSet<ServiceKey> = [tcp(VIP_EMPTY, 80)].into_iter().collect();

    let mut pool: Vec<Vec<u8>> = Vec::new();
    let (mut tx, mut pass, mut drop) = (0u64, 0u64, 0u64);
    let mut for_service = 0u64;
    for n in 0..FRAMES {
        let frame = match rng.below(10) {
            0..=3 => valid_frame(&mut rng, &world),
            4..=8 if !pool.is_empty() => {
                let base = pool[rng.below(pool.len() as u64) as usize].clone();
                mutate(&mut rng, base)
            }
            _ => {
                let len = 14 + rng.below(120) as usize;
                let mut f = rng.bytes(len);
                if rng.chance(50) {
                    f[12..14].copy_from_slice(&[0x08, 0x00]);
                }
                f
            }
        };
        if pool.len() < 512 {
            pool.push(frame.clone());
        } else {
            let i = rng.below(512) as usize;
            pool[i] = frame.clone();
        }

        let ctx = || format!("frame #{n} (seed {seed}): {frame:02x?}");
        let out = lab
            .dp
            .test_run(&frame)
            .unwrap_or_else(|e| panic!("{e}: {}", ctx()));
        let target = oracle(&world, &frame);
        match out.action {
            XDP_TX => {
                tx += 1;
                let svc = target
                    .unwrap_or_else(|| panic!("forwarded a frame not for a service: {}", ctx()));
                let mac: [u8; 6] = out.frame[0..6].try_into().unwrap();
                assert!(
                    world.up_reals[&svc].contains(&mac),
                    "sent to {mac:02x?}, not an up real of {svc}: {}",
                    ctx()
                );
                assert_eq!(&out.frame[6..12], &DIRECTOR_MAC, "{}", ctx());
                assert_eq!(&out.frame[12..], &frame[12..], "bytes changed: {}", ctx());
                for_service += 1;
            }
            XDP_PASS => {
                pass += 1;
                assert_eq!(out.frame, frame, "passed frame changed: {}", ctx());
                assert!(
                    target.is_none(),
                    "frame for {target:?} was passed: {}",
                    ctx()
                );
            }
            XDP_DROP => {
                drop += 1;
                let svc = target
                    .unwrap_or_else(|| panic!("dropped a frame not for a service: {}", ctx()));
                assert!(
                    no_new_flows.contains(&svc),
                    "dropped a frame for {svc}: {}",
                    ctx()
                );
            }
            other => panic!("unexpected action {other}: {}", ctx()),
        }
    }

    let g = lab.dp.global_stats().unwrap();
    assert_eq!(g.rx, FRAMES as u64);
    assert_eq!((g.transmitted, g.passed, g.drop_no_real), (tx, pass, drop));
    let mut svc_packets = 0;
    let mut real_packets = 0;
    for (key, svc) in &lab.installed.services {
        let s = lab.dp.service_stats(svc.id).unwrap();
        let mut reals = 0;
        for real in svc.reals.values() {
            reals += lab.dp.real_stats(real.index).unwrap().packets;
        }
        assert_eq!(
            reals, s.packets,
            "{key}: reals' packets add up to the service's"
        );
        svc_packets += s.packets;
        real_packets += reals;
    }
    assert_eq!(svc_packets, tx);
    assert_eq!(real_packets, tx);
    // The run must actually have exercised every outcome.
    assert!(
        tx > 10_000 && pass > 10_000 && drop > 100,
        "tx {tx} pass {pass} drop {drop}"
    );
    assert!(for_service == tx);
}
