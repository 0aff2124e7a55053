//! The control plane: a small tokio runtime beside the data plane. It owns
//! configuration and backend state and publishes new [`Plan`]s; it never
//! touches a datagram, and the data plane never waits for it.
//!
//! - [`state`]: per-backend health, drain and counter slot.
//! - [`health`]: the up/down hysteresis (pure: probe outcomes in).
//! - [`links`]: backends whose connection cannot be made count as down.
//! - [`probing`]: the probe schedule, timeouts and health of every backend
//!   (pure: time, answers and send failures in; probes and events out).
//! - [`probe`]: OPTIONS probes, built and recognised with `sip_lb_proto::sip`.
//! - [`prober`]: the tokio task that drives [`probing`] with sockets and a timer.
//! - [`reload`]: config -> Plan, and what a reload may change.
//! - [`snapshot`]: counters and states read out for metrics and the API.
//! - [`metrics`]: Prometheus exposition of a snapshot.
//! - [`stream_metrics`]: the TCP/TLS layer's families.
//! - [`api`]: the HTTP server (`/metrics` and the admin endpoints).
//! - [`client`]: the CLI side (`sip-lb backends|drain|enable|reload|top`).
//! - [`top`]: the live terminal view.
//! - [`cluster`]: the anycast VIP, `drain-node`, the config digest (scale-out).
pub mod account;
pub mod api;
pub mod bans;
pub mod client;
pub mod cluster;
pub mod csum;
pub mod dns;
pub mod health;
pub mod hep_metrics;
pub mod links;
pub mod metrics;
pub mod probe;
pub mod prober;
pub mod probing;
pub mod reload;
pub mod snapshot;
pub mod state;
pub mod stream_metrics;
mod streams;
pub mod top;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use crate::config::{Config, RunArgs, DEFAULT_CONTROL};
use crate::dataplane::{SharedPlan, SharedShield, WorkerStats};
use probe::ProbeReply;
use probing::{Event, Probe, Probing};
use state::{Backends, Liveness, State};

/// Reads the XDP programs' per-CPU counters for `/metrics` (the data plane
/// owns the `xdp::Steering`; pass e.g. `Box::new(move || steering.counters())`).
pub type XdpReader = Box<dyn Fn() -> Result<crate::xdp::XdpCounters> + Send + Sync>;

/// Reads the AF_XDP data path's counters (`AfXdp::reader`).
pub type AfxdpReader = Box<dyn Fn() -> snapshot::AfxdpSnapshot + Send + Sync>;

/// What `main` hands the control plane once the workers run.
pub struct Setup {
    pub args: RunArgs,
    pub config: Config,
    pub plan: SharedPlan,
    /// Each worker's counters, in worker order.
    pub workers: Vec<Arc<WorkerStats>>,
    /// The CPU each worker is pinned to.
    pub cpus: Vec<Option<usize>>,
    /// XDP counters, when steering is attached.
    pub xdp: Option<XdpReader>,
    /// AF_XDP counters, when that data path runs.
    pub afxdp: Option<AfxdpReader>,
    /// The workers' shield (its runtime bans are published here) and the
    /// sources they report.
    pub shield: SharedShield,
    pub offenders: crossbeam::channel::Receiver<(std::net::IpAddr, crate::dataplane::Offence)>,
    /// The attached XDP program's shield maps (bans and reloads are written
    /// there too), when an XDP program runs on `iface`.
    pub xdp_shield: Option<Arc<crate::xdp::shield::XdpShield>>,
    /// The TCP/TLS layer's counters, when it runs.
    pub streams: Option<Arc<crate::stream::stats::StreamStats>>,
    /// STUN counters, when `stun = true`.
    pub stun: Option<Arc<crate::dataplane::StunStats>>,
    /// Backends' connections, when the stream layer runs: a backend whose
    /// connection cannot be made is down (`links`); reloads change them
    /// (`streams`).
    pub links: Option<Arc<crate::stream::links::Links>>,
    /// The `tls:` listeners' certificate, re-read at each reload.
    pub certs: Option<Arc<crate::stream::tls::Acceptor>>,
    /// The `[cluster]` VIPs, when configured (`cluster::Cluster::start`).
    pub cluster: Option<Arc<cluster::Cluster>>,
    /// HEP mirroring counters, when `[hep]` is on.
    pub hep: Option<Arc<crate::dataplane::hep::HepStats>>,
}

