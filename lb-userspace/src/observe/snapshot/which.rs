//! `--which`: where a client's flow to a service goes, read from the data plane's own tables
//! with its own keys and hashes.

use std::net::{IpAddr, SocketAddr};

use lb_common::{
    Candidates, Conn, ConnState, FALLBACK_PROBES, Flow4Key, Flow6Key, FlowKey, Persist4Key,
    Persist6Key, REAL_UP, Real, SVC_F_FALLBACK, SVC_F_HASH_DST, SVC_F_HASH_SRC, SVC_F_PERSIST,
    Settings, addr6_bytes, table_slot,
};

use super::View;
use crate::{
    control::WhichAnswer,
    dataplane::{Dataplane, DataplaneError},
    model::{Conn6Entry, ConnEntry, ServiceKey, Template6Entry, TemplateEntry},
    reconcile::plan::InstalledService,
    schedule::load::{self, Counts},
};

/// Why [`which`] has no answer.
#[derive(Debug, thiserror::Error)]
pub enum WhichError {
    /// The service is not installed.
    #[error("{0}: no such service")]
    NoSuchService(ServiceKey),
    /// The client is not of the address family of the service's VIP.
    #[error("the client {client} is not of the address family of {service}")]
    AddressFamily {
        /// The client.
        client: SocketAddr,
        /// The service.
        service: ServiceKey,
    },
    /// A table of the data plane could not be read.
    #[error("reading the {table}: {source}")]
    Read {
        /// The table: `candidates` or `lookup table`.
        table: &'static str,
        /// Why (boxed: the data plane's error is large).
        source: Box<DataplaneError>,
    },
}

/// The data plane's tables as `which` reads them: the maps, or a model of them in tests.
trait Tables {
    /// Director settings (clock and timeouts).
    fn settings(&self) -> Settings;
    /// The IPv4 connection entry of a flow.
    fn conn4(&self, key: &Flow4Key) -> Option<ConnEntry>;
    /// The IPv6 connection entry of a flow.
    fn conn6(&self, key: &Flow6Key) -> Option<Conn6Entry>;
    /// An IPv4 persistence template.
    fn template4(&self, key: &Persist4Key) -> Option<TemplateEntry>;
    /// An IPv6 persistence template.
    fn template6(&self, key: &Persist6Key) -> Option<Template6Entry>;
    /// `REALS[index]`.
    fn real(&self, index: u32) -> Option<Real>;
    /// A real's connection counts.
    fn load(&self, index: u32) -> Counts;
    /// Whether a real is overloaded (its connection thresholds).
    fn overloaded(&self, index: u32) -> bool;
    /// A least-connection service's candidates.
    fn candidates(&self, id: u32) -> Result<Candidates, WhichError>;
    /// Flat slot `index` of the lookup tables.
    fn slot(&self, index: u32) -> Result<u32, WhichError>;
}

impl Tables for Dataplane {
    fn settings(&self) -> Settings {
        Dataplane::settings(self)
    }

    fn conn4(&self, key: &Flow4Key) -> Option<ConnEntry> {
        Dataplane::conn4(self, key)
    }

    fn conn6(&self, key: &Flow6Key) -> Option<Conn6Entry> {
        Dataplane::conn6(self, key)
    }

    fn template4(&self, key: &Persist4Key) -> Option<TemplateEntry> {
        Dataplane::template4(self, key)
    }

    fn template6(&self, key: &Persist6Key) -> Option<Template6Entry> {
        Dataplane::template6(self, key)
    }

    fn real(&self, index: u32) -> Option<Real> {
        Dataplane::real(self, index).ok()
    }

    fn load(&self, index: u32) -> Counts {
        self.real_load(index)
            .map(|l| Counts::from_load(&l))
            .unwrap_or_default()
    }

    fn overloaded(&self, index: u32) -> bool {
        self.real_load(index).is_ok_and(|l| l.overloaded != 0)
    }

