//! The TOML file: serde shapes that keep every value's span, converted into
//! a [`Draft`] plus a [`Spans`] table so that validation (which also runs on
//! settings that came from flags) can still point at a line.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::addr::parse_sip_addr;
use super::error::ConfigError;
use super::stream::{parse_listen, ListenArg, RawTcp, RawTls, StreamConfig, StreamListen, TlsConfig};
use super::{secret, sip};
use super::{BackendConfig, HealthConfig, PoolConfig, SecurityConfig, SipConfig};

type Span = Range<usize>;

/// Settings read from the file, before flags and defaults are applied.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    pub listen: Vec<DraftListen>,
    /// The top-level `advertise` (or `--advertise`): for a single listen
    /// address only.
    pub advertise: Option<SocketAddr>,
    pub workers: Option<usize>,
    pub pools: Vec<PoolConfig>,
    pub iface: Option<String>,
    pub xdp_redirect_above_pps: Option<u32>,
    pub busy_poll_us: Option<u32>,
    pub pin: Option<super::PinMode>,
    pub datapath: Option<super::Datapath>,
    pub metrics: Option<SocketAddr>,
    pub health: HealthConfig,
    pub sip: SipConfig,
    pub security: SecurityConfig,
    pub shield: super::ShieldConfig,
    /// `tcp:`/`tls:` entries of `listen` (or `--listen`).
    pub streams: Vec<StreamListen>,
    pub stream: StreamConfig,
    pub tls: Option<TlsConfig>,
    pub stun: bool,
    pub record_route: super::stream::RecordRoute,
    pub path: super::stream::PathMode,
    /// Each written pool's `transport` and `large_over_tcp`.
    pub pool_links: Vec<super::links::PoolLinkDraft>,
    pub backend_tls: Option<super::links::BackendTlsConfig>,
    pub cluster: super::ClusterConfig,
    pub hep: Option<super::HepConfig>,
    pub dns: super::DnsConfig,
}

/// A listen entry before defaults: its advertise may be left out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DraftListen {
    pub addr: SocketAddr,
    pub advertise: Option<SocketAddr>,
}

/// Where each setting of a [`Draft`] was written. Indices follow the Draft's
/// vectors; settings added by flags have no entry.
#[derive(Debug, Default)]
pub(crate) struct Spans {
    pub listen: Vec<ListenSpans>,
    pub advertise: Option<Span>,
    pub workers: Option<Span>,
    pub health: HealthSpans,
    pub pools: Vec<PoolSpans>,
    /// Where each `[cluster] vip` was written.
    pub cluster_vips: super::cluster::VipSpans,
}

#[derive(Debug, Clone)]
pub(crate) struct ListenSpans {
    pub addr: Span,
    pub advertise: Option<Span>,
}

#[derive(Debug, Default)]
pub(crate) struct HealthSpans {
    pub interval_ms: Option<Span>,
    pub timeout_ms: Option<Span>,
    pub failures: Option<Span>,
    pub successes: Option<Span>,
}

#[derive(Debug, Default)]
pub(crate) struct PoolSpans {
    pub name: Option<Span>,
    pub methods: Vec<Span>,
    pub default: Option<Span>,
    pub backends: Option<Span>,
    /// (addr, weight) spans of each backend.
    pub backend: Vec<(Span, Option<Span>)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Vec<Spanned<RawListen>>>,
    advertise: Option<Spanned<String>>,
    workers: Option<Spanned<usize>>,
    #[serde(default)]
    pool: Vec<RawPool>,
    iface: Option<String>,
    xdp_redirect_above_pps: Option<u32>,
    busy_poll_us: Option<u32>,
    pin: Option<super::PinMode>,
    datapath: Option<super::Datapath>,
    metrics: Option<Spanned<String>>,
    health: Option<RawHealth>,
    sip: Option<RawSip>,
    security: Option<RawSecurity>,
    shield: Option<super::shield::RawShield>,
    tcp: Option<RawTcp>,
    tls: Option<RawTls>,
    stun: Option<bool>,
    record_route: Option<super::stream::RecordRoute>,
    path: Option<super::stream::PathMode>,
    backend_tls: Option<super::links::RawBackendTls>,
    cluster: Option<super::cluster::RawCluster>,
    hep: Option<super::hep::RawHep>,
    dns: Option<super::dns::RawDns>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSip {
    #[serde(default)]
    aliases: Vec<Spanned<String>>,
    schemes: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    proxy_require: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    secret: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    previous_secret: Option<Spanned<String>>,
    previous_secret_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    name: Spanned<String>,
    #[serde(default)]
    methods: Vec<Spanned<String>>,
    default: Option<Spanned<bool>>,
    transport: Option<Spanned<super::links::PoolTransport>>,
    large_over_tcp: Option<bool>,
    /// Optional when `srv` names the backends.
    backends: Option<Spanned<Vec<Spanned<RawBackend>>>>,
    srv: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    enabled: Option<bool>,
    interval_ms: Option<Spanned<u64>>,
    timeout_ms: Option<Spanned<u64>>,
    failures: Option<Spanned<u32>>,
    successes: Option<Spanned<u32>>,
    alive_codes: Option<Spanned<Vec<Spanned<RawCode>>>>,
}

/// A reply code (`200`) or class (`"2xx"`) in `health.alive_codes`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawCode {
    Number(i64),
    Text(String),
}

