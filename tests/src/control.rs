//! The one client of sip-lb's control API (`sip-lb/src/control/api.rs`) for the tests and the
//! lab: a tiny HTTP/1.1 GET/POST, `/stats` and `/backends` decoded with serde into the test
//! side's own view of `sip-lb/src/control/snapshot.rs`, and `/metrics` through
//! [`Metrics`](crate::metrics::Metrics).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::metrics::Metrics;

/// `/stats`: what `Snapshot` serialises (fields the tests do not read are ignored).
#[derive(Clone, Debug, Deserialize)]
pub struct Stats {
    pub generation: u64,
    pub reload_failures: u64,
    pub workers: Vec<WorkerStats>,
    pub backends: Vec<BackendStats>,
    /// The XDP program on the interface, accounted, when one runs.
    #[serde(default)]
    pub xdp_account: Option<XdpAccount>,
}

/// `/stats`' `xdp_account` (`sip-lb/src/control/account.rs`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct XdpAccount {
    pub received: u64,
    pub forwarded: u64,
    pub passed: u64,
    pub dropped: u64,
    pub unaccounted: i64,
}

/// One worker of `/stats`.
#[derive(Clone, Debug, Deserialize)]
pub struct WorkerStats {
    pub worker: usize,
    pub cpu: Option<usize>,
    pub rx_datagrams: u64,
    pub tx_datagrams: u64,
    pub tx_errors: u64,
    pub requests_forwarded: u64,
    pub responses_forwarded: u64,
    /// (status code, count) of stateless replies.
    pub replies: Vec<(String, u64)>,
    /// (reason, count).
    pub drops: Vec<(String, u64)>,
    /// (reason, count) of what the shield dropped.
    #[serde(default)]
    pub shield_drops: Vec<(String, u64)>,
    /// Received but counted as nothing else (0 at rest).
    #[serde(default)]
    pub unaccounted: i64,
}

/// One entry of `/backends` (and of `/stats`' `backends`).
#[derive(Clone, Debug, Deserialize)]
pub struct BackendStats {
    pub addr: SocketAddr,
    /// (pool, weight) for each pool listing it.
    pub pools: Vec<(String, u32)>,
    /// "up", "down" or "draining".
    pub state: String,
    pub healthy: bool,
    pub drained: bool,
    pub requests: u64,
    pub responses: u64,
    pub probes: u64,
    pub probe_failures: u64,
}

impl Stats {
    /// What the shield dropped for `reason`, summed over workers.
    pub fn shield_dropped(&self, reason: &str) -> u64 {
        self.workers.iter().flat_map(|w| &w.shield_drops).filter(|(r, _)| r == reason).map(|(_, n)| n).sum()
    }

    /// Datagrams received, summed over workers.
    pub fn rx_datagrams(&self) -> u64 {
        self.workers.iter().map(|w| w.rx_datagrams).sum()
    }

    /// Every worker's and the XDP program's `unaccounted` (all 0 at rest).
    pub fn unaccounted(&self) -> Vec<i64> {
        self.workers.iter().map(|w| w.unaccounted).chain(self.xdp_account.iter().map(|x| x.unaccounted)).collect()
    }

    /// Requests forwarded, summed over workers.
    pub fn requests_forwarded(&self) -> u64 {
        self.workers.iter().map(|w| w.requests_forwarded).sum()
    }
}

/// sip-lb's control API at one address.
#[derive(Clone, Copy, Debug)]
pub struct Control {
    pub addr: SocketAddr,
}

impl Control {
    pub fn new(addr: SocketAddr) -> Control {
        Control { addr }
    }

    /// `GET path`: (status, body).
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        http(self.addr, "GET", path)
    }

    /// `GET path`, which must answer 200.
    fn get_ok(&self, path: &str) -> Result<String> {
        let (status, body) = self.get(path)?;
        if status != 200 {
            bail!("GET {path} on {}: HTTP {status}: {body}", self.addr);
        }
        Ok(body)
    }

    pub fn stats(&self) -> Result<Stats> {
        let body = self.get_ok("/stats")?;
        serde_json::from_str(&body).with_context(|| format!("decoding /stats: {body}"))
    }

    pub fn backends(&self) -> Result<Vec<BackendStats>> {
        let body = self.get_ok("/backends")?;
        serde_json::from_str(&body).with_context(|| format!("decoding /backends: {body}"))
    }

    /// The `/backends` entry of `addr`.
    pub fn backend(&self, addr: SocketAddr) -> Result<BackendStats> {
        let all = self.backends()?;
        let found = all.iter().find(|b| b.addr == addr).cloned();
        found.with_context(|| format!("{addr} not in /backends: {all:?}"))
    }

    pub fn metrics(&self) -> Result<Metrics> {
        Metrics::parse(&self.get_ok("/metrics")?)
    }

    /// Polls `/stats` every 10 ms until `done` holds, for at most `within`; returns the
    /// `/stats` that satisfied it.
    pub fn wait_stats(&self, within: Duration, what: &str, mut done: impl FnMut(&Stats) -> bool) -> Result<Stats> {
        let deadline = Instant::now() + within;
        loop {
            let stats = self.stats()?;
            if done(&stats) {
                return Ok(stats);
            }
            if Instant::now() >= deadline {
                bail!("{what}: not within {within:?}; last /stats: {stats:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls `/metrics` every 20 ms until `done` holds, for at most `within`.
    pub fn wait_metrics(
        &self,
        within: Duration,
        what: &str,
        mut done: impl FnMut(&Metrics) -> bool,
    ) -> Result<Metrics> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.metrics()?;
            if done(&m) {
                return Ok(m);
            }
            if Instant::now() >= deadline {
                bail!("{what}: not within {within:?}; last /metrics:\n{}", m.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `/backends` shows `state` for `addr`; returns how long that took.
    pub fn wait_state(&self, addr: SocketAddr, state: &str, within: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            let b = self.backend(addr)?;
            if b.state == state {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > within {
                bail!("{addr} not {state} within {within:?}: {b:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One HTTP/1.1 request with `Connection: close` and an empty body; (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let resp = String::from_utf8_lossy(&resp);
    let (head, body) = resp.split_once("\r\n\r\n").with_context(|| format!("no end of HTTP header: {resp}"))?;
    if head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked")) {
        bail!("{method} {path}: chunked answer (not expected from sip-lb): {resp}");
    }
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
    Ok((status, body.to_owned()))
}
