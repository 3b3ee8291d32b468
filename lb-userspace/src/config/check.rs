//! Health checkers of a real server: `tcp_check`, `http_get`, `ssl_get`, `misc_check`,
//! `udp_check`, `dns_check`, `ping_check`, `smtp_check`, `amqp_check`, `file_check`. A real
//! takes several: one of each kind as keys of the real, and any number as items of its
//! `checks` list.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_yaml::Value;

use super::{
    AmqpCheck, AmqpLogin, AmqpPassword, CheckTiming, Checker, DnsCheck, DnsType, FileCheck,
    FileInit, HttpAuth, HttpCheck, MAX_UDP_PAYLOAD, MiscCheck, Password, PingCheck, Secret,
    SmtpCheck, StatusCodes, StreamProbe, TcpCheck, TcpProbe, TlsCheck, TlsClientFiles, UdpCheck,
    UrlCheck,
    address::{ipv4_mapped, not_a_host},
    parse::Service,
    reader::{Fields, Node, Reader, describe, or_list},
};

/// The checker keys, of a real server and of an item of its `checks` list.
const CHECKERS: &[&str] = &[
    "tcp_check",
    "http_get",
    "ssl_get",
    "misc_check",
    "udp_check",
    "dns_check",
    "ping_check",
    "smtp_check",
    "amqp_check",
    "file_check",
];
/// Keys of `file_check`.
const FILE_KEYS: &[&str] = &["path", "weight", "reverse", "init_file"];
/// Keys of `file_check.init_file`.
const FILE_INIT_KEYS: &[&str] = &["value", "overwrite"];
/// Bound of a `file_check`'s `weight` (keepalived's: a 32-bit weight without its fault value).
const MAX_FILE_WEIGHT: i32 = i32::MAX;
/// Keys of `tcp_check` (aliases included).
const TCP_KEYS: &[&str] = &[
    "probe",
    "connect_ip",
    "connect_port",
    "bindto",
    "bind_port",
    "connect_timeout",
    "retry",
    "nb_get_retry",
    "delay_before_retry",
    "warmup",
];
/// Keys of `http_get` and `ssl_get` (aliases included); [`TLS_CHECK_KEYS`] are `ssl_get`'s
/// only.
const HTTP_KEYS: &[&str] = &[
    "probe",
    "url",
    "virtualhost",
    "auth",
    "connect_ip",
    "connect_port",
    "bindto",
    "bind_port",
    "connect_timeout",
    "retry",
    "nb_get_retry",
    "delay_before_retry",
    "warmup",
    "enable_sni",
    "sni_name",
    "tls",
];
/// The keys of [`HTTP_KEYS`] that only `ssl_get` takes.
const TLS_CHECK_KEYS: &[&str] = &["enable_sni", "sni_name", "tls"];
/// Keys of `ssl_get.tls`.
const TLS_KEYS: &[&str] = &["verify", "ca_file", "certificate_file", "key_file"];
/// Keys of one `url`.
const URL_KEYS: &[&str] = &["path", "status_code", "digest", "virtualhost"];
/// Keys of `auth`.
const AUTH_KEYS: &[&str] = &["user", "password", "password_file"];
/// Keys of `udp_check` (aliases included).
const UDP_KEYS: &[&str] = &[
    "payload",
    "require_reply",
    "connect_ip",
    "connect_port",
    "bindto",
    "bind_port",
    "connect_timeout",
    "retry",
    "nb_get_retry",
    "delay_before_retry",
    "warmup",
];
/// Keys of `dns_check` (aliases included).
const DNS_KEYS: &[&str] = &[
    "type",
    "name",
    "connect_ip",
    "connect_port",
    "bindto",
    "bind_port",
    "connect_timeout",
    "retry",
    "nb_get_retry",
    "delay_before_retry",
    "warmup",
];
/// Keys of `ping_check` (aliases included): no ports.
const PING_KEYS: &[&str] = &[
    "connect_ip",
    "bindto",
    "connect_timeout",
    "retry",
    "nb_get_retry",
    "delay_before_retry",
    "warmup",
];
/// Keys of `smtp_check` (aliases included).
const SMTP_KEYS: &[&str] = &[
    "helo_name",
    "connect_ip",
    "connect_port",
    "bindto",
    "bind_port",
    "connect_timeout",
    "retry",
    "nb_get_retry",
    "delay_before_retry",
    "warmup",
];
/// Keys of `misc_check`.
const MISC_KEYS: &[&str] = &["misc_path", "misc_timeout", "misc_dynamic", "warmup"];
/// Keys of `amqp_check` (aliases included).
const AMQP_KEYS: &[&str] = &[
    "probe",
    "connect_ip",
    "connect_port",
    "bindto",
    "bind_port",
    "connect_timeout",
    "retry",
    "nb_get_retry",
    "delay_before_retry",
    "warmup",
    "login",
    "user",
    "password",
    "password_file",
    "vhost",
    "alarm",
];
/// The keys of `amqp_check` that only mean something with `login: true`.
const AMQP_LOGIN_KEYS: &[&str] = &["user", "password", "password_file", "vhost"];

