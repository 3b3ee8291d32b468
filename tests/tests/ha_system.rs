//! Director high availability in network namespaces, with the real `lb-agent` on two
//! directors that share one configuration (hence identical Maglev tables):
//!
//! - active/backup: keepalived's VRRP (Debian's keepalived, running the shipped
//!   `configs/keepalived-vrrp.conf` with per-node values) moves the VIP when the master dies,
//!   and the established connections continue on the same reals through the backup;
//! - active-active: a router spreads flows over both directors with an ECMP route; one
//!   director dies, the route loses it, and the survivor continues its flows;
//! - the keepalived and BIRD examples parse.
//!
//! Needs root, keepalived and bird2 (`cargo xtask test` installs them).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::{Ipv4Addr, SocketAddr},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{Agent, bin},
    ha::{
        BIRD_EXAMPLE, ConnOutcome, EcmpTopology, KEEPALIVED_EXAMPLE, Keepalived, PatientConns,
        VrrpNode, VrrpTopology, active_conns, active_total, assert_all_continued, conn_entries,
        echo_servers, keepalived_config, output_of, summarize, tcp_counters, time_until,
        unique_vrid,
    },
    netns::{Host, format_mac, tcp_request},
    traffic::{NewConnReport, NewConns},
};

const PORT: u16 = 8080;
/// A persistent service, like the guide's RabbitMQ ports (persistence_timeout 50).
const STICKY_PORT: u16 = 8081;

/// The one configuration both directors run: a plain wrr service and a persistent one.
fn agent_config(vip: Ipv4Addr, reals: &[Host]) -> String {
    let mut y = String::from(
        "interface: eth0\nxdp_mode: driver\nmanage_vip: false\nlimits: { max_services: 8, \
         max_reals: 64, conn_entries: 65536, persist_entries: 1024 }\nvirtual_servers:\n",
    );
    for (port, extra) in [(PORT, ""), (STICKY_PORT, "    persistence_timeout: 50\n")] {
        y += &format!(
            "  - vip: {vip}\n    port: {port}\n    protocol: tcp\n    lb_algo: wrr\n    \
             lb_kind: dr\n{extra}    real_servers:\n"
        );
        for real in reals {
            y += &format!("      - {{ ip: {}, weight: 1 }}\n", real.ip);
        }
    }
    y
}

