//! Stateless replies (RFC 3261 §8.2.6, §16.11): status line, the request's
//! Via (top one stamped with received/rport), From, To (with a deterministic
//! tag), Call-ID and CSeq copied byte for byte, `Content-Length: 0`.

use super::action::{Action, DropReason, ReplyCode};
use super::branch::{bytes, reply_tag};
use super::policy::Policy;
use super::received::{reply_target, stamp};
use super::splice::{Edits, Insert};
use crate::sip::header::HeaderName;
use crate::sip::message::{Header, Message};
use crate::sip::params::header_param;
use crate::sip::text::write_decimal;
use crate::sip::values::values;
use crate::sip::via::Via;
use std::net::SocketAddr;

/// The request being answered.
pub struct Request<'m, 'a> {
    pub msg: &'m Message<'a>,
    /// First Via field and its parsed first value (if it parses).
    pub via_header: &'m Header,
    pub via: Option<&'m Via>,
    pub src: SocketAddr,
    /// For the Unsupported header of a 420.
    pub policy: &'m Policy,
}

/// Writes the reply into `out` (cleared first).
pub fn build(req: &Request<'_, '_>, code: ReplyCode, out: &mut Vec<u8>) -> Action {
    let m = req.msg;
    let buf = m.buf();
    let mut edits = Edits::default();
    if let Some(via) = req.via {
        stamp(buf, via, req.src, &mut edits);
    }
    if let Some(to) = m.find(HeaderName::To) {
        if header_param(buf, to.value, b"tag").is_none() {
            let from_tag = m.find(HeaderName::From).and_then(|f| header_param(buf, f.value, b"tag"));
            let tag = reply_tag(
                m.find(HeaderName::CallId).map(|h| m.get(h.value)).unwrap_or(&[]),
                bytes(buf, from_tag),
                m.find(HeaderName::CSeq).map(|h| m.get(h.value)).unwrap_or(&[]),
                m.get(req.via_header.value),
            );
            edits.insert(to.value.end(), Insert::Tag(tag));
        }
    }
    out.clear();
    out.extend_from_slice(b"SIP/2.0 ");
    write_decimal(out, u64::from(code.code()));
    out.push(b' ');
    out.extend_from_slice(code.reason());
    out.extend_from_slice(b"\r\n");
    for h in m.headers() {
        use HeaderName::*;
        if matches!(h.name, Via | From | To | CallId | CSeq) {
            if edits.emit(buf, h.line.start(), h.line.end(), out).is_err() {
                return Action::Drop(DropReason::EditConflict);
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    if code == ReplyCode::BadExtension {
        // The options the operator did not list (§8.2.2.3).
        out.extend_from_slice(b"Unsupported: ");
        let mut first = true;
        for h in m.all(HeaderName::ProxyRequire) {
            for v in values(buf, h.value).filter(|v| !req.policy.accepts_option(v.of(buf))) {
                if !first {
                    out.extend_from_slice(b", ");
                }
                first = false;
                out.extend_from_slice(v.of(buf));
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    if code == ReplyCode::ExtensionRequired {
        // The only extension this proxy requires (§8.2.2.3, RFC 3327 §5.1).
        out.extend_from_slice(b"Require: path\r\n");
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Action::Reply { to: reply_target(req.via, req.src), code }
}
