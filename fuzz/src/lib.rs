//! Helpers shared by the fuzz targets, which drive the pure core crate
//! (`sip-lb-proto`) directly.

use sip_lb_proto::sip::span::Span;

/// Panics unless `span` lies inside a buffer of `len` bytes.
pub fn check_span(span: Span, len: usize, what: &str) {
    assert!(span.start() <= span.end() && span.end() <= len, "{what} {span:?} outside 0..{len}");
}
