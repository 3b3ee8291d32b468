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

mod director_sync;
mod handlers;
mod maps;
mod vips;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
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
use tracing::{error, info, warn};

use crate::{
    config::{Config, ConfigError},
    control::Snapshot,
    control::server::{ControlServer, Pending},
    dataplane::instance_lock::InstanceLock,
    dataplane::{Attached, Dataplane, LoadOptions, Origin, PIN_ROOT, PinDir, ensure_bpffs},
    health::{
        CheckKey, HealthChecker, HealthEvent, Macs, ProbeContext, amqp::read_password_files,
        check_specs, syn,
    },
    model::{DesiredState, Health},
    netlink::{MacState, NeighEvent, NeighbourTracker, Netlink},
    observe::metrics,
    observe::snapshot::{RATE_INTERVAL, RateEstimator},
    reconcile::desired::{Observed, desired_state},
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
    /// The reals' MACs as the half-open health probes see them (kept from neighbour events).
    probe_macs: Macs,
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
    /// Director sync with the peers, when configured.
    dsync: Option<director_sync::DirectorSync>,
}

impl Agent {
    async fn start(opts: AgentOptions, config: Config) -> Result<Self> {
        // Reads the checks' password files (http_get's, then amqp_check's): a missing one
        // stops the start before anything is touched.
        let mut specs = check_specs(&config)?;
        read_password_files(&mut specs)?;
        // keepalived's init_file: at start only, never on a reload.
        crate::health::file::init_files(&config);
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

        // After a restart the maps say which reals were down, not which of their checkers
        // failed: every checker of a down real resumes down, and passes to bring it up.
        let known: BTreeMap<CheckKey, bool> = specs
            .iter()
            .map(|spec| {
                let (service, real, _) = spec.key;
                (spec.key, !observed.real_failed(service, real))
            })
            .filter(|_| origin != Origin::Created)
            .collect();
        // A group's members share their leader's checkers: the same real of each member
        // (by address, on the member's port) resumes down too.
        observed.health = known
            .iter()
            .filter(|(_, up)| !**up)
            .flat_map(|((service, real, index), _)| {
                config.checked_through(service).filter_map(move |vs| {
                    let r = vs.real_servers.iter().find(|r| r.key.addr == real.addr)?;
                    Some(((vs.key, r.key, *index), Health::Down))
                })
            })
            .collect();
        let (health_tx, health_events) = tokio::sync::mpsc::unbounded_channel();
        let probe_macs = Macs::default();
        probe_macs
            .write()
            .expect("macs lock")
            .extend(observed.macs.iter().map(|(ip, mac)| (*ip, *mac)));
        let iface = syn::Interface {
            ifindex: link.index,
            mac: link.mac,
        };
        let syn = match syn::SynProber::start(iface) {
            Ok(prober) => Some(prober),
            Err(e) => {
                warn!("half-open tcp_check probes unavailable ({e}): they connect instead");
                None
            }
        };
        let ctx = ProbeContext {
            syn,
            macs: probe_macs.clone(),
        };
        let health = HealthChecker::start(specs, known, health_tx, CHECK_CONCURRENCY, ctx);

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
            probe_macs,
            quorum: BTreeMap::new(),
            reloads: (0, 0),
            _control: control,
            requests,
            rates: RateEstimator::default(),
            last_sample: std::time::Instant::now(),
            latest: None,
            scripts: Vec::new(),
            dsync: None,
        };
        agent.update_quorum();
        // What the adopted maps already do is the baseline: only differences get logged.
        if origin != Origin::Created {
            agent.desired = desired_state(&agent.config, &agent.observed);
        }
        agent
            .sync("start-up")
            .context("installing the configuration")?;
        // Before the program is attached (or, adopted, before this agent serves): the peers'
        // flows, so that this director continues them when traffic comes its way.
        if let Some(config) = agent.config.sync.clone() {
            let mut dsync =
                director_sync::DirectorSync::open(&config, &agent.config.interface, agent.ifindex)?;
            dsync.set_directory(&agent.installed);
            agent.dp.set_sync(true)?;
            dsync.resync(&mut agent.dp, config.startup_wait).await;
            agent.dsync = Some(dsync);
        } else {
            agent.dp.set_sync(false)?;
        }
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
        let mut drain = interval(director_sync::DRAIN_EVERY);
        drain.set_missed_tick_behavior(MissedTickBehavior::Skip);
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
                _ = drain.tick(), if self.dsync.is_some() => {
                    let dsync = self.dsync.as_mut().expect("guarded");
                    dsync.drain(&mut self.dp).await;
                }
                inbound = async { self.dsync.as_mut().expect("guarded").recv().await },
                    if self.dsync.is_some() =>
                {
                    let dsync = self.dsync.as_mut().expect("guarded");
                    match inbound {
                        Ok(inbound) => dsync.on_inbound(inbound, &mut self.dp),
                        Err(e) => error!("director sync: receiving failed: {e}"),
                    }
                }
                Some((request, reply)) = self.requests.recv() => {
                    let response = self.handle(request).await;
                    let _ = reply.send(response);
                }
            }
        }
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
                // Which checker failed is not in the maps: the first stands for them.
                if real.value.mac != [0; 6] {
                    observed.macs.insert(rk.addr, real.value.mac);
                    observed.health.insert((*key, *rk, 0), Health::Down);
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
  - vip: 2001:db8::10
    port: 443
    lb_kind: dr
    sorry_server: 2001:db8::99
    real_servers:
      - ip: 2001:db8::2
      - ip: 2001:db8::3
      - ip: 2001:db8::4
";

    #[test]
    fn every_real_and_sorry_server_has_its_neighbour_tracked() {
        let config = Config::from_yaml(DUAL, Path::new("dual.yaml")).unwrap();
        // IPv6 ones by NDP.
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
    }
}
