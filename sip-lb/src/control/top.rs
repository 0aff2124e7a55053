//! `sip-lb top`: a live view of a running instance, redrawn every second
//! with plain ANSI escapes: per-worker (per-core) throughput and drops, then
//! per-backend load and state. Rates are differences of the `/stats`
//! counters between two polls.
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::client;
use super::snapshot::Snapshot;

/// Renders one screen from two snapshots `dt` apart (pure, for tests).
pub fn render(addr: SocketAddr, prev: &Snapshot, now: &Snapshot, dt: Duration) -> String {
    let secs = dt.as_secs_f64().max(1e-3);
    let rate = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / secs;
    let mut o = String::new();
    let _ = writeln!(o, "sip-lb top  {addr}  config generation {}  (Ctrl-C to quit)\n", now.generation);
    let _ = writeln!(
        o,
        "{:>6} {:>4} {:>11} {:>11} {:>10} {:>10} {:>9} {:>9}",
        "WORKER", "CPU", "IN msg/s", "OUT msg/s", "REQ/s", "RESP/s", "REPLY/s", "DROP/s"
    );
    let mut tot = [0f64; 6];
    for w in &now.workers {
        let p = prev.workers.iter().find(|x| x.worker == w.worker).cloned().unwrap_or_default();
        let replies = |s: &super::snapshot::WorkerSnapshot| s.replies.iter().map(|r| r.1).sum::<u64>();
        let v = [
            rate(p.rx_datagrams, w.rx_datagrams),
            rate(p.tx_datagrams, w.tx_datagrams),
            rate(p.requests_forwarded, w.requests_forwarded),
            rate(p.responses_forwarded, w.responses_forwarded),
            rate(replies(&p), replies(w)),
            rate(p.drops_total(), w.drops_total()),
        ];
        for (t, x) in tot.iter_mut().zip(v) {
            *t += x;
        }
        let cpu = w.cpu.map_or_else(|| "-".into(), |c| c.to_string());
        let _ = writeln!(
            o,
            "{:>6} {:>4} {:>11.0} {:>11.0} {:>10.0} {:>10.0} {:>9.0} {:>9.0}",
            w.worker, cpu, v[0], v[1], v[2], v[3], v[4], v[5]
        );
    }
    let _ = writeln!(
        o,
        "{:>6} {:>4} {:>11.0} {:>11.0} {:>10.0} {:>10.0} {:>9.0} {:>9.0}\n",
        "all", "", tot[0], tot[1], tot[2], tot[3], tot[4], tot[5]
    );
    let _ = writeln!(
        o,
        "{:<28} {:<9} {:>10} {:>10} {:>7} {:>14} {:>8}",
        "BACKEND", "STATE", "REQ/s", "RESP/s", "SHARE", "REQUESTS", "RTT_MS"
    );
    let all_req: f64 = now
        .backends
        .iter()
        .map(|b| rate(prev.backends.iter().find(|x| x.addr == b.addr).map_or(b.requests, |x| x.requests), b.requests))
        .sum();
    for b in &now.backends {
        let p = prev.backends.iter().find(|x| x.addr == b.addr);
        let rq = rate(p.map_or(b.requests, |x| x.requests), b.requests);
        let rs = rate(p.map_or(b.responses, |x| x.responses), b.responses);
        let share = if all_req > 0.0 { 100.0 * rq / all_req } else { 0.0 };
        let rtt = b.probe_rtt_ms.map_or_else(|| "-".into(), |r| format!("{r:.2}"));
        let _ = writeln!(
            o,
            "{:<28} {:<9} {:>10.0} {:>10.0} {:>6.1}% {:>14} {:>8}",
            b.addr.to_string(),
            b.state,
            rq,
            rs,
            share,
            b.requests,
            rtt
        );
    }
    if let Some(a) = &now.afxdp {
        afxdp(&mut o, prev.afxdp.as_ref(), a, &rate);
    }
    o
}

/// The AF_XDP section: per queue and per AF_XDP worker.
fn afxdp(
    o: &mut String,
    prev: Option<&super::snapshot::AfxdpSnapshot>,
    now: &super::snapshot::AfxdpSnapshot,
    rate: &dyn Fn(u64, u64) -> f64,
) {
    let _ = writeln!(
        o,
        "\n{:>6} {:>11} {:>11} {:>11} {:>12} {:>10} {:>8} {:>8}",
        "QUEUE", "RX fr/s", "TX fr/s", "HANDOFF/s", "HANDOFF_FULL", "FILL_EMPTY", "TX_FULL", "CQ_LAG"
    );
    for q in &now.queues {
        let p = prev.and_then(|p| p.queues.iter().find(|x| x.queue == q.queue)).cloned().unwrap_or_default();
        let _ = writeln!(
            o,
            "{:>6} {:>11.0} {:>11.0} {:>11.0} {:>12} {:>10} {:>8} {:>8}",
            q.queue,
            rate(p.rx, q.rx),
            rate(p.tx, q.tx),
            rate(p.handed_off, q.handed_off),
            q.handoff_full,
            q.fill_ring_empty,
            q.tx_ring_full,
            q.completion_lag
        );
    }
    let _ = writeln!(o, "{:>7} {:>11} {:>11} {:>14}", "XWORKER", "RX fr/s", "TX fr/s", "VIA SOCKET/s");
    for w in &now.workers {
        let p = prev.and_then(|p| p.workers.iter().find(|x| x.worker == w.worker)).cloned().unwrap_or_default();
        let sock = |x: &super::snapshot::AfxdpWorkerSnapshot| x.tx_socket.iter().map(|r| r.1).sum::<u64>();
        let _ = writeln!(
            o,
            "{:>7} {:>11.0} {:>11.0} {:>14.0}",
            w.worker,
            rate(p.rx, w.rx),
            rate(p.tx, w.tx),
            rate(sock(&p), sock(w))
        );
    }
    let passed: u64 = now.passed.iter().map(|r| r.1).sum();
    let _ = writeln!(
        o,
        "AF_XDP program: {} frames, {} redirected, {passed} passed to the kernel",
        now.seen, now.redirected
    );
}

