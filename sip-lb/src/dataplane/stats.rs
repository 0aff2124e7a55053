//! Per-worker counters. Each worker is the only writer of its own block, so
//! it publishes with plain relaxed load+store (no locked instructions on the
//! hot path); readers (metrics, shutdown summary) may see a batch late.
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam::utils::CachePadded;

use crate::proxy::DropReason;

/// Status codes a stateless proxy generates itself, counted one by one.
pub const REPLY_CODES: [u16; 5] = [400, 416, 420, 483, 503];

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Single-writer increment.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

#[derive(Default)]
pub struct Counters {
    pub rx_datagrams: Counter,
    pub rx_bytes: Counter,
    pub tx_datagrams: Counter,
    pub tx_bytes: Counter,
    pub tx_errors: Counter,
    pub requests_forwarded: Counter,
    pub responses_forwarded: Counter,
    /// Indexed like REPLY_CODES, plus one slot for any other code.
    pub replies: [Counter; REPLY_CODES.len() + 1],
    pub drops: [Counter; DropReason::ALL.len()],
}

pub type WorkerStats = CachePadded<Counters>;

impl Counters {
    #[inline]
    pub fn reply(&self, code: u16) {
        let i = REPLY_CODES.iter().position(|&c| c == code).unwrap_or(REPLY_CODES.len());
        self.replies[i].add(1);
    }

    pub fn replies_total(&self) -> u64 {
        self.replies.iter().map(Counter::get).sum()
    }

    pub fn drops_total(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }
}

/// One line per worker for logs and the shutdown summary.
pub struct Summary<'a>(pub usize, pub &'a Counters);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.1;
        write!(
            f,
            "worker {}: rx {} tx {} requests {} responses {} replies {} drops {}",
            self.0,
            c.rx_datagrams.get(),
            c.tx_datagrams.get(),
            c.requests_forwarded.get(),
            c.responses_forwarded.get(),
            c.replies_total(),
            c.drops_total(),
        )?;
        let mut first = true;
        for r in DropReason::ALL {
            let n = c.drops[r.index()].get();
            if n > 0 {
                write!(f, "{}{}={}", if first { " (" } else { ", " }, r.as_str(), n)?;
                first = false;
            }
        }
        if !first {
            write!(f, ")")?;
        }
        Ok(())
    }
}
