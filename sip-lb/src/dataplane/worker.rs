//! One worker: a pinned thread that moves datagrams between its sockets and
//! the sans-IO core. It never blocks on the control plane: it loads the
//! current `Plan` with one atomic read per batch.
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::hep::{HepTap, Stamp};
use super::stats::{StunStats, WorkerStats};
use super::{SharedPlan, SharedShield};
use crate::stream::relay::{Fate, Relay};
use sip_lb_proto::proxy::{Action, DropReason, Forwarded};
use sip_lb_proto::shield::{NewSources, ShieldDrop};
use sip_lb_udp::{RecvBatch, SendBatch};

/// How long an idle worker with several sockets sleeps in poll(2) before
/// re-checking `stop`.
const IDLE_POLL_MS: libc::c_int = 100;

pub struct Worker {
    pub index: usize,
    pub cpu: Option<usize>,
    /// One socket per listen address, all in the same reuseport groups.
    pub sockets: Vec<UdpSocket>,
    pub plan: SharedPlan,
    /// Per-source buckets shared by all workers.
    pub shield: SharedShield,
    pub stats: Arc<WorkerStats>,
    pub stop: Arc<AtomicBool>,
    /// With TCP/TLS listeners: hands responses with a flow token to their
    /// connection.
    pub relay: Option<Arc<Relay>>,
    /// With `stun = true`: answers Binding requests, counts them here.
    pub stun: Option<Arc<StunStats>>,
    /// With `[hep]`: copies of what is received and sent, for the collector.
    pub hep: Option<Arc<HepTap>>,
}

