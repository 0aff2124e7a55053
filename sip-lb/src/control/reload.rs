//! Hot reload: a new config becomes a new Plan, published with one atomic
//! store. What cannot change without re-binding sockets is refused, so a
//! reload never half-applies.
use anyhow::{bail, Result};

use crate::config::{Config, RunArgs};
use crate::dataplane::Plan;

use super::state::Backends;

/// The Plan for a fresh start: every backend eligible, counter slots in
/// configuration order (the same ones [`super::Control`] then assigns).
pub fn build_plan(config: &Config) -> Plan {
    let mut backends = Backends::default();
    backends.sync(config, |_| (0, 0));
    plan_for(config, &backends)
}

/// The Plan for `config` with only the eligible (up, not drained) backends
/// in the router.
pub fn plan_for(config: &Config, backends: &Backends) -> Plan {
    Plan {
        proxy: crate::proxy::Proxy::new(identity(config)),
        router: crate::balance::Router::build(config, |a| backends.eligible(a)),
        backends: backends.slots(),
    }
}

fn identity(config: &Config) -> crate::proxy::Identity {
    let mut local: Vec<std::net::SocketAddr> = Vec::with_capacity(2 * config.listen.len());
    for l in &config.listen {
        for a in [l.addr, l.advertise] {
            if !local.contains(&a) {
                local.push(a);
            }
        }
    }
    crate::proxy::Identity {
        advertise: config.listen[0].advertise,
        local,
    }
}

/// Re-reads the file and flags; refuses what needs a restart.
pub fn load_next(args: &RunArgs, running: &Config) -> Result<Config> {
    let next = Config::load(args)?;
    // Sockets are bound to the addresses; what they advertise may change.
    let addrs = |c: &Config| c.listen.iter().map(|l| l.addr).collect::<Vec<_>>();
    if addrs(&next) != addrs(running) || next.workers != running.workers {
        bail!(
            "listen addresses and worker count need a restart (running: {:?} x{}, new: {:?} x{})",
            addrs(running),
            running.workers,
            addrs(&next),
            next.workers
        );
    }
    if next.metrics != running.metrics {
        tracing::warn!(
            "the control/metrics address changed ({:?} -> {:?}): it takes effect at the next restart",
            running.metrics,
            next.metrics
        );
    }
    Ok(next)
}
