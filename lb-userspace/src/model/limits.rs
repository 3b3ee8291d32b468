//! What the maps were created with and how the program is attached: the capacities every
//! layer sizes its tables by.

use lb_common::LOOKUP_ROW;

/// Capacities the maps were created with (set by the loader from configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Maximum number of virtual services.
    pub max_services: u32,
    /// Maximum number of reals over all services (index 0 is reserved, so one slot fewer).
    pub max_reals: u32,
    /// Largest Maglev table a service may use.
    pub max_table_size: u32,
    /// IPv4 connection-table entries (rounded up to a power of two).
    pub conn_entries: u32,
    /// IPv4 persistence-template entries (rounded up to a power of two).
    pub persist_entries: u32,
    /// IPv6 connection-table entries (rounded up to a power of two).
    pub conn_entries6: u32,
    /// IPv6 persistence-template entries (rounded up to a power of two).
    pub persist_entries6: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_services: 64,
            max_reals: 4096,
            max_table_size: lb_common::DEFAULT_TABLE_SIZE,
            conn_entries: 1 << 20,
            persist_entries: 1 << 16,
            conn_entries6: 1 << 18,
            persist_entries6: 1 << 14,
        }
    }
}

impl Limits {
    /// Slots reserved per table buffer: `max_table_size` rounded up to whole `LOOKUP` rows.
    pub fn region_slots(&self) -> u32 {
        self.max_table_size.div_ceil(LOOKUP_ROW) * LOOKUP_ROW
    }

    /// Flat slots of the `LOOKUP` array: two buffers per service.
    pub fn lookup_slots(&self) -> u32 {
        self.max_services * 2 * self.region_slots()
    }

    /// Flat slot index of slot 0 of buffer `buf` of service `id`.
    pub fn region_base(&self, id: u32, buf: usize) -> u32 {
        (id * 2 + buf as u32) * self.region_slots()
    }

    /// Buckets per half of the VIP table.
    pub fn vip_buckets(&self) -> u32 {
        vip_buckets_for(self.max_services)
    }

    /// Sets of the IPv4 connection table.
    pub fn conn_sets(&self) -> u32 {
        sets(self.conn_entries, lb_common::CONN_WAYS)
    }

    /// Sets of the IPv4 persistence table.
    pub fn persist_sets(&self) -> u32 {
        sets(self.persist_entries, lb_common::PERSIST_WAYS)
    }

    /// Sets of the IPv6 connection table.
    pub fn conn6_sets(&self) -> u32 {
        sets(self.conn_entries6, lb_common::CONN_WAYS)
    }

    /// Sets of the IPv6 persistence table.
    pub fn persist6_sets(&self) -> u32 {
        sets(self.persist_entries6, lb_common::PERSIST_WAYS)
    }
}

/// Sets of `ways` slots that hold `entries`, rounded up to a power of two.
fn sets(entries: u32, ways: usize) -> u32 {
    entries.div_ceil(ways as u32).next_power_of_two()
}

/// Buckets per half of the VIP tables for `max_services` services: each service and each
/// fragment entry (at most one per service) fit, at a load of at most 1/8, where a probe
/// sequence longer than `VIP_PROBES` practically never happens (and is refused, not silently
/// lost, if it does). The IPv4 and IPv6 tables have the same size (one `vip_mask` serves both).
pub fn vip_buckets_for(max_services: u32) -> u32 {
    (max_services * 2 * 8).next_power_of_two().max(16)
}

/// How to attach the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) XDP.
    Driver,
    /// Generic (skb) XDP.
    Skb,
    /// Driver, else skb with a warning.
    Auto,
}