/// A listen entry: `"ip:port"` or `{ addr = "ip:port", advertise = "ip:port" }`.
struct RawListen {
    addr: String,
    /// None for the plain-string form, whose span is the whole value's.
    addr_span: Option<Span>,
    advertise: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawListen;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a listen address: "ip:port" or { addr = "ip:port", advertise = "ip:port" }"#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawListen, E> {
                Ok(RawListen { addr: v.to_owned(), addr_span: None, advertise: None })
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawListen, A::Error> {
                let mut addr: Option<Spanned<String>> = None;
                let mut advertise = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "addr" if addr.is_none() => addr = Some(map.next_value()?),
                        "advertise" if advertise.is_none() => advertise = Some(map.next_value()?),
                        "addr" | "advertise" => return Err(de::Error::custom(format!("duplicate field `{key}`"))),
                        other => return Err(de::Error::unknown_field(other, &["addr", "advertise"])),
                    }
                }
                let addr = addr.ok_or_else(|| de::Error::missing_field("addr"))?;
                let addr_span = Some(addr.span());
                Ok(RawListen { addr: addr.into_inner(), addr_span, advertise })
            }
        }
        d.deserialize_any(V)
    }
}

/// A backend: `"ip:port"` or `{ addr = "ip:port", weight = 2 }`.
struct RawBackend {
    addr: String,
    /// None for the plain-string form, whose span is the whole value's.
    addr_span: Option<Span>,
    weight: Option<Spanned<u32>>,
}

