//! The argument parsers: services, real servers, clients, schedulers, persistence timeouts and
//! weights, each refusing bad text with a usage error.

use std::{
    net::{IpAddr, SocketAddr, ToSocketAddrs as _},
    str::FromStr as _,
};

use lb_userspace::{
    config::LbAlgo,
    model::{Protocol, RealKey, ServiceKey, Thresholds},
    observe::ipvsadm::Services,
};

use super::plan::Failure;

/// ipvsadm's longest persistence timeout (31 days).
const MAX_PERSISTENCE: u32 = 86_400 * 31;

/// Splits `host[:port]` / `[v6][:port]` / bare IPv6 into host and optional port text.
fn split_host_port(text: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        // Brackets are for IPv6 only, as with ipvsadm.
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some((text, None));
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((text, None)),
    }
}

/// An address: a literal, else a host name (first address, IPv4 preferred, as ipvsadm).
fn resolve_host(host: &str) -> Option<IpAddr> {
    if host.is_empty() {
        return None;
    }
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    // Only plausible host names go to the resolver: not mistyped addresses.
    let name_like = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let numeric_like = host.chars().all(|c| c.is_ascii_digit() || c == '.');
    if !name_like || numeric_like {
        return None;
    }
    let addrs: Vec<IpAddr> = (host, 0).to_socket_addrs().ok()?.map(|a| a.ip()).collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
}

/// A port: a number, or a service name from /etc/services for `proto`.
fn parse_port(text: &str, proto: Protocol, services: &Services) -> Option<u16> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    services.port(text, proto)
}

/// `-t/-u VIP:PORT`.
pub(super) fn parse_service(
    text: &str,
    proto: Protocol,
    services: &Services,
) -> Result<ServiceKey, Failure> {
    let flag = match proto {
        Protocol::Tcp => "-t",
        Protocol::Udp => "-u",
    };
    let bad = |why: &str| {
        Failure::usage(format!(
            "illegal virtual service `{text}` for {flag}: {why}"
        ))
    };
    let (host, port) =
        split_host_port(text).ok_or_else(|| bad("expected VIP:PORT, [VIP6]:PORT for IPv6"))?;
    let vip = resolve_host(host).ok_or_else(|| bad("not an IP address or a known host name"))?;
    let port = port.ok_or_else(|| bad("the port is missing (VIP:PORT)"))?;
    let port = parse_port(port, proto, services)
        .ok_or_else(|| bad("the port is not a number from 1 to 65535 or a service name"))?;
    if port == 0 {
        return Err(bad("port 0 is not allowed"));
    }
    if vip.is_unspecified() || vip.is_multicast() {
        return Err(bad("the VIP must be a unicast address"));
    }
    Ok(ServiceKey { vip, port, proto })
}

/// `-r RIP[:PORT]`: the port defaults to the service's, and is the service's in any case
/// (direct routing cannot change ports; ipvsadm silently does the same). A different port
/// gives a warning.
pub(super) fn parse_real(
    text: &str,
    service: &ServiceKey,
    services: &Services,
) -> Result<(RealKey, Option<String>), Failure> {
    let bad = |why: &str| Failure::usage(format!("illegal real server `{text}` for -r: {why}"));
    let (host, port) = split_host_port(text).ok_or_else(|| bad("expected RIP[:PORT]"))?;
    let addr = resolve_host(host).ok_or_else(|| bad("not an IP address or a known host name"))?;
    if addr.is_ipv4() != service.vip.is_ipv4() {
        return Err(bad(&format!(
            "its address family differs from the service's ({})",
            service.vip
        )));
    }
    if addr.is_unspecified() || addr.is_multicast() {
        return Err(bad("the address must be unicast"));
    }
    let mut warning = None;
    if let Some(port) = port {
        let port = parse_port(port, service.proto, services)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535 or a service name"))?;
        if port == 0 {
            return Err(bad("port 0 is not allowed"));
        }
        if port != service.port {
            warning = Some(format!(
                "real server port {port} ignored: direct routing uses the service port {}",
                service.port
            ));
        }
    }
    let real = RealKey {
        addr,
        port: service.port,
    };
    Ok((real, warning))
}

