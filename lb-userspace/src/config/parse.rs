//! From the YAML document to a [`Config`]: keys, aliases, keepalived's defaults, and the checks
//! that span several fields (duplicates, capacities, ports, address families).
//!
//! Each function reads one block. A value in error is reported and replaced by its default so
//! that reading goes on; the caller then refuses the whole configuration.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use serde_yaml::Value;

use super::{
    Config, Group, LbAlgo, RealServer, SyncConfig, Timeouts, VirtualServer,
    address::{ipv4_mapped, not_a_host},
    check,
    reader::{Fields, Node, Reader, describe},
};
use crate::{
    model::{AttachMode, Limits},
    model::{Persistence, Protocol, RealKey, SchedFlags, ServiceKey, Thresholds},
    schedule::maglev::is_prime,
};

/// Keys of the document.
const TOP_KEYS: &[&str] = &[
    "interface",
    "xdp_mode",
    "instance",
    "manage_vip",
    "keep_forwarding_on_stop",
    "control_socket",
    "metrics_listen",
    "limits",
    "timeouts",
    "sync",
    "virtual_servers",
];
/// Keys of `limits`.
const LIMIT_KEYS: &[&str] = &[
    "max_services",
    "max_reals",
    "max_table_size",
    "conn_entries",
    "persist_entries",
    "conn_entries6",
    "persist_entries6",
];
/// Keys of `timeouts`.
const TIMEOUT_KEYS: &[&str] = &["tcp", "tcpfin", "udp"];
/// Keys of `sync`.
const SYNC_KEYS: &[&str] = &[
    "id",
    "key_file",
    "port",
    "group",
    "interface",
    "peers",
    "ttl",
    "startup_wait",
    "refresh",
];
/// Keys of a virtual server (aliases included).
const VS_KEYS: &[&str] = &[
    "vip",
    "port",
    "group",
    "vips",
    "protocol",
    "lb_algo",
    "lvs_sched",
    "lb_flags",
    "lb_kind",
    "lvs_method",
    "persistence_timeout",
    "persistence_granularity",
    "table_size",
    "delay_loop",
    "warmup",
    "alpha",
    "omega",
    "inhibit_on_failure",
    "quorum",
    "hysteresis",
    "quorum_up",
    "quorum_down",
    "sorry_server",
    "real_servers",
];
/// Keys of a real server.
const REAL_KEYS: &[&str] = &[
    "ip",
    "port",
    "weight",
    "uthreshold",
    "lthreshold",
    "inhibit_on_failure",
    "notify_up",
    "notify_down",
    "tcp_check",
    "http_get",
    "ssl_get",
    "misc_check",
    "amqp_check",
    "udp_check",
    "dns_check",
    "ping_check",
    "smtp_check",
    "file_check",
    "checks",
];

/// `xdp_mode` values.
const XDP_MODES: &[(&str, AttachMode)] = &[
    ("driver", AttachMode::Driver),
    ("skb", AttachMode::Skb),
    ("auto", AttachMode::Auto),
];
/// `protocol` values.
const PROTOCOLS: &[(&str, Protocol)] = &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)];

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;
/// Longest instance name.
const MAX_INSTANCE: usize = 32;
/// Longest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;
/// One day, the upper bound of most durations and timeouts, in seconds.
const DAY: u64 = 86_400;
/// One year, the upper bound of `persistence_timeout`, in seconds.
const YEAR: u64 = 31_536_000;
/// keepalived's `persistence_timeout` when the key is given without a value.
const KEEPALIVED_PERSISTENCE_TIMEOUT: u32 = 360;
/// keepalived's `delay_loop` default, in seconds.
const DEFAULT_DELAY_LOOP: u64 = 60;
/// Smallest Maglev table size.
const MIN_TABLE_SIZE: u32 = 7;
/// Largest `limits.max_table_size`: each service reserves two tables of that many slots.
const MAX_TABLE_SIZE: u32 = 1_000_003;
/// Default Maglev table size.
const DEFAULT_TABLE_SIZE: u32 = lb_common::DEFAULT_TABLE_SIZE;
/// Largest `sync.id` (keepalived's syncid is one byte).
const MAX_SYNC_ID: u32 = 255;
/// Longest `sync.startup_wait`, in seconds.
const MAX_STARTUP_WAIT: u64 = 60;
/// Shortest `sync.refresh`, in seconds.
const MIN_REFRESH: u64 = 10;

/// Reads the whole document; `None` only when a required value is missing (already reported).
pub(super) fn config(rd: &mut Reader, root: &Node<'_>) -> Option<Config> {
    let f = rd.fields(root, TOP_KEYS)?;
    let interface = f
        .required(rd, "interface")
        .and_then(|n| interface_name(rd, &n));
    let xdp_mode = f
        .get("xdp_mode")
        .and_then(|n| rd.keyword(&n, "xdp_mode", XDP_MODES));
    let instance = f.get("instance").and_then(|n| instance_name(rd, &n));
    let instance = instance.unwrap_or_else(|| "default".to_owned());
    let control_socket = f.get("control_socket").and_then(|n| socket_path(rd, &n));
    let control_socket =
        control_socket.unwrap_or_else(|| PathBuf::from(format!("/run/lb-xdp/{instance}.sock")));
    let manage_vip = f.flag(rd, "manage_vip").unwrap_or(false);
    let keep_forwarding_on_stop = f.flag(rd, "keep_forwarding_on_stop").unwrap_or(false);
    let metrics_listen = f.get("metrics_listen").and_then(|n| listen_addr(rd, &n));
    let limits = limits(rd, f.get("limits"));
    let timeouts = timeouts(rd, f.get("timeouts"));
    // `sync:` alone is the section with its defaults (and so misses its key_file), not off.
    let sync = f.raw("sync").and_then(|n| sync(rd, &n, &timeouts));
    let virtual_servers = virtual_servers(rd, f.get("virtual_servers"), &limits);
    Some(Config {
        interface: interface?,
        xdp_mode: xdp_mode.unwrap_or(AttachMode::Auto),
        instance,
        manage_vip,
        keep_forwarding_on_stop,
        control_socket,
        metrics_listen,
        limits,
        timeouts,
        sync,
        virtual_servers,
    })
}

