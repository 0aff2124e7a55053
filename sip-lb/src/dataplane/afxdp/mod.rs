//! The AF_XDP data path (`--datapath afxdp`, `docs/afxdp.md`): beside the
//! socket workers, which stay bound for whatever the XDP program passes to
//! the kernel (fragments, too long, non-SIP, no Call-ID):
//!
//! ```text
//!  NIC queue q --sip_lb_xsk--> AF_XDP socket q --IoLoop q--+--> XskWorker w (owner of the Call-ID)
//!                (metadata: worker, hash)                  |      Proxy::handle, frame written into the
//!                                                          |      same chunk, TX ring of queue q
//!  (one per RX queue)                         bounded crossbeam queues, one per worker
//! ```
//!
//! All messages of a call reach one worker (the metadata names it), in the
//! order its queue received them. Datagrams without a resolved next hop, or
//! longer than the MTU, leave through the worker's socket-path socket.

mod doorbell;
mod io;
pub mod stats;
mod worker;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use sip_lb_afxdp::{BindMode, Queue, QueueConfig};

use super::{SharedPlan, WorkerStats};
use crate::config::Listen;
use crate::xdp::xsk::{XskAttach, XskProgram};
use stats::{IoStats, XskWorkerStats};

/// Frames waiting per worker before its I/O loops drop (and count) more.
pub const HANDOFF_CAPACITY: usize = 4096;

/// What the data path came up with, for the start-up log.
#[derive(Clone, Debug)]
pub struct Info {
    pub iface: String,
    pub queues: usize,
    pub zero_copy: bool,
    pub attach: XskAttach,
    pub umem_bytes_per_queue: usize,
}

impl std::fmt::Display for Info {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AF_XDP on {}: {} queue(s) bound, {} mode, program in {}, UMEM {} KiB per queue",
            self.iface,
            self.queues,
            if self.zero_copy { "zero-copy" } else { "copy" },
            self.attach,
            self.umem_bytes_per_queue / 1024
        )
    }
}

/// The running AF_XDP data path. [`AfXdp::stop`] ends its threads; dropping
/// it detaches the program.
pub struct AfXdp {
    pub info: Info,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub queues: Vec<Arc<Queue>>,
    pub io: Vec<Arc<IoStats>>,
    pub workers: Vec<Arc<XskWorkerStats>>,
    /// The AF_XDP workers' core counters (same layout as the socket workers').
    pub stats: Vec<Arc<WorkerStats>>,
    program: Arc<XskProgram>,
}

/// What [`AfXdp::start`] needs.
pub struct Params<'a> {
    pub iface: &'a str,
    pub listen: &'a [Listen],
    pub cpus: &'a [Option<usize>],
    pub plan: SharedPlan,
    pub shield: crate::dataplane::SharedShield,
    /// `sockets[w][l]`: worker w's socket-path socket for listen address l
    /// (dups of the socket workers'), for what cannot leave by AF_XDP.
    pub sockets: Vec<Vec<UdpSocket>>,
    pub mode: BindMode,
    /// Bench only (`--afxdp-null-forward`): no SIP work, datagrams go
    /// unchanged to these addresses in turn.
    pub null_forward: Vec<std::net::SocketAddr>,
    /// With `[hep]`: the mirror's tap, shared with the socket workers.
    pub hep: Option<Arc<crate::dataplane::hep::HepTap>>,
}

