//! The standard LVS-DR test network: a client, a director and real servers on one bridge, the
//! VIP on the reals' `lo` with ARP suppressed, the client routing the VIP via the director.
//! Dual-stack topologies add the same over IPv6.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result};
use lb_userspace::{
    dataplane::{Dataplane, LoadOptions},
    model::AttachMode,
};

use crate::netns::{Host, Lan};

/// A DR topology in subnet `10.<net>.0.0/24`: client .1, director .2, reals .11 and up, VIP
/// .100. A dual-stack topology ([`DrTopology::dual_stack`]) also has `fd00:<net>::/64` with the
/// same host numbers (the client `fd00:<net>::1`, the IPv6 VIP `fd00:<net>::100`).
pub struct DrTopology {
    /// The bridge.
    pub lan: Lan,
    /// The client.
    pub client: Host,
    /// The director (the agent runs in its namespace).
    pub director: Host,
    /// The real servers, VIP on `lo`.
    pub reals: Vec<Host>,
    /// The VIP.
    pub vip: Ipv4Addr,
    /// The IPv6 VIP (dual-stack topologies only).
    pub vip6: Option<Ipv6Addr>,
    /// An XDP program with no services on the director's switch port: native XDP_TX on a
    /// veth is only delivered when the peer runs XDP.
    _peer_xdp: Dataplane,
}

/// `fd00:<net>::<last>`, the digits of both read as hexadecimal (`fd00:70::11`).
pub fn ula(net: u8, last: u16) -> Ipv6Addr {
    format!("fd00:{net}::{last}")
        .parse()
        .expect("a valid IPv6 address")
}

impl DrTopology {
    /// Builds the network with `reals` real servers.
    pub fn new(net: u8, reals: usize) -> Result<Self> {
        Self::build(net, reals, false)
    }

    /// Builds the network with `reals` real servers, over IPv4 and IPv6: every host also has
    /// `fd00:<net>::<n>/64` (usable at once: no duplicate address detection), the reals hold
    /// the IPv6 VIP on `lo` as a /128, and the client routes it via the director.
    pub fn dual_stack(net: u8, reals: usize) -> Result<Self> {
        Self::build(net, reals, true)
    }

    fn build(net: u8, reals: usize, dual: bool) -> Result<Self> {
        let lan = Lan::new()?;
        let add = |role: &str, last: u8| {
            let v4 = format!("10.{net}.0.{last}/24");
            if dual {
                lan.add_dual_host(role, &v4, &format!("{}/64", ula(net, last.into())))
            } else {
                lan.add_host(role, &v4)
            }
        };
        let client = add("client", 1)?;
        let director = add("dir", 2)?;
        let vip = Ipv4Addr::new(10, net, 0, 100);
        let vip6 = dual.then(|| ula(net, 100));
        let mut hosts = Vec::new();
        for i in 0..reals {
            let real = add(&format!("real{}", i + 1), 11 + i as u8)?;
            real.add_vip_on_lo(vip)?;
            if let Some(vip6) = vip6 {
                real.add_vip6_on_lo(vip6)?;
            }
            hosts.push(real);
        }
        client.route_via(vip, director.ip)?;
        if let (Some(vip6), Some(dir6)) = (vip6, director.ip6) {
            client.route6_via(vip6, dir6)?;
        }
        let mut peer = Dataplane::load(&LoadOptions::default()).context("pass program")?;
        let port = director.switch_port.clone();
        lan.switch()
            .enter(|| peer.attach(&port, AttachMode::Driver))
            .context("XDP on the director's switch port")?;
        Ok(Self {
            lan,
            client,
            director,
            reals: hosts,
            vip,
            vip6,
            _peer_xdp: peer,
        })
    }

    /// Adds another real server host (VIP on `lo`) at `.last`.
    pub fn add_real(&mut self, last: u8) -> Result<&Host> {
        let net = self.vip.octets()[1];
        let role = format!("real{}", self.reals.len() + 1);
        let v4 = format!("10.{net}.0.{last}/24");
        let real = match self.vip6 {
            Some(_) => {
                self.lan
                    .add_dual_host(&role, &v4, &format!("{}/64", ula(net, last.into())))?
            }
            None => self.lan.add_host(&role, &v4)?,
        };
        real.add_vip_on_lo(self.vip)?;
        if let Some(vip6) = self.vip6 {
            real.add_vip6_on_lo(vip6)?;
        }
        self.reals.push(real);
        Ok(self.reals.last().expect("just pushed"))
    }
}
