//! SIP over TCP through the real binary (issue 13): framing (RFC 3261 §18.3), the CRLF
//! keep-alive (RFC 5626 §4.4.1), connection limits, and responses from UDP backends routed
//! back to the client's own connection by the flow token in our Via.
//!
//! Needs the `sip-lb` binary (`cargo build -p sip-lb`), like every test of this crate.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::{Launch, SipLb};
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addr};
use sip_lb_tests::sink::{Backend, Sink};
use sip_lb_tests::sip::{header, headers, response_to, SipRequest};
use sip_lb_tests::stream::StreamClient;

const WITHIN: Duration = Duration::from_secs(5);

/// sip-lb with a UDP and a TCP listener, two workers and a pool of `backends`; `tcp` is the
/// body of a `[tcp]` section.
fn start(label: &str, backends: &[SocketAddr], tcp: &str) -> Result<(SipLb, SocketAddr)> {
    let (udp, stream, control) = (free_udp_addr()?, free_tcp_addr()?, free_tcp_addr()?);
    let list: Vec<String> = backends.iter().map(|a| format!("\"{a}\"")).collect();
    let text = format!(
        "listen = [\"{udp}\", \"tcp:{stream}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n\
         [security]\nsecret = \"tcp transport test secret\"\n\n[tcp]\n{tcp}\n\n\
         [[pool]]\nname = \"farm\"\nbackends = [{}]\n",
        list.join(", ")
    );
    let lb = Launch::config(label, &text, &[udp], control).start()?;
    Ok((lb, stream))
}

/// A request as a TCP client at `via` sends it.
fn tcp_request(method: &str, via: SocketAddr, call_id: &str, cseq: u64) -> String {
    SipRequest::new(method, via, call_id).cseq(cseq).build().replacen("SIP/2.0/UDP", "SIP/2.0/TCP", 1)
}

fn metric(lb: &SipLb, name: &str, label: (&str, &str)) -> Result<u64> {
    Ok(lb.control.metrics()?.sum(name, &[label]).unwrap_or(0.0) as u64)
}

fn wait_metric(lb: &SipLb, name: &str, label: (&str, &str), want: u64) -> Result<()> {
    lb.control
        .wait_metrics(WITHIN, &format!("{name}{{{}={}}} == {want}", label.0, label.1), |m| {
            m.sum(name, &[label]).unwrap_or(0.0) as u64 == want
        })
        .map(|_| ())
}

#[test]
fn tcp_responses_come_back_on_the_clients_connection_and_calls_spread_by_call_id() -> Result<()> {
    let (a, b) = (Backend::start(true)?, Backend::start(true)?);
    let (lb, tcp) = start("tcp_responses", &[a.addr, b.addr], "")?;
    let mut c = StreamClient::connect(tcp)?;
    let me = c.local_addr();
    let calls = 40;
    for i in 0..calls {
        // Two requests of each call, pipelined on the one connection.
        let cid = format!("tcp-call-{i}@client");
        c.send(tcp_request("INVITE", me, &cid, 1).as_bytes())?;
        c.send(tcp_request("BYE", me, &cid, 2).as_bytes())?;
    }
    let mut answered = std::collections::BTreeMap::new();
    for _ in 0..2 * calls {
        let r = c.read_message(WITHIN).with_context(|| lb.child.stderr_tail(20))?;
        ensure!(r.starts_with("SIP/2.0 200 OK\r\n"), "not a 200: {r}");
        let vias = headers(&r, "Via");
        // Our Via (and its flow token) is gone; the client's is on top, stamped.
        ensure!(vias.len() == 1 && vias[0].starts_with(&format!("SIP/2.0/TCP {me}")), "Vias: {vias:?}");
        ensure!(
            vias[0].contains(&format!("received={}", me.ip())) && vias[0].contains(&format!("rport={}", me.port()))
        );
        ensure!(!r.contains("slb-flow"), "flow token leaked: {r}");
        *answered.entry(header(&r, "Call-ID").unwrap_or_default()).or_insert(0) += 1;
    }
    ensure!(answered.len() == calls && answered.values().all(|&n| n == 2), "answers per call: {answered:?}");
    // One connection, both backends: the Call-ID picks, and both requests of a call meet.
    let (sa, sb) = (a.seen(), b.seen());
    ensure!(!sa.is_empty() && !sb.is_empty(), "a got {}, b got {}", sa.len(), sb.len());
    for s in &sa {
        ensure!(!sb.iter().any(|t| t.call_id == s.call_id), "{} reached both backends", s.call_id);
    }
    wait_metric(&lb, "sip_lb_tcp_messages_total", ("outcome", "response_delivered"), 2 * calls as u64)?;
    ensure!(metric(&lb, "sip_lb_tcp_messages_total", ("outcome", "request_forwarded"))? == 2 * calls as u64);
    Ok(())
}

