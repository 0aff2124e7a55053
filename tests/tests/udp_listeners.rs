//! sip-lb with several listen addresses of both families, over real UDP on
//! loopback (issue 9, items 4, 5 and 6): each listen address advertises
//! itself; a response leaves from the address the client sent to; an IPv6
//! backend behind an IPv4 client is reached from the IPv6 socket; forged
//! responses are never relayed.
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::{Launch, SipLb};
use sip_lb_tests::ports::free_tcp_addr;

/// A socket bound to a free port of `ip`.
fn bind(ip: &str) -> Result<UdpSocket> {
    let s = UdpSocket::bind(format!("{ip}:0")).with_context(|| format!("bind {ip}:0"))?;
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(s)
}

/// A free port of `ip` (bound and released).
fn free(ip: &str) -> Result<SocketAddr> {
    Ok(bind(ip)?.local_addr()?)
}

fn recv(sock: &UdpSocket, within: Duration) -> Option<(String, SocketAddr)> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < deadline {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            return Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from));
        }
    }
    None
}

fn request(method: &str, client: SocketAddr, call_id: &str, max_forwards: u32) -> String {
    format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {client};rport;branch=z9hG4bK{call_id}\r\n\
         Max-Forwards: {max_forwards}\r\n\
         From: <sip:alice@example.com>;tag=1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         User-Agent: udp_listeners test client (long enough that a stateless reply is not larger)\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn header_lines<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    let head = msg.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .skip(1)
        .filter(|l| l.split(':').next().is_some_and(|n| n.trim().eq_ignore_ascii_case(name)))
        .collect()
}

/// What a UAS answers: status line, the Vias, From, To with a tag, Call-ID,
/// CSeq, sent to the top Via's sent-by (RFC 3261 §18.2.2 without rport).
fn answer(backend: &UdpSocket, req: &str) -> Result<SocketAddr> {
    let mut resp = "SIP/2.0 200 OK\r\n".to_owned();
    for name in ["Via", "From"] {
        for l in header_lines(req, name) {
            resp += &format!("{l}\r\n");
        }
    }
    resp += &format!("{};tag=uas\r\n", header_lines(req, "To")[0]);
    for name in ["Call-ID", "CSeq"] {
        resp += &format!("{}\r\n", header_lines(req, name)[0]);
    }
    resp += "Content-Length: 0\r\n\r\n";
    let top = header_lines(req, "Via")[0];
    let sent_by = top.split_whitespace().nth(2).unwrap_or("").split(';').next().unwrap_or("");
    let to: SocketAddr = sent_by.parse().with_context(|| format!("our Via sent-by {sent_by:?}"))?;
    backend.send_to(resp.as_bytes(), to)?;
    Ok(to)
}

struct Farm {
    lb: SipLb,
    /// Listen addresses: two IPv4 (127.0.0.1, 127.0.0.2) and one IPv6 (::1).
    a: SocketAddr,
    b: SocketAddr,
    v6: SocketAddr,
    /// REGISTER goes to the IPv4 registrar, everything else to the IPv6 proxy.
    registrar: UdpSocket,
    proxy6: UdpSocket,
}

impl Farm {
    /// sip-lb on three listen addresses, ready when its control API answers and all three
    /// ports are bound.
    fn start(name: &str) -> Result<Farm> {
        let (a, b, v6) = (free("127.0.0.1")?, free("127.0.0.2")?, free("[::1]")?);
        let (registrar, proxy6) = (bind("127.0.0.1")?, bind("[::1]")?);
        let ctl = free_tcp_addr()?;
        let text = format!(
            "listen = [\"{a}\", {{ addr = \"{b}\" }}, \"{v6}\"]\nworkers = 1\nmetrics = \"{ctl}\"\n\n\
             [[pool]]\nname = \"registrars\"\nmethods = [\"REGISTER\"]\nbackends = [\"{r}\"]\n\n\
             [[pool]]\nname = \"proxies\"\ndefault = true\nbackends = [\"{p}\"]\n",
            r = registrar.local_addr()?,
            p = proxy6.local_addr()?,
        );
        let lb = Launch::config(name, &text, &[a, b, v6], ctl).start()?;
        Ok(Farm { lb, a, b, v6, registrar, proxy6 })
    }

    /// Stops sip-lb and returns its drop counts by reason, summed over workers, from the
    /// shutdown summary.
    fn stop_and_drops(mut self) -> Result<Vec<(String, u64)>> {
        Ok(self.lb.stop()?.total.drop_reasons.into_iter().collect())
    }
}