impl<'de> Deserialize<'de> for RawBackend {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawBackend;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a backend: "ip:port" or { addr = "ip:port", weight = N }"#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawBackend, E> {
                Ok(RawBackend { addr: v.to_owned(), addr_span: None, weight: None })
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawBackend, A::Error> {
                let mut addr: Option<Spanned<String>> = None;
                let mut weight = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "addr" if addr.is_none() => addr = Some(map.next_value()?),
                        "weight" if weight.is_none() => weight = Some(map.next_value()?),
                        "addr" | "weight" => return Err(de::Error::custom(format!("duplicate field `{key}`"))),
                        other => return Err(de::Error::unknown_field(other, &["addr", "weight"])),
                    }
                }
                let addr = addr.ok_or_else(|| de::Error::missing_field("addr"))?;
                let addr_span = Some(addr.span());
                Ok(RawBackend { addr: addr.into_inner(), addr_span, weight })
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses the text into settings and their spans. Syntax, type, unknown-key
/// and address errors are reported here, and everything about `[sip]` and
/// `[security]` (which flags cannot change); everything else in `validate`.
/// `secret_file`s are read here, relative to `base` if given.
pub(crate) fn parse(src: &str, base: Option<&Path>) -> Result<(Draft, Spans), ConfigError> {
    let raw: RawConfig = toml::from_str(src).map_err(|e| {
        let span = e.span();
        let field = span.as_ref().map(|s| field_at(src, s.start)).unwrap_or_default();
        ConfigError::at(src, span, field, e.message().trim_end().to_owned())
    })?;
    let mut draft = Draft::default();
    let mut spans = Spans::default();
    let addr = |s: &Spanned<String>, field: String| {
        parse_sip_addr(s.get_ref()).map_err(|m| ConfigError::at(src, Some(s.span()), field, m))
    };

    for l in raw.listen.unwrap_or_default() {
        let span = l.span();
        let l = l.into_inner();
        let addr_span = l.addr_span.unwrap_or(span);
        let listen_err = |m| ConfigError::at(src, Some(addr_span.clone()), "listen", m);
        if let ListenArg::Stream(s) = parse_listen(&l.addr).map_err(listen_err)? {
            if l.advertise.is_some() {
                return Err(listen_err(format!(
                    "{}:{}: advertise is not supported on a stream listener yet (our Via names a UDP listen address)",
                    s.transport.as_str(),
                    s.addr
                )));
            }
            draft.streams.push(s);
            continue;
        }
        let a = parse_sip_addr(l.addr.strip_prefix("udp:").unwrap_or(&l.addr))
            .map_err(|m| ConfigError::at(src, Some(addr_span.clone()), "listen", m))?;
        let advertise = match &l.advertise {
            Some(adv) => Some(addr(adv, format!("listen \"{a}\": advertise"))?),
            None => None,
        };
        draft.listen.push(DraftListen { addr: a, advertise });
        spans.listen.push(ListenSpans { addr: addr_span, advertise: l.advertise.map(|a| a.span()) });
    }
    if let Some(a) = raw.advertise {
        draft.advertise = Some(addr(&a, "advertise".into())?);
        spans.advertise = Some(a.span());
    }
    if let Some(w) = raw.workers {
        spans.workers = Some(w.span());
        draft.workers = Some(w.into_inner());
    }
    draft.iface = raw.iface;
    draft.xdp_redirect_above_pps = raw.xdp_redirect_above_pps;
    draft.busy_poll_us = raw.busy_poll_us;
    draft.pin = raw.pin;
    draft.datapath = raw.datapath;
    if let Some(m) = raw.metrics {
        let sa = m.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
            ConfigError::at(
                src,
                Some(m.span()),
                "metrics",
                format!("invalid socket address {:?} (expected ip:port)", m.get_ref()),
            )
        })?;
        draft.metrics = Some(sa);
    }
    if let Some(h) = raw.health {
        let d = HealthConfig::default();
        let take = |v: Option<Spanned<u64>>, dflt: u64, sp: &mut Option<Span>| {
            v.map_or(dflt, |v| {
                *sp = Some(v.span());
                v.into_inner()
            })
        };
        // Writing a [health] section turns probing on unless it says otherwise.
        draft.health.enabled = h.enabled.unwrap_or(true);
        draft.health.interval_ms = take(h.interval_ms, d.interval_ms, &mut spans.health.interval_ms);
        draft.health.timeout_ms = take(h.timeout_ms, d.timeout_ms, &mut spans.health.timeout_ms);
        draft.health.failures = h.failures.map_or(d.failures, |v| {
            spans.health.failures = Some(v.span());
            v.into_inner()
        });
        draft.health.successes = h.successes.map_or(d.successes, |v| {
            spans.health.successes = Some(v.span());
            v.into_inner()
        });
        if let Some(list) = h.alive_codes {
            let mut alive = super::AliveCodes::default();
            for c in list.get_ref() {
                let text = match c.get_ref() {
                    RawCode::Number(n) => n.to_string(),
                    RawCode::Text(t) => t.clone(),
                };
                let entry = super::AliveCodes::parse_entry(&text).ok_or_else(|| {
                    ConfigError::at(
                        src,
                        Some(c.span()),
                        "health.alive_codes",
                        format!("{text:?} is not a status code (100-699) or a class such as \"2xx\""),
                    )
                })?;
                alive = alive.union(entry);
            }
            if alive.is_empty() {
                return Err(ConfigError::at(
                    src,
                    Some(list.span()),
                    "health.alive_codes",
                    "must list at least one code, or every backend would be down",
                ));
            }
            draft.health.alive = alive;
        }
    }

    if let Some(raw) = raw.sip {
        draft.sip = parse_sip(src, raw)?;
    }
    if let Some(raw) = raw.shield {
        draft.shield = super::shield::parse(src, raw)?;
    }
    if let Some(raw) = raw.security {
        draft.security = parse_security(src, raw, base)?;
    }
    if let Some(raw) = raw.tcp {
        draft.stream = raw.into_config().map_err(|(field, m)| ConfigError::at(src, None, field, m))?;
    }
    draft.tls = raw.tls.map(|t| t.into_config(base));
    draft.stun = raw.stun.unwrap_or(false);
    draft.record_route = raw.record_route.unwrap_or_default();
    draft.path = raw.path.unwrap_or_default();
    if let Some(t) = raw.backend_tls {
        draft.backend_tls =
            Some(t.into_config(base).map_err(|m| ConfigError::at(src, None, "backend_tls".to_owned(), m))?);
    }
    if let Some(raw) = raw.cluster {
        (draft.cluster, spans.cluster_vips) = super::cluster::parse(src, raw)?;
    }
    if let Some(raw) = raw.hep {
        draft.hep = Some(super::hep::parse(src, raw)?);
    }
    if let Some(raw) = raw.dns {
        super::dns::parse(src, raw, &mut draft.dns)?;
    }

    for p in raw.pool {
        let name = p.name.get_ref().clone();
        let mut ps = PoolSpans { name: Some(p.name.span()), ..PoolSpans::default() };
        let methods: Vec<String> = p
            .methods
            .into_iter()
            .map(|m| {
                ps.methods.push(m.span());
                m.into_inner()
            })
            .collect();
        ps.default = p.default.as_ref().map(|d| d.span());
        ps.backends = p.backends.as_ref().map(|b| b.span());
        let mut backends = Vec::new();
        let dns_before = draft.dns.names.len();
        if let Some(srv) = &p.srv {
            let Some(n) = super::dns::parse_name(srv.get_ref()) else {
                return Err(ConfigError::at(
                    src,
                    Some(srv.span()),
                    format!("pool {name:?}: srv"),
                    format!("{:?} is not a DNS name such as \"_sip._udp.farm.example\"", srv.get_ref()),
                ));
            };
            let target = super::dns::DnsTarget::Srv { name: n };
            draft.dns.names.push(super::dns::DnsBackend { pool: name.clone(), target, weight: 1 });
        }
        for b in p.backends.map(|b| b.into_inner()).unwrap_or_default() {
            let span = b.span();
            let b = b.into_inner();
            let addr_span = b.addr_span.unwrap_or(span);
            let field = format!("pool {name:?}: backend {:?}", b.addr);
            let a = match parse_sip_addr(&b.addr) {
                Ok(a) => a,
                // A host name: resolved by the control plane (control/dns.rs).
                Err(m) => match super::dns::parse_host_port(&b.addr) {
                    Some((host, port)) => {
                        let weight = b.weight.as_ref().map_or(1, |w| *w.get_ref());
                        if weight == 0 {
                            let at = b.weight.as_ref().map(|w| w.span());
                            return Err(ConfigError::at(src, at, format!("{field}: weight"), "must be at least 1"));
                        }
                        let target = super::dns::DnsTarget::Host { name: host, port };
                        let n = super::dns::DnsBackend { pool: name.clone(), target, weight };
                        if draft.dns.names.contains(&n) {
                            return Err(ConfigError::at(src, Some(addr_span), field, "listed twice in this pool"));
                        }
                        draft.dns.names.push(n);
                        continue;
                    }
                    None => return Err(ConfigError::at(src, Some(addr_span.clone()), field, m)),
                },
            };
            ps.backend.push((addr_span, b.weight.as_ref().map(|w| w.span())));
            backends.push(BackendConfig { addr: a, weight: b.weight.map_or(1, |w| w.into_inner()) });
        }
        let default = p.default.map_or(methods.is_empty(), |d| d.into_inner());
        // Links are made for the addresses written here; a name's answers
        // change the pool, not the links, so they would be sent as datagrams.
        if let Some(t) = p.transport.as_ref().filter(|t| *t.get_ref() != super::links::PoolTransport::Udp) {
            if draft.dns.names.len() > dns_before {
                return Err(ConfigError::at(
                    src,
                    Some(t.span()),
                    format!("pool {name:?}: transport"),
                    format!(
                        "{:?} needs backends written as addresses: backends found by DNS (srv or a host name) are \
                         reached over UDP only",
                        t.get_ref().as_str()
                    ),
                ));
            }
        }
        draft.pool_links.push(super::links::PoolLinkDraft {
            pool: name.clone(),
            transport: p.transport.as_ref().map(|t| *t.get_ref()).unwrap_or_default(),
            large_over_tcp: p.large_over_tcp.unwrap_or(false),
            span: Some(p.transport.as_ref().map_or(p.name.span(), |t| t.span())),
        });
        draft.pools.push(PoolConfig { name, methods, default, backends });
        spans.pools.push(ps);
    }
    Ok((draft, spans))
}

