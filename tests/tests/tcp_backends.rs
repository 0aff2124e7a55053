//! Backends reached over TCP (issue 13): a pool with `transport = "tcp"` keeps one
//! persistent connection per backend, every request goes over it with our Via saying TCP,
//! and the backend's responses come back on it; a `large_over_tcp` UDP pool sends only
//! requests over `large_request_bytes` (RFC 3261 §18.1.1) over TCP; a backend whose
//! connection cannot be made is down for the router until it can.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::Launch;
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addr, free_udp_addrs};
use sip_lb_tests::process::scratch_dir;
use sip_lb_tests::sip::{header, response_to, SipRequest};
use sip_lb_tests::sipp::{calls_spread_whole, ensure_sipp, run_uac, Scenario, UacOptions, Uas};
use sip_lb_tests::stream::StreamClient;

const WAIT: Duration = Duration::from_secs(5);

/// Waits until `n` backend connections were made (`sip_lb_backend_links{event="connected"}`).
fn wait_connected(lb: &sip_lb_tests::lb::SipLb, n: f64) -> Result<()> {
    lb.control.wait_metrics(WAIT, "backend connections made", |m| {
        m.sum("sip_lb_backend_links_total", &[("event", "connected")]).unwrap_or(0.0) >= n
    })?;
    Ok(())
}

