//! Routing a response back to the connection its request came in on, with
//! no table of transactions: the request's Via (ours) carries a flow token
//! naming the connection, MAC'd with the branch key (RFC 5626 §5.2 suggests
//! exactly this for flow tokens), and the backend returns it with the
//! response.
//!
//! - [`token`]: the token, its Via parameter, stamping and verifying it.
//! - [`record_route`]: the token in our Record-Route, for requests from the
//!   far end of a dialog.
//! - [`address`]: a UDP client's flow token, its address, in our
//!   Record-Route and Path.
//! - [`routing`]: when a datagram's request gets our Record-Route and Path.
//! - [`via_transport`]: our Via's transport when a backend is reached over a
//!   connection.

pub mod address;
pub mod record_route;
pub mod routing;
pub mod token;
pub mod via_transport;

pub use token::{of_response, stamp, FlowCheck, FlowToken, StampError, FLOW_PARAM};
