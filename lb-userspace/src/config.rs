//! The `lb-agent` configuration file: keepalived's `virtual_server` blocks, written in YAML.
//!
//! Key names are keepalived's, in lower_snake_case (`lb_algo`, `persistence_timeout`,
//! `real_servers`, `tcp_check`, ...). Keys are case-sensitive; the values of enumerations
//! (`protocol: TCP`, `lb_kind: DR`, `lb_algo: WRR`, `xdp_mode: Auto`) are not. keepalived's
//! other spellings are accepted as aliases (`lvs_sched` for `lb_algo`, `lvs_method` for
//! `lb_kind`, `nb_get_retry` for `retry`); giving a key together with its alias is an error.
//!
//! Where a key is absent, keepalived's default applies, also when that default is something
//! this balancer cannot do: without `lb_kind` a service is NAT, which is reported as an error
//! that says so; without `lb_algo` it is `wlc`. A key written without a value (`key:`
//! or `key: ~`) takes its default too, except that `persistence_timeout:` alone turns
//! persistence on with keepalived's 360 seconds, a block alone (`tcp_check:`) is that block
//! with all its defaults, a flag (`alpha`, `manage_vip`, ...) must be `true` or `false`, and a
//! required key needs its value. YAML anchors and merge keys (`<<: *common`) may share settings
//! between blocks.
//!
//! Every problem is reported, not just the first, in document order, one per line as
//! `file: path: message` (`file: message` for the file as a whole, such as a YAML syntax
//! error), where the path names the field: `virtual_servers[1].real_servers[0].port`.
//! Validation is pure: it looks at the file only, never at the system (interfaces, sockets,
//! the `sync` section's key file and the checks' password files (`http_get.auth` and
//! `amqp_check`) and TLS files (`ssl_get.tls`), which the agent reads when it starts).
//!
//! `configs/example.yaml` shows and explains every key.

mod address;
mod check;
mod emit;
mod file;
mod group;
mod message;
mod nesting;
mod parse;
mod reader;
#[cfg(test)]
mod tests;

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

pub use self::{
    file::{FileError, MAX_CONFIG_BYTES, read as read_text},
    nesting::MAX_FLOW_DEPTH,
};
use crate::{
    model::{AttachMode, Limits},
    model::{Persistence, RealKey, SchedFlags, Scheduler, ServiceKey, Thresholds},
};

/// A validated `lb-agent` configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Interface the XDP program attaches to (where the VIPs arrive).
    pub interface: String,
    /// How to attach: native driver XDP, generic skb XDP, or driver with a fallback to skb.
    pub xdp_mode: AttachMode,
    /// Instance name; names the pin directory `/sys/fs/bpf/lb-xdp/<instance>`.
    pub instance: String,
    /// Whether the agent adds the VIPs to `interface` itself (else keepalived's VRRP does).
    pub manage_vip: bool,
    /// Whether the program stays attached (and keeps forwarding) when the agent stops.
    pub keep_forwarding_on_stop: bool,
    /// Unix socket of the control interface (`lbadm`).
    pub control_socket: PathBuf,
    /// Where Prometheus metrics are served; `None` = off.
    pub metrics_listen: Option<SocketAddr>,
    /// Map capacities.
    pub limits: Limits,
    /// Connection-table timeouts (`ipvsadm --set tcp tcpfin udp`).
    pub timeouts: Timeouts,
    /// Director state sync (`sync:`); `None` when the section is absent: sync is off.
    pub sync: Option<SyncConfig>,
    /// The services, in file order.
    pub virtual_servers: Vec<VirtualServer>,
}

/// Connection-table timeouts in seconds, as `ipvsadm --set tcp tcpfin udp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Established TCP connections.
    pub tcp: u32,
    /// TCP connections after a FIN.
    pub tcpfin: u32,
    /// UDP flows.
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp: 900,
            tcpfin: 120,
            udp: 300,
        }
    }
}

/// Director state sync (`sync:`): the agents of one director group share their connection
/// entries, so that any director continues any flow on its real.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// Director group id (`id`, 0..=255 like keepalived's syncid; default 0): datagrams of another group are rejected.
    pub id: u32,
    /// File holding the group's shared secret (`key_file`, required): at least 16 bytes after trimming whitespace.
    pub key_file: PathBuf,
    /// UDP port sent to and listened on (`port`, default 8849: not IPVS's 8848, whose format differs).
    pub port: u16,
    /// Multicast group (`group`), IPv4 or IPv6 multicast address; None = unicast peers only.
    pub group: Option<IpAddr>,
    /// Interface whose address multicast is sent from and joined on (`interface`; default: the top-level `interface`).
    pub interface: Option<String>,
    /// Unicast peers (`peers`: a list of addresses, the other directors).
    pub peers: Vec<IpAddr>,
    /// Multicast TTL / hop limit (`ttl`, 1..=255, default 1).
    pub ttl: u8,
    /// How long a starting agent waits for its peers' state before it serves (`startup_wait`, seconds, default 3, 0..=60).
    pub startup_wait: Duration,
    /// How often every live entry is announced again, so peers never let a long-lived idle connection expire (`refresh`, seconds, default 120; must be at least 10 and less than `timeouts.tcp` and `timeouts.udp`).
    pub refresh: Duration,
}

