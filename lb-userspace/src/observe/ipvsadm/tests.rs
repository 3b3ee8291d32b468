//! Golden tests: fixed snapshots compared byte for byte with `tests/golden/*.txt`.
//!
//! The `reference-*` files are the layouts of `shared/reference/ipvsadm-output-layouts.txt`
//! (real ipvsadm output). The `sample-*` files were checked column by column against
//! ipvsadm's printf formats; regenerate them after an intended change with
//! `UPDATE_GOLDEN=1 cargo test -p lb-userspace --lib ipvsadm` and review the diff.

use std::{collections::HashMap, net::IpAddr, path::PathBuf};

use super::*;
use crate::control::fixtures::{self, ip, tcp};

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    if expected != actual {
        // Line ends shown as `$` so that trailing spaces are visible.
        let show = |s: &str| s.replace('\n', "$\n");
        panic!(
            "{name} differs\n--- expected\n{}--- actual\n{}",
            show(&expected),
            show(actual)
        );
    }
}

fn numeric() -> Format {
    Format {
        numeric: true,
        ..Format::default()
    }
}

/// The reference's `--stats`/`--rate` excerpts show service 5672 with its first real only.
fn reference_excerpt() -> Snapshot {
    let mut snap = fixtures::reference();
    snap.services.truncate(1);
    snap.services[0].reals.truncate(1);
    snap
}

#[test]
fn reference_default_listing() {
    golden(
        "reference-default.txt",
        &list(&fixtures::reference(), &numeric()),
    );
}

#[test]
fn reference_stats() {
    let fmt = Format {
        stats: true,
        only: Some(tcp("10.0.0.100", 5672)),
        ..numeric()
    };
    golden("reference-stats.txt", &list(&reference_excerpt(), &fmt));
}

#[test]
fn reference_rate() {
    let fmt = Format {
        rate: true,
        only: Some(tcp("10.0.0.100", 5672)),
        ..numeric()
    };
    golden("reference-rate.txt", &list(&reference_excerpt(), &fmt));
}

#[test]
fn reference_connections() {
    golden(
        "reference-connections.txt",
        &connections(&fixtures::reference(), true),
    );
}

#[test]
fn reference_timeout() {
    golden("reference-timeout.txt", &timeouts(&fixtures::reference()));
}

#[test]
fn sample_conn_table() {
    let snap = fixtures::sample();
    golden("sample-conn-table.txt", &conn_table(&snap));
    golden("sample-conn-table.json", &json(&snap, JsonView::ConnTable));
}

#[test]
fn sample_default_listing() {
    golden("sample-default.txt", &list(&fixtures::sample(), &numeric()));
}

#[test]
fn sample_stats() {
    let fmt = Format {
        stats: true,
        ..numeric()
    };
    golden("sample-stats.txt", &list(&fixtures::sample(), &fmt));
}

#[test]
fn sample_stats_exact() {
    let fmt = Format {
        stats: true,
        exact: true,
        ..numeric()
    };
    golden("sample-stats-exact.txt", &list(&fixtures::sample(), &fmt));
}

#[test]
fn sample_rate() {
    let fmt = Format {
        rate: true,
        ..numeric()
    };
    golden("sample-rate.txt", &list(&fixtures::sample(), &fmt));
}

#[test]
fn sample_rate_exact() {
    let fmt = Format {
        rate: true,
        exact: true,
        ..numeric()
    };
    golden("sample-rate-exact.txt", &list(&fixtures::sample(), &fmt));
}

#[test]
fn stats_wins_over_rate_as_in_ipvsadm() {
    let both = Format {
        stats: true,
        rate: true,
        ..numeric()
    };
    let stats = Format {
        stats: true,
        ..numeric()
    };
    let snap = fixtures::sample();
    assert_eq!(list(&snap, &both), list(&snap, &stats));
}