/// Longest `warmup`, in seconds.
const MAX_WARMUP: u64 = 86_400;
/// Bounds of `connect_timeout` and `delay_before_retry`.
const MAX_CHECK_WAIT: Duration = Duration::from_secs(3600);
/// Largest `retry`.
const MAX_RETRY: u32 = 100;

/// The checkers of a real at `addr` in `svc`: its checker keys in document order, then the
/// items of its `checks` list (each a mapping with exactly one checker key). A checker with
/// errors is left out after they are reported.
pub(super) fn checkers(
    rd: &mut Reader,
    f: &Fields<'_>,
    addr: Option<IpAddr>,
    svc: &Service,
) -> Vec<Checker> {
    let mut out: Vec<Checker> = f
        .present(CHECKERS)
        .into_iter()
        .filter_map(|(key, node)| one_checker(rd, key, &node, addr, svc))
        .collect();
    let Some(list) = f.get("checks") else {
        return out;
    };
    for item in rd.list(&list) {
        let Some(g) = rd.fields(&item, CHECKERS) else {
            continue;
        };
        match g.present(CHECKERS).as_slice() {
            [(key, node)] => out.extend(one_checker(rd, key, node, addr, svc)),
            [] => {
                let msg = format!("an item of `checks` is one checker: {}", or_list(CHECKERS));
                rd.error(&item.path, msg);
            }
            [(first, _), (key, node), ..] => {
                let msg = format!(
                    "an item of `checks` is one checker, and this one is already a `{first}`; \
                     put `{key}` in an item of its own"
                );
                rd.error(&node.path, msg);
            }
        }
    }
    out
}

/// One checker, `key` naming its kind.
fn one_checker(
    rd: &mut Reader,
    key: &str,
    node: &Node<'_>,
    addr: Option<IpAddr>,
    svc: &Service,
) -> Option<Checker> {
    match key {
        "tcp_check" => tcp_check(rd, node, addr),
        "http_get" => http_get(rd, node, addr, false),
        "ssl_get" => http_get(rd, node, addr, true),
        "amqp_check" => amqp_check(rd, node, addr),
        "udp_check" => udp_check(rd, node, addr),
        "dns_check" => dns_check(rd, node, addr),
        "ping_check" => ping_check(rd, node, addr),
        "smtp_check" => smtp_check(rd, node, addr),
        "file_check" => file_check(rd, node),
        _ => misc_check(rd, node, svc),
    }
}

/// `file_check`.
fn file_check(rd: &mut Reader, node: &Node<'_>) -> Option<Checker> {
    let f = rd.fields(node, FILE_KEYS)?;
    let path = f.required(rd, "path").and_then(|n| absolute_path(rd, &n));
    // Each optional key: `None` = given but wrong (reported), `Some(None)` = absent.
    let weight = optional(f.get("weight"), |n| {
        let bound = i128::from(MAX_FILE_WEIGHT);
        let w = rd.integer(n)?;
        let w = i32::try_from(w)
            .ok()
            .filter(|w| w.unsigned_abs() <= MAX_FILE_WEIGHT as u32);
        if w.is_none() {
            rd.error(&n.path, format!("out of range: -{bound} to {bound}"));
        }
        w
    });
    let reverse = f.flag(rd, "reverse");
    let init_file = optional(f.get("init_file"), |n| file_init(rd, n));
    Some(Checker::File(FileCheck {
        path: path?,
        weight: weight?.unwrap_or(1),
        reverse: reverse.unwrap_or(false),
        init_file: init_file?,
    }))
}

/// Reads an optional value: `Some(None)` when absent, `None` when given but unusable.
fn optional<'a, T>(
    node: Option<Node<'a>>,
    read: impl FnOnce(&Node<'a>) -> Option<T>,
) -> Option<Option<T>> {
    match node {
        None => Some(None),
        Some(n) => read(&n).map(Some),
    }
}

/// `file_check.init_file`.
fn file_init(rd: &mut Reader, node: &Node<'_>) -> Option<FileInit> {
    let f = rd.fields(node, FILE_INIT_KEYS)?;
    let value = optional(f.get("value"), |n| {
        let v = rd.integer(n)?;
        let v = i32::try_from(v).ok().map(i64::from);
        if v.is_none() {
            let msg = format!("out of range: {} to {}", i32::MIN, i32::MAX);
            rd.error(&n.path, msg);
        }
        v
    });
    let overwrite = f.flag(rd, "overwrite");
    Some(FileInit {
        value: value?.unwrap_or(0),
        overwrite: overwrite.unwrap_or(false),
    })
}

