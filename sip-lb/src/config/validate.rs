//! Flags on top of the file, defaults, and the semantic checks. Errors point
//! at the file when the setting came from it, else name the flag.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;

use super::error::ConfigError;
use super::file::{Draft, DraftListen, PoolSpans, Spans};
use super::sip::is_token_byte;
use super::stream::{ListenArg, StreamListen, Transport};
use super::{
    default_workers, BackendConfig, Config, Listen, PoolConfig, RunArgs, DEFAULT_POOL, FOLLOW_INVITE, INVITE, REGISTER,
    REGISTRAR_POOL,
};

/// Applies `--listen` etc. to the draft. Overridden settings lose their
/// spans, so later errors about them name the flag instead of a line.
pub(crate) fn apply_flags(d: &mut Draft, spans: &mut Spans, a: &RunArgs) -> Result<(), ConfigError> {
    if !a.listen.is_empty() {
        let udp = |l: &ListenArg| match *l {
            ListenArg::Udp(addr) => Some(DraftListen { addr, advertise: None }),
            ListenArg::Stream(_) => None,
        };
        d.listen = a.listen.iter().filter_map(udp).collect();
        d.streams = a
            .listen
            .iter()
            .filter_map(|l| match *l {
                ListenArg::Stream(s) => Some(s),
                ListenArg::Udp(_) => None,
            })
            .collect();
        spans.listen.clear();
    }
    if let Some(adv) = a.advertise {
        d.advertise = Some(adv);
        spans.advertise = None;
    }
    if let Some(w) = a.workers {
        d.workers = Some(w);
        spans.workers = None;
    }
    if a.iface.is_some() {
        d.iface = a.iface.clone();
    }
    if a.xdp_redirect_above.is_some() {
        d.xdp_redirect_above_pps = a.xdp_redirect_above;
    }
    if a.pin.is_some() {
        d.pin = a.pin;
    }
    if a.datapath.is_some() {
        d.datapath = a.datapath;
    }
    if a.busy_poll.is_some() {
        d.busy_poll_us = a.busy_poll;
    }
    if a.metrics.is_some() {
        d.metrics = a.metrics;
    }
    if !a.backend.is_empty() {
        let i = match d.pools.iter().position(|p| p.default) {
            Some(i) => i,
            None => new_pool(d, DEFAULT_POOL, &[], true),
        };
        add_backends(&mut d.pools[i], &a.backend, "--backend")?;
    }
    if !a.registrar.is_empty() {
        let i = match d.pools.iter().position(|p| p.methods.iter().any(|m| m == REGISTER)) {
            Some(i) => i,
            None => new_pool(d, REGISTRAR_POOL, &[REGISTER], false),
        };
        add_backends(&mut d.pools[i], &a.registrar, "--registrar")?;
    }
    Ok(())
}

fn new_pool(d: &mut Draft, name: &str, methods: &[&str], default: bool) -> usize {
    d.pools.push(PoolConfig {
        name: name.to_owned(),
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        default,
        backends: Vec::new(),
    });
    d.pools.len() - 1
}

fn add_backends(pool: &mut PoolConfig, addrs: &[SocketAddr], flag: &str) -> Result<(), ConfigError> {
    for &addr in addrs {
        if pool.backends.iter().any(|b| b.addr == addr) {
            return Err(ConfigError::new(flag, format!("{addr} is already a backend of pool {:?}", pool.name)));
        }
        pool.backends.push(BackendConfig { addr, weight: 1 });
    }
    Ok(())
}

/// Where to point an error: the source text and spans, if the draft came
/// from a file.
struct Locator<'a> {
    src: Option<(&'a str, &'a Spans)>,
}

impl Locator<'_> {
    fn err(
        &self,
        span: impl FnOnce(&Spans) -> Option<Range<usize>>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> ConfigError {
        match self.src {
            Some((src, spans)) => ConfigError::at(src, span(spans), field, msg),
            None => ConfigError::new(field, msg),
        }
    }
}