/// `interface`: a name Linux would accept.
fn interface_name(rd: &mut Reader, node: &Node<'_>) -> Option<String> {
    let name = rd.text(node)?;
    let problem = if name.len() > MAX_IFNAME {
        Some(format!(
            "is {} bytes long; Linux allows at most {MAX_IFNAME}",
            name.len()
        ))
    } else if name == "." || name == ".." || name.contains(['/', ':']) {
        Some("must not be `.` or `..` nor contain `/` or `:`".to_owned())
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain white space or control characters".to_owned())
    } else {
        None
    };
    match problem {
        Some(p) => {
            rd.error(&node.path, format!("interface name `{name}` {p}"));
            None
        }
        None => Some(name),
    }
}

/// `instance`: `[A-Za-z0-9_-]{1,32}`, since it names a directory.
fn instance_name(rd: &mut Reader, node: &Node<'_>) -> Option<String> {
    let name = rd.text(node)?;
    let ok = name.len() <= MAX_INSTANCE
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        let msg = format!(
            "instance name `{name}` must be 1 to {MAX_INSTANCE} letters, digits, `_` or `-` \
             (it names /sys/fs/bpf/lb-xdp/<instance>)"
        );
        rd.error(&node.path, msg);
        return None;
    }
    Some(name)
}

/// `control_socket`: an absolute path a Unix socket can have.
fn socket_path(rd: &mut Reader, node: &Node<'_>) -> Option<PathBuf> {
    let path = rd.text(node)?;
    let problem = if !path.starts_with('/') {
        Some("must be an absolute path (starting with `/`)".to_owned())
    } else if path.ends_with('/') {
        Some("must name a file, not a directory".to_owned())
    } else if path.len() > MAX_SOCKET_PATH {
        let len = path.len();
        Some(format!(
            "is {len} bytes long; a Unix socket path has at most {MAX_SOCKET_PATH}"
        ))
    } else {
        None
    };
    if let Some(p) = problem {
        rd.error(&node.path, format!("`{path}` {p}"));
        return None;
    }
    Some(PathBuf::from(path))
}

/// `metrics_listen`: `address:port`.
fn listen_addr(rd: &mut Reader, node: &Node<'_>) -> Option<SocketAddr> {
    let Value::String(s) = node.value else {
        let found = describe(node.value);
        let msg = format!("expected an address:port like 127.0.0.1:9101, found {found}");
        rd.error(&node.path, msg);
        return None;
    };
    match s.trim().parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Some(a),
        Ok(_) => {
            rd.error(&node.path, "port 0 is not allowed; pick a fixed port");
            None
        }
        Err(_) => {
            let msg = format!("`{s}` is not an address:port like 127.0.0.1:9101 or [::1]:9101");
            rd.error(&node.path, msg);
            None
        }
    }
}

/// `limits`. A value in error is replaced by one that disables the checks that depend on it,
/// so that a wrong limit is reported once, not once per service.
fn limits(rd: &mut Reader, node: Option<Node<'_>>) -> Limits {
    let d = Limits::default();
    let Some(f) = node.and_then(|n| rd.fields(&n, LIMIT_KEYS)) else {
        return d;
    };
    let mut limit = |key: &str, range: std::ops::RangeInclusive<u32>, default: u32| {
        f.get(key)
            .map_or(Some(default), |n| rd.u32(&n, range))
            .unwrap_or(u32::MAX)
    };
    let max_services = limit("max_services", 1..=4096, d.max_services);
    let max_reals = limit("max_reals", 2..=1_048_576, d.max_reals);
    let conn_entries = limit("conn_entries", 16..=67_108_864, d.conn_entries);
    let persist_entries = limit("persist_entries", 16..=16_777_216, d.persist_entries);
    let conn_entries6 = limit("conn_entries6", 16..=67_108_864, d.conn_entries6);
    let persist_entries6 = limit("persist_entries6", 16..=16_777_216, d.persist_entries6);
    let max_table_size = f.get("max_table_size").map_or(Some(d.max_table_size), |n| {
        let too_big = format!(
            "{MAX_TABLE_SIZE}: larger tables are refused, as every service reserves two \
             tables of max_table_size slots"
        );
        prime_size(rd, &n, MAX_TABLE_SIZE, &too_big)
    });
    Limits {
        max_services,
        max_reals,
        max_table_size: max_table_size.unwrap_or(u32::MAX),
        conn_entries,
        persist_entries,
        conn_entries6,
        persist_entries6,
    }
}

