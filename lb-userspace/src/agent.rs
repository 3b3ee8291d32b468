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

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc::UnboundedReceiver,
    time::{Instant, MissedTickBehavior, interval, timeout},
};
use tracing::{error, info, warn};

use crate::{
    config::Config,
    dataplane::{Attached, Dataplane, LoadOptions, Origin, PIN_ROOT, PinDir, ensure_bpffs},
    desired::{Observed, changes, desired_state},
    netlink::{MacState, NeighEvent, NeighbourTracker, Netlink},
    plan::{Installed, Op},
    state::{DesiredState, Health},
};

/// How often the data plane's clock is advanced.
const CLOCK_TICK: Duration = Duration::from_millis(250);
/// How often removed reals are checked for remaining connections.
const RETIRE_EVERY: Duration = Duration::from_secs(2);
/// How long a fresh start waits for the reals' MAC addresses before installing services.
const FIRST_RESOLUTION_WAIT: Duration = Duration::from_secs(2);

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

/// Loads the configuration, starts the data plane and serves until SIGTERM or SIGINT.
pub async fn run(opts: AgentOptions) -> Result<()> {
    let config = Config::from_file(&opts.config_path)?;
    let mut agent = Agent::start(opts, config).await?;
    agent.serve().await
}

struct Agent {
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
}

impl Agent {
    async fn start(opts: AgentOptions, config: Config) -> Result<Self> {
        if ensure_bpffs().context("mounting bpffs on /sys/fs/bpf")? {
            info!("mounted bpffs on /sys/fs/bpf");
        }
        let root = opts.pin_root.clone().unwrap_or_else(|| PIN_ROOT.into());
        let pin = PinDir::new(root.join(&config.instance));
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

        let mut agent = Agent {
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
        };
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
        info!(config = %self.opts.config_path.display(), "serving");
        loop {
            tokio::select! {
                _ = hup.recv() => self.reload().await,
                _ = term.recv() => return self.shutdown("SIGTERM").await,
                _ = int.recv() => return self.shutdown("SIGINT").await,
                Some(event) = self.neigh_events.recv() => {
                    self.observe(event);
                    // Take whatever else arrived in the same burst before replanning.
                    while let Ok(event) = self.neigh_events.try_recv() {
                        self.observe(event);
                    }
                    if let Err(e) = self.sync("neighbour change") {
                        error!("applying a neighbour change failed: {e:#}");
                    }
                }
                _ = clock.tick() => self.dp.tick(),
                _ = retire.tick() => self.retire_idle(),
            }
        }
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
    fn sync(&mut self, cause: &str) -> Result<()> {
        let desired = desired_state(&self.config, &self.observed);
        self.install(desired, cause)
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
        Ok(())
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
        let settings = self.dp.settings();
        let live: BTreeSet<u32> = self
            .dp
            .conns4()
            .iter()
            .filter(|e| settings.clock.wrapping_sub(e.stamp) <= settings.timeout(e.conn.state))
            .map(|e| e.conn.real)
            .collect();
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

    async fn reload(&mut self) {
        let path = self.opts.config_path.clone();
        info!(config = %path.display(), "SIGHUP: reloading");
        let new = match Config::from_file(&path) {
            Ok(c) => c,
            Err(e) => {
                error!("reload rejected, still running the previous configuration:\n{e}");
                return;
            }
        };
        if new.interface != self.config.interface || new.instance != self.config.instance {
            error!(
                "reload rejected: interface and instance cannot change while running \
                 (stop with SIGTERM and start again)"
            );
            return;
        }
        if new.limits != self.config.limits {
            warn!("limits changed: they take effect after a clean stop and start");
        }
        let desired = desired_state(&new, &self.observed);
        let old = std::mem::replace(&mut self.config, new);
        if let Err(e) = self.install(desired, "reload") {
            error!("reload rejected, still running the previous configuration: {e:#}");
            self.config = old;
            return;
        }
        self.dp.set_timeouts(timeouts(&self.config));
        self.tracker.track(real_addresses(&self.config));
        self.update_vips().await;
        info!(
            services = self.config.virtual_servers.len(),
            "reload applied"
        );
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
