use std::collections::{BTreeMap, HashMap};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::*;
use crate::control::fixtures::{reference, sample};

/// One sample: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict reader of the Prometheus text format 0.0.4: every line is a HELP or TYPE comment
/// or `name{labels} value`; every sample's family has exactly one HELP and one TYPE, given
/// before its samples; no sample appears twice.
fn parse(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
    assert!(text.ends_with('\n'), "no final newline");
    let mut help: HashMap<String, String> = HashMap::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    let mut seen = HashSet::new();
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').expect(line);
            assert!(is_name(name), "{line}");
            assert!(!doc.is_empty(), "{line}");
            assert!(
                help.insert(name.into(), doc.into()).is_none(),
                "second HELP: {line}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect(line);
            assert!(["counter", "gauge"].contains(&ty), "{line}");
            assert!(help.contains_key(name), "TYPE before HELP: {line}");
            assert!(
                types.insert(name.into(), ty.into()).is_none(),
                "second TYPE: {line}"
            );
            if ty == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect(line);
                let mut labels = BTreeMap::new();
                for pair in body.split(',') {
                    let (k, v) = pair.split_once('=').expect(line);
                    assert!(is_name(k), "{line}");
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .expect(line);
                    assert!(!v.contains(['"', '\\', '\n']), "{line}");
                    assert!(
                        labels.insert(k.to_owned(), v.to_owned()).is_none(),
                        "{line}"
                    );
                }
                (name, labels)
            }
        };
        assert!(is_name(name), "{line}");
        assert!(
            types.contains_key(name),
            "sample before/without TYPE: {line}"
        );
        assert!(seen.insert(series.to_owned()), "duplicate series {series}");
        samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    (types, samples)
}

/// The value of the one sample of `name` whose labels include `want`.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
    found[0].value
}

#[test]
fn render_is_valid_and_exact() {
    let snap = sample();
    let text = render(&snap);
    let (types, samples) = parse(&text);

    // Names and types.
    for (name, ty) in [
        ("lb_service_connections_total", "counter"),
        ("lb_service_in_packets_total", "counter"),
        ("lb_service_in_bytes_total", "counter"),
        ("lb_real_in_bytes_total", "counter"),
        ("lb_real_active_connections", "gauge"),
        ("lb_real_up", "gauge"),
        ("lb_real_check_latency_seconds", "gauge"),
        ("lb_packets_dropped_total", "counter"),
        ("lb_conn_table_entries", "gauge"),
        ("lb_conn_table_size", "gauge"),
        ("lb_reloads_total", "counter"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(ty), "{name}");
    }
    for name in types.keys() {
        assert!(name.starts_with("lb_"), "{name}");
    }

    // Every service and real counter equals the snapshot's.
    for svc in &snap.services {
        let port = svc.key.port.to_string();
        let vip = svc.key.vip.to_string();
        let proto = svc.key.proto.name().to_ascii_lowercase();
        let l = [
            ("vip", vip.as_str()),
            ("port", port.as_str()),
            ("protocol", proto.as_str()),
        ];
        let s = &svc.stats;
        for (name, want) in [
            ("lb_service_connections_total", s.conns),
            ("lb_service_in_packets_total", s.in_pkts),
            ("lb_service_out_packets_total", s.out_pkts),
            ("lb_service_in_bytes_total", s.in_bytes),
            ("lb_service_out_bytes_total", s.out_bytes),
        ] {
            assert_eq!(value(&samples, name, &l), want as f64, "{name} {l:?}");
        }
        let active: u64 = svc.reals.iter().map(|r| r.active_conns).sum();
        assert_eq!(
            value(&samples, "lb_service_active_connections", &l),
            active as f64
        );
        assert_eq!(
            value(&samples, "lb_service_sorry_server_active", &l),
            f64::from(u8::from(svc.sorry_server_active))
        );
        for r in &svc.reals {
            let addr = r.key.addr.to_string();
            let mut l = l.to_vec();
            l.push(("real", addr.as_str()));
            for (name, want) in [
                ("lb_real_connections_total", r.stats.conns),
                ("lb_real_in_packets_total", r.stats.in_pkts),
                ("lb_real_in_bytes_total", r.stats.in_bytes),
                ("lb_real_out_bytes_total", r.stats.out_bytes),
                ("lb_real_active_connections", r.active_conns),
                ("lb_real_inactive_connections", r.inactive_conns),
                ("lb_real_weight", u64::from(r.weight)),
                ("lb_real_up", u64::from(r.health.state == "up")),
            ] {
                assert_eq!(value(&samples, name, &l), want as f64, "{name} {l:?}");
            }
            for state in ["up", "down", "draining"] {
                let mut l = l.clone();
                l.push(("state", state));
                assert_eq!(
                    value(&samples, "lb_real_health_state", &l),
                    f64::from(u8::from(r.health.state == state))
                );
            }
            if let Some(ms) = r.health.latency_ms {
                assert_eq!(
                    value(&samples, "lb_real_check_latency_seconds", &l),
                    ms / 1000.0
                );
            }
        }
    }

    let g = &snap.global;
    assert_eq!(
        value(&samples, "lb_packets_received_total", &[]),
        g.dataplane.rx as f64
    );
    assert_eq!(
        value(&samples, "lb_packets_passed_total", &[]),
        g.dataplane.passed as f64
    );
    assert_eq!(
        value(&samples, "lb_packets_transmitted_total", &[]),
        g.dataplane.transmitted as f64
    );
    assert_eq!(
        value(
            &samples,
            "lb_packets_dropped_total",
            &[("reason", "no_real")]
        ),
        g.dataplane.drop_no_real as f64
    );
    assert_eq!(
        value(
            &samples,
            "lb_conn_table_lookups_total",
            &[("result", "miss")]
        ),
        g.dataplane.conn_misses as f64
    );
    assert_eq!(
        value(&samples, "lb_conn_table_entries", &[]),
        g.conn_table_used as f64
    );
    assert_eq!(
        value(&samples, "lb_conn_table_size", &[]),
        f64::from(snap.conn_table_size)
    );
    assert_eq!(
        value(&samples, "lb_reloads_total", &[("result", "ok")]),
        g.reloads_ok as f64
    );
    assert_eq!(
        value(&samples, "lb_reloads_total", &[("result", "failed")]),
        g.reloads_failed as f64
    );
    assert_eq!(
        value(&samples, "lb_health_checks_total", &[]),
        g.checks_run as f64
    );
    assert_eq!(
        value(&samples, "lb_health_check_duration_seconds_total", &[]),
        g.check_latency_ms_sum / 1000.0
    );
}

