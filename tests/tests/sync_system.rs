//! Director state sync end to end, in network namespaces: two directors run `lb-agent` with one
//! configuration and a `sync:` section naming each other; least-connection (`wlc`) and
//! persistent `wlc` services, whose flows no director can recompute, carry hundreds of
//! long-lived connections while a director dies, is restored from scratch (its program
//! detached and its maps gone, as after a reboot) and takes its traffic back:
//!
//! - active/backup with keepalived's VRRP (the master dies, the backup takes the VIP, the old
//!   master comes back and preempts; IPVS's sync cannot give flows back, keepalived issue 1966);
//! - active-active behind a router's ECMP route (a director dies and the route loses it; it
//!   comes back and the route rehashes flows onto it), the directors meeting in a multicast
//!   group rather than by a peer list.
//!
//! Every connection must survive both moves, and every new connection must succeed. On the way
//! the test measures how long a confirmed flow takes to reach the peer, and sends the sync
//! port forged, wrong-key, other-group and replayed datagrams from another host on the LAN:
//! each is rejected and counted, and none moves a flow.
//!
//! Needs root and keepalived (`cargo xtask test` installs it).

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use lb_common::ConnState;
use lb_tests::{
    agent::{Agent, bin},
    ha::{
        EcmpTopology, KEEPALIVED_EXAMPLE, Keepalived, PatientConns, VrrpNode, VrrpTopology,
        active_conns, active_total, assert_all_continued, conn_entries, echo_servers,
        keepalived_config, summarize, time_until, unique_vrid,
    },
    netns::{Host, Netns, TcpLineClient},
    traffic::{NewConnReport, NewConns},
};
use lb_userspace::{
    control::{Request, Response, SyncInfo, request},
    dataplane::Dataplane,
    model::{Protocol, RealKey, ServiceKey},
    sync::{
        channel::key_of_secret,
        wire::{Header, Kind, Record, SyncedConn, encode},
    },
};

/// The wlc service (RabbitMQ's AMQP port in the production guide).
const PORT: u16 = 5672;
/// A persistent wlc service (the guide's management port, persistence_timeout 50).
const STICKY_PORT: u16 = 15672;
/// Long-lived connections per service.
const CONNS: usize = 200;
const SYNC_PORT: u16 = 8849;
const GROUP_ID: u32 = 42;
const SECRET: &str = "the directors' shared secret, at least 16 bytes";

/// The two scenarios each build six namespaces and carry 400 connections: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// How the directors reach each other.
enum Reach {
    /// By unicast to the other director's address.
    Peer(Ipv4Addr),
    /// By IPVS's multicast group on the LAN.
    Group,
}

/// One director's configuration.
fn agent_config(vip: Ipv4Addr, reals: &[Host], reach: Reach, key_file: &str) -> String {
    let reach = match reach {
        Reach::Peer(ip) => format!("peers: [{ip}]"),
        Reach::Group => "group: 224.0.0.81".into(),
    };
    let mut y = format!(
        "interface: eth0\nxdp_mode: driver\nmanage_vip: false\nlimits: {{ max_services: 8, \
         max_reals: 64, conn_entries: 65536, persist_entries: 4096 }}\n\
         sync:\n  id: {GROUP_ID}\n  key_file: {key_file}\n  port: {SYNC_PORT}\n  \
         {reach}\n  startup_wait: 3\nvirtual_servers:\n"
    );
    for (port, extra) in [(PORT, ""), (STICKY_PORT, "    persistence_timeout: 50\n")] {
        y += &format!(
            "  - vip: {vip}\n    port: {port}\n    protocol: tcp\n    lb_algo: wlc\n    \
             lb_kind: dr\n{extra}    real_servers:\n"
        );
        for real in reals {
            y += &format!("      - {{ ip: {}, weight: 1 }}\n", real.ip);
        }
    }
    y
}

/// The key file, in a scratch directory removed on drop.
struct KeyFile(PathBuf);

