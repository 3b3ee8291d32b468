//! The checkers a configuration asks for: one [`CheckSpec`] per checker of a real (a
//! `tcp_check` half-open through the VIP unless told or unable, see
//! [`crate::config::TcpProbe`]), with keepalived's defaults and inheritance (the virtual server's `delay_loop`, `alpha` and
//! `warmup`; `connect_ip`/`connect_port` over the real's address; a source port alone binding
//! to the unspecified address of the target's family; a url's `virtualhost` over its
//! `http_get`'s, over the address connected to).
//!
//! Building them reads every `http_get.auth.password_file` (and `ssl_get`'s) and every file of
//! `ssl_get.tls`, so it happens when the agent starts and on every reload (validation never
//! reads files).
//! An `amqp_check`'s `password_file` is named, not read: [`amqp::read_password_files`]
//! reads it.

use std::{
    fmt,
    io::Read as _,
    net::{IpAddr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    CheckSpec, Probe, Timing, amqp,
    probe::{Credentials, HttpUrl, host_header},
    tls::TlsClients,
};
use crate::{
    config::{
        CheckEndpoint, CheckTiming, Checker, Config, HttpCheck, Password, Secret, StreamProbe,
        TcpProbe,
    },
    model::RealKey,
};

/// How long a `file_check` may take to read its file.
const FILE_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// This director's host name, keepalived's default `helo_name`; `localhost` if it has none.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty() && !n.contains(char::is_whitespace))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The largest password file read, in bytes: it holds one password.
pub const MAX_PASSWORD_FILE: u64 = 4096;

/// A file of a check (a password file, a certificate, a key, authorities) that cannot be used;
/// names the field, the file and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFileError {
    /// The field (`virtual_servers[0].real_servers[1].http_get.auth.password_file`,
    /// `...ssl_get.tls.ca_file`).
    pub field: String,
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

impl fmt::Display for CheckFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.field, self.path.display(), self.reason)
    }
}

impl std::error::Error for CheckFileError {}

