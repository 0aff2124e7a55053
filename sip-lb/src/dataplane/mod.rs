//! The data plane: one pinned worker thread per core, each with its own
//! SO_REUSEPORT socket per listen address, moving batches of datagrams
//! (`sip_lb_udp`) through the sans-IO core (`sip_lb_proto`).
//!
//! The only thing shared with the control plane is the [`Plan`]: an immutable
//! snapshot (forwarding identity + backend router) behind an `ArcSwap`. The
//! control plane builds a new one and stores it; workers pick it up at their
//! next batch without locking or waiting.
//!
//! A worker that panics aborts the process ([`crate::fault`]): a dead worker
//! would leave its reuseport sockets behind to black-hole its share of
//! Call-IDs.
pub mod afxdp;
pub mod banset;
pub mod hep;
pub mod stats;
pub mod worker;

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::ArcSwap;

use crate::fault::{self, Fault};
use crate::stream::relay::Relay;
pub use banset::{BanHits, BanSet};
use sip_lb_proto::balance::Router;
use sip_lb_proto::proxy::Proxy;
use sip_lb_proto::shield::{NewSources, Refusal, Shield, ShieldDrop, ShieldPolicy};
pub use stats::StunStats;

pub use stats::{Counters, WorkerStats};
use worker::Worker;

/// Everything a worker needs to decide what to do with a datagram.
pub struct Plan {
    pub proxy: Proxy,
    pub router: Router,
    /// Backend address -> per-backend counter slot (see `stats`).
    pub backends: stats::BackendSlots,
    /// Who may use the balancer and how fast (`[shield]`); the per-source
    /// buckets it is applied with live in the workers' shared [`Shield`].
    pub shield: ShieldPolicy,
}

pub type SharedPlan = Arc<ArcSwap<Plan>>;

/// The shield's state shared by every worker of both data paths: the
/// per-source buckets (a source's limit is one limit) and the one clock they
/// count in, the runtime bans the control plane publishes with the drops
/// counted per ban, the queue on which workers report sources to ban
/// (scanners), and whether an XDP stage applies the new-source budget.
#[derive(Clone)]
pub struct SharedShield {
    pub buckets: Arc<Shield>,
    pub bans: Arc<ArcSwap<BanSet>>,
    pub ban_hits: Arc<BanHits>,
    offenders: crossbeam::channel::Sender<(IpAddr, Offence)>,
    epoch: std::time::Instant,
    /// An XDP program's shield stage is in front of the workers and applies
    /// `new_sources` per CPU; the socket workers then leave it to it (a
    /// source it admitted as new would be charged a second time).
    new_sources_in_xdp: Arc<AtomicBool>,
}

/// Sources reported and not yet taken by the control plane; more are
/// dropped (an offender keeps offending, and is seen again next tick).
const OFFENDER_QUEUE: usize = 1024;

/// What a worker saw a source do that may get it banned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offence {
    /// A request with a known scanner's User-Agent: banned at once.
    Scanner,
    /// A datagram over its rate limit: banned when it keeps at it.
    OverRate,
    /// A final 4xx from the farm was relayed to it (not 401/407, the
    /// normal challenges): banned after too many.
    Failure,
}

impl SharedShield {
    /// The shared state and the receiving end of the offender queue (for
    /// the control plane).
    pub fn new(buckets: Shield) -> (SharedShield, crossbeam::channel::Receiver<(IpAddr, Offence)>) {
        let (offenders, rx) = crossbeam::channel::bounded(OFFENDER_QUEUE);
        let s = SharedShield {
            buckets: Arc::new(buckets),
            bans: Arc::new(ArcSwap::from_pointee(BanSet::default())),
            ban_hits: Arc::default(),
            offenders,
            epoch: std::time::Instant::now(),
            new_sources_in_xdp: Arc::default(),
        };
        (s, rx)
    }

    /// Says whether an XDP shield stage runs in front of the workers (set
    /// once at start, when the data path is known; until then the workers
    /// apply the new-source budget themselves).
    pub fn set_xdp_stage(&self, on: bool) {
        self.new_sources_in_xdp.store(on, Ordering::Relaxed);
    }

    /// Whether the socket workers apply `new_sources` themselves (no XDP
    /// stage does); read once per batch.
    pub fn workers_budget_new_sources(&self) -> bool {
        !self.new_sources_in_xdp.load(Ordering::Relaxed)
    }