#[test]
fn sample_health() {
    let fmt = Format {
        health: true,
        ..numeric()
    };
    golden("sample-health.txt", &list(&fixtures::sample(), &fmt));
}

#[test]
fn health_keeps_ipvsadm_columns() {
    let snap = fixtures::sample();
    let plain = list(&snap, &numeric());
    let health = list(
        &snap,
        &Format {
            health: true,
            ..numeric()
        },
    );
    // Every line of the plain listing starts a line of the health listing (which may have
    // more lines: standby sorry servers).
    let health_lines: Vec<&str> = health.lines().collect();
    for line in plain.lines() {
        assert!(
            health_lines.iter().any(|h| h.starts_with(line)),
            "{line:?} lost its columns"
        );
    }
    for line in health_lines.iter().filter(|l| l.starts_with("  -> ")) {
        assert!(!line.ends_with(' '), "trailing space in {line:?}");
    }
}

#[test]
fn amqp_check_fits_the_checker_column() {
    let mut snap = fixtures::sample();
    // The web service's first real, up with a tcp_check in the sample.
    let real = &mut snap.services[1].reals[0];
    assert_eq!(real.health.checker, "tcp_check");
    real.health.checker = "amqp_check".into();
    real.health.last_result = Some("no alarm".into());
    let fmt = Format {
        health: true,
        ..numeric()
    };
    let text = list(&snap, &fmt);
    let amqp = text.lines().find(|l| l.contains("amqp_check")).unwrap();
    let tcp = text.lines().find(|l| l.contains("tcp_check")).unwrap();
    let column = amqp.find("amqp_check").unwrap();
    assert_eq!(tcp.find("tcp_check"), Some(column), "{amqp}\n{tcp}");
    // The longest checker name still leaves a space before the state.
    assert_eq!(&amqp[column..column + 14], "amqp_check up ", "{amqp}");
    assert!(amqp.contains(" no alarm "), "{amqp}");
}

#[test]
fn one_service() {
    let fmt = Format {
        only: Some(tcp("10.0.0.100", 443)),
        ..numeric()
    };
    golden("sample-one-service.txt", &list(&fixtures::sample(), &fmt));
}

#[test]
fn one_unknown_service_prints_titles_only() {
    let fmt = Format {
        only: Some(tcp("10.9.9.9", 1)),
        ..numeric()
    };
    assert_eq!(
        list(&fixtures::sample(), &fmt),
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    );
}

#[test]
fn empty_service_list() {
    let snap = fixtures::snapshot(vec![]);
    assert_eq!(
        list(&snap, &numeric()),
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    );
    let stats = Format {
        stats: true,
        ..numeric()
    };
    assert_eq!(
        list(&snap, &stats),
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  \
         -> RemoteAddress:Port\n"
    );
    assert_eq!(
        connections(&snap, true),
        "IPVS connection entries\n\
         pro expire state       source             virtual            destination\n"
    );
}

#[test]
fn sample_connections() {
    golden(
        "sample-connections.txt",
        &connections(&fixtures::sample(), true),
    );
}

#[test]
fn dual_stack_listings() {
    let snap = fixtures::dual_stack();
    golden("dual-stack-default.txt", &list(&snap, &numeric()));
    let stats = Format {
        stats: true,
        ..numeric()
    };
    golden("dual-stack-stats.txt", &list(&snap, &stats));
    let rate = Format {
        rate: true,
        ..numeric()
    };
    golden("dual-stack-rate.txt", &list(&snap, &rate));
    golden("dual-stack-connections.txt", &connections(&snap, true));
    golden(
        "dual-stack.json",
        &json(&snap, JsonView::Services { only: None }),
    );
    golden(
        "dual-stack-connections.json",
        &json(&snap, JsonView::Connections),
    );
    // One IPv6 service alone (`-L -n -t [2001:db8::100]:443`).
    let one = Format {
        only: Some(tcp("2001:db8::100", 443)),
        ..numeric()
    };
    assert_eq!(
        list(&snap, &one),
        "Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
         TCP  [2001:db8::100]:443 sh persistent 300 mask 64\n  \
         -> [2001:db8:0:1::21]:443       Route   1      7          0         \n"
    );
}

