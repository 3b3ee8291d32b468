//! Health checking end to end: the real `lb-agent` in a director namespace checks real
//! servers in their namespaces, keepalived-style, and traffic follows. Needs root.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::Agent,
    netns::{Netns, TcpEchoServer},
    topo::DrTopology,
    traffic::{LongLived, NewConns},
};

const PORT: u16 = 8080;
const HEALTH_PORT: u16 = 8081;
/// delay_loop 1 + connect_timeout 1 x (1 + retry 1) + delay_before_retry 1 x 1.
const BOUND: Duration = Duration::from_secs(4);

fn tcp_check() -> &'static str {
    "tcp_check: { connect_timeout: 1, retry: 1, delay_before_retry: 1 }"
}

/// One service on PORT; each real is (last octet, extra YAML for the real).
fn config(net: u8, service_extra: &str, reals: &[(u8, String)]) -> String {
    let mut y = format!(
        "interface: eth0\nxdp_mode: driver\nlimits: {{ max_services: 8, max_reals: 64, \
         conn_entries: 65536, persist_entries: 1024 }}\nvirtual_servers:\n  - vip: 10.{net}.0.100\n    \
         port: {PORT}\n    lb_algo: wrr\n    lb_kind: dr\n    delay_loop: 1\n{service_extra}    \
         real_servers:\n"
    );
    for (last, extra) in reals {
        y += &format!("      - {{ ip: 10.{net}.0.{last}, {extra} }}\n");
    }
    y
}

/// An echo server on every address of the real (the VIP for clients, the real's own address
/// for the checker).
fn echo(ns: &Netns, tag: &str) -> TcpEchoServer {
    TcpEchoServer::start(ns, (std::net::Ipv4Addr::UNSPECIFIED, PORT).into(), tag).unwrap()
}

