//! The director's view of its LAN, over rtnetlink: interface facts, the kernel's neighbour
//! (ARP / NDP) table, neighbour resolution, and VIP addresses.
//!
//! The data plane needs the MAC address of every real server. Nothing here parses the
//! output of `ip`: everything is rtnetlink requests and notifications on sockets that belong
//! to the network namespace of the thread that opened them (the agent runs inside the
//! director's namespace).
//!
//! # Resolution
//!
//! [`Netlink::resolve`] asks the kernel for a *managed* neighbour entry (kernel >= 5.16): it
//! sends `RTM_NEWNEIGH` with `NTF_USE` in `ndm_flags` and `NTF_EXT_MANAGED` in the
//! `NDA_FLAGS_EXT` attribute (the user-facing "managed" bit lives there; `0x08` in `ndm_flags`
//! would be `NTF_PROXY`). This is what `ip neigh add IP dev DEV use managed` sends. The
//! kernel then probes the neighbour by itself (ARP or neighbour solicitation, never
//! application traffic) and keeps the entry `REACHABLE`, re-probing failed entries every
//! `interval_probe_time_ms` (5 s by default).
//!
//! The kernel keeps the state and MAC of an existing entry (a learned `STALE` or `REACHABLE`
//! entry stays usable) while the managed flag is added, and starts resolution at once for a
//! new or `FAILED` entry. `NTF_USE` without the extended flag clears the flag the same way,
//! which the tracker does for IPs it stops tracking. Permanent and `NOARP` entries are left
//! alone: there is nothing to resolve. On kernels older than 5.16 the extended flag should be
//! ignored (not verified here) and `NTF_USE` still triggers one resolution, which
//! [`NeighbourTracker`] repeats for unresolved IPs on every resynchronisation.
//!
//! IPv6 neighbours work the same way (NDP). On an interface that has just come up, the
//! kernel only sends neighbour solicitations once its link-local address has passed
//! duplicate address detection (about 1–2 s).
//!
//! # Following changes
//!
//! [`NeighbourTracker`] subscribes to the `RTNLGRP_NEIGH` multicast group on a connection of
//! its own, so a changed MAC (for instance after a gratuitous ARP of a replaced real) is seen
//! as soon as the kernel updates its table. A full dump every [`RESYNC_INTERVAL`] is the
//! safety net against lost notifications.
//!
//! The [`Netlink`] handle is in `handle`, the neighbour types and the decoding of rtnetlink
//! messages in `neighbour`, the [`NeighbourTracker`] in `tracker`.

mod handle;
mod neighbour;
mod tracker;

pub use handle::Netlink;
pub use neighbour::{MacState, NeighEvent, NeighState, Neighbour};
pub use tracker::{NeighbourTracker, RESYNC_INTERVAL};

use std::io;

/// Errors of the rtnetlink layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// A function that spawns tasks was called outside of a tokio runtime.
    #[error("rtnetlink needs a running tokio runtime")]
    NoRuntime,
    /// The netlink socket could not be opened or configured.
    #[error("cannot open rtnetlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The connection task is gone, so requests can no longer be sent.
    #[error("rtnetlink connection closed")]
    ConnectionClosed,
    /// No interface has that name.
    #[error("no interface named {0:?}")]
    NoSuchLink(String),
    /// The kernel rejected a request; `source` carries the errno.
    #[error("{op}: {source}")]
    Kernel {
        /// The request, e.g. `RTM_NEWNEIGH 10.0.0.1 on ifindex 3`.
        op: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The kernel answered with something that is not understood.
    #[error("{op}: unexpected reply: {detail}")]
    Unexpected {
        /// The request.
        op: String,
        /// What was wrong.
        detail: String,
    },
}

impl NetlinkError {
    /// The errno of a request the kernel rejected.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Facts about one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Link-layer address; all zeros if the link has no 6-byte address (e.g. a tun device).
    pub mac: [u8; 6],
    /// Administratively up (`IFF_UP`).
    pub up: bool,
}
