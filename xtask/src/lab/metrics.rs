//! The live view: sip-lb's `/metrics` (the control API, see docs/operations.md) scraped every
//! second from a thread inside the balancer's namespace, one counter line printed per scrape,
//! and the last scrape kept for the summary.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// One scrape: `(name, labels, value)` per sample.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    /// Parses the Prometheus text exposition (comments and odd lines skipped).
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples.push((name.to_owned(), labels, value));
        }
        Metrics { samples }
    }

    /// Sum of `name` grouped by the value of `label`.
    pub fn by(&self, name: &str, label: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (n, labels, v) in &self.samples {
            if n == name {
                if let Some(l) = labels.get(label) {
                    *out.entry(l.clone()).or_insert(0) += *v as u64;
                }
            }
        }
        out
    }

    /// Per worker: `(worker, cpu) -> value` of a per-worker counter.
    pub fn per_worker(&self, name: &str) -> BTreeMap<(u32, String), u64> {
        let mut out = BTreeMap::new();
        for (n, labels, v) in &self.samples {
            if n == name {
                if let (Some(w), Some(c)) = (labels.get("worker").and_then(|w| w.parse().ok()), labels.get("cpu")) {
                    *out.entry((w, c.clone())).or_insert(0) += *v as u64;
                }
            }
        }
        out
    }

    /// Sum of `name` over the samples whose `label` is `value`.
    pub fn sum_where(&self, name: &str, label: &str, value: &str) -> u64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && l.get(label).is_some_and(|v| v == value))
            .map(|(_, _, v)| *v as u64)
            .sum()
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // label values here are plain (numbers, ip:port, words): no escaped quotes or commas.
    for pair in s.split("\",") {
        if let Some((k, v)) = pair.split_once('=') {
            out.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
        }
    }
    out
}

/// `GET /metrics` over HTTP/1.0 (so the answer is not chunked).
pub fn scrape(addr: SocketAddr) -> Result<Metrics> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: sip-lb\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { bail!("no HTTP header end from {addr}") };
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1) != Some("200") {
        bail!("{addr}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(Metrics::parse(body))
}

/// Background scraper: a thread that moves into the balancer's namespace, scrapes once a
/// second and prints a counter line. Stopping it returns the last good scrape.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    pub phase: Arc<Mutex<String>>,
    handle: Option<JoinHandle<Option<Metrics>>>,
}

/// Names for backends in the live line: `ip:port -> short name`.
pub type Names = BTreeMap<String, String>;

impl Scraper {
    pub fn start(netns: String, addr: SocketAddr, names: Names, started: Instant) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(Mutex::new(String::from("start")));
        let (s, p) = (stop.clone(), phase.clone());
        let handle = std::thread::Builder::new()
            .name("lab-scraper".into())
            .spawn(move || {
                if let Err(e) = super::netns::enter(&netns) {
                    println!("lab: live view unavailable: {e:#}");
                    return None;
                }
                let mut last: Option<Metrics> = None;
                let mut prev = Metrics::default();
                loop {
                    let stopping = s.load(Ordering::Relaxed);
                    match scrape(addr) {
                        Ok(m) => {
                            if !stopping {
                                let phase = p.lock().map(|p| p.clone()).unwrap_or_default();
                                println!("{}", live_line(&m, &prev, &names, &phase, started.elapsed()));
                                prev = m.clone();
                            }
                            last = Some(m);
                        }
                        Err(e) if !stopping && last.is_none() => {
                            println!(
                                "lab: [{:>4.1}s] metrics not yet available: {e:#}",
                                started.elapsed().as_secs_f64()
                            )
                        }
                        Err(_) => {}
                    }
                    if stopping {
                        return last;
                    }
                    // Sleep in small steps so that stop() is prompt.
                    let until = Instant::now() + Duration::from_secs(1);
                    while Instant::now() < until && !s.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
            .expect("spawning the scraper thread");
        Scraper { stop, phase, handle: Some(handle) }
    }

    pub fn set_phase(&self, phase: &str) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase.to_owned();
        }
    }

    /// One final scrape, then the thread ends; returns the last good scrape.
    pub fn stop(&mut self) -> Option<Metrics> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).flatten()
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `lab: [ 9.6s] INVITE   rx/s w0@cpu0 150 w1@cpu1 150 | req/s (total) reg1 0 (104) ... | steered/s xdp 200 reuseport 300`:
/// per core (worker) datagrams received per second, per backend requests forwarded per second
/// and so far, and datagrams the steering programs steered per second (when they report it).
fn live_line(m: &Metrics, prev: &Metrics, names: &Names, phase: &str, t: Duration) -> String {
    let mut line = format!("lab: [{:>4.1}s] {phase:<8} rx/s", t.as_secs_f64());
    let prev_rx = prev.per_worker("sip_lb_worker_rx_datagrams_total");
    for (k, v) in m.per_worker("sip_lb_worker_rx_datagrams_total") {
        let rate = v.saturating_sub(prev_rx.get(&k).copied().unwrap_or(0));
        line += &format!(" w{}@cpu{} {rate:>4}", k.0, k.1);
    }
    line += " | req/s (total)";
    let prev_req = prev.by("sip_lb_backend_requests_total", "backend");
    for (addr, v) in m.by("sip_lb_backend_requests_total", "backend") {
        let rate = v.saturating_sub(prev_req.get(&addr).copied().unwrap_or(0));
        let name = names.get(&addr).cloned().unwrap_or(addr);
        line += &format!(" {name} {rate} ({v})");
    }
    if m.has("sip_lb_xdp_steered_total") {
        let rate = |program: &str| {
            let name = "sip_lb_xdp_steered_total";
            m.sum_where(name, "program", program).saturating_sub(prev.sum_where(name, "program", program))
        };
        line += &format!(" | steered/s xdp {} reuseport {}", rate("xdp"), rate("reuseport"));
    }
    line
}
