//! HEP mirroring (`[hep]`): workers copy each SIP message they receive and
//! send into a recycled buffer and hand it over on a bounded queue; one
//! thread encodes them as HEP v3 (`sip_lb_proto::hep`) and sends them to the
//! collector. The workers never wait: with no free buffer (the thread is
//! behind, or the collector slow) the copy is dropped and counted.
//!
//! Steady state allocates nothing: buffers go round between the `free` pool
//! and the `full` queue; one grows only for a message larger than any before
//! it (capacity starts at [`BUF_CAPACITY`]).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{Receiver, Sender};
use crossbeam::queue::ArrayQueue;
use sip_lb_proto::hep::{self, sample::Rate};

use crate::config::HepConfig;

/// Copies in flight at most (all workers together): a few ms of a busy
/// balancer's traffic; beyond it copies are dropped.
pub const QUEUE: usize = 4096;
/// Initial capacity of each copy buffer: most SIP datagrams fit.
const BUF_CAPACITY: usize = 2048;
/// How long the thread waits for work before re-checking `stop`.
const IDLE: Duration = Duration::from_millis(100);

/// Mirroring counters, exported as `sip_lb_hep_*`.
#[derive(Debug, Default)]
pub struct HepStats {
    /// HEP packets sent to the collector.
    pub sent: AtomicU64,
    /// Copies dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Packets that could not be sent (socket error) or encoded (too large).
    pub errors: AtomicU64,
}

/// One message as a worker saw it.
struct Msg {
    src: SocketAddr,
    dst: SocketAddr,
    sec: u32,
    usec: u32,
    data: Vec<u8>,
}

/// The workers' side: shared by every worker of both data paths.
pub struct HepTap {
    rate: Rate,
    /// Our address on listener i, as the capture shows it (the advertised
    /// one: the bound one may be a wildcard).
    locals: Box<[SocketAddr]>,
    free: ArrayQueue<Box<Msg>>,
    full: Sender<Box<Msg>>,
    pub stats: Arc<HepStats>,
}

/// Wall-clock time for the copies of one batch (one clock read per batch).
#[derive(Clone, Copy)]
pub struct Stamp {
    sec: u32,
    usec: u32,
}

impl Stamp {
    pub fn now() -> Stamp {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Stamp { sec: d.as_secs() as u32, usec: d.subsec_micros() }
    }
}

impl HepTap {
    /// Whether `datagram`'s call is mirrored (`[hep] sample`, by Call-ID):
    /// decide once per received message, use it for what it becomes.
    #[inline]
    pub fn keeps(&self, datagram: &[u8]) -> bool {
        self.rate.keeps(datagram)
    }

    /// Our address on listener `on`.
    #[inline]
    pub fn local(&self, on: usize) -> SocketAddr {
        self.locals.get(on).copied().unwrap_or(self.locals[0])
    }

    /// Queues a copy of `data` going `src` -> `dst`; never blocks.
    #[inline]
    pub fn copy(&self, data: &[u8], src: SocketAddr, dst: SocketAddr, at: Stamp) {
        let Some(mut c) = self.free.pop() else {
            self.stats.dropped.fetch_add(1, Relaxed);
            return;
        };
        c.src = src;
        c.dst = dst;
        c.sec = at.sec;
        c.usec = at.usec;
        c.data.clear();
        c.data.extend_from_slice(data);
        // Capacity equals the pool, so a buffer taken from it always fits.
        if let Err(e) = self.full.try_send(c) {
            let _ = self.free.push(e.into_inner());
            self.stats.dropped.fetch_add(1, Relaxed);
        }
    }

    /// A message received on listener `on` from `src`.
    #[inline]
    pub fn received(&self, data: &[u8], src: SocketAddr, on: usize, at: Stamp) {
        self.copy(data, src, self.local(on), at)
    }

    /// A message sent from listener `from` to `to`.
    #[inline]
    pub fn sent(&self, data: &[u8], from: usize, to: SocketAddr, at: Stamp) {
        self.copy(data, self.local(from), to, at)
    }
}

/// The sending thread; stops (and is joined) when dropped.
pub struct HepMirror {
    pub tap: Arc<HepTap>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HepMirror {
    /// Starts the thread for `config`; `locals[i]` is listener i's
    /// advertised address.
    pub fn start(config: &HepConfig, locals: Vec<SocketAddr>) -> std::io::Result<HepMirror> {
        let bind: SocketAddr = if config.collector.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
        let socket = UdpSocket::bind(bind)?;
        socket.connect(config.collector)?;
        let (full, rx) = crossbeam::channel::bounded(QUEUE);
        let free = ArrayQueue::new(QUEUE);
        for _ in 0..QUEUE {
            let c = Msg { src: bind, dst: bind, sec: 0, usec: 0, data: Vec::with_capacity(BUF_CAPACITY) };
            let _ = free.push(Box::new(c));
        }
        let tap = Arc::new(HepTap {
            rate: config.sample,
            locals: locals.into(),
            free,
            full,
            stats: Arc::new(HepStats::default()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let sender = Courier { tap: tap.clone(), rx, socket, id: config.capture_id, key: config.password.clone() };
        let s = stop.clone();
        let thread = std::thread::Builder::new().name("sip-lb-hep".into()).spawn(move || sender.run(&s))?;
        tracing::info!(collector = %config.collector, capture_id = config.capture_id, "HEP mirroring on");
        Ok(HepMirror { tap, stop, thread: Some(thread) })
    }
}

impl Drop for HepMirror {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Courier {
    tap: Arc<HepTap>,
    rx: Receiver<Box<Msg>>,
    socket: UdpSocket,
    id: u32,
    key: Option<String>,
}

impl Courier {
    fn run(self, stop: &AtomicBool) {
        let mut buf = vec![0u8; hep::MAX_PACKET];
        let stats = &self.tap.stats;
        let mut warned = false;
        while !stop.load(Relaxed) {
            let Ok(c) = self.rx.recv_timeout(IDLE) else { continue };
            let capture = hep::Capture {
                src: c.src,
                dst: c.dst,
                ts_sec: c.sec,
                ts_usec: c.usec,
                capture_id: self.id,
                auth_key: self.key.as_deref().map(str::as_bytes),
                payload: &c.data,
            };
            let mut out = hep::Out::new(&mut buf);
            let sent = match hep::encode(&capture, &mut out) {
                Ok(_) => self.socket.send(out.bytes()).map_err(|e| e.to_string()),
                Err(hep::TooLarge) => Err("message too large for a HEP packet".into()),
            };
            let _ = self.tap.free.push(c);
            match sent {
                Ok(_) => stats.sent.fetch_add(1, Relaxed),
                Err(e) => {
                    if !warned {
                        tracing::warn!("HEP: {e} (counted in sip_lb_hep_errors_total; said once)");
                        warned = true;
                    }
                    stats.errors.fetch_add(1, Relaxed)
                }
            };
        }
    }
}