impl SyncConfig {
    /// `port` when not set.
    pub const DEFAULT_PORT: u16 = 8849;
    /// `ttl` when not set.
    pub const DEFAULT_TTL: u8 = 1;
    /// `startup_wait` when not set.
    pub const DEFAULT_STARTUP_WAIT: Duration = Duration::from_secs(3);
    /// `refresh` when not set.
    pub const DEFAULT_REFRESH: Duration = Duration::from_secs(120);
    /// The shortest secret `key_file` may hold, in bytes after trimming white space (checked by
    /// the agent when it reads the file, not by validation).
    pub const MIN_KEY_BYTES: usize = 16;
}

/// An IPVS scheduler name (`lb_algo` / `lvs_sched`).
///
/// How the served ones map onto the data plane:
/// - `rr`, `wrr` and `mh` are all served by weighted Maglev over the 5-tuple: every new flow
///   goes to a real chosen in proportion to its weight, and a flow's real only changes when
///   the set of reals does;
/// - `sh` is served by weighted Maglev over the client (source) address, so one client always
///   reaches the same real while the set of reals stays the same.
///
/// - `lc`, `wlc` (keepalived's and ipvsadm's default), `sed` and `nq` are IPVS's
///   least-connection schedulers, run by the data plane over per-real connection counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LbAlgo {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connection.
    Lc,
    /// Weighted least connection (keepalived's default).
    Wlc,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Source hashing.
    Sh,
    /// Maglev hashing.
    Mh,
    /// Destination hashing.
    Dh,
    /// Weighted failover.
    Fo,
    /// Overflow.
    Ovf,
    /// Weighted random of two choices.
    Twos,
}

impl LbAlgo {
    /// Every scheduler this type names (hash-based first, as error messages list them).
    pub const ALL: [LbAlgo; 12] = [
        LbAlgo::Rr,
        LbAlgo::Wrr,
        LbAlgo::Mh,
        LbAlgo::Sh,
        LbAlgo::Dh,
        LbAlgo::Lc,
        LbAlgo::Wlc,
        LbAlgo::Sed,
        LbAlgo::Nq,
        LbAlgo::Fo,
        LbAlgo::Ovf,
        LbAlgo::Twos,
    ];

    /// keepalived's default when `lb_algo` is not set.
    pub const KEEPALIVED_DEFAULT: LbAlgo = LbAlgo::Wlc;

    /// The IPVS name (`"wrr"`, ...).
    pub const fn name(&self) -> &'static str {
        match self {
            LbAlgo::Rr => "rr",
            LbAlgo::Wrr => "wrr",
            LbAlgo::Lc => "lc",
            LbAlgo::Wlc => "wlc",
            LbAlgo::Sed => "sed",
            LbAlgo::Nq => "nq",
            LbAlgo::Sh => "sh",
            LbAlgo::Mh => "mh",
            LbAlgo::Dh => "dh",
            LbAlgo::Fo => "fo",
            LbAlgo::Ovf => "ovf",
            LbAlgo::Twos => "twos",
        }
    }

    /// Whether the data plane can serve this scheduler (all of this enum's can).
    pub const fn supported(self) -> bool {
        self.scheduler().is_some()
    }

    /// How the data plane places new flows for this scheduler.
    pub const fn scheduler(self) -> Option<Scheduler> {
        Some(match self {
            LbAlgo::Rr | LbAlgo::Wrr => Scheduler::Maglev,
            LbAlgo::Sh | LbAlgo::Mh => Scheduler::SourceHash,
            LbAlgo::Dh => Scheduler::DestinationHash,
            LbAlgo::Lc => Scheduler::LeastConn,
            LbAlgo::Wlc => Scheduler::WeightedLeastConn,
            LbAlgo::Sed => Scheduler::ShortestExpectedDelay,
            LbAlgo::Nq => Scheduler::NeverQueue,
            LbAlgo::Fo => Scheduler::Failover,
            LbAlgo::Ovf => Scheduler::Overflow,
            LbAlgo::Twos => Scheduler::TwoChoices,
        })
    }
}

impl fmt::Display for LbAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// IPVS schedulers that exist but that this balancer does not offer.
const FOREIGN_SCHEDULERS: [&str; 2] = ["lblc", "lblcr"];

/// Why a scheduler name did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LbAlgoError {
    /// An IPVS scheduler this balancer does not offer (`lblc`, `dh`, ...).
    NotSupported(String),
    /// Not an IPVS scheduler.
    Unknown(String),
}

impl fmt::Display for LbAlgoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let served = served_schedulers();
        match self {
            LbAlgoError::NotSupported(s) => write!(f, "lb_algo {s} is not supported; use {served}"),
            LbAlgoError::Unknown(s) => write!(f, "unknown scheduler `{s}`; use {served}"),
        }
    }
}

impl std::error::Error for LbAlgoError {}