impl AfXdp {
    /// Loads the program, binds one AF_XDP socket per RX queue, attaches
    /// and starts the I/O loops and workers. Any failure: nothing stays.
    pub fn start(p: Params<'_>) -> anyhow::Result<AfXdp> {
        let workers = p.sockets.len();
        let ifindex = sip_lb_afxdp::ifindex(p.iface)?;
        let nq = sip_lb_afxdp::rx_queues(p.iface).with_context(|| format!("RX queues of {}", p.iface))?;
        let mtu = sip_lb_afxdp::mtu(p.iface).with_context(|| format!("MTU of {}", p.iface))?;
        let ports: Vec<u16> = p.listen.iter().map(|l| l.addr.port()).collect();
        let addrs: Vec<_> = p.listen.iter().map(|l| l.addr.ip()).collect();
        // The shield's XDP stage starts with the policy at start; the
        // control plane writes reloads and bans through `xdp_shield`.
        let mut program = XskProgram::load(workers, &ports, &addrs, &p.plan.load().shield)?;
        let cfg = QueueConfig { mode: p.mode, ..QueueConfig::default() };
        let mut queues = Vec::new();
        for q in 0..nq {
            let queue = Queue::bind(ifindex, q, &cfg)?;
            program.register(q, &queue)?;
            queues.push(Arc::new(queue));
        }
        let attach = program.attach(p.iface)?;
        let neigh = Arc::new(sip_lb_afxdp::neigh::NeighbourTable::start(ifindex)?);
        let info = Info {
            iface: p.iface.to_owned(),
            queues: queues.len(),
            zero_copy: queues.iter().all(|q| q.zero_copy()),
            attach,
            umem_bytes_per_queue: queues[0].umem_bytes(),
        };

        let stop = Arc::new(AtomicBool::new(false));
        let mut dp = AfXdp {
            info,
            stop: stop.clone(),
            threads: Vec::new(),
            queues: queues.clone(),
            io: Vec::new(),
            workers: Vec::new(),
            stats: Vec::new(),
            program: Arc::new(program),
        };
        // Every worker's hand-off first: each reader routes to all of them.
        let mut inboxes = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = crossbeam::channel::bounded(HANDOFF_CAPACITY);
            let bell = Arc::new(doorbell::Doorbell::new().context("eventfd for a worker's doorbell")?);
            peers.push(io::Handoff { jobs: tx, bell: bell.clone() });
            inboxes.push((rx, bell));
        }
        let io_stats: Vec<Arc<IoStats>> = queues.iter().map(|_| Arc::new(IoStats::default())).collect();
        let reader = |q: usize| io::RxQueue { queue: queues[q].clone(), index: q, stats: io_stats[q].clone() };
        for ((w, sockets), (jobs, bell)) in p.sockets.into_iter().enumerate().zip(inboxes) {
            let (stats, xsk) = (Arc::new(WorkerStats::default()), Arc::new(XskWorkerStats::default()));
            let worker = worker::XskWorker {
                index: w,
                workers,
                cpu: p.cpus.get(w).copied().flatten(),
                ifindex,
                max_frame: mtu + sip_lb_afxdp::frame::ETH_HLEN,
                listen: p.listen.to_vec(),
                queues: queues.clone(),
                rx: (w < queues.len()).then(|| reader(w)),
                null_forward: p.null_forward.clone(),
                hep: p.hep.clone(),
                peers: peers.clone(),
                jobs,
                bell,
                sockets,
                neigh: neigh.clone(),
                plan: p.plan.clone(),
                shield: p.shield.clone(),
                stats: stats.clone(),
                xsk: xsk.clone(),
                stop: stop.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("sip-lb-x{w}"))
                .spawn(move || crate::fault::run_or_abort(w, || worker.run()))?;
            dp.threads.push(t);
            dp.stats.push(stats);
            dp.workers.push(xsk);
        }
        // Queues beyond the workers get a reader of their own.
        for q in workers..queues.len() {
            let l = io::IoLoop { rx: reader(q), peers: peers.clone(), stop: stop.clone() };
            let t = std::thread::Builder::new().name(format!("sip-lb-q{q}")).spawn(move || l.run())?;
            dp.threads.push(t);
        }
        dp.io = io_stats;
        Ok(dp)
    }

    /// The XDP program's counters per CPU.
    pub fn program_counters(&self) -> anyhow::Result<Vec<sip_lb_common::maps::XskCounters>> {
        self.program.counters()
    }

    /// A reader of all its counters, for the control plane.
    /// The program's shield maps, for the control plane.
    pub fn xdp_shield(&self) -> Arc<crate::xdp::shield::XdpShield> {
        self.program.shield()
    }

    pub fn reader(&self) -> impl Fn() -> stats::AfxdpSnapshot + Send + Sync + 'static {
        let (queues, io, workers, program) =
            (self.queues.clone(), self.io.clone(), self.workers.clone(), self.program.clone());
        move || snapshot(&queues, &io, &workers, &program)
    }

    /// Stops the I/O loops and workers and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for AfXdp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the config asks for AF_XDP (explicitly, or an `iface` without
/// `datapath`): [`start_if_selected`] will try it.
pub fn selected(config: &crate::config::Config) -> bool {
    config.iface.is_some() && config.datapath != Some(crate::config::Datapath::Socket)
}

