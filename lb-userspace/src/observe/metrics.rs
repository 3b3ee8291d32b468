//! Prometheus metrics: the text rendering of a [`Snapshot`] and a minimal HTTP endpoint for it.
//!
//! Every metric is named `lb_*`. Per-service metrics carry the labels `vip`, `port` and
//! `protocol` (`tcp`/`udp`); per-real metrics add `real` (the real's address: in direct
//! routing its port is the service's). Counters end in `_total`. The director sync families
//! (`lb_sync_*`) are there only while sync is on.
//!
//! The encoding is done by the `prometheus-client` crate (OpenMetrics text), from which
//! [`render`] derives the classic Prometheus text format 0.0.4: counter families are named
//! with their `_total` suffix and OpenMetrics' `# EOF` is dropped. [`serve`] answers with
//! OpenMetrics to a scraper that asks for it (`Accept: application/openmetrics-text`), as
//! Prometheus does, and with the classic format to everyone else.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Notify, Semaphore},
    time::timeout,
};
use tracing::{debug, warn};

use crate::{
    control::{Counters, RealInfo, ServiceInfo, Snapshot},
    model::ServiceKey,
};

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of [`render_openmetrics`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The snapshot in the Prometheus text exposition format 0.0.4.
pub fn render(snap: &Snapshot) -> String {
    to_prometheus_text(&render_openmetrics(snap))
}

/// The snapshot in the OpenMetrics text format (ends with `# EOF`).
pub fn render_openmetrics(snap: &Snapshot) -> String {
    let mut registry = Registry::with_prefix("lb");
    registry.register_collector(Box::new(SnapshotCollector(snap.clone())));
    let mut out = String::new();
    // Writing into a String cannot fail, and the collector itself never fails.
    let _ = encode(&mut out, &registry);
    out
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: a counter family's HELP/TYPE name gets
/// the `_total` its samples carry, and `# UNIT`/`# EOF` lines go.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|kw| {
            let rest = line.strip_prefix(kw)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{kw}{name}_total {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Labels of a metric: (name, value) pairs.
type Labels = Vec<(&'static str, String)>;

fn service_labels(key: &ServiceKey) -> Labels {
    vec![
        ("vip", key.vip.to_string()),
        ("port", key.port.to_string()),
        ("protocol", proto_label(key)),
    ]
}

fn real_labels(key: &ServiceKey, real: &RealInfo) -> Labels {
    let mut l = service_labels(key);
    l.push(("real", real.key.addr.to_string()));
    l
}

fn proto_label(key: &ServiceKey) -> String {
    key.proto.name().to_ascii_lowercase()
}

/// Encodes one counter family.
fn counter<N>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, N)>,
) -> std::fmt::Result
where
    N: prometheus_client::encoding::EncodeCounterValue,
{
    let family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    let samples: Vec<(Labels, N)> = samples.into_iter().collect();
    encode_samples(family, samples, |v, e| ConstCounter::new(v).encode(e))
}

/// Encodes one gauge family.
fn gauge<N>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, N)>,
) -> std::fmt::Result
where
    N: prometheus_client::encoding::EncodeGaugeValue,
{
    let family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    let samples: Vec<(Labels, N)> = samples.into_iter().collect();
    encode_samples(family, samples, |v, e| ConstGauge::new(v).encode(e))
}

