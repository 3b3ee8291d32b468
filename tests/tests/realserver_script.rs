//! `scripts/realserver.sh` on hosts made of network namespaces: it puts VIPs on `lo` and
//! suppresses ARP for them, idempotently, and undoes it; `status` reports with LSB exit codes.
//! The point is checked on the wire: with the script started, a client on the LAN cannot
//! resolve the VIP (ARP for IPv4, neighbour discovery for IPv6), while packets sent to the
//! real's MAC address, as the director sends them, are accepted. Needs root.
//!
//! The script keeps its state in a private directory per test
//! (`LB_XDP_REALSERVER_STATE_DIR`), so the host's `/run` is never touched.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use lb_tests::netns::{Capture, Host, Lan, Netns, TcpEchoServer, tcp_request};

const VIP4: &str = "10.99.100.1";
const VIP6: &str = "fd00:99:100::1";
const CLIENT6: &str = "fd00:99:1::1";
const REAL6: &str = "fd00:99:1::11";
/// Connects that must fail give up after this long.
const SHORT: Duration = Duration::from_millis(700);
/// Connects that must succeed get this long.
const OK: Duration = Duration::from_secs(3);

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "realserver.sh system tests need root");
}

/// The script, relative to this package.
fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/realserver.sh")
        .to_string_lossy()
        .into_owned()
}

/// A state directory of its own for the script, removed on drop.
struct StateDir(PathBuf);

