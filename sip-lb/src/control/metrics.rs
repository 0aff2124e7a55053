//! Prometheus exposition (prometheus-client's text encoder) of a
//! [`Snapshot`] and the XDP counters, built at scrape time by a
//! `Collector`: the data plane's atomics are the source of truth, nothing
//! is copied into metric objects in between.
//!
//! Counter families get the `_total` suffix from the encoder; see
//! `docs/operations.md` for the list.
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use sip_lb_common::maps::PassReason;

use super::snapshot::{AfxdpQueueSnapshot, AfxdpSnapshot, AfxdpWorkerSnapshot, Snapshot, WorkerSnapshot};
use super::state::State;
use crate::dataplane::StunStats;
use crate::stream::stats::StreamStats;
use crate::xdp::XdpCounters;
use std::sync::Arc;

/// The `/metrics` body.
pub fn render(snapshot: Snapshot, xdp: Option<XdpCounters>) -> String {
    render_with(snapshot, xdp, Extra::default())
}

/// Counters of optional parts, present only when they run.
#[derive(Debug, Default)]
pub struct Extra {
    /// The TCP/TLS layer (`super::stream_metrics`).
    pub streams: Option<Arc<StreamStats>>,
    /// STUN on the UDP port.
    pub stun: Option<Arc<StunStats>>,
    /// The config digest and the cluster VIPs (`super::cluster::metrics`).
    pub cluster: Option<super::cluster::metrics::ClusterView>,
    /// HEP mirroring (`super::hep_metrics`).
    pub hep: Option<Arc<crate::dataplane::hep::HepStats>>,
}

/// [`render`] plus the families of `extra`.
pub fn render_with(snapshot: Snapshot, xdp: Option<XdpCounters>, extra: Extra) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { snapshot, xdp, extra }));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct Scrape {
    snapshot: Snapshot,
    xdp: Option<XdpCounters>,
    extra: Extra,
}