/// Encodes a family's samples; a lone sample without labels is written without `{}`.
fn encode_samples<N>(
    mut family: MetricEncoder,
    mut samples: Vec<(Labels, N)>,
    encode: impl Fn(N, MetricEncoder) -> std::fmt::Result,
) -> std::fmt::Result {
    if let [(labels, _)] = samples.as_slice()
        && labels.is_empty()
        && let Some((_, value)) = samples.pop()
    {
        return encode(value, family);
    }
    for (labels, value) in samples {
        encode(value, family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Presents one snapshot to a registry.
#[derive(Debug)]
struct SnapshotCollector(Snapshot);

/// One of the five traffic counters of [`Counters`].
type CounterField = fn(&Counters) -> u64;

/// The traffic counters: metric name suffix, what they count, a note for the help text.
const TRAFFIC: [(&str, &str, &str, CounterField); 5] = [
    ("connections", "New connections", "", |c| c.conns),
    ("in_packets", "Packets from clients", "", |c| c.in_pkts),
    ("out_packets", "Packets to clients", DR_NOTE, |c| c.out_pkts),
    ("in_bytes", "Bytes from clients", "", |c| c.in_bytes),
    ("out_bytes", "Bytes to clients", DR_NOTE, |c| c.out_bytes),
];

/// Why the outgoing counters stay at zero.
const DR_NOTE: &str = " (0 in direct routing: replies bypass the balancer)";

/// Health states a real can be in, for `lb_real_health_state`.
const HEALTH_STATES: [&str; 3] = ["up", "down", "draining"];

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        self.encode_services(&mut enc)?;
        self.encode_reals(&mut enc)?;
        self.encode_global(&mut enc)?;
        self.encode_sync(&mut enc)
    }
}

impl SnapshotCollector {
    /// Per-service families.
    fn encode_services(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let services = &self.0.services;
        for (suffix, what, note, field) in TRAFFIC {
            counter(
                enc,
                &format!("service_{suffix}"),
                &format!("{what}, per virtual service{note}."),
                services
                    .iter()
                    .map(|s| (service_labels(&s.key), field(&s.stats))),
            )?;
        }
        let sum = |s: &ServiceInfo, f: fn(&RealInfo) -> u64| s.reals.iter().map(f).sum::<u64>();
        gauge(
            enc,
            "service_active_connections",
            "Connections in ESTABLISHED, per virtual service.",
            services
                .iter()
                .map(|s| (service_labels(&s.key), sum(s, |r| r.active_conns))),
        )?;
        gauge(
            enc,
            "service_inactive_connections",
            "Connections in any other state, per virtual service.",
            services
                .iter()
                .map(|s| (service_labels(&s.key), sum(s, |r| r.inactive_conns))),
        )?;
        gauge(
            enc,
            "service_reals_up",
            "Real servers whose health state is up (sorry server not counted).",
            services.iter().map(|s| {
                let up = s
                    .reals
                    .iter()
                    .filter(|r| !r.sorry_server && r.health.state == "up")
                    .count();
                (service_labels(&s.key), up as u64)
            }),
        )?;
        gauge(
            enc,
            "service_quorum_held",
            "1 while the service holds its quorum (live weight at least `quorum`), else 0: its \
             real servers then get no new connections.",
            services
                .iter()
                .map(|s| (service_labels(&s.key), u64::from(s.quorum_held))),
        )?;
        gauge(
            enc,
            "service_sorry_server_active",
            "1 while the sorry server replaces the real servers (quorum lost), else 0.",
            services
                .iter()
                .map(|s| (service_labels(&s.key), u64::from(s.sorry_server_active))),
        )?;
        Ok(())
    }

    /// Per-real families.
    fn encode_reals(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let reals = || {
            self.0
                .services
                .iter()
                .flat_map(|s| s.reals.iter().map(move |r| (s, r)))
        };
        for (suffix, what, note, field) in TRAFFIC {
            counter(
                enc,
                &format!("real_{suffix}"),
                &format!("{what}, per real server{note}."),
                reals().map(|(s, r)| (real_labels(&s.key, r), field(&r.stats))),
            )?;
        }
        gauge(
            enc,
            "real_active_connections",
            "Connections in ESTABLISHED, per real server.",
            reals().map(|(s, r)| (real_labels(&s.key, r), r.active_conns)),
        )?;
        gauge(
            enc,
            "real_inactive_connections",
            "Connections in any other state, per real server.",
            reals().map(|(s, r)| (real_labels(&s.key, r), r.inactive_conns)),
        )?;
        gauge(
            enc,
            "real_weight",
            "Weight of the real server (0 = quiesced).",
            reals().map(|(s, r)| (real_labels(&s.key, r), u64::from(r.weight))),
        )?;
        gauge(
            enc,
            "real_up",
            "1 when the real server's health state is up, else 0.",
            reals().map(|(s, r)| (real_labels(&s.key, r), u64::from(r.health.state == "up"))),
        )?;
        gauge(
            enc,
            "real_health_state",
            "1 for the real server's current health state, 0 for the others.",
            reals().flat_map(|(s, r)| {
                HEALTH_STATES.iter().map(move |state| {
                    let mut l = real_labels(&s.key, r);
                    l.push(("state", (*state).to_owned()));
                    (l, u64::from(r.health.state == *state))
                })
            }),
        )?;
        gauge(
            enc,
            "real_sorry_server",
            "1 for a service's sorry server, 0 for its ordinary real servers.",
            reals().map(|(s, r)| (real_labels(&s.key, r), u64::from(r.sorry_server))),
        )?;
        gauge(
            enc,
            "real_check_latency_seconds",
            "Duration of the last health check of the real server.",
            reals().filter_map(|(s, r)| {
                let ms = r.health.latency_ms?;
                Some((real_labels(&s.key, r), ms / 1000.0))
            }),
        )?;

        Ok(())
    }

    /// Data-plane and agent-wide families.
    fn encode_global(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let snap = &self.0;
        let g = &snap.global;
        let d = &g.dataplane;
        let none = || Labels::new();
        let one = |k: &'static str, v: &str| vec![(k, v.to_owned())];
        counter(
            enc,
            "packets_received",
            "Packets the XDP program looked at.",
            [(none(), d.rx)],
        )?;
        counter(
            enc,
            "packets_passed",
            "Packets passed to the kernel stack (not for a virtual service).",
            [(none(), d.passed)],
        )?;
        counter(
            enc,
            "packets_transmitted",
            "Packets forwarded to a real server.",
            [(none(), d.transmitted)],
        )?;
        counter(
            enc,
            "packets_dropped",
            "Packets dropped, by reason (no_real: the service had no usable real server).",
            [(one("reason", "no_real"), d.drop_no_real)],
        )?;
        counter(
            enc,
            "conn_table_lookups",
            "Connection-table lookups, by result.",
            [
                (one("result", "hit"), d.conn_hits),
                (one("result", "miss"), d.conn_misses),
            ],
        )?;
        counter(
            enc,
            "conn_rescheduled",
            "Flows moved to another real server because theirs went away.",
            [(none(), d.conn_rescheduled)],
        )?;
        counter(
            enc,
            "conn_insert_failed",
            "New flows not recorded in the connection table because another CPU was writing \
             the same set.",
            [(none(), d.conn_insert_failed)],
        )?;
        counter(
            enc,
            "conn_insert_refused",
            "New, unconfirmed flows not recorded because every slot of their set held a live \
             established connection (the flows were still forwarded).",
            [(none(), d.conn_insert_refused)],
        )?;
        counter(
            enc,
            "conn_evicted",
            "Live connection-table entries evicted to make room, by the evicted entry's state.",
            [
                (one("state", "established"), d.conn_evicted_established),
                (one("state", "other"), d.conn_evicted_other),
            ],
        )?;
        counter(
            enc,
            "fragments",
            "IP fragments seen.",
            [(none(), d.fragments)],
        )?;
        counter(
            enc,
            "icmp_forwarded",
            "ICMP errors forwarded to the real server of their flow.",
            [(none(), d.icmp_forwarded)],
        )?;
        counter(
            enc,
            "persistence_hits",
            "New flows placed by a persistence template.",
            [(none(), d.persist_hits)],
        )?;
        counter(
            enc,
            "ipv6_ext_hdr_passed",
            "IPv6 packets passed to the kernel stack because of their extension headers \
             (included in packets_passed).",
            [(none(), d.ext_hdr_passed)],
        )?;
        gauge(
            enc,
            "conn_table_entries",
            "Entries in the connection tables (IPv4 and IPv6).",
            [(none(), g.conn_table_used)],
        )?;
        gauge(
            enc,
            "conn_table_size",
            "Capacity of the connection tables (IPv4 and IPv6).",
            [(none(), u64::from(snap.conn_table_size))],
        )?;
        counter(
            enc,
            "reloads",
            "Configuration reloads, by result.",
            [
                (one("result", "ok"), g.reloads_ok),
                (one("result", "failed"), g.reloads_failed),
            ],
        )?;
        counter(
            enc,
            "health_checks",
            "Health checks run.",
            [(none(), g.checks_run)],
        )?;
        counter(
            enc,
            "health_check_duration_seconds",
            "Time spent in health checks.",
            [(none(), g.check_latency_ms_sum / 1000.0)],
        )?;
        Ok(())
    }

    /// Director sync families, only while sync is on.
    fn encode_sync(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let Some(s) = self.0.sync.as_deref() else {
            return Ok(());
        };
        let none = || Labels::new();
        let one = |k: &'static str, v: &str| vec![(k, v.to_owned())];
        counter(
            enc,
            "sync_sent_datagrams",
            "Director sync datagrams sent (each destination counts).",
            [(none(), s.sent_datagrams)],
        )?;
        counter(
            enc,
            "sync_sent_records",
            "Flow records sent in director sync datagrams (each destination counts).",
            [(none(), s.sent_records)],
        )?;
        counter(
            enc,
            "sync_send_errors",
            "Director sync datagrams that could not be sent.",
            [(none(), s.send_errors)],
        )?;
        counter(
            enc,
            "sync_received_datagrams",
            "Authentic director sync datagrams accepted.",
            [(none(), s.received_datagrams)],
        )?;
        counter(
            enc,
            "sync_received_records",
            "Flow records in the accepted director sync datagrams.",
            [(none(), s.received_records)],
        )?;
        counter(
            enc,
            "sync_received_flows",
            "Flows received from peers, by outcome (stored: new entry; refreshed: here already \
             on the same real; kept: known here more recently on another real; unplaced: service \
             or real not configured here; no_room: the table set was full).",
            [
                (one("outcome", "stored"), s.stored),
                (one("outcome", "refreshed"), s.refreshed),
                (one("outcome", "kept"), s.kept),
                (one("outcome", "unplaced"), s.unplaced),
                (one("outcome", "no_room"), s.no_room),
            ],
        )?;
        counter(
            enc,
            "sync_rejected",
            "Director sync datagrams rejected, by reason (auth: the tag did not match; replay; \
             instance: another director group's; malformed).",
            [
                (one("reason", "auth"), s.rejected_auth),
                (one("reason", "replay"), s.rejected_replay),
                (one("reason", "instance"), s.rejected_instance),
                (one("reason", "malformed"), s.rejected_malformed),
            ],
        )?;
        counter(
            enc,
            "sync_dropped",
            "Flow announcements not sent because their real server was gone.",
            [(none(), s.dropped)],
        )?;
        counter(
            enc,
            "sync_overrun",
            "Flow announcements the program's per-CPU rings overwrote before the agent read them \
             (the flows were still forwarded).",
            [(none(), s.overrun)],
        )?;
        gauge(
            enc,
            "sync_lag_seconds",
            "From a flow's confirmation to its datagram leaving, for the last batch's oldest \
             flow.",
            [(none(), s.lag_ms / 1000.0)],
        )?;
        gauge(
            enc,
            "sync_lag_max_seconds",
            "The largest sync_lag_seconds since the agent started.",
            [(none(), s.lag_ms_max / 1000.0)],
        )?;
        gauge(
            enc,
            "sync_peers",
            "Peer agents heard from.",
            [(none(), s.heard.len() as u64)],
        )?;
        Ok(())
    }
}

/// Limits of the metrics HTTP server.
#[derive(Clone, Copy, Debug)]
struct ServerLimits {
    /// Time for a client to send its request head.
    read: Duration,
    /// Time for a whole exchange, answer included.
    total: Duration,
    /// Longest request head.
    max_head: usize,
    /// Clients served at once. When all are taken, a new client takes the place of the one
    /// that has waited longest without sending its request; if every client has sent its
    /// request, the new one is closed.
    max_clients: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            read: Duration::from_secs(2),
            total: Duration::from_secs(30),
            max_head: 8 << 10,
            max_clients: 64,
        }
    }
}

