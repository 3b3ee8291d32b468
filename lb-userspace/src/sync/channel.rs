//! The sync socket: one UDP socket per agent that sends this director's datagrams to its peers
//! (a unicast list and/or a multicast group) and receives theirs, checking each one (tag,
//! director group, replay) before anything in it is used.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use sha2::{Digest as _, Sha256};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::{
    replay::{ReplayFilter, Replayed},
    wire::{self, Datagram, Header, KEY_LEN, Key, Kind, MAX_DATAGRAM, Record, WireError},
};

/// The fewest bytes a shared secret may have.
pub const MIN_SECRET: usize = 16;
/// The receive buffer the socket asks for: room for several of a peer's bursts (up to 256
/// datagrams every 10 ms) while the agent is busy; the kernel's default holds about 90.
const RECV_BUFFER: usize = 8 << 20;

/// Where the sync datagrams go and come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// UDP port, the same on every director.
    pub port: u16,
    /// Multicast group, if any.
    pub group: Option<IpAddr>,
    /// Interface multicast is joined on and sent from.
    pub ifindex: u32,
    /// Unicast peers.
    pub peers: Vec<IpAddr>,
    /// Multicast TTL (hop limit).
    pub ttl: u8,
}

/// Why a shared secret cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Too short to be a secret.
    #[error("the shared secret has {0} bytes; it needs at least {MIN_SECRET}")]
    TooShort(usize),
}

/// The key of a shared secret (a key file's contents; surrounding whitespace is ignored, so a
/// trailing newline does not matter): its SHA-256.
pub fn key_of_secret(secret: &[u8]) -> Result<Key, SecretError> {
    let trimmed = secret.trim_ascii();
    if trimmed.len() < MIN_SECRET {
        return Err(SecretError::TooShort(trimmed.len()));
    }
    let digest: [u8; KEY_LEN] = Sha256::digest(trimmed).into();
    Ok(Key::new(digest))
}

/// Why a received datagram was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Not authentic: forged, corrupted, or under another key.
    Auth,
    /// Authentic, but a replay (or too old).
    Replay(Replayed),
    /// Authentic, but of another director group.
    Instance(u64),
    /// Not a sync datagram of this version, or a malformed one.
    Malformed(WireError),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Auth => f.write_str(&WireError::Auth.to_string()),
            Rejection::Replay(r) => write!(f, "replayed: {r}"),
            Rejection::Instance(i) => write!(f, "{}", WireError::Instance(*i)),
            Rejection::Malformed(e) => write!(f, "{e}"),
        }
    }
}

/// What arrived on the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// An authentic, fresh datagram of a peer.
    Accepted(SocketAddr, Datagram),
    /// Refused.
    Rejected(SocketAddr, Rejection),
    /// One of our own (multicast loops back where the kernel does not stop it).
    Own,
}

/// This agent's sync socket and sender state.
pub struct Channel {
    socket: UdpSocket,
    key: Key,
    instance: u64,
    sender: u64,
    sequence: u64,
    destinations: Vec<SocketAddr>,
    replay: ReplayFilter,
    buf: Vec<u8>,
}

