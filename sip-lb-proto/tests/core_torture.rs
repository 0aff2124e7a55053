//! Messages in the style of RFC 4475 (SIP torture tests), rewritten here
//! with their tricky parts kept: the valid ones are forwarded with only our
//! edits, the invalid ones get 400 (or are dropped when nobody can be told).

mod support;

use sip_lb_proto::proxy::{Action, DropReason, Forwarded, Policy, ReplyCode};
use sip_lb_proto::sip::{HeaderName, Message, ParseError, Via};

/// Parses with leaked slots so the view can be returned (tests only).
fn parse_msg(buf: &[u8]) -> Result<Message<'_>, ParseError> {
    Message::parse(buf, Box::leak(Box::new(Message::slots())))
}
use std::net::SocketAddr;

const BACKEND: &str = "10.0.0.100:5060";
const SRC: &str = "192.0.2.2:5060";

fn proxy() -> sip_lb_proto::proxy::Proxy {
    support::proxy_at("192.0.2.10:5060")
}

fn forward_to(to: &str) -> Action {
    Action::Forward { to: to.parse().unwrap(), from: 0, what: Forwarded::Request }
}

fn backend(_: &[u8], _: u64) -> Option<SocketAddr> {
    BACKEND.parse().ok()
}

use support::sip;

fn run(msg: &[u8]) -> (Action, Vec<u8>) {
    let mut out = Vec::new();
    let a = proxy().handle(&backend, msg, SRC.parse().unwrap(), 0, &mut out);
    (a, out)
}

/// Forwarded, still parses, our Via first, body intact.
fn assert_forwarded(name: &str, msg: &[u8]) -> Vec<u8> {
    let (a, out) = run(msg);
    assert_eq!(a, forward_to(BACKEND), "{name}");
    let m = parse_msg(&out).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    assert_eq!(m.defect, None, "{name}");
    let top = m.find(HeaderName::Via).unwrap();
    let via = Via::parse(&out, top.value).unwrap();
    assert!(via.branch_bytes(&out).starts_with(b"z9hG4bKslb"), "{name}");
    // The body is a prefix of what followed the headers (surplus is cut).
    let orig = parse_msg(msg).unwrap();
    assert!(orig.rest().starts_with(m.rest()), "{name}: body changed");
    out
}

fn assert_400(name: &str, msg: &[u8]) {
    let (a, out) = run(msg);
    assert_eq!(a, Action::Reply { to: SRC.parse().unwrap(), code: ReplyCode::BadRequest }, "{name}");
    let m = parse_msg(&out).unwrap();
    assert!(!m.is_request());
    assert!(out.starts_with(b"SIP/2.0 400 Bad Request\r\n"));
}

const SDP: &str = "v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.3
s=-
c=IN IP4 192.0.2.4
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
";

#[test]
fn wsinv_short_tortuous_invite() {
    let msg = sip(&format!(
        "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : @
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

{SDP}"
    ));
    // The test file's Content-Length line has spaces before the colon.
    let msg = String::from_utf8(msg).unwrap();
    let body = msg.len() - msg.find("\r\n\r\n").unwrap() - 4;
    let msg = msg.replace("Content-Length   : @", &format!("Content-Length   : {body}"));
    let out = assert_forwarded("wsinv", msg.as_bytes());
    let t = String::from_utf8(out).unwrap();
    assert!(t.contains("\r\nMaX-fOrWaRdS: 67\r\n"));
    // The top Via (an RFC 2543 branch, sent-by = source) is untouched, and
    // the folded Via values below are byte-identical.
    assert!(t.contains("Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n"));
    assert!(t.contains("v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\n"));
    assert!(t.contains("NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n"));
    assert!(t.contains("Route:\r\n <sip:services.example.com;lr;"));
}