/// `--client IP:PORT`.
pub(super) fn parse_client(text: &str) -> Result<SocketAddr, Failure> {
    let client: SocketAddr = text.parse().map_err(|_| {
        Failure::usage(format!(
            "illegal client `{text}` for --client: expected IP:PORT, [IP6]:PORT for IPv6"
        ))
    })?;
    if client.port() == 0 {
        return Err(Failure::usage(format!(
            "illegal client `{text}` for --client: port 0 is not allowed"
        )));
    }
    Ok(client)
}

/// `-s`: a scheduler this balancer serves, by its IPVS name.
pub(super) fn parse_scheduler(text: &str) -> Result<String, Failure> {
    let algo = LbAlgo::from_str(text)
        .map_err(|e| Failure::usage(format!("illegal scheduler for -s: {e}")))?;
    if !algo.supported() {
        let served: Vec<&str> = LbAlgo::ALL
            .iter()
            .filter(|a| a.supported())
            .map(|a| a.name())
            .collect();
        return Err(Failure::usage(format!(
            "illegal scheduler for -s: {} is not supported; use {}",
            algo.name(),
            served.join(", ")
        )));
    }
    Ok(algo.name().to_owned())
}

/// `-p [TIMEOUT]`: 1 second to 31 days.
pub(super) fn parse_persistence(text: &str) -> Result<u32, Failure> {
    text.parse::<u32>()
        .ok()
        .filter(|t| (1..=MAX_PERSISTENCE).contains(t))
        .ok_or_else(|| {
            Failure::usage(format!(
                "illegal persistence timeout `{text}` for -p: must be 1 to {MAX_PERSISTENCE} seconds"
            ))
        })
}

/// `-b SCHED-FLAGS` (comma-separated, as ipvsadm takes them) and `-o`: the service's
/// `lb_flags`. Whether a flag fits the scheduler is the agent's check (the configuration's).
pub(super) fn parse_sched_flags(text: Option<&str>, ops: bool) -> Result<Vec<String>, Failure> {
    const KNOWN: [&str; 4] = ["sh-fallback", "sh-port", "mh-fallback", "mh-port"];
    let mut flags = Vec::new();
    for word in text
        .unwrap_or_default()
        .split(',')
        .filter(|w| !w.is_empty())
    {
        if !KNOWN.contains(&word) {
            return Err(Failure::usage(format!(
                "unknown scheduler flag `{word}` for -b: use sh-fallback, sh-port, \
                 mh-fallback or mh-port"
            )));
        }
        if !flags.iter().any(|f| f == word) {
            flags.push(word.to_owned());
        }
    }
    if ops {
        flags.push("ops".to_owned());
    }
    Ok(flags)
}

/// `-x UTHRESHOLD` and `-y LTHRESHOLD` (either may be absent, as 0 = none), as ipvsadm takes
/// them: 0 to 2147483647; the lower one needs an upper one at least as large.
pub(super) fn parse_thresholds(
    upper: Option<&str>,
    lower: Option<&str>,
) -> Result<Thresholds, Failure> {
    let one = |text: Option<&str>, flag: &str, name: &str| -> Result<u32, Failure> {
        let Some(text) = text else { return Ok(0) };
        text.parse::<u32>()
            .ok()
            .filter(|v| *v <= Thresholds::MAX)
            .ok_or_else(|| {
                Failure::usage(format!(
                    "illegal {name} `{text}` for {flag}: must be an integer from 0 to {}",
                    Thresholds::MAX
                ))
            })
    };
    let upper = one(upper, "-x", "upper threshold")?;
    let lower = one(lower, "-y", "lower threshold")?;
    if lower > 0 && upper == 0 {
        return Err(Failure::usage(format!(
            "lower threshold {lower} (-y) needs an upper threshold (-x)"
        )));
    }
    if lower > upper {
        return Err(Failure::usage(format!(
            "lower threshold {lower} (-y) is above the upper threshold {upper} (-x)"
        )));
    }
    Ok(Thresholds { upper, lower })
}

/// `-w WEIGHT`: 0 to 65535.
pub(super) fn parse_weight(text: &str) -> Result<u32, Failure> {
    text.parse::<u32>()
        .ok()
        .filter(|w| *w <= 65_535)
        .ok_or_else(|| {
            Failure::usage(format!(
                "illegal weight `{text}` for -w: must be an integer from 0 to 65535"
            ))
        })
}
