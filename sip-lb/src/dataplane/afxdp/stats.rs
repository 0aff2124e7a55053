//! Counters of the AF_XDP data path that the queues (`sip_lb_afxdp::QueueStats`)
//! and the workers' `WorkerStats` do not hold: hand-off per queue, transmit
//! path per worker. Read by metrics, `top` and the shutdown summary.

use std::fmt;

use crossbeam::utils::CachePadded;

pub use super::super::stats::Counter;

/// Per RX queue, written by its I/O loop only.
#[derive(Default)]
pub struct IoCounters {
    /// Frames handled by the worker that read them (it owns their Call-ID).
    pub kept: Counter,
    /// Frames handed to their owning worker.
    pub handed_off: Counter,
    /// Frames dropped because the owner's hand-off queue was full.
    pub handoff_full: Counter,
    /// Frames without the XDP program's metadata (owner found in userspace).
    pub no_meta: Counter,
}

/// Per AF_XDP worker, written by that worker only.
#[derive(Default)]
pub struct XskWorkerCounters {
    /// Frames handled: read from its own RX queue or handed to it.
    pub rx: Counter,
    /// Frames sent through a queue's TX ring.
    pub tx: Counter,
    /// Datagrams sent through the socket path instead: no resolved neighbour.
    pub tx_socket_unresolved: Counter,
    /// ... or longer than the MTU (the kernel fragments them).
    pub tx_socket_too_long: Counter,
    /// ... or the TX ring was full.
    pub tx_socket_ring_full: Counter,
    /// Frames that did not parse as one UDP datagram to a listen address.
    pub not_ours: Counter,
}

pub type IoStats = CachePadded<IoCounters>;
pub type XskWorkerStats = CachePadded<XskWorkerCounters>;

/// One line per queue for the shutdown summary.
pub struct QueueSummary<'a>(pub u32, pub &'a sip_lb_afxdp::QueueStats, pub &'a IoCounters);

impl fmt::Display for QueueSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (q, io) = (self.1, self.2);
        write!(
            f,
            "afxdp queue {}: rx {} tx {} kept {} handed_off {} handoff_full {} no_meta {} fill_empty {} tx_full {} completion_lag {}",
            self.0,
            q.rx.get(),
            q.tx.get(),
            io.kept.get(),
            io.handed_off.get(),
            io.handoff_full.get(),
            io.no_meta.get(),
            q.fill_empty.get(),
            q.tx_full.get(),
            q.completion_lag(),
        )
    }
}

/// One line per AF_XDP worker for the shutdown summary.
pub struct XskWorkerSummary<'a>(pub usize, pub &'a XskWorkerCounters);

impl fmt::Display for XskWorkerSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.1;
        write!(
            f,
            "afxdp worker {}: rx {} tx {} tx_socket_unresolved {} tx_socket_too_long {} tx_socket_ring_full {} not_ours {}",
            self.0,
            c.rx.get(),
            c.tx.get(),
            c.tx_socket_unresolved.get(),
            c.tx_socket_too_long.get(),
            c.tx_socket_ring_full.get(),
            c.not_ours.get(),
        )
    }
}

/// A point-in-time read of the AF_XDP data path, for `/stats`, `/metrics`
/// and `sip-lb top` (part of the control plane's `Snapshot`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AfxdpSnapshot {
    pub queues: Vec<AfxdpQueueSnapshot>,
    pub workers: Vec<AfxdpWorkerSnapshot>,
    /// The XDP program (`sip_lb_xsk`), summed over CPUs: frames seen.
    pub seen: u64,
    /// ... redirected into an AF_XDP socket.
    pub redirected: u64,
    /// ... passed to the kernel, by reason (every reason listed).
    pub passed: Vec<(String, u64)>,
    /// ... dropped by the shield's XDP stage (block list).
    #[serde(default)]
    pub shield_blocked: u64,
    /// ... dropped by the shield's XDP stage (over the source's rate).
    #[serde(default)]
    pub shield_rate_limited: u64,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AfxdpQueueSnapshot {
    pub queue: u32,
    pub rx: u64,
    pub tx: u64,
    /// Handled by the worker that read them (no hand-off).
    #[serde(default)]
    pub kept: u64,
    pub handed_off: u64,
    pub handoff_full: u64,
    pub no_meta: u64,
    pub fill_ring_empty: u64,
    pub tx_ring_full: u64,
    pub completion_lag: u64,
    /// The kernel's count of frames dropped on this socket (`XDP_STATISTICS`:
    /// RX ring full or no fill-ring entry).
    pub kernel_rx_dropped: u64,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AfxdpWorkerSnapshot {
    pub worker: usize,
    pub rx: u64,
    pub tx: u64,
    /// Sent through the socket path instead, by reason: `unresolved`,
    /// `too_long`, `tx_ring_full`.
    pub tx_socket: Vec<(String, u64)>,
    pub not_ours: u64,
}
