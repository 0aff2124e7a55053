//! An AF_XDP worker: owns a share of the Call-IDs (the XDP program wrote the
//! owner into each frame's metadata). Worker w also reads RX queue w when
//! there is one: the frames it owns it handles at once (run to completion,
//! no hand-off), the others go to their owners. Then it takes what other
//! readers handed it, in arrival order. Each frame goes through the same
//! sans-IO core as the socket workers (`Proxy::handle`); the output, with
//! Ethernet/IP/UDP headers for the next hop, is written into the chunk the
//! request arrived in, which then goes on that queue's TX ring. No
//! neighbour entry, longer than the MTU, or a full TX ring: the datagram
//! leaves through this worker's socket-path socket instead (the kernel
//! resolves and fragments), never dropped. With nothing to do it sleeps on
//! its RX socket and its doorbell together.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam::channel::Receiver;
use sip_lb_afxdp::frame::{self, L2};
use sip_lb_afxdp::{Queue, RxFrame};
use sip_lb_proto::proxy::Action;

use super::doorbell::Doorbell;
use super::io::{Handoff, Job, RxQueue, BATCH as RX_BATCH, IDLE_MS};
use super::stats::XskWorkerStats;
use crate::config::Listen;
use crate::dataplane::hep::{HepTap, Stamp};
use crate::dataplane::{SharedPlan, SharedShield, WorkerStats};
use sip_lb_afxdp::neigh::NeighbourTable;
use sip_lb_proto::shield::ShieldDrop;

/// Jobs taken per batch (one plan load, one TX wake-up per queue).
const BATCH: usize = 64;

pub struct XskWorker {
    pub index: usize,
    pub workers: usize,
    pub cpu: Option<usize>,
    pub ifindex: u32,
    /// Largest frame sent on the wire (MTU + Ethernet header).
    pub max_frame: usize,
    pub listen: Vec<Listen>,
    pub queues: Vec<Arc<Queue>>,
    /// The RX queue this worker reads, if there is one for it.
    pub rx: Option<RxQueue>,
    /// Every worker's hand-off (this one's included, unused).
    pub peers: Vec<Handoff>,
    pub jobs: Receiver<Job>,
    pub bell: Arc<Doorbell>,
    /// This worker's socket-path sockets (dups), one per listen address.
    pub sockets: Vec<UdpSocket>,
    pub neigh: Arc<NeighbourTable>,
    pub plan: SharedPlan,
    /// The shield's buckets, shared with the socket workers.
    pub shield: SharedShield,
    pub stats: Arc<WorkerStats>,
    pub xsk: Arc<XskWorkerStats>,
    pub stop: Arc<AtomicBool>,
    /// Bench only: forward unchanged to these in turn, no SIP work.
    pub null_forward: Vec<SocketAddr>,
    /// With `[hep]`: copies of what is received and sent, for the collector.
    pub hep: Option<Arc<HepTap>>,
}

