//! Runtime bans (issue 14), over real UDP on loopback: a scanner's request
//! gets its source banned within a second and the source's next requests are
//! dropped; `sip-lb bans` lists the ban; `sip-lb unblock` lifts it;
//! `sip-lb block --for N` bans a prefix that then expires by itself; a ban
//! survives a config reload.
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::Launch;
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addr};
use sip_lb_tests::sink::{wait_until, Sink};

const SCANNER: &str = "127.0.0.8";
const OTHER: &str = "127.0.0.9";

fn client(ip: &str) -> Result<Sink> {
    Sink::counting(SocketAddr::new(ip.parse::<IpAddr>()?, 0))
}

/// Sends one INVITE from `c`; true if the backend got it (it gets nothing else meanwhile).
fn gets_through(c: &Sink, backend: &Sink, to: SocketAddr, call_id: &str) -> Result<bool> {
    let before = backend.count();
    c.send_to(c.request("INVITE", call_id, 1).build(), to)?;
    Ok(wait_until(Duration::from_millis(500), || backend.count() > before).is_ok())
}

#[test]
fn scanners_are_banned_and_bans_are_managed_at_runtime() -> Result<()> {
    let backend = Sink::counting("127.0.0.1:0")?;
    let (listen, control) = (free_udp_addr()?, free_tcp_addr()?);
    let config = format!(
        "listen = [\"{listen}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n[[pool]]\nname = \"farm\"\nbackends = [\"{}\"]\n\n\
         [shield]\nban_seconds = 300\n",
        backend.addr()
    );
    let mut lb = Launch::config("shield-bans", &config, &[listen], control).start()?;
    let cli = |args: &[&str]| -> Result<String> {
        let out = lb.cli(args)?;
        ensure!(out.status.success(), "sip-lb {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };

    let scanner = client(SCANNER)?;
    ensure!(gets_through(&scanner, &backend, listen, "before-scan")?, "an ordinary request before the scan");
    let probe = scanner.request("OPTIONS", "scan-1", 1).header("User-Agent", "friendly-scanner").build();
    let t0 = Instant::now();
    scanner.send_to(probe, listen)?;
    wait_until(Duration::from_secs(1), || cli(&["bans"]).is_ok_and(|o| o.contains(&format!("{SCANNER}/32"))))
        .context("the scanner was not banned within a second")?;
    let banned_after = t0.elapsed();
    let listing = cli(&["bans"])?;
    ensure!(listing.contains("scanner") && listing.contains("1 ban(s)"), "{listing}");
    ensure!(!gets_through(&scanner, &backend, listen, "after-scan")?, "a banned source got through");
    let other = client(OTHER)?;
    ensure!(gets_through(&other, &backend, listen, "other")?, "an innocent source was dropped");

    // A reload keeps the ban.
    lb.cli(&["reload"])?;
    ensure!(!gets_through(&scanner, &backend, listen, "after-reload")?, "the ban did not survive a reload");
    // `sip-lb bans` counts what the ban dropped: the two requests since.
    let listing = cli(&["bans"])?;
    let packets = listing.lines().find(|l| l.starts_with(SCANNER)).and_then(|l| l.split_whitespace().last());
    ensure!(packets == Some("2"), "per-ban packets: {listing}");

    let lifted = cli(&["unblock", SCANNER])?;
    ensure!(lifted.contains("lifted"), "{lifted}");
    ensure!(gets_through(&scanner, &backend, listen, "after-unblock")?, "unblocked source still dropped");
    let again = lb.cli(&["unblock", SCANNER])?;
    ensure!(!again.status.success(), "unblocking what is not banned must fail");

    // An operator ban of a prefix, for one second.
    cli(&["block", "127.0.0.9/32", "--for", "1"])?;
    ensure!(!gets_through(&other, &backend, listen, "blocked")?, "the operator's ban did not apply");
    wait_until(Duration::from_secs(3), || cli(&["bans"]).is_ok_and(|o| o.contains("0 ban(s)")))
        .context("the 1 s ban did not expire")?;
    ensure!(gets_through(&other, &backend, listen, "expired")?, "dropped after the ban expired");
    ensure!(lb.cli(&["block", "not-a-prefix"])?.status.code() != Some(0), "a bad prefix must be refused");

    let stats = lb.control.stats()?;
    ensure!(stats.shield_dropped("scanner") == 1, "{stats:?}");
    ensure!(stats.shield_dropped("banned") == 3, "banned drops: {stats:?}");
    ensure!(stats.unaccounted().iter().all(|&u| u == 0), "unaccounted: {stats:?}");
    lb.stop()?;
    eprintln!("scanner banned {banned_after:?} after its request");
    Ok(())
}

/// A source that keeps exceeding its rate, and one the farm keeps refusing
/// (403), are banned; a source that stays within its rate is not.
#[test]
fn sustained_floods_and_failing_sources_are_banned() -> Result<()> {
    use sip_lb_tests::sink::Responder;
    // The backend refuses the Call-IDs that start with "fail-" and accepts the rest.
    let responder: Responder = Box::new(|bytes, _| {
        let msg = String::from_utf8_lossy(bytes);
        if msg.starts_with("SIP/") {
            return None;
        }
        let ok = sip_lb_tests::sip::response_to(&msg);
        let refuse = sip_lb_tests::sip::header(&msg, "Call-ID").is_some_and(|c| c.starts_with("fail-"));
        Some(if refuse { ok.replacen("200 OK", "403 Forbidden", 1) } else { ok }.into_bytes())
    });
    let backend = Sink::start("127.0.0.1:0", false, Some(responder))?;
    let (listen, control) = (free_udp_addr()?, free_tcp_addr()?);
    let config = format!(
        "listen = [\"{listen}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n[[pool]]\nname = \"farm\"\nbackends = [\"{}\"]\n\n\
         [shield]\nrate = 20\nburst = 5\nban_after_over_rate_seconds = 1\nban_after_failures = 3\n",
        backend.addr()
    );
    let mut lb = Launch::config("shield-autoban", &config, &[listen], control).start()?;
    let bans =
        || -> String { lb.cli(&["bans"]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default() };

    // Three refused calls, well within the rate.
    let failing = client("127.0.0.10")?;
    for i in 0..3 {
        failing.send_to(failing.request("INVITE", &format!("fail-{i}"), 1).build(), listen)?;
        wait_until(Duration::from_secs(2), || failing.count() > i)?;
    }
    wait_until(Duration::from_secs(1), || bans().contains("127.0.0.10/32"))
        .context("three 403s did not get the source banned")?;
    ensure!(bans().contains("failures"), "{}", bans());

    // A flood at 200/s against 20/s, bounded to 5 s: banned after a second over.
    let flood = client("127.0.0.11")?;
    let calm = client("127.0.0.12")?;
    let t0 = Instant::now();
    let mut n = 0;
    while !bans().contains("127.0.0.11/32") && t0.elapsed() < Duration::from_secs(5) {
        for _ in 0..20 {
            flood.send_to(flood.request("INVITE", &format!("flood-{n}"), 1).build(), listen)?;
            n += 1;
        }
        // The calm source: one request per 100 ms, within its rate.
        calm.send_to(calm.request("INVITE", &format!("calm-{n}"), 1).build(), listen)?;
        std::thread::sleep(Duration::from_millis(100)); // pacing, not synchronisation
    }
    let took = t0.elapsed();
    let list = bans();
    ensure!(list.contains("127.0.0.11/32") && list.contains(" rate "), "not banned after {took:?}: {list}");
    ensure!(took >= Duration::from_secs(1), "banned after {took:?}, before a second over the rate");
    ensure!(!list.contains("127.0.0.12"), "the calm source was banned: {list}");
    lb.stop()?;
    eprintln!("flood banned after {took:?} ({n} datagrams)");
    Ok(())
}
