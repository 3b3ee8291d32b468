//! `lbadm` against a running `lb-agent` in namespaces: listings against the connections the
//! test opened, runtime edits changing live traffic, `-S` fed back to an agent, the control
//! socket refusing non-root callers and malformed requests, `/metrics` against `--stats`.
//! Needs root.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::unix::net::UnixStream,
    process::Command,
    thread,
    time::Duration,
};

use lb_tests::{
    agent::{Agent, bin},
    netns::{TcpEchoServer, TcpLineClient},
    topo::DrTopology,
    traffic::{LongLived, NewConns},
};

const PORT: u16 = 8080;

fn config(net: u8, extra: &str, reals: &[(u8, u32)]) -> String {
    let mut y = format!(
        "interface: eth0\nxdp_mode: driver\n{extra}\nlimits: {{ max_services: 8, max_reals: 64, \
         conn_entries: 65536, persist_entries: 1024 }}\nvirtual_servers:\n  - vip: 10.{net}.0.100\n    \
         port: {PORT}\n    lb_algo: wrr\n    lb_kind: dr\n    delay_loop: 1\n    real_servers:\n"
    );
    for (last, w) in reals {
        y += &format!(
            "      - {{ ip: 10.{net}.0.{last}, weight: {w}, tcp_check: {{ connect_timeout: 1 }} }}\n"
        );
    }
    y
}

fn echo_all(topo: &DrTopology) -> Vec<TcpEchoServer> {
    topo.reals
        .iter()
        .enumerate()
        .map(|(i, r)| {
            TcpEchoServer::start(
                &r.ns,
                (Ipv4Addr::UNSPECIFIED, PORT).into(),
                &format!("real{}", i + 1),
            )
            .unwrap()
        })
        .collect()
}

/// Real lines of `lbadm -L -n`: address:port -> (weight, active, inactive).
fn real_lines(listing: &str) -> BTreeMap<String, (u32, u64, u64)> {
    listing
        .lines()
        .filter(|l| l.starts_with("  -> ") && !l.contains("RemoteAddress"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[1].to_owned(),
                (
                    f[3].parse().unwrap(),
                    f[4].parse().unwrap(),
                    f[5].parse().unwrap(),
                ),
            )
        })
        .collect()
}

fn real_of(tag: &str, net: u8) -> String {
    let n: u8 = tag.trim_start_matches("real").parse().unwrap();
    format!("10.{net}.0.{}:{PORT}", 10 + n)
}

