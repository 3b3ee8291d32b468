//! System tests of `lb-agent` in network namespaces (client, director, three reals): reloads
//! under load, a rejected reload, `kill -9` and restart, a neighbour change, clean and
//! forwarding stops. The real `lb-agent` binary runs in the director's namespace. Needs root.

use std::{
    net::SocketAddr,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{Agent, bin},
    netns::{TcpEchoServer, tcp_request},
    topo::DrTopology,
    traffic::{LongLived, NewConns},
};

const PORT: u16 = 8080;
const PORT2: u16 = 8081;

/// A configuration for `services`: (port, [(real's last octet, weight)]).
fn config(net: u8, extra: &str, services: &[(u16, &[(u8, u32)])]) -> String {
    let mut y = format!(
        "interface: eth0\nxdp_mode: driver\n{extra}\nlimits: {{ max_services: 8, max_reals: 64, \
         conn_entries: 65536, persist_entries: 1024 }}\nvirtual_servers:\n"
    );
    for (port, reals) in services {
        y += &format!(
            "  - vip: 10.{net}.0.100\n    port: {port}\n    protocol: tcp\n    lb_algo: wrr\n    \
             lb_kind: dr\n    real_servers:\n"
        );
        for (last, weight) in *reals {
            y += &format!("      - {{ ip: 10.{net}.0.{last}, weight: {weight} }}\n");
        }
    }
    y
}

/// Echo servers on every real for both ports, tagged real1, real2, ...
fn echo_servers(topo: &DrTopology) -> Vec<TcpEchoServer> {
    let mut servers = Vec::new();
    for (i, real) in topo.reals.iter().enumerate() {
        for port in [PORT, PORT2] {
            let s =
                TcpEchoServer::start(&real.ns, (topo.vip, port).into(), &format!("real{}", i + 1))
                    .expect("echo server");
            servers.push(s);
        }
    }
    servers
}

fn vip(topo: &DrTopology, port: u16) -> SocketAddr {
    (topo.vip, port).into()
}

fn assert_unbroken(reports: &[lb_tests::traffic::ConnReport]) {
    let broken: Vec<_> = reports.iter().filter(|r| r.broken.is_some()).collect();
    assert!(
        broken.is_empty(),
        "{} connections broke: {broken:#?}",
        broken.len()
    );
    assert!(
        reports.iter().all(|r| r.exchanges >= 3),
        "connections kept exchanging"
    );
}

#[test]
fn reloads_under_load_break_no_connection() {
    let topo = DrTopology::new(60, 3).expect("topology");
    let _servers = echo_servers(&topo);
    let both = [(11, 1), (12, 1)];
    let agent = Agent::start(&topo.director.ns, &config(60, "", &[(PORT, &both)])).unwrap();

    let long = LongLived::start(
        &topo.client.ns,
        vip(&topo, PORT),
        200,
        Duration::from_millis(300),
    )
    .expect("200 long-lived connections");
    let new =
        NewConns::start(&topo.client.ns, vip(&topo, PORT), Duration::from_millis(10)).unwrap();
    let step = |n: usize, yaml: String| {
        thread::sleep(Duration::from_millis(1000));
        agent.reload(&yaml).unwrap();
        agent
            .wait_for_log_count("reload applied", n, Duration::from_secs(10))
            .unwrap();
    };
    // Add a real, change weights, add a service, remove it, remove a real.
    step(1, config(60, "", &[(PORT, &[(11, 1), (12, 1), (13, 1)])]));
    step(2, config(60, "", &[(PORT, &[(11, 3), (12, 1), (13, 1)])]));
    step(
        3,
        config(
            60,
            "",
            &[(PORT, &[(11, 3), (12, 1), (13, 1)]), (PORT2, &both)],
        ),
    );
    let reply = tcp_request(
        &topo.client.ns,
        vip(&topo, PORT2),
        "x",
        Duration::from_secs(3),
    )
    .expect("the added service answers");
    assert!(
        reply.starts_with("real1") || reply.starts_with("real2"),
        "{reply}"
    );
    step(4, config(60, "", &[(PORT, &[(11, 3), (12, 1), (13, 1)])]));
    step(5, config(60, "", &[(PORT, &[(11, 3), (13, 1)])]));
    thread::sleep(Duration::from_millis(1500));

    let new = new.finish();
    let reports = long.finish();
    assert!(
        new.failures.is_empty(),
        "failed new connections: {:#?}",
        new.failures
    );
    assert!(new.ok() > 300, "only {} new connections", new.ok());
    assert!(
        new.per_real.contains_key("real3"),
        "the added real got new connections: {new:?}"
    );
    // Removal is graceful: real2 left the table, but its established connections finish there.
    assert!(reports.iter().any(|r| r.real == "real2"));
    assert_unbroken(&reports);
    let log = agent.log_text();
    for line in [
        "real 10.60.0.13:8080 added to TCP 10.60.0.100:8080",
        "real 10.60.0.11:8080 of TCP 10.60.0.100:8080: up (weight 1) -> up (weight 3)",
        "service TCP 10.60.0.100:8081 added",
        "service TCP 10.60.0.100:8081 removed",
        "real 10.60.0.12:8080 removed from TCP 10.60.0.100:8080",
    ] {
        assert!(log.contains(line), "missing log line {line:?} in:\n{log}");
    }
    // After removal, new connections never reach real2.
    let late =
        NewConns::start(&topo.client.ns, vip(&topo, PORT), Duration::from_millis(5)).unwrap();
    thread::sleep(Duration::from_millis(800));
    let late = late.finish();
    assert!(late.failures.is_empty() && late.ok() > 50, "{late:?}");
    assert!(!late.per_real.contains_key("real2"), "{late:?}");
}

