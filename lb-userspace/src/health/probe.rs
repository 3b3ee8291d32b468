//! The probes: a TCP connect, an HTTP GET, a script, an AMQP handshake ([`super::amqp`]). Each
//! returns an [`Outcome`] within its timeout and never leaves anything behind.
//!
//! TCP, HTTP and AMQP probes close with FIN, never RST: they shut down their side, then read
//! until the server closes (a socket closed with unread data would send RST, which RabbitMQ's
//! management listener logs as an error).

use std::{net::SocketAddr, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
    process::Command,
    time::timeout,
};

use super::{amqp, machine::Outcome};

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
    /// GET each path on `target`; all must answer with their status code.
    Http {
        /// Address and port to connect to.
        target: SocketAddr,
        /// Source address and port.
        bind: Option<SocketAddr>,
        /// (path, expected status code).
        urls: Vec<(String, u16)>,
    },
    /// Run `command` with `sh -c`; exit status 0 is up.
    Misc {
        /// The command line.
        command: String,
        /// How long it may run.
        timeout: Duration,
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
    },
}

impl Probe {
    /// The keepalived name of the checker.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Tcp { .. } => "tcp_check",
            Probe::Http { .. } => "http_get",
            Probe::Misc { .. } => "misc_check",
            Probe::Amqp { .. } => "amqp_check",
        }
    }

    /// Runs the probe; network probes are bounded by `connect_timeout`.
    pub async fn run(&self, connect_timeout: Duration) -> Outcome {
        match self {
            Probe::Tcp { target, bind } => tcp(*target, *bind, connect_timeout).await,
            Probe::Http { target, bind, urls } => {
                for (path, code) in urls {
                    let outcome = http(*target, *bind, path, *code, connect_timeout).await;
                    if !outcome.ok {
                        return outcome;
                    }
                }
                Outcome {
                    ok: true,
                    detail: format!("HTTP {}", urls.first().map_or(200, |u| u.1)),
                }
            }
            Probe::Misc { command, timeout } => misc(command, *timeout).await,
            Probe::Amqp {
                target,
                bind,
                login,
            } => amqp::check(*target, *bind, login.as_ref(), connect_timeout).await,
        }
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

/// Sends FIN, then reads until the peer closes (or a short grace period ends), so the socket is
/// closed without RST.
pub(super) async fn close_politely(mut stream: TcpStream) {
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

/// Longest response head the HTTP probe reads before deciding.
const MAX_HEAD: usize = 64 * 1024;

/// `http_get`: up if `GET path` answers with status `expected`. The whole exchange is bounded
/// by `limit`.
pub async fn http(
    target: SocketAddr,
    bind: Option<SocketAddr>,
    path: &str,
    expected: u16,
    limit: Duration,
) -> Outcome {
    let exchange = async {
        let mut stream: TcpStream = connect(target, bind, limit).await?;
        let host = match target {
            SocketAddr::V4(a) => a.to_string(),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: lb-agent\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| io_reason(&e))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await.map_err(|e| io_reason(&e))?;
            if n == 0 {
                return Err("connection closed before a status line".into());
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > MAX_HEAD {
                return Err("no status line".into());
            }
        }
        let line = String::from_utf8_lossy(&head);
        let code = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| "malformed status line".to_string())?;
        close_politely(stream).await;
        Ok::<u16, String>(code)
    };
    match timeout(limit, exchange).await {
        Ok(Ok(code)) => Outcome {
            ok: code == expected,
            detail: format!("HTTP {code}"),
        },
        Ok(Err(reason)) => failed(reason),
        Err(_) => failed("timeout"),
    }
}

/// `misc_check`: runs `command` with `sh -c` in its own process group; exit status 0 is up.
/// On timeout the whole group is killed.
pub async fn misc(command: &str, limit: Duration) -> Outcome {
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
        Err(e) => return failed(format!("cannot run the script: {e}")),
    };
    match timeout(limit, child.wait()).await {
        Ok(Ok(status)) if status.success() => Outcome {
            ok: true,
            detail: "exit 0".into(),
        },
        Ok(Ok(status)) => failed(match status.code() {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".into(),
        }),
        Ok(Err(e)) => failed(format!("waiting for the script: {e}")),
        Err(_) => {
            if let Some(pid) = child.id() {
                // SAFETY: signalling the process group we created.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
            let _ = child.wait().await;
            failed(format!("timeout after {}s", limit.as_secs_f64()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    use tokio::{io::AsyncWriteExt as _, net::TcpListener};

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

    async fn http_server(status: u16) -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut req = vec![0u8; 1024];
                let n = s.read(&mut req).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&req[..n]).to_string();
                let body = if line.starts_with("GET /health HTTP/1.0\r\n") {
                    "ok"
                } else {
                    "bad"
                };
                let resp = format!("HTTP/1.0 {status} X\r\nContent-Length: 2\r\n\r\n{body}");
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_status_decides() {
        let good = http_server(200).await;
        assert_eq!(
            http(good, None, "/health", 200, LIMIT).await,
            Outcome {
                ok: true,
                detail: "HTTP 200".into()
            }
        );
        let bad = http_server(503).await;
        assert_eq!(
            http(bad, None, "/health", 200, LIMIT).await,
            failed("HTTP 503")
        );
        assert_eq!(
            http(closed_port().await, None, "/", 200, LIMIT).await,
            failed("connect refused")
        );
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
        assert_eq!(
            http(addr, None, "/", 200, Duration::from_millis(300)).await,
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
        assert_eq!(
            http(addr, Some(bind), "/ready", 204, LIMIT).await,
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
}
