//! The prober: a tokio task that sends an OPTIONS to every backend each
//! `interval_ms`, matches answers by the token in their Via branch, turns
//! silence into timeouts after `timeout_ms`, and reports each outcome to
//! [`Control::on_probe`]. One UDP socket for all probes, separate from the
//! data plane's, so answers never reach the workers.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, MissedTickBehavior};

use super::health::Outcome;
use super::probe;
use super::Control;

struct Pending {
    backend: SocketAddr,
    sent: Instant,
}

/// A probe socket of one address family and the Via it writes.
struct ProbeSocket {
    sock: UdpSocket,
    via: SocketAddr,
}

async fn bind_probe_sockets(control: &Control) -> Vec<ProbeSocket> {
    let mut socks = Vec::new();
    for (bind, via) in control.probe_addrs() {
        match UdpSocket::bind(bind).await {
            Ok(sock) => {
                let via = SocketAddr::new(via.ip(), sock.local_addr().map_or(0, |a| a.port()));
                tracing::debug!(%via, "health prober socket");
                socks.push(ProbeSocket { sock, via });
            }
            Err(e) => tracing::error!("cannot bind a probe socket on {bind}: {e}"),
        }
    }
    socks
}

/// Receives on the probe socket `i`, or never if there is none.
async fn recv_on(socks: &[ProbeSocket], i: usize, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match socks.get(i) {
        Some(p) => p.sock.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

pub async fn run(control: Arc<Control>) {
    let socks = bind_probe_sockets(&control).await;
    if socks.is_empty() {
        tracing::error!("health probes disabled: no probe socket could be bound");
        return;
    }

    // Tokens start at a time-derived value so a restarted sip-lb does not
    // take a late answer to its predecessor's probe for its own.
    let mut token =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut cfg = control.health_config();
    let mut tick = interval(cfg.interval_ms);
    let mut buf = vec![0u8; 65_536];
    let mut buf2 = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(512);

    loop {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let next_deadline = pending.values().map(|p| p.sent + timeout).min();
        tokio::select! {
            _ = tick.tick() => {
                expire(&control, &mut pending, timeout);
                let now_cfg = control.health_config();
                if now_cfg.interval_ms != cfg.interval_ms {
                    tick = interval(now_cfg.interval_ms);
                }
                cfg = now_cfg;
                if !cfg.enabled {
                    pending.clear();
                    continue;
                }
                for backend in control.backend_addrs() {
                    token = token.wrapping_add(1);
                    // A socket of the backend's family (or the first, whose
                    // send then fails and counts as a failed probe).
                    let p = socks.iter().find(|p| p.via.is_ipv4() == backend.is_ipv4()).unwrap_or(&socks[0]);
                    probe::build(&mut out, backend, p.via, token);
                    match p.sock.send_to(&out, backend).await {
                        Ok(_) => { pending.insert(token, Pending { backend, sent: Instant::now() }); }
                        Err(e) => {
                            tracing::debug!(%backend, "probe not sent: {e}");
                            control.on_probe(backend, Outcome::SendFailed, None);
                        }
                    }
                }
            }
            r = recv_on(&socks, 0, &mut buf) => match r {
                Ok((n, _from)) => {
                    if let Some(reply) = probe::parse_reply(&buf[..n]) {
                        if let Some(p) = pending.remove(&reply.token) {
                            control.on_probe(p.backend, Outcome::Reply(reply.code), Some(p.sent.elapsed()));
                        }
                    }
                }
                Err(e) => tracing::debug!("probe socket: {e}"),
            },
            r = recv_on(&socks, 1, &mut buf2) => match r {
                Ok((n, _from)) => {
                    if let Some(reply) = probe::parse_reply(&buf2[..n]) {
                        if let Some(p) = pending.remove(&reply.token) {
                            control.on_probe(p.backend, Outcome::Reply(reply.code), Some(p.sent.elapsed()));
                        }
                    }
                }
                Err(e) => tracing::debug!("probe socket: {e}"),
            },
            _ = sleep_until(next_deadline), if next_deadline.is_some() => {
                expire(&control, &mut pending, timeout);
            }
        }
    }
}

fn interval(ms: u64) -> tokio::time::Interval {
    let mut t = tokio::time::interval(Duration::from_millis(ms.max(1)));
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Reports every probe older than `timeout` as timed out.
fn expire(control: &Control, pending: &mut HashMap<u64, Pending>, timeout: Duration) {
    let now = Instant::now();
    let late: Vec<u64> = pending.iter().filter(|(_, p)| now >= p.sent + timeout).map(|(t, _)| *t).collect();
    for t in late {
        if let Some(p) = pending.remove(&t) {
            control.on_probe(p.backend, Outcome::Timeout, None);
        }
    }
}