impl StateDir {
    fn new() -> StateDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lbt{}-{n}-realserver", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        StateDir(dir)
    }

    fn env(&self) -> String {
        format!("LB_XDP_REALSERVER_STATE_DIR={}", self.0.display())
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `prefix... sh realserver.sh args...` in `ns`: exit code, stdout, stderr.
fn run_with(ns: &Netns, prefix: &[&str], state: &StateDir, args: &[&str]) -> (i32, String, String) {
    let env = state.env();
    let script = script();
    let mut cmd: Vec<&str> = prefix.to_vec();
    cmd.extend(["env", &env, "sh", &script]);
    cmd.extend(args);
    let out = ns
        .command(&cmd)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// Runs the script in `ns` as root: exit code, stdout, stderr.
fn run(ns: &Netns, state: &StateDir, args: &[&str]) -> (i32, String, String) {
    run_with(ns, &[], state, args)
}

/// Runs the script in `ns` with [`Netns::exec`], which fails on a non-zero exit; its stdout.
fn exec(ns: &Netns, state: &StateDir, args: &[&str]) -> String {
    let env = state.env();
    let script = script();
    let mut cmd = vec!["env", env.as_str(), "sh", script.as_str()];
    cmd.extend(args);
    ns.exec(&cmd)
        .unwrap_or_else(|e| panic!("realserver.sh {args:?}: {e:#}"))
}

/// `net.ipv4.conf.<dev>.<key>` in `ns`.
fn sysctl(ns: &Netns, dev: &str, key: &str) -> String {
    let path = format!("/proc/sys/net/ipv4/conf/{dev}/{key}");
    ns.exec(&["cat", &path]).unwrap().trim().to_owned()
}

/// `(all.arp_ignore, all.arp_announce, lo.arp_ignore, lo.arp_announce)`.
fn arp_settings(ns: &Netns) -> [String; 4] {
    [
        sysctl(ns, "all", "arp_ignore"),
        sysctl(ns, "all", "arp_announce"),
        sysctl(ns, "lo", "arp_ignore"),
        sysctl(ns, "lo", "arp_announce"),
    ]
}

#[track_caller]
fn assert_arp(ns: &Netns, ignore: &str, announce: &str) {
    assert_eq!(
        arp_settings(ns),
        [ignore, announce, ignore, announce].map(str::to_owned),
        "(all.arp_ignore, all.arp_announce, lo.arp_ignore, lo.arp_announce)"
    );
}

/// The addresses on `lo`, as `addr/len`.
fn lo_addrs(ns: &Netns) -> Vec<String> {
    let out = ns.ip(["-o", "addr", "show", "dev", "lo"]).unwrap();
    out.lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .map(str::to_owned)
        .collect()
}

/// The client's neighbour entry for `addr` on eth0 (`ip neigh show`).
fn neighbour(host: &Host, addr: &str) -> String {
    host.ns
        .ip(["neigh", "show", "to", addr, "dev", "eth0"])
        .unwrap()
        .trim()
        .to_owned()
}

fn add_ipv6(host: &Host, cidr: &str) {
    host.ns
        .ip(["-6", "addr", "add", cidr, "dev", "eth0", "nodad"])
        .unwrap();
}

/// Routes `vip/128` on the client: on-link (it solicits the VIP itself) or via `gw`.
fn route6(client: &Host, vip: &str, gw: Option<&str>) {
    let dst = format!("{vip}/128");
    let mut args = vec!["-6", "route", "replace", dst.as_str()];
    if let Some(gw) = gw {
        args.extend(["via", gw]);
    }
    args.extend(["dev", "eth0"]);
    client.ns.ip(args).unwrap();
}

/// Asserts that a TCP connect to `to` fails quickly and that the client's neighbour entry for
/// the VIP is unresolved: nobody answered ARP / neighbour solicitation.
#[track_caller]
fn assert_unresolvable(client: &Host, to: SocketAddr) {
    let started = Instant::now();
    let err = tcp_request(&client.ns, to, "who-has", SHORT).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(&format!("TCP connect to {to}")), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(2), "{msg}");
    let entry = neighbour(client, &to.ip().to_string());
    assert!(
        entry.contains("INCOMPLETE") || entry.contains("FAILED"),
        "the client resolved {}: {entry:?}",
        to.ip()
    );
    eprintln!(
        "as expected, {} is unresolvable: {msg}; neighbour entry: {entry}",
        to.ip()
    );
}

#[test]
fn start_status_stop_and_what_the_lan_sees() {
    require_root();
    let lan = Lan::new().unwrap();
    let client = lan.add_host("client", "10.99.1.1/24").unwrap();
    let real = lan.add_host("real", "10.99.1.11/24").unwrap();
    add_ipv6(&client, &format!("{CLIENT6}/64"));
    add_ipv6(&real, &format!("{REAL6}/64"));
    let vip4: Ipv4Addr = VIP4.parse().unwrap();
    let vip6: Ipv6Addr = VIP6.parse().unwrap();
    let to4 = SocketAddr::from((vip4, 8080));
    let to6 = SocketAddr::from((vip6, 8081));
    let _srv4 = TcpEchoServer::start(&real.ns, "0.0.0.0:8080".parse().unwrap(), "real4").unwrap();
    let _srv6 = TcpEchoServer::start(&real.ns, "[::]:8081".parse().unwrap(), "real6").unwrap();
    let state = StateDir::new();

    // Control: a VIP on lo with the kernel's default ARP settings IS answered by ARP, so what
    // follows tests the script's settings, not the topology.
    real.ns
        .ip(["addr", "add", &format!("{VIP4}/32"), "dev", "lo"])
        .unwrap();
    client.route_on_link(vip4).unwrap();
    assert_eq!(
        tcp_request(&client.ns, to4, "ctl", OK).unwrap(),
        "real4 ctl"
    );
    real.ns
        .ip(["addr", "del", &format!("{VIP4}/32"), "dev", "lo"])
        .unwrap();
    client.flush_neighbors().unwrap();
    assert_arp(&real.ns, "0", "0");
    // The same control for IPv6: the VIP on the LAN interface is answered by neighbour
    // discovery.
    real.ns
        .ip([
            "-6",
            "addr",
            "add",
            &format!("{VIP6}/128"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
    route6(&client, VIP6, None);
    assert_eq!(
        tcp_request(&client.ns, to6, "ctl6", OK).unwrap(),
        "real6 ctl6"
    );
    let (mac, entry) = client.neighbour(vip6.into()).unwrap().unwrap();
    assert_eq!(mac, Some(real.mac), "{entry}");
    real.ns
        .ip(["-6", "addr", "del", &format!("{VIP6}/128"), "dev", "eth0"])
        .unwrap();
    client.flush_neighbors().unwrap();

    // Before start: not set up.
    let (code, out, err) = run(&real.ns, &state, &["status", VIP4, VIP6]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains(&format!("{VIP4}: on lo: no; ARP answers: NOT suppressed")),
        "{out}"
    );
    assert!(out.contains(&format!("{VIP6}: on lo: no")), "{out}");

    // start: the VIPs on lo as host addresses, ARP suppressed on all and lo.
    exec(&real.ns, &state, &["start", VIP4, VIP6]);
    let addrs = lo_addrs(&real.ns);
    assert!(addrs.contains(&format!("{VIP4}/32")), "{addrs:?}");
    assert!(addrs.contains(&format!("{VIP6}/128")), "{addrs:?}");
    assert_arp(&real.ns, "1", "2");
    // Twice: the same state.
    exec(&real.ns, &state, &["start", VIP4, VIP6]);
    assert_eq!(lo_addrs(&real.ns), addrs);
    assert_arp(&real.ns, "1", "2");
    let (code, out, err) = run(&real.ns, &state, &["status", VIP4, VIP6]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "{VIP4}: on lo: yes; ARP answers: suppressed (all.arp_ignore=1, all.arp_announce=2)"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("{VIP6}: on lo: yes")), "{out}");

    // IPv4: another host on the LAN cannot resolve the VIP by ARP...
    client.route_on_link(vip4).unwrap();
    assert_unresolvable(&client, to4);
    // ...but frames addressed to the real's MAC (the director's job) are accepted.
    client.route_via(vip4, real.ip).unwrap();
    assert_eq!(tcp_request(&client.ns, to4, "dr", OK).unwrap(), "real4 dr");

    // IPv6: nobody answers the neighbour solicitations for the VIP on lo: they reach the real,
    // and no advertisement leaves it...
    route6(&client, VIP6, None);
    let ndp = Capture::start(
        &real.ns,
        "eth0",
        "icmp6 and (ip6[40] == 135 or ip6[40] == 136)",
    )
    .unwrap();
    assert_unresolvable(&client, to6);
    thread::sleep(Duration::from_millis(200));
    let seen = ndp.stop();
    let solicits = seen
        .iter()
        .filter(|l| l.contains(&format!("neighbor solicitation, who has {VIP6}")))
        .count();
    assert!(
        solicits > 0,
        "no solicitation for the VIP reached the real: {seen:#?}"
    );
    let adverts: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains(&format!("neighbor advertisement, tgt is {VIP6}")))
        .collect();
    assert!(
        adverts.is_empty(),
        "the real advertised the VIP: {adverts:#?}"
    );
    // ...but packets routed to the real's address (its MAC) are accepted.
    route6(&client, VIP6, Some(REAL6));
    assert_eq!(
        tcp_request(&client.ns, to6, "dr6", OK).unwrap(),
        "real6 dr6"
    );

    // stop: the VIPs leave lo, the ARP settings are what they were.
    exec(&real.ns, &state, &["stop", VIP4, VIP6]);
    let addrs = lo_addrs(&real.ns);
    assert!(
        !addrs
            .iter()
            .any(|a| a.starts_with(VIP4) || a.starts_with(VIP6)),
        "{addrs:?}"
    );
    assert_arp(&real.ns, "0", "0");
    let (code, out, _) = run(&real.ns, &state, &["status", VIP4, VIP6]);
    assert_eq!(code, 3, "{out}");
    // The real no longer accepts the VIP, even sent to its MAC.
    assert!(tcp_request(&client.ns, to4, "gone", SHORT).is_err());
    // Stopping what is stopped is fine.
    let out = exec(&real.ns, &state, &["stop", VIP4, VIP6]);
    assert!(out.contains(&format!("{VIP4}: not on lo")), "{out}");
    assert_arp(&real.ns, "0", "0");
    // Nothing is left in the state directory.
    let left: Vec<_> = std::fs::read_dir(&state.0)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn arp_settings_are_restored_when_the_last_ipv4_vip_stops() {
    require_root();
    let ns = Netns::new("rs-partial").unwrap();
    let state = StateDir::new();
    // A setting the host had before: restored as it was, not to 0.
    ns.sysctl("net.ipv4.conf.all.arp_announce", "1").unwrap();

    // An IPv6 VIP needs no ARP setting.
    exec(&ns, &state, &["start", VIP6]);
    assert_eq!(arp_settings(&ns), ["0", "1", "0", "0"].map(str::to_owned));

    exec(&ns, &state, &["start", "10.99.100.1"]);
    exec(&ns, &state, &["start", "10.99.100.2"]);
    assert_arp(&ns, "1", "2");
    // One IPv4 VIP stopped, one still on lo: ARP stays suppressed.
    let out = exec(&ns, &state, &["stop", "10.99.100.1"]);
    assert!(out.contains("stay suppressed"), "{out}");
    assert_arp(&ns, "1", "2");
    assert_eq!(run(&ns, &state, &["status", "10.99.100.2"]).0, 0);
    assert_eq!(run(&ns, &state, &["status", "10.99.100.1"]).0, 3);
    assert_eq!(
        run(&ns, &state, &["status", "10.99.100.1", "10.99.100.2"]).0,
        3
    );
    // The last one: the settings from before the first start come back.
    exec(&ns, &state, &["stop", "10.99.100.2"]);
    assert_eq!(arp_settings(&ns), ["0", "1", "0", "0"].map(str::to_owned));
    // The IPv6 VIP was left alone.
    assert!(lo_addrs(&ns).contains(&format!("{VIP6}/128")));
    // A VIP written differently is the same VIP.
    exec(&ns, &state, &["stop", "FD00:99:100:0::1"]);
    assert!(!lo_addrs(&ns).contains(&format!("{VIP6}/128")));
}

#[test]
fn bad_usage_non_root_and_missing_ip_are_clear_errors() {
    require_root();
    let ns = Netns::new("rs-usage").unwrap();
    let state = StateDir::new();
    let before = lo_addrs(&ns);
    let cases: &[(&[&str], i32, &str)] = &[
        (&[], 2, "usage: realserver.sh start|stop|status VIP..."),
        (&["restart", VIP4], 2, "unknown action \"restart\""),
        (&["start"], 2, "start: give at least one VIP"),
        (
            &["start", "300.1.1.1"],
            2,
            "300.1.1.1 is not an IPv4 or IPv6 address",
        ),
        (
            &["start", "10.0.0"],
            2,
            "10.0.0 is not an IPv4 or IPv6 address",
        ),
        (
            &["stop", "fd00::zz"],
            2,
            "fd00::zz is not an IPv4 or IPv6 address",
        ),
        (&["status", "10.99.100.1/32"], 2, "without a prefix length"),
        (
            &["start", "224.0.0.1"],
            2,
            "224.0.0.1 is not a unicast address",
        ),
        (&["start", "::1"], 2, "::1 is not a unicast address"),
        // Every VIP is checked before anything changes.
        (
            &["start", VIP4, "bogus"],
            2,
            "bogus is not an IPv4 or IPv6 address",
        ),
    ];
    for (args, code, fragment) in cases {
        let (got, out, err) = run(&ns, &state, args);
        assert_eq!(got, *code, "{args:?}: {out}{err}");
        assert!(err.contains(fragment), "{args:?}: {err}");
    }
    assert_eq!(lo_addrs(&ns), before, "a failed start changed lo");
    assert_arp(&ns, "0", "0");
    let (code, out, _) = run(&ns, &state, &["--help"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("usage: realserver.sh"), "{out}");

    // Not root: start and stop are refused (4); status works (3: not set up).
    let nobody_cmd = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let (code, _, err) = run_with(&ns, &nobody_cmd, &state, &["start", VIP4]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("run it as root"), "{err}");
    let (code, out, err) = run_with(&ns, &nobody_cmd, &state, &["status", VIP4]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains(&format!("{VIP4}: on lo: no")), "{out}");

    // No ip(8): hidden in a private mount namespace of this test.
    let script = script();
    let hide = format!(
        "mount --bind /dev/null \"$(readlink -f \"$(command -v ip)\")\" && exec sh {script} status {VIP4}"
    );
    let out = ns
        .command(&[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &hide,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("ip(8) not found: install iproute2"), "{err}");
    assert_eq!(lo_addrs(&ns), before);
}