#[test]
fn services_are_in_ipvsadm_order_across_families() {
    let listing = list(&fixtures::dual_stack(), &numeric());
    let services: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("TCP ") || l.starts_with("UDP "))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    // IPv4 before IPv6, then TCP before UDP, then address and port.
    assert_eq!(
        services,
        [
            "10.0.0.100:80",
            "10.0.0.53:53",
            "[2001:db8::100]:80",
            "[2001:db8::100]:443",
            "[2001:db8::53]:53"
        ]
    );
}

/// A resolver with a few fixed names, some longer than ipvsadm's columns.
struct Names;

impl Resolver for Names {
    fn host(&self, addr: IpAddr) -> Option<String> {
        let names: HashMap<IpAddr, &str> = [
            (ip("10.0.0.100"), "www.example.com"),
            (
                ip("10.0.0.200"),
                "a-very-long-virtual-server-name.example.org",
            ),
            (ip("10.0.0.11"), "web-1.example.com"),
            (ip("10.0.0.12"), "a-very-long-real-server-name.example.net"),
            (ip("2001:db8::11"), "web6-1.example.com"),
            (ip("192.168.7.21"), "client.example.com"),
        ]
        .into_iter()
        .collect();
        names.get(&addr).map(|n| (*n).to_owned())
    }

    fn service(&self, port: u16, proto: Protocol) -> Option<String> {
        let services = Services::parse(
            "http 80/tcp www\nhttps 443/tcp\ndomain 53/tcp\ndomain 53/udp\n# comment\n",
        );
        services.name(port, proto).map(str::to_owned)
    }
}

#[test]
fn sample_names() {
    golden(
        "sample-names.txt",
        &list_with(&fixtures::sample(), &Format::default(), &Names),
    );
}

#[test]
fn sample_connections_names() {
    golden(
        "sample-connections-names.txt",
        &connections_with(&fixtures::sample(), &Names),
    );
}

#[test]
fn numeric_ignores_the_resolver() {
    let snap = fixtures::sample();
    assert_eq!(
        list_with(&snap, &numeric(), &Names),
        list(&snap, &numeric())
    );
}

#[test]
fn largenum_boundaries() {
    let cases: [(u64, &str); 14] = [
        (0, "        0"),
        (99_999_999, " 99999999"),
        (100_000_000, "  100000K"),
        (999_999_999, "  999999K"),
        (1_000_000_000, "    1000M"),
        (2_110_654_321, "    2110M"),
        (99_999_999_999, "   99999M"),
        (100_000_000_000, "     100G"),
        (99_999_999_999_999, "   99999G"),
        (100_000_000_000_000, "     100T"),
        (99_999_999_999_999_999, "   99999T"),
        (100_000_000_000_000_000, "  100000T"),
        (u64::MAX, "18446744T"),
        (12_345, "    12345"),
    ];
    for (n, want) in cases {
        assert_eq!(largenum(n, false), want, "{n}");
    }
}

#[test]
fn largenum_exact() {
    assert_eq!(largenum(0, true), "        0");
    assert_eq!(largenum(99_999_999, true), " 99999999");
    assert_eq!(largenum(100_000_000, true), " 100000000");
    assert_eq!(largenum(u64::MAX, true), " 18446744073709551615");
}

#[test]
fn host_masks() {
    for m in [
        "255.255.255.255",
        "32",
        "128",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ] {
        assert!(is_host_mask(m), "{m}");
    }
    for m in ["255.255.255.0", "24", "0.0.0.0"] {
        assert!(!is_host_mask(m), "{m}");
    }
}

