//! The director-sync datagram: what one agent tells its peers about the flows it placed, so
//! that any director can continue any flow on its real (IPVS's sync daemon, keepalived's
//! `lvs_sync_daemon`).
//!
//! Records name services and reals by address, never by map index: indices differ between
//! directors. A datagram is authenticated with HMAC-SHA256 under the directors' shared key
//! (truncated to [`TAG_LEN`] bytes); nothing in it is trusted before the tag checks, so a
//! forged or corrupted datagram is rejected without being parsed. The instance id keeps two
//! director groups that share a key and a LAN apart; the sender id and sequence number let the
//! receiver drop replays ([`super::replay`]).
//!
//! Layout (integers big-endian):
//! ```text
//! magic "LBSY" | version u8 | kind u8 | records u16 | instance u64 | sender u64 | sequence u64
//! record * records  (RECORD_LEN bytes each; kinds: 1 records, 2 state request, 3 state end)
//! tag (TAG_LEN bytes: HMAC-SHA256 of everything before it, truncated)
//! ```
//! A record:
//! ```text
//! type u8 (1 connection, 2 template) | family u8 (4, 6) | protocol u8 | state u8
//! vport u16 | cport u16 (0 for a template) | rport u16 | idle u16 (seconds)
//! vip [16] | client [16] (a template's client network) | real [16]
//! ```
//! IPv4 addresses take the first 4 bytes of their 16, the rest zero. A record is 60 bytes, so
//! a datagram of at most [`MAX_DATAGRAM`] bytes carries up to [`MAX_RECORDS`] of them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac as _};
use lb_common::ConnState;
use sha2::Sha256;
use thiserror::Error;

use crate::model::{Protocol, RealKey, ServiceKey};

/// The datagram's first bytes.
pub const MAGIC: [u8; 4] = *b"LBSY";
/// The format version this code reads and writes.
pub const VERSION: u8 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 32;
/// Bytes of one record.
pub const RECORD_LEN: usize = 60;
/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;
/// The largest datagram: fits a 1500-byte MTU under IPv6 and UDP headers.
pub const MAX_DATAGRAM: usize = 1452;
/// Records per datagram at most.
pub const MAX_RECORDS: usize = (MAX_DATAGRAM - HEADER_LEN - TAG_LEN) / RECORD_LEN;

/// The shared key's length in bytes.
pub const KEY_LEN: usize = 32;

/// The directors' shared key.
#[derive(Clone)]
pub struct Key([u8; KEY_LEN]);

impl Key {
    /// A key from its bytes.
    pub const fn new(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts every key length")
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// What a datagram is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Records of flows and templates.
    Records = 1,
    /// A director that starts asks its peers for everything they hold (no records).
    StateRequest = 2,
    /// The last datagram of the answer to a state request (no records): the asking director
    /// knows it has everything this peer holds.
    StateEnd = 3,
}

/// A flow a peer placed: enough for any director to continue it on its real.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncedConn {
    /// The service.
    pub service: ServiceKey,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The real the flow is on.
    pub real: RealKey,
    /// Its connection state.
    pub state: ConnState,
    /// Seconds since its last packet, on the sender.
    pub idle: u16,
}

/// A persistence template a peer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncedTemplate {
    /// The service.
    pub service: ServiceKey,
    /// The client network (the address under the service's granularity).
    pub client: IpAddr,
    /// The real the network is pinned to.
    pub real: RealKey,
    /// Seconds since its last use, on the sender.
    pub idle: u16,
}

/// One record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// A connection entry.
    Conn(SyncedConn),
    /// A persistence template.
    Template(SyncedTemplate),
}

/// A datagram's header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What it is for.
    pub kind: Kind,
    /// The director group's id: both ends must have the same.
    pub instance: u64,
    /// The sending agent (a new id each start).
    pub sender: u64,
    /// The sender's datagram counter.
    pub sequence: u64,
}

/// A verified datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Its header.
    pub header: Header,
    /// Its records.
    pub records: Vec<Record>,
}

