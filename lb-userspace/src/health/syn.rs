//! Half-open TCP probes through the data path: a SYN written straight onto the director's
//! interface, addressed to the real's MAC, and the real's answer read back, with no socket per
//! probe and no connection ever completed.
//!
//! - **What it proves.** Sent to the VIP through the real's MAC, the SYN is exactly the frame
//!   the XDP program forwards for a client: the real answers SYN-ACK only if it accepts the VIP
//!   (on `lo`, not filtered) and something listens on the port. A check of the real's own
//!   address passes on a real that drops every client's packet. Sent to the real's address it
//!   proves what a connect proves: the kernel completes handshakes on the port.
//! - **What it costs.** One frame out, one frame in, one RST out: no socket, no connection
//!   state in either kernel past the SYN-ACK, nothing for the server to accept or log. The
//!   replies reach one `AF_PACKET` socket through a classic BPF filter that passes only TCP to
//!   this prober's port, so the rest of the traffic costs nothing.
//! - **How replies are matched.** Every probe leaves from one local port, reserved by a bound
//!   TCP socket that never listens (so the kernel neither hands it out nor accepts on it), with
//!   a random initial sequence number; a reply belongs to the probe whose (address, port,
//!   sequence + 1) it acknowledges. The real forgets the half-open connection at once: the
//!   director's kernel resets a SYN-ACK from the real's own address (the port does not
//!   listen), and the prober resets one from the VIP itself.
//!
//! IPv4 only; other probes connect.

use std::{
    collections::HashMap,
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{io::unix::AsyncFd, sync::oneshot, time::timeout};

use super::machine::Outcome;

const ETH_P_IP: u16 = 0x0800;
const ETH_HLEN: usize = 14;
const IP_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
const FRAME_LEN: usize = ETH_HLEN + IP_HLEN + TCP_HLEN;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// The director's side of the probes: its interface and that interface's MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Interface index.
    pub ifindex: u32,
    /// Its MAC address (the probes' source MAC).
    pub mac: [u8; 6],
}

/// One probe: where the SYN goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynTarget {
    /// Destination address and port: the VIP (data path) or the real's own.
    pub to: SocketAddrV4,
    /// The real: its address picks the probe's source address (the one the kernel would use
    /// to reach it), its MAC is where the frame goes.
    pub real: Ipv4Addr,
    /// The real's MAC address.
    pub mac: [u8; 6],
}

/// What came back for a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    SynAck,
    Reset,
}

/// Pending probes by (replying address, replying port, the acknowledgement number expected).
type Pending = HashMap<(Ipv4Addr, u16, u32), oneshot::Sender<Reply>>;

/// The prober of one interface.
pub struct SynProber {
    socket: Arc<AsyncFd<OwnedFd>>,
    iface: Interface,
    /// The reserved local port every probe leaves from.
    port: u16,
    _reservation: socket2::Socket,
    pending: Arc<Mutex<Pending>>,
    /// Source address by real address (what the kernel's routing picks).
    sources: Mutex<HashMap<Ipv4Addr, Ipv4Addr>>,
    rng: Mutex<u64>,
}

impl SynProber {
    /// Opens the packet socket on `iface` and starts reading replies (on the current tokio
    /// runtime). Needs `CAP_NET_RAW`.
    pub fn start(iface: Interface) -> io::Result<Arc<Self>> {
        let reservation = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        reservation.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
        let port = reservation
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .ok_or_else(|| io::Error::other("the reserved port has no address"))?;
        let fd = packet_socket(iface.ifindex, port)?;
        // SAFETY: the AsyncFd owns the fd for its whole life and always reports the same one.
        let socket = Arc::new(unsafe { AsyncFd::register(fd) }?);
        let pending = Arc::new(Mutex::new(Pending::new()));
        tokio::spawn(read_replies(socket.clone(), pending.clone(), port));
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        Ok(Arc::new(Self {
            socket,
            iface,
            port,
            _reservation: reservation,
            pending,
            sources: Mutex::new(HashMap::new()),
            rng: Mutex::new(seed | 1),
        }))
    }

