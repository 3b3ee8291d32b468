//! The demo's real service and its clients: a small HTTP server that answers every `GET` with
//! the name of the real server it runs on, and HTTP clients for short (HTTP/1.0, one request
//! per connection) and long-lived (HTTP/1.1 keep-alive) connections.

use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use lb_tests::netns::Netns;

/// How long a server connection may stay idle before the server closes it.
const IDLE: Duration = Duration::from_secs(120);
/// Largest request head the server accepts.
const MAX_HEAD: usize = 16 * 1024;

/// The open connections of a server, by id, so that stopping the server can close them.
type Conns = Arc<Mutex<BTreeMap<u64, TcpStream>>>;

/// An HTTP server on `0.0.0.0:port` in a namespace, answering every request with `200 OK` and
/// a fixed body. Dropping it stops it as a stopped service would: the listener closes (new
/// connections are refused) and every open connection is closed.
pub struct HttpServer {
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    conns: Conns,
    acceptor: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Starts serving `body` on port `port` of every address of `ns`.
    pub fn start(ns: &Netns, port: u16, body: &str) -> Result<Self> {
        let bind = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        let listener = ns
            .try_enter(|| TcpListener::bind(bind))?
            .with_context(|| format!("binding HTTP {bind} in netns {}", ns.name()))?;
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Conns = Arc::default();
        let acceptor = {
            let (listener, stop, conns) = (listener.clone(), stop.clone(), conns.clone());
            let body = body.to_owned();
            thread::Builder::new()
                .name(format!("http {}", ns.name()))
                .spawn(move || accept_loop(&listener, &stop, &conns, &body))
                .context("spawning the HTTP server thread")?
        };
        Ok(Self {
            listener,
            stop,
            conns,
            acceptor: Some(acceptor),
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the blocked accept(2), which then fails with EINVAL.
        // SAFETY: the listener's descriptor stays open while `self.listener` lives.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // The acceptor closed the connections; these are the ones it could not reach.
        for conn in lock(&self.conns).values() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Accepts connections until stopped, one thread per connection; on stop, closes them all and
/// waits for their threads.
fn accept_loop(listener: &TcpListener, stop: &AtomicBool, conns: &Conns, body: &str) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) if stop.load(Ordering::Relaxed) => break,
            Err(_) => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let id = next_id;
        next_id += 1;
        if let Ok(clone) = stream.try_clone() {
            lock(conns).insert(id, clone);
        }
        let (conns, body) = (conns.clone(), body.to_owned());
        workers.push(thread::spawn(move || {
            serve(stream, &body);
            lock(&conns).remove(&id);
        }));
        workers.retain(|w| !w.is_finished());
    }
    for conn in lock(conns).values() {
        let _ = conn.shutdown(Shutdown::Both);
    }
    for worker in workers {
        let _ = worker.join();
    }
}

/// Serves one connection: requests until the client closes, asks to close (HTTP/1.0 without
/// keep-alive, or `Connection: close`), goes idle for too long, or sends garbage.
fn serve(mut stream: TcpStream, body: &str) {
    if stream.set_read_timeout(Some(IDLE)).is_err() {
        return;
    }
    let mut buf = Vec::new();
    loop {
        let Ok(Some(head)) = read_head(&mut stream, &mut buf) else {
            return;
        };
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let request_line = head.lines().next().unwrap_or_default();
        let header = |name: &str| {
            head.lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().to_owned())
        };
        let keep_alive = if request_line.ends_with("http/1.1") {
            header("connection").as_deref() != Some("close")
        } else {
            header("connection").as_deref() == Some("keep-alive")
        };
        let version = if request_line.ends_with("http/1.1") {
            "1.1"
        } else {
            "1.0"
        };
        let response = format!(
            "HTTP/{version} 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: {}\r\n\r\n{body}",
            body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
        if !keep_alive {
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
    }
}

/// Reads up to the end of the next message head (`\r\n\r\n`) and returns it, leaving whatever
/// follows in `buf`. `None` when the peer closed before sending anything more.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buf[..end].to_vec();
            buf.drain(..end + 4);
            return Ok(Some(head));
        }
        ensure!(buf.len() <= MAX_HEAD, "message head too long");
        let n = stream.read(&mut chunk).context("reading")?;
        if n == 0 {
            ensure!(buf.is_empty(), "connection closed inside a message head");
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Parses a response head: fails unless the status is 200; returns the Content-Length.
fn parse_response_head(head: &[u8]) -> Result<Option<usize>> {
    let head = String::from_utf8_lossy(head);
    let status = head.lines().next().unwrap_or_default();
    ensure!(
        status.starts_with("HTTP/1.") && status.split_whitespace().nth(1) == Some("200"),
        "unexpected response {status:?}"
    );
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse().context("bad Content-Length"))
        .transpose()
}

/// One HTTP/1.0 request on a new connection (`GET /`), as a browser or curl without
/// keep-alive sends it; returns the body. Must run in the client's namespace.
pub fn get(to: SocketAddr, timeout: Duration) -> Result<String> {
    let mut stream =
        TcpStream::connect_timeout(&to, timeout).with_context(|| format!("connecting to {to}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET / HTTP/1.0\r\nHost: {}\r\n\r\n", to.ip())
        .with_context(|| format!("sending to {to}"))?;
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .with_context(|| format!("reading the reply from {to}"))?;
    let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("{to} closed the connection without a full response");
    };
    parse_response_head(&reply[..end])?;
    Ok(String::from_utf8_lossy(&reply[end + 4..]).into_owned())
}

/// A long-lived HTTP/1.1 connection that sends a request whenever asked.
pub struct KeepAlive {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl KeepAlive {
    /// Connects to `to`. Must run in the client's namespace; the connection can then be used
    /// from any thread.
    pub fn connect(to: SocketAddr, timeout: Duration) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&to, timeout)
            .with_context(|| format!("connecting to {to}"))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends `GET /` on the connection and returns the body.
    pub fn get(&mut self) -> Result<String> {
        let host = self.stream.peer_addr()?.ip();
        write!(self.stream, "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").context("sending")?;
        let head = read_head(&mut self.stream, &mut self.buf)?
            .context("the server closed the connection")?;
        let len = parse_response_head(&head)?.context("no Content-Length")?;
        let mut chunk = [0u8; 4096];
        while self.buf.len() < len {
            let n = self.stream.read(&mut chunk).context("reading the body")?;
            ensure!(n > 0, "the server closed the connection inside a body");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = self.buf.drain(..len).collect();
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}
