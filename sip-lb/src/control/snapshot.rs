//! A point-in-time read of every counter and backend state, shared by
//! `/metrics`, the JSON endpoints and `sip-lb top`. Worker counters are
//! summed here, on the control plane; the data plane only increments.
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use sip_lb_proto::proxy::{DropReason, ReplyCode};
use sip_lb_proto::shield::ShieldDrop;

use super::Control;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub generation: u64,
    pub reload_failures: u64,
    pub workers: Vec<WorkerSnapshot>,
    pub backends: Vec<BackendSnapshot>,
    /// The AF_XDP data path's counters, when it runs (`docs/afxdp.md`).
    #[serde(default)]
    pub afxdp: Option<AfxdpSnapshot>,
    /// Runtime bans in force (`GET /bans` lists them).
    #[serde(default)]
    pub shield_bans: u64,
    /// The kernel's `Udp: InCsumErrors` at the last reading (this namespace).
    #[serde(default)]
    pub udp_in_csum_errors: u64,
    /// The XDP program on the interface, accounted (`account.rs`), when one runs.
    #[serde(default)]
    pub xdp_account: Option<super::account::XdpAccount>,
}

pub use crate::dataplane::afxdp::stats::{AfxdpQueueSnapshot, AfxdpSnapshot, AfxdpWorkerSnapshot};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerSnapshot {
    pub worker: usize,
    pub cpu: Option<usize>,
    pub rx_datagrams: u64,
    pub rx_bytes: u64,
    pub tx_datagrams: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    pub requests_forwarded: u64,
    pub responses_forwarded: u64,
    /// (status code; count) of stateless replies.
    pub replies: Vec<(String, u64)>,
    /// (reason; count).
    pub drops: Vec<(String, u64)>,
    /// (reason; count) of datagrams and replies the shield dropped.
    #[serde(default)]
    pub shield_drops: Vec<(String, u64)>,
    /// STUN requests handled, and flow messages the relay could not queue.
    #[serde(default)]
    pub stun: u64,
    #[serde(default)]
    pub relay_dropped: u64,
    /// Received but not counted as any of the above (0 at rest: `account.rs`).
    #[serde(default)]
    pub unaccounted: i64,
}

impl WorkerSnapshot {
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().map(|d| d.1).sum()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendSnapshot {
    pub addr: SocketAddr,
    /// (pool, weight) for each pool listing this backend.
    pub pools: Vec<(String, u32)>,
    /// "up", "down" or "draining".
    pub state: String,
    /// Probe health, whatever the admin state.
    pub healthy: bool,
    pub drained: bool,
    /// Requests forwarded to it, summed over workers.
    pub requests: u64,
    /// Responses relayed from it.
    pub responses: u64,
    pub probes: u64,
    pub probe_failures: u64,
    pub last_probe_code: Option<u16>,
    pub probe_rtt_ms: Option<f64>,
}

impl Control {
    pub fn snapshot(&self) -> Snapshot {
        let workers = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| WorkerSnapshot {
                worker: i,
                cpu: self.cpus.get(i).copied().flatten(),
                rx_datagrams: w.rx_datagrams.get(),
                rx_bytes: w.rx_bytes.get(),
                tx_datagrams: w.tx_datagrams.get(),
                tx_bytes: w.tx_bytes.get(),
                tx_errors: w.tx_errors.get(),
                requests_forwarded: w.requests_forwarded.get(),
                responses_forwarded: w.responses_forwarded.get(),
                replies: ReplyCode::ALL.iter().map(|c| (c.code().to_string(), w.replies[c.index()].get())).collect(),
                drops: DropReason::ALL.iter().map(|r| (r.as_str().to_owned(), w.drops[r.index()].get())).collect(),
                shield_drops: ShieldDrop::ALL
                    .iter()
                    .map(|r| (r.name().to_owned(), w.shield_drops[r.index()].get()))
                    .collect(),
                stun: w.stun.get(),
                relay_dropped: w.relay_dropped.get(),
                unaccounted: w.unaccounted(),
            })
            .collect();
        let inner = self.lock();
        let backends = inner
            .backends
            .iter()
            .map(|(addr, b)| {
                let (requests, responses) = b.slot.map_or((0, 0), |s| {
                    let (q, r) = self.slot_totals(s);
                    let (bq, br) = inner.backends.baseline(s);
                    (q.saturating_sub(bq), r.saturating_sub(br))
                });
                BackendSnapshot {
                    addr,
                    pools: inner
                        .config
                        .pools
                        .iter()
                        .filter_map(|p| p.backends.iter().find(|x| x.addr == addr).map(|x| (p.name.clone(), x.weight)))
                        .collect(),
                    state: b.state().as_str().to_owned(),
                    healthy: b.health.is_up(),
                    drained: b.drained,
                    requests,
                    responses,
                    probes: b.probes_sent,
                    probe_failures: b.probes_failed,
                    last_probe_code: b.last_code,
                    probe_rtt_ms: b.last_rtt.map(|d| d.as_secs_f64() * 1e3),
                }
            })
            .collect();
        let afxdp = self.afxdp.as_ref().map(|read| read());
        let xdp_account = match &afxdp {
            Some(a) => Some(super::account::XdpAccount::afxdp(a)),
            None => self.xdp_counters().and_then(|c| c.xdp.as_ref().map(super::account::XdpAccount::steering)),
        };
        Snapshot {
            generation: self.generation(),
            reload_failures: self.reload_failures.load(std::sync::atomic::Ordering::Relaxed),
            workers,
            backends,
            afxdp,
            shield_bans: self.lock_bans().len() as u64,
            udp_in_csum_errors: self.csum_errors(),
            xdp_account,
        }
    }

    /// HEP mirroring counters, when `[hep]` is on.
    pub fn hep(&self) -> Option<std::sync::Arc<crate::dataplane::hep::HepStats>> {
        self.hep.clone()
    }

    /// STUN counters, when `stun = true`.
    pub fn stun(&self) -> Option<std::sync::Arc<crate::dataplane::StunStats>> {
        self.stun.clone()
    }

    /// The TCP/TLS layer's counters, when it runs.
    pub fn streams(&self) -> Option<std::sync::Arc<crate::stream::stats::StreamStats>> {
        self.streams.clone()
    }

    /// XDP counters if steering is attached and readable.
    pub fn xdp_counters(&self) -> Option<crate::xdp::XdpCounters> {
        let read = self.xdp.as_ref()?;
        match read() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!("reading XDP counters: {e:#}");
                None
            }
        }
    }
}