    /// The local port the probes leave from.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends a SYN to `target` and waits up to `limit` for the answer: a SYN-ACK is up
    /// (answered with a RST), a RST is down ("connect refused"), silence is down ("timeout").
    pub async fn probe(&self, target: SynTarget, limit: Duration) -> Outcome {
        let source = match self.source_for(target.real) {
            Ok(s) => s,
            Err(e) => return down(format!("no route to {}: {e}", target.real)),
        };
        let isn = self.next_isn();
        let (tx, rx) = oneshot::channel();
        let key = (*target.to.ip(), target.to.port(), isn.wrapping_add(1));
        self.pending.lock().expect("pending lock").insert(key, tx);
        let syn = frame(&self.iface, &target, source, self.port, isn, 0, SYN);
        if let Err(e) = self.send(&syn).await {
            self.pending.lock().expect("pending lock").remove(&key);
            return down(format!("sending the SYN: {e}"));
        }
        let reply = timeout(limit, rx).await;
        self.pending.lock().expect("pending lock").remove(&key);
        match reply {
            Ok(Ok(Reply::SynAck)) => {
                // Through the VIP the real forgets the half-open connection only by this RST:
                // the director's kernel drops a SYN-ACK from a VIP it holds (a martian) or
                // sends its RST the VIP's way. To the real's own address the kernel's RST (the
                // reserved port does not listen) already does it.
                if target.to.ip() == &target.real {
                    return up();
                }
                let rst = frame(
                    &self.iface,
                    &target,
                    source,
                    self.port,
                    isn.wrapping_add(1),
                    0,
                    RST,
                );
                let _ = self.send(&rst).await;
                up()
            }
            Ok(Ok(Reply::Reset)) => down("connect refused".into()),
            Ok(Err(_)) | Err(_) => down("timeout".into()),
        }
    }

    /// The interface the probes leave from.
    pub(super) fn interface(&self) -> Interface {
        self.iface
    }

    /// A random initial sequence number.
    pub(super) fn next_isn(&self) -> u32 {
        let mut s = self.rng.lock().expect("rng lock");
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s as u32
    }

    /// The address the kernel would send from to reach `real` (cached).
    pub(super) fn source_for(&self, real: Ipv4Addr) -> io::Result<Ipv4Addr> {
        if let Some(s) = self.sources.lock().expect("sources lock").get(&real) {
            return Ok(*s);
        }
        let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        probe.connect((real, 9))?;
        let SocketAddr::V4(local) = probe.local_addr()? else {
            return Err(io::Error::other("not an IPv4 route"));
        };
        self.sources
            .lock()
            .expect("sources lock")
            .insert(real, *local.ip());
        Ok(*local.ip())
    }

    async fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.socket.writable().await?;
            let fd = guard.get_inner().as_raw_fd();
            // SAFETY: `frame` is valid for its length; the fd is the open packet socket.
            let rc = unsafe { libc::send(fd, frame.as_ptr().cast(), frame.len(), 0) };
            if rc >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                guard.clear_ready();
                continue;
            }
            return Err(e);
        }
    }
}

fn up() -> Outcome {
    Outcome {
        ok: true,
        detail: "SYN-ACK".into(),
    }
}

fn down(detail: String) -> Outcome {
    Outcome { ok: false, detail }
}

/// Reads replies until the socket fails, handing each to its probe.
async fn read_replies(socket: Arc<AsyncFd<OwnedFd>>, pending: Arc<Mutex<Pending>>, port: u16) {
    let mut buf = [0u8; 128];
    loop {
        let Ok(mut guard) = socket.readable().await else {
            return;
        };
        loop {
            let fd = guard.get_inner().as_raw_fd();
            // SAFETY: `buf` is valid for its length; the fd is the open packet socket. A frame
            // longer than the buffer is truncated, which keeps every header read needs.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                guard.clear_ready();
                break;
            }
            if let Some((key, reply)) = parse_reply(&buf[..n as usize], port)
                && let Some(tx) = pending.lock().expect("pending lock").remove(&key)
            {
                let _ = tx.send(reply);
            }
        }
    }
}

