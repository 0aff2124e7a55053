//! The shield on TCP/TLS connections (issue 13, as for UDP in `shield_worker.rs`): a blocked
//! source's connection is closed at accept; a source over its rate has its messages dropped
//! (one bucket per source whatever the transport); a scanner's connection is closed and the
//! source banned, so its next connection is refused. Counted in
//! `sip_lb_tcp_shield_dropped_total{reason}`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::{Launch, SipLb};
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addr};
use sip_lb_tests::sink::Sink;
use sip_lb_tests::sip::SipRequest;
use sip_lb_tests::stream::StreamClient;

const WITHIN: Duration = Duration::from_secs(5);

/// sip-lb with a TCP listener, this `[shield]` body and a backend on 127.0.0.2 (backends
/// are always allowed, so the clients on 127.0.0.1 are the shield's to judge).
fn start(label: &str, shield: &str) -> Result<(SipLb, SocketAddr, Sink)> {
    let backend = Sink::bind("127.0.0.2:0")?;
    let (udp, tcp, control) = (free_udp_addr()?, free_tcp_addr()?, free_tcp_addr()?);
    let text = format!(
        "listen = [\"{udp}\", \"tcp:{tcp}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n[shield]\n{shield}\n\n\
         [[pool]]\nname = \"farm\"\nbackends = [\"{}\"]\n",
        backend.addr()
    );
    let lb = Launch::config(label, &text, &[udp], control).start()?;
    Ok((lb, tcp, backend))
}

fn dropped(lb: &SipLb, reason: &str) -> Result<u64> {
    Ok(lb.control.metrics()?.sum("sip_lb_tcp_shield_dropped_total", &[("reason", reason)]).unwrap_or(0.0) as u64)
}

fn options(me: SocketAddr, call_id: &str) -> String {
    SipRequest::new("OPTIONS", me, call_id).build().replacen("SIP/2.0/UDP", "SIP/2.0/TCP", 1)
}

#[test]
fn a_blocked_source_gets_no_connection() -> Result<()> {
    let (lb, tcp, backend) = start("stream_shield_block", "block = [\"127.0.0.1/32\"]")?;
    let mut c = StreamClient::connect(tcp)?;
    let me = c.local_addr();
    // Whatever it sends, the connection is closed and nothing is forwarded.
    let _ = c.send(options(me, "blocked@client").as_bytes());
    c.wait_closed(WITHIN).context("the blocked source's connection is closed")?;
    ensure!(dropped(&lb, "blocked")? >= 1);
    ensure!(backend.recv(Duration::from_millis(200)).is_none(), "nothing reached the backend");
    Ok(())
}

#[test]
fn over_rate_messages_are_dropped_and_a_scanner_is_closed_and_banned() -> Result<()> {
    const SENT: u64 = 20;
    let (lb, tcp, backend) = start("stream_shield_rate", "rate = 2\nburst = 3")?;
    let mut c = StreamClient::connect(tcp)?;
    let me = c.local_addr();
    for i in 0..SENT {
        c.send(options(me, &format!("rate-{i}@client")).as_bytes())?;
    }
    // Every message is either forwarded or dropped by the shield.
    let m = lb.control.wait_metrics(WITHIN, "every message judged", |m| {
        let fwd = m.sum("sip_lb_tcp_messages_total", &[("outcome", "request_forwarded")]).unwrap_or(0.0);
        let lim = m.sum("sip_lb_tcp_shield_dropped_total", &[("reason", "rate_limited")]).unwrap_or(0.0);
        fwd + lim == SENT as f64
    })?;
    let forwarded = m.sum("sip_lb_tcp_messages_total", &[("outcome", "request_forwarded")]).unwrap_or(0.0) as u64;
    ensure!((3..=6).contains(&forwarded), "the burst (3) and about the rate got through: {forwarded}");
    backend.wait_count(forwarded, WITHIN)?;

    // A scanner: its connection is closed, its source banned, its next connection refused.
    let scan = SipRequest::new("OPTIONS", me, "scan@client").header("User-Agent", "friendly-scanner").build().replacen(
        "SIP/2.0/UDP",
        "SIP/2.0/TCP",
        1,
    );
    // The shield looks for scanners before it counts the rate.
    c.send(scan.as_bytes())?;
    c.wait_closed(WITHIN).context("the scanner's connection is closed")?;
    ensure!(dropped(&lb, "scanner")? == 1);
    lb.control
        .wait_metrics(WITHIN, "the scanner banned", |m| m.sum("sip_lb_shield_bans", &[]).unwrap_or(0.0) >= 1.0)?;
    let mut again = StreamClient::connect(tcp)?;
    again.wait_closed(WITHIN).context("a banned source's next connection is refused")?;
    ensure!(dropped(&lb, "banned")? >= 1);
    Ok(())
}
