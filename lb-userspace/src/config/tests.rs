use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use super::*;
use crate::model::Protocol;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(text, Path::new("test.yaml"))
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid configuration, got:\n{e}\n--- from:\n{text}"),
    }
}

fn errors(text: &str) -> Vec<FieldError> {
    match parse(text) {
        Ok(c) => panic!("expected errors, got {c:?}\n--- from:\n{text}"),
        Err(e) => e.errors,
    }
}

/// Asserts that `text` fails with an error at exactly `path` whose message contains `fragment`.
fn assert_error(text: &str, path: &str, fragment: &str) {
    let errs = errors(text);
    assert!(
        errs.iter()
            .any(|e| e.path == path && e.message.contains(fragment)),
        "no error at `{path}` containing {fragment:?}; got {errs:#?}\n--- from:\n{text}"
    );
}

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A valid document with one service; `vs` and `reals` are appended to the service (indented
/// four spaces) and to a real server (indented eight spaces).
fn service(vs: &str, real: &str) -> String {
    let mut text = String::from(
        "interface: eth0\nvirtual_servers:\n  - vip: 192.168.0.10\n    port: 80\n    lb_algo: rr\n    lb_kind: dr\n",
    );
    for line in vs.lines() {
        text.push_str(&format!("    {line}\n"));
    }
    text.push_str("    real_servers:\n      - ip: 192.168.0.2\n");
    for line in real.lines() {
        text.push_str(&format!("        {line}\n"));
    }
    text
}

const BRIEF_EXAMPLE: &str = r#"
interface: eth0
xdp_mode: auto
instance: default
manage_vip: false
keep_forwarding_on_stop: false
control_socket: /run/lb-xdp/default.sock
metrics_listen: 127.0.0.1:9101
limits:
  max_services: 64
  max_reals: 4096
  max_table_size: 65537
  conn_entries: 1048576
  persist_entries: 65536
timeouts: { tcp: 900, tcpfin: 120, udp: 300 }
virtual_servers:
  - vip: 192.168.0.10
    port: 5672
    protocol: tcp
    lb_algo: wrr
    lb_kind: dr
    persistence_timeout: 50
    persistence_granularity: 255.255.255.0
    table_size: 65537
    delay_loop: 60
    warmup: 10
    alpha: false
    omega: false
    inhibit_on_failure: false
    quorum: 1
    hysteresis: 0
    quorum_up: "/usr/local/bin/notify quorum up"
    quorum_down: "/usr/local/bin/notify quorum down"
    sorry_server: { ip: 192.168.0.99, port: 5672 }
    real_servers:
      - ip: 192.168.0.2
        port: 5672
        weight: 1
        inhibit_on_failure: true
        notify_up: "/usr/local/bin/notify up"
        notify_down: "/usr/local/bin/notify down"
        tcp_check: { connect_timeout: 3, retry: 3, delay_before_retry: 3 }
      - ip: 192.168.0.3
        http_get:
          url: { path: /api/health, status_code: 200 }
          connect_port: 15672
      - ip: 192.168.0.4
        misc_check: { misc_path: "/usr/local/bin/check.sh arg", misc_timeout: 5, warmup: 2 }
"#;

#[test]
fn the_example_of_the_brief_parses() {
    let c = ok(BRIEF_EXAMPLE);
    assert_eq!(c.interface, "eth0");
    assert_eq!(c.xdp_mode, AttachMode::Auto);
    assert_eq!(c.instance, "default");
    assert!(!c.manage_vip && !c.keep_forwarding_on_stop);
    assert_eq!(c.control_socket, PathBuf::from("/run/lb-xdp/default.sock"));
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9101".parse().unwrap()));
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.timeouts, Timeouts::default());
    assert_eq!(c.virtual_servers.len(), 1);

    let vs = &c.virtual_servers[0];
    let key = ServiceKey {
        vip: v4("192.168.0.10"),
        port: 5672,
        proto: Protocol::Tcp,
    };
    assert_eq!(vs.key, key);
    assert_eq!(c.virtual_server(&key), Some(vs));
    assert_eq!(vs.lb_algo, LbAlgo::Wrr);
    assert_eq!(
        vs.persistence,
        Some(Persistence {
            timeout: 50,
            granularity: Ipv4Addr::new(255, 255, 255, 0),
            prefix6: 128,
        })
    );
    assert_eq!(vs.table_size, 65_537);
    assert_eq!(vs.delay_loop, secs(60));
    assert_eq!(vs.warmup, Some(secs(10)));
    assert!(!vs.alpha && !vs.omega && !vs.inhibit_on_failure);
    assert_eq!((vs.quorum, vs.hysteresis), (1, 0));
    assert_eq!(
        vs.quorum_up.as_deref(),
        Some("/usr/local/bin/notify quorum up")
    );
    assert_eq!(
        vs.quorum_down.as_deref(),
        Some("/usr/local/bin/notify quorum down")
    );
    assert_eq!(
        vs.sorry_server,
        Some(RealKey {
            addr: v4("192.168.0.99"),
            port: 5672
        })
    );

    let r = &vs.real_servers;
    assert_eq!(r.len(), 3);
    assert_eq!(
        r[0],
        RealServer {
            key: RealKey {
                addr: v4("192.168.0.2"),
                port: 5672
            },
            weight: 1,
            thresholds: Thresholds::default(),
            inhibit_on_failure: Some(true),
            notify_up: Some("/usr/local/bin/notify up".into()),
            notify_down: Some("/usr/local/bin/notify down".into()),
            checks: vec!(Checker::Tcp(TcpCheck {
                connect_ip: None,
                connect_port: None,
                bindto: None,
                bind_port: None,
                probe: None,
                timing: CheckTiming {
                    connect_timeout: secs(3),
                    retry: 3,
                    delay_before_retry: secs(3),
                    warmup: None
                },
            })),
        }
    );
    assert_eq!(
        r[1].key.port, 5672,
        "a real's port defaults to the service's"
    );
    assert_eq!(
        r[1].checks.first().cloned(),
        Some(Checker::Http(HttpCheck {
            urls: vec![url("/api/health", StatusCodes::one(200))],
            virtualhost: None,
            auth: None,
            probe: None,
            tls: None,
            connect_ip: None,
            connect_port: Some(15672),
            bindto: None,
            bind_port: None,
            timing: CheckTiming::default(),
        }))
    );
    assert_eq!(
        r[2].checks.first().cloned(),
        Some(Checker::Misc(MiscCheck {
            misc_path: "/usr/local/bin/check.sh arg".into(),
            dynamic: false,
            misc_timeout: secs(5),
            warmup: Some(secs(2)),
        }))
    );
}

#[test]
fn defaults() {
    let c = ok("interface: eth1\n");
    assert_eq!(c.xdp_mode, AttachMode::Auto);
    assert_eq!(c.instance, "default");
    assert!(!c.manage_vip && !c.keep_forwarding_on_stop);
    assert_eq!(c.control_socket, PathBuf::from("/run/lb-xdp/default.sock"));
    assert_eq!(c.metrics_listen, None);
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.timeouts, Timeouts::default());
    assert_eq!(
        (c.timeouts.tcp, c.timeouts.tcpfin, c.timeouts.udp),
        (900, 120, 300)
    );
    assert_eq!(c.sync, None, "no sync: section, no sync");
    assert!(c.virtual_servers.is_empty());

    let c = ok("interface: eth1\ninstance: blue\n");
    assert_eq!(c.control_socket, PathBuf::from("/run/lb-xdp/blue.sock"));

    let c = ok(&service("", "tcp_check:"));
    let vs = &c.virtual_servers[0];
    assert_eq!(vs.key.proto, Protocol::Tcp);
    assert_eq!(vs.persistence, None);
    assert_eq!(vs.table_size, 65_537);
    assert_eq!(vs.delay_loop, secs(60));
    assert_eq!(vs.warmup, None);
    assert!(!vs.alpha && !vs.omega && !vs.inhibit_on_failure);
    assert_eq!((vs.quorum, vs.hysteresis), (1, 0));
    assert_eq!((vs.quorum_up.clone(), vs.quorum_down.clone()), (None, None));
    assert_eq!(vs.sorry_server, None);
    let r = &vs.real_servers[0];
    assert_eq!(r.key.port, 80);
    assert_eq!(r.weight, 1);
    assert_eq!(r.inhibit_on_failure, None);
    assert_eq!((r.notify_up.clone(), r.notify_down.clone()), (None, None));
    // A checker given without a value is that checker with its defaults.
    let Some(Checker::Tcp(t)) = r.checks.first() else {
        panic!("expected a tcp_check, got {:?}", r.checks.first().cloned());
    };
    assert_eq!(
        t.timing,
        CheckTiming {
            connect_timeout: secs(5),
            retry: 1,
            delay_before_retry: secs(1),
            warmup: None
        }
    );
    assert_eq!(
        (t.connect_ip, t.connect_port, t.bindto, t.bind_port),
        (None, None, None, None)
    );

    // No checker: none.
    let c = ok(&service("", ""));
    assert_eq!(
        c.virtual_servers[0].real_servers[0].checks.first().cloned(),
        None
    );
}

#[test]
fn misc_timeout_defaults_to_delay_loop() {
    let c = ok(&service(
        "delay_loop: 7",
        "misc_check: { misc_path: /bin/true }",
    ));
    let Some(Checker::Misc(m)) = c.virtual_servers[0].real_servers[0].checks.first() else {
        panic!("expected a misc_check");
    };
    assert_eq!(m.misc_timeout, secs(7));
    assert_eq!(m.warmup, None);
}

/// A url with `path` and `status_code`, without digest or virtualhost.
fn url(path: &str, status_code: StatusCodes) -> UrlCheck {
    UrlCheck {
        path: path.into(),
        status_code,
        digest: None,
        virtualhost: None,
    }
}

#[test]
fn http_status_code_defaults_to_any_2xx_and_url_may_be_a_list() {
    let c = ok(&service(
        "",
        "http_get:\n  url:\n    - path: /a\n    - { path: /b, status_code: 204 }",
    ));
    let Some(Checker::Http(h)) = c.virtual_servers[0].real_servers[0].checks.first() else {
        panic!("expected an http_get");
    };
    assert_eq!(
        h.urls,
        vec![
            url("/a", StatusCodes::any_2xx()),
            url("/b", StatusCodes::one(204))
        ]
    );
    assert!(h.urls[0].status_code.accepts(200) && h.urls[0].status_code.accepts(299));
    assert!(!h.urls[0].status_code.accepts(300) && !h.urls[0].status_code.accepts(199));
    assert_eq!((h.virtualhost.as_deref(), h.auth.as_ref()), (None, None));
}

/// The `http_get` of the real of [`service`] with `http_get`.
fn http_get(http_get: &str) -> HttpCheck {
    match ok(&service("", &format!("http_get: {http_get}")))
        .virtual_servers
        .remove(0)
        .real_servers
        .remove(0)
        .checks
        .first()
        .cloned()
    {
        Some(Checker::Http(h)) => h,
        other => panic!("expected an http_get, got {other:?}"),
    }
}

#[test]
fn http_status_codes_as_keepalived_takes_them() {
    let codes = |status: &str| {
        http_get(&format!("{{ url: {{ path: /, status_code: {status} }} }}")).urls[0]
            .status_code
            .clone()
    };
    assert_eq!(codes("204"), StatusCodes::one(204));
    assert_eq!(codes("\"204\""), StatusCodes::one(204));
    assert_eq!(codes("200-299"), StatusCodes::any_2xx());
    let list = StatusCodes::new(vec![(200, 200), (300, 399), (404, 404)]).unwrap();
    assert_eq!(codes("[200, 300-399, 404]"), list);
    assert_eq!(codes("\"200 300-399 404\""), list);
    assert_eq!(codes("[\"200 300-399\", 404]"), list);
    assert_eq!(list.to_string(), "200 300-399 404");
    assert!(list.accepts(200) && list.accepts(350) && list.accepts(404));
    assert!(!list.accepts(201) && !list.accepts(400) && !list.accepts(503));
    // Without a value: keepalived's default.
    assert_eq!(codes("~"), StatusCodes::any_2xx());
}

#[test]
fn http_status_code_mistakes() {
    let path = "virtual_servers[0].real_servers[0].http_get.url.status_code";
    let bad = |status: &str, at: &str, fragment: &str| {
        let text = service(
            "",
            &format!("http_get: {{ url: {{ path: /, status_code: {status} }} }}"),
        );
        assert_error(&text, &format!("{path}{at}"), fragment);
        assert_eq!(errors(&text).len(), 1, "one mistake, one error: {status}");
    };
    bad(
        "300-200",
        "",
        "`300-200` is not a range: write the lower code first, like 200-300",
    );
    bad("99", "", "must be between 100 and 599, found 99");
    bad("600", "", "must be between 100 and 599, found 600");
    bad(
        "200-600",
        "",
        "`200-600`: must be between 100 and 599, found 600",
    );
    bad(
        "\"200 2xx\"",
        "",
        "`2xx` is not a status code or a range like 200-299",
    );
    bad(
        "[200, 1000]",
        "[1]",
        "must be between 100 and 599, found 1000",
    );
    bad(
        "[200, [201]]",
        "[1]",
        "expected a status code (like 200), a range",
    );
    bad(
        "[]",
        "",
        "needs a status code (like 200), a range (like 200-299) or a list",
    );
    bad("\" \"", "", "needs a status code");
    bad(
        "true",
        "",
        "expected a status code (like 200), a range (like 200-299) or a list of \
         them, found the boolean true",
    );
}

