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
//!   this prober's port, so the rest of the traffic costs nothing. Probes submitted together
//!   ([`SynProber::submit`]: the health checker's probes due in the same millisecond) leave in
//!   one `sendmmsg` call; replies are read up to 64 per `recvmmsg` call.
//! - **How a probe ends.** One task per prober reads the replies, sends the RSTs, and times
//!   probes out: every probe in flight has its deadline in one ordered table, under one
//!   timer, so a probe costs no timer, channel or task of its own. Each outcome goes to the
//!   submitter's channel with the submitter's tag.
//! - **How replies are matched.** Every probe leaves from one local port, reserved by a
//!   listening socket whose filter drops every segment ([`frame::reserve_port`]: the kernel
//!   hands the port to no one, accepts nothing on it and answers nothing), with a random
//!   initial sequence number; a reply belongs to the probe whose (address, port, sequence + 1)
//!   it acknowledges. The real forgets the half-open connection at once: the prober resets
//!   every SYN-ACK itself, in the batch of its replies. The director's kernel never does: on a
//!   director that does not hold the VIP, its RST toward the VIP would reach the active
//!   director, which would forward it to a real and record a CLOSE entry.
//!
//! IPv4 only; other probes connect.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasherDefault, Hasher},
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::{AsRawFd as _, OwnedFd, RawFd},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{
    io::unix::AsyncFd,
    sync::{
        Notify,
        mpsc::{UnboundedSender, unbounded_channel},
    },
    time::Instant,
};

use super::{
    frame::{self, ETH_P_IP, checksum},
    machine::Outcome,
};

const ETH_HLEN: usize = 14;
const IP_HLEN: usize = 20;
const TCP_HLEN: usize = 20;
const FRAME_LEN: usize = ETH_HLEN + IP_HLEN + TCP_HLEN;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
/// Frames per `sendmmsg` or `recvmmsg` call.
const BATCH: usize = 64;
/// Bytes kept of each received frame: every header the reply's parsing reads.
const RECV_LEN: usize = 128;

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

/// One probe of a batch: where the SYN goes, how long to wait for the answer, and the
/// caller's tag, handed back with the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynRequest {
    /// Where the SYN goes.
    pub target: SynTarget,
    /// How long to wait for the answer (the probe's `connect_timeout`).
    pub limit: Duration,
    /// The caller's name for this probe.
    pub tag: u64,
}

/// Where the outcomes of submitted probes go: `(tag, outcome)`, one per probe.
pub type SynSink = UnboundedSender<(u64, Outcome)>;

/// What came back for a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    SynAck,
    Reset,
}

/// A probe's key: (replying address, replying port, the acknowledgement number expected).
type ReplyKey = (Ipv4Addr, u16, u32);

/// A multiply-and-rotate hasher for the prober's own tables, looked up for every probe and
/// reply. Their keys are a random sequence number with a configured address, or a configured
/// address: nothing a peer picks, so SipHash's resistance to chosen keys buys nothing there.
#[derive(Clone, Copy, Default)]
struct FastHasher(u64);

impl FastHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(Self::K).rotate_left(26);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A probe waiting for its answer.
struct Waiter {
    tag: u64,
    sink: SynSink,
    /// Its entry in [`InFlight::deadlines`].
    deadline: (Instant, u64),
    /// What the RST after a SYN-ACK from a VIP is built from.
    target: SynTarget,
    source: Ipv4Addr,
    isn: u32,
}

/// The probes in flight and what sending one needs, behind one lock.
struct InFlight {
    pending: FastMap<ReplyKey, Waiter>,
    /// Deadlines in order (with a sequence number for equal instants), resolved in bulk by the
    /// prober's task: one timer for all the probes.
    deadlines: BTreeMap<(Instant, u64), ReplyKey>,
    seq: u64,
    rng: u64,
    /// Source address by real address (what the kernel's routing picks).
    sources: FastMap<Ipv4Addr, Ipv4Addr>,
    /// Set with the reason when the task stopped: later probes fail at once.
    closed: Option<String>,
}