#[test]
fn durations_and_latencies() {
    assert_eq!(duration(0), "0s");
    assert_eq!(duration(59), "59s");
    assert_eq!(duration(60), "1m00s");
    assert_eq!(duration(3599), "59m59s");
    assert_eq!(duration(3600), "1h00m");
    assert_eq!(duration(86_399), "23h59m");
    assert_eq!(duration(86_400), "1d00h");
    assert_eq!(latency(0.42), "0.4ms");
    assert_eq!(latency(9.94), "9.9ms");
    assert_eq!(latency(10.0), "10ms");
    assert_eq!(latency(999.4), "999ms");
    assert_eq!(latency(1000.0), "1.00s");
    assert_eq!(latency(f64::NAN), "-");
}

#[test]
fn services_file() {
    let db = Services::parse(
        "# header\n\
         amqp\t\t5672/tcp\n\
         amqp\t\t5672/udp\n\
         http\t\t80/tcp\t\twww www-http\t# WorldWideWeb\n\
         bad line\n\
         x 99999/tcp\n\
         y 7/sctp\n",
    );
    assert_eq!(db.name(5672, Protocol::Tcp), Some("amqp"));
    assert_eq!(db.name(80, Protocol::Udp), None);
    assert_eq!(db.port("www", Protocol::Tcp), Some(80));
    assert_eq!(db.port("http", Protocol::Udp), None);
    assert_eq!(db.port("x", Protocol::Tcp), None);
    assert_eq!(db.name(7, Protocol::Tcp), None);
}

#[test]
fn system_resolver_falls_back_to_numbers() {
    // 192.0.2.0/24 (TEST-NET-1) has no reverse names; port 4 is unassigned.
    let r = SystemResolver::new();
    let snap = fixtures::snapshot(vec![fixtures::service(
        tcp("192.0.2.1", 4),
        "wrr",
        vec![fixtures::real("192.0.2.2", 4, 1, 0, 0)],
    )]);
    let out = list_with(&snap, &Format::default(), &r);
    assert!(out.contains("TCP  192.0.2.1:4 wrr\n"), "{out}");
    assert!(out.contains("  -> 192.0.2.2:4 "), "{out}");
}

#[test]
fn json_views() {
    let snap = fixtures::sample();
    assert_eq!(
        json(&snap, JsonView::Timeouts),
        "{\n  \"tcp\": 900,\n  \"tcpfin\": 120,\n  \"udp\": 300\n}\n"
    );
    golden(
        "sample-connections.json",
        &json(&snap, JsonView::Connections),
    );
    golden(
        "sample-one-service.json",
        &json(
            &snap,
            JsonView::Services {
                only: Some(tcp("10.0.0.100", 443)),
            },
        ),
    );

    let all: serde_json::Value =
        serde_json::from_str(&json(&snap, JsonView::Services { only: None })).unwrap();
    assert_eq!(all["conn_table_size"], 1 << 20);
    assert_eq!(all["global"]["drop_no_real"], 1000);
    let order: Vec<String> = all["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {}:{}",
                s["key"]["proto"].as_str().unwrap(),
                s["key"]["vip"].as_str().unwrap(),
                s["key"]["port"]
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "tcp 10.0.0.100:80",
            "tcp 10.0.0.100:443",
            "tcp 10.0.0.200:8080",
            "udp 10.0.0.53:53",
            "tcp 2001:db8::100:443"
        ]
    );
    // Every service round-trips through the JSON.
    let back: Vec<ServiceInfo> = serde_json::from_value(all["services"].clone()).unwrap();
    assert_eq!(back.len(), snap.services.len());
    for s in &back {
        assert!(snap.services.contains(s));
    }

    let empty = fixtures::snapshot(vec![]);
    assert_eq!(json(&empty, JsonView::Connections), "[]\n");
}