/// Listen addresses a config may have (`proxy::branch::with_arrival`).
const MAX_LISTEN: usize = 256;

/// Fills in defaults and checks everything that serde cannot.
pub(crate) fn finish(d: Draft, src: Option<(&str, &Spans)>) -> Result<Config, ConfigError> {
    let loc = Locator { src };
    let listen = check_listen(d.listen, d.advertise, &loc)?;

    let workers = d.workers.unwrap_or_else(default_workers);
    if workers == 0 {
        let field = if loc.src.is_some_and(|(_, s)| s.workers.is_some()) { "workers" } else { "--workers" };
        return Err(loc.err(|s| s.workers.clone(), field, "must be at least 1"));
    }

    let h = d.health;
    for (field, v, span) in [
        ("health.interval_ms", h.interval_ms, (|s: &Spans| s.health.interval_ms.clone()) as fn(&Spans) -> _),
        ("health.timeout_ms", h.timeout_ms, |s: &Spans| s.health.timeout_ms.clone()),
        ("health.failures", u64::from(h.failures), |s: &Spans| s.health.failures.clone()),
        ("health.successes", u64::from(h.successes), |s: &Spans| s.health.successes.clone()),
    ] {
        if v == 0 {
            return Err(loc.err(span, field, "must be at least 1"));
        }
    }
    if h.timeout_ms > h.interval_ms {
        return Err(loc.err(
            |s| s.health.timeout_ms.clone(),
            "health.timeout_ms",
            format!(
                "{} ms is longer than health.interval_ms ({} ms): a probe must end before the next one starts",
                h.timeout_ms, h.interval_ms
            ),
        ));
    }

    if d.datapath == Some(super::Datapath::Afxdp) && d.iface.is_none() {
        return Err(ConfigError::new(
            "datapath",
            "\"afxdp\" needs an interface (`iface` / `--iface`) to bind AF_XDP sockets to".to_owned(),
        ));
    }
    check_pools(&d.pools, &d.dns, &loc)?;
    check_families(&d.pools, &listen, &loc)?;
    check_streams(&d.streams, &listen, d.tls.is_some())?;
    let links = super::links::derive(&d.pools, &d.pool_links, d.backend_tls.is_some(), loc.src.map(|(s, _)| s))?;
    super::cluster::check_listen(&d.cluster, loc.src.map(|(src, s)| (src, &s.cluster_vips)), &listen)?;

    Ok(Config {
        listen,
        workers,
        pools: d.pools,
        iface: d.iface,
        xdp_redirect_above_pps: d.xdp_redirect_above_pps.unwrap_or(super::DEFAULT_XDP_REDIRECT_ABOVE_PPS),
        pin: d.pin.unwrap_or_default(),
        datapath: d.datapath,
        busy_poll_us: d.busy_poll_us.unwrap_or(0),
        metrics: d.metrics,
        health: h,
        sip: d.sip,
        security: d.security,
        shield: d.shield,
        streams: d.streams,
        stream: d.stream,
        tls: d.tls,
        stun: d.stun,
        record_route: d.record_route,
        path: d.path,
        links,
        backend_tls: d.backend_tls,
        cluster: d.cluster,
        hep: d.hep,
        dns: d.dns,
    })
}

/// Stream listeners: unique, TLS ones with a `[tls]` section, and each with
/// a UDP listen address of its family, which our Via names (backends answer
/// over UDP, the flow token leads the response to the connection).
fn check_streams(streams: &[StreamListen], udp: &[Listen], tls: bool) -> Result<(), ConfigError> {
    let v4 = |a: SocketAddr| a.ip().to_canonical().is_ipv4();
    for (i, s) in streams.iter().enumerate() {
        let name = format!("{}:{}", s.transport.as_str(), s.addr);
        if streams[..i].iter().any(|o| o.addr == s.addr) {
            return Err(ConfigError::new("listen", format!("{name}: {} is listed twice", s.addr)));
        }
        if s.transport == Transport::Tls && !tls {
            return Err(ConfigError::new("listen", format!("{name} needs a [tls] section with cert and key")));
        }
        if !udp.iter().any(|l| v4(l.addr) == v4(s.addr)) {
            return Err(ConfigError::new(
                "listen",
                format!("{name} needs a UDP listen address of its family: backends answer to it"),
            ));
        }
    }
    Ok(())
}

