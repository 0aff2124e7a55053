//! What a pool is, as the control plane describes it to the balancer: the
//! input of [`super::Router::build`]. The config file's `[[pool]]` tables
//! become these after validation.

use std::net::SocketAddr;

/// Methods that go to the pool INVITE goes to, whatever pool lists them
/// (RFC 3261 §16.11: a stateless proxy must send them where it sent the
/// INVITE). A CANCEL and the ACK of a non-2xx final response belong to the
/// INVITE's transaction, so they MUST reach the backend that has it; BYE,
/// PRACK, UPDATE and INFO belong to the dialog the INVITE created (and the
/// 2xx ACK is in-dialog too). The Call-ID is the same for all of them, so
/// the same pool means the same backend.
///
/// Every other method routes by its own name, including REFER, NOTIFY,
/// MESSAGE, SUBSCRIBE, OPTIONS and REGISTER, which may start their own
/// dialogs or stand alone. A pool listing one of these methods while INVITE
/// goes elsewhere is a configuration error.
pub const FOLLOW_INVITE: [&str; 6] = ["ACK", "CANCEL", "BYE", "PRACK", "UPDATE", "INFO"];

/// The method whose pool [`FOLLOW_INVITE`] methods follow.
pub const INVITE: &str = "INVITE";

/// A pool of interchangeable backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    /// SIP methods routed here, case-sensitive as on the request line.
    pub methods: Vec<String>,
    /// Whether methods not listed by any pool come here. In the file it
    /// defaults to true for a pool without `methods`, false otherwise.
    pub default: bool,
    pub backends: Vec<BackendSpec>,
}

/// One backend of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: SocketAddr,
    /// Relative share of the pool's Call-IDs (at least 1; default 1).
    pub weight: u32,
}

/// The pool a method goes to: the one listing it, else the default;
/// [`FOLLOW_INVITE`] methods go where INVITE goes. The description of the
/// rule the [`super::Router`] precomputes for the hot path.
pub fn pool_for<'a>(pools: &'a [PoolSpec], method: &str) -> Option<&'a PoolSpec> {
    let method = if FOLLOW_INVITE.contains(&method) { INVITE } else { method };
    pools.iter().find(|p| p.methods.iter().any(|m| m == method)).or_else(|| pools.iter().find(|p| p.default))
}