/// The schedulers [`LbAlgo::supported`] accepts, as a list for messages.
/// The schedulers this balancer serves, as a list for messages: "rr, wrr, ... or nq".
pub fn served_schedulers() -> String {
    let names: Vec<&str> = LbAlgo::ALL
        .iter()
        .filter(|a| a.supported())
        .map(|a| a.name())
        .collect();
    reader::or_list(&names)
}

impl FromStr for LbAlgo {
    type Err = LbAlgoError;

    /// Parses an IPVS scheduler name, case-insensitively; white space around it is an
    /// error (`"wrr "` names no scheduler).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        if let Some(a) = LbAlgo::ALL.into_iter().find(|a| a.name() == lower) {
            Ok(a)
        } else if FOREIGN_SCHEDULERS.contains(&lower.as_str()) {
            Err(LbAlgoError::NotSupported(s.to_owned()))
        } else {
            Err(LbAlgoError::Unknown(s.to_owned()))
        }
    }
}

/// A virtual service (keepalived `virtual_server <vip> <port>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualServer {
    /// VIP, port and protocol.
    pub key: ServiceKey,
    /// Scheduler.
    pub lb_algo: LbAlgo,
    /// Scheduling flags (`lb_flags`).
    pub lb_flags: SchedFlags,
    /// Persistence, if `persistence_timeout` is set.
    pub persistence: Option<Persistence>,
    /// Maglev lookup-table size (prime).
    pub table_size: u32,
    /// Interval between health checks.
    pub delay_loop: Duration,
    /// Checks start after a random delay of up to this much.
    pub warmup: Option<Duration>,
    /// Reals start down until their first check passes.
    pub alpha: bool,
    /// Run `quorum_down` also when the agent stops.
    pub omega: bool,
    /// Failing reals get weight 0 instead of being removed.
    pub inhibit_on_failure: bool,
    /// Minimum total weight of live reals for the service to have quorum.
    pub quorum: u32,
    /// Weight tolerance around `quorum` before quorum is gained or lost.
    pub hysteresis: u32,
    /// Command run when quorum is gained.
    pub quorum_up: Option<String>,
    /// Command run when quorum is lost.
    pub quorum_down: Option<String>,
    /// Real that takes the traffic when no real is up.
    pub sorry_server: Option<RealKey>,
    /// The reals, in file order.
    pub real_servers: Vec<RealServer>,
    /// The group this service is a member of (keepalived's `virtual_server_group`), if any.
    pub group: Option<Arc<Group>>,
}

/// A `virtual_server_group`: one item of `virtual_servers` with `group` and `vips`, which
/// becomes one service per address and port, as keepalived makes one IPVS service per entry.
/// The members share their settings, reals and checkers: each real is checked once, through the
/// first member (the leader), and its state and weight apply to every member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The group's name.
    pub name: String,
    /// The entries as written (`10.0.0.1-9:80`, `[2001:db8::1]:443`, `10.0.0.0/30:80`).
    pub vips: Vec<String>,
    /// The first member: its checkers check the reals of every member.
    pub leader: ServiceKey,
}

/// A real server of a service (keepalived `real_server <ip> <port>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealServer {
    /// Address and port (the port is the service's: direct routing keeps it).
    pub key: RealKey,
    /// Weight; 0 drains the real.
    pub weight: u32,
    /// Connection thresholds (keepalived `uthreshold`/`lthreshold`; none by default).
    pub thresholds: Thresholds,
    /// Overrides the service's `inhibit_on_failure` for this real.
    pub inhibit_on_failure: Option<bool>,
    /// Command run when the real comes up.
    pub notify_up: Option<String>,
    /// Command run when the real goes down.
    pub notify_down: Option<String>,
    /// Health checkers, in file order (the checker keys, then the `checks` list); without any
    /// the real is always up, with several it is up only while every one of them is
    /// (keepalived).
    pub checks: Vec<Checker>,
}

/// A health checker (keepalived `TCP_CHECK`, `HTTP_GET` and `SSL_GET`, `MISC_CHECK`,
/// `UDP_CHECK`, `DNS_CHECK`, `PING_CHECK`, `SMTP_CHECK`, `FILE_CHECK`, and `amqp_check`, which
/// keepalived does not have).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checker {
    /// TCP connect.
    Tcp(TcpCheck),
    /// HTTP GET of one or more URLs (`http_get`), or HTTPS (`ssl_get`: `tls` is set).
    Http(HttpCheck),
    /// External command.
    Misc(MiscCheck),
    /// AMQP 0-9-1 handshake, login and publish.
    Amqp(AmqpCheck),
    /// A UDP datagram and, if required, its reply.
    Udp(UdpCheck),
    /// A DNS query answered without error.
    Dns(DnsCheck),
    /// An ICMP echo answered.
    Ping(PingCheck),
    /// An SMTP greeting and HELO answered.
    Smtp(SmtpCheck),
    /// A number read from a file (keepalived `FILE_CHECK` with its `track_file`).
    File(FileCheck),
}

/// The port a `dns_check` queries without `connect_port` (keepalived's).
pub const DNS_PORT: u16 = 53;

