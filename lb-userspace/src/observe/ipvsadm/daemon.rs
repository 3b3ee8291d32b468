//! `ipvsadm -L --daemon`: the sync daemons, from the snapshot's director sync state.
//!
//! ipvsadm prints one line per running daemon, `master sync daemon (mcast=IFACE, syncid=N,
//! ...)` for the sender and `backup sync daemon (...)` for the receiver, and nothing when none
//! runs. An agent with sync on both sends and receives, so it prints both lines, with the same
//! options. Below them come our lines (not ipvsadm's): the configured peers, each peer heard
//! from, what was sent, received and rejected, the lag, the start-up resync and the last error.

use std::fmt::Write as _;

use super::duration;
use crate::{
    control::{PeerInfo, Snapshot, SyncInfo},
    sync::wire::MAX_DATAGRAM,
};

/// `lbadm -L --daemon`; empty when sync is off (as ipvsadm when no daemon runs).
pub fn daemons(snap: &Snapshot) -> String {
    let Some(sync) = snap.sync.as_deref() else {
        return String::new();
    };
    let mut out = String::new();
    let options = options(sync);
    for role in ["master", "backup"] {
        let _ = writeln!(out, "{role} sync daemon ({options})");
    }
    let peers: Vec<String> = sync.peers.iter().map(ToString::to_string).collect();
    let peers = if peers.is_empty() {
        "none".to_owned()
    } else {
        peers.join(", ")
    };
    let _ = writeln!(out, "peers: {peers}");
    for peer in &sync.heard {
        heard(&mut out, peer);
    }
    let _ = writeln!(
        out,
        "sent: {} datagrams, {} records, {} errors (not sent: real gone {}, overwritten \
         unread {})",
        sync.sent_datagrams, sync.sent_records, sync.send_errors, sync.dropped, sync.overrun
    );
    let _ = writeln!(
        out,
        "received: {} datagrams, {} records (stored {}, refreshed {}, kept {}, unplaced {}, \
         no room {})",
        sync.received_datagrams,
        sync.received_records,
        sync.stored,
        sync.refreshed,
        sync.kept,
        sync.unplaced,
        sync.no_room
    );
    let _ = writeln!(
        out,
        "rejected: auth {}, replay {}, other group {}, malformed {}",
        sync.rejected_auth, sync.rejected_replay, sync.rejected_instance, sync.rejected_malformed
    );
    let _ = writeln!(
        out,
        "lag: last {} ms, max {} ms",
        millis(sync.lag_ms),
        millis(sync.lag_ms_max)
    );
    let resync = if sync.resync.is_empty() {
        "-"
    } else {
        &sync.resync
    };
    let _ = writeln!(out, "resync: {resync}");
    if let Some(error) = &sync.last_error {
        let _ = writeln!(out, "last error: {error}");
    }
    out
}

/// The daemon's options in ipvsadm's order: `mcast=IFACE, syncid=N, maxlen=N[, group=ADDR],
/// port=N, ttl=N` (the group only when one is set).
fn options(sync: &SyncInfo) -> String {
    // ipvsadm's maxlen is the largest sync message, the UDP payload (`--sync-maxlen`). Ours is
    // the wire format's fixed limit, the same on every director (a larger datagram is refused
    // as malformed), so it is printed rather than left out: it answers the same question, does
    // a sync datagram fit the path's MTU.
    let mut text = format!(
        "mcast={}, syncid={}, maxlen={MAX_DATAGRAM}",
        sync.interface, sync.id
    );
    if let Some(group) = sync.group {
        let _ = write!(text, ", group={group}");
    }
    let _ = write!(text, ", port={}, ttl={}", sync.port, sync.ttl);
    text
}

/// `peer ADDR sender HEX16 last heard AGE ago, N records`.
fn heard(out: &mut String, peer: &PeerInfo) {
    let addr = peer.addr.map_or_else(|| "-".to_owned(), |a| a.to_string());
    // Whole seconds; a negative or NaN age reads as 0.
    let secs = peer.last_heard_secs.max(0.0) as u64;
    let _ = writeln!(
        out,
        "peer {addr} sender {:016x} last heard {} ago, {} records",
        peer.sender,
        duration(secs),
        peer.records
    );
}

/// Milliseconds with one decimal; `-` for a value that is not a duration.
fn millis(ms: f64) -> String {
    if ms.is_finite() && ms >= 0.0 {
        format!("{ms:.1}")
    } else {
        "-".to_owned()
    }
}
