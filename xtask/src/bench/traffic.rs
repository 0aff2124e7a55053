//! Packet-level load: a blaster that replays SIP INVITEs with a fresh Call-ID
//! (and branch) per datagram through `sendmmsg`, and counting sinks that play
//! the backends. Both live in this process, so the send timestamp the blaster
//! writes into each datagram (`X-Ts:`, CLOCK_REALTIME ns) and the kernel's
//! receive timestamp on the sink socket (SO_TIMESTAMPNS) come from the same
//! clock, and the sink's own wake-up delay is not counted.
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

use std::os::fd::AsRawFd;

use sip_lb_udp::{RecvBatch, BATCH};

use super::sockets;

/// Sink receive slots: INVITEs of the bench are about 600 bytes.
const MTU: usize = 2047;

/// CLOCK_REALTIME, the clock of the kernel's receive timestamps.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

const TS_HEADER: &[u8] = b"X-Ts: ";

/// Counting sinks, one thread and one port each (the balancer's backends).
pub struct Sinks {
    pub addrs: Vec<SocketAddr>,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<u32>>>,
}

impl Sinks {
    /// `n` sinks on loopback ports; `latency`: record receive time minus the
    /// datagram's `X-Ts:` (ns).
    pub fn start(n: usize, latency: bool) -> Result<Self> {
        Self::start_at(&vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0)); n], None, latency)
    }

    /// One sink per address, bound in network namespace `netns` if given.
    pub fn start_at(at: &[SocketAddr], netns: Option<&str>, latency: bool) -> Result<Self> {
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut addrs = Vec::new();
        let mut threads = Vec::new();
        for &a in at {
            let sock = bind_in(netns, a)?;
            if latency {
                sip_lb_udp::enable_rx_timestamps(&sock)?;
            }
            addrs.push(sock.local_addr()?);
            let (count, stop) = (count.clone(), stop.clone());
            threads.push(std::thread::spawn(move || sink_loop(sock, &count, &stop, latency)));
        }
        Ok(Self { addrs, count, stop, threads })
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Stops the threads; returns the latency samples (ns) of all sinks, less
    /// each sink's first 10% (warm-up).
    pub fn finish(self) -> Vec<u32> {
        self.stop.store(true, Relaxed);
        self.threads
            .into_iter()
            .flat_map(|t| {
                let v = t.join().unwrap_or_default();
                let skip = v.len() / 10;
                v.into_iter().skip(skip)
            })
            .collect()
    }
}

fn sink_loop(sock: UdpSocket, count: &AtomicU64, stop: &AtomicBool, latency: bool) -> Vec<u32> {
    pin_load_thread();
    let mut batch = RecvBatch::with_options(MTU, latency);
    let mut samples = Vec::new();
    while !stop.load(Relaxed) {
        let n = batch.recv(sock.as_raw_fd(), true).unwrap_or(0);
        if n == 0 {
            continue;
        }
        let mut counted = 0;
        for i in 0..n {
            let (pkt, src, _) = batch.get(i);
            if pkt.starts_with(b"OPTIONS ") {
                // A health probe (sip-lb's): answer like a live backend, do not count it.
                if let (Some(reply), Some(to)) = (options_reply(pkt), src) {
                    let _ = sock.send_to(&reply, to);
                }
                continue;
            }
            counted += 1;
            if latency {
                if let Some(ts) = sent_at(pkt) {
                    let rx = batch.rx_ns(i).unwrap_or_else(now_ns);
                    samples.push(rx.saturating_sub(ts).min(u32::MAX as u64) as u32);
                }
            }
        }
        count.fetch_add(counted, Relaxed);
    }
    samples
}

/// `200 OK` to an OPTIONS: its Via, From, To, Call-ID and CSeq lines copied.
fn options_reply(req: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(req).ok()?;
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in text.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"].contains(&name.as_str()) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

fn sent_at(pkt: &[u8]) -> Option<u64> {
    let at = pkt.windows(TS_HEADER.len()).position(|w| w == TS_HEADER)? + TS_HEADER.len();
    let digits = pkt.get(at..at + 20)?;
    digits.iter().try_fold(0u64, |acc, &d| d.is_ascii_digit().then(|| acc * 10 + (d - b'0') as u64))
}

/// A bench socket on `addr`, created in network namespace `netns` (if given)
/// by a short-lived thread: a socket stays in the namespace it was made in.
pub fn bind_in(netns: Option<&str>, addr: SocketAddr) -> Result<UdpSocket> {
    let Some(ns) = netns else { return sockets::bind(addr, false) };
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        sip_lb_tests::netns::enter(&ns)?;
        sockets::bind(addr, false)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("socket thread panicked"))?
}

pub struct BlastSpec {
    pub target: SocketAddr,
    /// Source address of the blaster's sockets, and the network namespace
    /// they live in (`None`: this one).
    pub source: IpAddr,
    pub netns: Option<String>,
    pub duration: Duration,
    /// Datagrams per second; `None`: as fast as sendmmsg goes (open loop).
    pub rate: Option<f64>,
    /// Source sockets used in turn, so SO_REUSEPORT spreads the load over workers.
    pub flows: usize,
}

pub struct Blasted {
    pub sent: u64,
    pub elapsed: Duration,
}

/// One INVITE per datagram; Call-ID, branch and X-Ts are fixed-width fields
/// rewritten in place.
struct Template {
    bytes: Vec<u8>,
    call_id: usize,
    branch: usize,
    ts: usize,
}

