//! The shield's XDP stage follows the control plane (issue 14), with sip-lb
//! behind XDP on a veth in a namespace: an operator's ban, a block list added
//! by a reload, and the automatic ban of a flood the XDP rate stage holds
//! back are all dropped in XDP (the workers never see those datagrams), and
//! `sip-lb bans` counts the packets dropped per ban. Every datagram is
//! accounted for, in XDP and in the worker. Needs root.
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sip_lb_tests::control::{Control, Stats};
use sip_lb_tests::nslb::NsLb;
use sip_lb_tests::sink::{wait_until, Sink};

const NET: &str = "10.77.52.";
const BACKEND_PORT: u16 = 5080;
const RATE: u32 = 50;

fn config(lb: &NsLb, block: &str) -> String {
    format!(
        "listen = [\"{}\"]\nworkers = 1\n\n[[pool]]\nname = \"farm\"\nbackends = [\"{}\"]\n\n\
         [shield]\nrate = {RATE}\nburst = 10\nban_seconds = 300\nban_after_over_rate_seconds = 1\nblock = [{block}]\n",
        lb.addr(1, 5060),
        lb.addr(2, BACKEND_PORT)
    )
}

/// The XDP stage's drops (blocked, rate limited), from `/metrics`.
fn xdp_drops(lb: &NsLb) -> Result<(u64, u64)> {
    let control = Control::new(lb.control);
    let m = lb.in_lb(move || control.metrics())??;
    let get = |reason| m.sum("sip_lb_shield_dropped_total", &[("stage", "xdp"), ("reason", reason)]).unwrap_or(0.0);
    Ok((get("blocked") as u64, get("rate_limited") as u64))
}

/// The `PACKETS` column of `prefix`'s line in `sip-lb bans`.
fn ban_packets(listing: &str, prefix: &str) -> Option<u64> {
    let line = listing.lines().find(|l| l.starts_with(prefix))?;
    line.split_whitespace().last()?.parse().ok()
}

#[test]
fn xdp_enforces_bans_reloads_and_bans_the_floods_it_holds() -> Result<()> {
    let mut lb = NsLb::setup("sh", NET, 3)?;
    let backend = lb.in_peer(|| Sink::counting(format!("{NET}2:{BACKEND_PORT}")))??;
    lb.start("shield-xdp", &config(&lb, ""), &["--datapath", "socket", "--xdp-redirect-above", "0"])?;
    let to = lb.addr(1, 5060);
    let (a, b, flood) = (
        lb.in_peer(|| Sink::counting(format!("{NET}3:0")))??,
        lb.in_peer(|| Sink::counting(format!("{NET}4:0")))??,
        lb.in_peer(|| Sink::counting(format!("{NET}5:0")))??,
    );
    let rx = |lb: &NsLb| -> Result<u64> { Ok(lb.stats()?.rx_datagrams()) };
    let send = |c: &Sink, n: usize, tag: &str| -> Result<()> {
        for i in 0..n {
            c.send_to(c.request("INVITE", &format!("{tag}-{i}"), 1).build(), to)?;
        }
        Ok(())
    };

    // Before any ban: a's requests reach the backend.
    send(&a, 3, "a-before")?;
    backend.wait_count(3, Duration::from_secs(5)).context("a before the ban")?;

    // The operator's ban is in XDP: the worker receives nothing more from a.
    lb.cli_ok(&["block", &format!("{NET}3")])?;
    let (rx0, (blocked0, _)) = (rx(&lb)?, xdp_drops(&lb)?);
    send(&a, 20, "a-banned")?;
    wait_until(Duration::from_secs(5), || xdp_drops(&lb).is_ok_and(|d| d.0 >= blocked0 + 20))
        .context("the ban's drops in XDP")?;
    ensure!(rx(&lb)? == rx0, "the worker saw banned datagrams");
    let listing = lb.cli_ok(&["bans"])?;
    ensure!(ban_packets(&listing, &format!("{NET}3/32")) == Some(20), "{listing}");

    // A reload adds b to the block list: dropped in XDP; the ban stays.
    lb.write_config(&config(&lb, &format!("\"{NET}4/32\"")))?;
    lb.cli_ok(&["reload"])?;
    let (blocked1, _) = xdp_drops(&lb)?;
    send(&b, 10, "b-blocked")?;
    send(&a, 5, "a-still")?;
    wait_until(Duration::from_secs(5), || xdp_drops(&lb).is_ok_and(|d| d.0 >= blocked1 + 15))
        .context("the reloaded block list and the kept ban in XDP")?;
    ensure!(rx(&lb)? == rx0, "the worker saw blocked datagrams");

    // Lifted: a gets through again.
    lb.cli_ok(&["unblock", &format!("{NET}3")])?;
    let before = backend.count();
    send(&a, 1, "a-lifted")?;
    backend.wait_count(before + 1, Duration::from_secs(5)).context("a after unblock")?;

    // A flood at ~10x the rate: held in XDP, which reports it; banned after
    // a second over the rate. Bounded to 5 s.
    let t0 = Instant::now();
    let mut n = 0;
    let banned = |lb: &NsLb| lb.cli_ok(&["bans"]).is_ok_and(|l| l.contains(&format!("{NET}5/32")));
    while !banned(&lb) && t0.elapsed() < Duration::from_secs(5) {
        send(&flood, 50, &format!("flood-{n}"))?;
        n += 50;
        std::thread::sleep(Duration::from_millis(100)); // pacing, not synchronisation
    }
    let took = t0.elapsed();
    let listing = lb.cli_ok(&["bans"])?;
    ensure!(banned(&lb) && listing.contains(" rate "), "the flood was not banned in {took:?}: {listing}");
    let (blocked2, limited) = xdp_drops(&lb)?;
    ensure!(limited > 0, "the XDP rate stage dropped nothing");
    let stats = lb.stats()?;
    ensure!(stats.shield_dropped("rate_limited") < limited, "the workers, not XDP, held the flood: {stats:?}");
    // Banned: the next datagrams are dropped in XDP as blocked, counted for the ban.
    send(&flood, 30, "flood-after")?;
    wait_until(Duration::from_secs(5), || xdp_drops(&lb).is_ok_and(|d| d.0 >= blocked2 + 30))?;
    let listing = lb.cli_ok(&["bans"])?;
    ensure!(ban_packets(&listing, &format!("{NET}5/32")).is_some_and(|p| p >= 30), "{listing}");

    // Every datagram accounted for, in XDP and in the worker.
    let settled = |s: &Stats| s.unaccounted().iter().all(|&u| u == 0);
    wait_until(Duration::from_secs(3), || lb.stats().is_ok_and(|s| settled(&s))).ok();
    let stats = lb.stats()?;
    let xdp = stats.xdp_account.clone().context("no xdp_account in /stats")?;
    ensure!(settled(&stats), "unaccounted datagrams: {:?} ({xdp:?})", stats.unaccounted());
    ensure!(xdp.dropped >= 20 + 15 + 30 && xdp.forwarded > 0, "{xdp:?}");
    lb.stop()?;
    eprintln!("flood of {n} banned after {took:?}; xdp {xdp:?}; xdp rate-limited {limited}");
    Ok(())
}
