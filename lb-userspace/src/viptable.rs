//! Layout of the data plane's VIP table: an open-addressing hash table (linear probing) from
//! [`Vip4Key`] to service id, rebuilt whole on every change into the inactive half of `VIPS4`.

use std::collections::BTreeMap;

use lb_common::{VIP_PROBES, Vip4Key, VipBucket4, vip_hash4};
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

/// Buckets per half for `max_services` services: each service and each fragment entry (at
/// most one per service) fit, at a load of at most 1/8, where a probe sequence longer than
/// `VIP_PROBES` practically never happens (and is refused, not silently lost, if it does).
pub fn buckets_for(max_services: u32) -> u32 {
    (max_services * 2 * 8).next_power_of_two().max(16)
}

/// The content of one half: every key at most `VIP_PROBES - 1` buckets after its home bucket.
pub fn layout(
    vips: &BTreeMap<Vip4Key, u32>,
    buckets: u32,
) -> Result<Vec<VipBucket4>, VipTableFull> {
    assert!(buckets.is_power_of_two());
    let mask = buckets - 1;
    let mut table = vec![VipBucket4::EMPTY; buckets as usize];
    for (key, &service_id) in vips {
        let home = vip_hash4(key.addr, key.port, key.proto);
        let free = (0..VIP_PROBES)
            .map(|probe| (home.wrapping_add(probe) & mask) as usize)
            .find(|&i| table[i].key == Vip4Key::EMPTY)
            .ok_or(VipTableFull {
                keys: vips.len(),
                buckets,
            })?;
        table[free] = VipBucket4 {
            key: *key,
            service_id,
            _pad: 0,
        };
    }
    Ok(table)
}

/// Looks a key up the way the data plane does (for tests and `lbadm --which`).
pub fn lookup(table: &[VipBucket4], key: &Vip4Key) -> Option<u32> {
    let mask = table.len() as u32 - 1;
    let home = vip_hash4(key.addr, key.port, key.proto);
    for probe in 0..VIP_PROBES {
        let b = &table[(home.wrapping_add(probe) & mask) as usize];
        if b.key == *key {
            return Some(b.service_id);
        }
        if b.key == Vip4Key::EMPTY {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32, port: u16) -> Vip4Key {
        Vip4Key::from_parts((0x0a00_0000 + i).to_be_bytes(), port, 6)
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
    }

    #[test]
    fn full_load_of_max_services_always_fits() {
        // Services plus fragment entries on many random-looking VIP sets.
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
    }
}