#[test]
fn http_digest_and_virtualhost() {
    let h = http_get(
        "{ url: { path: /, digest: 0123456789ABCDEFabcdef0123456789, virtualhost: \
         a.example.org }, virtualhost: '[2001:db8::1]:8080' }",
    );
    assert_eq!(
        h.urls[0].digest,
        Some([
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45,
            0x67, 0x89
        ])
    );
    assert_eq!(h.urls[0].virtualhost.as_deref(), Some("a.example.org"));
    assert_eq!(h.virtualhost.as_deref(), Some("[2001:db8::1]:8080"));
    let path = "virtual_servers[0].real_servers[0].http_get";
    let bad = |http: &str, at: &str, fragment: &str| {
        let text = service("", &format!("http_get: {http}"));
        assert_error(&text, &format!("{path}{at}"), fragment);
        assert_eq!(errors(&text).len(), 1, "one mistake, one error: {http}");
    };
    let digest = |d: &str| format!("{{ url: {{ path: /, digest: {d} }} }}");
    bad(
        &digest("9b3a0c85a887a256d6939da88aabd8c"),
        ".url.digest",
        "`9b3a0c85a887a256d6939da88aabd8c` is 31 characters long: an MD5 digest is 32 \
         hexadecimal digits",
    );
    bad(
        &digest("9b3a0c85a887a256d6939da88aabd8cdd"),
        ".url.digest",
        "is 33 characters long",
    );
    bad(
        &digest("9b3a0c85a887a256d6939da88aabd8cg"),
        ".url.digest",
        "holds `g`, which is not a hexadecimal digit",
    );
    bad(
        &digest("12345678901234567890123456789012"),
        ".url.digest",
        "the digest `12345678901234567890123456789012` reads as a number: put it in quotes",
    );
    bad(
        &digest("12345678901234567890123456789e12"),
        ".url.digest",
        "expected a string, found the number",
    );
    let quoted = http_get("{ url: { path: /, digest: '12345678901234567890123456789012' } }");
    assert_eq!(quoted.urls[0].digest.map(|d| d[0]), Some(0x12));
    bad(
        "{ url: { path: / }, virtualhost: http://www.example.org/ }",
        ".virtualhost",
        "must be a host name only",
    );
    bad(
        "{ url: { path: /, virtualhost: 'www example' } }",
        ".url.virtualhost",
        "must not contain white space",
    );
}

#[test]
fn http_basic_auth() {
    let h = http_get("{ url: { path: / }, auth: { user: lbcheck, password_file: /etc/lb/p } }");
    assert_eq!(
        h.auth,
        Some(HttpAuth {
            user: "lbcheck".into(),
            password: Password::File("/etc/lb/p".into()),
        })
    );
    let h = http_get("{ url: { path: / }, auth: { user: guest, password: 'gu est' } }");
    let auth = h.auth.unwrap();
    assert_eq!(auth.password, Password::Inline(Secret::new("gu est")));
    let shown = format!("{auth:?}");
    assert!(
        !shown.contains("gu est"),
        "Debug shows the password: {shown}"
    );
    let path = "virtual_servers[0].real_servers[0].http_get.auth";
    let bad = |auth: &str, at: &str, fragment: &str| {
        let text = service(
            "",
            &format!("http_get: {{ url: {{ path: / }}, auth: {auth} }}"),
        );
        assert_error(&text, &format!("{path}{at}"), fragment);
        assert_eq!(errors(&text).len(), 1, "one mistake, one error: {auth}");
    };
    bad(
        "{ user: u, password_file: etc/lb/p }",
        ".password_file",
        "`etc/lb/p` must be an absolute path",
    );
    bad(
        "{ user: u, password_file: /etc/lb/ }",
        ".password_file",
        "must name a file",
    );
    bad(
        "{ password_file: /etc/lb/p }",
        ".user",
        "missing required key `user`",
    );
    bad("{ user: u }", "", "missing `password_file`");
    let bare = service("", "http_get: { url: { path: / }, auth: ~ }");
    assert_error(
        &bare,
        &format!("{path}.user"),
        "missing required key `user`",
    );
    assert_error(&bare, path, "missing `password_file`");
    bad(
        "{ user: u, password: p, password_file: /etc/lb/p }",
        ".password_file",
        "give `password` or `password_file`, not both",
    );
    bad(
        "{ user: 'a:b', password: p }",
        ".user",
        "must not contain `:`",
    );
    bad(
        "{ user: u, password_file: }",
        ".password_file",
        "`password_file` needs a value",
    );
    bad(
        "{ user: u, password: }",
        ".password",
        "`password` needs a value",
    );
    let typo = service(
        "",
        "http_get: { url: { path: / }, auth: { user: u, pasword: p } }",
    );
    assert_error(
        &typo,
        &format!("{path}.pasword"),
        "did you mean `password`?",
    );
    // A password in error is never quoted back.
    for (password, fragment) in [
        ("12345", "expected a string (put the password in quotes)"),
        ("\"sec\\nret\"", "must not contain control characters"),
        ("''", "must not be empty"),
    ] {
        let text = service(
            "",
            &format!(
                "http_get: {{ url: {{ path: / }}, auth: {{ user: u, password: {password} }} }}"
            ),
        );
        assert_error(&text, &format!("{path}.password"), fragment);
        let shown = parse(&text).unwrap_err().to_string();
        assert!(
            !shown.contains("12345") && !shown.contains("sec"),
            "the password is shown: {shown}"
        );
    }
}

#[test]
fn every_key_of_a_checker() {
    let real = "tcp_check:\n  connect_ip: 10.0.0.9\n  connect_port: 8080\n  bindto: 10.0.0.1\n  \
                bind_port: 40000\n  connect_timeout: 0.5\n  nb_get_retry: 4\n  \
                delay_before_retry: 1.25\n  warmup: 9";
    let c = ok(&service("", real));
    assert_eq!(
        c.virtual_servers[0].real_servers[0].checks.first().cloned(),
        Some(Checker::Tcp(TcpCheck {
            connect_ip: Some(v4("10.0.0.9")),
            connect_port: Some(8080),
            bindto: Some(v4("10.0.0.1")),
            bind_port: Some(40000),
            probe: None,
            timing: CheckTiming {
                connect_timeout: Duration::from_millis(500),
                retry: 4,
                delay_before_retry: Duration::from_millis(1250),
                warmup: Some(secs(9)),
            },
        }))
    );
}

#[test]
fn aliases() {
    let text = "interface: eth0\nvirtual_servers:\n  - vip: 192.168.0.10\n    port: 80\n    \
                lvs_sched: sh\n    lvs_method: DR\n    real_servers:\n      - ip: 192.168.0.2\n        \
                http_get: { url: { path: / }, nb_get_retry: 7 }\n";
    let c = ok(text);
    let vs = &c.virtual_servers[0];
    assert_eq!(vs.lb_algo, LbAlgo::Sh);
    let Some(Checker::Http(h)) = vs.real_servers[0].checks.first() else {
        panic!("expected an http_get");
    };
    assert_eq!(h.timing.retry, 7);
}

#[test]
fn a_key_and_its_alias_together_are_an_error() {
    assert_error(
        &service("lvs_sched: rr", ""),
        "virtual_servers[0].lvs_sched",
        "both `lb_algo` and its alias `lvs_sched`",
    );
    assert_error(
        &service("lvs_method: dr", ""),
        "virtual_servers[0].lvs_method",
        "both `lb_kind` and its alias `lvs_method`",
    );
    assert_error(
        &service("", "tcp_check: { retry: 1, nb_get_retry: 2 }"),
        "virtual_servers[0].real_servers[0].tcp_check.nb_get_retry",
        "both `retry` and its alias `nb_get_retry`",
    );
}

#[test]
fn enumeration_values_are_case_insensitive() {
    let text =
        service("protocol: UDP", "").replace("lb_algo: rr", "lb_algo: WRR") + "xdp_mode: Driver\n";
    let c = ok(&text);
    assert_eq!(c.xdp_mode, AttachMode::Driver);
    assert_eq!(c.virtual_servers[0].key.proto, Protocol::Udp);
    assert_eq!(c.virtual_servers[0].lb_algo, LbAlgo::Wrr);
    assert_eq!(
        ok("interface: x\nxdp_mode: SKB\n").xdp_mode,
        AttachMode::Skb
    );
}

#[test]
fn keys_are_case_sensitive() {
    assert_error(
        "Interface: eth0\n",
        "Interface",
        "unknown key `Interface`; did you mean `interface`?",
    );
    assert_error(
        &service("", "TCP_CHECK: {}"),
        "virtual_servers[0].real_servers[0].TCP_CHECK",
        "did you mean `tcp_check`?",
    );
}

#[test]
fn persistence() {
    let p = |vs: &str| ok(&service(vs, "")).virtual_servers[0].persistence;
    let mask = |a, b, c, d| Ipv4Addr::new(a, b, c, d);
    assert_eq!(p(""), None);
    let keepalived = Persistence::per_client(360);
    assert_eq!(p("persistence_timeout:"), Some(keepalived));
    assert_eq!(p("persistence_timeout: ~"), Some(keepalived));
    let with = |vs: &str| {
        p(&format!("persistence_timeout: 50\n{vs}"))
            .unwrap()
            .granularity
    };
    assert_eq!(with(""), mask(255, 255, 255, 255));
    assert_eq!(
        with("persistence_granularity: 255.255.255.0"),
        mask(255, 255, 255, 0)
    );
    assert_eq!(with("persistence_granularity: 24"), mask(255, 255, 255, 0));
    assert_eq!(with("persistence_granularity: 16"), mask(255, 255, 0, 0));
    assert_eq!(
        with("persistence_granularity: 32"),
        mask(255, 255, 255, 255)
    );
    assert_eq!(with("persistence_granularity: 0"), mask(0, 0, 0, 0));
    assert_eq!(with("persistence_granularity: 0.0.0.0"), mask(0, 0, 0, 0));
    // Accepted without persistence, where it means nothing.
    assert_eq!(p("persistence_granularity: 24"), None);

    let path = "virtual_servers[0].persistence_granularity";
    assert_error(
        &service("persistence_granularity: 255.0.255.0", ""),
        path,
        "contiguous netmask",
    );
    assert_error(
        &service("persistence_granularity: 33", ""),
        path,
        "between 0 and 32",
    );
    assert_error(
        &service("persistence_granularity: 'ffff:ffff::'", ""),
        path,
        "contiguous netmask",
    );
    assert_error(
        &service("persistence_timeout: 0", ""),
        "virtual_servers[0].persistence_timeout",
        "between 1 and 31536000",
    );
}

/// A valid document with one IPv6 service (2001:db8::10 port 443, real 2001:db8::2); `vs` and
/// `real` are appended as in [`service`].
fn service6(vs: &str, real: &str) -> String {
    service(vs, real)
        .replace("192.168.0.10", "'2001:db8::10'")
        .replace("port: 80", "port: 443")
        .replace("192.168.0.2", "'2001:db8::2'")
}

#[test]
fn ipv6_persistence_granularity_is_a_prefix_length() {
    let p = |vs: &str| ok(&service6(vs, "")).virtual_servers[0].persistence;
    assert_eq!(p(""), None);
    assert_eq!(
        p("persistence_timeout: 50"),
        Some(Persistence::per_client(50)),
        "per client (/128) by default"
    );
    let prefix = |len: &str| {
        p(&format!(
            "persistence_timeout: 50\npersistence_granularity: {len}"
        ))
        .unwrap()
    };
    assert_eq!(prefix("64").prefix6, 64);
    assert_eq!(prefix("1").prefix6, 1);
    assert_eq!(prefix("128").prefix6, 128);
    assert_eq!(
        prefix("48").granularity,
        Ipv4Addr::BROADCAST,
        "the IPv4 netmask stays per client"
    );

    let path = "virtual_servers[0].persistence_granularity";
    let bad = |value: &str, fragment: &str| {
        assert_error(
            &service6(
                &format!("persistence_timeout: 50\npersistence_granularity: {value}"),
                "",
            ),
            path,
            fragment,
        );
    };
    bad("0", "between 1 and 128");
    bad("129", "between 1 and 128");
    bad("255.255.255.0", "prefix length from 1 to 128");
    bad("'ffff:ffff:ffff:ffff::'", "prefix length from 1 to 128");
    bad("'64'", "(remove the quotes)");
    bad("[64]", "prefix length from 1 to 128, like 64, found a list");
    // An IPv4 service keeps its netmask, and refuses an IPv6 prefix length.
    assert_error(
        &service("persistence_timeout: 50\npersistence_granularity: 64", ""),
        path,
        "between 0 and 32",
    );
}

