//! Diff: from what is installed in the maps and a new desired state, the minimal, ordered list
//! of map updates, and the installed state that results.
//!
//! Planning is pure (no syscalls), so every decision is unit-tested here. It fails before any
//! map is touched when the desired state does not fit (capacity, table size, VIP table), so a
//! rejected change leaves the running state as it was.
//!
//! Ordering keeps every intermediate state safe for packets in flight:
//! 1. counters of newly allocated ids are zeroed;
//! 2. reals that are new, come up or change MAC are written (a real is usable before any table
//!    points at it);
//! 3. parameters of new or changed services are written (a new service is not yet reachable);
//! 4. each changed lookup table is written into the service's inactive buffer (only the slots
//!    that differ from what that buffer holds), then published with one 8-byte write;
//! 5. the VIP tables (IPv4 and IPv6) are rebuilt into their inactive halves and both published
//!    with one 4-byte write: new services appear and removed ones disappear at once, fragment
//!    entries follow;
//! 6. reals that go down or are removed are marked down (no table holds them any more).

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
    sync::Arc,
};

use lb_common::{
    Addr6, Candidates, LC_CANDIDATES, NO_REAL, REAL_DOWN, REAL_UP, Real, SVC_F_FALLBACK,
    SVC_F_HASH_DST, SVC_F_HASH_PORT, SVC_F_HASH_SRC, SVC_F_ONE_PACKET, SVC_F_PERSIST, Service,
    Vip4Key, Vip6Key, VipBucket4, VipBucket6, addr6, addr6_bytes,
};
use thiserror::Error;

use crate::{
    model::{DesiredState, Limits, Protocol, RealKey, Scheduler, ServiceKey, ServiceSpec},
    schedule::maglev::{self, Backend, BackendId},
    schedule::viptable::{self, VipTableKey},
};

/// Why a desired state cannot be installed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    /// More services than `max_services`.
    #[error("{wanted} virtual services configured, but the maps hold at most {max} (max_services)")]
    TooManyServices {
        /// Services wanted.
        wanted: usize,
        /// Capacity.
        max: u32,
    },
    /// More reals than `max_reals - 1`.
    #[error("{wanted} real servers configured, but the maps hold at most {max} (max_reals)")]
    TooManyReals {
        /// Reals wanted.
        wanted: usize,
        /// Capacity.
        max: u32,
    },
    /// A service's table is larger than the maps allow.
    #[error("{service}: table_size {size} exceeds max_table_size {max} the maps were created with")]
    TableTooLarge {
        /// Service.
        service: ServiceKey,
        /// Requested size.
        size: u32,
        /// Maximum.
        max: u32,
    },
    /// The Maglev builder rejected the service's table.
    #[error("{service}: {source}")]
    Table {
        /// Service.
        service: ServiceKey,
        /// Cause.
        source: maglev::MaglevError,
    },
    /// The VIP table cannot hold the services.
    #[error(transparent)]
    VipTable(#[from] viptable::VipTableFull),
    /// Port 0 is reserved for the fragment entries.
    #[error("{0}: port 0 cannot be a service port")]
    PortZero(ServiceKey),
    /// A real of another address family than its service's VIP.
    #[error("{service}: real {real} is not of the VIP's address family")]
    MixedFamily {
        /// Service.
        service: ServiceKey,
        /// Real.
        real: RealKey,
    },
    /// An IPv6 persistence prefix length outside 1 to 128.
    #[error("{service}: persistence prefix length {prefix} is not between 1 and 128")]
    Granularity {
        /// Service.
        service: ServiceKey,
        /// Prefix length.
        prefix: u8,
    },
}

/// Per-service parameters the data plane reads besides the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceParams {
    /// `SVC_F_*` flags.
    pub flags: u32,
    /// Persistence timeout in seconds.
    pub persist_timeout: u32,
    /// Persistence / source-hash netmask of an IPv4 service, network byte order (all ones
    /// otherwise).
    pub persist_mask4: u32,
    /// `SCHED_*`.
    pub sched: u32,
    /// Persistence / source-hash mask of an IPv6 service, as [`Addr6`] words (all ones
    /// otherwise).
    pub persist_mask6: Addr6,
}

