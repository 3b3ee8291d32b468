//! `lb_userspace::import::keepalived`: keepalived.conf → lb-agent YAML.
//!
//! The production guide's keepalived.conf must convert as it is, to the configuration of
//! `configs/rabbitmq.yaml`, with exactly the expected warnings. The other tests cover every
//! keyword, keepalived's quoting and comment rules, what lb-agent refuses (carried with a
//! warning) and the files that cannot be converted at all.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::Duration,
};

use lb_userspace::{
    config::{
        Checker, Config, ConfigError, FileCheck, FileInit, HttpCheck, LbAlgo, MiscCheck,
        StatusCodes, TcpCheck, UrlCheck,
    },
    import::keepalived::{
        Import, ImportError, Options, Warning, import, import_file, import_named,
    },
    model::{Persistence, Protocol, RealKey, SchedFlags, Thresholds},
};
use serde_yaml::{Mapping, Value};

/// Where the production guide's files are shared.
const GUIDE: &str = "/work/shared/reference/rabbitmq-lvs-keepalived.conf";
/// The copy of the guide's keepalived.conf kept with the tests.
const VENDORED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/rabbitmq-lvs-keepalived.conf"
);

fn repo_file(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

/// Imports `text` for eth0, or panics with the error.
fn imported(text: &str) -> Import {
    import(text, "eth0").unwrap_or_else(|e| panic!("import failed: {e}\n{text}"))
}

/// Imports `text` and loads the YAML, which must be valid.
fn accepted(text: &str) -> (Import, Config) {
    let im = imported(text);
    let config = Config::from_yaml(&im.yaml, Path::new("imported.yaml"))
        .unwrap_or_else(|e| panic!("YAML refused:\n{e}\n---\n{}", im.yaml));
    (im, config)
}

/// Imports `text`, whose YAML lb-agent must refuse.
fn refused(text: &str) -> (Import, ConfigError) {
    let im = imported(text);
    let err = Config::from_yaml(&im.yaml, Path::new("imported.yaml"))
        .err()
        .unwrap_or_else(|| panic!("YAML accepted, but it should be refused:\n{}", im.yaml));
    (im, err)
}

/// Asserts a warning on `line` that contains every fragment.
#[track_caller]
fn warned(im: &Import, line: usize, fragments: &[&str]) {
    let hit = im
        .warnings
        .iter()
        .any(|w| w.line == line && fragments.iter().all(|f| w.message.contains(f)));
    assert!(
        hit,
        "no warning on line {line} with {fragments:?}; warnings:\n{}",
        shown(im)
    );
}

fn shown(im: &Import) -> String {
    im.warnings
        .iter()
        .map(|w| format!("  {w}\n"))
        .collect::<String>()
}

/// A DR service on 10.0.0.1:80 around `body`: `body`'s first line is line 4.
fn service(body: &str) -> String {
    format!("virtual_server 10.0.0.1 80 {{\n    lb_algo rr\n    lb_kind DR\n{body}\n}}\n")
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The guide's file: vendored, and the shared original when it is there (which must not
/// have drifted from the copy).
fn guide_texts() -> Vec<(String, String)> {
    let vendored = fs::read_to_string(VENDORED).expect("vendored copy of the guide's file");
    let mut texts = vec![(VENDORED.to_owned(), vendored.clone())];
    if let Ok(shared) = fs::read_to_string(GUIDE) {
        assert_eq!(shared, vendored, "{VENDORED} differs from {GUIDE}");
        texts.push((GUIDE.to_owned(), shared));
    }
    texts
}

#[test]
fn the_guides_file_converts_as_it_is() {
    // configs/rabbitmq.yaml is what the guide meant (retry 3); keepalived ignored the
    // guide's `nb_get_retry 3` inside TCP_CHECK, so what it ran, and what the import gives,
    // has keepalived's default retry 1. On 5672 the file logs in with an amqp_check where the
    // guide (and so the import) has a TCP_CHECK with the same address, port and timing.
    let mut expected = Config::from_file(Path::new(&repo_file("configs/rabbitmq.yaml")))
        .expect("configs/rabbitmq.yaml is valid");
    for vs in &mut expected.virtual_servers {
        for rs in &mut vs.real_servers {
            if let Some(Checker::Amqp(a)) = rs.checks.first() {
                assert_eq!(vs.key.port, 5672);
                rs.checks = vec![Checker::Tcp(TcpCheck {
                    connect_ip: a.connect_ip,
                    connect_port: a.connect_port,
                    bindto: a.bindto,
                    bind_port: a.bind_port,
                    probe: None,
                    timing: a.timing,
                })];
            }
            let Some(Checker::Tcp(c)) = rs.checks.first_mut() else {
                panic!("the guide's reals have TCP_CHECKs");
            };
            assert_eq!(c.timing.retry, 3);
            c.timing.retry = 1;
        }
    }
    let nb_get_retry = "unknown keyword \"nb_get_retry\" in TCP_CHECK (only HTTP_GET and \
                        SSL_GET take this old name of retry): ignored as keepalived does; this \
                        check ran with retry 1 and is converted as it ran; write `retry: 3` in \
                        tcp_check if 3 retries were meant";
    let protocal = "unknown keyword \"protocal\" (did you mean \"protocol\"?): ignored as \
                    keepalived does; protocol stays TCP";
    let expected_warnings = vec![
        (
            2,
            "global_defs is handled by keepalived, not by lb-agent: not converted (it stays in \
             keepalived.conf)",
        ),
        (
            5,
            "vrrp_instance VI_1 is handled by keepalived, not by lb-agent: keep running \
             keepalived for VRRP (it owns the VIP 192.168.0.10)",
        ),
        (
            16,
            "vrrp_instance VI_1 tracks the script chk_haproxy, which no vrrp_script in this file \
             defines: keepalived ignores that track (not converted; fix it in keepalived.conf)",
        ),
        (30, protocal),
        (36, nb_get_retry),
        (45, nb_get_retry),
        (54, nb_get_retry),
        (66, protocal),
        (71, nb_get_retry),
        (80, nb_get_retry),
        (89, nb_get_retry),
    ];
    for (source, text) in guide_texts() {
        let im = import_named(&text, "eth0", &source).expect("the guide's file imports");
        let config = Config::from_yaml(&im.yaml, Path::new(&source))
            .unwrap_or_else(|e| panic!("{source}: YAML refused:\n{e}\n{}", im.yaml));
        assert_eq!(
            config, expected,
            "{source}: differs from configs/rabbitmq.yaml with keepalived's retry 1"
        );
        let got: Vec<(usize, &str)> = im
            .warnings
            .iter()
            .map(|w| (w.line, w.message.as_str()))
            .collect();
        assert_eq!(
            got,
            expected_warnings,
            "{source}: warnings:\n{}",
            shown(&im)
        );
        // The brief's exact wording.
        assert_eq!(
            im.warnings[3].to_string(),
            "line 30: unknown keyword \"protocal\" (did you mean \"protocol\"?): ignored as \
             keepalived does; protocol stays TCP"
        );
        // The header names the file and lists the warnings; each service names its line.
        assert!(im.yaml.starts_with(&format!(
            "# lb-agent configuration generated from {source} by `lbadm import-keepalived`."
        )));
        assert!(
            im.yaml
                .contains("#   line 30: unknown keyword \"protocal\"")
        );
        assert!(
            im.yaml
                .contains("# keepalived.conf line 23: virtual_server 192.168.0.10 5672\n")
        );
        assert!(
            im.yaml
                .contains("# keepalived.conf line 61: virtual_server 192.168.0.10 15672\n")
        );
        assert!(
            im.yaml
                .contains("# line 85: real_server 192.168.0.4 15672\n")
        );
        assert!(
            im.yaml
                .contains("protocol: tcp   # keepalived's default; line 30 has \"protocal\"")
        );
    }
}

/// Keys of the mapping at `path` (`virtual_servers/0/real_servers/1/tcp_check`).
fn keys_at<'v>(doc: &'v Value, path: &str) -> Vec<&'v str> {
    let mut v = doc;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        v = match part.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[part],
        };
    }
    let map: &Mapping = v
        .as_mapping()
        .unwrap_or_else(|| panic!("{path}: not a mapping"));
    map.keys().filter_map(Value::as_str).collect()
}

