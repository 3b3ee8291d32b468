//! Least-connection scheduling end to end: the real `lb-agent` in a director namespace, three
//! real servers holding long-lived connections, one of them restarted. Needs root.
//!
//! The case wlc exists for (RabbitMQ's AMQP connections last for hours): after a real server
//! comes back from a restart it has no connections while the others keep theirs. Under wlc the
//! next new connections fill it up until the reals are level; under Maglev hashing (wrr) it only
//! gets its hash share and the load stays skewed.
//!
//! The other case that breaks least-connection flows is a missing connection entry: a spoofed
//! SYN flood of ten times the connection table must not push the held connections' entries out
//! (their next packets would be placed again by load, on another real).

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::Agent,
    netns::{Netns, TcpEchoServer, TcpLineClient},
    topo::DrTopology,
};

const PORT: u16 = 8080;
const FIRST: usize = 300;
const NEXT: usize = 200;
/// The tag of connections whose real server was restarted under them.
const DEAD: &str = "dead";

fn config(net: u8, algo: &str) -> String {
    let mut y = format!(
        "interface: eth0\nxdp_mode: driver\nlimits: {{ max_services: 8, max_reals: 64, \
         conn_entries: 65536, persist_entries: 1024 }}\nvirtual_servers:\n  - vip: 10.{net}.0.100\n    \
         port: {PORT}\n    lb_algo: {algo}\n    lb_kind: dr\n    delay_loop: 1\n    real_servers:\n"
    );
    for last in 11..=13 {
        y += &format!(
            "      - {{ ip: 10.{net}.0.{last}, weight: 1, tcp_check: {{ connect_timeout: 1, \
             retry: 0 }} }}\n"
        );
    }
    y
}

fn echo(ns: &Netns, tag: &str) -> TcpEchoServer {
    TcpEchoServer::start(ns, (Ipv4Addr::UNSPECIFIED, PORT).into(), tag).expect("echo server")
}

/// Opens a connection through the VIP and asks which real answers.
fn open(topo: &DrTopology) -> (TcpLineClient, String) {
    let to: SocketAddr = (topo.vip, PORT).into();
    let mut c =
        TcpLineClient::connect(&topo.client.ns, to, Duration::from_secs(5)).expect("connect");
    let reply = c.request("who").expect("request");
    let tag = reply
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    (c, tag)
}

/// Live connections per real: every connection still answering, grouped by the answering real.
/// Connections known to be dead are left alone: a packet on one would reach the director and
/// refresh its entry (the real's reset goes straight to the client, unseen).
fn live_per_real(conns: &mut [(TcpLineClient, String)]) -> BTreeMap<String, usize> {
    let mut live = BTreeMap::new();
    for (c, tag) in conns.iter_mut().filter(|(_, tag)| tag != DEAD) {
        if let Ok(reply) = c.request("ping") {
            assert!(
                reply.starts_with(tag.as_str()),
                "a connection moved: {reply} on {tag}"
            );
            *live.entry(tag.clone()).or_default() += 1;
        }
    }
    live
}

