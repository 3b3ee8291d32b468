//! The neighbour tracker: follows the neighbour table of one interface for a set of IPs,
//! keeps each IP resolved, and reports changes of their usable MACs.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use rtnetlink::{
    Handle, MulticastGroup,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{RouteNetlinkMessage, neighbour::NeighbourExtFlags},
    sys::AsyncSocket,
};
use tokio::{
    sync::mpsc::{self, UnboundedReceiver, UnboundedSender},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use super::{
    Netlink, NetlinkError,
    neighbour::{MacState, NeighEntry, NeighEvent, NeighState, Neighbour, parse_neighbour},
};

/// How often [`NeighbourTracker`] re-reads the whole neighbour table of its interface and
/// re-requests resolution of unresolved IPs.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(5);
/// Minimum time between two resolution requests of the tracker for the same IP.
const RESOLVE_BACKOFF: Duration = Duration::from_millis(250);
/// Receive buffer of the notification socket, so that bursts are not lost.
const NOTIFY_RCVBUF: usize = 1 << 20;
/// Pause before re-opening a notification socket that failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// What the tracker concluded from one look at an IP's neighbour entry.
#[derive(Debug, Clone)]
struct Observation {
    state: MacState,
    /// An intermediate state (resolution requested or in progress) that is not worth an
    /// event on its own.
    transient: bool,
}

impl Observation {
    fn unresolved(reason: impl Into<String>, transient: bool) -> Observation {
        Observation {
            state: MacState::Unresolved(reason.into()),
            transient,
        }
    }

    fn of_entry(n: &Neighbour) -> Observation {
        match (n.state.usable(), n.mac) {
            (true, Some(mac)) => Observation {
                state: MacState::Resolved(mac),
                transient: false,
            },
            (true, None) => Observation::unresolved(
                format!("neighbour entry has no link-layer address ({})", n.state),
                false,
            ),
            _ => match n.state {
                NeighState::Incomplete => {
                    Observation::unresolved("neighbour resolution in progress (INCOMPLETE)", true)
                }
                NeighState::None => {
                    Observation::unresolved("neighbour resolution not started (NONE)", true)
                }
                NeighState::Failed => {
                    Observation::unresolved("neighbour resolution failed (FAILED)", false)
                }
                other => Observation::unresolved(
                    format!("neighbour entry in unexpected state {other}"),
                    false,
                ),
            },
        }
    }
}

/// Per-IP bookkeeping of the tracker.
#[derive(Debug)]
struct Tracked {
    current: MacState,
    /// Last state sent as an event, `None` before the first one.
    emitted: Option<MacState>,
    /// Notification generation of the last update from a multicast notification.
    touched: u64,
    /// When the tracker last asked the kernel to resolve the IP.
    last_resolve: Option<Instant>,
}

impl Tracked {
    fn new() -> Tracked {
        Tracked {
            current: MacState::Unresolved("resolution requested".to_owned()),
            emitted: None,
            touched: 0,
            last_resolve: None,
        }
    }

    /// Records an observation; returns the state to emit if the usable MAC changed: a new
    /// or different MAC, the loss of a MAC, or the first definite failure.
    fn observe(&mut self, ip: IpAddr, obs: Observation) -> Option<MacState> {
        let emit = match (&obs.state, &self.emitted) {
            (MacState::Resolved(new), Some(MacState::Resolved(old))) => new != old,
            (MacState::Resolved(_), _) => true,
            (MacState::Unresolved(_), Some(MacState::Resolved(_))) => true,
            (MacState::Unresolved(_), None) => !obs.transient,
            (MacState::Unresolved(_), Some(MacState::Unresolved(_))) => false,
        };
        if self.current != obs.state {
            debug!(%ip, state = %obs.state, "neighbour state");
        }
        self.current = obs.state;
        if emit {
            self.emitted = Some(self.current.clone());
            return Some(self.current.clone());
        }
        None
    }
}

#[derive(Debug, Default)]
struct TrackerState {
    ips: BTreeMap<IpAddr, Tracked>,
    /// Counts applied notifications; a dump started before a notification must not
    /// overwrite what the notification said.
    generation: u64,
    /// IPs this tracker asked the kernel to manage and that are no longer tracked.
    forgotten: BTreeSet<IpAddr>,
}

/// Work for the tracker's resync task.
#[derive(Debug)]
enum Kick {
    /// Re-read the table now (new IPs, or notifications were lost).
    Sync,
    /// The entry of this IP went away or lost its managed flag: resolve it again.
    Resolve(IpAddr),
}

#[derive(Debug)]
struct Shared {
    netlink: Netlink,
    ifindex: u32,
    state: Mutex<TrackerState>,
    events: UnboundedSender<NeighEvent>,
    kick: UnboundedSender<Kick>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, TrackerState> {
        // The state stays consistent even if a holder panicked: every update is one
        // assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an observation of a tracked IP and sends the event [`Tracked::observe`]
    /// asks for.
    fn apply(&self, tracked: &mut Tracked, ip: IpAddr, obs: Observation) {
        if let Some(state) = tracked.observe(ip, obs) {
            info!(%ip, %state, ifindex = self.ifindex, "neighbour MAC changed");
            // The receiver may be gone; the tracker keeps working for `current()`.
            let _ = self.events.send(NeighEvent { ip, state });
        }
    }

    /// Handles one multicast notification.
    fn on_notification(&self, msg: NetlinkMessage<RouteNetlinkMessage>) {
        let (neigh, deleted) = match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => (n, false),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => (n, true),
            NetlinkPayload::Overrun(_) => {
                warn!("neighbour notifications lost (socket overrun), resynchronising");
                let _ = self.kick.send(Kick::Sync);
                return;
            }
            _ => return,
        };
        if neigh.header.ifindex != self.ifindex {
            return;
        }
        let Some(entry) = parse_neighbour(&neigh) else {
            return;
        };
        let ip = entry.neighbour.ip;
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(tracked) = state.ips.get_mut(&ip) else {
            return;
        };
        state.generation += 1;
        tracked.touched = state.generation;
        let (obs, reresolve) = if deleted {
            (
                Observation::unresolved("neighbour entry deleted", false),
                true,
            )
        } else {
            let n = &entry.neighbour;
            let keep_resolving =
                !entry.managed && !matches!(n.state, NeighState::Permanent | NeighState::NoArp);
            (Observation::of_entry(n), keep_resolving)
        };
        self.apply(tracked, ip, obs);
        drop(guard);
        if reresolve {
            let _ = self.kick.send(Kick::Resolve(ip));
        }
    }

    /// How long the tracker must still wait before asking again to resolve `ip`; `None` if
    /// the IP is not tracked.
    fn backoff_left(&self, ip: IpAddr) -> Option<Duration> {
        let state = self.lock();
        let tracked = state.ips.get(&ip)?;
        Some(tracked.last_resolve.map_or(Duration::ZERO, |t| {
            RESOLVE_BACKOFF.saturating_sub(t.elapsed())
        }))
    }

    /// Whether the tracker may send a resolution request for `ip` now; records it if so.
    fn may_resolve(&self, ip: IpAddr) -> bool {
        if self.backoff_left(ip) != Some(Duration::ZERO) {
            return false;
        }
        if let Some(tracked) = self.lock().ips.get_mut(&ip) {
            tracked.last_resolve = Some(Instant::now());
        }
        true
    }

    async fn resolve_one(&self, ip: IpAddr, existing: Option<&NeighEntry>) {
        if !self.may_resolve(ip) {
            return;
        }
        if let Err(e) = self.netlink.resolve_with(self.ifindex, ip, existing).await {
            warn!(%ip, error = %e, "cannot request neighbour resolution");
            let mut state = self.lock();
            if let Some(tracked) = state.ips.get_mut(&ip) {
                let obs = Observation::unresolved(format!("cannot request resolution: {e}"), false);
                self.apply(tracked, ip, obs);
            }
        }
    }

    /// Reads the whole table of the interface, updates every tracked IP not updated by a
    /// newer notification, and requests resolution where needed.
    async fn sync(&self) {
        self.unmanage_forgotten().await;
        let started = self.lock().generation;
        let entries = match self.netlink.neighbour_entries(self.ifindex).await {
            Ok(entries) => entries,
            Err(e) => {
                warn!(error = %e, ifindex = self.ifindex, "cannot dump neighbour table");
                return;
            }
        };
        let by_ip: BTreeMap<IpAddr, NeighEntry> =
            entries.into_iter().map(|e| (e.neighbour.ip, e)).collect();
        let mut to_resolve = Vec::new();
        {
            let mut state = self.lock();
            for (ip, tracked) in state.ips.iter_mut() {
                let entry = by_ip.get(ip);
                if tracked.touched <= started {
                    let obs = match entry {
                        Some(e) => Observation::of_entry(&e.neighbour),
                        None => Observation::unresolved("no neighbour entry yet", true),
                    };
                    self.apply(tracked, *ip, obs);
                }
                let needed = match entry {
                    None => true,
                    Some(e) => match e.neighbour.state {
                        NeighState::Permanent | NeighState::NoArp => false,
                        // Being resolved right now.
                        NeighState::Incomplete => !e.managed,
                        s => !e.managed || !s.usable(),
                    },
                };
                if needed {
                    to_resolve.push((*ip, entry.cloned()));
                }
            }
        }
        for (ip, entry) in to_resolve {
            self.resolve_one(ip, entry.as_ref()).await;
        }
    }

    /// Handles [`Kick::Resolve`].
    async fn reresolve(&self, ip: IpAddr) {
        // Wait out the backoff rather than dropping the request: the entry is gone now.
        match self.backoff_left(ip) {
            None => return,
            Some(left) if !left.is_zero() => tokio::time::sleep(left).await,
            Some(_) => {}
        }
        match self.netlink.neighbour_entry(self.ifindex, ip).await {
            // Already taken care of (e.g. two kicks for the same change).
            Ok(Some(e))
                if e.managed
                    && (e.neighbour.state.usable()
                        || e.neighbour.state == NeighState::Incomplete) => {}
            Ok(existing) => self.resolve_one(ip, existing.as_ref()).await,
            Err(e) => warn!(%ip, error = %e, "cannot read neighbour entry"),
        }
    }

    /// Drops the managed flag of entries this tracker asked for and no longer tracks, so
    /// the kernel stops probing former reals; the entries themselves stay and age normally.
    async fn unmanage_forgotten(&self) {
        let forgotten = std::mem::take(&mut self.lock().forgotten);
        for ip in forgotten {
            if self.lock().ips.contains_key(&ip) {
                continue;
            }
            match self.netlink.neighbour_entry(self.ifindex, ip).await {
                Ok(Some(e)) if e.managed => {
                    let res = self
                        .netlink
                        .use_neighbour(self.ifindex, ip, NeighbourExtFlags::empty())
                        .await;
                    if let Err(e) = res {
                        warn!(%ip, error = %e, "cannot stop managing neighbour entry");
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(%ip, error = %e, "cannot read neighbour entry"),
            }
        }
    }
}

/// Follows neighbour changes on one interface for a set of IPs and keeps each IP resolved.
///
/// Dropping the tracker stops its tasks (and closes the event channel).
#[derive(Debug)]
pub struct NeighbourTracker {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for NeighbourTracker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A connection subscribed to neighbour notifications: the connection future to drive,
/// its handle (kept so the connection stays open), and the notifications.
type Subscription = (
    rtnetlink::proto::Connection<RouteNetlinkMessage>,
    Handle,
    futures_util::stream::BoxStream<'static, NetlinkMessage<RouteNetlinkMessage>>,
);

/// Opens a connection subscribed to neighbour notifications.
fn subscribe() -> Result<Subscription, NetlinkError> {
    let (mut conn, handle, messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Neigh])
            .map_err(NetlinkError::Socket)?;
    if let Err(e) = conn.socket_mut().socket_mut().set_rx_buf_sz(NOTIFY_RCVBUF) {
        debug!(error = %e, "cannot enlarge neighbour notification buffer");
    }
    Ok((conn, handle, messages.map(|(m, _)| m).boxed()))
}

/// Runs the notification side of a tracker: consumes notifications, re-subscribing if the
/// socket fails.
async fn follow_notifications(shared: Arc<Shared>, first: Subscription) {
    let mut sub = Some(first);
    loop {
        let (conn, _handle, mut messages) = match sub.take() {
            Some(s) => s,
            None => match subscribe() {
                Ok(s) => {
                    // Notifications were missed while the socket was down.
                    let _ = shared.kick.send(Kick::Sync);
                    s
                }
                Err(e) => {
                    warn!(error = %e, "cannot subscribe to neighbour notifications");
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    continue;
                }
            },
        };
        let consume = async {
            while let Some(msg) = messages.next().await {
                shared.on_notification(msg);
            }
        };
        tokio::select! {
            _ = conn => {}
            _ = consume => {}
        }
        warn!("neighbour notification socket closed, re-subscribing");
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// Runs the resync side of a tracker: periodic dumps and requested work.
async fn resync_loop(shared: Arc<Shared>, mut kicks: UnboundedReceiver<Kick>) {
    let mut tick = tokio::time::interval(RESYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => shared.sync().await,
            kick = kicks.recv() => match kick {
                None => return,
                Some(Kick::Sync) => {
                    // Coalesce a burst of kicks into one dump.
                    while let Ok(Kick::Sync) = kicks.try_recv() {}
                    shared.sync().await;
                }
                Some(Kick::Resolve(ip)) => shared.reresolve(ip).await,
            },
        }
    }
}

impl NeighbourTracker {
    /// Starts tracking on `ifindex` (spawns tasks on the current runtime). Emits an event
    /// for each IP whenever its usable MAC changes (including the first resolution and
    /// loss, and the first definite failure of an IP that never resolved).
    pub async fn start(
        netlink: Netlink,
        ifindex: u32,
    ) -> Result<(NeighbourTracker, UnboundedReceiver<NeighEvent>), NetlinkError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        // Subscribe before the first dump so that no change falls in between.
        let sub = subscribe()?;
        let (events, events_rx) = mpsc::unbounded_channel();
        let (kick, kicks) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            netlink,
            ifindex,
            state: Mutex::new(TrackerState::default()),
            events,
            kick,
        });
        let tasks = vec![
            rt.spawn(follow_notifications(shared.clone(), sub)),
            rt.spawn(resync_loop(shared.clone(), kicks)),
        ];
        Ok((NeighbourTracker { shared, tasks }, events_rx))
    }

    /// Replaces the set of tracked IPs (the agent calls this on every config reload); newly
    /// tracked IPs are resolved at once. IPs no longer tracked produce no more events.
    pub fn track(&self, ips: BTreeSet<IpAddr>) {
        let mut state = self.shared.lock();
        let removed: Vec<IpAddr> = state
            .ips
            .keys()
            .filter(|ip| !ips.contains(ip))
            .copied()
            .collect();
        for ip in removed {
            if let Some(t) = state.ips.remove(&ip)
                && t.last_resolve.is_some()
            {
                state.forgotten.insert(ip);
            }
        }
        let mut added = false;
        for ip in ips {
            state.ips.entry(ip).or_insert_with(|| {
                added = true;
                Tracked::new()
            });
        }
        if added || !state.forgotten.is_empty() {
            let _ = self.shared.kick.send(Kick::Sync);
        }
    }

    /// The current view: IP -> MAC if resolved, else why not.
    pub fn current(&self) -> BTreeMap<IpAddr, MacState> {
        self.shared
            .lock()
            .ips
            .iter()
            .map(|(ip, t)| (*ip, t.current.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_only_on_usable_mac_changes() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let n = |state, mac| Observation::of_entry(&Neighbour { ip, mac, state });
        let mac1 = [2, 0, 0, 0, 0, 1];
        let mac2 = [2, 0, 0, 0, 0, 2];
        let failed = |s: Option<MacState>| matches!(s, Some(MacState::Unresolved(r)) if r.contains("FAILED"));
        let mut t = Tracked::new();
        // In progress: no event yet.
        assert_eq!(t.observe(ip, n(NeighState::Incomplete, None)), None);
        // First resolution.
        let got = t.observe(ip, n(NeighState::Reachable, Some(mac1)));
        assert_eq!(got, Some(MacState::Resolved(mac1)));
        // Same MAC in another usable state: nothing.
        assert_eq!(t.observe(ip, n(NeighState::Stale, Some(mac1))), None);
        // New MAC.
        let got = t.observe(ip, n(NeighState::Stale, Some(mac2)));
        assert_eq!(got, Some(MacState::Resolved(mac2)));
        // Loss, then changing failure reasons without events.
        assert!(failed(t.observe(ip, n(NeighState::Failed, Some(mac2)))));
        assert_eq!(t.observe(ip, n(NeighState::Incomplete, None)), None);
        assert_eq!(t.observe(ip, n(NeighState::Failed, None)), None);
        assert!(matches!(&t.current, MacState::Unresolved(r) if r.contains("FAILED")));
        // A usable state without MAC is not a resolution.
        assert_eq!(t.observe(ip, n(NeighState::NoArp, None)), None);
        // An IP that never resolves reports its first definite failure once.
        let mut t = Tracked::new();
        let none_yet = Observation::unresolved("no neighbour entry yet", true);
        assert_eq!(t.observe(ip, none_yet), None);
        assert!(failed(t.observe(ip, n(NeighState::Failed, None))));
        assert_eq!(t.observe(ip, n(NeighState::Failed, None)), None);
    }
}
