//! Set-associative tables on top of BPF arrays: the connection table and the persistence
//! templates.
//!
//! A key hashes to one set of `W` slots; lookup compares the key's tag and key in each slot. A
//! new key takes the slot already holding it, else an empty slot, else an expired one, else the
//! least recently used one (LRU replacement within the set). The data plane reads and writes
//! these tables from every CPU at once, with these rules:
//!
//! - **Writers** (inserting a key) take the set's lock with a 64-bit compare-and-swap and give up
//!   if another CPU holds it: the frame is still forwarded, the flow's next packet stores it.
//! - **A slot is rewritten** as: tag := 0, key and value, stamp, tag := the new tag.
//! - **Readers take no lock.** They read the tag, then the key and value, then the tag again, and
//!   use the slot only if both tag reads match. On x86 (stores are seen in program order) a reader
//!   that raced with a rewrite sees a mismatch and treats the slot as a miss; it never sees one
//!   key's value under another key.
//! - **Updates of a live slot's stamp and value** (TCP state as packets pass) are plain stores by
//!   whichever CPU handles the flow.
//!
//! The same code runs in the eBPF program and in userspace (listings read the memory-mapped
//! arrays with it).

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

/// Keys and values stored in set slots: plain data whose size is a multiple of 8 bytes, read,
/// compared and written as whole 8-byte words (a struct with byte-sized padding fields would
/// otherwise be copied byte by byte in BPF).
///
/// # Safety
/// `Words` must be `[u64; N]` with `N * 8 == size_of::<Self>()`, and every bit pattern of it
/// must be a valid `Self`.
pub unsafe trait SlotData: Copy {
    /// The value as words.
    type Words: Copy + PartialEq + Default + AsRef<[u64]> + AsMut<[u64]>;

    /// The value as words.
    #[inline(always)]
    fn to_words(&self) -> Self::Words {
        // SAFETY: the trait's contract: same size, plain data.
        unsafe { core::mem::transmute_copy(self) }
    }

    /// The value from words.
    #[inline(always)]
    fn from_words(words: Self::Words) -> Self {
        // SAFETY: the trait's contract: same size, every bit pattern valid.
        unsafe { core::mem::transmute_copy(&words) }
    }
}

/// Reads `T` at `p` as volatile 8-byte loads.
///
/// # Safety
/// `p` must be valid and 8-byte aligned.
#[inline(always)]
unsafe fn load<T: SlotData>(p: *const T) -> T::Words {
    let mut words = T::Words::default();
    for (i, w) in words.as_mut().iter_mut().enumerate() {
        // SAFETY: `p` is valid and aligned (caller); `i` words fit in `T`.
        *w = unsafe { read_volatile(p.cast::<u64>().add(i)) };
    }
    words
}

/// Whether two keys' words are equal: one xor-or chain, no early exit and no call (an array
/// comparison of more than two words would become a `memcmp` call, which BPF does not have).
#[inline(always)]
fn same<W: AsRef<[u64]>>(a: &W, b: &W) -> bool {
    let mut diff = 0;
    for (x, y) in a.as_ref().iter().zip(b.as_ref()) {
        diff |= x ^ y;
    }
    diff == 0
}

/// Writes `T` at `p` as volatile 8-byte stores.
///
/// # Safety
/// `p` must be valid and 8-byte aligned.
#[inline(always)]
unsafe fn store<T: SlotData>(p: *mut T, value: &T) {
    for (i, w) in value.to_words().as_ref().iter().enumerate() {
        // SAFETY: `p` is valid and aligned (caller); `i` words fit in `T`.
        unsafe { write_volatile(p.cast::<u64>().add(i), *w) };
    }
}

/// One slot: tag (0 = empty), last-used stamp (seconds of the data plane's clock), key, value.
/// 8-byte aligned, so key and value start on word boundaries.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot<K, V> {
    /// A hash of the key, never 0 for a used slot.
    pub tag: u32,
    /// [`crate::Settings::clock`] when the slot was last used.
    pub stamp: u32,
    /// Key.
    pub key: K,
    /// Value.
    pub value: V,
}

/// A set: a writer lock and `W` slots.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Set<K, V, const W: usize> {
    /// 0 = free, 1 = a writer is rewriting a slot.
    pub lock: u64,
    /// Slots.
    pub slots: [Slot<K, V>; W],
}

