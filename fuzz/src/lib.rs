//! The code under fuzzing, compiled from sip-lb's own source files: the SIP
//! views and the sans-IO forwarding step depend only on memchr, xxhash-rust,
//! siphasher/sha2/getrandom and sip-lb-common, so mounting them here avoids building sip-lb itself
//! (its build.rs compiles the XDP program, and the data plane brings tokio
//! and aya). `crate::sip` and `crate::proxy` resolve exactly as in sip-lb.
#![allow(dead_code)]

#[path = "../../sip-lb/src/sip/mod.rs"]
pub mod sip;

#[path = "../../sip-lb/src/proxy/mod.rs"]
pub mod proxy;

use sip::span::Span;

/// Panics unless `span` lies inside a buffer of `len` bytes.
pub fn check_span(span: Span, len: usize, what: &str) {
    assert!(span.start() <= span.end() && span.end() <= len, "{what} {span:?} outside 0..{len}");
}