/// Defaults and checks for the listen addresses and what each advertises.
fn check_listen(entries: Vec<DraftListen>, top: Option<SocketAddr>, loc: &Locator) -> Result<Vec<Listen>, ConfigError> {
    let lc = ListenCheck::new(loc);
    let mut entries =
        if entries.is_empty() { vec![DraftListen { addr: Config::DEFAULT_LISTEN, advertise: None }] } else { entries };
    let several = entries.len() > 1;
    if let Some(a) = top {
        lc.apply_top_advertise(&mut entries, a)?;
    }
    let mut out: Vec<Listen> = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        lc.check_slot(i, e.addr, &out)?;
        // Where this entry's advertise was written: its own, the top-level one,
        // or nowhere (it defaults to the address itself).
        let own = loc.src.is_some_and(|(_, s)| s.listen.get(i).is_some_and(|l| l.advertise.is_some()));
        let advertise = lc.resolve_advertise(i, e, own, several)?;
        lc.check_advertise_unique(i, e, advertise, own, &out)?;
        out.push(Listen { addr: e.addr, advertise });
    }
    Ok(out)
}

/// What [`check_listen`]'s errors name and point at.
struct ListenCheck<'a, 'b> {
    loc: &'a Locator<'b>,
    /// Field names: a setting from the file is named by its key, one from
    /// flags (or the default) by its flag.
    lfield: &'static str,
    /// The top-level `advertise` came from the file (not --advertise).
    top_in_file: bool,
    top_field: &'static str,
}

fn top_span(s: &Spans) -> Option<Range<usize>> {
    s.advertise.clone()
}

fn listen_addr_span(i: usize) -> impl Fn(&Spans) -> Option<Range<usize>> {
    move |s: &Spans| s.listen.get(i).map(|l| l.addr.clone())
}

/// The entry's own advertise, or its address if it has none.
fn own_advertise_span(i: usize) -> impl Fn(&Spans) -> Option<Range<usize>> {
    move |s: &Spans| s.listen.get(i).and_then(|l| l.advertise.clone().or_else(|| Some(l.addr.clone())))
}

fn unusable(a: SocketAddr) -> bool {
    a.ip().is_unspecified() || a.port() == 0
}

impl<'a, 'b> ListenCheck<'a, 'b> {
    fn new(loc: &'a Locator<'b>) -> Self {
        let from_file = loc.src.is_some_and(|(_, s)| !s.listen.is_empty());
        let top_in_file = loc.src.is_some_and(|(_, s)| s.advertise.is_some());
        ListenCheck {
            loc,
            lfield: if from_file { "listen" } else { "--listen" },
            top_in_file,
            top_field: if top_in_file { "advertise" } else { "--advertise" },
        }
    }

