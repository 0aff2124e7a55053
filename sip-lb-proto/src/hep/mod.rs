//! HEP v3 (Homer Encapsulation Protocol), the encoding side: one captured
//! SIP message with its addresses and time becomes one HEP packet that Homer,
//! heplify-server, sngrep or Kamailio's sipcapture understand. No Rust crate
//! encodes HEP v3 (`hep` only parses; it is our reference in tests).
//!
//! A packet is `"HEP3"`, its total length (u16, network order), then chunks
//! of `vendor (u16), type (u16), length (u16, header included), value`.
//! Only the generic chunks (vendor 0) that a SIP capture needs are written.
//!
//! - [`sample`]: which calls are mirrored (deterministic per Call-ID).

pub mod encode;
pub mod sample;

pub use encode::{encode, Capture, Out, TooLarge, MAX_PACKET};
