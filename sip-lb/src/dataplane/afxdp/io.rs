//! Reading an RX queue: keep its fill ring full, read its RX ring in
//! batches and route each frame to the worker owning its Call-ID (from the
//! XDP program's metadata). A frame for the reading thread's own worker
//! stays with it (run to completion); one for another worker is handed over
//! that worker's bounded queue and its doorbell rung once per batch. The
//! frame itself is not copied: the token for its UMEM chunk moves. TX and
//! completions are the workers' business (`Queue::transmit`/`flush`).
//!
//! Worker w reads RX queue w itself; a queue beyond the workers gets an
//! [`IoLoop`] of its own that only routes.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam::channel::{Sender, TrySendError};
use sip_lb_afxdp::{Queue, RxFrame};

use super::doorbell::Doorbell;
use super::stats::IoStats;

/// Frames read per RX ring visit.
pub const BATCH: u32 = 64;
/// Idle wait in poll(2) before re-checking `stop`.
pub const IDLE_MS: i32 = 50;

/// A received frame on its way to its owner.
pub struct Job {
    /// Index of the queue (== RX queue id) the frame belongs to.
    pub queue: usize,
    pub frame: RxFrame,
}

/// The way to a worker: its queue of frames and its doorbell.
#[derive(Clone)]
pub struct Handoff {
    pub jobs: Sender<Job>,
    pub bell: Arc<Doorbell>,
}

/// One RX queue as a reader sees it.
pub struct RxQueue {
    pub queue: Arc<Queue>,
    pub index: usize,
    pub stats: Arc<IoStats>,
}

impl RxQueue {
    /// Reads one batch; frames owned by `me` go to `mine`, the others to
    /// their owners. Returns how many frames were read.
    pub fn route(&self, frames: &mut Vec<RxFrame>, peers: &[Handoff], me: Option<usize>, mine: &mut Vec<Job>) -> usize {
        let n = self.queue.recv(frames, BATCH);
        if n == 0 {
            return 0;
        }
        // Doorbells to ring after the batch: one bit per worker (<= 64 rung
        // individually, more share the last bit and are all rung).
        let mut rung = 0u64;
        for frame in frames.drain(..) {
            let worker = match self.queue.meta(&frame) {
                Some(m) => m.worker as usize % peers.len(),
                None => {
                    self.stats.no_meta.add(1);
                    owner(self.queue.data(&frame), peers.len())
                }
            };
            let job = Job { queue: self.index, frame };
            if Some(worker) == me {
                mine.push(job);
                continue;
            }
            match peers[worker].jobs.try_send(job) {
                Ok(()) => {
                    self.stats.handed_off.add(1);
                    rung |= 1 << worker.min(63);
                }
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                    self.stats.handoff_full.add(1);
                    self.queue.release(job.frame);
                }
            }
        }
        for (w, p) in peers.iter().enumerate() {
            if rung & (1 << w.min(63)) != 0 {
                p.bell.ring();
            }
        }
        n
    }
}

/// The reader of a queue no worker reads (more RX queues than workers).
pub struct IoLoop {
    pub rx: RxQueue,
    pub peers: Vec<Handoff>,
    pub stop: Arc<AtomicBool>,
}

impl IoLoop {
    pub fn run(self) {
        let mut frames = Vec::with_capacity(BATCH as usize);
        let mut none = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            if self.rx.route(&mut frames, &self.peers, None, &mut none) == 0 {
                let mut p = libc::pollfd { fd: self.rx.queue.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, IDLE_MS) };
            }
        }
    }
}

/// The worker owning a frame that came without metadata: the same scan and
/// hash as the XDP program (`sip_lb_common::callid_scan`, the model it is
/// held to), so such a frame still reaches its Call-ID's owner; worker 0
/// when there is no Call-ID to find.
fn owner(frame: &[u8], workers: usize) -> usize {
    use sip_lb_common::{call_id_hash, callid_scan::find_call_id, maps::SCAN_WINDOW, worker_for_hash};
    let Some(udp) = sip_lb_afxdp::frame::parse_udp(frame) else { return 0 };
    let payload = &frame[udp.payload];
    match find_call_id(payload, SCAN_WINDOW) {
        Some((start, end)) => worker_for_hash(call_id_hash(&payload[start..end]), workers as u32) as usize,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_lb_afxdp::frame::{write_udp, L2};
    use sip_lb_common::{call_id_hash, worker_for_hash};

    /// Without metadata the owner is computed as the XDP program would.
    #[test]
    fn owner_without_metadata_is_the_call_ids() {
        let l2 = L2 { src_mac: [2, 0, 0, 0, 0, 1], dst_mac: [2, 0, 0, 0, 0, 2] };
        let (src, dst) = ("10.0.0.2:5060".parse().unwrap(), "10.0.0.1:5060".parse().unwrap());
        let mut buf = [0u8; 1024];
        for id in ["a@b", "call-1@trunk", "x7", "4e1c-99@example.com"] {
            let msg =
                format!("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCall-ID: {id}\r\nCSeq: 1 OPTIONS\r\n\r\n");
            let n = write_udp(&mut buf, &l2, src, dst, 1, 64, msg.as_bytes()).unwrap();
            for workers in [1, 2, 3, 8] {
                let want = worker_for_hash(call_id_hash(id.as_bytes()), workers as u32) as usize;
                assert_eq!(owner(&buf[..n], workers), want, "{id} over {workers}");
            }
        }
        assert_eq!(owner(b"not a frame", 4), 0);
    }
}
