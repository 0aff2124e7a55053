//! The shield (issue 14): which sources may use the balancer at all, and how
//! fast. Pure like the rest of the core: the data plane hands in the source,
//! the datagram and the time, and gets back "pass" or the reason to drop.
//! The same lists and limits are meant for the XDP program, which drops
//! before the kernel pays; these functions are the fallback without XDP and
//! the reference its tests hold it to.
//!
//! Order of the checks, cheapest and most certain first: an allowed prefix
//! (backends, trusted peers) always passes and is never rate limited; a
//! blocked or banned prefix never does; a known scanner's request is
//! dropped (and the caller bans its source); then the per-source rate.
pub mod bucket;
pub mod new_sources;
pub mod prefix;
pub mod scanner;

use std::net::IpAddr;

pub use bucket::{Rate, RateTable, Take};
pub use new_sources::NewSources;
pub use prefix::{Prefix, PrefixSet};

/// What the operator configured (`[shield]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShieldPolicy {
    pub block: PrefixSet,
    /// Never blocked, never limited (the backends are added by the loader).
    pub allow: PrefixSet,
    /// Datagrams per source (requests and responses); `None`: unlimited.
    pub rate: Option<Rate>,
    /// Stateless replies (400, 416, 420, 483, 503, 513) per source, so that
    /// sip-lb cannot be used as a reflector; `None`: unlimited.
    pub reply_rate: Option<Rate>,
    /// Lower-case User-Agent fragments of known scanners.
    pub scanners: Vec<Box<[u8]>>,
    /// Sources not followed yet, admitted per second (per receiving CPU in
    /// XDP, per worker without it: [`NewSources`]); `None`: any number. A
    /// spoofed flood is all new sources: this holds it while the sources
    /// already followed (the callers in progress) go on. Only with `rate`
    /// (the per-source rate is what follows sources).
    pub new_sources: Option<Rate>,
}

/// Why the shield dropped a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShieldDrop {
    Blocked = 0,
    Scanner = 1,
    RateLimited = 2,
    ReplyLimited = 3,
    /// A runtime ban: `sip-lb block`, or an automatic one (a scanner).
    Banned = 4,
}

impl ShieldDrop {
    pub const ALL: [ShieldDrop; 5] =
        [Self::Blocked, Self::Scanner, Self::RateLimited, Self::ReplyLimited, Self::Banned];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::Scanner => "scanner",
            Self::RateLimited => "rate_limited",
            Self::ReplyLimited => "reply_limited",
            Self::Banned => "banned",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// A datagram the shield refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// For what its source is or did.
    Source(ShieldDrop),
    /// Its source is not followed yet and the new-source budget is spent.
    /// Counted as `rate_limited`, as the XDP stage counts it; it says
    /// nothing about the source (in a spoofed flood the address is made
    /// up), so it is no ground for a ban.
    NewSource,
}

impl Refusal {
    /// The counter the drop is counted under.
    pub const fn reason(self) -> ShieldDrop {
        match self {
            Refusal::Source(why) => why,
            Refusal::NewSource => ShieldDrop::RateLimited,
        }
    }
}

/// The per-source buckets, one set for all workers (lock-free).
pub struct Shield {
    sources: RateTable,
    replies: RateTable,
}

impl Shield {
    /// Follows up to `sources` sources at a time per table; `seed` keys the
    /// table hash (random per process, so a flood cannot aim at one slot).
    pub fn new(sources: usize, seed: u64) -> Shield {
        Shield { sources: RateTable::new(sources, seed), replies: RateTable::new(sources, seed.rotate_left(32) ^ 1) }
    }

    /// Whether a datagram from `src` may go on to the forwarding step;
    /// `bans` are the runtime bans (the control plane publishes them). No
    /// new-source budget applies (see [`check_new`](Self::check_new)).
    pub fn check(
        &self,
        p: &ShieldPolicy,
        bans: &PrefixSet,
        src: IpAddr,
        datagram: &[u8],
        now_ns: u64,
    ) -> Result<(), ShieldDrop> {
        self.check_new(p, bans, src, datagram, now_ns, None).map_err(Refusal::reason)
    }