/// A consistent copy of a used slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found<K, V> {
    /// Slot index within the set.
    pub way: usize,
    /// Key.
    pub key: K,
    /// Value.
    pub value: V,
    /// Last-used stamp.
    pub stamp: u32,
}

impl<K: SlotData, V: SlotData, const W: usize> Set<K, V, W> {
    /// Reads slot `way` consistently: `None` if it is empty or was being rewritten.
    ///
    /// # Safety
    /// `set` must point to a valid set and `way < W`.
    #[inline(always)]
    pub unsafe fn read_slot(set: *const Self, way: usize) -> Option<Found<K, V>> {
        // SAFETY: the caller guarantees `set` is valid and `way < W`.
        unsafe {
            let slot = addr_of!((*set).slots[way]);
            let tag = read_volatile(addr_of!((*slot).tag));
            if tag == 0 {
                return None;
            }
            let key = load(addr_of!((*slot).key));
            let value = load(addr_of!((*slot).value));
            let stamp = read_volatile(addr_of!((*slot).stamp));
            if read_volatile(addr_of!((*slot).tag)) != tag {
                return None;
            }
            Some(Found {
                way,
                key: K::from_words(key),
                value: V::from_words(value),
                stamp,
            })
        }
    }

    /// Finds `key` (with its `tag`) in the set.
    ///
    /// # Safety
    /// `set` must point to a valid set.
    #[inline(always)]
    pub unsafe fn find(set: *const Self, key: &K, tag: u32) -> Option<Found<K, V>> {
        let want = key.to_words();
        let mut way = 0;
        while way < W {
            // SAFETY: `set` is valid (caller) and `way < W`.
            unsafe {
                let slot = addr_of!((*set).slots[way]);
                if read_volatile(addr_of!((*slot).tag)) == tag
                    && same(&load(addr_of!((*slot).key)), &want)
                {
                    let value = load(addr_of!((*slot).value));
                    let stamp = read_volatile(addr_of!((*slot).stamp));
                    // The key matched under this tag and the tag is unchanged: the value and
                    // stamp belong to the key.
                    if read_volatile(addr_of!((*slot).tag)) == tag
                        && same(&load(addr_of!((*slot).key)), &want)
                    {
                        return Some(Found {
                            way,
                            key: *key,
                            value: V::from_words(value),
                            stamp,
                        });
                    }
                }
            }
            way += 1;
        }
        None
    }

    /// Updates the stamp and value of slot `way` in place (a live slot of the caller's key).
    ///
    /// # Safety
    /// `set` must point to a valid set and `way < W`.
    #[inline(always)]
    pub unsafe fn touch(set: *mut Self, way: usize, value: &V, stamp: u32) {
        // SAFETY: the caller guarantees `set` is valid and `way < W`.
        unsafe {
            let slot = addr_of_mut!((*set).slots[way]);
            store(addr_of_mut!((*slot).value), value);
            write_volatile(addr_of_mut!((*slot).stamp), stamp);
        }
    }

