//! The probes: a TCP connect, an HTTP GET (over TLS for `ssl_get`, see [`super::tls`]), a
//! script, an AMQP handshake ([`super::amqp`]), a file read ([`super::file`]). Each returns an
//! [`Outcome`] within its timeout and never leaves anything behind; a `misc_dynamic` script and
//! a file also say what they do to the real's weight ([`Probe::run_weighted`]).
//!
//! TCP, HTTP and AMQP probes close with FIN, never RST: they shut down their side (after TLS's
//! close_notify), then read until the server closes (a socket closed with unread data would
//! send RST, which RabbitMQ's management listener logs as an error). An HTTP probe with a
//! `digest` reads the whole response first (its body up to [`MAX_BODY`]), then closes the same
//! way.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use md5::{Digest as _, Md5};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
    process::Command,
    time::timeout,
};

pub use super::stream::Route;
use super::{ProbeContext, amqp, machine::Outcome, stream::open, syn::SynTarget, tls::TlsClient};
use crate::{
    config::{DnsType, Secret, StatusCodes},
    model::WeightEffect,
};

/// What to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Connect to `target` (from `bind` if given).
    Tcp {
        /// Address and port to connect to.
        target: SocketAddr,
        /// Source address and port.
        bind: Option<SocketAddr>,
    },
    /// GET each URL on `target`; every one must answer as it expects.
    Http {
        /// Address and port to connect to.
        target: SocketAddr,
        /// Source address and port.
        bind: Option<SocketAddr>,
        /// The URLs, in order.
        urls: Vec<HttpUrl>,
        /// Basic authentication sent with every URL.
        auth: Option<Credentials>,
        /// When set, the requests go to this VIP:port through the MAC of the real at
        /// `target`'s address, as a client's do ([`super::vip_stream`]).
        vip: Option<SocketAddrV4>,
        /// `ssl_get`: each GET over a TLS connection made by this client.
        tls: Option<TlsClient>,
    },
    /// A half-open SYN (see [`super::syn`]) to `target`, the VIP (the data path) or the real's
    /// own address, through the MAC of `real`.
    Syn {
        /// Address and port the SYN goes to.
        target: SocketAddrV4,
        /// The real, whose MAC the frame goes to.
        real: Ipv4Addr,
    },
    /// Run `command` with `sh -c`; exit status 0 is up (with `dynamic`, 2-255 too, setting the
    /// real's weight to the status minus 2).
    Misc {
        /// The command line.
        command: String,
        /// How long it may run.
        timeout: Duration,
        /// keepalived `misc_dynamic`.
        dynamic: bool,
    },
    /// Read a number from `path` (see [`super::file`]).
    File {
        /// The file.
        path: PathBuf,
        /// Multiplier of the number; 0: up while it is 0.
        weight: i32,
        /// Negate (with weight 0: up while the number is not 0).
        reverse: bool,
    },
    /// Speak AMQP 0-9-1 to `target`: connection.start, and with `login` a login, the vhost
    /// and (`alarm`) a publish.
    Amqp {
        /// Address and port to connect to.
        target: SocketAddr,
        /// Source address and port.
        bind: Option<SocketAddr>,
        /// `None`: connection.start is enough.
        login: Option<amqp::Login>,
        /// When set, the connection goes to this VIP:port through the MAC of the real at
        /// `target`'s address, as a client's does ([`super::vip_stream`]).
        vip: Option<SocketAddrV4>,
    },
    /// Send `payload` to `target` (see [`super::udp`]).
    Udp {
        /// Address and port to send to.
        target: SocketAddr,
        /// Source address and port.
        bind: Option<SocketAddr>,
        /// The datagram.
        payload: Vec<u8>,
        /// `None`: up unless port unreachable; `Some(prefix)`: a reply starting with it.
        require_reply: Option<Vec<u8>>,
    },
    /// Ask `target` for `name`'s `qtype` records (see [`super::dns`]).
    Dns {
        /// Address and port to query.
        target: SocketAddr,
        /// Source address and port.
        bind: Option<SocketAddr>,
        /// The name asked about.
        name: String,
        /// The query's type.
        qtype: DnsType,
    },
    /// Greeting, `HELO helo`, `QUIT` with `target` (see [`super::smtp`]).
    Smtp {
        /// Address and port to connect to.
        target: SocketAddr,
        /// Source address and port.
        bind: Option<SocketAddr>,
        /// The name sent with `HELO`.
        helo: String,
    },
    /// An ICMP echo to `target` (see [`super::ping`]).
    Ping {
        /// The address pinged.
        target: IpAddr,
        /// Source address.
        bind: Option<IpAddr>,
    },
}

