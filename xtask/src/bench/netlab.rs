//! Machine-wide CPU per message in network namespaces (comparison 6): SIPp
//! UAC (client ns) -> balancer (lb ns, one interface: one-armed, see
//! `topology.rs`) -> two SIPp UAS (farm ns).
//!
//! On veth much of the receive work runs in softirq on whichever CPU sent the
//! packet, so a balancer's own CPU time hides part of its cost. Here the
//! figure is the whole machine's busy time over the call window (CPUs x wall
//! minus cpuidle residency, `procs::MachineMark`), per message SIPp completed,
//! with the lb namespace as a plain IP router (`ip_forward`, the UAC calling
//! one UAS straight through it) as the baseline: what a contender costs is
//! its figure minus the router's. The balancer's own (per-process) CPU is
//! reported beside it.
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use sip_lb_tests::netns::NetNs;

use super::topology::{sip_addr, OneArmed as Topology, CLIENT_IP, FARM, LB_IP, LB_NIC};

use super::balancer::{Balancer, Kind, Site};
use super::sipp::{self, Stats, MESSAGES_PER_CALL};
use super::Env;

/// What forwards between the client and farm namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contender {
    /// The lb namespace routing IP packets, no SIP work: the baseline.
    Router,
    Balancer(Kind),
}

impl Contender {
    pub fn name(self) -> String {
        match self {
            Contender::Router => "kernel IP router (baseline)".into(),
            Contender::Balancer(k) => k.label(WORKERS),
        }
    }
}

/// Workers (sip-lb) or children (Kamailio): one per CPU of these machines.
pub const WORKERS: usize = 2;

pub struct NetRun {
    pub contender: Contender,
    pub rate: u64,
    pub round: usize,
    pub uac: Stats,
    /// Busy CPU-seconds of the whole machine over the call window.
    pub machine_cpu_s: f64,
    /// The balancer's own processes (utime+stime); 0 for the router.
    pub process_cpu_s: f64,
    pub wall_s: f64,
    /// sip-lb only: datagrams received per worker.
    pub per_worker_rx: Vec<u64>,
    /// The kernel's UDP receive errors over the window (RcvbufErrors +
    /// InErrors + InCsumErrors of /proc/net/snmp) in the client, lb and farm
    /// namespaces: where datagrams were lost.
    pub udp_errors: Vec<u64>,
}

impl NetRun {
    pub fn messages(&self) -> u64 {
        self.uac.successful * MESSAGES_PER_CALL
    }

    /// Machine-wide CPU-µs per message SIPp completed.
    pub fn machine_us_per_msg(&self) -> Option<f64> {
        (self.messages() > 0).then(|| self.machine_cpu_s * 1e6 / self.messages() as f64)
    }

    pub fn process_us_per_msg(&self) -> Option<f64> {
        (self.messages() > 0).then(|| self.process_cpu_s * 1e6 / self.messages() as f64)
    }
}

/// The namespaces, wired once for every run of the comparison (deleted on drop).
pub struct Net {
    topo: Topology,
}

impl Net {
    pub fn create() -> Result<Net> {
        let topo = Topology::create().context("creating the bench's network namespaces")?;
        Ok(Net { topo })
    }
}

/// [`udp_errors`] of the client, lb and farm namespaces.
fn udp_errors_by_ns(topo: &Topology) -> Result<Vec<u64>> {
    [&topo.client, &topo.lb, &topo.farm].iter().map(|ns| udp_errors(ns)).collect()
}

