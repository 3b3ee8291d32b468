//! Between this director's data plane and the wire: the program names a flow's real by its
//! index in `REALS`, which means nothing on another director; the wire names services and
//! reals by address. A [`Directory`], built from what is installed, translates both ways.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use lb_common::{Conn, ConnState, Flow4Key, Flow6Key, SyncEvent, SyncedFlow, addr6};

use super::wire::{Record, SyncedConn};
use crate::{
    model::{ListedFlow, Protocol, RealKey, ServiceKey},
    reconcile::plan::Installed,
};

/// Where a service and real live on this director.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// Service id.
    pub service_id: u32,
    /// Real index.
    pub real: u32,
}

/// This director's services and reals by index and by address.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    by_index: HashMap<u32, (ServiceKey, RealKey)>,
    by_key: HashMap<(ServiceKey, RealKey), Place>,
}

impl Directory {
    /// The directory of what `installed` holds: configured reals and retiring ones (their
    /// flows go on).
    pub fn of(installed: &Installed) -> Self {
        let mut dir = Self::default();
        for (skey, svc) in &installed.services {
            for (rkey, real) in svc.reals.iter().chain(&svc.retiring) {
                dir.by_index.insert(real.index, (*skey, *rkey));
                let place = Place {
                    service_id: svc.id,
                    real: real.index,
                };
                dir.by_key.insert((*skey, *rkey), place);
            }
        }
        dir
    }
}

/// Why a peer's flow has no place here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unplaced {
    /// The service is not configured here.
    #[error("service {0} is not configured here")]
    Service(ServiceKey),
    /// The service is, but not with this real.
    #[error("real {1} is not in service {0} here")]
    Real(ServiceKey, RealKey),
    /// A state no flow is announced in.
    #[error("state {0:?} is never announced")]
    State(ConnState),
}

/// A peer's flow as this director stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The connection-table key.
    pub flow: SyncedFlow,
    /// The entry: this director's index of the real, and the state.
    pub conn: Conn,
    /// The service's id here.
    pub service_id: u32,
}

/// The wire record of a flow the program announced (or a table scan found) on real index
/// `event.real`, idle for `idle` seconds; `None` if that index holds no real of the flow's
/// service any more (it was removed since).
pub fn outgoing(event: &SyncEvent, idle: u16, dir: &Directory) -> Option<Record> {
    let (client, vip, proto) = match event.flow()? {
        SyncedFlow::V4(k) => (k.client_socket(), k.virtual_addr(), k.proto),
        SyncedFlow::V6(k) => (k.client_socket(), k.virtual_addr(), k.proto),
    };
    let proto = match proto {
        lb_common::proto::TCP => Protocol::Tcp,
        lb_common::proto::UDP => Protocol::Udp,
        _ => return None,
    };
    let service = ServiceKey {
        vip: vip.ip(),
        port: vip.port(),
        proto,
    };
    let (owner, real) = dir.by_index.get(&event.real)?;
    if *owner != service {
        return None;
    }
    Some(Record::Conn(SyncedConn {
        service,
        client,
        real: *real,
        state: ConnState::from_u8(event.state),
        idle,
    }))
}

/// Where a peer's flow goes here: the flow's key, and this director's indices of its service
/// and real.
pub fn incoming(conn: &SyncedConn, dir: &Directory) -> Result<Placed, Unplaced> {
    // Templates (state NONE) travel with their connections, never as flows.
    if conn.state == ConnState::None {
        return Err(Unplaced::State(conn.state));
    }
    let place = dir.by_key.get(&(conn.service, conn.real)).ok_or_else(|| {
        if dir.by_key.keys().any(|(s, _)| *s == conn.service) {
            Unplaced::Real(conn.service, conn.real)
        } else {
            Unplaced::Service(conn.service)
        }
    })?;
    let flow = flow_key(&conn.service, conn.client).ok_or(Unplaced::Service(conn.service))?;
    Ok(Placed {
        flow,
        conn: Conn {
            real: place.real,
            state: conn.state as u8,
            _pad: [0; 3],
        },
        service_id: place.service_id,
    })
}

