//! When the core writes our Record-Route and Path for a datagram's request
//! (the operator's `record_route` and `path`): the same choices the stream
//! layer makes for connections, made here for UDP clients, whose flow token
//! is their address ([`super::address`]).

/// Whether requests get our Record-Route (`record_route`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordRoute {
    /// Never: in-dialog requests from the far end go to the client's Contact.
    #[default]
    Off,
    /// Every request.
    On,
    /// Dialog-creating requests that change transport or interface (for a
    /// datagram: that leave from another listener than they came in on).
    Auto,
}

/// Whether REGISTERs get our Path (`path`, RFC 3327).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PathMode {
    /// Never.
    #[default]
    Off,
    /// When the UA lists `path` in Supported (RFC 3327 §5.1).
    Supported,
    /// Always, even if the UA did not say it supports Path.
    Force,
    /// Only for UAs that support it; a REGISTER without `Supported: path`
    /// is answered 421 Extension Required with `Require: path`.
    Require,
}

/// The two choices together, part of the core's `Policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    pub record_route: RecordRoute,
    pub path: PathMode,
}

impl Routing {
    /// Whether a request of `method` leaving from another listener than it
    /// arrived on (`changes_listener`) records a route through us.
    pub fn records(&self, method: &[u8], changes_listener: bool) -> bool {
        match self.record_route {
            RecordRoute::Off => false,
            RecordRoute::On => true,
            RecordRoute::Auto => changes_listener && super::record_route::creates_dialog(method),
        }
    }

    /// Whether a REGISTER whose UA does (`supports`) or does not list
    /// `path` gets our Path.
    pub fn paths(&self, supports: bool) -> bool {
        match self.path {
            PathMode::Off => false,
            PathMode::Supported | PathMode::Require => supports,
            PathMode::Force => true,
        }
    }

    /// Whether a REGISTER without `Supported: path` is refused with 421.
    pub fn refuses(&self, supports: bool) -> bool {
        self.path == PathMode::Require && !supports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let r = |record_route, path| Routing { record_route, path };
        assert!(!Routing::default().records(b"INVITE", true) && !Routing::default().paths(true));
        assert!(r(RecordRoute::On, PathMode::Off).records(b"BYE", false));
        let auto = r(RecordRoute::Auto, PathMode::Off);
        assert!(auto.records(b"INVITE", true) && !auto.records(b"INVITE", false) && !auto.records(b"BYE", true));
        assert!(r(RecordRoute::Off, PathMode::Supported).paths(true));
        assert!(!r(RecordRoute::Off, PathMode::Supported).paths(false));
        assert!(r(RecordRoute::Off, PathMode::Force).paths(false));
        let require = r(RecordRoute::Off, PathMode::Require);
        assert!(require.refuses(false) && !require.refuses(true) && require.paths(true));
    }
}