fn recv_text(s: &UdpSocket) -> Result<String> {
    let mut buf = vec![0u8; 65_536];
    s.set_read_timeout(Some(WAIT))?;
    let (n, _) = s.recv_from(&mut buf).context("no datagram")?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn sipp_over_tcp_through_sip_lb_to_tcp_backends() -> Result<()> {
    const CALLS: u64 = 100;
    ensure_sipp()?;
    let dir = scratch_dir("tcp_backends_sipp")?;
    let udp = free_udp_addr()?;
    let (tcp, control, b1_addr, b2_addr) = (free_tcp_addr()?, free_tcp_addr()?, free_tcp_addr()?, free_tcp_addr()?);
    let b1 = Uas::start_tcp("backend1", b1_addr, &Scenario::uas_call(), &dir)?;
    let b2 = Uas::start_tcp("backend2", b2_addr, &Scenario::uas_call(), &dir)?;
    let config = format!(
        "listen = [\"{udp}\", \"tcp:{tcp}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n\
         [[pool]]\nname = \"farm\"\ntransport = \"tcp\"\nbackends = [\"{b1_addr}\", \"{b2_addr}\"]\n"
    );
    let lb = Launch::config("tcp_backends_sipp", &config, &[udp], control).start()?;
    wait_connected(&lb, 2.0)?;

    let mut opts = UacOptions::new("uac", Scenario::uac_call(), tcp);
    opts.calls = CALLS;
    opts.rate = 100.0;
    opts.transport = Some("t1".into());
    let report = run_uac(opts, &dir)?;
    let ctx = || {
        format!(
            "UAC: {report}\n{}\nsip-lb: {}\nlogs: {}",
            report.errors_head(10),
            lb.child.stderr_tail(20),
            dir.display()
        )
    };
    ensure!(
        report.successful() == CALLS && report.failed() == 0 && report.exit_code() == Some(0),
        "expected {CALLS} successful calls; {}",
        ctx()
    );
    let (l1, l2) = (b1.received()?, b2.received()?);
    calls_spread_whole(CALLS, &[("backend1", &l1), ("backend2", &l2)], ctx)?;
    // Our Via told the backends to answer on the connection.
    let id = l1.call_ids().into_iter().next().context("backend1 has calls")?.to_owned();
    let invite = b1.full_messages(&id)?.into_iter().find(|m| m.contains("INVITE sip:")).context("INVITE logged")?;
    ensure!(invite.contains("Via: SIP/2.0/TCP"), "our Via should say TCP: {invite}");
    let m = lb.control.metrics().context("metrics")?;
    let links = m.by("sip_lb_backend_links_total", "event");
    ensure!(links.get("connected") == Some(&2), "one connection per backend, kept: {links:?}");
    ensure!(links.get("lost").copied().unwrap_or(0) == 0 && links.get("dropped_down").copied().unwrap_or(0) == 0);
    // INVITE, ACK and BYE per call went over the links; every response came back on them.
    ensure!(links.get("sent").copied().unwrap_or(0) >= 3 * CALLS, "{links:?}");
    ensure!(links.get("received").copied().unwrap_or(0) >= 4 * CALLS, "{links:?}");
    Ok(())
}

#[test]
fn an_oversized_udp_request_reaches_a_tcp_capable_backend_over_tcp() -> Result<()> {
    let [udp, client_addr]: [SocketAddr; 2] = free_udp_addrs(2)?.try_into().map_err(|_| anyhow::anyhow!("ports"))?;
    let control = free_tcp_addr()?;
    // The backend listens on UDP and TCP at the same address, as SIP servers do.
    let backend_udp = UdpSocket::bind("127.0.0.1:0")?;
    let backend = backend_udp.local_addr()?;
    let backend_tcp = TcpListener::bind(backend)?;
    let config = format!(
        "listen = [\"{udp}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n\
         [[pool]]\nname = \"farm\"\nlarge_over_tcp = true\nbackends = [\"{backend}\"]\n"
    );
    let lb = Launch::config("tcp_backends_large", &config, &[udp], control).start()?;
    let mut conn = StreamClient::accept(&backend_tcp, WAIT)?;
    wait_connected(&lb, 1.0)?;
    let client = UdpSocket::bind(client_addr)?;

    // Small: a datagram, as always.
    let small = SipRequest::new("INVITE", client_addr, "small-1").sdp();
    client.send_to(&small.bytes(), udp)?;
    let got = recv_text(&backend_udp)?;
    ensure!(got.contains("Call-ID: small-1") && got.starts_with("INVITE "), "{got}");
    ensure!(got.contains("Via: SIP/2.0/UDP"), "{got}");

    // Large: over the connection, our Via saying TCP; the answer on the connection goes
    // back to the client by datagram.
    let large = SipRequest::new("INVITE", client_addr, "large-1").body("application/sdp", &"a=x\r\n".repeat(400));
    let bytes = large.bytes();
    ensure!(bytes.len() > 1300);
    client.send_to(&bytes, udp)?;
    let req = conn.read_message(WAIT)?;
    ensure!(req.contains("Call-ID: large-1") && req.starts_with("INVITE "), "{req}");
    let top_via = header(&req, "Via").context("Via")?;
    ensure!(top_via.starts_with("SIP/2.0/TCP "), "our Via should say TCP: {top_via}");
    ensure!(req.len() >= bytes.len(), "the whole request: {} of {} bytes", req.len(), bytes.len());
    conn.send(response_to(&req).as_bytes())?;
    let resp = recv_text(&client)?;
    ensure!(resp.starts_with("SIP/2.0 200 OK") && resp.contains("Call-ID: large-1"), "{resp}");
    ensure!(!resp.contains("SIP/2.0/TCP"), "our Via is removed: {resp}");

    let m = lb.control.metrics()?;
    let links = m.by("sip_lb_backend_links_total", "event");
    ensure!(links.get("sent") == Some(&1) && links.get("received") == Some(&1), "{links:?}");
    Ok(())
}

#[test]
fn a_backend_whose_connection_cannot_be_made_is_down_until_it_can() -> Result<()> {
    let udp = free_udp_addr()?;
    let control = free_tcp_addr()?;
    let up = TcpListener::bind("127.0.0.1:0")?;
    let up_addr = up.local_addr()?;
    // Nothing listens here yet.
    let gone_addr = free_tcp_addr()?;
    let config = format!(
        "listen = [\"{udp}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n\
         [[pool]]\nname = \"farm\"\ntransport = \"tcp\"\nbackends = [\"{up_addr}\", \"{gone_addr}\"]\n"
    );
    let lb = Launch::config("tcp_backends_down", &config, &[udp], control).start()?;
    let mut conn = StreamClient::accept(&up, WAIT)?;
    let took = lb.control.wait_state(gone_addr, "down", WAIT)?;
    ensure!(lb.control.backend(up_addr)?.state == "up");
    eprintln!("unreachable backend down after {took:?}");

    // Every Call-ID goes to the backend that is there.
    let client = UdpSocket::bind("127.0.0.1:0")?;
    for i in 0..20 {
        client.send_to(&SipRequest::new("OPTIONS", client.local_addr()?, &format!("down-{i}")).bytes(), udp)?;
    }
    for _ in 0..20 {
        let m = conn.read_message(WAIT)?;
        ensure!(m.starts_with("OPTIONS "), "{m}");
    }

    // It comes back once its connection can be made (backoff at most 5 s).
    let back = TcpListener::bind(gone_addr)?;
    let _conn2 = StreamClient::accept(&back, Duration::from_secs(10))?;
    let took = lb.control.wait_state(gone_addr, "up", WAIT)?;
    eprintln!("back up {took:?} after its connection was accepted");
    let m = lb.control.metrics()?;
    let links = m.by("sip_lb_backend_links_total", "event");
    ensure!(links.get("connect_failed").copied().unwrap_or(0) >= 1 && links.get("connected") == Some(&2), "{links:?}");
    Ok(())
}
