//! SIP over TLS through the real binary (issue 13): `openssl s_client` completes a handshake
//! and gets its CRLF keep-alive answered, a rustls client's INVITE is answered on its
//! connection by a UDP backend, and a connection that never starts its handshake is closed
//! after `handshake_timeout_ms`. The certificate is made for each run with `openssl req`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::certs::{make_certs, make_client_cert};
use sip_lb_tests::lb::{Launch, SipLb};
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addr};
use sip_lb_tests::sink::Backend;
use sip_lb_tests::sip::{header, SipRequest};
use sip_lb_tests::stream::{tls_connect, tls_connect_as, StreamClient};

const WITHIN: Duration = Duration::from_secs(5);

/// sip-lb with a UDP and a TLS listener and one backend; returns the TLS address and the
/// CA certificate clients must trust.
fn start(label: &str, backend: SocketAddr) -> Result<(SipLb, SocketAddr, PathBuf)> {
    // Generous: a real handshake on a loaded machine may take a while.
    start_with(label, backend, false, 10_000).map(|(lb, tls, ca, _)| (lb, tls, ca))
}

/// [`start`], optionally requiring client certificates (`client_ca`), with this
/// `handshake_timeout_ms`; also returns the directory with the certificates.
fn start_with(
    label: &str,
    backend: SocketAddr,
    client_ca: bool,
    handshake_ms: u64,
) -> Result<(SipLb, SocketAddr, PathBuf, PathBuf)> {
    let dir = sip_lb_tests::process::scratch_dir(&format!("{label}-cert"))?;
    let (ca, cert, key) = make_certs(&dir)?;
    let client_ca = if client_ca { format!("client_ca = \"{}\"\n", ca.display()) } else { String::new() };
    let (udp, tls, control) = (free_udp_addr()?, free_tcp_addr()?, free_tcp_addr()?);
    let text = format!(
        "listen = [\"{udp}\", \"tls:{tls}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n{client_ca}\n[tcp]\nhandshake_timeout_ms = {handshake_ms}\n\n\
         [[pool]]\nname = \"farm\"\nbackends = [\"{backend}\"]\n",
        cert.display(),
        key.display()
    );
    let lb = Launch::config(label, &text, &[udp], control).start()?;
    Ok((lb, tls, ca, dir))
}

/// `openssl s_client`, killed and reaped on drop.
struct SClient(Child);

impl Drop for SClient {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tls_openssl_s_client_handshakes_and_gets_its_crlf_ping_answered() -> Result<()> {
    let a = Backend::start(true)?;
    let (lb, tls, cert) = start("tls_s_client", a.addr)?;
    let mut s = SClient(
        Command::new("openssl")
            .args(["s_client", "-quiet", "-verify_return_error", "-connect", &tls.to_string()])
            .arg("-CAfile")
            .arg(&cert)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn openssl s_client")?,
    );
    let mut stdout = s.0.stdout.take().context("stdout")?;
    // Read on a thread so the wait has a deadline.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut b = [0u8; 64];
        while let Ok(n) = stdout.read(&mut b) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&b[..n]);
            if tx.send(got.clone()).is_err() {
                break;
            }
        }
    });
    s.0.stdin.as_mut().context("stdin")?.write_all(b"\r\n\r\n")?;
    let got = rx.recv_timeout(WITHIN).context("no answer to the CRLF ping over TLS")?;
    ensure!(got == b"\r\n", "answer {got:?}");
    lb.control
        .wait_metrics(WITHIN, "one ping", |m| m.sum("sip_lb_tcp_frames_total", &[("kind", "ping")]) == Some(1.0))?;
    Ok(())
}

#[test]
fn tls_rustls_client_invite_is_answered_on_its_connection() -> Result<()> {
    let a = Backend::start(true)?;
    let (lb, tls, cert) = start("tls_rustls", a.addr)?;
    let mut c = tls_connect(tls, &cert, WITHIN)?;
    let me = c.stream.sock.local_addr()?;
    let invite =
        SipRequest::new("INVITE", me, "tls-call@client").sdp().build().replacen("SIP/2.0/UDP", "SIP/2.0/TLS", 1);
    c.send(invite.as_bytes())?;
    let r = c.read_message(WITHIN).with_context(|| lb.child.stderr_tail(20))?;
    ensure!(r.starts_with("SIP/2.0 200 OK\r\n") && header(&r, "Call-ID").as_deref() == Some("tls-call@client"), "{r}");
    ensure!(header(&r, "Via").is_some_and(|v| v.starts_with(&format!("SIP/2.0/TLS {me}"))), "{r}");
    Ok(())
}

#[test]
fn tls_handshake_timeout_closes_a_silent_connection() -> Result<()> {
    let a = Backend::start(true)?;
    let (lb, tls, _, _) = start_with("tls_timeout", a.addr, false, 500)?;
    let mut c = StreamClient::over(TcpStream::connect(tls)?, |s: &TcpStream, d| s.set_read_timeout(Some(d)));
    c.wait_closed(WITHIN).context("sip-lb should close a connection without a handshake")?;
    lb.control.wait_metrics(WITHIN, "one handshake timeout", |m| {
        m.sum("sip_lb_tcp_connections_total", &[("event", "tls_handshake_timeout")]) == Some(1.0)
    })?;
    Ok(())
}

#[test]
fn tls_client_ca_admits_only_clients_with_a_certificate_it_signed() -> Result<()> {
    let a = Backend::start(true)?;
    let (lb, tls, ca, dir) = start_with("tls_client_ca", a.addr, true, 10_000)?;
    let (cert, key) = make_client_cert(&dir)?;
    let mut c = tls_connect_as(tls, &ca, Some((&cert, &key)), WITHIN)?;
    let me = c.stream.sock.local_addr()?;
    let invite = SipRequest::new("INVITE", me, "mtls@client").build().replacen("SIP/2.0/UDP", "SIP/2.0/TLS", 1);
    c.send(invite.as_bytes())?;
    let r = c.read_message(WITHIN)?;
    ensure!(r.starts_with("SIP/2.0 200 OK\r\n"), "{r}");
    // Without a certificate: the server refuses the handshake (TLS 1.3 lets the client
    // finish its side first, so the refusal may only show on the first read).
    let refused = match tls_connect(tls, &ca, WITHIN) {
        Err(_) => true,
        Ok(mut c) => c.send(b"\r\n\r\n").is_err() || c.read_bytes(2, WITHIN).is_err(),
    };
    ensure!(refused, "a client without a certificate was served");
    lb.control.wait_metrics(WITHIN, "one failed handshake", |m| {
        m.sum("sip_lb_tcp_connections_total", &[("event", "tls_handshake_failed")]) == Some(1.0)
    })?;
    Ok(())
}
