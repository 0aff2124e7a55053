//! Requests for a client's flow that cannot be delivered (issue 13, RFC 5626 §5.2-5.3): a
//! UA registered over TLS with our Path closes its connection, and the next request the
//! farm sends along that Path gets 430 Flow Failed; a Route whose token was tampered with
//! gets 403. Both are stateless replies to the sender, counted with the others.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::certs::make_certs;
use sip_lb_tests::lb::{Launch, SipLb};
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addr};
use sip_lb_tests::process::scratch_dir;
use sip_lb_tests::sink::Sink;
use sip_lb_tests::sip::{header, SipRequest};
use sip_lb_tests::stream::tls_connect;

const WITHIN: Duration = Duration::from_secs(5);

fn replies(lb: &SipLb, code: &str) -> Result<u64> {
    Ok(lb.control.metrics()?.sum("sip_lb_worker_replies_total", &[("code", code)]).unwrap_or(0.0) as u64)
}

/// An INVITE from the farm (`from`) to the registered UA, routed by `route`.
fn invite(from: std::net::SocketAddr, route: &str, call_id: &str) -> String {
    let branch: String = call_id.chars().filter(char::is_ascii_alphanumeric).collect();
    format!(
        "INVITE sip:alice@10.99.0.7:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{branch}\r\n\
         Route: {route}\r\nMax-Forwards: 70\r\nFrom: Bob <sip:bob@example.com>;tag=be\r\n\
         To: Alice <sip:alice@example.com>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_request_for_a_closed_tls_flow_gets_430_and_a_tampered_token_403() -> Result<()> {
    let dir = scratch_dir("flow_failures_certs")?;
    let (ca, cert, key) = make_certs(&dir)?;
    let registrar = Sink::loopback()?;
    let (udp, tls, control) = (free_udp_addr()?, free_tcp_addr()?, free_tcp_addr()?);
    let text = format!(
        "listen = [\"{udp}\", \"tls:{tls}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[[pool]]\nname = \"farm\"\nbackends = [\"{}\"]\n",
        cert.display(),
        key.display(),
        registrar.addr()
    );
    let lb = Launch::config("flow_failures", &text, &[udp], control).start()?;

    // A UA behind NAT registers over TLS; its Contact is private.
    let mut ua = tls_connect(tls, &ca, WITHIN)?;
    let me = ua.stream.sock.local_addr()?;
    let register = SipRequest::new("REGISTER", me, "reg@ua").header("Supported", "path").build().replacen(
        "SIP/2.0/UDP",
        "SIP/2.0/TLS",
        1,
    );
    ua.send(register.as_bytes())?;
    let (fwd, _) = registrar.recv_text(WITHIN).context("the REGISTER reaches the registrar")?;
    let path = header(&fwd, "Path").context("our Path")?;

    // While the connection is open, a call along the Path reaches the UA.
    registrar.send_to(invite(registrar.addr(), &path, "call-1@farm").as_bytes(), lb.addr)?;
    let got = ua.read_message(WITHIN).with_context(|| {
        let m = lb.control.metrics().map(|m| m.text().to_owned()).unwrap_or_default();
        let at_registrar = registrar.recv_text(Duration::ZERO).map(|(t, _)| t);
        format!("the INVITE on the UA's connection; at the registrar instead: {at_registrar:?}\n{m}")
    })?;
    ensure!(header(&got, "Call-ID").as_deref() == Some("call-1@farm"), "{got}");

    // A tampered token: 403, nothing to the UA.
    let at = path.find("slb-flow=").context("token")? + "slb-flow=".len();
    let mut tampered = path.clone().into_bytes();
    tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered)?;
    registrar.send_to(invite(registrar.addr(), &tampered, "call-2@farm").as_bytes(), lb.addr)?;
    let (r403, _) = registrar.recv_text(WITHIN).context("a 403 for the tampered Route")?;
    ensure!(r403.starts_with("SIP/2.0 403 Forbidden\r\n") && r403.contains("call-2@farm"), "{r403}");

    // The UA's connection closes: the next request along its Path gets 430.
    drop(ua);
    lb.control
        .wait_metrics(WITHIN, "no connection open", |m| m.sum("sip_lb_tcp_connections_open", &[]) == Some(0.0))?;
    registrar.send_to(invite(registrar.addr(), &path, "call-3@farm").as_bytes(), lb.addr)?;
    let (r430, _) = registrar.recv_text(WITHIN).context("a 430 for the closed flow")?;
    ensure!(r430.starts_with("SIP/2.0 430 Flow Failed\r\n") && r430.contains("call-3@farm"), "{r430}");

    ensure!(replies(&lb, "403")? == 1 && replies(&lb, "430")? == 1, "counted as stateless replies");
    let m = lb.control.metrics()?;
    let forged = m.sum("sip_lb_tcp_messages_total", &[("outcome", "request_to_client_flow_forged")]).unwrap_or(0.0);
    let gone = m.sum("sip_lb_tcp_messages_total", &[("outcome", "request_to_client_flow_gone")]).unwrap_or(0.0);
    ensure!(forged == 1.0 && gone == 1.0, "forged {forged}, gone {gone}");
    Ok(())
}