/// The control plane's state, shared by signals, the prober and the API.
pub struct Control {
    args: RunArgs,
    plan: SharedPlan,
    workers: Vec<Arc<WorkerStats>>,
    cpus: Vec<Option<usize>>,
    xdp: Option<XdpReader>,
    afxdp: Option<AfxdpReader>,
    shield: SharedShield,
    offenders: crossbeam::channel::Receiver<(std::net::IpAddr, crate::dataplane::Offence)>,
    xdp_shield: Option<Arc<crate::xdp::shield::XdpShield>>,
    /// Runtime bans, kept across reloads.
    bans: Mutex<bans::Bans>,
    /// The kernel's UDP checksum errors, watched while XDP is attached.
    csum: Mutex<csum::CsumWatch>,
    streams: Option<Arc<crate::stream::stats::StreamStats>>,
    stun: Option<Arc<crate::dataplane::StunStats>>,
    links: Option<Arc<crate::stream::links::Links>>,
    certs: Option<Arc<crate::stream::tls::Acceptor>>,
    cluster: Option<Arc<cluster::Cluster>>,
    hep: Option<Arc<crate::dataplane::hep::HepStats>>,
    inner: Mutex<Inner>,
    generation: AtomicU64,
    reload_failures: AtomicU64,
    /// Serialises reloads (held while the file is read, unlike `inner`).
    reloading: Mutex<()>,
    /// Wakes the prober when a reload changed what [`Inner::probing`] waits for.
    probing_changed: Notify,
    /// Wakes the DNS task after a reload (names are looked up again).
    dns_changed: Notify,
}

/// The running config, backend states and probing, changed together under
/// one lock (held for microseconds, never across an await): a reload and
/// the prober's reports never see each other half done.
pub struct Inner {
    pub config: Config,
    pub backends: Backends,
    pub probing: Probing,
    /// The config as written and the DNS answers that expand it into
    /// `config` (`dns.rs`).
    pub dns: dns::Resolved,
}

/// Why `drain`/`enable` did nothing.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownBackend(pub SocketAddr);

impl std::fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is not a configured backend", self.0)
    }
}

impl Control {
    /// Takes over the running Plan: publishes it again with backend states.
    pub fn new(setup: Setup) -> Arc<Control> {
        let Setup {
            args,
            config,
            plan,
            workers,
            cpus,
            xdp,
            afxdp,
            shield,
            offenders,
            xdp_shield,
            streams,
            stun,
            links,
            certs,
            cluster,
            hep,
        } = setup;
        // Tokens start at a time-derived value so a restarted sip-lb does not
        // take a late answer to its predecessor's probe for its own.
        let token_seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        let c = Control {
            args,
            plan,
            workers,
            cpus,
            xdp,
            afxdp,
            shield,
            offenders,
            xdp_shield,
            bans: Mutex::new(bans::Bans::default()),
            csum: Mutex::new(csum::CsumWatch::default()),
            streams,
            stun,
            links,
            certs,
            cluster,
            hep,
            inner: Mutex::new(Inner {
                dns: dns::Resolved::new(config.clone()),
                config,
                backends: Backends::default(),
                probing: Probing::new(token_seed),
            }),
            generation: AtomicU64::new(1),
            reload_failures: AtomicU64::new(0),
            reloading: Mutex::new(()),
            probing_changed: Notify::new(),
            dns_changed: Notify::new(),
        };
        {
            let mut inner = c.lock();
            let Inner { config, backends, probing, .. } = &mut *inner;
            backends.sync(config, |s| c.slot_totals(s));
            probing.configure(Instant::now(), &config.health, backends.addrs());
            c.publish(&inner);
        }
        Arc::new(c)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, inner: &Inner) {
        let eligible = dns::tiered(&inner.config, &inner.dns, |a| inner.backends.eligible(a));
        self.plan.store(Arc::new(reload::plan_with(&inner.config, &inner.backends, eligible)));
    }

