//! Writing the YAML: the model rendered as an `lb-agent` configuration, each key recorded with
//! the keepalived line it comes from; the comment header; and the check that lb-agent reads
//! it back, its refusals becoming warnings on those lines.

use std::{collections::BTreeSet, net::IpAddr, path::Path};

use super::{
    ImportError, Warning,
    importer::Importer,
    parsed::{
        At, Check, CheckKind, DEFAULT_PERSISTENCE_TIMEOUT, File, HTTP_DEFAULT_DELAY_BEFORE_RETRY,
        IPVS_SYNC_GROUP, IPVS_SYNC_PORT, IPVS_SYNC_TTL, Real, SYNC_KEY_FILE, Service, SyncDaemon,
        number,
    },
};
use crate::config::{Config, SyncConfig};

/// The YAML under construction, with the keepalived line of every path written.
#[derive(Default)]
pub(super) struct Yaml {
    pub(super) out: String,
    lines: Vec<(String, usize)>,
}

impl Yaml {
    fn raw(&mut self, indent: usize, text: &str) {
        self.out.push_str(&" ".repeat(indent));
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// The keepalived line a YAML path (from `Config` validation) comes from: the longest
    /// recorded prefix.
    fn line_of(&self, path: &str) -> Option<usize> {
        self.lines
            .iter()
            .filter(|(p, _)| {
                path == p
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
            })
            .max_by_key(|(p, _)| p.len())
            .map(|(_, l)| *l)
    }
}

/// A mapping being written: its indentation, its path, and whether the next key starts a list
/// item (`- key: ...`).
struct Map<'y> {
    y: &'y mut Yaml,
    indent: usize,
    path: String,
    dash: bool,
}

impl Map<'_> {
    fn prefix(&mut self) -> String {
        if self.dash {
            self.dash = false;
            format!("{}- ", " ".repeat(self.indent - 2))
        } else {
            " ".repeat(self.indent)
        }
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// `key: value  # comment`, recording that the key comes from `line`.
    fn kv(&mut self, key: &str, value: &str, line: usize, comment: Option<&str>) {
        let prefix = self.prefix();
        let mut text = format!("{prefix}{key}: {value}");
        if let Some(c) = comment {
            text.push_str("   # ");
            text.push_str(&comment_text(c));
        }
        self.y.out.push_str(&text);
        self.y.out.push('\n');
        let path = self.child_path(key);
        self.y.lines.push((path, line));
    }

    /// `key:` opening a nested mapping.
    fn map(&mut self, key: &str, line: usize) -> Map<'_> {
        let prefix = self.prefix();
        self.y.out.push_str(&format!("{prefix}{key}:\n"));
        let path = self.child_path(key);
        self.y.lines.push((path.clone(), line));
        Map {
            y: self.y,
            indent: self.indent + 2,
            path,
            dash: false,
        }
    }

    /// `key:` opening a list; items are added with [`Map::item`].
    fn list(&mut self, key: &str, line: usize) -> String {
        let prefix = self.prefix();
        self.y.out.push_str(&format!("{prefix}{key}:\n"));
        let path = self.child_path(key);
        self.y.lines.push((path.clone(), line));
        path
    }

    /// Item `i` of the list at `list` (a mapping), from `line`.
    fn item(&mut self, list: &str, i: usize, line: usize) -> Map<'_> {
        let path = format!("{list}[{i}]");
        self.y.lines.push((path.clone(), line));
        Map {
            y: self.y,
            indent: self.indent + 4,
            path,
            dash: true,
        }
    }

    fn comment(&mut self, text: &str) {
        let indent = if self.dash {
            self.indent - 2
        } else {
            self.indent
        };
        self.y.raw(indent, &format!("# {}", comment_text(text)));
    }
}

/// Text from the input made safe for a YAML comment: a control character (a line break, CR,
/// NUL, an escape sequence) would end the comment or reach the terminal, so each is written as
/// `\u{..}`.
pub(super) fn comment_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A string as a YAML scalar: plain when that is unambiguous, double-quoted otherwise.
pub(super) fn yaml_str(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !s.starts_with(['-', '.'])
        && s.parse::<f64>().is_err()
        && !["true", "false", "yes", "no", "on", "off", "null", "y", "n"]
            .iter()
            .any(|w| w.eq_ignore_ascii_case(s));
    if plain { s.to_owned() } else { yaml_quoted(s) }
}

