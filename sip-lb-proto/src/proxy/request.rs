//! Forwarding a request statelessly (RFC 3261 §16.3-16.6, §16.11): validate,
//! answer the errors a stateless proxy may answer, otherwise push our Via,
//! stamp the client's Via, fix Max-Forwards and Route, and pick a backend.

use super::action::{Action, DropReason, Forwarded, ReplyCode};
use super::branch::{branch_hash, bytes, with_arrival, BranchInput};
use super::chooser::Chooser;
use super::received::stamp;
use super::reply::{self, Request};
use super::splice::{Edits, Insert, MAC_DIGITS};
use super::Proxy;
use crate::flow::address::{self, RouteFlow, MAX_PARAM};
use crate::flow::record_route;
use crate::sip::header::HeaderName;
use crate::sip::message::{Header, Message, StartLine};
use crate::sip::params::{addr_parts, addr_uri, param_at};
use crate::sip::span::Span;
use crate::sip::text::{hex64, is_lws, is_token, parse_decimal, trim};
use crate::sip::uri::{Scheme, Uri};
use crate::sip::values::values;
use crate::sip::via::Via;
use sip_lb_common::call_id_hash;
use std::net::SocketAddr;

/// Largest CSeq number: §20.16 allows any 32-bit unsigned value (§8.1.1.5's
/// "less than 2**31" binds only the initial value a UAC picks).
const MAX_CSEQ: u64 = u32::MAX as u64;

/// Largest UDP payload towards an IPv4 / IPv6 destination (65,535 minus the
/// IPv4+UDP or UDP header; no IPv6 jumbograms).
const MAX_UDP_V4: usize = 65_507;
const MAX_UDP_V6: usize = 65_527;

/// URI parameter that marks a Record-Route value written by sip-lb (the
/// flow token of the transports work goes there). Only a Request-URI that
/// is us *and* carries it is a strict router's doing (§16.4).
pub const RECORD_ROUTE_MARKER: &[u8] = b"slb";

/// Output marks of the splice (`splice::Edits::mark`).
const MARK_OUR_VIA: usize = 0;
const MARK_NEXT_VIA_START: usize = 1;
const MARK_NEXT_VIA_END: usize = 2;

/// The headers the checks need, found in one pass.
#[derive(Default)]
struct Fields<'m> {
    via: Option<&'m Header>,
    from: Option<&'m Header>,
    to: Option<&'m Header>,
    call_id: Option<&'m Header>,
    cseq: Option<&'m Header>,
    max_forwards: Option<&'m Header>,
    content_length: Option<&'m Header>,
    first_route: Option<&'m Header>,
    /// The second Route header line, if any (RFC 5658: our second value).
    second_route: Option<&'m Header>,
    last_route: Option<&'m Header>,
    /// A critical header appears twice (or Max-Forwards/Content-Length do).
    duplicate: bool,
    proxy_require: bool,
    /// A Supported header is present (read only for a REGISTER that needs
    /// to know whether it lists `path`).
    supported: bool,
    /// A Contact header is present (read only for a REGISTER that gets our
    /// Path, to see whether it is an RFC 5626 outbound registration).
    contact: bool,
}

impl<'m> Fields<'m> {
    fn collect(m: &'m Message<'_>) -> Fields<'m> {
        let mut f = Fields::default();
        for h in m.headers() {
            let slot = match h.name {
                HeaderName::Via => {
                    f.via.get_or_insert(h);
                    continue;
                }
                HeaderName::Route => {
                    if f.first_route.is_some() && f.second_route.is_none() {
                        f.second_route = Some(h);
                    }
                    f.first_route.get_or_insert(h);
                    f.last_route = Some(h);
                    continue;
                }
                HeaderName::ProxyRequire => {
                    f.proxy_require |= values(m.buf(), h.value).next().is_some();
                    continue;
                }
                HeaderName::Supported => {
                    f.supported = true;
                    continue;
                }
                HeaderName::Contact => {
                    f.contact = true;
                    continue;
                }
                HeaderName::From => &mut f.from,
                HeaderName::To => &mut f.to,
                HeaderName::CallId => &mut f.call_id,
                HeaderName::CSeq => &mut f.cseq,
                HeaderName::MaxForwards => &mut f.max_forwards,
                HeaderName::ContentLength => &mut f.content_length,
                _ => continue,
            };
            f.duplicate |= slot.is_some();
            slot.get_or_insert(h);
        }
        f
    }
}