#[test]
fn listings_match_the_connections_that_were_opened() {
    let topo = DrTopology::new(80, 2).expect("topology");
    let _servers = echo_all(&topo);
    let agent = Agent::start(&topo.director.ns, &config(80, "", &[(11, 1), (12, 1)])).unwrap();
    let to: SocketAddr = (topo.vip, PORT).into();
    let long = LongLived::start(&topo.client.ns, to, 30, Duration::from_millis(500)).unwrap();
    // Ten connections that exchange a line and close (the client's FIN makes them inactive).
    for i in 0..10 {
        let mut c = TcpLineClient::connect(&topo.client.ns, to, Duration::from_secs(2)).unwrap();
        c.request(&format!("short {i}")).unwrap();
    }
    thread::sleep(Duration::from_millis(500));

    let listing = agent.lbadm_ok(&["-L", "-n"]);
    assert!(
        listing.starts_with("IP Virtual Server version 1.2.1 (size="),
        "{listing}"
    );
    assert!(listing.contains("TCP  10.80.0.100:8080 wrr\n"), "{listing}");
    let lines = real_lines(&listing);
    let mut expected_active: BTreeMap<String, u64> = BTreeMap::new();
    for r in long.reports() {
        *expected_active.entry(real_of(&r.real, 80)).or_default() += 1;
    }
    for (real, (weight, active, _)) in &lines {
        assert_eq!(*weight, 1);
        assert_eq!(
            *active,
            expected_active.get(real).copied().unwrap_or(0),
            "{real}\n{listing}"
        );
    }
    let inactive: u64 = lines.values().map(|l| l.2).sum();
    assert_eq!(
        inactive, 10,
        "the closed connections are inactive\n{listing}"
    );
    // Trailing spaces as ipvsadm prints them.
    assert!(
        listing
            .lines()
            .filter(|l| l.starts_with("  -> 10."))
            .all(|l| l.ends_with(' '))
    );

    // -c: one ESTABLISHED entry per long-lived connection, with its real.
    let conns = agent.lbadm_ok(&["-L", "-n", "-c"]);
    assert!(
        conns.starts_with("IPVS connection entries\npro expire state"),
        "{conns}"
    );
    let established = conns
        .lines()
        .filter(|l| l.contains(" ESTABLISHED "))
        .count();
    assert_eq!(established, 30, "{conns}");
    assert!(
        conns
            .lines()
            .any(|l| l.starts_with("TCP 14:5") || l.starts_with("TCP 15:00"))
    );

    // --stats and --json agree; --timeout shows the IPVS defaults.
    let stats = agent.lbadm_ok(&["-L", "-n", "--stats", "--exact"]);
    let svc_line = stats
        .lines()
        .find(|l| l.starts_with("TCP  10.80.0.100:8080"))
        .unwrap();
    let conns_total: u64 = svc_line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(conns_total, 40, "{stats}");
    let json = agent.lbadm_ok(&["-L", "-n", "--json"]);
    assert!(json.contains("\"active_conns\""), "{json}");
    assert_eq!(
        agent.lbadm_ok(&["-L", "--timeout"]).trim(),
        "Timeout (tcp tcpfin udp): 900 120 300"
    );
    // --conn-table: the 40 connections' entries are live (30 open, 10 closing), nothing was
    // refused or evicted.
    let table = agent.lbadm_ok(&["-L", "--conn-table"]);
    assert!(table.starts_with("Connection table: 40 of "), "{table}");
    assert!(
        table.contains("Refused inserts (set full of established connections): 0\n")
            && table.contains("Evicted live entries: established 0, other 0\n"),
        "{table}"
    );

    // --health shows the checker state.
    let health = agent.lbadm_ok(&["-L", "-n", "--health"]);
    assert!(health.contains("tcp_check"), "{health}");
    assert!(
        health.lines().filter(|l| l.contains(" up ")).count() >= 2,
        "{health}"
    );

    // -Z zeroes the counters.
    let zero = agent.lbadm_ok(&["-Z"]);
    assert!(zero.is_empty());
    let stats = agent.lbadm_ok(&["-L", "-n", "--stats", "--exact"]);
    let svc_line = stats
        .lines()
        .find(|l| l.starts_with("TCP  10.80.0.100:8080"))
        .unwrap();
    assert_eq!(
        svc_line.split_whitespace().nth(2),
        Some("0"),
        "-Z zeroed the counters\n{stats}"
    );
    drop(long);
}

#[test]
fn which_names_the_real_of_a_flow() {
    let topo = DrTopology::new(81, 3).expect("topology");
    let _servers = echo_all(&topo);
    let agent = Agent::start(
        &topo.director.ns,
        &config(81, "", &[(11, 1), (12, 1), (13, 1)]),
    )
    .unwrap();
    let to: SocketAddr = (topo.vip, PORT).into();
    // A flow that does not exist yet: the lookup table decides.
    let client = "10.81.0.1:45000";
    let out = agent.lbadm_ok(&["--which", "-t", "10.81.0.100:8080", "--client", client]);
    assert!(out.contains("lookup table"), "{out}");
    let predicted = out
        .split(" -> ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    // Open exactly that flow: it lands where predicted, and now the table entry says so.
    let stream = topo
        .client
        .ns
        .enter(move || socket2_connect(to, 45000))
        .unwrap();
    let mut line = String::new();
    let mut s = stream;
    s.write_all(b"which\n").unwrap();
    BufReader::new(&s).read_line(&mut line).unwrap();
    let tag = line.split_whitespace().next().unwrap();
    assert_eq!(real_of(tag, 81), predicted, "{line}");
    let out = agent.lbadm_ok(&["--which", "-t", "10.81.0.100:8080", "--client", client]);
    assert!(
        out.contains("connection table") && out.contains(&predicted),
        "{out}"
    );
}

/// A TCP connection from a fixed source port (the flow `--which` was asked about).
fn socket2_connect(to: SocketAddr, port: u16) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd as _;
    let SocketAddr::V4(to) = to else {
        unreachable!("IPv4 test")
    };
    let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: a fresh socket, owned by the TcpStream right away; plain bind and connect calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sin(Ipv4Addr::UNSPECIFIED, port);
        if libc::bind(fd, (&raw const local).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sin(*to.ip(), to.port());
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        Ok(stream)
    }
}

