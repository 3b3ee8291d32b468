//! The control interface between `lbadm` and `lb-agent`: what travels over the agent's Unix
//! socket, and the small pieces both ends need to move it.
//!
//! The protocol is JSON lines: the client connects, writes one [`Request`] as one line of JSON,
//! and reads one [`Response`] line back. A line is at most [`MAX_MESSAGE`] bytes. A server may
//! answer several requests on one connection (one response per request line, in order);
//! [`request`] sends exactly one and closes.
//!
//! On the wire a request is tagged by `op` (`{"op":"snapshot","conns":false}`), an edit by
//! `edit` inside it (`{"op":"edit","edit":"add_real",...}`) and a response by `result`
//! (`{"result":"error","message":"..."}`). Addresses are strings (`"10.0.0.100"`,
//! `"192.168.7.21:51514"`), protocols lower case (`"tcp"`).
//!
//! The [`Snapshot`] is everything `lbadm -L` and the metrics endpoint show: services, reals,
//! counters, health and, on request, the connection table. The agent's end of the socket is
//! [`server`].

pub mod server;

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::SocketAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{
    config::Timeouts,
    model::{Protocol, RealKey, ServiceKey, Thresholds},
};

/// Longest message (one JSON line, without its newline) either side accepts.
pub const MAX_MESSAGE: usize = 16 << 20;

/// How long [`request`] waits for the agent to take the request and to answer it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the agent can tell about its state at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Capacity of the connection tables, IPv4 and IPv6 together (ipvsadm prints it as
    /// `size=N`).
    pub conn_table_size: u32,
    /// Connection timeouts (`ipvsadm -L --timeout`).
    #[serde(with = "TimeoutsDef")]
    pub timeouts: Timeouts,
    /// The services, in [`ServiceKey`] order.
    pub services: Vec<ServiceInfo>,
    /// The connection table; present only when the request asked for it.
    pub conns: Option<Vec<ConnInfo>>,
    /// Data-plane and agent-wide counters.
    pub global: GlobalInfo,
    /// Director sync, when configured.
    #[serde(default)]
    pub sync: Option<Box<SyncInfo>>,
}

/// Serde mirror of [`Timeouts`], which lives in the configuration and has no serde of its own.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Timeouts")]
struct TimeoutsDef {
    tcp: u32,
    tcpfin: u32,
    udp: u32,
}

/// One virtual service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// VIP, port and protocol.
    pub key: ServiceKey,
    /// IPVS scheduler name (`"wrr"`, `"mh"`, ...).
    pub scheduler: String,
    /// IPVS scheduling flags as ipvsadm names them (`"sh-fallback"`, `"sh-port"`, `"ops"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// Persistence, if on.
    pub persistence: Option<PersistInfo>,
    /// Counters since the service was added or last zeroed.
    pub stats: Counters,
    /// Current rates.
    pub rate: Rates,
    /// The reals, in [`RealKey`] order (sorry server included, see [`RealInfo::sorry_server`]).
    pub reals: Vec<RealInfo>,
    /// Whether the sorry server currently replaces the reals (quorum lost).
    pub sorry_server_active: bool,
    /// Whether the service holds keepalived's quorum (the weight of its live reals is at least
    /// `quorum`, with `hysteresis`); while it does not, its reals get no new connections.
    #[serde(default = "held")]
    pub quorum_held: bool,
}

/// A service holds quorum unless told otherwise (an older agent's snapshot).
fn held() -> bool {
    true
}

/// Persistence of a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersistInfo {
    /// Seconds a client stays on its real after its last connection.
    pub timeout: u32,
    /// Client netmask (granularity), dotted quad: `"255.255.255.255"` is per client.
    pub netmask: String,
}

