//! The operator's view, checked by the real tools (issue 16): a Prometheus
//! server scrapes a loaded sip-lb and evaluates every expression of the
//! Grafana dashboard (`dashboards/sip-lb.json`, with `$instance` and
//! `$__rate_interval` substituted): each must return data. The alert rules
//! (`dashboards/alerts.yml`) pass `promtool check rules` and their fixtures
//! pass `promtool test rules`.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::{SipLb, FAST_HEALTH};
use sip_lb_tests::process::scratch_dir;
use sip_lb_tests::prometheus::{binary, Prometheus};
use sip_lb_tests::sink::{wait_until, Backend, Sink};
use sip_lb_tests::sip::SipRequest;

fn dashboards() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

/// Every `expr` of the dashboard's panels.
fn dashboard_expressions() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(dashboards().join("sip-lb.json"))?;
    let d: serde_json::Value = serde_json::from_str(&text)?;
    let exprs: Vec<String> = d["panels"]
        .as_array()
        .context("no panels")?
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    ensure!(!exprs.is_empty(), "the dashboard has no expressions");
    Ok(exprs)
}

/// Requests to `lb` until `stop`: INVITEs from a few sources, and one request
/// in ten with Max-Forwards 0 (a 483: the reply families get data).
fn traffic(lb: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Result<u64>> {
    std::thread::spawn(move || {
        let client = Sink::counting("127.0.0.1:0")?;
        let mut n = 0u64;
        let t0 = Instant::now();
        // Bounded: at most a minute, 200 requests per second.
        while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(60) {
            let id = format!("prom-{n}");
            let m = if n % 10 == 9 {
                SipRequest::padded_message(client.addr(), &id).max_forwards(0).build()
            } else {
                client.request("INVITE", &id, 1).build()
            };
            client.send_to(m, lb)?;
            n += 1;
            std::thread::sleep(Duration::from_millis(5)); // pacing, not synchronisation
        }
        Ok(n)
    })
}

#[test]
fn every_dashboard_expression_returns_data_from_a_real_prometheus() -> Result<()> {
    let (b1, b2) = (Backend::start(true)?, Backend::start(true)?);
    let lb = SipLb::pool("prometheus", &[b1.addr, b2.addr], Some(FAST_HEALTH))?;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = traffic(lb.addr, stop.clone());
    let prom = Prometheus::start(&[lb.control.addr], &scratch_dir("prometheus")?)?;

    // Rates need two scrapes inside the window; probes need an answer.
    let window = "5s";
    let ready = |e: &str| prom.query(e).is_ok_and(|r| !r.is_empty());
    wait_until(Duration::from_secs(30), || {
        ready(&format!("rate(sip_lb_worker_rx_datagrams_total[{window}]) > 0"))
            && ready("sip_lb_backend_probe_rtt_seconds")
            && ready(&format!("rate(sip_lb_worker_replies_total{{code=\"483\"}}[{window}]) > 0"))
    })
    .context("Prometheus saw no traffic, probes or replies from sip-lb")?;

    let mut empty = Vec::new();
    for expr in dashboard_expressions()? {
        let q = expr.replace("$instance", ".*").replace("$__rate_interval", window);
        let result = prom.query(&q).with_context(|| format!("the dashboard expression {expr}"))?;
        if result.is_empty() {
            empty.push(expr);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().expect("traffic thread")?;
    ensure!(empty.is_empty(), "dashboard expressions without data ({sent} requests sent): {empty:#?}");
    Ok(())
}

#[test]
fn alert_rules_pass_promtool() -> Result<()> {
    let promtool = binary("promtool")?;
    for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]] {
        let out = Command::new(&promtool).args(args).current_dir(dashboards()).output()?;
        ensure!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