#[test]
fn tcp_crlf_ping_gets_one_crlf_and_the_connection_goes_on() -> Result<()> {
    let a = Backend::start(true)?;
    let (lb, tcp) = start("tcp_ping", &[a.addr], "")?;
    let mut c = StreamClient::connect(tcp)?;
    c.send(b"\r\n\r\n")?;
    ensure!(c.read_bytes(2, WITHIN)? == b"\r\n");
    // A lone CRLF (a pong) is skipped, and the next byte is the 200's, not another CRLF.
    let me = c.local_addr();
    let mut bytes = b"\r\n".to_vec();
    bytes.extend_from_slice(tcp_request("OPTIONS", me, "ping@client", 1).as_bytes());
    c.send(&bytes)?;
    let r = c.read_message(WITHIN)?;
    ensure!(r.starts_with("SIP/2.0 200 OK\r\n"), "{r:?}");
    wait_metric(&lb, "sip_lb_tcp_frames_total", ("kind", "ping"), 1)
}

#[test]
fn tcp_missing_content_length_gets_400_and_keeps_the_connection_if_framing_is_known() -> Result<()> {
    let a = Backend::start(true)?;
    let (lb, tcp) = start("tcp_no_length", &[a.addr], "")?;
    let mut c = StreamClient::connect(tcp)?;
    let me = c.local_addr();
    let without = tcp_request("INVITE", me, "nolen@client", 1).replace("Content-Length: 0\r\n", "");
    c.send(without.as_bytes())?;
    let r = c.read_message(WITHIN)?;
    ensure!(
        r.starts_with("SIP/2.0 400 Bad Request\r\n") && header(&r, "Call-ID").as_deref() == Some("nolen@client"),
        "{r}"
    );
    // No body, so the next message starts right after: the connection stays.
    c.send(tcp_request("INVITE", me, "after@client", 1).as_bytes())?;
    let r = c.read_message(WITHIN)?;
    ensure!(r.starts_with("SIP/2.0 200 OK\r\n") && header(&r, "Call-ID").as_deref() == Some("after@client"), "{r}");
    let seen: Vec<String> = a.seen().into_iter().map(|s| s.call_id).collect();
    ensure!(seen == ["after@client"], "only the framed request is forwarded: {seen:?}");
    // A body of unknown length: 400, then the connection is closed.
    let with_body = SipRequest::new("MESSAGE", me, "nolen-body@client")
        .body("text/plain", "hello")
        .build()
        .replacen("SIP/2.0/UDP", "SIP/2.0/TCP", 1)
        .replace("Content-Length: 5\r\n", "");
    c.send(with_body.as_bytes())?;
    let r = c.read_message(WITHIN)?;
    ensure!(r.starts_with("SIP/2.0 400 Bad Request\r\n"), "{r}");
    c.wait_closed(WITHIN)?;
    wait_metric(&lb, "sip_lb_tcp_frames_total", ("kind", "no_content_length"), 1)?;
    wait_metric(&lb, "sip_lb_tcp_frames_total", ("kind", "no_length_with_body"), 1)
}