/// A Maglev table size: a prime from [`MIN_TABLE_SIZE`] to `max`. Above `max`, the error
/// says "`n` is larger than `too_big`".
fn prime_size(rd: &mut Reader, node: &Node<'_>, max: u32, too_big: &str) -> Option<u32> {
    let n = rd.integer(node)?;
    let problem = if n < i128::from(MIN_TABLE_SIZE) {
        format!("must be at least {MIN_TABLE_SIZE}, found {n}")
    } else if n > i128::from(max) {
        format!("{n} is larger than {too_big}")
    } else {
        // In range, so it fits a u32.
        let n = n as u32;
        if is_prime(n) {
            return Some(n);
        }
        let below = (MIN_TABLE_SIZE..n).rev().find(|&p| is_prime(p));
        let above = (n..=max).find(|&p| is_prime(p));
        let hint = match (below, above) {
            (Some(b), Some(a)) => format!("; the nearest primes are {b} and {a}"),
            (Some(p), None) | (None, Some(p)) => format!("; the nearest prime is {p}"),
            (None, None) => String::new(),
        };
        format!("{n} is not a prime number (Maglev needs a prime table size){hint}")
    };
    rd.error(&node.path, problem);
    None
}

/// `timeouts`.
fn timeouts(rd: &mut Reader, node: Option<Node<'_>>) -> Timeouts {
    let d = Timeouts::default();
    let Some(f) = node.and_then(|n| rd.fields(&n, TIMEOUT_KEYS)) else {
        return d;
    };
    let mut secs = |key: &str, default: u32| {
        f.get(key)
            .and_then(|n| rd.u32(&n, 1..=DAY as u32))
            .unwrap_or(default)
    };
    Timeouts {
        tcp: secs("tcp", d.tcp),
        tcpfin: secs("tcpfin", d.tcpfin),
        udp: secs("udp", d.udp),
    }
}

/// `sync`: director state sync. Every key is read (and every mistake reported) before giving
/// up on a missing `key_file`.
fn sync(rd: &mut Reader, node: &Node<'_>, timeouts: &Timeouts) -> Option<SyncConfig> {
    let f = rd.fields(node, SYNC_KEYS)?;
    let id = f.get("id").and_then(|n| rd.u32(&n, 0..=MAX_SYNC_ID));
    let key_file = f.required(rd, "key_file").and_then(|n| rd.text(&n));
    let port = f.get("port").and_then(|n| rd.port(&n));
    let group = f.get("group").and_then(|n| sync_group(rd, &n));
    let interface = f.get("interface").and_then(|n| interface_name(rd, &n));
    let peers = f.get("peers");
    // A list with items, or a mistaken value (reported as such): either way peers were meant.
    let peers_given = peers
        .as_ref()
        .is_some_and(|n| n.value.as_sequence().is_none_or(|s| !s.is_empty()));
    let peers = peers.map_or_else(Vec::new, |n| sync_peers(rd, &n));
    if f.get("group").is_none() && !peers_given {
        let msg = "needs a multicast `group`, a list of `peers`, or both: without either no \
                   director hears another";
        rd.error(&node.path, msg);
    }
    // Within 1..=255.
    let ttl = f
        .get("ttl")
        .and_then(|n| rd.uint(&n, 1..=255))
        .map(|t| t as u8);
    let startup_wait = f
        .get("startup_wait")
        .and_then(|n| rd.seconds(&n, 0..=MAX_STARTUP_WAIT));
    let refresh = sync_refresh(rd, &f, timeouts);
    Some(SyncConfig {
        id: id.unwrap_or(0),
        key_file: PathBuf::from(key_file?),
        port: port.unwrap_or(SyncConfig::DEFAULT_PORT),
        group,
        interface,
        peers,
        ttl: ttl.unwrap_or(SyncConfig::DEFAULT_TTL),
        startup_wait: startup_wait.unwrap_or(SyncConfig::DEFAULT_STARTUP_WAIT),
        refresh,
    })
}

/// `sync.group`: an IPv4 or IPv6 multicast address.
fn sync_group(rd: &mut Reader, node: &Node<'_>) -> Option<IpAddr> {
    let addr = rd.ip(node)?;
    if !addr.is_multicast() {
        let msg = format!(
            "{addr} is not a multicast address (224.0.0.0/4 or ff00::/8); list unicast \
             directors in `peers`"
        );
        rd.error(&node.path, msg);
        return None;
    }
    Some(addr)
}

/// `sync.peers`: the other directors, unicast addresses, each once.
fn sync_peers(rd: &mut Reader, node: &Node<'_>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut seen: HashMap<IpAddr, usize> = HashMap::new();
    for (i, item) in rd.list(node).iter().enumerate() {
        let Some(addr) = rd.ip(item) else {
            continue;
        };
        let not_unicast = match addr {
            IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
            IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
        };
        if not_unicast {
            let mut msg = format!("{addr} is not the unicast address of a director");
            if addr.is_multicast() {
                msg.push_str(": a multicast address goes in `group`");
            }
            rd.error(&item.path, msg);
            continue;
        }
        if let Some(v4) = ipv4_mapped(addr) {
            let msg = format!(
                "{addr} is an IPv4-mapped IPv6 address, which no IPv6 packet carries: write {v4}"
            );
            rd.error(&item.path, msg);
            continue;
        }
        match seen.get(&addr) {
            Some(first) => {
                let msg = format!("duplicate peer {addr}: peers[{first}] is the same");
                rd.error(&item.path, msg);
            }
            None => {
                seen.insert(addr, i);
                out.push(addr);
            }
        }
    }
    out
}

