//! Zero-copy views of SIP datagrams: nothing here copies a header or
//! allocates; everything is a byte range into the borrowed datagram.
//!
//! - [`message`]: start line and the indexed header block of one datagram.
//! - [`header`]: header names, case-insensitive, with RFC 3261 compact forms.
//! - [`values`]: splitting a header value on commas (quote and `<>` aware).
//! - [`params`]: `;name=value` parameter lists (To/From tags, Route `lr`).
//! - [`via`]: one Via value: protocol, sent-by, branch, received, rport.
//! - [`uri`]: scheme, host and port of a SIP URI.
//! - [`span`]: the byte range type the views are made of.
//! - [`text`]: byte-level helpers (LWS, decimal and hex, IP literals).

pub mod header;
pub mod message;
pub mod params;
mod scan;
pub mod span;
pub mod text;
pub mod uri;
pub mod values;
pub mod via;

pub use header::HeaderName;
pub use message::{Defect, Header, Message, ParseError, Slots, StartLine, MAX_HEADERS};
pub use span::Span;
pub use uri::{Scheme, Uri};
pub use via::Via;