impl Default for ServiceParams {
    /// No flags, Maglev, per-client masks.
    fn default() -> Self {
        Self {
            flags: 0,
            persist_timeout: 0,
            persist_mask4: u32::MAX,
            sched: lb_common::SCHED_MAGLEV,
            persist_mask6: [u32::MAX; 4],
        }
    }
}

impl ServiceParams {
    /// The service's map entry with these parameters and the table at `(base, size)`: what
    /// the data plane's decisions read (`lb_common::decide`).
    pub fn entry(&self, (base, size): (u32, u32)) -> Service {
        Service {
            flags: self.flags,
            persist_timeout: self.persist_timeout,
            persist_mask4: self.persist_mask4,
            sched: self.sched,
            table: Service::pack_table(base, size),
            persist_mask6: self.persist_mask6,
        }
    }
}

/// One map update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Zero the per-CPU counters of a service id.
    ResetServiceStats(u32),
    /// Zero the per-CPU counters of a real index.
    ResetRealStats(u32),
    /// Write `REALS[index]` (MAC, state and family in one 8-byte store).
    SetReal {
        /// Real index.
        index: u32,
        /// Value.
        real: Real,
    },
    /// Write a service's parameters (not its table).
    SetServiceParams {
        /// Service id.
        id: u32,
        /// Parameters.
        params: ServiceParams,
    },
    /// Write flat lookup slot `base + offset` = `real` for each pair.
    WriteSlots {
        /// First slot of the region.
        base: u32,
        /// (offset, real index) pairs.
        slots: Vec<(u32, u32)>,
    },
    /// Publish a service's table (one 8-byte write of base and size; size 0 = no real).
    PublishTable {
        /// Service id.
        id: u32,
        /// Flat slot index of slot 0.
        base: u32,
        /// Table size.
        size: u32,
    },
    /// Write a least-connection service's candidate reals.
    SetCandidates {
        /// Service id.
        id: u32,
        /// Real indices (0 = unused).
        reals: Candidates,
    },
    /// Write the inactive halves of both VIP tables, then make them the active ones with one
    /// flip of `Settings::vip_base`.
    SetVips {
        /// The whole IPv4 half (`VIPS4`).
        v4: Vec<VipBucket4>,
        /// The whole IPv6 half (`VIPS6`).
        v6: Vec<VipBucket6>,
    },
}

/// A real as installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledReal {
    /// Index in `REALS`.
    pub index: u32,
    /// Value in `REALS`.
    pub value: Real,
}

/// A service as installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledService {
    /// Service id.
    pub id: u32,
    /// Parameters.
    pub params: ServiceParams,
    /// Published table: (base, size).
    pub table: (u32, u32),
    /// Which of the two table buffers holds the newest table.
    pub active: usize,
    /// Reals.
    pub reals: BTreeMap<RealKey, InstalledReal>,
    /// Reals removed from the configuration that still carry connections: out of the table,
    /// their entries untouched so their flows continue, released by [`Installed::retire`].
    pub retiring: BTreeMap<RealKey, InstalledReal>,
    /// Least-connection candidates as last written by a plan.
    pub candidates: Candidates,
}

/// What the maps hold, as far as the control plane wrote them.
#[derive(Clone, Debug)]
pub struct Installed {
    limits: Limits,
    /// Services by key.
    pub services: BTreeMap<ServiceKey, InstalledService>,
    /// Contents of both table buffers of every service id (empty = all zero). Shared between
    /// the views a plan clones (up to 2 x 256 KiB per service), copied only when replaced.
    regions: Vec<[Arc<Vec<u32>>; 2]>,
    /// What the active buffer's table of every service id was built from (its backends and
    /// size), so that a plan rebuilds only the tables whose input changed; `None` when
    /// unknown (adopted maps) or when no table is published.
    built: Vec<Option<(Vec<Backend>, u32)>>,
    /// The IPv4 VIP table's entries (services and fragment entries).
    vips: BTreeMap<Vip4Key, u32>,
    /// The IPv6 VIP table's entries (services and fragment entries).
    vips6: BTreeMap<Vip6Key, u32>,
    free_service_ids: VecDeque<u32>,
    free_reals: VecDeque<u32>,
}