/// `sync.refresh`: at least [`MIN_REFRESH`] seconds and less than the shorter of
/// `timeouts.tcp` and `timeouts.udp`, so that a peer hears of an idle connection or UDP flow
/// again before its entry would expire.
fn sync_refresh(rd: &mut Reader, f: &Fields<'_>, timeouts: &Timeouts) -> Duration {
    let default = SyncConfig::DEFAULT_REFRESH;
    let (bound, name) = if timeouts.udp < timeouts.tcp {
        (u64::from(timeouts.udp), "timeouts.udp")
    } else {
        (u64::from(timeouts.tcp), "timeouts.tcp")
    };
    let Some(node) = f.get("refresh") else {
        if default.as_secs() >= bound {
            let msg = format!(
                "refresh is not set, and its default {} is not less than {name} ({bound}); \
                 set a smaller refresh (at least {MIN_REFRESH})",
                default.as_secs()
            );
            rd.error(&f.path_of("refresh"), msg);
        }
        return default;
    };
    let Some(refresh) = rd.seconds(&node, MIN_REFRESH..=DAY) else {
        return default;
    };
    if refresh.as_secs() >= bound {
        let msg = format!(
            "must be less than {name} ({bound}), found {}: a peer would let an idle flow \
             expire before hearing of it again",
            refresh.as_secs()
        );
        rd.error(&node.path, msg);
    }
    refresh
}

/// `virtual_servers`, with the checks across services.
fn virtual_servers(rd: &mut Reader, node: Option<Node<'_>>, limits: &Limits) -> Vec<VirtualServer> {
    let Some(node) = node else {
        return Vec::new();
    };
    let items = rd.list(&node);
    let mut out: Vec<VirtualServer> = Vec::new();
    let mut seen: HashMap<ServiceKey, usize> = HashMap::new();
    let mut groups: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let members = if item.value.get("group").is_some() {
            group(rd, item, limits)
        } else {
            virtual_server(rd, item, limits).into_iter().collect()
        };
        if let Some(g) = members.first().and_then(|vs| vs.group.as_ref())
            && let Some(first) = groups.insert(g.name.clone(), i)
        {
            let msg = format!("group {} is virtual_servers[{first}] already", g.name);
            rd.error(&format!("{}.group", item.path), msg);
        }
        for vs in members {
            match seen.get(&vs.key) {
                Some(first) => {
                    let msg = format!(
                        "duplicate virtual server {}: virtual_servers[{first}] has the same vip, \
                         port and protocol",
                        vs.key
                    );
                    rd.error(&item.path, msg);
                }
                None => {
                    seen.insert(vs.key, i);
                }
            }
            out.push(vs);
        }
        if out.len() > MAX_EXPANDED_SERVICES {
            break;
        }
    }
    check_capacity(rd, &node, &out, limits);
    out
}

/// Past this many services (groups expanded) the reading stops: far beyond any
/// `limits.max_services`, which reports the excess.
const MAX_EXPANDED_SERVICES: usize = 1 << 20;

/// Services and reals (groups expanded) against `limits.max_services` and `limits.max_reals`.
fn check_capacity(rd: &mut Reader, node: &Node<'_>, services: &[VirtualServer], limits: &Limits) {
    if services.len() > limits.max_services as usize {
        let msg = format!(
            "{} virtual servers, but limits.max_services is {} (a group counts each member)",
            services.len(),
            limits.max_services
        );
        rd.error(&node.path, msg);
    }
    let reals: usize = services.iter().map(|vs| vs.real_servers.len()).sum();
    let max = limits.max_reals.saturating_sub(1) as usize;
    if reals > max {
        let msg = format!(
            "{reals} real servers in all, but limits.max_reals {} allows at most {max} \
             (index 0 is reserved)",
            limits.max_reals
        );
        rd.error(&node.path, msg);
    }
}

/// What the parts of a virtual server need to know about it.
pub(super) struct Service {
    /// The VIP, if valid.
    pub vip: Option<IpAddr>,
    /// The port the reals must have, if there is one (in a group whose entries differ in
    /// port, each real takes its member's).
    pub port: Option<u16>,
    /// A group's body: the reals' address family and port are checked per member.
    pub group: bool,
    /// `delay_loop`.
    pub delay_loop: Duration,
}

/// One virtual server; `None` when its vip or port is unusable.
fn virtual_server(rd: &mut Reader, node: &Node<'_>, limits: &Limits) -> Option<VirtualServer> {
    let f = rd.fields(node, VS_KEYS)?;
    if let Some(n) = f.get("vips") {
        let msg = "`vips` lists the addresses of a group: give the group its `group` name, or \
                   use `vip` and `port`";
        rd.error(&n.path, msg);
    }
    let vip = f.required(rd, "vip").and_then(|n| vip_address(rd, &n));
    let port = f.required(rd, "port").and_then(|n| rd.port(&n));
    service_body(rd, &f, (vip, port), port, false, limits)
}

