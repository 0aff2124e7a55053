//! The text table of `sip-lb top --once` (and of `top` when stdout is not
//! a terminal): per-worker (per-core) throughput, drops and unaccounted
//! datagrams, per-backend load and state, drops by reason, the AF_XDP
//! counters. Scripts and tests read it.
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::rates::Rates;
use super::unaccounted::unaccounted;
use crate::control::snapshot::Snapshot;

/// Renders one screen from two snapshots `dt` apart (pure, for tests).
pub fn render(addr: SocketAddr, prev: &Snapshot, now: &Snapshot, dt: Duration) -> String {
    let secs = dt.as_secs_f64().max(1e-3);
    let rate = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / secs;
    let r = Rates::between(prev, now, dt);
    let lost = unaccounted(now);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "sip-lb top  {addr}  config generation {}  shield bans {}  (Ctrl-C to quit)\n",
        now.generation, now.shield_bans
    );
    let _ = writeln!(
        o,
        "{:>6} {:>4} {:>11} {:>11} {:>10} {:>10} {:>9} {:>9} {:>8}",
        "WORKER", "CPU", "IN msg/s", "OUT msg/s", "REQ/s", "RESP/s", "REPLY/s", "DROP/s", "UNACCT"
    );
    let mut tot = [0f64; 6];
    for w in &r.workers {
        let v = [w.rx, w.tx, w.requests, w.responses, w.replies, w.drops];
        for (t, x) in tot.iter_mut().zip(v) {
            *t += x;
        }
        let cpu = w.cpu.map_or_else(|| "-".into(), |c| c.to_string());
        let u = lost.workers.iter().find(|x| x.0 == w.worker).map_or(0, |x| x.1);
        let _ = writeln!(
            o,
            "{:>6} {:>4} {:>11.0} {:>11.0} {:>10.0} {:>10.0} {:>9.0} {:>9.0} {:>8}",
            w.worker, cpu, v[0], v[1], v[2], v[3], v[4], v[5], u
        );
    }
    let _ = writeln!(
        o,
        "{:>6} {:>4} {:>11.0} {:>11.0} {:>10.0} {:>10.0} {:>9.0} {:>9.0} {:>8}\n",
        "all",
        "",
        tot[0],
        tot[1],
        tot[2],
        tot[3],
        tot[4],
        tot[5],
        lost.workers.iter().map(|x| x.1).sum::<i64>()
    );
    let _ = writeln!(
        o,
        "{:<28} {:<9} {:>10} {:>10} {:>7} {:>14} {:>8}",
        "BACKEND", "STATE", "REQ/s", "RESP/s", "SHARE", "REQUESTS", "RTT_MS"
    );
    for (b, br) in now.backends.iter().zip(&r.backends) {
        let rtt = b.probe_rtt_ms.map_or_else(|| "-".into(), |r| format!("{r:.2}"));
        let _ = writeln!(
            o,
            "{:<28} {:<9} {:>10.0} {:>10.0} {:>6.1}% {:>14} {:>8}",
            b.addr.to_string(),
            b.state,
            br.requests,
            br.responses,
            br.share,
            b.requests,
            rtt
        );
    }
    let reasons = |list: &[super::rates::ReasonRate]| -> String {
        let shown: Vec<String> =
            list.iter().filter(|x| x.2 > 0).map(|(n, r, t)| format!("{n}={t} ({r:.0}/s)")).collect();
        if shown.is_empty() {
            "none".into()
        } else {
            shown.join(" ")
        }
    };
    let _ = writeln!(o, "\nDROPS   {}", reasons(&r.drops));
    let _ = writeln!(o, "SHIELD  {}", reasons(&r.shield));
    if let Some(a) = &now.afxdp {
        afxdp(&mut o, prev.afxdp.as_ref(), a, &rate);
        let _ = writeln!(o, "AF_XDP program unaccounted: {}", lost.xdp.unwrap_or(0));
    } else if let Some(n) = lost.xdp {
        let _ = writeln!(o, "XDP program unaccounted: {n}");
    }
    o
}

/// The AF_XDP section: per queue and per AF_XDP worker.
fn afxdp(
    o: &mut String,
    prev: Option<&crate::control::snapshot::AfxdpSnapshot>,
    now: &crate::control::snapshot::AfxdpSnapshot,
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
        let sock = |x: &crate::control::snapshot::AfxdpWorkerSnapshot| x.tx_socket.iter().map(|r| r.1).sum::<u64>();
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