/// Where a checker connects and from where, as configured (`None`: the real's address and
/// port, a source chosen by the kernel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckEndpoint {
    /// `connect_ip`.
    pub connect_ip: Option<IpAddr>,
    /// `connect_port` (a `dns_check`'s defaults to 53, as keepalived's).
    pub connect_port: Option<u16>,
    /// `bindto`.
    pub bindto: Option<IpAddr>,
    /// `bind_port`.
    pub bind_port: Option<u16>,
}

impl Checker {
    /// Where the checker connects; `None` for those that connect nowhere (`misc_check`,
    /// `file_check`).
    pub fn endpoint(&self) -> Option<CheckEndpoint> {
        let ep = |connect_ip, connect_port, bindto, bind_port| CheckEndpoint {
            connect_ip,
            connect_port,
            bindto,
            bind_port,
        };
        Some(match self {
            Self::Tcp(c) => ep(c.connect_ip, c.connect_port, c.bindto, c.bind_port),
            Self::Http(c) => ep(c.connect_ip, c.connect_port, c.bindto, c.bind_port),
            Self::Amqp(c) => ep(c.connect_ip, c.connect_port, c.bindto, c.bind_port),
            Self::Udp(c) => ep(c.connect_ip, c.connect_port, c.bindto, c.bind_port),
            Self::Smtp(c) => ep(c.connect_ip, c.connect_port, c.bindto, c.bind_port),
            // keepalived's DNS_CHECK queries port 53, not the real's port.
            Self::Dns(c) => ep(
                c.connect_ip,
                Some(c.connect_port.unwrap_or(DNS_PORT)),
                c.bindto,
                c.bind_port,
            ),
            Self::Ping(c) => ep(c.connect_ip, None, c.bindto, None),
            Self::Misc(_) | Self::File(_) => return None,
        })
    }

    /// The checker's configuration key.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Tcp(_) => "tcp_check",
            Self::Http(c) => c.key(),
            Self::Misc(_) => "misc_check",
            Self::Amqp(_) => "amqp_check",
            Self::Udp(_) => "udp_check",
            Self::Dns(_) => "dns_check",
            Self::Ping(_) => "ping_check",
            Self::Smtp(_) => "smtp_check",
            Self::File(_) => "file_check",
        }
    }
}

/// `file_check` (keepalived `FILE_CHECK` and its `track_file`): the file holds a number, read
/// every `delay_loop`. With a `weight` of 0 the real is up while the number is 0 (`reverse`: while
/// it is not). Otherwise the number times `weight` (negated with `reverse`) is added to the
/// real's weight, and the real is down only when that product is at or below -2^31 (keepalived's
/// fault value). A missing or empty file reads as 0; an unreadable number keeps the last one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCheck {
    /// The file (absolute).
    pub path: PathBuf,
    /// Multiplier of the number read; 0 makes the check up/down only.
    pub weight: i32,
    /// Negate the product (with weight 0: up while the number is not 0).
    pub reverse: bool,
    /// Write this value to the file when the agent starts (keepalived `init_file`).
    pub init_file: Option<FileInit>,
}

/// `file_check.init_file`: the value written when the agent starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileInit {
    /// The value written.
    pub value: i64,
    /// Also replace an existing file (otherwise only a missing file is created).
    pub overwrite: bool,
}

/// Timing shared by the network checkers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckTiming {
    /// Connect (and, for HTTP, response) timeout.
    pub connect_timeout: Duration,
    /// Retries before the real is declared down (keepalived `retry`, old `nb_get_retry`).
    pub retry: u32,
    /// Pause between retries.
    pub delay_before_retry: Duration,
    /// Random start delay of up to this much.
    pub warmup: Option<Duration>,
}

impl Default for CheckTiming {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            retry: 1,
            delay_before_retry: Duration::from_secs(1),
            warmup: None,
        }
    }
}

/// `tcp_check`: the real is up while a TCP connect succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpCheck {
    /// Address to connect to; `None` = the real's.
    pub connect_ip: Option<IpAddr>,
    /// Port to connect to; `None` = the real's.
    pub connect_port: Option<u16>,
    /// Source address of the check.
    pub bindto: Option<IpAddr>,
    /// Source port of the check.
    pub bind_port: Option<u16>,
    /// How the check probes (`probe`); `None` = the default for the real (see [`TcpProbe`]).
    pub probe: Option<TcpProbe>,
    /// Timing.
    pub timing: CheckTiming,
}

/// How a `tcp_check` probes (`probe:`).
///
/// The default, where it can be done, is [`TcpProbe::Vip`]: the frame a client's packet
/// becomes, so that a real whose VIP setup is broken (no VIP on `lo`, a firewall on it, the
/// service bound to the real's own address) is taken out, while a connect to the real's
/// address would pass; and half-open, so 10,000 reals cost a frame each, not a connection. It
/// needs an IPv4 real on the director's LAN and the director's own source address, and tests
/// the service's port: a `connect_ip`, `connect_port` of another port (it may be a listener
/// bound to the real's own address only), `bindto` or `bind_port`, or an IPv6 real, make the default
/// [`TcpProbe::Connect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpProbe {
    /// Half-open SYN to VIP:port through the real's MAC: the client's data path.
    Vip,
    /// Half-open SYN to the real's own address and port.
    Syn,
    /// A full TCP connect to the real (keepalived's TCP_CHECK).
    Connect,
}