fn echo_all(topo: &DrTopology) -> Vec<Option<TcpEchoServer>> {
    topo.reals
        .iter()
        .enumerate()
        .map(|(i, r)| Some(echo(&r.ns, &format!("real{}", i + 1))))
        .collect()
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lb-health-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_stopped_service_leaves_within_the_bound_and_comes_back() {
    let topo = DrTopology::new(70, 3).expect("topology");
    let mut servers = echo_all(&topo);
    let reals: Vec<(u8, String)> = (11..=13).map(|l| (l, tcp_check().to_owned())).collect();
    let agent = Agent::start(&topo.director.ns, &config(70, "", &reals)).unwrap();
    let to: SocketAddr = (topo.vip, PORT).into();
    let long = LongLived::start(&topo.client.ns, to, 60, Duration::from_millis(300)).unwrap();
    let new = NewConns::start(&topo.client.ns, to, Duration::from_millis(10)).unwrap();
    thread::sleep(Duration::from_millis(1500));

    // Stop the service on real2 (its listener and connections go away).
    servers[1] = None;
    let stopped = Instant::now();
    thread::sleep(BOUND + Duration::from_millis(300));
    let failures_at_bound = new.report().failures.len();
    agent
        .wait_for_log("failed its check: connect refused", Duration::from_secs(1))
        .unwrap();
    // After the bound, no new connection goes to real2 (one would fail: nothing listens).
    thread::sleep(Duration::from_secs(2));
    let after = new.report();
    assert_eq!(
        after.failures.len(),
        failures_at_bound,
        "new connections failed after the detection bound: {:#?}",
        &after.failures[failures_at_bound..]
    );
    println!(
        "detection: {} new connections failed in the first {:?}",
        failures_at_bound,
        stopped.elapsed()
    );

    // Start it again: it gets new connections again.
    let real2_before = after.per_real.get("real2").copied().unwrap_or(0);
    servers[1] = Some(echo(&topo.reals[1].ns, "real2"));
    wait_until(Duration::from_secs(4), "real2 back in rotation", || {
        new.report().per_real.get("real2").copied().unwrap_or(0) > real2_before + 5
    });
    agent
        .wait_for_log(
            "real 10.70.0.12:8080 of TCP 10.70.0.100:8080 passed its check",
            Duration::ZERO,
        )
        .unwrap();
    let new = new.finish();
    let reports = long.finish();
    // Connections to the other reals were never touched.
    for r in reports.iter().filter(|r| r.real != "real2") {
        assert!(r.broken.is_none(), "{r:?}");
    }
    assert!(
        reports.iter().any(|r| r.real == "real2"),
        "the test covered real2's connections"
    );
    assert!(new.ok() > 300);
}

/// An HTTP server in `ns` on `port` answering every request with the shared status.
struct HttpStatusServer {
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl HttpStatusServer {
    fn start(ns: &Netns, port: u16, status: u16) -> Self {
        let listener = ns
            .enter(move || TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)))
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let status = Arc::new(AtomicU16::new(status));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (status.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                        let mut buf = [0u8; 2048];
                        let _ = c.read(&mut buf);
                        let code = s.load(Ordering::Relaxed);
                        let _ = write!(c, "HTTP/1.0 {code} X\r\nContent-Length: 0\r\n\r\n");
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            status,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpStatusServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_real_that_lost_its_vip_leaves_though_its_own_address_answers() {
    let topo = DrTopology::new(76, 2).expect("topology");
    let _servers = echo_all(&topo);
    let _http: Vec<_> = topo
        .reals
        .iter()
        .map(|r| HttpStatusServer::start(&r.ns, HEALTH_PORT, 200))
        .collect();
    // The default tcp_check: a half-open SYN to the VIP through the real's MAC. The default
    // http_get of a second service: its requests go the same way.
    let reals = vec![(11, tcp_check().to_owned()), (12, tcp_check().to_owned())];
    let mut yaml = config(76, "", &reals);
    yaml += &format!(
        "  - vip: 10.76.0.100\n    port: {HEALTH_PORT}\n    lb_algo: wrr\n    lb_kind: dr\n    \
         delay_loop: 1\n    real_servers:\n"
    );
    for last in [11, 12] {
        yaml += &format!(
            "      - {{ ip: 10.76.0.{last}, http_get: {{ url: {{ path: /health }}, \
             connect_timeout: 1, retry: 1, delay_before_retry: 1 }} }}\n"
        );
    }
    let agent = Agent::start(&topo.director.ns, &yaml).unwrap();
    let to: SocketAddr = (topo.vip, PORT).into();
    let new = NewConns::start(&topo.client.ns, to, Duration::from_millis(10)).unwrap();
    wait_until(Duration::from_secs(3), "both reals serve", || {
        new.report().per_real.len() == 2
    });
    // Both reals' last probes were answered (the first ones may still be on their way).
    wait_until(Duration::from_secs(3), "both checks answered", || {
        let health = agent.lbadm_ok(&["-L", "-n", "--health"]);
        health.matches("SYN-ACK").count() == 2 && health.matches("HTTP 200").count() == 2
    });

    // real1 loses the VIP from `lo` (a reboot without the real-server script, say): every
    // client packet sent to it is dropped, while its own address still answers.
    let vip = format!("{}/32", topo.vip);
    topo.reals[0]
        .ns
        .ip(["addr", "del", vip.as_str(), "dev", "lo"])
        .unwrap();
    let broken = Instant::now();
    let own: SocketAddr = (topo.reals[0].ip, PORT).into();
    assert!(
        lb_tests::netns::tcp_request(&topo.director.ns, own, "ping", Duration::from_secs(1))
            .is_ok(),
        "real1's own address stopped answering: a connect check would not see the fault"
    );
    agent
        .wait_for_log(
            "real 10.76.0.11:8080 of TCP 10.76.0.100:8080 failed its check: timeout",
            BOUND + Duration::from_secs(1),
        )
        .unwrap();
    let detected = broken.elapsed();
    agent
        .wait_for_log(
            "real 10.76.0.11:8081 of TCP 10.76.0.100:8081 failed its check: timeout",
            BOUND + Duration::from_secs(1) - detected.min(BOUND),
        )
        .unwrap();
    let http_detected = broken.elapsed();
    wait_until(Duration::from_secs(2), "real1 out of the listing", || {
        !agent.lbadm_ok(&["-L", "-n"]).contains("10.76.0.11:")
    });
    // From then on no new connection fails: none is sent to real1.
    let failures = new.report().failures.len();
    thread::sleep(Duration::from_secs(2));
    let after = new.report();
    assert_eq!(
        after.failures.len(),
        failures,
        "{:#?}",
        &after.failures[failures..]
    );
    println!(
        "data-path checks: real1 without its VIP detected in {:.2} s by tcp_check, {:.2} s by \
         http_get (bound {BOUND:?}); {failures} new connections failed before",
        detected.as_secs_f64(),
        http_detected.as_secs_f64()
    );
    for d in [detected, http_detected] {
        assert!(d <= BOUND + Duration::from_millis(500), "{d:?}");
    }
    // real2 stayed up all along.
    assert!(
        !agent
            .log_text()
            .contains("real 10.76.0.12:8081 of TCP 10.76.0.100:8081 failed"),
        "{}",
        agent.log_text()
    );

    // The VIP back on `lo`: real1 serves again.
    topo.reals[0]
        .ns
        .ip(["addr", "add", vip.as_str(), "dev", "lo"])
        .unwrap();
    let real1_before = new.report().per_real.get("real1").copied().unwrap_or(0);
    wait_until(Duration::from_secs(5), "real1 back in rotation", || {
        new.report().per_real.get("real1").copied().unwrap_or(0) > real1_before + 5
    });
    agent
        .wait_for_log(
            "real 10.76.0.11:8081 of TCP 10.76.0.100:8081 passed its check: HTTP 200",
            Duration::from_secs(5),
        )
        .unwrap();
    let new = new.finish();
    assert!(new.failures.len() == failures, "{:#?}", new.failures);
}

/// An HTTP server in `ns` on `port` answering every request with `body`, counting how each
/// connection ended: the client's FIN, or a reset.
struct BodyServer {
    body: Arc<std::sync::Mutex<Vec<u8>>>,
    closed: Arc<AtomicU16>,
    reset: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl BodyServer {
    fn start(ns: &Netns, port: u16, body: Vec<u8>) -> Self {
        let listener = ns
            .enter(move || TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)))
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let body = Arc::new(std::sync::Mutex::new(body));
        let (closed, reset) = (Arc::new(AtomicU16::new(0)), Arc::new(AtomicU16::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, c, r, st) = (body.clone(), closed.clone(), reset.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 2048];
                let _ = conn.read(&mut buf);
                let body = b.lock().unwrap().clone();
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
                // The client closes: with a FIN (read gives 0) or a reset.
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) => {
                            c.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                            r.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
        });
        Self {
            body,
            closed,
            reset,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BodyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn an_http_check_through_the_vip_reads_a_whole_body_and_closes_cleanly() {
    use md5::{Digest as _, Md5};
    let topo = DrTopology::new(77, 1).expect("topology");
    // 300 kB: hundreds of segments, more than one receive window.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let digest: String = Md5::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let server = BodyServer::start(&topo.reals[0].ns, HEALTH_PORT, body);
    let yaml = format!(
        "interface: eth0\nxdp_mode: driver\nvirtual_servers:\n  - vip: 10.77.0.100\n    port: \
         {HEALTH_PORT}\n    lb_kind: dr\n    delay_loop: 1\n    real_servers:\n      - {{ ip: \
         10.77.0.11, http_get: {{ url: {{ path: /big, digest: {digest} }}, connect_timeout: 2, \
         retry: 1, delay_before_retry: 1 }} }}\n"
    );
    let agent = Agent::start(&topo.director.ns, &yaml).unwrap();
    wait_until(Duration::from_secs(4), "three checks passed", || {
        server.closed.load(Ordering::Relaxed) >= 3
    });
    let health = agent.lbadm_ok(&["-L", "-n", "--health"]);
    assert!(health.contains("HTTP 200"), "{health}");
    assert_eq!(
        server.reset.load(Ordering::Relaxed),
        0,
        "a check reset its connection"
    );
    // Another body: the digest no longer matches and the real leaves.
    server.body.lock().unwrap()[150_000] ^= 1;
    agent
        .wait_for_log(
            "real 10.77.0.11:8081 of TCP 10.77.0.100:8081 failed its check: HTTP 200, body MD5",
            BOUND + Duration::from_secs(2),
        )
        .unwrap();
    assert_eq!(server.reset.load(Ordering::Relaxed), 0);
}

#[test]
fn an_http_check_with_the_wrong_status_takes_the_real_down() {
    let topo = DrTopology::new(71, 2).expect("topology");
    let _servers = echo_all(&topo);
    let bad = HttpStatusServer::start(&topo.reals[0].ns, HEALTH_PORT, 503);
    let _good = HttpStatusServer::start(&topo.reals[1].ns, HEALTH_PORT, 200);
    let check = format!(
        "http_get: {{ url: {{ path: /api/health/checks/alarms, status_code: 200 }}, \
         connect_port: {HEALTH_PORT}, connect_timeout: 1, retry: 1, delay_before_retry: 1 }}"
    );
    let reals = vec![(11, check.clone()), (12, check)];
    let agent = Agent::start(&topo.director.ns, &config(71, "", &reals)).unwrap();
    agent
        .wait_for_log("failed its check: HTTP 503", BOUND + Duration::from_secs(1))
        .unwrap();
    // The log line is written as the failure is seen; the tables change right after.
    wait_until(Duration::from_secs(2), "real1 out of the listing", || {
        !agent.lbadm_ok(&["-L", "-n"]).contains("10.71.0.11:")
    });
    let to: SocketAddr = (topo.vip, PORT).into();
    let new = NewConns::start(&topo.client.ns, to, Duration::from_millis(5)).unwrap();
    thread::sleep(Duration::from_secs(1));
    let report = new.report();
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert_eq!(
        report.per_real.keys().collect::<Vec<_>>(),
        ["real2"],
        "{report:?}"
    );
    // The right status brings it back.
    bad.status.store(200, Ordering::Relaxed);
    wait_until(Duration::from_secs(4), "real1 back after HTTP 200", || {
        new.report().per_real.contains_key("real1")
    });
    agent
        .wait_for_log("passed its check: HTTP 200", Duration::ZERO)
        .unwrap();
}

#[test]
fn lost_quorum_sends_new_traffic_to_the_sorry_server() {
    let topo = DrTopology::new(72, 3).expect("topology");
    let mut servers = echo_all(&topo);
    let dir = scratch("quorum");
    let extra = format!(
        "    quorum: 2\n    sorry_server: {{ ip: 10.72.0.13, port: {PORT} }}\n    \
         quorum_down: \"touch {d}/down\"\n    quorum_up: \"touch {d}/up\"\n",
        d = dir.display()
    );
    let reals = vec![(11, tcp_check().to_owned()), (12, tcp_check().to_owned())];
    let agent = Agent::start(&topo.director.ns, &config(72, &extra, &reals)).unwrap();
    let to: SocketAddr = (topo.vip, PORT).into();
    let new = NewConns::start(&topo.client.ns, to, Duration::from_millis(5)).unwrap();
    thread::sleep(Duration::from_secs(1));
    assert!(
        !new.report().per_real.contains_key("real3"),
        "the sorry server is idle"
    );

    servers[0] = None;
    agent
        .wait_for_log("lost quorum", BOUND + Duration::from_secs(1))
        .unwrap();
    wait_until(Duration::from_secs(2), "quorum_down ran", || {
        dir.join("down").exists()
    });
    let at_loss = new.report();
    thread::sleep(Duration::from_secs(1));
    let during = new.report();
    let delta = |name: &str| {
        during.per_real.get(name).copied().unwrap_or(0)
            - at_loss.per_real.get(name).copied().unwrap_or(0)
    };
    assert!(
        delta("real3") > 50,
        "the sorry server took new connections: {during:?}"
    );
    assert_eq!(delta("real2"), 0, "the remaining real got none: {during:?}");

    servers[0] = Some(echo(&topo.reals[0].ns, "real1"));
    agent
        .wait_for_log("regained quorum", Duration::from_secs(4))
        .unwrap();
    wait_until(Duration::from_secs(2), "quorum_up ran", || {
        dir.join("up").exists()
    });
    let regained = new.report();
    thread::sleep(Duration::from_secs(1));
    let after = new.finish();
    let delta = |name: &str| {
        after.per_real.get(name).copied().unwrap_or(0)
            - regained.per_real.get(name).copied().unwrap_or(0)
    };
    assert_eq!(
        delta("real3"),
        0,
        "the sorry server is idle again: {after:?}"
    );
    assert!(delta("real1") > 20 && delta("real2") > 20, "{after:?}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn notify_down_runs_exactly_once() {
    let topo = DrTopology::new(73, 2).expect("topology");
    let mut servers = echo_all(&topo);
    let dir = scratch("notify");
    let notify = format!(
        "{}, notify_down: \"echo down >> {d}/events\", notify_up: \"echo up >> {d}/events\"",
        tcp_check(),
        d = dir.display()
    );
    let reals = vec![(11, notify), (12, tcp_check().to_owned())];
    let agent = Agent::start(&topo.director.ns, &config(73, "", &reals)).unwrap();
    servers[0] = None;
    agent
        .wait_for_log("failed its check", BOUND + Duration::from_secs(1))
        .unwrap();
    // Several more failing checks later, still one notification.
    thread::sleep(Duration::from_secs(4));
    let events = || fs::read_to_string(dir.join("events")).unwrap_or_default();
    assert_eq!(events(), "down\n");
    servers[0] = Some(echo(&topo.reals[0].ns, "real1"));
    wait_until(Duration::from_secs(4), "notify_up ran", || {
        events() == "down\nup\n"
    });
    thread::sleep(Duration::from_secs(2));
    assert_eq!(events(), "down\nup\n");
    fs::remove_dir_all(&dir).unwrap();
}

/// The weight column of `real`'s line in `lbadm -L -n`, if it is listed.
fn listed_weight(listing: &str, real: &str) -> Option<u32> {
    listing
        .lines()
        .find(|l| l.contains(&format!("-> {real}")))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|w| w.parse().ok())
}

#[test]
fn several_checkers_a_dynamic_script_and_a_tracked_file_set_up_down_and_weight() {
    let topo = DrTopology::new(78, 2).expect("topology");
    let _servers = echo_all(&topo);
    let dir = scratch("checkers");
    let (file, code) = (dir.join("real1-file"), dir.join("real2-code"));
    fs::write(&file, "0\n").unwrap();
    fs::write(&code, "0").unwrap();
    // real1: the default tcp_check and a tracked file adding its value to the weight; real2: a
    // script whose exit status sets the weight (keepalived's misc_dynamic).
    let reals = vec![
        (
            11,
            format!(
                "{}, file_check: {{ path: {} }}",
                tcp_check(),
                file.display()
            ),
        ),
        (
            12,
            format!(
                "misc_check: {{ misc_path: \"sh -c 'exit $(cat {})'\", misc_timeout: 1, \
                 misc_dynamic: true }}",
                code.display()
            ),
        ),
    ];
    let agent = Agent::start(&topo.director.ns, &config(78, "", &reals)).unwrap();
    let weights = || {
        let l = agent.lbadm_ok(&["-L", "-n"]);
        (
            listed_weight(&l, "10.78.0.11:8080"),
            listed_weight(&l, "10.78.0.12:8080"),
        )
    };
    wait_until(Duration::from_secs(4), "both reals up at weight 1", || {
        weights() == (Some(1), Some(1))
    });

    // The file says 4 (weight 1 + 4), the script exits 7 (weight 7 - 2).
    fs::write(&file, "4\n").unwrap();
    fs::write(&code, "7").unwrap();
    wait_until(Duration::from_secs(4), "weights 5 and 5", || {
        weights() == (Some(5), Some(5))
    });
    let to: SocketAddr = (topo.vip, PORT).into();
    let new = NewConns::start(&topo.client.ns, to, Duration::from_millis(5)).unwrap();

    // The file's fault value takes real1 down though its tcp_check passes: a real is up only
    // while every checker is.
    fs::write(&file, "-2147483648\n").unwrap();
    agent
        .wait_for_log(
            "real 10.78.0.11:8080 of TCP 10.78.0.100:8080 failed its file_check check (2 of 2)",
            Duration::from_secs(4),
        )
        .unwrap();
    wait_until(Duration::from_secs(2), "real1 out of the listing", || {
        weights().0.is_none()
    });
    let before = new.report();
    thread::sleep(Duration::from_secs(1));
    let during = new.report();
    let got = |r: &lb_tests::traffic::NewConnReport, name: &str| {
        r.per_real.get(name).copied().unwrap_or(0)
    };
    assert_eq!(got(&during, "real1"), got(&before, "real1"), "{during:?}");
    assert!(
        got(&during, "real2") > got(&before, "real2") + 20,
        "{during:?}"
    );
    assert!(
        agent
            .lbadm_ok(&["-L", "-n", "--health"])
            .contains("tcp_check+file_check"),
        "the listing names both checkers"
    );

    // Exit status 1: real2 is down; 0 brings it back at its configured weight. The file back
    // at 0 brings real1 back at weight 1.
    fs::write(&code, "1").unwrap();
    fs::write(&file, "0\n").unwrap();
    wait_until(Duration::from_secs(4), "real1 back, real2 down", || {
        weights() == (Some(1), None)
    });
    fs::write(&code, "0").unwrap();
    wait_until(Duration::from_secs(4), "both at weight 1", || {
        weights() == (Some(1), Some(1))
    });
    let report = new.finish();
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_group_shares_its_checks_across_its_members() {
    const OTHER: u16 = 8082;
    let topo = DrTopology::new(79, 2).expect("topology");
    let mut servers: Vec<Option<(TcpEchoServer, TcpEchoServer)>> = topo
        .reals
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let tag = format!("real{}", i + 1);
            let other =
                TcpEchoServer::start(&r.ns, (std::net::Ipv4Addr::UNSPECIFIED, OTHER).into(), &tag)
                    .unwrap();
            Some((echo(&r.ns, &tag), other))
        })
        .collect();
    // One group, two members (the VIP on two ports), two reals checked once each, through
    // the leader (8080).
    let yaml = format!(
        "interface: eth0\nxdp_mode: driver\nvirtual_servers:\n  - group: web\n    vips: \
         [\"10.79.0.100:{PORT}\", \"10.79.0.100:{OTHER}\"]\n    lb_algo: rr\n    lb_kind: dr\n    \
         delay_loop: 1\n    real_servers:\n      - {{ ip: 10.79.0.11, {c} }}\n      - {{ ip: \
         10.79.0.12, {c} }}\n",
        c = tcp_check()
    );
    let mut agent = Agent::start(&topo.director.ns, &yaml).unwrap();
    let listed = |agent: &Agent, real: &str| {
        agent
            .lbadm_ok(&["-L", "-n"])
            .lines()
            .filter(|l| l.contains(&format!("-> {real}:")))
            .count()
    };
    wait_until(Duration::from_secs(3), "both reals in both members", || {
        listed(&agent, "10.79.0.11") == 2 && listed(&agent, "10.79.0.12") == 2
    });
    // Every member shows the state of the leader's checkers (one per real, not per member:
    // `health::spec`'s tests).
    wait_until(Duration::from_secs(3), "both checks answered", || {
        agent
            .lbadm_ok(&["-L", "-n", "--health"])
            .matches("SYN-ACK")
            .count()
            == 4
    });

    let to: SocketAddr = (topo.vip, OTHER).into();
    let new = NewConns::start(&topo.client.ns, to, Duration::from_millis(10)).unwrap();

    // real2's services stop: its check on the leader's port fails, and it leaves both
    // members, the 8082 one included, which nothing checks on its own.
    servers[1] = None;
    agent
        .wait_for_log(
            "real 10.79.0.12:8080 of TCP 10.79.0.100:8080 failed its check",
            BOUND + Duration::from_secs(1),
        )
        .unwrap();
    wait_until(Duration::from_secs(2), "real2 out of both members", || {
        listed(&agent, "10.79.0.12") == 0 && listed(&agent, "10.79.0.11") == 2
    });
    let failures = new.report().failures.len();
    thread::sleep(Duration::from_secs(1));
    let after = new.finish();
    assert_eq!(after.failures.len(), failures, "{:#?}", after.failures);
    assert!(after.per_real.contains_key("real1"), "{after:?}");
    // kill -9 and a restart while real2 is down: its checker resumes down, and so does real2
    // in the member nothing checks on its own.
    agent.kill9().unwrap();
    agent.spawn().unwrap();
    agent
        .wait_for_log_count("serving", 2, Duration::from_secs(20))
        .unwrap();
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        (listed(&agent, "10.79.0.12"), listed(&agent, "10.79.0.11")),
        (0, 2),
        "{}",
        agent.lbadm_ok(&["-L", "-n"])
    );
    // Edits of a member are refused: the group is one item of the file.
    let (code, _, err) = agent.lbadm(&[
        "-e",
        "-t",
        "10.79.0.100:8082",
        "-r",
        "10.79.0.11:8082",
        "-w",
        "3",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("member of group web"), "{err}");
}
