//! Neighbour entries and the decoding of rtnetlink neighbour and link messages.

use std::{fmt, net::IpAddr};

use rtnetlink::packet_route::{
    AddressFamily,
    link::{LinkAttribute, LinkFlags, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage},
};

use super::LinkInfo;

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
pub(super) struct NeighEntry {
    pub(super) neighbour: Neighbour,
    pub(super) managed: bool,
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

pub(super) fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

pub(super) fn neigh_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

fn mac_of(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

/// Decodes an IPv4/IPv6 neighbour message; `None` for other families or without address.
pub(super) fn parse_neighbour(msg: &NeighbourMessage) -> Option<NeighEntry> {
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

pub(super) fn parse_link(msg: &LinkMessage) -> LinkInfo {
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
}