#[test]
fn a_rejected_reload_changes_nothing() {
    let topo = DrTopology::new(61, 3).expect("topology");
    let _servers = echo_servers(&topo);
    let good = config(61, "", &[(PORT, &[(11, 1), (12, 1)])]);
    let agent = Agent::start(&topo.director.ns, &good).unwrap();
    let long = LongLived::start(
        &topo.client.ns,
        vip(&topo, PORT),
        50,
        Duration::from_millis(200),
    )
    .unwrap();
    let new =
        NewConns::start(&topo.client.ns, vip(&topo, PORT), Duration::from_millis(10)).unwrap();
    thread::sleep(Duration::from_millis(500));

    // Invalid YAML content: a NAT service and a real on another port than its VIP.
    let bad = good
        .replace("lb_kind: dr", "lb_kind: nat")
        .replace("weight: 1 }", "weight: 1, port: 9999 }");
    agent.reload(&bad).unwrap();
    agent
        .wait_for_log("reload rejected", Duration::from_secs(10))
        .unwrap();
    let log = agent.log_text();
    assert!(log.contains("virtual_servers[0].lb_kind"), "{log}");
    assert!(
        log.contains("virtual_servers[0].real_servers[0].port"),
        "{log}"
    );
    // Syntax errors are rejected the same way.
    agent.reload("interface: [eth0\n").unwrap();
    agent
        .wait_for_log_count("reload rejected", 2, Duration::from_secs(10))
        .unwrap();
    thread::sleep(Duration::from_millis(1000));

    let before = new.report();
    assert!(before.failures.is_empty(), "{:#?}", before.failures);
    assert_eq!(
        before.per_real.keys().collect::<Vec<_>>(),
        ["real1", "real2"],
        "traffic still spreads over the old reals"
    );
    // The old configuration is still the live one: a valid reload builds on it.
    agent
        .reload(&config(61, "", &[(PORT, &[(11, 1), (12, 1), (13, 1)])]))
        .unwrap();
    agent
        .wait_for_log("reload applied", Duration::from_secs(10))
        .unwrap();
    thread::sleep(Duration::from_millis(800));
    let after = new.finish();
    assert!(after.failures.is_empty(), "{:#?}", after.failures);
    assert!(after.per_real.contains_key("real3"));
    assert_unbroken(&long.finish());
}

