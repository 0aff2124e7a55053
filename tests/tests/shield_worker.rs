//! The shield enforced by the workers (issue 14, no XDP), over real UDP on
//! loopback: a blocked prefix gets nothing through, a source over its rate is
//! cut to its burst plus the rate, an allowed source is never limited, a
//! scanner's request is dropped, and stateless replies are limited per source.
//! Every datagram is accounted for: forwarded + replied + shield drops = sent.
//! And `new_sources_rate` without XDP: a flood from thousands of addresses
//! (each one new) is held to each worker's budget of new sources while the
//! callers already followed go on.
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use sip_lb_tests::lb::Launch;
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addr};
use sip_lb_tests::sink::{wait_until, Backend, Sink};
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

const WORKERS: u64 = 2;
const NEW_RATE: u64 = 10;
const NEW_BURST: u64 = 20;
const CALLERS: u8 = 4;
const FLOOD_SOURCES: u32 = 3000;

/// Flood source `i`: one address of 127.20.0.0/16 each (all of 127/8 is
/// loopback), so every datagram comes from a source sip-lb never saw.
fn flood_source(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 20, (i / 250) as u8, (i % 250 + 1) as u8)
}

#[test]
fn new_sources_are_held_to_each_workers_budget_and_followed_callers_go_on() -> Result<()> {
    let backend = Backend::start(false)?;
    let (listen, control) = (free_udp_addr()?, free_tcp_addr()?);
    // Per-source rate far above what the callers send: only the new-source
    // budget can hold anything back.
    let config = format!(
        "listen = [\"{listen}\"]\nworkers = {WORKERS}\nmetrics = \"{control}\"\n\n[[pool]]\nname = \"farm\"\n\
         backends = [\"{}\"]\n\n[shield]\nrate = 100\nburst = 100\nnew_sources_rate = {NEW_RATE}\n\
         new_sources_burst = {NEW_BURST}\n",
        backend.addr
    );
    let mut lb = Launch::config("shield-new-sources", &config, &[listen], control).start()?;

    // The callers in progress: new once, followed from then on.
    let t0 = Instant::now();
    let callers: Vec<Sink> = (1..=CALLERS).map(|c| client(&format!("127.0.1.{c}"))).collect::<Result<_>>()?;
    let mut caller_sent = 0u64;
    let mut call = |round: u32| -> Result<()> {
        for (c, s) in callers.iter().enumerate() {
            s.send_to(s.request("INVITE", &format!("caller-{c}-{round}"), 1).build(), listen)?;
            caller_sent += 1;
        }
        Ok(())
    };
    call(0)?;
    wait_until(Duration::from_secs(3), || backend.count() == usize::from(CALLERS))?;

    // The flood: one INVITE from each of FLOOD_SOURCES addresses, the callers
    // going on in between; paced by what sip-lb has received so that no
    // socket buffer overflows (every datagram must be accounted for).
    let mut sent = u64::from(CALLERS);
    for i in 0..FLOOD_SOURCES {
        let a = SocketAddr::new(flood_source(i).into(), 0);
        let sock = UdpSocket::bind(a)?;
        let invite = SipRequest::new("INVITE", sock.local_addr()?, &format!("spoof-{i}")).build();
        sock.send_to(invite.as_bytes(), listen)?;
        sent += 1;
        if i % 100 == 99 {
            call(i / 100 + 1)?;
            sent += u64::from(CALLERS);
        }
        if i % 500 == 499 {
            lb.control.wait_stats(Duration::from_secs(5), "the flood received", |s| s.rx_datagrams() >= sent)?;
        }
    }
    let took = t0.elapsed();
    lb.control.wait_stats(Duration::from_secs(5), "the flood received", |s| s.rx_datagrams() >= sent)?;

    // After the flood, a new caller gets in once the budget has refilled
    // (one new source per 1/NEW_RATE): one INVITE at a time until one passes.
    let late = client("127.0.1.99")?;
    let (mut late_sent, deadline) = (0u64, Instant::now() + Duration::from_secs(5));
    let late_seen = |b: &Backend| b.seen().iter().filter(|s| s.call_id.starts_with("late-")).count() as u64;
    while late_seen(&backend) == 0 {
        ensure!(Instant::now() < deadline, "a new caller after the flood never got through");
        late.send_to(late.request("INVITE", &format!("late-{late_sent}"), 1).build(), listen)?;
        late_sent += 1;
        let _ = wait_until(Duration::from_millis(50), || late_seen(&backend) > 0);
    }
    sent += late_sent;
    let stats = lb.control.wait_stats(Duration::from_secs(5), "every datagram received and accounted", |s| {
        s.rx_datagrams() >= sent && s.unaccounted().iter().all(|&u| u == 0)
    })?;
    let shutdown = lb.stop()?;

    let seen = backend.seen();
    let count = |prefix: &str| seen.iter().filter(|s| s.call_id.starts_with(prefix)).count() as u64;
    let (flood_in, callers_in, late_in) = (count("spoof-"), count("caller-"), count("late-"));
    eprintln!(
        "new sources: {flood_in} of {FLOOD_SOURCES} flood sources admitted in {took:?} ({WORKERS} workers x \
         {NEW_RATE}/s, bursts of {NEW_BURST}); callers {callers_in} of {caller_sent}; a new caller after the \
         flood got in on attempt {late_sent}"
    );
    ensure!(callers_in == caller_sent, "the followed callers lost {} of {caller_sent}", caller_sent - callers_in);
    // Each worker admits its burst and then NEW_RATE a second of the new
    // sources it receives (the callers were new once too).
    let most = WORKERS * (NEW_BURST + (took.as_secs_f64() * NEW_RATE as f64).ceil() as u64 + 1) - u64::from(CALLERS);
    let least = WORKERS * NEW_BURST - u64::from(CALLERS);
    ensure!((least..=most).contains(&flood_in), "{flood_in} flood sources admitted, expected {least}..={most}");
    // Every refused new source counted as `rate_limited` (as the XDP stage
    // counts it), nothing else dropped.
    let limited = stats.shield_dropped("rate_limited");
    let refused = (u64::from(FLOOD_SOURCES) - flood_in) + (late_sent - late_in);
    ensure!(limited == refused, "rate_limited {limited}, refused {refused}: {stats:?}");
    let t = &shutdown.total;
    ensure!(t.rx == sent && t.requests == seen.len() as u64, "{shutdown:?}, sent {sent}");
    ensure!(t.rx == t.requests + t.shield && t.drops == 0, "unaccounted datagrams: {shutdown:?}");
    Ok(())
}