/// `tcp_check`.
fn tcp_check(rd: &mut Reader, node: &Node<'_>, addr: Option<IpAddr>) -> Option<Checker> {
    let f = rd.fields(node, TCP_KEYS)?;
    let ep = endpoint(rd, &f, addr);
    let probe = f.get("probe").and_then(|n| {
        let probe = rd.keyword(&n, "tcp_check probe", &TcpProbe::WORDS)?;
        if probe != TcpProbe::Connect {
            own_packets(rd, &n, probe.word(), addr, &ep);
        }
        Some(probe)
    });
    Some(Checker::Tcp(TcpCheck {
        connect_ip: ep.connect_ip,
        connect_port: ep.connect_port,
        bindto: ep.bindto,
        bind_port: ep.bind_port,
        probe,
        timing: timing(rd, &f),
    }))
}

/// A probe that writes its own packets (`word`) goes from the director's own address to an
/// IPv4 real's MAC: an error on `n` if the real or the endpoint says otherwise.
fn own_packets(rd: &mut Reader, n: &Node<'_>, word: &str, addr: Option<IpAddr>, ep: &Endpoint) {
    let why = if addr.is_some_and(|a| a.is_ipv6()) {
        Some("the real is IPv6".to_string())
    } else {
        [
            ("connect_ip", ep.connect_ip.is_some()),
            ("bindto", ep.bindto.is_some()),
            ("bind_port", ep.bind_port.is_some()),
        ]
        .into_iter()
        .find(|(_, set)| *set)
        .map(|(key, _)| format!("`{key}` is set"))
    };
    if let Some(why) = why {
        let msg = format!(
            "a probe that writes its own packets (`{word}`) goes from the director's own \
             address to an IPv4 real's MAC, and {why}; use `probe: connect`"
        );
        rd.error(&n.path, msg);
    }
}

/// The `probe` of a checker that talks over a connection (`checker` names it).
fn stream_probe(
    rd: &mut Reader,
    f: &Fields<'_>,
    checker: &str,
    addr: Option<IpAddr>,
    ep: &Endpoint,
) -> Option<StreamProbe> {
    let n = f.get("probe")?;
    let probe = rd.keyword(&n, &format!("{checker} probe"), &StreamProbe::WORDS)?;
    if probe == StreamProbe::Vip {
        own_packets(rd, &n, probe.word(), addr, ep);
    }
    Some(probe)
}

/// `http_get`, or `ssl_get` with `tls`.
fn http_get(rd: &mut Reader, node: &Node<'_>, addr: Option<IpAddr>, tls: bool) -> Option<Checker> {
    let f = rd.fields(node, HTTP_KEYS)?;
    let ep = endpoint(rd, &f, addr);
    let probe = stream_probe(rd, &f, if tls { "ssl_get" } else { "http_get" }, addr, &ep);
    let tls = if tls {
        Some(tls_check(rd, &f))
    } else {
        for (key, node) in f.present(TLS_CHECK_KEYS) {
            let msg = format!("`{key}` is a TLS setting: use `ssl_get` (HTTPS) for it");
            rd.error(&node.path, msg);
        }
        None
    };
    Some(Checker::Http(HttpCheck {
        urls: urls(rd, &f),
        virtualhost: f.get("virtualhost").and_then(|n| virtualhost(rd, &n)),
        // `auth:` alone is the block without its required keys, not no authentication.
        auth: f.raw("auth").and_then(|n| auth(rd, &n)),
        probe,
        tls,
        connect_ip: ep.connect_ip,
        connect_port: ep.connect_port,
        bindto: ep.bindto,
        bind_port: ep.bind_port,
        timing: timing(rd, &f),
    }))
}

/// The TLS of an `ssl_get`: `enable_sni`, `sni_name` and the `tls` block (`verify`,
/// `ca_file`, `certificate_file` with `key_file`). Each mistake names its field.
fn tls_check(rd: &mut Reader, f: &Fields<'_>) -> TlsCheck {
    let enable_sni = f.flag(rd, "enable_sni");
    let sni_name = f.get("sni_name").and_then(|n| {
        let name = sni_name(rd, &n)?;
        if enable_sni == Some(false) {
            let msg = "`sni_name` is the name SNI sends: it needs `enable_sni: true` (or no \
                       `enable_sni`, which it turns on, as in keepalived)";
            rd.error(&n.path, msg);
        }
        Some(name)
    });
    let mut check = TlsCheck {
        enable_sni: enable_sni.unwrap_or(false) || sni_name.is_some(),
        sni_name,
        ..TlsCheck::default()
    };
    // `tls:` alone is the block with its defaults.
    let Some(t) = f.get("tls").and_then(|n| rd.fields(&n, TLS_KEYS)) else {
        return check;
    };
    check.verify = t.flag(rd, "verify").unwrap_or(false);
    let file = |rd: &mut Reader, key| t.get(key).and_then(|n| tls_file(rd, &n));
    check.ca_file = file(rd, "ca_file");
    match (check.verify, &check.ca_file) {
        (true, None) => {
            let msg = "`verify: true` needs `ca_file`, the PEM certificates of the authorities \
                       that signed the reals' certificates";
            rd.error(&t.path_of("ca_file"), msg);
        }
        (false, Some(_)) => {
            let msg = "`ca_file` is only used with `verify: true` (without it any certificate \
                       is accepted, as keepalived's SSL_GET does): add `verify: true` or remove \
                       `ca_file`";
            rd.error(&t.path_of("ca_file"), msg);
        }
        _ => {}
    }
    let certificate = file(rd, "certificate_file");
    let key = file(rd, "key_file");
    let (has_cert, has_key) = (t.raw("certificate_file"), t.raw("key_file"));
    match (&has_cert, &has_key) {
        (Some(_), None) => rd.error(
            &t.path_of("key_file"),
            "`certificate_file` needs `key_file`, the client certificate's private key",
        ),
        (None, Some(_)) => rd.error(
            &t.path_of("certificate_file"),
            "`key_file` needs `certificate_file`, the client certificate it is the key of",
        ),
        _ => {}
    }
    if let (Some(certificate_file), Some(key_file)) = (certificate, key) {
        check.client = Some(TlsClientFiles {
            certificate_file,
            key_file,
        });
    }
    check
}