#[test]
fn kill_9_and_restart_break_no_connection() {
    let topo = DrTopology::new(62, 3).expect("topology");
    let _servers = echo_servers(&topo);
    let cfg = config(62, "", &[(PORT, &[(11, 1), (12, 1), (13, 1)])]);
    let mut agent = Agent::start(&topo.director.ns, &cfg).unwrap();
    let long = LongLived::start(
        &topo.client.ns,
        vip(&topo, PORT),
        200,
        Duration::from_millis(300),
    )
    .unwrap();
    let new =
        NewConns::start(&topo.client.ns, vip(&topo, PORT), Duration::from_millis(10)).unwrap();
    thread::sleep(Duration::from_millis(1000));

    // A second agent for the same instance (an operator's by hand next to systemd's) is
    // refused, naming the running one, and leaves it untouched.
    let (code, err) = agent.run_another(Duration::from_secs(10)).unwrap();
    let pid = agent.pid().unwrap();
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("another lb-agent runs this instance") && err.contains(&format!("PID {pid}")),
        "{err}"
    );
    assert!(agent.pins().exists(), "the running agent's pins are gone");
    let listing = agent.lbadm_ok(&["-L", "-n"]);
    assert!(listing.contains("10.62.0.100:8080"), "{listing}");

    // kill -9: its lock dies with it, so the restart below is not blocked.
    agent.kill9().unwrap();
    assert!(agent.socket().exists(), "kill -9 leaves its socket");
    // No agent: the pinned program keeps forwarding.
    let during = new.report().ok();
    thread::sleep(Duration::from_millis(2000));
    let gap = new.report().ok() - during;
    assert!(gap > 50, "only {gap} new connections while no agent ran");

    agent.spawn().unwrap();
    agent
        .wait_for_log_count("serving", 2, Duration::from_secs(20))
        .unwrap();
    thread::sleep(Duration::from_millis(1500));

    let new = new.finish();
    let reports = long.finish();
    assert!(
        new.failures.is_empty(),
        "failed new connections: {:#?}",
        new.failures
    );
    assert_unbroken(&reports);
    let log = agent.log_text();
    assert!(log.contains("adopted the maps and link"), "{log}");
    assert!(
        log.contains("replaced the running program in place"),
        "{log}"
    );
    // Adoption rewrote nothing: no state change was logged by the second agent.
    let second = &log[log.find("adopted the maps").unwrap()..];
    assert!(
        !second.contains(" added"),
        "adoption logged changes:\n{second}"
    );

    // The test leaves no control socket behind, even after a kill -9.
    agent.kill9().unwrap();
    let socket = agent.socket();
    drop(agent);
    assert!(!socket.exists(), "{} left behind", socket.display());
}

