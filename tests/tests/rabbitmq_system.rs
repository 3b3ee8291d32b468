//! The deployment this balancer replaces LVS + keepalived for, end to end: real RabbitMQ
//! (Debian's rabbitmq-server) on three real servers behind the VIP, the real `lb-agent` with
//! the shape of `configs/rabbitmq.yaml`, and real clients: pika publishing and consuming on
//! 5672 and curl asking the management API on 15672, all through the VIP. Then RabbitMQ is
//! stopped on one real, as an operator would (`rabbitmqctl stop`). Needs root and what
//! `cargo xtask test` installs (rabbitmq-server, python3-pika, curl).
//!
//! The configuration keeps production's `persistence_timeout 50` on both services, with short
//! check timings (delay_loop 1, connect_timeout 1, retry 1, delay_before_retry 1: a dead
//! node gets no new connection 4 s after it stops answering). AMQP is checked as
//! `configs/rabbitmq.yaml` does, by an `amqp_check` that logs in as the monitoring user, plus
//! `alarm: true`: the test's nodes are standalone (not clustered), the case `alarm` is for. Persistence pins a client
//! address to one node, so the test uses six client hosts (six addresses): they spread over
//! the nodes, and each client's connections must all land on its node. Stopping the node that
//! the first client is pinned to then tests what matters in production with persistence: the
//! data plane ignores a template whose real is down, so the pinned clients' reconnections and
//! new connections land on live nodes (and stick to the new one), while the clients pinned to
//! live nodes keep their node and their open connections.
//!
//! The second test gives one node a memory alarm (`rabbitmqctl set_vm_memory_high_watermark
//! 0.0001`): the node still accepts connections and logins but blocks publishers, and the
//! alarm check's publish sees it. The node leaves new traffic within the same bound, its blocked
//! clients move to live nodes, the other clients notice nothing, and the check's own blocked
//! connections do not pile up on the node; the watermark back at 0.4, the node takes new
//! connections again. Both tests build the same network: they run one at a time.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use std::{path::Path, sync::Mutex};

use lb_tests::{
    agent::Agent,
    netns::{Host, Netns},
    rabbitmq::{
        AMQP_PORT, AmqpHold, MANAGEMENT_PORT, MONITOR_PASSWORD, MONITOR_USER, RabbitNode, Scratch,
        management_get, require_installed, run_cycles, tcp_accepts,
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

/// The two tests build the same network and run RabbitMQ three times over: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// configs/rabbitmq.yaml's services on the test network, with short check timings; the
/// amqp_check reads the monitoring user's password from `password_file`, and publishes
/// (`alarm: true`).
fn config(password_file: &Path) -> String {
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
            let timing = format!(
                "connect_port: {port}, connect_timeout: 1, retry: 1, delay_before_retry: 1"
            );
            let check = if port == AMQP_PORT {
                format!(
                    "amqp_check: {{ {timing}, login: true, user: {MONITOR_USER}, \
                     password_file: {}, alarm: true }}",
                    password_file.display()
                )
            } else {
                format!("tcp_check: {{ {timing} }}")
            };
            y += &format!("      - {{ ip: 10.{NET}.0.{last}, weight: 1, {check} }}\n");
        }
    }
    y
}

/// What an up real's check shows in `lbadm --health`: the AMQP check's publish went through,
/// the management port's half-open probe through the VIP was answered.
fn passed(service: &str) -> &'static str {
    if service.ends_with(&format!(":{AMQP_PORT}")) {
        "no alarm"
    } else {
        "SYN-ACK"
    }
}

/// The network with six client hosts, three RabbitMQ nodes with the monitoring user, and the
/// agent serving with every real passed. Fields drop in order: nodes, agent, files, hosts.
struct Rig {
    nodes: Vec<RabbitNode>,
    agent: Agent,
    _scratch: Scratch,
    extra: Vec<Host>,
    topo: DrTopology,
}

impl Rig {
    fn new(t0: Instant) -> Self {
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

        // Three standalone nodes, started together, each with the monitoring user.
        let scratch = Scratch::new("rabbitmq").unwrap();
        let mut nodes: Vec<RabbitNode> = topo
            .reals
            .iter()
            .enumerate()
            .map(|(i, r)| {
                RabbitNode::start(&r.ns, scratch.path(), &format!("real{}", i + 1)).unwrap()
            })
            .collect();
        for node in &mut nodes {
            node.wait_ready(Duration::from_secs(120)).unwrap();
        }
        for node in &nodes {
            node.add_monitor_user().unwrap();
        }
        phase("3 RabbitMQ nodes ready, with the monitoring user");
        // The password file, as an operator writes it (a final line break).
        let password_file = scratch.path().join("rabbitmq-health.password");
        std::fs::write(&password_file, format!("{MONITOR_PASSWORD}\n")).unwrap();

        let agent = Agent::start(&topo.director.ns, &config(&password_file)).unwrap();
        phase("agent serving");
        wait_until(Duration::from_secs(5), "every real passed a check", || {
            let h = health(&agent);
            h.len() == 6
                && h.iter()
                    .all(|r| r.state == "up" && r.line.contains(passed(&r.service)))
        });
        Self {
            nodes,
            agent,
            _scratch: scratch,
            extra,
            topo,
        }
    }