fn parse_sip(src: &str, raw: RawSip) -> Result<SipConfig, ConfigError> {
    /// Parses every entry, rejecting bad and repeated ones at their span.
    fn each<T: PartialEq>(
        src: &str,
        list: &[Spanned<String>],
        field: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        let mut out = Vec::with_capacity(list.len());
        for v in list {
            let at = |m: String| ConfigError::at(src, Some(v.span()), field, m);
            let t = parse(v.get_ref()).map_err(at)?;
            if out.contains(&t) {
                return Err(at(format!("{:?} is listed twice", v.get_ref())));
            }
            out.push(t);
        }
        Ok(out)
    }

    let schemes = match raw.schemes {
        Some(list) if list.get_ref().is_empty() => {
            return Err(ConfigError::at(
                src,
                Some(list.span()),
                "sip.schemes",
                "must list at least one scheme (leave it out to accept every scheme)",
            ))
        }
        Some(list) => Some(each(src, list.get_ref(), "sip.schemes", sip::parse_scheme)?),
        None => None,
    };
    Ok(SipConfig {
        aliases: each(src, &raw.aliases, "sip.aliases", sip::parse_alias)?,
        schemes,
        proxy_require: each(src, &raw.proxy_require, "sip.proxy_require", sip::parse_option_tag)?,
    })
}

