//! Runtime bans: prefixes the operator blocked (`sip-lb block`) and sources
//! the workers reported (a scanner's request), each until it expires or is
//! lifted. Pure: the time is passed in. The control plane keeps them across
//! reloads and publishes the set to the workers' shield when it changes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sip_lb_proto::shield::{Prefix, PrefixSet};

/// Why a prefix is banned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BanReason {
    /// `sip-lb block` / `POST /bans/block`.
    Operator,
    /// Sent a request with a known scanner's User-Agent.
    Scanner,
}

#[derive(Clone, Copy, Debug)]
struct Ban {
    reason: BanReason,
    since: Instant,
    /// `None`: until lifted.
    until: Option<Instant>,
}

/// One ban as `GET /bans` and `sip-lb bans` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BanView {
    pub prefix: String,
    pub reason: BanReason,
    pub age_s: f64,
    /// Seconds left; `None` until lifted.
    pub expires_in_s: Option<f64>,
}

#[derive(Debug, Default)]
pub struct Bans {
    by_prefix: BTreeMap<Prefix, Ban>,
}

impl Bans {
    /// Bans `prefix` for `duration` (`None`: until lifted) from `now`. A ban
    /// already there is extended, never shortened, and keeps its reason
    /// unless the operator sets it. True if the published set changes.
    pub fn add(&mut self, prefix: Prefix, reason: BanReason, duration: Option<Duration>, now: Instant) -> bool {
        let until = duration.map(|d| now + d);
        match self.by_prefix.get_mut(&prefix) {
            Some(b) => {
                b.until = match (b.until, until) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                if reason == BanReason::Operator {
                    b.reason = reason;
                }
                false
            }
            None => {
                self.by_prefix.insert(prefix, Ban { reason, since: now, until });
                true
            }
        }
    }

    /// Lifts the ban of exactly `prefix`; true if there was one.
    pub fn remove(&mut self, prefix: &Prefix) -> bool {
        self.by_prefix.remove(prefix).is_some()
    }

    /// Drops the bans that ended by `now`; true if any did.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.by_prefix.len();
        self.by_prefix.retain(|_, b| b.until.is_none_or(|u| u > now));
        self.by_prefix.len() != before
    }

    pub fn len(&self) -> usize {
        self.by_prefix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }

    /// The prefixes, for the workers' shield.
    pub fn set(&self) -> PrefixSet {
        PrefixSet::new(self.by_prefix.keys().copied())
    }

    pub fn list(&self, now: Instant) -> Vec<BanView> {
        self.by_prefix
            .iter()
            .map(|(p, b)| BanView {
                prefix: p.to_string(),
                reason: b.reason,
                age_s: now.saturating_duration_since(b.since).as_secs_f64(),
                expires_in_s: b.until.map(|u| u.saturating_duration_since(now).as_secs_f64()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::parse(s).unwrap()
    }

    #[test]
    fn bans_expire_extend_and_lift() {
        let t0 = Instant::now();
        let mut b = Bans::default();
        assert!(b.add(p("192.0.2.7"), BanReason::Scanner, Some(Duration::from_secs(10)), t0));
        assert!(!b.add(p("192.0.2.7"), BanReason::Scanner, Some(Duration::from_secs(5)), t0), "already banned");
        assert!(b.add(p("198.51.100.0/24"), BanReason::Operator, None, t0));
        assert!(b.set().contains("198.51.100.9".parse().unwrap()));
        assert!(!b.expire(t0 + Duration::from_secs(9)), "the shorter re-ban did not shorten it");
        let v = b.list(t0 + Duration::from_secs(4));
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].prefix, "192.0.2.7/32");
        assert_eq!(v[0].reason, BanReason::Scanner);
        assert_eq!(v[0].expires_in_s, Some(6.0));
        assert_eq!(v[1].expires_in_s, None);
        assert!(b.expire(t0 + Duration::from_secs(10)));
        assert!(!b.set().contains("192.0.2.7".parse().unwrap()));
        // The operator's ban outlives everything until lifted.
        assert!(!b.expire(t0 + Duration::from_secs(1_000_000)));
        assert!(b.remove(&p("198.51.100.0/24")));
        assert!(!b.remove(&p("198.51.100.0/24")));
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn the_operator_takes_over_a_scanner_ban() {
        let t0 = Instant::now();
        let mut b = Bans::default();
        b.add(p("192.0.2.7"), BanReason::Scanner, Some(Duration::from_secs(10)), t0);
        b.add(p("192.0.2.7"), BanReason::Operator, None, t0);
        assert!(!b.expire(t0 + Duration::from_secs(60)));
        assert_eq!(b.list(t0)[0].reason, BanReason::Operator);
    }
}