/// A group: one service per address and port of `vips`, sharing everything else. The reals
/// take each member's port (a real's `port`, if given, must be every member's); a member gets
/// the reals of its address family.
fn group(rd: &mut Reader, node: &Node<'_>, limits: &Limits) -> Vec<VirtualServer> {
    let Some(f) = rd.fields(node, VS_KEYS) else {
        return Vec::new();
    };
    for key in ["vip", "port"] {
        if let Some(n) = f.get(key) {
            let msg = format!("a group's addresses and ports are its `vips`; remove `{key}`");
            rd.error(&n.path, msg);
        }
    }
    let name = f.required(rd, "group").and_then(|n| rd.text(&n));
    let mut entries: Vec<(String, Vec<IpAddr>, u16)> = Vec::new();
    if let Some(list) = f.required(rd, "vips") {
        let items = rd.list(&list);
        if items.is_empty() {
            rd.error(&list.path, "a group needs at least one entry");
        }
        for item in items {
            let Some(text) = rd.text(&item) else { continue };
            match super::group::entry(&text) {
                Ok((addrs, port)) => {
                    for a in &addrs {
                        check_address(rd, &item.path, *a, None);
                    }
                    entries.push((text, addrs, port));
                }
                Err(why) => rd.error(&item.path, why),
            }
        }
    }
    // The reals are read once, against the first entry (address family and port checks are
    // per member below).
    let first = entries.first().map(|(_, a, p)| (a[0], *p));
    let ports_agree = entries
        .iter()
        .all(|(_, _, p)| Some(*p) == first.map(|f| f.1));
    let Some(body) = service_body(
        rd,
        &f,
        (first.map(|f| f.0), first.map(|f| f.1)),
        first.map(|f| f.1).filter(|_| ports_agree),
        true,
        limits,
    ) else {
        return Vec::new();
    };
    let reals = &body.real_servers;
    let Some(name) = name else {
        return Vec::new();
    };
    let proto = body.key.proto;
    let leader = body.key;
    let group = Arc::new(Group {
        name,
        vips: entries.iter().map(|(t, _, _)| t.clone()).collect(),
        leader,
    });
    let family = |a: &IpAddr| a.is_ipv4();
    if let Some(n) = f.get("real_servers") {
        for (i, r) in reals.iter().enumerate() {
            let fits = entries
                .iter()
                .any(|(_, addrs, _)| family(&addrs[0]) == family(&r.key.addr));
            if !fits {
                let msg = format!(
                    "{} is of another address family than every entry of the group",
                    r.key.addr
                );
                rd.error(&format!("{}[{i}].ip", n.path), msg);
            }
        }
    }
    let mut out = Vec::new();
    for (_, addrs, port) in &entries {
        for vip in addrs {
            let real_servers = reals
                .iter()
                .filter(|r| family(&r.key.addr) == family(vip))
                .map(|r| RealServer {
                    key: RealKey {
                        addr: r.key.addr,
                        port: *port,
                    },
                    ..r.clone()
                })
                .collect();
            out.push(VirtualServer {
                key: ServiceKey {
                    vip: *vip,
                    port: *port,
                    proto,
                },
                real_servers,
                sorry_server: body.sorry_server.map(|s| RealKey {
                    addr: s.addr,
                    port: *port,
                }),
                group: Some(group.clone()),
                ..body.clone()
            });
            if out.len() > MAX_EXPANDED_SERVICES {
                return out;
            }
        }
    }
    out
}

/// Everything of a virtual server: the settings and the reals, keyed by `vip` and `port`.
/// In a group (`group`), `vip` and `port` are the first entry's, `real_port` the port the
/// reals must have if the entries agree on one, and the reals' address family is checked per
/// member. `None` when the vip or port is unusable.
fn service_body(
    rd: &mut Reader,
    f: &Fields<'_>,
    (vip, port): (Option<IpAddr>, Option<u16>),
    real_port: Option<u16>,
    group: bool,
    limits: &Limits,
) -> Option<VirtualServer> {
    let proto = f
        .get("protocol")
        .and_then(|n| rd.keyword(&n, "protocol", PROTOCOLS));
    let lb_algo = lb_algo(rd, f);
    let lb_flags = lb_flags(rd, f, lb_algo);
    lb_kind(rd, f);
    let persistence = persistence(rd, f, vip);
    let table_size = table_size(rd, f, limits);
    let delay_loop = f.get("delay_loop").and_then(|n| rd.seconds(&n, 1..=DAY));
    let svc = Service {
        vip,
        port: real_port,
        group,
        delay_loop: delay_loop.unwrap_or(Duration::from_secs(DEFAULT_DELAY_LOOP)),
    };
    let quorum = f.get("quorum").and_then(|n| rd.u32(&n, 1..=u32::MAX));
    let quorum = quorum.unwrap_or(1);
    let hysteresis = hysteresis(rd, f, quorum);
    let warmup = f.get("warmup").and_then(|n| rd.seconds(&n, 0..=DAY));
    let alpha = f.flag(rd, "alpha").unwrap_or(false);
    let omega = f.flag(rd, "omega").unwrap_or(false);
    let inhibit_on_failure = f.flag(rd, "inhibit_on_failure").unwrap_or(false);
    let quorum_up = f.get("quorum_up").and_then(|n| rd.text(&n));
    let quorum_down = f.get("quorum_down").and_then(|n| rd.text(&n));
    let sorry = f.get("sorry_server");
    let sorry_server = sorry.and_then(|n| sorry_server(rd, &n, &svc));
    let real_servers = real_servers(rd, f.get("real_servers"), &svc, table_size);
    // Everything is read (and every error reported) before giving up on a missing vip or port.
    let key = ServiceKey {
        vip: vip?,
        port: port?,
        proto: proto.unwrap_or(Protocol::Tcp),
    };
    Some(VirtualServer {
        key,
        lb_algo,
        lb_flags,
        persistence,
        table_size,
        delay_loop: svc.delay_loop,
        warmup,
        alpha,
        omega,
        inhibit_on_failure,
        quorum,
        hysteresis,
        quorum_up,
        quorum_down,
        sorry_server,
        real_servers,
        group: None,
    })
}