    fn candidates(&self, id: u32) -> Result<Candidates, WhichError> {
        Dataplane::candidates(self, id).map_err(|e| WhichError::Read {
            table: "candidates",
            source: Box::new(e),
        })
    }

    fn slot(&self, index: u32) -> Result<u32, WhichError> {
        self.lookup_slot(index).map_err(|e| WhichError::Read {
            table: "lookup table",
            source: Box::new(e),
        })
    }
}

/// What the data plane's tables say about one client's flow, whatever its family.
struct Probe {
    /// The flow's connection entry.
    conn: Option<(Conn, u32)>,
    /// The client network's template (persistent services only): real and stamp.
    template: Option<(u32, u32)>,
    /// The client address under the service's granularity.
    network: IpAddr,
    /// The hash that places the flow: by the masked source for `sh` and persistence, else
    /// the 5-tuple's.
    hash: u32,
}

impl Probe {
    /// Reads the tables for `client`'s flow to `service`, with the data plane's keys and
    /// hashes for the family ([`FlowKey`]); an error if the client is not of the VIP's family.
    fn read(
        t: &impl Tables,
        inst: &InstalledService,
        service: &ServiceKey,
        client: SocketAddr,
    ) -> Result<Probe, WhichError> {
        let p = &inst.params.entry(inst.table);
        let persistent = p.flags & SVC_F_PERSIST != 0;
        let proto = service.proto.number();
        match (service.vip, client.ip()) {
            (IpAddr::V4(vip), IpAddr::V4(src)) => {
                let (o, v) = (src.octets(), vip.octets());
                let flow = Flow4Key::from_parts(o, client.port(), v, service.port, proto);
                let key = flow.client(inst.id, p);
                Ok(Probe {
                    conn: t.conn4(&flow).map(|e| (e.conn, e.stamp)),
                    template: persistent
                        .then(|| t.template4(&key))
                        .flatten()
                        .map(|e| (e.template.real, e.stamp)),
                    network: IpAddr::from(key.client.to_ne_bytes()),
                    hash: flow.schedule_hash(p, flow.hash()),
                })
            }
            (IpAddr::V6(vip), IpAddr::V6(src)) => {
                let (o, v) = (src.octets(), vip.octets());
                let flow = Flow6Key::from_parts(o, client.port(), v, service.port, proto);
                let key = flow.client(inst.id, p);
                Ok(Probe {
                    conn: t.conn6(&flow).map(|e| (e.conn, e.stamp)),
                    template: persistent
                        .then(|| t.template6(&key))
                        .flatten()
                        .map(|e| (e.template.real, e.stamp)),
                    network: IpAddr::from(addr6_bytes(&key.client)),
                    hash: flow.schedule_hash(p, flow.hash()),
                })
            }
            _ => Err(WhichError::AddressFamily {
                client,
                service: *service,
            }),
        }
    }
}

/// Which real a client's flow to `service` is on (connection table), or would get (its
/// persistence template, else the lookup table or the least-connection choice), read from the
/// data plane's own tables with its own keys and hashes, for IPv4 and IPv6 alike.
pub fn which(
    v: &View,
    service: &ServiceKey,
    client: SocketAddr,
) -> Result<WhichAnswer, WhichError> {
    let inst = v
        .installed
        .services
        .get(service)
        .ok_or(WhichError::NoSuchService(*service))?;
    which_installed(v.dp, inst, service, client)
}

/// [`which`] for one installed service, read from the data plane's maps: the userspace side of
/// the decisions the program makes (the agreement test runs both).
pub fn which_installed(
    dp: &Dataplane,
    inst: &InstalledService,
    service: &ServiceKey,
    client: SocketAddr,
) -> Result<WhichAnswer, WhichError> {
    which_in(dp, inst, service, client)
}