impl XskWorker {
    pub fn run(self) {
        if let Some(cpu) = self.cpu {
            if let Err(e) = sip_lb_udp::affinity::pin_to_cpu(cpu) {
                tracing::warn!(worker = self.index, cpu, "cannot pin AF_XDP worker: {e}");
            }
        }
        let mut out = Vec::with_capacity(4096);
        let mut touched = vec![false; self.queues.len()];
        let mut frames = Vec::with_capacity(RX_BATCH as usize);
        let mut batch = Vec::with_capacity(BATCH + RX_BATCH as usize);
        // RFC 6864: a per-sender counter; workers start apart.
        let mut ip_id = (self.index * (65536 / self.workers.max(1))) as u16;
        let rx_fd = self.rx.as_ref().map(|r| r.queue.as_raw_fd());
        let mut turn = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            let read = match &self.rx {
                Some(rx) => rx.route(&mut frames, &self.peers, Some(self.index), &mut batch),
                None => 0,
            };
            if let Some(rx) = &self.rx {
                rx.stats.kept.add(batch.len() as u64);
            }
            while batch.len() < BATCH {
                match self.jobs.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                if read == 0 {
                    self.bell.sleep(rx_fd, IDLE_MS, || !self.jobs.is_empty());
                }
                continue;
            }
            let plan = self.plan.load();
            let bans = self.shield.bans.load();
            let now_ns = self.shield.now_ns();
            for job in batch.drain(..) {
                let qi = job.queue;
                let sent = if self.null_forward.is_empty() {
                    self.process(&plan, &bans, job, &mut out, &mut ip_id, now_ns)
                } else {
                    turn = turn.wrapping_add(1);
                    self.null(job, &mut out, &mut ip_id, turn)
                };
                if sent {
                    touched[qi] = true;
                }
            }
            for (q, t) in self.queues.iter().zip(touched.iter_mut()) {
                if *t || q.tx_pending() {
                    q.flush();
                    *t = false;
                }
            }
        }
        // Frames still queued for us go back to their queues.
        while let Ok(job) = self.jobs.try_recv() {
            self.queues[job.queue].release(job.frame);
        }
    }

    /// The listen address a datagram to `dst` arrived on.
    fn listener(&self, dst: SocketAddr) -> Option<usize> {
        self.listen.iter().position(|l| {
            l.addr.port() == dst.port()
                && (l.addr.ip() == dst.ip() || (l.addr.ip().is_unspecified() && l.addr.is_ipv4() == dst.is_ipv4()))
        })
    }

    /// Handles one frame; true if a frame went on a TX ring.
    fn process(
        &self,
        plan: &crate::dataplane::Plan,
        bans: &crate::dataplane::BanSet,
        job: Job,
        out: &mut Vec<u8>,
        ip_id: &mut u16,
        now_ns: u64,
    ) -> bool {
        let Job { queue, frame: f } = job;
        let q = &self.queues[queue];
        let stats = &self.stats;
        self.xsk.rx.add(1);
        let data = q.data(&f);
        let Some(udp) = frame::parse_udp(data) else {
            self.xsk.not_ours.add(1);
            q.release(f);
            return false;
        };
        let Some(on) = self.listener(udp.dst) else {
            self.xsk.not_ours.add(1);
            q.release(f);
            return false;
        };
        let payload = &data[udp.payload.clone()];
        stats.rx_datagrams.add(1);
        stats.rx_bytes.add(payload.len() as u64);
        crate::fault::inject(self.index, payload);
        let src = udp.src;
        let shield = &self.shield.buckets;
        // No new-source budget: every frame here came through the XSK
        // program, whose shield stage applied it per CPU.
        if !self.shield.admit(&plan.shield, bans, src, payload, now_ns, stats, None) {
            q.release(f);
            return false;
        }
        let hep = self.hep.as_deref().filter(|t| t.keeps(payload)).map(|t| (t, Stamp::now()));
        if let Some((t, at)) = hep {
            t.received(payload, src, on, at);
        }
        let (to, from) = match plan.proxy.handle(&plan.router, payload, src, on, out) {
            Action::Forward { to, from, what } => {
                stats.forwarded(&plan.backends, what, to, src);
                if what == sip_lb_proto::proxy::Forwarded::Response {
                    self.shield.relayed(payload, to);
                }
                if let Some((t, at)) = hep {
                    t.sent(out, from, to, at);
                }
                (to, from)
            }
            Action::Reply { to, .. } if !shield.may_reply(&plan.shield, to.ip(), now_ns) => {
                stats.shield_drops[ShieldDrop::ReplyLimited.index()].add(1);
                q.release(f);
                return false;
            }
            Action::Reply { to, code } => {
                stats.replies[code.index()].add(1);
                if let Some((t, at)) = hep {
                    t.sent(out, on, to, at);
                }
                (to, on)
            }
            Action::Drop(reason) => {
                stats.drops[reason.index()].add(1);
                q.release(f);
                return false;
            }
        };
        stats.tx_bytes.add(out.len() as u64);
        self.send(q, f, out, to, from, ip_id)
    }

    /// The null forwarder's step: the payload, unchanged, to the next
    /// address in turn.
    fn null(&self, job: Job, out: &mut Vec<u8>, ip_id: &mut u16, turn: usize) -> bool {
        let Job { queue, frame: f } = job;
        let q = &self.queues[queue];
        self.xsk.rx.add(1);
        let data = q.data(&f);
        let Some(on) = frame::parse_udp(data).and_then(|udp| {
            out.clear();
            out.extend_from_slice(&data[udp.payload]);
            self.listener(udp.dst)
        }) else {
            self.xsk.not_ours.add(1);
            q.release(f);
            return false;
        };
        self.stats.rx_datagrams.add(1);
        let to = self.null_forward[turn % self.null_forward.len()];
        self.send(q, f, out, to, on, ip_id)
    }

    /// Sends `out` to `to` from listen address `from`: in `f`'s chunk on the
    /// TX ring if the next hop is resolved and it fits, else by socket.
    fn send(&self, q: &Queue, mut f: RxFrame, out: &[u8], to: SocketAddr, from: usize, ip_id: &mut u16) -> bool {
        let local = self.listen[from].addr;
        let hop = self.neigh.next_hop(to.ip()).filter(|h| h.ifindex == self.ifindex);
        let frame_len = frame::header_len(to.is_ipv6()) + out.len();
        let fits = frame_len <= self.max_frame && frame_len <= Queue::room(&f);
        match hop {
            Some(h) if fits => {
                let src_ip: IpAddr = if local.ip().is_unspecified() { h.src_ip } else { local.ip() };
                let l2 = L2 { src_mac: h.src_mac, dst_mac: h.dst_mac };
                *ip_id = ip_id.wrapping_add(1);
                let buf = q.chunk_mut(&mut f);
                let written = frame::write_udp(
                    buf,
                    &l2,
                    SocketAddr::new(src_ip, local.port()),
                    to,
                    *ip_id,
                    frame::DEFAULT_TTL,
                    out,
                );
                let Some(len) = written else {
                    q.release(f);
                    self.by_socket(out, to, from);
                    return false;
                };
                match q.transmit(f, len) {
                    Ok(()) => {
                        self.xsk.tx.add(1);
                        self.stats.tx_datagrams.add(1);
                        true
                    }
                    Err(f) => {
                        q.release(f);
                        self.xsk.tx_socket_ring_full.add(1);
                        self.by_socket(out, to, from);
                        false
                    }
                }
            }
            _ => {
                q.release(f);
                if hop.is_none() {
                    self.xsk.tx_socket_unresolved.add(1);
                } else {
                    self.xsk.tx_socket_too_long.add(1);
                }
                self.by_socket(out, to, from);
                false
            }
        }
    }

    fn by_socket(&self, out: &[u8], to: SocketAddr, from: usize) {
        match self.sockets[from].send_to(out, to) {
            Ok(_) => self.stats.tx_datagrams.add(1),
            Err(e) => {
                tracing::debug!(worker = self.index, %to, "send through the socket path: {e}");
                self.stats.tx_errors.add(1);
            }
        }
    }
}
