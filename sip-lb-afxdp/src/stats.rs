//! Per-queue counters, written by the queue's I/O loop and (under the TX
//! lock) by the workers transmitting on it; read by metrics at any time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// What happened on one queue. The kernel's own view (drops for want of a
/// fill-ring entry, invalid descriptors) is [`crate::Queue::kernel_stats`].
#[derive(Default, Debug)]
pub struct QueueStats {
    /// Frames read from the RX ring.
    pub rx: Counter,
    /// Frames put on the TX ring.
    pub tx: Counter,
    /// TX descriptors the kernel reported complete.
    pub completed: Counter,
    /// Times the fill ring was found empty (the kernel had no chunk to
    /// receive into: it drops frames until refilled).
    pub fill_empty: Counter,
    /// Frames not sent because the TX ring was full.
    pub tx_full: Counter,
    /// Wake-ups (`sendto`) that failed for another reason than "busy".
    pub tx_kick_errors: Counter,
}

impl QueueStats {
    /// TX descriptors submitted and not yet completed.
    pub fn completion_lag(&self) -> u64 {
        self.tx.get().saturating_sub(self.completed.get())
    }
}
