//! Datagrams received but neither forwarded, replied to, dropped nor passed
//! on: a leak indicator, shown as UNACCT. The figures are the control
//! plane's own (`control::account`, in `/stats`), so `top`, `/metrics` and
//! the tests read one definition. Small transient values are expected: the
//! counters of one snapshot are not read atomically together.
use crate::control::snapshot::Snapshot;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unaccounted {
    /// (worker, its `unaccounted`).
    pub workers: Vec<(usize, i64)>,
    /// The XDP program on the interface (steering or AF_XDP redirect).
    pub xdp: Option<i64>,
}

/// Every figure of a `/stats` snapshot.
pub fn unaccounted(s: &Snapshot) -> Unaccounted {
    Unaccounted {
        workers: s.workers.iter().map(|w| (w.worker, w.unaccounted)).collect(),
        xdp: s.xdp_account.as_ref().map(|a| a.unaccounted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::account::XdpAccount;
    use crate::control::snapshot::WorkerSnapshot;

    #[test]
    fn the_snapshots_figures_are_shown() {
        let w = |worker, unaccounted| WorkerSnapshot { worker, unaccounted, ..Default::default() };
        let xdp = XdpAccount { received: 10, forwarded: 7, passed: 1, dropped: 1, unaccounted: 1 };
        let s = Snapshot { workers: vec![w(0, 0), w(3, 7)], xdp_account: Some(xdp), ..Default::default() };
        assert_eq!(unaccounted(&s), Unaccounted { workers: vec![(0, 0), (3, 7)], xdp: Some(1) });
        let none = Snapshot { workers: vec![w(0, 2)], ..Default::default() };
        assert_eq!(unaccounted(&none), Unaccounted { workers: vec![(0, 2)], xdp: None });
    }
}
