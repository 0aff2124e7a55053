//! Datagram I/O (quinn-udp's role): the one place that talks to the kernel
//! about UDP sockets. The data plane's workers, the bench's blaster, sinks
//! and null forwarder, and the tests all use it; the AF_XDP driver will sit
//! beside it.
//!
//! - [`batch`]: recvmmsg/sendmmsg batches with buffers allocated once.
//! - [`socket`]: binding, SO_REUSEPORT groups, buffer sizes, timestamps.
//! - [`affinity`]: pinning a thread to a CPU.
//! - [`sockaddr`]: `SocketAddr` <-> `sockaddr_storage` without allocation.

pub mod affinity;
pub mod batch;
pub mod sockaddr;
pub mod socket;

pub use batch::{send_slices, RecvBatch, SendBatch, BATCH, MAX_DATAGRAM};
pub use socket::{bind, bind_reuseport, busy_poll, enable_rx_timestamps, set_busy_poll, SocketOptions};