    /// A DNS answer for `name` (`dns.rs`): if it changed the addresses, the
    /// pools, backend states and probing follow, and a new Plan is published.
    pub fn dns_answer(&self, name: &crate::config::DnsBackend, targets: Vec<dns::Target>) {
        let mut inner = self.lock();
        let listed: Vec<String> = targets.iter().map(|t| t.addr.to_string()).collect();
        let Some(run) = inner.dns.update(name, targets) else { return };
        inner.config = run;
        self.sync_backends(&mut inner);
        tracing::info!(pool = %name.pool, name = %name.target, "DNS: backends now {listed:?}");
    }

    /// After `inner.config` changed: backend states, probing, the Plan.
    fn sync_backends(&self, inner: &mut Inner) {
        let Inner { config, backends, probing, .. } = &mut *inner;
        backends.sync(config, |s| self.slot_totals(s));
        probing.configure(Instant::now(), &config.health, backends.addrs());
        self.apply_probe_events(inner);
        if !inner.config.health.enabled {
            inner.backends.reset_health();
        }
        self.publish(inner);
        self.probing_changed.notify_one();
    }

    /// Resolves after a reload (each reload once), for the DNS task.
    pub async fn dns_changed(&self) {
        self.dns_changed.notified().await
    }

    fn lock_bans(&self) -> MutexGuard<'_, bans::Bans> {
        self.bans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bans what the workers and the XDP program reported (for `[shield]
    /// ban_seconds`): a scanner at once, a source over its rate for
    /// `ban_after_over_rate_seconds`, one with `ban_after_failures` final 4xx
    /// within a minute. Lifts expired bans and publishes the set if it changed.
    pub fn ban_offenders(&self) {
        let now = Instant::now();
        let rules = bans::Rules::from(&self.lock().config.shield);
        // Over-rate floods the XDP stage held back never reach the workers.
        let mut over = Vec::new();
        if let Some(x) = &self.xdp_shield {
            x.take_over_rate(&mut over);
        }
        let mut bans = self.lock_bans();
        let mut changed = bans.expire(now);
        let reported = over.into_iter().map(|src| (src, crate::dataplane::Offence::OverRate));
        for (src, what) in reported.chain(std::iter::from_fn(|| self.offenders.try_recv().ok())) {
            if let Some(reason) = bans.offence(src, what, &rules, now) {
                tracing::warn!(source = %src, ?reason, seconds = rules.ban.as_secs(), "shield: banned");
                changed = true;
            }
        }
        if changed {
            self.publish_bans(&mut bans);
        }
    }

    /// Publishes the bans to the workers and the XDP tries (with the running
    /// policy), their new slots zeroed first.
    fn publish_bans(&self, bans: &mut bans::Bans) {
        let fresh = bans.take_fresh();
        for &slot in &fresh {
            self.shield.ban_hits.reset(slot);
        }
        let entries = bans.entries();
        self.shield.bans.store(Arc::new(crate::dataplane::BanSet::new(&entries)));
        if let Some(x) = &self.xdp_shield {
            let written = fresh.iter().try_for_each(|&s| x.reset_hits(s));
            if let Err(e) = written.and_then(|()| x.publish(&self.plan.load().shield, &entries)) {
                tracing::error!("shield: the XDP stage keeps its previous lists (the workers apply the new): {e:#}");
            }
        }
    }

