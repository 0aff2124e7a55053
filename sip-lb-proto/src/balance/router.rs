//! The immutable routing table the data plane consults for every request:
//! method -> pool -> backend by weighted rendezvous hashing of the Call-ID.

use std::fmt;
use std::net::SocketAddr;

use super::hrw::{backend_seed, exp_draw, mix};
use super::spec::{PoolSpec, FOLLOW_INVITE, INVITE};

/// Method -> pool -> backend. Built by the control plane from the pools
/// and a liveness predicate, then published whole (arc-swap); never mutated.
/// [`Router::choose`] neither allocates nor locks.
#[derive(Default)]
pub struct Router {
    pub(super) pools: Box<[Pool]>,
    /// Method bytes -> index into `pools`; a handful of entries, scanned.
    /// [`FOLLOW_INVITE`] methods map to INVITE's pool (or are absent when
    /// that is the default).
    routes: Box<[(Box<[u8]>, usize)]>,
    default: Option<usize>,
}

/// A pool of backends sharing the Call-IDs of its methods.
pub struct Pool {
    name: Box<str>,
    methods: Box<[Box<str>]>,
    default: bool,
    /// All backends, in configuration order (for metrics and admin).
    backends: Box<[Backend]>,
    /// The eligible ones with what the hot path needs.
    live: Box<[Slot]>,
    /// All live weights are equal: compare mixed hashes, skip the `ln`.
    pub(super) uniform: bool,
}

/// A backend as configured, and whether this Router sends it traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    addr: SocketAddr,
    weight: u32,
    eligible: bool,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    seed: u64,
    inv_weight: f64,
    addr: SocketAddr,
}

impl Router {
    /// Builds the table. Backends for which `is_eligible` returns false (down,
    /// draining) are kept for listing but receive nothing; their Call-IDs go
    /// to each Call-ID's next-best backend, the others stay put.
    ///
    /// [`FOLLOW_INVITE`] methods (ACK, CANCEL, BYE, ...) go to INVITE's
    /// pool whatever pool lists them, so a call's transactions and dialog
    /// stay on one backend (RFC 3261 §16.11).
    ///
    /// Total for any pool list: a validated config has every method in at most
    /// one pool and one default pool; otherwise the first listing wins, and
    /// with no default pool unlisted methods get `None`. A weight of 0 makes
    /// a backend ineligible.
    pub fn build(pools: &[PoolSpec], is_eligible: impl Fn(SocketAddr) -> bool) -> Router {
        Router::build_by_pool(pools, |_, a| is_eligible(a))
    }

