//! Runtime bans: prefixes the operator blocked (`sip-lb block`) and sources
//! the workers reported (a scanner's request), each until it expires or is
//! lifted. Pure: the time is passed in. The control plane keeps them across
//! reloads and publishes the set to the workers' shield and the XDP tries
//! when it changes. Each ban holds a hit slot while it lasts, where the
//! workers and the XDP program count the datagrams they drop for it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
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
    /// Stayed over its rate limit for `ban_after_over_rate_seconds`.
    Rate,
    /// Got `ban_after_failures` final 4xx from the farm within a minute.
    Failures,
}

/// When reported sources are banned, and for how long (`[shield]`).
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub ban: Duration,
    /// `None`: never for being over the rate.
    pub over_rate_for: Option<Duration>,
    /// `None`: never for failures.
    pub failures: Option<u32>,
}

impl From<&crate::config::ShieldConfig> for Rules {
    fn from(s: &crate::config::ShieldConfig) -> Rules {
        Rules {
            ban: Duration::from_secs(s.ban_seconds),
            over_rate_for: (s.ban_after_over_rate_seconds > 0)
                .then(|| Duration::from_secs(s.ban_after_over_rate_seconds)),
            failures: (s.ban_after_failures > 0).then_some(s.ban_after_failures),
        }
    }
}

/// A gap longer than this ends an over-rate spell.
const OVER_RATE_GAP: Duration = Duration::from_secs(1);
/// Failures are counted over this window.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Sources followed for the rate and failure rules; beyond, the oldest
/// records are forgotten (a spoofed flood must not grow memory).
const TRACKED: usize = 65_536;

#[derive(Clone, Copy, Debug)]
struct Ban {
    reason: BanReason,
    since: Instant,
    /// `None`: until lifted.
    until: Option<Instant>,
    /// Where its drops are counted (`SHIELD_HITS`, `BanHits`).
    slot: u32,
}

/// One ban as `GET /bans` and `sip-lb bans` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BanView {
    pub prefix: String,
    pub reason: BanReason,
    pub age_s: f64,
    /// Seconds left; `None` until lifted.
    pub expires_in_s: Option<f64>,
    /// Datagrams dropped for it since it began (XDP and workers).
    #[serde(default)]
    pub packets: u64,
}

#[derive(Debug, Default)]
pub struct Bans {
    by_prefix: BTreeMap<Prefix, Ban>,
    /// Over-rate spells: (first, last) report.
    over_rate: HashMap<IpAddr, (Instant, Instant)>,
    /// Failures in the current window: (window start, count).
    failures: HashMap<IpAddr, (Instant, u32)>,
    /// Hit slots given back by lifted or expired bans.
    free: Vec<u32>,
    /// The next never-used slot (slot 0 is the config's block list).
    next: u32,
    /// Slots handed out since [`Bans::take_fresh`]: their counts start at 0.
    fresh: Vec<u32>,
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
                let slot = self.slot();
                self.by_prefix.insert(prefix, Ban { reason, since: now, until, slot });
                true
            }
        }
    }

    /// A worker's report about `src`; the reason if it is banned now.
    pub fn offence(
        &mut self,
        src: IpAddr,
        what: crate::dataplane::Offence,
        rules: &Rules,
        now: Instant,
    ) -> Option<BanReason> {
        use crate::dataplane::Offence;
        let reason = match what {
            Offence::Scanner => Some(BanReason::Scanner),
            Offence::OverRate => {
                let sustain = rules.over_rate_for?;
                forget_if_full(&mut self.over_rate);
                let spell = self.over_rate.entry(src).or_insert((now, now));
                if now.saturating_duration_since(spell.1) > OVER_RATE_GAP {
                    *spell = (now, now);
                }
                spell.1 = now;
                (now.saturating_duration_since(spell.0) >= sustain).then_some(BanReason::Rate)
            }
            Offence::Failure => {
                let limit = rules.failures?;
                forget_if_full(&mut self.failures);
                let w = self.failures.entry(src).or_insert((now, 0));
                if now.saturating_duration_since(w.0) > FAILURE_WINDOW {
                    *w = (now, 0);
                }
                w.1 += 1;
                (w.1 >= limit).then_some(BanReason::Failures)
            }
        }?;
        self.over_rate.remove(&src);
        self.failures.remove(&src);
        let prefix = Prefix::new(src, if src.is_ipv4() { 32 } else { 128 })?;
        self.add(prefix, reason, Some(rules.ban), now).then_some(reason)
    }

    /// A free hit slot; past the last one, slot 0 (the ban's drops are then
    /// counted with the config's blocks, not on their own).
    fn slot(&mut self) -> u32 {
        let s = match self.free.pop() {
            Some(s) => s,
            None if self.next + 1 < sip_lb_common::maps::SHIELD_HIT_SLOTS => {
                self.next += 1;
                self.next
            }
            None => return 0,
        };
        self.fresh.push(s);
        s
    }

    fn release(&mut self, b: &Ban) {
        if b.slot != 0 {
            self.free.push(b.slot);
        }
    }

    /// The slots handed out since the last call: their counters must be
    /// zeroed before the bans are published.
    pub fn take_fresh(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.fresh)
    }

    /// Lifts the ban of exactly `prefix`; true if there was one.
    pub fn remove(&mut self, prefix: &Prefix) -> bool {
        let Some(b) = self.by_prefix.remove(prefix) else { return false };
        self.release(&b);
        true
    }

    /// Drops the bans that ended by `now`; true if any did.
    pub fn expire(&mut self, now: Instant) -> bool {
        let ended: Vec<Prefix> =
            self.by_prefix.iter().filter(|(_, b)| b.until.is_some_and(|u| u <= now)).map(|(p, _)| *p).collect();
        for p in &ended {
            self.remove(p);
        }
        !ended.is_empty()
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

    /// Each banned prefix with its hit slot (for the XDP tries and the
    /// workers' `BanSet`).
    pub fn entries(&self) -> Vec<(Prefix, u32)> {
        self.by_prefix.iter().map(|(p, b)| (*p, b.slot)).collect()
    }

    /// The bans as listed; `packets(slot)` is what was dropped for a slot.
    pub fn list(&self, now: Instant, packets: impl Fn(u32) -> u64) -> Vec<BanView> {
        self.by_prefix
            .iter()
            .map(|(p, b)| BanView {
                prefix: p.to_string(),
                reason: b.reason,
                age_s: now.saturating_duration_since(b.since).as_secs_f64(),
                expires_in_s: b.until.map(|u| u.saturating_duration_since(now).as_secs_f64()),
                packets: if b.slot == 0 { 0 } else { packets(b.slot) },
            })
            .collect()
    }
}