impl InFlight {
    fn next_isn(&mut self) -> u32 {
        let s = &mut self.rng;
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s as u32
    }

    /// The address the kernel would send from to reach `real` (cached).
    fn source_for(&mut self, real: Ipv4Addr) -> io::Result<Ipv4Addr> {
        if let Some(s) = self.sources.get(&real) {
            return Ok(*s);
        }
        let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        probe.connect((real, 9))?;
        let SocketAddr::V4(local) = probe.local_addr()? else {
            return Err(io::Error::other("not an IPv4 route"));
        };
        self.sources.insert(real, *local.ip());
        Ok(*local.ip())
    }

    /// Removes the probe `key` answers, if it is still waiting.
    fn take(&mut self, key: &ReplyKey) -> Option<Waiter> {
        let w = self.pending.remove(key)?;
        self.deadlines.remove(&w.deadline);
        Some(w)
    }
}

/// What the prober's handle and its task share.
struct Shared {
    socket: AsyncFd<OwnedFd>,
    iface: Interface,
    /// The reserved local port every probe leaves from.
    port: u16,
    state: Mutex<InFlight>,
    /// Wakes the task when a probe's deadline comes before every other one.
    earlier_deadline: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, InFlight> {
        self.state.lock().expect("syn prober lock")
    }

