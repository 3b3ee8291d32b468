//! Writing the maps: the executor of planned updates ([`Op`]) and the other writers, each
//! store made so that the data plane, reading concurrently, sees a consistent value.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use aya::{maps::PerCpuValues, util::nr_cpus};
use lb_common::{
    Candidates, Conn, Evict, Flow4Key, Flow6Key, GlobalStats, REAL_UP, RealLoad, Service, Set,
    SlotData, TrafficStats, map_names as names, set::Inserted,
};

use super::{Dataplane, DataplaneError, Result, mmap::Mmap, monotonic_seconds};
use crate::reconcile::plan::Op;

impl Dataplane {
    /// Sets the director's MAC (the source MAC of forwarded frames).
    pub fn set_mac(&mut self, mac: [u8; 6]) {
        let mut s = self.settings();
        s.mac = mac;
        // Written once before traffic flows; the clock and table fields are unchanged.
        self.settings
            .write(0, &s)
            .expect("settings has one element");
    }

    /// Sets the idle timeouts in seconds, indexed by connection state.
    pub fn set_timeouts(&mut self, timeouts: [u32; lb_common::ConnState::COUNT]) {
        let base = self.settings.ptr(0).expect("settings has one element");
        for (i, t) in timeouts.iter().enumerate() {
            // SAFETY: `base` points at the mapped settings; each timeout is an aligned u32.
            unsafe { store_u32(&raw mut (*base).timeouts[i], *t) };
        }
    }

    /// Sets the data plane's clock (seconds).
    pub fn set_clock(&mut self, seconds: u32) {
        let base = self.settings.ptr(0).expect("settings has one element");
        // SAFETY: `base` points at the mapped settings; the clock is an aligned u32.
        unsafe { store_u32(&raw mut (*base).clock, seconds) };
    }

    /// Advances the clock to the current `CLOCK_MONOTONIC` second; the agent calls this
    /// several times a second.
    pub fn tick(&mut self) {
        self.set_clock(monotonic_seconds());
    }

    /// Executes planned updates in order.
    pub fn apply(&mut self, ops: &[Op]) -> Result<()> {
        for op in ops {
            self.apply_one(op)?;
        }
        Ok(())
    }

