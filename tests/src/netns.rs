//! Network-namespace test topologies for the LVS-DR load balancer.
//!
//! Every "host" of a test network is its own network namespace. A [`Lan`] is a switch
//! namespace holding a Linux bridge `br0`; [`Lan::add_host`] creates a host namespace whose
//! `eth0` is one end of a veth pair, the other end (`p<N>`) being a port of the bridge.
//! Nothing is ever linked or routed to the root namespace: hosts only get the connected route
//! of their test subnet plus whatever routes the test adds explicitly.
//!
//! All namespaces are guards ([`Netns`]) that delete themselves on drop, including while
//! unwinding from a panic. Names are `lbt<pid>-<counter>-<role>`, so parallel tests in one
//! process and parallel test processes never collide.
//!
//! Facts baked in:
//! - TX checksum offload is turned off (`ethtool -K DEV tx off`) on both ends of every veth,
//!   otherwise frames bounced with `XDP_TX` arrive with bad TCP checksums.
//! - Native `XDP_TX` on a veth is only delivered if the *peer* has an XDP program attached;
//!   [`Host::switch_port`] names that peer inside [`Lan::switch`], so a test can attach an
//!   `XDP_PASS` program to it (from inside [`Netns::enter`] on the switch namespace).
//!
//! ```no_run
//! use lb_tests::netns::{Lan, TcpEchoServer, tcp_request};
//! use std::{net::Ipv4Addr, time::Duration};
//!
//! # fn main() -> anyhow::Result<()> {
//! let lan = Lan::new()?;
//! let client = lan.add_host("client", "10.99.1.1/24")?;
//! let real = lan.add_host("real1", "10.99.1.11/24")?;
//! let vip = Ipv4Addr::new(10, 99, 100, 1);
//! real.add_vip_on_lo(vip)?;
//! client.route_via(vip, real.ip)?;
//! let _srv = TcpEchoServer::start(&real.ns, (vip, 8080).into(), "real1")?;
//! let reply = tcp_request(&client.ns, (vip, 8080).into(), "hi", Duration::from_secs(2))?;
//! assert_eq!(reply, "real1 hi");
//! # Ok(())
//! # }
//! ```