/// `sni_name`: a DNS name (not an address, no port), as the TLS server_name extension carries.
fn sni_name(rd: &mut Reader, node: &Node<'_>) -> Option<String> {
    let name = rd.text(node)?;
    let problem = if name.parse::<IpAddr>().is_ok() {
        "is an address: SNI carries a host name only (an address is never sent)"
    } else if rustls::pki_types::DnsName::try_from(name.as_str()).is_err() {
        "is not a host name (like www.example.org: letters, digits, `-` and dots; no port)"
    } else {
        return Some(name);
    };
    rd.error(&node.path, format!("`{name}` {problem}"));
    None
}

/// A PEM file of `ssl_get.tls`: an absolute path of a file (the agent reads it, not
/// validation).
fn tls_file(rd: &mut Reader, node: &Node<'_>) -> Option<PathBuf> {
    let path = rd.text(node)?;
    let problem = if !path.starts_with('/') {
        "must be an absolute path (starting with `/`): the agent reads the file when it starts \
         and at each reload, whatever its working directory"
    } else if path.ends_with('/') {
        "must name a file, not a directory"
    } else {
        return Some(PathBuf::from(path));
    };
    rd.error(&node.path, format!("`{path}` {problem}"));
    None
}

/// `udp_check`.
fn udp_check(rd: &mut Reader, node: &Node<'_>, addr: Option<IpAddr>) -> Option<Checker> {
    let f = rd.fields(node, UDP_KEYS)?;
    let ep = endpoint(rd, &f, addr);
    let payload = f.get("payload").and_then(|n| hex_bytes(rd, &n));
    let require_reply = f.get("require_reply").and_then(|n| match n.value {
        Value::Bool(true) => Some(Some(Vec::new())),
        Value::Bool(false) => Some(None),
        _ => hex_bytes(rd, &n).map(Some),
    });
    Some(Checker::Udp(UdpCheck {
        connect_ip: ep.connect_ip,
        connect_port: ep.connect_port,
        bindto: ep.bindto,
        bind_port: ep.bind_port,
        payload: payload.unwrap_or_default(),
        require_reply: require_reply.flatten(),
        timing: timing(rd, &f),
    }))
}

/// `smtp_check`.
fn smtp_check(rd: &mut Reader, node: &Node<'_>, addr: Option<IpAddr>) -> Option<Checker> {
    let f = rd.fields(node, SMTP_KEYS)?;
    let ep = endpoint(rd, &f, addr);
    Some(Checker::Smtp(SmtpCheck {
        connect_ip: ep.connect_ip,
        connect_port: ep.connect_port,
        bindto: ep.bindto,
        bind_port: ep.bind_port,
        helo_name: f.get("helo_name").and_then(|n| helo_name(rd, &n)),
        timing: timing(rd, &f),
    }))
}

/// `smtp_check.helo_name`: one word of at most 255 characters, no control characters.
fn helo_name(rd: &mut Reader, node: &Node<'_>) -> Option<String> {
    let name = rd.text(node)?;
    let problem = if name.is_empty() {
        "must not be empty".to_owned()
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "must be one word, without white space or control characters".to_owned()
    } else if name.len() > 255 {
        format!("is {} bytes long: at most 255", name.len())
    } else {
        return Some(name);
    };
    rd.error(&node.path, format!("`{name}` {problem}"));
    None
}

/// `ping_check`.
fn ping_check(rd: &mut Reader, node: &Node<'_>, addr: Option<IpAddr>) -> Option<Checker> {
    let f = rd.fields(node, PING_KEYS)?;
    let ep = endpoint(rd, &f, addr);
    Some(Checker::Ping(PingCheck {
        connect_ip: ep.connect_ip,
        bindto: ep.bindto,
        timing: timing(rd, &f),
    }))
}