#[test]
fn a_changed_neighbour_mac_is_followed_within_a_second() {
    let topo = DrTopology::new(63, 1).expect("topology");
    let _servers = echo_servers(&topo);
    let agent = Agent::start(&topo.director.ns, &config(63, "", &[(PORT, &[(11, 1)])])).unwrap();
    let to = vip(&topo, PORT);
    tcp_request(&topo.client.ns, to, "before", Duration::from_secs(3)).expect("works before");

    // Swap the MAC behind the real's IP; the real announces it (gratuitous ARP), the
    // director's kernel updates its neighbour entry, the agent must follow.
    let real = &topo.reals[0];
    real.ns
        .sysctl("net.ipv4.conf.eth0.arp_notify", "1")
        .unwrap();
    real.ns
        .exec(&[
            "ip",
            "link",
            "set",
            "dev",
            "eth0",
            "address",
            "02:63:63:63:63:11",
        ])
        .unwrap();
    let changed = Instant::now();
    let followed = loop {
        if tcp_request(&topo.client.ns, to, "after", Duration::from_millis(200)).is_ok() {
            break changed.elapsed();
        }
        assert!(
            changed.elapsed() < Duration::from_secs(5),
            "traffic never followed the new MAC"
        );
    };
    println!("traffic followed the new MAC after {followed:?}");
    assert!(followed <= Duration::from_secs(1), "took {followed:?}");
    assert!(
        agent.log_text().contains("02:63:63:63:63:11"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn sigterm_detaches_unless_asked_to_keep_forwarding() {
    let topo = DrTopology::new(64, 1).expect("topology");
    let _servers = echo_servers(&topo);
    let to = vip(&topo, PORT);
    let request = || tcp_request(&topo.client.ns, to, "x", Duration::from_millis(700));

    let mut agent =
        Agent::start(&topo.director.ns, &config(64, "", &[(PORT, &[(11, 1)])])).unwrap();
    request().expect("forwarding");
    agent.stop().unwrap();
    assert!(
        agent
            .log_text()
            .contains("stopped; the program is detached")
    );
    assert!(!agent.pins().exists(), "pins removed");
    assert!(request().is_err(), "a stopped balancer does not forward");
    drop(agent);

    let keep = config(64, "keep_forwarding_on_stop: true", &[(PORT, &[(11, 1)])]);
    let mut agent = Agent::start(&topo.director.ns, &keep).unwrap();
    request().expect("forwarding");
    agent.stop().unwrap();
    assert!(agent.pins().exists(), "pins kept");
    request().expect("still forwarding without an agent");
    // A new agent adopts it.
    agent.spawn().unwrap();
    agent
        .wait_for_log_count("serving", 2, Duration::from_secs(20))
        .unwrap();
    request().expect("forwarding after adoption");
}

#[test]
fn reloads_of_unreadable_huge_or_deep_files_are_refused_without_stalling_the_agent() {
    let topo = DrTopology::new(69, 1).expect("topology");
    let _servers = echo_servers(&topo);
    let cfg = config(69, "", &[(PORT, &[(11, 1)])]);
    let mut agent = Agent::start(&topo.director.ns, &cfg).unwrap();
    let listing = || agent.lbadm_ok(&["-L", "-n"]);
    let rejected = |n: usize| {
        agent
            .wait_for_log_count("reload rejected", n, Duration::from_secs(5))
            .unwrap();
    };

    // A FIFO at the config path: refused at once, no writer needed.
    std::fs::remove_file(&agent.config).unwrap();
    let c = std::ffi::CString::new(agent.config.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    agent.signal(libc::SIGHUP).unwrap();
    rejected(1);
    assert!(
        agent
            .log_text()
            .contains("it is a FIFO, not a regular file")
    );
    std::fs::remove_file(&agent.config).unwrap();

    // 200 KB nested 100,000 deep: refused in a single pass, and lbadm is answered meanwhile.
    let n = 100_000;
    std::fs::write(
        &agent.config,
        format!("virtual_servers: {}{}", "[".repeat(n), "]".repeat(n)),
    )
    .unwrap();
    let start = Instant::now();
    agent.signal(libc::SIGHUP).unwrap();
    assert!(listing().contains("10.69.0.100:8080"));
    rejected(2);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert!(agent.log_text().contains("nested more than 32 deep"));

    // Over the size limit: refused by its size. A 6 MiB list that parses as YAML and is no
    // configuration: refused, and most of the memory the parse took is given back (measured
    // here: 32 MiB stay with the agent, 64 MiB without returning free memory to the system).
    let big = std::fs::File::create(&agent.config).unwrap();
    big.set_len(8 << 20 | 1).unwrap();
    drop(big);
    agent.signal(libc::SIGHUP).unwrap();
    rejected(3);
    assert!(
        agent
            .log_text()
            .contains("a configuration may have at most 8388608")
    );
    let before = agent.rss_kib().unwrap();
    std::fs::write(&agent.config, "- 1\n".repeat((6 << 20) / 4)).unwrap();
    agent.signal(libc::SIGHUP).unwrap();
    agent
        .wait_for_log_count("reload rejected", 4, Duration::from_secs(30))
        .unwrap();
    let after = agent.rss_kib().unwrap();
    assert!(
        after < before + 48 * 1024,
        "RSS {before} KiB before, {after} KiB after a rejected 8 MiB file"
    );

    // The running configuration is untouched, and SIGTERM is handled at once.
    assert!(listing().contains("10.69.0.100:8080"));
    let start = Instant::now();
    agent.stop().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn check_config_validates_without_touching_the_system() {
    let dir = std::env::temp_dir().join(format!("lb-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, config(65, "", &[(PORT, &[(11, 1), (12, 2)])])).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        config(65, "", &[(PORT, &[(11, 1)])]).replace("weight: 1", "weight: 70000"),
    )
    .unwrap();

    let out = Command::new(bin("lb-agent"))
        .arg("--check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("valid (1 virtual servers, 2 real servers)"),
        "{stdout}"
    );

    let out = Command::new(bin("lb-agent"))
        .arg("--check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: virtual_servers[0].real_servers[0].weight",
            bad.display()
        )),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn manage_vip_puts_the_vip_on_the_director_and_takes_it_away() {
    let topo = DrTopology::new(66, 1).expect("topology");
    let _servers = echo_servers(&topo);
    // The client finds the VIP by ARP on the LAN: only a director holding it answers.
    topo.client.route_on_link(topo.vip).unwrap();
    let to = vip(&topo, PORT);
    let has_vip = || {
        topo.director
            .ns
            .exec(&["ip", "-o", "addr", "show", "dev", "eth0"])
            .unwrap()
            .contains(&format!("{}/32", topo.vip))
    };
    let mut agent = Agent::start(
        &topo.director.ns,
        &config(66, "manage_vip: true", &[(PORT, &[(11, 1)])]),
    )
    .unwrap();
    assert!(has_vip(), "the agent added the VIP");
    let reply = tcp_request(&topo.client.ns, to, "x", Duration::from_secs(3)).expect("via ARP");
    assert!(reply.starts_with("real1"), "{reply}");
    agent.stop().unwrap();
    assert!(!has_vip(), "the agent removed the VIP on stop");
    assert!(agent.log_text().contains("removed the VIP address"));
}
