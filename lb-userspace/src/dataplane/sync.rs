//! The data plane's side of director sync: the switch that makes the program announce the
//! flows it confirms, the reader of those announcements (each CPU's ring in `SYNC_RING`), and the writer that
//! stores the flows peers announce into this director's tables.
//!
//! A peer's flow is stored the way the program stores its own (the same slot rules and
//! eviction classes, the real's connection counts adjusted), with one rule of its own: when
//! both sides know the flow, the side that saw it more recently wins, so an old announcement
//! never moves a flow this director is serving.

use lb_common::{
    Conn, FlowKey, Inserted, RealLoad, SVC_F_PERSIST, SYNC_SLOTS, Set, SlotData, SyncEvent,
    SyncedFlow, Template, conn_eviction,
};

use super::{Dataplane, DataplaneError, Result, mmap::Mmap, write::store_u32};
use crate::model::PersistKey;

/// What one read of the announcement rings gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncDrain {
    /// The announcements, each CPU's in the order written.
    pub events: Vec<SyncEvent>,
    /// Announcements overwritten before they were read (the agent read too late).
    pub lost: u64,
}

/// What storing a peer's entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerStore {
    /// Stored: the flow was unknown here, or known less recently on another real.
    Stored,
    /// Already here on the same real; its last-used time (and state) brought forward.
    Refreshed,
    /// Known here more recently on another real: left as it is.
    Kept,
    /// Its set is full of entries it may not evict, or another writer held the set.
    NoRoom,
}

impl Dataplane {
    /// Turns the program's flow announcements on or off (`Settings::sync`).
    pub fn set_sync(&mut self, on: bool) -> Result<()> {
        let s = self.settings.ptr(0)?;
        // SAFETY: `s` points at the mapped settings; `sync` is an aligned u32.
        unsafe { store_u32(&raw mut (*s).sync, u32::from(on)) };
        Ok(())
    }

    /// Places the reader of each CPU's ring at its oldest slot still held: on fresh maps, the
    /// start; on adopted ones, what the program announced while no agent read (up to a ring).
    pub(super) fn start_sync_reader(&mut self) -> Result<()> {
        let slots = u64::from(SYNC_SLOTS);
        self.sync_next = self
            .sync_heads()?
            .iter()
            .map(|h| h.saturating_sub(slots))
            .collect();
        Ok(())
    }

    /// How many announcements each CPU has written.
    fn sync_heads(&self) -> Result<Vec<u64>> {
        let heads = self
            .sync_head
            .get(&0, 0)
            .map_err(|source| DataplaneError::Map {
                map: lb_common::map_names::SYNC_HEAD,
                source,
            })?;
        Ok(heads.iter().copied().collect())
    }

    /// Takes up to `max` announcements the program has written since the last call (each
    /// CPU's in order), and how many were overwritten before they could be read.
    pub fn drain_sync_ring(&mut self, max: usize) -> Result<SyncDrain> {
        let heads = self.sync_heads()?;
        let slots = u64::from(SYNC_SLOTS);
        if self.sync_next.len() != heads.len() {
            self.start_sync_reader()?;
        }
        let mut drain = SyncDrain::default();
        for (cpu, &head) in heads.iter().enumerate() {
            let next = &mut self.sync_next[cpu];
            // A ring recreated under us starts over.
            if head < *next {
                *next = head.saturating_sub(slots);
            }
            if head - *next > slots {
                drain.lost += head - *next - slots;
                *next = head - slots;
            }
            while *next < head && drain.events.len() < max {
                let index = cpu as u32 * SYNC_SLOTS + (*next % slots) as u32;
                let slot = self.sync_ring.ptr(index)?;
                let want = *next + 1;
                *next += 1;
                // SAFETY: `slot` points at a mapped slot; the program writes the sequence
                // number last, and on x86 its stores are seen in order, so a matching number
                // before and after the copy means the event was whole.
                let event = unsafe {
                    let seq = &raw const (*slot).seq;
                    if std::ptr::read_volatile(seq) != want {
                        drain.lost += 1;
                        continue;
                    }
                    let event = std::ptr::read_volatile(&raw const (*slot).event);
                    std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
                    if std::ptr::read_volatile(seq) != want {
                        drain.lost += 1;
                        continue;
                    }
                    event
                };
                drain.events.push(event);
            }
        }
        Ok(drain)
    }

    /// Stores a peer's flow on real `conn.real`, last used at clock second `stamp`; for a
    /// persistent service (`service_id`) its client's template follows it.
    pub fn store_peer_conn(
        &mut self,
        flow: &SyncedFlow,
        conn: &Conn,
        stamp: u32,
        service_id: u32,
    ) -> Result<PeerStore> {
        let l = self.limits;
        match flow {
            SyncedFlow::V4(key) => {
                let tables = (
                    &self.conns4,
                    l.conn_sets(),
                    &self.persist4,
                    l.persist_sets(),
                );
                store_peer_flow(self, tables, key, conn, stamp, service_id)
            }
            SyncedFlow::V6(key) => {
                let tables = (
                    &self.conns6,
                    l.conn6_sets(),
                    &self.persist6,
                    l.persist6_sets(),
                );
                store_peer_flow(self, tables, key, conn, stamp, service_id)
            }
        }
    }
}

/// One family's connection table and persistence table, each with its number of sets.
type FamilyTables<'a, K> = (
    &'a Mmap<Set<K, Conn, { lb_common::CONN_WAYS }>>,
    u32,
    &'a Mmap<Set<<K as FlowKey>::Client, Template, { lb_common::PERSIST_WAYS }>>,
    u32,
);