    fn apply_one(&mut self, op: &Op) -> Result<()> {
        match op {
            Op::ResetServiceStats(id) => self
                .service_stats
                .set(*id, zero_traffic_per_cpu(), 0)
                .map_err(|source| DataplaneError::Map {
                    map: names::SERVICE_STATS,
                    source,
                }),
            Op::ResetRealStats(index) => {
                // A new user of the index: the entries an earlier user left in the table stay
                // counted (the counts always match the table) but are stale from now on.
                let load = self.real_load.ptr(*index)?;
                // SAFETY: `load` points at a mapped element; only the control plane writes
                // `up_since`. A new user starts without the old one's overload.
                unsafe {
                    store_u32(&raw mut (*load).up_since, self.clock());
                    store_u32(&raw mut (*load).overloaded, 0);
                }
                self.real_stats
                    .set(*index, zero_traffic_per_cpu(), 0)
                    .map_err(|source| DataplaneError::Map {
                        map: names::REAL_STATS,
                        source,
                    })
            }
            Op::SetReal { index, real } => {
                let p = self.reals.ptr(*index)?;
                // SAFETY: `p` points at a mapped element.
                let was_up = unsafe { std::ptr::read_volatile(&raw const (*p).state) } == REAL_UP;
                if real.state == REAL_UP && !was_up {
                    let load = self.real_load.ptr(*index)?;
                    // SAFETY: `load` points at a mapped element; only the control plane
                    // writes `up_since`.
                    unsafe { store_u32(&raw mut (*load).up_since, self.clock()) };
                }
                // SAFETY: `p` points at a mapped element.
                let thresholds = unsafe {
                    (
                        std::ptr::read_volatile(&raw const (*p).u_threshold),
                        std::ptr::read_volatile(&raw const (*p).l_threshold),
                    )
                };
                if thresholds != (real.u_threshold, real.l_threshold) {
                    // New thresholds start from "not overloaded" (IPVS clears the flag when
                    // an edit raises or removes the upper threshold); the next new flow
                    // re-evaluates it against the live counts.
                    let load = self.real_load.ptr(*index)?;
                    // SAFETY: `load` points at a mapped element.
                    unsafe { store_u32(&raw mut (*load).overloaded, 0) };
                }
                // SAFETY: `p` points at a mapped element. Identity fields and weight first,
                // then MAC, state and family together in one 8-byte store.
                unsafe {
                    std::ptr::write_volatile(&raw mut (*p).service_id, real.service_id);
                    std::ptr::write_volatile(&raw mut (*p).weight, real.weight);
                    std::ptr::write_volatile(&raw mut (*p).addr, real.addr);
                    std::ptr::write_volatile(&raw mut (*p).u_threshold, real.u_threshold);
                    std::ptr::write_volatile(&raw mut (*p).l_threshold, real.l_threshold);
                    fence(Ordering::SeqCst);
                    store_u64(p.cast::<u64>(), real.head_word());
                }
                Ok(())
            }
            Op::SetServiceParams { id, params } => {
                let p = self.services.ptr(*id)?;
                // SAFETY: `p` points at a mapped element; each field is an aligned u32.
                unsafe {
                    store_u32(&raw mut (*p).flags, params.flags);
                    store_u32(&raw mut (*p).persist_timeout, params.persist_timeout);
                    store_u32(&raw mut (*p).persist_mask4, params.persist_mask4);
                    store_u32(&raw mut (*p).sched, params.sched);
                    // Word by word: a packet racing a change of granularity may mask with a
                    // mix of the old and new prefix, which places at most that packet's new
                    // flow as under a prefix in between.
                    for (i, word) in params.persist_mask6.iter().enumerate() {
                        store_u32(&raw mut (*p).persist_mask6[i], *word);
                    }
                }
                Ok(())
            }
            Op::SetCandidates { id, reals } => self.set_candidates(*id, reals),
            Op::WriteSlots { base, slots } => {
                for &(offset, real) in slots {
                    let p = self.lookup_slot_ptr(base + offset)?;
                    // SAFETY: `p` points at a slot inside a mapped row.
                    unsafe { p.write_volatile(real) };
                }
                Ok(())
            }
            Op::PublishTable { id, base, size } => {
                let p = self.services.ptr(*id)?;
                // The slots are written before the table that points at them is published.
                fence(Ordering::SeqCst);
                // SAFETY: `p` points at a mapped element; `table` is an aligned u64.
                unsafe { store_u64(&raw mut (*p).table, Service::pack_table(*base, *size)) };
                Ok(())
            }
            Op::SetVips { v4, v6 } => {
                let half = self.limits.vip_buckets();
                let active = self.settings().vip_base;
                let inactive = if active == 0 { half } else { 0 };
                // Both inactive halves are written before the one flip that publishes them.
                for (i, b) in v4.iter().enumerate() {
                    self.vips4.write(inactive + i as u32, b)?;
                }
                for (i, b) in v6.iter().enumerate() {
                    self.vips6.write(inactive + i as u32, b)?;
                }
                fence(Ordering::SeqCst);
                let s = self.settings.ptr(0)?;
                // SAFETY: `s` points at the mapped settings; vip_base is an aligned u32.
                unsafe { store_u32(&raw mut (*s).vip_base, inactive) };
                Ok(())
            }
        }
    }

    /// Sets or clears a real's overload (see [`RealLoad::overloaded`]).
    pub fn set_overloaded(&mut self, index: u32, overloaded: bool) -> Result<()> {
        let load = self.real_load.ptr(index)?;
        // SAFETY: `load` points at a mapped element; `overloaded` is an aligned u32.
        unsafe { store_u32(&raw mut (*load).overloaded, u32::from(overloaded)) };
        Ok(())
    }

    /// Writes a real's stale counts (see [`RealLoad`]), one aligned 8-byte store each.
    pub fn set_stale(&mut self, index: u32, active: u64, inactive: u64) -> Result<()> {
        let p = self.real_load.ptr(index)?;
        // SAFETY: `p` points at a mapped element; only the control plane writes these fields.
        unsafe {
            store_u64((&raw mut (*p).stale_active).cast(), active);
            store_u64((&raw mut (*p).stale_inactive).cast(), inactive);
        }
        Ok(())
    }

