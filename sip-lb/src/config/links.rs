//! Backends reached over connections (issue 13): per pool `transport =
//! "udp" | "tcp" | "tls"` and `large_over_tcp`, the `[tcp]
//! large_request_bytes` threshold (RFC 3261 §18.1.1), and `[backend_tls]`,
//! the CA that TLS backends' certificates must chain to.
//!
//! A backend address gets one link whatever pools list it; two pools that
//! disagree about how to reach the same address are refused.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;

use super::error::ConfigError;
use super::PoolConfig;

/// How a pool's backends are reached (`transport`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolTransport {
    /// Datagrams from the UDP workers' sockets (the default).
    #[default]
    Udp,
    /// One persistent TCP connection per backend.
    Tcp,
    /// One persistent TLS connection per backend.
    Tls,
}

impl PoolTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolTransport::Udp => "udp",
            PoolTransport::Tcp => "tcp",
            PoolTransport::Tls => "tls",
        }
    }
}

/// A pool's `transport` and `large_over_tcp`, as written.
#[derive(Clone, Debug, Default)]
pub(crate) struct PoolLinkDraft {
    pub pool: String,
    pub transport: PoolTransport,
    pub large_over_tcp: bool,
    /// Where `transport` (or else the pool's name) was written.
    pub span: Option<Range<usize>>,
}

/// A backend reached over a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    pub addr: SocketAddr,
    /// `Tcp` or `Tls`: every request goes over the connection. `Udp` (with
    /// `large_over_tcp`): only requests over `large_request_bytes`, over TCP
    /// to the same address, the rest as datagrams.
    pub transport: PoolTransport,
}

impl LinkConfig {
    /// Whether every request to this backend takes the connection.
    pub fn always(&self) -> bool {
        self.transport != PoolTransport::Udp
    }
}

/// Default `[tcp] large_request_bytes`: RFC 3261 §18.1.1's 1300 bytes for
/// a path MTU that is not known.
pub const DEFAULT_LARGE_REQUEST_BYTES: usize = 1300;

/// `[backend_tls]`: the CA TLS backends must present a certificate from
/// (their IP address in its subjectAltName), and optionally a client
/// certificate for backends that ask for one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendTlsConfig {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `[backend_tls]` as written; paths relative to the config file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackendTls {
    ca: String,
    cert: Option<String>,
    key: Option<String>,
}

impl RawBackendTls {
    pub(crate) fn into_config(self, base: Option<&std::path::Path>) -> Result<BackendTlsConfig, String> {
        let path = |p: String| match base {
            Some(b) if std::path::Path::new(&p).is_relative() => b.join(p),
            _ => PathBuf::from(p),
        };
        if self.cert.is_some() != self.key.is_some() {
            return Err("cert and key go together (a client certificate and its key)".into());
        }
        Ok(BackendTlsConfig { ca: path(self.ca), cert: self.cert.map(path), key: self.key.map(path) })
    }
}

/// The links the pools ask for, one per backend address, in pool order.
pub(crate) fn derive(
    pools: &[PoolConfig],
    drafts: &[PoolLinkDraft],
    backend_tls: bool,
    src: Option<&str>,
) -> Result<Vec<LinkConfig>, ConfigError> {
    // Every backend seen so far: its link (None: plain UDP) and its pool.
    let mut seen: Vec<(SocketAddr, Option<LinkConfig>, &str)> = Vec::new();
    let how = |l: Option<LinkConfig>| match l {
        None => "udp",
        Some(l) if l.always() => l.transport.as_str(),
        Some(_) => "udp with large_over_tcp",
    };
    for p in pools {
        let d = drafts.iter().find(|d| d.pool == p.name);
        let (transport, large) = d.map_or((PoolTransport::Udp, false), |d| (d.transport, d.large_over_tcp));
        let err = |m: String| {
            let field = format!("pool {:?}: transport", p.name);
            match src {
                Some(s) => ConfigError::at(s, d.and_then(|d| d.span.clone()), field, m),
                None => ConfigError::new(field, m),
            }
        };
        if transport == PoolTransport::Tls && !backend_tls {
            return Err(err("\"tls\" needs a [backend_tls] section with the backends' CA".into()));
        }
        if large && transport != PoolTransport::Udp {
            return Err(err(format!(
                "large_over_tcp is for \"udp\" pools: a {:?} pool sends every request over its connection",
                transport.as_str()
            )));
        }
        for b in &p.backends {
            let link = (transport != PoolTransport::Udp || large).then_some(LinkConfig { addr: b.addr, transport });
            match seen.iter().find(|(a, _, _)| *a == b.addr) {
                None => seen.push((b.addr, link, &p.name)),
                Some((_, l, _)) if *l == link => {}
                Some((_, l, pool)) => {
                    return Err(err(format!(
                        "backend {} is reached over {} in pool {pool:?} and over {} here: one backend, one way",
                        b.addr,
                        how(*l),
                        how(link)
                    )))
                }
            }
        }
    }
    Ok(seen.into_iter().filter_map(|(_, l, _)| l).collect())
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn pools_choose_their_transport() {
        let c = Config::from_toml_str(
            "[[pool]]\nname = \"a\"\ntransport = \"tcp\"\nbackends = [\"127.0.0.1:5070\"]\n\
             [[pool]]\nname = \"b\"\nmethods = [\"REGISTER\"]\nlarge_over_tcp = true\nbackends = [\"127.0.0.1:5080\"]\n\
             [[pool]]\nname = \"c\"\nmethods = [\"OPTIONS\"]\nbackends = [\"127.0.0.1:5090\"]\n",
        )
        .unwrap();
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            c.links,
            vec![
                LinkConfig { addr: a("127.0.0.1:5070"), transport: PoolTransport::Tcp },
                LinkConfig { addr: a("127.0.0.1:5080"), transport: PoolTransport::Udp },
            ]
        );
        assert_eq!(c.stream.large_request_bytes, DEFAULT_LARGE_REQUEST_BYTES);
    }

    #[test]
    fn refusals_name_the_line() {
        let tls = "[[pool]]\nname = \"a\"\ntransport = \"tls\"\nbackends = [\"127.0.0.1:5070\"]\n";
        let e = Config::from_toml_str(tls).unwrap_err().to_string();
        assert!(e.contains("3:") && e.contains("[backend_tls]"), "{e}");
        let both = "[[pool]]\nname = \"a\"\ntransport = \"tcp\"\nbackends = [\"127.0.0.1:5070\"]\n\
                    [[pool]]\nname = \"b\"\nmethods = [\"REGISTER\"]\nbackends = [\"127.0.0.1:5070\"]\n";
        let e = Config::from_toml_str(both).unwrap_err().to_string();
        assert!(e.contains("one way") && e.contains("6:"), "{e}");
        let large =
            "[[pool]]\nname = \"a\"\ntransport = \"tcp\"\nlarge_over_tcp = true\nbackends = [\"127.0.0.1:1\"]\n";
        let e = Config::from_toml_str(large).unwrap_err().to_string();
        assert!(e.contains("3:") && e.contains("large_over_tcp"), "{e}");
        let bad = "[[pool]]\nname = \"a\"\ntransport = \"sctp\"\nbackends = [\"127.0.0.1:1\"]\n";
        assert!(Config::from_toml_str(bad).unwrap_err().to_string().contains("3:"));
        let ca =
            "[backend_tls]\nca = \"x.pem\"\ncert = \"c.pem\"\n[[pool]]\nname = \"a\"\nbackends = [\"127.0.0.1:1\"]\n";
        assert!(Config::from_toml_str(ca).unwrap_err().to_string().contains("cert and key"));
    }
}