/// `lb_algo` / `lvs_sched`; keepalived's default `wlc` when absent.
fn lb_algo(rd: &mut Reader, f: &Fields<'_>) -> LbAlgo {
    let Some(node) = f.get_aliased(rd, "lb_algo", "lvs_sched") else {
        return LbAlgo::KEEPALIVED_DEFAULT;
    };
    let Value::String(name) = node.value else {
        let msg = format!("expected a scheduler name, found {}", describe(node.value));
        rd.error(&node.path, msg);
        return LbAlgo::Rr;
    };
    match name.parse::<LbAlgo>() {
        Ok(algo) => algo,
        Err(e) => {
            rd.error(&node.path, e.to_string());
            LbAlgo::Rr
        }
    }
}

/// `lb_flags`: IPVS's scheduling flags as keepalived names them: `sh-port` and `sh-fallback`
/// (with `sh`), `mh-port` and `mh-fallback` (with `mh`), `ops` (one-packet scheduling, with any
/// scheduler; UDP only, ignored for TCP as IPVS ignores it).
fn lb_flags(rd: &mut Reader, f: &Fields<'_>, algo: LbAlgo) -> SchedFlags {
    let mut flags = SchedFlags::default();
    let Some(node) = f.get("lb_flags") else {
        return flags;
    };
    for item in rd.list(&node) {
        let Value::String(word) = item.value else {
            let msg = format!("expected a scheduler flag, found {}", describe(item.value));
            rd.error(&item.path, msg);
            continue;
        };
        let (prefix, flag) = match word.split_once('-') {
            _ if word == "ops" => {
                flags.one_packet = true;
                continue;
            }
            Some((p @ ("sh" | "mh"), flag @ ("port" | "fallback"))) => (p, flag),
            _ => {
                let msg = format!(
                    "unknown scheduler flag `{word}`; use sh-port, sh-fallback, mh-port, \
                     mh-fallback or ops"
                );
                rd.error(&item.path, msg);
                continue;
            }
        };
        if prefix != algo.name() {
            let msg = format!("{word} applies to the {prefix} scheduler only, not {algo}");
            rd.error(&item.path, msg);
            continue;
        }
        if flag == "port" {
            flags.port = true;
        } else {
            flags.fallback = true;
        }
    }
    flags
}

/// `lb_kind` / `lvs_method`: only `dr`; keepalived's default is NAT.
fn lb_kind(rd: &mut Reader, f: &Fields<'_>) {
    const DR_ONLY: &str = "this balancer does direct routing (set lb_kind: dr)";
    let Some(node) = f.get_aliased(rd, "lb_kind", "lvs_method") else {
        let msg =
            format!("lb_kind is not set, and keepalived's default NAT is not supported: {DR_ONLY}");
        rd.error(&f.path_of("lb_kind"), msg);
        return;
    };
    let Value::String(kind) = node.value else {
        let msg = format!("expected dr, found {}", describe(node.value));
        rd.error(&node.path, msg);
        return;
    };
    let upper = kind.trim().to_ascii_uppercase();
    match upper.as_str() {
        "DR" => {}
        "NAT" | "TUN" => {
            rd.error(
                &node.path,
                format!("lb_kind {upper} is not supported: {DR_ONLY}"),
            );
        }
        _ => rd.error(&node.path, format!("unknown lb_kind `{kind}`: {DR_ONLY}")),
    }
}

/// `persistence_timeout` and `persistence_granularity`: a netmask for an IPv4 `vip`, a prefix
/// length for an IPv6 one (as keepalived and ipvsadm take them). Without a valid `vip` the
/// granularity cannot be judged and is skipped (the vip's error is reported).
fn persistence(rd: &mut Reader, f: &Fields<'_>, vip: Option<IpAddr>) -> Option<Persistence> {
    let mut p = Persistence::per_client(KEEPALIVED_PERSISTENCE_TIMEOUT);
    if let Some(n) = f.get("persistence_granularity") {
        match vip {
            Some(IpAddr::V4(_)) => p.granularity = netmask(rd, &n).unwrap_or(p.granularity),
            Some(IpAddr::V6(_)) => p.prefix6 = prefix6(rd, &n).unwrap_or(p.prefix6),
            None => {}
        }
    }
    let node = f.raw("persistence_timeout")?;
    if !node.is_null() {
        p.timeout = rd.u32(&node, 1..=YEAR as u32)?;
    }
    Some(p)
}

/// The persistence granularity of an IPv6 service: a prefix length from 1 to 128.
fn prefix6(rd: &mut Reader, node: &Node<'_>) -> Option<u8> {
    const WANT: &str = "an IPv6 service's persistence_granularity is a prefix length from 1 \
                        to 128, like 64";
    match node.value {
        // Within 1..=128.
        Value::Number(_) => rd.uint(node, 1..=128).map(|len| len as u8),
        Value::String(s) => {
            let msg = match s.trim().parse::<u8>() {
                Ok(_) => format!("{WANT} (remove the quotes)"),
                Err(_) => format!("`{s}`: {WANT}"),
            };
            rd.error(&node.path, msg);
            None
        }
        _ => {
            let msg = format!("{WANT}, found {}", describe(node.value));
            rd.error(&node.path, msg);
            None
        }
    }
}

