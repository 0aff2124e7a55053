//! Mobility end to end (issue 13), in namespaces (`sip_lb_tests::edge`): a UA on a client
//! network the farm cannot route to registers through sip-lb with Kamailio as its home
//! registrar and proxy (`HomeProxy`: Path stored and used, Record-Route); calls placed to it
//! from the farm (Kamailio's `lookup` turns our Path into the Route) reach it through sip-lb.
//! - Over UDP (its Contact a private address), SIPp in the farm calls it twice: the in-dialog
//!   ACK and BYE of each side travel through sip-lb to the right flow (the caller hangs up
//!   the first call, the UA the second).
//! - Over UDP, the other cases: a call it turns down (486) and Kamailio's hop-by-hop ACK for
//!   it; its own calls to a user of the farm, where the BYE of each side (the callee's first,
//!   its own second) follows our Record-Route.
//! - Over TLS (the kit's rustls client): the call arrives on its connection, and so do the
//!   caller's ACK and BYE (our Record-Route names the connection); once that connection has
//!   closed, the next call gets 430 Flow Failed; a Route whose token was tampered with gets
//!   403.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use sip_lb_tests::anycast::within;
use sip_lb_tests::certs::make_certs_for;
use sip_lb_tests::edge::{client_ip, farm_ip, Edge, VIP};
use sip_lb_tests::lab::kamailio::HomeProxy;
use sip_lb_tests::lb::{Launch, SipLb};
use sip_lb_tests::ports::free_tcp_addr;
use sip_lb_tests::process::scratch_dir;
use sip_lb_tests::sink::Sink;
use sip_lb_tests::sip::{header, header_lines, headers, SDP};
use sip_lb_tests::sipp::{ensure_sipp, Scenario, Uac, UacOptions};
use sip_lb_tests::stream::tls_connect;

const WITHIN: Duration = Duration::from_secs(5);
/// The home domain of the UAs.
const DOMAIN: &str = "farm.example";

fn lb_udp() -> SocketAddr {
    SocketAddr::from((VIP, 5060))
}

fn lb_tls() -> SocketAddr {
    SocketAddr::from((VIP, 5061))
}

fn home() -> SocketAddr {
    SocketAddr::from((farm_ip(0), 5060))
}

/// sip-lb in the balancer namespace (the calling thread must be in it): UDP on the VIP, TLS
/// too when `tls` has (certificate, key); Path and Record-Route on; the home proxy the farm.
fn start_lb(label: &str, tls: Option<(&Path, &Path)>) -> Result<SipLb> {
    let control = free_tcp_addr()?;
    let (udp, listen_tls, tls_section) = match tls {
        Some((cert, key)) => (
            lb_udp(),
            format!(", \"tls:{}\"", lb_tls()),
            format!("\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), key.display()),
        ),
        None => (lb_udp(), String::new(), String::new()),
    };
    let text = format!(
        "listen = [\"{udp}\"{listen_tls}]\nworkers = 2\nmetrics = \"{control}\"\n\
         path = \"supported\"\nrecord_route = \"on\"\n{tls_section}\n\
         [[pool]]\nname = \"farm\"\nbackends = [\"{}\"]\n",
        home()
    );
    Launch::config(label, &text, &[udp], control).start()
}

/// A Via branch for a Call-ID (a token: no `@`).
fn branch(call_id: &str) -> String {
    let tag: String = call_id.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("z9hG4bK-{tag}")
}

/// A REGISTER for `user` from a UA at `me` over `transport`, saying it supports Path.
fn register(transport: &str, me: SocketAddr, user: &str, call_id: &str) -> String {
    let param = if transport == "TLS" { ";transport=tls" } else { "" };
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/{transport} {me};rport;branch={}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=r1\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@{me}{param}>\r\nExpires: 600\r\n\
         Supported: path\r\nContent-Length: 0\r\n\r\n",
        branch(call_id)
    )
}

/// An INVITE for `user` at the home proxy from a caller in the farm at `from`, with `route`
/// as its Route if any.
fn invite(from: SocketAddr, user: &str, call_id: &str, route: Option<&str>) -> String {
    let route = route.map(|r| format!("Route: {r}\r\n")).unwrap_or_default();
    format!(
        "INVITE sip:{user}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch={}\r\n{route}\
         Max-Forwards: 70\r\nFrom: <sip:caller@{DOMAIN}>;tag=c1\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{from}>\r\nContent-Length: 0\r\n\r\n",
        branch(call_id)
    )
}

