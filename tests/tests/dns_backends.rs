//! Backends named in DNS, against a real DNS server: dnsmasq in a network
//! namespace of this test (prefix `hd`), with sip-lb, the fake backends and
//! the client in it too. Records change at run time (the hosts file is
//! rewritten and dnsmasq gets SIGHUP): only the removed address's Call-IDs
//! move, `sip-lb backends` shows the change, and a dead DNS server leaves
//! the last good set in place.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::{Launch, SipLb};
use sip_lb_tests::netns::NetNs;
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addr, wait_udp_bound};
use sip_lb_tests::process::{scratch_dir, ChildGuard};
use sip_lb_tests::sink::{owners, wait_cseq, wait_until, Backend, Sink};

/// Call-IDs sent per round.
const CALLS: usize = 300;

/// dnsmasq answering from `dir/hosts` and `dir/dnsmasq.conf` on 127.0.0.1:53
/// of the current namespace, records with a 1 s TTL.
fn dnsmasq(dir: &Path, extra: &str) -> Result<ChildGuard> {
    let conf = dir.join("dnsmasq.conf");
    std::fs::write(
        &conf,
        format!(
            "port=53\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\naddn-hosts={}\n\
             local-ttl=1\nuser=root\nlog-facility=-\npid-file=\n{extra}",
            dir.join("hosts").display()
        ),
    )?;
    let mut cmd = Command::new("dnsmasq");
    cmd.args(["--no-daemon", "--log-queries", &format!("--conf-file={}", conf.display())]);
    let mut g = ChildGuard::spawn("dnsmasq", cmd, dir).context("starting dnsmasq (package dnsmasq-base)")?;
    wait_udp_bound(53, Duration::from_secs(10), || g.ensure_running()).context("dnsmasq listening")?;
    Ok(g)
}

fn write_hosts(dir: &Path, lines: &[(&str, &str)]) -> Result<()> {
    let text: String = lines.iter().map(|(ip, name)| format!("{ip} {name}\n")).collect();
    Ok(std::fs::write(dir.join("hosts"), text)?)
}