/// One real server of a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RealInfo {
    /// Address and port.
    pub key: RealKey,
    /// Forwarding method.
    pub forward: Forward,
    /// Weight (0 = quiesced).
    pub weight: u32,
    /// Connections in ESTABLISHED.
    pub active_conns: u64,
    /// Connections in any other state.
    pub inactive_conns: u64,
    /// Counters.
    pub stats: Counters,
    /// Current rates.
    pub rate: Rates,
    /// What the health checker says.
    pub health: HealthInfo,
    /// Whether this is the service's sorry server (used only while quorum is lost).
    pub sorry_server: bool,
}

/// Forwarding method of a real, as ipvsadm names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Forward {
    /// Direct routing (`-g`): only the destination MAC is rewritten. The only method here.
    Route,
}

impl Forward {
    /// The name in ipvsadm's `Forward` column.
    pub const fn name(self) -> &'static str {
        match self {
            Forward::Route => "Route",
        }
    }
}

impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Health of a real as its checker sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthInfo {
    /// The checker's keepalived name (`"tcp_check"`, `"http_get"`, `"misc_check"`,
    /// `"udp_check"`, `"file_check"`, ...), `"amqp_check"`, or `"none"`; several joined with
    /// `+` (`"tcp_check+misc_check"`), the other fields then being those of the first that
    /// failed, else of the first.
    pub checker: String,
    /// `"up"`, `"down"` or `"draining"`.
    pub state: String,
    /// Outcome of the last check, if one ran: what it saw when it passed (`"connected"`,
    /// `"HTTP 200"`), `"failed"` when it failed (what it saw is then in `reason`).
    pub last_result: Option<String>,
    /// Why the real is down or may go down: the last failed check's finding
    /// (`"connect refused"`, `"timeout"`) or `"no neighbour"`.
    pub reason: Option<String>,
    /// Duration of the last check.
    pub latency_ms: Option<f64>,
    /// Seconds since `state` last changed.
    pub since_secs: Option<u64>,
}

/// Traffic counters (IPVS `--stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// New connections.
    pub conns: u64,
    /// Packets from clients.
    pub in_pkts: u64,
    /// Packets to clients (always 0 in direct routing: replies bypass the balancer).
    pub out_pkts: u64,
    /// Bytes from clients.
    pub in_bytes: u64,
    /// Bytes to clients.
    pub out_bytes: u64,
}

/// Rates (IPVS `--rate`): per second, bytes (not bits) for the `bps` fields, as IPVS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rates {
    /// New connections per second.
    pub cps: u64,
    /// Packets per second from clients.
    pub in_pps: u64,
    /// Packets per second to clients.
    pub out_pps: u64,
    /// Bytes per second from clients.
    pub in_bps: u64,
    /// Bytes per second to clients.
    pub out_bps: u64,
}

/// One connection-table entry (`ipvsadm -L -c`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnInfo {
    /// Protocol.
    pub proto: Protocol,
    /// Seconds until the entry expires.
    pub expire_secs: u32,
    /// TCP state name (`"ESTABLISHED"`, `"FIN_WAIT"`, ...), `"NONE"` for persistence templates.
    pub state: String,
    /// Client address (port 0 for a persistence template).
    pub client: SocketAddr,
    /// Virtual service address.
    pub virtual_addr: SocketAddr,
    /// Real server address.
    pub real: SocketAddr,
}

/// Data-plane and agent-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GlobalInfo {
    /// The data plane's counters, summed over CPUs (their fields are this object's keys).
    #[serde(flatten)]
    pub dataplane: lb_common::GlobalStats,
    /// Live entries in the connection tables (IPv4 and IPv6) now.
    pub conn_table_used: u64,
    /// Successful configuration reloads.
    pub reloads_ok: u64,
    /// Rejected configuration reloads.
    pub reloads_failed: u64,
    /// Health checks run.
    pub checks_run: u64,
    /// Sum of the durations of all health checks run, in milliseconds.
    pub check_latency_ms_sum: f64,
}

