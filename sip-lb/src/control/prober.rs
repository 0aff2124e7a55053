//! The prober: the tokio task that drives [`super::probing`] (held in
//! [`Control`]). It owns what the machine may not: the probe sockets, one of
//! each address family and separate from the data plane's so answers never
//! reach the workers, and the clock. Each wake-up it sends the probes due,
//! then sleeps until the next deadline, an answer, or a reload.
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

use super::probe;
use super::Control;

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

/// Receives a datagram on whichever probe socket has one; its length in `buf`.
async fn recv_any(socks: &[ProbeSocket], buf: &mut [u8]) -> io::Result<usize> {
    poll_fn(|cx| {
        for p in socks {
            let mut rb = ReadBuf::new(buf);
            if let Poll::Ready(r) = p.sock.poll_recv_from(cx, &mut rb) {
                return Poll::Ready(r.map(|_from| rb.filled().len()));
            }
        }
        Poll::Pending
    })
    .await
}

pub async fn run(control: Arc<Control>) {
    let socks = bind_probe_sockets(&control).await;
    if socks.is_empty() {
        tracing::error!("health probes disabled: no probe socket could be bound");
        return;
    }
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(512);
    let mut due = Vec::new();

    loop {
        control.poll_probes(Instant::now(), &mut due);
        for p in due.drain(..) {
            // A socket of the backend's family (or the first, whose send then
            // fails and counts as a failed probe).
            let s = socks.iter().find(|s| s.via.is_ipv4() == p.backend.is_ipv4()).unwrap_or(&socks[0]);
            probe::build(&mut out, p.backend, s.via, p.token);
            if let Err(e) = s.sock.send_to(&out, p.backend).await {
                tracing::debug!(backend = %p.backend, "probe not sent: {e}");
                control.on_probe_send_failed(Instant::now(), p.token);
            }
        }
        let deadline = control.next_probe_deadline();
        tokio::select! {
            _ = sleep_until(deadline) => {}
            _ = control.probing_changed() => {}
            r = recv_any(&socks, &mut buf) => match r {
                Ok(n) => {
                    if let Some(reply) = probe::parse_reply(&buf[..n]) {
                        control.on_probe_reply(Instant::now(), reply);
                    }
                }
                Err(e) => tracing::debug!("probe socket: {e}"),
            },
        }
    }
}

/// Sleeps until `at`, or forever if there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