/// The clients still sending their request head, oldest first, each with the signal that
/// closes it to make room for a new one.
#[derive(Default)]
struct Idle {
    next: u64,
    waiting: VecDeque<(u64, Arc<Notify>)>,
}

impl Idle {
    /// Registers a new client; its id and its eviction signal.
    fn push(&mut self) -> (u64, Arc<Notify>) {
        let id = self.next;
        self.next += 1;
        let evict = Arc::new(Notify::new());
        self.waiting.push_back((id, Arc::clone(&evict)));
        (id, evict)
    }

    /// The client has sent its head (or is gone): it can no longer be evicted.
    fn remove(&mut self, id: u64) {
        self.waiting.retain(|(i, _)| *i != id);
    }

    /// Signals the oldest waiting client to close; whether there was one.
    fn evict_oldest(&mut self) -> bool {
        match self.waiting.pop_front() {
            Some((_, evict)) => {
                // A stored permit: the client closes even if it is not waiting on it yet.
                evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Removes a client from [`Idle`] when its exchange ends, however it ends.
struct IdleGuard {
    idle: Arc<Mutex<Idle>>,
    id: u64,
}

impl IdleGuard {
    fn done_waiting(&self) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.id);
    }
}

impl Drop for IdleGuard {
    fn drop(&mut self) {
        self.done_waiting();
    }
}

/// Serves `GET /metrics` (and `HEAD`) on `listener` until the task is dropped, answering with
/// [`render`] of a fresh `source()` each time (OpenMetrics if the client asks for it).
///
/// HTTP/1.1 without keep-alive: one request per connection. Any other path is 404, another
/// method 405, a malformed or oversized request 400/431. A client gets 2 s to send its
/// request and 30 s for the whole exchange; at most 64 are served at once, and when all places
/// are taken a new client replaces the one that has waited longest without sending a request,
/// so idle or slow connections cannot keep a scraper out. `source` runs on tokio's blocking
/// pool, so it may take a lock.
pub async fn serve(listener: TcpListener, source: impl Fn() -> Snapshot + Send + Sync + 'static) {
    serve_with(listener, Arc::new(source), ServerLimits::default()).await;
}

async fn serve_with<F>(listener: TcpListener, source: Arc<F>, limits: ServerLimits)
where
    F: Fn() -> Snapshot + Send + Sync + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_clients));
    let idle = Arc::new(Mutex::new(Idle::default()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let evicted = idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .evict_oldest();
                let freed = timeout(EVICTION_WAIT, Arc::clone(&slots).acquire_owned()).await;
                match freed {
                    Ok(Ok(slot)) if evicted => {
                        debug!("metrics: full; closed the longest-idle client for {peer}");
                        slot
                    }
                    Ok(Ok(slot)) => slot,
                    _ => {
                        debug!("metrics: too many clients, closing the connection from {peer}");
                        continue;
                    }
                }
            }
        };
        let (id, evict) = idle.lock().unwrap_or_else(|e| e.into_inner()).push();
        let guard = IdleGuard {
            idle: Arc::clone(&idle),
            id,
        };
        let source = Arc::clone(&source);
        tokio::spawn(async move {
            let _slot = slot;
            let exchange = exchange(stream, source, limits, &evict, &guard);
            match timeout(limits.total, exchange).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!("metrics: client {peer}: {e}"),
                Err(_) => debug!("metrics: client {peer} too slow, closed"),
            }
        });
    }
}