#[test]
fn intmeth_unusual_method_and_uri() {
    let msg = sip("!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7F\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\\xD1\\x80\\xD0\\xB0\\xD0\\xB1\\xD0\\xBE\\xD1\\x82\\xD0\\xB0\\xD1\\x8E\\xD1\\x89\\xD0\\xB8\\xD0\\xB9\";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:\u{FEFF}\u{5927}\u{505C}\u{96FB}
Content-Length: 0

");
    let (a, out) = run(&msg);
    assert_eq!(a, forward_to(BACKEND));
    let t = String::from_utf8_lossy(&out);
    assert!(t.contains("\r\nMax-Forwards: 254\r\n"));
    assert!(t.contains(";received=192.0.2.2\r\n"), "host1.example.com is not the source");
}

#[test]
fn esc01_escaped_uris_and_lwsdisp() {
    let esc01 = sip("INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: @

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 49217 RTP/AVP 0 12
");
    assert_forwarded("esc01", &esc01);
    let lwsdisp = sip("OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0

");
    assert_forwarded("lwsdisp", &lwsdisp);
}

#[test]
fn longreq_long_values_and_many_vias() {
    let long = "very".repeat(500);
    let mut vias = String::new();
    for i in 0..40 {
        vias.push_str(&format!("Via: SIP/2.0/TCP sip{i}.example.com:5060;received=192.0.2.{i};branch=z9hG4bK{i}\n"));
    }
    let msg = sip(&format!(
        "INVITE sip:user@example.com SIP/2.0
To: \"I have a user name of {long} long name\" <sip:user@example.com:5060>;tag={long}
From: sip:caller@example.net;tag=12{long}
Call-ID: longreq.one{long}really@example.net
CSeq: 3882340 INVITE
Unknown-{long}-Long-Name: unknown-{long}-long-value; unknown-{long}-long-parameter-name = unknown-{long}-long-parameter-value
Via: SIP/2.0/TCP sip33.example.com
v: SIP/2.0/TCP sip32.example.com
{vias}Max-Forwards: 68
Record-Route: <sip:{long}@host.example.com;lr>
Content-Type: application/sdp
Content-Length: @

{SDP}"
    ));
    assert!(msg.len() > 10_000);
    let out = assert_forwarded("longreq", &msg);
    assert_eq!(parse_msg(&out).unwrap().all(HeaderName::Via).count(), 43);
}

#[test]
fn dblreq_second_message_in_datagram_is_ignored() {
    let mut msg = sip("REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0

");
    let first_len = msg.len();
    msg.extend_from_slice(&sip("INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Length: 0

"));
    let out = assert_forwarded("dblreq", &msg);
    assert!(out.starts_with(b"REGISTER "));
    assert!(!String::from_utf8_lossy(&out).contains("INVITE"));
    assert!(out.len() < first_len + 120);
}

#[test]
fn mpart01_multipart_body_untouched() {
    let body = "--boundary42
Content-Type: application/sdp

v=0
o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com
s=
c=IN IP4 192.0.2.101
t=0 0
m=audio 49172 RTP/AVP 0
a=rtpmap:0 PCMU/8000

--boundary42
Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7s
Content-Transfer-Encoding: binary

\u{1}\u{2}\u{3}\u{0}\u{ff}
--boundary42--
";
    let msg = sip(&format!(
        "MESSAGE sip:kumiko@example.org SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport
Max-Forwards: 70
Route: <sip:127.0.0.1:5080>
Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuL
Identity-Info: <https://example.net/cert>;alg=rsa-sha1
To: <sip:kumiko@example.org>
From: <sip:bob@example.net>;tag=8ab4cd38
Call-ID: mpart01.123@example.net
CSeq: 1 MESSAGE
Content-Type: multipart/mixed;boundary=boundary42
Content-Length: @

{body}"
    ));
    let out = assert_forwarded("mpart01", &msg);
    let t = String::from_utf8_lossy(&out);
    assert!(out.ends_with(body.replace('\n', "\r\n").as_bytes()));
    assert!(t.contains(";rport=5060;received=192.0.2.2\r\n"));
}

fn our_response(status: &str) -> Vec<u8> {
    let branch =
        support::signed_branch(1, "SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923", "unreason.1234ksdfak3j2erwedfsASdf");
    sip(&format!(
        "{status}
Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 0

"
    ))
}

#[test]
fn unreason_and_noreason_responses() {
    for status in ["SIP/2.0 200 = 2**3 * 5**2 \u{43d}\u{43e} \u{441}\u{442}\u{43e}", "SIP/2.0 100 ", "SIP/2.0 100"] {
        let msg = our_response(status);
        let (a, out) = run(&msg);
        assert_eq!(
            a,
            Action::Forward { to: "192.0.2.198:5060".parse().unwrap(), from: 0, what: Forwarded::Response },
            "{status}"
        );
        assert!(out.starts_with(format!("{status}\r\nVia: SIP/2.0/UDP 192.0.2.198;").as_bytes()));
    }
}

#[test]
fn bcast_response_to_broadcast_is_dropped() {
    // Signed over the broadcast next hop: the MAC verifies, the address not.
    let msg = String::from_utf8(our_response("SIP/2.0 200 OK")).unwrap().replace("192.0.2.198", "255.255.255.255");
    assert_eq!(run(&support::resign(msg.as_bytes())).0, Action::Drop(DropReason::BadNextHop));
    let msg = msg.replace("255.255.255.255", "224.0.1.75");
    assert_eq!(run(&support::resign(msg.as_bytes())).0, Action::Drop(DropReason::BadNextHop));
}

#[test]
fn badinv01_extraneous_separators_is_400() {
    let msg = sip(&format!(
        "INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;;,;,,
Contact: \"Joe\" <sip:joe@example.org>;;;;
Content-Length: @
Content-Type: application/sdp

{SDP}"
    ));
    assert_400("badinv01", &msg);
}

#[test]
fn clerr_content_length_larger_than_message_is_400() {
    let msg = sip("INVITE sip:user@example.com SIP/2.0
Max-Forwards: 80
To: sip:j.user@example.com
From: sip:caller@example.net;tag=93942939o2
Contact: <sip:caller@hungry.example.net>
Call-ID: clerr.0ha0isndaksdjweiafasdk3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523
Content-Type: application/sdp
Content-Length: 9999

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.155
s=-
");
    assert_400("clerr", &msg);
}

#[test]
fn insuf_missing_headers_is_400() {
    let msg = sip("INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: 0

");
    assert_400("insuf", &msg);
}

#[test]
fn scalar02_overlarge_values_is_400() {
    let msg = sip("REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1.0
Contact: <sip:user@host129.example.com>
  ;expires=280297596632815
Content-Length: 0

");
    assert_400("scalar02", &msg);
    let mf_only = String::from_utf8(msg).unwrap().replace("36893488147419103232", "1");
    assert_400("scalar02 Max-Forwards 300", mf_only.as_bytes());
}

#[test]
fn ncl_negative_content_length_is_400() {
    let msg = sip("INVITE sip:user@example.com SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999

v=0
");
    assert_400("ncl", &msg);
}

#[test]
fn badaspec_display_name_without_brackets_is_400() {
    let msg = sip("REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKkdjuw
Max-Forwards: 70
From: \"Bell, Alexander\" sip:a.g.bell@example.com;tag=43
To: \"Bell, Alexander\" sip:a.g.bell@example.com
Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3
CSeq: 6 REGISTER
Content-Length: 0

");
    assert_400("badaspec", &msg);
}

#[test]
fn mcl01_multiple_content_length_is_400() {
    let msg = sip("OPTIONS sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423
To: sip:user@example.com
From: sip:other@example.net;tag=3923942
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf
CSeq: 15932 OPTIONS
Content-Length: 13
Max-Forwards: 60
Content-Length: 5
Content-Type: text/plain

There's no way to know how many octets are supposed to be here.
");
    assert_400("mcl01", &msg);
}

#[test]
fn zeromf_unksm_bext01() {
    let base = "OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=3ghsd41
Call-ID: zeromf.jfasdlfnm2o2l43r5u0asdfas
CSeq: 39234321 OPTIONS
Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw2349i
Max-Forwards: 0
Content-Length: 0

";
    // As in RFC 4475 the replies would be larger than these tiny requests,
    // and a stateless proxy must not amplify toward an unverified source.
    assert_eq!(run(&sip(base)).0, Action::Drop(DropReason::ReplyWouldAmplify));
    // With the headers a real UA sends, each gets its reply.
    let base = &base.replace(
        "Content-Length: 0",
        "User-Agent: torture-test/1.0 (a typical user agent string of a carrier SBC)\nAllow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY\nAccept: application/sdp\nContent-Length: 0",
    );
    assert!(matches!(run(&sip(base)).0, Action::Reply { code: ReplyCode::TooManyHops, .. }));
    // unksm: an unknown scheme is not ours to refuse by default (the R-URI
    // is never routed on); an operator who restricts schemes gets 416.
    let unksm = base
        .replace("OPTIONS sip:user@example.com SIP", "OPTIONS nobarf:user@example.com SIP")
        .replace("Max-Forwards: 0", "Max-Forwards: 70");
    assert_eq!(run(&sip(&unksm)).0, forward_to(BACKEND));
    let strict = Policy { schemes: Some(vec![b"sip"[..].into(), b"sips"[..].into()]), ..Policy::default() };
    let p = support::proxy_with(&["192.0.2.10:5060"], strict);
    let a = p.handle(&backend, &sip(&unksm), SRC.parse().unwrap(), 0, &mut Vec::new());
    assert!(matches!(a, Action::Reply { code: ReplyCode::UnsupportedUriScheme, .. }));
    let bext = base.replace("Max-Forwards: 0", "Max-Forwards: 70\nProxy-Require: noProxiesSupportThis, nor-this");
    let (a, out) = run(&sip(&bext));
    assert!(matches!(a, Action::Reply { code: ReplyCode::BadExtension, .. }));
    assert!(String::from_utf8_lossy(&out).contains("\r\nUnsupported: noProxiesSupportThis, nor-this\r\n"));
}

#[test]
fn rfc5118_ipv6_via_and_route() {
    let p = support::proxy_at("[2001:db8::10]:5060");
    let backend = |_: &[u8], _: u64| "[2001:db8::100]:5060".parse().ok();
    let msg = sip("REGISTER sip:[2001:db8::20] SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=81x2
Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111;rport
Route: <sip:[2001:db8::10];lr>
Call-ID: SSG9559905523997077@hlggdddd
Max-Forwards: 70
Contact: \"Caller\" <sip:caller@[2001:db8::9:1]>
CSeq: 98176 REGISTER
Content-Length: 0

");
    let mut out = Vec::new();
    let a = p.handle(&backend, &msg, "[2001:db8::9:1]:7000".parse().unwrap(), 0, &mut out);
    assert_eq!(a, forward_to("[2001:db8::100]:5060"));
    let t = String::from_utf8(out).unwrap();
    assert!(
        t.starts_with("REGISTER sip:[2001:db8::20] SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::10]:5060;branch=z9hG4bKslb"),
        "{t}"
    );
    assert!(
        t.contains("\r\nVia: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111;rport=7000;received=2001:db8::9:1\r\n")
    );
    assert!(!t.contains("Route:"));
}
