//! Per-worker counters. Each worker is the only writer of its own block, so
//! it publishes with plain relaxed load+store (no locked instructions on the
//! hot path); readers (metrics, shutdown summary) may see a batch late.
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam::utils::CachePadded;

use sip_lb_proto::proxy::{DropReason, Forwarded, ReplyCode};
use sip_lb_proto::shield::ShieldDrop;

/// Per-backend counter slots in each worker. Slots are handed out by the
/// control plane and published in the `Plan` as a [`BackendSlots`] table;
/// backends beyond this many are forwarded to but not counted.
pub const MAX_BACKENDS: usize = 256;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn zero() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Single-writer increment.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

pub struct Counters {
    pub rx_datagrams: Counter,
    pub rx_bytes: Counter,
    pub tx_datagrams: Counter,
    pub tx_bytes: Counter,
    pub tx_errors: Counter,
    pub requests_forwarded: Counter,
    pub responses_forwarded: Counter,
    /// Stateless replies sent, by [`ReplyCode::index`].
    pub replies: [Counter; ReplyCode::ALL.len()],
    pub drops: [Counter; DropReason::ALL.len()],
    /// Datagrams (and stateless replies) the shield dropped, by
    /// [`ShieldDrop::index`].
    pub shield_drops: [Counter; ShieldDrop::ALL.len()],
    /// Requests forwarded to each backend, by slot ([`BackendSlots`]).
    pub backend_requests: [Counter; MAX_BACKENDS],
    /// Responses relayed from each backend (the response's source address).
    pub backend_responses: [Counter; MAX_BACKENDS],
    /// STUN requests handled (answered, or not answerable); an answer the
    /// reply limit held back counts as a shield drop instead.
    pub stun: Counter,
    /// Flow (TCP/TLS) messages the relay could not queue on their connection.
    pub relay_dropped: Counter,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rx_datagrams: Counter::zero(),
            rx_bytes: Counter::zero(),
            tx_datagrams: Counter::zero(),
            tx_bytes: Counter::zero(),
            tx_errors: Counter::zero(),
            requests_forwarded: Counter::zero(),
            responses_forwarded: Counter::zero(),
            replies: [const { Counter::zero() }; ReplyCode::ALL.len()],
            drops: [const { Counter::zero() }; DropReason::ALL.len()],
            shield_drops: [const { Counter::zero() }; ShieldDrop::ALL.len()],
            backend_requests: [const { Counter::zero() }; MAX_BACKENDS],
            backend_responses: [const { Counter::zero() }; MAX_BACKENDS],
            stun: Counter::zero(),
            relay_dropped: Counter::zero(),
        }
    }
}

/// STUN Binding requests by outcome (`sip_lb_proto::stun::Outcome`); all
/// workers write them (`fetch_add`), and only with `stun = true`.
#[derive(Default, Debug)]
pub struct StunStats {
    pub answered: AtomicU64,
    pub would_amplify: AtomicU64,
    pub malformed: AtomicU64,
}

impl StunStats {
    pub fn count(&self, o: sip_lb_proto::stun::Outcome) {
        use sip_lb_proto::stun::Outcome;
        let c = match o {
            Outcome::Answered => &self.answered,
            Outcome::WouldAmplify => &self.would_amplify,
            Outcome::Malformed => &self.malformed,
        };
        c.fetch_add(1, Relaxed);
    }
}

/// Backend address -> counter slot, sorted by address for a branch-light
/// binary search on the hot path. Built by the control plane, which keeps a
/// backend's slot across reloads so its counters stay monotonic.
#[derive(Clone, Debug, Default)]
pub struct BackendSlots {
    table: Box<[(SocketAddr, u16)]>,
}

impl BackendSlots {
    /// From (address, slot) pairs; slots >= [`MAX_BACKENDS`] are left out.
    pub fn new(pairs: impl IntoIterator<Item = (SocketAddr, usize)>) -> BackendSlots {
        let mut table: Vec<(SocketAddr, u16)> =
            pairs.into_iter().filter(|&(_, s)| s < MAX_BACKENDS).map(|(a, s)| (a, s as u16)).collect();
        table.sort_unstable();
        table.dedup_by_key(|e| e.0);
        BackendSlots { table: table.into() }
    }

