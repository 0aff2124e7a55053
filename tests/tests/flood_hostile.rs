//! Floods of hostile datagrams at a running sip-lb (loopback, child process):
//! garbage, truncated SIP, responses with a foreign Via (reflection
//! attempts) and 64 KiB datagrams. Alongside each flood a valid stream of
//! INVITEs at a modest rate (2,000/s) must reach the backend with zero loss
//! (every sequence number counted at a fake backend), memory must stay
//! bounded, the shutdown counters must name the drops, and the flooding
//! socket must never get back more bytes than it sent (no amplification).
use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sip_lb_tests::lb::{Launch, SipLb};
use sip_lb_tests::ports::free_udp_addr;
use sip_lb_tests::rng::Rng;

const VALID_RATE: u64 = 2_000;
const SECONDS: u64 = 3;

/// sip-lb with two workers in front of `backend`, ready when its control API answers and
/// its port is bound.
fn start_lb(label: &str, backend: SocketAddr) -> Result<SipLb> {
    Launch::flags(label, &[free_udp_addr()?]).args(&["--workers", "2", "--backend", &backend.to_string()]).start()
}

fn invite(from: SocketAddr, seq: u64) -> Vec<u8> {
    let body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {from};rport;branch=z9hG4bKv{seq}\r\nMax-Forwards: 70\r\n\
         From: Alice <sip:alice@example.com>;tag=a{seq}\r\nTo: Bob <sip:bob@example.com>\r\nCall-ID: valid-{seq}@flood\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:alice@{from}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Outcome {
    lost: Vec<u64>,
    flood_sent: u64,
    flood_bytes_sent: u64,
    bytes_back_to_flooder: u64,
    victim_datagrams: u64,
    drops: BTreeMap<String, u64>,
    rss_before_kb: u64,
    rss_after_kb: u64,
}

/// Runs the valid stream and the flood for SECONDS, then stops sip-lb.
/// `make` builds flood datagram `i` given the flooder's and victim's addresses.
fn flood(
    label: &str,
    flood_rate: u64,
    make: impl Fn(u64, SocketAddr, SocketAddr, &mut Rng) -> Vec<u8> + Send + 'static,
) -> Result<Outcome> {
    let backend = UdpSocket::bind("127.0.0.1:0")?;
    let mut lb = start_lb(label, backend.local_addr()?)?;
    let pid = lb.child.pid();
    let rss_before_kb = rss_kb(pid);
    let stop = Arc::new(AtomicBool::new(false));

    // Fake backend: the set of valid sequence numbers that arrived.
    backend.set_read_timeout(Some(Duration::from_millis(50)))?;
    let b_stop = stop.clone();
    let backend_thread = thread::spawn(move || {
        let mut seen = HashSet::new();
        let mut buf = vec![0u8; 65_536];
        let mut quiet_since = None;
        loop {
            match backend.recv_from(&mut buf) {
                Ok((n, _)) => {
                    quiet_since = None;
                    let text = &buf[..n];
                    if let Some(i) = memfind(text, b"Call-ID: valid-") {
                        let digits: Vec<u8> =
                            text[i + 15..].iter().take_while(|b| b.is_ascii_digit()).copied().collect();
                        if let Ok(s) = std::str::from_utf8(&digits).unwrap_or("").parse::<u64>() {
                            seen.insert(s);
                        }
                    }
                }
                Err(_) if b_stop.load(Ordering::Relaxed) => {
                    let q = *quiet_since.get_or_insert_with(Instant::now);
                    if q.elapsed() > Duration::from_millis(300) {
                        return seen;
                    }
                }
                Err(_) => {}
            }
        }
    });

    // The flooder, and a victim whose address the reflection attempts name.
    let flooder = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
    let victim = UdpSocket::bind("127.0.0.1:0")?;
    let (faddr, vaddr) = (flooder.local_addr()?, victim.local_addr()?);
    let back_bytes = Arc::new(AtomicU64::new(0));
    let victim_count = Arc::new(AtomicU64::new(0));
    let mut listeners = Vec::new();
    for (sock, counter, bytes) in
        [(flooder.clone(), back_bytes.clone(), true), (Arc::new(victim), victim_count.clone(), false)]
    {
        let s = stop.clone();
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        listeners.push(thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            let mut end = None;
            loop {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    counter.fetch_add(if bytes { n as u64 } else { 1 }, Ordering::Relaxed);
                }
                if s.load(Ordering::Relaxed)
                    && end.get_or_insert_with(Instant::now).elapsed() > Duration::from_millis(300)
                {
                    return;
                }
            }
        }));
    }
    let f_stop = stop.clone();
    let lb_addr = lb.addr;
    let flood_thread = thread::spawn(move || {
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let (mut sent, mut bytes) = (0u64, 0u64);
        let start = Instant::now();
        while !f_stop.load(Ordering::Relaxed) {
            // Paced in 1 ms steps.
            let due = start.elapsed().as_micros() as u64 * flood_rate / 1_000_000;
            while sent < due {
                let d = make(sent, faddr, vaddr, &mut rng);
                let _ = flooder.send_to(&d, lb_addr);
                bytes += d.len() as u64;
                sent += 1;
            }
            thread::sleep(Duration::from_millis(1));
        }
        (sent, bytes)
    });

    // Valid stream, paced, from its own socket.
    let client = UdpSocket::bind("127.0.0.1:0")?;
    let caddr = client.local_addr()?;
    let total = VALID_RATE * SECONDS;
    let start = Instant::now();
    let mut seq = 0;
    while seq < total {
        let due = (start.elapsed().as_micros() as u64 * VALID_RATE / 1_000_000).min(total);
        while seq < due {
            client.send_to(&invite(caddr, seq), lb.addr)?;
            seq += 1;
        }
        thread::sleep(Duration::from_millis(1));
    }
    let rss_after_kb = rss_kb(pid);
    stop.store(true, Ordering::Relaxed);
    let (flood_sent, flood_bytes_sent) = flood_thread.join().expect("flooder");
    let seen = backend_thread.join().expect("backend");
    for l in listeners {
        l.join().expect("listener");
    }
    lb.child.ensure_running().context("sip-lb died during the flood")?;
    let shutdown = lb.stop()?;
    // Per-reason drop totals, and the stateless replies, from the shutdown summary.
    let mut drops = shutdown.total.drop_reasons.clone();
    drops.insert("stateless_replies".to_owned(), shutdown.total.replies);
    let lost: Vec<u64> = (0..total).filter(|s| !seen.contains(s)).collect();
    Ok(Outcome {
        lost,
        flood_sent,
        flood_bytes_sent,
        bytes_back_to_flooder: back_bytes.load(Ordering::Relaxed),
        victim_datagrams: victim_count.load(Ordering::Relaxed),
        drops,
        rss_before_kb,
        rss_after_kb,
    })
}

