//! Helpers for end-to-end tests.

pub mod netns;
pub mod ports;
pub mod process;
pub mod sipp;

pub use process::sip_lb_binary;
