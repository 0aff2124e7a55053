//! Connections to backends (issue 13): for pools with `transport = "tcp"`
//! or `"tls"` every request, for `large_over_tcp` pools the requests over
//! `[tcp] large_request_bytes` (RFC 3261 §18.1.1), go to the backend over
//! one persistent connection per backend, made at start and re-made with
//! backoff when it breaks.
//!
//! The workers hand a message to a link like a response to a client
//! connection: one atomic load and a `try_send`, no lock, no wait (the copy
//! crosses into the link's writer task). Our Via then names the link's
//! transport (`sip_lb_proto::flow::via_transport`), so the backend answers
//! on the connection (§18.2.2); its responses and requests are framed like
//! a client's and go through the stream workers and the core as any
//! message. A link whose connection cannot be made is `Down`: the control
//! plane takes its backend out of the router (`control::links`) until it
//! connects again, and a `large_over_tcp` backend's large requests go as
//! datagrams meanwhile.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use sip_lb_proto::flow::via_transport::{self, ViaTransport};
use sip_lb_proto::flow::FlowToken;
use sip_lb_proto::proxy::Forwarded;
use sip_lb_proto::stream::{Frame, Framer};

use super::conn::{self, Shared};
use super::stats::StreamStats;
use super::worker::{StreamIn, What};
use crate::config::{LinkConfig, PoolTransport};

/// Messages waiting for one backend's connection at most.
pub const LINK_QUEUE: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection that ends sooner than this counts as a failed attempt for
/// the backoff (a backend that accepts and closes at once is not hammered).
const STABLE: Duration = Duration::from_secs(1);
const READ_CHUNK: usize = 16 * 1024;

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

struct Link {
    config: LinkConfig,
    state: AtomicU8,
    tx: mpsc::Sender<Vec<u8>>,
}

/// Every backend reached over a connection, fixed at start.
pub struct Links {
    links: Box<[Link]>,
    large: usize,
    stats: Arc<StreamStats>,
}

impl Links {
    /// The links and, in the same order, the receiving ends of their queues
    /// (for [`run`]).
    pub fn new(configs: &[LinkConfig], large: usize, stats: Arc<StreamStats>) -> (Links, Vec<mpsc::Receiver<Vec<u8>>>) {
        let mut rxs = Vec::new();
        let links = configs
            .iter()
            .map(|&config| {
                let (tx, rx) = mpsc::channel(LINK_QUEUE);
                rxs.push(rx);
                Link { config, state: AtomicU8::new(CONNECTING), tx }
            })
            .collect();
        (Links { links, large, stats }, rxs)
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Each backend with a link, and whether it can take messages (its
    /// connection is up or being made: not down).
    pub fn states(&self) -> impl Iterator<Item = (SocketAddr, bool)> + '_ {
        self.links.iter().map(|l| (l.config.addr, l.state.load(Ordering::Relaxed) != DOWN))
    }

    /// What the core forwarded to `to` (`out`, our Via first for a
    /// request): `None` when it goes as a datagram (no link to `to`, or a
    /// small request to a `large_over_tcp` backend, or a large one while its
    /// connection is down); `Some(queued)` when the link takes it, queued or
    /// dropped (counted). A response goes over the link only to a backend
    /// whose pool uses connections (a request it sent over one).
    pub fn forward(&self, out: &mut [u8], to: SocketAddr, what: Forwarded) -> Option<bool> {
        let l = self.links.iter().find(|l| l.config.addr == to)?;
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

    /// A reply to a message that came over link `index` (a stateless reply
    /// to a backend's request, a CRLF pong).
    pub fn reply(&self, index: usize, bytes: &[u8]) -> bool {
        self.links.get(index).is_some_and(|l| self.queue(l, bytes))
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

    fn set(&self, index: usize, state: u8) {
        let l = &self.links[index];
        let was = l.state.swap(state, Ordering::Relaxed);
        if was != state && (was == DOWN || state == DOWN) {
            let (addr, t) = (l.config.addr, l.config.transport.as_str());
            match state {
                DOWN => tracing::warn!(backend = %addr, transport = t, "backend connection down"),
                _ => tracing::info!(backend = %addr, transport = t, "backend connection up"),
            }
        }
    }
}

/// Makes connections to one backend and serves them, for the life of the
/// runtime. `on` is the UDP listener its messages count as arriving on.
pub async fn run(
    links: Arc<Links>,
    index: usize,
    mut rx: mpsc::Receiver<Vec<u8>>,
    tls: Option<tokio_rustls::TlsConnector>,
    on: usize,
    sh: Arc<Shared>,
) {
    let addr = links.links[index].config.addr;
    let mut backoff = BACKOFF_MIN;
    loop {
        let began = Instant::now();
        let served = match connect(addr, tls.as_ref()).await {
            Ok(Conn::Tcp(s)) => {
                serve(s, &links, index, &mut rx, on, &sh).await;
                true
            }
            Ok(Conn::Tls(s)) => {
                serve(*s, &links, index, &mut rx, on, &sh).await;
                true
            }
            Err(e) => {
                tracing::debug!(backend = %addr, "connect: {e}");
                links.stats.links.connect_failed.inc();
                false
            }
        };
        if served {
            links.stats.links.lost.inc();
            if began.elapsed() >= STABLE {
                // A connection that lived: try again at once, still usable.
                links.set(index, CONNECTING);
                backoff = BACKOFF_MIN;
                continue;
            }
        }
        links.set(index, DOWN);
        // What was queued for a connection that could not be made is stale.
        while rx.try_recv().is_ok() {
            links.stats.links.dropped_down.inc();
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

async fn connect(addr: SocketAddr, tls: Option<&tokio_rustls::TlsConnector>) -> std::io::Result<Conn> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
    let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out())??;
    let _ = s.set_nodelay(true);
    let Some(connector) = tls else { return Ok(Conn::Tcp(s)) };
    // The backend's certificate must name its IP address.
    let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let s = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, s)).await.map_err(|_| timed_out())??;
    Ok(Conn::Tls(Box::new(s)))
}

/// Serves one connection until it breaks: writes what is queued, frames
/// what arrives and hands it to the stream workers.
async fn serve<S>(stream: S, links: &Links, index: usize, rx: &mut mpsc::Receiver<Vec<u8>>, on: usize, sh: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    links.stats.links.connected.inc();
    links.set(index, UP);
    let (mut r, mut w) = tokio::io::split(stream);
    let write = async {
        while let Some(b) = rx.recv().await {
            if w.write_all(&b).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = read(&mut r, links, index, on, sh) => {}
        () = write => {}
    }
}

async fn read<R: AsyncRead + Unpin>(r: &mut R, links: &Links, index: usize, on: usize, sh: &Shared) {
    let peer = links.links[index].config.addr;
    let mut framer = Framer::new(sh.max_message);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            let (len, call_id) = match framer.next(&buf) {
                Frame::NeedMore => break,
                Frame::Ping { len } => {
                    links.reply(index, b"\r\n");
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
            conn::hand_off(sh, StreamIn { token, peer, on, what: What::Message, bytes, call_id, link: Some(index) });
            buf.drain(..len);
        }
    }
}