    /// Stores `key` -> `value` stamped `now`, in the slot already holding `key`, else an empty
    /// slot, else one `classify` says is expired, else the least recently used of those it says
    /// may be evicted ([`Evict::Live`] before [`Evict::Last`]). Stores nothing if another writer holds the set ([`Inserted::Busy`]) or
    /// if every other slot is protected from this insert ([`Inserted::Full`]).
    ///
    /// # Safety
    /// `set` must point to a valid set.
    #[inline(always)]
    pub unsafe fn insert(
        set: *mut Self,
        key: &K,
        tag: u32,
        value: &V,
        now: u32,
        classify: impl Fn(&V, u32) -> Evict,
    ) -> Inserted<V> {
        // SAFETY: `set` is valid (caller); the lock word is 8-byte aligned in the map value.
        if !unsafe { try_lock(addr_of_mut!((*set).lock)) } {
            return Inserted::Busy;
        }
        let want = key.to_words();
        // Rank of the best victim so far: 0 = none (every slot protected).
        let mut victim = 0;
        let mut victim_rank = 0u64;
        let mut victim_used = false;
        let mut victim_live = false;
        // Ties (slots last used in the same second, as under a flood) go to the first slot
        // met; the scan starts at a slot taken from the new key's tag (its high bits: the low
        // ones chose the set), so that successive inserts into a set do not all replace the
        // same slot, which would always be the newest entry.
        let start = (tag >> 16) as usize;
        let mut i = 0;
        while i < W {
            let way = start.wrapping_add(i) % W;
            i += 1;
            // SAFETY: `set` is valid and `way < W`.
            let slot = unsafe { Self::read_slot(set, way) };
            let class = slot.map(|f| classify(&f.value, f.stamp));
            let rank = match slot {
                Some(found) if same(&found.key.to_words(), &want) => u64::MAX,
                None => u64::MAX - 1,
                Some(_) if class == Some(Evict::Expired) => u64::MAX - 2,
                Some(_) if class == Some(Evict::Protected) => 0,
                // Older slots rank higher (an age fits in 32 bits); every `Live` slot before
                // any `Last` one.
                Some(found) if class == Some(Evict::Last) => {
                    now.wrapping_sub(found.stamp) as u64 + 1
                }
                Some(found) => now.wrapping_sub(found.stamp) as u64 + (1 << 33),
            };
            if rank > victim_rank {
                victim = way;
                victim_rank = rank;
                victim_used = slot.is_some();
                victim_live = rank < u64::MAX - 2;
            }
        }
        if victim_rank == 0 {
            // SAFETY: we hold the lock.
            unsafe { unlock(addr_of_mut!((*set).lock)) };
            return Inserted::Full;
        }
        // SAFETY: `set` is valid and `victim < W`; we hold the lock, so no other writer
        // touches this slot's key while we rewrite it.
        unsafe {
            let slot = addr_of_mut!((*set).slots[victim]);
            // Only lock holders write a slot, so the victim's value is still the one ranked.
            let replaced = victim_used.then(|| V::from_words(load(addr_of!((*slot).value))));
            write_volatile(addr_of_mut!((*slot).tag), 0);
            store(addr_of_mut!((*slot).key), key);
            store(addr_of_mut!((*slot).value), value);
            write_volatile(addr_of_mut!((*slot).stamp), now);
            write_volatile(addr_of_mut!((*slot).tag), tag);
            unlock(addr_of_mut!((*set).lock));
            Inserted::Stored {
                replaced,
                evicted: victim_live,
            }
        }
    }
}

/// How an insert may treat a used slot of another key (see [`Set::insert`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evict {
    /// Expired: free to take, before any live slot.
    Expired,
    /// Live, but may be evicted (the least recently used first).
    Live,
    /// Live, evicted only when no slot is [`Evict::Live`] (the least recently used first).
    Last,
    /// Live and protected from this insert.
    Protected,
}

/// What [`Set::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted<V> {
    /// Another writer held the set: nothing stored.
    Busy,
    /// Every slot of the set is protected from this insert: nothing stored.
    Full,
    /// Stored; `replaced` is the value the slot held before (the same key's, an expired one's
    /// or an evicted one's), so the caller can account for it.
    Stored {
        /// The value overwritten, if the slot was in use.
        replaced: Option<V>,
        /// Whether that was another key's live entry, evicted.
        evicted: bool,
    },
}

impl<V> Inserted<V> {
    /// Whether the value was stored.
    pub fn stored(&self) -> bool {
        matches!(self, Inserted::Stored { .. })
    }
}

/// Takes a set's writer lock if it is free.
#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn try_lock(lock: *mut u64) -> bool {
    use core::intrinsics::{AtomicOrdering, atomic_cxchg};
    // SAFETY: `lock` points to an aligned u64 in a map value (caller); BPF's 64-bit cmpxchg.
    let (_, won) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::Acquire }, { AtomicOrdering::Relaxed }>(lock, 0, 1)
    };
    won
}

#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
unsafe fn try_lock(lock: *mut u64) -> bool {
    use core::sync::atomic::{AtomicU64, Ordering};
    // SAFETY: `lock` points to an aligned u64 shared with the kernel (caller).
    unsafe { AtomicU64::from_ptr(lock) }
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
}

