//! The VIP addresses the agent adds to and removes from its interface (`manage_vip`).

use std::{collections::BTreeSet, net::IpAddr};

use tracing::{error, info};

use super::Agent;

impl Agent {
    /// Adds or removes VIP addresses on the interface when `manage_vip` is on.
    pub(super) async fn update_vips(&mut self) {
        let wanted: BTreeSet<IpAddr> = if self.config.manage_vip {
            self.config
                .virtual_servers
                .iter()
                .map(|vs| vs.key.vip)
                .collect()
        } else {
            BTreeSet::new()
        };
        for vip in wanted.difference(&self.added_vips.clone()) {
            match self
                .netlink
                .add_address(self.ifindex, *vip, host_prefix(*vip))
                .await
            {
                Ok(true) => {
                    info!(%vip, interface = %self.config.interface, "added the VIP address");
                    self.added_vips.insert(*vip);
                }
                Ok(false) => info!(%vip, "the VIP address was already present; leaving it alone"),
                Err(e) => error!(%vip, "adding the VIP address failed: {e}"),
            }
        }
        for vip in self.added_vips.clone().difference(&wanted) {
            self.remove_vip(*vip).await;
        }
    }

    pub(super) async fn remove_vip(&mut self, vip: IpAddr) {
        match self
            .netlink
            .remove_address(self.ifindex, vip, host_prefix(vip))
            .await
        {
            Ok(_) => info!(%vip, "removed the VIP address"),
            Err(e) => error!(%vip, "removing the VIP address failed: {e}"),
        }
        self.added_vips.remove(&vip);
    }
}

/// The prefix length of a single address of `ip`'s family.
fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vips_are_host_addresses() {
        assert_eq!(host_prefix("2001:db8::10".parse().unwrap()), 128);
        assert_eq!(host_prefix("192.168.0.10".parse().unwrap()), 32);
    }
}
