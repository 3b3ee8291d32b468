//! Health checking with keepalived's semantics.
//!
//! One task on the agent's tokio runtime schedules every checker from a queue of due times (in
//! millisecond buckets) and runs the probes concurrently, at most `concurrency` at once.
//! Half-open probes ([`syn`]) due together leave in one batch, and their outcomes come back
//! together; the other probes are futures of their own. The first checks are spread
//! over the first second by a per-real phase, or over `warmup` at random when it is set, so
//! thousands of reals are not probed in the same instant; later checks keep their own rhythm.
//! A real may have several checkers, each scheduled on its own and keyed by its index in the
//! real's `checks`; the agent counts a real down while any of them is (keepalived).
//! State changes, and changes of what a checker does to its real's weight (`misc_dynamic`,
//! `file_check`), are sent to the agent, which feeds them into the same desired state ->
//! plan -> maps path as a reload. A reload replaces the set of checkers; a (service, real,
//! index) that stays with the same kind of check keeps its state, weight and counters. What to
//! check comes from the configuration ([`spec`]).

pub mod amqp;
pub mod dns;
pub mod file;
pub mod frame;
pub mod machine;
pub mod ping;
pub mod probe;
pub mod smtp;
pub mod spec;
pub mod stream;
pub mod syn;
pub mod tcp_session;
pub mod tls;
pub mod udp;
pub mod vip_stream;

use std::{
    collections::{BTreeMap, HashMap},
    hash::{DefaultHasher, Hash as _, Hasher as _},
    net::IpAddr,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use futures_util::{StreamExt as _, stream::FuturesUnordered};
use tokio::{
    sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel},
    time::Instant,
};

pub use self::{
    machine::{Machine, Outcome, Timing, Transition},
    probe::Probe,
    spec::{CheckFileError, check_specs},
};
use crate::model::WeightEffect;

/// The reals' MAC addresses as the neighbour table has them (kept by the agent), for the
/// half-open probes that address frames themselves.
pub type Macs = Arc<RwLock<HashMap<IpAddr, [u8; 6]>>>;

/// What the probes share: the half-open prober (absent when the packet socket could not be
/// opened) and the reals' MACs.
#[derive(Clone, Default)]
pub struct ProbeContext {
    /// The half-open prober of the agent's interface.
    pub syn: Option<Arc<syn::SynProber>>,
    /// The reals' MACs.
    pub macs: Macs,
}

/// A checker's identity: the real inside its service, and the checker's index in the real's
/// `checks`.
pub type CheckKey = crate::reconcile::desired::CheckId;

/// What one checker of a real checks, and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    /// Service and real.
    pub key: CheckKey,
    /// The probe.
    pub probe: Probe,
    /// Timing.
    pub timing: Timing,
    /// Start down until a check passes.
    pub alpha: bool,
    /// Random delay, up to this, before the first check.
    pub warmup: Option<Duration>,
}

/// A checker's state as the listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckStatus {
    /// keepalived's checker name.
    pub checker: &'static str,
    /// Up or down.
    pub up: bool,
    /// The last outcome.
    pub last: Option<Outcome>,
    /// How long the last probe took.
    pub latency: Option<Duration>,
    /// Total time spent in probes.
    pub latency_total: Duration,
    /// Time since the current state began.
    pub since: Duration,
    /// Probes run and failed.
    pub checks: u64,
    /// Probes failed.
    pub failures: u64,
    /// What the checker does to the real's weight now.
    pub weight: Option<WeightEffect>,
}

/// A checker's state or weight changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent {
    /// Which checker of which real.
    pub key: CheckKey,
    /// Up or down; `None` when only the weight changed.
    pub transition: Option<Transition>,
    /// What the checker now does to the real's weight (`misc_dynamic`, `file_check`).
    pub weight: Option<WeightEffect>,
    /// The probe that caused it.
    pub outcome: Outcome,
}

enum Command {
    Update(Vec<CheckSpec>, BTreeMap<CheckKey, bool>),
}

struct Entry {
    spec: CheckSpec,
    machine: Machine,
    /// Bumped when the entry is replaced, so stale due items are ignored.
    generation: u64,
    in_flight: bool,
    /// When the probe in flight started.
    started: Duration,
    latency: Option<Duration>,
    latency_total: Duration,
    /// What the checker does to the real's weight (keepalived's `cur_weight`).
    weight: Option<WeightEffect>,
}

