//! Reading the maps back: what is installed, the tables, connection entries and counters.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::atomic::{AtomicI64, Ordering},
};

use aya::maps::{MapData, PerCpuArray};
use lb_common::{
    Candidates, Conn, Flow4Key, Flow6Key, GlobalStats, LOOKUP_ROW, Persist4Key, Persist6Key, Real,
    RealLoad, Service, Set, Settings, SlotData, Template, TrafficStats, VipBucket4, VipBucket6,
    map_names as names, set::Found,
};

use super::{Dataplane, DataplaneError, Result, mmap::Mmap};
use crate::{
    model::{Conn6Entry, ConnEntry, Limits, Template6Entry, TemplateEntry},
    reconcile::plan::Installed,
    schedule::load::{self, Counts},
};

impl Dataplane {
    /// Map capacities.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Reads the director settings.
    pub fn settings(&self) -> Settings {
        self.settings.read(0).expect("settings has one element")
    }

    /// The data plane's clock.
    pub fn clock(&self) -> u32 {
        self.settings().clock
    }

    /// The planner's view of what these maps hold (after adopting pinned maps), and the
    /// indices of reals left behind by an interrupted change.
    pub fn installed(&self) -> Result<(Installed, Vec<u32>)> {
        let l = self.limits;
        let vips = self.vip_table()?;
        let vips6 = self.vip_table6()?;
        let services = (0..l.max_services)
            .map(|i| self.services.read(i))
            .collect::<Result<Vec<_>>>()?;
        let reals = (0..l.max_reals)
            .map(|i| self.reals.read(i))
            .collect::<Result<Vec<_>>>()?;
        let candidates = (0..l.max_services)
            .map(|i| self.candidates.read(i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Installed::reconstruct(
            l,
            &vips,
            &vips6,
            &services,
            &candidates,
            &reals,
            |slot| self.lookup_slot(slot).unwrap_or(0),
        ))
    }

    /// Reads flat slot `index` of the lookup array.
    pub fn lookup_slot(&self, index: u32) -> Result<u32> {
        let p = self.lookup_slot_ptr(index)?;
        // SAFETY: `p` points at a slot inside a mapped row.
        Ok(unsafe { p.read_volatile() })
    }

    pub(super) fn lookup_slot_ptr(&self, index: u32) -> Result<*mut u32> {
        let row = self.lookup.ptr(index / LOOKUP_ROW)?;
        // SAFETY: a row is LOOKUP_ROW consecutive u32 slots.
        Ok(unsafe { row.cast::<u32>().add((index % LOOKUP_ROW) as usize) })
    }

    /// The active half of the IPv4 VIP table.
    pub fn vip_table(&self) -> Result<Vec<VipBucket4>> {
        let base = self.settings().vip_base;
        (0..self.limits.vip_buckets())
            .map(|i| self.vips4.read(base + i))
            .collect()
    }

    /// The active half of the IPv6 VIP table.
    pub fn vip_table6(&self) -> Result<Vec<VipBucket6>> {
        let base = self.settings().vip_base;
        (0..self.limits.vip_buckets())
            .map(|i| self.vips6.read(base + i))
            .collect()
    }

    /// Reads a service's entry.
    pub fn service(&self, id: u32) -> Result<Service> {
        self.services.read(id)
    }

    /// Reads `REALS[index]`.
    pub fn real(&self, index: u32) -> Result<Real> {
        self.reals.read(index)
    }

    /// A real's connection counts as the data plane keeps them (see [`RealLoad`]).
    pub fn real_load(&self, index: u32) -> Result<RealLoad> {
        let p = self.real_load.ptr(index)?;
        // SAFETY: `p` points at a mapped element; the counts are aligned i64s that the data
        // plane changes only with atomic adds.
        unsafe {
            Ok(RealLoad {
                active: AtomicI64::from_ptr(&raw mut (*p).active).load(Ordering::Relaxed),
                inactive: AtomicI64::from_ptr(&raw mut (*p).inactive).load(Ordering::Relaxed),
                stale_active: std::ptr::read_volatile(&raw const (*p).stale_active),
                stale_inactive: std::ptr::read_volatile(&raw const (*p).stale_inactive),
                up_since: std::ptr::read_volatile(&raw const (*p).up_since),
                overloaded: std::ptr::read_volatile(&raw const (*p).overloaded),
            })
        }
    }

    /// Counts the stale entries of `reals` (indices) in both connection tables and writes the
    /// counts that changed beside the data plane's (see [`load`]), then re-evaluates the
    /// overload of those with connection thresholds against their live counts
    /// (`lb_common::overloaded`: the recount is when ended connections leave the counts, so it
    /// is where an overload ends, as IPVS ends it when it unbinds a connection). Returns the
    /// reals whose stale counts changed, with the new counts, for logging and tests.
    pub fn reconcile_loads(&mut self, reals: &[u32]) -> Result<Vec<(u32, Counts)>> {
        let loads = reals
            .iter()
            .map(|&i| Ok((i, self.real_load(i)?)))
            .collect::<Result<BTreeMap<u32, RealLoad>>>()?;
        let settings = self.settings();
        let up_since = |i| loads.get(&i).map(|l: &RealLoad| l.up_since);
        let mut found = load::stale(self.conns4(), &settings, up_since);
        load::stale_into(&mut found, self.conns6(), &settings, up_since);
        let mut changed = Vec::new();
        for (&index, real) in &loads {
            let now = found.get(&index).copied().unwrap_or_default();
            let before = Counts {
                active: real.stale_active.max(0) as u64,
                inactive: real.stale_inactive.max(0) as u64,
            };
            if now != before {
                self.set_stale(index, now.active, now.inactive)?;
                changed.push((index, now));
            }
            let r = self.real(index)?;
            if r.u_threshold != 0 || real.overloaded != 0 {
                let live = RealLoad {
                    stale_active: now.active as i64,
                    stale_inactive: now.inactive as i64,
                    ..*real
                }
                .live();
                let over = lb_common::overloaded(
                    real.overloaded != 0,
                    live.0.saturating_add(live.1),
                    r.u_threshold,
                    r.l_threshold,
                );
                if over != (real.overloaded != 0) {
                    self.set_overloaded(index, over)?;
                }
            }
        }
        Ok(changed)
    }

    /// A least-connection service's candidates.
    pub fn candidates(&self, id: u32) -> Result<Candidates> {
        self.candidates.read(id)
    }

    /// Director-wide counters, summed over CPUs.
    pub fn global_stats(&self) -> Result<GlobalStats> {
        let per_cpu = self
            .global_stats
            .get(&0, 0)
            .map_err(|source| DataplaneError::Map {
                map: names::GLOBAL_STATS,
                source,
            })?;
        Ok(per_cpu.iter().fold(GlobalStats::default(), |mut sum, s| {
            sum.add(s);
            sum
        }))
    }

    /// Counters of a service id, summed over CPUs.
    pub fn service_stats(&self, id: u32) -> Result<TrafficStats> {
        sum_traffic(&self.service_stats, id, names::SERVICE_STATS)
    }

    /// Counters of a real index, summed over CPUs.
    pub fn real_stats(&self, index: u32) -> Result<TrafficStats> {
        sum_traffic(&self.real_stats, index, names::REAL_STATS)
    }

    /// Every used slot of the IPv4 connection table (expired ones included).
    pub fn conns4(&self) -> Vec<ConnEntry> {
        scan(&self.conns4, self.limits.conn_sets())
            .into_iter()
            .map(conn_entry)
            .collect()
    }

    /// Every used slot of the IPv6 connection table (expired ones included).
    pub fn conns6(&self) -> Vec<Conn6Entry> {
        scan(&self.conns6, self.limits.conn6_sets())
            .into_iter()
            .map(conn_entry)
            .collect()
    }

    /// Real indices that a live (unexpired) entry of either connection table points at.
    pub fn reals_in_use(&self) -> BTreeSet<u32> {
        let s = self.settings();
        let live = |stamp: u32, conn: &Conn| s.conn_live(conn.state, stamp);
        let v4 = self.conns4().into_iter().filter(|e| live(e.stamp, &e.conn));
        let v6 = self.conns6().into_iter().filter(|e| live(e.stamp, &e.conn));
        v4.map(|e| e.conn.real)
            .chain(v6.map(|e| e.conn.real))
            .collect()
    }

    /// The IPv4 connection-table entry of one flow.
    pub fn conn4(&self, key: &Flow4Key) -> Option<ConnEntry> {
        find(&self.conns4, self.limits.conn_sets(), key, key.hash()).map(conn_entry)
    }

    /// The IPv6 connection-table entry of one flow.
    pub fn conn6(&self, key: &Flow6Key) -> Option<Conn6Entry> {
        find(&self.conns6, self.limits.conn6_sets(), key, key.hash()).map(conn_entry)
    }

    /// Every used slot of the IPv4 persistence table.
    pub fn persist4(&self) -> Vec<TemplateEntry> {
        scan(&self.persist4, self.limits.persist_sets())
            .into_iter()
            .map(template_entry)
            .collect()
    }

    /// Every used slot of the IPv6 persistence table.
    pub fn persist6(&self) -> Vec<Template6Entry> {
        scan(&self.persist6, self.limits.persist6_sets())
            .into_iter()
            .map(template_entry)
            .collect()
    }

    /// The IPv4 persistence template of one client network.
    pub fn template4(&self, key: &Persist4Key) -> Option<TemplateEntry> {
        find(&self.persist4, self.limits.persist_sets(), key, key.hash()).map(template_entry)
    }

    /// The IPv6 persistence template of one client network.
    pub fn template6(&self, key: &Persist6Key) -> Option<Template6Entry> {
        find(&self.persist6, self.limits.persist6_sets(), key, key.hash()).map(template_entry)
    }
}

/// Every used slot of a set-associative table of `sets` sets.
fn scan<K: SlotData, V: SlotData, const W: usize>(
    map: &Mmap<Set<K, V, W>>,
    sets: u32,
) -> Vec<Found<K, V>> {
    let mut out = Vec::new();
    for s in 0..sets {
        let set = map.ptr(s).expect("set index in range");
        for way in 0..W {
            // SAFETY: `set` points at a mapped set and `way < W`.
            if let Some(f) = unsafe { Set::<K, V, W>::read_slot(set, way) } {
                out.push(f);
            }
        }
    }
    out
}

/// The slot of `key` (whose hash is `hash`) in a table of `sets` sets, as the data plane finds
/// it: set `hash & (sets - 1)`, tag `hash | 1`.
fn find<K: SlotData, V: SlotData, const W: usize>(
    map: &Mmap<Set<K, V, W>>,
    sets: u32,
    key: &K,
    hash: u32,
) -> Option<Found<K, V>> {
    let set = map.ptr(hash & (sets - 1)).ok()?;
    // SAFETY: `set` points at a mapped set.
    unsafe { Set::<K, V, W>::find(set, key, hash | 1) }
}

fn conn_entry<K>(f: Found<K, Conn>) -> ConnEntry<K> {
    ConnEntry {
        key: f.key,
        conn: f.value,
        stamp: f.stamp,
    }
}

fn template_entry<K>(f: Found<K, Template>) -> TemplateEntry<K> {
    TemplateEntry {
        key: f.key,
        template: f.value,
        stamp: f.stamp,
    }
}

fn sum_traffic(
    map: &PerCpuArray<MapData, TrafficStats>,
    index: u32,
    name: &'static str,
) -> Result<TrafficStats> {
    let per_cpu = map
        .get(&index, 0)
        .map_err(|source| DataplaneError::Map { map: name, source })?;
    Ok(per_cpu.iter().fold(TrafficStats::default(), |mut sum, s| {
        sum.add(s);
        sum
    }))
}
