//! The `[cluster]` section: the anycast VIP(s) this node announces while it
//! can serve (docs/scale-out.md). sip-lb only puts the addresses on an
//! interface it owns; BIRD (`direct` + `bgp`) announces them.
//!
//! ```toml
//! [cluster]
//! vip = ["198.51.100.10", "2001:db8::10"]   # or vip = "198.51.100.10"
//! interface = "siplb-vip"                   # the interface sip-lb creates
//! ```

use std::net::IpAddr;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Listen};

/// The interface sip-lb creates for the VIPs when `interface` is not set.
pub const DEFAULT_VIP_INTERFACE: &str = "siplb-vip";

/// `[cluster]`: no VIPs (the default) means a stand-alone node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Addresses announced while this node is ready, in the order written.
    pub vips: Vec<IpAddr>,
    /// The interface sip-lb creates and puts them on (BIRD's `direct`
    /// protocol watches it).
    pub interface: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { vips: Vec::new(), interface: DEFAULT_VIP_INTERFACE.to_owned() }
    }
}

/// `vip = "IP"` or `vip = ["IP", ...]` (the single form takes the span of
/// the whole value: serde's untagged enums lose `Spanned`).
enum RawVips {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for RawVips {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawVips;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#"an IP address "IP" or a list ["IP", ...]"#)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawVips, E> {
                Ok(RawVips::One(v.to_owned()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawVips, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element()? {
                    v.push(x);
                }
                Ok(RawVips::Many(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    vip: Option<Spanned<RawVips>>,
    interface: Option<Spanned<String>>,
}

/// Where each VIP was written, for the checks against `listen`.
pub(super) type VipSpans = Vec<Range<usize>>;

pub(super) fn parse(src: &str, raw: RawCluster) -> Result<(ClusterConfig, VipSpans), ConfigError> {
    let mut c = ClusterConfig::default();
    let mut spans = Vec::new();
    let list = match raw.vip.map(|v| (v.span(), v.into_inner())) {
        None => Vec::new(),
        Some((span, RawVips::One(v))) => vec![Spanned::new(span, v)],
        Some((span, RawVips::Many(v))) if v.is_empty() => {
            return Err(ConfigError::at(
                src,
                Some(span),
                "cluster.vip",
                "must list at least one address (leave [cluster] out for a stand-alone node)",
            ))
        }
        Some((_, RawVips::Many(v))) => v,
    };
    for v in list {
        let at = |m: String| ConfigError::at(src, Some(v.span()), "cluster.vip", m);
        let ip: IpAddr =
            v.get_ref().trim().parse().map_err(|_| at(format!("{:?} is not an IP address", v.get_ref())))?;
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
            return Err(at(format!("{ip} cannot be announced (unspecified, loopback or multicast)")));
        }
        if c.vips.contains(&ip) {
            return Err(at(format!("{ip} is listed twice")));
        }
        c.vips.push(ip);
        spans.push(v.span());
    }
    if let Some(i) = raw.interface {
        let name = i.get_ref();
        // IFNAMSIZ is 16 with the NUL; the kernel refuses '/' and whitespace.
        if name.is_empty() || name.len() > 15 || name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
        {
            return Err(ConfigError::at(
                src,
                Some(i.span()),
                "cluster.interface",
                format!("{name:?} is not an interface name (1-15 characters, no '/', ':' or spaces)"),
            ));
        }
        c.interface = name.clone();
    }
    Ok((c, spans))
}

/// Every VIP must be what some listen address advertises: clients send to
/// it, it is in our Via, and the socket bound to it answers from it.
pub(super) fn check_listen(
    c: &ClusterConfig,
    spans: Option<(&str, &VipSpans)>,
    listen: &[Listen],
) -> Result<(), ConfigError> {
    for (i, vip) in c.vips.iter().enumerate() {
        if listen.iter().any(|l| l.advertise.ip() == *vip) {
            continue;
        }
        let msg = format!(
            "no listen address advertises {vip}: add listen = [\"{}\"] (every node listens on the VIP and \
             puts it in its Via)",
            std::net::SocketAddr::new(*vip, super::DEFAULT_SIP_PORT)
        );
        return Err(match spans {
            Some((src, s)) => ConfigError::at(src, s.get(i).cloned(), "cluster.vip", msg),
            None => ConfigError::new("cluster.vip", msg),
        });
    }
    Ok(())
}
