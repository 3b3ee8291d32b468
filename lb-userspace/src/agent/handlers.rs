//! What the agent does with each event: a health transition, a neighbour change, a reload, an
//! lbadm request.

use std::collections::{BTreeMap, BTreeSet};

use tokio::task::{JoinError, JoinHandle};
use tracing::{error, info, warn};

use super::{Agent, format_mac, real_addresses, release_free_memory, timeouts};
use crate::{
    config::{Config, ConfigError},
    control::{Request, Response, Snapshot},
    dataplane::DataplaneError,
    health::{
        CheckFileError, CheckKey, CheckStatus, HealthEvent, Transition, amqp::read_password_files,
        check_specs,
    },
    model::{Health, RealKey, ServiceKey},
    netlink::{MacState, NeighEvent},
    observe::snapshot::{self, View},
    reconcile::{desired::desired_state, edit, plan::Op, quorum},
};

/// Why a new configuration (a reload or an lbadm edit) was not installed; the running one
/// stays.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    /// The reload's read of the file did not finish.
    #[error("reading the configuration failed: {0}")]
    Read(JoinError),
    /// The file is not a valid configuration.
    #[error("{0}")]
    Invalid(ConfigError),
    /// The interface or instance changed, which needs a restart.
    #[error(
        "interface and instance cannot change while running (stop with SIGTERM and start again)"
    )]
    Identity,
    /// Planning or applying the new state failed.
    #[error("{0:#}")]
    Install(anyhow::Error),
    /// The new `sync` section cannot be put into effect (key file, socket).
    #[error("{0:#}")]
    Sync(anyhow::Error),
    /// A check's password file or TLS file cannot be used.
    #[error("{0}")]
    Checks(CheckFileError),
    /// An `amqp_check`'s `password_file` cannot be read.
    #[error("{0:#}")]
    Password(anyhow::Error),
}

/// Why `ipvsadm -Z` failed.
#[derive(Debug, thiserror::Error)]
pub enum ZeroError {
    /// The service is not configured.
    #[error("{0}: no such service")]
    NoSuchService(ServiceKey),
    /// Writing the counters failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

impl Agent {
    pub(super) fn on_health(&mut self, event: HealthEvent) {
        let (service, real, index) = event.key;
        let rs = self
            .config
            .virtual_server(&service)
            .and_then(|vs| vs.real_servers.iter().find(|r| r.key == real));
        // "its check" when the real has one; with several, which one (keepalived's order).
        let checker = match rs.map(|r| r.checks.as_slice()) {
            Some([_]) | None => "check".to_owned(),
            Some(checks) => format!(
                "{} check ({} of {})",
                checks.get(index).map_or("?", |c| c.key()),
                index + 1,
                checks.len()
            ),
        };
        let detail = &event.outcome.detail;
        match event.transition {
            Some(Transition::Down) => {
                warn!("real {real} of {service} failed its {checker}: {detail}");
            }
            Some(Transition::Up) => {
                info!("real {real} of {service} passed its {checker}: {detail}");
            }
            None => {}
        }
        let old_weight = self.observed.weights.get(&event.key).copied();
        if old_weight != event.weight {
            info!(
                ?old_weight,
                weight = ?event.weight,
                "real {real} of {service}: its {checker} changes its weight: {detail}"
            );
        }
        let health = event.transition.map(|t| match t {
            Transition::Up => Health::Up,
            Transition::Down => Health::Down,
        });
        // The real's own state: down while any checker is (keepalived); its scripts run when
        // that changes, not with every checker.
        // The other members of a group share the leader's checkers: the same real (by
        // address, on each member's port) gets the same result.
        let members: Vec<(ServiceKey, RealKey)> = self
            .config
            .checked_through(&service)
            .filter(|vs| vs.key != service)
            .filter_map(|vs| {
                let r = vs.real_servers.iter().find(|r| r.key.addr == real.addr)?;
                Some((vs.key, r.key))
            })
            .collect();
        for (member, member_real) in members {
            self.observed
                .record_check((member, member_real, index), health, event.weight);
        }
        let Some(now) = self.observed.record_check(event.key, health, event.weight) else {
            return;
        };
        let script = match now {
            Health::Down => rs
                .and_then(|r| r.notify_down.clone())
                .map(|cmd| (cmd, format!("notify_down of {real}"))),
            Health::Up => rs
                .and_then(|r| r.notify_up.clone())
                .map(|cmd| (cmd, format!("notify_up of {real}"))),
        };
        self.scripts.extend(script);
    }

