//! Per-source rate limits in a table of fixed size, shared by the workers: a
//! spoofed flood from millions of addresses recycles slots instead of growing
//! memory.
//!
//! Each slot runs GCRA (the generic cell rate algorithm, a token bucket kept
//! as one "theoretical arrival time"): a source may send `burst` datagrams at
//! once and then one every `1/rate` seconds. Slots are found by a keyed hash
//! (the seed comes from the control plane, so a flood cannot aim at one
//! bucket) in groups of [`WAYS`]; a new source takes a free slot of its group
//! or the one whose source has been quiet longest.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Slots probed per source.
pub const WAYS: usize = 4;

/// A rate limit: `per_sec` datagrams per second, bursts of `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

impl Rate {
    /// Nanoseconds between datagrams at the sustained rate.
    pub fn interval_ns(self) -> u64 {
        1_000_000_000 / u64::from(self.per_sec.max(1))
    }

    /// How far ahead of now a source's allowance may run: `burst - 1` intervals.
    pub fn tolerance_ns(self) -> u64 {
        self.interval_ns() * u64::from(self.burst.max(1) - 1)
    }
}

/// One source's bucket. `key` is the source's keyed 64-bit hash (never 0;
/// 0 marks a free slot), `tat` GCRA's theoretical arrival time of the
/// source's next datagram.
#[derive(Default)]
struct Slot {
    key: AtomicU64,
    tat: AtomicU64,
}

/// Token buckets for up to `capacity` sources at a time, shared by every
/// worker: a source's datagrams reach several workers (Call-ID steering), and
/// its limit is one limit. Lock-free: a compare-and-swap per datagram.
pub struct RateTable {
    slots: Box<[Slot]>,
    groups: usize,
    seed: u64,
}

/// Outcome of [`RateTable::take`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// Within the rate.
    Ok,
    /// Over it: drop. `behind_ns` is how far the source is ahead of its
    /// allowance (how long it would have to stay quiet to be within it).
    Over { behind_ns: u64 },
    /// Not followed yet, and the new-source budget refused it: drop, without
    /// a slot taken (see [`RateTable::take_new`]).
    NewRefused,
}

impl RateTable {
    /// A table for `capacity` sources (rounded up to a power of two, at least
    /// one group) with hash seed `seed`. Memory: 16 bytes per source.
    pub fn new(capacity: usize, seed: u64) -> RateTable {
        let slots = capacity.max(WAYS).next_power_of_two();
        RateTable { slots: (0..slots).map(|_| Slot::default()).collect(), groups: slots / WAYS, seed }
    }

    /// Sources the table can follow at once.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Counts one datagram from `src` at `now_ns` against `rate`.
    pub fn take(&self, src: IpAddr, rate: Rate, now_ns: u64) -> Take {
        self.take_new(src, rate, now_ns, || true)
    }

    /// As [`take`](Self::take), but a source the table does not follow yet
    /// is admitted only if `admit_new` says so (the new-source budget); if
    /// not, the result is [`Take::NewRefused`] and no slot is taken, so a
    /// refused flood evicts nobody.
    pub fn take_new(&self, src: IpAddr, rate: Rate, now_ns: u64, admit_new: impl FnOnce() -> bool) -> Take {
        let (addr, family) = key(src);
        let key = xxh3_64_with_seed(&addr.to_le_bytes(), self.seed ^ u64::from(family)) | 1;
        let g = (key >> 1) as usize & (self.groups - 1);
        let group = &self.slots[g * WAYS..(g + 1) * WAYS];
        let slot = match group.iter().find(|s| s.key.load(Relaxed) == key) {
            Some(s) => s,
            None if !admit_new() => return Take::NewRefused,
            None => {
                // A free slot, else the one whose source is furthest behind
                // (quiet longest; an over-limit source's time runs ahead of
                // the clock, so it is the last to go). Two workers claiming
                // one slot at once share it for a moment: a limit may be
                // loose by a datagram, never tighter than configured.
                let victim = group
                    .iter()
                    .min_by_key(|s| if s.key.load(Relaxed) == 0 { 0 } else { s.tat.load(Relaxed).max(1) })
                    .unwrap_or(&group[0]);
                victim.tat.store(now_ns, Relaxed);
                victim.key.store(key, Relaxed);
                victim
            }
        };
        let interval = rate.interval_ns();
        let tolerance = rate.tolerance_ns();
        let mut seen = slot.tat.load(Relaxed);
        loop {
            let tat = seen.max(now_ns);
            let ahead = tat - now_ns;
            if ahead > tolerance {
                return Take::Over { behind_ns: ahead - tolerance };
            }
            match slot.tat.compare_exchange_weak(seen, tat + interval, Relaxed, Relaxed) {
                Ok(_) => return Take::Ok,
                Err(now_seen) => seen = now_seen,
            }
        }
    }
}