impl TcpProbe {
    /// The YAML words.
    pub const WORDS: [(&'static str, TcpProbe); 3] = [
        ("vip", TcpProbe::Vip),
        ("syn", TcpProbe::Syn),
        ("connect", TcpProbe::Connect),
    ];

    /// The YAML word.
    pub fn word(self) -> &'static str {
        match self {
            TcpProbe::Vip => "vip",
            TcpProbe::Syn => "syn",
            TcpProbe::Connect => "connect",
        }
    }
}

/// Which way a check that talks over a connection (`http_get`, `ssl_get`, `amqp_check`) goes
/// (`probe:`).
///
/// The default, where it can be done, is [`StreamProbe::Vip`], as for a `tcp_check` (see
/// [`TcpProbe`]): the connection goes to VIP:port through the real's MAC, as a client's does,
/// carried by the agent itself. It needs an IPv4 real on the director's LAN, the
/// director's own source address and the service's port: a `connect_ip`, `connect_port` (another
/// than the real's port), `bindto` or `bind_port`, or an IPv6 real, make the default
/// [`StreamProbe::Connect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamProbe {
    /// To VIP:port through the real's MAC: the client's data path.
    Vip,
    /// A TCP connection to the real's own address (keepalived's HTTP_GET and SSL_GET).
    Connect,
}

impl StreamProbe {
    /// The YAML words.
    pub const WORDS: [(&'static str, StreamProbe); 2] =
        [("vip", StreamProbe::Vip), ("connect", StreamProbe::Connect)];

    /// The YAML word.
    pub fn word(self) -> &'static str {
        match self {
            StreamProbe::Vip => "vip",
            StreamProbe::Connect => "connect",
        }
    }
}

/// `http_get`: the real is up while every URL answers with one of its status codes (and, with
/// a `digest`, with its body). `ssl_get` is the same over TLS, as keepalived's SSL_GET is its
/// HTTP_GET over TLS: [`HttpCheck::tls`] is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// URLs to fetch (at least one).
    pub urls: Vec<UrlCheck>,
    /// `Host` header of the URLs without their own (`virtualhost`); `None` = the address and
    /// port connected to.
    pub virtualhost: Option<String>,
    /// HTTP Basic authentication sent with every URL (`auth`; lb-agent's, keepalived has none).
    pub auth: Option<HttpAuth>,
    /// Which way the requests go (`probe`); `None` = the default for the real (see
    /// [`StreamProbe`]).
    pub probe: Option<StreamProbe>,
    /// `None` for `http_get`; an `ssl_get`'s TLS settings.
    pub tls: Option<TlsCheck>,
    /// Address to connect to; `None` = the real's.
    pub connect_ip: Option<IpAddr>,
    /// Port to connect to; `None` = the real's.
    pub connect_port: Option<u16>,
    /// Source address of the check.
    pub bindto: Option<IpAddr>,
    /// Source port of the check.
    pub bind_port: Option<u16>,
    /// Timing.
    pub timing: CheckTiming,
}

impl HttpCheck {
    /// The YAML key of the checker: `http_get`, or `ssl_get` with TLS.
    pub fn key(&self) -> &'static str {
        if self.tls.is_some() {
            "ssl_get"
        } else {
            "http_get"
        }
    }
}

/// The TLS of an `ssl_get`. keepalived's SSL_GET accepts any server certificate (it never asks
/// OpenSSL to verify), and so does the default here; `verify: true` checks it against
/// `ca_file`. The files are read by the agent when it starts and at each reload, never by
/// validation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsCheck {
    /// Send the server name in the handshake (SNI; keepalived's `enable_sni`, default false):
    /// `sni_name`, else the URL's `virtualhost`, else the check's. Without such a name (an
    /// address is not a name) none is sent, as keepalived.
    pub enable_sni: bool,
    /// The name SNI sends (keepalived's `sni_name`; it turns `enable_sni` on).
    pub sni_name: Option<String>,
    /// Verify the server's certificate chain against `ca_file`, and its name (`tls.verify`,
    /// default false as keepalived): the SNI name, else the address connected to.
    pub verify: bool,
    /// PEM certificates of the authorities trusted with `verify` (`tls.ca_file`, an absolute
    /// path; keepalived's global `ssl { ca }`).
    pub ca_file: Option<PathBuf>,
    /// A client certificate to present when the server asks for one (`tls.certificate_file`
    /// and `tls.key_file`; keepalived's global `ssl { certificate key }`).
    pub client: Option<TlsClientFiles>,
}

/// The client certificate of an `ssl_get` (`tls.certificate_file` and `tls.key_file`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsClientFiles {
    /// PEM certificate chain, the client's first (absolute path).
    pub certificate_file: PathBuf,
    /// PEM private key, unencrypted (PKCS#8, PKCS#1 or SEC1; absolute path).
    pub key_file: PathBuf,
}