/// Every key of `ours` is in `reference`, in the same order.
#[track_caller]
fn in_order(ours: &[&str], reference: &[&str], what: &str) {
    let mut last = 0;
    for k in ours {
        let at = reference
            .iter()
            .position(|r| r == k)
            .unwrap_or_else(|| panic!("{what}: key {k} is not in configs/example.yaml"));
        assert!(
            at >= last,
            "{what}: {k} is out of order ({ours:?} vs {reference:?})"
        );
        last = at;
    }
}

#[test]
fn the_yaml_keeps_the_key_order_of_example_yaml() {
    let text = r#"
vrrp_instance VI_1 {
    interface eth0
    virtual_ipaddress {
        10.0.0.1/24 dev eth0
    }
}
virtual_server 10.0.0.1 80 {
    delay_loop 10
    lb_algo wrr
    lb_kind DR
    persistence_timeout 300
    persistence_granularity 255.255.255.0
    protocol TCP
    warmup 5
    alpha
    omega
    inhibit_on_failure
    quorum 2
    hysteresis 1
    quorum_up "/usr/local/bin/notify web quorum-up"
    quorum_down "/usr/local/bin/notify web quorum-down"
    sorry_server 10.0.0.99 80
    real_server 10.0.0.2 80 {
        weight 3
        inhibit_on_failure
        notify_up "/usr/local/bin/notify web 10.0.0.2 up"
        notify_down "/usr/local/bin/notify web 10.0.0.2 down"
        HTTP_GET {
            url {
                path /healthz
                status_code 200
            }
            connect_ip 10.0.0.2
            connect_port 80
            bindto 10.0.0.5
            bind_port 40080
            connect_timeout 3
            retry 3
            delay_before_retry 2
            warmup 5
        }
    }
    real_server 10.0.0.3 80 {
        TCP_CHECK {
            warmup 1
            delay_before_retry 1
            retry 2
            connect_timeout 3
            bind_port 40081
            bindto 10.0.0.5
            connect_port 80
            connect_ip 10.0.0.3
        }
    }
    real_server 10.0.0.4 80 {
        MISC_CHECK {
            warmup 5
            misc_timeout 5
            misc_path "/usr/local/bin/check-web 10.0.0.4"
        }
    }
}
"#;
    let (im, _) = accepted(text);
    warned(&im, 2, &["vrrp_instance VI_1 is handled by keepalived"]);
    assert_eq!(im.warnings.len(), 1, "{}", shown(&im));
    let ours: Value = serde_yaml::from_str(&im.yaml).unwrap();
    let example: Value =
        serde_yaml::from_str(&fs::read_to_string(repo_file("configs/example.yaml")).unwrap())
            .unwrap();
    in_order(&keys_at(&ours, ""), &keys_at(&example, ""), "top level");
    let vs = keys_at(&example, "virtual_servers/0");
    in_order(&keys_at(&ours, "virtual_servers/0"), &vs, "virtual server");
    assert_eq!(keys_at(&ours, "virtual_servers/0").len(), 18, "every key");
    let mut real = keys_at(&example, "virtual_servers/0/real_servers/0");
    real.extend(["tcp_check", "misc_check"]);
    let http = keys_at(&example, "virtual_servers/0/real_servers/0/http_get");
    let misc = keys_at(&example, "virtual_servers/0/real_servers/2/misc_check");
    for i in 0..3 {
        in_order(
            &keys_at(&ours, &format!("virtual_servers/0/real_servers/{i}")),
            &real,
            "real server",
        );
    }
    let base = "virtual_servers/0/real_servers";
    in_order(
        &keys_at(&ours, &format!("{base}/0/http_get")),
        &http,
        "http_get",
    );
    in_order(
        &keys_at(&ours, &format!("{base}/1/tcp_check")),
        &http,
        "tcp_check",
    );
    in_order(
        &keys_at(&ours, &format!("{base}/2/misc_check")),
        &misc,
        "misc_check",
    );
    assert_eq!(keys_at(&ours, &format!("{base}/1/tcp_check")).len(), 8);
}

#[test]
fn every_virtual_server_keyword() {
    let text = r#"virtual_server 10.0.0.1 53 {
    delay_loop 10
    lvs_sched sh
    lvs_method DR
    persistence_timeout 300
    persistence_granularity 255.255.255.0
    protocol UDP
    alpha
    omega
    inhibit_on_failure
    quorum 2
    hysteresis 1
    quorum_up "/usr/local/bin/notify dns quorum-up"
    quorum_down /usr/local/bin/quorum-down
    sorry_server 10.0.0.99 53
    warmup 5
    real_server 10.0.0.2 53 {
        weight 2
    }
}
"#;
    let (im, c) = accepted(text);
    assert!(im.warnings.is_empty(), "{}", shown(&im));
    let vs = &c.virtual_servers[0];
    assert_eq!(vs.key.vip, ip("10.0.0.1"));
    assert_eq!(vs.key.port, 53);
    assert_eq!(vs.key.proto, Protocol::Udp);
    assert_eq!(vs.lb_algo, LbAlgo::Sh);
    assert_eq!(
        vs.persistence,
        Some(Persistence {
            timeout: 300,
            granularity: Ipv4Addr::new(255, 255, 255, 0),
            prefix6: 128,
        })
    );
    assert_eq!(vs.delay_loop, secs(10.0));
    assert_eq!(vs.warmup, Some(secs(5.0)));
    assert!(vs.alpha && vs.omega && vs.inhibit_on_failure);
    assert_eq!((vs.quorum, vs.hysteresis), (2, 1));
    assert_eq!(
        vs.quorum_up.as_deref(),
        Some("/usr/local/bin/notify dns quorum-up")
    );
    assert_eq!(
        vs.quorum_down.as_deref(),
        Some("/usr/local/bin/quorum-down")
    );
    assert_eq!(
        vs.sorry_server,
        Some(RealKey {
            addr: ip("10.0.0.99"),
            port: 53
        })
    );
    assert_eq!(vs.real_servers[0].weight, 2);
    assert_eq!(vs.real_servers[0].checks.first().cloned(), None);
}

#[test]
fn persistence_defaults_follow_keepalived() {
    // A bare persistence_timeout is 360 s; a granularity alone turns persistence on for 360 s.
    let (_, c) = accepted(&service("    persistence_timeout"));
    assert_eq!(c.virtual_servers[0].persistence.unwrap().timeout, 360);
    let (im, c) = accepted(&service("    persistence_granularity 255.255.0.0"));
    let p = c.virtual_servers[0].persistence.unwrap();
    assert_eq!(
        (p.timeout, p.granularity),
        (360, Ipv4Addr::new(255, 255, 0, 0))
    );
    assert!(im.yaml.contains("implied by persistence_granularity"));
    // Without either, there is no persistence and the delay_loop is 60 s.
    let (_, c) = accepted(&service(""));
    assert_eq!(c.virtual_servers[0].persistence, None);
    assert_eq!(c.virtual_servers[0].delay_loop, secs(60.0));
    assert_eq!(c.virtual_servers[0].key.proto, Protocol::Tcp);
}