fn forget_if_full<V>(m: &mut HashMap<IpAddr, V>) {
    if m.len() >= TRACKED {
        m.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::Offence;

    #[test]
    fn sustained_over_rate_and_repeated_failures_are_banned() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_millis(n);
        let rules =
            Rules { ban: Duration::from_secs(60), over_rate_for: Some(Duration::from_secs(2)), failures: Some(3) };
        let mut b = Bans::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        // Over the rate every 100 ms: banned once the spell lasts 2 s.
        for ms in (0..2000).step_by(100) {
            assert_eq!(b.offence(a, Offence::OverRate, &rules, s(ms)), None, "{ms} ms");
        }
        assert_eq!(b.offence(a, Offence::OverRate, &rules, s(2000)), Some(BanReason::Rate));
        // A gap over a second starts the spell again.
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(b.offence(c, Offence::OverRate, &rules, s(0)), None);
        assert_eq!(b.offence(c, Offence::OverRate, &rules, s(1500)), None);
        assert_eq!(b.offence(c, Offence::OverRate, &rules, s(3400)), None);
        assert_eq!(b.offence(c, Offence::OverRate, &rules, s(3500)), None, "spell restarted at 1.5 s");
        // Failures: the third within a minute bans; an old one does not count.
        let f: IpAddr = "2001:db8::9".parse().unwrap();
        assert_eq!(b.offence(f, Offence::Failure, &rules, s(0)), None);
        assert_eq!(b.offence(f, Offence::Failure, &rules, s(61_000)), None, "window restarted");
        assert_eq!(b.offence(f, Offence::Failure, &rules, s(62_000)), None);
        assert_eq!(b.offence(f, Offence::Failure, &rules, s(63_000)), Some(BanReason::Failures));
        assert!(b.set().contains(f) && b.set().contains(a) && !b.set().contains(c));
        // Rules off: only scanners are banned.
        let off = Rules { over_rate_for: None, failures: None, ..rules };
        let d: IpAddr = "198.51.100.4".parse().unwrap();
        for ms in 0..100 {
            assert_eq!(b.offence(d, Offence::OverRate, &off, s(ms * 100)), None);
            assert_eq!(b.offence(d, Offence::Failure, &off, s(ms * 100)), None);
        }
        assert_eq!(b.offence(d, Offence::Scanner, &off, s(0)), Some(BanReason::Scanner));
    }

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
        let v = b.list(t0 + Duration::from_secs(4), |slot| u64::from(slot) * 10);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].prefix, "192.0.2.7/32");
        assert_eq!(v[0].reason, BanReason::Scanner);
        assert_eq!(v[0].expires_in_s, Some(6.0));
        assert_eq!(v[1].expires_in_s, None);
        assert_eq!((v[0].packets, v[1].packets), (10, 20), "each ban its own slot");
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
        assert_eq!(b.list(t0, |_| 0)[0].reason, BanReason::Operator);
    }

    #[test]
    fn slots_are_reused_and_handed_out_fresh() {
        let t0 = Instant::now();
        let mut b = Bans::default();
        b.add(p("192.0.2.1"), BanReason::Operator, None, t0);
        b.add(p("192.0.2.2"), BanReason::Operator, Some(Duration::from_secs(1)), t0);
        assert_eq!(b.take_fresh(), vec![1, 2]);
        assert!(b.expire(t0 + Duration::from_secs(1)));
        b.add(p("192.0.2.3"), BanReason::Operator, None, t0);
        assert_eq!(b.take_fresh(), vec![2], "the expired ban's slot, to be zeroed");
        assert_eq!(b.entries(), vec![(p("192.0.2.1"), 1), (p("192.0.2.3"), 2)]);
    }
}
