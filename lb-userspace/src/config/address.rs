//! What an address may stand for: the predicates shared by the checks of VIPs, reals, sorry
//! servers and health-check endpoints.

use std::net::{IpAddr, Ipv4Addr};

/// The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`).
pub fn ipv4_mapped(addr: IpAddr) -> Option<Ipv4Addr> {
    match addr {
        IpAddr::V6(a) => a.to_ipv4_mapped(),
        IpAddr::V4(_) => None,
    }
}

/// Whether `addr` cannot be the address of a host: unspecified, loopback, multicast or
/// broadcast.
pub fn not_a_host(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast()
        }
        IpAddr::V6(a) => a.is_unspecified() || a.is_loopback() || a.is_multicast(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_mapped_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for no in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.81",
            "255.255.255.255",
            "::",
            "::1",
            "ff02::1",
        ] {
            assert!(not_a_host(ip(no)), "{no}");
        }
        for yes in ["10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1"] {
            assert!(!not_a_host(ip(yes)), "{yes}");
        }
        assert_eq!(
            ipv4_mapped(ip("::ffff:10.0.0.1")),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(ipv4_mapped(ip("2001:db8::1")), None);
        assert_eq!(ipv4_mapped(ip("10.0.0.1")), None);
    }
}
