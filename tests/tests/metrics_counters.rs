//! `/metrics` after a known exchange: per-worker counters (datagrams in and
//! out, requests and responses forwarded, replies by code, drops by reason)
//! and per-backend counters (requests sent, responses relayed, probe state
//! and RTT) have exactly the expected values.
#[path = "health_harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use harness::*;

const CALLS: usize = 40;

#[test]
fn metrics_count_a_known_exchange() -> Result<()> {
    let backends = [Backend::start(true)?, Backend::start(true)?];
    let (addr, control) = (free_udp_addr()?, free_tcp_addr()?);
    let weights: Vec<_> = backends.iter().map(|b| (b.addr, 1)).collect();
    let lb = Lb::start("metrics-counters", addr, control, &config_toml(addr, control, &weights, FAST_HEALTH))?;
    let client = Client::new()?;

    for i in 0..CALLS {
        client.send(addr, &client.request("MESSAGE", &format!("metrics-{i}"), 1))?;
    }
    let mf0 = client.request("MESSAGE", "metrics-mf0", 1).replace("Max-Forwards: 70", "Max-Forwards: 0");
    client.send(addr, &mf0)?;
    client.send(addr, "\r\n\r\n")?;
    let got = client.drain(Duration::from_millis(500));
    let ok = got.iter().filter(|m| m.starts_with("SIP/2.0 200")).count();
    let too_many_hops = got.iter().filter(|m| m.starts_with("SIP/2.0 483")).count();
    ensure!(ok == CALLS && too_many_hops == 1, "client got {ok} 200s and {too_many_hops} 483s: {got:?}");
    let per_backend: Vec<usize> = backends.iter().map(Backend::count).collect();
    ensure!(per_backend.iter().sum::<usize>() == CALLS && per_backend.iter().all(|&n| n > 0), "{per_backend:?}");

    // Workers publish counters per batch: wait until the last batch shows.
    let deadline = Instant::now() + Duration::from_secs(3);
    let m = loop {
        let m = lb.metrics()?;
        if metric_sum(&m, "sip_lb_worker_tx_datagrams_total", &[]) == Some((2 * CALLS + 1) as f64) {
            break m;
        }
        ensure!(Instant::now() < deadline, "tx counters never reached {}:\n{m}", 2 * CALLS + 1);
        std::thread::sleep(Duration::from_millis(50));
    };
    let sum = |name: &str, labels: &[(&str, &str)]| {
        metric_sum(&m, name, labels).with_context(|| format!("{name}{labels:?} missing:\n{m}"))
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
        ensure!(sum("sip_lb_backend_requests_total", &l)? == *count as f64, "requests of {a}:\n{m}");
        ensure!(sum("sip_lb_backend_responses_total", &l)? == *count as f64, "responses of {a}:\n{m}");
        ensure!(sum("sip_lb_backend_up", &l)? == 1.0);
        ensure!(sum("sip_lb_backend_state", &[("backend", a.as_str()), ("state", "up")])? == 1.0);
        ensure!(sum("sip_lb_backend_weight", &[("backend", a.as_str()), ("pool", "farm")])? == 1.0);
        let rtt = sum("sip_lb_backend_probe_rtt_seconds", &l)?;
        ensure!(rtt > 0.0 && rtt < 0.15, "probe RTT {rtt}");
        ensure!(sum("sip_lb_backend_probes_total", &l)? >= 1.0);
    }
    ensure!(m.contains("# TYPE sip_lb_backend_requests counter"), "{m}");

    // The JSON view agrees, and the API refuses unknown paths.
    let (status, body) = http(control, "GET", "/backends")?;
    ensure!(
        status == 200 && body.contains(&backends[0].addr.to_string()) && body.contains("\"state\":\"up\""),
        "{body}"
    );
    ensure!(http(control, "GET", "/nope")?.0 == 404);
    ensure!(http(control, "GET", "/reload")?.0 == 405);

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