/// A SYN-ACK or RST to `port`: the pending key it answers, and what it is.
fn parse_reply(f: &[u8], port: u16) -> Option<((Ipv4Addr, u16, u32), Reply)> {
    if f.len() < ETH_HLEN + IP_HLEN || u16::from_be_bytes([f[12], f[13]]) != ETH_P_IP {
        return None;
    }
    let ip = &f[ETH_HLEN..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < IP_HLEN || ip[9] != 6 || ip.len() < ihl + TCP_HLEN {
        return None;
    }
    let tcp = &ip[ihl..];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    let flags = tcp[13];
    if dport != port {
        return None;
    }
    let reply = if flags & (SYN | ACK) == SYN | ACK {
        Reply::SynAck
    } else if flags & RST != 0 {
        Reply::Reset
    } else {
        return None;
    };
    Some(((src, sport, ack), reply))
}

/// An Ethernet + IPv4 + TCP frame from this interface to the real's MAC.
fn frame(
    iface: &Interface,
    target: &SynTarget,
    source: Ipv4Addr,
    sport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&target.mac);
    f[6..12].copy_from_slice(&iface.mac);
    f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
    let dst = *target.to.ip();
    {
        let ip = &mut f[ETH_HLEN..ETH_HLEN + IP_HLEN];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((IP_HLEN + TCP_HLEN) as u16).to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = 64; // TTL
        ip[9] = 6; // TCP
        ip[12..16].copy_from_slice(&source.octets());
        ip[16..20].copy_from_slice(&dst.octets());
        let sum = checksum(&[ip]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    {
        let tcp = &mut f[ETH_HLEN + IP_HLEN..];
        tcp[0..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&target.to.port().to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&ack.to_be_bytes());
        tcp[12] = (TCP_HLEN as u8 / 4) << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&64_240u16.to_be_bytes()); // window
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&source.octets());
        pseudo[4..8].copy_from_slice(&dst.octets());
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&(TCP_HLEN as u16).to_be_bytes());
        let sum = checksum(&[&pseudo, tcp]);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    }
    f
}

/// The Internet checksum of the concatenated parts (each of even length).
fn checksum(parts: &[&[u8]]) -> u16 {
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

/// A packet socket on `ifindex` that receives only IPv4 TCP segments to `port` (unfragmented),
/// non-blocking.
fn packet_socket(ifindex: u32, port: u16) -> io::Result<OwnedFd> {
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

    #[test]
    fn frames_carry_valid_checksums_and_replies_match_their_probe() {
        let iface = Interface {
            ifindex: 2,
            mac: [2, 0, 0, 0, 0, 1],
        };
        let target = SynTarget {
            to: "192.0.2.10:5672".parse().unwrap(),
            real: Ipv4Addr::new(10, 0, 0, 11),
            mac: [2, 0, 0, 0, 0, 11],
        };
        let f = frame(
            &iface,
            &target,
            Ipv4Addr::new(10, 0, 0, 2),
            40_000,
            7,
            0,
            SYN,
        );
        assert_eq!(&f[0..6], &target.mac);
        assert_eq!(&f[6..12], &iface.mac);
        // A header with its checksum sums to zero.
        assert_eq!(checksum(&[&f[14..34]]), 0);
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&[10, 0, 0, 2]);
        pseudo[4..8].copy_from_slice(&[192, 0, 2, 10]);
        pseudo[9] = 6;
        pseudo[11] = 20;
        assert_eq!(checksum(&[&pseudo, &f[34..54]]), 0);
        assert_eq!(f[47], SYN);

        // The real's SYN-ACK from the VIP, acknowledging 8, to our port.
        let mut reply = f;
        reply[14 + 12..14 + 16].copy_from_slice(&[192, 0, 2, 10]);
        reply[14 + 16..14 + 20].copy_from_slice(&[10, 0, 0, 2]);
        reply[34..36].copy_from_slice(&5672u16.to_be_bytes());
        reply[36..38].copy_from_slice(&40_000u16.to_be_bytes());
        reply[42..46].copy_from_slice(&8u32.to_be_bytes());
        reply[47] = SYN | ACK;
        let key = (Ipv4Addr::new(192, 0, 2, 10), 5672, 8);
        assert_eq!(parse_reply(&reply, 40_000), Some((key, Reply::SynAck)));
        reply[47] = RST | ACK;
        assert_eq!(parse_reply(&reply, 40_000), Some((key, Reply::Reset)));
        // Not our port, or a plain ACK: not a reply.
        assert_eq!(parse_reply(&reply, 40_001), None);
        reply[47] = ACK;
        assert_eq!(parse_reply(&reply, 40_000), None);
        assert_eq!(parse_reply(&reply[..30], 40_000), None);
    }
}
