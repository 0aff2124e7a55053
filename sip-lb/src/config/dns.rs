//! Backends named in DNS: `host.name:port` in a pool's `backends`, and a
//! pool's `srv = "_sip._udp.farm.example"`; the `[dns]` section says which
//! servers to ask and how often at most. The control plane resolves them
//! (`control/dns.rs`); here they are only parsed, each error at its line.

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;

/// Names to resolve and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name servers (`ip:port`); empty: the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// A name is looked up again when its TTL runs out, but not sooner than
    /// this (also the retry interval after a failed lookup).
    pub min_ttl_secs: u64,
    /// ... and not later than this.
    pub max_ttl_secs: u64,
    /// Every name of every pool, in file order.
    pub names: Vec<DnsBackend>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            servers: Vec::new(),
            min_ttl_secs: DEFAULT_MIN_TTL_SECS,
            max_ttl_secs: DEFAULT_MAX_TTL_SECS,
            names: Vec::new(),
        }
    }
}

pub const DEFAULT_MIN_TTL_SECS: u64 = 5;
pub const DEFAULT_MAX_TTL_SECS: u64 = 3600;

/// One name of a pool.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsBackend {
    /// The pool's name.
    pub pool: String,
    pub target: DnsTarget,
    /// For a host name: the weight of each of its addresses (SRV records
    /// carry their own).
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DnsTarget {
    /// A and AAAA records of `name`, each address on `port`.
    Host { name: String, port: u16 },
    /// SRV records of `name` (RFC 2782): their targets' addresses, ports,
    /// priorities and weights.
    Srv { name: String },
}

impl std::fmt::Display for DnsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsTarget::Host { name, port } => write!(f, "{name}:{port}"),
            DnsTarget::Srv { name } => write!(f, "SRV {name}"),
        }
    }
}

impl DnsConfig {
    /// Whether pool `pool` has names to resolve.
    pub fn names_pool(&self, pool: &str) -> bool {
        self.names.iter().any(|n| n.pool == pool)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    #[serde(default)]
    servers: Vec<Spanned<String>>,
    min_ttl_seconds: Option<Spanned<u64>>,
    max_ttl_seconds: Option<Spanned<u64>>,
}

/// `[dns]` into `into` (whose `names` the pools fill).
pub(super) fn parse(src: &str, raw: RawDns, into: &mut DnsConfig) -> Result<(), ConfigError> {
    for s in &raw.servers {
        let t = s.get_ref().trim();
        let addr = t
            .parse::<SocketAddr>()
            .or_else(|_| t.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| {
                ConfigError::at(src, Some(s.span()), "dns.servers", format!("{t:?} is not ip:port or ip (port 53)"))
            })?;
        into.servers.push(addr);
    }
    if let Some(m) = &raw.min_ttl_seconds {
        if *m.get_ref() == 0 {
            return Err(ConfigError::at(src, Some(m.span()), "dns.min_ttl_seconds", "must be at least 1"));
        }
        into.min_ttl_secs = *m.get_ref();
    }
    if let Some(m) = &raw.max_ttl_seconds {
        if *m.get_ref() < into.min_ttl_secs {
            return Err(ConfigError::at(
                src,
                Some(m.span()),
                "dns.max_ttl_seconds",
                format!("must be at least dns.min_ttl_seconds ({})", into.min_ttl_secs),
            ));
        }
        into.max_ttl_secs = *m.get_ref();
    }
    Ok(())
}

/// `host.name:port` (or `host.name`, port 5060) as a backend: a DNS name
/// with at least one dot, letters, digits, `-` and `_`, that does not look
/// like a mistyped IPv4 address. Lowercased, without a trailing dot.
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let t = s.trim();
    let (host, port) = match t.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok().filter(|&p| p != 0)?),
        None => (t, super::DEFAULT_SIP_PORT),
    };
    let name = parse_name(host)?;
    Some((name, port))
}

/// A DNS name as above; SRV owner names (`_sip._udp.x`) pass too.
pub fn parse_name(s: &str) -> Option<String> {
    let host = s.trim().trim_end_matches('.');
    let labels: Vec<&str> = host.split('.').collect();
    let ok_label = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if labels.len() < 2 || host.len() > 253 || !labels.iter().all(ok_label) {
        return None;
    }
    if labels[..labels.len() - 1].iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn names() {
        assert_eq!(parse_host_port("sip-a.farm.example:5080"), Some(("sip-a.farm.example".into(), 5080)));
        assert_eq!(parse_host_port("SIP-A.Farm.Example."), Some(("sip-a.farm.example".into(), 5060)));
        for bad in ["nonsense", "10.0.0.x:5060", "host:5060", "a..b:5060", "a.b:0", "a.b:x", "-a.b", "[::1]:5060"] {
            assert_eq!(parse_host_port(bad), None, "{bad}");
        }
        assert_eq!(parse_name("_sip._udp.farm.example"), Some("_sip._udp.farm.example".into()));
    }

    #[test]
    fn pools_with_names_and_srv() {
        let c = Config::from_toml_str(
            "listen = [\"127.0.0.1:5060\"]\n[dns]\nservers = [\"10.1.1.1\"]\nmin_ttl_seconds = 1\n\
             [[pool]]\nname = \"farm\"\nsrv = \"_sip._udp.farm.example\"\n\
             [[pool]]\nname = \"reg\"\nmethods = [\"REGISTER\"]\n\
             backends = [\"10.0.0.1:5060\", { addr = \"reg.farm.example:5070\", weight = 3 }]\n",
        )
        .unwrap();
        assert_eq!(c.dns.servers, vec!["10.1.1.1:53".parse().unwrap()]);
        assert_eq!(c.dns.min_ttl_secs, 1);
        assert_eq!(
            c.dns.names,
            vec![
                DnsBackend {
                    pool: "farm".into(),
                    target: DnsTarget::Srv { name: "_sip._udp.farm.example".into() },
                    weight: 1
                },
                DnsBackend {
                    pool: "reg".into(),
                    target: DnsTarget::Host { name: "reg.farm.example".into(), port: 5070 },
                    weight: 3
                },
            ]
        );
        assert!(c.pools[0].backends.is_empty());
        assert_eq!(c.pools[1].backends.len(), 1);
        let e = Config::from_toml_str("[[pool]]\nname = \"p\"\nsrv = \"not a name\"\n").unwrap_err().to_string();
        assert!(e.starts_with("3:7:") && e.contains("pool \"p\": srv"), "{e}");
        let e = Config::from_toml_str("[[pool]]\nname = \"p\"\n").unwrap_err().to_string();
        assert!(e.contains("at least one backend"), "{e}");
    }
}
