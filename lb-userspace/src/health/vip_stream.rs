//! A TCP connection to VIP:port through a real's MAC, as a client's connection travels: the
//! stream an `http_get` (or any exchange) that follows the data path reads and writes.
//!
//! The director's kernel cannot open it: it holds the VIP (or routes it to the director that
//! does), so its own connect would never leave through the real's MAC. So the connection is
//! ours: [`tcp_session`] decides every segment, and this module carries them as frames on a
//! packet socket of the director's interface, addressed to the real's MAC, from the address
//! the kernel would use to reach the real and a port reserved for this connection alone
//! ([`frame::reserve_port`], which also keeps the kernel from resetting it). The real answers
//! from the VIP, straight to us, as it answers clients.
//!
//! The stream implements tokio's `AsyncRead` and `AsyncWrite`, so the HTTP exchange is the
//! same code as over a kernel socket. Shutting it down sends a FIN; dropping it before both
//! sides have closed sends a RST, so the real keeps nothing.

use std::{
    io,
    net::SocketAddrV4,
    os::fd::{AsRawFd as _, OwnedFd},
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf, unix::AsyncFd},
    time::{Instant, Sleep, sleep},
};

use super::{
    frame::{self, Path},
    syn::{Interface, SynTarget},
    tcp_session::{Segment, Session, State},
};

/// How long unacknowledged data waits before it is sent again.
const RESEND: Duration = Duration::from_millis(200);
/// How long a SYN waits for its answer before it is sent again (the caller bounds the whole
/// connect).
const RESEND_SYN: Duration = Duration::from_secs(1);
/// The largest frame read: a packet socket may see segments the kernel merged (GRO).
const MAX_FRAME: usize = 64 * 1024 + 128;

/// A connection to VIP:port through a real's MAC.
pub struct VipStream {
    socket: AsyncFd<OwnedFd>,
    _reservation: socket2::Socket,
    path: Path,
    session: Session,
    resend: Pin<Box<Sleep>>,
    buf: Vec<u8>,
}

impl VipStream {
    /// Opens the connection: `target.to` through `target.mac`, from `source` (the address the
    /// kernel would use to reach the real) on `iface`, the SYN carrying `isn`. Waits for the
    /// handshake, sending the SYN again every second; the caller bounds the wait.
    /// `ConnectionRefused` when the real answers with a RST.
    pub async fn connect(
        iface: Interface,
        target: SynTarget,
        source: std::net::Ipv4Addr,
        isn: u32,
    ) -> io::Result<Self> {
        let (reservation, port) = frame::reserve_port()?;
        let fd = frame::packet_socket(iface.ifindex, port)?;
        // SAFETY: the AsyncFd owns the fd for its whole life and always reports the same one.
        let socket = unsafe { AsyncFd::register(fd) }?;
        let mut stream = Self {
            socket,
            _reservation: reservation,
            path: Path {
                src_mac: iface.mac,
                dst_mac: target.mac,
                src: SocketAddrV4::new(source, port),
                dst: target.to,
            },
            session: Session::new(isn),
            resend: Box::pin(sleep(RESEND)),
            buf: vec![0; MAX_FRAME],
        };
        loop {
            stream.transmit(&stream.session.syn())?;
            let deadline = Instant::now() + RESEND_SYN;
            while stream.session.state() == State::SynSent && Instant::now() < deadline {
                let _ = tokio::time::timeout_at(deadline, stream.receive_some()).await;
            }
            match stream.session.state() {
                State::Established => return Ok(stream),
                State::Refused => return Err(io::ErrorKind::ConnectionRefused.into()),
                State::Reset => return Err(io::ErrorKind::ConnectionReset.into()),
                State::SynSent => {}
            }
        }
    }

    /// Waits until at least one frame has been read and handled.
    async fn receive_some(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_receive(cx)).await
    }

    /// Reads and handles every frame waiting; ready once at least one was, pending (woken by
    /// the socket) when none is.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut handled = false;
        loop {
            let read = {
                let mut guard = match self.socket.poll_read_ready(cx) {
                    Poll::Ready(guard) => guard?,
                    Poll::Pending if handled => return Poll::Ready(Ok(())),
                    Poll::Pending => return Poll::Pending,
                };
                let buf = &mut self.buf;
                guard.try_io(|fd| {
                    // SAFETY: `buf` is valid for its length; the fd is the open packet socket.
                    let n = unsafe {
                        libc::recv(
                            fd.as_raw_fd(),
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                            libc::MSG_DONTWAIT,
                        )
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                })
            };
            match read {
                Ok(Ok(n)) => {
                    handled = true;
                    self.handle(n)?;
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Read everything: the readiness is cleared, polled again above.
                Err(_would_block) => {}
            }
        }
    }

    /// Hands the frame in `buf[..n]` to the session if it belongs to this connection.
    fn handle(&mut self, n: usize) -> io::Result<()> {
        let Some((from, to, seg)) = frame::parse_tcp(&self.buf[..n]) else {
            return Ok(());
        };
        if from != self.path.dst || to != self.path.src {
            return Ok(());
        }
        match self.session.receive(&seg) {
            Some(answer) => self.transmit(&answer),
            None => Ok(()),
        }
    }

    /// Writes one segment. A full socket buffer loses it, as the wire may: it is sent again.
    fn transmit(&self, seg: &Segment) -> io::Result<()> {
        let frame = frame::tcp_frame(&self.path, seg);
        // SAFETY: `frame` is valid for its length; the fd is the open packet socket.
        let rc = unsafe {
            libc::send(
                self.socket.get_ref().as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Sends again what is unacknowledged when its time has come; arms the timer otherwise.
    fn poll_resend(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while self.session.outstanding() && self.resend.as_mut().poll(cx).is_ready() {
            for seg in self.session.resend() {
                self.transmit(&seg)?;
            }
            self.resend.as_mut().reset(Instant::now() + RESEND);
        }
        Ok(())
    }

    fn broken(&self) -> Option<io::Error> {
        match self.session.state() {
            State::Established => None,
            State::Reset => Some(io::ErrorKind::ConnectionReset.into()),
            State::Refused => Some(io::ErrorKind::ConnectionRefused.into()),
            State::SynSent => Some(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl AsyncRead for VipStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.session.readable() {
                let n = this.session.read(buf.initialize_unfilled());
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.session.at_end() {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = this.broken() {
                return Poll::Ready(Err(e));
            }
            this.poll_resend(cx)?;
            ready!(this.poll_receive(cx))?;
        }
    }
}

impl AsyncWrite for VipStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.broken() {
            return Poll::Ready(Err(e));
        }
        let idle = !this.session.outstanding();
        for seg in this.session.send(data) {
            this.transmit(&seg)?;
        }
        if idle {
            this.resend.as_mut().reset(Instant::now() + RESEND);
        }
        // Acknowledgements are handled while reading; keep reading what already came.
        let _ = this.poll_receive(cx);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.session.state() == State::Established {
            let idle = !this.session.outstanding();
            let fin = this.session.close();
            this.transmit(&fin)?;
            if idle {
                this.resend.as_mut().reset(Instant::now() + RESEND);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for VipStream {
    fn drop(&mut self) {
        // Anything short of both sides closed leaves state on the real: reset it.
        let open = matches!(self.session.state(), State::Established | State::SynSent);
        if open && !self.session.closed() {
            let _ = self.transmit(&self.session.reset());
        }
    }
}