/// Releases a set's writer lock. A plain store: the slot's stores before it are already visible
/// in order on x86, and BPF has no release store on every CPU version we target.
#[inline(always)]
unsafe fn unlock(lock: *mut u64) {
    // SAFETY: `lock` points to an aligned u64 (caller).
    unsafe { write_volatile(lock, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    type S = Set<u64, u64, 4>;

    // SAFETY: a u64 is one word.
    unsafe impl SlotData for u64 {
        type Words = [u64; 1];
    }

    fn empty() -> S {
        S {
            lock: 0,
            slots: [Slot {
                tag: 0,
                stamp: 0,
                key: 0,
                value: 0,
            }; 4],
        }
    }

    /// Every used slot is live and may be evicted.
    fn never(_: &u64, _: u32) -> Evict {
        Evict::Live
    }

    /// Slots holding `v` are expired, the others live.
    fn expired_if(v: u64) -> impl Fn(&u64, u32) -> Evict {
        move |x, _| if *x == v { Evict::Expired } else { Evict::Live }
    }

    impl S {
        unsafe fn insert_ok(
            set: *mut Self,
            key: &u64,
            tag: u32,
            value: &u64,
            now: u32,
            classify: impl Fn(&u64, u32) -> Evict,
        ) -> bool {
            // SAFETY: the caller passes a valid set (a local in these tests).
            unsafe { S::insert(set, key, tag, value, now, classify) }.stored()
        }
    }

    #[test]
    fn insert_reports_the_value_it_replaced() {
        let mut s = empty();
        // SAFETY: every set here is a local, valid for the whole block.
        unsafe {
            assert_eq!(
                S::insert(&mut s, &7, 70, &1, 100, never),
                Inserted::Stored {
                    replaced: None,
                    evicted: false
                }
            );
            assert_eq!(
                S::insert(&mut s, &7, 70, &2, 101, never),
                Inserted::Stored {
                    replaced: Some(1),
                    evicted: false
                },
                "the same key's old value"
            );
            for k in 8..11u64 {
                S::insert(&mut s, &k, k as u32, &k, 102, never);
            }
            // Full: the oldest (key 7, value 2) is evicted.
            assert_eq!(
                S::insert(&mut s, &20, 20, &20, 103, never),
                Inserted::Stored {
                    replaced: Some(2),
                    evicted: true
                }
            );
            // An expired victim goes first, and is reported too: it was still counted.
            assert_eq!(
                S::insert(&mut s, &21, 21, &21, 104, expired_if(9)),
                Inserted::Stored {
                    replaced: Some(9),
                    evicted: false
                }
            );
        }
    }

    #[test]
    fn insert_then_find_and_update_in_place() {
        let mut s = empty();
        // SAFETY: every set here is a local, valid for the whole block.
        unsafe {
            assert!(S::insert_ok(&mut s, &7, 70, &1, 100, never));
            let f = S::find(&s, &7, 70).unwrap();
            assert_eq!((f.value, f.stamp), (1, 100));
            assert!(S::find(&s, &8, 70).is_none(), "same tag, other key");
            assert!(S::find(&s, &7, 71).is_none(), "other tag");
            S::touch(&mut s, f.way, &2, 105);
            assert_eq!(S::find(&s, &7, 70).unwrap().value, 2);
            // Inserting the same key again reuses its slot.
            assert!(S::insert_ok(&mut s, &7, 70, &3, 110, never));
            assert_eq!(s.slots.iter().filter(|x| x.tag != 0).count(), 1);
        }
    }

    #[test]
    fn replacement_prefers_empty_then_expired_then_oldest() {
        let mut s = empty();
        // SAFETY: every set here is a local, valid for the whole block.
        unsafe {
            for (k, now) in [(1u64, 10u32), (2, 20), (3, 30), (4, 40)] {
                assert!(S::insert_ok(&mut s, &k, k as u32 + 1, &k, now, never));
            }
            // Full: the oldest (key 1) goes.
            assert!(S::insert_ok(&mut s, &5, 6, &5, 50, never));
            assert!(S::find(&s, &1, 2).is_none());
            assert!(S::find(&s, &2, 3).is_some());
            // An expired slot goes before an older live one.
            assert!(S::insert_ok(&mut s, &6, 7, &6, 60, expired_if(4)));
            assert!(S::find(&s, &4, 5).is_none());
            assert!(S::find(&s, &2, 3).is_some());
            // Stamps wrap around u32.
            let mut w = empty();
            assert!(S::insert_ok(&mut w, &1, 2, &1, u32::MAX - 5, never));
            assert!(S::insert_ok(&mut w, &2, 3, &2, 3, never));
            assert!(S::insert_ok(&mut w, &3, 4, &3, 4, never));
            assert!(S::insert_ok(&mut w, &4, 5, &4, 5, never));
            assert!(S::insert_ok(&mut w, &9, 10, &9, 6, never));
            assert!(
                S::find(&w, &1, 2).is_none(),
                "slot stamped before the wrap is oldest"
            );
        }
    }

    #[test]
    fn protected_slots_are_never_evicted_and_a_full_set_refuses() {
        let mut s = empty();
        // Odd values are protected from this insert.
        let protect_odd = |v: &u64, _: u32| {
            if v % 2 == 1 {
                Evict::Protected
            } else {
                Evict::Live
            }
        };
        // SAFETY: every set here is a local, valid for the whole block.
        unsafe {
            for (k, now) in [(1u64, 10u32), (2, 20), (3, 30), (5, 40)] {
                assert!(S::insert_ok(&mut s, &k, k as u32, &k, now, never));
            }
            // The oldest (1) is protected: the oldest unprotected one (2) goes.
            assert_eq!(
                S::insert(&mut s, &7, 7, &7, 50, protect_odd),
                Inserted::Stored {
                    replaced: Some(2),
                    evicted: true
                }
            );
            // Now every slot is odd: nothing is stored, nothing changes.
            let before = s;
            assert_eq!(
                S::insert(&mut s, &8, 8, &8, 60, protect_odd),
                Inserted::Full
            );
            assert_eq!(s, before);
            assert_eq!(s.lock, 0, "unlocked after a refusal");
            // The same key is still updated in place, protected or not.
            assert!(S::insert_ok(&mut s, &7, 7, &9, 70, protect_odd));
            assert_eq!(S::find(&s, &7, 7).unwrap().value, 9);
        }
    }

    #[test]
    fn last_slots_go_only_when_no_live_one_is_left() {
        let mut s = empty();
        // Values above 100 are evicted last.
        let keep_big = |v: &u64, _: u32| {
            if *v > 100 { Evict::Last } else { Evict::Live }
        };
        // SAFETY: every set here is a local, valid for the whole block.
        unsafe {
            for (k, v, now) in [
                (1u64, 101u64, 10u32),
                (2, 2, 20),
                (3, 103, 30),
                (4, 104, 40),
            ] {
                assert!(S::insert_ok(&mut s, &k, k as u32, &v, now, never));
            }
            // The oldest (key 1) is kept for last: the only live one, key 2, goes.
            assert_eq!(
                S::insert(&mut s, &5, 5, &105, 50, keep_big),
                Inserted::Stored {
                    replaced: Some(2),
                    evicted: true
                }
            );
            // Only `Last` slots now: the least recently used of them, key 1, goes.
            assert_eq!(
                S::insert(&mut s, &6, 6, &6, 60, keep_big),
                Inserted::Stored {
                    replaced: Some(101),
                    evicted: true
                }
            );
        }
    }

    #[test]
    fn a_held_lock_refuses_writers() {
        let mut s = empty();
        s.lock = 1;
        // SAFETY: every set here is a local, valid for the whole block.
        unsafe {
            assert!(!S::insert_ok(&mut s, &7, 70, &1, 100, never));
        }
        assert!(s.slots.iter().all(|x| x.tag == 0));
        s.lock = 0;
        // SAFETY: every set here is a local, valid for the whole block.
        unsafe {
            assert!(S::insert_ok(&mut s, &7, 70, &1, 100, never));
        }
        assert_eq!(s.lock, 0, "unlocked after the write");
    }

    #[test]
    fn torn_slot_reads_as_a_miss() {
        let mut s = empty();
        // SAFETY: every set here is a local, valid for the whole block.
        unsafe {
            assert!(S::insert_ok(&mut s, &7, 70, &1, 100, never));
        }
        // A writer that has cleared the tag (mid-rewrite) hides the slot.
        s.slots.iter_mut().find(|x| x.key == 7).unwrap().tag = 0;
        // SAFETY: every set here is a local, valid for the whole block.
        unsafe {
            assert!(S::find(&s, &7, 70).is_none());
        }
    }
}
