//! Director high availability in network namespaces: two directors on one LAN with the real
//! servers, either active/backup with keepalived's VRRP moving the VIP ([`VrrpTopology`],
//! [`Keepalived`]) or active-active behind a router's ECMP route ([`EcmpTopology`]); plus
//! long-lived connections patient enough to ride out a failover ([`PatientConns`]) and
//! readers for what the directors report (`lbadm` listings, the kernel's TCP counters).
//!
//! Both directors run the same `lb-agent` configuration, so their Maglev tables are identical
//! and either one continues any flow: a mid-flow packet that misses the connection table is
//! scheduled through the same table, to the same real.
//!
//! Facts baked in:
//! - Native `XDP_TX` on a veth needs an XDP program on the peer: each director's switch port
//!   runs a pass-everything instance of the program, as in [`crate::topo::DrTopology`].
//! - A director's switch port does not get unknown-unicast floods (`bridge link set ... flood
//!   off`). A physical NIC drops frames for other MAC addresses before XDP sees them; a veth
//!   does not, and the XDP program does not check the destination MAC. Without this, when the
//!   master's port goes down the bridge floods the frames still addressed to the master's MAC
//!   and the backup forwards them before VRRP has moved anything, which hides the takeover.
//!   Known unicast, broadcast (ARP) and multicast (VRRP) reach the directors as usual.
//! - keepalived runs in the director's namespace through `ip netns exec` (its own `/sys`),
//!   in its own process group, without forking into the background and with its own pid
//!   files, and is killed by process group.

use std::{
    collections::BTreeMap,
    fs,
    net::{Ipv4Addr, SocketAddr},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use lb_userspace::{
    dataplane::{Dataplane, LoadOptions},
    model::AttachMode,
};

use crate::{
    agent::Agent,
    netns::{Host, Lan, Netns, TcpEchoServer, TcpLineClient},
};

/// The example configuration the VRRP test runs, with per-node values substituted.
pub const KEEPALIVED_EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../configs/keepalived-vrrp.conf"
);
/// The BIRD example configuration.
pub const BIRD_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/bird-ecmp.conf");

/// Loads a pass-everything XDP program onto each director's switch port (so that the
/// director's native `XDP_TX` frames are delivered) and stops unknown-unicast flooding to it
/// (so that a director only sees frames addressed to it, as behind a NIC's MAC filter).
fn prepare_director_ports(lan: &Lan, directors: &[&Host]) -> Result<Vec<Dataplane>> {
    let mut programs = Vec::new();
    for director in directors {
        let mut peer = Dataplane::load(&LoadOptions::default()).context("pass program")?;
        let port = director.switch_port.clone();
        lan.switch()
            .enter(|| peer.attach(&port, AttachMode::Driver))
            .with_context(|| format!("XDP on switch port {port}"))?;
        lan.switch()
            .exec(&["bridge", "link", "set", "dev", &port, "flood", "off"])?;
        programs.push(peer);
    }
    Ok(programs)
}

/// Adds `n` real servers at `.11`, `.12`, ... of `10.<net>.0.0/24`, each with `vip` on `lo`.
fn add_reals(lan: &Lan, net: u8, n: usize, vip: Ipv4Addr) -> Result<Vec<Host>> {
    (0..n)
        .map(|i| {
            let real = lan.add_host(
                &format!("real{}", i + 1),
                &format!("10.{net}.0.{}/24", 11 + i),
            )?;
            real.add_vip_on_lo(vip)?;
            Ok(real)
        })
        .collect()
}

/// Active/backup: client `.1`, directors `.2` and `.3`, reals `.11` and up, all on one LAN
/// `10.<net>.0.0/24`. The VIP `.100` is in the LAN's subnet, so the client finds it by ARP:
/// whichever director holds it (keepalived puts it on that director's `eth0`) answers.
pub struct VrrpTopology {
    /// The bridge.
    pub lan: Lan,
    /// The client.
    pub client: Host,
    /// The two directors (master first).
    pub directors: [Host; 2],
    /// The real servers, VIP on `lo`.
    pub reals: Vec<Host>,
    /// The VIP.
    pub vip: Ipv4Addr,
    _peer_xdp: Vec<Dataplane>,
}