/// A contiguous IPv4 netmask (`255.255.255.0`) or a prefix length (`24`).
fn netmask(rd: &mut Reader, node: &Node<'_>) -> Option<Ipv4Addr> {
    let mask = match node.value {
        Value::Number(_) => {
            let len = rd.uint(node, 0..=32)?;
            u32::MAX.checked_shl(32 - len as u32).unwrap_or(0)
        }
        Value::String(s) => {
            let parsed = s.trim().parse::<Ipv4Addr>();
            let mask = parsed
                .map(u32::from)
                .ok()
                .filter(|m| m.leading_ones() + m.trailing_zeros() == 32);
            let Some(mask) = mask else {
                let msg = format!(
                    "`{s}` is not a contiguous netmask; use one like 255.255.255.0 or a \
                     prefix length like 24"
                );
                rd.error(&node.path, msg);
                return None;
            };
            mask
        }
        _ => {
            let found = describe(node.value);
            let msg =
                format!("expected a netmask like 255.255.255.0 or a prefix length, found {found}");
            rd.error(&node.path, msg);
            return None;
        }
    };
    Some(mask.into())
}

/// `table_size`: a prime up to `limits.max_table_size`, default 65537.
fn table_size(rd: &mut Reader, f: &Fields<'_>, limits: &Limits) -> u32 {
    let max = limits.max_table_size;
    let Some(node) = f.get("table_size") else {
        if DEFAULT_TABLE_SIZE > max {
            let msg = format!(
                "table_size is not set, and its default {DEFAULT_TABLE_SIZE} is larger than \
                 limits.max_table_size ({max}); set a smaller prime table_size"
            );
            rd.error(&f.path_of("table_size"), msg);
        }
        return DEFAULT_TABLE_SIZE;
    };
    let too_big = format!("limits.max_table_size ({max}); raise it or pick a smaller prime");
    prime_size(rd, &node, max, &too_big).unwrap_or(DEFAULT_TABLE_SIZE)
}

/// `hysteresis`, which must stay below `quorum` (else quorum could never be lost).
fn hysteresis(rd: &mut Reader, f: &Fields<'_>, quorum: u32) -> u32 {
    let Some(node) = f.get("hysteresis") else {
        return 0;
    };
    let Some(h) = rd.u32(&node, 0..=u32::MAX) else {
        return 0;
    };
    if h >= quorum {
        let msg =
            format!("must be less than quorum ({quorum}), found {h}: quorum would never be lost");
        rd.error(&node.path, msg);
    }
    h
}

/// Checks that `addr` can be a VIP or a real: a unicast host address, of the VIP's family when
/// `vip` is given.
fn check_address(rd: &mut Reader, path: &str, addr: IpAddr, vip: Option<IpAddr>) {
    if not_a_host(addr) {
        rd.error(
            path,
            format!("{addr} is not a unicast address of another host"),
        );
    } else if let Some(v4) = ipv4_mapped(addr) {
        rd.error(
            path,
            format!(
                "{addr} is an IPv4-mapped IPv6 address, which no IPv6 packet carries: write {v4}"
            ),
        );
    } else if vip == Some(addr) {
        rd.error(
            path,
            format!("{addr} is the vip itself: a real or sorry server is another host"),
        );
    } else if let Some(vip) = vip.filter(|v| v.is_ipv4() != addr.is_ipv4()) {
        let msg = format!(
            "{addr} and the vip {vip} are of different address families; real and sorry \
             servers must have the vip's address family"
        );
        rd.error(path, msg);
    }
}

/// A VIP.
fn vip_address(rd: &mut Reader, node: &Node<'_>) -> Option<IpAddr> {
    let addr = rd.ip(node)?;
    check_address(rd, &node.path, addr, None);
    Some(addr)
}

/// The address of a real or sorry server of `svc`.
fn member_address(rd: &mut Reader, node: &Node<'_>, svc: &Service) -> Option<IpAddr> {
    let addr = rd.ip(node)?;
    check_address(rd, &node.path, addr, svc.vip.filter(|_| !svc.group));
    Some(addr)
}

/// A port that, in direct routing, must be the service's; absent = the service's.
fn service_port(rd: &mut Reader, node: Option<Node<'_>>, svc: &Service) -> Option<u16> {
    let Some(node) = node else {
        // In a group, each member gives the real its own port.
        return svc.port.or(svc.group.then_some(0));
    };
    let port = rd.port(&node)?;
    if svc.group && svc.port.is_none() {
        let msg = "the group's entries differ in port: give its reals no port, each takes its \
                   member's";
        rd.error(&node.path, msg);
    }
    if let Some(vport) = svc.port.filter(|p| *p != port) {
        let msg = format!(
            "must equal the virtual server's port ({vport}), found {port}: direct routing \
             cannot change ports"
        );
        rd.error(&node.path, msg);
    }
    Some(port)
}