/// The UA's 200 OK to `invite`: its Vias and Record-Routes, a To tag, our Contact, an SDP
/// answer.
fn answer(invite: &str, contact: &str) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "Record-Route", "From", "Call-ID", "CSeq"] {
        for line in header_lines(invite, name) {
            out += line;
            out += "\r\n";
        }
    }
    for line in header_lines(invite, "To") {
        out += &format!("{line};tag=ua\r\n");
    }
    out + &format!(
        "Contact: <{contact}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

/// A 200 OK to an in-dialog request (its To already has a tag).
fn ok(request: &str) -> String {
    response(request, "200 OK", None)
}

/// A response without a body: the request's Vias, From, To (with `to_tag` added if given),
/// Call-ID and CSeq.
fn response(request: &str, status: &str, to_tag: Option<&str>) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for line in header_lines(request, name) {
            out += line;
            if let (Some(tag), "To") = (to_tag, name) {
                out += &format!(";tag={tag}");
            }
            out += "\r\n";
        }
    }
    out + "Content-Length: 0\r\n\r\n"
}

/// The callee's BYE in the dialog `invite` created: to the caller's Contact along the
/// recorded route (in the order the INVITE had it, RFC 3261 §12.1.1).
fn callee_bye(invite: &str, me: SocketAddr) -> Result<String> {
    let contact = header(invite, "Contact").context("the INVITE's Contact")?;
    let target = contact.trim_start_matches('<').split('>').next().unwrap_or_default().to_owned();
    let routes: Vec<&str> = headers(invite, "Record-Route");
    ensure!(!routes.is_empty(), "the INVITE was not record-routed:\n{invite}");
    let from = header(invite, "To").context("To")?;
    let to = header(invite, "From").context("From")?;
    let call_id = header(invite, "Call-ID").context("Call-ID")?;
    Ok(format!(
        "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};rport;branch=z9hG4bK-ua-bye\r\nRoute: {}\r\n\
         Max-Forwards: 70\r\nFrom: {from};tag=ua\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 BYE\r\n\
         Content-Length: 0\r\n\r\n",
        routes.join(", ")
    ))
}

/// The caller's in-dialog `method` in the dialog its INVITE's `answered` 200 confirmed: to
/// the callee's Contact along the recorded route, reversed (RFC 3261 §12.1.2).
fn caller_request(method: &str, answered: &str, me: SocketAddr, cseq: u32) -> Result<String> {
    let contact = header(answered, "Contact").context("the 200's Contact")?;
    let target = contact.trim_start_matches('<').split('>').next().unwrap_or_default().to_owned();
    let mut routes: Vec<&str> = headers(answered, "Record-Route");
    ensure!(!routes.is_empty(), "the dialog was not record-routed:\n{answered}");
    routes.reverse();
    let (from, to) = (header(answered, "From").context("From")?, header(answered, "To").context("To")?);
    let call_id = header(answered, "Call-ID").context("Call-ID")?;
    Ok(format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};rport;branch=z9hG4bK-{}-{cseq}\r\nRoute: {}\r\n\
         Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        method.to_ascii_lowercase(),
        routes.join(", ")
    ))
}

/// The next message at `ua` that starts with `start` (a method or a status line),
/// skipping retransmissions and provisional responses; with where it came from.
fn expect(ua: &Sink, start: &str, what: &str) -> Result<(String, SocketAddr)> {
    let mut skipped = Vec::new();
    loop {
        let Some((text, from)) = ua.recv_text(WITHIN) else {
            bail!("no {what} ({start}...) within {WITHIN:?}; skipped meanwhile: {skipped:#?}");
        };
        if text.starts_with(start) {
            return Ok((text, from));
        }
        skipped.push(text);
    }
}

/// The next final response at a caller's socket, skipping provisional ones.
fn final_response(caller: &Sink, what: &str) -> Result<String> {
    let (text, _) = expect_final(caller).with_context(|| what.to_owned())?;
    Ok(text)
}