/// `lbadm -L -n`'s ActiveConn of real `10.<net>.0.<last>`.
fn active_conn(agent: &Agent, net: u8, last: u8) -> u64 {
    let listing = agent.lbadm_ok(&["-L", "-n"]);
    let addr = format!("10.{net}.0.{last}:{PORT}");
    let line = listing
        .lines()
        .find(|l| l.contains(&addr))
        .unwrap_or_else(|| panic!("{addr} not listed:\n{listing}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    cols[4]
        .parse()
        .unwrap_or_else(|_| panic!("ActiveConn in {line:?}"))
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the scenario with `algo` and returns the live connections per real at the end.
fn restart_scenario(net: u8, algo: &str) -> BTreeMap<String, usize> {
    let topo = DrTopology::new(net, 3).expect("topology");
    let mut servers: Vec<Option<TcpEchoServer>> = (1..=3)
        .map(|i| Some(echo(&topo.reals[i - 1].ns, &format!("real{i}"))))
        .collect();
    let agent = Agent::start(&topo.director.ns, &config(net, algo)).expect("agent");

    let mut conns: Vec<(TcpLineClient, String)> = (0..FIRST).map(|_| open(&topo)).collect();
    let before = live_per_real(&mut conns);
    println!("{algo}: {FIRST} connections: {before:?}");

    // Restart real3's service: its connections end (the clients keep their dead sockets open
    // and send nothing more, as clients that got a reset do), the check fails, then passes.
    servers[2] = None;
    for (_, tag) in conns.iter_mut().filter(|(_, tag)| tag == "real3") {
        *tag = DEAD.to_owned();
    }
    agent
        .wait_for_log(
            &format!("real 10.{net}.0.13:{PORT} of TCP 10.{net}.0.100:{PORT} failed its check"),
            Duration::from_secs(10),
        )
        .expect("real3 detected down");
    servers[2] = Some(echo(&topo.reals[2].ns, "real3"));
    agent
        .wait_for_log(
            &format!("real 10.{net}.0.13:{PORT} of TCP 10.{net}.0.100:{PORT} passed its check"),
            Duration::from_secs(10),
        )
        .expect("real3 back up");
    if algo == "wlc" {
        // What the scheduler counts is what lbadm lists: real3's lost connections are gone.
        wait_until(Duration::from_secs(3), "real3's ActiveConn at 0", || {
            active_conn(&agent, net, 13) == 0
        });
        // And --which predicts where a new connection goes.
        let vip = format!("10.{net}.0.100:{PORT}");
        let client = format!("10.{net}.0.1:45000");
        let out = agent.lbadm_ok(&["--which", "-t", &vip, "--client", &client]);
        assert!(
            out.contains("least connection") && out.contains(&format!("10.{net}.0.13:{PORT}")),
            "{out}"
        );
    }

    for _ in 0..NEXT {
        conns.push(open(&topo));
    }
    let after = live_per_real(&mut conns);
    println!("{algo}: after real3's restart and {NEXT} new connections: {after:?}");
    if algo == "wlc" {
        for (last, tag) in [(11, "real1"), (12, "real2"), (13, "real3")] {
            let listed = active_conn(&agent, net, last);
            let live = after.get(tag).copied().unwrap_or(0) as u64;
            assert_eq!(
                listed, live,
                "{tag}: lbadm's ActiveConn vs live connections"
            );
        }
    }
    drop(conns);
    after
}

/// Whether every real's count is within 10% of the mean.
fn level(counts: &BTreeMap<String, usize>) -> bool {
    let values: Vec<f64> = ["real1", "real2", "real3"]
        .iter()
        .map(|t| counts.get(*t).copied().unwrap_or(0) as f64)
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    values.iter().all(|v| (v - mean).abs() <= 0.1 * mean)
}

#[test]
fn wlc_levels_a_restarted_real_and_maglev_does_not() {
    let wlc = restart_scenario(90, "wlc");
    let live: usize = wlc.values().sum();
    assert!(
        live >= FIRST + NEXT - FIRST / 3 - 10,
        "connections were lost beyond real3's: {wlc:?}"
    );
    assert!(level(&wlc), "wlc left the reals uneven: {wlc:?}");

    let maglev = restart_scenario(91, "wrr");
    assert!(
        !level(&maglev),
        "Maglev alone levelled the reals, the scenario shows nothing: {maglev:?}"
    );
}

/// Long-lived connections opened before the flood.
const HELD: usize = 60;
/// Connection-table entries of the flood scenario: the flood sends ten times as many SYNs.
const FLOOD_TABLE: u32 = 4096;

#[test]
fn a_spoofed_syn_flood_breaks_no_established_wlc_connection() {
    let net = 92;
    let topo = DrTopology::new(net, 3).expect("topology");
    let _servers: Vec<TcpEchoServer> = (1..=3)
        .map(|i| echo(&topo.reals[i - 1].ns, &format!("real{i}")))
        .collect();
    let config = config(net, "wlc").replace(
        "conn_entries: 65536",
        &format!("conn_entries: {FLOOD_TABLE}"),
    );
    let agent = Agent::start(&topo.director.ns, &config).expect("agent");
    let mut conns: Vec<(TcpLineClient, String)> = (0..HELD).map(|_| open(&topo)).collect();
    let before = live_per_real(&mut conns);
    assert_eq!(before.values().sum::<usize>(), HELD, "{before:?}");

    // SYNs from spoofed sources in 100.64.0.0/10, sent by the client onto the LAN to the
    // director's MAC, as an attacker next to the clients would; between batches the held
    // connections exchange data, and must keep answering from their real.
    let director_mac = topo.director.mac;
    let client = &topo.client;
    let mut rng = lb_tests::rng::Rng::new(0x5f00d);
    let batches = 10;
    for batch in 0..batches {
        let frames: Vec<Vec<u8>> = (0..FLOOD_TABLE)
            .map(|_| {
                let src = Ipv4Addr::from(0x6440_0000 | (rng.bits() as u32 & 0x003f_ffff));
                let sport = 1024 + (rng.bits() % 60_000) as u16;
                let mut f = lb_tests::packet::Frame::tcp(
                    src,
                    sport,
                    topo.vip,
                    PORT,
                    lb_tests::packet::flags::SYN,
                );
                f.src_mac = client.mac;
                f.dst_mac = director_mac;
                f.build()
            })
            .collect();
        lb_tests::netns::send_frames(&client.ns, &client.ifname, frames.iter().map(Vec::as_slice))
            .expect("flood");
        let live = live_per_real(&mut conns);
        assert_eq!(
            live.values().sum::<usize>(),
            HELD,
            "after {} spoofed SYNs: {live:?}",
            (batch + 1) * FLOOD_TABLE
        );
    }

    // The flood went through the data plane, and established entries were never its victims.
    let table = agent.lbadm_ok(&["-L", "--conn-table"]);
    println!("{table}");
    assert!(
        table.contains("Evicted live entries: established 0, "),
        "{table}"
    );
    let stats = agent.lbadm_ok(&["-L", "-n", "--stats", "--exact"]);
    let svc = stats
        .lines()
        .find(|l| l.starts_with(&format!("TCP  10.{net}.0.100:{PORT}")))
        .unwrap_or_else(|| panic!("{stats}"));
    let conns_total: u64 = svc.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(
        conns_total >= u64::from(FLOOD_TABLE * batches),
        "the spoofed SYNs were scheduled: {svc}"
    );

    // New connections still open and keep their real.
    let mut fresh: Vec<(TcpLineClient, String)> = (0..20).map(|_| open(&topo)).collect();
    let fresh_live = live_per_real(&mut fresh);
    assert_eq!(fresh_live.values().sum::<usize>(), 20, "{fresh_live:?}");
    drop(conns);
}