/// The first two lines are ipvsadm's daemon lines (its order of options); the rest are ours.
#[test]
fn sample_daemon() {
    let snap = fixtures::sample();
    golden("sample-daemon.txt", &daemons(&snap));
    let text = json(&snap, JsonView::Daemon);
    golden("sample-daemon.json", &text);
    let back: crate::control::SyncInfo = serde_json::from_str(&text).unwrap();
    assert_eq!(Some(Box::new(back)), snap.sync);
}

#[test]
fn daemon_with_a_group_and_peers() {
    let out = daemons(&fixtures::sample());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..5],
        [
            "master sync daemon (mcast=eth0, syncid=51, maxlen=1452, group=224.0.0.81, port=8848, ttl=1)",
            "backup sync daemon (mcast=eth0, syncid=51, maxlen=1452, group=224.0.0.81, port=8848, ttl=1)",
            "peers: 10.0.0.2, 10.0.0.3",
            "peer 10.0.0.2:8848 sender 0c1d2e3f4a5b6c7d last heard 0s ago, 1012004 records",
            "peer 10.0.0.3:8848 sender 00f0000000000a0b last heard 1m35s ago, 187306 records",
        ]
    );
    assert_eq!(
        lines.last(),
        Some(&"last error: send to 10.0.0.3:8848: No route to host (1m35s ago)")
    );
}

#[test]
fn daemon_without_a_group() {
    let mut snap = fixtures::sample();
    let sync = snap.sync.as_mut().unwrap();
    sync.group = None;
    sync.heard.clear();
    sync.resync = String::new();
    sync.last_error = None;
    assert_eq!(
        daemons(&snap),
        "master sync daemon (mcast=eth0, syncid=51, maxlen=1452, port=8848, ttl=1)\n\
         backup sync daemon (mcast=eth0, syncid=51, maxlen=1452, port=8848, ttl=1)\n\
         peers: 10.0.0.2, 10.0.0.3\n\
         sent: 48213 datagrams, 1204977 records, 2 errors (not sent: real gone 7, overwritten \
         unread 11)\n\
         received: 47990 datagrams, 1199310 records (stored 1150002, refreshed 48100, kept 1150, \
         unplaced 54, no room 4)\n\
         rejected: auth 3, replay 1, other group 0, malformed 2\n\
         lag: last 3.5 ms, max 41.5 ms\n\
         resync: -\n"
    );
}

#[test]
fn daemon_with_a_group_only() {
    let mut snap = fixtures::sample();
    let sync = snap.sync.as_mut().unwrap();
    sync.group = Some(ip("ff02::1:8848"));
    sync.peers.clear();
    sync.heard[0].addr = None;
    sync.heard[0].last_heard_secs = f64::NAN;
    sync.lag_ms = f64::INFINITY;
    let out = daemons(&snap);
    assert!(
        out.starts_with(
            "master sync daemon (mcast=eth0, syncid=51, maxlen=1452, group=ff02::1:8848, port=8848, ttl=1)\n"
        ),
        "{out}"
    );
    assert!(out.contains("\npeers: none\n"), "{out}");
    assert!(
        out.contains("\npeer - sender 0c1d2e3f4a5b6c7d last heard 0s ago, 1012004 records\n"),
        "{out}"
    );
    assert!(out.contains("\nlag: last - ms, max 41.5 ms\n"), "{out}");
}

#[test]
fn daemon_off_prints_nothing() {
    let snap = fixtures::reference();
    assert_eq!(snap.sync, None);
    assert_eq!(daemons(&snap), "");
    assert_eq!(json(&snap, JsonView::Daemon), "null\n");
}

#[test]
fn scheduler_flags_are_listed_as_ipvsadm_lists_them() {
    let mut snap = fixtures::sample();
    snap.services[0].scheduler = "sh".into();
    snap.services[0].flags = vec!["sh-fallback".into(), "sh-port".into(), "ops".into()];
    golden("sample-flags.txt", &list(&snap, &numeric()));
}
