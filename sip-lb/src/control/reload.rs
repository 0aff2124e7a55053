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
        proxy: crate::proxy::Proxy::new(identity(config), keys(config), crate::proxy::Policy::default()),
        router: crate::balance::Router::build(config, |a| backends.eligible(a)),
        backends: backends.slots(),
    }
}

fn identity(config: &Config) -> crate::proxy::Identity {
    let listeners = config
        .listen
        .iter()
        .enumerate()
        .map(|(i, &local)| {
            let advertise = if i == 0 || local.ip().is_unspecified() { config.advertise } else { local };
            crate::proxy::Listener { local, advertise }
        })
        .collect();
    crate::proxy::Identity { listeners, aliases: Vec::new() }
}

/// The branch keys. Without a configured secret, one random key for the
/// life of the process (so reloads keep in-flight branches valid).
fn keys(_config: &Config) -> crate::proxy::Keys {
    static PROCESS_KEY: std::sync::OnceLock<crate::proxy::Key> = std::sync::OnceLock::new();
    crate::proxy::Keys::new(*PROCESS_KEY.get_or_init(crate::proxy::Key::random), None)
}

/// Re-reads the file and flags; refuses what needs a restart.
pub fn load_next(args: &RunArgs, running: &Config) -> Result<Config> {
    let next = Config::load(args)?;
    if next.listen != running.listen || next.workers != running.workers {
        bail!(
            "listen addresses and worker count need a restart (running: {:?} x{}, new: {:?} x{})",
            running.listen,
            running.workers,
            next.listen,
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
