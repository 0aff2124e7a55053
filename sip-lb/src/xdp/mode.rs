//! Which steering mechanism is active.

use std::fmt;

/// How datagrams reach the worker owning their Call-ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SteeringMode {
    /// XDP in the driver (native): CPU-map redirect to the worker's CPU, plus
    /// the SK_REUSEPORT program choosing the worker's socket.
    XdpDriver { iface: String },
    /// Generic (SKB) XDP, the driver had no native XDP: same as above, slower.
    XdpGeneric { iface: String },
    /// No interface (e.g. loopback): only the SK_REUSEPORT program. Call-ID
    /// affinity holds; the kernel's receive work stays on the RSS CPU.
    ReuseportOnly,
}

impl fmt::Display for SteeringMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::XdpDriver { iface } => write!(f, "xdp-driver on {iface} + reuseport Call-ID selector"),
            Self::XdpGeneric { iface } => write!(f, "xdp-generic (skb) on {iface} + reuseport Call-ID selector"),
            Self::ReuseportOnly => write!(f, "reuseport Call-ID selector only (no XDP)"),
        }
    }
}