/// One URL of an HTTP probe and what it must answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// Request path.
    pub path: String,
    /// The `Host` header.
    pub host: String,
    /// The statuses that pass.
    pub status: StatusCodes,
    /// The MD5 the body must have.
    pub digest: Option<[u8; 16]>,
}

/// HTTP Basic authentication credentials (`Debug` hides the password).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password.
    pub password: Secret,
}

impl Credentials {
    /// The `Authorization` header's value: `Basic base64(user:password)` (RFC 7617).
    fn header(&self) -> String {
        let pair = format!("{}:{}", self.user, self.password.expose());
        format!("Basic {}", base64(pair.as_bytes()))
    }
}

impl Probe {
    /// The keepalived name of the checker.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Tcp { .. } | Probe::Syn { .. } => "tcp_check",
            Probe::Http { tls: None, .. } => "http_get",
            Probe::Http { tls: Some(_), .. } => "ssl_get",
            Probe::Misc { .. } => "misc_check",
            Probe::Amqp { .. } => "amqp_check",
            Probe::Udp { .. } => "udp_check",
            Probe::Dns { .. } => "dns_check",
            Probe::Ping { .. } => "ping_check",
            Probe::Smtp { .. } => "smtp_check",
            Probe::File { .. } => "file_check",
        }
    }

    /// Runs the probe as [`Probe::run`] does, with what it does to the real's weight
    /// (`misc_dynamic`, `file_check`). `None`: the probe found nothing to go by (a number a
    /// `file_check` ignores), the last result stands.
    pub async fn run_weighted(
        &self,
        connect_timeout: Duration,
        ctx: &ProbeContext,
    ) -> Option<(Outcome, Option<WeightEffect>)> {
        match self {
            Probe::Misc {
                command,
                timeout,
                dynamic,
            } => Some(misc_weighted(command, *timeout, *dynamic).await),
            Probe::File {
                path,
                weight,
                reverse,
            } => super::file::check(path, *weight, *reverse, connect_timeout).await,
            _ => Some((self.run(connect_timeout, ctx).await, None)),
        }
    }

    /// Runs the probe; network probes are bounded by `connect_timeout`. `ctx` has what the
    /// half-open probe needs (the packet socket and the reals' MACs).
    pub async fn run(&self, connect_timeout: Duration, ctx: &ProbeContext) -> Outcome {
        match self {
            Probe::Syn { target, real } => {
                let Some(prober) = &ctx.syn else {
                    // No packet socket (no CAP_NET_RAW): a connect to the real proves the rest.
                    let real = SocketAddr::from((*real, target.port()));
                    return tcp(real, None, connect_timeout).await;
                };
                let target = syn_target(*target, *real, &ctx.macs.read().expect("macs lock"));
                match target {
                    Ok(target) => prober.probe(target, connect_timeout).await,
                    Err(outcome) => outcome,
                }
            }
            Probe::Tcp { target, bind } => tcp(*target, *bind, connect_timeout).await,
            Probe::Http {
                target,
                bind,
                urls,
                auth,
                vip,
                tls,
            } => {
                let route = match route(*target, *bind, *vip, ctx) {
                    Ok(route) => route,
                    Err(outcome) => return outcome,
                };
                let mut first = None;
                for url in urls {
                    let (auth, tls) = (auth.as_ref(), tls.as_ref());
                    let mut outcome = http_on(&route, url, auth, tls, connect_timeout).await;
                    if !outcome.ok {
                        if urls.len() > 1 {
                            // Say which URL failed.
                            outcome.detail = format!("{}: {}", url.path, outcome.detail);
                        }
                        return outcome;
                    }
                    first.get_or_insert(outcome);
                }
                first.unwrap_or_else(|| failed("no url to check"))
            }
            Probe::Misc {
                command,
                timeout,
                dynamic,
            } => misc_weighted(command, *timeout, *dynamic).await.0,
            Probe::File {
                path,
                weight,
                reverse,
            } => super::file::check(path, *weight, *reverse, connect_timeout)
                .await
                .map_or_else(|| failed("no usable number in the file"), |(o, _)| o),
            Probe::Amqp {
                target,
                bind,
                login,
                vip,
            } => match route(*target, *bind, *vip, ctx) {
                Ok(route) => amqp::check_on(&route, login.as_ref(), connect_timeout).await,
                Err(outcome) => outcome,
            },
            Probe::Udp {
                target,
                bind,
                payload,
                require_reply,
            } => {
                let reply = require_reply.as_deref();
                super::udp::udp(*target, *bind, payload, reply, connect_timeout).await
            }
            Probe::Dns {
                target,
                bind,
                name,
                qtype,
            } => super::dns::dns(*target, *bind, name, *qtype, connect_timeout).await,
            Probe::Smtp { target, bind, helo } => {
                super::smtp::smtp(*target, *bind, helo, connect_timeout).await
            }
            Probe::Ping { target, bind } => {
                super::ping::ping(*target, *bind, connect_timeout).await
            }
        }
    }
}

