//! The accounting invariant (issue 14): every datagram an XDP program or a
//! worker receives is forwarded, replied to, dropped (by reason) or passed
//! on, and counted as exactly one of these. `unaccounted` is what is left;
//! it stays 0 at rest (while a batch or a program run is in flight it may
//! briefly be its size: received is counted first).

use serde::{Deserialize, Serialize};

use crate::dataplane::afxdp::stats::AfxdpSnapshot;
use crate::xdp::ProgramCounters;

/// The XDP program on the interface (the CPU-map steering one or the AF_XDP
/// redirect one), summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpAccount {
    /// Frames the program ran on.
    pub received: u64,
    /// Steered to a worker's CPU (or kept on this one) / redirected into an
    /// AF_XDP socket.
    pub forwarded: u64,
    /// Passed to the kernel unsteered (any reason, or below the threshold).
    pub passed: u64,
    /// Dropped by the shield (blocked, banned, over the rate).
    pub dropped: u64,
    pub unaccounted: i64,
}

impl XdpAccount {
    fn new(received: u64, forwarded: u64, passed: u64, dropped: u64) -> XdpAccount {
        let unaccounted = received as i64 - (forwarded + passed + dropped) as i64;
        XdpAccount { received, forwarded, passed, dropped, unaccounted }
    }

    /// The CPU-map steering program (`sip_lb`).
    pub fn steering(p: &ProgramCounters) -> XdpAccount {
        let t = &p.total;
        let passed = t.passed.iter().sum::<u64>() + t.below_threshold;
        XdpAccount::new(t.packets, p.steered_total(), passed, t.shield_blocked + t.shield_rate_limited)
    }

    /// The AF_XDP redirect program (`sip_lb_xsk`).
    pub fn afxdp(a: &AfxdpSnapshot) -> XdpAccount {
        let passed = a.passed.iter().map(|(_, n)| n).sum();
        XdpAccount::new(a.seen, a.redirected, passed, a.shield_blocked + a.shield_rate_limited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_afxdp_program_balances() {
        let a = AfxdpSnapshot {
            seen: 100,
            redirected: 60,
            passed: vec![("not_sip".into(), 10), ("no_call_id".into(), 5)],
            shield_blocked: 20,
            shield_rate_limited: 4,
            ..AfxdpSnapshot::default()
        };
        assert_eq!(XdpAccount::afxdp(&a), XdpAccount::new(100, 60, 15, 24));
        assert_eq!(XdpAccount::afxdp(&a).unaccounted, 1);
    }
}
