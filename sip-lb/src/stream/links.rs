//! Connections to backends (issue 13): for pools with `transport = "tcp"`
//! or `"tls"` every request, for `large_over_tcp` pools the requests over
//! `[tcp] large_request_bytes` (RFC 3261 §18.1.1), go to the backend over
//! one persistent connection per backend, made at start (or when a reload
//! adds the backend) and re-made with backoff when it breaks.
//!
//! The workers hand a message to a link like a response to a client
//! connection: an atomic load of the table and a `try_send`, no lock, no
//! wait (the copy crosses into the link's writer task). Our Via then names
//! the link's transport (`sip_lb_proto::flow::via_transport`), so the
//! backend answers on the connection (§18.2.2); its responses and requests
//! are framed like a client's and go through the stream workers and the
//! core as any message. A link whose connection cannot be made is `Down`:
//! the control plane takes its backend out of the router (`control::links`)
//! until it connects again, and a `large_over_tcp` backend's large requests
//! go as datagrams meanwhile.
//!
//! A reload ([`Links::apply`]) keeps the links whose backend and transport
//! are unchanged (their connection goes on), starts links for new backends
//! and drains the links of removed ones: a draining link takes no request
//! any more, but keeps its connection, reading the backend's answers to
//! what was in flight and carrying the answers to requests the backend
//! sent, until nothing has crossed it for [`DRAIN_QUIET`], at most
//! [`DRAIN_MAX`], then closes it.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use sip_lb_proto::flow::via_transport::{self, ViaTransport};
use sip_lb_proto::flow::FlowToken;
use sip_lb_proto::proxy::Forwarded;
use sip_lb_proto::stream::{Frame, Framer};

use super::conn::{self, Shared};
use super::stats::StreamStats;
use super::worker::{StreamIn, What};
use crate::config::{LinkConfig, Listen, PoolTransport};

/// Messages waiting for one backend's connection at most.
pub const LINK_QUEUE: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection that ends sooner than this counts as a failed attempt for
/// the backoff (a backend that accepts and closes at once is not hammered).
const STABLE: Duration = Duration::from_secs(1);
const READ_CHUNK: usize = 16 * 1024;
/// A removed backend's connection closes once nothing has crossed it for
/// this long: the answers to what was in flight have come back.
pub const DRAIN_QUIET: Duration = Duration::from_secs(2);
/// ... and at the latest after this long: 64 x T1, the life of a
/// non-INVITE transaction (RFC 3261 §17.1.2.2).
pub const DRAIN_MAX: Duration = Duration::from_secs(32);

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

struct Link {
    /// Never reused: a message read from a link names it by this id
    /// (`StreamIn::link`), and the link may be gone when the reply is ready.
    id: usize,
    config: LinkConfig,
    state: AtomicU8,
    tx: mpsc::Sender<Vec<u8>>,
    /// Set (once) when a reload removed the backend: read by the workers.
    draining: AtomicBool,
    /// The same, for the link's task to wait on.
    drain: watch::Sender<bool>,
}

impl Link {
    fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.drain.send_replace(true);
    }
}

/// What the links' tasks need, known once the connection layer runs.
struct Env {
    runtime: tokio::runtime::Handle,
    shared: Arc<Shared>,
    /// Whether each UDP listen address is IPv4: a backend's messages count
    /// as arriving on the first listener of its family.
    listen_v4: Vec<bool>,
}

/// Every backend reached over a connection.
pub struct Links {
    /// The links of the running config, in its order, then the draining
    /// ones (so a backend re-added with another transport finds its new
    /// link first).
    table: ArcSwap<Vec<Arc<Link>>>,
    /// Whether `table` holds any link: the workers' only cost without links.
    any: AtomicBool,
    /// `[backend_tls]` as last applied, for TLS links' next connections.
    connector: ArcSwapOption<tokio_rustls::TlsConnector>,
    next_id: AtomicUsize,
    /// Serialises changes of `table` (reloads, drained links leaving).
    changing: Mutex<()>,
    env: OnceLock<Env>,
    large: usize,
    stats: Arc<StreamStats>,
}

