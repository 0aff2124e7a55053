//! SIP over a byte stream (TCP, TLS): where one message ends and the next
//! begins (RFC 3261 §18.3), and the CRLF keep-alive of RFC 5626 §4.4.1.
//! Sans-IO like the rest of the core: the connection's buffer in, a
//! [`Frame`] out; the driver reads, writes and closes.
//!
//! - [`framer`]: the framer and what it can say about a buffer.

pub mod framer;

pub use framer::{Frame, FrameError, Framer};
