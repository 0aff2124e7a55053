//! Per-second rates between two `/stats` snapshots: what both the text
//! table and the terminal UI show. Pure, for tests.
use std::net::SocketAddr;
use std::time::Duration;

use crate::control::snapshot::{Snapshot, WorkerSnapshot};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerRates {
    pub worker: usize,
    pub cpu: Option<usize>,
    pub rx: f64,
    pub tx: f64,
    pub requests: f64,
    pub responses: f64,
    pub replies: f64,
    pub drops: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackendRates {
    pub addr: Option<SocketAddr>,
    pub requests: f64,
    pub responses: f64,
    /// Of all backends' requests per second, in percent.
    pub share: f64,
}

/// (reason, per second, total since start), every reason listed.
pub type ReasonRate = (String, f64, u64);

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rates {
    pub workers: Vec<WorkerRates>,
    pub backends: Vec<BackendRates>,
    /// The core's drops by reason, summed over workers.
    pub drops: Vec<ReasonRate>,
    /// The shield's drops by reason, summed over workers.
    pub shield: Vec<ReasonRate>,
}

fn replies(w: &WorkerSnapshot) -> u64 {
    w.replies.iter().map(|r| r.1).sum()
}

/// Sums `(reason, count)` lists of every worker, keeping their order.
fn by_reason<'a>(workers: impl Iterator<Item = &'a [(String, u64)]>) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = Vec::new();
    for list in workers {
        for (r, n) in list {
            match all.iter_mut().find(|x| &x.0 == r) {
                Some(x) => x.1 += n,
                None => all.push((r.clone(), *n)),
            }
        }
    }
    all
}

impl Rates {
    /// Counter differences over `dt`; a worker or backend new in `now`
    /// counts from zero (worker) or from its current value (backend).
    pub fn between(prev: &Snapshot, now: &Snapshot, dt: Duration) -> Rates {
        let secs = dt.as_secs_f64().max(1e-3);
        let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        let workers = now
            .workers
            .iter()
            .map(|w| {
                let p = prev.workers.iter().find(|x| x.worker == w.worker).cloned().unwrap_or_default();
                WorkerRates {
                    worker: w.worker,
                    cpu: w.cpu,
                    rx: rate(p.rx_datagrams, w.rx_datagrams),
                    tx: rate(p.tx_datagrams, w.tx_datagrams),
                    requests: rate(p.requests_forwarded, w.requests_forwarded),
                    responses: rate(p.responses_forwarded, w.responses_forwarded),
                    replies: rate(replies(&p), replies(w)),
                    drops: rate(p.drops_total(), w.drops_total()),
                }
            })
            .collect();
        let mut backends: Vec<BackendRates> = now
            .backends
            .iter()
            .map(|b| {
                let p = prev.backends.iter().find(|x| x.addr == b.addr);
                BackendRates {
                    addr: Some(b.addr),
                    requests: rate(p.map_or(b.requests, |x| x.requests), b.requests),
                    responses: rate(p.map_or(b.responses, |x| x.responses), b.responses),
                    share: 0.0,
                }
            })
            .collect();
        let all: f64 = backends.iter().map(|b| b.requests).sum();
        for b in &mut backends {
            b.share = if all > 0.0 { 100.0 * b.requests / all } else { 0.0 };
        }
        let reasons = |f: fn(&WorkerSnapshot) -> &[(String, u64)]| -> Vec<ReasonRate> {
            let before = by_reason(prev.workers.iter().map(f));
            by_reason(now.workers.iter().map(f))
                .into_iter()
                .map(|(r, n)| {
                    let p = before.iter().find(|x| x.0 == r).map_or(0, |x| x.1);
                    (r, rate(p, n), n)
                })
                .collect()
        };
        Rates {
            workers,
            backends,
            drops: reasons(|w| w.drops.as_slice()),
            shield: reasons(|w| w.shield_drops.as_slice()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_summed_over_workers_by_reason() {
        let w = |worker, malformed, blocked| WorkerSnapshot {
            worker,
            drops: vec![("malformed".into(), malformed), ("branch_mac".into(), 0)],
            shield_drops: vec![("blocked".into(), blocked)],
            ..Default::default()
        };
        let prev = Snapshot { workers: vec![w(0, 10, 0), w(1, 0, 0)], ..Default::default() };
        let now = Snapshot { workers: vec![w(0, 30, 4), w(1, 20, 6)], ..Default::default() };
        let r = Rates::between(&prev, &now, Duration::from_secs(2));
        assert_eq!(r.drops, [("malformed".to_owned(), 20.0, 50), ("branch_mac".to_owned(), 0.0, 0)]);
        assert_eq!(r.shield, [("blocked".to_owned(), 5.0, 10)]);
        assert_eq!(r.workers[1].drops, 10.0);
    }
}
