//! The `[sip]` section's values: host aliases, URI schemes, option-tags.
//! Each parser returns the stored form or a message; the caller adds the
//! position.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::Alias;

/// Parses `host`, `host:port`, `ipv4[:port]` or `[ipv6][:port]` (RFC 3261
/// `hostport`). Host names are lowercased and lose a trailing dot; IP
/// literals are stored in canonical form, IPv6 without brackets.
pub(crate) fn parse_alias(s: &str) -> Result<Alias, String> {
    let t = s.trim();
    let invalid =
        |why: &str| format!("{s:?} is not a host alias ({why}; expected host, host:port, ip:port or [ipv6]:port)");
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or_else(|| invalid("unclosed ["))?;
        let ip: Ipv6Addr = inner.parse().map_err(|_| invalid("not an IPv6 address in brackets"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| invalid("junk after ]"))?),
        };
        (ip.to_string(), port)
    } else {
        let (host, port) = match t.split_once(':') {
            Some((_, p)) if p.contains(':') => return Err(invalid("an IPv6 address must be in brackets")),
            Some((h, p)) => (h, Some(p)),
            None => (t, None),
        };
        let host = if let Ok(ip) = host.parse::<Ipv4Addr>() {
            ip.to_string()
        } else if is_hostname(host) {
            host.trim_end_matches('.').to_ascii_lowercase()
        } else {
            return Err(invalid("not a host name or IP address"));
        };
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(invalid("the port must be 1-65535")),
        },
    };
    Ok(Alias { host, port })
}

/// RFC 3261 `hostname = *( domainlabel "." ) toplabel [ "." ]`: labels of
/// letters, digits and inner hyphens; the last label starts with a letter.
fn is_hostname(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    let labels: Vec<&str> = h.split('.').collect();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    labels.iter().all(|l| label_ok(l)) && labels.last().is_some_and(|l| l.as_bytes()[0].is_ascii_alphabetic())
}

/// RFC 3986 `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`,
/// lowercased.
pub(crate) fn parse_scheme(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let ok = b.first().is_some_and(u8::is_ascii_alphabetic)
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || b"+-.".contains(&c));
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("{s:?} is not a URI scheme (a letter, then letters, digits, '+', '-' or '.')"))
    }
}

/// RFC 3261 `option-tag = token`, kept as written.
pub(crate) fn parse_option_tag(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.bytes().all(is_token_byte) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not an option-tag (a SIP token)"))
    }
}

/// RFC 3261 `token` characters.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(s: &str) -> (String, Option<u16>) {
        let a = parse_alias(s).unwrap_or_else(|e| panic!("{e}"));
        (a.host, a.port)
    }

    #[test]
    fn alias_forms() {
        let own = |h: &str, p: Option<u16>| (h.to_owned(), p);
        assert_eq!(alias("lb.example.net"), own("lb.example.net", None));
        assert_eq!(alias("LB.Example.NET."), own("lb.example.net", None));
        assert_eq!(alias("lb-1.example.net:5061"), own("lb-1.example.net", Some(5061)));
        assert_eq!(alias("localhost"), own("localhost", None));
        assert_eq!(alias("198.51.100.7:5060"), own("198.51.100.7", Some(5060)));
        assert_eq!(alias("198.51.100.7"), own("198.51.100.7", None));
        assert_eq!(alias("[2001:DB8:0::7]"), own("2001:db8::7", None));
        assert_eq!(alias("[2001:db8::7]:5062"), own("2001:db8::7", Some(5062)));
        assert_eq!(alias("3com.net"), own("3com.net", None));
        for bad in [
            "",
            "2001:db8::7",
            "[2001:db8::7",
            "[2001:db8::7]5060",
            "[10.0.0.1]",
            "lb.example.net:",
            "lb.example.net:0",
            "lb.example.net:65536",
            "lb.example.net:+5",
            "-lb.example.net",
            "lb-.example.net",
            "lb..example.net",
            "lb_1.example.net",
            "lb.example.123",
            "1.2.3.999",
            "sip:lb.example.net",
            "lb example",
            ".",
        ] {
            assert!(parse_alias(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn schemes_and_tags() {
        assert_eq!(parse_scheme("SIPS").unwrap(), "sips");
        assert_eq!(parse_scheme("tel").unwrap(), "tel");
        assert_eq!(parse_scheme("x-a.b+c1").unwrap(), "x-a.b+c1");
        for bad in ["", "1sip", "si p", "sip:", "+sip"] {
            assert!(parse_scheme(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_option_tag("sec-agree").unwrap(), "sec-agree");
        assert_eq!(parse_option_tag("Foo.Bar").unwrap(), "Foo.Bar");
        for bad in ["", "a b", "a,b", "a;b"] {
            assert!(parse_option_tag(bad).is_err(), "{bad:?}");
        }
    }
}
