//! Director sync as the agent runs it: every [`DRAIN_EVERY`] the flows the program confirmed
//! leave for the peers; what peers send is checked and stored; a peer that starts asks for
//! everything and gets it; every `sync.refresh` all live flows are announced again, so a
//! long-lived idle connection never expires on a peer that has not seen its packets.
//!
//! Nothing here decides anything: the wire format, the replay filter and the translation are
//! `crate::sync`'s, the storing rules `crate::dataplane`'s.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use lb_common::{SyncEvent, sync::confirmed};
use tokio::time::timeout;
use tracing::{info, warn};

use crate::{
    config::SyncConfig,
    control::{PeerInfo, SyncInfo},
    dataplane::{Dataplane, PeerStore},
    reconcile::plan::Installed,
    sync::{
        channel::{Channel, Endpoint, Inbound, Rejection, key_of_secret},
        translate::{Directory, incoming, outgoing},
        wire::{Kind, Record},
    },
};

/// How often the program's announcements are collected and sent: the bound on how long a
/// confirmed flow waits before it leaves for the peers.
pub const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// Datagrams sent per destination per drain at most (a dump is spread over several drains).
const SEND_BURST: usize = 256;
/// Announcements taken from the ring per drain at most.
const DRAIN_MAX: usize = 65_536;
/// A peer's repeated state request within this time is answered once.
const ANSWER_AGAIN_AFTER: Duration = Duration::from_secs(1);
/// Once one peer has answered a multicast state request, how long to wait for others.
const MULTICAST_GRACE: Duration = Duration::from_millis(300);

/// A datagram waiting to leave: to every destination, or to one peer.
struct Outgoing {
    datagram: Vec<u8>,
    records: usize,
    to: Option<SocketAddr>,
}

/// A peer heard from.
struct Peer {
    addr: SocketAddr,
    last: Instant,
    records: u64,
}

/// The agent's director sync.
pub(super) struct DirectorSync {
    config: SyncConfig,
    interface: String,
    channel: Channel,
    directory: Directory,
    outbox: VecDeque<Outgoing>,
    peers: BTreeMap<u64, Peer>,
    answered: HashMap<u64, Instant>,
    last_refresh: Instant,
    /// When the program's rings were last read.
    last_drain: Instant,
    info: SyncInfo,
    last_error: Option<(Instant, String)>,
}

impl DirectorSync {
    /// Reads the key file and opens the socket of `config` on interface `ifindex`.
    pub(super) fn open(config: &SyncConfig, interface: &str, ifindex: u32) -> Result<Self> {
        let secret = std::fs::read(&config.key_file)
            .with_context(|| format!("sync.key_file {}", config.key_file.display()))?;
        let key = key_of_secret(&secret)
            .with_context(|| format!("sync.key_file {}", config.key_file.display()))?;
        let iface = config.interface.clone().unwrap_or_else(|| interface.into());
        let endpoint = Endpoint {
            port: config.port,
            group: config.group,
            ifindex,
            peers: config.peers.clone(),
            ttl: config.ttl,
        };
        let sender = random_sender().context("drawing a sync sender id")?;
        let channel = Channel::open(&endpoint, key, u64::from(config.id), sender)
            .with_context(|| format!("opening the sync socket on port {}", config.port))?;
        info!(
            port = config.port,
            group = ?config.group,
            peers = ?config.peers,
            sender = format!("{sender:016x}"),
            "director sync on"
        );
        Ok(Self {
            info: SyncInfo {
                id: config.id,
                interface: iface.clone(),
                port: config.port,
                group: config.group,
                ttl: config.ttl,
                peers: config.peers.clone(),
                sender,
                resync: "not asked".into(),
                ..SyncInfo::default()
            },
            config: config.clone(),
            interface: iface,
            channel,
            directory: Directory::default(),
            outbox: VecDeque::new(),
            peers: BTreeMap::new(),
            answered: HashMap::new(),
            last_refresh: Instant::now(),
            last_drain: Instant::now(),
            last_error: None,
        })
    }

    /// Follows what is installed (after every applied plan).
    pub(super) fn set_directory(&mut self, installed: &Installed) {
        self.directory = Directory::of(installed);
    }

