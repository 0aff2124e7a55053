//! Flags on top of the file, defaults, and the semantic checks. Errors point
//! at the file when the setting came from it, else name the flag.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;

use super::error::ConfigError;
use super::file::{Draft, PoolSpans, Spans};
use super::{
    default_workers, BackendConfig, Config, PoolConfig, RunArgs, DEFAULT_POOL, REGISTER,
    REGISTRAR_POOL,
};

/// Applies `--listen` etc. to the draft. Overridden settings lose their
/// spans, so later errors about them name the flag instead of a line.
pub(crate) fn apply_flags(
    d: &mut Draft,
    spans: &mut Spans,
    a: &RunArgs,
) -> Result<(), ConfigError> {
    if !a.listen.is_empty() {
        d.listen = a.listen.clone();
        spans.listen.clear();
    }
    if let Some(adv) = a.advertise {
        d.advertise = Some(adv);
        spans.advertise = None;
    }
    if let Some(w) = a.workers {
        d.workers = Some(w);
        spans.workers = None;
    }
    if a.iface.is_some() {
        d.iface = a.iface.clone();
    }
    if a.metrics.is_some() {
        d.metrics = a.metrics;
    }
    if !a.backend.is_empty() {
        let i = match d.pools.iter().position(|p| p.default) {
            Some(i) => i,
            None => new_pool(d, DEFAULT_POOL, &[], true),
        };
        add_backends(&mut d.pools[i], &a.backend, "--backend")?;
    }
    if !a.registrar.is_empty() {
        let i = match d
            .pools
            .iter()
            .position(|p| p.methods.iter().any(|m| m == REGISTER))
        {
            Some(i) => i,
            None => new_pool(d, REGISTRAR_POOL, &[REGISTER], false),
        };
        add_backends(&mut d.pools[i], &a.registrar, "--registrar")?;
    }
    Ok(())
}

fn new_pool(d: &mut Draft, name: &str, methods: &[&str], default: bool) -> usize {
    d.pools.push(PoolConfig {
        name: name.to_owned(),
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        default,
        backends: Vec::new(),
    });
    d.pools.len() - 1
}

fn add_backends(
    pool: &mut PoolConfig,
    addrs: &[SocketAddr],
    flag: &str,
) -> Result<(), ConfigError> {
    for &addr in addrs {
        if pool.backends.iter().any(|b| b.addr == addr) {
            return Err(ConfigError::new(
                flag,
                format!("{addr} is already a backend of pool {:?}", pool.name),
            ));
        }
        pool.backends.push(BackendConfig { addr, weight: 1 });
    }
    Ok(())
}

/// Where to point an error: the source text and spans, if the draft came
/// from a file.
struct Locator<'a> {
    src: Option<(&'a str, &'a Spans)>,
}

impl Locator<'_> {
    fn err(
        &self,
        span: impl FnOnce(&Spans) -> Option<Range<usize>>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> ConfigError {
        match self.src {
            Some((src, spans)) => ConfigError::at(src, span(spans), field, msg),
            None => ConfigError::new(field, msg),
        }
    }
}

/// Fills in defaults and checks everything that serde cannot.
pub(crate) fn finish(d: Draft, src: Option<(&str, &Spans)>) -> Result<Config, ConfigError> {
    let loc = Locator { src };
    let listen_field = |i: usize, s: &Spans| {
        if s.listen.is_empty() && i == 0 {
            "--listen"
        } else {
            "listen"
        }
    };

    let listen = if d.listen.is_empty() {
        vec![Config::DEFAULT_LISTEN]
    } else {
        d.listen
    };
    for (i, a) in listen.iter().enumerate() {
        if listen[..i].contains(a) {
            return Err(loc.err(
                |s| s.listen.get(i).cloned(),
                "listen",
                format!("{a} is listed twice"),
            ));
        }
    }

    let advertise = match d.advertise {
        Some(a) if a.ip().is_unspecified() => {
            let field = if loc.src.is_some_and(|(_, s)| s.advertise.is_some()) {
                "advertise"
            } else {
                "--advertise"
            };
            return Err(loc.err(
                |s| s.advertise.clone(),
                field,
                format!("{a} is a wildcard address; advertise the address clients and backends should send to"),
            ));
        }
        Some(a) => a,
        None if listen[0].ip().is_unspecified() => {
            let field = loc.src.map_or("--listen", |(_, s)| listen_field(0, s));
            return Err(loc.err(
                |s| s.listen.first().cloned(),
                field,
                format!(
                    "{} is a wildcard address, so it cannot be advertised in Via/Record-Route; \
                     set `advertise` (or --advertise) to this host's reachable ip:port",
                    listen[0]
                ),
            ));
        }
        None => listen[0],
    };

    let workers = d.workers.unwrap_or_else(default_workers);
    if workers == 0 {
        let field = if loc.src.is_some_and(|(_, s)| s.workers.is_some()) {
            "workers"
        } else {
            "--workers"
        };
        return Err(loc.err(|s| s.workers.clone(), field, "must be at least 1"));
    }

    let h = d.health;
    for (field, v, span) in [
        (
            "health.interval_ms",
            h.interval_ms,
            (|s: &Spans| s.health.interval_ms.clone()) as fn(&Spans) -> _,
        ),
        ("health.timeout_ms", h.timeout_ms, |s: &Spans| {
            s.health.timeout_ms.clone()
        }),
        ("health.failures", u64::from(h.failures), |s: &Spans| {
            s.health.failures.clone()
        }),
        ("health.successes", u64::from(h.successes), |s: &Spans| {
            s.health.successes.clone()
        }),
    ] {
        if v == 0 {
            return Err(loc.err(span, field, "must be at least 1"));
        }
    }
    if h.timeout_ms > h.interval_ms {
        return Err(loc.err(
            |s| s.health.timeout_ms.clone(),
            "health.timeout_ms",
            format!(
                "{} ms is longer than health.interval_ms ({} ms): a probe must end before the next one starts",
                h.timeout_ms, h.interval_ms
            ),
        ));
    }

    check_pools(&d.pools, &loc)?;

    Ok(Config {
        listen,
        advertise,
        workers,
        pools: d.pools,
        iface: d.iface,
        metrics: d.metrics,
        health: h,
    })
}