impl VrrpTopology {
    /// Builds the network with `reals` real servers.
    pub fn new(net: u8, reals: usize) -> Result<Self> {
        let lan = Lan::new()?;
        let addr = |last: u8| format!("10.{net}.0.{last}/24");
        let client = lan.add_host("client", &addr(1))?;
        let directors = [
            lan.add_host("dir1", &addr(2))?,
            lan.add_host("dir2", &addr(3))?,
        ];
        let vip = Ipv4Addr::new(10, net, 0, 100);
        let reals = add_reals(&lan, net, reals, vip)?;
        let peer_xdp = prepare_director_ports(&lan, &[&directors[0], &directors[1]])?;
        Ok(Self {
            lan,
            client,
            directors,
            reals,
            vip,
            _peer_xdp: peer_xdp,
        })
    }

    /// Whether director `i` has the VIP on its `eth0`.
    pub fn holds_vip(&self, i: usize) -> bool {
        holds_address(&self.directors[i].ns, self.vip)
    }
}

/// Whether `ip` is configured on an interface in `ns`.
pub fn holds_address(ns: &Netns, ip: Ipv4Addr) -> bool {
    ns.ip(["-4", "-o", "addr", "show"])
        .is_ok_and(|out| out.contains(&format!("inet {ip}/")))
}

/// Active-active behind ECMP:
///
/// ```text
/// client 10.<net>.1.1 --- 10.<net>.1.254 router 10.<net>.0.254 --- LAN 10.<net>.0.0/24:
///                                                                   directors .2 .3, reals .11..
/// ```
///
/// The VIP `10.<net>.100.1` is off every subnet. The router reaches it by a multipath route
/// via both directors with L4 hashing (`fib_multipath_hash_policy=1`), as it would with a
/// route learnt from each director over BGP; the reals answer the client through the router,
/// bypassing the directors.
pub struct EcmpTopology {
    /// The LAN of the directors, the reals and the router.
    pub lan: Lan,
    /// The client (not on the LAN: its `eth0` is a point-to-point link to the router).
    pub client: Netns,
    /// The client's address.
    pub client_ip: Ipv4Addr,
    /// The router, `eth0` on the LAN, `eth1` towards the client.
    pub router: Host,
    /// The two directors.
    pub directors: [Host; 2],
    /// The real servers, VIP on `lo`, replying via the router.
    pub reals: Vec<Host>,
    /// The VIP.
    pub vip: Ipv4Addr,
    _peer_xdp: Vec<Dataplane>,
}

impl EcmpTopology {
    /// Builds the network with `reals` real servers and the multipath route over both
    /// directors.
    pub fn new(net: u8, reals: usize) -> Result<Self> {
        let lan = Lan::new()?;
        let addr = |last: u8| format!("10.{net}.0.{last}/24");
        let router = lan.add_host("router", &addr(254))?;
        let directors = [
            lan.add_host("dir1", &addr(2))?,
            lan.add_host("dir2", &addr(3))?,
        ];
        let vip = Ipv4Addr::new(10, net, 100, 1);
        let reals = add_reals(&lan, net, reals, vip)?;
        let peer_xdp = prepare_director_ports(&lan, &[&directors[0], &directors[1]])?;

        // The client's link to the router.
        let client = Netns::new("client")?;
        let client_ip = Ipv4Addr::new(10, net, 1, 1);
        let router_side = Ipv4Addr::new(10, net, 1, 254);
        client.ip([
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth1",
            "netns",
            router.ns.name(),
        ])?;
        client.tx_offload_off("eth0")?;
        router.ns.tx_offload_off("eth1")?;
        client.ip(["addr", "add", &format!("{client_ip}/24"), "dev", "eth0"])?;
        client.ip(["link", "set", "eth0", "up"])?;
        client.ip(["route", "add", "default", "via", &router_side.to_string()])?;
        router
            .ns
            .ip(["addr", "add", &format!("{router_side}/24"), "dev", "eth1"])?;
        router.ns.ip(["link", "set", "eth1", "up"])?;

        router.ns.sysctl("net.ipv4.ip_forward", "1")?;
        router
            .ns
            .sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        let client_net = format!("10.{net}.1.0/24");
        for real in &reals {
            real.add_route(&client_net, router.ip)?;
        }
        let topo = Self {
            lan,
            client,
            client_ip,
            router,
            directors,
            reals,
            vip,
            _peer_xdp: peer_xdp,
        };
        topo.route_vip_via(&[0, 1])?;
        Ok(topo)
    }

