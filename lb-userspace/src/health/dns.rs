//! `dns_check` (keepalived's DNS_CHECK): one query over UDP (RFC 1035 4.1); the real is up
//! when the response has the query's id and RCODE NOERROR. A response with another id is
//! down at once, as in keepalived; so is an ICMP port unreachable.

use std::{
    hash::{BuildHasher as _, RandomState},
    net::SocketAddr,
    time::Duration,
};

use tokio::time::timeout;

use super::{machine::Outcome, udp::connected};
use crate::config::DnsType;

/// Longest response read (a UDP DNS message without EDNS is at most 512 bytes).
const MAX_RESPONSE: usize = 4096;

/// The query: a header with `id`, recursion desired and one question, then the question
/// (`name` as labels, `qtype`, class IN). `name` is valid (see the configuration's checks).
pub fn query(id: u16, name: &str, qtype: DnsType) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    // QR 0 (query), OPCODE 0, RD 1; QDCOUNT 1, ANCOUNT, NSCOUNT, ARCOUNT 0.
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        // At most 63 bytes (the configuration's check).
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.code().to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// The verdict on `response` to the query `id`.
pub fn verdict(id: u16, response: &[u8]) -> Outcome {
    let Some(header) = response.get(..12) else {
        return down(format!(
            "response of {} bytes, shorter than a header",
            response.len()
        ));
    };
    let got = u16::from_be_bytes([header[0], header[1]]);
    if got != id {
        return down(format!("response id {got} is not the query's {id}"));
    }
    if header[2] & 0x80 == 0 {
        return down("answered with a query, not a response");
    }
    match header[3] & 0x0f {
        0 => Outcome {
            ok: true,
            detail: "NOERROR".into(),
        },
        code => down(rcode(code)),
    }
}

/// RCODE's name (RFC 1035 4.1.1, RFC 6895).
fn rcode(code: u8) -> String {
    match code {
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        _ => format!("RCODE {code}"),
    }
}

/// `dns_check`: asks `target` (from `bind` if given) for `name`'s `qtype` records.
pub async fn dns(
    target: SocketAddr,
    bind: Option<SocketAddr>,
    name: &str,
    qtype: DnsType,
    limit: Duration,
) -> Outcome {
    let id = RandomState::new().hash_one(std::time::SystemTime::now()) as u16;
    let exchange = async {
        let socket = connected(target, bind).await?;
        socket.send(&query(id, name, qtype)).await?;
        let mut buf = vec![0u8; MAX_RESPONSE];
        let n = socket.recv(&mut buf).await?;
        buf.truncate(n);
        Ok::<_, std::io::Error>(buf)
    };
    match timeout(limit, exchange).await {
        Ok(Ok(response)) => verdict(id, &response),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => down("port unreachable"),
        Ok(Err(e)) => down(e.to_string()),
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
    use std::net::Ipv4Addr;

    use tokio::net::UdpSocket;

    use super::*;

    const LIMIT: Duration = Duration::from_millis(500);

    #[test]
    fn query_as_rfc_1035() {
        let q = query(0x1234, "www.example.org.", DnsType::Aaaa);
        let want: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
                            \x03www\x07example\x03org\x00\x00\x1c\x00\x01";
        assert_eq!(q, want);
        // The root: an empty name, SOA (keepalived's default).
        let root = query(7, ".", DnsType::Soa);
        assert_eq!(&root[12..], b"\x00\x00\x06\x00\x01");
        assert_eq!(
            query(7, "example.org", DnsType::Mx)[12..],
            query(7, "example.org.", DnsType::Mx)[12..]
        );
    }

    #[test]
    fn verdicts() {
        let mut r = query(9, ".", DnsType::Soa);
        r[2] |= 0x80;
        assert!(verdict(9, &r).ok);
        assert_eq!(verdict(10, &r), down("response id 9 is not the query's 10"));
        r[3] = 0x03;
        assert_eq!(verdict(9, &r), down("NXDOMAIN"));
        assert_eq!(
            verdict(9, &r[..5]),
            down("response of 5 bytes, shorter than a header")
        );
        let q = query(9, ".", DnsType::Soa);
        assert_eq!(
            verdict(9, &q),
            down("answered with a query, not a response")
        );
    }

    /// How the test responder answers.
    #[derive(Clone, Copy)]
    enum Answer {
        /// With the query's id and this RCODE.
        Rcode(u8),
        /// With the query's id plus one, NOERROR.
        WrongId,
    }

    /// A DNS responder on 127.0.0.1 that answers each query (echoing its question) as told.
    async fn responder(answer: Answer) -> SocketAddr {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let mut r = buf[..n].to_vec();
                // QR, RD copied, RA; the RCODE.
                r[2] = 0x80 | (r[2] & 0x01);
                match answer {
                    Answer::Rcode(code) => r[3] = 0x80 | code,
                    Answer::WrongId => {
                        let id = u16::from_be_bytes([r[0], r[1]]).wrapping_add(1);
                        r[..2].copy_from_slice(&id.to_be_bytes());
                        r[3] = 0x80;
                    }
                }
                let _ = socket.send_to(&r, from).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn noerror_is_up_and_the_rest_down() {
        let ok = responder(Answer::Rcode(0)).await;
        assert_eq!(
            dns(ok, None, ".", DnsType::Soa, LIMIT).await,
            Outcome {
                ok: true,
                detail: "NOERROR".into()
            }
        );
        let nx = responder(Answer::Rcode(3)).await;
        let out = dns(nx, None, "nothing.example.", DnsType::A, LIMIT).await;
        assert_eq!(out, down("NXDOMAIN"));
        let wrong = responder(Answer::WrongId).await;
        let out = dns(wrong, None, ".", DnsType::Soa, LIMIT).await;
        assert!(
            !out.ok && out.detail.contains("is not the query's"),
            "{out:?}"
        );
        // Nothing listening: port unreachable; a silent server: timeout.
        let closed = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let out = dns(closed_addr, None, ".", DnsType::Soa, LIMIT).await;
        assert_eq!(out, down("port unreachable"));
        let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let out = dns(silent.local_addr().unwrap(), None, ".", DnsType::Soa, LIMIT).await;
        assert_eq!(out, down("timeout"));
    }
}
