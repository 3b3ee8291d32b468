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

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, io,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use rtnetlink::{
    Handle, MulticastGroup,
    packet_core::{
        NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage,
        NetlinkPayload,
    },
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        address::{AddressAttribute, AddressFlags, AddressMessage},
        link::{LinkAttribute, LinkFlags, LinkMessage},
        neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourFlags,
            NeighbourMessage, NeighbourState,
        },
    },
    sys::AsyncSocket,
};
use tokio::{
    sync::mpsc::{self, UnboundedReceiver, UnboundedSender},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

/// How often [`NeighbourTracker`] re-reads the whole neighbour table of its interface and
/// re-requests resolution of unresolved IPs.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(5);
/// Minimum time between two resolution requests of the tracker for the same IP.
const RESOLVE_BACKOFF: Duration = Duration::from_millis(250);
/// Receive buffer of the notification socket, so that bursts are not lost.
const NOTIFY_RCVBUF: usize = 1 << 20;
/// Pause before re-opening a notification socket that failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

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

/// State of a neighbour entry (`NUD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NeighState {
    /// Resolution in progress.
    Incomplete,
    /// Confirmed recently.
    Reachable,
    /// Valid but not confirmed recently.
    Stale,
    /// Valid, waiting before a confirmation probe.
    Delay,
    /// Valid, being confirmed by unicast probes.
    Probe,
    /// Resolution failed.
    Failed,
    /// No resolution needed on this link.
    NoArp,
    /// Static entry.
    Permanent,
    /// No state (`NUD_NONE`).
    None,
    /// Any other value (several bits or a future state).
    Other(u16),
}

impl NeighState {
    /// Whether a MAC in this state may be used to send frames: `REACHABLE`, `STALE`,
    /// `DELAY`, `PROBE`, `NOARP` and `PERMANENT`.
    pub fn usable(self) -> bool {
        matches!(
            self,
            NeighState::Reachable
                | NeighState::Stale
                | NeighState::Delay
                | NeighState::Probe
                | NeighState::NoArp
                | NeighState::Permanent
        )
    }

    fn from_raw(raw: u16) -> NeighState {
        match raw {
            0x01 => NeighState::Incomplete,
            0x02 => NeighState::Reachable,
            0x04 => NeighState::Stale,
            0x08 => NeighState::Delay,
            0x10 => NeighState::Probe,
            0x20 => NeighState::Failed,
            0x40 => NeighState::NoArp,
            0x80 => NeighState::Permanent,
            0x00 => NeighState::None,
            other => NeighState::Other(other),
        }
    }
}

impl fmt::Display for NeighState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            NeighState::Incomplete => "INCOMPLETE",
            NeighState::Reachable => "REACHABLE",
            NeighState::Stale => "STALE",
            NeighState::Delay => "DELAY",
            NeighState::Probe => "PROBE",
            NeighState::Failed => "FAILED",
            NeighState::NoArp => "NOARP",
            NeighState::Permanent => "PERMANENT",
            NeighState::None => "NONE",
            NeighState::Other(raw) => return write!(f, "0x{raw:x}"),
        };
        f.write_str(name)
    }
}

/// One entry of the neighbour table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// Its link-layer address, if the entry has a 6-byte one.
    pub mac: Option<[u8; 6]>,
    /// The entry's state.
    pub state: NeighState,
}

/// A neighbour entry plus the flags the resolution logic needs.
#[derive(Debug, Clone)]
struct NeighEntry {
    neighbour: Neighbour,
    managed: bool,
}

/// Whether the tracker can use an IP's MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacState {
    /// The kernel has a usable MAC for the IP.
    Resolved([u8; 6]),
    /// No usable MAC, and why.
    Unresolved(String),
}

impl fmt::Display for MacState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MacState::Resolved(m) => write!(
                f,
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
            MacState::Unresolved(reason) => write!(f, "unresolved: {reason}"),
        }
    }
}

/// A change of the usable MAC of a tracked IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighEvent {
    /// The tracked IP.
    pub ip: IpAddr,
    /// Its new state.
    pub state: MacState,
}

/// An rtnetlink connection in the current network namespace. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn neigh_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

