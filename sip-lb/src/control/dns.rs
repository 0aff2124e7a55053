//! Backends named in DNS (`control/dns.rs` resolves, the config declares:
//! `config/dns.rs`). Host names give their A/AAAA addresses on the written
//! port; SRV names give their targets' addresses with the records' ports,
//! weights (as HRW weights) and priorities. Every address is a backend of
//! its pool in the same rendezvous hash as the literal ones, so a changed
//! record moves only the Call-IDs of the addresses it added or removed.
//!
//! Names are looked up at start (before the control API answers), after
//! every reload, and when their TTL runs out (within `[dns]` min/max),
//! by a tokio task: never on the data path, which gets a new Plan. A failed
//! lookup keeps the last good addresses and says so; it is retried after
//! `min_ttl_seconds`.
//!
//! Priorities (RFC 2782, RFC 3263 §4.4 for a stateless element): in each
//! pool only the lowest priority with a backend up receives traffic, a
//! function of the backend states alone. Literal backends are priority 0.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{BackendConfig, Config, DnsBackend, DnsTarget};

use super::Control;

/// One resolved address of a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub addr: SocketAddr,
    pub weight: u32,
    pub priority: u16,
}

/// The declared config and the last good answer for each of its names:
/// the running config is [`Resolved::expand`] of these.
#[derive(Debug)]
pub struct Resolved {
    declared: Config,
    sets: BTreeMap<DnsBackend, Vec<Target>>,
    /// (pool, address) -> SRV priority, for addresses not written literally.
    priority: HashMap<(String, SocketAddr), u16>,
}

impl Resolved {
    pub fn new(declared: Config) -> Resolved {
        Resolved { declared, sets: BTreeMap::new(), priority: HashMap::new() }
    }

    /// A reloaded config: names still declared keep their addresses until
    /// looked up again. Returns the config to run.
    pub fn declare(&mut self, declared: Config) -> Config {
        self.sets.retain(|n, _| declared.dns.names.contains(n));
        self.declared = declared;
        self.expand()
    }

    /// A lookup's answer; `Some(config to run)` if it changed anything.
    pub fn update(&mut self, name: &DnsBackend, targets: Vec<Target>) -> Option<Config> {
        if !self.declared.dns.names.contains(name) || self.sets.get(name) == Some(&targets) {
            return None;
        }
        self.sets.insert(name.clone(), targets);
        Some(self.expand())
    }

    /// The last good addresses of `name`.
    pub fn get(&self, name: &DnsBackend) -> Option<&[Target]> {
        self.sets.get(name).map(Vec::as_slice)
    }

    pub fn declared(&self) -> &Config {
        &self.declared
    }

    /// The declared config with every resolved address added to its pool
    /// (after the literal ones, in name order; an address already in the
    /// pool is not added twice).
    pub fn expand(&mut self) -> Config {
        let mut c = self.declared.clone();
        self.priority.clear();
        for n in &self.declared.dns.names {
            let (Some(pool), Some(set)) = (c.pools.iter_mut().find(|p| p.name == n.pool), self.sets.get(n)) else {
                continue;
            };
            for t in set {
                if pool.backends.iter().any(|b| b.addr == t.addr) {
                    continue;
                }
                pool.backends.push(BackendConfig { addr: t.addr, weight: t.weight });
                self.priority.insert((n.pool.clone(), t.addr), t.priority);
            }
        }
        c
    }

    /// The priority of `addr` in `pool` (0 for a literal backend).
    pub fn priority(&self, pool: &str, addr: SocketAddr) -> u16 {
        // A lookup by (String, addr) without allocating a String per call
        // is not worth it: this runs once per backend per Plan.
        self.priority.get(&(pool.to_owned(), addr)).copied().unwrap_or(0)
    }
}

/// Eligibility with priorities: `addr` takes traffic in `pool` if it is up
/// (`up`) and no backend of the pool that is up has a lower priority.
pub fn tiered<'a>(
    config: &'a Config,
    resolved: &'a Resolved,
    up: impl Fn(SocketAddr) -> bool + 'a,
) -> impl Fn(&sip_lb_proto::balance::PoolSpec, SocketAddr) -> bool + 'a {
    let best: HashMap<&str, u16> = config
        .pools
        .iter()
        .filter_map(|p| {
            let best = p.backends.iter().filter(|b| up(b.addr)).map(|b| resolved.priority(&p.name, b.addr)).min()?;
            Some((p.name.as_str(), best))
        })
        .collect();
    move |p, a| up(a) && best.get(p.name.as_str()) == Some(&resolved.priority(&p.name, a))
}