    /// Points the router's VIP route at the given directors (several: an ECMP route), as a
    /// routing daemon does when their announcements come and go.
    pub fn route_vip_via(&self, directors: &[usize]) -> Result<()> {
        ensure!(!directors.is_empty(), "no next hop");
        let mut args = vec![
            "route".to_owned(),
            "replace".to_owned(),
            format!("{}/32", self.vip),
        ];
        if let [only] = directors {
            args.extend(["via".to_owned(), self.directors[*only].ip.to_string()]);
        } else {
            for &d in directors {
                args.extend([
                    "nexthop".to_owned(),
                    "via".to_owned(),
                    self.directors[d].ip.to_string(),
                ]);
            }
        }
        self.router.ns.ip(&args)?;
        Ok(())
    }
}

/// The per-node values of a VRRP director, substituted into [`KEEPALIVED_EXAMPLE`].
#[derive(Clone, Debug)]
pub struct VrrpNode {
    /// `global_defs { router_id }`: differs between the two directors.
    pub router_id: String,
    /// `MASTER` or `BACKUP`.
    pub state: &'static str,
    /// VRRP priority (the master's is higher).
    pub priority: u8,
    /// `virtual_router_id`: the same on both directors, unique on the LAN.
    pub virtual_router_id: u8,
    /// The VIP.
    pub vip: Ipv4Addr,
    /// The track script's command line (the example runs `/usr/local/bin/lbadm -L -n`).
    pub track_script: String,
}

/// A `virtual_router_id` that differs between test runs and between calls in one run.
pub fn unique_vrid() -> u8 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = std::process::id().wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
    (n % 255 + 1) as u8
}

