//! The standard LVS-DR test network: a client, a director and real servers on one bridge, the
//! VIP on the reals' `lo` with ARP suppressed, the client routing the VIP via the director.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result};
use lb_userspace::dataplane::{AttachMode, Dataplane, LoadOptions};

use crate::netns::{Host, Lan};

/// A DR topology in subnet `10.<net>.0.0/24`: client .1, director .2, reals .11 and up, VIP .100.
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
    /// An XDP program with no services on the director's switch port: native XDP_TX on a
    /// veth is only delivered when the peer runs XDP.
    _peer_xdp: Dataplane,
}

impl DrTopology {
    /// Builds the network with `reals` real servers.
    pub fn new(net: u8, reals: usize) -> Result<Self> {
        let lan = Lan::new()?;
        let addr = |last: u8| format!("10.{net}.0.{last}/24");
        let client = lan.add_host("client", &addr(1))?;
        let director = lan.add_host("dir", &addr(2))?;
        let vip = Ipv4Addr::new(10, net, 0, 100);
        let mut hosts = Vec::new();
        for i in 0..reals {
            let real = lan.add_host(&format!("real{}", i + 1), &addr(11 + i as u8))?;
            real.add_vip_on_lo(vip)?;
            hosts.push(real);
        }
        client.route_via(vip, director.ip)?;
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
            _peer_xdp: peer,
        })
    }

    /// Adds another real server host (VIP on `lo`) at `.last`.
    pub fn add_real(&mut self, last: u8) -> Result<&Host> {
        let net = self.vip.octets()[1];
        let real = self.lan.add_host(
            &format!("real{}", self.reals.len() + 1),
            &format!("10.{net}.0.{last}/24"),
        )?;
        real.add_vip_on_lo(self.vip)?;
        self.reals.push(real);
        Ok(self.reals.last().expect("just pushed"))
    }
}