/// Director sync as the agent runs it (`lbadm -L --daemon`, the `lb_sync_*` metrics).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncInfo {
    /// Director group id.
    pub id: u32,
    /// Interface multicast uses.
    pub interface: String,
    /// UDP port.
    pub port: u16,
    /// Multicast group, if any.
    pub group: Option<std::net::IpAddr>,
    /// Multicast TTL.
    pub ttl: u8,
    /// Unicast peers as configured.
    pub peers: Vec<std::net::IpAddr>,
    /// This agent's sender id (new each start).
    pub sender: u64,
    /// Datagrams sent (each destination counts).
    pub sent_datagrams: u64,
    /// Flow records sent (each destination counts).
    pub sent_records: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// Authentic datagrams accepted.
    pub received_datagrams: u64,
    /// Flow records in them.
    pub received_records: u64,
    /// Received flows stored as new entries.
    pub stored: u64,
    /// Received flows that were here already on the same real (refreshed).
    pub refreshed: u64,
    /// Received flows known here more recently on another real (left alone).
    pub kept: u64,
    /// Received flows for a service or real not configured here.
    pub unplaced: u64,
    /// Received flows whose table set had no room.
    pub no_room: u64,
    /// Datagrams rejected: the tag did not match (forged, corrupted, another key).
    pub rejected_auth: u64,
    /// Datagrams rejected as replays.
    pub rejected_replay: u64,
    /// Datagrams rejected as another director group's.
    pub rejected_instance: u64,
    /// Datagrams rejected as malformed (not this protocol or version).
    pub rejected_malformed: u64,
    /// Announcements whose real was gone before they could be sent.
    pub dropped: u64,
    /// Announcements the program's rings overwrote before the agent read them.
    pub overrun: u64,
    /// Milliseconds a flow's announcement waited at most before its datagram left, in the last
    /// batch: from the read before (the earliest it can have been written) to the send.
    pub lag_ms: f64,
    /// The largest `lag_ms` since start.
    pub lag_ms_max: f64,
    /// Peers heard from, by sender.
    pub heard: Vec<PeerInfo>,
    /// The start-up resync's outcome.
    pub resync: String,
    /// The last error (a failed send, a rejected datagram), with its age.
    pub last_error: Option<String>,
}

/// A peer agent this one has heard from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerInfo {
    /// Where its datagrams come from.
    pub addr: Option<SocketAddr>,
    /// Its sender id.
    pub sender: u64,
    /// Seconds since its last datagram.
    pub last_heard_secs: f64,
    /// Flow records received from it.
    pub records: u64,
}

/// What `lbadm` asks the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The current state; with the connection table when `conns`.
    Snapshot {
        /// Include [`Snapshot::conns`].
        conns: bool,
    },
    /// Zero the counters of one service, or of all when `None`.
    Zero {
        /// The service.
        service: Option<ServiceKey>,
    },
    /// Change a service or a real at run time.
    Edit(Edit),
    /// The running configuration as YAML (`ipvsadm -S`).
    Save,
    /// Which real a client would reach, and why.
    Which {
        /// The service.
        service: ServiceKey,
        /// The client's address and port.
        client: SocketAddr,
    },
}

/// A run-time change (`ipvsadm -A/-E/-D/-a/-e/-d`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "edit", rename_all = "snake_case")]
pub enum Edit {
    /// Add a service.
    AddService {
        /// The service.
        key: ServiceKey,
        /// Scheduler name; `None` = the agent's default.
        scheduler: Option<String>,
        /// Persistence timeout in seconds; `None` = no persistence.
        persistence: Option<u32>,
        /// Scheduling flags (`lb_flags`: ipvsadm `-b` names and `-o` as `ops`); `None` = none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flags: Option<Vec<String>>,
    },
    /// Change a service.
    EditService {
        /// The service.
        key: ServiceKey,
        /// New scheduler; `None` = unchanged.
        scheduler: Option<String>,
        /// `None` = unchanged, `Some(None)` = turn persistence off, `Some(Some(t))` = timeout t.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            serialize_with = "ser_change",
            deserialize_with = "de_change"
        )]
        persistence: Option<Option<u32>>,
        /// New scheduling flags (the whole list); `None` = unchanged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flags: Option<Vec<String>>,
    },
    /// Delete a service.
    DeleteService {
        /// The service.
        key: ServiceKey,
    },
    /// Add a real to a service.
    AddReal {
        /// The service.
        service: ServiceKey,
        /// The real.
        real: RealKey,
        /// Weight; `None` = the agent's default (1).
        weight: Option<u32>,
        /// Connection thresholds (ipvsadm `-x`/`-y`); `None` = none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thresholds: Option<Thresholds>,
    },
    /// Change a real.
    EditReal {
        /// The service.
        service: ServiceKey,
        /// The real.
        real: RealKey,
        /// New weight; `None` = unchanged.
        weight: Option<u32>,
        /// New connection thresholds (ipvsadm `-x`/`-y`); `None` = unchanged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thresholds: Option<Thresholds>,
    },
    /// Remove a real from a service.
    DeleteReal {
        /// The service.
        service: ServiceKey,
        /// The real.
        real: RealKey,
    },
}

