//! The budget of new sources (`new_sources_rate`): how many sources not
//! followed yet may be admitted per second. A spoofed flood is all new
//! sources, each within its own fresh bucket, so no per-source limit holds
//! it; this budget does, and a refused source never takes a slot of the
//! [`RateTable`](super::RateTable), so the flood does not evict the sources
//! already followed either (the callers and trunks in progress).
//!
//! One budget per receiving thread, as the XDP stage keeps one per CPU: it is
//! owned by its worker and updated with a plain load and store (no atomic,
//! no lock). The configured rate therefore holds per worker, as in XDP it
//! holds per receiving CPU.

use super::Rate;

/// GCRA over "any new source": one theoretical arrival time for all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewSources {
    tat: u64,
}

impl NewSources {
    /// Whether one more new source may be admitted at `now_ns` under `rate`
    /// (bursts of `rate.burst`, then one per `1/rate.per_sec`); counts it if so.
    pub fn admit(&mut self, rate: Rate, now_ns: u64) -> bool {
        let tat = self.tat.max(now_ns);
        if tat - now_ns > rate.tolerance_ns() {
            return false;
        }
        self.tat = tat + rate.interval_ns();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_burst_then_the_rate() {
        let rate = Rate { per_sec: 100, burst: 10 };
        let mut b = NewSources::default();
        let t0 = 5_000 * MS;
        assert_eq!((0..50).filter(|_| b.admit(rate, t0)).count(), 10, "the burst at once");
        assert!(!b.admit(rate, t0 + 5 * MS), "half an interval later, still nothing");
        assert!(b.admit(rate, t0 + 10 * MS), "one interval later, one more");
        // Over one second of a flood 1000 times the rate: the rate, no more.
        let start = t0 + 20 * MS;
        let admitted = (0..100_000u64).filter(|i| b.admit(rate, start + i * 10_000)).count();
        assert!((100..=101).contains(&admitted), "{admitted} admitted in one second at 100/s");
        // Quiet for a second: the whole burst again, not more.
        let later = start + 2_000 * MS;
        assert_eq!((0..50).filter(|_| b.admit(rate, later)).count(), 10);
    }
}
