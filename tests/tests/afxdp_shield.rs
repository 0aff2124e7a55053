//! Runtime bans with the AF_XDP data path (issue 14; root, copy mode on
//! veth, the one-armed topology of `sip_lb_tests::afxdp`): an operator's
//! `sip-lb block` and an automatic scanner ban are both written into the XSK
//! program's shield maps, so the banned source's datagrams are dropped in XDP
//! before the AF_XDP redirect: the XDP shield counter and the ban's `PACKETS`
//! rise by exactly what it sent, the workers see none of it (their own
//! `banned` drops stay 0, the registrar hears nothing), while SIPp's calls
//! from another source all complete. `sip-lb unblock` lets the source in
//! again. Every frame is accounted for, in XDP and in the workers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sip_lb_tests::afxdp::{self, endpoint, sa, OneArm, CLIENT4, FARM4, LB4};
use sip_lb_tests::lb::{Launch, SipLb};
use sip_lb_tests::netns;
use sip_lb_tests::ports::free_tcp_addr;
use sip_lb_tests::process::scratch_dir;
use sip_lb_tests::sink::{wait_until, Sink};
use sip_lb_tests::sipp::{ensure_sipp, Scenario, Uac, UacOptions, Uas};

/// Banned by the operator, then let in again.
const MALLORY: &str = "10.77.0.5";
/// Sends a known scanner's request and is banned for it.
const SCANNER: &str = "10.77.0.6";
const CALLS: u64 = 100;
const CPS: f64 = 50.0;
const WAIT: Duration = Duration::from_secs(5);

/// The XDP stage's drops of blocked (and banned) sources, from `/metrics`.
fn xdp_blocked(lb: &SipLb) -> Result<u64> {
    let m = lb.control.metrics()?;
    Ok(m.sum("sip_lb_shield_dropped_total", &[("stage", "xdp"), ("reason", "blocked")]).unwrap_or(0.0) as u64)
}

/// The `PACKETS` column of `prefix`'s line in `sip-lb bans`.
fn ban_packets(listing: &str, prefix: &str) -> Option<u64> {
    listing.lines().find(|l| l.starts_with(prefix))?.split_whitespace().last()?.parse().ok()
}

/// `n` REGISTERs from `c`; with `answered`, waits for the `n` 200s relayed back.
fn registers(c: &Sink, to: SocketAddr, n: usize, tag: &str, answered: bool) -> Result<()> {
    for i in 0..n {
        c.send_to(c.request("REGISTER", &format!("{tag}-{i}@afxdp-shield"), 1).bytes(), to)?;
    }
    for i in 0..if answered { n } else { 0 } {
        let (text, _) = c.recv_text(WAIT).with_context(|| format!("{tag}: answer {i} of {n} never came back"))?;
        ensure!(text.starts_with("SIP/2.0 200"), "{tag}: {text}");
    }
    Ok(())
}

