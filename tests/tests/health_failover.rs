//! Health probing end to end: three UDP backends answering OPTIONS, one
//! killed. Calls hashed to live backends never move or fail; the dead one's
//! Call-IDs move to the others within failures x interval + interval, and
//! come back once it answers again (successes x interval + interval).
#[path = "health_harness.rs"]
mod harness;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use harness::*;

const CALLS: usize = 60;
const ROUND: Duration = Duration::from_millis(50);
/// Scheduling slack on a loaded 2-core CI machine.
const SLACK: Duration = Duration::from_millis(400);

/// Sends every Call-ID once with CSeq `cseq`; returns when it was sent.
fn round(client: &Client, lb: &Lb, cseq: u64) -> Result<Instant> {
    let at = Instant::now();
    for i in 0..CALLS {
        client.send(lb.addr, &client.request("INVITE", &format!("call-{i}@failover"), cseq))?;
    }
    Ok(at)
}

/// Sends rounds `first..` every ROUND for `span`; returns (cseq, sent at).
fn rounds(client: &Client, lb: &Lb, backends: &[Backend], first: u64, span: Duration) -> Result<Vec<(u64, Instant)>> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut cseq = first;
    while t0.elapsed() < span {
        out.push((cseq, round(client, lb, cseq)?));
        cseq += 1;
        std::thread::sleep(ROUND);
    }
    settle(&backends.iter().collect::<Vec<_>>(), Duration::from_millis(300));
    Ok(out)
}

#[test]
fn dead_backend_calls_move_and_come_back() -> Result<()> {
    let mut backends = vec![Backend::start(false)?, Backend::start(false)?, Backend::start(false)?];
    let (addr, control) = (free_udp_addr()?, free_tcp_addr()?);
    let weights: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
    let lb = Lb::start("health-failover", addr, control, &config_toml(addr, control, &weights, FAST_HEALTH))?;
    let (interval, failures, successes) = (Duration::from_millis(200), 2u32, 2u32);
    let client = Client::new()?;
    for b in &backends {
        lb.wait_state(b.addr, "up", Duration::from_secs(2))?;
    }

    // Baseline: where each Call-ID goes with all three up.
    round(&client, &lb, 1)?;
    std::thread::sleep(Duration::from_millis(300));
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
    let sent = rounds(&client, &lb, &backends, 2, Duration::from_millis(1500))?;
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
    let sent = rounds(&client, &lb, &backends, last + 1, Duration::from_millis(1500))?;
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
    let m = lb.metrics()?;
    ensure!(metric_sum(&m, "sip_lb_backend_up", &[("backend", &backends[dead].addr.to_string())]) == Some(1.0), "{m}");
    ensure!(
        metric_sum(&m, "sip_lb_backend_probe_failures_total", &[("backend", &backends[dead].addr.to_string())])
            .unwrap_or(0.0)
            >= f64::from(failures)
    );
    Ok(())
}
