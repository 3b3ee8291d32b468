//! [`Config`] back to YAML, every key written out, in the order of `configs/example.yaml`.

use std::{net::IpAddr, time::Duration};

use serde_yaml::{Mapping, Value};

use super::{
    AmqpCheck, AmqpPassword, CheckTiming, Checker, Config, HttpAuth, Password, RealServer,
    StatusCodes, SyncConfig, TlsCheck, VirtualServer,
};
use crate::model::{AttachMode, RealKey};

/// The whole configuration as a YAML document.
pub(super) fn config(c: &Config) -> String {
    let mut m = Block::default();
    m.put("interface", c.interface.as_str());
    m.put("xdp_mode", xdp_mode(c.xdp_mode));
    m.put("instance", c.instance.as_str());
    m.put("manage_vip", c.manage_vip);
    m.put("keep_forwarding_on_stop", c.keep_forwarding_on_stop);
    m.put(
        "control_socket",
        c.control_socket.to_string_lossy().as_ref(),
    );
    m.put_opt("metrics_listen", c.metrics_listen.map(|a| a.to_string()));
    let mut limits = Block::default();
    limits.put("max_services", c.limits.max_services);
    limits.put("max_reals", c.limits.max_reals);
    limits.put("max_table_size", c.limits.max_table_size);
    limits.put("conn_entries", c.limits.conn_entries);
    limits.put("persist_entries", c.limits.persist_entries);
    limits.put("conn_entries6", c.limits.conn_entries6);
    limits.put("persist_entries6", c.limits.persist_entries6);
    m.put("limits", limits);
    let mut timeouts = Block::default();
    timeouts.put("tcp", c.timeouts.tcp);
    timeouts.put("tcpfin", c.timeouts.tcpfin);
    timeouts.put("udp", c.timeouts.udp);
    m.put("timeouts", timeouts);
    m.put_opt("sync", c.sync.as_ref().map(sync));
    // A group is written once, as its leader: the other members come from its `vips`.
    let services: Vec<Value> = c
        .virtual_servers
        .iter()
        .filter(|vs| vs.group.as_ref().is_none_or(|g| g.leader == vs.key))
        .map(|vs| virtual_server(c, vs))
        .collect();
    m.put("virtual_servers", services);
    // Serializing a tree of plain values cannot fail.
    serde_yaml::to_string(&Value::from(m)).unwrap_or_default()
}

/// A mapping under construction, keys in insertion order.
#[derive(Default)]
struct Block(Mapping);

impl Block {
    fn put(&mut self, key: &str, value: impl Into<Value>) {
        self.0.insert(key.into(), value.into());
    }

    fn put_opt(&mut self, key: &str, value: Option<impl Into<Value>>) {
        if let Some(v) = value {
            self.put(key, v);
        }
    }
}

impl From<Block> for Value {
    fn from(b: Block) -> Value {
        Value::Mapping(b.0)
    }
}

fn xdp_mode(mode: AttachMode) -> &'static str {
    match mode {
        AttachMode::Driver => "driver",
        AttachMode::Skb => "skb",
        AttachMode::Auto => "auto",
    }
}

/// Seconds: a whole number, or a fraction when the duration has milliseconds.
fn seconds(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        Value::from(d.as_secs())
    } else {
        Value::from(d.as_millis() as f64 / 1000.0)
    }
}

fn ip(a: IpAddr) -> Value {
    Value::from(a.to_string())
}

fn sync(s: &SyncConfig) -> Value {
    let mut m = Block::default();
    m.put("id", s.id);
    m.put("key_file", s.key_file.to_string_lossy().as_ref());
    m.put("port", s.port);
    m.put_opt("group", s.group.map(ip));
    m.put_opt("interface", s.interface.as_deref());
    let peers: Vec<Value> = s.peers.iter().copied().map(ip).collect();
    m.put("peers", peers);
    m.put("ttl", s.ttl);
    m.put("startup_wait", seconds(s.startup_wait));
    m.put("refresh", seconds(s.refresh));
    m.into()
}