/// One `url` of an `http_get`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlCheck {
    /// Request path, starting with `/`.
    pub path: String,
    /// The statuses that pass (`status_code`; default any 2xx, as keepalived).
    pub status_code: StatusCodes,
    /// MD5 of the body, which must match when set (`digest`, 32 hexadecimal digits).
    pub digest: Option<[u8; 16]>,
    /// `Host` header of this URL (`virtualhost`), over the check's.
    pub virtualhost: Option<String>,
}

/// The statuses a `url` accepts: codes and inclusive ranges (`200`, `200-299`, or a list of
/// them), as keepalived's `status_code` takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusCodes(Vec<(u16, u16)>);

impl StatusCodes {
    /// Lowest HTTP status code.
    pub const MIN: u16 = 100;
    /// Highest HTTP status code.
    pub const MAX: u16 = 599;

    /// keepalived's default: any 2xx.
    pub fn any_2xx() -> Self {
        Self(vec![(200, 299)])
    }

    /// One code.
    pub fn one(code: u16) -> Self {
        Self(vec![(code, code)])
    }

    /// The codes and ranges (`(code, code)` for a code), in the order written; `None` when
    /// the list is empty, a range is reversed or a code is outside 100..=599.
    pub fn new(ranges: Vec<(u16, u16)>) -> Option<Self> {
        let valid = |&(lo, hi): &(u16, u16)| Self::MIN <= lo && lo <= hi && hi <= Self::MAX;
        (!ranges.is_empty() && ranges.iter().all(valid)).then_some(Self(ranges))
    }

    /// The codes and ranges, in the order written.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.0
    }

    /// Whether `code` passes.
    pub fn accepts(&self, code: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&code))
    }
}

impl Default for StatusCodes {
    fn default() -> Self {
        Self::any_2xx()
    }
}

impl fmt::Display for StatusCodes {
    /// keepalived's form: `200`, `200-299`, `200 204 300-399`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// HTTP Basic authentication of an `http_get` (`auth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpAuth {
    /// User name (`user`): no `:` (Basic authentication puts one after it), no control
    /// characters.
    pub user: String,
    /// Where the password is.
    pub password: Password,
}

/// The password of an [`HttpAuth`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Password {
    /// Written in the configuration (`password`).
    Inline(Secret),
    /// Read from this file, white space trimmed, by the agent when it starts and on every
    /// reload (`password_file`, an absolute path); validation does not read it.
    File(PathBuf),
}

/// A secret string (a password): cloned and compared like a string, but its `Debug` shows
/// nothing of it, so no log line or error built with `{:?}` can carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// `misc_check`: the real is up while a command exits with status 0 (with `misc_dynamic`, also
/// 2 to 255, which set the real's weight to the status minus 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MiscCheck {
    /// Command line to run.
    pub misc_path: String,
    /// keepalived `misc_dynamic`: exit status 2-255 is a success that sets the weight to the
    /// status minus 2; 0 is a success that restores the configured weight; 1 is a failure.
    pub dynamic: bool,
    /// The command is killed (and the check fails) after this long.
    pub misc_timeout: Duration,
    /// Random start delay of up to this much.
    pub warmup: Option<Duration>,
}

/// `amqp_check`: the real is up while it speaks AMQP 0-9-1: it answers the protocol header with
/// connection.start and, with `login`, lets the check log in and open its vhost (and, with
/// `alarm`, publish). What the check sends and why is in `health::amqp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpCheck {
    /// Address to connect to; `None` = the real's.
    pub connect_ip: Option<IpAddr>,
    /// Port to connect to; `None` = the real's.
    pub connect_port: Option<u16>,
    /// Source address of the check.
    pub bindto: Option<IpAddr>,
    /// Source port of the check.
    pub bind_port: Option<u16>,
    /// Log in (`login: true`); `None` (`login: false`, the default) = stop at connection.start.
    pub login: Option<AmqpLogin>,
    /// Which way the connection goes (`probe`); `None` = the default for the real (see
    /// [`StreamProbe`]).
    pub probe: Option<StreamProbe>,
    /// Timing; the whole exchange is bounded by `connect_timeout`.
    pub timing: CheckTiming,
}

/// The login of an `amqp_check` (`login: true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpLogin {
    /// `user` (required with `login`).
    pub user: String,
    /// `password` or `password_file` (one of them, required with `login`).
    pub password: AmqpPassword,
    /// `vhost` opened after the login (default `/`).
    pub vhost: String,
    /// `alarm`: also publish one unroutable message, so that a node with a memory or disk
    /// alarm (which blocks publishers) fails (default false).
    pub alarm: bool,
}

impl AmqpLogin {
    /// `vhost` when not set.
    pub const DEFAULT_VHOST: &str = "/";
    /// Longest `user`, in bytes.
    pub const MAX_USER: usize = 255;
    /// Longest password, in bytes (connection.start-ok, which carries it, must fit in AMQP's
    /// smallest frame, 4096 bytes).
    pub const MAX_PASSWORD: usize = 1024;
    /// Longest `vhost`, in bytes (an AMQP short string).
    pub const MAX_VHOST: usize = 255;
}