impl Channel {
    /// Opens the socket of `endpoint` for director group `instance` under `key`, as sender
    /// `sender` (a new random id each start). Must run inside a tokio runtime.
    pub fn open(endpoint: &Endpoint, key: Key, instance: u64, sender: u64) -> io::Result<Self> {
        let v6 = endpoint
            .group
            .iter()
            .chain(&endpoint.peers)
            .any(IpAddr::is_ipv6);
        if v6
            && endpoint
                .group
                .iter()
                .chain(&endpoint.peers)
                .any(IpAddr::is_ipv4)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "sync peers and group must all be IPv4 or all IPv6",
            ));
        }
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        // Past `net.core.rmem_max` only with CAP_NET_ADMIN (the agent runs as root); else the
        // largest the system allows.
        if force_recv_buffer(&socket, RECV_BUFFER).is_err() {
            socket.set_recv_buffer_size(RECV_BUFFER)?;
        }
        let bind: SocketAddr = if v6 {
            socket.set_only_v6(true)?;
            (Ipv6Addr::UNSPECIFIED, endpoint.port).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, endpoint.port).into()
        };
        socket.bind(&bind.into())?;
        match endpoint.group {
            Some(IpAddr::V4(group)) => {
                let index = InterfaceIndexOrAddress::Index(endpoint.ifindex);
                socket.join_multicast_v4_n(&group, &index)?;
                socket.set_multicast_ttl_v4(u32::from(endpoint.ttl))?;
                socket.set_multicast_loop_v4(false)?;
                set_multicast_if_v4(&socket, endpoint.ifindex)?;
            }
            Some(IpAddr::V6(group)) => {
                socket.join_multicast_v6(&group, endpoint.ifindex)?;
                socket.set_multicast_hops_v6(u32::from(endpoint.ttl))?;
                socket.set_multicast_loop_v6(false)?;
                socket.set_multicast_if_v6(endpoint.ifindex)?;
            }
            None => {}
        }
        socket.set_nonblocking(true)?;
        let destinations = endpoint
            .group
            .iter()
            .chain(&endpoint.peers)
            .map(|ip| SocketAddr::new(*ip, endpoint.port))
            .collect();
        Ok(Self {
            socket: UdpSocket::from_std(socket.into())?,
            key,
            instance,
            sender,
            sequence: 0,
            destinations,
            replay: ReplayFilter::default(),
            buf: vec![0; MAX_DATAGRAM + 1],
        })
    }

    /// This agent's sender id.
    pub fn sender(&self) -> u64 {
        self.sender
    }

    /// The addresses every datagram goes to (the group and the peers).
    pub fn destinations(&self) -> &[SocketAddr] {
        &self.destinations
    }

    /// Encodes `records` (or a record-less `kind`) as the next datagrams of this sender.
    pub fn encode(&mut self, kind: Kind, records: &[Record]) -> Vec<Vec<u8>> {
        let header = Header {
            kind,
            instance: self.instance,
            sender: self.sender,
            sequence: self.sequence,
        };
        let datagrams = wire::encode(header, records, &self.key);
        self.sequence = self.sequence.wrapping_add(datagrams.len() as u64);
        datagrams
    }

    /// Sends one datagram to `to`.
    pub async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.socket.send_to(datagram, to).await.map(|_| ())
    }

    /// Waits for the next datagram and checks it.
    pub async fn recv(&mut self) -> io::Result<Inbound> {
        let (len, from) = self.socket.recv_from(&mut self.buf).await?;
        let inbound = match wire::decode(&self.buf[..len], &self.key, self.instance) {
            Ok(d) if d.header.sender == self.sender => Inbound::Own,
            Ok(d) => match self.replay.accept(d.header.sender, d.header.sequence) {
                Ok(()) => Inbound::Accepted(from, d),
                Err(r) => Inbound::Rejected(from, Rejection::Replay(r)),
            },
            Err(WireError::Auth) => Inbound::Rejected(from, Rejection::Auth),
            Err(WireError::Instance(i)) => Inbound::Rejected(from, Rejection::Instance(i)),
            Err(e) => Inbound::Rejected(from, Rejection::Malformed(e)),
        };
        Ok(inbound)
    }
}