/// A parsed request head.
struct RequestHead {
    method: String,
    path: String,
    wants_openmetrics: bool,
}

/// Why a request head was refused.
enum HeadError {
    /// Not HTTP.
    Malformed,
    /// Longer than the limit.
    TooLarge,
    /// The client closed or stalled before finishing it.
    Incomplete,
}

/// One HTTP answer.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Answer {
    fn text(status: u16, body: &str) -> Self {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
        }
    }
}

/// How long a new client waits for the place of an evicted one.
const EVICTION_WAIT: Duration = Duration::from_millis(200);

/// Serves one connection: reads a request head (unless `evict` fires first), answers, closes.
async fn exchange<F>(
    mut stream: TcpStream,
    source: Arc<F>,
    limits: ServerLimits,
    evict: &Notify,
    idle: &IdleGuard,
) -> std::io::Result<()>
where
    F: Fn() -> Snapshot + Send + Sync + 'static,
{
    let head = tokio::select! {
        read = timeout(limits.read, read_head(&mut stream, limits.max_head)) => match read {
            Ok(head) => head?,
            Err(_) => Err(HeadError::Incomplete),
        },
        () = evict.notified() => return Ok(()),
    };
    idle.done_waiting();
    let head_only = matches!(&head, Ok(h) if h.method == "HEAD");
    let answer = match head {
        Err(HeadError::Incomplete) => return Ok(()),
        Err(HeadError::Malformed) => Answer::text(400, "Bad Request"),
        Err(HeadError::TooLarge) => Answer::text(431, "Request Header Fields Too Large"),
        Ok(h) if h.method != "GET" && h.method != "HEAD" => Answer::text(405, "Method Not Allowed"),
        Ok(h) if h.path != "/metrics" => Answer::text(404, "Not Found"),
        Ok(h) => {
            let open = h.wants_openmetrics;
            let body = tokio::task::spawn_blocking(move || {
                let snap = source();
                if open {
                    render_openmetrics(&snap)
                } else {
                    render(&snap)
                }
            })
            .await
            .map_err(std::io::Error::other)?;
            let content_type = if open {
                OPENMETRICS_CONTENT_TYPE
            } else {
                CONTENT_TYPE
            };
            Answer {
                status: 200,
                content_type,
                body,
            }
        }
    };
    respond(&mut stream, &answer, head_only).await
}