    /// The top-level `advertise` (or --advertise) becomes the single listen
    /// entry's advertise.
    fn apply_top_advertise(&self, entries: &mut [DraftListen], a: SocketAddr) -> Result<(), ConfigError> {
        let (loc, top_field) = (self.loc, self.top_field);
        if entries.len() > 1 {
            return Err(loc.err(
                top_span,
                top_field,
                format!(
                    "there are {} listen addresses, so one `advertise` cannot serve them all; \
                     give each its own: listen = [{{ addr = \"{}\", advertise = \"ip:port\" }}, ...]",
                    entries.len(),
                    entries[0].addr
                ),
            ));
        }
        if unusable(a) {
            return Err(loc.err(
                top_span,
                top_field,
                format!(
                    "{a} is a wildcard address or port 0; advertise the address clients and backends should send to"
                ),
            ));
        }
        // --advertise overrides the file, like every scalar flag; the file
        // saying it twice is ambiguous.
        if self.top_in_file && entries[0].advertise.is_some() {
            return Err(loc.err(
                top_span,
                top_field,
                format!("listen \"{}\" already sets its advertise; keep one of the two", entries[0].addr),
            ));
        }
        entries[0].advertise = Some(a);
        Ok(())
    }

    /// Entry `i` fits in the branch's listener byte and is not a duplicate.
    fn check_slot(&self, i: usize, a: SocketAddr, out: &[Listen]) -> Result<(), ConfigError> {
        // Our branch records the arrival listener in one byte.
        if i >= MAX_LISTEN {
            return Err(self.loc.err(
                listen_addr_span(i),
                self.lfield,
                format!("at most {MAX_LISTEN} listen addresses"),
            ));
        }
        if out.iter().any(|l| l.addr == a) {
            return Err(self.loc.err(listen_addr_span(i), self.lfield, format!("{a} is listed twice")));
        }
        Ok(())
    }

    fn advertise_field(&self, a: SocketAddr) -> String {
        format!("{} \"{a}\": advertise", self.lfield)
    }

    /// What entry `i` advertises: as given, else its own address if that
    /// is usable in Via/Record-Route.
    fn resolve_advertise(
        &self,
        i: usize,
        e: &DraftListen,
        own: bool,
        several: bool,
    ) -> Result<SocketAddr, ConfigError> {
        let (loc, lfield, a) = (self.loc, self.lfield, e.addr);
        match e.advertise {
            Some(adv) if unusable(adv) && own => Err(loc.err(
                own_advertise_span(i),
                self.advertise_field(a),
                format!(
                    "{adv} is a wildcard address or port 0; advertise the address clients and backends should send to"
                ),
            )),
            Some(adv) => Ok(adv),
            None if unusable(a) => {
                let how = if several {
                    format!(
                        "write it as {{ addr = \"{a}\", advertise = \"ip:port\" }} with this host's reachable address"
                    )
                } else {
                    "set `advertise` (or --advertise) to this host's reachable ip:port".to_owned()
                };
                let what = if a.ip().is_unspecified() { "a wildcard address" } else { "on port 0 (any port)" };
                Err(loc.err(
                    listen_addr_span(i),
                    lfield,
                    format!("{a} is {what}, so it cannot be advertised in Via/Record-Route; {how}"),
                ))
            }
            None => Ok(a),
        }
    }

    /// No two entries advertise the same address.
    fn check_advertise_unique(
        &self,
        i: usize,
        e: &DraftListen,
        advertise: SocketAddr,
        own: bool,
        out: &[Listen],
    ) -> Result<(), ConfigError> {
        let Some(other) = out.iter().find(|l| l.advertise == advertise) else {
            return Ok(());
        };
        let a = e.addr;
        // Blame the advertise as written: own, top-level, or the address.
        let top_given = !own && e.advertise.is_some();
        let field = match (own, top_given) {
            (true, _) => self.advertise_field(a),
            (false, true) => self.top_field.to_owned(),
            (false, false) => self.lfield.to_owned(),
        };
        Err(self.loc.err(
            |s| match (own, top_given) {
                (true, _) => own_advertise_span(i)(s),
                (false, true) => top_span(s),
                (false, false) => listen_addr_span(i)(s),
            },
            field,
            format!(
                "{a} would advertise {advertise}, as listen \"{}\" does; responses come back \
                 to the address in our Via, so each listen address needs its own advertise",
                other.addr
            ),
        ))
    }
}

