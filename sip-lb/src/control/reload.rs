//! Hot reload: a new config becomes a new Plan, published with one atomic
//! store. What cannot change without re-binding sockets is refused, so a
//! reload never half-applies.
use anyhow::{bail, Result};

use crate::config::Config;
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
    plan_with(config, backends, |_, a| backends.eligible(a))
}

/// [`plan_for`] with eligibility decided per pool (`dns::tiered`: SRV
/// priorities).
pub fn plan_with(
    config: &Config,
    backends: &Backends,
    eligible: impl Fn(&sip_lb_proto::balance::PoolSpec, std::net::SocketAddr) -> bool,
) -> Plan {
    Plan {
        proxy: sip_lb_proto::proxy::Proxy::new(identity(config), keys(config), policy(config)),
        router: sip_lb_proto::balance::Router::build_by_pool(&config.pools, eligible),
        backends: backends.slots(),
        shield: shield(config),
    }
}

/// The shield's policy: `[shield]`, with every backend allowed (their
/// responses are never blocked or limited).
fn shield(config: &Config) -> sip_lb_proto::shield::ShieldPolicy {
    use sip_lb_proto::shield::{Prefix, PrefixSet, ShieldPolicy};
    let s = &config.shield;
    let backends = config.pools.iter().flat_map(|p| &p.backends).filter_map(|b| {
        let host = if b.addr.is_ipv4() { 32 } else { 128 };
        Prefix::new(b.addr.ip(), host)
    });
    ShieldPolicy {
        block: PrefixSet::new(s.block.iter().copied()),
        allow: PrefixSet::new(s.allow.iter().copied().chain(backends)),
        rate: s.rate,
        reply_rate: s.reply_rate,
        scanners: s.scanners.iter().map(|p| p.as_bytes().into()).collect(),
        new_sources: s.new_sources,
    }
}

/// The workers' shared per-source buckets for `[shield]` (sized at start;
/// a reload changes the policy, not the table), keyed by a random hash seed
/// so that a flood cannot aim at one slot.
pub fn shield_state(config: &Config) -> sip_lb_proto::shield::Shield {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random number generator is unavailable");
    sip_lb_proto::shield::Shield::new(config.shield.tracked_sources, u64::from_le_bytes(b))
}

fn identity(config: &Config) -> sip_lb_proto::proxy::Identity {
    use sip_lb_proto::proxy::{Alias, Identity, Listener};
    let mut aliases: Vec<Alias> = config.sip.aliases.iter().map(|a| Alias::new(&a.host, a.port)).collect();
    // A stream listener is us too: a client's Route names it (our
    // Record-Route's value on its side, RFC 5658), a wildcard one by the
    // UDP listeners' addresses.
    for s in &config.streams {
        let v4 = s.addr.ip().to_canonical().is_ipv4();
        let ips: Vec<std::net::IpAddr> = match s.addr.ip().is_unspecified() {
            false => vec![s.addr.ip()],
            true => {
                config.listen.iter().map(|l| l.advertise.ip()).filter(|ip| ip.to_canonical().is_ipv4() == v4).collect()
            }
        };
        aliases.extend(ips.into_iter().map(|ip| Alias::new(&ip.to_string(), Some(s.addr.port()))));
    }
    Identity {
        listeners: config.listen.iter().map(|l| Listener { local: l.addr, advertise: l.advertise }).collect(),
        aliases,
    }
}

fn policy(config: &Config) -> sip_lb_proto::proxy::Policy {
    let bytes = |v: &Vec<String>| v.iter().map(|s| s.as_bytes().into()).collect();
    sip_lb_proto::proxy::Policy {
        schemes: config.sip.schemes.as_ref().map(bytes),
        proxy_require: bytes(&config.sip.proxy_require),
        routing: routing(config),
    }
}

/// `record_route` and `path` as the core applies them to datagrams (the
/// stream layer applies the same settings to connections).
fn routing(config: &Config) -> sip_lb_proto::flow::routing::Routing {
    use crate::config::{PathMode, RecordRoute};
    use sip_lb_proto::flow::routing as core;
    core::Routing {
        record_route: match config.record_route {
            RecordRoute::Off => core::RecordRoute::Off,
            RecordRoute::On => core::RecordRoute::On,
            RecordRoute::Auto => core::RecordRoute::Auto,
        },
        path: match config.path {
            PathMode::Off => core::PathMode::Off,
            PathMode::Supported => core::PathMode::Supported,
            PathMode::Force => core::PathMode::Force,
            PathMode::Require => core::PathMode::Require,
        },
    }
}

/// A key from the OS random number generator.
fn random_key() -> sip_lb_proto::proxy::Key {
    let mut k = [0u8; 16];
    // No entropy at start-up is not something sip-lb could work around.
    getrandom::fill(&mut k).expect("the OS random number generator is unavailable");
    sip_lb_proto::proxy::Key::from_bytes(k)
}

/// The branch keys from `[security]`. Without a secret, one random key for
/// the life of the process, so reloads keep in-flight branches valid (a
/// restart or another node does not: see the start-up warning).
fn keys(config: &Config) -> sip_lb_proto::proxy::Keys {
    use sip_lb_proto::proxy::{Key, Keys};
    static PROCESS_KEY: std::sync::OnceLock<Key> = std::sync::OnceLock::new();
    let s = &config.security;
    match &s.secret {
        Some(secret) => Keys::new(Key::from_secret(secret), s.previous.as_deref().map(Key::from_secret)),
        None => Keys::new(*PROCESS_KEY.get_or_init(random_key), None),
    }
}

/// Refuses a config that needs a restart: pure, so the caller can read the
/// file without holding the control plane's lock and check under it.
pub fn check_applicable(next: &Config, running: &Config) -> Result<()> {
    // Sockets are bound to the addresses; what they advertise may change.
    let addrs = |c: &Config| c.listen.iter().map(|l| l.addr).collect::<Vec<_>>();
    if addrs(next) != addrs(running) || next.workers != running.workers {
        bail!(
            "listen addresses and worker count need a restart (running: {:?} x{}, new: {:?} x{})",
            addrs(running),
            running.workers,
            addrs(next),
            next.workers
        );
    }
    if next.iface != running.iface || next.datapath != running.datapath {
        tracing::warn!(
            "iface/datapath changed ({:?}/{:?} -> {:?}/{:?}): the data path is chosen at start-up, this takes \
             effect at the next restart",
            running.iface,
            running.datapath,
            next.iface,
            next.datapath
        );
    }
    // Backends' connections and [tls]/[backend_tls] follow a reload
    // (`control/streams.rs`); the connection layer's sockets and limits
    // are set at start.
    if (&next.streams, &next.stream) != (&running.streams, &running.stream) {
        bail!("tcp:/tls: listen addresses and [tcp] need a restart");
    }
    // The VIPs are held and announced from start-up (control/cluster).
    if next.cluster != running.cluster {
        bail!("[cluster] needs a restart (drain-node, then start again)");
    }
    if next.hep != running.hep {
        tracing::warn!("[hep] changed: HEP mirroring is set up at start-up, this takes effect at the next restart");
    }
    if next.metrics != running.metrics {
        tracing::warn!(
            "the control/metrics address changed ({:?} -> {:?}): it takes effect at the next restart",
            running.metrics,
            next.metrics
        );
    }
    Ok(())
}