impl Template {
    fn new(target: SocketAddr, src: SocketAddr) -> Self {
        let text = format!(
            "INVITE sip:bench@{target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {src};branch=z9hG4bK{z16}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:blaster@{src}>;tag=blast1\r\n\
             To: <sip:bench@{target}>\r\n\
             Call-ID: {z16}@blaster\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:blaster@{src}>\r\n\
             User-Agent: sip-lb-bench\r\n\
             X-Ts: {z20}\r\n\
             Content-Length: 0\r\n\r\n",
            z16 = "0".repeat(16),
            z20 = "0".repeat(20),
        );
        let find = |pat: &str| text.find(pat).expect("template field") + pat.len();
        Self {
            call_id: find("Call-ID: "),
            branch: find("branch=z9hG4bK"),
            ts: find("X-Ts: "),
            bytes: text.into_bytes(),
        }
    }

    fn fill(&self, buf: &mut Vec<u8>, seq: u64, ts: u64) {
        buf.clear();
        buf.extend_from_slice(&self.bytes);
        put_hex(&mut buf[self.call_id..self.call_id + 16], seq);
        put_hex(&mut buf[self.branch..self.branch + 16], seq);
        put_dec(&mut buf[self.ts..self.ts + 20], ts);
    }
}

fn put_hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b"0123456789abcdef"[(v & 15) as usize];
        v >>= 4;
    }
}

fn put_dec(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Sends for `spec.duration` on the calling thread; never longer.
pub fn blast(spec: &BlastSpec, seq_base: u64) -> Result<Blasted> {
    pin_load_thread();
    // SAFETY: prctl/setpriority on the calling thread. Precise pacing needs a
    // small timer slack (default 50 µs); nice 19 lets the sinks on the same
    // CPU run first, so an open-loop blast cannot starve them (they would
    // drop and the forwarder would look slower than it is).
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000);
        libc::setpriority(libc::PRIO_PROCESS, libc::syscall(libc::SYS_gettid) as libc::id_t, 19);
    }
    let socks = (0..spec.flows.max(1))
        .map(|_| bind_in(spec.netns.as_deref(), SocketAddr::new(spec.source, 0)))
        .collect::<Result<Vec<_>>>()?;
    let templates =
        socks.iter().map(|s| Ok(Template::new(spec.target, s.local_addr()?))).collect::<Result<Vec<_>>>()?;
    let dst = [spec.target; BATCH];
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(600)).collect();
    // Paced: small batches often (about every 50 µs), so pacing adds little queueing.
    let per_batch = match spec.rate {
        Some(r) => ((r / 20_000.0).ceil() as usize).clamp(1, BATCH),
        None => BATCH,
    };
    let interval = spec.rate.map(|r| Duration::from_secs_f64(per_batch as f64 / r));
    let start = Instant::now();
    let mut next = start;
    let mut seq = seq_base;
    let mut sent = 0u64;
    let mut turn = 0usize;
    while start.elapsed() < spec.duration {
        if let Some(iv) = interval {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else if now - next > Duration::from_millis(5) {
                next = now; // fell behind (descheduled): do not burst to catch up
            }
            next += iv;
        }
        let f = turn % socks.len();
        turn += 1;
        let ts = now_ns();
        for buf in bufs.iter_mut().take(per_batch) {
            templates[f].fill(buf, seq, ts);
            seq += 1;
        }
        let packets: [&[u8]; BATCH] = std::array::from_fn(|i| bufs[i].as_slice());
        sent += sip_lb_udp::send_slices(socks[f].as_raw_fd(), &packets[..per_batch], &dst[..per_batch])? as u64;
    }
    Ok(Blasted { sent, elapsed: start.elapsed() })
}

/// The load tools (blaster, sinks) run on the last CPU; forwarders are pinned
/// from CPU 0 up, so with one worker they do not share a CPU.
fn pin_load_thread() {
    let n = sip_lb_udp::affinity::cpu_count();
    if n > 1 {
        let _ = sip_lb_udp::affinity::pin_to_cpu(n - 1);
    }
}

/// (p50, p99) of nanosecond samples; `None` when there are too few.
pub fn percentiles(samples: &mut [u32]) -> Option<(u32, u32)> {
    if samples.len() < 100 {
        return None;
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    Some((at(0.50), at(0.99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_fields_round_trip() {
        let t = Template::new("127.0.0.1:5060".parse().unwrap(), "127.0.0.1:4000".parse().unwrap());
        let mut buf = Vec::new();
        t.fill(&mut buf, 0xabc, 1_700_000_000_123_456_789);
        let text = std::str::from_utf8(&buf).unwrap();
        assert!(text.contains("Call-ID: 0000000000000abc@blaster\r\n"));
        assert!(text.contains("branch=z9hG4bK0000000000000abc\r\n"));
        assert_eq!(sent_at(&buf), Some(1_700_000_000_123_456_789));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn answers_options() {
        let req = b"OPTIONS sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\nMax-Forwards: 70\r\nCall-ID: p1\r\nCSeq: 7 OPTIONS\r\n\r\n";
        let reply = String::from_utf8(options_reply(req).unwrap()).unwrap();
        assert_eq!(reply, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\nCall-ID: p1\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn percentiles_of_a_ramp() {
        let mut v: Vec<u32> = (1..=1000).rev().collect();
        assert_eq!(percentiles(&mut v), Some((500, 990)));
    }
}