/// RcvbufErrors + InErrors + InCsumErrors from the namespace's /proc/net/snmp.
fn udp_errors(ns: &NetNs) -> Result<u64> {
    let out = ns.exec(&["cat", "/proc/net/snmp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().context("no Udp: header")?, udp.next().context("no Udp: values")?);
    let value = |name: &str| {
        names
            .split_whitespace()
            .position(|n| n == name)
            .and_then(|i| values.split_whitespace().nth(i)?.parse::<u64>().ok())
    };
    Ok(["RcvbufErrors", "InErrors", "InCsumErrors"].iter().filter_map(|n| value(n)).sum())
}

impl Net {
    /// The two backends (SIPp UAS or sinks) in the farm namespace.
    pub fn backends(&self) -> Vec<SocketAddr> {
        FARM.iter().map(|ip| sip_addr(*ip)).collect()
    }

    pub fn farm_ns(&self) -> &str {
        self.topo.farm.name()
    }

    pub fn client_ns(&self) -> &str {
        self.topo.client.name()
    }

    pub fn client_ip(&self) -> IpAddr {
        IpAddr::V4(CLIENT_IP)
    }

    /// Where a forwarder listens: sip-lb's client-facing address.
    pub fn listen(&self) -> SocketAddr {
        sip_addr(LB_IP)
    }

    /// Forwarders run in the lb namespace; `--iface` is its one interface.
    pub fn lb_site(&self) -> Site<'_> {
        site(&self.topo.lb)
    }
}

/// Processes started in `ns`; `--iface` there means the lb's client-facing veth.
fn site(ns: &NetNs) -> Site<'_> {
    Site { netns: Some(ns.name()), iface: Some(LB_NIC) }
}

/// One run: two SIPp UAS in the farm, the contender in the lb namespace, a
/// SIPp UAC in the client namespace placing `rate` calls/s for `seconds`.
pub fn run(env: &Env, net: &Net, contender: Contender, rate: u64, seconds: u64, round: usize) -> Result<NetRun> {
    let topo = &net.topo;
    let tag = format!("net-{rate}-{round}");
    let backends = net.backends();
    let lifetime = Duration::from_secs(seconds + 40);
    let uas = backends
        .iter()
        .enumerate()
        .map(|(i, b)| sipp::start_uas(site(&topo.farm), *b, &format!("{tag}-uas{i}"), &env.logs, lifetime))
        .collect::<Result<Vec<_>>>()?;
    let listen = sip_addr(LB_IP);
    let mut lb = match contender {
        Contender::Router => None,
        Contender::Balancer(kind) => {
            Some(Balancer::start(env, kind, WORKERS, listen, &backends, &tag, site(&topo.lb))?)
        }
    };
    let target = if lb.is_some() { listen } else { backends[0] };
    let local = SocketAddr::new(IpAddr::V4(CLIENT_IP), 5061);
    let before = super::procs::MachineMark::now()?;
    if let Some(lb) = lb.as_mut() {
        lb.mark();
    }
    let errors_before = udp_errors_by_ns(topo)?;
    let mut uac =
        sipp::start_uac(site(&topo.client), target, local, rate, rate * seconds, &format!("{tag}-uac"), &env.logs)?;
    // The window is the calls' time plus a second for the last ones to end;
    // a call that lost a message would otherwise stretch it to SIPp's timeout.
    uac.wait(Duration::from_secs(seconds + 1));
    let after = super::procs::MachineMark::now()?;
    let errors_after = udp_errors_by_ns(topo)?;
    // Calls that lost a message would keep SIPp retransmitting until its
    // timeout: they count as unfinished, not as time to wait for.
    let uac = uac.stop()?;
    let (process_cpu_s, per_worker_rx) = match lb.take() {
        None => (0.0, Vec::new()),
        Some(mut lb) => {
            let mut usage = lb.usage();
            lb.stop(&mut usage)?;
            (usage.cpu_s, usage.per_worker_rx)
        }
    };
    for u in uas {
        u.finish()?;
    }
    Ok(NetRun {
        contender,
        rate,
        round,
        uac,
        machine_cpu_s: before.busy_s(&after),
        process_cpu_s,
        wall_s: before.wall_s(&after),
        per_worker_rx,
        udp_errors: errors_after.iter().zip(errors_before).map(|(a, b)| a.saturating_sub(b)).collect(),
    })
}
