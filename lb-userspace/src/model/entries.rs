//! Entries of the data plane's connection and persistence tables as the control plane reads
//! them (listings, recounts), in either family.

use std::net::{IpAddr, SocketAddr};

use lb_common::{Conn, Flow4Key, Flow6Key, Persist4Key, Persist6Key, Template, addr6_bytes};

/// A connection-table entry as listed: of `CONNS4` ([`Flow4Key`], the default) or of `CONNS6`
/// ([`Flow6Key`], see [`Conn6Entry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnEntry<K = Flow4Key> {
    /// The flow.
    pub key: K,
    /// Real and state.
    pub conn: Conn,
    /// Clock second of the last packet.
    pub stamp: u32,
}

/// An entry of the IPv6 connection table.
pub type Conn6Entry = ConnEntry<Flow6Key>;

/// A persistence template as listed: of `PERSIST4` ([`Persist4Key`], the default) or of
/// `PERSIST6` ([`Persist6Key`], see [`Template6Entry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateEntry<K = Persist4Key> {
    /// Service and client network.
    pub key: K,
    /// Real.
    pub template: Template,
    /// Clock second of its last use.
    pub stamp: u32,
}

/// A template of the IPv6 persistence table.
pub type Template6Entry = TemplateEntry<Persist6Key>;

/// A connection-table key of either family, as listings read it.
pub trait ListedFlow: Copy {
    /// The client's address and port.
    fn client_socket(&self) -> SocketAddr;
    /// The VIP and port.
    fn virtual_addr(&self) -> SocketAddr;
    /// The IP protocol.
    fn proto(&self) -> u8;
}

impl ListedFlow for Flow4Key {
    fn client_socket(&self) -> SocketAddr {
        socket(IpAddr::from(self.src.to_ne_bytes()), self.sport)
    }

    fn virtual_addr(&self) -> SocketAddr {
        socket(IpAddr::from(self.dst.to_ne_bytes()), self.dport)
    }

    fn proto(&self) -> u8 {
        self.proto
    }
}

impl ListedFlow for Flow6Key {
    fn client_socket(&self) -> SocketAddr {
        socket(IpAddr::from(addr6_bytes(&self.src)), self.sport)
    }

    fn virtual_addr(&self) -> SocketAddr {
        socket(IpAddr::from(addr6_bytes(&self.dst)), self.dport)
    }

    fn proto(&self) -> u8 {
        self.proto
    }
}

/// A persistence-template key of either family, as listings read it and as the table places
/// it.
pub trait PersistKey: Copy {
    /// The service id.
    fn service_id(&self) -> u32;
    /// The client network (the client address under the service's granularity).
    fn client(&self) -> IpAddr;
    /// The hash whose low bits pick the key's set in its persistence table.
    fn table_hash(&self) -> u32;
}

impl PersistKey for Persist4Key {
    fn service_id(&self) -> u32 {
        self.service_id
    }

    fn table_hash(&self) -> u32 {
        self.hash()
    }

    fn client(&self) -> IpAddr {
        IpAddr::from(self.client.to_ne_bytes())
    }
}

impl PersistKey for Persist6Key {
    fn service_id(&self) -> u32 {
        self.service_id
    }

    fn table_hash(&self) -> u32 {
        self.hash()
    }

    fn client(&self) -> IpAddr {
        IpAddr::from(addr6_bytes(&self.client))
    }
}

/// An address and a network-order port.
fn socket(addr: IpAddr, port_be: u16) -> SocketAddr {
    SocketAddr::new(addr, u16::from_be(port_be))
}
