//! Dual stack end to end: the real `lb-agent` in a director namespace with one IPv4 and one IPv6
//! service on the same port, TCP_CHECK health checks over each family, and real servers that
//! hold both VIPs on `lo` (the IPv6 one as a /128). Clients over IPv4 and IPv6 reach every real
//! through the director, the replies come straight from the reals, `lbadm` lists both services
//! in ipvsadm's layouts, the agent resolves the IPv6 reals over NDP by itself, and a real whose
//! service stops leaves both services within the health-check bound. Needs root.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv6Addr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::Agent,
    netns::{Capture, Host, Netns, TcpEchoServer, TcpLineClient, format_mac, tcp_request},
    topo::DrTopology,
    traffic::{LongLived, NewConns},
};

const PORT: u16 = 8080;
/// delay_loop 1 + connect_timeout 1 x (1 + retry 1) + delay_before_retry 1 x 1.
const BOUND: Duration = Duration::from_secs(4);

/// The two services, every real checked with TCP_CHECK over the service's family.
fn config(topo: &DrTopology) -> String {
    let check = "tcp_check: { connect_timeout: 1, retry: 1, delay_before_retry: 1 }";
    let mut y = "interface: eth0\nxdp_mode: driver\nlimits: { max_services: 8, max_reals: 64, \
                 conn_entries: 65536, persist_entries: 1024, conn_entries6: 65536, \
                 persist_entries6: 1024 }\nvirtual_servers:\n"
        .to_owned();
    let vips = [topo.vip.to_string(), vip6(topo).to_string()];
    for (family, vip) in vips.iter().enumerate() {
        y += &format!(
            "  - vip: \"{vip}\"\n    port: {PORT}\n    lb_algo: wrr\n    lb_kind: dr\n    \
             delay_loop: 1\n    real_servers:\n"
        );
        for real in &topo.reals {
            let ip = if family == 0 {
                real.ip.to_string()
            } else {
                real.ip6.expect("dual-stack host").to_string()
            };
            y += &format!("      - {{ ip: \"{ip}\", {check} }}\n");
        }
    }
    y
}

fn vip6(topo: &DrTopology) -> Ipv6Addr {
    topo.vip6.expect("a dual-stack topology")
}

/// The service on each family: IPv4 first.
fn services(topo: &DrTopology) -> [SocketAddr; 2] {
    [(topo.vip, PORT).into(), (vip6(topo), PORT).into()]
}

/// One echo server per real on every address of both families (`[::]`, dual-stack): the VIPs
/// for clients, the real's own addresses for the checker.
fn echo(ns: &Netns, tag: &str) -> TcpEchoServer {
    TcpEchoServer::start(ns, (Ipv6Addr::UNSPECIFIED, PORT).into(), tag).unwrap()
}

fn echo_all(topo: &DrTopology) -> Vec<Option<TcpEchoServer>> {
    topo.reals
        .iter()
        .enumerate()
        .map(|(i, r)| Some(echo(&r.ns, &format!("real{}", i + 1))))
        .collect()
}

/// The address `lbadm` prints for the real tagged `realN` in the service of `family` (0 = IPv4).
fn real_addr(topo: &DrTopology, tag: &str, family: usize) -> String {
    let n: usize = tag.trim_start_matches("real").parse().unwrap();
    let real = &topo.reals[n - 1];
    match family {
        0 => format!("{}:{PORT}", real.ip),
        _ => format!("[{}]:{PORT}", real.ip6.unwrap()),
    }
}

/// The service lines of `lbadm -L -n` that ipvsadm prints for the two services.
fn service_lines(topo: &DrTopology) -> [String; 2] {
    [
        format!("TCP  {}:{PORT} wrr", topo.vip),
        format!("TCP  [{}]:{PORT} wrr", vip6(topo)),
    ]
}

/// A real line of `lbadm -L -n`.
#[derive(Debug, PartialEq, Eq)]
struct RealLine {
    weight: u32,
    active: u64,
    inactive: u64,
}

