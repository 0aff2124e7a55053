//! Faults on the backend side ("Hostile input and faults"):
//! - a backend that vanishes under load (its socket closed, so the kernel
//!   answers sip-lb's sends with ICMP port unreachable): with health probing
//!   the dead backend's Call-IDs move to the others within
//!   failures x interval + interval, everyone else's never move; without
//!   probing exactly the dead backend's Call-IDs are lost and every other one
//!   still arrives where it went before;
//! - a backend address with nothing bound at all: forwarding to the other
//!   backend is unaffected (exactly the Call-IDs the rendezvous hash gives it
//!   arrive, counted one by one) and the workers do not stall.
//!
//! In every case sip-lb stays up, does not panic, and its shutdown counters
//! show no drops, no stateless replies, every request forwarded.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::{SipLb, WorkerTotals, FAST_HEALTH};
use sip_lb_tests::ports::free_udp_addr;
use sip_lb_tests::rounds::{round, rounds, CALLS};
use sip_lb_tests::sink::{owners, Backend, Sink};

/// Scheduling slack on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(400);
/// The Call-IDs of this test's rounds.
const TAG: &str = "fault";

/// Stops sip-lb (no panic, exit 0) and sums its two workers' shutdown counters.
fn stop_and_count(lb: &mut SipLb) -> Result<WorkerTotals> {
    let s = lb.stop()?;
    ensure!(s.workers == 2, "expected 2 worker summary lines:\n{}", lb.child.stderr());
    Ok(s.total)
}

/// The summed `sip_lb_worker_tx_errors_total`.
fn tx_errors(lb: &SipLb) -> Result<f64> {
    lb.control.metrics()?.sum("sip_lb_worker_tx_errors_total", &[]).context("no tx_errors metric")
}

/// What [`vanish`] leaves: the backends, sip-lb still running, the baseline owners, the
/// rounds sent after the kill, and when it was killed.
type Vanished = (Vec<Backend>, SipLb, HashMap<String, usize>, Vec<(u64, Instant)>, Instant);

/// Three backends, one (index 1) vanishes under load.
fn vanish(label: &str, health: Option<&str>) -> Result<Vanished> {
    let mut backends = vec![Backend::start(false)?, Backend::start(false)?, Backend::start(false)?];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let lb = SipLb::pool(label, &addrs, health)?;
    if health.is_some() {
        for b in &backends {
            lb.wait_state(b.addr, "up", Duration::from_secs(2))?;
        }
    }
    let client = Sink::loopback()?;
    round(&client, &lb, TAG, 1)?;
    lb.wait_delivered(CALLS as u64, &backends.iter().collect::<Vec<_>>(), &[])?;
    let base = owners(&backends.iter().collect::<Vec<_>>(), 1);
    ensure!(base.len() == CALLS, "only {} of {CALLS} baseline requests arrived", base.len());
    for i in 0..3 {
        ensure!(base.values().any(|&o| o == i), "backend {i} got no Call-ID: {base:?}");
    }
    backends[1].kill();
    let killed = Instant::now();
    let sent = rounds(&client, &lb, &backends, TAG, (2, Duration::from_millis(1500)), 1)?;
    Ok((backends, lb, base, sent, killed))
}

#[test]
fn vanished_backend_with_probing_calls_move_within_the_bound() -> Result<()> {
    let (interval, failures) = (Duration::from_millis(200), 2u32);
    let (backends, mut lb, base, sent, killed) = vanish("fault-vanish-health", Some(FAST_HEALTH))?;
    let dead = 1usize;
    let refs: Vec<&Backend> = backends.iter().collect();
    let dead_calls: Vec<&String> = base.iter().filter(|(_, &o)| o == dead).map(|(c, _)| c).collect();
    let mut moved_at = None;
    let mut lost = 0usize;
    for &(cseq, at) in &sent {
        let own = owners(&refs, cseq);
        for (call, &o) in base.iter().filter(|(_, &o)| o != dead) {
            ensure!(
                own.get(call) == Some(&o),
                "round {cseq}: live call {call} went to {:?}, not backend {o}",
                own.get(call)
            );
        }
        lost += dead_calls.iter().filter(|c| !own.contains_key(**c)).count();
        let all_moved = dead_calls.iter().all(|c| matches!(own.get(*c), Some(&o) if o != dead));
        if moved_at.is_none() && all_moved {
            moved_at = Some(at.saturating_duration_since(killed));
        }
        if moved_at.is_some() {
            ensure!(all_moved, "round {cseq}: the dead backend's calls did not stay moved");
        }
    }
    let bound = interval * (failures + 1) + SLACK;
    let moved_at = moved_at.with_context(|| format!("calls never moved; stderr:\n{}", lb.child.stderr_tail(20)))?;
    ensure!(moved_at <= bound, "calls moved after {moved_at:?}, bound {bound:?}");
    ensure!(lb.state_of(backends[dead].addr)? == "down");
    let errors = tx_errors(&lb)?;
    let t = stop_and_count(&mut lb)?;
    let total_sent = (CALLS * (sent.len() + 1)) as u64;
    eprintln!(
        "{} dead calls moved {moved_at:?} after the kill ({} rounds, {lost} requests lost before); tx errors {errors}; {t:?}",
        dead_calls.len(),
        sent.len()
    );
    ensure!(t.requests == total_sent && t.rx == total_sent, "sent {total_sent}: {t:?}");
    ensure!(t.drops == 0 && t.replies == 0, "{t:?}");
    ensure!(t.tx + errors as u64 == total_sent, "tx {} + errors {errors} != {total_sent}", t.tx);
    Ok(())
}