/// Prints how long the test has run at each phase (the suite's time budget is per test).
struct Phases(Instant, &'static str);

impl Phases {
    fn mark(&self, phase: &str) {
        eprintln!(
            "[{}] {:6.2} s: {phase}",
            self.1,
            self.0.elapsed().as_secs_f64()
        );
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        self.mark("torn down");
    }
}

/// Failures of the new-connection stream as seconds after the kill (the stream started
/// `started_before_kill` before it).
fn failures_after_kill(new: &NewConnReport, started_before_kill: Duration) -> Vec<f64> {
    new.failures
        .iter()
        .map(|(t, _)| t.as_secs_f64() - started_before_kill.as_secs_f64())
        .collect()
}

#[test]
fn vrrp_failover_keeps_established_connections_on_their_reals() {
    let phases = Phases(Instant::now(), "vrrp");
    let topo = VrrpTopology::new(70, 3).expect("topology");
    phases.mark("topology built");
    let _servers = echo_servers(&topo.reals, topo.vip, &[PORT, STICKY_PORT]);
    let yaml = agent_config(topo.vip, &topo.reals);
    let mut agents = [
        Agent::start(&topo.directors[0].ns, &yaml).expect("agent on dir1"),
        Agent::start(&topo.directors[1].ns, &yaml).expect("agent on dir2"),
    ];
    phases.mark("agents serving");
    let service: SocketAddr = (topo.vip, PORT).into();
    let sticky: SocketAddr = (topo.vip, STICKY_PORT).into();

    // keepalived on both directors: the shipped example, per-node values substituted, its
    // track script asking this director's own agent.
    let example = fs::read_to_string(KEEPALIVED_EXAMPLE).expect("keepalived example");
    let vrid = unique_vrid();
    let config = |i: usize| {
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
                agents[i].socket().display()
            ),
        };
        keepalived_config(&example, &node).expect("keepalived configuration")
    };
    let mut master = Keepalived::start(&topo.directors[0].ns, &config(0)).expect("keepalived 1");
    let backup = Keepalived::start(&topo.directors[1].ns, &config(1)).expect("keepalived 2");
    master
        .wait_for_log("Entering MASTER STATE", Duration::from_secs(15))
        .unwrap();
    backup
        .wait_for_log("Entering BACKUP STATE", Duration::from_secs(15))
        .unwrap();
    assert!(
        time_until(Duration::from_secs(5), || topo.holds_vip(0)).is_some(),
        "the master never put the VIP on its eth0"
    );
    assert!(!topo.holds_vip(1), "the backup holds the VIP too");
    assert!(master.pids().len() >= 2, "keepalived and its VRRP child");
    phases.mark("VRRP master elected");

    // The master's own stack owns the VIP (a port without a service is refused by the
    // director's kernel), yet never sees the service's traffic: XDP bounces it first.
    let dir1 = &topo.directors[0].ns;
    let dir2 = &topo.directors[1].ns;
    let before_probe = tcp_counters(dir1).unwrap();
    let refused = tcp_request(
        &topo.client.ns,
        (topo.vip, 9).into(),
        "x",
        Duration::from_secs(2),
    )
    .expect_err("nothing listens on VIP:9");
    assert!(format!("{refused:#}").contains("refused"), "{refused:#}");
    let after_probe = tcp_counters(dir1).unwrap();
    assert_eq!(
        after_probe.out_rsts,
        before_probe.out_rsts + 1,
        "the director answered VIP:9"
    );

    let timeout = Duration::from_secs(20);
    let period = Duration::from_millis(300);
    let long = PatientConns::start(&topo.client.ns, service, 100, period, timeout)
        .expect("100 long-lived connections");
    let persistent = PatientConns::start(&topo.client.ns, sticky, 20, period, timeout)
        .expect("20 long-lived connections to the persistent service");
    phases.mark("connections open");
    // The master's table before any short connection runs (those would be counted too).
    thread::sleep(Duration::from_millis(600));
    assert_eq!(active_total(&agents[0], sticky), 20);
    let master_by_real = active_conns(&agents[0], service);
    assert_eq!(
        master_by_real.values().sum::<u64>(),
        100,
        "{master_by_real:?}"
    );
    let new_started = Instant::now();
    let new = NewConns::start(&topo.client.ns, service, Duration::from_millis(10)).unwrap();
    thread::sleep(Duration::from_millis(1500));

    assert_eq!(
        tcp_counters(dir1).unwrap(),
        after_probe,
        "the master's own TCP stack saw service traffic"
    );
    assert!(
        conn_entries(&agents[1]).is_empty(),
        "the backup saw traffic before the failover"
    );
    let backup_tcp = tcp_counters(dir2).unwrap();
    let dir2_mac = topo.directors[1].mac;

    // The master dies: keepalived and lb-agent SIGKILLed (no priority-0 advertisement, the
    // pinned program would keep forwarding), then its link goes down.
    phases.mark("traffic running; killing a director");
    let killed = Instant::now();
    master.kill9().unwrap();
    agents[0].kill9().unwrap();
    dir1.ip(["link", "set", "eth0", "down"]).unwrap();
    assert!(master.pids().is_empty(), "keepalived processes survived");

    time_until(Duration::from_secs(10), || topo.holds_vip(1))
        .expect("the backup never took the VIP");
    let vip_moved = killed.elapsed();
    time_until(Duration::from_secs(15), || {
        tcp_request(
            &topo.client.ns,
            service,
            "probe",
            Duration::from_millis(300),
        )
        .is_ok()
    })
    .expect("no new connection succeeded after the takeover");
    let service_back = killed.elapsed();
    backup
        .wait_for_log("Entering MASTER STATE", Duration::from_secs(1))
        .unwrap();
    assert!(
        long.wait_all_exchanged_since(killed, Duration::from_secs(30))
            && persistent.wait_all_exchanged_since(killed, Duration::from_secs(30)),
        "some connections never exchanged again"
    );
    thread::sleep(Duration::from_millis(1000));
    phases.mark("every connection exchanged after the kill");
    let new = new.finish();
    // What the backup holds while the connections are still open (finishing closes them).
    thread::sleep(Duration::from_millis(200));
    let backup_by_real = active_conns(&agents[1], service);
    let backup_sticky = active_total(&agents[1], sticky);
    let backup_tcp_after = tcp_counters(dir2).unwrap();
    let backup_listing = agents[1].lbadm_ok(&["-L", "-n"]);
    let long = long.finish();
    let persistent = persistent.finish();
    let failures = failures_after_kill(&new, killed - new_started);
    let (_, long_gap) = summarize(&long);
    let (_, sticky_gap) = summarize(&persistent);
    println!(
        "VRRP takeover: VIP on the backup {:.2} s after the kill, first new connection {:.2} s \
         after; {} new connections failed (at {:?} s after the kill; {} succeeded in all); \
         longest pause of an established connection {:.2} s (persistent service {:.2} s)",
        vip_moved.as_secs_f64(),
        service_back.as_secs_f64(),
        failures.len(),
        failures
            .iter()
            .map(|f| (f * 100.0).round() / 100.0)
            .collect::<Vec<_>>(),
        new.ok(),
        long_gap.as_secs_f64(),
        sticky_gap.as_secs_f64()
    );

    assert_all_continued("wrr service", &long, killed);
    assert_all_continued("persistent service", &persistent, killed);
    // A short pause only: detection (3 x advert_int + skew) plus TCP's retransmission backoff.
    assert!(
        long_gap.max(sticky_gap) < Duration::from_secs(10),
        "pause {long_gap:?}"
    );
    // New connections fail only while the VIP moves: none before the kill, none after the
    // first success but those already waiting then (a connect may take its 3 s timeout).
    let window = service_back.as_secs_f64() + 3.5;
    assert!(
        failures.iter().all(|&f| (-0.05..window).contains(&f)),
        "new connections failed outside the takeover: {:#?}",
        new.failures
    );
    assert!(new.per_real.len() == 3, "{new:?}");

    // The backup now carries every flow, on the reals the master had chosen, and its own
    // stack saw none of them.
    assert_eq!(backup_by_real, master_by_real, "{backup_listing}");
    assert_eq!(backup_sticky, 20, "{backup_listing}");
    assert_eq!(
        backup_tcp_after, backup_tcp,
        "the backup's own TCP stack saw service traffic"
    );
    // The client learnt the VIP's new MAC from keepalived's gratuitous ARP.
    let neigh = topo
        .client
        .ns
        .ip(["neigh", "show", &topo.vip.to_string()])
        .unwrap();
    assert!(neigh.contains(&format_mac(dir2_mac)), "{neigh}");
}