#[test]
fn runtime_edits_change_live_traffic() {
    let topo = DrTopology::new(82, 3).expect("topology");
    let _servers = echo_all(&topo);
    let agent = Agent::start(&topo.director.ns, &config(82, "", &[(11, 1), (12, 1)])).unwrap();
    let to: SocketAddr = (topo.vip, PORT).into();
    let long = LongLived::start(&topo.client.ns, to, 40, Duration::from_millis(300)).unwrap();
    let new = NewConns::start(&topo.client.ns, to, Duration::from_millis(5)).unwrap();
    let svc = "10.82.0.100:8080";
    let window = |new: &NewConns| {
        let before = new.report();
        thread::sleep(Duration::from_millis(1200));
        let after = new.report();
        let mut d = BTreeMap::new();
        for (k, v) in &after.per_real {
            d.insert(k.clone(), v - before.per_real.get(k).copied().unwrap_or(0));
        }
        (d, after.failures.len() - before.failures.len())
    };

    // -a: a new real gets traffic.
    agent.lbadm_ok(&["-a", "-t", svc, "-r", "10.82.0.13", "-g", "-w", "1"]);
    thread::sleep(Duration::from_millis(300));
    let (d, failed) = window(&new);
    assert!(d.get("real3").copied().unwrap_or(0) > 20, "{d:?}");
    assert_eq!(failed, 0);

    // -e -w 0: real1 drains (no new connections; its established ones continue).
    agent.lbadm_ok(&["-e", "-t", svc, "-r", "10.82.0.11:8080", "-w", "0"]);
    thread::sleep(Duration::from_millis(300));
    let (d, failed) = window(&new);
    assert_eq!(
        d.get("real1").copied().unwrap_or(0),
        0,
        "drained real got new connections: {d:?}"
    );
    assert_eq!(failed, 0);
    let listing = agent.lbadm_ok(&["-L", "-n"]);
    assert_eq!(real_lines(&listing)["10.82.0.11:8080"].0, 0, "{listing}");

    // -d: real2 leaves.
    agent.lbadm_ok(&["-d", "-t", svc, "-r", "10.82.0.12:8080"]);
    thread::sleep(Duration::from_millis(300));
    let (d, failed) = window(&new);
    assert_eq!(d.get("real2").copied().unwrap_or(0), 0, "{d:?}");
    assert!(d.get("real3").copied().unwrap_or(0) > 50, "{d:?}");
    assert_eq!(failed, 0);
    assert!(!real_lines(&agent.lbadm_ok(&["-L", "-n"])).contains_key("10.82.0.12:8080"));

    // Errors are clear and change nothing.
    let (code, _, err) = agent.lbadm(&["-a", "-t", svc, "-r", "10.82.0.13", "-w", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = agent.lbadm(&["-D", "-t", "10.82.0.100:9999"]);
    assert_eq!(code, 1);
    assert!(err.contains("no such service"), "{err}");
    let (code, _, err) = agent.lbadm(&["-a", "-t", svc, "-r", "10.82.0.14", "-m"]);
    assert_eq!(
        code, 2,
        "masquerading is refused before anything is sent: {err}"
    );

    // Service edits: -A adds one (rr), -D deletes it.
    agent.lbadm_ok(&["-A", "-t", "10.82.0.100:8081", "-s", "rr"]);
    assert!(
        agent
            .lbadm_ok(&["-L", "-n"])
            .contains("TCP  10.82.0.100:8081 rr")
    );
    agent.lbadm_ok(&["-D", "-t", "10.82.0.100:8081"]);
    assert!(!agent.lbadm_ok(&["-L", "-n"]).contains("8081"));

    let reports = long.finish();
    let broken: Vec<_> = reports.iter().filter(|r| r.broken.is_some()).collect();
    assert!(broken.is_empty(), "edits broke connections: {broken:#?}");
    drop(new);
}

#[test]
fn saved_configuration_reproduces_the_listing() {
    let topo = DrTopology::new(83, 3).expect("topology");
    let _servers = echo_all(&topo);
    let mut agent = Agent::start(&topo.director.ns, &config(83, "", &[(11, 1), (12, 2)])).unwrap();
    agent.lbadm_ok(&[
        "-a",
        "-t",
        "10.83.0.100:8080",
        "-r",
        "10.83.0.13",
        "-w",
        "3",
    ]);
    agent.lbadm_ok(&["-A", "-t", "10.83.0.100:8081", "-s", "sh", "-p", "120"]);
    agent.lbadm_ok(&[
        "-a",
        "-t",
        "10.83.0.100:8081",
        "-r",
        "10.83.0.11",
        "-w",
        "1",
    ]);
    thread::sleep(Duration::from_millis(1500));
    let before = agent.lbadm_ok(&["-L", "-n"]);
    let saved = agent.lbadm_ok(&["-S"]);
    agent.stop().unwrap();
    let instance = agent.instance.clone();
    drop(agent);

    let again = Agent::start_instance(&topo.director.ns, &saved, &instance).unwrap();
    thread::sleep(Duration::from_millis(1500));
    let after = again.lbadm_ok(&["-L", "-n"]);
    assert_eq!(before, after, "saved:\n{saved}");
    assert!(
        after.contains("TCP  10.83.0.100:8081 sh persistent 120"),
        "{after}"
    );
}

#[test]
fn the_control_socket_refuses_non_root_and_survives_garbage() {
    let topo = DrTopology::new(84, 1).expect("topology");
    let _servers = echo_all(&topo);
    let agent = Agent::start(&topo.director.ns, &config(84, "", &[(11, 1)])).unwrap();
    let socket = agent.socket();
    let mode = std::fs::metadata(&socket).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let as_nobody = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin("lbadm"))
            .arg("--socket")
            .arg(&socket)
            .args(["-L", "-n"])
            .output()
            .unwrap()
    };
    let out = as_nobody();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ermission denied"),
        "{out:?}"
    );
    // Even with the directory and socket opened up, the agent checks who is calling.
    let dir = socket.parent().unwrap().to_owned();
    let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "the socket's directory is root-only");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(dir_mode)).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lbadm must run as root"), "{err}");

    // Garbage gets an error reply; the agent keeps serving.
    let mut raw = UnixStream::connect(&socket).unwrap();
    raw.write_all(b"this is not json\n{\"op\":\"nope\"}\n")
        .unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut reader = BufReader::new(raw.try_clone().unwrap());
    for _ in 0..2 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("\"error\""), "{line}");
    }
    drop(raw);
    let mut raw = UnixStream::connect(&socket).unwrap();
    raw.write_all(&[0xff; 4096]).unwrap();
    drop(raw);
    assert!(agent.lbadm_ok(&["-L", "-n"]).contains("10.84.0.11:8080"));
}

