//! Keeping the maps right: installing a desired state, and the periodic work on them (the
//! least-connection recount and candidates, releasing removed reals).

use anyhow::{Context as _, Result};
use tracing::{debug, error, info};

use super::{Agent, run_script};
use crate::{
    model::DesiredState,
    reconcile::desired::{changes, desired_state},
    schedule::load,
};

impl Agent {
    /// Replans from the current configuration and observations and applies the difference.
    /// Installs what the configuration and observations ask for, then runs the notify and
    /// quorum scripts of the changes that led here: a script sees the data plane already
    /// changed.
    pub(super) fn sync(&mut self, cause: &str) -> Result<()> {
        let desired = desired_state(&self.config, &self.observed);
        let installed = self.install(desired, cause);
        for (command, what) in std::mem::take(&mut self.scripts) {
            run_script(command, what);
        }
        installed
    }

    pub(super) fn install(&mut self, desired: DesiredState, cause: &str) -> Result<()> {
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
        if let Some(dsync) = &mut self.dsync {
            dsync.set_directory(&self.installed);
        }
        // A real that came back must not look loaded with the connections it lost while down
        // until the next periodic recount.
        self.reconcile_loads();
        Ok(())
    }

    /// Counts the stale connection entries (see [`load`]) of the least-connection services'
    /// reals and of the reals with connection thresholds, whose overload it re-evaluates.
    pub(super) fn reconcile_loads(&mut self) {
        let reals: Vec<u32> = self
            .installed
            .services
            .values()
            .flat_map(|s| {
                let all = s.params.sched != lb_common::SCHED_MAGLEV;
                s.reals
                    .values()
                    .chain(s.retiring.values())
                    .filter(move |r| all || r.value.u_threshold != 0)
            })
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
    pub(super) fn refresh_candidates(&mut self) {
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
    pub(super) fn retire_idle(&mut self) {
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
        if let Some(dsync) = &mut self.dsync {
            dsync.set_directory(&self.installed);
        }
        for (service, real) in released {
            info!("real {real} of {service} released: its last connection is gone");
        }
    }
}
