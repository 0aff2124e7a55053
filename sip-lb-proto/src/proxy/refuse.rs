//! Refusing a message the stream framer could not accept (RFC 3261 §18.3:
//! 400 without Content-Length, 513 too large): the same stateless reply
//! `reply.rs` builds for the proxy's own checks, from the message's head.

use super::action::ReplyCode;
use super::reply::{self, Request};
use super::Proxy;
use crate::sip::header::HeaderName;
use crate::sip::message::{Header, Message, MAX_HEADERS};
use crate::sip::via::Via;
use std::mem::MaybeUninit;
use std::net::SocketAddr;

impl Proxy {
    /// Writes the reply `code` to the request in `msg` (from `src`) into
    /// `out`. False, with `out` empty, when there is nothing to answer: not
    /// a request, no Via, or an ACK (§17.2.3: never answered).
    pub fn refuse(&self, msg: &[u8], src: SocketAddr, code: ReplyCode, out: &mut Vec<u8>) -> bool {
        out.clear();
        let mut slots = [const { MaybeUninit::<Header>::uninit() }; MAX_HEADERS];
        let Ok(m) = Message::parse_uninit(msg, &mut slots) else { return false };
        if !m.is_request() || m.method() == b"ACK" {
            return false;
        }
        let Some(via_header) = m.find(HeaderName::Via) else { return false };
        let via = Via::parse(msg, via_header.value);
        let req = Request { msg: &m, via_header, via: via.as_ref(), src, policy: &self.policy };
        let ok = matches!(reply::build(&req, code, out), super::Action::Reply { .. });
        if !ok {
            out.clear();
        }
        ok
    }

    /// The branch keys, which also sign flow tokens (`crate::flow`).
    pub fn keys(&self) -> &super::Keys {
        &self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Identity, Key, Keys, Policy};
    use super::*;

    #[test]
    fn refuses_a_request_not_an_ack_or_response() {
        let p = Proxy::new(
            Identity::single("127.0.0.1:5060".parse().unwrap()),
            Keys::new(Key::from_bytes([1; 16]), None),
            Policy::default(),
        );
        let src = "192.0.2.1:40000".parse().unwrap();
        let req = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1:40000;branch=z9hG4bK1\r\n\
From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let mut out = Vec::new();
        assert!(p.refuse(req, src, ReplyCode::BadRequest, &mut out));
        let s = String::from_utf8(out.clone()).unwrap();
        assert!(s.starts_with("SIP/2.0 400 Bad Request\r\n"), "{s}");
        assert!(
            s.contains("Via: SIP/2.0/TCP 192.0.2.1:40000;branch=z9hG4bK1\r\n")
                && s.contains("Call-ID: c\r\n")
                && s.ends_with("Content-Length: 0\r\n\r\n")
        );
        let ack = String::from_utf8(req.to_vec()).unwrap().replace("OPTIONS", "ACK");
        assert!(!p.refuse(ack.as_bytes(), src, ReplyCode::BadRequest, &mut out));
        assert!(out.is_empty());
        assert!(!p.refuse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP a\r\n\r\n", src, ReplyCode::BadRequest, &mut out));
    }

    #[test]
    fn extension_required_names_path() {
        let p = Proxy::new(
            Identity::single("127.0.0.1:5060".parse().unwrap()),
            Keys::new(Key::from_bytes([1; 16]), None),
            Policy::default(),
        );
        let src = "192.0.2.1:40000".parse().unwrap();
        let req = b"REGISTER sip:b SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1:40000;branch=z9hG4bK1\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@10.0.0.1>\r\n\r\n";
        let mut out = Vec::new();
        assert!(p.refuse(req, src, ReplyCode::ExtensionRequired, &mut out));
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("SIP/2.0 421 Extension Required\r\n"), "{s}");
        assert!(
            s.contains("\r\nRequire: path\r\n")
                && s.contains("CSeq: 1 REGISTER\r\n")
                && s.contains("To: <sip:a@b>;tag=")
        );
    }
}