    /// `sip-lb block`: bans `prefix` for `duration` (`None`: until lifted).
    pub fn block(&self, prefix: sip_lb_proto::shield::Prefix, duration: Option<std::time::Duration>) {
        let mut bans = self.lock_bans();
        bans.add(prefix, bans::BanReason::Operator, duration, Instant::now());
        self.publish_bans(&mut bans);
    }

    /// `sip-lb unblock`: lifts the ban of exactly `prefix`; false if none.
    pub fn unblock(&self, prefix: &sip_lb_proto::shield::Prefix) -> bool {
        let mut bans = self.lock_bans();
        let lifted = bans.remove(prefix);
        self.publish_bans(&mut bans);
        lifted
    }

    fn csum_errors(&self) -> u64 {
        self.csum.lock().unwrap_or_else(|e| e.into_inner()).last()
    }

    /// One reading of the kernel's UDP checksum errors (this namespace).
    pub fn watch_checksums(&self) {
        let Some(n) = std::fs::read_to_string("/proc/net/snmp").ok().and_then(|s| csum::udp_in_csum_errors(&s)) else {
            return;
        };
        let xdp = self.lock().config.iface.is_some();
        let mut w = self.csum.lock().unwrap_or_else(|e| e.into_inner());
        if w.observe(n, xdp) {
            tracing::warn!(in_csum_errors = n, "{}", csum::WARNING);
        }
    }

    pub fn bans(&self) -> Vec<bans::BanView> {
        let xdp = |slot| self.xdp_shield.as_ref().map_or(0, |x| x.hits(slot));
        self.lock_bans().list(Instant::now(), |slot| self.shield.ban_hits.get(slot) + xdp(slot))
    }

    /// Sums of (requests, responses) over workers for a counter slot.
    fn slot_totals(&self, slot: usize) -> (u64, u64) {
        self.workers
            .iter()
            .fold((0, 0), |(q, r), w| (q + w.backend_requests[slot].get(), r + w.backend_responses[slot].get()))
    }

    /// Config generation: 1 at start, +1 per applied reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The control API address: `metrics` from the file or flags, else the default.
    pub fn api_addr(&self) -> (SocketAddr, bool) {
        match self.lock().config.metrics {
            Some(a) => (a, true),
            None => (DEFAULT_CONTROL, false),
        }
    }

    /// Where probes are sent from, and the address their Via advertises.
    pub fn probe_addrs(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let inner = self.lock();
        let mut out: Vec<(SocketAddr, SocketAddr)> = Vec::new();
        // The first listen address of each family: IPv6 backends are probed
        // from an IPv6 socket.
        for l in &inner.config.listen {
            let ip = l.addr.ip();
            if out.iter().any(|(b, _)| b.is_ipv4() == ip.is_ipv4()) {
                continue;
            }
            let via_ip = if ip.is_unspecified() { l.advertise.ip() } else { ip };
            // An answer to the cluster VIP would reach whichever node the
            // router picks: probe from this node's own address (the probe's
            // rport brings the answer there).
            let bind_ip = match inner.config.cluster.vips.contains(&ip) {
                true if ip.is_ipv4() => std::net::Ipv4Addr::UNSPECIFIED.into(),
                true => std::net::Ipv6Addr::UNSPECIFIED.into(),
                false => ip,
            };
            out.push((SocketAddr::new(bind_ip, 0), SocketAddr::new(via_ip, 0)));
        }
        out
    }