/// The checkers the configuration asks for, one per checker of each real, keyed by its index.
/// Reads the password files of `http_get.auth` and `ssl_get.auth`, and the files of
/// `ssl_get.tls`; the first that cannot be used is the error.
pub fn check_specs(config: &Config) -> Result<Vec<CheckSpec>, CheckFileError> {
    let mut specs = Vec::new();
    let mut tls_clients = TlsClients::default();
    // `v` counts the items of `virtual_servers` as written: a group is one, its leader.
    let mut v = 0;
    for vs in &config.virtual_servers {
        // A group's reals are checked once, through its leader (keepalived checks a real of a
        // group once too); the agent applies the result to every member.
        match &vs.group {
            Some(g) if g.leader != vs.key => continue,
            _ => v += 1,
        }
        let v = v - 1;
        for (r, rs) in vs.real_servers.iter().enumerate() {
            for (i, check) in rs.checks.iter().enumerate() {
                // Where the check connects (connect_ip/connect_port over the real's address and
                // port) and from where.
                let ep = check.endpoint().unwrap_or_default();
                let target = SocketAddr::new(
                    ep.connect_ip.unwrap_or(rs.key.addr),
                    ep.connect_port.unwrap_or(rs.key.port),
                );
                let bind = bind(target.ip(), ep.bindto, ep.bind_port);
                let timing = |t: &CheckTiming| Timing {
                    delay_loop: vs.delay_loop,
                    retry: t.retry,
                    delay_before_retry: t.delay_before_retry,
                    connect_timeout: t.connect_timeout,
                };
                let (probe, timing, warmup) = match check {
                    Checker::Tcp(c) => {
                        let port = target.port();
                        // Half-open through the VIP unless told or unable (see [`TcpProbe`]).
                        let default = if follows_data_path(ep, rs.key) {
                            TcpProbe::Vip
                        } else {
                            TcpProbe::Connect
                        };
                        let probe = match (c.probe.unwrap_or(default), rs.key.addr, vs.key.vip) {
                            (TcpProbe::Vip, IpAddr::V4(real), IpAddr::V4(vip)) => Probe::Syn {
                                target: SocketAddrV4::new(vip, port),
                                real,
                            },
                            (TcpProbe::Syn, IpAddr::V4(real), _) => Probe::Syn {
                                target: SocketAddrV4::new(real, port),
                                real,
                            },
                            _ => Probe::Tcp { target, bind },
                        };
                        (probe, timing(&c.timing), c.timing.warmup)
                    }
                    Checker::Http(c) => {
                        let field = format!("virtual_servers[{v}].real_servers[{r}].{}", c.key());
                        let tls = match &c.tls {
                            Some(t) => Some(tls_clients.get(t, &format!("{field}.tls"))?),
                            None => None,
                        };
                        let vip = stream_vip(c.probe, ep, rs.key, vs.key.vip, target.port());
                        // A client names the VIP.
                        let host = vip.map_or(target, SocketAddr::V4);
                        (
                            Probe::Http {
                                target,
                                bind,
                                urls: http_urls(c, host),
                                auth: credentials(c, &field)?,
                                vip,
                                tls,
                            },
                            timing(&c.timing),
                            c.timing.warmup,
                        )
                    }
                    Checker::Amqp(c) => {
                        let login = c.login.as_ref().map(amqp::Login::from);
                        let vip = stream_vip(c.probe, ep, rs.key, vs.key.vip, target.port());
                        (
                            Probe::Amqp {
                                target,
                                bind,
                                login,
                                vip,
                            },
                            timing(&c.timing),
                            c.timing.warmup,
                        )
                    }
                    Checker::Udp(c) => {
                        let probe = Probe::Udp {
                            target,
                            bind,
                            payload: c.payload.clone(),
                            require_reply: c.require_reply.clone(),
                        };
                        (probe, timing(&c.timing), c.timing.warmup)
                    }
                    Checker::Dns(c) => {
                        let probe = Probe::Dns {
                            target,
                            bind,
                            name: c.name.clone(),
                            qtype: c.query_type,
                        };
                        (probe, timing(&c.timing), c.timing.warmup)
                    }
                    Checker::Ping(c) => (
                        Probe::Ping {
                            target: c.connect_ip.unwrap_or(rs.key.addr),
                            bind: c.bindto,
                        },
                        timing(&c.timing),
                        c.timing.warmup,
                    ),
                    Checker::Smtp(c) => {
                        let helo = c.helo_name.clone().unwrap_or_else(host_name);
                        let probe = Probe::Smtp { target, bind, helo };
                        (probe, timing(&c.timing), c.timing.warmup)
                    }
                    // MISC_CHECK has no retries: the script decides at once.
                    Checker::Misc(c) => (
                        Probe::Misc {
                            command: c.misc_path.clone(),
                            timeout: c.misc_timeout,
                            dynamic: c.dynamic,
                        },
                        Timing {
                            delay_loop: vs.delay_loop,
                            retry: 0,
                            delay_before_retry: Duration::from_secs(1),
                            connect_timeout: c.misc_timeout,
                        },
                        c.warmup,
                    ),
                    // FILE_CHECK has no retries either: the file says at once. A read is bounded
                    // by a second.
                    Checker::File(c) => (
                        Probe::File {
                            path: c.path.clone(),
                            weight: c.weight,
                            reverse: c.reverse,
                        },
                        Timing {
                            delay_loop: vs.delay_loop,
                            retry: 0,
                            delay_before_retry: Duration::from_secs(1),
                            connect_timeout: FILE_READ_TIMEOUT,
                        },
                        None,
                    ),
                };
                specs.push(CheckSpec {
                    key: (vs.key, rs.key, i),
                    probe,
                    timing,
                    alpha: vs.alpha,
                    warmup: warmup.or(vs.warmup),
                });
            }
        }
    }
    Ok(specs)
}

