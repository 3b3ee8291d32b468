//! System test of the data plane alone (no agent): a client, a director with the XDP program in
//! native mode on its veth, and two real servers holding the VIP on `lo` with ARP suppressed,
//! all on one bridge. Real TCP connections go through the VIP. Needs root.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use lb_tests::{
    lab::{Lab, desired, spec, tcp},
    netns::{Host, Lan, Netns},
};
use lb_userspace::{
    dataplane::{Dataplane, LoadOptions},
    model::AttachMode,
};

const REPLY_BYTES: usize = 64 * 1024;

/// A server on `vip:port` in a real's namespace: for each connection, reads one line and
/// answers with `<tag>\n` followed by `REPLY_BYTES` bytes, then closes.
struct BulkServer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl BulkServer {
    fn start(ns: &Netns, addr: SocketAddr, tag: &'static str) -> Self {
        let listener = ns
            .enter(move || TcpListener::bind(addr))
            .expect("bind in real");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let mut line = String::new();
                        BufReader::new(&s).read_line(&mut line).ok();
                        let mut reply = format!("{tag}\n").into_bytes();
                        reply.resize(reply.len() + REPLY_BYTES, b'x');
                        s.write_all(&reply).ok();
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BulkServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

/// Connects from the client namespace, sends a request, returns (tag, bytes after the tag).
fn fetch(client: &Host, to: SocketAddr) -> (String, usize) {
    let stream = client
        .ns
        .enter(move || TcpStream::connect_timeout(&to, Duration::from_secs(3)))
        .expect("connect through the VIP");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut stream = stream;
    stream.write_all(b"GET\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut tag = String::new();
    reader.read_line(&mut tag).unwrap();
    let mut body = Vec::new();
    reader.read_to_end(&mut body).unwrap();
    (tag.trim().to_owned(), body.len())
}

#[test]
fn tcp_through_the_vip_reaches_both_reals_and_replies_bypass_the_director() {
    let lan = Lan::new().expect("lan");
    let client = lan.add_host("client", "10.98.0.1/24").unwrap();
    let director = lan.add_host("dir", "10.98.0.2/24").unwrap();
    let real1 = lan.add_host("real1", "10.98.0.11/24").unwrap();
    let real2 = lan.add_host("real2", "10.98.0.12/24").unwrap();
    let vip = Ipv4Addr::new(10, 98, 0, 100);
    for real in [&real1, &real2] {
        real.add_vip_on_lo(vip).unwrap();
    }
    client.route_via(vip, director.ip).unwrap();

    // The load balancer, native XDP on the director's interface.
    let mut lab = Lab::new();
    lab.dp.set_mac(director.mac);
    lab.apply(&desired(vec![(
        tcp(vip, 80),
        spec(80, 65_537, &[(real1.ip, 1), (real2.ip, 1)]),
    )]));
    let dp = &mut lab.dp;
    let mode = director
        .ns
        .enter(|| dp.attach("eth0", AttachMode::Driver))
        .expect("native XDP attach on the director");
    assert_eq!(mode, AttachMode::Driver);
    // XDP_TX on a veth is delivered only if the peer runs XDP: an XDP program with no
    // services passes everything.
    let mut peer = Dataplane::load(&LoadOptions::default()).unwrap();
    let port = director.switch_port.clone();
    lan.switch()
        .enter(|| peer.attach(&port, AttachMode::Driver))
        .expect("pass program on the switch port");

    let _s1 = BulkServer::start(&real1.ns, (vip, 80).into(), "real1");
    let _s2 = BulkServer::start(&real2.ns, (vip, 80).into(), "real2");

    let mut per_real: HashMap<String, usize> = HashMap::new();
    let connections = 40;
    for _ in 0..connections {
        let (tag, body) = fetch(&client, (vip, 80).into());
        assert_eq!(body, REPLY_BYTES, "full reply from {tag}");
        *per_real.entry(tag).or_default() += 1;
    }
    assert_eq!(per_real.values().sum::<usize>(), connections);
    assert!(
        per_real.get("real1").copied().unwrap_or(0) > 0,
        "{per_real:?}"
    );
    assert!(
        per_real.get("real2").copied().unwrap_or(0) > 0,
        "{per_real:?}"
    );

    // The director saw the client->server direction only: what it forwarded is the small
    // requests and ACKs, while 40 x 64 KiB of replies went straight to the client; nothing
    // it passed to its own stack was a reply either (those would be frames from the VIP).
    let svc = lab.service_id(&tcp(vip, 80));
    let stats = lab.dp.service_stats(svc).unwrap();
    assert_eq!(stats.conns, connections as u64);
    let reply_bytes = (connections * REPLY_BYTES) as u64;
    assert!(
        stats.bytes < reply_bytes / 10,
        "director forwarded {} bytes for {reply_bytes} reply bytes",
        stats.bytes
    );
    let g = lab.dp.global_stats().unwrap();
    assert_eq!(g.transmitted, stats.packets);
    assert!(g.passed < 40, "director passed {} frames", g.passed);
    assert_eq!(g.drop_no_real, 0);
}
