//! SIP over TCP and TLS (`docs/transports.md`). Three parts, each moving
//! bytes one way:
//!
//! - the connection layer ([`conn`]), a small tokio runtime of its own:
//!   accepts (with the `[tcp]` limits), frames with the core's
//!   [`sip_lb_proto::stream::Framer`], hands each message to a stream
//!   worker, writes what is queued for the connection;
//! - the stream workers ([`worker`]), one thread per UDP worker: the core
//!   decides, requests leave over UDP with a flow token in our Via;
//! - the UDP workers ([`relay`]): a backend's response whose Via carries a
//!   verified token is queued on that connection ([`flows`]).
//!
//! - backends' connections ([`links`]): for pools that reach their
//!   backends over TCP/TLS, one persistent connection per backend, following
//!   reloads.
//!
//! Counters: [`stats`]; TLS: [`tls`].
pub mod conn;
pub mod flows;
pub mod links;
pub mod relay;
pub mod stats;
pub mod tls;
pub mod worker;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use crate::config::{Config, StreamConfig, Transport};
use crate::dataplane::{SharedPlan, SharedShield};
use flows::{Flows, Refused};
use stats::StreamStats;
use worker::StreamWorker;

/// Messages waiting for one stream worker at most.
const WORKER_QUEUE: usize = 4096;

/// The running stream layer.
pub struct Streams {
    runtime: Option<tokio::runtime::Runtime>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    stats: Arc<StreamStats>,
    flows: Arc<Flows>,
    links: Arc<links::Links>,
    /// The `tls:` listeners' certificate, when there are any.
    certs: Option<Arc<tls::Acceptor>>,
}

/// A bound stream listener, before the layer starts.
pub struct Bound {
    listener: TcpListener,
    transport: Transport,
    /// The UDP listener (index into `Config::listen`) our Via names for
    /// requests from this listener: the first of the same family.
    on: usize,
    side: Arc<flows::Side>,
}

/// Binds every `tcp:`/`tls:` address of the config (a busy port fails
/// start-up, as for UDP).
pub fn bind(config: &Config) -> Result<Vec<Bound>> {
    let v4 = |a: SocketAddr| a.ip().to_canonical().is_ipv4();
    let mut out = Vec::new();
    for s in &config.streams {
        let listener =
            TcpListener::bind(s.addr).with_context(|| format!("binding {}:{}", s.transport.as_str(), s.addr))?;
        listener.set_nonblocking(true)?;
        // The validator guarantees a UDP listen address of the family.
        let on = config.listen.iter().position(|l| v4(l.addr) == v4(s.addr)).unwrap_or(0);
        let side = Arc::new(side(config, on, s.transport, listener.local_addr()?));
        out.push(Bound { listener, transport: s.transport, on, side });
    }
    Ok(out)
}

/// The client's side of a stream listener bound at `local`: our Record-Route
/// names its address (the UDP listener's advertised address when it is bound
/// to a wildcard) and transport.
fn side(config: &Config, on: usize, transport: Transport, local: SocketAddr) -> flows::Side {
    use sip_lb_proto::flow::via_transport::ViaTransport;
    let ip = match local.ip().is_unspecified() {
        true => config.listen.get(on).map(|l| l.advertise.ip()).unwrap_or(local.ip()),
        false => local.ip(),
    };
    let (via, name) = match transport {
        Transport::Tcp => (ViaTransport::Tcp, "tcp"),
        Transport::Tls => (ViaTransport::Tls, "tls"),
    };
    let uri = sip_lb_proto::flow::record_route::route_uri(SocketAddr::new(ip, local.port()), Some(name));
    flows::Side { transport: via, route_uri: uri.into() }
}