/// Where the password of an `amqp_check` comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum AmqpPassword {
    /// `password`: in the configuration itself.
    Text(String),
    /// `password_file`: an absolute path; the agent reads the file when it starts and at each
    /// reload (validation does not look at it).
    File(PathBuf),
}

impl fmt::Debug for AmqpPassword {
    /// The path of a file, never a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmqpPassword::Text(_) => f.write_str("Text(<hidden>)"),
            AmqpPassword::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// Longest `udp_check` `payload` and `require_reply` pattern, in bytes: one datagram.
pub const MAX_UDP_PAYLOAD: usize = 1400;

/// `udp_check` (keepalived's UDP_CHECK): sends `payload` in one datagram. Without
/// `require_reply` the real is up unless an ICMP port unreachable comes back; with it, up only
/// when a reply arrives (starting with its bytes, if it has any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpCheck {
    /// Address to send to; `None` = the real's.
    pub connect_ip: Option<IpAddr>,
    /// Port to send to; `None` = the real's.
    pub connect_port: Option<u16>,
    /// Source address of the check.
    pub bindto: Option<IpAddr>,
    /// Source port of the check.
    pub bind_port: Option<u16>,
    /// The datagram's bytes (keepalived's hex `payload`); empty by default.
    pub payload: Vec<u8>,
    /// `None`: no reply needed; `Some(prefix)`: a reply is needed, and it must start with
    /// `prefix` (empty: any reply).
    pub require_reply: Option<Vec<u8>>,
    /// Timing.
    pub timing: CheckTiming,
}

/// `smtp_check` (keepalived's SMTP_CHECK): the real is up while it greets with 2xx and
/// answers `HELO` with 250.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpCheck {
    /// Address to connect to; `None` = the real's.
    pub connect_ip: Option<IpAddr>,
    /// Port to connect to; `None` = the real's.
    pub connect_port: Option<u16>,
    /// Source address of the check.
    pub bindto: Option<IpAddr>,
    /// Source port of the check.
    pub bind_port: Option<u16>,
    /// The name sent with `HELO`; `None` = the director's host name (keepalived's default).
    pub helo_name: Option<String>,
    /// Timing.
    pub timing: CheckTiming,
}

/// `ping_check` (keepalived's PING_CHECK): the real is up while it answers an ICMP echo
/// (ICMPv6 for an IPv6 real) within `connect_timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingCheck {
    /// Address to ping; `None` = the real's.
    pub connect_ip: Option<IpAddr>,
    /// Source address of the check.
    pub bindto: Option<IpAddr>,
    /// Timing.
    pub timing: CheckTiming,
}

/// `dns_check` (keepalived's DNS_CHECK): a query over UDP; the real is up when the answer has
/// the query's id and RCODE NOERROR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsCheck {
    /// Address to query; `None` = the real's.
    pub connect_ip: Option<IpAddr>,
    /// Port to query; `None` = 53 (keepalived's default), not the real's.
    pub connect_port: Option<u16>,
    /// Source address of the check.
    pub bindto: Option<IpAddr>,
    /// Source port of the check.
    pub bind_port: Option<u16>,
    /// The query's type (`type`); SOA by default, as keepalived.
    pub query_type: DnsType,
    /// The name asked about, with or without its final dot; `.` by default.
    pub name: String,
    /// Timing.
    pub timing: CheckTiming,
}

/// The query types of `dns_check` (keepalived's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DnsType {
    /// IPv4 address.
    A,
    /// Name server.
    Ns,
    /// Canonical name.
    Cname,
    /// Start of authority (keepalived's default).
    #[default]
    Soa,
    /// Mail exchanger.
    Mx,
    /// Text.
    Txt,
    /// IPv6 address.
    Aaaa,
}

impl DnsType {
    /// The YAML words.
    pub const WORDS: [(&'static str, DnsType); 7] = [
        ("A", DnsType::A),
        ("NS", DnsType::Ns),
        ("CNAME", DnsType::Cname),
        ("SOA", DnsType::Soa),
        ("MX", DnsType::Mx),
        ("TXT", DnsType::Txt),
        ("AAAA", DnsType::Aaaa),
    ];

    /// The YAML word.
    pub fn word(self) -> &'static str {
        Self::WORDS
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("SOA", |(w, _)| w)
    }

    /// The TYPE on the wire (RFC 1035 3.2.2, RFC 3596).
    pub fn code(self) -> u16 {
        match self {
            DnsType::A => 1,
            DnsType::Ns => 2,
            DnsType::Cname => 5,
            DnsType::Soa => 6,
            DnsType::Mx => 15,
            DnsType::Txt => 16,
            DnsType::Aaaa => 28,
        }
    }
}

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// YAML path of the field (`virtual_servers[1].real_servers[0].weight`); `""` for the
    /// whole document.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FieldError {
    /// `path: message`, the input in both shortened and escaped ([`message::shown`],
    /// [`message::path_shown`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = message::shown(&self.message);
        if self.path.is_empty() {
            f.write_str(&message)
        } else {
            write!(f, "{}: {message}", message::path_shown(&self.path))
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The problems, in document order.
    pub errors: Vec<FieldError>,
}