#[test]
fn metrics_parse_and_match_the_stats() {
    let topo = DrTopology::new(85, 2).expect("topology");
    let _servers = echo_all(&topo);
    let agent = Agent::start(
        &topo.director.ns,
        &config(85, "metrics_listen: 127.0.0.1:9858", &[(11, 1), (12, 1)]),
    )
    .unwrap();
    let to: SocketAddr = (topo.vip, PORT).into();
    let new = NewConns::start(&topo.client.ns, to, Duration::from_millis(5)).unwrap();
    thread::sleep(Duration::from_secs(1));
    let report = new.finish();
    assert!(report.failures.is_empty());
    // The metrics snapshot refreshes with the rates (every 2 s).
    thread::sleep(Duration::from_millis(2500));
    let body = topo
        .director
        .ns
        .enter(|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", 9858))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .unwrap();
    let (head, text) = body.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut values: BTreeMap<String, f64> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        values.insert(
            name.to_owned(),
            value
                .parse()
                .unwrap_or_else(|_| panic!("bad value {line:?}")),
        );
    }
    let stats = agent.lbadm_ok(&["-L", "-n", "--stats", "--exact"]);
    for line in stats.lines().filter(|l| l.starts_with("  -> 10.85.")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let real = f[1].split(':').next().unwrap();
        let metric = |name: &str| {
            values
                .iter()
                .find(|(k, _)| k.starts_with(name) && k.contains(&format!("real=\"{real}\"")))
                .map(|(_, v)| *v as u64)
                .unwrap_or_else(|| panic!("no {name} for {real} in\n{text}"))
        };
        assert_eq!(
            metric("lb_real_connections_total"),
            f[2].parse::<u64>().unwrap(),
            "{line}"
        );
        assert_eq!(
            metric("lb_real_in_packets_total"),
            f[3].parse::<u64>().unwrap(),
            "{line}"
        );
        assert_eq!(
            metric("lb_real_in_bytes_total"),
            f[5].parse::<u64>().unwrap(),
            "{line}"
        );
    }
    assert!(
        values.keys().any(|k| k.starts_with("lb_reloads_total")),
        "{text}"
    );
    assert!(
        values
            .keys()
            .any(|k| k.starts_with("lb_conn_table_entries")),
        "{text}"
    );
}