/// `dns_check`.
fn dns_check(rd: &mut Reader, node: &Node<'_>, addr: Option<IpAddr>) -> Option<Checker> {
    let f = rd.fields(node, DNS_KEYS)?;
    let ep = endpoint(rd, &f, addr);
    let query_type = f
        .get("type")
        .and_then(|n| rd.keyword(&n, "dns_check type", &DnsType::WORDS));
    let name = f.get("name").and_then(|n| dns_name(rd, &n));
    Some(Checker::Dns(DnsCheck {
        connect_ip: ep.connect_ip,
        connect_port: ep.connect_port,
        bindto: ep.bindto,
        bind_port: ep.bind_port,
        query_type: query_type.unwrap_or_default(),
        name: name.unwrap_or_else(|| ".".to_owned()),
        timing: timing(rd, &f),
    }))
}

/// `dns_check.name`: a domain name a query can carry (RFC 1035 2.3.4): labels of 1 to 63
/// bytes, at most 253 characters without the final dot, no white space or control
/// characters; `.` is the root.
fn dns_name(rd: &mut Reader, node: &Node<'_>) -> Option<String> {
    let name = rd.text(node)?;
    let bare = name.strip_suffix('.').unwrap_or(&name);
    let problem = if name.is_empty() {
        "must not be empty (the root is `.`)".to_owned()
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "must not contain white space or control characters".to_owned()
    } else if !name.is_ascii() {
        "must be ASCII (write an internationalized name in its xn-- form)".to_owned()
    } else if bare.len() > 253 {
        format!("is {} characters long: at most 253", bare.len())
    } else if !bare.is_empty() && bare.split('.').any(|l| l.is_empty() || l.len() > 63) {
        "has an empty label or one over 63 characters (labels are 1 to 63 characters between \
         dots)"
            .to_owned()
    } else {
        return Some(name);
    };
    rd.error(&node.path, format!("`{name}` {problem}"));
    None
}

/// Bytes as keepalived writes them: hexadecimal digits, two per byte (either case), at most
/// [`MAX_UDP_PAYLOAD`] bytes.
fn hex_bytes(rd: &mut Reader, node: &Node<'_>) -> Option<Vec<u8>> {
    const WANT: &str = "expected hexadecimal digits, two per byte, in quotes (like \"0a1b\")";
    let hex = match node.value {
        Value::String(s) => s.trim(),
        Value::Number(_) => {
            let msg = format!("{WANT}: a number loses its leading zeros");
            rd.error(&node.path, msg);
            return None;
        }
        other => {
            rd.error(&node.path, format!("{WANT}, found {}", describe(other)));
            return None;
        }
    };
    let problem = if let Some(c) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
        format!("`{hex}` holds `{c}`, which is not a hexadecimal digit: {WANT}")
    } else if hex.len() % 2 == 1 {
        format!("`{hex}` has an odd number of digits: {WANT}")
    } else if hex.len() / 2 > MAX_UDP_PAYLOAD {
        format!(
            "{} bytes: at most {MAX_UDP_PAYLOAD} (one datagram)",
            hex.len() / 2
        )
    } else {
        let bytes = (0..hex.len() / 2)
            // ASCII hexadecimal digits: every pair parses.
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or_default())
            .collect();
        return Some(bytes);
    };
    rd.error(&node.path, problem);
    None
}

/// `misc_check`; `misc_timeout` defaults to the service's `delay_loop`.
fn misc_check(rd: &mut Reader, node: &Node<'_>, svc: &Service) -> Option<Checker> {
    let f = rd.fields(node, MISC_KEYS)?;
    let misc_path = f.required(rd, "misc_path").and_then(|n| rd.text(&n));
    let timeout = f
        .get("misc_timeout")
        .and_then(|n| rd.seconds(&n, 1..=86_400));
    let warmup = f.get("warmup").and_then(|n| rd.seconds(&n, 0..=MAX_WARMUP));
    let dynamic = f.flag(rd, "misc_dynamic").unwrap_or(false);
    Some(Checker::Misc(MiscCheck {
        misc_path: misc_path?,
        dynamic,
        misc_timeout: timeout.unwrap_or(svc.delay_loop),
        warmup,
    }))
}

/// `amqp_check`: `tcp_check`'s keys, and a login with `login: true`.
fn amqp_check(rd: &mut Reader, node: &Node<'_>, addr: Option<IpAddr>) -> Option<Checker> {
    let f = rd.fields(node, AMQP_KEYS)?;
    let ep = endpoint(rd, &f, addr);
    let probe = stream_probe(rd, &f, "amqp_check", addr, &ep);
    let timing = timing(rd, &f);
    Some(Checker::Amqp(AmqpCheck {
        connect_ip: ep.connect_ip,
        connect_port: ep.connect_port,
        bindto: ep.bindto,
        bind_port: ep.bind_port,
        login: amqp_login(rd, &f),
        probe,
        timing,
    }))
}