#[test]
fn keywords_lb_agent_does_not_carry_are_ignored_with_a_warning() {
    let text = service(
        "    ha_suspend\n    virtualhost www.example.org\n    smtp_alert\n    hashed\n    \
         sorry_server_inhibit\n    real_server 10.0.0.2 80 {\n        smtp_alert\n        \
         HTTP_GET {\n            url {\n                path /\n                regex \
         \"^OK\"\n                status_code 200\n            }\n            http_protocol \
         1.1\n        }\n    }",
    );
    let (im, c) = accepted(&text);
    warned(&im, 4, &["ha_suspend is not carried by lb-agent: ignored"]);
    warned(&im, 6, &["smtp_alert is not carried"]);
    warned(&im, 7, &["hashed is not carried"]);
    warned(&im, 8, &["sorry_server_inhibit is not carried"]);
    warned(&im, 10, &["smtp_alert is not carried"]);
    warned(
        &im,
        14,
        &["regex", "not carried", "not regular expressions"],
    );
    warned(
        &im,
        17,
        &["http_protocol 1.1 is not carried", "HTTP/1.0 GET"],
    );
    assert_eq!(im.warnings.len(), 7, "{}", shown(&im));
    let Some(Checker::Http(h)) = c.virtual_servers[0].real_servers[0].checks.first() else {
        panic!("http_get expected");
    };
    assert_eq!(h.urls, vec![url("/", StatusCodes::one(200))]);
    // The virtual server's virtualhost is its HTTP checks' Host.
    assert_eq!(h.virtualhost.as_deref(), Some("www.example.org"));
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
fn http_get_digest_virtualhost_and_status_codes_convert() {
    let text = service(
        r#"    virtualhost vs.example.org
    real_server 10.0.0.2 80 {
        virtualhost rs.example.org
        HTTP_GET {
            url {
                path /a
                digest 9B3A0C85A887A256D6939DA88AABD8CD
                virtualhost url.example.org
                status_code 200-299 404
                status_code 503
            }
            url {
                path /b
                digest 9b3a0c85
                digest 9b3a0c85a887a256d6939da88aabd8cd
                digest 00000000000000000000000000000000
            }
            virtualhost first.example.org
            virtualhost check.example.org
        }
    }
    real_server 10.0.0.3 80 {
        HTTP_GET {
            url {
                path /c
            }
        }
    }
    real_server 10.0.0.4 80 {
        virtualhost rs4.example.org:8080
        HTTP_GET {
            url {
                path /d
                virtualhost
            }
        }
    }"#,
    );
    let (im, c) = accepted(&text);
    let reals = &c.virtual_servers[0].real_servers;
    let http = |i: usize| match reals[i].checks.first() {
        Some(Checker::Http(h)) => h,
        other => panic!("real {i}: http_get expected, got {other:?}"),
    };
    let md5 = [
        0x9b, 0x3a, 0x0c, 0x85, 0xa8, 0x87, 0xa2, 0x56, 0xd6, 0x93, 0x9d, 0xa8, 0x8a, 0xab, 0xd8,
        0xcd,
    ];
    assert_eq!(
        http(0).urls,
        vec![
            UrlCheck {
                digest: Some(md5),
                virtualhost: Some("url.example.org".into()),
                // Every status_code line adds to the codes, as keepalived's bit array.
                ..url(
                    "/a",
                    StatusCodes::new(vec![(200, 299), (404, 404), (503, 503)]).unwrap()
                )
            },
            UrlCheck {
                digest: Some(md5),
                ..url("/b", StatusCodes::any_2xx())
            },
        ]
    );
    // url over HTTP_GET over real_server over virtual_server, as keepalived picks the Host.
    assert_eq!(http(0).virtualhost.as_deref(), Some("check.example.org"));
    assert_eq!(http(1).virtualhost.as_deref(), Some("vs.example.org"));
    assert_eq!(http(1).urls, vec![url("/c", StatusCodes::any_2xx())]);
    assert_eq!(http(2).virtualhost.as_deref(), Some("rs4.example.org:8080"));
    assert!(
        im.yaml.contains("status_code: [200-299, 404, 503]\n"),
        "{}",
        im.yaml
    );
    assert!(
        im.yaml
            .contains("virtualhost: vs.example.org   # from the virtual_server\n"),
        "{}",
        im.yaml
    );
    assert!(
        im.yaml
            .contains("virtualhost: \"rs4.example.org:8080\"   # from the real_server\n"),
        "{}",
        im.yaml
    );
    warned(
        &im,
        17,
        &[
            "digest 9b3a0c85: not 32 hexadecimal digits",
            "keepalived ignores it",
        ],
    );
    warned(
        &im,
        19,
        &["the url already has the digest of line 18", "ignored"],
    );
    warned(
        &im,
        22,
        &["replaces the virtualhost first.example.org of line 21"],
    );
    warned(
        &im,
        37,
        &["virtualhost has no value: ignored as keepalived does"],
    );
    assert_eq!(im.warnings.len(), 4, "{}", shown(&im));
}

#[test]
fn real_server_keywords_and_script_quoting() {
    let text = service(
        r#"    real_server 10.0.0.2 80 {
        weight 3
        inhibit_on_failure
        notify_up "/usr/local/bin/notify web 10.0.0.2 up"
        notify_down /usr/local/bin/down
    }
    real_server 10.0.0.3 80 {
        weight 0
        inhibit_on_failure off
        notify_up "/bin/notify 'two words' \"quoted\" $HOME"
        notify_down /bin/down nobody
    }"#,
    );
    let (im, c) = accepted(&text);
    let r = &c.virtual_servers[0].real_servers;
    assert_eq!(
        r[0].key,
        RealKey {
            addr: ip("10.0.0.2"),
            port: 80
        }
    );
    assert_eq!(r[0].weight, 3);
    assert_eq!(r[0].inhibit_on_failure, Some(true));
    assert_eq!(
        r[0].notify_up.as_deref(),
        Some("/usr/local/bin/notify web 10.0.0.2 up")
    );
    assert_eq!(r[0].notify_down.as_deref(), Some("/usr/local/bin/down"));
    assert_eq!(r[1].weight, 0);
    assert_eq!(r[1].inhibit_on_failure, Some(false));
    // keepalived splits the quoted command again (quotes and escapes) and runs the words
    // without a shell: they are quoted for lb-agent's `sh -c`. `\"quoted\"` is `"quoted"`
    // after the first split and the word `quoted` after the second.
    assert_eq!(
        r[1].notify_up.as_deref(),
        Some("/bin/notify 'two words' quoted '$HOME'")
    );
    // Unquoted words after the script are the user keepalived runs it as.
    assert_eq!(r[1].notify_down.as_deref(), Some("/bin/down"));
    warned(
        &im,
        14,
        &[
            "notify_down",
            "as user nobody",
            "quote the whole command line",
        ],
    );
    assert_eq!(im.warnings.len(), 1, "{}", shown(&im));
}

#[test]
fn tcp_check_keywords() {
    let text = service(
        "    real_server 10.0.0.2 80 {\n        TCP_CHECK {\n            connect_ip 10.0.0.20\n            \
         connect_port 8080\n            bindto 10.0.0.1\n            bind_port 40000\n            \
         connect_timeout 0.5\n            retry 2\n            delay_before_retry 1.5\n            \
         warmup 7\n        }\n    }",
    );
    let (im, c) = accepted(&text);
    assert!(im.warnings.is_empty(), "{}", shown(&im));
    assert_eq!(
        c.virtual_servers[0].real_servers[0].checks.first().cloned(),
        Some(Checker::Tcp(TcpCheck {
            connect_ip: Some(ip("10.0.0.20")),
            connect_port: Some(8080),
            bindto: Some(ip("10.0.0.1")),
            bind_port: Some(40000),
            probe: None,
            timing: lb_userspace::config::CheckTiming {
                connect_timeout: secs(0.5),
                retry: 2,
                delay_before_retry: secs(1.5),
                warmup: Some(secs(7.0)),
            },
        }))
    );
}

#[test]
fn http_get_with_nested_url_blocks() {
    let text = service(
        r#"    real_server 10.0.0.2 80 {
        HTTP_GET {
            url {
                path /healthz
                status_code 204
            }
            url {
                path /ready
            }
            url { path /one-line status_code 200 }
            url {
                path /api
                status_code 200-299 404
            }
            connect_timeout 2
            nb_get_retry 2
        }
    }"#,
    );
    let (im, c) = accepted(&text);
    let Some(Checker::Http(HttpCheck { urls, timing, .. })) =
        c.virtual_servers[0].real_servers[0].checks.first()
    else {
        panic!("http_get expected");
    };
    assert_eq!(
        urls,
        &vec![
            url("/healthz", StatusCodes::one(204)),
            url("/ready", StatusCodes::any_2xx()),
            url("/one-line", StatusCodes::any_2xx()),
            url(
                "/api",
                StatusCodes::new(vec![(200, 299), (404, 404)]).unwrap()
            )
        ]
    );
    // nb_get_retry is HTTP_GET's old name of retry; keepalived's HTTP_GET retries every 3 s.
    assert_eq!(timing.retry, 2);
    assert_eq!(timing.connect_timeout, secs(2.0));
    assert_eq!(timing.delay_before_retry, secs(3.0));
    assert!(
        im.yaml
            .contains("keepalived's default for HTTP_GET and SSL_GET")
    );
    // On one line, keepalived takes `path` and ignores the rest of the line (so that url
    // accepts any 2xx, keepalived's default and lb-agent's).
    warned(
        &im,
        13,
        &["\"status_code 200\" after path /one-line is ignored"],
    );
    assert_eq!(im.warnings.len(), 1, "{}", shown(&im));
}

