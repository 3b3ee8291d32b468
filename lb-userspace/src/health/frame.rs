//! Ethernet + IPv4 + TCP frames as the checks that follow the data path write and read them
//! on a packet socket, and the socket itself: what [`super::vip_stream`] needs to put its own
//! segments on the wire.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::tcp_session::{Segment, WINDOW};

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
const ETH_HLEN: usize = 14;
const IP_HLEN: usize = 20;
const TCP_HLEN: usize = 20;

/// The two ends of a frame: MACs and addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path {
    /// Source MAC (the director's interface).
    pub src_mac: [u8; 6],
    /// Destination MAC (the real's).
    pub dst_mac: [u8; 6],
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
}

/// The frame that carries `seg` along `path`.
pub fn tcp_frame(path: &Path, seg: &Segment) -> Vec<u8> {
    let tcp_len = TCP_HLEN + seg.payload.len();
    let mut f = vec![0u8; ETH_HLEN + IP_HLEN + tcp_len];
    f[0..6].copy_from_slice(&path.dst_mac);
    f[6..12].copy_from_slice(&path.src_mac);
    f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
    let (src, dst) = (path.src.ip().octets(), path.dst.ip().octets());
    let (ip, tcp) = f[ETH_HLEN..].split_at_mut(IP_HLEN);
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((IP_HLEN + tcp_len) as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64; // TTL
    ip[9] = 6; // TCP
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let sum = checksum(&[ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    tcp[0..2].copy_from_slice(&path.src.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&path.dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seg.seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&seg.ack.to_be_bytes());
    tcp[12] = (TCP_HLEN as u8 / 4) << 4;
    tcp[13] = seg.flags;
    tcp[14..16].copy_from_slice(&WINDOW.to_be_bytes());
    tcp[TCP_HLEN..].copy_from_slice(&seg.payload);
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src);
    pseudo[4..8].copy_from_slice(&dst);
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    let sum = checksum(&[&pseudo, tcp]);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    f
}

/// A TCP segment in an IPv4 frame: who sent it, to whom, and the segment. `None` for anything
/// else, or a frame cut short.
pub fn parse_tcp(f: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4, Segment)> {
    if f.len() < ETH_HLEN + IP_HLEN || u16::from_be_bytes([f[12], f[13]]) != ETH_P_IP {
        return None;
    }
    let ip = &f[ETH_HLEN..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[0] >> 4 != 4 || ihl < IP_HLEN || ip[9] != 6 || total < ihl + TCP_HLEN {
        return None;
    }
    // The frame may carry Ethernet padding past the IP packet; a packet longer than the
    // frame was cut short.
    let ip = ip.get(..total)?;
    let tcp = &ip[ihl..];
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    if data_offset < TCP_HLEN || data_offset > tcp.len() {
        return None;
    }
    let addr = |a: &[u8], p: &[u8]| {
        SocketAddrV4::new(
            Ipv4Addr::new(a[0], a[1], a[2], a[3]),
            u16::from_be_bytes([p[0], p[1]]),
        )
    };
    let from = addr(&ip[12..16], &tcp[0..2]);
    let to = addr(&ip[16..20], &tcp[2..4]);
    let seg = Segment {
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        ack: u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
        flags: tcp[13],
        payload: tcp[data_offset..].to_vec(),
    };
    Some((from, to, seg))
}

/// The Internet checksum of the concatenated parts (each but the last of even length).
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A local TCP port for segments this process writes itself, and the kernel kept out of them.
///
/// The socket listens on every address, so the kernel hands the port to no one else and finds
/// this socket for every segment to it; its filter drops them all, so the kernel neither
/// accepts a connection on it nor answers a segment with a RST (which a port without a socket
/// gets: a director that does not hold the VIP would reset the connection its packet socket is
/// carrying). The packet socket still sees the segments: it reads them before the IP layer.
pub fn reserve_port() -> io::Result<(socket2::Socket, u16)> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    // Classic BPF `ret #0`: drop everything.
    socket.attach_filter(&[socket2::SockFilter::new(0x06, 0, 0, 0)])?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
    socket.listen(1)?;
    let port = socket
        .local_addr()?
        .as_socket()
        .map(|a| a.port())
        .ok_or_else(|| io::Error::other("the reserved port has no address"))?;
    Ok((socket, port))
}

/// A non-blocking packet socket on `ifindex` that receives only IPv4 TCP segments to `port`
/// (unfragmented). Needs `CAP_NET_RAW`.
pub fn packet_socket(ifindex: u32, port: u16) -> io::Result<OwnedFd> {
    // Protocol 0: nothing is received until the filter is in place and the socket bound.
    // SAFETY: plain socket(2) call.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut filter = tcp_port_filter(port);
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `filter`, valid for the call; the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const prog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_IP.to_be();
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a valid sockaddr_ll for the length passed; the fd is open.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Classic BPF: accept IPv4, TCP, not a fragment, destination port `port`; drop the rest.
fn tcp_port_filter(port: u16) -> [libc::sock_filter; 11] {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    const LDH_ABS: u16 = 0x28;
    const LDB_ABS: u16 = 0x30;
    const LDH_IND: u16 = 0x48;
    const LDXB_MSH: u16 = 0xb1;
    const JEQ: u16 = 0x15;
    const JSET: u16 = 0x45;
    const RET: u16 = 0x06;
    [
        op(LDH_ABS, 0, 0, 12),                  // 0: ether type
        op(JEQ, 0, 8, u32::from(ETH_P_IP)),     // 1: IPv4, else 10
        op(LDB_ABS, 0, 0, 23),                  // 2: IP protocol
        op(JEQ, 0, 6, 6),                       // 3: TCP, else 10
        op(LDH_ABS, 0, 0, 20),                  // 4: flags and fragment offset
        op(JSET, 4, 0, 0x1fff),                 // 5: a later fragment: 10
        op(LDXB_MSH, 0, 0, ETH_HLEN as u32),    // 6: X = IP header length
        op(LDH_IND, 0, 0, ETH_HLEN as u32 + 2), // 7: TCP destination port
        op(JEQ, 0, 1, u32::from(port)),         // 8: ours, else 10
        op(RET, 0, 0, 0x0004_0000),             // 9: accept
        op(RET, 0, 0, 0),                       // 10: drop
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::tcp_session::{ACK, PSH};

    #[test]
    fn a_frame_parses_back_with_valid_checksums() {
        let path = Path {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 11],
            src: "10.0.0.2:40000".parse().unwrap(),
            dst: "192.0.2.10:80".parse().unwrap(),
        };
        let seg = Segment {
            seq: 7,
            ack: 9,
            flags: ACK | PSH,
            payload: b"GET / HTTP/1.0\r\n\r\n!".to_vec(),
        };
        let f = tcp_frame(&path, &seg);
        assert_eq!(&f[0..6], &path.dst_mac);
        assert_eq!(&f[6..12], &path.src_mac);
        // A header with its checksum sums to zero; so does TCP with its pseudo-header.
        assert_eq!(checksum(&[&f[14..34]]), 0);
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&[10, 0, 0, 2]);
        pseudo[4..8].copy_from_slice(&[192, 0, 2, 10]);
        pseudo[9] = 6;
        pseudo[11] = (20 + seg.payload.len()) as u8;
        assert_eq!(checksum(&[&pseudo, &f[34..]]), 0);
        assert_eq!(parse_tcp(&f), Some((path.src, path.dst, seg.clone())));
        // Ethernet padding is not data; a frame cut short or not IPv4 TCP is nothing.
        let mut padded = tcp_frame(
            &path,
            &Segment {
                payload: vec![],
                ..seg.clone()
            },
        );
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(parse_tcp(&padded).map(|(_, _, s)| s.payload), Some(vec![]));
        assert_eq!(parse_tcp(&f[..f.len() - 1]), None);
        let mut udp = f.clone();
        udp[23] = 17;
        assert_eq!(parse_tcp(&udp), None);
    }

    #[test]
    fn a_reserved_port_is_taken_and_silent() {
        let (socket, port) = reserve_port().expect("reserve");
        assert_ne!(port, 0);
        // Nobody else gets the port.
        let other = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port));
        assert!(other.is_err(), "the port is still free");
        // A connect to it is neither accepted nor refused: the filter drops the SYN.
        socket.set_nonblocking(true).unwrap();
        let client = std::net::TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            std::time::Duration::from_millis(300),
        );
        let e = client.expect_err("connected to the reserved port");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(socket.accept().is_err());
    }
}