/// Every backend can be reached from a listen socket of its family (IPv4 or
/// IPv6, a v4-mapped IPv6 address counting as IPv4): sockets are bound
/// IPv6-only, and without one of the family its traffic would be dropped.
fn check_families(pools: &[PoolConfig], listen: &[Listen], loc: &Locator) -> Result<(), ConfigError> {
    let v4 = |a: SocketAddr| a.ip().to_canonical().is_ipv4();
    for (i, p) in pools.iter().enumerate() {
        for (j, b) in p.backends.iter().enumerate() {
            let fam = v4(b.addr);
            if !listen.iter().any(|l| v4(l.addr) == fam) {
                let (name, other) = if fam { ("IPv4", "IPv6") } else { ("IPv6", "IPv4") };
                return Err(loc.err(
                    |s| ps(s, i).and_then(|p| p.backend.get(j)).map(|b| b.0.clone()),
                    format!("pool {:?}: backend \"{}\"", p.name, b.addr),
                    format!(
                        "an {name} backend needs an {name} listen address (add one to listen; \
                         all listen addresses are {other})"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_pools(pools: &[PoolConfig], dns: &super::DnsConfig, loc: &Locator) -> Result<(), ConfigError> {
    if pools.is_empty() {
        return Err(loc.err(|_| None, "pool", "no backend pools: add a [[pool]] table or pass --backend"));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut methods: HashMap<&str, &str> = HashMap::new();
    let mut default: Option<&str> = None;

    for (i, p) in pools.iter().enumerate() {
        check_pool_name(i, p, &mut names, loc)?;
        check_pool_backends(i, p, dns.names_pool(&p.name), loc)?;
        claim_methods(i, p, &mut methods, loc)?;
        claim_default(i, p, &mut default, loc)?;
    }
    require_default(default, &methods, loc)?;
    // Transactions and dialogs started by INVITE stay with its backend.
    check_follow_invite(pools, methods.get(INVITE).copied().or(default), loc)
}

fn pool_name_span(s: &Spans, i: usize) -> Option<Range<usize>> {
    ps(s, i).and_then(|p| p.name.clone())
}

/// Pool `i` has a name, and one no earlier pool uses.
fn check_pool_name<'a>(
    i: usize,
    p: &'a PoolConfig,
    names: &mut HashMap<&'a str, usize>,
    loc: &Locator,
) -> Result<(), ConfigError> {
    let name_span = |s: &Spans| pool_name_span(s, i);
    if p.name.is_empty() {
        return Err(loc.err(name_span, "pool: name", "must not be empty"));
    }
    if names.insert(&p.name, i).is_some() {
        return Err(loc.err(name_span, format!("pool {:?}: name", p.name), "pool name used twice"));
    }
    Ok(())
}

/// Pool `i` has backends, each with a weight, a usable address, listed once.
/// A pool with DNS names (`named`) may have no literal backends.
fn check_pool_backends(i: usize, p: &PoolConfig, named: bool, loc: &Locator) -> Result<(), ConfigError> {
    let field = format!("pool {:?}", p.name);
    if p.backends.is_empty() && !named {
        return Err(loc.err(
            |s| ps(s, i).and_then(|p| p.backends.clone()).or_else(|| pool_name_span(s, i)),
            format!("{field}: backends"),
            "a pool needs at least one backend",
        ));
    }
    for (j, b) in p.backends.iter().enumerate() {
        let bfield = format!("{field}: backend \"{}\"", b.addr);
        let addr_span = |s: &Spans| ps(s, i).and_then(|p| p.backend.get(j)).map(|b| b.0.clone());
        if b.weight == 0 {
            return Err(loc.err(
                |s| ps(s, i).and_then(|p| p.backend.get(j)).and_then(|b| b.1.clone()),
                format!("{bfield}: weight"),
                "must be at least 1 (to take a backend out, remove it or mark it down)",
            ));
        }
        if b.addr.ip().is_unspecified() || b.addr.port() == 0 {
            return Err(loc.err(addr_span, bfield, "not a usable destination (wildcard ip or port 0)"));
        }
        if p.backends[..j].iter().any(|o| o.addr == b.addr) {
            return Err(loc.err(addr_span, bfield, "listed twice in this pool"));
        }
    }
    Ok(())
}

/// Pool `i`'s methods are SIP tokens, each routed to this pool only
/// (recorded in `methods`: method -> pool name).
fn claim_methods<'a>(
    i: usize,
    p: &'a PoolConfig,
    methods: &mut HashMap<&'a str, &'a str>,
    loc: &Locator,
) -> Result<(), ConfigError> {
    let field = format!("pool {:?}", p.name);
    for (k, m) in p.methods.iter().enumerate() {
        let mspan = |s: &Spans| ps(s, i).and_then(|p| p.methods.get(k)).cloned();
        if m.is_empty() || !m.bytes().all(is_token_byte) {
            return Err(loc.err(mspan, format!("{field}: methods"), format!("{m:?} is not a SIP method token")));
        }
        if let Some(other) = methods.insert(m, &p.name) {
            let msg = if other == p.name {
                format!("{m} is listed twice")
            } else {
                format!("{m} is already routed to pool {other:?}")
            };
            return Err(loc.err(mspan, format!("{field}: methods"), msg));
        }
    }
    Ok(())
}

/// Pool `i` is the one default pool, or receives some methods.
fn claim_default<'a>(
    i: usize,
    p: &'a PoolConfig,
    default: &mut Option<&'a str>,
    loc: &Locator,
) -> Result<(), ConfigError> {
    let field = format!("pool {:?}", p.name);
    let default_span = |s: &Spans| ps(s, i).and_then(|p| p.default.clone()).or_else(|| pool_name_span(s, i));
    if p.default {
        if let Some(other) = *default {
            return Err(loc.err(
                default_span,
                format!("{field}: default"),
                format!("pool {other:?} is already the default pool (a pool without `methods` is a default pool)"),
            ));
        }
        *default = Some(&p.name);
    } else if p.methods.is_empty() {
        return Err(loc.err(
            default_span,
            format!("{field}: default"),
            "the pool receives no requests: list `methods` or set `default = true`",
        ));
    }
    Ok(())
}

/// Some pool takes the methods no pool lists.
fn require_default(default: Option<&str>, methods: &HashMap<&str, &str>, loc: &Locator) -> Result<(), ConfigError> {
    if default.is_some() {
        return Ok(());
    }
    let mut routed: Vec<&str> = methods.keys().copied().collect();
    routed.sort_unstable();
    Err(loc.err(
        |_| None,
        "pool",
        format!(
            "no default pool: methods other than {} have nowhere to go; set `default = true` on one pool",
            routed.join(", ")
        ),
    ))
}

/// No pool but INVITE's (`invite`) lists a method that must follow INVITE.
fn check_follow_invite(pools: &[PoolConfig], invite: Option<&str>, loc: &Locator) -> Result<(), ConfigError> {
    for (i, p) in pools.iter().enumerate() {
        if Some(p.name.as_str()) == invite {
            continue;
        }
        for (k, m) in p.methods.iter().enumerate() {
            if FOLLOW_INVITE.contains(&m.as_str()) {
                return Err(loc.err(
                    |s| ps(s, i).and_then(|p| p.methods.get(k)).cloned(),
                    format!("pool {:?}: methods", p.name),
                    format!(
                        "{m} must reach the pool INVITE goes to ({:?}): ACK and CANCEL belong to \
                         the INVITE's transaction and BYE, PRACK, UPDATE and INFO to its dialog, \
                         so they always follow INVITE (RFC 3261 §16.11); remove {m} here, or route \
                         INVITE to this pool",
                        invite.unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn ps(s: &Spans, i: usize) -> Option<&PoolSpans> {
    s.pools.get(i)
}