#[test]
fn ipv6_services_and_dual_stack() {
    let c = ok(&service6(
        "persistence_timeout: 300\npersistence_granularity: 56\nsorry_server: '2001:db8::99'",
        "tcp_check: { connect_ip: '2001:db8:1::2', bindto: '2001:db8:1::1' }",
    ));
    let vs = &c.virtual_servers[0];
    assert_eq!(
        vs.key,
        ServiceKey {
            vip: v4("2001:db8::10"),
            port: 443,
            proto: Protocol::Tcp,
        }
    );
    assert_eq!(vs.real_servers[0].key.addr, v4("2001:db8::2"));
    assert_eq!(vs.real_servers[0].key.port, 443);
    assert_eq!(vs.sorry_server.unwrap().addr, v4("2001:db8::99"));
    assert_eq!(vs.persistence.unwrap().prefix6, 56);
    let Some(Checker::Tcp(t)) = vs.real_servers[0].checks.first() else {
        panic!("a tcp_check");
    };
    assert_eq!(t.connect_ip, Some(v4("2001:db8:1::2")));
    assert_eq!(t.bindto, Some(v4("2001:db8:1::1")));

    // IPv4 and IPv6 services side by side, unquoted addresses included, one VIP port each.
    let dual = ok("interface: eth0
virtual_servers:
  - vip: 192.168.0.10
    port: 80
    lb_kind: dr
    real_servers: [{ ip: 192.168.0.2 }]
  - vip: 2001:db8::10
    port: 80
    protocol: udp
    lb_kind: dr
    real_servers: [{ ip: 2001:db8::2 }, { ip: 'fd00::3' }]
  - vip: 2001:db8::10
    port: 80
    lb_kind: dr
    real_servers: [{ ip: 2001:db8::2 }]
");
    let vips: Vec<String> = dual
        .virtual_servers
        .iter()
        .map(|v| v.key.to_string())
        .collect();
    assert_eq!(
        vips,
        [
            "TCP 192.168.0.10:80",
            "UDP [2001:db8::10]:80",
            "TCP [2001:db8::10]:80"
        ]
    );
    assert_eq!(dual.virtual_servers[1].real_servers.len(), 2);
    assert_eq!(ok(&dual.to_yaml()), dual);
}

#[test]
fn lb_kind() {
    let path = "virtual_servers[0].lb_kind";
    let without = service("", "").replace("    lb_kind: dr\n", "");
    assert_error(
        &without,
        path,
        "lb_kind is not set, and keepalived's default NAT is not supported: this balancer does \
         direct routing (set lb_kind: dr)",
    );
    let with = |kind: &str| service("", "").replace("lb_kind: dr", &format!("lb_kind: {kind}"));
    assert_error(
        &with("NAT"),
        path,
        "lb_kind NAT is not supported: this balancer does direct routing (set lb_kind: dr)",
    );
    assert_error(&with("tun"), path, "lb_kind TUN is not supported");
    assert_error(&with("fullnat"), path, "unknown lb_kind `fullnat`");
    ok(&with("DR"));
    ok(&with("Dr"));
}

#[test]
fn lb_algo() {
    let path = "virtual_servers[0].lb_algo";
    let without = service("", "").replace("    lb_algo: rr\n", "");
    assert_eq!(
        ok(&without).virtual_servers[0].lb_algo,
        LbAlgo::Wlc,
        "keepalived's default"
    );
    let with = |algo: &str| service("", "").replace("lb_algo: rr", &format!("lb_algo: {algo}"));
    for algo in ["lblc", "lblcr"] {
        assert_error(
            &with(algo),
            path,
            &format!("lb_algo {algo} is not supported"),
        );
    }
    assert_error(&with("fastest"), path, "unknown scheduler `fastest`");
    for (name, algo) in [
        ("rr", LbAlgo::Rr),
        ("wrr", LbAlgo::Wrr),
        ("mh", LbAlgo::Mh),
        ("sh", LbAlgo::Sh),
        ("lc", LbAlgo::Lc),
        ("wlc", LbAlgo::Wlc),
        ("sed", LbAlgo::Sed),
        ("nq", LbAlgo::Nq),
        ("fo", LbAlgo::Fo),
        ("OVF", LbAlgo::Ovf),
        ("twos", LbAlgo::Twos),
    ] {
        assert_eq!(ok(&with(name)).virtual_servers[0].lb_algo, algo);
    }
}

#[test]
fn lb_algo_names() {
    for algo in LbAlgo::ALL {
        assert_eq!(algo.name().parse::<LbAlgo>(), Ok(algo));
        assert_eq!(algo.name().to_uppercase().parse::<LbAlgo>(), Ok(algo));
        assert_eq!(algo.to_string(), algo.name());
        assert_eq!(algo.scheduler().is_some(), algo.supported());
    }
    assert_eq!(LbAlgo::Sh.scheduler(), Some(Scheduler::SourceHash));
    assert_eq!(LbAlgo::Wrr.scheduler(), Some(Scheduler::Maglev));
    assert_eq!(
        "lblc".parse::<LbAlgo>(),
        Err(LbAlgoError::NotSupported("lblc".into()))
    );
    assert_eq!("x".parse::<LbAlgo>(), Err(LbAlgoError::Unknown("x".into())));
    assert_eq!(
        served_schedulers(),
        "rr, wrr, mh, sh, dh, lc, wlc, sed, nq, fo, ovf or twos"
    );
}

#[test]
fn sorry_server_forms() {
    let sorry =
        |s: &str| ok(&service(&format!("sorry_server: {s}"), "")).virtual_servers[0].sorry_server;
    let key = Some(RealKey {
        addr: v4("192.168.0.99"),
        port: 80,
    });
    assert_eq!(sorry("\"192.168.0.99 80\""), key);
    assert_eq!(sorry("192.168.0.99"), key);
    assert_eq!(sorry("{ ip: 192.168.0.99 }"), key);
    assert_eq!(sorry("{ ip: 192.168.0.99, port: 80 }"), key);
    let path = "virtual_servers[0].sorry_server";
    assert_error(
        &service("sorry_server: 192.168.0.99 81", ""),
        path,
        "must equal the virtual server's port",
    );
    assert_error(
        &service("sorry_server: { ip: 192.168.0.99, port: 81 }", ""),
        &format!("{path}.port"),
        "must equal the virtual server's port",
    );
    assert_error(
        &service("sorry_server: 192.168.0.300 80", ""),
        path,
        "not a valid IP address",
    );
    assert_error(
        &service("sorry_server: \"::1 80\"", ""),
        path,
        "not a unicast address",
    );
    assert_error(
        &service("sorry_server: \"2001:db8::1 80\"", ""),
        path,
        "address families",
    );
}

#[test]
fn unknown_keys_get_a_suggestion() {
    assert_error(
        &service("protocal: tcp", ""),
        "virtual_servers[0].protocal",
        "unknown key `protocal`; did you mean `protocol`?",
    );
    assert_error(
        &service("persistence: 50", ""),
        "virtual_servers[0].persistence",
        "did you mean `persistence_timeout`?",
    );
    assert_error(
        "interface: eth0\nvirtual_server: []\n",
        "virtual_server",
        "did you mean `virtual_servers`?",
    );
    let errs = errors("interface: eth0\nfrobnicate: 1\n");
    assert_eq!(errs[0].path, "frobnicate");
    assert!(!errs[0].message.contains("did you mean"), "{errs:?}");
}

#[test]
fn all_errors_are_reported_in_document_order() {
    let text = "\
interface: eth0
bogus: 1
virtual_servers:
  - vip: 192.168.0.300
    port: 0
    lb_algo: lblc
    lb_kind: nat
    real_servers:
      - ip: 192.168.0.2
        weight: -1
      - ip: 192.168.0.3
        port: 81
limits:
  max_services: 0
";
    let errs = errors(text);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "bogus",
            "virtual_servers[0].vip",
            "virtual_servers[0].port",
            "virtual_servers[0].lb_algo",
            "virtual_servers[0].lb_kind",
            "virtual_servers[0].real_servers[0].weight",
            "limits.max_services",
        ],
        "{errs:#?}"
    );
}

#[test]
fn cross_checks() {
    let two = |a: &str, b: &str| {
        format!(
            "interface: eth0\nvirtual_servers:\n  - {{ vip: 192.168.0.10, {a}, lb_algo: rr, lb_kind: dr }}\n  \
             - {{ vip: 192.168.0.10, {b}, lb_algo: rr, lb_kind: dr }}\n"
        )
    };
    assert_error(
        &two("port: 80", "port: 80"),
        "virtual_servers[1]",
        "virtual_servers[0] has the same vip, port and protocol",
    );
    ok(&two("port: 80", "port: 80, protocol: udp"));
    ok(&two("port: 80", "port: 81"));

    let reals =
        "real_servers: [{ ip: 192.168.0.2 }, { ip: 192.168.0.3 }, { ip: 192.168.0.2, port: 80 }]";
    assert_error(
        &service(reals, "").replace("    real_servers:\n      - ip: 192.168.0.2\n", ""),
        "virtual_servers[0].real_servers[2]",
        "real_servers[0] is the same",
    );

    let limits = "limits: { max_services: 1 }\n";
    assert_error(
        &(two("port: 80", "port: 81") + limits),
        "virtual_servers",
        "2 virtual servers, but limits.max_services is 1",
    );
    let limits = "limits: { max_reals: 2 }\n";
    let text = service("", "").replace(
        "      - ip: 192.168.0.2\n",
        "      - ip: 192.168.0.2\n      - ip: 192.168.0.3\n",
    );
    assert_error(
        &(text + limits),
        "virtual_servers",
        "allows at most 1 (index 0 is reserved)",
    );
    ok(&(service("", "") + "limits: { max_reals: 2 }\n"));

    let limits = "limits: { max_table_size: 257 }\n";
    assert_error(
        &(service("", "") + limits),
        "virtual_servers[0].table_size",
        "its default 65537 is larger than limits.max_table_size (257)",
    );
    assert_eq!(
        ok(&(service("table_size: 251", "") + limits)).virtual_servers[0].table_size,
        251
    );
    assert_error(
        &(service("table_size: 263", "") + limits),
        "virtual_servers[0].table_size",
        "263 is larger than limits.max_table_size (257); raise it",
    );
    assert_error(
        &service("table_size: 65536", ""),
        "virtual_servers[0].table_size",
        "not a prime number (Maglev needs a prime table size); the nearest primes are 65521 and 65537",
    );
    assert_error(
        &service("table_size: 5", ""),
        "virtual_servers[0].table_size",
        "at least 7",
    );
    assert_error(
        "interface: eth0\nlimits: { max_table_size: 1000033 }\n",
        "limits.max_table_size",
        "larger than 1000003",
    );
    assert_error(
        "interface: eth0\nlimits: { max_table_size: 1000 }\n",
        "limits.max_table_size",
        "not a prime",
    );
    // A wrong limit is reported once, not again by every service that depends on it.
    let errs = errors(&(service("", "") + "limits: { max_table_size: 1000 }\n"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
}

#[test]
fn real_servers() {
    let path = "virtual_servers[0].real_servers[0]";
    assert_error(
        &service("", "port: 8080"),
        &format!("{path}.port"),
        "must equal the virtual server's port (80), found 8080",
    );
    assert_error(
        &service("", "weight: 65536"),
        &format!("{path}.weight"),
        "between 0 and 65535",
    );
    assert_eq!(
        ok(&service("", "weight: 0")).virtual_servers[0].real_servers[0].weight,
        0
    );
    // Several checkers on one real, as keepalived allows.
    let kinds: Vec<&str> = ok(&service(
        "",
        "tcp_check: {}\nhttp_get: { url: { path: / } }",
    ))
    .virtual_servers[0]
        .real_servers[0]
        .checks
        .iter()
        .map(Checker::key)
        .collect();
    assert_eq!(kinds, ["tcp_check", "http_get"]);
    assert_error(
        &service("", "http_get: { url: { path: health } }"),
        &format!("{path}.http_get.url.path"),
        "must start with `/`",
    );
    assert_error(
        &service("", "http_get: { url: [{ path: /, status_code: 600 }] }"),
        &format!("{path}.http_get.url[0].status_code"),
        "between 100 and 599",
    );
    assert_error(
        &service("", "http_get: { connect_timeout: 2 }"),
        &format!("{path}.http_get.url"),
        "missing required key `url`",
    );
    assert_error(
        &service("", "misc_check: { misc_timeout: 3 }"),
        &format!("{path}.misc_check.misc_path"),
        "missing required key `misc_path`",
    );
    assert_error(
        &service("", "misc_check: { misc_path: '' }"),
        &format!("{path}.misc_check.misc_path"),
        "must not be empty",
    );
    assert_error(
        &service("", "tcp_check: { connect_timeout: 0 }"),
        &format!("{path}.tcp_check.connect_timeout"),
        "between 0.001 and 3600",
    );
    assert_error(
        &service("", "tcp_check: { bindto: '2001:db8::1' }"),
        &format!("{path}.tcp_check.bindto"),
        "address families differ",
    );
    assert_error(
        &service("", "tcp_check: { connect_port: 0 }"),
        &format!("{path}.tcp_check.connect_port"),
        "between 1 and 65535",
    );
    assert_error(
        &service("", "inhibit_on_failure:"),
        &format!("{path}.inhibit_on_failure"),
        "needs true or false",
    );
}

#[test]
fn addresses() {
    // A real must have its VIP's address family, either way.
    assert_error(
        &service("", "").replace("ip: 192.168.0.2", "ip: '2001:db8::2'"),
        "virtual_servers[0].real_servers[0].ip",
        "2001:db8::2 and the vip 192.168.0.10 are of different address families",
    );
    assert_error(
        &service6("", "").replace("ip: '2001:db8::2'", "ip: 192.168.0.2"),
        "virtual_servers[0].real_servers[0].ip",
        "192.168.0.2 and the vip 2001:db8::10 are of different address families",
    );
    assert_error(
        &service6("sorry_server: { ip: 192.168.0.99 }", ""),
        "virtual_servers[0].sorry_server.ip",
        "different address families",
    );
    assert_error(
        &service6("sorry_server: 192.168.0.99 443", ""),
        "virtual_servers[0].sorry_server",
        "different address families",
    );
    assert_error(
        &service6("", "").replace("'2001:db8::10'", "'::1'"),
        "virtual_servers[0].vip",
        "not a unicast address",
    );
    assert_error(
        &service6("", "").replace("'2001:db8::2'", "'ff02::1'"),
        "virtual_servers[0].real_servers[0].ip",
        "not a unicast address",
    );
    assert_error(
        &service6("", "").replace("'2001:db8::10'", "'2001:db8::g'"),
        "virtual_servers[0].vip",
        "not a valid IP address",
    );
    assert_error(
        &service("", "").replace("192.168.0.10", "192.168.0.256"),
        "virtual_servers[0].vip",
        "not a valid IP address",
    );
    assert_error(
        &service("", "").replace("192.168.0.10", "0.0.0.0"),
        "virtual_servers[0].vip",
        "not a unicast address",
    );
    assert_error(
        &service("", "").replace("ip: 192.168.0.2", "ip: 80"),
        "virtual_servers[0].real_servers[0].ip",
        "expected an IP address, found the number 80",
    );
}

#[test]
fn top_level_fields() {
    assert_error(
        "xdp_mode: auto\n",
        "interface",
        "missing required key `interface`",
    );
    assert_error("interface:\n", "interface", "`interface` needs a value");
    assert_error(
        "interface: averyveryverylongname\n",
        "interface",
        "at most 15",
    );
    assert_error(
        "interface: eth0\nxdp_mode: native\n",
        "xdp_mode",
        "unknown xdp_mode `native`; use driver, skb or auto",
    );
    assert_error(
        "interface: eth0\ninstance: a/b\n",
        "instance",
        "instance name `a/b`",
    );
    assert_error(
        "interface: eth0\ninstance: 7\n",
        "instance",
        "expected a string, found the number 7 (put it in quotes)",
    );
    assert_eq!(
        ok("interface: eth0\ninstance: '7'\n").control_socket,
        PathBuf::from("/run/lb-xdp/7.sock")
    );
    assert_error(
        "interface: eth0\ncontrol_socket: run/x.sock\n",
        "control_socket",
        "absolute path",
    );
    assert_error(
        "interface: eth0\nmetrics_listen: localhost\n",
        "metrics_listen",
        "not an address:port",
    );
    assert_error(
        "interface: eth0\nmanage_vip: yes\n",
        "manage_vip",
        "expected true or false, found the string \"yes\"",
    );
    assert_error(
        "interface: eth0\ntimeouts: { tcp: 0 }\n",
        "timeouts.tcp",
        "between 1 and 86400",
    );
    assert_error(
        "interface: eth0\nvirtual_servers: {}\n",
        "virtual_servers",
        "expected a list",
    );
    assert_error("- a\n", "", "expected a mapping");
    assert_error(
        "interface: eth0\nlimits: { conn_entries: '100' }\n",
        "limits.conn_entries",
        "(remove the quotes)",
    );
    let c = ok(
        "interface: eth0\nmetrics_listen: '[::1]:9101'\nlimits: { max_services: 1, max_reals: 2, \
         max_table_size: 7, conn_entries: 16, persist_entries: 16 }\n",
    );
    assert_eq!(
        c.metrics_listen,
        Some(SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], 9101)))
    );
    assert_eq!(
        c.limits,
        Limits {
            max_services: 1,
            max_reals: 2,
            max_table_size: 7,
            conn_entries: 16,
            persist_entries: 16,
            ..Limits::default()
        }
    );
    let c = ok("interface: eth0\nlimits: { conn_entries6: 4096, persist_entries6: 16 }\n");
    assert_eq!(
        (c.limits.conn_entries6, c.limits.persist_entries6),
        (4096, 16)
    );
    assert_eq!(c.limits.conn_entries, Limits::default().conn_entries);
    assert_eq!((c.limits.conn6_sets(), c.limits.persist6_sets()), (1024, 4));
    assert_eq!(
        (
            Limits::default().conn_entries6,
            Limits::default().persist_entries6
        ),
        (1 << 18, 1 << 14)
    );
    assert_error(
        "interface: eth0\nlimits: { conn_entries6: 8 }\n",
        "limits.conn_entries6",
        "between 16 and 67108864",
    );
    assert_error(
        "interface: eth0\nlimits: { persist_entries6: 16777217 }\n",
        "limits.persist_entries6",
        "between 16 and 16777216",
    );
    assert_error(
        "interface: eth0\nlimits: { conn_entries_6: 8 }\n",
        "limits.conn_entries_6",
        "conn_entries6",
    );
}