/// The resolver as `[dns]` says: its servers, or the system's.
fn resolver(config: &Config) -> anyhow::Result<hickory_resolver::TokioResolver> {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    let mut opts = ResolverOpts::default();
    // We keep the last good answer and time the next lookup ourselves.
    opts.cache_size = 0;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    let builder = if config.dns.servers.is_empty() {
        hickory_resolver::Resolver::builder_tokio()?
    } else {
        let servers = config
            .dns
            .servers
            .iter()
            .map(|s| {
                let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                for c in &mut ns.connections {
                    c.port = s.port();
                }
                ns
            })
            .collect();
        hickory_resolver::Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    Ok(builder.with_options(opts).build()?)
}

/// Looks `name` up: its addresses and how long the answer is good for.
async fn lookup(r: &hickory_resolver::TokioResolver, name: &DnsBackend) -> anyhow::Result<(Vec<Target>, Instant)> {
    use hickory_resolver::proto::rr::RData;
    let fqdn = |n: &str| format!("{}.", n.trim_end_matches('.'));
    let mut out = Vec::new();
    let valid_until = match &name.target {
        DnsTarget::Host { name: host, port } => {
            let ips = r.lookup_ip(fqdn(host)).await?;
            out.extend(ips.iter().map(|ip| Target {
                addr: SocketAddr::new(ip, *port),
                weight: name.weight,
                priority: 0,
            }));
            ips.valid_until()
        }
        DnsTarget::Srv { name: srv } => {
            let l = r.srv_lookup(fqdn(srv)).await?;
            let mut until = l.valid_until();
            for rec in l.answers() {
                let RData::SRV(s) = &rec.data else { continue };
                // "." as the target: the service is decidedly not available here.
                if s.target.is_root() {
                    continue;
                }
                let ips = r.lookup_ip(s.target.clone()).await?;
                until = until.min(ips.valid_until());
                // Weight 0 (RFC 2782: "very small chance") gets the smallest share we have.
                let weight = u32::from(s.weight.max(1));
                out.extend(ips.iter().map(|ip| Target {
                    addr: SocketAddr::new(ip, s.port),
                    weight,
                    priority: s.priority,
                }));
            }
            until
        }
    };
    out.sort();
    out.dedup_by_key(|t| t.addr);
    Ok((out, valid_until))
}

/// Resolves every declared name that is due, applies the answers, and
/// returns when the next one is due. `due` persists across calls.
pub async fn step(control: &Control, due: &mut BTreeMap<DnsBackend, Instant>) -> Option<Instant> {
    let config = control.lock().dns.declared().clone();
    let names = &config.dns.names;
    due.retain(|n, _| names.contains(n));
    if names.is_empty() {
        return None;
    }
    let now = Instant::now();
    let (min, max) = (Duration::from_secs(config.dns.min_ttl_secs), Duration::from_secs(config.dns.max_ttl_secs));
    let r = match resolver(&config) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("DNS: no resolver ({e:#}); keeping the backends resolved so far");
            return Some(now + min);
        }
    };
    // Addresses of a family we have no listen address for cannot be used.
    let v4 = config.listen.iter().any(|l| l.addr.is_ipv4());
    let v6 = config.listen.iter().any(|l| l.addr.is_ipv6());
    for n in names {
        if due.get(n).is_some_and(|&t| t > now) {
            continue;
        }
        let next = match lookup(&r, n).await {
            Ok((mut targets, until)) => {
                targets.retain(|t| if t.addr.is_ipv4() { v4 } else { v6 });
                control.dns_answer(n, targets);
                until.saturating_duration_since(Instant::now()).clamp(min, max)
            }
            Err(e) => {
                let kept = control.lock().dns.get(n).map_or(0, <[Target]>::len);
                tracing::warn!(
                    pool = %n.pool, name = %n.target,
                    "DNS lookup failed, keeping the last good {kept} address(es), retrying in {}s: {e}",
                    min.as_secs()
                );
                min
            }
        };
        due.insert(n.clone(), Instant::now() + next);
    }
    due.values().min().copied()
}

/// The resolving task: [`step`] when a name is due or a reload changed the
/// names (`Control::dns_changed`).
pub async fn run(control: Arc<Control>, mut due: BTreeMap<DnsBackend, Instant>) {
    loop {
        let next = step(&control, &mut due).await;
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = control.dns_changed() => { due.clear(); }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml_str(
            "listen = [\"127.0.0.1:5060\"]\n[[pool]]\nname = \"farm\"\nbackends = [\"10.0.0.1:5060\"]\n\
             srv = \"_sip._udp.farm.example\"\n",
        )
        .unwrap()
    }

    fn t(a: &str, weight: u32, priority: u16) -> Target {
        Target { addr: a.parse().unwrap(), weight, priority }
    }

    #[test]
    fn answers_become_backends_and_priorities_tier_them() {
        let c = config();
        let name = c.dns.names[0].clone();
        let mut r = Resolved::new(c);
        let run = r.update(&name, vec![t("10.0.0.2:5060", 3, 10), t("10.0.0.3:5070", 1, 20)]).unwrap();
        let addrs: Vec<_> = run.pools[0].backends.iter().map(|b| (b.addr.to_string(), b.weight)).collect();
        assert_eq!(addrs, [("10.0.0.1:5060".into(), 1), ("10.0.0.2:5060".into(), 3), ("10.0.0.3:5070".into(), 1)]);
        // The same answer again changes nothing.
        assert!(r.update(&name, vec![t("10.0.0.2:5060", 3, 10), t("10.0.0.3:5070", 1, 20)]).is_none());

        {
            let pool = &run.pools[0];
            let a = |s: &str| s.parse::<SocketAddr>().unwrap();
            // The literal backend (priority 0) is up: only it takes traffic.
            let e = tiered(&run, &r, |_| true);
            assert!(e(pool, a("10.0.0.1:5060")) && !e(pool, a("10.0.0.2:5060")) && !e(pool, a("10.0.0.3:5070")));
            // It is down: priority 10 takes over; then 20 when 10 is down too.
            let e = tiered(&run, &r, |x| x != a("10.0.0.1:5060"));
            assert!(e(pool, a("10.0.0.2:5060")) && !e(pool, a("10.0.0.3:5070")));
            let e = tiered(&run, &r, |x| x == a("10.0.0.3:5070"));
            assert!(e(pool, a("10.0.0.3:5070")));
        }

        // A reload that drops the name drops its addresses.
        let mut plain = config();
        plain.dns.names.clear();
        let run = r.declare(plain);
        assert_eq!(run.pools[0].backends.len(), 1);
    }
}