/// The address column of `sip-lb backends`.
fn cli_backends(lb: &SipLb) -> Result<Vec<String>> {
    let out = lb.cli(&["backends"])?;
    ensure!(out.status.success(), "sip-lb backends: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut v: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<SocketAddr>().is_ok())
        .map(str::to_owned)
        .collect();
    v.sort();
    Ok(v)
}

/// Sends the round's Call-IDs with CSeq `cseq` and waits until `expect` arrived.
fn round(client: &Sink, lb: &SipLb, backends: &[&Backend], cseq: u64) -> Result<HashMap<String, usize>> {
    for i in 0..CALLS {
        client.send_to(client.request("MESSAGE", &format!("dns-{i}"), cseq).bytes(), lb.addr)?;
    }
    wait_cseq(backends, cseq, CALLS, Duration::from_secs(5))?;
    Ok(owners(backends, cseq))
}

/// A name with three A records; one is removed at run time: its Call-IDs,
/// and only they, move; `sip-lb backends` drops it. Then dnsmasq dies: the
/// failed lookups keep the two addresses and say so.
#[test]
fn a_records_change_at_run_time() -> Result<()> {
    let ns = NetNs::new("hd")?;
    ns.enter()?;
    let dir = scratch_dir("dns-a")?;
    let port = free_udp_addr()?.port();
    let ips = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
    let backends: Vec<Backend> =
        ips.iter().map(|ip| Backend::start_on(format!("{ip}:{port}"), false)).collect::<Result<_>>()?;
    let refs: Vec<&Backend> = backends.iter().collect();
    let addr = |i: usize| format!("{}:{port}", ips[i]);
    write_hosts(&dir, &ips.iter().map(|ip| (*ip, "sip.farm.example")).collect::<Vec<_>>())?;
    let mut dns = dnsmasq(&dir, "")?;

    let (listen, control) = (free_udp_addr()?, free_tcp_addr()?);
    let config = format!(
        "listen = [\"{listen}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n[dns]\nservers = [\"127.0.0.1:53\"]\n\
         min_ttl_seconds = 1\n\n[[pool]]\nname = \"farm\"\nbackends = [\"sip.farm.example:{port}\"]\n"
    );
    let lb = Launch::config("dns-a", &config, &[listen], control).env("SIP_LB_LOG", "info").start()?;
    ensure!(cli_backends(&lb)? == [addr(0), addr(1), addr(2)], "at start: {:?}", cli_backends(&lb)?);
    let client = Sink::loopback()?;

    let before = round(&client, &lb, &refs, 1)?;
    ensure!((0..3).all(|i| before.values().any(|&o| o == i)), "not every address got calls: {before:?}");

    // 127.0.0.12 leaves the name.
    write_hosts(&dir, &[(ips[0], "sip.farm.example"), (ips[2], "sip.farm.example")])?;
    let changed = std::time::Instant::now();
    dns.signal(libc::SIGHUP)?;
    wait_until(Duration::from_secs(10), || cli_backends(&lb).is_ok_and(|b| b == [addr(0), addr(2)]))
        .with_context(|| format!("sip-lb backends after the change: {:?}", cli_backends(&lb)))?;
    let seen_after = changed.elapsed();
    let after = round(&client, &lb, &refs, 2)?;
    let mut moved = 0;
    for (id, &was) in &before {
        let now = after[id];
        if was == 1 {
            ensure!(now != 1, "{id} still went to the removed address");
            moved += 1;
        } else {
            ensure!(now == was, "{id} moved from {} to {} though its address stayed", addr(was), addr(now));
        }
    }
    ensure!(moved > 0);

    // The DNS server goes away: lookups fail, the last good set stays.
    dns.stop()?;
    wait_until(Duration::from_secs(10), || lb.child.stderr().contains("keeping the last good 2 address(es)"))
        .context("no log line about the failed lookup")?;
    ensure!(cli_backends(&lb)? == [addr(0), addr(2)], "after the DNS server died: {:?}", cli_backends(&lb)?);
    ensure!(round(&client, &lb, &refs, 3)? == after, "Call-IDs moved while DNS was down");
    eprintln!(
        "dns: A records 3 -> 2 seen by sip-lb {seen_after:?} after dnsmasq's SIGHUP (TTL 1 s); {moved} of {CALLS} \
         Call-IDs moved (all of the removed address's), the others stayed"
    );
    Ok(())
}

/// SRV records with two priorities and weights 1:3: only the lower
/// priority takes traffic, shared by weight; when both of its backends are
/// drained the higher priority takes over; a record's removal shows.
#[test]
fn srv_priorities_and_weights() -> Result<()> {
    let ns = NetNs::new("hd")?;
    ns.enter()?;
    let dir = scratch_dir("dns-srv")?;
    let port = free_udp_addr()?.port();
    let ips = ["127.0.0.21", "127.0.0.22", "127.0.0.23"];
    let backends: Vec<Backend> =
        ips.iter().map(|ip| Backend::start_on(format!("{ip}:{port}"), false)).collect::<Result<_>>()?;
    let refs: Vec<&Backend> = backends.iter().collect();
    let addr = |i: usize| format!("{}:{port}", ips[i]);
    write_hosts(&dir, &[(ips[0], "a.farm.example"), (ips[1], "b.farm.example"), (ips[2], "c.farm.example")])?;
    let srv = format!(
        "srv-host=_sip._udp.farm.example,a.farm.example,{port},10,1\n\
         srv-host=_sip._udp.farm.example,b.farm.example,{port},10,3\n\
         srv-host=_sip._udp.farm.example,c.farm.example,{port},20,1\n"
    );
    let _dns = dnsmasq(&dir, &srv)?;

    let (listen, control) = (free_udp_addr()?, free_tcp_addr()?);
    let config = format!(
        "listen = [\"{listen}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n[dns]\nservers = [\"127.0.0.1:53\"]\n\
         min_ttl_seconds = 1\n\n[[pool]]\nname = \"farm\"\nsrv = \"_sip._udp.farm.example\"\n"
    );
    let lb = Launch::config("dns-srv", &config, &[listen], control).start()?;
    ensure!(cli_backends(&lb)? == [addr(0), addr(1), addr(2)], "at start: {:?}", cli_backends(&lb)?);
    let weights: Vec<u32> =
        (0..3).map(|i| lb.control.backend(backends[i].addr).map(|b| b.pools[0].1)).collect::<Result<_>>()?;
    ensure!(weights == [1, 3, 1], "weights {weights:?}");
    let client = Sink::loopback()?;

    let own = round(&client, &lb, &refs, 1)?;
    let share = |o: &HashMap<String, usize>, i: usize| o.values().filter(|&&x| x == i).count();
    let (a, b, c) = (share(&own, 0), share(&own, 1), share(&own, 2));
    ensure!(c == 0, "priority 20 got {c} calls while priority 10 was up");
    // 1:3 over 300 Call-IDs: a expects 75 (sd ~7.5).
    ensure!((45..=110).contains(&a) && a + b == CALLS, "priority-10 split a={a} b={b} (weights 1:3)");

    for i in [0, 1] {
        let out = lb.cli(&["drain", &addr(i)])?;
        ensure!(out.status.success(), "drain: {}", String::from_utf8_lossy(&out.stderr));
    }
    let own = round(&client, &lb, &refs, 2)?;
    ensure!(share(&own, 2) == CALLS, "with priority 10 drained, priority 20 got {} of {CALLS}", share(&own, 2));
    eprintln!("dns: SRV priority 10 split a={a} b={b} (weights 1:3), priority 20 idle; drained: priority 20 took all");
    Ok(())
}
