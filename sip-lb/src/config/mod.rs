//! Configuration: the TOML file and the command-line flags, merged and
//! validated into one [`Config`] that the control plane turns into a
//! [`sip_lb_proto::balance::Router`].
//!
//! Order: the file (`--config`) is read first; then list flags (`--backend`,
//! `--registrar`) add backends and scalar flags (`--listen`, `--advertise`,
//! `--workers`, `--iface`, `--metrics`) override; then defaults are filled in
//! and everything is validated. Errors say where: `file:line:col: field: what`.
//! The file format is documented in `examples/sip-lb.toml`.

mod addr;
mod cli;
mod cluster;
mod dns;
mod error;
mod file;
mod hep;
mod links;
mod secret;
mod shield;
mod sip;
mod stream;
mod validate;

use std::net::{Ipv4Addr, SocketAddr};

pub use addr::{parse_sip_addr, DEFAULT_SIP_PORT};
pub use cli::RunArgs;
pub use cluster::{ClusterConfig, DEFAULT_VIP_INTERFACE};
pub use dns::{parse_host_port, DnsBackend, DnsConfig, DnsTarget};
pub use error::ConfigError;
pub use hep::HepConfig;
pub use links::{BackendTlsConfig, LinkConfig, PoolTransport, DEFAULT_LARGE_REQUEST_BYTES};
pub use shield::{ShieldConfig, DEFAULT_REPLY_RATE, DEFAULT_TRACKED_SOURCES};
pub use stream::{parse_listen, ListenArg, PathMode, RecordRoute, StreamConfig, StreamListen, TlsConfig, Transport};

/// Where the control plane serves `/metrics` and its admin API when the
/// file and flags name no `metrics` address.
/// Default `xdp_redirect_above_pps`. At carrier-typical rates the CPU-map
/// hop (frame conversion, the cpumap kthread woken for a few frames, the skb
/// rebuilt on the target CPU) costs the machine more than running the UDP
/// receive path where the frame arrived (docs/xdp-steering.md has the
/// figures); a receiving CPU this busy is worth relieving.
pub const DEFAULT_XDP_REDIRECT_ABOVE_PPS: u32 = 20_000;

pub const DEFAULT_CONTROL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5070);

/// The name of the pool `--backend` creates when the file has no default pool.
pub const DEFAULT_POOL: &str = "default";
/// The name of the pool `--registrar` creates when no pool takes REGISTER.
pub const REGISTRAR_POOL: &str = "registrars";
/// The method `--registrar` backends serve.
pub const REGISTER: &str = "REGISTER";

/// The routing rules and pool shapes live with the balancer that applies
/// them; the config speaks of them under these names.
pub use sip_lb_proto::balance::{BackendSpec as BackendConfig, PoolSpec as PoolConfig, FOLLOW_INVITE, INVITE};

/// Pinning workers to CPUs (`--pin`, `pin = "..."`). Pinned workers keep
/// their caches and the CPU the XDP redirect chose, but on an oversubscribed
/// host a pinned worker waits for its one CPU (multi-millisecond p99) where
/// an unpinned one would run elsewhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinMode {
    /// Pin only when there are at least as many idle CPUs as workers (measured
    /// at start-up), onto those CPUs.
    #[default]
    Auto,
    /// Always pin worker i to the i-th allowed CPU.
    On,
    /// Never pin: the scheduler places the workers.
    Off,
}