#[test]
fn virtual_server_fields() {
    let path = "virtual_servers[0]";
    assert_error(
        &service("", "").replace("    port: 80\n", ""),
        &format!("{path}.port"),
        "missing required key `port`",
    );
    assert_error(
        &service("", "").replace("port: 80", "port: 65536"),
        &format!("{path}.port"),
        "between 1 and 65535",
    );
    assert_error(
        &service("protocol: sctp", ""),
        &format!("{path}.protocol"),
        "unknown protocol `sctp`; use tcp or udp",
    );
    assert_error(
        &service("delay_loop: 0", ""),
        &format!("{path}.delay_loop"),
        "between 1 and 86400",
    );
    assert_error(
        &service("alpha:", ""),
        &format!("{path}.alpha"),
        "`alpha: true`",
    );
    assert_error(
        &service("quorum: 2\nhysteresis: 2", ""),
        &format!("{path}.hysteresis"),
        "less than quorum (2)",
    );
    assert_error(
        &service("quorum_up: ''", ""),
        &format!("{path}.quorum_up"),
        "must not be empty",
    );
    assert_error(
        &service("real_servers: x", "").replace("    real_servers:\n      - ip: 192.168.0.2\n", ""),
        &format!("{path}.real_servers"),
        "expected a list",
    );
    let vs = ok(&service(
        "quorum: 3\nhysteresis: 2\nalpha: true\nomega: true\ninhibit_on_failure: true\nwarmup: 0",
        "",
    ))
    .virtual_servers[0]
        .clone();
    assert_eq!(
        (
            vs.quorum,
            vs.hysteresis,
            vs.alpha,
            vs.omega,
            vs.inhibit_on_failure
        ),
        (3, 2, true, true, true)
    );
    assert_eq!(vs.warmup, Some(Duration::ZERO));
    // No reals at all is allowed (the sorry server, or nothing, takes the traffic).
    let c = ok(&service("", "").replace("    real_servers:\n      - ip: 192.168.0.2\n", ""));
    assert!(c.virtual_servers[0].real_servers.is_empty());
}

#[test]
fn yaml_merge_keys_share_settings() {
    let text = "\
interface: eth0
virtual_servers:
  - &svc { vip: 192.168.0.10, port: 80, lb_algo: wrr, lb_kind: dr, delay_loop: 6 }
  - { <<: *svc, port: 443 }
";
    let c = ok(text);
    assert_eq!(c.virtual_servers[1].key.port, 443);
    assert_eq!(c.virtual_servers[1].delay_loop, secs(6));
}

#[test]
fn syntax_errors_have_a_line_and_column() {
    let errs = errors("interface: eth0\nvirtual_servers: [\n");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "");
    assert!(errs[0].message.contains("line 3 column 1"), "{errs:?}");
    let errs = errors("interface: eth0\ninterface: eth1\n");
    assert!(
        errs[0].message.contains("duplicate") && errs[0].message.contains("line"),
        "{errs:?}"
    );
}

#[test]
fn display_names_the_file_and_the_path() {
    let e = parse("interface: eth0\nxdp_mode: x\ntimeouts: { udp: 0 }\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "test.yaml: xdp_mode: unknown xdp_mode `x`; use driver, skb or auto\n\
         test.yaml: timeouts.udp: must be between 1 and 86400, found 0"
    );
    let e = parse("a: [").unwrap_err();
    assert!(
        e.to_string().starts_with("test.yaml: invalid YAML: "),
        "{e}"
    );
}

#[test]
fn an_unreadable_file_is_a_config_error() {
    let path = Path::new("/nonexistent/lb-agent.yaml");
    let e = Config::from_file(path).unwrap_err();
    assert_eq!(e.file, path);
    assert_eq!(e.errors.len(), 1);
    assert_eq!(e.errors[0].path, "");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/lb-agent.yaml: cannot read the file"),
        "{e}"
    );
}

/// A configuration that sets every key to a value other than its default.
const EVERY_KEY: &str = r#"
interface: bond0.100
xdp_mode: driver
instance: edge-1
manage_vip: true
keep_forwarding_on_stop: true
control_socket: /run/edge/ctl.sock
metrics_listen: "[::1]:9200"
limits:
  max_services: 8
  max_reals: 64
  max_table_size: 4099
  conn_entries: 4096
  persist_entries: 1024
  conn_entries6: 2048
  persist_entries6: 512
timeouts: { tcp: 3600, tcpfin: 60, udp: 30 }
sync:
  id: 42
  key_file: /etc/edge/sync.key
  port: 9000
  group: ff02::1:81
  interface: bond0.200
  peers: [10.9.0.2, "2001:db8:9::3"]
  ttl: 4
  startup_wait: 0
  refresh: 20
virtual_servers:
  - vip: 10.1.0.1
    port: 53
    protocol: udp
    lvs_sched: sh
    lvs_method: dr
    persistence_timeout:
    persistence_granularity: 24
    table_size: 4099
    delay_loop: 5
    warmup: 3
    alpha: true
    omega: true
    inhibit_on_failure: true
    quorum: 2
    hysteresis: 1
    quorum_up: /bin/up
    quorum_down: /bin/down
    sorry_server: "10.1.0.99"
    real_servers:
      - ip: 10.1.0.2
        weight: 0
        inhibit_on_failure: false
        notify_up: /bin/rs-up
        notify_down: /bin/rs-down
        misc_check: { misc_path: "/bin/check 53", warmup: 1 }
      - ip: 10.1.0.3
        weight: 100
        uthreshold: 5000
        lthreshold: 4000
        tcp_check:
          connect_ip: 10.9.0.3
          connect_port: 5353
          bindto: 10.9.0.1
          bind_port: 1053
          connect_timeout: 0.25
          nb_get_retry: 2
          delay_before_retry: 0
          warmup: 4
  - vip: 10.1.0.1
    port: 443
    lb_algo: mh
    lb_kind: DR
    table_size: 1031
    real_servers:
      - ip: 10.1.0.2
        http_get:
          url:
            - path: /healthz
              status_code: [200-204, 301, "400-499"]
              digest: 9B3A0C85a887a256d6939da88aabd8cd
              virtualhost: health.example.org
            - { path: "/ready?x=1", status_code: 204 }
          virtualhost: www.example.org:8443
          auth: { user: lbcheck, password_file: /etc/edge/check.password }
          connect_port: 8443
          connect_timeout: 2
          retry: 0
  - vip: 2001:db8::1
    port: 443
    lb_algo: wlc
    lb_kind: dr
    persistence_timeout: 600
    persistence_granularity: 64
    table_size: 1031
    sorry_server: { ip: '2001:db8::99' }
    real_servers:
      - ip: 2001:db8::2
        http_get:
          url: { path: /healthz }
          auth: { user: monitor, password: "0123" }
          connect_ip: 2001:db8:1::2
          bindto: 2001:db8:1::1
"#;