/// Stores a peer's flow, and for a persistent service its client's template (see
/// [`Dataplane::store_peer_conn`]).
fn store_peer_flow<K: FlowKey>(
    dp: &Dataplane,
    (conns, conn_sets, persist, persist_sets): FamilyTables<'_, K>,
    key: &K,
    conn: &Conn,
    stamp: u32,
    service_id: u32,
) -> Result<PeerStore>
where
    K::Client: PersistKey,
{
    let stored = store_peer(dp, conns, conn_sets, key, conn, stamp)?;
    if matches!(stored, PeerStore::Stored | PeerStore::Refreshed) {
        let svc = dp.service(service_id)?;
        if svc.flags & SVC_F_PERSIST != 0 {
            let client = key.client(service_id, &svc);
            store_template(dp, persist, persist_sets, &client, conn.real, stamp, &svc)?;
        }
    }
    Ok(stored)
}

/// Stores a peer's entry for `key` in a connection table of `sets` sets (see [`PeerStore`]).
fn store_peer<K: FlowKey>(
    dp: &Dataplane,
    map: &Mmap<Set<K, Conn, { lb_common::CONN_WAYS }>>,
    sets: u32,
    key: &K,
    conn: &Conn,
    stamp: u32,
) -> Result<PeerStore> {
    let settings = dp.settings();
    let now = settings.clock;
    // A flow the peer used before its real became usable here still counts on it: the real
    // was up on the peer (see `schedule::load` for why older entries would not count).
    let since = dp.real_load(conn.real)?.up_since;
    let stamp = if newer(since, stamp) { since } else { stamp };
    let hash = key.flow_hash();
    let set = map.ptr(hash & (sets - 1))?;
    // SAFETY: `set` points at a mapped set of the table.
    if let Some(found) = unsafe { Set::find(set, key, hash | 1) }
        && settings.conn_live(found.value.state, found.stamp)
    {
        let local = found.value;
        if local.real != conn.real {
            if newer(found.stamp, stamp) {
                return Ok(PeerStore::Kept);
            }
        } else {
            // Same real: the peer's state applies unless this director saw the flow later
            // (a close announced in the second the flow was last used here must land).
            if found.stamp != stamp && newer(found.stamp, stamp) {
                return Ok(PeerStore::Refreshed);
            }
            // SAFETY: `found.way` is a slot of `set`.
            unsafe { Set::touch(set, found.way, conn, stamp) };
            recount(dp, conn, Some(local));
            return Ok(PeerStore::Refreshed);
        }
    }
    let evict = |old: &Conn, old_stamp: u32| conn_eviction(&settings, conn.state, old, old_stamp);
    // SAFETY: `set` points at a mapped set of the table.
    match unsafe { Set::insert(set, key, hash | 1, conn, now, evict) } {
        Inserted::Busy | Inserted::Full => Ok(PeerStore::NoRoom),
        Inserted::Stored { replaced, .. } => {
            restamp(set, key, hash | 1, stamp, now);
            recount(dp, conn, replaced);
            Ok(PeerStore::Stored)
        }
    }
}

/// Points a persistent service's client template at `real` unless it was used here more
/// recently for another real.
fn store_template<K: SlotData + PersistKey>(
    dp: &Dataplane,
    map: &Mmap<Set<K, Template, { lb_common::PERSIST_WAYS }>>,
    sets: u32,
    key: &K,
    real: u32,
    stamp: u32,
    svc: &lb_common::Service,
) -> Result<()> {
    let now = dp.clock();
    let hash = key.table_hash();
    let set = map.ptr(hash & (sets - 1))?;
    let template = Template { real, _pad: 0 };
    // SAFETY: `set` points at a mapped set of the table.
    if let Some(found) = unsafe { Set::find(set, key, hash | 1) }
        && svc.template_live(now, found.stamp)
    {
        if newer(found.stamp, stamp) {
            return Ok(());
        }
        // SAFETY: `found.way` is a slot of `set`.
        unsafe { Set::touch(set, found.way, &template, stamp) };
        return Ok(());
    }
    let evict = |_: &Template, old: u32| svc.template_eviction(now, old);
    // SAFETY: `set` points at a mapped set of the table.
    if unsafe { Set::insert(set, key, hash | 1, &template, now, evict) }.stored() {
        restamp(set, key, hash | 1, stamp, now);
    }
    Ok(())
}

/// Whether a local entry last used at `local` is more recent than a peer's at `peer`.
fn newer(local: u32, peer: u32) -> bool {
    // Clock seconds wrap after 136 years; compare as the data plane does, by difference.
    (local.wrapping_sub(peer) as i32) >= 0
}

/// Sets the last-used time of the just-inserted `key` to `stamp` (inserts stamp with the
/// clock, so that the set's least-recently-used ranking stays right).
fn restamp<K: SlotData, V: SlotData, const W: usize>(
    set: *mut Set<K, V, W>,
    key: &K,
    tag: u32,
    stamp: u32,
    now: u32,
) {
    if stamp == now {
        return;
    }
    // SAFETY: `set` points at a mapped set (caller); `found.way` is one of its slots.
    unsafe {
        if let Some(found) = Set::find(set, key, tag) {
            Set::touch(set, found.way, &found.value, stamp);
        }
    }
}

/// The connection counts follow the table: `conn` in, what it replaced out.
fn recount(dp: &Dataplane, conn: &Conn, replaced: Option<Conn>) {
    let add = |real: u32, state: u8, delta: i64| {
        if let Ok(p) = dp.real_load.ptr(real) {
            // SAFETY: `p` points at a mapped `RealLoad`; `add` is atomic against the program.
            unsafe { RealLoad::add(p, state, delta) };
        }
    };
    add(conn.real, conn.state, 1);
    if let Some(old) = replaced {
        add(old.real, old.state, -1);
    }
}
