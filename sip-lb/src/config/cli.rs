//! Command-line flags of `sip-lb run`. They are applied on top of the file:
//! list flags add backends, scalar flags override.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::addr::parse_sip_addr;
use super::stream::{parse_listen, ListenArg};

/// Flags of the `run` command. Addresses are `ip:port`, `[v6]:port`, or a
/// bare IP meaning port 5060; a bad one is rejected by clap with an error
/// naming the flag.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct RunArgs {
    /// TOML configuration file; the flags below add to or override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to receive SIP on (repeatable); replaces the file's `listen`.
    /// `IP:PORT` is UDP; `tcp:IP:PORT` and `tls:IP:PORT` accept connections.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Vec<ListenArg>,

    /// Backend for the default pool (repeatable); added to the file's.
    #[arg(long, value_name = "ADDR", value_parser = parse_sip_addr)]
    pub backend: Vec<SocketAddr>,

    /// Registrar for REGISTER requests (repeatable); added to the pool REGISTER
    /// maps to, or to a new `registrars` pool.
    #[arg(long, value_name = "ADDR", value_parser = parse_sip_addr)]
    pub registrar: Vec<SocketAddr>,

    /// Worker threads [default: number of CPUs].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Address written into Via/Record-Route [default: first listen address].
    #[arg(long, value_name = "ADDR", value_parser = parse_sip_addr)]
    pub advertise: Option<SocketAddr>,

    /// Network interface to attach the XDP steering program to.
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,

    /// Data path: afxdp (AF_XDP sockets on --iface's queues) or socket
    /// [default: afxdp with --iface when binding works, else socket].
    #[arg(long, value_enum)]
    pub datapath: Option<super::Datapath>,

    /// With --iface: XDP moves a datagram to its worker's CPU only while the
    /// receiving CPU gets more SIP datagrams per second than this; below it
    /// the reuseport program alone keeps each Call-ID on its worker, which is
    /// cheaper. 0: always [default: the file's `xdp_redirect_above_pps`,
    /// else 20000].
    #[arg(long, value_name = "PPS")]
    pub xdp_redirect_above: Option<u32>,

    /// Pin workers to CPUs: auto (only onto idle CPUs, when enough are idle),
    /// on, off [default: the file's `pin`, else auto].
    #[arg(long, value_enum)]
    pub pin: Option<super::PinMode>,

    /// Busy-poll the worker sockets for up to USEC microseconds per receive
    /// (SO_BUSY_POLL + SO_PREFER_BUSY_POLL): lower latency for a spinning
    /// CPU; works for traffic from a NAPI device (NIC, veth with XDP), not
    /// loopback. 0: off [default: the file's `busy_poll_us`, else 0].
    #[arg(long, value_name = "USEC")]
    pub busy_poll: Option<u32>,

    /// HTTP address (`ip:port`) of the control plane: `/metrics` and the
    /// admin API used by `sip-lb backends|drain|enable|reload|top`
    /// [default: 127.0.0.1:5070].
    #[arg(long, visible_alias = "control", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Bench only: the AF_XDP workers do no SIP work and send each datagram
    /// unchanged to the backends in turn (addresses swapped, checksums
    /// recomputed): the ceiling of the AF_XDP path, as the bench's null
    /// forwarder is the socket path's.
    #[arg(long, hide = true)]
    pub afxdp_null_forward: bool,
}
