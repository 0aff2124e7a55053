//! The live view: sip-lb's `/metrics` (the control API, see docs/operations.md) scraped every
//! second from a thread inside the balancer's namespace, one counter line printed per scrape,
//! and the last scrape kept for the summary.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

pub use crate::metrics::Metrics;

/// `GET /metrics` from sip-lb's control API at `addr`.
pub fn scrape(addr: SocketAddr) -> Result<Metrics> {
    crate::control::Control::new(addr).metrics()
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