/// Why a request is answered instead of forwarded.
type Reject = ReplyCode;

/// How the request reached us: a datagram's flow is its source address, so
/// the core writes its Record-Route and Path (`flow::routing`); the stream
/// layer writes a connection's itself, with the connection's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    Datagram,
    Connection,
}

/// Room for one of our Record-Route or Path lines: the header name, the
/// URI (an IPv6 host at most), the address token.
const ROUTE_LINE: usize = 96 + MAX_PARAM;

/// `NAME <URI[PARAM][TOKEN]>\r\n` and its length.
fn route_line(name: &[u8], uri: &[u8], param: &[u8], token: &[u8]) -> ([u8; ROUTE_LINE], usize) {
    let mut line = [0u8; ROUTE_LINE];
    let mut n = 0;
    for part in [name, b"<", uri, param, token, b">\r\n"] {
        line[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    (line, n)
}

pub(super) fn handle<C: Chooser + ?Sized>(
    proxy: &Proxy,
    chooser: &C,
    m: &Message<'_>,
    src: SocketAddr,
    on: usize,
    arrival: Arrival,
    out: &mut Vec<u8>,
) -> Action {
    let f = Fields::collect(m);
    // Without a Via there is nowhere to send a reply (§18.2.2).
    let Some(via_header) = f.via else {
        return Action::Drop(DropReason::Malformed);
    };
    let buf = m.buf();
    let via = Via::parse(buf, via_header.value);
    let is_ack = m.method() == b"ACK";
    let reject = |code: ReplyCode, out: &mut Vec<u8>| {
        if is_ack {
            return Action::Drop(DropReason::AckRejected);
        }
        let req = Request { msg: m, via_header, via: via.as_ref(), src, policy: &proxy.policy };
        reply::build(&req, code, out)
    };
    let (checked, via) = match (check(proxy, m, &f), via.as_ref()) {
        (Ok(c), Some(v)) => (c, v),
        (Err(code), _) => return reject(code, out),
        (Ok(_), None) => return reject(ReplyCode::BadRequest, out),
    };
    let call_id = f.call_id.map(|h| m.get(h.value)).unwrap_or(&[]);
    let routing = proxy.policy.routing;
    let datagram = arrival == Arrival::Datagram;
    let register = m.method() == b"REGISTER";
    // RFC 3327 §5.1: does the UA list `path` in Supported?
    let supports_path = datagram && register && f.supported && record_route::lists_path(m);
    if datagram && register && routing.refuses(supports_path) {
        // RFC 3327 §5.1: the registrar could not reach this UA without our Path.
        return reject(ReplyCode::ExtensionRequired, out);
    }
    // Our Record-Route or Path naming a UDP client: a request for that
    // client goes to its address; the client's own request goes on.
    let flow = match f.first_route {
        Some(h) => address::of_route(&proxy.keys, buf, h.value, call_id, |host, port| proxy.identity.is_us(host, port)),
        None => RouteFlow::None,
    };
    let to_flow = match flow {
        RouteFlow::Forged => return reject(ReplyCode::Forbidden, out),
        RouteFlow::To(addr) if !address::is_from(addr, src) => Some(addr),
        _ => None,
    };
    let to = match to_flow {
        Some(addr) => addr,
        None => match chooser.choose(m.method(), call_id_hash(call_id)) {
            Some(to) => to,
            None if is_ack => return Action::Drop(DropReason::AckNoBackend),
            None => return reject(ReplyCode::ServiceUnavailable, out),
        },
    };
    // Our Via names the socket the request leaves from, so the response
    // comes back to it: the arrival socket unless the backend is of the
    // other address family.
    let Some(from) = proxy.identity.listener_towards(on, to) else {
        return Action::Drop(DropReason::NoListenerForFamily);
    };
    let Some(prefix) = proxy.via_prefixes.get(from) else {
        return Action::Drop(DropReason::NoListenerForFamily);
    };

    // Our Record-Route and Path for a datagram's request, written before
    // the edits that borrow them (`None` costs no buffer fill).
    let mut rr_lines: [Option<([u8; ROUTE_LINE], usize)>; 2] = [None, None];
    let mut path_line: Option<([u8; ROUTE_LINE], usize)> = None;
    let uri_of = |listener: usize| proxy.route_uris.get(listener).map(Vec::as_slice).unwrap_or_default();
    // A request for a connection's flow gets its route from the relay,
    // which knows the connection.
    let for_connection = flow == RouteFlow::Connection;
    if datagram && !for_connection && routing.records(m.method(), from != on) {
        // Our route names the UDP client either way: the one the request
        // comes from, or the one it goes to (the far end's in-dialog
        // requests carry the client's Contact, which may be private, and
        // come back to us by this route; the client's own, from its
        // address, go on to the farm).
        let client = to_flow.unwrap_or(src);
        let mut token = [0u8; MAX_PARAM];
        let n = address::write_param(&proxy.keys, address::Kind::RecordRoute, client, call_id, &mut token);
        // Leaving from another listener: one value per side (RFC 5658),
        // the one the far end uses on top, the one the sender uses below.
        let sides: &[usize] = if from == on { &[from] } else { &[from, on] };
        for (slot, &side) in rr_lines.iter_mut().zip(sides) {
            *slot = Some(route_line(b"Record-Route: ", uri_of(side), b"", &token[..n]));
        }
    }
    if datagram && register && to_flow.is_none() && !for_connection && routing.paths(supports_path) {
        let mut token = [0u8; MAX_PARAM];
        let n = address::write_param(&proxy.keys, address::Kind::Path, src, call_id, &mut token);
        // RFC 5626 §5.1: an outbound registration's Path says `ob`.
        let ob: &[u8] = if f.contact && record_route::has_outbound_contact(m) { b";ob" } else { b"" };
        path_line = Some(route_line(b"Path: ", uri_of(from), ob, &token[..n]));
    }

    let mut edits = Edits::default();
    routes(proxy, m, &f, checked.uri, &mut edits);
    let hash = branch_hash(
        buf,
        &BranchInput {
            top_via: via,
            top_via_raw: bytes(buf, Some(Span::new(via_header.value.start(), via.end as usize))),
            from_tag: bytes(buf, f.from.and_then(|h| param_at(buf, checked.from_params, h.value.end(), b"tag"))),
            call_id,
            cseq_number: bytes(buf, Some(checked.cseq_number)),
            request_uri: m.get(checked.uri),
        },
    );
    let hash = with_arrival(hash, on);
    let head = m.head_start as usize;
    edits.mark(head, MARK_OUR_VIA);
    edits.insert(head, Insert::ViaLine { prefix, hash });
    for (line, len) in rr_lines.iter().chain([&path_line]).flatten() {
        edits.insert(head, Insert::Bytes(&line[..*len]));
    }
    match (f.max_forwards, checked.max_forwards) {
        (Some(h), Some(n)) => edits.replace(h.value.start(), h.value.end(), Insert::Decimal(n - 1)),
        _ => edits.insert(head, Insert::Bytes(b"Max-Forwards: 70\r\n")),
    }
    stamp(buf, via, src, &mut edits);
    edits.mark(via_header.value.start(), MARK_NEXT_VIA_START);
    edits.mark(via.end as usize, MARK_NEXT_VIA_END);
    out.clear();
    let Ok(done) = edits.emit(buf, m.start as usize, checked.body_end, out) else {
        return Action::Drop(DropReason::EditConflict);
    };
    // The MAC covers the client's Via exactly as the backend will return it.
    let [ours, next_start, next_end] = done.marks;
    let mac = match out.get(next_start..next_end) {
        Some(next_via) if next_start <= next_end => proxy.keys.current.mac(hash, next_via, call_id),
        _ => return Action::Drop(DropReason::EditConflict),
    };
    let at = ours + prefix.len() + MAC_DIGITS;
    match out.get_mut(at..at + MAC_DIGITS) {
        Some(slot) => slot.copy_from_slice(&hex64(mac)),
        None => return Action::Drop(DropReason::EditConflict),
    }
    let limit = if to.ip().to_canonical().is_ipv4() { MAX_UDP_V4 } else { MAX_UDP_V6 };
    if out.len() > limit {
        return reject(ReplyCode::MessageTooLarge, out);
    }
    Action::Forward { to, from, what: Forwarded::Request }
}

/// What the checks learnt on the way.
struct Checked {
    uri: Span,
    cseq_number: Span,
    max_forwards: Option<u64>,
    body_end: usize,
    /// Where From's header params start (`header_params_start`).
    from_params: usize,
}

/// §16.3 in order: syntax (400), URI scheme (416), Max-Forwards (483),
/// Proxy-Require (420).
fn check(proxy: &Proxy, m: &Message<'_>, f: &Fields<'_>) -> Result<Checked, Reject> {
    const BAD: ReplyCode = ReplyCode::BadRequest;
    let buf = m.buf();
    let StartLine::Request { uri, method, .. } = m.start_line else { return Err(BAD) };
    if m.defect.is_some() || f.duplicate {
        return Err(BAD);
    }
    let (Some(from), Some(to), Some(call_id), Some(cseq)) = (f.from, f.to, f.call_id, f.cseq) else {
        return Err(BAD);
    };
    let (Some(from_params), Some(_)) = (address(buf, from.value), address(buf, to.value)) else {
        return Err(BAD);
    };
    if call_id.value.is_empty() {
        return Err(BAD);
    }
    let (cseq_number, cseq_method) = split_cseq(buf, cseq.value).ok_or(BAD)?;
    if cseq_method.of(buf) != method.of(buf) {
        return Err(BAD);
    }
    let max_forwards = match f.max_forwards {
        Some(h) => Some(parse_decimal(m.get(h.value), 255).ok_or(BAD)?),
        None => None,
    };
    let rest = m.rest().len();
    let body_end = match f.content_length {
        Some(h) => match parse_decimal(m.get(h.value), u64::from(u32::MAX)) {
            Some(n) if n as usize <= rest => m.body_start as usize + n as usize,
            _ => return Err(BAD),
        },
        // UDP without Content-Length: the body is the rest (§18.3).
        None => buf.len(),
    };
    let u = Uri::parse(buf, uri).ok_or(BAD)?;
    if !proxy.policy.accepts_scheme(u.scheme_text.of(buf)) {
        return Err(ReplyCode::UnsupportedUriScheme);
    }
    if max_forwards == Some(0) {
        return Err(ReplyCode::TooManyHops);
    }
    if f.proxy_require && unsupported_option(proxy, m) {
        return Err(ReplyCode::BadExtension);
    }
    Ok(Checked { uri, cseq_number, max_forwards, body_end, from_params })
}

/// Does Proxy-Require name an option the operator has not listed?
fn unsupported_option(proxy: &Proxy, m: &Message<'_>) -> bool {
    let buf = m.buf();
    m.all(HeaderName::ProxyRequire).any(|h| values(buf, h.value).any(|v| !proxy.policy.accepts_option(v.of(buf))))
}

/// A From/To value is a name-addr (`<...>` closed, RFC 4475 "badaspec":
/// a display name needs the brackets) or a bare addr-spec with a scheme.
/// If it is, where its header params start (for the From tag).
fn address(buf: &[u8], value: Span) -> Option<usize> {
    let a = addr_parts(buf, value);
    let ok = if a.has_lt {
        a.has_gt && Uri::parse(buf, a.uri).is_some()
    } else {
        let spec = a.uri.of(buf);
        !spec.is_empty() && !spec.iter().any(|&b| is_lws(b) || b == b'"') && Uri::parse(buf, a.uri).is_some()
    };
    ok.then_some(a.params)
}

#[cfg(test)]
fn address_ok(buf: &[u8], value: Span) -> bool {
    address(buf, value).is_some()
}

/// `1*DIGIT LWS Method` into its two parts.
fn split_cseq(buf: &[u8], value: Span) -> Option<(Span, Span)> {
    let v = value.of(buf);
    let digits = v.iter().position(|b| !b.is_ascii_digit())?;
    parse_decimal(v.get(..digits)?, MAX_CSEQ)?;
    if !v.get(digits).copied().is_some_and(is_lws) {
        return None;
    }
    let (a, b) = trim(buf, value.start() + digits, value.end());
    let method = Span::new(a, b);
    if method.is_empty() || !method.of(buf).iter().all(|&c| is_token(c)) {
        return None;
    }
    Some((Span::new(value.start(), value.start() + digits), method))
}

/// The URI (a Route or the Request-URI) if it is us: sip/sips with a host
/// that is one of our addresses or aliases (see `Identity::is_us`).
fn our_uri(proxy: &Proxy, buf: &[u8], uri: Span) -> Option<Uri> {
    let u = Uri::parse(buf, uri)?;
    let sip = matches!(u.scheme, Scheme::Sip | Scheme::Sips);
    (sip && proxy.identity.is_us(u.host.of(buf), u.port)).then_some(u)
}

/// Did a strict router put a Record-Route value of ours in the Request-URI?
/// Only values we wrote carry [`RECORD_ROUTE_MARKER`]; an R-URI such as
/// `sip:+15551234@LB-IP` that merely names our host is a real target.
fn is_our_record_route(proxy: &Proxy, buf: &[u8], ruri: Span) -> bool {
    our_uri(proxy, buf, ruri).is_some_and(|u| u.has_param(buf, RECORD_ROUTE_MARKER))
}

/// Where the values of one Route field are, for removing one or two of them.
struct RouteValues {
    count: usize,
    first: Span,
    second: Span,
    second_start: usize,
    third_start: usize,
    last: Span,
    prev_end: usize,
}

fn route_values(buf: &[u8], h: &Header) -> Option<RouteValues> {
    let mut it = values(buf, h.value);
    let first = it.next()?;
    let mut rv =
        RouteValues { count: 1, first, second: first, second_start: 0, third_start: 0, last: first, prev_end: 0 };
    for v in it {
        match rv.count {
            1 => (rv.second, rv.second_start) = (v, v.start()),
            2 => rv.third_start = v.start(),
            _ => {}
        }
        rv.prev_end = rv.last.end();
        rv.last = v;
        rv.count += 1;
    }
    Some(rv)
}

/// Is this Route value one of our Record-Route values (ours, with the
/// marker)?
fn is_our_route_value(proxy: &Proxy, buf: &[u8], value: Span) -> bool {
    is_our_record_route(proxy, buf, addr_uri(buf, value))
}

/// §16.4: strict-router fix-up, then loose-route removal of our own Route.
/// A comma-joined Route field loses only the value concerned; a field left
/// empty is removed whole. When the next value is also one of our
/// Record-Route values (we recorded two, one per side: RFC 5658), it goes
/// too.
fn routes<'a>(proxy: &Proxy, m: &Message<'a>, f: &Fields<'_>, ruri: Span, edits: &mut Edits<'a>) {
    let buf = m.buf();
    let (Some(fh), Some(lh)) = (f.first_route, f.last_route) else { return };
    let (Some(fv), Some(lv)) = (route_values(buf, fh), route_values(buf, lh)) else { return };
    let same_field = fh.line == lh.line;
    let single = same_field && fv.count == 1;
    // Strict routing: the R-URI is a Record-Route value of ours; the real
    // R-URI is the last Route.
    let strict = is_our_record_route(proxy, buf, ruri);
    let mut remove_first = false;
    if strict {
        let target = addr_uri(buf, lv.last);
        edits.replace(ruri.start(), ruri.end(), Insert::Bytes(target.of(buf)));
    }
    if !(strict && single) {
        remove_first = our_uri(proxy, buf, addr_uri(buf, fv.first)).is_some();
    }
    let whole = |h: &Header, e: &mut Edits<'_>| e.remove(h.line.start(), h.next as usize);
    if same_field && strict && remove_first && fv.count == 2 {
        whole(fh, edits);
        return;
    }
    if remove_first && !strict && is_our_route_value(proxy, buf, fv.first) {
        // Our second value: in the same field, or the next Route field's first.
        if fv.count >= 2 && is_our_route_value(proxy, buf, fv.second) {
            match fv.count {
                2 => whole(fh, edits),
                _ => edits.remove(fv.first.start(), fv.third_start),
            }
            return;
        }
        let next = f.second_route.and_then(|h| Some((h, route_values(buf, h)?)));
        if let (1, Some((nh, nv))) = (fv.count, next) {
            if is_our_route_value(proxy, buf, nv.first) {
                whole(fh, edits);
                match nv.count {
                    1 => whole(nh, edits),
                    _ => edits.remove(nv.first.start(), nv.second_start),
                }
                return;
            }
        }
    }
    if remove_first {
        if fv.count == 1 {
            whole(fh, edits);
        } else {
            edits.remove(fv.first.start(), fv.second_start);
        }
    }
    if strict {
        if lv.count == 1 {
            if !(remove_first && single) {
                whole(lh, edits);
            }
        } else {
            edits.remove(lv.prev_end, lv.last.end());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(s: &[u8]) -> Span {
        Span::new(0, s.len())
    }

    #[test]
    fn cseq_split() {
        let v = b"0009\r\n  INVITE";
        let (n, m) = split_cseq(v, sp(v)).unwrap();
        assert_eq!((n.of(v), m.of(v)), (&b"0009"[..], &b"INVITE"[..]));
        for bad in [&b"INVITE"[..], b"1INVITE", b"1 ", b"1 IN VITE", b"-1 INVITE"] {
            assert_eq!(split_cseq(bad, sp(bad)), None, "{}", String::from_utf8_lossy(bad));
        }
        let max = b"2147483647 ACK";
        assert!(split_cseq(max, sp(max)).is_some());
        // §20.16: 32-bit unsigned.
        for ok in [&b"2147483648 INVITE"[..], b"4294967295 INVITE"] {
            assert!(split_cseq(ok, sp(ok)).is_some(), "{}", String::from_utf8_lossy(ok));
        }
        let over = b"4294967296 INVITE";
        assert_eq!(split_cseq(over, sp(over)), None);
    }

    #[test]
    fn from_to_address_syntax() {
        for ok in [
            &b"sip:a@b;tag=1"[..],
            b"<sip:a@b>",
            b"\"A, B\" <sip:a@b>;tag=x",
            b"caller<sip:caller@example.com>;tag=323",
            b"tel:+1",
        ] {
            assert!(address_ok(ok, sp(ok)), "{}", String::from_utf8_lossy(ok));
        }
        for bad in
            [&b"\"Bell, Alexander\" sip:a.g.bell@example.com;tag=43"[..], b"Bob sip:b@c", b"<sip:a@b", b"nothing", b""]
        {
            assert!(!address_ok(bad, sp(bad)), "{}", String::from_utf8_lossy(bad));
        }
    }
}