impl KeyFile {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lb-sync-{tag}-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("scratch directory");
        let path = dir.join("sync.key");
        fs::write(&path, format!("{SECRET}\n")).expect("key file");
        Self(path)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// The agent's director-sync state.
fn sync_info(agent: &Agent) -> SyncInfo {
    match request(&agent.socket(), &Request::Snapshot { conns: false }) {
        Ok(Response::Snapshot(s)) => *s.sync.expect("sync is configured"),
        other => {
            let log = agent.log_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "snapshot: {other:?}; the agent's log ends:\n{}",
                tail.join("\n")
            )
        }
    }
}

/// Opens `n` connections one at a time and, for each, measures how long after its first
/// exchange the peer director's table lists it; the connections stay open until the
/// returned clients are dropped.
fn sync_delays(
    client: &Netns,
    service: SocketAddr,
    peer: &Agent,
    n: usize,
) -> (Vec<Duration>, Vec<TcpLineClient>) {
    let mut delays = Vec::new();
    let mut clients = Vec::new();
    for i in 0..n {
        let mut c = TcpLineClient::connect(client, service, Duration::from_secs(5)).unwrap();
        c.request(&format!("timed {i}")).unwrap();
        let port = c.stream().local_addr().unwrap().port();
        let seen = time_until(Duration::from_secs(2), || {
            conn_entries(peer).iter().any(|e| {
                e.virtual_addr == service && e.source.port() == port && e.state == "ESTABLISHED"
            })
        })
        .unwrap_or_else(|| panic!("connection {i} never reached the peer"));
        delays.push(seen);
        clients.push(c);
    }
    (delays, clients)
}

/// Waits until every connection of `groups` has exchanged after `since` (or broken).
#[track_caller]
fn wait_exchanged(groups: &[&PatientConns], since: Instant, what: &str) {
    for g in groups {
        assert!(
            g.wait_all_exchanged_since(since, Duration::from_secs(30)),
            "some connections never exchanged after {what}"
        );
    }
}

/// Kills a director as a crash or power loss would: its link down first (nothing it does
/// afterwards reaches the wire), then the agent SIGKILLed, its program detached and its maps
/// gone, as after a reboot.
fn crash(agent: &mut Agent, host: &Host) {
    host.ns.ip(["link", "set", "eth0", "down"]).unwrap();
    agent.kill9().unwrap();
    Dataplane::remove_pins(&agent.pins()).unwrap();
}

/// Brings a crashed director back: link up, a fresh agent that asks its peer for its flows
/// before it serves.
fn restore(agent: &mut Agent, host: &Host, starts: usize) {
    host.ns.ip(["link", "set", "eth0", "up"]).unwrap();
    agent.spawn().unwrap();
    agent
        .wait_for_log_count("serving", starts, Duration::from_secs(30))
        .unwrap();
}

