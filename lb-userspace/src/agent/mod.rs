//! `lb-agent`: turns a YAML file into a running data plane and keeps it right while things
//! change.
//!
//! Everything that changes the data plane (start-up, SIGHUP reloads, neighbour changes) goes
//! through one path: configuration + observations -> desired state -> plan (diff against what
//! is installed) -> map updates. A rejected configuration or plan changes nothing.
//!
//! Start-up adopts what a previous agent of the same instance pinned: the maps (connections,
//! tables, counters) and the link (the program keeps running while the new one is swapped in
//! atomically), so a restart, even after `kill -9`, breaks no connection. SIGTERM/SIGINT remove
//! the pins, which detaches the program, unless `keep_forwarding_on_stop` is set.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc::UnboundedReceiver,
    time::{Instant, MissedTickBehavior, interval, timeout},
};
use tracing::{debug, error, info, warn};

use crate::{
    config::{Checker, Config, ConfigError},
    control::server::{ControlServer, Pending},
    control::{Request, Response, Snapshot},
    dataplane::instance_lock::InstanceLock,
    dataplane::{Attached, Dataplane, LoadOptions, Origin, PIN_ROOT, PinDir, ensure_bpffs},
    health::{
        CheckKey, CheckSpec, HealthChecker, HealthEvent, Probe, Timing, Transition, next_quorum,
    },
    model::{DesiredState, Health},
    netlink::{MacState, NeighEvent, NeighbourTracker, Netlink},
    observe::metrics,
    observe::snapshot::{self, RATE_INTERVAL, RateEstimator, View},
    reconcile::desired::{Observed, changes, desired_state},
    reconcile::edit,
    reconcile::plan::{Installed, Op},
    schedule::load,
};

/// How often the data plane's clock is advanced.
const CLOCK_TICK: Duration = Duration::from_millis(250);
/// How often removed reals are checked for remaining connections.
const RETIRE_EVERY: Duration = Duration::from_secs(2);
/// How long a fresh start waits for the reals' MAC addresses before installing services.
const FIRST_RESOLUTION_WAIT: Duration = Duration::from_secs(2);
/// Probes in flight at once, over all reals.
const CHECK_CONCURRENCY: usize = 1024;

/// Options from the command line.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The configuration file (re-read on SIGHUP).
    pub config_path: PathBuf,
    /// aya-log level inside the program (0 = off).
    pub ebpf_log_level: u8,
    /// Directory holding the instances' pin directories (default [`PIN_ROOT`]).
    pub pin_root: Option<PathBuf>,
}

/// Returns the memory the allocator holds free to the system (glibc keeps what a large
/// parse freed, so the agent's RSS would stay at its peak).
fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Loads the configuration, starts the data plane and serves until SIGTERM or SIGINT.
pub async fn run(opts: AgentOptions) -> Result<()> {
    let config = Config::from_file(&opts.config_path)?;
    release_free_memory();
    let mut agent = Agent::start(opts, config).await?;
    agent.serve().await
}

struct Agent {
    /// This process's claim on the instance, held until it exits.
    _lock: InstanceLock,
    opts: AgentOptions,
    config: Config,
    pin: PinDir,
    dp: Dataplane,
    installed: Installed,
    netlink: Netlink,
    ifindex: u32,
    tracker: NeighbourTracker,
    neigh_events: UnboundedReceiver<NeighEvent>,
    observed: Observed,
    desired: DesiredState,
    /// VIP addresses this agent added to the interface (`manage_vip`).
    added_vips: BTreeSet<IpAddr>,
    health: HealthChecker,
    health_events: UnboundedReceiver<HealthEvent>,
    /// Quorum state per service (absent: not evaluated yet, taken as held).
    quorum: BTreeMap<crate::model::ServiceKey, bool>,
    /// Reloads applied and rejected since start.
    reloads: (u64, u64),
    /// The control socket (removed when the agent drops it).
    _control: ControlServer,
    requests: tokio::sync::mpsc::Receiver<Pending>,
    rates: RateEstimator,
    last_sample: std::time::Instant,
    /// The snapshot /metrics serves, refreshed with the rates.
    latest: Option<Arc<Mutex<Snapshot>>>,
    /// Notify and quorum scripts (command, what) to run after the next sync.
    scripts: Vec<(String, String)>,
}