#[test]
fn tcp_oversized_message_is_refused_with_513_and_closed() -> Result<()> {
    let a = Backend::start(true)?;
    let (lb, tcp) = start("tcp_oversized", &[a.addr], "max_message_bytes = 1024")?;
    let mut c = StreamClient::connect(tcp)?;
    let me = c.local_addr();
    let big = SipRequest::new("MESSAGE", me, "big@client").body("text/plain", &"x".repeat(2000)).build().replacen(
        "SIP/2.0/UDP",
        "SIP/2.0/TCP",
        1,
    );
    c.send(big.as_bytes())?;
    let r = c.read_message(WITHIN)?;
    ensure!(r.starts_with("SIP/2.0 513 Message Too Large\r\n"), "{r}");
    c.wait_closed(WITHIN)?;
    // A head that never ends: closed without an answer once past the limit.
    let mut c = StreamClient::connect(tcp)?;
    c.send(format!("OPTIONS sip:a@b SIP/2.0\r\nX-Pad: {}\r\n", "y".repeat(1100)).as_bytes())?;
    c.wait_closed(WITHIN)?;
    ensure!(a.count() == 0);
    wait_metric(&lb, "sip_lb_tcp_frames_total", ("kind", "too_large"), 2)
}

#[test]
fn tcp_connection_limit_and_idle_timeout_are_enforced_and_counted() -> Result<()> {
    let a = Backend::start(true)?;
    let (lb, tcp) = start("tcp_limits", &[a.addr], "max_connections = 2\nidle_timeout_ms = 1500")?;
    let mut one = StreamClient::connect(tcp)?;
    let mut two = StreamClient::connect(tcp)?;
    for c in [&mut one, &mut two] {
        c.send(b"\r\n\r\n")?;
        ensure!(c.read_bytes(2, WITHIN)? == b"\r\n");
    }
    let mut three = StreamClient::connect(tcp)?;
    three.wait_closed(WITHIN).context("the third connection should be closed")?;
    wait_metric(&lb, "sip_lb_tcp_connections_total", ("event", "refused_max_connections"), 1)?;
    // Closing one frees its slot for the next.
    drop(one);
    lb.control
        .wait_metrics(WITHIN, "one connection open", |m| m.sum("sip_lb_tcp_connections_open", &[]) == Some(1.0))?;
    let mut four = StreamClient::connect(tcp)?;
    four.send(b"\r\n\r\n")?;
    ensure!(four.read_bytes(2, WITHIN)? == b"\r\n");
    // Silent connections are closed after the idle timeout.
    two.wait_closed(WITHIN)?;
    four.wait_closed(WITHIN)?;
    wait_metric(&lb, "sip_lb_tcp_connections_total", ("event", "closed_idle"), 2)
}

#[test]
fn tcp_response_for_a_gone_connection_or_a_forged_token_is_dropped_and_counted() -> Result<()> {
    let backend = Sink::loopback()?;
    let (lb, tcp) = start("tcp_gone", &[backend.addr()], "")?;
    let mut c = StreamClient::connect(tcp)?;
    let me = c.local_addr();
    c.send(tcp_request("INVITE", me, "gone@client", 1).as_bytes())?;
    let (fwd, _) = backend.recv_text(WITHIN).context("the INVITE should be forwarded")?;
    ensure!(headers(&fwd, "Via")[0].contains(";slb-flow="), "no flow token in our Via: {fwd}");
    let udp = lb.addr;
    // A forged token (one hex digit changed; the branch MAC still verifies).
    let ok = response_to(&fwd);
    let at = ok.find("slb-flow=").context("token")? + "slb-flow=".len();
    let mut forged = ok.clone().into_bytes();
    forged[at] = if forged[at] == b'0' { b'1' } else { b'0' };
    backend.send_to(&forged, udp)?;
    wait_metric(&lb, "sip_lb_tcp_messages_total", ("outcome", "response_flow_forged"), 1)?;
    // The client leaves before the answer.
    drop(c);
    lb.control
        .wait_metrics(WITHIN, "no connection open", |m| m.sum("sip_lb_tcp_connections_open", &[]) == Some(0.0))?;
    backend.send_to(ok.as_bytes(), udp)?;
    wait_metric(&lb, "sip_lb_tcp_messages_total", ("outcome", "response_flow_gone"), 1)?;
    ensure!(metric(&lb, "sip_lb_tcp_messages_total", ("outcome", "response_delivered"))? == 0);
    Ok(())
}