#[test]
fn exact_lines() {
    let text = render(&reference());
    for line in [
        "# HELP lb_service_connections_total New connections, per virtual service.",
        "# TYPE lb_service_connections_total counter",
        "lb_service_connections_total{vip=\"10.0.0.100\",port=\"5672\",protocol=\"tcp\"} 113786",
        "lb_real_in_bytes_total{vip=\"10.0.0.100\",port=\"5672\",protocol=\"tcp\",real=\"10.0.0.11\"} 1105123456",
        "# TYPE lb_real_active_connections gauge",
        "lb_real_active_connections{vip=\"10.0.0.100\",port=\"15672\",protocol=\"tcp\",real=\"10.0.0.12\"} 409",
        "lb_conn_table_size 4096",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(!text.contains("# EOF"));
}

#[test]
fn ipv6_labels_are_plain_addresses() {
    let mut snap = sample();
    snap.global.dataplane.ext_hdr_passed = 17;
    let text = render(&snap);
    let (_, samples) = parse(&text);
    let svc = [
        ("vip", "2001:db8::100"),
        ("port", "443"),
        ("protocol", "tcp"),
    ];
    assert_eq!(value(&samples, "lb_service_connections_total", &svc), 12.0);
    let real = [
        ("vip", "2001:db8::100"),
        ("port", "443"),
        ("real", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1011"),
    ];
    assert_eq!(value(&samples, "lb_real_weight", &real), 0.0);
    for line in [
        "lb_service_in_packets_total{vip=\"2001:db8::100\",port=\"443\",protocol=\"tcp\"} 140",
        "lb_real_active_connections{vip=\"2001:db8::100\",port=\"443\",protocol=\"tcp\",real=\"2001:db8::11\"} 10",
        "lb_ipv6_ext_hdr_passed_total 17",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(!text.contains('['), "no brackets in labels");
}

#[test]
fn sync_metrics() {
    let snap = sample();
    let sync = snap.sync.as_deref().unwrap();
    let text = render(&snap);
    let (types, samples) = parse(&text);
    for (name, ty) in [
        ("lb_sync_overrun_total", "counter"),
        ("lb_sync_sent_datagrams_total", "counter"),
        ("lb_sync_sent_records_total", "counter"),
        ("lb_sync_send_errors_total", "counter"),
        ("lb_sync_received_datagrams_total", "counter"),
        ("lb_sync_received_records_total", "counter"),
        ("lb_sync_received_flows_total", "counter"),
        ("lb_sync_rejected_total", "counter"),
        ("lb_sync_dropped_total", "counter"),
        ("lb_sync_lag_seconds", "gauge"),
        ("lb_sync_lag_max_seconds", "gauge"),
        ("lb_sync_peers", "gauge"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(ty), "{name}");
    }
    for (name, want) in [
        ("lb_sync_overrun_total", sync.overrun),
        ("lb_sync_sent_datagrams_total", sync.sent_datagrams),
        ("lb_sync_sent_records_total", sync.sent_records),
        ("lb_sync_send_errors_total", sync.send_errors),
        ("lb_sync_received_datagrams_total", sync.received_datagrams),
        ("lb_sync_received_records_total", sync.received_records),
        ("lb_sync_dropped_total", sync.dropped),
        ("lb_sync_peers", sync.heard.len() as u64),
    ] {
        assert_eq!(value(&samples, name, &[]), want as f64, "{name}");
    }
    let flows = "lb_sync_received_flows_total";
    for (outcome, want) in [
        ("stored", sync.stored),
        ("refreshed", sync.refreshed),
        ("kept", sync.kept),
        ("unplaced", sync.unplaced),
        ("no_room", sync.no_room),
    ] {
        assert_eq!(
            value(&samples, flows, &[("outcome", outcome)]),
            want as f64,
            "{outcome}"
        );
    }
    let outcomes: f64 = samples
        .iter()
        .filter(|s| s.name == flows)
        .map(|s| s.value)
        .sum();
    assert_eq!(outcomes, sync.received_records as f64);
    for (reason, want) in [
        ("auth", sync.rejected_auth),
        ("replay", sync.rejected_replay),
        ("instance", sync.rejected_instance),
        ("malformed", sync.rejected_malformed),
    ] {
        assert_eq!(
            value(&samples, "lb_sync_rejected_total", &[("reason", reason)]),
            want as f64,
            "{reason}"
        );
    }
    for line in [
        "# HELP lb_sync_overrun_total Flow announcements the program's per-CPU rings overwrote \
         before the agent read them (the flows were still forwarded).",
        "lb_sync_overrun_total 11",
        "# TYPE lb_sync_received_flows_total counter",
        "lb_sync_received_flows_total{outcome=\"no_room\"} 4",
        "lb_sync_rejected_total{reason=\"auth\"} 3",
        "# TYPE lb_sync_lag_seconds gauge",
        "lb_sync_lag_seconds 0.0035",
        "lb_sync_lag_max_seconds 0.0415",
        "lb_sync_peers 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[test]
fn sync_off_leaves_no_sync_family() {
    let (types, _) = parse(&render(&reference()));
    let sync: Vec<&String> = types.keys().filter(|n| n.starts_with("lb_sync_")).collect();
    assert!(sync.is_empty(), "{sync:?}");
}

#[test]
fn openmetrics_keeps_its_own_format() {
    let text = render_openmetrics(&reference());
    assert!(text.ends_with("# EOF\n"));
    assert!(text.contains("# TYPE lb_service_connections counter\n"));
    assert!(text.contains("lb_service_connections_total{"));
}

#[test]
fn empty_snapshot_renders() {
    let snap = crate::control::fixtures::snapshot(vec![]);
    let (types, samples) = parse(&render(&snap));
    assert!(types.contains_key("lb_real_up"));
    assert!(samples.iter().all(|s| !s.labels.contains_key("vip")));
    assert_eq!(value(&samples, "lb_conn_table_size", &[]), 4096.0);
}

/// Sends raw bytes, returns the whole answer (the server closes after it).
async fn exchange_raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

async fn start(limits: ServerLimits) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_with(listener, Arc::new(sample), limits));
    addr
}

#[tokio::test]
async fn serves_metrics_over_http() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(listener, sample));

    let answer = exchange_raw(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"));
    assert!(
        head.contains(&format!("\r\nContent-Length: {}", body.len())),
        "{head}"
    );
    assert_eq!(body, render(&sample()));

    // Query strings are ignored; a scraper asking for OpenMetrics gets it.
    let answer = exchange_raw(
        addr,
        b"GET /metrics?x=1 HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"));

    let answer = exchange_raw(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n").await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"));
    assert!(body.is_empty());

    let answer = exchange_raw(addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");

    let answer = exchange_raw(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nAllow: GET, HEAD\r\n"));

    server.abort();
}

#[tokio::test]
async fn survives_garbage_and_slow_clients() {
    let limits = ServerLimits {
        read: Duration::from_millis(200),
        total: Duration::from_millis(500),
        max_head: 1024,
        max_clients: 4,
    };
    let addr = start(limits).await;

    for garbage in [
        &b"\x00\x01\x02\xff\xfe\n\n"[..],
        b"hello\r\n\r\n",
        b"GET /metrics\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
    ] {
        let answer = exchange_raw(addr, garbage).await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{garbage:?}: {answer}"
        );
    }

    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.resize(4096, b'a');
    let answer = exchange_raw(addr, &huge).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

    // Clients that send nothing, or half a request, are cut off; others still get served.
    let idle: Vec<TcpStream> =
        futures_util::future::join_all((0..3).map(|_| TcpStream::connect(addr)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /metr").await.unwrap();
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    half.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(idle);

    // Slots are free again once the slow clients are gone.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let answer = exchange_raw(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
}

/// A slowloris: every place taken by connections that never send a request, renewed as fast
/// as they are closed. A scraper still gets its answer each time, promptly.
#[tokio::test]
async fn idle_connections_cannot_keep_a_scraper_out() {
    let limits = ServerLimits {
        read: Duration::from_secs(30),
        total: Duration::from_secs(60),
        max_head: 1024,
        max_clients: 8,
    };
    let addr = start(limits).await;
    let mut idle = Vec::new();
    for round in 0..5 {
        // Top the idle connections up to twice the places (the server closes the oldest).
        while idle.len() < 2 * limits.max_clients {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let start = std::time::Instant::now();
        let answer = exchange_raw(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n"),
            "round {round}: {answer:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(2), "round {round}");
        // Forget the connections the server closed; the attacker opens new ones.
        let mut open = Vec::new();
        for mut s in idle.drain(..) {
            let mut byte = [0u8; 1];
            match timeout(Duration::from_millis(5), s.read(&mut byte)).await {
                Ok(Ok(0) | Err(_)) => {}
                _ => open.push(s),
            }
        }
        assert!(
            open.len() <= limits.max_clients,
            "round {round}: {} open",
            open.len()
        );
        idle = open;
    }
}

#[test]
fn the_oldest_idle_client_is_evicted_first_and_served_ones_never() {
    let mut idle = Idle::default();
    let (a, evict_a) = idle.push();
    let (b, _) = idle.push();
    let (_, evict_c) = idle.push();
    idle.remove(b); // b sent its request: being served
    assert!(idle.evict_oldest());
    // a's permit is stored: it fires even though nobody waits yet.
    let fired = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(async {
            timeout(Duration::from_millis(50), evict_a.notified())
                .await
                .is_ok()
        });
    assert!(fired);
    assert_eq!(a, 0);
    assert!(idle.evict_oldest()); // c
    drop(evict_c);
    assert!(!idle.evict_oldest()); // only b, which is being served
}

#[test]
fn head_parsing() {
    let h = parse_head(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\naccept: application/openmetrics-text\r\n\r\n",
    )
    .unwrap();
    assert_eq!((h.method.as_str(), h.path.as_str()), ("GET", "/metrics"));
    assert!(h.wants_openmetrics);
    assert!(parse_head(b"GET /metrics HTTP/2\r\n\r\n").is_none());
    assert!(parse_head(b"get /metrics HTTP/1.1\r\n\r\n").is_none());
    assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest"), Some(16));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
}

/// Every `lb_*` name in `text` (a PromQL expression or a series selector).
fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("lb_") {
        let starts_name = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if starts_name {
            out.push(name.clone());
        }
        rest = &rest[at + name.len()..];
    }
    out
}

/// Every string value under the key `key`, anywhere in `v`.
fn strings_under(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match v {
                    serde_json::Value::String(s) if k == key => out.push(s.clone()),
                    _ => strings_under(v, key, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings_under(v, key, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_and_the_alerts_use_only_exported_metrics() {
    // Every family the agent exports, sync included (the sample has it).
    let text = render(&sample());
    let exported: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(exported.contains(&"lb_service_quorum_held"), "{exported:?}");
    let configs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(configs.join("grafana/lb-xdp.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    strings_under(&dashboard, "expr", &mut exprs);
    assert!(exprs.len() >= 15, "{} queries", exprs.len());
    // Panels: unique ids, inside the 24-column grid, every query on the dashboard's input.
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids repeat");
    for p in panels {
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{} leaves the grid", p["title"]);
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        }
    }

    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(configs.join("prometheus/lb-xdp-alerts.yml")).unwrap(),
    )
    .expect("the rules are YAML");
    let alerts: Vec<&serde_yaml::Value> = rules["groups"][0]["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .collect();
    assert!(alerts.len() >= 5);
    for rule in &alerts {
        exprs.push(rule["expr"].as_str().expect("expr").to_owned());
    }

    let mut used: Vec<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    used.sort();
    used.dedup();
    let unknown: Vec<&String> = used
        .iter()
        .filter(|n| !exported.contains(&n.as_str()))
        .collect();
    assert!(unknown.is_empty(), "not exported by the agent: {unknown:?}");
    assert!(used.len() >= 15, "{used:?}");
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names("sum(rate(lb_a_total[5m])) / on (x) lb_b{y=\"lb_c\"} + xlb_d"),
        ["lb_a_total", "lb_b", "lb_c"]
    );
}
