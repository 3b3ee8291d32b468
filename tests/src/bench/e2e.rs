//! End to end in network namespaces: a client, a director and one real server on a bridge.
//! The same load is sent (a) directly to the real, (b) through our VIP (the XDP program in
//! native mode on the director), (c) through HAProxy in TCP mode on the director, and, as a
//! reference for the cost of the extra hop itself, (r) to the real through the director acting
//! as a plain kernel IP router (the real answers directly, as in direct routing).
//!
//! Loads, both run from the client's namespace:
//! - short connections: `threads` threads, each in a loop: connect, send a request, read the
//!   reply until the server closes, close. The server closes first, so the client keeps no
//!   TIME_WAIT and never runs out of ports;
//! - bulk: one TCP stream from the real to the client.
//!
//! CPU: whole-machine busy time from /proc/stat over each run, minus the CPU time other
//! processes on the machine used meanwhile, per completed connection (or per
//! GB). XDP runs in softirq context, charged to whatever was running, so the director's share is
//! a scenario's figure minus (a)'s; HAProxy's own process time is reported besides.

use std::{
    fs,
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use lb_tests::{
    lab::{Lab, desired, spec, tcp},
    netns::{Host, Lan, Netns},
};
use lb_userspace::{
    dataplane::{Dataplane, LoadOptions},
    model::{AttachMode, Limits},
};

use super::{
    OthersWatch, Params, machine_cpu, median, process_cpu, progress, quietest,
    report::{E2eReport, Scenario},
};

/// Port of the request/reply server.
const SHORT_PORT: u16 = 8080;
/// Port of the bulk server.
const BULK_PORT: u16 = 8081;
/// Request of a short connection.
const REQUEST_BYTES: usize = 100;
/// Reply of a short connection.
const REPLY_BYTES: usize = 1000;
/// How long a client waits for anything.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// How often server threads check their stop flag.
const POLL_MS: i32 = 50;

/// Waits until `fd` is readable or `POLL_MS` passes.
fn readable(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, POLL_MS) > 0 }
}

/// The real's servers: request/reply on `SHORT_PORT`, bulk on `BULK_PORT`, both on 0.0.0.0 so
/// they answer on the real's address and on the VIP.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Servers {
    fn start(ns: &Netns, workers: usize) -> Result<Self> {
        let (short, bulk) = ns.try_enter(|| -> io::Result<(TcpListener, TcpListener)> {
            Ok((
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, SHORT_PORT))?,
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, BULK_PORT))?,
            ))
        })??;
        short.set_nonblocking(true)?;
        bulk.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let reply = Arc::new(vec![b'r'; REPLY_BYTES]);
        for i in 0..workers {
            let (listener, stop, reply) = (short.try_clone()?, stop.clone(), reply.clone());
            threads.push(thread::Builder::new().name(format!("short-srv{i}")).spawn(
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        if !readable(listener.as_raw_fd()) {
                            continue;
                        }
                        let Ok((s, _)) = listener.accept() else {
                            continue;
                        };
                        let _ = serve_short(s, &reply);
                    }
                },
            )?);
        }
        let flag = stop.clone();
        threads.push(
            thread::Builder::new()
                .name("bulk-srv".into())
                .spawn(move || {
                    let mut streams = Vec::new();
                    while !flag.load(Ordering::Relaxed) {
                        if !readable(bulk.as_raw_fd()) {
                            continue;
                        }
                        if let Ok((s, _)) = bulk.accept() {
                            let flag = flag.clone();
                            streams.push(thread::spawn(move || serve_bulk(s, &flag)));
                        }
                        streams.retain(|t: &thread::JoinHandle<()>| !t.is_finished());
                    }
                    for t in streams {
                        let _ = t.join();
                    }
                })?,
        );
        Ok(Self { stop, threads })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Reads the request, sends the reply and closes (the server closes first).
fn serve_short(mut s: TcpStream, reply: &[u8]) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut req = [0u8; REQUEST_BYTES];
    s.read_exact(&mut req)?;
    s.write_all(reply)
}