/// How datagrams reach the workers (`--datapath`, `datapath = "..."`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Datapath {
    /// AF_XDP sockets on every RX queue of `iface` (`docs/afxdp.md`), with
    /// the socket path still bound for what the XDP program passes.
    Afxdp,
    /// UDP sockets only (with the XDP CPU-map steering when `iface` is set).
    Socket,
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Addresses to receive SIP on, each with the address it advertises
    /// (default: `127.0.0.1:5060` advertising itself). Addresses are unique,
    /// and so are advertised addresses.
    pub listen: Vec<Listen>,
    /// Worker threads (default: CPUs available to the process).
    pub workers: usize,
    /// Backend pools. Each method is listed by at most one pool; exactly one
    /// pool is the default for all other methods. Every backend's address
    /// family has a listen address of that family.
    pub pools: Vec<PoolConfig>,
    /// Interface for the XDP steering program, if any.
    pub iface: Option<String>,
    /// XDP redirects a datagram to its worker's CPU only while the receiving
    /// CPU gets more SIP datagrams per second than this (0: always).
    pub xdp_redirect_above_pps: u32,
    /// Whether workers are pinned to CPUs.
    pub pin: PinMode,
    /// The data path asked for; `None`: AF_XDP when `iface` is set and
    /// binding works, else sockets. `Some(Afxdp)` requires `iface`.
    pub datapath: Option<Datapath>,
    /// Busy polling on the worker sockets, microseconds per receive (0: off).
    pub busy_poll_us: u32,
    /// The control plane's HTTP address (`/metrics` and the admin API); the
    /// control plane uses [`DEFAULT_CONTROL`] when unset.
    pub metrics: Option<SocketAddr>,
    /// Health probing.
    pub health: HealthConfig,
    /// SIP-level identity and policy (`[sip]`).
    pub sip: SipConfig,
    /// Secrets (`[security]`).
    pub security: SecurityConfig,
    /// Block/allow lists and per-source limits (`[shield]`).
    pub shield: ShieldConfig,
    /// TCP and TLS addresses to accept connections on (`tcp:`/`tls:` in
    /// `listen`); each has a UDP listen address of its family.
    pub streams: Vec<StreamListen>,
    /// Limits of the connection layer (`[tcp]`).
    pub stream: StreamConfig,
    /// Certificate and key for `tls:` listeners (`[tls]`).
    pub tls: Option<TlsConfig>,
    /// Answer STUN Binding requests on the UDP listen addresses (`stun`,
    /// default off).
    pub stun: bool,
    /// Record-Route with the flow token on requests from connections
    /// (`record_route`, default auto: dialog-creating ones).
    pub record_route: RecordRoute,
    /// Path with the flow token on REGISTERs from connections (`path`,
    /// default supported: when the UA supports it).
    pub path: PathMode,
    /// Backends reached over TCP/TLS connections (pools' `transport` and
    /// `large_over_tcp`), one per address.
    pub links: Vec<LinkConfig>,
    /// The CA (and client certificate) for TLS backends (`[backend_tls]`).
    pub backend_tls: Option<BackendTlsConfig>,
    /// The anycast VIP(s) this node announces (`[cluster]`).
    pub cluster: ClusterConfig,
    /// HEP v3 mirroring to a collector (`[hep]`), off when `None`.
    pub hep: Option<HepConfig>,
    /// Backends named in DNS (host names, `srv`) and how they are resolved
    /// (`[dns]`); their addresses are added to the pools at run time.
    pub dns: DnsConfig,
}

/// A socket to receive SIP on and the address sip-lb puts in its Via and
/// Record-Route for traffic through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen {
    /// The address bound (may be a wildcard such as `0.0.0.0`).
    pub addr: SocketAddr,
    /// The address clients and backends send to: never a wildcard or port
    /// 0. Defaults to `addr`, which must then not be a wildcard.
    pub advertise: SocketAddr,
}

/// The `[sip]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SipConfig {
    /// Other names and addresses of this proxy, as they may appear in
    /// Request-URIs and Route headers (besides the advertised addresses).
    pub aliases: Vec<Alias>,
    /// Request-URI schemes accepted, lowercase; `None` (not written) accepts
    /// every scheme. Never an empty list.
    pub schemes: Option<Vec<String>>,
    /// Option-tags this proxy supports in Proxy-Require, as written.
    pub proxy_require: Vec<String>,
}

/// One `[sip] aliases` entry: `lb.example.net`, `198.51.100.7:5060`,
/// `[2001:db8::7]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Alias {
    /// A host name (lowercase, no trailing dot) or an IP literal in its
    /// canonical text form (IPv6 without brackets).
    pub host: String,
    /// The port, if the alias names one; `None` matches a URI without a
    /// port or with the port of one of our listen/advertise addresses.
    pub port: Option<u16>,
}

/// The `[security]` section. Its `Debug` prints lengths, never the bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    /// The current secret (at least 16 bytes), from `secret` or
    /// `secret_file`.
    pub secret: Option<Vec<u8>>,
    /// The secret before the last rotation, still accepted (at least 16
    /// bytes; only with a current secret).
    pub previous: Option<Vec<u8>>,
}

impl std::fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Redacted<'a>(&'a Option<Vec<u8>>);
        impl std::fmt::Debug for Redacted<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.0 {
                    Some(s) => write!(f, "Some(<redacted, {} bytes>)", s.len()),
                    None => f.write_str("None"),
                }
            }
        }
        f.debug_struct("SecurityConfig")
            .field("secret", &Redacted(&self.secret))
            .field("previous", &Redacted(&self.previous))
            .finish()
    }
}