/// A string as a double-quoted YAML scalar (scripts are always quoted, as in
/// `configs/example.yaml`).
pub(super) fn yaml_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn yaml_ip(a: IpAddr) -> String {
    match a {
        IpAddr::V4(_) => a.to_string(),
        IpAddr::V6(_) => format!("\"{a}\""),
    }
}

/// The configuration: keys in the order of `configs/example.yaml`.
pub(super) fn render(y: &mut Yaml, file: &File, interface: &str) {
    let mut root = Map {
        y,
        indent: 0,
        path: String::new(),
        dash: false,
    };
    let first = file.services.first().map_or(1, |s| s.line);
    root.kv("interface", &yaml_str(interface), first, None);
    let owner = if file.vrrp.is_empty() {
        "no vrrp_instance in keepalived.conf: see the header".to_owned()
    } else {
        let names: Vec<&str> = file.vrrp.iter().map(|v| v.name.as_str()).collect();
        format!(
            "keepalived's vrrp_instance {} owns the VIPs",
            names.join(", ")
        )
    };
    root.kv("manage_vip", "false", first, Some(&owner));
    root.y.out.push('\n');
    if let Some(d) = &file.sync {
        sync(&mut root, d);
        root.y.out.push('\n');
    }
    if file.services.is_empty() {
        root.kv("virtual_servers", "[]", first, None);
        return;
    }
    let list = root.list("virtual_servers", first);
    for (i, s) in file.services.iter().enumerate() {
        let mut m = root.item(&list, i, s.line);
        let port = s.port.map(|p| format!(" {p}")).unwrap_or_default();
        m.comment(&format!(
            "keepalived.conf line {}: virtual_server {}{port}",
            s.line, s.vip
        ));
        service(&mut m, s);
    }
}

/// keepalived's IPVS sync daemon as lb-agent's `sync:`: its interface, sync id, group and TTL,
/// lb-agent's own port, and the key file the operator creates.
fn sync(m: &mut Map<'_>, d: &SyncDaemon) {
    let mut s = m.map("sync", d.line);
    s.comment(&format!("keepalived.conf line {}: {}", d.line, d.raw));
    let (id, line) = d.id.unwrap_or((0, d.line));
    s.kv("id", &id.to_string(), line, d.id_note.as_deref());
    s.kv(
        "key_file",
        SYNC_KEY_FILE,
        d.line,
        Some("create it, with the same secret on every director"),
    );
    let port = format!("lb-agent's sync port, not IPVS's {IPVS_SYNC_PORT}");
    s.kv(
        "port",
        &SyncConfig::DEFAULT_PORT.to_string(),
        d.line,
        Some(&port),
    );
    match d.group {
        Some((group, l)) => s.kv("group", &yaml_ip(group), l, None),
        None => s.kv(
            "group",
            &yaml_ip(IpAddr::V4(IPVS_SYNC_GROUP)),
            d.line,
            Some("IPVS's default"),
        ),
    }
    s.kv("interface", &yaml_str(&d.interface), d.line, None);
    match d.ttl {
        Some((ttl, l)) => s.kv("ttl", &ttl.to_string(), l, None),
        None => s.kv(
            "ttl",
            &IPVS_SYNC_TTL.to_string(),
            d.line,
            Some("IPVS's default"),
        ),
    }
}

/// `default`, plus where the file misspells `key` if it does (`line 30 has "protocal"`).
fn default_note(s: &Service, keys: &[&str], default: &str) -> String {
    let typo = s.misspelled.iter().find(|(k, _, _)| keys.contains(k));
    match typo {
        Some((_, line, word)) => format!("{default}; line {line} has \"{word}\""),
        None => default.to_owned(),
    }
}