#[test]
fn misc_check_keywords() {
    let text = service(
        r#"    real_server 10.0.0.2 80 {
        MISC_CHECK {
            misc_path "/usr/local/bin/check-web 10.0.0.2"
            misc_timeout 5
            warmup 3
            misc_dynamic
            user nobody
        }
    }
    real_server 10.0.0.3 80 {
        MISC_CHECK {
            misc_path /usr/local/bin/check
        }
    }"#,
    );
    let (im, c) = accepted(&text);
    let reals = &c.virtual_servers[0].real_servers;
    assert_eq!(
        reals[0].checks.first().cloned(),
        Some(Checker::Misc(MiscCheck {
            misc_path: "/usr/local/bin/check-web 10.0.0.2".into(),
            dynamic: true,
            misc_timeout: secs(5.0),
            warmup: Some(secs(3.0)),
        }))
    );
    // misc_timeout defaults to the delay_loop, as in keepalived.
    assert_eq!(
        reals[1].checks.first().cloned(),
        Some(Checker::Misc(MiscCheck {
            misc_path: "/usr/local/bin/check".into(),
            dynamic: false,
            misc_timeout: secs(60.0),
            warmup: None,
        }))
    );
    warned(&im, 10, &["user nobody is not carried"]);
    assert_eq!(im.warnings.len(), 1, "{}", shown(&im));
}

#[test]
fn checkers_inherit_timing_from_their_real_and_virtual_server() {
    let text = service(
        "    retry 4\n    delay_before_retry 2\n    real_server 10.0.0.2 80 {\n        \
         connect_timeout 2\n        TCP_CHECK {\n            delay_before_retry 1\n        }\n    }",
    );
    let (im, c) = accepted(&text);
    assert!(im.warnings.is_empty(), "{}", shown(&im));
    let Some(Checker::Tcp(t)) = c.virtual_servers[0].real_servers[0].checks.first() else {
        panic!("tcp_check expected");
    };
    assert_eq!(t.timing.retry, 4);
    assert_eq!(t.timing.connect_timeout, secs(2.0));
    assert_eq!(t.timing.delay_before_retry, secs(1.0));
    assert!(im.yaml.contains("retry: 4   # from the virtual_server"));
    assert!(
        im.yaml
            .contains("connect_timeout: 2   # from the real_server")
    );
}

#[test]
fn groups_convert_and_fwmark_services_are_skipped_with_a_warning() {
    let text = "virtual_server_group web {\n    10.0.0.1 80\n    10.0.0.10-12 80\n    \
                2001:db8::1 443\n    10.0.0.9\n    fwmark 3\n}\nvirtual_server fwmark 7 {\n    \
                lb_kind DR\n}\nvirtual_server group web {\n    lb_kind DR\n    real_server \
                10.0.0.21 0 {\n        TCP_CHECK {\n        }\n    }\n    real_server 2001:db8::21 \
                443 {\n    }\n}\nvirtual_server group nowhere {\n    lb_kind DR\n}\n";
    let (im, c) = accepted(text);
    // The entries lb-agent cannot serve are named; the others make the group.
    warned(&im, 5, &["10.0.0.9", "every port of the address"]);
    warned(
        &im,
        6,
        &["fwmark 3", "no firewall marks", "entry not converted"],
    );
    warned(
        &im,
        8,
        &["virtual_server fwmark 7 is not supported", "block skipped"],
    );
    warned(
        &im,
        20,
        &["no virtual_server_group nowhere", "not converted"],
    );
    assert_eq!(im.warnings.len(), 4, "{}", shown(&im));
    let keys: Vec<String> = c
        .virtual_servers
        .iter()
        .map(|vs| vs.key.to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "TCP 10.0.0.1:80",
            "TCP 10.0.0.10:80",
            "TCP 10.0.0.11:80",
            "TCP 10.0.0.12:80",
            "TCP [2001:db8::1]:443"
        ]
    );
    let g = c.virtual_servers[0].group.as_ref().expect("a group");
    assert_eq!(g.name, "web");
    assert_eq!(
        g.vips,
        ["10.0.0.1:80", "10.0.0.10-12:80", "[2001:db8::1]:443"]
    );
    // real_server 10.0.0.21 0: each member's port; the IPv6 real only in the IPv6 member.
    assert_eq!(
        c.virtual_servers[3].real_servers[0].key.to_string(),
        "10.0.0.21:80"
    );
    assert_eq!(
        c.virtual_servers[4].real_servers[0].key.to_string(),
        "[2001:db8::21]:443"
    );
    assert_eq!(c.virtual_servers[4].real_servers.len(), 1);
}

#[test]
fn unbalanced_braces_and_quotes_are_errors_naming_the_line() {
    // The real_server's `}` is missing: the virtual_server's `}` closes it instead.
    let missing = "virtual_server 10.0.0.1 80 {\n  real_server 10.0.0.2 80 {\n    weight 1\n}\n";
    let e = import(missing, "eth0").unwrap_err();
    assert_eq!(
        e,
        ImportError::Unclosed {
            line: 1,
            keyword: "virtual_server".into()
        }
    );
    assert_eq!(e.line(), Some(1));
    assert!(
        e.to_string()
            .starts_with("line 1: the virtual_server block"),
        "{e}"
    );
    let extra = "virtual_server 10.0.0.1 80 {\n  lb_kind DR\n}\n}\n";
    let e = import(extra, "eth0").unwrap_err();
    assert_eq!(e, ImportError::UnexpectedClose { line: 4 });
    assert!(e.to_string().starts_with("line 4: "), "{e}");
    let stray = "virtual_server 10.0.0.1 80 {\n  {\n  }\n}\n";
    assert_eq!(
        import(stray, "eth0").unwrap_err(),
        ImportError::StrayOpen { line: 2 }
    );
    let quote = "virtual_server 10.0.0.1 80 {\n  quorum_up \"/bin/x\n}\n";
    let e = import(quote, "eth0").unwrap_err();
    assert_eq!(e, ImportError::UnterminatedQuote { line: 2 });
    assert!(
        e.to_string().starts_with("line 2: unterminated quote"),
        "{e}"
    );
}

#[test]
fn nat_is_carried_with_a_warning() {
    let text = "virtual_server 10.0.0.1 80 {\n    lb_algo rr\n    lb_kind NAT\n    \
                real_server 192.168.1.2 8080 {\n    }\n}\n";
    let (im, err) = refused(text);
    assert!(im.yaml.contains("    lb_kind: nat\n"), "{}", im.yaml);
    let shown_err = err.to_string();
    assert!(shown_err.contains("virtual_servers[0].lb_kind: lb_kind NAT is not supported"));
    warned(
        &im,
        3,
        &[
            "lb-agent will refuse the YAML: virtual_servers[0].lb_kind: lb_kind NAT is not supported",
        ],
    );
    // NAT may change the port; direct routing cannot: said on the real server's line.
    warned(
        &im,
        4,
        &["real_servers[0].port: must equal the virtual server's port (80)"],
    );
    assert_eq!(im.warnings.len(), 2, "{}", shown(&im));
    assert_eq!(err.errors.len(), 2, "{shown_err}");
}

#[test]
fn keepalived_defaults_that_lb_agent_refuses_are_explained() {
    // Neither lb_algo nor lb_kind: keepalived's wlc (served) and NAT (refused).
    let (im, err) = refused("virtual_server 10.0.0.1 80 {\n    delay_loop 5\n}\n");
    assert!(
        im.yaml
            .contains("# lb_kind: not set in keepalived.conf (keepalived's default is NAT)")
    );
    assert!(
        im.yaml
            .contains("# lb_algo: not set in keepalived.conf (keepalived's default is wlc)")
    );
    warned(
        &im,
        1,
        &["lb_kind is not set, and keepalived's default NAT is not supported"],
    );
    assert_eq!(err.errors.len(), 1, "{err}");
    assert_eq!(im.warnings.len(), 1, "{}", shown(&im));
    // keepalived's names are case-sensitive: `dr` and `WRR` are ignored (NAT and wlc stay).
    let (im, _) = refused("virtual_server 10.0.0.1 80 {\n    lb_algo WRR\n    lb_kind dr\n}\n");
    warned(
        &im,
        2,
        &[
            "lb_algo WRR is not a keepalived scheduler (scheduler names are lower case)",
            "lb_algo stays wlc",
        ],
    );
    warned(
        &im,
        3,
        &[
            "lb_kind dr is not NAT, DR or TUN (keepalived wants it in capitals)",
            "lb_kind stays NAT",
        ],
    );
    // ... but protocol is not.
    let (_, c) = accepted(&service("    protocol udp"));
    assert_eq!(c.virtual_servers[0].key.proto, Protocol::Udp);
    // The least-connection schedulers are carried and served.
    for algo in ["lc", "wlc", "sed", "nq"] {
        let (im, c) = accepted(&format!(
            "virtual_server 10.0.0.1 80 {{\n    lb_algo {algo}\n    lb_kind DR\n}}\n"
        ));
        assert!(im.warnings.is_empty(), "{}", shown(&im));
        assert_eq!(c.virtual_servers[0].lb_algo.name(), algo);
    }
}