    /// The counter slot of `addr`, if it is a backend.
    #[inline]
    pub fn slot(&self, addr: SocketAddr) -> Option<usize> {
        self.table.binary_search_by(|(a, _)| a.cmp(&addr)).ok().map(|i| usize::from(self.table[i].1))
    }

    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, usize)> + '_ {
        self.table.iter().map(|&(a, s)| (a, usize::from(s)))
    }
}

pub type WorkerStats = CachePadded<Counters>;

impl Counters {
    pub fn replies_total(&self) -> u64 {
        self.replies.iter().map(Counter::get).sum()
    }

    pub fn drops_total(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }

    /// Counts a forwarded message: per worker and, by slot, per backend (a
    /// request's destination, a response's source).
    pub fn forwarded(&self, slots: &BackendSlots, what: Forwarded, to: SocketAddr, src: SocketAddr) {
        let (count, per_backend, backend) = match what {
            Forwarded::Request => (&self.requests_forwarded, &self.backend_requests, to),
            Forwarded::Response => (&self.responses_forwarded, &self.backend_responses, src),
        };
        count.add(1);
        if let Some(b) = slots.slot(backend) {
            per_backend[b].add(1);
        }
    }

    pub fn shield_drops_total(&self) -> u64 {
        self.shield_drops.iter().map(Counter::get).sum()
    }

    /// Received datagrams not (yet) counted as forwarded, replied, dropped
    /// (by the core, the shield or the relay) or handled as STUN: 0 at rest;
    /// while a batch is in flight, up to its size (the batch is counted as
    /// received first). Negative would mean a datagram counted twice.
    pub fn unaccounted(&self) -> i64 {
        let accounted = self.requests_forwarded.get()
            + self.responses_forwarded.get()
            + self.replies_total()
            + self.drops_total()
            + self.shield_drops_total()
            + self.stun.get()
            + self.relay_dropped.get();
        self.rx_datagrams.get() as i64 - accounted as i64
    }
}

/// One line per worker for logs and the shutdown summary:
/// `worker N: rx .. tx .. requests .. responses .. replies .. drops D shield S (reason=n, ...)`,
/// the reasons of both the core's drops and the shield's.
pub struct Summary<'a>(pub usize, pub &'a Counters);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.1;
        write!(
            f,
            "worker {}: rx {} tx {} requests {} responses {} replies {} drops {} shield {}",
            self.0,
            c.rx_datagrams.get(),
            c.tx_datagrams.get(),
            c.requests_forwarded.get(),
            c.responses_forwarded.get(),
            c.replies_total(),
            c.drops_total(),
            c.shield_drops_total(),
        )?;
        let drops = DropReason::ALL.iter().map(|r| (r.as_str(), c.drops[r.index()].get()));
        let shield = ShieldDrop::ALL.iter().map(|r| (r.name(), c.shield_drops[r.index()].get()));
        let mut first = true;
        for (name, n) in drops.chain(shield).filter(|(_, n)| *n > 0) {
            write!(f, "{}{name}={n}", if first { " (" } else { ", " })?;
            first = false;
        }
        if !first {
            write!(f, ")")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_slots_lookup() {
        let a: SocketAddr = "10.0.0.2:5060".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let c: SocketAddr = "[2001:db8::1]:5060".parse().unwrap();
        let t = BackendSlots::new([(a, 0), (b, 7), (c, 3), ("10.0.0.9:1".parse().unwrap(), MAX_BACKENDS)]);
        assert_eq!(t.slot(a), Some(0));
        assert_eq!(t.slot(b), Some(7));
        assert_eq!(t.slot(c), Some(3));
        assert_eq!(t.slot("10.0.0.1:5061".parse().unwrap()), None);
        assert_eq!(t.slot("10.0.0.9:1".parse().unwrap()), None);
        assert_eq!(t.iter().count(), 3);
    }
}