/// Reads the request line, then streams until the client goes away.
fn serve_bulk(mut s: TcpStream, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    let mut req = [0u8; 5];
    if s.read_exact(&mut req).is_err() {
        return;
    }
    let chunk = vec![b'b'; 128 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match s.write(&chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// One short connection: connect, request, reply until EOF.
fn one_connection(to: SocketAddr, request: &[u8], buf: &mut [u8]) -> io::Result<()> {
    let mut s = TcpStream::connect_timeout(&to, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(request)?;
    let mut got = 0;
    loop {
        match s.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
        if got == buf.len() {
            return Err(io::Error::other("reply too long"));
        }
    }
    if got != REPLY_BYTES {
        return Err(io::Error::other(format!("reply of {got} bytes")));
    }
    Ok(())
}

/// What a load run measured.
struct LoadResult {
    done: u64,
    failed: u64,
    secs: f64,
    /// Whole-machine busy CPU seconds, minus what other processes used.
    busy: f64,
    /// CPU seconds other processes used.
    others: f64,
    /// All CPU seconds (busy + idle).
    total: f64,
    /// Extra process's CPU seconds (HAProxy).
    proxy: Option<f64>,
}

/// Short connections from `client` to `to` for `secs` with `threads` threads.
fn short_load(
    client: &Netns,
    to: SocketAddr,
    threads: usize,
    secs: f64,
    proxy: Option<u32>,
) -> Result<LoadResult> {
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let go = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    client.try_enter(|| -> Result<LoadResult> {
        thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let request = [b'q'; REQUEST_BYTES];
                    let mut buf = vec![0u8; REPLY_BYTES + 1];
                    while !go.load(Ordering::Acquire) {
                        thread::yield_now();
                    }
                    while !stop.load(Ordering::Relaxed) {
                        match one_connection(to, &request, &mut buf) {
                            Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                            Err(_) => {
                                thread::sleep(Duration::from_millis(1));
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                });
            }
            // Measure over a window that starts once every thread runs.
            thread::sleep(Duration::from_millis(20));
            go.store(true, Ordering::Release);
            thread::sleep(Duration::from_millis(100));
            let measured = (|| -> Result<LoadResult> {
                let (d0, f0) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
                let ours: Vec<u32> = proxy.into_iter().collect();
                let watch = OthersWatch::start(&ours);
                let m0 = machine_cpu()?;
                let p0 = proxy.map(process_cpu).transpose()?;
                let t0 = Instant::now();
                thread::sleep(Duration::from_secs_f64(secs));
                let elapsed = t0.elapsed().as_secs_f64();
                let m1 = machine_cpu()?;
                let p1 = proxy.map(process_cpu).transpose()?;
                let (busy, others) = watch.split();
                let (d1, f1) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
                Ok(LoadResult {
                    done: d1 - d0,
                    failed: f1 - f0,
                    secs: elapsed,
                    busy,
                    others,
                    total: m1.1 - m0.1,
                    proxy: p0.zip(p1).map(|(a, b)| b - a),
                })
            })();
            // The threads stop whatever happened, or the scope would never end.
            stop.store(true, Ordering::Relaxed);
            measured
        })
    })?
}

/// One bulk stream from the server at `to` to `client` for `secs`; `proxy` is a process of
/// ours on the way (HAProxy), not other work.
fn bulk_load(client: &Netns, to: SocketAddr, secs: f64, proxy: Option<u32>) -> Result<LoadResult> {
    let mut s = client
        .try_enter(|| TcpStream::connect_timeout(&to, IO_TIMEOUT))?
        .with_context(|| format!("bulk connect to {to}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(b"BULK\n")?;
    let mut buf = vec![0u8; 256 * 1024];
    // Let the window open.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        ensure!(s.read(&mut buf)? > 0, "bulk stream closed early");
    }
    let ours: Vec<u32> = proxy.into_iter().collect();
    let watch = OthersWatch::start(&ours);
    let m0 = machine_cpu()?;
    let t0 = Instant::now();
    let mut bytes = 0u64;
    let limit = Duration::from_secs_f64(secs);
    while t0.elapsed() < limit {
        let n = s.read(&mut buf)?;
        ensure!(n > 0, "bulk stream closed early");
        bytes += n as u64;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let m1 = machine_cpu()?;
    let (busy, others) = watch.split();
    Ok(LoadResult {
        done: bytes,
        failed: 0,
        secs: elapsed,
        busy,
        others,
        total: m1.1 - m0.1,
        proxy: None,
    })
}

/// HAProxy in TCP mode in the director's namespace, stopped on drop.
struct Haproxy {
    child: Child,
    dir: PathBuf,
}

impl Haproxy {
    fn available() -> bool {
        Command::new("haproxy")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn start(director: &Host, real: Ipv4Addr) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("lb-bench-haproxy-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let cfg = dir.join("haproxy.cfg");
        let mut text = String::from(
            "global\n    maxconn 8000\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    \
             timeout client 30s\n    timeout server 30s\n\n",
        );
        for port in [SHORT_PORT, BULK_PORT] {
            text += &format!(
                "frontend f{port}\n    bind {}:{port}\n    default_backend b{port}\n\n\
                 backend b{port}\n    server real {real}:{port}\n\n",
                director.ip
            );
        }
        fs::write(&cfg, text)?;
        let log = fs::File::create(dir.join("haproxy.log"))?;
        // `ip netns exec` execs HAProxy, so the child's pid is HAProxy's.
        let child = director
            .ns
            .command(&[
                "haproxy".as_ref(),
                "-f".as_ref(),
                cfg.as_os_str(),
                "-db".as_ref(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting haproxy")?;
        Ok(Self { child, dir })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with HAProxy's output if it has exited.
    fn check_running(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default();
            bail!("haproxy exited ({status}):\n{log}");
        }
        Ok(())
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // SAFETY: signalling the process we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Waits until a request/reply exchange with `to` works from `client`.
fn wait_ready(client: &Netns, to: SocketAddr, mut alive: impl FnMut() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while Instant::now() < deadline {
        alive()?;
        let r = client.try_enter(|| {
            let mut buf = vec![0u8; REPLY_BYTES + 1];
            one_connection(to, &[b'q'; REQUEST_BYTES], &mut buf)
        })?;
        match r {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("{to} does not answer: {last}")
}

/// The network and everything running on it.
struct Net {
    lan: Lan,
    client: Host,
    director: Host,
    real: Host,
    vip: Ipv4Addr,
    lab: Lab,
    peer: Dataplane,
}

impl Net {
    fn new() -> Result<Self> {
        let lan = Lan::new()?;
        let client = lan.add_host("bclient", "10.97.0.1/24")?;
        let director = lan.add_host("bdir", "10.97.0.2/24")?;
        let real = lan.add_host("breal", "10.97.0.11/24")?;
        let vip = Ipv4Addr::new(10, 97, 0, 100);
        real.add_vip_on_lo(vip)?;
        client.route_via(vip, director.ip)?;
        for host in [&client, &director] {
            host.ns
                .sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
            host.ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
        }
        for host in [&director, &real] {
            host.ns.sysctl("net.core.somaxconn", "4096")?;
            host.ns.sysctl("net.ipv4.tcp_max_syn_backlog", "4096")?;
        }
        let mut lab = Lab::with_limits(Limits::default());
        lab.dp.set_mac(director.mac);
        lab.apply(&desired(
            [SHORT_PORT, BULK_PORT]
                .into_iter()
                .map(|p| (tcp(vip, p), spec(p, 65_537, &[(real.ip, 1)])))
                .collect(),
        ));
        let peer = Dataplane::load(&LoadOptions::default()).context("pass program")?;
        Ok(Self {
            lan,
            client,
            director,
            real,
            vip,
            lab,
            peer,
        })
    }

    /// Attaches the balancer to the director's interface, and the pass program to its
    /// switch port (native XDP_TX on a veth is delivered only when the peer runs XDP).
    fn attach(&mut self) -> Result<()> {
        self.lab.dp.tick();
        let dp = &mut self.lab.dp;
        self.director
            .ns
            .try_enter(|| dp.attach("eth0", AttachMode::Driver))??;
        let port = self.director.switch_port.clone();
        let peer = &mut self.peer;
        self.lan
            .switch()
            .try_enter(|| peer.attach(&port, AttachMode::Driver))??;
        Ok(())
    }

    /// Makes the director a plain IP router for the client's traffic to the real: the
    /// client routes the real's address via the director, which forwards in the kernel (no
    /// XDP); the real answers the client directly, as in direct routing.
    fn route_via_director(&self, on: bool) -> Result<()> {
        let d = &self.director.ns;
        d.sysctl("net.ipv4.ip_forward", if on { "1" } else { "0" })?;
        if on {
            // Forwarding out of the interface a packet came in on would send the client a
            // redirect to the real.
            d.sysctl("net.ipv4.conf.all.send_redirects", "0")?;
            d.sysctl("net.ipv4.conf.eth0.send_redirects", "0")?;
            self.client.route_via(self.real.ip, self.director.ip)?;
        } else {
            self.client
                .ns
                .ip(["route", "del", &format!("{}/32", self.real.ip)])?;
        }
        Ok(())
    }

    fn detach(&mut self) -> Result<()> {
        let dp = &mut self.lab.dp;
        self.director.ns.try_enter(|| dp.detach())??;
        let peer = &mut self.peer;
        self.lan.switch().try_enter(|| peer.detach())??;
        Ok(())
    }
}

/// Results of one scenario over the rounds.
#[derive(Default)]
struct Acc {
    conns: Vec<f64>,
    cpu_per_conn: Vec<f64>,
    busy_pct: Vec<f64>,
    others_pct: Vec<f64>,
    proxy_per_conn: Vec<f64>,
    failures: u64,
    gbps: Vec<f64>,
    cpu_per_gb: Vec<f64>,
    bulk_busy_pct: Vec<f64>,
    bulk_others_pct: Vec<f64>,
}

impl Acc {
    /// The most CPU other processes used in any of the runs, % of all CPUs.
    fn noise(&self) -> f64 {
        self.others_pct
            .iter()
            .chain(&self.bulk_others_pct)
            .copied()
            .fold(0.0, f64::max)
    }

    fn merge(&mut self, other: Acc) {
        self.conns.extend(other.conns);
        self.cpu_per_conn.extend(other.cpu_per_conn);
        self.busy_pct.extend(other.busy_pct);
        self.others_pct.extend(other.others_pct);
        self.proxy_per_conn.extend(other.proxy_per_conn);
        self.failures += other.failures;
        self.gbps.extend(other.gbps);
        self.cpu_per_gb.extend(other.cpu_per_gb);
        self.bulk_busy_pct.extend(other.bulk_busy_pct);
        self.bulk_others_pct.extend(other.bulk_others_pct);
    }
}

fn run_scenario(net: &mut Net, key: &str, params: &Params, acc: &mut Acc) -> Result<()> {
    let (short, bulk, haproxy) = match key {
        "a" => (
            SocketAddr::from((net.real.ip, SHORT_PORT)),
            SocketAddr::from((net.real.ip, BULK_PORT)),
            None,
        ),
        "r" => {
            net.route_via_director(true)?;
            (
                SocketAddr::from((net.real.ip, SHORT_PORT)),
                SocketAddr::from((net.real.ip, BULK_PORT)),
                None,
            )
        }
        "b" => {
            net.attach()?;
            (
                SocketAddr::from((net.vip, SHORT_PORT)),
                SocketAddr::from((net.vip, BULK_PORT)),
                None,
            )
        }
        _ => (
            SocketAddr::from((net.director.ip, SHORT_PORT)),
            SocketAddr::from((net.director.ip, BULK_PORT)),
            Some(Haproxy::start(&net.director, net.real.ip)?),
        ),
    };
    let mut haproxy = haproxy;
    let result = (|| -> Result<()> {
        wait_ready(&net.client.ns, short, || match haproxy.as_mut() {
            Some(h) => h.check_running(),
            None => Ok(()),
        })?;
        let proxy = haproxy.as_ref().map(Haproxy::pid);
        let r = short_load(
            &net.client.ns,
            short,
            params.e2e_threads,
            params.e2e_secs,
            proxy,
        )?;
        ensure!(
            r.done > 0,
            "({key}): no connection completed ({} failed)",
            r.failed
        );
        acc.conns.push(r.done as f64 / r.secs);
        acc.cpu_per_conn.push(r.busy / r.done as f64 * 1e6);
        acc.busy_pct.push(r.busy / r.total * 100.0);
        acc.others_pct.push(r.others / r.total * 100.0);
        if let Some(p) = r.proxy {
            acc.proxy_per_conn.push(p / r.done as f64 * 1e6);
        }
        acc.failures += r.failed;
        thread::sleep(Duration::from_millis(300));
        let b = bulk_load(&net.client.ns, bulk, params.e2e_secs, proxy)?;
        let gb = b.done as f64 / 1e9;
        acc.gbps.push(gb * 8.0 / b.secs);
        acc.cpu_per_gb.push(b.busy / gb);
        acc.bulk_busy_pct.push(b.busy / b.total * 100.0);
        acc.bulk_others_pct.push(b.others / b.total * 100.0);
        Ok(())
    })();
    drop(haproxy);
    match key {
        "b" => net.detach()?,
        "r" => net.route_via_director(false)?,
        _ => {}
    }
    thread::sleep(Duration::from_millis(300));
    result
}

/// Runs the three scenarios.
pub fn run(params: &Params) -> Result<E2eReport> {
    let mut net = Net::new()?;
    let _servers = Servers::start(&net.real.ns, 8)?;
    let mut keys = vec![
        ("a", "direct to the real"),
        (
            "r",
            "reference: to the real, routed by the director's kernel (no XDP)",
        ),
        ("b", "through our VIP (XDP)"),
    ];
    let mut skipped = Vec::new();
    if Haproxy::available() {
        keys.push(("c", "through HAProxy (TCP mode)"));
    } else {
        skipped.push(
            "(c) HAProxy: the `haproxy` command is not installed (`cargo xtask bench` \
             installs Debian's package)"
                .to_owned(),
        );
    }
    let mut accs: Vec<Acc> = keys.iter().map(|_| Acc::default()).collect();
    for round in 0..params.e2e_rounds {
        for (i, (key, name)) in keys.iter().enumerate() {
            progress(&format!(
                "  round {}/{}: ({key}) {name}",
                round + 1,
                params.e2e_rounds
            ));
            let (one, _) = quietest(&format!("({key}) {name}"), params.attempts, || {
                let mut one = Acc::default();
                run_scenario(&mut net, key, params, &mut one)
                    .with_context(|| format!("scenario ({key}) {name}"))?;
                let noise = one.noise();
                Ok((one, noise))
            })?;
            accs[i].merge(one);
        }
    }
    let scenarios = keys
        .iter()
        .zip(accs)
        .map(|((key, name), a)| Scenario {
            key: (*key).into(),
            name: (*name).into(),
            conns_per_s: median(&a.conns),
            conns_per_s_runs: a.conns,
            failures: a.failures,
            cpu_us_per_conn: median(&a.cpu_per_conn),
            busy_pct: median(&a.busy_pct),
            others_pct: median(
                &a.others_pct
                    .iter()
                    .zip(&a.bulk_others_pct)
                    .map(|(s, b)| s.max(*b))
                    .collect::<Vec<_>>(),
            ),
            proxy_us_per_conn: (!a.proxy_per_conn.is_empty()).then(|| median(&a.proxy_per_conn)),
            gbps: median(&a.gbps),
            gbps_runs: a.gbps,
            cpu_s_per_gb: median(&a.cpu_per_gb),
            bulk_busy_pct: median(&a.bulk_busy_pct),
        })
        .collect();
    Ok(E2eReport {
        rounds: params.e2e_rounds,
        secs: params.e2e_secs,
        threads: params.e2e_threads,
        request_bytes: REQUEST_BYTES,
        reply_bytes: REPLY_BYTES,
        scenarios,
        skipped,
    })
}