#[test]
fn ipv6_addresses() {
    let text = r#"virtual_server 2001:db8::10 443 {
    lb_algo rr
    lb_kind DR
    persistence_granularity 64
    sorry_server 2001:db8::99 443
    real_server 2001:db8::2 443 {
        TCP_CHECK {
            connect_ip 2001:db8::2
            bindto 2001:db8::1
        }
    }
    real_server [2001:db8::3] 443 {
    }
}
"#;
    let (im, c) = accepted(text);
    let doc: Value = serde_yaml::from_str(&im.yaml).unwrap();
    let vs = &doc["virtual_servers"][0];
    assert_eq!(vs["vip"].as_str(), Some("2001:db8::10"));
    assert_eq!(vs["sorry_server"]["ip"].as_str(), Some("2001:db8::99"));
    assert_eq!(vs["real_servers"][0]["ip"].as_str(), Some("2001:db8::2"));
    assert_eq!(
        vs["real_servers"][0]["tcp_check"]["bindto"].as_str(),
        Some("2001:db8::1")
    );
    // keepalived's IPv6 granularity is a prefix length, and stays a number in the YAML.
    assert_eq!(vs["persistence_granularity"].as_u64(), Some(64));
    let vs = &c.virtual_servers[0];
    assert_eq!(vs.key.vip, ip("2001:db8::10"));
    assert_eq!(
        vs.persistence,
        Some(Persistence {
            prefix6: 64,
            ..Persistence::per_client(360)
        }),
        "a granularity alone turns persistence on for keepalived's 360 s"
    );
    assert_eq!(vs.sorry_server.unwrap().addr, ip("2001:db8::99"));
    assert_eq!(vs.real_servers.len(), 1);
    let Some(Checker::Tcp(check)) = vs.real_servers[0].checks.first() else {
        panic!("no tcp_check");
    };
    assert_eq!(check.connect_ip, Some(ip("2001:db8::2")));
    assert_eq!(check.bindto, Some(ip("2001:db8::1")));
    // IPv6 is served: the only warning is keepalived's own, for the bracketed address, which
    // keepalived does not take (that real server is skipped, as keepalived does).
    assert_eq!(im.warnings.len(), 1, "{}", shown(&im));
    warned(
        &im,
        12,
        &["not an IP address and port", "skips this real server"],
    );
    assert!(!im.yaml.contains("not supported"), "{}", im.yaml);
}

#[test]
fn ipv6_granularity_must_be_a_prefix_length() {
    let text = |g: &str| {
        format!(
            "virtual_server 2001:db8::10 443 {{\n    lb_kind DR\n    persistence_timeout 50\n    \
             persistence_granularity {g}\n    real_server 2001:db8::2 443 {{\n    }}\n}}\n"
        )
    };
    for bad in ["255.255.255.0", "0", "129", "ffff:ffff::"] {
        let (im, c) = accepted(&text(bad));
        warned(
            &im,
            4,
            &[
                &format!("persistence_granularity {bad}: not a prefix length from 1 to 128"),
                "persistence_granularity stays 128",
            ],
        );
        assert_eq!(
            c.virtual_servers[0].persistence,
            Some(Persistence::per_client(50))
        );
    }
    let (im, c) = accepted(&text("128"));
    assert!(im.warnings.is_empty(), "{}", shown(&im));
    assert_eq!(c.virtual_servers[0].persistence.unwrap().prefix6, 128);
    // Dual stack: an IPv4 and an IPv6 service in one file convert side by side.
    let dual = format!(
        "{}{}",
        service("    persistence_granularity 255.255.255.0"),
        text("48")
    );
    let (im, c) = accepted(&dual);
    assert!(im.warnings.is_empty(), "{}", shown(&im));
    let p: Vec<_> = c
        .virtual_servers
        .iter()
        .map(|vs| vs.persistence.unwrap())
        .collect();
    assert_eq!(p[0].granularity, Ipv4Addr::new(255, 255, 255, 0));
    assert_eq!(p[1].prefix6, 48);
}

#[test]
fn unknown_and_misspelled_keywords_are_ignored_as_keepalived_does() {
    let text = r#"router_id lb1
virtual_server 10.0.0.1 80 {
    lb_alog wrr
    lb_kind DR
    protocal UDP
    real_server 10.0.0.2 80 {
        wieght 5
        tcp_check {
            connect_timeout 3
        }
    }
    frobnicate 3
}
"#;
    let (im, config) = accepted(text);
    warned(
        &im,
        1,
        &["unknown keyword \"router_id\": ignored as keepalived does"],
    );
    warned(
        &im,
        3,
        &[
            "unknown keyword \"lb_alog\" (did you mean \"lb_algo\"?): ignored as keepalived does; lb_algo stays wlc",
        ],
    );
    warned(
        &im,
        5,
        &[
            "unknown keyword \"protocal\" (did you mean \"protocol\"?): ignored as keepalived does; protocol stays TCP",
        ],
    );
    warned(
        &im,
        7,
        &[
            "unknown keyword \"wieght\" (did you mean \"weight\"?): ignored as keepalived does; weight stays 1",
        ],
    );
    warned(
        &im,
        8,
        &["unknown keyword \"tcp_check\" (did you mean \"TCP_CHECK\"?): ignored with its block"],
    );
    warned(
        &im,
        12,
        &["unknown keyword \"frobnicate\": ignored as keepalived does"],
    );
    // The misspelled lb_algo leaves keepalived's wlc, which lb-agent's default is too.
    assert_eq!(config.virtual_servers[0].lb_algo, LbAlgo::Wlc);
    assert_eq!(im.warnings.len(), 6, "{}", shown(&im));
    let doc: Value = serde_yaml::from_str(&im.yaml).unwrap();
    let real = &doc["virtual_servers"][0]["real_servers"][0];
    assert!(real.get("tcp_check").is_none() && real.get("weight").is_none());
    assert_eq!(doc["virtual_servers"][0]["protocol"].as_str(), Some("tcp"));
}

#[test]
fn comments_in_any_language_and_braces_anywhere() {
    let text = "! keepalived.conf — 负载均衡配置\n\
                virtual_server 10.0.0.1 5672 {   # 虚拟服务器 ! still a comment\n\
                \x20   lb_algo wrr ! 加权轮询\n\
                \x20   lb_kind DR#直接路由\n\
                \x20   quorum_up \"/bin/notify #1 !important\" # the quote protects # and !\n\
                \x20   real_server 10.0.0.2 5672 { weight 2 }\n\
                \x20   real_server 10.0.0.3 5672\n\
                \x20   {\n\
                \x20       TCP_CHECK { connect_timeout 3 }\n\
                \x20   }}\n";
    let (im, c) = accepted(text);
    assert!(im.warnings.is_empty(), "{}", shown(&im));
    let vs = &c.virtual_servers[0];
    assert_eq!((vs.lb_algo, vs.key.port), (LbAlgo::Wrr, 5672));
    assert_eq!(
        vs.quorum_up.as_deref(),
        Some("/bin/notify '#1' '!important'")
    );
    assert_eq!(vs.real_servers[0].weight, 2);
    let Some(Checker::Tcp(t)) = vs.real_servers[1].checks.first() else {
        panic!("tcp_check expected");
    };
    assert_eq!(t.timing.connect_timeout, secs(3.0));
}

#[test]
fn the_interface_comes_from_the_caller_or_the_vrrp_instance() {
    let text = "vrrp_instance VI_1 {\n    interface bond0\n    virtual_ipaddress {\n        \
                10.0.0.1\n    }\n}\n"
        .to_owned()
        + &service("");
    let im = import(&text, "").unwrap();
    assert!(im.yaml.contains("\ninterface: bond0\n"), "{}", im.yaml);
    warned(
        &im,
        2,
        &["no interface given: using bond0, the interface of vrrp_instance VI_1"],
    );
    let im = import(&text, "eth1").unwrap();
    assert!(im.yaml.contains("\ninterface: eth1\n"));
    assert_eq!(import(&service(""), ""), Err(ImportError::NoInterface));
    let e = import(&service(""), "not/an/interface").unwrap_err();
    assert!(matches!(e, ImportError::BadInterface { .. }), "{e}");
    assert_eq!(e.line(), None);
}