    pub(super) fn observe(&mut self, event: NeighEvent) {
        let mut macs = self.probe_macs.write().expect("macs lock");
        match event.state {
            MacState::Resolved(mac) => macs.insert(event.ip, mac),
            MacState::Unresolved(_) => macs.remove(&event.ip),
        };
        drop(macs);
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

    /// Re-evaluates every service's quorum ([`quorum`]), queueing quorum_up/quorum_down on
    /// changes.
    pub(super) fn update_quorum(&mut self) {
        let (held, changes) = quorum::evaluate(&self.config, &self.observed, &self.quorum);
        for c in changes {
            let service = c.service;
            if c.held {
                info!(
                    "service {service} regained quorum (live weight {}, quorum {})",
                    c.live_weight, c.quorum
                );
            } else {
                let sorry = if c.sorry_server {
                    ": the sorry server takes new connections"
                } else {
                    ""
                };
                warn!(
                    "service {service} lost quorum (live weight {} < quorum {}){sorry}",
                    c.live_weight, c.quorum
                );
            }
            if let Some(cmd) = c.script {
                let which = if c.held { "quorum_up" } else { "quorum_down" };
                self.scripts.push((cmd, format!("{which} of {service}")));
            }
        }
        self.observed.quorum_lost = held
            .iter()
            .filter(|(_, held)| !**held)
            .map(|(k, _)| *k)
            .collect();
        self.quorum = held;
    }

    /// Starts reading and parsing the configuration file for a reload, off the event loop.
    pub(super) fn read_config(&self) -> JoinHandle<Result<Config, ConfigError>> {
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
    pub(super) async fn reload(&mut self, read: Result<Result<Config, ConfigError>, JoinError>) {
        let result = match read {
            Ok(Ok(new)) => self.apply_config(new, "reload").await,
            Ok(Err(e)) => Err(Rejected::Invalid(e)),
            Err(e) => Err(Rejected::Read(e)),
        };
        match result {
            Ok(()) => {
                self.reloads.0 += 1;
                info!(
                    services = self.config.virtual_servers.len(),
                    "reload applied"
                );
            }
            Err(why) => self.reject(&why),
        }
    }

    /// Installs a new, validated configuration (a reload or an lbadm edit): everything or
    /// nothing. On error the running configuration and maps are unchanged.
    pub(super) async fn apply_config(&mut self, new: Config, cause: &str) -> Result<(), Rejected> {
        if new.interface != self.config.interface || new.instance != self.config.instance {
            return Err(Rejected::Identity);
        }
        // The checks' password files are read first: if one cannot be, nothing changes.
        let mut specs = check_specs(&new).map_err(Rejected::Checks)?;
        read_password_files(&mut specs).map_err(Rejected::Password)?;
        if new.limits != self.config.limits {
            warn!("limits changed: they take effect after a clean stop and start");
        }
        // A changed `sync` section is opened first: if it cannot be, nothing changes.
        let new_sync = if new.sync == self.config.sync {
            None
        } else {
            match &new.sync {
                Some(config) => Some(Some(
                    super::director_sync::DirectorSync::open(config, &new.interface, self.ifindex)
                        .map_err(Rejected::Sync)?,
                )),
                None => Some(None),
            }
        };
        let desired = desired_state(&new, &self.observed);
        let old = std::mem::replace(&mut self.config, new);
        if let Err(e) = self.install(desired, cause) {
            self.config = old;
            return Err(Rejected::Install(e));
        }
        if let Some(dsync) = new_sync {
            // Dropping the old one closes its socket.
            self.dsync = dsync;
            if let Some(d) = &mut self.dsync {
                d.set_directory(&self.installed);
            }
            if let Err(e) = self.dp.set_sync(self.dsync.is_some()) {
                error!("switching the program's flow announcements failed: {e}");
            }
        }
        self.dp.set_timeouts(timeouts(&self.config));
        self.tracker.track(real_addresses(&self.config));
        // Checkers that left the configuration no longer count.
        let keys: BTreeSet<CheckKey> = specs.iter().map(|s| s.key).collect();
        self.health.update(specs);
        self.observed.health.retain(|k, _| keys.contains(k));
        self.observed.weights.retain(|k, _| keys.contains(k));
        self.update_quorum();
        if let Err(e) = self.sync(cause) {
            error!("applying the quorum after the change failed: {e:#}");
        }
        self.update_vips().await;
        Ok(())
    }

    /// Answers one lbadm request.
    pub(super) async fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Snapshot { conns } => Response::Snapshot(self.snapshot(conns)),
            Request::Save => Response::Saved {
                yaml: self.config.to_yaml(),
            },
            Request::Which { service, client } => {
                let status = self.health.status();
                match snapshot::which(&self.view(&status), &service, client) {
                    Ok(answer) => Response::Which(answer),
                    Err(e) => Response::error(e.to_string()),
                }
            }
            Request::Zero { service } => match self.zero(service.as_ref()) {
                Ok(()) => Response::Ok,
                Err(e) => Response::error(e.to_string()),
            },
            Request::Edit(change) => {
                let new = match edit::apply(&self.config, &change) {
                    Ok(c) => c,
                    Err(e) => return Response::error(e.to_string()),
                };
                info!(?change, "lbadm edit");
                match self.apply_config(new, "lbadm").await {
                    Ok(()) => Response::Ok,
                    Err(why) => Response::error(why.to_string()),
                }
            }
        }
    }