/// A place in the scheduler's table of checkers. A checker removed while its probe is in
/// flight leaves its slot draining until the probe's result comes back, so a result always
/// belongs to the slot's current checker.
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every slot holds a checker: a box would add an allocation and an \
              indirection per checker to save nothing"
)]
enum Slot {
    Free,
    Live(Entry),
    Draining,
}

/// Every slot's published status (`None` when the slot holds no checker), shared by the
/// scheduler and [`HealthChecker::status`].
type Published = Arc<Mutex<Vec<Option<(CheckKey, CheckStatus)>>>>;

/// The running health checker.
pub struct HealthChecker {
    commands: UnboundedSender<Command>,
    status: Published,
    epoch: Instant,
}

impl HealthChecker {
    /// Starts checking `specs` on the current runtime, sending state changes to `events`.
    /// `known` gives the state to resume from for reals whose state is already known (after
    /// a restart); others start up, or down with `alpha`.
    pub fn start(
        specs: Vec<CheckSpec>,
        known: BTreeMap<CheckKey, bool>,
        events: UnboundedSender<HealthEvent>,
        concurrency: usize,
        ctx: ProbeContext,
    ) -> Self {
        let (commands, rx) = unbounded_channel();
        let status = Arc::new(Mutex::new(Vec::new()));
        let epoch = Instant::now();
        let scheduler = Scheduler {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            due: DueQueue::default(),
            dirty: Vec::new(),
            in_flight: 0,
            next_generation: 0,
            epoch,
            events,
            status: status.clone(),
            concurrency: concurrency.max(1),
            rng: 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()),
            ctx: Arc::new(ctx),
        };
        let _ = commands.send(Command::Update(specs, known));
        tokio::spawn(scheduler.run(rx));
        Self {
            commands,
            status,
            epoch,
        }
    }

    /// Replaces the checkers (a reload): kept reals keep their state and counters.
    pub fn update(&self, specs: Vec<CheckSpec>) {
        let _ = self.commands.send(Command::Update(specs, BTreeMap::new()));
    }

    /// Every checker's state.
    pub fn status(&self) -> BTreeMap<CheckKey, CheckStatus> {
        self.status
            .lock()
            .expect("status lock")
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Time since the checker started (the clock of `CheckStatus::since`).
    pub fn uptime(&self) -> Duration {
        self.epoch.elapsed()
    }
}

/// Due checks in buckets of one millisecond, the resolution of tokio's timer that wakes the
/// scheduler: a check due at `t` starts at the first wake-up at or after `t` rounded up to the
/// millisecond, with the others of its bucket, in one batch. Cheaper than a heap of single
/// due times: a push and a pop are a few comparisons of the buckets' keys and no sifting.
#[derive(Default)]
struct DueQueue {
    /// (slot, generation) by due millisecond (since the scheduler's epoch).
    buckets: BTreeMap<u64, Vec<(u32, u64)>>,
    /// Emptied buckets, kept for their allocation.
    spare: Vec<Vec<(u32, u64)>>,
}

impl DueQueue {
    const SPARE: usize = 64;

