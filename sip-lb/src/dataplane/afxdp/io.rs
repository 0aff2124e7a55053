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
                        owner(self.queue.data(&frame), self.workers.len())
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