    /// The client hosts' namespaces, the topology's client first.
    fn clients(&self) -> Vec<&Netns> {
        client_namespaces(&self.topo, &self.extra)
    }

    /// Node tags (`real1`, ...), in the reals' order.
    fn tags(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.tag.clone()).collect()
    }

    /// Long-lived connections from every client, each client's all on one node (persistence);
    /// returns them and each client's node.
    fn hold(&self) -> (Vec<AmqpHold>, Vec<String>) {
        let tags = self.tags();
        let holds: Vec<AmqpHold> = self
            .clients()
            .iter()
            .map(|ns| AmqpHold::start(ns, self.topo.vip, HELD, Duration::from_millis(200)).unwrap())
            .collect();
        let pinned: Vec<String> = holds
            .iter()
            .enumerate()
            .map(|(c, h)| {
                let on = h.initial_nodes();
                assert!(
                    on.len() == HELD && on.iter().all(|n| *n == on[0] && tags.contains(n)),
                    "client{}'s connections are on {on:?}: persistence pins a client to one node",
                    c + 1
                );
                on[0].clone()
            })
            .collect();
        (holds, pinned)
    }

    /// Stops the nodes together; dropping the rig then reaps them, the agent and the network.
    fn finish(mut self) {
        for node in &mut self.nodes {
            node.signal_stop();
        }
    }
}

/// The client hosts' namespaces: the topology's client, then the `extra` ones.
fn client_namespaces<'a>(topo: &'a DrTopology, extra: &'a [Host]) -> Vec<&'a Netns> {
    std::iter::once(&topo.client.ns)
        .chain(extra.iter().map(|h| &h.ns))
        .collect()
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
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let phase = |what: &str| println!("[{:5.1} s] {what}", t0.elapsed().as_secs_f64());
    let mut rig = Rig::new(t0);
    let vip = rig.topo.vip;
    let tags = rig.tags();
    let node_of_tag = |tag: &str| tags.iter().position(|t| t == tag);
    let Rig {
        nodes,
        agent,
        topo,
        extra,
        ..
    } = &mut rig;
    let clients = client_namespaces(topo, extra);

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
    let states = health(agent);
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
    rig.finish();
    phase("cleaned up");
}