/// Why a datagram was rejected. Every variant before [`WireError::Auth`] is decided on bytes
/// alone; nothing after it is looked at unless the tag checks.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than a header and a tag, longer than a datagram, or not a whole number of
    /// records.
    #[error("a datagram of {0} bytes is not a sync datagram")]
    Length(usize),
    /// Not this protocol.
    #[error("not a sync datagram (bad magic)")]
    Magic,
    /// Another version of the format.
    #[error("sync format version {0}, this agent speaks {VERSION}")]
    Version(u8),
    /// The tag does not match: forged, corrupted, or another key.
    #[error("the authentication tag does not match (forged, corrupted, or another key)")]
    Auth,
    /// Authentic, but of another director group.
    #[error("from instance {0:#x}, not ours")]
    Instance(u64),
    /// Authentic, but a field makes no sense.
    #[error("record {index}: {reason}")]
    Record {
        /// The record's position.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Authentic, but of an unknown kind.
    #[error("unknown datagram kind {0}")]
    Kind(u8),
}

/// Encodes `records` into datagrams of at most [`MAX_RECORDS`] each, numbered from
/// `header.sequence` on (one number per datagram); a state request is one datagram.
pub fn encode(header: Header, records: &[Record], key: &Key) -> Vec<Vec<u8>> {
    if records.is_empty() {
        return vec![encode_one(header, &[], key)];
    }
    records
        .chunks(MAX_RECORDS)
        .enumerate()
        .map(|(i, chunk)| {
            let h = Header {
                sequence: header.sequence.wrapping_add(i as u64),
                ..header
            };
            encode_one(h, chunk, key)
        })
        .collect()
}

fn encode_one(header: Header, records: &[Record], key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + records.len() * RECORD_LEN + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(header.kind as u8);
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&header.instance.to_be_bytes());
    out.extend_from_slice(&header.sender.to_be_bytes());
    out.extend_from_slice(&header.sequence.to_be_bytes());
    for r in records {
        put_record(&mut out, r);
    }
    let tag = tag(key, &out);
    out.extend_from_slice(&tag);
    out
}

/// The authentication tag of `signed` (a datagram without its tag) under `key`.
pub fn tag(key: &Key, signed: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = key.mac();
    mac.update(signed);
    let full = mac.finalize().into_bytes();
    full[..TAG_LEN].try_into().expect("TAG_LEN <= 32")
}

fn put_record(out: &mut Vec<u8>, r: &Record) {
    let (ty, service, client, cport, real, state, idle) = match r {
        Record::Conn(c) => (
            1u8,
            c.service,
            c.client.ip(),
            c.client.port(),
            c.real,
            c.state as u8,
            c.idle,
        ),
        Record::Template(t) => (2u8, t.service, t.client, 0, t.real, 0, t.idle),
    };
    let family = if service.vip.is_ipv4() { 4 } else { 6 };
    out.extend_from_slice(&[ty, family, service.proto.number(), state]);
    for v in [service.port, cport, real.port, idle] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    for a in [service.vip, client, real.addr] {
        out.extend_from_slice(&addr16(a));
    }
}

fn addr16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Checks and decodes a datagram of director group `instance` under `key`.
pub fn decode(bytes: &[u8], key: &Key, instance: u64) -> Result<Datagram, WireError> {
    let len = bytes.len();
    if !(HEADER_LEN + TAG_LEN..=MAX_DATAGRAM).contains(&len)
        || !(len - HEADER_LEN - TAG_LEN).is_multiple_of(RECORD_LEN)
    {
        return Err(WireError::Length(len));
    }
    if bytes[..4] != MAGIC {
        return Err(WireError::Magic);
    }
    if bytes[4] != VERSION {
        return Err(WireError::Version(bytes[4]));
    }
    let (signed, tag) = bytes.split_at(len - TAG_LEN);
    let mut mac = key.mac();
    mac.update(signed);
    mac.verify_truncated_left(tag)
        .map_err(|_| WireError::Auth)?;

    let u64_at = |at: usize| u64::from_be_bytes(signed[at..at + 8].try_into().expect("8 bytes"));
    let header = Header {
        kind: match signed[5] {
            1 => Kind::Records,
            2 => Kind::StateRequest,
            3 => Kind::StateEnd,
            other => return Err(WireError::Kind(other)),
        },
        instance: u64_at(8),
        sender: u64_at(16),
        sequence: u64_at(24),
    };
    if header.instance != instance {
        return Err(WireError::Instance(header.instance));
    }
    let count = usize::from(u16::from_be_bytes([signed[6], signed[7]]));
    let body = &signed[HEADER_LEN..];
    if count * RECORD_LEN != body.len() {
        return Err(WireError::Length(len));
    }
    let records = body
        .chunks_exact(RECORD_LEN)
        .enumerate()
        .map(|(index, r)| record(r).map_err(|reason| WireError::Record { index, reason }))
        .collect::<Result<Vec<_>, _>>()?;
    if header.kind != Kind::Records && !records.is_empty() {
        return Err(WireError::Record {
            index: 0,
            reason: "a state request or state end carries no records",
        });
    }
    Ok(Datagram { header, records })
}

