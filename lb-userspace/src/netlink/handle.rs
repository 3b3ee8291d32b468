//! The rtnetlink handle: interfaces, addresses, neighbour queries and resolution requests.

use std::net::IpAddr;

use futures_util::StreamExt;
use rtnetlink::{
    Handle,
    packet_core::{
        NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage,
        NetlinkPayload,
    },
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressFlags, AddressMessage},
        link::{LinkAttribute, LinkMessage},
        neighbour::{
            NeighbourAttribute, NeighbourExtFlags, NeighbourFlags, NeighbourMessage, NeighbourState,
        },
    },
};

use super::{
    LinkInfo, NetlinkError,
    neighbour::{
        NeighEntry, NeighState, Neighbour, family_of, neigh_address, parse_link, parse_neighbour,
    },
};

/// An rtnetlink connection in the current network namespace. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
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

    pub(super) async fn neighbour_entry(
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

    pub(super) async fn neighbour_entries(
        &self,
        ifindex: u32,
    ) -> Result<Vec<NeighEntry>, NetlinkError> {
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
    /// disturbing its state or MAC (see the [module documentation](super)). Returns once the kernel
    /// accepted the request, not once the neighbour is resolved.
    pub async fn resolve(&self, ifindex: u32, ip: IpAddr) -> Result<(), NetlinkError> {
        let existing = self.neighbour_entry(ifindex, ip).await?;
        self.resolve_with(ifindex, ip, existing.as_ref()).await
    }

    pub(super) async fn resolve_with(
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
    pub(super) async fn use_neighbour(
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