#[test]
fn vips_not_held_by_a_vrrp_instance_are_pointed_out() {
    let text = "vrrp_instance VI_1 {\n    interface eth0\n    virtual_ipaddress {\n        \
                10.0.0.1/24 dev eth0\n        10.0.0.2\n    }\n}\n"
        .to_owned()
        + &service("")
        + "virtual_server 10.0.0.9 80 {\n    lb_algo rr\n    lb_kind DR\n}\n";
    let (im, _) = accepted(&text);
    warned(&im, 1, &["it owns the VIPs 10.0.0.1, 10.0.0.2"]);
    warned(
        &im,
        13,
        &["VIP 10.0.0.9 is not a virtual_ipaddress of any vrrp_instance"],
    );
    assert_eq!(im.warnings.len(), 2, "{}", shown(&im));
}

#[test]
fn checkers_lb_agent_lacks_and_several_checkers() {
    let text = service(
        "    real_server 10.0.0.2 80 {\n        TCP_CHECK {\n        }\n        HTTP_GET {\n            \
         url {\n                path /\n                status_code 200\n            }\n        }\n    }\n    \
         real_server 10.0.0.3 80 {\n        BFD_CHECK {\n        }\n    }\n    \
         real_server 10.0.0.4 443 {\n        SSL_GET {\n            url {\n                path /\n            \
         }\n            connect_port 443\n        }\n    }",
    );
    let (im, err) = refused(&text);
    warned(&im, 15, &["BFD_CHECK is not supported", "always up"]);
    // The 443 real of a port-80 service is refused (direct routing keeps the port).
    warned(
        &im,
        18,
        &["real_servers[2].port: must equal the virtual server's port (80)"],
    );
    assert_eq!(err.errors.len(), 1);
    assert_eq!(im.warnings.len(), 2, "{}", shown(&im));
    let doc: Value = serde_yaml::from_str(&im.yaml).unwrap();
    let reals = &doc["virtual_servers"][0]["real_servers"];
    // Both checkers of the first real are converted: it is up while both pass.
    assert!(reals[0].get("tcp_check").is_some() && reals[0].get("http_get").is_some());
    assert!(reals[1].get("tcp_check").is_none());
    // SSL_GET is ssl_get, with HTTP_GET's default delay_before_retry.
    assert_eq!(reals[2]["ssl_get"]["connect_port"].as_u64(), Some(443));
    assert_eq!(reals[2]["ssl_get"]["url"][0]["path"].as_str(), Some("/"));
    assert_eq!(reals[2]["ssl_get"]["delay_before_retry"].as_u64(), Some(3));
    assert!(
        !im.warnings.iter().any(|w| w.message.contains("SSL_GET")),
        "{}",
        shown(&im)
    );
}

#[test]
fn ssl_get_converts_with_sni_and_the_global_ssl_client_certificate() {
    let text = "SSL {\n    password s3cret\n    ca /etc/keepalived/ca.pem\n    certificate \
                /etc/keepalived/client.pem\n    key /etc/keepalived/client.key\n}\n"
        .to_owned()
        + &service(
            "    real_server 10.0.0.2 80 {\n        SSL_GET {\n            url {\n                \
             path /health\n                digest 9b3a0c85a887a256d6939da88aabd8cd\n                \
             status_code 200\n            }\n            virtualhost www.example.org\n            \
             enable_sni\n            tls_compliant\n            connect_timeout 2\n        }\n    \
             }\n    real_server 10.0.0.3 80 {\n        SSL_GET {\n            url {\n                \
             path /\n            }\n            sni_name api.example.org\n        }\n    }\n    \
             real_server 10.0.0.4 80 {\n        HTTP_GET {\n            url {\n                \
             path /\n            }\n            enable_sni\n        }\n    }",
        );
    let (im, config) = accepted(&text);
    // Lines: SSL block 1-6, the service from 7 (its body from 10).
    warned(
        &im,
        2,
        &["SSL password is not carried", "unencrypted keys only"],
    );
    warned(
        &im,
        3,
        &["ca /etc/keepalived/ca.pem is not carried", "never verifies"],
    );
    warned(&im, 19, &["tls_compliant is not carried", "close_notify"]);
    warned(
        &im,
        36,
        &["enable_sni is not carried", "HTTP_GET has no TLS"],
    );
    assert_eq!(im.warnings.len(), 4, "{}", shown(&im));
    let reals = &config.virtual_servers[0].real_servers;
    let Some(Checker::Http(first)) = reals[0].checks.first() else {
        panic!("ssl_get expected: {:?}", reals[0].checks);
    };
    let tls = first.tls.as_ref().expect("an ssl_get");
    assert!(tls.enable_sni && tls.sni_name.is_none() && !tls.verify && tls.ca_file.is_none());
    let client = tls
        .client
        .as_ref()
        .expect("the global SSL block's certificate");
    assert_eq!(
        client.certificate_file,
        Path::new("/etc/keepalived/client.pem")
    );
    assert_eq!(client.key_file, Path::new("/etc/keepalived/client.key"));
    assert_eq!(first.virtualhost.as_deref(), Some("www.example.org"));
    assert_eq!(first.urls[0].status_code, StatusCodes::one(200));
    assert!(first.urls[0].digest.is_some());
    assert_eq!(first.timing.connect_timeout, secs(2.0));
    let Some(Checker::Http(second)) = reals[1].checks.first() else {
        panic!("ssl_get expected");
    };
    let tls = second.tls.as_ref().expect("an ssl_get");
    assert!(tls.enable_sni && tls.sni_name.as_deref() == Some("api.example.org"));
    assert!(
        tls.client.is_some(),
        "every SSL_GET presents the global certificate"
    );
    let Some(Checker::Http(plain)) = reals[2].checks.first() else {
        panic!("http_get expected");
    };
    assert!(plain.tls.is_none());
    // Keys in the order of configs/example.yaml's ssl_get (its HTTPS service).
    let ours: Value = serde_yaml::from_str(&im.yaml).unwrap();
    let example: Value =
        serde_yaml::from_str(&fs::read_to_string(repo_file("configs/example.yaml")).unwrap())
            .unwrap();
    // (The example's ssl_get leaves out the keys it shares with http_get, such as the timing.)
    let reference = "virtual_servers/2/real_servers/0/ssl_get";
    for (path, what) in [("", "ssl_get"), ("/tls", "ssl_get.tls")] {
        let theirs = keys_at(&example, &format!("{reference}{path}"));
        let mut keys = keys_at(
            &ours,
            &format!("virtual_servers/0/real_servers/0/ssl_get{path}"),
        );
        keys.retain(|k| theirs.contains(k));
        assert!(keys.len() >= 2, "{what}: {keys:?}");
        in_order(&keys, &theirs, what);
    }
    // The YAML says where the client certificate comes from.
    assert!(
        im.yaml.contains(
            "certificate_file: /etc/keepalived/client.pem   # keepalived's global SSL block"
        ),
        "{}",
        im.yaml
    );
}

#[test]
fn a_global_ssl_block_lb_agent_cannot_use_is_pointed_out() {
    let ssl_get = service(
        "    real_server 10.0.0.2 80 {\n        SSL_GET {\n            url {\n                \
         path /\n            }\n        }\n    }",
    );
    // A relative path, and a certificate without its key: nothing carried, each said.
    for (block, line, fragments) in [
        (
            "SSL {\n    certificate client.pem\n    key /k.pem\n}\n",
            2,
            &["SSL certificate client.pem is not an absolute path"][..],
        ),
        (
            "SSL {\n    certificate /c.pem\n}\n",
            2,
            &["SSL needs both certificate and key"][..],
        ),
        (
            "SSL {\n    cafile /ca.pem\n}\n",
            2,
            &["unknown keyword \"cafile\"", "ca"][..],
        ),
    ] {
        let (im, config) = accepted(&(block.to_owned() + &ssl_get));
        warned(&im, line, fragments);
        let Some(Checker::Http(h)) = config.virtual_servers[0].real_servers[0].checks.first()
        else {
            panic!("ssl_get expected");
        };
        assert_eq!(h.tls.as_ref().unwrap().client, None, "{block}");
    }
}

