//! Packet-level runs (comparisons 2 and 3): the blaster sends INVITEs with
//! fresh Call-IDs to a forwarder whose backends are two counting sinks.
//! Max rate: open-loop blast, rate = datagrams the sinks got per second over
//! the measured window. Latency: a paced blast at a fixed rate, each datagram
//! timed from the blaster's send to the sink's receive; the same run without a
//! forwarder in between gives the baseline to subtract.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::balancer::{Balancer, Kind, Site, Usage};
use super::netlab::Net;
use super::procs::MachineMark;
use super::traffic::{self, BlastSpec, Sinks};
use super::{free_addrs, Env};

/// Where a packet run happens: everything on loopback in this namespace, or
/// the netns topology (blaster in the client namespace, forwarder in the lb
/// namespace, sinks on the farm's addresses).
#[derive(Clone, Copy)]
pub enum Ground<'a> {
    Loopback,
    Net(&'a Net),
}

impl<'a> Ground<'a> {
    fn sinks(self, latency: bool) -> Result<Sinks> {
        match self {
            Ground::Loopback => Sinks::start(2, latency),
            Ground::Net(net) => Sinks::start_at(&net.backends(), Some(net.farm_ns()), latency),
        }
    }

    /// The forwarder's listen address and where it runs.
    fn forwarder(self) -> Result<(SocketAddr, Site<'a>)> {
        Ok(match self {
            Ground::Loopback => (free_addrs(1)?[0], Site::LOOPBACK),
            Ground::Net(net) => (net.listen(), net.lb_site()),
        })
    }

    fn blast(self, target: SocketAddr, seconds: f64, rate: Option<f64>) -> BlastSpec {
        let (source, netns) = match self {
            Ground::Loopback => (IpAddr::V4(Ipv4Addr::LOCALHOST), None),
            Ground::Net(net) => (net.client_ip(), Some(net.client_ns().to_owned())),
        };
        BlastSpec { target, source, netns, duration: Duration::from_secs_f64(seconds), rate, flows: FLOWS }
    }
}

/// Source ports the blaster rotates through.
pub const FLOWS: usize = 64;
/// Not measured at the start of a blast.
const WARMUP: Duration = Duration::from_millis(500);

pub struct RateRun {
    pub kind: Kind,
    pub workers: usize,
    pub sent: u64,
    pub received: u64,
    /// Datagrams/s at the sinks over the measured window.
    pub rate: f64,
    pub window_s: f64,
    /// Datagrams/s the blaster got into the kernel.
    pub sent_rate: f64,
    pub usage: Usage,
}

impl RateRun {
    pub fn loss(&self) -> f64 {
        1.0 - self.received as f64 / self.sent.max(1) as f64
    }
}

pub fn max_rate(env: &Env, at: Ground<'_>, kind: Kind, workers: usize, seconds: f64, tag: &str) -> Result<RateRun> {
    let sinks = at.sinks(false)?;
    let (listen, site) = at.forwarder()?;
    let mut lb = Balancer::start(env, kind, workers, listen, &sinks.addrs, tag, site)?;
    let spec = at.blast(listen, seconds, None);
    let blaster = std::thread::spawn(move || traffic::blast(&spec, 0));
    std::thread::sleep(WARMUP);
    lb.mark();
    let (c1, t1) = (sinks.count(), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(seconds) - WARMUP - Duration::from_millis(100));
    let (c2, t2) = (sinks.count(), Instant::now());
    let mut usage = lb.usage();
    let blasted = blaster.join().map_err(|_| anyhow::anyhow!("blaster panicked"))??;
    std::thread::sleep(Duration::from_millis(200));
    let received = sinks.count();
    lb.stop(&mut usage)?;
    sinks.finish();
    let rate = (c2 - c1) as f64 / (t2 - t1).as_secs_f64();
    let window_s = (t2 - t1).as_secs_f64();
    let sent_rate = blasted.sent as f64 / blasted.elapsed.as_secs_f64();
    Ok(RateRun { kind, workers, sent: blasted.sent, received, rate, window_s, sent_rate, usage })
}

pub struct LatencyRun {
    /// `None`: blaster straight to a sink (the baseline).
    pub kind: Option<Kind>,
    pub workers: usize,
    pub rate: f64,
    pub sent: u64,
    pub received: u64,
    pub p50_ns: u32,
    pub p99_ns: u32,
    pub usage: Option<Usage>,
    /// The whole machine's busy CPU-seconds over the blast (cpuidle).
    pub machine_cpu_s: f64,
}

impl LatencyRun {
    /// The forwarder's CPU per datagram the sinks received.
    pub fn us_per_msg(&self) -> Option<f64> {
        let u = self.usage.as_ref()?;
        (self.received > 0).then(|| u.cpu_s * 1e6 / self.received as f64)
    }

    /// The whole machine's CPU per datagram the sinks received.
    pub fn machine_us_per_msg(&self) -> Option<f64> {
        (self.received > 0).then(|| self.machine_cpu_s * 1e6 / self.received as f64)
    }
}

/// Paced blast at `rate` datagrams/s through `kind` (or straight to a sink).
pub fn latency(
    env: &Env,
    at: Ground<'_>,
    kind: Option<Kind>,
    workers: usize,
    rate: f64,
    seconds: f64,
    tag: &str,
) -> Result<LatencyRun> {
    let sinks = at.sinks(true)?;
    let mut lb = match kind {
        Some(k) => {
            let (listen, site) = at.forwarder()?;
            Some(Balancer::start(env, k, workers, listen, &sinks.addrs, tag, site)?)
        }
        None => None,
    };
    let target: SocketAddr = lb.as_ref().map_or(sinks.addrs[0], |b| b.listen);
    let spec = at.blast(target, seconds, Some(rate));
    if let Some(b) = lb.as_mut() {
        b.mark();
    }
    let before = MachineMark::now()?;
    // On its own thread: the load tools pin themselves, the main thread (which
    // starts the forwarders) must keep every CPU.
    let blasted = std::thread::spawn(move || traffic::blast(&spec, 0))
        .join()
        .map_err(|_| anyhow::anyhow!("blaster panicked"))??;
    let machine_cpu_s = before.busy_s(&MachineMark::now()?);
    std::thread::sleep(Duration::from_millis(200));
    let received = sinks.count();
    let usage = match lb {
        Some(mut b) => {
            let mut u = b.usage();
            b.stop(&mut u)?;
            Some(u)
        }
        None => None,
    };
    let mut samples = sinks.finish();
    let (p50_ns, p99_ns) = traffic::percentiles(&mut samples).context("too few latency samples arrived")?;
    Ok(LatencyRun { kind, workers, rate, sent: blasted.sent, received, p50_ns, p99_ns, usage, machine_cpu_s })
}
