//! The checkers a configuration asks for: one [`CheckSpec`] per real with a check (a
//! `tcp_check` half-open through the VIP unless told or unable, see
//! [`crate::config::TcpProbe`]), with keepalived's defaults and inheritance (the virtual server's `delay_loop`, `alpha` and
//! `warmup`; `connect_ip`/`connect_port` over the real's address; a source port alone binding
//! to the unspecified address of the target's family).

use std::{
    net::{IpAddr, SocketAddr, SocketAddrV4},
    time::Duration,
};

use super::{CheckSpec, Probe, Timing};
use crate::config::{CheckTiming, Checker, Config, TcpCheck, TcpProbe};

/// The checkers the configuration asks for, one per real with a check.
pub fn check_specs(config: &Config) -> Vec<CheckSpec> {
    let mut specs = Vec::new();
    for vs in &config.virtual_servers {
        for rs in &vs.real_servers {
            let Some(check) = &rs.check else { continue };
            // Where a TCP or HTTP check connects (connect_ip/connect_port over the real's
            // address) and from where.
            let endpoint = |ip: Option<IpAddr>, port: Option<u16>, from, from_port| {
                let target =
                    SocketAddr::new(ip.unwrap_or(rs.key.addr), port.unwrap_or(rs.key.port));
                (target, bind(target.ip(), from, from_port))
            };
            let timing = |t: &CheckTiming| Timing {
                delay_loop: vs.delay_loop,
                retry: t.retry,
                delay_before_retry: t.delay_before_retry,
                connect_timeout: t.connect_timeout,
            };
            let (probe, timing, warmup) = match check {
                Checker::Tcp(c) => {
                    let (target, bind) =
                        endpoint(c.connect_ip, c.connect_port, c.bindto, c.bind_port);
                    let port = target.port();
                    let probe = match (tcp_probe(c, rs.key.addr), rs.key.addr, vs.key.vip) {
                        (TcpProbe::Vip, IpAddr::V4(real), IpAddr::V4(vip)) => Probe::Syn {
                            target: SocketAddrV4::new(vip, port),
                            real,
                        },
                        (TcpProbe::Syn, IpAddr::V4(real), _) => Probe::Syn {
                            target: SocketAddrV4::new(real, port),
                            real,
                        },
                        _ => Probe::Tcp { target, bind },
                    };
                    (probe, timing(&c.timing), c.timing.warmup)
                }
                Checker::Http(c) => {
                    let (target, bind) =
                        endpoint(c.connect_ip, c.connect_port, c.bindto, c.bind_port);
                    let urls = c
                        .urls
                        .iter()
                        .map(|u| (u.path.clone(), u.status_code))
                        .collect();
                    (
                        Probe::Http { target, bind, urls },
                        timing(&c.timing),
                        c.timing.warmup,
                    )
                }
                // MISC_CHECK has no retries: the script decides at once.
                Checker::Misc(c) => (
                    Probe::Misc {
                        command: c.misc_path.clone(),
                        timeout: c.misc_timeout,
                    },
                    Timing {
                        delay_loop: vs.delay_loop,
                        retry: 0,
                        delay_before_retry: Duration::from_secs(1),
                        connect_timeout: c.misc_timeout,
                    },
                    c.warmup,
                ),
            };
            specs.push(CheckSpec {
                key: (vs.key, rs.key),
                probe,
                timing,
                alpha: vs.alpha,
                warmup: warmup.or(vs.warmup),
            });
        }
    }
    specs
}

/// How a `tcp_check` probes: as configured, else half-open through the VIP where that can be
/// done (see [`TcpProbe`]), else a connect.
fn tcp_probe(c: &TcpCheck, real: IpAddr) -> TcpProbe {
    let own_path = c.connect_ip.is_some() || c.bindto.is_some() || c.bind_port.is_some();
    c.probe.unwrap_or(if real.is_ipv4() && !own_path {
        TcpProbe::Vip
    } else {
        TcpProbe::Connect
    })
}

/// The source address of a probe to `target`: `bindto` and/or `bind_port`; a source port
/// alone binds to the unspecified address of the target's family.
fn bind(target: IpAddr, ip: Option<IpAddr>, port: Option<u16>) -> Option<SocketAddr> {
    let unspecified = if target.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    };
    match (ip, port) {
        (None, None) => None,
        (ip, port) => Some(SocketAddr::new(
            ip.unwrap_or(unspecified),
            port.unwrap_or(0),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const DUAL: &str = "
interface: eth0
virtual_servers:
  - vip: 192.168.0.10
    port: 80
    lb_kind: dr
    real_servers:
      - ip: 192.168.0.2
        tcp_check: { bind_port: 1053 }
  - vip: 2001:db8::10
    port: 443
    lb_kind: dr
    real_servers:
      - ip: 2001:db8::2
        tcp_check: { bind_port: 1053 }
      - ip: 2001:db8::3
        http_get:
          url: { path: /healthz }
          connect_ip: 2001:db8:1::3
          bindto: 2001:db8:1::1
      - ip: 2001:db8::4
        misc_check: { misc_path: 'curl -6 -sf http://[2001:db8::4]/' }
";

    fn socket(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_reals_get_ipv6_probes() {
        let config = Config::from_yaml(DUAL, Path::new("dual.yaml")).unwrap();
        let probes: Vec<Probe> = check_specs(&config).into_iter().map(|s| s.probe).collect();
        assert_eq!(
            probes,
            [
                Probe::Tcp {
                    target: socket("192.168.0.2:80"),
                    bind: Some(socket("0.0.0.0:1053")),
                },
                Probe::Tcp {
                    target: socket("[2001:db8::2]:443"),
                    bind: Some(socket("[::]:1053")),
                },
                Probe::Http {
                    target: socket("[2001:db8:1::3]:443"),
                    bind: Some(socket("[2001:db8:1::1]:0")),
                    urls: vec![("/healthz".into(), 200)],
                },
                Probe::Misc {
                    command: "curl -6 -sf http://[2001:db8::4]/".into(),
                    timeout: Duration::from_secs(60),
                },
            ]
        );
    }
}