/// Starts the AF_XDP data path if the config selects it: `datapath =
/// "afxdp"` (failure is an error), or an `iface` with no `datapath` (failure
/// falls back to the socket path with a warning saying why). `sockets` are
/// the socket workers' (`[w][l]`), dup'ed for the AF_XDP workers' fallback.
pub fn start_if_selected(
    config: &crate::config::Config,
    sockets: &[Vec<UdpSocket>],
    cpus: &[Option<usize>],
    plan: &SharedPlan,
    shield: &crate::dataplane::SharedShield,
    null_forward: bool,
    hep: Option<Arc<crate::dataplane::hep::HepTap>>,
) -> anyhow::Result<Option<AfXdp>> {
    let Some(iface) = config.iface.as_deref().filter(|_| selected(config)) else { return Ok(None) };
    // Responses to requests that came over TCP/TLS (or go to backends over
    // connections) are routed by the stream relay, which only the socket
    // workers have: an AF_XDP worker would send them by UDP to the client's
    // connection address. Until the AF_XDP workers get the relay, such a
    // config takes the socket path.
    if !config.streams.is_empty() || !config.links.is_empty() {
        let why = "TCP/TLS listeners or backends are configured, and the AF_XDP workers do not relay to connections";
        if config.datapath.is_some() {
            anyhow::bail!("datapath = \"afxdp\": {why}; use datapath = \"socket\"");
        }
        tracing::warn!("datapath: socket (AF_XDP not used on {iface}: {why})");
        return Ok(None);
    }
    let dups = sockets
        .iter()
        .map(|w| w.iter().map(UdpSocket::try_clone).collect::<std::io::Result<Vec<_>>>())
        .collect::<std::io::Result<Vec<_>>>()
        .context("duplicating the worker sockets")?;
    let params = Params {
        iface,
        listen: &config.listen,
        cpus,
        plan: plan.clone(),
        shield: shield.clone(),
        sockets: dups,
        mode: BindMode::Auto,
        null_forward: match null_forward {
            true => config.pools.iter().flat_map(|p| p.backends.iter().map(|b| b.addr)).collect(),
            false => Vec::new(),
        },
        hep,
    };
    match AfXdp::start(params) {
        Ok(dp) => Ok(Some(dp)),
        Err(e) if config.datapath.is_none() => {
            tracing::warn!("datapath: socket (AF_XDP on {iface} failed: {e:#})");
            Ok(None)
        }
        Err(e) => Err(e.context(format!("starting the AF_XDP data path on {iface}"))),
    }
}

/// The shutdown summary's AF_XDP lines: per queue, per worker, the program.
pub fn print_summary(x: &AfXdp) {
    for (q, io) in x.queues.iter().zip(&x.io) {
        eprintln!("{}", stats::QueueSummary(q.id(), &q.stats, io));
    }
    for (w, c) in x.workers.iter().enumerate() {
        eprintln!("{}", stats::XskWorkerSummary(w, c));
    }
    if let Ok(per_cpu) = x.program_counters() {
        let seen: u64 = per_cpu.iter().map(|c| c.packets).sum();
        let redirected: u64 = per_cpu.iter().flat_map(|c| c.redirected.iter()).sum();
        let blocked: u64 = per_cpu.iter().map(|c| c.shield_blocked).sum();
        let rate_limited: u64 = per_cpu.iter().map(|c| c.shield_rate_limited).sum();
        let mut line = format!(
            "afxdp program: seen {seen} redirected {redirected} shield_blocked={blocked} \
             shield_rate_limited={rate_limited}"
        );
        for r in sip_lb_common::maps::PassReason::XSK_ALL {
            let n: u64 = per_cpu.iter().map(|c| c.passed[r as usize]).sum();
            line += &format!(" {}={n}", r.name());
        }
        eprintln!("{line}");
    }
}

fn snapshot(
    queues: &[Arc<Queue>],
    io: &[Arc<IoStats>],
    workers: &[Arc<XskWorkerStats>],
    program: &XskProgram,
) -> stats::AfxdpSnapshot {
    use sip_lb_common::maps::PassReason;
    let per_cpu = program.counters().unwrap_or_default();
    stats::AfxdpSnapshot {
        queues: queues
            .iter()
            .zip(io)
            .map(|(q, io)| stats::AfxdpQueueSnapshot {
                queue: q.id(),
                rx: q.stats.rx.get(),
                tx: q.stats.tx.get(),
                kept: io.kept.get(),
                handed_off: io.handed_off.get(),
                handoff_full: io.handoff_full.get(),
                no_meta: io.no_meta.get(),
                fill_ring_empty: q.stats.fill_empty.get(),
                tx_ring_full: q.stats.tx_full.get(),
                completion_lag: q.stats.completion_lag(),
                kernel_rx_dropped: q.kernel_stats().map_or(0, |k| k.rx_dropped),
            })
            .collect(),
        workers: workers
            .iter()
            .enumerate()
            .map(|(w, c)| stats::AfxdpWorkerSnapshot {
                worker: w,
                rx: c.rx.get(),
                tx: c.tx.get(),
                tx_socket: vec![
                    ("unresolved".into(), c.tx_socket_unresolved.get()),
                    ("too_long".into(), c.tx_socket_too_long.get()),
                    ("tx_ring_full".into(), c.tx_socket_ring_full.get()),
                ],
                not_ours: c.not_ours.get(),
            })
            .collect(),
        seen: per_cpu.iter().map(|c| c.packets).sum(),
        redirected: per_cpu.iter().flat_map(|c| c.redirected.iter()).sum(),
        shield_blocked: per_cpu.iter().map(|c| c.shield_blocked).sum(),
        shield_rate_limited: per_cpu.iter().map(|c| c.shield_rate_limited).sum(),
        passed: PassReason::XSK_ALL
            .iter()
            .map(|r| (r.name().to_owned(), per_cpu.iter().map(|c| c.passed[*r as usize]).sum()))
            .collect(),
    }
}