/// How a check that talks over a connection reaches the real: through `vip` (VIP:port) when
/// set and the packet socket is there, else a kernel connection to `target` (from `bind`).
/// Down if the real's MAC is not known yet.
fn route(
    target: SocketAddr,
    bind: Option<SocketAddr>,
    vip: Option<SocketAddrV4>,
    ctx: &ProbeContext,
) -> Result<Route, Outcome> {
    match (vip, target.ip()) {
        (Some(vip), IpAddr::V4(real)) if ctx.syn.is_some() => vip_route(vip, real, ctx),
        // No packet socket (no CAP_NET_RAW): the real's own address.
        _ => Ok(Route::Connect { target, bind }),
    }
}

/// The way to VIP:port through the MAC of `real`, from the address the kernel would use to
/// reach it.
fn vip_route(vip: SocketAddrV4, real: Ipv4Addr, ctx: &ProbeContext) -> Result<Route, Outcome> {
    let prober = ctx.syn.as_ref().expect("a vip route needs the prober");
    let target = syn_target(vip, real, &ctx.macs.read().expect("macs lock"))?;
    let source = prober
        .source_for(real)
        .map_err(|e| failed(format!("no route to {real}: {e}")))?;
    Ok(Route::Vip {
        iface: prober.interface(),
        target,
        source,
        isn: prober.next_isn(),
    })
}

/// The `Host` header that names `target`: `192.0.2.1:80`, `[2001:db8::1]:80`.
pub fn host_header(target: SocketAddr) -> String {
    match target {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// Base64 with padding (RFC 4648, the standard alphabet), as Basic authentication uses it.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Where the half-open probe of `real` sends its SYN (`to`, through the real's MAC), or the
/// outcome of a probe that cannot be sent yet (the real's MAC is not known).
pub(super) fn syn_target(
    to: SocketAddrV4,
    real: Ipv4Addr,
    macs: &HashMap<IpAddr, [u8; 6]>,
) -> Result<SynTarget, Outcome> {
    match macs.get(&real.into()) {
        Some(&mac) => Ok(SynTarget { to, real, mac }),
        None => Err(failed(format!("no MAC address for {real} yet"))),
    }
}

pub(super) fn failed(detail: impl Into<String>) -> Outcome {
    Outcome {
        ok: false,
        detail: detail.into(),
    }
}

/// Why a connect or exchange failed, in an operator's words.
pub(super) fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connect refused".into(),
        K::ConnectionReset => "connection reset".into(),
        K::TimedOut => "timeout".into(),
        K::HostUnreachable => "host unreachable".into(),
        K::NetworkUnreachable => "network unreachable".into(),
        K::AddrInUse => "bind address in use".into(),
        K::AddrNotAvailable => "bind address not available".into(),
        _ => e.to_string(),
    }
}

pub(super) async fn connect(
    target: SocketAddr,
    bind: Option<SocketAddr>,
    limit: Duration,
) -> Result<TcpStream, String> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| io_reason(&e))?;
    if let Some(bind) = bind {
        socket.set_reuseaddr(true).map_err(|e| io_reason(&e))?;
        socket.bind(bind).map_err(|e| io_reason(&e))?;
    }
    match timeout(limit, socket.connect(target)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(io_reason(&e)),
        Err(_) => Err("timeout".into()),
    }
}

/// Sends FIN (after TLS's close_notify on a TLS stream), then reads until the peer closes (or
/// a short grace period ends), so the socket is closed without RST.
pub(super) async fn close_politely<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = timeout(Duration::from_millis(500), drain).await;
}

/// `tcp_check`: up if the connect succeeds.
pub async fn tcp(target: SocketAddr, bind: Option<SocketAddr>, limit: Duration) -> Outcome {
    match connect(target, bind, limit).await {
        Ok(stream) => {
            close_politely(stream).await;
            Outcome {
                ok: true,
                detail: "connected".into(),
            }
        }
        Err(reason) => failed(reason),
    }
}

/// Longest response head (status line and headers) the HTTP probe reads.
const MAX_HEAD: usize = 64 * 1024;
/// Longest body the HTTP probe reads to check a `digest`: 1 MiB.
pub const MAX_BODY: usize = 1024 * 1024;