    /// Asks the peers for their flows and stores what arrives, until every unicast peer has
    /// answered (or, with only a group, one peer and a short grace), or `wait` has passed.
    pub(super) async fn resync(&mut self, dp: &mut Dataplane, wait: Duration) {
        let started = Instant::now();
        let before = self.info.stored + self.info.refreshed;
        let request = self.channel.encode(Kind::StateRequest, &[]);
        self.queue(request, None);
        self.flush().await;
        let expected = self.config.peers.len();
        let mut ended: Vec<u64> = Vec::new();
        let mut deadline = started + wait;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(received) = timeout(left, self.channel.recv()).await else {
                break;
            };
            match received {
                Ok(Inbound::Accepted(from, d)) if d.header.kind == Kind::StateEnd => {
                    self.heard(d.header.sender, from, 0);
                    if !ended.contains(&d.header.sender) {
                        ended.push(d.header.sender);
                    }
                    if expected > 0 && ended.len() >= expected {
                        break;
                    }
                    if expected == 0 {
                        deadline = deadline.min(Instant::now() + MULTICAST_GRACE);
                    }
                }
                Ok(inbound) => self.on_inbound(inbound, dp),
                Err(e) => self.error(format!("receiving: {e}")),
            }
            self.flush().await;
        }
        let flows = self.info.stored + self.info.refreshed - before;
        self.info.resync = format!(
            "{flows} flows from {} peer(s) in {} ms",
            ended.len(),
            started.elapsed().as_millis()
        );
        if ended.is_empty() {
            warn!(
                waited_ms = wait.as_millis() as u64,
                "no sync peer answered; this director starts with its own flows only"
            );
        } else {
            info!(flows, peers = ended.len(), "resynced from the peers");
        }
    }

    /// Takes the program's announcements and queues them for every destination; sends what
    /// is queued.
    pub(super) async fn drain(&mut self, dp: &mut Dataplane) {
        let started = Instant::now();
        // An announcement read now was written after the previous read began at the earliest.
        let waited = started.duration_since(self.last_drain);
        self.last_drain = started;
        let mut sent_events = false;
        match dp.drain_sync_ring(DRAIN_MAX) {
            Ok(drain) => {
                self.info.overrun += drain.lost;
                if !drain.events.is_empty() {
                    let records = self.records(drain.events.iter().map(|e| (e, 0)));
                    let datagrams = self.channel.encode(Kind::Records, &records);
                    self.queue_records(datagrams, records.len(), None);
                    sent_events = true;
                }
            }
            Err(e) => self.error(format!("reading the announcements: {e}")),
        }
        if self.last_refresh.elapsed() >= self.config.refresh {
            self.last_refresh = Instant::now();
            self.queue_dump(dp, None);
        }
        self.flush().await;
        if sent_events {
            self.info.lag_ms = (waited + started.elapsed()).as_secs_f64() * 1000.0;
            self.info.lag_ms_max = self.info.lag_ms_max.max(self.info.lag_ms);
        }
    }

    /// Waits for the next datagram (cancel-safe: nothing is lost when another branch wins).
    pub(super) async fn recv(&mut self) -> std::io::Result<Inbound> {
        self.channel.recv().await
    }

    /// Handles a received datagram.
    pub(super) fn on_inbound(&mut self, inbound: Inbound, dp: &mut Dataplane) {
        let (from, d) = match inbound {
            Inbound::Own => return,
            Inbound::Rejected(from, why) => {
                match why {
                    Rejection::Auth => self.info.rejected_auth += 1,
                    Rejection::Replay(_) => self.info.rejected_replay += 1,
                    Rejection::Instance(_) => self.info.rejected_instance += 1,
                    Rejection::Malformed(_) => self.info.rejected_malformed += 1,
                }
                self.error(format!("rejected a datagram from {from}: {why}"));
                return;
            }
            Inbound::Accepted(from, d) => (from, d),
        };
        self.info.received_datagrams += 1;
        self.info.received_records += d.records.len() as u64;
        self.heard(d.header.sender, from, d.records.len() as u64);
        match d.header.kind {
            Kind::Records => self.store(&d.records, dp),
            Kind::StateRequest => {
                let fresh = self
                    .answered
                    .get(&d.header.sender)
                    .is_none_or(|t| t.elapsed() >= ANSWER_AGAIN_AFTER);
                if fresh {
                    self.answered.insert(d.header.sender, Instant::now());
                    info!(%from, "a peer asked for our flows");
                    self.queue_dump(dp, Some(from));
                }
            }
            Kind::StateEnd => {}
        }
    }

    /// What lbadm and the metrics show.
    pub(super) fn info(&self) -> SyncInfo {
        let mut info = self.info.clone();
        info.interface.clone_from(&self.interface);
        info.heard = self
            .peers
            .iter()
            .map(|(sender, p)| PeerInfo {
                addr: Some(p.addr),
                sender: *sender,
                last_heard_secs: p.last.elapsed().as_secs_f64(),
                records: p.records,
            })
            .collect();
        info.last_error = self
            .last_error
            .as_ref()
            .map(|(at, e)| format!("{e} ({}s ago)", at.elapsed().as_secs()));
        info
    }

    fn store(&mut self, records: &[Record], dp: &mut Dataplane) {
        let now = dp.clock();
        for record in records {
            let Record::Conn(conn) = record else {
                // Templates travel with their connections; a template record is not sent.
                self.info.unplaced += 1;
                continue;
            };
            let placed = match incoming(conn, &self.directory) {
                Ok(p) => p,
                Err(_) => {
                    self.info.unplaced += 1;
                    continue;
                }
            };
            let stamp = now.saturating_sub(u32::from(conn.idle));
            let result = dp.store_peer_conn(&placed.flow, &placed.conn, stamp, placed.service_id);
            match result {
                Ok(PeerStore::Stored) => self.info.stored += 1,
                Ok(PeerStore::Refreshed) => self.info.refreshed += 1,
                Ok(PeerStore::Kept) => self.info.kept += 1,
                Ok(PeerStore::NoRoom) => self.info.no_room += 1,
                Err(e) => {
                    self.info.no_room += 1;
                    self.error(format!("storing a peer's flow: {e}"));
                }
            }
        }
    }

    /// Queues every live flow of both tables that the program would announce, with its idle
    /// time: to one peer (a state request's answer, closed by a state end) or to all.
    fn queue_dump(&mut self, dp: &Dataplane, to: Option<SocketAddr>) {
        let settings = dp.settings();
        let now = settings.clock;
        let live = |state: u8, stamp: u32| confirmed(state) && settings.conn_live(state, stamp);
        let mut events: Vec<(SyncEvent, u16)> = Vec::new();
        for e in dp.conns4() {
            if live(e.conn.state, e.stamp) {
                let idle = now.wrapping_sub(e.stamp).min(u32::from(u16::MAX)) as u16;
                events.push((SyncEvent::of4(&e.key, e.conn.real, e.conn.state), idle));
            }
        }
        for e in dp.conns6() {
            if live(e.conn.state, e.stamp) {
                let idle = now.wrapping_sub(e.stamp).min(u32::from(u16::MAX)) as u16;
                events.push((SyncEvent::of6(&e.key, e.conn.real, e.conn.state), idle));
            }
        }
        let records = self.records(events.iter().map(|(e, idle)| (e, *idle)));
        if !records.is_empty() {
            let datagrams = self.channel.encode(Kind::Records, &records);
            self.queue_records(datagrams, records.len(), to);
        }
        if to.is_some() {
            let end = self.channel.encode(Kind::StateEnd, &[]);
            self.queue(end, to);
        }
    }

    fn records<'a>(&mut self, events: impl Iterator<Item = (&'a SyncEvent, u16)>) -> Vec<Record> {
        let mut out = Vec::new();
        for (event, idle) in events {
            match outgoing(event, idle, &self.directory) {
                Some(r) => out.push(r),
                None => self.info.dropped += 1,
            }
        }
        out
    }

    fn queue_records(&mut self, datagrams: Vec<Vec<u8>>, records: usize, to: Option<SocketAddr>) {
        // Every datagram but the last is full.
        let n = datagrams.len();
        for (i, datagram) in datagrams.into_iter().enumerate() {
            let count = if i + 1 < n {
                crate::sync::wire::MAX_RECORDS
            } else {
                records - crate::sync::wire::MAX_RECORDS * (n - 1)
            };
            self.outbox.push_back(Outgoing {
                datagram,
                records: count,
                to,
            });
        }
    }

    fn queue(&mut self, datagrams: Vec<Vec<u8>>, to: Option<SocketAddr>) {
        for datagram in datagrams {
            self.outbox.push_back(Outgoing {
                datagram,
                records: 0,
                to,
            });
        }
    }

    /// Sends up to [`SEND_BURST`] queued datagrams.
    async fn flush(&mut self) {
        for _ in 0..SEND_BURST {
            let Some(out) = self.outbox.pop_front() else {
                return;
            };
            let destinations: Vec<SocketAddr> = match out.to {
                Some(to) => vec![to],
                None => self.channel.destinations().to_vec(),
            };
            for to in destinations {
                match self.channel.send_to(&out.datagram, to).await {
                    Ok(()) => {
                        self.info.sent_datagrams += 1;
                        self.info.sent_records += out.records as u64;
                    }
                    Err(e) => {
                        self.info.send_errors += 1;
                        self.error(format!("sending to {to}: {e}"));
                    }
                }
            }
        }
    }

    fn heard(&mut self, sender: u64, addr: SocketAddr, records: u64) {
        let peer = self.peers.entry(sender).or_insert(Peer {
            addr,
            last: Instant::now(),
            records: 0,
        });
        peer.addr = addr;
        peer.last = Instant::now();
        peer.records += records;
        // A restarted peer is a new sender: forget senders silent for an hour.
        self.peers
            .retain(|_, p| p.last.elapsed() < Duration::from_secs(3600));
    }

    /// Records an error; logs it unless one was logged in the last second (a flood of forged
    /// datagrams must not flood the log; the counters count them all).
    fn error(&mut self, e: String) {
        if self
            .last_error
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(1))
        {
            warn!("director sync: {e}");
        }
        self.last_error = Some((Instant::now(), e));
    }
}

/// A random 64-bit sender id (the kernel's random source).
fn random_sender() -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    Ok(u64::from_ne_bytes(b))
}