impl Installed {
    /// The state of freshly created maps.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            services: BTreeMap::new(),
            regions: vec![[Arc::default(), Arc::default()]; limits.max_services as usize],
            built: vec![None; limits.max_services as usize],
            vips: BTreeMap::new(),
            vips6: BTreeMap::new(),
            free_service_ids: (0..limits.max_services).collect(),
            // Index 0 is NO_REAL. Freed indices go to the back so they are reused as late as
            // possible (a stale connection entry then most likely finds an empty slot).
            free_reals: (1..limits.max_reals).collect(),
        }
    }

    /// Capacities.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Rebuilds the view of maps another process filled (a restarted agent adopting pinned
    /// maps): services from the active halves of the VIP tables (`vips` of `VIPS4`, `vips6` of
    /// `VIPS6`), their parameters and tables, and their reals. Returns the view and the indices
    /// of reals that belong to no reachable service (left behind by an interrupted change); the
    /// caller empties those.
    pub fn reconstruct(
        limits: Limits,
        vips: &[VipBucket4],
        vips6: &[VipBucket6],
        services: &[Service],
        candidates: &[Candidates],
        reals: &[Real],
        slot: impl Fn(u32) -> u32,
    ) -> (Installed, Vec<u32>) {
        let mut inst = Installed::new(limits);
        inst.vips = viptable::entries(vips);
        inst.vips6 = viptable::entries(vips6);
        let keys4 = inst
            .vips
            .iter()
            .filter_map(|(vk, &id)| Some((service_key_from_vip4(vk)?, id)));
        let keys6 = inst
            .vips6
            .iter()
            .filter_map(|(vk, &id)| Some((service_key_from_vip6(vk)?, id)));
        let keys: Vec<(ServiceKey, u32)> = keys4.chain(keys6).collect();
        let mut ports: BTreeMap<u32, ServiceKey> = BTreeMap::new();
        for (key, id) in keys {
            if id >= limits.max_services {
                continue;
            }
            let svc = services[id as usize];
            let (base, size) = (svc.table_base(), svc.table_size());
            let active = usize::from(base != limits.region_base(id, 0));
            for buf in 0..2 {
                let start = limits.region_base(id, buf);
                inst.regions[id as usize][buf] =
                    Arc::new((start..start + limits.region_slots()).map(&slot).collect());
            }
            // The active buffer holds exactly the published table.
            if size > 0 {
                Arc::make_mut(&mut inst.regions[id as usize][active]).truncate(size as usize);
            }
            inst.services.insert(
                key,
                InstalledService {
                    id,
                    params: ServiceParams {
                        flags: svc.flags,
                        persist_timeout: svc.persist_timeout,
                        persist_mask4: svc.persist_mask4,
                        sched: svc.sched,
                        persist_mask6: svc.persist_mask6,
                    },
                    table: (base, size),
                    active,
                    reals: BTreeMap::new(),
                    retiring: BTreeMap::new(),
                    candidates: candidates
                        .get(id as usize)
                        .copied()
                        .unwrap_or([NO_REAL; LC_CANDIDATES]),
                },
            );
            ports.insert(id, key);
        }
        let mut stale = Vec::new();
        for (index, real) in reals.iter().enumerate().skip(1) {
            if real.family == 0 {
                continue;
            }
            let index = index as u32;
            match ports.get(&real.service_id) {
                Some(key) => {
                    let addr = if real.family == 4 {
                        IpAddr::from([real.addr[0], real.addr[1], real.addr[2], real.addr[3]])
                    } else {
                        IpAddr::from(real.addr)
                    };
                    let rk = RealKey {
                        addr,
                        port: key.port,
                    };
                    let svc = inst.services.get_mut(key).expect("service was inserted");
                    svc.reals.insert(
                        rk,
                        InstalledReal {
                            index,
                            value: *real,
                        },
                    );
                }
                None => stale.push(index),
            }
        }
        let used_ids: Vec<u32> = inst.services.values().map(|s| s.id).collect();
        inst.free_service_ids.retain(|id| !used_ids.contains(id));
        let used_reals: std::collections::BTreeSet<u32> = inst
            .services
            .values()
            .flat_map(|s| s.reals.values().map(|r| r.index))
            .collect();
        inst.free_reals.retain(|i| !used_reals.contains(i));
        (inst, stale)
    }

    /// The published lookup table of a service (empty if it has no usable real).
    pub fn active_table(&self, key: &ServiceKey) -> Option<&[u32]> {
        let svc = self.services.get(key)?;
        if svc.table.1 == 0 {
            return Some(&[]);
        }
        Some(self.regions[svc.id as usize][svc.active].as_slice())
    }

    /// The IPv4 VIP table's entries.
    pub fn vips(&self) -> &BTreeMap<Vip4Key, u32> {
        &self.vips
    }

    /// The IPv6 VIP table's entries.
    pub fn vips6(&self) -> &BTreeMap<Vip6Key, u32> {
        &self.vips6
    }

    /// Plans the updates that turn this installed state into `desired`, returning them and the
    /// installed state that results. Nothing is changed on error.
    pub fn plan(&self, desired: &DesiredState) -> Result<(Vec<Op>, Installed), PlanError> {
        self.check_capacity(desired)?;
        let mut next = self.clone();
        let mut plan = Plan::default();

        let removed: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| !desired.services.contains_key(k))
            .copied()
            .collect();
        for (key, spec) in &desired.services {
            next.plan_service(key, spec, &mut plan)?;
        }
        // Removed services disappear with the VIP table flip (their flows can no longer be
        // matched, so their reals go at once); ids and reals are released only after this
        // plan, so nothing in it reuses them.
        for key in &removed {
            let svc = next
                .services
                .remove(key)
                .expect("removed service was installed");
            for real in svc.reals.values().chain(svc.retiring.values()) {
                plan.reals_down.push(Op::SetReal {
                    index: real.index,
                    real: Real::EMPTY,
                });
                next.free_reals.push_back(real.index);
            }
            next.built[svc.id as usize] = None;
            next.free_service_ids.push_back(svc.id);
        }

        // One flip publishes both tables, so a change to either rewrites both inactive halves
        // (the other half holds the table as it was two flips ago).
        let (vips, vips6) = next.wanted_vips();
        if vips != next.vips || vips6 != next.vips6 {
            let v4 = viptable::layout(&vips, self.limits.vip_buckets())?;
            let v6 = viptable::layout(&vips6, self.limits.vip_buckets())?;
            plan.vips.push(Op::SetVips { v4, v6 });
            next.vips = vips;
            next.vips6 = vips6;
        }
        Ok((plan.into_ops(), next))
    }

    fn check_capacity(&self, desired: &DesiredState) -> Result<(), PlanError> {
        let services = desired.services.len();
        if services > self.limits.max_services as usize {
            return Err(PlanError::TooManyServices {
                wanted: services,
                max: self.limits.max_services,
            });
        }
        // Reals of removed services are freed only after the plan, so count the indices in use
        // at the peak: everything kept or added, plus what is being removed.
        let mut peak = 0usize;
        for (key, spec) in &desired.services {
            peak += spec.reals.len();
            if let Some(svc) = self.services.get(key) {
                peak += svc
                    .reals
                    .keys()
                    .chain(svc.retiring.keys())
                    .filter(|r| !spec.reals.contains_key(r))
                    .count();
            }
            if let Some(real) = spec
                .reals
                .keys()
                .find(|r| r.addr.is_ipv4() != key.vip.is_ipv4())
            {
                return Err(PlanError::MixedFamily {
                    service: *key,
                    real: *real,
                });
            }
            if key.vip.is_ipv6()
                && let Some(p) = spec.persistence
                && !(1..=128).contains(&p.prefix6)
            {
                return Err(PlanError::Granularity {
                    service: *key,
                    prefix: p.prefix6,
                });
            }
            if key.port == 0 {
                return Err(PlanError::PortZero(*key));
            }
            if spec.table_size > self.limits.max_table_size {
                return Err(PlanError::TableTooLarge {
                    service: *key,
                    size: spec.table_size,
                    max: self.limits.max_table_size,
                });
            }
        }
        for (key, svc) in &self.services {
            if !desired.services.contains_key(key) {
                peak += svc.reals.len() + svc.retiring.len();
            }
        }
        let max = self.limits.max_reals.saturating_sub(1);
        if peak > max as usize {
            return Err(PlanError::TooManyReals { wanted: peak, max });
        }
        Ok(())
    }

    fn plan_service(
        &mut self,
        key: &ServiceKey,
        spec: &ServiceSpec,
        plan: &mut Plan,
    ) -> Result<(), PlanError> {
        let mut svc = match self.services.remove(key) {
            Some(svc) => svc,
            None => {
                let id = self
                    .free_service_ids
                    .pop_front()
                    .expect("capacity was checked");
                plan.reset.push(Op::ResetServiceStats(id));
                let svc = InstalledService {
                    id,
                    params: ServiceParams::default(),
                    table: (self.limits.region_base(id, 1), 0),
                    active: 1,
                    reals: BTreeMap::new(),
                    retiring: BTreeMap::new(),
                    candidates: [NO_REAL; LC_CANDIDATES],
                };
                // Parameters and table of a new service are written before the VIP table
                // makes it reachable.
                plan.params.push(Op::SetServiceParams {
                    id,
                    params: svc.params,
                });
                plan.tables.push(Op::PublishTable {
                    id,
                    base: svc.table.0,
                    size: 0,
                });
                svc
            }
        };
        let id = svc.id;

        // Reals removed from the configuration leave the table but keep their entry, so their
        // connections finish where they are (a graceful removal); `retire` releases them when
        // no connection uses them any more. A real that comes back keeps its index.
        let removed: Vec<RealKey> = svc
            .reals
            .keys()
            .filter(|r| !spec.reals.contains_key(r))
            .copied()
            .collect();
        for rk in removed {
            let real = svc.reals.remove(&rk).expect("present");
            svc.retiring.insert(rk, real);
        }
        for rk in spec.reals.keys() {
            if let Some(real) = svc.retiring.remove(rk) {
                svc.reals.insert(*rk, real);
            }
        }
        for (rk, rs) in &spec.reals {
            let value = Real {
                mac: rs.mac.unwrap_or([0; 6]),
                state: if rs.is_up() { REAL_UP } else { REAL_DOWN },
                family: if rk.addr.is_ipv4() { 4 } else { 6 },
                service_id: id,
                weight: if rs.takes_new_flows() { rs.weight } else { 0 },
                addr: addr_bytes(rk.addr),
                u_threshold: rs.thresholds.upper,
                l_threshold: rs.thresholds.lower,
            };
            match svc.reals.get_mut(rk) {
                Some(cur) if cur.value == value => {}
                Some(cur) => {
                    let op = Op::SetReal {
                        index: cur.index,
                        real: value,
                    };
                    if value.state == REAL_UP {
                        plan.reals_up.push(op);
                    } else {
                        plan.reals_down.push(op);
                    }
                    cur.value = value;
                }
                None => {
                    let index = self.free_reals.pop_front().expect("capacity was checked");
                    plan.reset.push(Op::ResetRealStats(index));
                    plan.reals_up.push(Op::SetReal { index, real: value });
                    svc.reals.insert(*rk, InstalledReal { index, value });
                }
            }
        }

        let mut params = ServiceParams {
            sched: spec.scheduler.code(),
            ..ServiceParams::default()
        };
        match spec.scheduler {
            Scheduler::SourceHash => params.flags |= SVC_F_HASH_SRC,
            Scheduler::DestinationHash => params.flags |= SVC_F_HASH_DST,
            _ => {}
        }
        if spec.flags.port {
            params.flags |= SVC_F_HASH_PORT;
        }
        if spec.flags.fallback {
            params.flags |= SVC_F_FALLBACK;
        }
        if spec.flags.one_packet {
            params.flags |= SVC_F_ONE_PACKET;
        }
        if let Some(p) = spec.persistence {
            params.flags |= SVC_F_PERSIST;
            params.persist_timeout = p.timeout;
            match key.vip {
                IpAddr::V4(_) => params.persist_mask4 = u32::from_ne_bytes(p.granularity.octets()),
                IpAddr::V6(_) => params.persist_mask6 = prefix_mask6(p.prefix6),
            }
        }
        if params != svc.params {
            plan.params.push(Op::SetServiceParams { id, params });
            svc.params = params;
        }

        // The lookup table over the reals that take new flows.
        let backends: Vec<Backend> = spec
            .reals
            .iter()
            .filter(|(_, rs)| rs.takes_new_flows())
            .map(|(rk, rs)| Backend {
                id: BackendId {
                    addr: rk.addr,
                    port: rk.port,
                },
                weight: rs.weight,
                index: svc.reals[rk].index,
            })
            .collect();
        // Least-connection candidates: every real that takes new flows, in key order; a
        // service with more than LC_CANDIDATES gets its least loaded ones from the agent.
        let mut candidates = [NO_REAL; LC_CANDIDATES];
        if spec.scheduler.is_least_conn() {
            for (slot, b) in candidates.iter_mut().zip(&backends) {
                *slot = b.index;
            }
        }
        if candidates != svc.candidates {
            plan.tables.push(Op::SetCandidates {
                id,
                reals: candidates,
            });
            svc.candidates = candidates;
        }

        // The same backends and size build the same table: nothing to rebuild or write.
        let unchanged = svc.table.1 != 0
            && self.built[id as usize]
                .as_ref()
                .is_some_and(|(b, size)| *size == spec.table_size && *b == backends);
        if !unchanged {
            let table = if backends.is_empty() {
                Vec::new()
            } else {
                maglev::build(&backends, spec.table_size).map_err(|source| PlanError::Table {
                    service: *key,
                    source,
                })?
            };
            let input = (!table.is_empty()).then_some((backends, spec.table_size));
            self.publish_table(&mut svc, table, plan);
            self.built[id as usize] = input;
        }
        self.services.insert(*key, svc);
        Ok(())
    }

    /// Writes `table` into the inactive buffer of `svc` (only the slots that differ) and
    /// publishes it, unless it is the published table already; an empty table publishes
    /// size 0 (the data plane drops) and leaves the buffers' contents.
    fn publish_table(&mut self, svc: &mut InstalledService, table: Vec<u32>, plan: &mut Plan) {
        let id = svc.id;
        let regions = &mut self.regions[id as usize];
        let published: &[u32] = if svc.table.1 == 0 {
            &[]
        } else {
            &regions[svc.active]
        };
        if table == published {
            return;
        }
        if table.is_empty() {
            svc.table.1 = 0;
        } else {
            let inactive = 1 - svc.active;
            let base = self.limits.region_base(id, inactive);
            let slots = changed_slots(&regions[inactive], &table);
            if !slots.is_empty() {
                plan.tables.push(Op::WriteSlots { base, slots });
            }
            svc.table = (base, table.len() as u32);
            regions[inactive] = Arc::new(table);
            svc.active = inactive;
        }
        plan.tables.push(Op::PublishTable {
            id,
            base: svc.table.0,
            size: svc.table.1,
        });
    }

    /// Releases retiring reals that no connection uses any more (`in_use` says whether a real
    /// index is referenced by a live connection-table entry): their entries are emptied and
    /// their indices freed. Returns the ops, the released (service, real) pairs and the
    /// resulting state.
    pub fn retire(
        &self,
        in_use: impl Fn(u32) -> bool,
    ) -> (Vec<Op>, Vec<(ServiceKey, RealKey)>, Installed) {
        let mut next = self.clone();
        let mut ops = Vec::new();
        let mut released = Vec::new();
        for (key, svc) in next.services.iter_mut() {
            let idle: Vec<RealKey> = svc
                .retiring
                .iter()
                .filter(|(_, r)| !in_use(r.index))
                .map(|(rk, _)| *rk)
                .collect();
            for rk in idle {
                let real = svc.retiring.remove(&rk).expect("present");
                ops.push(Op::SetReal {
                    index: real.index,
                    real: Real::EMPTY,
                });
                next.free_reals.push_back(real.index);
                released.push((*key, rk));
            }
        }
        (ops, released, next)
    }

    /// The entries of the IPv4 and IPv6 VIP tables: every service, plus for each (VIP,
    /// protocol) a fragment entry (port 0) pointing at its lowest-port service.
    fn wanted_vips(&self) -> (BTreeMap<Vip4Key, u32>, BTreeMap<Vip6Key, u32>) {
        let (mut vips, mut vips6) = (BTreeMap::new(), BTreeMap::new());
        for (key, svc) in &self.services {
            match (vip4_key(key), vip6_key(key)) {
                (Some(vk), _) => add_vip(&mut vips, vk, svc.id),
                (_, Some(vk)) => add_vip(&mut vips6, vk, svc.id),
                (None, None) => unreachable!("a VIP is IPv4 or IPv6"),
            }
        }
        (vips, vips6)
    }
}