/// `login`, `user`, `password` or `password_file`, `vhost`, `alarm`. Without `login: true` the
/// others are mistakes (the check would not use them); with it, `user` and one password are
/// required.
fn amqp_login(rd: &mut Reader, f: &Fields<'_>) -> Option<AmqpLogin> {
    let login = f.flag(rd, "login").unwrap_or(false);
    let alarm = f.flag(rd, "alarm");
    if !login {
        for (key, node) in f.present(AMQP_LOGIN_KEYS) {
            let msg = format!(
                "`{key}` needs `login: true`: without a login the check stops at \
                 connection.start"
            );
            rd.error(&node.path, msg);
        }
        if alarm == Some(true) {
            let msg = "`alarm: true` needs `login: true`: only a logged-in client can publish, \
                       and publishing is what a resource alarm blocks";
            rd.error(&f.path_of("alarm"), msg);
        }
        return None;
    }
    let user = f
        .required(rd, "user")
        .and_then(|n| bounded_text(rd, &n, AmqpLogin::MAX_USER));
    let password = match (f.raw("password"), f.raw("password_file")) {
        (Some(_), Some(file)) => {
            rd.error(&file.path, "give `password` or `password_file`, not both");
            None
        }
        (None, None) => {
            let msg = "`login: true` needs `password` or `password_file` (a file that only root \
                       reads keeps the password out of this one)";
            rd.error(&f.path_of("password"), msg);
            None
        }
        (Some(_), None) => f
            .required(rd, "password")
            .and_then(|n| bounded_text(rd, &n, AmqpLogin::MAX_PASSWORD))
            .map(AmqpPassword::Text),
        (None, Some(_)) => f
            .required(rd, "password_file")
            .and_then(|n| absolute_path(rd, &n))
            .map(AmqpPassword::File),
    };
    let vhost = f
        .get("vhost")
        .and_then(|n| bounded_text(rd, &n, AmqpLogin::MAX_VHOST));
    Some(AmqpLogin {
        user: user?,
        password: password?,
        vhost: vhost.unwrap_or_else(|| AmqpLogin::DEFAULT_VHOST.to_owned()),
        alarm: alarm.unwrap_or(false),
    })
}

/// A string of at most `max` bytes.
fn bounded_text(rd: &mut Reader, node: &Node<'_>, max: usize) -> Option<String> {
    let text = rd.text(node)?;
    if text.len() > max {
        let msg = format!("is {} bytes long; at most {max} are allowed", text.len());
        rd.error(&node.path, msg);
        return None;
    }
    Some(text)
}

/// An absolute path of a file the agent reads (itself, when it starts and at each reload).
fn absolute_path(rd: &mut Reader, node: &Node<'_>) -> Option<PathBuf> {
    let text = rd.text(node)?;
    if !Path::new(&text).is_absolute() {
        let msg = format!(
            "`{text}` must be an absolute path (the agent reads the file when it starts and at \
             each reload, whatever its working directory)"
        );
        rd.error(&node.path, msg);
        return None;
    }
    Some(PathBuf::from(text))
}

/// Where a network check connects to and from.
struct Endpoint {
    connect_ip: Option<IpAddr>,
    connect_port: Option<u16>,
    bindto: Option<IpAddr>,
    bind_port: Option<u16>,
}

/// `connect_ip`, `connect_port`, `bindto`, `bind_port`; `bindto` must be of the family of the
/// address connected to (`connect_ip`, else the real's `addr`).
fn endpoint(rd: &mut Reader, f: &Fields<'_>, addr: Option<IpAddr>) -> Endpoint {
    let connect_ip = f.get("connect_ip").and_then(|n| {
        let to = rd.ip(&n)?;
        if not_a_host(to) || ipv4_mapped(to).is_some() {
            let msg = format!("{to} is not a unicast address of another host a check can reach");
            rd.error(&n.path, msg);
        } else if let Some(real) = addr.filter(|a| a.is_ipv4() != to.is_ipv4()) {
            let msg = format!(
                "{to} and the real {real} are of different address families: the check would \
                 test another host than the one that gets the traffic"
            );
            rd.error(&n.path, msg);
        }
        Some(to)
    });
    let bindto = f.get("bindto").and_then(|n| {
        let from = rd.ip(&n)?;
        let not_a_source = match from {
            IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
            IpAddr::V6(a) => a.is_multicast(),
        };
        if not_a_source {
            let msg = format!("{from} is a multicast or broadcast address, which sends nothing");
            rd.error(&n.path, msg);
        }
        if let Some(to) = connect_ip
            .or(addr)
            .filter(|to| to.is_ipv4() != from.is_ipv4())
        {
            let msg = format!(
                "{from} cannot be the source of a check that connects to {to}: the address \
                 families differ"
            );
            rd.error(&n.path, msg);
        }
        Some(from)
    });
    Endpoint {
        connect_ip,
        connect_port: f.get("connect_port").and_then(|n| rd.port(&n)),
        bindto,
        bind_port: f.get("bind_port").and_then(|n| rd.port(&n)),
    }
}

