//! SIPp over TCP (`-t t1`: every call on one connection) through sip-lb to two SIPp UAS
//! backends over UDP (issue 13): every call succeeds, so every response reached the client's
//! own connection, and the calls of that one connection spread over both backends by Call-ID,
//! each call (INVITE, ACK, BYE) on one backend.

use std::net::SocketAddr;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::Launch;
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addrs};
use sip_lb_tests::process::scratch_dir;
use sip_lb_tests::sipp::{calls_spread_whole, ensure_sipp, run_uac, Scenario, UacOptions, Uas};

#[test]
fn tcp_sipp_calls_reach_udp_backends_and_come_back_on_the_connection() -> Result<()> {
    const CALLS: u64 = 100;
    ensure_sipp()?;
    let dir = scratch_dir("tcp_sipp")?;
    let [udp, b1_addr, b2_addr]: [SocketAddr; 3] =
        free_udp_addrs(3)?.try_into().map_err(|_| anyhow::anyhow!("three ports"))?;
    let tcp = free_tcp_addr()?;
    let b1 = Uas::start("backend1", b1_addr, &Scenario::uas_call(), &dir)?;
    let b2 = Uas::start("backend2", b2_addr, &Scenario::uas_call(), &dir)?;
    let tcp_listen = format!("tcp:{tcp}");
    let lb = Launch::flags("tcp_sipp", &[udp])
        .args(&["--listen", &tcp_listen, "--workers", "2"])
        .args(&["--backend", &b1_addr.to_string(), "--backend", &b2_addr.to_string()])
        .start()?;

    let mut opts = UacOptions::new("uac", Scenario::uac_call(), tcp);
    opts.calls = CALLS;
    opts.rate = 100.0;
    opts.transport = Some("t1".into());
    let report = run_uac(opts, &dir)?;
    let ctx = || {
        format!(
            "UAC: {report}\n{}\nsip-lb: {}\nlogs: {}",
            report.errors_head(10),
            lb.child.stderr_tail(20),
            dir.display()
        )
    };
    ensure!(
        report.successful() == CALLS && report.failed() == 0 && report.exit_code() == Some(0),
        "expected {CALLS} successful calls; {}",
        ctx()
    );
    let (l1, l2) = (b1.received()?, b2.received()?);
    calls_spread_whole(CALLS, &[("backend1", &l1), ("backend2", &l2)], ctx)?;
    let m = lb.control.metrics().context("metrics")?;
    let opened = m.sum("sip_lb_tcp_connections_total", &[("event", "accepted")]).unwrap_or(0.0);
    ensure!(opened == 1.0, "SIPp t1 uses one connection; sip-lb accepted {opened}");
    Ok(())
}