fn record(r: &[u8]) -> Result<Record, &'static str> {
    let u16_at = |at: usize| u16::from_be_bytes([r[at], r[at + 1]]);
    let v4 = match r[1] {
        4 => true,
        6 => false,
        _ => return Err("the address family is neither 4 nor 6"),
    };
    let addr = |at: usize| -> Result<IpAddr, &'static str> {
        let b: [u8; 16] = r[at..at + 16].try_into().expect("16 bytes");
        if v4 {
            if b[4..].iter().any(|&x| x != 0) {
                return Err("an IPv4 address with bytes past its fourth");
            }
            Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
        } else {
            Ok(IpAddr::V6(Ipv6Addr::from(b)))
        }
    };
    let proto = match r[2] {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        _ => return Err("the protocol is neither TCP nor UDP"),
    };
    let (vport, cport, rport, idle) = (u16_at(4), u16_at(6), u16_at(8), u16_at(10));
    if vport == 0 || rport != vport {
        return Err("the ports are not a direct-routing service's (real port = VIP port, not 0)");
    }
    let service = ServiceKey {
        vip: addr(12)?,
        port: vport,
        proto,
    };
    let real = RealKey {
        addr: addr(44)?,
        port: rport,
    };
    let client = addr(28)?;
    match r[0] {
        1 => {
            if usize::from(r[3]) >= ConnState::COUNT {
                return Err("an unknown connection state");
            }
            Ok(Record::Conn(SyncedConn {
                service,
                client: SocketAddr::new(client, cport),
                real,
                state: ConnState::from_u8(r[3]),
                idle,
            }))
        }
        2 => {
            if cport != 0 || r[3] != 0 {
                return Err("a template with a client port or a state");
            }
            Ok(Record::Template(SyncedTemplate {
                service,
                client,
                real,
                idle,
            }))
        }
        _ => Err("the record type is neither connection nor template"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTANCE: u64 = 0x1b5e_0001;

    fn key() -> Key {
        Key::new([7; KEY_LEN])
    }

    fn header(sequence: u64) -> Header {
        Header {
            kind: Kind::Records,
            instance: INSTANCE,
            sender: 42,
            sequence,
        }
    }

    fn svc(vip: &str, port: u16) -> ServiceKey {
        ServiceKey {
            vip: vip.parse().unwrap(),
            port,
            proto: Protocol::Tcp,
        }
    }

    fn conn(i: u16) -> Record {
        Record::Conn(SyncedConn {
            service: svc("10.0.0.100", 5672),
            client: SocketAddr::new("192.168.7.21".parse().unwrap(), 40_000 + i),
            real: RealKey {
                addr: "10.0.0.11".parse().unwrap(),
                port: 5672,
            },
            state: ConnState::Established,
            idle: i,
        })
    }

    fn records() -> Vec<Record> {
        vec![
            conn(1),
            Record::Conn(SyncedConn {
                service: svc("2001:db8::100", 443),
                client: "[2001:db8:c1::21]:51514".parse().unwrap(),
                real: RealKey {
                    addr: "2001:db8::11".parse().unwrap(),
                    port: 443,
                },
                state: ConnState::SynRecv,
                idle: 3,
            }),
            Record::Template(SyncedTemplate {
                service: svc("10.0.0.100", 5672),
                client: "192.168.7.0".parse().unwrap(),
                real: RealKey {
                    addr: "10.0.0.12".parse().unwrap(),
                    port: 5672,
                },
                idle: 12,
            }),
        ]
    }

    #[test]
    fn records_round_trip_in_both_families_at_a_stated_cost() {
        let d = encode(header(9), &records(), &key());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].len(), HEADER_LEN + 3 * RECORD_LEN + TAG_LEN);
        let back = decode(&d[0], &key(), INSTANCE).unwrap();
        assert_eq!(back.header, header(9));
        assert_eq!(back.records, records());
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        // One IPv4 connection, written byte by byte from the module's layout.
        let mut bytes = b"LBSY".to_vec();
        bytes.extend([VERSION, 1, 0, 1]); // version, kind, one record
        for v in [INSTANCE, 42, 7] {
            bytes.extend(v.to_be_bytes()); // instance, sender, sequence
        }
        bytes.extend([1, 4, 6, ConnState::Established as u8]); // connection, IPv4, TCP
        for v in [5672u16, 40_001, 5672, 1] {
            bytes.extend(v.to_be_bytes()); // vport, cport, rport, idle
        }
        for a in [[10, 0, 0, 100], [192, 168, 7, 21], [10, 0, 0, 11]] {
            bytes.extend(a);
            bytes.extend([0; 12]);
        }
        let t = tag(&key(), &bytes);
        bytes.extend(t);
        let d = decode(&bytes, &key(), INSTANCE).unwrap();
        assert_eq!(d.records, [conn(1)]);
        assert_eq!(encode(header(7), &[conn(1)], &key()), [bytes]);
    }

    #[test]
    fn many_records_split_into_numbered_datagrams_that_fit_the_mtu() {
        let many: Vec<Record> = (0..100).map(conn).collect();
        let d = encode(header(100), &many, &key());
        assert_eq!(MAX_RECORDS, 23);
        assert_eq!(d.len(), 100usize.div_ceil(MAX_RECORDS));
        let mut all = Vec::new();
        for (i, bytes) in d.iter().enumerate() {
            assert!(bytes.len() <= MAX_DATAGRAM);
            let back = decode(bytes, &key(), INSTANCE).unwrap();
            assert_eq!(back.header.sequence, 100 + i as u64);
            all.extend(back.records);
        }
        assert_eq!(all, many);
    }

    #[test]
    fn forged_corrupted_and_other_key_datagrams_are_rejected_before_parsing() {
        let good = encode(header(1), &records(), &key()).remove(0);
        assert_eq!(
            decode(&good, &Key::new([8; KEY_LEN]), INSTANCE),
            Err(WireError::Auth)
        );
        // Any flipped bit after the version (header, records or tag) fails the tag.
        for at in 5..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert_eq!(
                decode(&bad, &key(), INSTANCE),
                Err(WireError::Auth),
                "byte {at}"
            );
        }
        let mut other = good.clone();
        other[0] = b'X';
        assert_eq!(decode(&other, &key(), INSTANCE), Err(WireError::Magic));
        let mut v2 = good.clone();
        v2[4] = 2;
        assert_eq!(decode(&v2, &key(), INSTANCE), Err(WireError::Version(2)));
        for len in [
            0,
            10,
            HEADER_LEN + TAG_LEN - 1,
            good.len() - 1,
            MAX_DATAGRAM + 1,
        ] {
            let cut: Vec<u8> = good
                .iter()
                .copied()
                .chain([0; MAX_DATAGRAM])
                .take(len)
                .collect();
            assert_eq!(decode(&cut, &key(), INSTANCE), Err(WireError::Length(len)));
        }
    }

    #[test]
    fn another_instance_and_nonsense_records_are_rejected_even_when_authentic() {
        let other = Header {
            instance: 7,
            ..header(1)
        };
        let d = encode(other, &records(), &key()).remove(0);
        assert_eq!(decode(&d, &key(), INSTANCE), Err(WireError::Instance(7)));
        // A real on another port than its service: signed with the right key, still refused.
        let mut bad = records();
        if let Record::Conn(c) = &mut bad[0] {
            c.real.port = 80;
        }
        let d = encode(header(2), &bad, &key()).remove(0);
        assert!(matches!(
            decode(&d, &key(), INSTANCE),
            Err(WireError::Record { index: 0, .. })
        ));
        let request = Header {
            kind: Kind::StateRequest,
            ..header(3)
        };
        let d = encode(request, &[], &key());
        assert_eq!(d.len(), 1);
        assert_eq!(
            decode(&d[0], &key(), INSTANCE).unwrap(),
            Datagram {
                header: request,
                records: vec![]
            }
        );
    }
}