pub(super) type Labels = Vec<(&'static str, String)>;

/// One family: name, help, type, and (labels, value) samples.
pub(super) fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in samples {
        if labels.is_empty() {
            v.encode(m.encode_family(&())?)?;
        } else {
            v.encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn worker_labels(w: &WorkerSnapshot) -> Labels {
    vec![("worker", w.worker.to_string()), ("cpu", w.cpu.map_or_else(|| "none".into(), |c| c.to_string()))]
}

fn per_worker(
    enc: &mut DescriptorEncoder,
    s: &Snapshot,
    name: &str,
    help: &str,
    f: fn(&WorkerSnapshot) -> u64,
) -> Result<(), std::fmt::Error> {
    family(enc, name, help, MetricType::Counter, s.workers.iter().map(|w| (worker_labels(w), ConstCounter::new(f(w)))))
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.snapshot;
        let e = &mut enc;
        config_families(e, s)?;
        worker_traffic(e, s)?;
        worker_replies_and_drops(e, s, xdp_shield_drops(s, self.xdp.as_ref()))?;
        unaccounted(e, s)?;
        backend_traffic(e, s)?;
        backend_state(e, s)?;
        backend_probes(e, s)?;
        // The AF_XDP data path: per queue, per worker, the redirect program.
        if let Some(a) = &s.afxdp {
            afxdp_families(e, a)?;
        }
        // XDP / reuseport steering programs: per-CPU counters from their maps.
        if let Some(x) = &self.xdp {
            xdp_families(e, x)?;
        }
        if let Some(st) = &self.extra.streams {
            super::stream_metrics::families(e, st)?;
        }
        if let Some(st) = &self.extra.stun {
            super::stream_metrics::stun_family(e, st)?;
        }
        if let Some(c) = &self.extra.cluster {
            super::cluster::metrics::families(e, c)?;
        }
        if let Some(h) = &self.extra.hep {
            super::hep_metrics::families(e, h)?;
        }
        Ok(())
    }
}

/// Config generation and rejected reloads.
fn config_families(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), std::fmt::Error> {
    family(
        e,
        "sip_lb_config_generation",
        "Configuration generation: 1 at start, +1 per applied reload",
        MetricType::Gauge,
        [(Labels::new(), ConstGauge::new(s.generation as i64))],
    )?;
    family(
        e,
        "sip_lb_config_reload_failures",
        "Reloads rejected (invalid config); the old config kept running",
        MetricType::Counter,
        [(Labels::new(), ConstCounter::new(s.reload_failures))],
    )?;
    family(
        e,
        "sip_lb_shield_bans",
        "Runtime bans in force (operator's and automatic)",
        MetricType::Gauge,
        [(Labels::new(), ConstGauge::new(s.shield_bans as i64))],
    )?;
    family(
        e,
        "sip_lb_kernel_udp_in_csum_errors",
        "The kernel's UDP datagrams dropped for bad checksums in sip-lb's namespace (veth checksum trap: docs/shield.md)",
        MetricType::Counter,
        [(Labels::new(), ConstCounter::new(s.udp_in_csum_errors))],
    )
}

/// Per-worker datagram, byte and forwarding counters.
fn worker_traffic(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), std::fmt::Error> {
    per_worker(e, s, "sip_lb_worker_rx_datagrams", "Datagrams received by the worker", |w| w.rx_datagrams)?;
    per_worker(e, s, "sip_lb_worker_rx_bytes", "Bytes received by the worker", |w| w.rx_bytes)?;
    per_worker(e, s, "sip_lb_worker_tx_datagrams", "Datagrams sent by the worker", |w| w.tx_datagrams)?;
    per_worker(e, s, "sip_lb_worker_tx_bytes", "Bytes sent by the worker", |w| w.tx_bytes)?;
    per_worker(e, s, "sip_lb_worker_tx_errors", "Datagrams the worker failed to send (and receive errors)", |w| {
        w.tx_errors
    })?;
    per_worker(e, s, "sip_lb_worker_requests_forwarded", "Requests forwarded to a backend", |w| w.requests_forwarded)?;
    per_worker(e, s, "sip_lb_worker_responses_forwarded", "Responses relayed to the next Via", |w| {
        w.responses_forwarded
    })
}

/// The shield's XDP stage drops, (blocked, rate limited), summed over CPUs
/// and both XDP programs; `None` when no XDP program runs.
fn xdp_shield_drops(s: &Snapshot, xdp: Option<&XdpCounters>) -> Option<(u64, u64)> {
    let steering = xdp
        .and_then(|x| x.xdp.as_ref())
        .map(|p| p.per_cpu.iter().fold((0, 0), |(b, r), c| (b + c.shield_blocked, r + c.shield_rate_limited)));
    let afxdp = s.afxdp.as_ref().map(|a| (a.shield_blocked, a.shield_rate_limited));
    match (steering, afxdp) {
        (None, None) => None,
        (a, b) => {
            let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
            Some((a.0 + b.0, a.1 + b.1))
        }
    }
}

/// Per-worker stateless replies (by code) and drops (by reason); the
/// shield's drops also by the XDP stage (`xdp_drops`, when XDP runs).
fn worker_replies_and_drops(
    e: &mut DescriptorEncoder,
    s: &Snapshot,
    xdp_drops: Option<(u64, u64)>,
) -> Result<(), std::fmt::Error> {
    family(
        e,
        "sip_lb_worker_replies",
        "Stateless replies generated, by status code",
        MetricType::Counter,
        s.workers.iter().flat_map(|w| {
            w.replies.iter().map(move |(code, n)| {
                let mut l = worker_labels(w);
                l.push(("code", code.clone()));
                (l, ConstCounter::new(*n))
            })
        }),
    )?;
    family(
        e,
        "sip_lb_worker_drops",
        "Datagrams dropped, by reason",
        MetricType::Counter,
        s.workers.iter().flat_map(|w| {
            w.drops.iter().map(move |(reason, n)| {
                let mut l = worker_labels(w);
                l.push(("reason", reason.clone()));
                (l, ConstCounter::new(*n))
            })
        }),
    )?;
    family(
        e,
        "sip_lb_shield_dropped",
        "Datagrams (and stateless replies) the shield dropped, by stage and reason",
        MetricType::Counter,
        s.workers
            .iter()
            .flat_map(|w| {
                w.shield_drops.iter().map(move |(reason, n)| {
                    let mut l = worker_labels(w);
                    l.push(("stage", "worker".to_owned()));
                    l.push(("reason", reason.clone()));
                    (l, ConstCounter::new(*n))
                })
            })
            .chain(xdp_drops.into_iter().flat_map(|(blocked, rate_limited)| {
                [("blocked", blocked), ("rate_limited", rate_limited)].map(|(reason, n)| {
                    (vec![("stage", "xdp".to_owned()), ("reason", reason.to_owned())], ConstCounter::new(n))
                })
            })),
    )
}

/// The accounting invariant (`account.rs`): per worker and for the XDP
/// program, datagrams received but counted as nothing else; 0 at rest.
fn unaccounted(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), std::fmt::Error> {
    let workers = s.workers.iter().map(|w| {
        let mut l = worker_labels(w);
        l.push(("stage", "worker".to_owned()));
        (l, ConstGauge::new(w.unaccounted))
    });
    let xdp = s.xdp_account.iter().map(|x| (vec![("stage", "xdp".to_owned())], ConstGauge::new(x.unaccounted)));
    family(
        e,
        "sip_lb_unaccounted",
        "Datagrams received but not counted as forwarded, replied, dropped or passed (0 at rest)",
        MetricType::Gauge,
        workers.chain(xdp),
    )
}

fn backend_labels(addr: &std::net::SocketAddr) -> Labels {
    vec![("backend", addr.to_string())]
}

/// Requests and responses per backend, summed over workers.
fn backend_traffic(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), std::fmt::Error> {
    family(
        e,
        "sip_lb_backend_requests",
        "Requests forwarded to the backend (all workers)",
        MetricType::Counter,
        s.backends.iter().map(|x| (backend_labels(&x.addr), ConstCounter::new(x.requests))),
    )?;
    family(
        e,
        "sip_lb_backend_responses",
        "Responses relayed from the backend (all workers)",
        MetricType::Counter,
        s.backends.iter().map(|x| (backend_labels(&x.addr), ConstCounter::new(x.responses))),
    )
}

/// Health, admin state and configured weights of the backends.
fn backend_state(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), std::fmt::Error> {
    family(
        e,
        "sip_lb_backend_up",
        "1 if the backend answers its OPTIONS probes (health), else 0",
        MetricType::Gauge,
        s.backends.iter().map(|x| (backend_labels(&x.addr), ConstGauge::new(i64::from(x.healthy)))),
    )?;
    family(
        e,
        "sip_lb_backend_state",
        "1 for the backend's current state (up, down, draining)",
        MetricType::Gauge,
        s.backends.iter().flat_map(|x| {
            State::ALL.iter().map(move |st| {
                let mut l = backend_labels(&x.addr);
                l.push(("state", st.as_str().to_owned()));
                (l, ConstGauge::new(i64::from(x.state == st.as_str())))
            })
        }),
    )?;
    family(
        e,
        "sip_lb_backend_weight",
        "Configured weight of the backend in its pool",
        MetricType::Gauge,
        s.backends.iter().flat_map(|x| {
            x.pools.iter().map(move |(pool, w)| {
                (vec![("pool", pool.clone()), ("backend", x.addr.to_string())], ConstGauge::new(i64::from(*w)))
            })
        }),
    )
}

/// OPTIONS probe counts, failures and the last round-trip time.
fn backend_probes(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), std::fmt::Error> {
    family(
        e,
        "sip_lb_backend_probes",
        "OPTIONS probes completed (answered or timed out)",
        MetricType::Counter,
        s.backends.iter().map(|x| (backend_labels(&x.addr), ConstCounter::new(x.probes))),
    )?;
    family(
        e,
        "sip_lb_backend_probe_failures",
        "OPTIONS probes that timed out, failed to send or got a code not counted as alive",
        MetricType::Counter,
        s.backends.iter().map(|x| (backend_labels(&x.addr), ConstCounter::new(x.probe_failures))),
    )?;
    family(
        e,
        "sip_lb_backend_probe_rtt_seconds",
        "Round-trip time of the last answered OPTIONS probe",
        MetricType::Gauge,
        s.backends.iter().filter_map(|x| Some((backend_labels(&x.addr), ConstGauge::new(x.probe_rtt_ms? / 1e3)))),
    )
}

/// The AF_XDP data path (`docs/afxdp.md`): `sip_lb_afxdp_*`.
fn afxdp_families(e: &mut DescriptorEncoder, a: &AfxdpSnapshot) -> Result<(), std::fmt::Error> {
    let queue = |q: &AfxdpQueueSnapshot| -> Labels { vec![("queue", q.queue.to_string())] };
    let per_queue = |e: &mut DescriptorEncoder, name: &str, help: &str, f: fn(&AfxdpQueueSnapshot) -> u64| {
        family(e, name, help, MetricType::Counter, a.queues.iter().map(|q| (queue(q), ConstCounter::new(f(q)))))
    };
    per_queue(e, "sip_lb_afxdp_queue_rx_frames", "Frames read from the queue's RX ring", |q| q.rx)?;
    per_queue(e, "sip_lb_afxdp_queue_tx_frames", "Frames put on the queue's TX ring", |q| q.tx)?;
    per_queue(e, "sip_lb_afxdp_queue_kept", "Frames handled by the worker that read them (no hand-off)", |q| q.kept)?;
    per_queue(e, "sip_lb_afxdp_queue_handed_off", "Frames handed to their Call-ID's worker", |q| q.handed_off)?;
    per_queue(
        e,
        "sip_lb_afxdp_queue_handoff_full",
        "Frames dropped: the owning worker's hand-off queue was full",
        |q| q.handoff_full,
    )?;
    per_queue(e, "sip_lb_afxdp_queue_no_meta", "Frames without the XDP program's metadata", |q| q.no_meta)?;
    per_queue(
        e,
        "sip_lb_afxdp_queue_fill_ring_empty",
        "Times the fill ring was found empty (the kernel drops until refilled)",
        |q| q.fill_ring_empty,
    )?;
    per_queue(e, "sip_lb_afxdp_queue_tx_ring_full", "Frames not put on the TX ring because it was full", |q| {
        q.tx_ring_full
    })?;
    per_queue(
        e,
        "sip_lb_afxdp_queue_kernel_rx_dropped",
        "Frames the kernel dropped on this socket (XDP_STATISTICS)",
        |q| q.kernel_rx_dropped,
    )?;
    family(
        e,
        "sip_lb_afxdp_queue_completion_lag",
        "TX descriptors submitted and not yet completed",
        MetricType::Gauge,
        a.queues.iter().map(|q| (queue(q), ConstGauge::new(q.completion_lag as i64))),
    )?;
    let worker = |w: &AfxdpWorkerSnapshot| -> Labels { vec![("worker", w.worker.to_string())] };
    family(
        e,
        "sip_lb_afxdp_worker_rx_frames",
        "Frames an AF_XDP worker handled (read from its queue or handed to it)",
        MetricType::Counter,
        a.workers.iter().map(|w| (worker(w), ConstCounter::new(w.rx))),
    )?;
    family(
        e,
        "sip_lb_afxdp_worker_tx_frames",
        "Frames an AF_XDP worker sent through a TX ring",
        MetricType::Counter,
        a.workers.iter().map(|w| (worker(w), ConstCounter::new(w.tx))),
    )?;
    family(
        e,
        "sip_lb_afxdp_worker_tx_socket",
        "Datagrams an AF_XDP worker sent through the socket path instead, by reason",
        MetricType::Counter,
        a.workers.iter().flat_map(|w| {
            w.tx_socket.iter().map(move |(r, n)| {
                let mut l = worker(w);
                l.push(("reason", r.clone()));
                (l, ConstCounter::new(*n))
            })
        }),
    )?;
    family(
        e,
        "sip_lb_afxdp_worker_not_ours",
        "Frames that were not one UDP datagram to a listen address",
        MetricType::Counter,
        a.workers.iter().map(|w| (worker(w), ConstCounter::new(w.not_ours))),
    )?;
    family(
        e,
        "sip_lb_afxdp_program_frames",
        "Frames seen by the AF_XDP redirect program",
        MetricType::Counter,
        [(Labels::new(), ConstCounter::new(a.seen))],
    )?;
    family(
        e,
        "sip_lb_afxdp_program_redirected",
        "Frames redirected into an AF_XDP socket",
        MetricType::Counter,
        [(Labels::new(), ConstCounter::new(a.redirected))],
    )?;
    family(
        e,
        "sip_lb_afxdp_program_passed",
        "Frames passed to the kernel (socket path), by reason",
        MetricType::Counter,
        a.passed.iter().map(|(r, n)| (vec![("reason", r.clone())], ConstCounter::new(*n))),
    )
}

/// The steering programs' per-CPU counters (XDP, if attached, then reuseport).
fn xdp_families(e: &mut DescriptorEncoder, x: &XdpCounters) -> Result<(), std::fmt::Error> {
    let programs: Vec<(&str, &crate::xdp::ProgramCounters)> =
        x.xdp.iter().map(|p| ("xdp", p)).chain([("reuseport", &x.reuseport)]).collect();
    let per_cpu = |f: fn(&sip_lb_common::maps::Counters) -> u64| {
        programs.iter().flat_map(move |(prog, p)| {
            p.per_cpu.iter().enumerate().map(move |(cpu, c)| {
                (vec![("program", (*prog).to_owned()), ("cpu", cpu.to_string())], ConstCounter::new(f(c)))
            })
        })
    };
    family(
        e,
        "sip_lb_xdp_packets",
        "Frames seen by the steering program, per CPU",
        MetricType::Counter,
        per_cpu(|c| c.packets),
    )?;
    family(
        e,
        "sip_lb_xdp_bytes",
        "Bytes seen by the steering program, per CPU",
        MetricType::Counter,
        per_cpu(|c| c.bytes),
    )?;
    family(
        e,
        "sip_lb_xdp_steered",
        "Datagrams steered to their Call-ID's worker, per CPU",
        MetricType::Counter,
        per_cpu(|c| c.steered.iter().sum()),
    )?;
    // XDP alone decides where the stack runs: kept on the receiving CPU, or
    // not scanned at all below the redirect threshold.
    let xdp_per_cpu = |f: fn(&sip_lb_common::maps::Counters) -> u64| {
        x.xdp.iter().flat_map(move |p| {
            p.per_cpu.iter().enumerate().map(move |(cpu, c)| (vec![("cpu", cpu.to_string())], ConstCounter::new(f(c))))
        })
    };
    family(
        e,
        "sip_lb_xdp_kept_local",
        "Datagrams XDP steered to a worker on the receiving CPU itself (no CPU-map hop), per CPU",
        MetricType::Counter,
        xdp_per_cpu(|c| c.kept_local),
    )?;
    family(
        e,
        "sip_lb_xdp_below_threshold",
        "SIP datagrams XDP passed unscanned on the receiving CPU, below the redirect threshold, per CPU",
        MetricType::Counter,
        xdp_per_cpu(|c| c.below_threshold),
    )?;
    family(
        e,
        "sip_lb_xdp_passed",
        "Datagrams passed unsteered, per CPU and reason",
        MetricType::Counter,
        programs.iter().flat_map(|(prog, p)| {
            p.per_cpu.iter().enumerate().flat_map(move |(cpu, c)| {
                PassReason::ALL.iter().map(move |r| {
                    (
                        vec![
                            ("program", (*prog).to_owned()),
                            ("cpu", cpu.to_string()),
                            ("reason", r.name().to_owned()),
                        ],
                        ConstCounter::new(c.passed[*r as usize]),
                    )
                })
            })
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::snapshot::BackendSnapshot;
    use crate::xdp::{Counters, ProgramCounters};

    /// Every family with known, distinct values: two workers (one unpinned),
    /// two backends (one never answered a probe), both steering programs.
    fn snapshot() -> Snapshot {
        let worker = |worker, cpu, base: u64| WorkerSnapshot {
            worker,
            cpu,
            rx_datagrams: base + 1,
            rx_bytes: base + 2,
            tx_datagrams: base + 3,
            tx_bytes: base + 4,
            tx_errors: base + 5,
            requests_forwarded: base + 6,
            responses_forwarded: base + 7,
            replies: vec![("483".into(), base + 8), ("503".into(), base + 9)],
            drops: vec![("parse".into(), base + 10), ("loop".into(), base + 11)],
            shield_drops: vec![("blocked".into(), base + 12), ("rate_limited".into(), base + 13)],
            stun: 0,
            relay_dropped: 0,
            unaccounted: base as i64 - 100,
        };
        let backend = |addr: &str, pools: Vec<(String, u32)>, state: &str, healthy, base: u64, rtt| BackendSnapshot {
            addr: addr.parse().unwrap(),
            pools,
            state: state.into(),
            healthy,
            drained: state == "draining",
            requests: base + 1,
            responses: base + 2,
            probes: base + 3,
            probe_failures: base + 4,
            last_probe_code: None,
            probe_rtt_ms: rtt,
        };
        Snapshot {
            generation: 3,
            reload_failures: 2,
            workers: vec![worker(0, Some(2), 100), worker(1, None, 200)],
            backends: vec![
                backend(
                    "10.0.0.1:5060",
                    vec![("default".into(), 2), ("registrar".into(), 1)],
                    "up",
                    true,
                    300,
                    Some(12.5),
                ),
                backend("[2001:db8::2]:5060", vec![("default".into(), 1)], "draining", false, 400, None),
            ],
            afxdp: Some(afxdp()),
            shield_bans: 4,
            udp_in_csum_errors: 5,
            xdp_account: Some(crate::control::account::XdpAccount { unaccounted: 7, ..Default::default() }),
        }
    }

    /// Two queues, two AF_XDP workers, the program's totals.
    fn afxdp() -> crate::control::snapshot::AfxdpSnapshot {
        use crate::control::snapshot::{AfxdpQueueSnapshot, AfxdpSnapshot, AfxdpWorkerSnapshot};
        let queue = |queue, base: u64| AfxdpQueueSnapshot {
            queue,
            rx: base + 1,
            tx: base + 2,
            kept: base + 10,
            handed_off: base + 3,
            handoff_full: base + 4,
            no_meta: base + 5,
            fill_ring_empty: base + 6,
            tx_ring_full: base + 7,
            completion_lag: base + 8,
            kernel_rx_dropped: base + 9,
        };
        let worker = |worker, base: u64| AfxdpWorkerSnapshot {
            worker,
            rx: base + 1,
            tx: base + 2,
            tx_socket: vec![
                ("unresolved".into(), base + 3),
                ("too_long".into(), base + 4),
                ("tx_ring_full".into(), base + 5),
            ],
            not_ours: base + 6,
        };
        AfxdpSnapshot {
            queues: vec![queue(0, 500), queue(1, 600)],
            workers: vec![worker(0, 700), worker(1, 800)],
            seen: 901,
            redirected: 902,
            passed: vec![("fragment".into(), 903), ("no_socket".into(), 904)],
            shield_blocked: 905,
            shield_rate_limited: 906,
        }
    }

    fn counters(base: u64) -> Counters {
        let mut c = Counters::zeroed();
        c.packets = base + 1;
        c.bytes = base + 2;
        for (i, p) in c.passed.iter_mut().enumerate() {
            *p = base + 10 + i as u64;
        }
        c.steered[0] = base + 3;
        c.steered[1] = base + 4;
        c.kept_local = base + 5;
        c.below_threshold = base + 6;
        c.shield_blocked = base + 7;
        c.shield_rate_limited = base + 8;
        c
    }

    fn program(per_cpu: Vec<Counters>) -> ProgramCounters {
        ProgramCounters { total: Counters::zeroed(), per_cpu }
    }

    fn xdp() -> XdpCounters {
        XdpCounters {
            xdp: Some(program(vec![counters(1000), counters(2000)])),
            reuseport: program(vec![counters(3000)]),
        }
    }

    /// The exposition is part of the interface (dashboards, the lab's
    /// scraper): byte for byte what `metrics.prom` holds.
    #[test]
    fn renders_the_known_exposition() {
        let got = render(snapshot(), Some(xdp()));
        let want = include_str!("metrics.prom");
        assert!(got == want, "rendered /metrics differs from metrics.prom:\n{got}");
    }

    /// Without steering the XDP families are simply absent.
    #[test]
    fn without_xdp_renders_the_rest() {
        let got = render(snapshot(), None);
        let want = include_str!("metrics.prom");
        let cut = want.find("# HELP sip_lb_xdp_packets").unwrap();
        // The shield's XDP-stage samples then count the AF_XDP program's alone.
        let no_xdp_stage = |s: &str| -> String {
            s.lines().filter(|l| !l.contains("stage=\"xdp\"")).map(|l| format!("{l}\n")).collect()
        };
        assert_eq!(no_xdp_stage(&got), format!("{}# EOF\n", no_xdp_stage(&want[..cut])));
        assert!(got.contains("sip_lb_shield_dropped_total{stage=\"xdp\",reason=\"blocked\"} 905\n"), "{got}");
    }
}