    /// Adds `delta`'s `active` and `inactive` to a real's counts, atomically with respect to
    /// the data plane's own updates; the other fields of `delta` are ignored. For tests and
    /// simulations that need a real to look loaded without building its connections.
    pub fn adjust_real_load(&mut self, index: u32, delta: RealLoad) -> Result<()> {
        let p = self.real_load.ptr(index)?;
        // SAFETY: `p` points at a mapped element; both fields are aligned i64s.
        unsafe {
            lb_common::atomic_add(&raw mut (*p).active, delta.active);
            lb_common::atomic_add(&raw mut (*p).inactive, delta.inactive);
        }
        Ok(())
    }

    /// Writes a least-connection service's candidates, one aligned 4-byte store per slot (a
    /// packet may see a mix of old and new candidates, every one of them a real index the data
    /// plane checks before use).
    pub fn set_candidates(&mut self, id: u32, reals: &Candidates) -> Result<()> {
        let p = self.candidates.ptr(id)?.cast::<u32>();
        for (i, &r) in reals.iter().enumerate() {
            // SAFETY: `p` points at LC_CANDIDATES consecutive mapped u32s.
            unsafe { store_u32(p.add(i), r) };
        }
        Ok(())
    }

    /// Zeroes the director-wide counters (`ipvsadm -Z` of everything).
    pub fn reset_global_stats(&mut self) -> Result<()> {
        let cpus = nr_cpus().map(|n| n.max(1)).unwrap_or(1);
        let zero = PerCpuValues::try_from(vec![GlobalStats::default(); cpus])
            .expect("one value per possible CPU");
        self.global_stats
            .set(0, zero, 0)
            .map_err(|source| DataplaneError::Map {
                map: names::GLOBAL_STATS,
                source,
            })
    }

    /// Stores an IPv4 connection entry the way the data plane does, stamped with the current
    /// clock (tests and simulations; the connection counts are left alone); false if the set
    /// was being written.
    pub fn insert_conn4(&mut self, key: &Flow4Key, conn: &Conn) -> bool {
        let now = self.clock();
        insert(
            &self.conns4,
            self.limits.conn_sets(),
            key,
            key.hash(),
            conn,
            now,
        )
    }

    /// [`Dataplane::insert_conn4`] for the IPv6 connection table.
    pub fn insert_conn6(&mut self, key: &Flow6Key, conn: &Conn) -> bool {
        let now = self.clock();
        insert(
            &self.conns6,
            self.limits.conn6_sets(),
            key,
            key.hash(),
            conn,
            now,
        )
    }
}

/// Stores `key` -> `value` stamped `now` the way the data plane does; false if the set was
/// being written.
fn insert<K: SlotData, V: SlotData, const W: usize>(
    map: &Mmap<Set<K, V, W>>,
    sets: u32,
    key: &K,
    hash: u32,
    value: &V,
    now: u32,
) -> bool {
    let Ok(set) = map.ptr(hash & (sets - 1)) else {
        return false;
    };
    // SAFETY: `set` points at a mapped set.
    let stored =
        unsafe { Set::<K, V, W>::insert(set, key, hash | 1, value, now, |_, _| Evict::Live) };
    matches!(stored, Inserted::Stored { .. })
}

/// Stores an aligned u32 in one instruction (the data plane reads it concurrently).
///
/// # Safety
/// `p` must be valid and 4-byte aligned.
pub(super) unsafe fn store_u32(p: *mut u32, v: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { AtomicU32::from_ptr(p) }.store(v, Ordering::Release);
}

/// Stores an aligned u64 in one instruction (the data plane reads it concurrently).
///
/// # Safety
/// `p` must be valid and 8-byte aligned.
unsafe fn store_u64(p: *mut u64, v: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { AtomicU64::from_ptr(p) }.store(v, Ordering::Release);
}

fn zero_traffic_per_cpu() -> PerCpuValues<TrafficStats> {
    let cpus = nr_cpus().map(|n| n.max(1)).unwrap_or(1);
    PerCpuValues::try_from(vec![TrafficStats::default(); cpus]).expect("one value per possible CPU")
}
