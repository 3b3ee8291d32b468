//! What the data plane tells the agent's director sync: one [`SyncEvent`] per flow it
//! confirms (a TCP connection reaching ESTABLISHED, a UDP flow's first datagram) and one when
//! a confirmed TCP connection leaves ESTABLISHED (FIN, RST), while `Settings::sync` is set.
//!
//! Only confirmed flows are announced: a spoofed SYN flood creates entries but never completes a
//! handshake, so it cannot flood the sync channel, and a peer only ever holds flows that carry
//! data. The close lets peers count the connection as inactive, as this director does. The
//! event names the flow by its 5-tuple and its real by this director's index; the agent
//! translates the index into the real's address before anything leaves the machine.
//!
//! The events go into one ring per CPU, [`SYNC_SLOTS`] [`SyncSlot`]s each in the
//! memory-mapped `SYNC_RING` array (CPU `c`'s ring is elements `c * SYNC_SLOTS ..`), with the
//! number of events each CPU has written in the per-CPU `SYNC_HEAD`. Only that CPU writes its
//! ring, so the program takes no lock and calls no helper but the CPU id: event `n` goes to
//! slot `n % SYNC_SLOTS`, its sequence number `n + 1` stored last. The agent reads the heads,
//! then the slots it has not read, and keeps an event only if its slot's sequence number is
//! the expected one before and after the copy; a slot overwritten meanwhile (the ring lapped
//! the reader) counts as lost.

use crate::{Addr6, ConnState, Flow4Key, Flow6Key, SlotData};

/// Whether an entry in `state` is a confirmed flow: one the program announces when it creates
/// it, and one a full announcement (a refresh, an answer to a state request) restates.
#[inline(always)]
pub fn confirmed(state: u8) -> bool {
    state == ConnState::Established as u8 || state == ConnState::Udp as u8
}

/// Slots of each CPU's ring (a power of two): at the agent's 10 ms reads, room for 409,600
/// confirmations per second per CPU.
pub const SYNC_SLOTS: u32 = 4096;

/// One slot of a CPU's ring (56 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncSlot {
    /// The event's number on its CPU plus one; 0 while the slot is being written or before it
    /// was ever written.
    pub seq: u64,
    /// The event.
    pub event: SyncEvent,
}

/// A confirmed flow, as the data plane announces it (48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncEvent {
    /// Index of the real the flow is on (this director's `REALS`).
    pub real: u32,
    /// Address family: 4 or 6.
    pub family: u8,
    /// IP protocol.
    pub proto: u8,
    /// [`crate::ConnState`] as a `u8`.
    pub state: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// Client port, network byte order.
    pub sport: u16,
    /// VIP port, network byte order.
    pub dport: u16,
    /// Explicit padding.
    pub _pad2: u32,
    /// Client address (IPv4: the first word, network byte order; the rest 0).
    pub src: Addr6,
    /// VIP (laid out as `src`).
    pub dst: Addr6,
}

// SAFETY: 48 bytes of integers and explicit padding: six words, every bit pattern valid.
unsafe impl SlotData for SyncEvent {
    type Words = [u64; 6];
}

/// The flow key an event names, by family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncedFlow {
    /// An IPv4 flow.
    V4(Flow4Key),
    /// An IPv6 flow.
    V6(Flow6Key),
}

impl SyncEvent {
    /// The event announcing IPv4 flow `key` on real `real` in `state`.
    #[inline(always)]
    pub fn of4(key: &Flow4Key, real: u32, state: u8) -> Self {
        Self {
            real,
            family: 4,
            proto: key.proto,
            state,
            _pad: 0,
            sport: key.sport,
            dport: key.dport,
            _pad2: 0,
            src: [key.src, 0, 0, 0],
            dst: [key.dst, 0, 0, 0],
        }
    }

    /// The event announcing IPv6 flow `key` on real `real` in `state`.
    #[inline(always)]
    pub fn of6(key: &Flow6Key, real: u32, state: u8) -> Self {
        Self {
            real,
            family: 6,
            proto: key.proto,
            state,
            _pad: 0,
            sport: key.sport,
            dport: key.dport,
            _pad2: 0,
            src: key.src,
            dst: key.dst,
        }
    }

    /// The connection-table key of the announced flow; `None` for an unknown family.
    pub fn flow(&self) -> Option<SyncedFlow> {
        match self.family {
            4 => Some(SyncedFlow::V4(Flow4Key {
                src: self.src[0],
                dst: self.dst[0],
                sport: self.sport,
                dport: self.dport,
                proto: self.proto,
                _pad: [0; 3],
            })),
            6 => Some(SyncedFlow::V6(Flow6Key {
                src: self.src,
                dst: self.dst,
                sport: self.sport,
                dport: self.dport,
                proto: self.proto,
                _pad: [0; 3],
            })),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_gives_back_the_flow_it_announces() {
        let k4 = Flow4Key::from_parts([10, 0, 0, 1], 40_000, [192, 0, 2, 1], 5672, 6);
        let e = SyncEvent::of4(&k4, 7, 3);
        assert_eq!((e.real, e.family, e.state), (7, 4, 3));
        assert_eq!(e.flow(), Some(SyncedFlow::V4(k4)));

        let k6 = Flow6Key::from_parts(
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
            123,
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            443,
            17,
        );
        let e = SyncEvent::of6(&k6, 2, 8);
        assert_eq!(e.flow(), Some(SyncedFlow::V6(k6)));
        assert_eq!(size_of::<SyncEvent>(), 48);
        assert_eq!(size_of::<SyncSlot>(), 56);
    }

    #[test]
    fn an_unknown_family_names_no_flow() {
        let e = SyncEvent {
            family: 5,
            ..SyncEvent::default()
        };
        assert_eq!(e.flow(), None);
    }
}