#[test]
fn per_real_forwarding_methods() {
    // keepalived's default NAT, but every real is DR: the service is DR.
    let text = "virtual_server 10.0.0.1 80 {\n    lb_algo rr\n    real_server 10.0.0.2 80 {\n        \
                lvs_method DR\n    }\n}\n";
    let (im, c) = accepted(text);
    assert!(im.warnings.is_empty(), "{}", shown(&im));
    assert_eq!(c.virtual_servers[0].real_servers.len(), 1);
    // Mixed methods cannot be carried.
    let text = "virtual_server 10.0.0.1 80 {\n    lb_algo rr\n    lb_kind DR\n    \
                real_server 10.0.0.2 80 {\n        lvs_method TUN\n    }\n    \
                real_server 10.0.0.3 80 {\n    }\n}\n";
    let (im, _) = accepted(text);
    warned(
        &im,
        1,
        &[
            "different forwarding methods (DR, TUN)",
            "lb_kind DR is used",
        ],
    );
}

#[test]
fn invalid_values_are_ignored_as_keepalived_does() {
    let text = service(
        "    delay_loop soon\n    quorum 0\n    real_server 10.0.0.2 80 {\n        weight -1\n        \
         TCP_CHECK {\n            connect_port 70000\n            retry\n        }\n    }",
    );
    let (im, c) = accepted(&text);
    warned(
        &im,
        4,
        &[
            "delay_loop soon: not a number of seconds",
            "delay_loop stays 60",
        ],
    );
    warned(&im, 5, &["quorum 0", "quorum is set to 1"]);
    warned(&im, 7, &["weight -1", "weight stays 1"]);
    warned(&im, 9, &["connect_port 70000: not a port"]);
    warned(&im, 10, &["retry has no value"]);
    let vs = &c.virtual_servers[0];
    assert_eq!((vs.delay_loop, vs.quorum), (secs(60.0), 1));
    assert_eq!(vs.real_servers[0].weight, 1);
}

#[test]
fn keepalived_only_blocks_get_one_warning_each() {
    let text =
        "global_defs {\n    router_id lb1\n}\nvrrp_script chk {\n    script \"/bin/true\"\n}\n\
                vrrp_sync_group G {\n    group {\n        VI_1\n    }\n}\nstatic_ipaddress {\n    \
                10.0.0.5/24 dev eth0\n}\n"
            .to_owned()
            + &service("");
    let (im, _) = accepted(&text);
    warned(
        &im,
        1,
        &["global_defs is handled by keepalived, not by lb-agent"],
    );
    warned(
        &im,
        4,
        &[
            "vrrp_script chk is handled by keepalived",
            "keep running keepalived for VRRP",
        ],
    );
    warned(&im, 7, &["vrrp_sync_group G is handled by keepalived"]);
    warned(&im, 12, &["static_ipaddress is handled by keepalived"]);
    assert_eq!(im.warnings.len(), 4, "{}", shown(&im));
}

#[test]
fn warnings_display_with_their_line() {
    let w = Warning {
        line: 42,
        file: None,
        message: "something".into(),
    };
    assert_eq!(w.to_string(), "line 42: something");
    let w = Warning {
        file: Some("conf.d/web.conf".into()),
        ..w
    };
    assert_eq!(w.to_string(), "line 42 of conf.d/web.conf: something");
}

#[test]
fn include_without_a_file_is_an_error_naming_its_line() {
    let text = format!("{}include conf.d/*.conf\n", service(""));
    let e = import(&text, "eth0").unwrap_err();
    assert!(matches!(e, ImportError::Unsupported { .. }), "{e}");
    assert_eq!(e.line(), Some(text.lines().count()));
    assert!(e.to_string().contains("include conf.d/*.conf"), "{e}");
}