    /// Sends every frame, in `sendmmsg` batches, waiting while the socket's buffer is full.
    async fn send_frames(&self, frames: &[[u8; FRAME_LEN]]) -> io::Result<()> {
        let mut rest = frames;
        while !rest.is_empty() {
            let mut guard = self.socket.writable().await?;
            match send_batch(guard.get_inner().as_raw_fd(), rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The prober of one interface.
pub struct SynProber {
    shared: Arc<Shared>,
    _reservation: socket2::Socket,
}

impl SynProber {
    /// Opens the packet socket on `iface` and starts the task that reads replies and times
    /// probes out (on the current tokio runtime). Needs `CAP_NET_RAW`.
    pub fn start(iface: Interface) -> io::Result<Arc<Self>> {
        let (reservation, port) = frame::reserve_port()?;
        let fd = frame::packet_socket(iface.ifindex, port)?;
        // SAFETY: the AsyncFd owns the fd for its whole life and always reports the same one.
        let socket = unsafe { AsyncFd::register(fd) }?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        let shared = Arc::new(Shared {
            socket,
            iface,
            port,
            state: Mutex::new(InFlight {
                pending: FastMap::default(),
                deadlines: BTreeMap::new(),
                seq: 0,
                rng: seed | 1,
                sources: FastMap::default(),
                closed: None,
            }),
            earlier_deadline: Notify::new(),
        });
        tokio::spawn(run(shared.clone()));
        tracing::debug!(ifindex = iface.ifindex, port, "half-open prober started");
        Ok(Arc::new(Self {
            shared,
            _reservation: reservation,
        }))
    }

    /// The local port the probes leave from.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// The interface the probes leave from.
    pub(super) fn interface(&self) -> Interface {
        self.shared.iface
    }

    /// A random initial sequence number (for a connection through the VIP).
    pub(super) fn next_isn(&self) -> u32 {
        self.shared.state().next_isn()
    }

    /// The address the kernel would send from to reach `real` (cached).
    pub(super) fn source_for(&self, real: Ipv4Addr) -> io::Result<Ipv4Addr> {
        self.shared.state().source_for(real)
    }

    /// Sends a SYN to `target` and waits up to `limit` for the answer: a SYN-ACK is up
    /// (answered with a RST), a RST is down ("connect refused"), silence is down ("timeout").
    pub async fn probe(&self, target: SynTarget, limit: Duration) -> Outcome {
        let (tx, mut rx) = unbounded_channel();
        let request = SynRequest {
            target,
            limit,
            tag: 0,
        };
        self.submit(&[request], &tx).await;
        match rx.recv().await {
            Some((_, outcome)) => outcome,
            None => down("the half-open prober stopped".into()),
        }
    }

    /// Sends the SYNs of `requests` in as few system calls as the socket allows and returns;
    /// each probe's outcome, as [`SynProber::probe`] describes it, goes to `sink` with its tag
    /// when its answer arrives or its time is up (at once if it could not be sent).
    pub async fn submit(&self, requests: &[SynRequest], sink: &SynSink) {
        let shared = &*self.shared;
        let now = Instant::now();
        let mut frames = Vec::with_capacity(requests.len());
        let mut sent = Vec::with_capacity(requests.len());
        {
            let mut state = shared.state();
            if let Some(why) = &state.closed {
                for r in requests {
                    let _ = sink.send((r.tag, down(why.clone())));
                }
                return;
            }
            let first = state.deadlines.first_key_value().map(|(d, _)| *d);
            for r in requests {
                let source = match state.source_for(r.target.real) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ =
                            sink.send((r.tag, down(format!("no route to {}: {e}", r.target.real))));
                        continue;
                    }
                };
                let isn = state.next_isn();
                let key = (*r.target.to.ip(), r.target.to.port(), isn.wrapping_add(1));
                state.seq += 1;
                let deadline = (now + r.limit, state.seq);
                let waiter = Waiter {
                    tag: r.tag,
                    sink: sink.clone(),
                    deadline,
                    target: r.target,
                    source,
                    isn,
                };
                if let Some(old) = state.pending.insert(key, waiter) {
                    // The same (target, sequence) twice in flight: the older probe is
                    // answered as timed out rather than left waiting forever.
                    state.deadlines.remove(&old.deadline);
                    let _ = old.sink.send((old.tag, down("timeout".into())));
                }
                state.deadlines.insert(deadline, key);
                frames.push(frame(
                    &shared.iface,
                    &r.target,
                    source,
                    shared.port,
                    isn,
                    0,
                    SYN,
                ));
                sent.push(key);
            }
            if state.deadlines.first_key_value().map(|(d, _)| *d) != first {
                shared.earlier_deadline.notify_one();
            }
        }
        if let Err(e) = shared.send_frames(&frames).await {
            // Which frames left is unknown: every probe of the batch still waiting fails.
            tracing::warn!(error = %e, probes = frames.len(), "sending half-open probes");
            let mut state = shared.state();
            for key in &sent {
                if let Some(w) = state.take(key) {
                    let _ = w.sink.send((w.tag, down(format!("sending the SYN: {e}"))));
                }
            }
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

/// The prober's task: reads replies in batches and hands each to its probe, sends the RSTs
/// that answer SYN-ACKs from VIPs, and times out probes whose deadline passed, until the
/// socket fails; then fails every probe still waiting, and every later one.
async fn run(shared: Arc<Shared>) {
    let why = match serve(&shared).await {
        Ok(()) => "the half-open prober stopped".to_string(),
        Err(e) => {
            tracing::error!(error = %e, "half-open prober: reading replies failed");
            format!("reading replies: {e}")
        }
    };
    let mut state = shared.state();
    state.closed = Some(why.clone());
    state.deadlines.clear();
    for (_, w) in state.pending.drain() {
        let _ = w.sink.send((w.tag, down(why.clone())));
    }
}

async fn serve(shared: &Shared) -> io::Result<()> {
    let mut bufs = [[0u8; RECV_LEN]; BATCH];
    let mut lens = [0usize; BATCH];
    let mut rsts: Vec<[u8; FRAME_LEN]> = Vec::new();
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    loop {
        // Time out every probe whose deadline passed, and arm the timer for the next one.
        let next = {
            let now = Instant::now();
            let mut state = shared.state();
            while let Some(entry) = state.deadlines.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let key = entry.remove();
                if let Some(w) = state.pending.remove(&key) {
                    let _ = w.sink.send((w.tag, down("timeout".into())));
                }
            }
            state.deadlines.first_key_value().map(|(d, _)| d.0)
        };
        if let Some(at) = next
            && at != timer.deadline()
        {
            timer.as_mut().reset(at);
        }
        let notified = shared.earlier_deadline.notified();
        tokio::select! {
            ready = shared.socket.readable() => {
                let mut guard = ready?;
                loop {
                    let n = match recv_batch(guard.get_inner().as_raw_fd(), &mut bufs, &mut lens) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            guard.clear_ready();
                            break;
                        }
                        Err(e) => return Err(e),
                    };
                    answer(shared, &bufs[..n], &lens[..n], &mut rsts);
                    if n < BATCH {
                        // A short batch drained the queue: clearing now saves the call that
                        // would return EAGAIN. A frame queued after the read raises a readiness
                        // event newer than this guard's, which `clear_ready` leaves set (tokio's
                        // own streams clear after a short read the same way).
                        guard.clear_ready();
                        break;
                    }
                }
                if !rsts.is_empty() {
                    // Best effort, like the kernel's own RST: the real times the half-open
                    // connection out without it.
                    if let Err(e) = shared.send_frames(&rsts).await {
                        tracing::debug!(error = %e, "sending RSTs after SYN-ACKs");
                    }
                    rsts.clear();
                }
            }
            () = &mut timer, if next.is_some() => {}
            () = notified => {}
        }
    }
}

/// Hands each reply among `frames` to its probe; queues the RST of each SYN-ACK from a VIP.
fn answer(
    shared: &Shared,
    frames: &[[u8; RECV_LEN]],
    lens: &[usize],
    rsts: &mut Vec<[u8; FRAME_LEN]>,
) {
    let mut state = shared.state();
    for (f, &len) in frames.iter().zip(lens) {
        let Some((key, reply)) = parse_reply(&f[..len.min(RECV_LEN)], shared.port) else {
            continue;
        };
        let Some(w) = state.take(&key) else {
            continue;
        };
        let outcome = match reply {
            Reply::SynAck => {
                // The real forgets the half-open connection by this RST: the director's kernel
                // sends none (the reserved port's socket drops every segment, see
                // `frame::reserve_port`), so a director without the VIP never resets a flow the
                // active director then forwards to a real.
                rsts.push(frame(
                    &shared.iface,
                    &w.target,
                    w.source,
                    shared.port,
                    w.isn.wrapping_add(1),
                    0,
                    RST,
                ));
                up()
            }
            Reply::Reset => down("connect refused".into()),
        };
        let _ = w.sink.send((w.tag, outcome));
    }
}

/// Sends a prefix of `frames` with one `sendmmsg` call; returns how many left.
fn send_batch(fd: RawFd, frames: &[[u8; FRAME_LEN]]) -> io::Result<usize> {
    let n = frames.len().min(BATCH);
    let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; BATCH];
    // SAFETY: an all-zero mmsghdr is valid (no address, no control data); the iovecs are set
    // below.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for ((iov, msg), f) in iovs.iter_mut().zip(msgs.iter_mut()).zip(&frames[..n]) {
        iov.iov_base = f.as_ptr().cast_mut().cast();
        iov.iov_len = f.len();
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `n` headers point at one iovec each, which points at a frame of
    // `frames`; all of them outlive the call, which only reads them. The fd is the open packet
    // socket (bound: no address needed).
    let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// Receives up to [`BATCH`] frames with one `recvmmsg` call, each truncated to [`RECV_LEN`]
/// bytes (which keeps every header a reply's parsing reads); returns how many came.
fn recv_batch(
    fd: RawFd,
    bufs: &mut [[u8; RECV_LEN]; BATCH],
    lens: &mut [usize; BATCH],
) -> io::Result<usize> {
    let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; BATCH];
    // SAFETY: an all-zero mmsghdr is valid (no address, no control data); the iovecs are set
    // below.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for ((iov, msg), buf) in iovs.iter_mut().zip(msgs.iter_mut()).zip(bufs.iter_mut()) {
        iov.iov_base = buf.as_mut_ptr().cast();
        iov.iov_len = buf.len();
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at one iovec, which points at a buffer of `bufs` valid for
    // its length; all of them outlive the call. The fd is the open, non-blocking packet
    // socket; no timeout.
    let rc = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            BATCH as u32,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = rc as usize;
    for (len, msg) in lens.iter_mut().zip(&msgs[..n]) {
        *len = (msg.msg_len as usize).min(RECV_LEN);
    }
    Ok(n)
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