/// Adds a service's VIP table entry, and the fragment entry of its VIP and protocol if no
/// lower port has it.
fn add_vip<K: VipTableKey>(vips: &mut BTreeMap<K, u32>, key: K, id: u32) {
    vips.insert(key, id);
    // Services are visited in key order (VIP, port, protocol): for each VIP and protocol the
    // first one seen has the lowest port.
    vips.entry(key.fragment()).or_insert(id);
}

/// Ops grouped by phase; [`Plan::into_ops`] puts the phases in their safe order.
#[derive(Default)]
struct Plan {
    reset: Vec<Op>,
    reals_up: Vec<Op>,
    params: Vec<Op>,
    tables: Vec<Op>,
    vips: Vec<Op>,
    reals_down: Vec<Op>,
}

impl Plan {
    fn into_ops(self) -> Vec<Op> {
        let mut ops = self.reset;
        ops.extend(self.reals_up);
        ops.extend(self.params);
        ops.extend(self.tables);
        ops.extend(self.vips);
        ops.extend(self.reals_down);
        ops
    }
}

/// The `VIPS4` key of an IPv4 service (`None` for an IPv6 one).
pub fn vip4_key(key: &ServiceKey) -> Option<Vip4Key> {
    match key.vip {
        IpAddr::V4(a) => Some(Vip4Key::from_parts(
            a.octets(),
            key.port,
            key.proto.number(),
        )),
        IpAddr::V6(_) => None,
    }
}

