//! Paced load over a fixed set of Call-IDs: every round sends each of
//! [`CALLS`] Call-IDs once, with the round number as CSeq, so the test can
//! tell which backend owned which call before and after a fault.
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::lb::SipLb;
use crate::sink::{Backend, Sink};

/// Call-IDs per round.
pub const CALLS: usize = 60;
/// Time between rounds.
pub const ROUND: Duration = Duration::from_millis(50);

/// The Call-ID of call `i` in the rounds tagged `tag`.
pub fn call_id(i: usize, tag: &str) -> String {
    format!("call-{i}@{tag}")
}

/// Sends every Call-ID once with CSeq `cseq`; returns when it was sent.
pub fn round(client: &Sink, lb: &SipLb, tag: &str, cseq: u64) -> Result<Instant> {
    let at = Instant::now();
    for i in 0..CALLS {
        client.send_to(client.request("INVITE", &call_id(i, tag), cseq).bytes(), lb.addr)?;
    }
    Ok(at)
}

/// Rounds `first..` every [`ROUND`] for `span`, then waits until they are
/// delivered (`dead`: the backend whose count sip-lb's cannot match, e.g.
/// one that was killed); returns (cseq, sent at) of each round.
pub fn rounds(
    client: &Sink,
    lb: &SipLb,
    backends: &[Backend],
    tag: &str,
    (first, span): (u64, Duration),
    dead: usize,
) -> Result<Vec<(u64, Instant)>> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut cseq = first;
    while t0.elapsed() < span {
        out.push((cseq, round(client, lb, tag, cseq)?));
        cseq += 1;
        // Pacing: the load the fault happens under (the scenario, not synchronisation).
        std::thread::sleep(ROUND);
    }
    // Rounds 1..cseq have been sent, CALLS requests each.
    lb.wait_delivered(CALLS as u64 * (cseq - 1), &backends.iter().collect::<Vec<_>>(), &[dead])?;
    Ok(out)
}