fn service(m: &mut Map<'_>, s: &Service) {
    if let Some((name, vips)) = &s.group {
        m.kv("group", name, s.line, None);
        let vips: Vec<String> = vips.iter().map(|v| format!("\"{v}\"")).collect();
        m.kv("vips", &format!("[{}]", vips.join(", ")), s.line, None);
    } else {
        m.kv("vip", &yaml_ip(s.vip), s.line, None);
        if let Some(p) = s.port {
            m.kv("port", &p.to_string(), s.line, None);
        } else {
            m.comment("port: not set in keepalived.conf (an all-ports service)");
        }
    }
    match &s.protocol {
        Some((p, l)) => m.kv("protocol", p, *l, None),
        None => {
            let note = default_note(s, &["protocol"], "keepalived's default");
            m.kv("protocol", "tcp", s.line, Some(&note));
        }
    }
    match &s.lb_algo {
        Some((a, l)) => m.kv("lb_algo", a, *l, None),
        None => m.comment(&format!(
            "lb_algo: not set in keepalived.conf ({})",
            default_note(s, &["lb_algo", "lvs_sched"], "keepalived's default is wlc")
        )),
    }
    if let Some((_, line)) = s.lb_flags.first() {
        let names: Vec<&str> = s.lb_flags.iter().map(|(f, _)| f.as_str()).collect();
        m.kv("lb_flags", &format!("[{}]", names.join(", ")), *line, None);
    }
    match &s.lb_kind {
        Some((k, l)) => m.kv("lb_kind", &k.to_ascii_lowercase(), *l, None),
        None => m.comment(&format!(
            "lb_kind: not set in keepalived.conf ({})",
            default_note(s, &["lb_kind", "lvs_method"], "keepalived's default is NAT")
        )),
    }
    match (s.persistence_timeout, &s.persistence_granularity) {
        (Some((t, l)), _) => m.kv("persistence_timeout", &t.to_string(), l, None),
        (None, Some((_, l))) => m.kv(
            "persistence_timeout",
            &DEFAULT_PERSISTENCE_TIMEOUT.to_string(),
            *l,
            Some("keepalived's default, implied by persistence_granularity"),
        ),
        (None, None) => {}
    }
    if let Some((g, l)) = &s.persistence_granularity {
        // A netmask for IPv4; for IPv6 a prefix length, which the YAML takes as a number.
        let value = if s.vip.is_ipv4() {
            yaml_str(g)
        } else {
            g.clone()
        };
        m.kv("persistence_granularity", &value, *l, None);
    }
    if let Some((d, l)) = s.delay_loop {
        m.kv("delay_loop", &number(d), l, None);
    }
    if let Some((w, l)) = s.warmup {
        m.kv("warmup", &number(w), l, None);
    }
    for (key, v) in [
        ("alpha", s.alpha),
        ("omega", s.omega),
        ("inhibit_on_failure", s.inhibit_on_failure),
    ] {
        if let Some((b, l)) = v {
            m.kv(key, &b.to_string(), l, None);
        }
    }
    if let Some((q, l)) = s.quorum {
        m.kv("quorum", &q.to_string(), l, None);
    }
    if let Some((h, l)) = s.hysteresis {
        m.kv("hysteresis", &h.to_string(), l, None);
    }
    if let Some((c, l)) = &s.quorum_up {
        m.kv("quorum_up", &yaml_quoted(c), *l, None);
    }
    if let Some((c, l)) = &s.quorum_down {
        m.kv("quorum_down", &yaml_quoted(c), *l, None);
    }
    if let Some((ip, port, l)) = s.sorry_server {
        let mut sorry = m.map("sorry_server", l);
        sorry.kv("ip", &yaml_ip(ip), l, None);
        if let Some(p) = port {
            sorry.kv("port", &p.to_string(), l, None);
        }
    }
    if s.reals.is_empty() {
        m.kv("real_servers", "[]", s.line, None);
        return;
    }
    let list = m.list("real_servers", s.line);
    for (i, r) in s.reals.iter().enumerate() {
        let mut rm = m.item(&list, i, r.line);
        let port = r.port.map(|p| format!(" {p}")).unwrap_or_default();
        rm.comment(&format!("line {}: real_server {}{port}", r.line, r.ip));
        real(&mut rm, s, r);
    }
}

