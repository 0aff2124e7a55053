//! sip-lb: a stateless SIP load balancer. The decisions are made by the
//! pure core, [`sip_lb_proto`] (SIP views, forwarding step, backend choice);
//! this crate is everything around it:
//! - [`config`]: the TOML file and command-line flags, validated.
//! - [`dataplane`]: per-core workers moving datagrams with recvmmsg/sendmmsg.
//! - [`control`]: the tokio control plane (reload, health, metrics, API).
//! - [`stream`]: SIP over TCP and TLS: connections, framing, flow tokens.
//! - [`xdp`]: loading and attaching the XDP steering program.
//! - [`caps`]: whether we may load eBPF (root, or the service's capabilities).
//! - [`cli_docs`]: man pages and shell completions from the CLI definition.
//! - [`fault`]: failure containment (a panic aborts the process) and the
//!   debug-only fault injection the end-to-end tests use.

pub mod caps;
pub mod cli_docs;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod fault;
pub mod stream;
pub mod xdp;