#[test]
fn tcp_listener_leaves_udp_clients_answered_over_udp() -> Result<()> {
    let a = Backend::start(true)?;
    let (lb, _tcp) = start("tcp_udp_too", &[a.addr], "")?;
    let client = Sink::loopback()?;
    client.send_to(SipRequest::new("INVITE", client.addr(), "udp@client").bytes(), lb.addr)?;
    let (r, from) = client.recv_text(WITHIN).context("the UDP client's answer")?;
    ensure!(r.starts_with("SIP/2.0 200 OK\r\n") && from == lb.addr, "{r} from {from}");
    ensure!(metric(&lb, "sip_lb_tcp_messages_total", ("outcome", "response_delivered"))? == 0);
    Ok(())
}

#[test]
fn tcp_far_end_request_follows_the_record_route_to_the_clients_connection() -> Result<()> {
    let backend = Sink::loopback()?;
    let (lb, tcp) = start("tcp_record_route", &[backend.addr()], "")?;
    let mut c = StreamClient::connect(tcp)?;
    let me = c.local_addr();
    c.send(tcp_request("INVITE", me, "rr@client", 1).as_bytes())?;
    let (invite, _) = backend.recv_text(WITHIN).context("the INVITE should be forwarded")?;
    let rr = header(&invite, "Record-Route").context("no Record-Route on a dialog-creating request")?;
    ensure!(rr.contains(&format!("<sip:{};lr;slb;slb-flow=", lb.addr)), "Record-Route {rr}");
    // RFC 5658: below it, the value the client reaches: its listener, over TCP.
    let rrs = headers(&invite, "Record-Route");
    ensure!(rrs.len() == 2 && rrs[1].starts_with(&format!("<sip:{tcp};transport=tcp;lr;slb;slb-flow=")), "{rrs:?}");
    // The callee hangs up: its BYE goes to our Record-Route (now its Route), over UDP.
    let bye = format!(
        "BYE sip:alice@{me};transport=tcp SIP/2.0\r\nVia: SIP/2.0/UDP {b};branch=z9hG4bK-bye-1\r\n\
         Route: {rr}\r\nMax-Forwards: 70\r\nFrom: Bob <sip:bob@example.com>;tag=be\r\n\
         To: Alice <sip:alice@example.com>;tag=a1\r\nCall-ID: rr@client\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        b = backend.addr()
    );
    backend.send_to(bye.as_bytes(), lb.addr)?;
    let got = c.read_message(WITHIN).context("the BYE should reach the client on its connection")?;
    ensure!(got.starts_with("BYE sip:alice@"), "{got}");
    ensure!(!got.contains("Route:"), "our Route must be removed: {got}");
    let vias = headers(&got, "Via");
    ensure!(vias.len() == 2 && vias[1].starts_with(&format!("SIP/2.0/UDP {}", backend.addr())), "Vias {vias:?}");
    // The client's 200 goes back over the connection and on to the callee over UDP.
    c.send(response_to(&got).as_bytes())?;
    let (ok, _) = backend.recv_text(WITHIN).context("the 200 for the BYE should reach the callee")?;
    ensure!(ok.starts_with("SIP/2.0 200 OK\r\n") && header(&ok, "CSeq").as_deref() == Some("1 BYE"), "{ok}");
    ensure!(headers(&ok, "Via").len() == 1, "our Via must be removed: {ok}");
    // A forged token in the Route is not followed.
    let forged = bye.replacen("slb-flow=", "slb-flow=f", 1).replacen("z9hG4bK-bye-1", "z9hG4bK-bye-2", 1);
    backend.send_to(forged.as_bytes(), lb.addr)?;
    wait_metric(&lb, "sip_lb_tcp_messages_total", ("outcome", "request_to_client_flow_forged"), 1)?;
    ensure!(metric(&lb, "sip_lb_tcp_messages_total", ("outcome", "request_to_client_delivered"))? == 1);
    let (forbidden, _) = backend.recv_text(WITHIN).context("403 for the forged token")?;
    ensure!(forbidden.starts_with("SIP/2.0 403 Forbidden\r\n"), "{forbidden}");
    // The client's own request in the dialog, by its route set (the two values reversed),
    // over its connection: both of ours are removed and it goes on to the farm.
    let own = tcp_request("INFO", me, "rr@client", 2).replacen(
        "Content-Length:",
        &format!("Route: {}, {}\r\nContent-Length:", rrs[1], rrs[0]),
        1,
    );
    c.send(own.as_bytes())?;
    let (info, _) = backend.recv_text(WITHIN).context("the client's INFO should reach the backend")?;
    ensure!(info.starts_with("INFO ") && header(&info, "Route").is_none(), "{info}");
    Ok(())
}

