//! Layout of the data plane's VIP tables: open-addressing hash tables (linear probing) from
//! [`Vip4Key`] (in `VIPS4`) or [`Vip6Key`] (in `VIPS6`) to service id, rebuilt whole on every
//! change into the inactive half of the table. Both families share one layout, written once
//! here over the [`VipTableKey`] trait; lookups use the data plane's own probe.

use std::collections::BTreeMap;

use lb_common::{VIP_PROBES, Vip4Key, Vip6Key, VipBucket4, VipBucket6, VipKey, find_service};
use thiserror::Error;

/// The VIP set does not fit the table within the probe limit.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "{keys} VIP entries do not fit {buckets} buckets within {VIP_PROBES} probes; raise max_services"
)]
pub struct VipTableFull {
    /// Entries to place.
    pub keys: usize,
    /// Buckets per half.
    pub buckets: u32,
}

/// A key of a VIP table as the control plane lays tables out: the data plane's
/// [`lb_common::VipKey`] (home bucket, emptiness, the probe), ordered, and able to build its
/// buckets.
pub trait VipTableKey: VipKey<Bucket: Copy> + Ord {
    /// The key of an empty bucket (ends a probe sequence).
    const EMPTY: Self;

    /// The key of the fragment entry of this key's VIP and protocol (port 0).
    fn fragment(&self) -> Self;

    /// A bucket holding this key and `service_id`.
    fn bucket(&self, service_id: u32) -> Self::Bucket;
}

impl VipTableKey for Vip4Key {
    const EMPTY: Self = Vip4Key::EMPTY;

    fn fragment(&self) -> Self {
        Vip4Key { port: 0, ..*self }
    }

    fn bucket(&self, service_id: u32) -> VipBucket4 {
        VipBucket4 {
            key: *self,
            service_id,
            _pad: 0,
        }
    }
}

impl VipTableKey for Vip6Key {
    const EMPTY: Self = Vip6Key::EMPTY;

    fn fragment(&self) -> Self {
        Vip6Key { port: 0, ..*self }
    }

    fn bucket(&self, service_id: u32) -> VipBucket6 {
        VipBucket6 {
            key: *self,
            service_id,
        }
    }
}

/// The content of one half: every key at most `VIP_PROBES - 1` buckets after its home bucket.
pub fn layout<K: VipTableKey>(
    vips: &BTreeMap<K, u32>,
    buckets: u32,
) -> Result<Vec<K::Bucket>, VipTableFull> {
    assert!(buckets.is_power_of_two());
    let mask = buckets - 1;
    let mut table = vec![K::EMPTY.bucket(0); buckets as usize];
    for (key, &service_id) in vips {
        let home = key.home();
        let free = (0..VIP_PROBES)
            .map(|probe| (home.wrapping_add(probe) & mask) as usize)
            .find(|&i| K::key_of(&table[i]).is_empty())
            .ok_or(VipTableFull {
                keys: vips.len(),
                buckets,
            })?;
        table[free] = key.bucket(service_id);
    }
    Ok(table)
}

/// Looks a key up with the data plane's probe ([`find_service`]), for tests and `lbadm --which`.
pub fn lookup<K: VipTableKey>(table: &[K::Bucket], key: &K) -> Option<u32> {
    let mask = table.len() as u32 - 1;
    find_service(key, 0, mask, |i| table.get(i as usize))
}

/// The entries of a table (its non-empty buckets).
pub fn entries<K: VipTableKey>(table: &[K::Bucket]) -> BTreeMap<K, u32> {
    table
        .iter()
        .filter(|b| !K::key_of(b).is_empty())
        .map(|b| (*K::key_of(b), K::service_of(b)))
        .collect()
}

#[cfg(test)]
mod tests {
    use lb_common::addr6;

    use super::*;
    use crate::model::vip_buckets_for as buckets_for;

    fn key(i: u32, port: u16) -> Vip4Key {
        Vip4Key::from_parts((0x0a00_0000 + i).to_be_bytes(), port, 6)
    }

    fn key6(i: u32, port: u16) -> Vip6Key {
        let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        a[12..].copy_from_slice(&i.to_be_bytes());
        Vip6Key::from_parts(a, port, 17)
    }

    #[test]
    fn every_key_is_found_and_absent_keys_are_not() {
        let vips: BTreeMap<Vip4Key, u32> = (0..128).map(|i| (key(i, 80), i)).collect();
        let table = layout(&vips, buckets_for(64)).unwrap();
        for (k, id) in &vips {
            assert_eq!(lookup(&table, k), Some(*id));
        }
        assert_eq!(lookup(&table, &key(500, 80)), None);
        assert_eq!(lookup(&table, &key(1, 81)), None);
        assert_eq!(entries::<Vip4Key>(&table), vips);
    }

    #[test]
    fn ipv6_keys_are_found_and_absent_keys_are_not() {
        let vips: BTreeMap<Vip6Key, u32> = (0..128).map(|i| (key6(i, 53), i)).collect();
        let table = layout(&vips, buckets_for(64)).unwrap();
        assert_eq!(table.len(), buckets_for(64) as usize);
        for (k, id) in &vips {
            assert_eq!(lookup(&table, k), Some(*id));
        }
        assert_eq!(lookup(&table, &key6(500, 53)), None);
        assert_eq!(lookup(&table, &key6(1, 54)), None);
        assert_eq!(lookup(&table, &key6(1, 53).fragment()), None);
        // 2001:db8::1:0:1 differs from 2001:db8::1 in the third word only.
        let mut other = key6(1, 53);
        other.addr[2] = addr6([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0])[2];
        assert_eq!(lookup(&table, &other), None);
        assert_eq!(entries::<Vip6Key>(&table), vips);
    }

    #[test]
    fn full_load_of_max_services_always_fits() {
        // Services plus fragment entries on many random-looking VIP sets, in both families.
        for seed in 0..2000u32 {
            let vips: BTreeMap<Vip4Key, u32> = (0..128u32)
                .map(|i| {
                    (
                        key(
                            seed.wrapping_mul(7919).wrapping_add(i * 104_729),
                            (i % 7) as u16,
                        ),
                        i,
                    )
                })
                .collect();
            layout(&vips, buckets_for(64)).expect("fits");
            let vips6: BTreeMap<Vip6Key, u32> = (0..128u32)
                .map(|i| {
                    (
                        key6(
                            seed.wrapping_mul(7919).wrapping_add(i * 104_729),
                            (i % 7) as u16,
                        ),
                        i,
                    )
                })
                .collect();
            layout(&vips6, buckets_for(64)).expect("fits");
        }
    }

    #[test]
    fn overfull_table_is_an_error() {
        let vips: BTreeMap<Vip4Key, u32> = (0..17).map(|i| (key(i, 80), i)).collect();
        assert_eq!(
            layout(&vips, 16).unwrap_err(),
            VipTableFull {
                keys: 17,
                buckets: 16
            }
        );
        let vips6: BTreeMap<Vip6Key, u32> = (0..17).map(|i| (key6(i, 80), i)).collect();
        assert!(layout(&vips6, 16).is_err());
    }
}