/// Item 5: a client that sent to address B gets its response from B, and
/// the backend saw B in our Via; the same for A.
#[test]
fn each_listen_address_advertises_and_answers_from_itself() -> Result<()> {
    let farm = Farm::start("udp-listeners-symmetric")?;
    for (i, lb) in [farm.a, farm.b].into_iter().enumerate() {
        let client = bind("127.0.0.1")?;
        let call = format!("sym{i}");
        client.send_to(request("REGISTER", client.local_addr()?, &call, 70).as_bytes(), lb)?;
        let (req, from) = recv(&farm.registrar, Duration::from_secs(2))
            .with_context(|| format!("REGISTER sent to {lb} did not reach the registrar"))?;
        ensure!(from == lb, "forwarded from {from}, not from {lb} where it arrived");
        let ours = header_lines(&req, "Via")[0];
        ensure!(
            ours.starts_with(&format!("Via: SIP/2.0/UDP {lb};branch=z9hG4bKslb")),
            "our Via {ours:?} does not name {lb}"
        );
        ensure!(answer(&farm.registrar, &req)? == lb);
        let (resp, from) = recv(&client, Duration::from_secs(2)).context("no response at the client")?;
        ensure!(resp.starts_with("SIP/2.0 200 OK\r\n"), "{resp}");
        ensure!(from == lb, "the response came from {from}; the client sent to {lb} (RFC 3581 §4)");
        ensure!(header_lines(&resp, "Via").len() == 1, "our Via is removed: {resp}");
    }
    Ok(())
}

/// Item 4: an IPv4 client, an IPv6 backend. The request leaves from the
/// IPv6 socket with its Via; the response comes back there and leaves from
/// the IPv4 address the client sent to.
#[test]
fn ipv6_backend_behind_ipv4_client() -> Result<()> {
    let farm = Farm::start("udp-listeners-families")?;
    let client = bind("127.0.0.1")?;
    client.send_to(request("OPTIONS", client.local_addr()?, "fam1", 70).as_bytes(), farm.a)?;
    let (req, from) = recv(&farm.proxy6, Duration::from_secs(2)).context("OPTIONS did not reach the IPv6 backend")?;
    ensure!(from == farm.v6, "forwarded from {from}, not from the IPv6 listener {}", farm.v6);
    ensure!(header_lines(&req, "Via")[0].starts_with(&format!("Via: SIP/2.0/UDP {};branch=", farm.v6)));
    ensure!(answer(&farm.proxy6, &req)? == farm.v6);
    let (resp, from) = recv(&client, Duration::from_secs(2)).context("no response at the IPv4 client")?;
    ensure!(resp.starts_with("SIP/2.0 200 OK\r\n"));
    ensure!(from == farm.a, "response from {from}, the client sent to {}", farm.a);
    let drops = farm.stop_and_drops()?;
    ensure!(drops.iter().all(|(r, _)| r != "no_listener_for_family"), "{drops:?}");
    Ok(())
}

/// Item 6: a forged response from a third socket (our branch prefix and
/// address, any digits; or a real branch with the next Via swapped for a
/// victim) is never relayed; the genuine one is. Counted as branch_mac.
#[test]
fn forged_responses_are_not_relayed() -> Result<()> {
    let farm = Farm::start("udp-listeners-forged")?;
    let client = bind("127.0.0.1")?;
    let victim = bind("127.0.0.1")?;
    let attacker = bind("127.0.0.1")?;
    client.send_to(request("REGISTER", client.local_addr()?, "forge1", 70).as_bytes(), farm.a)?;
    let (req, _) = recv(&farm.registrar, Duration::from_secs(2)).context("REGISTER not forwarded")?;
    let ours = header_lines(&req, "Via")[0].to_owned();
    let client_via = header_lines(&req, "Via")[1].to_owned();
    let victim_via = format!("Via: SIP/2.0/UDP {};branch=z9hG4bKvictim", victim.local_addr()?);
    let body = "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>;tag=x\r\nCall-ID: forge1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
    let forged = [
        format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKslb0123456789abcdef0123456789abcdef\r\n{victim_via}\r\n{body}", farm.a),
        format!("SIP/2.0 200 OK\r\n{ours}\r\n{victim_via}\r\n{body}"),
        format!("SIP/2.0 200 OK\r\n{ours}\r\n{client_via}\r\n{}", body.replace("Call-ID: forge1", "Call-ID: forge2")),
    ];
    for f in &forged {
        attacker.send_to(f.as_bytes(), farm.a)?;
    }
    // The genuine answer, sent after the forgeries, arrives; nothing else does.
    answer(&farm.registrar, &req)?;
    let (resp, _) = recv(&client, Duration::from_secs(2)).context("the genuine response was not relayed")?;
    ensure!(resp.starts_with("SIP/2.0 200 OK\r\n") && resp.contains("Call-ID: forge1\r\n"), "{resp}");
    ensure!(recv(&client, Duration::from_millis(300)).is_none(), "a forged response reached the client");
    ensure!(recv(&victim, Duration::from_millis(100)).is_none(), "a forged response reached the victim");
    let drops = farm.stop_and_drops()?;
    let mac = drops.iter().find(|(r, _)| r == "branch_mac").map_or(0, |d| d.1);
    ensure!(mac == forged.len() as u64, "branch_mac drops {mac}, expected {}: {drops:?}", forged.len());
    Ok(())
}
