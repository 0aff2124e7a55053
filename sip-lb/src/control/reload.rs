//! Hot reload: a new config becomes a new Plan, published with one atomic
//! store. What cannot change without re-binding sockets is refused, so a
//! reload never half-applies.
use std::sync::Arc;

use anyhow::{bail, Result};

use crate::config::{Config, RunArgs};
use crate::dataplane::{Plan, SharedPlan};

pub fn build_plan(config: &Config) -> Plan {
    Plan { proxy: crate::proxy::Proxy::new(identity(config)), router: crate::balance::Router::build(config, |_| true) }
}

fn identity(config: &Config) -> crate::proxy::Identity {
    crate::proxy::Identity { advertise: config.advertise, local: config.listen.clone() }
}

pub fn reload(args: &RunArgs, running: &Config, plan: &SharedPlan) -> Result<Config> {
    let next = Config::load(args)?;
    if next.listen != running.listen || next.workers != running.workers {
        bail!("listen addresses and worker count need a restart (running: {:?} x{}, new: {:?} x{})",
            running.listen, running.workers, next.listen, next.workers);
    }
    plan.store(Arc::new(build_plan(&next)));
    tracing::info!("config reloaded: {} pool(s)", next.pools.len());
    Ok(next)
}