    fn push(&mut self, due: Duration, slot: u32, generation: u64) {
        let ms = u64::try_from(due.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        let spare = &mut self.spare;
        self.buckets
            .entry(ms)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push((slot, generation));
    }

    /// When the earliest bucket is due.
    fn next(&self) -> Option<Duration> {
        self.buckets
            .first_key_value()
            .map(|(ms, _)| Duration::from_millis(*ms))
    }

    /// A check due by `now`.
    fn pop(&mut self, now: Duration) -> Option<(u32, u64)> {
        let mut first = self.buckets.first_entry()?;
        if Duration::from_millis(*first.key()) > now {
            return None;
        }
        let item = first.get_mut().pop();
        if first.get().is_empty() {
            let bucket = first.remove();
            if self.spare.len() < Self::SPARE {
                self.spare.push(bucket);
            }
        }
        item
    }
}

struct Scheduler {
    /// The checkers, by slot.
    slots: Vec<Slot>,
    /// Free slots.
    free: Vec<u32>,
    /// Each checker's slot.
    index: HashMap<CheckKey, u32>,
    /// Due checks: (slot, generation).
    due: DueQueue,
    /// Slots whose status changed since it was last published.
    dirty: Vec<u32>,
    /// Probes started and not finished.
    in_flight: usize,
    next_generation: u64,
    epoch: Instant,
    events: UnboundedSender<HealthEvent>,
    /// Every slot's status (`None` when free).
    status: Published,
    concurrency: usize,
    rng: u64,
    ctx: Arc<ProbeContext>,
}

/// A finished probe: its checker's slot and what it found (`None`: nothing to go by, the last
/// result stands), with what it does to the real's weight.
type ProbeResult = (u32, Option<(Outcome, Option<WeightEffect>)>);

impl Scheduler {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    async fn run(mut self, mut commands: UnboundedReceiver<Command>) {
        let mut running: FuturesUnordered<
            std::pin::Pin<Box<dyn Future<Output = ProbeResult> + Send>>,
        > = FuturesUnordered::new();
        // Half-open probes go to the prober in one batch per wake-up, and their outcomes come
        // back on one channel, tagged with their slot: no future, timer or task per probe.
        let (syn_tx, mut syn_rx) = unbounded_channel::<(u64, Outcome)>();
        let mut batch: Vec<syn::SynRequest> = Vec::new();
        let mut unsent: Vec<ProbeResult> = Vec::new();
        let mut done: Vec<(u64, Outcome)> = Vec::new();
        loop {
            // Start every due probe that fits.
            let now = self.now();
            while self.in_flight < self.concurrency {
                let Some((slot, generation)) = self.due.pop(now) else {
                    break;
                };
                let Some(Slot::Live(entry)) = self.slots.get_mut(slot as usize) else {
                    continue;
                };
                if entry.generation != generation || entry.in_flight {
                    continue;
                }
                entry.in_flight = true;
                entry.started = now;
                self.in_flight += 1;
                let limit = entry.spec.timing.connect_timeout;
                match (&entry.spec.probe, &self.ctx.syn) {
                    (Probe::Syn { target, real }, Some(_)) => {
                        let macs = self.ctx.macs.read().expect("macs lock");
                        match probe::syn_target(*target, *real, &macs) {
                            Ok(target) => batch.push(syn::SynRequest {
                                target,
                                limit,
                                tag: u64::from(slot),
                            }),
                            Err(outcome) => unsent.push((slot, Some((outcome, None)))),
                        }
                    }
                    (probe, _) => {
                        let probe = probe.clone();
                        let ctx = self.ctx.clone();
                        running.push(Box::pin(async move {
                            let found = probe.run_weighted(limit, &ctx).await;
                            (slot, found)
                        }));
                    }
                }
            }
            if let (false, Some(prober)) = (batch.is_empty(), &self.ctx.syn) {
                tracing::trace!(probes = batch.len(), "half-open probes sent");
                prober.submit(&batch, &syn_tx).await;
                batch.clear();
            }
            for (slot, found) in unsent.drain(..) {
                self.finished(slot, found);
            }
            self.publish_dirty();
            let next_due = self.due.next().map(|due| self.epoch + due);
            let wake_at = next_due.filter(|_| self.in_flight < self.concurrency);
            let sleep = async move {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Update(specs, known)) => self.update(specs, known),
                    None => return,
                },
                Some((slot, found)) = running.next(), if !running.is_empty() => {
                    self.finished(slot, found);
                }
                n = syn_rx.recv_many(&mut done, 1024) => {
                    if n > 0 {
                        self.publish_batch(&mut done);
                    }
                }
                () = sleep => {}
            }
        }
    }

    /// Records a batch of half-open outcomes, tagged with their slots.
    fn publish_batch(&mut self, done: &mut Vec<(u64, Outcome)>) {
        for (tag, outcome) in done.drain(..) {
            match u32::try_from(tag) {
                Ok(slot) => self.finished(slot, Some((outcome, None))),
                Err(_) => tracing::error!(tag, "a half-open result with no slot"),
            }
        }
    }

    fn update(&mut self, specs: Vec<CheckSpec>, known: BTreeMap<CheckKey, bool>) {
        let now = self.now();
        let mut index = HashMap::with_capacity(specs.len());
        for spec in specs {
            let key = spec.key;
            let previous = self.index.remove(&key);
            if let Some(slot) = previous
                && let Slot::Live(kept) = &mut self.slots[slot as usize]
                && (kept.spec.probe.kind() == spec.probe.kind() || kept.spec == spec)
            {
                kept.machine.retime(spec.timing);
                kept.spec = spec;
                index.insert(key, slot);
                continue;
            }
            // A new checker (or a different kind of check at the same index): resume from
            // what is known, else start fresh.
            // A weight the old checker set goes with it.
            let was = previous.and_then(|slot| self.release(slot));
            if let Some((up, Some(_))) = was {
                let _ = self.events.send(HealthEvent {
                    key,
                    transition: None,
                    weight: None,
                    outcome: Outcome {
                        ok: up,
                        detail: "checker replaced".into(),
                    },
                });
            }
            let was_up = was.map(|(up, _)| up);
            let first = self.first_delay(&spec);
            let machine = match (known.get(&key), was_up) {
                (Some(&up), _) | (None, Some(up)) => Machine::resume(spec.timing, up, now, first),
                (None, None) => Machine::new(spec.timing, spec.alpha, now, first),
            };
            self.next_generation += 1;
            let generation = self.next_generation;
            let due = machine.next_check();
            let slot = self.allocate(Entry {
                spec,
                machine,
                generation,
                in_flight: false,
                started: Duration::ZERO,
                latency: None,
                latency_total: Duration::ZERO,
                weight: None,
            });
            self.due.push(due, slot, generation);
            index.insert(key, slot);
        }
        // Reals no longer configured.
        let removed: Vec<u32> = self.index.drain().map(|(_, slot)| slot).collect();
        for slot in removed {
            self.release(slot);
        }
        self.index = index;
        self.publish_all();
    }

    /// Puts `entry` in a free slot.
    fn allocate(&mut self, entry: Entry) -> u32 {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Slot::Live(entry);
                slot
            }
            None => {
                self.slots.push(Slot::Live(entry));
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 checkers")
            }
        }
    }

    /// Removes the checker of `slot` (draining if its probe is in flight); returns whether its
    /// real was up, and what it did to the real's weight.
    fn release(&mut self, slot: u32) -> Option<(bool, Option<WeightEffect>)> {
        let place = &mut self.slots[slot as usize];
        let Slot::Live(entry) = std::mem::replace(place, Slot::Free) else {
            return None;
        };
        if entry.in_flight {
            *place = Slot::Draining;
        } else {
            self.free.push(slot);
        }
        Some((entry.machine.is_up(), entry.weight))
    }

    fn finished(&mut self, slot: u32, found: Option<(Outcome, Option<WeightEffect>)>) {
        let now = self.now();
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(place) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let entry = match place {
            Slot::Live(entry) if entry.in_flight => entry,
            Slot::Draining => {
                // Its checker was removed while the probe ran.
                *place = Slot::Free;
                self.free.push(slot);
                return;
            }
            _ => return,
        };
        entry.in_flight = false;
        let took = now.saturating_sub(entry.started);
        entry.latency = Some(took);
        entry.latency_total += took;
        let key = entry.spec.key;
        // Nothing to go by: the last outcome (or, before any, a pass) is recorded again.
        let (outcome, weight) = found.unwrap_or_else(|| {
            let last = entry.machine.last().cloned().unwrap_or(Outcome {
                ok: true,
                detail: "no result yet".into(),
            });
            (last, entry.weight)
        });
        let transition = entry.machine.record(now, outcome.clone());
        // keepalived: a passing check sets the weight it brings; a checker that goes down
        // drops its weight; failures before that keep it.
        let new_weight = match (outcome.ok, transition) {
            (true, _) => weight,
            (false, Some(Transition::Down)) => None,
            (false, _) => entry.weight,
        };
        let weight_changed = new_weight != entry.weight;
        entry.weight = new_weight;
        if transition.is_some() || weight_changed {
            let _ = self.events.send(HealthEvent {
                key,
                transition,
                weight: new_weight,
                outcome,
            });
        }
        self.due
            .push(entry.machine.next_check(), slot, entry.generation);
        self.dirty.push(slot);
    }

    /// When the first check of a new checker runs: at random within `warmup`, else at a
    /// per-real phase within the first second (or `delay_loop`, if shorter).
    fn first_delay(&mut self, spec: &CheckSpec) -> Duration {
        if let Some(w) = spec.warmup.filter(|w| !w.is_zero()) {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            return Duration::from_micros(self.rng % (w.as_micros() as u64 + 1));
        }
        let span = spec.timing.delay_loop.min(Duration::from_secs(1));
        let mut h = DefaultHasher::new();
        spec.key.hash(&mut h);
        Duration::from_micros(h.finish() % (span.as_micros() as u64).max(1))
    }

    fn status_of(entry: &Entry) -> CheckStatus {
        let (checks, failures) = entry.machine.counters();
        CheckStatus {
            checker: entry.spec.probe.kind(),
            up: entry.machine.is_up(),
            last: entry.machine.last().cloned(),
            latency: entry.latency,
            latency_total: entry.latency_total,
            since: entry.machine.since(),
            checks,
            failures,
            weight: entry.weight,
        }
    }

    /// Publishes the status of every slot that changed, under one lock, in place (reusing
    /// each outcome's allocation).
    fn publish_dirty(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let mut all = self.status.lock().expect("status lock");
        for slot in self.dirty.drain(..) {
            if let Some(Slot::Live(entry)) = self.slots.get(slot as usize) {
                Self::publish(&mut all, slot, entry);
            }
        }
    }

    fn publish(all: &mut Vec<Option<(CheckKey, CheckStatus)>>, slot: u32, entry: &Entry) {
        match all.get_mut(slot as usize) {
            Some(Some((key, s))) if *key == entry.spec.key => {
                let (checks, failures) = entry.machine.counters();
                s.checker = entry.spec.probe.kind();
                s.up = entry.machine.is_up();
                match (&mut s.last, entry.machine.last()) {
                    (Some(mine), Some(last)) => mine.clone_from(last),
                    (mine, last) => *mine = last.cloned(),
                }
                s.latency = entry.latency;
                s.latency_total = entry.latency_total;
                s.since = entry.machine.since();
                s.checks = checks;
                s.failures = failures;
                s.weight = entry.weight;
            }
            Some(place) => *place = Some((entry.spec.key, Self::status_of(entry))),
            None => {
                all.resize(slot as usize + 1, None);
                all[slot as usize] = Some((entry.spec.key, Self::status_of(entry)));
            }
        }
    }

    fn publish_all(&mut self) {
        self.dirty.clear();
        let all = self
            .slots
            .iter()
            .map(|place| match place {
                Slot::Live(e) => Some((e.spec.key, Self::status_of(e))),
                Slot::Free | Slot::Draining => None,
            })
            .collect();
        *self.status.lock().expect("status lock") = all;
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    use tokio::net::TcpListener;

    use super::*;
    use crate::model::{Protocol, RealKey, ServiceKey};

    fn key(port: u16) -> CheckKey {
        (
            ServiceKey {
                vip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)),
                port: 80,
                proto: Protocol::Tcp,
            },
            RealKey {
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
            },
            0,
        )
    }

    fn spec(target: SocketAddr, alpha: bool) -> CheckSpec {
        CheckSpec {
            key: key(target.port()),
            probe: Probe::Tcp { target, bind: None },
            timing: Timing {
                delay_loop: Duration::from_millis(100),
                retry: 1,
                delay_before_retry: Duration::from_millis(50),
                connect_timeout: Duration::from_millis(200),
            },
            alpha,
            warmup: None,
        }
    }

    async fn next_event(rx: &mut UnboundedReceiver<HealthEvent>) -> HealthEvent {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event in time")
            .expect("channel open")
    }

    #[tokio::test]
    async fn real_servers_go_down_and_come_back() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            loop {
                let _ = listener.accept().await;
            }
        });
        let (tx, mut rx) = unbounded_channel();
        let checker = HealthChecker::start(
            vec![spec(addr, true)],
            BTreeMap::new(),
            tx,
            8,
            ProbeContext::default(),
        );
        // alpha: starts down, the first passing check brings it up.
        let up = next_event(&mut rx).await;
        assert_eq!(up.transition, Some(Transition::Up));
        assert_eq!(up.outcome.detail, "connected");
        // Stop listening: down after 1 + retry failures.
        accept.abort();
        let _ = accept.await;
        let down = next_event(&mut rx).await;
        assert_eq!(down.transition, Some(Transition::Down));
        assert_eq!(down.outcome.detail, "connect refused");
        let status = checker.status()[&key(addr.port())].clone();
        assert!(
            !status.up && status.checks >= 3 && status.failures >= 2,
            "{status:?}"
        );
        // Listen again on the same port: up.
        let listener = TcpListener::bind(addr).await.unwrap();
        let _accept = tokio::spawn(async move {
            loop {
                let _ = listener.accept().await;
            }
        });
        assert_eq!(next_event(&mut rx).await.transition, Some(Transition::Up));
    }

    #[tokio::test]
    async fn an_ipv6_real_goes_down_and_comes_back() {
        let listener = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key6 = (
            ServiceKey {
                vip: "2001:db8::100".parse().unwrap(),
                port: 443,
                proto: Protocol::Tcp,
            },
            RealKey {
                addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                port: addr.port(),
            },
            0,
        );
        let mut http = spec(addr, true);
        http.key = key6;
        http.probe = Probe::Http {
            target: addr,
            bind: None,
            urls: vec![probe::HttpUrl {
                path: "/health".into(),
                host: probe::host_header(addr),
                status: crate::config::StatusCodes::one(200),
                digest: None,
            }],
            auth: None,
            vip: None,
            tls: None,
        };
        let serve = |listener: TcpListener| {
            tokio::spawn(async move {
                while let Ok((mut s, _)) = listener.accept().await {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
                }
            })
        };
        let server = serve(listener);
        let (tx, mut rx) = unbounded_channel();
        let checker =
            HealthChecker::start(vec![http], BTreeMap::new(), tx, 8, ProbeContext::default());
        let up = next_event(&mut rx).await;
        assert_eq!((up.key, up.transition), (key6, Some(Transition::Up)));
        assert_eq!(up.outcome.detail, "HTTP 200");
        server.abort();
        let _ = server.await;
        let down = next_event(&mut rx).await;
        assert_eq!(down.transition, Some(Transition::Down));
        assert_eq!(down.outcome.detail, "connect refused");
        assert!(!checker.status()[&key6].up);
        let _server = serve(TcpListener::bind(addr).await.unwrap());
        assert_eq!(next_event(&mut rx).await.transition, Some(Transition::Up));
    }

    #[tokio::test]
    async fn a_reload_keeps_state_and_counters() {
        let closed = {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
            l.local_addr().unwrap()
        };
        let (tx, mut rx) = unbounded_channel();
        let checker = HealthChecker::start(
            vec![spec(closed, false)],
            BTreeMap::new(),
            tx,
            8,
            ProbeContext::default(),
        );
        assert_eq!(next_event(&mut rx).await.transition, Some(Transition::Down));
        let before = checker.status()[&key(closed.port())].clone();
        // Same real, new timing: still down, counters continue, no new transition.
        let mut respec = spec(closed, false);
        respec.timing.retry = 5;
        checker.update(vec![respec]);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let after = checker.status()[&key(closed.port())].clone();
        assert!(!after.up);
        assert!(after.checks > before.checks, "{before:?} -> {after:?}");
        assert!(rx.try_recv().is_err(), "no transition from a reload");
        // Removing the real removes its checker.
        checker.update(vec![]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(checker.status().is_empty());
    }

    #[tokio::test]
    async fn checkers_of_one_real_report_apart_with_their_weights() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _accept = tokio::spawn(async move {
            loop {
                let _ = listener.accept().await;
            }
        });
        let tcp = spec(addr, false);
        let mut misc = spec(addr, false);
        misc.key.2 = 1;
        misc.probe = Probe::Misc {
            command: "exit 5".into(),
            timeout: Duration::from_secs(2),
            dynamic: true,
        };
        let (tx, mut rx) = unbounded_channel();
        let checker = HealthChecker::start(
            vec![tcp, misc.clone()],
            BTreeMap::new(),
            tx,
            8,
            ProbeContext::default(),
        );
        // The TCP checker stays up (no event); the script, up too, sets the weight to 3.
        let event = next_event(&mut rx).await;
        assert_eq!(event.key, misc.key);
        assert_eq!(
            (event.transition, event.weight),
            (None, Some(WeightEffect::Set(3)))
        );
        let status = checker.status();
        assert_eq!(status.len(), 2);
        assert_eq!(status[&misc.key].weight, Some(WeightEffect::Set(3)));
        // The script now fails: that checker goes down and drops its weight; the other one
        // is untouched.
        misc.probe = Probe::Misc {
            command: "exit 1".into(),
            timeout: Duration::from_secs(2),
            dynamic: true,
        };
        checker.update(vec![spec(addr, false), misc.clone()]);
        let event = next_event(&mut rx).await;
        assert_eq!(
            (event.key, event.transition, event.weight),
            (misc.key, Some(Transition::Down), None)
        );
        assert!(checker.status()[&key(addr.port())].up);
    }

    #[tokio::test]
    async fn a_file_check_follows_its_file() {
        let dir = std::env::temp_dir().join(format!("lb-file-sched-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("weight");
        std::fs::write(&path, "2\n").unwrap();
        let mut file = spec(SocketAddr::from((Ipv4Addr::LOCALHOST, 9)), false);
        file.probe = Probe::File {
            path: path.clone(),
            weight: 10,
            reverse: false,
        };
        file.timing.retry = 0;
        let (tx, mut rx) = unbounded_channel();
        let checker = HealthChecker::start(
            vec![file.clone()],
            BTreeMap::new(),
            tx,
            8,
            ProbeContext::default(),
        );
        let event = next_event(&mut rx).await;
        assert_eq!(
            (event.transition, event.weight),
            (None, Some(WeightEffect::Add(20)))
        );
        // A number keepalived ignores: nothing changes.
        std::fs::write(&path, "99999999999\n").unwrap();
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(rx.try_recv().is_err(), "an ignored number changes nothing");
        assert_eq!(
            checker.status()[&file.key].weight,
            Some(WeightEffect::Add(20))
        );
        // At the fault value: down at once, its weight gone.
        std::fs::write(&path, "-2147483648\n").unwrap();
        let event = next_event(&mut rx).await;
        assert_eq!(
            (event.transition, event.weight),
            (Some(Transition::Down), None)
        );
        // Back to 1: up with 10.
        std::fs::write(&path, "1\n").unwrap();
        let event = next_event(&mut rx).await;
        assert_eq!(
            (event.transition, event.weight),
            (Some(Transition::Up), Some(WeightEffect::Add(10)))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn known_state_is_resumed_after_a_restart() {
        let closed = {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
            l.local_addr().unwrap()
        };
        let (tx, mut rx) = unbounded_channel();
        let known = BTreeMap::from([(key(closed.port()), false)]);
        let checker = HealthChecker::start(
            vec![spec(closed, false)],
            known,
            tx,
            8,
            ProbeContext::default(),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!checker.status()[&key(closed.port())].up);
        assert!(rx.try_recv().is_err(), "already down: no Down event");
    }

    #[test]
    fn due_checks_start_once_their_millisecond_has_begun() {
        let ms = Duration::from_millis;
        let mut q = DueQueue::default();
        q.push(ms(5) + Duration::from_micros(300), 1, 10);
        q.push(ms(2), 2, 20);
        q.push(ms(5) + Duration::from_micros(900), 3, 30);
        // Rounded up to the millisecond: 2 ms, then 6 ms for both others.
        assert_eq!(q.next(), Some(ms(2)));
        assert_eq!(q.pop(ms(1)), None);
        assert_eq!(q.pop(ms(2)), Some((2, 20)));
        assert_eq!(q.pop(ms(5) + Duration::from_micros(950)), None);
        assert_eq!(q.next(), Some(ms(6)));
        let mut both = vec![q.pop(ms(6)).unwrap(), q.pop(ms(7)).unwrap()];
        both.sort_unstable();
        assert_eq!(both, [(1, 10), (3, 30)]);
        assert_eq!((q.pop(ms(100)), q.next()), (None, None));
        // An emptied bucket's allocation is kept for the next one.
        q.push(ms(9), 4, 40);
        assert_eq!(q.pop(ms(9)), Some((4, 40)));
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        // 40 checkers whose probe is a script that runs out its 200 ms timeout, 4 at a time:
        // after 1.25 s at most 4 x 6 probes can have finished.
        let (tx, _rx) = unbounded_channel();
        let specs: Vec<CheckSpec> = (0..40)
            .map(|i| {
                let mut s = spec(SocketAddr::from((Ipv4Addr::LOCALHOST, 1)), false);
                s.key = key(1000 + i);
                s.probe = Probe::Misc {
                    command: "sleep 5".into(),
                    timeout: Duration::from_millis(200),
                    dynamic: false,
                };
                s
            })
            .collect();
        let checker = HealthChecker::start(specs, BTreeMap::new(), tx, 4, ProbeContext::default());
        tokio::time::sleep(Duration::from_millis(1250)).await;
        let done: u64 = checker.status().values().map(|s| s.checks).sum();
        assert!(done <= 4 * 6 + 4, "{done} probes finished with 4 slots");
        assert!(done >= 8, "probes ran: {done}");
    }
}
