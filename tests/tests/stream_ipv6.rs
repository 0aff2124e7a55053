//! IPv6 end to end on stream listeners (issue 13): `tcp:[::1]:P` and `tls:[::1]:P` beside a UDP
//! listener on `[::1]`. A request over TCP or TLS on IPv6 reaches a UDP backend on `::1` and
//! its response comes back on the connection; our Via, Record-Route and Path name the
//! bracketed address, and the far end's BYE along the Record-Route and a call along the Path
//! reach the client's connection. A `tcp` pool's backend on `::1` is reached over its link.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::certs::make_certs;
use sip_lb_tests::lb::{Launch, SipLb};
use sip_lb_tests::ports::{free_tcp_addr, free_tcp_addr_on, free_udp_addr_on};
use sip_lb_tests::process::scratch_dir;
use sip_lb_tests::sink::Sink;
use sip_lb_tests::sip::{header, headers, response_to, SipRequest};
use sip_lb_tests::stream::{tls_connect, StreamClient};

const WITHIN: Duration = Duration::from_secs(5);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

struct Setup {
    lb: SipLb,
    udp: SocketAddr,
    tcp: SocketAddr,
    tls: SocketAddr,
    ca: PathBuf,
    backend: Sink,
}

/// sip-lb listening on `[::1]` over UDP, TCP and TLS, one UDP backend on `[::1]`.
fn start(label: &str) -> Result<Setup> {
    let dir = scratch_dir(label)?;
    let (ca, cert, key) = make_certs(&dir)?;
    let backend = Sink::bind((V6, 0))?;
    let (udp, tcp, tls) = (free_udp_addr_on(V6)?, free_tcp_addr_on(V6)?, free_tcp_addr_on(V6)?);
    let control = free_tcp_addr()?;
    let text = format!(
        "listen = [\"{udp}\", \"tcp:{tcp}\", \"tls:{tls}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[[pool]]\nname = \"farm\"\nbackends = [\"{}\"]\n",
        cert.display(),
        key.display(),
        backend.addr()
    );
    let lb = Launch::config(label, &text, &[udp], control).start()?;
    Ok(Setup { lb, udp, tcp, tls, ca, backend })
}

/// A request as a client at `via` over `transport` sends it.
fn request(method: &str, transport: &str, via: SocketAddr, call_id: &str) -> String {
    SipRequest::new(method, via, call_id).build().replacen("SIP/2.0/UDP", &format!("SIP/2.0/{transport}"), 1)
}