/// The real lines under each service line of a `lbadm -L -n` listing, checked against
/// ipvsadm's exact layout (`"  -> %-28s %-7s %-6d %-10u %-10u"`).
fn listing_blocks(listing: &str) -> BTreeMap<String, BTreeMap<String, RealLine>> {
    let mut blocks: BTreeMap<String, BTreeMap<String, RealLine>> = BTreeMap::new();
    let mut current = None;
    for line in listing.lines().skip(3) {
        if let Some(real) = line.strip_prefix("  -> ") {
            let f: Vec<&str> = real.split_whitespace().collect();
            assert_eq!(f.len(), 5, "{line:?}\n{listing}");
            let parsed = RealLine {
                weight: f[2].parse().unwrap(),
                active: f[3].parse().unwrap(),
                inactive: f[4].parse().unwrap(),
            };
            let exact = format!(
                "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                f[0], "Route", parsed.weight, parsed.active, parsed.inactive
            );
            assert_eq!(line, exact, "ipvsadm's layout\n{listing}");
            let svc: &String = current.as_ref().expect("a real line under a service");
            blocks.get_mut(svc).unwrap().insert(f[0].to_owned(), parsed);
        } else {
            current = Some(line.to_owned());
            blocks.insert(line.to_owned(), BTreeMap::new());
        }
    }
    blocks
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until both services list `n` reals (the plain listing leaves out reals that are down).
fn wait_for_reals(agent: &Agent, topo: &DrTopology, n: usize, limit: Duration) {
    let lines = service_lines(topo);
    let start = Instant::now();
    loop {
        let last = agent.lbadm_ok(&["-L", "-n"]);
        let blocks = listing_blocks(&last);
        if lines
            .iter()
            .all(|s| blocks.get(s).is_some_and(|b| b.len() == n))
        {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{n} reals in both services: not within {limit:?}\n{last}\n{}",
            agent.log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The source MAC and ethertype of a `tcpdump -e -n -t` line.
fn link_header(line: &str) -> ([u8; 6], String) {
    let f: Vec<&str> = line.split_whitespace().collect();
    let mac = lb_tests::netns::parse_mac(f[0]).unwrap_or_else(|e| panic!("{e:#}: {line}"));
    let ethertype = f
        .iter()
        .position(|w| *w == "ethertype")
        .map(|i| f[i + 1].trim_end_matches(','))
        .unwrap_or_default()
        .to_owned();
    (mac, ethertype)
}

/// The director's kernel neighbour entry of an IPv6 real: resolved to the real's MAC by the
/// agent's managed entry.
#[track_caller]
fn assert_resolved_by_the_agent(director: &Host, real: &Host) {
    let ip = IpAddr::V6(real.ip6.unwrap());
    let (mac, line) = director
        .neighbour(ip)
        .unwrap()
        .unwrap_or_else(|| panic!("the director has no neighbour entry for {ip}"));
    assert_eq!(mac, Some(real.mac), "{line}");
    assert!(line.contains("managed"), "not the agent's entry: {line}");
    assert!(
        !line.ends_with("FAILED") && !line.ends_with("INCOMPLETE"),
        "{line}"
    );
}

#[test]
fn clients_of_both_families_reach_every_real_and_replies_bypass_the_director() {
    let topo = DrTopology::dual_stack(76, 3).expect("topology");
    let servers = echo_all(&topo);
    // Nobody has talked to the reals yet: the director knows none of their MACs.
    for real in &topo.reals {
        let entry = topo.director.neighbour(real.ip6.unwrap().into()).unwrap();
        assert!(
            entry.as_ref().is_none_or(|(mac, _)| mac.is_none()),
            "{entry:?}"
        );
    }
    let agent = Agent::start(&topo.director.ns, &config(&topo)).unwrap();
    wait_for_reals(&agent, &topo, 3, Duration::from_secs(10));
    for real in &topo.reals {
        assert_resolved_by_the_agent(&topo.director, real);
    }

    // Every frame the client receives from a VIP.
    let capture = Capture::start(
        &topo.client.ns,
        "eth0",
        &format!("src host {} or src host {}", topo.vip, vip6(&topo)),
    )
    .unwrap();
    let mut per_family: [BTreeMap<String, u32>; 2] = Default::default();
    for (family, to) in services(&topo).into_iter().enumerate() {
        for i in 0..40 {
            let reply = tcp_request(
                &topo.client.ns,
                to,
                &format!("hello {i}"),
                Duration::from_secs(3),
            )
            .unwrap_or_else(|e| panic!("IPv{} connection {i}: {e:#}", 4 + 2 * family));
            let tag = reply.split_whitespace().next().unwrap().to_owned();
            assert_eq!(reply, format!("{tag} hello {i}"));
            *per_family[family].entry(tag).or_default() += 1;
        }
    }
    thread::sleep(Duration::from_millis(300));
    let frames = capture.stop();
    for (family, seen) in per_family.iter().enumerate() {
        assert_eq!(
            seen.keys().cloned().collect::<Vec<_>>(),
            ["real1", "real2", "real3"],
            "IPv{}: {seen:?}",
            4 + 2 * family
        );
    }
    // The reals saw the client's own addresses (no translation), of both families.
    let client6 = topo.client.ip6.unwrap();
    for srv in servers.iter().flatten() {
        let peers: BTreeSet<IpAddr> = srv.peers().iter().map(|p| p.ip()).collect();
        assert!(peers.contains(&IpAddr::V6(client6)), "{peers:?}");
        assert!(
            peers.contains(&IpAddr::V6(topo.client.ip.to_ipv6_mapped())),
            "{peers:?}"
        );
    }

    // Direct routing: every reply frame came from a real's MAC, never the director's, over
    // both families, from every real.
    let real_macs: BTreeSet<[u8; 6]> = topo.reals.iter().map(|r| r.mac).collect();
    let mut from: BTreeSet<([u8; 6], String)> = BTreeSet::new();
    for line in &frames {
        let (mac, ethertype) = link_header(line);
        assert!(
            real_macs.contains(&mac),
            "a reply from {} (director {}): {line}",
            format_mac(mac),
            format_mac(topo.director.mac)
        );
        from.insert((mac, ethertype));
    }
    for real in &topo.reals {
        for ethertype in ["IPv4", "IPv6"] {
            assert!(
                from.contains(&(real.mac, ethertype.to_owned())),
                "no {ethertype} reply from {}: {from:?}",
                format_mac(real.mac)
            );
        }
    }
    assert!(frames.len() >= 2 * 40 * 3, "{} frames", frames.len());

    // Connections held open: ActiveConn per real and family, and `-c` names each one's real.
    let mut held: Vec<(usize, SocketAddr, String, TcpLineClient)> = Vec::new();
    for (family, to) in services(&topo).into_iter().enumerate() {
        for i in 0..12 {
            let mut c =
                TcpLineClient::connect(&topo.client.ns, to, Duration::from_secs(3)).unwrap();
            let reply = c.request(&format!("hold {i}")).unwrap();
            let tag = reply.split_whitespace().next().unwrap().to_owned();
            let local = c.stream().local_addr().unwrap();
            held.push((family, local, tag, c));
        }
    }
    let mut expected: [BTreeMap<String, u64>; 2] = Default::default();
    for (family, _, tag, _) in &held {
        *expected[*family]
            .entry(real_addr(&topo, tag, *family))
            .or_default() += 1;
    }
    let lines = service_lines(&topo);
    let mut listing = String::new();
    let matches = |listing: &str| {
        let blocks = listing_blocks(listing);
        (0..2).all(|family| {
            let block = &blocks[&lines[family]];
            block.len() == 3
                && block.iter().all(|(addr, l)| {
                    l.weight == 1 && l.active == expected[family].get(addr).copied().unwrap_or(0)
                })
        })
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        listing = agent.lbadm_ok(&["-L", "-n"]);
        if matches(&listing) {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        matches(&listing),
        "expected ActiveConn {expected:?}\n{listing}"
    );
    let head: Vec<&str> = listing.lines().take(3).collect();
    assert!(
        head[0].starts_with("IP Virtual Server version 1.2.1 (size="),
        "{listing}"
    );
    assert_eq!(
        head[1..],
        [
            "Prot LocalAddress:Port Scheduler Flags",
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
        ],
        "{listing}"
    );
    for line in &lines {
        assert!(listing.contains(&format!("{line}\n")), "{line}\n{listing}");
    }

    let entries = agent.lbadm_ok(&["-L", "-n", "-c"]);
    for (family, local, tag, _) in &held {
        let source = match local {
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
            SocketAddr::V4(a) => a.to_string(),
        };
        let virtual_addr = match family {
            0 => format!("{}:{PORT}", topo.vip),
            _ => format!("[{}]:{PORT}", vip6(&topo)),
        };
        let line = entries
            .lines()
            .find(|l| l.split_whitespace().nth(3) == Some(source.as_str()))
            .unwrap_or_else(|| panic!("no entry for {source}\n{entries}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            f,
            [
                "TCP",
                f[1],
                "ESTABLISHED",
                &source,
                &virtual_addr,
                &real_addr(&topo, tag, *family)
            ],
            "{entries}"
        );
    }
    drop(held);
    drop(servers);
}

#[test]
fn a_stopped_real_leaves_both_families_within_the_bound_and_comes_back() {
    let topo = DrTopology::dual_stack(77, 3).expect("topology");
    let mut servers = echo_all(&topo);
    let agent = Agent::start(&topo.director.ns, &config(&topo)).unwrap();
    wait_for_reals(&agent, &topo, 3, Duration::from_secs(10));
    let [to4, to6] = services(&topo);
    let period = Duration::from_millis(300);
    let long = [
        LongLived::start(&topo.client.ns, to4, 30, period).unwrap(),
        LongLived::start(&topo.client.ns, to6, 30, period).unwrap(),
    ];
    let new = [
        NewConns::start(&topo.client.ns, to4, Duration::from_millis(20)).unwrap(),
        NewConns::start(&topo.client.ns, to6, Duration::from_millis(20)).unwrap(),
    ];
    thread::sleep(Duration::from_millis(1500));
    for (family, n) in new.iter().enumerate() {
        let r = n.report();
        assert!(
            r.failures.is_empty(),
            "IPv{}: {:?}",
            4 + 2 * family,
            r.failures
        );
        assert_eq!(
            r.per_real.len(),
            3,
            "IPv{}: {:?}",
            4 + 2 * family,
            r.per_real
        );
    }

    // Stop the service on real2: its listener and connections go away, on both families.
    servers[1] = None;
    let stopped = Instant::now();
    thread::sleep(BOUND + Duration::from_millis(300));
    let at_bound: Vec<(usize, u64)> = new
        .iter()
        .map(|n| {
            let r = n.report();
            (
                r.failures.len(),
                r.per_real.get("real2").copied().unwrap_or(0),
            )
        })
        .collect();
    let real2 = &topo.reals[1];
    let svc4 = format!("TCP {}:{PORT}", topo.vip);
    let svc6 = format!("TCP [{}]:{PORT}", vip6(&topo));
    agent
        .wait_for_log(
            &format!("real {}:{PORT} of {svc4} failed its check", real2.ip),
            Duration::ZERO,
        )
        .unwrap();
    agent
        .wait_for_log(
            &format!(
                "real [{}]:{PORT} of {svc6} failed its check",
                real2.ip6.unwrap()
            ),
            Duration::ZERO,
        )
        .unwrap();
    let listing = agent.lbadm_ok(&["-L", "-n"]);
    let blocks = listing_blocks(&listing);
    for (family, line) in service_lines(&topo).iter().enumerate() {
        let reals: Vec<&String> = blocks[line].keys().collect();
        assert_eq!(
            reals,
            [
                &real_addr(&topo, "real1", family),
                &real_addr(&topo, "real3", family)
            ],
            "{listing}"
        );
    }
    // After the bound, no new connection of either family goes to real2 (one would fail:
    // nothing listens there).
    thread::sleep(Duration::from_secs(2));
    for (family, n) in new.iter().enumerate() {
        let r = n.report();
        assert_eq!(
            r.failures.len(),
            at_bound[family].0,
            "IPv{}: new connections failed after the detection bound: {:#?}",
            4 + 2 * family,
            &r.failures[at_bound[family].0..]
        );
        assert_eq!(
            r.per_real.get("real2").copied().unwrap_or(0),
            at_bound[family].1
        );
        println!(
            "IPv{}: {} new connections failed in the first {:?}",
            4 + 2 * family,
            at_bound[family].0,
            stopped.elapsed()
        );
    }
    // Established connections on the other reals never noticed.
    for (family, l) in long.iter().enumerate() {
        for r in l.reports() {
            if r.real != "real2" {
                assert!(
                    r.broken.is_none(),
                    "IPv{}: a connection on {} broke: {:?}",
                    4 + 2 * family,
                    r.real,
                    r.broken
                );
            }
        }
    }

    // Start it again: both families give it new connections again.
    let before: Vec<u64> = new
        .iter()
        .map(|n| n.report().per_real.get("real2").copied().unwrap_or(0))
        .collect();
    servers[1] = Some(echo(&real2.ns, "real2"));
    for (family, n) in new.iter().enumerate() {
        wait_until(
            BOUND + Duration::from_secs(2),
            &format!("real2 back for IPv{}", 4 + 2 * family),
            || n.report().per_real.get("real2").copied().unwrap_or(0) > before[family] + 5,
        );
    }
    wait_for_reals(&agent, &topo, 3, Duration::from_secs(1));
    let [l4, l6] = long;
    for (family, reports) in [l4.finish(), l6.finish()].into_iter().enumerate() {
        let on: BTreeSet<&str> = reports.iter().map(|r| r.real.as_str()).collect();
        assert_eq!(on.len(), 3, "IPv{}: {on:?}", 4 + 2 * family);
        for r in &reports {
            if r.real != "real2" {
                assert!(r.broken.is_none(), "{r:?}");
                assert!(r.exchanges > 10, "{r:?}");
            }
        }
    }
    let [n4, n6] = new;
    for (family, r) in [n4.finish(), n6.finish()].into_iter().enumerate() {
        assert!(
            r.failures.len() == at_bound[family].0,
            "IPv{}: {:?}",
            4 + 2 * family,
            r.failures
        );
    }
}