/// IPv4-mapped IPv6 sources count as their IPv4 address.
fn key(src: IpAddr) -> (u128, u8) {
    match src {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 1),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => (u128::from(u32::from(v4)), 1),
            None => (u128::from(a), 2),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let t = RateTable::new(64, 7);
        let rate = Rate { per_sec: 100, burst: 5 };
        let a = ip("192.0.2.1");
        let t0 = 1_000 * MS;
        let ok = (0..20).filter(|_| t.take(a, rate, t0) == Take::Ok).count();
        assert_eq!(ok, 5, "the burst, all at once");
        // 10 ms later, one more interval has passed: one more datagram.
        assert_eq!(t.take(a, rate, t0 + 10 * MS), Take::Ok);
        assert!(matches!(t.take(a, rate, t0 + 10 * MS), Take::Over { .. }));
        // Over a second at exactly the rate, every datagram passes.
        let start = t0 + 100 * MS;
        let passed = (0..100).filter(|i| t.take(a, rate, start + i * 10 * MS) == Take::Ok).count();
        assert_eq!(passed, 100);
        // Another source has its own bucket.
        assert_eq!(t.take(ip("192.0.2.2"), rate, t0), Take::Ok);
        // The IPv4-mapped form is the same source.
        let mapped = ip("::ffff:192.0.2.1");
        let over = (0..10).filter(|_| t.take(mapped, rate, start + 1000 * MS) != Take::Ok).count();
        assert_eq!(over, 5);
    }

    #[test]
    fn a_spoofed_flood_does_not_grow_the_table_and_a_steady_source_keeps_its_bucket() {
        let t = RateTable::new(1024, 99);
        let cap = t.capacity();
        let rate = Rate { per_sec: 50, burst: 10 };
        let loud = ip("198.51.100.7");
        let mut limited = 0;
        for i in 0..200_000u32 {
            let now = u64::from(i) * 1_000; // 1 µs apart: 1M datagrams/s
                                            // A million spoofed sources, each seen once: all within their
                                            // (fresh) bucket.
            let spoofed = IpAddr::V4((0x0a00_0000 | i).into());
            assert_eq!(t.take(spoofed, rate, now), Take::Ok);
            // One real source at 1000/s, far over 50/s.
            if i % 1000 == 0 && t.take(loud, rate, now) != Take::Ok {
                limited += 1;
            }
        }
        assert_eq!(t.capacity(), cap, "fixed size");
        // 200 datagrams in 0.2 s against 50/s with bursts of 10: 20 pass.
        // An over-limit source's arrival time runs ahead of the clock, so the
        // flood's once-seen sources are evicted before it and it keeps its
        // bucket (an eviction would hand it a fresh burst of 10).
        assert!((175..=181).contains(&limited), "loud source limited {limited} of 200 times");
    }

    #[test]
    fn a_refused_new_source_takes_no_slot_and_evicts_nobody() {
        // One group of four: any new source would evict a followed one.
        let t = RateTable::new(WAYS, 3);
        let rate = Rate { per_sec: 10, burst: 2 };
        let followed: Vec<IpAddr> = (1..=4).map(|i| IpAddr::V4((0xc000_0200 + i).into())).collect();
        for &a in &followed {
            assert_eq!(t.take_new(a, rate, 0, || true), Take::Ok);
        }
        for i in 0..10_000u32 {
            let spoofed = IpAddr::V4((0x0a00_0000 | i).into());
            assert_eq!(t.take_new(spoofed, rate, 0, || false), Take::NewRefused);
        }
        // Each followed source still has the second datagram of its burst,
        // and the budget is not asked about it.
        for &a in &followed {
            assert_eq!(t.take_new(a, rate, 0, || panic!("a followed source is not new")), Take::Ok);
        }
    }

    #[test]
    fn workers_sharing_the_table_share_each_limit() {
        let t = std::sync::Arc::new(RateTable::new(64, 5));
        let rate = Rate { per_sec: 1, burst: 100 };
        let a = ip("192.0.2.9");
        let passed: usize = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || (0..1000).filter(|_| t.take(a, rate, 0) == Take::Ok).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(passed, 100, "4 threads x 1000 datagrams at one instant: exactly the burst");
    }

    #[test]
    fn sources_hash_over_every_group() {
        let t = RateTable::new(256, 1);
        let rate = Rate { per_sec: 1, burst: 1 };
        for i in 0..256u32 {
            t.take(IpAddr::V4((0xc000_0200 + i).into()), rate, 0);
        }
        let used = t.slots.iter().filter(|s| s.key.load(Relaxed) != 0).count();
        assert!(used > 140, "only {used} of 256 slots used by 256 sources");
    }
}
