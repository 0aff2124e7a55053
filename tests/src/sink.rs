//! UDP endpoints that count and record what arrives, on a thread of their own, with bounded
//! waits: fake backends, clients that expect replies, victims that must hear nothing.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::sip::{cseq_of, header, response_to, SipRequest};

/// One datagram that arrived.
#[derive(Clone, Debug)]
pub struct Datagram {
    pub bytes: Vec<u8>,
    pub from: SocketAddr,
    pub at: Instant,
}

impl Datagram {
    /// The payload as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Called on every datagram with (payload, sender); what it returns is sent back.
pub type Responder = Box<dyn FnMut(&[u8], SocketAddr) -> Option<Vec<u8>> + Send>;

#[derive(Default)]
struct Shared {
    datagrams: AtomicU64,
    bytes: AtomicU64,
    log: Mutex<Vec<Datagram>>,
    /// Index of the next datagram [`Sink::recv`] hands out.
    next: Mutex<usize>,
}

/// A UDP socket with a receiver thread.
pub struct Sink {
    addr: SocketAddr,
    sock: Option<UdpSocket>,
    record: bool,
    shared: Arc<Shared>,
    responder: Arc<Mutex<Option<Responder>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// Binds `addr` and records every datagram.
    pub fn bind(addr: impl ToSocketAddrs) -> Result<Sink> {
        Sink::start(addr, true, None)
    }

    /// Binds `addr` and only counts datagrams and bytes (for floods).
    pub fn counting(addr: impl ToSocketAddrs) -> Result<Sink> {
        Sink::start(addr, false, None)
    }

    /// A recording sink on a free port of 127.0.0.1.
    pub fn loopback() -> Result<Sink> {
        Sink::bind("127.0.0.1:0")
    }

    /// Binds `addr`; records if `record`; answers with `responder`.
    pub fn start(addr: impl ToSocketAddrs, record: bool, responder: Option<Responder>) -> Result<Sink> {
        let sock = UdpSocket::bind(addr).context("binding a sink")?;
        Sink::on(sock, record, responder)
    }

    /// Serves an already bound socket (e.g. one bound inside another namespace).
    pub fn on(sock: UdpSocket, record: bool, responder: Option<Responder>) -> Result<Sink> {
        let mut s = Sink {
            addr: sock.local_addr()?,
            sock: None,
            record,
            shared: Arc::default(),
            responder: Arc::new(Mutex::new(responder)),
            stop: Arc::default(),
            thread: None,
        };
        s.serve(sock)?;
        Ok(s)
    }