    /// As [`check`](Self::check), and with `p.new_sources` set, a source
    /// not followed yet also spends one from `budget` (the receiving
    /// worker's) or is refused (`Refusal::NewSource`) without taking a slot.
    /// `None`: no budget here (an XDP stage in front applies it).
    pub fn check_new(
        &self,
        p: &ShieldPolicy,
        bans: &PrefixSet,
        src: IpAddr,
        datagram: &[u8],
        now_ns: u64,
        budget: Option<&mut NewSources>,
    ) -> Result<(), Refusal> {
        let drop = |why| Err(Refusal::Source(why));
        if p.allow.contains(src) {
            return Ok(());
        }
        if p.block.contains(src) {
            return drop(ShieldDrop::Blocked);
        }
        if bans.contains(src) {
            return drop(ShieldDrop::Banned);
        }
        // Responses start with "SIP/"; only requests carry a scanner's name.
        if !p.scanners.is_empty() && !datagram.starts_with(b"SIP/") {
            if let Some(ua) = scanner::user_agent(datagram) {
                if scanner::is_scanner(ua, &p.scanners) {
                    return drop(ShieldDrop::Scanner);
                }
            }
        }
        let Some(rate) = p.rate else { return Ok(()) };
        let take = match (p.new_sources, budget) {
            (Some(new), Some(b)) => self.sources.take_new(src, rate, now_ns, || b.admit(new, now_ns)),
            _ => self.sources.take(src, rate, now_ns),
        };
        match take {
            Take::Ok => Ok(()),
            Take::Over { .. } => drop(ShieldDrop::RateLimited),
            Take::NewRefused => Err(Refusal::NewSource),
        }
    }

