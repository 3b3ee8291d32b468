//! Replay protection for authentic sync datagrams: each sender numbers its datagrams, and a
//! receiver accepts each number once, within a window of the newest it has seen (datagrams may
//! arrive out of order; a replayed one never counts twice). A restarted agent is a new sender
//! (a new random id), so its numbers start afresh without being taken for replays. Only
//! authentic datagrams reach the filter; it remembers [`MAX_SENDERS`] senders, far more than a
//! director group has over its restarts.

use std::collections::HashMap;

/// How far behind the newest sequence number a datagram may arrive and still count.
pub const WINDOW: u64 = 64;
/// Senders remembered at most; the one heard from longest ago is forgotten first.
pub const MAX_SENDERS: usize = 64;

/// Why a datagram was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Replayed {
    /// This sender's datagram with this number was accepted before.
    #[error("datagram {0} of this sender was seen before")]
    Seen(u64),
    /// Older than the window behind the sender's newest.
    #[error("datagram {0} is older than the replay window")]
    TooOld(u64),
}

/// One sender's newest number and which of the `WINDOW` before it were seen.
#[derive(Clone, Copy, Debug)]
struct Seen {
    newest: u64,
    /// Bit `i`: number `newest - i` was seen.
    bits: u64,
    /// When the sender was last heard from (an accept counter).
    heard: u64,
}

/// The replay filter of one receiver.
#[derive(Debug, Default)]
pub struct ReplayFilter {
    senders: HashMap<u64, Seen>,
    accepts: u64,
}

impl ReplayFilter {
    /// Accepts datagram `sequence` of `sender` if it was not seen before and is within the
    /// window; records it.
    pub fn accept(&mut self, sender: u64, sequence: u64) -> Result<(), Replayed> {
        self.accepts += 1;
        let heard = self.accepts;
        let Some(seen) = self.senders.get_mut(&sender) else {
            if self.senders.len() >= MAX_SENDERS
                && let Some(oldest) = self
                    .senders
                    .iter()
                    .min_by_key(|(_, s)| s.heard)
                    .map(|(id, _)| *id)
            {
                self.senders.remove(&oldest);
            }
            self.senders.insert(
                sender,
                Seen {
                    newest: sequence,
                    bits: 1,
                    heard,
                },
            );
            return Ok(());
        };
        if sequence > seen.newest {
            let ahead = sequence - seen.newest;
            seen.bits = if ahead >= WINDOW {
                1
            } else {
                (seen.bits << ahead) | 1
            };
            seen.newest = sequence;
        } else {
            let behind = seen.newest - sequence;
            if behind >= WINDOW {
                return Err(Replayed::TooOld(sequence));
            }
            if seen.bits & (1 << behind) != 0 {
                return Err(Replayed::Seen(sequence));
            }
            seen.bits |= 1 << behind;
        }
        seen.heard = heard;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_number_counts_once_in_any_order_within_the_window() {
        let mut f = ReplayFilter::default();
        assert_eq!(f.accept(1, 10), Ok(()));
        assert_eq!(f.accept(1, 10), Err(Replayed::Seen(10)));
        assert_eq!(f.accept(1, 12), Ok(()));
        assert_eq!(f.accept(1, 11), Ok(()), "late, but within the window");
        assert_eq!(f.accept(1, 11), Err(Replayed::Seen(11)));
        assert_eq!(f.accept(1, 12), Err(Replayed::Seen(12)));
        assert_eq!(f.accept(1, 12 + WINDOW), Ok(()));
        assert_eq!(f.accept(1, 12), Err(Replayed::TooOld(12)));
        assert_eq!(f.accept(1, 13 + 200), Ok(()), "a jump clears the window");
        assert_eq!(f.accept(1, 13 + 200 - 1), Ok(()));
        // Another sender (a restarted agent) starts anywhere.
        assert_eq!(f.accept(2, 0), Ok(()));
        assert_eq!(f.accept(2, 0), Err(Replayed::Seen(0)));
    }

    #[test]
    fn the_longest_silent_sender_is_forgotten_first() {
        let mut f = ReplayFilter::default();
        for sender in 0..MAX_SENDERS as u64 {
            f.accept(sender, 5).unwrap();
        }
        f.accept(0, 6).unwrap(); // sender 0 is fresh again; sender 1 is the oldest now
        f.accept(1000, 1).unwrap();
        assert_eq!(f.senders.len(), MAX_SENDERS);
        assert!(f.senders.contains_key(&0) && !f.senders.contains_key(&1));
        assert_eq!(f.accept(0, 6), Err(Replayed::Seen(6)));
    }
}