/// Writes a present change: `null` for "turn off", the value otherwise (absent is skipped).
fn ser_change<S: Serializer>(v: &Option<Option<u32>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(inner) => inner.serialize(s),
        None => s.serialize_none(),
    }
}

/// Reads a present change: `null` is "turn off" (an absent field is `None` by `default`).
fn de_change<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

/// What the agent answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Snapshot`].
    Snapshot(Snapshot),
    /// The request was carried out.
    Ok,
    /// Answer to [`Request::Save`].
    Saved {
        /// The running configuration (`Config::to_yaml`).
        yaml: String,
    },
    /// Answer to [`Request::Which`].
    Which(WhichAnswer),
    /// The request was refused or failed; nothing changed.
    Error {
        /// What went wrong, for the operator.
        message: String,
    },
}

impl Response {
    /// An error response.
    pub fn error(message: impl Into<String>) -> Self {
        Response::Error {
            message: message.into(),
        }
    }
}

/// Where a client's flow goes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WhichAnswer {
    /// The real, or `None` when the flow would be dropped.
    pub real: Option<RealKey>,
    /// What decided: `"connection table"`, `"lookup table"` or `"persistence template"`.
    pub source: String,
    /// More about it, for the operator.
    pub detail: String,
}

/// Why a control exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be connected to.
    #[error("{}", connect_message(path, source))]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Reading or writing the socket failed (client side).
    #[error("lost the connection to lb-agent on {}: {}", path.display(), os_reason(source))]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The agent did not answer in time.
    #[error("lb-agent on {} did not answer within {} s", path.display(), after.as_secs())]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// How long the client waited.
        after: Duration,
    },
    /// The agent closed the connection without answering.
    #[error("lb-agent on {} closed the connection without answering", path.display())]
    Closed {
        /// The socket.
        path: PathBuf,
    },
    /// A message was longer than [`MAX_MESSAGE`].
    #[error("message longer than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// A request line is not a valid [`Request`] (server side; send it back as
    /// [`Response::Error`] and read the next line).
    #[error("invalid request: {0}")]
    BadRequest(String),
    /// The agent's answer is not a valid [`Response`].
    #[error("invalid answer from lb-agent: {0}")]
    BadResponse(String),
    /// A message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(#[from] serde_json::Error),
    /// Reading or writing the connection failed (server side).
    #[error("control connection: {}", os_reason(.0))]
    Stream(io::Error),
}

/// The OS's words for an I/O error, without Rust's ` (os error N)` suffix.
fn os_reason(e: &io::Error) -> String {
    let text = e.to_string();
    match e.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .map_or_else(|| text.clone(), str::to_owned),
        None => text,
    }
}

fn connect_message(path: &Path, e: &io::Error) -> String {
    let path = path.display();
    let reason = os_reason(e);
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            format!("cannot connect to {path}: is lb-agent running? ({reason})")
        }
        io::ErrorKind::PermissionDenied => {
            format!(
                "cannot connect to {path}: {reason} (lbadm needs root, or write access to the socket)"
            )
        }
        _ => format!("cannot connect to {path}: {reason}"),
    }
}

