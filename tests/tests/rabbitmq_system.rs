//! The deployment this balancer replaces LVS + keepalived for, end to end: real RabbitMQ
//! (Debian's rabbitmq-server) on three real servers behind the VIP, the real `lb-agent` with
//! the shape of `configs/rabbitmq.yaml`, and real clients: pika publishing and consuming on
//! 5672 and curl asking the management API on 15672, all through the VIP. Then RabbitMQ is
//! stopped on one real, as an operator would (`rabbitmqctl stop`). Needs root and what
//! `cargo xtask test` installs (rabbitmq-server, python3-pika, curl).
//!
//! The configuration keeps production's `persistence_timeout 50` on both services, with short
//! check timings (delay_loop 1, connect_timeout 1, retry 1, delay_before_retry 1: a dead
//! node gets no new connection 4 s after it stops answering). Persistence pins a client
//! address to one node, so the test uses six client hosts (six addresses): they spread over
//! the nodes, and each client's connections must all land on its node. Stopping the node that
//! the first client is pinned to then tests what matters in production with persistence: the
//! data plane ignores a template whose real is down, so the pinned clients' reconnections and
//! new connections land on live nodes (and stick to the new one), while the clients pinned to
//! live nodes keep their node and their open connections.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::Agent,
    netns::{Host, Netns},
    rabbitmq::{
        AMQP_PORT, AmqpHold, MANAGEMENT_PORT, RabbitNode, Scratch, management_get,
        require_installed, run_cycles, tcp_accepts,
    },
    topo::DrTopology,
};
use serde_json::Value;

const NET: u8 = 74;
/// delay_loop 1 + connect_timeout 1 x (1 + retry 1) + delay_before_retry 1 x 1.
const BOUND: Duration = Duration::from_secs(4);
/// Client hosts (client addresses).
const CLIENTS: usize = 6;
/// Long-lived AMQP connections per client.
const HELD: usize = 3;

/// configs/rabbitmq.yaml's services on the test network, with short check timings.
fn config() -> String {
    let mut y = String::from(
        "interface: eth0\nxdp_mode: driver\nlimits: { max_services: 8, max_reals: 64, \
         conn_entries: 65536, persist_entries: 1024 }\nmanage_vip: false\nvirtual_servers:\n",
    );
    for port in [AMQP_PORT, MANAGEMENT_PORT] {
        y += &format!(
            "  - vip: 10.{NET}.0.100\n    port: {port}\n    protocol: tcp\n    lb_algo: wrr\n    \
             lb_kind: dr\n    persistence_timeout: 50\n    delay_loop: 1\n    real_servers:\n"
        );
        for last in 11..=13 {
            y += &format!(
                "      - {{ ip: 10.{NET}.0.{last}, weight: 1, tcp_check: {{ connect_port: {port}, \
                 connect_timeout: 1, retry: 1, delay_before_retry: 1 }} }}\n"
            );
        }
    }
    y
}

/// One real's line of `lbadm -L -n --health`.
#[derive(Debug)]
struct RealHealth {
    service: String,
    real: String,
    state: String,
    line: String,
}

fn health(agent: &Agent) -> Vec<RealHealth> {
    let text = agent.lbadm_ok(&["-L", "-n", "--health"]);
    let mut service = String::new();
    let mut reals = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("TCP ") {
            service = fields.get(1).copied().unwrap_or_default().to_owned();
        } else if line.starts_with("  -> ") && fields.len() > 7 && fields[1] != "RemoteAddress:Port"
        {
            reals.push(RealHealth {
                service: service.clone(),
                real: fields[1].to_owned(),
                state: fields[7].to_owned(),
                line: line.to_owned(),
            });
        }
    }
    reals
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// For each connection of a hold client that broke, the node of its latest reconnection, or
/// None while it is still broken.
fn reconnections(hold: &AmqpHold) -> Vec<(u64, Option<String>)> {
    let mut state: Vec<(u64, Option<String>)> = Vec::new();
    for e in hold.events() {
        let Some(conn) = e["conn"].as_u64() else {
            continue;
        };
        let node = match e["event"].as_str() {
            Some("broken") => None,
            Some("reconnected") => e["node"].as_str().map(str::to_owned),
            _ => continue,
        };
        match state.iter_mut().find(|(c, _)| *c == conn) {
            Some(slot) => slot.1 = node,
            None => state.push((conn, node)),
        }
    }
    state
}

