//! `path = "require"` (issue 13, RFC 3327 §5.1): a REGISTER from a connection whose UA does
//! not list `path` in Supported is answered 421 Extension Required with `Require: path`, a
//! stateless reply on its connection, counted as one; one that supports Path is forwarded
//! with our Path.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::Launch;
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addr};
use sip_lb_tests::sink::Sink;
use sip_lb_tests::sip::{header, SipRequest};
use sip_lb_tests::stream::StreamClient;

const WITHIN: Duration = Duration::from_secs(5);

#[test]
fn a_register_without_path_support_gets_421_where_path_is_required() -> Result<()> {
    let registrar = Sink::loopback()?;
    let (udp, tcp, control) = (free_udp_addr()?, free_tcp_addr()?, free_tcp_addr()?);
    let text = format!(
        "listen = [\"{udp}\", \"tcp:{tcp}\"]\nworkers = 2\nmetrics = \"{control}\"\npath = \"require\"\n\n\
         [[pool]]\nname = \"farm\"\nbackends = [\"{}\"]\n",
        registrar.addr()
    );
    let lb = Launch::config("path_require", &text, &[udp], control).start()?;
    let mut c = StreamClient::connect(tcp)?;
    let me = c.local_addr();
    let register =
        |call_id: &str| SipRequest::new("REGISTER", me, call_id).build().replacen("SIP/2.0/UDP", "SIP/2.0/TCP", 1);

    c.send(register("plain@ua").as_bytes())?;
    let reply = c.read_message(WITHIN).context("a 421 on the connection")?;
    ensure!(reply.starts_with("SIP/2.0 421 Extension Required\r\n"), "{reply}");
    ensure!(header(&reply, "Require").as_deref() == Some("path"), "{reply}");
    ensure!(header(&reply, "Call-ID").as_deref() == Some("plain@ua"), "{reply}");

    let with_path = register("path@ua").replacen("Content-Length:", "Supported: path\r\nContent-Length:", 1);
    c.send(with_path.as_bytes())?;
    let (fwd, _) = registrar.recv_text(WITHIN).context("the REGISTER that supports Path is forwarded")?;
    ensure!(header(&fwd, "Call-ID").as_deref() == Some("path@ua"), "only that one reached the registrar: {fwd}");
    ensure!(header(&fwd, "Path").is_some_and(|p| p.contains(";lr;slb;slb-flow=")), "{fwd}");

    let m = lb.control.metrics()?;
    let replies = m.sum("sip_lb_tcp_messages_total", &[("outcome", "reply")]).unwrap_or(0.0);
    ensure!(replies == 1.0, "the 421 counts as a stateless reply: {replies}");
    Ok(())
}
