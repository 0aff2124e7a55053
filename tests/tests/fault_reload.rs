//! The config reloaded 100 times under load ("Hostile input and faults"):
//! two valid configs that differ in backends and weights alternate, applied
//! by SIGHUP and by `sip-lb reload` in turn, while a client sends a steady
//! stream of requests. Every backend of either config stays up, so not one
//! datagram may be lost (each sequence number arrives exactly once), sip-lb
//! stays up, and `sip_lb_config_generation` ends at 1 + 100.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sip_lb_tests::control::Control;
use sip_lb_tests::lb::{pool_config, Launch, FAST_HEALTH};
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addr};
use sip_lb_tests::sink::{wait_until, Backend, Sink};

const RELOADS: u64 = 100;
/// At least this many requests, one per millisecond, and on until the
/// reloads are done (at most MAX).
const MIN_REQUESTS: usize = 5000;
const MAX_REQUESTS: usize = 20_000;

/// `generation` from GET /stats.
fn generation(control: Control) -> Result<u64> {
    Ok(control.stats()?.generation)
}

#[test]
fn hundred_reloads_under_load_lose_nothing() -> Result<()> {
    let backends = [Backend::start(false)?, Backend::start(false)?, Backend::start(false)?];
    let [a, b, c] = [backends[0].addr, backends[1].addr, backends[2].addr];
    let (addr, ctl) = (free_udp_addr()?, free_tcp_addr()?);
    // Config 0: a and b, even; config 1: a weighted 3, b, and c added.
    let cfgs = [
        pool_config(addr, ctl, &[(a, 1), (b, 1)], Some(FAST_HEALTH)),
        pool_config(addr, ctl, &[(a, 3), (b, 1), (c, 1)], Some(FAST_HEALTH)),
    ];
    let mut lb = Launch::config("fault-reload", &cfgs[0], &[addr], ctl).start()?;
    let control = lb.control;
    ensure!(generation(control)? == 1);

    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let done = done.clone();
        std::thread::spawn(move || -> Result<usize> {
            let client = Sink::loopback()?;
            let t0 = Instant::now();
            let mut i = 0;
            while i < MAX_REQUESTS && (i < MIN_REQUESTS || !done.load(Ordering::Relaxed)) {
                client.send_to(client.request("MESSAGE", &format!("seq-{i}"), 1).bytes(), addr)?;
                i += 1;
                // Steady 1000/s (the load, not synchronisation): request i leaves at t0 + i ms.
                let due = t0 + Duration::from_millis(i as u64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            Ok(i)
        })
    };

    let t0 = Instant::now();
    let mut via_cli = 0;
    let reloads = (|| -> Result<()> {
        for n in 1..=RELOADS {
            std::fs::write(lb.config_path(), &cfgs[(n % 2) as usize])?;
            let want = n + 1;
            if n % 2 == 0 || n % 3 == 0 {
                // sip-lb reload: prints the new generation.
                let out = lb.cli(&["reload"])?;
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                ensure!(out.status.success(), "reload {n} failed: {}", String::from_utf8_lossy(&out.stderr));
                ensure!(stdout.contains(&want.to_string()), "reload {n}: want generation {want}: {stdout}");
                via_cli += 1;
            } else {
                lb.child.signal(libc::SIGHUP)?;
                // Wait for it to apply before the next write (SIGHUPs coalesce).
                control
                    .wait_stats(Duration::from_secs(3), &format!("SIGHUP {n} applied"), |s| s.generation >= want)
                    .with_context(|| format!("stderr:\n{}", lb.child.stderr_tail(20)))?;
            }
            ensure!(generation(control)? == want, "after reload {n}");
            lb.child.ensure_running()?;
            // Spread the reloads over the stream (~3.5 s of its 5 s): the scenario's pace.
            std::thread::sleep(Duration::from_millis(30));
        }
        Ok(())
    })();
    let reload_time = t0.elapsed();
    done.store(true, Ordering::Relaxed);
    let sent = sender.join().expect("sender thread")?;
    reloads?;

    let refs: Vec<&Backend> = backends.iter().collect();
    lb.wait_rx(sent as u64, Duration::from_secs(5))?;
    let arrived = || refs.iter().map(|b| b.count()).sum::<usize>();
    let _ = wait_until(Duration::from_secs(5), || arrived() >= sent);
    let mut ids = HashSet::new();
    let mut total = 0;
    for be in &backends {
        for s in be.seen() {
            total += 1;
            ids.insert(s.call_id);
        }
    }
    let per: Vec<usize> = backends.iter().map(Backend::count).collect();
    eprintln!(
        "{RELOADS} reloads ({via_cli} by `sip-lb reload`, {} by SIGHUP) in {reload_time:?}; {sent} requests sent, {total} received ({per:?})",
        RELOADS - via_cli
    );
    let missing: Vec<usize> = (0..sent).filter(|i| !ids.contains(&format!("seq-{i}"))).take(20).collect();
    ensure!(
        total == sent && ids.len() == sent && missing.is_empty(),
        "sent {sent}, received {total} ({} distinct); missing e.g. {missing:?}",
        ids.len()
    );
    ensure!(per[2] > 0, "c (only in config 1) got nothing");

    lb.child.ensure_running()?;
    let m = lb.control.metrics()?;
    ensure!(m.sum("sip_lb_config_generation", &[]) == Some((RELOADS + 1) as f64), "{}", m.text());
    ensure!(m.sum("sip_lb_config_reload_failures_total", &[]).unwrap_or(0.0) == 0.0, "{}", m.text());
    // The last one applied was config 0 (RELOADS is even): c is gone, a back to 1.
    ensure!(m.sum("sip_lb_backend_weight", &[("backend", &a.to_string())]) == Some(1.0), "{}", m.text());
    ensure!(
        m.sum("sip_lb_backend_weight", &[("backend", &c.to_string())]).is_none(),
        "c still exported after the last reload removed it"
    );
    let requests = m.sum("sip_lb_worker_requests_forwarded_total", &[]).context("requests metric")?;
    ensure!(requests == sent as f64, "requests forwarded {requests}, sent {sent}");
    lb.stop()?;
    Ok(())
}
