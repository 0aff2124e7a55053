//! One I/O loop per RX queue: keeps the fill ring full, reads the RX ring
//! in batches and hands each frame to the worker owning its Call-ID (from
//! the XDP program's metadata) over that worker's bounded queue. The frame
//! itself is not copied: the token for its UMEM chunk moves. TX and
//! completions are the workers' business (`Queue::transmit`/`flush`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam::channel::{Sender, TrySendError};
use sip_lb_afxdp::{Queue, RxFrame};

use super::stats::IoStats;

/// Frames read per RX ring visit.
const BATCH: u32 = 64;
/// Idle wait in poll(2) before re-checking `stop`.
const IDLE_MS: i32 = 50;

/// A received frame on its way to its owner.
pub struct Job {
    /// Index of the queue (== RX queue id) the frame belongs to.
    pub queue: usize,
    pub frame: RxFrame,
}

pub struct IoLoop {
    pub queue: Arc<Queue>,
    pub index: usize,
    pub workers: Vec<Sender<Job>>,
    pub stats: Arc<IoStats>,
    pub stop: Arc<AtomicBool>,
}

impl IoLoop {
    pub fn run(self) {
        let mut frames = Vec::with_capacity(BATCH as usize);
        while !self.stop.load(Ordering::Relaxed) {
            if self.queue.recv(&mut frames, BATCH) == 0 {
                self.queue.wait(IDLE_MS);
                continue;
            }
            for frame in frames.drain(..) {
                let worker = match self.queue.meta(&frame) {
                    Some(m) => m.worker as usize % self.workers.len(),
                    None => {
                        self.stats.no_meta.add(1);
                        0
                    }
                };
                match self.workers[worker].try_send(Job { queue: self.index, frame }) {
                    Ok(()) => self.stats.handed_off.add(1),
                    Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                        self.stats.handoff_full.add(1);
                        self.queue.release(job.frame);
                    }
                }
            }
        }
    }
}