fn memfind(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn assert_held(kind: &str, o: &Outcome, reasons: &[&str]) {
    report_and_assert_held(kind, o, reasons);
    assert_no_amplification(kind, o);
}

fn assert_no_amplification(kind: &str, o: &Outcome) {
    assert!(
        o.bytes_back_to_flooder <= o.flood_bytes_sent,
        "{kind}: amplification: {} bytes back for {} sent",
        o.bytes_back_to_flooder,
        o.flood_bytes_sent
    );
}

fn report_and_assert_held(kind: &str, o: &Outcome, reasons: &[&str]) {
    eprintln!(
        "{kind}: flood {} datagrams / {} bytes; valid lost {}; back to flooder {} bytes; victim {}; rss {} -> {} KiB; drops {:?}",
        o.flood_sent, o.flood_bytes_sent, o.lost.len(), o.bytes_back_to_flooder, o.victim_datagrams, o.rss_before_kb, o.rss_after_kb, o.drops
    );
    assert!(
        o.lost.is_empty(),
        "{kind}: {} valid INVITEs lost, first {:?}",
        o.lost.len(),
        &o.lost[..o.lost.len().min(10)]
    );
    assert_eq!(o.victim_datagrams, 0, "{kind}: reflected to the victim");
    // Bounded memory: no per-datagram state; allow allocator slack.
    assert!(
        o.rss_after_kb < o.rss_before_kb + 64 * 1024,
        "{kind}: RSS grew {} -> {} KiB",
        o.rss_before_kb,
        o.rss_after_kb
    );
    let counted: u64 = reasons.iter().map(|r| o.drops.get(*r).copied().unwrap_or(0)).sum();
    // Loopback may drop some of the flood in the kernel; most must be counted.
    assert!(
        counted * 2 >= o.flood_sent,
        "{kind}: only {counted} of {} counted as {reasons:?}: {:?}",
        o.flood_sent,
        o.drops
    );
}

#[test]
fn garbage_flood() -> Result<()> {
    let o = flood("flood-garbage", 20_000, |_, _, _, rng| {
        let n = 1 + rng.below(1400) as usize;
        rng.bytes(n)
    })?;
    assert_held("garbage", &o, &["malformed", "stateless_replies"]);
    Ok(())
}

fn truncated_flood() -> Result<Outcome> {
    flood("flood-truncated", 20_000, |i, me, _, rng| {
        let mut m = invite(me, 1_000_000 + i);
        // Cut before the end of the header block: never a complete request.
        let head = memfind(&m, b"\r\n\r\n").unwrap();
        m.truncate(1 + rng.below(head as u64) as usize);
        m
    })
}

/// Truncated requests get 400 when a Via survived the cut and the reply is
/// no larger than the request; the rest drop (counted, never amplified).
#[test]
fn truncated_sip_flood() -> Result<()> {
    let o = truncated_flood()?;
    assert_held("truncated", &o, &["malformed", "stateless_replies", "reply_would_amplify"]);
    Ok(())
}

#[test]
fn reflection_flood_of_foreign_responses() -> Result<()> {
    let o = flood("flood-reflection", 20_000, |i, _, victim, _| {
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {victim};branch=z9hG4bKrefl{i}\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:b@x>;tag=2\r\nCall-ID: refl-{i}@x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    })?;
    assert_held("reflection", &o, &["foreign_response"]);
    Ok(())
}

#[test]
fn flood_of_64k_datagrams() -> Result<()> {
    let o = flood("flood-64k", 500, |i, me, _, _| {
        // The largest IPv4 UDP payload: a request line and Via, then junk
        // header bytes with no end of headers.
        let mut m =
            format!("INVITE sip:big@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbig{i}\r\nX-Junk: ")
                .into_bytes();
        m.resize(65_507, b'a');
        m
    })?;
    assert_held("64k", &o, &["malformed", "stateless_replies"]);
    Ok(())
}