/// `http_get` of one URL over a connection to `target` (from `bind`): see [`http_on`].
pub async fn http(
    target: SocketAddr,
    bind: Option<SocketAddr>,
    url: &HttpUrl,
    auth: Option<&Credentials>,
    limit: Duration,
) -> Outcome {
    http_on(&Route::Connect { target, bind }, url, auth, None, limit).await
}

/// `ssl_get` of one URL: [`http`] over a TLS connection made by `tls`.
pub async fn https(
    target: SocketAddr,
    bind: Option<SocketAddr>,
    url: &HttpUrl,
    auth: Option<&Credentials>,
    tls: &TlsClient,
    limit: Duration,
) -> Outcome {
    http_on(
        &Route::Connect { target, bind },
        url,
        auth,
        Some(tls),
        limit,
    )
    .await
}

/// `http_get` (or, with `tls`, `ssl_get`) of one URL along `route`: up if `GET path` answers
/// with one of the URL's statuses and, with a digest, a body of that MD5. The whole exchange,
/// connect and TLS handshake included, is bounded by `limit`.
pub async fn http_on(
    route: &Route,
    url: &HttpUrl,
    auth: Option<&Credentials>,
    tls: Option<&TlsClient>,
    limit: Duration,
) -> Outcome {
    let run = async {
        let (stream, to) = open(route, limit).await?;
        over_tls(stream, to, url, auth, tls).await
    };
    match timeout(limit, run).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(reason)) => failed(reason),
        Err(_) => failed("timeout"),
    }
}

/// The exchange on `stream` (connected to `to`), inside a TLS session when `tls` is given.
async fn over_tls<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    to: SocketAddr,
    url: &HttpUrl,
    auth: Option<&Credentials>,
    tls: Option<&TlsClient>,
) -> Result<Outcome, String> {
    match tls {
        None => exchange(stream, url, auth).await,
        Some(tls) => {
            let name = tls.server_name(&url.host, to);
            exchange(tls.connect(stream, name).await?, url, auth).await
        }
    }
}

/// The request, the response and the verdict on `stream`; `Err` when no verdict on the
/// response could be reached (I/O, a malformed answer).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    url: &HttpUrl,
    auth: Option<&Credentials>,
) -> Result<Outcome, String> {
    let authorization = auth
        .map(|a| format!("Authorization: {}\r\n", a.header()))
        .unwrap_or_default();
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: lb-agent\r\n{authorization}Connection: \
         close\r\n\r\n",
        url.path, url.host
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| stream_reason(&e))?;
    let mut response = Vec::new();
    let line_end = read_until(&mut stream, &mut response, b"\r\n", "status line").await?;
    let line = String::from_utf8_lossy(&response[..line_end]);
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| "malformed status line".to_string())?;
    let status = format!("HTTP {code}");
    if !url.status.accepts(code) {
        close_politely(stream).await;
        return Ok(failed(format!("{status}, expected {}", url.status)));
    }
    let Some(want) = url.digest else {
        close_politely(stream).await;
        return Ok(Outcome {
            ok: true,
            detail: status,
        });
    };
    let head_end = read_until(&mut stream, &mut response, b"\r\n\r\n", "response head").await? + 4;
    let start = response.split_off(head_end);
    let body = match read_body(&mut stream, &response, start).await {
        Ok(body) => body,
        Err(reason) => {
            close_politely(stream).await;
            return Ok(failed(format!("{status}, {reason}")));
        }
    };
    close_politely(stream).await;
    let got: [u8; 16] = Md5::digest(&body).into();
    if got == want {
        Ok(Outcome {
            ok: true,
            detail: status,
        })
    } else {
        Ok(failed(format!(
            "{status}, body MD5 {} is not the digest {}",
            hex(&got),
            hex(&want)
        )))
    }
}

/// Reads into `buf`; 0 at the end of the stream. A TLS peer that closes without close_notify
/// ends the stream too (many servers do, and keepalived does not mind): a `Content-Length`
/// still tells a cut body.
async fn read_some<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut [u8]) -> Result<usize, String> {
    match stream.read(buf).await {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(stream_reason(&e)),
    }
}

/// Why reading or writing a stream failed: [`io_reason`], or what TLS said (an alert of the
/// server after the handshake, such as a client certificate it wanted).
fn stream_reason(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => format!("TLS: {tls}"),
        None => io_reason(e),
    }
}