/// Sends one request to the agent listening on `socket` and returns its answer.
///
/// Waits at most [`REQUEST_TIMEOUT`] for each of sending and answering. A
/// [`Response::Error`] is a successful exchange: the caller decides what it means.
pub fn request(socket: &Path, req: &Request) -> Result<Response, ControlError> {
    let mut line = serde_json::to_vec(req)?;
    if line.len() > MAX_MESSAGE {
        return Err(ControlError::TooLarge { limit: MAX_MESSAGE });
    }
    line.push(b'\n');

    let stream = UnixStream::connect(socket).map_err(|source| ControlError::Connect {
        path: socket.to_owned(),
        source,
    })?;
    let io_err = |source: io::Error| {
        if matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ControlError::Timeout {
                path: socket.to_owned(),
                after: REQUEST_TIMEOUT,
            }
        } else {
            ControlError::Io {
                path: socket.to_owned(),
                source,
            }
        }
    };
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .map_err(io_err)?;
    // The agent may answer before reading (a refusal) and close: then the write fails, and
    // the answer waiting in the socket is what to report.
    let sent = (&stream).write_all(&line);

    let mut reader = BufReader::new(&stream);
    let mut buf = Vec::new();
    let read = (&mut reader)
        .take(MAX_MESSAGE as u64 + 1)
        .read_until(b'\n', &mut buf);
    match (sent, read) {
        (_, Ok(_)) if !buf.is_empty() => {}
        (Err(e), _) => return Err(io_err(e)),
        (Ok(()), Err(e)) => return Err(io_err(e)),
        (Ok(()), Ok(_)) => {}
    }
    match strip_line(buf)? {
        None => Err(ControlError::Closed {
            path: socket.to_owned(),
        }),
        Some(answer) => {
            serde_json::from_slice(&answer).map_err(|e| ControlError::BadResponse(e.to_string()))
        }
    }
}

/// Removes the newline of a line read with a [`MAX_MESSAGE`] + 1 limit; `None` at EOF.
fn strip_line(mut buf: Vec<u8>) -> Result<Option<Vec<u8>>, ControlError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_MESSAGE {
        return Err(ControlError::TooLarge { limit: MAX_MESSAGE });
    }
    Ok(Some(buf))
}

/// Reads the next request line (server side); blank lines are skipped.
///
/// `Ok(None)` at the end of the stream (also after a final line without newline). A line that
/// is not a valid request gives [`ControlError::BadRequest`]: answer it with
/// [`Response::Error`] and go on reading. [`ControlError::TooLarge`] and
/// [`ControlError::Stream`] leave the stream unusable: close the connection. The caller
/// bounds the wait with its own timeout.
pub async fn read_request<R: AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<Option<Request>, ControlError> {
    loop {
        let mut buf = Vec::new();
        (&mut *r)
            .take(MAX_MESSAGE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await
            .map_err(ControlError::Stream)?;
        let Some(line) = strip_line(buf)? else {
            return Ok(None);
        };
        if line.trim_ascii().is_empty() {
            continue;
        }
        return serde_json::from_slice(&line)
            .map(Some)
            .map_err(|e| ControlError::BadRequest(e.to_string()));
    }
}

/// Writes one response line and flushes it (server side).
///
/// A response longer than [`MAX_MESSAGE`] is not written ([`ControlError::TooLarge`]): send a
/// [`Response::Error`] saying so instead.
pub async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    resp: &Response,
) -> Result<(), ControlError> {
    let mut line = serde_json::to_vec(resp)?;
    if line.len() > MAX_MESSAGE {
        return Err(ControlError::TooLarge { limit: MAX_MESSAGE });
    }
    line.push(b'\n');
    w.write_all(&line).await.map_err(ControlError::Stream)?;
    w.flush().await.map_err(ControlError::Stream)
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