use std::{
    ffi::{CString, OsStr},
    fs::File,
    io::{self, BufRead, BufReader, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};

/// Directory where `ip netns` keeps its named namespaces.
const NETNS_RUN_DIR: &str = "/var/run/netns";
/// Prefix of every namespace created by this module.
const NAME_PREFIX: &str = "lbt";
/// How often background server threads check their stop flag.
const POLL: Duration = Duration::from_millis(20);

/// Process-wide counter making namespace names unique within this process.
static NEXT_NS: AtomicU32 = AtomicU32::new(0);

/// Renders a command line for error messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion; returns its stdout, or an error naming the command and
/// carrying its stderr if it could not be started or exited unsuccessfully.
fn run(cmd: &mut Command) -> Result<String> {
    let desc = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{desc}`"))?;
    if !out.status.success() {
        bail!(
            "`{desc}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a MAC address written as `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let s = s.trim();
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts
            .next()
            .with_context(|| format!("MAC {s:?} too short"))?;
        *byte = u8::from_str_radix(part, 16).with_context(|| format!("bad MAC {s:?}"))?;
    }
    ensure!(parts.next().is_none(), "MAC {s:?} too long");
    Ok(mac)
}

/// Parses `a.b.c.d/len` into an address and prefix length.
fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8)> {
    let (addr, len) = cidr
        .split_once('/')
        .with_context(|| format!("{cidr:?} is not of the form a.b.c.d/len"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .with_context(|| format!("bad IPv4 address in {cidr:?}"))?;
    let len: u8 = len
        .parse()
        .with_context(|| format!("bad prefix length in {cidr:?}"))?;
    ensure!(len <= 32, "prefix length of {cidr:?} exceeds 32");
    Ok((addr, len))
}

/// Moves the calling thread into the network namespace bound at `path`.
fn setns_current_thread(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: `file` is an open namespace file descriptor for the duration of the call;
    // setns only changes the calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("setns(CLONE_NEWNET) into {}", path.display()));
    }
    Ok(())
}

/// Lists the names of all named network namespaces (`ip netns list`).
pub fn list_namespaces() -> Result<Vec<String>> {
    let out = run(Command::new("ip").args(["netns", "list"]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Deletes namespaces left behind by test processes that no longer exist (e.g. killed by
/// SIGKILL, so their guards never ran). Only names with this module's prefix whose creating
/// pid is gone are touched. Returns how many were deleted.
pub fn remove_stale_namespaces() -> Result<usize> {
    let own = std::process::id();
    let mut removed = 0;
    for name in list_namespaces()? {
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != own && !Path::new(&format!("/proc/{pid}")).exists() {
            run(Command::new("ip").args(["netns", "del", &name]))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A named network namespace, deleted (`ip netns del`) when dropped, unless it is a handle
/// made by [`Netns::clone_handle`].
#[derive(Debug)]
pub struct Netns {
    name: String,
    owned: bool,
}

impl Netns {
    /// Creates a uniquely named namespace `lbt<pid>-<n>-<role>` and brings its `lo` up.
    ///
    /// `role` is a short label (letters, digits, `-`, `_`) that makes names readable.
    pub fn new(role: &str) -> Result<Netns> {
        ensure!(
            role.len() <= 32
                && role
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "invalid namespace role {role:?}: use at most 32 of [A-Za-z0-9_-]"
        );
        let pid = std::process::id();
        let mut attempts = 0;
        let ns = loop {
            let n = NEXT_NS.fetch_add(1, Ordering::Relaxed);
            let name = format!("{NAME_PREFIX}{pid}-{n}-{role}");
            // A stale namespace of an earlier process with the same pid may hold the name:
            // then just take the next counter value.
            if Path::new(NETNS_RUN_DIR).join(&name).exists() && attempts < 100 {
                attempts += 1;
                continue;
            }
            run(Command::new("ip").args(["netns", "add", &name]))?;
            break Netns { name, owned: true };
        };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle to the same namespace that does not delete it when dropped (for threads that
    /// outlive a borrow); the owner must outlive its use.
    pub fn clone_handle(&self) -> Result<Netns> {
        Ok(Netns {
            name: self.name.clone(),
            owned: false,
        })
    }

    /// The namespace's name, as used by `ip netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace's bind mount (`/var/run/netns/NAME`).
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }

    /// A `Command` that runs `cmd` inside the namespace (`ip netns exec NAME cmd...`),
    /// for callers who want to customise stdio or the environment.
    pub fn command<S: AsRef<OsStr>>(&self, cmd: &[S]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(cmd);
        c
    }

    /// Runs `cmd` inside the namespace and returns its stdout; fails (with stderr in the
    /// error) on a non-zero exit.
    pub fn exec<S: AsRef<OsStr>>(&self, cmd: &[S]) -> Result<String> {
        ensure!(!cmd.is_empty(), "empty command for netns {}", self.name);
        run(&mut self.command(cmd))
    }

    /// Starts `cmd` in the background inside the namespace (stdin closed, stdout/stderr
    /// inherited). The caller must kill and wait for the child; dropping the namespace
    /// does not.
    pub fn spawn<S: AsRef<OsStr>>(&self, cmd: &[S]) -> Result<Child> {
        ensure!(!cmd.is_empty(), "empty command for netns {}", self.name);
        let mut c = self.command(cmd);
        let desc = describe(&c);
        c.stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("failed to spawn `{desc}`"))
    }

    /// Runs `ip -n NAME ARGS...` and returns its stdout.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Sets a sysctl inside the namespace (`sysctl -w KEY=VALUE`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Turns TX checksum offload off on `dev` (`ethtool -K DEV tx off`).
    pub fn tx_offload_off(&self, dev: &str) -> Result<()> {
        self.exec(&["ethtool", "-K", dev, "tx", "off"])?;
        Ok(())
    }

    /// Runs `f` on a new thread that has joined this namespace, and returns its result.
    ///
    /// Sockets created in `f` belong to the namespace for their whole life, so returning
    /// them is fine. A panic in `f` is propagated. Fails only if joining the namespace fails.
    pub fn try_enter<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = self.path();
        thread::scope(|s| {
            let handle = thread::Builder::new()
                .name(format!("netns {}", self.name))
                .spawn_scoped(s, move || -> Result<R> {
                    setns_current_thread(&path)?;
                    Ok(f())
                })
                .context("spawn namespace thread")?;
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Like [`Netns::try_enter`], but panics if the namespace cannot be joined.
    pub fn enter<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        match self.try_enter(f) {
            Ok(r) => r,
            Err(e) => panic!("cannot enter netns {}: {e:#}", self.name),
        }
    }

    /// Interface index of `dev` inside the namespace.
    pub fn ifindex(&self, dev: &str) -> Result<u32> {
        let cdev = CString::new(dev).with_context(|| format!("bad interface name {dev:?}"))?;
        let idx = self.try_enter(|| {
            // SAFETY: `cdev` is a valid NUL-terminated string.
            let idx = unsafe { libc::if_nametoindex(cdev.as_ptr()) };
            if idx == 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(idx)
            }
        })?;
        idx.with_context(|| format!("if_nametoindex({dev}) in netns {}", self.name))
    }

    /// MAC address of `dev` inside the namespace.
    pub fn mac(&self, dev: &str) -> Result<[u8; 6]> {
        let out = self.exec(&["cat", &format!("/sys/class/net/{dev}/address")])?;
        parse_mac(&out).with_context(|| format!("MAC of {dev} in netns {}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Best effort: never panic in drop. Processes still running inside keep the
        // namespace itself alive, but the name goes away.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A switched LAN: a switch namespace with bridge `br0`, and hosts attached to it.
///
/// Each LAN is an isolated L2 domain, so parallel tests may reuse the same subnet.
#[derive(Debug)]
pub struct Lan {
    switch: Netns,
    next_port: AtomicU32,
}

/// Name of the bridge inside the switch namespace.
pub const BRIDGE: &str = "br0";
/// Name of a host's interface inside its namespace.
pub const HOST_IF: &str = "eth0";

impl Lan {
    /// Creates the switch namespace and its bridge `br0` (STP off, up).
    pub fn new() -> Result<Lan> {
        let switch = Netns::new("sw")?;
        switch.ip(["link", "add", BRIDGE, "type", "bridge", "stp_state", "0"])?;
        switch.ip(["link", "set", BRIDGE, "up"])?;
        Ok(Lan {
            switch,
            next_port: AtomicU32::new(1),
        })
    }

    /// The switch namespace, holding `br0` and every host's [`Host::switch_port`].
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// Name of the bridge in the switch namespace (`br0`).
    pub fn bridge(&self) -> &str {
        BRIDGE
    }

    /// Creates a host namespace attached to the bridge, with `eth0` addressed `ipv4_cidr`
    /// (e.g. `"10.99.1.2/24"`).
    ///
    /// `eth0` gets the locally administered MAC `02:00:a:b:c:d` derived from the address;
    /// TX checksum offload is off on both veth ends; the only route is the connected one.
    pub fn add_host(&self, role: &str, ipv4_cidr: &str) -> Result<Host> {
        let (ip, prefix_len) = parse_cidr(ipv4_cidr)?;
        let ns = Netns::new(role)?;
        let port = format!("p{}", self.next_port.fetch_add(1, Ordering::Relaxed));
        let o = ip.octets();
        let mac = format_mac([0x02, 0x00, o[0], o[1], o[2], o[3]]);
        ns.ip([
            "link",
            "add",
            HOST_IF,
            "address",
            &mac,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            self.switch.name(),
        ])
        .with_context(|| format!("create veth for host {}", ns.name()))?;
        ns.tx_offload_off(HOST_IF)?;
        self.switch.tx_offload_off(&port)?;
        self.switch
            .ip(["link", "set", &port, "master", BRIDGE, "up"])?;
        ns.ip(["addr", "add", ipv4_cidr, "dev", HOST_IF])?;
        ns.ip(["link", "set", HOST_IF, "up"])?;
        let mac = ns.mac(HOST_IF)?;
        let ifindex = ns.ifindex(HOST_IF)?;
        Ok(Host {
            ns,
            ip,
            prefix_len,
            ip6: None,
            mac,
            ifname: HOST_IF.to_owned(),
            ifindex,
            switch_port: port,
        })
    }

    /// Like [`Lan::add_host`], and `eth0` also gets the IPv6 address `ipv6_cidr` (e.g.
    /// `"fd00:99::2/64"`), usable at once (no duplicate address detection).
    pub fn add_dual_host(&self, role: &str, ipv4_cidr: &str, ipv6_cidr: &str) -> Result<Host> {
        let mut host = self.add_host(role, ipv4_cidr)?;
        host.ip6 = Some(host.add_ipv6(ipv6_cidr)?);
        Ok(host)
    }
}

/// A host on a [`Lan`]: its own namespace with `eth0` plugged into the bridge.
#[derive(Debug)]
pub struct Host {
    /// The host's namespace (deleted, with its veth pair, when the host is dropped).
    pub ns: Netns,
    /// Address of `eth0`.
    pub ip: Ipv4Addr,
    /// Prefix length of the LAN subnet.
    pub prefix_len: u8,
    /// IPv6 address of `eth0`, for hosts made by [`Lan::add_dual_host`].
    pub ip6: Option<Ipv6Addr>,
    /// MAC address of `eth0`.
    pub mac: [u8; 6],
    /// Interface name inside the host namespace (`eth0`).
    pub ifname: String,
    /// Interface index of `eth0` inside the host namespace.
    pub ifindex: u32,
    /// Name of the veth peer of `eth0`: a `br0` port in [`Lan::switch`].
    pub switch_port: String,
}

impl Host {
    /// Configures a direct-routing real server: adds `vip/32` on `lo` and sets
    /// `arp_ignore=1` / `arp_announce=2` (for `all` and `eth0`) so the host accepts traffic
    /// for the VIP but never answers ARP for it. Idempotent.
    pub fn add_vip_on_lo(&self, vip: Ipv4Addr) -> Result<()> {
        self.ns
            .ip(["addr", "replace", &format!("{vip}/32"), "dev", "lo"])?;
        for dev in ["all", self.ifname.as_str()] {
            self.ns
                .sysctl(&format!("net.ipv4.conf.{dev}.arp_ignore"), "1")?;
            self.ns
                .sysctl(&format!("net.ipv4.conf.{dev}.arp_announce"), "2")?;
        }
        Ok(())
    }

    /// Adds (or replaces) a route for `dest_cidr` via the LAN neighbour `via`.
    pub fn add_route(&self, dest_cidr: &str, via: Ipv4Addr) -> Result<()> {
        self.ns.ip([
            "route",
            "replace",
            dest_cidr,
            "via",
            &via.to_string(),
            "dev",
            &self.ifname,
        ])?;
        Ok(())
    }

    /// Routes `dst/32` via the LAN neighbour `via` (e.g. a client reaching the VIP through
    /// the director). Replaces any previous route for `dst`.
    pub fn route_via(&self, dst: Ipv4Addr, via: Ipv4Addr) -> Result<()> {
        self.add_route(&format!("{dst}/32"), via)
    }

    /// Routes `dst/32` as directly on-link on `eth0` (the host ARPs for `dst` itself).
    /// Replaces any previous route for `dst`.
    pub fn route_on_link(&self, dst: Ipv4Addr) -> Result<()> {
        self.ns.ip([
            "route",
            "replace",
            &format!("{dst}/32"),
            "dev",
            &self.ifname,
        ])?;
        Ok(())
    }

    /// Adds (or replaces) a permanent neighbour entry `ip -> mac` on `eth0`.
    pub fn add_neighbor(&self, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
        self.ns.ip([
            "neigh",
            "replace",
            &ip.to_string(),
            "lladdr",
            &format_mac(mac),
            "dev",
            &self.ifname,
            "nud",
            "permanent",
        ])?;
        Ok(())
    }

    /// Flushes the neighbour (ARP) cache of `eth0`.
    pub fn flush_neighbors(&self) -> Result<()> {
        self.ns.ip(["neigh", "flush", "dev", &self.ifname])?;
        Ok(())
    }

    /// Adds the IPv6 address `cidr` to `eth0` without duplicate address detection, so that it
    /// is usable at once; returns the address.
    pub fn add_ipv6(&self, cidr: &str) -> Result<Ipv6Addr> {
        let (addr, len) = cidr
            .split_once('/')
            .with_context(|| format!("{cidr:?} is not of the form addr/len"))?;
        let addr: Ipv6Addr = addr
            .parse()
            .with_context(|| format!("bad IPv6 address in {cidr:?}"))?;
        ensure!(
            len.parse::<u8>().is_ok_and(|l| l <= 128),
            "bad prefix length in {cidr:?}"
        );
        self.ns
            .ip(["-6", "addr", "add", cidr, "dev", &self.ifname, "nodad"])?;
        Ok(addr)
    }

    /// Configures an IPv6 direct-routing real server: adds `vip/128` on `lo` (no duplicate
    /// address detection). No sysctl is needed: Linux answers neighbour solicitations only for
    /// addresses of the interface they arrive on, never for one on `lo`. Idempotent.
    pub fn add_vip6_on_lo(&self, vip: Ipv6Addr) -> Result<()> {
        self.ns.ip([
            "-6",
            "addr",
            "replace",
            &format!("{vip}/128"),
            "dev",
            "lo",
            "nodad",
        ])?;
        Ok(())
    }

    /// Routes `dst/128` via the LAN neighbour `via` (e.g. a client reaching an IPv6 VIP
    /// through the director). Replaces any previous route for `dst`.
    pub fn route6_via(&self, dst: Ipv6Addr, via: Ipv6Addr) -> Result<()> {
        self.ns.ip([
            "-6",
            "route",
            "replace",
            &format!("{dst}/128"),
            "via",
            &via.to_string(),
            "dev",
            &self.ifname,
        ])?;
        Ok(())
    }

    /// The kernel's neighbour entry of `addr` on `eth0`, if it has one: its MAC (if resolved)
    /// and the line `ip neigh show` prints (flags such as `managed`, and the state last).
    pub fn neighbour(&self, addr: std::net::IpAddr) -> Result<Option<(Option<[u8; 6]>, String)>> {
        let out = self.ns.ip([
            "neigh",
            "show",
            "to",
            &addr.to_string(),
            "dev",
            &self.ifname,
        ])?;
        let Some(line) = out.lines().next() else {
            return Ok(None);
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let mac = match words.iter().position(|w| *w == "lladdr") {
            Some(i) => Some(parse_mac(words.get(i + 1).copied().unwrap_or_default())?),
            None => None,
        };
        Ok(Some((mac, line.trim().to_owned())))
    }
}

/// Sends `frame` exactly as given out of `dev` inside `ns` (an `AF_PACKET` socket), for tests
/// that put hand-built frames on a wire.
pub fn send_frame(ns: &Netns, dev: &str, frame: &[u8]) -> Result<()> {
    send_frames(ns, dev, [frame])
}

/// Sends every frame of `frames`, exactly as given and in order, out of `dev` inside `ns`
/// through one `AF_PACKET` socket (a flood of hand-built frames).
pub fn send_frames<'f>(
    ns: &Netns,
    dev: &str,
    frames: impl IntoIterator<Item = &'f [u8]> + Send,
) -> Result<()> {
    let ifindex = ns.ifindex(dev)?;
    let mut count = 0usize;
    ns.try_enter(|| -> io::Result<()> {
        // SAFETY: plain socket creation; the descriptor is owned by `fd` below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        for frame in frames {
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            to.sll_family = libc::AF_PACKET as u16;
            to.sll_ifindex = ifindex as i32;
            to.sll_halen = 6;
            to.sll_addr[..6].copy_from_slice(&frame[..6.min(frame.len())]);
            // SAFETY: `frame` and `to` are valid for the lengths given.
            let sent = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    std::ptr::addr_of!(to).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
            count += 1;
        }
        Ok(())
    })?
    .with_context(|| format!("sending frame {count} on {dev} in netns {}", ns.name()))
}

/// A packet capture in a namespace (`tcpdump -e -n -t -l`): one line per frame, link-layer
/// header first (`SRC_MAC > DST_MAC, ethertype ...`), collected until [`Capture::stop`].
/// tcpdump is stopped on drop.
pub struct Capture {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing on `dev` in `ns` the frames matching the pcap `filter`, and waits until
    /// tcpdump listens.
    pub fn start(ns: &Netns, dev: &str, filter: &str) -> Result<Capture> {
        let mut cmd = ns.command(&["tcpdump", "-i", dev, "-e", "-n", "-t", "-l", "-U", filter]);
        let desc = describe(&cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("failed to spawn `{desc}` (is tcpdump installed?)"))?;
        let stdout = child.stdout.take().context("tcpdump stdout")?;
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let shared = lines.clone();
        let reader = thread::spawn(move || {
            // (tcpdump ends with an empty line when interrupted.)
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !line.is_empty() {
                    shared.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            }
        });
        let capture = Capture {
            child,
            lines,
            reader: Some(reader),
        };
        // tcpdump says "listening on DEV" on stderr once the capture is open.
        let mut err = BufReader::new(stderr);
        let mut said = String::new();
        while !said.contains("listening on") {
            let before = said.len();
            err.read_line(&mut said)
                .with_context(|| format!("reading `{desc}`'s stderr"))?;
            ensure!(said.len() > before, "`{desc}` did not start: {said}");
        }
        thread::spawn(move || {
            // Keep draining stderr so that tcpdump never blocks on it.
            let _ = io::copy(&mut err, &mut io::sink());
        });
        Ok(capture)
    }

    /// Stops tcpdump (it flushes what it captured) and returns the lines.
    pub fn stop(mut self) -> Vec<String> {
        self.finish();
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn finish(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.reader.is_some() {
            self.finish();
        }
    }
}

/// Stop flag and join handle shared by the echo servers.
#[derive(Debug)]
struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn(name: String, f: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> Result<Worker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name(name)
            .spawn(move || f(flag))
            .context("spawn server thread")?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// A line-based TCP echo server running in a namespace: for each line `L` received it
/// replies `"<tag> L\n"`, so clients learn which server answered. Stopped on drop.
#[derive(Debug)]
pub struct TcpEchoServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    _worker: Worker,
}

impl TcpEchoServer {
    /// Binds `bind` inside `ns` and starts serving. For a direct-routing real server,
    /// binding the VIP or `0.0.0.0` both work.
    pub fn start(ns: &Netns, bind: SocketAddr, tag: &str) -> Result<TcpEchoServer> {
        let listener = ns
            .try_enter(|| TcpListener::bind(bind))?
            .with_context(|| format!("bind TCP {bind} in netns {}", ns.name()))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (acc, prs, tag) = (accepted.clone(), peers.clone(), tag.to_owned());
        let worker = Worker::spawn(format!("tcp-echo {tag}"), move |stop| {
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        acc.fetch_add(1, Ordering::Relaxed);
                        prs.lock().unwrap_or_else(|e| e.into_inner()).push(peer);
                        let (stop, tag) = (stop.clone(), tag.clone());
                        conns.push(thread::spawn(move || serve_tcp_conn(stream, &tag, &stop)));
                    }
                    Err(_) => thread::sleep(POLL / 4),
                }
                conns.retain(|c| !c.is_finished());
            }
            for c in conns {
                let _ = c.join();
            }
        })?;
        Ok(TcpEchoServer {
            addr,
            accepted,
            peers,
            _worker: worker,
        })
    }

    /// The bound address (useful when binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Remote addresses of the accepted connections, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Serves one echo connection until EOF, an error, or `stop`.
fn serve_tcp_conn(stream: TcpStream, tag: &str, stop: &AtomicBool) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) if buf.ends_with(b"\n") => {
                let line = String::from_utf8_lossy(&buf);
                let reply = format!("{tag} {}\n", line.trim_end_matches(['\r', '\n']));
                buf.clear();
                if writer.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
            // EOF in the middle of a line: loop, the next read returns Ok(0).
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

/// A TCP client connection created inside a namespace, exchanging lines with a
/// [`TcpEchoServer`].
#[derive(Debug)]
pub struct TcpLineClient {
    reader: BufReader<TcpStream>,
    timeout: Duration,
}

impl TcpLineClient {
    /// Connects to `to` from inside `ns`; `timeout` bounds the connect and each request.
    pub fn connect(ns: &Netns, to: SocketAddr, timeout: Duration) -> Result<TcpLineClient> {
        ensure!(!timeout.is_zero(), "zero timeout");
        let stream = ns
            .try_enter(|| TcpStream::connect_timeout(&to, timeout))?
            .with_context(|| format!("TCP connect to {to} from netns {}", ns.name()))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(TcpLineClient {
            reader: BufReader::new(stream),
            timeout,
        })
    }

    /// The underlying stream (e.g. for `local_addr` or `shutdown`).
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Sends `line` (a newline is appended) and returns the reply line without its newline.
    pub fn request(&mut self, line: &str) -> Result<String> {
        let deadline = Instant::now() + self.timeout;
        let peer = self.stream().peer_addr()?;
        self.reader
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .with_context(|| format!("send to {peer}"))?;
        let mut buf = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(!left.is_zero(), "timed out waiting for a reply from {peer}");
            self.reader.get_ref().set_read_timeout(Some(left))?;
            match self.reader.read_until(b'\n', &mut buf) {
                Ok(0) => bail!("{peer} closed the connection without a full reply"),
                Ok(_) if buf.ends_with(b"\n") => break,
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e).with_context(|| format!("read from {peer}")),
            }
        }
        let reply = String::from_utf8_lossy(&buf);
        Ok(reply.trim_end_matches(['\r', '\n']).to_owned())
    }
}