/// Reads into `buf` until it holds `end`; the offset of `end` in `buf`. `what` names what
/// `end` ends, for errors.
async fn read_until<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    end: &[u8],
    what: &str,
) -> Result<usize, String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = buf.windows(end.len()).position(|w| w == end) {
            return Ok(at);
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("{what} longer than {} KiB", MAX_HEAD / 1024));
        }
        let n = read_some(stream, &mut chunk).await?;
        if n == 0 {
            return Err(format!("connection closed before the end of the {what}"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The body after `head`: its `Content-Length` bytes, or everything until the server closes;
/// at most [`MAX_BODY`]. `body` is what came with the head. `Err` says why it cannot be
/// checked.
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    head: &[u8],
    mut body: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let too_long = format!(
        "body over {} MiB, the most read to check a digest",
        MAX_BODY / (1024 * 1024)
    );
    let length = content_length(head);
    if let Some(len) = length.filter(|&len| len > MAX_BODY) {
        return Err(format!("Content-Length {len}: {too_long}"));
    }
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(len) = length.filter(|&len| body.len() >= len) {
            // What follows the announced length is not the body (keepalived ignores it too).
            body.truncate(len);
            return Ok(body);
        }
        if body.len() > MAX_BODY {
            return Err(too_long);
        }
        let n = read_some(stream, &mut chunk).await?;
        if n == 0 {
            return match length {
                Some(len) => Err(format!(
                    "body ended after {} of the {len} bytes of its Content-Length",
                    body.len()
                )),
                None => Ok(body),
            };
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

/// The `Content-Length` a response head announces, if it does.
fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .skip(1)
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            if name.trim().eq_ignore_ascii_case("content-length") {
                value.trim().parse().ok()
            } else {
                None
            }
        })
}

/// Lowercase hexadecimal.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `misc_check`: runs `command` with `sh -c` in its own process group; exit status 0 is up.
/// On timeout the whole group is killed.
pub async fn misc(command: &str, limit: Duration) -> Outcome {
    misc_weighted(command, limit, false).await.0
}

/// Runs a `misc_check` script: exit 0 passes; with `dynamic` (keepalived's `misc_dynamic`), 2 to
/// 255 pass too and set the real's weight to the status minus 2, while 0 restores the configured
/// weight; anything else fails.
pub async fn misc_weighted(
    command: &str,
    limit: Duration,
    dynamic: bool,
) -> (Outcome, Option<WeightEffect>) {
    match script(command, limit).await {
        Ok(0) => (
            Outcome {
                ok: true,
                detail: "exit 0".into(),
            },
            None,
        ),
        Ok(code) if dynamic && (2..=255).contains(&code) => {
            let weight = (code - 2) as u32;
            let outcome = Outcome {
                ok: true,
                detail: format!("exit {code}: weight {weight}"),
            };
            (outcome, Some(WeightEffect::Set(weight)))
        }
        Ok(code) => (failed(format!("exit status {code}")), None),
        Err(outcome) => (outcome, None),
    }
}

/// Runs `command` with `sh -c` within `limit`: its exit status, or why there is none.
async fn script(command: &str, limit: Duration) -> Result<i32, Outcome> {
    let child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Err(failed(format!("cannot run the script: {e}"))),
    };
    match timeout(limit, child.wait()).await {
        Ok(Ok(status)) => status.code().ok_or_else(|| failed("killed by a signal")),
        Ok(Err(e)) => Err(failed(format!("waiting for the script: {e}"))),
        Err(_) => {
            if let Some(pid) = child.id() {
                // SAFETY: signalling the process group we created.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
            let _ = child.wait().await;
            Err(failed(format!("timeout after {}s", limit.as_secs_f64())))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    use tokio::{
        io::AsyncWriteExt as _,
        net::TcpListener,
        sync::mpsc::{UnboundedReceiver, unbounded_channel},
    };

    use super::*;

    const LIMIT: Duration = Duration::from_secs(2);

    async fn closed_port() -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        addr
    }

    #[tokio::test]
    async fn tcp_up_and_refused() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            // The probe closes with FIN: we read EOF, not a reset.
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf).await;
            matches!(n, Ok(0))
        });
        let up = tcp(addr, None, LIMIT).await;
        assert_eq!(
            up,
            Outcome {
                ok: true,
                detail: "connected".into()
            }
        );
        assert!(server.await.unwrap(), "the server saw FIN (EOF), not RST");
        let down = tcp(closed_port().await, None, LIMIT).await;
        assert_eq!(down, failed("connect refused"));
    }

    #[tokio::test]
    async fn tcp_from_a_bound_address() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move { l.accept().await.unwrap().1 });
        let bind = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 0));
        assert!(tcp(addr, Some(bind), LIMIT).await.ok);
        assert_eq!(server.await.unwrap().ip(), bind.ip());
    }

    /// A URL of `path` that accepts `status`, without digest, for Host `test.example`.
    fn url(path: &str, status: StatusCodes) -> HttpUrl {
        HttpUrl {
            path: path.into(),
            host: "test.example".into(),
            status,
            digest: None,
        }
    }

    fn ok(detail: &str) -> Outcome {
        Outcome {
            ok: true,
            detail: detail.into(),
        }
    }

    /// A server that answers each request with what `respond` makes of its head, then closes.
    /// Each request's head, and whether the probe then closed with FIN (EOF, not RST), come out
    /// of the receiver.
    async fn server(
        respond: impl Fn(&str) -> Vec<u8> + Send + 'static,
    ) -> (SocketAddr, UnboundedReceiver<(String, bool)>) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&req).into_owned();
                let _ = s.write_all(&respond(&head)).await;
                let _ = s.shutdown().await;
                let fin = loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break true,
                        Ok(_) => {}
                        Err(_) => break false,
                    }
                };
                let _ = tx.send((head, fin));
            }
        });
        (addr, rx)
    }

    /// A response of `status` with `body`, with a Content-Length or without.
    fn response(status: u16, body: &[u8], content_length: bool) -> Vec<u8> {
        let mut r = format!("HTTP/1.0 {status} X\r\nContent-Type: text/plain\r\n");
        if content_length {
            r.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        r.push_str("\r\n");
        let mut r = r.into_bytes();
        r.extend_from_slice(body);
        r
    }

    async fn http_server(status: u16) -> SocketAddr {
        server(move |head| {
            let body = if head.starts_with("GET /health HTTP/1.0\r\n") {
                "ok"
            } else {
                "bad"
            };
            response(status, body.as_bytes(), true)
        })
        .await
        .0
    }

    #[tokio::test]
    async fn http_status_decides() {
        let good = http_server(200).await;
        let want_200 = url("/health", StatusCodes::one(200));
        assert_eq!(
            http(good, None, &want_200, None, LIMIT).await,
            ok("HTTP 200")
        );
        let bad = http_server(503).await;
        assert_eq!(
            http(bad, None, &want_200, None, LIMIT).await,
            failed("HTTP 503, expected 200")
        );
        assert_eq!(
            http(closed_port().await, None, &want_200, None, LIMIT).await,
            failed("connect refused")
        );
    }

    #[tokio::test]
    async fn http_status_lists_and_ranges() {
        let (addr, mut seen) = server(|head| {
            let status = head
                .strip_prefix("GET /")
                .and_then(|rest| rest.get(..3))
                .and_then(|code| code.parse().ok())
                .unwrap_or(500);
            response(status, b"", true)
        })
        .await;
        let list = StatusCodes::new(vec![(200, 200), (300, 399)]).unwrap();
        let check = |path: &str, status: &StatusCodes| {
            let u = url(path, status.clone());
            async move { http(addr, None, &u, None, LIMIT).await }
        };
        assert_eq!(check("/204", &StatusCodes::any_2xx()).await, ok("HTTP 204"));
        assert_eq!(
            check("/302", &StatusCodes::any_2xx()).await,
            failed("HTTP 302, expected 200-299")
        );
        assert_eq!(check("/200", &list).await, ok("HTTP 200"));
        assert_eq!(check("/302", &list).await, ok("HTTP 302"));
        assert_eq!(
            check("/204", &list).await,
            failed("HTTP 204, expected 200 300-399")
        );
        assert_eq!(
            check("/404", &list).await,
            failed("HTTP 404, expected 200 300-399")
        );
        for _ in 0..6 {
            let (_, fin) = seen.recv().await.unwrap();
            assert!(fin, "the probe closed with FIN");
        }
        // Every URL must pass; the failing one is named.
        let probe = Probe::Http {
            target: addr,
            bind: None,
            urls: vec![
                url("/200", StatusCodes::any_2xx()),
                url("/503", StatusCodes::any_2xx()),
            ],
            auth: None,
            vip: None,
            tls: None,
        };
        assert_eq!(
            probe.run(LIMIT, &ProbeContext::default()).await,
            failed("/503: HTTP 503, expected 200-299")
        );
        let Probe::Http { urls, .. } = &probe else {
            unreachable!()
        };
        let passing = Probe::Http {
            target: addr,
            bind: None,
            urls: vec![urls[0].clone(), url("/301", list)],
            auth: None,
            vip: None,
            tls: None,
        };
        assert_eq!(
            passing.run(LIMIT, &ProbeContext::default()).await,
            ok("HTTP 200")
        );
    }

    /// The MD5 of "The quick brown fox jumps over the lazy dog".
    const FOX_MD5: [u8; 16] = [
        0x9e, 0x10, 0x7d, 0x9d, 0x37, 0x2b, 0xb6, 0x82, 0x6b, 0xd8, 0x1d, 0x35, 0x42, 0xa4, 0x19,
        0xd6,
    ];

    #[tokio::test]
    async fn http_digest_matches_the_whole_body() {
        let fox = b"The quick brown fox jumps over the lazy dog";
        let (addr, mut seen) = server(move |head| match head.split_whitespace().nth(1) {
            // Announced, and in several writes' worth of bytes after the head.
            Some("/length") => response(200, fox, true),
            // Until the server closes.
            Some("/eof") => response(200, fox, false),
            // What follows the announced length is not the body.
            Some("/trailing") => {
                let mut r = response(200, fox, true);
                r.extend_from_slice(b"junk");
                r
            }
            Some("/short") => {
                let mut r = response(200, fox, true);
                r.truncate(r.len() - 3);
                r
            }
            _ => response(200, b"hello", true),
        })
        .await;
        let digest = |path: &str| HttpUrl {
            digest: Some(FOX_MD5),
            ..url(path, StatusCodes::any_2xx())
        };
        for path in ["/length", "/eof", "/trailing"] {
            assert_eq!(
                http(addr, None, &digest(path), None, LIMIT).await,
                ok("HTTP 200"),
                "{path}"
            );
        }
        assert_eq!(
            http(addr, None, &digest("/other"), None, LIMIT).await,
            failed(
                "HTTP 200, body MD5 5d41402abc4b2a76b9719d911017c592 is not the digest \
                 9e107d9d372bb6826bd81d3542a419d6"
            )
        );
        assert_eq!(
            http(addr, None, &digest("/short"), None, LIMIT).await,
            failed("HTTP 200, body ended after 40 of the 43 bytes of its Content-Length")
        );
        for _ in 0..5 {
            let (_, fin) = seen.recv().await.unwrap();
            assert!(fin, "the probe read the response and closed with FIN");
        }
    }

    #[tokio::test]
    async fn http_body_over_1_mib_is_down() {
        let (addr, _seen) = server(|head| match head.split_whitespace().nth(1) {
            Some("/max") => response(200, &vec![b'x'; MAX_BODY], false),
            Some("/over") => response(200, &vec![b'x'; MAX_BODY + 1], false),
            // Announced too long: not even read.
            _ => response(200, &vec![b'x'; MAX_BODY + 1], true),
        })
        .await;
        let max_md5: [u8; 16] = Md5::digest(vec![b'x'; MAX_BODY]).into();
        let digest = |path: &str| HttpUrl {
            digest: Some(max_md5),
            ..url(path, StatusCodes::any_2xx())
        };
        assert_eq!(
            http(addr, None, &digest("/max"), None, LIMIT).await,
            ok("HTTP 200")
        );
        assert_eq!(
            http(addr, None, &digest("/over"), None, LIMIT).await,
            failed("HTTP 200, body over 1 MiB, the most read to check a digest")
        );
        assert_eq!(
            http(addr, None, &digest("/announced"), None, LIMIT).await,
            failed(
                "HTTP 200, Content-Length 1048577: body over 1 MiB, the most read to check a \
                 digest"
            )
        );
        // Without a digest the body is not checked, whatever its size.
        let plain = url("/over", StatusCodes::any_2xx());
        assert_eq!(http(addr, None, &plain, None, LIMIT).await, ok("HTTP 200"));
    }

    #[tokio::test]
    async fn http_basic_auth_and_virtualhost() {
        // RabbitMQ's management API: 401 without valid credentials.
        let (addr, mut seen) = server(|head| {
            let authorized =
                head.contains("\r\nAuthorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n");
            response(if authorized { 200 } else { 401 }, b"{}", true)
        })
        .await;
        let alarms = HttpUrl {
            host: "www.example.org".into(),
            ..url("/api/health/checks/alarms", StatusCodes::any_2xx())
        };
        assert_eq!(
            http(addr, None, &alarms, None, LIMIT).await,
            failed("HTTP 401, expected 200-299")
        );
        let (request, fin) = seen.recv().await.unwrap();
        assert!(fin);
        assert!(!request.contains("Authorization"), "{request:?}");
        // RFC 7617's example.
        let credentials = Credentials {
            user: "Aladdin".into(),
            password: Secret::new("open sesame"),
        };
        assert!(!format!("{credentials:?}").contains("sesame"));
        assert_eq!(
            http(addr, None, &alarms, Some(&credentials), LIMIT).await,
            ok("HTTP 200")
        );
        let (request, fin) = seen.recv().await.unwrap();
        assert!(fin);
        assert_eq!(
            request,
            "GET /api/health/checks/alarms HTTP/1.0\r\nHost: www.example.org\r\nUser-Agent: \
             lb-agent\r\nAuthorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\nConnection: \
             close\r\n\r\n"
        );
    }

    #[test]
    fn base64_as_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
        assert_eq!(base64("lbcheck:päss".as_bytes()), "bGJjaGVjazpww6Rzcw==");
    }

    #[tokio::test]
    async fn http_times_out_on_a_silent_server() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let _keep = tokio::spawn(async move {
            let (_s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let t = std::time::Instant::now();
        let any = url("/", StatusCodes::any_2xx());
        assert_eq!(
            http(addr, None, &any, None, Duration::from_millis(300)).await,
            failed("timeout")
        );
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn tcp_over_ipv6() {
        let l = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, peer) = l.accept().await.unwrap();
            let mut buf = [0u8; 16];
            (peer, matches!(s.read(&mut buf).await, Ok(0)))
        });
        // From a bound source (bindto ::1, a fixed source port), as keepalived's bindto.
        let source = {
            let probe = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).await.unwrap();
            probe.local_addr().unwrap()
        };
        assert_eq!(
            tcp(addr, Some(source), LIMIT).await,
            Outcome {
                ok: true,
                detail: "connected".into()
            }
        );
        let (peer, fin) = server.await.unwrap();
        assert_eq!(peer, source, "the check came from bindto and bind_port");
        assert!(fin, "closed with FIN over IPv6 too");
        let closed = {
            let l = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).await.unwrap();
            l.local_addr().unwrap()
        };
        assert_eq!(tcp(closed, None, LIMIT).await, failed("connect refused"));
    }

    #[tokio::test]
    async fn http_over_ipv6_names_the_host_in_brackets() {
        let l = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = vec![0u8; 1024];
            let n = s.read(&mut req).await.unwrap();
            let resp = "HTTP/1.0 204 No Content\r\n\r\n";
            s.write_all(resp.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        let bind = SocketAddr::from((Ipv6Addr::LOCALHOST, 0));
        let ready = HttpUrl {
            host: host_header(addr),
            ..url("/ready", StatusCodes::one(204))
        };
        assert_eq!(
            http(addr, Some(bind), &ready, None, LIMIT).await,
            Outcome {
                ok: true,
                detail: "HTTP 204".into()
            }
        );
        let request = server.await.unwrap();
        let host = format!("Host: [::1]:{}\r\n", addr.port());
        assert!(
            request.starts_with("GET /ready HTTP/1.0\r\n") && request.contains(&host),
            "{request:?}"
        );
    }

    #[tokio::test]
    async fn misc_exit_codes_and_timeout() {
        assert!(misc("exit 0", LIMIT).await.ok);
        assert_eq!(misc("exit 3", LIMIT).await, failed("exit status 3"));
        let t = std::time::Instant::now();
        let o = misc("sleep 5; exit 0", Duration::from_millis(200)).await;
        assert!(!o.ok && o.detail.starts_with("timeout"), "{o:?}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the script was killed"
        );
    }

    #[tokio::test]
    async fn misc_dynamic_sets_the_weight_from_the_exit_status() {
        let dir = std::env::temp_dir().join(format!("lb-misc-dynamic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = |code: u8| {
            let path = dir.join(format!("exit{code}.sh"));
            std::fs::write(&path, format!("#!/bin/sh\nexit {code}\n")).unwrap();
            format!("sh {}", path.display())
        };
        // 0: up, the configured weight.
        let (o, w) = misc_weighted(&script(0), LIMIT, true).await;
        assert!(o.ok && w.is_none(), "{o:?} {w:?}");
        // 1: down.
        let (o, w) = misc_weighted(&script(1), LIMIT, true).await;
        assert!(!o.ok && w.is_none(), "{o:?} {w:?}");
        // 5: up with weight 3; 2: up with weight 0; 255: weight 253.
        let (o, w) = misc_weighted(&script(5), LIMIT, true).await;
        assert!(o.ok, "{o:?}");
        assert_eq!(w, Some(WeightEffect::Set(3)));
        assert_eq!(
            misc_weighted(&script(2), LIMIT, true).await.1,
            Some(WeightEffect::Set(0))
        );
        assert_eq!(
            misc_weighted(&script(255), LIMIT, true).await.1,
            Some(WeightEffect::Set(253))
        );
        // Without misc_dynamic, 5 is a failure.
        let (o, w) = misc_weighted(&script(5), LIMIT, false).await;
        assert!(!o.ok && w.is_none(), "{o:?} {w:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