/// A request from the backend's side along `route` (our Record-Route or Path) to the client.
fn from_far_end(method: &str, backend: SocketAddr, client: SocketAddr, route: &str, call_id: &str) -> String {
    format!(
        "{method} sip:alice@{client};transport=tcp SIP/2.0\r\nVia: SIP/2.0/UDP {backend};branch=z9hG4bK-far-{call_id}\r\n\
         Route: {route}\r\nMax-Forwards: 70\r\nFrom: Bob <sip:bob@example.com>;tag=be\r\n\
         To: Alice <sip:alice@example.com>;tag=a1\r\nCall-ID: {call_id}\r\nCSeq: 7 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The client sends `req`; the backend gets it with our Via naming `[::1]`, answers, and the
/// answer comes back on the connection. Returns the request as the backend saw it.
fn round_trip<S: Read + Write>(s: &Setup, c: &mut StreamClient<S>, req: &str) -> Result<String> {
    c.send(req.as_bytes())?;
    let (got, from) = s.backend.recv_text(WITHIN).with_context(|| s.lb.child.stderr_tail(20))?;
    ensure!(from.is_ipv6(), "forwarded over IPv6: from {from}");
    let via = headers(&got, "Via")[0].to_owned();
    ensure!(via.starts_with(&format!("SIP/2.0/UDP {};branch=", s.udp)), "our Via names [::1]: {via}");
    ensure!(via.contains(";slb-flow="), "with the flow token: {via}");
    s.backend.send_to(response_to(&got).as_bytes(), s.udp)?;
    let resp = c.read_message(WITHIN).context("the response on the client's connection")?;
    ensure!(resp.starts_with("SIP/2.0 200 OK\r\n"), "{resp}");
    ensure!(header(&resp, "Call-ID") == header(req, "Call-ID") && !resp.contains("slb-flow"), "{resp}");
    Ok(got)
}

/// The backend sends `req` to sip-lb; it reaches the client `c`, whose 200 gets back to the
/// backend.
fn reaches_client<S: Read + Write>(s: &Setup, c: &mut StreamClient<S>, req: &str) -> Result<()> {
    s.backend.send_to(req.as_bytes(), s.udp)?;
    let got = c.read_message(WITHIN).with_context(|| format!("{req} should reach the client's connection"))?;
    ensure!(got.split_whitespace().next() == req.split_whitespace().next(), "{got}");
    ensure!(header(&got, "Route").is_none(), "our Route is removed: {got}");
    if got.starts_with("INVITE ") {
        // Our route for the dialog, one value per side (RFC 5658): on top the one this client
        // reaches (its listener, over its transport), below the farm's (the UDP listener).
        let rrs = headers(&got, "Record-Route");
        ensure!(rrs.len() >= 2, "{got}");
        ensure!(rrs[0].starts_with("<sip:[::1]:") && rrs[0].contains(";transport=t"), "{got}");
        ensure!(rrs[1].starts_with(&format!("<sip:{};lr;slb;slb-flow=", s.udp)), "{got}");
    }
    c.send(response_to(&got).as_bytes())?;
    let (ok, _) = s.backend.recv_text(WITHIN).context("the client's 200 back at the backend")?;
    ensure!(ok.starts_with("SIP/2.0 200 OK\r\n") && headers(&ok, "Via").len() == 1, "{ok}");
    Ok(())
}

#[test]
fn tcp_over_ipv6_a_call_and_the_far_ends_bye_along_the_record_route() -> Result<()> {
    let s = start("stream_ipv6_tcp")?;
    let mut c = StreamClient::connect(s.tcp)?;
    let me = c.local_addr();
    ensure!(me.is_ipv6());
    let invite = round_trip(&s, &mut c, &request("INVITE", "TCP", me, "v6-call"))?;
    let rr = header(&invite, "Record-Route").context("Record-Route on an INVITE from a connection")?;
    ensure!(rr.starts_with(&format!("<sip:{};lr;slb;slb-flow=", s.udp)), "Record-Route names [::1]: {rr}");
    reaches_client(&s, &mut c, &from_far_end("BYE", s.backend.addr(), me, &rr, "v6-call"))
}

#[test]
fn tls_over_ipv6_a_registration_with_path_and_a_call_along_it() -> Result<()> {
    let s = start("stream_ipv6_tls")?;
    let mut c = tls_connect(s.tls, &s.ca, WITHIN)?;
    let me = c.stream.sock.local_addr()?;
    ensure!(me.is_ipv6());
    let reg =
        request("REGISTER", "TLS", me, "v6-reg").replacen("Content-Length:", "Supported: path\r\nContent-Length:", 1);
    let fwd = round_trip(&s, &mut c, &reg)?;
    let path = header(&fwd, "Path").context("Path on a REGISTER that supports it")?;
    ensure!(path.starts_with(&format!("<sip:{};lr;slb;slb-flow=", s.udp)), "Path names [::1]: {path}");
    reaches_client(&s, &mut c, &from_far_end("INVITE", s.backend.addr(), me, &path, "v6-later-call"))
}

#[test]
fn a_tcp_backend_on_ipv6_is_reached_over_its_link() -> Result<()> {
    let (udp, control) = (free_udp_addr_on(V6)?, free_tcp_addr()?);
    let listener = std::net::TcpListener::bind((V6, 0))?;
    let backend = listener.local_addr()?;
    let text = format!(
        "listen = [\"{udp}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n\
         [[pool]]\nname = \"farm\"\ntransport = \"tcp\"\nbackends = [\"{backend}\"]\n"
    );
    let lb = Launch::config("stream_ipv6_link", &text, &[udp], control).start()?;
    let mut conn = StreamClient::accept(&listener, WITHIN)?;
    let client = std::net::UdpSocket::bind((V6, 0))?;
    let me = client.local_addr()?;
    client.send_to(&SipRequest::new("INVITE", me, "v6-link").bytes(), udp)?;
    let got = conn.read_message(WITHIN).with_context(|| lb.child.stderr_tail(20))?;
    let via = headers(&got, "Via")[0].to_owned();
    ensure!(via.starts_with(&format!("SIP/2.0/TCP {udp};branch=")), "our Via names [::1] and TCP: {via}");
    conn.send(response_to(&got).as_bytes())?;
    let mut buf = [0u8; 4096];
    client.set_read_timeout(Some(WITHIN))?;
    let (n, from) = client.recv_from(&mut buf).context("the response by datagram")?;
    let resp = String::from_utf8_lossy(&buf[..n]);
    ensure!(from == udp && resp.starts_with("SIP/2.0 200 OK\r\n") && resp.contains("Call-ID: v6-link"), "{resp}");
    Ok(())
}
