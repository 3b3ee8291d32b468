//! The connection a check talks over (`http_get`, `ssl_get`, `amqp_check`): a kernel TCP
//! connection to the real, or the agent's own connection to VIP:port through the real's MAC
//! ([`VipStream`]), the way a client's goes. The exchanges are written once, over [`Stream`].

use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::{
    probe::{connect, io_reason},
    syn::{Interface, SynTarget},
    vip_stream::VipStream,
};

/// How a check reaches the real.
pub enum Route {
    /// A kernel TCP connection to `target`, from `bind` if given.
    Connect {
        /// Address and port.
        target: SocketAddr,
        /// Source address and port.
        bind: Option<SocketAddr>,
    },
    /// VIP:port through the real's MAC, over a connection the agent carries
    /// ([`VipStream`]).
    Vip {
        /// The director's interface.
        iface: Interface,
        /// VIP:port and the real's MAC.
        target: SynTarget,
        /// The director's address toward the real.
        source: Ipv4Addr,
        /// The SYN's sequence number.
        isn: u32,
    },
}

/// An open connection along a [`Route`].
pub enum Stream {
    /// The kernel's.
    Tcp(TcpStream),
    /// The agent's own, through the VIP.
    Vip(Box<VipStream>),
}

/// Opens the connection along `route` (a connect bounded by `limit`; the caller bounds the
/// rest); with the address it reached, for TLS's server name. `Err` says why it failed.
pub async fn open(route: &Route, limit: Duration) -> Result<(Stream, SocketAddr), String> {
    match route {
        Route::Connect { target, bind } => {
            let stream = connect(*target, *bind, limit).await?;
            Ok((Stream::Tcp(stream), *target))
        }
        Route::Vip {
            iface,
            target,
            source,
            isn,
        } => {
            let stream = VipStream::connect(*iface, *target, *source, *isn)
                .await
                .map_err(|e| io_reason(&e))?;
            Ok((Stream::Vip(Box::new(stream)), SocketAddr::V4(target.to)))
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Vip(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Stream::Vip(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Vip(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Vip(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