impl Links {
    /// No link yet: [`Links::start`], then [`Links::apply`].
    pub fn new(large: usize, stats: Arc<StreamStats>) -> Links {
        Links {
            table: ArcSwap::from_pointee(Vec::new()),
            any: AtomicBool::new(false),
            connector: ArcSwapOption::empty(),
            next_id: AtomicUsize::new(0),
            changing: Mutex::new(()),
            env: OnceLock::new(),
            large,
            stats,
        }
    }

    /// Where links run: the connection layer's runtime, handing what they
    /// read to its stream workers.
    pub fn start(&self, runtime: tokio::runtime::Handle, shared: Arc<Shared>, listen: &[Listen]) {
        let listen_v4 = listen.iter().map(|l| l.addr.ip().to_canonical().is_ipv4()).collect();
        let _ = self.env.set(Env { runtime, shared, listen_v4 });
    }

    /// Makes the links follow `configs` (the config's `links`): unchanged
    /// ones keep their connection, new ones start connecting, removed ones
    /// drain (module doc). `connector` (`[backend_tls]`) serves TLS links'
    /// connections from now on; open ones keep theirs.
    pub fn apply(self: &Arc<Self>, configs: &[LinkConfig], connector: Option<tokio_rustls::TlsConnector>) {
        let Some(env) = self.env.get() else { return };
        let _one = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        self.connector.store(connector.map(Arc::new));
        let old = self.table.load_full();
        let mut next: Vec<Arc<Link>> = Vec::with_capacity(configs.len());
        for c in configs {
            match old.iter().find(|l| l.config == *c && !l.draining()) {
                Some(l) => next.push(l.clone()),
                None => next.push(self.spawn(env, *c)),
            }
        }
        let mut draining = Vec::new();
        for l in old.iter() {
            if next.iter().any(|n| Arc::ptr_eq(n, l)) {
                continue;
            }
            if !l.draining() {
                let (addr, t) = (l.config.addr, l.config.transport.as_str());
                tracing::info!(backend = %addr, transport = t, "backend removed: its connection drains");
                l.begin_drain();
            }
            draining.push(l.clone());
        }
        next.extend(draining);
        self.any.store(!next.is_empty(), Ordering::Relaxed);
        self.table.store(Arc::new(next));
    }

    fn spawn(self: &Arc<Self>, env: &Env, config: LinkConfig) -> Arc<Link> {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = AtomicU8::new(CONNECTING);
        let (draining, drain) = (AtomicBool::new(false), watch::channel(false).0);
        let link = Arc::new(Link { id, config, state, tx, draining, drain });
        let v4 = config.addr.ip().to_canonical().is_ipv4();
        // The validator guarantees a UDP listen address of the family.
        let on = env.listen_v4.iter().position(|&l| l == v4).unwrap_or(0);
        env.runtime.spawn(run(self.clone(), link.clone(), rx, on, env.shared.clone()));
        link
    }

    /// A drained link's task has ended: it leaves the table.
    fn remove(&self, id: usize) {
        let _one = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let next: Vec<Arc<Link>> = self.table.load().iter().filter(|l| l.id != id).cloned().collect();
        self.any.store(!next.is_empty(), Ordering::Relaxed);
        self.table.store(Arc::new(next));
    }

    /// Each backend of the running config with a link, and whether it can
    /// take messages (its connection is up or being made: not down).
    pub fn states(&self) -> Vec<(SocketAddr, bool)> {
        let table = self.table.load();
        let live = table.iter().filter(|l| !l.draining());
        live.map(|l| (l.config.addr, l.state.load(Ordering::Relaxed) != DOWN)).collect()
    }