/// Sends `datagram` to `to` from a socket in `ns` (another host on the LAN).
fn send_from(ns: &Netns, to: SocketAddr, datagram: &[u8]) {
    let socket = ns
        .try_enter(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .unwrap()
        .unwrap();
    socket.send_to(datagram, to).unwrap();
}

/// An intruder on the LAN tries to move a live flow to another real: with a made-up key, as
/// another director group, and by replaying a datagram; every attempt is rejected and
/// counted, and the flow stays where it is.
fn intruder_is_refused(lan_host: &Netns, director: &Agent, director_ip: Ipv4Addr, vip: Ipv4Addr) {
    let service: SocketAddr = (vip, PORT).into();
    let entry = conn_entries(director)
        .into_iter()
        .find(|e| e.virtual_addr == service && e.state == "ESTABLISHED")
        .expect("a live flow");
    let other_real = active_conns(director, service)
        .keys()
        .map(|r| r.parse::<SocketAddr>().unwrap())
        .find(|r| *r != entry.destination)
        .expect("another real");
    let steer = Record::Conn(SyncedConn {
        service: ServiceKey {
            vip: vip.into(),
            port: PORT,
            proto: Protocol::Tcp,
        },
        client: entry.source,
        real: RealKey {
            addr: other_real.ip(),
            port: other_real.port(),
        },
        state: ConnState::Established,
        idle: 0,
    });
    let to: SocketAddr = (director_ip, SYNC_PORT).into();
    let header = |instance: u64, sequence: u64| Header {
        kind: Kind::Records,
        instance,
        sender: 0x5eed,
        sequence,
    };
    let before = sync_info(director);
    let wrong_key = key_of_secret(b"a guess at the directors' secret").unwrap();
    let right_key = key_of_secret(SECRET.as_bytes()).unwrap();
    send_from(
        lan_host,
        to,
        &encode(header(GROUP_ID.into(), 1), &[steer], &wrong_key)[0],
    );
    send_from(
        lan_host,
        to,
        &encode(header(GROUP_ID as u64 + 1, 2), &[steer], &right_key)[0],
    );
    send_from(lan_host, to, b"LBSY garbage that is not a datagram");
    // A datagram captured from the group, harmless in itself, sent twice: the copy is
    // refused. (A captured flow record would only say where a flow already is.)
    let request = encode(
        Header {
            kind: Kind::StateEnd,
            ..header(GROUP_ID.into(), 3)
        },
        &[],
        &right_key,
    );
    send_from(lan_host, to, &request[0]);
    send_from(lan_host, to, &request[0]);
    let counted = time_until(Duration::from_secs(3), || {
        let now = sync_info(director);
        now.rejected_auth > before.rejected_auth
            && now.rejected_instance > before.rejected_instance
            && now.rejected_malformed > before.rejected_malformed
            && now.rejected_replay > before.rejected_replay
    });
    let after = sync_info(director);
    assert!(
        counted.is_some(),
        "not all rejected: {before:?} -> {after:?}"
    );
    assert_eq!(
        (
            after.rejected_auth - before.rejected_auth,
            after.rejected_instance - before.rejected_instance,
            after.rejected_malformed - before.rejected_malformed,
            after.rejected_replay - before.rejected_replay,
        ),
        (1, 1, 1, 1)
    );
    assert!(after.last_error.is_some());
    let now = conn_entries(director)
        .into_iter()
        .find(|e| e.source == entry.source && e.virtual_addr == service)
        .expect("the flow's entry");
    assert_eq!(
        now.destination, entry.destination,
        "a forged record moved a flow"
    );
}

/// Failures of the new-connection stream, as text.
fn failures(new: &NewConnReport) -> Vec<String> {
    new.failures
        .iter()
        .map(|(t, e)| format!("{:.2} s: {e}", t.as_secs_f64()))
        .collect()
}

#[test]
fn vrrp_failover_and_return_break_no_least_connection_flow() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let topo = VrrpTopology::new(74, 3).expect("topology");
    let _servers = echo_servers(&topo.reals, topo.vip, &[PORT, STICKY_PORT]);
    let key = KeyFile::new("vrrp");
    let yaml = |i: usize| {
        let peer = Reach::Peer(topo.directors[1 - i].ip);
        agent_config(topo.vip, &topo.reals, peer, &key.path())
    };
    let mut agents = [
        Agent::start(&topo.directors[0].ns, &yaml(0)).expect("agent on dir1"),
        Agent::start(&topo.directors[1].ns, &yaml(1)).expect("agent on dir2"),
    ];
    let service: SocketAddr = (topo.vip, PORT).into();
    let sticky: SocketAddr = (topo.vip, STICKY_PORT).into();

    let example = fs::read_to_string(KEEPALIVED_EXAMPLE).expect("keepalived example");
    let vrid = unique_vrid();
    let config = |i: usize, agent: &Agent| {
        let node = VrrpNode {
            router_id: format!("dir{}", i + 1),
            state: ["MASTER", "BACKUP"][i],
            priority: [100, 90][i],
            virtual_router_id: vrid,
            vip: topo.vip,
            // exec: lbadm
            track_script: format!(
                "{} --socket {} -L -n",
                bin("lbadm").display(),
                agent.socket().display()
            ),
        };
        keepalived_config(&example, &node).expect("keepalived configuration")
    };
    let mut master =
        Keepalived::start(&topo.directors[0].ns, &config(0, &agents[0])).expect("keepalived 1");
    let backup =
        Keepalived::start(&topo.directors[1].ns, &config(1, &agents[1])).expect("keepalived 2");
    master
        .wait_for_log("Entering MASTER STATE", Duration::from_secs(15))
        .unwrap();
    backup
        .wait_for_log("Entering BACKUP STATE", Duration::from_secs(15))
        .unwrap();
    time_until(Duration::from_secs(5), || topo.holds_vip(0)).expect("the master took the VIP");

    // How fast a confirmed flow reaches the backup.
    let (delays, timed) = sync_delays(&topo.client.ns, service, &agents[1], 20);
    let worst = delays.iter().max().copied().unwrap_or_default();
    drop(timed);

    let period = Duration::from_millis(300);
    let timeout = Duration::from_secs(20);
    let long = PatientConns::start(&topo.client.ns, service, CONNS, period, timeout)
        .expect("long-lived wlc connections");
    let persistent = PatientConns::start(&topo.client.ns, sticky, CONNS, period, timeout)
        .expect("long-lived persistent connections");
    // The backup holds every flow the master placed, on the same reals.
    let synced = time_until(Duration::from_secs(5), || {
        active_total(&agents[1], service) == CONNS as u64
            && active_total(&agents[1], sticky) == CONNS as u64
    });
    assert!(
        synced.is_some(),
        "backup: {:?} {:?}",
        active_conns(&agents[1], service),
        active_conns(&agents[1], sticky)
    );
    assert_eq!(
        active_conns(&agents[1], service),
        active_conns(&agents[0], service)
    );
    assert_eq!(
        active_conns(&agents[1], sticky),
        active_conns(&agents[0], sticky)
    );
    intruder_is_refused(&topo.client.ns, &agents[1], topo.directors[1].ip, topo.vip);
    // What an operator sees on the backup.
    let daemon = agents[1].lbadm_ok(&["-L", "-n", "--daemon"]);
    assert!(
        daemon.starts_with(&format!(
            "master sync daemon (mcast=eth0, syncid={GROUP_ID}, maxlen=1452, port={SYNC_PORT}"
        )) && daemon.contains(&format!("peers: {}", topo.directors[0].ip))
            && daemon.contains("rejected: auth 1, replay 1, other group 1, malformed 1"),
        "{daemon}"
    );
    println!("{daemon}");

    // New connections throughout, patient enough to ride out the takeover by retransmitting
    // their SYN.
    let new = NewConns::start_with_timeout(
        &topo.client.ns,
        service,
        Duration::from_millis(20),
        Duration::from_secs(15),
    )
    .unwrap();
    thread::sleep(Duration::from_millis(1000));

    // The master dies.
    let killed = Instant::now();
    crash(&mut agents[0], &topo.directors[0]);
    master.kill9().unwrap();
    time_until(Duration::from_secs(10), || topo.holds_vip(1)).expect("the backup took the VIP");
    wait_exchanged(&[&long, &persistent], killed, "the kill");
    let (_, gap_failover) = summarize(&long.outcomes());

    // It comes back from scratch, takes the backup's flows, then the VIP.
    restore(&mut agents[0], &topo.directors[0], 2);
    let resync = sync_info(&agents[0]).resync;
    let restored = (
        active_conns(&agents[0], service),
        active_conns(&agents[0], sticky),
    );
    // (The stream of new connections may add one or two in flight.)
    let held = (
        restored.0.values().sum::<u64>(),
        restored.1.values().sum::<u64>(),
    );
    assert!(
        held.0 >= CONNS as u64 && held.1 == CONNS as u64,
        "the restored master did not get the flows before serving ({resync}): {restored:?}"
    );
    let returned = Instant::now();
    let _master =
        Keepalived::start(&topo.directors[0].ns, &config(0, &agents[0])).expect("keepalived 1");
    time_until(Duration::from_secs(15), || {
        topo.holds_vip(0) && !topo.holds_vip(1)
    })
    .expect("the old master took the VIP back");
    wait_exchanged(&[&long, &persistent], returned, "the return");
    thread::sleep(Duration::from_millis(1000));
    let new = new.finish();
    let long = long.finish();
    let persistent = persistent.finish();
    let (_, gap) = summarize(&long);
    let info = sync_info(&agents[0]);
    println!(
        "VRRP with sync: a confirmed flow reached the backup in at most {:.0} ms (20 timed, \
         polled every 10 ms); master killed and restored ({resync}); {} + {} long-lived \
         connections, longest pause {:.2} s (failover {:.2} s); {} new connections, {} failed; \
         restored master sent {} records in {} datagrams, lag max {:.1} ms",
        worst.as_secs_f64() * 1000.0,
        CONNS,
        CONNS,
        gap.as_secs_f64(),
        gap_failover.as_secs_f64(),
        new.ok(),
        new.failures.len(),
        info.sent_records,
        info.sent_datagrams,
        info.lag_ms_max
    );
    assert_all_continued("wlc service", &long, returned);
    assert_all_continued("persistent wlc service", &persistent, returned);
    assert!(new.failures.is_empty(), "{:#?}", failures(&new));
    assert!(worst < Duration::from_millis(100), "sync delay {worst:?}");
}