#[test]
fn every_key_is_read() {
    let tcp = |port| ServiceKey {
        vip: v4("10.1.0.1"),
        port,
        proto: Protocol::Tcp,
    };
    let real = |addr: &str, port, weight, check| RealServer {
        key: RealKey {
            addr: v4(addr),
            port,
        },
        weight,
        thresholds: Thresholds::default(),
        inhibit_on_failure: None,
        notify_up: None,
        notify_down: None,
        checks: vec![check],
    };
    let plain = |key, lb_algo, table_size, real_servers| VirtualServer {
        key,
        lb_algo,
        lb_flags: SchedFlags::default(),
        persistence: None,
        table_size,
        delay_loop: secs(60),
        warmup: None,
        alpha: false,
        omega: false,
        inhibit_on_failure: false,
        quorum: 1,
        hysteresis: 0,
        quorum_up: None,
        quorum_down: None,
        sorry_server: None,
        real_servers,
        group: None,
    };
    let misc = Checker::Misc(MiscCheck {
        misc_path: "/bin/check 53".into(),
        dynamic: false,
        misc_timeout: secs(5),
        warmup: Some(secs(1)),
    });
    let tcp_check = Checker::Tcp(TcpCheck {
        connect_ip: Some(v4("10.9.0.3")),
        connect_port: Some(5353),
        bindto: Some(v4("10.9.0.1")),
        bind_port: Some(1053),
        probe: None,
        timing: CheckTiming {
            connect_timeout: Duration::from_millis(250),
            retry: 2,
            delay_before_retry: Duration::ZERO,
            warmup: Some(secs(4)),
        },
    });
    let http = Checker::Http(HttpCheck {
        urls: vec![
            UrlCheck {
                status_code: StatusCodes::new(vec![(200, 204), (301, 301), (400, 499)]).unwrap(),
                digest: Some([
                    0x9b, 0x3a, 0x0c, 0x85, 0xa8, 0x87, 0xa2, 0x56, 0xd6, 0x93, 0x9d, 0xa8, 0x8a,
                    0xab, 0xd8, 0xcd,
                ]),
                virtualhost: Some("health.example.org".into()),
                ..url("/healthz", StatusCodes::any_2xx())
            },
            url("/ready?x=1", StatusCodes::one(204)),
        ],
        virtualhost: Some("www.example.org:8443".into()),
        probe: None,
        auth: Some(HttpAuth {
            user: "lbcheck".into(),
            password: Password::File("/etc/edge/check.password".into()),
        }),
        tls: None,
        connect_ip: None,
        connect_port: Some(8443),
        bindto: None,
        bind_port: None,
        timing: CheckTiming {
            connect_timeout: secs(2),
            retry: 0,
            ..CheckTiming::default()
        },
    });
    let dns = VirtualServer {
        persistence: Some(Persistence {
            timeout: 360,
            granularity: Ipv4Addr::new(255, 255, 255, 0),
            prefix6: 128,
        }),
        delay_loop: secs(5),
        warmup: Some(secs(3)),
        alpha: true,
        omega: true,
        inhibit_on_failure: true,
        quorum: 2,
        hysteresis: 1,
        quorum_up: Some("/bin/up".into()),
        quorum_down: Some("/bin/down".into()),
        sorry_server: Some(RealKey {
            addr: v4("10.1.0.99"),
            port: 53,
        }),
        real_servers: vec![
            RealServer {
                inhibit_on_failure: Some(false),
                notify_up: Some("/bin/rs-up".into()),
                notify_down: Some("/bin/rs-down".into()),
                ..real("10.1.0.2", 53, 0, misc)
            },
            RealServer {
                thresholds: Thresholds {
                    upper: 5000,
                    lower: 4000,
                },
                ..real("10.1.0.3", 53, 100, tcp_check)
            },
        ],
        ..plain(
            ServiceKey {
                proto: Protocol::Udp,
                ..tcp(53)
            },
            LbAlgo::Sh,
            4099,
            Vec::new(),
        )
    };
    let https = plain(
        tcp(443),
        LbAlgo::Mh,
        1031,
        vec![real("10.1.0.2", 443, 1, http)],
    );
    let http6 = Checker::Http(HttpCheck {
        urls: vec![url("/healthz", StatusCodes::any_2xx())],
        virtualhost: None,
        auth: Some(HttpAuth {
            user: "monitor".into(),
            password: Password::Inline(Secret::new("0123")),
        }),
        probe: None,
        tls: None,
        connect_ip: Some(v4("2001:db8:1::2")),
        connect_port: None,
        bindto: Some(v4("2001:db8:1::1")),
        bind_port: None,
        timing: CheckTiming::default(),
    });
    let https6 = VirtualServer {
        persistence: Some(Persistence {
            prefix6: 64,
            ..Persistence::per_client(600)
        }),
        sorry_server: Some(RealKey {
            addr: v4("2001:db8::99"),
            port: 443,
        }),
        ..plain(
            ServiceKey {
                vip: v4("2001:db8::1"),
                ..tcp(443)
            },
            LbAlgo::Wlc,
            1031,
            vec![real("2001:db8::2", 443, 1, http6)],
        )
    };
    let expected = Config {
        interface: "bond0.100".into(),
        xdp_mode: AttachMode::Driver,
        instance: "edge-1".into(),
        manage_vip: true,
        keep_forwarding_on_stop: true,
        control_socket: "/run/edge/ctl.sock".into(),
        metrics_listen: Some("[::1]:9200".parse().unwrap()),
        limits: Limits {
            max_services: 8,
            max_reals: 64,
            max_table_size: 4099,
            conn_entries: 4096,
            persist_entries: 1024,
            conn_entries6: 2048,
            persist_entries6: 512,
        },
        timeouts: Timeouts {
            tcp: 3600,
            tcpfin: 60,
            udp: 30,
        },
        sync: Some(SyncConfig {
            id: 42,
            key_file: "/etc/edge/sync.key".into(),
            port: 9000,
            group: Some(v4("ff02::1:81")),
            interface: Some("bond0.200".into()),
            peers: vec![v4("10.9.0.2"), v4("2001:db8:9::3")],
            ttl: 4,
            startup_wait: Duration::ZERO,
            refresh: secs(20),
        }),
        virtual_servers: vec![dns, https, https6],
    };
    assert_eq!(ok(EVERY_KEY), expected);
}

#[test]
fn to_yaml_round_trips() {
    let c = ok(EVERY_KEY);
    assert_eq!(c.virtual_servers[0].persistence.unwrap().timeout, 360);
    let yaml = c.to_yaml();
    let again = ok(&yaml);
    assert_eq!(again, c, "canonical form:\n{yaml}");
    assert_eq!(again.to_yaml(), yaml, "the canonical form is stable");
    for c in [
        ok(BRIEF_EXAMPLE),
        ok("interface: eth0\n"),
        ok(&service("", "")),
        ok(&format!("{SYNC}group: 224.0.0.81\n")),
        ok(&format!("{SYNC}peers: [10.0.0.2]\n")),
    ] {
        assert_eq!(ok(&c.to_yaml()), c);
    }
}

#[test]
fn to_yaml_writes_keepalived_names() {
    let yaml = ok(EVERY_KEY).to_yaml();
    for key in [
        "lb_algo: sh",
        "lb_kind: dr",
        "persistence_timeout: 360",
        "persistence_granularity: 255.255.255.0",
        "persistence_granularity: 64",
        "conn_entries6: 2048",
        "persist_entries6: 512",
        "key_file: /etc/edge/sync.key",
        "startup_wait: 0",
        "refresh: 20",
        "connect_timeout: 0.25",
        "misc_timeout: 5",
        "status_code: 200-299",
        "- 200-204\n",
        "digest: 9b3a0c85a887a256d6939da88aabd8cd",
        "virtualhost: www.example.org:8443",
        "password_file: /etc/edge/check.password",
        "password: '0123'",
    ] {
        assert!(yaml.contains(key), "{key} missing from:\n{yaml}");
    }
}

#[test]
fn type_errors_give_the_right_hint() {
    let msg = |text: &str| errors(text)[0].message.clone();
    assert_eq!(
        msg("interface: eth0\ntimeouts: { tcp: \"90\" }\n"),
        "expected a whole number, found the string \"90\" (remove the quotes)"
    );
    assert_eq!(
        msg("interface: eth0\ntimeouts: { tcp: -5 }\n"),
        "must be between 1 and 86400, found -5"
    );
    assert_eq!(
        msg("interface: eth0\ntimeouts: { tcp: 1.5 }\n"),
        "expected a whole number, found the number 1.5"
    );
    assert_eq!(
        msg("interface: 42\n"),
        "expected a string, found the number 42 (put it in quotes)"
    );
    assert_eq!(
        msg("interface: eth0\nmanage_vip: on\n"),
        "expected true or false, found the string \"on\" (only true and false are booleans)"
    );
    assert_eq!(
        msg("interface: eth0\nmanage_vip: 1\n"),
        "expected true or false, found the number 1"
    );
}

/// A document with a `sync` section holding only its key file; the test appends the section's
/// other keys, indented two spaces.
const SYNC: &str = "interface: eth0\nsync:\n  key_file: /etc/lb-xdp/sync.key\n  ";

#[test]
fn sync_defaults() {
    let c = ok(&format!("{SYNC}group: 224.0.0.81\n"));
    assert_eq!(
        c.sync,
        Some(SyncConfig {
            id: 0,
            key_file: "/etc/lb-xdp/sync.key".into(),
            port: 8849,
            group: Some(v4("224.0.0.81")),
            interface: None,
            peers: Vec::new(),
            ttl: 1,
            startup_wait: secs(3),
            refresh: secs(120),
        })
    );
    // Unicast peers alone, of both families; the key file is not read (validation is pure).
    let c = ok(&format!(
        "{SYNC}peers:\n    - 10.0.0.2\n    - 2001:db8::3\n    - 127.0.0.1\n"
    ));
    let sync = c.sync.expect("sync");
    assert_eq!(
        sync.peers,
        [v4("10.0.0.2"), v4("2001:db8::3"), v4("127.0.0.1")]
    );
    assert_eq!(sync.group, None);
    // Both, and the limits of each range.
    let c = ok(&format!(
        "{SYNC}group: 239.1.2.3\n  peers: [10.0.0.2]\n  id: 255\n  ttl: 255\n  \
         startup_wait: 60\n  refresh: 10\n  port: 1\n"
    ));
    let sync = c.sync.expect("sync");
    assert_eq!((sync.id, sync.ttl, sync.port), (255, 255, 1));
    assert_eq!((sync.startup_wait, sync.refresh), (secs(60), secs(10)));
    // refresh must stay below timeouts.tcp and timeouts.udp, whose defaults are 900 and 300.
    let c = ok(&format!("{SYNC}group: 224.0.0.81\n  refresh: 299\n"));
    assert_eq!(c.sync.unwrap().refresh, secs(299));
}

#[test]
fn sync_mistakes() {
    let group = "group: 224.0.0.81\n";
    // Without a group or peers no director hears another: the error names both keys.
    for rest in ["id: 1\n", "peers: []\n", "peers:\n", "group:\n"] {
        assert_error(
            &format!("{SYNC}{rest}"),
            "sync",
            "needs a multicast `group`, a list of `peers`, or both",
        );
    }
    assert_error(
        "interface: eth0\nsync:\n",
        "sync.key_file",
        "missing required key `key_file`",
    );
    assert_error(
        "interface: eth0\nsync:\n",
        "sync",
        "needs a multicast `group`",
    );
    assert_error(
        &format!("interface: eth0\nsync:\n  key_file: ' '\n  {group}"),
        "sync.key_file",
        "must not be empty",
    );
    assert_error(
        &format!("interface: eth0\nsync:\n  key_file:\n  {group}"),
        "sync.key_file",
        "`key_file` needs a value",
    );
    assert_error(
        &format!("{SYNC}group: 10.0.0.1\n"),
        "sync.group",
        "10.0.0.1 is not a multicast address",
    );
    assert_error(
        &format!("{SYNC}group: 2001:db8::1\n"),
        "sync.group",
        "is not a multicast address",
    );
    assert_error(
        &format!("{SYNC}group: [224.0.0.81]\n"),
        "sync.group",
        "expected an IP address, found a list",
    );
    assert_error(
        &format!("{SYNC}peers: [10.0.0.2, 224.0.0.81]\n"),
        "sync.peers[1]",
        "224.0.0.81 is not the unicast address of a director: a multicast address goes in `group`",
    );
    for bad in ["0.0.0.0", "'::'", "255.255.255.255"] {
        assert_error(
            &format!("{SYNC}peers: [{bad}]\n"),
            "sync.peers[0]",
            "is not the unicast address of a director",
        );
    }
    assert_error(
        &format!("{SYNC}peers: ['::ffff:10.0.0.2']\n"),
        "sync.peers[0]",
        "write 10.0.0.2",
    );
    assert_error(
        &format!("{SYNC}peers: [10.0.0.2, 10.0.0.3, 10.0.0.2]\n"),
        "sync.peers[2]",
        "duplicate peer 10.0.0.2: peers[0] is the same",
    );
    assert_error(
        &format!("{SYNC}peers: [director-2]\n"),
        "sync.peers[0]",
        "`director-2` is not a valid IP address",
    );
    assert_error(
        &format!("{SYNC}peers: 10.0.0.2\n"),
        "sync.peers",
        "expected a list",
    );
    assert_error(
        &format!("{SYNC}{group}  port: 0\n"),
        "sync.port",
        "must be between 1 and 65535, found 0",
    );
    assert_error(
        &format!("{SYNC}{group}  id: 256\n"),
        "sync.id",
        "must be between 0 and 255, found 256",
    );
    assert_error(
        &format!("{SYNC}{group}  id: -1\n"),
        "sync.id",
        "must be between 0 and 255, found -1",
    );
    for ttl in ["0", "256"] {
        assert_error(
            &format!("{SYNC}{group}  ttl: {ttl}\n"),
            "sync.ttl",
            &format!("must be between 1 and 255, found {ttl}"),
        );
    }
    assert_error(
        &format!("{SYNC}{group}  startup_wait: 61\n"),
        "sync.startup_wait",
        "must be between 0 and 60, found 61",
    );
    assert_error(
        &format!("{SYNC}{group}  refresh: 9\n"),
        "sync.refresh",
        "must be between 10 and 86400, found 9",
    );
    assert_error(
        &format!("{SYNC}{group}  refresh: 300\n"),
        "sync.refresh",
        "must be less than timeouts.udp (300), found 300",
    );
    assert_error(
        &format!("{SYNC}{group}timeouts: {{ tcp: 100 }}\n"),
        "sync.refresh",
        "refresh is not set, and its default 120 is not less than timeouts.tcp (100)",
    );
    assert_error(
        &format!("{SYNC}{group}  interface: a/b\n"),
        "sync.interface",
        "interface name `a/b`",
    );
    assert_error(
        &format!("{SYNC}{group}  gruop: 224.0.0.82\n"),
        "sync.gruop",
        "unknown key `gruop`; did you mean `group`?",
    );
    assert_error(
        "interface: eth0\nsync: 224.0.0.81\n",
        "sync",
        "expected a mapping",
    );
    // Every mistake of the section is reported at once, nothing applied.
    let errs = errors(&format!("{SYNC}group: 10.0.0.1\n  ttl: 0\n  port: 0\n"));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["sync.group", "sync.ttl", "sync.port"], "{errs:#?}");
}