impl ConfigError {
    /// An error about the whole file.
    fn whole_file(file: &Path, message: String) -> Self {
        Self {
            file: file.to_path_buf(),
            errors: vec![FieldError {
                path: String::new(),
                message,
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    /// One line per problem: `file: path: message` (`file: message` for the whole file).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {e}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates a configuration file: a regular file of at most
    /// [`MAX_CONFIG_BYTES`].
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = file::read(path).map_err(|e| ConfigError::whole_file(path, e.to_string()))?;
        Self::from_yaml(&text, path)
    }

    /// Parses and validates a configuration; `file` is only used in error messages.
    pub fn from_yaml(text: &str, file: &Path) -> Result<Config, ConfigError> {
        if let Some((line, column)) = nesting::too_deep(text) {
            return Err(ConfigError::whole_file(
                file,
                format!(
                    "invalid YAML: collections nested more than {MAX_FLOW_DEPTH} deep ([ and {{ inside \
                     each other) at line {line} column {column}"
                ),
            ));
        }
        let syntax = |e: serde_yaml::Error| ConfigError {
            file: file.to_path_buf(),
            errors: vec![syntax_error(&e, text)],
        };
        let mut doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(syntax)?;
        // YAML merge keys (`<<: *defaults`) let several blocks share settings.
        doc.apply_merge().map_err(syntax)?;
        let mut rd = reader::Reader::default();
        let config = parse::config(&mut rd, &reader::Node::root(&doc));
        let errors = rd.finish(&doc);
        match config {
            Some(config) if errors.is_empty() => Ok(config),
            _ if errors.is_empty() => Err(ConfigError::whole_file(
                file,
                "the configuration could not be read".to_owned(),
            )),
            _ => Err(ConfigError {
                file: file.to_path_buf(),
                errors,
            }),
        }
    }

    /// The configuration as canonical YAML (every key written out), which
    /// [`Config::from_yaml`] turns back into an equal `Config`.
    pub fn to_yaml(&self) -> String {
        emit::config(self)
    }

    /// The service with this key.
    pub fn virtual_server(&self, key: &ServiceKey) -> Option<&VirtualServer> {
        self.virtual_servers.iter().find(|vs| vs.key == *key)
    }

    /// The services whose reals `key`'s checkers check: the members of the group `key` leads,
    /// or `key` alone.
    pub fn checked_through(&self, key: &ServiceKey) -> impl Iterator<Item = &VirtualServer> {
        self.virtual_servers
            .iter()
            .filter(move |vs| match &vs.group {
                Some(g) => g.leader == *key,
                None => vs.key == *key,
            })
    }
}

/// Whether a line holds YAML content (not blank, a comment or a directive).
fn is_content(line: &str) -> bool {
    let t = line.trim();
    !(t.is_empty() || t.starts_with('#') || t.starts_with('%') || t == "---")
}

/// A YAML syntax error, with its line and column (and the field, for a number too large).
fn syntax_error(e: &serde_yaml::Error, source: &str) -> FieldError {
    let whole = |message| FieldError {
        path: String::new(),
        message,
    };
    let text = e.to_string();
    if text.contains("more than one document") {
        // serde_yaml gives no location: the second document starts at its `---` line.
        let second = source
            .lines()
            .enumerate()
            .filter(|(_, l)| *l == "---" || l.starts_with("--- "))
            .map(|(i, _)| i + 1)
            .find(|&line| source.lines().take(line - 1).any(is_content));
        return whole(match second {
            Some(line) => format!(
                "invalid YAML: the file holds more than one document (the second starts at \
                 line {line}); a configuration is one document"
            ),
            None => "invalid YAML: the file holds more than one document; a configuration is \
                     one document"
                .to_owned(),
        });
    }
    if let Some(number) = text
        .strip_prefix("invalid type: integer `")
        .or_else(|| text.split_once(": invalid type: integer `").map(|(_, r)| r))
        .and_then(|r| r.split_once("` as u128"))
        .map(|(n, _)| n)
    {
        let path = text
            .split_once(": invalid type")
            .map(|(p, _)| p.to_owned())
            .unwrap_or_default();
        let at = e
            .location()
            .map(|l| format!(" at line {} column {}", l.line(), l.column()))
            .unwrap_or_default();
        if path.ends_with(".digest") {
            // An MD5 digest of decimal digits only reads as a number.
            return FieldError {
                path,
                message: format!("the digest `{number}` reads as a number: put it in quotes{at}"),
            };
        }
        return FieldError {
            path,
            message: format!(
                "the number `{number}` is too large for any field (the largest is {}){at}",
                u64::MAX
            ),
        };
    }
    whole(match e.location() {
        Some(l) if !text.contains(" at line ") => {
            format!(
                "invalid YAML: {text} at line {} column {}",
                l.line(),
                l.column()
            )
        }
        _ => format!("invalid YAML: {text}"),
    })
}