fn real(m: &mut Map<'_>, s: &Service, r: &Real) {
    m.kv("ip", &yaml_ip(r.ip), r.line, None);
    // Port 0 is the service's port (a group member's own). In a group, a port of one of its
    // entries is dropped too: direct routing keeps the client's port, so keepalived's real on
    // port 443 of a group with 80 and 443 gets port 80's packets on port 80.
    let group_port = |p: u16| {
        s.group.as_ref().is_some_and(|(_, vips)| {
            vips.iter()
                .any(|v| v.rsplit_once(':').is_some_and(|(_, q)| q == p.to_string()))
        })
    };
    if let Some(p) = r.port.filter(|p| *p != 0 && !group_port(*p)) {
        m.kv("port", &p.to_string(), r.line, None);
    }
    if let Some((w, l)) = r.weight {
        m.kv("weight", &w.to_string(), l, None);
    }
    if let Some((u, l)) = r.uthreshold {
        m.kv("uthreshold", &u.to_string(), l, None);
    }
    if let Some((u, l)) = r.lthreshold {
        m.kv("lthreshold", &u.to_string(), l, None);
    }
    if let Some((b, l)) = r.inhibit_on_failure {
        m.kv("inhibit_on_failure", &b.to_string(), l, None);
    }
    if let Some((c, l)) = &r.notify_up {
        m.kv("notify_up", &yaml_quoted(c), *l, None);
    }
    if let Some((c, l)) = &r.notify_down {
        m.kv("notify_down", &yaml_quoted(c), *l, None);
    }
    // keepalived runs every checker of a real: one of each kind becomes a key of the real,
    // otherwise they go in its `checks` list, in file order.
    let kinds: BTreeSet<&str> = r.checks.iter().map(|c| c.keyword).collect();
    if kinds.len() == r.checks.len() {
        for ck in &r.checks {
            check(m, s, r, ck);
        }
    } else if let Some(first) = r.checks.first() {
        let list = m.list("checks", first.line);
        for (i, ck) in r.checks.iter().enumerate() {
            let mut item = m.item(&list, i, ck.line);
            check(&mut item, s, r, ck);
        }
    }
}