    /// Re-reads the config (SIGHUP, `sip-lb reload`). On error the running
    /// config stays and the error says why.
    pub fn reload(&self) -> Result<u64> {
        // One reload at a time; the file is read and validated before the
        // state lock is taken, so probes and the API never wait on disk.
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let read = crate::config::Config::load(&self.args).map_err(anyhow::Error::from);
        // Certificates are files too: read before the lock.
        let read = read.and_then(|n| self.read_stream_tls(&n).map(|tls| (n, tls)));
        let mut inner = self.lock();
        let checked = read.and_then(|(n, tls)| reload::check_applicable(&n, &inner.config).map(|()| (n, tls)));
        let (next, tls) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload rejected, keeping the running config: {e:#}");
                return Err(e);
            }
        };
        // Links to new backends exist before the Plan routes to them.
        self.apply_streams(&next, tls);
        inner.config = inner.dns.declare(next);
        self.dns_changed.notify_one();
        let Inner { config, backends, probing, .. } = &mut *inner;
        backends.sync(config, |s| self.slot_totals(s));
        probing.configure(Instant::now(), &config.health, backends.addrs());
        self.apply_probe_events(&mut inner);
        if !inner.config.health.enabled {
            inner.backends.reset_health();
        }
        self.publish(&inner);
        // The XDP tries follow the new block and allow lists and rate.
        self.publish_bans(&mut self.lock_bans());
        self.probing_changed.notify_one();
        let g = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            generation = g,
            "config reloaded: {} pool(s), {} backend(s)",
            inner.config.pools.len(),
            inner.backends.addrs().len()
        );
        Ok(g)
    }

    /// Drains (`true`) or re-enables a backend; returns its new state.
    pub fn set_drained(&self, addr: SocketAddr, drained: bool) -> Result<State, UnknownBackend> {
        let mut inner = self.lock();
        let b = inner.backends.get_mut(addr).ok_or(UnknownBackend(addr))?;
        let changed = b.drained != drained;
        b.drained = drained;
        let state = b.state();
        if changed {
            self.publish(&inner);
            tracing::info!(backend = %addr, state = state.as_str(), "backend {}", if drained { "drained" } else { "enabled" });
        }
        Ok(state)
    }

    /// The prober's wake-up: ends probes timed out at `now` and appends the
    /// probes due to `out`, for the prober to send.
    pub fn poll_probes(&self, now: Instant, out: &mut Vec<Probe>) {
        let mut inner = self.lock();
        inner.probing.handle_timeout(now);
        while let Some(p) = inner.probing.poll_transmit(now) {
            out.push(p);
        }
        self.apply_probe_events(&mut inner);
    }

    /// When the prober must wake up next (`None`: not before a reload).
    pub fn next_probe_deadline(&self) -> Option<Instant> {
        self.lock().probing.poll_timeout()
    }

    /// Resolves after a reload changed the probing (each reload once).
    pub async fn probing_changed(&self) {
        self.probing_changed.notified().await
    }

    /// An answer to a probe arrived on a probe socket.
    pub fn on_probe_reply(&self, now: Instant, reply: ProbeReply) {
        let mut inner = self.lock();
        inner.probing.on_reply(now, reply.token, reply.code);
        self.apply_probe_events(&mut inner);
    }

    /// A probe from [`Control::poll_probes`] could not be sent.
    pub fn on_probe_send_failed(&self, now: Instant, token: u64) {
        let mut inner = self.lock();
        inner.probing.on_send_failed(now, token);
        self.apply_probe_events(&mut inner);
    }

    /// What the probing reported: counters and last answer per backend,
    /// up/down with a log line, and a new Plan if an enabled backend changed.
    fn apply_probe_events(&self, inner: &mut Inner) {
        let mut changed = false;
        while let Some(event) = inner.probing.poll_event() {
            match event {
                Event::Probed { backend, outcome, alive, rtt } => {
                    let Some(b) = inner.backends.get_mut(backend) else { continue };
                    b.probes_sent += 1;
                    if !alive {
                        b.probes_failed += 1;
                    }
                    if let health::Outcome::Reply(code) = outcome {
                        b.last_code = Some(code);
                        b.last_rtt = rtt;
                    }
                }
                Event::WentDown { backend, outcome } => {
                    let Some(b) = inner.backends.get_mut(backend) else { continue };
                    b.health = Liveness::Down;
                    changed |= !b.drained;
                    tracing::warn!(backend = %backend, ?outcome, "backend down: its Call-IDs move to the others");
                }
                Event::WentUp { backend } => {
                    let Some(b) = inner.backends.get_mut(backend) else { continue };
                    b.health = Liveness::Up;
                    changed |= !b.drained;
                    tracing::info!(backend = %backend, "backend up again");
                }
            }
        }
        if changed {
            self.publish(inner);
        }
    }
}