    /// What the core forwarded to `to` (`out`, our Via first for a
    /// request): `None` when it goes as a datagram (no link to `to`, or a
    /// small request to a `large_over_tcp` backend, or a large one while its
    /// connection is down); `Some(queued)` when the link takes it, queued or
    /// dropped (counted). A response goes over the link only to a backend
    /// whose pool uses connections (a request it sent over one). A draining
    /// link takes only responses (answers to requests its backend sent over
    /// it) while its connection lasts: requests go to the backends of the
    /// running config.
    pub fn forward(&self, out: &mut [u8], to: SocketAddr, what: Forwarded) -> Option<bool> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let table = self.table.load();
        // A live link first: they come before the draining ones.
        let l = table.iter().find(|l| l.config.addr == to)?;
        if what == Forwarded::Request && l.draining() {
            return None;
        }
        let always = l.config.always();
        if !always && (what == Forwarded::Response || out.len() <= self.large) {
            return None;
        }
        if l.state.load(Ordering::Relaxed) == DOWN {
            if !always {
                return None;
            }
            self.stats.links.dropped_down.inc();
            return Some(false);
        }
        if what == Forwarded::Request {
            let t = match l.config.transport {
                PoolTransport::Tls => ViaTransport::Tls,
                PoolTransport::Tcp | PoolTransport::Udp => ViaTransport::Tcp,
            };
            // A Via we cannot find stays UDP: the backend answers by datagram.
            via_transport::set(out, t);
        }
        Some(self.queue(l, out))
    }

    /// A reply to a message that came over link `id` (a stateless reply to
    /// a backend's request, a CRLF pong); false when that link is gone.
    pub fn reply(&self, id: usize, bytes: &[u8]) -> bool {
        self.table.load().iter().find(|l| l.id == id).is_some_and(|l| self.queue(l, bytes))
    }

    fn queue(&self, l: &Link, bytes: &[u8]) -> bool {
        match l.tx.try_send(bytes.to_vec()) {
            Ok(()) => {
                self.stats.links.sent.inc();
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.links.dropped_full.inc();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.links.dropped_down.inc();
                false
            }
        }
    }
}

impl Link {
    /// `why`: the last error, when the connection could not be made.
    fn set(&self, state: u8, why: Option<&str>) {
        let was = self.state.swap(state, Ordering::Relaxed);
        if was != state && (was == DOWN || state == DOWN) && !self.draining() {
            let (addr, t) = (self.config.addr, self.config.transport.as_str());
            match state {
                DOWN => {
                    tracing::warn!(backend = %addr, transport = t, "backend connection down: {}", why.unwrap_or("lost"))
                }
                _ => tracing::info!(backend = %addr, transport = t, "backend connection up"),
            }
        }
    }
}

/// Makes connections to one backend and serves them until a reload removes
/// it (then drains, and leaves the table). `on` is the UDP listener its
/// messages count as arriving on.
async fn run(links: Arc<Links>, link: Arc<Link>, mut rx: mpsc::Receiver<Vec<u8>>, on: usize, sh: Arc<Shared>) {
    let addr = link.config.addr;
    let mut drain = link.drain.subscribe();
    let mut backoff = BACKOFF_MIN;
    while !link.draining() {
        let began = Instant::now();
        // Read at each attempt: a reload may have changed `[backend_tls]`.
        let tls = match link.config.transport {
            PoolTransport::Tls => links.connector.load_full(),
            PoolTransport::Tcp | PoolTransport::Udp => None,
        };
        let attempt = tokio::select! {
            c = connect(addr, link.config.transport, tls.as_deref()) => c,
            _ = drain.wait_for(|d| *d) => break,
        };
        let failed = match attempt {
            Ok(Conn::Tcp(s)) => {
                serve(s, &links, &link, &mut rx, on, &sh).await;
                None
            }
            Ok(Conn::Tls(s)) => {
                serve(*s, &links, &link, &mut rx, on, &sh).await;
                None
            }
            Err(e) => {
                tracing::debug!(backend = %addr, "connect: {e}");
                links.stats.links.connect_failed.inc();
                Some(e.to_string())
            }
        };
        if link.draining() {
            break;
        }
        if failed.is_none() {
            links.stats.links.lost.inc();
            if began.elapsed() >= STABLE {
                // A connection that lived: try again at once, still usable.
                link.set(CONNECTING, None);
                backoff = BACKOFF_MIN;
                continue;
            }
        }
        link.set(DOWN, failed.as_deref());
        // What was queued for a connection that could not be made is stale.
        while rx.try_recv().is_ok() {
            links.stats.links.dropped_down.inc();
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = drain.wait_for(|d| *d) => break,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    // Removed by a reload: nothing more is queued on a link out of the table.
    links.remove(link.id);
    rx.close();
    while rx.try_recv().is_ok() {
        links.stats.links.dropped_down.inc();
    }
    tracing::info!(backend = %addr, transport = link.config.transport.as_str(), "removed backend's connection closed");
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

async fn connect(
    addr: SocketAddr,
    transport: PoolTransport,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> std::io::Result<Conn> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
    let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out())??;
    let _ = s.set_nodelay(true);
    if transport != PoolTransport::Tls {
        return Ok(Conn::Tcp(s));
    }
    // The validator requires [backend_tls] for a "tls" pool.
    let connector = tls.ok_or_else(|| std::io::Error::other("no [backend_tls] for a tls backend"))?;
    // The backend's certificate must name its IP address.
    let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let s = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, s)).await.map_err(|_| timed_out())??;
    Ok(Conn::Tls(Box::new(s)))
}