fn check_pools(pools: &[PoolConfig], loc: &Locator) -> Result<(), ConfigError> {
    if pools.is_empty() {
        return Err(loc.err(
            |_| None,
            "pool",
            "no backend pools: add a [[pool]] table or pass --backend",
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut methods: HashMap<&str, &str> = HashMap::new();
    let mut default: Option<&str> = None;

    for (i, p) in pools.iter().enumerate() {
        let name_span = |s: &Spans| ps(s, i).and_then(|p| p.name.clone());
        if p.name.is_empty() {
            return Err(loc.err(name_span, "pool: name", "must not be empty"));
        }
        let field = format!("pool {:?}", p.name);
        if names.insert(&p.name, i).is_some() {
            return Err(loc.err(name_span, format!("{field}: name"), "pool name used twice"));
        }
        if p.backends.is_empty() {
            return Err(loc.err(
                |s| {
                    ps(s, i)
                        .and_then(|p| p.backends.clone())
                        .or_else(|| name_span(s))
                },
                format!("{field}: backends"),
                "a pool needs at least one backend",
            ));
        }
        for (j, b) in p.backends.iter().enumerate() {
            let bfield = format!("{field}: backend \"{}\"", b.addr);
            let addr_span =
                |s: &Spans| ps(s, i).and_then(|p| p.backend.get(j)).map(|b| b.0.clone());
            if b.weight == 0 {
                return Err(loc.err(
                    |s| {
                        ps(s, i)
                            .and_then(|p| p.backend.get(j))
                            .and_then(|b| b.1.clone())
                    },
                    format!("{bfield}: weight"),
                    "must be at least 1 (to take a backend out, remove it or mark it down)",
                ));
            }
            if b.addr.ip().is_unspecified() || b.addr.port() == 0 {
                return Err(loc.err(
                    addr_span,
                    bfield,
                    "not a usable destination (wildcard ip or port 0)",
                ));
            }
            if p.backends[..j].iter().any(|o| o.addr == b.addr) {
                return Err(loc.err(addr_span, bfield, "listed twice in this pool"));
            }
        }
        for (k, m) in p.methods.iter().enumerate() {
            let mspan = |s: &Spans| ps(s, i).and_then(|p| p.methods.get(k)).cloned();
            if m.is_empty() || !m.bytes().all(is_token_byte) {
                return Err(loc.err(
                    mspan,
                    format!("{field}: methods"),
                    format!("{m:?} is not a SIP method token"),
                ));
            }
            if let Some(other) = methods.insert(m, &p.name) {
                let msg = if other == p.name {
                    format!("{m} is listed twice")
                } else {
                    format!("{m} is already routed to pool {other:?}")
                };
                return Err(loc.err(mspan, format!("{field}: methods"), msg));
            }
        }
        if p.default {
            if let Some(other) = default {
                return Err(loc.err(
                    |s| ps(s, i).and_then(|p| p.default.clone()).or_else(|| name_span(s)),
                    format!("{field}: default"),
                    format!("pool {other:?} is already the default pool (a pool without `methods` is a default pool)"),
                ));
            }
            default = Some(&p.name);
        } else if p.methods.is_empty() {
            return Err(loc.err(
                |s| {
                    ps(s, i)
                        .and_then(|p| p.default.clone())
                        .or_else(|| name_span(s))
                },
                format!("{field}: default"),
                "the pool receives no requests: list `methods` or set `default = true`",
            ));
        }
    }
    if default.is_none() {
        let mut routed: Vec<&str> = methods.keys().copied().collect();
        routed.sort_unstable();
        return Err(loc.err(
            |_| None,
            "pool",
            format!(
                "no default pool: methods other than {} have nowhere to go; set `default = true` on one pool",
                routed.join(", ")
            ),
        ));
    }
    Ok(())
}

fn ps(s: &Spans, i: usize) -> Option<&PoolSpans> {
    s.pools.get(i)
}

/// RFC 3261 `token` characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}