#[test]
fn rabbitmq_through_the_vip_survives_a_stopped_node() {
    require_installed().unwrap();
    let t0 = Instant::now();
    let phase = |what: &str| println!("[{:5.1} s] {what}", t0.elapsed().as_secs_f64());
    let topo = DrTopology::new(NET, 3).expect("topology");
    let vip = topo.vip;
    let extra: Vec<Host> = (2..=CLIENTS)
        .map(|i| {
            let h = topo
                .lan
                .add_host(&format!("client{i}"), &format!("10.{NET}.0.{}/24", 19 + i))
                .unwrap();
            h.route_via(vip, topo.director.ip).unwrap();
            h
        })
        .collect();
    let clients: Vec<&Netns> = std::iter::once(&topo.client.ns)
        .chain(extra.iter().map(|h| &h.ns))
        .collect();

    // Three standalone nodes, started together.
    let scratch = Scratch::new("rabbitmq").unwrap();
    let mut nodes: Vec<RabbitNode> = topo
        .reals
        .iter()
        .enumerate()
        .map(|(i, r)| RabbitNode::start(&r.ns, scratch.path(), &format!("real{}", i + 1)).unwrap())
        .collect();
    for node in &mut nodes {
        node.wait_ready(Duration::from_secs(120)).unwrap();
    }
    phase("3 RabbitMQ nodes ready");
    let tags: Vec<String> = nodes.iter().map(|n| n.tag.clone()).collect();
    let node_of_tag = |tag: &str| tags.iter().position(|t| t == tag);

    let agent = Agent::start(&topo.director.ns, &config()).unwrap();
    phase("agent serving");
    wait_until(Duration::from_secs(5), "every real passed a check", || {
        let h = health(&agent);
        h.len() == 6
            && h.iter()
                .all(|r| r.state == "up" && r.line.contains("SYN-ACK"))
    });

    // Through the VIP: long-lived connections, then publish/consume cycles, from every client.
    let holds: Vec<AmqpHold> = clients
        .iter()
        .map(|ns| AmqpHold::start(ns, vip, HELD, Duration::from_millis(200)).unwrap())
        .collect();
    phase("long-lived connections open");
    let pinned: Vec<String> = holds
        .iter()
        .enumerate()
        .map(|(c, h)| {
            let on = h.initial_nodes();
            assert!(
                on.len() == HELD && on.iter().all(|n| *n == on[0] && node_of_tag(n).is_some()),
                "client{}'s connections are on {on:?}: persistence pins a client to one node",
                c + 1
            );
            on[0].clone()
        })
        .collect();
    let cycles = run_cycles(&clients, vip, 3, 20).unwrap();
    for (c, cycles) in cycles.iter().enumerate() {
        for cycle in cycles {
            assert!(cycle.ok, "client{}: {:?}", c + 1, cycle.raw);
            assert_eq!(
                cycle.node.as_deref(),
                Some(pinned[c].as_str()),
                "client{}'s new connections follow its persistence template",
                c + 1
            );
        }
    }
    let used: BTreeSet<&String> = pinned.iter().collect();
    assert!(
        used.len() >= 2,
        "the clients should spread over the nodes: {pinned:?}"
    );
    // The management API through the VIP, twice per client (a new connection each time,
    // pinned to one node too).
    let mgmt: Vec<String> = clients
        .iter()
        .map(|ns| {
            let answers: Vec<String> = (0..2)
                .map(|_| {
                    let (status, body) = management_get(ns, vip, "/api/overview").unwrap();
                    assert_eq!(status, 200, "{body}");
                    body["node"].as_str().unwrap_or("?").to_owned()
                })
                .collect();
            assert_eq!(answers[0], answers[1], "persistence on 15672");
            assert!(
                nodes.iter().any(|n| n.nodename == answers[0]),
                "{answers:?}"
            );
            answers[0].clone()
        })
        .collect();
    phase(&format!(
        "AMQP clients on {pinned:?}, management API answered by {mgmt:?}"
    ));

    // The drill: stop RabbitMQ on the node the first client is pinned to.
    let v = node_of_tag(&pinned[0]).unwrap();
    let victim = nodes[v].tag.clone();
    let victim_node = nodes[v].nodename.clone();
    let victim_ip = topo.reals[v].ip;
    let ctl = nodes[v].stop_in_background().unwrap();
    let stop_issued = Instant::now();
    let victim_ns = nodes[v].ns().clone_handle().unwrap();
    wait_until(
        Duration::from_secs(30),
        "the stopped node closes 5672",
        || {
            !tcp_accepts(
                &victim_ns,
                (Ipv4Addr::LOCALHOST, AMQP_PORT),
                Duration::from_millis(300),
            )
        },
    );
    let closed = Instant::now();
    agent
        .wait_for_log(
            &format!("real {victim_ip}:{AMQP_PORT} of TCP {vip}:{AMQP_PORT} failed its check"),
            BOUND + Duration::from_secs(1),
        )
        .unwrap();
    let detected = closed.elapsed();
    agent
        .wait_for_log(
            &format!(
                "real {victim_ip}:{MANAGEMENT_PORT} of TCP {vip}:{MANAGEMENT_PORT} failed its check"
            ),
            Duration::from_secs(15),
        )
        .unwrap();
    nodes[v].wait_stopped(ctl, Duration::from_secs(60)).unwrap();
    let stopped = stop_issued.elapsed();

    // lbadm shows it down on both services, the others up; the plain listing leaves it out.
    let states = health(&agent);
    assert_eq!(states.len(), 6, "{states:#?}");
    for r in &states {
        if r.real.starts_with(&format!("{victim_ip}:")) {
            assert_eq!(r.state, "down", "{r:?}");
            // Result says failed, Reason says why, each once, in their columns.
            let tail: Vec<&str> = r.line.split_whitespace().skip(10).collect();
            assert_eq!(tail, ["failed", "connect", "refused"], "{r:?}");
        } else {
            assert_eq!(r.state, "up", "{r:?}");
        }
    }
    assert!(states.iter().any(|r| r.service.ends_with(":15672")));
    let plain = agent.lbadm_ok(&["-L", "-n"]);
    assert!(!plain.contains(&format!("{victim_ip}:")), "{plain}");

    // The victim's clients saw their connections closed and reconnected to live nodes; the
    // other clients' connections never noticed.
    wait_until(
        Duration::from_secs(20),
        "the stopped node's connections reconnected",
        || {
            holds.iter().zip(&pinned).all(|(h, on)| {
                let r = reconnections(h);
                if *on == victim {
                    r.len() == HELD && r.iter().all(|(_, node)| node.is_some())
                } else {
                    r.is_empty()
                }
            })
        },
    );
    phase("drill: node stopped, down in lbadm, connections reconnected");
    let mut repinned = pinned.clone();
    let mut refused = 0;
    let mut slowest = 0.0f64;
    for (c, h) in holds.iter().enumerate() {
        refused += h.events_named("reconnect_failed").len();
        for e in h.events_named("reconnected") {
            slowest = slowest.max(e["after"].as_f64().unwrap_or_default());
        }
        if pinned[c] != victim {
            continue;
        }
        let now_on: BTreeSet<String> = reconnections(h)
            .into_iter()
            .filter_map(|(_, node)| node)
            .collect();
        assert_eq!(now_on.len(), 1, "client{}: {:?}", c + 1, h.events());
        let to = now_on.into_iter().next().unwrap();
        assert!(
            to != victim && node_of_tag(&to).is_some(),
            "client{}: {to}",
            c + 1
        );
        repinned[c] = to;
    }

    // New connections: 5 cycles from each client, 30 in all. Every one works and none reaches
    // the stopped node; clients of live nodes keep their node, the victim's stick to the new one.
    let cycles = run_cycles(&clients, vip, 5, 20).unwrap();
    let mut new_conns = 0;
    for (c, cycles) in cycles.iter().enumerate() {
        for cycle in cycles {
            assert!(cycle.ok, "client{} after the stop: {:?}", c + 1, cycle.raw);
            assert_eq!(
                cycle.node.as_deref(),
                Some(repinned[c].as_str()),
                "client{} after the stop",
                c + 1
            );
            new_conns += 1;
        }
    }
    assert_eq!(new_conns, CLIENTS * 5);
    for (c, ns) in clients.iter().enumerate() {
        let (status, body) = management_get(ns, vip, "/api/overview").unwrap();
        assert_eq!(status, 200, "client{}: {body}", c + 1);
        let node = body["node"].as_str().unwrap_or("?");
        assert_ne!(node, victim_node, "client{}", c + 1);
        if mgmt[c] != victim_node {
            assert_eq!(node, mgmt[c], "client{} keeps its management node", c + 1);
        }
    }

    phase("30 new connections and the management API after the stop");
    // The long-lived connections are all open and still exchanging.
    thread::sleep(Duration::from_secs(1));
    for (c, h) in holds.into_iter().enumerate() {
        let summary = h.finish().unwrap();
        let conns = summary["conns"].as_array().cloned().unwrap_or_default();
        assert_eq!(conns.len(), HELD, "{summary}");
        for conn in &conns {
            assert_eq!(conn["connected"], true, "client{}: {conn}", c + 1);
            assert!(
                conn["since_connect"].as_u64() > Some(2),
                "client{}: {conn}",
                c + 1
            );
            let nodes: Vec<&str> = conn["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if pinned[c] == victim {
                assert_eq!(nodes.last(), Some(&repinned[c].as_str()), "{conn}");
            } else {
                assert_eq!(nodes, [pinned[c].as_str()], "client{}: {conn}", c + 1);
                assert_eq!(conn["errors"], serde_json::json!([]), "{conn}");
                assert!(conn["exchanges"].as_u64() > Some(20), "{conn}");
            }
        }
    }
    println!(
        "stopped {victim} ({victim_node}): 5672 closed {:.1} s after `rabbitmqctl stop`, marked \
         down {:.1} s later (bound {BOUND:?}); stop done after {:.1} s; its clients' \
         connections reconnected at most {slowest:.1} s after they broke ({refused} refused \
         attempts before); {new_conns} new connections all on live nodes; clients now on \
         {repinned:?}",
        (closed - stop_issued).as_secs_f64(),
        detected.as_secs_f64(),
        stopped.as_secs_f64(),
    );

    phase("long-lived connections checked");
    // Stop the other nodes together; the guards reap them, their epmd and the directories.
    for node in &mut nodes {
        node.signal_stop();
    }
    drop(nodes);
    drop(agent);
    phase("cleaned up");
}