impl Agent {
    async fn start(opts: AgentOptions, config: Config) -> Result<Self> {
        if ensure_bpffs().context("mounting bpffs on /sys/fs/bpf")? {
            info!("mounted bpffs on /sys/fs/bpf");
        }
        let root = opts.pin_root.clone().unwrap_or_else(|| PIN_ROOT.into());
        let pin = PinDir::new(root.join(&config.instance));
        // Before the pins and the control socket are touched: they belong to the holder.
        let lock = InstanceLock::acquire(pin.path())?;
        let netlink = Netlink::connect().await.context("opening rtnetlink")?;
        let link = netlink
            .link(&config.interface)
            .await
            .with_context(|| format!("interface {}", config.interface))?;

        let load = LoadOptions {
            limits: config.limits,
            ebpf_log_level: opts.ebpf_log_level,
        };
        let (mut dp, origin) =
            Dataplane::open_pinned(&load, &pin, link.index).context("loading the data plane")?;
        let (installed, mut observed) = match origin {
            Origin::Created => {
                info!(pins = %pin.path().display(), "created maps");
                (Installed::new(*dp.limits()), Observed::default())
            }
            Origin::Adopted { limits_differ } => {
                info!(pins = %pin.path().display(), "adopted the maps and link of the running instance");
                if limits_differ {
                    warn!(
                        "the configured limits differ from the running maps' sizes; they take \
                         effect after a clean stop (SIGTERM) and start"
                    );
                }
                let (installed, stale) = dp.installed().context("reading the adopted maps")?;
                let empty: Vec<Op> = stale
                    .iter()
                    .map(|&index| Op::SetReal {
                        index,
                        real: lb_common::Real::EMPTY,
                    })
                    .collect();
                dp.apply(&empty)?;
                (installed.clone(), observed_from(&installed))
            }
        };
        dp.set_mac(link.mac);
        dp.set_timeouts(timeouts(&config));
        dp.tick();
        if opts.ebpf_log_level > 0 {
            dp.spawn_ebpf_logger()
                .context("starting the program's log reader")?;
        }

        let (tracker, mut neigh_events) = NeighbourTracker::start(netlink.clone(), link.index)
            .await
            .context("starting neighbour tracking")?;
        let ips = real_addresses(&config);
        tracker.track(ips.clone());
        if origin == Origin::Created {
            wait_for_neighbours(&mut neigh_events, &mut observed, &ips).await;
        }

        let known: BTreeMap<CheckKey, bool> = check_specs(&config)
            .iter()
            .map(|spec| {
                let down = observed.health.get(&spec.key) == Some(&Health::Down);
                (spec.key, !down)
            })
            .filter(|_| origin != Origin::Created)
            .collect();
        let (health_tx, health_events) = tokio::sync::mpsc::unbounded_channel();
        let health =
            HealthChecker::start(check_specs(&config), known, health_tx, CHECK_CONCURRENCY);

        let (control, requests) = ControlServer::start(&config.control_socket)
            .with_context(|| format!("control socket {}", config.control_socket.display()))?;
        info!(socket = %config.control_socket.display(), "control socket ready for lbadm");

        let mut agent = Agent {
            _lock: lock,
            opts,
            config,
            pin,
            dp,
            installed,
            netlink,
            ifindex: link.index,
            tracker,
            neigh_events,
            observed,
            desired: DesiredState::default(),
            added_vips: BTreeSet::new(),
            health,
            health_events,
            quorum: BTreeMap::new(),
            reloads: (0, 0),
            _control: control,
            requests,
            rates: RateEstimator::default(),
            last_sample: std::time::Instant::now(),
            latest: None,
            scripts: Vec::new(),
        };
        agent.update_quorum();
        // What the adopted maps already do is the baseline: only differences get logged.
        if origin != Origin::Created {
            agent.desired = desired_state(&agent.config, &agent.observed);
        }
        agent
            .sync("start-up")
            .context("installing the configuration")?;
        match agent
            .dp
            .attach_pinned(&agent.config.interface, agent.config.xdp_mode, &agent.pin)
            .context("attaching the program")?
        {
            Attached::New(mode) => info!(interface = %agent.config.interface, ?mode, "attached"),
            Attached::Adopted => info!(
                interface = %agent.config.interface,
                "replaced the running program in place (no packet missed)"
            ),
        }
        agent.update_vips().await;
        if let Some(addr) = agent.config.metrics_listen {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    let latest = Arc::new(Mutex::new(agent.snapshot(false)));
                    let source = latest.clone();
                    tokio::spawn(metrics::serve(listener, move || {
                        source.lock().expect("snapshot lock").clone()
                    }));
                    agent.latest = Some(latest);
                    info!(%addr, "serving Prometheus metrics on /metrics");
                }
                Err(e) => error!(%addr, "metrics disabled: cannot listen: {e}"),
            }
        }
        Ok(agent)
    }

    async fn serve(&mut self) -> Result<()> {
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut clock = interval(CLOCK_TICK);
        clock.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut retire = interval(RETIRE_EVERY);
        retire.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut rates = interval(RATE_INTERVAL);
        rates.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut reconcile = interval(load::RECONCILE_EVERY);
        reconcile.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut candidates = interval(load::CANDIDATES_EVERY);
        candidates.set_missed_tick_behavior(MissedTickBehavior::Skip);
        info!(config = %self.opts.config_path.display(), "serving");
        // A reload's file is read and parsed on a blocking thread, so that a large or slow
        // file never stalls lbadm, the health events or SIGTERM. A SIGHUP that arrives
        // meanwhile reloads once more when it is done (the file may have changed since).
        let mut reading: Option<tokio::task::JoinHandle<Result<Config, ConfigError>>> = None;
        let mut again = false;
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    if reading.is_some() {
                        again = true;
                    } else {
                        reading = Some(self.read_config());
                    }
                }
                read = async { reading.as_mut().expect("guarded").await }, if reading.is_some() => {
                    reading = None;
                    self.reload(read).await;
                    if std::mem::take(&mut again) {
                        reading = Some(self.read_config());
                    }
                }
                _ = term.recv() => return self.shutdown("SIGTERM").await,
                _ = int.recv() => return self.shutdown("SIGINT").await,
                Some(event) = self.neigh_events.recv() => {
                    self.observe(event);
                    // Take whatever else arrived in the same burst before replanning.
                    while let Ok(event) = self.neigh_events.try_recv() {
                        self.observe(event);
                    }
                    self.update_quorum();
                    if let Err(e) = self.sync("neighbour change") {
                        error!("applying a neighbour change failed: {e:#}");
                    }
                }
                Some(event) = self.health_events.recv() => {
                    self.on_health(event);
                    while let Ok(event) = self.health_events.try_recv() {
                        self.on_health(event);
                    }
                    self.update_quorum();
                    if let Err(e) = self.sync("health check") {
                        error!("applying a health change failed: {e:#}");
                    }
                }
                _ = clock.tick() => self.dp.tick(),
                _ = retire.tick() => self.retire_idle(),
                _ = rates.tick() => self.sample_rates(),
                _ = reconcile.tick() => self.reconcile_loads(),
                _ = candidates.tick() => self.refresh_candidates(),
                Some((request, reply)) = self.requests.recv() => {
                    let response = self.handle(request).await;
                    let _ = reply.send(response);
                }
            }
        }
    }

    fn on_health(&mut self, event: HealthEvent) {
        let (service, real) = event.key;
        let rs = self
            .config
            .virtual_server(&service)
            .and_then(|vs| vs.real_servers.iter().find(|r| r.key == real));
        match event.transition {
            Transition::Down => {
                warn!(
                    "real {real} of {service} failed its check: {}",
                    event.outcome.detail
                );
                self.observed.health.insert(event.key, Health::Down);
                if let Some(cmd) = rs.and_then(|r| r.notify_down.clone()) {
                    self.scripts.push((cmd, format!("notify_down of {real}")));
                }
            }
            Transition::Up => {
                info!(
                    "real {real} of {service} passed its check: {}",
                    event.outcome.detail
                );
                self.observed.health.remove(&event.key);
                if let Some(cmd) = rs.and_then(|r| r.notify_up.clone()) {
                    self.scripts.push((cmd, format!("notify_up of {real}")));
                }
            }
        }
    }

    /// Re-evaluates every service's quorum (keepalived: total weight of live reals against
    /// `quorum`, with `hysteresis`), queueing quorum_up/quorum_down on changes.
    fn update_quorum(&mut self) {
        let mut lost = BTreeSet::new();
        let mut scripts = Vec::new();
        for vs in &self.config.virtual_servers {
            let live: u64 = vs
                .real_servers
                .iter()
                .filter(|rs| {
                    self.observed.health.get(&(vs.key, rs.key)) != Some(&Health::Down)
                        && self.observed.macs.contains_key(&rs.key.addr)
                })
                .map(|rs| u64::from(rs.weight))
                .sum();
            let before = self.quorum.get(&vs.key).copied().unwrap_or(true);
            let held = next_quorum(Some(before), live, vs.quorum, vs.hysteresis);
            if before != held {
                if held {
                    info!(
                        "service {} regained quorum (live weight {live}, quorum {})",
                        vs.key, vs.quorum
                    );
                    if let Some(cmd) = vs.quorum_up.clone() {
                        scripts.push((cmd, format!("quorum_up of {}", vs.key)));
                    }
                } else {
                    let sorry = if vs.sorry_server.is_some() {
                        ": the sorry server takes new connections"
                    } else {
                        ""
                    };
                    warn!(
                        "service {} lost quorum (live weight {live} < quorum {}){sorry}",
                        vs.key, vs.quorum
                    );
                    if let Some(cmd) = vs.quorum_down.clone() {
                        scripts.push((cmd, format!("quorum_down of {}", vs.key)));
                    }
                }
            }
            self.quorum.insert(vs.key, held);
            if !held {
                lost.insert(vs.key);
            }
        }
        let config = &self.config;
        self.quorum
            .retain(|k, _| config.virtual_server(k).is_some());
        self.observed.quorum_lost = lost;
        self.scripts.extend(scripts);
    }

    fn observe(&mut self, event: NeighEvent) {
        match event.state {
            MacState::Resolved(mac) => {
                let old = self.observed.macs.insert(event.ip, mac);
                if old != Some(mac) {
                    info!(real = %event.ip, mac = %format_mac(mac), "neighbour resolved");
                }
            }
            MacState::Unresolved(reason) => {
                if self.observed.macs.remove(&event.ip).is_some() {
                    warn!(real = %event.ip, %reason, "lost the real's MAC address");
                }
            }
        }
    }

    /// Replans from the current configuration and observations and applies the difference.
    /// Installs what the configuration and observations ask for, then runs the notify and
    /// quorum scripts of the changes that led here: a script sees the data plane already
    /// changed.
    fn sync(&mut self, cause: &str) -> Result<()> {
        let desired = desired_state(&self.config, &self.observed);
        let installed = self.install(desired, cause);
        for (command, what) in std::mem::take(&mut self.scripts) {
            run_script(command, what);
        }
        installed
    }

    fn install(&mut self, desired: DesiredState, cause: &str) -> Result<()> {
        let (ops, next) = self.installed.plan(&desired)?;
        if let Err(e) = self.dp.apply(&ops) {
            // Some updates may have landed: reread what the maps hold.
            if let Ok((installed, _)) = self.dp.installed() {
                self.installed = installed;
            }
            return Err(e).context("updating the maps");
        }
        for change in changes(&self.desired, &desired) {
            info!(%cause, "{change}");
        }
        self.installed = next;
        self.desired = desired;
        // A real that came back must not look loaded with the connections it lost while down
        // until the next periodic recount.
        self.reconcile_loads();
        Ok(())
    }

    /// Counts the least-connection services' stale connection entries (see [`load`]).
    fn reconcile_loads(&mut self) {
        let reals: Vec<u32> = self
            .installed
            .services
            .values()
            .filter(|s| s.params.sched != lb_common::SCHED_MAGLEV)
            .flat_map(|s| s.reals.values().chain(s.retiring.values()))
            .map(|r| r.index)
            .collect();
        if reals.is_empty() {
            return;
        }
        match self.dp.reconcile_loads(&reals) {
            Ok(changed) => {
                for (index, stale) in changed {
                    debug!(
                        index,
                        active = stale.active,
                        inactive = stale.inactive,
                        "stale connection entries counted"
                    );
                }
            }
            Err(e) => error!("reconciling connection counts failed: {e}"),
        }
    }

    /// Writes the least loaded reals as the candidates of least-connection services that have
    /// more eligible reals than the data plane compares.
    fn refresh_candidates(&mut self) {
        for svc in self.installed.services.values_mut() {
            if svc.params.sched == lb_common::SCHED_MAGLEV {
                continue;
            }
            let eligible: Vec<(u32, u32)> = svc
                .reals
                .values()
                .filter(|r| r.value.state == lb_common::REAL_UP && r.value.weight > 0)
                .map(|r| (r.index, r.value.weight))
                .collect();
            if eligible.len() <= lb_common::LC_CANDIDATES {
                continue;
            }
            let dp = &self.dp;
            let best = load::least_loaded(svc.params.sched, &eligible, |i| {
                dp.real_load(i)
                    .map(|l| load::Counts::from_load(&l))
                    .unwrap_or_default()
            });
            if best == svc.candidates {
                continue;
            }
            match self.dp.set_candidates(svc.id, &best) {
                Ok(()) => svc.candidates = best,
                Err(e) => error!("writing least-connection candidates failed: {e}"),
            }
        }
    }

    /// Releases removed reals whose connections are all gone.
    fn retire_idle(&mut self) {
        if self
            .installed
            .services
            .values()
            .all(|s| s.retiring.is_empty())
        {
            return;
        }
        let live = self.dp.reals_in_use();
        let (ops, released, next) = self.installed.retire(|index| live.contains(&index));
        if ops.is_empty() {
            return;
        }
        if let Err(e) = self.dp.apply(&ops) {
            error!("releasing removed reals failed: {e}");
            return;
        }
        self.installed = next;
        for (service, real) in released {
            info!("real {real} of {service} released: its last connection is gone");
        }
    }

    /// Starts reading and parsing the configuration file for a reload, off the event loop.
    fn read_config(&self) -> tokio::task::JoinHandle<Result<Config, ConfigError>> {
        let path = self.opts.config_path.clone();
        info!(config = %path.display(), "SIGHUP: reloading");
        tokio::task::spawn_blocking(move || {
            let config = Config::from_file(&path);
            // Parsing a large file leaves freed memory with the allocator: give it back.
            release_free_memory();
            config
        })
    }

    /// Applies a configuration read for a reload, or reports why it was not.
    async fn reload(&mut self, read: Result<Result<Config, ConfigError>, tokio::task::JoinError>) {
        let result = match read {
            Ok(Ok(new)) => self.apply_config(new, "reload").await,
            Ok(Err(e)) => Err(format!("\n{e}")),
            Err(e) => Err(format!(": reading the configuration failed: {e}")),
        };
        match result {
            Ok(()) => {
                self.reloads.0 += 1;
                info!(
                    services = self.config.virtual_servers.len(),
                    "reload applied"
                );
            }
            Err(why) => self.reject(why),
        }
    }

    /// Installs a new, validated configuration (a reload or an lbadm edit): everything or
    /// nothing. On error the running configuration and maps are unchanged.
    async fn apply_config(&mut self, new: Config, cause: &str) -> Result<(), String> {
        if new.interface != self.config.interface || new.instance != self.config.instance {
            return Err(
                ": interface and instance cannot change while running (stop with \
                        SIGTERM and start again)"
                    .into(),
            );
        }
        if new.limits != self.config.limits {
            warn!("limits changed: they take effect after a clean stop and start");
        }
        let desired = desired_state(&new, &self.observed);
        let old = std::mem::replace(&mut self.config, new);
        if let Err(e) = self.install(desired, cause) {
            self.config = old;
            return Err(format!(": {e:#}"));
        }
        self.dp.set_timeouts(timeouts(&self.config));
        self.tracker.track(real_addresses(&self.config));
        self.health.update(check_specs(&self.config));
        // Checks of reals that left the configuration no longer count.
        let config = &self.config;
        self.observed.health.retain(|(s, r), _| {
            config
                .virtual_server(s)
                .is_some_and(|vs| vs.real_servers.iter().any(|rs| rs.key == *r))
        });
        self.update_quorum();
        if let Err(e) = self.sync(cause) {
            error!("applying the quorum after the change failed: {e:#}");
        }
        self.update_vips().await;
        Ok(())
    }

    /// Answers one lbadm request.
    async fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Snapshot { conns } => Response::Snapshot(self.snapshot(conns)),
            Request::Save => Response::Saved {
                yaml: self.config.to_yaml(),
            },
            Request::Which { service, client } => {
                let status = self.health.status();
                match snapshot::which(&self.view(&status), &service, client) {
                    Ok(answer) => Response::Which(answer),
                    Err(e) => Response::error(e),
                }
            }
            Request::Zero { service } => match self.zero(service.as_ref()) {
                Ok(()) => Response::Ok,
                Err(e) => Response::error(e),
            },
            Request::Edit(change) => {
                let new = match edit::apply(&self.config, &change) {
                    Ok(c) => c,
                    Err(e) => return Response::error(e.to_string()),
                };
                info!(?change, "lbadm edit");
                match self.apply_config(new, "lbadm").await {
                    Ok(()) => Response::Ok,
                    Err(why) => {
                        Response::error(why.trim_start_matches([':', ' ', '\n']).to_owned())
                    }
                }
            }
        }
    }

    fn view<'a>(&'a self, health: &'a BTreeMap<CheckKey, crate::health::CheckStatus>) -> View<'a> {
        View {
            config: &self.config,
            installed: &self.installed,
            desired: &self.desired,
            dp: &self.dp,
            health,
            health_clock: self.health.uptime(),
            macs: &self.observed.macs,
            rates: &self.rates,
            reloads: self.reloads,
        }
    }

    fn snapshot(&self, conns: bool) -> Snapshot {
        let status = self.health.status();
        snapshot::snapshot(&self.view(&status), conns)
    }

    /// `ipvsadm -Z`: zero the counters of one service and its reals, or of everything.
    fn zero(&mut self, service: Option<&crate::model::ServiceKey>) -> Result<(), String> {
        let mut ops = Vec::new();
        for (key, svc) in &self.installed.services {
            if service.is_some_and(|s| s != key) {
                continue;
            }
            ops.push(Op::ResetServiceStats(svc.id));
            for r in svc.reals.values().chain(svc.retiring.values()) {
                ops.push(Op::ResetRealStats(r.index));
            }
        }
        if let Some(s) = service
            && !self.installed.services.contains_key(s)
        {
            return Err(format!("{s}: no such service"));
        }
        self.dp.apply(&ops).map_err(|e| e.to_string())?;
        if service.is_none() {
            self.dp.reset_global_stats().map_err(|e| e.to_string())?;
        }
        self.rates.reset(service);
        info!(service = ?service.map(|s| s.to_string()), "counters zeroed");
        Ok(())
    }

    /// Samples counters for the rate estimator and refreshes the snapshot /metrics serves.
    fn sample_rates(&mut self) {
        let elapsed = self.last_sample.elapsed();
        self.last_sample = std::time::Instant::now();
        let (services, reals) = snapshot::sample(&self.dp, &self.installed);
        self.rates.sample(elapsed, services, reals);
        if let Some(latest) = &self.latest {
            let snap = self.snapshot(false);
            *latest.lock().expect("snapshot lock") = snap;
        }
    }

    fn reject(&mut self, why: String) {
        error!("reload rejected, still running the previous configuration{why}");
        self.reloads.1 += 1;
    }

    /// Adds or removes VIP addresses on the interface when `manage_vip` is on.
    async fn update_vips(&mut self) {
        let wanted: BTreeSet<IpAddr> = if self.config.manage_vip {
            self.config
                .virtual_servers
                .iter()
                .map(|vs| vs.key.vip)
                .collect()
        } else {
            BTreeSet::new()
        };
        for vip in wanted.difference(&self.added_vips.clone()) {
            match self
                .netlink
                .add_address(self.ifindex, *vip, host_prefix(*vip))
                .await
            {
                Ok(true) => {
                    info!(%vip, interface = %self.config.interface, "added the VIP address");
                    self.added_vips.insert(*vip);
                }
                Ok(false) => info!(%vip, "the VIP address was already present; leaving it alone"),
                Err(e) => error!(%vip, "adding the VIP address failed: {e}"),
            }
        }
        for vip in self.added_vips.clone().difference(&wanted) {
            self.remove_vip(*vip).await;
        }
    }

    async fn remove_vip(&mut self, vip: IpAddr) {
        match self
            .netlink
            .remove_address(self.ifindex, vip, host_prefix(vip))
            .await
        {
            Ok(_) => info!(%vip, "removed the VIP address"),
            Err(e) => error!(%vip, "removing the VIP address failed: {e}"),
        }
        self.added_vips.remove(&vip);
    }

    async fn shutdown(&mut self, signal: &str) -> Result<()> {
        for vip in self.added_vips.clone() {
            self.remove_vip(vip).await;
        }
        if self.config.keep_forwarding_on_stop {
            info!(
                %signal,
                pins = %self.pin.path().display(),
                "stopping; the data plane keeps forwarding (keep_forwarding_on_stop)"
            );
            return Ok(());
        }
        Dataplane::remove_pins(&self.pin).context("removing the pins")?;
        info!(%signal, "stopped; the program is detached and the pins removed");
        Ok(())
    }
}

