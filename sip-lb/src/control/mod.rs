//! The control plane: a small tokio runtime beside the data plane. It owns
//! configuration and backend state and publishes new [`Plan`]s; it never
//! touches a datagram, and the data plane never waits for it.
//!
//! - [`state`]: per-backend health, drain and counter slot.
//! - [`health`]: the up/down state machine (pure: probe outcomes in).
//! - [`probe`]: OPTIONS probes, built and recognised with `sip_lb_proto::sip`.
//! - [`prober`]: the tokio task that sends probes and feeds outcomes.
//! - [`reload`]: config -> Plan, and what a reload may change.
//! - [`snapshot`]: counters and states read out for metrics and the API.
//! - [`metrics`]: Prometheus exposition of a snapshot.
//! - [`api`]: the HTTP server (`/metrics` and the admin endpoints).
//! - [`client`]: the CLI side (`sip-lb backends|drain|enable|reload|top`).
//! - [`top`]: the live terminal view.
pub mod api;
pub mod client;
pub mod health;
pub mod metrics;
pub mod probe;
pub mod prober;
pub mod reload;
pub mod snapshot;
pub mod state;
pub mod top;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, HealthConfig, RunArgs, DEFAULT_CONTROL};
use crate::dataplane::{SharedPlan, WorkerStats};
use health::{Outcome, Transition};
use state::{Backends, State};

/// Reads the XDP programs' per-CPU counters for `/metrics` (the data plane
/// owns the `xdp::Steering`; pass e.g. `Box::new(move || steering.counters())`).
pub type XdpReader = Box<dyn Fn() -> Result<crate::xdp::XdpCounters> + Send + Sync>;

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
}

/// The control plane's state, shared by signals, the prober and the API.
pub struct Control {
    args: RunArgs,
    plan: SharedPlan,
    workers: Vec<Arc<WorkerStats>>,
    cpus: Vec<Option<usize>>,
    xdp: Option<XdpReader>,
    inner: Mutex<Inner>,
    generation: AtomicU64,
    reload_failures: AtomicU64,
}

/// The running config and backend states, changed together under one lock
/// (held for microseconds, never across an await).
pub struct Inner {
    pub config: Config,
    pub backends: Backends,
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
        let Setup { args, config, plan, workers, cpus, xdp } = setup;
        let c = Control {
            args,
            plan,
            workers,
            cpus,
            xdp,
            inner: Mutex::new(Inner { config, backends: Backends::default() }),
            generation: AtomicU64::new(1),
            reload_failures: AtomicU64::new(0),
        };
        {
            let mut inner = c.lock();
            let Inner { config, backends } = &mut *inner;
            backends.sync(config, |s| c.slot_totals(s));
            c.publish(&inner);
        }
        Arc::new(c)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, inner: &Inner) {
        self.plan.store(Arc::new(reload::plan_for(&inner.config, &inner.backends)));
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

    pub fn health_config(&self) -> HealthConfig {
        self.lock().config.health
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
            out.push((SocketAddr::new(ip, 0), SocketAddr::new(via_ip, 0)));
        }
        out
    }

    /// Every backend address, each once.
    pub fn backend_addrs(&self) -> Vec<SocketAddr> {
        self.lock().backends.addrs()
    }

    /// Re-reads the config (SIGHUP, `sip-lb reload`). On error the running
    /// config stays and the error says why.
    pub fn reload(&self) -> Result<u64> {
        let mut inner = self.lock();
        let next = match reload::load_next(&self.args, &inner.config) {
            Ok(n) => n,
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload rejected, keeping the running config: {e:#}");
                return Err(e);
            }
        };
        inner.config = next;
        let Inner { config, backends } = &mut *inner;
        backends.sync(config, |s| self.slot_totals(s));
        if !config.health.enabled {
            backends.reset_health();
        }
        self.publish(&inner);
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

    /// The prober's report on one probe.
    pub fn on_probe(&self, addr: SocketAddr, outcome: Outcome, rtt: Option<Duration>) {
        let mut inner = self.lock();
        let cfg = inner.config.health;
        let Some(b) = inner.backends.get_mut(addr) else {
            return;
        };
        b.probes_sent += 1;
        if !health::Health::is_alive(outcome, &cfg) {
            b.probes_failed += 1;
        }
        if let Outcome::Reply(code) = outcome {
            b.last_code = Some(code);
            b.last_rtt = rtt;
        }
        if let Some(t) = b.health.on_probe(outcome, &cfg) {
            let drained = b.drained;
            match t {
                Transition::WentDown => {
                    tracing::warn!(backend = %addr, ?outcome, "backend down: its Call-IDs move to the others")
                }
                Transition::WentUp => tracing::info!(backend = %addr, "backend up again"),
            }
            if !drained {
                self.publish(&inner);
            }
        }
    }
}

/// Serves signals, the prober and the control API until SIGINT or SIGTERM.
pub async fn run_until_shutdown(setup: Setup) -> Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let control = Control::new(setup);
    api::start(control.clone()).await?;
    tokio::spawn(prober::run(control.clone()));
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
        }
    }
}

/// `main` can move the `xdp::Steering` into an [`XdpReader`] closure.
#[allow(dead_code)]
fn steering_fits_an_xdp_reader(steering: crate::xdp::Steering) -> XdpReader {
    Box::new(move || steering.counters())
}