/// One checker of `r`, as a key of `m`.
fn check(m: &mut Map<'_>, s: &Service, r: &Real, ck: &Check) {
    match ck.kind {
        CheckKind::File => {
            let Some(f) = &ck.file else { return };
            let mut c = m.map("file_check", ck.line);
            c.kv("path", &yaml_quoted(&f.path.0), f.path.1, None);
            let (w, reverse, l) = f.weight;
            c.kv("weight", &w.to_string(), l, None);
            if reverse {
                c.kv("reverse", "true", l, None);
            }
            if let Some(((value, overwrite), l)) = f.init_file {
                let mut i = c.map("init_file", l);
                i.kv("value", &value.to_string(), l, None);
                if overwrite {
                    i.kv("overwrite", "true", l, None);
                }
            }
        }
        CheckKind::Misc => {
            let mut c = m.map("misc_check", ck.line);
            if let Some((p, l)) = &ck.misc_path {
                c.kv("misc_path", &yaml_quoted(p), *l, None);
            }
            if let Some((t, l)) = ck.misc_timeout {
                c.kv("misc_timeout", &t.to_string(), l, None);
            }
            if let Some((d, l)) = ck.misc_dynamic {
                c.kv("misc_dynamic", &d.to_string(), l, None);
            }
            if let Some((w, l)) = ck.timing.warmup.or(r.timing.warmup) {
                c.kv("warmup", &number(w), l, None);
            }
        }
        CheckKind::Tcp
        | CheckKind::Http
        | CheckKind::Udp
        | CheckKind::Dns
        | CheckKind::Ping
        | CheckKind::Smtp => {
            let key = match ck.kind {
                CheckKind::Smtp => "smtp_check",
                CheckKind::Ping => "ping_check",
                CheckKind::Http if ck.keyword == "SSL_GET" => "ssl_get",
                CheckKind::Http => "http_get",
                CheckKind::Udp => "udp_check",
                CheckKind::Dns => "dns_check",
                _ => "tcp_check",
            };
            let mut c = m.map(key, ck.line);
            if ck.kind == CheckKind::Http {
                let list = c.list("url", ck.line);
                for (i, u) in ck.urls.iter().enumerate() {
                    let mut um = c.item(&list, i, u.line);
                    if let Some((p, l)) = &u.path {
                        um.kv("path", &yaml_str(p), *l, None);
                    }
                    if let Some((codes, l)) = &u.status_code {
                        um.kv("status_code", &status_codes(codes), *l, None);
                    }
                    if let Some((d, l)) = &u.digest {
                        um.kv("digest", &yaml_str(d), *l, None);
                    }
                    if let Some((h, l)) = &u.virtualhost {
                        um.kv("virtualhost", &yaml_str(h), *l, None);
                    }
                }
                let host = inherit(
                    ck.virtualhost.clone(),
                    r.virtualhost.clone(),
                    s.virtualhost.clone(),
                );
                if let Some((h, l, from)) = host {
                    c.kv("virtualhost", &yaml_str(&h), l, from);
                }
                if let Some((b, l)) = ck.enable_sni {
                    c.kv("enable_sni", &b.to_string(), l, None);
                }
                if let Some((n, l)) = &ck.sni_name {
                    c.kv("sni_name", &yaml_str(n), *l, None);
                }
                if let Some(cert) = &ck.client_cert {
                    let from = Some("keepalived's global SSL block");
                    let mut t = c.map("tls", cert.certificate.1);
                    let (path, l) = &cert.certificate;
                    t.kv("certificate_file", &yaml_str(path), *l, from);
                    let (path, l) = &cert.key;
                    t.kv("key_file", &yaml_str(path), *l, from);
                }
            }
            if let Some((h, l)) = &ck.helo_name {
                c.kv("helo_name", &yaml_quoted(h), *l, None);
            }
            if let Some((t, l)) = ck.dns_type {
                c.kv("type", t, l, None);
            }
            if let Some((n, l)) = &ck.dns_name {
                c.kv("name", &yaml_quoted(n), *l, None);
            }
            if let Some((p, l)) = &ck.payload {
                c.kv("payload", &yaml_quoted(p), *l, None);
            }
            match &ck.require_reply {
                Some((Some(p), l)) => c.kv("require_reply", &yaml_quoted(p), *l, None),
                Some((None, l)) => c.kv("require_reply", "true", *l, None),
                None => {}
            }
            if let Some((a, l)) = ck.connect_ip {
                c.kv("connect_ip", &yaml_ip(a), l, None);
            }
            if let Some((p, l)) = ck.connect_port {
                c.kv("connect_port", &p.to_string(), l, None);
            }
            if let Some((a, l)) = ck.bindto {
                c.kv("bindto", &yaml_ip(a), l, None);
            }
            if let Some((p, l)) = ck.bind_port {
                c.kv("bind_port", &p.to_string(), l, None);
            }
            let (own, real, vs) = (&ck.timing, &r.timing, &s.timing);
            let timeout = inherit(
                own.connect_timeout,
                real.connect_timeout,
                vs.connect_timeout,
            );
            if let Some((t, l, from)) = timeout {
                c.kv("connect_timeout", &number(t), l, from);
            }
            if let Some((n, l, from)) = inherit(own.retry, real.retry, vs.retry) {
                c.kv("retry", &n.to_string(), l, from);
            }
            let delay = inherit(
                own.delay_before_retry,
                real.delay_before_retry,
                vs.delay_before_retry,
            );
            match delay {
                Some((d, l, from)) => c.kv("delay_before_retry", &number(d), l, from),
                None if ck.kind == CheckKind::Http => c.kv(
                    "delay_before_retry",
                    &number(HTTP_DEFAULT_DELAY_BEFORE_RETRY),
                    ck.line,
                    Some("keepalived's default for HTTP_GET and SSL_GET"),
                ),
                None => {}
            }
            if let Some((w, l)) = ck.timing.warmup.or(r.timing.warmup) {
                c.kv("warmup", &number(w), l, None);
            }
        }
    }
}

