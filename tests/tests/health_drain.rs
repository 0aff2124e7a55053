//! `sip-lb drain` / `sip-lb enable` against a running instance: a drained
//! backend receives no new requests (only its Call-IDs move) and comes back
//! when enabled; unknown addresses are refused.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::{SipLb, FAST_HEALTH};
use sip_lb_tests::sink::{owners, wait_cseq, Backend, Sink};

/// The state column of `sip-lb backends` for `addr`.
fn cli_state(lb: &SipLb, addr: SocketAddr) -> Result<String> {
    let out = lb.cli(&["backends"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(&addr.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .with_context(|| format!("{addr} not in `sip-lb backends`:\n{text}{}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn drain_and_enable_via_the_cli() -> Result<()> {
    let backends = [Backend::start(false)?, Backend::start(false)?];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let lb = SipLb::pool("health-drain", &addrs, Some(FAST_HEALTH))?;
    let client = Sink::loopback()?;
    let refs: Vec<&Backend> = backends.iter().collect();
    let send = |cseq: u64| -> Result<()> {
        for i in 0..40 {
            client.send_to(client.request("MESSAGE", &format!("drain-{i}"), cseq).bytes(), lb.addr)?;
        }
        wait_cseq(&refs, cseq, 40, Duration::from_secs(3))
    };

    send(1)?;
    let base = owners(&refs, 1);
    ensure!(base.len() == 40 && base.values().any(|&o| o == 0) && base.values().any(|&o| o == 1), "{base:?}");

    let out = lb.cli(&["drain", &backends[0].addr.to_string()])?;
    ensure!(out.status.success(), "drain failed: {}", String::from_utf8_lossy(&out.stderr));
    ensure!(String::from_utf8_lossy(&out.stdout).contains("draining"));
    ensure!(lb.state_of(backends[0].addr)? == "draining");
    ensure!(cli_state(&lb, backends[0].addr)? == "draining");
    send(2)?;
    let own = owners(&refs, 2);
    ensure!(own.len() == 40 && own.values().all(|&o| o == 1), "drained backend still got requests: {own:?}");

    let out = lb.cli(&["enable", &backends[0].addr.to_string()])?;
    ensure!(out.status.success(), "enable failed: {}", String::from_utf8_lossy(&out.stderr));
    ensure!(lb.state_of(backends[0].addr)? == "up");
    ensure!(cli_state(&lb, backends[0].addr)? == "up");
    send(3)?;
    ensure!(owners(&refs, 3) == base, "calls did not return to their backends after enable");

    let out = lb.cli(&["drain", "127.0.0.1:1"])?;
    ensure!(!out.status.success());
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("not a configured backend"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lb.cli(&["backends"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(text.contains("farm:1") && text.contains("config generation 1"), "{text}");
    Ok(())
}