#[test]
fn an_include_chain_imports_like_one_file() {
    let dir = std::env::temp_dir().join(format!("keepalived-import-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("conf.d")).unwrap();
    fs::write(
        dir.join("keepalived.conf"),
        "$VIP=10.0.0.1\ninclude conf.d/*.conf\n",
    )
    .unwrap();
    fs::write(
        dir.join("conf.d/web.conf"),
        "$VS=virtual_server $VIP $PORT { \\\n  lb_kind DR \\\n\
         @lb1 real_server 10.0.0.2 $PORT { weight 1 } \\\n\
         @lb2 real_server 10.0.0.3 $PORT { weight 1 } \\\n}\n\
         ~SEQ(PORT, 80, 1, 81) $VS\n",
    )
    .unwrap();
    let import_as = |id: &str| {
        let options = Options {
            interface: "eth0".into(),
            config_id: Some(id.into()),
            ..Options::default()
        };
        let im = import_file(&dir.join("keepalived.conf"), &options).unwrap();
        let c = Config::from_yaml(&im.yaml, Path::new("x.yaml")).unwrap();
        (im, c)
    };
    let (im, c) = import_as("lb1");
    let ports: Vec<(u16, String)> = c
        .virtual_servers
        .iter()
        .map(|v| (v.key.port, v.real_servers[0].key.addr.to_string()))
        .collect();
    assert_eq!(
        ports,
        [(80, "10.0.0.2".to_owned()), (81, "10.0.0.2".to_owned())],
        "{}",
        im.yaml
    );
    let skipped = im
        .warnings
        .iter()
        .find(|w| w.message.contains("@lb2"))
        .unwrap();
    // The line that generated it.
    assert_eq!(skipped.line, 6);
    assert!(skipped.file.as_deref().unwrap().ends_with("web.conf"));
    let (_, c) = import_as("lb2");
    assert_eq!(
        c.virtual_servers[0].real_servers[0].key.addr.to_string(),
        "10.0.0.3"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn udp_check_converts() {
    let text = service(
        "    real_server 10.0.0.2 80 {\n        UDP_CHECK {\n            payload 00FF10\n            \
         require_reply C0\n            connect_port 53\n            connect_timeout 2\n            \
         retry 2\n            min_reply_length 4\n        }\n    }\n    \
         real_server 10.0.0.3 80 {\n        UDP_CHECK {\n            require_reply\n        }\n    }\n    \
         real_server 10.0.0.4 80 {\n        UDP_CHECK {\n            payload 0g\n        }\n    }",
    );
    let (im, config) = accepted(&text);
    let checks: Vec<_> = config.virtual_servers[0]
        .real_servers
        .iter()
        .map(|r| match r.checks.first() {
            Some(Checker::Udp(u)) => u.clone(),
            other => panic!("not a udp_check: {other:?}"),
        })
        .collect();
    assert_eq!(checks[0].payload, [0x00, 0xff, 0x10]);
    assert_eq!(checks[0].require_reply, Some(vec![0xc0]));
    assert_eq!(checks[0].connect_port, Some(53));
    assert_eq!(checks[0].timing.connect_timeout, secs(2.0));
    assert_eq!(checks[0].timing.retry, 2);
    assert_eq!(checks[0].timing.delay_before_retry, secs(1.0));
    assert_eq!(checks[1].require_reply, Some(Vec::new()));
    assert!(checks[1].payload.is_empty());
    assert_eq!(checks[2].payload, Vec::<u8>::new());
    assert_eq!(checks[2].require_reply, None);
    warned(&im, 11, &["min_reply_length 4 is not carried"]);
    warned(
        &im,
        21,
        &["payload 0g: not hexadecimal digits", "empty datagram"],
    );
    assert_eq!(im.warnings.len(), 2, "{}", shown(&im));
}

#[test]
fn dns_check_converts() {
    let text = "virtual_server 10.0.0.1 53 {\n    lb_algo rr\n    lb_kind DR\n    protocol UDP\n    \
         real_server 10.0.0.2 53 {\n        DNS_CHECK {\n            type aaaa\n            \
         name www.example.org\n            connect_timeout 2\n        }\n    }\n    \
         real_server 10.0.0.3 53 {\n        DNS_CHECK {\n            type PTR\n        }\n    }\n}\n";
    let (im, config) = accepted(text);
    let checks: Vec<_> = config.virtual_servers[0]
        .real_servers
        .iter()
        .map(|r| match r.checks.first() {
            Some(Checker::Dns(d)) => d.clone(),
            other => panic!("not a dns_check: {other:?}"),
        })
        .collect();
    use lb_userspace::config::DnsType;
    assert_eq!(checks[0].query_type, DnsType::Aaaa);
    assert_eq!(checks[0].name, "www.example.org");
    assert_eq!(checks[0].timing.connect_timeout, secs(2.0));
    assert_eq!(
        (checks[1].query_type, checks[1].name.as_str()),
        (DnsType::Soa, ".")
    );
    warned(
        &im,
        14,
        &["type PTR: not A, NS, CNAME, SOA, MX, TXT or AAAA", "SOA"],
    );
    assert_eq!(im.warnings.len(), 1, "{}", shown(&im));
}

#[test]
fn ping_check_converts() {
    let text = service(
        "    real_server 10.0.0.2 80 {\n        PING_CHECK {\n            connect_ip 10.0.1.2\n            \
         connect_port 80\n            connect_timeout 1\n            retry 3\n        }\n    }",
    );
    let (im, config) = accepted(&text);
    let Some(Checker::Ping(p)) = config.virtual_servers[0].real_servers[0].checks.first() else {
        panic!("not a ping_check:\n{}", im.yaml)
    };
    assert_eq!(p.connect_ip, Some(ip("10.0.1.2")));
    assert_eq!(p.bindto, None);
    assert_eq!(p.timing.connect_timeout, secs(1.0));
    assert_eq!(p.timing.retry, 3);
    warned(&im, 7, &["connect_port 80 is not carried", "no port"]);
    assert_eq!(im.warnings.len(), 1, "{}", shown(&im));
}

#[test]
fn smtp_check_converts() {
    let text = service(
        "    real_server 10.0.0.2 80 {\n        SMTP_CHECK {\n            helo_name lb.example.org\n            \
         connect_port 25\n            connect_timeout 3\n            host {\n                \
         connect_ip 10.0.0.9\n            }\n        }\n    }\n    \
         real_server 10.0.0.3 80 {\n        SMTP_CHECK {\n        }\n    }",
    );
    let (im, config) = accepted(&text);
    let checks: Vec<_> = config.virtual_servers[0]
        .real_servers
        .iter()
        .map(|r| match r.checks.first() {
            Some(Checker::Smtp(c)) => c.clone(),
            other => panic!("not an smtp_check: {other:?}"),
        })
        .collect();
    assert_eq!(checks[0].helo_name.as_deref(), Some("lb.example.org"));
    assert_eq!(checks[0].connect_port, Some(25));
    assert_eq!(checks[0].timing.connect_timeout, secs(3.0));
    assert_eq!(checks[1].helo_name, None);
    warned(&im, 9, &["host", "is not carried", "one address"]);
    assert_eq!(im.warnings.len(), 1, "{}", shown(&im));
}

#[test]
fn two_checkers_of_a_kind_go_in_a_checks_list() {
    let text = service(
        "    real_server 10.0.0.2 80 {\n        TCP_CHECK {\n        }\n        TCP_CHECK {\n            \
         connect_port 8080\n        }\n        MISC_CHECK {\n            misc_path /bin/true\n        }\n    }",
    );
    let (im, c) = accepted(&text);
    assert_eq!(im.warnings.len(), 0, "{}", shown(&im));
    assert!(im.yaml.contains("checks:"), "{}", im.yaml);
    let checks = &c.virtual_servers[0].real_servers[0].checks;
    assert_eq!(checks.len(), 3, "{checks:?}");
    let Checker::Tcp(t) = &checks[1] else {
        panic!("{checks:?}")
    };
    assert_eq!(t.connect_port, Some(8080));
    assert!(matches!(checks[2], Checker::Misc(_)));
}

#[test]
fn file_check_converts_with_its_track_file() {
    let text = "track_file maint {\n    file /run/lb/maint\n    weight 5 reverse\n    \
                init_file 2 overwrite\n}\ntrack_file vrrp_only {\n    file /run/x\n}\n"
        .to_owned()
        + &service(
            "    real_server 10.0.0.2 80 {\n        FILE_CHECK {\n            track_file maint\n        \
             }\n        TCP_CHECK {\n        }\n    }\n    real_server 10.0.0.3 80 {\n        \
             FILE_CHECK {\n            track_file maint\n            weight 0\n        }\n    }\n    \
             real_server 10.0.0.4 80 {\n        FILE_CHECK {\n            track_file missing\n        \
             }\n    }",
        );
    let (im, c) = accepted(&text);
    let reals = &c.virtual_servers[0].real_servers;
    // The track_file's weight, reverse and init_file.
    assert_eq!(
        reals[0].checks[0],
        Checker::File(FileCheck {
            path: "/run/lb/maint".into(),
            weight: 5,
            reverse: true,
            init_file: Some(FileInit {
                value: 2,
                overwrite: true,
            }),
        })
    );
    assert!(matches!(reals[0].checks[1], Checker::Tcp(_)));
    // The FILE_CHECK's own weight replaces the track_file's, reverse included.
    let Checker::File(f) = &reals[1].checks[0] else {
        panic!("{:?}", reals[1].checks)
    };
    assert_eq!((f.weight, f.reverse), (0, false));
    // An undefined track_file: keepalived drops the checker.
    assert!(reals[2].checks.is_empty());
    warned(
        &im,
        27,
        &["track_file missing is not defined", "not converted"],
    );
    // A track_file no FILE_CHECK names stays keepalived's.
    warned(&im, 6, &["track_file vrrp_only is handled by keepalived"]);
    assert_eq!(im.warnings.len(), 2, "{}", shown(&im));
}

#[test]
fn real_thresholds_are_carried() {
    let real = |body: &str| {
        service(&format!(
            "    real_server 10.0.0.2 80 {{\n{body}    }}\n    real_server 10.0.0.3 80 {{\n    }}"
        ))
    };
    let (_, c) = accepted(&real("        uthreshold 100\n        lthreshold 40\n"));
    let rs = &c.virtual_servers[0].real_servers;
    assert_eq!(
        rs[0].thresholds,
        Thresholds {
            upper: 100,
            lower: 40
        }
    );
    assert_eq!(rs[1].thresholds, Thresholds::default());
    // A lower threshold IPVS would ignore is left out, with a warning.
    let (im, c) = accepted(&real("        lthreshold 40\n"));
    assert_eq!(
        c.virtual_servers[0].real_servers[0].thresholds,
        Thresholds::default()
    );
    assert!(
        im.warnings
            .iter()
            .any(|w| w.message.contains("lthreshold 40 without an uthreshold"))
    );
    let (im, c) = accepted(&real("        uthreshold 10\n        lthreshold 40\n"));
    assert_eq!(
        c.virtual_servers[0].real_servers[0].thresholds,
        Thresholds {
            upper: 10,
            lower: 0
        }
    );
    assert!(
        im.warnings
            .iter()
            .any(|w| w.message.contains("above uthreshold 10"))
    );
    let (im, _) = accepted(&real("        uthreshold -5\n"));
    assert!(im.warnings.iter().any(|w| w.message.contains("uthreshold")));
}

#[test]
fn fo_and_ovf_are_carried() {
    for (line, algo) in [
        ("lb_algo fo", LbAlgo::Fo),
        ("lvs_sched fo", LbAlgo::Fo),
        ("lb_algo ovf", LbAlgo::Ovf),
        ("lvs_sched ovf", LbAlgo::Ovf),
        ("lb_algo twos", LbAlgo::Twos),
    ] {
        let text = service("").replace("lb_algo rr", line);
        let (_, c) = accepted(&text);
        assert_eq!(c.virtual_servers[0].lb_algo, algo, "{line}");
    }
}

#[test]
fn scheduler_flags_are_carried_for_their_scheduler() {
    let text = "virtual_server 10.0.0.1 53 {\n    lb_algo sh\n    lb_kind DR\n    protocol UDP\n    \
                sh-port\n    sh-fallback\n    ops\n    mh-port\n    real_server 10.0.0.2 53 {\n    \
                }\n}\n";
    let (im, c) = accepted(text);
    assert_eq!(
        c.virtual_servers[0].lb_flags,
        SchedFlags {
            port: true,
            fallback: true,
            one_packet: true
        }
    );
    warned(
        &im,
        8,
        &["mh-port only applies to the mh scheduler", "not converted"],
    );
    // Before lb_algo, keepalived checks the flag against its default, wlc: ignored.
    let text = "virtual_server 10.0.0.1 80 {\n    mh-fallback\n    lb_algo mh\n    lb_kind DR\n    \
                real_server 10.0.0.2 80 {\n    }\n}\n";
    let (im, c) = accepted(text);
    assert_eq!(c.virtual_servers[0].lb_flags, SchedFlags::default());
    warned(
        &im,
        2,
        &["mh-fallback only applies to the mh scheduler", "wlc"],
    );
    let (_, c) = accepted(&service("").replace("lb_algo rr", "lb_algo dh"));
    assert_eq!(c.virtual_servers[0].lb_algo, LbAlgo::Dh);
}