/// Sets the receive buffer to `bytes` regardless of `net.core.rmem_max` (`SO_RCVBUFFORCE`).
fn force_recv_buffer(socket: &Socket, bytes: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `value` is a valid c_int for the length passed; the fd is the open socket's.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends IPv4 multicast out of interface `ifindex` (`IP_MULTICAST_IF` with an `ip_mreqn`,
/// which names the interface by index rather than by one of its addresses).
fn set_multicast_if_v4(socket: &Socket, ifindex: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let req = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex as i32,
    };
    // SAFETY: `req` is a valid ip_mreqn for the length passed; the fd is the open socket's.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&raw const req).cast(),
            size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(port: u16) -> Endpoint {
        Endpoint {
            port,
            group: None,
            ifindex: 1,
            peers: vec![Ipv4Addr::LOCALHOST.into()],
            ttl: 1,
        }
    }

    fn key(secret: &str) -> Key {
        key_of_secret(secret.as_bytes()).unwrap()
    }

    #[test]
    fn a_secret_needs_sixteen_bytes_and_surrounding_whitespace_does_not_count() {
        assert_eq!(
            key_of_secret(b"  short secret \n").err(),
            Some(SecretError::TooShort(12))
        );
        let a = key_of_secret(b"0123456789abcdef\n").unwrap();
        let b = key_of_secret(b"0123456789abcdef").unwrap();
        let signed = b"same";
        assert_eq!(wire::tag(&a, signed), wire::tag(&b, signed));
    }

    /// Two channels on loopback, each the other's peer (ports from the OS would need the
    /// other's port up front, so fixed test ports in the dynamic range).
    #[tokio::test]
    async fn authentic_datagrams_arrive_once_and_everything_else_is_rejected() {
        let secret = "the directors' shared secret";
        let mut a = Channel::open(&endpoint(47_811), key(secret), 9, 1).unwrap();
        let mut b = Channel::open(&endpoint(47_812), key(secret), 9, 2).unwrap();
        let mut intruder =
            Channel::open(&endpoint(47_813), key("another secret, not ours"), 9, 3).unwrap();
        let mut stranger = Channel::open(&endpoint(47_814), key(secret), 10, 4).unwrap();
        let to_b: SocketAddr = (Ipv4Addr::LOCALHOST, 47_812).into();

        let request = a.encode(Kind::StateRequest, &[]);
        a.send_to(&request[0], to_b).await.unwrap();
        let Inbound::Accepted(from, d) = b.recv().await.unwrap() else {
            panic!("not accepted")
        };
        assert_eq!(from.port(), 47_811);
        assert_eq!((d.header.kind, d.header.sender), (Kind::StateRequest, 1));

        // The same bytes again: a replay.
        a.send_to(&request[0], to_b).await.unwrap();
        assert!(matches!(
            b.recv().await.unwrap(),
            Inbound::Rejected(_, Rejection::Replay(Replayed::Seen(0)))
        ));
        // Another key.
        let forged = intruder.encode(Kind::StateRequest, &[]);
        intruder.send_to(&forged[0], to_b).await.unwrap();
        assert_eq!(
            b.recv().await.unwrap(),
            Inbound::Rejected((Ipv4Addr::LOCALHOST, 47_813).into(), Rejection::Auth)
        );
        // The right key, another director group.
        let other = stranger.encode(Kind::StateRequest, &[]);
        stranger.send_to(&other[0], to_b).await.unwrap();
        assert!(matches!(
            b.recv().await.unwrap(),
            Inbound::Rejected(_, Rejection::Instance(10))
        ));
        // Garbage.
        a.send_to(b"not a sync datagram at all, no", to_b)
            .await
            .unwrap();
        assert!(matches!(
            b.recv().await.unwrap(),
            Inbound::Rejected(_, Rejection::Malformed(_))
        ));
        // A flipped bit in an authentic datagram.
        let mut next = a.encode(Kind::StateRequest, &[]).remove(0);
        next[20] ^= 1;
        a.send_to(&next, to_b).await.unwrap();
        assert_eq!(
            b.recv().await.unwrap(),
            Inbound::Rejected((Ipv4Addr::LOCALHOST, 47_811).into(), Rejection::Auth)
        );
        // And the sequence goes on: the next authentic one is accepted.
        let fresh = a.encode(Kind::StateEnd, &[]);
        a.send_to(&fresh[0], to_b).await.unwrap();
        assert!(matches!(b.recv().await.unwrap(), Inbound::Accepted(..)));
    }
}