/// [`which`] over any [`Tables`].
fn which_in(
    t: &impl Tables,
    inst: &InstalledService,
    service: &ServiceKey,
    client: SocketAddr,
) -> Result<WhichAnswer, WhichError> {
    let name = |index: u32| {
        inst.reals
            .iter()
            .chain(inst.retiring.iter())
            .find(|(_, r)| r.index == index)
            .map(|(k, _)| *k)
    };
    // The weight of a real that is up and of this service.
    let weight = |index: u32| {
        t.real(index)
            .filter(|r| r.state == REAL_UP && r.service_id == inst.id)
            .map(|r| r.weight)
    };
    let settings = t.settings();
    let now = settings.clock;
    let probe = Probe::read(t, inst, service, client)?;
    if let Some((conn, stamp)) = probe.conn {
        let idle = settings.idle(stamp);
        if settings.conn_live(conn.state, stamp) && weight(conn.real).is_some() {
            let state = ConnState::from_u8(conn.state).name();
            return Ok(WhichAnswer {
                real: name(conn.real),
                source: "connection table".into(),
                detail: format!("{state}, idle {idle} s"),
            });
        }
    }
    let params = inst.params;
    if let Some((real, stamp)) = probe.template
        && params.entry(inst.table).template_live(now, stamp)
        && weight(real).is_some()
    {
        return Ok(WhichAnswer {
            real: name(real),
            source: "persistence template".into(),
            detail: format!(
                "client network {}, used {} s ago",
                probe.network,
                now.wrapping_sub(stamp)
            ),
        });
    }
    let hash = probe.hash;
    if params.sched != lb_common::SCHED_MAGLEV {
        let candidates = t.candidates(inst.id)?;
        let counts = |index| t.load(index);
        let usable = |i| weight(i).filter(|_| !t.overloaded(i));
        let Some(index) = load::pick(params.sched, &candidates, hash, usable, counts) else {
            return Ok(WhichAnswer {
                real: None,
                source: "least connection".into(),
                detail: "no usable real: a new connection would be dropped".into(),
            });
        };
        let c = counts(index);
        return Ok(WhichAnswer {
            real: name(index),
            source: "least connection".into(),
            detail: format!(
                "least loaded now: {} active, {} inactive, weight {}",
                c.active,
                c.inactive,
                weight(index).unwrap_or(0)
            ),
        });
    }
    let (base, size) = inst.table;
    if size == 0 {
        return Ok(WhichAnswer {
            real: None,
            source: "lookup table".into(),
            detail: "no usable real: a new connection would be dropped".into(),
        });
    }
    let slot = table_slot(hash, size);
    let index = t.slot(base + slot)?;
    let usable = |i: u32| weight(i).is_some() && !t.overloaded(i);
    if usable(index) {
        return Ok(WhichAnswer {
            real: name(index),
            source: "lookup table".into(),
            detail: format!("slot {slot} of {size}"),
        });
    }
    // The program's rule (see its `table_pick_new`): past an overloaded real rr and wrr walk
    // on; the hashing schedulers only with their fallback flag, which also walks past a down
    // real.
    let fallback = params.flags & SVC_F_FALLBACK != 0;
    let hashing = params.flags & (SVC_F_HASH_SRC | SVC_F_HASH_DST) != 0;
    let walks = fallback || (!hashing && weight(index).is_some());
    let mut found = None;
    if walks {
        for k in 1..=FALLBACK_PROBES {
            let at = (slot + k) % size;
            let i = t.slot(base + at)?;
            if usable(i) {
                found = Some((at, i));
                break;
            }
        }
    }
    let why = if weight(index).is_some() {
        "overloaded"
    } else {
        "down"
    };
    Ok(match found {
        Some((at, i)) => WhichAnswer {
            real: name(i),
            source: "lookup table".into(),
            detail: format!("slot {at} of {size}: the real of slot {slot} is {why}"),
        },
        None => WhichAnswer {
            real: None,
            source: "lookup table".into(),
            detail: format!(
                "no usable real: the real of slot {slot} is {why}; a new connection would be \
                 dropped"
            ),
        },
    })
}

#[cfg(test)]
mod tests;