#[test]
fn tcp_register_gets_a_path_that_leads_a_later_invite_to_the_connection() -> Result<()> {
    let registrar = Sink::loopback()?;
    let (lb, tcp) = start("tcp_path", &[registrar.addr()], "")?;
    let mut c = StreamClient::connect(tcp)?;
    let me = c.local_addr();
    // Without `Supported: path`, no Path (RFC 3327 §5.1).
    c.send(tcp_request("REGISTER", me, "reg-plain@client", 1).as_bytes())?;
    let (plain, _) = registrar.recv_text(WITHIN).context("REGISTER forwarded")?;
    ensure!(header(&plain, "Path").is_none(), "{plain}");
    let reg = tcp_request("REGISTER", me, "reg@client", 1).replacen(
        "Content-Length:",
        "Supported: path\r\nContent-Length:",
        1,
    );
    c.send(reg.as_bytes())?;
    let (fwd, _) = registrar.recv_text(WITHIN).context("REGISTER forwarded")?;
    let path = header(&fwd, "Path").context("no Path on a REGISTER that supports it")?;
    ensure!(path.contains(&format!("<sip:{};lr;slb;slb-flow=", lb.addr)), "Path {path}");
    // Later, a call to the registered UA: a new Call-ID, the Path as its Route.
    let invite = format!(
        "INVITE sip:alice@{me};transport=tcp SIP/2.0\r\nVia: SIP/2.0/UDP {r};branch=z9hG4bK-inv-1\r\n\
         Route: {path}\r\nMax-Forwards: 70\r\nFrom: Bob <sip:bob@example.com>;tag=be\r\n\
         To: Alice <sip:alice@example.com>\r\nCall-ID: later-call@bob\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        r = registrar.addr()
    );
    registrar.send_to(invite.as_bytes(), lb.addr)?;
    let got = c.read_message(WITHIN).context("the INVITE should reach the UA on its connection")?;
    ensure!(
        got.starts_with("INVITE sip:alice@") && header(&got, "Call-ID").as_deref() == Some("later-call@bob"),
        "{got}"
    );
    wait_metric(&lb, "sip_lb_tcp_messages_total", ("outcome", "request_to_client_delivered"), 1)
}

#[test]
fn tcp_per_ip_limit_refuses_the_next_connection_from_that_address() -> Result<()> {
    let a = Backend::start(true)?;
    let (lb, tcp) = start("tcp_per_ip", &[a.addr], "max_per_ip = 1")?;
    let mut one = StreamClient::connect(tcp)?;
    one.send(b"\r\n\r\n")?;
    let pong = one.read_bytes(2, WITHIN);
    if !matches!(pong.as_deref(), Ok(b"\r\n")) {
        // Seen once in CI (closed at once, cause unknown): say what sip-lb counted.
        let events: Vec<_> = ["accepted", "refused_max_per_ip", "refused_max", "closed", "closed_idle"]
            .iter()
            .map(|e| format!("{e}={:?}", metric(&lb, "sip_lb_tcp_connections_total", ("event", e)).ok()))
            .collect();
        anyhow::bail!("the first connection's ping: {pong:?}; {}", events.join(" "));
    }
    let mut two = StreamClient::connect(tcp)?;
    two.wait_closed(WITHIN).context("a second connection from 127.0.0.1 should be closed")?;
    wait_metric(&lb, "sip_lb_tcp_connections_total", ("event", "refused_max_per_ip"), 1)?;
    // The first one is unaffected.
    one.send(b"\r\n\r\n")?;
    ensure!(one.read_bytes(2, WITHIN)? == b"\r\n");
    Ok(())
}
