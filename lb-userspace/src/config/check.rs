//! Health checkers of a real server: `tcp_check`, `http_get`, `misc_check`, `amqp_check`.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_yaml::Value;

use super::{
    AmqpCheck, AmqpLogin, AmqpPassword, CheckTiming, Checker, HttpCheck, MiscCheck, TcpCheck,
    UrlCheck,
    address::{ipv4_mapped, not_a_host},
    parse::Service,
    reader::{Fields, Node, Reader},
};

/// The checker keys of a real server; at most one may be given.
const CHECKERS: &[&str] = &["tcp_check", "http_get", "misc_check", "amqp_check"];
/// Keys of `tcp_check` (aliases included).
const TCP_KEYS: &[&str] = &[
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
/// Keys of `http_get` (aliases included).
const HTTP_KEYS: &[&str] = &[
    "url",
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
/// Keys of one `url`.
const URL_KEYS: &[&str] = &["path", "status_code"];
/// Keys of `misc_check`.
const MISC_KEYS: &[&str] = &["misc_path", "misc_timeout", "warmup"];
/// Keys of `amqp_check` (aliases included).
const AMQP_KEYS: &[&str] = &[
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

/// The checker of a real at `addr` in `svc`. Several checkers are an error; each is still read
/// so that its own mistakes are reported too.
pub(super) fn checker(
    rd: &mut Reader,
    f: &Fields<'_>,
    addr: Option<IpAddr>,
    svc: &Service,
) -> Option<Checker> {
    let mut first: Option<(&str, Option<Checker>)> = None;
    for (key, node) in f.present(CHECKERS) {
        if let Some((k, _)) = &first {
            let msg = format!("a real server takes one checker, and `{k}` is already set");
            rd.error(&node.path, msg);
        }
        let check = match key {
            "tcp_check" => tcp_check(rd, &node, addr),
            "http_get" => http_get(rd, &node, addr),
            "amqp_check" => amqp_check(rd, &node, addr),
            _ => misc_check(rd, &node, svc),
        };
        first.get_or_insert((key, check));
    }
    first.and_then(|(_, c)| c)
}

/// `tcp_check`.
fn tcp_check(rd: &mut Reader, node: &Node<'_>, addr: Option<IpAddr>) -> Option<Checker> {
    let f = rd.fields(node, TCP_KEYS)?;
    let ep = endpoint(rd, &f, addr);
    Some(Checker::Tcp(TcpCheck {
        connect_ip: ep.connect_ip,
        connect_port: ep.connect_port,
        bindto: ep.bindto,
        bind_port: ep.bind_port,
        timing: timing(rd, &f),
    }))
}

/// `http_get`.
fn http_get(rd: &mut Reader, node: &Node<'_>, addr: Option<IpAddr>) -> Option<Checker> {
    let f = rd.fields(node, HTTP_KEYS)?;
    let ep = endpoint(rd, &f, addr);
    Some(Checker::Http(HttpCheck {
        urls: urls(rd, &f),
        connect_ip: ep.connect_ip,
        connect_port: ep.connect_port,
        bindto: ep.bindto,
        bind_port: ep.bind_port,
        timing: timing(rd, &f),
    }))
}

/// `misc_check`; `misc_timeout` defaults to the service's `delay_loop`.
fn misc_check(rd: &mut Reader, node: &Node<'_>, svc: &Service) -> Option<Checker> {
    let f = rd.fields(node, MISC_KEYS)?;
    let misc_path = f.required(rd, "misc_path").and_then(|n| rd.text(&n));
    let timeout = f
        .get("misc_timeout")
        .and_then(|n| rd.seconds(&n, 1..=86_400));
    let warmup = f.get("warmup").and_then(|n| rd.seconds(&n, 0..=MAX_WARMUP));
    Some(Checker::Misc(MiscCheck {
        misc_path: misc_path?,
        misc_timeout: timeout.unwrap_or(svc.delay_loop),
        warmup,
    }))
}

/// `amqp_check`: `tcp_check`'s keys, and a login with `login: true`.
fn amqp_check(rd: &mut Reader, node: &Node<'_>, addr: Option<IpAddr>) -> Option<Checker> {
    let f = rd.fields(node, AMQP_KEYS)?;
    let ep = endpoint(rd, &f, addr);
    let timing = timing(rd, &f);
    Some(Checker::Amqp(AmqpCheck {
        connect_ip: ep.connect_ip,
        connect_port: ep.connect_port,
        bindto: ep.bindto,
        bind_port: ep.bind_port,
        login: amqp_login(rd, &f),
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

/// One `url`: `path` (required) and `status_code` (default 200).
fn url(rd: &mut Reader, node: &Node<'_>) -> Option<UrlCheck> {
    let f = rd.fields(node, URL_KEYS)?;
    let path = f.required(rd, "path").and_then(|n| url_path(rd, &n));
    let status = f.get("status_code").and_then(|n| rd.uint(&n, 100..=599));
    Some(UrlCheck {
        path: path?,
        // Within 100..=599.
        status_code: status.map_or(200, |s| s as u16),
    })
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