/// Serves one connection until it breaks, or until it has drained after a
/// reload removed its backend: writes what is queued, frames what arrives
/// and hands it to the stream workers.
async fn serve<S>(stream: S, links: &Links, link: &Link, rx: &mut mpsc::Receiver<Vec<u8>>, on: usize, sh: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    links.stats.links.connected.inc();
    link.set(UP, None);
    let (mut r, mut w) = tokio::io::split(stream);
    // When something last crossed the connection, ms after `since`.
    let since = Instant::now();
    let last = AtomicU64::new(0);
    let touch = || last.store(since.elapsed().as_millis() as u64, Ordering::Relaxed);
    let write = async {
        while let Some(b) = rx.recv().await {
            // Before and after: a write under way is never mistaken for quiet.
            touch();
            if w.write_all(&b).await.is_err() {
                return;
            }
            touch();
        }
    };
    let mut drain = link.drain.subscribe();
    let drained = async {
        if drain.wait_for(|d| *d).await.is_err() {
            return std::future::pending().await;
        }
        let until = Instant::now() + DRAIN_MAX;
        loop {
            let quiet_since = since + Duration::from_millis(last.load(Ordering::Relaxed));
            let empty = link.tx.capacity() == link.tx.max_capacity();
            if empty && quiet_since.elapsed() >= DRAIN_QUIET || Instant::now() >= until {
                return;
            }
            let wake = (quiet_since + DRAIN_QUIET).max(Instant::now() + Duration::from_millis(50)).min(until);
            tokio::time::sleep_until(wake.into()).await;
        }
    };
    let closing = tokio::select! {
        () = read(&mut r, links, link, on, sh, &touch) => false,
        () = write => false,
        () = drained => true,
    };
    if closing {
        // A clean close (TLS close_notify, then FIN), bounded.
        let _ = tokio::time::timeout(Duration::from_secs(1), w.shutdown()).await;
    }
}

async fn read<R: AsyncRead + Unpin>(r: &mut R, links: &Links, link: &Link, on: usize, sh: &Shared, touch: &impl Fn()) {
    let peer = link.config.addr;
    let mut framer = Framer::new(sh.max_message);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => touch(),
        }
        loop {
            let (len, call_id) = match framer.next(&buf) {
                Frame::NeedMore => break,
                Frame::Ping { len } => {
                    links.queue(link, b"\r\n");
                    buf.drain(..len);
                    continue;
                }
                Frame::Skip { len } => {
                    buf.drain(..len);
                    continue;
                }
                Frame::Message { len, call_id } => (len, call_id),
                // A backend's message without Content-Length ends at its
                // empty line; the core decides whether it is acceptable.
                Frame::NoLength { len } => (len, None),
                // Framing is lost: the next connection starts clean.
                Frame::Fatal { .. } => return,
            };
            links.stats.links.received.inc();
            // The token names no client connection: replies go to the link.
            let token = FlowToken { slot: u32::MAX, generation: 0 };
            let bytes = buf[..len].to_vec();
            let m = StreamIn { token, peer, on, what: What::Message, bytes, call_id, link: Some(link.id) };
            conn::hand_off(sh, m);
            buf.drain(..len);
        }
    }
}