/// `status_code`: `200`, `200-299`, or a list of those (`[200-299, 404]`).
fn status_codes(codes: &[(u16, u16)]) -> String {
    let words: Vec<String> = codes
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect();
    match &words[..] {
        [one] => one.clone(),
        _ => format!("[{}]", words.join(", ")),
    }
}

/// A checker setting as keepalived resolves it: the checker's own, else its real server's, else
/// its virtual server's; with a comment saying where an inherited value comes from.
fn inherit<T>(own: At<T>, real: At<T>, vs: At<T>) -> Option<(T, usize, Option<&'static str>)> {
    let from = |v: At<T>, what| v.map(|(v, l)| (v, l, what));
    from(own, None)
        .or_else(|| from(real, Some("from the real_server")))
        .or_else(|| from(vs, Some("from the virtual_server")))
}

/// The comment header: where the file comes from, and every warning.
/// Checks that the header, which carries text from the input (the file name, warnings), reads
/// as YAML comments only, so that the file means what the validated body means.
pub(super) fn header_is_only_comments(header: &str) -> Result<(), ImportError> {
    match serde_yaml::from_str::<serde_yaml::Value>(header) {
        Ok(serde_yaml::Value::Null) => Ok(()),
        Ok(_) => Err(ImportError::Unreadable {
            reason: "the header holds more than comments".to_owned(),
        }),
        Err(e) => Err(ImportError::Unreadable {
            reason: e.to_string(),
        }),
    }
}

pub(super) fn header(source: &str, file: &File, warnings: &[Warning]) -> String {
    let mut h = String::new();
    h.push_str(&format!(
        "# lb-agent configuration generated from {} by `lbadm import-keepalived`.\n",
        comment_text(source)
    ));
    h.push_str("#\n");
    if file.sync.is_some() {
        h.push_str(
            "# Only keepalived's virtual_server blocks and its lvs_sync_daemon (as sync:) are \
             converted;\n# each service and real server below names its line in \
             keepalived.conf. Check this file with\n#   lb-agent --check-config FILE\n",
        );
    } else {
        h.push_str(
            "# Only keepalived's virtual_server blocks are converted; each service and real \
             server below\n# names its line in keepalived.conf. Check this file with\n#   \
             lb-agent --check-config FILE\n",
        );
    }
    if file.vrrp.is_empty() {
        h.push_str(
            "# keepalived.conf has no vrrp_instance: something must still hold the VIPs on this\n\
             # director (keepalived's VRRP, or manage_vip: true to have lb-agent add them).\n",
        );
    } else {
        h.push_str(
            "# keepalived keeps running for VRRP and owns the VIPs (manage_vip: false). Once \
             lb-agent\n# serves these services, remove the virtual_server blocks from \
             keepalived.conf.\n",
        );
    }
    h.push_str("#\n");
    if warnings.is_empty() {
        h.push_str("# No warnings.\n");
    } else {
        h.push_str(&format!("# Warnings ({}):\n", warnings.len()));
        for w in warnings {
            h.push_str(&format!("#   {w}\n"));
        }
    }
    h.push('\n');
    h
}

impl Importer {
    /// Validates the YAML as `lb-agent --check-config` does; what it refuses becomes warnings
    /// on the keepalived lines it comes from.
    pub(super) fn validate(&mut self, y: &Yaml, source: &str) -> Result<(), ImportError> {
        let Err(e) = Config::from_yaml(&y.out, Path::new(source)) else {
            return Ok(());
        };
        for fe in e.errors {
            if fe.path == "interface" {
                return Err(ImportError::BadInterface {
                    message: fe.message,
                });
            }
            let line = y.line_of(&fe.path).unwrap_or(1);
            let what = if fe.path.is_empty() {
                fe.message
            } else {
                format!("{}: {}", fe.path, fe.message)
            };
            self.warn(line, format!("lb-agent will refuse the YAML: {what}"));
        }
        Ok(())
    }
}