/// Connects from inside `ns` to `to`, sends `line` and returns the reply line (without its
/// newline). `timeout` bounds the connect and, separately, the exchange.
pub fn tcp_request(ns: &Netns, to: SocketAddr, line: &str, timeout: Duration) -> Result<String> {
    TcpLineClient::connect(ns, to, timeout)?.request(line)
}

/// A UDP echo server running in a namespace: each datagram `P` is answered with
/// `"<tag> P"`. Stopped on drop.
///
/// Replies leave from the bound address, so on a direct-routing real server bind the VIP
/// (not `0.0.0.0`), or the reply's source is the real's own address and a client using a
/// connected socket (as [`udp_request`] does) ignores it.
#[derive(Debug)]
pub struct UdpEchoServer {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    _worker: Worker,
}

impl UdpEchoServer {
    /// Binds `bind` inside `ns` and starts serving.
    pub fn start(ns: &Netns, bind: SocketAddr, tag: &str) -> Result<UdpEchoServer> {
        let socket = ns
            .try_enter(|| UdpSocket::bind(bind))?
            .with_context(|| format!("bind UDP {bind} in netns {}", ns.name()))?;
        socket.set_read_timeout(Some(POLL))?;
        let addr = socket.local_addr()?;
        let received = Arc::new(AtomicUsize::new(0));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (rcv, prs, tag) = (received.clone(), peers.clone(), tag.to_owned());
        let worker = Worker::spawn(format!("udp-echo {tag}"), move |stop| {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                match socket.recv_from(&mut buf) {
                    Ok((n, peer)) => {
                        rcv.fetch_add(1, Ordering::Relaxed);
                        prs.lock().unwrap_or_else(|e| e.into_inner()).push(peer);
                        let mut reply = format!("{tag} ").into_bytes();
                        reply.extend_from_slice(&buf[..n]);
                        let _ = socket.send_to(&reply, peer);
                    }
                    Err(e) if is_timeout(&e) => {}
                    // e.g. ECONNREFUSED from an earlier ICMP error: keep serving.
                    Err(_) => thread::sleep(POLL / 4),
                }
            }
        })?;
        Ok(UdpEchoServer {
            addr,
            received,
            peers,
            _worker: worker,
        })
    }

    /// The bound address (useful when binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of datagrams received so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }

    /// Source addresses of the received datagrams, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Sends `payload` to `to` from a fresh connected UDP socket inside `ns` and returns the
