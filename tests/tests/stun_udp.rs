//! STUN Binding on the SIP UDP port (`stun = true`, RFC 5389): a padded request gets the
//! client's own address back in XOR-MAPPED-ADDRESS; one smaller than the answer gets nothing
//! (no amplification), counted.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::{pool_config, Launch};
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addr};
use sip_lb_tests::sink::{Backend, Sink};

const WITHIN: Duration = Duration::from_secs(5);
const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// A Binding request with a SOFTWARE attribute of `pad` bytes (0: none).
fn binding(txid: &[u8; 12], pad: usize) -> Vec<u8> {
    let attrs = if pad == 0 { 0 } else { 4 + pad };
    let mut r = vec![0x00, 0x01];
    r.extend_from_slice(&(attrs as u16).to_be_bytes());
    r.extend_from_slice(&COOKIE);
    r.extend_from_slice(txid);
    if pad > 0 {
        r.extend_from_slice(&[0x80, 0x22]);
        r.extend_from_slice(&(pad as u16).to_be_bytes());
        r.extend(std::iter::repeat_n(b'p', pad));
    }
    r
}

#[test]
fn stun_binding_request_gets_the_clients_address_and_small_ones_nothing() -> Result<()> {
    let a = Backend::start(true)?;
    let (udp, control) = (free_udp_addr()?, free_tcp_addr()?);
    let text = format!("stun = true\n{}", pool_config(udp, control, &[(a.addr, 1)], None));
    let lb = Launch::config("stun", &text, &[udp], control).start()?;
    let client = Sink::loopback()?;
    let me = client.addr();
    let txid = *b"sip-lb-stun1";
    client.send_to(binding(&txid, 12), udp)?;
    let d = client.recv(WITHIN).context("no Binding response")?;
    let r = d.bytes;
    ensure!(r.len() == 32 && r[..2] == [0x01, 0x01] && r[4..8] == COOKIE && r[8..20] == txid, "response {r:?}");
    ensure!(r[20..24] == [0x00, 0x20, 0x00, 0x08] && r[25] == 0x01, "not an IPv4 XOR-MAPPED-ADDRESS: {r:?}");
    let port = u16::from_be_bytes([r[26], r[27]]) ^ 0x2112;
    let ip: Vec<u8> = r[28..32].iter().zip(COOKIE).map(|(x, k)| x ^ k).collect();
    ensure!(port == me.port() && ip == [127, 0, 0, 1], "mapped {ip:?}:{port}, client {me}");
    // 20 bytes would get 32 back: not answered, counted.
    client.send_to(binding(b"sip-lb-stun2", 0), udp)?;
    lb.control.wait_metrics(WITHIN, "one small Binding request", |m| {
        m.sum("sip_lb_stun_total", &[("outcome", "would_amplify")]) == Some(1.0)
    })?;
    ensure!(client.recv(Duration::from_millis(0)).is_none(), "answered a request smaller than the answer");
    ensure!(lb.control.metrics()?.sum("sip_lb_stun_total", &[("outcome", "answered")]) == Some(1.0));
    Ok(())
}
