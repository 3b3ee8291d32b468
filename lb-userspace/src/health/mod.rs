//! Health checking with keepalived's semantics.
//!
//! One task on the agent's tokio runtime schedules every checker from a heap of due times and
//! runs the probes concurrently, at most `concurrency` at once. The first checks are spread
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
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
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
    /// Bumped when the entry is replaced, so stale heap items and results are ignored.
    generation: u64,
    in_flight: bool,
    latency: Option<Duration>,
    latency_total: Duration,
    /// What the checker does to the real's weight (keepalived's `cur_weight`).
    weight: Option<WeightEffect>,
}

/// The running health checker.
pub struct HealthChecker {
    commands: UnboundedSender<Command>,
    status: Arc<Mutex<BTreeMap<CheckKey, CheckStatus>>>,
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
        let status = Arc::new(Mutex::new(BTreeMap::new()));
        let epoch = Instant::now();
        let scheduler = Scheduler {
            entries: BTreeMap::new(),
            heap: BinaryHeap::new(),
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
        self.status.lock().expect("status lock").clone()
    }

    /// Time since the checker started (the clock of `CheckStatus::since`).
    pub fn uptime(&self) -> Duration {
        self.epoch.elapsed()
    }
}

struct Scheduler {
    entries: BTreeMap<CheckKey, Entry>,
    heap: BinaryHeap<Reverse<(Duration, CheckKey, u64)>>,
    next_generation: u64,
    epoch: Instant,
    events: UnboundedSender<HealthEvent>,
    status: Arc<Mutex<BTreeMap<CheckKey, CheckStatus>>>,
    concurrency: usize,
    rng: u64,
    ctx: Arc<ProbeContext>,
}

/// A finished probe: its checker and generation, what it found (`None`: nothing to go by, the
/// last result stands) and when it started.
type ProbeResult = (
    CheckKey,
    u64,
    Option<(Outcome, Option<WeightEffect>)>,
    Duration,
);

impl Scheduler {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    async fn run(mut self, mut commands: UnboundedReceiver<Command>) {
        let mut running: FuturesUnordered<
            std::pin::Pin<Box<dyn Future<Output = ProbeResult> + Send>>,
        > = FuturesUnordered::new();
        loop {
            // Start every due probe that fits.
            let now = self.now();
            while running.len() < self.concurrency {
                let Some(Reverse((due, key, generation))) = self.heap.peek().cloned() else {
                    break;
                };
                if due > now {
                    break;
                }
                self.heap.pop();
                let Some(entry) = self.entries.get_mut(&key) else {
                    continue;
                };
                if entry.generation != generation || entry.in_flight {
                    continue;
                }
                entry.in_flight = true;
                let probe = entry.spec.probe.clone();
                let limit = entry.spec.timing.connect_timeout;
                let epoch = self.epoch;
                let ctx = self.ctx.clone();
                running.push(Box::pin(async move {
                    let started = epoch.elapsed();
                    let outcome = probe.run_weighted(limit, &ctx).await;
                    (key, generation, outcome, started)
                }));
            }
            let next_due = self
                .heap
                .peek()
                .map(|Reverse((due, _, _))| self.epoch + *due);
            let wake_at = next_due.filter(|_| running.len() < self.concurrency);
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
                Some((key, generation, found, started)) = running.next(), if !running.is_empty() => {
                    self.finished(key, generation, found, started);
                }
                () = sleep => {}
            }
        }
    }

    fn update(&mut self, specs: Vec<CheckSpec>, known: BTreeMap<CheckKey, bool>) {
        let now = self.now();
        let mut next = BTreeMap::new();
        for spec in specs {
            let key = spec.key;
            let entry = match self.entries.remove(&key) {
                Some(mut kept)
                    if kept.spec.probe.kind() == spec.probe.kind() || kept.spec == spec =>
                {
                    kept.machine.retime(spec.timing);
                    kept.spec = spec;
                    kept
                }
                previous => {
                    // A new checker (or a different kind of check at the same index): resume
                    // from what is known, else start fresh. A weight the old one set goes.
                    if let Some(p) = previous.as_ref().filter(|p| p.weight.is_some()) {
                        let _ = self.events.send(HealthEvent {
                            key,
                            transition: None,
                            weight: None,
                            outcome: Outcome {
                                ok: p.machine.is_up(),
                                detail: "checker replaced".into(),
                            },
                        });
                    }
                    let first = self.first_delay(&spec);
                    let machine = match known.get(&key) {
                        Some(&up) => Machine::resume(spec.timing, up, now, first),
                        None => match previous {
                            Some(p) => Machine::resume(spec.timing, p.machine.is_up(), now, first),
                            None => Machine::new(spec.timing, spec.alpha, now, first),
                        },
                    };
                    self.next_generation += 1;
                    let entry = Entry {
                        spec,
                        machine,
                        generation: self.next_generation,
                        in_flight: false,
                        latency: None,
                        latency_total: Duration::ZERO,
                        weight: None,
                    };
                    self.heap
                        .push(Reverse((entry.machine.next_check(), key, entry.generation)));
                    entry
                }
            };
            next.insert(key, entry);
        }
        self.entries = next;
        self.publish_all();
    }

    fn finished(
        &mut self,
        key: CheckKey,
        generation: u64,
        found: Option<(Outcome, Option<WeightEffect>)>,
        started: Duration,
    ) {
        let now = self.now();
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        entry.in_flight = false;
        let took = now.saturating_sub(started);
        entry.latency = Some(took);
        entry.latency_total += took;
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
        self.heap
            .push(Reverse((entry.machine.next_check(), key, generation)));
        self.publish(key);
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

    fn status_of(&self, entry: &Entry) -> CheckStatus {
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

    fn publish(&self, key: CheckKey) {
        if let Some(entry) = self.entries.get(&key) {
            let status = self.status_of(entry);
            self.status.lock().expect("status lock").insert(key, status);
        }
    }

    fn publish_all(&self) {
        let all = self
            .entries
            .iter()
            .map(|(k, e)| (*k, self.status_of(e)))
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
