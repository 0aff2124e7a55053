//! Shared by the core's integration tests: SIP text helpers, a configured
//! proxy, a UAS that answers what we forwarded, and branches signed with
//! the test key (as any node sharing the secret would sign them).
#![allow(dead_code)]

use sip_lb_proto::proxy::{Identity, Key, Keys, Listener, Policy, Proxy};

/// The `[security] secret` of these tests.
pub const SECRET: &[u8] = b"sip-lb test secret: 32 bytes ok!";

pub fn keys() -> Keys {
    Keys::new(Key::from_secret(SECRET), None)
}

/// A proxy whose one listener is `advertise` (also its socket address).
pub fn proxy_at(advertise: &str) -> Proxy {
    Proxy::new(Identity::single(advertise.parse().unwrap()), keys(), Policy::default())
}

/// A proxy with these listeners (socket address = advertised address).
pub fn proxy_with(listeners: &[&str], policy: Policy) -> Proxy {
    let listeners = listeners.iter().map(|a| Listener::at(a.parse().unwrap())).collect();
    Proxy::new(Identity { listeners, aliases: Vec::new() }, keys(), policy)
}

/// Message text with `\n` line ends turned into CRLF; `Content-Length: @`
/// becomes the real body length.
pub fn sip(text: &str) -> Vec<u8> {
    let t = text.replace('\n', "\r\n");
    let body_len = t.find("\r\n\r\n").map(|i| t.len() - i - 4).unwrap_or(0);
    t.replace("Content-Length: @", &format!("Content-Length: {body_len}")).into_bytes()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What a UAS (RFC 3261 §8.2.6) answers to the request we forwarded: the
/// status line, every Via, From, To (with a tag), Call-ID and CSeq copied
/// byte for byte, no body.
pub fn uas_response(fwd: &[u8], status: &str) -> Vec<u8> {
    let t = text(fwd);
    let head = &t[t.find("\r\n").unwrap() + 2..t.find("\r\n\r\n").unwrap()];
    let mut out = format!("SIP/2.0 {status}\r\n");
    for line in head.split("\r\n") {
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => out += &format!("{line}\r\n"),
            "to" | "t" if line.contains(";tag=") => out += &format!("{line}\r\n"),
            "to" | "t" => out += &format!("{line};tag=uas1\r\n"),
            _ => {}
        }
    }
    out += "Content-Length: 0\r\n\r\n";
    out.into_bytes()
}

/// A branch of ours for a response whose next Via value (first via-parm,
/// as it appears in the response) and Call-ID are these.
pub fn signed_branch(txn: u64, next_via: &str, call_id: &str) -> String {
    let mac = Key::from_secret(SECRET).mac(txn, next_via.as_bytes(), call_id.as_bytes());
    format!("z9hG4bKslb{txn:016x}{mac:016x}")
}

/// A response fixture written with an unsigned branch of ours (as in
/// `z9hG4bKslb00000000000000ee`): the same response with that branch signed
/// over its next Via and Call-ID, as our node would have written it.
/// Anything else is returned unchanged.
pub fn resign(msg: &[u8]) -> Vec<u8> {
    use sip_lb_proto::sip::{HeaderName, Message, Span, Via};
    let mut slots = Message::slots();
    let Ok(m) = Message::parse(msg, &mut slots) else { return msg.to_vec() };
    let mut vias = m.all(HeaderName::Via);
    let Some(top_h) = vias.next() else { return msg.to_vec() };
    let Some(top) = Via::parse(msg, top_h.value) else { return msg.to_vec() };
    let Some(branch) = top.branch.filter(|b| b.of(msg).starts_with(b"z9hG4bKslb")) else { return msg.to_vec() };
    let next_span = match top.next {
        Some(n) => Span::new(n as usize, top_h.value.end()),
        None => match vias.next() {
            Some(h) => h.value,
            None => return msg.to_vec(),
        },
    };
    let Some(next) = Via::parse(msg, next_span) else { return msg.to_vec() };
    let next_via = text(&msg[next_span.start()..next.end as usize]);
    let call_id = m.find(HeaderName::CallId).map(|h| text(m.get(h.value))).unwrap_or_default();
    let digits = &branch.of(msg)[10..];
    let txn = u64::from_str_radix(&text(&digits[..digits.len().min(16)]), 16).unwrap_or(0);
    let mut out = msg[..branch.start()].to_vec();
    out.extend_from_slice(signed_branch(txn, &next_via, &call_id).as_bytes());
    out.extend_from_slice(&msg[branch.end()..]);
    out
}