    /// Nanoseconds since start: the buckets' time base (read once per batch).
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The shield's verdict on a datagram from `src`: true if it may go on
    /// to the core. A drop is counted in `stats` by reason, and a scanner's
    /// source is reported to the control plane for a ban (never blocking).
    /// `new_sources` is the receiving worker's budget of new sources, `None`
    /// where an XDP stage applies it.
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &self,
        policy: &ShieldPolicy,
        bans: &BanSet,
        src: SocketAddr,
        datagram: &[u8],
        now_ns: u64,
        stats: &Counters,
        new_sources: Option<&mut NewSources>,
    ) -> bool {
        let Err(refusal) = self.buckets.check_new(policy, &bans.set, src.ip(), datagram, now_ns, new_sources) else {
            return true;
        };
        stats.shield_drops[refusal.reason().index()].add(1);
        match refusal {
            Refusal::Source(ShieldDrop::Scanner) => self.report(src.ip(), Offence::Scanner),
            Refusal::Source(ShieldDrop::RateLimited) => self.report(src.ip(), Offence::OverRate),
            Refusal::Source(ShieldDrop::Banned) => {
                if let Some(slot) = bans.slot_of(src.ip()) {
                    self.ban_hits.add(slot);
                }
            }
            // A refused new source is likely a made-up address: nothing to ban.
            _ => {}
        }
        false
    }

    /// Reports `src` to the control plane (never blocks; dropped when full).
    pub fn report(&self, src: IpAddr, what: Offence) {
        let _ = self.offenders.try_send((src, what));
    }

    /// A response about to be relayed to `to`: a final failure (4xx but the
    /// 401/407 challenges) counts against the client it goes to.
    pub fn relayed(&self, response: &[u8], to: SocketAddr) {
        let failure =
            response.len() > 11 && response.starts_with(b"SIP/2.0 4") && !matches!(&response[8..11], b"401" | b"407");
        if failure {
            self.report(to.ip(), Offence::Failure);
        }
    }
}

/// What a worker does besides forwarding SIP datagrams; nothing by default,
/// and then the UDP path is exactly the plain one.
#[derive(Clone, Default)]
pub struct Extras {
    /// The stream layer's relay: responses that carry a flow token go to
    /// their TCP/TLS connection (`crate::stream`).
    pub relay: Option<Arc<Relay>>,
    /// Answer STUN Binding requests (RFC 5389), counted here.
    pub stun: Option<Arc<StunStats>>,
    /// Mirror SIP messages as HEP (`[hep]`).
    pub hep: Option<Arc<hep::HepTap>>,
}

pub struct Dataplane {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    stats: Vec<Arc<WorkerStats>>,
    cpus: Vec<Option<usize>>,
}

/// Sockets bound for every worker, before any worker starts: `sockets[w][l]`
/// is worker w's socket for listen address l. Binding in worker order makes
/// reuseport group index == worker index. `busy_poll_us` > 0 turns on busy
/// polling (`sip_lb_udp::set_busy_poll`).
pub fn bind_sockets(listen: &[SocketAddr], workers: usize, busy_poll_us: u32) -> io::Result<Vec<Vec<UdpSocket>>> {
    let mut all: Vec<Vec<UdpSocket>> = (0..workers).map(|_| Vec::new()).collect();
    for &addr in listen {
        let mut bound = addr;
        for socks in all.iter_mut() {
            let s = sip_lb_udp::bind_reuseport(bound)?;
            if busy_poll_us > 0 {
                sip_lb_udp::set_busy_poll(&s, busy_poll_us)?;
            }
            // Port 0 means "any": every worker must join the port the first got.
            bound = s.local_addr()?;
            socks.push(s);
        }
    }
    Ok(all)
}

impl Dataplane {
    /// Starts one worker per socket set; worker i is pinned to `cpus[i]`
    /// when that is `Some`. A panic in any worker aborts the process
    /// ([`fault::run_or_abort`]).
    /// `shield` holds the per-source buckets every worker shares; `extras`
    /// is what the workers do besides forwarding SIP.
    pub fn start(
        sockets: Vec<Vec<UdpSocket>>,
        cpus: &[Option<usize>],
        plan: SharedPlan,
        shield: SharedShield,
        extras: Extras,
    ) -> io::Result<Dataplane> {
        // Reads SIP_LB_FAULT now (and says so) rather than on a first datagram.
        fault::armed(Fault::WorkerPanic);
        let stop = Arc::new(AtomicBool::new(false));
        let mut dp = Dataplane { stop: stop.clone(), threads: Vec::new(), stats: Vec::new(), cpus: Vec::new() };
        for (index, sockets) in sockets.into_iter().enumerate() {
            let stats = Arc::new(WorkerStats::default());
            let cpu = cpus.get(index).copied().flatten();
            let w = Worker {
                index,
                cpu,
                sockets,
                plan: plan.clone(),
                shield: shield.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
                relay: extras.relay.clone(),
                stun: extras.stun.clone(),
                hep: extras.hep.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("sip-lb-w{index}"))
                .spawn(move || fault::run_or_abort(index, || w.run()))?;
            dp.threads.push(t);
            dp.stats.push(stats);
            dp.cpus.push(cpu);
        }
        Ok(dp)
    }

    pub fn stats(&self) -> &[Arc<WorkerStats>] {
        &self.stats
    }

    pub fn cpus(&self) -> &[Option<usize>] {
        &self.cpus
    }

    /// Asks every worker to stop and waits for them (at most one idle poll).
    pub fn stop(mut self) -> Vec<Arc<WorkerStats>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        std::mem::take(&mut self.stats)
    }
}