#[test]
fn a_node_with_a_memory_alarm_leaves_new_traffic() {
    require_installed().unwrap();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let phase = |what: &str| println!("[{:5.1} s] {what}", t0.elapsed().as_secs_f64());
    let rig = Rig::new(t0);
    let vip = rig.topo.vip;
    let tags = rig.tags();
    let clients = rig.clients();
    let agent = &rig.agent;
    let (holds, pinned) = rig.hold();
    phase(&format!("long-lived connections open on {pinned:?}"));

    // The alarm: on the node the first client is pinned to.
    let v = tags.iter().position(|t| *t == pinned[0]).unwrap();
    let victim = tags[v].clone();
    let victim_ip = rig.topo.reals[v].ip;
    let node = &rig.nodes[v];
    assert_eq!(node.alarms().unwrap(), Vec::<String>::new());
    let issued = Instant::now();
    node.set_memory_watermark("0.0001").unwrap();
    let alarm_set = Instant::now();
    let alarms = node.alarms().unwrap();
    assert!(
        alarms.iter().any(|a| a.contains("memory")),
        "the node has a memory alarm: {alarms:?}"
    );
    // Still accepting connections: a tcp_check would not see it.
    assert!(tcp_accepts(
        node.ns(),
        (Ipv4Addr::LOCALHOST, AMQP_PORT),
        Duration::from_secs(1)
    ));
    let failed = format!("real {victim_ip}:{AMQP_PORT} of TCP {vip}:{AMQP_PORT} failed its check");
    agent
        .wait_for_log(&failed, BOUND + Duration::from_secs(1))
        .unwrap();
    let detected = alarm_set.elapsed();
    assert!(
        detected <= BOUND,
        "marked down {detected:?} after the alarm"
    );
    let log = agent.log_text();
    assert!(
        log.contains(&format!("{failed}: blocked: low on memory")),
        "the reason is RabbitMQ's: {log}"
    );

    // lbadm: the victim's AMQP real down with the reason, its management port (tcp_check) and
    // the other nodes up; the plain listing leaves the victim's AMQP real out.
    let victim_amqp = format!("{victim_ip}:{AMQP_PORT}");
    for r in health(agent) {
        if r.real == victim_amqp {
            assert_eq!(r.state, "down", "{r:?}");
            let tail: Vec<&str> = r.line.split_whitespace().skip(10).collect();
            assert_eq!(tail, ["failed", "blocked:", "low", "on", "memory"], "{r:?}");
        } else {
            assert_eq!(r.state, "up", "{r:?}");
        }
    }
    let plain = agent.lbadm_ok(&["-L", "-n"]);
    assert!(!plain.contains(&victim_amqp), "{plain}");
    phase(&format!(
        "{victim} down {:.1} s after the alarm",
        detected.as_secs_f64()
    ));

    // The victim's clients were blocked: they reconnect to live nodes; the others notice
    // nothing.
    wait_until(
        Duration::from_secs(20),
        "the blocked node's connections reconnected elsewhere",
        || {
            holds.iter().zip(&pinned).all(|(h, on)| {
                let r = reconnections(h);
                if *on == victim {
                    r.len() == HELD
                        && r.iter()
                            .all(|(_, node)| node.as_ref().is_some_and(|n| *n != victim))
                } else {
                    r.is_empty()
                }
            })
        },
    );
    // New connections: every one works, none on the node in alarm.
    let cycles = run_cycles(&clients, vip, 3, 20).unwrap();
    for (c, cycles) in cycles.iter().enumerate() {
        for cycle in cycles {
            assert!(
                cycle.ok,
                "client{} during the alarm: {:?}",
                c + 1,
                cycle.raw
            );
            assert_ne!(
                cycle.node.as_deref(),
                Some(victim.as_str()),
                "client{}",
                c + 1
            );
        }
    }
    phase("during the alarm: blocked clients moved, 18 new connections on live nodes");

    // The checks keep failing once a second; RabbitMQ does not read their blocked connections,
    // so only their heartbeat lets it drop them: few are left on the node at any time.
    thread::sleep(Duration::from_secs(5));
    let lingering = node.connection_states(MONITOR_USER).unwrap();
    assert!(
        lingering.len() <= 3,
        "the checks' blocked connections pile up on the node: {lingering:?}"
    );

    // The alarm clears: the node passes its check and is listed again.
    node.set_memory_watermark("0.4").unwrap();
    let cleared = Instant::now();
    let passed_log =
        format!("real {victim_ip}:{AMQP_PORT} of TCP {vip}:{AMQP_PORT} passed its check");
    agent
        .wait_for_log(&passed_log, Duration::from_secs(5))
        .unwrap();
    let back = cleared.elapsed();
    assert_eq!(node.alarms().unwrap(), Vec::<String>::new());
    wait_until(Duration::from_secs(3), "every real up again", || {
        let h = health(agent);
        h.len() == 6
            && h.iter()
                .all(|r| r.state == "up" && r.line.contains(passed(&r.service)))
    });
    assert!(agent.lbadm_ok(&["-L", "-n"]).contains(&victim_amqp));
    // The checks' connections are gone: none is left blocked.
    wait_until(
        Duration::from_secs(10),
        "no check connection left on the node",
        || {
            node.connection_states(MONITOR_USER)
                .is_ok_and(|c| c.iter().all(|s| s != "blocked"))
        },
    );
    phase(&format!(
        "alarm cleared: {victim} up again {:.1} s later",
        back.as_secs_f64()
    ));

    // The clients of the other nodes kept their connections all along.
    for (c, h) in holds.into_iter().enumerate() {
        let summary = h.finish().unwrap();
        let conns = summary["conns"].as_array().cloned().unwrap_or_default();
        assert_eq!(conns.len(), HELD, "{summary}");
        for conn in &conns {
            assert_eq!(conn["connected"], true, "client{}: {conn}", c + 1);
            if pinned[c] != victim {
                let nodes: Vec<&str> = conn["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                assert_eq!(nodes, [pinned[c].as_str()], "client{}: {conn}", c + 1);
                assert_eq!(conn["errors"], serde_json::json!([]), "{conn}");
            }
        }
    }
    println!(
        "memory alarm on {victim}: `rabbitmqctl set_vm_memory_high_watermark 0.0001` took \
         {:.1} s; the node was marked down {:.2} s after it returned (bound {BOUND:?}), with \
         {} check connection(s) left on it 5 s later; back up {:.2} s after the watermark went \
         back to 0.4",
        (alarm_set - issued).as_secs_f64(),
        detected.as_secs_f64(),
        lingering.len(),
        back.as_secs_f64(),
    );
    rig.finish();
    phase("cleaned up");
}