    /// Whether a stateless reply may be sent to `src` now.
    pub fn may_reply(&self, p: &ShieldPolicy, src: IpAddr, now_ns: u64) -> bool {
        p.allow.contains(src) || p.reply_rate.is_none_or(|r| self.replies.take(src, r, now_ns) == Take::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\nUser-Agent: baresip\r\nCall-ID: a\r\n\r\n";
    const SCAN: &[u8] = b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nUser-Agent: friendly-scanner\r\n\r\n";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy() -> ShieldPolicy {
        let set = |l: &[&str]| PrefixSet::new(l.iter().map(|s| Prefix::parse(s).unwrap()));
        ShieldPolicy {
            block: set(&["203.0.113.0/24", "10.0.0.0/8"]),
            allow: set(&["10.1.0.0/16"]),
            rate: Some(Rate { per_sec: 10, burst: 3 }),
            reply_rate: Some(Rate { per_sec: 1, burst: 2 }),
            scanners: scanner::DEFAULT_SCANNERS.iter().map(|s| s.as_bytes().into()).collect(),
            new_sources: None,
        }
    }

    #[test]
    fn allow_then_block_then_scanner_then_rate() {
        let p = policy();
        let s = Shield::new(64, 3);
        let none = PrefixSet::default();
        let bans = PrefixSet::new([Prefix::parse("198.51.100.66").unwrap(), Prefix::parse("10.1.9.0/24").unwrap()]);
        assert_eq!(s.check(&p, &bans, ip("198.51.100.66"), INVITE, 0), Err(ShieldDrop::Banned));
        assert_eq!(s.check(&p, &bans, ip("10.1.9.1"), INVITE, 0), Ok(()), "allowed beats banned");
        assert_eq!(s.check(&p, &none, ip("203.0.113.9"), INVITE, 0), Err(ShieldDrop::Blocked));
        assert_eq!(s.check(&p, &none, ip("10.9.0.1"), INVITE, 0), Err(ShieldDrop::Blocked));
        // Allowed inside a blocked prefix, and never limited.
        for _ in 0..100 {
            assert_eq!(s.check(&p, &none, ip("10.1.2.3"), INVITE, 0), Ok(()));
            assert!(s.may_reply(&p, ip("10.1.2.3"), 0));
        }
        assert_eq!(s.check(&p, &none, ip("198.51.100.1"), SCAN, 0), Err(ShieldDrop::Scanner));
        // A response is not judged by User-Agent.
        let resp = b"SIP/2.0 200 OK\r\nUser-Agent: friendly-scanner\r\n\r\n";
        assert_eq!(s.check(&p, &none, ip("198.51.100.1"), resp, 0), Ok(()));
        let (a, t) = (ip("198.51.100.2"), 5_000_000_000);
        let passed = (0..10).filter(|_| s.check(&p, &none, a, INVITE, t).is_ok()).count();
        assert_eq!(passed, 3, "the burst");
        assert_eq!(s.check(&p, &none, a, INVITE, t + 100_000_000), Ok(()), "one more after 1/rate");
        let replies = (0..5).filter(|_| s.may_reply(&p, a, t)).count();
        assert_eq!(replies, 2, "reply burst");
    }

    #[test]
    fn new_sources_within_the_budget_and_followed_ones_unaffected() {
        let p = ShieldPolicy { new_sources: Some(Rate { per_sec: 10, burst: 2 }), ..policy() };
        let s = Shield::new(64, 11);
        let none = PrefixSet::default();
        let mut budget = NewSources::default();
        let t = 1_000_000_000;
        let check = |a: &str, t: u64, b: &mut NewSources| s.check_new(&p, &none, ip(a), INVITE, t, Some(b));
        // Two callers take the burst of two new sources and are followed.
        assert_eq!(check("198.51.100.1", t, &mut budget), Ok(()));
        assert_eq!(check("198.51.100.2", t, &mut budget), Ok(()));
        // A spoofed flood: every address new, the budget spent.
        for i in 0..100u32 {
            let a = IpAddr::V4((0xc612_0000 + i).into());
            assert_eq!(s.check_new(&p, &none, a, INVITE, t, Some(&mut budget)), Err(Refusal::NewSource));
        }
        assert_eq!(Refusal::NewSource.reason(), ShieldDrop::RateLimited);
        // The followed callers go on within their own rate (burst 3 each: one used).
        assert_eq!(check("198.51.100.1", t, &mut budget), Ok(()));
        assert_eq!(check("198.51.100.2", t, &mut budget), Ok(()));
        // A new caller waits for the budget: one per 100 ms.
        assert_eq!(check("198.51.100.3", t + 50_000_000, &mut budget), Err(Refusal::NewSource));
        assert_eq!(check("198.51.100.3", t + 100_000_000, &mut budget), Ok(()));
        // Allowed, blocked and over-rate verdicts come first and are not new-source refusals.
        assert_eq!(check("10.1.2.3", t, &mut budget), Ok(()));
        assert_eq!(check("203.0.113.1", t, &mut budget), Err(Refusal::Source(ShieldDrop::Blocked)));
        let over = (0..5).map(|_| check("198.51.100.1", t, &mut budget)).last();
        assert_eq!(over, Some(Err(Refusal::Source(ShieldDrop::RateLimited))));
        // Without a budget (an XDP stage in front), or without the setting, nothing is refused as new.
        let a = ip("192.0.2.200");
        assert_eq!(s.check_new(&p, &none, a, INVITE, t, None), Ok(()));
        let p = policy();
        assert_eq!(s.check_new(&p, &none, ip("192.0.2.201"), INVITE, t, Some(&mut NewSources::default())), Ok(()));
    }

    #[test]
    fn the_default_policy_lets_everything_through() {
        let p = ShieldPolicy::default();
        let s = Shield::new(16, 0);
        for i in 0..1000u32 {
            assert_eq!(s.check(&p, &PrefixSet::default(), IpAddr::V4(i.into()), SCAN, 0), Ok(()));
            assert!(s.may_reply(&p, IpAddr::V4(i.into()), 0));
        }
    }
}