impl Worker {
    pub fn run(self) {
        if let Some(cpu) = self.cpu {
            if let Err(e) = sip_lb_udp::affinity::pin_to_cpu(cpu) {
                tracing::warn!(worker = self.index, cpu, "cannot pin worker: {e}");
            }
        }
        let mut rx = RecvBatch::new();
        let mut tx = SendBatch::new();
        let mut pollfds: Vec<libc::pollfd> =
            self.sockets.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        let fds: Vec<_> = self.sockets.iter().map(|s| s.as_raw_fd()).collect();
        // The common case, one listen address: block in recvmmsg itself.
        let wait = self.sockets.len() == 1;
        // This worker's budget of new sources (`new_sources_rate`), as the
        // XDP stage keeps one per CPU: owned here, no atomics.
        let mut new_sources = NewSources::default();
        while !self.stop.load(Ordering::Relaxed) {
            let mut busy = false;
            for (on, &fd) in fds.iter().enumerate() {
                let n = match rx.recv(fd, wait) {
                    Ok(n) => n,
                    Err(e) => {
                        // e.g. ECONNREFUSED from an ICMP error on a previous send.
                        tracing::debug!(worker = self.index, "recvmmsg: {e}");
                        self.stats.tx_errors.add(1);
                        busy = true;
                        continue;
                    }
                };
                if n == 0 {
                    continue;
                }
                busy = true;
                self.process(&rx, n, on, &mut tx, self.shield.now_ns(), &mut new_sources);
                let (sent, failed) = tx.flush(&fds);
                self.stats.tx_datagrams.add(sent as u64);
                self.stats.tx_errors.add(failed as u64);
            }
            if !busy && !wait {
                // SAFETY: pollfds is a valid array of pollfd for the call.
                unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, IDLE_POLL_MS) };
            }
        }
    }

    /// Runs the shield and the core over `n` datagrams received on socket
    /// `on` at `now_ns` (one clock read per batch), spending this worker's
    /// `new_sources` budget unless an XDP stage does.
    fn process(
        &self,
        rx: &RecvBatch,
        n: usize,
        on: usize,
        tx: &mut SendBatch,
        now_ns: u64,
        new_sources: &mut NewSources,
    ) {
        let plan = self.plan.load();
        let shield = &self.shield.buckets;
        let bans = self.shield.bans.load();
        let budget_here = self.shield.workers_budget_new_sources();
        let stats = &self.stats;
        let mut tx_bytes = 0u64;
        let mut rx_bytes = 0u64;
        // Received first, so that a reader never sees more accounted for
        // than received (`Counters::unaccounted`).
        stats.rx_datagrams.add(n as u64);
        let stamp = self.hep.as_ref().map(|_| Stamp::now());
        for i in 0..n {
            let (data, src, truncated) = rx.get(i);
            rx_bytes += data.len() as u64;
            let Some(src) = src else {
                stats.drops[DropReason::Malformed.index()].add(1);
                continue;
            };
            if truncated {
                stats.drops[DropReason::Malformed.index()].add(1);
                continue;
            }
            crate::fault::inject(self.index, data);
            let budget = budget_here.then_some(&mut *new_sources);
            if !self.shield.admit(&plan.shield, &bans, src, data, now_ns, stats, budget) {
                continue;
            }
            let out = tx.next_buf();
            if let Some(stun) = self.stun.as_ref().filter(|_| sip_lb_proto::stun::is_stun(data)) {
                let outcome = sip_lb_proto::stun::answer(data, src, out);
                stun.count(outcome);
                if outcome == sip_lb_proto::stun::Outcome::Answered {
                    // A STUN answer is a stateless reply like any other.
                    if shield.may_reply(&plan.shield, src.ip(), now_ns) {
                        stats.stun.add(1);
                        tx_bytes += out.len() as u64;
                        tx.commit(src, on);
                    } else {
                        stats.shield_drops[ShieldDrop::ReplyLimited.index()].add(1);
                    }
                } else {
                    stats.stun.add(1);
                }
                continue;
            }
            let hep = self.hep.as_deref().zip(stamp).filter(|(t, _)| t.keeps(data));
            if let Some((t, at)) = hep {
                t.received(data, src, on, at);
            }
            let action = plan.proxy.handle(&plan.router, data, src, on, out);
            if let (Some(relay), Action::Forward { what, from, .. }) = (&self.relay, action) {
                // A flow's message is not sent from here: it is queued on its
                // connection, or dropped (counted by the relay).
                let taken = match what {
                    Forwarded::Response => relay.take(plan.proxy.keys(), data, out),
                    Forwarded::Request => match relay.take_request(&plan.proxy, data, src, from, out) {
                        // 430 (the flow is gone) or 403 (a forged token), to the sender.
                        Some(Fate::Reply(code)) => {
                            stats.replies[code.index()].add(1);
                            tx_bytes += out.len() as u64;
                            tx.commit(src, on);
                            continue;
                        }
                        fate => fate.map(|f| f == Fate::Queued),
                    },
                };
                if let Some(queued) = taken {
                    let c = match (queued, what) {
                        (false, _) => &stats.relay_dropped,
                        (true, Forwarded::Response) => &stats.responses_forwarded,
                        (true, Forwarded::Request) => &stats.requests_forwarded,
                    };
                    c.add(1);
                    continue;
                }
                // A backend reached over a connection (`stream::links`).
                if let Action::Forward { to, .. } = action {
                    if let Some(queued) = relay.to_link(out, to, what) {
                        if queued {
                            stats.forwarded(&plan.backends, what, to, src);
                        }
                        continue;
                    }
                }
            }
            match action {
                Action::Forward { to, from, what } => {
                    stats.forwarded(&plan.backends, what, to, src);
                    if what == Forwarded::Response {
                        self.shield.relayed(data, to);
                    }
                    if let Some((t, at)) = hep {
                        t.sent(out, from, to, at);
                    }
                    tx_bytes += out.len() as u64;
                    tx.commit(to, from);
                }
                Action::Reply { to, .. } if !shield.may_reply(&plan.shield, to.ip(), now_ns) => {
                    stats.shield_drops[ShieldDrop::ReplyLimited.index()].add(1);
                }
                Action::Reply { to, code } => {
                    stats.replies[code.index()].add(1);
                    if let Some((t, at)) = hep {
                        t.sent(out, on, to, at);
                    }
                    tx_bytes += out.len() as u64;
                    tx.commit(to, on);
                }
                Action::Drop(reason) => stats.drops[reason.index()].add(1),
            }
        }
        stats.rx_bytes.add(rx_bytes);
        stats.tx_bytes.add(tx_bytes);
    }
}
