//! `ping_check` (keepalived's PING_CHECK): an ICMP echo request to the real (ICMPv6 for an
//! IPv6 real); up when its echo reply comes back within the timeout.
//!
//! The socket is an unprivileged ICMP datagram socket (`SOCK_DGRAM`, `IPPROTO_ICMP`) where
//! `net.ipv4.ping_group_range` allows it: the kernel sets the identifier and gives this socket
//! only its own replies. Otherwise a raw ICMP socket (CAP_NET_RAW), which sees every ICMP
//! message to the host: replies are matched by identifier, sequence and payload.

use std::{
    hash::{BuildHasher as _, RandomState},
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::{net::UdpSocket, time::timeout};

use super::machine::Outcome;

/// The echo's data: says who sent it.
const PAYLOAD: &[u8] = b"lb-agent ping_check";

/// The kind of socket that could be opened.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// ICMP datagram socket: replies without the IP header, only ours.
    Datagram,
    /// Raw ICMP socket: every ICMP message, with the IPv4 header (not for IPv6).
    Raw,
}

/// An ICMP socket for `to`'s family, bound to `bind` if given: a datagram socket if allowed,
/// else a raw one.
fn open(to: IpAddr, bind: Option<IpAddr>) -> io::Result<(UdpSocket, Kind)> {
    let (domain, proto) = match to {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let (socket, kind) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => (s, Kind::Datagram),
        Err(dgram) => match Socket::new(domain, Type::RAW, Some(proto)) {
            Ok(s) => (s, Kind::Raw),
            // Neither: say why the unprivileged one failed, the one that should work.
            Err(_) => return Err(dgram),
        },
    };
    socket.set_nonblocking(true)?;
    if let Some(from) = bind {
        socket.bind(&SockAddr::from(SocketAddr::new(from, 0)))?;
    }
    socket.connect(&SockAddr::from(SocketAddr::new(to, 0)))?;
    // A connected datagram-like socket: tokio's UdpSocket sends and receives on it.
    Ok((
        UdpSocket::from_std(std::net::UdpSocket::from(socket))?,
        kind,
    ))
}

/// An echo request (RFC 792; RFC 4443 for ICMPv6, whose checksum the kernel computes).
pub fn echo_request(v6: bool, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    if !v6 {
        let sum = checksum(&m);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    m
}

/// The Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `message` (an ICMP message, no IP header) is the echo reply to `request`; the
/// identifier is compared only when `check_id` (a datagram socket's is the kernel's).
fn is_reply(v6: bool, message: &[u8], request: &[u8], check_id: bool) -> bool {
    let reply_type = if v6 { 129 } else { 0 };
    message.len() == request.len()
        && message[0] == reply_type
        && message[1] == 0
        && (!check_id || message[4..6] == request[4..6])
        && message[6..] == request[6..]
}

/// `ping_check`: an echo request to `to` (from `bind` if given).
pub async fn ping(to: IpAddr, bind: Option<IpAddr>, limit: Duration) -> Outcome {
    let v6 = to.is_ipv6();
    let (socket, kind) = match open(to, bind) {
        Ok(s) => s,
        Err(e) => return down(format!("cannot open an ICMP socket: {e}")),
    };
    let random = RandomState::new().hash_one(std::time::SystemTime::now());
    let (id, seq) = (random as u16, (random >> 16) as u16);
    let request = echo_request(v6, id, seq, PAYLOAD);
    let exchange = async {
        socket.send(&request).await?;
        let mut buf = vec![0u8; 2048];
        loop {
            let n = socket.recv(&mut buf).await?;
            let message = match (kind, v6) {
                // A raw IPv4 socket returns the IP header first.
                (Kind::Raw, false) => {
                    let header = usize::from(buf[0] & 0x0f) * 4;
                    buf.get(header..n).unwrap_or_default()
                }
                _ => &buf[..n],
            };
            if is_reply(v6, message, &request, kind == Kind::Raw) {
                return Ok::<_, io::Error>(());
            }
        }
    };
    match timeout(limit, exchange).await {
        Ok(Ok(())) => Outcome {
            ok: true,
            detail: "echo reply".into(),
        },
        Ok(Err(e)) => down(match e.kind() {
            io::ErrorKind::HostUnreachable => "host unreachable".into(),
            io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
            // An ICMP destination unreachable came back instead.
            io::ErrorKind::ConnectionRefused => "destination unreachable".into(),
            _ => e.to_string(),
        }),
        Err(_) => down("timeout"),
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
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn echo_request_as_rfc_792() {
        let m = echo_request(false, 0x1234, 7, b"ab");
        assert_eq!(&m[..2], [8, 0]);
        assert_eq!(&m[4..], [0x12, 0x34, 0, 7, b'a', b'b']);
        // A message with its checksum sums to zero.
        assert_eq!(checksum(&m), 0);
        let m6 = echo_request(true, 1, 2, b"x");
        assert_eq!(m6, [128, 0, 0, 0, 0, 1, 0, 2, b'x']);
        let mut reply = m.clone();
        reply[0] = 0;
        assert!(is_reply(false, &reply, &m, true));
        reply[5] ^= 1;
        assert!(!is_reply(false, &reply, &m, true));
        assert!(is_reply(false, &reply, &m, false));
        assert!(
            !is_reply(false, &m, &m, false),
            "our own request is no reply"
        );
    }

    /// Whether this sandbox lets us open any ICMP socket; says why not.
    fn icmp_allowed(to: IpAddr) -> bool {
        match open(to, None) {
            Ok(_) => true,
            Err(e) => {
                eprintln!(
                    "SKIPPED: no ICMP socket can be created here ({e}): neither \
                     net.ipv4.ping_group_range nor CAP_NET_RAW allows it"
                );
                false
            }
        }
    }

    #[tokio::test]
    async fn loopback_answers() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        if !icmp_allowed(lo) {
            return;
        }
        let out = ping(lo, None, Duration::from_secs(2)).await;
        assert_eq!(
            out,
            Outcome {
                ok: true,
                detail: "echo reply".into()
            }
        );
    }

    #[tokio::test]
    async fn loopback_answers_over_ipv6() {
        let lo = IpAddr::V6(Ipv6Addr::LOCALHOST);
        if !icmp_allowed(lo) {
            return;
        }
        let out = ping(lo, None, Duration::from_secs(2)).await;
        assert!(out.ok, "{out:?}");
    }

    #[tokio::test]
    async fn an_unused_address_times_out() {
        // An address of TEST-NET-1 (RFC 5737) nobody has: no reply, or an ICMP error from
        // a router on the way, which is down too.
        let nobody = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 254));
        if !icmp_allowed(nobody) {
            return;
        }
        let out = ping(nobody, None, Duration::from_millis(300)).await;
        assert!(!out.ok, "{out:?}");
    }
}
