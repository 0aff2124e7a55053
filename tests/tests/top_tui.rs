//! `sip-lb top` as a terminal UI, driven in tmux against a running sip-lb:
//! the sections show, the rates move with traffic, `d`/`e` drain and enable
//! the selected backend through the control API, `s` sorts, `q` quits and
//! gives the terminal back. And `--once` still prints the text table.
use std::time::Duration;

use anyhow::{ensure, Result};
use sip_lb_tests::lb::SipLb;
use sip_lb_tests::sink::{Backend, Sink};
use sip_lb_tests::tmux::Tmux;

/// The row of `addr` in the backend table: its STATE column.
fn state_on(screen: &str, addr: &str) -> Option<String> {
    let line = screen.lines().find(|l| l.contains(addr))?;
    let after = &line[line.find(addr)? + addr.len()..];
    after.split_whitespace().next().map(str::to_owned)
}

#[test]
fn top_ui_in_tmux_drains_enables_sorts_and_quits() -> Result<()> {
    let backends = [Backend::start(false)?, Backend::start(false)?];
    let mut addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    addrs.sort();
    let lb = SipLb::pool("top-tui", &addrs, None)?;
    let client = Sink::loopback()?;
    let (first, second) = (addrs[0].to_string(), addrs[1].to_string());

    // Under a shell that reports top's exit status on the screen: tmux
    // itself was seen leaving the exited top a zombie (pane not dead) for
    // seconds, so its `pane_dead_status` is not a reliable witness.
    let cmd = format!(
        "{} top --control {}; echo \"top exited: $?\"; sleep 600",
        sip_lb_tests::sip_lb_binary()?.display(),
        lb.control.addr
    );
    let tmux = Tmux::start("pt-top", 160, 45, &cmd)?;
    tmux.wait(Duration::from_secs(10), "both sections and both backends", |s| {
        s.contains("workers (per core)") && s.contains("backends (sort: address)") && s.contains(&second)
    })?;

    // Traffic (bounded: 20 per poll, at most 10 s) until the screen's
    // totals row shows it received per second.
    let mut cseq = 0u64;
    let screen = tmux.wait(Duration::from_secs(10), "a non-zero IN rate", |s| {
        cseq += 1;
        for i in 0..20 {
            let _ = client.send_to(client.request("MESSAGE", &format!("top-{i}"), cseq).bytes(), lb.addr);
        }
        s.lines().any(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            c.len() > 2 && c[1] == "all" && c[2].parse::<f64>().is_ok_and(|x| x > 0.0)
        })
    })?;
    ensure!(screen.contains("drops by reason") && screen.contains("shield"), "{screen}");
    // A sparkline has drawn a bar for the traffic.
    ensure!(screen.chars().any(|c| ('▁'..='█').contains(&c)), "no sparkline bar:\n{screen}");

    // The first backend (by address) is selected: drain it, then the second,
    // then enable the second again.
    tmux.keys(&["d"])?;
    lb.wait_state(addrs[0], "draining", Duration::from_secs(5))?;
    tmux.wait(Duration::from_secs(5), "the first backend draining", |s| {
        state_on(s, &first).as_deref() == Some("draining")
    })?;
    tmux.keys(&["Down", "d"])?;
    lb.wait_state(addrs[1], "draining", Duration::from_secs(5))?;
    tmux.keys(&["e"])?;
    lb.wait_state(addrs[1], "up", Duration::from_secs(5))?;
    ensure!(lb.state_of(addrs[0])? == "draining", "enable touched the other backend");
    tmux.wait(Duration::from_secs(5), "the second backend up again", |s| {
        state_on(s, &second).as_deref() == Some("up")
    })?;

    // `s` cycles the order: by request rate, then by state (draining first).
    tmux.keys(&["s"])?;
    tmux.wait(Duration::from_secs(5), "sort by req/s", |s| s.contains("backends (sort: req/s)"))?;
    tmux.keys(&["s"])?;
    let s = tmux.wait(Duration::from_secs(5), "sort by state", |s| s.contains("backends (sort: state)"))?;
    let (p0, p1) = (s.find(&first), s.find(&second));
    ensure!(p0.is_some() && p0 < p1, "the draining backend is not listed first:\n{s}");

    // `q` ends it with status 0 and leaves the alternate screen.
    tmux.keys(&["q"])?;
    let after = tmux.wait(Duration::from_secs(10), "top's exit status", |s| s.contains("top exited: "))?;
    let status = after.split("top exited: ").nth(1).and_then(|t| t.split_whitespace().next()).unwrap_or("?");
    ensure!(status == "0", "top exited with {status}:\n{after}");
    ensure!(!after.contains("workers (per core)"), "the UI is still on the screen after q:\n{after}");

    // Scripts: `--once` is the text table, whatever stdout is.
    let out = lb.cli(&["top", "--once"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ensure!(text.contains("UNACCT") && text.contains("DROPS") && text.contains(&first), "{text}");
    Ok(())
}