fn expect_final(sink: &Sink) -> Result<(String, SocketAddr)> {
    let mut skipped = Vec::new();
    loop {
        let Some((text, from)) = sink.recv_text(WITHIN) else {
            bail!("no final response within {WITHIN:?}; got meanwhile: {skipped:#?}");
        };
        if text.starts_with("SIP/2.0 1") {
            skipped.push(text);
            continue;
        }
        return Ok((text, from));
    }
}

fn metric(lb: &SipLb, name: &str, label: (&str, &str)) -> Result<u64> {
    Ok(lb.control.metrics()?.sum(name, &[label]).unwrap_or(0.0) as u64)
}

/// Checks that the farm cannot reach the UAs' network: only sip-lb can bring anything back.
fn farm_is_cut_off(edge: &Edge) -> Result<()> {
    ensure!(!edge.farm_routes_to(client_ip(0).into()), "the farm namespace has a route to the client network");
    Ok(())
}

#[test]
fn a_ua_registered_over_udp_gets_calls_from_the_farm_and_each_side_hangs_up_through_sip_lb() -> Result<()> {
    ensure_sipp()?;
    let edge = Edge::new("mo", 1, 2)?;
    within(edge.lb.name(), || udp_calls(&edge))
}

fn udp_calls(edge: &Edge) -> Result<()> {
    farm_is_cut_off(edge)?;
    let dir = scratch_dir("mobility_udp")?;
    let mut proxy = HomeProxy::start(&edge.farm, home(), &dir)?;
    let _lb = start_lb("mobility_udp", None)?;
    let me = SocketAddr::from((client_ip(0), 5062));
    let ua = within(edge.client.name(), || Sink::bind(me))?;

    ua.send_to(register("UDP", me, "alice", "reg-udp@ua"), lb_udp())?;
    let (ok_reg, from) = expect(&ua, "SIP/2.0 ", "the REGISTER's response")?;
    ensure!(ok_reg.starts_with("SIP/2.0 200 ") && from == lb_udp(), "from {from}:\n{ok_reg}");
    proxy.wait_logged("REGISTER", 1, WITHIN)?;
    let stored = proxy.log_lines("REGISTER").join("\n");
    ensure!(
        stored.contains(&format!("path=<sip:{};lr;slb;", lb_udp())),
        "the registrar stored no Path of ours:\n{stored}"
    );
    let path = header(&ok_reg, "Path").context("the 200 returns the stored Path (Supported: path)")?;

    let contact = format!("sip:alice@{me}");
    let caller_at = SocketAddr::from((farm_ip(1), 5070));
    for (call, scenario) in [(1, "uac_call_routed.xml"), (2, "uac_call_routed_callee_bye.xml")] {
        let mut opts = UacOptions::new(&format!("caller{call}"), Scenario::file(scenario), home());
        opts.local = caller_at;
        opts.calls = 1;
        opts.rate = 1.0;
        opts.timeout = Duration::from_secs(10);
        opts.extra = vec!["-s".into(), "alice".into()];
        let uac = within(edge.farm.name(), || Uac::start(opts, &dir))?;
        let (inv, from) = expect(&ua, "INVITE ", &format!("call {call}'s INVITE"))?;
        ensure!(from == lb_udp(), "call {call}: the INVITE came from {from}, not through sip-lb");
        ensure!(inv.starts_with(&format!("INVITE {contact} SIP/2.0")), "call {call}: {inv}");
        ensure!(!inv.contains(path.trim_matches(['<', '>'])), "call {call}: our Path is still a Route:\n{inv}");
        // Our Record-Route on top, naming the UA's address: the caller's ACK and BYE come back.
        let ours = format!("<sip:{};lr;slb;slb-addr=", lb_udp());
        ensure!(headers(&inv, "Record-Route").first().is_some_and(|r| r.starts_with(&ours)), "call {call}:\n{inv}");
        ua.send_to(answer(&inv, &contact), lb_udp())?;
        let (ack, from) = expect(&ua, "ACK ", &format!("call {call}'s ACK"))?;
        ensure!(from == lb_udp(), "call {call}: the ACK came from {from}:\n{ack}");
        if call == 1 {
            let (bye, from) = expect(&ua, "BYE ", "the caller's BYE")?;
            ensure!(from == lb_udp(), "the caller's BYE came from {from}:\n{bye}");
            ua.send_to(ok(&bye), lb_udp())?;
        } else {
            ua.send_to(callee_bye(&inv, me)?, lb_udp())?;
            let (r, _) = expect(&ua, "SIP/2.0 ", "the 200 to the UA's BYE")?;
            ensure!(r.starts_with("SIP/2.0 200 ") && r.contains("CSeq: 1 BYE"), "{r}");
        }
        let report = uac.wait()?;
        ensure!(
            report.successful() == 1 && report.failed() == 0,
            "call {call}: {report}\n{}\nKamailio:\n{}",
            report.errors_head(10),
            proxy.stderr_tail(20)
        );
    }
    proxy.wait_logged("LOOKUP", 2, WITHIN)?;
    // ACK and BYE of call 1, ACK and BYE of call 2.
    proxy.wait_logged("IN-DIALOG", 4, WITHIN)?;
    Ok(())
}