/// `sorry_server`: `{ ip: ..., port: ... }` or keepalived's `"ip port"`.
fn sorry_server(rd: &mut Reader, node: &Node<'_>, svc: &Service) -> Option<RealKey> {
    match node.value {
        Value::String(s) => sorry_server_words(rd, node, s, svc),
        Value::Mapping(_) => {
            let f = rd.fields(node, &["ip", "port"])?;
            let addr = f
                .required(rd, "ip")
                .and_then(|n| member_address(rd, &n, svc));
            let port = service_port(rd, f.get("port"), svc);
            Some(RealKey {
                addr: addr?,
                port: port?,
            })
        }
        _ => {
            let found = describe(node.value);
            let msg = format!("expected {{ ip: ..., port: ... }} or \"ip port\", found {found}");
            rd.error(&node.path, msg);
            None
        }
    }
}

/// keepalived's `sorry_server <ip> [<port>]` as one string.
fn sorry_server_words(rd: &mut Reader, node: &Node<'_>, s: &str, svc: &Service) -> Option<RealKey> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let (ip, port) = match words[..] {
        [ip] => (ip, None),
        [ip, port] => (ip, Some(port)),
        _ => {
            rd.error(&node.path, format!("`{s}` is not \"ip port\""));
            return None;
        }
    };
    let Ok(addr) = ip.parse::<IpAddr>() else {
        rd.error(&node.path, format!("`{ip}` is not a valid IP address"));
        return None;
    };
    check_address(rd, &node.path, addr, svc.vip);
    let port = match port.map(str::parse::<u16>) {
        None => svc.port.or(svc.group.then_some(0))?,
        Some(Ok(p)) if p != 0 => p,
        Some(_) => {
            rd.error(
                &node.path,
                format!("`{s}`: the port must be between 1 and 65535"),
            );
            return None;
        }
    };
    if let Some(vport) = svc.port.filter(|v| *v != port) {
        let msg = format!(
            "the port must equal the virtual server's port ({vport}), found {port}: direct \
             routing cannot change ports"
        );
        rd.error(&node.path, msg);
    }
    Some(RealKey { addr, port })
}

/// `real_servers`, with the checks across the reals of one service.
fn real_servers(
    rd: &mut Reader,
    node: Option<Node<'_>>,
    svc: &Service,
    table_size: u32,
) -> Vec<RealServer> {
    let Some(node) = node else {
        return Vec::new();
    };
    let mut out: Vec<RealServer> = Vec::new();
    // Linear in the reals: a configuration may hold hundreds of thousands.
    let mut seen: HashMap<RealKey, usize> = HashMap::new();
    for (i, item) in rd.list(&node).iter().enumerate() {
        let Some(real) = real_server(rd, item, svc) else {
            continue;
        };
        match seen.get(&real.key) {
            Some(first) => {
                let msg = format!(
                    "duplicate real server {}: real_servers[{first}] is the same",
                    real.key
                );
                rd.error(&item.path, msg);
            }
            None => {
                seen.insert(real.key, i);
            }
        }
        out.push(real);
    }
    let weighted = out.iter().filter(|r| r.weight > 0).count();
    if weighted > table_size as usize {
        let msg = format!(
            "{weighted} real servers with a weight do not fit in a table of {table_size} \
             slots; raise table_size"
        );
        rd.error(&node.path, msg);
    }
    out
}

/// One real server; `None` when its address or port is unusable.
fn real_server(rd: &mut Reader, node: &Node<'_>, svc: &Service) -> Option<RealServer> {
    let f = rd.fields(node, REAL_KEYS)?;
    let addr = f
        .required(rd, "ip")
        .and_then(|n| member_address(rd, &n, svc));
    let port = service_port(rd, f.get("port"), svc);
    let weight = f
        .get("weight")
        .and_then(|n| rd.u32(&n, 0..=lb_common::MAX_WEIGHT));
    let thresholds = thresholds(rd, &f);
    let inhibit_on_failure = f.flag(rd, "inhibit_on_failure");
    let notify_up = f.get("notify_up").and_then(|n| rd.text(&n));
    let notify_down = f.get("notify_down").and_then(|n| rd.text(&n));
    let checks = check::checkers(rd, &f, addr, svc);
    // Everything is read (and every error reported) before giving up on a missing address.
    let key = RealKey {
        addr: addr?,
        port: port?,
    };
    Some(RealServer {
        key,
        weight: weight.unwrap_or(1),
        thresholds,
        inhibit_on_failure,
        notify_up,
        notify_down,
        checks,
    })
}

/// A real's `uthreshold` and `lthreshold` (0 to ipvsadm's limit; 0 = none). A lower threshold
/// needs an upper one at least as large: IPVS never sets the overload without an upper one.
fn thresholds(rd: &mut Reader, f: &Fields<'_>) -> Thresholds {
    let read = |rd: &mut Reader, key| {
        f.get(key)
            .and_then(|n| rd.u32(&n, 0..=Thresholds::MAX).map(|v| (n, v)))
    };
    let upper = read(rd, "uthreshold");
    let lower = read(rd, "lthreshold");
    let upper_value = upper.as_ref().map_or(0, |(_, v)| *v);
    if let Some((node, lower)) = &lower
        && *lower > 0
    {
        if upper_value == 0 {
            rd.error(
                &node.path,
                format!("lthreshold {lower} needs an uthreshold (a real without one is never overloaded)"),
            );
        } else if *lower > upper_value {
            rd.error(
                &node.path,
                format!("lthreshold {lower} is above uthreshold {upper_value}"),
            );
        }
    }
    Thresholds {
        upper: upper_value,
        lower: lower.map_or(0, |(_, v)| v),
    }
}