    /// [`Router::build`] with eligibility decided per pool: for backends
    /// whose standing differs between pools (SRV priorities: only a pool's
    /// best tier with a backend up takes traffic, RFC 2782).
    pub fn build_by_pool(pools: &[PoolSpec], is_eligible: impl Fn(&PoolSpec, SocketAddr) -> bool) -> Router {
        let mut routes: Vec<(Box<[u8]>, usize)> = Vec::new();
        let mut default = None;
        let pools = pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                for m in &p.methods {
                    if !routes.iter().any(|(r, _)| **r == *m.as_bytes()) {
                        routes.push((m.as_bytes().into(), i));
                    }
                }
                if p.default && default.is_none() {
                    default = Some(i);
                }
                let backends: Box<[Backend]> = p
                    .backends
                    .iter()
                    .map(|b| Backend {
                        addr: b.addr,
                        weight: b.weight,
                        eligible: b.weight > 0 && is_eligible(p, b.addr),
                    })
                    .collect();
                let live: Box<[Slot]> = backends
                    .iter()
                    .filter(|b| b.eligible)
                    .map(|b| Slot { seed: backend_seed(b.addr), inv_weight: 1.0 / f64::from(b.weight), addr: b.addr })
                    .collect();
                let uniform = live.windows(2).all(|w| w[0].inv_weight == w[1].inv_weight);
                Pool {
                    name: p.name.as_str().into(),
                    methods: p.methods.iter().map(|m| m.as_str().into()).collect(),
                    default: p.default,
                    backends,
                    live,
                    uniform,
                }
            })
            .collect();
        let invite = routes.iter().find(|(m, _)| **m == *INVITE.as_bytes()).map(|&(_, i)| i).or(default);
        routes.retain(|(m, _)| !FOLLOW_INVITE.iter().any(|f| **m == *f.as_bytes()));
        if let Some(i) = invite.filter(|&i| Some(i) != default) {
            routes.extend(FOLLOW_INVITE.iter().map(|f| (f.as_bytes().into(), i)));
        }
        Router { pools, routes: routes.into(), default }
    }

    /// [`Router::build`] with every backend eligible.
    pub fn build_all(pools: &[PoolSpec]) -> Router {
        Router::build(pools, |_| true)
    }

    /// The backend for a request: the pool of `method` (exact bytes, as on
    /// the request line), then the rendezvous winner for `call_id_hash`
    /// ([`sip_lb_common::call_id_hash`]). `None` if the method has no pool
    /// or every backend of its pool is ineligible.
    #[inline]
    pub fn choose(&self, method: &[u8], call_id_hash: u64) -> Option<SocketAddr> {
        self.pool_for(method)?.choose(call_id_hash)
    }

    /// The pool `method` goes to: the pool listing it, else the default
    /// pool; for [`FOLLOW_INVITE`] methods, INVITE's pool.
    #[inline]
    pub fn pool_for(&self, method: &[u8]) -> Option<&Pool> {
        let i = match self.routes.iter().find(|(m, _)| **m == *method) {
            Some(&(_, i)) => i,
            None => self.default?,
        };
        self.pools.get(i)
    }

    /// All pools, in configuration order.
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| &*p.name == name)
    }

    /// The pool for methods no pool lists.
    pub fn default_pool(&self) -> Option<&Pool> {
        self.pools.get(self.default?)
    }

    /// Every backend of every pool with its pool, for metrics.
    pub fn backends(&self) -> impl Iterator<Item = (&Pool, &Backend)> + '_ {
        self.pools.iter().flat_map(|p| p.backends.iter().map(move |b| (p, b)))
    }
}

impl Pool {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Methods routed here by name (the default pool also takes the rest).
    pub fn methods(&self) -> impl Iterator<Item = &str> + '_ {
        self.methods.iter().map(|m| &**m)
    }

    pub fn is_default(&self) -> bool {
        self.default
    }

    /// All backends, eligible or not, in configuration order.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// How many backends receive traffic.
    pub fn eligible_count(&self) -> usize {
        self.live.len()
    }

    /// The rendezvous winner among eligible backends: the lowest
    /// `-ln(u)/weight`, i.e. the highest `-weight/ln(u)`. O(backends), no
    /// allocation. Exact score ties (probability ~2^-52) go to the larger seed.
    #[inline]
    pub fn choose(&self, call_id_hash: u64) -> Option<SocketAddr> {
        let (first, rest) = self.live.split_first()?;
        let mut best = first;
        if self.uniform {
            // Equal weights: -ln(u)/w is decreasing in the mixed value, so
            // the largest mixed value wins; same winner as the weighted path.
            let mut best_x = mix(call_id_hash, first.seed);
            for s in rest {
                let x = mix(call_id_hash, s.seed);
                if x > best_x || (x == best_x && s.seed > best.seed) {
                    best = s;
                    best_x = x;
                }
            }
        } else {
            let mut best_k = exp_draw(mix(call_id_hash, first.seed)) * first.inv_weight;
            for s in rest {
                let k = exp_draw(mix(call_id_hash, s.seed)) * s.inv_weight;
                if k < best_k || (k == best_k && s.seed > best.seed) {
                    best = s;
                    best_k = k;
                }
            }
        }
        Some(best.addr)
    }
}

impl Backend {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// False if the Router was built with this backend down or draining.
    pub fn is_eligible(&self) -> bool {
        self.eligible
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("pools", &self.pools)
            .field("default", &self.default_pool().map(Pool::name))
            .finish()
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("methods", &self.methods)
            .field("default", &self.default)
            .field("backends", &self.backends)
            .finish()
    }
}

/// The data plane's view: [`Router::choose`].
impl crate::proxy::Chooser for Router {
    #[inline]
    fn choose(&self, method: &[u8], call_id_hash: u64) -> Option<SocketAddr> {
        Router::choose(self, method, call_id_hash)
    }
}