/// The connection-table key of `client`'s flow to `service` (`None` if the families differ).
fn flow_key(service: &ServiceKey, client: SocketAddr) -> Option<SyncedFlow> {
    let proto = service.proto.number();
    match (client.ip(), service.vip) {
        (IpAddr::V4(c), IpAddr::V4(v)) => Some(SyncedFlow::V4(Flow4Key::from_parts(
            c.octets(),
            client.port(),
            v.octets(),
            service.port,
            proto,
        ))),
        (IpAddr::V6(c), IpAddr::V6(v)) => Some(SyncedFlow::V6(Flow6Key {
            src: addr6(c.octets()),
            dst: addr6(v.octets()),
            sport: client.port().to_be(),
            dport: service.port.to_be(),
            proto,
            _pad: [0; 3],
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::Limits,
        reconcile::plan::{InstalledReal, InstalledService, ServiceParams},
    };

    fn service(vip: &str, port: u16) -> ServiceKey {
        ServiceKey {
            vip: vip.parse().unwrap(),
            port,
            proto: Protocol::Tcp,
        }
    }

    fn real(addr: &str, port: u16) -> RealKey {
        RealKey {
            addr: addr.parse().unwrap(),
            port,
        }
    }

    /// Two directors with the same services but different indices.
    fn directory(first_index: u32) -> Directory {
        let mut installed = Installed::new(Limits::default());
        for (id, (skey, reals)) in [
            (
                service("192.0.2.10", 5672),
                vec![real("10.0.0.1", 5672), real("10.0.0.2", 5672)],
            ),
            (service("2001:db8::10", 443), vec![real("2001:db8::1", 443)]),
        ]
        .into_iter()
        .enumerate()
        {
            let mut svc = InstalledService {
                id: id as u32 + 1,
                params: ServiceParams::default(),
                table: (0, 0),
                active: 0,
                reals: Default::default(),
                retiring: Default::default(),
                candidates: Default::default(),
            };
            for (i, rkey) in reals.into_iter().enumerate() {
                let index = first_index + 10 * id as u32 + i as u32;
                svc.reals.insert(
                    rkey,
                    InstalledReal {
                        index,
                        value: lb_common::Real::EMPTY,
                    },
                );
            }
            installed.services.insert(skey, svc);
        }
        Directory::of(&installed)
    }

    #[test]
    fn a_flow_announced_on_one_director_lands_on_the_same_real_of_another() {
        let (a, b) = (directory(1), directory(40));
        let key = Flow4Key::from_parts([198, 51, 100, 7], 40_001, [192, 0, 2, 10], 5672, 6);
        // Real index 2 on A is 10.0.0.2.
        let event = SyncEvent::of4(&key, 2, ConnState::Established as u8);
        let Some(Record::Conn(conn)) = outgoing(&event, 3, &a) else {
            panic!("no record")
        };
        assert_eq!(conn.real, real("10.0.0.2", 5672));
        assert_eq!(conn.client, "198.51.100.7:40001".parse().unwrap());
        assert_eq!(conn.idle, 3);
        let placed = incoming(&conn, &b).unwrap();
        assert_eq!(placed.flow, SyncedFlow::V4(key));
        assert_eq!((placed.conn.real, placed.service_id), (41, 1));
        assert_eq!(placed.conn.state, ConnState::Established as u8);
    }

    #[test]
    fn ipv6_flows_translate_too() {
        let (a, b) = (directory(1), directory(40));
        let vip = "2001:db8::10"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let client = "2001:db8:1::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let key = Flow6Key::from_parts(client, 5555, vip, 443, 6);
        let event = SyncEvent::of6(&key, 11, ConnState::Established as u8);
        let Some(Record::Conn(conn)) = outgoing(&event, 0, &a) else {
            panic!("no record")
        };
        let placed = incoming(&conn, &b).unwrap();
        assert_eq!(placed.flow, SyncedFlow::V6(key));
        assert_eq!((placed.conn.real, placed.service_id), (50, 2));
    }

    #[test]
    fn an_index_reused_by_another_service_is_not_announced() {
        let a = directory(1);
        // Index 11 is the IPv6 service's real, not the IPv4 one's.
        let key = Flow4Key::from_parts([198, 51, 100, 7], 40_001, [192, 0, 2, 10], 5672, 6);
        let event = SyncEvent::of4(&key, 11, ConnState::Established as u8);
        assert_eq!(outgoing(&event, 0, &a), None);
        let event = SyncEvent::of4(&key, 99, ConnState::Established as u8);
        assert_eq!(outgoing(&event, 0, &a), None);
    }

    #[test]
    fn flows_of_unknown_services_reals_or_states_have_no_place() {
        let b = directory(40);
        let mut conn = SyncedConn {
            service: service("192.0.2.10", 5672),
            client: "198.51.100.7:40001".parse().unwrap(),
            real: real("10.0.0.9", 5672),
            state: ConnState::Established,
            idle: 0,
        };
        assert!(matches!(incoming(&conn, &b), Err(Unplaced::Real(..))));
        conn.service = service("192.0.2.99", 5672);
        assert!(matches!(incoming(&conn, &b), Err(Unplaced::Service(_))));
        conn.service = service("192.0.2.10", 5672);
        conn.real = real("10.0.0.1", 5672);
        conn.state = ConnState::None;
        assert_eq!(incoming(&conn, &b), Err(Unplaced::State(ConnState::None)));
        conn.state = ConnState::Established;
        conn.client = "[2001:db8::1]:5".parse().unwrap();
        assert!(matches!(incoming(&conn, &b), Err(Unplaced::Service(_))));
    }
}