/// Rewrites the example keepalived configuration for one node: each keyword line
/// (`router_id`, `state`, `virtual_router_id`, `priority`, the track script's `script`, the
/// address in `virtual_ipaddress`) gets the node's value. Each must occur exactly once, so a
/// changed example fails loudly instead of being half rewritten.
pub fn keepalived_config(example: &str, node: &VrrpNode) -> Result<String> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut in_vips = false;
    let mut out = String::new();
    for line in example.lines() {
        let code = line.split('#').next().unwrap_or_default();
        let indent = &line[..line.len() - line.trim_start().len()];
        let first = code.split_whitespace().next().unwrap_or_default();
        let replaced = match first {
            "router_id" => Some(("router_id", format!("router_id {}", node.router_id))),
            "state" => Some(("state", format!("state {}", node.state))),
            "virtual_router_id" => Some((
                "virtual_router_id",
                format!("virtual_router_id {}", node.virtual_router_id),
            )),
            "priority" => Some(("priority", format!("priority {}", node.priority))),
            "script" => Some(("script", format!("script \"{}\"", node.track_script))),
            _ if in_vips && first.parse::<Ipv4Addr>().is_ok() => {
                Some(("virtual_ipaddress", node.vip.to_string()))
            }
            _ => None,
        };
        if first == "virtual_ipaddress" {
            in_vips = true;
        } else if first == "}" {
            in_vips = false;
        }
        match replaced {
            Some((key, text)) => {
                *seen.entry(key).or_default() += 1;
                out.push_str(indent);
                out.push_str(&text);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    for key in [
        "router_id",
        "state",
        "virtual_router_id",
        "priority",
        "script",
        "virtual_ipaddress",
    ] {
        let n = seen.get(key).copied().unwrap_or(0);
        ensure!(n == 1, "the example has {n} `{key}` lines, expected 1");
    }
    Ok(out)
}

/// keepalived (VRRP only) running in a namespace, in its own process group. Killed with its
/// children on drop.
pub struct Keepalived {
    child: Option<Child>,
    pgid: i32,
    dir: PathBuf,
    /// Its console log (stdout and stderr).
    pub log: PathBuf,
}

static KEEPALIVEDS: AtomicU32 = AtomicU32::new(0);

impl Keepalived {
    /// Writes `config` and starts `keepalived -P --dont-fork --log-console` in `ns`.
    pub fn start(ns: &Netns, config: &str) -> Result<Self> {
        let n = KEEPALIVEDS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lb-ha-keepalived-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let conf = dir.join("keepalived.conf");
        fs::write(&conf, config)?;
        let log = dir.join("keepalived.log");
        let out = fs::File::create(&log)?;
        let pid = |name: &str| format!("{}", dir.join(name).display());
        let mut cmd = ns.command(&["keepalived"]);
        cmd.arg("--vrrp")
            .arg("--dont-fork")
            .arg("--log-console")
            .arg("--log-detail")
            .arg("--no-syslog")
            .arg(format!("--use-file={}", conf.display()))
            .arg(format!("--pid={}", pid("keepalived.pid")))
            .arg(format!("--vrrp_pid={}", pid("vrrp.pid")))
            .arg(format!("--checkers_pid={}", pid("checkers.pid")))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = cmd.spawn().context("starting keepalived")?;
        let pgid = i32::try_from(child.id()).context("pid")?;
        Ok(Self {
            child: Some(child),
            pgid,
            dir,
            log,
        })
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; returns how long that took.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.log_text().contains(needle) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                bail!(
                    "no {needle:?} in keepalived's log after {limit:?}:\n{}",
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pids of the processes in keepalived's process group (the parent and its VRRP child).
    pub fn pids(&self) -> Vec<u32> {
        processes_in_group(self.pgid)
    }

    /// SIGKILL to the whole process group (a dead machine: no priority-0 advertisement, the
    /// VIP is not removed); reaps the parent and waits until every process of the group is gone.
    pub fn kill9(&mut self) -> Result<()> {
        kill_group(self.pgid, libc::SIGKILL)?;
        if let Some(mut child) = self.child.take() {
            child.wait()?;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while !processes_in_group(self.pgid).is_empty() {
            ensure!(
                Instant::now() < deadline,
                "keepalived processes {:?} outlived SIGKILL",
                processes_in_group(self.pgid)
            );
            thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill_group(self.pgid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && !processes_in_group(self.pgid).is_empty() {
                if matches!(child.try_wait(), Ok(Some(_)))
                    && processes_in_group(self.pgid).is_empty()
                {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = kill_group(self.pgid, libc::SIGKILL);
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Sends `sig` to process group `pgid` (only ever one this module created).
fn kill_group(pgid: i32, sig: i32) -> Result<()> {
    ensure!(pgid > 1, "refusing to signal process group {pgid}");
    // SAFETY: kill has no memory-safety preconditions; a negative pid names a process group.
    if unsafe { libc::kill(-pgid, sig) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            bail!("kill(-{pgid}, {sig}): {err}");
        }
    }
    Ok(())
}

/// Live (not zombie) processes whose process group is `pgid`.
fn processes_in_group(pgid: i32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // pid (comm) state ppid pgrp ...: comm may contain spaces, so split after ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let group = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
            state != Some("Z") && group == Some(pgid)
        })
        .collect()
}

/// The kernel's TCP counters in a namespace (`/proc/net/snmp`): what the host's own TCP stack
/// received and sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpCounters {
    /// Segments received by the stack.
    pub in_segs: u64,
    /// Segments sent by the stack.
    pub out_segs: u64,
    /// Resets sent.
    pub out_rsts: u64,
    /// Connections accepted.
    pub passive_opens: u64,
}

/// Reads [`TcpCounters`] inside `ns`.
pub fn tcp_counters(ns: &Netns) -> Result<TcpCounters> {
    let snmp = ns.exec(&["cat", "/proc/net/snmp"])?;
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next(), tcp.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no Tcp lines in /proc/net/snmp:\n{snmp}");
    };
    let table: BTreeMap<&str, u64> = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
    let get = |k: &str| table.get(k).copied().with_context(|| format!("no Tcp {k}"));
    Ok(TcpCounters {
        in_segs: get("InSegs")?,
        out_segs: get("OutSegs")?,
        out_rsts: get("OutRsts")?,
        passive_opens: get("PassiveOpens")?,
    })
}

/// ActiveConn per real (`IP:PORT`) of the service `vip:port`, from `lbadm -L -n`.
pub fn active_conns(agent: &Agent, service: SocketAddr) -> BTreeMap<String, u64> {
    let listing = agent.lbadm_ok(&["-L", "-n"]);
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in listing.lines() {
        if let Some(real) = line.strip_prefix("  -> ") {
            let cols: Vec<&str> = real.split_whitespace().collect();
            if inside && cols.len() >= 5 && cols[1] == "Route" {
                out.insert(cols[0].to_owned(), cols[3].parse().unwrap_or(0));
            }
        } else {
            let cols: Vec<&str> = line.split_whitespace().collect();
            inside = cols.len() >= 2 && cols[1] == service.to_string();
        }
    }
    out
}

/// One connection entry of `lbadm -L -n -c`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnEntry {
    /// TCP state (`ESTABLISHED`, ...).
    pub state: String,
    /// The client's address and port.
    pub source: SocketAddr,
    /// The VIP and port.
    pub virtual_addr: SocketAddr,
    /// The real.
    pub destination: SocketAddr,
}

/// The TCP connection entries an agent's data plane holds (persistence templates left out).
pub fn conn_entries(agent: &Agent) -> Vec<ConnEntry> {
    agent
        .lbadm_ok(&["-L", "-n", "-c"])
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() != 6 || cols[0] != "TCP" || cols[2] == "NONE" {
                return None;
            }
            Some(ConnEntry {
                state: cols[2].to_owned(),
                source: cols[3].parse().ok()?,
                virtual_addr: cols[4].parse().ok()?,
                destination: cols[5].parse().ok()?,
            })
        })
        .collect()
}

/// What happened to one [`PatientConns`] connection.
#[derive(Clone, Debug)]
pub struct ConnOutcome {
    /// The client's port (to find the flow in a director's connection table).
    pub local_port: u16,
    /// The real it was established on (the echo server's tag).
    pub real: String,
    /// Exchanges that succeeded.
    pub exchanges: u64,
    /// Why it broke, if it did: an error, or a reply from another real.
    pub broken: Option<String>,
    /// When the last exchange succeeded.
    pub last_ok: Instant,
    /// The longest time between two successful exchanges (the period included).
    pub longest_gap: Duration,
}

/// Long-lived connections like [`crate::traffic::LongLived`], except that one exchange may
/// take up to a given timeout before it counts as broken (LongLived allows 3 s, less than a
/// VRRP takeover: 3 × advert_int + skew, about 3.6 s, plus TCP's retransmission backoff), and
/// that each connection records its port, its last success and its longest gap. The
/// connections are shared out among a few threads, so one stalled connection does not hold up
/// all the others.
pub struct PatientConns {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<ConnOutcome>>>,
    threads: Vec<JoinHandle<()>>,
}

/// The tag an echo server prefixes its replies with.
fn tag_of(reply: &str) -> String {
    reply
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

impl PatientConns {
    /// Opens `n` connections from `ns` to `to` (each exchanges a first line), then keeps each
    /// one exchanging a line every `period`, allowing `timeout` per exchange.
    pub fn start(
        ns: &Netns,
        to: SocketAddr,
        n: usize,
        period: Duration,
        timeout: Duration,
    ) -> Result<Self> {
        const THREADS: usize = 8;
        let mut conns = Vec::with_capacity(n);
        let mut outcomes = Vec::with_capacity(n);
        for i in 0..n {
            let mut c = TcpLineClient::connect(ns, to, timeout)
                .with_context(|| format!("long-lived connection {i}"))?;
            let reply = c.request(&format!("hello {i}"))?;
            outcomes.push(ConnOutcome {
                local_port: c.stream().local_addr()?.port(),
                real: tag_of(&reply),
                exchanges: 1,
                broken: None,
                last_ok: Instant::now(),
                longest_gap: Duration::ZERO,
            });
            conns.push((i, c));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(outcomes));
        let mut shares: Vec<Vec<(usize, TcpLineClient)>> =
            (0..THREADS).map(|_| Vec::new()).collect();
        for (k, c) in conns.into_iter().enumerate() {
            shares[k % THREADS].push(c);
        }
        let mut threads = Vec::new();
        for share in shares.into_iter().filter(|s| !s.is_empty()) {
            let (flag, shared) = (stop.clone(), outcomes.clone());
            threads.push(thread::spawn(move || {
                exchange_loop(share, &flag, &shared, period)
            }));
        }
        Ok(Self {
            stop,
            outcomes,
            threads,
        })
    }

    /// A snapshot of the outcomes so far.
    pub fn outcomes(&self) -> Vec<ConnOutcome> {
        self.outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until every connection has either broken or exchanged successfully after
    /// `since`; false if `limit` passed first.
    pub fn wait_all_exchanged_since(&self, since: Instant, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self
                .outcomes()
                .iter()
                .all(|o| o.broken.is_some() || o.last_ok > since)
            {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops exchanging (an exchange in flight finishes first) and returns the outcomes.
    pub fn finish(mut self) -> Vec<ConnOutcome> {
        self.stop_threads();
        self.outcomes()
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for PatientConns {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// One thread's share of [`PatientConns`]: a round over its connections every `period`.
fn exchange_loop(
    mut conns: Vec<(usize, TcpLineClient)>,
    stop: &AtomicBool,
    outcomes: &Mutex<Vec<ConnOutcome>>,
    period: Duration,
) {
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) && !conns.is_empty() {
        let started = Instant::now();
        conns.retain_mut(|(i, conn)| {
            if stop.load(Ordering::Relaxed) {
                return true;
            }
            let result = conn.request(&format!("ping {i} {round}"));
            let now = Instant::now();
            let mut all = outcomes.lock().unwrap_or_else(|e| e.into_inner());
            let o = &mut all[*i];
            match result {
                Ok(reply) if tag_of(&reply) == o.real => {
                    o.exchanges += 1;
                    o.longest_gap = o.longest_gap.max(now - o.last_ok);
                    o.last_ok = now;
                    true
                }
                Ok(reply) => {
                    o.broken = Some(format!("moved to another real: {reply}"));
                    false
                }
                Err(e) => {
                    o.broken = Some(format!("{e:#}"));
                    false
                }
            }
        });
        round += 1;
        let rest = period.saturating_sub(started.elapsed());
        let wake = Instant::now() + rest;
        while !stop.load(Ordering::Relaxed) && Instant::now() < wake {
            thread::sleep(Duration::from_millis(10).min(wake - Instant::now()));
        }
    }
}

/// Summary of [`ConnOutcome`]s: how many connections broke, and the longest gap.
pub fn summarize(outcomes: &[ConnOutcome]) -> (usize, Duration) {
    let broken = outcomes.iter().filter(|o| o.broken.is_some()).count();
    let gap = outcomes
        .iter()
        .map(|o| o.longest_gap)
        .max()
        .unwrap_or_default();
    (broken, gap)
}

/// Runs `cmd`, returning (success, stdout + stderr).
pub fn output_of(cmd: &mut Command) -> Result<(bool, String)> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// Echo servers on every real for each of `ports`, bound to the VIP and tagged real1, real2, ...
pub fn echo_servers(reals: &[Host], vip: Ipv4Addr, ports: &[u16]) -> Vec<TcpEchoServer> {
    let mut servers = Vec::new();
    for (i, real) in reals.iter().enumerate() {
        for &port in ports {
            servers.push(
                TcpEchoServer::start(&real.ns, (vip, port).into(), &format!("real{}", i + 1))
                    .expect("echo server"),
            );
        }
    }
    servers
}

/// Polls `f` every 10 ms until it holds; returns how long that took, or None after `limit`.
pub fn time_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Sum of ActiveConn over the service's reals.
pub fn active_total(agent: &Agent, service: SocketAddr) -> u64 {
    active_conns(agent, service).values().sum()
}

/// Asserts that no connection broke and that each one exchanged after `since`.
#[track_caller]
pub fn assert_all_continued(what: &str, outcomes: &[ConnOutcome], since: Instant) {
    let broken: Vec<_> = outcomes.iter().filter(|o| o.broken.is_some()).collect();
    assert!(
        broken.is_empty(),
        "{what}: {} of {} connections broke: {broken:#?}",
        broken.len(),
        outcomes.len()
    );
    let idle = outcomes.iter().filter(|o| o.last_ok <= since).count();
    assert_eq!(
        idle, 0,
        "{what}: connections that never exchanged after {since:?}"
    );
}