fn virtual_server(c: &Config, vs: &VirtualServer) -> Value {
    let mut m = Block::default();
    match &vs.group {
        None => {
            m.put("vip", ip(vs.key.vip));
            m.put("port", vs.key.port);
        }
        Some(g) => {
            m.put("group", g.name.as_str());
            let vips: Vec<Value> = g.vips.iter().map(|v| v.as_str().into()).collect();
            m.put("vips", vips);
        }
    }
    m.put("protocol", vs.key.proto.name().to_ascii_lowercase());
    m.put("lb_algo", vs.lb_algo.name());
    let flags = vs.lb_flags.names(vs.lb_algo.name());
    if !flags.is_empty() {
        let flags: Vec<Value> = flags.into_iter().map(Value::from).collect();
        m.put("lb_flags", Value::Sequence(flags));
    }
    m.put("lb_kind", "dr");
    if let Some(p) = vs.persistence {
        m.put("persistence_timeout", p.timeout);
        // A netmask for IPv4, a prefix length (a number) for IPv6.
        match vs.key.vip {
            IpAddr::V4(_) => m.put("persistence_granularity", p.granularity.to_string()),
            IpAddr::V6(_) => m.put("persistence_granularity", p.prefix6),
        }
    }
    m.put("table_size", vs.table_size);
    m.put("delay_loop", seconds(vs.delay_loop));
    m.put_opt("warmup", vs.warmup.map(seconds));
    m.put("alpha", vs.alpha);
    m.put("omega", vs.omega);
    m.put("inhibit_on_failure", vs.inhibit_on_failure);
    m.put("quorum", vs.quorum);
    m.put("hysteresis", vs.hysteresis);
    m.put_opt("quorum_up", vs.quorum_up.as_deref());
    m.put_opt("quorum_down", vs.quorum_down.as_deref());
    if vs.group.is_none() {
        m.put_opt("sorry_server", vs.sorry_server.map(real_key));
        let reals: Vec<Value> = vs.real_servers.iter().map(real_server).collect();
        m.put("real_servers", reals);
        return m.into();
    }
    // A group's reals and sorry server take each member's port: written without one. The
    // members of each address family hold its reals; all of them, once each, in order.
    let portless = |v: Value| match v {
        Value::Mapping(mut map) => {
            map.remove("port");
            Value::Mapping(map)
        }
        other => other,
    };
    m.put_opt(
        "sorry_server",
        vs.sorry_server.map(|k| portless(real_key(k))),
    );
    let mut seen = std::collections::HashSet::new();
    let reals: Vec<Value> = c
        .virtual_servers
        .iter()
        .filter(|m| m.group == vs.group)
        .flat_map(|m| &m.real_servers)
        .filter(|r| seen.insert(r.key.addr))
        .map(|r| portless(real_server(r)))
        .collect();
    m.put("real_servers", reals);
    m.into()
}

/// An `ssl_get`'s `enable_sni`, `sni_name` and `tls` block.
fn tls(h: &mut Block, t: &TlsCheck) {
    h.put("enable_sni", t.enable_sni);
    h.put_opt("sni_name", t.sni_name.as_deref());
    let mut b = Block::default();
    b.put("verify", t.verify);
    b.put_opt(
        "ca_file",
        t.ca_file.as_ref().map(|p| p.display().to_string()),
    );
    if let Some(c) = &t.client {
        b.put("certificate_file", c.certificate_file.display().to_string());
        b.put("key_file", c.key_file.display().to_string());
    }
    h.put("tls", b);
}

fn real_key(k: RealKey) -> Value {
    let mut m = Block::default();
    m.put("ip", ip(k.addr));
    m.put("port", k.port);
    m.into()
}

fn real_server(r: &RealServer) -> Value {
    let mut m = Block::default();
    m.put("ip", ip(r.key.addr));
    m.put("port", r.key.port);
    m.put("weight", r.weight);
    if r.thresholds.upper != 0 {
        m.put("uthreshold", r.thresholds.upper);
    }
    if r.thresholds.lower != 0 {
        m.put("lthreshold", r.thresholds.lower);
    }
    m.put_opt("inhibit_on_failure", r.inhibit_on_failure);
    m.put_opt("notify_up", r.notify_up.as_deref());
    m.put_opt("notify_down", r.notify_down.as_deref());
    // One checker of each kind: as keys of the real; otherwise a `checks` list.
    let kinds: std::collections::BTreeSet<&str> = r.checks.iter().map(Checker::key).collect();
    if kinds.len() == r.checks.len() {
        for c in &r.checks {
            let (key, value) = checker(c);
            m.put(key, value);
        }
    } else {
        let items: Vec<Value> = r
            .checks
            .iter()
            .map(|c| {
                let (key, value) = checker(c);
                let mut item = Block::default();
                item.put(key, value);
                item.into()
            })
            .collect();
        m.put("checks", items);
    }
    m.into()
}

