//! The checkers a configuration asks for: one [`CheckSpec`] per real with a check, with
//! keepalived's defaults and inheritance (the virtual server's `delay_loop`, `alpha` and
//! `warmup`; `connect_ip`/`connect_port` over the real's address; a source port alone binding
//! to the unspecified address of the target's family).

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::{CheckSpec, Probe, Timing};
use crate::config::{Checker, Config};

/// The checkers the configuration asks for, one per real with a check.
pub fn check_specs(config: &Config) -> Vec<CheckSpec> {
    let mut specs = Vec::new();
    for vs in &config.virtual_servers {
        for rs in &vs.real_servers {
            let Some(check) = &rs.check else { continue };
            // A source port alone binds to the unspecified address of the target's family.
            let bind = |target: IpAddr, ip: Option<IpAddr>, port: Option<u16>| {
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
            };
            let key = (vs.key, rs.key);
            let spec = match check {
                Checker::Tcp(c) => CheckSpec {
                    key,
                    probe: Probe::Tcp {
                        target: SocketAddr::new(
                            c.connect_ip.unwrap_or(rs.key.addr),
                            c.connect_port.unwrap_or(rs.key.port),
                        ),
                        bind: bind(c.connect_ip.unwrap_or(rs.key.addr), c.bindto, c.bind_port),
                    },
                    timing: Timing {
                        delay_loop: vs.delay_loop,
                        retry: c.timing.retry,
                        delay_before_retry: c.timing.delay_before_retry,
                        connect_timeout: c.timing.connect_timeout,
                    },
                    alpha: vs.alpha,
                    warmup: c.timing.warmup.or(vs.warmup),
                },
                Checker::Http(c) => CheckSpec {
                    key,
                    probe: Probe::Http {
                        target: SocketAddr::new(
                            c.connect_ip.unwrap_or(rs.key.addr),
                            c.connect_port.unwrap_or(rs.key.port),
                        ),
                        bind: bind(c.connect_ip.unwrap_or(rs.key.addr), c.bindto, c.bind_port),
                        urls: c
                            .urls
                            .iter()
                            .map(|u| (u.path.clone(), u.status_code))
                            .collect(),
                    },
                    timing: Timing {
                        delay_loop: vs.delay_loop,
                        retry: c.timing.retry,
                        delay_before_retry: c.timing.delay_before_retry,
                        connect_timeout: c.timing.connect_timeout,
                    },
                    alpha: vs.alpha,
                    warmup: c.timing.warmup.or(vs.warmup),
                },
                // MISC_CHECK has no retries: the script decides at once.
                Checker::Misc(c) => CheckSpec {
                    key,
                    probe: Probe::Misc {
                        command: c.misc_path.clone(),
                        timeout: c.misc_timeout,
                    },
                    timing: Timing {
                        delay_loop: vs.delay_loop,
                        retry: 0,
                        delay_before_retry: Duration::from_secs(1),
                        connect_timeout: c.misc_timeout,
                    },
                    alpha: vs.alpha,
                    warmup: c.warmup.or(vs.warmup),
                },
            };
            specs.push(spec);
        }
    }
    specs
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
