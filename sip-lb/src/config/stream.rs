//! Stream listeners (`tcp:IP:PORT`, `tls:IP:PORT` in `listen`), the limits
//! of the connection layer (`[tcp]`) and the TLS certificate (`[tls]`).
//! A bare `IP:PORT` stays UDP.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::addr::parse_sip_addr;

/// The transport of a stream listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Tls,
}

impl Transport {
    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// A TCP or TLS address to accept SIP connections on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamListen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// One `--listen` value / `listen` string: UDP when it has no prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenArg {
    Udp(SocketAddr),
    Stream(StreamListen),
}

/// Parses `IP:PORT` (UDP), `udp:IP:PORT`, `tcp:IP:PORT` or `tls:IP:PORT`
/// (any address form [`parse_sip_addr`] takes after the prefix).
pub fn parse_listen(s: &str) -> Result<ListenArg, String> {
    let t = s.trim();
    let (transport, rest) = match t.split_once(':') {
        Some((p, rest)) if p.eq_ignore_ascii_case("tcp") => (Some(Transport::Tcp), rest),
        Some((p, rest)) if p.eq_ignore_ascii_case("tls") => (Some(Transport::Tls), rest),
        Some((p, rest)) if p.eq_ignore_ascii_case("udp") => (None, rest),
        _ => (None, t),
    };
    let addr = parse_sip_addr(rest)?;
    Ok(match transport {
        None => ListenArg::Udp(addr),
        Some(transport) => ListenArg::Stream(StreamListen { transport, addr }),
    })
}

/// Whether requests from connections get our Record-Route with their flow
/// token (`record_route`), so the far end of a dialog can reach the client
/// on its connection (`sip_lb_proto::flow::record_route`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordRoute {
    /// Never: in-dialog requests from the far end go to the client's Contact.
    Off,
    /// Every request from a connection.
    On,
    /// Dialog-creating requests from a connection (INVITE, SUBSCRIBE,
    /// NOTIFY, REFER).
    #[default]
    Auto,
}

/// Whether REGISTERs from connections get our Path with their flow token
/// (`path`, RFC 3327), so requests to the registered UA reach its connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathMode {
    /// Never.
    Off,
    /// When the UA lists `path` in Supported (RFC 3327 §5.1).
    #[default]
    Supported,
    /// Always, even if the UA did not say it supports Path.
    Force,
    /// Only for UAs that support it; a REGISTER without `Supported: path`
    /// is answered 421 Extension Required with `Require: path`.
    Require,
}

/// The `[tcp]` section: limits of the connection layer (TCP and TLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// Open connections at most, over all stream listeners.
    pub max_connections: usize,
    /// Open connections at most from one source IP address.
    pub max_per_ip: usize,
    /// A connection that carries no byte for this long is closed.
    pub idle_timeout_ms: u64,
    /// The largest message (head plus body) accepted; larger ones get 513
    /// and the connection is closed (RFC 3261 §18.3: framing is lost).
    pub max_message_bytes: usize,
    /// A TLS handshake that has not finished by then is abandoned.
    pub handshake_timeout_ms: u64,
    /// Requests larger than this go to a backend of a `large_over_tcp`
    /// pool over TCP (RFC 3261 §18.1.1).
    pub large_request_bytes: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            max_connections: 10_000,
            max_per_ip: 100,
            idle_timeout_ms: 600_000,
            max_message_bytes: 65_535,
            handshake_timeout_ms: 5_000,
            large_request_bytes: super::links::DEFAULT_LARGE_REQUEST_BYTES,
        }
    }
}

/// The `[tls]` section (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// `[tcp]` as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTcp {
    max_connections: Option<usize>,
    max_per_ip: Option<usize>,
    idle_timeout_ms: Option<u64>,
    max_message_bytes: Option<usize>,
    handshake_timeout_ms: Option<u64>,
    large_request_bytes: Option<usize>,
}

impl RawTcp {
    pub(crate) fn into_config(self) -> Result<StreamConfig, (&'static str, String)> {
        let d = StreamConfig::default();
        let c = StreamConfig {
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            max_per_ip: self.max_per_ip.unwrap_or(d.max_per_ip),
            idle_timeout_ms: self.idle_timeout_ms.unwrap_or(d.idle_timeout_ms),
            max_message_bytes: self.max_message_bytes.unwrap_or(d.max_message_bytes),
            handshake_timeout_ms: self.handshake_timeout_ms.unwrap_or(d.handshake_timeout_ms),
            large_request_bytes: self.large_request_bytes.unwrap_or(d.large_request_bytes),
        };
        for (field, v) in [
            ("tcp.max_connections", c.max_connections as u64),
            ("tcp.max_per_ip", c.max_per_ip as u64),
            ("tcp.idle_timeout_ms", c.idle_timeout_ms),
            ("tcp.handshake_timeout_ms", c.handshake_timeout_ms),
            ("tcp.large_request_bytes", c.large_request_bytes as u64),
        ] {
            if v == 0 {
                return Err((field, "must be at least 1".into()));
            }
        }
        // The core forwards over UDP: nothing larger can reach a backend.
        if !(256..=65_535).contains(&c.max_message_bytes) {
            return Err(("tcp.max_message_bytes", "must be between 256 and 65535 (a UDP datagram)".into()));
        }
        Ok(c)
    }
}

/// `[tls]` as written; paths relative to the config file's directory.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    cert: String,
    key: String,
    client_ca: Option<String>,
}

impl RawTls {
    pub(crate) fn into_config(self, base: Option<&std::path::Path>) -> TlsConfig {
        let path = |p: String| match base {
            Some(b) if std::path::Path::new(&p).is_relative() => b.join(p),
            _ => PathBuf::from(p),
        };
        TlsConfig { cert: path(self.cert), key: path(self.key), client_ca: self.client_ca.map(path) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(parse_listen("127.0.0.1:5060"), Ok(ListenArg::Udp(sa("127.0.0.1:5060"))));
        assert_eq!(parse_listen("udp:127.0.0.1"), Ok(ListenArg::Udp(sa("127.0.0.1:5060"))));
        assert_eq!(
            parse_listen("tcp:[::1]:5070"),
            Ok(ListenArg::Stream(StreamListen { transport: Transport::Tcp, addr: sa("[::1]:5070") }))
        );
        assert_eq!(
            parse_listen("TLS:10.0.0.1:5061"),
            Ok(ListenArg::Stream(StreamListen { transport: Transport::Tls, addr: sa("10.0.0.1:5061") }))
        );
        // A bare IPv6 address is not mistaken for a prefix.
        assert_eq!(parse_listen("::1"), Ok(ListenArg::Udp(sa("[::1]:5060"))));
        for bad in ["tcp:", "sctp:127.0.0.1:5060", "tcp:host:5060", "tls:1.2.3.4:x"] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tcp_section_limits() {
        let raw: RawTcp = toml::from_str("max_message_bytes = 100").unwrap();
        assert_eq!(raw.into_config().unwrap_err().0, "tcp.max_message_bytes");
        let raw: RawTcp = toml::from_str("max_per_ip = 0").unwrap();
        assert_eq!(raw.into_config().unwrap_err().0, "tcp.max_per_ip");
        let raw: RawTcp = toml::from_str("max_connections = 3").unwrap();
        assert_eq!(raw.into_config().unwrap().max_connections, 3);
    }
}