/// Observations implied by adopted maps: the MACs the previous agent installed for reals that
/// are up, so that a restart keeps them up until the neighbour table says otherwise.
fn observed_from(installed: &Installed) -> Observed {
    let mut observed = Observed::default();
    for (key, svc) in &installed.services {
        for (rk, real) in &svc.reals {
            if real.value.state == lb_common::REAL_UP {
                observed.macs.insert(rk.addr, real.value.mac);
            } else {
                // Down with a MAC: its health failed. (Without one, it is simply unresolved.)
                if real.value.mac != [0; 6] {
                    observed.macs.insert(rk.addr, real.value.mac);
                    observed.health.insert((*key, *rk), Health::Down);
                }
            }
        }
    }
    observed
}

/// Waits until every address has a MAC, or the wait ends; records what arrived.
async fn wait_for_neighbours(
    events: &mut UnboundedReceiver<NeighEvent>,
    observed: &mut Observed,
    ips: &BTreeSet<IpAddr>,
) {
    let deadline = Instant::now() + FIRST_RESOLUTION_WAIT;
    while !ips.iter().all(|ip| observed.macs.contains_key(ip)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, events.recv()).await {
            Ok(Some(NeighEvent {
                ip,
                state: MacState::Resolved(mac),
            })) => {
                observed.macs.insert(ip, mac);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let missing: Vec<String> = ips
        .iter()
        .filter(|ip| !observed.macs.contains_key(ip))
        .map(|ip| ip.to_string())
        .collect();
    if !missing.is_empty() {
        warn!(
            reals = missing.join(", "),
            "no MAC address yet; these reals stay down until their neighbour entries resolve"
        );
    }
}

/// The checkers the configuration asks for, one per real with a check.
pub fn check_specs(config: &Config) -> Vec<CheckSpec> {
    let mut specs = Vec::new();
    for vs in &config.virtual_servers {
        for rs in &vs.real_servers {
            let Some(check) = &rs.check else { continue };
            // A source port alone binds to the unspecified address of the target's family.
            let bind = |target: IpAddr, ip: Option<IpAddr>, port: Option<u16>| {
                let unspecified = if target.is_ipv4() {
                    IpAddr::from([0, 0, 0, 0])
                } else {
                    IpAddr::from([0u16; 8])
                };
                match (ip, port) {
                    (None, None) => None,
                    (ip, port) => Some(SocketAddr::new(
                        ip.unwrap_or(unspecified),
                        port.unwrap_or(0),
                    )),
                }
            };
            let key = (vs.key, rs.key);
            let spec = match check {
                Checker::Tcp(c) => CheckSpec {
                    key,
                    probe: Probe::Tcp {
                        target: SocketAddr::new(
                            c.connect_ip.unwrap_or(rs.key.addr),
                            c.connect_port.unwrap_or(rs.key.port),
                        ),
                        bind: bind(c.connect_ip.unwrap_or(rs.key.addr), c.bindto, c.bind_port),
                    },
                    timing: Timing {
                        delay_loop: vs.delay_loop,
                        retry: c.timing.retry,
                        delay_before_retry: c.timing.delay_before_retry,
                        connect_timeout: c.timing.connect_timeout,
                    },
                    alpha: vs.alpha,
                    warmup: c.timing.warmup.or(vs.warmup),
                },
                Checker::Http(c) => CheckSpec {
                    key,
                    probe: Probe::Http {
                        target: SocketAddr::new(
                            c.connect_ip.unwrap_or(rs.key.addr),
                            c.connect_port.unwrap_or(rs.key.port),
                        ),
                        bind: bind(c.connect_ip.unwrap_or(rs.key.addr), c.bindto, c.bind_port),
                        urls: c
                            .urls
                            .iter()
                            .map(|u| (u.path.clone(), u.status_code))
                            .collect(),
                    },
                    timing: Timing {
                        delay_loop: vs.delay_loop,
                        retry: c.timing.retry,
                        delay_before_retry: c.timing.delay_before_retry,
                        connect_timeout: c.timing.connect_timeout,
                    },
                    alpha: vs.alpha,
                    warmup: c.timing.warmup.or(vs.warmup),
                },
                // MISC_CHECK has no retries: the script decides at once.
                Checker::Misc(c) => CheckSpec {
                    key,
                    probe: Probe::Misc {
                        command: c.misc_path.clone(),
                        timeout: c.misc_timeout,
                    },
                    timing: Timing {
                        delay_loop: vs.delay_loop,
                        retry: 0,
                        delay_before_retry: Duration::from_secs(1),
                        connect_timeout: c.misc_timeout,
                    },
                    alpha: vs.alpha,
                    warmup: c.warmup.or(vs.warmup),
                },
            };
            specs.push(spec);
        }
    }
    specs
}

/// Runs an operator's notify or quorum script with `sh -c`, without waiting for it.
fn run_script(command: String, what: String) {
    tokio::spawn(async move {
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .stdin(std::process::Stdio::null())
            .status()
            .await;
        match status {
            Ok(s) if s.success() => info!("{what} ran: {command}"),
            Ok(s) => warn!("{what} failed ({s}): {command}"),
            Err(e) => error!("{what} could not run ({e}): {command}"),
        }
    });
}

fn real_addresses(config: &Config) -> BTreeSet<IpAddr> {
    config
        .virtual_servers
        .iter()
        .flat_map(|vs| {
            vs.real_servers
                .iter()
                .map(|rs| rs.key.addr)
                .chain(vs.sorry_server.map(|s| s.addr))
        })
        .collect()
}

fn timeouts(config: &Config) -> [u32; lb_common::ConnState::COUNT] {
    use lb_common::ConnState as S;
    let mut t = S::DEFAULT_TIMEOUTS;
    t[S::Established as usize] = config.timeouts.tcp;
    t[S::FinWait as usize] = config.timeouts.tcpfin;
    t[S::Udp as usize] = config.timeouts.udp;
    t
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// Validates a configuration file for `--check-config`: a summary on success.
pub fn check_config(path: &std::path::Path) -> Result<String> {
    let config = Config::from_file(path)?;
    let reals: usize = config
        .virtual_servers
        .iter()
        .map(|vs| vs.real_servers.len())
        .sum();
    Ok(format!(
        "{}: valid ({} virtual servers, {} real servers)",
        path.display(),
        config.virtual_servers.len(),
        reals
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const DUAL: &str = "
interface: eth0
virtual_servers:
  - vip: 192.168.0.10
    port: 80
    lb_kind: dr
    real_servers:
      - ip: 192.168.0.2
        tcp_check: { bind_port: 1053 }
  - vip: 2001:db8::10
    port: 443
    lb_kind: dr
    sorry_server: 2001:db8::99
    real_servers:
      - ip: 2001:db8::2
        tcp_check: { bind_port: 1053 }
      - ip: 2001:db8::3
        http_get:
          url: { path: /healthz }
          connect_ip: 2001:db8:1::3
          bindto: 2001:db8:1::1
      - ip: 2001:db8::4
        misc_check: { misc_path: 'curl -6 -sf http://[2001:db8::4]/' }
";

    fn socket(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_reals_get_ipv6_probes_and_neighbours() {
        let config = Config::from_yaml(DUAL, Path::new("dual.yaml")).unwrap();
        let probes: Vec<Probe> = check_specs(&config).into_iter().map(|s| s.probe).collect();
        assert_eq!(
            probes,
            [
                Probe::Tcp {
                    target: socket("192.168.0.2:80"),
                    bind: Some(socket("0.0.0.0:1053")),
                },
                Probe::Tcp {
                    target: socket("[2001:db8::2]:443"),
                    bind: Some(socket("[::]:1053")),
                },
                Probe::Http {
                    target: socket("[2001:db8:1::3]:443"),
                    bind: Some(socket("[2001:db8:1::1]:0")),
                    urls: vec![("/healthz".into(), 200)],
                },
                Probe::Misc {
                    command: "curl -6 -sf http://[2001:db8::4]/".into(),
                    timeout: Duration::from_secs(60),
                },
            ]
        );
        // Every real and sorry server has its neighbour tracked, IPv6 ones by NDP.
        let ips: Vec<String> = real_addresses(&config)
            .iter()
            .map(IpAddr::to_string)
            .collect();
        assert_eq!(
            ips,
            [
                "192.168.0.2",
                "2001:db8::2",
                "2001:db8::3",
                "2001:db8::4",
                "2001:db8::99"
            ]
        );
        assert_eq!(host_prefix("2001:db8::10".parse().unwrap()), 128);
        assert_eq!(host_prefix("192.168.0.10".parse().unwrap()), 32);
    }
}