/// Scale-out (`cluster`): what the announcer, `drain-node` and `/metrics` read.
impl Control {
    /// Backends the router may choose now (up and not drained).
    pub fn eligible_backends(&self) -> usize {
        self.lock().backends.iter().filter(|(_, b)| b.state() == State::Up).count()
    }

    /// Datagrams received by every worker so far.
    pub fn rx_datagrams(&self) -> u64 {
        self.workers.iter().map(|w| w.rx_datagrams.get()).sum()
    }

    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// The digest of the running config (`sip_lb_config_info`).
    pub fn config_digest(&self) -> String {
        cluster::digest::digest(&self.lock().config)
    }

    /// `sip-lb drain-node`: withdraws the VIPs and stops the process once
    /// traffic has stopped. Err if this node has no VIP or already drains.
    pub fn drain_node(self: &Arc<Self>, limits: cluster::DrainLimits) -> Result<()> {
        let c = self.cluster.clone().ok_or_else(|| anyhow::anyhow!("this node has no [cluster] vip to withdraw"))?;
        if !c.begin_drain() {
            anyhow::bail!("a drain is already under way");
        }
        tokio::spawn(cluster::drain(self.clone(), c, limits));
        Ok(())
    }
}

/// Resolves when `drain-node` has finished (never without a cluster).
async fn drained(control: &Control) {
    match &control.cluster {
        Some(c) => c.drained().await,
        None => std::future::pending().await,
    }
}

/// Serves signals, the prober and the control API until SIGINT or SIGTERM.
pub async fn run_until_shutdown(setup: Setup) -> Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let control = Control::new(setup);
    // DNS-named backends are looked up before the control API answers.
    let mut due = std::collections::BTreeMap::new();
    dns::step(&control, &mut due).await;
    tokio::spawn(dns::run(control.clone(), due));
    api::start(control.clone()).await?;
    tokio::spawn(prober::run(control.clone()));
    tokio::spawn(bans_ticker(control.clone()));
    tokio::spawn(csum_ticker(control.clone()));
    tokio::spawn(links::ticker(control.clone()));
    if let Some(c) = control.cluster.clone() {
        tokio::spawn(cluster::announce(control.clone(), c));
    }
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if crate::fault::armed(crate::fault::Fault::ControlPanic) {
                    // A task panics: without `fault::abort_on_any_panic` tokio
                    // would log it and run on without that task.
                    tokio::spawn(async { panic!("SIP_LB_FAULT=control-panic: a control-plane task panics on SIGHUP") });
                }
                let _ = control.reload();
            }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); return Ok(()); }
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); return Ok(()); }
            _ = drained(&control) => { tracing::info!("drain-node: stopping"); return Ok(()); }
        }
    }
}

/// How often reported offenders are banned and expired bans lifted.
const BAN_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Bans the sources the workers reported and lifts expired bans, every
/// [`BAN_TICK`].
async fn bans_ticker(control: Arc<Control>) {
    let mut tick = tokio::time::interval(BAN_TICK);
    loop {
        tick.tick().await;
        control.ban_offenders();
    }
}

/// Reads the kernel's `Udp: InCsumErrors` every second and explains, once,
/// a rise while XDP is attached to `iface` (`csum.rs`).
async fn csum_ticker(control: Arc<Control>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        control.watch_checksums();
    }
}

/// `main` can move the `xdp::Steering` into an [`XdpReader`] closure.
#[allow(dead_code)]
fn steering_fits_an_xdp_reader(steering: crate::xdp::Steering) -> XdpReader {
    Box::new(move || steering.counters())
}