fn parse_security(src: &str, raw: RawSecurity, base: Option<&Path>) -> Result<SecurityConfig, ConfigError> {
    let current =
        secret::load(src, secret::Source { name: "secret", inline: raw.secret, file: raw.secret_file }, base)?;
    let previous = secret::load(
        src,
        secret::Source { name: "previous_secret", inline: raw.previous_secret, file: raw.previous_secret_file },
        base,
    )?;
    if let (None, Some(p)) = (&current, &previous) {
        return Err(ConfigError::at(
            src,
            Some(p.span.clone()),
            format!("security.{}", p.key),
            "a previous secret is only accepted alongside the current one: set secret or secret_file",
        ));
    }
    Ok(SecurityConfig { secret: current.map(|s| s.bytes), previous: previous.map(|s| s.bytes) })
}

/// Best-effort field path for a serde/TOML error at byte `offset`: the
/// enclosing `[table]` / `[[pool]]` (with the pool's name if written) and the
/// `key =` the offset sits in or after on its line.
fn field_at(src: &str, offset: usize) -> String {
    let offset = offset.min(src.len());
    let line_start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = src[offset..].find('\n').map_or(src.len(), |i| offset + i);
    let line = &src[line_start..line_end];
    let col = offset - line_start;

    let mut table = String::new();
    let mut pool_n = 0usize;
    let mut section_start = 0usize;
    let mut pos = 0usize;
    for l in src[..line_start].split_inclusive('\n') {
        let t = l.trim();
        if t.starts_with('[') {
            let name = t.trim_start_matches('[').split(']').next().unwrap_or("").trim();
            if name == "pool" && t.starts_with("[[") {
                pool_n += 1;
            }
            table = name.to_owned();
            section_start = pos + l.len();
        }
        pos += l.len();
    }
    if table == "pool" {
        table =
            section_name(&src[section_start..]).map_or_else(|| format!("pool #{pool_n}"), |n| format!("pool {n:?}"));
    }

    let is_key = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let rest = &line[col..];
    let here: String = rest.chars().take_while(|&c| is_key(c)).collect();
    let key = if !here.is_empty() && rest[here.len()..].trim_start().starts_with('=') {
        Some(here)
    } else {
        line[..col].rfind('=').map(|eq| {
            let before = line[..eq].trim_end();
            let start = before.rfind(|c: char| !is_key(c)).map_or(0, |i| i + 1);
            before[start..].to_owned()
        })
    };
    match (table.is_empty(), key) {
        (_, Some(k)) if k.is_empty() => table,
        (true, Some(k)) => k,
        (false, Some(k)) if table.starts_with("pool") => format!("{table}: {k}"),
        (false, Some(k)) => format!("{table}.{k}"),
        (_, None) => table,
    }
}

/// `name = "..."` within a table's text (up to the next header).
fn section_name(section: &str) -> Option<String> {
    for l in section.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            return None;
        }
        if let Some(v) = t.strip_prefix("name") {
            let v = v.trim_start().strip_prefix('=')?.trim_start().strip_prefix('"')?;
            return v.split('"').next().map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths() {
        let src = "workers = \"x\"\n[[pool]]\nname = \"p\"\nbackends = [{ addr = \"a\", weight = -1 }]\n[health]\ninterval_ms = 1\n";
        assert_eq!(field_at(src, src.find("\"x\"").unwrap()), "workers");
        assert_eq!(field_at(src, src.find("-1").unwrap()), "pool \"p\": weight");
        assert_eq!(field_at(src, src.find("\"a\"").unwrap()), "pool \"p\": addr");
        assert_eq!(field_at(src, src.find("interval_ms").unwrap()), "health.interval_ms");
    }
}
