//! Run-time edits (`lbadm -A/-E/-D/-a/-e/-d`, ipvsadm's commands).
//!
//! An edit is applied to the running configuration's YAML and the result goes through the same
//! parser and validator as a configuration file, so an edit is checked exactly like a reload
//! (and gets keepalived's defaults for everything it does not say). The agent then installs it
//! like a reload. A later SIGHUP re-reads the file; `lbadm -S` saves the running configuration.

use std::{net::IpAddr, path::Path};

use serde_yaml::{Mapping, Value};
use thiserror::Error;

use crate::{
    config::Config,
    control::Edit,
    model::{RealKey, ServiceKey, Thresholds},
};

/// Why an edit was refused; nothing changed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EditError {
    /// `-A` of an existing service.
    #[error("{0}: service already exists")]
    ServiceExists(ServiceKey),
    /// A service that is not configured.
    #[error("{0}: no such service")]
    NoService(ServiceKey),
    /// `-a` of an existing real.
    #[error("{1} in {0}: real server already exists")]
    RealExists(ServiceKey, RealKey),
    /// A real that is not in the service.
    #[error("{1} in {0}: no such real server")]
    NoReal(ServiceKey, RealKey),
    /// A service of a group: its members are one item of the file.
    #[error("{0} is a member of group {1}: edit the group in the configuration file")]
    GroupMember(ServiceKey, String),
    /// The edited configuration does not validate.
    #[error("{0}")]
    Invalid(String),
}

