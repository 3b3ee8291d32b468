//! The checkers a configuration asks for: one [`CheckSpec`] per real with a check, with
//! keepalived's defaults and inheritance (the virtual server's `delay_loop`, `alpha` and
//! `warmup`; `connect_ip`/`connect_port` over the real's address; a source port alone binding
//! to the unspecified address of the target's family). An `amqp_check`'s `password_file` is
//! named, not read: [`amqp::read_password_files`] reads it.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::{CheckSpec, Probe, Timing, amqp};
use crate::config::{CheckTiming, Checker, Config};

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
                    (
                        Probe::Tcp { target, bind },
                        timing(&c.timing),
                        c.timing.warmup,
                    )
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
                Checker::Amqp(c) => {
                    let (target, bind) =
                        endpoint(c.connect_ip, c.connect_port, c.bindto, c.bind_port);
                    let login = c.login.as_ref().map(amqp::Login::from);
                    (
                        Probe::Amqp {
                            target,
                            bind,
                            login,
                        },
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

    #[test]
    fn amqp_checks_carry_their_login_and_name_their_password_file() {
        let yaml = "
interface: eth0
virtual_servers:
  - vip: 192.168.0.10
    port: 5672
    lb_kind: dr
    real_servers:
      - ip: 192.168.0.2
        amqp_check: { connect_timeout: 3, bind_port: 1056 }
      - ip: 192.168.0.3
        amqp_check:
          connect_port: 5673
          login: true
          user: lb-health
          password_file: /etc/lb-xdp/amqp.password
          vhost: /shop
          alarm: true
";
        let config = Config::from_yaml(yaml, Path::new("amqp.yaml")).unwrap();
        let specs = check_specs(&config);
        let probes: Vec<&Probe> = specs.iter().map(|s| &s.probe).collect();
        assert_eq!(
            probes,
            [
                &Probe::Amqp {
                    target: socket("192.168.0.2:5672"),
                    bind: Some(socket("0.0.0.0:1056")),
                    login: None,
                },
                &Probe::Amqp {
                    target: socket("192.168.0.3:5673"),
                    bind: None,
                    login: Some(amqp::Login {
                        user: "lb-health".into(),
                        password: amqp::Password::File("/etc/lb-xdp/amqp.password".into(), None),
                        vhost: "/shop".into(),
                        alarm: true,
                    }),
                },
            ]
        );
        assert_eq!(specs[0].probe.kind(), "amqp_check");
        assert_eq!(specs[0].timing.connect_timeout, Duration::from_secs(3));
        assert_eq!(specs[1].timing.delay_loop, Duration::from_secs(60));
    }
}