/// Polls `addr` every second and redraws until interrupted. `iterations`
/// bounds the number of screens (tests, scripts); `None` runs forever.
pub async fn run(addr: SocketAddr, iterations: Option<u64>) -> Result<()> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut prev = client::stats(addr).await?;
    let mut at = Instant::now();
    let mut n = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let now = client::stats(addr).await?;
        let t = Instant::now();
        let screen = render(addr, &prev, &now, t - at);
        if tty {
            // Home, clear screen, draw.
            print!("\x1b[H\x1b[2J{screen}");
        } else {
            println!("{screen}");
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        prev = now;
        at = t;
        n += 1;
        if iterations.is_some_and(|max| n >= max) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::snapshot::{BackendSnapshot, WorkerSnapshot};

    #[test]
    fn rates_are_differences_per_second() {
        let w = |rx, tx| WorkerSnapshot {
            worker: 0,
            cpu: Some(1),
            rx_datagrams: rx,
            tx_datagrams: tx,
            ..Default::default()
        };
        let b = |req| BackendSnapshot {
            addr: "10.0.0.1:5060".parse().unwrap(),
            pools: vec![("p".into(), 1)],
            state: "up".into(),
            healthy: true,
            drained: false,
            requests: req,
            responses: 0,
            probes: 0,
            probe_failures: 0,
            last_probe_code: None,
            probe_rtt_ms: Some(0.5),
        };
        let prev = Snapshot { generation: 1, workers: vec![w(100, 50)], backends: vec![b(10)], ..Default::default() };
        let now = Snapshot { generation: 2, workers: vec![w(300, 150)], backends: vec![b(110)], ..Default::default() };
        let s = render("127.0.0.1:5070".parse().unwrap(), &prev, &now, Duration::from_secs(2));
        let worker_line = s.lines().find(|l| l.trim_start().starts_with("0 ")).unwrap();
        let cols: Vec<&str> = worker_line.split_whitespace().collect();
        assert_eq!(&cols[..4], ["0", "1", "100", "50"], "{s}");
        let backend_line = s.lines().find(|l| l.starts_with("10.0.0.1:5060")).unwrap();
        assert!(backend_line.contains(" up "), "{backend_line}");
        assert!(backend_line.contains("50"), "{backend_line}");
        assert!(backend_line.contains("100.0%"), "{backend_line}");
        assert!(s.contains("config generation 2"));
        assert!(!s.contains("QUEUE"), "no AF_XDP section without AF_XDP: {s}");
    }

    /// With AF_XDP, per-queue and per-worker frame rates.
    #[test]
    fn afxdp_section_shows_queue_and_worker_rates() {
        use crate::control::snapshot::{AfxdpQueueSnapshot, AfxdpSnapshot, AfxdpWorkerSnapshot};
        let a = |rx: u64, sock: u64| AfxdpSnapshot {
            queues: vec![AfxdpQueueSnapshot { queue: 0, rx, tx: rx / 2, handed_off: rx, ..Default::default() }],
            workers: vec![AfxdpWorkerSnapshot {
                worker: 1,
                rx,
                tx: rx / 2,
                tx_socket: vec![("unresolved".into(), sock)],
                not_ours: 0,
            }],
            seen: rx,
            redirected: rx,
            passed: vec![],
            ..Default::default()
        };
        let prev = Snapshot { afxdp: Some(a(100, 0)), ..Default::default() };
        let now = Snapshot { afxdp: Some(a(300, 20)), ..Default::default() };
        let s = render("127.0.0.1:5070".parse().unwrap(), &prev, &now, Duration::from_secs(2));
        let q = s.lines().skip_while(|l| !l.contains("QUEUE")).nth(1).unwrap();
        assert_eq!(q.split_whitespace().take(4).collect::<Vec<_>>(), ["0", "100", "50", "100"], "{s}");
        let w = s.lines().skip_while(|l| !l.contains("XWORKER")).nth(1).unwrap();
        assert_eq!(w.split_whitespace().collect::<Vec<_>>(), ["1", "100", "50", "10"], "{s}");
        assert!(s.contains("AF_XDP program: 300 frames, 300 redirected"), "{s}");
    }
}