#[test]
fn a_ua_on_udp_turns_a_call_down_and_its_own_calls_follow_our_record_route() -> Result<()> {
    let edge = Edge::new("mo", 1, 2)?;
    within(edge.lb.name(), || udp_ua_calls(&edge))
}

fn udp_ua_calls(edge: &Edge) -> Result<()> {
    farm_is_cut_off(edge)?;
    let dir = scratch_dir("mobility_udp_out")?;
    let mut proxy = HomeProxy::start(&edge.farm, home(), &dir)?;
    let _lb = start_lb("mobility_udp_out", None)?;
    let me = SocketAddr::from((client_ip(0), 5062));
    let ua = within(edge.client.name(), || Sink::bind(me))?;
    // Carol is a user of the farm, registered straight with Kamailio.
    let carol_at = SocketAddr::from((farm_ip(1), 5080));
    let carol = within(edge.farm.name(), || Sink::bind(carol_at))?;
    carol.send_to(register("UDP", carol_at, "carol", "reg-carol@farm"), home())?;
    let (registered, _) = expect(&carol, "SIP/2.0 ", "carol's registration")?;
    ensure!(registered.starts_with("SIP/2.0 200 "), "{registered}");

    // The UA registers through sip-lb: Kamailio keeps our Path, which names its address.
    ua.send_to(register("UDP", me, "alice", "reg-udp@ua"), lb_udp())?;
    let (ok_reg, from) = expect(&ua, "SIP/2.0 ", "the UA's registration")?;
    ensure!(ok_reg.starts_with("SIP/2.0 200 ") && from == lb_udp(), "from {from}:\n{ok_reg}");
    proxy.wait_logged("REGISTER", 2, WITHIN)?;
    let stored = proxy.log_lines("REGISTER").join("\n");
    ensure!(stored.contains(&format!("path=<sip:{};lr;slb;slb-addr=", lb_udp())), "no Path of ours stored:\n{stored}");

    // Carol calls it: Kamailio's lookup sends the INVITE along our Path; the UA is busy, its
    // 486 goes back by the Vias, and Kamailio's ACK for it follows the same Route to the UA.
    carol.send_to(invite(carol_at, "alice", "in-1@farm", None), home())?;
    let (inv, from) = expect(&ua, "INVITE ", "carol's INVITE at the UA")?;
    ensure!(from == lb_udp() && inv.starts_with(&format!("INVITE sip:alice@{me} SIP/2.0")), "from {from}:\n{inv}");
    ensure!(!headers(&inv, "Route").iter().any(|r| r.contains(";slb")), "our Path left as a Route:\n{inv}");
    ua.send_to(response(&inv, "486 Busy Here", Some("ua")), lb_udp())?;
    let busy = final_response(&carol, "the UA's 486 at carol")?;
    ensure!(busy.starts_with("SIP/2.0 486 ") && busy.contains("in-1@farm"), "{busy}");
    let (ack, from) = expect(&ua, "ACK ", "Kamailio's ACK for the 486 at the UA")?;
    ensure!(from == lb_udp() && ack.contains("in-1@farm"), "from {from}:\n{ack}");

    for call in [1, 2] {
        let call_id = format!("out-{call}@ua");
        ua.send_to(invite(me, "carol", &call_id, None), lb_udp())?;
        let (inv, _) = expect(&carol, "INVITE ", &format!("call {call}'s INVITE at carol"))?;
        // Kamailio's Record-Route on top of ours, which names the UA's address.
        let rrs = headers(&inv, "Record-Route");
        ensure!(
            rrs.len() == 2
                && rrs[0].starts_with(&format!("<sip:{};lr", farm_ip(0)))
                && rrs[1].starts_with(&format!("<sip:{};lr;slb;slb-addr=", lb_udp())),
            "call {call}: {inv}"
        );
        // Responses follow the Vias: Kamailio, sip-lb, the UA.
        carol.send_to(answer(&inv, &format!("sip:carol@{carol_at}")), home())?;
        let (answered, from) = expect(&ua, "SIP/2.0 200 ", &format!("call {call}'s 200 at the UA"))?;
        ensure!(from == lb_udp(), "call {call}: the 200 came from {from}");
        ua.send_to(caller_request("ACK", &answered, me, 1)?, lb_udp())?;
        expect(&carol, "ACK ", &format!("call {call}'s ACK at carol"))?;
        if call == 1 {
            // Carol hangs up: Kamailio, then our route, which leads to the UA's address.
            carol.send_to(callee_bye(&inv, carol_at)?, home())?;
            let (bye, from) = expect(&ua, "BYE ", "carol's BYE at the UA")?;
            ensure!(from == lb_udp(), "carol's BYE came from {from}:\n{bye}");
            ua.send_to(ok(&bye), lb_udp())?;
            let (r, _) = expect(&carol, "SIP/2.0 ", "the UA's 200 to carol's BYE")?;
            ensure!(r.starts_with("SIP/2.0 200 ") && r.contains("CSeq: 1 BYE"), "{r}");
        } else {
            // The UA hangs up: our route (taken off), then Kamailio's, to carol.
            ua.send_to(caller_request("BYE", &answered, me, 2)?, lb_udp())?;
            let (bye, _) = expect(&carol, "BYE ", "the UA's BYE at carol")?;
            ensure!(!headers(&bye, "Route").iter().any(|r| r.contains(";slb")), "our Route left in:\n{bye}");
            carol.send_to(ok(&bye), home())?;
            let (r, _) = expect(&ua, "SIP/2.0 ", "carol's 200 to the UA's BYE")?;
            ensure!(r.starts_with("SIP/2.0 200 ") && r.contains("CSeq: 2 BYE"), "{r}");
        }
    }
    // Per call out: the ACK and one BYE, loose-routed by Kamailio.
    proxy.wait_logged("IN-DIALOG", 4, WITHIN)?;
    proxy.wait_logged("LOOKUP", 3, WITHIN)?;
    Ok(())
}