/// The `VIPS6` key of an IPv6 service (`None` for an IPv4 one).
pub fn vip6_key(key: &ServiceKey) -> Option<Vip6Key> {
    match key.vip {
        IpAddr::V6(a) => Some(Vip6Key::from_parts(
            a.octets(),
            key.port,
            key.proto.number(),
        )),
        IpAddr::V4(_) => None,
    }
}

/// The key of a service from its `VIPS4` key (`None` for a fragment entry or an unknown
/// protocol).
pub fn service_key_from_vip4(key: &Vip4Key) -> Option<ServiceKey> {
    service_key(IpAddr::from(key.addr.to_ne_bytes()), key.port, key.proto)
}

/// The key of a service from its `VIPS6` key (`None` for a fragment entry or an unknown
/// protocol).
pub fn service_key_from_vip6(key: &Vip6Key) -> Option<ServiceKey> {
    service_key(IpAddr::from(addr6_bytes(&key.addr)), key.port, key.proto)
}

/// A service key from a VIP table key's parts (port in network order).
fn service_key(vip: IpAddr, port_be: u16, proto: u8) -> Option<ServiceKey> {
    let proto = match proto {
        lb_common::proto::TCP => Protocol::Tcp,
        lb_common::proto::UDP => Protocol::Udp,
        _ => return None,
    };
    let port = u16::from_be(port_be);
    (port != 0).then_some(ServiceKey { vip, port, proto })
}

/// The IPv6 mask of a prefix length (1 to 128; larger lengths mean 128) as [`Addr6`] words.
pub fn prefix_mask6(prefix: u8) -> Addr6 {
    let bits = u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0);
    addr6(bits.to_be_bytes())
}

fn addr_bytes(addr: IpAddr) -> [u8; 16] {
    let mut out = [0; 16];
    match addr {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

/// Slots where `new` differs from `old` (an empty `old` reads as all zero).
fn changed_slots(old: &[u32], new: &[u32]) -> Vec<(u32, u32)> {
    new.iter()
        .enumerate()
        .filter(|&(i, v)| old.get(i).copied().unwrap_or(NO_REAL) != *v)
        .map(|(i, v)| (i as u32, *v))
        .collect()
}

#[cfg(test)]
pub(crate) mod fake_maps;
#[cfg(test)]
mod tests;