/// Health probing: SIP OPTIONS to every backend from the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// Whether to probe at all; when false every backend counts as healthy.
    /// Off unless the file has a `[health]` section (where it defaults to
    /// on), so flag-only setups and backends that ignore OPTIONS keep
    /// working unchanged.
    pub enabled: bool,
    /// Time between OPTIONS probes to each backend.
    pub interval_ms: u64,
    /// How long to wait for a probe's answer (at most `interval_ms`).
    pub timeout_ms: u64,
    /// Consecutive failed probes before a backend is marked down.
    pub failures: u32,
    /// Consecutive good probes before a down backend is marked up again.
    pub successes: u32,
    /// Reply codes that count as alive (default: any 2xx).
    pub alive: AliveCodes,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: false,
            interval_ms: 2000,
            timeout_ms: 1000,
            failures: 3,
            successes: 2,
            alive: AliveCodes::class(2),
        }
    }
}

/// A set of SIP status codes (100-699), as a bitset so `HealthConfig` stays
/// `Copy`. Written in the file as numbers and classes: `[200, "4xx"]`.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct AliveCodes([u64; 10]);

impl AliveCodes {
    /// Every code of a class: `class(2)` is 200-299.
    pub const fn class(c: u16) -> AliveCodes {
        let mut s = AliveCodes([0; 10]);
        let mut code = c * 100;
        while code < c * 100 + 100 {
            s = s.with(code);
            code += 1;
        }
        s
    }

    /// The set plus `code` (ignored outside 100-699).
    pub const fn with(mut self, code: u16) -> AliveCodes {
        if code >= 100 && code <= 699 {
            let i = (code - 100) as usize;
            self.0[i / 64] |= 1 << (i % 64);
        }
        self
    }

    pub fn union(self, other: AliveCodes) -> AliveCodes {
        let mut s = self;
        for (a, b) in s.0.iter_mut().zip(other.0) {
            *a |= b;
        }
        s
    }

    pub fn contains(&self, code: u16) -> bool {
        (100..=699).contains(&code) && {
            let i = (code - 100) as usize;
            self.0[i / 64] & (1 << (i % 64)) != 0
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// Parses one entry: `200` or `"2xx"`.
    pub fn parse_entry(s: &str) -> Option<AliveCodes> {
        let s = s.trim();
        if let [c @ b'1'..=b'6', b'x' | b'X', b'x' | b'X'] = s.as_bytes() {
            return Some(AliveCodes::class(u16::from(c - b'0')));
        }
        match s.parse::<u16>() {
            Ok(code) if (100..=699).contains(&code) => Some(AliveCodes::default().with(code)),
            _ => None,
        }
    }
}

impl std::fmt::Debug for AliveCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_list();
        for class in 1..=6u16 {
            if self.0 == self.union(AliveCodes::class(class)).0 {
                l.entry(&format_args!("\"{class}xx\""));
            } else {
                for code in class * 100..class * 100 + 100 {
                    if self.contains(code) {
                        l.entry(&code);
                    }
                }
            }
        }
        l.finish()
    }
}

impl Config {
    /// The default listen address.
    pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_SIP_PORT);

    /// Parses and validates a TOML document (no flags). Errors carry
    /// `line:col` but no file name. A relative `secret_file` is relative to
    /// the current directory.
    pub fn from_toml_str(src: &str) -> Result<Config, ConfigError> {
        let (draft, spans) = file::parse(src, None)?;
        validate::finish(draft, Some((src, &spans)))
    }

    /// Reads `--config` if given, applies the other flags on top, fills in
    /// defaults and validates.
    pub fn load(args: &RunArgs) -> Result<Config, ConfigError> {
        let text;
        let (mut draft, mut spans, src, file_name) = match &args.config {
            Some(path) => {
                let name = path.display().to_string();
                text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::new("--config", format!("cannot read {name}: {e}")))?;
                // A relative secret_file is relative to the config file.
                let (d, s) = file::parse(&text, path.parent()).map_err(|e| e.in_file(name.clone()))?;
                (d, s, Some(text.as_str()), Some(name))
            }
            None => (file::Draft::default(), file::Spans::default(), None, None),
        };
        validate::apply_flags(&mut draft, &mut spans, args)?;
        let located = src.map(|s| (s, &spans));
        validate::finish(draft, located).map_err(|e| match file_name {
            Some(f) if !e.field().starts_with("--") => e.in_file(f),
            _ => e,
        })
    }

    /// The pool that takes methods no pool lists.
    pub fn default_pool(&self) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.default)
    }

    /// The pool a method goes to: the one listing it, else the default;
    /// [`FOLLOW_INVITE`] methods go where INVITE goes.
    pub fn pool_for(&self, method: &str) -> Option<&PoolConfig> {
        sip_lb_proto::balance::pool_for(&self.pools, method)
    }
}

/// Worker count when neither the file nor `--workers` sets one.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
