//! The shield enforced by the workers (issue 14, no XDP), over real UDP on
//! loopback: a blocked prefix gets nothing through, a source over its rate is
//! cut to its burst plus the rate, an allowed source is never limited, a
//! scanner's request is dropped, and stateless replies are limited per source.
//! Every datagram is accounted for: forwarded + replied + shield drops = sent.
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use sip_lb_tests::lb::Launch;
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addr};
use sip_lb_tests::sink::{wait_until, Sink};
use sip_lb_tests::sip::SipRequest;

const BLOCKED: &str = "127.0.0.3";
const LIMITED: &str = "127.0.0.4";
const ALLOWED: &str = "127.0.0.5";
const SCANNER: &str = "127.0.0.6";
const REPLIED: &str = "127.0.0.7";
const RATE: u32 = 20;
const BURST: u32 = 5;
const REPLY_BURST: u32 = 3;

fn client(ip: &str) -> Result<Sink> {
    Sink::counting(SocketAddr::new(ip.parse::<IpAddr>()?, 0))
}

/// `n` INVITEs from `c`, as fast as the socket goes; how long it took.
fn send(c: &Sink, to: SocketAddr, n: usize, tag: &str) -> Result<Duration> {
    let t0 = Instant::now();
    for i in 0..n {
        c.send_to(c.request("INVITE", &format!("{tag}-{i}"), 1).build(), to)?;
    }
    Ok(t0.elapsed())
}

#[test]
fn the_shield_blocks_limits_and_accounts_for_every_datagram() -> Result<()> {
    let backend = Sink::counting("127.0.0.1:0")?;
    let (listen, control) = (free_udp_addr()?, free_tcp_addr()?);
    let config = format!(
        "listen = [\"{listen}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n[[pool]]\nname = \"farm\"\nbackends = [\"{}\"]\n\n\
         [shield]\nblock = [\"{BLOCKED}/32\"]\nallow = [\"{ALLOWED}\"]\nrate = {RATE}\nburst = {BURST}\n\
         reply_rate = 1\nreply_burst = {REPLY_BURST}\n",
        backend.addr()
    );
    let mut lb = Launch::config("shield-worker", &config, &[listen], control).start()?;

    let blocked = client(BLOCKED)?;
    send(&blocked, listen, 10, "blocked")?;
    let limited = client(LIMITED)?;
    let took = send(&limited, listen, 100, "limited")?;
    let allowed = client(ALLOWED)?;
    send(&allowed, listen, 100, "allowed")?;
    let scanner = client(SCANNER)?;
    let probe = scanner.request("OPTIONS", "scan-1", 1).header("User-Agent", "friendly-scanner").build();
    scanner.send_to(probe, listen)?;
    // Max-Forwards 0: each gets a 483, but only the reply burst goes out.
    let replied = client(REPLIED)?;
    for i in 0..10 {
        let m = SipRequest::padded_message(replied.addr(), &format!("mf0-{i}")).max_forwards(0).build();
        replied.send_to(m, listen)?;
    }

    let sent = 10 + 100 + 100 + 1 + 10;
    wait_until(Duration::from_secs(5), || lb.control.stats().is_ok_and(|s| s.rx_datagrams() >= sent))?;
    // The backend gets all of the allowed source's and what passed of the limited one's.
    wait_until(Duration::from_secs(3), || backend.count() >= 100 + u64::from(BURST))?;
    wait_until(Duration::from_secs(2), || replied.count() >= u64::from(REPLY_BURST))?;
    let stats = lb.control.stats()?;
    // The control plane's view of the same invariant: `unaccounted` is 0 for every worker.
    ensure!(stats.unaccounted().iter().all(|&u| u == 0), "unaccounted: {:?}: {stats:?}", stats.unaccounted());
    let shutdown = lb.stop()?;
    let (blocked_n, scanner_n) = (stats.shield_dropped("blocked"), stats.shield_dropped("scanner"));
    let (limited_n, reply_limited_n) = (stats.shield_dropped("rate_limited"), stats.shield_dropped("reply_limited"));
    ensure!(blocked_n == 10, "blocked: {blocked_n}: {stats:?}");
    ensure!(scanner_n == 1, "scanner: {scanner_n}: {stats:?}");
    ensure!(blocked.count() == 0 && scanner.count() == 0, "a dropped source got an answer");

    // The limited source: its burst, plus one per 1/RATE while the 100 went out (and one spare).
    let allowance = |took: Duration| u64::from(BURST) + (took.as_secs_f64() * f64::from(RATE)).ceil() as u64 + 1;
    let passed = backend.count() - 100;
    ensure!(
        (u64::from(BURST)..=allowance(took)).contains(&passed),
        "{passed} of 100 passed (allowance {})",
        allowance(took)
    );
    // The Max-Forwards-0 source is limited the same way; of what passed, the
    // reply burst was answered with 483 and the rest not.
    ensure!(replied.count() == u64::from(REPLY_BURST), "{} replies reached the client", replied.count());
    let replied_passed = u64::from(REPLY_BURST) + reply_limited_n;
    ensure!(replied_passed >= u64::from(BURST) && replied_passed <= 10, "{replied_passed} of 10 Max-Forwards 0 passed");
    ensure!(limited_n == (100 - passed) + (10 - replied_passed), "rate_limited {limited_n}: {stats:?}");

    // Accounting: every datagram received was forwarded, replied or dropped by the shield.
    let t = &shutdown.total;
    ensure!(t.rx == sent, "received {} of {sent}", t.rx);
    ensure!(t.shield == blocked_n + scanner_n + limited_n + reply_limited_n, "shield total: {shutdown:?}");
    ensure!(t.drops == 0, "core drops: {shutdown:?}");
    ensure!(t.requests == backend.count() && t.replies == u64::from(REPLY_BURST), "{shutdown:?}");
    ensure!(t.rx == t.requests + t.replies + t.shield, "unaccounted datagrams: {shutdown:?}");
    Ok(())
}