impl Streams {
    /// Starts the stream workers (sending from clones of the UDP workers'
    /// sockets, `udp[w][l]`) and the connection layer.
    /// `shield` is the UDP workers' (one limit per source, whatever the transport).
    pub fn start(
        bound: Vec<Bound>,
        config: &Config,
        udp: &[Vec<UdpSocket>],
        plan: SharedPlan,
        shield: SharedShield,
    ) -> Result<Streams> {
        let limits: StreamConfig = config.stream;
        let certs = match &config.tls {
            Some(t) if bound.iter().any(|b| b.transport == Transport::Tls) => Some(Arc::new(tls::Acceptor::new(t)?)),
            _ => None,
        };
        let connector = connector(config)?;
        let stats = Arc::new(StreamStats::default());
        let flows = Arc::new(Flows::new(limits.max_connections, limits.max_per_ip));
        // Always there while the layer runs, empty without links: a reload
        // may add a pool of TCP/TLS backends.
        let links = Arc::new(links::Links::new(limits.large_request_bytes, stats.clone()));
        let relay = Arc::new(relay::Relay { flows: flows.clone(), stats: stats.clone(), links: Some(links.clone()) });
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut queues = Vec::new();
        for (index, socks) in udp.iter().enumerate() {
            let (tx, rx) = crossbeam::channel::bounded(WORKER_QUEUE);
            queues.push(tx);
            let sockets = socks.iter().map(|s| s.try_clone()).collect::<std::io::Result<Vec<_>>>()?;
            let w = StreamWorker {
                index,
                rx,
                sockets,
                plan: plan.clone(),
                flows: flows.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
                relay: relay.clone(),
                shield: shield.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("sip-lb-s{index}"))
                .spawn(move || crate::fault::run_or_abort(index, || w.run()))?;
            threads.push(t);
        }
        let shared = Arc::new(conn::Shared {
            workers: queues,
            flows: flows.clone(),
            stats: stats.clone(),
            idle: Duration::from_millis(limits.idle_timeout_ms),
            max_message: limits.max_message_bytes,
            shield,
            plan: plan.clone(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sip-lb-conn")
            .enable_all()
            .build()?;
        // Links before listeners: no request from a connection finds its
        // backend's link missing.
        links.start(runtime.handle().clone(), shared.clone(), &config.listen);
        links.apply(&config.links, connector);
        let handshake = Duration::from_millis(limits.handshake_timeout_ms);
        for b in bound {
            let local = b.listener.local_addr()?;
            let tls = match b.transport {
                Transport::Tcp => None,
                Transport::Tls => certs.clone(),
            };
            let sh = shared.clone();
            let _guard = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(b.listener)?;
            tracing::info!(addr = %local, transport = b.transport.as_str(), "accepting connections");
            runtime.spawn(accept_loop(listener, b.on, b.side, tls, handshake, sh));
        }
        Ok(Streams { runtime: Some(runtime), threads, stop, stats, flows, links, certs })
    }

    pub fn stats(&self) -> Arc<StreamStats> {
        self.stats.clone()
    }

    /// What the UDP workers need to relay responses to connections.
    pub fn relay(&self) -> relay::Relay {
        relay::Relay { flows: self.flows.clone(), stats: self.stats.clone(), links: Some(self.links.clone()) }
    }

    /// The backends' connections, for the health logic and reloads.
    pub fn links(&self) -> Arc<links::Links> {
        self.links.clone()
    }

    /// The `tls:` listeners' certificate, for reloads (`None`: no `tls:`
    /// listener).
    pub fn certs(&self) -> Option<Arc<tls::Acceptor>> {
        self.certs.clone()
    }

    /// Closes every connection and stops the stream workers.
    pub fn stop(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The TLS connector for the config's `tls` pools (`None`: none).
pub fn connector(config: &Config) -> Result<Option<tokio_rustls::TlsConnector>> {
    let tls_pools = config.links.iter().any(|l| l.transport == crate::config::PoolTransport::Tls);
    match &config.backend_tls {
        Some(t) if tls_pools => Ok(Some(tls::connector(t)?)),
        _ => Ok(None),
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    on: usize,
    side: Arc<flows::Side>,
    tls: Option<Arc<tls::Acceptor>>,
    handshake: Duration,
    sh: Arc<conn::Shared>,
) {
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Blocked and banned sources do not get a connection (their
        // datagrams get nothing either); rates apply per message.
        if let Err(why) = admit_source(&sh, peer) {
            sh.stats.shield_drops[why.index()].inc();
            continue;
        }
        let (tx, rx) = mpsc::channel(flows::WRITE_QUEUE);
        let token = match sh.flows.open(peer, tx.clone(), side.clone()) {
            Ok(t) => t,
            Err(Refused::Full) => {
                sh.stats.refused_max.inc();
                continue;
            }
            Err(Refused::PerIp) => {
                sh.stats.refused_per_ip.inc();
                continue;
            }
        };
        sh.stats.accepted.inc();
        let _ = sock.set_nodelay(true);
        let sh = sh.clone();
        // The certificate as of this connection (a reload may replace it).
        let tls = tls.as_ref().map(|t| t.current());
        tokio::spawn(async move {
            let Some(acceptor) = tls else {
                return conn::serve(sock, peer, on, token, rx, tx, sh).await;
            };
            match tokio::time::timeout(handshake, acceptor.accept(sock)).await {
                Ok(Ok(s)) => conn::serve(s, peer, on, token, rx, tx, sh).await,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake: {e}");
                    sh.stats.tls_handshake_failed.inc();
                    sh.flows.close(token, peer);
                    sh.stats.closed.inc();
                }
                Err(_) => {
                    sh.stats.tls_handshake_timeout.inc();
                    sh.flows.close(token, peer);
                    sh.stats.closed.inc();
                }
            }
        });
    }
}

/// The shield's verdict on a new connection from `peer`: its prefix lists
/// and runtime bans (allow wins), as for a datagram.
fn admit_source(sh: &conn::Shared, peer: SocketAddr) -> Result<(), sip_lb_proto::shield::ShieldDrop> {
    use sip_lb_proto::shield::ShieldDrop;
    let plan = sh.plan.load();
    let ip = peer.ip().to_canonical();
    if plan.shield.allow.contains(ip) {
        return Ok(());
    }
    if plan.shield.block.contains(ip) {
        return Err(ShieldDrop::Blocked);
    }
    let bans = sh.shield.bans.load();
    if let Some(slot) = bans.slot_of(ip) {
        sh.shield.ban_hits.add(slot);
        return Err(ShieldDrop::Banned);
    }
    Ok(())
}
