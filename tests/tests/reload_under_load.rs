//! Hot reload under load: while a bounded stream of requests flows, the
//! config gains a backend (SIGHUP), re-weights one (`sip-lb reload`), is
//! replaced by an invalid file (rejected with file:line, old config kept),
//! and loses a backend (SIGHUP). Not one datagram is lost, and the config
//! generation metric counts the applied reloads.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::{pool_config, Launch, FAST_HEALTH};
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addr};
use sip_lb_tests::sink::{wait_cseq, wait_until, Backend, Sink};

const REQUESTS: usize = 4000;

#[test]
fn reload_under_load_loses_nothing() -> Result<()> {
    let backends = [Backend::start(false)?, Backend::start(false)?, Backend::start(false)?];
    let [a, b, c] = [backends[0].addr, backends[1].addr, backends[2].addr];
    let (addr, control) = (free_udp_addr()?, free_tcp_addr()?);
    let cfg = |list: &[(std::net::SocketAddr, u32)]| pool_config(addr, control, list, Some(FAST_HEALTH));
    let mut lb = Launch::config("reload-under-load", &cfg(&[(a, 1), (b, 1)]), &[addr], control).start()?;
    let config = lb.config_path().clone();
    let write = |text: &str| std::fs::write(&config, text);

    let sender = std::thread::spawn(move || -> Result<usize> {
        let client = Sink::loopback()?;
        for i in 0..REQUESTS {
            client.send_to(client.request("MESSAGE", &format!("load-{i}"), 1).bytes(), addr)?;
            if i % 5 == 4 {
                // Pacing: the load the reloads happen under.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(REQUESTS)
    });
    // Spreads the reloads over the stream: the scenario's pace, not synchronisation.
    let pause = || std::thread::sleep(Duration::from_millis(120));

    pause();
    write(&cfg(&[(a, 1), (b, 1), (c, 1)]))?;
    lb.child.signal(libc::SIGHUP)?;
    pause();
    write(&cfg(&[(a, 3), (b, 1), (c, 1)]))?;
    let out = lb.cli(&["reload"])?;
    ensure!(out.status.success(), "reload failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(stdout.contains("generation"), "{stdout}");
    pause();
    // Invalid: weight 0, on line 6 of the file.
    let bad = cfg(&[(a, 0), (b, 1), (c, 1)]);
    let bad_line = bad.lines().position(|l| l.contains("weight = 0")).unwrap() + 1;
    write(&bad)?;
    let out = lb.cli(&["reload"])?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(!out.status.success(), "invalid config accepted");
    ensure!(
        stderr.contains(&format!("sip-lb.toml:{bad_line}:")) && stderr.contains("weight"),
        "unclear rejection: {stderr}"
    );
    pause();
    write(&cfg(&[(a, 3), (c, 1)]))?;
    lb.child.signal(libc::SIGHUP)?;

    let sent = sender.join().expect("sender thread")?;
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
    ensure!(total == sent && ids.len() == sent, "sent {sent}, backends received {total} ({} distinct)", ids.len());
    ensure!(backends[2].count() > 0, "the added backend got nothing");

    // Generation: 1 + three applied reloads; one rejected.
    let m = lb
        .control
        .wait_metrics(Duration::from_secs(3), "generation 4", |m| m.sum("sip_lb_config_generation", &[]) == Some(4.0))
        .with_context(|| format!("stderr:\n{}", lb.child.stderr_tail(20)))?;
    ensure!(m.sum("sip_lb_config_reload_failures_total", &[]) == Some(1.0), "{}", m.text());
    ensure!(m.sum("sip_lb_backend_weight", &[("backend", &a.to_string())]) == Some(3.0), "{}", m.text());
    ensure!(
        m.sum("sip_lb_backend_requests_total", &[("backend", &b.to_string())]).is_none(),
        "removed backend still exported"
    );

    // The removed backend gets nothing new; forwarding goes on.
    let before_b = backends[1].count();
    let client = Sink::loopback()?;
    for i in 0..200 {
        client.send_to(client.request("MESSAGE", &format!("after-{i}"), 2).bytes(), addr)?;
    }
    lb.wait_rx((sent + 200) as u64, Duration::from_secs(3))?;
    let _ = wait_cseq(&refs, 2, 200, Duration::from_secs(3));
    ensure!(backends[1].count() == before_b, "removed backend still receives");
    let after: usize = backends.iter().map(|b| b.seen().iter().filter(|s| s.cseq == 2).count()).sum();
    ensure!(after == 200, "{after} of 200 requests after the reloads arrived");
    lb.child.ensure_running()?;
    Ok(())
}
