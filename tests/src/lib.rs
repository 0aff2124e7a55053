//! The end-to-end test kit, shared by every test binary of this crate and by xtask:
//! - [`lb`]: sip-lb started from a config and/or flags, ready when its control API answers;
//! - [`control`] and [`metrics`]: the control-API client (`/stats`, `/backends`, `/metrics`);
//! - [`sip`]: SIP messages built and read; [`sink`]: UDP endpoints that count and record;
//! - [`rounds`]: paced rounds over a fixed set of Call-IDs; [`rng`]: the seeded generator; [`ports`], [`process`], [`netns`]: ports, child
//!   processes and network namespaces; [`sipp`]: SIPp runs; [`lab`]: the Kamailio lab;
//! - [`stream`]: a SIP client over TCP (and TLS via any `Read + Write`), reading framed messages;
//!   [`certs`]: test certificates made with openssl; [`kamailio`]: Kamailio from a config text,
//!   a TLS peer nobody here wrote.
//! - [`nslb`]: sip-lb with XDP on a veth in a namespace, a peer namespace for its clients;
//!   [`rawflood`]: a REGISTER flood written as raw frames on its veth (one source or spoofed).
//! - [`anycast`] and [`bird`]: the scale-out topology (ECMP router, two nodes, farm) with BIRD.
//! - [`pcap`]: UDP datagrams of a capture file (sngrep `-O`).
//! - [`tmux`]: a terminal (tmux) to drive terminal UIs with keys and read their screen.
//! - [`edge`]: UAs on a client network, sip-lb, and a farm that cannot route to the UAs (the
//!   mobility tests, with the lab's Kamailio `HomeProxy`); [`baresip`]: baresip as a headless UA.

pub mod afxdp;
pub mod anycast;
pub mod baresip;
pub mod bird;
pub mod certs;
pub mod control;
pub mod edge;
pub mod kamailio;
pub mod lab;
pub mod lb;
pub mod metrics;
pub mod netns;
pub mod nslb;
pub mod pcap;
pub mod ports;
pub mod process;
pub mod prometheus;
pub mod rawflood;
pub mod rng;
pub mod rounds;
pub mod sink;
pub mod sip;
pub mod sipp;
pub mod stream;
pub mod tmux;

pub use process::sip_lb_binary;