/// `connect_timeout`, `retry` (alias `nb_get_retry`), `delay_before_retry`, `warmup`.
fn timing(rd: &mut Reader, f: &Fields<'_>) -> CheckTiming {
    let d = CheckTiming::default();
    let wait = |rd: &mut Reader, key: &str, min: Duration, default: Duration| {
        f.get(key)
            .and_then(|n| rd.fractional_seconds(&n, min, MAX_CHECK_WAIT))
            .unwrap_or(default)
    };
    let connect_timeout = wait(
        rd,
        "connect_timeout",
        Duration::from_millis(1),
        d.connect_timeout,
    );
    let delay_before_retry = wait(
        rd,
        "delay_before_retry",
        Duration::ZERO,
        d.delay_before_retry,
    );
    let retry = f.get_aliased(rd, "retry", "nb_get_retry");
    CheckTiming {
        connect_timeout,
        retry: retry
            .and_then(|n| rd.u32(&n, 0..=MAX_RETRY))
            .unwrap_or(d.retry),
        delay_before_retry,
        warmup: f.get("warmup").and_then(|n| rd.seconds(&n, 0..=MAX_WARMUP)),
    }
}

/// `url`: one mapping or a list of them (keepalived allows several `url` blocks).
fn urls(rd: &mut Reader, f: &Fields<'_>) -> Vec<UrlCheck> {
    let Some(node) = f.required(rd, "url") else {
        return Vec::new();
    };
    let items = match node.value {
        Value::Sequence(_) => rd.list(&node),
        _ => vec![node.clone()],
    };
    if items.is_empty() {
        rd.error(&node.path, "needs at least one url");
    }
    items.iter().filter_map(|n| url(rd, n)).collect()
}

/// One `url`: `path` (required), `status_code` (default any 2xx, as keepalived), `digest`
/// and `virtualhost`.
fn url(rd: &mut Reader, node: &Node<'_>) -> Option<UrlCheck> {
    let f = rd.fields(node, URL_KEYS)?;
    let path = f.required(rd, "path").and_then(|n| url_path(rd, &n));
    let status = f.get("status_code").and_then(|n| status_codes(rd, &n));
    let digest = f.get("digest").and_then(|n| digest(rd, &n));
    let virtualhost = f.get("virtualhost").and_then(|n| virtualhost(rd, &n));
    Some(UrlCheck {
        path: path?,
        status_code: status.unwrap_or_default(),
        digest,
        virtualhost,
    })
}

/// What `status_code` takes, for messages.
const STATUS_FORMS: &str = "a status code (like 200), a range (like 200-299) or a list of them";

/// `status_code`: a code, a range `200-299`, keepalived's words (`"200 204 300-399"`), or a
/// list of codes and ranges.
fn status_codes(rd: &mut Reader, node: &Node<'_>) -> Option<StatusCodes> {
    let items = match node.value {
        Value::Sequence(_) => rd.list(node),
        _ => vec![node.clone()],
    };
    let mut ranges = Vec::new();
    let mut valid = true;
    for item in &items {
        match item.value {
            Value::Number(_) => match rd.uint(item, STATUS_RANGE) {
                // Within 100..=599.
                Some(code) => ranges.push((code as u16, code as u16)),
                None => valid = false,
            },
            Value::String(s) => {
                for word in s.split_whitespace() {
                    match status_word(word) {
                        Ok(range) => ranges.push(range),
                        Err(msg) => {
                            rd.error(&item.path, msg);
                            valid = false;
                        }
                    }
                }
            }
            _ => {
                let msg = format!("expected {STATUS_FORMS}, found {}", describe(item.value));
                rd.error(&item.path, msg);
                valid = false;
            }
        }
    }
    if !valid {
        return None;
    }
    let codes = StatusCodes::new(ranges);
    if codes.is_none() {
        rd.error(&node.path, format!("needs {STATUS_FORMS}"));
    }
    codes
}

/// The status codes, as a range of whole numbers.
const STATUS_RANGE: std::ops::RangeInclusive<u64> =
    StatusCodes::MIN as u64..=StatusCodes::MAX as u64;

/// One word of `status_code`: `204` or `200-299`.
fn status_word(word: &str) -> Result<(u16, u16), String> {
    let (min, max) = (StatusCodes::MIN, StatusCodes::MAX);
    let (lo, hi) = word.split_once('-').unwrap_or((word, word));
    let (Ok(lo), Ok(hi)) = (lo.parse::<u32>(), hi.parse::<u32>()) else {
        return Err(format!(
            "`{word}` is not a status code or a range like 200-299"
        ));
    };
    let out = |n: u32| !(u32::from(min)..=u32::from(max)).contains(&n);
    if let Some(n) = [lo, hi].into_iter().find(|&n| out(n)) {
        return Err(format!(
            "`{word}`: must be between {min} and {max}, found {n}"
        ));
    }
    if lo > hi {
        return Err(format!(
            "`{word}` is not a range: write the lower code first, like {hi}-{lo}"
        ));
    }
    // Both within 100..=599.
    Ok((lo as u16, hi as u16))
}