#[test]
fn ecmp_directors_share_flows_both_ways() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let topo = EcmpTopology::new(75, 3).expect("topology");
    let _servers = echo_servers(&topo.reals, topo.vip, &[PORT, STICKY_PORT]);
    let key = KeyFile::new("ecmp");
    // Here the directors find each other by multicast, as IPVS's sync daemons do.
    let yaml = |_: usize| agent_config(topo.vip, &topo.reals, Reach::Group, &key.path());
    let mut agents = [
        Agent::start(&topo.directors[0].ns, &yaml(0)).expect("agent on dir1"),
        Agent::start(&topo.directors[1].ns, &yaml(1)).expect("agent on dir2"),
    ];
    let service: SocketAddr = (topo.vip, PORT).into();
    let sticky: SocketAddr = (topo.vip, STICKY_PORT).into();
    let period = Duration::from_millis(300);
    let timeout = Duration::from_secs(20);
    let long = PatientConns::start(&topo.client, service, CONNS, period, timeout)
        .expect("long-lived wlc connections");
    let persistent = PatientConns::start(&topo.client, sticky, CONNS, period, timeout)
        .expect("long-lived persistent connections");
    // Each director places the flows the router sends it and learns the other's.
    let both_hold_all = time_until(Duration::from_secs(5), || {
        agents.iter().all(|a| {
            active_total(a, service) == CONNS as u64 && active_total(a, sticky) == CONNS as u64
        })
    });
    assert!(
        both_hold_all.is_some(),
        "{:?} {:?}",
        active_conns(&agents[0], service),
        active_conns(&agents[1], service)
    );
    let placed_by = |i: usize| sync_info(&agents[i]).stored;
    assert!(
        placed_by(0) >= 40 && placed_by(1) >= 40,
        "the router did not spread the flows: {} and {} learnt",
        placed_by(0),
        placed_by(1)
    );

    let new = NewConns::start_with_timeout(
        &topo.client,
        service,
        Duration::from_millis(20),
        Duration::from_secs(15),
    )
    .unwrap();
    thread::sleep(Duration::from_millis(1000));

    // Director 1 dies; the router loses it (as when its BGP session drops).
    let killed = Instant::now();
    crash(&mut agents[0], &topo.directors[0]);
    topo.route_vip_via(&[1]).unwrap();
    wait_exchanged(&[&long, &persistent], killed, "the kill");

    // It comes back from scratch and the route takes it back: the router rehashes about half
    // of the flows onto it, which it must continue on the reals director 2 used.
    restore(&mut agents[0], &topo.directors[0], 2);
    let resync = sync_info(&agents[0]).resync;
    let returned = Instant::now();
    topo.route_vip_via(&[0, 1]).unwrap();
    wait_exchanged(&[&long, &persistent], returned, "the return");
    thread::sleep(Duration::from_millis(1500));
    let new = new.finish();
    let long = long.finish();
    let persistent = persistent.finish();
    let (_, gap) = summarize(&long);
    println!(
        "ECMP with sync: {} + {} long-lived connections across a director's death and return \
         ({resync}), longest pause {:.2} s; {} new connections, {} failed",
        CONNS,
        CONNS,
        gap.as_secs_f64(),
        new.ok(),
        new.failures.len()
    );
    assert_all_continued("wlc service", &long, returned);
    assert_all_continued("persistent wlc service", &persistent, returned);
    assert!(new.failures.is_empty(), "{:#?}", failures(&new));
}
