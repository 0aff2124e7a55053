//! The AF_XDP data path of sip-lb.
pub mod neigh;