#[test]
fn bans_are_enforced_in_xdp_before_the_afxdp_redirect() -> Result<()> {
    // SAFETY: no preconditions.
    ensure!(unsafe { libc::geteuid() } == 0, "AF_XDP tests create namespaces and load eBPF: run as root");
    ensure_sipp()?;
    let arm = OneArm::named("fl")?;
    arm.add_outside4(MALLORY)?;
    arm.add_outside4(SCANNER)?;
    let dir = scratch_dir("afxdp-shield")?;
    let (uas_addr, registrar_addr, l4) = (sa(FARM4[0], 5060), sa(FARM4[1], 5060), sa(LB4, 5060));
    let registrar = endpoint(&arm, registrar_addr, true)?;
    let mallory = endpoint(&arm, sa(MALLORY, 5062), false)?;
    let scanner = endpoint(&arm, sa(SCANNER, 5062), false)?;

    // SIPp on one thread in the outside namespace (its children die with the
    // thread that spawned them): the UAS at once, the UAC when told.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (out, d) = (arm.out.name().to_owned(), dir.clone());
    let sipp = std::thread::spawn(move || -> Result<_> {
        netns::enter(&out)?;
        let _uas = Uas::start("uas", uas_addr, &Scenario::uas_call(), &d)?;
        ready_tx.send(())?;
        go_rx.recv()?;
        let mut inv = UacOptions::new("uac", Scenario::uac_call(), l4);
        inv.local = sa(CLIENT4, 5070);
        inv.calls = CALLS;
        inv.rate = CPS;
        Uac::start(inv, &d)?.wait()
    });
    ready_rx.recv_timeout(Duration::from_secs(30)).context("SIPp UAS did not start")?;

    netns::enter(arm.lb.name())?;
    let control = free_tcp_addr()?;
    let text = format!(
        "listen = [\"{l4}\"]\nworkers = 2\npin = \"off\"\nmetrics = \"{control}\"\niface = \"{}\"\ndatapath = \"afxdp\"\n\n\
         [[pool]]\nname = \"proxies\"\ndefault = true\nbackends = [\"{uas_addr}\"]\n\n\
         [[pool]]\nname = \"registrars\"\nmethods = [\"REGISTER\"]\nbackends = [\"{registrar_addr}\"]\n\n\
         [shield]\nban_seconds = 300\n",
        arm.lb_if
    );
    let mut lb = Launch::config("afxdp-shield", &text, &[l4], control).start()?;
    let cli = |lb: &SipLb, args: &[&str]| -> Result<String> {
        let out = lb.cli(args)?;
        ensure!(out.status.success(), "sip-lb {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let banned_by_workers = |lb: &SipLb| lb.control.stats().map(|s| s.shield_dropped("banned"));

    // Before the ban: Mallory's REGISTERs are answered.
    registers(&mallory, l4, 3, "mallory-before", true)?;

    // The operator bans Mallory; SIPp places its calls while Mallory sends 200
    // more REGISTERs, every one dropped in XDP.
    cli(&lb, &["block", MALLORY])?;
    let (blocked0, heard0) = (xdp_blocked(&lb)?, registrar.count());
    go_tx.send(())?;
    let t0 = Instant::now();
    for round in 0..20 {
        registers(&mallory, l4, 10, &format!("mallory-banned-{round}"), false)?;
        // Spread over the calls: paced, not synchronised.
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_until(WAIT, || xdp_blocked(&lb).is_ok_and(|b| b >= blocked0 + 200)).context("Mallory's drops in XDP")?;
    let report = sipp.join().map_err(|_| anyhow::anyhow!("SIPp thread panicked"))??;
    eprintln!("{CALLS} calls at {CPS}/s beside the banned source: {report} in {:?}", t0.elapsed());
    ensure!(
        (report.successful(), report.failed()) == (CALLS, 0),
        "calls from an innocent source failed: {report}\n{}",
        report.failure_reasons()
    );
    let listing = cli(&lb, &["bans"])?;
    ensure!(ban_packets(&listing, &format!("{MALLORY}/32")) == Some(200), "per-ban packets: {listing}");
    ensure!(xdp_blocked(&lb)? == blocked0 + 200, "XDP dropped more than Mallory sent");
    ensure!(registrar.count() == heard0 && mallory.count() == 3, "a banned REGISTER got through");
    ensure!(banned_by_workers(&lb)? == 0, "a worker saw a banned datagram");

    // Lifted: Mallory is answered again.
    cli(&lb, &["unblock", MALLORY])?;
    registers(&mallory, l4, 3, "mallory-after", true)?;

    // A scanner's request: dropped by a worker (it reads the User-Agent),
    // which reports it; banned within a second, in XDP from then on.
    let probe = scanner.request("OPTIONS", "scan-1@afxdp-shield", 1).header("User-Agent", "friendly-scanner");
    scanner.send_to(probe.bytes(), l4)?;
    let t0 = Instant::now();
    wait_until(Duration::from_secs(1), || {
        cli(&lb, &["bans"])
            .is_ok_and(|l| l.lines().any(|l| l.starts_with(&format!("{SCANNER}/32")) && l.contains("scanner")))
    })
    .context("the scanner was not banned within a second")?;
    let banned_after = t0.elapsed();
    let (blocked1, heard1) = (xdp_blocked(&lb)?, registrar.count());
    registers(&scanner, l4, 50, "scanner-banned", false)?;
    wait_until(WAIT, || xdp_blocked(&lb).is_ok_and(|b| b >= blocked1 + 50)).context("the scanner's drops in XDP")?;
    let listing = cli(&lb, &["bans"])?;
    ensure!(ban_packets(&listing, &format!("{SCANNER}/32")) == Some(50), "per-ban packets: {listing}");
    ensure!(registrar.count() == heard1 && scanner.count() == 0, "the banned scanner got through");
    ensure!(banned_by_workers(&lb)? == 0, "a worker saw a banned datagram");

    // Every frame accounted for: in the XSK program and in the workers.
    let stats = lb.control.wait_stats(WAIT, "accounted", |s| s.unaccounted().iter().all(|&u| u == 0))?;
    let xdp = stats.xdp_account.clone().context("no xdp_account in /stats")?;
    ensure!(xdp.unaccounted == 0 && xdp.dropped == 250, "{xdp:?}");
    ensure!(stats.shield_dropped("scanner") == 1, "{stats:?}");
    lb.stop()?;
    let err = lb.child.stderr();
    let program = afxdp::summary_lines(&err).into_iter().find(|(h, _)| h == "program").context("program line")?.1;
    ensure!(program.get("shield_blocked") == Some(&250), "{err}");
    eprintln!("scanner banned after {banned_after:?}; xdp {xdp:?}");
    Ok(())
}
