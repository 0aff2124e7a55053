//! The bench tools' sockets (blaster, sinks, null forwarder): the same
//! datagram I/O layer as sip-lb (`sip_lb_udp`), with the bench's options.
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result};
use sip_lb_udp::SocketOptions;

/// A socket on `addr`; with `reuseport` one of a group (one per worker, as
/// sip-lb does). 4 MiB buffers, and a read timeout so loops notice a stop flag.
pub fn bind(addr: SocketAddr, reuseport: bool) -> Result<UdpSocket> {
    let opts = SocketOptions { reuseport, buffer_bytes: 4 << 20, read_timeout: Duration::from_millis(50) };
    sip_lb_udp::bind(addr, &opts).with_context(|| format!("bind {addr}"))
}
