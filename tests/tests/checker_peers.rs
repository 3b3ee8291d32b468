//! keepalived's checkers against real servers on loopback: DNS_CHECK and UDP_CHECK against
//! dnsmasq, SMTP_CHECK against aiosmtpd, PING_CHECK against the kernel. Each is seen up while
//! its server serves and down, with the reason an operator reads, once it is gone. Needs the
//! test command's packages (dnsmasq-base, python3-aiosmtpd).

use std::{
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    process::{Child, Command, Stdio},
    time::Duration,
};

use lb_tests::netns::Netns;
use lb_userspace::{
    config::DnsType,
    health::{dns, ping, smtp, udp},
};

const LIMIT: Duration = Duration::from_secs(2);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A port free on 127.0.0.1 for both UDP and TCP right now.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// A child process killed and reaped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// dnsmasq on 127.0.0.1:`port`, authoritative for nothing, answering `health.example.org` with
/// 192.0.2.7 and refusing what it cannot forward (it has no upstream).
fn dnsmasq(port: u16) -> Server {
    let child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file=",
            "--user=root",
            "--address=/health.example.org/192.0.2.7",
        ])
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting dnsmasq");
    let server = Server(child);
    // Ready once it answers.
    let rt = runtime();
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for _ in 0..100 {
        let o = rt.block_on(dns::dns(
            target,
            None,
            "health.example.org",
            DnsType::A,
            Duration::from_millis(100),
        ));
        if o.ok {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("dnsmasq did not answer on {target}");
}

#[test]
fn dns_check_against_dnsmasq() {
    let port = free_port();
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let server = dnsmasq(port);
    let rt = runtime();
    let check = |name: &str, qtype| rt.block_on(dns::dns(target, None, name, qtype, LIMIT));
    let up = check("health.example.org", DnsType::A);
    assert!(up.ok, "{up:?}");
    assert_eq!(up.detail, "NOERROR");
    // A name dnsmasq cannot answer without an upstream: its RCODE is the reason.
    let refused = check("elsewhere.example.net", DnsType::Soa);
    assert!(!refused.ok, "{refused:?}");
    assert_eq!(refused.detail, "REFUSED");
    drop(server);
    let gone = check("health.example.org", DnsType::A);
    assert!(!gone.ok, "{gone:?}");
    assert_eq!(gone.detail, "port unreachable");
}

#[test]
fn udp_check_against_dnsmasq() {
    let port = free_port();
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let server = dnsmasq(port);
    let rt = runtime();
    // A DNS query as the payload, as an operator would write it in hexadecimal.
    let payload = dns::query(0x4c42, "health.example.org", DnsType::A);
    // The reply starts with the query's id.
    let reply_start = [0x4c, 0x42];
    let check =
        |require: Option<&[u8]>| rt.block_on(udp::udp(target, None, &payload, require, LIMIT));
    let up = check(Some(&reply_start));
    assert!(up.ok, "{up:?}");
    let other = check(Some(&[0x4c, 0x43]));
    assert!(!other.ok, "a reply with other bytes passed: {other:?}");
    let silent_ok = check(None);
    assert!(silent_ok.ok, "{silent_ok:?}");
    drop(server);
    for require in [None, Some(&reply_start[..])] {
        let gone = check(require);
        assert!(!gone.ok, "{gone:?}");
        assert_eq!(gone.detail, "port unreachable", "{require:?}");
    }
}

#[test]
fn smtp_check_against_aiosmtpd() {
    let port = free_port();
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/smtp_server.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .args(["--port", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the SMTP server");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let server = Server(child);
    let rt = runtime();
    let check = || rt.block_on(smtp::smtp(target, None, "director.example.org", LIMIT));
    for _ in 0..3 {
        let up = check();
        assert!(up.ok, "{up:?}");
    }
    drop(server);
    let gone = check();
    assert!(!gone.ok, "{gone:?}");
    assert_eq!(gone.detail, "connect refused");
}

#[test]
fn ping_check_against_a_kernel_that_stops_answering() {
    let ns = Netns::new("pingpeer").expect("namespace");
    ns.ip(["link", "set", "lo", "up"]).unwrap();
    let ping = |limit| {
        ns.enter(move || runtime().block_on(ping::ping(Ipv4Addr::LOCALHOST.into(), None, limit)))
    };
    let up = ping(LIMIT);
    assert!(up.ok, "{up:?}");
    // The kernel ignores echo requests from now on: the check times out.
    ns.sysctl("net.ipv4.icmp_echo_ignore_all", "1").unwrap();
    let down = ping(Duration::from_millis(500));
    assert!(!down.ok, "{down:?}");
    assert_eq!(down.detail, "timeout");
}
