//! SIP messages for the tests, built and read as text (the role of Katran's PacketBuilder for
//! the datagrams the tests send): a request builder with the defaults every test used, the
//! 200 OK a UAS answers, and header look-ups on what arrives.

use std::net::SocketAddr;

/// A small SDP offer (the body of INVITEs that carry one).
pub const SDP: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// A request `METHOD sip:bob@example.com` from a UAC at `via`:
/// `Via: SIP/2.0/UDP <via>;rport;branch=...`, Max-Forwards 70, From Alice with a tag, To Bob,
/// Call-ID, CSeq, Contact, extra headers, then Content-Type/Content-Length and the body.
#[derive(Clone, Debug)]
pub struct SipRequest {
    method: String,
    via: SocketAddr,
    call_id: String,
    cseq: u64,
    branch: Option<String>,
    rport: bool,
    max_forwards: u32,
    from_tag: String,
    contact: bool,
    headers: Vec<(String, String)>,
    body: Option<(String, String)>,
}

impl SipRequest {
    /// A MESSAGE with a 400-byte text body: larger than any stateless reply
    /// to it, so sip-lb's amplification guard lets a 483 (readiness probes
    /// with Max-Forwards 0) or a 400 out.
    pub fn padded_message(via: SocketAddr, call_id: &str) -> SipRequest {
        SipRequest::new("MESSAGE", via, call_id).body("text/plain", &"x".repeat(400))
    }

    pub fn new(method: &str, via: SocketAddr, call_id: &str) -> SipRequest {
        SipRequest {
            method: method.to_owned(),
            via,
            call_id: call_id.to_owned(),
            cseq: 1,
            branch: None,
            rport: true,
            max_forwards: 70,
            from_tag: "a1".to_owned(),
            contact: true,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn cseq(mut self, cseq: u64) -> Self {
        self.cseq = cseq;
        self
    }

    /// The Via branch; default `z9hG4bK-<Call-ID, non-alphanumerics as '-'>-<CSeq>`.
    pub fn branch(mut self, branch: &str) -> Self {
        self.branch = Some(branch.to_owned());
        self
    }

    /// A Via without the `rport` parameter.
    pub fn no_rport(mut self) -> Self {
        self.rport = false;
        self
    }

    pub fn max_forwards(mut self, n: u32) -> Self {
        self.max_forwards = n;
        self
    }

    pub fn from_tag(mut self, tag: &str) -> Self {
        self.from_tag = tag.to_owned();
        self
    }

    /// Leave out the Contact header.
    pub fn no_contact(mut self) -> Self {
        self.contact = false;
        self
    }

    /// One more header, after Contact.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A body of `content_type`.
    pub fn body(mut self, content_type: &str, body: &str) -> Self {
        self.body = Some((content_type.to_owned(), body.to_owned()));
        self
    }

    /// [`SDP`] as the body.
    pub fn sdp(self) -> Self {
        self.body("application/sdp", SDP)
    }

    pub fn build(&self) -> String {
        let (method, via, call_id, cseq) = (&self.method, self.via, &self.call_id, self.cseq);
        let branch = self.branch.clone().unwrap_or_else(|| {
            let tag: String = call_id.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
            format!("z9hG4bK-{tag}-{cseq}")
        });
        let mut m = format!(
            "{method} sip:bob@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP {via}{rport};branch={branch}\r\n\
             Max-Forwards: {mf}\r\n\
             From: Alice <sip:alice@example.com>;tag={tag}\r\n\
             To: Bob <sip:bob@example.com>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n",
            rport = if self.rport { ";rport" } else { "" },
            mf = self.max_forwards,
            tag = self.from_tag,
        );
        if self.contact {
            m += &format!("Contact: <sip:alice@{via}>\r\n");
        }
        for (name, value) in &self.headers {
            m += &format!("{name}: {value}\r\n");
        }
        match &self.body {
            Some((ct, body)) => m + &format!("Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
            None => m + "Content-Length: 0\r\n\r\n",
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.build().into_bytes()
    }
}

/// A 200 OK for `req`: its Via stack, From, To (+tag), Call-ID, CSeq.
pub fn response_to(req: &str) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for l in head(req).split("\r\n").skip(1) {
        let name = l.split(':').next().unwrap_or("").trim();
        match name.to_ascii_lowercase().as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => out += &format!("{l}\r\n"),
            "to" | "t" => out += &format!("{l};tag=be\r\n"),
            _ => {}
        }
    }
    out + "Content-Length: 0\r\n\r\n"
}

fn head(msg: &str) -> &str {
    msg.split("\r\n\r\n").next().unwrap_or("")
}

/// The values of every `name` header (case-insensitive, trimmed), in order.
pub fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    header_lines(msg, name).into_iter().filter_map(|l| l.split_once(':')).map(|(_, v)| v.trim()).collect()
}

/// The first `name` header's value.
pub fn header(msg: &str, name: &str) -> Option<String> {
    headers(msg, name).first().map(|v| (*v).to_owned())
}

/// The whole `name: value` lines of every `name` header, in order.
pub fn header_lines<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    head(msg)
        .split("\r\n")
        .skip(1)
        .filter(|l| l.split_once(':').is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name)))
        .collect()
}

/// The `branch` parameter of a Via value.
pub fn branch_of(via: &str) -> &str {
    via.split(';').find_map(|p| p.trim().strip_prefix("branch=")).unwrap_or("")
}

/// The Call-ID of a datagram, if it is text with one.
pub fn call_id_of(datagram: &[u8]) -> Option<String> {
    header(std::str::from_utf8(datagram).ok()?, "Call-ID")
}

/// The CSeq number of a message, 0 if it has none.
pub fn cseq_of(msg: &str) -> u64 {
    header(msg, "CSeq").and_then(|c| c.split_whitespace().next().and_then(|n| n.parse().ok())).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_reads_back() {
        let via: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let m = SipRequest::new("INVITE", via, "c1@x").cseq(3).sdp().header("User-Agent", "t").build();
        assert!(m.starts_with("INVITE sip:bob@example.com SIP/2.0\r\n"));
        assert_eq!(headers(&m, "Via"), ["SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bK-c1-x-3"]);
        assert_eq!(header(&m, "call-id").as_deref(), Some("c1@x"));
        assert_eq!(cseq_of(&m), 3);
        assert_eq!(headers(&m, "Content-Length"), [SDP.len().to_string()]);
        assert!(m.ends_with(SDP));
        assert_eq!(branch_of(headers(&m, "Via")[0]), "z9hG4bK-c1-x-3");
        assert_eq!(call_id_of(m.as_bytes()).as_deref(), Some("c1@x"));
        let r = response_to(&m);
        assert!(r.starts_with("SIP/2.0 200 OK\r\n") && r.contains("To: Bob <sip:bob@example.com>;tag=be\r\n"));
        assert_eq!(header_lines(&r, "CSeq"), ["CSeq: 3 INVITE"]);
        let bare = SipRequest::new("OPTIONS", via, "o").no_rport().no_contact().max_forwards(0).build();
        assert!(bare.contains(";branch=") && !bare.contains("rport") && !bare.contains("Contact"));
        assert_eq!(headers(&bare, "Max-Forwards"), ["0"]);
    }
}