/// `digest`: the MD5 of the body, 32 hexadecimal digits (either case, as keepalived reads it).
fn digest(rd: &mut Reader, node: &Node<'_>) -> Option<[u8; 16]> {
    const WANT: &str = "an MD5 digest is 32 hexadecimal digits, like the first word of \
                        `curl -s URL | md5sum`";
    let text = rd.text(node)?;
    let hex = text.trim();
    let len = hex.chars().count();
    let problem = if len != 32 {
        format!("`{hex}` is {len} characters long: {WANT}")
    } else if let Some(c) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
        format!("`{hex}` holds `{c}`, which is not a hexadecimal digit: {WANT}")
    } else {
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            // 32 ASCII hexadecimal digits: every pair parses.
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or_default();
        }
        return Some(out);
    };
    rd.error(&node.path, problem);
    None
}

/// `virtualhost`: the `Host` header, a host name (with a port if the server wants one).
fn virtualhost(rd: &mut Reader, node: &Node<'_>) -> Option<String> {
    let host = rd.text(node)?;
    let problem = if host.contains("://") || host.contains('/') {
        "must be a host name only (like www.example.org or www.example.org:8080), not a URL"
    } else if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "must not contain white space or control characters"
    } else {
        return Some(host);
    };
    rd.error(&node.path, format!("`{host}` {problem}"));
    None
}

/// `auth`: `user` and one of `password` (in the file) or `password_file` (read by the agent).
fn auth(rd: &mut Reader, node: &Node<'_>) -> Option<HttpAuth> {
    let f = rd.fields(node, AUTH_KEYS)?;
    let user = f.required(rd, "user").and_then(|n| auth_user(rd, &n));
    let inline = f.raw("password");
    let file = f.raw("password_file");
    let password = match (&inline, &file) {
        (Some(_), Some(file)) => {
            let msg = "give `password` or `password_file`, not both";
            rd.error(&file.path, msg);
            None
        }
        (Some(n), None) if n.is_null() => {
            rd.error(&n.path, "`password` needs a value");
            None
        }
        (Some(n), None) => password(rd, n).map(Password::Inline),
        (None, Some(_)) => f
            .required(rd, "password_file")
            .and_then(|n| password_file(rd, &n))
            .map(Password::File),
        (None, None) => {
            let msg = "missing `password_file` (a file holding the password, which the agent \
                       reads) or `password`";
            rd.error(&node.path, msg);
            None
        }
    };
    Some(HttpAuth {
        user: user?,
        password: password?,
    })
}

/// `auth.user`: no `:` (it ends the user in Basic authentication), no control characters.
fn auth_user(rd: &mut Reader, node: &Node<'_>) -> Option<String> {
    let user = rd.text(node)?;
    let problem = if user.contains(':') {
        "must not contain `:`, which separates the user from the password in Basic \
         authentication"
    } else if user.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Some(user);
    };
    rd.error(&node.path, format!("`{user}` {problem}"));
    None
}

/// `auth.password`: a string without control characters. Messages never quote it.
fn password(rd: &mut Reader, node: &Node<'_>) -> Option<Secret> {
    let problem = match node.value {
        Value::String(s) if s.is_empty() => "must not be empty",
        Value::String(s) if s.chars().any(char::is_control) => {
            "must not contain control characters (a line break, a tab, ...)"
        }
        Value::String(s) => return Some(Secret::new(s.as_str())),
        Value::Number(_) | Value::Bool(_) => "expected a string (put the password in quotes)",
        _ => "expected a string",
    };
    rd.error(&node.path, problem);
    None
}

/// `auth.password_file`: an absolute path (the agent reads the file, not validation).
fn password_file(rd: &mut Reader, node: &Node<'_>) -> Option<PathBuf> {
    let path = rd.text(node)?;
    let problem = if !path.starts_with('/') {
        "must be an absolute path (starting with `/`)"
    } else if path.ends_with('/') {
        "must name a file, not a directory"
    } else {
        return Some(PathBuf::from(path));
    };
    rd.error(&node.path, format!("`{path}` {problem}"));
    None
}

/// A request path: starts with `/`, no spaces or control characters.
fn url_path(rd: &mut Reader, node: &Node<'_>) -> Option<String> {
    let path = rd.text(node)?;
    if !path.starts_with('/') {
        let msg = format!(
            "`{path}` must start with `/`: give the path only (like /api/health); the check \
             connects to the real (or connect_ip)"
        );
        rd.error(&node.path, msg);
        return None;
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        let msg = format!("`{path}` must not contain spaces or control characters (use %20)");
        rd.error(&node.path, msg);
        return None;
    }
    Some(path)
}