/// The URLs of `check` as probed at `target`: each with its `Host`.
fn http_urls(check: &HttpCheck, target: SocketAddr) -> Vec<HttpUrl> {
    check
        .urls
        .iter()
        .map(|u| HttpUrl {
            path: u.path.clone(),
            host: u
                .virtualhost
                .clone()
                .or_else(|| check.virtualhost.clone())
                .unwrap_or_else(|| host_header(target)),
            status: u.status_code.clone(),
            digest: u.digest,
        })
        .collect()
}

/// The credentials of `check`'s `auth`, its password file read; `field` is the check's path.
fn credentials(check: &HttpCheck, field: &str) -> Result<Option<Credentials>, CheckFileError> {
    let Some(auth) = &check.auth else {
        return Ok(None);
    };
    let password = match &auth.password {
        Password::Inline(secret) => secret.clone(),
        Password::File(path) => read_password(path).map_err(|reason| CheckFileError {
            field: format!("{field}.auth.password_file"),
            path: path.clone(),
            reason,
        })?,
    };
    Ok(Some(Credentials {
        user: auth.user.clone(),
        password,
    }))
}

/// The password `path` holds: its text with white space trimmed, one line, not empty. Errors
/// never quote the file's content.
pub fn read_password(path: &Path) -> Result<Secret, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_PASSWORD_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_PASSWORD_FILE {
        return Err(format!(
            "larger than {MAX_PASSWORD_FILE} bytes: the file must hold the password only"
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_owned())?;
    let password = text.trim();
    if password.is_empty() {
        return Err("is empty: write the password into it".to_owned());
    }
    if password.chars().any(char::is_control) {
        return Err(
            "holds control characters within the password (several lines?): the file must \
             hold the password only"
                .to_owned(),
        );
    }
    Ok(Secret::new(password))
}

/// Whether a check follows the data path unless told: when it tests what a client uses, from
/// where the director sends: an IPv4 real, and none of `connect_ip`, `connect_port` (unless it
/// is the real's own port), `bindto`, `bind_port`. A check of another port may test a listener
/// bound to the real's own address only.
fn follows_data_path(ep: CheckEndpoint, real: RealKey) -> bool {
    real.addr.is_ipv4()
        && ep.connect_ip.is_none()
        && ep.connect_port.is_none_or(|p| p == real.port)
        && ep.bindto.is_none()
        && ep.bind_port.is_none()
}

/// How a checker that talks over a connection goes: as `asked`, else through the VIP where
/// that is done (see [`StreamProbe`]); the VIP:port it goes to then.
fn stream_vip(
    asked: Option<StreamProbe>,
    ep: CheckEndpoint,
    real: RealKey,
    vip: IpAddr,
    port: u16,
) -> Option<SocketAddrV4> {
    let default = if follows_data_path(ep, real) {
        StreamProbe::Vip
    } else {
        StreamProbe::Connect
    };
    match (asked.unwrap_or(default), vip) {
        (StreamProbe::Vip, IpAddr::V4(vip)) => Some(SocketAddrV4::new(vip, port)),
        _ => None,
    }
}

/// The source address of a probe to `target`: `bindto` and/or `bind_port`; a source port
/// alone binds to the unspecified address of the target's family.
fn bind(target: IpAddr, ip: Option<IpAddr>, port: Option<u16>) -> Option<SocketAddr> {
    let unspecified = if target.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    };
    match (ip, port) {
        (None, None) => None,
        (ip, port) => Some(SocketAddr::new(
            ip.unwrap_or(unspecified),
            port.unwrap_or(0),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::StatusCodes;

    const DUAL: &str = "
interface: eth0
virtual_servers:
  - vip: 192.168.0.10
    port: 80
    lb_kind: dr
    real_servers:
      - ip: 192.168.0.2
        tcp_check: { bind_port: 1053 }
  - vip: 2001:db8::10
    port: 443
    lb_kind: dr
    real_servers:
      - ip: 2001:db8::2
        tcp_check: { bind_port: 1053 }
      - ip: 2001:db8::3
        http_get:
          url: { path: /healthz }
          connect_ip: 2001:db8:1::3
          bindto: 2001:db8:1::1
      - ip: 2001:db8::4
        misc_check: { misc_path: 'curl -6 -sf http://[2001:db8::4]/' }
";

    fn socket(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_checker_of_a_real_gets_its_own_spec() {
        let yaml = "
interface: eth0
virtual_servers:
  - vip: 192.168.0.10
    port: 80
    lb_kind: dr
    delay_loop: 7
    real_servers:
      - ip: 192.168.0.2
        tcp_check: { probe: connect }
        checks:
          - misc_check: { misc_path: /bin/check, misc_dynamic: true }
          - file_check: { path: /run/w, weight: 0, reverse: true }
      - ip: 192.168.0.3
";
        let config = Config::from_yaml(yaml, Path::new("multi.yaml")).unwrap();
        let specs = check_specs(&config).unwrap();
        let indices: Vec<usize> = specs.iter().map(|s| s.key.2).collect();
        assert_eq!(indices, [0, 1, 2], "the real without checkers has none");
        assert!(matches!(specs[0].probe, Probe::Tcp { .. }));
        assert_eq!(
            specs[1].probe,
            Probe::Misc {
                command: "/bin/check".into(),
                timeout: Duration::from_secs(7),
                dynamic: true,
            }
        );
        assert_eq!(
            specs[2].probe,
            Probe::File {
                path: "/run/w".into(),
                weight: 0,
                reverse: true,
            }
        );
        // The file decides at once, every delay_loop.
        assert_eq!(specs[2].timing.retry, 0);
        assert_eq!(specs[2].timing.delay_loop, Duration::from_secs(7));
    }

    #[test]
    fn a_groups_reals_are_checked_once_through_its_leader() {
        let yaml = "interface: eth0
virtual_servers:
  - group: web
    vips: [\"192.168.0.10-12:80\", \"192.168.0.10:443\"]
    lb_kind: dr
    real_servers:
      - { ip: 192.168.0.2, tcp_check: { connect_port: 8080 } }
      - { ip: 192.168.0.3, tcp_check: { connect_port: 8080 }, misc_check: { misc_path: /bin/true } }
  - vip: 192.168.0.20
    port: 80
    lb_kind: dr
    real_servers:
      - { ip: 192.168.0.2, tcp_check: { connect_port: 8080 } }
";
        let config = Config::from_yaml(yaml, Path::new("group.yaml")).unwrap();
        let keys: Vec<String> = check_specs(&config)
            .unwrap()
            .iter()
            .map(|s| format!("{} {} #{}", s.key.0, s.key.1, s.key.2))
            .collect();
        assert_eq!(
            keys,
            [
                "TCP 192.168.0.10:80 192.168.0.2:80 #0",
                "TCP 192.168.0.10:80 192.168.0.3:80 #0",
                "TCP 192.168.0.10:80 192.168.0.3:80 #1",
                "TCP 192.168.0.20:80 192.168.0.2:80 #0",
            ]
        );
    }

    #[test]
    fn ipv6_reals_get_ipv6_probes() {
        let config = Config::from_yaml(DUAL, Path::new("dual.yaml")).unwrap();
        let probes: Vec<Probe> = check_specs(&config)
            .unwrap()
            .into_iter()
            .map(|s| s.probe)
            .collect();
        assert_eq!(
            probes,
            [
                Probe::Tcp {
                    target: socket("192.168.0.2:80"),
                    bind: Some(socket("0.0.0.0:1053")),
                },
                Probe::Tcp {
                    target: socket("[2001:db8::2]:443"),
                    bind: Some(socket("[::]:1053")),
                },
                Probe::Http {
                    target: socket("[2001:db8:1::3]:443"),
                    bind: Some(socket("[2001:db8:1::1]:0")),
                    urls: vec![HttpUrl {
                        path: "/healthz".into(),
                        host: "[2001:db8:1::3]:443".into(),
                        status: StatusCodes::any_2xx(),
                        digest: None,
                    }],
                    auth: None,
                    vip: None,
                    tls: None,
                },
                Probe::Misc {
                    command: "curl -6 -sf http://[2001:db8::4]/".into(),
                    dynamic: false,
                    timeout: Duration::from_secs(60),
                },
            ]
        );
    }

    /// One real with `http_get`, at virtual_servers[1].real_servers[1].
    fn http_config(http_get: &str) -> Config {
        let text = format!(
            "interface: eth0\nvirtual_servers:\n  - {{ vip: 192.168.0.10, port: 80, lb_kind: dr }}\n  \
             - vip: 192.168.0.10\n    port: 8080\n    lb_kind: dr\n    real_servers:\n      \
             - {{ ip: 192.168.0.2 }}\n      - ip: 192.168.0.3\n        http_get: {http_get}\n"
        );
        Config::from_yaml(&text, Path::new("http.yaml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn http_probe(config: &Config) -> Result<Probe, CheckFileError> {
        Ok(check_specs(config)?.remove(0).probe)
    }

    /// A file in the temporary directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, content: &[u8]) -> Self {
            let path = std::env::temp_dir()
                .join(format!("lb-userspace-spec-{}-{name}", std::process::id()));
            std::fs::write(&path, content).unwrap();
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn virtualhost_of_the_url_over_the_check_over_the_address() {
        let config = http_config(
            "{ url: [{ path: /a, virtualhost: a.example.org }, { path: /b, status_code: \
             [200, 300-399], digest: 9B3A0C85A887A256D6939DA88AABD8CD }], virtualhost: \
             www.example.org, connect_port: 8081 }",
        );
        let Probe::Http { urls, auth, .. } = http_probe(&config).unwrap() else {
            panic!("an http probe");
        };
        assert_eq!(auth, None);
        let hosts: Vec<&str> = urls.iter().map(|u| u.host.as_str()).collect();
        assert_eq!(hosts, ["a.example.org", "www.example.org"]);
        assert_eq!(urls[1].status.to_string(), "200 300-399");
        assert_eq!(
            urls[1].digest,
            Some([
                0x9b, 0x3a, 0x0c, 0x85, 0xa8, 0x87, 0xa2, 0x56, 0xd6, 0x93, 0x9d, 0xa8, 0x8a, 0xab,
                0xd8, 0xcd
            ])
        );
        let config = http_config("{ url: { path: /a }, connect_port: 8081 }");
        let Probe::Http { urls, .. } = http_probe(&config).unwrap() else {
            panic!("an http probe");
        };
        assert_eq!(urls[0].host, "192.168.0.3:8081");
    }

    #[test]
    fn checks_of_the_service_port_follow_the_data_path_by_default() {
        let vip = "192.168.0.10:8080".parse().unwrap();
        // http_get of the service's port: to the VIP, which the Host header names.
        let Probe::Http {
            target,
            urls,
            vip: through,
            ..
        } = http_probe(&http_config("{ url: { path: / } }")).unwrap()
        else {
            panic!("an http probe");
        };
        assert_eq!((target, through), (socket("192.168.0.3:8080"), Some(vip)));
        assert_eq!(urls[0].host, "192.168.0.10:8080");
        // Another port, or asked to connect: the real's own address.
        for check in [
            "{ url: { path: / }, connect_port: 8081 }",
            "{ url: { path: / }, probe: connect }",
        ] {
            let Probe::Http { vip, .. } = http_probe(&http_config(check)).unwrap() else {
                panic!("an http probe");
            };
            assert_eq!(vip, None, "{check}");
        }
        // The same rule for tcp_check: half-open through the VIP unless another port is
        // checked.
        let tcp = |check: &str| {
            let text = format!(
                "interface: eth0\nvirtual_servers:\n  - vip: 192.168.0.10\n    port: 8080\n    \
                 lb_kind: dr\n    real_servers:\n      - ip: 192.168.0.3\n        \
                 tcp_check: {check}\n"
            );
            let config = Config::from_yaml(&text, Path::new("tcp.yaml")).unwrap();
            check_specs(&config).unwrap().remove(0).probe
        };
        let real = std::net::Ipv4Addr::new(192, 168, 0, 3);
        assert_eq!(tcp("{}"), Probe::Syn { target: vip, real });
        // The real's own port named again is still the service's port.
        assert_eq!(
            tcp("{ connect_port: 8080 }"),
            Probe::Syn { target: vip, real }
        );
        assert_eq!(
            tcp("{ connect_port: 8081 }"),
            Probe::Tcp {
                target: socket("192.168.0.3:8081"),
                bind: None
            }
        );
        assert_eq!(
            tcp("{ connect_port: 8081, probe: vip }"),
            Probe::Syn {
                target: "192.168.0.10:8081".parse().unwrap(),
                real
            }
        );
    }

    #[test]
    fn the_password_comes_from_the_file_trimmed_or_inline() {
        let file = TempFile::new("password", b"  s3cret:with colon \n");
        let config = http_config(&format!(
            "{{ url: {{ path: / }}, auth: {{ user: lbcheck, password_file: {} }} }}",
            file.0.display()
        ));
        let Probe::Http { auth, .. } = http_probe(&config).unwrap() else {
            panic!("an http probe");
        };
        let auth = auth.expect("credentials");
        assert_eq!(auth.user, "lbcheck");
        assert_eq!(auth.password.expose(), "s3cret:with colon");
        assert!(
            !format!("{auth:?}").contains("s3cret"),
            "Debug shows the password: {auth:?}"
        );
        let config = http_config("{ url: { path: / }, auth: { user: u, password: 'p w' } }");
        let Probe::Http { auth, .. } = http_probe(&config).unwrap() else {
            panic!("an http probe");
        };
        assert_eq!(auth.unwrap().password.expose(), "p w");
    }

    #[test]
    fn a_password_file_that_cannot_be_used_names_the_field() {
        let field = "virtual_servers[1].real_servers[1].http_get.auth.password_file";
        let error = |path: &Path| {
            let config = http_config(&format!(
                "{{ url: {{ path: / }}, auth: {{ user: u, password_file: {} }} }}",
                path.display()
            ));
            let e = http_probe(&config).unwrap_err();
            assert_eq!((e.field.as_str(), e.path.as_path()), (field, path));
            e.to_string()
        };
        let missing = std::env::temp_dir().join("lb-userspace-spec-no-such-file");
        let shown = error(&missing);
        assert!(
            shown.starts_with(&format!("{field} {}: ", missing.display()))
                && shown.contains("No such file"),
            "{shown}"
        );
        let empty = TempFile::new("empty", b" \n\t\n");
        assert!(error(&empty.0).ends_with(": is empty: write the password into it"));
        let two = TempFile::new("two-lines", b"first-secret\nsecond-secret\n");
        let shown = error(&two.0);
        assert!(shown.contains("control characters"), "{shown}");
        assert!(
            !shown.contains("secret"),
            "the content is not shown: {shown}"
        );
        let big = TempFile::new("big", &[b'x'; MAX_PASSWORD_FILE as usize + 1]);
        assert!(error(&big.0).contains("larger than 4096 bytes"));
        let binary = TempFile::new("binary", &[0xff, 0xfe]);
        assert!(error(&binary.0).ends_with("is not UTF-8 text"));
    }

    #[test]
    fn amqp_checks_carry_their_login_and_name_their_password_file() {
        let yaml = "
interface: eth0
virtual_servers:
  - vip: 192.168.0.10
    port: 5672
    lb_kind: dr
    real_servers:
      - ip: 192.168.0.2
        amqp_check: { connect_timeout: 3, bind_port: 1056 }
      - ip: 192.168.0.3
        amqp_check:
          connect_port: 5673
          login: true
          user: lb-health
          password_file: /etc/lb-xdp/amqp.password
          vhost: /shop
          alarm: true
";
        let config = Config::from_yaml(yaml, Path::new("amqp.yaml")).unwrap();
        let specs = check_specs(&config).unwrap();
        let probes: Vec<&Probe> = specs.iter().map(|s| &s.probe).collect();
        assert_eq!(
            probes,
            [
                &Probe::Amqp {
                    target: socket("192.168.0.2:5672"),
                    bind: Some(socket("0.0.0.0:1056")),
                    login: None,
                    vip: None,
                },
                &Probe::Amqp {
                    target: socket("192.168.0.3:5673"),
                    bind: None,
                    login: Some(amqp::Login {
                        user: "lb-health".into(),
                        password: amqp::Password::File("/etc/lb-xdp/amqp.password".into(), None),
                        vhost: "/shop".into(),
                        alarm: true,
                    }),
                    vip: None,
                },
            ]
        );
        assert_eq!(specs[0].probe.kind(), "amqp_check");
        assert_eq!(specs[0].timing.connect_timeout, Duration::from_secs(3));
        assert_eq!(specs[1].timing.delay_loop, Duration::from_secs(60));
    }

    #[test]
    fn udp_and_dns_checks_become_their_probes() {
        let yaml = "
interface: eth0
virtual_servers:
  - vip: 192.168.0.10
    port: 5353
    protocol: udp
    lb_kind: dr
    real_servers:
      - ip: 192.168.0.2
        udp_check: { payload: '00ff', require_reply: true }
      - ip: 192.168.0.3
        dns_check: { type: A, name: example.org }
      - ip: 192.168.0.4
        dns_check: { connect_ip: 192.168.1.4, connect_port: 5300, bind_port: 1053 }
";
        let config = Config::from_yaml(yaml, Path::new("udp.yaml")).unwrap();
        let probes: Vec<Probe> = check_specs(&config)
            .unwrap()
            .into_iter()
            .map(|s| s.probe)
            .collect();
        assert_eq!(
            probes,
            [
                Probe::Udp {
                    target: socket("192.168.0.2:5353"),
                    bind: None,
                    payload: vec![0, 0xff],
                    require_reply: Some(Vec::new()),
                },
                // keepalived's DNS_CHECK asks port 53, whatever the service's port.
                Probe::Dns {
                    target: socket("192.168.0.3:53"),
                    bind: None,
                    name: "example.org".into(),
                    qtype: crate::config::DnsType::A,
                },
                Probe::Dns {
                    target: socket("192.168.1.4:5300"),
                    bind: Some(socket("0.0.0.0:1053")),
                    name: ".".into(),
                    qtype: crate::config::DnsType::Soa,
                },
            ]
        );
        assert_eq!(probes[0].kind(), "udp_check");
        assert_eq!(probes[1].kind(), "dns_check");
    }

    #[test]
    fn ping_and_smtp_checks_become_their_probes() {
        let yaml = "
interface: eth0
virtual_servers:
  - vip: 192.168.0.10
    port: 25
    lb_kind: dr
    real_servers:
      - ip: 192.168.0.2
        ping_check: { bindto: 192.168.0.1 }
      - ip: 192.168.0.3
        smtp_check: { helo_name: lb.example.org }
      - ip: 192.168.0.4
        smtp_check: { connect_port: 2525 }
";
        let config = Config::from_yaml(yaml, Path::new("smtp.yaml")).unwrap();
        let probes: Vec<Probe> = check_specs(&config)
            .unwrap()
            .into_iter()
            .map(|s| s.probe)
            .collect();
        let host = host_name();
        assert!(!host.is_empty() && !host.contains(' '), "{host:?}");
        assert_eq!(
            probes,
            [
                Probe::Ping {
                    target: "192.168.0.2".parse().unwrap(),
                    bind: Some("192.168.0.1".parse().unwrap()),
                },
                Probe::Smtp {
                    target: socket("192.168.0.3:25"),
                    bind: None,
                    helo: "lb.example.org".into(),
                },
                // keepalived's default HELO name: this director's host name.
                Probe::Smtp {
                    target: socket("192.168.0.4:2525"),
                    bind: None,
                    helo: host,
                },
            ]
        );
        let kinds: Vec<&str> = probes.iter().map(Probe::kind).collect();
        assert_eq!(kinds, ["ping_check", "smtp_check", "smtp_check"]);
    }
}