/// The configuration after `edit`, validated.
pub fn apply(config: &Config, edit: &Edit) -> Result<Config, EditError> {
    let target = match edit {
        Edit::AddService { key, .. }
        | Edit::EditService { key, .. }
        | Edit::DeleteService { key } => key,
        Edit::AddReal { service, .. }
        | Edit::EditReal { service, .. }
        | Edit::DeleteReal { service, .. } => service,
    };
    if let Some(g) = config
        .virtual_server(target)
        .and_then(|vs| vs.group.as_ref())
    {
        return Err(EditError::GroupMember(*target, g.name.clone()));
    }
    let mut doc: Value =
        serde_yaml::from_str(&config.to_yaml()).expect("the running configuration is valid YAML");
    let services = doc
        .get_mut("virtual_servers")
        .and_then(Value::as_sequence_mut)
        .expect("to_yaml always writes virtual_servers");
    let position = |services: &[Value], key: &ServiceKey| {
        services.iter().position(|s| service_key(s) == Some(*key))
    };
    match edit {
        Edit::AddService {
            key,
            scheduler,
            persistence,
            flags,
        } => {
            if position(services, key).is_some() {
                return Err(EditError::ServiceExists(*key));
            }
            let mut m = Mapping::new();
            m.insert("vip".into(), key.vip.to_string().into());
            m.insert("port".into(), key.port.into());
            m.insert(
                "protocol".into(),
                key.proto.name().to_ascii_lowercase().into(),
            );
            // Without -s, ipvsadm's default scheduler (wlc) applies, as in the file.
            if let Some(s) = scheduler {
                m.insert("lb_algo".into(), s.as_str().into());
            }
            m.insert("lb_kind".into(), "dr".into());
            if let Some(t) = persistence {
                m.insert("persistence_timeout".into(), (*t).into());
            }
            if let Some(f) = flags {
                set_flags(&mut m, f);
            }
            m.insert("real_servers".into(), Value::Sequence(Vec::new()));
            services.push(Value::Mapping(m));
        }
        Edit::EditService {
            key,
            scheduler,
            persistence,
            flags,
        } => {
            let i = position(services, key).ok_or(EditError::NoService(*key))?;
            let m = services[i]
                .as_mapping_mut()
                .expect("a service is a mapping");
            if let Some(s) = scheduler {
                m.insert("lb_algo".into(), s.as_str().into());
            }
            match persistence {
                Some(Some(t)) => {
                    m.insert("persistence_timeout".into(), (*t).into());
                }
                Some(None) => {
                    m.remove("persistence_timeout");
                    m.remove("persistence_granularity");
                }
                None => {}
            }
            if let Some(f) = flags {
                set_flags(m, f);
            }
        }
        Edit::DeleteService { key } => {
            let i = position(services, key).ok_or(EditError::NoService(*key))?;
            services.remove(i);
        }
        Edit::AddReal {
            service,
            real,
            weight,
            thresholds,
        } => {
            let reals = reals_of(services, service)?;
            if reals.iter().any(|r| real_key(r) == Some(*real)) {
                return Err(EditError::RealExists(*service, *real));
            }
            let mut m = Mapping::new();
            m.insert("ip".into(), real.addr.to_string().into());
            m.insert("port".into(), real.port.into());
            m.insert("weight".into(), weight.unwrap_or(1).into());
            if let Some(t) = thresholds {
                set_thresholds(&mut m, t);
            }
            reals.push(Value::Mapping(m));
        }
        Edit::EditReal {
            service,
            real,
            weight,
            thresholds,
        } => {
            let reals = reals_of(services, service)?;
            let r = reals
                .iter_mut()
                .find(|r| real_key(r) == Some(*real))
                .ok_or(EditError::NoReal(*service, *real))?;
            let m = r.as_mapping_mut().expect("a real is a mapping");
            if let Some(w) = weight {
                m.insert("weight".into(), (*w).into());
            }
            if let Some(t) = thresholds {
                set_thresholds(m, t);
            }
        }
        Edit::DeleteReal { service, real } => {
            let reals = reals_of(services, service)?;
            let i = reals
                .iter()
                .position(|r| real_key(r) == Some(*real))
                .ok_or(EditError::NoReal(*service, *real))?;
            reals.remove(i);
        }
    }
    let text = serde_yaml::to_string(&doc).expect("a YAML tree serializes");
    Config::from_yaml(&text, Path::new("lbadm edit")).map_err(|e| {
        EditError::Invalid(
            e.errors
                .iter()
                .map(|f| format!("{}: {}", f.path, f.message))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

fn reals_of<'a>(
    services: &'a mut [Value],
    key: &ServiceKey,
) -> Result<&'a mut Vec<Value>, EditError> {
    services
        .iter_mut()
        .find(|s| service_key(s) == Some(*key))
        .ok_or(EditError::NoService(*key))?
        .get_mut("real_servers")
        .and_then(Value::as_sequence_mut)
        .ok_or(EditError::NoService(*key))
}

fn service_key(v: &Value) -> Option<ServiceKey> {
    let vip: IpAddr = v.get("vip")?.as_str()?.parse().ok()?;
    let port = u16::try_from(v.get("port")?.as_u64()?).ok()?;
    let proto = match v.get("protocol")?.as_str()? {
        "tcp" => crate::model::Protocol::Tcp,
        "udp" => crate::model::Protocol::Udp,
        _ => return None,
    };
    Some(ServiceKey { vip, port, proto })
}

fn real_key(v: &Value) -> Option<RealKey> {
    let addr: IpAddr = v.get("ip")?.as_str()?.parse().ok()?;
    let port = u16::try_from(v.get("port")?.as_u64()?).ok()?;
    Some(RealKey { addr, port })
}

/// Writes a service's scheduling flags (`lb_flags`); none removes the key.
fn set_flags(m: &mut Mapping, flags: &[String]) {
    if flags.is_empty() {
        m.remove("lb_flags");
    } else {
        let list = flags.iter().map(|f| Value::from(f.as_str())).collect();
        m.insert("lb_flags".into(), Value::Sequence(list));
    }
}

/// Writes a real's connection thresholds into its mapping; a 0 (none) removes the key.
fn set_thresholds(m: &mut Mapping, t: &Thresholds) {
    for (key, value) in [("uthreshold", t.upper), ("lthreshold", t.lower)] {
        if value == 0 {
            m.remove(key);
        } else {
            m.insert(key.into(), value.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{config::LbAlgo, model::Protocol};

    const YAML: &str = "
interface: eth0
virtual_servers:
  - vip: 10.0.0.100
    port: 80
    lb_algo: wrr
    lb_kind: dr
    persistence_timeout: 50
    real_servers:
      - { ip: 10.0.0.11, weight: 2, tcp_check: { connect_timeout: 3 } }
";

    fn config() -> Config {
        Config::from_yaml(YAML, Path::new("t.yaml")).unwrap()
    }

    fn svc(port: u16) -> ServiceKey {
        ServiceKey {
            vip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)),
            port,
            proto: Protocol::Tcp,
        }
    }

    fn real(last: u8, port: u16) -> RealKey {
        RealKey {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
            port,
        }
    }

    #[test]
    fn add_edit_delete_service() {
        let c = apply(
            &config(),
            &Edit::AddService {
                key: svc(443),
                scheduler: Some("sh".into()),
                persistence: Some(300),
                flags: None,
            },
        )
        .unwrap();
        let vs = c.virtual_server(&svc(443)).unwrap();
        assert_eq!(vs.lb_algo, LbAlgo::Sh);
        assert_eq!(vs.persistence.unwrap().timeout, 300);
        assert!(vs.real_servers.is_empty());
        assert_eq!(
            vs.delay_loop.as_secs(),
            60,
            "keepalived defaults fill the rest"
        );

        let c = apply(
            &c,
            &Edit::EditService {
                key: svc(443),
                scheduler: Some("rr".into()),
                persistence: Some(None),
                flags: None,
            },
        )
        .unwrap();
        let vs = c.virtual_server(&svc(443)).unwrap();
        assert_eq!((vs.lb_algo, vs.persistence), (LbAlgo::Rr, None));

        let c = apply(&c, &Edit::DeleteService { key: svc(443) }).unwrap();
        assert!(c.virtual_server(&svc(443)).is_none());
        assert_eq!(c, config(), "back to the start, nothing else touched");
    }

    #[test]
    fn service_flags_are_set_and_removed() {
        let c = apply(
            &config(),
            &Edit::AddService {
                key: svc(443),
                scheduler: Some("sh".into()),
                persistence: None,
                flags: Some(vec!["sh-port".into(), "ops".into()]),
            },
        )
        .unwrap();
        let flags = |c: &Config| c.virtual_server(&svc(443)).unwrap().lb_flags;
        assert!(flags(&c).port && flags(&c).one_packet && !flags(&c).fallback);
        let edit = |flags| Edit::EditService {
            key: svc(443),
            scheduler: None,
            persistence: None,
            flags,
        };
        let c = apply(&c, &edit(None)).unwrap();
        assert!(flags(&c).port, "unchanged");
        let c = apply(&c, &edit(Some(Vec::new()))).unwrap();
        assert_eq!(flags(&c), crate::model::SchedFlags::default());
        let EditError::Invalid(msg) = apply(&c, &edit(Some(vec!["mh-port".into()]))).unwrap_err()
        else {
            panic!("expected a validation error");
        };
        assert!(
            msg.contains("mh-port applies to the mh scheduler only"),
            "{msg}"
        );
    }

    #[test]
    fn real_thresholds_are_set_changed_and_removed() {
        let t = |upper, lower| Thresholds { upper, lower };
        let c = apply(
            &config(),
            &Edit::AddReal {
                service: svc(80),
                real: real(12, 80),
                weight: None,
                thresholds: Some(t(100, 40)),
            },
        )
        .unwrap();
        let of = |c: &Config| c.virtual_server(&svc(80)).unwrap().real_servers[1].thresholds;
        assert_eq!(of(&c), t(100, 40));
        let edit = |thresholds| Edit::EditReal {
            service: svc(80),
            real: real(12, 80),
            weight: None,
            thresholds,
        };
        let c = apply(&c, &edit(None)).unwrap();
        assert_eq!(of(&c), t(100, 40), "unchanged");
        let c = apply(&c, &edit(Some(t(10, 0)))).unwrap();
        assert_eq!(of(&c), t(10, 0));
        let c = apply(&c, &edit(Some(Thresholds::default()))).unwrap();
        assert_eq!(of(&c), Thresholds::default());
        let EditError::Invalid(msg) = apply(&c, &edit(Some(t(5, 6)))).unwrap_err() else {
            panic!("expected a validation error");
        };
        assert!(msg.contains("lthreshold 6 is above uthreshold 5"), "{msg}");
    }

    #[test]
    fn add_edit_delete_real_keep_the_rest() {
        let c = apply(
            &config(),
            &Edit::AddReal {
                service: svc(80),
                real: real(12, 80),
                weight: None,
                thresholds: None,
            },
        )
        .unwrap();
        let vs = c.virtual_server(&svc(80)).unwrap();
        assert_eq!(vs.real_servers[1].weight, 1);
        assert!(
            !vs.real_servers[0].checks.is_empty(),
            "the other real keeps its check"
        );
        let c = apply(
            &c,
            &Edit::EditReal {
                service: svc(80),
                real: real(12, 80),
                weight: Some(0),
                thresholds: None,
            },
        )
        .unwrap();
        assert_eq!(
            c.virtual_server(&svc(80)).unwrap().real_servers[1].weight,
            0
        );
        let c = apply(
            &c,
            &Edit::DeleteReal {
                service: svc(80),
                real: real(12, 80),
            },
        )
        .unwrap();
        assert_eq!(c, config());
    }

    #[test]
    fn ipv6_services_and_reals_are_edited_like_ipv4_ones() {
        let text = format!(
            "{YAML}  - vip: 2001:db8::100
    port: 443
    lb_kind: dr
    persistence_timeout: 50
    persistence_granularity: 64
    real_servers:
      - {{ ip: 2001:db8::11 }}
"
        );
        let c = Config::from_yaml(&text, Path::new("t.yaml")).unwrap();
        let svc6 = |port| ServiceKey {
            vip: "2001:db8::100".parse().unwrap(),
            port,
            proto: Protocol::Tcp,
        };
        let real6 = |last: &str, port| RealKey {
            addr: format!("2001:db8::{last}").parse().unwrap(),
            port,
        };
        // -a -t [2001:db8::100]:443 -r [2001:db8::12] -w 3, then -e ... -w 0.
        let c = apply(
            &c,
            &Edit::AddReal {
                service: svc6(443),
                real: real6("12", 443),
                weight: Some(3),
                thresholds: None,
            },
        )
        .unwrap();
        let c = apply(
            &c,
            &Edit::EditReal {
                service: svc6(443),
                real: real6("11", 443),
                weight: Some(0),
                thresholds: None,
            },
        )
        .unwrap();
        let vs = c.virtual_server(&svc6(443)).unwrap();
        let weights: Vec<(RealKey, u32)> =
            vs.real_servers.iter().map(|r| (r.key, r.weight)).collect();
        assert_eq!(weights, [(real6("11", 443), 0), (real6("12", 443), 3)]);
        // -E -p 600 keeps the /64 granularity.
        let c = apply(
            &c,
            &Edit::EditService {
                key: svc6(443),
                scheduler: Some("sh".into()),
                persistence: Some(Some(600)),
                flags: None,
            },
        )
        .unwrap();
        let p = c.virtual_server(&svc6(443)).unwrap().persistence.unwrap();
        assert_eq!((p.timeout, p.prefix6), (600, 64));
        // -A -t [2001:db8::100]:80 next to the IPv4 service on port 80.
        let c = apply(
            &c,
            &Edit::AddService {
                key: svc6(80),
                scheduler: Some("wrr".into()),
                persistence: Some(30),
                flags: None,
            },
        )
        .unwrap();
        let added = c.virtual_server(&svc6(80)).unwrap();
        assert_eq!(added.persistence.unwrap().prefix6, 128);
        assert!(c.virtual_server(&svc(80)).is_some());
        // An IPv4 real in an IPv6 service is refused, naming the field.
        let mixed = Edit::AddReal {
            service: svc6(443),
            real: real(12, 443),
            weight: None,
            thresholds: None,
        };
        let EditError::Invalid(msg) = apply(&c, &mixed).unwrap_err() else {
            panic!("expected a validation error");
        };
        assert!(
            msg.contains("virtual_servers[1].real_servers[2].ip")
                && msg.contains("different address families"),
            "{msg}"
        );
        let c = apply(&c, &Edit::DeleteService { key: svc6(80) }).unwrap();
        let c = apply(&c, &Edit::DeleteService { key: svc6(443) }).unwrap();
        assert_eq!(c, config());
    }

    #[test]
    fn refusals_name_the_problem() {
        let c = config();
        let add = |key| Edit::AddService {
            key,
            scheduler: Some("rr".into()),
            persistence: None,
            flags: None,
        };
        assert_eq!(
            apply(&c, &add(svc(80))).unwrap_err(),
            EditError::ServiceExists(svc(80))
        );
        assert_eq!(
            apply(&c, &Edit::DeleteService { key: svc(81) }).unwrap_err(),
            EditError::NoService(svc(81))
        );
        let dup = Edit::AddReal {
            service: svc(80),
            real: real(11, 80),
            weight: None,
            thresholds: None,
        };
        assert_eq!(
            apply(&c, &dup).unwrap_err(),
            EditError::RealExists(svc(80), real(11, 80))
        );
        let missing = Edit::EditReal {
            service: svc(80),
            real: real(99, 80),
            weight: Some(1),
            thresholds: None,
        };
        assert_eq!(
            apply(&c, &missing).unwrap_err(),
            EditError::NoReal(svc(80), real(99, 80))
        );
        // Validation as for a file: the real's port must equal the VIP's.
        let wrong_port = Edit::AddReal {
            service: svc(80),
            real: real(12, 8080),
            weight: None,
            thresholds: None,
        };
        let EditError::Invalid(msg) = apply(&c, &wrong_port).unwrap_err() else {
            panic!("expected a validation error");
        };
        assert!(
            msg.contains("virtual_servers[0].real_servers[1].port"),
            "{msg}"
        );
        // Without -s, ipvsadm's default scheduler wlc applies.
        let default_sched = Edit::AddService {
            key: svc(443),
            scheduler: None,
            persistence: None,
            flags: None,
        };
        let edited = apply(&c, &default_sched).expect("wlc is served");
        let added = edited
            .virtual_servers
            .iter()
            .find(|v| v.key == svc(443))
            .expect("the new service");
        assert_eq!(added.lb_algo, LbAlgo::Wlc);
        let weight = Edit::EditReal {
            service: svc(80),
            real: real(11, 80),
            weight: Some(70_000),
            thresholds: None,
        };
        assert!(matches!(
            apply(&c, &weight).unwrap_err(),
            EditError::Invalid(_)
        ));
    }
}
