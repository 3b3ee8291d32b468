//! `udp_check` (keepalived's UDP_CHECK): one datagram to the real. Without `require_reply` the
//! real is up unless an ICMP port unreachable comes back (a connected UDP socket reports it as
//! `ECONNREFUSED`); with it, up only when a reply arrives within the timeout, starting with the
//! required bytes if there are any. The socket is connected, so only the target's datagrams
//! count.

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::{net::UdpSocket, time::timeout};

use super::machine::Outcome;

/// Longest reply read; longer ones are truncated (only their start is compared).
const MAX_REPLY: usize = 64 * 1024;

/// A socket connected from `bind` (or any address of the family) to `target`.
pub(super) async fn connected(
    target: SocketAddr,
    bind: Option<SocketAddr>,
) -> std::io::Result<UdpSocket> {
    let any = if target.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let socket = UdpSocket::bind(bind.unwrap_or(any)).await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// `udp_check`: sends `payload` to `target`; see the module's documentation for the verdict.
pub async fn udp(
    target: SocketAddr,
    bind: Option<SocketAddr>,
    payload: &[u8],
    require_reply: Option<&[u8]>,
    limit: Duration,
) -> Outcome {
    let socket = match connected(target, bind).await {
        Ok(s) => s,
        Err(e) => return down(reason(&e)),
    };
    if let Err(e) = socket.send(payload).await {
        return down(reason(&e));
    }
    let mut buf = vec![0u8; MAX_REPLY];
    match (timeout(limit, socket.recv(&mut buf)).await, require_reply) {
        (Ok(Ok(n)), Some(prefix)) if !buf[..n].starts_with(prefix) => down(format!(
            "reply of {n} bytes does not start with the required {} bytes",
            prefix.len()
        )),
        (Ok(Ok(n)), _) => up(format!("reply of {n} bytes")),
        (Ok(Err(e)), _) => down(reason(&e)),
        (Err(_), Some(_)) => down("no reply"),
        (Err(_), None) => up("no port unreachable"),
    }
}

/// Why a send or receive failed, in an operator's words.
fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => "port unreachable".into(),
        ErrorKind::HostUnreachable => "host unreachable".into(),
        ErrorKind::NetworkUnreachable => "network unreachable".into(),
        ErrorKind::AddrInUse => "bind address in use".into(),
        ErrorKind::AddrNotAvailable => "bind address not available".into(),
        _ => e.to_string(),
    }
}

fn up(detail: impl Into<String>) -> Outcome {
    Outcome {
        ok: true,
        detail: detail.into(),
    }
}

fn down(detail: impl Into<String>) -> Outcome {
    Outcome {
        ok: false,
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(500);

    /// A peer on 127.0.0.1 that answers each datagram with `answer` (or stays silent).
    async fn peer(answer: Option<&'static [u8]>) -> SocketAddr {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((_, from)) = socket.recv_from(&mut buf).await {
                if let Some(answer) = answer {
                    let _ = socket.send_to(answer, from).await;
                }
            }
        });
        addr
    }

    /// A port of 127.0.0.1 nothing listens on: the kernel answers port unreachable.
    async fn closed_port() -> SocketAddr {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        socket.local_addr().unwrap()
    }

    #[tokio::test]
    async fn without_require_reply_only_port_unreachable_is_down() {
        let silent = peer(None).await;
        assert_eq!(
            udp(silent, None, b"ping", None, LIMIT).await,
            up("no port unreachable")
        );
        let echo = peer(Some(b"pong")).await;
        assert_eq!(
            udp(echo, None, b"ping", None, LIMIT).await,
            up("reply of 4 bytes")
        );
        let closed = closed_port().await;
        assert_eq!(
            udp(closed, None, b"ping", None, LIMIT).await,
            down("port unreachable")
        );
    }

    #[tokio::test]
    async fn require_reply_needs_a_reply_with_its_bytes() {
        let silent = peer(None).await;
        assert_eq!(
            udp(silent, None, b"", Some(b""), LIMIT).await,
            down("no reply")
        );
        let echo = peer(Some(b"\x01\x02\x03")).await;
        assert_eq!(
            udp(echo, None, b"x", Some(b""), LIMIT).await,
            up("reply of 3 bytes")
        );
        assert!(udp(echo, None, b"x", Some(b"\x01\x02"), LIMIT).await.ok);
        assert_eq!(
            udp(echo, None, b"x", Some(b"\x01\x03"), LIMIT).await,
            down("reply of 3 bytes does not start with the required 2 bytes")
        );
        let closed = closed_port().await;
        assert_eq!(
            udp(closed, None, b"x", Some(b""), LIMIT).await,
            down("port unreachable")
        );
    }

    #[tokio::test]
    async fn from_a_bound_address() {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let bind = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 0));
        let probe = tokio::spawn(async move { udp(addr, Some(bind), b"hi", None, LIMIT).await });
        let mut buf = [0u8; 16];
        let (n, from) = socket.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from.ip()), (&b"hi"[..], bind.ip()));
        assert!(probe.await.unwrap().ok);
    }
}