#[test]
fn a_ua_registered_over_tls_gets_calls_and_their_byes_on_its_connection_then_430_once_closed_and_403_if_tampered(
) -> Result<()> {
    let edge = Edge::new("mo", 1, 2)?;
    within(edge.lb.name(), || tls_flow(&edge))
}

fn tls_flow(edge: &Edge) -> Result<()> {
    farm_is_cut_off(edge)?;
    let dir = scratch_dir("mobility_tls")?;
    let (ca, cert, key) = make_certs_for(&dir, VIP.into())?;
    let mut proxy = HomeProxy::start(&edge.farm, home(), &dir)?;
    let lb = start_lb("mobility_tls", Some((&cert, &key)))?;

    let mut ua = within(edge.client.name(), || tls_connect(lb_tls(), &ca, WITHIN))?;
    let me = ua.stream.sock.local_addr()?;
    ensure!(me.ip() == std::net::IpAddr::from(client_ip(0)), "the UA's address {me}");
    ua.send(register("TLS", me, "alice", "reg-tls@ua").as_bytes())?;
    let ok_reg = ua.read_message(WITHIN).context("the REGISTER's response on the connection")?;
    ensure!(ok_reg.starts_with("SIP/2.0 200 "), "{ok_reg}");
    let path = header(&ok_reg, "Path").context("the 200 returns the stored Path (Supported: path)")?;
    ensure!(path.starts_with(&format!("<sip:{};lr;slb;slb-flow=", lb_udp())), "Path {path}");
    proxy.wait_logged("REGISTER", 1, WITHIN)?;

    let caller = within(edge.farm.name(), || Sink::bind((farm_ip(1), 5070)))?;
    // A call from the farm: Kamailio's lookup sends it along our Path to the connection.
    caller.send_to(invite(caller.addr(), "alice", "call-1@farm", None), home())?;
    let inv = ua
        .read_message(WITHIN)
        .with_context(|| format!("the INVITE on the UA's connection; Kamailio:\n{}", proxy.stderr_tail(20)))?;
    ensure!(inv.starts_with(&format!("INVITE sip:alice@{me};transport=tls SIP/2.0\r\n")), "{inv}");
    ensure!(header(&inv, "Call-ID").as_deref() == Some("call-1@farm"), "{inv}");
    ensure!(!headers(&inv, "Route").iter().any(|r| r.contains(";slb")), "our Route left in:\n{inv}");
    ensure!(
        headers(&inv, "Record-Route").iter().any(|r| r.starts_with(&format!("<sip:{};lr", farm_ip(0)))),
        "Kamailio's Record-Route:\n{inv}"
    );
    // The UA answers on its connection; the 200 goes back through sip-lb and Kamailio.
    let contact = format!("sip:alice@{me};transport=tls");
    ua.send(answer(&inv, &contact).as_bytes())?;
    let answered = final_response(&caller, "the UA's 200 at the caller")?;
    ensure!(answered.starts_with("SIP/2.0 200 ") && answered.contains(&contact), "{answered}");
    // The caller's ACK and BYE follow the recorded route: Kamailio, then ours, which names
    // the connection; the UA's 200 to the BYE goes back through sip-lb and Kamailio.
    caller.send_to(caller_request("ACK", &answered, caller.addr(), 1)?, home())?;
    let ack = ua.read_message(WITHIN).context("the caller's ACK on the UA's connection")?;
    ensure!(ack.starts_with("ACK ") && ack.contains("call-1@farm"), "{ack}");
    caller.send_to(caller_request("BYE", &answered, caller.addr(), 2)?, home())?;
    let bye = ua.read_message(WITHIN).context("the caller's BYE on the UA's connection")?;
    ensure!(bye.starts_with("BYE ") && bye.contains("call-1@farm"), "{bye}");
    ua.send(ok(&bye).as_bytes())?;
    let bye_ok = final_response(&caller, "the UA's 200 to the BYE at the caller")?;
    ensure!(bye_ok.starts_with("SIP/2.0 200 ") && bye_ok.contains("CSeq: 2 BYE"), "{bye_ok}");

    // A Route whose token was tampered with: 403 from sip-lb, nothing on the connection.
    let at = path.find("slb-flow=").context("token")? + "slb-flow=".len();
    let mut tampered = path.clone().into_bytes();
    tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered)?;
    caller.send_to(invite(caller.addr(), "alice", "call-2@farm", Some(&tampered)), lb_udp())?;
    let forbidden = final_response(&caller, "a 403 for the tampered Route")?;
    ensure!(forbidden.starts_with("SIP/2.0 403 Forbidden\r\n") && forbidden.contains("call-2@farm"), "{forbidden}");

    // The UA's connection closes: the next call along its Path gets 430, relayed by Kamailio.
    drop(ua);
    lb.control
        .wait_metrics(WITHIN, "no connection open", |m| m.sum("sip_lb_tcp_connections_open", &[]) == Some(0.0))?;
    caller.send_to(invite(caller.addr(), "alice", "call-3@farm", None), home())?;
    let failed = final_response(&caller, "a 430 for the closed flow, through Kamailio")?;
    ensure!(failed.starts_with("SIP/2.0 430 Flow Failed\r\n") && failed.contains("call-3@farm"), "{failed}");
    proxy.wait_logged("LOOKUP", 2, WITHIN)?;

    ensure!(metric(&lb, "sip_lb_worker_replies_total", ("code", "403"))? == 1, "one 403 counted");
    ensure!(metric(&lb, "sip_lb_worker_replies_total", ("code", "430"))? == 1, "one 430 counted");
    let outcome = |o| metric(&lb, "sip_lb_tcp_messages_total", ("outcome", o));
    ensure!(outcome("request_to_client_delivered")? == 3, "the INVITE, ACK and BYE delivered to the connection");
    // Gone: the INVITE, and maybe already Kamailio's ACK for the 430 (dropped, never answered).
    ensure!(
        outcome("request_to_client_flow_forged")? == 1 && outcome("request_to_client_flow_gone")? >= 1,
        "forged and gone"
    );
    Ok(())
}
