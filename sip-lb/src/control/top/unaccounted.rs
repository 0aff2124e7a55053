//! Datagrams received but neither forwarded, replied to, dropped nor passed
//! on: a leak indicator. Every datagram a worker reads must end in exactly
//! one counter, and every frame the AF_XDP program sees in exactly one
//! verdict, so a figure that grows means an uncounted path. Small
//! transient values are expected: the counters of one snapshot are not
//! read atomically together (a batch's outcomes are counted before its
//! receives), so a figure may even be briefly negative.
use crate::control::snapshot::{Snapshot, WorkerSnapshot};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unaccounted {
    /// (worker, received - forwarded - replied - dropped - shield-dropped).
    pub workers: Vec<(usize, i64)>,
    /// The AF_XDP program: seen - redirected - passed - shield-dropped.
    pub xdp: Option<i64>,
}

fn sum(v: &[(String, u64)]) -> u64 {
    v.iter().map(|r| r.1).sum()
}

/// One worker's figure. Shield drops include the stateless replies it
/// suppressed (`reply_limited`), which stand in for a reply.
pub fn worker(w: &WorkerSnapshot) -> i64 {
    let out = w.requests_forwarded + w.responses_forwarded + sum(&w.replies) + w.drops_total() + sum(&w.shield_drops);
    w.rx_datagrams as i64 - out as i64
}

/// Every figure of a `/stats` snapshot.
pub fn unaccounted(s: &Snapshot) -> Unaccounted {
    Unaccounted {
        workers: s.workers.iter().map(|w| (w.worker, worker(w))).collect(),
        xdp: s.afxdp.as_ref().map(|a| {
            let out = a.redirected + sum(&a.passed) + a.shield_blocked + a.shield_rate_limited;
            a.seen as i64 - out as i64
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::snapshot::AfxdpSnapshot;

    #[test]
    fn every_outcome_is_subtracted_once() {
        let w = WorkerSnapshot {
            worker: 3,
            rx_datagrams: 100,
            requests_forwarded: 40,
            responses_forwarded: 30,
            replies: vec![("483".into(), 5), ("503".into(), 1)],
            drops: vec![("malformed".into(), 10), ("branch_mac".into(), 2)],
            shield_drops: vec![("blocked".into(), 4), ("reply_limited".into(), 1)],
            ..Default::default()
        };
        let a = AfxdpSnapshot {
            seen: 1000,
            redirected: 900,
            passed: vec![("not_udp".into(), 50), ("other_port".into(), 20)],
            shield_blocked: 10,
            shield_rate_limited: 5,
            ..Default::default()
        };
        let s = Snapshot { workers: vec![w], afxdp: Some(a), ..Default::default() };
        assert_eq!(unaccounted(&s), Unaccounted { workers: vec![(3, 7)], xdp: Some(15) });
        let none =
            Snapshot { workers: vec![WorkerSnapshot { rx_datagrams: 1, ..Default::default() }], ..Default::default() };
        assert_eq!(unaccounted(&none), Unaccounted { workers: vec![(0, 1)], xdp: None });
    }
}