fn mac_of(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

/// Decodes an IPv4/IPv6 neighbour message; `None` for other families or without address.
fn parse_neighbour(msg: &NeighbourMessage) -> Option<NeighEntry> {
    let mut ip = None;
    let mut mac = None;
    let mut managed = false;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(lla) => mac = mac_of(lla),
            NeighbourAttribute::ExtFlags(flags) => {
                managed = flags.contains(NeighbourExtFlags::Managed)
            }
            _ => {}
        }
    }
    Some(NeighEntry {
        neighbour: Neighbour {
            ip: ip?,
            mac,
            state: NeighState::from_raw(u16::from(msg.header.state)),
        },
        managed,
    })
}

fn parse_link(msg: &LinkMessage) -> LinkInfo {
    let mac = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(bytes) => mac_of(bytes),
            _ => None,
        })
        .unwrap_or([0; 6]);
    LinkInfo {
        index: msg.header.index,
        mac,
        up: msg.header.flags.contains(LinkFlags::Up),
    }
}

impl Netlink {
    /// Opens an rtnetlink socket in the calling thread's network namespace and spawns its
    /// connection task on the current tokio runtime.
    pub async fn connect() -> Result<Netlink, NetlinkError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        rt.spawn(conn);
        Ok(Netlink { handle })
    }

    /// Sends one request and collects the inner messages of the answer; kernel errors
    /// become [`NetlinkError::Kernel`].
    async fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut handle = self.handle.clone();
        let mut replies = handle
            .request(req)
            .map_err(|_| NetlinkError::ConnectionClosed)?;
        let mut out = Vec::new();
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                NetlinkPayload::Error(err) if err.code.is_some() => {
                    return Err(NetlinkError::Kernel {
                        op: op(),
                        source: err.to_io(),
                    });
                }
                NetlinkPayload::Overrun(_) => {
                    return Err(NetlinkError::Unexpected {
                        op: op(),
                        detail: "receive buffer overrun".to_owned(),
                    });
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Looks an interface up by name.
    pub async fn link(&self, name: &str) -> Result<LinkInfo, NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let replies = self
            .request(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST, || {
                format!("RTM_GETLINK {name}")
            })
            .await
            .map_err(|e| match e.errno() {
                Some(libc::ENODEV) => NetlinkError::NoSuchLink(name.to_owned()),
                _ => e,
            })?;
        replies
            .iter()
            .find_map(|r| match r {
                RouteNetlinkMessage::NewLink(link) => Some(parse_link(link)),
                _ => None,
            })
            .ok_or_else(|| NetlinkError::NoSuchLink(name.to_owned()))
    }

    async fn neighbour_entry(
        &self,
        ifindex: u32,
        ip: IpAddr,
    ) -> Result<Option<NeighEntry>, NetlinkError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family_of(ip);
        msg.header.ifindex = ifindex;
        msg.attributes
            .push(NeighbourAttribute::Destination(neigh_address(ip)));
        let replies = match self
            .request(
                RouteNetlinkMessage::GetNeighbour(msg),
                NLM_F_REQUEST,
                || format!("RTM_GETNEIGH {ip} on ifindex {ifindex}"),
            )
            .await
        {
            Ok(replies) => replies,
            Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(replies.iter().find_map(|r| match r {
            RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == ifindex => {
                parse_neighbour(n).filter(|e| e.neighbour.ip == ip)
            }
            _ => None,
        }))
    }

    /// The neighbour entry of `ip` on the interface, if the kernel has one.
    pub async fn neighbour(
        &self,
        ifindex: u32,
        ip: IpAddr,
    ) -> Result<Option<Neighbour>, NetlinkError> {
        Ok(self
            .neighbour_entry(ifindex, ip)
            .await?
            .map(|e| e.neighbour))
    }

    async fn neighbour_entries(&self, ifindex: u32) -> Result<Vec<NeighEntry>, NetlinkError> {
        let mut msg = NeighbourMessage::default();
        msg.attributes.push(NeighbourAttribute::IfIndex(ifindex));
        let replies = self
            .request(
                RouteNetlinkMessage::GetNeighbour(msg),
                NLM_F_REQUEST | NLM_F_DUMP,
                || format!("RTM_GETNEIGH dump of ifindex {ifindex}"),
            )
            .await?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == ifindex => {
                    parse_neighbour(n)
                }
                _ => None,
            })
            .collect())
    }

    /// All IPv4 and IPv6 neighbour entries of the interface.
    pub async fn neighbours(&self, ifindex: u32) -> Result<Vec<Neighbour>, NetlinkError> {
        Ok(self
            .neighbour_entries(ifindex)
            .await?
            .into_iter()
            .map(|e| e.neighbour)
            .collect())
    }

    /// Makes the kernel resolve `ip` on the interface and keep it resolved: creates a
    /// managed neighbour entry, or adds the managed flag to an existing entry without
    /// disturbing its state or MAC (see the module documentation). Returns once the kernel
    /// accepted the request, not once the neighbour is resolved.
    pub async fn resolve(&self, ifindex: u32, ip: IpAddr) -> Result<(), NetlinkError> {
        let existing = self.neighbour_entry(ifindex, ip).await?;
        self.resolve_with(ifindex, ip, existing.as_ref()).await
    }

    async fn resolve_with(
        &self,
        ifindex: u32,
        ip: IpAddr,
        existing: Option<&NeighEntry>,
    ) -> Result<(), NetlinkError> {
        if let Some(e) = existing
            && matches!(e.neighbour.state, NeighState::Permanent | NeighState::NoArp)
        {
            return Ok(());
        }
        self.use_neighbour(ifindex, ip, NeighbourExtFlags::Managed)
            .await
    }

    /// Sends `RTM_NEWNEIGH` with `NTF_USE` and the given extended flags: creates the entry if
    /// needed, keeps the state of an existing one, replaces its extended flags, and starts a
    /// probe if the entry is not valid.
    async fn use_neighbour(
        &self,
        ifindex: u32,
        ip: IpAddr,
        ext: NeighbourExtFlags,
    ) -> Result<(), NetlinkError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family_of(ip);
        msg.header.ifindex = ifindex;
        msg.header.state = NeighbourState::None;
        msg.header.flags = NeighbourFlags::Use;
        msg.attributes
            .push(NeighbourAttribute::Destination(neigh_address(ip)));
        if !ext.is_empty() {
            msg.attributes.push(NeighbourAttribute::ExtFlags(ext));
        }
        self.request(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
            || format!("RTM_NEWNEIGH {ip} on ifindex {ifindex} (use, {ext:?})"),
        )
        .await?;
        Ok(())
    }

    fn address_message(ifindex: u32, ip: IpAddr, prefix_len: u8) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = family_of(ip);
        msg.header.prefix_len = prefix_len;
        msg.header.index = ifindex;
        msg.attributes.push(AddressAttribute::Local(ip));
        msg.attributes.push(AddressAttribute::Address(ip));
        msg
    }

    /// Adds `ip/prefix_len` to the interface (a VIP is `/32` or `/128`). IPv6 addresses are
    /// added without duplicate address detection (`nodad`), so they answer neighbour
    /// solicitations at once. Returns `false` if the address was already present.
    pub async fn add_address(
        &self,
        ifindex: u32,
        ip: IpAddr,
        prefix_len: u8,
    ) -> Result<bool, NetlinkError> {
        let mut msg = Self::address_message(ifindex, ip, prefix_len);
        if ip.is_ipv6() {
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        let res = self
            .request(
                RouteNetlinkMessage::NewAddress(msg),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                || format!("RTM_NEWADDR {ip}/{prefix_len} on ifindex {ifindex}"),
            )
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes `ip/prefix_len` from the interface. Returns `false` if it was not there.
    pub async fn remove_address(
        &self,
        ifindex: u32,
        ip: IpAddr,
        prefix_len: u8,
    ) -> Result<bool, NetlinkError> {
        let msg = Self::address_message(ifindex, ip, prefix_len);
        let res = self
            .request(
                RouteNetlinkMessage::DelAddress(msg),
                NLM_F_REQUEST | NLM_F_ACK,
                || format!("RTM_DELADDR {ip}/{prefix_len} on ifindex {ifindex}"),
            )
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// What the tracker concluded from one look at an IP's neighbour entry.
#[derive(Debug, Clone)]
struct Observation {
    state: MacState,
    /// An intermediate state (resolution requested or in progress) that is not worth an
    /// event on its own.
    transient: bool,
}

impl Observation {
    fn unresolved(reason: impl Into<String>, transient: bool) -> Observation {
        Observation {
            state: MacState::Unresolved(reason.into()),
            transient,
        }
    }

    fn of_entry(n: &Neighbour) -> Observation {
        match (n.state.usable(), n.mac) {
            (true, Some(mac)) => Observation {
                state: MacState::Resolved(mac),
                transient: false,
            },
            (true, None) => Observation::unresolved(
                format!("neighbour entry has no link-layer address ({})", n.state),
                false,
            ),
            _ => match n.state {
                NeighState::Incomplete => {
                    Observation::unresolved("neighbour resolution in progress (INCOMPLETE)", true)
                }
                NeighState::None => {
                    Observation::unresolved("neighbour resolution not started (NONE)", true)
                }
                NeighState::Failed => {
                    Observation::unresolved("neighbour resolution failed (FAILED)", false)
                }
                other => Observation::unresolved(
                    format!("neighbour entry in unexpected state {other}"),
                    false,
                ),
            },
        }
    }
}

/// Per-IP bookkeeping of the tracker.
#[derive(Debug)]
struct Tracked {
    current: MacState,
    /// Last state sent as an event, `None` before the first one.
    emitted: Option<MacState>,
    /// Notification generation of the last update from a multicast notification.
    touched: u64,
    /// When the tracker last asked the kernel to resolve the IP.
    last_resolve: Option<Instant>,
}

impl Tracked {
    fn new() -> Tracked {
        Tracked {
            current: MacState::Unresolved("resolution requested".to_owned()),
            emitted: None,
            touched: 0,
            last_resolve: None,
        }
    }

    /// Records an observation; returns the state to emit if the usable MAC changed: a new
    /// or different MAC, the loss of a MAC, or the first definite failure.
    fn observe(&mut self, ip: IpAddr, obs: Observation) -> Option<MacState> {
        let emit = match (&obs.state, &self.emitted) {
            (MacState::Resolved(new), Some(MacState::Resolved(old))) => new != old,
            (MacState::Resolved(_), _) => true,
            (MacState::Unresolved(_), Some(MacState::Resolved(_))) => true,
            (MacState::Unresolved(_), None) => !obs.transient,
            (MacState::Unresolved(_), Some(MacState::Unresolved(_))) => false,
        };
        if self.current != obs.state {
            debug!(%ip, state = %obs.state, "neighbour state");
        }
        self.current = obs.state;
        if emit {
            self.emitted = Some(self.current.clone());
            return Some(self.current.clone());
        }
        None
    }
}

#[derive(Debug, Default)]
struct TrackerState {
    ips: BTreeMap<IpAddr, Tracked>,
    /// Counts applied notifications; a dump started before a notification must not
    /// overwrite what the notification said.
    generation: u64,
    /// IPs this tracker asked the kernel to manage and that are no longer tracked.
    forgotten: BTreeSet<IpAddr>,
}

/// Work for the tracker's resync task.
#[derive(Debug)]
enum Kick {
    /// Re-read the table now (new IPs, or notifications were lost).
    Sync,
    /// The entry of this IP went away or lost its managed flag: resolve it again.
    Resolve(IpAddr),
}

#[derive(Debug)]
struct Shared {
    netlink: Netlink,
    ifindex: u32,
    state: Mutex<TrackerState>,
    events: UnboundedSender<NeighEvent>,
    kick: UnboundedSender<Kick>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, TrackerState> {
        // The state stays consistent even if a holder panicked: every update is one
        // assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an observation of a tracked IP and sends the event [`Tracked::observe`]
    /// asks for.
    fn apply(&self, tracked: &mut Tracked, ip: IpAddr, obs: Observation) {
        if let Some(state) = tracked.observe(ip, obs) {
            info!(%ip, %state, ifindex = self.ifindex, "neighbour MAC changed");
            // The receiver may be gone; the tracker keeps working for `current()`.
            let _ = self.events.send(NeighEvent { ip, state });
        }
    }

    /// Handles one multicast notification.
    fn on_notification(&self, msg: NetlinkMessage<RouteNetlinkMessage>) {
        let (neigh, deleted) = match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => (n, false),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => (n, true),
            NetlinkPayload::Overrun(_) => {
                warn!("neighbour notifications lost (socket overrun), resynchronising");
                let _ = self.kick.send(Kick::Sync);
                return;
            }
            _ => return,
        };
        if neigh.header.ifindex != self.ifindex {
            return;
        }
        let Some(entry) = parse_neighbour(&neigh) else {
            return;
        };
        let ip = entry.neighbour.ip;
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(tracked) = state.ips.get_mut(&ip) else {
            return;
        };
        state.generation += 1;
        tracked.touched = state.generation;
        let (obs, reresolve) = if deleted {
            (
                Observation::unresolved("neighbour entry deleted", false),
                true,
            )
        } else {
            let n = &entry.neighbour;
            let keep_resolving =
                !entry.managed && !matches!(n.state, NeighState::Permanent | NeighState::NoArp);
            (Observation::of_entry(n), keep_resolving)
        };
        self.apply(tracked, ip, obs);
        drop(guard);
        if reresolve {
            let _ = self.kick.send(Kick::Resolve(ip));
        }
    }

    /// How long the tracker must still wait before asking again to resolve `ip`; `None` if
    /// the IP is not tracked.
    fn backoff_left(&self, ip: IpAddr) -> Option<Duration> {
        let state = self.lock();
        let tracked = state.ips.get(&ip)?;
        Some(tracked.last_resolve.map_or(Duration::ZERO, |t| {
            RESOLVE_BACKOFF.saturating_sub(t.elapsed())
        }))
    }

    /// Whether the tracker may send a resolution request for `ip` now; records it if so.
    fn may_resolve(&self, ip: IpAddr) -> bool {
        if self.backoff_left(ip) != Some(Duration::ZERO) {
            return false;
        }
        if let Some(tracked) = self.lock().ips.get_mut(&ip) {
            tracked.last_resolve = Some(Instant::now());
        }
        true
    }

    async fn resolve_one(&self, ip: IpAddr, existing: Option<&NeighEntry>) {
        if !self.may_resolve(ip) {
            return;
        }
        if let Err(e) = self.netlink.resolve_with(self.ifindex, ip, existing).await {
            warn!(%ip, error = %e, "cannot request neighbour resolution");
            let mut state = self.lock();
            if let Some(tracked) = state.ips.get_mut(&ip) {
                let obs = Observation::unresolved(format!("cannot request resolution: {e}"), false);
                self.apply(tracked, ip, obs);
            }
        }
    }

    /// Reads the whole table of the interface, updates every tracked IP not updated by a
    /// newer notification, and requests resolution where needed.
    async fn sync(&self) {
        self.unmanage_forgotten().await;
        let started = self.lock().generation;
        let entries = match self.netlink.neighbour_entries(self.ifindex).await {
            Ok(entries) => entries,
            Err(e) => {
                warn!(error = %e, ifindex = self.ifindex, "cannot dump neighbour table");
                return;
            }
        };
        let by_ip: BTreeMap<IpAddr, NeighEntry> =
            entries.into_iter().map(|e| (e.neighbour.ip, e)).collect();
        let mut to_resolve = Vec::new();
        {
            let mut state = self.lock();
            for (ip, tracked) in state.ips.iter_mut() {
                let entry = by_ip.get(ip);
                if tracked.touched <= started {
                    let obs = match entry {
                        Some(e) => Observation::of_entry(&e.neighbour),
                        None => Observation::unresolved("no neighbour entry yet", true),
                    };
                    self.apply(tracked, *ip, obs);
                }
                let needed = match entry {
                    None => true,
                    Some(e) => match e.neighbour.state {
                        NeighState::Permanent | NeighState::NoArp => false,
                        // Being resolved right now.
                        NeighState::Incomplete => !e.managed,
                        s => !e.managed || !s.usable(),
                    },
                };
                if needed {
                    to_resolve.push((*ip, entry.cloned()));
                }
            }
        }
        for (ip, entry) in to_resolve {
            self.resolve_one(ip, entry.as_ref()).await;
        }
    }

    /// Handles [`Kick::Resolve`].
    async fn reresolve(&self, ip: IpAddr) {
        // Wait out the backoff rather than dropping the request: the entry is gone now.
        match self.backoff_left(ip) {
            None => return,
            Some(left) if !left.is_zero() => tokio::time::sleep(left).await,
            Some(_) => {}
        }
        match self.netlink.neighbour_entry(self.ifindex, ip).await {
            // Already taken care of (e.g. two kicks for the same change).
            Ok(Some(e))
                if e.managed
                    && (e.neighbour.state.usable()
                        || e.neighbour.state == NeighState::Incomplete) => {}
            Ok(existing) => self.resolve_one(ip, existing.as_ref()).await,
            Err(e) => warn!(%ip, error = %e, "cannot read neighbour entry"),
        }
    }

    /// Drops the managed flag of entries this tracker asked for and no longer tracks, so
    /// the kernel stops probing former reals; the entries themselves stay and age normally.
    async fn unmanage_forgotten(&self) {
        let forgotten = std::mem::take(&mut self.lock().forgotten);
        for ip in forgotten {
            if self.lock().ips.contains_key(&ip) {
                continue;
            }
            match self.netlink.neighbour_entry(self.ifindex, ip).await {
                Ok(Some(e)) if e.managed => {
                    let res = self
                        .netlink
                        .use_neighbour(self.ifindex, ip, NeighbourExtFlags::empty())
                        .await;
                    if let Err(e) = res {
                        warn!(%ip, error = %e, "cannot stop managing neighbour entry");
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(%ip, error = %e, "cannot read neighbour entry"),
            }
        }
    }
}

/// Follows neighbour changes on one interface for a set of IPs and keeps each IP resolved.
///
/// Dropping the tracker stops its tasks (and closes the event channel).
#[derive(Debug)]
pub struct NeighbourTracker {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for NeighbourTracker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A connection subscribed to neighbour notifications: the connection future to drive,
/// its handle (kept so the connection stays open), and the notifications.
type Subscription = (
    rtnetlink::proto::Connection<RouteNetlinkMessage>,
    Handle,
    futures_util::stream::BoxStream<'static, NetlinkMessage<RouteNetlinkMessage>>,
);

/// Opens a connection subscribed to neighbour notifications.
fn subscribe() -> Result<Subscription, NetlinkError> {
    let (mut conn, handle, messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Neigh])
            .map_err(NetlinkError::Socket)?;
    if let Err(e) = conn.socket_mut().socket_mut().set_rx_buf_sz(NOTIFY_RCVBUF) {
        debug!(error = %e, "cannot enlarge neighbour notification buffer");
    }
    Ok((conn, handle, messages.map(|(m, _)| m).boxed()))
}

/// Runs the notification side of a tracker: consumes notifications, re-subscribing if the
/// socket fails.
async fn follow_notifications(shared: Arc<Shared>, first: Subscription) {
    let mut sub = Some(first);
    loop {
        let (conn, _handle, mut messages) = match sub.take() {
            Some(s) => s,
            None => match subscribe() {
                Ok(s) => {
                    // Notifications were missed while the socket was down.
                    let _ = shared.kick.send(Kick::Sync);
                    s
                }
                Err(e) => {
                    warn!(error = %e, "cannot subscribe to neighbour notifications");
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    continue;
                }
            },
        };
        let consume = async {
            while let Some(msg) = messages.next().await {
                shared.on_notification(msg);
            }
        };
        tokio::select! {
            _ = conn => {}
            _ = consume => {}
        }
        warn!("neighbour notification socket closed, re-subscribing");
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// Runs the resync side of a tracker: periodic dumps and requested work.
async fn resync_loop(shared: Arc<Shared>, mut kicks: UnboundedReceiver<Kick>) {
    let mut tick = tokio::time::interval(RESYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => shared.sync().await,
            kick = kicks.recv() => match kick {
                None => return,
                Some(Kick::Sync) => {
                    // Coalesce a burst of kicks into one dump.
                    while let Ok(Kick::Sync) = kicks.try_recv() {}
                    shared.sync().await;
                }
                Some(Kick::Resolve(ip)) => shared.reresolve(ip).await,
            },
        }
    }
}

impl NeighbourTracker {
    /// Starts tracking on `ifindex` (spawns tasks on the current runtime). Emits an event
    /// for each IP whenever its usable MAC changes (including the first resolution and
    /// loss, and the first definite failure of an IP that never resolved).
    pub async fn start(
        netlink: Netlink,
        ifindex: u32,
    ) -> Result<(NeighbourTracker, UnboundedReceiver<NeighEvent>), NetlinkError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        // Subscribe before the first dump so that no change falls in between.
        let sub = subscribe()?;
        let (events, events_rx) = mpsc::unbounded_channel();
        let (kick, kicks) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            netlink,
            ifindex,
            state: Mutex::new(TrackerState::default()),
            events,
            kick,
        });
        let tasks = vec![
            rt.spawn(follow_notifications(shared.clone(), sub)),
            rt.spawn(resync_loop(shared.clone(), kicks)),
        ];
        Ok((NeighbourTracker { shared, tasks }, events_rx))
    }

    /// Replaces the set of tracked IPs (the agent calls this on every config reload); newly
    /// tracked IPs are resolved at once. IPs no longer tracked produce no more events.
    pub fn track(&self, ips: BTreeSet<IpAddr>) {
        let mut state = self.shared.lock();
        let removed: Vec<IpAddr> = state
            .ips
            .keys()
            .filter(|ip| !ips.contains(ip))
            .copied()
            .collect();
        for ip in removed {
            if let Some(t) = state.ips.remove(&ip)
                && t.last_resolve.is_some()
            {
                state.forgotten.insert(ip);
            }
        }
        let mut added = false;
        for ip in ips {
            state.ips.entry(ip).or_insert_with(|| {
                added = true;
                Tracked::new()
            });
        }
        if added || !state.forgotten.is_empty() {
            let _ = self.shared.kick.send(Kick::Sync);
        }
    }

    /// The current view: IP -> MAC if resolved, else why not.
    pub fn current(&self) -> BTreeMap<IpAddr, MacState> {
        self.shared
            .lock()
            .ips
            .iter()
            .map(|(ip, t)| (*ip, t.current.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_and_usability() {
        assert_eq!(NeighState::from_raw(0x02), NeighState::Reachable);
        assert_eq!(NeighState::from_raw(0x20), NeighState::Failed);
        assert_eq!(NeighState::from_raw(0x03), NeighState::Other(3));
        for s in [0x02, 0x04, 0x08, 0x10, 0x40, 0x80] {
            assert!(NeighState::from_raw(s).usable(), "{s:#x}");
        }
        for s in [0x00, 0x01, 0x20, 0x03] {
            assert!(!NeighState::from_raw(s).usable(), "{s:#x}");
        }
        assert_eq!(NeighState::Failed.to_string(), "FAILED");
    }

    #[test]
    fn events_only_on_usable_mac_changes() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let n = |state, mac| Observation::of_entry(&Neighbour { ip, mac, state });
        let mac1 = [2, 0, 0, 0, 0, 1];
        let mac2 = [2, 0, 0, 0, 0, 2];
        let failed = |s: Option<MacState>| matches!(s, Some(MacState::Unresolved(r)) if r.contains("FAILED"));
        let mut t = Tracked::new();
        // In progress: no event yet.
        assert_eq!(t.observe(ip, n(NeighState::Incomplete, None)), None);
        // First resolution.
        let got = t.observe(ip, n(NeighState::Reachable, Some(mac1)));
        assert_eq!(got, Some(MacState::Resolved(mac1)));
        // Same MAC in another usable state: nothing.
        assert_eq!(t.observe(ip, n(NeighState::Stale, Some(mac1))), None);
        // New MAC.
        let got = t.observe(ip, n(NeighState::Stale, Some(mac2)));
        assert_eq!(got, Some(MacState::Resolved(mac2)));
        // Loss, then changing failure reasons without events.
        assert!(failed(t.observe(ip, n(NeighState::Failed, Some(mac2)))));
        assert_eq!(t.observe(ip, n(NeighState::Incomplete, None)), None);
        assert_eq!(t.observe(ip, n(NeighState::Failed, None)), None);
        assert!(matches!(&t.current, MacState::Unresolved(r) if r.contains("FAILED")));
        // A usable state without MAC is not a resolution.
        assert_eq!(t.observe(ip, n(NeighState::NoArp, None)), None);
        // An IP that never resolves reports its first definite failure once.
        let mut t = Tracked::new();
        let none_yet = Observation::unresolved("no neighbour entry yet", true);
        assert_eq!(t.observe(ip, none_yet), None);
        assert!(failed(t.observe(ip, n(NeighState::Failed, None))));
        assert_eq!(t.observe(ip, n(NeighState::Failed, None)), None);
    }
}
