//! `cargo xtask bench --soak [--soak-seconds N]` (issue 14): sip-lb (release,
//! 1 worker, loopback) measured at its max rate for a few seconds, then fed
//! at half of it for N seconds (default 600) by the paced blaster. Every
//! `N / 20` seconds it samples sip-lb's RSS and `/stats` (received, and the
//! accounting invariant: `unaccounted` per worker); at the end the loss
//! (sent by the blaster vs. received by the sinks) and the final invariant.
//! Prints the table and writes it to target/bench/soak.md. Bounded: the blast
//! ends after N seconds whatever happens; sip-lb and the sinks are stopped
//! by PID.
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::balancer::{Balancer, Kind, Site};
use super::packets::{self, Ground, FLOWS};
use super::traffic::{self, BlastSpec, Sinks};
use super::{free_addrs, Env};

/// Default length of the soak.
pub const DEFAULT_SECONDS: u64 = 600;
/// Seconds of the max-rate blast that sets the soak's rate.
const MAX_RATE_SECONDS: f64 = 3.0;

struct Sample {
    at_s: f64,
    rss_kib: u64,
    rx: u64,
    unaccounted: Vec<i64>,
}

/// Runs the soak; returns the report (also written to target/bench/soak.md).
pub fn run(env: &Env, seconds: u64) -> Result<String> {
    eprintln!("soak: max rate of sip-lb (1 worker, loopback), {MAX_RATE_SECONDS} s");
    let max = packets::max_rate(env, Ground::Loopback, Kind::SipLb, 1, MAX_RATE_SECONDS, "soak-max")?;
    let rate = (max.rate / 2.0).max(100.0);
    eprintln!("soak: max {:.0} datagrams/s; soaking at {rate:.0}/s for {seconds} s", max.rate);

    let sinks = Sinks::start(2, false)?;
    let listen = free_addrs(1)?[0];
    let lb = Balancer::start(env, Kind::SipLb, 1, listen, &sinks.addrs, "soak", Site::LOOPBACK)?;
    let control = sip_lb_tests::control::Control::new(lb.control().context("sip-lb's control address")?);
    let pid = lb.pid();
    let spec = BlastSpec {
        target: listen,
        source: std::net::Ipv4Addr::LOCALHOST.into(),
        netns: None,
        duration: Duration::from_secs(seconds),
        rate: Some(rate),
        flows: FLOWS,
    };
    let t0 = Instant::now();
    let blaster = std::thread::spawn(move || traffic::blast(&spec, 0));
    let every = Duration::from_secs((seconds / 20).max(1));
    let mut samples = Vec::new();
    while !blaster.is_finished() {
        std::thread::sleep(
            every.min(Duration::from_secs(seconds).saturating_sub(t0.elapsed())).max(Duration::from_millis(50)),
        );
        let stats = control.stats().ok();
        samples.push(Sample {
            at_s: t0.elapsed().as_secs_f64(),
            rss_kib: rss_kib(pid),
            rx: stats.as_ref().map_or(0, |s| s.rx_datagrams()),
            unaccounted: stats.map(|s| s.unaccounted()).unwrap_or_default(),
        });
    }
    let blasted = blaster.join().map_err(|_| anyhow::anyhow!("blaster panicked"))??;
    // Let the last datagrams arrive, then read the final state at rest.
    let settle = Instant::now();
    while sinks.count() < blasted.sent && settle.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let last = control.stats()?;
    let received = sinks.count();
    let mut usage = Default::default();
    let rss_end = rss_kib(pid);
    lb.stop(&mut usage)?;
    sinks.finish();

    let loss = 1.0 - received as f64 / blasted.sent.max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(out, "# Soak (sip-lb, 1 worker, loopback)\n");
    let _ = writeln!(
        out,
        "max rate {:.0} datagrams/s; soak at {rate:.0}/s for {seconds} s: sent {}, received by the sinks {} \
         (loss {:.4}%), sip-lb rx {}; RSS {} -> {} KiB; unaccounted at the end {:?}\n",
        max.rate,
        blasted.sent,
        received,
        loss * 100.0,
        last.rx_datagrams(),
        samples.first().map_or(0, |s| s.rss_kib),
        rss_end,
        last.unaccounted()
    );
    let _ = writeln!(out, "| t (s) | RSS (KiB) | sip-lb rx | unaccounted |\n|---:|---:|---:|---|");
    for s in &samples {
        let _ = writeln!(out, "| {:.0} | {} | {} | {:?} |", s.at_s, s.rss_kib, s.rx, s.unaccounted);
    }
    std::fs::write(env.out.join("soak.md"), &out).context("writing soak.md")?;
    Ok(out)
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}