/// A service with one real carrying `check`, at `real`.
fn with_check(real: &str, check: &str) -> String {
    format!(
        "interface: eth0\nvirtual_servers:\n  - vip: 192.168.0.10\n    port: 80\n    \
         lb_kind: dr\n    real_servers:\n      - ip: {real}\n        tcp_check: {check}\n"
    )
}

#[test]
fn tcp_check_probe_modes() {
    let probe = |c: &Config| match c.virtual_servers[0].real_servers[0].checks.first() {
        Some(Checker::Tcp(t)) => t.probe,
        other => panic!("{other:?}"),
    };
    assert_eq!(probe(&ok(&with_check("192.168.0.2", "{}"))), None);
    for (word, want) in [
        ("vip", TcpProbe::Vip),
        ("SYN", TcpProbe::Syn),
        ("connect", TcpProbe::Connect),
    ] {
        let c = ok(&with_check("192.168.0.2", &format!("{{ probe: {word} }}")));
        assert_eq!(probe(&c), Some(want));
        // And back out of the YAML the same.
        assert_eq!(probe(&ok(&c.to_yaml())), Some(want));
    }
    assert_error(
        &with_check("192.168.0.2", "{ probe: half }"),
        "virtual_servers[0].real_servers[0].tcp_check.probe",
        "unknown tcp_check probe `half`; use vip, syn or connect",
    );
    // A half-open probe needs an IPv4 real reached from the director's own address.
    assert_error(
        &with_check("192.168.0.2", "{ probe: vip, bind_port: 1053 }"),
        "virtual_servers[0].real_servers[0].tcp_check.probe",
        "`bind_port` is set; use `probe: connect`",
    );
    assert_error(
        &with_check("192.168.0.2", "{ probe: syn, connect_ip: 192.168.1.2 }"),
        "virtual_servers[0].real_servers[0].tcp_check.probe",
        "`connect_ip` is set",
    );
    let v6 = "interface: eth0\nvirtual_servers:\n  - vip: 2001:db8::10\n    port: 80\n    \
              lb_kind: dr\n    real_servers:\n      - ip: 2001:db8::2\n        \
              tcp_check: { probe: vip }\n";
    assert_error(
        v6,
        "virtual_servers[0].real_servers[0].tcp_check.probe",
        "the real is IPv6",
    );
    ok(&with_check(
        "192.168.0.2",
        "{ probe: connect, connect_ip: 192.168.1.2 }",
    ));
}

#[test]
fn http_get_probe_modes() {
    let http = |check: &str| {
        format!(
            "interface: eth0\nvirtual_servers:\n  - vip: 192.168.0.10\n    port: 80\n    \
             lb_kind: dr\n    real_servers:\n      - ip: 192.168.0.2\n        http_get: {check}\n"
        )
    };
    let probe = |c: &Config| match c.virtual_servers[0].real_servers[0].checks.first() {
        Some(Checker::Http(h)) => h.probe,
        other => panic!("{other:?}"),
    };
    assert_eq!(probe(&ok(&http("{ url: { path: / } }"))), None);
    for (word, want) in [("vip", StreamProbe::Vip), ("Connect", StreamProbe::Connect)] {
        let c = ok(&http(&format!("{{ url: {{ path: / }}, probe: {word} }}")));
        assert_eq!(probe(&c), Some(want));
        assert_eq!(probe(&ok(&c.to_yaml())), Some(want));
    }
    assert_error(
        &http("{ url: { path: / }, probe: syn }"),
        "virtual_servers[0].real_servers[0].http_get.probe",
        "unknown http_get probe `syn`; use vip or connect",
    );
    assert_error(
        &http("{ url: { path: / }, probe: vip, bindto: 192.168.0.1 }"),
        "virtual_servers[0].real_servers[0].http_get.probe",
        "`bindto` is set; use `probe: connect`",
    );
    ok(&http(
        "{ url: { path: / }, probe: vip, connect_port: 8080 }",
    ));
}

/// The amqp_check of the real of [`service`], the block's keys appended (in flow style).
fn amqp(keys: &str) -> String {
    service("", &format!("amqp_check: {{ {keys} }}"))
}

/// The checker of the first real.
fn first_check(c: &Config) -> &Checker {
    c.virtual_servers[0].real_servers[0]
        .checks
        .first()
        .expect("a checker")
}

#[test]
fn amqp_check_defaults() {
    let c = ok(&service("", "amqp_check:"));
    assert_eq!(
        first_check(&c),
        &Checker::Amqp(AmqpCheck {
            connect_ip: None,
            connect_port: None,
            bindto: None,
            bind_port: None,
            login: None,
            probe: None,
            timing: CheckTiming::default(),
        })
    );
    let c = ok(&amqp(
        "login: true, user: lb-health, password_file: /etc/lb-xdp/amqp.password",
    ));
    let Checker::Amqp(check) = first_check(&c) else {
        panic!("{c:?}")
    };
    assert_eq!(
        check.login,
        Some(AmqpLogin {
            user: "lb-health".into(),
            password: AmqpPassword::File("/etc/lb-xdp/amqp.password".into()),
            vhost: "/".into(),
            alarm: false,
        })
    );
}