/// reply (lossily decoded as UTF-8). Only a reply coming from exactly `to` is accepted.
pub fn udp_request(ns: &Netns, to: SocketAddr, payload: &str, timeout: Duration) -> Result<String> {
    ensure!(!timeout.is_zero(), "zero timeout");
    let any: SocketAddr = if to.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = ns
        .try_enter(|| UdpSocket::bind(any))?
        .with_context(|| format!("bind UDP socket in netns {}", ns.name()))?;
    socket
        .connect(to)
        .with_context(|| format!("UDP connect to {to}"))?;
    socket
        .send(payload.as_bytes())
        .with_context(|| format!("UDP send to {to}"))?;
    socket.set_read_timeout(Some(timeout))?;
    let mut buf = vec![0u8; 65536];
    let n = socket.recv(&mut buf).map_err(|e| {
        if is_timeout(&e) {
            anyhow!("timed out waiting for a UDP reply from {to}")
        } else {
            anyhow!(e).context(format!("UDP receive from {to}"))
        }
    })?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn exists(name: &str) -> bool {
        list_namespaces()
            .expect("ip netns list")
            .iter()
            .any(|n| n == name)
    }

    fn require_root() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "netns tests need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
        );
    }

    #[test]
    fn netns_is_created_and_removed_on_drop() {
        require_root();
        let ns = Netns::new("life").unwrap();
        let name = ns.name().to_owned();
        assert!(name.starts_with(&format!("lbt{}-", std::process::id())));
        assert!(exists(&name), "{name} missing after creation");
        let lo = ns.ip(["-br", "link", "show", "lo"]).unwrap();
        assert!(
            lo.contains("UNKNOWN") || lo.contains("UP"),
            "lo not up: {lo}"
        );
        assert!(ns.ifindex("lo").unwrap() > 0);
        assert_eq!(ns.mac("lo").unwrap(), [0; 6]);
        let err = ns.exec(&["ip", "link", "show", "nosuchdev"]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("nosuchdev") && msg.contains("failed"), "{msg}");
        drop(ns);
        assert!(!exists(&name), "{name} still present after drop");

        let mut panicked_name = String::new();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let ns = Netns::new("panic").unwrap();
            panicked_name = ns.name().to_owned();
            panic!("intentional panic while {} is alive", ns.name());
        }));
        assert!(res.is_err());
        assert!(!panicked_name.is_empty());
        assert!(
            !exists(&panicked_name),
            "{panicked_name} leaked after panic"
        );
    }

    #[test]
    fn enter_creates_sockets_inside_the_namespace() {
        require_root();
        let a = Netns::new("enter-a").unwrap();
        let b = Netns::new("enter-b").unwrap();
        // Same port on loopback in two namespaces: no conflict, and no cross talk.
        let la = a.enter(|| TcpListener::bind("127.0.0.1:7777")).unwrap();
        let lb = b.enter(|| TcpListener::bind("127.0.0.1:7777")).unwrap();
        drop((la, lb));
        let _srv = TcpEchoServer::start(&a, "127.0.0.1:7000".parse().unwrap(), "a").unwrap();
        let to = "127.0.0.1:7000".parse().unwrap();
        let t = Duration::from_secs(2);
        assert_eq!(tcp_request(&a, to, "x", t).unwrap(), "a x");
        assert!(tcp_request(&b, to, "x", t).is_err());
        // A panic in the closure reaches the caller.
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.enter(|| panic!("boom"))));
        assert!(r.is_err());
    }

    #[test]
    fn lan_hosts_talk_tcp_and_udp() {
        require_root();
        let lan = Lan::new().unwrap();
        let a = lan.add_host("a", "10.99.1.1/24").unwrap();
        let b = lan.add_host("b", "10.99.1.2/24").unwrap();
        assert_eq!(a.mac, [0x02, 0, 10, 99, 1, 1]);
        assert_eq!(a.ifname, "eth0");
        assert_ne!(a.switch_port, b.switch_port);
        let port = lan
            .switch()
            .ip(["-br", "link", "show", &a.switch_port])
            .unwrap();
        assert!(port.contains("UP"), "{port}");
        let master = lan.switch().ip(["link", "show", &b.switch_port]).unwrap();
        assert!(master.contains("master br0"), "{master}");
        assert!(lan.switch().ifindex(&a.switch_port).unwrap() > 0);
        // Only the connected route, no default route.
        let routes = a.ns.ip(["-4", "route", "show"]).unwrap();
        assert_eq!(routes.lines().count(), 1, "{routes}");
        assert!(routes.starts_with("10.99.1.0/24 dev eth0"), "{routes}");
        // TX checksum offload is off on both ends.
        let feat = a.ns.exec(&["ethtool", "-k", "eth0"]).unwrap();
        assert!(feat.contains("tx-checksumming: off"), "{feat}");
        let feat = lan
            .switch()
            .exec(&["ethtool", "-k", &a.switch_port])
            .unwrap();
        assert!(feat.contains("tx-checksumming: off"), "{feat}");

        let t = Duration::from_secs(2);
        let srv = TcpEchoServer::start(&b.ns, "0.0.0.0:7000".parse().unwrap(), "b").unwrap();
        let to = SocketAddr::from((b.ip, 7000));
        assert_eq!(tcp_request(&a.ns, to, "hello", t).unwrap(), "b hello");
        let mut c = TcpLineClient::connect(&a.ns, to, t).unwrap();
        assert_eq!(c.request("one").unwrap(), "b one");
        assert_eq!(c.request("two").unwrap(), "b two");
        assert_eq!(srv.accepted(), 2);
        assert!(srv.peers().iter().all(|p| p.ip() == a.ip));

        let usrv = UdpEchoServer::start(&b.ns, to, "ub").unwrap();
        assert_eq!(udp_request(&a.ns, to, "ping", t).unwrap(), "ub ping");
        assert_eq!(usrv.received(), 1);
        assert_eq!(usrv.peers()[0].ip(), IpAddr::V4(a.ip));
        drop((c, srv, usrv));

        let names: Vec<String> = [lan.switch(), &a.ns, &b.ns]
            .iter()
            .map(|n| n.name().to_owned())
            .collect();
        drop((a, b, lan));
        for n in names {
            assert!(!exists(&n), "{n} leaked");
        }
    }

    #[test]
    fn real_server_accepts_vip_but_does_not_answer_arp_for_it() {
        require_root();
        let lan = Lan::new().unwrap();
        let client = lan.add_host("client", "10.99.2.1/24").unwrap();
        let real = lan.add_host("real", "10.99.2.2/24").unwrap();
        let vip = Ipv4Addr::new(10, 99, 200, 1);
        let to = SocketAddr::from((vip, 8080));
        let short = Duration::from_millis(700);
        let ok = Duration::from_secs(2);

        // Control: with the VIP on lo but default ARP sysctls, the real answers ARP for it.
        real.ns
            .ip(["addr", "add", "10.99.200.1/32", "dev", "lo"])
            .unwrap();
        let _srv = TcpEchoServer::start(&real.ns, to, "real").unwrap();
        client.route_on_link(vip).unwrap();
        assert_eq!(tcp_request(&client.ns, to, "ctl", ok).unwrap(), "real ctl");

        // Direct-routing setup: the VIP is no longer reachable by ARP...
        real.add_vip_on_lo(vip).unwrap();
        client.flush_neighbors().unwrap();
        let started = Instant::now();
        let err = tcp_request(&client.ns, to, "arp", short).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{err:#}");
        let msg = format!("{err:#}");
        assert!(msg.contains("TCP connect to 10.99.200.1:8080"), "{msg}");
        eprintln!("expected failure: {msg}");

        // ...but accepted when the frame is sent to the real's MAC (as the director does).
        client.route_via(vip, real.ip).unwrap();
        assert_eq!(tcp_request(&client.ns, to, "dr", ok).unwrap(), "real dr");
        let sysctl = real
            .ns
            .exec(&["sysctl", "-n", "net.ipv4.conf.eth0.arp_ignore"])
            .unwrap();
        assert_eq!(sysctl.trim(), "1");

        // A permanent neighbour entry for the VIP pointing at the real's MAC works too.
        client.route_on_link(vip).unwrap();
        client.add_neighbor(vip, real.mac).unwrap();
        assert_eq!(
            tcp_request(&client.ns, to, "neigh", ok).unwrap(),
            "real neigh"
        );
    }
}