/// Writes the answer (without its body for HEAD) and closes the connection.
async fn respond(stream: &mut TcpStream, answer: &Answer, head_only: bool) -> std::io::Result<()> {
    let reason = match answer.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        answer.content_type,
        answer.body.len()
    );
    if answer.status == 405 {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(answer.body.as_bytes()).await?;
    }
    stream.shutdown().await
}

/// Reads and parses a request head (up to the blank line).
async fn read_head(
    stream: &mut TcpStream,
    max: usize,
) -> std::io::Result<Result<RequestHead, HeadError>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(end) = head_end(&buf) {
            break end;
        }
        if buf.len() > max {
            return Ok(Err(HeadError::TooLarge));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err(HeadError::Incomplete));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if end > max {
        return Ok(Err(HeadError::TooLarge));
    }
    Ok(parse_head(&buf[..end]).ok_or(HeadError::Malformed))
}

/// Where the head ends (after `\r\n\r\n` or `\n\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_head(head: &[u8]) -> Option<RequestHead> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.lines();
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    if first.next().is_some()
        || !version.starts_with("HTTP/1.")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return None;
    }
    let mut wants_openmetrics = false;
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        if name.trim().eq_ignore_ascii_case("accept") {
            wants_openmetrics |= value.contains("application/openmetrics-text");
        }
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Some(RequestHead {
        method: method.to_owned(),
        path: path.to_owned(),
        wants_openmetrics,
    })
}

#[cfg(test)]
mod tests;