#[test]
fn ecmp_active_active_survives_losing_a_director() {
    let phases = Phases(Instant::now(), "ecmp");
    let topo = EcmpTopology::new(71, 3).expect("topology");
    phases.mark("topology built");
    let _servers = echo_servers(&topo.reals, topo.vip, &[PORT, STICKY_PORT]);
    let yaml = agent_config(topo.vip, &topo.reals);
    let mut agents = [
        Agent::start(&topo.directors[0].ns, &yaml).expect("agent on dir1"),
        Agent::start(&topo.directors[1].ns, &yaml).expect("agent on dir2"),
    ];
    phases.mark("agents serving");
    let service: SocketAddr = (topo.vip, PORT).into();
    const N: usize = 300;

    let long = PatientConns::start(
        &topo.client,
        service,
        N,
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
    .expect("300 long-lived connections");
    phases.mark("connections open");
    thread::sleep(Duration::from_millis(700));

    // The router spreads the flows over both directors.
    let on = [
        active_total(&agents[0], service),
        active_total(&agents[1], service),
    ];
    println!(
        "ECMP: director 1 carries {} flows, director 2 {}",
        on[0], on[1]
    );
    assert_eq!(on[0] + on[1], N as u64, "{on:?}");
    assert!(on[0] >= 60 && on[1] >= 60, "flows not spread: {on:?}");
    let via_dead: BTreeSet<u16> = conn_entries(&agents[0])
        .iter()
        .filter(|e| e.virtual_addr == service && e.state == "ESTABLISHED")
        .map(|e| e.source.port())
        .collect();
    assert_eq!(via_dead.len() as u64, on[0]);
    let survivor_tcp = tcp_counters(&topo.directors[1].ns).unwrap();

    let new_started = Instant::now();
    let new = NewConns::start(&topo.client, service, Duration::from_millis(10)).unwrap();
    thread::sleep(Duration::from_millis(1000));

    // Director 1 dies; the router drops it from the route, as when its BGP session drops.
    phases.mark("traffic running; killing a director");
    let killed = Instant::now();
    agents[0].kill9().unwrap();
    topo.directors[0]
        .ns
        .ip(["link", "set", "eth0", "down"])
        .unwrap();
    topo.route_vip_via(&[1]).unwrap();
    let all_back = long.wait_all_exchanged_since(killed, Duration::from_secs(20));
    thread::sleep(Duration::from_millis(1500));

    phases.mark("every connection exchanged after the kill");
    let new = new.finish();
    // What the survivor holds while the connections are still open (finishing closes them).
    thread::sleep(Duration::from_millis(200));
    let survivor_active = active_total(&agents[1], service);
    let survivor_tcp_after = tcp_counters(&topo.directors[1].ns).unwrap();
    let outcomes = long.finish();
    let survived = |o: &ConnOutcome| o.broken.is_none() && o.last_ok > killed;
    let alive = outcomes.iter().filter(|o| survived(o)).count();
    let moved: Vec<&ConnOutcome> = outcomes
        .iter()
        .filter(|o| via_dead.contains(&o.local_port))
        .collect();
    let moved_alive = moved.iter().filter(|o| survived(o)).count();
    let rate = alive as f64 / N as f64;
    let (_, gap) = summarize(&outcomes);
    let failures = failures_after_kill(&new, killed - new_started);
    println!(
        "ECMP: {alive}/{N} established connections survived ({:.2} %); {moved_alive}/{} of \
         those on the dead director; longest pause {:.2} s; {} of {} new connections failed \
         (at {:?} s after the kill)",
        rate * 100.0,
        moved.len(),
        gap.as_secs_f64(),
        new.failures.len(),
        new.failures.len() as u64 + new.ok(),
        failures
    );
    let broken: BTreeMap<u16, &str> = outcomes
        .iter()
        .filter_map(|o| Some((o.local_port, o.broken.as_deref()?)))
        .collect();
    assert!(rate >= 0.99, "survival {rate}: broken {broken:#?}");
    assert!(all_back, "some connections never exchanged after the kill");
    assert_eq!(
        moved.len(),
        via_dead.len(),
        "every flow of the dead director was tracked"
    );

    // The survivor now holds every surviving flow (the dead director's ones scheduled
    // mid-flow, as ESTABLISHED), and its own TCP stack saw none of them.
    assert_eq!(survivor_active, alive as u64);
    assert_eq!(survivor_tcp_after, survivor_tcp);
    assert!(new.ok() > 100, "{new:?}");
}

#[test]
fn the_ha_configuration_examples_parse() {
    // BIRD 2: the director's announcement config, and a broken copy to show the check bites.
    let (ok, out) = output_of(Command::new("bird").args(["-p", "-c", BIRD_EXAMPLE])).unwrap();
    assert!(ok, "bird -p -c {BIRD_EXAMPLE}: {out}");
    let tmp = TempDir::new("lb-ha-configs");
    let dir = tmp.0.clone();
    let bird = fs::read_to_string(BIRD_EXAMPLE).unwrap();
    let broken = dir.join("bird-broken.conf");
    fs::write(
        &broken,
        bird.replace("route VIP blackhole;", "route VIP blackhol;"),
    )
    .unwrap();
    let (ok, out) = output_of(Command::new("bird").arg("-p").arg("-c").arg(&broken)).unwrap();
    assert!(!ok, "bird accepted a typo: {out}");

    // keepalived: the example as shipped, except that its track script must exist here, so
    // the installed lbadm's path becomes the built one.
    let example = fs::read_to_string(KEEPALIVED_EXAMPLE).unwrap();
    assert!(
        example.lines().all(|l| !l
            .split('#')
            .next()
            .unwrap_or_default()
            .contains("virtual_server")),
        "VRRP only: no virtual_server block"
    );
    assert!(example.contains("/usr/local/bin/lbadm -L -n"), "{example}");
    let lbadm = bin("lbadm");
    let check = |name: &str, text: &str| {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        output_of(
            Command::new("keepalived")
                .arg("--config-test")
                .arg("-f")
                .arg(&path),
        )
        .unwrap()
    };
    let here = example.replace("/usr/local/bin/lbadm", &lbadm.display().to_string());
    let (ok, out) = check("keepalived.conf", &here);
    assert!(
        ok && out.trim().is_empty(),
        "keepalived --config-test: {out}"
    );
    // Both nodes' configurations as the VRRP test writes them.
    for (state, priority) in [("MASTER", 100), ("BACKUP", 90)] {
        let node = VrrpNode {
            router_id: format!("node-{state}"),
            state,
            priority,
            virtual_router_id: unique_vrid(),
            vip: Ipv4Addr::new(10, 72, 0, 100),
            // exec: lbadm
            track_script: format!("{} -L -n", lbadm.display()),
        };
        let text = keepalived_config(&example, &node).unwrap();
        assert!(text.contains(&format!("state {state}")), "{text}");
        let (ok, out) = check(&format!("keepalived-{state}.conf"), &text);
        assert!(ok && out.trim().is_empty(), "{state}: {out}\n{text}");
    }
    let (ok, out) = check(
        "keepalived-broken.conf",
        &here.replace("virtual_router_id", "virtual_router_idd"),
    );
    assert!(!ok && out.contains("Unknown keyword"), "{out}");
}

/// A scratch directory, removed on drop (also when a test panics).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("scratch directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