#[test]
fn vanished_backend_without_probing_loses_exactly_its_calls() -> Result<()> {
    let (backends, mut lb, base, sent, _) = vanish("fault-vanish-noprobe", None)?;
    let dead = 1usize;
    let refs: Vec<&Backend> = backends.iter().collect();
    let live: HashMap<&String, usize> = base.iter().filter(|(_, &o)| o != dead).map(|(c, &o)| (c, o)).collect();
    let dead_count = CALLS - live.len();
    for &(cseq, _) in &sent {
        let own = owners(&refs, cseq);
        for (call, &o) in &live {
            ensure!(
                own.get(*call) == Some(&o),
                "round {cseq}: live call {call} went to {:?}, not backend {o}",
                own.get(*call)
            );
        }
        let extra: Vec<_> = own.keys().filter(|c| !live.contains_key(c)).collect();
        ensure!(extra.is_empty(), "round {cseq}: the dead backend's calls arrived elsewhere: {extra:?}");
    }
    // The dead backend's socket got nothing after the kill.
    ensure!(backends[dead].seen().iter().all(|s| s.cseq == 1));
    let errors = tx_errors(&lb)?;
    let t = stop_and_count(&mut lb)?;
    let total_sent = (CALLS * (sent.len() + 1)) as u64;
    eprintln!(
        "{} rounds: {} live calls delivered every round, {dead_count} lost every round; tx errors {errors}; {t:?}",
        sent.len(),
        live.len()
    );
    ensure!(t.requests == total_sent && t.rx == total_sent, "sent {total_sent}: {t:?}");
    ensure!(t.drops == 0 && t.replies == 0, "{t:?}");
    ensure!(t.tx + errors as u64 == total_sent, "tx {} + errors {errors} != {total_sent}", t.tx);
    Ok(())
}

#[test]
fn unbound_backend_port_does_not_disturb_the_others() -> Result<()> {
    const N: usize = 3000;
    let live = Backend::start(false)?;
    // A free port with nothing bound: every send to it draws an ICMP port
    // unreachable from the kernel.
    let nowhere = free_udp_addr()?;
    let mut lb = SipLb::pool("fault-unbound", &[live.addr, nowhere], None)?;
    let (addr, text) = (lb.addr, std::fs::read_to_string(lb.config_path())?);

    // Which Call-IDs the rendezvous hash gives the live backend.
    let cfg = sip_lb::config::Config::from_toml_str(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let router = sip_lb_proto::balance::Router::build_all(&cfg.pools);
    let ids: Vec<String> = (0..N).map(|i| format!("unbound-{i}@fault")).collect();
    let want: HashSet<&String> = ids
        .iter()
        .filter(|id| router.choose(b"MESSAGE", sip_lb_common::call_id_hash(id.as_bytes())) == Some(live.addr))
        .collect();
    ensure!(want.len() > N / 4 && want.len() < N * 3 / 4, "hash split {} of {N}", want.len());

    let client = Sink::loopback()?;
    for (i, id) in ids.iter().enumerate() {
        client.send_to(client.request("MESSAGE", id, 1).bytes(), addr)?;
        if i % 10 == 9 {
            // Pacing, so the loopback does not drop the stream (scenario, not synchronisation).
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    lb.wait_delivered(N as u64, &[&live], &[])?;
    let seen = live.seen();
    let got: HashSet<&String> = seen.iter().map(|s| &s.call_id).collect();
    ensure!(
        seen.len() == want.len() && got == want,
        "live backend got {} ({} distinct), want exactly {}",
        seen.len(),
        got.len(),
        want.len()
    );

    // Not stalled: a second stream, after all those ICMP errors, arrives too.
    for id in want.iter().take(200) {
        client.send_to(client.request("MESSAGE", id, 2).bytes(), addr)?;
    }
    lb.wait_delivered((N + 200.min(want.len())) as u64, &[&live], &[])?;
    let second = live.seen().iter().filter(|s| s.cseq == 2).count();
    ensure!(second == 200.min(want.len()), "{second} of the second stream arrived");
    let errors = tx_errors(&lb)?;
    let t = stop_and_count(&mut lb)?;
    let total = (N + 200.min(want.len())) as u64;
    eprintln!("{} of {N} Call-IDs hashed to the live backend, all arrived once; {} to the unbound port; tx errors {errors}; {t:?}", want.len(), N - want.len());
    ensure!(t.requests == total && t.rx == total, "sent {total}: {t:?}");
    ensure!(t.drops == 0 && t.replies == 0, "{t:?}");
    ensure!(t.tx + errors as u64 == total, "tx {} + errors {errors} != {total}", t.tx);
    Ok(())
}