/// A checker's key and value.
fn checker(c: &Checker) -> (&'static str, Value) {
    match c {
        Checker::Tcp(c) => {
            let mut t = Block::default();
            t.put_opt("probe", c.probe.map(|p| p.word()));
            endpoint(&mut t, c.connect_ip, c.connect_port, c.bindto, c.bind_port);
            timing(&mut t, &c.timing);
            ("tcp_check", t.into())
        }
        Checker::Http(c) => {
            let mut h = Block::default();
            let urls: Vec<Value> = c
                .urls
                .iter()
                .map(|u| {
                    let mut b = Block::default();
                    b.put("path", u.path.as_str());
                    b.put("status_code", status_codes(&u.status_code));
                    b.put_opt("digest", u.digest.map(|d| hex(&d)));
                    b.put_opt("virtualhost", u.virtualhost.as_deref());
                    b.into()
                })
                .collect();
            h.put_opt("probe", c.probe.map(|p| p.word()));
            h.put("url", urls);
            h.put_opt("virtualhost", c.virtualhost.as_deref());
            h.put_opt("auth", c.auth.as_ref().map(auth));
            if let Some(t) = &c.tls {
                tls(&mut h, t);
            }
            endpoint(&mut h, c.connect_ip, c.connect_port, c.bindto, c.bind_port);
            timing(&mut h, &c.timing);
            (c.key(), h.into())
        }
        Checker::Misc(c) => {
            let mut b = Block::default();
            b.put("misc_path", c.misc_path.as_str());
            b.put("misc_timeout", seconds(c.misc_timeout));
            if c.dynamic {
                b.put("misc_dynamic", true);
            }
            b.put_opt("warmup", c.warmup.map(seconds));
            ("misc_check", b.into())
        }
        Checker::Amqp(c) => ("amqp_check", amqp_check(c)),
        Checker::Udp(c) => {
            let mut u = Block::default();
            if !c.payload.is_empty() {
                u.put("payload", hex(&c.payload));
            }
            u.put_opt(
                "require_reply",
                c.require_reply.as_ref().map(|p| -> Value {
                    if p.is_empty() {
                        true.into()
                    } else {
                        hex(p).into()
                    }
                }),
            );
            endpoint(&mut u, c.connect_ip, c.connect_port, c.bindto, c.bind_port);
            timing(&mut u, &c.timing);
            ("udp_check", u.into())
        }
        Checker::Dns(c) => {
            let mut d = Block::default();
            d.put("type", c.query_type.word());
            d.put("name", c.name.as_str());
            endpoint(&mut d, c.connect_ip, c.connect_port, c.bindto, c.bind_port);
            timing(&mut d, &c.timing);
            ("dns_check", d.into())
        }
        Checker::Ping(c) => {
            let mut p = Block::default();
            endpoint(&mut p, c.connect_ip, None, c.bindto, None);
            timing(&mut p, &c.timing);
            ("ping_check", p.into())
        }
        Checker::Smtp(c) => {
            let mut s = Block::default();
            s.put_opt("helo_name", c.helo_name.as_deref());
            endpoint(&mut s, c.connect_ip, c.connect_port, c.bindto, c.bind_port);
            timing(&mut s, &c.timing);
            ("smtp_check", s.into())
        }
        Checker::File(c) => {
            let mut b = Block::default();
            b.put("path", c.path.display().to_string());
            b.put("weight", i64::from(c.weight));
            b.put("reverse", c.reverse);
            b.put_opt(
                "init_file",
                c.init_file.map(|i| {
                    let mut f = Block::default();
                    f.put("value", i.value);
                    f.put("overwrite", i.overwrite);
                    Value::from(f)
                }),
            );
            ("file_check", b.into())
        }
    }
}

/// A code as a number, a range as `200-299`, several as a list of those.
fn status_codes(codes: &StatusCodes) -> Value {
    let one = |&(lo, hi): &(u16, u16)| {
        if lo == hi {
            Value::from(lo)
        } else {
            Value::from(format!("{lo}-{hi}"))
        }
    };
    match codes.ranges() {
        [single] => one(single),
        several => Value::Sequence(several.iter().map(one).collect()),
    }
}

/// Lowercase hexadecimal.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `auth`: the password file as given; an inline password too, since the saved file is the
/// operator's own (listings and logs never show it).
fn auth(a: &HttpAuth) -> Value {
    let mut b = Block::default();
    b.put("user", a.user.as_str());
    match &a.password {
        Password::Inline(secret) => b.put("password", secret.expose()),
        Password::File(path) => b.put("password_file", path.to_string_lossy().as_ref()),
    }
    b.into()
}

fn amqp_check(c: &AmqpCheck) -> Value {
    let mut b = Block::default();
    b.put_opt("probe", c.probe.map(|p| p.word()));
    endpoint(&mut b, c.connect_ip, c.connect_port, c.bindto, c.bind_port);
    timing(&mut b, &c.timing);
    b.put("login", c.login.is_some());
    if let Some(login) = &c.login {
        b.put("user", login.user.as_str());
        match &login.password {
            AmqpPassword::Text(p) => b.put("password", p.as_str()),
            AmqpPassword::File(p) => b.put("password_file", p.to_string_lossy().as_ref()),
        }
        b.put("vhost", login.vhost.as_str());
        b.put("alarm", login.alarm);
    }
    b.into()
}

fn endpoint(
    b: &mut Block,
    connect_ip: Option<IpAddr>,
    connect_port: Option<u16>,
    bindto: Option<IpAddr>,
    bind_port: Option<u16>,
) {
    b.put_opt("connect_ip", connect_ip.map(ip));
    b.put_opt("connect_port", connect_port);
    b.put_opt("bindto", bindto.map(ip));
    b.put_opt("bind_port", bind_port);
}

fn timing(b: &mut Block, t: &CheckTiming) {
    b.put("connect_timeout", seconds(t.connect_timeout));
    b.put("retry", t.retry);
    b.put("delay_before_retry", seconds(t.delay_before_retry));
    b.put_opt("warmup", t.warmup.map(seconds));
}
