//! Health probing end to end: three UDP backends answering OPTIONS, one
//! killed. Calls hashed to live backends never move or fail; the dead one's
//! Call-IDs move to the others within failures x interval + interval, and
//! come back once it answers again (successes x interval + interval).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use sip_lb_tests::lb::{SipLb, FAST_HEALTH};
use sip_lb_tests::rounds::{round, rounds, CALLS};
use sip_lb_tests::sink::{owners, wait_cseq, Backend, Sink};

/// Scheduling slack on a loaded 2-core CI machine.
const SLACK: Duration = Duration::from_millis(400);
/// The Call-IDs of this test's rounds.
const TAG: &str = "failover";

#[test]
fn dead_backend_calls_move_and_come_back() -> Result<()> {
    let mut backends = vec![Backend::start(false)?, Backend::start(false)?, Backend::start(false)?];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let lb = SipLb::pool("health-failover", &addrs, Some(FAST_HEALTH))?;
    let (interval, failures, successes) = (Duration::from_millis(200), 2u32, 2u32);
    let client = Sink::loopback()?;
    for b in &backends {
        lb.wait_state(b.addr, "up", Duration::from_secs(2))?;
    }

    // Baseline: where each Call-ID goes with all three up.
    round(&client, &lb, TAG, 1)?;
    wait_cseq(&backends.iter().collect::<Vec<_>>(), 1, CALLS, Duration::from_secs(3))?;
    let base = owners(&backends.iter().collect::<Vec<_>>(), 1);
    ensure!(base.len() == CALLS, "only {} of {CALLS} baseline requests arrived", base.len());
    for i in 0..3 {
        ensure!(base.values().any(|&o| o == i), "backend {i} got no Call-ID: {base:?}");
    }
    let dead = 1usize;
    let dead_calls: Vec<&String> = base.iter().filter(|(_, &o)| o == dead).map(|(c, _)| c).collect();

    // Kill backend 1 under load.
    backends[dead].kill();
    let killed = Instant::now();
    let sent = rounds(&client, &lb, &backends, TAG, (2, Duration::from_millis(1500)), dead)?;
    let refs: Vec<&Backend> = backends.iter().collect();
    let mut moved_at = None;
    for &(cseq, at) in &sent {
        let own = owners(&refs, cseq);
        // No call that hashed to a live backend moves or fails.
        for (call, &o) in base.iter().filter(|(_, &o)| o != dead) {
            ensure!(
                own.get(call) == Some(&o),
                "round {cseq}: live call {call} went to {:?}, not backend {o}",
                own.get(call)
            );
        }
        let all_moved = dead_calls.iter().all(|c| matches!(own.get(*c), Some(&o) if o != dead));
        if all_moved && moved_at.is_none() {
            moved_at = Some(at.saturating_duration_since(killed));
        }
        if moved_at.is_some() {
            ensure!(all_moved, "round {cseq}: the dead backend's calls did not all stay moved");
        }
    }
    let bound = interval * (failures + 1) + SLACK;
    let moved_at = moved_at.ok_or_else(|| {
        anyhow::anyhow!("the dead backend's calls never moved; stderr:\n{}", lb.child.stderr_tail(20))
    })?;
    ensure!(moved_at <= bound, "calls moved after {moved_at:?}, bound {bound:?}");
    eprintln!("dead backend's {} calls moved {moved_at:?} after the kill", dead_calls.len());
    // Spread over the others, by hashing.
    let last = sent.last().unwrap().0;
    let own = owners(&refs, last);
    let mut spread: HashMap<usize, usize> = HashMap::new();
    for c in &dead_calls {
        *spread.entry(own[*c]).or_default() += 1;
    }
    if dead_calls.len() >= 8 {
        ensure!(spread.len() == 2, "moved calls all went to one backend: {spread:?}");
    }
    ensure!(lb.state_of(backends[dead].addr)? == "down");

    // Restart it: its calls come back, nobody else's move.
    backends[dead].restart()?;
    let restarted = Instant::now();
    let sent = rounds(&client, &lb, &backends, TAG, (last + 1, Duration::from_millis(1500)), dead)?;
    let refs: Vec<&Backend> = backends.iter().collect();
    let mut back_at = None;
    for &(cseq, at) in &sent {
        let own = owners(&refs, cseq);
        for (call, &o) in base.iter().filter(|(_, &o)| o != dead) {
            ensure!(
                own.get(call) == Some(&o),
                "round {cseq}: live call {call} went to {:?}, not backend {o}",
                own.get(call)
            );
        }
        if back_at.is_none() && dead_calls.iter().all(|c| own.get(*c) == Some(&dead)) {
            back_at = Some(at.saturating_duration_since(restarted));
        }
    }
    let bound = interval * (successes + 1) + SLACK;
    let back_at = back_at.ok_or_else(|| anyhow::anyhow!("calls never came back to the restarted backend"))?;
    ensure!(back_at <= bound, "calls came back after {back_at:?}, bound {bound:?}");
    eprintln!("calls back {back_at:?} after the restart");
    ensure!(lb.state_of(backends[dead].addr)? == "up");
    let m = lb.control.metrics()?;
    let dead_addr = backends[dead].addr.to_string();
    ensure!(m.sum("sip_lb_backend_up", &[("backend", &dead_addr)]) == Some(1.0), "{}", m.text());
    ensure!(
        m.sum("sip_lb_backend_probe_failures_total", &[("backend", &dead_addr)]).unwrap_or(0.0) >= f64::from(failures)
    );
    Ok(())
}
