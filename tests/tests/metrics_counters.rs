//! `/metrics` after a known exchange: per-worker counters (datagrams in and
//! out, requests and responses forwarded, replies by code, drops by reason)
//! and per-backend counters (requests sent, responses relayed, probe state
//! and RTT) have exactly the expected values.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::{SipLb, FAST_HEALTH};
use sip_lb_tests::sink::{Backend, Sink};

const CALLS: usize = 40;

#[test]
fn metrics_count_a_known_exchange() -> Result<()> {
    let backends = [Backend::start(true)?, Backend::start(true)?];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let lb = SipLb::pool("metrics-counters", &addrs, Some(FAST_HEALTH))?;
    let (addr, control) = (lb.addr, lb.control);
    let client = Sink::loopback()?;

    for i in 0..CALLS {
        client.send_to(client.request("MESSAGE", &format!("metrics-{i}"), 1).bytes(), addr)?;
    }
    client.send_to(client.request("MESSAGE", "metrics-mf0", 1).max_forwards(0).bytes(), addr)?;
    client.send_to("\r\n\r\n", addr)?;
    // Every datagram read and answered or dropped, and the answers (CALLS + 1) back.
    lb.wait_rx((CALLS + 2 + CALLS) as u64, Duration::from_secs(3))?;
    client.wait_count(CALLS as u64 + 1, Duration::from_secs(3))?;
    let got: Vec<String> = client.datagrams().iter().map(|d| d.text()).collect();
    let ok = got.iter().filter(|m| m.starts_with("SIP/2.0 200")).count();
    let too_many_hops = got.iter().filter(|m| m.starts_with("SIP/2.0 483")).count();
    ensure!(ok == CALLS && too_many_hops == 1, "client got {ok} 200s and {too_many_hops} 483s: {got:?}");
    let per_backend: Vec<usize> = backends.iter().map(Backend::count).collect();
    ensure!(per_backend.iter().sum::<usize>() == CALLS && per_backend.iter().all(|&n| n > 0), "{per_backend:?}");

    // Workers publish counters per batch: wait until the last batch shows.
    let want_tx = (2 * CALLS + 1) as f64;
    let m = control.wait_metrics(Duration::from_secs(3), "tx counters", |m| {
        m.sum("sip_lb_worker_tx_datagrams_total", &[]) == Some(want_tx)
    })?;
    let sum = |name: &str, labels: &[(&str, &str)]| {
        m.sum(name, labels).with_context(|| format!("{name}{labels:?} missing:\n{}", m.text()))
    };
    let n = CALLS as f64;
    ensure!(sum("sip_lb_worker_rx_datagrams_total", &[])? == 2.0 * n + 2.0);
    ensure!(sum("sip_lb_worker_requests_forwarded_total", &[])? == n);
    ensure!(sum("sip_lb_worker_responses_forwarded_total", &[])? == n);
    ensure!(sum("sip_lb_worker_replies_total", &[("code", "483")])? == 1.0);
    ensure!(sum("sip_lb_worker_replies_total", &[])? == 1.0);
    ensure!(sum("sip_lb_worker_drops_total", &[("reason", "keep_alive")])? == 1.0);
    ensure!(sum("sip_lb_worker_drops_total", &[])? == 1.0);
    for w in ["0", "1"] {
        sum("sip_lb_worker_rx_datagrams_total", &[("worker", w)])?;
    }
    ensure!(sum("sip_lb_config_generation", &[])? == 1.0);
    for (be, count) in backends.iter().zip(&per_backend) {
        let a = be.addr.to_string();
        let l = [("backend", a.as_str())];
        ensure!(sum("sip_lb_backend_requests_total", &l)? == *count as f64, "requests of {a}:\n{}", m.text());
        ensure!(sum("sip_lb_backend_responses_total", &l)? == *count as f64, "responses of {a}:\n{}", m.text());
        ensure!(sum("sip_lb_backend_up", &l)? == 1.0);
        ensure!(sum("sip_lb_backend_state", &[("backend", a.as_str()), ("state", "up")])? == 1.0);
        ensure!(sum("sip_lb_backend_weight", &[("backend", a.as_str()), ("pool", "farm")])? == 1.0);
        let rtt = sum("sip_lb_backend_probe_rtt_seconds", &l)?;
        ensure!(rtt > 0.0 && rtt < 0.15, "probe RTT {rtt}");
        ensure!(sum("sip_lb_backend_probes_total", &l)? >= 1.0);
    }
    ensure!(m.text().contains("# TYPE sip_lb_backend_requests counter"), "{}", m.text());

    // The JSON view agrees, and the API refuses unknown paths.
    let listed = control.backends()?;
    for (be, count) in backends.iter().zip(&per_backend) {
        let b = listed.iter().find(|b| b.addr == be.addr).with_context(|| format!("{} not in {listed:?}", be.addr))?;
        ensure!(b.state == "up" && b.healthy && !b.drained, "{b:?}");
        ensure!(b.requests == *count as u64 && b.responses == *count as u64, "{b:?}");
        ensure!(b.pools == [("farm".to_owned(), 1)], "{b:?}");
    }
    ensure!(control.get("/nope")?.0 == 404);
    ensure!(control.get("/reload")?.0 == 405);

    // `sip-lb top` renders against the running instance.
    let out = lb.cli(&["top", "-n", "1"])?;
    let screen = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && screen.contains("WORKER") && screen.contains(&backends[1].addr.to_string()),
        "{screen}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
