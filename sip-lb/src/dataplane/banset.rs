//! The runtime bans as the workers see them, and the per-ban drop counts
//! they keep (`sip-lb bans` adds the XDP program's).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use sip_lb_common::maps::SHIELD_HIT_SLOTS;
use sip_lb_proto::shield::{Prefix, PrefixSet};

/// The banned prefixes and, aligned with `set.prefixes()`, each one's hit
/// slot. Published whole by the control plane (one atomic store).
#[derive(Clone, Debug, Default)]
pub struct BanSet {
    pub set: PrefixSet,
    slots: Vec<u32>,
}

impl BanSet {
    pub fn new(bans: &[(Prefix, u32)]) -> BanSet {
        let set = PrefixSet::new(bans.iter().map(|(p, _)| *p));
        // The set sorts its prefixes: look each one's slot up again
        // (O(n log n): thousands of bans are published every ban tick).
        let mut by_prefix = bans.to_vec();
        by_prefix.sort_unstable_by_key(|(p, _)| *p);
        let slot = |p: &Prefix| by_prefix.binary_search_by_key(p, |(q, _)| *q).map_or(0, |i| by_prefix[i].1);
        let slots = set.prefixes().iter().map(slot).collect();
        BanSet { set, slots }
    }

    /// The slot of the ban that covers `addr` (its longest match).
    pub fn slot_of(&self, addr: IpAddr) -> Option<u32> {
        let p = self.set.longest_match(addr)?;
        let i = self.set.prefixes().binary_search(&p).ok()?;
        self.slots.get(i).copied()
    }
}

/// Datagrams the workers dropped per ban, by hit slot (all workers add to
/// them: only banned datagrams pay for the shared line).
pub struct BanHits(Box<[AtomicU64]>);

impl Default for BanHits {
    fn default() -> Self {
        BanHits((0..SHIELD_HIT_SLOTS).map(|_| AtomicU64::new(0)).collect())
    }
}

impl BanHits {
    pub fn add(&self, slot: u32) {
        if let Some(c) = self.0.get(slot as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn get(&self, slot: u32) -> u64 {
        self.0.get(slot as usize).map_or(0, |c| c.load(Relaxed))
    }

    /// Zeroes `slot` before a new ban gets it.
    pub fn reset(&self, slot: u32) {
        if let Some(c) = self.0.get(slot as usize) {
            c.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_ban_counts() {
        let p = |s: &str| Prefix::parse(s).unwrap();
        let b = BanSet::new(&[(p("192.0.2.9"), 4), (p("192.0.2.0/24"), 3), (p("2001:db8::/32"), 9)]);
        assert_eq!(b.slot_of("192.0.2.9".parse().unwrap()), Some(4));
        assert_eq!(b.slot_of("192.0.2.10".parse().unwrap()), Some(3));
        assert_eq!(b.slot_of("2001:db8::1".parse().unwrap()), Some(9));
        assert_eq!(b.slot_of("198.51.100.1".parse().unwrap()), None);
    }
}