    pub(super) fn view<'a>(&'a self, health: &'a BTreeMap<CheckKey, CheckStatus>) -> View<'a> {
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
            quorum: &self.quorum,
        }
    }

    pub(super) fn snapshot(&self, conns: bool) -> Snapshot {
        let status = self.health.status();
        let mut snap = snapshot::snapshot(&self.view(&status), conns);
        snap.sync = self.dsync.as_ref().map(|d| Box::new(d.info()));
        snap
    }

    /// `ipvsadm -Z`: zero the counters of one service and its reals, or of everything.
    pub(super) fn zero(&mut self, service: Option<&ServiceKey>) -> Result<(), ZeroError> {
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
            return Err(ZeroError::NoSuchService(*s));
        }
        self.dp.apply(&ops)?;
        if service.is_none() {
            self.dp.reset_global_stats()?;
        }
        self.rates.reset(service);
        info!(service = ?service.map(|s| s.to_string()), "counters zeroed");
        Ok(())
    }

    /// Samples counters for the rate estimator and refreshes the snapshot /metrics serves.
    pub(super) fn sample_rates(&mut self) {
        let elapsed = self.last_sample.elapsed();
        self.last_sample = std::time::Instant::now();
        let (services, reals) = snapshot::sample(&self.dp, &self.installed);
        self.rates.sample(elapsed, services, reals);
        if let Some(latest) = &self.latest {
            let snap = self.snapshot(false);
            *latest.lock().expect("snapshot lock") = snap;
        }
    }

    pub(super) fn reject(&mut self, why: &Rejected) {
        // A configuration's errors are a list of located lines: they start on a line of their
        // own.
        let sep = if matches!(why, Rejected::Invalid(_)) {
            "\n"
        } else {
            ": "
        };
        error!("reload rejected, still running the previous configuration{sep}{why}");
        self.reloads.1 += 1;
    }
}