#[test]
fn amqp_check_every_key() {
    let c = ok(&amqp(
        "connect_ip: 10.0.0.2, connect_port: 5673, bindto: 10.0.0.1, bind_port: 1056, \
         connect_timeout: 1.5, nb_get_retry: 2, delay_before_retry: 0.5, warmup: 3, \
         login: true, user: monitor, password: 's3cret word', vhost: /shop, alarm: true",
    ));
    assert_eq!(
        first_check(&c),
        &Checker::Amqp(AmqpCheck {
            connect_ip: Some(v4("10.0.0.2")),
            connect_port: Some(5673),
            bindto: Some(v4("10.0.0.1")),
            bind_port: Some(1056),
            login: Some(AmqpLogin {
                user: "monitor".into(),
                password: AmqpPassword::Text("s3cret word".into()),
                vhost: "/shop".into(),
                alarm: true,
            }),
            probe: None,
            timing: CheckTiming {
                connect_timeout: Duration::from_millis(1500),
                retry: 2,
                delay_before_retry: Duration::from_millis(500),
                warmup: Some(secs(3)),
            },
        })
    );
    // Written back whole, and read back the same.
    let yaml = c.to_yaml();
    assert_eq!(ok(&yaml), c, "{yaml}");
    for key in [
        "login: true",
        "user: monitor",
        "password: s3cret word",
        "vhost: /shop",
        "alarm: true",
        "connect_timeout: 1.5",
    ] {
        assert!(yaml.contains(key), "{key} missing from:\n{yaml}");
    }
    let c = ok(&amqp("login: true, user: u, password_file: /etc/pw"));
    let yaml = c.to_yaml();
    assert!(yaml.contains("password_file: /etc/pw"), "{yaml}");
    assert_eq!(ok(&yaml), c);
    let c = ok(&service("", "amqp_check:"));
    assert!(c.to_yaml().contains("login: false"));
    assert_eq!(ok(&c.to_yaml()), c);
    // The password never shows in a debug print of the configuration.
    let c = ok(&amqp("login: true, user: u, password: s3cret"));
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn amqp_check_mistakes() {
    let at = "virtual_servers[0].real_servers[0].amqp_check";
    assert_error(
        &amqp("user: monitor"),
        &format!("{at}.user"),
        "`user` needs `login: true`: without a login the check stops at connection.start",
    );
    assert_error(
        &amqp("login: false, password_file: /etc/pw, vhost: /"),
        &format!("{at}.vhost"),
        "`vhost` needs `login: true`",
    );
    assert_error(
        &amqp("alarm: true"),
        &format!("{at}.alarm"),
        "`alarm: true` needs `login: true`: only a logged-in client can publish",
    );
    // alarm: false says nothing wrong.
    ok(&amqp("alarm: false"));
    assert_error(
        &amqp("login: true, password: x"),
        &format!("{at}.user"),
        "missing required key `user`",
    );
    assert_error(
        &amqp("login: true, user: u"),
        &format!("{at}.password"),
        "`login: true` needs `password` or `password_file`",
    );
    assert_error(
        &amqp("login: true, user: u, password: x, password_file: /etc/pw"),
        &format!("{at}.password_file"),
        "give `password` or `password_file`, not both",
    );
    assert_error(
        &amqp("login: true, user: u, password_file: etc/pw"),
        &format!("{at}.password_file"),
        "`etc/pw` must be an absolute path",
    );
    assert_error(
        &amqp("login: true, user: u, password:"),
        &format!("{at}.password"),
        "`password` needs a value",
    );
    assert_error(
        &amqp("login: true, user: u, password: 12345"),
        &format!("{at}.password"),
        "expected a string, found the number 12345 (put it in quotes)",
    );
    assert_error(
        &amqp(&format!(
            "login: true, user: {}, password: x",
            "u".repeat(256)
        )),
        &format!("{at}.user"),
        "is 256 bytes long; at most 255 are allowed",
    );
    assert_error(
        &amqp(&format!(
            "login: true, user: u, password: {}",
            "p".repeat(1025)
        )),
        &format!("{at}.password"),
        "is 1025 bytes long; at most 1024 are allowed",
    );
    assert_error(
        &amqp(&format!(
            "login: true, user: u, password: x, vhost: {}",
            "v".repeat(256)
        )),
        &format!("{at}.vhost"),
        "at most 255 are allowed",
    );
    assert_error(
        &amqp("login: yes"),
        &format!("{at}.login"),
        "(only true and false are booleans)",
    );
    assert_error(
        &amqp("login: true, user: u, password: x, vhots: /"),
        &format!("{at}.vhots"),
        "did you mean `vhost`?",
    );
    assert_error(
        &amqp("connect_ip: 2001:db8::2"),
        &format!("{at}.connect_ip"),
        "different address families",
    );
    assert_eq!(
        ok(&service("", "tcp_check:\namqp_check:")).virtual_servers[0].real_servers[0]
            .checks
            .len(),
        2
    );
}

/// The check of the one real of `service("", real)`.
fn the_check(real: &str) -> Option<Checker> {
    ok(&service("", real)).virtual_servers[0].real_servers[0]
        .checks
        .first()
        .cloned()
        .clone()
}

#[test]
fn udp_check_keys_and_round_trip() {
    let real = "udp_check:\n  payload: \"00FFa0\"\n  require_reply: \"c0\"\n  \
                connect_ip: 10.0.0.9\n  connect_port: 5353\n  bindto: 10.0.0.1\n  \
                bind_port: 40000\n  connect_timeout: 0.5\n  retry: 4\n  \
                delay_before_retry: 1.25\n  warmup: 9";
    let want = Checker::Udp(UdpCheck {
        connect_ip: Some(v4("10.0.0.9")),
        connect_port: Some(5353),
        bindto: Some(v4("10.0.0.1")),
        bind_port: Some(40000),
        payload: vec![0x00, 0xff, 0xa0],
        require_reply: Some(vec![0xc0]),
        timing: CheckTiming {
            connect_timeout: Duration::from_millis(500),
            retry: 4,
            delay_before_retry: Duration::from_millis(1250),
            warmup: Some(secs(9)),
        },
    });
    assert_eq!(the_check(real), Some(want));
    let defaults = Checker::Udp(UdpCheck {
        connect_ip: None,
        connect_port: None,
        bindto: None,
        bind_port: None,
        payload: Vec::new(),
        require_reply: None,
        timing: CheckTiming::default(),
    });
    assert_eq!(the_check("udp_check:"), Some(defaults.clone()));
    assert_eq!(
        the_check("udp_check: { require_reply: false }"),
        Some(defaults)
    );
    let Some(Checker::Udp(any)) = the_check("udp_check: { require_reply: true }") else {
        panic!("not a udp_check")
    };
    assert_eq!(any.require_reply, Some(Vec::new()));
    for real in [
        real,
        "udp_check: { require_reply: true }",
        "udp_check: { payload: '1234' }",
        "udp_check:",
    ] {
        let c = ok(&service("", real));
        let yaml = c.to_yaml();
        assert_eq!(ok(&yaml), c, "canonical form:\n{yaml}");
    }
}

#[test]
fn udp_check_mistakes() {
    let at = "virtual_servers[0].real_servers[0].udp_check";
    for (real, key, fragment) in [
        (
            "{ payload: 1234 }",
            "payload",
            "a number loses its leading zeros",
        ),
        (
            "{ payload: '0g' }",
            "payload",
            "`0g` holds `g`, which is not a hexadecimal digit",
        ),
        (
            "{ payload: 'abc' }",
            "payload",
            "`abc` has an odd number of digits",
        ),
        ("{ payload: [1] }", "payload", "expected hexadecimal digits"),
        ("{ require_reply: 'xy' }", "require_reply", "`xy` holds `x`"),
        ("{ require_reply: 7 }", "require_reply", "in quotes"),
        (
            "{ connect_ip: 2001:db8::1 }",
            "connect_ip",
            "different address families",
        ),
        ("{ connect_timeout: 0 }", "connect_timeout", ""),
        ("{ retry: 101 }", "retry", ""),
        ("{ paylod: '00' }", "paylod", "payload"),
    ] {
        assert_error(
            &service("", &format!("udp_check: {real}")),
            &format!("{at}.{key}"),
            fragment,
        );
    }
    let long = format!("udp_check: {{ payload: '{}' }}", "00".repeat(1401));
    assert_error(
        &service("", &long),
        &format!("{at}.payload"),
        "1401 bytes: at most 1400 (one datagram)",
    );
    assert_eq!(
        ok(&service("", "udp_check: {}\ntcp_check: {}")).virtual_servers[0].real_servers[0]
            .checks
            .len(),
        2
    );
}

#[test]
fn dns_check_keys_defaults_and_round_trip() {
    let real = "dns_check:\n  type: aaaa\n  name: www.example.org.\n  connect_ip: 10.0.0.9\n  \
                connect_port: 5353\n  bindto: 10.0.0.1\n  bind_port: 40000\n  \
                connect_timeout: 0.5\n  retry: 4\n  delay_before_retry: 1.25\n  warmup: 9";
    let want = Checker::Dns(DnsCheck {
        connect_ip: Some(v4("10.0.0.9")),
        connect_port: Some(5353),
        bindto: Some(v4("10.0.0.1")),
        bind_port: Some(40000),
        query_type: DnsType::Aaaa,
        name: "www.example.org.".into(),
        timing: CheckTiming {
            connect_timeout: Duration::from_millis(500),
            retry: 4,
            delay_before_retry: Duration::from_millis(1250),
            warmup: Some(secs(9)),
        },
    });
    assert_eq!(the_check(real), Some(want));
    assert_eq!(
        the_check("dns_check:"),
        Some(Checker::Dns(DnsCheck {
            connect_ip: None,
            connect_port: None,
            bindto: None,
            bind_port: None,
            query_type: DnsType::Soa,
            name: ".".into(),
            timing: CheckTiming::default(),
        }))
    );
    for (word, t) in DnsType::WORDS {
        let c = ok(&service("", &format!("dns_check: {{ type: {word} }}")));
        let yaml = c.to_yaml();
        assert!(yaml.contains(&format!("type: {}", t.word())), "{yaml}");
        assert_eq!(ok(&yaml), c, "canonical form:\n{yaml}");
    }
    for real in [real, "dns_check:", "dns_check: { name: example.org }"] {
        let c = ok(&service("", real));
        assert_eq!(ok(&c.to_yaml()), c);
    }
}

#[test]
fn dns_check_mistakes() {
    let at = "virtual_servers[0].real_servers[0].dns_check";
    let long_label = "a".repeat(64);
    let long_name = format!("{}.org", ["abcdefghi"; 26].join("."));
    for (real, key, fragment) in [
        (
            "{ type: PTR }".to_owned(),
            "type",
            "unknown dns_check type `PTR`; use A, NS, CNAME, SOA, MX, TXT or AAAA",
        ),
        ("{ type: 1 }".to_owned(), "type", "dns_check type"),
        ("{ name: '' }".to_owned(), "name", "must not be empty"),
        ("{ name: 'a b' }".to_owned(), "name", "white space"),
        ("{ name: 'a..b' }".to_owned(), "name", "empty label"),
        (format!("{{ name: {long_label}.org }}"), "name", "over 63"),
        (format!("{{ name: {long_name} }}"), "name", "at most 253"),
        ("{ name: 'bücher.example' }".to_owned(), "name", "xn--"),
        (
            "{ connect_ip: 2001:db8::1 }".to_owned(),
            "connect_ip",
            "different address families",
        ),
        ("{ typ: A }".to_owned(), "typ", "type"),
    ] {
        assert_error(
            &service("", &format!("dns_check: {real}")),
            &format!("{at}.{key}"),
            fragment,
        );
    }
}

#[test]
fn ping_check_keys_mistakes_and_round_trip() {
    let real = "ping_check:\n  connect_ip: 10.0.0.9\n  bindto: 10.0.0.1\n  connect_timeout: 0.5\n  \
                nb_get_retry: 4\n  delay_before_retry: 1.25\n  warmup: 9";
    let want = Checker::Ping(PingCheck {
        connect_ip: Some(v4("10.0.0.9")),
        bindto: Some(v4("10.0.0.1")),
        timing: CheckTiming {
            connect_timeout: Duration::from_millis(500),
            retry: 4,
            delay_before_retry: Duration::from_millis(1250),
            warmup: Some(secs(9)),
        },
    });
    assert_eq!(the_check(real), Some(want));
    assert_eq!(
        the_check("ping_check:"),
        Some(Checker::Ping(PingCheck {
            connect_ip: None,
            bindto: None,
            timing: CheckTiming::default(),
        }))
    );
    for real in [real, "ping_check:"] {
        let c = ok(&service("", real));
        assert_eq!(ok(&c.to_yaml()), c);
    }
    let at = "virtual_servers[0].real_servers[0].ping_check";
    for (real, key, fragment) in [
        ("{ connect_port: 80 }", "connect_port", "unknown key"),
        ("{ bind_port: 80 }", "bind_port", "unknown key"),
        (
            "{ connect_ip: 224.0.0.1 }",
            "connect_ip",
            "is not a unicast address",
        ),
        (
            "{ bindto: 2001:db8::1 }",
            "bindto",
            "the address families differ",
        ),
    ] {
        assert_error(
            &service("", &format!("ping_check: {real}")),
            &format!("{at}.{key}"),
            fragment,
        );
    }
}

#[test]
fn smtp_check_keys_mistakes_and_round_trip() {
    let real = "smtp_check:\n  helo_name: director.example.org\n  connect_ip: 10.0.0.9\n  \
                connect_port: 587\n  bindto: 10.0.0.1\n  bind_port: 40000\n  \
                connect_timeout: 0.5\n  retry: 4\n  delay_before_retry: 1.25\n  warmup: 9";
    let want = Checker::Smtp(SmtpCheck {
        connect_ip: Some(v4("10.0.0.9")),
        connect_port: Some(587),
        bindto: Some(v4("10.0.0.1")),
        bind_port: Some(40000),
        helo_name: Some("director.example.org".into()),
        timing: CheckTiming {
            connect_timeout: Duration::from_millis(500),
            retry: 4,
            delay_before_retry: Duration::from_millis(1250),
            warmup: Some(secs(9)),
        },
    });
    assert_eq!(the_check(real), Some(want));
    assert_eq!(
        the_check("smtp_check:"),
        Some(Checker::Smtp(SmtpCheck {
            connect_ip: None,
            connect_port: None,
            bindto: None,
            bind_port: None,
            helo_name: None,
            timing: CheckTiming::default(),
        }))
    );
    for real in [real, "smtp_check:"] {
        let c = ok(&service("", real));
        assert_eq!(ok(&c.to_yaml()), c);
    }
    let at = "virtual_servers[0].real_servers[0].smtp_check";
    let long = "a".repeat(256);
    for (real, key, fragment) in [
        (
            "{ helo_name: 'a b' }".to_owned(),
            "helo_name",
            "must be one word",
        ),
        (
            "{ helo_name: '' }".to_owned(),
            "helo_name",
            "must not be empty",
        ),
        (
            format!("{{ helo_name: {long} }}"),
            "helo_name",
            "at most 255",
        ),
        ("{ connect_port: 0 }".to_owned(), "connect_port", ""),
        ("{ helo: x }".to_owned(), "helo", "helo_name"),
    ] {
        assert_error(
            &service("", &format!("smtp_check: {real}")),
            &format!("{at}.{key}"),
            fragment,
        );
    }
}

#[test]
fn ssl_get_keys_defaults_and_round_trip() {
    // Without TLS keys: http_get's checker over TLS, keepalived's defaults (no SNI, any
    // certificate).
    let Some(Checker::Http(plain)) = the_check("ssl_get: { url: { path: / } }") else {
        panic!("not an ssl_get")
    };
    assert_eq!(plain.tls, Some(TlsCheck::default()));
    assert_eq!(plain.key(), "ssl_get");
    assert_eq!(http_get("{ url: { path: / } }").key(), "http_get");
    let real = "ssl_get:\n  url: { path: /healthz, status_code: 200, digest: \
                9b3a0c85a887a256d6939da88aabd8cd }\n  virtualhost: www.example.org\n  \
                enable_sni: true\n  auth: { user: lbcheck, password_file: /etc/lb/p }\n  \
                tls:\n    verify: true\n    ca_file: /etc/lb/ca.pem\n    \
                certificate_file: /etc/lb/client.pem\n    key_file: /etc/lb/client.key\n  \
                connect_port: 8443\n  retry: 2";
    let Some(Checker::Http(h)) = the_check(real) else {
        panic!("not an ssl_get")
    };
    assert_eq!(
        h.tls,
        Some(TlsCheck {
            enable_sni: true,
            sni_name: None,
            verify: true,
            ca_file: Some("/etc/lb/ca.pem".into()),
            client: Some(TlsClientFiles {
                certificate_file: "/etc/lb/client.pem".into(),
                key_file: "/etc/lb/client.key".into(),
            }),
        })
    );
    assert_eq!(h.virtualhost.as_deref(), Some("www.example.org"));
    assert_eq!(h.urls[0].status_code, StatusCodes::one(200));
    assert!(h.urls[0].digest.is_some() && h.auth.is_some());
    assert_eq!((h.connect_port, h.timing.retry), (Some(8443), 2));
    // keepalived's sni_name turns SNI on.
    let Some(Checker::Http(named)) =
        the_check("ssl_get: { url: { path: / }, sni_name: api.example.org }")
    else {
        panic!("not an ssl_get")
    };
    let tls = named.tls.unwrap();
    assert!(tls.enable_sni && tls.sni_name.as_deref() == Some("api.example.org"));
    for real in [
        real,
        "ssl_get: { url: { path: / } }",
        "ssl_get: { url: { path: / }, sni_name: api.example.org }",
        "ssl_get: { url: { path: / }, tls: }",
    ] {
        let c = ok(&service("", real));
        let yaml = c.to_yaml();
        assert!(
            yaml.contains("ssl_get:") && !yaml.contains("http_get:"),
            "{yaml}"
        );
        assert_eq!(ok(&yaml), c, "canonical form:\n{yaml}");
    }
}

#[test]
fn ssl_get_mistakes_name_their_field() {
    let at = "virtual_servers[0].real_servers[0].ssl_get";
    for (real, key, fragment) in [
        (
            "ssl_get: { url: { path: / }, enable_sni: yes please }",
            "enable_sni",
            "true or false",
        ),
        (
            "ssl_get: { url: { path: / }, enable_sni: false, sni_name: a.example }",
            "sni_name",
            "needs `enable_sni: true`",
        ),
        (
            "ssl_get: { url: { path: / }, sni_name: 192.0.2.1 }",
            "sni_name",
            "is an address",
        ),
        (
            "ssl_get: { url: { path: / }, sni_name: 'a b' }",
            "sni_name",
            "is not a host name",
        ),
        (
            "ssl_get: { url: { path: / }, tls: { verify: 1 } }",
            "tls.verify",
            "true or false",
        ),
        (
            "ssl_get: { url: { path: / }, tls: { verify: true } }",
            "tls.ca_file",
            "needs `ca_file`",
        ),
        (
            "ssl_get: { url: { path: / }, tls: { ca_file: /etc/ca.pem } }",
            "tls.ca_file",
            "only used with `verify: true`",
        ),
        (
            "ssl_get: { url: { path: / }, tls: { verify: true, ca_file: ca.pem } }",
            "tls.ca_file",
            "must be an absolute path",
        ),
        (
            "ssl_get: { url: { path: / }, tls: { certificate_file: /etc/c.pem } }",
            "tls.key_file",
            "needs `key_file`",
        ),
        (
            "ssl_get: { url: { path: / }, tls: { key_file: /etc/k.pem } }",
            "tls.certificate_file",
            "needs `certificate_file`",
        ),
        (
            "ssl_get: { url: { path: / }, tls: { certificate_file: /etc/, key_file: /k } }",
            "tls.certificate_file",
            "not a directory",
        ),
        (
            "ssl_get: { url: { path: / }, tls: { cafile: /ca } }",
            "tls.cafile",
            "ca_file",
        ),
        ("ssl_get: { url: { path: / }, tls: yes }", "tls", "mapping"),
        (
            "ssl_get: { connect_port: 443 }",
            "url",
            "missing required key `url`",
        ),
        (
            "ssl_get: { url: { path: health } }",
            "url.path",
            "must start with `/`",
        ),
    ] {
        assert_error(&service("", real), &format!("{at}.{key}"), fragment);
    }
    // http_get has no TLS: its TLS keys point to ssl_get.
    let at = "virtual_servers[0].real_servers[0].http_get";
    for key in ["enable_sni: true", "sni_name: a.example", "tls: {}"] {
        let real = format!("http_get: {{ url: {{ path: / }}, {key} }}");
        let field = key.split(':').next().unwrap();
        assert_error(
            &service("", &real),
            &format!("{at}.{field}"),
            "use `ssl_get`",
        );
    }
    // http_get and ssl_get on one real are two checkers (keepalived's HTTP_GET and SSL_GET).
    let both = ok(&service(
        "",
        "http_get: { url: { path: / } }\nssl_get: { url: { path: / } }",
    ));
    let keys: Vec<&str> = both.virtual_servers[0].real_servers[0]
        .checks
        .iter()
        .map(Checker::key)
        .collect();
    assert_eq!(keys, ["http_get", "ssl_get"]);
    assert_eq!(
        Config::from_yaml(&both.to_yaml(), std::path::Path::new("x.yaml"))
            .unwrap()
            .virtual_servers,
        both.virtual_servers
    );
}

#[test]
fn several_checkers_in_a_checks_list() {
    let real = "tcp_check: {}
checks:
  - tcp_check: { connect_port: 8080 }
  - misc_check: { misc_path: /bin/check, misc_dynamic: true }
  - file_check: { path: /run/weight, weight: -2, reverse: true, init_file: { value: 5 } }";
    let c = ok(&service("", real));
    let checks = &c.virtual_servers[0].real_servers[0].checks;
    let kinds: Vec<&str> = checks.iter().map(Checker::key).collect();
    assert_eq!(
        kinds,
        ["tcp_check", "tcp_check", "misc_check", "file_check"]
    );
    let Checker::Misc(m) = &checks[2] else {
        panic!("{checks:?}")
    };
    assert!(m.dynamic);
    assert_eq!(
        checks[3],
        Checker::File(FileCheck {
            path: "/run/weight".into(),
            weight: -2,
            reverse: true,
            init_file: Some(FileInit {
                value: 5,
                overwrite: false,
            }),
        })
    );
    // The emitted YAML reads back the same: a `checks` list, since two are `tcp_check`s.
    let yaml = c.to_yaml();
    assert!(yaml.contains("checks:"), "{yaml}");
    assert_eq!(ok(&yaml), c);
    // One of each kind is emitted as keys of the real.
    let c = ok(&service(
        "",
        "misc_check: { misc_path: x, misc_dynamic: true }\nping_check: {}",
    ));
    let yaml = c.to_yaml();
    assert!(
        !yaml.contains("checks:") && yaml.contains("misc_dynamic: true"),
        "{yaml}"
    );
    assert_eq!(ok(&yaml), c);
    // file_check defaults: weight 1, not reversed, no init.
    let c = ok(&service("", "file_check: { path: /run/w }"));
    assert_eq!(
        c.virtual_servers[0].real_servers[0].checks,
        [Checker::File(FileCheck {
            path: "/run/w".into(),
            weight: 1,
            reverse: false,
            init_file: None,
        })]
    );
}

#[test]
fn checker_list_and_file_check_mistakes() {
    let at = "virtual_servers[0].real_servers[0]";
    assert_error(
        &service("", "checks: [ { tcp_check: {}, ping_check: {} } ]"),
        &format!("{at}.checks[0].ping_check"),
        "an item of `checks` is one checker, and this one is already a `tcp_check`",
    );
    assert_error(
        &service("", "checks: [ {} ]"),
        &format!("{at}.checks[0]"),
        "an item of `checks` is one checker",
    );
    assert_error(
        &service("", "checks: [ { tcp_chek: {} } ]"),
        &format!("{at}.checks[0].tcp_chek"),
        "did you mean `tcp_check`?",
    );
    assert_error(
        &service("", "checks: { tcp_check: {} }"),
        &format!("{at}.checks"),
        "expected a list",
    );
    assert_error(
        &service("", "file_check: { weight: 2 }"),
        &format!("{at}.file_check.path"),
        "missing required key `path`",
    );
    assert_error(
        &service("", "file_check: { path: run/w }"),
        &format!("{at}.file_check.path"),
        "must be an absolute path",
    );
    assert_error(
        &service("", "file_check: { path: /run/w, weight: 2147483648 }"),
        &format!("{at}.file_check.weight"),
        "out of range",
    );
    assert_error(
        &service("", "file_check: { path: /run/w, reverse: yes }"),
        &format!("{at}.file_check.reverse"),
        "true or false",
    );
    assert_error(
        &service("", "file_check: { path: /run/w, init_file: { value: x } }"),
        &format!("{at}.file_check.init_file.value"),
        "a whole number",
    );
    assert_error(
        &service(
            "",
            "file_check: { path: /run/w, init_file: { overwite: true } }",
        ),
        &format!("{at}.file_check.init_file.overwite"),
        "did you mean `overwrite`?",
    );
    assert_error(
        &service("", "misc_check: { misc_path: x, misc_dynamic: 1 }"),
        &format!("{at}.misc_check.misc_dynamic"),
        "true or false",
    );
}

const GROUP: &str = "interface: eth0
limits: { max_services: 16 }
virtual_servers:
  - group: web
    vips: [\"10.0.7.1:80\", \"10.0.7.10-11:80\", \"10.0.7.1:443\", \"[2001:db8:7::10-11]:80\"]
    lb_algo: wrr
    lb_kind: dr
    persistence_timeout: 300
    quorum_down: /bin/quorum-down
    sorry_server: { ip: 10.0.7.99 }
    real_servers:
      - { ip: 10.0.7.21, weight: 2, tcp_check: {} }
      - { ip: 2001:db8:7::21, tcp_check: {} }
      - { ip: 10.0.7.22 }
  - { vip: 10.0.8.1, port: 80, lb_kind: dr }
";

#[test]
fn a_group_is_a_service_per_address_and_port_sharing_its_reals() {
    let c = ok(GROUP);
    let keys: Vec<String> = c
        .virtual_servers
        .iter()
        .map(|vs| vs.key.to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "TCP 10.0.7.1:80",
            "TCP 10.0.7.10:80",
            "TCP 10.0.7.11:80",
            "TCP 10.0.7.1:443",
            "TCP [2001:db8:7::10]:80",
            "TCP [2001:db8:7::11]:80",
            "TCP 10.0.8.1:80",
        ]
    );
    let group = c.virtual_servers[0].group.clone().expect("a group");
    assert_eq!(group.name, "web");
    assert_eq!(group.leader, c.virtual_servers[0].key);
    for vs in &c.virtual_servers[..6] {
        assert_eq!(vs.group.as_ref(), Some(&group));
        assert_eq!(vs.lb_algo, LbAlgo::Wrr);
        assert_eq!(vs.persistence.map(|p| p.timeout), Some(300));
        // Each member's reals: those of its address family, on its own port.
        let reals: Vec<String> = vs.real_servers.iter().map(|r| r.key.to_string()).collect();
        let want: Vec<String> = if vs.key.vip.is_ipv4() {
            vec![
                format!("10.0.7.21:{}", vs.key.port),
                format!("10.0.7.22:{}", vs.key.port),
            ]
        } else {
            vec![format!("[2001:db8:7::21]:{}", vs.key.port)]
        };
        assert_eq!(reals, want, "{}", vs.key);
        assert_eq!(
            vs.sorry_server.map(|s| s.port),
            Some(vs.key.port),
            "{}",
            vs.key
        );
    }
    assert_eq!(c.virtual_servers[6].group, None);
    assert_eq!(c.checked_through(&group.leader).count(), 6);
    // Written back as one item, read back the same.
    let yaml = c.to_yaml();
    assert_eq!(yaml.matches("group: web").count(), 1, "{yaml}");
    assert_eq!(ok(&yaml).virtual_servers, c.virtual_servers);
}

#[test]
fn group_mistakes_name_their_field() {
    let base = "interface: eth0\nvirtual_servers:\n  - group: g\n    lb_kind: dr\n";
    for (extra, path, message) in [
        (
            "    vips: [\"10.0.0.1\"]\n",
            "virtual_servers[0].vips[0]",
            "has no port",
        ),
        (
            "    vips: [\"10.0.0.1:80\"]\n    vip: 10.0.0.1\n",
            "virtual_servers[0].vip",
            "remove `vip`",
        ),
        (
            "    vips: []\n",
            "virtual_servers[0].vips",
            "at least one entry",
        ),
        ("", "virtual_servers[0].vips", ""),
        (
            "    vips: [\"10.0.0.1:80\", \"10.0.0.2:443\"]\n    real_servers: [{ ip: 10.0.0.9, port: 80 }]\n",
            "virtual_servers[0].real_servers[0].port",
            "give its reals no port",
        ),
        (
            "    vips: [\"10.0.0.1:80\"]\n    real_servers: [{ ip: 2001:db8::9 }]\n",
            "virtual_servers[0].real_servers[0].ip",
            "another address family than every entry",
        ),
        (
            "    vips: [\"10.0.0.1-9:80\"]\n    real_servers: [{ ip: 10.0.0.9, port: 81 }]\n",
            "virtual_servers[0].real_servers[0].port",
            "must equal the virtual server's port (80)",
        ),
    ] {
        assert_error(&format!("{base}{extra}"), path, message);
    }
    // A member that is also a service of its own, and a group named twice.
    let twice = "interface: eth0\nvirtual_servers:\n  - { group: g, vips: [\"10.0.0.1-2:80\"], lb_kind: dr }\n  - { vip: 10.0.0.2, port: 80, lb_kind: dr }\n  - { group: g, vips: [\"10.0.0.5:80\"], lb_kind: dr }\n";
    assert_error(
        twice,
        "virtual_servers[1]",
        "duplicate virtual server TCP 10.0.0.2:80",
    );
    assert_error(
        twice,
        "virtual_servers[2].group",
        "group g is virtual_servers[0] already",
    );
    // `vips` without a group.
    assert_error(
        "interface: eth0\nvirtual_servers:\n  - { vip: 10.0.0.1, port: 80, vips: [\"10.0.0.2:80\"] }\n",
        "virtual_servers[0].vips",
        "give the group its `group` name",
    );
    // Members count against max_services.
    assert_error(
        "interface: eth0\nlimits: { max_services: 4 }\nvirtual_servers:\n  - { group: g, vips: [\"10.0.0.1-5:80\"], lb_kind: dr }\n",
        "virtual_servers",
        "5 virtual servers, but limits.max_services is 4",
    );
}

#[test]
fn real_thresholds() {
    let t = |real: &str| ok(&service("", real)).virtual_servers[0].real_servers[0].thresholds;
    assert_eq!(t(""), Thresholds::default(), "none by default");
    assert_eq!(
        t("uthreshold: 100\nlthreshold: 40"),
        Thresholds {
            upper: 100,
            lower: 40
        }
    );
    assert_eq!(
        t("uthreshold: 100"),
        Thresholds {
            upper: 100,
            lower: 0
        }
    );
    assert_eq!(t("uthreshold: 2147483647").upper, Thresholds::MAX);
    let path = |key: &str| format!("virtual_servers[0].real_servers[0].{key}");
    assert_error(
        &service("", "uthreshold: 2147483648"),
        &path("uthreshold"),
        "2147483647",
    );
    assert_error(&service("", "uthreshold: -1"), &path("uthreshold"), "");
    assert_error(
        &service("", "lthreshold: 5"),
        &path("lthreshold"),
        "lthreshold 5 needs an uthreshold",
    );
    assert_error(
        &service("", "uthreshold: 10\nlthreshold: 11"),
        &path("lthreshold"),
        "lthreshold 11 is above uthreshold 10",
    );
    // Written back as read.
    let c = ok(&service("", "uthreshold: 100\nlthreshold: 40"));
    let back = ok(&c.to_yaml());
    assert_eq!(back, c);
}

#[test]
fn lb_flags() {
    let path = "virtual_servers[0].lb_flags";
    let flags = |algo: &str, flags: &str| {
        let text = service(&format!("lb_flags: {flags}"), "").replace("lb_algo: rr", algo);
        ok(&text).virtual_servers[0].lb_flags
    };
    assert_eq!(
        ok(&service("", "")).virtual_servers[0].lb_flags,
        SchedFlags::default()
    );
    assert_eq!(
        flags("lb_algo: sh", "[sh-port, sh-fallback]"),
        SchedFlags {
            port: true,
            fallback: true,
            one_packet: false
        }
    );
    assert_eq!(
        flags("lb_algo: mh", "[mh-fallback, ops]"),
        SchedFlags {
            port: false,
            fallback: true,
            one_packet: true
        }
    );
    assert!(flags("lb_algo: wlc", "[ops]").one_packet);
    let err = |algo: &str, flags: &str, at: &str, fragment: &str| {
        let text = service(&format!("lb_flags: {flags}"), "").replace("lb_algo: rr", algo);
        assert_error(&text, &format!("{path}{at}"), fragment);
    };
    err(
        "lb_algo: sh",
        "[mh-port]",
        "[0]",
        "mh-port applies to the mh scheduler only, not sh",
    );
    err(
        "lb_algo: rr",
        "[ops, sh-fallback]",
        "[1]",
        "sh-fallback applies to the sh scheduler only, not rr",
    );
    err(
        "lb_algo: sh",
        "[flag-1]",
        "[0]",
        "unknown scheduler flag `flag-1`",
    );
    err("lb_algo: sh", "[1]", "[0]", "expected a scheduler flag");
    // Written back as read.
    let text = service("lb_flags: [sh-port, ops]", "").replace("lb_algo: rr", "lb_algo: sh");
    let c = ok(&text);
    assert_eq!(ok(&c.to_yaml()), c);
    // dh is a scheduler now, and mh hashes by source as sh does.
    let algo = |name: &str| {
        ok(&service("", "").replace("lb_algo: rr", &format!("lb_algo: {name}"))).virtual_servers[0]
            .lb_algo
    };
    assert_eq!(algo("dh").scheduler(), Some(Scheduler::DestinationHash));
    assert_eq!(algo("mh").scheduler(), Some(Scheduler::SourceHash));
}