    fn serve(&mut self, sock: UdpSocket) -> Result<()> {
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        big_buffer(&sock);
        let rx = sock.try_clone()?;
        self.sock = Some(sock);
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = stop.clone();
        let (shared, responder, record) = (self.shared.clone(), self.responder.clone(), self.record);
        self.thread = Some(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = rx.recv_from(&mut buf) else { continue };
                let bytes = &buf[..n];
                if let Some(answer) = responder.lock().unwrap().as_mut().and_then(|r| r(bytes, from)) {
                    let _ = rx.send_to(&answer, from);
                }
                if record {
                    shared.log.lock().unwrap().push(Datagram { bytes: bytes.to_vec(), from, at: Instant::now() });
                }
                shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
                shared.datagrams.fetch_add(1, Ordering::Relaxed);
            }
        }));
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The socket, for sending from this address.
    pub fn socket(&self) -> &UdpSocket {
        self.sock.as_ref().expect("the sink was killed")
    }

    pub fn send_to(&self, payload: impl AsRef<[u8]>, to: SocketAddr) -> Result<()> {
        self.socket().send_to(payload.as_ref(), to).with_context(|| format!("send from {} to {to}", self.addr))?;
        Ok(())
    }

    /// A request from this address (its Via and Contact), with CSeq `cseq`.
    pub fn request(&self, method: &str, call_id: &str, cseq: u64) -> SipRequest {
        SipRequest::new(method, self.addr, call_id).cseq(cseq)
    }

    /// Datagrams received so far.
    pub fn count(&self) -> u64 {
        self.shared.datagrams.load(Ordering::Relaxed)
    }

    /// Payload bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Every datagram recorded so far.
    pub fn datagrams(&self) -> Vec<Datagram> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The next datagram not yet handed out, waiting up to `within`.
    pub fn recv(&self, within: Duration) -> Option<Datagram> {
        assert!(self.record, "recv on a counting sink");
        let deadline = Instant::now() + within;
        loop {
            {
                let log = self.shared.log.lock().unwrap();
                let mut next = self.shared.next.lock().unwrap();
                if let Some(d) = log.get(*next) {
                    *next += 1;
                    return Some(d.clone());
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The next datagram's text and sender, waiting up to `within`.
    pub fn recv_text(&self, within: Duration) -> Option<(String, SocketAddr)> {
        self.recv(within).map(|d| (d.text(), d.from))
    }

    /// Waits until at least `n` datagrams have arrived in all.
    pub fn wait_count(&self, n: u64, within: Duration) -> Result<()> {
        wait_until(within, || self.count() >= n)
            .with_context(|| format!("{}: {} of {n} datagrams", self.addr, self.count()))
    }

    /// Closes the socket: nothing listens there any more (the kernel answers with ICMP).
    pub fn kill(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.sock = None;
    }

    /// Binds the same address again and serves, keeping what was recorded.
    pub fn restart(&mut self) -> Result<()> {
        let sock = UdpSocket::bind(self.addr).with_context(|| format!("rebinding {}", self.addr))?;
        self.serve(sock)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `done` every 5 ms for at most `within`; `Err` if it never held.
pub fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The first datagram to arrive at any of `sinks` within `within`: (index, datagram).
pub fn next_at(sinks: &[&Sink], within: Duration) -> Option<(usize, Datagram)> {
    let deadline = Instant::now() + within;
    loop {
        for (i, s) in sinks.iter().enumerate() {
            if let Some(d) = s.recv(Duration::ZERO) {
                return Some((i, d));
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// 4 MiB receive buffer (FORCE works as root), so a sink on a busy machine does not drop what
/// sip-lb delivered.
pub fn big_buffer(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let v: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: valid fd and a c_int option value.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

/// A request a [`Backend`] received: (Call-ID, CSeq number, when).
#[derive(Clone, Debug)]
pub struct Seen {
    pub call_id: String,
    pub cseq: u64,
    pub at: Instant,
}

/// A fake SIP server: a counting [`Sink`] that answers OPTIONS (health probes) with 200,
/// records every other request and, if `answer` is set, answers it with 200 too.
pub struct Backend {
    pub addr: SocketAddr,
    sink: Sink,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    pub fn start(answer: bool) -> Result<Backend> {
        Backend::start_on("127.0.0.1:0", answer)
    }

    /// [`Backend::start`] on `addr` (e.g. one of several loopback addresses
    /// with the same port, as DNS names them).
    pub fn start_on(addr: impl ToSocketAddrs, answer: bool) -> Result<Backend> {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let responder: Responder = Box::new(move |bytes, _| {
            let msg = String::from_utf8_lossy(bytes);
            if msg.starts_with("SIP/") {
                return None;
            }
            if msg.starts_with("OPTIONS ") {
                return Some(response_to(&msg).into_bytes());
            }
            let call_id = header(&msg, "Call-ID").unwrap_or_default();
            log.lock().unwrap().push(Seen { call_id, cseq: cseq_of(&msg), at: Instant::now() });
            answer.then(|| response_to(&msg).into_bytes())
        });
        let sink = Sink::start(addr, false, Some(responder))?;
        Ok(Backend { addr: sink.addr(), sink, seen })
    }

    /// Closes the socket: the backend is gone (no answers; ICMP port unreachable).
    pub fn kill(&mut self) {
        self.sink.kill();
    }

    /// Binds the same address again and serves.
    pub fn restart(&mut self) -> Result<()> {
        self.sink.restart()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests (not OPTIONS) received so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Requests received with CSeq `cseq`.
    pub fn count_cseq(&self, cseq: u64) -> usize {
        self.seen.lock().unwrap().iter().filter(|s| s.cseq == cseq).count()
    }
}

/// Waits until `backends` together received `n` requests with CSeq `cseq`.
pub fn wait_cseq(backends: &[&Backend], cseq: u64, n: usize, within: Duration) -> Result<()> {
    let got = || backends.iter().map(|b| b.count_cseq(cseq)).sum::<usize>();
    wait_until(within, || got() >= n).with_context(|| format!("{} of {n} requests with CSeq {cseq} arrived", got()))
}

/// Waits until no backend has received anything for `quiet` (at most 5 s): for streams whose
/// size at the backends is not known (some went to a dead backend).
pub fn settle(backends: &[&Backend], quiet: Duration) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let total = || backends.iter().map(|b| b.count()).sum::<usize>();
    let mut last = total();
    let mut since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let now = total();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
    }
}

/// Which backend index received each Call-ID with CSeq `cseq`.
pub fn owners(backends: &[&Backend], cseq: u64) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for (i, b) in backends.iter().enumerate() {
        for s in b.seen().into_iter().filter(|s| s.cseq == cseq) {
            m.insert(s.call_id, i);
        }
    }
    m
}
